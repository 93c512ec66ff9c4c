# Every way of connecting, through the Python bindings: a subprocess on a
# socketpair (connect_command, kill_subprocess), systemd socket activation,
# TCP by port number and by name resolution, a socket the caller connected
# (connect_socket), and aio_connect_unix driven by poll. Each connection
# reads known data from nbdkit's pattern plugin (every 8-byte word holds its
# own offset, big-endian).
# Run under nbdsh with NBD_URI=<nbd+unix URI of a pattern server> and
# NBD_TCP_PORT=<port of a pattern server on 127.0.0.1>.
import os
import socket
import struct
import urllib.parse
import nbd

uri = os.environ["NBD_URI"]
tcp_port = os.environ["NBD_TCP_PORT"]
sock_path = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["socket"][0]

h = nbd.NBD()
print("PACKAGE", h.get_package_name(), h.get_version())


def check(h, what):
    buf = h.pread(16, 4096)
    assert buf == struct.pack(">QQ", 4096, 4104), (what, buf)
    print("%s: ok (size %d)" % (what, h.get_size()))


h = nbd.NBD()
h.connect_command(["nbdkit", "-s", "--exit-with-parent", "pattern", "1M"])
check(h, "connect_command")
try:
    h.get_uri()
    raise AssertionError("get_uri on a command connection succeeded")
except nbd.Error as e:
    assert e.errno in (22, "EINVAL"), (e.errno, e.string)  # as libnbd
h.kill_subprocess(0)
del h

h = nbd.NBD()
h.connect_systemd_socket_activation(["nbdkit", "--exit-with-parent", "pattern", "2M"])
check(h, "socket_activation")
assert h.get_size() == 2 * 1024 * 1024
h.shutdown()
del h

h = nbd.NBD()
h.connect_tcp("127.0.0.1", tcp_port)
check(h, "connect_tcp")
assert h.get_uri() == "nbd://127.0.0.1:%s/" % tcp_port, h.get_uri()
h.shutdown()

h = nbd.NBD()
h.connect_tcp("localhost", tcp_port)
check(h, "connect_tcp by name")
h.shutdown()

h = nbd.NBD()
h.connect_uri("nbd://127.0.0.1:%s/" % tcp_port)
check(h, "connect_uri tcp")
h.shutdown()

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock_path)
h = nbd.NBD()
h.connect_socket(s.detach())
check(h, "connect_socket")
h.shutdown()

h = nbd.NBD()
h.aio_connect_unix(sock_path)
while h.aio_is_connecting():
    h.poll(-1)
assert h.aio_is_ready(), h.connection_state()
check(h, "aio_connect_unix")
assert h.get_uri() == "nbd+unix:///?socket=%s" % sock_path, h.get_uri()
h.shutdown()
assert h.aio_is_closed()

# A refused TCP connection fails cleanly and leaves the handle newly
# created, as libnbd 1.24 does: a second connect may follow.
h = nbd.NBD()
try:
    h.connect_tcp("127.0.0.1", "1")
    raise AssertionError("connecting to port 1 succeeded")
except nbd.Error as e:
    assert e.errno in (111, "ECONNREFUSED"), (e.errno, e.string)
assert h.aio_is_created(), h.connection_state()
h.connect_unix(sock_path)
assert h.aio_is_ready(), h.connection_state()
print("refused: ok")
print("transports.py: OK")
