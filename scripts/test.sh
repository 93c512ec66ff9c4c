#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what it needs first.
#   scripts/test.sh            everything
#   FUZZ_SECONDS=60 scripts/test.sh   longer fuzz runs (default 20 s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "== toolchain and the declared minimum (rust-version)"
# CI has one toolchain; rust-version names it, so the claimed minimum is the
# one built here. A newer toolchain on a newer machine image is reported
# (update rust-version, or build with that version too), not failed on.
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
have=$(rustc --version | awk '{print $2}')
case $have in
  "$msrv"|"$msrv".*) echo "rustc $have: builds the declared rust-version $msrv" ;;
  *) echo "note: rustc $have here, rust-version says $msrv, which this run does not build" ;;
esac

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
(cd fuzz && cargo fmt -- --check && cargo clippy --all-targets -- -D warnings)

echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

echo "== nbd-proto without std (no_std + alloc)"
cargo build -p nbd-proto --no-default-features

echo "== tests"
cargo test --workspace --all-features

echo "== generated files are committed as generated"
# build.rs rewrites nbd-ffi/src/exports/ and libnbd.syms from the API table
# (nbd-ffi/api/) during the build above; any difference was not committed.
git diff --exit-code -- nbd-ffi/src/exports nbd-ffi/libnbd.syms

echo "== fuzz targets (${FUZZ_SECONDS:-20} s each)"
fuzz/run.sh "${FUZZ_SECONDS:-20}"

echo "all tests passed"
