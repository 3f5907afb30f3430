//! `equivocate`: a Byzantine validator that proposes conflicting blocks to different halves of
//! the network, votes for every block it sees in a view, and, leading the view after a committing
//! QC's votes reach it, withholds that QC to break the lock (see [`Withheld`]).

use crate::sim::*;

/// The lock-breaking attack of an equivocator that leads view v+3 after blocks b, b', b'' in
/// views v, v+1, v+2: it keeps the votes for b'' from its engine and aggregates them privately
/// into QC(b''), which would commit b. The view times out everywhere; entering v+3 by the TC, it
/// sends one honest validator a block justified by QC(b'') -- that validator commits b -- and
/// all the others a fork from b's parent justified by the TC. Only the lock on b keeps them
/// from voting for the fork; without it (`--fault-inject ignore-lock`) they certify and commit a
/// block that conflicts with b.
pub(in crate::sim) struct Withheld {
    /// The view of the withheld votes (v+2) and the block they are for (b'').
    view: View,
    block: Digest,
    votes: VoteAggregator,
    qc: Option<QuorumCert>,
}

impl World<'_> {
    /// The equivocator `node`'s engine proposes `message`: send conflicting blocks instead.
    /// Returns false if the proposal goes out unchanged.
    pub(in crate::sim) fn equivocate_proposal(
        &mut self,
        node: usize,
        message: &Message,
        targets: &[usize],
    ) -> bool {
        if let Message::HotStuff(HsMessage::Proposal(proposal)) = message {
            if self.break_lock(node, proposal, targets) {
                return true;
            }
            // A conflicting block for the same view, to half of the validators. In a view
            // entered by timeout (a TC justifies any older QC) it forks instead from the
            // parent of the block it is locked on: the block it proposes conflicts with a block
            // that may already be committed somewhere, and only the lock keeps the validators
            // that locked it from voting for the fork.
            let view = proposal.block.header.view;
            let engine = self.nodes[node].engine.as_ref();
            let (locked, last_tc) = match engine.and_then(SimEngine::hotstuff) {
                Some(engine) => {
                    let data = engine.safety_data();
                    (Some(data.locked_qc.data.block), data.last_tc.clone())
                }
                None => (None, None),
            };
            let tc = proposal
                .tc
                .clone()
                .or(last_tc.filter(|tc| tc.data.view.next() == view));
            let older = locked
                .and_then(|l| self.nodes[node].justifies.get(&l).cloned())
                .filter(|qc| tc.is_some() && qc.data.view < proposal.block.justify.data.view);
            let (justify, tc) = match older {
                Some(older) => (older, tc),
                None => (proposal.block.justify.clone(), proposal.tc.clone()),
            };
            if let Some(twin) = self.rebuild(node, proposal, justify, tc, b"evil") {
                let forked = twin.block.justify != proposal.block.justify;
                let twin = Message::HotStuff(HsMessage::Proposal(twin));
                self.remember(node, &twin);
                for &target in targets {
                    if forked {
                        // A fork from below the lock goes to everyone: only the lock stops it.
                        self.deliver(node, target, twin.clone());
                        continue;
                    }
                    let which = if self.rng.chance(0.5) { message } else { &twin };
                    self.deliver(node, target, which.clone());
                }
                return true;
            }
        }
        false
    }

    pub(in crate::sim) fn remember(&mut self, node: usize, message: &Message) {
        let Message::HotStuff(HsMessage::Proposal(proposal)) = message else {
            return;
        };
        if let Ok(hash) = proposal.block.hash() {
            let seen = self.nodes[node]
                .seen
                .entry(proposal.block.header.view)
                .or_default();
            if !seen.iter().any(|(h, _)| *h == hash) {
                seen.push((hash, proposal.block.header.clone()));
            }
        }
    }

    /// Whether the equivocator `node` keeps this vote from its engine (see [`Withheld`]).
    pub(in crate::sim) fn withhold(&mut self, node: usize, from: usize, vote: &Vote) -> bool {
        let index = self.nodes[node].index;
        let view = vote.data.view;
        let leads_next = self.nodes[node]
            .engine
            .as_ref()
            .and_then(SimEngine::hotstuff)
            .and_then(|engine| engine.leader_after(&vote.data.block, view.next()));
        if leads_next != Some(index) {
            return false;
        }
        if let Some(withheld) = &mut self.nodes[node].withheld {
            if withheld.view == view {
                if vote.data.block == withheld.block {
                    let committee = self.setup.validators.committee();
                    let scheme = self.setup.verifier.scheme();
                    if let Some(qc) = withheld.votes.add(from, vote, committee, scheme) {
                        withheld.qc = Some(qc);
                    }
                }
                return true;
            }
        }
        if self.nodes[node].considered >= view {
            return false;
        }
        self.nodes[node].considered = view;
        // Only a QC that would commit is worth withholding: b'' <- b' <- b in consecutive views,
        // and b's own justify known (the fork extends b's parent).
        let n = &self.nodes[node];
        let b2 = vote.data.block;
        let chain = n.justifies.get(&b2).and_then(|qc1| {
            let qc0 = n.justifies.get(&qc1.data.block)?;
            let b1 = n.headers.get(&qc1.data.block)?;
            let b0 = n.headers.get(&qc0.data.block)?;
            n.justifies.get(&qc0.data.block)?;
            Some(b1.view.next() == view && b0.view.next() == b1.view)
        });
        if chain != Some(true) || !self.rng.chance(0.5) {
            return false;
        }
        // Its own vote for b'' counts too.
        let Ok(bytes) = vote.data.signing_bytes() else {
            return false;
        };
        let own = Vote {
            data: vote.data,
            signature: self.setup.signers[index].sign(Domain::Vote, &bytes),
        };
        let committee = self.setup.validators.committee();
        let scheme = self.setup.verifier.scheme();
        let mut votes = VoteAggregator::default();
        votes.add(index, &own, committee, scheme);
        let qc = votes.add(from, vote, committee, scheme);
        self.nodes[node].withheld = Some(Withheld {
            view,
            block: b2,
            votes,
            qc,
        });
        true
    }

    /// The second half of the [`Withheld`] attack, once the equivocator's engine proposes in the
    /// view after the withheld one, entered by a TC. Returns false if the attack does not apply.
    /// `proposal` rebuilt on the block `justify` certifies, with a payload of its own (`salt`)
    /// executed on that parent; `None` if this node never stored the parent.
    pub(in crate::sim) fn rebuild(
        &mut self,
        node: usize,
        proposal: &Proposal,
        justify: QuorumCert,
        tc: Option<TimeoutCert>,
        salt: &[u8],
    ) -> Option<Proposal> {
        let parent = self.nodes[node].headers.get(&justify.data.block)?.clone();
        let view = proposal.block.header.view;
        let payload = self.payload(node, view, &parent, salt);
        let mut rebuilt = proposal.clone();
        let header = &mut rebuilt.block.header;
        header.parent = justify.data.block;
        header.height = justify.data.height.next();
        header.payload_digest = payload.payload_digest;
        header.state_root = payload.state_root;
        rebuilt.block.justify = justify;
        rebuilt.tc = tc;
        Some(rebuilt)
    }

    pub(in crate::sim) fn break_lock(
        &mut self,
        node: usize,
        proposal: &Proposal,
        targets: &[usize],
    ) -> bool {
        let view = proposal.block.header.view;
        let Some(withheld) = self.nodes[node].withheld.take() else {
            return false;
        };
        let (Some(qc2), Some(tc)) = (withheld.qc, proposal.tc.clone()) else {
            return false;
        };
        if withheld.view.next() != view {
            return false;
        }
        // b's justify: the QC of b's parent, where the fork starts.
        let n = &self.nodes[node];
        let base_qc = n
            .justifies
            .get(&withheld.block)
            .and_then(|qc1| n.justifies.get(&qc1.data.block))
            .and_then(|qc0| n.justifies.get(&qc0.data.block))
            .cloned();
        let Some(base_qc) = base_qc else {
            return false;
        };
        let extend = self.rebuild(node, proposal, qc2, None, b"extend");
        let fork = self.rebuild(node, proposal, base_qc, Some(tc), b"fork");
        let (Some(extend), Some(fork)) = (extend, fork) else {
            return false;
        };

        let honest: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|&t| self.nodes[t].role == Role::Honest)
            .collect();
        if honest.is_empty() {
            return false;
        }
        let lucky = honest[self.rng.range(0, honest.len() as u64 - 1) as usize];
        let extend = Message::HotStuff(HsMessage::Proposal(extend));
        let fork = Message::HotStuff(HsMessage::Proposal(fork));
        self.remember(node, &extend);
        self.remember(node, &fork);
        for &target in targets {
            let which = if target == lucky { &extend } else { &fork };
            self.deliver(node, target, which.clone());
        }
        true
    }

    /// An equivocator also votes for every other block it saw in the view.
    pub(in crate::sim) fn equivocating_votes(&mut self, node: usize, to: usize, vote: &Vote) {
        let index = self.nodes[node].index;
        let others: Vec<(Digest, BlockHeader)> = self.nodes[node]
            .seen
            .get(&vote.data.view)
            .cloned()
            .unwrap_or_default();
        for (hash, header) in others {
            if hash == vote.data.block {
                continue;
            }
            let data = VoteData {
                block: hash,
                height: header.height,
                ..vote.data
            };
            let Ok(bytes) = data.signing_bytes() else {
                continue;
            };
            let signature = self.setup.signers[index].sign(Domain::Vote, &bytes);
            let extra = Message::HotStuff(HsMessage::Vote(Vote { data, signature }));
            for target in self.by_index[to].clone() {
                if target != node {
                    self.deliver(node, target, extra.clone());
                }
            }
        }
        // Forget old views.
        let keep_from = View(vote.data.view.0.saturating_sub(2));
        let n = &mut self.nodes[node];
        n.seen = n.seen.split_off(&keep_from);
    }
}
