//! Command-line interface (SPEC "CLI").

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use quorate_consensus::sim::{run_seeds, Behaviour, Setup, SimConfig};
use quorate_consensus::FaultInjection;
use quorate_crypto::SigningKey;
use quorate_genesis::{
    generate_testnet, write_secret_file, AccountKeyFile, ConsensusParams, Protocol, TestnetSpec,
    ValidatorKeyFile, ValidatorKeys,
};
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a new account key (or, with --validator, validator keys); prints the address.
    Keygen(KeygenArgs),
    /// Generate a testnet: genesis, one home directory per validator, funded account keys.
    Testnet(TestnetArgs),
    /// Deterministic simulation of many seeds: the real engines on a simulated network with
    /// delays, drops, partitions, crashes and Byzantine validators; checks safety and liveness.
    Sim(SimArgs),
}

#[derive(Args, Debug)]
struct SimArgs {
    /// Consensus protocol to simulate.
    #[arg(long, default_value = "hotstuff", value_parser = ["hotstuff"])]
    protocol: String,
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
    /// Run a deliberately broken engine: ignore-lock.
    #[arg(long, value_parser = ["ignore-lock"])]
    fault_inject: Option<String>,
    /// Simulated milliseconds to run after GST.
    #[arg(long, default_value_t = 8_000)]
    after_gst_ms: u64,
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
    /// Output directory (must not already hold a genesis.json).
    #[arg(long, default_value = "testnet")]
    dir: PathBuf,
    /// Node i listens for p2p on 127.0.0.1:P+2i and serves RPC on P+2i+1.
    #[arg(long, default_value_t = 26600)]
    base_port: u16,
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
    }
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
    let mut config = SimConfig::new(n, byzantine, args.behaviour);
    config.drop_probability = args.drop;
    config.asynchrony = !args.synchronous;
    config.after_gst_ms = args.after_gst_ms;
    config.fault = match args.fault_inject.as_deref() {
        Some("ignore-lock") => FaultInjection::IgnoreLock,
        _ => FaultInjection::None,
    };
    let setup = Setup::new(n).context("building the simulated validator set")?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |t| t.get()));
    let summary = run_seeds(&setup, &config, args.first_seed, args.seeds, threads);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{} n={} byzantine={} ({:?}) drop={} seeds={}: safety_violations={} liveness_failures={} \
             min_committed={} mean_committed={:.1} msgs/block={:.1} bytes/block={:.0} in {:.1}s",
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
            summary.msgs_per_block,
            summary.bytes_per_block,
            summary.elapsed_s
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
        dir: args.dir.clone(),
        base_port: args.base_port,
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
