//! How an engine failure is reported: errno and message.

use std::io;

/// How an engine failure is reported: errno and message.
#[derive(Debug, Clone)]
pub(crate) struct EngineError {
    pub(crate) errno: i32,
    pub(crate) message: String,
}

impl EngineError {
    pub(crate) fn new(errno: i32, message: impl Into<String>) -> Self {
        EngineError {
            errno,
            message: message.into(),
        }
    }

    /// A failed system call: the message is `what` alone, since the
    /// errno's text is appended where the message reaches C (errors.rs),
    /// as libnbd formats it (`connect: Connection refused`). An error
    /// without an errno keeps its own text and reports `EIO`.
    pub(crate) fn io(e: &io::Error, what: &str) -> Self {
        match e.raw_os_error() {
            Some(errno) => EngineError::new(errno, what),
            None => EngineError::new(libc::EIO, format!("{what}: {e}")),
        }
    }

    /// Why the protocol client died, as errno and message.
    pub(crate) fn from_protocol(why: &nbd_proto::client::ProtocolError) -> Self {
        match why {
            nbd_proto::client::ProtocolError::Transport { op, errno } => {
                EngineError::new(*errno, *op)
            }
            other => EngineError::new(other.errno(), other.to_string()),
        }
    }
}
