//! The blocking client, on `std::net` and `std::os::unix::net` sockets.
//!
//! Every method that talks to the server blocks the calling thread until
//! its answer arrives. Several commands can still be in flight: the
//! `submit_*` methods only queue a request and return its [`CommandId`];
//! the requests go out, and their replies come in, whenever a method waits
//! ([`Client::wait`], [`Client::wait_next`], or any of the direct calls).
//!
//! ```no_run
//! use nbd_client::{blocking::Client, Config};
//!
//! # fn main() -> std::io::Result<()> {
//! let mut nbd = Client::connect("/tmp/nbd.sock", &Config::new())?;
//! // 64 reads of 64 KiB in flight at once.
//! let ids = (0..64u64)
//!     .map(|i| nbd.submit_read(i * 65536, 65536))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let mut total = 0;
//! for id in ids {
//!     total += nbd.wait(id)?.into_data().map_or(0, |d| d.len());
//! }
//! assert_eq!(total, 64 * 65536);
//! # Ok(())
//! # }
//! ```
//!
//! # How it waits
//!
//! The socket stays blocking. A write that cannot go on within a short
//! send timeout (the server stopped reading, its queue full) gives way to a
//! read when some request has gone out whole, so a client writing large
//! payloads and a server writing large replies cannot block each other.
//! SIGPIPE: the Rust runtime ignores it in Rust programs, and a closed
//! socket then shows as an error, not a signal.

use crate::conn::{Conn, Lend, MAX_IOV};
use crate::{CommandId, Config, Error, ExportEntry, Extent, Output};
use bytes::Bytes;
use nbd_proto::client::{CommandKind, Event, State, SubmitError};
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a blocked write waits before the client checks whether it
/// should read instead. Only affects speed in that rare case, never results.
const WRITE_SLICE: Duration = Duration::from_millis(20);

enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf),
            Io::Unix(s) => s.read(buf),
        }
    }

    fn write_vectored(&mut self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write_vectored(iov),
            Io::Unix(s) => s.write_vectored(iov),
        }
    }
}

/// A blocking NBD connection. See the [module documentation](self).
///
/// Dropping it closes the socket without `NBD_CMD_DISC`; call
/// [`Client::disconnect`] for an orderly end.
pub struct Client {
    conn: Conn,
    io: Io,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.conn.client.state())
            .field("export", self.conn.client.export())
            .field("in_flight", &self.conn.client.in_flight())
            .finish()
    }
}

impl Client {
    /// Connects to `addr`: a Unix socket path if it contains a `/`,
    /// otherwise `host:port` over TCP.
    pub fn connect(addr: &str, config: &Config) -> Result<Self, Error> {
        if addr.contains('/') {
            Self::connect_unix(addr, config)
        } else {
            Self::connect_tcp(addr, config)
        }
    }

    /// Connects over TCP and negotiates.
    pub fn connect_tcp(addr: impl ToSocketAddrs, config: &Config) -> Result<Self, Error> {
        Self::from_tcp_stream(TcpStream::connect(addr)?, config)
    }

    /// Connects to a Unix domain socket and negotiates.
    pub fn connect_unix(path: impl AsRef<Path>, config: &Config) -> Result<Self, Error> {
        Self::from_unix_stream(UnixStream::connect(path)?, config)
    }

