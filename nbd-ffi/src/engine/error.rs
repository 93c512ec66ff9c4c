//! How the engine reports a failure: as a typed [`Cause`] (defined in
//! `errors.rs`, which alone turns it into errno and message), built here
//! from what failed.

pub(crate) use crate::errors::Cause as EngineError;
use std::io;

impl EngineError {
    /// A failed system call: errno and `what` (`connect: Connection
    /// refused` once it reaches C). An error without an errno keeps its
    /// own text and reports `EIO`.
    pub(crate) fn io(e: &io::Error, what: &str) -> Self {
        match e.raw_os_error() {
            Some(errno) => EngineError::Io {
                op: what.to_string(),
                errno,
            },
            None => EngineError::new(libc::EIO, format!("{what}: {e}")),
        }
    }

    /// Why the protocol client died: a failed system call of the transport
    /// keeps its errno and operation, anything else is the protocol
    /// error itself.
    pub(crate) fn from_protocol(why: &nbd_proto::client::ProtocolError) -> Self {
        match why {
            nbd_proto::client::ProtocolError::Transport { op, errno } => EngineError::Io {
                op: (*op).to_string(),
                errno: *errno,
            },
            other => EngineError::Protocol(other.clone()),
        }
    }
}
