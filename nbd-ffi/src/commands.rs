//! The synchronous data commands (`nbd_pread`, `nbd_pwrite`, `nbd_zero`,
//! ...) and the settings that govern all data commands: strict mode and read
//! buffer initialisation.
//!
//! Every command goes through `HandleInner::issue`, which checks the flags
//! and queues the command on the engine with its buffers and callbacks; the
//! synchronous forms then poll until that command completes
//! (`HandleInner::wait_command`).
//!
//! The exports are generated from `api/commands.api`; the functions here
//! are their bodies.

use crate::callbacks::{ChunkCallback, Extent64Callback, ExtentCallback, Owned};
use crate::constants::{
    LIBNBD_CMD_FLAG_DF, LIBNBD_CMD_FLAG_FAST_ZERO, LIBNBD_CMD_FLAG_FUA, LIBNBD_CMD_FLAG_NO_HOLE,
    LIBNBD_CMD_FLAG_PAYLOAD_LEN, LIBNBD_CMD_FLAG_REQ_ONE, LIBNBD_SHUTDOWN_MASK,
    LIBNBD_STRICT_AUTO_FLAG, LIBNBD_STRICT_BOUNDS, LIBNBD_STRICT_COMMANDS, LIBNBD_STRICT_FLAGS,
    LIBNBD_STRICT_PAYLOAD,
};
use crate::engine::RawBuf;
use crate::errors::{check_flags, Cause, Error};
use crate::handle::{HandleInner, Locked};
use crate::hooks::CmdCallbacks;
use crate::ptr::{self, OutBuf};
use crate::state::Permitted;
use nbd_proto::client::{Command, CommandKind, Payload};
use nbd_proto::consts::transmission_flags as tf;
use std::ffi::{c_int, c_void, CStr};

pub use crate::exports::commands::*;

/// A data command and what it needs.
pub(crate) enum Op {
    /// Read into the caller's buffer (`nbd_pread`: no flags).
    Read(RawBuf),
    /// Read with a chunk callback (`nbd_pread_structured`: DF allowed).
    ReadStructured(RawBuf),
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
    /// Block status of this many bytes, for every negotiated context.
    BlockStatus(u64),
    /// Block status of this many bytes for the named contexts only.
    BlockStatusFilter(u64, Vec<String>),
}

impl Op {
    /// The `LIBNBD_CMD_FLAG_*` bits this command takes; others fail with
    /// `EINVAL` under `LIBNBD_STRICT_FLAGS`.
    fn permitted_flags(&self) -> u32 {
        match self {
            Op::Read(_) => 0,
            Op::ReadStructured(_) => LIBNBD_CMD_FLAG_DF,
            Op::Write(_) => LIBNBD_CMD_FLAG_FUA | LIBNBD_CMD_FLAG_PAYLOAD_LEN,
            Op::Flush | Op::Cache(_) => 0,
            Op::Trim(_) => LIBNBD_CMD_FLAG_FUA,
            Op::Zero(_) => {
                LIBNBD_CMD_FLAG_FUA | LIBNBD_CMD_FLAG_NO_HOLE | LIBNBD_CMD_FLAG_FAST_ZERO
            }
            Op::BlockStatus(_) => LIBNBD_CMD_FLAG_REQ_ONE,
            Op::BlockStatusFilter(..) => LIBNBD_CMD_FLAG_REQ_ONE | LIBNBD_CMD_FLAG_PAYLOAD_LEN,
        }
    }

    /// For the commands that take `LIBNBD_CMD_FLAG_PAYLOAD_LEN`: whether
    /// the wire needs it (writes: with extended headers; a context list:
    /// always).
    fn payload_len_needed(&self, extended: bool) -> Option<bool> {
        match self {
            Op::Write(_) => Some(extended),
            Op::BlockStatusFilter(..) => Some(true),
            _ => None,
        }
    }
}

/// `ERANGE`, as libnbd reports a request over a size limit.
fn too_large(what: &str, max: u64) -> Error {
    Error::Engine(Cause::new(
        libc::ERANGE,
        format!("request too large: maximum {what} is {max}"),
    ))
}

