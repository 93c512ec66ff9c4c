//! Errors of the client: what kills a connection, what fails one command or
//! option, and what refuses a submission.

use crate::wire::WireError;
use alloc::string::String;

/// Linux errno values the client reports (the NBD error numbers are the same).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i32 = 1;
    /// No such file or directory (unknown export).
    pub const ENOENT: i32 = 2;
    /// Input/output error.
    pub const EIO: i32 = 5;
    /// Out of memory.
    pub const ENOMEM: i32 = 12;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left on device.
    pub const ENOSPC: i32 = 28;
    /// Result out of range.
    pub const ERANGE: i32 = 34;
    /// Protocol error.
    pub const EPROTO: i32 = 71;
    /// Value too large for defined data type.
    pub const EOVERFLOW: i32 = 75;
    /// Operation not supported.
    pub const ENOTSUP: i32 = 95;
    /// Transport endpoint is not connected.
    pub const ENOTCONN: i32 = 107;
    /// Cannot send after transport endpoint shutdown.
    pub const ESHUTDOWN: i32 = 108;

    /// Maps an error number received from a server to the local errno, as the
    /// spec asks: known values pass through, unknown ones become `EINVAL`.
    pub fn from_nbd(e: u32) -> i32 {
        use crate::consts::errno as n;
        match e {
            n::EPERM
            | n::EIO
            | n::ENOMEM
            | n::EINVAL
            | n::ENOSPC
            | n::EOVERFLOW
            | n::ENOTSUP
            | n::ESHUTDOWN => e as i32,
            _ => EINVAL,
        }
    }
}

/// A violation that ends the connection: after it the client is dead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message could not be decoded.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The server sent something that is not valid at this point.
    #[error("unexpected server message: {0}")]
    Unexpected(&'static str),
    /// An option reply answered an option other than the one in flight.
    #[error("option reply for option {got} while waiting for option {want}")]
    WrongOption {
        /// The option in flight.
        want: u32,
        /// The option the reply names.
        got: u32,
    },
    /// A reply names a cookie that is not in flight.
    #[error("reply for unknown cookie {0}")]
    UnknownCookie(u64),
    /// A reply or chunk header uses a form that was not negotiated.
    #[error("{0} was not negotiated")]
    NotNegotiated(&'static str),
    /// A length announced by the server is over what the client accepts.
    #[error("server announced {what} length {len}, over the limit")]
    TooLong {
        /// What was announced.
        what: &'static str,
        /// The length.
        len: u64,
    },
    /// The server refused what negotiation needs (e.g. `NBD_OPT_GO`).
    #[error("server refused {option}: {message}")]
    Refused {
        /// The option's name.
        option: &'static str,
        /// The server's error name and message.
        message: String,
        /// The errno the refusal maps to.
        errno: i32,
    },
    /// TLS was required but the server cannot provide it.
    #[error("TLS required but {0}")]
    TlsRequired(&'static str),
    /// The TLS handshake failed (reported by the driver).
    #[error("TLS handshake failed: {0}")]
    TlsFailed(String),
    /// The server closed the connection before the protocol was finished.
    #[error("server closed the connection unexpectedly")]
    Eof,
    /// The server closed the connection during the handshake (a server
    /// program that could not start, a server that refuses us). libnbd
    /// reports this one without an errno (0).
    #[error("recv: server disconnected unexpectedly")]
    HandshakeEof,
    /// The transport failed (reported by the driver) in a way that has no
    /// errno (an internal inconsistency of the driver).
    #[error("transport error: {0}")]
    Io(String),
    /// A system call of the transport failed (reported by the driver with
    /// [`Client::handle_transport_error`](super::Client::handle_transport_error)):
    /// the errno survives, so that a C caller sees `ECONNRESET`, not `EIO`.
    #[error("{op} failed with errno {errno}")]
    Transport {
        /// What failed ("recv", "send").
        op: &'static str,
        /// The errno it reported.
        errno: i32,
    },
    /// The driver asked to end the connection.
    #[error("connection shut down")]
    Shutdown,
}

impl ProtocolError {
    /// The errno a C caller sees for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            ProtocolError::Refused { errno, .. } => *errno,
            ProtocolError::TlsRequired(_) => errno::ENOTSUP,
            ProtocolError::Eof | ProtocolError::Shutdown => errno::ENOTCONN,
            ProtocolError::HandshakeEof => 0,
            ProtocolError::Transport { errno, .. } => *errno,
            ProtocolError::Io(_) | ProtocolError::TlsFailed(_) => errno::EIO,
            _ => errno::EPROTO,
        }
    }
}

