//! The opt and negotiation calls libnbd added in 1.16 and 1.18, through
//! the C API:
//!
//! * `nbd_set/get_request_meta_context` and `nbd_set/get_request_extended_headers`:
//!   defaults, the states they may be set in, and what they change on the
//!   wire;
//! * `nbd_opt_starttls`, `nbd_opt_extended_headers`, `nbd_opt_structured_reply`
//!   (1 when the server agrees, 0 when it refuses, -1 only when the
//!   connection does not survive) and their `nbd_aio_opt_*` forms, whose
//!   completion sees `*error` 0, `ENOTSUP`, or `EINVAL` for a request the
//!   server calls invalid;
//! * `nbd_opt_list_meta_context_queries`, `nbd_opt_set_meta_context` and
//!   `_queries` with their aio forms: the contexts selected are the ones
//!   `nbd_can_meta_context` and block status use.
//!
//! Against real servers: qemu-nbd (speaks extended headers), Debian's
//! nbdkit 1.32 (does not) with and without TLS; the scripted server of
//! `evil/` for the refusals and misbehaviour no real server shows.

#![warn(clippy::undocumented_unsafe_blocks)]

mod common;
mod evil;

use evil::*;
use libc::{EFAULT, EINVAL, ENOTCONN, ENOTSUP, EPROTO};
use nbd_ffi::handle::Handle;
use nbd_proto::consts::{opt, rep};
use nbd_proto::wire::option::{MetaContext, OptionReply, OptionRequest};
use std::ffi::{c_char, c_int, CString};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Real servers

/// A server process on a Unix socket, killed and reaped when dropped.
struct Server {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Server {
    fn spawn(dir: &Path, program: &str, args: &[&str]) -> Server {
        let socket = dir.join(format!("{program}.sock"));
        let log = dir.join(format!("{program}.log"));
        let logf = std::fs::File::create(&log).expect("server log");
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("@SOCKET@", socket.to_str().unwrap()))
            .collect();
        let child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} (is it installed?): {e}"));
        let mut s = Server { child, socket, log };
        let start = Instant::now();
        while UnixStream::connect(&s.socket).is_err() {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("{program} exited ({status}): {}", s.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{program} did not listen: {}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// qemu-nbd serving a 1 MiB raw image (extended headers, base:allocation).
    fn qemu(name: &str) -> Server {
        let dir = common::scratch(name);
        let image = dir.join("disk.img");
        std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
        let image = image.to_str().unwrap().to_string();
        Server::spawn(
            &dir,
            "qemu-nbd",
            &[
                "-f",
                "raw",
                "--persistent",
                "--shared=8",
                "-x",
                "",
                "-k",
                "@SOCKET@",
                &image,
            ],
        )
    }

    /// Debian's nbdkit (1.32: no extended headers) with a 1 MiB memory disk;
    /// `extra` goes before the plugin.
    fn nbdkit(name: &str, extra: &[&str]) -> Server {
        let dir = common::scratch(name);
        let mut args = vec!["--foreground", "--exit-with-parent", "-U", "@SOCKET@"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["memory", "1M"]);
        Server::spawn(&dir, "nbdkit", &args)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A handle of our library, closed when dropped.
struct H(*mut Handle);

impl H {
    fn new() -> H {
        // SAFETY: no preconditions.
        let h = unsafe { nbd_ffi::handle::nbd_create() };
        assert!(!h.is_null());
        H(h)
    }

    /// A handle in opt mode connected to `server`, negotiating.
    fn opt_mode(server: &Server, setup: impl FnOnce(&H)) -> H {
        let h = H::new();
        // SAFETY: h is open.
        assert_eq!(unsafe { nbd_ffi::opt::nbd_set_opt_mode(h.0, true) }, 0);
        setup(&h);
        h.connect(server);
        assert!(h.negotiating(), "{:?}", last_error());
        h
    }

    fn connect(&self, server: &Server) {
        let path = CString::new(server.socket.to_str().unwrap()).unwrap();
        // SAFETY: h is open; path is a C string.
        let rc = unsafe { nbd_ffi::connect::nbd_connect_unix(self.0, path.as_ptr()) };
        assert_eq!(rc, 0, "connect: {:?}", last_error());
    }

    fn negotiating(&self) -> bool {
        // SAFETY: h is open.
        unsafe { nbd_ffi::state::nbd_aio_is_negotiating(self.0) == 1 }
    }

    fn ready(&self) -> bool {
        // SAFETY: h is open.
        unsafe { nbd_ffi::state::nbd_aio_is_ready(self.0) == 1 }
    }

    fn dead(&self) -> bool {
        // SAFETY: h is open.
        unsafe { nbd_ffi::state::nbd_aio_is_dead(self.0) == 1 }
    }

    fn add_meta_context(&self, name: &str) {
        let name = CString::new(name).unwrap();
        // SAFETY: h is open; name is a C string.
        let rc = unsafe { nbd_ffi::negotiation::nbd_add_meta_context(self.0, name.as_ptr()) };
        assert_eq!(rc, 0);
    }

    fn can_meta_context(&self, name: &str) -> c_int {
        let name = CString::new(name).unwrap();
        // SAFETY: h is open; name is a C string.
        unsafe { nbd_ffi::info::nbd_can_meta_context(self.0, name.as_ptr()) }
    }

    fn structured(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::info::nbd_get_structured_replies_negotiated(self.0) }
    }

    fn opt_go(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_go(self.0) }
    }

    fn opt_info(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_info(self.0) }
    }

    fn starttls(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_starttls(self.0) }
    }

