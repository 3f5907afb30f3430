//! A validator's `config.toml`. Relative paths are relative to the home directory.

use crate::error::io;
use crate::GenesisError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Node configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A human-readable name for logs.
    pub moniker: String,
    pub genesis_file: PathBuf,
    pub validator_key_file: PathBuf,
    pub data_dir: PathBuf,
    /// libp2p listen multiaddr, e.g. `/ip4/127.0.0.1/tcp/26600`.
    pub p2p_listen: String,
    /// RPC listen socket address, e.g. `127.0.0.1:26601`.
    pub rpc_listen: String,
    /// Multiaddrs of nodes to reach besides the validators genesis names: how a node that
    /// `quorate init` made (not in the genesis set) finds the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    #[serde(default)]
    pub mempool: MempoolConfig,
}

/// Mempool limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MempoolConfig {
    /// Transactions held at most; beyond it RPC answers 503.
    pub max_transactions: usize,
    /// How far ahead of an account's committed nonce a transaction may be.
    pub max_nonce_gap: u64,
    /// Transactions of one account held at most (pending and in uncommitted batches); beyond
    /// it RPC answers 429.
    #[serde(default = "default_max_pending_per_account")]
    pub max_pending_per_account: usize,
}

fn default_max_pending_per_account() -> usize {
    256
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_transactions: 200_000,
            max_nonce_gap: 1_000,
            max_pending_per_account: default_max_pending_per_account(),
        }
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        toml::from_str(&text).map_err(|e| GenesisError::Toml {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), GenesisError> {
        let text = toml::to_string_pretty(self).map_err(|e| GenesisError::Toml {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(io(path))
    }

    /// `path` resolved against the home directory.
    pub fn resolve(home: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            home.join(path)
        }
    }
}
