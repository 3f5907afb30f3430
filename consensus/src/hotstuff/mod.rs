//! Chained HotStuff (Yin et al., PODC 2019, Algorithms 3-5: event-driven chained HotStuff with a
//! pacemaker), with a timeout-certificate view synchronizer in the style of LibraBFT/DiemBFT.
//!
//! ```text
//! Every validator, in view v (leader(v) = v mod n):
//!   on entering v:   set the view timer; if leader(v): propose B = (parent: high_qc.block,
//!                    justify: high_qc, tc: TC(v-1) if v was entered by timeout)
//!   on Proposal B:   verify justify (and tc); process_qc(B.justify); if B.view = v and B
//!                    comes from leader(v): check the payload, then if safe_to_vote(B):
//!                    persist SafetyData; send Vote(B) to leader(v+1)
//!   safe_to_vote(B): B.view > last_voted_view
//!                    and (B extends locked_qc.block or B.justify.view > locked_qc.view)
//!                    and (B has no TC or B.justify.view >= B.tc.high_qc_view)   (Jolteon)
//!   on Vote (as leader(v+1)): aggregate; at 2f+1: QC -> process_qc(QC)
//!   process_qc(QC for b''):
//!                    high_qc <- max(high_qc, QC); enter view QC.view + 1
//!                    b' <- b''.justify.block;  locked_qc <- max(locked_qc, b''.justify)
//!                    b <- b'.justify.block
//!                    if b''.view = b'.view + 1 and b'.view = b.view + 1:
//!                        commit b and all its uncommitted ancestors, oldest first
//!   on view timer:   persist last_voted_view <- v; broadcast Timeout(v, high_qc, last_tc),
//!                    signed over (v, high_qc.view); a TC keeps each signer's high_qc.view
//!   on Timeout(v'):  verify; process its high_qc and last_tc; if v' < v reply SyncInfo;
//!                    at f+1 timeouts for v join them; at 2f+1: TC(v') -> enter v' + 1
//! ```
//! Blocks whose ancestors are missing are fetched from peers (`BlockRequest`) and processed once
//! the chain connects. Nothing from the network touches state before its certificates verify.

mod aggregator;
mod block_tree;
mod leader;
mod messages;
mod pacemaker;
mod proof;
mod safety;
mod sync;

pub use leader::{reputation_window, REPUTATION_WINDOW_MAX};
pub use messages::{
    BlockRequest, BlockResponse, HsBlock, HsMessage, Proposal, SyncInfo, Timeout, Vote,
};
pub(crate) use proof::verify_proof;
pub use proof::ThreeChain;
pub use safety::{SafetyData, VoteRefused};
pub use sync::BLOCKS_PER_REQUEST_MAX;

#[cfg(all(test, feature = "sim"))]
mod tests;

use crate::{
    Action, BuildError, CommitProof, Engine, EngineConfig, EngineStatus, Input, Message,
    PayloadProposal, ProtocolStatus, TimerId, ValidatorIndex,
};
pub(crate) use aggregator::VoteAggregator;
use aggregator::{TimeoutAggregator, FUTURE_VIEWS_MAX};
use block_tree::BlockTree;
use leader::LeaderSchedule;
use pacemaker::Pacemaker;
use quorate_crypto::CryptoError;
use quorate_crypto::{BlsSignature, Digest, SignerBitmap};
use quorate_ledger::{
    codec, Block, BlockHeader, Epoch, QuorumCert, TimeoutCert, TimeoutData, View, VoteData,
};
use safety::SafetyRules;
use std::collections::{BTreeMap, VecDeque};
use sync::BlockSync;
use tracing::{debug, warn};

/// Views whose first proposal is remembered (to refuse a leader's second one).
const PROPOSALS_REMEMBERED_MAX: usize = 256;
/// Views a validator is ignored for after it sent a certificate that does not verify.
const PENALTY_VIEWS: u64 = 100;

