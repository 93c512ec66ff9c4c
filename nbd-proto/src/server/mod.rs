//! A sans-IO server-side codec: decodes what a client sends, encodes every
//! server reply.
//!
//! It exists so that tests can script well-behaved and malicious servers in
//! memory, and so that other projects can embed an NBD server. It is a codec,
//! not a server: it frames and decodes client messages, tracks the protocol
//! phase (which decides how the next bytes are framed and which reply headers
//! to use), and encodes replies. Every *decision* (which export, which
//! replies, whether to lie) is left to the caller.
//!
//! The files follow the data flow: [`ServerCodec`] and its getters and setters
//! live here, `recv` frames and decodes client bytes, `send` encodes replies.

mod error;
mod recv;
mod send;
#[cfg(test)]
mod tests;

pub use error::ServerError;

use crate::consts::limits;
use crate::wire::handshake::{NewstyleGreeting, OldstyleGreeting};
use crate::wire::option::OptionRequest;
use crate::wire::request::RequestHeader;
use crate::wire::WireError;
use bytes::{Bytes, BytesMut};

/// The protocol phase the codec is in, from the server's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Newstyle greeting sent; waiting for the client's 32-bit flags.
    Handshake,
    /// Option haggling: the client sends option requests.
    Options,
    /// Transmission: the client sends requests (compact or extended headers).
    Transmission,
}

/// One decoded message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The client's answer to the newstyle greeting (only known bits set).
    ClientFlags(u32),
    /// A well-formed option request.
    Option(OptionRequest),
    /// An option request whose framing was fine but whose payload did not
    /// decode. This is not fatal: a server normally answers
    /// `NBD_REP_ERR_INVALID` (or, for `NBD_OPT_EXPORT_NAME`, closes).
    InvalidOption {
        /// The option code.
        option: u32,
        /// Why the payload was rejected.
        error: WireError,
    },
    /// A transmission request.
    Request {
        /// The request header.
        header: RequestHeader,
        /// The payload: present for `NBD_CMD_WRITE` and, with extended
        /// headers, for any request with `NBD_CMD_FLAG_PAYLOAD_LEN`.
        payload: Option<Bytes>,
    },
}

/// A sans-IO NBD server codec.
///
/// It owns two byte buffers: input that does not yet form a whole message,
/// and output not yet taken by the driver. It never touches a socket, a
/// clock or randomness, and never panics on any input.
///
/// # How a driver steps it
///
/// * **Construction** queues the greeting: [`ServerCodec::newstyle`] or
///   [`ServerCodec::oldstyle`] (which starts directly in transmission).
/// * **Getters** describe the connection: [`phase`](Self::phase),
///   [`client_flags`](Self::client_flags), [`no_zeroes`](Self::no_zeroes),
///   [`structured_replies`](Self::structured_replies),
///   [`extended_headers`](Self::extended_headers),
///   [`awaiting_reply`](Self::awaiting_reply), [`is_dead`](Self::is_dead).
///   **Setters** override them, for servers that must lie.
/// * **Input**: [`feed`](Self::feed) takes received bytes and returns how
///   many it consumed. It never takes more than the rest of the current
///   message, so the codec buffers at most one message; the driver keeps the
///   unconsumed tail and offers it again after polling. Then
///   [`poll_event`](Self::poll_event) yields the decoded [`ServerEvent`], or
///   a [`ServerError`] that makes the codec dead, or `None` when more bytes
///   are needed ("need more bytes" is not an error).
/// * **Output**: the `send_*` methods append replies to the output buffer;
///   [`take_output`](Self::take_output) (or [`output`](Self::output) plus
///   [`advance_output`](Self::advance_output), for partial writes) hands
///   them to the driver; [`has_output`](Self::has_output) tells whether there
///   is anything to write.
///
/// A driver loop: write any output; `recv` into its own buffer; repeatedly
/// [`feed`](Self::feed) the unconsumed part and drain
/// [`poll_event`](Self::poll_event), answering each event with `send_*`
/// calls, until `feed` takes nothing and no event is pending.
///
/// # Phases
///
/// Phase changes follow what the server *sends*, because that is what
/// decides how the client frames its next bytes:
///
/// * Handshake → options when the client flags are decoded. Unknown client
///   flags, or flags the greeting did not advertise, are errors (the spec
///   says to drop the connection); so `NO_ZEROES` is agreed exactly when the
///   client sets it.
/// * Options → transmission when [`send_export_name_reply`](Self::send_export_name_reply)
///   is called, or an `NBD_REP_ACK` to `NBD_OPT_GO` is sent.
/// * An ACK to `NBD_OPT_STRUCTURED_REPLY` turns on structured replies; an ACK
///   to `NBD_OPT_EXTENDED_HEADERS` turns on extended headers (and structured
///   replies, which they imply): from then on requests are decoded as 32-byte
///   extended headers and chunks are sent with 32-byte extended headers.
///
/// After decoding `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME` the codec cannot know
/// whether the next bytes are an option or a request until the server answers,
/// so [`feed`](Self::feed) takes nothing until a final reply (ACK or error) or
/// the export name reply has been sent ([`awaiting_reply`](Self::awaiting_reply)
/// says which option is pending).
#[derive(Debug)]
pub struct ServerCodec {
    phase: Phase,
    oldstyle: bool,
    handshake_flags: u16,
    client_flags: Option<u32>,
    no_zeroes: bool,
    structured: bool,
    extended: bool,
    awaiting: Option<u32>,
    max_option_payload: u32,
    max_payload: u64,
    dead: bool,
    input: BytesMut,
    output: BytesMut,
}

