#!/usr/bin/env bash
# The whole test suite: prerequisites, formatting, clippy with warnings denied, every test.
#
# Clippy runs as the compiler wrapper of the test build (RUSTC_WORKSPACE_WRAPPER=clippy-driver)
# rather than as a separate `cargo clippy`: a separate check build compiles RocksDB's C++ a second
# time (~15 minutes on 2 cores), while this way the lints and the tests share one build. The
# workspace denies all warnings ([workspace.lints] in Cargo.toml), so any clippy warning fails.
#
# Knobs (environment):
#   QUORATE_SIM_SEEDS   simulation seeds per configuration in the consensus tests (default 42)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
start=$(date +%s)

echo "== cargo fmt --check"
cargo fmt --all -- --check

clippy_driver=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)
if [ -z "$clippy_driver" ]; then
  echo "test.sh: clippy-driver not found (rustup component add clippy)" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver"

# The suite runs in the release profile so that it shares every dependency (RocksDB's C++ above
# all) with the build scripts/localnet.sh made; workspace crates keep overflow checks and debug
# assertions there (Cargo.toml, [profile.release]).
echo "== build every target with clippy, warnings denied (release profile, shared with localnet.sh)"
cargo test --workspace --all-targets --locked --release --no-run
echo "== cargo test"
cargo test --workspace --locked --release
echo "== done in $(( $(date +%s) - start ))s"
