//! The asynchronous API: `nbd_aio_*` commands, which return a cookie at once
//! and report completion later, and the calls with which a caller drives the
//! handle's socket from its own event loop (`nbd_aio_get_fd`,
//! `nbd_aio_get_direction`, `nbd_aio_notify_*`, `nbd_poll`).
//!
//! The commands are queued with `HandleInner::issue` and start going out
//! at once; the callbacks passed in are kept until the command completes and
//! then released, each `.free` exactly once (mid-command callbacks before
//! the completion callback), also when the call fails before queuing.
//!
//! The exports are generated from `api/aio.api`; the functions here are
//! their bodies.

use crate::callbacks::{
    ChunkCallback, CompletionCallback, Extent64Callback, ExtentCallback, Owned,
};
use crate::commands::{context_names, Op};
use crate::constants::LIBNBD_SHUTDOWN_MASK;
use crate::engine::RawBuf;
use crate::errors::{check_flags, Cause, Error};
use crate::handle::{HandleInner, Locked};
use crate::hooks::CmdCallbacks;
use crate::ptr::OutBuf;
use crate::state::State;
use std::ffi::{c_int, c_uint, CStr};

pub use crate::exports::aio::*;

impl HandleInner {
    /// After I/O driven by the caller: fails if that I/O killed the connection.
    fn after_notify(&mut self) -> Result<c_int, Error> {
        if let Some(e) = self.engine.take_start_error() {
            // A TCP connect failed on every address: newly created again.
            return Err(e.into());
        }
        if self.state() == State::Dead {
            return Err(self.death_error());
        }
        Ok(0)
    }
}

impl Locked<'_> {
    /// `nbd_shutdown` (`wait`) and `nbd_aio_disconnect`: a soft disconnect.
    pub(crate) fn shutdown(&mut self, flags: u32, wait: bool) -> Result<c_int, Error> {
        // The table rows already limit nbd_shutdown to negotiating or
        // connected (libnbd: EINVAL once shut down or dead).
        match self.state() {
            State::Ready | State::Processing | State::Negotiating => {}
            state => return Err(state.refusal("connected with the server, or negotiating")),
        }
        // nbd_shutdown after nbd_aio_disconnect only waits; a second
        // nbd_aio_disconnect fails (EINVAL), as in libnbd 1.24.
        let already = wait && self.engine.client().is_some_and(|c| c.disconnect_sent());
        if flags & crate::constants::LIBNBD_SHUTDOWN_ABANDON_PENDING != 0 {
            self.engine.abandon_unsent();
        }
        if !already {
            self.engine.shutdown()?;
        }
        if wait {
            self.run_until(|e| {
                matches!(
                    e.state(),
                    Some(nbd_proto::client::State::Closed) | Some(nbd_proto::client::State::Dead)
                )
            })?;
        }
        Ok(0)
    }
}

/// A cookie as the C API returns it.
fn cookie(c: Result<u64, Error>) -> Result<i64, Error> {
    c.and_then(|c| {
        i64::try_from(c).map_err(|_| Error::Engine(Cause::Overflow("cookie out of range".into())))
    })
}

/// The callbacks of a command with only a completion callback.
fn completing(completion: Owned<CompletionCallback>) -> CmdCallbacks {
    CmdCallbacks {
        completion: Some(completion),
        ..CmdCallbacks::default()
    }
}

/// `nbd_aio_pread`.
pub(crate) fn aio_pread(
    inner: &mut HandleInner,
    buf: OutBuf,
    offset: u64,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = completing(completion_callback);
    cookie(inner.issue(Op::Read(RawBuf::from(&buf)), offset, flags, cbs))
}

/// `nbd_aio_pread_structured`.
pub(crate) fn aio_pread_structured(
    inner: &mut HandleInner,
    buf: OutBuf,
    offset: u64,
    chunk_callback: Owned<ChunkCallback>,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = CmdCallbacks {
        chunk: Some(chunk_callback),
        ..completing(completion_callback)
    };
    cookie(inner.issue(Op::ReadStructured(RawBuf::from(&buf)), offset, flags, cbs))
}

/// `nbd_aio_pwrite`.
pub(crate) fn aio_pwrite(
    inner: &mut HandleInner,
    buf: RawBuf,
    offset: u64,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = completing(completion_callback);
    cookie(inner.issue(Op::Write(buf), offset, flags, cbs))
}

/// `nbd_aio_disconnect`.
pub(crate) fn aio_disconnect(inner: &mut Locked<'_>, flags: u32) -> Result<c_int, Error> {
    check_flags("flags", flags, LIBNBD_SHUTDOWN_MASK)?;
    inner.shutdown(flags, false)
}

/// `nbd_aio_flush`.
pub(crate) fn aio_flush(
    inner: &mut HandleInner,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = completing(completion_callback);
    cookie(inner.issue(Op::Flush, 0, flags, cbs))
}

/// `nbd_aio_trim`.
pub(crate) fn aio_trim(
    inner: &mut HandleInner,
    count: u64,
    offset: u64,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = completing(completion_callback);
    cookie(inner.issue(Op::Trim(count), offset, flags, cbs))
}

/// `nbd_aio_cache`.
pub(crate) fn aio_cache(
    inner: &mut HandleInner,
    count: u64,
    offset: u64,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = completing(completion_callback);
    cookie(inner.issue(Op::Cache(count), offset, flags, cbs))
}

