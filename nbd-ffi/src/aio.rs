//! The asynchronous API: `nbd_aio_*` commands, which return a cookie at once
//! and report completion later, and the calls with which a caller drives the
//! handle's socket from its own event loop (`nbd_aio_get_fd`,
//! `nbd_aio_get_direction`, `nbd_aio_notify_*`, `nbd_poll`).
//!
//! All of this needs the connection engine. Until it lands these calls check
//! the handle, its state and the pointers, release every callback passed in
//! (each `.free` exactly once, mid-command callbacks before the completion
//! callback), and fail with `ENOTSUP`.

use crate::callbacks::{ChunkCallback, CompletionCallback, ExtentCallback, Owned};
use crate::commands::read_buffer;
use crate::constants::LIBNBD_SHUTDOWN_MASK;
use crate::errors::{check_flags, not_yet_implemented, Error};
use crate::handle::Handle;
use crate::ptr;
use crate::state::{Permitted, State};
use std::ffi::{c_int, c_uint, c_void};

// Note on callback order: where an export takes both a mid-command callback
// and a completion callback, the completion callback is taken into an Owned
// first. Locals drop in reverse order, so the mid-command callback's free
// runs before the completion callback's, the order libnbd documents.

/// Starts reading `count` bytes at `offset` into `buf`; returns a cookie.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open; `buf`
/// must be NULL or writable for `count` bytes until the command is retired;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_pread(
    h: *mut Handle,
    buf: *mut c_void,
    count: libc::size_t,
    offset: u64,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_pread", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("buf=<buf> count={count} offset={offset} completion=<fn> flags=0x{flags:x}"),
            |inner| {
                // SAFETY: buf is NULL or writable for count bytes (# Safety).
                let _buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                not_yet_implemented::<i64>()
            },
        )
    })
}

/// Starts a structured read; `chunk_callback` sees each piece of the reply.
///
/// # Safety
///
/// As for `nbd_aio_pread`; `chunk_callback` must be callable (and freeable)
/// with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_pread_structured(
    h: *mut Handle,
    buf: *mut c_void,
    count: libc::size_t,
    offset: u64,
    chunk_callback: ChunkCallback,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_pread_structured", |fname| {
        // SAFETY: the caller hands both callbacks over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: as above.
        let chunk = unsafe { Owned::new(chunk_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || {
                format!(
                    "buf=<buf> count={count} offset={offset} chunk=<fn> completion=<fn> flags=0x{flags:x}"
                )
            },
            |inner| {
                // SAFETY: buf is NULL or writable for count bytes (# Safety).
                let _buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                if chunk.is_null() {
                    return Err(Error::NullPointer { param: "chunk_callback" });
                }
                not_yet_implemented::<i64>()
            },
        )
    })
}

/// Starts writing `count` bytes from `buf` at `offset`; returns a cookie.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open; `buf`
/// must be NULL or readable for `count` bytes until the command is retired;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_pwrite(
    h: *mut Handle,
    buf: *const c_void,
    count: libc::size_t,
    offset: u64,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_pwrite", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("buf=<buf> count={count} offset={offset} completion=<fn> flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                ptr::required_ptr(buf, "buf")?;
                not_yet_implemented::<i64>()
            },
        )
    })
}

/// Starts a clean disconnect without waiting for it.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_disconnect(h: *mut Handle, flags: u32) -> c_int {
    ffi_boundary!("nbd_aio_disconnect", |fname| {
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

/// Shared body of the asynchronous commands that take only a range, a
/// completion callback and flags.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
unsafe fn range_command(
    fname: &'static str,
    h: *mut Handle,
    args: impl FnOnce() -> String,
) -> Result<i64, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(fname, args, |inner| {
        Permitted::CONNECTED.check(inner.state)?;
        not_yet_implemented::<i64>()
    })
}

/// Starts a flush; returns a cookie.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_flush(
    h: *mut Handle,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_flush", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { range_command(fname, h, || format!("completion=<fn> flags=0x{flags:x}")) }
    })
}

