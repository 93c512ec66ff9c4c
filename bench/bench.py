#!/usr/bin/env python3
"""Side-by-side benchmark of Debian's libnbd 1.14, libnbd 1.24.4 and ours (nbd-rs).

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

Environment: REPS=N (repetitions, default 5), FULL=1 (the long workloads),
SMOKE=1 (tiny sizes: checks that everything runs, measures nothing),
ONLY=1,4 (a subset of the workloads), LIBS=debian,ours (a subset of
debian, libnbd124, ours), PIN=1 (clients on CPU 0, servers on the other
CPUs), RESULTS=path (default bench/results.md).
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
LIB_NAMES = {"debian": "Debian libnbd 1.14", "libnbd124": "libnbd 1.24.4", "ours": "ours"}

FULL = os.environ.get("FULL", "") == "1"
SMOKE = os.environ.get("SMOKE", "") == "1"
REPS = int(os.environ.get("REPS", "5"))
PIN = os.environ.get("PIN", "") == "1" and (os.cpu_count() or 1) >= 2
ONLY = {int(x) for x in os.environ.get("ONLY", "").split(",") if x.strip()}
RESULTS = os.environ.get("RESULTS", os.path.join(ROOT, "bench", "results.md"))

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

LIBS = tuple(x.strip() for x in os.environ.get("LIBS", "debian,libnbd124,ours").split(",")
             if x.strip())
for _lib in LIBS:
    if _lib not in LIB_FILES:
        sys.exit(f"bench: unknown library {_lib!r} in LIBS (debian, libnbd124, ours)")
LIB_DIRS = {lib: os.path.join(BIN, "lib", lib) for lib in LIB_FILES}


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
    """cmd run by LATEST's loader with lib's libnbd.so.0 first."""
    libpath = ":".join([LIB_DIRS[lib]] + SYSLIBS)
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


class Metric:
    """One row: per-library lists of (value, extra) and a target."""

    def __init__(self, workload, name, target, fmt, extra_fmt=None):
        self.workload, self.name, self.target = workload, name, target
        self.fmt, self.extra_fmt = fmt, extra_fmt
        self.vals = {lib: [] for lib in LIBS}
        self.extra = {lib: [] for lib in LIBS}

    def add(self, lib, value, extra=None):
        self.vals[lib].append(value)
        self.extra[lib].append(extra)

    def median(self, lib):
        return statistics.median(self.vals[lib]) if self.vals[lib] else None

    def cell(self, lib):
        m = self.median(lib)
        if m is None:
            return "—"
        s = self.fmt(m)
        ex = [x for x in self.extra[lib] if x is not None]
        if self.extra_fmt and ex:
            s += " (" + self.extra_fmt(statistics.median(ex)) + ")"
        return s

    def ratio(self, ref):
        d, o = self.median(ref), self.median("ours")
        if d in (None, 0) or o is None:
            return None
        return o / d

    def target_text(self):
        if self.target is None:
            return "—"
        kind, x = self.target
        return f"{'≥' if kind == 'higher' else '≤'} {x:g}×"

    def met(self, ref):
        r = self.ratio(ref)
        if self.target is None or r is None:
            return "—"
        kind, x = self.target
        ok = r >= x if kind == "higher" else r <= x
        return "met" if ok else "**not met**"

    def wins(self, ref):
        """In how many repetitions ours beat ref's run of the same rep."""
        n = min(len(self.vals[ref]), len(self.vals["ours"]))
        if n == 0 or self.target is None:
            return "—"
        better = 0
        for d, o in zip(self.vals[ref], self.vals["ours"]):
            if (o > d) if self.target[0] == "higher" else (o < d):
                better += 1
        return f"{better}/{n}"


METRICS = []
_BY_KEY = {}


def metric(workload, name, target, fmt, extra_fmt=None):
    key = (workload, name)
    if key not in _BY_KEY:
        m = Metric(workload, name, target, fmt, extra_fmt)
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


def sig(x):
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


HIGHER = ("higher", 1.0)
FASTER = ("lower", 1.0)
CPU_SMALL = ("lower", 0.5)   # client CPU per request at 4 KiB
CPU_LARGE = ("lower", 0.8)   # client CPU per request at 256 KiB (and 64 KiB, 1 MiB)
MEMORY = ("lower", 1.0)


def results_lines(prog_out):
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


def w1(lib, srv, tmp):
    size = P["w1_size"]
    label = f"1. nbdcopy pattern {human(size)} → null: (4 conn × 64 × 256 KiB)"
    r = run(["nbdcopy", "--no-extents", srv["pattern1"].uri, "null:"], lib, tmp)
    reqs = size / (256 * KIB)
    metric(label, "wall time, s", FASTER, f3).add(lib, r.wall)
    metric(label, "throughput, MiB/s", HIGHER, f0).add(lib, size / MIB / r.wall)
    metric(label, "client CPU, µs/request (total s)", CPU_LARGE, f2,
           f3).add(lib, r.cpu / reqs * 1e6, r.cpu)


