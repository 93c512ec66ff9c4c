//! The NBD client state machine.
//!
//! [`Client`] holds everything one connection needs and does no I/O. A driver
//! (blocking sockets, mio, tokio, a fuzzer) owns the transport and steps it.
//!
//! # How a driver steps a [`Client`]
//!
//! The methods fall into four groups:
//!
//! * **Getters** describe the connection: [`Client::state`],
//!   [`Client::export`], [`Client::structured_replies`],
//!   [`Client::meta_contexts`], [`Client::in_flight`] ...
//! * **Inputs** hand it what the transport produced:
//!   [`Client::handle_input`] (protocol bytes), [`Client::handle_payload`]
//!   (READ payload the driver placed directly into a caller's buffer),
//!   [`Client::handle_eof`], [`Client::handle_io_error`] and, for TLS,
//!   [`Client::tls_established`] / [`Client::tls_failed`].
//! * **Commands** from the application: [`Client::submit`] (READ, WRITE,
//!   FLUSH, TRIM, CACHE, WRITE_ZEROES, BLOCK_STATUS, DISC), the `opt_*`
//!   methods in opt mode, and [`Client::shutdown`].
//! * **Outputs** the driver pulls: [`Client::transmit_segments`] and
//!   [`Client::advance_transmit`] for bytes to send, and
//!   [`Client::poll_event`] for what happened.
//!
//! A driver loop looks like this:
//!
//! 1. If [`Client::wants_write`], gather [`Client::transmit_segments`] into
//!    an `iovec` array (a [`Segment::External`] is a slice of the write buffer
//!    the application gave for that cookie) and `writev` it; report the count
//!    with [`Client::advance_transmit`].
//! 2. If [`Client::wants_read`], look at [`Client::recv_target`]. For
//!    [`RecvTarget::Control`], `recv` into the driver's own buffer (as many
//!    bytes as are available: many small replies arrive in one `recv`) and pass
//!    them to [`Client::handle_input`], which returns how many bytes it took.
//!    It stops early when READ payload starts: then [`Client::recv_target`]
//!    is [`RecvTarget::Payload`], naming the command, the offset within its
//!    buffer and the length, and the driver copies what it already holds and
//!    `recv`s the rest *straight into the application's buffer*, reporting each
//!    step with [`Client::handle_payload`]. It also stops right after
//!    `NBD_OPT_STARTTLS` is acknowledged, so the bytes behind it go to TLS.
//! 3. Drain [`Client::poll_step`] (or [`Client::poll_event`]) and act on
//!    each [`Step`]: zero holes, record errors, take back each completed
//!    command's data.
//!
//! Each command carries the driver's data (`U` of [`Client<U>`], given to
//! [`Client::submit_with`]): the client lends it back in
//! [`Segment::External`], [`Client::payload_target`] and every [`Step`], so
//! the driver needs no table of its own.
//!
//! [`Client::wants_read`] and [`Client::wants_write`] are plain field reads;
//! they are what `nbd_aio_get_direction` reports. Users that do not need the
//! zero-copy path can call [`Client::feed`], which consumes a whole byte slice
//! and hands READ payload to a closure, and [`Client::take_output`], which
//! copies pending output into a `Vec`.
//!
//! Cookies are 1, 2, 3 ... in submission order, so a recorded session or a
//! fuzz input replays exactly.

mod checks;
mod cookiemap;
mod error;
mod negotiate;
mod ranges;
mod transmit;
mod txqueue;

pub use checks::strict;
pub use error::{errno, CommandError, OptionFailure, ProtocolError, SubmitError};
pub use txqueue::Segment;

use crate::consts::{client_flags, cmd, transmission_flags};
use crate::wire::option::{BlockSize, Info, MetaContext, ServerEntry};
use crate::wire::reply::Extent;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;
pub use cookiemap::CookieMap;

/// Whether and how to use TLS (libnbd's `LIBNBD_TLS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsMode {
    /// Never send `NBD_OPT_STARTTLS`.
    #[default]
    Disable,
    /// Try TLS; go on in clear if the server refuses.
    Allow,
    /// Insist on TLS; fail rather than send anything in clear after the greeting.
    Require,
}

