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

/// A replica paused (SIGSTOP) while its peers commit 1,000 blocks past it resumes with its
/// engine's state and its connections intact (unlike a restart), and is still brought to the
/// head by ledger sync. Sync also probes peers while the ledger advances, since the PBFT chaos
/// campaign once left a replica 1,300 blocks behind for two minutes: an engine committing at
/// its peers' pace, fed headers a peer's allowance at a time, never stalls.
#[test]
fn a_pbft_replica_paused_far_behind_is_caught_up_by_ledger_sync() {
    let _serial = serial();
    let mut cluster = Cluster::start_protocol(
        "pbft",
        4,
        2,
        &[("idle_interval_ms", 10), ("view_timeout_ms", 200)],
    );
    cluster.wait_height(0, 2, 60);
    cluster.wait_height(3, 2, 60);
    cluster.pause(3, true);
    let behind = cluster.height(0).expect("node0 height");
    cluster.wait_height(0, behind + 1000, 240);
    cluster.pause(3, false);
    let to = cluster.account_address(1);
    committed_height(&cluster.transfer(0, 0, &to, 9, true));
    let head = cluster.height(0).expect("node0 height");
    cluster.wait_height(3, head, 90);
    assert_eq!(cluster.block_hash(3, head), cluster.block_hash(0, head));
    assert_eq!(cluster.balance(3, &to), cluster.balance(0, &to));
    assert!(
        cluster
            .full_log(3)
            .contains("sync: applying committed blocks"),
        "node3 did not use ledger sync; log:\n{}",
        cluster.log(3)
    );
    assert!(cluster.stop_all());
}

/// Every replica killed -9 at once, then all but the primary restarted: the new primary must
/// re-issue the committed blocks above the last stable checkpoint, and a restarted replica
/// holds their headers only if recovery loads them from the ledger. Without that, no replica
/// could serve them and the view change never ended (a chaos campaign stalled a chain for good
/// this way). Then the old primary returns and catches up.
#[test]
fn a_pbft_chain_restarted_all_at_once_without_its_primary_changes_view_and_commits() {
    let _serial = serial();
    let mut cluster = Cluster::start_protocol(
        "pbft",
        4,
        2,
        &[
            ("idle_interval_ms", 10),
            ("view_timeout_ms", 300),
            ("checkpoint_interval", 64),
        ],
    );
    cluster.wait_height(0, 80, 120);
    // Stop where blocks committed above the stable checkpoint are sure to exist.
    let stable_and_head = |cluster: &Cluster| {
        let status = cluster.query(0, &["status"]).expect("status");
        let stable = status["consensus"]["stable_checkpoint"].as_u64().unwrap();
        (
            stable,
            status["height"].as_u64().unwrap(),
            status["leader"].as_u64().unwrap(),
        )
    };
    let (mut stable, mut head, mut primary) = stable_and_head(&cluster);
    while head < stable + 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        (stable, head, primary) = stable_and_head(&cluster);
    }
    for i in 0..4 {
        cluster.kill9(i);
    }
    let primary = primary as usize;
    for i in (0..4).filter(|&i| i != primary) {
        cluster.start_node(i);
    }
    let via = (primary + 1) % 4;
    cluster.wait_height(via, head, 30); // its RPC answers
    let to = cluster.account_address(1);
    let committed = committed_height(&cluster.transfer(via, 0, &to, 3, true));
    assert!(
        committed > head,
        "committed at {committed}, head was {head}"
    );
    cluster.start_node(primary);
    let now = cluster.height(via).expect("height");
    cluster.wait_height(primary, now, 120);
    assert_eq!(
        cluster.block_hash(primary, now),
        cluster.block_hash(via, now)
    );
    assert!(cluster.stop_all());
}

#[test]
fn an_idle_pbft_chain_adds_no_blocks_and_a_transfer_still_commits_past_a_dead_primary() {
    let _serial = serial();
    quorate_tests::check_idle_chain("pbft", 8);
}
