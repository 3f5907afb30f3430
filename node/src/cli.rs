//! Command-line interface (SPEC "CLI").

use crate::client::RpcClient;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use quorate_consensus::sim::{run_seeds, Behaviour, CryptoMode, Setup, SimConfig};
use quorate_consensus::FaultInjection;
use quorate_crypto::{Address, Digest, SigningKey};
use quorate_genesis::{
    generate_testnet, write_secret_file, AccountKeyFile, ConsensusParams, Protocol, TestnetSpec,
    ValidatorKeyFile, ValidatorKeys,
};
use quorate_ledger::TransactionKind;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "quorate",
    version,
    about = "Quorate: a permissioned BFT ledger node"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether this is `quorate sim`.
    pub fn is_simulation(&self) -> bool {
        matches!(self.command, Command::Sim(_))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a new account key (or, with --validator, validator keys); prints the address.
    Keygen(KeygenArgs),
    /// Generate a testnet: genesis, one home directory per validator, funded account keys.
    Testnet(TestnetArgs),
    /// Deterministic simulation of many seeds: the real engines on a simulated network with
    /// delays, drops, partitions, crashes and Byzantine validators; checks safety and liveness.
    Sim(SimArgs),
    /// Make a new node's home: config.toml, a fresh validator key, a copy of the genesis and
    /// HOME/validator.public.json (what `tx validators add --info` takes).
    Init(InitArgs),
    /// Run one validator (configuration in HOME/config.toml). Stops cleanly on SIGINT/SIGTERM.
    Run(RunArgs),
    /// A local network: a testnet plus every validator as a child process, until Ctrl-C.
    Localnet(LocalnetArgs),
    /// Build, sign and submit a transaction.
    #[command(subcommand)]
    Tx(TxCommand),
    /// Ask a node about its chain.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Verify a chain from genesis, trusting only the genesis file; exit 1 naming the first
    /// height and check that fails.
    Audit(AuditArgs),
    /// Benchmark: real validators on loopback under a fixed offered load; appends to
    /// DIR/results.jsonl (one line per protocol × validators × rate).
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct AuditArgs {
    /// A validator's home directory: its database is read read-only (fine beside a running node).
    #[arg(long, conflicts_with = "rpc")]
    home: Option<PathBuf>,
    /// A node's RPC URL: blocks are downloaded from it and trusted no more than the database.
    #[arg(long)]
    rpc: Option<String>,
    /// The genesis file to trust (default: the one the home's config names).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// One JSON object: ok, blocks, transactions, epochs, head_height, head_hash, state_root, or
    /// failed_height and check.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Protocols, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "hotstuff")]
    protocol: Vec<Protocol>,
    /// Validator counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4")]
    validators: Vec<usize>,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Offered rates in transactions per second, comma-separated (one run each).
    #[arg(long, value_delimiter = ',', default_value = "2000")]
    rate: Vec<u64>,
    /// Transaction size in bytes (transfers have one fixed size; other sizes need opaque payloads).
    #[arg(long)]
    tx_size: Option<usize>,
    /// What the load is made of.
    #[arg(long, value_enum, default_value = "transfers")]
    payload: crate::bench::Payload,
    /// Validators crashed (never started) in each run, at most (n-1)/3.
    #[arg(long, default_value_t = 0)]
    faulty: usize,
    /// Output directory (results.jsonl, and runs/ with each run's testnet and logs).
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Funded accounts the load is spread over.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    /// Seconds to wait after the load for admitted transactions to commit.
    #[arg(long, default_value_t = 15)]
    drain: u64,
    /// Treat --rate as a ladder: for each protocol and validator count, stop climbing after the
    /// first rate that saturates the network (p50 over 2 s, the client behind its schedule, or
    /// what was offered not committing).
    #[arg(long)]
    until_saturated: bool,
    /// Keep each validator's database after its run (by default only the logs and
    /// latencies.csv stay: a matrix of opaque runs would leave tens of GB).
    #[arg(long)]
    keep_data: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The validator's home directory.
    #[arg(long)]
    home: PathBuf,
}

#[derive(Args, Debug)]
struct LocalnetArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    validators: u16,
    /// Consensus protocol of a new testnet (default hotstuff); an existing one must match.
    #[arg(long)]
    protocol: Option<Protocol>,
    /// Directory of the testnet (created if it holds no genesis.json; reused otherwise).
    #[arg(long, default_value = "localnet")]
    dir: PathBuf,
    /// Node i listens for p2p on 127.0.0.1:P+2i and serves RPC on P+2i+1.
    #[arg(long, default_value_t = 26600)]
    base_port: u16,
    /// Number of funded accounts.
    #[arg(long, default_value_t = 4)]
    accounts: usize,
}

