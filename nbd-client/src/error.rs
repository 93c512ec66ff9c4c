//! The crate's error type.

use nbd_proto::client::{OptionFailure, ProtocolError, SubmitError};
use std::io;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting, or the socket, failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The connection failed (the server closed it, broke the protocol or
    /// refused the export); it cannot be used any more.
    #[error("NBD connection failed: {0}")]
    Connection(#[from] ProtocolError),
    /// The connection was closed by [`disconnect`](crate::blocking::Client::disconnect)
    /// or the server after an orderly end.
    #[error("NBD connection is closed")]
    Closed,
    /// The client refused to send the request (wrong state, out of bounds,
    /// unsupported by the server, too large ...). Nothing was sent.
    #[error("request not sent: {0}")]
    Submit(#[from] SubmitError),
    /// The server failed the command; the connection goes on.
    #[error("NBD command failed: {message} (errno {errno})")]
    Command {
        /// The errno the server reported (`EIO`, `EINVAL`, `ENOSPC` ...).
        errno: i32,
        /// What happened.
        message: String,
        /// For a read whose reply named the failing range: where it starts
        /// in the export.
        offset: Option<u64>,
    },
    /// The server refused an option in opt mode; negotiation goes on.
    #[error("NBD server refused the option: {0}")]
    Option(OptionFailure),
    /// The metadata context was not negotiated (see
    /// [`Config::meta_context`](crate::Config::meta_context)).
    #[error("metadata context {0:?} was not negotiated")]
    NoMetaContext(String),
    /// No command with this id is waiting (already waited for, or never
    /// submitted on this client).
    #[error("no such command")]
    UnknownCommand,
    /// The call makes no sense in the connection's state (e.g. waiting
    /// with nothing in flight).
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
}

impl Error {
    /// The errno that best describes the failure, as libnbd would report it.
    pub fn errno(&self) -> i32 {
        use nbd_proto::client::errno;
        match self {
            Error::Io(e) => e.raw_os_error().unwrap_or(errno::EIO),
            Error::Connection(e) => e.errno(),
            Error::Closed => errno::ENOTCONN,
            Error::Submit(e) => e.errno(),
            Error::Command { errno, .. } => *errno,
            Error::Option(f) => f.errno(),
            Error::NoMetaContext(_) => errno::ENOTSUP,
            Error::UnknownCommand | Error::InvalidState(_) => errno::EINVAL,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io(e) => e,
            other => {
                let kind = io::Error::from_raw_os_error(other.errno()).kind();
                io::Error::new(kind, other)
            }
        }
    }
}
