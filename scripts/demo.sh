#!/usr/bin/env bash
# Builds the project and runs the example clients against a throw-away
# qemu-nbd export (a 64 MiB qcow2 image in a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-nbd >/dev/null || { echo "qemu-nbd is needed: apt-get install qemu-utils" >&2; exit 1; }
cargo build --release -p nbd-proto --examples
dir=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M
qemu-nbd -f qcow2 --persistent -k "$dir/nbd.sock" "$dir/disk.qcow2" &
pid=$!
for _ in $(seq 100); do [ -S "$dir/nbd.sock" ] && break; sleep 0.05; done
echo "== blocking client (std::net)"
target/release/examples/blocking "$dir/nbd.sock"
echo "== tokio client"
target/release/examples/tokio "$dir/nbd.sock"
