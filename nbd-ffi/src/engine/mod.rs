//! The connection engine: one `nbd_proto::client::Client` plus the socket it
//! runs on, the caller buffers and callbacks of every command in flight, and
//! the non-blocking I/O that `nbd_aio_notify_read`/`_write` and the
//! synchronous API's waits perform.
//!
//! The socket is driven with non-blocking `recv`/`sendmsg`. How the
//! synchronous calls (and `nbd_poll`) wait for it is `crate::wait`'s
//! business: without the handle lock, and through mio where it fits:
//!
//! * a plain connected socket is waited for edge-triggered, in one
//!   `mio::Poll` (an epoll instance) per *thread* that waits, created on
//!   its first wait, never one per handle: an aio handle driven by the
//!   caller's own loop (`nbd_aio_get_fd` stays an ordinary level-triggered
//!   descriptor for the caller) costs none, and a thread's poller is
//!   closed when the last connection registered in it closes, so closing
//!   every handle leaves no descriptor behind. The socket is registered in
//!   a thread's poller the first time that thread waits on it (one
//!   `epoll_ctl` per connection and thread; another only when a write must
//!   wait too, or when another thread waited on it in between). Edges are
//!   not repeated, so the engine keeps, in four bytes per handle
//!   (`crate::wait::EdgeReg`), what an edge would not say again: input
//!   maybe left unread (a read that filled its buffer), a hang-up seen, the
//!   send buffer full; reads stop on `EAGAIN` or a short read as before,
//!   so a wait costs one `epoll_wait` where it cost one `poll`. Edges of
//!   another socket that reach a thread's poller while it waits for one
//!   are kept for that socket's next wait there.
//! * connecting, TLS (OpenSSL decides which direction it needs) and
//!   `nbd_poll2` with the caller's descriptor (level-triggered by
//!   contract) keep one `poll(2)`.
//! * Connecting itself keeps `socket`/`connect` from libc ([`transport`]):
//!   `mio::net`'s `connect` does not say whether the connect completed
//!   (so every connection would need a `poll` and a `getsockopt` more),
//!   fails a Unix connect whose backlog is full (`EAGAIN`) where libnbd
//!   waits, and takes no raw `sockaddr` (`nbd_aio_connect`) or vsock
//!   address.
//!
//! Measured before keeping it (aio-bench `sync-pread-4k-qd1` on nbdkit
//! memory over a Unix socket; system calls counted as bench/syscalls.sh
//! does, `perf stat` on the syscall tracepoints; a 2-core machine shared
//! with other builds; medians of alternating runs of three builds: poll(2)
//! before issue 12 / poll(2) without the lock / mio):
//!
//! * system calls per synchronous 4 KiB read: 3.74 / 3.72 / 3.71 (5
//!   runs): one `sendmsg`, and one wait (`poll` or `epoll_wait`) per
//!   `recvfrom`, 1.3-1.4 of each (nbdkit sometimes sends a reply in two
//!   pieces), no futex;
//! * reads in 2 s: 57014 / 52161 / 43974 (5 runs, fixed order),
//!   58682 / 63677 / 51810 (9 runs, rotating order), 64314 / 71485 / 74618
//!   (4 runs, CPU per read 10.2 / 9.9 / 8.9 µs): one build's runs spread
//!   from 27000 to 78000, so no difference shows above the noise;
//! * bench/syscalls.sh's rows, whose aio paths this does not change
//!   (the caller's own `poll` loop), before / after, medians of 5
//!   alternating runs: nbdcopy workload 2 2.39 / 2.55, aio QD1 3.62 /
//!   3.59, aio QD64 reads 1.92 / 2.19, writes 1.50 / 1.49 system calls per
//!   request; each row's runs spread as much (QD64 reads 1.47-2.43), and
//!   both builds ran above BENCHMARKS.md's figures on the loaded machine;
//! * 1000 idle connected handles: RSS growth 2.55 / 2.62 / 2.59 KiB per
//!   handle, heap 2545 / 2609 / 2578 bytes per handle: the handle is 1752
//!   bytes (was 1720): the wait state and its condition variable (16 + 8
//!   bytes) and the 4-byte edge state. A thread's poller holds one kernel
//!   `epitem` per socket registered in it while the socket is open.
//!
//! TLS, once started, sits between the engine and the socket ([`tls`]).
//!
//! Nothing here knows about C callback structs: callers hand in
//! [`CommandHooks`] and [`OptHooks`] objects, whose `Drop` is where a C
//! callback's `.free` runs.
//!
//! One concern a file: [`lifecycle`] (connecting, failing, closing, the
//! child process), [`commands`] (each command's buffer and hooks, which
//! the protocol client carries for it as its per-command data: there is no
//! second table here; submission and retirement), [`opt`] (opt-mode requests),
//! [`io`] (the socket: reads, gathered writes, TLS handshake, the wait of
//! the synchronous calls), [`dispatch`] (the client's events turned into
//! callbacks and results), [`hooks`] (what the engine calls back) and
//! [`error`] (how a failure is reported). This file holds the engine's
//! state and its accessors.

