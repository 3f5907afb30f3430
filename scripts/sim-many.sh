#!/usr/bin/env bash
# Many simulation seeds over mixed Byzantine configurations, reproducibly.
#
#   scripts/sim-many.sh [SEEDS] [PROTOCOLS]
#     SEEDS      seeds per protocol (default 10000), split evenly over its configurations below
#     PROTOCOLS  comma-separated (default hotstuff,pbft)
#   CRYPTO=fast|real   signature backend (default fast; real is BLS, ~50x slower)
#   OUT=DIR            one JSON summary per configuration (default sim-out/), times in DIR/times.log
#   QUORATE=PATH       a quorate binary to run (default: build target/release/quorate); a copy
#                      keeps a long run on one build while the tree is rebuilt beside it
#
# Each configuration has its own seed range, so runs never overlap. Prints seeds/s per
# configuration and overall; exits non-zero if any configuration reports a safety violation or
# a stalled seed (the JSON names the first such seed: `quorate sim ... --first-seed S --seeds 1`
# replays it).
#
#   scripts/sim-many.sh 1000000      # a million schedules (about two hours on 2 cores)
#   scripts/sim-many.sh 400          # a quick pass
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-${SEEDS:-10000}}
PROTOCOLS=${2:-hotstuff,pbft}
CRYPTO=${CRYPTO:-fast}
OUT=${OUT:-sim-out}
case "$SEEDS" in ''|*[!0-9]*) echo "sim-many.sh: SEEDS must be a number, got '$SEEDS'" >&2; exit 2;; esac
if [ -n "${QUORATE:-}" ]; then
  [ -x "$QUORATE" ] || { echo "sim-many.sh: QUORATE=$QUORATE is not an executable" >&2; exit 2; }
  Q=$QUORATE
else
  scripts/setup.sh
  cargo build --release --locked -p quorate-node --bin quorate
  Q=target/release/quorate
fi
mkdir -p "$OUT"

# name | arguments
hotstuff_configs=(
  "twins-n4|--validators 4 --byzantine 1 --behaviour twins"
  "equivocate-n4|--validators 4 --byzantine 1 --behaviour equivocate"
  "equivocate-n7|--validators 7 --byzantine 2 --behaviour equivocate --drop 0.1"
  "random-n4|--validators 4 --byzantine 1 --behaviour random --drop 0.05"
  "random-n7|--validators 7 --byzantine 2 --behaviour random"
  "silent-n4|--validators 4 --byzantine 1 --behaviour silent"
  "poison-n4|--validators 4 --byzantine 1 --behaviour poison"
  "badpayload-n4|--validators 4 --byzantine 1 --behaviour bad-payload"
  "flood-n7|--validators 7 --byzantine 2 --behaviour flood --drop 0.1"
)
# PBFT has the protocol-neutral behaviours and its own equivocator, bad primary and flooder.
pbft_configs=(
  "twins-n4|--validators 4 --byzantine 1 --behaviour twins"
  "equivocate-n4|--validators 4 --byzantine 1 --behaviour equivocate"
  "equivocate-n7|--validators 7 --byzantine 2 --behaviour equivocate --drop 0.1"
  "random-n4|--validators 4 --byzantine 1 --behaviour random --drop 0.05"
  "random-n7|--validators 7 --byzantine 2 --behaviour random --drop 0.1"
  "silent-n4|--validators 4 --byzantine 1 --behaviour silent"
  "silent-n7|--validators 7 --byzantine 2 --behaviour silent --drop 0.1"
  "twins-n10|--validators 10 --byzantine 3 --behaviour twins"
  "badpayload-n4|--validators 4 --byzantine 1 --behaviour bad-payload"
  "flood-n7|--validators 7 --byzantine 2 --behaviour flood --drop 0.1"
)
status=0
now() { date +%s.%N; }
field() { grep -o "\"$1\":[0-9.]*" "$2" | head -1 | cut -d: -f2; }
all_start=$(now)
total=0
IFS=',' read -r -a protocols <<< "$PROTOCOLS"
for protocol in "${protocols[@]}"; do
  case "$protocol" in
    hotstuff) configs=("${hotstuff_configs[@]}") ;;
    pbft) configs=("${pbft_configs[@]}") ;;
    *) echo "sim-many.sh: unknown protocol '$protocol' (hotstuff or pbft)" >&2; exit 2 ;;
  esac
  # SEEDS split evenly; the first SEEDS mod N configurations take one more, so the total is SEEDS.
  base=$(( SEEDS / ${#configs[@]} ))
  extra=$(( SEEDS % ${#configs[@]} ))
  k=0
  for entry in "${configs[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    k=$(( k + 1 ))
    per=$base
    [ "$k" -le "$extra" ] && per=$(( per + 1 ))
    [ "$per" -ge 1 ] || per=1
    first=$(( k * 100000000 ))
    start=$(now)
    # shellcheck disable=SC2086
    if ! "$Q" sim --protocol "$protocol" $args --crypto "$CRYPTO" --seeds "$per" --first-seed "$first" \
        --json > "$OUT/$protocol-$name.json" 2> "$OUT/$protocol-$name.err"; then
      status=1
    fi
    secs=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    total=$(( total + per ))
    json="$OUT/$protocol-$name.json"
    if [ -s "$json" ]; then
      summary="violations=$(field safety_violations "$json") stalls=$(field liveness_failures "$json") min_committed=$(field min_committed "$json") committed_per_s=$(field committed_per_s "$json") lock_refusals=$(field lock_refusals "$json")"
    else
      summary="no summary (see $OUT/$protocol-$name.err)"
    fi
    line=$(awk -v p="$protocol" -v n="$name" -v k="$per" -v s="$secs" -v rest="$summary" \
      'BEGIN { printf "%s %-14s seeds=%d secs=%.1f seeds/s=%.1f %s", p, n, k, s, (s > 0 ? k / s : 0), rest }')
    echo "$line" | tee -a "$OUT/times.log"
  done
done
awk -v k="$total" -v a="$all_start" -v b="$(now)" -v c="$CRYPTO" \
  'BEGIN { s = b - a; printf "all: seeds=%d secs=%.1f seeds/s=%.1f crypto=%s\n", k, s, (s > 0 ? k / s : 0), c }' \
  | tee -a "$OUT/times.log"
exit $status
