//! PBFT (Castro & Liskov, OSDI 1999; TOCS 2002 "Practical Byzantine Fault Tolerance and
//! Proactive Recovery") ordering hash-chained blocks: sequence number = height.
//!
//! ```text
//! Every replica, in view v (primary(v) = v mod n), with stable point h (last stable
//! checkpoint, or the epoch root) and window W (sequence numbers h+1 ..= h+W may be in flight):
//!   primary:       once block s-1 is prepared (or committed), ask for a payload on it and
//!                  PRE-PREPARE(v, header at s) to all (MACs)
//!   on PRE-PREPARE (from primary(v), first for (v, s), h < s <= h+W, parent = the block at
//!                  s-1): check the payload; if valid, record Q(s) += (d, v), persist, PREPARE
//!   prepared(s):   the pre-prepare + PREPAREs for (v, s, d) from backups: quorum power with
//!                  the primary's. Record P(s) = (v, d)
//!   COMMIT(v,s,d): once prepared(s), and s-1 committed or COMMIT sent for it (so everything
//!                  below a committed block is prepared at f+1 honest replicas); persist first
//!   decided(s):    COMMITs for (v', s, d) of quorum power, in any view v' (a quorum of COMMITs
//!                  means f+1 honest replicas prepared d: no other block can ever be chosen at
//!                  s), or a stable checkpoint at s, or the parent of a decided block.
//!                  Blocks commit in height order; missing headers are fetched (FetchChain).
//!   every checkpoint_interval heights: sign CHECKPOINT(s, block, state root); a quorum is the
//!                  stable checkpoint certificate: the block's commit proof (Action::Certify),
//!                  the new h, and everything below it is forgotten
//!   no progress for idle + timeout: VIEW-CHANGE(v+1, stable point, P, Q), signed; once a quorum
//!                  sent VIEW-CHANGE(v+1), a timer (doubling) moves on to v+2 if no NEW-VIEW
//!                  arrives; f+1 VIEW-CHANGEs for higher views make a replica join the lowest
//!   new primary:   with a quorum of VIEW-CHANGEs, decide (view_change.rs) the stable point and
//!                  the blocks to re-issue; NEW-VIEW(v+1, the VIEW-CHANGEs, their headers)
//!   on NEW-VIEW:   verify every VIEW-CHANGE, decide again and compare, then treat each
//!                  re-issued block as a PRE-PREPARE in v+1
//! ```
//! The invariant the view change keeps, and why, is in `view_change.rs`. Normal-case messages
//! are authenticated by MACs (one per receiver); CHECKPOINT and VIEW-CHANGE are signed, because
//! others must be able to show them to a third party.

mod change;
mod checkpoint;
mod messages;
mod normal;
mod proof;
mod safety;
mod view_change;

pub use messages::{
    Authenticated, Checkpoint, FetchChain, NewView, PbftMessage, Phase, PrePrepare,
    PrePreparedEntry, PreparedEntry, StablePoint, ViewChange, ViewChangeData,
};

pub(crate) use messages::{KIND_COMMIT, KIND_NEW_VIEW, KIND_PREPARE, KIND_PRE_PREPARE};
pub(crate) use proof::verify_proof;

#[cfg(all(test, feature = "sim"))]
mod tests;

use crate::{
    Action, BuildError, Engine, EngineConfig, EngineStatus, Input, Message, ProtocolStatus,
    TimerId, ValidatorIndex,
};
use quorate_crypto::Digest;
use quorate_genesis::Protocol;
use quorate_ledger::{BlockHeader, Height, View};
use safety::SafetyState;
use std::collections::{BTreeMap, HashMap};

