#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent):
# real NBD servers (qemu-nbd, nbdkit, nbd-server), Debian's libnbd programs and
# headers as the comparison baseline, fio, OpenSSL's headers (libssl-dev: the
# library's TLS), the Rust tools (cargo-fuzz, cbindgen) and libnbd 1.24 under
# ${LIBNBD_LATEST:-/tmp/libnbd-latest} (see the end). Run as root (or
# with sudo available).
set -euo pipefail

pkgs=(qemu-utils nbdkit nbd-server libnbd-bin libnbd-dev
      python3-libnbd fio pkg-config libssl-dev gnutls-bin binutils make gcc procps valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
if ! command -v cbindgen >/dev/null; then
  cargo install cbindgen --version 0.29.4 --locked
fi

# libnbd 1.24 (Debian's newest: its programs, library, header and man pages)
# and nbdkit 1.48, extracted beside the system under one root: tests/tests/latest.rs
# runs 1.24's own programs on 1.24 and on ours, nbd-ffi's header/ABI tests read
# its libnbd.h, and bench/run.sh benchmarks it. The tests and the benchmark find
# the root through the same variable and default.
latest_tool="$(cd "$(dirname "$0")/.." && pwd)/../shared/tools/libnbd-latest.sh"
if [ ! -f "$latest_tool" ]; then
  echo "install-deps: $latest_tool is missing (the shared/ directory must sit beside the repository)" >&2
  exit 1
fi
bash "$latest_tool" "${LIBNBD_LATEST:-/tmp/libnbd-latest}"