impl HandleInner {
    /// Checks `flags` for `op` as libnbd does and returns the flags for the
    /// wire: bits beyond the protocol's 16 always fail, bits the command
    /// does not take fail under `LIBNBD_STRICT_FLAGS`, and
    /// `LIBNBD_CMD_FLAG_PAYLOAD_LEN` is set or cleared to suit the
    /// connection under `LIBNBD_STRICT_AUTO_FLAG` (else it must be right).
    fn command_flags(&self, op: &Op, flags: u32) -> Result<u32, Error> {
        let strict = self.commands.strict_mode;
        check_flags("flags", flags, u32::from(u16::MAX))?;
        if strict & LIBNBD_STRICT_FLAGS != 0 {
            check_flags("flags", flags, op.permitted_flags())?;
        }
        let extended = self.engine.client().is_some_and(|c| c.extended_headers());
        let Some(needed) = op.payload_len_needed(extended) else {
            return Ok(flags);
        };
        if strict & LIBNBD_STRICT_AUTO_FLAG != 0 {
            Ok(if needed {
                flags | LIBNBD_CMD_FLAG_PAYLOAD_LEN
            } else {
                flags & !LIBNBD_CMD_FLAG_PAYLOAD_LEN
            })
        } else if (flags & LIBNBD_CMD_FLAG_PAYLOAD_LEN != 0) != needed {
            Err(Error::Invalid(
                "incorrect setting for PAYLOAD_LEN flag".into(),
            ))
        } else {
            Ok(flags)
        }
    }

    /// The ids of the named contexts, for a filtered block status: it
    /// needs extended headers (`ENOTSUP`), the server's support under
    /// `LIBNBD_STRICT_COMMANDS` (`EINVAL`), and names that were negotiated
    /// (`EINVAL`), as in libnbd.
    fn context_ids(&self, names: &[String]) -> Result<Vec<u32>, Error> {
        let c = self
            .engine
            .client()
            .ok_or(Error::Engine(Cause::NotConnected(
                "the handle is not connected",
            )))?;
        if !c.extended_headers() {
            return Err(Error::Engine(Cause::NotSupported(
                "server does not support extended headers".into(),
            )));
        }
        if self.commands.strict_mode & LIBNBD_STRICT_COMMANDS != 0
            && !c.export().has(tf::BLOCK_STAT_PAYLOAD)
        {
            return Err(Error::Invalid(
                "server does not support the block status payload flag (see \
                 nbd_can_block_status_payload)"
                    .into(),
            ));
        }
        names
            .iter()
            .map(|n| {
                c.meta_context_id(n)
                    .ok_or_else(|| Error::Invalid(format!("context {n} not negotiated")))
            })
            .collect()
    }

    /// Queues a data command; returns its cookie. On failure nothing is
    /// queued and the callbacks are released.
    pub(crate) fn issue(
        &mut self,
        op: Op,
        offset: u64,
        flags: u32,
        callbacks: CmdCallbacks,
    ) -> Result<u64, Error> {
        let flags = self.command_flags(&op, flags)?;
        let strict = self.commands.strict_mode;
        if let Op::Write(buf) = &op {
            if strict & LIBNBD_STRICT_PAYLOAD != 0 {
                let max = self
                    .engine
                    .client()
                    .map_or(u64::MAX, crate::info::payload_max);
                if buf.len as u64 > max {
                    // libnbd checks the bounds first: a write past the end
                    // is ENOSPC however large it is.
                    let size = self.engine.client().map_or(u64::MAX, |c| c.export().size);
                    let past_end = offset
                        .checked_add(buf.len as u64)
                        .is_none_or(|end| end > size);
                    if strict & LIBNBD_STRICT_BOUNDS != 0 && past_end {
                        return Err(Error::Engine(Cause::new(
                            libc::ENOSPC,
                            "request out of bounds",
                        )));
                    }
                    return Err(too_large("payload size", max));
                }
            }
        }
        // The protocol core does the other checks, with the strict mode in
        // force now; its payload rule is the hard 64 MiB cap on reads and
        // writes, which libnbd applies whatever the strict mode.
        self.engine
            .set_strict(strict | nbd_proto::client::strict::PAYLOAD);
        // The LIBNBD_CMD_FLAG_* bits are the protocol's NBD_CMD_FLAG_* bits.
        let f = flags as u16;
        let hooks = callbacks.boxed();
        let simple = |kind, len| Command::new(kind, offset, len).with_flags(f);
        let cmd = match op {
            Op::Read(buf) | Op::ReadStructured(buf) => {
                let cmd = simple(CommandKind::Read, buf.len as u64);
                return Ok(self.engine.submit(cmd, Some(buf), None, hooks)?);
            }
            Op::Write(buf) => return Ok(self.engine.submit_write(buf, offset, f, hooks)?),
            Op::Flush => Command::new(CommandKind::Flush, 0, 0).with_flags(f),
            Op::Trim(n) => simple(CommandKind::Trim, n),
            Op::Cache(n) => simple(CommandKind::Cache, n),
            Op::Zero(n) => simple(CommandKind::WriteZeroes, n),
            Op::BlockStatus(n) => simple(CommandKind::BlockStatus, n),
            Op::BlockStatusFilter(n, names) => {
                let ids = self.context_ids(&names)?;
                // The core sets PAYLOAD_LEN itself when it sends the list.
                let f = f & !(LIBNBD_CMD_FLAG_PAYLOAD_LEN as u16);
                let mut cmd = Command::new(CommandKind::BlockStatus, offset, n).with_flags(f);
                cmd.payload = Payload::Contexts(ids);
                cmd
            }
        };
        Ok(self.engine.submit(cmd, None, None, hooks)?)
    }
}

