//! Quorate's ledger: transactions, blocks and certificates with one canonical binary encoding,
//! and (with the node) the state machine and its storage.
// Nothing from a network, a disk or a client may panic a library: no unwrap, expect, panic or
// unchecked indexing outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic, clippy::indexing_slicing))]

pub mod audit;
mod block;
mod certificate;
pub mod codec;
pub mod governance;
mod newtypes;
#[cfg(feature = "store")]
mod recent_batches;
mod records;
pub mod state;
#[cfg(feature = "store")]
pub mod store;
mod transaction;

pub use block::{Batch, Block, BlockHeader};
pub use certificate::{
    AggregateCert, CertificateError, CheckpointCert, CheckpointData, MultiQuorumCheck, QuorumCert,
    QuorumCheck, TimeoutCert, TimeoutData, TimeoutVote, VoteData,
};
pub use codec::{decode, encode, CodecError, MAX_DECODE_BYTES};
pub use governance::{
    EpochRecord, EpochRules, Governance, GovernanceConfig, GovernanceError, GovernanceState,
    ValidatorChange, ValidatorInfo,
};
pub use newtypes::{Epoch, Height, SeqNum, View};
#[cfg(feature = "store")]
pub use recent_batches::RECENT_BATCH_BYTES;
pub use records::{CommittedBlock, Head, PendingBlock, TxLocation};
pub use state::{
    execute, Account, Execution, Receipt, StateAccumulator, StateReadError, StateView, TxFailure,
};
#[cfg(feature = "store")]
pub use store::{Store, StoreError};
pub use transaction::{
    ChainRules, OpaqueData, SignedTransaction, Transaction, TransactionError, TransactionKind,
    MAX_CHAIN_ID_BYTES, MAX_TRANSACTION_BYTES,
};
