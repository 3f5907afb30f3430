//! `quorate run`: one validator. The engine runs on one task and owns nothing but itself; the
//! runtime feeds it inputs and carries out its actions in order (a `PersistSafety` is synced to
//! RocksDB before the next action: nothing that depends on it leaves first). Payload building,
//! checking and execution run on the executor thread; signature checks on the blocking pool.

use crate::executor::{log_head, Executor, ExecutorConfig, Exit, Job};
use crate::inbox::PeerInbox;
use crate::ingest::{ingest_batch, InFlight, PUSHED_IN_FLIGHT_BYTES};
use crate::manifests::PeerManifests;
use crate::mempool::Mempool;
use crate::metrics::Metrics;
use crate::network::{Handler, NetHandle, Network, Origin};
use crate::peer_batches::PeerBatches;
use crate::wire::{
    EncodedBatch, Frame, NetRequest, NetResponse, MAX_BATCHES_PER_REQUEST, MAX_BLOCKS_PER_REQUEST,
};
use anyhow::{bail, Context, Result};
use quorate_consensus::recovery_history;
use quorate_consensus::{
    self as consensus, Action, BuildError, CertificateVerifier, CommitProof, Engine, EngineConfig,
    EngineKeys, EngineStatus, FaultInjection, Input, Persisted, ProtocolStatus, Signer,
};
use quorate_crypto::{Digest, MacKey, SigningKey};
use quorate_genesis::{Genesis, NodeConfig, Protocol, ValidatorKeyFile, ValidatorSet};
use quorate_ledger::state::{initial_accumulator, state_root};
use quorate_ledger::{
    codec, Account, Batch, Block, BlockHeader, ChainRules, Epoch, Height, PendingBlock, Store,
};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedSender};
use tracing::{error, info, warn};

/// What the RPC server, the network handler and the runtime share.
pub struct Shared {
    pub chain_id: String,
    /// What the chain accepts (chain id, opaque payloads).
    pub rules: ChainRules,
    pub protocol: Protocol,
    /// This node's index in the epoch's set; `None` while it follows.
    pub me: Option<usize>,
    pub validators: ValidatorSet,
    pub store: Arc<Store>,
    pub mempool: Arc<Mutex<Mempool>>,
    pub net: NetHandle,
    pub jobs: Sender<Job>,
    /// Peers' consensus messages for the engine (bounded per peer).
    pub inbox: Arc<PeerInbox>,
    /// Uncommitted manifests peers sent first (bounded per peer).
    pub manifests: PeerManifests,
    /// Uncommitted batches peers pushed (bounded per peer; the executor deletes the doomed).
    pub pushed_batches: Arc<PeerBatches>,
    /// Pushed batches being verified and stored (bounded in bytes over all peers).
    pub pushed_in_flight: Arc<InFlight>,
    pub max_block_transactions: usize,
    /// The most blocks ledger sync fetches looking for one whose proof commits it.
    pub sync_run_max: u64,
    /// Wakes ledger sync at once: a peer is in a later epoch.
    pub sync_now: Arc<tokio::sync::Notify>,
    /// See [`ExecutorConfig::reconfiguring`].
    pub reconfiguring: Arc<std::sync::atomic::AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// The engine's status; `None` while the node follows.
    pub status: Mutex<Option<EngineStatus>>,
}

impl Shared {
    pub fn mempool(&self) -> std::sync::MutexGuard<'_, Mempool> {
        self.mempool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the counts other parts keep (mempool, network, engine inbox, manifests) into the
    /// metrics.
    fn sample_gauges(&self) {
        let (size, evicted) = {
            let mempool = self.mempool();
            (mempool.len() as u64, mempool.evicted_total())
        };
        let m = &self.metrics;
        for (gauge, value) in [
            (&m.mempool_size, size),
            (&m.mempool_evicted, evicted),
            (&m.peers, self.net.connected() as u64),
            (&m.inbox_messages, self.inbox.len()),
            (&m.inbox_dropped, self.inbox.dropped_total()),
            (&m.net_commands_dropped, self.net.dropped_total()),
            (&m.manifests_forgotten, self.manifests.forgotten_total()),
            (&m.guests_refused, self.net.guests_refused_total()),
            (&m.batches_forgotten, self.pushed_batches.forgotten_total()),
            (&m.batches_refused, self.pushed_in_flight.refused_total()),
            (
                &m.recent_batch_bytes,
                self.store.recent_batch_bytes() as u64,
            ),
            (
                &m.recent_tx_index_entries,
                self.store.recent_tx_index_entries() as u64,
            ),
        ] {
            gauge.store(value, Ordering::Relaxed);
        }
    }

