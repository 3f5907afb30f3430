//! The deterministic network simulator.
//!
//! Runs the real engines (the code the node runs) on a simulated network where the seed is the
//! only entropy: random delays, drops, partitions that heal at a global stabilisation time (GST),
//! crashes and restarts from persisted state (what was not synced is lost), and Byzantine
//! validators (`silent`, `equivocate`, `twins`, `poison`, `bad-payload`, `flood`, or a `random`
//! mix; one module each for the last three). Time is simulated milliseconds, so thousands of
//! schedules run per minute.
//!
//! Checked across all honest validators: no two commit different blocks at one height (safety),
//! and every one of them commits again after GST (liveness). The same seed always gives the same
//! trace, whose hash [`SeedReport::trace_hash`] lets a test compare two runs.

mod bad_payload;
mod equivocate;
mod flood;
mod pbft_equivocate;
mod poison;
mod rng;
mod summary;

pub use rng::Rng;
pub use summary::{run_seeds, Summary};

use equivocate::Withheld;

use crate::crypto::{FastKeys, Signer};
use crate::hotstuff::{
    HotStuff, HsBlock, HsMessage, Proposal, Vote, VoteAggregator, REPUTATION_WINDOW_MAX,
};
use crate::pbft::Pbft;
use crate::{
    Action, BuildError, CertificateVerifier, CommitProof, Engine, EngineConfig, EngineKeys,
    FaultInjection, Input, Message, PayloadProposal, TimerId,
};
use quorate_crypto::{BlsKeyPair, Digest, Domain, Hasher, MacKey, SigningKey};
use quorate_genesis::{ConsensusParams, Protocol, ValidatorInfo, ValidatorSet};
use quorate_ledger::{codec, BlockHeader, Epoch, Height, QuorumCert, TimeoutCert, View, VoteData};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

/// What the Byzantine validators do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Behaviour {
    /// Never send anything.
    Silent,
    /// Propose conflicting blocks to different halves of the network and vote for every block.
    Equivocate,
    /// Two honest instances with one key, in different partitions before GST.
    Twins,
    /// Votes and timeouts that reuse honest block hashes with wrong data or carry signatures
    /// over other data; no proposal, no honest vote (see `sim/poison.rs`).
    Poison,
    /// Proposals whose payload no honest validator accepts; silent otherwise (see
    /// `sim/bad_payload.rs`).
    #[serde(rename = "bad-payload")]
    BadPayload,
    /// Forged certificates, far-future votes and replays in place of every message (see
    /// `sim/flood.rs`).
    Flood,
    /// Each Byzantine validator picks one of the above per seed.
    Random,
}

impl std::str::FromStr for Behaviour {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "silent" => Ok(Behaviour::Silent),
            "equivocate" => Ok(Behaviour::Equivocate),
            "twins" => Ok(Behaviour::Twins),
            "poison" => Ok(Behaviour::Poison),
            "bad-payload" => Ok(Behaviour::BadPayload),
            "flood" => Ok(Behaviour::Flood),
            "random" => Ok(Behaviour::Random),
            other => Err(format!(
                "unknown behaviour {other:?} (expected silent, equivocate, twins, poison, \
                 bad-payload, flood or random)"
            )),
        }
    }
}

impl Behaviour {
    /// Whether the simulator has this behaviour for `protocol` (one adversary module per
    /// protocol; `silent` and `twins` need none).
    pub fn supports(self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::HotStuff => true,
            Protocol::Pbft => matches!(
                self,
                Behaviour::Silent | Behaviour::Equivocate | Behaviour::Twins | Behaviour::Random
            ),
        }
    }
}

/// Which signatures the simulated validators make and check (see [`crate::crypto`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    /// Keyed BLAKE3 tags, checked member by member: same bitmaps, domains and failures as BLS,
    /// a thousand times cheaper.
    #[default]
    Fast,
    /// BLS12-381, as on a real chain.
    Real,
}