def w2(lib, srv, tmp):
    size = P["w2_size"]
    label = f"2. nbdcopy pattern {human(size)} → null: (4 KiB, -C 1 -R 64)"
    r = run(["nbdcopy", "--no-extents", "--request-size=4096", "-C", "1", "-R", "64",
             srv["pattern2"].uri, "null:"], lib, tmp)
    reqs = size / 4096
    metric(label, "wall time, s", FASTER, f3).add(lib, r.wall)
    metric(label, "IOPS (MiB/s)", HIGHER, f0, f1).add(lib, reqs / r.wall,
                                                      size / MIB / r.wall)
    metric(label, "client CPU, µs/request (total s)", CPU_SMALL, f2,
           f3).add(lib, r.cpu / reqs * 1e6, r.cpu)


def w3(lib, srv, tmp):
    rt = P["w3_runtime"]
    label = f"3. fio nbd randrw 4k iodepth=32, {rt}s, nbdkit memory 1G"
    r = run(["fio", "--name=randrw", "--ioengine=nbd", f"--uri={srv['memory'].uri}",
             "--rw=randrw", "--bs=4k", "--iodepth=32", f"--runtime={rt}", "--time_based",
             "--size=1G", "--thread", "--output-format=json"], lib, tmp)
    j = json.loads(r.out[r.out.index("{"):])
    job = j["jobs"][0]
    ios = job["read"]["total_ios"] + job["write"]["total_ios"]
    iops = job["read"]["iops"] + job["write"]["iops"]
    nbytes = job["read"]["io_bytes"] + job["write"]["io_bytes"]
    secs = max(job["read"]["runtime"], job["write"]["runtime"]) / 1000
    metric(label, "IOPS (MiB/s)", HIGHER, f0, f1).add(lib, iops, nbytes / MIB / secs)
    metric(label, "client CPU, µs/op (total s)", CPU_SMALL, f2, f3).add(
        lib, r.cpu / ios * 1e6, r.cpu)


AIO_TESTS = [f"aio-{rw}-{k}k-qd{qd}" for k in (4, 64, 1024) for qd in (1, 16, 64)
             for rw in ("read", "write")] + ["sync-pread-4k-qd1"]


def w4(lib, srv, tmp, server, test):
    secs = P["w4_seconds"]
    sname = "nbdkit memory 1G" if server == "memory" else "qemu-nbd raw 1G"
    r = run([os.path.join(BIN, "aio-bench"), srv[server].uri, str(secs), test], lib, tmp)
    check_library(r.out, lib)
    for res in results_lines(r.out):
        name = res["name"]
        ops, nbytes = int(res["ops"]), int(res["bytes"])
        t, cpu = float(res["secs"]), float(res["cpu"])
        if name.startswith("sync"):
            label = f"4. {sname}: sync nbd_pread 4k QD1"
            metric(label, "latency, µs/op", FASTER, f1).add(lib, t / ops * 1e6)
            metric(label, "client CPU, µs/op", CPU_SMALL, f2).add(lib, cpu / ops * 1e6)
            continue
        _, rw, size, qd = name.split("-")
        label = f"4. {sname}: aio {rw} {size.upper()} {qd.upper()}"
        metric(label, "ops/s (MiB/s)", HIGHER, f0, f1).add(
            lib, ops / t, nbytes / MIB / t)
        metric(label, "client CPU, µs/op", CPU_SMALL if size == "4k" else CPU_LARGE,
               f2).add(lib, cpu / ops * 1e6)


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
    metric(label, "time per whole-image scan, ms", FASTER, f3).add(lib, t / scans * 1e3)
    metric(label, "client CPU per scan, µs", None, f1).add(lib, cpu / scans * 1e6)


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
    metric(label, "RSS growth, KiB per handle", MEMORY, f2).add(lib, growth / n)
    metric(label, "heap allocated (mallinfo2), bytes per handle", None, f0).add(lib, heap / n)
    metric(label, "process RSS after one connect+close, KiB", None, f0).add(
        lib, int(res["rss_before_kib"]))
    metric(label, "connect time, µs per handle", None, f0).add(
        lib, float(res["secs"]) / n * 1e6)
    metric(label, "client CPU, µs per connect", None, f0).add(
        lib, float(res["cpu"]) / n * 1e6)


# ----- setup -------------------------------------------------------------


