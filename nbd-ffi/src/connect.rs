//! Connecting: the synchronous `nbd_connect_*` calls, their asynchronous
//! `nbd_aio_connect_*` twins, the server subprocess (`nbd_kill_subprocess`,
//! `nbd_get_subprocess_pid`), the socket activation name, and
//! `nbd_supports_vsock`. The exports are generated from `api/connect.api`.
//!
//! Every connect builds a `Target`, starts it on the handle's engine with
//! the protocol configuration taken from the handle's settings, and (for the
//! synchronous forms) polls until the handshake is over: negotiating in opt
//! mode, ready otherwise. A failure leaves the handle dead, as in libnbd,
//! except where libnbd 1.24 leaves it newly created: a host name that does
//! not resolve (errno 0), a TCP connect refused on every address, a socket
//! descriptor that is not open.
//!
//! An `nbd+ssh://` URI runs `ssh` as a subprocess speaking NBD on its
//! stdin/stdout (the remote end runs `nc` to the server's port or Unix
//! socket); `ssh_argv` builds that command line from the URI, refusing
//! every field that could be taken as an option or shell syntax.

use crate::engine::{transport, EngineError};
use crate::errors::{Cause, Error};
use crate::handle::{HandleInner, Locked};
use crate::ptr::{MallocStr, SockAddr};
use crate::state::State;
use crate::uri::{NbdUri, Transport};
use std::ffi::{c_int, CStr, CString};
use std::path::PathBuf;

pub use crate::exports::connect::*;

/// The longest socket activation name libnbd accepts.
pub(crate) const MAX_SOCKET_ACTIVATION_NAME: usize = 32;

/// What the server sees in `LISTEN_FDNAMES` when no name was set.
const DEFAULT_SOCKET_ACTIVATION_NAME: &str = "unknown";

/// Connection settings of one handle that belong to no other family.
#[derive(Debug, Default)]
pub(crate) struct ConnectSettings {
    /// `nbd_set_socket_activation_name`: empty means "unknown".
    pub(crate) socket_activation_name: CString,
}

