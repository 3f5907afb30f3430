//! `quorate testnet` and `quorate keygen` through the real binary (SPEC "CLI", "Testnet layout").

use quorate_crypto::BlsPublicKey;
use quorate_genesis::{Genesis, NodeConfig, ValidatorKeyFile};
use quorate_tests::{free_port_range, quorate};
use std::os::unix::fs::PermissionsExt;

#[test]
fn testnet_writes_the_spec_layout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("net");
    let base = free_port_range(8);
    let output = quorate(&[
        "testnet",
        "--validators",
        "4",
        "--protocol",
        "hotstuff",
        "--dir",
        out.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        let p2p = base + 2 * i as u16;
        assert!(line.starts_with(&format!("node{i} home=")), "{line}");
        assert!(
            line.contains(&format!(" rpc=http://127.0.0.1:{}", p2p + 1)),
            "{line}"
        );
        assert!(
            line.ends_with(&format!(" p2p=/ip4/127.0.0.1/tcp/{p2p}")),
            "{line}"
        );
        let home = out.join(format!("node{i}"));
        let config = NodeConfig::load(&home.join("config.toml")).unwrap();
        assert_eq!(config.rpc_listen, format!("127.0.0.1:{}", p2p + 1));
        let key_path = home.join("validator.key.json");
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode");
        ValidatorKeyFile::load(&key_path).unwrap();
        assert!(home.join("data").is_dir());
    }
    let accounts: Vec<_> = std::fs::read_dir(out.join("accounts")).unwrap().collect();
    assert_eq!(accounts.len(), 4);

    let genesis_path = out.join("genesis.json");
    let genesis = Genesis::load(&genesis_path).unwrap();
    let first = genesis.hash().unwrap();
    let again = Genesis::load(&genesis_path).unwrap().hash().unwrap();
    assert_eq!(first, again, "genesis hash changes on reload");
    assert_eq!(genesis.validators.len(), 4);
    for validator in &genesis.validators {
        let key: BlsPublicKey = validator.bls_key;
        key.verify_pop(&validator.bls_pop).unwrap();
    }

    // Running it again on the same directory is refused with a one-line reason.
    let again = quorate(&[
        "testnet",
        "--validators",
        "4",
        "--dir",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
}

#[test]
fn keygen_prints_the_address_and_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    let output = quorate(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    let address = stdout.trim();
    assert_eq!(address.len(), 40, "{stdout}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(file["address"], address);
    let secret = file["secret_key"].as_str().unwrap();
    assert!(!stdout.contains(secret));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(secret));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwrites.
    let again = quorate(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(!again.status.success());

    let vpath = dir.path().join("v.json");
    let output = quorate(&["keygen", "--validator", "--out", vpath.to_str().unwrap()]);
    assert!(output.status.success());
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("bls_key="));
    ValidatorKeyFile::load(&vpath).unwrap();
}

#[test]
fn bad_arguments_fail_with_a_reason() {
    let output = quorate(&["testnet", "--validators", "0"]);
    assert!(!output.status.success());
    let output = quorate(&["testnet", "--validators", "4", "--protocol", "raft"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("raft"));
}
