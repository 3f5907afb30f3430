#!/usr/bin/env bash
# The whole test suite: prerequisites, formatting, clippy with warnings denied, every test.
#
# Clippy runs as the compiler wrapper of the test build (RUSTC_WORKSPACE_WRAPPER=clippy-driver)
# rather than as a separate `cargo clippy`: a separate check build compiles RocksDB's C++ a second
# time (~15 minutes on 2 cores), while this way the lints and the tests share one build. The
# workspace denies all warnings ([workspace.lints] in Cargo.toml), so any clippy warning fails.
#
# Knobs (environment):
#   QUORATE_SIM_SEEDS     fast-crypto simulation seeds per configuration in the consensus tests
#                         (default 200; a tenth of that, at least 4, also runs with real BLS)
#   QUORATE_TEST_PROFILE  release | dev | auto (default: release if localnet.sh built it)
#   QUORATE_CHAOS_MINUTES minutes of faults in each protocol's chaos run (default 2; the
#                         campaign the README reports is `scripts/chaos.sh --minutes 30`)
#   QUORATE_CHAOS_SEED    the chaos runs' seed (default 1)
#   QUORATE_FUZZ_SECONDS  seconds each fuzz target runs (default 5; the README's run is
#                         `scripts/fuzz.sh 75`)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh chaos
start=$(date +%s)

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path tests/fuzz/Cargo.toml -- --check

clippy_driver=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)
if [ -z "$clippy_driver" ]; then
  echo "test.sh: clippy-driver not found (rustup component add clippy)" >&2
  exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver"

# Which build the suite runs in: the release build scripts/localnet.sh made, if there is one,
# so that a newcomer who ran localnet.sh compiles no dependency again (RocksDB's C++ above all;
# workspace crates keep overflow checks and debug assertions there, see Cargo.toml); otherwise
# the dev profile, whose RocksDB compiles without optimisation and so fastest from cold (CI).
# QUORATE_TEST_PROFILE=release|dev chooses by hand.
profile=${QUORATE_TEST_PROFILE:-auto}
if [ "$profile" = auto ]; then
  if [ -x target/release/quorate ]; then profile=release; else profile=dev; fi
fi
case "$profile" in
  release) profile_flag=(--release) ;;
  dev) profile_flag=() ;;
  *) echo "test.sh: QUORATE_TEST_PROFILE must be release, dev or auto (got $profile)" >&2; exit 2 ;;
esac
# Always the whole workspace: selecting packages changes how features unify, and that alone
# rebuilds RocksDB.
echo "== build every target with clippy, warnings denied ($profile profile)"
cargo test --workspace --all-targets --locked "${profile_flag[@]}" --no-run
echo "== cargo test ($profile profile)"
cargo test --workspace --locked "${profile_flag[@]}"
for protocol in hotstuff pbft; do
  echo "== chaos: $protocol, ${QUORATE_CHAOS_MINUTES:-2} minutes of faults"
  QUORATE_CHAOS_PROFILE=$profile scripts/chaos.sh --protocol "$protocol" \
    --minutes "${QUORATE_CHAOS_MINUTES:-2}" --seed "${QUORATE_CHAOS_SEED:-1}"
done
echo "== bench: the quick matrix (n=4, both protocols and payloads, plots)"
bench_out=$(mktemp -d)
QUORATE_BENCH_PROFILE=$profile scripts/bench.sh --quick --out "$bench_out"
rm -rf "$bench_out"
echo "== fuzz: every target for ${QUORATE_FUZZ_SECONDS:-5}s"
scripts/fuzz.sh "${QUORATE_FUZZ_SECONDS:-5}"
echo "== done in $(( $(date +%s) - start ))s"