    fn extended_headers(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_extended_headers(self.0) }
    }

    fn structured_reply(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_structured_reply(self.0) }
    }

    fn set_meta_context(&self, p: &'static Probe) -> c_int {
        // SAFETY: h is open; the callback's user_data is a leaked Probe.
        unsafe { nbd_ffi::opt::nbd_opt_set_meta_context(self.0, p.context()) }
    }

    fn set_meta_context_queries(&self, queries: &[&str], p: &'static Probe) -> c_int {
        with_list(queries, |q| {
            // SAFETY: h is open; q is a NULL-terminated list of C strings.
            unsafe { nbd_ffi::opt::nbd_opt_set_meta_context_queries(self.0, q, p.context()) }
        })
    }

    fn list_meta_context_queries(&self, queries: &[&str], p: &'static Probe) -> c_int {
        with_list(queries, |q| {
            // SAFETY: as above.
            unsafe { nbd_ffi::opt::nbd_opt_list_meta_context_queries(self.0, q, p.context()) }
        })
    }

    /// Polls until the aio option reported to `done`.
    fn wait(&self, done: &'static Probe) {
        let start = Instant::now();
        while done.calls() == 0 {
            // SAFETY: h is open.
            let r = unsafe { nbd_ffi::aio::nbd_poll(self.0, 10_000) };
            assert!(r >= 0, "nbd_poll: {:?}", last_error());
            assert!(start.elapsed() < Duration::from_secs(60), "no completion");
        }
    }

    /// Block status over the first 64 KiB: the context names reported, or
    /// the errno of a failure.
    fn block_status(&self) -> Result<Vec<String>, c_int> {
        let p = Probe::new();
        // SAFETY: h is open; the callback's user_data is a leaked Probe.
        let rc = unsafe { nbd_ffi::commands::nbd_block_status(self.0, 65536, 0, p.extent(), 0) };
        p.assert_freed_once();
        if rc == -1 {
            return Err(errno());
        }
        Ok(p.extents
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.context.clone())
            .collect())
    }

    fn pread_ok(&self) {
        let mut buf = vec![0xffu8; 4096];
        // SAFETY: h is open; buf is writable for its length.
        let rc = unsafe {
            nbd_ffi::commands::nbd_pread(self.0, buf.as_mut_ptr().cast(), buf.len(), 0, 0)
        };
        assert_eq!(rc, 0, "pread: {:?}", last_error());
        assert!(buf.iter().all(|b| *b == 0));
    }
}

impl Drop for H {
    fn drop(&mut self) {
        // SAFETY: h is open and closed only here.
        unsafe { nbd_ffi::handle::nbd_close(self.0) };
    }
}

/// Calls `f` with `list` as a NULL-terminated `char **`.
fn with_list<R>(list: &[&str], f: impl FnOnce(*mut *mut c_char) -> R) -> R {
    let owned: Vec<CString> = list.iter().map(|s| CString::new(*s).unwrap()).collect();
    let mut ptrs: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr() as *mut c_char).collect();
    ptrs.push(std::ptr::null_mut());
    f(ptrs.as_mut_ptr())
}

fn names(p: &Probe) -> Vec<String> {
    p.names.lock().unwrap().clone()
}

fn completion_errors(p: &Probe) -> Vec<c_int> {
    p.errors.lock().unwrap().clone()
}

/// Sets the two requests off, so that nothing but the explicit calls asks
/// for structured replies or extended headers.
fn ask_nothing(h: &H) {
    // SAFETY: h is open.
    unsafe {
        assert_eq!(
            nbd_ffi::negotiation::nbd_set_request_structured_replies(h.0, false),
            0
        );
        assert_eq!(
            nbd_ffi::negotiation::nbd_set_request_extended_headers(h.0, false),
            0
        );
    }
}

// ---------------------------------------------------------------------------
// Settings and states

#[test]
fn request_settings_default_on_and_follow_their_states() {
    let h = H::new();
    // SAFETY: h is open throughout.
    unsafe {
        use nbd_ffi::negotiation::*;
        assert_eq!(nbd_get_request_meta_context(h.0), 1);
        assert_eq!(nbd_get_request_extended_headers(h.0), 1);
        assert_eq!(nbd_set_request_meta_context(h.0, false), 0);
        assert_eq!(nbd_get_request_meta_context(h.0), 0);
        assert_eq!(nbd_set_request_extended_headers(h.0, false), 0);
        assert_eq!(nbd_get_request_extended_headers(h.0), 0);
        // NULL handle.
        assert_eq!(nbd_set_request_meta_context(std::ptr::null_mut(), true), -1);
        assert_eq!(errno(), EFAULT);
        assert_eq!(nbd_get_request_extended_headers(std::ptr::null_mut()), -1);
        assert_eq!(errno(), EFAULT);
    }

    // While negotiating: request_meta_context may change, extended headers
    // may not (they were asked for already).
    let server = Server::qemu("settings-states");
    let h = H::opt_mode(&server, |_| {});
    // SAFETY: h is open throughout.
    unsafe {
        use nbd_ffi::negotiation::*;
        assert_eq!(nbd_set_request_meta_context(h.0, false), 0);
        assert_eq!(nbd_get_request_meta_context(h.0), 0);
        assert_eq!(nbd_set_request_extended_headers(h.0, false), -1);
        assert_eq!(errno(), EINVAL);
        assert_eq!(nbd_get_request_extended_headers(h.0), 1, "unchanged");
        assert_eq!(h.opt_go(), 0, "{:?}", last_error());
        assert!(h.ready());
        assert_eq!(nbd_set_request_meta_context(h.0, true), -1);
        assert_eq!(errno(), EINVAL);
        assert_eq!(nbd_get_request_meta_context(h.0), 0, "unchanged");
    }
}

