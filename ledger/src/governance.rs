//! On-chain governance of the validator set: who may change it, the changes proposed and
//! approved in the current epoch, the change scheduled for the next, and the set of each epoch.
//!
//! The governance state is part of the state: the state root commits to its digest beside the
//! account accumulator (see [`crate::state::state_root`]), so re-execution derives it, `audit`
//! checks it, and a block's certified header commits to the set the next epoch will use.
//!
//! The rules (issue 13): a member of governance proposes a change for the next epoch; identical
//! proposals from other members count as approvals; once `threshold` members approved, the change
//! is scheduled to take effect `reconfiguration_delay_blocks` later, at the end of that block,
//! which thereby ends the epoch. One change per epoch: once one is scheduled, others wait for the
//! next epoch. Every refusal is a [`GovernanceError`], the same at admission and at execution.

use crate::codec::{self, CodecError};
use crate::{Epoch, Height};
use quorate_crypto::{Address, BlsPublicKey, Digest, Domain, ProofOfPossession, PublicKey};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use thiserror::Error;

/// The longest validator name.
pub const MAX_VALIDATOR_NAME_BYTES: usize = 64;
/// The longest p2p multiaddr.
pub const MAX_P2P_ADDRESS_BYTES: usize = 256;
/// The most governance members a genesis may name.
pub const MAX_GOVERNANCE_MEMBERS: usize = 256;
/// The most distinct changes open (proposed, not yet scheduled) in one epoch; a member's new
/// proposal beyond it is refused until the epoch ends.
pub const MAX_OPEN_PROPOSALS: usize = 32;

/// One validator: its keys, where peers dial it, and its voting power.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorInfo {
    pub name: String,
    /// ed25519 identity key: libp2p PeerId and transferable signatures.
    pub identity_key: PublicKey,
    /// BLS key for votes, with its proof of possession.
    pub bls_key: BlsPublicKey,
    pub bls_pop: ProofOfPossession,
    /// Where peers dial it, as a libp2p multiaddr.
    pub p2p_address: String,
    pub voting_power: u64,
}

impl ValidatorInfo {
    /// The checks that need no other validator and no pairing: name, address and power.
    pub fn check_fields(&self) -> Result<(), GovernanceError> {
        let malformed = |reason: String| Err(GovernanceError::Malformed { reason });
        if self.name.is_empty()
            || self.name.len() > MAX_VALIDATOR_NAME_BYTES
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return malformed(format!(
                "validator name {:?} must be 1..={MAX_VALIDATOR_NAME_BYTES} ASCII letters, \
                 digits, '-', '_' or '.'",
                self.name
            ));
        }
        if !self.p2p_address.starts_with('/') || self.p2p_address.len() > MAX_P2P_ADDRESS_BYTES {
            return malformed(format!(
                "p2p address {:?} is not a multiaddr of at most {MAX_P2P_ADDRESS_BYTES} bytes",
                self.p2p_address
            ));
        }
        if self.voting_power == 0 {
            return malformed(format!("validator {} has zero voting power", self.name));
        }
        Ok(())
    }
}

/// How the validator set may change between epochs (genesis `params.epoch_rules`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRules {
    /// A scheduled validator-set change takes effect this many blocks after the block that
    /// schedules it; that block ends the epoch.
    pub reconfiguration_delay_blocks: u64,
    pub min_validators: u32,
    pub max_validators: u32,
}

impl Default for EpochRules {
    fn default() -> Self {
        EpochRules {
            reconfiguration_delay_blocks: 3,
            min_validators: 1,
            max_validators: 256,
        }
    }
}

/// Who may change the validator set (genesis `governance`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceConfig {
    /// Member account addresses.
    pub members: Vec<Address>,
    /// How many distinct members must approve a change.
    pub threshold: u32,
}