impl std::str::FromStr for CryptoMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fast" => Ok(CryptoMode::Fast),
            "real" => Ok(CryptoMode::Real),
            other => Err(format!("unknown crypto {other:?} (expected fast or real)")),
        }
    }
}

/// One simulation configuration; each seed is one schedule of it.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub protocol: Protocol,
    pub validators: usize,
    pub byzantine: usize,
    pub behaviour: Behaviour,
    /// Probability that any one message is lost before GST.
    pub drop_probability: f64,
    /// Before GST: long delays, partitions and crash-restarts. Off: a synchronous network.
    pub asynchrony: bool,
    pub fault: FaultInjection,
    /// GST is drawn uniformly from `0..=gst_max_ms` (0 without asynchrony).
    pub gst_max_ms: u64,
    /// How long the run continues after GST.
    pub after_gst_ms: u64,
}

impl SimConfig {
    pub fn new(validators: usize, byzantine: usize, behaviour: Behaviour) -> Self {
        SimConfig {
            protocol: Protocol::HotStuff,
            validators,
            byzantine,
            behaviour,
            drop_probability: 0.0,
            asynchrony: true,
            fault: FaultInjection::None,
            gst_max_ms: 2_000,
            after_gst_ms: 8_000,
        }
    }
}

/// Keys, validator set and genesis shared by every seed of a configuration.
pub struct Setup {
    crypto: CryptoMode,
    validators: ValidatorSet,
    /// Each validator's signer; a Byzantine validator signs only with its own.
    signers: Vec<Signer>,
    genesis_hash: Digest,
    root: BlockHeader,
    params: ConsensusParams,
    verifier: Arc<CertificateVerifier>,
    /// Each validator's pairwise MAC keys (PBFT), derived on first use.
    mac_keys: OnceLock<Vec<Arc<[MacKey]>>>,
}

const CHAIN_ID: &str = "quorate-sim";

impl Setup {
    /// Deterministic keys for `n` validators (PoPs are checked, as on a real chain), signing
    /// with `crypto`.
    pub fn new(n: usize, crypto: CryptoMode) -> Result<Self, quorate_genesis::GenesisError> {
        let keys: Vec<Arc<BlsKeyPair>> = (0..n as u64)
            .map(|i| Arc::new(BlsKeyPair::from_seed_insecure(i)))
            .collect();
        let infos = keys
            .iter()
            .enumerate()
            .map(|(i, key)| ValidatorInfo {
                name: format!("v{i}"),
                identity_key: SigningKey::from_seed_insecure(i as u64).public(),
                bls_key: key.public(),
                bls_pop: key.proof_of_possession(),
                p2p_address: format!("/memory/{i}"),
                voting_power: 1,
            })
            .collect();
        let validators = ValidatorSet::new(Epoch(0), infos)?;
        let genesis_hash = quorate_crypto::hash(Domain::Genesis, format!("sim-{n}").as_bytes());
        let root = BlockHeader::genesis(
            CHAIN_ID,
            genesis_hash,
            quorate_crypto::hash(Domain::StateLeaf, b"genesis state"),
            0,
        );
        let params = ConsensusParams {
            // Post-GST delays are at most 50 ms, so a view needs about 100 ms.
            view_timeout_ms: 200,
            view_timeout_max_ms: 1_000,
            idle_interval_ms: 0,
            // PBFT: checkpoints (and the window's garbage collection) happen within a run.
            checkpoint_interval: 16,
            pbft_window: 64,
            ..ConsensusParams::default()
        };
        let (signers, verifier) = match crypto {
            CryptoMode::Real => (
                keys.into_iter().map(Signer::bls).collect(),
                CertificateVerifier::new(),
            ),
            CryptoMode::Fast => {
                let fast = Arc::new(FastKeys::new(n));
                (
                    (0..n).map(|i| Signer::fast(fast.clone(), i)).collect(),
                    CertificateVerifier::fast(fast),
                )
            }
        };
        Ok(Setup {
            crypto,
            validators,
            signers,
            genesis_hash,
            root,
            params,
            verifier: Arc::new(verifier),
            mac_keys: OnceLock::new(),
        })
    }

