//! The connection engine: one `nbd_proto::client::Client` plus the socket it
//! runs on, the caller buffers and callbacks of every command in flight, and
//! the non-blocking I/O that `nbd_aio_notify_read`/`_write` and the
//! synchronous API's poll loop perform.
//!
//! The socket is driven with non-blocking `recv`/`sendmsg` and, for the
//! synchronous calls, one `poll(2)`, not with mio: libnbd's API hands the
//! descriptor to the caller's own event loop (`nbd_aio_get_fd`), and an
//! epoll instance per handle would cost a descriptor and kernel memory for
//! every idle handle. TLS, once started, sits between the engine and the
//! socket ([`tls`]).
//!
//! Nothing here knows about C callback structs: callers hand in
//! [`CommandHooks`] and [`OptHooks`] objects, whose `Drop` is where a C
//! callback's `.free` runs.

mod cookie_hash;
mod done;
mod size;
pub(crate) mod tls;
pub(crate) mod transport;

use crate::callbacks::NbdExtent;
use cookie_hash::CookieHashMap;
use done::{Done, DoneList};
use nbd_proto::client::{
    errno, ChunkKind, Client, Command, CommandKind, Config, Event, Payload, RecvTarget, Segment,
    State,
};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// `LIBNBD_READ_DATA`, `_HOLE`, `_ERROR`: the status given to chunk callbacks.
pub(crate) const READ_DATA: u32 = 1;
/// A hole.
pub(crate) const READ_HOLE: u32 = 2;
/// An error at an offset.
pub(crate) const READ_ERROR: u32 = 3;

/// `LIBNBD_AIO_DIRECTION_READ` / `_WRITE`.
pub(crate) const DIRECTION_READ: u32 = 1;
/// Waiting to write.
pub(crate) const DIRECTION_WRITE: u32 = 2;

/// Callbacks of one command. Dropping the object releases them (`.free`).
pub(crate) trait CommandHooks: Send {
    /// A piece of a structured read: `subbuf` is inside the caller's buffer.
    fn chunk(
        &mut self,
        _subbuf: *const u8,
        _count: usize,
        _offset: u64,
        _status: u32,
        _error: &mut i32,
    ) -> i32 {
        0
    }
    /// Whether the extents go to [`CommandHooks::extent64`] (64-bit
    /// entries) rather than [`CommandHooks::extent`].
    fn wide(&self) -> bool {
        false
    }
    /// Extents for one context, 64-bit (`nbd_extent64_callback`).
    fn extent64(
        &mut self,
        _context: &CString,
        _offset: u64,
        _entries: &mut [NbdExtent],
        _error: &mut i32,
    ) -> i32 {
        0
    }
    /// Extents for one context, as (length, flags) pairs.
    fn extent(
        &mut self,
        _context: &CString,
        _offset: u64,
        _entries: &mut [u32],
        _error: &mut i32,
    ) -> i32 {
        0
    }
    /// The command finished; return 1 to retire it at once.
    fn complete(&mut self, _error: &mut i32) -> i32 {
        0
    }
}

/// Callbacks of an option issued in opt mode.
pub(crate) trait OptHooks: Send {
    /// An export from `NBD_OPT_LIST`.
    fn export(&mut self, _name: &str, _description: &str) -> i32 {
        0
    }
    /// A context from `NBD_OPT_LIST_META_CONTEXT`.
    fn context(&mut self, _name: &str) -> i32 {
        0
    }
    /// The option finished.
    fn complete(&mut self, _error: &mut i32) -> i32 {
        0
    }
}

/// The traffic counters of `nbd_stats_*`: bytes as the NBD protocol sees
/// them (before TLS encryption), and protocol messages (options and
/// requests sent; the greeting, simple replies and reply chunks received).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Bytes sent.
    pub(crate) bytes_sent: u64,
    /// Options and requests sent.
    pub(crate) chunks_sent: u64,
    /// Bytes received.
    pub(crate) bytes_received: u64,
    /// Messages received.
    pub(crate) chunks_received: u64,
}

/// What a 32-bit extent callback gets for a length above 32 bits: the
/// largest multiple of 64 MiB that fits (libnbd's value); later extents
/// of that reply are left out.
pub(crate) const TRUNCATED_EXTENT: u32 = !(64 * 1024 * 1024 - 1);

/// Narrows 64-bit extents for a 32-bit `nbd_extent_callback`, as libnbd
/// does: a length above 32 bits becomes [`TRUNCATED_EXTENT`] and ends the
/// list; flags above 32 bits end the list before that extent, unless it is
/// the first, which is then passed with flags 0 and the second value is
/// true (the command fails with `EOVERFLOW`).
pub(crate) fn narrow_extents(extents: &[nbd_proto::wire::reply::Extent]) -> (Vec<u32>, bool) {
    let mut entries = Vec::with_capacity(extents.len() * 2);
    let mut overflow = false;
    for (i, e) in extents.iter().enumerate() {
        let (length, truncated) = match u32::try_from(e.length) {
            Ok(l) => (l, false),
            Err(_) => (TRUNCATED_EXTENT, true),
        };
        let flags = match u32::try_from(e.flags) {
            Ok(f) => f,
            Err(_) if i == 0 => {
                overflow = true;
                entries.extend([length, 0]);
                break;
            }
            Err(_) => break,
        };
        entries.extend([length, flags]);
        if truncated {
            break;
        }
    }
    (entries, overflow)
}

