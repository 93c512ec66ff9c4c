#!/usr/bin/env python3
"""Writes the small seed corpora of the fuzz targets (seeds/<target>/).

Each seed is a well-formed server (or client) byte stream for the target's
input layout, so the fuzzer starts from deep inside the protocol.
"""
import os
import struct

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY = 0x0003E889045565A9
SIMPLE, STRUCT, EXT = 0x67446698, 0x668E33EF, 0x6E8A278C
GO, SR, EH, SET_META, LIST, INFO = 7, 8, 11, 10, 3, 6
HERE = os.path.dirname(os.path.abspath(__file__))


def greeting(flags=3):
    return struct.pack(">QQH", NBDMAGIC, IHAVEOPT, flags)


def rep(opt, typ, payload=b""):
    return struct.pack(">QIII", OPT_REPLY, opt, typ, len(payload)) + payload


def go(opt=GO, size=1 << 20, flags=0x1ED):
    return (rep(opt, 3, struct.pack(">HQH", 0, size, flags))
            + rep(opt, 3, struct.pack(">HIII", 3, 1, 4096, 1 << 25))
            + rep(opt, 1))


def meta(ctx=1):
    return rep(SET_META, 4, struct.pack(">I", ctx) + b"base:allocation") + rep(SET_META, 1)


def chunk(mode, flags, typ, cookie, req_off, payload):
    if mode == 2:
        return struct.pack(">IHHQQQ", EXT, flags, typ, cookie, req_off, len(payload)) + payload
    return struct.pack(">IHHQI", STRUCT, flags, typ, cookie, len(payload)) + payload


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# client_negotiation: [config selector, step] + server stream
write("client_negotiation", "simple", bytes([0, 63]) + greeting() + go())
write("client_negotiation", "structured_meta", bytes([1 | 64, 5]) + greeting() + rep(SR, 1) + meta() + go())
write("client_negotiation", "extended_meta", bytes([2 | 64, 17]) + greeting() + rep(EH, 1) + meta() + go())
write("client_negotiation", "oldstyle", bytes([0, 63]) + struct.pack(">QQQI", NBDMAGIC, 0x420281861253, 1 << 20, 1) + bytes(124))
write("client_negotiation", "go_unsup_fallback", bytes([0, 63]) + greeting(1) + rep(GO, 0x80000001) + struct.pack(">QH", 1 << 20, 1) + bytes(124))
lst = rep(LIST, 2, struct.pack(">I", 3) + b"abcdesc") + rep(LIST, 1)
write("client_negotiation", "opt_mode", bytes([1 | 4, 9]) + greeting() + rep(SR, 1) + lst + go(INFO) + rep(9, 4, struct.pack(">I", 0) + b"base:allocation") + rep(9, 1) + go())

# client_transmission: [mode, step, mix] + replies; cookies 1-4 are reads of
# 512, 1024, 1 and 2048 bytes at mix*512 + i*8192, 5 a write, 6 block status,
# 7 flush, 8 trim.
for mode in range(3):
    mix = 0
    s = b""
    for i, ln in enumerate([512, 1024, 1, 2048]):
        off = mix * 512 + i * 8192
        if mode == 0:
            s += struct.pack(">IIQ", SIMPLE, 0, i + 1) + bytes([i]) * ln
        else:
            s += chunk(mode, 0, 1, i + 1, off, struct.pack(">Q", off) + bytes([i]) * ln)
            s += chunk(mode, 1, 0, i + 1, off, b"")
    if mode == 0:
        s += struct.pack(">IIQ", SIMPLE, 0, 5)
        s += struct.pack(">IIQ", SIMPLE, 5, 7)
        s += struct.pack(">IIQ", SIMPLE, 0, 8)
    else:
        s += chunk(mode, 1, 0, 5, 0, b"")
        if mode == 2:
            bs = struct.pack(">IIQQQQ", 1, 2, 4096, 0, 61440, 3)
            s += chunk(mode, 1, 6, 6, 0, bs)
        else:
            bs = struct.pack(">IIIII", 1, 4096, 0, 61440, 3)
            s += chunk(mode, 1, 5, 6, 0, bs)
        s += chunk(mode, 1, 0x8001, 7, 0, struct.pack(">IH", 5, 4) + b"oops")
        s += chunk(mode, 1, 0, 8, 4096, b"")
    write("client_transmission", "mode%d" % mode, bytes([mode, 63, mix]) + s)