    /// Validator `index`'s MAC keys, one per validator (X25519 of the identity keys, as a node
    /// derives them).
    pub(crate) fn mac_keys(&self, index: usize) -> Arc<[MacKey]> {
        let all = self.mac_keys.get_or_init(|| {
            let n = self.validators.len();
            let identities: Vec<SigningKey> =
                (0..n as u64).map(SigningKey::from_seed_insecure).collect();
            let context = MacKey::context(CHAIN_ID, &self.genesis_hash, 0);
            (0..n)
                .map(|i| {
                    identities
                        .iter()
                        .filter_map(|peer| {
                            MacKey::derive(&identities[i], &peer.public(), &context).ok()
                        })
                        .collect::<Vec<_>>()
                        .into()
                })
                .collect()
        });
        all[index].clone()
    }

    #[cfg(test)]
    pub(crate) fn signer_for_tests(&self, index: usize) -> &Signer {
        &self.signers[index]
    }

    #[cfg(test)]
    pub(crate) fn committee_for_tests(&self) -> &quorate_crypto::Committee {
        self.validators.committee()
    }

    #[cfg(test)]
    pub(crate) fn scheme_for_tests(&self) -> &crate::crypto::Scheme {
        self.verifier.scheme()
    }

    #[cfg(test)]
    pub(crate) fn genesis_hash_for_tests(&self) -> Digest {
        self.genesis_hash
    }

    pub(crate) fn engine_config(&self, index: usize, fault: FaultInjection) -> EngineConfig {
        EngineConfig {
            chain_id: CHAIN_ID.into(),
            genesis_hash: self.genesis_hash,
            validators: self.validators.clone(),
            own_index: index,
            keys: EngineKeys::signing(self.signers[index].clone()),
            params: self.params.clone(),
            root: self.root.clone(),
            root_proof: None,
            epoch_root: self.root.clone(),
            history: Vec::new(),
            verifier: self.verifier.clone(),
            fault,
        }
    }
}

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
    pub trace_hash: Digest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Honest,
    Silent,
    Equivocator,
    Twin,
    Poisoner,
    BadPayload,
    Flooder,
}

struct Node {
    index: usize,
    role: Role,
    engine: Option<SimEngine>,
    incarnation: u64,
    durable_safety: Option<Vec<u8>>,
    durable_blocks: BTreeMap<Digest, Vec<u8>>,
    volatile_blocks: Vec<(Digest, Vec<u8>)>,
    /// Header of every block this node stored (the sim application's view of payloads).
    headers: HashMap<Digest, BlockHeader>,
    /// The justify QC of every block this node stored (equivocators fork from them).
    justifies: HashMap<Digest, QuorumCert>,
    last_committed: (BlockHeader, Option<CommitProof>),
    /// The committed headers below `last_committed` a restarted engine elects leaders from.
    history: VecDeque<BlockHeader>,
    committed: u64,
    committed_after_gst: u64,
    /// Equivocators: blocks seen per view, to vote for all of them.
    seen: BTreeMap<View, Vec<(Digest, BlockHeader)>>,
    /// Equivocators: votes withheld from their own engine (see [`Withheld`]).
    withheld: Option<Withheld>,
    /// Equivocators: the last view whose votes they considered withholding.
    considered: View,
    /// Flooders: old messages received, to replay.
    replays: VecDeque<Message>,
    /// PBFT equivocators: blocks seen pre-prepared per (view, sequence number).
    pbft_seen: BTreeMap<(View, Height), Vec<Digest>>,
}

/// A simulated validator's engine: the code a node runs, of the configuration's protocol.
// One per simulated validator.
#[allow(clippy::large_enum_variant)]
enum SimEngine {
    HotStuff(HotStuff),
    Pbft(Pbft),
}

