//! TLS on the connection's socket, with OpenSSL (the `openssl` crate over
//! the system's libssl): X.509 certificates or pre-shared keys.
//!
//! The protocol core decides *when* TLS starts (`Event::StartTls`, after the
//! server acknowledged `NBD_OPT_STARTTLS`); this module builds the OpenSSL
//! context from the handle's settings ([`TlsOptions`]), runs the handshake
//! without blocking, and then carries the engine's reads and writes. Every
//! operation that cannot go on records which way the socket must become
//! ready ([`TlsSession::read_waits`], [`TlsSession::write_waits`]), so
//! `nbd_aio_get_direction` tells a `poll(2)` loop what TLS waits for.

use super::{EngineError, Recv, DIRECTION_READ, DIRECTION_WRITE};
use openssl::error::ErrorStack;
use openssl::ssl::{
    ErrorCode, ShutdownState, Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode,
    SslOptions, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::X509VerifyResult;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

/// What the handle's settings say about TLS, taken when connecting.
#[derive(Debug, Clone)]
pub(crate) struct TlsOptions {
    /// Directory with `ca-cert.pem`, `client-cert.pem`, `client-key.pem` and
    /// `ca-crl.pem` (each optional), from `nbd_set_tls_certificates`.
    pub(crate) certificates: Option<PathBuf>,
    /// Check the server's certificate (and its name, when known).
    pub(crate) verify_peer: bool,
    /// The PSK identity.
    pub(crate) username: String,
    /// Why the default username (the login name) could not be found:
    /// reported when a PSK handshake needs it, as libnbd 1.24 does (the
    /// connection then dies), not before connecting.
    pub(crate) username_error: Option<EngineError>,
    /// `username:hexkey` lines, from `nbd_set_tls_psk_file`: PSK instead of
    /// certificates when set.
    pub(crate) psk_file: Option<PathBuf>,
    /// The server's name (`nbd_set_tls_hostname`, else the host of a TCP
    /// connection), checked against its certificate and sent as SNI.
    pub(crate) hostname: Option<String>,
    /// `nbd_set_tls_priority`, understood (`None`: OpenSSL's defaults).
    pub(crate) priority: Option<crate::tls::priority::Priority>,
}

/// The largest TLS record's plaintext: small segments are gathered up to
/// this size so that each record carries as much as one can.
const RECORD: usize = 16 * 1024;

/// A pre-shared key is at most this long (OpenSSL's limit).
const MAX_PSK: usize = 512;

/// One TLS session over the engine's socket.
pub(crate) struct TlsSession {
    stream: SslStream<FdIo>,
    /// Keeps the shared context (see [`shared_context`]) alive.
    _ctx: Arc<SslContext>,
    handshaking: bool,
    /// Whether a PSK (not a certificate) must authenticate the server.
    psk: bool,
    /// Direction the last read waited for (0: none).
    read_waits: u32,
    /// Direction the last write waited for (0: none).
    write_waits: u32,
    /// Small segments gathered into one record.
    gather: Vec<u8>,
    /// A copy of the bytes a write that must be retried offered OpenSSL
    /// (see [`TlsSession::committed`]): the retry sends these, whatever
    /// the caller's queue holds by then.
    held: Vec<u8>,
    close_notify_sent: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.handshaking)
            .field("psk", &self.psk)
            .finish_non_exhaustive()
    }
}

/// The socket as OpenSSL's transport: non-blocking `recv`/`send` that never
/// raise `SIGPIPE`. It does not own the descriptor (the engine does).
#[derive(Debug)]
struct FdIo(RawFd);

impl Read for FdIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is writable for buf.len() bytes; recv writes at most that.
            let r = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: buf is readable for buf.len() bytes.
            let r = unsafe {
                libc::send(
                    self.0,
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where libnbd looks for certificates when none were set.
fn default_certificates() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?);
    [".pki/libnbd", ".config/pki/libnbd"]
        .into_iter()
        .map(|d| home.join(d))
        .find(|d| d.is_dir())
}