/// Starts a trim (discard) of the range; returns a cookie.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_trim(
    h: *mut Handle,
    count: u64,
    offset: u64,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_trim", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            range_command(fname, h, || {
                format!("count={count} offset={offset} completion=<fn> flags=0x{flags:x}")
            })
        }
    })
}

/// Starts a cache (prefetch) of the range; returns a cookie.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_cache(
    h: *mut Handle,
    count: u64,
    offset: u64,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_cache", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            range_command(fname, h, || {
                format!("count={count} offset={offset} completion=<fn> flags=0x{flags:x}")
            })
        }
    })
}

/// Starts writing zeroes over the range; returns a cookie.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_zero(
    h: *mut Handle,
    count: u64,
    offset: u64,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_zero", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            range_command(fname, h, || {
                format!("count={count} offset={offset} completion=<fn> flags=0x{flags:x}")
            })
        }
    })
}

/// Starts a block status query of the range; returns a cookie.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open; both
/// callbacks must be callable (and freeable) with their `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_block_status(
    h: *mut Handle,
    count: u64,
    offset: u64,
    extent_callback: ExtentCallback,
    completion_callback: CompletionCallback,
    flags: u32,
) -> i64 {
    ffi_boundary!("nbd_aio_block_status", |fname| {
        // SAFETY: the caller hands both callbacks over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: as above.
        let extent = unsafe { Owned::new(extent_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || {
                format!(
                    "count={count} offset={offset} extent=<fn> completion=<fn> flags=0x{flags:x}"
                )
            },
            |inner| {
                Permitted::CONNECTED.check(inner.state)?;
                if extent.is_null() {
                    return Err(Error::NullPointer {
                        param: "extent_callback",
                    });
                }
                not_yet_implemented::<i64>()
            },
        )
    })
}

/// Returns the file descriptor of the connection, for the caller's poll loop.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_get_fd(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_aio_get_fd", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |_inner| not_yet_implemented::<c_int>())
    })
}

/// Returns which way the caller's poll loop should wait
/// (`LIBNBD_AIO_DIRECTION_*`), or 0 when there is nothing to wait for.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_get_direction(h: *mut Handle) -> c_uint {
    ffi_boundary!("nbd_aio_get_direction", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| match inner.state {
            // No socket yet: nothing to poll for.
            State::Created => Ok(0u32),
            _ => not_yet_implemented::<u32>(),
        })
    })
}

/// Tells the handle its socket is readable, so it makes progress.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_notify_read(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_aio_notify_read", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |_inner| not_yet_implemented::<c_int>())
    })
}

/// Tells the handle its socket is writable, so it makes progress.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_notify_write(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_aio_notify_write", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |_inner| not_yet_implemented::<c_int>())
    })
}

/// Returns 1 and retires the command if `cookie` has completed successfully,
/// 0 if it is still in flight, -1 if it failed.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_command_completed(h: *mut Handle, cookie: u64) -> c_int {
    ffi_boundary!("nbd_aio_command_completed", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("cookie={cookie}"),
            |_inner| not_yet_implemented::<c_int>(),
        )
    })
}

/// Returns the cookie of a completed command not yet retired.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_peek_command_completed(h: *mut Handle) -> i64 {
    ffi_boundary!("nbd_aio_peek_command_completed", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |_inner| not_yet_implemented::<i64>())
    })
}

/// Returns how many commands are waiting for a reply from the server.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_in_flight(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_aio_in_flight", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Permitted::CONNECTED_OR_OVER.check(inner.state)?;
            not_yet_implemented::<c_int>()
        })
    })
}

/// Waits up to `timeout` milliseconds (-1: forever) for the socket and
/// makes progress; returns 1 if something happened, 0 on timeout.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_poll(h: *mut Handle, timeout: c_int) -> c_int {
    ffi_boundary!("nbd_poll", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("timeout={timeout}"),
            |_inner| not_yet_implemented::<c_int>(),
        )
    })
}