    /// Stores a batch we sealed, sends it to every validator and offers it for proposals.
    pub fn publish_batch(&self, batch: Batch) {
        let digest = batch.digest();
        let batch = Arc::new(batch);
        // Encoded once: the same bytes go to every validator and into the store.
        let frame = Frame::encode(&NetRequest::Batch(batch.clone()));
        let stored = match frame.as_ref().ok().and_then(Frame::batch_bytes) {
            Some(bytes) => self.store.put_batch_encoded(&digest, &batch, bytes),
            None => self.store.put_batch(&digest, &batch),
        };
        if let Err(error) = stored {
            error!(%error, "storing a batch");
            return;
        }
        self.mempool().add_ready(digest, &batch);
        match frame {
            Ok(frame) => self.net.broadcast_frame(frame),
            // Peers fetch it when a block names it (and fail the same way: it cannot travel).
            Err(error) => warn!(%digest, %error, "a sealed batch cannot be sent"),
        }
        let _ = self.jobs.send(Job::DataArrived);
    }
}

/// Ready batches pushed again per second at most (see `Mempool::due_for_repush`).
const REPUSH_MAX: usize = 32;

struct NetHandler {
    shared: Arc<Shared>,
}

impl NetHandler {
    /// A batch a peer pushed (with the bytes it came in, when the network kept them).
    fn take_batch(
        &self,
        origin: Origin,
        batch: Arc<Batch>,
        encoded: Option<EncodedBatch>,
    ) -> NetResponse {
        let shared = &self.shared;
        let slot = match origin {
            Origin::Validator(i) => i,
            Origin::Guest(_) => shared.validators.len(),
        };
        if !shared.mempool().has_room(batch.transactions.len()) {
            // Fetched on demand once a block needs it.
            return NetResponse::Ack;
        }
        let frame_bytes = match &encoded {
            Some(encoded) => encoded.bytes().len(),
            None => codec::encoded_len(batch.as_ref()).unwrap_or(usize::MAX),
        };
        // Its frame and its decoded copy, until stored.
        let Some(reserved) = shared
            .pushed_in_flight
            .reserve(frame_bytes.saturating_mul(2))
        else {
            // As when full.
            return NetResponse::Ack;
        };
        {
            let shared = shared.clone();
            tokio::spawn(async move {
                let _reserved = reserved;
                let digest = batch.digest();
                let valid = ingest_batch(
                    &shared.store,
                    &shared.mempool,
                    &shared.rules,
                    batch,
                    encoded,
                    digest,
                    &shared.jobs,
                    Some((slot, &shared.pushed_batches)),
                )
                .await;
                if !valid {
                    shared.net.report(origin, format!("invalid batch {digest}"));
                }
            });
        }
        NetResponse::Ack
    }
}

impl Handler for NetHandler {
    fn on_later_epoch(&self, epoch: Epoch) {
        if epoch > self.shared.validators.epoch() {
            self.shared.sync_now.notify_one();
        }
    }

    fn on_batch(&self, origin: Origin, batch: Arc<Batch>, encoded: EncodedBatch) -> NetResponse {
        self.take_batch(origin, batch, Some(encoded))
    }

