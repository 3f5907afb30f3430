//! The normal case: PRE-PREPARE, PREPARE, COMMIT.

use super::messages::{
    Authenticated, Phase, PrePrepare, KIND_COMMIT, KIND_PREPARE, KIND_PRE_PREPARE,
};
use super::{Pbft, PbftMessage};
use crate::{Action, FaultInjection, PayloadProposal, ValidatorIndex};
use quorate_crypto::Digest;
use quorate_ledger::{BlockHeader, Height, View};

impl Pbft {
    fn mac_ok<T: serde::Serialize + Clone>(
        &self,
        kind: u8,
        from: ValidatorIndex,
        message: &Authenticated<T>,
    ) -> bool {
        self.config
            .keys
            .mac_keys
            .get(from)
            .is_some_and(|key| message.check(kind, key))
    }

    /// Sends `body` to every other replica, each copy with the receiver's MAC.
    pub(super) fn multicast<T: serde::Serialize + Clone>(
        &mut self,
        kind: u8,
        body: &T,
        wrap: fn(Authenticated<T>) -> PbftMessage,
    ) {
        let copies = Authenticated::seal_each(kind, body, &self.config.keys.mac_keys, self.me());
        for (to, sealed) in copies {
            self.send(to, wrap(sealed));
        }
    }

    /// As primary: ask for the next block's payload once the block below it is prepared (or
    /// committed) and the window has room. One block per round trip, however fast payloads
    /// come. With nothing pending the runtime waits for payload (or the heartbeat), except on
    /// the way to the next checkpoint ([`Pbft::must_reach_checkpoint`]).
    pub(super) fn maybe_propose(&mut self) {
        let view = self.view();
        if self.primary(view) != self.me()
            || self.safety.view_changing
            || self.requested.is_some()
            || !self.in_window(self.next_seq)
        {
            return;
        }
        let below = Height(self.next_seq.0.saturating_sub(1));
        let ready = below <= self.committed.height
            || self
                .slots
                .get(&below)
                .is_some_and(|slot| slot.prepared || slot.commit_sent);
        if !ready {
            return;
        }
        let Some((_, parent)) = self.header_at(below) else {
            return;
        };
        let parent = parent.clone();
        let urgent = self.must_reach_checkpoint(below);
        self.requested = Some((view, self.next_seq));
        self.emit(Action::RequestPayload {
            view,
            parent,
            urgent,
        });
    }

    pub(super) fn on_payload_ready(&mut self, view: View, payload: PayloadProposal) {
        let Some((asked_view, seq)) = self.requested else {
            return;
        };
        if asked_view != view {
            return;
        }
        self.requested = None;
        if view != self.view() || self.safety.view_changing || seq != self.next_seq {
            return;
        }
        let Some((parent_hash, parent)) = self.header_at(Height(seq.0.saturating_sub(1))) else {
            return;
        };
        let header = BlockHeader {
            chain_id: self.config.chain_id.clone(),
            genesis_hash: self.config.genesis_hash,
            epoch: self.safety.epoch,
            height: seq,
            view,
            parent: parent_hash,
            payload_digest: payload.payload_digest,
            state_root: payload.state_root,
            proposer: self.me() as u16,
            timestamp_ms: payload.timestamp_ms.max(parent.timestamp_ms),
        };
        let Ok(digest) = header.hash() else { return };
        if !self.safety.pre_prepare(seq, view, digest) {
            return;
        }
        self.keep_header(digest, header.clone());
        let slot = self.slots.entry(seq).or_default();
        slot.digest = Some(digest);
        slot.prepare_sent = true;
        if !self.persist() {
            return;
        }
        self.multicast(
            KIND_PRE_PREPARE,
            &PrePrepare { view, header },
            PbftMessage::PrePrepare,
        );
        self.next_seq = seq.next();
        self.check_prepared(seq);
    }

