#!/usr/bin/env python3
"""Side-by-side benchmark of Debian's libnbd and ours (nbd-rs).

Run it through bench/run.sh, which builds the library and the C programs
first.  Every measurement runs the *same* binary twice, once with
LD_LIBRARY_PATH unset (Debian's /usr/lib/x86_64-linux-gnu/libnbd.so.0) and
once with LD_LIBRARY_PATH=target/release (ours); the two alternate within
each repetition (which one goes first alternates from one repetition and
one test to the next) so both see the same machine conditions, and medians
are reported.  The aio-bench tests alternate one test at a time.

Client CPU is the benchmarked client process's own user + system time:
os.wait4() on its PID for nbdcopy and fio (threads included; fio runs with
--thread), getrusage(RUSAGE_SELF) deltas inside the C programs.  The
servers are separate processes whose CPU is never counted.

Environment: REPS=N (repetitions, default 5), FULL=1 (the long workloads),
ONLY=1,4 (a subset of the workloads), PIN=1 (clients on CPU 0, servers on
the other CPUs), RESULTS=path (default bench/results.md).
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

FULL = os.environ.get("FULL", "") == "1"
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

LIBS = ("debian", "ours")


def lib_env(lib):
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    env.pop("LD_PRELOAD", None)
    if lib == "ours":
        env["LD_LIBRARY_PATH"] = OURS_DIR
    return env


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

    def ratio(self):
        d, o = self.median("debian"), self.median("ours")
        if d in (None, 0) or o is None:
            return None
        return o / d

    def target_text(self):
        if self.target is None:
            return "—"
        kind, x = self.target
        return f"{'≥' if kind == 'higher' else '≤'} {x:g}×"

    def met(self):
        r = self.ratio()
        if self.target is None or r is None:
            return "—"
        kind, x = self.target
        ok = r >= x if kind == "higher" else r <= x
        return "met" if ok else "**not met**"

    def wins(self):
        """In how many repetitions ours beat Debian's run of the same rep."""
        n = min(len(self.vals["debian"]), len(self.vals["ours"]))
        if n == 0 or self.target is None:
            return "—"
        better = 0
        for d, o in zip(self.vals["debian"], self.vals["ours"]):
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


def check_library(out, lib):
    m = re.search(r"^library (\S+)", out, re.M)
    want = "nbd-rs" if lib == "ours" else "libnbd"
    if not m or m.group(1) != want:
        raise RuntimeError(f"{lib}: expected library {want}, got {m and m.group(1)}")


# ----- workloads ---------------------------------------------------------


def w1(lib, srv, tmp):
    size = P["w1_size"]
    label = f"1. nbdcopy pattern {size // GIB}G → null: (4 conn × 64 × 256 KiB)"
    r = run(["nbdcopy", "--no-extents", srv["pattern1"].uri, "null:"], lib, tmp)
    reqs = size / (256 * KIB)
    metric(label, "wall time, s", FASTER, f3).add(lib, r.wall)
    metric(label, "throughput, MiB/s", HIGHER, f0).add(lib, size / MIB / r.wall)
    metric(label, "client CPU, µs/request (total s)", CPU_LARGE, f2,
           f3).add(lib, r.cpu / reqs * 1e6, r.cpu)


def w2(lib, srv, tmp):
    size = P["w2_size"]
    label = f"2. nbdcopy pattern {size // MIB}M → null: (4 KiB, -C 1 -R 64)"
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
    label = f"7. nbdcopy over TLS (PSK) pattern {size // MIB}M → null: (4 conn × 64 × 256 KiB)"
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
    return [
        f"- CPU: {model}, nproc = {os.cpu_count()}, RAM {int(mem) // 1024} MiB",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Debian libnbd: {debian} ({DEBIAN_LIB}); ours: nbd-rs at {commit}"
        + (" (with uncommitted changes)" if dirty else "") + " (target/release/libnbd.so.0)",
        f"- {first_line(['nbdkit', '--version'])}; {first_line(['qemu-nbd', '--version'])}; "
        f"{first_line(['fio', '--version'])}; {first_line(['nbdcopy', '--version'])}",
    ]


def command_line():
    parts = []
    for k in ("REPS", "FULL", "ONLY", "PIN"):
        if k in os.environ:
            parts.append(f"{k}={os.environ[k]}")
    return " ".join(parts + ["bench/run.sh"])


def table():
    rows = ["| workload | metric | Debian libnbd (median) | ours (median) | ratio ours/Debian "
            "| target | met? | ours better in |",
            "|---|---|---:|---:|---:|---|---|---|"]
    for m in METRICS:
        r = m.ratio()
        rows.append(f"| {m.workload} | {m.name} | {m.cell('debian')} | {m.cell('ours')} | "
                    f"{'—' if r is None else f'{r:.2f}×'} | {m.target_text()} | {m.met()} "
                    f"| {m.wins()} |")
    return rows


def main():
    for lib in LIBS:
        v = subprocess.run(["nbdcopy", "--version"], env=lib_env(lib), capture_output=True,
                           text=True, check=True).stdout.splitlines()[1]
        want = "nbd-rs" if lib == "ours" else "libnbd"
        if not v.startswith(want + " "):
            sys.exit(f"bench: with {lib}'s environment nbdcopy loads {v!r}, not {want}")
        log(f"bench: {lib}: nbdcopy runs on {v}")

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
                "debian", tmp)

        # (number, name, setup, cases): each case runs once per library per
        # repetition, the two libraries back to back.
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
                    # Alternate which library goes first.
                    order = LIBS if (rep + i) % 2 == 0 else tuple(reversed(LIBS))
                    for lib in order:
                        case(lib, servers, tmp)
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.time() - started
    mode = ("full" if FULL else "quick") + (", pinned" if PIN else "")
    out = [
        "# nbd-rs vs Debian libnbd: benchmark results",
        "",
        f"Command: `{command_line()}` ({mode} mode, {REPS} repetitions, "
        f"{elapsed:.0f} s, {time.strftime('%Y-%m-%d %H:%M %Z')})",
        "",
        *machine(),
        "",
        "Each row is the median over the repetitions; the same binaries run on both "
        "libraries (LD_LIBRARY_PATH switched), back to back for every test of every "
        "repetition, the one going first alternating. "
        "Client CPU is the client process's own user+sys time (never the server's). "
        "\"ours better in\" counts the repetitions in which ours beat Debian's run of the "
        "same repetition. Targets: throughput ≥ 1.0× libnbd on every workload (wall time "
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
