#!/usr/bin/env bash
# The standard benchmark matrix: protocol × validators × payload × a ladder of offered rates, each
# ladder climbed until the network saturates (`quorate bench --until-saturated`: p50 over 2 s,
# the client behind its schedule, or what was offered not committing), into one results.jsonl;
# then the plots (SVG and PNG) and table.md drawn from it by bench-plot
# (tests/src/bin/bench-plot.rs).
#
#   scripts/bench.sh [--quick] [--out DIR] [--protocols P,..] [--validators N,..]
#                    [--payloads transfers,opaque] [--duration S]
#
# Defaults: hotstuff,pbft × 4,16,64,100 × transfers,opaque, 10 s of load per rate, out bench-out/
# (results.jsonl is started afresh; each run's testnet and logs stay under DIR/runs/, its databases do not).
# --quick: n=4, one light rate per protocol and payload, 3 s each (the suite runs this).
# QUORATE_BENCH_PROFILE=release|dev picks the build (default release: the figures in the README
# come from it; the suite uses the build it already has).
set -euo pipefail
cd "$(dirname "$0")/.."

out=bench-out
protocols=hotstuff,pbft
validators=4,16,64,100
payloads=transfers,opaque
duration=10
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --protocols) protocols=$2; shift ;;
    --validators) validators=$2; shift ;;
    --payloads) payloads=$2; shift ;;
    --duration) duration=$2; shift ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
# The ladders. Each starts at 10 tx/s (the latency plot's light-load point, the same at every n),
# then climbs from where the rates start to matter at that n up to past its ceiling. All n
# validators share this machine's cores, so the ceiling falls with n (each node checks, stores
# and orders every transaction).
ladder() { # payload n
  case "$1:$2" in
    transfers:?) echo 10,1000,2000,5000,10000,15000,20000,25000,30000 ;;
    opaque:?) echo 10,2000,5000,10000,25000,40000,50000,60000,75000,85000,100000 ;;
    transfers:??) echo 10,100,250,500,1000,2000,3000,5000,10000 ;;
    opaque:??) echo 10,100,250,500,1000,2000,5000,10000,15000,20000,25000 ;;
    *) echo 10,25,50,100,250,500,1000,2000 ;;
  esac
}
quick_rates() { # payload
  case "$1" in
    transfers) echo 1000 ;;
    *) echo 2000 ;;
  esac
}
if [ "$quick" = 1 ]; then
  validators=4
  duration=3
fi

scripts/setup.sh bench
profile=${QUORATE_BENCH_PROFILE:-release}
case "$profile" in
  release) flag=(--release); dir=target/release ;;
  dev) flag=(); dir=target/debug ;;
  *) echo "bench.sh: QUORATE_BENCH_PROFILE must be release or dev (got $profile)" >&2; exit 2 ;;
esac
cargo build --workspace --bins --locked "${flag[@]}" -q

mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
# Many validators on one machine: each holds sockets to every other, and RocksDB files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
failed=()
IFS=, read -r -a protocol_list <<< "$protocols"
IFS=, read -r -a n_list <<< "$validators"
IFS=, read -r -a payload_list <<< "$payloads"
for n in "${n_list[@]}"; do
  for payload in "${payload_list[@]}"; do
    case "$payload" in
      transfers|opaque) ;;
      *) echo "bench.sh: unknown payload $payload (transfers or opaque)" >&2; exit 2 ;;
    esac
    if [ "$quick" = 1 ]; then rates=$(quick_rates "$payload"); else rates=$(ladder "$payload" "$n"); fi
    for protocol in "${protocol_list[@]}"; do
      echo "== $protocol, n=$n, $payload: rates $rates, ${duration}s each"
      # One configuration failing (it could not start, say) is reported, and the matrix goes on.
      if ! "$dir/quorate" bench --protocol "$protocol" --validators "$n" --payload "$payload" \
          --rate "$rates" --until-saturated --duration "$duration" --out "$out"; then
        failed+=("$protocol n=$n $payload")
      fi
    done
  done
done

"$dir/bench-plot" --results "$results" --out "$out/plots"
if [ "$quick" = 1 ]; then
  # The suite's check: every run made a line, and every figure exists.
  expected=$(( ${#protocol_list[@]} * ${#payload_list[@]} ))
  lines=$(wc -l < "$results")
  [ "$lines" -eq "$expected" ] || { echo "bench.sh: expected $expected results, got $lines" >&2; exit 1; }
  for payload in "${payload_list[@]}"; do
    for figure in throughput latency curves; do
      for ext in svg png; do
        [ -s "$out/plots/$payload-$figure.$ext" ] || { echo "bench.sh: $out/plots/$payload-$figure.$ext missing" >&2; exit 1; }
      done
    done
  done
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench.sh: these configurations failed: ${failed[*]}" >&2
  exit 1
fi
echo "bench.sh: $(wc -l < "$results") runs in $results; plots and table.md in $out/plots"
