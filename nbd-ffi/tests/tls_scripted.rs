//! TLS through the C API against a scripted server (the evil harness, with
//! OpenSSL on the server side, pre-shared keys): STARTTLS resets and
//! re-negotiates, the handshake runs under a caller's `poll(2)` loop,
//! shutdown ends the session with close_notify, and no downgrade: with
//! `LIBNBD_TLS_REQUIRE` every server that does not start TLS makes the
//! connection fail with `ENOTSUP` before anything more is sent in clear.
//! Real servers (nbdkit, qemu-nbd, X.509 and PSK) are in tests/tests/tls.rs.

#![warn(clippy::undocumented_unsafe_blocks)]

mod evil;

use evil::*;
use libc::ENOTSUP;
use nbd_ffi::constants::{LIBNBD_TLS_ALLOW, LIBNBD_TLS_REQUIRE};
use nbd_ffi::handle::Handle;
use nbd_proto::consts::{cmd, handshake_flags, opt, rep};
use nbd_proto::server::ServerCodec;
use nbd_proto::wire::option::{OptionReply, OptionReplyHeader, OptionRequest};
use nbd_proto::wire::to_vec;
use std::ffi::{c_int, CString};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
const USER: &str = "alice";

/// A psktool-style key file (`user:hexkey`) in a fresh temporary directory.
fn psk_file(lines: &[(&str, &[u8])]) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "nbd-tls-scripted-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text: String = lines
        .iter()
        .map(|(u, k)| {
            let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
            format!("{u}:{hex}\n")
        })
        .collect();
    let path = dir.join("keys.psk");
    std::fs::write(&path, text).unwrap();
    path
}

/// Handle settings: TLS `mode`, PSK from `file` as `user`.
fn tls_setup(mode: c_int, file: PathBuf, user: &str) -> impl FnOnce(*mut Handle) {
    let user = user.to_string();
    move |h| {
        let file = CString::new(file.to_str().unwrap()).unwrap();
        let user = CString::new(user).unwrap();
        // SAFETY: h is open; the strings are C strings that outlive the calls.
        unsafe {
            assert_eq!(nbd_ffi::tls::nbd_set_tls(h, mode), 0);
            assert_eq!(nbd_ffi::tls::nbd_set_tls_psk_file(h, file.as_ptr()), 0);
            assert_eq!(nbd_ffi::tls::nbd_set_tls_username(h, user.as_ptr()), 0);
        }
        setup::meta(h);
    }
}

/// Handle settings: TLS `mode` only (no credentials are ever used).
fn mode_only(mode: c_int) -> impl FnOnce(*mut Handle) {
    move |h| {
        // SAFETY: h is open.
        assert_eq!(unsafe { nbd_ffi::tls::nbd_set_tls(h, mode) }, 0);
    }
}

fn tls_negotiated(c: &Conn) -> c_int {
    // SAFETY: h is open.
    unsafe { nbd_ffi::tls::nbd_get_tls_negotiated(c.h) }
}

/// Server: the first option must be STARTTLS, in clear; acknowledge it.
fn expect_starttls(s: &mut Evil) {
    greet_and_expect_starttls(s);
    s.reply(opt::STARTTLS, OptionReply::Ack);
    s.send();
}

/// Server: after the ACK, TLS with the right key, then a correct negotiation
/// over TLS; records the options the client sent after the handshake in
/// `seen` as they arrive (before they are answered).
fn tls_then_negotiate(s: &mut Evil, seen: &Mutex<Vec<u32>>) {
    expect_starttls(s);
    s.start_tls_psk(USER, &KEY).expect("TLS handshake");
    s.negotiate_until(|r| {
        seen.lock().unwrap().push(r.code());
        false
    });
}

#[test]
fn psk_session_renegotiates_after_starttls_reads_and_ends_with_close_notify() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clean = Arc::new(Mutex::new(None));
    let (seen2, clean2) = (seen.clone(), clean.clone());
    let c = Conn::start(
        Export::new(Mode::Structured),
        tls_setup(LIBNBD_TLS_REQUIRE, psk_file(&[(USER, &KEY)]), USER),
        move |s| {
            tls_then_negotiate(s, &seen2);
            let r = s.expect_request(cmd::READ);
            let data = pattern(r.offset(), r.len() as usize);
            s.reply_data(&r, &data);
            assert!(s.request().is_none(), "NBD_CMD_DISC expected");
            *clean2.lock().unwrap() = Some(s.tls_closed_cleanly());
        },
    );
    assert_eq!(c.rc, 0, "connect: {:?}", last_error());
    assert_eq!(tls_negotiated(&c), 1);
    // Everything is negotiated again over TLS, structured replies and the
    // metadata context included.
    let opts = seen.lock().unwrap().clone();
    for o in [opt::STRUCTURED_REPLY, opt::SET_META_CONTEXT, opt::GO] {
        assert!(opts.contains(&o), "option {o} not sent over TLS: {opts:?}");
    }
    let base = CString::new(BASE_ALLOCATION).unwrap();
    // SAFETY: h is open; base is a C string.
    let can = unsafe { nbd_ffi::info::nbd_can_meta_context(c.h, base.as_ptr()) };
    assert_eq!(can, 1);
    let buf = Guarded::new(4096);
    assert_eq!(c.pread(&buf, 8192), 0, "pread: {:?}", last_error());
    assert_eq!(buf.inside(), pattern(8192, 4096).as_slice());
    buf.assert_guards();
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_ffi::commands::nbd_shutdown(c.h, 0) }, 0);
    c.finish();
    assert_eq!(
        *clean.lock().unwrap(),
        Some(true),
        "the client did not send close_notify"
    );
}

