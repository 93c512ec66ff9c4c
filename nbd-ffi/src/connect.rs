//! Connecting: the synchronous `nbd_connect_*` calls, their asynchronous
//! `nbd_aio_connect_*` twins, and `nbd_kill_subprocess` for servers started
//! by `nbd_connect_command`.
//!
//! Every connect builds a [`Target`], starts it on the handle's engine with
//! the protocol configuration taken from the handle's settings, and (for the
//! synchronous forms) polls until the handshake is over: negotiating in opt
//! mode, ready otherwise. A failure leaves the handle dead, as in libnbd.

use crate::debug::quote_opt;
use crate::engine::{transport, EngineError};
use crate::errors::Error;
use crate::handle::{Handle, HandleInner};
use crate::ptr;
use crate::state::{Permitted, State};
use crate::uri::{NbdUri, Transport};
use std::ffi::{c_char, c_int, CStr};
use std::path::PathBuf;

/// Where a connection goes.
enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: String },
    Vsock { cid: u32, port: u32 },
    Socket(c_int),
    Command(Vec<String>),
    Activation(Vec<String>),
    Raw(*const libc::sockaddr, libc::socklen_t),
}

fn lossy(s: &CStr) -> String {
    s.to_string_lossy().into_owned()
}

impl HandleInner {
    /// The protocol configuration the handle's settings describe.
    pub(crate) fn proto_config(&self) -> Result<nbd_proto::client::Config, Error> {
        use crate::constants::{LIBNBD_TLS_ALLOW, LIBNBD_TLS_REQUIRE};
        use nbd_proto::client::TlsMode;
        let n = &self.negotiation;
        Ok(nbd_proto::client::Config {
            export_name: lossy(&n.export_name),
            tls: match self.tls.mode {
                LIBNBD_TLS_REQUIRE => TlsMode::Require,
                LIBNBD_TLS_ALLOW => TlsMode::Allow,
                _ => TlsMode::Disable,
            },
            request_structured_replies: n.request_structured_replies,
            // Extended headers imply structured replies: without those the
            // setting is ignored (nbd_set_request_extended_headers(3)).
            request_extended_headers: n.request_extended_headers && n.request_structured_replies,
            request_meta_contexts: n.meta_contexts.iter().map(|c| lossy(c)).collect(),
            request_meta_context: n.request_meta_context,
            request_block_size: n.request_block_size,
            full_info: n.full_info,
            handshake_flags: n.handshake_flags,
            opt_mode: n.opt_mode,
            strict: self.commands.strict_mode | nbd_proto::client::strict::PAYLOAD,
        })
    }

    /// Starts connecting to `target`; the handle leaves the created state.
    fn start_connection(&mut self, target: Target) -> Result<(), Error> {
        let config = self.proto_config()?;
        let hostname = match &target {
            Target::Tcp { host, .. } => Some(host.clone()),
            _ => None,
        };
        // Kept for nbd_opt_starttls on a handle whose TLS mode is off.
        self.engine.set_tls_hostname(hostname.clone());
        let tls = self.tls.options(hostname)?;
        self.engine.set_tls_options(tls);
        let started: Result<(), EngineError> = (|| {
            match target {
                Target::Unix(path) => {
                    let p = transport::connect_unix(&path)
                        .map_err(|e| EngineError::io(&e, "connect"))?;
                    self.engine.start(config, p)
                }
                Target::Tcp { host, port } => {
                    let addrs = transport::resolve(&host, &port)
                        .map_err(|e| EngineError::io(&e, "getaddrinfo"))?;
                    let p = transport::connect_addrs(addrs)
                        .map_err(|e| EngineError::io(&e, "connect"))?;
                    self.engine.start(config, p)
                }
                Target::Vsock { cid, port } => {
                    let p = transport::connect_vsock(cid, port)
                        .map_err(|e| EngineError::io(&e, "connect"))?;
                    self.engine.start(config, p)
                }
                Target::Socket(fd) => {
                    let fd =
                        transport::adopt_socket(fd).map_err(|e| EngineError::io(&e, "socket"))?;
                    self.engine.start_connected(config, fd);
                    Ok(())
                }
                Target::Command(argv) => {
                    let (fd, child) = transport::spawn_command(&argv)
                        .map_err(|e| EngineError::io(&e, "connect_command"))?;
                    self.engine.start_connected(config, fd);
                    self.engine.set_child(child, None);
                    Ok(())
                }
                Target::Activation(argv) => {
                    let (p, child, dir) = transport::spawn_socket_activation(&argv)
                        .map_err(|e| EngineError::io(&e, "socket activation"))?;
                    self.engine.set_child(child, Some(dir));
                    self.engine.start(config, p)
                }
                Target::Raw(addr, len) => {
                    // SAFETY: nbd_aio_connect's contract: addr has len readable bytes.
                    let p = unsafe { transport::connect_raw(addr, len) }
                        .map_err(|e| EngineError::io(&e, "connect"))?;
                    self.engine.start(config, p)
                }
            }
        })();
        if let Err(e) = started {
            self.engine.fail_start(e.clone());
            return Err(e.into());
        }
        Ok(())
    }

