#!/usr/bin/env bash
# Times a newcomer's first hour: on a fresh clone of this repository (no target/), runs
# scripts/localnet.sh until it prints "localnet of 4 validators running", stops it with Ctrl-C
# (SIGINT), then runs scripts/test.sh to the end. Prints both times and their sum.
#   scripts/first-run.sh [DIR]     (DIR: where to clone; default a new temporary directory)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$(mktemp -d /tmp/quorate-first-run.XXXXXX)}
git clone -q "$src" "$dir/quorate"
cd "$dir/quorate"
echo "fresh clone of $(git rev-parse --short HEAD) in $dir/quorate; logs: $dir/localnet.log, $dir/test.log"
t0=$(date +%s)
setsid scripts/localnet.sh > "$dir/localnet.log" 2>&1 &
pid=$!
trap 'kill -INT -- -$pid 2>/dev/null || true' EXIT
until grep -q "validators running" "$dir/localnet.log"; do
  if ! kill -0 "$pid" 2>/dev/null; then echo "localnet.sh exited before the network ran; see $dir/localnet.log" >&2; exit 1; fi
  sleep 2
done
t1=$(date +%s)
kill -INT -- -"$pid"; wait "$pid" || true
trap - EXIT
echo "localnet.sh: 4 validators running after $((t1 - t0)) s"
t2=$(date +%s)
rc=0
scripts/test.sh > "$dir/test.log" 2>&1 || rc=$?
t3=$(date +%s)
echo "test.sh: exit $rc after $((t3 - t2)) s"
echo "total: $((t1 - t0 + t3 - t2)) s"
exit "$rc"