#[test]
fn new_opt_calls_fail_outside_negotiation_with_the_documented_errno() {
    type Call = unsafe extern "C" fn(*mut Handle) -> c_int;
    let calls: [(&str, Call); 3] = [
        ("opt_starttls", nbd_ffi::opt::nbd_opt_starttls),
        (
            "opt_extended_headers",
            nbd_ffi::opt::nbd_opt_extended_headers,
        ),
        (
            "opt_structured_reply",
            nbd_ffi::opt::nbd_opt_structured_reply,
        ),
    ];
    let created = H::new();
    let server = Server::qemu("wrong-states");
    let ready = H::new();
    ready.connect(&server);
    assert!(ready.ready());
    for (name, f) in calls {
        // SAFETY: both handles are open.
        unsafe {
            assert_eq!(f(created.0), -1, "{name}");
            assert_eq!(errno(), ENOTCONN, "{name} before connecting");
            assert_eq!(f(ready.0), -1, "{name}");
            assert_eq!(errno(), EINVAL, "{name} once connected");
            assert_eq!(f(std::ptr::null_mut()), -1, "{name}");
            assert_eq!(errno(), EFAULT, "{name} without a handle");
        }
    }
    let p = Probe::new();
    assert_eq!(created.set_meta_context(p), -1);
    assert_eq!(errno(), ENOTCONN);
    assert_eq!(ready.set_meta_context_queries(&["base:allocation"], p), -1);
    assert_eq!(errno(), EINVAL);
    assert_eq!(ready.list_meta_context_queries(&[], p), -1);
    assert_eq!(errno(), EINVAL);
    assert_eq!(p.calls(), 0);
    assert_eq!(p.frees(), 3, "each refused call frees its callback");
    let c = Probe::new();
    // SAFETY: the handles are open; the callbacks carry leaked probes.
    unsafe {
        use nbd_ffi::opt::*;
        assert_eq!(nbd_aio_opt_starttls(created.0, c.completion()), -1);
        assert_eq!(errno(), ENOTCONN);
        assert_eq!(nbd_aio_opt_extended_headers(ready.0, c.completion()), -1);
        assert_eq!(errno(), EINVAL);
        assert_eq!(nbd_aio_opt_structured_reply(ready.0, c.completion()), -1);
        assert_eq!(errno(), EINVAL);
        let p = Probe::new();
        assert_eq!(
            nbd_aio_opt_set_meta_context(ready.0, p.context(), c.completion()),
            -1
        );
        assert_eq!(errno(), EINVAL);
        p.assert_freed_once();
    }
    assert_eq!(c.calls(), 0, "no completion for a refused call");
    assert_eq!(c.frees(), 4);
}

#[test]
fn queries_and_callbacks_must_not_be_null() {
    let server = Server::qemu("nulls");
    let h = H::opt_mode(&server, |_| {});
    let p = Probe::new();
    let null_context = nbd_ffi::callbacks::ContextCallback {
        callback: None,
        user_data: std::ptr::null_mut(),
        free: None,
    };
    // SAFETY: h is open; the NULL arguments are what is tested.
    unsafe {
        use nbd_ffi::opt::*;
        assert_eq!(
            nbd_opt_set_meta_context_queries(h.0, std::ptr::null_mut(), p.context()),
            -1
        );
        assert_eq!(errno(), EFAULT);
        assert_eq!(
            nbd_opt_list_meta_context_queries(h.0, std::ptr::null_mut(), p.context()),
            -1
        );
        assert_eq!(errno(), EFAULT);
        assert_eq!(nbd_opt_set_meta_context(h.0, null_context), -1);
        assert_eq!(errno(), EFAULT);
        let c = Probe::new();
        assert_eq!(
            nbd_aio_opt_set_meta_context_queries(
                h.0,
                std::ptr::null_mut(),
                p.context(),
                c.completion()
            ),
            -1
        );
        assert_eq!(errno(), EFAULT);
        assert_eq!(c.calls(), 0);
        c.assert_freed_once();
    }
    assert_eq!(p.frees(), 3);
    assert!(h.negotiating(), "nothing was sent");
    assert_eq!(h.opt_go(), 0);
}

// ---------------------------------------------------------------------------
// qemu-nbd: extended headers

#[test]
fn qemu_opt_extended_headers_then_structured_reply_refused_as_redundant() {
    let server = Server::qemu("qemu-eh");
    let h = H::opt_mode(&server, ask_nothing);
    assert_eq!(h.structured(), 0, "nothing was asked for automatically");
    assert_eq!(h.extended_headers(), 1, "{:?}", last_error());
    assert_eq!(
        h.structured(),
        1,
        "extended headers imply structured replies"
    );
    // qemu refuses both once extended headers are in force; what was
    // negotiated stays.
    assert_eq!(h.extended_headers(), 0);
    assert_eq!(h.structured_reply(), 0);
    assert_eq!(h.structured(), 1);
    assert!(h.negotiating());
    h.add_meta_context("base:allocation");
    assert_eq!(h.opt_go(), 0, "{:?}", last_error());
    assert_eq!(h.block_status(), Ok(vec!["base:allocation".to_string()]));
}