/// A path OpenSSL can take (the `openssl` crate wants UTF-8 file names).
fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{}: file name is not valid UTF-8", path.display()))
}

fn stack(what: &str, e: &ErrorStack) -> String {
    format!("{what}: {e}")
}

/// Why TLS could not be set up for a session, with the errno to report:
/// `EIO` unless the cause has its own (a PSK file that cannot be read
/// keeps the system's errno, a username missing from it is `EINVAL`, as
/// in libnbd 1.24).
#[derive(Debug)]
struct Failure(EngineError);

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure(EngineError::new(libc::EIO, message))
    }
}

/// A failed setup step of a session, reported as `EIO`.
fn eio(message: String) -> EngineError {
    EngineError::new(libc::EIO, message)
}

/// Reads the key of `username` from a psktool-style file of
/// `username:hexkey` lines.
fn read_psk(file: &Path, username: &str) -> Result<Vec<u8>, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Failure(EngineError::io(
            &e,
            &format!("TLS PSK file {}", file.display()),
        ))
    })?;
    let invalid = |message: String| Failure(EngineError::new(libc::EINVAL, message));
    for line in text.lines() {
        let Some((user, hex)) = line.split_once(':') else {
            continue;
        };
        if user != username {
            continue;
        }
        let hex = hex.trim();
        if hex.is_empty() || hex.len() % 2 != 0 || hex.len() / 2 > MAX_PSK {
            return Err(invalid(format!(
                "TLS PSK file {}: the key of {username} is not an even number \
                 of hex digits (at most {MAX_PSK} bytes)",
                file.display()
            )));
        }
        let mut key = Vec::with_capacity(hex.len() / 2);
        for pair in hex.as_bytes().chunks(2) {
            let s = std::str::from_utf8(pair).map_err(|_| "not hex".to_string());
            let byte = s.and_then(|s| u8::from_str_radix(s, 16).map_err(|_| "not hex".into()));
            key.push(byte.map_err(|_| {
                invalid(format!(
                    "TLS PSK file {}: the key of {username} is not hexadecimal",
                    file.display()
                ))
            })?);
        }
        return Ok(key);
    }
    Err(invalid(format!(
        "TLS PSK file {}: no key for username {username}",
        file.display()
    )))
}

/// The certificates directory a connection uses: the one set (which must
/// exist), else libnbd's default under `$HOME` if present.
fn certificates_dir(opts: &TlsOptions) -> Result<Option<PathBuf>, String> {
    match &opts.certificates {
        Some(d) if !d.is_dir() => Err(format!(
            "TLS certificates directory {}: not a directory",
            d.display()
        )),
        Some(d) => Ok(Some(d.clone())),
        None => Ok(default_certificates()),
    }
}

/// Identity and version of a file (absent: `None`): a context built from
/// it is reused only while the file is the same.
type FileStamp = Option<(u64, u64, u64, i64, i64)>;

fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// What an OpenSSL context is built from: equal keys give the same context.
#[derive(Debug, PartialEq, Eq)]
struct ContextKey {
    dir: Option<PathBuf>,
    verify_peer: bool,
    username: String,
    psk_file: Option<PathBuf>,
    priority: Option<crate::tls::priority::Priority>,
    files: Vec<FileStamp>,
}

impl ContextKey {
    fn new(opts: &TlsOptions) -> Result<Self, String> {
        let dir = match &opts.psk_file {
            Some(_) => None,
            None => certificates_dir(opts)?,
        };
        let files = match (&opts.psk_file, &dir) {
            (Some(f), _) => vec![stamp(f)],
            (None, Some(d)) => [
                "ca-cert.pem",
                "ca-crl.pem",
                "client-cert.pem",
                "client-key.pem",
            ]
            .iter()
            .map(|f| stamp(&d.join(f)))
            .collect(),
            (None, None) => Vec::new(),
        };
        Ok(ContextKey {
            dir,
            verify_peer: opts.verify_peer,
            username: opts.username.clone(),
            psk_file: opts.psk_file.clone(),
            priority: opts.priority.clone(),
            files,
        })
    }
}

