#!/usr/bin/env python3
"""Records seeds for the `abi` fuzz target (fuzz/seeds/abi/).

For each real server (nbdkit memory, qemu-nbd on a qcow2 image,
nbd-server), a recording proxy sits between the server and a client that
runs the fuzz target's call sequence through libnbd 1.24's nbdsh (its Python
binding has the 1.16+ calls; from ${LIBNBD_LATEST:-/tmp/libnbd-latest}, see
scripts/install-deps.sh) on our library (target/release/libnbd.so.0, so the
requests are byte for byte those of the target); what the server sent is saved as one seed, one frame per burst
received: [u32 LE client bytes forwarded before it][u16 LE length][bytes].

  make lib && python3 fuzz/record_abi_seeds.py
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBDIR = os.path.join(ROOT, "target", "release")
SEEDS = os.path.join(ROOT, "fuzz", "seeds", "abi")

# The same calls, arguments and order as fuzz_targets/abi.rs.
CLIENT = r"""
import os, nbd
h = nbd.NBD()
h.set_opt_mode(True)
h.set_export_name("disk")
h.add_meta_context("base:allocation")
h.connect_unix(os.environ["PROXY"])
def tryit(name, f, *a):
    try:
        f(*a)
        print(name, "ok")
    except nbd.Error as e:
        print(name, "failed:", e.string)
tryit("opt_info", h.opt_info)
tryit("opt_list", h.opt_list, lambda n, d: 0)
tryit("opt_go", h.opt_go)
tryit("get_size", h.get_size)
tryit("pread", h.pread, 4096, 0)
tryit("pwrite", h.pwrite, b"\x5a" * 4096, 4096)
tryit("flush", h.flush)
tryit("trim", h.trim, 4096, 8192)
tryit("zero", h.zero, 4096, 12288)
tryit("cache", h.cache, 4096, 0)
tryit("pread_structured", h.pread_structured, 4096, 0, lambda *a: 0)
tryit("block_status", h.block_status, 65536, 0, lambda *a: 0)
tryit("block_status_64", h.block_status_64, 65536, 0, lambda *a: 0)
tryit("block_status_filter", h.block_status_filter, 65536, 0,
      ["base:allocation"], lambda *a: 0)
del h
"""


def wait_socket(path, proc):
    for _ in range(1500):
        if proc is not None and proc.poll() is not None:
            sys.exit(f"server exited: {proc.args}")
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.01)
    sys.exit(f"no server on {path}")


def record(name, upstream, tmp):
    proxy = os.path.join(tmp, f"proxy-{name}.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(proxy)
    lsock.listen(1)
    recorded = bytearray()
    sent = [0]  # client bytes forwarded so far

    def pump(src, dst, keep):
        while True:
            try:
                b = src.recv(65536)
            except OSError:
                b = b""
            if not b:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if keep:
                # One frame per burst: [u32 need][u16 len][data].
                for i in range(0, len(b), 65535):
                    part = b[i:i + 65535]
                    recorded.extend(struct.pack("<IH", sent[0], len(part)))
                    recorded.extend(part)
            else:
                sent[0] += len(b)
            try:
                dst.sendall(b)
            except OSError:
                return

    def serve():
        c, _ = lsock.accept()
        u = socket.socket(socket.AF_UNIX)
        u.connect(upstream)
        t1 = threading.Thread(target=pump, args=(c, u, False))
        t2 = threading.Thread(target=pump, args=(u, c, True))
        t1.start(); t2.start(); t1.join(); t2.join()
        c.close(); u.close()

    lsock.settimeout(30)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    latest = os.environ.get("LIBNBD_LATEST", "/tmp/libnbd-latest")
    env = dict(os.environ, PROXY=proxy)
    out = subprocess.run([os.path.join(latest, "run"), "--lib", LIBDIR,
                          "nbdsh", "-c", CLIENT], env=env,
                         capture_output=True, text=True, timeout=60)
    t.join(timeout=30)
    print(f"== {name}: {len(recorded)} bytes from the server")
    print(out.stdout + out.stderr, end="")
    if out.returncode != 0 or not recorded:
        sys.exit(f"recording {name} failed")
    with open(os.path.join(SEEDS, name), "wb") as f:
        f.write(recorded)


def main():
    os.makedirs(SEEDS, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        try:
            sock = os.path.join(tmp, "nbdkit.sock")
            p = subprocess.Popen(["nbdkit", "--foreground", "--exit-with-parent",
                                  "-U", sock, "memory", "1M"])
            procs.append(p)
            wait_socket(sock, p)
            record("nbdkit", sock, tmp)

            img = os.path.join(tmp, "disk.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "1M"], check=True)
            subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 8k", img],
                           check=True, capture_output=True)
            sock = os.path.join(tmp, "qemu.sock")
            p = subprocess.Popen(["qemu-nbd", "-f", "qcow2", "--persistent", "-x", "disk",
                                  "-k", sock, img])
            procs.append(p)
            wait_socket(sock, p)
            record("qemu-nbd", sock, tmp)

            raw = os.path.join(tmp, "disk.img")
            with open(raw, "wb") as f:
                f.truncate(1 << 20)
            sock = os.path.join(tmp, "nbd-server.sock")
            conf = os.path.join(tmp, "nbd-server.conf")
            pidf = os.path.join(tmp, "nbd-server.pid")
            with open(conf, "w") as f:
                f.write(f"[generic]\nunixsock = {sock}\nallowlist = true\n"
                        f"[disk]\nexportname = {raw}\nfilesize = {1 << 20}\n"
                        "flush = true\nfua = true\ntrim = true\n")
            subprocess.run(["nbd-server", "-C", conf, "-p", pidf], check=True)
            wait_socket(sock, None)
            try:
                record("nbd-server", sock, tmp)
            finally:
                with open(pidf) as f:
                    os.kill(int(f.read().strip()), 15)
        finally:
            for p in procs:
                p.terminate()
                p.wait()


if __name__ == "__main__":
    main()