    fn on_request(&self, origin: Origin, request: NetRequest) -> NetResponse {
        let shared = &self.shared;
        // Guests (followers) share the slot after the validators' in the per-peer bounds; the
        // network lets them send only what a follower needs.
        let slot = match origin {
            Origin::Validator(i) => i,
            Origin::Guest(_) => shared.validators.len(),
        };
        let guest = matches!(origin, Origin::Guest(_));
        match request {
            NetRequest::Consensus(epoch, message) => {
                let ours = shared.validators.epoch();
                if epoch > ours {
                    // The sender is already in a later epoch: this node missed the block that
                    // ended its own; ledger sync fetches it now rather than after a stall.
                    shared.sync_now.notify_one();
                    NetResponse::Ack
                } else if epoch < ours {
                    // An honest laggard (or not): dropped unscored, and told where we are.
                    NetResponse::LaterEpoch(ours)
                } else {
                    // A guest in this epoch is no member of it: never counted.
                    if !guest {
                        shared.inbox.push(slot, message);
                    }
                    NetResponse::Ack
                }
            }
            // A validator of another epoch announcing payload to its set: not ours to store.
            NetRequest::Manifest { .. } if guest => NetResponse::Ack,
            NetRequest::Batch(batch) => self.take_batch(origin, batch, None),
            NetRequest::Manifest { payload, batches } => {
                if Block::payload_digest_of(&batches) != payload {
                    shared
                        .net
                        .report(origin, "manifest does not match its digest".into());
                } else if batches.len() > shared.max_block_transactions {
                    // Every batch holds a transaction at least: no block can carry this.
                    shared
                        .net
                        .report(origin, format!("manifest of {} batches", batches.len()));
                } else if let Err(error) = store_peer_manifest(shared, slot, payload, &batches) {
                    error!(%error, "storing a manifest");
                }
                NetResponse::Ack
            }
            NetRequest::GetManifest(payload) => {
                NetResponse::Manifest(shared.store.manifest(&payload).ok().flatten())
            }
            NetRequest::GetBatches(digests) => {
                let batches = digests
                    .iter()
                    .take(MAX_BATCHES_PER_REQUEST)
                    .filter_map(|d| shared.store.batch(d).ok().flatten())
                    .collect();
                NetResponse::Batches(batches)
            }
            // Filtered out (and the peer scored) by the network before it gets here.
            NetRequest::Undecodable(_) => NetResponse::Ack,
            NetRequest::GetCommitted { from, count } => {
                let blocks = (from..from.saturating_add(count.min(MAX_BLOCKS_PER_REQUEST)))
                    .map_while(|h| shared.store.committed(Height(h)).ok().flatten())
                    .collect();
                NetResponse::Committed(blocks)
            }
        }
    }
}

/// Stores a manifest from `from`, within the peer's bound (see [`crate::manifests`]).
fn store_peer_manifest(
    shared: &Shared,
    from: usize,
    payload: Digest,
    batches: &[Digest],
) -> Result<()> {
    if shared.store.manifest(&payload)?.is_none() {
        shared.store.put_manifest(&payload, batches)?;
        if let Some(oldest) = shared.manifests.record(from, payload) {
            shared.store.delete_manifest(&oldest)?;
        }
    }
    let _ = shared.jobs.send(Job::DataArrived);
    Ok(())
}

/// The engine of `protocol`, resumed from persisted safety state and stored blocks, rooted at
/// the ledger's committed head (with that block's commit proof).
fn recover_engine(
    protocol: Protocol,
    base: &EngineConfig,
    store: &Store,
) -> Result<Box<dyn Engine + Send>> {
    let head = store.head()?.context("no head in the database")?;
    let epoch = base.validators.epoch();
    let epoch_root = &base.epoch_root;
    // At the epoch's root the engine starts fresh: no proof (the root's is its old epoch's),
    // no history of the old set's proposers.
    let root_proof = if head.height.0 == 0 || head.height == epoch_root.height {
        None
    } else {
        let record = store
            .committed(head.height)?
            .context("head block record missing")?;
        Some(
            codec::decode::<CommitProof>(&record.proof)
                .context("the head block's commit proof does not decode")?,
        )
    };
    // The committed headers of this epoch below the head that a restarted engine needs
    // (`recovery_history`).
    let window = recovery_history(base.validators.len(), &base.params) as u64;
    let mut history = Vec::new();
    let first = head
        .height
        .0
        .saturating_sub(window)
        .max(epoch_root.height.0 + 1);
    for height in first..head.height.0 {
        let record = store
            .committed(Height(height))?
            .with_context(|| format!("committed block {height} missing"))?;
        history.push(record.header);
    }
    let config = EngineConfig {
        root: head.header.clone(),
        root_proof,
        history,
        ..base.clone()
    };
    // Blocks of this epoch only: an earlier epoch's are its old set's (its suffix, or forks).
    let blocks: Vec<Vec<u8>> = store
        .pending_blocks()?
        .into_iter()
        .filter_map(|(_, block)| block)
        .filter(|block| block.header.epoch == epoch)
        .map(|block| block.engine)
        .collect();
    let persisted = Persisted {
        safety: store.safety()?,
        blocks: blocks.clone(),
    };
    match consensus::build(protocol, config.clone(), persisted) {
        // The safety state of an epoch that is over binds nothing in this one: its votes and
        // locks name their epoch, which no message of this epoch does.
        Err(BuildError::WrongEpoch { persisted, engine }) if persisted < engine => {
            info!("consensus safety state is of epoch {persisted}; epoch {engine} starts afresh");
            consensus::build(
                protocol,
                config,
                Persisted {
                    safety: None,
                    blocks,
                },
            )
            .context("starting the consensus engine")
        }
        built => built.context("recovering the consensus engine"),
    }
}

