//! PBFT's messages.
//!
//! The three normal-case messages (PRE-PREPARE, PREPARE, COMMIT) and NEW-VIEW's envelope are
//! authenticated by MACs: keyed BLAKE3 over the message's digest, with the key the sender shares
//! with the receiver. PBFT's authenticator carries one MAC per receiver so that one multicast
//! serves all; over point-to-point links each receiver gets its own copy with its own MAC, so a
//! message costs O(1) bytes of authentication instead of O(n) (and a block O(n^2) bytes, not
//! O(n^3)). What must convince a third party is signed (BLS, aggregated where it is
//! collected): CHECKPOINT, whose quorum is the stable checkpoint certificate, and VIEW-CHANGE,
//! which NEW-VIEW hands on.

use quorate_crypto::{hash, BlsSignature, Digest, Domain, Mac, MacKey};
use quorate_ledger::{codec, BlockHeader, CheckpointCert, CheckpointData, Epoch, Height, View};
use serde::{Deserialize, Serialize};

/// A message body with the MAC of the one receiver it is sent to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authenticated<T> {
    pub body: T,
    pub mac: Mac,
}

/// What the MACs of a normal-case message cover: its kind and its encoded body.
pub(crate) fn mac_digest<T: Serialize>(kind: u8, body: &T) -> Option<Digest> {
    let mut bytes = vec![kind];
    bytes.extend(codec::encode(body).ok()?);
    Some(hash(Domain::PbftMessage, &bytes))
}

pub(crate) const KIND_PRE_PREPARE: u8 = 1;
pub(crate) const KIND_PREPARE: u8 = 2;
pub(crate) const KIND_COMMIT: u8 = 3;
pub(crate) const KIND_NEW_VIEW: u8 = 4;

impl<T: Serialize + Clone> Authenticated<T> {
    /// One copy of `body` per receiver: `keys[i]` is the key shared with validator i; the
    /// sender's own slot (`except`) is skipped.
    pub(crate) fn seal_each(
        kind: u8,
        body: &T,
        keys: &[MacKey],
        except: usize,
    ) -> Vec<(usize, Authenticated<T>)> {
        let Some(digest) = mac_digest(kind, body) else {
            return Vec::new();
        };
        keys.iter()
            .enumerate()
            .filter(|(to, _)| *to != except)
            .map(|(to, key)| {
                let sealed = Authenticated {
                    body: body.clone(),
                    mac: key.mac(&digest),
                };
                (to, sealed)
            })
            .collect()
    }

    /// A copy for the receiver sharing `key` with the sender.
    pub(crate) fn seal(kind: u8, body: T, key: &MacKey) -> Option<Self> {
        let digest = mac_digest(kind, &body)?;
        Some(Authenticated {
            mac: key.mac(&digest),
            body,
        })
    }

    /// Whether the receiver, sharing `key` with the sender, accepts the MAC.
    pub(crate) fn check(&self, kind: u8, key: &MacKey) -> bool {
        mac_digest(kind, &self.body).is_some_and(|digest| key.check(&digest, &self.mac))
    }
}

/// The primary of `view` assigns sequence number `header.height` to a block. A block
/// re-issued by a NEW-VIEW keeps the header (and so the hash) it was first proposed with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePrepare {
    pub view: View,
    pub header: BlockHeader,
}

/// PREPARE or COMMIT for the block `digest` at sequence number `seq` in `view`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Phase {
    pub view: View,
    pub seq: Height,
    pub digest: Digest,
}

/// A signed CHECKPOINT: the sender committed `data.block` at `data.height`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub data: CheckpointData,
    pub signature: BlsSignature,
}

/// Where a replica's log starts: the last stable checkpoint it holds a certificate for, or the
/// epoch's root (which needs none).
// A certificate is the common case after the first checkpoint.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StablePoint {
    Root { height: Height, block: Digest },
    Certified(CheckpointCert),
}

impl StablePoint {
    pub fn height(&self) -> Height {
        match self {
            StablePoint::Root { height, .. } => *height,
            StablePoint::Certified(cert) => cert.data.height,
        }
    }

    pub fn block(&self) -> Digest {
        match self {
            StablePoint::Root { block, .. } => *block,
            StablePoint::Certified(cert) => cert.data.block,
        }
    }
}

/// A replica's prepared entry for one sequence number: the latest view in which it held a
/// prepared certificate (the pre-prepare and a quorum of matching prepares) and for which block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreparedEntry {
    pub seq: Height,
    pub view: View,
    pub digest: Digest,
}

/// A replica's pre-prepared entries for one sequence number: each block it accepted a
/// pre-prepare for (and sent PREPARE for), with the latest view it did so in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrePreparedEntry {
    pub seq: Height,
    pub blocks: Vec<(Digest, View)>,
}

/// What a VIEW-CHANGE signs (TOCS 2002, section 4.5: the replica's own P and Q sets, reported
/// under its signature rather than acknowledged by others).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChangeData {
    pub genesis_hash: Digest,
    pub epoch: Epoch,
    /// The view the replica moves to.
    pub view: View,
    pub replica: u16,
    pub stable: StablePoint,
    /// P: at most one entry per sequence number above `stable`, in increasing order.
    pub prepared: Vec<PreparedEntry>,
    /// Q: at most one entry per sequence number above `stable`, in increasing order.
    pub pre_prepared: Vec<PrePreparedEntry>,
}

impl ViewChangeData {
    pub fn signing_bytes(&self) -> Option<Vec<u8>> {
        codec::encode(self).ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub data: ViewChangeData,
    pub signature: BlsSignature,
}

/// The new primary's NEW-VIEW: a quorum of VIEW-CHANGEs for `view`, and the headers of the
/// blocks they oblige it to re-issue (from the chosen stable point up), which every backup
/// recomputes from the VIEW-CHANGEs before it accepts them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewView {
    pub view: View,
    pub view_changes: Vec<ViewChange>,
    pub reissued: Vec<BlockHeader>,
}

/// Asks for the header `tip` and its ancestors down to (not including) height `above`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchChain {
    pub tip: Digest,
    pub above: Height,
}

/// Every PBFT message.
// Moved one at a time, never stored in bulk (the early-message queues hold PRE-PREPAREs and
// PREPAREs): boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PbftMessage {
    PrePrepare(Authenticated<PrePrepare>),
    Prepare(Authenticated<Phase>),
    Commit(Authenticated<Phase>),
    Checkpoint(Checkpoint),
    ViewChange(ViewChange),
    NewView(Authenticated<NewView>),
    FetchChain(FetchChain),
    /// Headers newest first: each next one is the parent of the one before it.
    Chain(Vec<BlockHeader>),
    /// "My stable checkpoint is at this height": sent before a replica leaves its view, so a
    /// replica that missed a checkpoint's messages on an idle chain learns of it instead of
    /// changing view alone. Answered once per height by a peer with a higher certificate.
    StableQuery(Height),
    /// A stable checkpoint certificate, in answer to a [`PbftMessage::StableQuery`].
    StableCert(CheckpointCert),
}
