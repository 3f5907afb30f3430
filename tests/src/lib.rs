//! Shared fixtures for the workspace-level integration tests: finding the `quorate` binary,
//! running it, free loopback ports, a cluster of real validators, and (in [`peer`]) a stand-in
//! validator that speaks libp2p with a genuine identity.

pub mod peer;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The `quorate` binary built for this test run: `$QUORATE_BIN`, else the `quorate` in the
/// profile directory this test executable was built into (`target/<profile>/deps/<test>` ->
/// `target/<profile>/quorate`). `scripts/test.sh` builds it before running the tests.
pub fn quorate_binary() -> PathBuf {
    if let Ok(path) = std::env::var("QUORATE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join("quorate");
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --release --bin quorate` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs `quorate` with `args` and returns its output.
pub fn quorate(args: &[&str]) -> Output {
    Command::new(quorate_binary())
        .args(args)
        .output()
        .expect("failed to start quorate")
}

/// A base port with `count` consecutive free loopback ports after it.
///
/// Ranges come from below the kernel's ephemeral range (`ip_local_port_range`): a port in it can
/// be taken, between the probe and a node's bind, as the local port of any outgoing connection
/// (the nodes' own dials, the tests' RPC clients), and a node that cannot bind its port leaves
/// another process answering on it. Ranges handed out in this process never overlap (tests of
/// one binary run in parallel threads); a random start keeps apart concurrent test processes.
pub fn free_port_range(count: u16) -> u16 {
    static TAKEN: std::sync::Mutex<Vec<(u16, u16)>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = 10_000u16;
    let high = ephemeral_low.saturating_sub(count).max(low + 1);
    let mut x = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    let mut taken = TAKEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = low + ((x >> 33) % u64::from(high - low)) as u16;
        let end = base + count;
        if taken.iter().any(|&(b, e)| base < e && b < end) {
            continue;
        }
        if (base..end).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            taken.push((base, end));
            return base;
        }
    }
    panic!("no range of {count} free loopback ports found below {ephemeral_low}");
}

/// A testnet of real `quorate run` processes on loopback. Every process is killed when the
/// cluster is dropped (also when a test fails).
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub base_port: u16,
    pub validators: usize,
    children: Vec<Option<std::process::Child>>,
}

impl Cluster {
    /// Generates a testnet of `validators` (with `accounts` funded accounts) and starts all.
    pub fn start(validators: usize, accounts: usize) -> Cluster {
        Cluster::start_with(validators, accounts, &[])
    }

    /// Like [`Cluster::start`], with genesis consensus parameters overridden, e.g.
    /// `[("idle_interval_ms", 10)]` (a short idle interval makes an idle chain grow fast); a
    /// boolean one takes 0 or 1.
    pub fn start_with(validators: usize, accounts: usize, params: &[(&str, u64)]) -> Cluster {
        Cluster::start_protocol("hotstuff", validators, accounts, params)
    }

    /// Like [`Cluster::start_with`], on a chain of `protocol` (hotstuff or pbft).
    pub fn start_protocol(
        protocol: &str,
        validators: usize,
        accounts: usize,
        params: &[(&str, u64)],
    ) -> Cluster {
        Cluster::start_with_spares(protocol, validators, 0, accounts, params)
    }

    /// Like [`Cluster::start_protocol`], with ports kept for `spares` more nodes, which
    /// [`Cluster::init_spare`] makes (outside the genesis set) and `start_node` starts.
    pub fn start_with_spares(
        protocol: &str,
        validators: usize,
        spares: usize,
        accounts: usize,
        params: &[(&str, u64)],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let base_port = free_port_range(2 * (validators + spares) as u16);
        let output = quorate(&[
            "testnet",
            "--protocol",
            protocol,
            "--validators",
            &validators.to_string(),
            "--accounts",
            &accounts.to_string(),
            "--dir",
            dir.path().join("net").to_str().expect("utf-8 path"),
            "--base-port",
            &base_port.to_string(),
        ]);
        assert!(
            output.status.success(),
            "testnet: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The tests were written for a chain with a heartbeat (an empty block a second while
        // idle); those about an idle chain pass `("idle_interval_ms", 0)`, the default.
        let mut params = params.to_vec();
        if !params.iter().any(|(name, _)| *name == "idle_interval_ms") {
            params.push(("idle_interval_ms", 1_000));
        }
        {
            let path = dir.path().join("net").join("genesis.json");
            let text = std::fs::read_to_string(&path).expect("genesis.json");
            let mut genesis: serde_json::Value = serde_json::from_str(&text).expect("genesis JSON");
            for (name, value) in &params {
                // "epoch_rules.min_validators" names a nested parameter.
                let mut slot = &mut genesis["params"];
                for part in name.split('.') {
                    assert!(slot.get(part).is_some(), "no parameter {name}");
                    slot = &mut slot[part];
                }
                // A boolean parameter takes 0 or 1.
                *slot = match slot {
                    serde_json::Value::Bool(_) => serde_json::json!(*value != 0),
                    _ => serde_json::json!(value),
                };
            }
            std::fs::write(&path, genesis.to_string()).expect("writing genesis.json");
        }
        let mut cluster = Cluster {
            dir,
            base_port,
            validators,
            children: (0..validators + spares).map(|_| None).collect(),
        };
        for i in 0..validators {
            cluster.start_node(i);
        }
        cluster
    }

    /// `quorate init` for spare node `i` (its home beside the validators', its ports the
    /// cluster's), naming node `peer` as its peer; returns its public description.
    pub fn init_spare(&self, i: usize, peer: usize) -> serde_json::Value {
        assert!(
            i >= self.validators && i < self.children.len(),
            "node{i} is no spare"
        );
        let output = quorate(&[
            "init",
            "--home",
            self.home(i).to_str().expect("utf-8 path"),
            "--genesis",
            self.net()
                .join("genesis.json")
                .to_str()
                .expect("utf-8 path"),
            "--p2p",
            &format!("/ip4/127.0.0.1/tcp/{}", self.p2p_port(i)),
            "--rpc",
            &format!("127.0.0.1:{}", self.rpc_port(i)),
            "--peer",
            &format!("/ip4/127.0.0.1/tcp/{}", self.p2p_port(peer)),
        ]);
        assert!(
            output.status.success(),
            "init: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("init prints the node's description")
    }

    pub fn net(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    pub fn home(&self, i: usize) -> PathBuf {
        self.net().join(format!("node{i}"))
    }

    pub fn account_key(&self, j: usize) -> PathBuf {
        self.net()
            .join("accounts")
            .join(format!("account-{j}.json"))
    }

    /// The address in an account key file.
    pub fn account_address(&self, j: usize) -> String {
        let text = std::fs::read_to_string(self.account_key(j)).expect("account key");
        let value: serde_json::Value = serde_json::from_str(&text).expect("account json");
        value["address"].as_str().expect("address").to_string()
    }

    pub fn rpc_port(&self, i: usize) -> u16 {
        self.base_port + 2 * i as u16 + 1
    }

    pub fn rpc(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.rpc_port(i))
    }

    pub fn p2p_port(&self, i: usize) -> u16 {
        self.base_port + 2 * i as u16
    }

    /// Starts (or restarts) validator `i`, appending to its log.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node{i} is running");
        let log_path = self.home(i).join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let child = Command::new(quorate_binary())
            .args(["run", "--home", self.home(i).to_str().expect("utf-8")])
            .env(
                "RUST_LOG",
                std::env::var("QUORATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start quorate run");
        self.children[i] = Some(child);
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`pause = true`) or SIGCONT: the process keeps its memory and sockets but runs
    /// nothing meanwhile.
    pub fn pause(&self, i: usize, pause: bool) {
        let pid = self.pid(i).expect("node runs").to_string();
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }

    /// SIGTERM to every running node at once (one `kill`), then waits for each; true if all
    /// exited cleanly.
    pub fn stop_all(&mut self) -> bool {
        let pids: Vec<String> = self
            .children
            .iter()
            .flatten()
            .map(|c| c.id().to_string())
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-TERM").args(&pids).status();
        }
        let stopped: Vec<bool> = (0..self.validators).map(|i| self.stop(i)).collect();
        stopped.into_iter().all(|ok| ok)
    }

    pub fn stop(&mut self, i: usize) -> bool {
        let Some(mut child) = self.children[i].take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                if !status.success() {
                    eprintln!("node{i} stopped with {status}; log:\n{}", self.log(i));
                }
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "node{i} did not stop within 20 s of SIGTERM; log:\n{}",
            self.log(i)
        );
        false
    }

    /// Node `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(|c| c.id())
    }

    /// How node `i`'s process ended, or `None` while it runs (or was never started).
    pub fn exit_status(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.children[i].as_mut()?.try_wait().ok().flatten()
    }

    /// Whether node `i`'s process is still alive.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The node's log (for failure messages).
    /// Node `i`'s whole log (all its runs).
    pub fn full_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.home(i).join("node.log")).unwrap_or_default()
    }

    /// The last 40 lines of node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        let text = self.full_log(i);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `quorate query ... --json` against node `i`; `None` if it failed (node down).
    pub fn query(&self, i: usize, what: &[&str]) -> Option<serde_json::Value> {
        let rpc = self.rpc(i);
        let mut args = vec!["query"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["--rpc", &rpc, "--json"]);
        let output = quorate(&args);
        if !output.status.success() {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    pub fn height(&self, i: usize) -> Option<u64> {
        self.query(i, &["status"])?["height"].as_u64()
    }

    /// Waits until node `i` has committed `height`; panics with its log after `timeout_s`.
    pub fn wait_height(&self, i: usize, height: u64, timeout_s: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
        loop {
            if self.height(i).is_some_and(|h| h >= height) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node{i} did not reach height {height} in {timeout_s} s (at {:?}); log:\n{}",
                self.height(i),
                self.log(i)
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn block_hash(&self, i: usize, height: u64) -> Option<String> {
        let block = self.query(i, &["block", &height.to_string()])?;
        block["hash"].as_str().map(str::to_string)
    }

    pub fn balance(&self, i: usize, address: &str) -> Option<u64> {
        self.query(i, &["account", address])?["balance"].as_u64()
    }

    /// Node 3 is killed while the others commit `blocks` more (more than peers keep for an
    /// engine to catch up), then restarted: it must catch up by ledger sync (its log says so),
    /// hold the same blocks and balances, and rejoin consensus (with node 2 down, nodes 0, 1
    /// and 3 are the quorum).
    pub fn far_behind_replica_syncs_and_rejoins(&mut self, blocks: u64) {
        use std::time::{Duration, Instant};
        self.wait_height(0, 2, 60);
        self.kill9(3);
        let behind = self.height(0).expect("node0 height");
        let started = Instant::now();
        self.wait_height(0, behind + blocks, 240);
        eprintln!("{blocks} blocks without node3 in {:?}", started.elapsed());
        let to = self.account_address(1);
        committed_height(&self.transfer(0, 0, &to, 9, true));
        let head = self.height(0).expect("node0 height");
        self.start_node(3);
        self.wait_height(3, head, 180);
        for h in [behind, behind + 1, behind + blocks / 2, head] {
            assert_eq!(self.block_hash(3, h), self.block_hash(0, h), "block {h}");
        }
        assert_eq!(self.balance(3, &to), self.balance(0, &to));
        // The sync task logs once it sees the head it applied (it polls; the RPC may see it
        // first).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.full_log(3).contains("sync: caught up") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            self.full_log(3).contains("sync: caught up"),
            "node3 did not use ledger sync; log:\n{}",
            self.log(3)
        );
        self.kill9(2);
        committed_height(&self.transfer(1, 0, &to, 1, true));
        let now = self.height(1).expect("node1 height");
        self.wait_height(3, now, 90);
    }

    /// `quorate tx transfer` from account `from` to `to` through node `via`.
    pub fn transfer(&self, via: usize, from: usize, to: &str, amount: u64, wait: bool) -> Output {
        transfer(&self.rpc(via), &self.account_key(from), to, amount, wait)
    }
}

/// Parses `committed HASH height=H block=B` from `tx transfer --wait`.
pub fn committed_height(output: &std::process::Output) -> u64 {
    assert!(
        output.status.success(),
        "transfer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("height="))
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no height in {stdout:?}"))
}

/// `quorate tx transfer --key KEY --to TO --amount AMOUNT --rpc RPC [--wait]`.
pub fn transfer(rpc: &str, key: &std::path::Path, to: &str, amount: u64, wait: bool) -> Output {
    let amount = amount.to_string();
    let mut args = vec![
        "tx",
        "transfer",
        "--key",
        key.to_str().expect("utf-8"),
        "--to",
        to,
        "--amount",
        &amount,
        "--rpc",
        rpc,
        "--timeout",
        "60",
    ];
    if wait {
        args.push("--wait");
    }
    quorate(&args)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

/// A raw HTTP/1.1 request to `127.0.0.1:port`; returns the status and body.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_typed(port, method, path, "application/json", body)
}

/// [`http`] with a body of `content_type`.
pub fn http_typed(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    // The server may answer (413) and close before the whole body is written.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An idle chain of `protocol`, without a heartbeat: once a transfer is committed (and, on PBFT,
/// the chain reached its next checkpoint) no node adds a block or times out a view for
/// `quiet_s` seconds; then, with the current leader killed, a transfer submitted to another
/// node still commits (the nodes holding it time the silent leader out).
pub fn check_idle_chain(protocol: &str, quiet_s: u64) {
    let mut cluster = Cluster::start_protocol(protocol, 4, 2, &[("idle_interval_ms", 0)]);
    let status = |c: &Cluster, i: usize| c.query(i, &["status"]);
    let started = std::time::Instant::now();
    while (0..4).any(|i| cluster.height(i).is_none()) {
        assert!(started.elapsed().as_secs() < 60, "RPC never came up");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let to = cluster.account_address(1);
    let height = committed_height(&cluster.transfer(0, 0, &to, 5, true));
    // Settle: the blocks that commit the transfer (and PBFT's way to its checkpoint).
    let mut last: Vec<Option<u64>> = Vec::new();
    let mut same_since = std::time::Instant::now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now: Vec<Option<u64>> = (0..4).map(|i| cluster.height(i)).collect();
        if now != last {
            last = now;
            same_since = std::time::Instant::now();
        } else if last.iter().all(|h| h.is_some() && *h == last[0])
            && same_since.elapsed().as_secs() >= 3
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the chain never settled after the transfer at {height}: {last:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let head = last[0].expect("settled");
    assert!(
        head >= height,
        "head {head} below the transfer's block {height}"
    );
    let before: Vec<serde_json::Value> = (0..4)
        .map(|i| status(&cluster, i).expect("status"))
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(quiet_s));
    for (i, was) in before.iter().enumerate() {
        let now = status(&cluster, i).expect("status");
        assert_eq!(
            now["height"], was["height"],
            "node{i} added blocks on an idle chain"
        );
        assert_eq!(
            now["timeouts"], was["timeouts"],
            "node{i} timed out views on an idle chain"
        );
    }
    // The leader of the idle view falls silent for good; a transfer elsewhere still commits.
    let leader = before[1]["leader"].as_u64().expect("leader") as usize;
    cluster.kill9(leader);
    let via = (leader + 1) % 4;
    let after = committed_height(&cluster.transfer(via, 0, &to, 5, true));
    assert!(
        after > head,
        "committed at {after}, not above the idle head {head}"
    );
    // It took a view change: the nodes holding the transfer timed the dead leader out.
    let was = before[via]["timeouts"].as_u64().expect("timeouts");
    let now = status(&cluster, via).expect("status")["timeouts"]
        .as_u64()
        .expect("timeouts");
    assert!(
        now > was,
        "node{via} never timed out the dead leader (timeouts {was} -> {now})"
    );
}
