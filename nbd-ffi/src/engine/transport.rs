//! Transports: how a connection's socket comes to be. Every socket ends up as
//! a non-blocking, close-on-exec file descriptor that the engine reads with
//! `recv` and writes with `sendmsg(MSG_NOSIGNAL)`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// A socket whose connection may still be in progress.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) fd: OwnedFd,
    /// `connect` returned `EINPROGRESS`: wait for writability, then check
    /// `SO_ERROR`.
    pub(crate) in_progress: bool,
    /// Remaining TCP addresses to try if this one fails.
    pub(crate) fallbacks: Vec<libc::sockaddr_storage>,
    /// A connect by host name and port (`nbd_connect_tcp`, its URI and
    /// aio forms): when every address failed, the handle is newly created
    /// again, as in libnbd 1.24, rather than dead.
    pub(crate) tcp: bool,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Makes `fd` non-blocking and close-on-exec.
pub(crate) fn prepare_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; no memory is passed.
    unsafe {
        let fl = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
        let fdfl = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, fdfl | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

fn socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    grow_send_buffer(&fd);
    Ok(fd)
}

/// Send buffer asked for on the sockets the library creates: 2 MiB, the
/// size libnbd 1.24 sets (seen with strace). A 1 MiB write then goes out
/// in one `sendmsg` and the server reads it in fewer pieces (measured on
/// nbdkit over a Unix socket, BENCHMARKS.md). It is a limit, not an
/// allocation: an idle connection costs nothing more.
const SEND_BUFFER: libc::c_int = 2 * 1024 * 1024;

/// Raises the socket's send buffer to [`SEND_BUFFER`]; failure (a kernel
/// cap, a socket type without one) only leaves the default.
fn grow_send_buffer(fd: &OwnedFd) {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SEND_BUFFER);
}

/// Sets an integer socket option, ignoring failure (every caller only
/// tunes the socket; the connection works without it).
fn set_int_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt on our own socket with a pointer to a live int and
    // its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &value as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Starts a non-blocking connect of `fd` to `addr`.
fn start_connect(
    fd: &OwnedFd,
    addr: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> io::Result<bool> {
    // SAFETY: addr points to a valid sockaddr of `len` bytes for the call.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            addr as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r == 0 {
        return Ok(false);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINPROGRESS) | Some(libc::EAGAIN) => Ok(true),
        _ => Err(e),
    }
}

fn sockaddr_len(family: libc::c_int) -> libc::socklen_t {
    (match family {
        libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
        libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
        libc::AF_UNIX => std::mem::size_of::<libc::sockaddr_un>(),
        libc::AF_VSOCK => std::mem::size_of::<libc::sockaddr_vm>(),
        _ => std::mem::size_of::<libc::sockaddr_storage>(),
    }) as libc::socklen_t
}

/// Copies a concrete socket address into a `sockaddr_storage`.
fn into_storage<T: Copy>(addr: &T) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = std::mem::size_of::<T>().min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies at most size_of::<sockaddr_storage>() bytes of a plain
    // address struct into the storage; the regions do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr as *const T as *const u8,
            &mut ss as *mut _ as *mut u8,
            n,
        )
    };
    ss
}

/// Connects to a Unix domain socket.
pub(crate) fn connect_unix(path: &Path) -> io::Result<Pending> {
    let ss = into_storage(&unix_addr(path)?);
    let fd = socket(libc::AF_UNIX)?;
    let in_progress = start_connect(&fd, &ss, sockaddr_len(libc::AF_UNIX))?;
    Ok(Pending {
        fd,
        in_progress,
        fallbacks: Vec::new(),
        tcp: false,
    })
}

