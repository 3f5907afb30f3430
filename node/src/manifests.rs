//! The bound on manifests that peers send ahead of their proposals.
//!
//! The ledger drops a committed block's manifest once it is `MANIFESTS_RETAINED` blocks deep
//! (its record keeps the batch list). A manifest no block ever commits would stay forever, so the node
//! remembers, per peer, the manifests that peer was the first to send, and once it has sent
//! [`PER_PEER_MAX`] newer ones forgets (deletes) the oldest: a peer that floods manifests bounds
//! the store instead of filling it, and can only ever evict what it sent first. An honest
//! leader sends one per view it leads, so its manifest of a block still pending is never among
//! the evicted; one that is evicted anyway is fetched again from the proposer.

use quorate_crypto::Digest;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Uncommitted manifests remembered per peer before its oldest is deleted.
pub const PER_PEER_MAX: usize = 256;

pub struct PeerManifests {
    sent_first: Mutex<Vec<VecDeque<Digest>>>,
    per_peer: usize,
    forgotten: AtomicU64,
}

impl PeerManifests {
    pub fn new(validators: usize, per_peer: usize) -> Self {
        PeerManifests {
            sent_first: Mutex::new((0..validators).map(|_| VecDeque::new()).collect()),
            per_peer: per_peer.max(1),
            forgotten: AtomicU64::new(0),
        }
    }

    /// `from` sent `payload`'s manifest, which was not stored before. Returns the manifest to
    /// delete, if `from` is now past its bound.
    pub fn record(&self, from: usize, payload: Digest) -> Option<Digest> {
        let mut sent_first = self.sent_first.lock().unwrap_or_else(|p| p.into_inner());
        let queue = sent_first.get_mut(from)?;
        queue.push_back(payload);
        if queue.len() <= self.per_peer {
            return None;
        }
        self.forgotten.fetch_add(1, Ordering::Relaxed);
        queue.pop_front()
    }

    /// Manifests deleted at the bound since start.
    pub fn forgotten_total(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_past_its_bound_evicts_only_its_own_oldest() {
        let manifests = PeerManifests::new(4, 3);
        let digest = |k: u8| Digest([k; 32]);
        assert_eq!(manifests.record(1, digest(100)), None);
        for k in 0..3 {
            assert_eq!(manifests.record(2, digest(k)), None);
        }
        for k in 3..50 {
            assert_eq!(manifests.record(2, digest(k)), Some(digest(k - 3)));
        }
        assert_eq!(manifests.forgotten_total(), 47);
        // Peer 1's manifest was never at risk; a non-validator index records nothing.
        assert_eq!(manifests.record(1, digest(101)), None);
        assert_eq!(manifests.record(1, digest(102)), None);
        assert_eq!(manifests.record(1, digest(103)), Some(digest(100)));
        assert_eq!(manifests.record(7, digest(0)), None);
    }
}