/// Where a connection goes.
enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: String },
    Vsock { cid: u32, port: u32 },
    Socket(c_int),
    Command(Vec<String>),
    Activation(Vec<String>),
    Raw(SockAddr),
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
        Ok({
            let mut config = nbd_proto::client::Config::default();
            config.export_name = lossy(&n.export_name);
            config.tls = match self.tls.mode {
                LIBNBD_TLS_REQUIRE => TlsMode::Require,
                LIBNBD_TLS_ALLOW => TlsMode::Allow,
                _ => TlsMode::Disable,
            };
            config.request_structured_replies = n.request_structured_replies;
            // Extended headers imply structured replies: without those the
            // setting is ignored (nbd_set_request_extended_headers(3)).
            config.request_extended_headers =
                n.request_extended_headers && n.request_structured_replies;
            config.request_meta_contexts = n.meta_contexts.iter().map(|c| lossy(c)).collect();
            config.request_meta_context = n.request_meta_context;
            config.request_block_size = n.request_block_size;
            config.full_info = n.full_info;
            config.handshake_flags = n.handshake_flags;
            config.opt_mode = n.opt_mode;
            config.strict = self.commands.strict_mode | nbd_proto::client::strict::PAYLOAD;
            config
        })
    }

    /// Starts connecting to `target`; the handle leaves the created state.
    fn start_connection(&mut self, target: Target) -> Result<(), Error> {
        let config = self.proto_config()?;
        if let Target::Tcp { host, .. } = &target {
            // The host connected to is the TLS host name unless one was set
            // (nbd_get_tls_hostname shows it from now on).
            self.tls.connect_hostname = Some(
                CString::new(host.as_str())
                    .map_err(|_| Error::Invalid("hostname contains NUL".into()))?,
            );
        }
        let tls = self.tls.options()?;
        self.engine.set_tls_options(tls);
        let activation_name = match self.connect.socket_activation_name.to_str() {
            Ok("") | Err(_) => DEFAULT_SOCKET_ACTIVATION_NAME.to_string(),
            Ok(name) => name.to_string(),
        };
        // Failures before anything was connected, after which libnbd 1.24
        // leaves the handle newly created (a name that does not resolve,
        // every TCP address refused, a descriptor that is not open);
        // any other failure to start makes it dead.
        let mut stays_created = false;
        self.engine.take_start_error();
        let started: Result<(), EngineError> = (|| {
            match target {
                Target::Unix(path) => {
                    let p = transport::connect_unix(&path)
                        .map_err(|e| EngineError::io(&e, "connect"))?;
                    self.engine.start(config, p)
                }
                Target::Tcp { host, port } => {
                    // libnbd 1.24 reports a name that does not resolve with
                    // errno 0 (getaddrinfo's codes are not errnos).
                    let addrs = transport::resolve(&host, &port).map_err(|e| {
                        stays_created = true;
                        match e.raw_os_error() {
                            Some(errno) => EngineError::new(errno, "getaddrinfo"),
                            None => EngineError::NoErrno(format!("getaddrinfo: {e}")),
                        }
                    })?;
                    let p = transport::connect_addrs(addrs).map_err(|e| {
                        stays_created = true;
                        EngineError::io(&e, "connect")
                    })?;
                    self.engine.start(config, p)
                }
                Target::Vsock { cid, port } => {
                    let p = transport::connect_vsock(cid, port)
                        .map_err(|e| EngineError::io(&e, "connect"))?;
                    self.engine.start(config, p)
                }
                Target::Socket(fd) => {
                    let fd = transport::adopt_socket(fd).map_err(|e| {
                        stays_created = true;
                        EngineError::io(&e, "socket")
                    })?;
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
                    let (p, child, dir) =
                        transport::spawn_socket_activation(&argv, &activation_name)
                            .map_err(|e| EngineError::io(&e, "socket activation"))?;
                    let socket = dir.join("sock");
                    self.engine.set_child(child, Some(dir));
                    // Like libnbd, nbd_get_uri names the socket made for it.
                    self.connected_uri = Some(uri_for(
                        self,
                        Transport::Unix {
                            socket: socket.to_string_lossy().into_owned(),
                        },
                    ));
                    self.engine.start(config, p)
                }
                Target::Raw(addr) => {
                    // SAFETY: addr.storage holds addr.len bytes of address
                    // (ptr::sockaddr checked the length against its size).
                    let p = unsafe {
                        transport::connect_raw(
                            std::ptr::addr_of!(addr.storage).cast::<libc::sockaddr>(),
                            addr.len,
                        )
                    }
                    .map_err(|e| EngineError::io(&e, "connect"))?;
                    self.engine.start(config, p)
                }
            }
        })();
        if let Err(e) = started {
            if !stays_created {
                self.engine.fail_start(e.clone());
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// The error describing why the connection died.
    pub(crate) fn death_error(&self) -> Error {
        match self.engine.death() {
            Some(e) => e.clone().into(),
            None => Error::Engine(Cause::NotConnected("the connection is dead")),
        }
    }
}

impl Locked<'_> {
    /// Polls until the handshake is over (negotiating in opt mode, ready
    /// otherwise).
    pub(crate) fn wait_connected(&mut self) -> Result<(), Error> {
        self.run_until(|e| !matches!(e.state(), Some(nbd_proto::client::State::Connecting)))?;
        if let Some(e) = self.engine.take_start_error() {
            return Err(e.into());
        }
        match self.state() {
            State::Ready | State::Negotiating | State::Processing => Ok(()),
            State::Dead => Err(self.death_error()),
            _ => Err(Error::Engine(Cause::NotConnected(
                "the server closed the connection during the handshake",
            ))),
        }
    }

    /// Connects, then for the synchronous forms waits for the handshake.
    /// The caller (the generated export) checked the created state.
    fn connect_to(
        &mut self,
        target: Target,
        uri: Option<NbdUri>,
        sync: bool,
    ) -> Result<c_int, Error> {
        if let Some(u) = &uri {
            self.negotiation.export_name = CString::new(u.export_name.clone())
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

/// The URI describing a connection to `transport`, for `nbd_get_uri`
/// (which fills in the TLS settings when asked).
fn uri_for(inner: &HandleInner, transport: Transport) -> NbdUri {
    let mut uri = NbdUri::new(transport);
    uri.export_name = lossy(&inner.negotiation.export_name);
    uri
}

/// The `ssh` command line that reaches the NBD server an `nbd+ssh://` URI
/// names: `ssh [-C] -p PORT [-o User=USER] -- HOST nc localhost NBDPORT`, or
/// `... nc -U SOCKET` for a Unix socket on the remote host.
///
/// Nothing from the URI can become an option of `ssh` or `nc`, or shell
/// syntax on the remote side (which joins the words after HOST and runs them
/// with the user's shell): the host must be a host name or an address (no
/// leading `-`, no spaces, quotes or shell characters), the user a portable
/// user name, the socket path an absolute or relative path not starting with
/// `-` and without control characters; it is single-quoted for the remote
/// shell when it holds anything but `[A-Za-z0-9/._+,:@%=-]`. Ports are
/// numbers already. Anything else fails with `EINVAL`.
pub(crate) fn ssh_argv(
    host: &str,
    port: u16,
    user: Option<&str>,
    nbd_port: u16,
    socket: Option<&str>,
    compress: bool,
) -> Result<Vec<String>, Error> {
    let bad = |what: &str, value: &str| {
        Err(Error::Invalid(format!(
            "SSH transport: the {what} {value:?} is not allowed (it could be taken \
             as an option or as shell syntax)"
        )))
    };
    if host.is_empty() {
        return Err(Error::Invalid(
            "SSH transport requires a server name".into(),
        ));
    }
    let host_ok = !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b));
    if !host_ok {
        return bad("host", host);
    }
    if let Some(user) = user {
        let user_ok = !user.is_empty()
            && !user.starts_with('-')
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._@".contains(&b));
        if !user_ok {
            return bad("user name", user);
        }
    }
    let mut argv = vec!["ssh".to_string()];
    if compress {
        argv.push("-C".into());
    }
    argv.extend(["-p".to_string(), port.to_string()]);
    if let Some(user) = user {
        argv.extend(["-o".to_string(), format!("User={user}")]);
    }
    argv.extend(["--".to_string(), host.to_string(), "nc".to_string()]);
    match socket {
        Some(path) => {
            if path.is_empty() || path.starts_with('-') || path.chars().any(char::is_control) {
                return bad("socket", path);
            }
            argv.push("-U".into());
            argv.push(shell_word(path));
        }
        None => argv.extend(["localhost".to_string(), nbd_port.to_string()]),
    }
    Ok(argv)
}

/// `word` as one word for a POSIX shell: as it is when it holds only
/// characters no shell treats specially, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._+,:@%=-".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn connect_uri_impl(inner: &mut Locked<'_>, uri: &CStr, sync: bool) -> Result<c_int, Error> {
    let parsed = crate::uri::prepare_connect(&inner.uri_policy, uri)?;
    // The URI's fields go through the checks of the setters they stand
    // for, before anything is applied or connected (libnbd 1.24: a
    // 5000-byte export name fails with ENAMETOOLONG, nothing is sent).
    let export = CString::new(parsed.export_name.clone())
        .map_err(|_| Error::Invalid("export name contains NUL".into()))?;
    crate::ptr::protocol_string(&export, "export name")?;
    inner.tls.apply_uri(&parsed)?;
    let (target, get_uri) = match &parsed.transport {
        Transport::Tcp { host, port } => (
            Target::Tcp {
                host: host.clone(),
                port: port.to_string(),
            },
            true,
        ),
        Transport::Unix { socket } => (Target::Unix(PathBuf::from(socket)), true),
        Transport::Vsock { cid, port } => (
            Target::Vsock {
                cid: *cid,
                port: *port,
            },
            true,
        ),
        Transport::Ssh {
            host,
            port,
            nbd_port,
            socket,
        } => {
            let argv = ssh_argv(
                host,
                *port,
                parsed.username.as_deref(),
                *nbd_port,
                socket.as_deref(),
                parsed.compress.unwrap_or(false),
            )?;
            // libnbd makes no URI for a connection through ssh.
            (Target::Command(argv), false)
        }
    };
    if get_uri {
        inner.connect_to(target, Some(parsed), sync)
    } else {
        inner.negotiation.export_name = export;
        inner.connect_to(target, None, sync)
    }
}

/// `nbd_connect_uri`.
pub(crate) fn connect_uri(inner: &mut Locked<'_>, uri: &CStr) -> Result<c_int, Error> {
    connect_uri_impl(inner, uri, true)
}

/// `nbd_aio_connect_uri`.
pub(crate) fn aio_connect_uri(inner: &mut Locked<'_>, uri: &CStr) -> Result<c_int, Error> {
    connect_uri_impl(inner, uri, false)
}

fn connect_unix_impl(inner: &mut Locked<'_>, path: &CStr, sync: bool) -> Result<c_int, Error> {
    let path = lossy(path);
    let uri = uri_for(
        inner,
        Transport::Unix {
            socket: path.clone(),
        },
    );
    inner.connect_to(Target::Unix(PathBuf::from(path)), Some(uri), sync)
}

/// `nbd_connect_unix`.
pub(crate) fn connect_unix(inner: &mut Locked<'_>, unixsocket: &CStr) -> Result<c_int, Error> {
    connect_unix_impl(inner, unixsocket, true)
}

/// `nbd_aio_connect_unix`.
pub(crate) fn aio_connect_unix(inner: &mut Locked<'_>, unixsocket: &CStr) -> Result<c_int, Error> {
    connect_unix_impl(inner, unixsocket, false)
}

fn connect_vsock_impl(
    inner: &mut Locked<'_>,
    cid: u32,
    port: u32,
    sync: bool,
) -> Result<c_int, Error> {
    let uri = uri_for(inner, Transport::Vsock { cid, port });
    inner.connect_to(Target::Vsock { cid, port }, Some(uri), sync)
}

/// `nbd_connect_vsock`.
pub(crate) fn connect_vsock(inner: &mut Locked<'_>, cid: u32, port: u32) -> Result<c_int, Error> {
    connect_vsock_impl(inner, cid, port, true)
}

/// `nbd_aio_connect_vsock`.
pub(crate) fn aio_connect_vsock(
    inner: &mut Locked<'_>,
    cid: u32,
    port: u32,
) -> Result<c_int, Error> {
    connect_vsock_impl(inner, cid, port, false)
}

fn connect_tcp_impl(
    inner: &mut Locked<'_>,
    hostname: &CStr,
    port: &CStr,
    sync: bool,
) -> Result<c_int, Error> {
    let host = lossy(hostname);
    let port = lossy(port);
    let uri = port.parse::<u16>().ok().map(|p| {
        uri_for(
            inner,
            Transport::Tcp {
                host: host.clone(),
                port: p,
            },
        )
    });
    inner.connect_to(Target::Tcp { host, port }, uri, sync)
}

/// `nbd_connect_tcp`.
pub(crate) fn connect_tcp(
    inner: &mut Locked<'_>,
    hostname: &CStr,
    port: &CStr,
) -> Result<c_int, Error> {
    connect_tcp_impl(inner, hostname, port, true)
}

/// `nbd_aio_connect_tcp`: name resolution happens now, the rest is driven
/// by the caller's event loop.
pub(crate) fn aio_connect_tcp(
    inner: &mut Locked<'_>,
    hostname: &CStr,
    port: &CStr,
) -> Result<c_int, Error> {
    connect_tcp_impl(inner, hostname, port, false)
}

/// `nbd_connect_socket`: the handle owns `sock` from now on.
pub(crate) fn connect_socket(inner: &mut Locked<'_>, sock: c_int) -> Result<c_int, Error> {
    inner.connect_to(Target::Socket(sock), None, true)
}

/// `nbd_aio_connect_socket`.
pub(crate) fn aio_connect_socket(inner: &mut Locked<'_>, sock: c_int) -> Result<c_int, Error> {
    inner.connect_to(Target::Socket(sock), None, false)
}

/// The command line as Rust strings; it needs at least the program name.
fn command_line(argv: Vec<&CStr>) -> Result<Vec<String>, Error> {
    if argv.is_empty() {
        return Err(Error::Invalid(
            "argv must contain at least the command name".into(),
        ));
    }
    Ok(argv.into_iter().map(lossy).collect())
}

/// `nbd_connect_command`.
pub(crate) fn connect_command(inner: &mut Locked<'_>, argv: Vec<&CStr>) -> Result<c_int, Error> {
    let argv = command_line(argv)?;
    inner.connect_to(Target::Command(argv), None, true)
}

/// `nbd_aio_connect_command`.
pub(crate) fn aio_connect_command(
    inner: &mut Locked<'_>,
    argv: Vec<&CStr>,
) -> Result<c_int, Error> {
    let argv = command_line(argv)?;
    inner.connect_to(Target::Command(argv), None, false)
}

/// `nbd_connect_systemd_socket_activation`.
pub(crate) fn connect_systemd_socket_activation(
    inner: &mut Locked<'_>,
    argv: Vec<&CStr>,
) -> Result<c_int, Error> {
    let argv = command_line(argv)?;
    inner.connect_to(Target::Activation(argv), None, true)
}

/// `nbd_aio_connect_systemd_socket_activation`.
pub(crate) fn aio_connect_systemd_socket_activation(
    inner: &mut Locked<'_>,
    argv: Vec<&CStr>,
) -> Result<c_int, Error> {
    let argv = command_line(argv)?;
    inner.connect_to(Target::Activation(argv), None, false)
}

/// `nbd_aio_connect`: a socket address the caller resolved.
pub(crate) fn aio_connect(inner: &mut Locked<'_>, addr: SockAddr) -> Result<c_int, Error> {
    inner.connect_to(Target::Raw(addr), None, false)
}

/// Checks a socket activation name: at most
/// [`MAX_SOCKET_ACTIVATION_NAME`] ASCII letters and digits (longer:
/// `ENAMETOOLONG`; other characters: `EINVAL`). Empty is allowed.
pub(crate) fn check_socket_activation_name(name: &[u8]) -> Result<(), Error> {
    if name.len() > MAX_SOCKET_ACTIVATION_NAME {
        return Err(Error::Engine(Cause::new(libc::ENAMETOOLONG, format!(
                "the socket activation name is {} bytes long, more than {MAX_SOCKET_ACTIVATION_NAME}",
                name.len()
            ),
        )));
    }
    if !name.iter().all(u8::is_ascii_alphanumeric) {
        return Err(Error::Invalid(
            "the socket activation name may only hold ASCII letters and digits".into(),
        ));
    }
    Ok(())
}

/// `nbd_set_socket_activation_name`.
pub(crate) fn set_socket_activation_name(
    inner: &mut HandleInner,
    socket_name: &CStr,
) -> Result<c_int, Error> {
    check_socket_activation_name(socket_name.to_bytes())?;
    inner.connect.socket_activation_name = socket_name.to_owned();
    Ok(0)
}

/// `nbd_get_socket_activation_name`: the name set, or "" (the server then
/// sees "unknown").
pub(crate) fn get_socket_activation_name(inner: &mut HandleInner) -> Result<MallocStr, Error> {
    MallocStr::new(&inner.connect.socket_activation_name)
}

/// `nbd_kill_subprocess`: sends `signum` (SIGTERM if 0) to the server
/// subprocess; `nbd_close` reaps it.
pub(crate) fn kill_subprocess(inner: &mut HandleInner, signum: c_int) -> Result<c_int, Error> {
    if !(0..65).contains(&signum) {
        return Err(Error::InvalidValue {
            param: "signum",
            value: i64::from(signum),
        });
    }
    inner.engine.kill_child(signum)?;
    Ok(0)
}

/// `nbd_get_subprocess_pid`: `ESRCH` when the handle has no subprocess
/// (the pid stays known after `nbd_kill_subprocess`, as in libnbd 1.24).
pub(crate) fn get_subprocess_pid(inner: &mut HandleInner) -> Result<i64, Error> {
    inner
        .engine
        .child_pid()
        .map(i64::from)
        .ok_or_else(|| Error::Engine(Cause::new(libc::ESRCH, "no subprocess exists")))
}

/// `nbd_supports_vsock`: whether this build has `AF_VSOCK` sockets. As
/// in libnbd, that is a property of the platform (Linux), not of the
/// running kernel: connecting may still need the vsock modules (for
/// example `vsock_loopback` for `VMADDR_CID_LOCAL`).
pub(crate) fn supports_vsock() -> bool {
    cfg!(target_os = "linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ssh_command_lines() {
        assert_eq!(
            ssh_argv("server", 22, None, 10809, None, false).unwrap(),
            argv(&[
                "ssh",
                "-p",
                "22",
                "--",
                "server",
                "nc",
                "localhost",
                "10809"
            ])
        );
        assert_eq!(
            ssh_argv("server", 2222, Some("bob"), 99, None, true).unwrap(),
            argv(&[
                "ssh",
                "-C",
                "-p",
                "2222",
                "-o",
                "User=bob",
                "--",
                "server",
                "nc",
                "localhost",
                "99"
            ])
        );
        assert_eq!(
            ssh_argv("::1", 22, None, 10809, Some("/tmp/s.sock"), false).unwrap(),
            argv(&["ssh", "-p", "22", "--", "::1", "nc", "-U", "/tmp/s.sock"])
        );
        // A path the remote shell would split or expand is quoted.
        assert_eq!(
            ssh_argv(
                "h",
                22,
                None,
                10809,
                Some("/tmp/a b;rm -rf ~/'x'$(id)"),
                false
            )
            .unwrap()[6..],
            argv(&["-U", r"'/tmp/a b;rm -rf ~/'\''x'\''$(id)'"])
        );
    }

    #[test]
    fn ssh_refuses_option_and_shell_injection() {
        for host in [
            "",
            "-oProxyCommand=sh",
            "-x",
            "a b",
            "h;id",
            "h`id`",
            "$(id)",
            "h\n",
            "h'x",
            "a\"b",
            "h|x",
        ] {
            let e = ssh_argv(host, 22, None, 10809, None, false).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{host:?}");
        }
        for user in ["", "-bob", "-oProxyCommand=x", "a b", "a;b", "a$b", "a\tb"] {
            let e = ssh_argv("h", 22, Some(user), 10809, None, false).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{user:?}");
        }
        for socket in ["", "-x", "--help", "/tmp/a\nb", "/tmp/\u{1b}"] {
            let e = ssh_argv("h", 22, None, 10809, Some(socket), false).unwrap_err();
            assert_eq!(e.errno(), libc::EINVAL, "{socket:?}");
        }
        // Fine: addresses, zone ids, dotted and underscored names.
        for host in ["10.0.0.1", "fe80::1%eth0", "my_host.example.com", "h-1"] {
            assert!(ssh_argv(host, 22, Some("a.b_c-d@e"), 1, None, false).is_ok());
        }
    }

    #[test]
    fn socket_activation_names() {
        assert!(check_socket_activation_name(b"").is_ok());
        assert!(check_socket_activation_name(b"abcXYZ019").is_ok());
        assert!(check_socket_activation_name(&[b'a'; 32]).is_ok());
        assert_eq!(
            check_socket_activation_name(&[b'a'; 33])
                .unwrap_err()
                .errno(),
            libc::ENAMETOOLONG
        );
        for bad in [&b"a-b"[..], b"a.b", b"a b", b"a_b", b"a:b", "é".as_bytes()] {
            assert_eq!(
                check_socket_activation_name(bad).unwrap_err().errno(),
                libc::EINVAL
            );
        }
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/a/b-c_d.sock"), "/a/b-c_d.sock");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