#[derive(Subcommand, Debug)]
enum TxCommand {
    /// Transfer funds: quorate tx transfer --key FILE --to ADDR --amount N [--wait]
    Transfer(TransferArgs),
    /// Propose (or approve) a change to the validator set for the next epoch; signed by a
    /// member of governance.
    #[command(subcommand)]
    Validators(ValidatorsCommand),
}

#[derive(Args, Debug)]
struct InitArgs {
    /// The node's home directory (created; refused if it already holds a config.toml).
    #[arg(long)]
    home: PathBuf,
    /// The chain's genesis file (copied into the home).
    #[arg(long)]
    genesis: PathBuf,
    /// Where the node listens for peers and is dialled, e.g. /ip4/127.0.0.1/tcp/26700.
    #[arg(long, value_name = "MULTIADDR")]
    p2p: String,
    /// Where the node serves RPC, e.g. 127.0.0.1:26701.
    #[arg(long, value_name = "ADDR")]
    rpc: String,
    /// A node of the chain to reach (repeat for several).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    peers: Vec<String>,
    /// The node's name (default: the home directory's name).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args, Debug)]
struct GovernanceArgs {
    /// A governance member's account key file.
    #[arg(long)]
    key: PathBuf,
    /// The node's RPC URL.
    #[arg(long, default_value = DEFAULT_RPC)]
    rpc: String,
    /// Wait until the transaction is committed; print its height and block hash.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum ValidatorsCommand {
    /// Add the validator a `quorate init` described.
    Add {
        /// The node's validator.public.json.
        #[arg(long, value_name = "FILE")]
        info: PathBuf,
        /// Its voting power (default: the file's, 1 from init).
        #[arg(long)]
        power: Option<u64>,
        #[command(flatten)]
        common: GovernanceArgs,
    },
    /// Remove a validator by name.
    Remove {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        common: GovernanceArgs,
    },
    /// Set a validator's voting power.
    SetPower {
        #[arg(long)]
        name: String,
        #[arg(long)]
        power: u64,
        #[command(flatten)]
        common: GovernanceArgs,
    },
}

#[derive(Args, Debug)]
struct TransferArgs {
    /// The sender's account key file.
    #[arg(long)]
    key: PathBuf,
    /// Receiving address (hex).
    #[arg(long)]
    to: String,
    /// Amount to move (> 0).
    #[arg(long)]
    amount: u64,
    /// The node's RPC URL.
    #[arg(long, default_value = DEFAULT_RPC)]
    rpc: String,
    /// Nonce to use (default: the next one, asked of the node).
    #[arg(long)]
    nonce: Option<u64>,
    /// Wait until the transaction is committed; print its height and block hash.
    #[arg(long)]
    wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

#[derive(Subcommand, Debug)]
enum QueryCommand {
    /// Chain id, view, height, head hash, leader, validators, peers.
    Status(QueryArgs),
    /// Balance and nonce of an address.
    Account {
        address: String,
        #[command(flatten)]
        common: QueryArgs,
    },
    /// A committed block with its transactions and certificate.
    Block {
        height: u64,
        #[command(flatten)]
        common: QueryArgs,
    },
    /// Where a transaction is: pending, committed (height, block hash) or unknown.
    Tx {
        hash: String,
        #[command(flatten)]
        common: QueryArgs,
    },
    /// The validator set of the current epoch (with open proposals) or of `--epoch E`.
    Validators {
        #[arg(long)]
        epoch: Option<u64>,
        #[command(flatten)]
        common: QueryArgs,
    },
}

#[derive(Args, Debug)]
struct QueryArgs {
    /// The node's RPC URL.
    #[arg(long, default_value = DEFAULT_RPC)]
    rpc: String,
    /// Print the node's JSON answer as is.
    #[arg(long)]
    json: bool,
}

const DEFAULT_RPC: &str = "http://127.0.0.1:26601";

#[derive(Args, Debug)]
struct SimArgs {
    /// Consensus protocol to simulate: hotstuff or pbft.
    #[arg(long, default_value = "hotstuff")]
    protocol: Protocol,
    /// Number of validators.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=200))]
    validators: u16,
    /// Byzantine validators (default: the most tolerated, (n-1)/3).
    #[arg(long)]
    byzantine: Option<u16>,
    /// What the Byzantine validators do.
    #[arg(long, default_value = "random")]
    behaviour: Behaviour,
    /// Number of seeds (schedules) to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Probability that a message is lost (before GST; the network heals at GST).
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// A synchronous network: no partitions, crashes or long delays (GST at 0).
    #[arg(long)]
    synchronous: bool,
    /// Signatures: fast (keyed BLAKE3, simulation only) or real (BLS12-381).
    #[arg(long, default_value = "fast")]
    crypto: CryptoMode,
    /// Run a deliberately broken engine: ignore-lock (HotStuff), skip-prepare or
    /// lowest-prepared (PBFT).
    #[arg(long, value_parser = ["ignore-lock", "skip-prepare", "lowest-prepared"])]
    fault_inject: Option<String>,
    /// Simulated milliseconds to run after GST.
    #[arg(long, default_value_t = 8_000)]
    after_gst_ms: u64,
    /// Share of seeds (0 to 1) in which every honest validator crashes at one instant before
    /// GST and all restart together (not with --synchronous).
    #[arg(long, default_value_t = 0.0)]
    restart_all: f64,
    /// Reconfigure the validator set at random heights in every seed (a spare validator joins
    /// and leaves, honest validators' power changes) while the faults run.
    #[arg(long)]
    reconfigure: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// Generate validator keys (ed25519 identity + BLS voting key with proof of possession).
    #[arg(long)]
    validator: bool,
    /// Where to write the key file (mode 0600; never overwritten).
    /// Default: ./account.key.json, or ./validator.key.json with --validator.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Validator name recorded in the key file (with --validator).
    #[arg(long, default_value = "validator")]
    name: String,
}

#[derive(Args, Debug)]
struct TestnetArgs {
    /// Number of validators.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
    validators: u16,
    /// Consensus protocol.
    #[arg(long, default_value = "hotstuff")]
    protocol: Protocol,
    /// Number of funded accounts to create under DIR/accounts.
    #[arg(long, default_value_t = 4)]
    accounts: usize,
    /// Governance: accounts 0..K-1 may change the validator set, K/2+1 of them together.
    #[arg(long, default_value_t = 1, value_name = "K")]
    governance: usize,
    /// Output directory (must not already hold a genesis.json).
    #[arg(long, default_value = "testnet")]
    dir: PathBuf,
    /// Node i listens for p2p on 127.0.0.1:P+2i and serves RPC on P+2i+1.
    #[arg(long, default_value_t = 26600)]
    base_port: u16,
    /// One IPv4 address per validator, comma-separated: node i listens (p2p and RPC) on the
    /// i-th instead of 127.0.0.1, e.g. for validators in network namespaces.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<std::net::Ipv4Addr>,
    /// Chain id written into the genesis.
    #[arg(long, default_value = "quorate-testnet")]
    chain_id: String,
    /// Initial balance of each funded account.
    #[arg(long, default_value_t = 1_000_000_000)]
    balance: u64,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen(args),
        Command::Testnet(args) => testnet(args),
        Command::Sim(args) => sim(args),
        Command::Init(args) => {
            let text = crate::governance::init(&crate::governance::InitSpec {
                home: &args.home,
                genesis: &args.genesis,
                p2p: &args.p2p,
                rpc: &args.rpc,
                peers: &args.peers,
                name: args.name.as_deref(),
            })?;
            print!("{text}");
            eprintln!(
                "wrote {}",
                args.home.join(crate::governance::PUBLIC_FILE).display()
            );
            Ok(())
        }
        Command::Run(args) => run_node(args),
        Command::Localnet(args) => crate::localnet::localnet(
            args.validators,
            args.protocol,
            &args.dir,
            args.base_port,
            args.accounts,
        ),
        Command::Tx(TxCommand::Transfer(args)) => transfer(args),
        Command::Tx(TxCommand::Validators(command)) => validators(command),
        Command::Query(query) => self::query(query),
        Command::Audit(args) => {
            let ok = crate::audit::run(crate::audit::AuditArgs {
                home: args.home.as_deref(),
                rpc: args.rpc.as_deref(),
                genesis: args.genesis.as_deref(),
                json: args.json,
            })?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Bench(args) => crate::bench::bench(crate::bench::BenchSpec {
            protocols: args.protocol,
            validators: args.validators,
            duration_s: args.duration,
            rates: args.rate,
            tx_size: args.tx_size,
            payload: args.payload,
            faulty: args.faulty,
            out: args.out,
            accounts: args.accounts,
            drain_s: args.drain,
            until_saturated: args.until_saturated,
            keep_data: args.keep_data,
        }),
    }
}

fn run_node(args: RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quorate")
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(crate::node::run(&args.home));
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

fn transfer(args: TransferArgs) -> Result<()> {
    if args.amount == 0 {
        bail!("--amount must be greater than 0");
    }
    let to = Address::from_hex(&args.to).map_err(|e| anyhow::anyhow!("--to {:?}: {e}", args.to))?;
    let key = AccountKeyFile::load(&args.key)
        .with_context(|| format!("loading {}", args.key.display()))?;
    let client = RpcClient::new(&args.rpc)?;
    crate::governance::submit(
        &client,
        &key,
        TransactionKind::Transfer {
            to,
            amount: args.amount,
        },
        args.nonce,
        args.wait
            .then(|| std::time::Duration::from_secs(args.timeout)),
    )
}

fn validators(command: ValidatorsCommand) -> Result<()> {
    use crate::governance::ChangeRequest;
    let (request, common) = match command {
        ValidatorsCommand::Add {
            info,
            power,
            common,
        } => (ChangeRequest::Add { info, power }, common),
        ValidatorsCommand::Remove { name, common } => (ChangeRequest::Remove { name }, common),
        ValidatorsCommand::SetPower {
            name,
            power,
            common,
        } => (ChangeRequest::SetPower { name, power }, common),
    };
    let key = AccountKeyFile::load(&common.key)
        .with_context(|| format!("loading {}", common.key.display()))?;
    let client = RpcClient::new(&common.rpc)?;
    crate::governance::propose(
        &client,
        &key,
        request,
        common
            .wait
            .then(|| std::time::Duration::from_secs(common.timeout)),
    )
}

fn query(command: QueryCommand) -> Result<()> {
    let (path, common) = match &command {
        QueryCommand::Status(common) => ("/v1/status".to_string(), common),
        QueryCommand::Account { address, common } => {
            Address::from_hex(address).map_err(|e| anyhow::anyhow!("address {address:?}: {e}"))?;
            (format!("/v1/account/{address}"), common)
        }
        QueryCommand::Block { height, common } => (format!("/v1/block/{height}"), common),
        QueryCommand::Tx { hash, common } => {
            Digest::from_hex(hash).map_err(|e| anyhow::anyhow!("hash {hash:?}: {e}"))?;
            (format!("/v1/tx/{hash}"), common)
        }
        QueryCommand::Validators { epoch, common } => match epoch {
            Some(epoch) => (format!("/v1/validators?epoch={epoch}"), common),
            None => ("/v1/validators".to_string(), common),
        },
    };
    let client = RpcClient::new(&common.rpc)?;
    let value = client.get_ok(&path)?;
    if common.json {
        println!("{value}");
        return Ok(());
    }
    if let QueryCommand::Validators { .. } = command {
        crate::governance::print_validators(&value);
        return Ok(());
    }
    match &value {
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                match item {
                    serde_json::Value::String(text) => println!("{key}: {text}"),
                    serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                        println!("{key}: {}", serde_json::to_string_pretty(item)?)
                    }
                    other => println!("{key}: {other}"),
                }
            }
        }
        other => println!("{other}"),
    }
    Ok(())
}

