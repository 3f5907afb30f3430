//! Reconfigurations (`SimConfig::reconfigure`): each seed plans a few epochs, each ending at a
//! height drawn at random, whose sets differ from the one before (the spare validator joins or
//! leaves, honest validators' power changes). What a chain's governance state decides from its
//! blocks, the plan decides per height, identically for every validator.
//!
//! A validator that commits the last block of its epoch stops that epoch's engine (whatever else
//! it was doing: the engine's later actions are dropped, as the node drops them) and starts the
//! next epoch's from that block as root, with fresh safety state and fresh MAC keys; a validator
//! not in the new set runs no engine. Messages carry the sender's epoch and are delivered only to
//! validators in the same epoch (the node's wire envelope does the same). A validator left behind
//! in an epoch the others have finished is brought across two ways: a validator of a later epoch
//! that receives one of its messages answers with the proof that the epoch ended (its last block
//! and certificate, as Aptos's `EpochChangeProof`), which it takes at once; and ledger sync
//! brings it (and a validator outside the set, which sends nothing) once the epoch's last block
//! has been committed by an honest validator for [`SYNC_AFTER_MS`]. Either way it takes that block
//! as committed and starts the next epoch.

use super::*;

/// How long a validator may stay in an epoch others have finished before ledger sync moves it.
pub(super) const SYNC_AFTER_MS: u64 = 1_000;
/// How often the ledger-sync check runs.
pub(super) const SYNC_EVERY_MS: u64 = 250;

/// One epoch of a seed's plan.
pub(super) struct EpochPlan {
    pub(super) set: ValidatorSet,
    /// The height of its last block; `None` for the last epoch of the plan.
    pub(super) last: Option<Height>,
}

