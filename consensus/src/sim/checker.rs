//! The checker: no two honest validators commit different blocks at one height, commits come in
//! height order, every certificate handed to the runtime verifies, and what one seed gave.

use super::*;

/// What one seed gave.
#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub violation: Option<String>,
    /// Every honest validator committed after GST.
    pub live: bool,
    /// Blocks committed by each honest validator.
    pub committed: Vec<u64>,
    /// Blocks committed after GST by each honest validator (over `after_gst_ms`).
    pub committed_after_gst: Vec<u64>,
    pub after_gst_ms: u64,
    pub messages: u64,
    pub bytes: u64,
    pub timeouts: u64,
    /// Votes honest validators refused because of their lock alone.
    pub lock_refusals: u64,
    /// Proposals by unmodified engines (honest validators and twins) in views entered by a TC.
    pub tc_proposals: u64,
    /// Those of them whose justify QC was older than a QC some signer of the TC had reported in
    /// its timeout. 0 unless a Byzantine validator hands a leader a TC with an old QC (the
    /// simulated ones do not); see [`World::check_tc_proposal`].
    pub tc_proposals_below_high_qc: u64,
    /// PBFT: blocks whose checkpoint became stable after they committed.
    pub certified: u64,
    /// Epochs the committed chain went through (1 without reconfigurations).
    pub epochs: u64,
    /// Epoch endings (by any validator) whose last block's proof is a
    /// `CommitProof::Descendant` (the engine committed it only through a later block).
    pub descendant_proofs: u64,
    pub trace_hash: Digest,
}

