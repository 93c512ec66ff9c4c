//! A scriptable hostile NBD server for tests of the C API, and the C-side
//! probes that watch what a caller sees.
//!
//! * [`Evil`] is the server: a `ServerCodec` on one end of a socketpair,
//!   driven by a test's script in its own thread. It answers options and
//!   requests like a correct server ([`Evil::negotiate`], [`Evil::serve`])
//!   until the script decides to lie: wrong magics, lengths, offsets and
//!   cookies, through the codec or as raw bytes ([`Evil::raw`],
//!   [`Evil::chunk_raw`]).
//! * [`Conn`] is the client: a libnbd handle from `nbd_create`, connected
//!   with `nbd_connect_socket` to the other end, with safe wrappers of the
//!   calls the tests make. [`Conn::finish`] closes the handle and joins the
//!   server thread, re-raising any panic of the script.
//! * [`Probe`] counts the calls and the `.free` of the callbacks given to
//!   the library; [`Guarded`] is a caller buffer surrounded by canaries.
//!
//! No sleeps: the client blocks in its calls and the server in its reads.
//! Every server read and write times out after [`IO_TIMEOUT`], so a script
//! that waits for something the client never sends fails instead of hanging.

#![allow(dead_code)] // Each test uses a different subset.

use nbd_ffi::callbacks::{
    ChunkCallback, CompletionCallback, ContextCallback, ExtentCallback, ListCallback,
};
use nbd_ffi::handle::Handle;
use nbd_proto::consts::{cmd, handshake_flags, rep, transmission_flags as tf};
use nbd_proto::server::{Phase, ServerCodec, ServerEvent};
use nbd_proto::wire::option::{Info, MetaContext, OptionReply, OptionRequest, ServerEntry};
use nbd_proto::wire::reply::{BlockStatus, ChunkHeader, ErrorChunk, Extent};
use nbd_proto::wire::request::{BlockStatusPayload, RequestHeader};
use openssl::ssl::{ErrorCode, ShutdownState, Ssl, SslContextBuilder, SslMethod, SslStream};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the server waits for the client before giving up.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The metadata context the tests negotiate, and the id the server gives it.
pub(crate) const BASE_ALLOCATION: &str = "base:allocation";
/// The id of `base:allocation`.
pub(crate) const BASE_ID: u32 = 7;

/// Which reply headers the scripted server agrees to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Refuses structured replies and extended headers: simple replies only.
    Simple,
    /// Structured replies with compact (20-byte) chunk headers.
    Structured,
    /// Extended headers (32-byte chunks, 64-bit lengths).
    Extended,
}

/// What the server says about itself when it behaves.
#[derive(Debug, Clone)]
pub(crate) struct Export {
    /// Export size.
    pub(crate) size: u64,
    /// Transmission flags.
    pub(crate) flags: u16,
    /// Reply headers agreed to.
    pub(crate) mode: Mode,
    /// Metadata contexts offered (id, name).
    pub(crate) contexts: Vec<(u32, String)>,
    /// Exports listed by `NBD_OPT_LIST` (name, description).
    pub(crate) exports: Vec<(String, String)>,
}

impl Export {
    /// A 1 MiB export that supports every command, with `base:allocation`.
    pub(crate) fn new(mode: Mode) -> Self {
        Export {
            size: 1 << 20,
            flags: tf::HAS_FLAGS
                | tf::SEND_FLUSH
                | tf::SEND_FUA
                | tf::SEND_TRIM
                | tf::SEND_WRITE_ZEROES
                | tf::SEND_CACHE
                | tf::SEND_DF,
            mode,
            contexts: vec![(BASE_ID, BASE_ALLOCATION.to_string())],
            exports: vec![("a".into(), "first".into()), ("b".into(), String::new())],
        }
    }

    /// The same with another size.
    pub(crate) fn sized(mut self, size: u64) -> Self {
        self.size = size;
        self
    }
}

/// The bytes a well-behaved server returns for `len` bytes at `offset`.
pub(crate) fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|o| (o as u8).wrapping_mul(37) ^ ((o >> 8) as u8).wrapping_add(0x5b))
        .collect()
}

/// One transmission request as the server decoded it.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    /// The header.
    pub(crate) h: RequestHeader,
    /// Its payload (writes).
    pub(crate) payload: Option<Vec<u8>>,
}

impl Req {
    /// The cookie.
    pub(crate) fn cookie(&self) -> u64 {
        self.h.cookie
    }
    /// The export offset.
    pub(crate) fn offset(&self) -> u64 {
        self.h.offset
    }
    /// The length.
    pub(crate) fn len(&self) -> u64 {
        self.h.length
    }
    /// The command type.
    pub(crate) fn command(&self) -> u16 {
        self.h.command
    }
}

