# Option-mode negotiation through the Python bindings: list the exports,
# query each one with opt_info, list meta contexts, then opt_go on the
# first export and read from it; finally a second handle is abandoned
# with opt_abort.  Run under nbdsh with
#   NBD_URI=<uri of the server>
#   NBD_EXPECT_EXPORTS=name1,name2   (the names the server must list)
# Prints "PACKAGE name version" first and "optmode.py: OK" at the end.
import os
import nbd

uri = os.environ["NBD_URI"]
expected = os.environ["NBD_EXPECT_EXPORTS"].split(",")

h = nbd.NBD()
print("PACKAGE", h.get_package_name(), h.get_version())
h.set_opt_mode(True)
h.connect_uri(uri)
assert h.aio_is_negotiating(), h.connection_state()

listed = []
n = h.opt_list(lambda name, description: listed.append((name, description)))
assert n == len(listed), (n, listed)
for name, description in listed:
    print("export %r description %r" % (name, description))
names = [name for name, _ in listed]
assert names == expected, "listed %r, expected %r" % (names, expected)

# opt_info on every export leaves the handle negotiating.
for name in names:
    h.set_export_name(name)
    h.opt_info()
    print("info %r: size %d read_only %s" % (name, h.get_size(), h.is_read_only()))
    assert h.aio_is_negotiating()

if h.get_structured_replies_negotiated():
    # With no contexts requested, the server lists all it offers.
    contexts = []
    n = h.opt_list_meta_context(lambda name: contexts.append(name))
    assert n == len(contexts), (n, contexts)
    print("meta contexts:", contexts)
    assert nbd.CONTEXT_BASE_ALLOCATION in contexts, contexts
    # With one requested, only that one comes back.
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    queried = []
    n = h.opt_list_meta_context(lambda name: queried.append(name))
    assert queried == [nbd.CONTEXT_BASE_ALLOCATION] and n == 1, queried

h.set_export_name(names[0])
h.opt_go()
assert h.aio_is_ready(), h.connection_state()
size = h.get_size()
first = h.pread(min(size, 4096), 0)
assert len(first) == min(size, 4096)
print("go %r: size %d, read %d bytes" % (names[0], size, len(first)))
h.shutdown()

g = nbd.NBD()
g.set_opt_mode(True)
g.connect_uri(uri)
g.opt_abort()
assert g.aio_is_closed(), g.connection_state()
print("opt_abort: closed")
print("optmode.py: OK")