/// Views ahead of its own a replica accepts VIEW-CHANGEs for (each costs a signature check).
const VIEWS_AHEAD_MAX: u64 = 64;
/// After a [`PbftMessage::StableQuery`], the view is left this fraction of a view timeout
/// later unless an answer moved the replica on.
const QUERY_GRACE_DIVISOR: u64 = 4;
/// Queries a replica sends before it leaves its view; a peer answers each peer's queries this
/// many times per stable checkpoint.
const QUERIES: u64 = 2;
/// Headers in one `Chain` answer.
const CHAIN_MAX: usize = 256;
/// Headers this replica serves one peer at most at once; each block it commits gives every
/// peer's allowance one more, up to this.
const CHAIN_ALLOWANCE: usize = 2 * CHAIN_MAX;
/// Headers wanted at once.
const WANTED_MAX: usize = 8;
/// Views a replica's signed messages are ignored for after one of them failed its signature
/// check (a forgery costs one check, not one per copy).
const PENALTY_VIEWS: u64 = 100;
/// Normal-case messages kept per sender for a view this replica has not entered yet, per
/// sequence number of the window (a NEW-VIEW's re-issued blocks bring a PREPARE and a COMMIT
/// for each).
const EARLY_PER_SEQ: usize = 2;
/// And never more than this many per sender.
const EARLY_PER_SENDER_MAX: usize = 4096;

/// One sequence number's normal-case state in the current view.
#[derive(Clone, Debug, Default)]
struct Slot {
    /// The block pre-prepared here in this view (its header is in `headers`).
    digest: Option<Digest>,
    /// `CheckPayload` asked, answer pending.
    checking: bool,
    /// PREPARE sent (a primary's own pre-prepare counts as its prepare).
    prepare_sent: bool,
    /// PREPAREs of this view, by sender.
    prepares: BTreeMap<ValidatorIndex, Digest>,
    prepared: bool,
    commit_sent: bool,
}

/// An outstanding FetchChain.
#[derive(Clone, Copy, Debug)]
struct Fetch {
    tip: Digest,
    attempt: u64,
}

/// The PBFT engine of one replica for one epoch.
pub struct Pbft {
    config: EngineConfig,
    epoch_root: Digest,
    safety: SafetyState,
    slots: BTreeMap<Height, Slot>,
    /// Headers this replica knows: pre-prepared, re-issued, fetched and recently committed.
    headers: HashMap<Digest, BlockHeader>,
    committed: BlockHeader,
    committed_hash: Digest,
    /// Recently committed blocks by height.
    committed_hashes: BTreeMap<Height, Digest>,
    /// Blocks above `committed` known to be decided.
    decided: BTreeMap<Height, Digest>,
    /// COMMITs above `committed`: the latest (view, block) from each sender.
    commits: BTreeMap<Height, BTreeMap<ValidatorIndex, (View, Digest)>>,
    checkpoint_votes: BTreeMap<Height, BTreeMap<ValidatorIndex, Checkpoint>>,
    /// Each replica's latest verified VIEW-CHANGE.
    view_changes: Vec<Option<ViewChange>>,
    /// The view being entered that a quorum of VIEW-CHANGEs is known for.
    quorum_left_for: Option<View>,
    /// As primary: the NEW-VIEW this replica sent for its view (re-sent to laggards).
    sent_new_view: Option<NewView>,
    /// Views whose NEW-VIEW failed its checks; others for them are ignored.
    rejected_new_views: std::collections::BTreeSet<View>,
    /// As primary: the next sequence number to propose, and the one a payload is asked for.
    next_seq: Height,
    requested: Option<(View, Height)>,
    fetch: Option<Fetch>,
    fetch_attempts: u64,
    /// The height at which a decided block was found not to extend the committed chain.
    diverged_at: Option<Height>,
    /// Per peer: how many more headers this replica will serve it (see [`CHAIN_ALLOWANCE`]).
    served: Vec<usize>,
    /// Recently wanted headers (a chain starting at one of them is taken).
    wanted: std::collections::VecDeque<Digest>,
    /// Per peer: the view in which this replica last re-sent it its NEW-VIEW.
    resent_new_view: Vec<Option<View>>,
    /// Per peer: its signed messages are ignored before this view (it sent a forged one).
    ignored_until: Vec<View>,
    progress_mark: u64,
    /// The progress timer (view, mark) for which this replica asked for stable checkpoints
    /// before leaving the view (see [`PbftMessage::StableQuery`]).
    /// How many queries went out for it.
    queried: Option<(View, u64, u64)>,
    /// Per peer: the height of the last certificate sent it in answer to a query, and how many
    /// times it was sent.
    answered: Vec<(Height, u64)>,
    /// Per sender: PRE-PREPAREs and PREPAREs for a view this replica has not entered yet (a
    /// NEW-VIEW can arrive after the first messages of its view); replayed on entering it.
    early: Vec<std::collections::VecDeque<PbftMessage>>,
    /// View changes since the last commit (the timeouts double with it).
    failures: u32,
    timeouts: u64,
    /// Whether the runtime holds payload waiting to be ordered ([`Input::PayloadPending`]).
    payload_pending: bool,
    out: Vec<Action>,
}

