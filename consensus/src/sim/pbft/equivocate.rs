//! PBFT's `equivocate`: a Byzantine replica that says different things to different replicas
//! wherever the protocol lets it speak.
//! - As primary: two PRE-PREPAREs at each sequence number (its engine's block, and another
//!   payload on the same parent), each replica getting one of them at random.
//! - PREPARE and COMMIT for every block it is pre-prepared, as soon as it sees it, and again
//!   for every block it saw at that (view, sequence number) whenever its engine votes.
//! - As a new primary: a NEW-VIEW without the re-issued blocks (as if dropping prepared
//!   requests) to a random part of the others; the honest ones must refuse it.
//! - VIEW-CHANGE: claims to have prepared, wherever it saw two blocks at one (view, sequence
//!   number), the other one (A1 of the decision is what keeps it out when the first may have
//!   committed).
//!
//! Each message carries valid MACs and signatures: the replica's own keys are real.

use crate::pbft::{
    Authenticated, NewView, PbftMessage, Phase, PrePrepare, PrePreparedEntry, PreparedEntry,
    ViewChange, KIND_COMMIT, KIND_NEW_VIEW, KIND_PREPARE, KIND_PRE_PREPARE,
};
use crate::sim::{state_root, World};
use crate::Message;
use quorate_crypto::{Digest, Domain, Hasher, MacKey};
use quorate_ledger::{BlockHeader, Height, View};
use std::collections::BTreeMap;

/// Blocks remembered per (view, sequence number).
const SEEN_MAX: usize = 4;