impl GovernanceConfig {
    /// Members, unique and at most [`MAX_GOVERNANCE_MEMBERS`]; a threshold in 1..=members.
    pub fn check(&self) -> Result<(), String> {
        if self.members.is_empty() || self.members.len() > MAX_GOVERNANCE_MEMBERS {
            return Err(format!(
                "governance needs 1..={MAX_GOVERNANCE_MEMBERS} members, got {}",
                self.members.len()
            ));
        }
        let mut seen = HashSet::new();
        if let Some(twice) = self.members.iter().find(|m| !seen.insert(**m)) {
            return Err(format!("governance member {twice} is listed twice"));
        }
        if self.threshold == 0 || self.threshold as usize > self.members.len() {
            return Err(format!(
                "governance threshold {} must be in 1..={}",
                self.threshold,
                self.members.len()
            ));
        }
        Ok(())
    }
}

/// A change to the validator set, for the next epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidatorChange {
    Add { validator: ValidatorInfo },
    Remove { name: String },
    SetPower { name: String, power: u64 },
}

impl ValidatorChange {
    /// The checks that need no state and no pairing.
    pub fn check_fields(&self) -> Result<(), GovernanceError> {
        match self {
            ValidatorChange::Add { validator } => validator.check_fields(),
            ValidatorChange::Remove { name } if name.len() > MAX_VALIDATOR_NAME_BYTES => {
                Err(GovernanceError::Malformed {
                    reason: format!("validator name of {} bytes", name.len()),
                })
            }
            ValidatorChange::Remove { .. } => Ok(()),
            ValidatorChange::SetPower { name, .. } if name.len() > MAX_VALIDATOR_NAME_BYTES => {
                Err(GovernanceError::Malformed {
                    reason: format!("validator name of {} bytes", name.len()),
                })
            }
            ValidatorChange::SetPower { power: 0, .. } => Err(GovernanceError::Malformed {
                reason: "voting power must be positive (remove the validator instead)".into(),
            }),
            ValidatorChange::SetPower { .. } => Ok(()),
        }
    }
}

/// Why a governance transaction was refused. Every node reaches the same verdict, at admission
/// and at execution (where it is the transaction's receipt).
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GovernanceError {
    #[error("sender {sender} is not a member of governance")]
    NotMember { sender: Address },
    #[error("the change names epoch {actual}, but the chain is in epoch {expected}")]
    StaleEpoch { expected: Epoch, actual: Epoch },
    #[error("epoch {epoch}'s change is already scheduled (it ends at height {height}); propose again in the next epoch")]
    AlreadyScheduled { epoch: Epoch, height: Height },
    #[error("sender {sender} already approved this change")]
    AlreadyApproved { sender: Address },
    #[error("{open} changes are already open in this epoch (at most {MAX_OPEN_PROPOSALS})")]
    TooManyProposals { open: usize },
    #[error("{reason}")]
    Malformed { reason: String },
    #[error("validator {name}: the BLS proof of possession does not verify")]
    InvalidProofOfPossession { name: String },
    #[error("validator name {name} is already in the set")]
    DuplicateName { name: String },
    #[error("validator {name}: identity key {key} is already in the set")]
    DuplicateIdentityKey { name: String, key: PublicKey },
    #[error("validator {name}: the BLS key is already in the set")]
    DuplicateBlsKey { name: String },
    #[error("validator {name}: p2p address {address} is already in the set")]
    DuplicateAddress { name: String, address: String },
    #[error("no validator named {name} in epoch {epoch}")]
    UnknownValidator { name: String, epoch: Epoch },
    #[error("the change leaves {count} validators, below min_validators {min}")]
    TooFewValidators { count: usize, min: u32 },
    #[error("the change leaves {count} validators, above max_validators {max}")]
    TooManyValidators { count: usize, max: u32 },
    #[error("total voting power would overflow")]
    PowerOverflow,
    #[error("no reachable quorum: validators that stay hold {staying} of the {quorum} voting power the next epoch's quorum needs (add power in smaller steps)")]
    NoReachableQuorum { staying: u64, quorum: u64 },
}

/// A change proposed in the current epoch, and the members that approved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub change: ValidatorChange,
    pub approvals: Vec<Address>,
}

/// The change that ends the current epoch: at the end of block `height`, `validators` become
/// the set of the next epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    pub height: Height,
    pub validators: Vec<ValidatorInfo>,
}

/// What the store keeps of each epoch the committed chain entered: its validators and its root
/// (the block that ended the epoch before; the genesis block for epoch 0), from which the epoch's
/// engines start and a restarted node resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub validators: Vec<ValidatorInfo>,
    pub root_height: Height,
    pub root: Digest,
}

