//! The connection state of a handle, the state rules of each API call, and
//! the exports that report the state (`nbd_aio_is_*`,
//! `nbd_connection_state`).
//!
//! libnbd's state machine has many fine-grained states; the C API only ever
//! shows which of these seven groups a handle is in, and the man pages state
//! each call's permitted groups ("HANDLE STATE"). Until the connection engine
//! lands, handles stay in `State::Created`.

use std::ffi::CStr;

/// The seven states a handle can be seen in from C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Just created, not yet connecting.
    Created,
    /// Opening the socket or connecting to the server.
    Connecting,
    /// In the handshake, including opt mode's option negotiation.
    Negotiating,
    /// Connected, no request being sent and no reply being received
    /// (commands may be in flight, waiting for their replies).
    Ready,
    /// Connected, a request being sent or a reply being received.
    Processing,
    /// Failed; can only be closed.
    Dead,
    /// Shut down cleanly.
    Closed,
}

impl State {
    /// The short name used in error messages.
    pub(crate) fn short_name(self) -> &'static str {
        match self {
            State::Created => "START",
            State::Connecting => "CONNECT",
            State::Negotiating => "NEGOTIATING",
            State::Ready => "READY",
            State::Processing => "PROCESSING",
            State::Dead => "DEAD",
            State::Closed => "CLOSED",
        }
    }

    /// The text of `nbd_connection_state`: the short name and a description.
    pub(crate) fn description(self) -> &'static CStr {
        let text: &'static [u8] = match self {
            State::Created => b"START: handle created, no connection attempted yet\0",
            State::Connecting => b"CONNECT: setting up the connection to the server\0",
            State::Negotiating => b"NEGOTIATING: handshake and option negotiation\0",
            State::Ready => b"READY: connected, waiting for a command\0",
            State::Processing => b"PROCESSING: connected, sending a request or receiving a reply\0",
            State::Dead => b"DEAD: the connection failed; the handle can only be closed\0",
            State::Closed => b"CLOSED: the connection was shut down\0",
        };
        CStr::from_bytes_with_nul(text).unwrap_or_default()
    }

    /// libnbd's "invalid state" error for a call that needs a handle that
    /// is `allowed` ("connected with the server"): `ENOTCONN` while newly
    /// created, `EINVAL` otherwise.
    pub(crate) fn refusal(self, allowed: &'static str) -> crate::errors::Error {
        crate::errors::Error::InvalidState {
            state: self.short_name(),
            created: self == State::Created,
            allowed,
        }
    }

    /// The states as bits, for [`Permitted`].
    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The set of states in which an API call is allowed, with the words used
/// to describe it in the error message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permitted {
    bits: u8,
    words: &'static str,
}

impl Permitted {
    const fn new(states: &[State], words: &'static str) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < states.len() {
            bits |= states[i].bit();
            i += 1;
        }
        Permitted { bits, words }
    }

    /// "newly created": settings that shape the connection.
    pub(crate) const CREATED: Permitted = Permitted::new(&[State::Created], "newly created");
    /// "newly created, or negotiating": what opt mode may still change.
    pub(crate) const CREATED_OR_NEGOTIATING: Permitted = Permitted::new(
        &[State::Created, State::Negotiating],
        "newly created, or negotiating",
    );
    /// "negotiating": the `opt_*` calls.
    pub(crate) const NEGOTIATING: Permitted = Permitted::new(&[State::Negotiating], "negotiating");
    /// "negotiating, or connected with the server": `nbd_shutdown`.
    pub(crate) const NEGOTIATING_OR_CONNECTED: Permitted = Permitted::new(
        &[State::Negotiating, State::Ready, State::Processing],
        "negotiating, or connected with the server",
    );
    /// "connected with the server": data commands.
    pub(crate) const CONNECTED: Permitted = Permitted::new(
        &[State::Ready, State::Processing],
        "connected with the server",
    );
    /// "negotiating, or connected with the server, or shut down": what the
    /// server told us during the handshake.
    pub(crate) const HANDSHAKE_KNOWN: Permitted = Permitted::new(
        &[
            State::Negotiating,
            State::Ready,
            State::Processing,
            State::Closed,
        ],
        "negotiating, or connected with the server, or shut down",
    );
    /// "connected with the server, or shut down, or dead": `nbd_aio_in_flight`.
    pub(crate) const CONNECTED_OR_OVER: Permitted = Permitted::new(
        &[State::Ready, State::Processing, State::Closed, State::Dead],
        "connected with the server, or shut down, or dead",
    );
    /// Every state but "newly created": `nbd_get_uri`.
    pub(crate) const STARTED: Permitted = Permitted::new(
        &[
            State::Connecting,
            State::Negotiating,
            State::Ready,
            State::Processing,
            State::Closed,
            State::Dead,
        ],
        "connecting, or negotiating, or connected with the server, or shut down, or dead",
    );

    /// Fails with libnbd's "invalid state" error unless `state` is allowed:
    /// `ENOTCONN` while newly created, `EINVAL` otherwise.
    pub(crate) fn check(self, state: State) -> Result<(), crate::errors::Error> {
        if self.bits & state.bit() != 0 {
            Ok(())
        } else {
            Err(state.refusal(self.words))
        }
    }
}

pub use crate::exports::state::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permitted_sets() {
        assert!(Permitted::CREATED.check(State::Created).is_ok());
        assert!(Permitted::CREATED.check(State::Dead).is_err());
        assert!(Permitted::CONNECTED.check(State::Processing).is_ok());
        assert!(Permitted::STARTED.check(State::Created).is_err());
        assert!(Permitted::HANDSHAKE_KNOWN.check(State::Closed).is_ok());
        let err = Permitted::NEGOTIATING.check(State::Created).unwrap_err();
        assert_eq!(err.errno(), libc::ENOTCONN);
    }

    #[test]
    fn descriptions_start_with_short_name() {
        for s in [
            State::Created,
            State::Connecting,
            State::Negotiating,
            State::Ready,
            State::Processing,
            State::Dead,
            State::Closed,
        ] {
            let d = s.description().to_str().unwrap();
            assert!(d.starts_with(&format!("{}: ", s.short_name())), "{d}");
        }
    }
}