/// The chained HotStuff engine of one validator for one epoch.
pub struct HotStuff {
    config: EngineConfig,
    root_qc: QuorumCert,
    tree: BlockTree,
    leaders: LeaderSchedule,
    safety: SafetyRules,
    pacemaker: Pacemaker,
    votes: VoteAggregator,
    timeouts: TimeoutAggregator,
    /// The view for which this validator (as leader) asked for a payload, and whether it leads
    /// it by the QC of the view before (else by its TC).
    requested_payload_view: Option<View>,
    requested_by_qc: bool,
    /// The block that payload was requested on top of (its state root depends on it).
    requested_parent: Digest,
    /// Votes refused by the clauses that keep a validator off forks (the lock, the TC's high QC).
    lock_refusals: u64,
    /// The block of the current view waiting for `PayloadChecked` before a vote.
    awaiting_check: Option<(View, Digest)>,
    /// The highest QC view among the signers of the TC that justified that block, if a TC did.
    awaiting_tc_high_qc: Option<View>,
    /// Fetching missing ancestors: requests, orphans, proposals waiting for their parent.
    sync: BlockSync,
    /// The first valid proposal seen from each leader in each recent view: a leader's second,
    /// different one is an equivocation and is neither verified nor stored (bounded: oldest
    /// views forgotten). A view has at most two leaders: the one its QC elects, and the round
    /// robin one its TC elects.
    proposals_seen: BTreeMap<(View, ValidatorIndex), Digest>,
    /// Per validator: its messages are ignored before this view (it sent a forged certificate).
    ignored_until: Vec<View>,
    /// The view in which this validator has already timed out.
    timed_out_view: Option<View>,
    /// Whether the runtime holds payload waiting to be ordered ([`Input::PayloadPending`]).
    payload_pending: bool,
    /// A view in which the chain was idle at some point since its timer last fired. The timer
    /// keeps its period while idle, so work that arrived since has waited only part of one when
    /// it next fires: that firing re-arms for a whole period instead of timing the view out.
    idle_at_fire: Option<View>,
    out: Vec<Action>,
    inbox: VecDeque<Message>,
}

impl HotStuff {
    /// A fresh engine at the epoch's root.
    pub fn new(config: EngineConfig) -> Result<Self, BuildError> {
        Self::recover(config, None, Vec::new())
    }

    /// An engine resumed from persisted safety state and stored blocks (any order; those that do
    /// not connect to the root are ignored).
    pub fn recover(
        config: EngineConfig,
        safety_bytes: Option<&[u8]>,
        stored_blocks: Vec<Vec<u8>>,
    ) -> Result<Self, BuildError> {
        config.check(quorate_genesis::Protocol::HotStuff)?;
        let n = config.validators.len();
        let root_hash = config.root.hash()?;
        let root_qc = match &config.root_proof {
            Some(CommitProof::HotStuff { qc, .. }) => qc.clone(),
            // `check` refused another protocol's proof: only an epoch's first root is left.
            // (An epoch's last block, committed through a descendant, roots the next epoch,
            // whose engines start from it with no proof.)
            Some(CommitProof::Pbft { .. } | CommitProof::Descendant { .. }) | None => QuorumCert {
                data: VoteData {
                    genesis_hash: config.genesis_hash,
                    epoch: config.root.epoch,
                    view: config.root.view,
                    height: config.root.height,
                    block: root_hash,
                },
                signers: SignerBitmap::new(n),
                signature: BlsSignature([0; 96]),
            },
        };
        let epoch = config.validators.epoch();
        let data = match safety_bytes {
            Some(bytes) => {
                let data = SafetyData::decode(bytes)?;
                if data.epoch != epoch {
                    return Err(BuildError::WrongEpoch {
                        persisted: data.epoch.0,
                        engine: epoch.0,
                    });
                }
                data
            }
            None => SafetyData {
                epoch,
                last_voted_view: config.root.view,
                locked_qc: root_qc.clone(),
                high_qc: root_qc.clone(),
                last_tc: None,
                last_vote: None,
                last_proposed_view: config.root.view,
            },
        };
        let mut tree = BlockTree::new(
            root_hash,
            HsBlock {
                header: config.root.clone(),
                justify: root_qc.clone(),
            },
        );
        let mut blocks: Vec<HsBlock> = stored_blocks
            .iter()
            .filter_map(|bytes| codec::decode::<HsBlock>(bytes).ok())
            .collect();
        blocks.sort_by_key(|b| b.header.height);
        for block in blocks {
            if let Ok(hash) = block.hash() {
                tree.insert(hash, block);
            }
        }
        let start_view = data
            .high_qc
            .data
            .view
            .max(data.last_tc.as_ref().map_or(View(0), |tc| tc.data.view))
            .next();
        let params = &config.params;
        let pacemaker = Pacemaker::new(
            start_view,
            params.view_timeout_ms,
            params.view_timeout_max_ms,
            params.idle_interval_ms,
        );
        let safety = SafetyRules::new(config.keys.signer.clone(), data, config.fault);
        let leaders = LeaderSchedule::new(config.validators.clone(), &config.history);
        Ok(HotStuff {
            config,
            root_qc,
            tree,
            leaders,
            safety,
            pacemaker,
            votes: VoteAggregator::default(),
            timeouts: TimeoutAggregator::default(),
            requested_payload_view: None,
            requested_by_qc: false,
            requested_parent: Digest::ZERO,
            lock_refusals: 0,
            awaiting_check: None,
            awaiting_tc_high_qc: None,
            sync: BlockSync::default(),
            proposals_seen: BTreeMap::new(),
            ignored_until: vec![View(0); n],
            timed_out_view: None,
            payload_pending: true,
            idle_at_fire: None,
            out: Vec::new(),
            inbox: VecDeque::new(),
        })
    }