    /// Polls until the handshake is over (negotiating in opt mode, ready
    /// otherwise).
    pub(crate) fn wait_connected(&mut self) -> Result<(), Error> {
        self.engine
            .run_until(|e| !matches!(e.state(), Some(nbd_proto::client::State::Connecting)))?;
        match self.state() {
            State::Ready | State::Negotiating | State::Processing => Ok(()),
            State::Dead => Err(self.death_error()),
            _ => Err(Error::Engine {
                errno: libc::ENOTCONN,
                message: "the server closed the connection during the handshake".into(),
            }),
        }
    }

    /// The error describing why the connection died.
    pub(crate) fn death_error(&self) -> Error {
        match self.engine.death() {
            Some(e) => e.clone().into(),
            None => Error::Engine {
                errno: libc::ENOTCONN,
                message: "the connection is dead".into(),
            },
        }
    }

    /// Connects, then for the synchronous forms waits for the handshake.
    fn connect(&mut self, target: Target, uri: Option<NbdUri>, sync: bool) -> Result<c_int, Error> {
        Permitted::CREATED.check(self.state())?;
        if let Some(u) = &uri {
            self.negotiation.export_name = std::ffi::CString::new(u.export_name.clone())
                .map_err(|_| Error::Invalid("export name contains NUL".into()))?;
        }
        self.connected_uri = uri;
        self.start_connection(target)?;
        if sync {
            self.wait_connected()?;
        }
        Ok(0)
    }
}

/// The URI describing a connection to `transport`, for `nbd_get_uri`.
fn uri_for(inner: &HandleInner, transport: Transport) -> NbdUri {
    NbdUri {
        tls: inner.tls.mode == crate::constants::LIBNBD_TLS_REQUIRE,
        transport,
        username: None,
        export_name: lossy(&inner.negotiation.export_name),
        tls_certificates: None,
        tls_psk_file: None,
        tls_username: None,
        tls_verify_peer: None,
        unknown_params: Vec::new(),
    }
}