impl SimEngine {
    fn build(
        protocol: Protocol,
        config: EngineConfig,
        safety: Option<&[u8]>,
        blocks: Vec<Vec<u8>>,
    ) -> Result<SimEngine, BuildError> {
        Ok(match protocol {
            Protocol::HotStuff => SimEngine::HotStuff(HotStuff::recover(config, safety, blocks)?),
            Protocol::Pbft => SimEngine::Pbft(Pbft::recover(config, safety, blocks)?),
        })
    }

    fn engine(&self) -> &dyn Engine {
        match self {
            SimEngine::HotStuff(engine) => engine,
            SimEngine::Pbft(engine) => engine,
        }
    }

    fn engine_mut(&mut self) -> &mut dyn Engine {
        match self {
            SimEngine::HotStuff(engine) => engine,
            SimEngine::Pbft(engine) => engine,
        }
    }

    /// HotStuff's adversaries read their own engine's state.
    fn hotstuff(&self) -> Option<&HotStuff> {
        match self {
            SimEngine::HotStuff(engine) => Some(engine),
            SimEngine::Pbft(_) => None,
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: Message,
        bytes: Digest,
    },
    Timer {
        node: usize,
        incarnation: u64,
        timer: TimerId,
    },
    Local {
        node: usize,
        incarnation: u64,
        input: Input,
    },
    Crash {
        node: usize,
        restart_at: u64,
    },
    Restart {
        node: usize,
    },
    Repartition,
}

struct Scheduled {
    time: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on (time, seq).
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

struct World<'a> {
    setup: &'a Setup,
    config: &'a SimConfig,
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    gst: u64,
    end: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    by_index: Vec<Vec<usize>>,
    /// Partition side of each node before GST; `None`: no partition.
    partition: Option<Vec<bool>>,
    committed_global: BTreeMap<Height, Digest>,
    violation: Option<String>,
    /// The lowest high_qc view each validator reported in a timeout for a view.
    timeout_high_qc: HashMap<(View, usize), View>,
    tc_proposals: u64,
    tc_proposals_below_high_qc: u64,
    messages: u64,
    bytes: u64,
    /// Blocks given a checkpoint certificate after their commit (PBFT).
    certified: u64,
    trace: Hasher,
}

/// Runs one seed.
pub fn run_seed(setup: &Setup, config: &SimConfig, seed: u64) -> SeedReport {
    let mut world = World::new(setup, config, seed);
    world.run();
    world.report()
}

impl<'a> World<'a> {
    fn new(setup: &'a Setup, config: &'a SimConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let n = config.validators;
        let gst = if config.asynchrony {
            rng.range(0, config.gst_max_ms)
        } else {
            0
        };
        let byzantine = rng.choose(n, config.byzantine.min(n));
        let mut nodes = Vec::new();
        let mut by_index = vec![Vec::new(); n];
        for (index, copies_of_index) in by_index.iter_mut().enumerate() {
            let role = if byzantine.contains(&index) {
                let behaviour = match config.behaviour {
                    Behaviour::Random if config.protocol == Protocol::Pbft => {
                        match rng.range(0, 2) {
                            0 => Behaviour::Silent,
                            1 => Behaviour::Equivocate,
                            _ => Behaviour::Twins,
                        }
                    }
                    Behaviour::Random => match rng.range(0, 5) {
                        0 => Behaviour::Silent,
                        1 => Behaviour::Equivocate,
                        2 => Behaviour::Twins,
                        3 => Behaviour::Poison,
                        4 => Behaviour::BadPayload,
                        _ => Behaviour::Flood,
                    },
                    other => other,
                };
                match behaviour {
                    Behaviour::Silent => Role::Silent,
                    Behaviour::Equivocate => Role::Equivocator,
                    Behaviour::Poison => Role::Poisoner,
                    Behaviour::BadPayload => Role::BadPayload,
                    Behaviour::Flood => Role::Flooder,
                    Behaviour::Twins | Behaviour::Random => Role::Twin,
                }
            } else {
                Role::Honest
            };
            let copies = if role == Role::Twin { 2 } else { 1 };
            for _ in 0..copies {
                copies_of_index.push(nodes.len());
                nodes.push(Node {
                    index,
                    role,
                    engine: None,
                    incarnation: 0,
                    durable_safety: None,
                    durable_blocks: BTreeMap::new(),
                    volatile_blocks: Vec::new(),
                    headers: HashMap::from([(
                        setup.root.hash().unwrap_or(Digest::ZERO),
                        setup.root.clone(),
                    )]),
                    justifies: HashMap::new(),
                    last_committed: (setup.root.clone(), None),
                    history: VecDeque::new(),
                    committed: 0,
                    committed_after_gst: 0,
                    seen: BTreeMap::new(),
                    withheld: None,
                    considered: View(0),
                    replays: VecDeque::new(),
                    pbft_seen: BTreeMap::new(),
                });
            }
        }
        World {
            setup,
            config,
            seed,
            rng,
            now: 0,
            seq: 0,
            gst,
            end: gst + config.after_gst_ms,
            queue: BinaryHeap::new(),
            nodes,
            by_index,
            partition: None,
            committed_global: BTreeMap::new(),
            violation: None,
            timeout_high_qc: HashMap::new(),
            tc_proposals: 0,
            tc_proposals_below_high_qc: 0,
            messages: 0,
            bytes: 0,
            certified: 0,
            trace: Hasher::new(Domain::Batch),
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    fn run(&mut self) {
        for node in 0..self.nodes.len() {
            if self.nodes[node].role == Role::Silent {
                continue;
            }
            self.boot(node);
        }
        if self.config.asynchrony {
            self.schedule(0, Event::Repartition);
            // Crash one honest validator for a while before GST, in half the seeds.
            if self.gst > 200 && self.rng.chance(0.5) {
                let honest: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].role == Role::Honest)
                    .collect();
                if !honest.is_empty() {
                    let victim = honest[self.rng.range(0, honest.len() as u64 - 1) as usize];
                    let at = self.rng.range(0, self.gst - 100);
                    let restart_at = (at + self.rng.range(100, 1_000)).min(self.gst);
                    self.schedule(
                        at,
                        Event::Crash {
                            node: victim,
                            restart_at,
                        },
                    );
                }
            }
        }
        while let Some(next) = self.queue.pop() {
            if next.time > self.end {
                break;
            }
            self.now = next.time;
            self.dispatch(next.event);
        }
    }