#[test]
fn tls_handshake_runs_under_the_callers_poll_loop() {
    let mut directions = Vec::new();
    let c = Conn::start_with(
        Export::new(Mode::Structured),
        tls_setup(LIBNBD_TLS_REQUIRE, psk_file(&[(USER, &KEY)]), USER),
        |s| {
            tls_then_negotiate(s, &Mutex::default());
            s.serve();
        },
        |h, fd| {
            // SAFETY: h is open; the handle takes ownership of fd.
            let rc = unsafe { nbd_ffi::connect::nbd_aio_connect_socket(h, fd) };
            if rc != 0 {
                return rc;
            }
            // SAFETY: h is open throughout; pfd is one valid pollfd.
            unsafe {
                while nbd_ffi::state::nbd_aio_is_connecting(h) == 1 {
                    let dir = nbd_ffi::aio::nbd_aio_get_direction(h);
                    directions.push(dir);
                    let mut events = 0;
                    if dir & 1 != 0 {
                        events |= libc::POLLIN;
                    }
                    if dir & 2 != 0 {
                        events |= libc::POLLOUT;
                    }
                    assert_ne!(events, 0, "connecting, but waiting for nothing");
                    let mut pfd = libc::pollfd {
                        fd: nbd_ffi::aio::nbd_aio_get_fd(h),
                        events,
                        revents: 0,
                    };
                    assert_eq!(libc::poll(&mut pfd, 1, 10_000), 1, "poll timed out");
                    if pfd.revents & libc::POLLIN != 0 {
                        nbd_ffi::aio::nbd_aio_notify_read(h);
                    }
                    if pfd.revents & libc::POLLOUT != 0 {
                        nbd_ffi::aio::nbd_aio_notify_write(h);
                    }
                }
            }
            0
        },
    );
    assert!(c.is_ready(), "not ready: {:?}", last_error());
    assert_eq!(tls_negotiated(&c), 1);
    // Greeting, option replies and several handshake flights each needed a
    // wait for input.
    assert!(
        directions.iter().filter(|&&d| d & 1 != 0).count() >= 3,
        "{directions:?}"
    );
    let buf = Guarded::new(512);
    assert_eq!(c.pread(&buf, 0), 0);
    assert_eq!(buf.inside(), pattern(0, 512).as_slice());
    c.finish();
}

/// The server plays `decide` (a refusal, garbage, a greeting without TLS)
/// and then records everything the client still sends. The connect must
/// fail with `errno`, leave the handle dead, and send nothing after the
/// decision. Returns `nbd_get_error()`.
fn refused(
    setup: impl FnOnce(*mut Handle),
    errno: c_int,
    decide: impl FnOnce(&mut Evil) + Send + 'static,
) -> String {
    let after = Arc::new(Mutex::new(None));
    let after2 = after.clone();
    let c = Conn::start(Export::new(Mode::Structured), setup, move |s| {
        decide(s);
        *after2.lock().unwrap() = Some(s.read_to_end());
    });
    assert_eq!(c.rc, -1);
    let (_, msg) = last_error();
    assert_eq!(c.connect_errno, errno, "{msg}");
    assert!(c.is_dead());
    c.finish();
    let rest = after.lock().unwrap().take().expect("the script ran");
    assert!(rest.is_empty(), "sent after the decision: {rest:?}");
    msg
}

/// Server: greets and reads the client's STARTTLS.
fn greet_and_expect_starttls(s: &mut Evil) {
    s.greet();
    assert_eq!(s.option(), Some(OptionRequest::StartTls));
}

#[test]
fn require_and_starttls_refused_fails_with_enotsup_and_sends_nothing_more() {
    for refusal in [rep::ERR_UNSUP, rep::ERR_POLICY, rep::ERR_INVALID] {
        refused(mode_only(LIBNBD_TLS_REQUIRE), ENOTSUP, move |s| {
            greet_and_expect_starttls(s);
            s.refuse(opt::STARTTLS, refusal);
            s.send();
        });
    }
}

