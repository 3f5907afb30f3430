//! `quorate bench`: real validator processes on loopback, a load client that sends pre-signed
//! transfers (or, with `--payload opaque`, unsigned payloads of `--tx-size` bytes on a genesis that
//! allows them) at a fixed offered rate, and one line of results per run in `DIR/results.jsonl`
//! (SPEC "Benchmark output").
//!
//! Per run: a fresh testnet under `DIR/runs/`, `n - faulty` validators started (the `faulty` ones
//! are crashed: never started, yet still in the leader rotation), a wait until every live
//! validator is connected to every other, then `duration` seconds of load. Every transaction
//! is signed (and encoded) before the clock starts; each account's transactions go to one node
//! (so its nonces arrive in order), in binary `POST /v1/txs` requests every 10 ms. Latency is submit-to-commit as the client sees it: the time the request
//! carrying the transaction was sent to the time the client read the committed block listing it
//! (the client follows the first live node's blocks). Throughput counts transactions seen
//! committed inside the load window. CPU is each node's user+system time over the window (from
//! /proc), RSS its peak resident set; messages and bytes are the nodes' own p2p counters
//! (`/metrics`) over the window, divided by the blocks committed in it. Each run directory gets
//! `latencies.csv` (submit time and latency of every committed transaction).

use crate::client::KeepAlive;
use crate::localnet::{spawn_validator, stop_validators};
use crate::rpc::{BINARY, MAX_TXS_PER_REQUEST};
use anyhow::{bail, Context, Result};
use quorate_genesis::{
    generate_testnet, AccountKeyFile, ConsensusParams, NodeConfig, Protocol, TestnetSpec,
};
use quorate_ledger::{codec, SignedTransaction, Transaction, TransactionKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How the load is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// Signed transfers that every node verifies and executes.
    Transfers,
    /// Unsigned bytes of `--tx-size` (default 512) that are ordered and stored but not executed;
    /// the bench's genesis sets `allow_opaque_payloads` (every other chain refuses them).
    Opaque,
}

pub struct BenchSpec {
    pub protocols: Vec<Protocol>,
    pub validators: Vec<usize>,
    pub duration_s: u64,
    pub rates: Vec<u64>,
    pub tx_size: Option<usize>,
    pub payload: Payload,
    pub faulty: usize,
    pub out: PathBuf,
    pub accounts: usize,
    /// Seconds after the load window to wait for what was admitted to commit.
    pub drain_s: u64,
    /// Stop each (protocol, n) ladder after its first saturated rate ([`saturated`]).
    pub until_saturated: bool,
    /// Keep the validators' databases after each run.
    pub keep_data: bool,
}

/// A run is saturated when the network no longer keeps up with what is offered: its median
/// latency passed 2 s, the client fell more than 10% behind its sending schedule, under 95% of
/// what was sent committed by the end of the drain, or the window's committed rate fell under
/// 80% of the offered one (not 90%+: at low rates the window's edges weigh).
pub fn saturated(result: &Value) -> bool {
    let num = |k: &str| result[k].as_f64().unwrap_or(0.0);
    num("latency_p50_ms") > 2000.0
        || num("send_s") > 1.1 * num("duration_s")
        || num("committed_tx") < 0.95 * num("sent_tx")
        || num("tps") < 0.8 * num("offered_tps")
}

const TICK: Duration = Duration::from_millis(10);
const NOT_YET: u64 = u64::MAX;
/// Committed, but recorded as failed (it did not apply).
const FAILED: u64 = u64::MAX - 1;

