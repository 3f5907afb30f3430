//! A simulated validator: its role, its engine (either protocol's, the code a node runs), and
//! its storage -- what it synced survives a crash, what it only wrote does not.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Honest,
    Silent,
    Equivocator,
    Twin,
    Poisoner,
    BadPayload,
    Flooder,
}

pub(super) struct Node {
    pub(super) index: usize,
    pub(super) role: Role,
    pub(super) engine: Option<SimEngine>,
    pub(super) incarnation: u64,
    /// Between a crash and its restart.
    pub(super) crashed: bool,
    /// The epoch it is in, and that epoch's root (the last block of the one before).
    pub(super) epoch: usize,
    pub(super) epoch_root: BlockHeader,
    pub(super) durable_safety: Option<Vec<u8>>,
    pub(super) durable_blocks: BTreeMap<Digest, Vec<u8>>,
    pub(super) volatile_blocks: Vec<(Digest, Vec<u8>)>,
    /// Header of every block this node stored (the sim application's view of payloads).
    pub(super) headers: HashMap<Digest, BlockHeader>,
    /// The justify QC of every block this node stored (equivocators fork from them).
    pub(super) justifies: HashMap<Digest, QuorumCert>,
    pub(super) last_committed: (BlockHeader, Option<CommitProof>),
    /// The committed headers below `last_committed` a restarted engine elects leaders from.
    pub(super) history: VecDeque<BlockHeader>,
    pub(super) committed: u64,
    pub(super) committed_after_gst: u64,
    /// Equivocators: blocks seen per view, to vote for all of them.
    pub(super) seen: BTreeMap<View, Vec<(Digest, BlockHeader)>>,
    /// Equivocators: votes withheld from their own engine (see [`Withheld`]).
    pub(super) withheld: Option<Withheld>,
    /// Equivocators: the last view whose votes they considered withholding.
    pub(super) considered: View,
    /// Flooders: old messages received, to replay.
    pub(super) replays: VecDeque<Message>,
    /// PBFT equivocators: blocks seen pre-prepared per (view, sequence number).
    pub(super) pbft_seen: BTreeMap<(View, Height), Vec<Digest>>,
    /// The epoch's last block, committed only through a later block's hash chain, with the
    /// old epoch's blocks the engine committed above it: the epoch ends once a proof commits
    /// it by itself (as the node's executor does; `CommitProof::Descendant`).
    pub(super) closing: Option<crate::EpochClosing>,
}

impl Node {
    /// Validator `index` with `role`, at the genesis root, not started.
    pub(super) fn new(index: usize, role: Role, setup: &Setup) -> Node {
        Node {
            index,
            role,
            engine: None,
            incarnation: 0,
            crashed: false,
            epoch: 0,
            epoch_root: setup.root.clone(),
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
            closing: None,
        }
    }
}

/// A simulated validator's engine: the code a node runs, of the configuration's protocol.
// One per simulated validator.
#[allow(clippy::large_enum_variant)]
pub(super) enum SimEngine {
    HotStuff(HotStuff),
    Pbft(Pbft),
}

impl SimEngine {
    pub(super) fn build(
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

    pub(super) fn engine(&self) -> &dyn Engine {
        match self {
            SimEngine::HotStuff(engine) => engine,
            SimEngine::Pbft(engine) => engine,
        }
    }

    pub(super) fn engine_mut(&mut self) -> &mut dyn Engine {
        match self {
            SimEngine::HotStuff(engine) => engine,
            SimEngine::Pbft(engine) => engine,
        }
    }

    /// HotStuff's adversaries read their own engine's state.
    pub(super) fn hotstuff(&self) -> Option<&HotStuff> {
        match self {
            SimEngine::HotStuff(engine) => Some(engine),
            SimEngine::Pbft(_) => None,
        }
    }
}

impl World<'_> {
    pub(super) fn boot(&mut self, node: usize) {
        let index = self.nodes[node].index;
        if self.nodes[node].role == Role::Silent || !self.is_member(node) {
            return; // not in this epoch's set: no engine (it follows the chain by ledger sync)
        }
        let epoch = self.nodes[node].epoch;
        let set = self.plan(epoch).set.clone();
        let mut config = self.setup.engine_config(index, self.config.fault);
        let epoch_root = self.nodes[node].epoch_root.clone();
        let (root, root_proof) = self.nodes[node].last_committed.clone();
        if root_proof.is_some() && root.height > epoch_root.height {
            config.root = root;
            config.root_proof = root_proof;
            // Only this epoch's blocks: a proposer index means nothing in another set.
            config.history = self.nodes[node]
                .history
                .iter()
                .filter(|h| h.height > epoch_root.height)
                .cloned()
                .collect();
        } else {
            config.root = epoch_root.clone();
        }
        config.epoch_root = epoch_root;
        if self.config.protocol == Protocol::Pbft {
            config.keys.mac_keys = self.setup.epoch_mac_keys(epoch as u64, &set, index);
        }
        config.validators = set;
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
}