    pub(super) fn on_pre_prepare(
        &mut self,
        from: ValidatorIndex,
        message: Authenticated<PrePrepare>,
    ) {
        let view = self.view();
        let body = &message.body;
        let header = &body.header;
        let seq = header.height;
        if body.view != view
            || self.safety.view_changing
            || from != self.primary(view)
            || !self.in_window(seq)
            || seq <= self.committed.height
            || header.view != view
            || header.proposer as usize != from
            || header.epoch != self.safety.epoch
            || header.genesis_hash != self.config.genesis_hash
            || header.chain_id != self.config.chain_id
        {
            return;
        }
        if self
            .slots
            .get(&seq)
            .is_some_and(|slot| slot.digest.is_some())
        {
            // The first pre-prepare for (v, s) stands; a second, different one is the
            // primary's equivocation and is not even checked.
            return;
        }
        if !self.mac_ok(KIND_PRE_PREPARE, from, &message) {
            return;
        }
        let Ok(digest) = header.hash() else { return };
        if !self.safety.may_pre_prepare(seq, view, digest) {
            return;
        }
        self.keep_header(digest, message.body.header);
        self.slots.entry(seq).or_default().digest = Some(digest);
        self.try_check(seq);
        // The block above may have been waiting for this one as its parent.
        self.try_check(seq.next());
    }

    /// Asks the runtime to check the block pre-prepared at `seq` once its parent is the block
    /// this replica holds at `seq - 1`.
    pub(super) fn try_check(&mut self, seq: Height) {
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        if slot.checking || slot.prepare_sent {
            return;
        }
        let Some(digest) = slot.digest else { return };
        let Some(header) = self.headers.get(&digest).cloned() else {
            return;
        };
        if seq <= self.committed.height {
            // Re-issued by a NEW-VIEW and already committed here: nothing to check.
            if self.committed_hashes.get(&seq) == Some(&digest) {
                self.send_prepare(seq);
            }
            return;
        }
        let parent_ok = self
            .header_at(Height(seq.0.saturating_sub(1)))
            .is_some_and(|(parent, _)| parent == header.parent);
        if !parent_ok {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.checking = true;
        }
        self.emit(Action::CheckPayload { header });
    }