impl Locked<'_> {
    /// Polls until `cookie` completes, then retires it: 0, or its error.
    pub(crate) fn wait_command(&mut self, cookie: u64) -> Result<c_int, Error> {
        self.run_until(|e| e.is_complete(cookie))?;
        let result = self.engine.command_completed(cookie);
        if let (Err(_) | Ok(false), Some(death)) = (&result, self.engine.transport_death()) {
            // The transport failed while waiting: as in libnbd, the call
            // reports why (`nbd_pread: recv: Connection reset by peer`).
            return Err(death.clone().into());
        }
        match result? {
            true => Ok(0),
            false => Err(Error::Engine(Cause::new(
                libc::EIO,
                "the command did not complete",
            ))),
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

/// The context names of a filtered block status, as Rust strings.
pub(crate) fn context_names(contexts: &[&CStr]) -> Vec<String> {
    contexts
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect()
}

impl From<&OutBuf> for RawBuf {
    /// A read buffer as the engine holds it until the command completes.
    fn from(buf: &OutBuf) -> Self {
        let (ptr, len) = buf.parts();
        RawBuf { ptr, len }
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

/// `nbd_pread`.
pub(crate) fn pread(
    inner: &mut Locked<'_>,
    buf: OutBuf,
    offset: u64,
    flags: u32,
) -> Result<c_int, Error> {
    inner.run(
        Op::Read(RawBuf::from(&buf)),
        offset,
        flags,
        CmdCallbacks::default(),
    )
}

/// `nbd_pread_structured`.
pub(crate) fn pread_structured(
    inner: &mut Locked<'_>,
    buf: OutBuf,
    offset: u64,
    chunk_callback: Owned<ChunkCallback>,
    flags: u32,
) -> Result<c_int, Error> {
    let cbs = CmdCallbacks {
        chunk: Some(chunk_callback),
        ..CmdCallbacks::default()
    };
    inner.run(Op::ReadStructured(RawBuf::from(&buf)), offset, flags, cbs)
}

/// `nbd_pwrite`.
pub(crate) fn pwrite(
    inner: &mut Locked<'_>,
    buf: RawBuf,
    offset: u64,
    flags: u32,
) -> Result<c_int, Error> {
    inner.run(Op::Write(buf), offset, flags, CmdCallbacks::default())
}

/// `nbd_shutdown`.
pub(crate) fn shutdown(inner: &mut Locked<'_>, flags: u32) -> Result<c_int, Error> {
    check_flags("flags", flags, LIBNBD_SHUTDOWN_MASK)?;
    inner.shutdown(flags, true)
}

/// `nbd_flush`.
pub(crate) fn flush(inner: &mut Locked<'_>, flags: u32) -> Result<c_int, Error> {
    inner.run(Op::Flush, 0, flags, CmdCallbacks::default())
}

/// `nbd_trim`.
pub(crate) fn trim(
    inner: &mut Locked<'_>,
    count: u64,
    offset: u64,
    flags: u32,
) -> Result<c_int, Error> {
    inner.run(Op::Trim(count), offset, flags, CmdCallbacks::default())
}

/// `nbd_cache`.
pub(crate) fn cache(
    inner: &mut Locked<'_>,
    count: u64,
    offset: u64,
    flags: u32,
) -> Result<c_int, Error> {
    inner.run(Op::Cache(count), offset, flags, CmdCallbacks::default())
}

/// `nbd_zero`.
pub(crate) fn zero(
    inner: &mut Locked<'_>,
    count: u64,
    offset: u64,
    flags: u32,
) -> Result<c_int, Error> {
    inner.run(Op::Zero(count), offset, flags, CmdCallbacks::default())
}

/// `nbd_block_status`: 32-bit entries (see [`crate::engine::narrow_extents`]).
pub(crate) fn block_status(
    inner: &mut Locked<'_>,
    count: u64,
    offset: u64,
    extent_callback: Owned<ExtentCallback>,
    flags: u32,
) -> Result<c_int, Error> {
    let cbs = CmdCallbacks {
        extent: Some(extent_callback),
        ..CmdCallbacks::default()
    };
    inner.run(Op::BlockStatus(count), offset, flags, cbs)
}

/// `nbd_block_status_64`.
pub(crate) fn block_status_64(
    inner: &mut Locked<'_>,
    count: u64,
    offset: u64,
    extent64_callback: Owned<Extent64Callback>,
    flags: u32,
) -> Result<c_int, Error> {
    let cbs = CmdCallbacks {
        extent64: Some(extent64_callback),
        ..CmdCallbacks::default()
    };
    inner.run(Op::BlockStatus(count), offset, flags, cbs)
}

/// `nbd_block_status_filter`.
pub(crate) fn block_status_filter(
    inner: &mut Locked<'_>,
    count: u64,
    offset: u64,
    contexts: Vec<&CStr>,
    extent64_callback: Owned<Extent64Callback>,
    flags: u32,
) -> Result<c_int, Error> {
    let cbs = CmdCallbacks {
        extent64: Some(extent64_callback),
        ..CmdCallbacks::default()
    };
    let op = Op::BlockStatusFilter(count, context_names(&contexts));
    inner.run(op, offset, flags, cbs)
}

#[cfg(test)]
mod tests {
    use crate::engine::Stats;
    use crate::handle::Handle;
    use std::ffi::{c_char, CString};

    /// The handle's traffic counters.
    fn stats(h: *mut Handle) -> Stats {
        // SAFETY: h is open.
        let h = unsafe { crate::ptr::handle(h) }.expect("open handle");
        let get = |f: fn(&Stats) -> u64| {
            h.call("stats", String::new, |inner| Ok(f(&inner.engine.stats())))
                .expect("stats")
        };
        Stats {
            bytes_sent: get(|s| s.bytes_sent),
            chunks_sent: get(|s| s.chunks_sent),
            bytes_received: get(|s| s.bytes_received),
            chunks_received: get(|s| s.chunks_received),
        }
    }

    #[test]
    fn traffic_counters_follow_a_real_session() {
        if std::process::Command::new("nbdkit")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("nbdkit is not installed: skipped");
            return;
        }
        // SAFETY: no preconditions.
        let h = unsafe { crate::handle::nbd_create() };
        assert_eq!(stats(h), Stats::default(), "nothing before connecting");
        let args: Vec<CString> = ["nbdkit", "-s", "--exit-with-parent", "memory", "1M"]
            .iter()
            .map(|a| CString::new(*a).unwrap())
            .collect();
        let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: h is open; argv is a NULL-terminated list of C strings.
        let rc = unsafe { crate::connect::nbd_connect_command(h, argv.as_mut_ptr()) };
        assert_eq!(rc, 0);
        let s1 = stats(h);
        // The handshake: options out, the greeting (at least) in, and more
        // bytes than messages each way.
        assert!(
            s1.chunks_sent > 0 && s1.bytes_sent > s1.chunks_sent,
            "{s1:?}"
        );
        assert!(
            s1.chunks_received > 0 && s1.bytes_received > s1.chunks_received,
            "{s1:?}"
        );

        // A write: one request with its 64 KiB out, one reply in.
        let data = vec![9u8; 65536];
        // SAFETY: h is open; data is readable for its length.
        let rc = unsafe { super::nbd_pwrite(h, data.as_ptr().cast(), data.len(), 0, 0) };
        assert_eq!(rc, 0);
        let s2 = stats(h);
        assert!(s2.bytes_sent >= s1.bytes_sent + 65536 + 28, "{s1:?} {s2:?}");
        assert_eq!(s2.chunks_sent, s1.chunks_sent + 1);
        assert_eq!(s2.chunks_received, s1.chunks_received + 1);
        assert!(s2.bytes_received >= s1.bytes_received + 16);

        // A read: its data comes in.
        let mut buf = vec![0u8; 4096];
        // SAFETY: h is open; buf is writable for its length.
        let rc = unsafe { super::nbd_pread(h, buf.as_mut_ptr().cast(), buf.len(), 0, 0) };
        assert_eq!(rc, 0);
        assert_eq!(buf, data[..4096]);
        let s3 = stats(h);
        assert_eq!(s3.chunks_sent, s2.chunks_sent + 1);
        assert!(s3.chunks_received > s2.chunks_received);
        assert!(s3.bytes_received >= s2.bytes_received + 4096 + 16);

        // A flush: one header out (28 or 32 bytes), one reply in.
        // SAFETY: h is open.
        assert_eq!(unsafe { super::nbd_flush(h, 0) }, 0);
        let s4 = stats(h);
        assert!(
            [28, 32].contains(&(s4.bytes_sent - s3.bytes_sent)),
            "{s4:?}"
        );
        assert_eq!(s4.chunks_sent, s3.chunks_sent + 1);
        assert_eq!(s4.chunks_received, s3.chunks_received + 1);

        // NBD_CMD_DISC counts as sent; the counters outlive the connection.
        // SAFETY: h is open.
        assert_eq!(unsafe { super::nbd_shutdown(h, 0) }, 0);
        let s5 = stats(h);
        assert_eq!(s5.chunks_sent, s4.chunks_sent + 1);
        assert!(s5.bytes_sent > s4.bytes_sent);
        // SAFETY: h is open; closed once.
        unsafe { crate::handle::nbd_close(h) };
    }
}