#[test]
fn qemu_aio_forms_report_agreement_and_refusal_through_error() {
    let server = Server::qemu("qemu-aio");
    let h = H::opt_mode(&server, ask_nothing);
    let c1 = Probe::new();
    // SAFETY: h is open; the callback carries a leaked probe.
    let rc = unsafe { nbd_ffi::opt::nbd_aio_opt_structured_reply(h.0, c1.completion()) };
    assert_eq!(rc, 0);
    h.wait(c1);
    assert_eq!(completion_errors(c1), [0], "agreed");
    c1.assert_freed_once();
    assert_eq!(h.structured(), 1);

    let c2 = Probe::new();
    // SAFETY: as above.
    let rc = unsafe { nbd_ffi::opt::nbd_aio_opt_extended_headers(h.0, c2.completion()) };
    assert_eq!(rc, 0);
    h.wait(c2);
    let e = completion_errors(c2);
    assert_eq!(e.len(), 1);
    c2.assert_freed_once();
    // qemu agrees to extended headers after structured replies.
    assert_eq!(e[0], 0);

    let c3 = Probe::new();
    // SAFETY: as above.
    let rc = unsafe { nbd_ffi::opt::nbd_aio_opt_structured_reply(h.0, c3.completion()) };
    assert_eq!(rc, 0);
    h.wait(c3);
    // qemu calls the request invalid once extended headers are in force.
    assert_eq!(completion_errors(c3), [EINVAL]);
    c3.assert_freed_once();
    assert!(h.negotiating());
    assert_eq!(h.opt_go(), 0);
}

#[test]
fn qemu_set_meta_context_selects_what_block_status_uses() {
    let server = Server::qemu("qemu-set-meta");
    let h = H::opt_mode(&server, |h| {
        h.add_meta_context("base:allocation");
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::negotiation::nbd_set_request_meta_context(h.0, false) };
        assert_eq!(rc, 0);
    });
    let p = Probe::new();
    assert_eq!(h.set_meta_context(p), 1, "{:?}", last_error());
    assert_eq!(names(p), ["base:allocation"]);
    p.assert_freed_once();
    assert_eq!(h.can_meta_context("base:allocation"), 1);
    // nbd_opt_go does not ask again (request_meta_context is off) and the
    // selection stays in force.
    assert_eq!(h.opt_go(), 0, "{:?}", last_error());
    assert_eq!(h.can_meta_context("base:allocation"), 1);
    assert_eq!(h.block_status(), Ok(vec!["base:allocation".to_string()]));
}

#[test]
fn qemu_set_meta_context_queries_use_the_list_given_not_the_handles() {
    let server = Server::qemu("qemu-queries");
    let h = H::opt_mode(&server, |_| {});
    let l = Probe::new();
    let n = h.list_meta_context_queries(&["base:"], l);
    assert!(n >= 1, "{n}: {:?}", last_error());
    assert!(
        names(l).contains(&"base:allocation".to_string()),
        "{:?}",
        names(l)
    );
    l.assert_freed_once();

    let p = Probe::new();
    assert_eq!(
        h.set_meta_context_queries(&["base:allocation", "nosuch:context"], p),
        1
    );
    assert_eq!(names(p), ["base:allocation"]);
    // The handle's own list is untouched.
    // SAFETY: h is open.
    let rc = unsafe { nbd_ffi::negotiation::nbd_get_nr_meta_contexts(h.0) };
    assert_eq!(rc, 0);
    assert_eq!(h.can_meta_context("base:allocation"), 1);
    assert_eq!(h.can_meta_context("nosuch:context"), 0);

    // Selecting nothing forgets the earlier selection.
    let q = Probe::new();
    assert_eq!(h.set_meta_context_queries(&["nosuch:context"], q), 0);
    assert_eq!(q.calls(), 0);
    assert_eq!(h.can_meta_context("base:allocation"), 0);

    // The aio form, with its completion after the context callback.
    let ctx = Probe::new();
    let done = Probe::new();
    let rc = with_list(&["base:allocation"], |q| {
        // SAFETY: h is open; q is a NULL-terminated list; leaked probes.
        unsafe {
            nbd_ffi::opt::nbd_aio_opt_set_meta_context_queries(
                h.0,
                q,
                ctx.context(),
                done.completion(),
            )
        }
    });
    assert_eq!(rc, 0);
    h.wait(done);
    assert_eq!(completion_errors(done), [0]);
    assert_eq!(names(ctx), ["base:allocation"]);
    ctx.assert_freed_once();
    done.assert_freed_once();
    assert_eq!(h.can_meta_context("base:allocation"), 1);

    // nbd_opt_go with request_meta_context on and an empty handle list
    // forgets the selection, as libnbd does.
    assert_eq!(h.opt_go(), 0);
    assert_ne!(h.can_meta_context("base:allocation"), 1);
    assert!(h.block_status().is_err());
}

#[test]
fn qemu_aio_list_and_set_meta_context_forms() {
    let server = Server::qemu("qemu-aio-meta");
    let h = H::opt_mode(&server, |h| h.add_meta_context("base:allocation"));
    let ctx = Probe::new();
    let done = Probe::new();
    let rc = with_list(&[], |q| {
        // SAFETY: h is open; q is an empty NULL-terminated list; leaked probes.
        unsafe {
            nbd_ffi::opt::nbd_aio_opt_list_meta_context_queries(
                h.0,
                q,
                ctx.context(),
                done.completion(),
            )
        }
    });
    assert_eq!(rc, 0);
    h.wait(done);
    assert_eq!(completion_errors(done), [0]);
    assert!(names(ctx).contains(&"base:allocation".to_string()));
    ctx.assert_freed_once();
    done.assert_freed_once();
    // Listing selects nothing: with a context asked for and none selected
    // yet, libnbd 1.24 fails (EINVAL), as it does before any request.
    assert_eq!(
        h.can_meta_context("base:allocation"),
        -1,
        "listing selects nothing"
    );
    assert_eq!(errno(), libc::EINVAL);

    let ctx = Probe::new();
    let done = Probe::new();
    // SAFETY: h is open; leaked probes.
    let rc = unsafe {
        nbd_ffi::opt::nbd_aio_opt_set_meta_context(h.0, ctx.context(), done.completion())
    };
    assert_eq!(rc, 0);
    h.wait(done);
    assert_eq!(completion_errors(done), [0]);
    assert_eq!(names(ctx), ["base:allocation"]);
    assert_eq!(h.can_meta_context("base:allocation"), 1);
    assert_eq!(h.opt_go(), 0);
    assert_eq!(h.block_status(), Ok(vec!["base:allocation".to_string()]));
}

