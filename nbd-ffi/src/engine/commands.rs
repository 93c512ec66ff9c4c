//! The commands: the caller's buffer and hooks of each command, which the
//! protocol client keeps with the command in flight ([`super::ProtoClient`]:
//! no table of our own) and hands back on completion; submission and
//! retirement.

use super::{CommandHooks, Engine, EngineError, LARGE_READ};
use nbd_proto::client::{Command, CommandKind, Payload};

/// A caller's buffer, valid until the command completes (libnbd's contract).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawBuf {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: the buffer belongs to the C caller, who guarantees it stays valid
// until the command completes; the engine only touches it under the handle lock.
unsafe impl Send for RawBuf {}

/// A command in flight: where its reply goes and whom to tell. The
/// protocol client keeps it with the command ([`super::ProtoClient`]).
///
/// Kept small (72 bytes): it moves with every completion event, and a
/// completion event of at most 128 bytes is copied inline, not by `memcpy`.
pub(crate) struct Cmd {
    pub(super) offset: u64,
    /// The caller's buffer: a READ's destination or a WRITE's payload.
    buf: Option<RawBuf>,
    pub(super) hooks: Option<Box<dyn CommandHooks>>,
    pub(super) error: i32,
    pub(super) kind: CommandKind,
    /// A fixed explanation of `error`, if it is more than "command failed".
    pub(super) detail: Option<&'static str>,
}

impl Cmd {
    /// A READ's buffer.
    pub(super) fn read(&self) -> Option<RawBuf> {
        self.buf.filter(|_| self.kind == CommandKind::Read)
    }

    /// A WRITE's payload.
    pub(super) fn write(&self) -> Option<RawBuf> {
        self.buf.filter(|_| self.kind == CommandKind::Write)
    }

    /// The command's name in messages ("write").
    pub(super) fn name(&self) -> &'static str {
        command_name(self.kind)
    }

    /// libnbd's rule for a mid-command callback's result: -1 fails the
    /// command (unless it already failed) with the `*error` it left, EPROTO
    /// if that is 0.
    pub(super) fn callback_returned(&mut self, r: i32, err: i32) {
        if r == -1 && self.error == 0 {
            self.error = if err != 0 { err } else { libc::EPROTO };
        }
    }
}

/// The name libnbd's messages give a command.
pub(super) fn command_name(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Read => "read",
        CommandKind::Write => "write",
        CommandKind::Flush => "flush",
        CommandKind::Trim => "trim",
        CommandKind::Cache => "cache",
        CommandKind::WriteZeroes => "zero",
        CommandKind::BlockStatus => "block-status",
        CommandKind::Disconnect => "disconnect",
        _ => "command",
    }
}

impl Engine {
    /// Queues a command with its buffers and hooks; returns the cookie. On
    /// error nothing is queued and the hooks are dropped (freed).
    pub(crate) fn submit(
        &mut self,
        cmd: Command,
        read: Option<RawBuf>,
        write: Option<RawBuf>,
        hooks: Option<Box<dyn CommandHooks>>,
    ) -> Result<u64, EngineError> {
        let Some(c) = self.client.as_mut() else {
            return Err(EngineError::new(
                libc::ENOTCONN,
                "invalid state: the handle is not connected",
            ));
        };
        let (offset, kind) = (cmd.offset, cmd.kind);
        let large = read.is_some_and(|b| b.len >= LARGE_READ);
        // Output still queued means the last send found the socket full:
        // the caller polls for POLLOUT, so a send now would only say EAGAIN.
        let send_now = c.pending_output() == 0;
        debug_assert!(read.is_none() || write.is_none());
        let data = Cmd {
            offset,
            buf: read.or(write),
            hooks,
            error: 0,
            kind,
            detail: None,
        };
        // A refused command's data comes back and is dropped here.
        let cookie = c
            .submit_with(cmd, data)
            .map_err(|(e, _)| EngineError::Submit(e))?;
        self.large_reads += usize::from(large);
        // Like libnbd, start sending at once (unless blocked, see above).
        if send_now {
            self.notify_write();
        }
        Ok(cookie)
    }

    /// Queues a write whose payload is the caller's buffer.
    pub(crate) fn submit_write(
        &mut self,
        buf: RawBuf,
        offset: u64,
        flags: u16,
        hooks: Option<Box<dyn CommandHooks>>,
    ) -> Result<u64, EngineError> {
        let mut cmd = Command::new(CommandKind::Write, offset, buf.len as u64).with_flags(flags);
        cmd.payload = Payload::External;
        self.submit(cmd, None, Some(buf), hooks)
    }

    /// Commands submitted and not completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.client.as_ref().map_or(0, |c| c.in_flight())
    }

    /// `nbd_aio_command_completed`: `Ok(true)` and retired if it completed
    /// successfully, `Ok(false)` if still in flight or unknown (never
    /// issued, negative, or already retired: libnbd 1.24 answers 0 for
    /// those too), `Err` if it failed (now retired) or the cookie is 0.
    pub(crate) fn command_completed(&mut self, cookie: u64) -> Result<bool, EngineError> {
        // Retiring drops the record, and with it the command's callbacks
        // (`.free` runs now, as in libnbd 1.24).
        if let Some(d) = self.done.take(cookie) {
            if d.error == 0 {
                return Ok(true);
            }
            // libnbd's text; errors.rs appends the strerror.
            return Err(EngineError::Command {
                name: d.name,
                errno: d.error,
                detail: d.detail.unwrap_or("command failed"),
            });
        }
        if cookie == 0 {
            // No command has cookie 0: libnbd refuses it (but answers 0 for
            // any other cookie it does not know).
            return Err(EngineError::new(libc::EINVAL, "invalid aio cookie 0"));
        }
        Ok(false)
    }

    /// Whether `cookie` is no longer in flight.
    pub(crate) fn is_complete(&self, cookie: u64) -> bool {
        self.client
            .as_ref()
            .is_none_or(|c| c.data(cookie).is_none())
    }

    /// Starts a soft disconnect (`NBD_CMD_DISC`, or `NBD_OPT_ABORT` while
    /// negotiating) and begins sending it.
    pub(crate) fn shutdown(&mut self) -> Result<(), EngineError> {
        let Some(c) = self.client.as_mut() else {
            return Err(EngineError::new(
                libc::ENOTCONN,
                "the handle is not connected",
            ));
        };
        c.shutdown().map_err(EngineError::Submit)?;
        self.notify_write();
        Ok(())
    }

    /// `LIBNBD_SHUTDOWN_ABANDON_PENDING`: fails the commands whose request has
    /// not started going out, without sending them.
    pub(crate) fn abandon_unsent(&mut self) {
        let committed = self.tls.as_ref().map_or(0, |t| t.committed());
        if let Some(c) = self.client.as_mut() {
            c.abandon_unsent_after(committed);
        }
        self.process_events();
    }

    /// `nbd_aio_peek_command_completed`: the first completed, unretired cookie.
    pub(crate) fn peek_completed(&self) -> Option<u64> {
        self.done.first()
    }
}
