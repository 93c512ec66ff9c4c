//! The async client, on `tokio::net` sockets (feature `tokio`).
//!
//! The surface is the blocking client's, with `async fn`s where the call
//! waits for the server.
//!
//! ```no_run
//! use nbd_client::{tokio::Client, Config};
//!
//! # async fn demo() -> Result<(), nbd_client::Error> {
//! let mut nbd = Client::connect("/tmp/nbd.sock", &Config::new()).await?;
//! nbd.write_at(b"hello", 0).await?;
//! let mut buf = [0u8; 5];
//! nbd.read_at(&mut buf, 0).await?;
//! let ids = (0..64u64)
//!     .map(|i| nbd.submit_read(i * 4096, 4096))
//!     .collect::<Result<Vec<_>, _>>()?;
//! for id in ids {
//!     nbd.wait(id).await?;
//! }
//! nbd.disconnect().await
//! # }
//! ```
//!
//! # Design: `&mut self`, no background task
//!
//! Methods take `&mut self` and move bytes only while the caller awaits
//! one of them; there is no spawned driver task. Several commands are in
//! flight through the pipelined API (`submit_*` queue, [`Client::wait`]
//! and [`Client::wait_next`] drive the socket for all of them at once).
//! Why:
//!
//! * no `Arc<Mutex<_>>` and no channel per command: a command's buffer is
//!   in the client's table, and [`Client::read_at`] receives payload
//!   straight into the caller's `&mut [u8]`, which a spawned task could
//!   not borrow;
//! * no `'static` bounds, no runtime flavour required (current-thread
//!   runtimes work), and nothing keeps running after the client is
//!   dropped;
//! * a program that wants to share one connection between tasks can put
//!   it behind a `tokio::sync::Mutex`, or (usually better, if the server
//!   allows [multi-conn](Client::can_multi_conn)) open one per task.
//!
//! Each wait selects on readability and writability together, so large
//! writes and large replies never block each other.
//!
//! # Cancellation
//!
//! Every method is cancel-safe in the sense that dropping its future
//! leaves the connection usable: bytes already queued still go out
//! whole, and the reply of a read whose future was dropped is received
//! into scratch space and discarded (the caller's buffer is not touched
//! after the drop). [`Client::write_at`] copies the caller's bytes for
//! that reason; [`Client::submit_write`] takes `Bytes` without a copy.

use crate::conn::{Conn, Lend, MAX_IOV};
use crate::{CommandId, Config, Error, ExportEntry, Extent, Output};
use bytes::Bytes;
use nbd_proto::client::{CommandKind, Event, State, SubmitError};
use std::io::{self, IoSlice};
use std::path::Path;
use tokio::io::{Interest, Ready};
use tokio::net::{TcpStream, ToSocketAddrs, UnixStream};

enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Io {
    async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        match self {
            Io::Tcp(s) => s.ready(interest).await,
            Io::Unix(s) => s.ready(interest).await,
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.try_read(buf),
            Io::Unix(s) => s.try_read(buf),
        }
    }

    fn try_write_vectored(&self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.try_write_vectored(iov),
            Io::Unix(s) => s.try_write_vectored(iov),
        }
    }
}

