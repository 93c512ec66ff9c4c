//! Errors: the one internal error type with the typed causes the
//! connection engine reports (`Cause`), their one mapping to errno and
//! message (`message`), and the per-thread "last error" that
//! `nbd_get_error` and `nbd_get_errno` read.
//!
//! Every failing export ends in `record`, called by the panic boundary: the
//! message is prefixed with the API function's name and, when there is an
//! errno, followed by its `strerror` text, the shape libnbd's messages have
//! (`nbd_set_export_name: ...: Bad address`, `nbd_pread: recv: Connection
//! reset by peer`). A successful call leaves the last error alone, as
//! libnbd does.
//!
//! This module depends on nothing else of the crate (the engine builds
//! `Cause`s; the state rules build `Error::InvalidState`).

use nbd_proto::client::{ProtocolError, SubmitError};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::fmt;

/// Why the connection engine failed, by cause: what the engine (and the
/// calls that drive it) report instead of deciding an errno and a text
/// themselves. [`Cause::errno`] and the `Display` text are read only by
/// [`message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// There is no connection for this call (`ENOTCONN`); the text as is.
    NotConnected(&'static str),
    /// The connection's state does not allow the call (`EINVAL`); the
    /// text as is.
    InvalidState(&'static str),
    /// A system call failed: the message is `op: <strerror>`
    /// (`connect: Connection refused`).
    Io {
        /// What failed ("connect", "recv", "TLS PSK file /x").
        op: String,
        /// Its errno.
        errno: c_int,
    },
    /// A failure libnbd reports with errno 0: a name that does not
    /// resolve, a failed TLS handshake.
    NoErrno(String),
    /// The protocol client died (its errno: `EPROTO` for a broken
    /// protocol, 0 for a hang-up during the handshake, ...).
    Protocol(ProtocolError),
    /// The protocol client refused a request before sending it.
    Submit(SubmitError),
    /// A command completed with an error: `name: detail`.
    Command {
        /// The command ("pread").
        name: &'static str,
        /// The errno it failed with.
        errno: c_int,
        /// What happened ("command failed").
        detail: &'static str,
    },
    /// The server does not offer something (`ENOTSUP`).
    NotSupported(String),
    /// A value does not fit the C type it is returned in (`EOVERFLOW`).
    Overflow(String),
    /// Any other failure, with its errno and text.
    Other {
        /// The errno to report.
        errno: c_int,
        /// What happened.
        message: String,
    },
}

impl Cause {
    /// A failure with `errno` described by `message` (no more specific
    /// cause applies).
    pub(crate) fn new(errno: c_int, message: impl Into<String>) -> Self {
        Cause::Other {
            errno,
            message: message.into(),
        }
    }

    /// The errno this cause reports.
    pub(crate) fn errno(&self) -> c_int {
        match self {
            Cause::NotConnected(_) => libc::ENOTCONN,
            Cause::InvalidState(_) => libc::EINVAL,
            Cause::Io { errno, .. } | Cause::Command { errno, .. } | Cause::Other { errno, .. } => {
                *errno
            }
            Cause::NoErrno(_) => 0,
            Cause::Protocol(p) => p.errno(),
            Cause::Submit(s) => s.errno(),
            Cause::NotSupported(_) => libc::ENOTSUP,
            Cause::Overflow(_) => libc::EOVERFLOW,
        }
    }

    /// The text, without the function name and the errno's description
    /// (which [`message`] adds).
    pub(crate) fn text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NotConnected(t) | Cause::InvalidState(t) => f.write_str(t),
            Cause::Io { op, .. } => f.write_str(op),
            Cause::NoErrno(t)
            | Cause::NotSupported(t)
            | Cause::Overflow(t)
            | Cause::Other { message: t, .. } => f.write_str(t),
            Cause::Protocol(p) => write!(f, "{p}"),
            Cause::Submit(s) => write!(f, "{s}"),
            Cause::Command { name, detail, .. } => write!(f, "{name}: {detail}"),
        }
    }
}