/// Shared body of `nbd_connect_uri` and `nbd_aio_connect_uri`.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `uri` NULL or a C string.
unsafe fn connect_uri(
    fname: &'static str,
    h: *mut Handle,
    uri: *const c_char,
    sync: bool,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let uri = unsafe { ptr::opt_cstr(uri) };
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("uri={}", quote_opt(uri)),
        |inner| {
            Permitted::CREATED.check(inner.state())?;
            let uri = ptr::required(uri, "uri")?;
            let parsed = crate::uri::prepare_connect(&inner.uri_policy, uri)?;
            inner.tls.apply_uri(&parsed)?;
            let target = match &parsed.transport {
                Transport::Tcp { host, port } => Target::Tcp {
                    host: host.clone(),
                    port: port.to_string(),
                },
                Transport::Unix { socket } => Target::Unix(PathBuf::from(socket)),
                Transport::Vsock { cid, port } => Target::Vsock {
                    cid: *cid,
                    port: *port,
                },
            };
            inner.connect(target, Some(parsed), sync)
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
    sync: bool,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let path = unsafe { ptr::opt_cstr(unixsocket) };
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("unixsocket={}", quote_opt(path)),
        |inner| {
            Permitted::CREATED.check(inner.state())?;
            let path = lossy(ptr::required(path, "unixsocket")?);
            let uri = uri_for(
                inner,
                Transport::Unix {
                    socket: path.clone(),
                },
            );
            inner.connect(Target::Unix(PathBuf::from(path)), Some(uri), sync)
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
    sync: bool,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("cid={cid} port={port}"),
        |inner| {
            Permitted::CREATED.check(inner.state())?;
            let uri = uri_for(inner, Transport::Vsock { cid, port });
            inner.connect(Target::Vsock { cid, port }, Some(uri), sync)
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
    sync: bool,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let (hostname, port) = unsafe { (ptr::opt_cstr(hostname), ptr::opt_cstr(port)) };
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("hostname={} port={}", quote_opt(hostname), quote_opt(port)),
        |inner| {
            Permitted::CREATED.check(inner.state())?;
            let host = lossy(ptr::required(hostname, "hostname")?);
            let port = lossy(ptr::required(port, "port")?);
            let uri = port.parse::<u16>().ok().map(|p| {
                uri_for(
                    inner,
                    Transport::Tcp {
                        host: host.clone(),
                        port: p,
                    },
                )
            });
            inner.connect(Target::Tcp { host, port }, uri, sync)
        },
    )
}

/// Shared body of the connects over a socket the caller made.
///
/// # Safety
///
/// `h` must be NULL or an open handle.
unsafe fn connect_socket(
    fname: &'static str,
    h: *mut Handle,
    sock: c_int,
    sync: bool,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("sock={sock}"),
        |inner| inner.connect(Target::Socket(sock), None, sync),
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
    activation: bool,
    sync: bool,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || "argv=<list>".to_string(),
        |inner| {
            Permitted::CREATED.check(inner.state())?;
            // SAFETY: argv is NULL or a NULL-terminated array (contract above).
            let argv: Vec<String> = unsafe { ptr::argv(argv) }?.into_iter().map(lossy).collect();
            let target = if activation {
                Target::Activation(argv)
            } else {
                Target::Command(argv)
            };
            inner.connect(target, None, sync)
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
        unsafe { connect_uri(fname, h, uri, true) }
    })
}

/// Connects to a server listening on a Unix domain socket and waits for the handshake.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `unixsocket` NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_unix(h: *mut Handle, unixsocket: *const c_char) -> c_int {
    ffi_boundary!("nbd_connect_unix", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_unix(fname, h, unixsocket, true) }
    })
}

/// Connects over `AF_VSOCK` and waits for the handshake.
///
/// # Safety
///
/// `h` must be NULL or an open handle.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_vsock(h: *mut Handle, cid: u32, port: u32) -> c_int {
    ffi_boundary!("nbd_connect_vsock", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { connect_vsock(fname, h, cid, port, true) }
    })
}

/// Connects over TCP (host name or address, port number or service name)
/// and waits for the handshake.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `hostname` and `port` NULL or C strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_tcp(
    h: *mut Handle,
    hostname: *const c_char,
    port: *const c_char,
) -> c_int {
    ffi_boundary!("nbd_connect_tcp", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_tcp(fname, h, hostname, port, true) }
    })
}

/// Runs the handshake over a socket the caller connected; the handle takes
/// ownership of `sock`.
///
/// # Safety
///
/// `h` must be NULL or an open handle.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_socket(h: *mut Handle, sock: c_int) -> c_int {
    ffi_boundary!("nbd_connect_socket", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { connect_socket(fname, h, sock, true) }
    })
}

