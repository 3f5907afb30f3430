//! Taking in batches from peers: verify every signature once (one ed25519 batch verification),
//! store, make available for proposals.

use crate::executor::Job;
use crate::mempool::Mempool;
use crate::peer_batches::PeerBatches;
use crate::wire::EncodedBatch;
use quorate_crypto::Digest;
use quorate_ledger::{Batch, ChainRules, SignedTransaction, Store};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use tracing::{error, warn};

/// Verifies and stores `batch` (whose digest is `digest`). Returns false if it is invalid (the
/// sender should be scored down). A batch already stored is accepted without work.
/// `pushed_by`: the peer that pushed it unasked, whose uncommitted batches are bounded (see
/// [`crate::peer_batches`]); `None` for a batch this node fetched because a block names it.
/// `encoded`: the bytes the batch was decoded from, if kept (stored as they are).
#[allow(clippy::too_many_arguments)]
pub async fn ingest_batch(
    store: &Arc<Store>,
    mempool: &Arc<Mutex<Mempool>>,
    rules: &ChainRules,
    batch: Arc<Batch>,
    encoded: Option<EncodedBatch>,
    digest: Digest,
    jobs: &Sender<Job>,
    pushed_by: Option<(usize, &PeerBatches)>,
) -> bool {
    // Every limit is checked at ingest: a batch no block could carry, or an empty one, is
    // refused and its sender scored down (it would otherwise sit in every proposal's way).
    let max_batch = mempool
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .max_batch();
    if batch.transactions.is_empty() || batch.transactions.len() > max_batch {
        warn!(
            %digest,
            transactions = batch.transactions.len(),
            max_batch,
            "refusing a batch outside the batch size limits"
        );
        return false;
    }
    match store.has_batch(&digest) {
        Ok(true) => return true,
        Ok(false) => {}
        Err(error) => {
            error!(%error, "reading the batch store");
            return true;
        }
    }
    let rules = rules.clone();
    let verified = tokio::task::spawn_blocking(move || {
        for tx in &batch.transactions {
            if let Err(error) = tx.check_stateless(&rules) {
                return Err(format!("transaction {}: {error}", tx.id()));
            }
        }
        let invalid = SignedTransaction::verify_batch(&batch.transactions);
        if let Some(first) = invalid.first() {
            return Err(format!(
                "{} bad signatures (first at {first})",
                invalid.len()
            ));
        }
        Ok(batch)
    })
    .await;
    let batch = match verified {
        Ok(Ok(batch)) => batch,
        Ok(Err(why)) => {
            warn!(%digest, "refusing a batch: {why}");
            return false;
        }
        Err(_) => return true,
    };
    let put = || match &encoded {
        Some(encoded) => store.put_batch_encoded(&digest, &batch, encoded.bytes()),
        None => store.put_batch(&digest, &batch),
    };
    let stored = match pushed_by {
        Some((from, pushed)) => pushed.store_pushed(from, digest, put),
        None => put(),
    };
    match stored {
        Ok(true) => {}
        // Stored meanwhile by another path, which offered it to the mempool.
        Ok(false) => return true,
        Err(error) => {
            error!(%error, "storing a batch");
            return true;
        }
    }
    {
        // Room was checked before the verification; others may have filled it since. A batch
        // kept out here stays stored: a block that names it still finds it.
        let mut mempool = mempool.lock().unwrap_or_else(|p| p.into_inner());
        if mempool.has_room(batch.transactions.len()) {
            mempool.add_ready(digest, &batch);
        }
    }
    let _ = jobs.send(Job::DataArrived);
    true
}

/// Bytes of pushed batches being verified and stored at once, over all peers (the frame each
/// came in and its decoded copy, counted as twice the frame). Past it a pushed batch is dropped
/// unverified and counted: if a block names it, it is fetched then.
pub const PUSHED_IN_FLIGHT_BYTES: usize = 256 * 1024 * 1024;

/// The bound on pushed batches in flight ([`PUSHED_IN_FLIGHT_BYTES`]): peers pushing faster
/// than this node verifies and stores cannot pile up batches in memory.
pub struct InFlight {
    available: AtomicUsize,
    refused: AtomicU64,
}

/// Bytes taken from [`InFlight`], given back when the ingest is done (or dropped).
pub struct Reserved {
    budget: Arc<InFlight>,
    bytes: usize,
}

impl InFlight {
    pub fn new(bytes: usize) -> Arc<Self> {
        Arc::new(InFlight {
            available: AtomicUsize::new(bytes),
            refused: AtomicU64::new(0),
        })
    }

    /// Takes `bytes`, or counts a refusal.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reserved> {
        let taken = self
            .available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |available| {
                available.checked_sub(bytes)
            });
        match taken {
            Ok(_) => Some(Reserved {
                budget: self.clone(),
                bytes,
            }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Pushed batches dropped at the bound since start.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget
            .available
            .fetch_add(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushed_batches_in_flight_are_bounded_and_their_bytes_come_back() {
        let budget = InFlight::new(1000);
        let first = budget.reserve(600).expect("room");
        assert!(budget.reserve(600).is_none(), "over the bound");
        let second = budget.reserve(400).expect("what is left");
        assert!(budget.reserve(1).is_none());
        assert_eq!(budget.refused_total(), 2);
        drop(first);
        drop(second);
        let all = budget.reserve(1000).expect("everything given back");
        drop(all);
        assert_eq!(budget.available.load(Ordering::Acquire), 1000);
    }
}