/// An async NBD connection. See the [module documentation](self).
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
    pub async fn connect(addr: &str, config: &Config) -> Result<Self, Error> {
        if addr.contains('/') {
            Self::connect_unix(addr, config).await
        } else {
            Self::connect_tcp(addr, config).await
        }
    }

    /// Connects over TCP and negotiates.
    pub async fn connect_tcp(addr: impl ToSocketAddrs, config: &Config) -> Result<Self, Error> {
        Self::from_tcp_stream(TcpStream::connect(addr).await?, config).await
    }

    /// Connects to a Unix domain socket and negotiates.
    pub async fn connect_unix(path: impl AsRef<Path>, config: &Config) -> Result<Self, Error> {
        Self::from_unix_stream(UnixStream::connect(path).await?, config).await
    }

    /// Negotiates over a TCP stream the caller connected.
    pub async fn from_tcp_stream(s: TcpStream, config: &Config) -> Result<Self, Error> {
        s.set_nodelay(true)?;
        Self::handshake(Io::Tcp(s), config).await
    }

    /// Negotiates over a Unix stream the caller connected.
    pub async fn from_unix_stream(s: UnixStream, config: &Config) -> Result<Self, Error> {
        Self::handshake(Io::Unix(s), config).await
    }

    async fn handshake(io: Io, config: &Config) -> Result<Self, Error> {
        let mut c = Client {
            conn: Conn::new(config),
            io,
        };
        c.run(&mut Lend::None, Conn::settled).await?;
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
    async fn run(
        &mut self,
        lend: &mut Lend<'_>,
        done: impl Fn(&Conn) -> bool,
    ) -> Result<(), Error> {
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
            let want_write = self.conn.client.wants_write();
            let want_read = self.conn.client.wants_read();
            let interest = match (want_read, want_write) {
                (true, true) => Interest::READABLE | Interest::WRITABLE,
                (true, false) => Interest::READABLE,
                (false, true) => Interest::WRITABLE,
                (false, false) => return Err(Error::InvalidState("nothing to wait for")),
            };
            let ready = match self.io.ready(interest).await {
                Ok(r) => r,
                Err(e) => {
                    self.conn.io_error(&e);
                    continue;
                }
            };
            if want_write && ready.is_writable() {
                let Client { conn, io } = &mut *self;
                let r = {
                    let mut iov = [IoSlice::new(&[]); MAX_IOV];
                    conn.gather(lend, &mut iov)
                        .map(|n| io.try_write_vectored(&iov[..n]))
                };
                match r {
                    None => self.conn.lost_write_buffer(),
                    Some(Ok(0)) => self.conn.io_error(&io::ErrorKind::WriteZero.into()),
                    Some(Ok(n)) => self.conn.wrote(n),
                    Some(Err(e))
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Some(Err(e)) => self.conn.io_error(&e),
                }
            }
            if want_read && (ready.is_readable() || ready.is_read_closed()) {
                if self.conn.has_buffered() || self.conn.end_error().is_some() {
                    continue;
                }
                let Client { conn, io } = &mut *self;
                let r = io.try_read(conn.recv_buf(lend));
                match r {
                    Ok(n) => self.conn.received(n, lend),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => self.conn.io_error(&e),
                }
            }
        }
    }

    /// Waits for a command whose buffer the caller lends, and collects it.
    async fn finish(&mut self, cookie: u64, mut lend: Lend<'_>) -> Result<Output, Error> {
        self.run(&mut lend, |c| c.is_done(cookie)).await?;
        self.conn.take(cookie)
    }

    // ----- direct calls -----

    /// Reads `buf.len()` bytes at `offset` into `buf`. The payload is
    /// received straight into `buf`; ranges the server reports as holes
    /// are zeroed. Requests larger than the server's maximum are split.
    pub async fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        let max = self.conn.max_request() as usize;
        let mut at = offset;
        for chunk in buf.chunks_mut(max) {
            let cookie = self.conn.submit_read_lent(at, chunk.len())?;
            let len = chunk.len() as u64;
            self.finish(cookie, Lend::Read(cookie, chunk)).await?;
            at += len;
        }
        Ok(())
    }

    /// Writes `buf` at `offset`. The bytes are copied once (see
    /// [Cancellation](self#cancellation)); use [`Client::submit_write`]
    /// with `Bytes` to avoid that.
    pub async fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), Error> {
        let max = self.conn.max_request() as usize;
        let mut at = offset;
        for chunk in buf.chunks(max) {
            let id = self.submit_write(Bytes::copy_from_slice(chunk), at)?;
            self.wait(id).await?;
            at += chunk.len() as u64;
        }
        Ok(())
    }

    /// Asks the server to make written data durable.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let id = self.submit_flush()?;
        self.wait(id).await.map(drop)
    }

    /// Tells the server the range's contents are no longer needed.
    pub async fn trim(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        let id = self.submit_trim(offset, len)?;
        self.wait(id).await.map(drop)
    }

    /// Writes zeroes to the range (without sending them).
    pub async fn zero(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        let id = self.submit_zero(offset, len)?;
        self.wait(id).await.map(drop)
    }

    /// Asks which parts of `[offset, offset + len)` have which status in
    /// metadata context `context` (e.g. [`BASE_ALLOCATION`](crate::BASE_ALLOCATION)).
    /// The extents start at `offset`; the server may describe less than
    /// `len` (ask again from the end of the last extent) or a little more.
    pub async fn block_status(
        &mut self,
        offset: u64,
        len: u64,
        context: &str,
    ) -> Result<Vec<Extent>, Error> {
        let id = self.submit_block_status(offset, len, context)?;
        Ok(self.wait(id).await?.into_extents().unwrap_or_default())
    }

    // ----- pipelined calls -----

    /// Queues a read of `len` bytes at `offset` into a buffer the command
    /// owns; [`Client::wait`] returns it as [`Output::Data`]. Nothing is
    /// sent until a call waits.
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
    pub async fn wait(&mut self, id: CommandId) -> Result<Output, Error> {
        self.run(&mut Lend::None, |c| c.is_done(id.0)).await?;
        self.conn.take(id.0)
    }

    /// Waits for whichever submitted command completes first (in the order
    /// the replies arrive) and returns its id and result.
    pub async fn wait_next(&mut self) -> Result<(CommandId, Result<Output, Error>), Error> {
        if self.conn.next_completed().is_none() && !self.conn.has_pending_owned() {
            return Err(Error::InvalidState("no command in flight"));
        }
        self.run(&mut Lend::None, |c| {
            c.has_buffered_completion() || !c.has_pending_owned()
        })
        .await?;
        match self.conn.next_completed() {
            Some(c) => Ok((CommandId(c), self.conn.take(c))),
            None => Err(Error::InvalidState("no command in flight")),
        }
    }

    // ----- opt mode -----

    async fn option(
        &mut self,
        f: impl FnOnce(&mut nbd_proto::client::Client<crate::conn::Slot>) -> Result<(), SubmitError>,
    ) -> Result<Vec<Event>, Error> {
        if let Some(e) = self.conn.end_error() {
            return Err(e);
        }
        self.conn.opt_events.clear();
        f(&mut self.conn.client)?;
        self.run(&mut Lend::None, |c| c.client.state() != State::Connecting)
            .await?;
        let events = std::mem::take(&mut self.conn.opt_events);
        crate::conn::option_result(&self.conn, events)
    }

    /// Opt mode: the exports the server lists (`NBD_OPT_LIST`).
    pub async fn list_exports(&mut self) -> Result<Vec<ExportEntry>, Error> {
        let events = self.option(|c| c.opt_list()).await?;
        Ok(crate::conn::exports(events))
    }

    /// Opt mode: the metadata contexts matching `queries` on the export
    /// named in the config (`NBD_OPT_LIST_META_CONTEXT`); an empty list
    /// asks for all.
    pub async fn list_meta_contexts(&mut self, queries: &[&str]) -> Result<Vec<String>, Error> {
        let q = queries.iter().map(|s| s.to_string()).collect();
        let events = self.option(|c| c.opt_list_meta_context(q)).await?;
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
    pub async fn go(&mut self) -> Result<(), Error> {
        self.option(|c| c.opt_go()).await.map(drop)
    }

    /// Ends the session in order: `NBD_CMD_DISC` after the commands in
    /// flight (whose results are then lost: wait for them first), or
    /// `NBD_OPT_ABORT` in opt mode; then waits for the server to close.
    pub async fn disconnect(mut self) -> Result<(), Error> {
        if self.conn.is_closed() {
            return Ok(());
        }
        if let Some(e) = self.conn.end_error() {
            return Err(e);
        }
        self.conn.client.shutdown()?;
        match self.run(&mut Lend::None, |c| c.is_closed()).await {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