/// This validator's engine for the epoch of `validators`, resumed from the store, with the
/// configuration a restart after ledger sync builds it from again.
fn start_engine(
    base: &Base,
    validators: &ValidatorSet,
    me: usize,
    epoch_root: BlockHeader,
    head: &quorate_ledger::Head,
) -> Result<(Box<dyn Engine + Send>, EngineConfig)> {
    let genesis = &base.genesis;
    let keys = match genesis.protocol {
        Protocol::HotStuff => EngineKeys::signing(base.signer.clone()),
        Protocol::Pbft => EngineKeys {
            signer: base.signer.clone(),
            mac_keys: pairwise_mac_keys(
                &base.identity,
                validators,
                &genesis.chain_id,
                base.genesis_hash,
            )?,
        },
    };
    let config = EngineConfig {
        chain_id: genesis.chain_id.clone(),
        genesis_hash: base.genesis_hash,
        validators: validators.clone(),
        own_index: me,
        keys,
        params: genesis.params.clone(),
        root: head.header.clone(),
        root_proof: None,
        epoch_root,
        history: Vec::new(),
        verifier: base.verifier.clone(),
        fault: FaultInjection::None,
    };
    let engine = recover_engine(genesis.protocol, &config, &base.store)?;
    Ok((engine, config))
}

/// The MAC key this validator shares with each validator of the epoch (PBFT), derived from the
/// identity keys (X25519) with the chain and epoch in the context; held in memory only.
fn pairwise_mac_keys(
    identity: &SigningKey,
    validators: &ValidatorSet,
    chain_id: &str,
    genesis_hash: Digest,
) -> Result<Arc<[MacKey]>> {
    let context = MacKey::context(chain_id, &genesis_hash, validators.epoch().0);
    validators
        .validators()
        .iter()
        .map(|v| {
            MacKey::derive(identity, &v.identity_key, &context)
                .with_context(|| format!("deriving the MAC key shared with validator {}", v.name))
        })
        .collect::<Result<Vec<_>>>()
        .map(Arc::from)
}

/// The validator set of the epoch the committed chain is in, and that epoch's root block (the
/// genesis block in epoch 0), from the store.
fn current_epoch(store: &Store) -> Result<(ValidatorSet, BlockHeader)> {
    let governance = store.governance()?;
    let epoch = governance.epoch();
    let record = store
        .epoch_record(epoch)?
        .with_context(|| format!("the store has no record of epoch {epoch}"))?;
    let root = store
        .committed(record.root_height)?
        .with_context(|| format!("epoch {epoch}'s root block is missing from the store"))?
        .header;
    if root.hash()? != record.root {
        bail!("epoch {epoch}'s root block in the store is not the one its record names");
    }
    let validators = ValidatorSet::new(epoch, governance.get().validators.clone())
        .with_context(|| format!("epoch {epoch}'s validator set"))?;
    Ok((validators, root))
}

/// The genesis block (height 0) every validator starts from.
pub fn genesis_root(genesis: &Genesis, genesis_hash: Digest, state_root: Digest) -> BlockHeader {
    BlockHeader::genesis(
        &genesis.chain_id,
        genesis_hash,
        state_root,
        genesis.genesis_time_ms,
    )
}

/// The genesis accounts as stored.
pub fn genesis_accounts(genesis: &Genesis) -> Vec<(quorate_crypto::Address, Account)> {
    genesis
        .accounts
        .iter()
        .map(|a| {
            (
                a.address,
                Account {
                    balance: a.balance,
                    nonce: 0,
                },
            )
        })
        .collect()
}

