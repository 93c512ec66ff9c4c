#!/bin/bash
# System calls, context switches and client CPU per request: Debian's
# libnbd 1.14, libnbd 1.24.4, ours and the limit program, every client
# through libnbd 1.24's loader as in bench/run.sh.  Workload 2 (nbdcopy
# 4 KiB, -C 1 -R 64) unpinned, with client and server on different CPUs
# and on the same CPU; aio-bench 4 KiB at QD1/QD64 and 1 MiB at QD16 on
# nbdkit memory.
#
#   bench/syscalls.sh
#   SYSCALLS_LIBS=libnbd124,ours bench/syscalls.sh   some columns only
#
# Uses perf stat on the syscall tracepoints (falls back to strace -c).
# Builds like bench/run.sh (NO_BUILD=1 skips make lib).  See bench/syscalls.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${NO_BUILD:-}" = 1 ] || make -s lib >&2
mkdir -p target/bench
cc -std=c99 -Wall -Wextra -Werror -O2 -Iinclude -o target/bench/aio-bench \
   bench/aio-bench.c -Ltarget/release -lnbd
cc -std=c99 -Wall -Wextra -Werror -O2 -pthread -o target/bench/limit bench/limit.c
exec python3 bench/syscalls.py