/// Runs `argv` as a server speaking NBD on its stdin/stdout and waits for
/// the handshake.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `argv` NULL or a NULL-terminated array.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_command(h: *mut Handle, argv: *mut *mut c_char) -> c_int {
    ffi_boundary!("nbd_connect_command", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv, false, true) }
    })
}

/// Runs `argv` as a socket-activated server (`LISTEN_PID`, `LISTEN_FDS`) and
/// waits for the handshake.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `argv` NULL or a NULL-terminated array.
#[no_mangle]
pub unsafe extern "C" fn nbd_connect_systemd_socket_activation(
    h: *mut Handle,
    argv: *mut *mut c_char,
) -> c_int {
    ffi_boundary!("nbd_connect_systemd_socket_activation", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv, true, true) }
    })
}

/// Starts connecting to the server named by an NBD URI; returns at once.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `uri` NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_uri(h: *mut Handle, uri: *const c_char) -> c_int {
    ffi_boundary!("nbd_aio_connect_uri", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_uri(fname, h, uri, false) }
    })
}

/// Starts connecting to a Unix domain socket; returns at once.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `unixsocket` NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_unix(h: *mut Handle, unixsocket: *const c_char) -> c_int {
    ffi_boundary!("nbd_aio_connect_unix", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_unix(fname, h, unixsocket, false) }
    })
}

/// Starts connecting over `AF_VSOCK`; returns at once.
///
/// # Safety
///
/// `h` must be NULL or an open handle.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_vsock(h: *mut Handle, cid: u32, port: u32) -> c_int {
    ffi_boundary!("nbd_aio_connect_vsock", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { connect_vsock(fname, h, cid, port, false) }
    })
}

/// Starts connecting over TCP; name resolution happens now, the rest is
/// driven by the caller's event loop.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `hostname` and `port` NULL or C strings.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_tcp(
    h: *mut Handle,
    hostname: *const c_char,
    port: *const c_char,
) -> c_int {
    ffi_boundary!("nbd_aio_connect_tcp", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_tcp(fname, h, hostname, port, false) }
    })
}

/// Starts the handshake over a socket the caller connected; returns at once.
///
/// # Safety
///
/// `h` must be NULL or an open handle.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_socket(h: *mut Handle, sock: c_int) -> c_int {
    ffi_boundary!("nbd_aio_connect_socket", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { connect_socket(fname, h, sock, false) }
    })
}

/// Starts `argv` as a server on a socketpair; returns at once.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `argv` NULL or a NULL-terminated array.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_command(h: *mut Handle, argv: *mut *mut c_char) -> c_int {
    ffi_boundary!("nbd_aio_connect_command", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv, false, false) }
    })
}

/// Starts `argv` as a socket-activated server; returns at once.
///
/// # Safety
///
/// `h` must be NULL or an open handle; `argv` NULL or a NULL-terminated array.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_connect_systemd_socket_activation(
    h: *mut Handle,
    argv: *mut *mut c_char,
) -> c_int {
    ffi_boundary!("nbd_aio_connect_systemd_socket_activation", |fname| {
        // SAFETY: the pointers are NULL or valid (see # Safety).
        unsafe { connect_command(fname, h, argv, true, false) }
    })
}

/// Starts connecting to a socket address the caller resolved; returns at once.
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
                Permitted::CREATED.check(inner.state())?;
                let addr = ptr::required_ptr(addr, "addr")?;
                inner.connect(Target::Raw(addr.as_ptr(), addrlen), None, false)
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
            |inner| {
                if !(0..65).contains(&signum) {
                    return Err(Error::InvalidValue {
                        param: "signum",
                        value: i64::from(signum),
                    });
                }
                inner.engine.kill_child(signum)?;
                Ok(0)
            },
        )
    })
}
