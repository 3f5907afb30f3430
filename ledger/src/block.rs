//! Blocks: a header that commits to everything, and a payload of transaction batches.

use crate::codec::{self, CodecError};
use crate::{Epoch, Height, SignedTransaction, View};
use quorate_crypto::{Digest, Domain, Hasher};
use serde::{Deserialize, Serialize};

/// A block header. Its hash is the block's identity; it commits to the payload through
/// `payload_digest` and to the parent through `parent`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    pub chain_id: String,
    /// Hash of the genesis file: binds every block to one chain's parameters and validators.
    pub genesis_hash: Digest,
    pub epoch: Epoch,
    pub height: Height,
    pub view: View,
    pub parent: Digest,
    pub payload_digest: Digest,
    /// Commitment to all account state after executing this block.
    pub state_root: Digest,
    /// Index of the proposer in its epoch's validator set.
    pub proposer: u16,
    pub timestamp_ms: u64,
}

impl BlockHeader {
    /// The root block (height 0, epoch 0) a chain starts from: no parent, empty payload.
    pub fn genesis(
        chain_id: &str,
        genesis_hash: Digest,
        state_root: Digest,
        timestamp_ms: u64,
    ) -> Self {
        BlockHeader {
            chain_id: chain_id.to_string(),
            genesis_hash,
            epoch: Epoch(0),
            height: Height(0),
            view: View(0),
            parent: Digest::ZERO,
            payload_digest: Block::payload_digest_of(&[]),
            state_root,
            proposer: 0,
            timestamp_ms,
        }
    }

    /// The block hash.
    pub fn hash(&self) -> Result<Digest, CodecError> {
        codec::hash_encoded(Domain::BlockHeader, self)
    }
}

/// An ordered group of transactions that travels and is referred to as one unit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub transactions: Vec<SignedTransaction>,
}

impl Batch {
    /// Hash over the ids of the transactions, in order.
    pub fn digest(&self) -> Digest {
        let mut hasher = Hasher::new(Domain::Batch);
        hasher.update(&(self.transactions.len() as u64).to_le_bytes());
        for transaction in &self.transactions {
            hasher.update(&transaction.id().0);
        }
        hasher.finalize()
    }
}

/// A header with its full payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub batches: Vec<Batch>,
}

impl Block {
    /// The payload digest of a list of batch digests.
    pub fn payload_digest_of(batch_digests: &[Digest]) -> Digest {
        let mut hasher = Hasher::new(Domain::Payload);
        hasher.update(&(batch_digests.len() as u64).to_le_bytes());
        for digest in batch_digests {
            hasher.update(&digest.0);
        }
        hasher.finalize()
    }

    /// The payload digest this block's batches give.
    pub fn payload_digest(&self) -> Digest {
        let digests: Vec<Digest> = self.batches.iter().map(Batch::digest).collect();
        Self::payload_digest_of(&digests)
    }

    /// Whether the header commits to exactly these batches.
    pub fn payload_matches(&self) -> bool {
        self.payload_digest() == self.header.payload_digest
    }

    pub fn hash(&self) -> Result<Digest, CodecError> {
        self.header.hash()
    }

    pub fn transactions(&self) -> impl Iterator<Item = &SignedTransaction> {
        self.batches.iter().flat_map(|b| b.transactions.iter())
    }

    pub fn transaction_count(&self) -> usize {
        self.batches.iter().map(|b| b.transactions.len()).sum()
    }
}
