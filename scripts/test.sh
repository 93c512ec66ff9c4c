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

echo "== fuzz targets (${FUZZ_SECONDS:-20} s each)"
fuzz/run.sh "${FUZZ_SECONDS:-20}"

echo "all tests passed"