/// What the client asks for during negotiation. Mirrors libnbd's settings.
///
/// Non-exhaustive: start from [`Config::default`] and set the fields you
/// need, so that a new setting is not a breaking change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Export to open (default: empty, the server's default export).
    pub export_name: String,
    /// TLS policy.
    pub tls: TlsMode,
    /// Ask for structured replies (default: yes).
    pub request_structured_replies: bool,
    /// Ask for extended headers (default: yes).
    pub request_extended_headers: bool,
    /// Metadata contexts to select with `NBD_OPT_SET_META_CONTEXT`.
    pub request_meta_contexts: Vec<String>,
    /// Select `request_meta_contexts` automatically before `NBD_OPT_GO` /
    /// `NBD_OPT_INFO` (default: yes). When off, the contexts selected by
    /// an explicit [`Client::opt_set_meta_context`] stay in force.
    pub request_meta_context: bool,
    /// Ask for `NBD_INFO_BLOCK_SIZE` (default: yes).
    pub request_block_size: bool,
    /// Ask for `NBD_INFO_NAME` and `NBD_INFO_DESCRIPTION` (default: no).
    pub full_info: bool,
    /// Client flags the client may answer with (`client_flags::*`); default both.
    pub handshake_flags: u32,
    /// Stop after the basic handshake and let the caller issue options.
    pub opt_mode: bool,
    /// Client-side strictness (`strict::*` bits); default all.
    pub strict: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            export_name: String::new(),
            tls: TlsMode::Disable,
            request_structured_replies: true,
            request_extended_headers: true,
            request_meta_contexts: Vec::new(),
            request_meta_context: true,
            request_block_size: true,
            full_info: false,
            handshake_flags: client_flags::MASK,
            opt_mode: false,
            strict: strict::ALL,
        }
    }
}

/// What is known about the export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportInfo {
    /// Size in bytes, as the server announced it (it may exceed `i64::MAX`,
    /// which a C API returning `int64_t` has to report as an overflow).
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Block size constraints, if the server sent them.
    pub block_size: Option<BlockSize>,
    /// Canonical name, if the server sent it.
    pub name: Option<String>,
    /// Description, if the server sent it.
    pub description: Option<String>,
}

impl ExportInfo {
    /// Whether a transmission flag is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

/// The connection's state, in libnbd's terms.
///
/// Exhaustive: these are libnbd's states, a fixed set a driver maps one to
/// one (`nbd_aio_is_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Handshake or automatic negotiation under way.
    Connecting,
    /// Opt mode: waiting for the caller to issue an option.
    Negotiating,
    /// Transmission phase, no command in flight.
    Ready,
    /// Transmission phase, commands in flight.
    Processing,
    /// Cleanly finished (after `NBD_OPT_ABORT` or `NBD_CMD_DISC`).
    Closed,
    /// Failed; see the [`Event::Dead`] reason.
    Dead,
}

/// What the next input bytes are.
///
/// Exhaustive on purpose: every input byte must go where this says, so a
/// new kind of target has to break a driver's match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTarget {
    /// Protocol bytes: pass any amount to [`Client::handle_input`].
    Control,
    /// The next `len` bytes are READ payload for `cookie`, to be placed at
    /// `buf_offset` within that command's buffer.
    Payload {
        /// The READ command.
        cookie: u64,
        /// Where in its buffer.
        buf_offset: u64,
        /// How many bytes, at most, before control bytes resume.
        len: usize,
    },
}

/// The kinds of transmission commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandKind {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`.
    Write,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_CACHE`.
    Cache,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS`.
    BlockStatus,
    /// `NBD_CMD_DISC`: no reply; the connection ends after it.
    Disconnect,
}

impl CommandKind {
    /// The wire command type.
    pub fn code(self) -> u16 {
        match self {
            CommandKind::Read => cmd::READ,
            CommandKind::Write => cmd::WRITE,
            CommandKind::Flush => cmd::FLUSH,
            CommandKind::Trim => cmd::TRIM,
            CommandKind::Cache => cmd::CACHE,
            CommandKind::WriteZeroes => cmd::WRITE_ZEROES,
            CommandKind::BlockStatus => cmd::BLOCK_STATUS,
            CommandKind::Disconnect => cmd::DISC,
        }
    }
}

/// Where a WRITE's payload comes from.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Payload {
    /// No payload (every command but WRITE).
    #[default]
    None,
    /// The client holds the bytes (reference-counted, not copied).
    Owned(Bytes),
    /// The driver holds the bytes; they appear as [`Segment::External`].
    External,
    /// BLOCK_STATUS only, with extended headers: report just these metadata
    /// context ids (see [`Client::meta_contexts`]). The client sends them as
    /// the request's payload with `NBD_CMD_FLAG_PAYLOAD_LEN`; the command's
    /// `length` stays the length of the range to query.
    Contexts(Vec<u32>),
}

/// A command to submit.
#[derive(Debug, Clone)]
pub struct Command {
    /// What to do.
    pub kind: CommandKind,
    /// Offset in the export.
    pub offset: u64,
    /// Length of the effect (for WRITE: the payload length).
    pub length: u64,
    /// `NBD_CMD_FLAG_*` bits.
    pub flags: u16,
    /// WRITE payload.
    pub payload: Payload,
}

impl Command {
    /// A command with no flags and no payload.
    pub fn new(kind: CommandKind, offset: u64, length: u64) -> Self {
        Command {
            kind,
            offset,
            length,
            flags: 0,
            payload: Payload::None,
        }
    }

    /// Sets the flags.
    pub fn with_flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    /// A WRITE of owned bytes.
    pub fn write(offset: u64, data: Bytes) -> Self {
        Command {
            kind: CommandKind::Write,
            offset,
            length: data.len() as u64,
            flags: 0,
            payload: Payload::Owned(data),
        }
    }
}