#[test]
fn request_meta_context_off_skips_the_automatic_selection() {
    let server = Server::qemu("qemu-no-request-meta");
    // Connecting outside opt mode.
    let h = H::new();
    h.add_meta_context("base:allocation");
    // SAFETY: h is open.
    let rc = unsafe { nbd_ffi::negotiation::nbd_set_request_meta_context(h.0, false) };
    assert_eq!(rc, 0);
    h.connect(&server);
    assert!(h.ready());
    assert_ne!(h.can_meta_context("base:allocation"), 1);
    assert!(h.block_status().is_err(), "no context was selected");

    // nbd_opt_info and nbd_opt_go in opt mode.
    let h = H::opt_mode(&server, |h| {
        h.add_meta_context("base:allocation");
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::negotiation::nbd_set_request_meta_context(h.0, false) };
        assert_eq!(rc, 0);
    });
    assert_eq!(h.opt_info(), 0);
    assert_ne!(h.can_meta_context("base:allocation"), 1);
    assert_eq!(h.opt_go(), 0);
    assert_ne!(h.can_meta_context("base:allocation"), 1);

    // The default selects it on the way.
    let h = H::opt_mode(&server, |h| h.add_meta_context("base:allocation"));
    assert_eq!(h.opt_info(), 0);
    assert_eq!(h.can_meta_context("base:allocation"), 1);
    assert_eq!(h.opt_go(), 0);
    assert_eq!(h.block_status(), Ok(vec!["base:allocation".to_string()]));
}

#[test]
fn set_export_name_while_negotiating_forgets_the_selected_contexts() {
    let server = Server::qemu("qemu-export-name");
    let h = H::opt_mode(&server, |h| h.add_meta_context("base:allocation"));
    let p = Probe::new();
    assert_eq!(h.set_meta_context(p), 1);
    assert_eq!(h.can_meta_context("base:allocation"), 1);
    let name = CString::new("").unwrap();
    // SAFETY: h is open; name is a C string.
    let rc = unsafe { nbd_ffi::negotiation::nbd_set_export_name(h.0, name.as_ptr()) };
    assert_eq!(rc, 0);
    assert_ne!(h.can_meta_context("base:allocation"), 1);
}

// ---------------------------------------------------------------------------
// nbdkit 1.32: no extended headers; TLS

#[test]
fn nbdkit_without_extended_headers_refuses_them() {
    let server = Server::nbdkit("nbdkit-no-eh", &[]);
    let h = H::opt_mode(&server, ask_nothing);
    assert_eq!(h.extended_headers(), 0, "{:?}", last_error());
    assert!(h.negotiating());
    assert_eq!(h.structured(), 0);
    let c = Probe::new();
    // SAFETY: h is open; leaked probe.
    let rc = unsafe { nbd_ffi::opt::nbd_aio_opt_extended_headers(h.0, c.completion()) };
    assert_eq!(rc, 0);
    h.wait(c);
    assert_eq!(completion_errors(c), [ENOTSUP]);
    c.assert_freed_once();
    assert_eq!(h.structured_reply(), 1, "{:?}", last_error());
    assert_eq!(h.structured(), 1);
    h.add_meta_context("base:allocation");
    assert_eq!(h.opt_go(), 0, "{:?}", last_error());
    assert_eq!(h.block_status(), Ok(vec!["base:allocation".to_string()]));
}

#[test]
fn nbdkit_automatic_negotiation_falls_back_to_structured_replies() {
    let server = Server::nbdkit("nbdkit-auto", &[]);
    let h = H::new();
    h.add_meta_context("base:allocation");
    h.connect(&server);
    assert!(h.ready());
    assert_eq!(h.structured(), 1);
    assert_eq!(h.can_meta_context("base:allocation"), 1);
}

#[test]
fn nbdkit_without_tls_refuses_starttls() {
    let server = Server::nbdkit("nbdkit-no-tls", &[]);
    let h = H::opt_mode(&server, |_| {});
    assert_eq!(h.starttls(), 0, "{:?}", last_error());
    assert!(h.negotiating());
    let c = Probe::new();
    // SAFETY: h is open; leaked probe.
    let rc = unsafe { nbd_ffi::opt::nbd_aio_opt_starttls(h.0, c.completion()) };
    assert_eq!(rc, 0);
    h.wait(c);
    let e = completion_errors(c);
    assert!(e == [ENOTSUP] || e == [EINVAL], "{e:?}");
    assert_eq!(h.opt_go(), 0);
    h.pread_ok();
}

/// A key file for nbdkit and the handle: `alice` with a random key.
fn psk_keys(dir: &Path, user: &str, key: &str) -> PathBuf {
    let path = dir.join(format!("{user}-keys.psk"));
    std::fs::write(&path, format!("{user}:{key}\n")).unwrap();
    path
}

