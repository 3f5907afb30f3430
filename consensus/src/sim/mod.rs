//! The deterministic network simulator.
//!
//! Runs the real engines (the code the node runs, of either protocol) on a simulated network
//! where the seed is the only entropy: random delays, drops, partitions that heal at a global
//! stabilisation time (GST), crashes and restarts from persisted state (what was not synced is
//! lost), and Byzantine validators (`silent`, `equivocate`, `twins`, `poison`, `bad-payload`,
//! `flood`, or a `random` mix). Time is simulated milliseconds, so thousands of schedules run per
//! minute.
//!
//! Checked across all honest validators: no two commit different blocks at one height (safety),
//! and every one of them commits again after GST (liveness). The same seed always gives the same
//! trace, whose hash [`SeedReport::trace_hash`] lets a test compare two runs.
//!
//! Layout: `config` (behaviours, configurations, shared keys), `scheduler` (the event queue and
//! run loop), `node` (a validator's engine and storage), `network` (delays, drops, partitions),
//! `checker` (safety, order, certificates, the seed's report), `summary` (many seeds); this file
//! holds the world and feeds engines their inputs. Byzantine behaviours live in one module per
//! protocol: `hotstuff/` (equivocate, poison, bad-payload, flood) and `pbft/` (equivocate,
//! bad-payload, flood);
//! `silent` and `twins` need no adversary code.

mod checker;
mod config;
mod epochs;
mod hotstuff;
mod network;
mod node;
mod pbft;
mod rng;
mod scheduler;
mod summary;

pub use checker::SeedReport;
pub use config::{Behaviour, CryptoMode, Setup, SimConfig};
pub use rng::Rng;
pub use summary::{run_seeds, Summary};

use epochs::EpochPlan;
use hotstuff::Withheld;
use node::{Node, Role, SimEngine};
use scheduler::{Event, Scheduled};

use crate::crypto::{FastKeys, Signer};
use crate::hotstuff::{HotStuff, HsBlock, HsMessage, Proposal, Vote, VoteAggregator};
use crate::pbft::Pbft;
use crate::{
    Action, BuildError, CertificateVerifier, CommitProof, Engine, EngineConfig, EngineKeys,
    FaultInjection, Input, Message, PayloadProposal, Persisted, TimerId,
};
use quorate_crypto::{BlsKeyPair, Digest, Domain, Hasher, MacKey, SigningKey};
use quorate_genesis::{ConsensusParams, Protocol, ValidatorInfo, ValidatorSet};
use quorate_ledger::{codec, BlockHeader, Epoch, Height, QuorumCert, TimeoutCert, View, VoteData};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

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
    /// Each epoch's set and last height (one epoch unless the config reconfigures).
    epochs: Vec<EpochPlan>,
    /// The last block of each finished epoch, as honest validators committed it, and when the
    /// first of them did.
    boundaries: Vec<(BlockHeader, u64)>,
    violation: Option<String>,
    /// The lowest high_qc view each validator reported in a timeout for a view.
    timeout_high_qc: HashMap<(View, usize), View>,
    tc_proposals: u64,
    tc_proposals_below_high_qc: u64,
    messages: u64,
    bytes: u64,
    /// Blocks given a checkpoint certificate after their commit (PBFT).
    certified: u64,
    /// See [`SeedReport::descendant_proofs`].
    descendant_proofs: u64,
    trace: Hasher,
    /// Messages kept for [`sample_messages`], at most this many.
    samples: Vec<Message>,
    sample_limit: usize,
}

/// Runs one seed.
pub fn run_seed(setup: &Setup, config: &SimConfig, seed: u64) -> SeedReport {
    let mut world = World::new(setup, config, seed);
    world.run();
    world.report()
}

/// Up to `limit` of the messages one seed's validators (honest and Byzantine) send, spread over
/// the run: real, validly signed traffic of every kind, to seed the fuzz targets' corpus.
pub fn sample_messages(setup: &Setup, config: &SimConfig, seed: u64, limit: usize) -> Vec<Message> {
    let mut world = World::new(setup, config, seed);
    world.sample_limit = limit;
    world.run();
    world.samples
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
                        match rng.range(0, 4) {
                            0 => Behaviour::Silent,
                            1 => Behaviour::Equivocate,
                            2 => Behaviour::Twins,
                            3 => Behaviour::BadPayload,
                            _ => Behaviour::Flood,
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
                nodes.push(Node::new(index, role, setup));
            }
        }
        if config.reconfigure {
            // The spare: honest, in no set until a reconfiguration adds it.
            by_index.push(vec![nodes.len()]);
            nodes.push(Node::new(n, Role::Honest, setup));
        }
        let mut world = World {
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
            epochs: Vec::new(),
            boundaries: Vec::new(),
            violation: None,
            timeout_high_qc: HashMap::new(),
            tc_proposals: 0,
            tc_proposals_below_high_qc: 0,
            messages: 0,
            bytes: 0,
            certified: 0,
            descendant_proofs: 0,
            trace: Hasher::new(Domain::Batch),
            samples: Vec::new(),
            sample_limit: 0,
        };
        world.epochs = world.plan_epochs(&byzantine);
        world
    }

    fn dispatch(&mut self, event: Event) {
        self.trace.update(&self.now.to_le_bytes());
        match event {
            Event::Deliver {
                to,
                from,
                epoch,
                message,
                bytes,
            } => {
                self.trace
                    .update(&[0, to as u8, from as u8])
                    .update(&bytes.0);
                // The runtime delivers a message only within the epoch it was sent in; a
                // validator that has left that epoch answers with the proof that it ended.
                if epoch != self.nodes[to].epoch {
                    if epoch < self.nodes[to].epoch && self.nodes[to].role != Role::Silent {
                        for node in self.by_index[from].clone() {
                            let delay = self.delay();
                            self.schedule(delay, Event::EpochProof { node });
                        }
                    }
                    return;
                }
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
                n.crashed = true;
                n.volatile_blocks.clear();
                let delay = restart_at.saturating_sub(self.now);
                self.schedule(delay, Event::Restart { node });
            }
            Event::Restart { node } => {
                self.trace.update(&[4, node as u8]);
                self.nodes[node].crashed = false;
                self.boot(node);
            }
            Event::LedgerSync => self.ledger_sync(),
            Event::EpochProof { node } => {
                self.trace.update(&[6, node as u8]);
                self.take_epoch_proof(node);
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
        let incarnation = self.nodes[node].incarnation;
        for action in actions {
            // The engine that asked was stopped (its epoch ended at a commit above): the rest
            // of what it asked is not done.
            if self.nodes[node].incarnation != incarnation {
                break;
            }
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
}

fn state_root(parent: &Digest, payload: &Digest) -> Digest {
    let mut hasher = Hasher::new(Domain::StateLeaf);
    hasher.update(&parent.0).update(&payload.0);
    hasher.finalize()
}

#[cfg(test)]
mod tests;
