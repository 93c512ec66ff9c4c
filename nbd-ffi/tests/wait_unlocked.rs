//! A synchronous call does not hold the handle's lock while it waits for
//! the server (issue 12): another thread's calls on the same handle go on,
//! and a connection ended meanwhile wakes the waiting thread.
//!
//! * thread A blocks in `nbd_pread` against a server that sent half the
//!   data and stopped; thread B's `nbd_aio_in_flight` and `nbd_aio_pread`
//!   return at once; B's `nbd_shutdown(LIBNBD_SHUTDOWN_ABANDON_PENDING)`
//!   sends `NBD_CMD_DISC`, the server hangs up, and A returns -1;
//! * two threads waiting in `nbd_pread` on one handle both get their
//!   replies, whichever order the server answers in.

#![warn(clippy::undocumented_unsafe_blocks)]

mod evil;

use evil::*;
use nbd_ffi::constants::LIBNBD_SHUTDOWN_ABANDON_PENDING;
use nbd_ffi::handle::Handle;
use nbd_proto::consts::cmd;
use std::sync::mpsc;
use std::time::Duration;

/// How long a call that must not wait for the server may take: the server
/// never answers, so a call that waited would never return.
const PROMPT: Duration = Duration::from_secs(20);

/// The handle pointer, to share it with other threads (the library locks
/// it; the test closes it only after joining them).
#[derive(Clone, Copy)]
struct Shared(*mut Handle);
// SAFETY: libnbd handles may be used from any thread; the test keeps the
// handle open until every thread using it has finished.
unsafe impl Send for Shared {}

impl Shared {
    fn h(self) -> *mut Handle {
        self.0
    }
}

/// Runs `f` in a new thread and returns its result, or panics if it does
/// not return within [`PROMPT`] (the call blocked).
fn promptly<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PROMPT)
        .unwrap_or_else(|_| panic!("{what} blocked while another thread waited"))
}

#[test]
fn other_threads_go_on_while_one_waits_in_pread() {
    let (got, seen) = mpsc::channel::<()>();
    let (done, requests) = mpsc::channel::<Vec<u16>>();
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, move |s| {
        let r = s.expect_request(cmd::READ);
        // Half the data, then silence.
        let data = pattern(r.offset(), r.len() as usize);
        s.data_chunk(&r, r.offset(), &data[..r.len() as usize / 2], false);
        got.send(()).unwrap();
        // The second read (never answered), then NBD_CMD_DISC.
        let mut commands = Vec::new();
        while let Some(r) = s.request() {
            commands.push(r.command());
        }
        done.send(commands).unwrap();
        s.hang_up();
    });
    let h = Shared(c.h);
    let a = std::thread::spawn(move || {
        let buf = Guarded::new(4096);
        // SAFETY: h is open until the test joins this thread; buf is
        // writable for its length.
        let rc = unsafe { nbd_ffi::commands::nbd_pread(h.h(), buf.ptr(), buf.len(), 0, 0) };
        (rc, errno())
    });
    seen.recv_timeout(Duration::from_secs(10))
        .expect("the server got the read");
    // A is waiting (or about to): the lock must not keep B out.
    let n = promptly("nbd_aio_in_flight", move || {
        // SAFETY: h is open until the threads are joined.
        unsafe { nbd_ffi::aio::nbd_aio_in_flight(h.h()) }
    });
    assert_eq!(n, 1, "the read is in flight");
    let probe = Probe::new();
    let cookie = promptly("nbd_aio_pread", move || {
        let buf = Guarded::leaked(512);
        // SAFETY: h is open; the buffer is leaked, so valid until the end.
        unsafe { nbd_ffi::aio::nbd_aio_pread(h.h(), buf.ptr(), 512, 8192, probe.completion(), 0) }
    });
    assert!(cookie > 0, "nbd_aio_pread failed: {:?}", last_error());
    let rc = promptly("nbd_shutdown", move || {
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::commands::nbd_shutdown(h.h(), LIBNBD_SHUTDOWN_ABANDON_PENDING) };
        (rc, last_error())
    });
    assert_eq!(rc.0, 0, "nbd_shutdown: {:?}", rc.1);
    let (rc, err) = a.join().expect("thread A");
    assert_eq!(rc, -1, "the half-answered nbd_pread must fail");
    assert_ne!(err, 0, "with an errno");
    let commands = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("the server saw the disconnect");
    assert_eq!(commands, vec![cmd::READ], "the second read went out");
    assert_eq!(probe.calls(), 1, "the second read completed (failed)");
    assert_ne!(probe.errors.lock().unwrap()[0], 0);
    c.finish();
}

