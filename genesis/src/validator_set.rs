//! A validator set: the members of one epoch, their keys, power, quorum and leader order.

use crate::{GenesisError, ValidatorInfo};
use quorate_crypto::{Committee, PublicKey};
use quorate_ledger::{Epoch, View};
use std::sync::Arc;

/// The validators of one epoch, in index order. Index `i` is the bit in signer bitmaps and the
/// slot in MAC authenticators.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    epoch: Epoch,
    validators: Arc<Vec<ValidatorInfo>>,
    committee: Arc<Committee>,
}

impl ValidatorSet {
    /// Builds the set, checking every BLS proof of possession.
    pub fn new(epoch: Epoch, validators: Vec<ValidatorInfo>) -> Result<Self, GenesisError> {
        let members: Vec<_> = validators
            .iter()
            .map(|v| (v.bls_key, v.bls_pop, v.voting_power))
            .collect();
        let committee = Committee::new(&members).map_err(|source| {
            // Name the validator where we can.
            let index = match &source {
                quorate_crypto::CryptoError::DuplicateMember { index }
                | quorate_crypto::CryptoError::ZeroPower { index } => *index,
                _ => validators
                    .iter()
                    .position(|v| v.bls_key.verify_pop(&v.bls_pop).is_err())
                    .unwrap_or(0),
            };
            GenesisError::Validator {
                index,
                name: validators
                    .get(index)
                    .map(|v| v.name.clone())
                    .unwrap_or_default(),
                source,
            }
        })?;
        Ok(ValidatorSet {
            epoch,
            validators: Arc::new(validators),
            committee: Arc::new(committee),
        })
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn len(&self) -> usize {
        self.validators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    pub fn validators(&self) -> &[ValidatorInfo] {
        &self.validators
    }

    pub fn get(&self, index: usize) -> Option<&ValidatorInfo> {
        self.validators.get(index)
    }

    /// The BLS committee (quorum certificates are checked against it).
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    pub fn total_power(&self) -> u64 {
        self.committee.total_power()
    }

    /// 2f+1 of 3f+1.
    pub fn quorum_power(&self) -> u64 {
        self.committee.quorum_power()
    }

    /// f+1 of 3f+1.
    pub fn validity_power(&self) -> u64 {
        self.committee.validity_power()
    }

    /// The largest f with 3f+1 <= n, for equal power.
    pub fn max_faulty(&self) -> usize {
        (self.len().saturating_sub(1)) / 3
    }

    /// Round-robin leader of `view`: every validator leads in turn, in index order.
    pub fn leader(&self, view: View) -> usize {
        (view.0 % self.validators.len() as u64) as usize
    }

    pub fn index_of_identity(&self, key: &PublicKey) -> Option<usize> {
        self.validators.iter().position(|v| &v.identity_key == key)
    }

    /// Identity keys with power, as checkpoint certificates want them.
    pub fn identity_keys(&self) -> Vec<(PublicKey, u64)> {
        self.validators
            .iter()
            .map(|v| (v.identity_key, v.voting_power))
            .collect()
    }
}
