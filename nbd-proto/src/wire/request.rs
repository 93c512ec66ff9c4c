//! Transmission requests: the compact 28-byte header and the extended 32-byte
//! header (with a 64-bit length), plus the block status payload.

use super::{Reader, WireError};
use crate::consts::{self, size};
use alloc::vec::Vec;
use bytes::BufMut;

/// A request header in either form.
///
/// With compact headers the length must fit in 32 bits; with extended headers
/// it is 64 bits, and for a request carrying a payload (WRITE, or any command
/// with `NBD_CMD_FLAG_PAYLOAD_LEN`) it is the payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`).
    pub command: u16,
    /// Opaque cookie the reply must echo.
    pub cookie: u64,
    /// Offset in the export.
    pub offset: u64,
    /// Length of the effect, or of the payload.
    pub length: u64,
}

impl RequestHeader {
    /// The encoded size for the given header style.
    pub const fn encoded_len(extended: bool) -> usize {
        if extended {
            size::EXTENDED_REQUEST
        } else {
            size::REQUEST
        }
    }

    /// Appends the header; a compact header needs `length` to fit in 32 bits.
    pub fn encode(&self, extended: bool, out: &mut impl BufMut) -> Result<(), WireError> {
        if extended {
            out.put_u32(consts::EXTENDED_REQUEST_MAGIC);
        } else {
            if self.length > u64::from(u32::MAX) {
                return Err(WireError::BadValue {
                    what: "compact request length",
                    value: self.length,
                });
            }
            out.put_u32(consts::REQUEST_MAGIC);
        }
        out.put_u16(self.flags);
        out.put_u16(self.command);
        out.put_u64(self.cookie);
        out.put_u64(self.offset);
        if extended {
            out.put_u64(self.length);
        } else {
            out.put_u32(self.length as u32);
        }
        Ok(())
    }

    /// Encodes into a fixed array; returns the array and how much of it is used.
    pub fn to_array(&self, extended: bool) -> Result<([u8; 32], usize), WireError> {
        let mut arr = [0u8; 32];
        let n = Self::encoded_len(extended);
        self.encode(extended, &mut &mut arr[..])?;
        Ok((arr, n))
    }

    /// Decodes a complete header: 28 bytes (compact) or 32 bytes (extended),
    /// told apart by the magic and checked against `extended`.
    pub fn decode(buf: &[u8], extended: bool) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, "request header");
        let magic = r.u32()?;
        let want = if extended {
            consts::EXTENDED_REQUEST_MAGIC
        } else {
            consts::REQUEST_MAGIC
        };
        if magic != want {
            return Err(WireError::BadMagic {
                what: "request",
                found: u64::from(magic),
            });
        }
        let flags = r.u16()?;
        let command = r.u16()?;
        let cookie = r.u64()?;
        let offset = r.u64()?;
        let length = if extended {
            r.u64()?
        } else {
            u64::from(r.u32()?)
        };
        r.finish()?;
        Ok(RequestHeader {
            flags,
            command,
            cookie,
            offset,
            length,
        })
    }
}

/// The payload of `NBD_CMD_BLOCK_STATUS` with `NBD_CMD_FLAG_PAYLOAD_LEN`
/// (extended headers): the effect length and the context ids to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStatusPayload {
    /// Length of the range to query.
    pub length: u64,
    /// The metadata context ids the client wants.
    pub ids: Vec<u32>,
}

impl BlockStatusPayload {
    /// Appends the payload.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(self.length);
        for id in &self.ids {
            out.put_u32(*id);
        }
    }

    /// Length of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        8 + 4 * self.ids.len()
    }

    /// Decodes a complete payload: 8 bytes then a whole number of 4-byte ids.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        if payload.len() < 8 || !(payload.len() - 8).is_multiple_of(4) {
            return Err(WireError::BadLength {
                what: "block status payload",
                len: payload.len() as u64,
            });
        }
        let mut r = Reader::new(payload, "block status payload");
        let length = r.u64()?;
        let mut ids = Vec::with_capacity(r.remaining() / 4);
        while r.remaining() > 0 {
            ids.push(r.u32()?);
        }
        Ok(BlockStatusPayload { length, ids })
    }
}

/// The symbolic name of a command, for messages.
pub fn cmd_name(command: u16) -> &'static str {
    use consts::cmd;
    match command {
        cmd::READ => "NBD_CMD_READ",
        cmd::WRITE => "NBD_CMD_WRITE",
        cmd::DISC => "NBD_CMD_DISC",
        cmd::FLUSH => "NBD_CMD_FLUSH",
        cmd::TRIM => "NBD_CMD_TRIM",
        cmd::CACHE => "NBD_CMD_CACHE",
        cmd::WRITE_ZEROES => "NBD_CMD_WRITE_ZEROES",
        cmd::BLOCK_STATUS => "NBD_CMD_BLOCK_STATUS",
        cmd::RESIZE => "NBD_CMD_RESIZE",
        _ => "unknown command",
    }
}