#[test]
fn require_and_starttls_answered_with_a_non_ack_reply_fails_with_enotsup() {
    refused(mode_only(LIBNBD_TLS_REQUIRE), ENOTSUP, |s| {
        greet_and_expect_starttls(s);
        let mut bytes = to_vec(|v| {
            OptionReplyHeader {
                option: opt::STARTTLS,
                reply_type: rep::SERVER,
                length: 4,
            }
            .encode(v)
        });
        bytes.extend_from_slice(&[0; 4]);
        s.raw(&bytes);
    });
}

#[test]
fn require_against_an_oldstyle_server_fails_with_enotsup_sending_nothing() {
    refused(mode_only(LIBNBD_TLS_REQUIRE), ENOTSUP, |s| {
        s.set_codec(ServerCodec::oldstyle(1 << 20, 1));
    });
}

#[test]
fn require_against_a_not_fixed_newstyle_server_fails_with_enotsup_sending_nothing() {
    // Not even the client flags: nothing at all goes out.
    refused(mode_only(LIBNBD_TLS_REQUIRE), ENOTSUP, |s| {
        s.set_codec(ServerCodec::newstyle(handshake_flags::NO_ZEROES));
    });
}

#[test]
fn cleartext_after_the_starttls_ack_is_refused_not_fed_to_tls() {
    let setup = tls_setup(LIBNBD_TLS_REQUIRE, psk_file(&[(USER, &KEY)]), USER);
    let msg = refused(setup, libc::EIO, |s| {
        greet_and_expect_starttls(s);
        // The ACK and injected bytes in one write.
        s.codec()
            .send_option_reply(opt::STARTTLS, &OptionReply::Ack)
            .unwrap();
        s.codec().send_raw(b"\x16\x03\x03\x00\x05hello");
        s.send();
    });
    assert!(msg.contains("in clear after accepting STARTTLS"), "{msg}");
}

#[test]
fn allow_against_a_server_refusing_starttls_goes_on_in_clear() {
    let c = Conn::start(
        Export::new(Mode::Structured),
        mode_only(LIBNBD_TLS_ALLOW),
        |s| {
            greet_and_expect_starttls(s);
            s.refuse(opt::STARTTLS, rep::ERR_UNSUP);
            s.send();
            assert!(s.negotiate());
            s.serve();
        },
    );
    assert_eq!(c.rc, 0, "{:?}", last_error());
    assert_eq!(tls_negotiated(&c), 0);
    let buf = Guarded::new(1024);
    assert_eq!(c.pread(&buf, 4096), 0);
    assert_eq!(buf.inside(), pattern(4096, 1024).as_slice());
    c.finish();
}

#[test]
fn allow_against_a_tls_server_uses_tls() {
    let c = Conn::start(
        Export::new(Mode::Structured),
        tls_setup(LIBNBD_TLS_ALLOW, psk_file(&[(USER, &KEY)]), USER),
        |s| {
            tls_then_negotiate(s, &Mutex::default());
            s.serve();
        },
    );
    assert_eq!(c.rc, 0, "{:?}", last_error());
    assert_eq!(tls_negotiated(&c), 1);
    c.finish();
}

/// A handshake the server rejects: the connect fails, the handle is dead,
/// and the server never sees an NBD option (in clear or not).
fn rejected(file: PathBuf, user: &str, server_key: [u8; 32]) -> (c_int, String) {
    let failed = Arc::new(Mutex::new(None));
    let failed2 = failed.clone();
    let c = Conn::start(
        Export::new(Mode::Structured),
        tls_setup(LIBNBD_TLS_REQUIRE, file, user),
        move |s| {
            expect_starttls(s);
            let r = s.start_tls_psk(USER, &server_key);
            *failed2.lock().unwrap() = Some(r.is_err());
        },
    );
    assert_eq!(c.rc, -1, "connected despite a bad key");
    let err = (c.connect_errno, last_error().1);
    assert!(c.is_dead());
    c.finish();
    assert_eq!(*failed.lock().unwrap(), Some(true), "server accepted");
    err
}

#[test]
fn wrong_psk_key_fails_the_handshake() {
    let mut other = KEY;
    other[0] ^= 1;
    let (errno, msg) = rejected(psk_file(&[(USER, &other)]), USER, KEY);
    // libnbd 1.24 reports a failed handshake with errno 0.
    assert_eq!(errno, 0, "{msg}");
    assert!(msg.contains("TLS handshake"), "{msg}");
}

#[test]
fn unknown_psk_user_fails_the_handshake() {
    let (errno, msg) = rejected(psk_file(&[("bob", &KEY)]), "bob", KEY);
    assert_eq!(errno, 0, "{msg}");
    assert!(msg.contains("TLS handshake"), "{msg}");
}

#[test]
fn psk_file_without_the_username_fails_with_a_clear_message() {
    let (errno, msg) = rejected(psk_file(&[("carol", &KEY)]), USER, KEY);
    assert!(msg.contains("no key for username alice"), "{msg}");
    // As in libnbd 1.24.
    assert_eq!(errno, libc::EINVAL, "{msg}");
}
