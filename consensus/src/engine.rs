//! The protocol-neutral boundary between an engine and its runtime.

use crate::crypto::Signer;
use crate::hotstuff::{HotStuff, HsMessage, ThreeChain};
use crate::pbft::{Pbft, PbftMessage};
use crate::verifier::CertificateVerifier;
use quorate_crypto::Digest;
use quorate_crypto::MacKey;
use quorate_genesis::{ConsensusParams, Protocol, ValidatorSet};
use quorate_ledger::{BlockHeader, CheckpointCert, Height, QuorumCert, View};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;

/// A validator's position in its epoch's validator set.
pub type ValidatorIndex = usize;

/// A message between validators. One variant per protocol.
// Moved one at a time, never stored in bulk: boxing would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    HotStuff(HsMessage),
    Pbft(PbftMessage),
}

/// Names a timer; a timer that fires for a view the engine has left is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TimerId {
    /// HotStuff: the pacemaker's timer for a view.
    View(View),
    /// PBFT: no progress (no block committed or decided) in `view` since progress `mark`.
    Progress { view: View, mark: u64 },
    /// PBFT: a quorum moved to `view` and its NEW-VIEW has not arrived.
    NewView(View),
    /// PBFT: the answer to fetch attempt `attempt` has not arrived.
    Fetch { attempt: u64 },
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
    /// Whether the runtime holds payload waiting to be ordered (its own or a peer's). Sent when
    /// it changes; an engine starts out assuming it does. On a chain without a heartbeat
    /// (`idle_interval_ms` 0) an engine that has nothing pending and no uncommitted payload lets
    /// its view timer pass instead of timing the leader out: an idle chain sends nothing.
    PayloadPending(bool),
}

/// The proof that a committed block is final, as stored beside it and checked by `audit`.
// One per committed block, moved to the store: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
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
    /// PBFT: `checkpoint` is the stable checkpoint certificate of this very block. Every other
    /// block, and a checkpoint's block before its certificate is complete, is committed by a
    /// quorum of MAC'd COMMITs, which only their receivers can check: it carries `None` and is
    /// covered by the hash chain from the next certified checkpoint above it (see
    /// [`Action::Certify`]).
    Pbft { checkpoint: Option<CheckpointCert> },
    /// The block that ends an epoch, committed by its own epoch's set through a descendant:
    /// `path` holds the headers from its child up to a block that `proof` commits directly
    /// (each one's parent the one before it, all of the same epoch). An epoch's last block needs
    /// a proof its epoch's set made alone: the next epoch's set is read off that very block, so
    /// no later epoch can vouch for it. At most [`MAX_DESCENDANT_PATH`] headers.
    Descendant {
        path: Vec<BlockHeader>,
        proof: DirectProof,
    },
}

/// The proof that commits the block a [`CommitProof::Descendant`]'s path ends at: one
/// protocol's direct proof. Never another descendant proof, so that decoding one never recurses
/// (a nested type would let a peer's few kilobytes overflow the stack).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectProof {
    HotStuff {
        qc: QuorumCert,
        three_chain: ThreeChain,
    },
    Pbft {
        checkpoint: CheckpointCert,
    },
}

impl DirectProof {
    /// `proof` if it commits its block directly by a protocol's own rule.
    pub fn of(proof: CommitProof) -> Option<DirectProof> {
        match proof {
            CommitProof::HotStuff {
                qc,
                three_chain: Some(three_chain),
            } => Some(DirectProof::HotStuff { qc, three_chain }),
            CommitProof::Pbft {
                checkpoint: Some(checkpoint),
            } => Some(DirectProof::Pbft { checkpoint }),
            _ => None,
        }
    }

    /// The same proof as a [`CommitProof`] (to check it).
    pub fn to_commit_proof(&self) -> CommitProof {
        match self {
            DirectProof::HotStuff { qc, three_chain } => CommitProof::HotStuff {
                qc: qc.clone(),
                three_chain: Some(three_chain.clone()),
            },
            DirectProof::Pbft { checkpoint } => CommitProof::Pbft {
                checkpoint: Some(checkpoint.clone()),
            },
        }
    }

    pub fn protocol_name(&self) -> &'static str {
        match self {
            DirectProof::HotStuff { .. } => "hotstuff",
            DirectProof::Pbft { .. } => "pbft",
        }
    }
}

/// The most headers a [`CommitProof::Descendant`] carries (PBFT's checkpoint interval is
/// bounded below it, so a checkpoint is always within reach).
pub const MAX_DESCENDANT_PATH: usize = quorate_genesis::MAX_CHECKPOINT_INTERVAL as usize + 24;