impl Pbft {
    /// An engine resumed from persisted safety state and stored blocks (the encoded headers
    /// of [`Action::StoreBlock`]), or a fresh one (`None`, no blocks).
    pub fn recover(
        config: EngineConfig,
        safety_bytes: Option<&[u8]>,
        stored_blocks: Vec<Vec<u8>>,
    ) -> Result<Self, BuildError> {
        config.check(Protocol::Pbft)?;
        let n = config.validators.len();
        let epoch = config.validators.epoch();
        let epoch_root = config.epoch_root.hash()?;
        let safety = match safety_bytes {
            Some(bytes) => {
                let state: SafetyState = quorate_ledger::codec::decode(bytes)?;
                if state.epoch != epoch {
                    return Err(BuildError::WrongEpoch {
                        persisted: state.epoch.0,
                        engine: epoch.0,
                    });
                }
                state
            }
            None => SafetyState::new(
                epoch,
                StablePoint::Root {
                    height: config.epoch_root.height,
                    block: epoch_root,
                },
            ),
        };
        let committed = config.root.clone();
        let committed_hash = committed.hash()?;
        let mut headers = HashMap::new();
        for bytes in stored_blocks {
            if let Ok(header) = quorate_ledger::codec::decode::<BlockHeader>(&bytes) {
                if header.height > committed.height {
                    if let Ok(hash) = header.hash() {
                        headers.insert(hash, header);
                    }
                }
            }
        }
        headers.insert(committed_hash, committed.clone());
        // The committed headers a running replica keeps (a window below its stable checkpoint,
        // see `stabilize`): a new primary re-issues those above the VIEW-CHANGEs' stable point,
        // and laggards fetch them. Without them, every replica restarted at once could leave
        // no one able to re-issue a committed block, and the view change would never end.
        let mut committed_hashes = BTreeMap::from([(committed.height, committed_hash)]);
        let keep_from = Height(
            safety
                .stable
                .height()
                .0
                .min(committed.height.0)
                .saturating_sub(config.params.pbft_window),
        );
        for header in &config.history {
            if header.height < committed.height && header.height >= keep_from {
                if let Ok(hash) = header.hash() {
                    committed_hashes.insert(header.height, hash);
                    headers.insert(hash, header.clone());
                }
            }
        }
        let mut decided = BTreeMap::new();
        // A stable checkpoint above the ledger's head (the ledger is behind what this replica
        // already saw certified): catch up to it.
        if safety.stable.height() > committed.height {
            decided.insert(safety.stable.height(), safety.stable.block());
        }
        let next_seq = committed.height.next();
        Ok(Pbft {
            served: vec![CHAIN_ALLOWANCE; n],
            wanted: std::collections::VecDeque::new(),
            resent_new_view: vec![None; n],
            ignored_until: vec![View(0); n],
            early: vec![std::collections::VecDeque::new(); n],
            view_changes: vec![None; n],
            epoch_root,
            safety,
            slots: BTreeMap::new(),
            headers,
            committed_hashes,
            committed,
            committed_hash,
            decided,
            commits: BTreeMap::new(),
            checkpoint_votes: BTreeMap::new(),
            quorum_left_for: None,
            sent_new_view: None,
            rejected_new_views: std::collections::BTreeSet::new(),
            next_seq,
            requested: None,
            fetch: None,
            fetch_attempts: 0,
            diverged_at: None,
            progress_mark: 0,
            queried: None,
            answered: vec![(Height(0), 0); n],
            failures: 0,
            timeouts: 0,
            payload_pending: true,
            out: Vec::new(),
            config,
        })
    }

    fn me(&self) -> ValidatorIndex {
        self.config.own_index
    }

    fn n(&self) -> usize {
        self.config.validators.len()
    }

    fn view(&self) -> View {
        self.safety.view
    }

