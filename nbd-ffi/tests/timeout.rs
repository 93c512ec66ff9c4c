//! The timeout extension (`nbdrs_set_timeout`, libnbd-ext.h; issue 12):
//! against a server that stops answering, a waiting call returns -1 with
//! `ETIMEDOUT`, every command in flight completes with `ETIMEDOUT`, and the
//! handle is dead; mid-read (after part of the payload), during the
//! handshake (after the greeting), during the TLS handshake, and under
//! `nbd_poll`. Without it (the default, 0) nothing changes.
//!
//! No timing is asserted beyond "it returns": the server would wait for
//! its own I/O timeout (10 s) and then fail the test if the client did not
//! give up first.

#![warn(clippy::undocumented_unsafe_blocks)]

mod evil;

use evil::*;
use libc::{EINVAL, ETIMEDOUT};
use nbd_ffi::constants::LIBNBD_TLS_REQUIRE;
use nbd_ffi::handle::Handle;
use nbd_proto::consts::{cmd, opt};
use nbd_proto::wire::option::{OptionReply, OptionRequest};
use std::ffi::CString;
use std::sync::mpsc;
use std::time::Duration;

/// The timeout the tests set: short enough to keep them quick, long
/// enough for a loaded machine to do a handshake in.
const TIMEOUT_MS: u64 = 1500;

fn set_timeout(h: *mut Handle, ms: u64) {
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_ffi::ext::nbdrs_set_timeout(h, ms) }, 0);
}

fn with_timeout(h: *mut Handle) {
    set_timeout(h, TIMEOUT_MS);
}

#[test]
fn set_and_get() {
    // SAFETY: nbd_create has no preconditions; h is closed at the end.
    unsafe {
        let h = nbd_ffi::handle::nbd_create();
        assert_eq!(nbd_ffi::ext::nbdrs_get_timeout(h), 0, "off by default");
        assert_eq!(nbd_ffi::ext::nbdrs_set_timeout(h, 2500), 0);
        assert_eq!(nbd_ffi::ext::nbdrs_get_timeout(h), 2500);
        assert_eq!(nbd_ffi::ext::nbdrs_set_timeout(h, u64::MAX), -1);
        assert_eq!(errno(), EINVAL);
        assert_eq!(nbd_ffi::ext::nbdrs_get_timeout(h), 2500, "unchanged");
        assert_eq!(nbd_ffi::ext::nbdrs_set_timeout(h, 0), 0);
        assert_eq!(nbd_ffi::ext::nbdrs_get_timeout(h), 0);
        nbd_ffi::handle::nbd_close(h);
        assert_eq!(nbd_ffi::ext::nbdrs_set_timeout(std::ptr::null_mut(), 1), -1);
        assert_eq!(nbd_ffi::ext::nbdrs_get_timeout(std::ptr::null_mut()), -1);
    }
}

#[test]
fn stalled_mid_read_times_out_and_fails_everything_in_flight() {
    let c = Conn::ready(Export::new(Mode::Structured), with_timeout, |s| {
        let first = s.expect_request(cmd::READ);
        let _second = s.expect_request(cmd::READ);
        // Part of the first read's payload, then silence.
        let data = pattern(first.offset(), first.len() as usize);
        s.data_chunk(&first, first.offset(), &data[..1024], false);
        // Until the client gives up (it shuts the socket down).
        s.wait_close();
    });
    let probe = Probe::new();
    assert!(c.aio_pread(Guarded::leaked(4096), 0, probe.completion()) > 0);
    let buf = Guarded::new(4096);
    assert_eq!(c.pread(&buf, 8192), -1, "the stalled nbd_pread must fail");
    let (e, msg) = last_error();
    assert_eq!(e, ETIMEDOUT, "{msg}");
    assert!(c.is_dead(), "the handle is dead");
    assert_eq!(probe.calls(), 1, "the aio read completed");
    assert_eq!(*probe.errors.lock().unwrap(), vec![ETIMEDOUT]);
    // Dead: a new command fails at once.
    assert_eq!(c.pread(&buf, 0), -1);
    c.finish();
    probe.assert_freed_once();
}

