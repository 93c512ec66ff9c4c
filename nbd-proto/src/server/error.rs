//! What can go wrong while decoding what a client sends.

use crate::wire::WireError;

/// A protocol violation by the client. Every variant makes the
/// [`ServerCodec`](super::ServerCodec) dead: it decodes nothing more, though it
/// still encodes replies (a server may want to say goodbye before closing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// An option request or transmission request did not start with its magic.
    #[error("bad {what} magic 0x{found:x}")]
    BadMagic {
        /// Which magic was expected (`"option"`, `"request"`).
        what: &'static str,
        /// The value found on the wire.
        found: u64,
    },
    /// The client set client flags this implementation does not know.
    #[error("unknown client flags 0x{0:x}")]
    UnknownClientFlags(u32),
    /// The client set a known client flag whose handshake flag the server did
    /// not advertise (the spec says the server must then drop the connection).
    #[error("client flags 0x{0:x} were not advertised by the server")]
    UnadvertisedClientFlags(u32),
    /// An option request announced a payload longer than the configured cap.
    #[error("option {option} payload of {length} bytes exceeds the cap of {max}")]
    OptionTooLarge {
        /// The option code.
        option: u32,
        /// The announced payload length.
        length: u32,
        /// The cap in force ([`ServerCodec::set_max_option_payload`](super::ServerCodec::set_max_option_payload)).
        max: u32,
    },
    /// A request announced a payload longer than the configured cap.
    #[error("request payload of {length} bytes exceeds the cap of {max}")]
    PayloadTooLarge {
        /// The command (`NBD_CMD_*`).
        command: u16,
        /// The announced payload length.
        length: u64,
        /// The cap in force ([`ServerCodec::set_max_payload`](super::ServerCodec::set_max_payload)).
        max: u64,
    },
    /// A fixed-size message could not be decoded.
    #[error("malformed message: {0}")]
    Malformed(WireError),
}

impl From<WireError> for ServerError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::BadMagic { what, found } => ServerError::BadMagic { what, found },
            other => ServerError::Malformed(other),
        }
    }
}