/// Why one command failed; the connection goes on unless it died too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct CommandError {
    /// The errno to report.
    pub errno: i32,
    /// What happened, for a human.
    pub message: String,
}

impl CommandError {
    pub(crate) fn new(errno: i32, message: impl Into<String>) -> Self {
        CommandError {
            errno,
            message: message.into(),
        }
    }

    pub(crate) fn proto(message: impl Into<String>) -> Self {
        Self::new(errno::EPROTO, message)
    }
}

/// An option the server answered with an error; negotiation may go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", FailureText(*.reply_type, .message))]
#[non_exhaustive]
pub struct OptionFailure {
    /// The `NBD_REP_ERR_*` reply type.
    pub reply_type: u32,
    /// The server's message (may be empty).
    pub message: String,
}

impl OptionFailure {
    /// The errno libnbd-style callers see for this refusal.
    pub fn errno(&self) -> i32 {
        use crate::consts::rep;
        match self.reply_type {
            rep::ERR_UNSUP => errno::ENOTSUP,
            rep::ERR_POLICY => errno::EPERM,
            rep::ERR_INVALID => errno::EINVAL,
            rep::ERR_PLATFORM => errno::ENOTSUP,
            rep::ERR_TLS_REQD => errno::ENOTSUP,
            rep::ERR_UNKNOWN => errno::ENOENT,
            rep::ERR_SHUTDOWN => errno::ESHUTDOWN,
            rep::ERR_BLOCK_SIZE_REQD => errno::EINVAL,
            rep::ERR_TOO_BIG => errno::ERANGE,
            rep::ERR_EXT_HEADER_REQD => errno::ENOTSUP,
            _ => errno::EINVAL,
        }
    }
}

/// How an [`OptionFailure`] reads: the reply type's name, then the
/// server's message if it sent one.
struct FailureText<'a>(u32, &'a String);

impl core::fmt::Display for FailureText<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(crate::wire::option::rep_error_name(self.0))?;
        if !self.1.is_empty() {
            write!(f, ": {}", self.1)?;
        }
        Ok(())
    }
}

/// Why a command or option was not accepted for sending. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The connection is not in a state that allows this.
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// The server did not advertise support (strict mode `COMMANDS`).
    #[error("server does not support {0}")]
    NotSupported(&'static str),
    /// Block status while no metadata context was negotiated (strict mode
    /// `COMMANDS`): `ENOTSUP`, as in libnbd 1.24.
    #[error("server does not support block status (no metadata context was negotiated)")]
    NoMetaContext,
    /// A write, trim or zero on a read-only export (strict mode `COMMANDS`).
    #[error("server does not support write operations")]
    ReadOnly,
    /// Flags not allowed for this command (strict mode `FLAGS`).
    #[error("invalid flags 0x{0:x} for this command")]
    BadFlags(u16),
    /// The request reaches past the end of the export (strict mode `BOUNDS`).
    #[error("request out of bounds")]
    OutOfBounds,
    /// A write, trim or zero that reaches past the end of the export
    /// (strict mode `BOUNDS`): `ENOSPC`, as libnbd reports it.
    #[error("request out of bounds")]
    OutOfBoundsWrite,
    /// Zero-length request (strict mode `ZERO_SIZE`).
    #[error("zero-length request")]
    ZeroSize,
    /// Offset or length not a multiple of the minimum block size (strict `ALIGN`).
    #[error("request is not aligned to the server's minimum block size {0}")]
    Unaligned(u32),
    /// The request is larger than allowed (strict `PAYLOAD`, or over 32 bits
    /// without extended headers).
    #[error("request too large")]
    TooLarge,
    /// The arguments are inconsistent (e.g. payload length differs from length).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// Opt mode against a server without fixed newstyle negotiation: only
    /// `NBD_OPT_EXPORT_NAME` (`opt_go`) and ending the connection are possible.
    #[error("server is not using fixed newstyle protocol")]
    NotFixedNewstyle,
    /// `NBD_CMD_DISC` was already queued: no command may follow it.
    #[error("cannot request more commands after NBD_CMD_DISC")]
    AfterDisconnect,
}

impl SubmitError {
    /// The errno libnbd reports for this refusal.
    pub fn errno(&self) -> i32 {
        match self {
            SubmitError::InvalidState(_) => errno::ENOTCONN,
            SubmitError::TooLarge => errno::ERANGE,
            SubmitError::ReadOnly => errno::EPERM,
            SubmitError::NotFixedNewstyle | SubmitError::NoMetaContext => errno::ENOTSUP,
            SubmitError::OutOfBounds => errno::EINVAL,
            SubmitError::OutOfBoundsWrite => errno::ENOSPC,
            _ => errno::EINVAL,
        }
    }
}
