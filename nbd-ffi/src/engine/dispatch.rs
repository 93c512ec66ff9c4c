//! Turning the client's events into callbacks, command results and
//! opt-mode results.

use super::commands::Cmd;
use super::done::Done;
use super::opt::OptResult;
use super::{narrow_extents, Engine, EngineError, LARGE_READ, READ_DATA, READ_ERROR, READ_HOLE};
use crate::callbacks::NbdExtent;
use nbd_proto::client::{Event, Step};
use nbd_proto::wire::reply::Extent;
use std::ffi::CString;

impl Engine {
    pub(super) fn process_events(&mut self) {
        loop {
            let Some(client) = self.client.as_mut() else {
                return;
            };
            // Each step of a reply lends the command's data (its buffers
            // and hooks), which the client keeps with the command.
            let Some(step) = client.poll_step() else {
                if std::mem::take(&mut self.handshake_done) {
                    // An idle connection keeps no buffers sized for the
                    // handshake's messages.
                    client.shrink_idle();
                }
                return;
            };
            match step {
                Step::ReadData {
                    buf_offset,
                    len,
                    data,
                    ..
                } => read_chunk(data, buf_offset, len, READ_DATA),
                Step::ReadHole {
                    buf_offset,
                    len,
                    data,
                    ..
                } => read_chunk(data, buf_offset, len, READ_HOLE),
                Step::ReadError {
                    buf_offset,
                    errno,
                    data,
                    ..
                } => read_error(data, buf_offset, errno),
                Step::Extents {
                    context_name,
                    extents,
                    data,
                    ..
                } => call_extents(data, context_name, &extents),
                Step::Complete {
                    cookie,
                    result,
                    data,
                } => self.complete(cookie, result, data),
                Step::Event(ev) => self.handle_event(ev),
            }
        }
    }

    /// A command completed: its completion callback runs, and its record
    /// (with the callbacks, freed at retirement) waits for
    /// `nbd_aio_command_completed`, unless the callback retired it.
    pub(super) fn complete(
        &mut self,
        cookie: u64,
        result: Result<(), nbd_proto::client::CommandError>,
        mut cmd: Cmd,
    ) {
        if cmd.read().is_some_and(|b| b.len >= LARGE_READ) {
            self.large_reads -= 1;
        }
        if let Err(e) = result {
            // The server's text is not kept (a fixed-size record
            // per command, as in libnbd).
            if cmd.error == 0 {
                cmd.error = e.errno;
            }
        }
        let mut err = cmd.error;
        // Also while the handle closes: libnbd 1.24 calls the completion
        // callbacks of the commands in flight with ENOTCONN then.
        let r = match cmd.hooks.as_mut() {
            Some(h) => h.complete(&mut err),
            None => 0,
        };
        // A completion callback that returns -1 with *error set
        // changes the command's result (libnbd 1.24, "Callbacks
        // with int *error parameter"); 0 in *error changes nothing.
        if r == -1 && err != 0 {
            cmd.error = err;
            cmd.detail = None;
        }
        if r == 1 {
            // Retired by its callback: dropping the hooks frees the C
            // callbacks, exactly once.
            drop(cmd.hooks.take());
            return;
        }
        self.done.push(Done {
            cookie,
            error: cmd.error,
            name: cmd.name(),
            detail: cmd.detail,
            hooks: cmd.hooks.take(),
        });
    }

    pub(super) fn handle_event(&mut self, ev: Event<Cmd>) {
        match ev {
            Event::Export(s) => {
                if let Some(u) = self.user_opt.as_mut() {
                    u.count += 1;
                    if let Some(h) = u.hooks.as_mut() {
                        h.export(&s.name, &s.description);
                    }
                }
            }
            Event::MetaContext(m) => {
                if let Some(u) = self.user_opt.as_mut() {
                    // Only the explicit requests report contexts; those an
                    // nbd_opt_go/nbd_opt_info selects on the way do not.
                    if matches!(
                        u.option,
                        nbd_proto::consts::opt::LIST_META_CONTEXT
                            | nbd_proto::consts::opt::SET_META_CONTEXT
                    ) {
                        u.count += 1;
                        if let Some(h) = u.hooks.as_mut() {
                            h.context(&m.name);
                        }
                    }
                }
            }
            Event::OptionDone { option, result } => {
                let finishes = self.user_opt.as_ref().is_some_and(|u| {
                    u.option == option
                        || (option == nbd_proto::consts::opt::GO
                            && u.option == nbd_proto::consts::opt::GO)
                });
                // GO's fallback to EXPORT_NAME also reports as GO.
                if finishes {
                    let mut u = self.user_opt.take().expect("checked above");
                    let (mut err, message) = match &result {
                        Ok(()) => (0, String::new()),
                        Err(f) => (
                            refusal_errno(option, f),
                            format!("server replied with error to {}: {f}", opt_label(option)),
                        ),
                    };
                    if let Some(h) = u.hooks.as_mut() {
                        h.complete(&mut err);
                    }
                    drop(u.hooks.take());
                    self.opt_result = Some(OptResult {
                        error: err,
                        message,
                        count: u.count,
                    });
                }
            }
            Event::Closed => self.finish_user_opt(libc::ENOTCONN, "the connection closed"),
            Event::Dead(why) => {
                if self.dead.is_none() {
                    self.dead = Some(EngineError::from_protocol(&why));
                    self.dead_in_transport =
                        matches!(why, nbd_proto::client::ProtocolError::Transport { .. });
                }
                self.finish_user_opt(libc::ENOTCONN, "the connection died");
            }
            Event::StartTls => self.start_tls(),
            // The handshake is over: what the client kept for it is
            // released once its events are dispatched (see process_events).
            Event::Ready | Event::Negotiating => self.handshake_done = true,
            // Command events come as steps (see process_events).
            _ => {}
        }
    }