fn sim(args: SimArgs) -> Result<()> {
    let n = args.validators as usize;
    let byzantine = args.byzantine.map_or((n - 1) / 3, |b| b as usize);
    if byzantine >= n {
        bail!("--byzantine {byzantine} must be below --validators {n}");
    }
    if !(0.0..=1.0).contains(&args.drop) {
        bail!("--drop {} must be between 0 and 1", args.drop);
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if !args.behaviour.supports(args.protocol) {
        bail!(
            "--behaviour {:?} is not simulated for {} (poison is HotStuff's alone)",
            args.behaviour,
            args.protocol
        );
    }
    let mut config = SimConfig::new(n, byzantine, args.behaviour);
    config.protocol = args.protocol;
    config.drop_probability = args.drop;
    config.asynchrony = !args.synchronous;
    config.after_gst_ms = args.after_gst_ms;
    if !(0.0..=1.0).contains(&args.restart_all) {
        bail!("--restart-all {} must be between 0 and 1", args.restart_all);
    }
    config.restart_all = args.restart_all;
    config.reconfigure = args.reconfigure;
    config.fault = match args.fault_inject.as_deref() {
        None => FaultInjection::None,
        Some(name) => {
            let (fault, protocol) = match name {
                "ignore-lock" => (FaultInjection::IgnoreLock, Protocol::HotStuff),
                "skip-prepare" => (FaultInjection::SkipPrepare, Protocol::Pbft),
                _ => (FaultInjection::LowestPrepared, Protocol::Pbft),
            };
            if protocol != args.protocol {
                bail!(
                    "--fault-inject {name} breaks {protocol}, not {}",
                    args.protocol
                );
            }
            fault
        }
    };
    let setup = Setup::new(n, args.crypto).context("building the simulated validator set")?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |t| t.get()));
    let summary = run_seeds(&setup, &config, args.first_seed, args.seeds, threads);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} n={} byzantine={} ({:?}) drop={} seeds={}: safety_violations={} liveness_failures={} \
             min_committed={} mean_committed={:.1} committed/s={:.2} msgs/block={:.1} \
             bytes/block={:.0} lock_refusals={} epochs={:.2} descendant_proofs={} crypto={:?} \
             in {:.1}s ({:.1} seeds/s)",
            summary.protocol,
            summary.validators,
            summary.byzantine,
            summary.behaviour,
            summary.drop,
            summary.seeds,
            summary.safety_violations,
            summary.liveness_failures,
            summary.min_committed,
            summary.mean_committed,
            summary.committed_per_s,
            summary.msgs_per_block,
            summary.bytes_per_block,
            summary.lock_refusals,
            summary.mean_epochs,
            summary.descendant_proofs,
            summary.crypto,
            summary.elapsed_s,
            summary.seeds_per_s
        );
        if let (Some(seed), Some(what)) = (summary.first_violating_seed, &summary.first_violation) {
            println!("first violation: seed {seed}: {what}");
        }
    }
    // A violation in a healthy engine is a failure; with --fault-inject it is the point.
    if config.fault == FaultInjection::None && summary.safety_violations > 0 {
        bail!(
            "{} seeds violated safety (first: seed {:?})",
            summary.safety_violations,
            summary.first_violating_seed
        );
    }
    if config.fault == FaultInjection::None && summary.liveness_failures > 0 {
        bail!(
            "{} seeds made no progress after GST (first: seed {:?})",
            summary.liveness_failures,
            summary.first_stalled_seed
        );
    }
    Ok(())
}