/// Why an API call failed. [`Error::errno`] and the `Display` text are the
/// only ways this reaches C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// A pointer parameter that must not be NULL was NULL.
    NullPointer {
        /// The parameter's name in the C prototype.
        param: &'static str,
    },
    /// The call is not allowed in the handle's current state.
    InvalidState {
        /// Where the handle is: the state's short name ("READY").
        state: &'static str,
        /// Whether the handle is newly created (libnbd then says `ENOTCONN`).
        created: bool,
        /// Where it would have to be, in words ("newly created, or negotiating").
        allowed: &'static str,
    },
    /// An enumerated parameter had a value outside its set.
    InvalidValue {
        /// The parameter's name.
        param: &'static str,
        /// What the caller passed.
        value: i64,
    },
    /// A bitmask parameter had bits this library does not know.
    UnknownFlags {
        /// The parameter's name.
        param: &'static str,
        /// The unknown bits alone.
        bits: u32,
    },
    /// A string is longer than the NBD protocol allows.
    NameTooLong {
        /// What kind of string ("export name").
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// An index is past the end of a list.
    OutOfRange {
        /// What was being indexed.
        what: &'static str,
        /// The index asked for.
        index: usize,
        /// How many entries there are.
        len: usize,
    },
    /// Another invalid-argument case, described in full by the text.
    Invalid(String),
    /// A URI feature the handle's settings forbid (`nbd_set_uri_allow_*`).
    NotPermitted(String),
    /// A system call failed.
    Os {
        /// What failed ("getlogin_r").
        context: &'static str,
        /// The errno it reported.
        errno: c_int,
    },
    /// The connection or a command failed, for the typed cause the engine
    /// reported (the server's error, a protocol violation, a system call).
    Engine(Cause),
    /// A Rust panic was caught at the C boundary.
    Panic,
    /// An earlier panic left the handle's lock poisoned.
    Poisoned,
}

impl Error {
    /// The errno value this error reports through `nbd_get_errno`.
    pub(crate) fn errno(&self) -> c_int {
        match self {
            Error::NullPointer { .. } => libc::EFAULT,
            // libnbd tells "not connected yet" apart from other bad states.
            Error::InvalidState { created: true, .. } => libc::ENOTCONN,
            Error::InvalidState { .. } => libc::EINVAL,
            Error::InvalidValue { .. }
            | Error::UnknownFlags { .. }
            | Error::OutOfRange { .. }
            | Error::Invalid(_) => libc::EINVAL,
            Error::NameTooLong { .. } => libc::ENAMETOOLONG,
            Error::NotPermitted(_) => libc::EPERM,
            Error::Os { errno, .. } => *errno,
            Error::Engine(cause) => cause.errno(),
            Error::Panic => libc::EIO,
            Error::Poisoned => libc::ENOTRECOVERABLE,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NullPointer { param } => write!(f, "{param} must not be NULL"),
            Error::InvalidState { state, allowed, .. } => write!(
                f,
                "invalid state: {state}: this call needs a handle that is {allowed}"
            ),
            Error::InvalidValue { param, value } => {
                write!(f, "{param}: value {value} is not one of the allowed values")
            }
            Error::UnknownFlags { param, bits } => {
                write!(f, "{param}: unknown flag bits 0x{bits:x}")
            }
            Error::NameTooLong { what, len } => write!(
                f,
                "{what} is {len} bytes long, more than the NBD protocol's limit of {}",
                crate::constants::MAX_STRING_LEN
            ),
            Error::OutOfRange { what, index, len } => {
                write!(f, "{what} index {index} is out of range (there are {len})")
            }
            Error::Invalid(text) | Error::NotPermitted(text) => f.write_str(text),
            Error::Os { context, .. } => f.write_str(context),
            Error::Engine(cause) => write!(f, "{cause}"),
            Error::Panic => f.write_str("internal error: panic"),
            Error::Poisoned => {
                f.write_str("internal error: an earlier panic left this handle unusable")
            }
        }
    }
}

impl From<Cause> for Error {
    fn from(cause: Cause) -> Self {
        Error::Engine(cause)
    }
}

/// Fails with `EINVAL` if `flags` has bits outside `mask`.
pub(crate) fn check_flags(param: &'static str, flags: u32, mask: u32) -> Result<(), Error> {
    match flags & !mask {
        0 => Ok(()),
        bits => Err(Error::UnknownFlags { param, bits }),
    }
}

/// The errno and full message for `error` raised by the API function
/// `fname`: `"<fname>: <text>"`, plus `": <strerror>"` when there is an
/// errno. This is the single place where an [`Error`] (and so any engine
/// [`Cause`]) becomes what C sees.
pub(crate) fn message(fname: &str, error: &Error) -> (c_int, String) {
    let errno = error.errno();
    let mut text = format!("{fname}: {error}");
    if errno != 0 {
        text.push_str(": ");
        text.push_str(&strerror(errno));
    }
    (errno, text)
}