/// The governance part of the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    pub epoch: Epoch,
    /// The current epoch's validators, in index order.
    pub validators: Vec<ValidatorInfo>,
    pub config: GovernanceConfig,
    pub rules: EpochRules,
    /// Open changes of this epoch, in the order first proposed.
    pub proposals: Vec<Proposal>,
    pub scheduled: Option<ScheduledChange>,
}

/// What a governance transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approved {
    /// Recorded; the change has `approvals` of the `threshold` it needs.
    Pending { approvals: usize, threshold: u32 },
    /// The threshold is reached: the change takes effect at the end of block `height`.
    Scheduled { height: Height },
}

/// Power a quorum of a set with `total` power needs (2f+1 of 3f+1; as the BLS committee).
pub fn quorum_power(total: u64) -> u64 {
    total / 3 * 2 + (total % 3) * 2 / 3 + 1
}

impl Governance {
    /// The set `change` would give, checked against every rule but membership, epoch and the
    /// proofs of possession of validators already in the set (checked when they joined).
    pub fn next_set(
        &self,
        change: &ValidatorChange,
    ) -> Result<Vec<ValidatorInfo>, GovernanceError> {
        change.check_fields()?;
        let mut next = self.validators.clone();
        let position = |name: &str| {
            next.iter().position(|v| v.name == name).ok_or_else(|| {
                GovernanceError::UnknownValidator {
                    name: name.to_string(),
                    epoch: self.epoch,
                }
            })
        };
        match change {
            ValidatorChange::Add { validator } => {
                let name = validator.name.clone();
                for existing in &next {
                    if existing.name == validator.name {
                        return Err(GovernanceError::DuplicateName { name });
                    }
                    if existing.identity_key == validator.identity_key {
                        return Err(GovernanceError::DuplicateIdentityKey {
                            name,
                            key: validator.identity_key,
                        });
                    }
                    if existing.bls_key == validator.bls_key {
                        return Err(GovernanceError::DuplicateBlsKey { name });
                    }
                    if existing.p2p_address == validator.p2p_address {
                        return Err(GovernanceError::DuplicateAddress {
                            name,
                            address: validator.p2p_address.clone(),
                        });
                    }
                }
                next.push(validator.clone());
            }
            ValidatorChange::Remove { name } => {
                let index = position(name)?;
                next.remove(index);
            }
            ValidatorChange::SetPower { name, power } => {
                let index = position(name)?;
                if let Some(validator) = next.get_mut(index) {
                    validator.voting_power = *power;
                }
            }
        }
        let count = next.len();
        if count < self.rules.min_validators as usize {
            return Err(GovernanceError::TooFewValidators {
                count,
                min: self.rules.min_validators,
            });
        }
        if count > self.rules.max_validators as usize {
            return Err(GovernanceError::TooManyValidators {
                count,
                max: self.rules.max_validators,
            });
        }
        let total = next
            .iter()
            .try_fold(0u64, |sum, v| sum.checked_add(v.voting_power))
            .filter(|total| *total <= u64::MAX / 2)
            .ok_or(GovernanceError::PowerOverflow)?;
        // The validators running now must be able to form the next epoch's quorum by
        // themselves: a new member may never start, and the epoch must not begin stalled.
        let staying: u64 = next
            .iter()
            .filter(|v| {
                self.validators
                    .iter()
                    .any(|c| c.identity_key == v.identity_key)
            })
            .map(|v| v.voting_power)
            .sum();
        let quorum = quorum_power(total);
        if staying < quorum {
            return Err(GovernanceError::NoReachableQuorum { staying, quorum });
        }
        // Last, after every cheap rule: the pairing.
        if let ValidatorChange::Add { validator } = change {
            if validator.identity_key.to_dalek().is_err()
                || validator.bls_key.verify_pop(&validator.bls_pop).is_err()
            {
                return Err(GovernanceError::InvalidProofOfPossession {
                    name: validator.name.clone(),
                });
            }
        }
        Ok(next)
    }

