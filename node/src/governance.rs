//! The validator-set commands: `quorate init` (a new node's home and public description),
//! `quorate tx validators add|remove|set-power` (governance transactions) and
//! `quorate query validators`; and signing, submitting and waiting for a transaction, which
//! `tx transfer` shares.

use crate::client::RpcClient;
use anyhow::{bail, Context, Result};
use quorate_crypto::{Digest, SigningKey};
use quorate_genesis::{
    write_secret_file, Genesis, MempoolConfig, NodeConfig, ValidatorKeyFile, ValidatorKeys,
};
use quorate_ledger::{Epoch, Transaction, TransactionKind, ValidatorChange, ValidatorInfo};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The public description `init` writes beside the key: what governance needs to add the node.
pub const PUBLIC_FILE: &str = "validator.public.json";

/// What `quorate init` is given.
pub struct InitSpec<'a> {
    pub home: &'a Path,
    pub genesis: &'a Path,
    pub p2p: &'a str,
    pub rpc: &'a str,
    pub peers: &'a [String],
    pub name: Option<&'a str>,
}

/// Writes a node home: the genesis (copied, so the home stands alone), config.toml, a fresh
/// validator key (mode 0600) and `validator.public.json`, whose text it returns.
pub fn init(spec: &InitSpec) -> Result<String> {
    let genesis = Genesis::load(spec.genesis)
        .with_context(|| format!("loading {}", spec.genesis.display()))?;
    let p2p: libp2p::Multiaddr = spec
        .p2p
        .parse()
        .map_err(|e| anyhow::anyhow!("--p2p {:?} is not a multiaddr: {e}", spec.p2p))?;
    spec.rpc
        .parse::<std::net::SocketAddr>()
        .map_err(|e| anyhow::anyhow!("--rpc {:?} is not an IP:PORT address: {e}", spec.rpc))?;
    for peer in spec.peers {
        peer.parse::<libp2p::Multiaddr>()
            .map_err(|e| anyhow::anyhow!("--peer {peer:?} is not a multiaddr: {e}"))?;
    }
    let name = match spec.name {
        Some(name) => name.to_string(),
        None => spec
            .home
            .file_name()
            .and_then(|n| n.to_str())
            .context("--home has no final component to name the node after; give --name")?
            .to_string(),
    };
    let config_path = spec.home.join("config.toml");
    if config_path.exists() {
        bail!(
            "{} already exists: init never overwrites a node's home",
            config_path.display()
        );
    }
    let keys = ValidatorKeys::generate(&name);
    let public = ValidatorInfo {
        name: name.clone(),
        identity_key: keys.identity.public(),
        bls_key: keys.bls.public(),
        bls_pop: keys.bls.proof_of_possession(),
        p2p_address: p2p.to_string(),
        voting_power: 1,
    };
    public
        .check_fields()
        .with_context(|| format!("node name {name:?} (give --name)"))?;
    std::fs::create_dir_all(spec.home.join("data"))
        .with_context(|| format!("creating {}", spec.home.display()))?;
    let genesis_copy = spec.home.join("genesis.json");
    genesis
        .save(&genesis_copy)
        .with_context(|| format!("writing {}", genesis_copy.display()))?;
    let key_path = spec.home.join("validator.key.json");
    write_secret_file(&key_path, &ValidatorKeyFile::new(&keys))
        .with_context(|| format!("writing {}", key_path.display()))?;
    let config = NodeConfig {
        moniker: name,
        genesis_file: PathBuf::from("genesis.json"),
        validator_key_file: PathBuf::from("validator.key.json"),
        data_dir: PathBuf::from("data"),
        p2p_listen: p2p.to_string(),
        rpc_listen: spec.rpc.to_string(),
        peers: spec.peers.to_vec(),
        mempool: MempoolConfig::default(),
    };
    config
        .save(&config_path)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let mut text = serde_json::to_string_pretty(&public)?;
    text.push('\n');
    let public_path = spec.home.join(PUBLIC_FILE);
    std::fs::write(&public_path, &text)
        .with_context(|| format!("writing {}", public_path.display()))?;
    Ok(text)
}