    fn primary(&self, view: View) -> ValidatorIndex {
        (view.0 % self.n() as u64) as usize
    }

    fn power(&self, index: ValidatorIndex) -> u64 {
        self.config.validators.committee().power(index)
    }

    fn quorum(&self) -> u64 {
        self.config.validators.committee().quorum_power()
    }

    fn validity(&self) -> u64 {
        self.config.validators.committee().validity_power()
    }

    fn window(&self) -> u64 {
        self.config.params.pbft_window
    }

    fn low_watermark(&self) -> Height {
        self.safety.stable.height()
    }

    fn high_watermark(&self) -> Height {
        Height(self.low_watermark().0.saturating_add(self.window()))
    }

    /// Whether `seq` lies in the window: above the stable point, at most W above it.
    fn in_window(&self, seq: Height) -> bool {
        seq > self.low_watermark() && seq <= self.high_watermark()
    }

    /// The current timeout: the base doubled per view change since the last commit.
    fn timeout_ms(&self) -> u64 {
        let params = &self.config.params;
        params
            .view_timeout_ms
            .saturating_mul(1u64 << self.failures.min(20))
            .min(params.view_timeout_max_ms)
    }

    fn emit(&mut self, action: Action) {
        self.out.push(action);
    }

    fn broadcast(&mut self, message: PbftMessage) {
        self.emit(Action::Broadcast {
            message: Message::Pbft(message),
        });
    }

    fn send(&mut self, to: ValidatorIndex, message: PbftMessage) {
        if to != self.me() {
            self.emit(Action::Send {
                to,
                message: Message::Pbft(message),
            });
        }
    }

    /// Emits the safety state to persist; false if it cannot be encoded (a bug, never input),
    /// and then the caller sends nothing that depends on it.
    #[must_use]
    fn persist(&mut self) -> bool {
        match quorate_ledger::codec::encode(&self.safety) {
            Ok(bytes) => {
                self.emit(Action::PersistSafety { bytes });
                true
            }
            Err(error) => {
                tracing::error!(replica = self.me(), %error, "cannot encode PBFT safety state");
                false
            }
        }
    }

    /// The system moved on (a commit, a decision, a new view): restart the progress timer.
    fn progressed(&mut self) {
        self.progress_mark += 1;
        let duration_ms = self.progress_timer_ms();
        self.emit(Action::SetTimer {
            timer: TimerId::Progress {
                view: self.view(),
                mark: self.progress_mark,
            },
            duration_ms,
        });
    }

    fn progress_timer_ms(&self) -> u64 {
        self.config
            .params
            .idle_interval_ms
            .saturating_add(self.timeout_ms())
    }

    /// Whether the primary must propose at once, empty if need be, on top of `below`: blocks
    /// above the last checkpoint boundary are committed by COMMITs only their receivers can
    /// check, so before going idle the chain reaches the next checkpoint, whose certificate
    /// proves them to a replica that missed those COMMITs (ledger sync) and to `audit`.
    pub(super) fn must_reach_checkpoint(&self, below: Height) -> bool {
        !below
            .0
            .is_multiple_of(self.config.params.checkpoint_interval.max(1))
    }

    /// On a chain without a heartbeat: nothing pending here, nothing pre-prepared above the
    /// committed head, and the chain at a checkpoint boundary, so a primary that proposes
    /// nothing is idle, not failing, and the view may last.
    fn idle(&self) -> bool {
        self.config.params.idle_interval_ms == 0
            && !self.payload_pending
            && !self.must_reach_checkpoint(self.committed.height)
            && !self
                .slots
                .range(Height(self.committed.height.0.saturating_add(1))..)
                .any(|(_, slot)| slot.digest.is_some())
    }

    /// The header of the block at `seq` this replica builds on: committed, or pre-prepared in
    /// this view.
    fn header_at(&self, seq: Height) -> Option<(Digest, &BlockHeader)> {
        let digest = if seq <= self.committed.height {
            *self.committed_hashes.get(&seq)?
        } else {
            self.slots.get(&seq)?.digest?
        };
        self.headers.get(&digest).map(|header| (digest, header))
    }

