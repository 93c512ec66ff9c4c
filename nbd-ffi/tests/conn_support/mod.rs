//! Helpers for the connect/TLS/URI tests of libnbd 1.16-1.24 calls
//! (connect_1_24.rs, connect_ssh.rs): a handle calling the exports
//! directly, and nbdkit servers on Unix sockets or TCP.

#![allow(dead_code)] // Each test binary uses a different subset.

use nbd_ffi::handle::Handle;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A C string.
pub(crate) fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

/// The thread's last error: `(nbd_get_errno(), nbd_get_error())`.
pub(crate) fn last_error() -> (c_int, String) {
    // SAFETY: both read this thread's last error; the message is copied at
    // once, before any other call.
    unsafe {
        let errno = nbd_ffi::errors::nbd_get_errno();
        let msg = nbd_ffi::errors::nbd_get_error();
        let text = if msg.is_null() {
            String::new()
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        (errno, text)
    }
}

/// A `malloc`ed string returned by the library, copied and freed; `None`
/// for NULL.
pub(crate) fn take(p: *mut c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: p is a NUL-terminated string from malloc that the caller owns.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: as above; freed once.
    unsafe { libc::free(p.cast()) };
    Some(s)
}

/// An `int` result: `Ok(value)`, or `Err((errno, message))` for -1.
pub(crate) fn check(rc: c_int) -> Result<c_int, (c_int, String)> {
    if rc == -1 {
        Err(last_error())
    } else {
        Ok(rc)
    }
}

/// A handle, closed when dropped.
pub(crate) struct H(pub(crate) *mut Handle);

impl H {
    /// `nbd_create`.
    pub(crate) fn new() -> H {
        // SAFETY: nbd_create has no preconditions.
        let h = unsafe { nbd_ffi::handle::nbd_create() };
        assert!(!h.is_null());
        H(h)
    }

    /// Runs `f` on the handle (an export call) and checks an `int` result.
    pub(crate) fn int(
        &self,
        f: unsafe extern "C" fn(*mut Handle) -> c_int,
    ) -> Result<c_int, (c_int, String)> {
        // SAFETY: self.0 is open; f is an export taking only the handle.
        check(unsafe { f(self.0) })
    }

    /// Runs a bool-argument export (`nbd_set_uri_allow_*`...).
    pub(crate) fn set_bool(
        &self,
        f: unsafe extern "C" fn(*mut Handle, bool) -> c_int,
        v: bool,
    ) -> Result<c_int, (c_int, String)> {
        // SAFETY: self.0 is open.
        check(unsafe { f(self.0, v) })
    }

    /// Runs a string-argument export.
    pub(crate) fn with_str(
        &self,
        f: unsafe extern "C" fn(*mut Handle, *const c_char) -> c_int,
        s: &str,
    ) -> Result<c_int, (c_int, String)> {
        let s = c(s);
        // SAFETY: self.0 is open; s is a C string alive for the call.
        check(unsafe { f(self.0, s.as_ptr()) })
    }

    /// Runs a string-argument export with NULL.
    pub(crate) fn with_null(
        &self,
        f: unsafe extern "C" fn(*mut Handle, *const c_char) -> c_int,
    ) -> Result<c_int, (c_int, String)> {
        // SAFETY: self.0 is open; NULL is a permitted (refused) argument.
        check(unsafe { f(self.0, std::ptr::null()) })
    }

    /// Runs a string-returning export.
    pub(crate) fn string(
        &self,
        f: unsafe extern "C" fn(*mut Handle) -> *mut c_char,
    ) -> Result<String, (c_int, String)> {
        // SAFETY: self.0 is open; the result is ours to free (take does).
        take(unsafe { f(self.0) }).ok_or_else(last_error)
    }

    /// `nbd_get_subprocess_pid`.
    pub(crate) fn subprocess_pid(&self) -> Result<i64, (c_int, String)> {
        // SAFETY: self.0 is open.
        let pid = unsafe { nbd_ffi::connect::nbd_get_subprocess_pid(self.0) };
        if pid == -1 {
            Err(last_error())
        } else {
            Ok(pid)
        }
    }

    /// `nbd_get_size`.
    pub(crate) fn size(&self) -> i64 {
        // SAFETY: self.0 is open.
        unsafe { nbd_ffi::info::nbd_get_size(self.0) }
    }

    /// `nbd_set_tls`.
    pub(crate) fn set_tls(&self, mode: c_int) {
        // SAFETY: self.0 is open.
        assert_eq!(unsafe { nbd_ffi::tls::nbd_set_tls(self.0, mode) }, 0);
    }

    /// `nbd_get_tls_negotiated`.
    pub(crate) fn tls_negotiated(&self) -> c_int {
        // SAFETY: self.0 is open.
        unsafe { nbd_ffi::tls::nbd_get_tls_negotiated(self.0) }
    }

    /// `nbd_aio_is_dead`.
    pub(crate) fn is_dead(&self) -> bool {
        // SAFETY: self.0 is open.
        unsafe { nbd_ffi::state::nbd_aio_is_dead(self.0) == 1 }
    }

    /// Runs `argv` with a command-style connect export.
    pub(crate) fn argv(
        &self,
        f: unsafe extern "C" fn(*mut Handle, *mut *mut c_char) -> c_int,
        argv: &[&str],
    ) -> Result<c_int, (c_int, String)> {
        let owned: Vec<CString> = argv.iter().map(|a| c(a)).collect();
        let mut ptrs: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr().cast_mut()).collect();
        ptrs.push(std::ptr::null_mut());
        // SAFETY: self.0 is open; ptrs is a NULL-terminated array of C strings
        // that outlive the call (the library copies them).
        check(unsafe { f(self.0, ptrs.as_mut_ptr()) })
    }
}

