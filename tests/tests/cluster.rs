//! Four real `quorate run` processes on loopback: transfers, crashes (kill -9), restarts,
//! catch-up, loss of quorum, bad RPC input and a garbage-speaking peer (issue: node end to end).
//!
//! The scenarios run one at a time (each starts its own cluster): four debug-build validators
//! per scenario already load a 2-core CI machine.

use quorate_genesis::AccountKeyFile;
use quorate_ledger::{SignedTransaction, Transaction, TransactionKind};
use quorate_tests::{committed_height, http, http_typed, transfer, Cluster};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn tx_hash(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let word = stdout.split_whitespace().find(|w| w.len() == 64);
    word.unwrap_or_else(|| panic!("no hash in {stdout:?}"))
        .to_string()
}

#[test]
fn transfers_commit_and_a_killed_validator_catches_up() {
    let _serial = serial();
    let mut cluster = Cluster::start(4, 2);
    cluster.wait_height(0, 1, 60);
    let to = cluster.account_address(1);
    let from = cluster.account_address(0);
    let before_to = cluster.balance(0, &to).unwrap();
    let before_from = cluster.balance(0, &from).unwrap();

    let height = committed_height(&cluster.transfer(0, 0, &to, 25, true));
    for i in 0..4 {
        cluster.wait_height(i, height, 30);
        assert_eq!(cluster.balance(i, &to), Some(before_to + 25), "node{i}");
        assert_eq!(cluster.balance(i, &from), Some(before_from - 25), "node{i}");
    }

    // One of four killed: the other three go on.
    cluster.kill9(3);
    for k in 0..3 {
        committed_height(&cluster.transfer(k, 0, &to, 1, true));
    }
    let head = cluster.height(0).unwrap();

    // Restarted, it catches up to the same blocks.
    cluster.start_node(3);
    cluster.wait_height(3, head, 90);
    for h in 1..=head {
        let expected = cluster.block_hash(0, h);
        assert!(expected.is_some());
        assert_eq!(cluster.block_hash(3, h), expected, "block {h} on node3");
    }
    assert_eq!(cluster.balance(3, &to), Some(before_to + 28));

    // A clean stop exits 0.
    assert!(cluster.stop(2), "SIGTERM did not stop node2 cleanly");
}

