//! Payloads and execution, on a thread of their own so that neither a flood of transactions nor
//! a large block delays the consensus task.
//!
//! For the engine it builds payloads (`RequestPayload`), checks proposed ones (`CheckPayload`:
//! every batch present, execution on the parent's state reproduces the header's state root), and
//! applies commits in order, each with ONE synced RocksDB write. Blocks not yet committed are
//! executed speculatively: each keeps only the accounts it changed, on top of its parent's.
//! Missing manifests and batches are fetched from peers (the proposer first).

use crate::mempool::Mempool;
use crate::metrics::{now_ms, Metrics};
use crate::network::NetHandle;
use crate::peer_batches::PeerBatches;
use crate::wire::{NetRequest, NetResponse, MAX_BATCHES_PER_REQUEST};
use anyhow::{bail, Context, Result};
use quorate_consensus::{CommitProof, EpochClosing, Input, PayloadProposal};
use quorate_crypto::{Address, Digest};
use quorate_ledger::{
    codec, execute, Account, Batch, Block, BlockHeader, ChainRules, CommittedBlock, Epoch,
    Execution, GovernanceState, Head, StateAccumulator, StateReadError, StateView, Store, View,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, error, info, warn};

/// How long to wait for a broadcast manifest or batch before fetching it.
const FETCH_AFTER: Duration = Duration::from_millis(150);
/// Between fetch attempts for the same block's data.
const FETCH_RETRY: Duration = Duration::from_millis(500);
/// How long one peer has to answer for the same data before the next peer is asked.
const REFETCH_AFTER: Duration = Duration::from_secs(2);
/// Data keys remembered as being fetched at most (then forgotten: asked for again).
const MAX_FETCHING: usize = 4096;
/// The most queued jobs taken in before a pass over what waits.
const JOBS_PER_PASS: usize = 256;
/// How long a check waits for missing data before it is dropped (its view is long gone).
const CHECK_PATIENCE: Duration = Duration::from_secs(30);
/// Checks waiting for data at most; at the bound the oldest is dropped (and counted). A replica
/// far behind is offered many blocks it cannot execute yet; each waiting check costs a lookup
/// on every pass.
const MAX_CHECKS: usize = 1024;
/// How far ahead of this validator's clock a proposal's timestamp may be for it to vote. Generous
/// on purpose: it stops a leader from pushing chain time far ahead, while validators whose clocks
/// are off by seconds (or f+1 of them slow) must not refuse honest leaders and stall the chain.
const MAX_CLOCK_AHEAD_MS: u64 = 300_000;
/// Every so many committed heights, stored blocks of abandoned forks are deleted.
const PRUNE_EVERY: u64 = 64;
/// Committed blocks whose batches stay decoded in memory after their commit (within the store's
/// byte bound): clients and lagging peers ask for a block just after it commits (a load client
/// following the chain reads every one), and a read from disk decodes each transaction and
/// hashes it again to find its id.
const COMMITTED_BATCHES_KEPT: usize = 8;

/// Why a validator should not vote for a block with this timestamp, if it should not: it may
/// not go back before its parent's, nor run ahead of the local clock by more than
/// [`MAX_CLOCK_AHEAD_MS`]. A vote-time check only: a committed block is applied whatever its
/// timestamp (2f+1 validators accepted it).
fn timestamp_problem(timestamp_ms: u64, parent_ms: Option<u64>, now_ms: u64) -> Option<String> {
    if timestamp_ms > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
        return Some(format!(
            "timestamp {timestamp_ms} is {} ms ahead of this validator's clock",
            timestamp_ms - now_ms
        ));
    }
    match parent_ms {
        Some(parent) if timestamp_ms < parent => Some(format!(
            "timestamp {timestamp_ms} is before its parent's {parent}"
        )),
        _ => None,
    }
}

/// Why a block's epoch does not fit the state its parent leads to (`None`: it fits). A block
/// names the epoch of its parent's state; once a block has ended an epoch, the blocks its old
/// set still has in flight above it (the reconfiguration suffix, never committed: the next
/// epoch starts from the block that ended this one) name the old epoch and carry no payload.
fn epoch_problem(header: Epoch, parent_state: Epoch, payload_empty: bool) -> Option<String> {
    if header > parent_state {
        return Some(format!(
            "block names epoch {header}, but its parent leads to epoch {parent_state}"
        ));
    }
    if header < parent_state && !payload_empty {
        return Some(format!(
            "block of epoch {header} after that epoch's last block carries a payload"
        ));
    }
    None
}

#[allow(clippy::large_enum_variant)]
pub enum Job {
    Propose {
        view: View,
        parent: BlockHeader,
        urgent: bool,
    },
    Check {
        header: BlockHeader,
    },
    Commit {
        header: BlockHeader,
        proof: CommitProof,
    },
    /// A block committed earlier (or queued before this) has a stronger proof to store.
    Certify {
        header: BlockHeader,
        proof: CommitProof,
    },
    /// A manifest or batch arrived (already verified and stored): retry what waits.
    DataArrived,
    Stop,
}