impl World<'_> {
    pub(super) fn commit(&mut self, node: usize, header: BlockHeader, proof: CommitProof) {
        if self.nodes[node].closing.is_some() {
            // The old epoch's blocks above its last one: never part of the ledger.
            self.close_with(node, &header, proof);
            return;
        }
        self.check_commit(node, &header, proof.clone());
        self.end_epoch_if_last(node, &header, proof);
    }

    fn check_commit(&mut self, node: usize, header: &BlockHeader, proof: CommitProof) {
        let Ok(hash) = header.hash() else { return };
        let n = &mut self.nodes[node];
        if header.height <= n.last_committed.0.height {
            // Already committed before a restart; must be the same block.
            return;
        }
        if header.height != n.last_committed.0.height.next() {
            self.violation.get_or_insert(format!(
                "node {node} committed height {} after {}",
                header.height, n.last_committed.0.height
            ));
        }
        let previous = std::mem::replace(&mut n.last_committed, (header.clone(), Some(proof)));
        let n = &mut self.nodes[node];
        if previous.0.height.0 > 0 {
            n.history.push_back(previous.0);
        }
        let epoch = n.epoch;
        let set_len = self.plan(epoch).set.len();
        let n = &mut self.nodes[node];
        while n.history.len() > crate::recovery_history(set_len, &self.setup.params) {
            n.history.pop_front();
        }
        n.committed += 1;
        if self.now > self.gst {
            n.committed_after_gst += 1;
        }
        if n.role != Role::Honest {
            return;
        }
        // An adaptive network adversary (before GST only): now and then cut off a validator that
        // has just committed, so the others learn of the commit late, if at all.
        if self.config.asynchrony && self.now < self.gst && self.rng.chance(0.05) {
            self.partition = Some((0..self.nodes.len()).map(|i| i == node).collect());
        }
        match self.committed_global.get(&header.height) {
            Some(existing) if *existing != hash => {
                self.violation.get_or_insert(format!(
                    "height {}: node {node} committed {hash}, another honest node committed {existing}",
                    header.height
                ));
            }
            Some(_) => {}
            None => {
                self.committed_global.insert(header.height, hash);
            }
        }
    }

    /// A stronger proof for a block already committed: it must be that very block.
    pub(super) fn certify(&mut self, node: usize, header: BlockHeader, proof: CommitProof) {
        if let Some(closing) = &self.nodes[node].closing {
            if header.height > closing.last().height {
                self.close_with(node, &header, proof);
                return;
            }
        }
        let Ok(hash) = header.hash() else { return };
        if self.nodes[node].role == Role::Honest
            && self.committed_global.get(&header.height) != Some(&hash)
        {
            self.violation.get_or_insert(format!(
                "node {node} certified {hash} at height {}, which no honest node committed",
                header.height
            ));
        }
        // Every certificate an engine hands its runtime must convince a third party.
        let verdict = crate::verify_commit_proof(
            &header,
            &proof,
            self.setup.genesis_hash,
            &self.plan(header.epoch.0 as usize).set,
            &self.setup.verifier,
        );
        if verdict != Ok(crate::ProofStrength::Committed) {
            self.violation.get_or_insert(format!(
                "node {node}: the proof certifying height {} does not verify: {verdict:?}",
                header.height
            ));
        }
        let n = &mut self.nodes[node];
        if n.last_committed.0.height == header.height {
            n.last_committed.1 = Some(proof.clone());
        }
        self.certified += 1;
        if self.nodes[node].closing.is_some() {
            self.close_with(node, &header, proof);
        }
    }

    /// Why honest twins cannot break a lock-free engine: an unmodified engine that enters view w
    /// by TC(w-1) has processed, before it proposes, the high_qc of every timeout it aggregated or
    /// of whoever passed the TC on (timeouts, sync messages and proposals carry one), so its
    /// proposal extends a QC at least as high as any the TC's signers held. A QC that commits b
    /// (for b'' in view v+2) was signed by 2f+1, and any 2f+1 timeout signers for a later view
    /// include one of its honest voters, holding QC(b') or higher: every later proposal extends
    /// b' whether or not anyone checks a lock. What the lock stops is a Byzantine validator
    /// getting a fork below it certified: as a leader pairing a TC with an old QC (see
    /// [`Withheld`]), or by handing an honest leader a genuine TC together with an old genuine QC
    /// (a TC does not say which QCs its signers held). This checks the premise on every run.
    pub(super) fn check_tc_proposal(&mut self, node: usize, message: &Message) {
        match message {
            Message::HotStuff(HsMessage::Timeout(timeout)) => {
                let key = (timeout.data.view, self.nodes[node].index);
                let reported = timeout.high_qc.data.view;
                let lowest = self.timeout_high_qc.entry(key).or_insert(reported);
                *lowest = (*lowest).min(reported);
            }
            Message::HotStuff(HsMessage::Proposal(proposal))
                if matches!(self.nodes[node].role, Role::Honest | Role::Twin) =>
            {
                let Some(tc) = &proposal.tc else { return };
                let signers_high = tc
                    .signers
                    .signers()
                    .filter_map(|signer| self.timeout_high_qc.get(&(tc.data.view, signer)))
                    .max()
                    .copied()
                    .unwrap_or(View(0));
                self.tc_proposals += 1;
                if proposal.block.justify.data.view < signers_high {
                    self.tc_proposals_below_high_qc += 1;
                }
            }
            _ => {}
        }
    }

    pub(super) fn report(self) -> SeedReport {
        // Owed by every honest validator in its epoch's set (the spare outside it runs none).
        let member = |n: &Node| n.index < self.plan(n.epoch).set.len();
        let honest: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.role == Role::Honest && member(n))
            .collect();
        // A seed that broke safety stops there (its liveness is moot).
        let live = self.violation.is_some() || honest.iter().all(|n| n.committed_after_gst > 0);
        let engines = || honest.iter().filter_map(|n| n.engine.as_ref());
        let timeouts = engines().map(|e| e.engine().status().timeouts).sum();
        let lock_refusals = engines().map(|e| e.engine().status().lock_refusals()).sum();
        SeedReport {
            seed: self.seed,
            violation: self.violation,
            live,
            committed: honest.iter().map(|n| n.committed).collect(),
            committed_after_gst: honest.iter().map(|n| n.committed_after_gst).collect(),
            after_gst_ms: self.end.saturating_sub(self.gst),
            messages: self.messages,
            bytes: self.bytes,
            timeouts,
            lock_refusals,
            tc_proposals: self.tc_proposals,
            tc_proposals_below_high_qc: self.tc_proposals_below_high_qc,
            certified: self.certified,
            epochs: self.boundaries.len() as u64 + 1,
            descendant_proofs: self.descendant_proofs,
            trace_hash: self.trace.finalize(),
        }
    }
}
