//! A PBFT chain on four real `quorate run` processes: transfers commit with `--wait`, the primary
//! killed -9 is replaced by a view change and transfers still commit, the restarted primary
//! catches up, checkpoint certificates become the commit proofs, `quorate audit` passes on every
//! home and over RPC, and a forged checkpoint certificate fails the audit (issue: PBFT mode).

use quorate_consensus::CommitProof;
use quorate_ledger::{codec, Height, Store};
use quorate_tests::{committed_height, quorate, Cluster};
use std::path::Path;

/// Checkpoints every 8 blocks, so a short run has several.
const INTERVAL: u64 = 8;

/// One cluster at a time: four validators already load a 2-core CI machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn audit(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = quorate(&all);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&output.stderr)))
}

fn audit_home(home: &Path) -> serde_json::Value {
    audit(&["--home", home.to_str().unwrap()])
}

#[test]
fn a_pbft_chain_commits_survives_its_primary_and_audits() {
    let _serial = serial();
    let mut cluster = Cluster::start_protocol(
        "pbft",
        4,
        2,
        &[
            ("checkpoint_interval", INTERVAL),
            ("pbft_window", 4 * INTERVAL),
            ("idle_interval_ms", 100),
        ],
    );
    cluster.wait_height(0, 1, 60);
    let to = cluster.account_address(1);
    let before = cluster.balance(0, &to).unwrap();
    let height = committed_height(&cluster.transfer(0, 0, &to, 25, true));
    for i in 0..4 {
        cluster.wait_height(i, height, 30);
        assert_eq!(cluster.balance(i, &to), Some(before + 25), "node{i}");
    }
    let status = cluster.query(1, &["status"]).unwrap();
    assert_eq!(status["protocol"], "pbft");
    assert_eq!(status["consensus"]["primary"], status["leader"]);

    // The primary of the current view, killed -9: a view change, and transfers still commit.
    let primary = status["leader"].as_u64().unwrap() as usize;
    let view = status["view"].as_u64().unwrap();
    cluster.kill9(primary);
    let via = (primary + 1) % 4;
    let after_kill = committed_height(&cluster.transfer(via, 0, &to, 5, true));
    let status = cluster.query(via, &["status"]).unwrap();
    assert!(status["view"].as_u64().unwrap() > view, "{status}");
    assert!(
        status["consensus"]["view_changes"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_ne!(status["leader"].as_u64().unwrap() as usize, primary);

    // Restarted, the old primary catches up with the others.
    cluster.start_node(primary);
    let target = after_kill + 2 * INTERVAL;
    for i in 0..4 {
        cluster.wait_height(i, target, 90);
    }
    assert_eq!(cluster.balance(primary, &to), Some(before + 30));
    let hashes: Vec<Option<String>> = (0..4).map(|i| cluster.block_hash(i, target)).collect();
    assert!(
        hashes.iter().all(|h| h.is_some() && *h == hashes[0]),
        "{hashes:?}"
    );
    let status = cluster.query(0, &["status"]).unwrap();
    assert!(status["consensus"]["stable_checkpoint"].as_u64().unwrap() >= INTERVAL);

    // Audits pass on every home (read-only, beside the running nodes) and over RPC; the blocks
    // after the last stable checkpoint are reported, not failed.
    for i in 0..4 {
        let report = audit_home(&cluster.home(i));
        assert_eq!(report["ok"], true, "node{i}: {report}");
        assert!(
            report["uncertified_tail"].as_u64().unwrap() < report["head_height"].as_u64().unwrap(),
            "node{i}: no checkpoint covers anything: {report}"
        );
    }
    let genesis = cluster.net().join("genesis.json");
    for i in 0..4 {
        let report = audit(&[
            "--rpc",
            &cluster.rpc(i),
            "--genesis",
            genesis.to_str().unwrap(),
        ]);
        assert_eq!(report["ok"], true, "node{i} over RPC: {report}");
    }

    // A checkpoint certificate with one signer fewer (below quorum) fails with `certificate`.
    assert!(cluster.stop_all());
    let home = cluster.home(0);
    {
        let store = Store::open(&home.join("data").join("db")).unwrap();
        let mut record = store.committed(Height(INTERVAL)).unwrap().unwrap();
        let mut proof: CommitProof = codec::decode(&record.proof).unwrap();
        let CommitProof::Pbft {
            checkpoint: Some(cert),
        } = &mut proof
        else {
            panic!("height {INTERVAL} has no checkpoint certificate: {proof:?}");
        };
        let signer = cert.signers.signers().next().unwrap();
        cert.signers.remove(signer);
        record.proof = codec::encode(&proof).unwrap();
        store.overwrite_committed_unchecked(&record).unwrap();
    }
    let report = audit_home(&home);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["check"], "certificate", "{report}");
    assert_eq!(report["failed_height"], INTERVAL, "{report}");
}

/// A replica down for longer than its peers keep headers (a window below their last stable
/// checkpoint) catches up by ledger sync, which fetches until a checkpoint certificate covers
/// the run (checkpoints every 128 blocks, 64 blocks per request), then rejoins consensus.
#[test]
fn a_pbft_replica_far_behind_syncs_to_a_checkpoint_and_rejoins() {
    let _serial = serial();
    let mut cluster = Cluster::start_protocol(
        "pbft",
        4,
        2,
        &[("idle_interval_ms", 10), ("view_timeout_ms", 200)],
    );
    // Peers keep headers a window (256) below their last stable checkpoint; go past that.
    cluster.far_behind_replica_syncs_and_rejoins(700);
    let report = {
        let output = quorate(&[
            "audit",
            "--home",
            cluster.home(3).to_str().unwrap(),
            "--json",
        ]);
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    assert_eq!(report["ok"], true, "{report}");
}