    pub(super) fn on_payload_checked(&mut self, block: Digest, valid: bool) {
        let Some((&seq, _)) = self
            .slots
            .iter()
            .find(|(_, slot)| slot.checking && slot.digest == Some(block))
        else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.checking = false;
        }
        if valid {
            self.send_prepare(seq);
        } else {
            tracing::debug!(
                replica = self.me(),
                seq = seq.0,
                "pre-prepared payload is invalid"
            );
        }
    }

    /// Records Q, persists it, and sends PREPARE (the primary's pre-prepare stands for its own).
    pub(super) fn send_prepare(&mut self, seq: Height) {
        let view = self.view();
        let me = self.me();
        let Some(digest) = self.slots.get(&seq).and_then(|slot| slot.digest) else {
            return;
        };
        if !self.safety.pre_prepare(seq, view, digest) {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.prepare_sent = true;
            slot.prepares.insert(me, digest);
        }
        if !self.persist() {
            return;
        }
        if self.config.fault == FaultInjection::SkipPrepare {
            // The broken engine: no prepare phase, so no prepared certificate for a view
            // change to carry.
            self.send_commit(seq);
            return;
        }
        if self.primary(view) != me {
            let phase = Phase { view, seq, digest };
            self.multicast(KIND_PREPARE, &phase, PbftMessage::Prepare);
        }
        self.check_prepared(seq);
    }

    pub(super) fn on_prepare(&mut self, from: ValidatorIndex, message: Authenticated<Phase>) {
        let Phase { view, seq, digest } = message.body;
        if view != self.view()
            || self.safety.view_changing
            || from == self.primary(view)
            || !self.in_window(seq)
            || seq <= self.committed.height && !self.slots.contains_key(&seq)
        {
            return;
        }
        if self
            .slots
            .get(&seq)
            .is_some_and(|slot| slot.prepares.contains_key(&from))
        {
            return;
        }
        if !self.mac_ok(KIND_PREPARE, from, &message) {
            return;
        }
        self.slots
            .entry(seq)
            .or_default()
            .prepares
            .insert(from, digest);
        self.check_prepared(seq);
    }

    /// prepared(s): the pre-prepare and matching PREPAREs reach quorum power.
    pub(super) fn check_prepared(&mut self, seq: Height) {
        let view = self.view();
        let primary = self.primary(view);
        let Some(slot) = self.slots.get(&seq) else {
            return;
        };
        let Some(digest) = slot.digest else { return };
        if slot.prepared || !slot.prepare_sent {
            return;
        }
        let power = slot
            .prepares
            .iter()
            .filter(|(sender, d)| **sender != primary && **d == digest)
            .map(|(sender, _)| self.power(*sender))
            .fold(self.power(primary), u64::saturating_add);
        if power < self.quorum() {
            return;
        }
        if let Some(slot) = self.slots.get_mut(&seq) {
            slot.prepared = true;
        }
        self.safety.prepare(seq, view, digest);
        self.send_commits();
        self.maybe_propose();
    }

    /// Sends COMMIT for every prepared block whose parent is committed or has had COMMIT sent,
    /// lowest first, after persisting P.
    fn send_commits(&mut self) {
        let mut ready = Vec::new();
        let mut below_sent: Option<(Height, Digest)> = None;
        for (&seq, slot) in &self.slots {
            let Some(digest) = slot.digest else {
                below_sent = None;
                continue;
            };
            if slot.commit_sent {
                below_sent = Some((seq, digest));
                continue;
            }
            if !slot.prepared {
                below_sent = None;
                continue;
            }
            let Some(header) = self.headers.get(&digest) else {
                below_sent = None;
                continue;
            };
            let below = Height(seq.0.saturating_sub(1));
            let parent_ok = if below <= self.committed.height {
                self.committed_hashes.get(&below) == Some(&header.parent)
            } else {
                below_sent == Some((below, header.parent))
            };
            if parent_ok {
                ready.push(seq);
                below_sent = Some((seq, digest));
            } else {
                below_sent = None;
            }
        }
        if ready.is_empty() || !self.persist() {
            return;
        }
        for seq in ready {
            self.send_commit(seq);
        }
    }

    fn send_commit(&mut self, seq: Height) {
        let view = self.view();
        let me = self.me();
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        let Some(digest) = slot.digest else { return };
        if slot.commit_sent {
            return;
        }
        slot.commit_sent = true;
        let phase = Phase { view, seq, digest };
        self.multicast(KIND_COMMIT, &phase, PbftMessage::Commit);
        self.record_commit(me, phase);
    }

    pub(super) fn on_commit(&mut self, from: ValidatorIndex, message: Authenticated<Phase>) {
        let phase = message.body;
        if phase.view > self.view()
            || phase.seq <= self.committed.height
            || !self.in_window(phase.seq)
        {
            return;
        }
        let newer = self
            .commits
            .get(&phase.seq)
            .and_then(|by_sender| by_sender.get(&from))
            .is_none_or(|(view, _)| *view < phase.view);
        if !newer || !self.mac_ok(KIND_COMMIT, from, &message) {
            return;
        }
        self.record_commit(from, phase);
    }

    /// Counts a COMMIT; a quorum for one (view, block) decides the block.
    fn record_commit(&mut self, from: ValidatorIndex, phase: Phase) {
        if phase.seq <= self.committed.height {
            return;
        }
        let committee = self.config.validators.committee();
        let by_sender = self.commits.entry(phase.seq).or_default();
        by_sender.insert(from, (phase.view, phase.digest));
        let power: u64 = by_sender
            .iter()
            .filter(|(_, entry)| **entry == (phase.view, phase.digest))
            .map(|(sender, _)| committee.power(*sender))
            .fold(0, u64::saturating_add);
        if power >= self.quorum() {
            self.decide(phase.seq, phase.digest);
        }
    }

    /// `digest` is decided at `seq`.
    pub(super) fn decide(&mut self, seq: Height, digest: Digest) {
        if seq <= self.committed.height {
            return;
        }
        match self.decided.insert(seq, digest) {
            Some(previous) if previous != digest => {
                // Two quorums for two blocks at one height: more than f are Byzantine.
                tracing::error!(
                    replica = self.me(),
                    seq = seq.0,
                    %previous,
                    %digest,
                    "two blocks decided at one sequence number"
                );
                self.decided.insert(seq, previous);
                return;
            }
            Some(_) => return,
            None => {}
        }
        self.progressed();
        self.advance();
    }

    /// Clears the normal-case state of the view being left.
    pub(super) fn clear_view_state(&mut self) {
        self.slots.clear();
        self.requested = None;
    }
}
