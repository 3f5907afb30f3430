//! `quorate audit` over a chain that four real validators built: the untampered chain passes on
//! every home, and each way of tampering with a node's database is caught at the right height by
//! the right check (issue: audit).

use quorate_consensus::CommitProof;
use quorate_crypto::{BlsAggregate, BlsKeyPair, Domain};
use quorate_genesis::ValidatorKeyFile;
use quorate_ledger::{codec, Batch, Height, QuorumCert, SignedTransaction, Store};
use quorate_tests::{quorate, Cluster};
use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn audit_json(home: &Path) -> (bool, serde_json::Value) {
    let output = quorate(&["audit", "--home", home.to_str().unwrap(), "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.success(), value)
}

struct Chain {
    cluster: Cluster,
    /// A height whose block holds transactions.
    busy: u64,
}

fn db(net: &Path) -> PathBuf {
    net.join("node0").join("data").join("db")
}

/// Copies the stopped network, tampers with node0's database, audits node0: (height, check).
fn tampered(chain: &Chain, tamper: impl FnOnce(&Store)) -> (u64, String) {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&chain.cluster.net(), copy.path());
    {
        let store = Store::open(&db(copy.path())).unwrap();
        tamper(&store);
    }
    let (ok, value) = audit_json(&copy.path().join("node0"));
    assert!(!ok, "a tampered chain passed: {value}");
    assert_eq!(value["ok"], false);
    (
        value["failed_height"].as_u64().unwrap(),
        value["check"].as_str().unwrap().to_string(),
    )
}

fn record(store: &Store, height: u64) -> quorate_ledger::CommittedBlock {
    store.committed(Height(height)).unwrap().unwrap()
}

fn first_batch(store: &Store, height: u64) -> (quorate_crypto::Digest, Batch) {
    let digest = record(store, height).batches[0];
    (digest, (*store.batch(&digest).unwrap().unwrap()).clone())
}

/// Rewrites the first transaction of a block's first batch through its JSON form.
fn rewrite_first_tx(store: &Store, height: u64, edit: impl FnOnce(&mut serde_json::Value)) {
    let (digest, mut batch) = first_batch(store, height);
    let mut value = serde_json::to_value(&batch.transactions[0]).unwrap();
    edit(&mut value);
    batch.transactions[0] = serde_json::from_value::<SignedTransaction>(value).unwrap();
    store.overwrite_batch_unchecked(&digest, &batch).unwrap();
}

fn with_qc(store: &Store, height: u64, edit: impl FnOnce(&mut QuorumCert)) {
    let mut block = record(store, height);
    let mut proof: CommitProof = codec::decode(&block.proof).unwrap();
    let CommitProof::HotStuff { qc, .. } = &mut proof else {
        panic!("height {height} of a HotStuff chain has a PBFT proof");
    };
    edit(qc);
    block.proof = codec::encode(&proof).unwrap();
    store.overwrite_committed_unchecked(&block).unwrap();
}

/// A QC over `qc.data` signed by `signers` (validator index, key).
fn resign(qc: &mut QuorumCert, signers: &[(usize, &BlsKeyPair)], n: usize) {
    let bytes = qc.data.signing_bytes().unwrap();
    let mut aggregate = BlsAggregate::new(n);
    for (index, key) in signers {
        aggregate
            .add(*index, &key.sign(Domain::Vote, &bytes))
            .unwrap();
    }
    qc.signers = aggregate.bitmap().clone();
    qc.signature = aggregate.signature().unwrap();
}

#[test]
fn audit_passes_an_untampered_chain_and_catches_each_tampering() {
    let mut cluster = Cluster::start(4, 2);
    let started = std::time::Instant::now();
    while (0..4).any(|i| cluster.height(i).is_none()) {
        assert!(started.elapsed().as_secs() < 60, "RPC never came up");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let to = cluster.account_address(1);
    let mut heights = Vec::new();
    for _ in 0..3 {
        let output = cluster.transfer(0, 0, &to, 5, true);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        heights.push(
            stdout
                .split_whitespace()
                .find_map(|w| w.strip_prefix("height="))
                .and_then(|h| h.parse::<u64>().ok())
                .unwrap(),
        );
    }
    let busy = heights[0];
    eprintln!("transfer heights {heights:?}");
    // Stop when all four report the same head (about a block a second on an idle chain).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now: Vec<Option<u64>> = (0..4).map(|i| cluster.height(i)).collect();
        if now.iter().all(|h| h.is_some() && *h == now[0]) && now[0] > Some(heights[2]) {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let logs: Vec<String> = (0..4)
                .filter(|&i| now[i] != now.iter().copied().max().flatten())
                .map(|i| format!("node{i} log:\n{}", cluster.log(i)))
                .collect();
            panic!("heads never agreed: {now:?}\n{}", logs.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // An audit beside the running node (read-only) passes.
    let (ok, live) = audit_json(&cluster.home(1));
    assert!(ok, "{live}");
    assert!(cluster.stop_all(), "a node did not stop cleanly");
    // All four homes pass and agree on head height and head hash (a block committed while the
    // four were being stopped may leave one a block ahead; then they agree on the block below).
    let mut heads = Vec::new();
    for i in 0..4 {
        let (ok, value) = audit_json(&cluster.home(i));
        assert!(ok, "node{i}: {value}");
        assert_eq!(value["transactions"], 3);
        assert_eq!(value["epochs"], 1);
        heads.push((
            value["head_height"].as_u64().unwrap(),
            value["head_hash"].as_str().unwrap().to_string(),
        ));
    }
    let lowest = heads.iter().min().unwrap().clone();
    let highest = heads.iter().max().unwrap().clone();
    assert!(highest.0 - lowest.0 <= 1, "{heads:?}");
    for i in 0..4 {
        let store = Store::open_read_only(&cluster.home(i).join("data").join("db")).unwrap();
        let hash = record(&store, lowest.0).header.hash().unwrap().to_hex();
        assert_eq!(hash, lowest.1, "node{i} differs at height {}", lowest.0);
    }
    eprintln!("audited heads: {heads:?}");
    let head = {
        let store = Store::open_read_only(&db(&cluster.net())).unwrap();
        store.head().unwrap().unwrap().height.0
    };
    assert!(
        busy < head,
        "the busy block {busy} must not be the head {head}"
    );
    let chain = Chain { cluster, busy };
    let h = chain.busy;
    let n = 4;
    let keys: Vec<BlsKeyPair> = (0..n)
        .map(|i| {
            ValidatorKeyFile::load(&chain.cluster.home(i).join("validator.key.json"))
                .unwrap()
                .bls
        })
        .collect();

    // A transaction's amount.
    let amount = tampered(&chain, |s| {
        rewrite_first_tx(s, h, |tx| {
            tx["transaction"]["kind"]["transfer"]["amount"] = serde_json::json!(4_999);
        })
    });
    assert_eq!(amount, (h, "tx_signature".to_string()));
    // A transaction's signature.
    let signature = tampered(&chain, |s| {
        rewrite_first_tx(s, h, |tx| {
            let sig = tx["signature"].as_str().unwrap().to_string();
            let flipped = if sig.starts_with('0') { "1" } else { "0" };
            tx["signature"] = serde_json::json!(format!("{flipped}{}", &sig[1..]));
        })
    });
    assert_eq!(signature, (h, "tx_signature".to_string()));
    // A header's parent hash.
    let parent = tampered(&chain, |s| {
        let mut block = record(s, h + 1);
        block.header.parent = quorate_crypto::hash(Domain::BlockHeader, b"elsewhere");
        s.overwrite_committed_unchecked(&block).unwrap();
    });
    assert_eq!(parent, (h + 1, "parent_hash".to_string()));
    // A header's state root.
    let root = tampered(&chain, |s| {
        let mut block = record(s, h);
        block.header.state_root = quorate_crypto::hash(Domain::StateRoot, b"rich");
        s.overwrite_committed_unchecked(&block).unwrap();
    });
    assert_eq!(root, (h, "state_root".to_string()));
    // A removed block.
    let removed = tampered(&chain, |s| s.delete_committed_unchecked(Height(h)).unwrap());
    assert_eq!(removed, (h, "missing_block".to_string()));
    // A QC's signer bitmap: one signer swapped for one that did not sign.
    let bitmap = tampered(&chain, |s| {
        with_qc(s, h, |qc| {
            let signer = qc.signers.signers().next().unwrap();
            let absent = (0..n).find(|i| !qc.signers.contains(*i));
            qc.signers.remove(signer);
            match absent {
                Some(other) => {
                    qc.signers.insert(other);
                }
                None => {
                    qc.signers.insert(signer);
                    qc.signers.remove((signer + 1) % n);
                }
            }
        })
    });
    assert_eq!(bitmap, (h, "certificate".to_string()));
    // A QC carrying only 2f signatures (genuine ones).
    let short = tampered(&chain, |s| {
        with_qc(s, h, |qc| resign(qc, &[(0, &keys[0]), (1, &keys[1])], n))
    });
    assert_eq!(short, (h, "certificate".to_string()));
    // A QC with 2f+1 signatures, one of them by a key outside the validator set.
    let outsider = BlsKeyPair::generate();
    let stranger = tampered(&chain, |s| {
        with_qc(s, h, |qc| {
            resign(qc, &[(0, &keys[0]), (1, &keys[1]), (2, &outsider)], n)
        })
    });
    assert_eq!(stranger, (h, "certificate".to_string()));
    // The same QC re-signed by genuine members passes (the tampering above, not the re-signing,
    // is what is caught).
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&chain.cluster.net(), copy.path());
    {
        let store = Store::open(&db(copy.path())).unwrap();
        with_qc(&store, h, |qc| {
            resign(qc, &[(0, &keys[0]), (1, &keys[1]), (2, &keys[2])], n)
        });
    }
    let (ok, value) = audit_json(&copy.path().join("node0"));
    assert!(ok, "{value}");
}

/// A proxy to `upstream` that changes one hex digit in the answer for block `height`'s raw form.
fn tampering_proxy(upstream: u16, height: u64) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                match client.read(&mut byte) {
                    Ok(1) => request.push(byte[0]),
                    _ => break,
                }
            }
            let Ok(mut upstream) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = upstream.write_all(&request);
            let mut answer = Vec::new();
            let _ = upstream.read_to_end(&mut answer);
            let target = format!("GET /v1/block/{height}/raw ");
            if request.starts_with(target.as_bytes()) {
                let marker = b"\"hex\":\"";
                if let Some(at) = answer.windows(marker.len()).position(|w| w == marker) {
                    let start = at + marker.len();
                    let end = start + answer[start..].iter().position(|&b| b == b'"').unwrap();
                    let middle = (start + end) / 2;
                    answer[middle] = if answer[middle] == b'0' { b'1' } else { b'0' };
                }
            }
            let _ = client.write_all(&answer);
        }
    });
    port
}

