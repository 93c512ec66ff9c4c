//! How calls wait for the server: the synchronous API (`nbd_pread`,
//! `nbd_connect_*`, `nbd_opt_*`, `nbd_shutdown`, ...) and `nbd_poll`.
//!
//! # The lock is not held while waiting
//!
//! A waiting call gives the handle's lock up around the blocking wait
//! (an edge-triggered `epoll_wait` through this thread's `mio::Poll` for a
//! plain connected socket, see `edge` below and the engine's module
//! documentation; `poll(2)` while connecting, for TLS and for `nbd_poll2`'s
//! extra descriptor) and takes it again to do the I/O and re-check its
//! condition, so that
//! other threads' calls on the same handle (`nbd_aio_in_flight`,
//! `nbd_aio_pread`, `nbd_aio_disconnect`, `nbd_shutdown`, ...) go on while
//! one thread is blocked. Callbacks run with the lock held, as before.
//!
//! Several threads may wait on one handle. Only one of them polls the
//! socket at a time (the one that found no other poller); the others wait
//! on the handle's condition variable, which the poller signals (only if
//! someone waits: a wake-up is a system call) once it has done the I/O its
//! wait woke it for (which may have completed their commands); when it
//! leaves, another waiter takes its place. The socket is read by one
//! thread at a time, and no extra descriptor is needed.
//!
//! A waiting thread must not stay blocked when another thread's call ends
//! the connection: after any call that leaves the connection dead or
//! closed while a thread is polling (for example the end of `nbd_shutdown`
//! or a failed command's I/O), the socket is shut down (`shutdown(2)`,
//! `SHUT_RDWR`), which makes it readable (end of file) for the poller.
//! What ends a connection is unchanged from libnbd: the server hanging up
//! (also after `nbd_shutdown`/`nbd_aio_disconnect`), a failure, a child
//! process killed with `nbd_kill_subprocess`, or the timeout below (which
//! wakes pollers the same way). With a server that stops answering and no
//! timeout, `nbd_shutdown` waits as in libnbd (it waits for the server to
//! close); the timeout is the way out. A
//! caller that drives the socket itself (`nbd_aio_notify_read`) while
//! another thread waits in a synchronous call on the same handle takes the
//! waiter's input: do not mix the two on one handle.
//!
//! # The timeout extension
//!
//! `nbdrs_set_timeout` (declared in `libnbd-ext.h`) sets a limit, in
//! milliseconds, on how long the server may make no progress while
//! something from it is due (connecting, the handshake including TLS, an
//! option's reply, the reply of a command in flight): progress is any byte
//! received or sent on the connection. When a waiting call (the synchronous
//! API, or `nbd_poll`/`nbd_poll2`) finds the limit passed, the connection is
//! killed: the call returns -1 with `ETIMEDOUT`, every command in flight
//! completes with `ETIMEDOUT`, and the handle is dead. 0 (the default)
//! turns it off: libnbd's behaviour, waiting forever. A caller driving
//! the socket with its own loop (`nbd_aio_notify_*`) never waits in the
//! library, so the timeout does not apply to it.

use crate::engine::EngineError;
use crate::handle::Locked;
use std::time::{Duration, Instant};

/// The waiting threads and the timeout of one handle.
#[derive(Debug, Default)]
pub(crate) struct WaitState {
    /// A thread is blocked in `poll(2)` on the socket without the lock.
    polling: bool,
    /// Counts the polls that did I/O: a waiting thread that sees it move
    /// knows that something happened.
    epoch: u16,
    /// Threads waiting on the condition variable for the poller (it is
    /// signalled only when there are some: a wake-up is a system call).
    followers: u32,
    /// `nbdrs_set_timeout`, boxed: most handles never set one, and every
    /// idle handle would pay for it.
    timeout: Option<Box<Timeout>>,
}

/// The timeout extension's state.
#[derive(Debug)]
struct Timeout {
    /// The limit in milliseconds (never 0).
    ms: u64,
    /// Since when the server has made no progress (while something is due).
    stalled_since: Option<Instant>,
    /// [`crate::engine::Engine::progress`] when last looked at.
    seen_progress: u64,
}

