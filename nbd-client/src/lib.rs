//! A Network Block Device (NBD) client for Rust programs.
//!
//! `nbd-client` drives the sans-IO protocol core of
//! [`nbd_proto::client::Client`] over real sockets, the way `quinn` drives
//! `quinn-proto`. It comes in two flavours with the same surface:
//!
//! * [`blocking::Client`], on `std::net::TcpStream` and
//!   `std::os::unix::net::UnixStream`;
//! * `tokio::Client` (feature `tokio`, off by default), on
//!   `tokio::net::{TcpStream, UnixStream}`, with the same methods as
//!   `async fn`s.
//!
//! Both negotiate structured replies, extended headers and metadata
//! contexts as [`Config`] asks, receive READ payload straight into the
//! caller's buffer (zeroing holes the server reports), and keep several
//! commands in flight through a pipelined API ([`CommandId`], `submit_*`,
//! `wait`, `wait_next`).
//!
//! # Example
//!
//! ```no_run
//! use nbd_client::{blocking::Client, Config};
//!
//! # fn main() -> Result<(), nbd_client::Error> {
//! // A Unix socket path (anything with a '/') or host:port.
//! let mut nbd = Client::connect("/tmp/nbd.sock", &Config::new())?;
//! println!("export of {} bytes, read-only: {}", nbd.size(), nbd.is_read_only());
//!
//! nbd.write_at(b"hello", 0)?;
//! let mut buf = [0u8; 5];
//! nbd.read_at(&mut buf, 0)?;
//! assert_eq!(&buf, b"hello");
//!
//! // Many reads in flight at once: each command owns its buffer.
//! let ids: Vec<_> = (0..16u64)
//!     .map(|i| nbd.submit_read(i * 4096, 4096))
//!     .collect::<Result<_, _>>()?;
//! for id in ids {
//!     let data = nbd.wait(id)?.into_data();
//!     assert_eq!(data.map(|d| d.len()), Some(4096));
//! }
//!
//! // Which parts of the export hold data.
//! for e in nbd.block_status(0, nbd.size(), nbd_client::BASE_ALLOCATION)? {
//!     println!("{}+{}: hole={} zero={}", e.offset, e.length, e.is_hole(), e.is_zero());
//! }
//! nbd.disconnect()
//! # }
//! ```
//!
//! Opt mode lets a program look at the server before choosing an export:
//!
//! ```no_run
//! use nbd_client::{blocking::Client, Config};
//!
//! # fn main() -> Result<(), nbd_client::Error> {
//! let mut nbd = Client::connect("localhost:10809", &Config::new().opt_mode(true))?;
//! for export in nbd.list_exports()? {
//!     println!("{} ({})", export.name, export.description);
//! }
//! println!("{:?}", nbd.list_meta_contexts(&["base:"])?);
//! nbd.set_export_name("disk0")?;
//! nbd.go()?;
//! println!("size {}", nbd.size());
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every fallible call returns [`Error`]. A command the server refuses fails
//! alone ([`Error::Command`], with the errno); a connection that fails
//! ([`Error::Connection`]) fails every command in flight, and every later
//! call. [`Error`] converts into [`std::io::Error`], so `?` works in
//! functions returning `io::Result`.
//!
//! # Per-command data
//!
//! The core carries each command's buffer and bookkeeping for it
//! (`nbd_proto::client::Client<U>`) and returns them on completion; this
//! crate keeps only completed results until they are collected.
//!
//! # TLS
//!
//! Not implemented: [`Config`] is `#[non_exhaustive]`, so TLS settings can
//! be added later without breaking callers. A server that insists on TLS
//! refuses the connection ([`Error::Connection`]).

#![forbid(unsafe_code)]

pub mod blocking;
mod conn;
mod error;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use error::Error;

/// The metadata context that says which parts of an export are allocated
/// or read as zeroes (`NBD_STATE_HOLE`, `NBD_STATE_ZERO`).
pub const BASE_ALLOCATION: &str = "base:allocation";