#[test]
fn stalled_after_the_greeting_times_out_the_connect() {
    let c = Conn::start(Export::new(Mode::Structured), with_timeout, |s| {
        s.greet();
        // Read the first option, never answer it.
        assert!(s.option().is_some());
        s.wait_close();
    });
    assert_eq!(c.rc, -1, "the connect must fail");
    assert_eq!(c.connect_errno, ETIMEDOUT);
    assert!(c.is_dead());
    c.finish();
}

#[test]
fn stalled_before_the_greeting_times_out_the_connect() {
    let c = Conn::start(Export::new(Mode::Structured), with_timeout, |s| {
        // No greeting at all.
        s.wait_close();
    });
    assert_eq!(c.rc, -1);
    assert_eq!(c.connect_errno, ETIMEDOUT);
    assert!(c.is_dead());
    c.finish();
}

#[test]
fn stalled_tls_handshake_times_out_the_connect() {
    let dir = std::env::temp_dir().join(format!("nbd-timeout-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.psk");
    std::fs::write(&keys, "alice:000102030405060708090a0b0c0d0e0f\n").unwrap();
    let setup = move |h: *mut Handle| {
        let file = CString::new(keys.to_str().unwrap()).unwrap();
        let user = CString::new("alice").unwrap();
        // SAFETY: h is open; the strings outlive the calls.
        unsafe {
            assert_eq!(nbd_ffi::tls::nbd_set_tls(h, LIBNBD_TLS_REQUIRE), 0);
            assert_eq!(nbd_ffi::tls::nbd_set_tls_psk_file(h, file.as_ptr()), 0);
            assert_eq!(nbd_ffi::tls::nbd_set_tls_username(h, user.as_ptr()), 0);
        }
        with_timeout(h);
    };
    let (hello, got_hello) = mpsc::channel();
    let c = Conn::start(Export::new(Mode::Structured), setup, move |s| {
        s.greet();
        assert_eq!(s.option(), Some(OptionRequest::StartTls));
        s.reply(opt::STARTTLS, OptionReply::Ack);
        s.send();
        // The client's hello arrives; the server never answers it.
        let bytes = s.read_to_end();
        hello.send(bytes.len()).unwrap();
    });
    assert_eq!(c.rc, -1, "the connect must fail");
    assert_eq!(c.connect_errno, ETIMEDOUT, "{:?}", last_error());
    assert!(c.is_dead());
    c.finish();
    let n = got_hello
        .recv_timeout(Duration::from_secs(10))
        .expect("the server read until the client gave up");
    assert!(n > 0, "the client started the TLS handshake");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nbd_poll_honours_the_timeout() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let _r = s.expect_request(cmd::READ);
        s.wait_close();
    });
    set_timeout(c.h, TIMEOUT_MS);
    let probe = Probe::new();
    assert!(c.aio_pread(Guarded::leaked(512), 0, probe.completion()) > 0);
    // A caller's loop of short polls: each returns 0 until the server has
    // been silent for the timeout, then one fails.
    let mut polls = 0;
    let rc = loop {
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::aio::nbd_poll(c.h, 100) };
        if rc != 0 {
            break rc;
        }
        polls += 1;
        assert!(polls < 1000, "nbd_poll never timed out");
    };
    assert_eq!(rc, -1);
    assert_eq!(errno(), ETIMEDOUT);
    assert!(c.is_dead());
    assert_eq!(*probe.errors.lock().unwrap(), vec![ETIMEDOUT]);
    c.finish();
}

#[test]
fn off_by_default_a_slow_server_is_waited_for() {
    // The server answers only after the client asked twice (well past
    // what the other tests' timeout would allow if it were on).
    let (go, wait) = mpsc::channel::<()>();
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, move |s| {
        let r = s.expect_request(cmd::READ);
        wait.recv_timeout(IO_TIMEOUT).expect("go");
        let data = pattern(r.offset(), r.len() as usize);
        s.reply_data(&r, &data);
        s.serve();
    });
    let probe = Probe::new();
    assert!(c.aio_pread(Guarded::leaked(512), 0, probe.completion()) > 0);
    // SAFETY: h is open.
    let rc = unsafe { nbd_ffi::aio::nbd_poll(c.h, 2 * TIMEOUT_MS as i32) };
    assert_eq!(rc, 0, "nothing arrived");
    go.send(()).unwrap();
    c.poll_until(|_| probe.calls() == 1);
    assert_eq!(*probe.errors.lock().unwrap(), vec![0]);
    assert!(!c.is_dead());
    c.finish();
}
