//! The genesis file, validator sets per epoch, key files, node configuration and testnet
//! generation.
// Nothing from a network, a disk or a client may panic a library: no unwrap, expect, panic or
// unchecked indexing outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(not(test), deny(clippy::panic, clippy::indexing_slicing))]

mod config;
mod error;
mod genesis;
mod keys;
mod testnet;
mod validator_set;

pub use config::{MempoolConfig, NodeConfig};
pub use error::GenesisError;
pub use genesis::{
    AccountBalance, ConsensusParams, Genesis, Protocol, MAX_CHECKPOINT_INTERVAL,
    MAX_RECONFIGURATION_DELAY, MAX_VALIDATORS,
};
pub use keys::{write_secret_file, AccountKeyFile, ValidatorKeyFile, ValidatorKeys};
pub use quorate_ledger::{EpochRules, GovernanceConfig, ValidatorInfo};
pub use testnet::{generate_testnet, TestnetNode, TestnetSpec};
pub use validator_set::ValidatorSet;
