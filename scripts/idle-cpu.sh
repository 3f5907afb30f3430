#!/usr/bin/env bash
# What an idle 4-node localnet costs: one transfer, a few seconds to settle, then the CPU time
# (user + system, from /proc) the four validator processes use over the next SECONDS (default 60)
# and the height before and after (an idle chain adds no block).
#
#   scripts/idle-cpu.sh [--protocol hotstuff|pbft] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."

protocol=hotstuff
seconds=60
while [ $# -gt 0 ]; do
  case "$1" in
    --protocol) protocol=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    -h|--help) sed -n 2,6p "$0"; exit 0 ;;
    *) echo "idle-cpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

scripts/setup.sh
cargo build --release --locked --bin quorate -q
q=$PWD/target/release/quorate
dir=$(mktemp -d)
# A free range of 8 ports below the ephemeral range.
base=
for _ in $(seq 50); do
  candidate=$(( 10000 + RANDOM % 20000 ))
  if ! ss -Htln 2>/dev/null | awk '{print $4}' | grep -qE ":($candidate|$((candidate + 1))|$((candidate + 7)))\$"; then
    base=$candidate
    break
  fi
done
[ -n "$base" ] || { echo "idle-cpu.sh: no free ports found" >&2; exit 1; }

setsid "$q" localnet --dir "$dir/net" --protocol "$protocol" --base-port "$base" > "$dir/localnet.log" 2>&1 < /dev/null &
localnet=$!
cleanup() { kill -INT "$localnet" 2>/dev/null || true; sleep 3; rm -rf "$dir"; }
trap cleanup EXIT

rpc=http://127.0.0.1:$((base + 1))
for _ in $(seq 120); do
  "$q" query status --rpc "$rpc" >/dev/null 2>&1 && break
  sleep 0.5
done
to=$(sed -n 's/.*"address": *"\([0-9a-f]*\)".*/\1/p' "$dir/net/accounts/account-1.json")
"$q" tx transfer --key "$dir/net/accounts/account-0.json" --to "$to" --amount 10 --rpc "$rpc" --wait
sleep 5

pids=$(pgrep -f "quorate run --home $dir/net" | tr '\n' ' ')
[ "$(echo $pids | wc -w)" -eq 4 ] || { echo "idle-cpu.sh: expected 4 validators, found: $pids" >&2; exit 1; }
ticks() {
  local total=0 fields
  for pid in $pids; do
    read -r -a fields <<< "$(cut -d')' -f2 "/proc/$pid/stat")"
    total=$(( total + fields[11] + fields[12] ))
  done
  echo "$total"
}
height() { "$q" query status --rpc "$rpc" | sed -n 's/^height: //p'; }
h0=$(height); t0=$(ticks); s0=$(date +%s.%N)
sleep "$seconds"
t1=$(ticks); s1=$(date +%s.%N); h1=$(height)
hz=$(getconf CLK_TCK)
awk -v p="$protocol" -v t="$((t1 - t0))" -v hz="$hz" -v s0="$s0" -v s1="$s1" -v h0="$h0" -v h1="$h1" \
  'BEGIN { printf "%s idle: %.4f cores in total for 4 validators over %.1f s; height %s -> %s\n", p, t / hz / (s1 - s0), s1 - s0, h0, h1 }'
