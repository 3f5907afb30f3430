//! The protocol-neutral boundary between an engine and its runtime.

use crate::crypto::Signer;
use crate::hotstuff::{HotStuff, HsMessage, ThreeChain};
use crate::verifier::CertificateVerifier;
use quorate_crypto::Digest;
use quorate_crypto::MacKey;
use quorate_genesis::{ConsensusParams, Protocol, ValidatorSet};
use quorate_ledger::{BlockHeader, QuorumCert, View};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;

/// A validator's position in its epoch's validator set.
pub type ValidatorIndex = usize;

/// A message between validators. One variant per protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    HotStuff(HsMessage),
}

/// Names a timer; a timer that fires for a view the engine has left is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerId {
    /// The pacemaker's timer for a view.
    View(View),
}

/// What the runtime hands a leader for its next block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadProposal {
    pub payload_digest: Digest,
    /// State root after executing this payload on top of the parent.
    pub state_root: Digest,
    pub timestamp_ms: u64,
    /// Whether the payload carries no transactions.
    pub empty: bool,
}

/// Everything an engine reacts to.
// Inputs are moved one at a time, never stored in bulk: boxing the message would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Input {
    /// A message from validator `from` (authenticated by the transport).
    Message {
        from: ValidatorIndex,
        message: Message,
    },
    /// A timer set with [`Action::SetTimer`] fired.
    Timer(TimerId),
    /// The answer to [`Action::RequestPayload`].
    PayloadReady {
        view: View,
        payload: PayloadProposal,
    },
    /// The answer to [`Action::CheckPayload`]: whether the block's payload is available, valid,
    /// and its execution gives the header's state root.
    PayloadChecked { block: Digest, valid: bool },
}

/// The proof that a committed block is final, as stored beside it and checked by `audit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitProof {
    /// HotStuff: `qc` certifies the block. For a block committed directly by the three-chain
    /// rule, `three_chain` holds its two certified successors in consecutive views
    /// (headers of b' and b'', and the QC of b''); an ancestor committed with it has `None` and
    /// is covered by the hash chain up to that block.
    HotStuff {
        qc: QuorumCert,
        three_chain: Option<ThreeChain>,
    },
}

/// Everything an engine asks of its runtime, in the order it must happen.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Action {
    /// Send to one validator.
    Send {
        to: ValidatorIndex,
        message: Message,
    },
    /// Send to every other validator.
    Broadcast { message: Message },
    /// Fire `Input::Timer(timer)` after `duration_ms`.
    SetTimer { timer: TimerId, duration_ms: u64 },
    /// Write the engine's safety state and SYNC it before any later action is carried out.
    PersistSafety { bytes: Vec<u8> },
    /// Keep a block (for recovery and for serving peers); need not be synced. `bytes` is the
    /// engine's own encoding, handed back to it on recovery; the runtime reads only `header`.
    StoreBlock {
        hash: Digest,
        header: BlockHeader,
        bytes: Vec<u8>,
    },
    /// This validator leads `view`: build a payload on `parent` (answer with
    /// `Input::PayloadReady`). `urgent` says uncommitted blocks with payload wait on this one, so
    /// do not hold it for the idle interval.
    RequestPayload {
        view: View,
        parent: BlockHeader,
        urgent: bool,
    },
    /// Check a proposed block's payload (answer with `Input::PayloadChecked`).
    CheckPayload { header: BlockHeader },
    /// The block is final. Commits come in height order, each exactly once.
    Commit {
        header: BlockHeader,
        proof: CommitProof,
    },
    /// Validator `peer` sent something only a Byzantine validator sends (a certificate that
    /// does not verify); the engine ignores it for a while, the runtime may score it.
    Misbehaved { peer: ValidatorIndex, why: String },
}

/// Fault injection: deliberately broken engines that show the simulator's checker bites.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultInjection {
    #[default]
    None,
    /// HotStuff votes without the clauses that keep it off forks: the locked-QC check of the
    /// safe-node rule and Jolteon's check of a TC's high QC.
    IgnoreLock,
}

