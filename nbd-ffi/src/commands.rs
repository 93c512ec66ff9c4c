//! The synchronous data commands (`nbd_pread`, `nbd_pwrite`, `nbd_zero`,
//! ...) and the settings that govern all data commands: strict mode and read
//! buffer initialisation.
//!
//! Every command goes through [`HandleInner::issue`], which checks the flags
//! and queues the command on the engine with its buffers and callbacks; the
//! synchronous forms then poll until that command completes
//! ([`HandleInner::wait_command`]).

use crate::callbacks::{ChunkCallback, ExtentCallback, Owned};
use crate::constants::LIBNBD_CMD_FLAG_MASK;
use crate::constants::{LIBNBD_SHUTDOWN_MASK, LIBNBD_STRICT_MASK};
use crate::engine::RawBuf;
use crate::errors::{check_flags, Error};
use crate::handle::{Handle, HandleInner};
use crate::hooks::CmdCallbacks;
use crate::ptr::{self, OutBuf};
use crate::state::Permitted;
use nbd_proto::client::{Command, CommandKind};
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

/// A data command and what it needs.
pub(crate) enum Op {
    /// Read into the caller's buffer.
    Read(RawBuf),
    /// Write from the caller's buffer.
    Write(RawBuf),
    /// Flush.
    Flush,
    /// Trim this many bytes.
    Trim(u64),
    /// Cache this many bytes.
    Cache(u64),
    /// Write zeroes over this many bytes.
    Zero(u64),
    /// Block status of this many bytes.
    BlockStatus(u64),
}

impl HandleInner {
    /// Queues a data command; returns its cookie. On failure nothing is
    /// queued and the callbacks are released.
    pub(crate) fn issue(
        &mut self,
        op: Op,
        offset: u64,
        flags: u32,
        callbacks: CmdCallbacks,
    ) -> Result<u64, Error> {
        Permitted::CONNECTED.check(self.state())?;
        check_flags("flags", flags, LIBNBD_CMD_FLAG_MASK)?;
        // The LIBNBD_CMD_FLAG_* bits are the protocol's NBD_CMD_FLAG_* bits.
        let f = flags as u16;
        let hooks = callbacks.boxed();
        let simple = |kind, len| Command::new(kind, offset, len).with_flags(f);
        let cookie = match op {
            Op::Read(buf) => self.engine.submit(
                simple(CommandKind::Read, buf.len as u64),
                Some(buf),
                None,
                hooks,
            ),
            Op::Write(buf) => self.engine.submit_write(buf, offset, f, hooks),
            Op::Flush => self.engine.submit(
                Command::new(CommandKind::Flush, 0, 0).with_flags(f),
                None,
                None,
                hooks,
            ),
            Op::Trim(n) => self
                .engine
                .submit(simple(CommandKind::Trim, n), None, None, hooks),
            Op::Cache(n) => self
                .engine
                .submit(simple(CommandKind::Cache, n), None, None, hooks),
            Op::Zero(n) => {
                self.engine
                    .submit(simple(CommandKind::WriteZeroes, n), None, None, hooks)
            }
            Op::BlockStatus(n) => {
                self.engine
                    .submit(simple(CommandKind::BlockStatus, n), None, None, hooks)
            }
        }?;
        Ok(cookie)
    }

    /// Polls until `cookie` completes, then retires it: 0, or its error.
    pub(crate) fn wait_command(&mut self, cookie: u64) -> Result<c_int, Error> {
        self.engine.run_until(|e| e.is_complete(cookie))?;
        match self.engine.command_completed(cookie)? {
            true => Ok(0),
            false => Err(Error::Engine {
                errno: libc::EIO,
                message: "the command did not complete".into(),
            }),
        }
    }

    /// Issues a command and waits for it (the synchronous API).
    pub(crate) fn run(
        &mut self,
        op: Op,
        offset: u64,
        flags: u32,
        callbacks: CmdCallbacks,
    ) -> Result<c_int, Error> {
        let cookie = self.issue(op, offset, flags, callbacks)?;
        self.wait_command(cookie)
    }
}

/// A write buffer as the engine holds it until the command completes
/// (`EFAULT` for NULL).
pub(crate) fn write_buffer(buf: *const c_void, count: usize) -> Result<RawBuf, Error> {
    let buf = ptr::required_ptr(buf, "buf")?;
    Ok(RawBuf {
        ptr: buf.as_ptr().cast::<u8>(),
        len: count,
    })
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
    permitted.check(inner.state())?;
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
                let buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                inner.run(Op::Read(buf.raw()), offset, flags, CmdCallbacks::default())
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
                let buf = unsafe { read_buffer(inner, Permitted::CONNECTED, buf, count) }?;
                if chunk.is_null() {
                    return Err(Error::NullPointer {
                        param: "chunk_callback",
                    });
                }
                let cbs = CmdCallbacks {
                    chunk: Some(chunk),
                    ..CmdCallbacks::default()
                };
                inner.run(Op::Read(buf.raw()), offset, flags, cbs)
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
                Permitted::CONNECTED.check(inner.state())?;
                let raw = write_buffer(buf, count)?;
                inner.run(Op::Write(raw), offset, flags, CmdCallbacks::default())
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
                check_flags("flags", flags, LIBNBD_SHUTDOWN_MASK)?;
                inner.shutdown(flags, true)
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
            |inner| inner.run(Op::Flush, 0, flags, CmdCallbacks::default()),
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
            |inner| inner.run(Op::Trim(count), offset, flags, CmdCallbacks::default()),
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
            |inner| inner.run(Op::Cache(count), offset, flags, CmdCallbacks::default()),
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
            |inner| inner.run(Op::Zero(count), offset, flags, CmdCallbacks::default()),
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
                Permitted::CONNECTED.check(inner.state())?;
                if extent.is_null() {
                    return Err(Error::NullPointer {
                        param: "extent_callback",
                    });
                }
                let cbs = CmdCallbacks {
                    extent: Some(extent),
                    ..CmdCallbacks::default()
                };
                inner.run(Op::BlockStatus(count), offset, flags, cbs)
            },
        )
    })
}