    fn keep_header(&mut self, digest: Digest, header: BlockHeader) {
        if self.headers.contains_key(&digest) {
            return;
        }
        if let Ok(bytes) = quorate_ledger::codec::encode(&header) {
            self.emit(Action::StoreBlock {
                hash: digest,
                header: header.clone(),
                bytes,
            });
        }
        self.headers.insert(digest, header);
    }

    /// A peer sent a message only a Byzantine replica sends (a signature that does not verify):
    /// report it, and ignore its signed messages for a while.
    fn penalize(&mut self, peer: ValidatorIndex, why: String) {
        let until = View(self.view().0.saturating_add(PENALTY_VIEWS));
        if let Some(slot) = self.ignored_until.get_mut(peer) {
            *slot = until;
        }
        self.emit(Action::Misbehaved { peer, why });
    }

    fn on_message(&mut self, from: ValidatorIndex, message: PbftMessage) {
        if from >= self.n() || from == self.me() {
            return;
        }
        let signed = matches!(
            message,
            PbftMessage::Checkpoint(_)
                | PbftMessage::ViewChange(_)
                | PbftMessage::NewView(_)
                | PbftMessage::StableCert(_)
        );
        if signed
            && self
                .ignored_until
                .get(from)
                .is_some_and(|until| self.view() < *until)
        {
            return;
        }
        if let Some(view) = normal_view(&message) {
            let ahead = view > self.view() || view == self.view() && self.safety.view_changing;
            if ahead {
                self.keep_early(from, view, message);
                return;
            }
        }
        match message {
            PbftMessage::PrePrepare(m) => self.on_pre_prepare(from, m),
            PbftMessage::Prepare(m) => self.on_prepare(from, m),
            PbftMessage::Commit(m) => self.on_commit(from, m),
            PbftMessage::Checkpoint(m) => self.on_checkpoint(from, m),
            PbftMessage::ViewChange(m) => self.on_view_change(from, m),
            PbftMessage::NewView(m) => self.on_new_view(from, m),
            PbftMessage::FetchChain(m) => self.on_fetch_chain(from, m),
            PbftMessage::Chain(headers) => self.on_chain(from, headers),
            PbftMessage::StableQuery(height) => self.on_stable_query(from, height),
            PbftMessage::StableCert(cert) => self.on_stable_cert(from, cert),
        }
    }

    /// Keeps a normal-case message of a view this replica has not entered yet: only one that
    /// could be taken then (its MAC checks, a PRE-PREPARE comes from that view's primary and is
    /// for this chain), so a Byzantine sender can fill its own queue with nothing but what it
    /// could send later anyway.
    fn keep_early(&mut self, from: ValidatorIndex, view: View, message: PbftMessage) {
        use messages::{KIND_COMMIT, KIND_PREPARE, KIND_PRE_PREPARE};
        if view.0 > self.view().0.saturating_add(VIEWS_AHEAD_MAX) {
            return;
        }
        let Some(key) = self.config.keys.mac_keys.get(from) else {
            return;
        };
        let genuine = match &message {
            PbftMessage::PrePrepare(m) => {
                let header = &m.body.header;
                from == self.primary(view)
                    && header.chain_id == self.config.chain_id
                    && header.genesis_hash == self.config.genesis_hash
                    && header.epoch == self.safety.epoch
                    && m.check(KIND_PRE_PREPARE, key)
            }
            PbftMessage::Prepare(m) => m.check(KIND_PREPARE, key),
            PbftMessage::Commit(m) => m.check(KIND_COMMIT, key),
            _ => false,
        };
        if !genuine {
            return;
        }
        let max = (self.window() as usize)
            .saturating_mul(EARLY_PER_SEQ)
            .clamp(1, EARLY_PER_SENDER_MAX);
        if let Some(queue) = self.early.get_mut(from) {
            while queue.len() >= max {
                queue.pop_front();
            }
            queue.push_back(message);
        }
    }

    /// Replays the messages kept for the view just entered (older ones are dropped).
    fn replay_early(&mut self) {
        let view = self.view();
        for from in 0..self.n() {
            let Some(queue) = self.early.get_mut(from) else {
                continue;
            };
            let kept: Vec<PbftMessage> = queue.drain(..).collect();
            for message in kept {
                if normal_view(&message).is_some_and(|v| v >= view) {
                    self.on_message(from, message);
                }
            }
        }
    }