impl WaitState {
    /// `nbdrs_get_timeout`: the limit in milliseconds, 0 for none.
    pub(crate) fn timeout_ms(&self) -> u64 {
        self.timeout.as_ref().map_or(0, |t| t.ms)
    }

    /// `nbdrs_set_timeout`: 0 turns it off.
    pub(crate) fn set_timeout_ms(&mut self, ms: u64) {
        self.timeout = (ms > 0).then(|| {
            Box::new(Timeout {
                ms,
                stalled_since: None,
                seen_progress: 0,
            })
        });
    }
}

/// How often a thread waiting for the poller also checks the extra
/// descriptor of `nbd_poll2` (it cannot wait on both at once).
const EXTRA_FD_SLICE: Duration = Duration::from_millis(10);

impl Locked<'_> {
    /// Waits until `done` holds; fails when the connection dies first (or
    /// the timeout extension kills it).
    pub(crate) fn run_until(
        &mut self,
        mut done: impl FnMut(&crate::engine::Engine) -> bool,
    ) -> Result<(), EngineError> {
        loop {
            if done(&self.engine) {
                return Ok(());
            }
            if let Some(e) = self.engine.death() {
                return Err(e.clone());
            }
            if self.engine.direction() == 0 {
                return Err(EngineError::new(libc::ENOTCONN, "the connection is closed"));
            }
            let limit = self.stall_limit()?;
            self.wait_once(-1, limit)?;
        }
    }

    /// `nbd_poll2`: waits up to `timeout_ms` (negative: forever) for the
    /// socket (or `extra`, if not negative, to be readable) and does the
    /// I/O; returns whether anything happened.
    pub(crate) fn poll_once(&mut self, extra: i32, timeout_ms: i32) -> Result<bool, EngineError> {
        let deadline = u64::try_from(timeout_ms)
            .ok()
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        loop {
            let stall = self.stall_limit()?;
            let mine = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let limit = match (mine, stall) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let progressed = self.wait_once(extra, limit)?;
            if progressed {
                return Ok(true);
            }
            if self.engine.death().is_some() {
                return Ok(true);
            }
            match deadline {
                Some(d) if Instant::now() >= d => return Ok(false),
                // The stall limit woke it: check it (and go on waiting).
                _ => {}
            }
        }
    }

    /// The time left before the timeout extension fires, if it is on and
    /// something is due; fires it (killing the connection) when none is.
    fn stall_limit(&mut self) -> Result<Option<Duration>, EngineError> {
        let due = self.engine.due();
        let progress = self.engine.progress();
        let Some(t) = self.wait.timeout.as_mut() else {
            return Ok(None);
        };
        if !due {
            t.stalled_since = None;
            return Ok(None);
        }
        let ms = t.ms;
        let now = Instant::now();
        let since = match t.stalled_since {
            Some(since) if progress == t.seen_progress => since,
            _ => {
                t.stalled_since = Some(now);
                t.seen_progress = progress;
                now
            }
        };
        let limit = Duration::from_millis(ms);
        let waited = now.saturating_duration_since(since);
        if waited >= limit {
            t.stalled_since = None;
            self.engine.time_out(ms);
            self.wake_followers();
            return Err(self
                .engine
                .death()
                .cloned()
                .unwrap_or_else(|| EngineError::new(libc::ETIMEDOUT, "timed out")));
        }
        Ok(Some(limit - waited))
    }

    /// One wait: polls the socket without the lock (and does the I/O it is
    /// ready for), or, when another thread polls it already, waits for that
    /// thread to signal. `limit` bounds the wait (`None`: forever). Returns
    /// whether anything happened.
    fn wait_once(&mut self, extra: i32, limit: Option<Duration>) -> Result<bool, EngineError> {
        if self.wait.polling {
            return Ok(self.wait_for_poller(extra, limit));
        }
        let Some((fd, events, dir)) = self.engine.wait_for()? else {
            return Ok(true);
        };
        if extra < 0 && self.engine.edge_waitable() {
            return self.wait_edge(fd, dir, limit);
        }
        let timeout = match limit {
            None => -1,
            // Rounded up: waking a little early would only loop.
            Some(d) => i32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
        };
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
        self.wait.polling = true;
        self.guard = None;
        // SAFETY: nfds valid pollfd entries. The socket stays open while
        // the lock is given up: only nbd_close closes it, and no other
        // thread may close a handle in use.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), nfds, timeout) };
        let err = std::io::Error::last_os_error();
        self.relock();
        self.wait.polling = false;
        let result = if r < 0 {
            if err.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(EngineError::io(&err, "poll"))
            }
        } else if r == 0 {
            Ok(false)
        } else {
            if self.engine.fd() == Some(fd) {
                self.engine.after_poll(dir, pfds[0].revents);
            }
            Ok(true)
        };
        self.wait.epoch = self.wait.epoch.wrapping_add(1);
        // The others re-check their condition; one of them polls next.
        self.wake_followers();
        result
    }

    /// [`Locked::wait_once`] on a plain connected socket: through this
    /// thread's edge-triggered poller ([`edge`]), after the I/O the socket
    /// may be ready for without a new edge.
    fn wait_edge(
        &mut self,
        fd: i32,
        dir: u32,
        limit: Option<Duration>,
    ) -> Result<bool, EngineError> {
        if self.engine.io_without_edge(dir) {
            return Ok(true);
        }
        let mut reg = self.engine.edge_reg.bits();
        self.wait.polling = true;
        self.guard = None;
        let write = dir & crate::engine::DIRECTION_WRITE != 0;
        let r = edge::wait(fd, &mut reg, write, limit);
        self.relock();
        self.wait.polling = false;
        let same_socket = self.engine.fd() == Some(fd);
        if same_socket {
            self.engine.edge_reg.take_registration(reg);
        }
        let result = match r {
            Ok(Some(ev)) => {
                if same_socket {
                    self.engine.after_edge(dir, ev.rx, ev.tx, ev.hup);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(EngineError::io(&e, "epoll_wait")),
        };
        self.wait.epoch = self.wait.epoch.wrapping_add(1);
        self.wake_followers();
        result
    }

    /// Waits for the thread polling the socket to signal (or `limit`).
    fn wait_for_poller(&mut self, extra: i32, limit: Option<Duration>) -> bool {
        let epoch = self.wait.epoch;
        let start = Instant::now();
        loop {
            let mut slice = limit.map(|l| l.saturating_sub(start.elapsed()));
            if extra >= 0 {
                slice = Some(slice.map_or(EXTRA_FD_SLICE, |s| s.min(EXTRA_FD_SLICE)));
            }
            let Some(guard) = self.guard.take() else {
                return false;
            };
            let mut guard = guard;
            guard.wait.followers += 1;
            let mut guard = match slice {
                None => self
                    .handle
                    .woken
                    .wait(guard)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    self.handle
                        .woken
                        .wait_timeout(guard, d)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
            guard.wait.followers -= 1;
            self.guard = Some(guard);
            if self.wait.epoch != epoch || !self.wait.polling {
                return self.wait.epoch != epoch;
            }
            if extra >= 0 && readable(extra) {
                return true;
            }
            if limit.is_some_and(|l| start.elapsed() >= l) {
                return false;
            }
        }
    }

    /// Signals the threads waiting for the poller, if there are any.
    fn wake_followers(&self) {
        if self.wait.followers > 0 {
            self.handle.woken.notify_all();
        }
    }

    /// After a call: if it ended the connection while another thread is
    /// blocked polling the socket, wake that thread.
    pub(crate) fn wake_poller_if_ended(&mut self) {
        if self.wait.polling && self.engine.ended() {
            self.engine.wake_pollers();
        }
    }
}

/// Whether `fd` is readable now.
fn readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd entry; a zero timeout does not block.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// A connection's socket as the edge-triggered wait knows it, kept by the
/// engine (so that no thread keeps a table of handles) in four bytes,
/// which every idle handle carries:
///
/// * the poller (one per thread, numbered from 1; 0: none) it was last
///   registered in (28 bits: after 2^28 threads the numbers wrap, 0 is
///   skipped), and whether writability is registered too (only while a
///   write waits: the socket turns writable each time the peer reads, and
///   those edges would only wake the reader up early);
/// * what an edge does not repeat: the socket may hold input no edge will
///   announce again (`rx_maybe`: the last read filled its buffer, or an
///   edge came and nothing has read since); an edge said the peer closed
///   or the socket failed (`rx_hup`: reads go on until they see it, short
///   reads notwithstanding); the last send found the buffer full
///   (`tx_full`: writing waits for a writable edge).
///
/// A thread's poller stays open while a connection registered in it is
/// open: dropping this (with the engine) releases the registration, and
/// the last one closes the poller's descriptor, so that closing every
/// handle leaves no descriptor behind.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EdgeReg(u32);

impl Drop for EdgeReg {
    fn drop(&mut self) {
        let id = self.bits().poller();
        if id != 0 {
            edge::release(id);
        }
    }
}

/// The bits of an [`EdgeReg`], to carry through a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bits(u32);

impl Bits {
    fn poller(self) -> u32 {
        self.0 & EdgeReg::POLLER
    }

    fn write(self) -> bool {
        self.0 & EdgeReg::WRITE != 0
    }

    /// Records a registration, keeping the flags.
    fn register(&mut self, poller: u32, write: bool) {
        let w = if write { EdgeReg::WRITE } else { 0 };
        self.0 = (self.0 & !EdgeReg::REGISTRATION) | (poller & EdgeReg::POLLER) | w;
    }
}

impl EdgeReg {
    /// Not registered anywhere; input may be waiting.
    pub(crate) const NONE: EdgeReg = EdgeReg(Self::RX_MAYBE);
    const POLLER: u32 = (1 << 28) - 1;
    const WRITE: u32 = 1 << 28;
    const RX_MAYBE: u32 = 1 << 29;
    const RX_HUP: u32 = 1 << 30;
    const TX_FULL: u32 = 1 << 31;
    const REGISTRATION: u32 = Self::POLLER | Self::WRITE;

    fn bits(&self) -> Bits {
        Bits(self.0)
    }

    /// Takes `other`'s registration, keeping this one's flags (which
    /// other threads may have changed meanwhile). The registration it
    /// replaces was released when `other` was made.
    fn take_registration(&mut self, other: Bits) {
        self.0 = (self.0 & !Self::REGISTRATION) | (other.0 & Self::REGISTRATION);
    }

    fn flag(&self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    fn set_flag(&mut self, bit: u32, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }

    /// Input may be waiting that no edge will announce.
    pub(crate) fn rx_maybe(&self) -> bool {
        self.flag(Self::RX_MAYBE)
    }

    /// See [`EdgeReg::rx_maybe`].
    pub(crate) fn set_rx_maybe(&mut self, on: bool) {
        self.set_flag(Self::RX_MAYBE, on);
    }

    /// An edge said the peer closed or the socket failed.
    pub(crate) fn rx_hup(&self) -> bool {
        self.flag(Self::RX_HUP)
    }

    /// See [`EdgeReg::rx_hup`].
    pub(crate) fn set_rx_hup(&mut self, on: bool) {
        self.set_flag(Self::RX_HUP, on);
    }

    /// The last send found the socket buffer full.
    pub(crate) fn tx_full(&self) -> bool {
        self.flag(Self::TX_FULL)
    }

    /// See [`EdgeReg::tx_full`].
    pub(crate) fn set_tx_full(&mut self, on: bool) {
        self.set_flag(Self::TX_FULL, on);
    }
}

/// The edge-triggered wait: one `mio::Poll` (an epoll instance) per thread
/// that waits, created on its first wait, never one per handle, and closed
/// when the last connection registered in it closes (by the thread that
/// closes that handle, or by the poller's own thread after its wait if it
/// is busy then). A connection's socket is registered in it (for input,
/// edge-triggered) the first time the thread waits on it, again only when
/// another thread waited on it in between or a write must wait too; the
/// kernel drops the registration with the socket. The engine tracks what
/// an edge does not repeat (`rx_maybe`, `rx_hup`, `tx_full`), so waiting
/// costs one `epoll_wait` where `poll(2)` cost one `poll`.
mod edge {
    use super::{Bits, EdgeReg};
    use mio::unix::SourceFd;
    use mio::{Events, Interest, Poll, Token};
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    /// What an edge said.
    #[derive(Debug, Clone, Copy, Default)]
    pub(super) struct Ready {
        /// Readable (also on hang-up and error).
        pub(super) rx: bool,
        /// Writable (also on hang-up and error).
        pub(super) tx: bool,
        /// The peer closed, or the socket failed.
        pub(super) hup: bool,
    }

    impl Ready {
        fn any(self) -> bool {
            self.rx || self.tx || self.hup
        }

        fn merge(&mut self, o: Ready) {
            self.rx |= o.rx;
            self.tx |= o.tx;
            self.hup |= o.hup;
        }
    }

    /// One thread's poller, shared with the connections registered in it
    /// (whose engines release it when they close).
    struct Poller {
        /// Its number ([`EdgeReg`]'s low bits).
        id: u32,
        /// Open connections whose registration is here.
        live: AtomicUsize,
        /// Only its thread waits on it; others take it (`try_lock`) only
        /// to close it.
        inner: Mutex<Inner>,
    }

    struct Inner {
        /// `None` once closed.
        poll: Option<Poll>,
        events: Events,
        /// Edges of other sockets registered here that came while this
        /// thread waited for another one: kept for their next wait here.
        stray: Vec<(RawFd, Ready)>,
    }

    thread_local! {
        static MINE: RefCell<Option<Arc<Poller>>> = const { RefCell::new(None) };
    }

    /// The open pollers, to find one by number when a connection closes.
    static OPEN: Mutex<Vec<Arc<Poller>>> = Mutex::new(Vec::new());

    /// Numbers the pollers.
    static NEXT_ID: AtomicU32 = AtomicU32::new(1);

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes `p` if no connection is registered there any more and its
    /// thread is not using it now (then that thread closes it).
    fn close_if_unused(p: &Arc<Poller>) {
        if p.live.load(Ordering::Acquire) != 0 {
            return;
        }
        let Ok(mut inner) = p.inner.try_lock() else {
            return;
        };
        if p.live.load(Ordering::Acquire) == 0 && inner.poll.is_some() {
            inner.poll = None;
            inner.stray = Vec::new();
            drop(inner);
            lock(&OPEN).retain(|q| q.id != p.id);
        }
    }

    /// A connection registered in poller `id` closed (or moved to another
    /// thread's poller).
    pub(super) fn release(id: u32) {
        let found = lock(&OPEN).iter().find(|p| p.id == id).cloned();
        if let Some(p) = found {
            if p.live.fetch_sub(1, Ordering::AcqRel) == 1 {
                close_if_unused(&p);
            }
        }
    }

    /// This thread's open poller, made if it has none.
    fn mine() -> io::Result<Arc<Poller>> {
        MINE.with(|cell| {
            let mut slot = cell.borrow_mut();
            if let Some(p) = slot.as_ref() {
                if lock(&p.inner).poll.is_some() {
                    return Ok(p.clone());
                }
            }
            let mut id = NEXT_ID.fetch_add(1, Ordering::Relaxed) & EdgeReg::POLLER;
            if id == 0 {
                id = NEXT_ID.fetch_add(1, Ordering::Relaxed) & EdgeReg::POLLER;
            }
            let p = Arc::new(Poller {
                id,
                live: AtomicUsize::new(0),
                inner: Mutex::new(Inner {
                    poll: Some(Poll::new()?),
                    events: Events::with_capacity(8),
                    stray: Vec::new(),
                }),
            });
            lock(&OPEN).push(p.clone());
            *slot = Some(p.clone());
            Ok(p)
        })
    }

    /// Waits up to `limit` (`None`: forever) for an edge on `fd`, whose
    /// registration is `reg` (updated), for input and, if `write`, room to
    /// write; returns what the edge said, or `None` when the time ran out.
    pub(super) fn wait(
        fd: RawFd,
        reg: &mut Bits,
        write: bool,
        limit: Option<Duration>,
    ) -> io::Result<Option<Ready>> {
        let p = mine()?;
        let mut guard = lock(&p.inner);
        let inner = &mut *guard;
        let Some(poll) = inner.poll.as_mut() else {
            // Closed between the two locks: the next wait makes another.
            return Ok(None);
        };
        let token = Token(fd as usize);
        let interest = if write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if reg.poller() == p.id {
            if let Some(i) = inner.stray.iter().position(|(f, _)| *f == fd) {
                let (_, seen) = inner.stray.swap_remove(i);
                if seen.rx || seen.hup || (write && seen.tx) {
                    return Ok(Some(seen));
                }
            }
            if reg.write() != write {
                // Rare: only around a full socket buffer.
                poll.registry()
                    .reregister(&mut SourceFd(&fd), token, interest)?;
                reg.register(p.id, write);
            }
        } else {
            let registry = poll.registry();
            match registry.register(&mut SourceFd(&fd), token, interest) {
                Ok(()) => {}
                // Registered here before (another thread waited on it
                // since): take it over.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    registry.reregister(&mut SourceFd(&fd), token, interest)?
                }
                Err(e) => return Err(e),
            }
            inner.stray.retain(|(f, _)| *f != fd);
            p.live.fetch_add(1, Ordering::AcqRel);
            let old = reg.poller();
            reg.register(p.id, write);
            if old != 0 {
                release(old);
            }
        }
        poll.poll(&mut inner.events, limit)?;
        let mut got = Ready::default();
        for ev in inner.events.iter() {
            let hup = ev.is_error() || ev.is_read_closed();
            let this = Ready {
                rx: ev.is_readable() || hup,
                tx: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                hup,
            };
            let efd = ev.token().0 as RawFd;
            if efd == fd {
                got.merge(this);
            } else if let Some((_, seen)) = inner.stray.iter_mut().find(|(f, _)| *f == efd) {
                seen.merge(this);
            } else {
                inner.stray.push((efd, this));
            }
        }
        drop(guard);
        // Connections released while this thread waited may have left it
        // unused.
        close_if_unused(&p);
        Ok(got.any().then_some(got))
    }
}

#[cfg(test)]
mod tests {
    use super::EdgeReg;

    #[test]
    fn edge_state_keeps_flags_and_registration_apart() {
        let mut e = EdgeReg(EdgeReg::NONE.0);
        assert!(e.rx_maybe(), "input may be waiting at first");
        assert!(!e.rx_hup() && !e.tx_full());
        e.set_tx_full(true);
        e.set_rx_hup(true);
        e.set_rx_maybe(false);
        // A wait registers the socket in poller 7 for writing too.
        let mut b = e.bits();
        b.register(7, true);
        assert_eq!((b.poller(), b.write()), (7, true));
        // Meanwhile another thread changed a flag: the registration taken
        // back must not undo it.
        e.set_rx_maybe(true);
        e.take_registration(b);
        assert_eq!((e.bits().poller(), e.bits().write()), (7, true));
        assert!(e.rx_maybe() && e.rx_hup() && e.tx_full());
        let mut b = e.bits();
        b.register(EdgeReg::POLLER, false);
        assert_eq!((b.poller(), b.write()), (EdgeReg::POLLER, false));
        assert!(b.0 & EdgeReg::TX_FULL != 0, "flags survive");
        // Not registered anywhere: dropping it releases nothing.
        e.0 = EdgeReg::NONE.0;
    }
}
