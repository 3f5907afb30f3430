#!/usr/bin/env bash
# A fault campaign on real validator processes (issue 14): N validators in network namespaces
# behind emulated links, a load client recording every acknowledgement, a nemesis (kill -9 and
# restart, SIGSTOP/SIGCONT, isolating one validator, splitting the network with no quorum on
# either side, heavy loss or delay on one link, restarts with a skewed clock), then a checker:
# nothing acknowledged lost, no divergent block, no transaction applied twice, balances equal
# genesis plus the committed transfers, `quorate audit --home` passing on every home, memory
# under a bound. Exits non-zero on any of it, naming the seed to replay.
#
#   scripts/chaos.sh [--protocol hotstuff|pbft] [--validators N] [--minutes M] [--seed S]
#                    [--faults kill9,pause,isolate,split,lossy,slow,skew] [--delay-ms D]
#                    [--jitter-ms J] [--rss-bound-mb MB] [--results FILE] [--dir DIR]
#
# Needs root (network namespaces, a bridge, an iptables NFQUEUE rule); installs iproute2,
# iptables and faketime with apt-get when they are missing. Results: one JSON line per run
# appended to target/chaos/results.jsonl (or --results).
# QUORATE_CHAOS_PROFILE=release|dev picks the build (default release).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh chaos
profile=${QUORATE_CHAOS_PROFILE:-release}
case "$profile" in
  release) flag=(--release); dir=target/release ;;
  dev) flag=(); dir=target/debug ;;
  *) echo "chaos.sh: QUORATE_CHAOS_PROFILE must be release or dev (got $profile)" >&2; exit 2 ;;
esac
cargo build --workspace --bins --locked "${flag[@]}" -q
QUORATE_GIT_REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
  exec "$dir/chaos" --quorate "$dir/quorate" "$@"