impl CommitProof {
    /// The protocol that made the proof, for messages.
    pub fn protocol_name(&self) -> &'static str {
        match self {
            CommitProof::HotStuff { .. } => "hotstuff",
            CommitProof::Pbft { .. } => "pbft",
            CommitProof::Descendant { proof, .. } => proof.protocol_name(),
        }
    }

    /// Whether `protocol` makes proofs of this kind (a chain holds its own protocol's only).
    pub fn is_of(&self, protocol: Protocol) -> bool {
        self.protocol_name() == protocol.as_str()
    }

    /// Whether the proof, if valid, commits its block by itself (a three-chain, a checkpoint
    /// certificate, or a descendant's such proof) rather than by a later block's hash chain.
    pub fn commits_directly(&self) -> bool {
        match self {
            CommitProof::HotStuff { three_chain, .. } => three_chain.is_some(),
            CommitProof::Pbft { checkpoint } => checkpoint.is_some(),
            CommitProof::Descendant { .. } => true,
        }
    }
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
    /// `Input::PayloadReady`). `urgent` says blocks with payload wait on this one (to commit, or
    /// for their commit to reach the others), so propose at once, empty if need be; otherwise
    /// wait for payload, or for the heartbeat (`idle_interval_ms`) where the chain has one.
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
    /// A block committed earlier now has a stronger proof (PBFT: its checkpoint became stable):
    /// store `proof` in place of the one it was committed with.
    Certify {
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
    /// PBFT commits without a prepared certificate: COMMIT goes out as soon as the payload
    /// checks, beside PREPARE.
    SkipPrepare,
    /// PBFT's NEW-VIEW takes, for each sequence number, the lowest-view prepared entry of the
    /// VIEW-CHANGEs, without the conditions that make it the one that may have committed.
    LowestPrepared,
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
    /// The epoch's first root (genesis, or the last block of the previous epoch): where a PBFT
    /// log without a stable checkpoint certificate starts.
    pub epoch_root: BlockHeader,
    /// Committed headers just below `root`, in height order ([`recovery_history`] of them):
    /// a restarted HotStuff engine elects leaders from them as the running ones do; a restarted
    /// PBFT replica holds the committed headers a running one keeps (a new primary re-issues
    /// them, a laggard fetches them). Empty at an epoch's first root.
    pub history: Vec<BlockHeader>,
    pub verifier: Arc<CertificateVerifier>,
    pub fault: FaultInjection,
}

/// How many committed headers below its root a restarted engine needs (see
/// [`EngineConfig::history`]): HotStuff's reputation window, and PBFT's window below its stable
/// checkpoint plus the blocks committed above that checkpoint.
pub fn recovery_history(validators: usize, params: &ConsensusParams) -> usize {
    let pbft = params
        .pbft_window
        .saturating_mul(2)
        .saturating_add(params.checkpoint_interval);
    crate::hotstuff::reputation_window(validators).max(usize::try_from(pbft).unwrap_or(usize::MAX))
}

impl EngineConfig {
    /// What every engine checks before it starts: its index is in the set, the root's proof
    /// is of its protocol, and a protocol with MACs has a key per validator.
    pub(crate) fn check(&self, protocol: Protocol) -> Result<(), BuildError> {
        let n = self.validators.len();
        if self.own_index >= n {
            return Err(BuildError::NotAValidator {
                index: self.own_index,
                len: n,
            });
        }
        if let Some(proof) = &self.root_proof {
            let ours = match proof.protocol_name() {
                "hotstuff" => protocol == Protocol::HotStuff,
                _ => protocol == Protocol::Pbft,
            };
            if !ours {
                return Err(BuildError::ForeignProof {
                    got: proof.protocol_name(),
                    protocol,
                });
            }
        }
        if protocol == Protocol::Pbft && self.keys.mac_keys.len() != n {
            return Err(BuildError::MacKeys(protocol, n));
        }
        Ok(())
    }
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
    Pbft {
        /// The sequence number (height) of the last stable checkpoint: the low watermark.
        stable_checkpoint: Height,
        /// The highest sequence number that may be pre-prepared (low watermark + window).
        high_watermark: Height,
        /// Sent VIEW-CHANGE for `view`, waiting for its NEW-VIEW.
        view_changing: bool,
    },
}

impl EngineStatus {
    /// Votes refused by a lock (HotStuff); 0 for a protocol without one.
    pub fn lock_refusals(&self) -> u64 {
        match self.protocol {
            ProtocolStatus::HotStuff { lock_refusals, .. } => lock_refusals,
            ProtocolStatus::Pbft { .. } => 0,
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
    #[error("{0} needs a MAC key for each of the epoch's {1} validators")]
    MacKeys(Protocol, usize),
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
        Protocol::Pbft => Ok(Box::new(Pbft::recover(
            config,
            persisted.safety.as_deref(),
            persisted.blocks,
        )?)),
    }
}