impl Drop for H {
    fn drop(&mut self) {
        // SAFETY: self.0 came from nbd_create and is closed once.
        unsafe { nbd_ffi::handle::nbd_close(self.0) };
    }
}

/// A fresh scratch directory under the target directory.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("nbd-ffi-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// An nbdkit server (`-f -v`, debug of TLS sessions on), killed when
/// dropped. Its log is in `log`.
pub(crate) struct Nbdkit {
    child: Child,
    /// The Unix socket, for servers on one.
    pub(crate) socket: PathBuf,
    /// The TCP port, for servers on TCP.
    pub(crate) port: Option<u16>,
    /// stderr of nbdkit.
    pub(crate) log: PathBuf,
}

impl Nbdkit {
    fn start(dir: &Path, listen: &[String], args: &[&str], port: Option<u16>) -> Nbdkit {
        let socket = dir.join("nbdkit.sock");
        let log = dir.join("nbdkit.log");
        let child = Command::new("nbdkit")
            .args(["-f", "-v", "-D", "nbdkit.tls.session=1"])
            .args(listen)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("nbdkit (Debian package nbdkit) must be installed");
        let server = Nbdkit {
            child,
            socket,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match port {
                None => std::os::unix::net::UnixStream::connect(&server.socket).is_ok(),
                Some(p) => std::net::TcpStream::connect(("127.0.0.1", p)).is_ok(),
            };
            if ready {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "nbdkit did not start: {}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// nbdkit on a Unix socket in `dir`.
    pub(crate) fn unix(dir: &Path, args: &[&str]) -> Nbdkit {
        let sock = dir.join("nbdkit.sock");
        Nbdkit::start(dir, &["-U".into(), sock.display().to_string()], args, None)
    }

    /// nbdkit on TCP, 127.0.0.1 and a free port.
    pub(crate) fn tcp(dir: &Path, args: &[&str]) -> Nbdkit {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let listen = [
            "-i".to_string(),
            "127.0.0.1".to_string(),
            "-p".to_string(),
            port.to_string(),
        ];
        Nbdkit::start(dir, &listen, args, Some(port))
    }

    /// The log so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `nbd+unix:///?socket=...`.
    pub(crate) fn unix_uri(&self, scheme: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("&{query}")
        };
        format!("{scheme}:///?socket={}{q}", self.socket.display())
    }
}

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
