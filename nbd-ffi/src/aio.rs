//! The asynchronous API: `nbd_aio_*` commands, which return a cookie at once
//! and report completion later, and the calls with which a caller drives the
//! handle's socket from its own event loop (`nbd_aio_get_fd`,
//! `nbd_aio_get_direction`, `nbd_aio_notify_*`, `nbd_poll`).
//!
//! The commands are queued with [`HandleInner::issue`] and start going out
//! at once; the callbacks passed in are kept until the command completes and
//! then released, each `.free` exactly once (mid-command callbacks before
//! the completion callback), also when the call fails before queuing.

use crate::callbacks::{ChunkCallback, CompletionCallback, ExtentCallback, Owned};
use crate::commands::Op;
use crate::commands::{read_buffer, write_buffer};
use crate::constants::LIBNBD_SHUTDOWN_MASK;
use crate::errors::{check_flags, Error};
use crate::handle::{Handle, HandleInner};
use crate::hooks::CmdCallbacks;
use crate::ptr;
use crate::state::{Permitted, State};
use std::ffi::{c_int, c_uint, c_void};

impl HandleInner {
    /// After I/O driven by the caller: fails if that I/O killed the connection.
    fn after_notify(&self) -> Result<c_int, Error> {
        if self.state() == State::Dead {
            return Err(self.death_error());
        }
        Ok(0)
    }

    /// `nbd_shutdown` (`wait`) and `nbd_aio_disconnect`: a soft disconnect.
    pub(crate) fn shutdown(&mut self, flags: u32, wait: bool) -> Result<c_int, Error> {
        match self.state() {
            State::Closed | State::Dead if wait => return Ok(0),
            State::Ready | State::Processing | State::Negotiating => {}
            state => {
                return Err(Error::InvalidState {
                    state,
                    allowed: "connected with the server, or negotiating",
                })
            }
        }
        if flags & crate::constants::LIBNBD_SHUTDOWN_ABANDON_PENDING != 0 {
            self.engine.abandon_unsent();
        }
        self.engine.shutdown()?;
        if wait {
            self.engine.run_until(|e| {
                matches!(
                    e.state(),
                    Some(nbd_proto::client::State::Closed) | Some(nbd_proto::client::State::Dead)
                )
            })?;
        }
        Ok(0)
    }
}

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
        let completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("buf=<buf> count={count} offset={offset} completion=<fn> flags=0x{flags:x}"),
            |inner| {
                // SAFETY: buf is NULL or writable for count bytes (# Safety).
                let buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                let cbs = CmdCallbacks {
                    completion: Some(completion),
                    ..CmdCallbacks::default()
                };
                cookie(inner.issue(Op::Read(buf.raw()), offset, flags, cbs))
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
        let completion = unsafe { Owned::new(completion_callback) };
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
                let buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                if chunk.is_null() {
                    return Err(Error::NullPointer { param: "chunk_callback" });
                }
                let cbs = CmdCallbacks {
                    chunk: Some(chunk),
                    extent: None,
                    completion: Some(completion),
                };
                cookie(inner.issue(Op::Read(buf.raw()), offset, flags, cbs))
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
        let completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("buf=<buf> count={count} offset={offset} completion=<fn> flags=0x{flags:x}"),
            |inner| {
                Permitted::CONNECTED.check(inner.state())?;
                let raw = write_buffer(buf, count)?;
                let cbs = CmdCallbacks {
                    completion: Some(completion),
                    ..CmdCallbacks::default()
                };
                cookie(inner.issue(Op::Write(raw), offset, flags, cbs))
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
                Permitted::CONNECTED.check(inner.state())?;
                check_flags("flags", flags, LIBNBD_SHUTDOWN_MASK)?;
                inner.shutdown(flags, false)
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
    op: Op,
    offset: u64,
    flags: u32,
    completion: Owned<CompletionCallback>,
) -> Result<i64, Error> {
    let cbs = CmdCallbacks {
        completion: Some(completion),
        ..CmdCallbacks::default()
    };
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(fname, args, |inner| {
        Permitted::CONNECTED.check(inner.state())?;
        cookie(inner.issue(op, offset, flags, cbs))
    })
}

/// A cookie as the C API returns it.
fn cookie(c: Result<u64, Error>) -> Result<i64, Error> {
    c.and_then(|c| {
        i64::try_from(c).map_err(|_| Error::Engine {
            errno: libc::EOVERFLOW,
            message: "cookie out of range".into(),
        })
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
        let completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            range_command(
                fname,
                h,
                || format!("completion=<fn> flags=0x{flags:x}"),
                Op::Flush,
                0,
                flags,
                completion,
            )
        }
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
        let completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            range_command(
                fname,
                h,
                || format!("count={count} offset={offset} completion=<fn> flags=0x{flags:x}"),
                Op::Trim(count),
                offset,
                flags,
                completion,
            )
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
        let completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            range_command(
                fname,
                h,
                || format!("count={count} offset={offset} completion=<fn> flags=0x{flags:x}"),
                Op::Cache(count),
                offset,
                flags,
                completion,
            )
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
        let completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            range_command(
                fname,
                h,
                || format!("count={count} offset={offset} completion=<fn> flags=0x{flags:x}"),
                Op::Zero(count),
                offset,
                flags,
                completion,
            )
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
        let completion = unsafe { Owned::new(completion_callback) };
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
                Permitted::CONNECTED.check(inner.state())?;
                if extent.is_null() {
                    return Err(Error::NullPointer {
                        param: "extent_callback",
                    });
                }
                let cbs = CmdCallbacks {
                    chunk: None,
                    extent: Some(extent),
                    completion: Some(completion),
                };
                cookie(inner.issue(Op::BlockStatus(count), offset, flags, cbs))
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
        h.call(fname, String::new, |inner| {
            inner.engine.fd().ok_or(Error::InvalidState {
                state: inner.state(),
                allowed: "connecting, or connected",
            })
        })
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
        h.call(fname, String::new, |inner| match inner.state() {
            // No socket yet: nothing to poll for.
            State::Created => Ok(0u32),
            _ => Ok(inner.engine.direction()),
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
        h.call(fname, String::new, |inner| {
            inner.engine.notify_read();
            inner.after_notify()
        })
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
        h.call(fname, String::new, |inner| {
            inner.engine.notify_write();
            inner.after_notify()
        })
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
            |inner| Ok(c_int::from(inner.engine.command_completed(cookie)?)),
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
        h.call(fname, String::new, |inner| {
            match inner.engine.peek_completed() {
                Some(c) => cookie(Ok(c)),
                None if inner.engine.in_flight() > 0 => Ok(0),
                None => Err(Error::Engine {
                    errno: libc::EINVAL,
                    message: "no commands are in flight".into(),
                }),
            }
        })
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
            Permitted::CONNECTED_OR_OVER.check(inner.state())?;
            Ok(c_int::try_from(inner.engine.in_flight()).unwrap_or(c_int::MAX))
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
            |inner| {
                let progressed = inner.engine.poll(timeout)?;
                inner.after_notify()?;
                Ok(c_int::from(progressed))
            },
        )
    })
}
