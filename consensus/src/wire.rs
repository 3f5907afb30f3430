//! What validators say to each other: the requests and answers of the node's `/quorate/1`
//! protocol, in the canonical encoding. The node frames them (a 4-byte big-endian length, then
//! the encoding) and bounds what it reads; these are the types that every peer's bytes are
//! decoded into, here so that tests and fuzz targets decode exactly what the node does.

use crate::Message;
use quorate_crypto::Digest;
use quorate_ledger::{Batch, CommittedBlock, Epoch};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Batches asked for in one request at most.
pub const MAX_BATCHES_PER_REQUEST: usize = 64;
/// Committed blocks asked for in one sync request at most.
pub const MAX_BLOCKS_PER_REQUEST: u64 = 64;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum NetRequest {
    /// A consensus message (point to point or to all), with the epoch of the sender's engine:
    /// a receiver in another epoch drops it before its engine sees it.
    Consensus(Epoch, Message),
    /// A batch of transactions from the sender's mempool.
    Batch(Arc<Batch>),
    /// The batch digests of a payload the sender proposes.
    Manifest {
        payload: Digest,
        batches: Vec<Digest>,
    },
    GetManifest(Digest),
    GetBatches(Vec<Digest>),
    /// Committed blocks from `from` on (sync).
    GetCommitted {
        from: u64,
        count: u64,
    },
    /// Never sent: what the codec hands up in place of a frame that was too long or did not
    /// decode, so the network can score the peer (the request-response behaviour does not report
    /// failures that happen while a request is read).
    #[serde(skip)]
    Undecodable(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum NetResponse {
    Ack,
    Manifest(Option<Vec<Digest>>),
    Batches(Vec<Arc<Batch>>),
    Committed(Vec<CommittedBlock>),
    /// The answer to a consensus message of an earlier epoch: the receiver is in this one (the
    /// sender missed the block that ended its epoch; its ledger sync fetches it at once).
    LaterEpoch(Epoch),
}