/// What an engine needs to start.
#[derive(Clone)]
pub struct EngineConfig {
    pub chain_id: String,
    pub genesis_hash: Digest,
    pub validators: ValidatorSet,
    pub own_index: ValidatorIndex,
    pub keys: EngineKeys,
    pub params: ConsensusParams,
    /// The committed block the engine starts from: the epoch's first root (genesis, or the last
    /// block of the previous epoch), or after a restart the last block the ledger committed.
    pub root: BlockHeader,
    /// The proof `root` was committed with; `None` for an epoch's first root, which needs none.
    pub root_proof: Option<CommitProof>,
    /// Committed headers just below `root` (any order, at most
    /// [`reputation_window`](crate::hotstuff::reputation_window) of them are used): a restarted
    /// engine elects leaders from them as the running ones do. Empty at an epoch's first root.
    pub history: Vec<BlockHeader>,
    pub verifier: Arc<CertificateVerifier>,
    pub fault: FaultInjection,
}

/// The keys an engine authenticates its messages with.
#[derive(Clone)]
pub struct EngineKeys {
    /// Signs what others must be able to show a third party: HotStuff's votes and timeouts.
    pub signer: Signer,
    /// The secret key this validator shares with each validator of the epoch, by index (its own
    /// slot included), for MAC authenticators; derived per epoch, never stored. Empty for a
    /// protocol that signs everything.
    pub mac_keys: Arc<[MacKey]>,
}

impl EngineKeys {
    /// Keys for a protocol that only signs.
    pub fn signing(signer: Signer) -> EngineKeys {
        EngineKeys {
            signer,
            mac_keys: Arc::from(Vec::new()),
        }
    }
}

/// A snapshot for status pages and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineStatus {
    pub view: View,
    /// The validator that leads (HotStuff) or is primary in (PBFT) `view`.
    pub leader: ValidatorIndex,
    pub committed_height: u64,
    pub committed_hash: Digest,
    /// Views this validator left because they failed (timeouts, view changes), since it started.
    pub timeouts: u64,
    /// What only one protocol has.
    pub protocol: ProtocolStatus,
}

/// The protocol's own part of [`EngineStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolStatus {
    HotStuff {
        high_qc_view: View,
        locked_view: View,
        /// Proposals this validator refused to vote for because they fork off what it must
        /// keep to (the safe-node rule's lock clause, or Jolteon's: below the high QC of the
        /// proposal's TC's signers), since it started.
        lock_refusals: u64,
    },
}

impl EngineStatus {
    /// Votes refused by a lock (HotStuff); 0 for a protocol without one.
    pub fn lock_refusals(&self) -> u64 {
        match self.protocol {
            ProtocolStatus::HotStuff { lock_refusals, .. } => lock_refusals,
        }
    }
}

/// A consensus protocol as the runtime and the simulator see it.
pub trait Engine {
    /// Actions to run at start-up (timers, a first proposal).
    fn start(&mut self) -> Vec<Action>;
    /// Reacts to one input.
    fn handle(&mut self, input: Input) -> Vec<Action>;
    fn status(&self) -> EngineStatus;
}

/// What an engine persisted before a restart: its safety state (the last
/// [`Action::PersistSafety`]) and the blocks it stored ([`Action::StoreBlock`]'s bytes, any
/// order).
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub safety: Option<Vec<u8>>,
    pub blocks: Vec<Vec<u8>>,
}

/// Why an engine could not be built or recovered.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("persisted safety state is unreadable: {0}")]
    Decode(#[from] quorate_ledger::CodecError),
    #[error("persisted safety state is for epoch {persisted}, engine is for epoch {engine}")]
    WrongEpoch { persisted: u64, engine: u64 },
    #[error("own index {index} is not in a validator set of {len}")]
    NotAValidator { index: usize, len: usize },
    #[error("the root's commit proof is a {got} proof, this engine runs {protocol}")]
    ForeignProof {
        got: &'static str,
        protocol: Protocol,
    },
    #[error("protocol {0} is not available in this build yet")]
    Unavailable(Protocol),
}

/// The engine of `protocol`, fresh (`persisted` empty) or resumed.
pub fn build(
    protocol: Protocol,
    config: EngineConfig,
    persisted: Persisted,
) -> Result<Box<dyn Engine + Send>, BuildError> {
    match protocol {
        Protocol::HotStuff => Ok(Box::new(HotStuff::recover(
            config,
            persisted.safety.as_deref(),
            persisted.blocks,
        )?)),
        Protocol::Pbft => Err(BuildError::Unavailable(protocol)),
    }
}