fn tls_credentials(h: &H, keys: &Path, user: &str) {
    let keys = CString::new(keys.to_str().unwrap()).unwrap();
    let user = CString::new(user).unwrap();
    // SAFETY: h is open; the strings are C strings.
    unsafe {
        assert_eq!(nbd_ffi::tls::nbd_set_tls_psk_file(h.0, keys.as_ptr()), 0);
        assert_eq!(nbd_ffi::tls::nbd_set_tls_username(h.0, user.as_ptr()), 0);
    }
}

const KEY_HEX: &str = "8c5a3f0e9d2b7c41a6e0f3d8b2c9e7a15f4d3c2b1a0e9f8d7c6b5a4f3e2d1c0b";

#[test]
fn nbdkit_psk_opt_starttls_runs_the_handshake_with_tls_mode_disabled() {
    let dir = common::scratch("nbdkit-psk-keys");
    let keys = psk_keys(&dir, "alice", KEY_HEX);
    let psk = format!("--tls-psk={}", keys.display());
    let server = Server::nbdkit("nbdkit-psk", &["--tls=on", &psk]);
    // The handle's TLS mode stays LIBNBD_TLS_DISABLE: nothing automatic.
    let h = H::opt_mode(&server, |h| tls_credentials(h, &keys, "alice"));
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_ffi::tls::nbd_get_tls_negotiated(h.0) }, 0);
    assert_eq!(h.starttls(), 1, "{:?}", last_error());
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_ffi::tls::nbd_get_tls_negotiated(h.0) }, 1);
    assert!(h.negotiating());
    assert_eq!(h.structured_reply(), 1);
    assert_eq!(h.opt_go(), 0, "{:?}", last_error());
    h.pread_ok();

    // The aio form on a second connection.
    let h = H::opt_mode(&server, |h| tls_credentials(h, &keys, "alice"));
    let c = Probe::new();
    // SAFETY: h is open; leaked probe.
    let rc = unsafe { nbd_ffi::opt::nbd_aio_opt_starttls(h.0, c.completion()) };
    assert_eq!(rc, 0);
    h.wait(c);
    assert_eq!(completion_errors(c), [0]);
    c.assert_freed_once();
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_ffi::tls::nbd_get_tls_negotiated(h.0) }, 1);
    assert_eq!(h.opt_go(), 0);
    h.pread_ok();
}

#[test]
fn nbdkit_psk_wrong_key_fails_opt_starttls_and_kills_the_handle() {
    let dir = common::scratch("nbdkit-psk-wrong-keys");
    let keys = psk_keys(&dir, "alice", KEY_HEX);
    let wrong = psk_keys(
        &dir,
        "bob",
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    );
    let psk = format!("--tls-psk={}", keys.display());
    let server = Server::nbdkit("nbdkit-psk-wrong", &["--tls=on", &psk]);
    let h = H::opt_mode(&server, |h| tls_credentials(h, &wrong, "bob"));
    assert_eq!(h.starttls(), -1);
    assert!(h.dead(), "a failed handshake ends the connection");
}

// ---------------------------------------------------------------------------
// Scripted server: refusals no real server makes

/// Negotiates in opt mode until the client sends `option`, then refuses it
/// with `reply_type`, then serves correctly.
fn refuse_once(option: u32, reply_type: u32) -> impl FnOnce(&mut Evil) + Send + 'static {
    move |s| {
        s.greet();
        let req = s.negotiate_until(|r| r.code() == option);
        assert!(req.is_some(), "the client never sent option {option}");
        s.refuse(option, reply_type);
        s.send();
        s.negotiate();
        s.serve();
    }
}

fn opt_conn(
    mode: Mode,
    setup: impl FnOnce(*mut Handle),
    script: impl FnOnce(&mut Evil) + Send + 'static,
) -> Conn {
    let c = Conn::start(
        Export::new(mode),
        |h| {
            setup::opt_mode(h);
            // SAFETY: h is open.
            unsafe {
                assert_eq!(
                    nbd_ffi::negotiation::nbd_set_request_structured_replies(h, false),
                    0
                );
            }
            setup(h);
        },
        script,
    );
    assert_eq!(c.rc, 0, "{:?}", last_error());
    assert!(c.is_negotiating());
    c
}

/// Issues an aio boolean option and returns the completion's `*error`.
fn aio_error(
    c: &Conn,
    f: unsafe extern "C" fn(*mut Handle, nbd_ffi::callbacks::CompletionCallback) -> c_int,
) -> c_int {
    let p = Probe::new();
    // SAFETY: h is open; leaked probe.
    assert_eq!(unsafe { f(c.h, p.completion()) }, 0);
    c.poll_until(|_| p.calls() > 0);
    p.assert_freed_once();
    let e = completion_errors(p);
    assert_eq!(e.len(), 1);
    e[0]
}

