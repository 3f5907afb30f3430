#!/usr/bin/env bash
# Fuzzes every decoder that takes bytes from outside the node (issue 14): wire frames and
# consensus messages (fed to a live engine of each protocol), blocks and batches, signed
# transactions, the raw block record `audit --rpc` reads, RPC JSON bodies, genesis.json and
# config.toml. Each target asserts no panic, bounded memory (-rss_limit_mb, -malloc_limit_mb)
# and one encoding for what it accepts (tests/fuzz/src/lib.rs).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, every target)
#
# Seeds come from the committed corpus (tests/fuzz/corpus/<target>, written by the
# seed_corpus binary); what the fuzzer finds goes to tests/fuzz/target/corpus/<target>, crashes
# to tests/fuzz/artifacts/<target>/ (the script then fails, naming the input to replay with
# `cargo +nightly fuzz run --fuzz-dir tests/fuzz TARGET FILE`). Per-target execution counts
# are printed and appended as one JSON line to target/fuzz/results.jsonl.
#
# Uses the nightly toolchain with AddressSanitizer where it is installed; otherwise stable with
# RUSTC_BOOTSTRAP=1 and no sanitizer. Installs cargo-fuzz when it is missing. The fuzz crate is
# its own workspace and builds without RocksDB.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[ $# -gt 0 ] && shift
case "$seconds" in
  ''|*[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number (got $seconds)" >&2; exit 2 ;;
esac
all=(wire_frame consensus_message block transaction raw_block rpc_json genesis_json config_toml)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

scripts/setup.sh
# scripts/test.sh runs the workspace under clippy-driver; the fuzz build is not clippy's (and
# may use another toolchain).
unset RUSTC_WORKSPACE_WRAPPER
if cargo +nightly --version >/dev/null 2>&1; then
  toolchain=(+nightly); sanitizer=()
else
  echo "fuzz.sh: no nightly toolchain; fuzzing on stable (RUSTC_BOOTSTRAP=1, no sanitizer)" >&2
  toolchain=(); sanitizer=(--sanitizer none); export RUSTC_BOOTSTRAP=1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi

fuzz=(cargo "${toolchain[@]}" fuzz)
"${fuzz[@]}" build --fuzz-dir tests/fuzz "${sanitizer[@]}" >/dev/null

mkdir -p target/fuzz
total=0
json=""
failed=()
for target in "${targets[@]}"; do
  work=tests/fuzz/target/corpus/$target
  mkdir -p "$work" "tests/fuzz/corpus/$target"
  log=target/fuzz/$target.log
  status=0
  "${fuzz[@]}" run --fuzz-dir tests/fuzz "${sanitizer[@]}" "$target" "$work" "tests/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -malloc_limit_mb=256 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  runs=${runs:-0}
  total=$((total + runs))
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "fuzz.sh: $target FAILED after $runs inputs; see $log and tests/fuzz/artifacts/$target/" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5 >&2 || true
  fi
  printf '%-18s %12s inputs in %ss\n' "$target" "$runs" "$seconds"
  json="$json\"$target\":$runs,"
done
printf '%-18s %12s inputs\n' total "$total"
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "{\"git_rev\":\"$rev\",\"seconds_per_target\":$seconds,\"inputs\":{${json%,}},\"total\":$total,\"failed\":${#failed[@]}}" >> target/fuzz/results.jsonl
[ ${#failed[@]} -eq 0 ]
