//! The numeric `LIBNBD_*` constants of the C API.
//!
//! cbindgen turns each of these into a `#define` in `include/libnbd.h`. The
//! names and values are those of libnbd 1.14; flag values carry a `u32`
//! suffix so that the macros come out as unsigned literals (`1u`), which
//! keeps them usable in `#if` and gives them libnbd's `unsigned int` type.
//! The two string constants cannot be expressed for cbindgen; they are
//! written by hand in `cbindgen.toml`, and a test checks that the header
//! agrees with [`NAMESPACE_BASE`] and [`CONTEXT_BASE_ALLOCATION`].

use std::ffi::{c_int, CStr};

// ----- TLS modes (nbd_set_tls, nbd_set_uri_allow_tls) -----

/// Never use TLS.
pub const LIBNBD_TLS_DISABLE: c_int = 0;
/// Use TLS when the server offers it, fall back to plaintext otherwise.
pub const LIBNBD_TLS_ALLOW: c_int = 1;
/// Fail the connection unless TLS is negotiated.
pub const LIBNBD_TLS_REQUIRE: c_int = 2;

// ----- Block size kinds (nbd_get_block_size) -----

/// The smallest block size the server accepts.
pub const LIBNBD_SIZE_MINIMUM: c_int = 0;
/// The block size the server performs best with.
pub const LIBNBD_SIZE_PREFERRED: c_int = 1;
/// The largest request payload the server accepts.
pub const LIBNBD_SIZE_MAXIMUM: c_int = 2;
/// The largest payload (write or block status filter) the server accepts.
pub const LIBNBD_SIZE_PAYLOAD: c_int = 3;

// ----- Command flags -----

/// Force unit access: the write reaches stable storage before the reply.
pub const LIBNBD_CMD_FLAG_FUA: u32 = 0x01_u32;
/// A zero request must not punch a hole.
pub const LIBNBD_CMD_FLAG_NO_HOLE: u32 = 0x02_u32;
/// Do not fragment: a structured read comes back in a single chunk.
pub const LIBNBD_CMD_FLAG_DF: u32 = 0x04_u32;
/// Block status: one extent per context is enough.
pub const LIBNBD_CMD_FLAG_REQ_ONE: u32 = 0x08_u32;
/// Fail a zero request quickly rather than writing zeroes slowly.
pub const LIBNBD_CMD_FLAG_FAST_ZERO: u32 = 0x10_u32;
/// Every command flag this library knows.
/// The request carries a payload whose length is the request's length
/// field (extended headers: block status filters, and writes when asked).
pub const LIBNBD_CMD_FLAG_PAYLOAD_LEN: u32 = 0x20_u32;
/// Every `LIBNBD_CMD_FLAG_*` bit.
pub const LIBNBD_CMD_FLAG_MASK: u32 = 0x3f_u32;

// ----- Handshake flags (nbd_set_handshake_flags) -----

/// Offer the fixed-newstyle handshake.
pub const LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE: u32 = 0x01_u32;
/// Offer to skip the zero padding of `NBD_OPT_EXPORT_NAME` replies.
pub const LIBNBD_HANDSHAKE_FLAG_NO_ZEROES: u32 = 0x02_u32;
/// Every handshake flag this library knows.
pub const LIBNBD_HANDSHAKE_FLAG_MASK: u32 = 0x03_u32;

// ----- Strictness flags (nbd_set_strict_mode) -----

/// Refuse commands the server did not advertise.
pub const LIBNBD_STRICT_COMMANDS: u32 = 0x01_u32;
/// Refuse unknown command flags, or flags that do not fit the command.
pub const LIBNBD_STRICT_FLAGS: u32 = 0x02_u32;
/// Refuse requests that reach past the end of the export.
pub const LIBNBD_STRICT_BOUNDS: u32 = 0x04_u32;
/// Refuse requests of length zero.
pub const LIBNBD_STRICT_ZERO_SIZE: u32 = 0x08_u32;
/// Refuse requests not aligned to the server's minimum block size.
pub const LIBNBD_STRICT_ALIGN: u32 = 0x10_u32;
/// Every strictness flag this library knows.
/// Writes larger than the server's maximum payload fail with `ERANGE`.
pub const LIBNBD_STRICT_PAYLOAD: u32 = 0x20_u32;
/// The library sets `LIBNBD_CMD_FLAG_PAYLOAD_LEN` where the protocol needs
/// it, instead of leaving it to the caller.
pub const LIBNBD_STRICT_AUTO_FLAG: u32 = 0x40_u32;
/// Every `LIBNBD_STRICT_*` bit.
pub const LIBNBD_STRICT_MASK: u32 = 0x7f_u32;

