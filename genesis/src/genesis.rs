//! `genesis.json`: the chain's identity, parameters, first validator set and balances.

use crate::error::io;
use crate::{GenesisError, ValidatorSet};
use quorate_crypto::{Address, Digest, Domain};
use quorate_ledger::{
    codec, Epoch, EpochRules, Governance, GovernanceConfig, ValidatorInfo, MAX_CHAIN_ID_BYTES,
};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;

/// Which consensus protocol the chain runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[serde(rename = "hotstuff")]
    HotStuff,
    Pbft,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "hotstuff" => Ok(Protocol::HotStuff),
            "pbft" => Ok(Protocol::Pbft),
            other => Err(format!(
                "unknown protocol {other:?} (expected hotstuff or pbft)"
            )),
        }
    }
}

impl Protocol {
    /// The name genesis files and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HotStuff => "hotstuff",
            Protocol::Pbft => "pbft",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Consensus parameters, the same on every validator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusParams {
    /// First view timeout; doubles on each consecutive timeout up to `view_timeout_max_ms`.
    pub view_timeout_ms: u64,
    pub view_timeout_max_ms: u64,
    /// The heartbeat: a leader with nothing to propose proposes an empty block after this long.
    /// 0 (the default): none, so an idle chain adds no blocks once its last payload is committed
    /// (as CometBFT's `create_empty_blocks = false`); blocks that an uncommitted payload waits on
    /// are proposed at once either way.
    pub idle_interval_ms: u64,
    pub max_block_transactions: u32,
    pub max_batch_transactions: u32,
    /// A batch is sealed once it is this old even if not full.
    pub max_batch_delay_ms: u64,
    /// PBFT: a checkpoint every this many sequence numbers.
    pub checkpoint_interval: u64,
    /// PBFT: how many sequence numbers past the last stable checkpoint may be in flight.
    pub pbft_window: u64,
    /// Whether unsigned opaque payloads are ordered (benchmark networks only).
    pub allow_opaque_payloads: bool,
    /// Whether the validator set can change on chain (`Reconfigure` transactions). A genesis
    /// written before reconfiguration existed has no such field and keeps its fixed set: a node
    /// upgraded in place executes the chain as the old version did.
    #[serde(default)]
    pub allow_reconfiguration: bool,
    pub epoch_rules: EpochRules,
}

/// The largest PBFT `checkpoint_interval`: an epoch's last block is proven committed through the
/// first checkpoint at or above it, within a bounded descendant proof.
pub const MAX_CHECKPOINT_INTERVAL: u64 = 1000;
/// The most validators an epoch may have (signer bitmaps index them with 16 bits).
pub const MAX_VALIDATORS: u32 = u16::MAX as u32;
/// The longest wait between a change's approval and the block that ends the epoch.
pub const MAX_RECONFIGURATION_DELAY: u64 = 100_000;

impl Default for ConsensusParams {
    fn default() -> Self {
        ConsensusParams {
            view_timeout_ms: 1_000,
            view_timeout_max_ms: 30_000,
            idle_interval_ms: 0,
            max_block_transactions: 10_000,
            max_batch_transactions: 500,
            max_batch_delay_ms: 20,
            checkpoint_interval: 128,
            pbft_window: 256,
            allow_opaque_payloads: false,
            allow_reconfiguration: true,
            epoch_rules: EpochRules::default(),
        }
    }
}

/// An account funded at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountBalance {
    pub address: Address,
    pub balance: u64,
}

/// The genesis file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    pub protocol: Protocol,
    /// Milliseconds since the Unix epoch; the timestamp of the genesis state.
    pub genesis_time_ms: u64,
    pub params: ConsensusParams,
    pub validators: Vec<ValidatorInfo>,
    /// Who may change the validator set: member accounts and how many must approve.
    pub governance: GovernanceConfig,
    pub accounts: Vec<AccountBalance>,
}

impl Genesis {
    /// What this chain accepts: its id, and whether it takes opaque payloads.
    pub fn rules(&self) -> quorate_ledger::ChainRules {
        quorate_ledger::ChainRules {
            chain_id: self.chain_id.clone(),
            allow_opaque: self.params.allow_opaque_payloads,
            allow_reconfiguration: self.params.allow_reconfiguration,
        }
    }

    /// The governance state the chain starts from: epoch 0, nothing proposed.
    pub fn initial_governance(&self) -> Governance {
        Governance {
            epoch: Epoch(0),
            validators: self.validators.clone(),
            config: self.governance.clone(),
            rules: self.params.epoch_rules.clone(),
            proposals: Vec::new(),
            scheduled: None,
        }
    }