    pub fn safety_data(&self) -> &SafetyData {
        self.safety.data()
    }

    fn me(&self) -> ValidatorIndex {
        self.config.own_index
    }

    fn n(&self) -> usize {
        self.config.validators.len()
    }

    /// The leader of `view` entered by a QC for `block` (`None` if the block is unknown); see
    /// [`leader`] for the rule.
    pub fn leader_after(&self, block: &Digest, view: View) -> Option<ValidatorIndex> {
        self.leaders.after(&self.tree, block, view)
    }

    /// The leader of `view` entered by a TC for the view before.
    fn round_robin_leader(&self, view: View) -> ValidatorIndex {
        self.leaders.round_robin(view)
    }

    /// The leader of the current view as this validator sees it.
    fn current_leader(&self) -> ValidatorIndex {
        let view = self.pacemaker.view();
        let high_qc = &self.safety.data().high_qc.data;
        if high_qc.view.next() == view {
            if let Some(leader) = self.leader_after(&high_qc.block, view) {
                return leader;
            }
        }
        self.round_robin_leader(view)
    }

    fn committee(&self) -> &quorate_crypto::Committee {
        self.config.validators.committee()
    }

    fn emit(&mut self, action: Action) {
        self.out.push(action);
    }

    fn send(&mut self, to: ValidatorIndex, message: HsMessage) {
        if to == self.me() {
            self.inbox.push_back(Message::HotStuff(message));
        } else {
            self.emit(Action::Send {
                to,
                message: Message::HotStuff(message),
            });
        }
    }

    /// Sends to all others and processes our own copy.
    fn broadcast(&mut self, message: HsMessage) {
        self.emit(Action::Broadcast {
            message: Message::HotStuff(message.clone()),
        });
        self.inbox.push_back(Message::HotStuff(message));
    }

    /// Emits the safety state to persist; false if it cannot be encoded (a fixed set of
    /// serde-encodable fields: a bug, never input), and then the caller sends nothing that
    /// depends on it -- not voting is always safe.
    #[must_use]
    fn persist_safety(&mut self) -> bool {
        match self.safety.encode() {
            Ok(bytes) => {
                self.emit(Action::PersistSafety { bytes });
                true
            }
            Err(error) => {
                tracing::error!(validator = self.me(), %error, "cannot encode safety data");
                false
            }
        }
    }

    /// Whether `qc`, received from `from`, verifies. One whose signature does not verify is
    /// proof that `from` is Byzantine (honest validators forward only certificates they
    /// verified): see [`HotStuff::certificate_failed`].
    /// Whether `qc`, received from `from`, verifies. One whose signature does not verify is
    /// proof that `from` is Byzantine (honest validators forward only certificates they
    /// verified): see [`HotStuff::certificate_failed`].
    fn verify_qc(&mut self, from: ValidatorIndex, qc: &QuorumCert) -> bool {
        if qc == &self.root_qc {
            return true;
        }
        self.of_this_epoch(&qc.data.genesis_hash, qc.data.epoch) && {
            let verdict = self.config.verifier.verify_qc(qc, self.committee());
            self.certificate_verdict(from, "QC", verdict)
        }
    }

    fn verify_tc(&mut self, from: ValidatorIndex, tc: &TimeoutCert) -> bool {
        self.of_this_epoch(&tc.data.genesis_hash, tc.data.epoch) && {
            let verdict = self.config.verifier.verify_tc(tc, self.committee());
            self.certificate_verdict(from, "TC", verdict)
        }
    }

    fn of_this_epoch(&self, genesis_hash: &Digest, epoch: Epoch) -> bool {
        *genesis_hash == self.config.genesis_hash && epoch == self.config.validators.epoch()
    }

    fn certificate_verdict(
        &mut self,
        from: ValidatorIndex,
        kind: &'static str,
        verdict: Result<(), CryptoError>,
    ) -> bool {
        match verdict {
            Ok(()) => true,
            Err(error) => {
                self.certificate_failed(from, kind, &error);
                false
            }
        }
    }

