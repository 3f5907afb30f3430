//! Batches kept decoded in memory from the moment they are stored until the block that carries
//! them has committed and the executor lets them go (it keeps the last few committed blocks'
//! for clients and peers reading the chain's tip): executing a block reads its batches from
//! here, without a disk read, a decode or hashing every transaction again to recompute its id. Bounded in bytes; at the bound the
//! oldest go first (they stay on disk, where a read still finds them).

use crate::Batch;
use quorate_crypto::Digest;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The bytes of encoded batches kept at most. At 75,000 payloads of 512 bytes a second (43 MB/s)
/// a batch under HotStuff's three-chain waits up to a second for its commit: with 32 MiB the
/// oldest were pushed out and read back from disk, rehashing every transaction, just as the
/// node was saturated (HotStuff at 80,000 offered, 12 s, two runs each: 60,097 and 49,463 tx/s
/// with 32 MiB, 63,485 and 61,872 with 128 MiB).
pub const RECENT_BATCH_BYTES: usize = 128 << 20;

#[derive(Default)]
pub(crate) struct RecentBatches {
    /// Digest to (batch, encoded size, insertion number).
    batches: HashMap<Digest, (Arc<Batch>, usize, u64)>,
    /// Insertion order; entries whose number no longer matches the map's are stale.
    order: VecDeque<(Digest, u64)>,
    bytes: usize,
    inserted: u64,
    capacity: usize,
}

impl RecentBatches {
    pub(crate) fn new(capacity: usize) -> Self {
        RecentBatches {
            capacity,
            ..Default::default()
        }
    }

    pub(crate) fn get(&self, digest: &Digest) -> Option<Arc<Batch>> {
        self.batches.get(digest).map(|(batch, _, _)| batch.clone())
    }

    pub(crate) fn contains(&self, digest: &Digest) -> bool {
        self.batches.contains_key(digest)
    }

    /// Keeps `batch` (`size` bytes encoded), pushing out the oldest past the bound. A batch
    /// larger than the whole bound is not kept.
    pub(crate) fn insert(&mut self, digest: Digest, batch: Arc<Batch>, size: usize) {
        self.remove(&digest);
        if size > self.capacity {
            return;
        }
        self.inserted += 1;
        self.batches.insert(digest, (batch, size, self.inserted));
        self.order.push_back((digest, self.inserted));
        self.bytes += size;
        while self.bytes > self.capacity {
            let Some((oldest, number)) = self.order.pop_front() else {
                break;
            };
            if self
                .batches
                .get(&oldest)
                .is_some_and(|(_, _, n)| *n == number)
            {
                self.remove(&oldest);
            }
        }
        // Batches removed by digest leave stale entries behind: drop them once they outnumber
        // the live ones, so the queue stays within twice the map.
        if self.order.len() > 2 * self.batches.len() + 64 {
            let batches = &self.batches;
            self.order.retain(|(digest, number)| {
                batches.get(digest).is_some_and(|(_, _, n)| n == number)
            });
        }
    }

    pub(crate) fn remove(&mut self, digest: &Digest) {
        if let Some((_, size, _)) = self.batches.remove(digest) {
            self.bytes -= size;
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u8) -> (Digest, Arc<Batch>) {
        (Digest([i; 32]), Arc::new(Batch::default()))
    }

    #[test]
    fn the_oldest_go_first_at_the_bound() {
        let mut recent = RecentBatches::new(100);
        for i in 0..5 {
            let (digest, b) = batch(i);
            recent.insert(digest, b, 30);
        }
        // 5 x 30 > 100: the first two went.
        assert!(!recent.contains(&Digest([0; 32])));
        assert!(!recent.contains(&Digest([1; 32])));
        for i in 2..5 {
            assert!(recent.get(&Digest([i; 32])).is_some());
        }
        assert_eq!(recent.bytes(), 90);
    }

    #[test]
    fn a_batch_larger_than_the_bound_is_not_kept_and_pushes_nothing_out() {
        let mut recent = RecentBatches::new(100);
        let (a, b) = batch(1);
        recent.insert(a, b, 60);
        let (big, b) = batch(2);
        recent.insert(big, b, 101);
        assert!(recent.contains(&a));
        assert!(!recent.contains(&big));
        assert_eq!(recent.bytes(), 60);
    }

    #[test]
    fn a_batch_stored_again_is_counted_once_and_evicted_by_its_latest_insertion() {
        let mut recent = RecentBatches::new(100);
        let (a, b) = batch(1);
        recent.insert(a, b.clone(), 40);
        let (c, bc) = batch(2);
        recent.insert(c, bc, 40);
        recent.insert(a, b, 40);
        assert_eq!(recent.bytes(), 80);
        // The next insertion evicts the oldest live entry (c), not `a` by its stale first
        // place in the queue.
        let (d, bd) = batch(3);
        recent.insert(d, bd, 40);
        assert!(recent.contains(&a));
        assert!(!recent.contains(&c));
        assert!(recent.contains(&d));
        assert_eq!(recent.bytes(), 80);
    }

    #[test]
    fn removed_batches_do_not_grow_the_queue_without_bound() {
        let mut recent = RecentBatches::new(1 << 20);
        for i in 0..10_000u32 {
            let mut bytes = [0u8; 32];
            bytes[..4].copy_from_slice(&i.to_le_bytes());
            let digest = Digest(bytes);
            recent.insert(digest, Arc::new(Batch::default()), 10);
            recent.remove(&digest);
        }
        assert_eq!(recent.bytes(), 0);
        assert!(recent.queued() <= 64 + 1);
    }
}
