//! `chaos`: a fault campaign on real `quorate` processes (what `scripts/chaos.sh` runs).
//!
//! N validators, each in its own network namespace behind an emulated link; a load client that
//! records every acknowledgement; a nemesis that kills, pauses, partitions, slows and skews them
//! at seeded random instants; then everything is healed and a checker compares what the client
//! was told with what every node holds, and `quorate audit` verifies every home. One summary on
//! stderr, one JSON line appended to the results file, a non-zero exit on any loss, divergence,
//! crash or audit failure, naming the seed to replay.

mod check;
mod http;
mod load;
mod nemesis;
mod net;
mod procs;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nemesis::{parse_faults, Nemesis};
use quorate_consensus::sim::Rng;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Fault campaign on real quorate validators in network namespaces")]
struct Args {
    /// hotstuff or pbft.
    #[arg(long, default_value = "hotstuff")]
    protocol: String,
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// How long the nemesis runs (the checks come after).
    #[arg(long, default_value_t = 2.0)]
    minutes: f64,
    /// Seeds the fault schedule (kinds, victims, durations) and the load.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to draw from, comma-separated (default: all of kill9, pause, isolate, split,
    /// lossy, slow, skew).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Funded accounts the load client sends from and to.
    #[arg(long, default_value_t = 48)]
    accounts: usize,
    /// Link delay and jitter in ms (every validator-to-validator packet).
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
    #[arg(long, default_value_t = 2)]
    jitter_ms: u64,
    /// The most resident memory any node may reach, in MiB.
    #[arg(long, default_value_t = 512)]
    rss_bound_mb: u64,
    /// The quorate binary.
    #[arg(long, default_value = "target/release/quorate")]
    quorate: PathBuf,
    /// Where the homes go (default: a fresh directory under /tmp, removed after a clean run).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The results file one JSON line is appended to.
    #[arg(long, default_value = "target/chaos/results.jsonl")]
    results: PathBuf,
}

/// Every node's height as its RPC last reported it, and the longest time the highest of them
/// stood still.
pub struct Monitor {
    heights: Mutex<Vec<u64>>,
    quorum_lost: AtomicBool,
    longest_stall_ms: AtomicU64,
    longest_stall_with_quorum_ms: AtomicU64,
    stop: AtomicBool,
}