    /// The per-peer budget for certificate checks: a validator that made us check a certificate
    /// whose aggregate signature does not verify (a pairing each, ~1 ms with BLS) is ignored for
    /// the next [`PENALTY_VIEWS`] views, so a flood of forged certificates costs one check, not
    /// one per message; the runtime is told (the node scores and disconnects it). Honest
    /// validators forward only certificates they verified, or the epoch root's, which has no
    /// signers and fails before any pairing: only a failed signature check counts.
    fn certificate_failed(
        &mut self,
        from: ValidatorIndex,
        kind: &'static str,
        error: &CryptoError,
    ) {
        if from == self.me() || *error != CryptoError::BadBlsSignature {
            return;
        }
        let what = format!("a {kind} whose signature does not verify");
        let until = View(self.pacemaker.view().0.saturating_add(PENALTY_VIEWS));
        if let Some(slot) = self.ignored_until.get_mut(from) {
            *slot = until;
        }
        warn!(validator = self.me(), from, %until, "peer sent {what}: ignored until view {until}");
        self.emit(Action::Misbehaved {
            peer: from,
            why: format!("sent {what}"),
        });
    }

    // ---- views ------------------------------------------------------------------------------

    fn enter_view(&mut self, view: View, by_timeout: bool) {
        if !self.pacemaker.advance(view, by_timeout) {
            return;
        }
        debug!(validator = self.me(), %view, by_timeout, "entered view");
        self.awaiting_check = None;
        self.timed_out_view = None;
        self.votes.prune_below(View(view.0.saturating_sub(1)));
        self.timeouts.prune_below(view);
        self.emit(Action::SetTimer {
            timer: TimerId::View(view),
            duration_ms: self.pacemaker.timer_ms(),
        });
        self.try_propose();
        for (from, proposal) in self.sync.take_parked_for(view) {
            self.on_proposal(from, proposal);
        }
    }

    /// As leader of the current view, ask for a payload once the block to extend is known.
    fn try_propose(&mut self) {
        let view = self.pacemaker.view();
        if self.requested_payload_view >= Some(view) {
            return;
        }
        // A view this validator already voted or timed out in is over for it, and one it proposed
        // in is never proposed in again (both persisted: this holds across restarts too).
        let data = self.safety.data();
        if data.last_voted_view >= view || data.last_proposed_view >= view {
            return;
        }
        let high_qc = self.safety.data().high_qc.clone();
        let entered_by_qc = high_qc.data.view.next() == view;
        let entered_by_tc = self
            .safety
            .data()
            .last_tc
            .as_ref()
            .is_some_and(|tc| tc.data.view.next() == view);
        let leads_by_tc = entered_by_tc && self.round_robin_leader(view) == self.me();
        if !entered_by_qc && !leads_by_tc {
            return;
        }
        let Some(parent) = self.tree.get(&high_qc.data.block).cloned() else {
            self.fetch_from_signers(&high_qc);
            return;
        };
        let leads_by_qc =
            entered_by_qc && self.leader_after(&high_qc.data.block, view) == Some(self.me());
        if !leads_by_qc && !leads_by_tc {
            return;
        }
        let urgent = self.needs_follow_up(&high_qc.data.block);
        self.requested_payload_view = Some(view);
        self.requested_by_qc = leads_by_qc;
        self.requested_parent = high_qc.data.block;
        self.emit(Action::RequestPayload {
            view,
            parent: parent.header.clone(),
            urgent,
        });
    }

    /// Whether a block on the uncommitted path up to `hash` carries payload.
    fn has_uncommitted_payload(&self, hash: &Digest) -> bool {
        let empty = Block::payload_digest_of(&[]);
        self.tree
            .uncommitted_path(hash)
            .unwrap_or_default()
            .iter()
            .any(|block| block.header.payload_digest != empty)
    }

    /// Whether a leader extending `hash` (its high QC's block) must propose at once, empty if
    /// need be: payload on the uncommitted path waits for its three-chain, and payload among
    /// `hash` and its two parents may have just been committed by this QC, which only this
    /// leader holds until a proposal carries it to the others.
    fn needs_follow_up(&self, hash: &Digest) -> bool {
        let empty = Block::payload_digest_of(&[]);
        self.has_uncommitted_payload(hash)
            || self
                .tree
                .chain(hash, 3)
                .iter()
                .any(|block| block.header.payload_digest != empty && block.header.height.0 > 0)
    }

    /// On a chain without a heartbeat: nothing pending here and no payload waiting to commit,
    /// so a leader that proposes nothing is idle, not failing, and its view may last.
    fn idle(&self) -> bool {
        self.config.params.idle_interval_ms == 0
            && !self.payload_pending
            && !self.has_uncommitted_payload(&self.safety.data().high_qc.data.block)
    }

