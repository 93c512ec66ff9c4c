# Exercises a writable export through the Python bindings: synchronous
# and asynchronous reads and writes, zero/trim/flush/cache, structured
# reads and block status.  Run under nbdsh:
#   NBD_URI=nbd+unix:///?socket=... nbdsh -c 'exec(open("readwrite.py").read())'
# Prints "PACKAGE name version" first and "readwrite.py: OK" at the end;
# any failed check raises.
import os
import nbd

uri = os.environ["NBD_URI"]
BLOCK = 64 * 1024


def block_data(i, gen):
    # 64 KiB of bytes unique to the block number and generation.
    head = ("block %d gen %d;" % (i, gen)).encode()
    return (head * (BLOCK // len(head) + 1))[:BLOCK]


g = nbd.NBD()
print("PACKAGE", g.get_package_name(), g.get_version())
g.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
g.connect_uri(uri)
size = g.get_size()
print("size", size)
assert size >= 64 * BLOCK, "export too small"
assert not g.is_read_only(), "export is read-only"
nblocks = min(size // BLOCK, 64)

# Synchronous writes and reads.
for i in range(0, nblocks, 4):
    g.pwrite(block_data(i, 1), i * BLOCK)
for i in range(0, nblocks, 4):
    got = g.pread(BLOCK, i * BLOCK)
    assert got == block_data(i, 1), "sync read of block %d differs" % i
if g.can_flush():
    g.flush()
if g.can_fua():
    g.pwrite(block_data(1, 1), BLOCK, nbd.CMD_FLAG_FUA)
    assert g.pread(BLOCK, BLOCK) == block_data(1, 1)
print("sync: ok")

# Asynchronous writes of every block, all in flight, then reads.
completed = []


def make_cb(i):
    def cb(error):
        # error holds the errno value of the command (0 on success) in a
        # ctypes int that is only valid during the call.
        completed.append((i, error.value))
        return 1    # retire now
    return cb


bufs = {}
for i in range(nblocks):
    bufs[i] = nbd.Buffer.from_bytearray(block_data(i, 2))
    g.aio_pwrite(bufs[i], i * BLOCK, completion=make_cb(i))
peak = g.aio_in_flight()
while len(completed) < nblocks:
    g.poll(-1)
assert all(err == 0 for _, err in completed), completed
assert g.aio_in_flight() == 0
print("aio writes: %d completed, %d were in flight" % (len(completed), peak))

cookies = {}
rbufs = {}
for i in range(nblocks):
    rbufs[i] = nbd.Buffer(BLOCK)
    cookies[i] = g.aio_pread(rbufs[i], i * BLOCK)
pending = set(cookies)
while pending:
    for i in list(pending):
        if g.aio_command_completed(cookies[i]):
            pending.discard(i)
    if pending:
        g.poll(-1)
for i in range(nblocks):
    assert rbufs[i].to_bytearray() == block_data(i, 2), "aio read %d" % i
print("aio reads: %d verified" % nblocks)

# Zero, trim and cache where supported.
if g.can_zero():
    g.zero(2 * BLOCK, 4 * BLOCK)
    assert g.pread(2 * BLOCK, 4 * BLOCK) == bytes(2 * BLOCK)
    assert g.pread(BLOCK, 6 * BLOCK) == block_data(6, 2)
    print("zero: ok")
if g.can_trim():
    g.trim(BLOCK, 8 * BLOCK)
    g.pwrite(block_data(8, 2), 8 * BLOCK)
    assert g.pread(BLOCK, 8 * BLOCK) == block_data(8, 2)
    print("trim: ok")
if g.can_cache():
    g.cache(4 * BLOCK, 0)
    print("cache: ok")

# Structured read: the chunks must tile the request exactly once.
if g.get_structured_replies_negotiated():
    seen = []

    def chunk(subbuf, offset, status, error):
        seen.append((offset, len(subbuf), status))
        if status == nbd.READ_DATA:
            exp = g_expect[offset - 16 * BLOCK:offset - 16 * BLOCK + len(subbuf)]
            assert bytes(subbuf) == exp, "chunk data at %d" % offset
        elif status == nbd.READ_HOLE:
            assert bytes(subbuf) == bytes(len(subbuf))
        return 0

    g_expect = b"".join(block_data(i, 2) for i in range(16, 20))
    data = g.pread_structured(4 * BLOCK, 16 * BLOCK, chunk)
    assert data == g_expect
    pos = 16 * BLOCK
    for off, ln, st in sorted(seen):
        assert off == pos, "gap or overlap at %d" % off
        pos += ln
    assert pos == 20 * BLOCK, "chunks end at %d" % pos
    print("pread_structured: %d chunks" % len(seen))

# Block status over the first blocks.
if g.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
    extents = []

    def extent(metacontext, offset, entries, error):
        if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
            extents.append((offset, list(entries)))
        return 0

    g.block_status(nblocks * BLOCK, 0, extent)
    assert extents, "no base:allocation extents"
    off, entries = extents[0]
    assert off == 0 and len(entries) % 2 == 0 and len(entries) > 0
    covered = sum(entries[0::2])
    assert covered > 0
    print("block_status: %d extents covering %d bytes" % (len(entries) // 2, covered))
else:
    print("block_status: base:allocation not offered by the server")

g.shutdown()
print("readwrite.py: OK")