def w7(lib, srv, tmp):
    size = P["w7_size"]
    label = f"7. nbdcopy over TLS (PSK) pattern {human(size)} → null: (4 conn × 64 × 256 KiB)"
    keys = os.path.join(tmp, "keys.psk")
    uri = f"nbds+unix://bench@/?socket={srv['tls'].sock}&tls-psk-file={keys}"
    r = run(["nbdcopy", "--no-extents", uri, "null:"], lib, tmp)
    reqs = size / (256 * KIB)
    metric(label, "wall time, s", FASTER, f3).add(lib, r.wall)
    metric(label, "throughput, MiB/s", HIGHER, f0).add(lib, size / MIB / r.wall)
    metric(label, "client CPU, µs/request (total s)", CPU_LARGE, f2,
           f3).add(lib, r.cpu / reqs * 1e6, r.cpu)


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
        f"{first_line(['fio', '--version'])}; {first_line(['nbdcopy', '--version'])}",
    ]


def command_line():
    parts = []
    for k in ("REPS", "FULL", "SMOKE", "ONLY", "LIBS", "PIN"):
        if k in os.environ:
            parts.append(f"{k}={os.environ[k]}")
    return " ".join(parts + ["bench/run.sh"])


def table():
    cols = [LIB_NAMES[lib] + " (median)" for lib in LIBS]
    refs = [r for r in ("debian", "libnbd124") if r in LIBS and "ours" in LIBS]
    head = ["workload", "metric"] + cols
    for r in refs:
        head.append(f"ours / {LIB_NAMES[r].replace('Debian ', '')}")
    head += ["target"]
    for r in refs:
        short = LIB_NAMES[r].replace("Debian ", "")
        head += [f"met? (vs {short})", f"ours better in (vs {short})"]
    align = ["---", "---"] + ["---:"] * (len(cols) + len(refs)) + ["---"] + ["---"] * (2 * len(refs))
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for m in METRICS:
        cells = [m.workload, m.name] + [m.cell(lib) for lib in LIBS]
        for r in refs:
            x = m.ratio(r)
            cells.append("—" if x is None else f"{x:.2f}×")
        cells.append(m.target_text())
        for r in refs:
            cells += [m.met(r), m.wins(r)]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


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

    tmp = tempfile.mkdtemp(prefix="nbd-bench-", dir="/dev/shm" if os.access(
        "/dev/shm", os.W_OK) else None)
    servers = {}
    started = time.time()

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
        if want(1):
            serve("pattern1", nbdkit + ["pattern", str(P["w1_size"])])
        if want(2):
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

        # (number, name, setup, cases): each case runs once per library per
        # repetition, the libraries back to back.
        workloads = [
            (1, "nbdcopy 256 KiB", None, [w1]),
            (2, "nbdcopy 4 KiB", None, [w2]),
            (3, "fio randrw 4k", None, [w3]),
        ]
        for server in ("memory", "qemu"):
            workloads.append((4, f"aio-bench on {server}", lambda s=server: fill(s),
                              [lambda lib, sv, t, s=server, x=x: w4(lib, sv, t, s, x)
                               for x in AIO_TESTS]))
        workloads += [
            (5, "block status", None, [w5]),
            (6, "idle handles", None, [w6, lambda lib, sv, t: w6(lib, sv, t, tls=True)]),
            (7, "nbdcopy over TLS", None, [w7]),
        ]
        for n, name, setup, cases in workloads:
            if not want(n):
                continue
            if setup:
                setup()
            for rep in range(REPS):
                log(f"bench: workload {n} ({name}), repetition {rep + 1}/{REPS}")
                for i, case in enumerate(cases):
                    # Rotate which library goes first.
                    k = (rep + i) % len(LIBS)
                    order = LIBS[k:] + LIBS[:k]
                    for lib in order:
                        case(lib, servers, tmp)
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.time() - started
    mode = ("smoke" if SMOKE else "full" if FULL else "quick") + (", pinned" if PIN else "")
    out = [
        "# nbd-rs vs libnbd 1.14 (Debian) and 1.24.4: benchmark results",
        "",
        f"Command: `{command_line()}` ({mode} mode, {REPS} repetitions, "
        f"{elapsed:.0f} s, {time.strftime('%Y-%m-%d %H:%M %Z')})",
        "",
        *machine(),
        "",
        "Each row is the median over the repetitions; the same binaries run on every "
        "library (through the same loader and glibc, only libnbd.so.0 switched), back "
        "to back for every test of every repetition, the one going first rotating. "
        "Client CPU is the client process's own user+sys time (never the server's). "
        "\"ours better in\" counts the repetitions in which ours beat the other library's "
        "run of the same repetition. Targets: throughput ≥ 1.0× libnbd on every workload (wall time "
        "and latency ≤ 1.0×); client CPU per request ≤ 0.5× at 4 KiB, ≤ 0.8× at 256 KiB "
        "(applied here to 64 KiB and 1 MiB too); memory per idle handle ≤ 1.0×.",
        "",
        *table(),
        "",
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