/// A caller's buffer, valid until the command completes (libnbd's contract).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawBuf {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
}

// SAFETY: the buffer belongs to the C caller, who guarantees it stays valid
// until the command completes; the engine only touches it under the handle lock.
unsafe impl Send for RawBuf {}

struct Cmd {
    offset: u64,
    read: Option<RawBuf>,
    write: Option<RawBuf>,
    hooks: Option<Box<dyn CommandHooks>>,
    error: i32,
    /// The command's name in messages ("write").
    name: &'static str,
    /// A fixed explanation of `error`, if it is more than "command failed".
    detail: Option<&'static str>,
}

impl Cmd {
    /// libnbd's rule for a mid-command callback's result: -1 fails the
    /// command (unless it already failed) with the `*error` it left, EPROTO
    /// if that is 0.
    fn callback_returned(&mut self, r: i32, err: i32) {
        if r == -1 && self.error == 0 {
            self.error = if err != 0 { err } else { libc::EPROTO };
        }
    }
}

/// The name libnbd's messages give a command.
fn command_name(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Read => "read",
        CommandKind::Write => "write",
        CommandKind::Flush => "flush",
        CommandKind::Trim => "trim",
        CommandKind::Cache => "cache",
        CommandKind::WriteZeroes => "zero",
        CommandKind::BlockStatus => "block-status",
        CommandKind::Disconnect => "disconnect",
    }
}

struct UserOpt {
    /// The option whose completion ends the user's request.
    option: u32,
    hooks: Option<Box<dyn OptHooks>>,
    count: i32,
}

/// Result of the last opt-mode request, for the synchronous `nbd_opt_*`.
#[derive(Debug, Clone)]
pub(crate) struct OptResult {
    pub(crate) error: i32,
    pub(crate) message: String,
    pub(crate) count: i32,
}

/// How an engine failure is reported: errno and message.
#[derive(Debug, Clone)]
pub(crate) struct EngineError {
    pub(crate) errno: i32,
    pub(crate) message: String,
}

impl EngineError {
    pub(crate) fn new(errno: i32, message: impl Into<String>) -> Self {
        EngineError {
            errno,
            message: message.into(),
        }
    }

    /// A failed system call: the message is `what` alone, since the
    /// errno's text is appended where the message reaches C (errors.rs),
    /// as libnbd formats it (`connect: Connection refused`). An error
    /// without an errno keeps its own text and reports `EIO`.
    pub(crate) fn io(e: &io::Error, what: &str) -> Self {
        match e.raw_os_error() {
            Some(errno) => EngineError::new(errno, what),
            None => EngineError::new(libc::EIO, format!("{what}: {e}")),
        }
    }

