#!/usr/bin/env python3
"""System calls per request, Debian's libnbd against ours (run by
bench/syscalls.sh after bench/run.sh has built target/bench/).

Counts come from the kernel's syscall tracepoints through `perf stat`
(cheap enough not to change the batching much), or from `strace -f -c`
when perf cannot trace (strace slows the client, so more replies arrive
per wake-up and the counts flatter whichever library batches).

Cases: workload 2 (nbdcopy --request-size=4096 -C 1 -R 64, nbdkit
pattern), and aio-bench 4 KiB reads at QD1 and QD64 and writes at QD64 on
nbdkit memory.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS_DIR = os.path.join(ROOT, "target", "release")
AIO = os.path.join(ROOT, "target", "bench", "aio-bench")
SIZE = 256 * 1024 * 1024
CALLS = ["recvfrom", "recvmsg", "read", "sendto", "sendmsg", "write", "poll", "ppoll"]


def env(lib):
    e = dict(os.environ)
    e.pop("LD_LIBRARY_PATH", None)
    if lib == "ours":
        e["LD_LIBRARY_PATH"] = OURS_DIR
    return e


def perf_works():
    if not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"],
                       capture_output=True, text=True)
    return r.returncode == 0 and "not supported" not in r.stderr and "<not" not in r.stderr


def count_perf(cmd, lib, tmp):
    out = os.path.join(tmp, "perf.txt")
    ev = ["-e", "raw_syscalls:sys_enter"]
    ev += ["-e", ",".join(f"syscalls:sys_enter_{c}" for c in CALLS)]
    ev += ["-e", "syscalls:sys_exit_recvfrom", "--filter", "ret == -11"]
    r = subprocess.run(["perf", "stat", "-x,", "-o", out] + ev + cmd, env=env(lib),
                       capture_output=True, text=True, check=True)
    counts = {}
    for line in open(out):
        f = line.strip().split(",")
        if len(f) > 3 and f[0].isdigit():
            name = f[2].split(":")[1]
            if name == "sys_enter":
                counts["all"] = int(f[0])
            elif name == "sys_exit_recvfrom":
                counts["recvfrom EAGAIN"] = int(f[0])
            else:
                counts[name.replace("sys_enter_", "")] = int(f[0])
    return counts, r.stdout


def count_strace(cmd, lib, tmp):
    out = os.path.join(tmp, "strace.txt")
    r = subprocess.run(["strace", "-f", "-c", "-o", out] + cmd, env=env(lib),
                       capture_output=True, text=True, check=True)
    counts = {"all": 0}
    for line in open(out):
        f = line.split()
        if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[-1] != "total":
            counts[f[-1]] = int(f[3])
            counts["all"] += int(f[3])
            if f[-1] == "recvfrom" and len(f) == 6:
                counts["recvfrom EAGAIN"] = int(f[4])
    return counts, r.stdout


def main():
    use_perf = perf_works()
    if not use_perf and not shutil.which("strace"):
        sys.exit("syscalls: neither perf (with syscall tracepoints) nor strace works")
    count = count_perf if use_perf else count_strace
    tmp = tempfile.mkdtemp(prefix="nbd-syscalls-")
    procs = []
    try:
        socks = {}
        for name, plugin in (("pattern", ["pattern", str(SIZE)]), ("memory", ["memory", "1G"])):
            sock = os.path.join(tmp, name + ".sock")
            procs.append(subprocess.Popen(["nbdkit", "-f", "--exit-with-parent", "-U", sock]
                                          + plugin, stdin=subprocess.DEVNULL))
            socks[name] = f"nbd+unix:///?socket={sock}"
        for _ in range(200):
            if all(os.path.exists(os.path.join(tmp, n + ".sock")) for n in socks):
                break
            time.sleep(0.05)
        cases = [("workload 2: nbdcopy 4 KiB -C 1 -R 64, 256M",
                  ["nbdcopy", "--no-extents", "--request-size=4096", "-C", "1", "-R", "64",
                   socks["pattern"], "null:"], SIZE // 4096)]
        for t in ("aio-read-4k-qd1", "aio-read-4k-qd64", "aio-write-4k-qd64"):
            cases.append((f"aio-bench {t}, 1 s", [AIO, socks["memory"], "1", t], None))
        print(f"System calls per request ({'perf stat tracepoints' if use_perf else 'strace -c'};"
              " the client process only)\n")
        print("| case | library | all | recvfrom (EAGAIN) | send* | poll | requests |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, cmd, reqs in cases:
            for lib in ("debian", "ours"):
                c, stdout = count(cmd, lib, tmp)
                n = reqs
                if n is None:
                    n = int(re.search(r"ops=(\d+)", stdout).group(1))

                def per(k):
                    return c.get(k, 0) / n

                send = per("sendto") + per("sendmsg") + per("write")
                polls = per("poll") + per("ppoll")
                recv = per("recvfrom") + per("recvmsg")
                print(f"| {label} | {'Debian' if lib == 'debian' else 'ours'} | {per('all'):.2f} "
                      f"| {recv:.2f} ({per('recvfrom EAGAIN'):.2f}) | {send:.2f} | {polls:.2f} "
                      f"| {n:,} |")
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