    fn on_payload_ready(&mut self, view: View, payload: PayloadProposal) {
        if view != self.pacemaker.view() || self.requested_payload_view != Some(view) {
            return;
        }
        let high_qc = self.safety.data().high_qc.clone();
        if high_qc.data.block != self.requested_parent {
            // A newer QC arrived while the payload was built on the old one: its state root
            // would not match the new parent. Build again on top of the new one.
            self.requested_payload_view = None;
            self.try_propose();
            return;
        }
        let Some(parent) = self.tree.get(&high_qc.data.block).cloned() else {
            return;
        };
        // Led by the QC of the view before: the QC is the proof. Led by round robin: the TC is.
        let tc = if self.requested_by_qc {
            None
        } else {
            self.safety.data().last_tc.clone()
        };
        let header = BlockHeader {
            chain_id: self.config.chain_id.clone(),
            genesis_hash: self.config.genesis_hash,
            epoch: self.config.validators.epoch(),
            height: high_qc.data.height.next(),
            view,
            parent: high_qc.data.block,
            payload_digest: payload.payload_digest,
            state_root: payload.state_root,
            proposer: self.me() as u16,
            timestamp_ms: payload.timestamp_ms.max(parent.header.timestamp_ms),
        };
        // Durable before it leaves: after a crash this validator never proposes again in `view`.
        if self.safety.record_proposal(view) && !self.persist_safety() {
            return;
        }
        self.broadcast(HsMessage::Proposal(Proposal {
            block: HsBlock {
                header,
                justify: high_qc,
            },
            tc,
        }));
    }

    // ---- certificates -----------------------------------------------------------------------

    /// A verified QC: update high_qc, move to the next view, apply the lock and commit rules.
    fn process_qc(&mut self, qc: &QuorumCert) {
        self.safety.observe_high_qc(qc);
        self.enter_view(qc.data.view.next(), false);
        self.apply_chain_rules(qc);
    }

    /// A verified TC, applied only once this validator holds a QC at least as high as any its
    /// signers held (every path that brings a TC brings such a QC first: the timeout's own, the
    /// sync message's, the proposal's justify). So a leader that enters a view by this TC
    /// proposes on a QC its signers cannot have seen surpassed.
    fn process_tc(&mut self, tc: &TimeoutCert) {
        if self.safety.data().high_qc.data.view < tc.high_qc_view() {
            debug!(
                validator = self.me(),
                view = %tc.data.view,
                "TC names a QC newer than any this validator holds: not applied"
            );
            return;
        }
        self.safety.observe_tc(tc);
        self.enter_view(tc.data.view.next(), true);
    }

    /// The lock and three-chain commit rules for a QC certifying b''.
    fn apply_chain_rules(&mut self, qc: &QuorumCert) {
        let Some(b2) = self.tree.get(&qc.data.block).cloned() else {
            self.fetch_from_signers(qc);
            return;
        };
        if qc.data.block == self.tree.committed().0 {
            return;
        }
        // b' is certified by b''.justify: lock on it if newer.
        self.safety.observe_lock(&b2.justify);
        let Some(b1) = self.tree.get(&b2.justify.data.block).cloned() else {
            return;
        };
        let Some(b0) = self.tree.get(&b1.justify.data.block).cloned() else {
            return;
        };
        let consecutive =
            b2.header.view == b1.header.view.next() && b1.header.view == b0.header.view.next();
        if !consecutive || b0.header.height <= self.tree.committed().1 {
            return;
        }
        let proof = ThreeChain {
            child: b1.header.clone(),
            child_qc: b2.justify.clone(),
            grandchild: b2.header.clone(),
            grandchild_qc: qc.clone(),
        };
        self.commit(&b1.justify, proof);
    }

    /// Commits the block `qc` certifies (b, whose child b' starts `proof`) and its uncommitted
    /// ancestors, oldest first. Each block's proof carries the QC certifying that very block.
    fn commit(&mut self, qc: &QuorumCert, proof: ThreeChain) {
        let hash = qc.data.block;
        let Some(path) = self.tree.uncommitted_path(&hash) else {
            // Only possible if more than f validators are Byzantine.
            warn!(validator = self.me(), %hash, "three-chain commits a block off the committed chain");
            return;
        };
        // All or nothing: the path holds every block itself, so nothing below can fail between
        // the first Commit emitted and the tree recording the commit. A block's proof is the QC
        // its child carries; the newest one's is the three-chain's QC.
        let proofs = path
            .iter()
            .skip(1)
            .map(|child| (child.justify.clone(), None))
            .chain(std::iter::once((qc.clone(), Some(proof))));
        for (block, (qc, three_chain)) in path.iter().zip(proofs) {
            self.emit(Action::Commit {
                header: block.header.clone(),
                proof: CommitProof::HotStuff { qc, three_chain },
            });
        }
        self.tree.commit(hash);
        self.sync.prune_orphans(self.tree.committed().1);
    }