// ----- URI transports (nbd_set_uri_allow_transports) -----

/// `nbd://` and `nbds://` URIs (TCP).
pub const LIBNBD_ALLOW_TRANSPORT_TCP: u32 = 0x01_u32;
/// `nbd+unix://` and `nbds+unix://` URIs (Unix domain sockets).
pub const LIBNBD_ALLOW_TRANSPORT_UNIX: u32 = 0x02_u32;
/// `nbd+vsock://` and `nbds+vsock://` URIs (`AF_VSOCK`).
pub const LIBNBD_ALLOW_TRANSPORT_VSOCK: u32 = 0x04_u32;
/// Every transport this library knows.
/// `nbd+ssh://` and `nbds+ssh://` URIs.
pub const LIBNBD_ALLOW_TRANSPORT_SSH: u32 = 0x08_u32;
/// Every `LIBNBD_ALLOW_TRANSPORT_*` bit.
pub const LIBNBD_ALLOW_TRANSPORT_MASK: u32 = 0x0f_u32;

// ----- Shutdown flags (nbd_shutdown, nbd_aio_disconnect) -----

/// Do not wait for commands still in flight.
pub const LIBNBD_SHUTDOWN_ABANDON_PENDING: u32 = 0x10000_u32;
/// Every shutdown flag this library knows.
pub const LIBNBD_SHUTDOWN_MASK: u32 = 0x10000_u32;

// ----- Poll directions (nbd_aio_get_direction) -----

/// The handle wants to read from the socket.
pub const LIBNBD_AIO_DIRECTION_READ: c_int = 1;
/// The handle wants to write to the socket.
pub const LIBNBD_AIO_DIRECTION_WRITE: c_int = 2;
/// The handle wants both.
pub const LIBNBD_AIO_DIRECTION_BOTH: c_int = 3;

// ----- Chunk status (nbd_chunk_callback) -----

/// The chunk carries data.
pub const LIBNBD_READ_DATA: c_int = 1;
/// The chunk describes a hole that reads as zeroes.
pub const LIBNBD_READ_HOLE: c_int = 2;
/// The chunk reports an error for part of the read.
pub const LIBNBD_READ_ERROR: c_int = 3;

// ----- base:allocation extent flags (nbd_extent_callback) -----

/// The extent is not allocated.
pub const LIBNBD_STATE_HOLE: c_int = 1;
/// The extent reads as zeroes.
pub const LIBNBD_STATE_ZERO: c_int = 2;

// ----- Well-known metadata context names (written by hand in the header) -----

/// The prefix of the metadata contexts defined by the NBD protocol itself.
pub const NAMESPACE_BASE: &CStr = cstr(b"base:\0");
/// The allocation metadata context defined by the NBD protocol.
pub const CONTEXT_BASE_ALLOCATION: &CStr = cstr(b"base:allocation\0");
/// The prefix of QEMU's metadata contexts.
pub const NAMESPACE_QEMU: &CStr = cstr(b"qemu:\0");
/// The prefix of QEMU's dirty bitmap contexts (`qemu:dirty-bitmap:NAME`).
pub const CONTEXT_QEMU_DIRTY_BITMAP: &CStr = cstr(b"qemu:dirty-bitmap:\0");
/// QEMU's allocation depth context.
pub const CONTEXT_QEMU_ALLOCATION_DEPTH: &CStr = cstr(b"qemu:allocation-depth\0");

// ----- qemu:dirty-bitmap extent flags -----

/// The extent is dirty (written since the bitmap was created).
pub const LIBNBD_STATE_DIRTY: c_int = 1;

/// The longest export or metadata context name the NBD protocol permits.
pub(crate) const MAX_STRING_LEN: usize = 4096;
/// The TCP port used when a URI names none.
pub(crate) const DEFAULT_PORT: u16 = 10809;

/// Builds a `&CStr` at compile time (C string literals need a newer Rust than
/// our minimum); a missing or early NUL stops the build.
const fn cstr(bytes: &'static [u8]) -> &'static CStr {
    match CStr::from_bytes_with_nul(bytes) {
        Ok(s) => s,
        Err(_) => panic!("bad C string constant"),
    }
}
