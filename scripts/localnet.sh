#!/usr/bin/env bash
# The main job: builds Quorate (release) and runs a 4-validator network on this machine until
# Ctrl-C, then stops every validator cleanly. Prints each node's RPC URL and the command that
# sends a first transaction.
#
#   scripts/localnet.sh                      # 4 validators in ./localnet, ports 26600..26607
#   scripts/localnet.sh --validators 7       # any `quorate localnet` option passes through
#
# A cold release build takes ~15 minutes on 2 cores (most of it RocksDB's C++); later runs
# start at once. The network's state lives in ./localnet (delete it to start a fresh chain).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "== building quorate (release)" >&2
cargo build --release --locked -p quorate-node --bin quorate
exec target/release/quorate localnet "$@"
