//! The bound on batches that peers push ahead of the blocks that carry them.
//!
//! A pushed batch is verified and stored so that any leader can propose it. One that no block
//! ever commits (its transactions go stale, or its sender floods batches faster than blocks
//! carry them) would stay in the store forever. So the node remembers, per peer, the uncommitted
//! batches that peer pushed, and once it has pushed [`PER_PEER_MAX`] newer ones dooms the oldest.
//! A peer can only ever doom what it pushed itself.
//!
//! Doomed batches are deleted by the executor, between blocks, never one that a committed block
//! names (committing a batch forgets it here first), nor one that a block it has executed but not
//! committed names (that block may commit; its voters keep what it needs), nor one the mempool
//! offers for proposals (that one is bounded by the mempool's own limit and leaves it only by
//! committing). What this bounds is the rest: batches stored while the mempool was full, and
//! batches of blocks that never commit. A doomed batch that a later block names is fetched
//! again, like any missing one.

use quorate_crypto::Digest;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Uncommitted pushed batches remembered per peer before its oldest is doomed. An honest
/// validator seals a batch every few milliseconds under load, and blocks carry them within a
/// few views: this is minutes of headroom.
pub const PER_PEER_MAX: usize = 4096;

pub struct PeerBatches {
    inner: Mutex<Inner>,
    per_peer: usize,
    forgotten: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// Per peer, the batches it pushed, oldest first (some may have been committed since).
    pushed: Vec<VecDeque<Digest>>,
    /// Batches pushed and not committed, and who pushed them.
    uncommitted: HashMap<Digest, usize>,
    /// Evicted, waiting for the executor to delete them.
    doomed: HashSet<Digest>,
}

impl PeerBatches {
    pub fn new(validators: usize, per_peer: usize) -> Self {
        PeerBatches {
            inner: Mutex::new(Inner {
                pushed: (0..validators).map(|_| VecDeque::new()).collect(),
                ..Inner::default()
            }),
            per_peer: per_peer.max(1),
            forgotten: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `from` pushed `batch`: `store` stores it if it is not stored yet and says whether it did;
    /// if so, it is remembered as `from`'s. Both under one lock, so a batch a block committed
    /// meanwhile (which was stored first) is never taken for an uncommitted one.
    pub fn store_pushed<E>(
        &self,
        from: usize,
        batch: Digest,
        store: impl FnOnce() -> Result<bool, E>,
    ) -> Result<bool, E> {
        let mut inner = self.lock();
        let stored_now = store()?;
        if stored_now {
            self.record(&mut inner, from, batch);
        }
        Ok(stored_now)
    }

    fn record(&self, inner: &mut Inner, from: usize, batch: Digest) {
        let Some(queue) = inner.pushed.get_mut(from) else {
            return;
        };
        if inner.uncommitted.contains_key(&batch) {
            return;
        }
        inner.doomed.remove(&batch);
        queue.push_back(batch);
        inner.uncommitted.insert(batch, from);
        while queue.len() > self.per_peer {
            let Some(oldest) = queue.pop_front() else {
                break;
            };
            if inner.uncommitted.remove(&oldest).is_some() {
                inner.doomed.insert(oldest);
                self.forgotten.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A block naming `batches` committed: they are ledger data now, never deleted.
    pub fn committed(&self, batches: &[Digest]) {
        let mut inner = self.lock();
        for batch in batches {
            inner.uncommitted.remove(batch);
            inner.doomed.remove(batch);
        }
    }

    /// Whether any batch waits to be deleted.
    pub fn has_doomed(&self) -> bool {
        !self.lock().doomed.is_empty()
    }

    /// The doomed batches not `in_use`, to delete now; the others stay doomed.
    pub fn take_doomed(&self, in_use: impl Fn(&Digest) -> bool) -> Vec<Digest> {
        let mut inner = self.lock();
        if inner.doomed.is_empty() {
            return Vec::new();
        }
        let free: Vec<Digest> = inner
            .doomed
            .iter()
            .filter(|batch| !in_use(batch))
            .copied()
            .collect();
        for batch in &free {
            inner.doomed.remove(batch);
        }
        free
    }

    /// Batches doomed at the bound since start.
    pub fn forgotten_total(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(k: u16) -> Digest {
        let mut bytes = [0; 32];
        bytes[..2].copy_from_slice(&k.to_le_bytes());
        Digest(bytes)
    }

    impl PeerBatches {
        fn push(&self, from: usize, batch: Digest) {
            let stored: Result<bool, ()> = self.store_pushed(from, batch, || Ok(true));
            assert_eq!(stored, Ok(true));
        }
    }

    #[test]
    fn a_peer_past_its_bound_dooms_only_its_own_oldest_uncommitted_batches() {
        let batches = PeerBatches::new(4, 3);
        batches.push(1, digest(1000));
        for k in 0..3 {
            batches.push(2, digest(k));
        }
        assert!(batches.take_doomed(|_| false).is_empty());
        // Batch 1 commits; batch 0 is named by an executed, uncommitted block.
        batches.committed(&[digest(1)]);
        for k in 3..50 {
            batches.push(2, digest(k));
        }
        assert_eq!(batches.forgotten_total(), 46, "all but the committed one");
        let in_use: HashSet<Digest> = [digest(0)].into();
        let mut deleted = batches.take_doomed(|b| in_use.contains(b));
        deleted.sort();
        let mut expected: Vec<Digest> = (2..47).map(digest).collect();
        expected.sort();
        assert_eq!(
            deleted, expected,
            "never the committed one, not the one in use yet"
        );
        // The block naming batch 0 commits after all: it is kept for good.
        batches.committed(&[digest(0)]);
        assert!(batches.take_doomed(|_| false).is_empty());
        // Peer 1's batch was never at risk; a non-validator index records nothing.
        batches.push(7, digest(2000));
        batches.push(1, digest(1001));
        batches.push(1, digest(1002));
        assert!(batches.take_doomed(|_| false).is_empty());
        batches.push(1, digest(1003));
        assert_eq!(batches.take_doomed(|_| false), vec![digest(1000)]);
    }

    #[test]
    fn a_doomed_batch_pushed_again_is_kept() {
        let batches = PeerBatches::new(2, 1);
        batches.push(0, digest(1));
        batches.push(0, digest(2));
        // Batch 1 is doomed, then pushed again by the other peer before the executor ran.
        batches.push(1, digest(1));
        assert!(batches.take_doomed(|_| false).is_empty());
        // A batch found already stored (committed, or pushed by another peer) is not recorded.
        let stored: Result<bool, ()> = batches.store_pushed(1, digest(3), || Ok(false));
        assert_eq!(stored, Ok(false));
        batches.push(1, digest(4));
        assert_eq!(batches.take_doomed(|_| false), vec![digest(1)]);
    }
}