    /// Why the protocol client died, as errno and message.
    pub(crate) fn from_protocol(why: &nbd_proto::client::ProtocolError) -> Self {
        match why {
            nbd_proto::client::ProtocolError::Transport { op, errno } => {
                EngineError::new(*errno, *op)
            }
            other => EngineError::new(other.errno(), other.to_string()),
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("state", &self.state())
            .field("fd", &self.fd())
            .field("in_flight", &self.cmds.len())
            .field("done", &self.done.len())
            .finish_non_exhaustive()
    }
}

/// One connection.
pub(crate) struct Engine {
    config: Config,
    client: Option<Client>,
    fd: Option<OwnedFd>,
    /// A non-blocking connect in progress.
    pending: Option<transport::Pending>,
    child: Option<transport::Child>,
    activation_dir: Option<PathBuf>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    cmds: CookieHashMap<Cmd>,
    done: DoneList,
    user_opt: Option<UserOpt>,
    opt_result: Option<OptResult>,
    dead: Option<EngineError>,
    /// Whether `dead` is a failed system call of the transport (reset,
    /// broken pipe), which the synchronous calls report as theirs.
    dead_in_transport: bool,
    /// Commands in flight whose read buffer is [`LARGE_READ`] or more.
    large_reads: usize,
    /// TLS settings, when the handle may use TLS.
    tls_options: Option<tls::TlsOptions>,
    /// The TLS session, from the server's STARTTLS acknowledgement on.
    tls: Option<tls::TlsSession>,
    /// The handle is being closed: callbacks are released, not called
    /// (libnbd: the status of unretired commands is lost on close).
    closing: bool,
    /// Protocol bytes sent (before TLS), for `nbd_stats_bytes_sent`.
    bytes_sent: u64,
    /// Protocol bytes received (after TLS), for `nbd_stats_bytes_received`.
    bytes_received: u64,
}

/// Receive size for replies when no large read is in flight: many small
/// replies (and their payloads) per `recv`.
const RBUF: usize = 64 * 1024;

/// Receive size while a large read is in flight: its payload should go
/// straight into the caller's buffer, not through ours (a copy more), so
/// only a little more than a header is read ahead.
const RBUF_LARGE_READS: usize = 4 * 1024;

/// A read of at least this many bytes counts as large (see [`RBUF_LARGE_READS`]).
const LARGE_READ: usize = 32 * 1024;

/// Bytes gathered for one `sendmsg` (beyond the segment that reaches it): about
/// what a socket buffer takes at once. Gathering the whole queue (up to 64
/// iovecs) for every call cost user time and sent nothing more.
const SEND_BATCH: usize = 256 * 1024;

impl Engine {
    /// A fresh, unconnected engine.
    pub(crate) fn new() -> Self {
        Engine {
            config: Config::default(),
            client: None,
            fd: None,
            pending: None,
            child: None,
            activation_dir: None,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            cmds: CookieHashMap::default(),
            done: DoneList::default(),
            user_opt: None,
            opt_result: None,
            dead: None,
            dead_in_transport: false,
            large_reads: 0,
            tls_options: None,
            tls: None,
            closing: false,
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    /// The traffic so far (`nbd_stats_*`).
    pub(crate) fn stats(&self) -> Stats {
        let (chunks_sent, chunks_received) = self
            .client
            .as_ref()
            .map_or((0, 0), |c| (c.chunks_sent(), c.chunks_received()));
        Stats {
            bytes_sent: self.bytes_sent,
            chunks_sent,
            bytes_received: self.bytes_received,
            chunks_received,
        }
    }

    /// Sets the client-side checks (`nbd_proto::client::strict` bits) that
    /// the next commands go through; strict mode may change at any time.
    pub(crate) fn set_strict(&mut self, strict: u32) {
        if let Some(c) = self.client.as_mut() {
            c.config_mut().strict = strict;
        }
    }

    /// The protocol client, once connected.
    pub(crate) fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// Why the connection died, if it did.
    pub(crate) fn death(&self) -> Option<&EngineError> {
        self.dead.as_ref()
    }

    /// Why the connection died, if a system call of the transport failed
    /// (`recv: Connection reset by peer`).
    pub(crate) fn transport_death(&self) -> Option<&EngineError> {
        self.dead.as_ref().filter(|_| self.dead_in_transport)
    }

    /// The libnbd-level state.
    pub(crate) fn state(&self) -> Option<State> {
        if self.dead.is_some() {
            return Some(State::Dead);
        }
        if self.pending.is_some() {
            return Some(State::Connecting);
        }
        self.client.as_ref().map(|c| c.state())
    }

    /// The socket, for `nbd_aio_get_fd`.
    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.pending
            .as_ref()
            .map(|p| p.fd.as_raw_fd())
            .or_else(|| self.fd.as_ref().map(|f| f.as_raw_fd()))
    }

    /// `LIBNBD_AIO_DIRECTION_*` bits.
    pub(crate) fn direction(&self) -> u32 {
        if let Some(p) = &self.pending {
            return if p.in_progress { DIRECTION_WRITE } else { 0 };
        }
        let Some(c) = &self.client else { return 0 };
        if self.dead.is_some() {
            return 0;
        }
        let Some(t) = &self.tls else {
            let mut d = 0;
            if c.wants_read() {
                d |= DIRECTION_READ;
            }
            if c.wants_write() {
                d |= DIRECTION_WRITE;
            }
            return d;
        };
        if t.handshaking() {
            return t.handshake_waits();
        }
        // TLS may need the other direction to finish a read or a write.
        let mut d = 0;
        if c.wants_read() {
            d |= match t.read_waits() {
                0 => DIRECTION_READ,
                w => w,
            };
        }
        if c.wants_write() {
            d |= match t.write_waits() {
                0 => DIRECTION_WRITE,
                w => w,
            };
        }
        d
    }

    /// Sets what TLS, if the server agrees to start it, will use.
    pub(crate) fn set_tls_options(&mut self, opts: Option<tls::TlsOptions>) {
        self.tls_options = opts;
    }

    /// Forgets the metadata contexts selected so far (`nbd_set_export_name`
    /// while negotiating).
    pub(crate) fn forget_meta_contexts(&mut self) {
        if let Some(c) = self.client.as_mut() {
            c.forget_meta_contexts();
        }
    }

    /// Whether TLS settings were given (the handle's TLS mode is not
    /// `LIBNBD_TLS_DISABLE`, or `nbd_opt_starttls` supplied them).
    pub(crate) fn has_tls_options(&self) -> bool {
        self.tls_options.is_some()
    }

    // ----- connecting -----

    /// Starts a connection on a socket that may still be connecting.
    pub(crate) fn start(
        &mut self,
        config: Config,
        pending: transport::Pending,
    ) -> Result<(), EngineError> {
        self.config = config;
        if pending.in_progress {
            self.pending = Some(pending);
            Ok(())
        } else {
            self.attach(pending.fd);
            Ok(())
        }
    }

    /// Starts a connection on an already connected socket.
    pub(crate) fn start_connected(&mut self, config: Config, fd: OwnedFd) {
        self.config = config;
        self.attach(fd);
    }

    /// The process ID of the connection's child process, if it has one
    /// (`nbd_get_subprocess_pid`).
    pub(crate) fn child_pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Records the child process of the connection.
    pub(crate) fn set_child(&mut self, child: transport::Child, dir: Option<PathBuf>) {
        self.child = Some(child);
        self.activation_dir = dir;
    }

    fn attach(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
        self.client = Some(Client::new(self.config.clone()));
    }

    /// Completes a pending non-blocking connect once the socket is writable.
    fn finish_connect(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        match transport::connect_result(&p.fd) {
            Ok(()) => self.attach(p.fd),
            Err(e) => {
                if p.fallbacks.is_empty() {
                    self.fail(EngineError::io(&e, "connect"));
                } else {
                    let rest = std::mem::take(&mut p.fallbacks);
                    match transport::connect_addrs(rest) {
                        Ok(next) => {
                            if next.in_progress {
                                self.pending = Some(next);
                            } else {
                                self.attach(next.fd);
                            }
                        }
                        Err(e) => self.fail(EngineError::io(&e, "connect")),
                    }
                }
            }
        }
    }

    /// Records that starting the connection failed: the handle is dead.
    pub(crate) fn fail_start(&mut self, e: EngineError) {
        self.pending = None;
        self.fail(e);
    }

    fn fail(&mut self, e: EngineError) {
        if self.dead.is_none() {
            self.dead = Some(e.clone());
        }
        if let Some(c) = self.client.as_mut() {
            c.handle_io_error(e.message);
        }
        self.process_events();
    }

    // ----- commands -----

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
        let offset = cmd.offset;
        let name = command_name(cmd.kind);
        let large = read.is_some_and(|b| b.len >= LARGE_READ);
        // Output still queued means the last send found the socket full:
        // the caller polls for POLLOUT, so a send now would only say EAGAIN.
        let send_now = c.pending_output() == 0;
        let cookie = c
            .submit(cmd)
            .map_err(|e| EngineError::new(e.errno(), e.to_string()))?;
        self.cmds.insert(
            cookie,
            Cmd {
                offset,
                read,
                write,
                hooks,
                error: 0,
                name,
                detail: None,
            },
        );
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
        self.cmds.len()
    }

