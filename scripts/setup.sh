#!/usr/bin/env bash
# Installs the system prerequisites Quorate needs to build, only when they are missing.
#   clang + libclang-dev: RocksDB's Rust bindings are generated with bindgen at build time.
#   A Rust toolchain (cargo) must already be present.
#
#   scripts/setup.sh chaos   also what scripts/chaos.sh and the chaos tests need: root, ip
#                            (iproute2), iptables and faketime, and a kernel with network
#                            namespaces, bridges and NFQUEUE.
#   scripts/setup.sh bench   also the font scripts/bench.sh draws its plots' text with (DejaVu Sans,
#                            package fonts-dejavu-core).
set -euo pipefail

missing=()
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2; exit 1; }
if [ "${1:-}" = chaos ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: the chaos campaign makes network namespaces, a bridge and an iptables rule: run it as root" >&2
    exit 1
  fi
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
fi
if [ "${1:-}" = bench ] && [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  missing+=(fonts-dejavu-core)
fi
command -v clang >/dev/null 2>&1 || missing+=(clang)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  echo "setup: installing ${missing[*]} with sudo" >&2
  sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: missing ${missing[*]}; install them with your package manager (e.g. apt-get install ${missing[*]}) and re-run" >&2
  exit 1
fi
