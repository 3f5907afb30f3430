//! The engine's inbox for peers' consensus messages: one bounded queue per validator, served
//! round-robin, so a peer that floods fills only its own queue and every other validator's
//! messages still reach the engine in their turn.
//!
//! At the bound the peer's OLDEST message is dropped: consensus messages are superseded by
//! newer ones (higher views), and a dropped message costs at most what the peer's silence
//! would. The engine's local inputs (timers, the executor's answers) are not here: the node
//! itself makes them, a bounded number per engine action.

use quorate_consensus::Message;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// Messages held per peer before its oldest are dropped.
pub const PER_PEER_MAX: usize = 256;

pub struct PeerInbox {
    state: Mutex<State>,
    ready: Notify,
    per_peer: usize,
    /// Messages dropped at the bound since start.
    dropped: AtomicU64,
    /// Messages held now (all peers).
    held: AtomicU64,
}

struct State {
    queues: Vec<VecDeque<Message>>,
    /// The peer served next.
    next: usize,
}

impl PeerInbox {
    pub fn new(validators: usize, per_peer: usize) -> Self {
        PeerInbox {
            state: Mutex::new(State {
                queues: (0..validators).map(|_| VecDeque::new()).collect(),
                next: 0,
            }),
            ready: Notify::new(),
            per_peer: per_peer.max(1),
            dropped: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message from validator `from`. Returns false if the peer's queue was full (its
    /// oldest message was dropped to make room) or `from` is not a validator (nothing queued).
    pub fn push(&self, from: usize, message: Message) -> bool {
        let mut state = self.state();
        let Some(queue) = state.queues.get_mut(from) else {
            return false;
        };
        let mut kept_all = true;
        if queue.len() >= self.per_peer {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            kept_all = false;
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(message);
        drop(state);
        self.ready.notify_one();
        kept_all
    }

    /// The next message, taking one from each peer with messages in turn.
    pub fn try_pop(&self) -> Option<(usize, Message)> {
        let mut state = self.state();
        let n = state.queues.len();
        for k in 0..n {
            let from = (state.next + k) % n;
            if let Some(message) = state.queues.get_mut(from).and_then(VecDeque::pop_front) {
                state.next = (from + 1) % n;
                self.held.fetch_sub(1, Ordering::Relaxed);
                return Some((from, message));
            }
        }
        None
    }

    /// Waits for the next message (cancel-safe: nothing is taken until it is returned).
    pub async fn recv(&self) -> (usize, Message) {
        loop {
            let notified = self.ready.notified();
            if let Some(next) = self.try_pop() {
                return next;
            }
            notified.await;
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_consensus::hotstuff::{BlockRequest, HsMessage};
    use quorate_crypto::Digest;

    fn message(tag: u64) -> Message {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&tag.to_be_bytes());
        Message::HotStuff(HsMessage::BlockRequest(BlockRequest {
            hash: Digest(hash),
            count: 1,
        }))
    }

    fn tag(message: &Message) -> u64 {
        match message {
            Message::HotStuff(HsMessage::BlockRequest(request)) => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&request.hash.0[..8]);
                u64::from_be_bytes(bytes)
            }
            _ => u64::MAX,
        }
    }

    #[test]
    fn a_flooding_peer_fills_only_its_own_queue_and_loses_its_oldest() {
        let inbox = PeerInbox::new(4, 8);
        for k in 0..1000 {
            inbox.push(3, message(k));
        }
        assert!(inbox.push(1, message(5000)));
        assert_eq!(inbox.len(), 9);
        assert_eq!(inbox.dropped_total(), 992);
        // Round-robin: the honest peer's message comes out within one turn, not after the flood.
        let order: Vec<(usize, u64)> = std::iter::from_fn(|| inbox.try_pop())
            .map(|(from, m)| (from, tag(&m)))
            .collect();
        assert_eq!(order.len(), 9);
        assert!(order.iter().take(2).any(|&(from, _)| from == 1));
        // What is left of the flood is its newest eight, in order.
        let flood: Vec<u64> = order
            .iter()
            .filter(|&&(from, _)| from == 3)
            .map(|&(_, t)| t)
            .collect();
        assert_eq!(flood, (992..1000).collect::<Vec<_>>());
        assert_eq!(inbox.len(), 0);
        assert!(
            !inbox.push(9, message(0)),
            "not a validator: nothing queued"
        );
        assert!(inbox.try_pop().is_none());
    }
}