    /// `nbd_aio_command_completed`: `Ok(true)` and retired if it completed
    /// successfully, `Ok(false)` if still in flight or unknown (never
    /// issued, negative, or already retired: libnbd 1.24 answers 0 for
    /// those too), `Err` if it failed (now retired) or the cookie is 0.
    pub(crate) fn command_completed(&mut self, cookie: u64) -> Result<bool, EngineError> {
        if let Some(d) = self.done.take(cookie) {
            if d.error == 0 {
                return Ok(true);
            }
            // libnbd's text; errors.rs appends the strerror.
            let what = d.detail.unwrap_or("command failed");
            return Err(EngineError::new(d.error, format!("{}: {what}", d.name)));
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
        !self.cmds.contains_key(&cookie)
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
        c.shutdown()
            .map_err(|e| EngineError::new(e.errno(), e.to_string()))?;
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

    // ----- opt mode -----

    /// Issues an opt-mode request through `issue`, remembering `hooks` until
    /// `final_option` completes.
    pub(crate) fn start_opt(
        &mut self,
        final_option: u32,
        hooks: Option<Box<dyn OptHooks>>,
        issue: impl FnOnce(&mut Client) -> Result<(), nbd_proto::client::SubmitError>,
    ) -> Result<(), EngineError> {
        let Some(c) = self.client.as_mut() else {
            return Err(EngineError::new(
                libc::ENOTCONN,
                "invalid state: the handle is not connected",
            ));
        };
        if c.state() != State::Negotiating {
            return Err(EngineError::new(
                libc::EINVAL,
                "invalid state: the handle must be negotiating",
            ));
        }
        issue(c).map_err(|e| EngineError::new(e.errno(), e.to_string()))?;
        self.opt_result = None;
        self.user_opt = Some(UserOpt {
            option: final_option,
            hooks,
            count: 0,
        });
        self.notify_write();
        Ok(())
    }

    /// The result of the last opt-mode request, once finished.
    pub(crate) fn take_opt_result(&mut self) -> Option<OptResult> {
        self.opt_result.take()
    }

    /// Whether an opt-mode request is still running.
    pub(crate) fn opt_running(&self) -> bool {
        self.user_opt.is_some()
    }

    // ----- I/O -----

    /// Reads what is available, feeding the client; never blocks.
    pub(crate) fn notify_read(&mut self) {
        if self.pending.is_some() {
            return;
        }
        // A recv that returned less than asked for emptied the socket: the
        // next one would only say EAGAIN, so once the bytes in hand are used
        // up, stop and let the caller poll (one system call less per batch).
        let mut drained = false;
        // Whether this call has read anything yet.
        let mut got_input = false;
        loop {
            if self.tls.as_ref().is_some_and(|t| t.handshaking()) {
                if !self.drive_handshake() {
                    break;
                }
                drained = false;
                continue;
            }
            let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
                return;
            };
            let Some(client) = self.client.as_mut() else {
                return;
            };
            if matches!(client.state(), State::Dead | State::Closed) {
                break;
            }
            match client.recv_target() {
                RecvTarget::Payload {
                    cookie,
                    buf_offset,
                    len,
                } => {
                    let Some(buf) = self.cmds.get(&cookie).and_then(|c| c.read) else {
                        client.handle_io_error(
                            "internal error: payload for a command without a buffer",
                        );
                        break;
                    };
                    let off = buf_offset as usize;
                    if off > buf.len || len > buf.len - off {
                        client.handle_io_error("internal error: payload outside its buffer");
                        break;
                    }
                    // SAFETY: off + len is inside the caller's buffer (checked above),
                    // which stays valid until the command completes.
                    let dst = unsafe { buf.ptr.add(off) };
                    if self.rstart < self.rend {
                        let n = len.min(self.rend - self.rstart);
                        // SAFETY: copies n bytes from our buffer to the checked destination.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                self.rbuf.as_ptr().add(self.rstart),
                                dst,
                                n,
                            )
                        };
                        self.rstart += n;
                        client.handle_payload(n);
                    } else if drained {
                        break;
                    } else {
                        // SAFETY: off + len is inside the caller's buffer (checked above).
                        match unsafe { recv(&mut self.tls, fd, dst, len) } {
                            Recv::Data(n) => {
                                got_input = true;
                                self.bytes_received += n as u64;
                                // (TLS reads until OpenSSL says it needs more.)
                                drained = n < len && self.tls.is_none();
                                client.handle_payload(n);
                            }
                            Recv::Eof => client.handle_eof(),
                            Recv::Again => break,
                            Recv::Failed(e) => transport_failed(client, "recv", &e),
                        }
                    }
                }
                RecvTarget::Control => {
                    if self.rstart < self.rend {
                        let n = client.handle_input(&self.rbuf[self.rstart..self.rend]);
                        self.rstart += n;
                        if n == 0 {
                            // The client stopped (TLS, end of connection).
                            break;
                        }
                    } else if drained || (got_input && client.state() == State::Ready) {
                        // Ready after reading the replies: none is due, so
                        // another recv would only say EAGAIN (at QD1, one
                        // per request). A call that has read nothing yet
                        // does read: the caller's poll saw the socket
                        // readable, which in Ready means the server hung up
                        // or sent something unasked, and either must be seen.
                        break;
                    } else {
                        self.rstart = 0;
                        self.rend = 0;
                        // Allocated on demand (and dropped when idle), so an
                        // idle handle costs no receive buffer.
                        self.rbuf.clear();
                        let want = if self.large_reads > 0 {
                            RBUF_LARGE_READS
                        } else {
                            RBUF
                        };
                        self.rbuf.reserve(want);
                        // SAFETY: rbuf has capacity for `want` bytes; recv
                        // writes at most that many.
                        match unsafe { recv(&mut self.tls, fd, self.rbuf.as_mut_ptr(), want) } {
                            Recv::Data(n) => {
                                self.bytes_received += n as u64;
                                // SAFETY: recv initialised the first n bytes.
                                unsafe { self.rbuf.set_len(n) };
                                self.rend = n;
                                got_input = true;
                                drained = n < want && self.tls.is_none();
                            }
                            Recv::Eof => client.handle_eof(),
                            Recv::Again => break,
                            Recv::Failed(e) => transport_failed(client, "recv", &e),
                        }
                    }
                }
            }
            self.process_events();
        }
        self.process_events();
        if self.rstart == self.rend && self.cmds.is_empty() {
            self.rbuf = Vec::new();
        }
        // Answer at once (next option, client flags) rather than after a
        // poll; and a TLS write that waited for input may go on now.
        if self.client.as_ref().is_some_and(|c| c.wants_write()) {
            self.notify_write();
        }
    }

