#!/usr/bin/env python3
"""Side-by-side benchmark of Debian's libnbd 1.14, libnbd 1.24.4 and ours (nbd-rs),
and of all three against a physical-limit program (bench/limit.c).

Run it through bench/run.sh, which builds the library and the C programs
first.  Every measurement runs the *same* binary once per library: Debian's
/usr/lib/x86_64-linux-gnu/libnbd.so.0 (1.14), libnbd 1.24.4's from the
extracted libnbd 1.24 (LIBNBD_LATEST, default /tmp/libnbd-latest, made by
scripts/install-deps.sh) and ours (target/release/libnbd.so.0).  libnbd
1.24.4 is built for a newer C library than the host's, so every run, on
every library, goes through that root's dynamic loader
(ld-linux-x86-64.so.2 --library-path DIR:ROOT's libraries BINARY ...),
where DIR holds only the chosen libnbd.so.0: the binaries, the loader, glibc
and every other library are the same for all three, only libnbd.so.0
differs.  The libraries alternate within each repetition (which one goes
first rotates from one repetition and one test to the next) so all see the
same machine conditions, and medians are reported.  The aio-bench tests
alternate one test at a time.

Client CPU is the benchmarked client process's own user + system time:
os.wait4() on its PID for nbdcopy and fio (threads included; fio runs with
--thread), getrusage(RUSAGE_SELF) deltas inside the C programs.  The
servers are separate processes whose CPU is never counted.

The "limit" column is bench/limit.c: a client with no library that does
only the socket work of the same workload (fixed newstyle handshake with
NBD_OPT_GO, then simple-reply requests of the same sizes and queue depth,
one poll loop; nbdcopy-like whole-export reads for the copy workloads).
It runs in the same rotation as the libraries, through the same loader.
Workloads 8 and 9 run libnbd 1.24.4's own nbdcopy (its multi-threaded copy
loop differs from 1.14's); it needs libnbd 1.18+ symbols, so Debian's 1.14
cannot run it.

Environment: REPS=N (repetitions, default 5), FULL=1 (the long workloads),
SMOKE=1 (tiny sizes: checks that everything runs, measures nothing),
ONLY=1,4 (a subset of the workloads), LIBS=debian,ours (a subset of
debian, libnbd124, ours), LIMIT=0 (no limit program runs), PIN=1 (clients
on CPU 0, servers on the other CPUs), RESULTS=path (default
bench/results.md).
"""

import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS_DIR = os.path.join(ROOT, "target", "release")
BIN = os.path.join(ROOT, "target", "bench")
DEBIAN_LIB = "/usr/lib/x86_64-linux-gnu/libnbd.so.0"
LATEST = os.environ.get("LIBNBD_LATEST") or "/tmp/libnbd-latest"
SYSROOT = os.path.join(LATEST, "sysroot")
SYSLIBS = [os.path.join(SYSROOT, "usr/lib/x86_64-linux-gnu"),
           os.path.join(SYSROOT, "lib/x86_64-linux-gnu")]
LOADER = os.path.join(SYSLIBS[0], "ld-linux-x86-64.so.2")
# The libnbd.so.0 of each library; each gets a directory holding only it.
LIB_FILES = {
    "debian": DEBIAN_LIB,
    "libnbd124": os.path.join(SYSLIBS[0], "libnbd.so.0"),
    "ours": os.path.join(OURS_DIR, "libnbd.so.0"),
}
LIB_NAMES = {"debian": "Debian libnbd 1.14", "libnbd124": "libnbd 1.24.4", "ours": "ours",
             "limit": "limit program"}
SHORT = {"debian": "1.14", "libnbd124": "1.24", "ours": "ours", "limit": "limit"}
# libnbd 1.24.4's own nbdcopy (workloads 8 and 9).
NBDCOPY124 = os.path.join(SYSROOT, "usr", "bin", "nbdcopy")
LIMIT_PROG = os.path.join(BIN, "limit")

FULL = os.environ.get("FULL", "") == "1"
SMOKE = os.environ.get("SMOKE", "") == "1"
REPS = int(os.environ.get("REPS", "5"))
PIN = os.environ.get("PIN", "") == "1" and (os.cpu_count() or 1) >= 2
ONLY = {int(x) for x in os.environ.get("ONLY", "").split(",") if x.strip()}
RESULTS = os.environ.get("RESULTS", os.path.join(ROOT, "bench", "results.md"))
LIMIT = os.environ.get("LIMIT", "1") != "0"
# nbdcopy (1.14 and 1.24) uses min(4, --threads) connections, and --threads
# defaults to the number of CPUs: 2 connections on a 2-CPU machine.
COPY_CONNS = min(4, os.cpu_count() or 1)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