#[test]
fn refusal_errno_is_einval_for_err_invalid_else_enotsup() {
    let cases: [(u32, u32, c_int); 7] = [
        (opt::EXTENDED_HEADERS, rep::ERR_UNSUP, ENOTSUP),
        (opt::EXTENDED_HEADERS, rep::ERR_POLICY, ENOTSUP),
        (opt::EXTENDED_HEADERS, rep::ERR_INVALID, EINVAL),
        (opt::STRUCTURED_REPLY, rep::ERR_UNSUP, ENOTSUP),
        (opt::STRUCTURED_REPLY, rep::ERR_INVALID, EINVAL),
        (opt::STRUCTURED_REPLY, rep::ERR_EXT_HEADER_REQD, EINVAL),
        (opt::STARTTLS, rep::ERR_INVALID, EINVAL),
    ];
    for (option, reply_type, want) in cases {
        let f = match option {
            opt::EXTENDED_HEADERS => nbd_ffi::opt::nbd_aio_opt_extended_headers,
            opt::STRUCTURED_REPLY => nbd_ffi::opt::nbd_aio_opt_structured_reply,
            _ => nbd_ffi::opt::nbd_aio_opt_starttls,
        };
        let c = opt_conn(Mode::Extended, setup::none, refuse_once(option, reply_type));
        assert_eq!(
            aio_error(&c, f),
            want,
            "option {option} refused with {reply_type:#x}"
        );
        assert!(c.is_negotiating());
        assert_eq!(c.opt_go(), 0);
        c.finish();

        // The synchronous form returns 0 for the same refusal.
        let g = match option {
            opt::EXTENDED_HEADERS => nbd_ffi::opt::nbd_opt_extended_headers,
            opt::STRUCTURED_REPLY => nbd_ffi::opt::nbd_opt_structured_reply,
            _ => nbd_ffi::opt::nbd_opt_starttls,
        };
        let c = opt_conn(Mode::Extended, setup::none, refuse_once(option, reply_type));
        // SAFETY: h is open.
        assert_eq!(unsafe { g(c.h) }, 0, "{:?}", last_error());
        assert!(c.is_negotiating());
        assert_eq!(c.opt_go(), 0);
        c.finish();
    }
}

#[test]
fn a_refusal_after_agreement_keeps_what_was_negotiated() {
    // Extended headers agreed, then refused on a second request: still in
    // force (and structured replies with them).
    let c = opt_conn(Mode::Extended, setup::meta, |s| {
        s.greet();
        let req = s.negotiate_until(|r| *r == OptionRequest::ExtendedHeaders);
        s.answer(&req.unwrap());
        let req = s.negotiate_until(|r| *r == OptionRequest::ExtendedHeaders);
        assert!(req.is_some());
        s.refuse(opt::EXTENDED_HEADERS, rep::ERR_INVALID);
        s.send();
        s.negotiate();
        s.serve();
    });
    // SAFETY: h is open.
    unsafe {
        assert_eq!(nbd_ffi::opt::nbd_opt_extended_headers(c.h), 1);
        assert_eq!(nbd_ffi::opt::nbd_opt_extended_headers(c.h), 0);
        assert_eq!(nbd_ffi::info::nbd_get_structured_replies_negotiated(c.h), 1);
    }
    assert_eq!(c.opt_go(), 0);
    let p = Probe::new();
    assert_eq!(
        c.block_status(65536, 0, p.extent(), 0),
        0,
        "{:?}",
        last_error()
    );
    assert_eq!(p.extents.lock().unwrap()[0].context, BASE_ALLOCATION);
    c.finish();
}

#[test]
fn opt_structured_reply_is_sent_even_when_already_negotiated() {
    let c = opt_conn(Mode::Structured, setup::none, |s| {
        s.greet();
        let first = s.negotiate_until(|r| *r == OptionRequest::StructuredReply);
        s.answer(&first.unwrap());
        let second = s.negotiate_until(|r| *r == OptionRequest::StructuredReply);
        assert!(second.is_some(), "the second request was not sent");
        s.reply(opt::STRUCTURED_REPLY, OptionReply::Ack);
        s.send();
        s.negotiate();
    });
    // SAFETY: h is open.
    unsafe {
        assert_eq!(nbd_ffi::opt::nbd_opt_structured_reply(c.h), 1);
        assert_eq!(nbd_ffi::opt::nbd_opt_structured_reply(c.h), 1);
    }
    assert_eq!(c.opt_go(), 0);
    c.finish();
}

#[test]
fn set_meta_context_refused_fails_with_enotsup_and_selects_nothing() {
    let c = opt_conn(Mode::Structured, setup::meta, |s| {
        s.greet();
        let sr = s.negotiate_until(|r| *r == OptionRequest::StructuredReply);
        s.answer(&sr.unwrap());
        // A first selection succeeds ...
        let set = s.negotiate_until(|r| r.code() == opt::SET_META_CONTEXT);
        s.answer(&set.unwrap());
        // ... the second is refused after naming a context.
        let set = s.negotiate_until(|r| r.code() == opt::SET_META_CONTEXT);
        assert!(set.is_some());
        s.reply(
            opt::SET_META_CONTEXT,
            OptionReply::MetaContext(MetaContext {
                id: BASE_ID,
                name: BASE_ALLOCATION.into(),
            }),
        );
        s.refuse(opt::SET_META_CONTEXT, rep::ERR_TOO_BIG);
        s.send();
        s.negotiate();
    });
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_ffi::opt::nbd_opt_structured_reply(c.h) }, 1);
    let p = Probe::new();
    // SAFETY: h is open; leaked probe.
    let rc = unsafe { nbd_ffi::opt::nbd_opt_set_meta_context(c.h, p.context()) };
    assert_eq!(rc, 1);
    let q = Probe::new();
    // SAFETY: as above.
    let rc = unsafe { nbd_ffi::opt::nbd_opt_set_meta_context(c.h, q.context()) };
    assert_eq!(rc, -1);
    assert_eq!(errno(), ENOTSUP);
    assert_eq!(
        names(q),
        [BASE_ALLOCATION],
        "the context before the error was reported"
    );
    q.assert_freed_once();
    let name = CString::new(BASE_ALLOCATION).unwrap();
    // SAFETY: h is open; name is a C string.
    let rc = unsafe { nbd_ffi::info::nbd_can_meta_context(c.h, name.as_ptr()) };
    assert_ne!(rc, 1, "a failed selection selects nothing");
    assert!(c.is_negotiating());
    c.finish();
}

