# TLS through the Python bindings: connect with the settings given in the
# environment, then (if the connection was expected to work) write, read
# back, flush and query block status over it.
#
#   NBD_TLS_TARGET  unix:<path> | tcp:<host>:<port> | uri:<NBD URI>
#   NBD_TLS_MODE    disable | allow | require (default require)
#   NBD_TLS_CERTS   nbd_set_tls_certificates directory (optional)
#   NBD_TLS_PSK     nbd_set_tls_psk_file (optional)
#   NBD_TLS_USER    nbd_set_tls_username (optional)
#   NBD_TLS_VERIFY  0 or 1: nbd_set_tls_verify_peer (optional)
#   NBD_TLS_EXPECT  ok | fail
#
# Prints "NEGOTIATED <0|1>" and "IO OK", or "FAIL errno=<errno> error=<msg>",
# then "tls.py: OK".
import os
import nbd

env = os.environ
h = nbd.NBD()
print("PACKAGE", h.get_package_name(), h.get_version())
mode = {"disable": nbd.TLS_DISABLE, "allow": nbd.TLS_ALLOW,
        "require": nbd.TLS_REQUIRE}[env.get("NBD_TLS_MODE", "require")]
h.set_tls(mode)
if "NBD_TLS_CERTS" in env:
    h.set_tls_certificates(env["NBD_TLS_CERTS"])
if "NBD_TLS_PSK" in env:
    h.set_tls_psk_file(env["NBD_TLS_PSK"])
if "NBD_TLS_USER" in env:
    h.set_tls_username(env["NBD_TLS_USER"])
if "NBD_TLS_VERIFY" in env:
    h.set_tls_verify_peer(env["NBD_TLS_VERIFY"] == "1")
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.set_uri_allow_local_file(True)

kind, _, where = env["NBD_TLS_TARGET"].partition(":")
try:
    if kind == "unix":
        h.connect_unix(where)
    elif kind == "tcp":
        host, _, port = where.rpartition(":")
        h.connect_tcp(host, port)
    else:
        h.connect_uri(where)
except nbd.Error as e:
    print("FAIL errno=%s error=%s" % (e.errno, e.string))
    assert env["NBD_TLS_EXPECT"] == "fail", "connect failed"
    assert h.aio_is_dead(), "a failed connect must leave the handle dead"
    print("tls.py: OK")
    raise SystemExit(0)

assert env["NBD_TLS_EXPECT"] == "ok", "connected, but should have failed"
print("NEGOTIATED", int(h.get_tls_negotiated()))
print("URI", h.get_uri())
data = bytes((i * 7 + 3) & 0xFF for i in range(256 * 1024))
h.pwrite(data, 1 << 20)
h.flush()
assert h.pread(len(data), 1 << 20) == data, "read back differs"
# Many commands in flight over TLS, read back in pieces.
cookies = [h.aio_pread(nbd.Buffer(4096), (1 << 20) + i * 4096)
           for i in range(64)]
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    assert h.aio_command_completed(c)
extents = []
if h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION):
    h.block_status(h.get_size(), 0,
                   lambda ctx, off, ents, err: extents.append(len(ents)))
    assert extents, "no extents"
print("IO OK extents=%d" % len(extents))
h.shutdown()
print("tls.py: OK")