/// How a piece of a READ reply fills the command's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkKind {
    /// Data was placed there (it is now in the buffer).
    Data,
    /// A hole: the driver must zero that range of the buffer.
    Hole,
}

/// Something that happened, from [`Client::poll_event`] (or, for what
/// concerns no command, inside [`Step::Event`] from [`Client::poll_step`]).
///
/// `U` is the driver's per-command data (see [`Client`]): a completion
/// hands it back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<U = ()> {
    /// Opt mode: negotiation waits for the caller's next option.
    Negotiating,
    /// `NBD_OPT_STARTTLS` was acknowledged: run the TLS handshake now on the
    /// transport, then call [`Client::tls_established`] (or `tls_failed`).
    StartTls,
    /// One export from `NBD_OPT_LIST`.
    Export(ServerEntry),
    /// A metadata context from `NBD_OPT_LIST_META_CONTEXT` or
    /// `NBD_OPT_SET_META_CONTEXT`.
    MetaContext(MetaContext),
    /// A piece of export information from `NBD_OPT_INFO`/`GO` (already
    /// applied to [`Client::export`]).
    Info(Info),
    /// An option finished.
    OptionDone {
        /// The option code.
        option: u32,
        /// Success, or the server's refusal.
        result: Result<(), OptionFailure>,
    },
    /// Transmission phase entered: the export can be used.
    Ready,
    /// Part of a READ's buffer is final.
    ReadChunk {
        /// The READ command.
        cookie: u64,
        /// Offset within the command's buffer.
        buf_offset: u64,
        /// Length.
        len: u64,
        /// Data received, or a hole to zero.
        kind: ChunkKind,
    },
    /// The server reported an error for part of a READ (`ERROR_OFFSET`).
    ReadError {
        /// The READ command.
        cookie: u64,
        /// Offset within the command's buffer.
        buf_offset: u64,
        /// The errno.
        errno: i32,
    },
    /// Block status extents for one metadata context.
    Extents {
        /// The BLOCK_STATUS command.
        cookie: u64,
        /// The context id (see [`Client::meta_contexts`]).
        context_id: u32,
        /// Extents starting at the request offset.
        extents: Vec<Extent>,
    },
    /// A command completed. It is no longer in flight, and its data comes
    /// back.
    Complete {
        /// The command.
        cookie: u64,
        /// `Ok` or why it failed.
        result: Result<(), CommandError>,
        /// The data given to [`Client::submit_with`] (`()` for
        /// [`Client::submit`]).
        data: U,
    },
    /// The connection ended cleanly.
    Closed,
    /// The connection failed; every command in flight was completed with an
    /// error before this event.
    Dead(ProtocolError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) the greeting.
    Greeting,
    /// Fixed-newstyle option haggling.
    Options,
    /// STARTTLS acknowledged; the driver runs TLS.
    AwaitTls,
    /// `NBD_OPT_EXPORT_NAME` sent; waiting for size and flags.
    ExportName,
    /// Transmission.
    Transmission,
    /// Finished cleanly.
    Closed,
    /// Failed.
    Dead,
}

/// One step of a command's reply, from [`Client::poll_step`], with the
/// command's data lent (or, on completion, given back).
///
/// Unlike [`Event`] this enum is exhaustive on purpose: a driver that
/// matches it cannot overlook a hole to zero or an error to record, and a
/// new kind of per-command step would be a breaking change. Everything that
/// concerns no single command arrives as [`Step::Event`].
#[derive(Debug)]
#[must_use = "a step may require the driver to act on its buffer (zero a hole, record an error) or hand back its data"]
pub enum Step<'a, U> {
    /// READ payload is now in the command's buffer at `buf_offset`.
    ReadData {
        /// The READ command.
        cookie: u64,
        /// Offset within the command's buffer.
        buf_offset: u64,
        /// Length.
        len: u64,
        /// The command's data.
        data: &'a mut U,
    },
    /// A hole: the driver must zero `len` bytes of the command's buffer at
    /// `buf_offset` (nothing was written there).
    ReadHole {
        /// The READ command.
        cookie: u64,
        /// Offset within the command's buffer.
        buf_offset: u64,
        /// Length.
        len: u64,
        /// The command's data.
        data: &'a mut U,
    },
    /// The server reported an error for part of a READ (`ERROR_OFFSET`);
    /// the command will complete with an error.
    ReadError {
        /// The READ command.
        cookie: u64,
        /// Offset within the command's buffer.
        buf_offset: u64,
        /// The errno.
        errno: i32,
        /// The command's data.
        data: &'a mut U,
    },
    /// Block status extents for one metadata context.
    Extents {
        /// The BLOCK_STATUS command.
        cookie: u64,
        /// The context id (see [`Client::meta_contexts`]).
        context_id: u32,
        /// The context's name.
        context_name: &'a str,
        /// Extents starting at the request offset.
        extents: Vec<Extent>,
        /// The command's data.
        data: &'a mut U,
    },
    /// The command completed: it is no longer in flight, and its data
    /// comes back.
    Complete {
        /// The command.
        cookie: u64,
        /// `Ok` or why it failed.
        result: Result<(), CommandError>,
        /// The command's data.
        data: U,
    },
    /// Anything else (negotiation, readiness, the end of the connection).
    Event(Event<U>),
}

