//! Shared fixtures for the workspace-level integration tests: finding the `quorate` binary,
//! running it, free loopback ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// The `quorate` binary built for this test run: `$QUORATE_BIN`, else `target/<profile>/quorate`
/// next to this crate. `scripts/test.sh` builds it before running the tests.
pub fn quorate_binary() -> PathBuf {
    if let Ok(path) = std::env::var("QUORATE_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join("quorate");
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --bin quorate` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs `quorate` with `args` and returns its output.
pub fn quorate(args: &[&str]) -> Output {
    Command::new(quorate_binary())
        .args(args)
        .output()
        .expect("failed to start quorate")
}

/// A base port with `count` consecutive free loopback ports after it. Ports are probed by
/// binding; a race with another process is possible but unlikely in the high range used.
pub fn free_port_range(count: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let base = probe.local_addr().expect("addr").port();
        drop(probe);
        if base.checked_add(count).is_none() {
            continue;
        }
        let all_free = (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no range of {count} free loopback ports found");
}