    /// Queries sent for the progress timer (view, mark).
    fn queries_sent(&self, view: View, mark: u64) -> u64 {
        match self.queried {
            Some((v, m, sent)) if v == view && m == mark => sent,
            _ => 0,
        }
    }

    fn on_timer(&mut self, timer: TimerId) {
        match timer {
            TimerId::Progress { view, mark } => {
                if view != self.view() || mark != self.progress_mark || self.safety.view_changing {
                    return;
                }
                if self.idle() {
                    // An idle chain: wait on, sending nothing.
                    self.emit(Action::SetTimer {
                        timer,
                        duration_ms: self.progress_timer_ms(),
                    });
                } else if self.config.params.idle_interval_ms == 0
                    && self.queries_sent(view, mark) < QUERIES
                {
                    // Blocks above the committed head and no progress: before leaving the
                    // view, ask whether the others went on without this replica. On an idle
                    // chain one that missed a checkpoint's messages would otherwise change view
                    // alone, and the others, idle, would never join it (payload pending here
                    // is no sign that they hold it too). A stable certificate arriving commits,
                    // and the timer restarts. Asked twice, half the grace apart, in case a
                    // query or its answers were lost.
                    let sent = self.queries_sent(view, mark) + 1;
                    self.queried = Some((view, mark, sent));
                    self.broadcast(PbftMessage::StableQuery(self.low_watermark()));
                    self.emit(Action::SetTimer {
                        timer,
                        duration_ms: (self.timeout_ms() / QUERY_GRACE_DIVISOR / QUERIES).max(1),
                    });
                } else {
                    self.start_view_change(self.view().next(), "progress timer");
                }
            }
            TimerId::NewView(view) => self.on_new_view_timer(view),
            TimerId::Fetch { attempt } => self.on_fetch_timer(attempt),
            TimerId::View(_) => {}
        }
    }
}

/// The view of a normal-case message.
fn normal_view(message: &PbftMessage) -> Option<View> {
    match message {
        PbftMessage::PrePrepare(m) => Some(m.body.view),
        PbftMessage::Prepare(m) | PbftMessage::Commit(m) => Some(m.body.view),
        _ => None,
    }
}

impl Engine for Pbft {
    fn start(&mut self) -> Vec<Action> {
        if self.persist() {
            if self.safety.view_changing {
                // Resend this view's VIEW-CHANGE (a restart may have lost it).
                self.send_view_change();
                self.arm_new_view_timer();
            } else {
                self.progressed();
                self.maybe_propose();
            }
        }
        self.advance();
        std::mem::take(&mut self.out)
    }

    fn handle(&mut self, input: Input) -> Vec<Action> {
        let was_idle = self.idle();
        let mark = self.progress_mark;
        match input {
            Input::Message {
                from,
                message: Message::Pbft(message),
            } => self.on_message(from, message),
            Input::Message { .. } => {}
            Input::Timer(timer) => self.on_timer(timer),
            Input::PayloadReady { view, payload } => self.on_payload_ready(view, payload),
            Input::PayloadChecked { block, valid } => self.on_payload_checked(block, valid),
            Input::PayloadPending(pending) => self.payload_pending = pending,
        }
        if was_idle && !self.idle() && !self.safety.view_changing && self.progress_mark == mark {
            // Work arrived on an idle chain (payload here, or a PRE-PREPARE of the primary's):
            // the timer kept its period while idle, and would act on this work after only
            // part of one. A whole period from now. No one can hold the timer off this way:
            // PRE-PREPARED slots go only by a commit or a view change, and an honest replica's
            // pending payload stays pending until committed. (Unless this input made progress
            // and restarted the timer already.)
            self.progressed();
        }
        std::mem::take(&mut self.out)
    }

    fn status(&self) -> EngineStatus {
        EngineStatus {
            view: self.view(),
            leader: self.primary(self.view()),
            committed_height: self.committed.height.0,
            committed_hash: self.committed_hash,
            timeouts: self.timeouts,
            protocol: ProtocolStatus::Pbft {
                stable_checkpoint: self.low_watermark(),
                high_watermark: self.high_watermark(),
                view_changing: self.safety.view_changing,
            },
        }
    }
}