/// The server's end of the connection: in clear, then perhaps TLS.
enum Sock {
    Plain(UnixStream),
    Tls(Box<SslStream<UnixStream>>),
    /// Between the two, or after a failed TLS handshake.
    Gone,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Plain(s) => s.read(buf),
            Sock::Tls(s) => match s.ssl_read(buf) {
                Ok(n) => Ok(n),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => Ok(0),
                Err(e) => match e.into_io_error() {
                    Ok(io) => Err(io),
                    // A TLS-level failure ends the session for the script.
                    Err(_) => Ok(0),
                },
            },
            Sock::Gone => Ok(0),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sock::Plain(s) => s.write(buf),
            Sock::Tls(s) => s.write(buf),
            Sock::Gone => Err(ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sock {
    fn shutdown_write(&mut self) {
        match self {
            Sock::Plain(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Sock::Tls(s) => {
                let _ = s.shutdown();
                let _ = s.get_ref().shutdown(Shutdown::Write);
            }
            Sock::Gone => {}
        }
    }
}

/// The server side of one connection, owned by the script's thread.
pub(crate) struct Evil {
    codec: ServerCodec,
    greeting: Vec<u8>,
    sock: Sock,
    pending: Vec<u8>,
    hung_up: bool,
    /// What a well-behaved answer describes.
    pub(crate) ex: Export,
}

impl Evil {
    fn new(sock: UnixStream, ex: Export) -> Self {
        sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        sock.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut codec =
            ServerCodec::newstyle(handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES);
        // Held back until the script greets: it may want to send garbage instead.
        let greeting = codec.take_output().to_vec();
        Evil {
            codec,
            greeting,
            sock: Sock::Plain(sock),
            pending: Vec::new(),
            hung_up: false,
            ex,
        }
    }

    /// Runs the server side of a TLS handshake authenticated by the
    /// pre-shared key `key` of `identity` (after the script acknowledged
    /// `NBD_OPT_STARTTLS`); from then on the conversation is encrypted.
    /// Returns the handshake's error, if it failed.
    pub(crate) fn start_tls_psk(&mut self, identity: &str, key: &[u8]) -> Result<(), String> {
        assert!(
            self.pending.is_empty(),
            "the client sent data in clear after STARTTLS"
        );
        let Sock::Plain(plain) = std::mem::replace(&mut self.sock, Sock::Gone) else {
            panic!("TLS is already running");
        };
        let mut b = SslContextBuilder::new(SslMethod::tls_server()).expect("TLS context");
        let (identity, key) = (identity.as_bytes().to_vec(), key.to_vec());
        b.set_psk_server_callback(move |_ssl, id, psk| match id {
            Some(id) if id == identity.as_slice() && key.len() <= psk.len() => {
                psk[..key.len()].copy_from_slice(&key);
                Ok(key.len())
            }
            _ => Ok(0),
        });
        b.set_cipher_list("PSK").expect("PSK cipher suites");
        let ctx = b.build();
        let ssl = Ssl::new(&ctx).expect("TLS session");
        match ssl.accept(plain) {
            Ok(stream) => {
                self.sock = Sock::Tls(Box::new(stream));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads until the client's end closes, then says whether it closed
    /// its TLS session with close_notify.
    pub(crate) fn tls_closed_cleanly(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        while matches!(self.sock.read(&mut buf), Ok(n) if n > 0) {}
        match &mut self.sock {
            Sock::Tls(s) => s.get_shutdown().contains(ShutdownState::RECEIVED),
            _ => false,
        }
    }

    /// Everything the client sends until it closes, raw (not decoded).
    pub(crate) fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = std::mem::take(&mut self.pending);
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("server read: {e} (the client did not close)"),
            }
        }
    }

    /// Replaces the codec (for another greeting); its queued output is sent.
    pub(crate) fn set_codec(&mut self, codec: ServerCodec) {
        self.codec = codec;
        self.send();
    }

    /// The codec, to force its state.
    pub(crate) fn codec(&mut self) -> &mut ServerCodec {
        &mut self.codec
    }

    /// Sends the fixed-newstyle greeting (with `NO_ZEROES`).
    pub(crate) fn greet(&mut self) {
        let g = std::mem::take(&mut self.greeting);
        self.raw(&g);
    }

    /// Reads and discards until the client closes its end (a client that
    /// must give up on its own, without the server hanging up).
    pub(crate) fn wait_close(&mut self) {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("server read: {e} (the client did not give up)"),
            }
        }
    }

    /// Writes everything queued. A client that already hung up is ignored:
    /// what it saw is what the test checks.
    pub(crate) fn send(&mut self) {
        let out = self.codec.take_output();
        if !out.is_empty() {
            let _ = self.sock.write_all(&out);
        }
    }

    /// Sends raw bytes.
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.codec.send_raw(bytes);
        self.send();
    }