    /// Runs the TLS handshake as far as the socket allows; returns whether
    /// it finished (successfully or not). On success the client goes on
    /// negotiating over TLS.
    fn drive_handshake(&mut self) -> bool {
        let Some(t) = self.tls.as_mut() else {
            return true;
        };
        let result = t.handshake();
        let Some(c) = self.client.as_mut() else {
            return true;
        };
        let finished = match result {
            Ok(false) => false,
            Ok(true) => {
                c.tls_established();
                true
            }
            Err(why) => {
                self.tls = None;
                c.tls_failed(why);
                true
            }
        };
        self.process_events();
        finished
    }

    /// The server acknowledged `NBD_OPT_STARTTLS`: start the handshake.
    fn start_tls(&mut self) {
        let fd = self.fd.as_ref().map(|f| f.as_raw_fd());
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let (Some(fd), Some(opts)) = (fd, self.tls_options.as_ref()) else {
            c.tls_failed("TLS was not requested on this handle");
            return;
        };
        if self.rstart < self.rend {
            // Bytes the server sent in clear after its acknowledgement would
            // otherwise be taken as part of the TLS session (an injection).
            c.tls_failed("the server sent data in clear after accepting STARTTLS");
            return;
        }
        match tls::TlsSession::new(opts, fd) {
            Ok(t) => {
                self.tls = Some(t);
                // The client speaks first: send the hello now.
                self.drive_handshake();
            }
            Err(why) => c.tls_failed(why),
        }
    }