P = {
    # workload 1: nbdcopy defaults (4 connections x 64 requests x 256 KiB)
    "w1_size": 4 * GIB if FULL else 1 * GIB,
    # workload 2: nbdcopy --request-size=4096 -C 1 -R 64
    "w2_size": 1 * GIB if FULL else 256 * MIB,
    # workload 3: fio randrw 4k iodepth 32, time based
    "w3_runtime": 10 if FULL else 3,
    # workload 4: aio-bench seconds per test (19 tests per run)
    "w4_seconds": 2.0 if FULL else 0.3,
    # workload 5: whole-image block status scans per run
    "w5_scans": 500 if FULL else 100,
    "w5_extents_written": 2000,
    # workload 6: idle connected handles
    "w6_handles": 1000,
    "w6_tls_handles": 300,
    # workload 7: nbdcopy over TLS (PSK), defaults (4 x 64 x 256 KiB)
    "w7_size": 4 * GIB if FULL else 512 * MIB,
}
if SMOKE:
    P.update(w1_size=64 * MIB, w2_size=8 * MIB, w3_runtime=1, w4_seconds=0.02,
             w5_scans=2, w5_extents_written=50, w6_handles=20, w6_tls_handles=5,
             w7_size=32 * MIB)
# workloads 8 and 9: libnbd 1.24.4's nbdcopy, the sizes of 1 and 2
P["w8_size"], P["w9_size"] = P["w1_size"], P["w2_size"]

LIBS = tuple(x.strip() for x in os.environ.get("LIBS", "debian,libnbd124,ours").split(",")
             if x.strip())
for _lib in LIBS:
    if _lib not in LIB_FILES:
        sys.exit(f"bench: unknown library {_lib!r} in LIBS (debian, libnbd124, ours)")
LIB_DIRS = {lib: os.path.join(BIN, "lib", lib) for lib in LIB_FILES}
# The columns of the table: the libraries, then the limit program.
COLS = LIBS + (("limit",) if LIMIT else ())


def lib_env(lib):
    """The environment of every client run: no LD_LIBRARY_PATH or
    LD_PRELOAD (the loader's --library-path picks the library)."""
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    env.pop("LD_PRELOAD", None)
    return env


def which(prog):
    """A client program's path: the system's (/usr/bin first), as before."""
    if os.path.sep in prog:
        return prog
    path = shutil.which(prog, path="/usr/bin:/bin:" + os.environ.get("PATH", ""))
    if not path:
        raise RuntimeError(f"{prog} is not installed")
    return path


def under_loader(cmd, lib, *loader_opts):
    """cmd run by LATEST's loader with lib's libnbd.so.0 first (the limit
    program links no libnbd: the same loader and glibc only)."""
    libpath = ":".join(([LIB_DIRS[lib]] if lib in LIB_DIRS else []) + SYSLIBS)
    return [LOADER, *loader_opts, "--library-path", libpath, which(cmd[0])] + list(cmd[1:])


def prepare_libs():
    """One directory per library holding only its libnbd.so.0 (a symlink)."""
    if not os.access(LOADER, os.X_OK):
        sys.exit(f"bench: {LOADER} is missing: run scripts/install-deps.sh "
                 f"(or ../shared/tools/libnbd-latest.sh {LATEST})")
    for lib in LIBS:
        if not os.path.exists(LIB_FILES[lib]):
            sys.exit(f"bench: {LIB_FILES[lib]} is missing")
        d = LIB_DIRS[lib]
        os.makedirs(d, exist_ok=True)
        link = os.path.join(d, "libnbd.so.0")
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(os.path.realpath(LIB_FILES[lib]), link)


def loaded_libnbd(prog, lib):
    """The libnbd.so.0 that prog resolves under lib's run (ld.so --list)."""
    out = subprocess.run(under_loader([prog], lib, "--list"), env=lib_env(lib),
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"^\s*libnbd\.so\.0 => (\S+)", out, re.M)
    if not m:
        raise RuntimeError(f"{prog} does not link libnbd.so.0:\n{out}")
    return os.path.realpath(m.group(1))


def human(size):
    return f"{size // GIB}G" if size % GIB == 0 else f"{size // MIB}M"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----- processes ---------------------------------------------------------


class Run:
    def __init__(self, wall, cpu, out, err, rc):
        self.wall, self.cpu, self.out, self.err, self.rc = wall, cpu, out, err, rc


