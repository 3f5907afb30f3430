//! HotStuff's messages.

use quorate_crypto::{BlsSignature, Digest};
use quorate_ledger::{BlockHeader, CodecError, QuorumCert, TimeoutCert, TimeoutData, VoteData};
use serde::{Deserialize, Serialize};

/// A block as HotStuff carries it: the header and the QC of its parent (`justify`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsBlock {
    pub header: BlockHeader,
    pub justify: QuorumCert,
}

impl HsBlock {
    pub fn hash(&self) -> Result<Digest, CodecError> {
        self.header.hash()
    }
}

/// The leader's block for its view. `tc` justifies a view entered by timeout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub block: HsBlock,
    pub tc: Option<TimeoutCert>,
}

/// A vote, sent to the leader of the next view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub data: VoteData,
    pub signature: BlsSignature,
}

/// "I give up on this view", with the highest QC the sender knows (so the next leader extends it).
///
/// It also carries the sender's vote from the previous view, if any. That vote went to this
/// view's leader; if that leader is faulty the QC it should have formed is lost, and with it every
/// three-chain that needed it (with round-robin leaders and f faulty, possibly forever). Any
/// validator that collects 2f+1 such timeouts can form that QC itself (as in LibraBFT, where a
/// timeout is a vote).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeout {
    pub data: TimeoutData,
    pub high_qc: QuorumCert,
    pub last_tc: Option<TimeoutCert>,
    pub last_vote: Option<Vote>,
    pub signature: BlsSignature,
}

/// The certificates that let a lagging validator move to the sender's view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncInfo {
    pub high_qc: QuorumCert,
    pub last_tc: Option<TimeoutCert>,
}

/// Ask for the block `hash` and up to `count - 1` of its ancestors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    pub hash: Digest,
    pub count: u16,
}

/// Blocks newest first: `blocks[0]` is the requested one, each next one the parent of the one
/// before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockResponse {
    pub blocks: Vec<HsBlock>,
}

/// Every HotStuff message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HsMessage {
    Proposal(Proposal),
    Vote(Vote),
    Timeout(Timeout),
    SyncInfo(SyncInfo),
    BlockRequest(BlockRequest),
    BlockResponse(BlockResponse),
}