pub fn bench(spec: BenchSpec) -> Result<()> {
    if spec.duration_s == 0 {
        bail!("--duration must be at least 1 second");
    }
    if spec.accounts < 2 {
        bail!("--accounts must be at least 2");
    }
    std::fs::create_dir_all(&spec.out)
        .with_context(|| format!("creating {}", spec.out.display()))?;
    let results_path = spec.out.join("results.jsonl");
    let git_rev = git_rev();
    for &protocol in &spec.protocols {
        for &n in &spec.validators {
            if n < 1 || spec.faulty * 3 >= n {
                bail!(
                    "--faulty {} with {n} validators: at most {} may be faulty",
                    spec.faulty,
                    n.saturating_sub(1) / 3
                );
            }
            let mut rates = spec.rates.clone();
            if spec.until_saturated {
                rates.sort_unstable();
                rates.dedup();
            }
            for rate in rates {
                if rate == 0 {
                    bail!("--rate must be positive");
                }
                let mut result = run_one(&spec, protocol, n, rate)
                    .with_context(|| format!("bench {protocol} n={n} rate={rate}"))?;
                result["git_rev"] = json!(git_rev);
                let line = serde_json::to_string(&result)?;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&results_path)
                    .with_context(|| format!("opening {}", results_path.display()))?;
                writeln!(file, "{line}")?;
                println!(
                    "{protocol} n={n} faulty={} offered={rate}/s: {:.0} tx/s committed, p50 {} ms, p99 {} ms, {} blocks, {:.2} cpu-s/node, {:.0} MB rss/node",
                    spec.faulty,
                    result["tps"].as_f64().unwrap_or(0.0),
                    result["latency_p50_ms"],
                    result["latency_p99_ms"],
                    result["blocks"],
                    result["cpu_s_per_node"].as_f64().unwrap_or(0.0),
                    result["rss_mb_per_node"].as_f64().unwrap_or(0.0),
                );
                if spec.until_saturated && saturated(&result) {
                    println!(
                        "{protocol} n={n}: saturated at {rate}/s offered; higher rates skipped"
                    );
                    break;
                }
            }
        }
    }
    println!("results appended to {}", results_path.display());
    Ok(())
}

fn git_rev() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A base port with `count` consecutive free ports after it on 127.0.0.1, below the kernel's
/// ephemeral range (`ip_local_port_range`): a port in it can be taken, between this probe and a
/// validator's bind, as the local port of an outgoing connection (the validators dial each other).
fn free_base_port(count: u16) -> Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = 10_000u16;
    if ephemeral_low < low + count {
        bail!("no room for {count} ports between {low} and the ephemeral range at {ephemeral_low}");
    }
    let span = u64::from(ephemeral_low - count - low);
    let seed = std::process::id() as u64 ^ crate::metrics::now_ms();
    for attempt in 0..200u64 {
        let base = low + (seed.wrapping_mul(2654435761).wrapping_add(attempt * 7919) % span) as u16;
        let all_free =
            (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    bail!("found no {count} consecutive free ports on 127.0.0.1 below {ephemeral_low}")
}

/// One live validator process.
struct Node {
    index: usize,
    child: Child,
    rpc: String,
}

struct Sample {
    cpu_ticks: u64,
    sent_messages: u64,
    sent_bytes: u64,
    timeouts: u64,
}

fn proc_cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn proc_peak_rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed VmHWM")?
        .parse()?)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn sample(node: &Node) -> Result<Sample> {
    let mut client = KeepAlive::new(&node.rpc);
    let (_, body) = client.request("GET", "/metrics", b"")?;
    let text = String::from_utf8_lossy(&body);
    Ok(Sample {
        cpu_ticks: proc_cpu_ticks(node.child.id())?,
        sent_messages: metric(&text, "quorate_p2p_sent_messages_total"),
        sent_bytes: metric(&text, "quorate_p2p_sent_bytes_total"),
        timeouts: metric(&text, "quorate_view_timeouts_total"),
    })
}