    // ---- messages ---------------------------------------------------------------------------

    fn on_message(&mut self, from: ValidatorIndex, message: HsMessage) {
        if from >= self.n() {
            return;
        }
        if self
            .ignored_until
            .get(from)
            .is_some_and(|until| *until > self.pacemaker.view())
        {
            return;
        }
        match message {
            HsMessage::Proposal(proposal) => self.on_proposal(from, proposal),
            HsMessage::Vote(vote) => self.on_vote(from, vote),
            HsMessage::Timeout(timeout) => self.on_timeout(from, timeout),
            HsMessage::SyncInfo(sync) => self.on_sync_info(from, sync),
            HsMessage::BlockRequest(request) => self.on_block_request(from, request),
            HsMessage::BlockResponse(response) => self.on_block_response(from, response),
        }
    }

    /// Structural checks a block must pass before its certificates are even verified.
    fn well_formed(&self, block: &HsBlock) -> bool {
        let h = &block.header;
        let j = &block.justify.data;
        h.chain_id == self.config.chain_id
            && h.genesis_hash == self.config.genesis_hash
            && h.epoch == self.config.validators.epoch()
            && (h.proposer as usize) < self.n()
            && h.parent == j.block
            && h.height == j.height.next()
            && h.view > j.view
    }

    fn on_proposal(&mut self, from: ValidatorIndex, proposal: Proposal) {
        let header = proposal.block.header.clone();
        let view = header.view;
        // With a TC the round-robin leader proposes; without, the one the QC's block elects
        // (unknown while the block is: checked again once it is fetched).
        let leader = match &proposal.tc {
            Some(_) => Some(self.round_robin_leader(view)),
            None => self.leader_after(&proposal.block.justify.data.block, view),
        };
        if !self.well_formed(&proposal.block)
            || header.proposer as usize != from
            || leader.is_some_and(|leader| leader != from)
        {
            debug!(validator = self.me(), from, %view, "malformed proposal");
            return;
        }
        let Ok(hash) = header.hash() else {
            return;
        };
        if let Some(first) = self.proposals_seen.get(&(view, from)) {
            if *first != hash {
                // Costs no signature check and no storage: silence would cost as much.
                debug!(validator = self.me(), from, %view, "leader equivocated: second proposal dropped");
                return;
            }
        }
        if !self.verify_qc(from, &proposal.block.justify) {
            debug!(validator = self.me(), from, %view, "proposal with invalid justify QC");
            return;
        }
        let justified_by_tc = match &proposal.tc {
            Some(tc) => {
                if tc.data.view.next() != view || !self.verify_tc(from, tc) {
                    debug!(validator = self.me(), from, %view, "proposal with invalid TC");
                    return;
                }
                true
            }
            None => false,
        };
        if !justified_by_tc && proposal.block.justify.data.view.next() != view {
            return;
        }
        self.proposals_seen.insert((view, from), hash);
        while self.proposals_seen.len() > PROPOSALS_REMEMBERED_MAX {
            self.proposals_seen.pop_first();
        }
        self.process_qc(&proposal.block.justify.clone());
        if let Some(tc) = &proposal.tc {
            self.process_tc(&tc.clone());
        }
        if !self.tree.contains(&header.parent) {
            // Hold it and fetch the missing ancestors from the proposer.
            self.sync.park(from, proposal);
            self.request_blocks(from, header.parent);
            return;
        }
        self.insert_block(hash, proposal.block.clone());
        if view != self.pacemaker.view() || self.awaiting_check.is_some() {
            return;
        }
        self.awaiting_check = Some((view, hash));
        self.awaiting_tc_high_qc = proposal.tc.as_ref().map(TimeoutCert::high_qc_view);
        self.emit(Action::CheckPayload { header });
    }

    fn insert_block(&mut self, hash: Digest, block: HsBlock) {
        if self.tree.contains(&hash) {
            return;
        }
        let bytes = match codec::encode(&block) {
            Ok(bytes) => bytes,
            Err(_) => return,
        };
        let header = block.header.clone();
        if self.tree.insert(hash, block) {
            self.emit(Action::StoreBlock {
                hash,
                header,
                bytes,
            });
            self.adopt_orphans(hash);
        }
    }