# server_decoder: [selector, step] + client stream. Selector bits: 1 oldstyle,
# 2 pretend structured, 4 pretend extended, 8 greeting without NO_ZEROES,
# 16 greeting without FIXED_NEWSTYLE, 32 refuse SR/EH, 64 small payload caps,
# 128 drain output piecewise. Step 0 feeds everything at once.
def opt(o, payload=b""):
    return struct.pack(">QII", IHAVEOPT, o, len(payload)) + payload

def req(ext, flags, typ, cookie, off, ln):
    if ext:
        return struct.pack(">IHHQQQ", 0x21E41C71, flags, typ, cookie, off, ln)
    return struct.pack(">IHHQQI", 0x25609513, flags, typ, cookie, off, ln)

def sd(name, sel, step, stream):
    write("server_decoder", name, bytes([sel, step]) + stream)

goreq = struct.pack(">I", 0) + struct.pack(">HH", 1, 3)
metareq = struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation"
compact_reqs = (req(False, 0, 0, 1, 0, 512) + req(False, 1, 1, 2, 0, 4) + b"data"
                + req(False, 0, 7, 3, 0, 4096) + req(False, 8, 7, 4, 0, 4096)
                + req(False, 0, 3, 5, 0, 0) + req(False, 2, 6, 6, 0, 8192)
                + req(False, 0, 2, 7, 0, 0))
ext_reqs = (req(True, 0, 0, 1, 0, 512) + req(True, 0, 1, 2, 0, 4) + b"data"
            + req(True, 0x20, 7, 3, 0, 12) + struct.pack(">QI", 4096, 1)
            + req(True, 0, 4, 4, 4096, 1 << 33) + req(True, 0, 2, 5, 0, 0))
c = struct.pack(">I", 3) + opt(SR) + opt(SET_META, metareq) + opt(GO, goreq) + compact_reqs
sd("compact", 0, 0, c)
sd("compact_bytewise", 0, 1, c)
sd("compact_piecewise_out", 128, 13, c)
c = struct.pack(">I", 3) + opt(EH) + opt(GO, goreq) + ext_reqs
sd("extended", 0, 7, c)
sd("extended_refused", 32, 0, struct.pack(">I", 3) + opt(EH) + opt(SR) + opt(GO, goreq) + compact_reqs)
sd("list_info_abort", 0, 1, struct.pack(">I", 1) + opt(LIST) + opt(INFO, goreq) + opt(9, metareq) + opt(2))
sd("go_unknown_then_go", 0, 0, struct.pack(">I", 1) + opt(GO, struct.pack(">I", 3) + b"abc" + struct.pack(">H", 0)) + opt(GO, goreq) + compact_reqs)
sd("invalid_option_then_go", 0, 5, struct.pack(">I", 1) + opt(GO, b"\x00") + opt(99, b"xyz") + opt(GO, goreq) + compact_reqs)
sd("export_name_no_fixed", 8 | 16, 0, struct.pack(">I", 0) + opt(1, b"disk") + compact_reqs)
sd("export_name_zeroes", 8, 3, struct.pack(">I", 1) + opt(1, b"") + compact_reqs)
sd("oldstyle", 1, 0, compact_reqs)
sd("oldstyle_pretend_extended", 1 | 4, 9, ext_reqs)
sd("newstyle_pretend_structured", 2, 0, struct.pack(">I", 3) + opt(GO, goreq) + compact_reqs)
sd("small_caps", 64, 0, struct.pack(">I", 3) + opt(GO, goreq) + req(False, 0, 1, 1, 0, 8192) + bytes(8192))
