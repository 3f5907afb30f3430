//! The view change: VIEW-CHANGE, NEW-VIEW, and checking what a new primary re-issues.

use super::messages::{
    Authenticated, NewView, StablePoint, ViewChange, ViewChangeData, KIND_NEW_VIEW,
};
use super::safety::Q_BLOCKS_MAX;
use super::view_change::{decide, reissued_prefix, Decision};
use super::{Pbft, PbftMessage, VIEWS_AHEAD_MAX};
use crate::{Action, TimerId, ValidatorIndex};
use quorate_crypto::{Digest, Domain};
use quorate_ledger::{BlockHeader, View};

impl Pbft {
    /// Leaves the current view for `view` (higher): persist, then VIEW-CHANGE to all.
    pub(super) fn start_view_change(&mut self, view: View, why: &'static str) {
        if view <= self.view() {
            return;
        }
        tracing::debug!(
            replica = self.me(),
            from = %self.view(),
            to = %view,
            committed = self.committed.height.0,
            low_watermark = self.low_watermark().0,
            "view change: {why}"
        );
        self.safety.view = view;
        self.safety.view_changing = true;
        self.clear_view_state();
        self.quorum_left_for = None;
        self.sent_new_view = None;
        self.timeouts += 1;
        if !self.persist() {
            return;
        }
        self.send_view_change();
        self.arm_new_view_timer();
    }

    pub(super) fn arm_new_view_timer(&mut self) {
        self.emit(Action::SetTimer {
            timer: TimerId::NewView(self.view()),
            duration_ms: self.timeout_ms(),
        });
    }

    /// The NEW-VIEW of `view` has not come: once a quorum is known to have moved to `view`,
    /// move on to the next (with a longer timeout); until then, send the VIEW-CHANGE again (it
    /// may have been lost).
    pub(super) fn on_new_view_timer(&mut self, view: View) {
        if view != self.view() || !self.safety.view_changing {
            return;
        }
        if self.quorum_left_for == Some(view) {
            self.failures = self.failures.saturating_add(1);
            self.start_view_change(view.next(), "no NEW-VIEW from a quorum's view");
        } else {
            self.send_view_change();
            self.arm_new_view_timer();
        }
    }

    /// VIEW-CHANGE for the current view, from the persisted state.
    pub(super) fn send_view_change(&mut self) {
        let (prepared, pre_prepared) = self.safety.report(self.window());
        let data = ViewChangeData {
            genesis_hash: self.config.genesis_hash,
            epoch: self.safety.epoch,
            view: self.view(),
            replica: self.me() as u16,
            stable: self.safety.stable.clone(),
            prepared,
            pre_prepared,
        };
        let Some(bytes) = data.signing_bytes() else {
            return;
        };
        let change = ViewChange {
            signature: self.config.keys.signer.sign(Domain::ViewChange, &bytes),
            data,
        };
        self.broadcast(PbftMessage::ViewChange(change.clone()));
        let me = self.me();
        if let Some(slot) = self.view_changes.get_mut(me) {
            *slot = Some(change);
        }
        self.after_view_change_arrived();
    }

