//! Sans-IO consensus engines and the deterministic simulator.
//!
//! An engine is a pure state machine: [`Input`]s in (a message from a validator, a timer firing, a
//! payload ready or checked), [`Action`]s out (send, broadcast, set a timer, persist safety state,
//! store a block, ask for or check a payload, commit). No runtime, socket, clock or randomness
//! lives here: time and entropy arrive as inputs, which is what lets [`sim`] run thousands of
//! Byzantine schedules deterministically with the very code the node runs.
//!
//! The runtime MUST carry out actions in the order given, and MUST finish a
//! [`Action::PersistSafety`] (synced to disk) before carrying out any action after it: the votes and
//! timeouts that follow depend on it being durable.
// Nothing from a network, a disk or a client may panic a library: no unwrap, expect, panic or
// unchecked indexing outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic, clippy::indexing_slicing))]

mod closing;
pub mod crypto;
mod engine;
pub mod hotstuff;
pub mod pbft;
mod proof;
mod verifier;
pub mod wire;

// The simulator indexes its own tables of simulated nodes; nothing it indexes comes from a
// network, a disk or a client.
#[cfg(feature = "sim")]
#[allow(clippy::indexing_slicing)]
pub mod sim;

pub use closing::EpochClosing;
pub use crypto::Signer;
pub use engine::{
    build, recovery_history, Action, BuildError, CommitProof, DirectProof, Engine, EngineConfig,
    EngineKeys, EngineStatus, FaultInjection, Input, Message, PayloadProposal, Persisted,
    ProtocolStatus, TimerId, ValidatorIndex, MAX_DESCENDANT_PATH,
};
pub use proof::{verify_commit_proof, CommitProofChecker, ProofError, ProofStrength};
pub use verifier::CertificateVerifier;