    /// Negotiates over a TCP stream the caller connected (blocking mode).
    pub fn from_tcp_stream(s: TcpStream, config: &Config) -> Result<Self, Error> {
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(WRITE_SLICE))?;
        Self::handshake(Io::Tcp(s), config)
    }

    /// Negotiates over a Unix stream the caller connected (blocking mode),
    /// e.g. one end of a socket pair given to a server process.
    pub fn from_unix_stream(s: UnixStream, config: &Config) -> Result<Self, Error> {
        s.set_write_timeout(Some(WRITE_SLICE))?;
        Self::handshake(Io::Unix(s), config)
    }

    fn handshake(io: Io, config: &Config) -> Result<Self, Error> {
        let mut c = Client {
            conn: Conn::new(config),
            io,
        };
        c.run(&mut Lend::None, Conn::settled)?;
        // What negotiation reported is in the core's getters now.
        c.conn.opt_events.clear();
        Ok(c)
    }

    crate::export_getters!();

    /// Whether the client is in opt mode, waiting for [`Client::go`] (or
    /// another option).
    pub fn is_negotiating(&self) -> bool {
        self.conn.client.state() == State::Negotiating
    }

    // ----- the loop -----

    /// Moves bytes until `done` holds, or the connection ends.
    fn run(&mut self, lend: &mut Lend<'_>, done: impl Fn(&Conn) -> bool) -> Result<(), Error> {
        loop {
            self.conn.drain(lend);
            if done(&self.conn) {
                return Ok(());
            }
            if let Some(e) = self.conn.end_error() {
                return Err(e);
            }
            if self.conn.has_buffered() {
                self.conn.consume_buffered(lend);
                continue;
            }
            if self.conn.client.wants_write() {
                let r = {
                    let mut iov = [IoSlice::new(&[]); MAX_IOV];
                    match self.conn.gather(lend, &mut iov) {
                        Some(n) => Some(self.io.write_vectored(&iov[..n])),
                        None => None,
                    }
                };
                match r {
                    None => self.conn.lost_write_buffer(),
                    Some(Ok(0)) => self.conn.io_error(&io::ErrorKind::WriteZero.into()),
                    Some(Ok(n)) => self.conn.wrote(n),
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Some(Err(e))
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        // The server is not reading. If a reply is due,
                        // read it (the server may be waiting to send it);
                        // otherwise keep trying to write.
                        if self.conn.client.wants_read() && self.conn.reply_due() {
                            self.read_once(lend);
                        }
                    }
                    Some(Err(e)) => self.conn.io_error(&e),
                }
                continue;
            }
            if !self.conn.client.wants_read() {
                return Err(Error::InvalidState("nothing to wait for"));
            }
            self.read_once(lend);
        }
    }

    fn read_once(&mut self, lend: &mut Lend<'_>) {
        let r = {
            let dst = self.conn.recv_buf(lend);
            self.io.read(dst)
        };
        match r {
            Ok(n) => self.conn.received(n, lend),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.conn.io_error(&e),
        }
    }

    /// Waits for a command whose buffer the caller lends, and collects it.
    fn finish(&mut self, cookie: u64, mut lend: Lend<'_>) -> Result<Output, Error> {
        self.run(&mut lend, |c| c.is_done(cookie))?;
        self.conn.take(cookie)
    }

    // ----- direct calls -----

    /// Reads `buf.len()` bytes at `offset` into `buf`. The payload is
    /// received straight into `buf`; ranges the server reports as holes
    /// are zeroed. Requests larger than the server's maximum are split.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        let max = self.conn.max_request() as usize;
        let mut at = offset;
        for chunk in buf.chunks_mut(max) {
            let cookie = self.conn.submit_read_lent(at, chunk.len())?;
            self.finish(cookie, Lend::Read(cookie, chunk))?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// Writes `buf` at `offset`, sending it from `buf` without a copy.
    /// Requests larger than the server's maximum are split.
    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), Error> {
        let max = self.conn.max_request() as usize;
        let mut at = offset;
        for chunk in buf.chunks(max) {
            let cookie = self.conn.submit_write_lent(at, chunk.len())?;
            self.finish(cookie, Lend::Write(cookie, chunk))?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// Asks the server to make written data durable.
    pub fn flush(&mut self) -> Result<(), Error> {
        let id = self.submit_flush()?;
        self.wait(id).map(drop)
    }

    /// Tells the server the range's contents are no longer needed.
    pub fn trim(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        let id = self.submit_trim(offset, len)?;
        self.wait(id).map(drop)
    }

    /// Writes zeroes to the range (without sending them).
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        let id = self.submit_zero(offset, len)?;
        self.wait(id).map(drop)
    }

    /// Asks which parts of `[offset, offset + len)` have which status in
    /// metadata context `context` (e.g. [`BASE_ALLOCATION`](crate::BASE_ALLOCATION)).
    /// The extents start at `offset`; the server may describe less than
    /// `len` (ask again from the end of the last extent) or a little more.
    pub fn block_status(
        &mut self,
        offset: u64,
        len: u64,
        context: &str,
    ) -> Result<Vec<Extent>, Error> {
        let id = self.submit_block_status(offset, len, context)?;
        Ok(self.wait(id)?.into_extents().unwrap_or_default())
    }

    // ----- pipelined calls -----

    /// Queues a read of `len` bytes at `offset` into a buffer the command
    /// owns; [`Client::wait`] returns it as [`Output::Data`].
    pub fn submit_read(&mut self, offset: u64, len: usize) -> Result<CommandId, Error> {
        self.conn.submit_read(vec![0; len], offset)
    }

    /// Like [`Client::submit_read`], into `buf` (its length is the read's
    /// length), so buffers can be reused.
    pub fn submit_read_into(&mut self, buf: Vec<u8>, offset: u64) -> Result<CommandId, Error> {
        self.conn.submit_read(buf, offset)
    }

    /// Queues a write of `data` at `offset` (a `Vec<u8>` or `Bytes` is
    /// taken without a copy).
    pub fn submit_write(
        &mut self,
        data: impl Into<Bytes>,
        offset: u64,
    ) -> Result<CommandId, Error> {
        self.conn.submit_write(data.into(), offset)
    }

    /// Queues a flush.
    pub fn submit_flush(&mut self) -> Result<CommandId, Error> {
        self.conn.submit_simple(CommandKind::Flush, 0, 0)
    }

    /// Queues a trim.
    pub fn submit_trim(&mut self, offset: u64, len: u64) -> Result<CommandId, Error> {
        self.conn.submit_simple(CommandKind::Trim, offset, len)
    }

    /// Queues a write of zeroes.
    pub fn submit_zero(&mut self, offset: u64, len: u64) -> Result<CommandId, Error> {
        self.conn
            .submit_simple(CommandKind::WriteZeroes, offset, len)
    }

    /// Queues a block status query; [`Client::wait`] returns
    /// [`Output::Extents`].
    pub fn submit_block_status(
        &mut self,
        offset: u64,
        len: u64,
        context: &str,
    ) -> Result<CommandId, Error> {
        self.conn.submit_block_status(offset, len, context)
    }

    /// Waits for command `id` and returns what it yields. Other commands'
    /// replies that arrive meanwhile are kept for their own `wait`.
    pub fn wait(&mut self, id: CommandId) -> Result<Output, Error> {
        self.run(&mut Lend::None, |c| c.is_done(id.0))?;
        self.conn.take(id.0)
    }

    /// Waits for whichever submitted command completes first (in the order
    /// the replies arrive) and returns its id and result.
    pub fn wait_next(&mut self) -> Result<(CommandId, Result<Output, Error>), Error> {
        if self.conn.next_completed().is_none() && !self.conn.has_pending_owned() {
            return Err(Error::InvalidState("no command in flight"));
        }
        self.run(&mut Lend::None, |c| {
            c.has_buffered_completion() || !c.has_pending_owned()
        })?;
        match self.conn.next_completed() {
            Some(c) => Ok((CommandId(c), self.conn.take(c))),
            None => Err(Error::InvalidState("no command in flight")),
        }
    }

    // ----- opt mode -----

    fn option(
        &mut self,
        f: impl FnOnce(&mut nbd_proto::client::Client<crate::conn::Slot>) -> Result<(), SubmitError>,
    ) -> Result<Vec<Event>, Error> {
        if let Some(e) = self.conn.end_error() {
            return Err(e);
        }
        self.conn.opt_events.clear();
        f(&mut self.conn.client)?;
        self.run(&mut Lend::None, |c| c.client.state() != State::Connecting)?;
        let events = std::mem::take(&mut self.conn.opt_events);
        crate::conn::option_result(&self.conn, events)
    }

    /// Opt mode: the exports the server lists (`NBD_OPT_LIST`).
    pub fn list_exports(&mut self) -> Result<Vec<ExportEntry>, Error> {
        let events = self.option(|c| c.opt_list())?;
        Ok(crate::conn::exports(events))
    }

    /// Opt mode: the metadata contexts matching `queries` on the export
    /// named in the config (`NBD_OPT_LIST_META_CONTEXT`); an empty list
    /// asks for all.
    pub fn list_meta_contexts(&mut self, queries: &[&str]) -> Result<Vec<String>, Error> {
        let q = queries.iter().map(|s| s.to_string()).collect();
        let events = self.option(|c| c.opt_list_meta_context(q))?;
        Ok(crate::conn::contexts(events))
    }

    /// Opt mode: changes the export that [`Client::go`] opens.
    pub fn set_export_name(&mut self, name: &str) -> Result<(), Error> {
        if !self.is_negotiating() {
            return Err(Error::InvalidState("not in opt mode"));
        }
        self.conn.client.config_mut().export_name = name.to_string();
        self.conn.client.forget_meta_contexts();
        Ok(())
    }

    /// Opt mode: selects the configured metadata contexts and opens the
    /// export (`NBD_OPT_GO`). If the server refuses, the client stays in
    /// opt mode and the error is [`Error::Option`].
    pub fn go(&mut self) -> Result<(), Error> {
        self.option(|c| c.opt_go()).map(drop)
    }

    /// Ends the session in order: `NBD_CMD_DISC` after the commands in
    /// flight (whose results are then lost: wait for them first), or
    /// `NBD_OPT_ABORT` in opt mode; then waits for the server to close.
    pub fn disconnect(mut self) -> Result<(), Error> {
        if self.conn.is_closed() {
            return Ok(());
        }
        if let Some(e) = self.conn.end_error() {
            return Err(e);
        }
        self.conn.client.shutdown()?;
        match self.run(&mut Lend::None, |c| c.is_closed()) {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