    /// Writes what is pending; never blocks.
    pub(crate) fn notify_write(&mut self) {
        if let Some(p) = &self.pending {
            if p.in_progress {
                self.finish_connect();
            }
            return;
        }
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        if self
            .tls
            .as_ref()
            .is_some_and(|t| t.read_waits() == DIRECTION_WRITE)
        {
            // A TLS read was waiting for the socket to take output.
            self.notify_read();
        }
        loop {
            if self.tls.as_ref().is_some_and(|t| t.handshaking()) {
                if !self.drive_handshake() {
                    break;
                }
                continue;
            }
            let Some(client) = self.client.as_mut() else {
                return;
            };
            if !client.wants_write() {
                break;
            }
            if let Some(t) = self.tls.as_mut().filter(|t| t.committed() > 0) {
                // A TLS write to retry: its bytes come from TLS's own copy,
                // as the commands they belong to may have completed already.
                match t.send(&[]) {
                    Ok(Some(k)) => {
                        self.bytes_sent += k as u64;
                        client.advance_transmit(k);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        transport_failed(client, "send", &e);
                        break;
                    }
                }
                continue;
            }
            let mut iov: [libc::iovec; 64] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 64];
            let mut n = 0;
            let mut offered = 0;
            {
                let mut segs = [Segment::Bytes(&[]); 64];
                let k = client.transmit_segments_upto(&mut segs, SEND_BATCH);
                for s in &segs[..k] {
                    let (base, len) = match *s {
                        Segment::Bytes(b) => (b.as_ptr() as *mut u8, b.len()),
                        Segment::External {
                            cookie,
                            buf_offset,
                            len,
                        } => match self.cmds.get(&cookie).and_then(|c| c.write) {
                            Some(w)
                                if (buf_offset as usize) <= w.len
                                    && len <= w.len - buf_offset as usize =>
                            {
                                // SAFETY: in bounds of the caller's write buffer (checked).
                                (unsafe { w.ptr.add(buf_offset as usize) }, len)
                            }
                            _ => break,
                        },
                    };
                    iov[n] = libc::iovec {
                        iov_base: base as *mut libc::c_void,
                        iov_len: len,
                    };
                    offered += len;
                    n += 1;
                }
            }
            if n == 0 {
                client.handle_io_error("internal error: write payload missing");
                break;
            }
            if let Some(t) = self.tls.as_mut() {
                let mut slices: [&[u8]; 64] = [&[]; 64];
                for (slot, v) in slices.iter_mut().zip(&iov[..n]) {
                    // SAFETY: each iovec describes readable memory (our
                    // queue or a caller's write buffer) that outlives this call.
                    *slot =
                        unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
                }
                match t.send(&slices[..n]) {
                    Ok(Some(k)) => {
                        self.bytes_sent += k as u64;
                        client.advance_transmit(k);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        transport_failed(client, "send", &e);
                        break;
                    }
                }
                continue;
            }
            // SAFETY: msghdr is plain data; zero is valid before filling it.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = n as _;
            // SAFETY: iov holds n valid (pointer, length) pairs that outlive the call.
            let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        transport_failed(client, "send", &e);
                        break;
                    }
                }
            }
            self.bytes_sent += r as u64;
            client.advance_transmit(r as usize);
            if (r as usize) < offered {
                // A short send filled the socket buffer: another call now
                // would only say EAGAIN. The caller polls for POLLOUT.
                break;
            }
        }
        self.process_events();
        // After NBD_CMD_DISC (or NBD_OPT_ABORT) went out, end TLS cleanly.
        if self
            .client
            .as_ref()
            .is_some_and(|c| c.state() == State::Closed)
        {
            if let Some(t) = self.tls.as_mut() {
                t.close_notify();
            }
        }
    }

    /// Waits up to `timeout_ms` (-1: forever) for the socket, then does the
    /// I/O it is ready for. Returns `Ok(true)` if anything happened.
    pub(crate) fn poll(&mut self, timeout_ms: i32) -> Result<bool, EngineError> {
        self.poll2(-1, timeout_ms)
    }

    /// [`Engine::poll`] that also wakes when `extra` (if not negative) is
    /// readable (`nbd_poll2`); that counts as something having happened.
    pub(crate) fn poll2(&mut self, extra: RawFd, timeout_ms: i32) -> Result<bool, EngineError> {
        let Some(fd) = self.fd() else {
            return Err(EngineError::new(
                libc::ENOTCONN,
                "invalid state: the handle is not connected",
            ));
        };
        let dir = self.direction();
        if dir == 0 {
            return Err(EngineError::new(libc::EINVAL, "nothing to wait for"));
        }
        if dir & DIRECTION_READ != 0 && self.tls.as_ref().is_some_and(|t| t.pending() > 0) {
            // Decrypted bytes are waiting in OpenSSL: the socket would not say so.
            self.notify_read();
            return Ok(true);
        }
        let mut events = 0;
        if dir & DIRECTION_READ != 0 {
            events |= libc::POLLIN;
        }
        if dir & DIRECTION_WRITE != 0 {
            events |= libc::POLLOUT;
        }
        // poll(2) skips an entry whose descriptor is negative.
        let mut pfds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                fd: extra,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let nfds = if extra >= 0 { 2 } else { 1 };
        // SAFETY: nfds valid pollfd entries.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, timeout_ms) };
        let pfd = pfds[0];
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(EngineError::io(&e, "poll"));
        }
        if r == 0 {
            return Ok(false);
        }
        if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
            && dir & DIRECTION_READ != 0
        {
            self.notify_read();
        }
        if pfd.revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR) != 0 {
            self.notify_write();
        }
        Ok(true)
    }

    /// Polls until `done` holds; fails when the connection dies first.
    pub(crate) fn run_until(
        &mut self,
        mut done: impl FnMut(&Engine) -> bool,
    ) -> Result<(), EngineError> {
        loop {
            if done(self) {
                return Ok(());
            }
            if let Some(e) = &self.dead {
                return Err(e.clone());
            }
            if self.direction() == 0 {
                return Err(EngineError::new(libc::ENOTCONN, "the connection is closed"));
            }
            self.poll(-1)?;
        }
    }

    // ----- events -----

    fn process_events(&mut self) {
        loop {
            let Some(client) = self.client.as_mut() else {
                return;
            };
            let Some(ev) = client.poll_event() else {
                return;
            };
            self.handle_event(ev);
        }
    }

    fn handle_event(&mut self, ev: Event) {
        match ev {
            Event::ReadChunk {
                cookie,
                buf_offset,
                len,
                kind,
            } => {
                let Some(cmd) = self.cmds.get_mut(&cookie) else {
                    return;
                };
                let Some(buf) = cmd.read else { return };
                let off = buf_offset as usize;
                let len = len as usize;
                if off > buf.len || len > buf.len - off {
                    return;
                }
                // SAFETY: in bounds of the caller's buffer (checked above).
                let sub = unsafe { buf.ptr.add(off) };
                if kind == ChunkKind::Hole {
                    // SAFETY: zeroes len bytes inside the caller's buffer.
                    unsafe { std::ptr::write_bytes(sub, 0, len) };
                }
                let status = if kind == ChunkKind::Hole {
                    READ_HOLE
                } else {
                    READ_DATA
                };
                let offset = cmd.offset + buf_offset;
                call_chunk(cmd, sub, len, offset, status);
            }
            Event::ReadError {
                cookie,
                buf_offset,
                errno: e,
            } => {
                let Some(cmd) = self.cmds.get_mut(&cookie) else {
                    return;
                };
                let Some(buf) = cmd.read else { return };
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
            Event::Extents {
                cookie,
                context_id,
                extents,
            } => {
                let name = self
                    .client
                    .as_ref()
                    .and_then(|c| c.meta_contexts().iter().find(|m| m.id == context_id))
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let Some(cmd) = self.cmds.get_mut(&cookie) else {
                    return;
                };
                let offset = cmd.offset;
                let Some(h) = cmd.hooks.as_mut() else { return };
                let Ok(cname) = CString::new(name) else {
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
                let (mut entries, overflow) = narrow_extents(&extents);
                if overflow && cmd.error == 0 {
                    cmd.error = libc::EOVERFLOW;
                    cmd.detail =
                        Some("block status flags do not fit in 32 bits (use nbd_block_status_64)");
                }
                let mut err = cmd.error;
                let r = h.extent(&cname, offset, &mut entries, &mut err);
                cmd.callback_returned(r, err);
            }
            Event::Complete { cookie, result } => {
                let Some(mut cmd) = self.cmds.remove(&cookie) else {
                    return;
                };
                if cmd.read.is_some_and(|b| b.len >= LARGE_READ) {
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
                let r = match cmd.hooks.as_mut() {
                    Some(h) if !self.closing => h.complete(&mut err),
                    _ => 0,
                };
                // A completion callback that returns -1 with *error set
                // changes the command's result (libnbd 1.24, "Callbacks
                // with int *error parameter"); 0 in *error changes nothing.
                if r == -1 && err != 0 {
                    cmd.error = err;
                    cmd.detail = None;
                }
                let retire = r == 1;
                // Dropping the hooks frees the C callbacks, exactly once.
                drop(cmd.hooks.take());
                if !retire {
                    self.done.push(Done {
                        cookie,
                        error: cmd.error,
                        name: cmd.name,
                        detail: cmd.detail,
                    });
                }
            }
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
            Event::Negotiating | Event::Info(_) | Event::Ready => {}
        }
    }

    fn finish_user_opt(&mut self, errno: i32, msg: &str) {
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

    /// Signals the child process (`nbd_kill_subprocess`). It neither waits
    /// nor touches the connection, as in libnbd: the child is reaped when
    /// the handle closes, so a child that ignores the signal, or one sent
    /// `SIGSTOP`, cannot hang the caller here.
    pub(crate) fn kill_child(&mut self, signal: i32) -> Result<(), EngineError> {
        let Some(child) = self.child.as_ref() else {
            return Err(EngineError::new(libc::ESRCH, "no subprocess exists"));
        };
        let sig = if signal == 0 { libc::SIGTERM } else { signal };
        // SAFETY: kill(2) on our own child, which is not reaped before the
        // engine drops (so the pid cannot have been reused).
        if unsafe { libc::kill(child.pid, sig) } == -1 {
            let e = io::Error::last_os_error();
            return Err(EngineError::io(&e, "kill"));
        }
        Ok(())
    }

    /// Closing the handle: the connection ends, and every callback still
    /// held is released (`.free`) without being called.
    fn close(&mut self) {
        self.closing = true;
        if self.dead.is_none() {
            if let Some(t) = self.tls.as_mut() {
                t.close_notify();
            }
        }
        if let Some(c) = self.client.as_mut() {
            c.abandon();
        }
        self.process_events();
        // Whatever the client no longer knew about is released too.
        self.cmds.clear();
        self.large_reads = 0;
        self.finish_user_opt(libc::ENOTCONN, "the handle was closed");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
        self.fd = None;
        if let Some(child) = self.child.take() {
            // Reap the child once its socket is closed, as libnbd does.
            let mut status = 0;
            // SAFETY: signals and waits for our own child process.
            unsafe {
                if child.kill_on_close {
                    libc::kill(child.pid, libc::SIGTERM);
                }
                libc::waitpid(child.pid, &mut status, 0);
            }
        }
        if let Some(dir) = self.activation_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What one `recv` produced.
pub(crate) enum Recv {
    /// This many bytes arrived.
    Data(usize),
    /// The server closed its side.
    Eof,
    /// Nothing to read now.
    Again,
    /// The socket failed.
    Failed(io::Error),
}

/// One non-blocking read into `dst`: through TLS when a session runs,
/// else a `recv`, retried on `EINTR`.
///
/// # Safety
///
/// `dst` must be writable for `len` bytes.
unsafe fn recv(tls: &mut Option<tls::TlsSession>, fd: RawFd, dst: *mut u8, len: usize) -> Recv {
    if let Some(t) = tls.as_mut() {
        // SAFETY: forwarded from this function's contract.
        return unsafe { t.recv(dst, len) };
    }
    loop {
        // SAFETY: the caller guarantees dst is writable for len bytes.
        let r = unsafe { libc::recv(fd, dst.cast::<libc::c_void>(), len, 0) };
        if r > 0 {
            return Recv::Data(r as usize);
        }
        if r == 0 {
            return Recv::Eof;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Recv::Again,
            _ => return Recv::Failed(e),
        }
    }
}

/// Reports a failed `recv`/`send` to the client, keeping its errno. A
/// `send` that finds the peer gone (`EPIPE`) is the server closing the
/// connection, as an end of file is: the commands in flight fail with
/// `ENOTCONN` and the synchronous call reports its command's error, as
/// libnbd 1.24 does (`read: command failed: Transport endpoint is not
/// connected`), where a reset seen by `recv` is reported as such.
fn transport_failed(client: &mut Client, op: &'static str, e: &io::Error) {
    if op == "send" && e.raw_os_error() == Some(libc::EPIPE) {
        client.handle_eof();
        return;
    }
    match e.raw_os_error() {
        Some(errno) => client.handle_transport_error(op, errno),
        None => client.handle_io_error(format!("{op}: {e}")),
    }
}

fn call_chunk(cmd: &mut Cmd, sub: *mut u8, len: usize, offset: u64, status: u32) {
    if let Some(h) = cmd.hooks.as_mut() {
        let mut err = cmd.error;
        let r = h.chunk(sub, len, offset, status, &mut err);
        cmd.callback_returned(r, err);
    }
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

#[allow(dead_code)]
const _: i32 = errno::EIO;
