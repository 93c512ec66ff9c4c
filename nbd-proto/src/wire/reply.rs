//! Transmission replies: simple replies, structured (20-byte) and extended
//! (32-byte) chunk headers, and the payloads of every chunk type.

use super::{to_message, Reader, WireError};
use crate::consts::{self, reply_flags, reply_type, size};
use alloc::string::String;
use alloc::vec::Vec;
use bytes::BufMut;

/// Which reply header a 32-bit magic announces, and so how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Simple reply, 16 bytes.
    Simple,
    /// Structured chunk, 20 bytes.
    Structured,
    /// Extended chunk, 32 bytes.
    Extended,
}

impl ReplyKind {
    /// Classifies a magic; `None` when it is no reply magic at all.
    pub fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            consts::SIMPLE_REPLY_MAGIC => Some(ReplyKind::Simple),
            consts::STRUCTURED_REPLY_MAGIC => Some(ReplyKind::Structured),
            consts::EXTENDED_REPLY_MAGIC => Some(ReplyKind::Extended),
            _ => None,
        }
    }

    /// Length of this header on the wire.
    pub fn header_len(self) -> usize {
        match self {
            ReplyKind::Simple => size::SIMPLE_REPLY,
            ReplyKind::Structured => size::STRUCTURED_REPLY,
            ReplyKind::Extended => size::EXTENDED_REPLY,
        }
    }
}

/// A simple reply: an error code and the cookie (READ data may follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    /// `NBD_E*` error, 0 on success.
    pub error: u32,
    /// The request's cookie.
    pub cookie: u64,
}

impl SimpleReply {
    /// Appends the 16-byte header.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32(consts::SIMPLE_REPLY_MAGIC);
        out.put_u32(self.error);
        out.put_u64(self.cookie);
    }
}

/// A structured or extended reply chunk header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Reply flags (`NBD_REPLY_FLAG_DONE`).
    pub flags: u16,
    /// Chunk type (`NBD_REPLY_TYPE_*`).
    pub chunk_type: u16,
    /// The request's cookie.
    pub cookie: u64,
    /// Extended headers only: the offset of the request being answered.
    pub offset: Option<u64>,
    /// Payload length (32 bits unless extended).
    pub length: u64,
}

impl ChunkHeader {
    /// Whether this is the last chunk of its reply.
    pub fn is_done(&self) -> bool {
        self.flags & reply_flags::DONE != 0
    }

    /// Whether the type has the error bit.
    pub fn is_error(&self) -> bool {
        self.chunk_type & reply_type::FLAG_ERROR != 0
    }

    /// Appends the header: extended when `offset` is `Some`, structured
    /// otherwise (whose length must then fit in 32 bits).
    pub fn encode(&self, out: &mut impl BufMut) -> Result<(), WireError> {
        match self.offset {
            Some(offset) => {
                out.put_u32(consts::EXTENDED_REPLY_MAGIC);
                out.put_u16(self.flags);
                out.put_u16(self.chunk_type);
                out.put_u64(self.cookie);
                out.put_u64(offset);
                out.put_u64(self.length);
            }
            None => {
                let len = u32::try_from(self.length).map_err(|_| WireError::BadValue {
                    what: "structured chunk length",
                    value: self.length,
                })?;
                out.put_u32(consts::STRUCTURED_REPLY_MAGIC);
                out.put_u16(self.flags);
                out.put_u16(self.chunk_type);
                out.put_u64(self.cookie);
                out.put_u32(len);
            }
        }
        Ok(())
    }
}

/// Any reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// A simple reply.
    Simple(SimpleReply),
    /// A structured or extended chunk.
    Chunk(ChunkHeader),
}

impl ReplyHeader {
    /// The cookie this reply answers.
    pub fn cookie(&self) -> u64 {
        match self {
            ReplyHeader::Simple(s) => s.cookie,
            ReplyHeader::Chunk(c) => c.cookie,
        }
    }

    /// Appends the header.
    pub fn encode(&self, out: &mut impl BufMut) -> Result<(), WireError> {
        match self {
            ReplyHeader::Simple(s) => {
                s.encode(out);
                Ok(())
            }
            ReplyHeader::Chunk(c) => c.encode(out),
        }
    }

    /// Decodes a complete header (16, 20 or 32 bytes, per its magic).
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, "reply header");
        let magic = r.u32()?;
        let kind = ReplyKind::from_magic(magic).ok_or(WireError::BadMagic {
            what: "reply",
            found: u64::from(magic),
        })?;
        if buf.len() != kind.header_len() {
            return Err(WireError::BadLength {
                what: "reply header",
                len: buf.len() as u64,
            });
        }
        Ok(match kind {
            ReplyKind::Simple => ReplyHeader::Simple(SimpleReply {
                error: r.u32()?,
                cookie: r.u64()?,
            }),
            ReplyKind::Structured => ReplyHeader::Chunk(ChunkHeader {
                flags: r.u16()?,
                chunk_type: r.u16()?,
                cookie: r.u64()?,
                offset: None,
                length: u64::from(r.u32()?),
            }),
            ReplyKind::Extended => ReplyHeader::Chunk(ChunkHeader {
                flags: r.u16()?,
                chunk_type: r.u16()?,
                cookie: r.u64()?,
                offset: Some(r.u64()?),
                length: r.u64()?,
            }),
        })
    }
}

/// The `NBD_REPLY_TYPE_OFFSET_HOLE` payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetHole {
    /// Offset of the hole in the export.
    pub offset: u64,
    /// Length of the hole; never zero.
    pub length: u32,
}

impl OffsetHole {
    /// Encoded payload length.
    pub const LEN: usize = 12;