/// Opens the store, writing the genesis state on first start.
pub fn open_store(path: &Path, genesis: &Genesis, genesis_hash: Digest) -> Result<Store> {
    let store =
        Store::open(path).with_context(|| format!("opening the database at {}", path.display()))?;
    if !store.direct_writes() {
        info!(
            path = %path.display(),
            "the file system refuses direct I/O: the store's tables go through the page cache"
        );
    }
    match store.head()? {
        Some(head) => {
            if head.header.genesis_hash != genesis_hash {
                bail!(
                    "the database at {} belongs to another genesis ({}, this one is {})",
                    path.display(),
                    head.header.genesis_hash,
                    genesis_hash
                );
            }
        }
        None => {
            let accounts = genesis_accounts(genesis);
            let accumulator = initial_accumulator(accounts.iter().map(|(a, b)| (a, b)));
            let governance = genesis.initial_governance();
            let state_root = state_root(accumulator.root(), governance.digest()?);
            let root = genesis_root(genesis, genesis_hash, state_root);
            store.initialize(&root, &accounts, &accumulator, &governance)?;
            info!("initialised the database from genesis");
        }
    }
    Ok(store)
}

/// What outlives an epoch: the node's keys, store, mempool and metrics, and the RPC.
struct Base {
    config: NodeConfig,
    genesis: Genesis,
    genesis_hash: Digest,
    identity: SigningKey,
    signer: Signer,
    store: Arc<Store>,
    verifier: Arc<CertificateVerifier>,
    mempool: Arc<Mutex<Mempool>>,
    metrics: Arc<Metrics>,
}

/// The current epoch's [`Shared`], swapped at each epoch boundary: what the RPC server reads.
pub struct Current(std::sync::RwLock<Arc<Shared>>);

impl Current {
    pub fn get(&self) -> Arc<Shared> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, shared: Arc<Shared>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = shared;
    }
}

