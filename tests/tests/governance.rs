//! Validator-set governance at the edges (issue 13, the part that has landed): `quorate init`
//! writes a node's home and public description; `quorate tx validators ...` builds governance
//! transactions that a node checks against the committed governance state, refusing each bad
//! input with its reason; `GET /v1/validators` and `quorate query validators` show the set.

use quorate_genesis::AccountKeyFile;
use quorate_ledger::{Batch, Epoch, Transaction, TransactionKind, ValidatorChange, ValidatorInfo};
use quorate_tests::peer::{push_batch, validator_identity};
use quorate_tests::{free_port_range, http, quorate, Cluster};
use std::path::Path;

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn init(home: &Path, genesis: &Path, port: u16) -> std::process::Output {
    quorate(&[
        "init",
        "--home",
        home.to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--p2p",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--rpc",
        &format!("127.0.0.1:{}", port + 1),
        "--peer",
        "/ip4/127.0.0.1/tcp/1",
    ])
}

#[test]
fn init_writes_a_home_and_its_public_description_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net");
    let out = quorate(&[
        "testnet",
        "--validators",
        "4",
        "--dir",
        net.to_str().unwrap(),
        "--base-port",
        "30000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let genesis = net.join("genesis.json");
    let home = dir.path().join("node-e");
    let out = init(&home, &genesis, 40000);
    assert!(out.status.success(), "{}", stderr(&out));
    // What it prints is the public file, a validator description with a valid proof.
    let printed: ValidatorInfo = serde_json::from_slice(&out.stdout).unwrap();
    let file: ValidatorInfo =
        serde_json::from_str(&std::fs::read_to_string(home.join("validator.public.json")).unwrap())
            .unwrap();
    assert_eq!(printed, file);
    assert_eq!(file.name, "node-e");
    assert_eq!(file.p2p_address, "/ip4/127.0.0.1/tcp/40000");
    assert!(file.bls_key.verify_pop(&file.bls_pop).is_ok());
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(config.contains("/ip4/127.0.0.1/tcp/1"), "{config}");
    assert!(home.join("genesis.json").is_file() && home.join("data").is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("validator.key.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The home's genesis is the chain's.
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis).unwrap()).unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("genesis.json")).unwrap()).unwrap();
    assert_eq!(a, b);

    let again = init(&home, &genesis, 40002);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("never overwrites"),
        "{}",
        stderr(&again)
    );
    let bad = quorate(&[
        "init",
        "--home",
        dir.path().join("other").to_str().unwrap(),
        "--genesis",
        genesis.to_str().unwrap(),
        "--p2p",
        "127.0.0.1:9",
        "--rpc",
        "127.0.0.1:10",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not a multiaddr"), "{}", stderr(&bad));
    // (Started, a node outside the set follows the chain: tests/tests/epochs.rs.)
}

/// Runs `quorate tx validators ARGS --key account-K --rpc node0`; returns its stderr and
/// whether it succeeded.
fn propose(cluster: &Cluster, account: usize, args: &[&str]) -> (bool, String) {
    let key = cluster.account_key(account);
    let rpc = cluster.rpc(0);
    let mut all = vec!["tx", "validators"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--key", key.to_str().unwrap(), "--rpc", &rpc]);
    let out = quorate(&all);
    (out.status.success(), stderr(&out))
}

fn refused(cluster: &Cluster, account: usize, args: &[&str], reason: &str) {
    let (ok, err) = propose(cluster, account, args);
    assert!(!ok, "{args:?} was accepted");
    assert!(
        err.contains(reason),
        "{args:?}: expected {reason:?}, got {err}"
    );
}

#[test]
fn governance_transactions_are_refused_at_rpc_with_their_reason() {
    // On a chain whose genesis does not allow reconfiguration: every rule is checked, and a
    // change that passes them all is still refused (tests/tests/epochs.rs runs changes).
    let cluster = Cluster::start_with(
        4,
        2,
        &[
            ("epoch_rules.min_validators", 4),
            ("allow_reconfiguration", 0),
        ],
    );
    cluster.wait_height(0, 1, 60);
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cluster.net().join("genesis.json")).unwrap())
            .unwrap();
    let set: Vec<ValidatorInfo> = serde_json::from_value(genesis["validators"].clone()).unwrap();

    // The set as RPC and the CLI show it.
    let port = cluster.rpc_port(0);
    let (status, body) = http(port, "GET", "/v1/validators", b"");
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["epoch"], 0);
    assert_eq!(shown["validators"].as_array().unwrap().len(), 4);
    assert_eq!(shown["total_power"], 4);
    assert_eq!(shown["quorum_power"], 3);
    assert_eq!(
        shown["governance"]["members"],
        serde_json::json!([cluster.account_address(0)])
    );
    assert_eq!(shown["governance"]["threshold"], 1);
    assert_eq!(http(port, "GET", "/v1/validators?epoch=0", b"").0, 200);
    let (status, body) = http(port, "GET", "/v1/validators?epoch=1", b"");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("has not begun"), "{body}");
    assert_eq!(http(port, "GET", "/v1/validators?epoch=x", b"").0, 400);
    let out = quorate(&["query", "validators", "--rpc", &cluster.rpc(0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("epoch 0: 4 validators, total power 4, quorum 3"),
        "{text}"
    );
    let status = cluster.query(0, &["status"]).unwrap();
    assert_eq!(
        (status["epoch"].clone(), status["validators"].clone()),
        (0.into(), 4.into())
    );

    // A new node's description.
    let home = cluster.dir.path().join("newcomer");
    let p2p = free_port_range(2);
    let out = init(&home, &cluster.net().join("genesis.json"), p2p);
    assert!(out.status.success(), "{}", stderr(&out));
    let info_path = home.join("validator.public.json");
    let info: ValidatorInfo =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    let write_info = |name: &str, v: &ValidatorInfo| {
        let path = cluster.dir.path().join(name);
        std::fs::write(&path, serde_json::to_string(v).unwrap()).unwrap();
        path
    };
    let info_arg = info_path.to_str().unwrap();

    // Account 1 is not a member (testnet --governance 1: account 0 alone).
    refused(
        &cluster,
        1,
        &["add", "--info", info_arg],
        "is not a member of governance",
    );
    let mut bad_pop = info.clone();
    bad_pop.bls_pop = set[0].bls_pop;
    let path = write_info("bad-pop.json", &bad_pop);
    refused(
        &cluster,
        0,
        &["add", "--info", path.to_str().unwrap()],
        "proof of possession does not verify",
    );
    let mut same_identity = info.clone();
    same_identity.identity_key = set[1].identity_key;
    let path = write_info("same-identity.json", &same_identity);
    refused(
        &cluster,
        0,
        &["add", "--info", path.to_str().unwrap()],
        "identity key",
    );
    let mut same_bls = info.clone();
    same_bls.bls_key = set[2].bls_key;
    same_bls.bls_pop = set[2].bls_pop;
    let path = write_info("same-bls.json", &same_bls);
    refused(
        &cluster,
        0,
        &["add", "--info", path.to_str().unwrap()],
        "the BLS key is already in the set",
    );
    refused(
        &cluster,
        0,
        &["remove", "--name", "nobody"],
        "no validator named nobody in epoch 0",
    );
    refused(
        &cluster,
        0,
        &["remove", "--name", "node3"],
        "3 validators, below min_validators 4",
    );
    refused(
        &cluster,
        0,
        &["add", "--info", info_arg, "--power", "10"],
        "no reachable quorum",
    );
    refused(
        &cluster,
        0,
        &["set-power", "--name", "node1", "--power", "0"],
        "voting power must be positive",
    );

    // A stale epoch, sent raw (the CLI always names the node's current epoch).
    let key = AccountKeyFile::load(&cluster.account_key(0)).unwrap();
    let tx = Transaction {
        chain_id: genesis["chain_id"].as_str().unwrap().to_string(),
        sender: key.public(),
        nonce: 0,
        kind: TransactionKind::Reconfigure {
            epoch: Epoch(5),
            change: Box::new(ValidatorChange::Remove {
                name: "node1".into(),
            }),
        },
    }
    .sign(&key)
    .unwrap();
    let (status, body) = http(
        port,
        "POST",
        "/v1/tx",
        serde_json::to_string(&tx).unwrap().as_bytes(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("names epoch 5, but the chain is in epoch 0"),
        "{body}"
    );

    // A change that passes every rule: this chain does not take it, and says so.
    refused(
        &cluster,
        0,
        &["add", "--info", info_arg],
        "not accepted on this chain",
    );
    // Nothing was recorded, and every refusal left the account's nonce alone.
    let account = cluster
        .query(0, &["account", &cluster.account_address(0)])
        .unwrap();
    assert_eq!(account["nonce"], 0);
    let (_, body) = http(port, "GET", "/v1/validators", b"");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown["governance"]["proposals"], serde_json::json!([]));

    // A Byzantine validator pushes the same change to its peers in a batch: refused there too
    // (every node checks a peer's batch as admission does), never ordered.
    let change = Transaction {
        chain_id: genesis["chain_id"].as_str().unwrap().to_string(),
        sender: key.public(),
        nonce: 0,
        kind: TransactionKind::Reconfigure {
            epoch: Epoch(0),
            change: Box::new(ValidatorChange::Add {
                validator: info.clone(),
            }),
        },
    }
    .sign(&key)
    .unwrap();
    let batch = Batch {
        transactions: vec![change.clone()],
    };
    push_batch(&cluster, 3, &validator_identity(&cluster.home(3)), &batch);
    let height = cluster.height(0).unwrap();
    cluster.wait_height(0, height + 3, 60);
    let state = cluster.query(0, &["tx", &change.id().to_string()]).unwrap();
    assert_eq!(state["status"], "unknown", "{state}");
    let account = cluster
        .query(0, &["account", &cluster.account_address(0)])
        .unwrap();
    assert_eq!(account["nonce"], 0);
}