impl World<'_> {
    /// Remembers each block pre-prepared to the equivocator, and at once sends PREPARE and
    /// COMMIT for it (whatever its engine thinks of it).
    pub(in crate::sim) fn pbft_remember(&mut self, node: usize, message: &Message) {
        if let Message::Pbft(PbftMessage::PrePrepare(pre_prepare)) = message {
            let body = &pre_prepare.body;
            if let Ok(digest) = body.header.hash() {
                if self.pbft_saw(node, body.view, body.header.height, digest) {
                    let phase = Phase {
                        view: body.view,
                        seq: body.header.height,
                        digest,
                    };
                    for target in self.others(node) {
                        self.send_phase(node, target, KIND_PREPARE, phase);
                        self.send_phase(node, target, KIND_COMMIT, phase);
                    }
                }
            }
        }
    }

    /// Records a block seen at (view, seq); false if it was already known.
    fn pbft_saw(&mut self, node: usize, view: View, seq: Height, digest: Digest) -> bool {
        let seen = self.nodes[node].pbft_seen.entry((view, seq)).or_default();
        let new = !seen.contains(&digest) && seen.len() < SEEN_MAX;
        if new {
            seen.push(digest);
        }
        while self.nodes[node].pbft_seen.len() > 1024 {
            self.nodes[node].pbft_seen.pop_first();
        }
        new
    }

    /// Every simulated node of another index.
    fn others(&self, node: usize) -> Vec<usize> {
        let index = self.nodes[node].index;
        (0..self.nodes.len())
            .filter(|&t| self.nodes[t].index != index)
            .collect()
    }

    /// The key the equivocator `node` shares with simulated node `target` in its epoch (none
    /// if `target` is not in its set).
    pub(in crate::sim) fn key_for(&self, node: usize, target: usize) -> Option<MacKey> {
        let epoch = self.nodes[node].epoch;
        let keys =
            self.setup
                .epoch_mac_keys(epoch as u64, &self.plan(epoch).set, self.nodes[node].index);
        keys.get(self.nodes[target].index).cloned()
    }

    fn send_phase(&mut self, node: usize, target: usize, kind: u8, phase: Phase) {
        let Some(key) = self.key_for(node, target) else {
            return;
        };
        let Some(sealed) = Authenticated::seal(kind, phase, &key) else {
            return;
        };
        let message = if kind == KIND_COMMIT {
            PbftMessage::Commit(sealed)
        } else {
            PbftMessage::Prepare(sealed)
        };
        self.deliver(node, target, Message::Pbft(message));
    }

    /// The other block the equivocating primary offers at its engine's block's sequence number.
    fn second_block(&self, node: usize, header: &BlockHeader) -> Option<BlockHeader> {
        let parent = self.nodes[node].headers.get(&header.parent)?;
        let mut other = header.clone();
        let mut hasher = Hasher::new(Domain::Payload);
        hasher
            .update(b"equivocate")
            .update(&header.payload_digest.0);
        other.payload_digest = hasher.finalize();
        other.state_root = state_root(&parent.state_root, &other.payload_digest);
        Some(other)
    }

    /// Sends what the equivocator `node` says to validator `to` in place of its engine's
    /// `message`; false if the message goes out unchanged.
    pub(in crate::sim) fn pbft_equivocate_send(
        &mut self,
        node: usize,
        to: usize,
        message: &Message,
    ) -> bool {
        let Message::Pbft(message) = message else {
            return false;
        };
        let targets: Vec<usize> = self.by_index[to].clone();
        match message {
            PbftMessage::PrePrepare(pre_prepare) => {
                let view = pre_prepare.body.view;
                let header = &pre_prepare.body.header;
                let Some(other) = self.second_block(node, header) else {
                    return false;
                };
                let (Ok(first), Ok(second)) = (header.hash(), other.hash()) else {
                    return false;
                };
                self.pbft_saw(node, view, header.height, first);
                self.pbft_saw(node, view, header.height, second);
                for target in targets {
                    let header = if self.rng.chance(0.5) {
                        header.clone()
                    } else {
                        other.clone()
                    };
                    let Some(key) = self.key_for(node, target) else {
                        continue;
                    };
                    let body = PrePrepare { view, header };
                    if let Some(sealed) = Authenticated::seal(KIND_PRE_PREPARE, body, &key) {
                        let message = Message::Pbft(PbftMessage::PrePrepare(sealed));
                        self.deliver(node, target, message);
                    }
                }
                true
            }
            PbftMessage::Prepare(phase) | PbftMessage::Commit(phase) => {
                let kind = if matches!(message, PbftMessage::Commit(_)) {
                    KIND_COMMIT
                } else {
                    KIND_PREPARE
                };
                let Phase { view, seq, digest } = phase.body;
                let mut digests = self.nodes[node]
                    .pbft_seen
                    .get(&(view, seq))
                    .cloned()
                    .unwrap_or_default();
                if !digests.contains(&digest) {
                    digests.push(digest);
                }
                for target in targets {
                    for &digest in &digests {
                        self.send_phase(node, target, kind, Phase { view, seq, digest });
                    }
                }
                true
            }
            PbftMessage::NewView(new_view) if !new_view.body.reissued.is_empty() => {
                for target in targets {
                    let body = if self.rng.chance(0.5) {
                        NewView {
                            reissued: Vec::new(),
                            ..new_view.body.clone()
                        }
                    } else {
                        new_view.body.clone()
                    };
                    let Some(key) = self.key_for(node, target) else {
                        continue;
                    };
                    if let Some(sealed) = Authenticated::seal(KIND_NEW_VIEW, body, &key) {
                        self.deliver(node, target, Message::Pbft(PbftMessage::NewView(sealed)));
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Sends what the equivocator `node` says in place of its engine's broadcast `message`
    /// (a VIEW-CHANGE: the only PBFT message broadcast whole); false if it goes out unchanged.
    pub(in crate::sim) fn pbft_equivocate(
        &mut self,
        node: usize,
        message: &Message,
        targets: &[usize],
    ) -> bool {
        let Message::Pbft(PbftMessage::ViewChange(change)) = message else {
            return false;
        };
        let index = self.nodes[node].index;
        let mut data = change.data.clone();
        let low = data.stable.height();
        // Claim to have prepared, at each sequence number where it saw (or made) two blocks,
        // the last one it saw, in the view it saw it in.
        let mut claims: BTreeMap<Height, (View, Digest)> = BTreeMap::new();
        for ((view, seq), digests) in &self.nodes[node].pbft_seen {
            if *seq > low && *view < data.view && digests.len() >= 2 {
                if let Some(last) = digests.last() {
                    claims.insert(*seq, (*view, *last));
                }
            }
        }
        if claims.is_empty() {
            return false;
        }
        for (seq, (view, digest)) in claims {
            data.prepared.retain(|entry| entry.seq != seq);
            data.prepared.push(PreparedEntry { seq, view, digest });
            data.pre_prepared.retain(|entry| entry.seq != seq);
            data.pre_prepared.push(PrePreparedEntry {
                seq,
                blocks: vec![(digest, view)],
            });
        }
        data.prepared.sort_by_key(|entry| entry.seq);
        data.pre_prepared.sort_by_key(|entry| entry.seq);
        let window = self.setup.params.pbft_window;
        data.prepared.retain(|entry| entry.seq.0 <= low.0 + window);
        data.pre_prepared
            .retain(|entry| entry.seq.0 <= low.0 + window);
        let Some(bytes) = data.signing_bytes() else {
            return false;
        };
        let lie = ViewChange {
            signature: self.setup.signers[index].sign(Domain::ViewChange, &bytes),
            data,
        };
        for &target in targets {
            let message = Message::Pbft(PbftMessage::ViewChange(lie.clone()));
            self.deliver(node, target, message);
        }
        true
    }
}
