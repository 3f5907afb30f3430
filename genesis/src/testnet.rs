//! `quorate testnet`: a genesis, one home directory per validator and funded account keys.
//!
//! ```text
//! DIR/genesis.json
//! DIR/node<i>/config.toml  DIR/node<i>/validator.key.json  DIR/node<i>/data/
//! DIR/accounts/account-<j>.json
//! ```
//! Node i listens for p2p on 127.0.0.1:P+2i and serves RPC on 127.0.0.1:P+2i+1; with
//! [`TestnetSpec::hosts`], on its own host's address instead (a testnet spread over network
//! namespaces or machines).

use crate::error::io;
use crate::keys::{write_secret_file, AccountKeyFile, ValidatorKeyFile, ValidatorKeys};
use crate::{
    AccountBalance, ConsensusParams, Genesis, GenesisError, GovernanceConfig, MempoolConfig,
    NodeConfig, Protocol, ValidatorInfo,
};
use quorate_crypto::SigningKey;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Clone, Debug)]
pub struct TestnetSpec {
    pub validators: usize,
    pub protocol: Protocol,
    pub accounts: usize,
    /// Accounts 0..governance-1 are the members of governance, with threshold K/2+1.
    pub governance: usize,
    pub dir: PathBuf,
    pub base_port: u16,
    /// One IPv4 address per validator that node i listens on (and is dialled at); empty:
    /// 127.0.0.1 for every node.
    pub hosts: Vec<std::net::Ipv4Addr>,
    pub chain_id: String,
    pub initial_balance: u64,
    pub genesis_time_ms: u64,
    pub params: ConsensusParams,
}

/// One generated validator.
#[derive(Clone, Debug)]
pub struct TestnetNode {
    pub index: usize,
    pub home: PathBuf,
    pub rpc_url: String,
    pub p2p_address: String,
}

impl std::fmt::Display for TestnetNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node{} home={} rpc={} p2p={}",
            self.index,
            self.home.display(),
            self.rpc_url,
            self.p2p_address
        )
    }
}

/// Writes the testnet. Refuses a directory that already holds a genesis.
pub fn generate_testnet(spec: &TestnetSpec) -> Result<Vec<TestnetNode>, GenesisError> {
    if spec.validators == 0 {
        return Err(GenesisError::Invalid("need at least one validator".into()));
    }
    let last_port = spec.base_port as usize + 2 * spec.validators - 1;
    if last_port > u16::MAX as usize {
        return Err(GenesisError::Invalid(format!(
            "base port {} leaves no room for {} validators (needs up to port {last_port})",
            spec.base_port, spec.validators
        )));
    }
    if !spec.hosts.is_empty() && spec.hosts.len() != spec.validators {
        return Err(GenesisError::Invalid(format!(
            "{} hosts for {} validators: give one address per validator",
            spec.hosts.len(),
            spec.validators
        )));
    }
    if spec.governance == 0 || spec.governance > spec.accounts {
        return Err(GenesisError::Invalid(format!(
            "--governance {} needs 1..=--accounts ({}) members: governance members are \
             accounts 0..K-1",
            spec.governance, spec.accounts
        )));
    }
    let genesis_path = spec.dir.join("genesis.json");
    if genesis_path.exists() {
        return Err(GenesisError::Exists { path: genesis_path });
    }
    create_dir(&spec.dir)?;

    let mut validators = Vec::with_capacity(spec.validators);
    let mut nodes = Vec::with_capacity(spec.validators);
    for index in 0..spec.validators {
        let name = format!("node{index}");
        let home = spec.dir.join(&name);
        create_dir(&home)?;
        create_dir(&home.join("data"))?;
        let p2p_port = spec.base_port as usize + 2 * index;
        let rpc_port = p2p_port + 1;
        let host = spec
            .hosts
            .get(index)
            .copied()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        let p2p_address = format!("/ip4/{host}/tcp/{p2p_port}");
        let keys = ValidatorKeys::generate(&name);
        write_secret_file(
            &home.join("validator.key.json"),
            &ValidatorKeyFile::new(&keys),
        )?;
        let config = NodeConfig {
            moniker: name.clone(),
            genesis_file: PathBuf::from("../genesis.json"),
            validator_key_file: PathBuf::from("validator.key.json"),
            data_dir: PathBuf::from("data"),
            p2p_listen: p2p_address.clone(),
            rpc_listen: format!("{host}:{rpc_port}"),
            peers: Vec::new(),
            mempool: MempoolConfig::default(),
        };
        config.save(&home.join("config.toml"))?;
        validators.push(ValidatorInfo {
            name,
            identity_key: keys.identity.public(),
            bls_key: keys.bls.public(),
            bls_pop: keys.bls.proof_of_possession(),
            p2p_address: p2p_address.clone(),
            voting_power: 1,
        });
        nodes.push(TestnetNode {
            index,
            home: home.canonicalize().map_err(io(&home))?,
            rpc_url: format!("http://{host}:{rpc_port}"),
            p2p_address,
        });
    }

    let accounts_dir = spec.dir.join("accounts");
    create_dir(&accounts_dir)?;
    let mut accounts = Vec::with_capacity(spec.accounts);
    for index in 0..spec.accounts {
        let key = SigningKey::generate();
        write_secret_file(
            &accounts_dir.join(format!("account-{index}.json")),
            &AccountKeyFile::new(&key),
        )?;
        accounts.push(AccountBalance {
            address: key.public().address(),
            balance: spec.initial_balance,
        });
    }

    let genesis = Genesis {
        chain_id: spec.chain_id.clone(),
        protocol: spec.protocol,
        genesis_time_ms: spec.genesis_time_ms,
        params: spec.params.clone(),
        validators,
        governance: GovernanceConfig {
            members: accounts
                .iter()
                .take(spec.governance)
                .map(|a| a.address)
                .collect(),
            threshold: (spec.governance / 2 + 1) as u32,
        },
        accounts,
    };
    genesis.validate()?;
    genesis.save(&genesis_path)?;
    Ok(nodes)
}

