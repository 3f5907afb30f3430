//! PBFT's `equivocate`: a Byzantine replica that says different things to different replicas
//! wherever the protocol lets it speak.
//! - As primary: two PRE-PREPAREs at each sequence number (its engine's block, and another
//!   payload on the same parent), each to a random part of the others.
//! - PREPARE and COMMIT for every block it is pre-prepared, as soon as it sees it, and again
//!   for every block it saw at that (view, sequence number) whenever its engine votes.
//! - As a new primary: a NEW-VIEW without the re-issued blocks (as if dropping prepared
//!   requests) to a random part of the others; the honest ones must refuse it.
//! - VIEW-CHANGE: claims to have prepared, wherever it saw two blocks at one (view, sequence
//!   number), the other one (A1 of the decision is what keeps it out when the first may have
//!   committed).
//!
//! Each message carries valid MACs and signatures: the replica's own keys are real.

use super::{state_root, World};
use crate::pbft::{
    Authenticated, NewView, PbftMessage, Phase, PrePrepare, PrePreparedEntry, PreparedEntry,
    ViewChange, KIND_COMMIT, KIND_NEW_VIEW, KIND_PREPARE, KIND_PRE_PREPARE,
};
use crate::Message;
use quorate_crypto::{Digest, Domain, Hasher};
use quorate_ledger::{Height, View};
use std::collections::BTreeMap;

/// Blocks remembered per (view, sequence number).
const SEEN_MAX: usize = 4;

impl World<'_> {
    /// Remembers each block pre-prepared to the equivocator, and at once sends PREPARE and
    /// COMMIT for it (whatever its engine thinks of it).
    pub(super) fn pbft_remember(&mut self, node: usize, message: &Message) {
        if let Message::Pbft(PbftMessage::PrePrepare(pre_prepare)) = message {
            let body = &pre_prepare.body;
            if let Ok(digest) = body.header.hash() {
                if self.pbft_saw(node, body.view, body.header.height, digest) {
                    self.vote_for_everything(node, body.view, body.header.height, digest);
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

    fn vote_for_everything(&mut self, node: usize, view: View, seq: Height, digest: Digest) {
        let keys = self.setup.mac_keys(self.nodes[node].index);
        let phase = Phase { view, seq, digest };
        if let Some(prepare) = Authenticated::seal(KIND_PREPARE, phase, &keys) {
            self.deliver_to_others(node, Message::Pbft(PbftMessage::Prepare(prepare)));
        }
        if let Some(commit) = Authenticated::seal(KIND_COMMIT, phase, &keys) {
            self.deliver_to_others(node, Message::Pbft(PbftMessage::Commit(commit)));
        }
    }

    /// Sends what the equivocator `node` says in place of its engine's broadcast `message`;
    /// false if the message goes out unchanged.
    pub(super) fn pbft_equivocate(
        &mut self,
        node: usize,
        message: &Message,
        targets: &[usize],
    ) -> bool {
        let Message::Pbft(message) = message else {
            return false;
        };
        let index = self.nodes[node].index;
        let keys = self.setup.mac_keys(index);
        match message {
            PbftMessage::PrePrepare(pre_prepare) => {
                let view = pre_prepare.body.view;
                let header = &pre_prepare.body.header;
                let Some(parent) = self.nodes[node].headers.get(&header.parent).cloned() else {
                    return false;
                };
                let mut other = header.clone();
                let mut hasher = Hasher::new(Domain::Payload);
                hasher
                    .update(b"equivocate")
                    .update(&header.payload_digest.0);
                other.payload_digest = hasher.finalize();
                other.state_root = state_root(&parent.state_root, &other.payload_digest);
                let (Ok(first), Ok(second)) = (header.hash(), other.hash()) else {
                    return false;
                };
                self.pbft_saw(node, view, header.height, first);
                self.pbft_saw(node, view, header.height, second);
                let sealed = [
                    Authenticated::seal(KIND_PRE_PREPARE, pre_prepare.body.clone(), &keys),
                    Authenticated::seal(
                        KIND_PRE_PREPARE,
                        PrePrepare {
                            view,
                            header: other,
                        },
                        &keys,
                    ),
                ];
                let [Some(first), Some(second)] = sealed else {
                    return false;
                };
                for &target in targets {
                    let pick = if self.rng.chance(0.5) {
                        &first
                    } else {
                        &second
                    };
                    let message = Message::Pbft(PbftMessage::PrePrepare(pick.clone()));
                    self.deliver(node, target, message);
                }
                true
            }
            PbftMessage::Prepare(phase) | PbftMessage::Commit(phase) => {
                let commit = matches!(message, PbftMessage::Commit(_));
                let Phase { view, seq, digest } = phase.body;
                let mut digests = self.nodes[node]
                    .pbft_seen
                    .get(&(view, seq))
                    .cloned()
                    .unwrap_or_default();
                if !digests.contains(&digest) {
                    digests.push(digest);
                }
                for digest in digests {
                    let body = Phase { view, seq, digest };
                    let kind = if commit { KIND_COMMIT } else { KIND_PREPARE };
                    let Some(sealed) = Authenticated::seal(kind, body, &keys) else {
                        continue;
                    };
                    let message = Message::Pbft(if commit {
                        PbftMessage::Commit(sealed)
                    } else {
                        PbftMessage::Prepare(sealed)
                    });
                    for &target in targets {
                        self.deliver(node, target, message.clone());
                    }
                }
                true
            }
            PbftMessage::NewView(new_view) if !new_view.body.reissued.is_empty() => {
                let truncated = NewView {
                    reissued: Vec::new(),
                    ..new_view.body.clone()
                };
                let Some(truncated) = Authenticated::seal(KIND_NEW_VIEW, truncated, &keys) else {
                    return false;
                };
                for &target in targets {
                    let pick = if self.rng.chance(0.5) {
                        truncated.clone()
                    } else {
                        new_view.clone()
                    };
                    self.deliver(node, target, Message::Pbft(PbftMessage::NewView(pick)));
                }
                true
            }
            PbftMessage::ViewChange(change) => {
                let mut data = change.data.clone();
                let low = data.stable.height();
                // Claim to have prepared, at each sequence number where it saw (or made) two
                // blocks, the last one it saw, in the view it saw it in.
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
                    self.deliver(
                        node,
                        target,
                        Message::Pbft(PbftMessage::ViewChange(lie.clone())),
                    );
                }
                true
            }
            _ => false,
        }
    }
}
