//! What the store keeps, in the canonical encoding: committed and pending blocks, the head and
//! where each transaction went. Plain data (no database), so that what a peer serves of it can
//! be decoded, checked and fuzzed without RocksDB.

use crate::state::Receipt;
use crate::{BlockHeader, Height};
use quorate_crypto::Digest;
use serde::{Deserialize, Serialize};

/// A committed block as stored: the header, the encoded commit certificate (its format belongs
/// to the consensus protocol), the batches of its payload, and every transaction's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBlock {
    pub header: BlockHeader,
    pub proof: Vec<u8>,
    pub batches: Vec<Digest>,
    pub receipts: Vec<Receipt>,
}

/// Where a committed transaction is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    pub height: Height,
    pub block_hash: Digest,
    pub index: u32,
    pub receipt: Receipt,
}

/// An uncommitted block as stored: its header, which the node reads, and the consensus engine's
/// own encoding of it, which only the engine reads back (after a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBlock {
    pub header: BlockHeader,
    pub engine: Vec<u8>,
}

/// The last committed block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub height: Height,
    pub hash: Digest,
    pub header: BlockHeader,
}