fn create_dir(path: &Path) -> Result<(), GenesisError> {
    std::fs::create_dir_all(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, validators: usize) -> TestnetSpec {
        TestnetSpec {
            validators,
            protocol: Protocol::HotStuff,
            accounts: 3,
            governance: 1,
            dir: dir.to_path_buf(),
            base_port: 30000,
            hosts: Vec::new(),
            chain_id: "quorate-test".into(),
            initial_balance: 1_000_000,
            genesis_time_ms: 1_700_000_000_000,
            params: ConsensusParams::default(),
        }
    }

    #[test]
    fn testnet_layout_and_stable_hash() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = generate_testnet(&spec(dir.path(), 4)).unwrap();
        assert_eq!(nodes.len(), 4);
        for (i, node) in nodes.iter().enumerate() {
            assert!(node.home.join("config.toml").is_file());
            assert!(node.home.join("validator.key.json").is_file());
            assert!(node.home.join("data").is_dir());
            assert_eq!(
                node.rpc_url,
                format!("http://127.0.0.1:{}", 30000 + 2 * i + 1)
            );
            assert_eq!(
                node.p2p_address,
                format!("/ip4/127.0.0.1/tcp/{}", 30000 + 2 * i)
            );
            let config = NodeConfig::load(&node.home.join("config.toml")).unwrap();
            let keys = ValidatorKeyFile::load(&node.home.join(&config.validator_key_file)).unwrap();
            let genesis =
                Genesis::load(&NodeConfig::resolve(&node.home, &config.genesis_file)).unwrap();
            assert_eq!(genesis.validators[i].identity_key, keys.identity.public());
        }
        for j in 0..3 {
            assert!(dir
                .path()
                .join(format!("accounts/account-{j}.json"))
                .is_file());
        }
        let path = dir.path().join("genesis.json");
        let genesis = Genesis::load(&path).unwrap();
        let reloaded = Genesis::load(&path).unwrap();
        assert_eq!(genesis.hash().unwrap(), reloaded.hash().unwrap());
        // Re-serialising with different formatting keeps the hash.
        let compact = serde_json::to_string(&genesis).unwrap();
        let from_compact: Genesis = serde_json::from_str(&compact).unwrap();
        assert_eq!(from_compact.hash().unwrap(), genesis.hash().unwrap());
        for validator in &genesis.validators {
            assert!(validator.bls_key.verify_pop(&validator.bls_pop).is_ok());
        }
        let set = genesis.validator_set().unwrap();
        assert_eq!(set.quorum_power(), 3);
        assert_eq!(set.max_faulty(), 1);
        // Refuses to overwrite.
        assert!(matches!(
            generate_testnet(&spec(dir.path(), 4)),
            Err(GenesisError::Exists { .. })
        ));
    }

    #[test]
    fn genesis_validation_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        generate_testnet(&spec(dir.path(), 4)).unwrap();
        let genesis = Genesis::load(&dir.path().join("genesis.json")).unwrap();

        let mut bad_pop = genesis.clone();
        bad_pop.validators[2].bls_pop = bad_pop.validators[1].bls_pop;
        let error = bad_pop.validate().unwrap_err().to_string();
        assert!(error.contains("validator 2"), "{error}");

        let mut duplicate = genesis.clone();
        duplicate.validators[3].identity_key = duplicate.validators[0].identity_key;
        assert!(duplicate.validate().is_err());

        let mut bad_chain = genesis.clone();
        bad_chain.chain_id = "has space".into();
        assert!(bad_chain.validate().is_err());

        let mut overflow = genesis.clone();
        overflow.accounts[0].balance = u64::MAX;
        overflow.accounts[1].balance = 1;
        assert!(overflow.validate().is_err());

        // A batch that no block could carry would stall every proposal that names it.
        let mut big_batch = genesis.clone();
        big_batch.params.max_batch_transactions = big_batch.params.max_block_transactions + 1;
        let error = big_batch.validate().unwrap_err().to_string();
        assert!(error.contains("max_batch_transactions"), "{error}");

        let mut changed = genesis.clone();
        changed.accounts[0].balance += 1;
        assert_ne!(changed.hash().unwrap(), genesis.hash().unwrap());
    }

    #[test]
    fn port_range_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), 4);
        s.base_port = 65530;
        assert!(generate_testnet(&s).is_err());
    }

    #[test]
    fn hosts_place_each_node_on_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), 2);
        s.hosts = vec!["10.77.0.1".parse().unwrap(), "10.77.0.2".parse().unwrap()];
        let nodes = generate_testnet(&s).unwrap();
        assert_eq!(nodes[1].rpc_url, "http://10.77.0.2:30003");
        assert_eq!(nodes[1].p2p_address, "/ip4/10.77.0.2/tcp/30002");
        let config = NodeConfig::load(&nodes[1].home.join("config.toml")).unwrap();
        assert_eq!(config.rpc_listen, "10.77.0.2:30003");
        let genesis = Genesis::load(&dir.path().join("genesis.json")).unwrap();
        assert_eq!(
            genesis.validators[0].p2p_address,
            "/ip4/10.77.0.1/tcp/30000"
        );

        let other = tempfile::tempdir().unwrap();
        let mut short = spec(other.path(), 3);
        short.hosts = vec!["10.77.0.1".parse().unwrap()];
        let error = generate_testnet(&short).unwrap_err().to_string();
        assert!(error.contains("1 hosts for 3 validators"), "{error}");
    }
}