impl Monitor {
    pub fn heights(&self) -> Vec<u64> {
        self.heights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub fn max_height(&self) -> u64 {
        self.heights().into_iter().max().unwrap_or(0)
    }
    pub fn min_height(&self) -> u64 {
        self.heights().into_iter().min().unwrap_or(0)
    }
    pub fn set_quorum_lost(&self, lost: bool) {
        self.quorum_lost.store(lost, Ordering::Relaxed);
    }

    fn run(self: Arc<Self>, rpcs: Vec<SocketAddr>) -> Vec<std::thread::JoinHandle<()>> {
        let mut threads = Vec::new();
        for (i, rpc) in rpcs.into_iter().enumerate() {
            let monitor = self.clone();
            threads.push(std::thread::spawn(move || {
                while !monitor.stop.load(Ordering::Relaxed) {
                    if let Some(h) = check::height(rpc) {
                        monitor.heights.lock().unwrap_or_else(|p| p.into_inner())[i] = h;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }));
        }
        let monitor = self;
        threads.push(std::thread::spawn(move || {
            let (mut top, mut since) = (0, Instant::now());
            let mut with_quorum_since = Instant::now();
            while !monitor.stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let height = monitor.max_height();
                if height > top {
                    (top, since, with_quorum_since) = (height, now, now);
                }
                if monitor.quorum_lost.load(Ordering::Relaxed) {
                    with_quorum_since = now;
                }
                let stall = now.duration_since(since).as_millis() as u64;
                monitor.longest_stall_ms.fetch_max(stall, Ordering::Relaxed);
                let stall = now.duration_since(with_quorum_since).as_millis() as u64;
                monitor
                    .longest_stall_with_quorum_ms
                    .fetch_max(stall, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
        threads
    }
}

fn main() {
    let args = Args::parse();
    match campaign(&args) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!(
                "chaos FAILED: replay with --seed {} --protocol {} --validators {}",
                args.seed, args.protocol, args.validators
            );
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("chaos: {error:#}");
            std::process::exit(2);
        }
    }
}

fn campaign(args: &Args) -> Result<bool> {
    if args.protocol != "hotstuff" && args.protocol != "pbft" {
        bail!("--protocol {}: expected hotstuff or pbft", args.protocol);
    }
    if args.validators < 4 {
        bail!(
            "--validators {}: a campaign needs at least 4 (f >= 1)",
            args.validators
        );
    }
    let faults = parse_faults(&args.faults)?;
    if faults.contains(&nemesis::Fault::Skew) {
        procs::libfaketime()
            .context("the skew fault needs libfaketime (apt-get install faketime)")?;
    }
    let quorate = std::fs::canonicalize(&args.quorate)
        .with_context(|| format!("{} (build it first)", args.quorate.display()))?;
    // Apart from any other run, also one in this process.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tag = (std::process::id().wrapping_mul(7919) ^ nanos) % 100_000;
    // Kept unless the run passes (also when it stops with an error): the evidence.
    let (dir, remove_if_ok) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            tempfile::Builder::new()
                .prefix("quorate-chaos-")
                .tempdir()?
                .keep(),
            true,
        ),
    };
    // A copy of its own: rebuilding target/ during a long campaign must not change (or, while
    // the linker writes it, break) the binary the nemesis restarts.
    std::fs::create_dir_all(&dir)?;
    let quorate = {
        let copy = dir.join("quorate");
        std::fs::copy(&quorate, &copy)
            .with_context(|| format!("copying {} to {}", quorate.display(), copy.display()))?;
        copy
    };
    let started = Instant::now();
    let net = net::Net::create(args.validators, tag)?;
    let mut emulator = net::Emulator::start(&net, args.delay_ms, args.jitter_ms, args.seed)?;

    let hosts: Vec<String> = net.hosts.iter().map(|h| h.to_string()).collect();
    let testnet = dir.join("net");
    let output = std::process::Command::new(&quorate)
        .args(["testnet", "--validators", &args.validators.to_string()])
        .args(["--protocol", &args.protocol])
        .args(["--accounts", &args.accounts.to_string()])
        .args(["--base-port", "26600", "--hosts", &hosts.join(",")])
        .arg("--dir")
        .arg(&testnet)
        .output()?;
    if !output.status.success() {
        bail!(
            "quorate testnet: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // A heartbeat (an empty block a second when idle): the monitor reads progress and stalls
    // from heights, and the checks wait for every node to reach the highest one, which on a
    // chain that stops when idle a laggard reaches only through ledger sync's long-stall path.
    let genesis_path = testnet.join("genesis.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis_path)?)?;
    value["params"]["idle_interval_ms"] = serde_json::json!(1_000);
    std::fs::write(&genesis_path, value.to_string())?;
    let genesis = quorate_genesis::Genesis::load(&genesis_path)?;
    let homes: Vec<PathBuf> = (0..args.validators)
        .map(|i| testnet.join(format!("node{i}")))
        .collect();
    let rpcs: Vec<SocketAddr> = net
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| SocketAddr::from((*h, 26600 + 2 * i as u16 + 1)))
        .collect();
    let mut nodes = procs::Nodes::new(&quorate, homes.clone(), &net.namespaces);
    for i in 0..args.validators {
        nodes.start(i, 0)?;
    }
    let monitor = Arc::new(Monitor {
        heights: Mutex::new(vec![0; args.validators]),
        quorum_lost: AtomicBool::new(false),
        longest_stall_ms: AtomicU64::new(0),
        longest_stall_with_quorum_ms: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let monitor_threads = monitor.clone().run(rpcs.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while monitor.min_height() < 2 {
        if Instant::now() > deadline {
            bail!(
                "the network did not start: heights {:?} (logs in {})",
                monitor.heights(),
                testnet.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "chaos: {} x {} in namespaces {}..; homes in {}",
        args.validators,
        args.protocol,
        net.namespaces[0],
        testnet.display()
    );

    let accounts = (0..args.accounts)
        .map(|j| {
            let key = quorate_genesis::AccountKeyFile::load(
                &testnet.join(format!("accounts/account-{j}.json")),
            )?;
            Ok(load::Account {
                address: key.public().address(),
                key,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let load = load::Load::start(&genesis.chain_id, accounts, rpcs.clone(), 8, args.seed);

    let mut nemesis = Nemesis {
        rng: Rng::new(args.seed),
        nodes: &mut nodes,
        emulator: &mut emulator,
        monitor: &monitor,
        faults,
        injected: Default::default(),
        commits_without_quorum: 0,
        split_resumed_s: Vec::new(),
        slow_recoveries: 0,
        crashes: Vec::new(),
        log: Vec::new(),
        start: Instant::now(),
    };
    let end = Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    // A moment of load before the first fault.
    nemesis.wait(Duration::from_secs(3))?;
    while Instant::now() < end {
        nemesis.step()?;
    }
    let injected = nemesis.injected.clone();
    let (commits_without_quorum, slow_recoveries) =
        (nemesis.commits_without_quorum, nemesis.slow_recoveries);
    let mut crashes = nemesis.crashes.clone();
    let split_resumed_s = nemesis.split_resumed_s.clone();

    // Heal is implied (each step heals its fault). Let the in-flight transactions land.
    load.drain();
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    let mut last = usize::MAX;
    while Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_secs(3));
        let acks = load.acks.lock().unwrap_or_else(|p| p.into_inner()).len();
        if acks == last {
            break;
        }
        last = acks;
    }
    let stats = load.stats.clone();
    let acks = load.stop();
    monitor.stop.store(true, Ordering::Relaxed);
    for thread in monitor_threads {
        let _ = thread.join();
    }
    let genesis_balances: Vec<_> = genesis
        .accounts
        .iter()
        .map(|a| (a.address, a.balance))
        .collect();
    let verdict = check::check(&rpcs, &acks, &genesis_balances)?;
    nodes.sample_rss();
    let mut clean_stops = 0;
    for i in 0..args.validators {
        if nodes.stop(i, Duration::from_secs(20)) {
            clean_stops += 1;
        }
    }
    if let Some((i, status)) = nodes.crashed() {
        crashes.push(format!("node{i} exited by itself ({status})"));
    }
    let mut audits_passed = 0;
    let mut audit_failures = Vec::new();
    for home in &homes {
        let output = std::process::Command::new(&quorate)
            .args(["audit", "--json", "--home"])
            .arg(home)
            .output()?;
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        if output.status.success() && report["ok"] == true {
            audits_passed += 1;
        } else {
            audit_failures.push(format!(
                "{}: {} {}",
                home.display(),
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    let peak_rss_mb: Vec<u64> = nodes.nodes.iter().map(|n| n.peak_rss_kb / 1024).collect();
    let restarts: u64 = nodes.nodes.iter().map(|n| n.starts - 1).sum();
    let over_bound = peak_rss_mb.iter().any(|m| *m > args.rss_bound_mb);
    let longest_stall_s = monitor.longest_stall_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let longest_stall_with_quorum_s =
        monitor.longest_stall_with_quorum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
    let acknowledged = acks.len() as u64;
    let ok = verdict.lost == 0
        && verdict.divergent == 0
        && verdict.applied_twice == 0
        && verdict.balance_mismatches == 0
        && commits_without_quorum == 0
        && split_resumed_s.iter().all(Option::is_some)
        && crashes.is_empty()
        && audit_failures.is_empty()
        && clean_stops == args.validators
        && !over_bound
        && acknowledged > 0;
    let faults_total: u64 = injected.values().sum();
    let fault_list: Vec<String> = injected.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "chaos {}: {} {} validators, seed {}, {:.1} min of faults: {} faults ({}), {} restarts; \
         {} transactions acknowledged, lost {}, divergent {}, applied twice {}, balance \
         mismatches {}, height {}; longest stall {:.1} s ({:.1} s with a quorum up); commits \
         without quorum {}, splits resumed {}/{}; slow recoveries {}; crashes {}; clean stops \
         {}/{}; audit {}/{}; \
         peak RSS {:?} MiB \
         (bound {}); packets forwarded {}, dropped {}",
        if ok { "PASSED" } else { "FAILED" },
        args.protocol,
        args.validators,
        args.seed,
        args.minutes,
        faults_total,
        fault_list.join(", "),
        restarts,
        acknowledged,
        verdict.lost,
        verdict.divergent,
        verdict.applied_twice,
        verdict.balance_mismatches,
        verdict.height,
        longest_stall_s,
        longest_stall_with_quorum_s,
        commits_without_quorum,
        split_resumed_s.iter().flatten().count(),
        split_resumed_s.len(),
        slow_recoveries,
        crashes.len(),
        clean_stops,
        args.validators,
        audits_passed,
        homes.len(),
        peak_rss_mb,
        args.rss_bound_mb,
        emulator.stats.forwarded.load(Ordering::Relaxed),
        emulator.stats.dropped.load(Ordering::Relaxed),
    );
    for problem in verdict
        .first_lost
        .iter()
        .map(|l| format!("first lost: {l}"))
        .chain(
            verdict
                .first_divergent
                .map(|h| format!("first divergent height: {h}")),
        )
        .chain(
            verdict
                .first_balance_mismatch
                .iter()
                .map(|b| format!("first balance mismatch: {b}")),
        )
        .chain(crashes.iter().cloned())
        .chain(audit_failures.iter().map(|a| format!("audit failed: {a}")))
    {
        eprintln!("  {problem}");
    }
    let line = json!({
        "ok": ok,
        "protocol": args.protocol,
        "validators": args.validators,
        "seed": args.seed,
        "minutes": args.minutes,
        "faults": injected,
        "faults_total": faults_total,
        "restarts": restarts,
        "acknowledged": acknowledged,
        "submitted": stats.submitted.load(Ordering::Relaxed),
        "resent": stats.resent.load(Ordering::Relaxed),
        "lost": verdict.lost,
        "divergent": verdict.divergent,
        "applied_twice": verdict.applied_twice,
        "included_twice": verdict.included_twice,
        "balance_mismatches": verdict.balance_mismatches,
        "height": verdict.height,
        "transactions": verdict.transactions,
        "longest_stall_s": longest_stall_s,
        "longest_stall_with_quorum_s": longest_stall_with_quorum_s,
        "commits_without_quorum": commits_without_quorum,
        "split_resumed_s": split_resumed_s,
        "slow_recoveries": slow_recoveries,
        "crashes": crashes,
        "audits_passed": audits_passed,
        "clean_stops": clean_stops,
        "peak_rss_mb": peak_rss_mb,
        "rss_bound_mb": args.rss_bound_mb,
        "wall_s": started.elapsed().as_secs(),
        "git_rev": std::env::var("QUORATE_GIT_REV").unwrap_or_else(|_| "unknown".into()),
    });
    if let Some(parent) = args.results.parent() {
        std::fs::create_dir_all(parent)?;
    }
    use std::io::Write;
    let mut results = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.results)
        .with_context(|| format!("opening {}", args.results.display()))?;
    writeln!(results, "{line}")?;
    println!("{line}");
    drop(nodes);
    drop(emulator);
    drop(net);
    if ok && remove_if_ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("  homes and logs kept in {}", dir.display());
    }
    Ok(ok)
}