/// Why [`Executor::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `Job::Stop`, or every sender gone.
    Stopped,
    /// The block that ends the engine's epoch is committed: this executor, and the engine it
    /// served, are done; the next epoch's start from that block.
    EpochEnded(Epoch),
}

/// The block that ends the engine's epoch, executed but not yet written: the engine committed
/// it through a later block's hash chain, and it is written only with a proof its own epoch's
/// set made ([`EpochClosing`]).
struct Closing {
    epoch: EpochClosing,
    hash: Digest,
    block: Arc<Speculative>,
}

/// A block executed on top of its (uncommitted or committed) parent.
struct Speculative {
    height: u64,
    parent: Digest,
    execution: Execution,
    batches: Vec<Digest>,
    transactions: Vec<Digest>,
}

struct Waiting<T> {
    item: T,
    since: Instant,
    next_fetch: Instant,
}

impl<T> Waiting<T> {
    fn new(item: T) -> Self {
        let now = Instant::now();
        Waiting {
            item,
            since: now,
            next_fetch: now + FETCH_AFTER,
        }
    }
}

struct Proposal {
    view: View,
    parent: BlockHeader,
    urgent: bool,
    /// The first request in this view (the heartbeat counts from it).
    since: Instant,
    /// This request (the urgent pace counts from it).
    asked: Instant,
}

pub struct ExecutorConfig {
    pub rules: ChainRules,
    /// This node's index in the epoch's set; `None` for a follower.
    pub me: Option<usize>,
    pub validators: usize,
    pub max_block_transactions: usize,
    pub idle_interval: Duration,
    /// The shortest time between two empty blocks proposed because the engine says they are
    /// urgent though nothing is pending (zero: at once). PBFT's drive to the next checkpoint
    /// is such a run of empty blocks; unpaced, it went as fast as round trips allow (at 10 tx/s
    /// on four validators, ~200 blocks a second and 0.38 cores each). HotStuff's urgent blocks
    /// carry other blocks to their commit and are never paced.
    pub urgent_pace: Duration,
    /// Batches peers pushed: committed ones are marked, doomed ones deleted here.
    pub pushed_batches: Arc<PeerBatches>,
    /// Set while a validator-set change is scheduled or the epoch's last block waits for its
    /// proof: work is pending even with no transaction (the batcher tells the engine, so that
    /// a silent leader is timed out rather than taken for an idle one).
    pub reconfiguring: Arc<std::sync::atomic::AtomicBool>,
}

pub struct Executor {
    config: ExecutorConfig,
    store: Arc<Store>,
    mempool: Arc<Mutex<Mempool>>,
    net: NetHandle,
    runtime: tokio::runtime::Handle,
    engine: UnboundedSender<Input>,
    jobs: Sender<Job>,
    metrics: Arc<Metrics>,
    head: Head,
    /// The committed governance state (the head's).
    governance: GovernanceState,
    /// The epoch of the engine this executor serves (its blocks name it).
    engine_epoch: Epoch,
    speculative: HashMap<Digest, Arc<Speculative>>,
    proposal: Option<Proposal>,
    /// Blocks the engine asked to check, with their hashes, oldest first; `checking` holds
    /// the same hashes (one entry per block, however often it is asked for).
    checks: VecDeque<Waiting<(BlockHeader, Digest)>>,
    checking: HashSet<Digest>,
    /// Set by every job: something may have arrived that a waiting check needed. Without it a
    /// pass only retries fetches, and re-examines the checks once per `FETCH_RETRY`.
    changed: bool,
    last_full_pass: Instant,
    /// Commits, and certifications of committed blocks, in the engine's order.
    commits: VecDeque<Waiting<(BlockHeader, CommitProof, Finality)>>,
    /// Data asked for: when last, and how often (each time of the next peer, so that a peer
    /// that is down or lies costs one retry, not the fetch).
    fetching: HashMap<Digest, (Instant, usize)>,
    /// Blocks found missing data in the current pass (see [`Executor::ensure_executed`]).
    missing_this_pass: HashSet<Digest>,
    /// Blocks `fetch_for` walked through in the current pass: a walk that reaches one stops,
    /// its lowest missing block is already asked for.
    walked_this_pass: HashSet<Digest>,
    /// The epoch's last block, waiting for a proof that commits it by itself.
    closing: Option<Closing>,
    /// Set once the epoch's last block is written.
    ended: bool,
    /// The batches of the last [`COMMITTED_BATCHES_KEPT`] committed blocks, oldest first.
    committed_batches: VecDeque<Vec<Digest>>,
}

/// What a queued proof does: commit its block, or replace the proof of a committed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Finality {
    Commit,
    Certify,
}

/// Account reads through a chain of speculative blocks down to committed state.
/// How long a proposal holds back a batch whose nonces are ahead of their senders' next ones.
const NONCE_GAP_PATIENCE: Duration = Duration::from_secs(2);

struct ChainView<'a> {
    store: &'a Store,
    chain: Vec<Arc<Speculative>>,
}

impl StateView for ChainView<'_> {
    fn account(&self, address: &Address) -> Result<Account, StateReadError> {
        for block in &self.chain {
            if let Some(account) = block.execution.changes.get(address) {
                return Ok(*account);
            }
        }
        StateView::account(self.store, address)
    }
}