#[test]
fn negotiation_order_is_extended_headers_structured_reply_meta_go() {
    // The automatic order (no TLS): EXTENDED_HEADERS, then STRUCTURED_REPLY
    // only if it was refused, then SET_META_CONTEXT, then GO.
    for (mode, want) in [
        (
            Mode::Extended,
            vec![opt::EXTENDED_HEADERS, opt::SET_META_CONTEXT, opt::GO],
        ),
        (
            Mode::Structured,
            vec![
                opt::EXTENDED_HEADERS,
                opt::STRUCTURED_REPLY,
                opt::SET_META_CONTEXT,
                opt::GO,
            ],
        ),
        (
            Mode::Simple,
            vec![opt::EXTENDED_HEADERS, opt::STRUCTURED_REPLY, opt::GO],
        ),
    ] {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let c = Conn::start(Export::new(mode), setup::meta, move |s| {
            s.greet();
            s.negotiate_until(|r| {
                log.lock().unwrap().push(r.code());
                false
            });
        });
        assert_eq!(c.rc, 0, "{:?}", last_error());
        c.finish();
        assert_eq!(*seen.lock().unwrap(), want, "{mode:?}");
    }
}

#[test]
fn request_extended_headers_off_or_structured_replies_off() {
    type Setup = fn(*mut Handle);
    let no_eh: Setup = |h| {
        setup::meta(h);
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::negotiation::nbd_set_request_extended_headers(h, false) };
        assert_eq!(rc, 0);
    };
    let no_sr: Setup = |h| {
        setup::meta(h);
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::negotiation::nbd_set_request_structured_replies(h, false) };
        assert_eq!(rc, 0);
    };
    // Without structured replies the extended headers setting is ignored.
    for (setup, want) in [
        (
            no_eh,
            vec![opt::STRUCTURED_REPLY, opt::SET_META_CONTEXT, opt::GO],
        ),
        (no_sr, vec![opt::GO]),
    ] {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let c = Conn::start(Export::new(Mode::Extended), setup, move |s| {
            s.greet();
            s.negotiate_until(|r| {
                log.lock().unwrap().push(r.code());
                false
            });
        });
        assert_eq!(c.rc, 0, "{:?}", last_error());
        c.finish();
        assert_eq!(*seen.lock().unwrap(), want);
    }
}

#[test]
fn connection_lost_during_opt_extended_headers_is_an_error_not_a_refusal() {
    let c = opt_conn(Mode::Extended, setup::none, |s| {
        s.greet();
        let req = s.negotiate_until(|r| *r == OptionRequest::ExtendedHeaders);
        assert!(req.is_some());
        s.hang_up();
    });
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_ffi::opt::nbd_opt_extended_headers(c.h) }, -1);
    assert!(c.is_dead() || !c.is_negotiating());
    c.finish();
}

#[test]
fn scripted_starttls_with_tls_disabled_then_a_second_request() {
    // TLS mode left at DISABLE with PSK credentials: nbd_opt_starttls runs
    // the handshake; a second request refused by the server returns 0 and
    // TLS stays up; a server accepting it twice kills the connection.
    let dir = common::scratch("scripted-starttls");
    let keys = psk_keys(&dir, "alice", KEY_HEX);
    let key: Vec<u8> = (0..KEY_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&KEY_HEX[i..i + 2], 16).unwrap())
        .collect();
    for accept_twice in [false, true] {
        let k = key.clone();
        let keys2 = keys.clone();
        let c = opt_conn(
            Mode::Structured,
            move |h| {
                let keys = CString::new(keys2.to_str().unwrap()).unwrap();
                let user = CString::new("alice").unwrap();
                // SAFETY: h is open; C strings.
                unsafe {
                    assert_eq!(nbd_ffi::tls::nbd_set_tls_psk_file(h, keys.as_ptr()), 0);
                    assert_eq!(nbd_ffi::tls::nbd_set_tls_username(h, user.as_ptr()), 0);
                }
            },
            move |s| {
                s.greet();
                let req = s.negotiate_until(|r| *r == OptionRequest::StartTls);
                assert!(req.is_some());
                s.reply(opt::STARTTLS, OptionReply::Ack);
                s.send();
                s.start_tls_psk("alice", &k).expect("handshake");
                let req = s.negotiate_until(|r| *r == OptionRequest::StartTls);
                assert!(req.is_some(), "the second STARTTLS was not sent");
                if accept_twice {
                    s.reply(opt::STARTTLS, OptionReply::Ack);
                    s.send();
                    s.wait_close();
                } else {
                    s.refuse(opt::STARTTLS, rep::ERR_INVALID);
                    s.send();
                    s.negotiate();
                }
            },
        );
        // SAFETY: h is open throughout.
        unsafe {
            assert_eq!(nbd_ffi::opt::nbd_opt_starttls(c.h), 1, "{:?}", last_error());
            assert_eq!(nbd_ffi::tls::nbd_get_tls_negotiated(c.h), 1);
            if accept_twice {
                assert_eq!(nbd_ffi::opt::nbd_opt_starttls(c.h), -1);
                assert_eq!(errno(), EPROTO, "{:?}", last_error());
                assert!(c.is_dead());
            } else {
                assert_eq!(nbd_ffi::opt::nbd_opt_starttls(c.h), 0);
                assert_eq!(nbd_ffi::tls::nbd_get_tls_negotiated(c.h), 1);
                assert_eq!(c.opt_go(), 0, "{:?}", last_error());
            }
        }
        c.finish();
    }
}
