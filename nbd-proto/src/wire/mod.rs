//! Encoding and decoding of every NBD message, in both directions.
//!
//! Each message is a plain struct with `encode` (append to any [`BufMut`]) and
//! `decode` (parse one *complete* message from a byte slice). Framing, that is
//! knowing how many bytes make up the next message, is the job of the state
//! machines in [`crate::client`] and [`crate::server`]; the functions here never
//! see a partial message, never panic, and never allocate more than the input
//! they were given.
//!
//! The families follow the protocol phases: [`handshake`] (greetings and client
//! flags), [`option`] (option requests, option replies and their payloads),
//! [`request`] (transmission requests, compact and extended) and [`reply`]
//! (simple replies, structured and extended chunk headers and chunk payloads).

pub mod handshake;
pub mod option;
pub mod reply;
pub mod request;

use alloc::string::String;
use alloc::vec::Vec;
use bytes::BufMut;

/// Why a complete message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A magic number was not the one this message must start with.
    #[error("bad {what} magic 0x{found:x}")]
    BadMagic {
        /// Which magic was being checked.
        what: &'static str,
        /// The value found on the wire.
        found: u64,
    },
    /// The message is shorter than its fixed part, or its length is not one the
    /// specification allows for this message.
    #[error("{what} has invalid length {len}")]
    BadLength {
        /// Which message or field.
        what: &'static str,
        /// The length that was seen.
        len: u64,
    },
    /// A string is not UTF-8, contains NUL, or is longer than 4096 bytes.
    #[error("{what} is not a valid protocol string")]
    BadString {
        /// Which string.
        what: &'static str,
    },
    /// A field holds a value the specification forbids.
    #[error("invalid {what}: {value}")]
    BadValue {
        /// Which field.
        what: &'static str,
        /// The value that was seen.
        value: u64,
    },
}

/// A bounds-checked big-endian cursor over one complete message.
///
/// Every getter fails with [`WireError::BadLength`] instead of panicking when the
/// message is too short.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
    total: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader {
            buf,
            what,
            total: buf.len(),
        }
    }

    fn short(&self) -> WireError {
        WireError::BadLength {
            what: self.what,
            len: self.total as u64,
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.short())
        }
    }

    /// A string prefixed by a 32-bit length.
    pub(crate) fn string32(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = self.u32()?;
        if len as usize > crate::consts::limits::MAX_STRING {
            return Err(WireError::BadLength {
                what,
                len: u64::from(len),
            });
        }
        let raw = self.bytes(len as usize)?;
        to_string(raw, what)
    }
}

/// Validates a protocol string: UTF-8, no NUL, at most 4096 bytes.
pub(crate) fn to_string(raw: &[u8], what: &'static str) -> Result<String, WireError> {
    if raw.len() > crate::consts::limits::MAX_STRING || raw.contains(&0) {
        return Err(WireError::BadString { what });
    }
    core::str::from_utf8(raw)
        .map(String::from)
        .map_err(|_| WireError::BadString { what })
}

/// Converts an untrusted human-readable message, replacing what is not text.
pub(crate) fn to_message(raw: &[u8]) -> String {
    let raw = &raw[..raw.len().min(crate::consts::limits::MAX_STRING)];
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c == '\0' { '?' } else { c })
        .collect()
}

/// Appends a string prefixed by its 32-bit length.
pub(crate) fn put_string32(out: &mut impl BufMut, s: &str) {
    out.put_u32(s.len() as u32);
    out.put_slice(s.as_bytes());
}

/// Encodes a message into a fresh vector; a convenience for tests and tools.
pub fn to_vec(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    encode(&mut v);
    v
}