/// Contexts in use, shared by the sessions whose settings and files are
/// the same (an OpenSSL context with the system's CAs loaded costs far
/// more than a session). Only weak references are kept: a context, and
/// the key or certificates it holds, goes with the last session using it.
static SHARED: std::sync::Mutex<Vec<(ContextKey, Weak<SslContext>)>> =
    std::sync::Mutex::new(Vec::new());

/// The context for `opts`: a shared one if a live session has the same
/// key, else a new one.
fn shared_context(opts: &TlsOptions) -> Result<Arc<SslContext>, Failure> {
    let key = ContextKey::new(opts)?;
    // A panic elsewhere while holding the lock leaves only this list, which
    // stays consistent: go on with it.
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    shared.retain(|(_, w)| w.strong_count() > 0);
    if let Some(ctx) = shared
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(ctx);
    }
    let ctx = Arc::new(context(opts, key.dir.as_deref())?);
    shared.push((key, Arc::downgrade(&ctx)));
    Ok(ctx)
}

/// Builds the OpenSSL context for `opts`, with certificates from `dir`.
fn context(opts: &TlsOptions, dir: Option<&Path>) -> Result<SslContext, Failure> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client()).map_err(|e| stack("TLS", &e))?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| stack("TLS", &e))?;
    // Writes may be retried with a longer buffer after a partial write;
    // an idle session gives its record buffers back.
    b.set_mode(
        SslMode::ENABLE_PARTIAL_WRITE
            | SslMode::ACCEPT_MOVING_WRITE_BUFFER
            | SslMode::RELEASE_BUFFERS,
    );
    // A server that closes without close_notify is an end of file: the NBD
    // layer knows whether a reply was cut short, and says so.
    b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
    if let Some(file) = &opts.psk_file {
        let key = read_psk(file, &opts.username)?;
        let mut identity = opts.username.clone().into_bytes();
        identity.push(0);
        b.set_psk_client_callback(move |_ssl, _hint, id_buf, psk_buf| {
            if identity.len() > id_buf.len() || key.len() > psk_buf.len() {
                return Ok(0); // no key: the handshake fails
            }
            id_buf[..identity.len()].copy_from_slice(&identity);
            psk_buf[..key.len()].copy_from_slice(&key);
            Ok(key.len())
        });
        // TLS 1.2: PSK suites only. TLS 1.3 uses the key through the same
        // callback; a server that answers with a certificate instead fails
        // verification against the empty trust store set here.
        b.set_cipher_list("ECDHEPSK:DHEPSK:PSK:!aNULL:!eNULL:!3DES:!RC4")
            .map_err(|e| stack("TLS cipher list", &e))?;
        if let Some(p) = &opts.priority {
            p.apply(&mut b, true)?;
        }
        b.set_verify(SslVerifyMode::PEER);
        return Ok(b.build());
    }
    if let Some(p) = &opts.priority {
        p.apply(&mut b, false)?;
    }
    // X.509. The system's CAs are always trusted (a certificates directory
    // adds its own CA; it does not turn verification off).
    b.set_default_verify_paths()
        .map_err(|e| stack("TLS system CA certificates", &e))?;
    if let Some(dir) = dir {
        let ca = dir.join("ca-cert.pem");
        if ca.exists() {
            b.set_ca_file(utf8(&ca)?)
                .map_err(|e| stack(&format!("TLS {}", ca.display()), &e))?;
        }
        let crl = dir.join("ca-crl.pem");
        if crl.exists() {
            let path = utf8(&crl)?.to_string();
            let lookup = b
                .cert_store_mut()
                .add_lookup(X509Lookup::file())
                .map_err(|e| stack("TLS CRL", &e))?;
            lookup
                .load_crl_file(&path, SslFiletype::PEM)
                .map_err(|e| stack(&format!("TLS {path}"), &e))?;
            b.cert_store_mut()
                .set_flags(X509VerifyFlags::CRL_CHECK)
                .map_err(|e| stack("TLS CRL", &e))?;
        }
        let cert = dir.join("client-cert.pem");
        let key = dir.join("client-key.pem");
        if cert.exists() || key.exists() {
            b.set_certificate_chain_file(utf8(&cert)?)
                .map_err(|e| stack(&format!("TLS {}", cert.display()), &e))?;
            b.set_private_key_file(utf8(&key)?, SslFiletype::PEM)
                .map_err(|e| stack(&format!("TLS {}", key.display()), &e))?;
            b.check_private_key()
                .map_err(|e| stack("TLS client key does not match its certificate", &e))?;
        }
    }
    b.set_verify(if opts.verify_peer {
        SslVerifyMode::PEER
    } else {
        SslVerifyMode::NONE
    });
    Ok(b.build())
}

