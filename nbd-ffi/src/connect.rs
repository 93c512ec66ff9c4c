//! Connecting: the synchronous `nbd_connect_*` calls, their asynchronous
//! `nbd_aio_connect_*` twins, and `nbd_kill_subprocess` for servers started
//! by `nbd_connect_command`.
//!
//! All of this needs the connection engine. Until it lands these calls check
//! the handle state and their parameters (a URI is parsed and checked against
//! the handle's URI policy) and then fail with `ENOTSUP`.

use crate::debug::quote_opt;
use crate::errors::{not_yet_implemented, Error};
use crate::handle::Handle;
use crate::ptr;
use crate::state::Permitted;
use std::ffi::{c_char, c_int};

/// Shared body of `nbd_connect_uri` and `nbd_aio_connect_uri`.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `uri` NULL or a C string.
unsafe fn connect_uri(
    fname: &'static str,
    h: *mut Handle,
    uri: *const c_char,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let uri = unsafe { ptr::opt_cstr(uri) };
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("uri={}", quote_opt(uri)),
        |inner| {
            Permitted::CREATED.check(inner.state)?;
            let uri = ptr::required(uri, "uri")?;
            let _target = crate::uri::prepare_connect(&inner.uri_policy, uri)?;
            not_yet_implemented::<c_int>()
        },
    )
}

/// Shared body of the Unix socket connects.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `unixsocket` NULL or a C string.
unsafe fn connect_unix(
    fname: &'static str,
    h: *mut Handle,
    unixsocket: *const c_char,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let path = unsafe { ptr::opt_cstr(unixsocket) };
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("unixsocket={}", quote_opt(path)),
        |inner| {
            Permitted::CREATED.check(inner.state)?;
            ptr::required(path, "unixsocket")?;
            not_yet_implemented::<c_int>()
        },
    )
}

/// Shared body of the vsock connects.
///
/// # Safety
///
/// `h` must be NULL or an open handle.
unsafe fn connect_vsock(
    fname: &'static str,
    h: *mut Handle,
    cid: u32,
    port: u32,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("cid={cid} port={port}"),
        |inner| {
            Permitted::CREATED.check(inner.state)?;
            not_yet_implemented::<c_int>()
        },
    )
}

/// Shared body of the TCP connects.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `hostname` and `port` NULL or C strings.
unsafe fn connect_tcp(
    fname: &'static str,
    h: *mut Handle,
    hostname: *const c_char,
    port: *const c_char,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let (hostname, port) = unsafe { (ptr::opt_cstr(hostname), ptr::opt_cstr(port)) };
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("hostname={} port={}", quote_opt(hostname), quote_opt(port)),
        |inner| {
            Permitted::CREATED.check(inner.state)?;
            ptr::required(hostname, "hostname")?;
            ptr::required(port, "port")?;
            not_yet_implemented::<c_int>()
        },
    )
}

/// Shared body of the connects over a socket the caller made.
///
/// # Safety
///
/// `h` must be NULL or an open handle.
unsafe fn connect_socket(fname: &'static str, h: *mut Handle, sock: c_int) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("sock={sock}"),
        |inner| {
            Permitted::CREATED.check(inner.state)?;
            not_yet_implemented::<c_int>()
        },
    )
}

/// Shared body of the connects that run a server as a subprocess.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `argv` NULL or a NULL-terminated
/// array of C strings.
unsafe fn connect_command(
    fname: &'static str,
    h: *mut Handle,
    argv: *mut *mut c_char,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || "argv=<list>".to_string(),
        |inner| {
            Permitted::CREATED.check(inner.state)?;
            // SAFETY: argv is NULL or a NULL-terminated array (contract above).
            let _argv = unsafe { ptr::argv(argv) }?;
            not_yet_implemented::<c_int>()
        },
    )
}

/// Connects to the server named by an NBD URI and waits until the handshake is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `uri` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_uri(h: *mut Handle, uri: *const c_char) -> c_int {
    ffi_boundary!("nbd_connect_uri", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_uri(fname, h, uri) }
    })
}

/// Connects over the Unix domain socket `unixsocket` and waits until the handshake is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `unixsocket` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_unix(h: *mut Handle, unixsocket: *const c_char) -> c_int {
    ffi_boundary!("nbd_connect_unix", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_unix(fname, h, unixsocket) }
    })
}

