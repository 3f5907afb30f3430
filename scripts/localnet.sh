#!/usr/bin/env bash
# The main job: builds Quorate (release) and runs a 4-validator network on this machine until
# Ctrl-C, then stops every validator cleanly. Prints each node's RPC URL and the command that
# sends a first transaction.
#
#   scripts/localnet.sh                      # 4 validators in ./localnet, ports 26600..26607
#   scripts/localnet.sh --validators 7       # any `quorate localnet` option passes through
#
# A cold release build takes 15-20 minutes on 2 cores (most of it RocksDB's C++); later runs
# start at once, and scripts/test.sh reuses the same build. The network's state lives in ./localnet (delete it to start a fresh chain).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ ! -x target/release/quorate ]; then
  echo "== first build of quorate (release): 15-20 minutes on 2 cores, most of it RocksDB's C++;" \
       "scripts/test.sh reuses it, and later runs start in seconds" >&2
else
  echo "== building quorate (release)" >&2
fi
cargo build --release --locked -p quorate-node --bin quorate
exec target/release/quorate localnet "$@"