fn keygen(args: KeygenArgs) -> Result<()> {
    if args.validator {
        let out = args
            .out
            .unwrap_or_else(|| PathBuf::from("validator.key.json"));
        let keys = ValidatorKeys::generate(&args.name);
        write_secret_file(&out, &ValidatorKeyFile::new(&keys))
            .with_context(|| format!("writing {}", out.display()))?;
        println!("identity_key={}", keys.identity.public());
        println!("bls_key={}", keys.bls.public());
        println!("bls_pop={}", keys.bls.proof_of_possession());
        eprintln!("wrote {}", out.display());
    } else {
        let out = args
            .out
            .unwrap_or_else(|| PathBuf::from("account.key.json"));
        let key = SigningKey::generate();
        write_secret_file(&out, &AccountKeyFile::new(&key))
            .with_context(|| format!("writing {}", out.display()))?;
        println!("{}", key.public().address());
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn testnet(args: TestnetArgs) -> Result<()> {
    if args.accounts > 100_000 {
        bail!("--accounts {} is more than 100000", args.accounts);
    }
    let genesis_time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_millis() as u64;
    let spec = TestnetSpec {
        validators: args.validators as usize,
        protocol: args.protocol,
        accounts: args.accounts,
        governance: args.governance,
        dir: args.dir.clone(),
        base_port: args.base_port,
        hosts: args.hosts,
        chain_id: args.chain_id,
        initial_balance: args.balance,
        genesis_time_ms,
        params: ConsensusParams::default(),
    };
    let nodes = generate_testnet(&spec)
        .with_context(|| format!("generating testnet in {}", args.dir.display()))?;
    for node in nodes {
        println!("{node}");
    }
    Ok(())
}