/// The system's description of `errno`.
fn strerror(errno: c_int) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for buf.len() bytes; the XSI strerror_r that the
    // libc crate binds writes at most that many bytes, NUL included.
    let rc = unsafe { libc::strerror_r(errno, buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
    if rc != 0 {
        return format!("error {errno}");
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The last error of one thread.
struct LastError {
    errno: c_int,
    message: Option<CString>,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const {
        RefCell::new(LastError { errno: 0, message: None })
    };
}

/// Records `error`, raised by `fname`, as this thread's last error.
pub(crate) fn record(fname: &str, error: &Error) {
    let (errno, text) = message(fname, error);
    record_text(errno, text);
}

/// Stores an already formatted message (see [`message`]).
pub(crate) fn record_text(errno: c_int, text: String) {
    // A message cannot hold a NUL for C; none of ours does, but a name taken
    // from the caller could in principle end up in one, so cut it there.
    let bytes = text.into_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let message = CString::new(&bytes[..end]).ok();
    // try_with: during thread teardown the slot may be gone; losing the
    // message then is better than aborting.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            slot.errno = errno;
            slot.message = message;
        }
    });
}

/// Returns the most recent error message of the calling thread, or NULL if
/// no call in this thread has failed yet.
///
/// The string belongs to the library and stays valid until the next failing
/// libnbd call in the same thread; copy it to keep it.
///
/// # Safety
///
/// Always safe to call.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_error() -> *const c_char {
    ffi_boundary!("nbd_get_error", {
        let ptr = LAST_ERROR
            .try_with(|slot| {
                slot.try_borrow()
                    .ok()
                    .and_then(|slot| slot.message.as_ref().map(|m| m.as_ptr()))
            })
            .ok()
            .flatten();
        Ok(ptr.unwrap_or(std::ptr::null()))
    })
}

/// Returns the errno of the most recent failing call in this thread, or 0.
///
/// # Safety
///
/// Always safe to call.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_errno() -> c_int {
    ffi_boundary!("nbd_get_errno", {
        Ok(LAST_ERROR
            .try_with(|slot| slot.try_borrow().map(|slot| slot.errno).unwrap_or(0))
            .unwrap_or(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_function_name_and_strerror() {
        let (errno, text) = message("nbd_x", &Error::NullPointer { param: "name" });
        assert_eq!(errno, libc::EFAULT);
        assert_eq!(text, "nbd_x: name must not be NULL: Bad address");
    }

    #[test]
    fn state_errno_depends_on_state() {
        let created = Error::InvalidState {
            state: "START",
            created: true,
            allowed: "ready",
        };
        let dead = Error::InvalidState {
            state: "DEAD",
            created: false,
            allowed: "ready",
        };
        assert_eq!(created.errno(), libc::ENOTCONN);
        assert_eq!(dead.errno(), libc::EINVAL);
    }

    #[test]
    fn causes_map_to_libnbd_errnos_and_texts() {
        let io = Error::from(Cause::Io {
            op: "recv".into(),
            errno: libc::ECONNRESET,
        });
        assert_eq!(
            message("nbd_pread", &io),
            (
                libc::ECONNRESET,
                "nbd_pread: recv: Connection reset by peer".to_string()
            )
        );
        let hs = Error::from(Cause::Protocol(ProtocolError::HandshakeEof));
        assert_eq!(
            message("nbd_connect_unix", &hs),
            (
                0,
                "nbd_connect_unix: recv: server disconnected unexpectedly".to_string()
            )
        );
        let cmd = Error::from(Cause::Command {
            name: "pwrite",
            errno: libc::EIO,
            detail: "command failed",
        });
        assert_eq!(
            message("nbd_pwrite", &cmd).1,
            "nbd_pwrite: pwrite: command failed: Input/output error"
        );
        let sub = Error::from(Cause::Submit(SubmitError::NoMetaContext));
        assert_eq!(sub.errno(), libc::ENOTSUP);
        assert_eq!(Error::from(Cause::NoErrno("x".into())).errno(), 0);
        assert_eq!(
            message("f", &Error::from(Cause::NoErrno("x".into()))).1,
            "f: x"
        );
    }

    #[test]
    fn last_error_round_trip() {
        record("nbd_y", &Error::NotPermitted("no nbds here".into()));
        // SAFETY: both functions only read this thread's last error.
        let (errno, msg) = unsafe { (nbd_get_errno(), nbd_get_error()) };
        assert_eq!(errno, libc::EPERM);
        // SAFETY: nbd_get_error returned a string owned by this thread's slot,
        // valid until the next error is recorded.
        let msg = unsafe { std::ffi::CStr::from_ptr(msg) };
        assert!(msg.to_str().unwrap().starts_with("nbd_y: no nbds here"));
    }
}