#[test]
fn with_two_of_four_down_nothing_commits_until_they_return() {
    let _serial = serial();
    let mut cluster = Cluster::start(4, 1);
    cluster.wait_height(0, 2, 60);
    cluster.kill9(2);
    cluster.kill9(3);
    // Let whatever was in flight settle.
    std::thread::sleep(Duration::from_secs(3));
    let stalled = cluster.height(0).unwrap();
    let to = cluster.account_address(0);
    let submitted = cluster.transfer(0, 0, &to, 5, false);
    assert!(submitted.status.success());
    let hash = tx_hash(&submitted);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        cluster.height(0),
        Some(stalled),
        "committed without a quorum"
    );
    assert_eq!(
        cluster.height(1),
        Some(stalled),
        "committed without a quorum"
    );
    assert_eq!(
        cluster.query(0, &["tx", &hash]).unwrap()["status"],
        "pending"
    );

    cluster.start_node(2);
    cluster.start_node(3);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = cluster.query(0, &["tx", &hash]).unwrap();
        if state["status"] == "committed" {
            assert_eq!(state["result"], "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress after the validators returned; node0 log:\n{}",
            cluster.log(0)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_validator_killed_under_load_loses_no_acknowledged_transaction() {
    let _serial = serial();
    let mut cluster = Cluster::start(4, 3);
    cluster.wait_height(0, 1, 60);
    let to = cluster.account_address(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acknowledged: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let targets: Vec<(String, std::path::PathBuf)> = (0..3)
        .map(|s| (cluster.rpc(s), cluster.account_key(s)))
        .collect();
    std::thread::scope(|scope| {
        for (rpc, key) in &targets {
            let (stop, acknowledged, to) = (&stop, &acknowledged, &to);
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Sender s submits through node s; node 1 is killed meanwhile.
                    let output = transfer(rpc, key, to, 1, true);
                    if output.status.success() {
                        acknowledged.lock().unwrap().push(tx_hash(&output));
                    } else {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(4));
        cluster.kill9(1);
        std::thread::sleep(Duration::from_secs(4));
        cluster.start_node(1);
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(
        acknowledged.len() >= 5,
        "only {} transfers committed under load",
        acknowledged.len()
    );
    let head = cluster.height(0).unwrap();
    for i in 0..4 {
        cluster.wait_height(i, head, 90);
        for hash in &acknowledged {
            let state = cluster.query(i, &["tx", hash]).unwrap();
            assert_eq!(state["status"], "committed", "{hash} on node{i}");
        }
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_the_node_keeps_running() {
    let _serial = serial();
    let mut cluster = Cluster::start(4, 1);
    cluster.wait_height(0, 1, 60);
    let port = cluster.rpc_port(0);
    let status = cluster.query(0, &["status"]).unwrap();
    let chain_id = status["chain_id"].as_str().unwrap().to_string();
    let key = AccountKeyFile::load(&cluster.account_key(0)).unwrap();
    let to = key.public().address();
    let make = |chain: &str, nonce: u64, amount: u64| {
        let tx = Transaction {
            chain_id: chain.into(),
            sender: key.public(),
            nonce,
            kind: TransactionKind::Transfer { to, amount },
        }
        .sign(&key)
        .unwrap();
        serde_json::to_string(&tx).unwrap()
    };
    let expect = |body: &[u8], status: u16, needle: &str| {
        let (got, text) = http(port, "POST", "/v1/tx", body);
        assert_eq!(got, status, "answer: {text}");
        let error: serde_json::Value = serde_json::from_str(&text).expect("a JSON error body");
        let message = error["error"]
            .as_str()
            .expect("an error field")
            .to_lowercase();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    expect(b"{not json", 400, "malformed transaction");
    expect(b"{\"transaction\": 5}", 400, "malformed transaction");
    // A signature that does not verify: flip one hex digit of it.
    let good = make(&chain_id, 0, 3);
    let mut value: serde_json::Value = serde_json::from_str(&good).unwrap();
    let signature = value["signature"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if signature.starts_with('0') { "1" } else { "0" },
        &signature[1..]
    );
    value["signature"] = serde_json::Value::String(flipped);
    expect(value.to_string().as_bytes(), 400, "signature");
    expect(make("another-chain", 0, 3).as_bytes(), 400, "chain id");
    expect(make(&chain_id, 5_000, 3).as_bytes(), 400, "too far ahead");
    expect(make(&chain_id, 0, 0).as_bytes(), 400, "zero");
    // An opaque payload (unsigned bytes) on a chain whose genesis does not allow them.
    let opaque =
        SignedTransaction::opaque(chain_id.clone(), key.public(), 0, vec![1; 400]).unwrap();
    let opaque = serde_json::to_string(&opaque).unwrap();
    expect(opaque.as_bytes(), 400, "opaque payloads are not allowed");
    let (code, text) = http(port, "POST", "/v1/txs", format!("[{opaque}]").as_bytes());
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("opaque payloads are not allowed"), "{text}");
    // Commit nonce 0, then nonce 0 again is stale.
    committed_height(&cluster.transfer(0, 0, &to.to_string(), 7, true));
    expect(make(&chain_id, 0, 4).as_bytes(), 400, "stale");
    // Oversized: a transaction-sized limit applies to the body.
    let big = format!("{{\"pad\": \"{}\"}}", "a".repeat(200_000));
    expect(big.as_bytes(), 413, "body");
    let garbage: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let (code, _) = http(port, "POST", "/v1/tx", &garbage);
    assert_eq!(code, 413);
    // A transaction whose chain id alone is larger than any chain id may be.
    expect(make(&"x".repeat(70_000), 1, 3).as_bytes(), 400, "exceeds");

    // The batch endpoint answers per transaction, in order, and bounds the request.
    let mut forged: serde_json::Value = serde_json::from_str(&make(&chain_id, 2, 2)).unwrap();
    let signature = forged["signature"].as_str().unwrap().to_string();
    forged["signature"] = serde_json::Value::String(format!(
        "{}{}",
        if signature.starts_with('0') { "1" } else { "0" },
        &signature[1..]
    ));
    let batch = format!("[{},{}]", make(&chain_id, 1, 2), forged);
    let (code, text) = http(port, "POST", "/v1/txs", batch.as_bytes());
    assert_eq!(code, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(answer["results"][0]["hash"].is_string(), "{text}");
    assert_eq!(answer["results"][1]["status"], 400, "{text}");
    assert!(answer["results"][1]["error"]
        .as_str()
        .unwrap()
        .contains("signature"));
    let too_many = format!("[{}]", vec![make(&chain_id, 2, 1); 1001].join(","));
    assert_eq!(http(port, "POST", "/v1/txs", too_many.as_bytes()).0, 413);
    assert_eq!(http(port, "POST", "/v1/txs", b"[1,2").0, 400);
    // The same endpoint in the binary encoding answers with the refused only, by index.
    let decode = |json: &str| serde_json::from_str::<SignedTransaction>(json).unwrap();
    let binary = quorate_ledger::codec::encode(&vec![
        serde_json::from_value::<SignedTransaction>(forged).unwrap(),
        decode(&make(&chain_id, 2, 2)),
    ])
    .unwrap();
    let octets = "application/octet-stream";
    let (code, text) = http_typed(port, "POST", "/v1/txs", octets, &binary);
    assert_eq!(code, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["admitted"], 1, "{text}");
    assert_eq!(answer["rejected"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(answer["rejected"][0]["index"], 0, "{text}");
    assert_eq!(answer["rejected"][0]["status"], 400, "{text}");
    assert!(answer["rejected"][0]["error"]
        .as_str()
        .unwrap()
        .contains("signature"));
    let (code, text) = http_typed(port, "POST", "/v1/txs", octets, &binary[..binary.len() - 1]);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("malformed binary"), "{text}");
    // A length prefix claiming far more transactions than the body holds: refused, nothing
    // allocated for the claim.
    let claim = quorate_ledger::codec::encode(&(1u64 << 40)).unwrap();
    let (code, text) = http_typed(port, "POST", "/v1/txs", octets, &claim);
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("malformed binary"), "{text}");
    let too_many = quorate_ledger::codec::encode(&vec![decode(&make(&chain_id, 3, 1)); 1001]);
    assert_eq!(
        http_typed(port, "POST", "/v1/txs", octets, &too_many.unwrap()).0,
        413
    );
    // Bad parameters on queries.
    assert_eq!(http(port, "GET", "/v1/account/xyz", b"").0, 400);
    assert_eq!(http(port, "GET", "/v1/tx/1234", b"").0, 400);
    assert_eq!(http(port, "GET", "/v1/block/abc", b"").0, 400);
    assert_eq!(http(port, "GET", "/v1/block/999999999", b"").0, 404);
    assert_eq!(http(port, "GET", "/nope", b"").0, 404);

    // A peer that speaks garbage on the p2p port, several times over.
    for round in 0..5 {
        use std::io::Write;
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", cluster.p2p_port(0))) {
            let _ = stream.write_all(b"/multistream/1.0.0\n");
            let _ = stream.write_all(&garbage[round * 100_000..(round + 1) * 100_000]);
        }
    }
    assert!(
        cluster.is_running(0),
        "node0 died; log:\n{}",
        cluster.log(0)
    );
    let height = cluster.height(0).unwrap();
    committed_height(&cluster.transfer(0, 0, &to.to_string(), 1, true));
    cluster.wait_height(0, height + 1, 30);
    let metrics = http(port, "GET", "/metrics", b"");
    assert_eq!(metrics.0, 200);
    assert!(metrics.1.contains("quorate_height"));
    assert!(metrics.1.contains("quorate_rejected_transactions_total"));
}

#[test]
fn a_validator_behind_by_more_than_peers_keep_in_memory_syncs_the_ledger_and_rejoins() {
    let _serial = serial();
    // A short idle interval and view timeout make the chain grow by many blocks a second, even
    // with one validator down and its views timing out.
    let mut cluster =
        Cluster::start_with(4, 2, &[("idle_interval_ms", 10), ("view_timeout_ms", 100)]);
    // Peers' engines keep 256 committed blocks; go past that.
    cluster.far_behind_replica_syncs_and_rejoins(300);
}

#[test]
fn bench_writes_a_results_line_with_every_spec_field_from_real_validators() {
    let _serial = serial();
    let out = tempfile::tempdir().unwrap();
    let output = quorate_tests::quorate(&[
        "bench",
        "--validators",
        "4",
        "--rate",
        "200",
        "--duration",
        "3",
        "--accounts",
        "20",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(out.path().join("results.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let result: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    for field in [
        "protocol",
        "validators",
        "faulty",
        "offered_tps",
        "tx_size",
        "duration_s",
        "committed_tx",
        "tps",
        "latency_p50_ms",
        "latency_p99_ms",
        "blocks",
        "msgs_per_block",
        "bytes_per_block",
        "cpu_s_per_node",
        "rss_mb_per_node",
        "payload",
        "git_rev",
    ] {
        assert!(result.get(field).is_some(), "no {field} in {result}");
    }
    assert_eq!(result["protocol"], "hotstuff");
    assert_eq!(result["validators"], 4);
    assert_eq!(result["offered_tps"], 200);
    // Everything offered was admitted and committed, none failed.
    assert_eq!(result["committed_tx"], 600, "{result}");
    assert_eq!(result["failed_tx"], 0);
    assert!(result["blocks"].as_u64().unwrap() > 0);
    assert!(
        result["latency_p99_ms"].as_u64().unwrap() >= result["latency_p50_ms"].as_u64().unwrap()
    );
    assert!(result["msgs_per_block"].as_f64().unwrap() > 0.0);
    assert!(result["rss_mb_per_node"].as_f64().unwrap() > 1.0);
    // Opaque payloads of 512 bytes on a bench chain: ordered, committed, none failed.
    let output = quorate_tests::quorate(&[
        "bench",
        "--validators",
        "4",
        "--rate",
        "300",
        "--duration",
        "3",
        "--payload",
        "opaque",
        "--tx-size",
        "512",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "opaque bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(out.path().join("results.jsonl")).unwrap();
    let opaque: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(opaque["payload"], "opaque", "{opaque}");
    assert_eq!(opaque["tx_size"], 512, "{opaque}");
    assert_eq!(opaque["committed_tx"], 900, "{opaque}");
    assert_eq!(opaque["failed_tx"], 0, "{opaque}");
    // A size an opaque payload cannot have is refused with a reason.
    let refused = quorate_tests::quorate(&[
        "bench",
        "--payload",
        "opaque",
        "--tx-size",
        "10",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("framing"));
}

#[test]
fn an_idle_hotstuff_chain_adds_no_blocks_and_a_transfer_still_commits_past_a_dead_leader() {
    let _serial = serial();
    quorate_tests::check_idle_chain("hotstuff", 8);
}