    /// Reads, parses and validates a genesis file.
    pub fn load(path: &Path) -> Result<Genesis, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let genesis: Genesis =
            serde_json::from_str(&text).map_err(|source| GenesisError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Writes the file as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), GenesisError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|source| GenesisError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        text.push('\n');
        std::fs::write(path, text).map_err(io(path))
    }

    /// The genesis hash: BLAKE3 over the canonical binary encoding, so it does not depend on JSON
    /// formatting, key order or whitespace.
    pub fn hash(&self) -> Result<Digest, GenesisError> {
        Ok(quorate_crypto::hash(Domain::Genesis, &codec::encode(self)?))
    }

    /// The epoch-0 validator set (checks every proof of possession).
    pub fn validator_set(&self) -> Result<ValidatorSet, GenesisError> {
        ValidatorSet::new(Epoch(0), self.validators.clone())
    }

    /// Every rule a genesis must satisfy; the first one broken is named.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let invalid = |m: String| Err(GenesisError::Invalid(m));
        if self.chain_id.is_empty() || self.chain_id.len() > MAX_CHAIN_ID_BYTES {
            return invalid(format!(
                "chain_id must be 1..={MAX_CHAIN_ID_BYTES} bytes, got {}",
                self.chain_id.len()
            ));
        }
        if !self
            .chain_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return invalid(format!(
                "chain_id {:?} may contain only ASCII letters, digits, '-', '_' and '.'",
                self.chain_id
            ));
        }
        let p = &self.params;
        if p.view_timeout_ms == 0 || p.view_timeout_max_ms < p.view_timeout_ms {
            return invalid(format!(
                "need 0 < view_timeout_ms ({}) <= view_timeout_max_ms ({})",
                p.view_timeout_ms, p.view_timeout_max_ms
            ));
        }
        if p.max_block_transactions == 0 || p.max_batch_transactions == 0 {
            return invalid(
                "max_block_transactions and max_batch_transactions must be positive".into(),
            );
        }
        if p.max_batch_transactions > p.max_block_transactions {
            return invalid(format!(
                "max_batch_transactions ({}) exceeds max_block_transactions ({}): a full batch \
                 could never be proposed",
                p.max_batch_transactions, p.max_block_transactions
            ));
        }
        if p.checkpoint_interval > MAX_CHECKPOINT_INTERVAL {
            return invalid(format!(
                "checkpoint_interval ({}) is above {MAX_CHECKPOINT_INTERVAL}",
                p.checkpoint_interval
            ));
        }
        if p.checkpoint_interval == 0 || p.pbft_window < p.checkpoint_interval {
            return invalid(format!(
                "need 0 < checkpoint_interval ({}) <= pbft_window ({})",
                p.checkpoint_interval, p.pbft_window
            ));
        }
        let rules = &p.epoch_rules;
        if rules.min_validators == 0 || rules.max_validators < rules.min_validators {
            return invalid("need 0 < min_validators <= max_validators".into());
        }
        if rules.max_validators > MAX_VALIDATORS {
            return invalid(format!(
                "max_validators ({}) is above {MAX_VALIDATORS}",
                rules.max_validators
            ));
        }
        if !(1..=MAX_RECONFIGURATION_DELAY).contains(&rules.reconfiguration_delay_blocks) {
            return invalid(format!(
                "reconfiguration_delay_blocks ({}) must be 1..={MAX_RECONFIGURATION_DELAY}",
                rules.reconfiguration_delay_blocks
            ));
        }
        let n = self.validators.len();
        if n < rules.min_validators as usize || n > rules.max_validators as usize {
            return invalid(format!(
                "{n} validators, allowed {}..={}",
                rules.min_validators, rules.max_validators
            ));
        }
        let mut names = HashSet::new();
        let mut identities = HashSet::new();
        let mut addresses = HashSet::new();
        for (index, validator) in self.validators.iter().enumerate() {
            if let Err(error) = validator.check_fields() {
                return invalid(format!("validator {index}: {error}"));
            }
            if !names.insert(&validator.name) {
                return invalid(format!(
                    "validator {index}: name {:?} is empty or not unique",
                    validator.name
                ));
            }
            if !identities.insert(validator.identity_key) {
                return invalid(format!("validator {index}: identity key is not unique"));
            }
            validator
                .identity_key
                .to_dalek()
                .map_err(|source| GenesisError::Validator {
                    index,
                    name: validator.name.clone(),
                    source,
                })?;
            if !validator.p2p_address.starts_with('/') || !addresses.insert(&validator.p2p_address)
            {
                return invalid(format!(
                    "validator {index}: p2p_address {:?} is not a unique multiaddr",
                    validator.p2p_address
                ));
            }
        }
        // Checks PoPs, distinct BLS keys, non-zero power and no overflow.
        self.validator_set()?;
        self.governance.check().map_err(GenesisError::Invalid)?;
        let mut funded = HashSet::new();
        let mut supply: u64 = 0;
        for account in &self.accounts {
            if !funded.insert(account.address) {
                return invalid(format!("account {} is listed twice", account.address));
            }
            supply = supply.checked_add(account.balance).ok_or_else(|| {
                GenesisError::Invalid("total of initial balances overflows u64".into())
            })?;
        }
        Ok(())
    }
}