/// Resolves `host` and `port` (a number or a service name) with getaddrinfo.
pub(crate) fn resolve(host: &str, port: &str) -> io::Result<Vec<libc::sockaddr_storage>> {
    let h = CString::new(host).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let p = CString::new(port).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: addrinfo is plain data; zero is the documented "no hints" value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    hints.ai_flags = libc::AI_ADDRCONFIG;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated strings and out-pointer; freed below.
    let r = unsafe { libc::getaddrinfo(h.as_ptr(), p.as_ptr(), &hints, &mut res) };
    if r != 0 {
        // SAFETY: gai_strerror returns a static string for any code.
        let msg = unsafe { CStr::from_ptr(libc::gai_strerror(r)) }.to_string_lossy();
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host}:{port}: {msg}"),
        ));
    }
    let mut out = Vec::new();
    let mut cur = res;
    while !cur.is_null() {
        // SAFETY: cur walks the list getaddrinfo returned, which stays valid
        // until freeaddrinfo; ai_addr holds ai_addrlen bytes.
        unsafe {
            let ai = &*cur;
            // SAFETY: see above; storage is large enough for any address.
            let mut ss: libc::sockaddr_storage = std::mem::zeroed();
            let n = (ai.ai_addrlen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
            std::ptr::copy_nonoverlapping(ai.ai_addr as *const u8, &mut ss as *mut _ as *mut u8, n);
            out.push(ss);
            cur = ai.ai_next;
        }
    }
    // SAFETY: res came from a successful getaddrinfo and is freed once.
    unsafe { libc::freeaddrinfo(res) };
    if out.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENXIO));
    }
    Ok(out)
}

/// Starts connecting to the first of `addrs`; the rest are fallbacks.
pub(crate) fn connect_addrs(mut addrs: Vec<libc::sockaddr_storage>) -> io::Result<Pending> {
    let mut last = io::Error::from_raw_os_error(libc::ECONNREFUSED);
    while !addrs.is_empty() {
        let a = addrs.remove(0);
        let family = libc::c_int::from(a.ss_family);
        let fd = match socket(family) {
            Ok(fd) => fd,
            Err(e) => {
                last = e;
                continue;
            }
        };
        if family == libc::AF_INET || family == libc::AF_INET6 {
            set_int_option(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
        }
        // A connect in progress may have failed already (a refusal on the
        // loopback interface is immediate): libnbd 1.24 checks at once too,
        // so that it fails in the call that started it.
        let started = start_connect(&fd, &a, sockaddr_len(family))
            .and_then(|in_progress| connect_result(&fd).map(|()| in_progress));
        match started {
            Ok(in_progress) => {
                return Ok(Pending {
                    fd,
                    in_progress,
                    fallbacks: addrs,
                    tcp: true,
                })
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Starts connecting to a caller-supplied socket address (`nbd_aio_connect`).
///
/// # Safety
///
/// `addr` must point to `len` readable bytes.
pub(crate) unsafe fn connect_raw(
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> io::Result<Pending> {
    let max = std::mem::size_of::<libc::sockaddr_storage>();
    if (len as usize) > max || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: plain data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: the caller guarantees len readable bytes; len fits in ss.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr as *const u8,
            &mut ss as *mut _ as *mut u8,
            len as usize,
        )
    };
    let fd = socket(libc::c_int::from(ss.ss_family))?;
    let in_progress = start_connect(&fd, &ss, len)?;
    Ok(Pending {
        fd,
        in_progress,
        fallbacks: Vec::new(),
        tcp: false,
    })
}

/// Connects to a vsock address.
pub(crate) fn connect_vsock(cid: u32, port: u32) -> io::Result<Pending> {
    // SAFETY: sockaddr_vm is plain data.
    let mut vm: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    vm.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    vm.svm_cid = cid;
    vm.svm_port = port;
    let ss = into_storage(&vm);
    let fd = socket(libc::AF_VSOCK)?;
    let in_progress = start_connect(&fd, &ss, sockaddr_len(libc::AF_VSOCK))?;
    Ok(Pending {
        fd,
        in_progress,
        fallbacks: Vec::new(),
        tcp: false,
    })
}

/// After writability: whether the pending connect succeeded.
pub(crate) fn connect_result(fd: &OwnedFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int into err.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        )
    })?;
    if err != 0 {
        Err(io::Error::from_raw_os_error(err))
    } else {
        Ok(())
    }
}

/// Argument and environment vectors prepared before `fork`, so the child
/// only makes async-signal-safe calls.
struct ExecPlan {
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl ExecPlan {
    fn new(argv: &[String], extra_env: &[(&str, &str)], drop_env: &[&str]) -> io::Result<ExecPlan> {
        if argv.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let argv = argv
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if drop_env.contains(&k.as_str()) || extra_env.iter().any(|(e, _)| *e == k) {
                continue;
            }
            let mut kv = k.into_bytes();
            kv.push(b'=');
            kv.extend_from_slice(v.as_encoded_bytes());
            if let Ok(c) = CString::new(kv) {
                envp.push(c);
            }
        }
        for (k, v) in extra_env {
            envp.push(
                CString::new(format!("{k}={v}"))
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            );
        }
        Ok(ExecPlan { argv, envp })
    }
}

/// A child process started for a connection.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: libc::pid_t,
    /// Socket activation: the server outlives our connection, so closing the
    /// handle kills it (libnbd does the same).
    pub(crate) kill_on_close: bool,
}