mod commands;
mod dispatch;
mod done;
mod error;
mod hooks;
mod io;
mod lifecycle;
mod opt;
mod size;
pub(crate) mod tls;
pub(crate) mod transport;

pub(crate) use commands::Cmd;
pub(crate) use commands::RawBuf;
use done::DoneList;
pub(crate) use error::EngineError;
pub(crate) use hooks::{narrow_extents, CommandHooks, OptHooks};
pub(crate) use io::Recv;
use nbd_proto::client::{Client, Config, State};
pub(crate) use opt::OptResult;
use opt::UserOpt;
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

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("state", &self.state())
            .field("fd", &self.fd())
            .field("in_flight", &self.in_flight())
            .field("done", &self.done.len())
            .finish_non_exhaustive()
    }
}

/// The protocol client, carrying each command's buffers and hooks: the
/// engine's table of commands in flight is the client's own.
pub(crate) type ProtoClient = Client<Cmd>;

/// One connection.
pub(crate) struct Engine {
    /// The client's settings between `start` and the socket being
    /// connected; the client takes them then (boxed: an idle connected
    /// handle pays a pointer, not a second copy).
    config: Option<Box<Config>>,
    client: Option<ProtoClient>,
    fd: Option<OwnedFd>,
    /// A non-blocking connect in progress.
    pending: Option<transport::Pending>,
    child: Option<transport::Child>,
    activation_dir: Option<PathBuf>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
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
    /// The handle is being closed: opt-mode callbacks are released, not
    /// called; commands in flight complete with `ENOTCONN` (libnbd: the
    /// status of unretired commands is lost on close).
    closing: bool,
    /// The handshake (or an opt-mode step) just ended: the client's idle
    /// buffers are released once its events are dispatched.
    handshake_done: bool,
    /// The write side of the connection was shut after `NBD_CMD_DISC`.
    writes_shut: bool,
    /// A TCP connect failed on every address; the handle is newly created
    /// again and this is for the call that saw it to report.
    start_error: Option<EngineError>,
    /// Protocol bytes sent (before TLS), for `nbd_stats_bytes_sent`.
    bytes_sent: u64,
    /// Protocol bytes received (after TLS), for `nbd_stats_bytes_received`.
    bytes_received: u64,
    /// The edge-triggered wait's state of the socket (`crate::wait`):
    /// where it is registered, and what an edge would not repeat (input
    /// maybe left unread, a hang-up seen, the send buffer full).
    pub(crate) edge_reg: crate::wait::EdgeReg,
}

/// A read of at least this many bytes counts as large: while one is in
/// flight, replies are read in small pieces so that its payload goes
/// straight into the caller's buffer ([`io`]).
pub(super) const LARGE_READ: usize = 32 * 1024;

impl Engine {
    /// A fresh, unconnected engine.
    pub(crate) fn new() -> Self {
        Engine {
            config: None,
            client: None,
            fd: None,
            pending: None,
            child: None,
            activation_dir: None,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            done: DoneList::default(),
            user_opt: None,
            opt_result: None,
            dead: None,
            dead_in_transport: false,
            large_reads: 0,
            tls_options: None,
            tls: None,
            closing: false,
            handshake_done: false,
            writes_shut: false,
            start_error: None,
            bytes_sent: 0,
            bytes_received: 0,
            edge_reg: crate::wait::EdgeReg::NONE,
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
    pub(crate) fn client(&self) -> Option<&ProtoClient> {
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
}
