# nbd_shutdown with LIBNBD_SHUTDOWN_ABANDON_PENDING: of three 16 MiB writes
# submitted at once, the first starts going out (the socket takes only part
# of it) and the other two have not started; shutting down with the flag
# finishes sending the first (nbdkit may then answer it with ESHUTDOWN, as it
# saw NBD_CMD_DISC) and fails the two others with ENOTCONN, unsent.
# Run under nbdsh with NBD_URI=<uri of an nbdkit memory server >= 48M>.
import os
import nbd

h = nbd.NBD()
print("PACKAGE", h.get_package_name(), h.get_version())
h.connect_uri(os.environ["NBD_URI"])
size = 16 * 1024 * 1024
bufs = [nbd.Buffer.from_bytearray(bytearray([i + 1]) * size) for i in range(3)]
cookies = [h.aio_pwrite(bufs[i], i * size) for i in range(3)]
assert h.aio_in_flight() == 3
h.shutdown(nbd.SHUTDOWN_ABANDON_PENDING)
assert h.aio_is_closed(), h.connection_state()
try:
    assert h.aio_command_completed(cookies[0])
    first = 1
except nbd.Error as e:
    assert e.errno in (108, "ESHUTDOWN"), (e.errno, e.string)
    first = 0
for c in cookies[1:]:
    try:
        h.aio_command_completed(c)
        raise AssertionError("an abandoned write succeeded")
    except nbd.Error as e:
        assert e.errno in (107, "ENOTCONN"), (e.errno, e.string)
print("abandoned: 2")

# The server got the first write and nothing of the others.
g = nbd.NBD()
g.connect_uri(os.environ["NBD_URI"])
assert g.pread(4, 0) == (b"\x01" if first else b"\x00") * 4
assert g.pread(4, size) == b"\x00" * 4
assert g.pread(4, 2 * size) == b"\x00" * 4
g.shutdown()
print("abandon.py: OK")
