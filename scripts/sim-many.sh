#!/usr/bin/env bash
# Many simulation seeds over mixed configurations (the 10,000-seed run of the HotStuff issue):
# 4 configurations x SEEDS seeds each (default 2500), each with its own seed range, one JSON
# summary per configuration in OUT (default sim-out/), and the time each took in OUT/times.log.
# Exits non-zero if any configuration reports a safety violation or a stalled seed.
#
#   scripts/sim-many.sh            # 10,000 seeds (~1.5 h of CPU on this machine kind)
#   SEEDS=100 scripts/sim-many.sh  # a quick pass
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-2500}
OUT=${OUT:-sim-out}
scripts/setup.sh
cargo build --release --locked -p quorate-node --bin quorate
mkdir -p "$OUT"
Q=target/release/quorate
status=0
run() {
  local name=$1; shift
  local start; start=$(date +%s)
  "$Q" sim --protocol hotstuff "$@" --seeds "$SEEDS" --json > "$OUT/$name.json" 2> "$OUT/$name.err" || status=1
  echo "$name secs=$(( $(date +%s) - start )) $*" | tee -a "$OUT/times.log"
  cat "$OUT/$name.json"; echo
}
run twins-n4      --validators 4 --byzantine 1 --behaviour twins --first-seed 1000000
run equivocate-n7 --validators 7 --byzantine 2 --behaviour equivocate --drop 0.1 --first-seed 2000000
run random-n4     --validators 4 --byzantine 1 --behaviour random --drop 0.05 --first-seed 4000000
run silent-n4     --validators 4 --byzantine 1 --behaviour silent --first-seed 5000000
exit $status
