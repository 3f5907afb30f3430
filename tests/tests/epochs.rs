//! Validator-set changes on a running chain, for both protocols (issue 13): under a steady
//! load of transfers, a node made by `quorate init` follows the chain, governance adds it
//! (epoch 1, where it votes) and removes one of the original validators (epoch 2, where that
//! one follows); every node switches sets at the block that ends each epoch, a node down since
//! epoch 0 catches up through both changes by ledger sync and votes again, every node
//! restarted in epoch 2 resumes, no transfer fails or is lost, a brand-new follower catches up
//! through its `--peer` once every validator of epoch 0 is down, and the audit of every home
//! and of the RPC counts three epochs.

use quorate_consensus::CommitProof;
use quorate_tests::{committed_height, quorate, transfer, Cluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// `quorate tx validators ARGS --key account-0 --rpc node0 --wait`, which must succeed.
fn change(cluster: &Cluster, args: &[&str]) {
    let key = cluster.account_key(0);
    let rpc = cluster.rpc(0);
    let mut all = vec!["tx", "validators"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--key", key.to_str().unwrap(), "--rpc", &rpc, "--wait"]);
    let out = quorate(&all);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

/// Waits until node `i` reports `epoch` (and `validators` in its set).
fn wait_epoch(cluster: &Cluster, i: usize, epoch: u64, validators: u64, timeout_s: u64) {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(status) = cluster.query(i, &["status"]) {
            if status["epoch"] == epoch && status["validators"] == validators {
                return;
            }
            last = Some(status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "node{i} did not reach epoch {epoch} with {validators} validators in {timeout_s} s (last status {last:?}); log:\n{}",
        cluster.log(i)
    );
}

/// Transfers of 1 from account 1 to account 2 through node 1, one after another with
/// `--wait`, until stopped: how many committed, and every failure's message.
fn steady_load(
    cluster: &Cluster,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    let rpc = cluster.rpc(1);
    let key = cluster.account_key(1);
    let to = cluster.account_address(2);
    std::thread::spawn(move || {
        let (mut committed, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let out = transfer(&rpc, &key, &to, 1, true);
            if out.status.success() {
                committed += 1;
            } else {
                failures.push(stderr(&out));
            }
        }
        (committed, failures)
    })
}

fn audit_home(cluster: &Cluster, i: usize) -> serde_json::Value {
    let out = quorate(&[
        "audit",
        "--home",
        cluster.home(i).to_str().unwrap(),
        "--json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("node{i}'s audit printed no JSON: {}", stderr(&out)));
    assert!(out.status.success(), "node{i}'s audit failed: {value}");
    value
}

fn reconfigure_under_load(protocol: &str) {
    // Four validators at genesis and a spare node; no heartbeat: every block the changes need
    // comes from the changes themselves (a scheduled change and an epoch's closing are pending
    // work of their own).
    let mut cluster = Cluster::start_with_spares(
        protocol,
        4,
        2,
        3,
        &[("epoch_rules.min_validators", 3), ("idle_interval_ms", 0)],
    );
    for i in 0..4 {
        cluster.wait_height(i, 0, 60);
    }
    let first = committed_height(&cluster.transfer(1, 1, &cluster.account_address(2), 1, true));

    // node4, made by `quorate init`, follows: it syncs the chain and serves it, and votes in
    // nothing.
    let info = cluster.init_spare(4, 0);
    assert_eq!(info["name"], "node4");
    cluster.start_node(4);
    cluster.wait_height(4, first, 60);
    let status = cluster.query(4, &["status"]).unwrap();
    assert_eq!(status["role"], "follower", "{status}");
    assert!(status["validator_index"].is_null(), "{status}");
    // It forwards what it is sent to the validators.
    let forwarded = committed_height(&cluster.transfer(4, 0, &cluster.account_address(2), 1, true));
    assert!(forwarded > first);

    // node3 goes down in epoch 0 and comes back in epoch 2.
    assert!(cluster.stop(3), "node3 did not stop cleanly");

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(&cluster, stop.clone());
    std::thread::sleep(Duration::from_secs(2));

    // Epoch 1: node4 joins. Five validators, quorum 4, node3 away: the chain moves only if
    // node4 votes.
    let info_path = cluster.home(4).join("validator.public.json");
    change(&cluster, &["add", "--info", info_path.to_str().unwrap()]);
    for i in [0, 1, 2, 4] {
        wait_epoch(&cluster, i, 1, 5, 90);
    }
    let status = cluster.query(4, &["status"]).unwrap();
    assert_eq!(status["role"], "validator", "{status}");
    let joined = committed_height(&cluster.transfer(4, 0, &cluster.account_address(2), 1, true));

    // Epoch 2: node2, one of the original four, is out (it follows from then on, and its
    // operator stops it).
    change(&cluster, &["remove", "--name", "node2"]);
    for i in [0, 1, 2, 4] {
        wait_epoch(&cluster, i, 2, 4, 90);
    }
    let status = cluster.query(2, &["status"]).unwrap();
    assert_eq!(status["role"], "follower", "{status}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(cluster.stop(2), "node2 did not stop cleanly");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (committed, failures) = load.join().unwrap();
    assert!(failures.is_empty(), "transfers failed: {failures:#?}");
    assert!(committed > 0, "no transfer committed under the changes");
    // None lost: the sender's nonce counts every transfer.
    let account = cluster
        .query(0, &["account", &cluster.account_address(1)])
        .unwrap();
    assert_eq!(account["nonce"], committed + 1, "{account}");

    // node3, down since epoch 0, catches up through both changes and votes in epoch 2 (with
    // node1 then stopped, the quorum of 3 needs it).
    cluster.start_node(3);
    wait_epoch(&cluster, 3, 2, 4, 120);
    let head = committed_height(&cluster.transfer(0, 1, &cluster.account_address(2), 1, true));
    cluster.wait_height(3, head, 90);
    // Every node restarted in epoch 2 resumes.
    for i in [1, 0, 4, 3] {
        assert!(cluster.stop(i), "node{i} did not stop cleanly");
        let via = if i == 0 { 1 } else { 0 };
        let while_down =
            committed_height(&cluster.transfer(via, 1, &cluster.account_address(2), 1, true));
        cluster.start_node(i);
        wait_epoch(&cluster, i, 2, 4, 60);
        // Caught up (the client takes the sender's next nonce from it), it takes a transfer and
        // commits it (and so does the chain) before the next one goes.
        cluster.wait_height(i, while_down, 60);
        committed_height(&cluster.transfer(i, 1, &cluster.account_address(2), 1, true));
    }
    let last = committed_height(&cluster.transfer(1, 1, &cluster.account_address(2), 1, true));
    assert!(last > head && head > joined && joined > first);
    for i in [0, 1, 3, 4] {
        cluster.wait_height(i, last, 60);
    }

    // A brand-new follower once every validator of epoch 0 is gone: it reaches the chain only
    // through the peer its `quorate init --peer` named (node4, which joined in epoch 1), and
    // walks both changes from genesis. (Epoch 2 has no quorum meanwhile: nothing commits.)
    for i in [0, 1, 3] {
        assert!(cluster.stop(i), "node{i} did not stop cleanly");
    }
    cluster.init_spare(5, 4);
    cluster.start_node(5);
    wait_epoch(&cluster, 5, 2, 4, 180);
    // A third party can prove a PBFT block committed only up to the last checkpoint (every 128
    // blocks) at or below it; a HotStuff head carries its three-chain.
    let provable = if protocol == "pbft" {
        last - last % 128
    } else {
        last
    };
    cluster.wait_height(5, provable, 60);
    let status = cluster.query(5, &["status"]).unwrap();
    assert_eq!(status["role"], "follower", "{status}");

    let genesis = cluster.net().join("genesis.json");
    let out = quorate(&[
        "audit",
        "--rpc",
        &cluster.rpc(4),
        "--genesis",
        genesis.to_str().unwrap(),
        "--json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{value}");
    assert_eq!(value["epochs"], 3, "{value}");
    assert!(cluster.stop_all(), "a node did not stop cleanly");
    for i in 0..6 {
        let value = audit_home(&cluster, i);
        assert_eq!(value["epochs"], 3, "node{i}: {value}");
    }

    // The last block of epoch 1 stripped of its own proof (left to the hash chain from epoch
    // 2's blocks, which epoch 2's set certified): the audit refuses it.
    let boundary = {
        let store = quorate_ledger::Store::open(&cluster.home(0).join("data").join("db")).unwrap();
        let height = store
            .epoch_record(quorate_ledger::Epoch(2))
            .unwrap()
            .unwrap()
            .root_height;
        let mut record = store.committed(height).unwrap().unwrap();
        let proof: CommitProof = quorate_ledger::decode(&record.proof).unwrap();
        // Its proof weakened to its own protocol's hash-chain-only form; or, for a HotStuff
        // block proven through a descendant (which carries no QC of the block itself), the path
        // cut short.
        let (weakened, check) = match proof {
            CommitProof::HotStuff { qc, .. } => (
                CommitProof::HotStuff {
                    qc,
                    three_chain: None,
                },
                "epoch_change",
            ),
            CommitProof::Descendant { mut path, proof } if protocol == "hotstuff" => {
                path.pop();
                (CommitProof::Descendant { path, proof }, "certificate")
            }
            _ => (CommitProof::Pbft { checkpoint: None }, "epoch_change"),
        };
        record.proof = quorate_ledger::encode(&weakened).unwrap();
        store.overwrite_committed_unchecked(&record).unwrap();
        (height, check)
    };
    let out = quorate(&[
        "audit",
        "--home",
        cluster.home(0).to_str().unwrap(),
        "--json",
    ]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!out.status.success(), "{value}");
    assert_eq!(value["failed_height"], boundary.0 .0, "{value}");
    assert_eq!(value["check"], boundary.1, "{value}");

    // Epoch 2's first block made to claim epoch 1 (as if epoch 1's set could still certify
    // blocks after its last one), on node1's copy; and the commitment to epoch 2's set (the
    // last block of epoch 1's state root) altered, on node3's.
    let tamper = |i: usize, height: u64, change: &dyn Fn(&mut quorate_ledger::BlockHeader)| {
        let store = quorate_ledger::Store::open(&cluster.home(i).join("data").join("db")).unwrap();
        let mut record = store
            .committed(quorate_ledger::Height(height))
            .unwrap()
            .unwrap();
        change(&mut record.header);
        store.overwrite_committed_unchecked(&record).unwrap();
        drop(store);
        let out = quorate(&[
            "audit",
            "--home",
            cluster.home(i).to_str().unwrap(),
            "--json",
        ]);
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(!out.status.success(), "{value}");
        assert_eq!(value["failed_height"], height, "{value}");
        value["check"].as_str().unwrap().to_string()
    };
    let b = boundary.0 .0;
    assert_eq!(
        tamper(1, b + 1, &|h| h.epoch = quorate_ledger::Epoch(1)),
        "epoch"
    );
    assert_eq!(
        tamper(3, b, &|h| h.state_root = quorate_crypto::Digest([9; 32])),
        "state_root"
    );
}

#[test]
fn hotstuff_changes_its_validator_set_under_load() {
    reconfigure_under_load("hotstuff");
}

#[test]
fn pbft_changes_its_validator_set_under_load() {
    reconfigure_under_load("pbft");
}

/// A key outside the set (a follower, or anyone) is a guest at a validator: it reads committed
/// blocks within a budget of requests, and frames that do not decode score it down until it is
/// disconnected and shunned (its consensus messages and manifests are dropped unscored: an
/// honest validator of another epoch sends them too).
#[test]
fn guests_read_within_a_budget_and_are_shunned_for_garbage() {
    use quorate_consensus::wire::{NetRequest, NetResponse};
    use quorate_tests::peer::{manifest_frame, request_frame, send_frames, Answer};
    let cluster = Cluster::start(4, 1);
    cluster.wait_height(0, 2, 60);
    let address: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", cluster.p2p_port(0))
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let committed = |answer: &Answer| -> bool {
        let Answer::Answered(bytes) = answer else {
            return false;
        };
        matches!(
            quorate_ledger::decode::<NetResponse>(&bytes[4..]),
            Ok(NetResponse::Committed(blocks)) if !blocks.is_empty()
        )
    };
    let read = request_frame(&NetRequest::GetCommitted { from: 1, count: 1 });

    // Within its budget a guest reads committed blocks; past it, requests go unanswered.
    let guest = libp2p::identity::Keypair::generate_ed25519();
    let answers = runtime.block_on(send_frames(
        guest.clone(),
        address.clone(),
        vec![read.clone(); 200],
    ));
    let served = answers.iter().filter(|a| committed(a)).count();
    assert!(
        (1..=80).contains(&served),
        "{served} of 200 requests served at once"
    );

    // A manifest is dropped unscored (answered, stored nowhere); five frames that do not
    // decode shun the guest.
    let manifest = manifest_frame(quorate_crypto::Digest([7; 32]), &[]);
    let answers = runtime.block_on(send_frames(guest.clone(), address.clone(), vec![manifest]));
    assert!(
        matches!(answers.as_slice(), [Answer::Answered(_)]),
        "{answers:?}"
    );
    let mut garbage = 16u32.to_be_bytes().to_vec();
    garbage.extend([0xff; 16]);
    let answers = runtime.block_on(send_frames(
        guest.clone(),
        address.clone(),
        vec![garbage; 5],
    ));
    assert!(answers.iter().all(|a| *a == Answer::Refused), "{answers:?}");
    let answers = runtime.block_on(send_frames(guest, address.clone(), vec![read.clone()]));
    assert!(!answers.iter().any(committed), "a shunned guest was served");
    // Another guest is still served, and the chain went on.
    let other = libp2p::identity::Keypair::generate_ed25519();
    let answers = runtime.block_on(send_frames(other, address, vec![read]));
    assert!(answers.iter().any(committed), "{answers:?}");
    let height = cluster.height(0).unwrap();
    cluster.wait_height(0, height + 2, 60);
}

/// On an idle chain (no heartbeat, no transactions), a scheduled change is pending work: the
/// blocks up to the one that ends the epoch, and those above it until its proof is complete
/// (PBFT: the next checkpoint), come by themselves, and the chain is idle again in the new
/// epoch.
#[test]
fn an_idle_chain_carries_out_a_change_by_itself() {
    let cluster = Cluster::start_protocol("pbft", 4, 1, &[("idle_interval_ms", 0)]);
    for i in 0..4 {
        cluster.wait_height(i, 0, 60);
    }
    change(&cluster, &["set-power", "--name", "node3", "--power", "2"]);
    for i in 0..4 {
        wait_epoch(&cluster, i, 1, 4, 90);
    }
    // PBFT goes on to its next checkpoint (every 128 blocks), then idles.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut height = cluster.height(0).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = cluster.height(0).unwrap();
        if now == height {
            break;
        }
        assert!(Instant::now() < deadline, "the chain did not go idle again");
        height = now;
    }
    assert!(height <= 128, "idle at {height}, past the first checkpoint");
}