#[test]
fn two_threads_waiting_on_one_handle_both_get_their_replies() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let first = s.expect_request(cmd::READ);
        let second = s.expect_request(cmd::READ);
        // The later request first.
        for r in [&second, &first] {
            let data = pattern(r.offset(), r.len() as usize);
            s.reply_data(r, &data);
        }
        s.serve();
    });
    let h = Shared(c.h);
    let readers: Vec<_> = [0u64, 65536]
        .into_iter()
        .map(|offset| {
            std::thread::spawn(move || {
                let buf = Guarded::new(4096);
                // SAFETY: h is open until the threads are joined; buf is
                // writable for its length.
                let rc =
                    unsafe { nbd_ffi::commands::nbd_pread(h.h(), buf.ptr(), buf.len(), offset, 0) };
                assert_eq!(rc, 0, "nbd_pread at {offset}: {:?}", last_error());
                assert_eq!(buf.inside(), &pattern(offset, 4096)[..]);
            })
        })
        .collect();
    for r in readers {
        r.join().expect("reader");
    }
    c.finish();
}

#[test]
fn one_thread_waiting_on_two_handles_misses_no_reply() {
    // The synchronous wait is edge-triggered, with one poller per thread:
    // a reply to handle 1 that arrives while the thread waits on handle 2
    // must still be seen when the thread next waits on handle 1, though no
    // new data comes then.
    let c1 = Conn::ready(Export::new(Mode::Structured), setup::none, |s| s.serve());
    let c2 = Conn::ready(Export::new(Mode::Structured), setup::none, |s| s.serve());
    let buf = Guarded::new(4096);
    // A synchronous wait on each registers both sockets with this thread.
    assert_eq!(c1.pread(&buf, 0), 0, "{:?}", last_error());
    assert_eq!(c2.pread(&buf, 0), 0, "{:?}", last_error());
    let probe = Probe::new();
    assert!(c1.aio_pread(Guarded::leaked(4096), 4096, probe.completion()) > 0);
    // (Not needed for the test to pass: gives the reply time to arrive
    // before the wait on handle 2, which is the case checked.)
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c2.pread(&buf, 8192), 0, "{:?}", last_error());
    assert_eq!(probe.calls(), 0, "nothing has read handle 1 yet");
    // Only the reply already in handle 1's socket can wake this.
    // SAFETY: h is open.
    let rc = unsafe { nbd_ffi::aio::nbd_poll(c1.h, 10_000) };
    assert_eq!(rc, 1, "nbd_poll missed the reply: {:?}", last_error());
    assert_eq!(*probe.errors.lock().unwrap(), vec![0]);
    c1.finish();
    c2.finish();
}

#[test]
fn a_handle_waited_on_by_one_thread_then_another() {
    // Each thread's poller registers the socket when that thread waits;
    // switching back and forth loses nothing.
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| s.serve());
    let h = Shared(c.h);
    for round in 0..4u64 {
        let offset = round * 4096;
        std::thread::spawn(move || {
            let buf = Guarded::new(4096);
            // SAFETY: h is open until the threads are joined; buf is
            // writable for its length.
            let rc =
                unsafe { nbd_ffi::commands::nbd_pread(h.h(), buf.ptr(), buf.len(), offset, 0) };
            assert_eq!(rc, 0, "{:?}", last_error());
            assert_eq!(buf.inside(), &pattern(offset, 4096)[..]);
        })
        .join()
        .expect("reader");
        let buf = Guarded::new(4096);
        assert_eq!(c.pread(&buf, offset), 0, "{:?}", last_error());
        assert_eq!(buf.inside(), &pattern(offset, 4096)[..]);
    }
    c.finish();
}
