//! A fatal error stops the whole node, at once, with one clear line and a non-zero exit (issue:
//! a storage read error panicked on the executor thread and left a zombie that served RPC and
//! p2p but never voted or committed again).

use quorate_crypto::Address;
use quorate_ledger::Store;
use quorate_tests::Cluster;
use std::time::{Duration, Instant};

#[test]
fn a_corrupt_account_record_stops_the_node_with_one_line_and_a_failure_exit() {
    let mut cluster = Cluster::start(4, 2);
    cluster.wait_height(3, 1, 60);
    // Node 3's record of account 1 (the receiver below) becomes garbage on disk.
    assert!(
        cluster.stop(3),
        "node3 did not stop cleanly:\n{}",
        cluster.log(3)
    );
    let receiver = cluster.account_address(1);
    {
        let store = Store::open(&cluster.home(3).join("data").join("db")).unwrap();
        let address = Address::from_hex(&receiver).unwrap();
        store
            .overwrite_account_raw_unchecked(&address, &[0xff; 3])
            .unwrap();
    }
    cluster.start_node(3);
    cluster.wait_height(3, 2, 60);

    // Executing a block that pays account 1 must read it: node 3 has to stop.
    let out = cluster.transfer(0, 0, &receiver, 5, true);
    assert!(
        out.status.success(),
        "transfer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = cluster.exit_status(3) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "node3 is still running on a corrupt disk (a zombie):\n{}",
            cluster.log(3)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "node3 exited with success on a fatal error"
    );
    let log = cluster.log(3);
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("state read failed"),
        "the last line does not say what went wrong: {last:?}\n{log}"
    );
    assert!(!log.contains("panicked"), "node3 panicked:\n{log}");
    // The other three carry on.
    let height = cluster.height(0).unwrap();
    cluster.wait_height(0, height + 2, 60);
}
