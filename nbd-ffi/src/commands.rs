//! The synchronous data commands (`nbd_pread`, `nbd_pwrite`, `nbd_zero`,
//! ...) and the settings that govern all data commands: strict mode and read
//! buffer initialisation.
//!
//! The commands need the connection engine. Until it lands they do what can
//! be done without a connection (zero the read buffer, check the state and
//! the pointers, release callbacks) and then fail with `ENOTSUP`.

use crate::callbacks::{ChunkCallback, ExtentCallback, Owned};
use crate::constants::{LIBNBD_SHUTDOWN_MASK, LIBNBD_STRICT_MASK};
use crate::errors::{check_flags, not_yet_implemented, Error};
use crate::handle::{Handle, HandleInner};
use crate::ptr::{self, OutBuf};
use crate::state::Permitted;
use std::ffi::{c_int, c_void};

/// The command settings of one handle.
#[derive(Debug)]
pub(crate) struct CommandSettings {
    /// `LIBNBD_STRICT_*` checks done on the client side.
    pub(crate) strict_mode: u32,
    /// Whether read buffers are zeroed before anything else happens.
    pub(crate) pread_initialize: bool,
}

impl Default for CommandSettings {
    /// libnbd's defaults: every strictness check on, buffers zeroed.
    fn default() -> Self {
        CommandSettings {
            strict_mode: LIBNBD_STRICT_MASK,
            pread_initialize: true,
        }
    }
}

/// Checks a read buffer the way libnbd does: first, before any other check,
/// zero it if `nbd_set_pread_initialize` asks for that (so that a caller who
/// ignores the error never sees stale memory), then the handle state, then
/// the NULL check.
///
/// # Safety
///
/// `buf` must be NULL or writable for `count` bytes.
pub(crate) unsafe fn read_buffer(
    inner: &HandleInner,
    permitted: Permitted,
    buf: *mut c_void,
    count: usize,
) -> Result<OutBuf, Error> {
    // SAFETY: forwarded from this function's contract.
    let out = unsafe { OutBuf::new(buf, count) };
    if let Ok(out) = &out {
        if inner.commands.pread_initialize {
            out.zero();
        }
    }
    permitted.check(inner.state)?;
    out
}

/// Chooses which protocol checks are done on the client side
/// (`LIBNBD_STRICT_*`; unknown bits fail with `EINVAL`).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_strict_mode(h: *mut Handle, flags: u32) -> c_int {
    ffi_boundary!("nbd_set_strict_mode", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("flags=0x{flags:x}"),
            |inner| {
                check_flags("flags", flags, LIBNBD_STRICT_MASK)?;
                inner.commands.strict_mode = flags;
                Ok(0)
            },
        )
    })
}

/// Returns the `LIBNBD_STRICT_*` checks in force.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_strict_mode(h: *mut Handle) -> u32 {
    ffi_boundary!("nbd_get_strict_mode", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| Ok(inner.commands.strict_mode))
    })
}

/// Chooses whether read buffers are zeroed before use (default: yes).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_pread_initialize(h: *mut Handle, request: bool) -> c_int {
    ffi_boundary!("nbd_set_pread_initialize", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("request={request}"),
            |inner| {
                inner.commands.pread_initialize = request;
                Ok(0)
            },
        )
    })
}

/// Returns 1 if read buffers are zeroed before use, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_pread_initialize(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_pread_initialize", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Ok(inner.commands.pread_initialize)
        })
    })
}

/// Reads `count` bytes at `offset` into `buf`, waiting for the reply.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open; `buf`
/// must be NULL or writable for `count` bytes (it may be uninitialised).
#[no_mangle]
pub unsafe extern "C" fn nbd_pread(
    h: *mut Handle,
    buf: *mut c_void,
    count: libc::size_t,
    offset: u64,
    flags: u32,
) -> c_int {
    ffi_boundary!("nbd_pread", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("buf=<buf> count={count} offset={offset} flags=0x{flags:x}"),
            |inner| {
                // SAFETY: buf is NULL or writable for count bytes (# Safety).
                let _buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Reads like `nbd_pread`, calling `chunk_callback` for each piece of a
/// structured reply.
///
/// # Safety
///
/// As for `nbd_pread`; `chunk_callback` must be callable (and freeable) with
/// its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_pread_structured(
    h: *mut Handle,
    buf: *mut c_void,
    count: libc::size_t,
    offset: u64,
    chunk_callback: ChunkCallback,
    flags: u32,
) -> c_int {
    ffi_boundary!("nbd_pread_structured", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let chunk = unsafe { Owned::new(chunk_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("buf=<buf> count={count} offset={offset} chunk=<fn> flags=0x{flags:x}"),
            |inner| {
                // SAFETY: buf is NULL or writable for count bytes (# Safety).
                let _buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                if chunk.is_null() {
                    return Err(Error::NullPointer {
                        param: "chunk_callback",
                    });
                }
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Writes `count` bytes from `buf` at `offset`, waiting for the reply.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open; `buf`
/// must be NULL or readable for `count` bytes.
#[no_mangle]
pub unsafe extern "C" fn nbd_pwrite(
    h: *mut Handle,
    buf: *const c_void,
    count: libc::size_t,
    offset: u64,
    flags: u32,
) -> c_int {
    ffi_boundary!("nbd_pwrite", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("buf=<buf> count={count} offset={offset} flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                ptr::required_ptr(buf, "buf")?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Disconnects from the server cleanly, waiting until it is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_shutdown(h: *mut Handle, flags: u32) -> c_int {
    ffi_boundary!("nbd_shutdown", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                check_flags("flags", flags, LIBNBD_SHUTDOWN_MASK)?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Asks the server to make earlier writes durable, waiting for the reply.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_flush(h: *mut Handle, flags: u32) -> c_int {
    ffi_boundary!("nbd_flush", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Tells the server the range is no longer needed (discard).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_trim(h: *mut Handle, count: u64, offset: u64, flags: u32) -> c_int {
    ffi_boundary!("nbd_trim", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("count={count} offset={offset} flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Asks the server to prefetch the range into its cache.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_cache(h: *mut Handle, count: u64, offset: u64, flags: u32) -> c_int {
    ffi_boundary!("nbd_cache", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("count={count} offset={offset} flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Writes zeroes over the range.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_zero(h: *mut Handle, count: u64, offset: u64, flags: u32) -> c_int {
    ffi_boundary!("nbd_zero", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("count={count} offset={offset} flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Asks for the metadata (allocation, ...) of the range, delivered to
/// `extent_callback` per negotiated context.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `extent_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_block_status(
    h: *mut Handle,
    count: u64,
    offset: u64,
    extent_callback: ExtentCallback,
    flags: u32,
) -> c_int {
    ffi_boundary!("nbd_block_status", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let extent = unsafe { Owned::new(extent_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("count={count} offset={offset} extent=<fn> flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                if extent.is_null() {
                    return Err(Error::NullPointer {
                        param: "extent_callback",
                    });
                }
                not_yet_implemented::<c_int>()
            },
        )
    })
}