impl World<'_> {
    /// The plan: epoch 0's set, then one to three changes, each 3..12 blocks after the last.
    /// Byzantine validators keep power 1 and stay in every set (honest ones hold more than
    /// two thirds of the power throughout); the spare is honest.
    pub(super) fn plan_epochs(&mut self, byzantine: &[usize]) -> Vec<EpochPlan> {
        let n = self.config.validators;
        let mut plans = vec![EpochPlan {
            set: self.setup.validators.clone(),
            last: None,
        }];
        if !self.config.reconfigure {
            return plans;
        }
        let changes = self.rng.range(1, 3);
        let mut height = 0;
        let mut spare_in = false;
        for epoch in 1..=changes {
            height += self.rng.range(3, 12);
            if let Some(previous) = plans.last_mut() {
                previous.last = Some(Height(height));
            }
            spare_in = if self.rng.chance(0.5) {
                !spare_in
            } else {
                spare_in
            };
            let members = if spare_in { n + 1 } else { n };
            let powers: Vec<u64> = (0..members)
                .map(|i| {
                    if byzantine.contains(&i) || i == n {
                        1
                    } else {
                        self.rng.range(1, 2)
                    }
                })
                .collect();
            match self.setup.epoch_set(epoch, &powers) {
                Ok(set) => plans.push(EpochPlan { set, last: None }),
                Err(error) => {
                    self.violation
                        .get_or_insert(format!("epoch {epoch}'s set: {error}"));
                    break;
                }
            }
        }
        plans
    }

    /// The epoch plan of `epoch` (the last one past the plan's end).
    pub(super) fn plan(&self, epoch: usize) -> &EpochPlan {
        let last = self.epochs.len().saturating_sub(1);
        &self.epochs[epoch.min(last)]
    }

    /// Called once `node` committed `header` with `proof`: if that was its epoch's last block,
    /// ends the epoch when the proof commits it by itself, and otherwise waits for one that
    /// does (see [`Node::closing`]).
    pub(super) fn end_epoch_if_last(
        &mut self,
        node: usize,
        header: &BlockHeader,
        proof: CommitProof,
    ) {
        let epoch = self.nodes[node].epoch;
        if self.plan(epoch).last != Some(header.height) {
            return;
        }
        let Ok(closing) = crate::EpochClosing::new(header.clone()) else {
            return;
        };
        self.nodes[node].closing = Some(closing);
        self.close_with(node, header, proof);
    }

    /// A commit or certification by `node`'s engine while its epoch's last block waits for a
    /// proof that commits it by itself: the node's executor's rule (`close_with` there). The
    /// proof the node would store for that block must convince a third party.
    pub(super) fn close_with(&mut self, node: usize, header: &BlockHeader, proof: CommitProof) {
        let Some(closing) = &mut self.nodes[node].closing else {
            return;
        };
        let Some(proof) = closing.take(header, proof) else {
            return;
        };
        let last = closing.last().clone();
        self.nodes[node].closing = None;
        if matches!(proof, CommitProof::Descendant { .. }) {
            self.descendant_proofs += 1;
        }
        let verdict = crate::verify_commit_proof(
            &last,
            &proof,
            self.setup.genesis_hash,
            &self.plan(last.epoch.0 as usize).set,
            &self.setup.verifier,
        );
        if verdict != Ok(crate::ProofStrength::Committed) {
            self.violation.get_or_insert(format!(
                "node {node}: the proof of epoch {}'s last block (height {}) does not verify: {verdict:?}",
                last.epoch, last.height
            ));
        }
        self.end_epoch(node, &last);
    }

    /// `node` ends its epoch at `header`, its last block.
    fn end_epoch(&mut self, node: usize, header: &BlockHeader) {
        let epoch = self.nodes[node].epoch;
        if self.nodes[node].role == Role::Honest && self.boundaries.len() == epoch {
            self.boundaries.push((header.clone(), self.now));
            // Every epoch gets time to show liveness, however late the chain reached it.
            self.end = self.end.max(self.now + self.config.after_gst_ms);
        }
        self.enter_next_epoch(node, header.clone());
    }

    /// `node` leaves its epoch at `last` (its last block) and starts the next one's engine if it
    /// is in that set.
    fn enter_next_epoch(&mut self, node: usize, last: BlockHeader) {
        self.trace.update(&[5, node as u8]);
        let n = &mut self.nodes[node];
        n.epoch += 1;
        n.closing = None;
        // The application knows the block it takes as root (its state is what the epoch
        // builds on), whether it committed it or ledger sync brought it.
        if let Ok(hash) = last.hash() {
            n.headers.insert(hash, last.clone());
        }
        n.epoch_root = last.clone();
        if n.last_committed.0.height < last.height {
            n.last_committed = (last, None);
        }
        n.history.clear();
        n.durable_safety = None;
        n.durable_blocks.clear();
        n.volatile_blocks.clear();
        n.engine = None;
        // Timers and local answers of the old engine are ignored from now on.
        n.incarnation += 1;
        // A crashed validator starts the new epoch when it restarts.
        if !n.crashed {
            self.boot(node);
        }
    }

    /// Ledger sync: moves every validator still in an epoch whose last block an honest
    /// validator committed more than [`SYNC_AFTER_MS`] ago into the next one.
    pub(super) fn ledger_sync(&mut self) {
        for node in 0..self.nodes.len() {
            let epoch = self.nodes[node].epoch;
            let Some((last, at)) = self.boundaries.get(epoch).cloned() else {
                continue;
            };
            if self.now >= at + SYNC_AFTER_MS {
                self.enter_next_epoch(node, last);
            }
        }
        if self.now < self.end {
            self.schedule(SYNC_EVERY_MS, Event::LedgerSync);
        }
    }

    /// An epoch-change proof reached `node`: if its epoch is over (an honest validator committed
    /// its last block), it takes that block and moves to the next epoch at once.
    pub(super) fn take_epoch_proof(&mut self, node: usize) {
        let epoch = self.nodes[node].epoch;
        if let Some((last, _)) = self.boundaries.get(epoch).cloned() {
            self.enter_next_epoch(node, last);
        }
    }

    /// Whether `node` is in its current epoch's set.
    pub(super) fn is_member(&self, node: usize) -> bool {
        self.nodes[node].index < self.plan(self.nodes[node].epoch).set.len()
    }
}