    fn on_payload_checked(&mut self, block: Digest, valid: bool) {
        let view = self.pacemaker.view();
        if self.awaiting_check != Some((view, block)) {
            return;
        }
        if !valid {
            warn!(validator = self.me(), %view, %block, "proposal with an invalid payload");
            return;
        }
        let Some(proposed) = self.tree.get(&block).cloned() else {
            return;
        };
        let locked = self.safety.data().locked_qc.data.block;
        let extends_lock = self.tree.extends(&block, &locked).unwrap_or(false);
        match self
            .safety
            .vote(&proposed, block, extends_lock, self.awaiting_tc_high_qc)
        {
            Ok((vote, changed)) => {
                if changed && !self.persist_safety() {
                    return;
                }
                let next_leader = self
                    .leader_after(&block, view.next())
                    .unwrap_or_else(|| self.round_robin_leader(view.next()));
                self.send(next_leader, HsMessage::Vote(vote));
            }
            Err(refused) => {
                if matches!(
                    refused,
                    VoteRefused::NotSafeNode { .. } | VoteRefused::BelowTcHighQc { .. }
                ) {
                    self.lock_refusals += 1;
                }
                debug!(validator = self.me(), %refused, "vote refused");
            }
        }
    }

    fn in_window(&self, view: View) -> bool {
        let current = self.pacemaker.view();
        // Views come from the network: saturating, so u64::MAX is merely out of the window.
        view.0.saturating_add(1) >= current.0
            && view.0 <= current.0.saturating_add(FUTURE_VIEWS_MAX)
    }

    fn on_vote(&mut self, from: ValidatorIndex, vote: Vote) {
        let data = &vote.data;
        // A vote for a block not known yet is aggregated all the same (bounded per view): a QC
        // is valid whoever forms it.
        if data.genesis_hash != self.config.genesis_hash
            || data.epoch != self.config.validators.epoch()
            || self
                .leader_after(&data.block, data.view.next())
                .is_some_and(|leader| leader != self.me())
            || !self.in_window(data.view)
        {
            return;
        }
        self.aggregate_vote(from, &vote);
    }

    fn aggregate_vote(&mut self, from: ValidatorIndex, vote: &Vote) {
        if let Some(qc) = self.votes.add(
            from,
            vote,
            self.config.validators.committee(),
            self.config.verifier.scheme(),
        ) {
            debug!(validator = self.me(), view = %qc.data.view, "formed QC");
            let committed_before = self.tree.committed().1;
            self.process_qc(&qc);
            // The QC committed something that only this leader knows of yet. With payload
            // waiting, its next proposal (at once) carries the QC; otherwise that proposal may
            // wait for the idle interval, so tell everyone now: they commit without the wait.
            if self.tree.committed().1 > committed_before
                && !self.has_uncommitted_payload(&qc.data.block)
            {
                self.broadcast(HsMessage::SyncInfo(SyncInfo {
                    high_qc: qc,
                    last_tc: None,
                }));
            }
        }
    }

    fn local_timeout(&mut self) {
        let view = self.pacemaker.view();
        self.pacemaker.record_timeout();
        self.timed_out_view = Some(view);
        let data = TimeoutData {
            genesis_hash: self.config.genesis_hash,
            epoch: self.config.validators.epoch(),
            view,
        };
        let (signature, changed) = self.safety.timeout(&data);
        if changed && !self.persist_safety() {
            return;
        }
        let last_vote = self
            .safety
            .data()
            .last_vote
            .clone()
            .filter(|vote| vote.data.view.next() == view);
        let timeout = Timeout {
            data,
            high_qc: self.safety.data().high_qc.clone(),
            last_tc: self.safety.data().last_tc.clone(),
            last_vote,
            signature,
        };
        self.broadcast(HsMessage::Timeout(timeout));
    }

    fn on_timer(&mut self, timer: TimerId) {
        let view = match timer {
            TimerId::View(view) => view,
            TimerId::Progress { .. } | TimerId::NewView(_) | TimerId::Fetch { .. } => return,
        };
        if view != self.pacemaker.view() {
            return;
        }
        if self.timed_out_view != Some(view) && self.idle() {
            // An idle chain: wait on, sending nothing.
            self.idle_at_fire = Some(view);
            self.emit(Action::SetTimer {
                timer,
                duration_ms: self.pacemaker.timer_ms(),
            });
            return;
        }
        if self.timed_out_view != Some(view) && self.idle_at_fire.take() == Some(view) {
            // Idle at the last firing: the leader has had only part of a period since the work
            // arrived. A whole one from now (a silent leader costs at most one period more).
            self.emit(Action::SetTimer {
                timer,
                duration_ms: self.pacemaker.timer_ms(),
            });
            return;
        }
        debug!(validator = self.me(), %view, "view timer fired");
        // Whatever was fetched and not received may be asked for again.
        self.sync.forget_requests();
        self.local_timeout();
        // Re-arm: while stuck in this view, keep re-sending the timeout.
        self.emit(Action::SetTimer {
            timer,
            duration_ms: self.pacemaker.timer_ms(),
        });
    }