/// READ payload to receive, with the command's data lent: see
/// [`Client::payload_target`].
#[derive(Debug)]
pub struct PayloadTarget<'a, U> {
    /// The READ command.
    pub cookie: u64,
    /// Where in its buffer the next byte goes.
    pub buf_offset: u64,
    /// How many bytes, at most, before control bytes resume.
    pub len: usize,
    /// The command's data (its buffer).
    pub data: &'a mut U,
}

/// The client state machine: no I/O, one connection.
///
/// # Usage contract
///
/// A driver owns the transport and steps the client (see the
/// [module documentation](self) for the loop):
///
/// * Send what [`Client::transmit_segments`] lists, in order, and report
///   every byte sent with [`Client::advance_transmit`]; a
///   [`Segment::External`] is the WRITE payload the driver holds, found
///   through the command's data it lends.
/// * Receive into what [`Client::recv_target`] names: protocol bytes go to
///   [`Client::handle_input`], READ payload into the command's buffer
///   (found through [`Client::payload_target`]), reported with
///   [`Client::handle_payload`]. Report the end of the stream
///   ([`Client::handle_eof`]) and transport failures.
/// * After each input, drain [`Client::poll_step`] (or
///   [`Client::poll_event`]): holes must be zeroed by the driver, since
///   nothing was received for them.
///
/// # Per-command data
///
/// `U` is whatever the driver needs per command (its buffers, a waker, a
/// callback): given to [`Client::submit_with`], kept with the command in
/// the cookie-ordered table of commands in flight (lookup by cookie is
/// O(1) in the usual case), lent back as `&U` in
/// [`Segment::External`] and `&mut U` in [`Client::payload_target`] and
/// every [`Step`] of the reply, and returned by value in the completion
/// ([`Step::Complete`], [`Event::Complete`]). A driver needs no table of
/// its own. With the default `U = ()`, [`Client::new`] and
/// [`Client::submit`] keep simple users simple.
///
/// The data stays in the client until the completion is pulled, so a
/// driver's buffer outlives every step that names it. A client dropped
/// with commands in flight drops their data.
#[derive(Debug)]
pub struct Client<U = ()> {
    config: Config,
    phase: Phase,
    /// Input accumulator for the message being framed.
    acc: Vec<u8>,
    /// How many bytes `acc` must hold before the message is complete.
    need: usize,
    /// What the accumulated bytes are.
    expect: negotiate::Expect,
    /// Bytes still to skip (payload of a rejected chunk).
    discard: u64,
    /// The command to complete once the skipped bytes are gone.
    discard_done: Option<u64>,
    /// READ payload being received: (cookie, buf_offset, remaining, chunk start).
    payload: Option<transmit::PayloadState>,
    tx: txqueue::TxQueue,
    /// Events; a queued completion holds its command's data.
    events: VecDeque<Event<U>>,
    // Negotiation.
    server_flags: u16,
    sent_client_flags: u32,
    fixed_newstyle: bool,
    greeting: Option<crate::wire::handshake::GreetingKind>,
    no_zeroes: bool,
    plan: VecDeque<negotiate::Step>,
    current: Option<negotiate::Pending>,
    paused: bool,
    got_export_info: bool,
    tls_negotiated: bool,
    structured: bool,
    extended: bool,
    contexts: Vec<MetaContext>,
    /// `contexts` is the answer of a successful selection (see
    /// [`Client::meta_contexts_valid`]).
    meta_valid: bool,
    /// The automatic selection was skipped; the next successful INFO/GO
    /// makes the (empty) selection valid.
    meta_skipped: bool,
    export: ExportInfo,
    // Transmission.
    /// Commands in flight.
    cmds: CookieMap<transmit::InFlight<U>>,
    next_cookie: u64,
    disconnect_sent: bool,
    want_read: bool,
    // Statistics.
    chunks_sent: u64,
    chunks_received: u64,
}

impl Client {
    /// A client about to read the server's greeting, with no per-command
    /// data (see [`Client::with_data`]).
    pub fn new(config: Config) -> Self {
        Client::with_data(config)
    }
}

impl<U> Client<U> {
    /// A client about to read the server's greeting, carrying a `U` with
    /// each command ([`Client::submit_with`]).
    pub fn with_data(config: Config) -> Self {
        let mut c = Client {
            config,
            phase: Phase::Greeting,
            acc: Vec::new(),
            need: crate::consts::size::GREETING_PREFIX,
            expect: negotiate::Expect::GreetingPrefix,
            discard: 0,
            discard_done: None,
            payload: None,
            tx: txqueue::TxQueue::default(),
            events: VecDeque::new(),
            server_flags: 0,
            sent_client_flags: 0,
            fixed_newstyle: false,
            greeting: None,
            no_zeroes: false,
            plan: VecDeque::new(),
            current: None,
            paused: false,
            got_export_info: false,
            tls_negotiated: false,
            structured: false,
            extended: false,
            contexts: Vec::new(),
            meta_valid: false,
            meta_skipped: false,
            export: ExportInfo::default(),
            cmds: CookieMap::new(),
            next_cookie: 1,
            disconnect_sent: false,
            want_read: true,
            chunks_sent: 0,
            chunks_received: 0,
        };
        c.update_direction();
        c
    }

