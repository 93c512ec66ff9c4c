# Faults injected by nbdkit filters, seen through the Python bindings on the
# library under test.  Run under nbdsh with NBD_URI=<server> and
# NBD_FAULT_MODE one of:
#   all    error filter at 100% (EIO): every data command fails; synchronous
#          calls raise nbd.Error with EIO, asynchronous completions see EIO,
#          and the connection stays usable (flush is not filtered).
#   some   error filter at 10% (EIO): each command either fails with EIO or
#          succeeds with exactly the right data; prints how many failed, for
#          the test to compare with the failures nbdkit's log filter saw.
#   enospc error filter on writes only (ENOSPC): writes fail with ENOSPC,
#          reads still work.
#   delay  delay filter on reads: reads, many in flight, return the right data.
import errno
import os
import random

import nbd

EIO = errno.EIO
h = nbd.NBD()
print("PACKAGE", h.get_package_name(), h.get_version())
h.add_meta_context("base:allocation")
h.connect_uri(os.environ["NBD_URI"])
mode = os.environ["NBD_FAULT_MODE"]
size = h.get_size()
failures = 0


def failed_with(what, e, want):
    global failures
    assert e.errnum == want, (what, e.errnum, e.string)
    failures += 1


def must_fail(what, want, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        failed_with(what, e, want)
        return
    raise AssertionError(what + " succeeded although the server failed it")


def wait_all():
    while h.aio_in_flight() > 0:
        h.poll(-1)


def aio_reads(jobs):
    """Reads (offset, length) jobs at once; returns [(offset, buf, err)]."""
    results = []
    for off, n in jobs:
        buf = nbd.Buffer(n)
        seen = []

        def done(err, seen=seen):
            seen.append(err.value)
            return 0

        cookie = h.aio_pread(buf, off, done)
        results.append((off, buf, seen, cookie))
    wait_all()
    out = []
    for off, buf, seen, cookie in results:
        assert len(seen) == 1, ("one completion per command", seen)
        try:
            assert h.aio_command_completed(cookie)
            assert seen[0] == 0, seen
        except nbd.Error as e:
            assert seen[0] == e.errnum, (seen, e.errnum)
            failed_with("aio_pread", e, EIO)
        out.append((off, buf.to_bytearray(), seen[0]))
    return out


content = random.Random(1).randbytes(size) if mode in ("some", "delay") else None


def write_all_retrying():
    """Writes the content, retrying blocks whose write failed with EIO."""
    block = 256 * 1024
    for off in range(0, size, block):
        while True:
            try:
                h.pwrite(content[off:off + block], off)
                break
            except nbd.Error as e:
                failed_with("pwrite", e, EIO)


if mode == "all":
    must_fail("pread", EIO, h.pread, 4096, 0)
    must_fail("pwrite", EIO, h.pwrite, b"x" * 4096, 0)
    must_fail("zero", EIO, h.zero, 4096, 0)
    must_fail("trim", EIO, h.trim, 4096, 0)
    must_fail("cache", EIO, h.cache, 4096, 0)
    must_fail("block_status", EIO, h.block_status, 4096, 0,
              lambda ctx, off, entries, err: 0)
    must_fail("pread_structured", EIO, h.pread_structured, 4096, 0,
              lambda buf, off, status, err: 0)
    results = aio_reads([(i * 4096, 4096) for i in range(16)])
    assert all(err == EIO for _, _, err in results), results
    # Writes and block status through aio too.
    seen = []
    bufs = [nbd.Buffer.from_bytearray(bytearray(b"y" * 4096)) for _ in range(4)]
    cookies = [h.aio_pwrite(b, i * 4096, lambda err: seen.append(err.value) or 0)
               for i, b in enumerate(bufs)]
    cookies.append(h.aio_block_status(
        65536, 0, lambda ctx, off, entries, err: 0,
        lambda err: seen.append(err.value) or 0))
    wait_all()
    assert seen == [EIO] * 5, seen
    for c in cookies:
        must_fail("aio_command_completed", EIO, h.aio_command_completed, c)
    # The connection survived every failure.
    assert h.aio_is_ready(), h.connection_state()
    h.flush()
    print("all: %d failures reported" % failures)

elif mode == "some":
    write_all_retrying()
    rng = random.Random(2)
    reads = 0
    for _ in range(300):
        off = rng.randrange(0, size - 8192)
        n = rng.randrange(1, 8192)
        reads += 1
        try:
            got = h.pread(n, off)
        except nbd.Error as e:
            failed_with("pread", e, EIO)
            continue
        assert got == content[off:off + n], "wrong data reported as read"
    for _ in range(8):
        jobs = [(rng.randrange(0, size - 4096), 4096) for _ in range(32)]
        for off, data, err in aio_reads(jobs):
            reads += 1
            if err == 0:
                assert data == content[off:off + 4096], "wrong aio data"
    assert 0 < failures < reads, (failures, reads)
    print("some: %d reads, failures=%d" % (reads, failures))

elif mode == "enospc":
    must_fail("pwrite", errno.ENOSPC, h.pwrite, b"z" * 4096, 0)
    assert h.pread(4096, 0) == bytes(4096)
    assert h.aio_is_ready(), h.connection_state()
    print("enospc: ok")

elif mode == "delay":
    write_all_retrying()
    for off in (0, 12345, size - 4096):
        assert h.pread(4096, off) == content[off:off + 4096]
    rng = random.Random(3)
    jobs = [(rng.randrange(0, size - 65536), rng.randrange(1, 65536))
            for _ in range(64)]
    for off, data, err in aio_reads(jobs):
        assert err == 0, err
        assert data == content[off:off + len(data)], "wrong delayed data"
    chunks = []
    got = h.pread_structured(65536, 4096,
                             lambda buf, off, status, err:
                             chunks.append((off, len(buf), status)) or 0)
    assert got == content[4096:4096 + 65536]
    assert chunks and all(s in (nbd.READ_DATA, nbd.READ_HOLE)
                          for _, _, s in chunks), chunks
    assert failures == 0
    print("delay: %d aio reads verified" % len(jobs))

else:
    raise AssertionError("unknown NBD_FAULT_MODE " + mode)

h.shutdown()
print("faults.py: OK")