    /// The next message from the client, or `None` once it hung up.
    pub(crate) fn event(&mut self) -> Option<ServerEvent> {
        loop {
            if !self.pending.is_empty() {
                let n = self.codec.feed(&self.pending);
                self.pending.drain(..n);
            }
            if let Some(ev) = self.codec.poll_event() {
                return Some(ev.expect("the client broke the protocol"));
            }
            let mut buf = [0u8; 64 * 1024];
            match self.sock.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("server read: {e} (did the client stop talking?)"),
            }
        }
    }

    /// The next option request (client flags are skipped); `None` at EOF.
    pub(crate) fn option(&mut self) -> Option<OptionRequest> {
        loop {
            match self.event()? {
                ServerEvent::ClientFlags(_) => {}
                ServerEvent::Option(o) => return Some(o),
                other => panic!("expected an option, got {other:?}"),
            }
        }
    }

    /// Queues an option reply.
    pub(crate) fn reply(&mut self, option: u32, reply: OptionReply) {
        self.codec
            .send_option_reply(option, &reply)
            .expect("encodable option reply");
    }

    /// Queues an error reply without message.
    pub(crate) fn refuse(&mut self, option: u32, reply_type: u32) {
        self.reply(
            option,
            OptionReply::Error {
                reply_type,
                message: String::new(),
            },
        );
    }

    /// The `NBD_INFO_EXPORT` reply describing [`Evil::ex`].
    pub(crate) fn info_export(&self) -> OptionReply {
        OptionReply::Info(Info::Export {
            size: self.ex.size,
            transmission_flags: self.ex.flags,
        })
    }

    /// Answers an option as a correct server would, and sends.
    pub(crate) fn answer(&mut self, req: &OptionRequest) {
        let code = req.code();
        match req {
            OptionRequest::ExtendedHeaders => {
                if self.ex.mode == Mode::Extended {
                    self.reply(code, OptionReply::Ack);
                } else {
                    self.refuse(code, rep::ERR_UNSUP);
                }
            }
            OptionRequest::StructuredReply => {
                if self.ex.mode == Mode::Simple {
                    self.refuse(code, rep::ERR_UNSUP);
                } else {
                    self.reply(code, OptionReply::Ack);
                }
            }
            OptionRequest::SetMetaContext { queries, .. }
            | OptionRequest::ListMetaContext { queries, .. } => {
                for (id, name) in self.ex.contexts.clone() {
                    if queries.is_empty() || queries.contains(&name) {
                        self.reply(code, OptionReply::MetaContext(MetaContext { id, name }));
                    }
                }
                self.reply(code, OptionReply::Ack);
            }
            OptionRequest::Info { .. } | OptionRequest::Go { .. } => {
                let info = self.info_export();
                self.reply(code, info);
                self.reply(code, OptionReply::Ack);
            }
            OptionRequest::ExportName(_) => {
                self.codec
                    .send_export_name_reply(self.ex.size, self.ex.flags);
            }
            OptionRequest::List => {
                for (name, description) in self.ex.exports.clone() {
                    self.reply(code, OptionReply::Server(ServerEntry { name, description }));
                }
                self.reply(code, OptionReply::Ack);
            }
            OptionRequest::Abort => self.reply(code, OptionReply::Ack),
            _ => self.refuse(code, rep::ERR_UNSUP),
        }
        self.send();
    }

    /// Answers options correctly until one matches `pred` (returned
    /// unanswered), transmission starts or the client hangs up (`None`).
    pub(crate) fn negotiate_until(
        &mut self,
        mut pred: impl FnMut(&OptionRequest) -> bool,
    ) -> Option<OptionRequest> {
        loop {
            if self.codec.phase() == Phase::Transmission {
                return None;
            }
            let req = self.option()?;
            if pred(&req) {
                return Some(req);
            }
            self.answer(&req);
        }
    }

    /// Negotiates correctly; true once in transmission.
    pub(crate) fn negotiate(&mut self) -> bool {
        self.negotiate_until(|_| false);
        self.codec.phase() == Phase::Transmission
    }

    /// The next request; `None` at EOF or on `NBD_CMD_DISC`.
    pub(crate) fn request(&mut self) -> Option<Req> {
        match self.event()? {
            ServerEvent::Request { header, payload } => {
                if header.command == cmd::DISC {
                    return None;
                }
                Some(Req {
                    h: header,
                    payload: payload.map(|p| p.to_vec()),
                })
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// The next request, which must come.
    pub(crate) fn expect_request(&mut self, command: u16) -> Req {
        let r = self.request().expect("the client sent no request");
        assert_eq!(r.command(), command, "unexpected request {r:?}");
        r
    }

    /// Replies to a read with `data` (one simple reply, or one final data
    /// chunk at the request offset).
    pub(crate) fn reply_data(&mut self, r: &Req, data: &[u8]) {
        if self.ex.mode == Mode::Simple {
            self.codec.send_simple_reply(r.cookie(), 0, data);
        } else {
            self.codec
                .send_offset_data(r.cookie(), r.offset(), r.offset(), data, true)
                .expect("data chunk");
        }
        self.send();
    }

    /// Replies with success and no data.
    pub(crate) fn reply_ok(&mut self, r: &Req) {
        if self.ex.mode == Mode::Simple {
            self.codec.send_simple_reply(r.cookie(), 0, &[]);
        } else {
            self.codec
                .send_none(r.cookie(), r.offset(), true)
                .expect("none chunk");
        }
        self.send();
    }

    /// Replies with an error (simple reply, or a final `NBD_REPLY_TYPE_ERROR`).
    pub(crate) fn reply_error(&mut self, r: &Req, error: u32, message: &str) {
        if self.ex.mode == Mode::Simple {
            self.codec.send_simple_reply(r.cookie(), error, &[]);
        } else {
            let e = ErrorChunk {
                error,
                message: message.into(),
                offset: None,
            };
            self.codec
                .send_error(r.cookie(), r.offset(), &e, true)
                .expect("error chunk");
        }
        self.send();
    }

    /// Queues a data chunk (`done` says whether it ends the reply).
    pub(crate) fn data_chunk(&mut self, r: &Req, data_offset: u64, data: &[u8], done: bool) {
        self.codec
            .send_offset_data(r.cookie(), r.offset(), data_offset, data, done)
            .expect("data chunk");
        self.send();
    }

    /// Sends a chunk header announcing `length` and then `payload`, whatever
    /// they are (the header form follows the negotiated mode).
    pub(crate) fn chunk_raw(
        &mut self,
        flags: u16,
        chunk_type: u16,
        cookie: u64,
        req_offset: u64,
        length: u64,
        payload: &[u8],
    ) {
        let header = ChunkHeader {
            flags,
            chunk_type,
            cookie,
            offset: self.codec.extended_headers().then_some(req_offset),
            length,
        };
        let mut bytes = Vec::new();
        header.encode(&mut bytes).expect("header fits");
        bytes.extend_from_slice(payload);
        self.raw(&bytes);
    }

    /// Replies to a block status request with `extents` for each context.
    pub(crate) fn reply_extents(
        &mut self,
        r: &Req,
        context_id: u32,
        extents: &[(u64, u64)],
        done: bool,
    ) {
        let status = BlockStatus {
            context_id,
            extents: extents
                .iter()
                .map(|&(length, flags)| Extent { length, flags })
                .collect(),
        };
        self.codec
            .send_block_status(r.cookie(), r.offset(), &status, done)
            .expect("block status chunk");
        self.send();
    }

    /// Answers one request correctly.
    pub(crate) fn serve_one(&mut self, r: &Req) {
        match r.command() {
            cmd::READ => {
                let data = pattern(r.offset(), r.len() as usize);
                self.reply_data(r, &data);
            }
            cmd::BLOCK_STATUS => {
                // A context list (NBD_CMD_FLAG_PAYLOAD_LEN) names the
                // contexts and carries the range's length.
                let list = r
                    .payload
                    .as_deref()
                    .and_then(|p| BlockStatusPayload::decode(p).ok());
                let (len, ids) = match list {
                    Some(l) => (l.length, l.ids),
                    None => (r.len(), self.ex.contexts.iter().map(|c| c.0).collect()),
                };
                for id in ids {
                    self.reply_extents(r, id, &[(len, 0)], false);
                }
                self.reply_ok(r);
            }
            _ => self.reply_ok(r),
        }
    }

    /// Answers requests correctly until the client disconnects.
    pub(crate) fn serve(&mut self) {
        while let Some(r) = self.request() {
            self.serve_one(&r);
        }
    }

    /// Waits until the client has sent something, then closes the socket
    /// without reading it: unread data makes the kernel reset the
    /// connection, so the client's next `recv` fails with `ECONNRESET`.
    pub(crate) fn reset_when_readable(&mut self) {
        let Sock::Plain(plain) = &self.sock else {
            panic!("a reset needs the plain socket");
        };
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(plain),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, IO_TIMEOUT.as_millis() as c_int) };
        assert_eq!(r, 1, "the client sent nothing");
        self.hung_up = true;
        self.sock = Sock::Gone;
    }

    /// Vanishes: the client sees end of file at once. The server keeps
    /// reading (and discarding) until the client closes its end, so that
    /// the client never sees a reset instead of the end of file.
    pub(crate) fn hang_up(&mut self) {
        if self.hung_up {
            return;
        }
        self.hung_up = true;
        self.send();
        self.sock.shutdown_write();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.hang_up();
    }
}