    pub(super) fn finish_user_opt(&mut self, errno: i32, msg: &str) {
        if let Some(mut u) = self.user_opt.take() {
            let mut err = if u.option == nbd_proto::consts::opt::ABORT {
                0
            } else {
                errno
            };
            if let Some(h) = u.hooks.as_mut().filter(|_| !self.closing) {
                h.complete(&mut err);
            }
            drop(u.hooks.take());
            self.opt_result = Some(OptResult {
                error: err,
                message: msg.to_string(),
                count: u.count,
            });
        }
    }
}

/// A piece of a read's reply: a hole is zeroed in the caller's buffer,
/// then the chunk callback, if any, sees it.
fn read_chunk(cmd: &mut Cmd, buf_offset: u64, len: u64, status: u32) {
    let Some(buf) = cmd.read() else { return };
    let off = buf_offset as usize;
    let len = len as usize;
    if off > buf.len || len > buf.len - off {
        return;
    }
    // SAFETY: in bounds of the caller's buffer (checked above).
    let sub = unsafe { buf.ptr.add(off) };
    if status == READ_HOLE {
        // SAFETY: zeroes len bytes inside the caller's buffer.
        unsafe { std::ptr::write_bytes(sub, 0, len) };
    }
    let offset = cmd.offset + buf_offset;
    if let Some(h) = cmd.hooks.as_mut() {
        let mut err = cmd.error;
        let r = h.chunk(sub, len, offset, status, &mut err);
        cmd.callback_returned(r, err);
    }
}

/// The server reported an error for part of a read.
fn read_error(cmd: &mut Cmd, buf_offset: u64, e: i32) {
    let Some(buf) = cmd.read() else { return };
    let off = (buf_offset as usize).min(buf.len);
    // SAFETY: off is clamped to the buffer's length.
    let sub = unsafe { buf.ptr.add(off) };
    let offset = cmd.offset + buf_offset;
    if let Some(h) = cmd.hooks.as_mut() {
        let mut err = e;
        let r = h.chunk(sub, 0, offset, READ_ERROR, &mut err);
        cmd.callback_returned(r, err);
    }
}

/// Block status extents for one context, to the 64-bit or the 32-bit
/// extent callback.
fn call_extents(cmd: &mut Cmd, context: &str, extents: &[Extent]) {
    let offset = cmd.offset;
    let Some(h) = cmd.hooks.as_mut() else { return };
    let Ok(cname) = CString::new(context) else {
        return;
    };
    if h.wide() {
        let mut entries: Vec<NbdExtent> = extents
            .iter()
            .map(|e| NbdExtent {
                length: e.length,
                flags: e.flags,
            })
            .collect();
        let mut err = cmd.error;
        let r = h.extent64(&cname, offset, &mut entries, &mut err);
        cmd.callback_returned(r, err);
        return;
    }
    // The 32-bit callback: lengths and flags narrowed as libnbd does.
    let (mut entries, overflow) = narrow_extents(extents);
    if overflow && cmd.error == 0 {
        cmd.error = libc::EOVERFLOW;
        cmd.detail = Some("block status flags do not fit in 32 bits (use nbd_block_status_64)");
    }
    let mut err = cmd.error;
    let r = h.extent(&cname, offset, &mut entries, &mut err);
    cmd.callback_returned(r, err);
}

/// The `*error` an opt-mode completion callback sees when the server
/// refuses `option`, as libnbd 1.24 reports it.
fn refusal_errno(option: u32, f: &nbd_proto::client::OptionFailure) -> i32 {
    use nbd_proto::consts::{opt, rep};
    match option {
        // Refusing to turn a feature on: "not supported", unless the
        // server called the request itself invalid.
        opt::STARTTLS | opt::EXTENDED_HEADERS if f.reply_type == rep::ERR_INVALID => libc::EINVAL,
        opt::STRUCTURED_REPLY
            if matches!(f.reply_type, rep::ERR_INVALID | rep::ERR_EXT_HEADER_REQD) =>
        {
            libc::EINVAL
        }
        opt::STARTTLS | opt::EXTENDED_HEADERS | opt::STRUCTURED_REPLY => libc::ENOTSUP,
        // Any refusal of an explicit context request.
        opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => libc::ENOTSUP,
        _ => f.errno(),
    }
}

fn opt_label(option: u32) -> &'static str {
    nbd_proto::wire::option::opt_name(option)
}
