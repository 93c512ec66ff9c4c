#!/usr/bin/env python3
"""System calls, context switches and client CPU per request: Debian's
libnbd 1.14, libnbd 1.24.4, ours and the limit program (run by
bench/syscalls.sh after it has built target/bench/).

Every client runs as in bench/run.sh: through libnbd 1.24's loader with
only libnbd.so.0 switched (bench.py's under_loader), the limit program
through the same loader.

Counts come from the kernel's syscall tracepoints through `perf stat`
(cheap enough not to change the batching much), or from `strace -f -c`
when perf cannot trace (strace slows the client, so more replies arrive
per wake-up and the counts flatter whichever library batches; no context
switches or CPU then).

Cases:
 - workload 2 (nbdcopy 1.14 --request-size=4096 -C 1 -R 64 from nbdkit
   pattern 256M) three ways: unpinned ("free"), client on CPU 0 and
   server on CPU 1 ("split"), client and server both on CPU 0 ("same").
   How many replies wait for the client at each wake-up depends on this,
   and so does the CPU per request (BENCHMARKS.md, "4 KiB client CPU");
 - aio-bench 4 KiB reads at QD1 and QD64, writes at QD64, 1 MiB reads at
   QD16, 1 s each on nbdkit memory, unpinned.

SYSCALLS_LIBS=debian,ours,... picks the columns (default: all four).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the loader and library switching)

SIZE = 256 * 1024 * 1024
CALLS = ["recvfrom", "recvmsg", "read", "readv", "sendto", "sendmsg", "write", "writev",
         "poll", "ppoll"]
COLS = [c.strip() for c in os.environ.get(
    "SYSCALLS_LIBS", "debian,libnbd124,ours,limit").split(",") if c.strip()]


def perf_works():
    if not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"],
                       capture_output=True, text=True)
    return r.returncode == 0 and "not supported" not in r.stderr and "<not" not in r.stderr


def pin(cmd, cpus):
    return (["taskset", "-c", cpus] + cmd) if cpus else cmd


def count_perf(cmd, lib, tmp, cpus):
    out = os.path.join(tmp, "perf.txt")
    ev = ["-e", "raw_syscalls:sys_enter,task-clock,context-switches"]
    ev += ["-e", ",".join(f"syscalls:sys_enter_{c}" for c in CALLS)]
    ev += ["-e", "syscalls:sys_exit_recvfrom", "--filter", "ret == -11"]
    r = subprocess.run(pin(["perf", "stat", "-x,", "-o", out] + ev + bench.under_loader(cmd, lib),
                           cpus), env=bench.lib_env(lib), capture_output=True, text=True,
                       check=True)
    counts = {}
    for line in open(out):
        f = line.strip().split(",")
        if len(f) <= 3 or not re.match(r"^[\d.]+$", f[0]):
            continue
        name = f[2].split(":")[-1]
        if name == "sys_enter":
            counts["all"] = float(f[0])
        elif name == "sys_exit_recvfrom":
            counts["recvfrom EAGAIN"] = float(f[0])
        elif name == "task-clock":
            counts["cpu ms"] = float(f[0])
        else:
            counts[name.replace("sys_enter_", "")] = float(f[0])
    return counts, r.stdout


def count_strace(cmd, lib, tmp, cpus):
    out = os.path.join(tmp, "strace.txt")
    r = subprocess.run(pin(["strace", "-f", "-c", "-o", out] + bench.under_loader(cmd, lib),
                           cpus), env=bench.lib_env(lib), capture_output=True, text=True,
                       check=True)
    counts = {"all": 0}
    for line in open(out):
        f = line.split()
        if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
            counts[f[-1]] = int(f[3])
            counts["all"] += int(f[3])
            if f[-1] == "recvfrom" and len(f) == 6:
                counts["recvfrom EAGAIN"] = int(f[4])
    return counts, r.stdout


class Server:
    def __init__(self, tmp, name, plugin, cpus):
        self.sock = os.path.join(tmp, name + ".sock")
        self.proc = subprocess.Popen(pin(["nbdkit", "-f", "--exit-with-parent", "-U", self.sock]
                                         + plugin, cpus), stdin=subprocess.DEVNULL)
        for _ in range(400):
            if os.path.exists(self.sock):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        self.uri = f"nbd+unix:///?socket={self.sock}"

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait()


def main():
    use_perf = perf_works()
    if not use_perf and not shutil.which("strace"):
        sys.exit("syscalls: neither perf (with syscall tracepoints) nor strace works")
    count = count_perf if use_perf else count_strace
    for c in COLS:
        if c not in bench.LIB_FILES and c != "limit":
            sys.exit(f"syscalls: unknown column {c}")
    bench.LIBS = tuple(c for c in COLS if c != "limit")
    bench.prepare_libs()
    two = (os.cpu_count() or 1) >= 2
    tmp = tempfile.mkdtemp(prefix="nbd-syscalls-")
    servers = []
    try:
        print(f"System calls per request ({'perf stat tracepoints' if use_perf else 'strace -c'};"
              " the client process only; load average at the start "
              f"{bench.loadavg()})\n")
        print("| case | client | all | recv* (EAGAIN) | send* | poll | context switches "
              "| client CPU, µs | requests |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        placements = [("free", None, None)]
        if two:
            placements += [("split", "1", "0"), ("same", "0", "0")]
        cases = []
        for where, scpu, ccpu in placements:
            cases.append((f"workload 2: nbdcopy 4 KiB -C 1 -R 64, 256M, {where}",
                          ("pattern", str(SIZE)), scpu, ccpu,
                          lambda uri: ["nbdcopy", "--no-extents", "--request-size=4096", "-C",
                                       "1", "-R", "64", uri, "null:"],
                          lambda uri: [bench.LIMIT_PROG, uri, "copy", "1", "64", "4096"],
                          SIZE // 4096))
        for t in ("aio-read-4k-qd1", "aio-read-4k-qd64", "aio-write-4k-qd64",
                  "aio-read-1024k-qd16"):
            cases.append((f"aio-bench {t}, 1 s, free", ("memory", "1G"), None, None,
                          lambda uri, t=t: [os.path.join(bench.BIN, "aio-bench"), uri, "1", t],
                          lambda uri, t=t: [bench.LIMIT_PROG, uri, "1", t], None))
        for i, (label, plugin, scpu, ccpu, cmd, limit_cmd, reqs) in enumerate(cases):
            srv = Server(tmp, f"{plugin[0]}{i}", list(plugin), scpu)
            servers.append(srv)
            if plugin[0] == "memory":
                # nbdkit memory starts empty: aio-bench writes its region once.
                subprocess.run(bench.under_loader([os.path.join(bench.BIN, "aio-bench"),
                                                   srv.uri, "0", "fill"], bench.LIBS[0]),
                               env=bench.lib_env(bench.LIBS[0]), check=True,
                               stdout=subprocess.DEVNULL)
            for col in COLS:
                argv = limit_cmd(srv.uri) if col == "limit" else cmd(srv.uri)
                c, stdout = count(argv, col, tmp, ccpu)
                n = reqs
                if n is None:
                    n = int(re.search(r"ops=(\d+)", stdout).group(1))

                def per(k):
                    return c.get(k, 0) / n

                send = per("sendto") + per("sendmsg") + per("write") + per("writev")
                polls = per("poll") + per("ppoll")
                recv = per("recvfrom") + per("recvmsg") + per("read") + per("readv")
                cs = f"{per('context-switches'):.2f}" if "context-switches" in c else "—"
                cpu = f"{c['cpu ms'] * 1e3 / n:.2f}" if "cpu ms" in c else "—"
                print(f"| {label} | {bench.LIB_NAMES[col]} | {per('all'):.2f} "
                      f"| {recv:.2f} ({per('recvfrom EAGAIN'):.2f}) | {send:.2f} | {polls:.2f} "
                      f"| {cs} | {cpu} | {n:,} |", flush=True)
            srv.stop()
        print(f"\nLoad average at the end: {bench.loadavg()}. Client CPU is perf's task-clock "
              "of the whole client process (aio-bench's includes connecting and filling its "
              "buffers); \"read\" counts every read(2), the loader's included.")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