/// The thread-local last error: `(nbd_get_errno(), nbd_get_error())`.
pub(crate) fn last_error() -> (c_int, String) {
    // SAFETY: both only read this thread's last error; the string stays valid
    // until the next failing call in this thread, and is copied at once.
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

/// `nbd_get_errno()`.
pub(crate) fn errno() -> c_int {
    last_error().0
}

/// A client handle connected to a scripted server.
pub(crate) struct Conn {
    /// The handle.
    pub(crate) h: *mut Handle,
    server: Option<JoinHandle<()>>,
    /// What `nbd_connect_socket` returned.
    pub(crate) rc: c_int,
    /// `nbd_get_errno()` right after a failed connect.
    pub(crate) connect_errno: c_int,
}

impl Conn {
    /// Creates a handle, lets `setup` configure it, starts `script` on the
    /// other end of a socketpair and connects with `nbd_connect_socket`.
    pub(crate) fn start(
        ex: Export,
        setup: impl FnOnce(*mut Handle),
        script: impl FnOnce(&mut Evil) + Send + 'static,
    ) -> Conn {
        Conn::start_with(ex, setup, script, |h, fd| {
            // SAFETY: h is open; the handle takes ownership of fd.
            unsafe { nbd_ffi::connect::nbd_connect_socket(h, fd) }
        })
    }

    /// Like [`Conn::start`], connecting with `connect(handle, fd)` (which
    /// must give the handle the descriptor) instead of `nbd_connect_socket`.
    pub(crate) fn start_with(
        ex: Export,
        setup: impl FnOnce(*mut Handle),
        script: impl FnOnce(&mut Evil) + Send + 'static,
        connect: impl FnOnce(*mut Handle, c_int) -> c_int,
    ) -> Conn {
        // SAFETY: nbd_create has no preconditions.
        let h = unsafe { nbd_ffi::handle::nbd_create() };
        assert!(!h.is_null());
        setup(h);
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let server = std::thread::spawn(move || {
            let mut evil = Evil::new(theirs, ex);
            script(&mut evil);
        });
        let rc = connect(h, ours.into_raw_fd());
        let connect_errno = if rc == -1 { errno() } else { 0 };
        Conn {
            h,
            server: Some(server),
            rc,
            connect_errno,
        }
    }

    /// Like [`Conn::start`] with a server that greets and negotiates
    /// correctly before running `script`; the connect must succeed.
    pub(crate) fn ready(
        ex: Export,
        setup: impl FnOnce(*mut Handle),
        script: impl FnOnce(&mut Evil) + Send + 'static,
    ) -> Conn {
        let c = Conn::start(ex, setup, move |s| {
            s.greet();
            assert!(s.negotiate(), "the client did not finish negotiating");
            script(s);
        });
        assert_eq!(c.rc, 0, "connect failed: {:?}", last_error());
        c
    }

    /// Closes the handle and joins the server, re-raising its panic.
    pub(crate) fn finish(mut self) {
        self.close();
        if let Some(t) = self.server.take() {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
    }

    fn close(&mut self) {
        if !self.h.is_null() {
            // SAFETY: h is open and closed only here.
            unsafe { nbd_ffi::handle::nbd_close(self.h) };
            self.h = std::ptr::null_mut();
        }
    }

    /// `nbd_aio_is_dead`.
    pub(crate) fn is_dead(&self) -> bool {
        // SAFETY: h is open.
        unsafe { nbd_ffi::state::nbd_aio_is_dead(self.h) == 1 }
    }

    /// `nbd_aio_is_ready`.
    pub(crate) fn is_ready(&self) -> bool {
        // SAFETY: h is open.
        unsafe { nbd_ffi::state::nbd_aio_is_ready(self.h) == 1 }
    }

    /// `nbd_aio_is_negotiating`.
    pub(crate) fn is_negotiating(&self) -> bool {
        // SAFETY: h is open.
        unsafe { nbd_ffi::state::nbd_aio_is_negotiating(self.h) == 1 }
    }

    /// `nbd_aio_in_flight`.
    pub(crate) fn in_flight(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::aio::nbd_aio_in_flight(self.h) }
    }

    /// `nbd_get_size`.
    pub(crate) fn size(&self) -> i64 {
        // SAFETY: h is open.
        unsafe { nbd_ffi::info::nbd_get_size(self.h) }
    }

    /// `nbd_pread` into the inside of `buf`.
    pub(crate) fn pread(&self, buf: &Guarded, offset: u64) -> c_int {
        // SAFETY: h is open; buf.ptr() is writable for buf.len() bytes.
        unsafe { nbd_ffi::commands::nbd_pread(self.h, buf.ptr(), buf.len(), offset, 0) }
    }

    /// `nbd_pread_structured` into the inside of `buf`.
    pub(crate) fn pread_structured(
        &self,
        buf: &Guarded,
        offset: u64,
        chunk: ChunkCallback,
    ) -> c_int {
        // SAFETY: as for pread; the callback's user_data is a leaked Probe.
        unsafe {
            nbd_ffi::commands::nbd_pread_structured(self.h, buf.ptr(), buf.len(), offset, chunk, 0)
        }
    }

    /// `nbd_aio_pread` into a leaked buffer (it must outlive the handle).
    pub(crate) fn aio_pread(
        &self,
        buf: &'static Guarded,
        offset: u64,
        completion: CompletionCallback,
    ) -> i64 {
        // SAFETY: h is open; the buffer is leaked, so valid until the end.
        unsafe { nbd_ffi::aio::nbd_aio_pread(self.h, buf.ptr(), buf.len(), offset, completion, 0) }
    }

    /// `nbd_aio_pread_structured` into a leaked buffer.
    pub(crate) fn aio_pread_structured(
        &self,
        buf: &'static Guarded,
        offset: u64,
        chunk: ChunkCallback,
        completion: CompletionCallback,
    ) -> i64 {
        // SAFETY: as for aio_pread.
        unsafe {
            nbd_ffi::aio::nbd_aio_pread_structured(
                self.h,
                buf.ptr(),
                buf.len(),
                offset,
                chunk,
                completion,
                0,
            )
        }
    }

    /// `nbd_pwrite`.
    pub(crate) fn pwrite(&self, data: &[u8], offset: u64) -> c_int {
        // SAFETY: h is open; data is readable for its length.
        unsafe {
            nbd_ffi::commands::nbd_pwrite(self.h, data.as_ptr().cast(), data.len(), offset, 0)
        }
    }

    /// `nbd_flush`.
    pub(crate) fn flush(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::commands::nbd_flush(self.h, 0) }
    }

    /// `nbd_trim`.
    pub(crate) fn trim(&self, count: u64, offset: u64) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::commands::nbd_trim(self.h, count, offset, 0) }
    }

    /// `nbd_block_status`.
    pub(crate) fn block_status(
        &self,
        count: u64,
        offset: u64,
        cb: ExtentCallback,
        flags: u32,
    ) -> c_int {
        // SAFETY: h is open; the callback's user_data is a leaked Probe.
        unsafe { nbd_ffi::commands::nbd_block_status(self.h, count, offset, cb, flags) }
    }

    /// `nbd_aio_flush`.
    pub(crate) fn aio_flush(&self, completion: CompletionCallback) -> i64 {
        // SAFETY: h is open; the callback's user_data is a leaked Probe.
        unsafe { nbd_ffi::aio::nbd_aio_flush(self.h, completion, 0) }
    }

    /// `nbd_aio_command_completed`.
    pub(crate) fn command_completed(&self, cookie: i64) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::aio::nbd_aio_command_completed(self.h, cookie as u64) }
    }

    /// `nbd_poll` until `done` holds; panics if the handle stops making
    /// progress (nothing to wait for, or 10 s without an event).
    pub(crate) fn poll_until(&self, mut done: impl FnMut(&Conn) -> bool) {
        while !done(self) {
            // SAFETY: h is open.
            let r = unsafe { nbd_ffi::aio::nbd_poll(self.h, 10_000) };
            if r == -1 {
                // The connection died: nothing more will happen.
                assert!(done(self), "nbd_poll failed: {:?}", last_error());
                return;
            }
            assert_eq!(r, 1, "nbd_poll timed out");
        }
    }

    /// `nbd_opt_list`.
    pub(crate) fn opt_list(&self, cb: ListCallback) -> c_int {
        // SAFETY: h is open; the callback's user_data is a leaked Probe.
        unsafe { nbd_ffi::opt::nbd_opt_list(self.h, cb) }
    }

    /// `nbd_aio_opt_list`.
    pub(crate) fn aio_opt_list(&self, cb: ListCallback, completion: CompletionCallback) -> c_int {
        // SAFETY: as for opt_list.
        unsafe { nbd_ffi::opt::nbd_aio_opt_list(self.h, cb, completion) }
    }

    /// `nbd_opt_list_meta_context`.
    pub(crate) fn opt_list_meta_context(&self, cb: ContextCallback) -> c_int {
        // SAFETY: as for opt_list.
        unsafe { nbd_ffi::opt::nbd_opt_list_meta_context(self.h, cb) }
    }

    /// `nbd_opt_info`.
    pub(crate) fn opt_info(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_info(self.h) }
    }

    /// `nbd_opt_go`.
    pub(crate) fn opt_go(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_go(self.h) }
    }

    /// `nbd_opt_abort`.
    pub(crate) fn opt_abort(&self) -> c_int {
        // SAFETY: h is open.
        unsafe { nbd_ffi::opt::nbd_opt_abort(self.h) }
    }

    /// A read of `len` bytes at `offset` that must succeed with the pattern.
    pub(crate) fn assert_good_read(&self, offset: u64, len: usize) {
        let buf = Guarded::new(len);
        assert_eq!(self.pread(&buf, offset), 0, "{:?}", last_error());
        assert_eq!(buf.inside(), &pattern(offset, len)[..]);
        buf.assert_guards();
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
        if let Some(t) = self.server.take() {
            let r = t.join();
            if r.is_err() && !std::thread::panicking() {
                panic!("the server script panicked");
            }
        }
    }
}