/// Signs `kind` with `key` (nonce: `nonce`, or the node's next one for the sender), submits it
/// and, with `wait`, waits until it is committed. Prints one line either way; a transaction
/// that committed but failed is an error naming the reason.
pub fn submit(
    client: &RpcClient,
    key: &SigningKey,
    kind: TransactionKind,
    nonce: Option<u64>,
    wait: Option<Duration>,
) -> Result<()> {
    let status = client.get_ok("/v1/status")?;
    let chain_id = status["chain_id"]
        .as_str()
        .context("node status has no chain_id")?
        .to_string();
    let nonce = match nonce {
        Some(nonce) => nonce,
        None => {
            let account = client.get_ok(&format!("/v1/account/{}", key.public().address()))?;
            account["next_nonce"]
                .as_u64()
                .context("node's account answer has no next_nonce")?
        }
    };
    let tx = Transaction {
        chain_id,
        sender: key.public(),
        nonce,
        kind,
    }
    .sign(key)?;
    let body = serde_json::to_vec(&tx)?;
    let answer = client.post("/v1/tx", &body)?.ok()?;
    let hash = tx.id();
    if answer["hash"].as_str() != Some(hash.to_hex().as_str()) {
        bail!("node answered with an unexpected hash: {answer}");
    }
    match wait {
        None => {
            println!("{hash} nonce={nonce}");
            Ok(())
        }
        Some(timeout) => wait_committed(client, hash, nonce, timeout),
    }
}

fn wait_committed(client: &RpcClient, hash: Digest, nonce: u64, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = client.get_ok(&format!("/v1/tx/{hash}"))?;
        if state["status"] == "committed" {
            let height = state["height"].as_u64().unwrap_or_default();
            let block = state["block_hash"].as_str().unwrap_or_default();
            if state["result"] != "ok" {
                bail!(
                    "transaction {hash} (nonce {nonce}) committed at height {height} (block {block}) but failed: {}",
                    state["error"].as_str().unwrap_or("unknown reason")
                );
            }
            println!("committed {hash} nonce={nonce} height={height} block={block}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "transaction {hash} not committed within {} s (status: {})",
                timeout.as_secs(),
                state["status"]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The change a `tx validators` command asks for.
pub enum ChangeRequest {
    Add { info: PathBuf, power: Option<u64> },
    Remove { name: String },
    SetPower { name: String, power: u64 },
}

/// Builds the governance transaction for the node's current epoch and submits it.
pub fn propose(
    client: &RpcClient,
    key: &SigningKey,
    request: ChangeRequest,
    wait: Option<Duration>,
) -> Result<()> {
    let change = match request {
        ChangeRequest::Add { info, power } => {
            let text = std::fs::read_to_string(&info)
                .with_context(|| format!("reading {}", info.display()))?;
            let mut validator: ValidatorInfo = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a validator description (as `quorate init` writes)",
                    info.display()
                )
            })?;
            if let Some(power) = power {
                validator.voting_power = power;
            }
            ValidatorChange::Add { validator }
        }
        ChangeRequest::Remove { name } => ValidatorChange::Remove { name },
        ChangeRequest::SetPower { name, power } => ValidatorChange::SetPower { name, power },
    };
    change.check_fields()?;
    let status = client.get_ok("/v1/status")?;
    let epoch = Epoch(
        status["epoch"]
            .as_u64()
            .context("node status has no epoch")?,
    );
    submit(
        client,
        key,
        TransactionKind::Reconfigure {
            epoch,
            change: Box::new(change),
        },
        None,
        wait,
    )
}

/// Prints `GET /v1/validators` as a table.
pub fn print_validators(value: &Value) {
    println!(
        "epoch {}: {} validators, total power {}, quorum {}",
        value["epoch"],
        value["validators"].as_array().map_or(0, Vec::len),
        value["total_power"],
        value["quorum_power"]
    );
    for v in value["validators"].as_array().into_iter().flatten() {
        println!(
            "  {:>3}  {:<16} power {:<6} {}  {}",
            v["index"],
            v["name"].as_str().unwrap_or_default(),
            v["voting_power"],
            v["identity_key"].as_str().unwrap_or_default(),
            v["p2p_address"].as_str().unwrap_or_default(),
        );
    }
    let governance = &value["governance"];
    if let Some(scheduled) = governance["scheduled"].as_object() {
        println!(
            "scheduled: {} validators from the end of height {}",
            scheduled
                .get("validators")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            scheduled.get("height").cloned().unwrap_or_default()
        );
    }
    for proposal in governance["proposals"].as_array().into_iter().flatten() {
        println!(
            "proposed: {} ({} approvals of {})",
            proposal["change"],
            proposal["approvals"].as_array().map_or(0, Vec::len),
            governance["threshold"]
        );
    }
}
