//! The nonce rule end to end, on four real validators: a signed transaction executes at most
//! once, a failed transfer consumes its nonce and nothing else, and admission refuses what cannot
//! apply (issue: a failed transfer must not brick its account).

use quorate_genesis::AccountKeyFile;
use quorate_ledger::{Batch, SignedTransaction, Transaction, TransactionKind};
use quorate_tests::peer::{push_batch, validator_identity};
use quorate_tests::{http, quorate, Cluster};
use std::time::{Duration, Instant};

fn post(port: u16, tx: &SignedTransaction) -> (u16, String) {
    http(
        port,
        "POST",
        "/v1/tx",
        serde_json::to_string(tx).unwrap().as_bytes(),
    )
}

/// Waits until `hash` is committed on node `i`; returns its status object.
fn wait_committed(cluster: &Cluster, i: usize, hash: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(state) = cluster.query(i, &["tx", hash]) {
            if state["status"] == "committed" {
                return state;
            }
        }
        assert!(Instant::now() < deadline, "{hash} not committed on node{i}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every transaction of `sender` in committed blocks 1..=head of node `i`, in order: (height,
/// hash, nonce, result).
fn history(cluster: &Cluster, i: usize, sender: &str) -> Vec<(u64, String, u64, String)> {
    let head = cluster.height(i).unwrap();
    let mut out = Vec::new();
    for height in 1..=head {
        let block = cluster
            .query(i, &["block", &height.to_string()])
            .unwrap_or_else(|| panic!("block {height} on node{i}"));
        for tx in block["transactions"].as_array().unwrap() {
            let signed: SignedTransaction =
                serde_json::from_value(tx["transaction"].clone()).unwrap();
            if signed.sender().to_string() == sender {
                out.push((
                    height,
                    tx["hash"].as_str().unwrap().to_string(),
                    signed.transaction().nonce,
                    tx["result"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

#[test]
fn a_failed_transfer_consumes_its_nonce_and_never_executes_again() {
    let mut cluster = Cluster::start(4, 2);
    cluster.wait_height(0, 1, 60);
    let port = cluster.rpc_port(0);
    let status = cluster.query(0, &["status"]).unwrap();
    let chain_id = status["chain_id"].as_str().unwrap().to_string();
    let key = AccountKeyFile::load(&cluster.account_key(0)).unwrap();
    let from = key.public().address().to_string();
    let to = cluster.account_address(1);
    let to_address = quorate_crypto::Address::from_hex(&to).unwrap();
    let sign = |nonce: u64, amount: u64| {
        Transaction {
            chain_id: chain_id.clone(),
            sender: key.public(),
            nonce,
            kind: TransactionKind::Transfer {
                to: to_address,
                amount,
            },
        }
        .sign(&key)
        .unwrap()
    };
    let balance = cluster.balance(0, &from).unwrap();

    // An overdrawing transfer is refused at RPC (400), from the CLI and raw alike.
    let rpc = cluster.rpc(0);
    let key_path = cluster.account_key(0);
    let out = quorate(&[
        "tx",
        "transfer",
        "--key",
        key_path.to_str().unwrap(),
        "--to",
        &to,
        "--amount",
        &u64::MAX.to_string(),
        "--rpc",
        &rpc,
        "--wait",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an overdraft was accepted");
    assert!(
        stderr.contains("exceeds the available balance"),
        "unclear refusal: {stderr}"
    );
    let overdraft = sign(0, balance + 1);
    let (code, text) = post(port, &overdraft);
    assert_eq!(code, 400, "{text}");

    // A failed transfer committed, as a race between admissions makes one: nonce 1 is sealed
    // and broadcast while it is gapped (nothing before it: 70% of the balance is free), then
    // nonce 0 takes that 70%. Both are in blocks; nonce 1 fails for want of funds.
    let spend = balance / 10 * 7;
    let late = sign(1, spend);
    let (code, text) = post(port, &late);
    assert_eq!(code, 200, "{text}");
    std::thread::sleep(Duration::from_millis(300));
    let early = sign(0, spend);
    let (code, text) = post(port, &early);
    assert_eq!(code, 200, "{text}");
    let late_hash = late.id().to_string();
    let failed = wait_committed(&cluster, 0, &late_hash);
    assert_eq!(failed["result"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("less than amount"),
        "{failed}"
    );
    let failed_height = failed["height"].as_u64().unwrap();
    assert_eq!(
        wait_committed(&cluster, 0, &early.id().to_string())["result"],
        "ok"
    );
    let account = cluster.query(0, &["account", &from]).unwrap();
    assert_eq!(account["nonce"], 2, "{account}");
    assert_eq!(account["next_nonce"], 2, "{account}");

    // The next CLI transfer, with the nonce the node gives, commits and succeeds.
    let out = cluster.transfer(0, 0, &to, 5, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the account is bricked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("nonce=2"), "{stdout}");

    // Funded again, the failed payment still cannot be carried out: refused at RPC...
    let out = cluster.transfer(0, 1, &from, spend, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let funded = cluster.balance(0, &from).unwrap();
    assert!(funded >= spend);
    let (code, text) = post(port, &late);
    assert!((400..500).contains(&code), "resubmitted: {code} {text}");

    // ...and when a Byzantine validator (node3's identity) hands it to the others in a new
    // batch (beside a genuine transfer from account 1, so the batch is not the one already
    // stored), a block carries it again: it fails as a bad nonce and changes nothing.
    cluster.kill9(3);
    let identity = validator_identity(&cluster.home(3));
    let payer = AccountKeyFile::load(&cluster.account_key(1)).unwrap();
    let payer_nonce = cluster.query(0, &["account", &to]).unwrap()["next_nonce"]
        .as_u64()
        .unwrap();
    let genuine = Transaction {
        chain_id: chain_id.clone(),
        sender: payer.public(),
        nonce: payer_nonce,
        kind: TransactionKind::Transfer {
            to: key.public().address(),
            amount: 1,
        },
    }
    .sign(&payer)
    .unwrap();
    let batch = Batch {
        transactions: vec![late.clone(), genuine],
    };
    push_batch(&cluster, 3, &identity, &batch);
    let deadline = Instant::now() + Duration::from_secs(60);
    let again = loop {
        let copies: Vec<_> = history(&cluster, 0, &from)
            .into_iter()
            .filter(|(height, hash, _, _)| *hash == late_hash && *height > failed_height)
            .collect();
        if let Some(copy) = copies.into_iter().next() {
            break copy;
        }
        assert!(
            Instant::now() < deadline,
            "no block carried the replayed batch; node0 log:\n{}",
            cluster.log(0)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        again.3.contains("nonce 1, expected 3"),
        "replayed transaction: {again:?}"
    );
    cluster.wait_height(1, again.0, 30);
    for i in 0..3 {
        assert_eq!(cluster.balance(i, &from), Some(funded + 1), "node{i}");
        let account = cluster.query(i, &["account", &from]).unwrap();
        assert_eq!(account["nonce"], 3, "node{i}: {account}");
        // The transaction's record still names where it executed.
        let record = cluster.query(i, &["tx", &late_hash]).unwrap();
        assert_eq!(
            record["height"].as_u64(),
            Some(failed_height),
            "node{i}: {record}"
        );
        assert_eq!(record["result"], "failed", "node{i}: {record}");
    }

    // Receipts, the account and the audit agree on every nonce: the transactions that consumed
    // one are exactly nonces 0, 1, 2, and the account's nonce is 3.
    let consumed: Vec<u64> = history(&cluster, 0, &from)
        .into_iter()
        .filter(|(_, _, _, result)| !result.contains("nonce") && !result.contains("chain"))
        .map(|(_, _, nonce, _)| nonce)
        .collect();
    assert_eq!(consumed, vec![0, 1, 2]);
    cluster.stop_all();
    for i in 0..3 {
        let home = cluster.home(i);
        let out = quorate(&["audit", "--home", home.to_str().unwrap(), "--json"]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("audit output: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["ok"], true, "node{i}: {report}");
        assert!(
            report["failed_transactions"].as_u64().unwrap() >= 2,
            "{report}"
        );
    }
}