/// The RPC server: bound before the first epoch, serving from the first epoch's start on, and
/// kept across epochs (clients see no gap at a boundary).
struct Rpc {
    listener: Option<tokio::net::TcpListener>,
    current: Option<Arc<Current>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Rpc {
    fn publish(&mut self, shared: Arc<Shared>) {
        match &self.current {
            Some(current) => current.set(shared),
            None => {
                let current = Arc::new(Current(std::sync::RwLock::new(shared)));
                if let Some(listener) = self.listener.take() {
                    self.task = Some(tokio::spawn(crate::rpc::serve(listener, current.clone())));
                }
                self.current = Some(current);
            }
        }
    }
}

/// How an epoch's run ended.
enum EpochEnd {
    /// A signal: the node stops.
    Stop,
    /// The epoch's last block is committed: the next epoch starts.
    Next,
}

pub async fn run(home: &Path) -> Result<()> {
    let config_path = home.join("config.toml");
    let config = NodeConfig::load(&config_path)
        .with_context(|| format!("loading {}", config_path.display()))?;
    let genesis_path = NodeConfig::resolve(home, &config.genesis_file);
    let genesis = Genesis::load(&genesis_path)
        .with_context(|| format!("loading {}", genesis_path.display()))?;
    let genesis_hash = genesis.hash()?;
    let key_path = NodeConfig::resolve(home, &config.validator_key_file);
    let keys = ValidatorKeyFile::load(&key_path)
        .with_context(|| format!("loading {}", key_path.display()))?;
    // Epoch 0's set (checks every proof of possession up front, for a clear error).
    genesis.validator_set()?;
    let data_dir = NodeConfig::resolve(home, &config.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store = Arc::new(open_store(&data_dir.join("db"), &genesis, genesis_hash)?);
    let head = store.head()?.context("no head after initialisation")?;
    log_head(&head);
    let mempool = Arc::new(Mutex::new(Mempool::new(
        genesis.rules(),
        config.mempool.clone(),
        genesis.params.max_batch_transactions as usize,
    )));
    let rpc_listener = tokio::net::TcpListener::bind(&config.rpc_listen)
        .await
        .with_context(|| format!("binding RPC on {}", config.rpc_listen))?;
    info!(address = %config.rpc_listen, "RPC listening");
    let base = Base {
        signer: Signer::bls(Arc::new(keys.bls)),
        identity: keys.identity,
        config,
        genesis,
        genesis_hash,
        store: store.clone(),
        verifier: Arc::new(CertificateVerifier::new()),
        mempool,
        metrics: Arc::new(Metrics::default()),
    };
    let mut rpc = Rpc {
        listener: Some(rpc_listener),
        current: None,
        task: None,
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let outcome = loop {
        match run_epoch(&base, &mut rpc, &mut terminate).await {
            Ok(EpochEnd::Next) => continue,
            Ok(EpochEnd::Stop) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    if let Some(task) = rpc.task.take() {
        task.abort();
        let _ = task.await;
    }
    drop(rpc);
    drop(base);
    if Arc::strong_count(&store) > 1 {
        warn!("database still referenced at shutdown; relying on its write-ahead log");
    }
    drop(store);
    match &outcome {
        Ok(()) => info!("stopped cleanly"),
        Err(error) => error!("stopping: {error:#}"),
    }
    outcome
}

/// Runs consensus for the epoch the committed chain is in, with that epoch's set: its engine,
/// network admission, executor, sync and batcher, until a signal or until the executor commits
/// the epoch's last block. Everything of the epoch is stopped before it returns.
async fn run_epoch(
    base: &Base,
    rpc: &mut Rpc,
    terminate: &mut tokio::signal::unix::Signal,
) -> Result<EpochEnd> {
    let genesis = &base.genesis;
    let genesis_hash = base.genesis_hash;
    let store = &base.store;
    let metrics = &base.metrics;
    // The epoch the committed chain is in: its set, and its root (where its engines start).
    let (validators, epoch_root) = current_epoch(store)?;
    let epoch = validators.epoch();
    // Outside the set, the node follows: it syncs and executes committed blocks, serves RPC
    // and forwards transactions, and never votes.
    let me = validators.index_of_identity(&base.identity.public());
    metrics.epoch.store(epoch.0, Ordering::Relaxed);
    let head = store.head()?.context("no head in the database")?;
    let mut engine = match me {
        Some(me) => Some(start_engine(base, &validators, me, epoch_root, &head)?),
        None => None,
    };

    let peers: Vec<_> = validators
        .validators()
        .iter()
        .map(|v| (v.identity_key, v.p2p_address.clone()))
        .collect();
    let (network, net) = Network::new(
        &base.identity,
        &base.config.p2p_listen,
        &peers,
        me,
        &base.config.peers,
    )?;
    // Local inputs (timers, the executor's answers): made by this node, a bounded number per
    // engine action. Peers' messages go to the per-peer bounded inbox.
    let (inputs_tx, mut inputs) = mpsc::unbounded_channel::<Input>();
    let inbox = Arc::new(PeerInbox::new(validators.len(), crate::inbox::PER_PEER_MAX));
    let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Job>();
    // One slot more, shared by every guest (follower) forwarding transactions.
    let pushed_batches = Arc::new(PeerBatches::new(
        validators.len() + 1,
        crate::peer_batches::PER_PEER_MAX,
    ));
    let shared = Arc::new(Shared {
        chain_id: genesis.chain_id.clone(),
        rules: genesis.rules(),
        protocol: genesis.protocol,
        me,
        validators: validators.clone(),
        store: store.clone(),
        mempool: base.mempool.clone(),
        net: net.clone(),
        jobs: jobs_tx.clone(),
        inbox: inbox.clone(),
        manifests: PeerManifests::new(validators.len(), crate::manifests::PER_PEER_MAX),
        pushed_batches: pushed_batches.clone(),
        pushed_in_flight: InFlight::new(PUSHED_IN_FLIGHT_BYTES),
        max_block_transactions: genesis.params.max_block_transactions as usize,
        sync_run_max: genesis
            .params
            .checkpoint_interval
            .saturating_add(crate::wire::MAX_BLOCKS_PER_REQUEST),
        sync_now: Arc::new(tokio::sync::Notify::new()),
        reconfiguring: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        metrics: metrics.clone(),
        status: Mutex::new(engine.as_ref().map(|(engine, _)| engine.status())),
    });

    let executor = Executor::new(
        ExecutorConfig {
            rules: genesis.rules(),
            me,
            validators: validators.len(),
            max_block_transactions: genesis.params.max_block_transactions as usize,
            idle_interval: Duration::from_millis(genesis.params.idle_interval_ms),
            // PBFT's checkpoint drive: one empty block per batch delay at most.
            urgent_pace: match genesis.protocol {
                Protocol::Pbft => Duration::from_millis(genesis.params.max_batch_delay_ms),
                Protocol::HotStuff => Duration::ZERO,
            },
            pushed_batches,
            reconfiguring: shared.reconfiguring.clone(),
        },
        store.clone(),
        base.mempool.clone(),
        net.clone(),
        tokio::runtime::Handle::current(),
        inputs_tx.clone(),
        jobs_tx.clone(),
        metrics.clone(),
    )?;
    let (fatal_tx, mut fatal) = mpsc::unbounded_channel::<String>();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<Epoch>();
    let (restart_tx, mut restart) = mpsc::unbounded_channel::<()>();
    let sync_task = tokio::spawn(crate::sync::run(
        shared.clone(),
        genesis_hash,
        base.verifier.clone(),
        restart_tx,
    ));
    let executor_thread = std::thread::Builder::new()
        .name("executor".into())
        .spawn(move || match executor.run(jobs_rx) {
            Ok(Exit::Stopped) => {}
            Ok(Exit::EpochEnded(next)) => {
                let _ = ended_tx.send(next);
            }
            Err(error) => {
                let _ = fatal_tx.send(format!("{error:#}"));
            }
        })
        .context("starting the executor thread")?;

    let network_task = tokio::spawn(network.run(Arc::new(NetHandler {
        shared: shared.clone(),
    })));
    rpc.publish(shared.clone());
    let batcher_task = {
        let shared = shared.clone();
        let inputs = inputs_tx.clone();
        let delay = Duration::from_millis(genesis.params.max_batch_delay_ms.max(1));
        // A ready batch uncommitted for this long goes to every validator again (see
        // `Mempool::due_for_repush`), at most REPUSH_MAX a second.
        let repush_after = Duration::from_millis(genesis.params.view_timeout_ms.saturating_mul(5))
            .max(Duration::from_secs(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(delay);
            // The engine starts out assuming payload is pending; tell it once it is not.
            let mut pending = true;
            let mut last_repush = std::time::Instant::now();
            loop {
                tick.tick().await;
                let sealed = shared.mempool().seal();
                if let Some(batch) = sealed {
                    shared.publish_batch(batch);
                }
                if last_repush.elapsed() >= Duration::from_secs(1) {
                    last_repush = std::time::Instant::now();
                    let due = shared.mempool().due_for_repush(repush_after, REPUSH_MAX);
                    for digest in due {
                        match shared.store.batch(&digest) {
                            Ok(Some(batch)) => shared.net.broadcast(NetRequest::Batch(batch)),
                            Ok(None) => {}
                            Err(error) => warn!(%error, "reading a batch to push again"),
                        }
                    }
                }
                // Ready batches, ours and peers', until committed; or a validator-set change
                // under way.
                let now_pending =
                    shared.mempool().has_ready() || shared.reconfiguring.load(Ordering::Relaxed);
                if now_pending != pending {
                    pending = now_pending;
                    let _ = inputs.send(Input::PayloadPending(pending));
                }
                shared.sample_gauges();
            }
        })
    };

    info!(
        validator = ?me,
        epoch = epoch.0,
        validators = validators.len(),
        moniker = %base.config.moniker,
        chain = %genesis.chain_id,
        "starting"
    );
    let mut runtime = Runtime {
        me: me.unwrap_or(usize::MAX),
        epoch,
        store: store.clone(),
        net: net.clone(),
        inputs: inputs_tx.clone(),
        jobs: jobs_tx.clone(),
    };
    let started = match &mut engine {
        Some((engine, _)) => runtime.perform(engine.start()),
        None => {
            info!(
                epoch = epoch.0,
                "not a validator of epoch {epoch}: following the chain (syncing committed blocks, never voting)"
            );
            Ok(())
        }
    };
    let outcome = match started {
        Err(error) => Err(error),
        Ok(()) => loop {
            tokio::select! {
                // Local inputs first: a timer or a payload answer is never starved by peers.
                biased;
                input = inputs.recv() => {
                    let Some(input) = input else { break Ok(EpochEnd::Stop) };
                    if let Some((engine, _)) = &mut engine {
                        let actions = engine.handle(input);
                        if let Err(error) = runtime.perform(actions) {
                            break Err(error);
                        }
                        publish_status(&**engine, metrics, &shared);
                    }
                }
                Some(next) = ended.recv() => {
                    info!(epoch = next.0, "epoch {epoch} is over: epoch {next} starts with its validator set");
                    break Ok(EpochEnd::Next);
                }
                (from, message) = inbox.recv() => {
                    if let Some((engine, _)) = &mut engine {
                        let actions = engine.handle(Input::Message { from, message });
                        if let Err(error) = runtime.perform(actions) {
                            break Err(error);
                        }
                        publish_status(&**engine, metrics, &shared);
                    }
                }
                Some(()) = restart.recv() => {
                    let Some((engine, config)) = &mut engine else { continue };
                    match recover_engine(genesis.protocol, config, store) {
                        Ok(recovered) => {
                            *engine = recovered;
                            let mut actions = engine.start();
                            // A new engine assumes payload is pending; the batcher only reports
                            // changes, so tell it how things stand now.
                            let pending = shared.mempool().has_ready()
                                || shared.reconfiguring.load(Ordering::Relaxed);
                            actions.extend(engine.handle(Input::PayloadPending(pending)));
                            if let Err(error) = runtime.perform(actions) {
                                break Err(error);
                            }
                        }
                        Err(error) => break Err(error),
                    }
                }
                why = fatal.recv() => {
                    break Err(anyhow::anyhow!("executor stopped: {}", why.unwrap_or_default()));
                }
                _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break Ok(EpochEnd::Stop) }
                _ = terminate.recv() => { info!("SIGTERM: stopping"); break Ok(EpochEnd::Stop) }
            }
        },
    };
    sync_task.abort();
    batcher_task.abort();
    network_task.abort();
    let _ = jobs_tx.send(Job::Stop);
    let _ = tokio::task::spawn_blocking(move || executor_thread.join()).await;
    drop(runtime);
    let _ = network_task.await;
    let _ = batcher_task.await;
    let _ = sync_task.await;
    outcome
}

fn publish_status(engine: &dyn Engine, metrics: &Metrics, shared: &Shared) {
    let status = engine.status();
    metrics.view.store(status.view.0, Ordering::Relaxed);
    metrics.timeouts.store(status.timeouts, Ordering::Relaxed);
    metrics
        .lock_refusals
        .store(status.lock_refusals(), Ordering::Relaxed);
    if let ProtocolStatus::Pbft {
        stable_checkpoint,
        high_watermark,
        ..
    } = status.protocol
    {
        metrics
            .stable_checkpoint
            .store(stable_checkpoint.0, Ordering::Relaxed);
        metrics
            .high_watermark
            .store(high_watermark.0, Ordering::Relaxed);
    }
    *shared.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
}

struct Runtime {
    me: usize,
    epoch: Epoch,
    store: Arc<Store>,
    net: NetHandle,
    inputs: UnboundedSender<Input>,
    jobs: Sender<Job>,
}

impl Runtime {
    /// Carries out the engine's actions in order. A failed safety write stops the node.
    fn perform(&mut self, actions: Vec<Action>) -> Result<()> {
        for action in actions {
            match action {
                Action::Send { to, message } => {
                    if to != self.me {
                        self.net
                            .send(to, NetRequest::Consensus(self.epoch, message));
                    }
                }
                Action::Broadcast { message } => {
                    self.net
                        .broadcast(NetRequest::Consensus(self.epoch, message));
                }
                Action::SetTimer { timer, duration_ms } => {
                    let inputs = self.inputs.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(duration_ms)).await;
                        let _ = inputs.send(Input::Timer(timer));
                    });
                }
                Action::PersistSafety { bytes } => self
                    .store
                    .put_safety(&bytes)
                    .context("persisting consensus safety state")?,
                Action::StoreBlock {
                    hash,
                    header,
                    bytes,
                } => self
                    .store
                    .put_pending_block(
                        &hash,
                        &PendingBlock {
                            header,
                            engine: bytes,
                        },
                    )
                    .context("storing a block")?,
                Action::RequestPayload {
                    view,
                    parent,
                    urgent,
                } => {
                    let _ = self.jobs.send(Job::Propose {
                        view,
                        parent,
                        urgent,
                    });
                }
                Action::CheckPayload { header } => {
                    let _ = self.jobs.send(Job::Check { header });
                }
                Action::Commit { header, proof } => {
                    let _ = self.jobs.send(Job::Commit { header, proof });
                }
                Action::Certify { header, proof } => {
                    let _ = self.jobs.send(Job::Certify { header, proof });
                }
                Action::Misbehaved { peer, why } => self.net.report_fault(peer, why),
            }
        }
        Ok(())
    }
}