impl ServerCodec {
    /// Default cap on an option request's payload (64 MiB).
    pub const DEFAULT_MAX_OPTION_PAYLOAD: u32 = limits::MAX_OPTION_PAYLOAD;
    /// Default cap on a request payload: 64 MiB, the largest write a client
    /// sends by default, plus 4 KiB of slack so a client probing just past
    /// that limit is still decoded.
    pub const DEFAULT_MAX_PAYLOAD: u64 = limits::MAX_REQUEST_PAYLOAD + 4096;

    fn new(phase: Phase, oldstyle: bool, handshake_flags: u16) -> Self {
        ServerCodec {
            phase,
            oldstyle,
            handshake_flags,
            client_flags: None,
            no_zeroes: false,
            structured: false,
            extended: false,
            awaiting: None,
            max_option_payload: Self::DEFAULT_MAX_OPTION_PAYLOAD,
            max_payload: Self::DEFAULT_MAX_PAYLOAD,
            dead: false,
            input: BytesMut::new(),
            output: BytesMut::new(),
        }
    }

    /// A newstyle server: queues the 18-byte greeting with `handshake_flags`
    /// (`consts::handshake_flags::*`, unknown bits allowed) and waits for the
    /// client flags.
    pub fn newstyle(handshake_flags: u16) -> Self {
        let mut c = Self::new(Phase::Handshake, false, handshake_flags);
        NewstyleGreeting { handshake_flags }.encode(&mut c.output);
        c
    }

    /// An oldstyle server: queues the 152-byte greeting announcing one export
    /// of `size` bytes with 32 bits of `flags`, and starts in transmission
    /// (compact requests, simple replies).
    pub fn oldstyle(size: u64, flags: u32) -> Self {
        let mut c = Self::new(Phase::Transmission, true, 0);
        OldstyleGreeting { size, flags }.encode(&mut c.output);
        c
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether this codec sent an oldstyle greeting.
    pub fn is_oldstyle(&self) -> bool {
        self.oldstyle
    }

    /// The handshake flags sent in the newstyle greeting (0 for oldstyle).
    pub fn handshake_flags(&self) -> u16 {
        self.handshake_flags
    }

    /// The client flags, once received.
    pub fn client_flags(&self) -> Option<u32> {
        self.client_flags
    }

    /// Whether the zero padding after the export name reply is omitted.
    pub fn no_zeroes(&self) -> bool {
        self.no_zeroes
    }

    /// Whether structured replies were negotiated (or implied by extended
    /// headers).
    pub fn structured_replies(&self) -> bool {
        self.structured
    }

    /// Whether extended headers are in use: requests are decoded as 32-byte
    /// headers and chunks are sent with 32-byte headers.
    pub fn extended_headers(&self) -> bool {
        self.extended
    }

    /// The option (`NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`) whose answer the
    /// codec waits for before it decodes more input.
    pub fn awaiting_reply(&self) -> Option<u32> {
        self.awaiting
    }

    /// Whether a protocol violation was reported; no more input is decoded.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The cap on an option request's payload.
    pub fn max_option_payload(&self) -> u32 {
        self.max_option_payload
    }

    /// The cap on a request's payload.
    pub fn max_payload(&self) -> u64 {
        self.max_payload
    }

    /// Forces the phase (clearing any [`awaiting_reply`](Self::awaiting_reply)).
    /// Call it between messages: the framing of the next input follows it.
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.awaiting = None;
    }

    /// Forces whether the export name reply omits its zero padding.
    pub fn set_no_zeroes(&mut self, no_zeroes: bool) {
        self.no_zeroes = no_zeroes;
    }

    /// Forces whether structured replies are considered negotiated.
    pub fn set_structured_replies(&mut self, on: bool) {
        self.structured = on;
    }

    /// Forces extended headers on or off, for both decoding requests and
    /// encoding chunks.
    pub fn set_extended_headers(&mut self, on: bool) {
        self.extended = on;
    }

    /// Sets the cap on option payloads (default
    /// [`DEFAULT_MAX_OPTION_PAYLOAD`](Self::DEFAULT_MAX_OPTION_PAYLOAD)).
    pub fn set_max_option_payload(&mut self, max: u32) {
        self.max_option_payload = max;
    }

    /// Sets the cap on request payloads (default
    /// [`DEFAULT_MAX_PAYLOAD`](Self::DEFAULT_MAX_PAYLOAD)).
    pub fn set_max_payload(&mut self, max: u64) {
        self.max_payload = max;
    }
}
