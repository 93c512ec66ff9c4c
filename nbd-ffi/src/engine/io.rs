//! The socket side: non-blocking reads into the client (or straight into
//! a caller's read buffer), gathered writes with `sendmsg`, the TLS
//! handshake, and what the wait of the synchronous calls
//! (`crate::wait`) asks of the engine.

use super::{tls, Engine, EngineError, ProtoClient, DIRECTION_READ, DIRECTION_WRITE};
use nbd_proto::client::{Event, RecvTarget, Segment, State};
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Receive size for replies when no large read is in flight: many small
/// replies (and their payloads) per `recv`.
const RBUF: usize = 64 * 1024;

/// Receive size while a large read is in flight: its payload should go
/// straight into the caller's buffer, not through ours (a copy more), so
/// only a little more than a header is read ahead.
const RBUF_LARGE_READS: usize = 4 * 1024;

/// Bytes gathered for one `sendmsg` (beyond the segment that reaches it): about
/// what a socket buffer takes at once. Gathering the whole queue (up to 64
/// iovecs) for every call cost user time and sent nothing more.
const SEND_BATCH: usize = 256 * 1024;

impl Engine {
    pub(crate) fn notify_read(&mut self) {
        if self.pending.is_some() {
            return;
        }
        // A recv that returned less than asked for emptied the socket: the
        // next one would only say EAGAIN, so once the bytes in hand are used
        // up, stop and let the caller poll (one system call less per batch).
        let mut drained = false;
        // Whether this call has read anything yet.
        let mut got_input = false;
        loop {
            if self.tls.as_ref().is_some_and(|t| t.handshaking()) {
                if !self.drive_handshake() {
                    break;
                }
                drained = false;
                continue;
            }
            let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
                return;
            };
            let Some(client) = self.client.as_mut() else {
                return;
            };
            if matches!(client.state(), State::Dead | State::Closed) {
                break;
            }
            match client.recv_target() {
                RecvTarget::Payload {
                    buf_offset, len, ..
                } => {
                    let Some(buf) = client.payload_target().and_then(|t| t.data.read()) else {
                        client.handle_io_error(
                            "internal error: payload for a command without a buffer",
                        );
                        break;
                    };
                    let off = buf_offset as usize;
                    if off > buf.len || len > buf.len - off {
                        client.handle_io_error("internal error: payload outside its buffer");
                        break;
                    }
                    // SAFETY: off + len is inside the caller's buffer (checked above),
                    // which stays valid until the command completes.
                    let dst = unsafe { buf.ptr.add(off) };
                    if self.rstart < self.rend {
                        let n = len.min(self.rend - self.rstart);
                        // SAFETY: copies n bytes from our buffer to the checked destination.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                self.rbuf.as_ptr().add(self.rstart),
                                dst,
                                n,
                            )
                        };
                        self.rstart += n;
                        client.handle_payload(n);
                    } else if drained {
                        break;
                    } else {
                        // SAFETY: off + len is inside the caller's buffer (checked above).
                        match unsafe { recv(&mut self.tls, fd, dst, len) } {
                            Recv::Data(n) => {
                                got_input = true;
                                self.bytes_received += n as u64;
                                // (TLS reads until OpenSSL says it needs more.)
                                drained = n < len && self.tls.is_none();
                                self.edge_reg
                                    .set_rx_maybe(!drained || self.edge_reg.rx_hup());
                                client.handle_payload(n);
                            }
                            other => {
                                if no_data(&mut self.edge_reg, client, other) {
                                    break;
                                }
                            }
                        }
                    }
                }
                RecvTarget::Control => {
                    if self.rstart < self.rend {
                        let n = client.handle_input(&self.rbuf[self.rstart..self.rend]);
                        self.rstart += n;
                        if n == 0 {
                            // The client stopped (TLS, end of connection).
                            break;
                        }
                    } else if drained || (got_input && client.state() == State::Ready) {
                        if !drained {
                            // Nothing is due: what the server sends next
                            // (a reply, a hang-up) comes with a new edge.
                            self.edge_reg.set_rx_maybe(self.edge_reg.rx_hup());
                        }
                        // Ready after reading the replies: none is due, so
                        // another recv would only say EAGAIN (at QD1, one
                        // per request). A call that has read nothing yet
                        // does read: the caller's poll saw the socket
                        // readable, which in Ready means the server hung up
                        // or sent something unasked, and either must be seen.
                        break;
                    } else {
                        self.rstart = 0;
                        self.rend = 0;
                        // Allocated on demand (and dropped when idle), so an
                        // idle handle costs no receive buffer.
                        self.rbuf.clear();
                        let want = if self.large_reads > 0 {
                            RBUF_LARGE_READS
                        } else {
                            RBUF
                        };
                        self.rbuf.reserve(want);
                        // SAFETY: rbuf has capacity for `want` bytes; recv
                        // writes at most that many.
                        match unsafe { recv(&mut self.tls, fd, self.rbuf.as_mut_ptr(), want) } {
                            Recv::Data(n) => {
                                self.bytes_received += n as u64;
                                // SAFETY: recv initialised the first n bytes.
                                unsafe { self.rbuf.set_len(n) };
                                self.rend = n;
                                got_input = true;
                                drained = n < want && self.tls.is_none();
                                self.edge_reg
                                    .set_rx_maybe(!drained || self.edge_reg.rx_hup());
                            }
                            other => {
                                if no_data(&mut self.edge_reg, client, other) {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            self.process_events();
        }
        self.process_events();
        if self.rstart == self.rend && self.in_flight() == 0 {
            self.rbuf = Vec::new();
        }
        // Answer at once (next option, client flags) rather than after a
        // poll; and a TLS write that waited for input may go on now.
        if self.client.as_ref().is_some_and(|c| c.wants_write()) {
            self.notify_write();
        }
    }

    /// Runs the TLS handshake as far as the socket allows; returns whether
    /// it finished (successfully or not). On success the client goes on
    /// negotiating over TLS.
    fn drive_handshake(&mut self) -> bool {
        let Some(t) = self.tls.as_mut() else {
            return true;
        };
        let result = t.handshake();
        let Some(c) = self.client.as_mut() else {
            return true;
        };
        let finished = match result {
            Ok(false) => false,
            Ok(true) => {
                c.tls_established();
                true
            }
            Err(why) => {
                self.tls = None;
                self.fail_tls(why);
                true
            }
        };
        self.process_events();
        finished
    }

    /// The server acknowledged `NBD_OPT_STARTTLS`: start the handshake.
    pub(super) fn start_tls(&mut self) {
        let fd = self.fd.as_ref().map(|f| f.as_raw_fd());
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let (Some(fd), Some(opts)) = (fd, self.tls_options.as_ref()) else {
            c.tls_failed("TLS was not requested on this handle");
            return;
        };
        if self.rstart < self.rend {
            // Bytes the server sent in clear after its acknowledgement would
            // otherwise be taken as part of the TLS session (an injection).
            c.tls_failed("the server sent data in clear after accepting STARTTLS");
            return;
        }
        match tls::TlsSession::new(opts, fd) {
            Ok(t) => {
                self.tls = Some(t);
                // The client speaks first: send the hello now.
                self.drive_handshake();
            }
            Err(why) => self.fail_tls(why),
        }
    }

    /// Writes what is pending; never blocks.
    pub(crate) fn notify_write(&mut self) {
        if let Some(p) = &self.pending {
            if p.in_progress {
                self.finish_connect();
            }
            return;
        }
        let Some(fd) = self.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
        if self
            .tls
            .as_ref()
            .is_some_and(|t| t.read_waits() == DIRECTION_WRITE)
        {
            // A TLS read was waiting for the socket to take output.
            self.notify_read();
        }
        loop {
            if self.tls.as_ref().is_some_and(|t| t.handshaking()) {
                if !self.drive_handshake() {
                    break;
                }
                continue;
            }
            let Some(client) = self.client.as_mut() else {
                return;
            };
            if !client.wants_write() {
                break;
            }
            if let Some(t) = self.tls.as_mut().filter(|t| t.committed() > 0) {
                // A TLS write to retry: its bytes come from TLS's own copy,
                // as the commands they belong to may have completed already.
                match t.send(&[]) {
                    Ok(Some(k)) => {
                        self.bytes_sent += k as u64;
                        client.advance_transmit(k);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        transport_failed(client, "send", &e);
                        break;
                    }
                }
                continue;
            }
            let mut iov: [libc::iovec; 64] = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 64];
            let mut n = 0;
            let mut offered = 0;
            {
                let mut segs = [Segment::Bytes(&[]); 64];
                let k = client.transmit_segments_upto(&mut segs, SEND_BATCH);
                for s in &segs[..k] {
                    let (base, len) = match *s {
                        Segment::Bytes(b) => (b.as_ptr() as *mut u8, b.len()),
                        Segment::External {
                            buf_offset,
                            len,
                            data,
                            ..
                        } => match data.write() {
                            Some(w)
                                if (buf_offset as usize) <= w.len
                                    && len <= w.len - buf_offset as usize =>
                            {
                                // SAFETY: in bounds of the caller's write buffer (checked).
                                (unsafe { w.ptr.add(buf_offset as usize) }, len)
                            }
                            _ => break,
                        },
                    };
                    iov[n] = libc::iovec {
                        iov_base: base as *mut libc::c_void,
                        iov_len: len,
                    };
                    offered += len;
                    n += 1;
                }
            }
            if n == 0 {
                client.handle_io_error("internal error: write payload missing");
                break;
            }
            if let Some(t) = self.tls.as_mut() {
                let mut slices: [&[u8]; 64] = [&[]; 64];
                for (slot, v) in slices.iter_mut().zip(&iov[..n]) {
                    // SAFETY: each iovec describes readable memory (our
                    // queue or a caller's write buffer) that outlives this call.
                    *slot =
                        unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len) };
                }
                match t.send(&slices[..n]) {
                    Ok(Some(k)) => {
                        self.bytes_sent += k as u64;
                        client.advance_transmit(k);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        transport_failed(client, "send", &e);
                        break;
                    }
                }
                continue;
            }
            // SAFETY: msghdr is plain data; zero is valid before filling it.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = n as _;
            // SAFETY: iov holds n valid (pointer, length) pairs that outlive the call.
            let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.edge_reg.set_tx_full(true);
                        break;
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        transport_failed(client, "send", &e);
                        break;
                    }
                }
            }
            self.bytes_sent += r as u64;
            client.advance_transmit(r as usize);
            let full = (r as usize) < offered;
            self.edge_reg.set_tx_full(full);
            if full {
                // A short send filled the socket buffer: another call now
                // would only say EAGAIN. The caller polls for POLLOUT.
                break;
            }
        }
        self.process_events();
        self.end_writes_after_disconnect();
    }

    /// What a wait on the socket needs: `Ok(None)` when there is nothing to
    /// wait for because TLS holds decrypted bytes (they were processed),
    /// else the descriptor, the `poll(2)` events and the direction bits.
    pub(crate) fn wait_for(&mut self) -> Result<Option<(RawFd, i16, u32)>, EngineError> {
        let Some(fd) = self.fd() else {
            return Err(EngineError::new(
                libc::ENOTCONN,
                "invalid state: the handle is not connected",
            ));
        };
        let dir = self.direction();
        if dir == 0 {
            return Err(EngineError::new(libc::EINVAL, "nothing to wait for"));
        }
        if dir & DIRECTION_READ != 0 && self.tls.as_ref().is_some_and(|t| t.pending() > 0) {
            // Decrypted bytes are waiting in OpenSSL: the socket would not say so.
            self.notify_read();
            return Ok(None);
        }
        let mut events = 0;
        if dir & DIRECTION_READ != 0 {
            events |= libc::POLLIN;
        }
        if dir & DIRECTION_WRITE != 0 {
            events |= libc::POLLOUT;
        }
        Ok(Some((fd, events, dir)))
    }

    /// Does the I/O a `poll(2)` for `dir` (from [`Engine::wait_for`]) found
    /// the socket ready for.
    pub(crate) fn after_poll(&mut self, dir: u32, revents: i16) {
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
            && dir & DIRECTION_READ != 0
        {
            self.notify_read();
        }
        if revents & (libc::POLLOUT | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            self.notify_write();
        }
    }

    /// Whether the socket can be waited for edge-triggered
    /// (`crate::wait`): a plain connected socket. Connecting, TLS (whose
    /// reads and writes OpenSSL drives) and dead connections are waited
    /// for with `poll(2)`.
    pub(crate) fn edge_waitable(&self) -> bool {
        self.pending.is_none() && self.tls.is_none() && self.fd.is_some() && self.dead.is_none()
    }

    /// Before an edge-triggered wait for `dir`: does the I/O the socket
    /// may be ready for without a new edge (input left unread, room to
    /// write not yet found missing). Returns whether that made progress
    /// (else the caller waits: the engine now knows the socket is empty,
    /// or full).
    pub(crate) fn io_without_edge(&mut self, dir: u32) -> bool {
        let before = (self.progress(), self.direction(), self.state());
        if dir & DIRECTION_READ != 0 && self.edge_reg.rx_maybe() {
            self.notify_read();
        }
        if dir & DIRECTION_WRITE != 0 && !self.edge_reg.tx_full() {
            self.notify_write();
        }
        // A read that found nothing cleared rx_maybe; one that stopped
        // early (a full buffer) made progress and left it set.
        before != (self.progress(), self.direction(), self.state())
    }

    /// After an edge-triggered wait for `dir` reported the socket readable
    /// (`rx`) and/or writable (`tx`, errors and hang-ups count as both),
    /// and whether the peer closed or the socket failed (`hup`): does the
    /// I/O.
    pub(crate) fn after_edge(&mut self, dir: u32, rx: bool, tx: bool, hup: bool) {
        if rx {
            self.edge_reg.set_rx_maybe(true);
        }
        if hup {
            // The end of the stream waits behind whatever data came with
            // it, and no other edge will announce it.
            self.edge_reg.set_rx_hup(true);
        }
        if tx {
            self.edge_reg.set_tx_full(false);
        }
        if rx && dir & DIRECTION_READ != 0 {
            self.notify_read();
        }
        if tx {
            self.notify_write();
        }
    }

    /// Bytes moved either way so far: the wait's measure of progress.
    pub(crate) fn progress(&self) -> u64 {
        self.bytes_sent.wrapping_add(self.bytes_received)
    }

    /// Whether something from the server is due: connecting, a handshake
    /// or option reply, or commands in flight (an idle connected handle,
    /// or one negotiating between options, waits for nothing).
    pub(crate) fn due(&self) -> bool {
        if self.dead.is_some() || self.direction() == 0 {
            return false;
        }
        match self.state() {
            Some(State::Ready) => self.in_flight() > 0,
            Some(State::Closed | State::Dead) | None => false,
            _ => true,
        }
    }

    /// Ends the connection now because the server made no progress for
    /// `ms` milliseconds (the `nbdrs_set_timeout` extension): every command
    /// in flight fails with `ETIMEDOUT`, the handle is dead, and threads
    /// blocked in `poll(2)` on the socket wake up.
    pub(crate) fn time_out(&mut self, ms: u64) {
        if self.dead.is_some() {
            return;
        }
        let e = EngineError::new(
            libc::ETIMEDOUT,
            format!("timed out: the server made no progress for {ms} ms"),
        );
        self.abort(e);
    }

    /// Kills the connection with `e`: commands in flight fail with its
    /// errno, the handle is dead, and pollers of the socket wake up.
    pub(crate) fn abort(&mut self, e: EngineError) {
        if self.dead.is_some() {
            return;
        }
        let errno = e.errno();
        self.dead = Some(e.clone());
        self.dead_in_transport = true;
        if self.pending.take().is_some() {
            // Still connecting: there is no client yet.
            self.process_events();
            return;
        }
        self.tls = None;
        // Whatever the client reported before is dispatched as usual first.
        self.process_events();
        if let Some(c) = self.client.as_mut() {
            c.handle_transport_error("poll", errno);
        }
        // The client fails the commands in flight with ENOTCONN (how libnbd
        // reports a connection that died under them): these get `e`'s errno.
        while let Some(ev) = self.client.as_mut().and_then(|c| c.poll_event()) {
            match ev {
                Event::Complete {
                    cookie,
                    result,
                    data,
                } => {
                    let result = result.map_err(|mut why| {
                        why.errno = errno;
                        why.message = e.text();
                        why
                    });
                    self.complete(cookie, result, data);
                }
                other => self.handle_event(other),
            }
        }
        self.wake_pollers();
    }

    /// Wakes threads blocked in `poll(2)` on the socket when the connection
    /// has ended: `shutdown(SHUT_RDWR)` makes the socket readable (end of
    /// file) and writable (an error) for every poller, with no extra
    /// descriptor. Only for a dead or closed connection: nothing is lost.
    pub(crate) fn wake_pollers(&self) {
        if let Some(fd) = self.fd.as_ref() {
            // SAFETY: shutdown(2) on our own open socket; failure (not a
            // socket, already shut down) is harmless.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// Whether the connection has ended (dead or closed).
    pub(crate) fn ended(&self) -> bool {
        matches!(self.state(), Some(State::Dead | State::Closed))
    }
}

/// What one `recv` produced.
pub(crate) enum Recv {
    /// This many bytes arrived.
    Data(usize),
    /// The server closed its side.
    Eof,
    /// Nothing to read now.
    Again,
    /// The socket failed.
    Failed(io::Error),
}

/// One non-blocking read into `dst`: through TLS when a session runs,
/// else a `recv`, retried on `EINTR`.
///
/// # Safety
///
/// `dst` must be writable for `len` bytes.
unsafe fn recv(tls: &mut Option<tls::TlsSession>, fd: RawFd, dst: *mut u8, len: usize) -> Recv {
    if let Some(t) = tls.as_mut() {
        // SAFETY: forwarded from this function's contract.
        return unsafe { t.recv(dst, len) };
    }
    loop {
        // SAFETY: the caller guarantees dst is writable for len bytes.
        let r = unsafe { libc::recv(fd, dst.cast::<libc::c_void>(), len, 0) };
        if r > 0 {
            return Recv::Data(r as usize);
        }
        if r == 0 {
            return Recv::Eof;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Recv::Again,
            _ => return Recv::Failed(e),
        }
    }
}

/// A `recv` that brought no data: input is no longer "maybe left" for the
/// edge-triggered wait, and the client learns of an end of file or a
/// failure (`Data` is the caller's case). Returns whether to stop reading
/// (nothing to read now).
fn no_data(edge_reg: &mut crate::wait::EdgeReg, client: &mut ProtoClient, r: Recv) -> bool {
    edge_reg.set_rx_maybe(false);
    match r {
        Recv::Data(_) | Recv::Again => true,
        Recv::Eof => {
            client.handle_eof();
            false
        }
        Recv::Failed(e) => {
            transport_failed(client, "recv", &e);
            false
        }
    }
}

/// Reports a failed `recv`/`send` to the client, keeping its errno. A
/// `send` that finds the peer gone (`EPIPE`) is the server closing the
/// connection, as an end of file is: the commands in flight fail with
/// `ENOTCONN` and the synchronous call reports its command's error, as
/// libnbd 1.24 does (`read: command failed: Transport endpoint is not
/// connected`), where a reset seen by `recv` is reported as such.
fn transport_failed(client: &mut ProtoClient, op: &'static str, e: &io::Error) {
    if op == "send" && e.raw_os_error() == Some(libc::EPIPE) {
        client.handle_eof();
        return;
    }
    match e.raw_os_error() {
        Some(errno) => client.handle_transport_error(op, errno),
        None => client.handle_io_error(format!("{op}: {e}")),
    }
}