/// Handle settings used by many tests.
pub(crate) mod setup {
    use super::*;

    /// Nothing to change.
    pub(crate) fn none(_: *mut Handle) {}

    /// Ask for `base:allocation`.
    pub(crate) fn meta(h: *mut Handle) {
        let name = CString::new(BASE_ALLOCATION).unwrap();
        // SAFETY: h is open; name is a C string.
        let rc = unsafe { nbd_ffi::negotiation::nbd_add_meta_context(h, name.as_ptr()) };
        assert_eq!(rc, 0);
    }

    /// Do not zero read buffers first, so stale bytes would show.
    pub(crate) fn no_init(h: *mut Handle) {
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::commands::nbd_set_pread_initialize(h, false) };
        assert_eq!(rc, 0);
    }

    /// Stop in opt mode.
    pub(crate) fn opt_mode(h: *mut Handle) {
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::opt::nbd_set_opt_mode(h, true) };
        assert_eq!(rc, 0);
    }

    /// Turn every strict-mode check off (to reach the server with requests
    /// it should refuse).
    pub(crate) fn lax(h: *mut Handle) {
        // SAFETY: h is open.
        let rc = unsafe { nbd_ffi::commands::nbd_set_strict_mode(h, 0) };
        assert_eq!(rc, 0);
    }
}