enum Outcome<T> {
    Done(T),
    /// Data is missing: wait (and fetch).
    Missing,
    Invalid(String),
}

impl Executor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: ExecutorConfig,
        store: Arc<Store>,
        mempool: Arc<Mutex<Mempool>>,
        net: NetHandle,
        runtime: tokio::runtime::Handle,
        engine: UnboundedSender<Input>,
        jobs: Sender<Job>,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let head = store.head()?.context("store has no head")?;
        let governance = store.governance()?;
        Ok(Executor {
            config,
            store,
            mempool,
            net,
            runtime,
            engine,
            jobs,
            metrics,
            head,
            engine_epoch: governance.epoch(),
            governance,
            speculative: HashMap::new(),
            proposal: None,
            checks: VecDeque::new(),
            checking: HashSet::new(),
            changed: true,
            last_full_pass: Instant::now(),
            commits: VecDeque::new(),
            fetching: HashMap::new(),
            missing_this_pass: HashSet::new(),
            walked_this_pass: HashSet::new(),
            closing: None,
            ended: false,
            committed_batches: VecDeque::with_capacity(COMMITTED_BATCHES_KEPT + 1),
        })
    }

    /// Runs until `Job::Stop` or the channel closes. An error is fatal for the node (a storage
    /// failure, or committed state that this node cannot reproduce).
    pub fn run(mut self, jobs: Receiver<Job>) -> Result<Exit> {
        loop {
            match jobs.recv_timeout(self.next_wake()) {
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(Exit::Stopped),
                Ok(job) => self.on_job(job)?,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Take in what else is queued (a ledger sync hands over a run of commits at once)
            // before one pass over everything that waits: a pass per job costs the waiting
            // checks' reads once per job.
            for _ in 0..JOBS_PER_PASS {
                match jobs.try_recv() {
                    Ok(Job::Stop) => return Ok(Exit::Stopped),
                    Ok(job) => self.on_job(job)?,
                    Err(_) => break,
                }
            }
            self.progress()?;
            self.config
                .reconfiguring
                .store(self.reconfiguring(), Ordering::Relaxed);
            if self.ended {
                return Ok(Exit::EpochEnded(self.governance.epoch()));
            }
        }
    }

    /// How long the loop may wait for a job: at most 50 ms, and no later than the moment a
    /// paced urgent proposal becomes due. Once it is due, only a job (its parent's data, say)
    /// can change anything, so the loop does not spin on it.
    fn next_wake(&self) -> Duration {
        const POLL: Duration = Duration::from_millis(50);
        let pace_left = match &self.proposal {
            Some(proposal) if proposal.urgent => self
                .config
                .urgent_pace
                .saturating_sub(proposal.asked.elapsed()),
            _ => Duration::ZERO,
        };
        if pace_left.is_zero() {
            POLL
        } else {
            pace_left.clamp(Duration::from_millis(1), POLL)
        }
    }

    fn on_job(&mut self, job: Job) -> Result<()> {
        self.changed = true;
        match job {
            Job::Propose {
                view,
                parent,
                urgent,
            } => {
                // Asked again in the same view (the engine's high QC moved meanwhile): build on
                // the new parent, but the idle interval keeps counting from the first request.
                let since = match &self.proposal {
                    Some(earlier) if earlier.view == view => earlier.since,
                    _ => Instant::now(),
                };
                self.proposal = Some(Proposal {
                    view,
                    parent,
                    urgent,
                    since,
                    asked: Instant::now(),
                });
            }
            Job::Check { header } => {
                let Ok(hash) = header.hash() else {
                    return Ok(());
                };
                if !self.checking.insert(hash) {
                    return Ok(()); // asked again (an engine restarted): the first answers
                }
                if self.checks.len() >= MAX_CHECKS {
                    if let Some(oldest) = self.checks.pop_front() {
                        self.checking.remove(&oldest.item.1);
                        self.metrics.checks_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.checks.push_back(Waiting::new((header, hash)));
                self.metrics
                    .checks_waiting
                    .store(self.checks.len() as u64, Ordering::Relaxed);
            }
            Job::Commit { header, proof } => {
                self.commits
                    .push_back(Waiting::new((header, proof, Finality::Commit)))
            }
            Job::Certify { header, proof } => {
                self.commits
                    .push_back(Waiting::new((header, proof, Finality::Certify)))
            }
            Job::DataArrived | Job::Stop => {}
        }
        Ok(())
    }

    /// Retries everything that waits, in order: commits first (they free the mempool), then
    /// checks, then our own proposal.
    fn progress(&mut self) -> Result<()> {
        // Nothing arrives during a pass: what was missing stays missing until the next.
        self.missing_this_pass.clear();
        self.walked_this_pass.clear();
        while let Some(front) = self.commits.front() {
            let (header, proof, finality) = front.item.clone();
            if self.closing.is_some() {
                self.commits.pop_front();
                self.close_with(&header, proof)?;
                if self.ended {
                    return Ok(());
                }
                continue;
            }
            if finality == Finality::Certify {
                self.store
                    .set_commit_proof(&header, &codec::encode(&proof)?)
                    .with_context(|| format!("storing the proof of height {}", header.height))?;
                self.commits.pop_front();
                continue;
            }
            match self.commit(&header, &proof)? {
                Outcome::Done(()) => {
                    self.commits.pop_front();
                    if self.ended {
                        return Ok(());
                    }
                }
                Outcome::Missing => {
                    let mut due = false;
                    if let Some(waiting) = self.commits.front_mut() {
                        if waiting.next_fetch <= Instant::now() {
                            waiting.next_fetch = Instant::now() + FETCH_RETRY;
                            due = true;
                        }
                    }
                    if due {
                        self.fetch_for(&header)?;
                    }
                    break;
                }
                Outcome::Invalid(why) => {
                    bail!(
                        "committed block at height {} cannot be executed here: {why}",
                        header.height
                    );
                }
            }
        }
        self.delete_doomed_batches()?;
        // Re-examine the waiting checks when a job came in (data, a commit, a new block), and
        // at least once per fetch retry; in between only their fetches are retried.
        let full =
            std::mem::take(&mut self.changed) || self.last_full_pass.elapsed() >= FETCH_RETRY;
        if full {
            self.last_full_pass = Instant::now();
        }
        let checks = std::mem::take(&mut self.checks);
        for mut waiting in checks {
            let hash = waiting.item.1;
            let header = &waiting.item.0;
            if header.height.0 <= self.head.height.0 || waiting.since.elapsed() > CHECK_PATIENCE {
                self.checking.remove(&hash);
                continue; // committed past it, or the view is long gone
            }
            // A parent already found missing this pass: this block waits too, and costs no read.
            let waits = !full
                || (header.parent != self.head.hash
                    && self.missing_this_pass.contains(&header.parent));
            if !waits {
                if let Some(valid) = self.check(header, hash)? {
                    self.checking.remove(&hash);
                    let _ = self
                        .engine
                        .send(Input::PayloadChecked { block: hash, valid });
                    continue;
                }
            }
            if waiting.next_fetch <= Instant::now() {
                waiting.next_fetch = Instant::now() + FETCH_RETRY;
                self.fetch_for(header)?;
            }
            self.checks.push_back(waiting);
        }
        self.metrics
            .checks_waiting
            .store(self.checks.len() as u64, Ordering::Relaxed);
        self.try_propose()
    }

    /// Checks a proposed block: `Some(valid)` once decided, `None` while data is missing.
    fn check(&mut self, header: &BlockHeader, hash: Digest) -> Result<Option<bool>> {
        let parent_ms = self.parent_timestamp(header)?;
        if let Some(why) = timestamp_problem(header.timestamp_ms, parent_ms, now_ms()) {
            warn!(height = header.height.0, %hash, "refusing to vote: {why}");
            return Ok(Some(false));
        }
        Ok(match self.ensure_executed(&hash, Some(header))? {
            Outcome::Done(_) => Some(true),
            Outcome::Invalid(why) => {
                warn!(height = header.height.0, %hash, "invalid payload: {why}");
                Some(false)
            }
            Outcome::Missing => None,
        })
    }

    /// Deletes the batches peers pushed past their bound, except those a block executed here
    /// and not yet committed names, and those the mempool offers for proposals (both may
    /// commit; see [`crate::peer_batches`]). Between blocks, on this thread: nothing reads a
    /// batch for execution meanwhile.
    fn delete_doomed_batches(&mut self) -> Result<()> {
        let pushed = &self.config.pushed_batches;
        if !pushed.has_doomed() {
            return Ok(());
        }
        let in_use: HashSet<Digest> = self
            .speculative
            .values()
            .flat_map(|block| block.batches.iter().copied())
            .collect();
        let doomed = {
            let mempool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            pushed.take_doomed(|batch| in_use.contains(batch) || mempool.is_ready(batch))
        };
        if !doomed.is_empty() {
            self.store.delete_batches(&doomed)?;
            debug!(
                batches = doomed.len(),
                "deleted batches pushed past their senders' bound"
            );
        }
        Ok(())
    }

    /// The timestamp of `header`'s parent, if this validator has the parent.
    fn parent_timestamp(&self, header: &BlockHeader) -> Result<Option<u64>> {
        if header.parent == self.head.hash {
            return Ok(Some(self.head.header.timestamp_ms));
        }
        Ok(self.pending_header(&header.parent)?.map(|h| h.timestamp_ms))
    }

    /// The header of a stored, not yet committed block.
    fn pending_header(&self, hash: &Digest) -> Result<Option<BlockHeader>> {
        Ok(self.store.pending_header(hash)?)
    }

    /// Deletes stored blocks at or below the committed head that were not committed: forks the
    /// chain left behind (committed blocks leave the pending store as they commit). A restart
    /// would otherwise read them all back, however long the validator has run.
    fn prune_abandoned_forks(&mut self) -> Result<()> {
        let deleted = prune_pending_blocks(&self.store, self.head.height)?;
        if deleted > 0 {
            debug!(blocks = deleted, "deleted blocks of abandoned forks");
        }
        // Fetch de-duplication hints: whatever is still missing is asked for again.
        self.fetching.clear();
        Ok(())
    }

    /// The speculative chain from `hash` down to (not including) the committed head; `None` if
    /// some block on it is not executed.
    fn chain(&self, mut hash: Digest) -> Option<Vec<Arc<Speculative>>> {
        let mut chain = Vec::new();
        while hash != self.head.hash {
            let block = self.speculative.get(&hash)?.clone();
            if block.height <= self.head.height.0 {
                return None;
            }
            hash = block.parent;
            chain.push(block);
        }
        Some(chain)
    }

    /// The batches of a payload, if all are here.
    fn payload(&self, header: &BlockHeader) -> Result<Outcome<Payload>> {
        if header.payload_digest == Block::payload_digest_of(&[]) {
            return Ok(Outcome::Done((Vec::new(), Vec::new())));
        }
        let Some(digests) = self.store.manifest(&header.payload_digest)? else {
            return Ok(Outcome::Missing);
        };
        let mut batches = Vec::with_capacity(digests.len());
        for digest in &digests {
            match self.store.batch(digest)? {
                Some(batch) => batches.push(batch),
                None => return Ok(Outcome::Missing),
            }
        }
        let count: usize = batches.iter().map(|b| b.transactions.len()).sum();
        if count > self.config.max_block_transactions {
            return Ok(Outcome::Invalid(format!(
                "{count} transactions exceed the block limit {}",
                self.config.max_block_transactions
            )));
        }
        Ok(Outcome::Done((digests, batches)))
    }

    /// Executes the block `hash` (and, first, any unexecuted uncommitted ancestors). A block
    /// found missing data is remembered for the rest of the pass, so the checks waiting above
    /// it do not each walk down to it again.
    fn ensure_executed(
        &mut self,
        hash: &Digest,
        header: Option<&BlockHeader>,
    ) -> Result<Outcome<Arc<Speculative>>> {
        if self.missing_this_pass.contains(hash) {
            return Ok(Outcome::Missing);
        }
        let outcome = self.execute_with_ancestors(hash, header)?;
        if matches!(outcome, Outcome::Missing) {
            self.missing_this_pass.insert(*hash);
        }
        Ok(outcome)
    }

    fn execute_with_ancestors(
        &mut self,
        hash: &Digest,
        header: Option<&BlockHeader>,
    ) -> Result<Outcome<Arc<Speculative>>> {
        if let Some(done) = self.speculative.get(hash) {
            return Ok(Outcome::Done(done.clone()));
        }
        let header = match header {
            Some(header) => header.clone(),
            None => match self.pending_header(hash)? {
                Some(header) => header,
                None => return Ok(Outcome::Missing),
            },
        };
        if header.height.0 <= self.head.height.0 {
            return Ok(Outcome::Invalid(
                "block is not above the committed head".into(),
            ));
        }
        if header.parent != self.head.hash {
            match self.ensure_executed(&header.parent, None)? {
                Outcome::Done(_) => {}
                other => {
                    return Ok(match other {
                        Outcome::Invalid(why) => Outcome::Invalid(format!("parent: {why}")),
                        _ => Outcome::Missing,
                    })
                }
            }
        }
        let (digests, batches) = match self.payload(&header)? {
            Outcome::Done(payload) => payload,
            Outcome::Missing => return Ok(Outcome::Missing),
            Outcome::Invalid(why) => return Ok(Outcome::Invalid(why)),
        };
        let Some(chain) = self.chain(header.parent) else {
            return Ok(Outcome::Invalid(
                "parent is not on the committed chain".into(),
            ));
        };
        let (accumulator, governance) = self.parent_state(&chain)?;
        if let Some(why) = epoch_problem(header.epoch, governance.epoch(), digests.is_empty()) {
            return Ok(Outcome::Invalid(why));
        }
        let view = ChainView {
            store: &self.store,
            chain,
        };
        let transactions = batches.iter().flat_map(|b| b.transactions.iter());
        let execution = execute(
            &self.config.rules,
            &view,
            &accumulator,
            &governance,
            header.height,
            transactions,
        )?;
        if execution.state_root() != header.state_root {
            return Ok(Outcome::Invalid(format!(
                "state root {} but execution gives {}",
                header.state_root,
                execution.state_root()
            )));
        }
        let block = Arc::new(Speculative {
            height: header.height.0,
            parent: header.parent,
            execution,
            batches: digests,
            transactions: batches
                .iter()
                .flat_map(|b| b.transactions.iter().map(|t| t.id()))
                .collect(),
        });
        self.speculative.insert(*hash, block.clone());
        Ok(Outcome::Done(block))
    }

    /// The accounts' accumulator and the governance state a block on `chain` (its speculative
    /// ancestors, nearest first, down to the committed head) starts from.
    fn parent_state(
        &self,
        chain: &[Arc<Speculative>],
    ) -> Result<(StateAccumulator, GovernanceState)> {
        Ok(match chain.first() {
            Some(parent) => (
                parent.execution.accumulator.clone(),
                parent.execution.governance.clone(),
            ),
            None => (self.store.accumulator()?, self.governance.clone()),
        })
    }

    fn commit(&mut self, header: &BlockHeader, proof: &CommitProof) -> Result<Outcome<()>> {
        let hash = header.hash()?;
        if header.height.0 <= self.head.height.0 {
            return Ok(Outcome::Done(())); // already committed (replayed after a restart)
        }
        let block = match self.ensure_executed(&hash, Some(header))? {
            Outcome::Done(block) => block,
            Outcome::Missing => return Ok(Outcome::Missing),
            Outcome::Invalid(why) => return Ok(Outcome::Invalid(why)),
        };
        if block.execution.governance.epoch() > self.engine_epoch && !proof.commits_directly() {
            info!(
                height = header.height.0,
                "the epoch's last block is committed; waiting for a proof that commits it by itself"
            );
            self.closing = Some(Closing {
                epoch: EpochClosing::new(header.clone())?,
                hash,
                block,
            });
            return Ok(Outcome::Done(()));
        }
        self.write_commit(header, hash, &block, proof)?;
        Ok(Outcome::Done(()))
    }

    /// Takes a commit or certification the engine made after the epoch's last block (see
    /// [`EpochClosing::take`]); the first proof that commits that block by itself writes it and
    /// ends the epoch.
    fn close_with(&mut self, header: &BlockHeader, proof: CommitProof) -> Result<()> {
        let Some(closing) = &mut self.closing else {
            return Ok(());
        };
        let Some(proof) = closing.epoch.take(header, proof) else {
            return Ok(());
        };
        let Some(closing) = self.closing.take() else {
            return Ok(());
        };
        let last = closing.epoch.last().clone();
        self.write_commit(&last, closing.hash, &closing.block, &proof)
    }

    /// Writes a committed block (one synced batch) and moves the head, mempool and metrics on.
    fn write_commit(
        &mut self,
        header: &BlockHeader,
        hash: Digest,
        block: &Arc<Speculative>,
        proof: &CommitProof,
    ) -> Result<()> {
        let record = CommittedBlock {
            header: header.clone(),
            proof: codec::encode(proof)?,
            batches: block.batches.clone(),
            receipts: block.execution.receipts.clone(),
        };
        self.store
            .commit(&record, &block.execution, &block.transactions)
            .with_context(|| format!("committing height {}", header.height))?;
        self.head = Head {
            height: header.height,
            hash,
            header: header.clone(),
        };
        self.governance = block.execution.governance.clone();
        self.committed_batches.push_back(block.batches.clone());
        if self.committed_batches.len() > COMMITTED_BATCHES_KEPT {
            if let Some(oldest) = self.committed_batches.pop_front() {
                self.store.forget_recent_batches(&oldest);
            }
        }
        self.config.pushed_batches.committed(&block.batches);
        let head_height = self.head.height.0;
        self.speculative.retain(|_, b| b.height > head_height);
        {
            let mut mempool = self.mempool.lock().unwrap_or_else(|p| p.into_inner());
            mempool.on_commit(&block.batches, &block.execution.changes);
        }
        if header.height.0.is_multiple_of(PRUNE_EVERY) {
            self.prune_abandoned_forks()?;
        }
        self.metrics.on_commit(header, block.transactions.len());
        debug!(height = header.height.0, %hash, transactions = block.transactions.len(), "committed");
        if self.governance.epoch() > self.engine_epoch {
            info!(
                height = header.height.0,
                epoch = self.governance.epoch().0,
                validators = self.governance.get().validators.len(),
                "epoch {} ended; the next starts from this block",
                self.engine_epoch
            );
            self.ended = true;
        }
        Ok(())
    }

    /// See [`ExecutorConfig::reconfiguring`].
    fn reconfiguring(&self) -> bool {
        self.closing.is_some() || self.governance.get().scheduled.is_some()
    }

    fn try_propose(&mut self) -> Result<()> {
        let Some(proposal) = &self.proposal else {
            return Ok(());
        };
        let has_payload = self
            .mempool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .has_ready();
        // Nothing to propose and nothing waiting on this block: wait for payload, or for the
        // heartbeat where the chain has one (a zero interval means none).
        let heartbeat_due = !self.config.idle_interval.is_zero()
            && proposal.since.elapsed() >= self.config.idle_interval;
        // A scheduled validator-set change is pending work of its own: the blocks up to the one
        // that ends the epoch, and the empty ones above it until a proof commits that block by
        // itself, are proposed without waiting for transactions.
        let reconfiguring = self.reconfiguring();
        // An urgent empty block waits out the pace: a batch sealed meanwhile rides in it.
        let urgent_due = proposal.urgent && proposal.asked.elapsed() >= self.config.urgent_pace;
        if !urgent_due && !has_payload && !heartbeat_due && !reconfiguring {
            return Ok(());
        }
        let parent_hash = proposal.parent.hash()?;
        let view = proposal.view;
        let height = proposal.parent.height.next();
        let parent_outcome = if parent_hash == self.head.hash {
            Outcome::Done(())
        } else {
            match self.ensure_executed(&parent_hash, Some(&proposal.parent.clone()))? {
                Outcome::Done(_) => Outcome::Done(()),
                Outcome::Missing => Outcome::Missing,
                Outcome::Invalid(why) => Outcome::Invalid(why),
            }
        };
        match parent_outcome {
            Outcome::Done(()) => {}
            Outcome::Missing => {
                debug!(%view, parent = %parent_hash, "proposal waits for its parent's data");
                return Ok(());
            }
            Outcome::Invalid(why) => {
                warn!(%view, "cannot build on the parent: {why}");
                self.proposal = None;
                return Ok(());
            }
        }
        let Some(chain) = self.chain(parent_hash) else {
            self.proposal = None;
            return Ok(());
        };
        let exclude: HashSet<Digest> = chain
            .iter()
            .flat_map(|b| b.batches.iter().copied())
            .collect();
        let (accumulator, governance) = self.parent_state(&chain)?;
        let parent_state = ChainView {
            store: &self.store,
            chain,
        };
        // A state read error is fatal; the first one is kept and returned once `propose` is
        // done (an unreadable sender gets no transaction in meanwhile).
        let read_error = std::cell::RefCell::new(None);
        // On top of a block that ended the engine's epoch, only empty blocks (see
        // `epoch_problem`).
        let suffix = governance.epoch() > self.engine_epoch;
        let digests = if suffix {
            Vec::new()
        } else {
            self.mempool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .propose(
                    &exclude,
                    self.config.max_block_transactions,
                    |address| match parent_state.account(address) {
                        Ok(account) => account.nonce,
                        Err(error) => {
                            read_error.borrow_mut().get_or_insert(error);
                            u64::MAX
                        }
                    },
                    NONCE_GAP_PATIENCE,
                )
        };
        if let Some(error) = read_error.into_inner() {
            return Err(error.into());
        }
        let mut batches = Vec::with_capacity(digests.len());
        let mut included = Vec::with_capacity(digests.len());
        for digest in digests {
            if let Some(batch) = self.store.batch(&digest)? {
                batches.push(batch);
                included.push(digest);
            }
        }
        let execution = execute(
            &self.config.rules,
            &parent_state,
            &accumulator,
            &governance,
            height,
            batches.iter().flat_map(|b| b.transactions.iter()),
        )?;
        let payload_digest = Block::payload_digest_of(&included);
        debug!(%view, batches = included.len(), "proposing");
        if !included.is_empty() {
            self.store.put_manifest(&payload_digest, &included)?;
            self.net.broadcast(NetRequest::Manifest {
                payload: payload_digest,
                batches: included.clone(),
            });
        }
        let _ = self.engine.send(Input::PayloadReady {
            view,
            payload: PayloadProposal {
                payload_digest,
                state_root: execution.state_root(),
                timestamp_ms: now_ms(),
                empty: included.is_empty(),
            },
        });
        self.proposal = None;
        Ok(())
    }

    /// Asks a peer for what `header` lacks: its manifest, or its missing batches (or, for an
    /// unexecuted ancestor, that ancestor's).
    fn fetch_for(&mut self, header: &BlockHeader) -> Result<()> {
        // Find the lowest block on the path that lacks data.
        let mut target = header.clone();
        loop {
            if target.parent == self.head.hash || self.speculative.contains_key(&target.parent) {
                break;
            }
            if !self.walked_this_pass.insert(target.parent) {
                return Ok(()); // a walk this pass went on from here: its target is asked for
            }
            match self.pending_header(&target.parent)? {
                Some(parent) => target = parent,
                None => break, // the engine fetches missing blocks itself
            }
        }
        // The epoch's validators, then the configured peers (see `network::Source`).
        let n = self.config.validators + self.net.sources();
        if n < 2 && self.config.me.is_some() {
            return Ok(());
        }
        let payload = target.payload_digest;
        let manifest = self.store.manifest(&payload)?;
        let missing: Vec<Digest> = match &manifest {
            None => Vec::new(),
            Some(digests) => {
                let mut missing = Vec::new();
                for digest in digests {
                    if !self.store.has_batch(digest)? {
                        missing.push(*digest);
                    }
                }
                missing
            }
        };
        let key = if manifest.is_none() {
            payload
        } else {
            match missing.first() {
                Some(first) => *first,
                None => return Ok(()),
            }
        };
        let now = Instant::now();
        let asked = match self.fetching.get(&key) {
            Some((at, _)) if now.duration_since(*at) < REFETCH_AFTER => return Ok(()),
            Some((_, asked)) => asked + 1,
            None => 0,
        };
        if self.fetching.len() >= MAX_FETCHING {
            self.fetching.clear();
        }
        self.fetching.insert(key, (now, asked));
        // The proposer first, then each other validator in turn, then the configured peers.
        let mut peer = (target.proposer as usize + asked) % n.max(1);
        if Some(peer) == self.config.me {
            peer = (peer + 1) % n;
        }
        debug!(peer, height = target.height.0, "fetching payload data");
        // That peer first; one that is down or has nothing (answers at once) passes the
        // request to the next.
        let me = self.config.me;
        let order: Vec<usize> = (0..n)
            .map(|k| (peer + k) % n)
            .filter(|p| Some(*p) != me)
            .collect();
        let net = self.net.clone();
        let store = self.store.clone();
        let jobs = self.jobs.clone();
        let mempool = self.mempool.clone();
        let rules = self.config.rules.clone();
        self.runtime.spawn(async move {
            if manifest.is_none() {
                for peer in order {
                    if let Some(NetResponse::Manifest(Some(batches))) =
                        net.request(peer, NetRequest::GetManifest(payload)).await
                    {
                        if Block::payload_digest_of(&batches) == payload {
                            if let Err(error) = store.put_manifest(&payload, &batches) {
                                error!(%error, "storing a manifest");
                            }
                            let _ = jobs.send(Job::DataArrived);
                            return;
                        }
                    }
                }
                return;
            }
            let mut missing = missing;
            for peer in order {
                if missing.is_empty() {
                    break;
                }
                let asked = missing.clone();
                for chunk in asked.chunks(MAX_BATCHES_PER_REQUEST) {
                    let Some(NetResponse::Batches(batches)) = net
                        .request(peer, NetRequest::GetBatches(chunk.to_vec()))
                        .await
                    else {
                        break; // down: the next peer
                    };
                    for batch in batches {
                        let digest = batch.digest();
                        if !chunk.contains(&digest) {
                            continue;
                        }
                        missing.retain(|d| *d != digest);
                        crate::ingest::ingest_batch(
                            &store, &mempool, &rules, batch, None, digest, &jobs, None,
                        )
                        .await;
                    }
                }
            }
        });
        Ok(())
    }
}

/// A payload's batch digests and its batches, in order.
type Payload = (Vec<Digest>, Vec<Arc<Batch>>);

/// Logs a one-line start-up summary of the committed head.
pub fn log_head(head: &Head) {
    info!(height = head.height.0, hash = %head.hash, "committed head");
}

/// Deletes the stored uncommitted blocks at or below `committed`, and records of an older
/// layout (the engine cannot use them; a block still needed is fetched again); returns how many.
fn prune_pending_blocks(store: &Store, committed: quorate_ledger::Height) -> Result<usize> {
    let mut abandoned = Vec::new();
    for (hash, block) in store.pending_blocks()? {
        if block.is_none_or(|block| block.header.height <= committed) {
            abandoned.push(hash);
        }
    }
    if !abandoned.is_empty() {
        store.delete_pending_blocks(&abandoned)?;
    }
    Ok(abandoned.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_ledger::{Epoch, Height, PendingBlock};

    /// A block names its parent state's epoch; above the block that ended an epoch, the old
    /// set's blocks name the old epoch and carry nothing.
    #[test]
    fn blocks_name_their_parents_epoch_and_the_suffix_carries_no_payload() {
        assert_eq!(epoch_problem(Epoch(2), Epoch(2), false), None);
        assert_eq!(epoch_problem(Epoch(2), Epoch(2), true), None);
        assert_eq!(epoch_problem(Epoch(1), Epoch(2), true), None);
        let loaded = epoch_problem(Epoch(1), Epoch(2), false).unwrap();
        assert!(loaded.contains("carries a payload"), "{loaded}");
        let ahead = epoch_problem(Epoch(3), Epoch(2), true).unwrap();
        assert!(ahead.contains("leads to epoch 2"), "{ahead}");
    }

    #[test]
    fn timestamps_must_not_go_back_or_run_ahead_of_the_clock() {
        let now = 1_000_000;
        assert_eq!(timestamp_problem(now, Some(now - 5), now), None);
        assert_eq!(timestamp_problem(now, Some(now), now), None);
        assert_eq!(timestamp_problem(now + MAX_CLOCK_AHEAD_MS, None, now), None);
        let ahead = timestamp_problem(now + MAX_CLOCK_AHEAD_MS + 1, Some(now), now).unwrap();
        assert!(ahead.contains("ahead of this validator's clock"), "{ahead}");
        let back = timestamp_problem(now - 1, Some(now), now).unwrap();
        assert!(back.contains("before its parent's"), "{back}");
        // A parent this validator does not have yet is not a reason to refuse.
        assert_eq!(timestamp_problem(now - 1, None, now), None);
    }

    fn block(height: u64, salt: u8) -> PendingBlock {
        let header = BlockHeader {
            chain_id: "c".into(),
            genesis_hash: Digest::ZERO,
            epoch: Epoch(0),
            height: Height(height),
            view: View(height + u64::from(salt)),
            parent: Digest([salt; 32]),
            payload_digest: Digest::ZERO,
            state_root: Digest::ZERO,
            proposer: 0,
            timestamp_ms: 0,
        };
        PendingBlock {
            header,
            engine: vec![salt],
        }
    }

    #[test]
    fn blocks_of_abandoned_forks_are_deleted_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blocks = [block(3, 1), block(5, 2), block(6, 3), block(7, 4)];
        for b in &blocks {
            store
                .put_pending_block(&b.header.hash().unwrap(), b)
                .unwrap();
        }
        assert_eq!(prune_pending_blocks(&store, Height(6)).unwrap(), 3);
        let left: Vec<(Digest, Option<PendingBlock>)> = store.pending_blocks().unwrap();
        assert_eq!(
            left,
            vec![(blocks[3].header.hash().unwrap(), Some(blocks[3].clone()))]
        );
        assert_eq!(prune_pending_blocks(&store, Height(6)).unwrap(), 0);
    }
}