    /// Checks a VIEW-CHANGE's shape, stable point and signature (`signed_by` is the replica
    /// it names). Errors say why, for the misbehaviour report.
    fn check_view_change(&self, change: &ViewChange) -> Result<(), String> {
        let data = &change.data;
        let replica = data.replica as usize;
        if replica >= self.n() {
            return Err(format!("names replica {replica} of {}", self.n()));
        }
        if data.genesis_hash != self.config.genesis_hash || data.epoch != self.safety.epoch {
            return Err("for another chain or epoch".into());
        }
        let low = data.stable.height();
        let high = low.0.saturating_add(self.window());
        let mut previous = low;
        for entry in &data.prepared {
            if entry.seq <= previous || entry.seq.0 > high || entry.view >= data.view {
                return Err("prepared entries out of order, window or view".into());
            }
            previous = entry.seq;
        }
        let mut previous = low;
        for entry in &data.pre_prepared {
            if entry.seq <= previous
                || entry.seq.0 > high
                || entry.blocks.is_empty()
                || entry.blocks.len() > Q_BLOCKS_MAX
                || entry.blocks.iter().any(|(_, view)| *view >= data.view)
            {
                return Err("pre-prepared entries out of order, window, size or view".into());
            }
            previous = entry.seq;
        }
        match &data.stable {
            StablePoint::Root { height, block } => {
                if *block != self.epoch_root || *height != self.config.epoch_root.height {
                    return Err("claims a root that is not the epoch's".into());
                }
            }
            StablePoint::Certified(cert) => {
                if cert.data.genesis_hash != self.config.genesis_hash
                    || cert.data.epoch != self.safety.epoch
                    || cert.data.seq.0 != cert.data.height.0
                {
                    return Err("checkpoint certificate for another chain or epoch".into());
                }
                self.config
                    .verifier
                    .verify_checkpoint(cert, self.config.validators.committee())
                    .map_err(|e| format!("checkpoint certificate does not verify: {e}"))?;
            }
        }
        let bytes = data
            .signing_bytes()
            .ok_or_else(|| "cannot be encoded".to_string())?;
        self.config
            .verifier
            .scheme()
            .verify_member(
                self.config.validators.committee(),
                replica,
                Domain::ViewChange,
                &bytes,
                &change.signature,
            )
            .map_err(|e| format!("signature does not verify: {e}"))
    }

