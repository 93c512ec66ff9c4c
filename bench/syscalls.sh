#!/bin/bash
# System calls per request, Debian's libnbd against ours: workload 2
# (nbdcopy 4 KiB, -C 1 -R 64) and aio-bench 4 KiB at QD1/QD64 on nbdkit.
#
#   bench/syscalls.sh
#
# Uses perf stat on the syscall tracepoints (falls back to strace -c).
# Builds like bench/run.sh (NO_BUILD=1 skips make lib).  See bench/syscalls.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${NO_BUILD:-}" = 1 ] || make -s lib >&2
mkdir -p target/bench
cc -std=c99 -Wall -Wextra -Werror -O2 -Iinclude -o target/bench/aio-bench \
   bench/aio-bench.c -Ltarget/release -lnbd
exec python3 bench/syscalls.py
