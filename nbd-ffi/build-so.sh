#!/bin/sh
# Links the nbd-ffi static library into libnbd.so.0.
#
#   nbd-ffi/build-so.sh [PROFILE [ARCHIVE]]
#
# PROFILE is release (default) or debug.
# Reads  ARCHIVE, by default $TARGET/$PROFILE/libnbd_ffi.a (built by
#        `cargo build -p nbd-ffi`; the tests pass the copy `cargo test` built)
# Writes $TARGET/$PROFILE/libnbd.so.0 and the symlink libnbd.so -> libnbd.so.0
# where $TARGET is $CARGO_TARGET_DIR, or target/ at the workspace root.
#
# rustc's cdylib output carries its own version script, which cannot be
# combined with ours; so the library is linked here from the staticlib, with
# libnbd's version nodes (libnbd.syms) and everything else kept local.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
profile=${1:-release}
target=${CARGO_TARGET_DIR:-$root/target}
case $target in /*) ;; *) target=$root/$target ;; esac
dir=$target/$profile
archive=${2:-$dir/libnbd_ffi.a}
cc=${CC:-cc}

if [ ! -f "$archive" ]; then
    echo "build-so.sh: $archive is missing; run: cargo build -p nbd-ffi$( [ "$profile" = release ] && echo ' --release')" >&2
    exit 1
fi

# Link to a private name, then rename, so concurrent runs never expose a
# half-written library.
tmp=$dir/.libnbd.so.0.$$
trap 'rm -f "$tmp"' EXIT
# The system libraries are those `rustc --print native-static-libs` lists,
# plus OpenSSL (libssl, libcrypto) for TLS.
"$cc" -shared -o "$tmp" \
    -Wl,-soname,libnbd.so.0 \
    -Wl,--version-script="$here/libnbd.syms" \
    -Wl,--no-undefined \
    -Wl,--gc-sections \
    -Wl,--whole-archive "$archive" -Wl,--no-whole-archive \
    -lssl -lcrypto -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
mv -f "$tmp" "$dir/libnbd.so.0"
ln -sfn libnbd.so.0 "$dir/libnbd.so"