    /// Every check of a governance transaction from `sender` for `epoch`, without changing
    /// anything: what admission runs against the committed state.
    pub fn check(
        &self,
        sender: &Address,
        epoch: Epoch,
        change: &ValidatorChange,
    ) -> Result<(), GovernanceError> {
        self.precheck(sender, epoch, change)?;
        self.next_set(change).map(|_| ())
    }

    fn precheck(
        &self,
        sender: &Address,
        epoch: Epoch,
        change: &ValidatorChange,
    ) -> Result<Option<usize>, GovernanceError> {
        if !self.config.members.contains(sender) {
            return Err(GovernanceError::NotMember { sender: *sender });
        }
        if epoch != self.epoch {
            return Err(GovernanceError::StaleEpoch {
                expected: self.epoch,
                actual: epoch,
            });
        }
        if let Some(scheduled) = &self.scheduled {
            return Err(GovernanceError::AlreadyScheduled {
                epoch: self.epoch,
                height: scheduled.height,
            });
        }
        let open = self.proposals.iter().position(|p| &p.change == change);
        match open.and_then(|i| self.proposals.get(i)) {
            Some(proposal) if proposal.approvals.contains(sender) => {
                Err(GovernanceError::AlreadyApproved { sender: *sender })
            }
            None if self.proposals.len() >= MAX_OPEN_PROPOSALS => {
                Err(GovernanceError::TooManyProposals {
                    open: self.proposals.len(),
                })
            }
            _ => Ok(open),
        }
    }

    /// Executes a governance transaction from `sender` in the block at `height`.
    pub fn apply(
        &mut self,
        sender: &Address,
        epoch: Epoch,
        change: &ValidatorChange,
        height: Height,
    ) -> Result<Approved, GovernanceError> {
        let open = self.precheck(sender, epoch, change)?;
        let next = self.next_set(change)?;
        let index = match open {
            Some(index) => index,
            None => {
                self.proposals.push(Proposal {
                    change: change.clone(),
                    approvals: Vec::new(),
                });
                self.proposals.len() - 1
            }
        };
        let Some(proposal) = self.proposals.get_mut(index) else {
            return Err(GovernanceError::Malformed {
                reason: "proposal vanished".into(),
            });
        };
        proposal.approvals.push(*sender);
        let approvals = proposal.approvals.len();
        if approvals < self.config.threshold as usize {
            return Ok(Approved::Pending {
                approvals,
                threshold: self.config.threshold,
            });
        }
        let height = Height(
            height
                .0
                .saturating_add(self.rules.reconfiguration_delay_blocks),
        );
        self.proposals.clear();
        self.scheduled = Some(ScheduledChange {
            height,
            validators: next,
        });
        Ok(Approved::Scheduled { height })
    }

    /// Ends the epoch if block `height` is the one its scheduled change takes effect at (called
    /// after the block's transactions). Returns whether it did.
    pub fn end_block(&mut self, height: Height) -> bool {
        match &self.scheduled {
            Some(scheduled) if scheduled.height <= height => {}
            _ => return false,
        }
        if let Some(scheduled) = self.scheduled.take() {
            self.validators = scheduled.validators;
            self.epoch = self.epoch.next();
            self.proposals.clear();
        }
        true
    }

    /// The digest the state root commits to.
    pub fn digest(&self) -> Result<Digest, CodecError> {
        Ok(quorate_crypto::hash(
            Domain::Governance,
            &codec::encode(self)?,
        ))
    }
}

/// A governance state shared between blocks (most blocks do not change it), with its digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernanceState {
    governance: Arc<Governance>,
    digest: Digest,
}

impl GovernanceState {
    pub fn new(governance: Governance) -> Result<Self, CodecError> {
        Ok(GovernanceState {
            digest: governance.digest()?,
            governance: Arc::new(governance),
        })
    }