impl TlsSession {
    /// Prepares a client session on `fd`; [`TlsSession::handshake`] runs it.
    pub(crate) fn new(opts: &TlsOptions, fd: RawFd) -> Result<Self, EngineError> {
        if let (Some(_), Some(e)) = (&opts.psk_file, &opts.username_error) {
            return Err(e.clone());
        }
        let ctx = shared_context(opts).map_err(|f| f.0)?;
        let mut ssl = Ssl::new(&ctx).map_err(|e| eio(stack("TLS", &e)))?;
        let psk = opts.psk_file.is_some();
        if !psk {
            if let Some(host) = opts.hostname.as_deref().filter(|h| !h.is_empty()) {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                match bare.parse::<IpAddr>() {
                    Ok(ip) => {
                        if opts.verify_peer {
                            ssl.param_mut()
                                .set_ip(ip)
                                .map_err(|e| eio(stack("TLS host", &e)))?;
                        }
                    }
                    Err(_) => {
                        ssl.set_hostname(host)
                            .map_err(|e| eio(stack("TLS server name", &e)))?;
                        if opts.verify_peer {
                            ssl.param_mut()
                                .set_host(host)
                                .map_err(|e| eio(stack("TLS host", &e)))?;
                        }
                    }
                }
            }
        }
        let stream = SslStream::new(ssl, FdIo(fd)).map_err(|e| eio(stack("TLS", &e)))?;
        Ok(TlsSession {
            stream,
            _ctx: ctx,
            handshaking: true,
            psk,
            read_waits: 0,
            write_waits: 0,
            gather: Vec::new(),
            held: Vec::new(),
            close_notify_sent: false,
        })
    }

    /// Whether the handshake is still running.
    pub(crate) fn handshaking(&self) -> bool {
        self.handshaking
    }

    /// The direction the last read is waiting for, or 0.
    pub(crate) fn read_waits(&self) -> u32 {
        self.read_waits
    }

    /// The direction the last write is waiting for, or 0.
    pub(crate) fn write_waits(&self) -> u32 {
        self.write_waits
    }

    /// Decrypted bytes OpenSSL holds that the socket will not signal.
    pub(crate) fn pending(&self) -> usize {
        self.stream.ssl().pending()
    }

    /// Runs the handshake as far as the socket allows: `Ok(true)` when it is
    /// complete, `Ok(false)` while it waits (see [`TlsSession::read_waits`]),
    /// `Err` with the reason when it failed: errno 0, as libnbd 1.24
    /// reports a failed handshake (the TLS library's codes are no errnos).
    pub(crate) fn handshake(&mut self) -> Result<bool, EngineError> {
        if !self.handshaking {
            return Ok(true);
        }
        match self.stream.connect() {
            Ok(()) => {
                self.read_waits = 0;
                if self.psk && self.stream.ssl().peer_certificate().is_some() {
                    return Err(EngineError::NoErrno(
                        "the server authenticated with a certificate, \
                         not with the pre-shared key"
                            .into(),
                    ));
                }
                self.handshaking = false;
                Ok(true)
            }
            Err(e) => match e.code() {
                ErrorCode::WANT_READ => {
                    self.read_waits = DIRECTION_READ;
                    Ok(false)
                }
                ErrorCode::WANT_WRITE => {
                    self.read_waits = DIRECTION_WRITE;
                    Ok(false)
                }
                _ => Err(EngineError::NoErrno(self.failure(&e))),
            },
        }
    }