/// Writes `n` in decimal into `buf` from `at`; returns the new end. No allocation.
fn put_decimal(buf: &mut [u8], at: usize, mut n: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let d = &digits[i..];
    buf[at..at + d.len()].copy_from_slice(d);
    at + d.len()
}

/// `nbd_connect_command`: runs `argv` with a socketpair on its stdin/stdout.
pub(crate) fn spawn_command(argv: &[String]) -> io::Result<(OwnedFd, Child)> {
    let plan = ExecPlan::new(argv, &[], &[])?;
    let mut sv = [0 as libc::c_int; 2];
    // SAFETY: socketpair writes two descriptors into sv.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned here.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    grow_send_buffer(&ours);
    let argv_ptrs = ptr_array(&plan.argv);
    let envp_ptrs = ptr_array(&plan.envp);
    // SAFETY: after fork the child only calls async-signal-safe functions
    // (dup2, close, execvpe, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: child side; see above.
        unsafe {
            let t = theirs.as_raw_fd();
            libc::dup2(t, 0);
            libc::dup2(t, 1);
            libc::execvpe(argv_ptrs[0], argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    drop(theirs);
    prepare_fd(ours.as_raw_fd())?;
    Ok((
        ours,
        Child {
            pid,
            kill_on_close: false,
        },
    ))
}

fn ptr_array(v: &[CString]) -> Vec<*const libc::c_char> {
    let mut p: Vec<*const libc::c_char> = v.iter().map(|c| c.as_ptr()).collect();
    p.push(std::ptr::null());
    p
}

/// `nbd_connect_systemd_socket_activation`: creates a listening Unix socket
/// in a fresh private directory, runs `argv` with it as fd 3 and `LISTEN_PID`
/// / `LISTEN_FDS` / `LISTEN_FDNAMES` (`name`) set, and connects to it.
pub(crate) fn spawn_socket_activation(
    argv: &[String],
    name: &str,
) -> io::Result<(Pending, Child, PathBuf)> {
    let dir = make_temp_dir()?;
    // Until the connection owns them, every failure below removes the
    // directory and kills and reaps the child.
    let mut cleanup = ActivationCleanup {
        dir: Some(dir.clone()),
        pid: None,
    };
    let sock = dir.join("sock");
    let listener = {
        let fd = socket(libc::AF_UNIX)?;
        let p = unix_addr(&sock)?;
        // SAFETY: binds to a valid sockaddr_un.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &p as *const _ as *const libc::sockaddr,
                sockaddr_len(libc::AF_UNIX),
            )
        })?;
        // SAFETY: listen on our own socket.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), libc::SOMAXCONN) })?;
        fd
    };
    // LISTEN_PID is written by the child into this fixed buffer.
    let plan = ExecPlan::new(
        argv,
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_PID", "0000000000"),
            ("LISTEN_FDNAMES", name),
        ],
        &[],
    )?;
    let pid_index = plan
        .envp
        .iter()
        .position(|e| e.as_bytes().starts_with(b"LISTEN_PID="))
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut pid_buf: Vec<u8> = vec![0; 32];
    let argv_ptrs = ptr_array(&plan.argv);
    let mut envp_ptrs = ptr_array(&plan.envp);
    envp_ptrs[pid_index] = pid_buf.as_ptr() as *const libc::c_char;
    let lfd = listener.as_raw_fd();
    // SAFETY: the child only uses async-signal-safe calls and memory prepared
    // before fork (pid_buf is written in place, no allocation).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        cleanup.pid = Some(pid);
    }
    if pid == 0 {
        // SAFETY: child side; see above.
        unsafe {
            let prefix = b"LISTEN_PID=";
            pid_buf[..prefix.len()].copy_from_slice(prefix);
            let end = put_decimal(&mut pid_buf, prefix.len(), libc::getpid() as u32);
            pid_buf[end] = 0;
            if lfd != 3 {
                libc::dup2(lfd, 3);
            } else {
                let fl = libc::fcntl(3, libc::F_GETFD);
                libc::fcntl(3, libc::F_SETFD, fl & !libc::FD_CLOEXEC);
            }
            let fl = libc::fcntl(3, libc::F_GETFL);
            libc::fcntl(3, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            libc::execvpe(argv_ptrs[0], argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    drop(listener);
    // A child that exits at once (a missing program) closes the listener:
    // the connect is refused, and the cleanup reaps it.
    let pending = connect_unix(&sock)?;
    cleanup.disarm();
    Ok((
        pending,
        Child {
            pid,
            kill_on_close: true,
        },
        dir,
    ))
}

/// What a failed socket activation leaves behind: its private directory
/// and, once forked, its child. Dropped armed, it kills and reaps the child
/// and removes the directory.
struct ActivationCleanup {
    dir: Option<PathBuf>,
    pid: Option<libc::pid_t>,
}

impl ActivationCleanup {
    /// The connection owns both now.
    fn disarm(&mut self) {
        self.dir = None;
        self.pid = None;
    }
}

impl Drop for ActivationCleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let mut status = 0;
            // SAFETY: our own child, not reaped yet; SIGKILL cannot be
            // ignored or held by a stopped child, so waitpid returns.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The `sockaddr_un` of `path` (too long or containing NUL: `ENAMETOOLONG`).
fn unix_addr(path: &Path) -> io::Result<libc::sockaddr_un> {
    let bytes = path.as_os_str().as_encoded_bytes();
    // SAFETY: plain data.
    let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= un.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    un.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in un.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(un)
}

fn make_temp_dir() -> io::Result<PathBuf> {
    let base = std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into());
    let mut tmpl = PathBuf::from(base)
        .join("libnbdXXXXXX")
        .into_os_string()
        .into_encoded_bytes();
    tmpl.push(0);
    // SAFETY: mkdtemp rewrites the XXXXXX of a NUL-terminated template in place.
    let r = unsafe { libc::mkdtemp(tmpl.as_mut_ptr() as *mut libc::c_char) };
    if r.is_null() {
        return Err(io::Error::last_os_error());
    }
    tmpl.pop();
    // SAFETY: the bytes came from an OsString plus the mkdtemp suffix.
    Ok(PathBuf::from(unsafe {
        std::ffi::OsString::from_encoded_bytes_unchecked(tmpl)
    }))
}

/// Takes ownership of a caller's connected socket.
pub(crate) fn adopt_socket(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    prepare_fd(fd)?;
    // SAFETY: the caller hands the descriptor over (nbd_connect_socket's contract).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Gives up ownership (for tests).
#[allow(dead_code)]
pub(crate) fn into_raw(fd: OwnedFd) -> RawFd {
    fd.into_raw_fd()
}