    // ----- getters -----

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes the configuration. Settings that negotiation already used keep
    /// their effect; in opt mode, later options use the new values (e.g. the
    /// export name for `opt_go`).
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The connection's state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Greeting | Phase::AwaitTls | Phase::ExportName => State::Connecting,
            Phase::Options => {
                if self.paused && self.current.is_none() && self.plan.is_empty() {
                    State::Negotiating
                } else {
                    State::Connecting
                }
            }
            Phase::Transmission => {
                if self.cmds.is_empty() && (!self.disconnect_sent || self.tx.is_empty()) {
                    State::Ready
                } else {
                    State::Processing
                }
            }
            Phase::Closed => State::Closed,
            Phase::Dead => State::Dead,
        }
    }

    /// Whether a request is being written or a reply (one message: a
    /// simple reply or one structured chunk) is part read: what libnbd
    /// calls "processing". Between messages the connection is "ready" in
    /// libnbd's terms even with commands in flight (nbd_aio_is_processing(3));
    /// [`Client::state`] says [`State::Processing`] for those too.
    pub fn mid_message(&self) -> bool {
        self.phase == Phase::Transmission
            && (!self.tx.is_empty()
                || !self.acc.is_empty()
                || self.payload.is_some()
                || self.discard > 0
                || !matches!(self.expect, negotiate::Expect::ReplyHeader))
    }

    /// Whether the driver should read from the transport now.
    pub fn wants_read(&self) -> bool {
        self.want_read
    }

    /// Whether the driver has bytes to send.
    pub fn wants_write(&self) -> bool {
        !self.tx.is_empty() && self.phase != Phase::AwaitTls
    }

    /// What the next input bytes are.
    pub fn recv_target(&self) -> RecvTarget {
        match &self.payload {
            Some(p) => RecvTarget::Payload {
                cookie: p.cookie,
                buf_offset: p.buf_offset,
                len: usize::try_from(p.remaining).unwrap_or(usize::MAX),
            },
            None => RecvTarget::Control,
        }
    }

    /// The READ payload to receive next, if any, with its command's data
    /// lent: where [`RecvTarget::Payload`] says the bytes go, and the
    /// buffer they go into.
    #[must_use = "the payload target says where the next bytes go"]
    pub fn payload_target(&mut self) -> Option<PayloadTarget<'_, U>> {
        let p = self.payload.as_ref()?;
        let (cookie, buf_offset) = (p.cookie, p.buf_offset);
        let len = usize::try_from(p.remaining).unwrap_or(usize::MAX);
        let data = &mut self.cmds.get_mut(cookie)?.data;
        Some(PayloadTarget {
            cookie,
            buf_offset,
            len,
            data,
        })
    }

    /// The server's handshake flags (newstyle), or 0.
    pub fn server_handshake_flags(&self) -> u16 {
        self.server_flags
    }

    /// The client flags that were sent.
    pub fn client_flags(&self) -> u32 {
        self.sent_client_flags
    }

    /// Whether the server speaks fixed newstyle.
    pub fn fixed_newstyle(&self) -> bool {
        self.fixed_newstyle
    }

    /// Which handshake the server used, once its greeting arrived:
    /// `"oldstyle"`, `"newstyle"` or `"newstyle-fixed"` (libnbd's names).
    pub fn protocol(&self) -> Option<&'static str> {
        match self.greeting {
            None => None,
            Some(crate::wire::handshake::GreetingKind::Oldstyle) => Some("oldstyle"),
            Some(_) if self.fixed_newstyle => Some("newstyle-fixed"),
            Some(_) => Some("newstyle"),
        }
    }

    /// What is known about the export (complete once [`Event::Ready`] is seen,
    /// or after `opt_info` succeeded).
    pub fn export(&self) -> &ExportInfo {
        &self.export
    }

    /// Whether the export's size and flags are known (after `NBD_INFO_EXPORT`,
    /// the export-name reply or an oldstyle greeting).
    pub fn has_export_info(&self) -> bool {
        self.got_export_info
    }

    /// Whether structured replies were negotiated (implied by extended headers).
    pub fn structured_replies(&self) -> bool {
        self.structured
    }

    /// Whether extended headers were negotiated.
    pub fn extended_headers(&self) -> bool {
        self.extended
    }

    /// Whether TLS was negotiated.
    pub fn tls_negotiated(&self) -> bool {
        self.tls_negotiated
    }

    /// The metadata contexts the server selected, with their ids.
    pub fn meta_contexts(&self) -> &[MetaContext] {
        &self.contexts
    }

    /// Whether [`Client::meta_contexts`] is the outcome of a selection:
    /// an `NBD_OPT_SET_META_CONTEXT` the server acknowledged, or an
    /// `NBD_OPT_INFO`/`GO` that succeeded after the automatic selection
    /// had nothing to ask (no structured replies, or no contexts configured).
    /// False before any, after a refused selection, after
    /// [`Client::forget_meta_contexts`], after STARTTLS, and when
    /// `request_meta_context` is off and nothing was selected explicitly
    /// (libnbd's `nbd_can_meta_context` fails then, if contexts were
    /// requested).
    pub fn meta_contexts_valid(&self) -> bool {
        self.meta_valid
    }

    /// The id of a selected metadata context.
    pub fn meta_context_id(&self, name: &str) -> Option<u32> {
        self.contexts.iter().find(|c| c.name == name).map(|c| c.id)
    }

    /// Protocol messages queued for the server so far: options (the
    /// client flags excluded) and transmission requests, `NBD_CMD_DISC`
    /// included (libnbd's `nbd_stats_chunks_sent`). Requests withdrawn by
    /// [`Client::abandon_unsent`] are not counted.
    pub fn chunks_sent(&self) -> u64 {
        self.chunks_sent
    }

    /// Protocol messages received so far: the greeting, then every simple
    /// reply and every structured or extended reply chunk (libnbd's
    /// `nbd_stats_chunks_received`, which leaves option replies out).
    pub fn chunks_received(&self) -> u64 {
        self.chunks_received
    }

    /// Commands submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.cmds.len()
    }

    /// Whether a transmission flag is set (false before the flags are known).
    pub fn can(&self, flag: u16) -> bool {
        self.export.has(flag)
    }

    /// Whether the export is read-only.
    pub fn is_read_only(&self) -> bool {
        self.can(transmission_flags::READ_ONLY)
    }

    // ----- outputs -----

    /// Fills `out` with the pending output in order; returns how many entries
    /// were filled. Send them (e.g. with one `writev`), then call
    /// [`Client::advance_transmit`] with the number of bytes sent.
    #[must_use = "only the first n entries are filled"]
    pub fn transmit_segments<'a>(&'a self, out: &mut [Segment<'a, U>]) -> usize {
        self.transmit_segments_upto(out, usize::MAX)
    }

    /// Like [`Client::transmit_segments`], but stops after the segment that
    /// brings the total to `max_bytes` or more: a driver sending on a
    /// non-blocking socket need not walk more of the queue than one send
    /// can take.
    #[must_use = "only the first n entries are filled"]
    pub fn transmit_segments_upto<'a>(
        &'a self,
        out: &mut [Segment<'a, U>],
        max_bytes: usize,
    ) -> usize {
        if self.phase == Phase::AwaitTls {
            return 0;
        }
        let (cmds, events) = (&self.cmds, &self.events);
        self.tx
            .segments(out, max_bytes, |cookie| lookup(cmds, events, cookie))
    }

    /// Releases the memory kept for messages that are gone: the event
    /// queue and the output buffer, if they are empty. For a driver whose
    /// connection goes idle (after the handshake, say), so that an idle
    /// connection holds no buffers sized for earlier traffic; not meant to
    /// be called per request (the buffers would be allocated again).
    pub fn shrink_idle(&mut self) {
        if self.events.is_empty() {
            self.events.shrink_to_fit();
        }
        self.tx.shrink_idle();
    }

    /// Total bytes pending output.
    pub fn pending_output(&self) -> usize {
        self.tx.pending()
    }

    /// Reports that `n` bytes of the pending output were sent.
    pub fn advance_transmit(&mut self, n: usize) {
        self.tx.advance(n);
        self.close_after_abort_sent();
        self.update_direction();
    }

    /// Copies all pending output into `out` (buffered use). WRITE payloads held
    /// by the driver are asked for through `payload(cookie, buf_offset, len)`.
    pub fn take_output<'p>(
        &mut self,
        out: &mut Vec<u8>,
        payload: &mut dyn FnMut(u64, u64, usize) -> &'p [u8],
    ) {
        if self.phase == Phase::AwaitTls {
            return;
        }
        self.tx.drain_into(out, payload);
        self.close_after_abort_sent();
        self.update_direction();
    }

    /// The next event, if any. A completion brings the command's data
    /// back; the steps that lend it ([`Client::poll_step`]) come here as
    /// plain events, the data left in the client (reach it with
    /// [`Client::data_mut`]).
    #[must_use = "a dropped event is lost (a completion takes its command's data with it)"]
    pub fn poll_event(&mut self) -> Option<Event<U>> {
        self.events.pop_front()
    }

    /// The next step, if any: what [`Client::poll_event`] gives, with the
    /// command's data lent to every step of a reply (see [`Step`]).
    #[must_use = "a dropped step is lost (a hole left unzeroed, a completion's data dropped)"]
    pub fn poll_step(&mut self) -> Option<Step<'_, U>> {
        let e = self.events.pop_front()?;
        let cookie = match e {
            Event::ReadChunk { cookie, .. }
            | Event::ReadError { cookie, .. }
            | Event::Extents { cookie, .. } => cookie,
            Event::Complete {
                cookie,
                result,
                data,
            } => {
                return Some(Step::Complete {
                    cookie,
                    result,
                    data,
                })
            }
            e => return Some(Step::Event(e)),
        };
        // A command whose completion is queued already has its data there:
        // usually the very next event (the last chunk of a reply).
        let contexts = &self.contexts;
        let next_is_its_completion = matches!(
            self.events.front(),
            Some(Event::Complete { cookie: c, .. }) if *c == cookie
        );
        let data = if next_is_its_completion {
            match self.events.front_mut() {
                Some(Event::Complete { data, .. }) => Some(data),
                _ => None,
            }
        } else {
            lookup_mut(&mut self.cmds, &mut self.events, cookie)
        };
        let Some(data) = data else {
            debug_assert!(false, "a step for a command not in the table");
            return None;
        };
        Some(match e {
            Event::ReadChunk {
                cookie,
                buf_offset,
                len,
                kind: ChunkKind::Data,
            } => Step::ReadData {
                cookie,
                buf_offset,
                len,
                data,
            },
            Event::ReadChunk {
                cookie,
                buf_offset,
                len,
                kind: ChunkKind::Hole,
            } => Step::ReadHole {
                cookie,
                buf_offset,
                len,
                data,
            },
            Event::ReadError {
                cookie,
                buf_offset,
                errno,
            } => Step::ReadError {
                cookie,
                buf_offset,
                errno,
                data,
            },
            Event::Extents {
                cookie,
                context_id,
                extents,
            } => Step::Extents {
                cookie,
                context_id,
                // The chunk was checked against the selected contexts.
                context_name: contexts
                    .iter()
                    .find(|m| m.id == context_id)
                    .map_or("", |m| m.name.as_str()),
                extents,
                data,
            },
            _ => unreachable!("matched above"),
        })
    }

    /// The data of a command in flight (or completed, until its completion
    /// is pulled).
    pub fn data(&self, cookie: u64) -> Option<&U> {
        lookup(&self.cmds, &self.events, cookie)
    }

    /// The data of a command in flight, mutably (see [`Client::data`]).
    pub fn data_mut(&mut self, cookie: u64) -> Option<&mut U> {
        lookup_mut(&mut self.cmds, &mut self.events, cookie)
    }

    /// Every command in flight with its data, oldest first (completed
    /// ones whose completion is not pulled yet are not listed).
    pub fn commands(&self) -> impl Iterator<Item = (u64, &U)> + '_ {
        self.cmds.iter().map(|(cookie, c)| (cookie, &c.data))
    }

    // ----- inputs -----

    /// Consumes protocol bytes; returns how many were taken. It takes fewer
    /// than offered only when READ payload starts (see [`Client::recv_target`]),
    /// when TLS must start, or when the connection ended.
    #[must_use = "bytes not taken must be offered again (or go to READ payload or TLS)"]
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let n = self.handle_input_inner(input);
        self.update_direction();
        n
    }

    /// Reports that the driver placed `n` bytes of the current READ payload
    /// (see [`RecvTarget::Payload`]) into the command's buffer.
    pub fn handle_payload(&mut self, n: usize) {
        self.payload_advance(n as u64);
        self.update_direction();
    }

    /// Buffered use: consumes all of `input`, handing READ payload to
    /// `sink(cookie, buf_offset, bytes)`. Returns how many bytes were consumed
    /// (less than offered only once TLS must start or the connection ended).
    #[must_use = "bytes not consumed must be offered again (e.g. to TLS)"]
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(u64, u64, &[u8])) -> usize {
        let mut used = 0;
        while used < input.len() {
            if let RecvTarget::Payload {
                cookie,
                buf_offset,
                len,
            } = self.recv_target()
            {
                let take = len.min(input.len() - used);
                sink(cookie, buf_offset, &input[used..used + take]);
                self.handle_payload(take);
                used += take;
                continue;
            }
            let n = self.handle_input(&input[used..]);
            used += n;
            if n == 0 && self.payload.is_none() {
                break;
            }
        }
        used
    }

    /// The server closed its side of the connection.
    pub fn handle_eof(&mut self) {
        match self.phase {
            Phase::Closed | Phase::Dead => {}
            _ if self.disconnect_sent || self.aborting() => self.close(),
            Phase::Greeting | Phase::ExportName | Phase::Options | Phase::AwaitTls => {
                self.die(ProtocolError::HandshakeEof)
            }
            _ => self.die(ProtocolError::Eof),
        }
        self.update_direction();
    }

    /// The transport failed. After the client asked to end the session
    /// (`NBD_CMD_DISC` or `NBD_OPT_ABORT`), a reset by the server is how the
    /// session ends, not a failure: the client is closed, not dead.
    pub fn handle_io_error(&mut self, message: impl Into<String>) {
        match self.phase {
            Phase::Closed | Phase::Dead => {}
            _ if self.disconnect_sent || self.aborting() => self.close(),
            _ => self.die(ProtocolError::Io(message.into())),
        }
        self.update_direction();
    }

    /// A system call of the transport failed with `errno` (`op` is "recv",
    /// "send", ...): like [`Client::handle_io_error`], keeping the errno.
    pub fn handle_transport_error(&mut self, op: &'static str, errno: i32) {
        match self.phase {
            Phase::Closed | Phase::Dead => {}
            _ if self.disconnect_sent || self.aborting() => self.close(),
            _ => self.die(ProtocolError::Transport { op, errno }),
        }
        self.update_direction();
    }

    /// Ends the connection at once, failing any commands in flight (for
    /// `nbd_shutdown` with abandon, or closing a handle).
    pub fn abandon(&mut self) {
        if !matches!(self.phase, Phase::Closed | Phase::Dead) {
            self.die(ProtocolError::Shutdown);
        }
        self.update_direction();
    }

    // ----- internal helpers shared by the phases -----

    fn update_direction(&mut self) {
        self.want_read = match self.phase {
            Phase::Greeting | Phase::ExportName => true,
            Phase::Options => self.current.is_some(),
            Phase::Transmission => true,
            Phase::AwaitTls | Phase::Closed | Phase::Dead => false,
        };
    }

    fn expect(&mut self, what: negotiate::Expect, need: usize) {
        self.expect = what;
        self.need = need;
        self.acc.clear();
    }

    fn push_event(&mut self, e: Event<U>) {
        self.events.push_back(e);
    }

    /// Kills the connection: fails every command, drops output, reports why.
    fn die(&mut self, why: ProtocolError) {
        if matches!(self.phase, Phase::Dead | Phase::Closed) {
            return;
        }
        self.fail_all(&why);
        self.phase = Phase::Dead;
        self.tx.clear();
        self.payload = None;
        self.current = None;
        self.plan.clear();
        self.acc = Vec::new();
        self.push_event(Event::Dead(why));
    }

    fn close(&mut self) {
        if matches!(self.phase, Phase::Dead | Phase::Closed) {
            return;
        }
        self.fail_all(&ProtocolError::Eof);
        self.phase = Phase::Closed;
        self.tx.clear();
        self.payload = None;
        self.current = None;
        self.plan.clear();
        self.push_event(Event::Closed);
    }

    fn handle_input_inner(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        loop {
            if self.payload.is_some() {
                return used;
            }
            match self.phase {
                Phase::Closed | Phase::Dead | Phase::AwaitTls => return used,
                _ => {}
            }
            if self.discard > 0 {
                let take = self.discard.min((input.len() - used) as u64) as usize;
                self.discard -= take as u64;
                used += take;
                if self.discard > 0 {
                    return used;
                }
                self.after_discard();
                continue;
            }
            if self.phase == Phase::Options && self.current.is_none() {
                // Nothing is expected from the server between options.
                if used < input.len() {
                    self.die(ProtocolError::Unexpected(
                        "data while no option is in flight",
                    ));
                }
                return used;
            }
            let want = self.need - self.acc.len();
            let take = want.min(input.len() - used);
            if take == 0 {
                return used;
            }
            self.acc.extend_from_slice(&input[used..used + take]);
            used += take;
            if self.acc.len() < self.need {
                self.check_partial_reply_header();
            } else {
                let msg = core::mem::take(&mut self.acc);
                self.on_message(&msg);
                if self.acc.capacity() == 0 && msg.capacity() <= 4096 {
                    // Keep the small buffer for the next header.
                    self.acc = msg;
                    self.acc.clear();
                }
            }
        }
    }

    fn on_message(&mut self, msg: &[u8]) {
        if self.expect.is_transmission() {
            self.on_reply_message(msg);
        } else {
            self.on_negotiation_message(msg);
        }
    }
}

/// A command's data: in flight, or completed with its completion queued
/// (found near the front of the event queue).
fn lookup<'a, U>(
    cmds: &'a CookieMap<transmit::InFlight<U>>,
    events: &'a VecDeque<Event<U>>,
    cookie: u64,
) -> Option<&'a U> {
    match cmds.get(cookie) {
        Some(c) => Some(&c.data),
        None => events.iter().find_map(|e| match e {
            Event::Complete {
                cookie: c, data, ..
            } if *c == cookie => Some(data),
            _ => None,
        }),
    }
}

/// [`lookup`], mutably.
fn lookup_mut<'a, U>(
    cmds: &'a mut CookieMap<transmit::InFlight<U>>,
    events: &'a mut VecDeque<Event<U>>,
    cookie: u64,
) -> Option<&'a mut U> {
    match cmds.get_mut(cookie) {
        Some(c) => Some(&mut c.data),
        None => events.iter_mut().find_map(|e| match e {
            Event::Complete {
                cookie: c, data, ..
            } if *c == cookie => Some(data),
            _ => None,
        }),
    }
}