/// The largest request this crate sends when the server names no maximum
/// (the limit most servers apply: 32 MiB).
pub const DEFAULT_MAX_REQUEST: u64 = 32 * 1024 * 1024;

/// What to ask the server for while connecting.
///
/// Built with [`Config::new`] and its builder methods; the fields can be
/// read back. The struct is `#[non_exhaustive]`: later versions may add
/// settings (TLS, timeouts) without breaking callers.
///
/// ```
/// let config = nbd_client::Config::new()
///     .export_name("disk0")
///     .extended_headers(false)
///     .meta_context("qemu:dirty-bitmap:b0");
/// assert_eq!(config.export_name, "disk0");
/// assert_eq!(config.meta_contexts, ["base:allocation", "qemu:dirty-bitmap:b0"]);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The export to open (default: empty, the server's default export).
    pub export_name: String,
    /// Ask for structured replies (default: yes). Without them the server
    /// cannot report holes, read errors by offset or block status.
    pub structured_replies: bool,
    /// Ask for extended headers: 64-bit lengths (default: yes).
    pub extended_headers: bool,
    /// Metadata contexts to select (default: `base:allocation`).
    pub meta_contexts: Vec<String>,
    /// Stop after the handshake so the caller can list exports and
    /// metadata contexts before [`go`](blocking::Client::go) (default: no).
    pub opt_mode: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            export_name: String::new(),
            structured_replies: true,
            extended_headers: true,
            meta_contexts: vec![BASE_ALLOCATION.to_string()],
            opt_mode: false,
        }
    }
}

impl Config {
    /// The defaults: default export, structured replies, extended headers,
    /// `base:allocation`, no opt mode.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the export to open.
    #[must_use]
    pub fn export_name(mut self, name: impl Into<String>) -> Self {
        self.export_name = name.into();
        self
    }

    /// Whether to ask for structured replies.
    #[must_use]
    pub fn structured_replies(mut self, on: bool) -> Self {
        self.structured_replies = on;
        self
    }

    /// Whether to ask for extended headers.
    #[must_use]
    pub fn extended_headers(mut self, on: bool) -> Self {
        self.extended_headers = on;
        self
    }

    /// Adds a metadata context to select.
    #[must_use]
    pub fn meta_context(mut self, name: impl Into<String>) -> Self {
        self.meta_contexts.push(name.into());
        self
    }

    /// Selects no metadata context (block status is then unavailable).
    #[must_use]
    pub fn no_meta_contexts(mut self) -> Self {
        self.meta_contexts.clear();
        self
    }

    /// Whether to stop in opt mode after the handshake.
    #[must_use]
    pub fn opt_mode(mut self, on: bool) -> Self {
        self.opt_mode = on;
        self
    }

    pub(crate) fn to_proto(&self) -> nbd_proto::client::Config {
        {
            let mut config = nbd_proto::client::Config::default();
            config.export_name = self.export_name.clone();
            config.request_structured_replies = self.structured_replies;
            config.request_extended_headers = self.extended_headers;
            config.request_meta_contexts = self.meta_contexts.clone();
            config.opt_mode = self.opt_mode;
            config
        }
    }
}

/// One extent of a block status reply, in export offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Extent {
    /// Where it starts in the export.
    pub offset: u64,
    /// Its length.
    pub length: u64,
    /// The context's status flags (for `base:allocation`: bit 0 hole,
    /// bit 1 reads as zeroes).
    pub flags: u64,
}

impl Extent {
    /// `base:allocation`: the range is not allocated (`NBD_STATE_HOLE`).
    pub fn is_hole(&self) -> bool {
        self.flags & 1 != 0
    }

    /// `base:allocation`: the range reads as zeroes (`NBD_STATE_ZERO`).
    pub fn is_zero(&self) -> bool {
        self.flags & 2 != 0
    }
}

/// An export the server listed in opt mode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportEntry {
    /// The export's name, for [`Config::export_name`].
    pub name: String,
    /// Its description (often empty).
    pub description: String,
}