    fn boot(&mut self, node: usize) {
        let index = self.nodes[node].index;
        let mut config = self.setup.engine_config(index, self.config.fault);
        let (root, root_proof) = self.nodes[node].last_committed.clone();
        if root_proof.is_some() {
            config.root = root;
            config.root_proof = root_proof;
            config.history = self.nodes[node].history.iter().cloned().collect();
        }
        config.epoch_root = self.setup.root.clone();
        if self.config.protocol == Protocol::Pbft {
            config.keys.mac_keys = self.setup.mac_keys(index);
        }
        let blocks: Vec<Vec<u8>> = self.nodes[node].durable_blocks.values().cloned().collect();
        let safety = self.nodes[node].durable_safety.clone();
        let built = SimEngine::build(self.config.protocol, config, safety.as_deref(), blocks);
        let engine = match built {
            Ok(engine) => engine,
            Err(error) => {
                self.violation
                    .get_or_insert(format!("node {node} cannot recover: {error}"));
                return;
            }
        };
        self.nodes[node].engine = Some(engine);
        let actions = self.nodes[node]
            .engine
            .as_mut()
            .map(|e| e.engine_mut().start())
            .unwrap_or_default();
        self.execute(node, actions);
    }

    fn dispatch(&mut self, event: Event) {
        self.trace.update(&self.now.to_le_bytes());
        match event {
            Event::Deliver {
                to,
                from,
                message,
                bytes,
            } => {
                self.trace
                    .update(&[0, to as u8, from as u8])
                    .update(&bytes.0);
                match self.nodes[to].role {
                    Role::Equivocator if self.config.protocol == Protocol::Pbft => {
                        self.pbft_remember(to, &message);
                    }
                    Role::Equivocator => {
                        self.remember(to, &message);
                        if let Message::HotStuff(HsMessage::Vote(vote)) = &message {
                            if self.withhold(to, from, vote) {
                                return;
                            }
                        }
                    }
                    Role::Poisoner => {
                        if let Message::HotStuff(HsMessage::Proposal(proposal)) = &message {
                            self.poison_votes(to, proposal);
                        }
                    }
                    Role::Flooder => self.flood_remember(to, &message),
                    Role::Honest | Role::Silent | Role::Twin | Role::BadPayload => {}
                }
                self.feed(to, Input::Message { from, message });
            }
            Event::Timer {
                node,
                incarnation,
                timer,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    let (kind, a, b) = match timer {
                        TimerId::View(view) => (0u8, view.0, 0),
                        TimerId::Progress { view, mark } => (1, view.0, mark),
                        TimerId::NewView(view) => (2, view.0, 0),
                        TimerId::Fetch { attempt } => (3, attempt, 0),
                    };
                    self.trace
                        .update(&[1, node as u8, kind])
                        .update(&a.to_le_bytes())
                        .update(&b.to_le_bytes());
                    self.feed(node, Input::Timer(timer));
                }
            }
            Event::Local {
                node,
                incarnation,
                input,
            } => {
                if self.nodes[node].incarnation == incarnation {
                    self.trace.update(&[2, node as u8]);
                    self.feed(node, input);
                }
            }
            Event::Crash { node, restart_at } => {
                self.trace.update(&[3, node as u8]);
                let n = &mut self.nodes[node];
                n.engine = None;
                n.incarnation += 1;
                n.volatile_blocks.clear();
                let delay = restart_at.saturating_sub(self.now);
                self.schedule(delay, Event::Restart { node });
            }
            Event::Restart { node } => {
                self.trace.update(&[4, node as u8]);
                self.boot(node);
            }
            Event::Repartition => {
                if self.now >= self.gst {
                    self.partition = None;
                    return;
                }
                let nodes = self.nodes.len();
                self.partition = match self.rng.range(0, 4) {
                    // A random split.
                    0 | 1 => {
                        let mut sides: Vec<bool> =
                            (0..nodes).map(|_| self.rng.chance(0.5)).collect();
                        // Twins always land on opposite sides.
                        for copies in &self.by_index {
                            if copies.len() == 2 {
                                sides[copies[0]] = false;
                                sides[copies[1]] = true;
                            }
                        }
                        Some(sides)
                    }
                    // One node cut off from all others.
                    2 => {
                        let alone = self.rng.range(0, nodes as u64 - 1) as usize;
                        Some((0..nodes).map(|i| i == alone).collect())
                    }
                    _ => None,
                };
                let next = self.rng.range(100, 600).min(self.gst - self.now);
                self.schedule(next.max(1), Event::Repartition);
            }
        }
    }