    /// The direction the handshake waits for.
    pub(crate) fn handshake_waits(&self) -> u32 {
        if self.read_waits == 0 {
            DIRECTION_READ
        } else {
            self.read_waits
        }
    }

    /// A readable reason for a failed handshake.
    fn failure(&self, e: &openssl::ssl::Error) -> String {
        let verify = self.stream.ssl().verify_result();
        if verify != X509VerifyResult::OK {
            return format!(
                "the server's certificate was rejected: {}",
                verify.error_string()
            );
        }
        match (e.io_error(), e.ssl_error()) {
            (Some(io), _) => format!("TLS handshake: {io}"),
            (None, Some(s)) => format!("TLS handshake: {s}"),
            (None, None) if e.code() == ErrorCode::SYSCALL => {
                "TLS handshake: the server closed the connection".into()
            }
            _ => format!("TLS handshake: {e}"),
        }
    }

    /// Reads decrypted bytes into `dst` (`len` bytes).
    ///
    /// # Safety
    ///
    /// `dst` must be writable for `len` bytes.
    pub(crate) unsafe fn recv(&mut self, dst: *mut u8, len: usize) -> Recv {
        // SAFETY: the caller guarantees dst is writable for len bytes, and
        // OpenSSL treats it as uninitialised output.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(dst.cast::<std::mem::MaybeUninit<u8>>(), len) };
        match self.stream.ssl_read_uninit(buf) {
            Ok(n) => {
                self.read_waits = 0;
                Recv::Data(n)
            }
            Err(e) => match e.code() {
                ErrorCode::WANT_READ => {
                    self.read_waits = DIRECTION_READ;
                    Recv::Again
                }
                ErrorCode::WANT_WRITE => {
                    self.read_waits = DIRECTION_WRITE;
                    Recv::Again
                }
                ErrorCode::ZERO_RETURN => Recv::Eof,
                // The peer closed without close_notify.
                ErrorCode::SYSCALL if e.io_error().is_none() => Recv::Eof,
                _ => Recv::Failed(tls_io_error(e)),
            },
        }
    }

    /// Encrypts and sends from `segments` (in order): `Ok(Some(n))` with the
    /// bytes taken, `Ok(None)` when the socket is full (see
    /// [`TlsSession::write_waits`]).
    ///
    /// A write OpenSSL could not finish must be retried with the same
    /// bytes, and part of them may already be on the wire (OpenSSL sent
    /// whole records of it without saying so). So they are copied and the
    /// retries send the copy, ignoring `segments` until it is gone: the
    /// server may already have answered a request in those bytes, and the
    /// caller may have released its write buffer (the command completed)
    /// before the retry. Retrying from the caller's queue instead, with
    /// whatever it held by then, is what failed with "write payload
    /// missing" under many parallel writes.
    pub(crate) fn send(&mut self, segments: &[&[u8]]) -> io::Result<Option<usize>> {
        let retry = !self.held.is_empty();
        let data: &[u8] = if retry {
            &self.held
        } else {
            let first = segments.first().copied().unwrap_or_default();
            // At most one record per call.
            if first.len() >= RECORD || segments.len() == 1 {
                &first[..first.len().min(RECORD)]
            } else {
                self.gather.clear();
                for s in segments {
                    let room = RECORD - self.gather.len();
                    self.gather.extend_from_slice(&s[..s.len().min(room)]);
                    if self.gather.len() == RECORD {
                        break;
                    }
                }
                &self.gather
            }
        };
        let result = self.stream.ssl_write(data);
        let waits = match &result {
            Ok(_) => 0,
            Err(e) if e.code() == ErrorCode::WANT_WRITE => DIRECTION_WRITE,
            Err(e) if e.code() == ErrorCode::WANT_READ => DIRECTION_READ,
            Err(_) => 0,
        };
        if waits != 0 && !retry {
            let copy = data.to_vec();
            self.held = copy;
        }
        match result {
            Ok(n) => {
                self.write_waits = 0;
                if retry {
                    // What OpenSSL did not take is plain queued data again,
                    // still sent from the copy.
                    self.held.drain(..n.min(self.held.len()));
                    self.held.shrink_to(RECORD);
                }
                Ok(Some(n))
            }
            Err(_) if waits != 0 => {
                self.write_waits = waits;
                Ok(None)
            }
            Err(e) => Err(tls_io_error(e)),
        }
    }

