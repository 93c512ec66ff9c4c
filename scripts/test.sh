#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs first.
#   scripts/test.sh            everything
#   FUZZ_SECONDS=60 scripts/test.sh   longer fuzz runs (default 20 s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== nbd-proto without std (no_std + alloc)"
cargo build -p nbd-proto --no-default-features

echo "== tests"
cargo test --workspace

echo "== generated files are committed as generated"
# build.rs rewrites nbd-ffi/src/exports/ and libnbd.syms from the API table
# (nbd-ffi/api/) during the build above; any difference was not committed.
git diff --exit-code -- nbd-ffi/src/exports nbd-ffi/libnbd.syms

echo "== fuzz targets (${FUZZ_SECONDS:-20} s each)"
fuzz/run.sh "${FUZZ_SECONDS:-20}"

echo "all tests passed"
