#!/bin/bash
# Benchmarks Debian's libnbd 1.14, libnbd 1.24.4 and ours, side by side, on the
# same binaries, and against bench/limit.c (no library: only the socket work).
#
#   bench/run.sh                 quick run (5 repetitions, small sizes; ~9 min)
#   REPS=9 bench/run.sh          more repetitions
#   FULL=1 bench/run.sh          the long workloads (4G / 1G copies, 10 s fio,
#                                2 s per aio test; ~40 min): the run for
#                                BENCHMARKS.md, on a quiet machine
#   SMOKE=1 REPS=1 bench/run.sh  tiny sizes: checks that everything runs (~20 s)
#   ONLY=2,4 bench/run.sh        a subset of the workloads (1-9)
#   LIMIT=0 bench/run.sh         without the limit program
#   LIBS=debian,ours bench/run.sh  a subset of the libraries (debian, libnbd124, ours)
#   PIN=1 bench/run.sh           clients on CPU 0, servers on the other CPUs
#
# It builds target/release/libnbd.so.0 (make lib; NO_BUILD=1 skips it) and the
# C programs in bench/ (into target/bench/, linked with -lnbd and no rpath;
# limit.c, the physical-limit yardstick, with no libnbd at all),
# starts nbdkit and qemu-nbd on Unix sockets in a temporary directory, runs
# every workload alternately on each library, stops the servers, and prints a
# Markdown table that it also writes to bench/results.md.  libnbd 1.24.4 comes
# from ${LIBNBD_LATEST:-/tmp/libnbd-latest} (scripts/install-deps.sh extracts
# it there with ../shared/tools/libnbd-latest.sh); it needs a newer glibc than
# the host's, so every client run, on every library, goes through that root's
# dynamic loader with only libnbd.so.0 switched (ld.so --library-path), and
# all three share one glibc.  See bench/bench.py.
#
# Needs: libnbd-bin (nbdcopy), libnbd0 (Debian's library), nbdkit, fio,
# qemu-utils, python3, cc, and the libnbd 1.24 root.  Not part of `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

for tool in nbdcopy nbdkit fio qemu-nbd qemu-img qemu-io python3 cc; do
    command -v "$tool" >/dev/null || {
        echo "bench: $tool is missing (apt-get install -y libnbd-bin nbdkit fio qemu-utils)" >&2
        exit 1
    }
done
LIBNBD_LATEST=${LIBNBD_LATEST:-/tmp/libnbd-latest}
export LIBNBD_LATEST
[ -x "$LIBNBD_LATEST/run" ] || {
    echo "bench: libnbd 1.24 is not extracted under $LIBNBD_LATEST:" \
         "run scripts/install-deps.sh (or ../shared/tools/libnbd-latest.sh $LIBNBD_LATEST)" >&2
    exit 1
}
[ -e /usr/lib/x86_64-linux-gnu/libnbd.so.0 ] || {
    echo "bench: Debian's libnbd.so.0 is missing (apt-get install -y libnbd0)" >&2
    exit 1
}

# Workload 6 opens 1000 connections in one process (and nbdkit serves them).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 4096 ]; then
    ulimit -n 4096
else
    ulimit -n "$hard"
fi

if [ "${NO_BUILD:-}" != 1 ]; then
    make -s lib >&2
fi
[ -e target/release/libnbd.so.0 ] || { echo "bench: run 'make lib' first" >&2; exit 1; }

mkdir -p target/bench
for prog in aio-bench block-status handles; do
    cc -std=c99 -Wall -Wextra -Werror -O2 -Iinclude -o "target/bench/$prog" \
       "bench/$prog.c" -Ltarget/release -lnbd
done
cc -std=c99 -Wall -Wextra -Werror -O2 -pthread -o target/bench/limit bench/limit.c

exec python3 "$ROOT/bench/bench.py"