fn get_json(client: &mut KeepAlive, path: &str) -> Result<(u16, Value)> {
    let (status, body) = client.request("GET", path, b"")?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn status(rpc: &str) -> Option<Value> {
    let mut client = KeepAlive::new(rpc);
    let (status, body) = get_json(&mut client, "/v1/status").ok()?;
    (status == 200).then_some(body)
}

fn height(rpc: &str) -> Option<u64> {
    status(rpc)?["height"].as_u64()
}

/// How many validators the node is connected to.
fn peers(rpc: &str) -> Option<usize> {
    Some(status(rpc)?["peers"].as_u64()? as usize)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run_one(spec: &BenchSpec, protocol: Protocol, n: usize, rate: u64) -> Result<Value> {
    let dir = spec
        .out
        .join("runs")
        .join(format!("{protocol}-n{n}-f{}-r{rate}", spec.faulty));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let base_port = free_base_port(2 * n as u16)?;
    generate_testnet(&TestnetSpec {
        validators: n,
        protocol,
        accounts: spec.accounts,
        governance: 1,
        dir: dir.clone(),
        base_port,
        hosts: Vec::new(),
        chain_id: "quorate-bench".into(),
        initial_balance: 1_000_000_000_000,
        genesis_time_ms: crate::metrics::now_ms(),
        params: bench_params(n, spec.payload),
    })
    .with_context(|| format!("generating the testnet in {}", dir.display()))?;

    // Sign everything before starting anything.
    let total = rate
        .checked_mul(spec.duration_s)
        .context("rate × duration overflows")? as usize;
    let signed = match spec.payload {
        Payload::Transfers => presign(&dir, spec.accounts, total)?,
        Payload::Opaque => opaque(
            &dir,
            spec.accounts,
            total,
            spec.tx_size.unwrap_or(OPAQUE_SIZE),
        )?,
    };
    let tx_size = signed.first().map_or(0, |(_, encoded)| encoded.len());
    if let Some(size) = spec.tx_size {
        if size != tx_size {
            bail!("--tx-size {size}: a signed transfer is {tx_size} bytes; other sizes need --payload opaque");
        }
    }

    let exe = std::env::current_exe().context("locating the quorate binary")?;
    let live = n - spec.faulty;
    let mut nodes = Vec::new();
    for index in 0..live {
        let home = dir.join(format!("node{index}")).canonicalize()?;
        let config = NodeConfig::load(&home.join("config.toml"))?;
        let child = spawn_validator(&exe, &home, &home.join("node.log"))?;
        nodes.push(Node {
            index,
            child,
            rpc: config.rpc_listen,
        });
    }
    let outcome = measure(spec, &nodes, &signed, rate, tx_size, &dir);
    stop_validators(nodes.into_iter().map(|n| (n.index, n.child)).collect());
    if !spec.keep_data {
        for index in 0..live {
            let data = dir.join(format!("node{index}")).join("data");
            if let Err(error) = std::fs::remove_dir_all(&data) {
                eprintln!("warning: deleting {}: {error}", data.display());
            }
        }
    }
    let mut result = outcome?;
    result["protocol"] = json!(protocol.to_string());
    result["validators"] = json!(n);
    result["faulty"] = json!(spec.faulty);
    let params = bench_params(n, spec.payload);
    result["view_timeout_ms"] = json!(params.view_timeout_ms);
    result["max_batch_delay_ms"] = json!(params.max_batch_delay_ms);
    Ok(result)
}

/// The genesis parameters of a bench network of `n` validators: the defaults, with opaque
/// payloads allowed where the load is made of them, and, because all `n` processes share this
/// one machine's cores, the clocks that assume a network of separate machines stretched with n:
/// a process that waits its turn for a core looks to its peers like a slow link, so the view
/// timeout grows by 40 ms per validator over the default (n=100: 4 s). And a batch waits longer
/// to fill: each of the n validators seals its own and sends it to the n-1 others, which each
/// store it, so the batches the machine handles grow with n² over the delay. The delay grows
/// as n² too, from the default at n=4 to 200 ms from n=13 on (n=10: 125 ms): at n=16, 5,000
/// offered opaque payloads commit at p50 288 ms with 200 ms where 32 ms left them at 1,139 ms
/// (3,337 tx/s committed), and n=10 commits 28,171 tx/s at p50 474 ms where 20 ms made 22,559.
pub fn bench_params(n: usize, payload: Payload) -> ConsensusParams {
    let defaults = ConsensusParams::default();
    let n = n as u64;
    ConsensusParams {
        allow_opaque_payloads: payload == Payload::Opaque,
        view_timeout_ms: defaults.view_timeout_ms.max(40 * n),
        max_batch_delay_ms: (5 * n * n / 4).clamp(defaults.max_batch_delay_ms, BATCH_DELAY_MAX_MS),
        ..defaults
    }
}

/// The longest a bench network's batch waits to fill.
const BATCH_DELAY_MAX_MS: u64 = 200;

/// The default size of an opaque payload (as in the HotStuff paper's and its peers' benchmarks).
const OPAQUE_SIZE: usize = 512;

/// `total` opaque payloads of `size` encoded bytes each, spread over the accounts' keys as
/// senders (which only route them to nodes: they are unsigned), with their encodings.
fn opaque(
    dir: &Path,
    accounts: usize,
    total: usize,
    size: usize,
) -> Result<Vec<(SignedTransaction, Vec<u8>)>> {
    let genesis = quorate_genesis::Genesis::load(&dir.join("genesis.json"))?;
    let keys: Vec<_> = (0..accounts)
        .map(|j| AccountKeyFile::load(&dir.join("accounts").join(format!("account-{j}.json"))))
        .collect::<Result<_, _>>()?;
    let make = |k: usize, data_len: usize| -> Result<SignedTransaction> {
        let from = k % accounts;
        // Distinct bytes per payload (the nonce already makes ids distinct).
        let mut data = vec![0u8; data_len];
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = (k.wrapping_mul(31).wrapping_add(i) % 251) as u8;
        }
        Ok(SignedTransaction::opaque(
            genesis.chain_id.clone(),
            keys[from].public(),
            (k / accounts) as u64,
            data,
        )?)
    };
    // The encoding around the bytes (a varint length prefix among it): try the few data
    // lengths that can give `size`.
    let framing = codec::encode(&make(0, 0)?)?.len();
    let mut data_len = None;
    for len in size.saturating_sub(framing + 8)..=size.saturating_sub(framing) {
        if codec::encode(&make(0, len)?)?.len() == size {
            data_len = Some(len);
            break;
        }
    }
    let Some(data_len) = data_len else {
        bail!("--tx-size {size}: an opaque payload cannot be that size (its framing alone is {framing} bytes)");
    };
    let mut out = Vec::with_capacity(total);
    for k in 0..total {
        let tx = make(k, data_len)?;
        let encoded = codec::encode(&tx)?;
        if encoded.len() != size {
            bail!(
                "--tx-size {size}: an opaque payload came out at {} bytes",
                encoded.len()
            );
        }
        out.push((tx, encoded));
    }
    Ok(out)
}

/// `total` transfers over `accounts` accounts, round robin, each account's nonces in order;
/// with their encodings.
fn presign(dir: &Path, accounts: usize, total: usize) -> Result<Vec<(SignedTransaction, Vec<u8>)>> {
    let genesis = quorate_genesis::Genesis::load(&dir.join("genesis.json"))?;
    let keys: Vec<_> = (0..accounts)
        .map(|j| AccountKeyFile::load(&dir.join("accounts").join(format!("account-{j}.json"))))
        .collect::<Result<_, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let chunk = total.div_ceil(threads).max(1);
    let mut signed: Vec<(SignedTransaction, Vec<u8>)> = Vec::with_capacity(total);
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..total)
            .step_by(chunk)
            .map(|start| {
                let keys = &keys;
                let chain_id = genesis.chain_id.clone();
                scope.spawn(move || -> Result<Vec<(SignedTransaction, Vec<u8>)>> {
                    (start..(start + chunk).min(total))
                        .map(|k| {
                            let from = k % accounts;
                            let to = keys[(from + 1) % accounts].public().address();
                            let tx = Transaction {
                                chain_id: chain_id.clone(),
                                sender: keys[from].public(),
                                nonce: (k / accounts) as u64,
                                kind: TransactionKind::Transfer { to, amount: 1 },
                            }
                            .sign(&keys[from])?;
                            let encoded = codec::encode(&tx)?;
                            Ok((tx, encoded))
                        })
                        .collect()
                })
            })
            .collect();
        for handle in handles {
            signed.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("signing thread panicked"))??,
            );
        }
        Ok(())
    })?;
    Ok(signed)
}