// ---------------------------------------------------------------------------
// Caller buffers

/// Bytes around the inside of a [`Guarded`] buffer.
pub(crate) const GUARD: usize = 64;
/// What a guarded buffer is filled with before use.
pub(crate) const CANARY: u8 = 0xcc;

/// A caller buffer with canary bytes on both sides. It is a raw heap
/// allocation, so the library may write to it while the test holds only
/// shared references.
pub(crate) struct Guarded {
    base: *mut u8,
    len: usize,
}

// SAFETY: a plain heap allocation; tests only read it once the commands that
// write to it have completed.
unsafe impl Send for Guarded {}
// SAFETY: as above.
unsafe impl Sync for Guarded {}

impl Guarded {
    /// `len` bytes inside, everything filled with the canary.
    pub(crate) fn new(len: usize) -> Self {
        let storage = vec![CANARY; len + 2 * GUARD].into_boxed_slice();
        Guarded {
            base: Box::into_raw(storage).cast::<u8>(),
            len,
        }
    }

    /// A buffer for an asynchronous command: leaked, so that it stays valid
    /// for as long as the handle might write to it.
    pub(crate) fn leaked(len: usize) -> &'static Guarded {
        Box::leak(Box::new(Guarded::new(len)))
    }

    /// The start of the inside, as passed to C.
    pub(crate) fn ptr(&self) -> *mut c_void {
        self.base.wrapping_add(GUARD).cast()
    }

    /// Address range of the inside, for checking callback pointers.
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        let start = self.ptr() as usize;
        start..start + self.len
    }

    /// The length of the inside.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn all(&self) -> &[u8] {
        // SAFETY: base holds len + 2 * GUARD initialised bytes until drop;
        // callers read only when no command is writing to it.
        unsafe { std::slice::from_raw_parts(self.base, self.len + 2 * GUARD) }
    }

    /// The inside.
    pub(crate) fn inside(&self) -> &[u8] {
        &self.all()[GUARD..GUARD + self.len]
    }

    /// Panics unless the bytes around the inside still hold the canary.
    pub(crate) fn assert_guards(&self) {
        let (before, rest) = self.all().split_at(GUARD);
        let after = &rest[self.len..];
        assert!(
            before.iter().chain(after).all(|&b| b == CANARY),
            "bytes written outside the caller's buffer"
        );
    }

    /// Panics unless nothing at all was written.
    pub(crate) fn assert_untouched(&self) {
        assert!(
            self.all().iter().all(|&b| b == CANARY),
            "the buffer was written to"
        );
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.base, self.len + 2 * GUARD);
        // SAFETY: allocated by Box::into_raw in new() with this length.
        drop(unsafe { Box::from_raw(slice) });
    }
}

