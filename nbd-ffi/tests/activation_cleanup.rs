//! Socket activation cleans up after itself on every failure path: its
//! private directory is removed and its child reaped, whether the program
//! is missing, exits at once, or the directory's path is too long for a
//! Unix socket (issue 11). This test changes TMPDIR, so it is the only
//! test in this process.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::{c_char, c_int, CString};
use std::path::Path;

/// `nbd_connect_systemd_socket_activation` with `argv` on a fresh handle,
/// then `nbd_close`; returns the connect's result and errno.
fn activate_and_close(argv: &[&str]) -> (c_int, c_int) {
    let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut ptrs: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    ptrs.push(std::ptr::null_mut());
    // SAFETY: nbd_create has no preconditions; h is open until nbd_close;
    // ptrs is a NULL-terminated array of C strings.
    unsafe {
        let h = nbd_ffi::handle::nbd_create();
        assert!(!h.is_null());
        let rc = nbd_ffi::connect::nbd_connect_systemd_socket_activation(h, ptrs.as_mut_ptr());
        let errno = nbd_ffi::errors::nbd_get_errno();
        nbd_ffi::handle::nbd_close(h);
        (rc, errno)
    }
}

/// Nothing is left: `dir` is empty and this process has no child, alive
/// or unreaped.
fn assert_clean(dir: &Path, what: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{what}: left behind {left:?}");
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG only inspects this process's children.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    let e = std::io::Error::last_os_error().raw_os_error();
    assert!(
        r == -1 && e == Some(libc::ECHILD),
        "{what}: a child was left (waitpid: {r}, {e:?})"
    );
}

#[test]
fn socket_activation_leaves_nothing_behind_when_it_fails() {
    let base = std::env::temp_dir().join(format!("nbd-activation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    std::env::set_var("TMPDIR", &base);

    // A missing program: the child's exec fails and it exits at once, often
    // before the connect (which is then refused).
    for _ in 0..100 {
        let (rc, _) = activate_and_close(&["/nonexistent/nbd-server-program"]);
        assert_eq!(rc, -1);
        assert_clean(&base, "missing program");
    }
    // A program that exits at once without a word.
    for _ in 0..100 {
        let (rc, _) = activate_and_close(&["true"]);
        assert_eq!(rc, -1);
        assert_clean(&base, "child exits early");
    }
    // A TMPDIR so long that the socket's path does not fit a sockaddr_un:
    // the directory is made, then the bind cannot be.
    let long = base.join("d".repeat(100));
    std::fs::create_dir_all(&long).unwrap();
    std::env::set_var("TMPDIR", &long);
    let (rc, errno) = activate_and_close(&["true"]);
    assert_eq!((rc, errno), (-1, libc::ENAMETOOLONG));
    assert_clean(&long, "long TMPDIR");

    std::env::remove_var("TMPDIR");
    std::fs::remove_dir_all(&base).unwrap();
}