def run(cmd, lib, cwd):
    """Runs cmd under lib's environment; returns wall time and the client
    process's own user+sys CPU (wait4 on its PID)."""
    with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        t0 = time.perf_counter()
        cmd = under_loader(cmd, lib)
        if PIN:
            cmd = ["taskset", "-c", "0"] + cmd
        p = subprocess.Popen(cmd, env=lib_env(lib), cwd=cwd, stdout=o, stderr=e,
                             stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        o.seek(0)
        e.seek(0)
        r = Run(wall, ru.ru_utime + ru.ru_stime, o.read().decode(errors="replace"),
                e.read().decode(errors="replace"), p.returncode)
    if r.rc != 0:
        raise RuntimeError(f"{lib}: {' '.join(cmd)} failed ({r.rc}):\n{r.err}{r.out}")
    return r


class Server:
    """A server on a Unix socket, started and stopped (by PID) by us."""

    def __init__(self, name, cmd, sock, logdir):
        self.name, self.sock = name, sock
        self.log = open(os.path.join(logdir, name + ".log"), "wb")
        if PIN:
            cmd = ["taskset", "-c", f"1-{os.cpu_count() - 1}"] + cmd
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {name} exited: {' '.join(cmd)}")
            if os.path.exists(sock):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(sock)
                    break
                except OSError:
                    pass
                finally:
                    s.close()
            if time.time() > deadline:
                raise RuntimeError(f"server {name} did not start")
            time.sleep(0.05)

    @property
    def uri(self):
        return f"nbd+unix:///?socket={self.sock}"

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# ----- results -----------------------------------------------------------


# The targets of issue 13, each against libnbd 1.24.4 or the limit program.
TARGETS = {
    "T1": "throughput ≥ 1.0× libnbd 1.24.4 on every workload (times and latency ≤ 1.0×)",
    "T2": "throughput ≥ 1.1× libnbd 1.24.4 where requests are ≤ 64 KiB (times ≤ 1/1.1)",
    "T3": "client CPU per request ≤ 0.6× libnbd 1.24.4 at 4 KiB",
    "T4": "client CPU per request ≤ 1.1× the limit program at ≥ 256 KiB",
    "T5": "memory per idle handle ≤ 1.0× libnbd 1.24.4",
}


class Metric:
    """One row: per-column lists of (value, extra) and what it measures.

    kind: "throughput" (higher is better), "time" (lower is better, the
    inverse of a throughput), "cpu" (client CPU per request), "memory"
    (per idle handle) or None (shown, no target); size: request payload
    in bytes, None when there is none."""

    def __init__(self, workload, name, kind, size, fmt, extra_fmt=None):
        self.workload, self.name, self.kind, self.size = workload, name, kind, size
        self.fmt, self.extra_fmt = fmt, extra_fmt
        self.vals = {lib: [] for lib in COLS}
        self.extra = {lib: [] for lib in COLS}

    def add(self, lib, value, extra=None):
        self.vals[lib].append(value)
        self.extra[lib].append(extra)

    def median(self, lib):
        v = self.vals.get(lib)
        return statistics.median(v) if v else None

    def cell(self, lib):
        m = self.median(lib)
        if m is None:
            return "—"
        s = self.fmt(m)
        ex = [x for x in self.extra[lib] if x is not None]
        if self.extra_fmt and ex:
            s += " (" + self.extra_fmt(statistics.median(ex)) + ")"
        return s

    def ratio(self, ref, of="ours"):
        d, o = self.median(ref), self.median(of)
        if d in (None, 0) or o is None:
            return None
        return o / d

    def targets(self):
        """[(id, "higher"|"lower", x, ref)] of the targets this row is
        measured against; the last one is the strictest."""
        small = self.size is not None and self.size <= 64 * KIB
        if self.kind == "throughput":
            return [("T1", "higher", 1.0, "libnbd124")] + (
                [("T2", "higher", 1.1, "libnbd124")] if small else [])
        if self.kind == "time":
            return [("T1", "lower", 1.0, "libnbd124")] + (
                [("T2", "lower", 1 / 1.1, "libnbd124")] if small else [])
        if self.kind == "cpu" and self.size == 4 * KIB:
            return [("T3", "lower", 0.6, "libnbd124")]
        if self.kind == "cpu" and self.size is not None and self.size >= 256 * KIB \
                and self.vals.get("limit"):
            return [("T4", "lower", 1.1, "limit")]
        if self.kind == "memory":
            return [("T5", "lower", 1.0, "libnbd124")]
        return []

    @staticmethod
    def ok(kind, x, r):
        return r >= x - 1e-9 if kind == "higher" else r <= x + 1e-9

    def target_text(self):
        t = self.targets()
        if not t:
            return "—"
        _, kind, x, ref = t[-1]
        return f"{'≥' if kind == 'higher' else '≤'} {x:.2g}× {SHORT[ref]} ({t[-1][0]})"

    def met(self):
        t = self.targets()
        if not t:
            return "—"
        _, kind, x, ref = t[-1]
        r = self.ratio(ref)
        if r is None:
            return "—"
        return "met" if self.ok(kind, x, r) else "**not met**"

    def met_reps(self):
        """In how many repetitions ours met the strictest target against
        the reference's run of the same repetition."""
        t = self.targets()
        if not t:
            return "—"
        _, kind, x, ref = t[-1]
        pairs = [(d, o) for d, o in zip(self.vals.get(ref, []), self.vals.get("ours", []))
                 if d]
        if not pairs:
            return "—"
        return f"{sum(self.ok(kind, x, o / d) for d, o in pairs)}/{len(pairs)}"


METRICS = []
_BY_KEY = {}


def metric(workload, name, kind, size, fmt, extra_fmt=None):
    key = (workload, name)
    if key not in _BY_KEY:
        m = Metric(workload, name, kind, size, fmt, extra_fmt)
        _BY_KEY[key] = m
        METRICS.append(m)
    return _BY_KEY[key]


def f0(x):
    return f"{x:,.0f}"


def f1(x):
    return f"{x:,.1f}"


def f2(x):
    return f"{x:,.2f}"


def f3(x):
    return f"{x:.3f}"


def results_lines(prog_out):
    """The "result k=v ..." lines of aio-bench, limit and the others."""
    for line in prog_out.splitlines():
        if line.startswith("result "):
            yield dict(kv.split("=", 1) for kv in line.split()[1:])


# What each library calls itself ("NAME VERSION"), as nbdcopy --version
# printed it at the start; the C programs print the same after "library ".
LIB_IDS = {}


def check_library(out, lib):
    m = re.search(r"^library (.+)$", out, re.M)
    if not m or m.group(1).strip() != LIB_IDS[lib]:
        raise RuntimeError(f"{lib}: expected library {LIB_IDS[lib]!r}, got {m and m.group(1)!r}")


# ----- workloads ---------------------------------------------------------
#
# Each case is called once per column (library, or "limit" for the limit
# program) per repetition.


def nbdcopy_case(n, lib, srv, tmp, size, server, bs, args, nbdcopy="nbdcopy", tls=False):
    """nbdcopy (1.14's, or 1.24's when nbdcopy is NBDCOPY124) from server to
    null:; the limit program reads the same export the same way."""
    conns = 1 if "-C" in args else COPY_CONNS
    qd = 64
    who = "nbdcopy 1.24.4" if nbdcopy == NBDCOPY124 else "nbdcopy"
    shape = (f"{bs // KIB} KiB, -C 1 -R 64" if bs != 256 * KIB
             else f"defaults: {conns} conn × {qd} × 256 KiB")
    label = f"{n}. {who}{' over TLS (PSK)' if tls else ''} pattern {human(size)} → null: ({shape})"
    if lib == "limit":
        r = run([LIMIT_PROG, srv[server].uri, "copy", str(conns), str(qd), str(bs)], lib, tmp)
    else:
        uri = srv[server].uri
        if tls:
            keys = os.path.join(tmp, "keys.psk")
            uri = f"nbds+unix://bench@/?socket={srv[server].sock}&tls-psk-file={keys}"
        r = run([nbdcopy, "--no-extents"] + args + [uri, "null:"], lib, tmp)
    reqs = size / bs
    metric(label, "wall time, s", None, bs, f3).add(lib, r.wall)
    if bs == 256 * KIB:
        metric(label, "throughput, MiB/s", "throughput", bs, f0).add(lib, size / MIB / r.wall)
    else:
        metric(label, "IOPS (MiB/s)", "throughput", bs, f0, f1).add(
            lib, reqs / r.wall, size / MIB / r.wall)
    metric(label, "client CPU, µs/request (total s)", "cpu", bs, f2, f3).add(
        lib, r.cpu / reqs * 1e6, r.cpu)


def w1(lib, srv, tmp):
    nbdcopy_case(1, lib, srv, tmp, P["w1_size"], "pattern1", 256 * KIB, [])


def w2(lib, srv, tmp):
    nbdcopy_case(2, lib, srv, tmp, P["w2_size"], "pattern2", 4 * KIB,
                 ["--request-size=4096", "-C", "1", "-R", "64"])


def w8(lib, srv, tmp):
    nbdcopy_case(8, lib, srv, tmp, P["w8_size"], "pattern1", 256 * KIB, [], NBDCOPY124)


def w9(lib, srv, tmp):
    nbdcopy_case(9, lib, srv, tmp, P["w9_size"], "pattern2", 4 * KIB,
                 ["--request-size=4096", "-C", "1", "-R", "64"], NBDCOPY124)


def w3(lib, srv, tmp):
    rt = P["w3_runtime"]
    label = f"3. fio nbd randrw 4k iodepth=32, {rt}s, nbdkit memory 1G"
    if lib == "limit":
        r = run([LIMIT_PROG, srv["memory"].uri, str(rt), "randrw-4k-qd32"], lib, tmp)
        res = next(results_lines(r.out))
        ios, nbytes, secs = int(res["ops"]), int(res["bytes"]), float(res["secs"])
        iops = ios / secs
        cpu = r.cpu                      # the whole process, as for fio
    else:
        r = run(["fio", "--name=randrw", "--ioengine=nbd", f"--uri={srv['memory'].uri}",
                 "--rw=randrw", "--bs=4k", "--iodepth=32", f"--runtime={rt}", "--time_based",
                 "--size=1G", "--thread", "--output-format=json"], lib, tmp)
        j = json.loads(r.out[r.out.index("{"):])
        job = j["jobs"][0]
        ios = job["read"]["total_ios"] + job["write"]["total_ios"]
        iops = job["read"]["iops"] + job["write"]["iops"]
        nbytes = job["read"]["io_bytes"] + job["write"]["io_bytes"]
        secs = max(job["read"]["runtime"], job["write"]["runtime"]) / 1000
        cpu = r.cpu
    metric(label, "IOPS (MiB/s)", "throughput", 4 * KIB, f0, f1).add(
        lib, iops, nbytes / MIB / secs)
    metric(label, "client CPU, µs/op (total s)", "cpu", 4 * KIB, f2, f3).add(
        lib, cpu / ios * 1e6, cpu)


AIO_TESTS = [f"aio-{rw}-{k}k-qd{qd}" for k in (4, 64, 1024) for qd in (1, 16, 64)
             for rw in ("read", "write")] + ["sync-pread-4k-qd1"]


def w4(lib, srv, tmp, server, test):
    secs = P["w4_seconds"]
    sname = "nbdkit memory 1G" if server == "memory" else "qemu-nbd raw 1G"
    prog = LIMIT_PROG if lib == "limit" else os.path.join(BIN, "aio-bench")
    r = run([prog, srv[server].uri, str(secs), test], lib, tmp)
    if lib != "limit":
        check_library(r.out, lib)
    for res in results_lines(r.out):
        name = res["name"]
        ops, nbytes = int(res["ops"]), int(res["bytes"])
        t, cpu = float(res["secs"]), float(res["cpu"])
        if name.startswith("sync"):
            label = f"4. {sname}: sync nbd_pread 4k QD1"
            metric(label, "latency, µs/op", "time", 4 * KIB, f1).add(lib, t / ops * 1e6)
            metric(label, "client CPU, µs/op", "cpu", 4 * KIB, f2).add(lib, cpu / ops * 1e6)
            continue
        _, rw, size, qd = name.split("-")
        label = f"4. {sname}: aio {rw} {size.upper()} {qd.upper()}"
        bs = int(size[:-1]) * KIB
        metric(label, "ops/s (MiB/s)", "throughput", bs, f0, f1).add(
            lib, ops / t, nbytes / MIB / t)
        metric(label, "client CPU, µs/op", "cpu", bs, f2).add(lib, cpu / ops * 1e6)


def w5(lib, srv, tmp):
    scans = P["w5_scans"]
    r = run([os.path.join(BIN, "block-status"), srv["qcow2"].uri, str(scans)], lib, tmp)
    check_library(r.out, lib)
    res = next(results_lines(r.out))
    ext = int(res["extents"]) // scans
    reqs = int(res["ops"]) // scans
    label = (f"5. block status, qemu-nbd qcow2 64G sparse "
             f"({ext} extents, {reqs} requests per scan)")
    t, cpu = float(res["secs"]), float(res["cpu"])
    metric(label, "time per whole-image scan, ms", "time", None, f3).add(lib, t / scans * 1e3)
    metric(label, "client CPU per scan, µs", None, None, f1).add(lib, cpu / scans * 1e6)


def w6(lib, srv, tmp, tls=False):
    n = P["w6_handles"] if not tls else P["w6_tls_handles"]
    uri = srv["handles"].uri
    label = f"6. {n} idle connected handles, nbdkit memory"
    if tls:
        keys = os.path.join(tmp, "keys.psk")
        uri = f"nbds+unix://bench@/?socket={srv['tls-handles'].sock}&tls-psk-file={keys}"
        label = f"6. {n} idle connected handles over TLS (PSK), nbdkit memory"
    r = run([os.path.join(BIN, "handles"), uri, str(n)], lib, tmp)
    check_library(r.out, lib)
    res = next(results_lines(r.out))
    growth = int(res["rss_after_kib"]) - int(res["rss_before_kib"])
    heap = int(res["heap_after"]) - int(res["heap_before"])
    metric(label, "RSS growth, KiB per handle", "memory", None, f2).add(lib, growth / n)
    metric(label, "heap allocated (mallinfo2), bytes per handle", None, None, f0).add(
        lib, heap / n)
    metric(label, "process RSS after one connect+close, KiB", None, None, f0).add(
        lib, int(res["rss_before_kib"]))
    metric(label, "connect time, µs per handle", None, None, f0).add(
        lib, float(res["secs"]) / n * 1e6)
    metric(label, "client CPU, µs per connect", None, None, f0).add(
        lib, float(res["cpu"]) / n * 1e6)


def w7(lib, srv, tmp):
    nbdcopy_case(7, lib, srv, tmp, P["w7_size"], "tls", 256 * KIB, [], tls=True)


# ----- setup -------------------------------------------------------------


def make_qcow2(path):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "64G"], check=True)
    # Deterministic pseudo-random 64 KiB extents across the image.
    x = 12345
    offs = set()
    while len(offs) < P["w5_extents_written"]:
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        offs.add((x >> 20) % (64 * GIB // (64 * KIB)) * 64 * KIB)
    args = []
    for i, off in enumerate(sorted(offs)):
        args += ["-c", f"write -P {i % 250 + 1} {off} 64k"]
    subprocess.run(["qemu-io", "-f", "qcow2", path] + args, check=True,
                   stdout=subprocess.DEVNULL)


def first_line(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    commit = first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    debian = first_line(["dpkg-query", "-W", "-f", "${Version}", "libnbd0"])
    glibc = first_line([LOADER, "--version"])
    return [
        f"- CPU: {model}, nproc = {os.cpu_count()}, RAM {int(mem) // 1024} MiB",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Debian libnbd: {debian} ({DEBIAN_LIB}); ours: nbd-rs at {commit}"
        + (" (with uncommitted changes)" if dirty else "") + " (target/release/libnbd.so.0); "
        f"libnbd 1.24.4: {LIB_FILES['libnbd124']}",
        f"- every client run through {LOADER} ({glibc}): same glibc for all libraries",
        f"- {first_line(['nbdkit', '--version'])}; {first_line(['qemu-nbd', '--version'])}; "
        f"{first_line(['fio', '--version'])}; {first_line(['nbdcopy', '--version'])} "
        f"(workloads 1, 2, 7) and libnbd 1.24.4's {NBDCOPY124} (workloads 8, 9)",
    ]


def command_line():
    parts = []
    for k in ("REPS", "FULL", "SMOKE", "ONLY", "LIBS", "LIMIT", "PIN"):
        if k in os.environ:
            parts.append(f"{k}={os.environ[k]}")
    return " ".join(parts + ["bench/run.sh"])


def ratio_cell(x):
    return "—" if x is None else f"{x:.2f}×"


def table():
    head = ["workload", "metric"] + [LIB_NAMES[c] + " (median)" for c in COLS]
    pairs = []                  # (numerator, reference) of the ratio columns
    if "ours" in COLS:
        pairs += [("ours", r) for r in ("debian", "libnbd124", "limit") if r in COLS]
    if "libnbd124" in COLS and "limit" in COLS:
        pairs.append(("libnbd124", "limit"))
    head += [f"{SHORT[a]} / {SHORT[b]}" for a, b in pairs]
    head += ["target", "met?", "met in reps"]
    align = ["---", "---"] + ["---:"] * (len(COLS) + len(pairs)) + ["---"] * 3
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for m in METRICS:
        cells = [m.workload, m.name] + [m.cell(c) for c in COLS]
        cells += [ratio_cell(m.ratio(b, a)) for a, b in pairs]
        cells += [m.target_text(), m.met(), m.met_reps()]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def reach(m, tid):
    """For a throughput target against 1.24: how much better than 1.24 the
    limit program did in this row, and whether the target was within reach
    of any client at all."""
    if m.kind not in ("throughput", "time") or m.median("limit") is None:
        return ""
    head = m.ratio("libnbd124", "limit")
    if head is None:
        return ""
    if m.kind == "time":
        head = 1 / head
    x = next(t[2] for t in m.targets() if t[0] == tid)
    need = x if m.kind == "throughput" else 1 / x
    if head < 1.0:
        return f" (limit {head:.2f}× 1.24: slower than 1.24, an unsteady row)"
    if head < need:
        return f" (limit {head:.2f}× 1.24: out of reach for any client)"
    return f" (limit {head:.2f}× 1.24)"


def targets_summary():
    """One paragraph per target of issue 13: met, or the measured gap."""
    out = ["## Targets (issue 13)", ""]
    for tid, text in TARGETS.items():
        rows, bad, missing = [], [], []
        for m in METRICS:
            for t in m.targets():
                if t[0] != tid:
                    continue
                _, kind, x, ref = t
                r = m.ratio(ref)
                if r is None:
                    missing.append(m)
                    continue
                rows.append((m, r))
                if not Metric.ok(kind, x, r):
                    bad.append((m, r))
        if not rows:
            out.append(f"- **{tid}** {text}: not measured in this run"
                       + (" (a reference column is missing)" if missing else "") + ".")
            continue
        # margin: how far each row is past its target (≥ 1 met), so that
        # throughput (higher) and time (lower) rows compare.
        def margin(m, r):
            _, kind, x, _ = next(t for t in m.targets() if t[0] == tid)
            return r / x if kind == "higher" else (x / r if r else float("inf"))
        wm, wr = min(rows, key=lambda p: margin(*p))
        status = "**met**" if not bad else f"**not met** in {len(bad)} of {len(rows)} rows"
        ref = next(t[3] for m, _ in rows for t in m.targets() if t[0] == tid)
        line = f"- **{tid}** {text}: {status} (ratios ours / {SHORT[ref]}"
        line += (f"; {len(rows)} rows, the tightest: {wm.workload} — {wm.name}: {wr:.2f}×)"
                 if not bad else ")")
        if bad:
            bad.sort(key=lambda p: margin(*p))
            line += ". Gaps, worst first: " + "; ".join(
                f"{m.workload} — {m.name}: {r:.2f}×{reach(m, tid)}" for m, r in bad[:10])
            if len(bad) > 10:
                line += f"; and {len(bad) - 10} more"
        out.append(line + ".")
    out.append("")
    return out


def machine_cpu():
    """(All CPUs' busy seconds since boot, this process's and its reaped
    children's CPU seconds): their differences over a run say how much
    CPU time processes outside the run took (steal time counts as busy)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]     # not idle, not iowait
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system + t.children_user + \
        t.children_system


def loadavg():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main():
    prepare_libs()
    clients = ["nbdcopy", "fio"] + [os.path.join(BIN, p)
                                    for p in ("aio-bench", "block-status", "handles")]
    for lib in LIBS:
        want = os.path.realpath(LIB_FILES[lib])
        for prog in clients:
            got = loaded_libnbd(prog, lib)
            if got != want:
                sys.exit(f"bench: under {lib}'s run {prog} loads {got}, not {want}")
        v = subprocess.run(under_loader(["nbdcopy", "--version"], lib), env=lib_env(lib),
                           capture_output=True, text=True, check=True).stdout.splitlines()[1]
        LIB_IDS[lib] = v.strip()
        log(f"bench: {lib}: {want}, nbdcopy reports {v}")
        if lib != "debian" and (not ONLY or ONLY & {8, 9}):
            # libnbd 1.24's nbdcopy: the same check, and it must report the
            # same library (1.24 adds nbd_get_version_extra in brackets).
            got = loaded_libnbd(NBDCOPY124, lib)
            if got != want:
                sys.exit(f"bench: under {lib}'s run {NBDCOPY124} loads {got}, not {want}")
            v = subprocess.run(under_loader([NBDCOPY124, "--version"], lib), env=lib_env(lib),
                               capture_output=True, text=True,
                               check=True).stdout.splitlines()[1].strip()
            if not v.startswith(LIB_IDS[lib]):
                sys.exit(f"bench: {NBDCOPY124} on {lib} reports {v!r}, not {LIB_IDS[lib]!r}")
    if LIMIT:
        out = subprocess.run(under_loader([LIMIT_PROG], "limit", "--list"),
                             capture_output=True, text=True, check=True).stdout
        if "libnbd.so" in out:
            sys.exit(f"bench: {LIMIT_PROG} links libnbd:\n{out}")

    tmp = tempfile.mkdtemp(prefix="nbd-bench-", dir="/dev/shm" if os.access(
        "/dev/shm", os.W_OK) else None)
    servers = {}
    started = time.time()
    load_start = loadavg()
    load_seen = [os.getloadavg()[0]]
    cpu_start = machine_cpu()
    if load_seen[0] > 1.0 and not SMOKE:
        log(f"bench: WARNING: load average {load_start}: the machine is not quiet, so the "
            "numbers will be skewed (see BENCHMARKS.md)")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        def want(n):
            return not ONLY or n in ONLY

        def serve(name, cmd):
            sock = os.path.join(tmp, name + ".sock")
            servers[name] = Server(name, [c.replace("@SOCK@", sock) for c in cmd], sock, tmp)

        nbdkit = ["nbdkit", "-f", "--exit-with-parent", "-U", "@SOCK@"]
        if want(1) or want(8):
            serve("pattern1", nbdkit + ["pattern", str(P["w1_size"])])
        if want(2) or want(9):
            serve("pattern2", nbdkit + ["pattern", str(P["w2_size"])])
        if want(3) or want(4):
            serve("memory", nbdkit + ["memory", "1G"])
        if want(4):
            raw = os.path.join(tmp, "disk.raw")
            with open(raw, "wb") as f:
                f.truncate(GIB)
            serve("qemu", ["qemu-nbd", "-t", "-f", "raw", "-k", "@SOCK@", raw])
        if want(5):
            img = os.path.join(tmp, "sparse.qcow2")
            log("bench: writing the sparse 64G qcow2 image")
            make_qcow2(img)
            serve("qcow2", ["qemu-nbd", "-t", "-r", "-f", "qcow2", "-k", "@SOCK@", img])
        if want(6):
            # One worker thread per connection: 1000 connections, not 16000 threads.
            serve("handles", ["nbdkit", "-f", "--exit-with-parent", "-t", "1", "-U", "@SOCK@",
                              "memory", "1G"])

        if want(6) or want(7):
            keys = os.path.join(tmp, "keys.psk")
            with open(keys, "w") as f:
                f.write("bench:" + os.urandom(32).hex() + "\n")
            tls = ["--tls=require", "--tls-psk=" + keys]
        if want(6):
            serve("tls-handles", ["nbdkit", "-f", "--exit-with-parent", "-t", "1", "-U", "@SOCK@"]
                  + tls + ["memory", "1G"])
        if want(7):
            serve("tls", nbdkit + tls + ["pattern", str(P["w7_size"])])

        def fill(server):
            run([os.path.join(BIN, "aio-bench"), servers[server].uri, "0", "fill"],
                LIBS[0], tmp)

        # (number, name, setup, cases, columns): each case runs once per
        # column per repetition, back to back.  The limit program runs in
        # the rotation where it has a counterpart (not for block status,
        # idle handles and TLS).
        lim = ("limit",) if LIMIT else ()
        no124 = tuple(c for c in LIBS if c != "debian")
        workloads = [
            (1, "nbdcopy 256 KiB", None, [w1], LIBS + lim),
            (2, "nbdcopy 4 KiB", None, [w2], LIBS + lim),
            (8, "libnbd 1.24.4's nbdcopy 256 KiB", None, [w8], no124 + lim),
            (9, "libnbd 1.24.4's nbdcopy 4 KiB", None, [w9], no124 + lim),
            (3, "fio randrw 4k", None, [w3], LIBS + lim),
        ]
        for server in ("memory", "qemu"):
            workloads.append((4, f"aio-bench on {server}", lambda s=server: fill(s),
                              [lambda lib, sv, t, s=server, x=x: w4(lib, sv, t, s, x)
                               for x in AIO_TESTS], LIBS + lim))
        workloads += [
            (5, "block status", None, [w5], LIBS),
            (6, "idle handles", None, [w6, lambda lib, sv, t: w6(lib, sv, t, tls=True)], LIBS),
            (7, "nbdcopy over TLS", None, [w7], LIBS),
        ]
        for n, name, setup, cases, cols in workloads:
            if not want(n) or not cols:
                continue
            if setup:
                setup()
            for rep in range(REPS):
                log(f"bench: workload {n} ({name}), repetition {rep + 1}/{REPS}, "
                    f"load average {loadavg()}")
                load_seen.append(os.getloadavg()[0])
                for i, case in enumerate(cases):
                    # Rotate which column goes first.
                    k = (rep + i) % len(cols)
                    for col in cols[k:] + cols[:k]:
                        case(col, servers, tmp)
        load_seen.append(os.getloadavg()[0])
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.time() - started
    cpu_end = machine_cpu()
    others = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1]))
    others_share = others / (elapsed * (os.cpu_count() or 1))
    mode = ("smoke" if SMOKE else "full" if FULL else "quick") + (", pinned" if PIN else "")
    out = [
        "# nbd-rs vs libnbd 1.14 (Debian) and 1.24.4: benchmark results",
        "",
        f"Command: `{command_line()}` ({mode} mode, {REPS} repetitions, "
        f"{elapsed:.0f} s, {time.strftime('%Y-%m-%d %H:%M %Z')})",
        "",
        *machine(),
        "",
        *(["**SMOKE run: tiny sizes, one repetition; these numbers measure nothing.**", ""]
          if SMOKE else []),
        *([f"**The machine was busy: other processes took {others_share:.0%} of its CPU "
           f"time during this run; the ratios are indications, not measurements.**", ""]
          if others_share > 0.05 and not SMOKE else []),
        f"Load average (1, 5, 15 min) at the start: {load_start}; at the end: {loadavg()}; "
        f"1-min load seen between tests (this run's own clients and servers included): "
        f"{min(load_seen):.2f}–{max(load_seen):.2f}. Processes outside this run took "
        f"{others_share:.1%} of the machine's CPU time while it ran (/proc/stat busy time "
        "minus this run's own processes). The client and the server share the machine's "
        "CPUs, so any other load skews the numbers: a run is a measurement only if it "
        "started at a load average well under 1 and others took no more than a few percent.",
        "",
        "Each row is the median over the repetitions; the same binaries run on every "
        "library (through the same loader and glibc, only libnbd.so.0 switched), back "
        "to back for every test of every repetition, the one going first rotating; the "
        "limit program (bench/limit.c: no library, only the socket work of the same "
        "workload) runs in the same rotation. Client CPU is the client process's own "
        "user+sys time (never the server's). Ratios are of medians; \"met in reps\" "
        "counts the repetitions in which ours met the row's strictest target against "
        "the reference's run of the same repetition.",
        "",
        *table(),
        "",
        *targets_summary(),
    ]
    text = "\n".join(out)
    print(text)
    with open(RESULTS, "w") as f:
        f.write(text)
    log(f"bench: wrote {RESULTS}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("bench: interrupted")