/// Connects over `AF_VSOCK` to `cid`:`port` and waits until the handshake is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_vsock(h: *mut Handle, cid: u32, port: u32) -> c_int {
    ffi_boundary!("nbd_connect_vsock", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_vsock(fname, h, cid, port) }
    })
}

/// Connects over TCP to `hostname`:`port` (a service name or number) and waits until the handshake is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `hostname` and `port` must be NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_tcp(
    h: *mut Handle,
    hostname: *const c_char,
    port: *const c_char,
) -> c_int {
    ffi_boundary!("nbd_connect_tcp", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_tcp(fname, h, hostname, port) }
    })
}

/// Connects over `sock`, a connected socket the handle takes over and waits until the handshake is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_socket(h: *mut Handle, sock: c_int) -> c_int {
    ffi_boundary!("nbd_connect_socket", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_socket(fname, h, sock) }
    })
}

/// Connects to a server run as a subprocess speaking NBD on its stdin/stdout and waits until the handshake is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `argv` must be NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_command(h: *mut Handle, argv: *mut *mut c_char) -> c_int {
    ffi_boundary!("nbd_connect_command", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv) }
    })
}

/// Connects to a server run as a subprocess with systemd socket activation and waits until the handshake is done.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `argv` must be NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_systemd_socket_activation(
    h: *mut Handle,
    argv: *mut *mut c_char,
) -> c_int {
    ffi_boundary!("nbd_connect_systemd_socket_activation", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv) }
    })
}

/// Starts connecting to the server named by an NBD URI, returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `uri` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_uri(h: *mut Handle, uri: *const c_char) -> c_int {
    ffi_boundary!("nbd_aio_connect_uri", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_uri(fname, h, uri) }
    })
}

/// Starts connecting over the Unix domain socket `unixsocket`, returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `unixsocket` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_unix(h: *mut Handle, unixsocket: *const c_char) -> c_int {
    ffi_boundary!("nbd_aio_connect_unix", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_unix(fname, h, unixsocket) }
    })
}

/// Starts connecting over `AF_VSOCK` to `cid`:`port`, returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_vsock(h: *mut Handle, cid: u32, port: u32) -> c_int {
    ffi_boundary!("nbd_aio_connect_vsock", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_vsock(fname, h, cid, port) }
    })
}

/// Starts connecting over TCP to `hostname`:`port` (a service name or number), returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `hostname` and `port` must be NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_tcp(
    h: *mut Handle,
    hostname: *const c_char,
    port: *const c_char,
) -> c_int {
    ffi_boundary!("nbd_aio_connect_tcp", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_tcp(fname, h, hostname, port) }
    })
}

/// Starts connecting over `sock`, a connected socket the handle takes over, returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_socket(h: *mut Handle, sock: c_int) -> c_int {
    ffi_boundary!("nbd_aio_connect_socket", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_socket(fname, h, sock) }
    })
}

/// Starts connecting to a server run as a subprocess speaking NBD on its stdin/stdout, returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `argv` must be NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_command(h: *mut Handle, argv: *mut *mut c_char) -> c_int {
    ffi_boundary!("nbd_aio_connect_command", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv) }
    })
}

/// Starts connecting to a server run as a subprocess with systemd socket activation, returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `argv` must be NULL or a NULL-terminated array of NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_systemd_socket_activation(
    h: *mut Handle,
    argv: *mut *mut c_char,
) -> c_int {
    ffi_boundary!("nbd_aio_connect_systemd_socket_activation", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv) }
    })
}

/// Starts connecting to the socket address `addr` (`addrlen` bytes),
/// returning before the connection is made.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `addr` must be NULL or point to `addrlen` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect(
    h: *mut Handle,
    addr: *const libc::sockaddr,
    addrlen: libc::socklen_t,
) -> c_int {
    ffi_boundary!("nbd_aio_connect", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("addr=<address> addrlen={addrlen}"),
            |inner| {
                Permitted::CREATED.check(inner.state)?;
                ptr::required_ptr(addr, "addr")?;
                not_yet_implemented::<c_int>()
            },
        )
    })
}

/// Sends signal `signum` (SIGTERM if 0) to the server subprocess started by
/// `nbd_connect_command` and waits for it to exit.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_kill_subprocess(h: *mut Handle, signum: c_int) -> c_int {
    ffi_boundary!("nbd_kill_subprocess", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("signum={signum}"),
            |_inner| not_yet_implemented::<c_int>(),
        )
    })
}