    fn on_timeout(&mut self, from: ValidatorIndex, timeout: Timeout) {
        let data = timeout.data;
        if data.genesis_hash != self.config.genesis_hash
            || data.epoch != self.config.validators.epoch()
        {
            return;
        }
        if !self.verify_qc(from, &timeout.high_qc) {
            return;
        }
        if let Some(tc) = &timeout.last_tc {
            if !self.verify_tc(from, tc) {
                return;
            }
        }
        self.process_qc(&timeout.high_qc.clone());
        if let Some(tc) = &timeout.last_tc {
            self.process_tc(&tc.clone());
        }
        // The vote the sender gave in the view before: it may complete a QC whose leader failed.
        if let Some(vote) = &timeout.last_vote {
            if vote.data.view.next() == data.view
                && vote.data.genesis_hash == self.config.genesis_hash
                && vote.data.epoch == self.config.validators.epoch()
                && self.in_window(vote.data.view)
            {
                self.aggregate_vote(from, &vote.clone());
            }
        }
        let current = self.pacemaker.view();
        if data.view < current {
            if from != self.me() {
                let sync = SyncInfo {
                    high_qc: self.safety.data().high_qc.clone(),
                    last_tc: self.safety.data().last_tc.clone(),
                };
                self.send(from, HsMessage::SyncInfo(sync));
            }
            return;
        }
        if !self.in_window(data.view) {
            return;
        }
        let (power, tc) = self.timeouts.add(
            from,
            &timeout,
            self.config.validators.committee(),
            self.config.verifier.scheme(),
        );
        if let Some(tc) = tc {
            debug!(validator = self.me(), view = %tc.data.view, "formed TC");
            self.process_tc(&tc);
            return;
        }
        // Join: f+1 have timed out in our view, so at least one honest validator has.
        if data.view == self.pacemaker.view()
            && self.timed_out_view != Some(data.view)
            && power >= self.config.validators.validity_power()
        {
            self.local_timeout();
        }
    }

    fn on_sync_info(&mut self, from: ValidatorIndex, sync: SyncInfo) {
        if self.verify_qc(from, &sync.high_qc) {
            self.process_qc(&sync.high_qc);
        }
        if let Some(tc) = &sync.last_tc {
            if self.verify_tc(from, tc) {
                self.process_tc(tc);
            }
        }
    }

    fn drain(&mut self) -> Vec<Action> {
        // Our own messages (our proposal, vote to ourselves as next leader, our timeout) are
        // processed here, after the input that caused them, in order.
        let mut steps = 0usize;
        while let Some(Message::HotStuff(message)) = self.inbox.pop_front() {
            let me = self.me();
            self.on_message(me, message);
            steps += 1;
            assert!(steps < 10_000, "self-message loop");
        }
        std::mem::take(&mut self.out)
    }
}

impl Engine for HotStuff {
    fn start(&mut self) -> Vec<Action> {
        let view = self.pacemaker.view();
        self.emit(Action::SetTimer {
            timer: TimerId::View(view),
            duration_ms: self.pacemaker.timer_ms(),
        });
        self.try_propose();
        self.drain()
    }

    fn handle(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Message {
                from,
                message: Message::HotStuff(message),
            } => self.on_message(from, message),
            // Another protocol's message: a peer on another chain; nothing to do with it.
            Input::Message { .. } => {}
            Input::Timer(timer) => self.on_timer(timer),
            Input::PayloadReady { view, payload } => self.on_payload_ready(view, payload),
            Input::PayloadChecked { block, valid } => self.on_payload_checked(block, valid),
            Input::PayloadPending(pending) => {
                if self.idle() && pending {
                    self.idle_at_fire = Some(self.pacemaker.view());
                }
                self.payload_pending = pending;
            }
        }
        self.drain()
    }

    fn status(&self) -> EngineStatus {
        let (committed_hash, committed_height) = self.tree.committed();
        let view = self.pacemaker.view();
        EngineStatus {
            view,
            leader: self.current_leader(),
            committed_height: committed_height.0,
            committed_hash,
            timeouts: self.pacemaker.timeouts_total(),
            protocol: ProtocolStatus::HotStuff {
                high_qc_view: self.safety.data().high_qc.data.view,
                locked_view: self.safety.data().locked_qc.data.view,
                lock_refusals: self.lock_refusals,
            },
        }
    }
}
