//! What a simulation runs: the Byzantine behaviours, the signature backend, one configuration's
//! parameters, and the keys, validator set and genesis its seeds share.

use super::*;

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
            Protocol::Pbft => self != Behaviour::Poison,
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
    /// With asynchrony: the share of seeds in which every honest validator crashes at one
    /// instant before GST and all restart together.
    pub restart_all: f64,
    /// Reconfigurations: each seed changes the validator set at random heights (a spare honest
    /// validator joins and leaves, honest validators' power changes) while the faults run.
    pub reconfigure: bool,
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
            restart_all: 0.0,
            reconfigure: false,
        }
    }
}

/// Keys, validator set and genesis shared by every seed of a configuration.
pub struct Setup {
    pub(super) crypto: CryptoMode,
    /// Epoch 0's set: validators 0..n.
    pub(super) validators: ValidatorSet,
    /// Validators 0..=n: the set's and a spare one that reconfigurations add and remove. A
    /// validator's index is its place here in every epoch (sets are prefixes of it).
    pub(super) universe: Vec<ValidatorInfo>,
    /// Each validator's signer; a Byzantine validator signs only with its own.
    pub(super) signers: Vec<Signer>,
    pub(super) genesis_hash: Digest,
    pub(super) root: BlockHeader,
    pub(super) params: ConsensusParams,
    pub(super) verifier: Arc<CertificateVerifier>,
    /// Each validator's pairwise MAC keys (PBFT), derived on first use.
    pub(super) mac_keys: OnceLock<Vec<Arc<[MacKey]>>>,
    /// Sets of later epochs built so far (building one checks every proof of possession).
    pub(super) epoch_sets: std::sync::Mutex<HashMap<(u64, Vec<u64>), ValidatorSet>>,
    /// MAC keys of later epochs by (epoch, set size, validator).
    pub(super) epoch_mac_keys: std::sync::Mutex<HashMap<EpochMember, Arc<[MacKey]>>>,
}

pub(super) const CHAIN_ID: &str = "quorate-sim";

/// (epoch, size of its set, validator index).
type EpochMember = (u64, usize, usize);

impl Setup {
    /// Deterministic keys for `n` validators and a spare (PoPs are checked, as on a real
    /// chain), signing with `crypto`.
    pub fn new(n: usize, crypto: CryptoMode) -> Result<Self, quorate_genesis::GenesisError> {
        let keys: Vec<Arc<BlsKeyPair>> = (0..=n as u64)
            .map(|i| Arc::new(BlsKeyPair::from_seed_insecure(i)))
            .collect();
        let universe: Vec<ValidatorInfo> = keys
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
        let validators = ValidatorSet::new(Epoch(0), universe[..n].to_vec())?;
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
                let fast = Arc::new(FastKeys::new(n + 1));
                (
                    (0..=n).map(|i| Signer::fast(fast.clone(), i)).collect(),
                    CertificateVerifier::fast(fast),
                )
            }
        };
        Ok(Setup {
            crypto,
            validators,
            universe,
            signers,
            genesis_hash,
            root,
            params,
            verifier: Arc::new(verifier),
            mac_keys: OnceLock::new(),
            epoch_sets: std::sync::Mutex::new(HashMap::new()),
            epoch_mac_keys: std::sync::Mutex::new(HashMap::new()),
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

    /// Validator `index`'s MAC keys in `epoch`, whose set is `set` (fresh keys per epoch, as
    /// a node derives them).
    pub(super) fn epoch_mac_keys(
        &self,
        epoch: u64,
        set: &ValidatorSet,
        index: usize,
    ) -> Arc<[MacKey]> {
        if epoch == 0 {
            return self.mac_keys(index);
        }
        let key = (epoch, set.len(), index);
        let mut cache = self
            .epoch_mac_keys
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(keys) = cache.get(&key) {
            return keys.clone();
        }
        let context = MacKey::context(CHAIN_ID, &self.genesis_hash, epoch);
        let own = SigningKey::from_seed_insecure(index as u64);
        let keys: Arc<[MacKey]> = set
            .validators()
            .iter()
            .filter_map(|peer| MacKey::derive(&own, &peer.identity_key, &context).ok())
            .collect::<Vec<_>>()
            .into();
        cache.insert(key, keys.clone());
        keys
    }

    /// Validator set of `epoch` with the members `0..members` of the universe and `powers`.
    pub(super) fn epoch_set(
        &self,
        epoch: u64,
        powers: &[u64],
    ) -> Result<ValidatorSet, quorate_genesis::GenesisError> {
        let key = (epoch, powers.to_vec());
        let mut sets = self.epoch_sets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = sets.get(&key) {
            return Ok(set.clone());
        }
        let infos = self
            .universe
            .iter()
            .zip(powers)
            .map(|(info, power)| ValidatorInfo {
                voting_power: *power,
                ..info.clone()
            })
            .collect();
        let set = ValidatorSet::new(Epoch(epoch), infos)?;
        sets.insert(key, set.clone());
        Ok(set)
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

    /// A freshly started engine of `protocol` for validator `index` of this setup, as the node
    /// builds one (MAC keys included for PBFT): what a fuzz target feeds decoded messages to.
    pub fn fresh_engine(
        &self,
        protocol: Protocol,
        index: usize,
    ) -> Result<Box<dyn Engine + Send>, BuildError> {
        let mut config = self.engine_config(index, FaultInjection::None);
        if protocol == Protocol::Pbft {
            config.keys.mac_keys = self.mac_keys(index);
        }
        crate::build(protocol, config, Persisted::default())
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