    /// Appends the payload.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(self.offset);
        out.put_u32(self.length);
    }

    /// Decodes a complete 12-byte payload.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "hole chunk");
        let h = OffsetHole {
            offset: r.u64()?,
            length: r.u32()?,
        };
        r.finish()?;
        if h.length == 0 {
            return Err(WireError::BadValue {
                what: "hole length",
                value: 0,
            });
        }
        Ok(h)
    }
}

/// One block status descriptor, widened to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length of the extent.
    pub length: u64,
    /// Status flags (`NBD_STATE_*` for `base:allocation`).
    pub flags: u64,
}

/// A `NBD_REPLY_TYPE_BLOCK_STATUS` or `_EXT` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockStatus {
    /// The metadata context these extents describe.
    pub context_id: u32,
    /// The extents, in order from the request offset.
    pub extents: Vec<Extent>,
}

impl BlockStatus {
    /// Encoded payload length in the compact (`wide == false`) or extended form.
    pub fn encoded_len(&self, wide: bool) -> usize {
        if wide {
            8 + 16 * self.extents.len()
        } else {
            4 + 8 * self.extents.len()
        }
    }

    /// Appends the payload in the compact or extended form. Compact
    /// descriptors carry the low 32 bits of each value.
    pub fn encode(&self, wide: bool, out: &mut impl BufMut) {
        out.put_u32(self.context_id);
        if wide {
            out.put_u32(self.extents.len() as u32);
        }
        for e in &self.extents {
            if wide {
                out.put_u64(e.length);
                out.put_u64(e.flags);
            } else {
                out.put_u32(e.length as u32);
                out.put_u32(e.flags as u32);
            }
        }
    }

    /// Decodes a complete payload. The compact form is `4 + 8n` bytes, the
    /// extended form `8 + 16n` with `n` also given in its count field; at least
    /// one extent is required.
    pub fn decode(payload: &[u8], wide: bool) -> Result<Self, WireError> {
        let (prefix, each) = if wide { (8, 16) } else { (4, 8) };
        let bad = || WireError::BadLength {
            what: "block status chunk",
            len: payload.len() as u64,
        };
        if payload.len() < prefix + each || !(payload.len() - prefix).is_multiple_of(each) {
            return Err(bad());
        }
        let n = (payload.len() - prefix) / each;
        let mut r = Reader::new(payload, "block status chunk");
        let context_id = r.u32()?;
        if wide {
            let count = r.u32()?;
            if count as usize != n {
                return Err(WireError::BadValue {
                    what: "block status descriptor count",
                    value: u64::from(count),
                });
            }
        }
        let mut extents = Vec::with_capacity(n);
        for _ in 0..n {
            extents.push(if wide {
                Extent {
                    length: r.u64()?,
                    flags: r.u64()?,
                }
            } else {
                Extent {
                    length: u64::from(r.u32()?),
                    flags: u64::from(r.u32()?),
                }
            });
        }
        Ok(BlockStatus {
            context_id,
            extents,
        })
    }
}

/// A `NBD_REPLY_TYPE_ERROR` or `_ERROR_OFFSET` payload, or the error part of an
/// unknown error chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorChunk {
    /// `NBD_E*` error; zero is a protocol violation the client maps to EIO.
    pub error: u32,
    /// Human-readable message (maybe empty).
    pub message: String,
    /// For `ERROR_OFFSET`: where in the request the error is.
    pub offset: Option<u64>,
}

impl ErrorChunk {
    /// Encoded payload length.
    pub fn encoded_len(&self) -> usize {
        6 + self.message.len() + if self.offset.is_some() { 8 } else { 0 }
    }

    /// Appends the payload; the chunk type must be `ERROR_OFFSET` exactly when
    /// `offset` is `Some`.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32(self.error);
        out.put_u16(self.message.len() as u16);
        out.put_slice(self.message.as_bytes());
        if let Some(o) = self.offset {
            out.put_u64(o);
        }
    }

    /// Decodes the payload of an error chunk of type `chunk_type`. For
    /// `ERROR` and `ERROR_OFFSET` the length must match exactly; other error
    /// types only need the 6-byte prefix and a message that fits.
    pub fn decode(chunk_type: u16, payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "error chunk");
        let error = r.u32()?;
        let msg_len = usize::from(r.u16()?);
        if msg_len > r.remaining() || msg_len > consts::limits::MAX_STRING {
            return Err(WireError::BadLength {
                what: "error chunk message",
                len: msg_len as u64,
            });
        }
        let message = to_message(r.bytes(msg_len)?);
        let offset = match chunk_type {
            reply_type::ERROR => {
                r.finish()?;
                None
            }
            reply_type::ERROR_OFFSET => {
                let o = r.u64()?;
                r.finish()?;
                Some(o)
            }
            _ => None,
        };
        Ok(ErrorChunk {
            error,
            message,
            offset,
        })
    }
}

/// The symbolic name of a chunk type, for messages.
pub fn chunk_name(chunk_type: u16) -> &'static str {
    match chunk_type {
        reply_type::NONE => "NBD_REPLY_TYPE_NONE",
        reply_type::OFFSET_DATA => "NBD_REPLY_TYPE_OFFSET_DATA",
        reply_type::OFFSET_HOLE => "NBD_REPLY_TYPE_OFFSET_HOLE",
        reply_type::BLOCK_STATUS => "NBD_REPLY_TYPE_BLOCK_STATUS",
        reply_type::BLOCK_STATUS_EXT => "NBD_REPLY_TYPE_BLOCK_STATUS_EXT",
        reply_type::ERROR => "NBD_REPLY_TYPE_ERROR",
        reply_type::ERROR_OFFSET => "NBD_REPLY_TYPE_ERROR_OFFSET",
        _ => "unknown chunk type",
    }
}