    /// Bytes at the head of the output that OpenSSL may already have
    /// encrypted in a write that must be retried: they can no longer be
    /// withdrawn (`LIBNBD_SHUTDOWN_ABANDON_PENDING`), and the next
    /// [`TlsSession::send`] sends them from its own copy.
    pub(crate) fn committed(&self) -> usize {
        self.held.len()
    }

    /// Sends TLS close_notify once (best effort: it is not retried if the
    /// socket is full).
    pub(crate) fn close_notify(&mut self) {
        if self.handshaking || self.close_notify_sent {
            return;
        }
        if self.stream.get_shutdown().contains(ShutdownState::SENT) {
            self.close_notify_sent = true;
            return;
        }
        self.close_notify_sent = true;
        let _ = self.stream.shutdown();
    }
}

/// A failed TLS read or write as an `io::Error`: a system call's error
/// keeps its errno (a reset stays `ECONNRESET`), anything else is
/// OpenSSL's text.
fn tls_io_error(e: openssl::ssl::Error) -> io::Error {
    if let Some(errno) = e.io_error().and_then(io::Error::raw_os_error) {
        return io::Error::from_raw_os_error(errno);
    }
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk_opts(file: &Path, user: &str) -> TlsOptions {
        TlsOptions {
            certificates: None,
            verify_peer: true,
            username: user.into(),
            username_error: None,
            psk_file: Some(file.to_path_buf()),
            hostname: None,
            priority: None,
        }
    }

    #[test]
    fn contexts_are_shared_while_settings_and_files_are_the_same() {
        let dir = std::env::temp_dir().join(format!("nbd-tls-ctx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.psk");
        let two = format!("alice:{}\nbob:{}\n", "11".repeat(32), "33".repeat(32));
        std::fs::write(&file, two).unwrap();
        let a = shared_context(&psk_opts(&file, "alice")).unwrap();
        let b = shared_context(&psk_opts(&file, "alice")).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "same settings, same files: one context"
        );
        let other_user = shared_context(&psk_opts(&file, "bob")).unwrap();
        assert!(!Arc::ptr_eq(&a, &other_user));
        // A new key in the file: a new context (the old one has the old key).
        std::fs::write(&file, format!("alice:{}\n", "22".repeat(48))).unwrap();
        let c = shared_context(&psk_opts(&file, "alice")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "the key file changed");
        // Only weak references are kept: the last user takes it away.
        let weak = Arc::downgrade(&c);
        drop(c);
        assert!(weak.upgrade().is_none());
        // A missing file is an error at handshake time, not a cached context.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(shared_context(&psk_opts(&file, "alice")).is_err());
    }

    /// Waits until `fd` is ready for `dir` (`DIRECTION_*` bits).
    fn wait(fd: RawFd, dir: u32) {
        let mut events = 0;
        if dir & DIRECTION_READ != 0 {
            events |= libc::POLLIN;
        }
        if dir & DIRECTION_WRITE != 0 || events == 0 {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert!(unsafe { libc::poll(&mut pfd, 1, -1) } >= 0);
    }

    /// A write OpenSSL could not finish is retried with the bytes it was
    /// offered first, whatever the caller offers by then. (The engine's
    /// queue may have changed before the retry: more requests appended, or
    /// a write whose bytes OpenSSL had already sent answered by the server
    /// and gone. Retrying from the queue made OpenSSL refuse the shorter
    /// retry, or stopped the engine with "write payload missing".)
    #[test]
    fn a_retried_write_sends_the_bytes_first_offered() {
        use openssl::ssl::SslMethod;
        use std::io::Read;
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;
        let dir = std::env::temp_dir().join(format!("nbd-tls-retry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.psk");
        let key = [0x42u8; 32];
        std::fs::write(&file, format!("alice:{}\n", "42".repeat(32))).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let mut b = SslContextBuilder::new(SslMethod::tls_server()).unwrap();
            b.set_psk_server_callback(move |_ssl, id, psk| match id {
                Some(b"alice") => {
                    psk[..key.len()].copy_from_slice(&key);
                    Ok(key.len())
                }
                _ => Ok(0),
            });
            b.set_cipher_list("PSK").unwrap();
            let ctx = b.build();
            let mut s = Ssl::new(&ctx).unwrap().accept(theirs).unwrap();
            // Not a byte is read until the client's socket is full.
            go_rx.recv().unwrap();
            let mut all = Vec::new();
            let mut buf = [0u8; 65536];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
            }
            all
        });
        let fd = ours.as_raw_fd();
        let mut t = TlsSession::new(&psk_opts(&file, "alice"), fd).unwrap();
        while !t.handshake().unwrap() {
            wait(fd, t.handshake_waits());
        }
        let stream: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while let Some(n) = t.send(&[&stream[sent..]]).unwrap() {
            sent += n;
            assert!(sent < stream.len(), "the socket never filled");
        }
        assert!(t.committed() > 0, "a write is waiting to be retried");
        go.send(()).unwrap();
        // The caller now offers other bytes, fewer of them.
        let other = [0xeeu8; 100];
        while t.committed() > 0 {
            match t.send(&[&other]).unwrap() {
                Some(n) => sent += n,
                None => wait(fd, t.write_waits()),
            }
        }
        while sent < stream.len() {
            match t.send(&[&stream[sent..]]).unwrap() {
                Some(n) => sent += n,
                None => wait(fd, t.write_waits()),
            }
        }
        t.close_notify();
        drop(t);
        drop(ours);
        let got = server.join().unwrap();
        assert_eq!(got.len(), stream.len());
        assert!(got == stream, "the server got other bytes than the stream");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn psk_file_parsing() {
        let dir = std::env::temp_dir().join(format!("nbd-tls-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.psk");
        std::fs::write(&file, "bob:00ff\nalice:0a0B\n# comment\n").unwrap();
        assert_eq!(read_psk(&file, "alice").unwrap(), [0x0a, 0x0b]);
        assert_eq!(read_psk(&file, "bob").unwrap(), [0x00, 0xff]);
        let e = read_psk(&file, "carol").unwrap_err().0;
        assert!(e.text().contains("no key for username carol"));
        assert_eq!(e.errno(), libc::EINVAL);
        std::fs::write(&file, "alice:abc\n").unwrap();
        assert!(read_psk(&file, "alice")
            .unwrap_err()
            .0
            .text()
            .contains("hex"));
        std::fs::write(&file, "alice:zz\n").unwrap();
        assert!(read_psk(&file, "alice")
            .unwrap_err()
            .0
            .text()
            .contains("not hexadecimal"));
        // A file that cannot be read keeps the system's errno.
        let e = read_psk(&dir.join("missing.psk"), "alice").unwrap_err().0;
        assert_eq!(e.errno(), libc::ENOENT);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