/// Names a command submitted with a `submit_*` method; hand it to `wait`.
///
/// Dropping it without waiting leaves the command's result (and, for a
/// read, its data) in the client until it disconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[must_use = "a submitted command's result (and a read's data) is only available through wait"]
pub struct CommandId(pub(crate) u64);

impl CommandId {
    /// The NBD cookie the command carries on the wire.
    pub fn cookie(self) -> u64 {
        self.0
    }
}

/// What a completed command yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// A read: its buffer, filled (holes zeroed).
    Data(Vec<u8>),
    /// A block status query: the extents of the context asked for.
    Extents(Vec<Extent>),
    /// A command with no data (write, flush, trim, zero).
    Done,
}

impl Output {
    /// The data of a read, if this is one.
    #[must_use]
    pub fn into_data(self) -> Option<Vec<u8>> {
        match self {
            Output::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The extents of a block status query, if this is one.
    #[must_use]
    pub fn into_extents(self) -> Option<Vec<Extent>> {
        match self {
            Output::Extents(e) => Some(e),
            _ => None,
        }
    }
}

/// The getters both clients share, on a `conn: crate::conn::Conn` field.
macro_rules! export_getters {
    () => {
        /// The export's size in bytes.
        pub fn size(&self) -> u64 {
            self.conn.client.export().size
        }

        /// The raw transmission flags (`NBD_FLAG_*`).
        pub fn transmission_flags(&self) -> u16 {
            self.conn.client.export().flags
        }

        /// The server's block size constraints, if it sent them.
        pub fn block_size(&self) -> Option<nbd_proto::wire::option::BlockSize> {
            self.conn.client.export().block_size
        }

        /// Whether the export is read-only.
        pub fn is_read_only(&self) -> bool {
            self.conn.client.is_read_only()
        }

        /// Whether the server accepts `flush`.
        pub fn can_flush(&self) -> bool {
            self.conn
                .can(nbd_proto::consts::transmission_flags::SEND_FLUSH)
        }

        /// Whether the server honours forced unit access on writes.
        pub fn can_fua(&self) -> bool {
            self.conn
                .can(nbd_proto::consts::transmission_flags::SEND_FUA)
        }

        /// Whether the server accepts `trim`.
        pub fn can_trim(&self) -> bool {
            self.conn
                .can(nbd_proto::consts::transmission_flags::SEND_TRIM)
        }

        /// Whether the server accepts `zero`.
        pub fn can_zero(&self) -> bool {
            self.conn
                .can(nbd_proto::consts::transmission_flags::SEND_WRITE_ZEROES)
        }

        /// Whether the server accepts `NBD_CMD_CACHE`.
        pub fn can_cache(&self) -> bool {
            self.conn
                .can(nbd_proto::consts::transmission_flags::SEND_CACHE)
        }

        /// Whether several connections to this export see each other's
        /// writes after a flush.
        pub fn can_multi_conn(&self) -> bool {
            self.conn
                .can(nbd_proto::consts::transmission_flags::CAN_MULTI_CONN)
        }

        /// Whether the export is on rotating media.
        pub fn is_rotational(&self) -> bool {
            self.conn
                .can(nbd_proto::consts::transmission_flags::ROTATIONAL)
        }

        /// Whether `block_status` can be asked for this metadata context.
        pub fn can_meta_context(&self, name: &str) -> bool {
            self.conn.client.meta_context_id(name).is_some()
        }

        /// Whether structured replies were negotiated.
        pub fn structured_replies(&self) -> bool {
            self.conn.client.structured_replies()
        }

        /// Whether extended headers were negotiated.
        pub fn extended_headers(&self) -> bool {
            self.conn.client.extended_headers()
        }

        /// Commands submitted and not yet completed.
        pub fn in_flight(&self) -> usize {
            self.conn.client.in_flight()
        }

        /// The protocol core, for what this API does not cover (read only:
        /// driving it directly would confuse the client). Its per-command
        /// data is this crate's own.
        pub fn core(&self) -> &nbd_proto::client::Client<impl Sized> {
            &self.conn.client
        }
    };
}
pub(crate) use export_getters;