// ---------------------------------------------------------------------------
// Callback probes

/// One chunk callback call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkSeen {
    /// `subbuf` as an address.
    pub(crate) addr: usize,
    /// `count`.
    pub(crate) count: usize,
    /// `offset`.
    pub(crate) offset: u64,
    /// `status` (`LIBNBD_READ_*`).
    pub(crate) status: c_uint,
    /// `*error` on entry.
    pub(crate) error: c_int,
}

/// One extent callback call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtentsSeen {
    /// The context name.
    pub(crate) context: String,
    /// `offset`.
    pub(crate) offset: u64,
    /// The (length, flags) words.
    pub(crate) entries: Vec<u32>,
    /// `*error` on entry.
    pub(crate) error: c_int,
}

/// What the library did with one callback struct.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    frees: AtomicUsize,
    calls: AtomicUsize,
    /// `*error` seen by each completion call.
    pub(crate) errors: Mutex<Vec<c_int>>,
    /// Chunk callback calls.
    pub(crate) chunks: Mutex<Vec<ChunkSeen>>,
    /// Extent callback calls.
    pub(crate) extents: Mutex<Vec<ExtentsSeen>>,
    /// Names given to list and context callbacks.
    pub(crate) names: Mutex<Vec<String>>,
    ret: AtomicI32,
}