/// `nbd_aio_zero`.
pub(crate) fn aio_zero(
    inner: &mut HandleInner,
    count: u64,
    offset: u64,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = completing(completion_callback);
    cookie(inner.issue(Op::Zero(count), offset, flags, cbs))
}

/// `nbd_aio_block_status`.
pub(crate) fn aio_block_status(
    inner: &mut HandleInner,
    count: u64,
    offset: u64,
    extent_callback: Owned<ExtentCallback>,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = CmdCallbacks {
        extent: Some(extent_callback),
        ..completing(completion_callback)
    };
    cookie(inner.issue(Op::BlockStatus(count), offset, flags, cbs))
}

/// `nbd_aio_block_status_64`.
pub(crate) fn aio_block_status_64(
    inner: &mut HandleInner,
    count: u64,
    offset: u64,
    extent64_callback: Owned<Extent64Callback>,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = CmdCallbacks {
        extent64: Some(extent64_callback),
        ..completing(completion_callback)
    };
    cookie(inner.issue(Op::BlockStatus(count), offset, flags, cbs))
}

/// `nbd_aio_block_status_filter`.
pub(crate) fn aio_block_status_filter(
    inner: &mut HandleInner,
    count: u64,
    offset: u64,
    contexts: Vec<&CStr>,
    extent64_callback: Owned<Extent64Callback>,
    completion_callback: Owned<CompletionCallback>,
    flags: u32,
) -> Result<i64, Error> {
    let cbs = CmdCallbacks {
        extent64: Some(extent64_callback),
        ..completing(completion_callback)
    };
    let op = Op::BlockStatusFilter(count, context_names(&contexts));
    cookie(inner.issue(op, offset, flags, cbs))
}

/// `nbd_aio_get_fd`.
pub(crate) fn aio_get_fd(inner: &mut HandleInner) -> Result<c_int, Error> {
    not_created(inner, "connection is not in a connected state")?;
    if matches!(inner.state(), State::Closed | State::Dead) {
        // Nothing to poll once the connection is over: libnbd 1.24 has
        // closed its socket by then (EINVAL), ours is kept until
        // nbd_close but not handed out.
        return Err(Error::Engine(Cause::InvalidState(
            "there is no connection to poll: the handle is shut down or dead",
        )));
    }
    inner
        .engine
        .fd()
        .ok_or(inner.state().refusal("connecting, or connected"))
}

/// `nbd_aio_get_direction`: 0 when there is nothing to wait for.
pub(crate) fn aio_get_direction(inner: &mut HandleInner) -> Result<c_uint, Error> {
    Ok(match inner.state() {
        // No socket yet: nothing to poll for.
        State::Created => 0,
        _ => inner.engine.direction(),
    })
}

/// Fails with `EINVAL` (not the `ENOTCONN` of a state check) on a newly
/// created handle, as libnbd 1.24 does for the calls that drive the socket.
fn not_created(inner: &HandleInner, why: &'static str) -> Result<(), Error> {
    match inner.state() {
        State::Created => Err(Error::Engine(Cause::InvalidState(why))),
        _ => Ok(()),
    }
}

/// `nbd_aio_notify_read`.
pub(crate) fn aio_notify_read(inner: &mut HandleInner) -> Result<c_int, Error> {
    not_created(inner, "there is no connection to read from")?;
    inner.engine.notify_read();
    inner.after_notify()
}

/// `nbd_aio_notify_write`.
pub(crate) fn aio_notify_write(inner: &mut HandleInner) -> Result<c_int, Error> {
    not_created(inner, "there is no connection to write to")?;
    inner.engine.notify_write();
    inner.after_notify()
}

/// `nbd_aio_command_completed`.
pub(crate) fn aio_command_completed(inner: &mut HandleInner, cookie: u64) -> Result<c_int, Error> {
    Ok(c_int::from(inner.engine.command_completed(cookie)?))
}

/// `nbd_aio_peek_command_completed`: a completed cookie, 0 while commands
/// are in flight, `EINVAL` when none are.
pub(crate) fn aio_peek_command_completed(inner: &mut HandleInner) -> Result<i64, Error> {
    match inner.engine.peek_completed() {
        Some(c) => cookie(Ok(c)),
        None if in_flight(inner) > 0 => Ok(0),
        None => Err(Error::Engine(Cause::InvalidState(
            "no commands are in flight",
        ))),
    }
}

/// The commands in flight as libnbd counts them: those submitted and not
/// retired, plus `NBD_CMD_DISC` until the server closes the connection.
fn in_flight(inner: &HandleInner) -> usize {
    let disc = inner
        .engine
        .client()
        .is_some_and(|c| c.disconnect_in_flight());
    inner.engine.in_flight() + usize::from(disc)
}

/// `nbd_aio_in_flight`.
pub(crate) fn aio_in_flight(inner: &mut HandleInner) -> Result<c_int, Error> {
    Ok(c_int::try_from(in_flight(inner)).unwrap_or(c_int::MAX))
}

/// `nbd_poll`.
pub(crate) fn poll(inner: &mut Locked<'_>, timeout: c_int) -> Result<c_int, Error> {
    poll2(inner, -1, timeout)
}

/// `nbd_poll2`: [`poll`] that also returns (1) when `fd` is readable.
pub(crate) fn poll2(inner: &mut Locked<'_>, fd: c_int, timeout: c_int) -> Result<c_int, Error> {
    not_created(inner, "nothing to poll for before connecting")?;
    let progressed = inner.poll_once(fd, timeout)?;
    inner.after_notify()?;
    Ok(c_int::from(progressed))
}
