#!/usr/bin/env bash
# Builds libnbd.so.0 and the C examples, then runs one against a throw-away
# qemu-nbd export that the library itself starts by socket activation, and
# the Rust core's example client against a qemu-nbd on a Unix socket.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-nbd >/dev/null || { echo "qemu-nbd is needed: apt-get install qemu-utils" >&2; exit 1; }
make lib
make -C c-examples
cargo build --release -p nbd-proto --examples
dir=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 64M

echo "== C example on our libnbd.so.0 (qemu-nbd started by socket activation)"
target/c-examples/socket-activation qemu-nbd -f qcow2 "$dir/disk.qcow2"

echo "== Rust core example (std::net) against qemu-nbd on a Unix socket"
qemu-nbd -f qcow2 --persistent -k "$dir/nbd.sock" "$dir/disk.qcow2" &
pid=$!
for _ in $(seq 100); do [ -S "$dir/nbd.sock" ] && break; sleep 0.05; done
target/release/examples/blocking "$dir/nbd.sock"