    pub fn get(&self) -> &Governance {
        &self.governance
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn epoch(&self) -> Epoch {
        self.governance.epoch
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use quorate_crypto::{BlsKeyPair, SigningKey};

    pub fn validator(seed: u64, power: u64) -> ValidatorInfo {
        let bls = BlsKeyPair::from_seed_insecure(seed);
        ValidatorInfo {
            name: format!("v{seed}"),
            identity_key: SigningKey::from_seed_insecure(seed).public(),
            bls_key: bls.public(),
            bls_pop: bls.proof_of_possession(),
            p2p_address: format!("/ip4/127.0.0.1/tcp/{}", 9000 + seed),
            voting_power: power,
        }
    }

    pub fn member(seed: u64) -> Address {
        SigningKey::from_seed_insecure(100 + seed)
            .public()
            .address()
    }

    /// Four validators of power 1; members 0..3 with threshold 2; delay 3.
    pub fn four() -> Governance {
        Governance {
            epoch: Epoch(0),
            validators: (0..4).map(|s| validator(s, 1)).collect(),
            config: GovernanceConfig {
                members: (0..3).map(member).collect(),
                threshold: 2,
            },
            rules: EpochRules {
                reconfiguration_delay_blocks: 3,
                min_validators: 2,
                max_validators: 5,
            },
            proposals: Vec::new(),
            scheduled: None,
        }
    }

    #[test]
    fn quorum_power_matches_the_committee() {
        for total in 1..200u64 {
            assert_eq!(quorum_power(total), total * 2 / 3 + 1, "{total}");
        }
        assert_eq!(quorum_power(u64::MAX / 2), (u64::MAX / 2) / 3 * 2 + 1);
    }

    #[test]
    fn a_change_is_scheduled_at_the_threshold_and_takes_effect_after_the_delay() {
        let mut g = four();
        let add = ValidatorChange::Add {
            validator: validator(4, 1),
        };
        let before = g.digest().unwrap();
        assert_eq!(
            g.apply(&member(0), Epoch(0), &add, Height(10)),
            Ok(Approved::Pending {
                approvals: 1,
                threshold: 2
            })
        );
        assert_ne!(g.digest().unwrap(), before);
        assert_eq!(
            g.apply(&member(0), Epoch(0), &add, Height(11)),
            Err(GovernanceError::AlreadyApproved { sender: member(0) })
        );
        assert_eq!(
            g.apply(&member(1), Epoch(0), &add, Height(12)),
            Ok(Approved::Scheduled { height: Height(15) })
        );
        let remove = ValidatorChange::Remove { name: "v0".into() };
        assert_eq!(
            g.apply(&member(2), Epoch(0), &remove, Height(13)),
            Err(GovernanceError::AlreadyScheduled {
                epoch: Epoch(0),
                height: Height(15)
            })
        );
        assert!(!g.end_block(Height(14)));
        assert_eq!(g.validators.len(), 4);
        assert!(g.end_block(Height(15)));
        assert_eq!((g.epoch, g.validators.len()), (Epoch(1), 5));
        assert!(g.scheduled.is_none() && g.proposals.is_empty());
        assert_eq!(
            g.check(&member(2), Epoch(0), &remove),
            Err(GovernanceError::StaleEpoch {
                expected: Epoch(1),
                actual: Epoch(0)
            })
        );
        assert_eq!(g.check(&member(2), Epoch(1), &remove), Ok(()));
    }

    #[test]
    fn every_bad_input_is_refused_with_its_reason() {
        let g = four();
        let m = member(0);
        let add = |v: ValidatorInfo| ValidatorChange::Add { validator: v };
        let check = |change: &ValidatorChange| g.check(&m, Epoch(0), change);
        let outsider = SigningKey::from_seed_insecure(7).public().address();
        assert_eq!(
            g.check(&outsider, Epoch(0), &add(validator(4, 1))),
            Err(GovernanceError::NotMember { sender: outsider })
        );
        let mut bad_pop = validator(4, 1);
        bad_pop.bls_pop = validator(5, 1).bls_pop;
        assert_eq!(
            check(&add(bad_pop)),
            Err(GovernanceError::InvalidProofOfPossession { name: "v4".into() })
        );
        let mut same_identity = validator(4, 1);
        same_identity.identity_key = g.validators[1].identity_key;
        assert!(matches!(
            check(&add(same_identity)),
            Err(GovernanceError::DuplicateIdentityKey { .. })
        ));
        let mut same_bls = validator(4, 1);
        same_bls.bls_key = g.validators[2].bls_key;
        same_bls.bls_pop = g.validators[2].bls_pop;
        assert!(matches!(
            check(&add(same_bls)),
            Err(GovernanceError::DuplicateBlsKey { .. })
        ));
        let mut same_name = validator(4, 1);
        same_name.name = "v3".into();
        assert!(matches!(
            check(&add(same_name)),
            Err(GovernanceError::DuplicateName { .. })
        ));
        let mut same_address = validator(4, 1);
        same_address.p2p_address = g.validators[0].p2p_address.clone();
        assert!(matches!(
            check(&add(same_address)),
            Err(GovernanceError::DuplicateAddress { .. })
        ));
        assert!(matches!(
            check(&ValidatorChange::Remove {
                name: "nobody".into()
            }),
            Err(GovernanceError::UnknownValidator { .. })
        ));
        assert!(matches!(
            check(&ValidatorChange::SetPower {
                name: "v1".into(),
                power: 0
            }),
            Err(GovernanceError::Malformed { .. })
        ));
        let mut bad_name = validator(4, 1);
        bad_name.name = "no spaces".into();
        assert!(matches!(
            check(&add(bad_name)),
            Err(GovernanceError::Malformed { .. })
        ));
        // Adding power the running validators cannot out-vote: no quorum without the newcomer.
        assert_eq!(
            check(&add(validator(4, 3))),
            Err(GovernanceError::NoReachableQuorum {
                staying: 4,
                quorum: 5
            })
        );
        assert!(matches!(
            check(&ValidatorChange::SetPower {
                name: "v1".into(),
                power: u64::MAX
            }),
            Err(GovernanceError::PowerOverflow)
        ));
        // Bounds: max 5, min 2.
        let mut five = g.clone();
        five.validators.push(validator(4, 1));
        assert_eq!(
            five.check(&m, Epoch(0), &add(validator(5, 1))),
            Err(GovernanceError::TooManyValidators { count: 6, max: 5 })
        );
        let mut two = g.clone();
        two.validators.truncate(2);
        assert_eq!(
            two.check(&m, Epoch(0), &ValidatorChange::Remove { name: "v0".into() }),
            Err(GovernanceError::TooFewValidators { count: 1, min: 2 })
        );
        assert_eq!(
            g.check(&m, Epoch(3), &add(validator(4, 1))),
            Err(GovernanceError::StaleEpoch {
                expected: Epoch(0),
                actual: Epoch(3)
            })
        );
        // What a refused change leaves: nothing.
        let mut after = g.clone();
        assert!(after
            .apply(&m, Epoch(0), &add(validator(4, 3)), Height(1))
            .is_err());
        assert_eq!(after, g);
    }

    #[test]
    fn open_proposals_are_bounded() {
        let mut g = four();
        g.rules.max_validators = 100;
        for seed in 0..MAX_OPEN_PROPOSALS as u64 {
            let change = ValidatorChange::SetPower {
                name: "v0".into(),
                power: seed + 2,
            };
            assert_eq!(
                g.apply(&member(0), Epoch(0), &change, Height(1)),
                Ok(Approved::Pending {
                    approvals: 1,
                    threshold: 2
                })
            );
        }
        assert_eq!(g.proposals.len(), MAX_OPEN_PROPOSALS);
        let one_more = ValidatorChange::Remove { name: "v1".into() };
        assert_eq!(
            g.apply(&member(0), Epoch(0), &one_more, Height(1)),
            Err(GovernanceError::TooManyProposals {
                open: MAX_OPEN_PROPOSALS
            })
        );
        // An approval of an open one still counts, and schedules it.
        let first = g.proposals[0].change.clone();
        assert!(matches!(
            g.apply(&member(1), Epoch(0), &first, Height(2)),
            Ok(Approved::Scheduled { .. })
        ));
    }

    #[test]
    fn the_config_is_checked() {
        let ok = GovernanceConfig {
            members: vec![member(0), member(1)],
            threshold: 2,
        };
        assert!(ok.check().is_ok());
        let mut zero = ok.clone();
        zero.threshold = 0;
        assert!(zero.check().is_err());
        let mut high = ok.clone();
        high.threshold = 3;
        assert!(high.check().is_err());
        let twice = GovernanceConfig {
            members: vec![member(0), member(0)],
            threshold: 1,
        };
        assert!(twice.check().is_err());
    }
}