impl Probe {
    /// A probe that lives for the rest of the process, so that a late
    /// `.free` can never touch freed memory even when a test fails.
    pub(crate) fn new() -> &'static Probe {
        Box::leak(Box::default())
    }

    /// What the callback returns (default 0).
    pub(crate) fn returning(&'static self, value: c_int) -> &'static Probe {
        self.ret.store(value, Ordering::SeqCst);
        self
    }

    /// How many times `.free` ran.
    pub(crate) fn frees(&self) -> usize {
        self.frees.load(Ordering::SeqCst)
    }

    /// How many times the callback ran.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Panics unless `.free` ran exactly once.
    pub(crate) fn assert_freed_once(&self) {
        assert_eq!(self.frees(), 1, ".free must run exactly once");
    }

    fn user_data(&'static self) -> *mut c_void {
        self as *const Probe as *mut c_void
    }

    /// A completion callback struct.
    pub(crate) fn completion(&'static self) -> CompletionCallback {
        CompletionCallback {
            callback: Some(on_complete),
            user_data: self.user_data(),
            free: Some(on_free),
        }
    }

    /// A chunk callback struct.
    pub(crate) fn chunk(&'static self) -> ChunkCallback {
        ChunkCallback {
            callback: Some(on_chunk),
            user_data: self.user_data(),
            free: Some(on_free),
        }
    }

    /// An extent callback struct.
    pub(crate) fn extent(&'static self) -> ExtentCallback {
        ExtentCallback {
            callback: Some(on_extent),
            user_data: self.user_data(),
            free: Some(on_free),
        }
    }

    /// A list callback struct.
    pub(crate) fn list(&'static self) -> ListCallback {
        ListCallback {
            callback: Some(on_list),
            user_data: self.user_data(),
            free: Some(on_free),
        }
    }

    /// A context callback struct.
    pub(crate) fn context(&'static self) -> ContextCallback {
        ContextCallback {
            callback: Some(on_context),
            user_data: self.user_data(),
            free: Some(on_free),
        }
    }
}

/// The probe behind a callback's `user_data`.
///
/// # Safety
///
/// `ud` must come from [`Probe::user_data`] (a leaked, immortal probe).
unsafe fn probe<'a>(ud: *mut c_void) -> &'a Probe {
    // SAFETY: the caller's contract: a pointer to a leaked Probe.
    unsafe { &*(ud as *const Probe) }
}

unsafe extern "C" fn on_free(ud: *mut c_void) {
    // SAFETY: every callback struct built here carries a probe.
    let p = unsafe { probe(ud) };
    p.frees.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_complete(ud: *mut c_void, error: *mut c_int) -> c_int {
    // SAFETY: as in on_free; error points to the library's int during the call.
    let (p, e) = unsafe { (probe(ud), *error) };
    p.calls.fetch_add(1, Ordering::SeqCst);
    p.errors.lock().unwrap().push(e);
    p.ret.load(Ordering::SeqCst)
}

unsafe extern "C" fn on_chunk(
    ud: *mut c_void,
    subbuf: *const c_void,
    count: libc::size_t,
    offset: u64,
    status: c_uint,
    error: *mut c_int,
) -> c_int {
    // SAFETY: as in on_complete.
    let (p, e) = unsafe { (probe(ud), *error) };
    p.calls.fetch_add(1, Ordering::SeqCst);
    p.chunks.lock().unwrap().push(ChunkSeen {
        addr: subbuf as usize,
        count,
        offset,
        status,
        error: e,
    });
    p.ret.load(Ordering::SeqCst)
}

unsafe extern "C" fn on_extent(
    ud: *mut c_void,
    context: *const c_char,
    offset: u64,
    entries: *mut u32,
    nr_entries: libc::size_t,
    error: *mut c_int,
) -> c_int {
    // SAFETY: as in on_complete; context is a C string and entries holds
    // nr_entries words for the duration of the call.
    let (p, e, name, words) = unsafe {
        (
            probe(ud),
            *error,
            CStr::from_ptr(context).to_string_lossy().into_owned(),
            std::slice::from_raw_parts(entries, nr_entries).to_vec(),
        )
    };
    p.calls.fetch_add(1, Ordering::SeqCst);
    p.extents.lock().unwrap().push(ExtentsSeen {
        context: name,
        offset,
        entries: words,
        error: e,
    });
    p.ret.load(Ordering::SeqCst)
}

unsafe extern "C" fn on_list(ud: *mut c_void, name: *const c_char, desc: *const c_char) -> c_int {
    // SAFETY: as in on_free; both strings are valid during the call.
    let (p, n, d) = unsafe {
        (
            probe(ud),
            CStr::from_ptr(name).to_string_lossy().into_owned(),
            CStr::from_ptr(desc).to_string_lossy().into_owned(),
        )
    };
    p.calls.fetch_add(1, Ordering::SeqCst);
    p.names.lock().unwrap().push(format!("{n}:{d}"));
    p.ret.load(Ordering::SeqCst)
}

unsafe extern "C" fn on_context(ud: *mut c_void, name: *const c_char) -> c_int {
    // SAFETY: as in on_list.
    let (p, n) = unsafe {
        (
            probe(ud),
            CStr::from_ptr(name).to_string_lossy().into_owned(),
        )
    };
    p.calls.fetch_add(1, Ordering::SeqCst);
    p.names.lock().unwrap().push(n);
    p.ret.load(Ordering::SeqCst)
}