fn measure(
    spec: &BenchSpec,
    nodes: &[Node],
    signed: &[(SignedTransaction, Vec<u8>)],
    rate: u64,
    tx_size: usize,
    dir: &Path,
) -> Result<Value> {
    // Wait for every live node to be connected to every other (an idle chain adds no block
    // before the load comes, so the first block cannot be the sign).
    let deadline = Instant::now() + Duration::from_secs(120);
    for node in nodes {
        loop {
            if peers(&node.rpc).is_some_and(|p| p + 1 >= nodes.len()) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node{} was not connected to the other {} live validators within 120 s",
                    node.index,
                    nodes.len() - 1
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let index: HashMap<String, usize> = signed
        .iter()
        .enumerate()
        .map(|(k, (tx, _))| (tx.id().to_hex(), k))
        .collect();
    let total = signed.len();
    let submitted: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(NOT_YET)).collect());
    let committed: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(NOT_YET)).collect());
    let rejected = Arc::new(AtomicU64::new(0));
    let failed_tx = AtomicU64::new(0);
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let stop_observer = Arc::new(AtomicBool::new(false));
    let start_height = height(&nodes[0].rpc).context("node0 status")?;
    let before: Vec<Sample> = nodes.iter().map(sample).collect::<Result<_>>()?;
    let t0 = Instant::now();
    let window = Duration::from_secs(spec.duration_s);

    std::thread::scope(|scope| -> Result<Value> {
        // The observer follows node0's committed blocks.
        let observer = {
            let committed = committed.clone();
            let stop = stop_observer.clone();
            let failed_tx = &failed_tx;
            let index = &index;
            let rpc = nodes[0].rpc.clone();
            scope.spawn(move || -> Result<(u64, u64)> {
                let mut client = KeepAlive::new(&rpc);
                let mut next = start_height + 1;
                let mut window_blocks = 0u64;
                let mut last_height = start_height;
                while !stop.load(Ordering::Relaxed) {
                    let (status, block) =
                        match get_json(&mut client, &format!("/v1/block/{next}?txs=hashes")) {
                            Ok(reply) => reply,
                            Err(_) => {
                                std::thread::sleep(TICK);
                                continue;
                            }
                        };
                    if status == 404 {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    if status != 200 {
                        bail!("node0 answered {status} for block {next}: {block}");
                    }
                    let now = t0.elapsed().as_micros() as u64;
                    if now <= window.as_micros() as u64 {
                        window_blocks += 1;
                    }
                    let failed: std::collections::HashSet<u64> = block["failed"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .collect();
                    let hashes = block["transactions"].as_array().into_iter().flatten();
                    for (position, hash) in hashes.enumerate() {
                        if let Some(&k) = hash.as_str().and_then(|h| index.get(h)) {
                            if failed.contains(&(position as u64)) {
                                failed_tx.fetch_add(1, Ordering::Relaxed);
                                committed[k].store(FAILED, Ordering::Relaxed);
                            } else {
                                committed[k].store(now, Ordering::Relaxed);
                            }
                        }
                    }
                    last_height = next;
                    next += 1;
                }
                Ok((window_blocks, last_height))
            })
        };

        // One sender per live node, fed every tick with the transactions that fell due.
        let mut feeds = Vec::new();
        let mut senders = Vec::new();
        for node in nodes {
            let (feed, chunks) = mpsc::channel::<Vec<usize>>();
            feeds.push(feed);
            let submitted = submitted.clone();
            let rejected = rejected.clone();
            let first_error = first_error.clone();
            let rpc = node.rpc.clone();
            senders.push(scope.spawn(move || {
                let mut client = KeepAlive::new(&rpc);
                for due in chunks {
                    for part in due.chunks(MAX_TXS_PER_REQUEST) {
                        // The binary array: its length, then each encoded transaction.
                        let mut body = match codec::encode(&(part.len() as u64)) {
                            Ok(prefix) => prefix,
                            Err(error) => {
                                let mut first =
                                    first_error.lock().unwrap_or_else(|p| p.into_inner());
                                first.get_or_insert(error.to_string());
                                break;
                            }
                        };
                        for &k in part {
                            body.extend_from_slice(&signed[k].1);
                        }
                        let at = t0.elapsed().as_micros() as u64;
                        for &k in part {
                            submitted[k].store(at, Ordering::Relaxed);
                        }
                        let note = |why: String| {
                            let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            first.get_or_insert(why);
                        };
                        match client.request_typed("POST", "/v1/txs", BINARY, &body) {
                            Ok((200, reply)) => {
                                let reply: Value =
                                    serde_json::from_slice(&reply).unwrap_or(Value::Null);
                                let refused =
                                    reply["rejected"].as_array().cloned().unwrap_or_default();
                                for result in refused {
                                    let Some(&k) =
                                        result["index"].as_u64().and_then(|i| part.get(i as usize))
                                    else {
                                        continue;
                                    };
                                    submitted[k].store(NOT_YET, Ordering::Relaxed);
                                    rejected.fetch_add(1, Ordering::Relaxed);
                                    note(result["error"].to_string());
                                }
                            }
                            Ok((status, reply)) => {
                                for &k in part {
                                    submitted[k].store(NOT_YET, Ordering::Relaxed);
                                }
                                rejected.fetch_add(part.len() as u64, Ordering::Relaxed);
                                note(format!("{status}: {}", String::from_utf8_lossy(&reply)));
                            }
                            Err(error) => {
                                for &k in part {
                                    submitted[k].store(NOT_YET, Ordering::Relaxed);
                                }
                                rejected.fetch_add(part.len() as u64, Ordering::Relaxed);
                                note(error.to_string());
                            }
                        }
                    }
                }
            }));
        }

        // The schedule: by time t, rate × t transactions are due.
        let accounts = spec.accounts;
        let mut sent = 0usize;
        while sent < total {
            let due = ((t0.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
            let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); feeds.len()];
            for k in sent..due {
                per_node[(k % accounts) % feeds.len()].push(k);
            }
            sent = due;
            for (feed, chunk) in feeds.iter().zip(per_node) {
                if !chunk.is_empty() {
                    let _ = feed.send(chunk);
                }
            }
            std::thread::sleep(TICK);
        }
        drop(feeds);
        for sender in senders {
            let _ = sender.join();
        }
        let send_time = t0.elapsed();
        // The window's end: sample, then let the admitted transactions drain.
        let remaining = window.saturating_sub(t0.elapsed());
        std::thread::sleep(remaining);
        let after: Vec<Sample> = nodes.iter().map(sample).collect::<Result<_>>()?;
        let cpu_window = t0.elapsed();
        let drain_deadline = Instant::now() + Duration::from_secs(spec.drain_s);
        loop {
            let outstanding = (0..total).any(|k| {
                submitted[k].load(Ordering::Relaxed) != NOT_YET
                    && committed[k].load(Ordering::Relaxed) == NOT_YET
            });
            if !outstanding || Instant::now() > drain_deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop_observer.store(true, Ordering::Relaxed);
        let (blocks, last_height) = observer
            .join()
            .map_err(|_| anyhow::anyhow!("observer panicked"))??;
        let peak_rss_kb: Vec<u64> = nodes
            .iter()
            .map(|n| proc_peak_rss_kb(n.child.id()))
            .collect::<Result<_>>()?;

        let window_us = window.as_micros() as u64;
        let mut latencies_ms = Vec::new();
        // Per committed transaction: when it was sent and how long it took (for plots).
        let mut trace = String::from("submit_ms,latency_ms\n");
        let mut in_window = 0u64;
        let mut admitted = 0u64;
        for k in 0..total {
            let s = submitted[k].load(Ordering::Relaxed);
            if s == NOT_YET {
                continue;
            }
            admitted += 1;
            let c = committed[k].load(Ordering::Relaxed);
            if c == NOT_YET || c == FAILED {
                continue;
            }
            latencies_ms.push(c.saturating_sub(s) / 1000);
            trace.push_str(&format!("{},{}\n", s / 1000, c.saturating_sub(s) / 1000));
            if c <= window_us {
                in_window += 1;
            }
        }
        latencies_ms.sort_unstable();
        std::fs::write(dir.join("latencies.csv"), trace)?;
        let clock_ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let live = nodes.len() as f64;
        let cpu_s: f64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 / clock_ticks)
            .sum::<f64>()
            / live;
        let messages: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.sent_messages.saturating_sub(b.sent_messages))
            .sum();
        let bytes: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.sent_bytes.saturating_sub(b.sent_bytes))
            .sum();
        let timeouts: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| a.timeouts.saturating_sub(b.timeouts))
            .sum();
        let per_block = |x: u64| {
            if blocks == 0 {
                0.0
            } else {
                x as f64 / blocks as f64
            }
        };
        let round = |x: f64| (x * 100.0).round() / 100.0;
        Ok(json!({
            "payload": match spec.payload {
                Payload::Transfers => "transfers",
                Payload::Opaque => "opaque",
            },
            "offered_tps": rate,
            "tx_size": tx_size,
            "duration_s": spec.duration_s,
            "sent_tx": total,
            "send_s": round(send_time.as_secs_f64()),
            "admitted_tx": admitted,
            "rejected_tx": rejected.load(Ordering::Relaxed),
            "first_rejection": *first_error.lock().unwrap_or_else(|p| p.into_inner()),
            "committed_tx": latencies_ms.len(),
            "failed_tx": failed_tx.load(Ordering::Relaxed),
            "committed_in_window_tx": in_window,
            "tps": round(in_window as f64 / spec.duration_s as f64),
            "latency_p50_ms": percentile(&latencies_ms, 50.0),
            "latency_p99_ms": percentile(&latencies_ms, 99.0),
            "latency_max_ms": latencies_ms.last().copied().unwrap_or(0),
            "blocks": blocks,
            "head_height": last_height,
            "msgs_per_block": round(per_block(messages)),
            "bytes_per_block": round(per_block(bytes)),
            "view_timeouts": timeouts,
            "cpu_s_per_node": round(cpu_s),
            "cpu_window_s": round(cpu_window.as_secs_f64()),
            "cpu_cores_per_node": round(cpu_s / cpu_window.as_secs_f64()),
            "rss_mb_per_node": round(peak_rss_kb.iter().sum::<u64>() as f64 / 1024.0 / live),
            "rss_mb_max": round(*peak_rss_kb.iter().max().unwrap_or(&0) as f64 / 1024.0),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(offered: u64, tps: f64, p50: u64, sent: u64, committed: u64, send_s: f64) -> Value {
        json!({
            "offered_tps": offered, "tps": tps, "latency_p50_ms": p50, "sent_tx": sent,
            "committed_tx": committed, "send_s": send_s, "duration_s": 10,
        })
    }

    #[test]
    fn a_run_is_saturated_only_when_the_network_falls_behind_what_is_offered() {
        // Keeping up, with a light rate's window edges costing 9%.
        assert!(!saturated(&run(10, 9.1, 700, 100, 100, 10.0)));
        assert!(!saturated(&run(5000, 4900.0, 150, 50_000, 50_000, 10.1)));
        // Each way of falling behind.
        assert!(saturated(&run(5000, 4900.0, 2500, 50_000, 50_000, 10.1)));
        assert!(saturated(&run(5000, 4900.0, 150, 50_000, 50_000, 12.0)));
        assert!(saturated(&run(5000, 4900.0, 150, 50_000, 40_000, 10.1)));
        assert!(saturated(&run(5000, 3000.0, 150, 50_000, 50_000, 10.1)));
    }

    #[test]
    fn bench_networks_stretch_their_clocks_with_n_and_allow_opaque_payloads_only_for_them() {
        let small = bench_params(4, Payload::Transfers);
        assert_eq!(
            small.view_timeout_ms,
            ConsensusParams::default().view_timeout_ms
        );
        assert!(!small.allow_opaque_payloads);
        assert_eq!(small.max_batch_delay_ms, 20);
        assert_eq!(bench_params(10, Payload::Opaque).max_batch_delay_ms, 125);
        let large = bench_params(100, Payload::Opaque);
        assert_eq!(large.view_timeout_ms, 4_000);
        assert_eq!(large.max_batch_delay_ms, 200);
        assert!(large.allow_opaque_payloads);
    }
}