    pub(super) fn on_view_change(&mut self, from: ValidatorIndex, change: ViewChange) {
        let view = change.data.view;
        if change.data.replica as usize != from {
            return;
        }
        if view < self.view() || view == self.view() && !self.safety.view_changing {
            // The sender is behind: the primary of this view hands it the NEW-VIEW it missed,
            // once per view, and only for a VIEW-CHANGE it really signed.
            let current = self.view();
            let due = self.sent_new_view.is_some()
                && self.resent_new_view.get(from) != Some(&Some(current))
                && self.check_view_change(&change).is_ok();
            if !due {
                return;
            }
            if let Some(slot) = self.resent_new_view.get_mut(from) {
                *slot = Some(current);
            }
            let key = self.config.keys.mac_keys.get(from);
            let resend = self
                .sent_new_view
                .clone()
                .zip(key)
                .and_then(|(new_view, key)| Authenticated::seal(KIND_NEW_VIEW, new_view, key));
            if let Some(sealed) = resend {
                self.send(from, PbftMessage::NewView(sealed));
            }
            return;
        }
        if view.0 > self.view().0.saturating_add(VIEWS_AHEAD_MAX) {
            return;
        }
        let newer = self
            .view_changes
            .get(from)
            .and_then(Option::as_ref)
            .is_none_or(|stored| stored.data.view < view);
        if !newer {
            return;
        }
        if let Err(why) = self.check_view_change(&change) {
            self.penalize(from, format!("VIEW-CHANGE {why}"));
            return;
        }
        if let Some(slot) = self.view_changes.get_mut(from) {
            *slot = Some(change);
        }
        // f+1 replicas want a higher view: at least one honest one timed out; join the lowest.
        let current = self.view();
        let ahead: Vec<(ValidatorIndex, View)> = self
            .view_changes
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| (i, c.data.view)))
            .filter(|(_, v)| *v > current)
            .collect();
        let power = ahead
            .iter()
            .map(|(i, _)| self.power(*i))
            .fold(0, u64::saturating_add);
        if power >= self.validity() {
            if let Some(lowest) = ahead.iter().map(|(_, v)| *v).min() {
                self.start_view_change(lowest, "f+1 want a higher view");
                return;
            }
        }
        self.after_view_change_arrived();
    }

    /// The VIEW-CHANGEs for the current view (one per replica, by index).
    fn current_view_changes(&self) -> Vec<&ViewChange> {
        let view = self.view();
        self.view_changes
            .iter()
            .filter_map(Option::as_ref)
            .filter(|c| c.data.view == view)
            .collect()
    }

    /// Once a quorum has left for the view being entered or a later one: its NEW-VIEW timer
    /// now moves on when it fires, and its primary tries to send the NEW-VIEW.
    fn after_view_change_arrived(&mut self) {
        if !self.safety.view_changing {
            return;
        }
        let view = self.view();
        // A replica whose latest VIEW-CHANGE is for the next view has left this one too (only
        // the next: one Byzantine VIEW-CHANGE far ahead must not stand for every view below).
        let power = self
            .view_changes
            .iter()
            .flatten()
            .filter(|c| c.data.view == view || c.data.view == view.next())
            .map(|c| self.power(c.data.replica as usize))
            .fold(0, u64::saturating_add);
        if power < self.quorum() {
            return;
        }
        self.quorum_left_for = Some(view);
        self.try_new_view();
    }

    fn decide_over(&self, changes: &[&ViewChangeData]) -> Option<Decision> {
        let committee = self.config.validators.committee();
        decide(
            changes,
            &|i| committee.power(i),
            self.quorum(),
            self.validity(),
            self.window(),
            self.config.fault,
        )
    }

    /// As the primary of the view being entered: decide, fetch any header the decision needs,
    /// then NEW-VIEW.
    pub(super) fn try_new_view(&mut self) {
        let view = self.view();
        if !self.safety.view_changing || self.primary(view) != self.me() {
            return;
        }
        let changes: Vec<ViewChange> = self.current_view_changes().into_iter().cloned().collect();
        let data: Vec<&ViewChangeData> = changes.iter().map(|c| &c.data).collect();
        let Some(decision) = self.decide_over(&data) else {
            tracing::debug!(
                replica = self.me(),
                %view,
                view_changes = data.len(),
                "NEW-VIEW: these VIEW-CHANGEs do not decide yet"
            );
            return;
        };
        let mut reissued: Vec<BlockHeader> = Vec::new();
        let mut previous = decision.stable.block();
        for digest in &decision.chosen {
            let Some(header) = self.headers.get(digest) else {
                tracing::debug!(
                    replica = self.me(),
                    %view,
                    %digest,
                    chosen = decision.chosen.len(),
                    "NEW-VIEW: fetching a chosen block's header"
                );
                self.want(*digest);
                return;
            };
            reissued.push(header.clone());
            if header.parent != previous {
                break;
            }
            previous = *digest;
        }
        let new_view = NewView {
            view,
            view_changes: changes,
            reissued,
        };
        let prefix = match self.prefix_of(&decision, &new_view.reissued) {
            Ok(prefix) => prefix,
            Err(why) => {
                tracing::warn!(replica = self.me(), %view, "own NEW-VIEW does not check: {why}");
                return;
            }
        };
        if !self.enter_new_view(&new_view, decision, prefix) {
            return;
        }
        self.multicast(KIND_NEW_VIEW, &new_view, PbftMessage::NewView);
        self.sent_new_view = Some(new_view);
        self.maybe_propose();
    }

    /// How many of `reissued` are re-issued, after checking they are exactly the headers of
    /// the decision's blocks up to where the chain breaks (see [`reissued_prefix`]).
    fn prefix_of(&self, decision: &Decision, reissued: &[BlockHeader]) -> Result<usize, String> {
        if reissued.len() > decision.chosen.len() {
            return Err("re-issues more blocks than were chosen".into());
        }
        let mut parents = Vec::with_capacity(reissued.len());
        for (header, chosen) in reissued.iter().zip(&decision.chosen) {
            let digest = header.hash().map_err(|e| e.to_string())?;
            if digest != *chosen {
                return Err("a re-issued header is not the chosen block".into());
            }
            parents.push(header.parent);
        }
        match reissued_prefix(decision, &parents) {
            // The chain breaks at the last header carried: the headers above are not needed.
            Ok(prefix) if prefix + 1 == reissued.len() || prefix == decision.chosen.len() => {
                Ok(prefix)
            }
            Ok(_) => Err("carries headers past the break in the chain".into()),
            Err(_) => Err("leaves out a chosen block's header".into()),
        }
    }

    pub(super) fn on_new_view(&mut self, from: ValidatorIndex, message: Authenticated<NewView>) {
        let view = message.body.view;
        if from != self.primary(view)
            || view < self.view()
            || view == self.view() && !self.safety.view_changing
            || view.0 > self.view().0.saturating_add(VIEWS_AHEAD_MAX)
            || self.rejected_new_views.contains(&view)
        {
            return;
        }
        let Some(key) = self.config.keys.mac_keys.get(from) else {
            return;
        };
        if !message.check(KIND_NEW_VIEW, key) {
            return;
        }
        match self.check_new_view(&message.body) {
            Ok((decision, prefix)) => {
                if self.view() < view {
                    self.safety.view = view;
                    self.safety.view_changing = true;
                }
                self.enter_new_view(&message.body, decision, prefix);
            }
            Err(why) => {
                let current = self.view();
                self.rejected_new_views.retain(|v| *v >= current);
                self.rejected_new_views.insert(view);
                self.emit(Action::Misbehaved {
                    peer: from,
                    why: format!("NEW-VIEW {why}"),
                });
            }
        }
    }

    fn check_new_view(&self, new_view: &NewView) -> Result<(Decision, usize), String> {
        let mut seen = vec![false; self.n()];
        let mut power = 0u64;
        for change in &new_view.view_changes {
            let replica = change.data.replica as usize;
            if change.data.view != new_view.view {
                return Err("carries a VIEW-CHANGE for another view".into());
            }
            match seen.get_mut(replica) {
                Some(slot) if !*slot => *slot = true,
                _ => return Err("carries a replica's VIEW-CHANGE twice, or a stranger's".into()),
            }
            // One received directly was checked then.
            let known = self
                .view_changes
                .get(replica)
                .and_then(Option::as_ref)
                .is_some_and(|stored| stored == change);
            if !known {
                self.check_view_change(change)?;
            }
            power = power.saturating_add(self.power(replica));
        }
        if power < self.quorum() {
            return Err("has VIEW-CHANGEs below quorum".into());
        }
        let data: Vec<&ViewChangeData> = new_view.view_changes.iter().map(|c| &c.data).collect();
        let decision = self
            .decide_over(&data)
            .ok_or_else(|| "VIEW-CHANGEs do not decide what to re-issue".to_string())?;
        let prefix = self.prefix_of(&decision, &new_view.reissued)?;
        Ok((decision, prefix))
    }

    /// Enters the new view: adopt its stable point, and treat each re-issued block as its
    /// PRE-PREPARE. `false` if the state could not be persisted (nothing is sent then).
    fn enter_new_view(&mut self, new_view: &NewView, decision: Decision, prefix: usize) -> bool {
        if let StablePoint::Certified(cert) = &decision.stable {
            if cert.data.height > self.low_watermark() {
                self.stabilize(cert.clone());
            }
        }
        let view = new_view.view;
        let primary = self.primary(view) == self.me();
        self.safety.view = view;
        self.safety.view_changing = false;
        self.clear_view_state();
        self.quorum_left_for = None;
        self.rejected_new_views.retain(|v| *v > view);
        let stable = self.low_watermark();
        let mut top = stable;
        let reissued: Vec<(Digest, BlockHeader)> = new_view
            .reissued
            .iter()
            .take(prefix)
            .zip(decision.chosen.iter())
            .filter(|(header, _)| header.height > stable)
            .map(|(header, digest)| (*digest, header.clone()))
            .collect();
        for (digest, header) in &reissued {
            let seq = header.height;
            top = top.max(seq);
            self.keep_header(*digest, header.clone());
            let slot = self.slots.entry(seq).or_default();
            slot.digest = Some(*digest);
            if primary {
                slot.prepare_sent = true;
                self.safety.pre_prepare(seq, view, *digest);
            }
        }
        self.forget_stale_headers();
        if !self.persist() {
            return false;
        }
        self.next_seq = top.max(self.committed.height).next();
        self.progressed();
        if !primary {
            for (_, header) in reissued {
                self.try_check(header.height);
            }
        } else {
            for (_, header) in reissued {
                self.check_prepared(header.height);
            }
        }
        self.advance();
        self.replay_early();
        true
    }

    /// Drops uncommitted headers no longer referenced (blocks of abandoned views).
    fn forget_stale_headers(&mut self) {
        let committed = self.committed.height;
        let referenced: std::collections::HashSet<Digest> = self
            .slots
            .values()
            .filter_map(|slot| slot.digest)
            .chain(self.decided.values().copied())
            .chain(self.safety.prepared.values().map(|(_, d)| *d))
            .chain(
                self.safety
                    .pre_prepared
                    .values()
                    .flat_map(|blocks| blocks.iter().map(|(d, _)| *d)),
            )
            .collect();
        self.headers
            .retain(|digest, header| header.height <= committed || referenced.contains(digest));
    }
}
