//! A server that starts replies and never finishes them: structured reads
//! get a data chunk without `NBD_REPLY_FLAG_DONE`, other commands nothing.
//! The caller must still get out, and get its callbacks back:
//!
//! * `nbd_close` with such commands in flight returns at once and runs
//!   every `.free` exactly once;
//! * `nbd_shutdown(LIBNBD_SHUTDOWN_ABANDON_PENDING)` fails the commands not
//!   yet sent without sending them, sends `NBD_CMD_DISC` and returns once
//!   the server hangs up; the stranded commands fail with `ENOTCONN` (see
//!   nbd_aio_in_flight(3)). A synchronous `nbd_shutdown` waits for the
//!   server to close the connection, so a server that ignored
//!   `NBD_CMD_DISC` as well would hold it: `nbd_close` is the way out then.

#![warn(clippy::undocumented_unsafe_blocks)]

mod evil;

use evil::*;
use libc::ENOTCONN;
use nbd_ffi::constants::LIBNBD_SHUTDOWN_ABANDON_PENDING;
use nbd_proto::consts::cmd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long getting out may take: well under the scripted server's 10 s
/// I/O timeout (a call that waited for the server would take that long),
/// and far above what a loaded machine needs (1 s was tight).
const PROMPT: Duration = Duration::from_secs(8);

/// Reads until `n` requests came, answering reads with one chunk that does
/// not end the reply and everything else with silence.
fn half_answer(s: &mut Evil, n: usize) -> Vec<Req> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let r = s.request().expect("a request");
        if r.command() == cmd::READ {
            let data = pattern(r.offset(), r.len() as usize);
            s.data_chunk(&r, r.offset(), &data[..r.len() as usize / 2], false);
        }
        seen.push(r);
    }
    seen
}

/// `nbd_poll` once with a short timeout.
fn poll_once(c: &Conn, ms: i32) -> i32 {
    // SAFETY: h is open.
    unsafe { nbd_ffi::aio::nbd_poll(c.h, ms) }
}

#[test]
fn close_with_commands_stuck_in_flight_returns_promptly_and_frees_all() {
    let (got, seen) = mpsc::channel();
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, move |s| {
        half_answer(s, 3);
        got.send(()).unwrap();
        // Never a DONE, never a hang-up: only the client can end this.
        s.wait_close();
    });
    let chunk = Probe::new();
    let probes = [Probe::new(), Probe::new(), Probe::new()];
    let buf = Guarded::leaked(4096);
    assert!(c.aio_pread_structured(buf, 0, chunk.chunk(), probes[0].completion()) > 0);
    assert!(c.aio_pread(Guarded::leaked(512), 8192, probes[1].completion()) > 0);
    assert!(c.aio_flush(probes[2].completion()) > 0);
    seen.recv_timeout(Duration::from_secs(10))
        .expect("the server got the three requests");
    // The first chunks arrive, but nothing completes.
    c.poll_until(|_| chunk.calls() == 1);
    assert_eq!(poll_once(&c, 50), 0, "nbd_poll must time out");
    assert_eq!(c.in_flight(), 3);
    assert!(probes.iter().all(|p| p.calls() == 0 && p.frees() == 0));
    let start = Instant::now();
    c.finish(); // nbd_close, then the server sees the hang-up
    let took = start.elapsed();
    assert!(took < PROMPT, "nbd_close took {took:?}");
    chunk.assert_freed_once();
    for p in probes {
        p.assert_freed_once();
        assert!(p.calls() <= 1, "at most one completion call");
    }
}

#[test]
fn shutdown_abandon_pending_gets_out_when_done_never_comes() {
    let (go, wait) = mpsc::channel::<()>();
    let (got, seen) = mpsc::channel::<Vec<u16>>();
    let ex = Export::new(Mode::Structured).sized(16 << 20);
    let c = Conn::ready(ex, setup::none, move |s| {
        // The structured read gets half its data, then the server stops
        // reading until the client has filled the socket.
        half_answer(s, 1);
        wait.recv_timeout(IO_TIMEOUT).expect("the client said go");
        let mut commands = Vec::new();
        // Everything that was sent: the write (never answered), then DISC.
        while let Some(r) = s.request() {
            commands.push(r.command());
        }
        got.send(commands).unwrap();
        s.hang_up();
    });
    let chunk = Probe::new();
    let read1 = Probe::new();
    let write = Probe::new();
    let read2 = Probe::new();
    let buf = Guarded::leaked(4096);
    assert!(c.aio_pread_structured(buf, 0, chunk.chunk(), read1.completion()) > 0);
    c.poll_until(|_| chunk.calls() == 1);
    // 8 MiB cannot fit in the socket: the write is partly sent, and the
    // read after it waits behind it, unsent.
    let data: &'static [u8] = Box::leak(vec![0x42u8; 8 << 20].into_boxed_slice());
    // SAFETY: h is open; data is leaked, so valid until the command retires.
    let wc = unsafe {
        nbd_ffi::aio::nbd_aio_pwrite(
            c.h,
            data.as_ptr().cast(),
            data.len(),
            0,
            write.completion(),
            0,
        )
    };
    assert!(wc > 0, "{:?}", last_error());
    assert!(c.aio_pread(Guarded::leaked(512), 8192, read2.completion()) > 0);
    assert_eq!(c.in_flight(), 3);
    go.send(()).unwrap();
    let start = Instant::now();
    // SAFETY: h is open.
    let rc = unsafe { nbd_ffi::commands::nbd_shutdown(c.h, LIBNBD_SHUTDOWN_ABANDON_PENDING) };
    let took = start.elapsed();
    assert_eq!(rc, 0, "{:?}", last_error());
    assert!(took < PROMPT, "nbd_shutdown took {took:?}");
    let commands = seen.recv_timeout(Duration::from_secs(10)).expect("server");
    assert_eq!(
        commands,
        [cmd::WRITE],
        "the abandoned read must not be sent (DISC ends the list)"
    );
    assert_eq!(c.in_flight(), 0);
    for (name, p) in [("read1", read1), ("write", write), ("read2", read2)] {
        assert_eq!(p.calls(), 1, "{name}: one completion call");
        assert_eq!(
            *p.errors.lock().unwrap(),
            [ENOTCONN],
            "{name}: fails with ENOTCONN"
        );
        // Not retired: the callbacks are freed when the handle closes.
        assert_eq!(p.frees(), 0, "{name}: freed at retirement or close");
    }
    assert_eq!(chunk.frees(), 0);
    c.finish();
    for p in [read1, write, read2, chunk] {
        p.assert_freed_once();
    }
}
