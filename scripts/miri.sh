#!/usr/bin/env bash
# Opt-in, not part of scripts/test.sh: runs nbd-proto's tests and nbd-ffi's
# unit tests under Miri, which reports undefined behaviour, out-of-bounds or
# uninitialised reads, aliasing violations and leaks in our code and in the
# crates it uses. nbd-ffi's integration tests cannot run there: Miri stops at
# the engine's first fcntl(F_SETFD) ("unsupported operation").
#
# Miri ships only with nightly toolchains: stable has no `miri` component and
# RUSTC_BOOTSTRAP=1 cannot stand in for it. So this needs a nightly toolchain
# with the miri and rust-src components (MIRI_TOOLCHAIN, default `nightly`):
#   rustup component add --toolchain nightly miri rust-src
#
#   scripts/miri.sh                                  the default set (below)
#   scripts/miri.sh -p nbd-proto --test client_basic any `cargo miri test` arguments
#
# Proptests run PROPTEST_CASES=4 cases (default here). getcwd, which proptest
# calls to find its regression files, fails under Miri's isolation; it is
# made to return an error with a warning instead of stopping the test.
set -euo pipefail
cd "$(dirname "$0")/.."
tc=${MIRI_TOOLCHAIN:-nightly}
if ! cargo +"$tc" miri --version >/dev/null 2>&1; then
  echo "scripts/miri.sh: toolchain '$tc' has no Miri (only nightly ships it):" \
    "rustup component add --toolchain nightly miri rust-src" >&2
  exit 2
fi
export PROPTEST_CASES=${PROPTEST_CASES:-4}
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-env-forward=PROPTEST_CASES -Zmiri-isolation-error=warn-nobacktrace"
if [ $# -gt 0 ]; then
  exec cargo +"$tc" miri test "$@"
fi
# Every nbd-proto test file but tests/examples_real_server.rs, which starts
# qemu-nbd and nbdkit.
args=(--lib)
for f in nbd-proto/tests/*.rs; do
  t=$(basename "$f" .rs)
  [ "$t" = examples_real_server ] || args+=(--test "$t")
done
cargo +"$tc" miri test -p nbd-proto "${args[@]}"
# Miri's strerror_r shim appends " (os error N)" to the text, so the one test
# that compares a whole message with libc's wording is skipped.
cargo +"$tc" miri test -p nbd-ffi --lib -- \
  --skip errors::tests::message_has_function_name_and_strerror