    fn feed(&mut self, node: usize, input: Input) {
        let Some(engine) = self.nodes[node].engine.as_mut() else {
            return;
        };
        let actions = engine.engine_mut().handle(input);
        self.execute(node, actions);
    }

    fn execute(&mut self, node: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send { to, message } => self.send(node, to, message),
                Action::Broadcast { message } => self.broadcast(node, message),
                Action::SetTimer { timer, duration_ms } => {
                    let incarnation = self.nodes[node].incarnation;
                    self.schedule(
                        duration_ms,
                        Event::Timer {
                            node,
                            incarnation,
                            timer,
                        },
                    );
                }
                Action::PersistSafety { bytes } => {
                    let n = &mut self.nodes[node];
                    n.durable_safety = Some(bytes);
                    // A sync makes everything written before it durable too.
                    for (hash, block) in n.volatile_blocks.drain(..) {
                        n.durable_blocks.insert(hash, block);
                    }
                }
                Action::StoreBlock {
                    hash,
                    header,
                    bytes,
                } => {
                    self.nodes[node].headers.insert(hash, header);
                    if self.nodes[node].role != Role::Honest
                        && self.config.protocol == Protocol::HotStuff
                    {
                        // A Byzantine validator reads its own engine's blocks (its adversary
                        // code is HotStuff's).
                        if let Ok(block) = codec::decode::<HsBlock>(&bytes) {
                            self.nodes[node].justifies.insert(hash, block.justify);
                        }
                    }
                    self.nodes[node].volatile_blocks.push((hash, bytes));
                }
                Action::RequestPayload { view, parent, .. } => {
                    let payload = self.payload(node, view, &parent, b"");
                    let incarnation = self.nodes[node].incarnation;
                    let delay = self.rng.range(0, 2);
                    self.schedule(
                        delay,
                        Event::Local {
                            node,
                            incarnation,
                            input: Input::PayloadReady { view, payload },
                        },
                    );
                }
                Action::CheckPayload { header } => {
                    let valid =
                        self.nodes[node]
                            .headers
                            .get(&header.parent)
                            .is_some_and(|parent| {
                                state_root(&parent.state_root, &header.payload_digest)
                                    == header.state_root
                            });
                    let block = header.hash().unwrap_or(Digest::ZERO);
                    let incarnation = self.nodes[node].incarnation;
                    let delay = self.rng.range(0, 2);
                    self.schedule(
                        delay,
                        Event::Local {
                            node,
                            incarnation,
                            input: Input::PayloadChecked { block, valid },
                        },
                    );
                }
                Action::Commit { header, proof } => self.commit(node, header, proof),
                Action::Certify { header, proof } => self.certify(node, header, proof),
                // The simulated network does not disconnect anyone: the engine's own penalty
                // is what is tested.
                Action::Misbehaved { .. } => {}
            }
        }
    }

    fn payload(
        &mut self,
        node: usize,
        view: View,
        parent: &BlockHeader,
        salt: &[u8],
    ) -> PayloadProposal {
        let mut hasher = Hasher::new(Domain::Payload);
        hasher
            .update(&self.seed.to_le_bytes())
            .update(&(node as u64).to_le_bytes())
            .update(&view.0.to_le_bytes())
            .update(salt);
        let payload_digest = hasher.finalize();
        PayloadProposal {
            payload_digest,
            state_root: state_root(&parent.state_root, &payload_digest),
            timestamp_ms: self.now,
            empty: false,
        }
    }

    fn commit(&mut self, node: usize, header: BlockHeader, proof: CommitProof) {
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
        if previous.0.height.0 > 0 {
            n.history.push_back(previous.0);
        }
        while n.history.len() > REPUTATION_WINDOW_MAX {
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
    fn certify(&mut self, node: usize, header: BlockHeader, proof: CommitProof) {
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
            &self.setup.validators,
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
            n.last_committed.1 = Some(proof);
        }
        self.certified += 1;
    }

    fn delay(&mut self) -> u64 {
        if self.now < self.gst {
            self.rng.range(1, 300)
        } else {
            self.rng.range(5, 50)
        }
    }

    fn deliver(&mut self, from_node: usize, to_node: usize, message: Message) {
        if let Some(fingerprint) = fingerprint(&message) {
            self.deliver_fingerprinted(from_node, to_node, message, fingerprint);
        }
    }

    /// [`World::deliver`] of a message whose fingerprint is known (a broadcast encodes once).
    fn deliver_fingerprinted(
        &mut self,
        from_node: usize,
        to_node: usize,
        message: Message,
        (length, bytes): (u64, Digest),
    ) {
        self.messages += 1;
        self.bytes += length;
        if let Some(sides) = &self.partition {
            if sides[from_node] != sides[to_node] {
                return;
            }
        }
        // Links lose messages until GST; after it the network is healed (eventual synchrony:
        // every message arrives within the bound), which is when liveness is owed.
        if self.now < self.gst && self.rng.chance(self.config.drop_probability) {
            return;
        }
        let delay = self.delay();
        let from = self.nodes[from_node].index;
        self.schedule(
            delay,
            Event::Deliver {
                to: to_node,
                from,
                message,
                bytes,
            },
        );
    }

    /// What a Byzantine validator sends in place of what its engine wants sent (`None`:
    /// nothing); an honest validator's message unchanged.
    fn outgoing(&mut self, node: usize, message: Message) -> Option<Message> {
        match self.nodes[node].role {
            Role::Poisoner => self.poison_outgoing(node, message),
            Role::BadPayload => self.bad_payload_outgoing(message),
            Role::Flooder => {
                self.flood(node, &message);
                None
            }
            Role::Honest | Role::Silent | Role::Equivocator | Role::Twin => Some(message),
        }
    }

    /// To every validator but the sender's own index.
    fn deliver_to_others(&mut self, node: usize, message: Message) {
        let index = self.nodes[node].index;
        let Some(fingerprint) = fingerprint(&message) else {
            return;
        };
        for target in 0..self.nodes.len() {
            if self.nodes[target].index != index {
                self.deliver_fingerprinted(node, target, message.clone(), fingerprint);
            }
        }
    }

    fn send(&mut self, node: usize, to: usize, message: Message) {
        let Some(message) = self.outgoing(node, message) else {
            return;
        };
        if self.nodes[node].role == Role::Equivocator {
            if let Message::HotStuff(HsMessage::Vote(vote)) = &message {
                self.equivocating_votes(node, to, vote);
            }
            if self.config.protocol == Protocol::Pbft
                && self.pbft_equivocate_send(node, to, &message)
            {
                return;
            }
        }
        let Some(fingerprint) = fingerprint(&message) else {
            return;
        };
        for target in self.by_index[to].clone() {
            if target != node {
                self.deliver_fingerprinted(node, target, message.clone(), fingerprint);
            }
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
    fn check_tc_proposal(&mut self, node: usize, message: &Message) {
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

    fn broadcast(&mut self, node: usize, message: Message) {
        let Some(message) = self.outgoing(node, message) else {
            return;
        };
        self.check_tc_proposal(node, &message);
        let index = self.nodes[node].index;
        let targets: Vec<usize> = (0..self.nodes.len())
            .filter(|&t| self.nodes[t].index != index)
            .collect();
        if self.nodes[node].role == Role::Equivocator {
            let handled = match self.config.protocol {
                Protocol::HotStuff => self.equivocate_proposal(node, &message, &targets),
                Protocol::Pbft => self.pbft_equivocate(node, &message, &targets),
            };
            if handled {
                return;
            }
        }
        let Some(fingerprint) = fingerprint(&message) else {
            return;
        };
        for target in targets {
            self.deliver_fingerprinted(node, target, message.clone(), fingerprint);
        }
    }

    fn report(self) -> SeedReport {
        let honest: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.role == Role::Honest)
            .collect();
        let live = honest.iter().all(|n| n.committed_after_gst > 0);
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
            trace_hash: self.trace.finalize(),
        }
    }
}

/// A message's encoded length (what the network carries) and the digest of its encoding (what
/// the trace records), computed once however many validators it goes to.
fn fingerprint(message: &Message) -> Option<(u64, Digest)> {
    let encoded = codec::encode(message).ok()?;
    Some((
        encoded.len() as u64,
        quorate_crypto::hash(Domain::Batch, &encoded),
    ))
}

fn state_root(parent: &Digest, payload: &Digest) -> Digest {
    let mut hasher = Hasher::new(Domain::StateLeaf);
    hasher.update(&parent.0).update(&payload.0);
    hasher.finalize()
}

#[cfg(test)]
mod tests;