#[test]
fn audit_over_rpc_trusts_only_the_genesis_and_catches_an_altered_block() {
    let cluster = Cluster::start(4, 2);
    cluster.wait_height(0, 1, 60);
    let to = cluster.account_address(1);
    let output = cluster.transfer(0, 0, &to, 5, true);
    assert!(output.status.success());
    let busy: u64 = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("height="))
        .and_then(|h| h.parse().ok())
        .unwrap();
    let head = cluster.height(0).unwrap() + 2;
    cluster.wait_height(0, head, 60);
    let genesis = cluster.net().join("genesis.json");
    let genesis = genesis.to_str().unwrap();

    let rpc = cluster.rpc(0);
    let honest = quorate(&["audit", "--rpc", &rpc, "--genesis", genesis, "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&honest.stdout).unwrap();
    assert!(honest.status.success(), "{value}");
    assert!(value["head_height"].as_u64().unwrap() >= head);

    let proxy = tampering_proxy(cluster.rpc_port(0), busy);
    let altered = quorate(&[
        "audit",
        "--rpc",
        &format!("http://127.0.0.1:{proxy}"),
        "--genesis",
        genesis,
        "--json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&altered.stdout).unwrap();
    assert!(!altered.status.success(), "{value}");
    assert_eq!(value["ok"], false);
    assert_eq!(value["failed_height"], busy, "{value}");

    // Without --genesis there is nothing to trust: refused.
    let refused = quorate(&["audit", "--rpc", &rpc]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--genesis"));
}
