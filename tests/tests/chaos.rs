//! The quorum taken away on real processes: the chaos driver splits four validators into two
//! halves (neither a quorum) again and again, on each protocol. The chain must halt during
//! every split (no block commits without a quorum), never fork, and commit again after each
//! heal; everything acknowledged stays where the client was told, and every home audits.
//!
//! Needs root, like `scripts/chaos.sh` (network namespaces, a bridge, an NFQUEUE rule; iptables
//! installed by `scripts/setup.sh chaos`, which `scripts/test.sh` runs).

use std::process::Command;

fn split_campaign(protocol: &str, seed: u64) -> serde_json::Value {
    let results = tempfile::NamedTempFile::new().expect("results file");
    let output = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args([
            "--protocol",
            protocol,
            "--faults",
            "split",
            "--minutes",
            "0.4",
        ])
        .args(["--seed", &seed.to_string()])
        .arg("--quorate")
        .arg(quorate_tests::quorate_binary())
        .arg("--results")
        .arg(results.path())
        .output()
        .expect("run the chaos driver");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chaos failed:\n{stderr}");
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}\n{stderr}"))
}

#[test]
fn a_split_without_quorum_halts_and_resumes_without_a_fork() {
    for (protocol, seed) in [("hotstuff", 11), ("pbft", 12)] {
        let run = split_campaign(protocol, seed);
        let splits = run["faults"]["split"].as_u64().unwrap_or(0);
        assert!(splits >= 2, "{protocol}: {splits} splits: {run}");
        assert_eq!(run["commits_without_quorum"], 0, "{protocol}: {run}");
        let resumed = run["split_resumed_s"].as_array().expect("split_resumed_s");
        assert_eq!(resumed.len() as u64, splits, "{protocol}: {run}");
        assert!(resumed.iter().all(|s| s.is_f64()), "{protocol}: {run}");
        assert_eq!(run["divergent"], 0, "{protocol}: {run}");
        assert_eq!(run["lost"], 0, "{protocol}: {run}");
        assert!(
            run["acknowledged"].as_u64().unwrap_or(0) > 0,
            "{protocol}: {run}"
        );
        assert_eq!(run["audits_passed"], 4, "{protocol}: {run}");
    }
}
