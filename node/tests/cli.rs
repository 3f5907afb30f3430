//! The `quorate` binary's command-line surface. (Having an integration test here also makes
//! `cargo test --workspace` build the binary that the workspace tests in `tests/` run.)

use std::process::Command;

fn quorate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .output()
        .expect("run quorate")
}

#[test]
fn help_lists_the_subcommands() {
    let output = quorate(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["keygen", "testnet", "sim"] {
        assert!(
            text.contains(command),
            "--help does not list {command}: {text}"
        );
    }
}

#[test]
fn unknown_subcommand_fails() {
    let output = quorate(&["frobnicate"]);
    assert!(!output.status.success());
    assert!(!output.stderr.is_empty());
}
