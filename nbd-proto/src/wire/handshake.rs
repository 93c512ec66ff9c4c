//! Handshake messages: the server greeting (oldstyle or newstyle), the client
//! flags, and the reply that ends `NBD_OPT_EXPORT_NAME`.

use super::{Reader, WireError};
use crate::consts::{self, size};
use bytes::BufMut;

/// Which greeting the first 16 bytes from the server announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GreetingKind {
    /// Oldstyle: 136 more bytes follow (size, flags, zeroes).
    Oldstyle,
    /// Newstyle: 2 more bytes of handshake flags follow.
    Newstyle,
}

impl GreetingKind {
    /// Decodes the 16-byte prefix common to both greetings.
    pub fn decode(buf: &[u8; size::GREETING_PREFIX]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, "greeting");
        let magic = r.u64()?;
        if magic != consts::NBDMAGIC {
            return Err(WireError::BadMagic {
                what: "greeting",
                found: magic,
            });
        }
        match r.u64()? {
            consts::IHAVEOPT => Ok(GreetingKind::Newstyle),
            consts::OLDSTYLE_MAGIC => Ok(GreetingKind::Oldstyle),
            found => Err(WireError::BadMagic {
                what: "greeting version",
                found,
            }),
        }
    }

    /// Total length of this greeting, prefix included.
    pub fn greeting_len(self) -> usize {
        match self {
            GreetingKind::Oldstyle => size::OLDSTYLE_GREETING,
            GreetingKind::Newstyle => size::NEWSTYLE_GREETING,
        }
    }
}

/// The oldstyle greeting: the server announces one export and goes straight to
/// transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldstyleGreeting {
    /// Export size in bytes.
    pub size: u64,
    /// 32 bits of flags; the low 16 are the transmission flags.
    pub flags: u32,
}

impl OldstyleGreeting {
    /// Appends the 152-byte greeting.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(consts::NBDMAGIC);
        out.put_u64(consts::OLDSTYLE_MAGIC);
        out.put_u64(self.size);
        out.put_u32(self.flags);
        out.put_bytes(0, 124);
    }

    /// Decodes a complete 152-byte greeting. The reserved bytes are ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() != size::OLDSTYLE_GREETING {
            return Err(WireError::BadLength {
                what: "oldstyle greeting",
                len: buf.len() as u64,
            });
        }
        let prefix: &[u8; 16] = buf[..16].try_into().map_err(|_| WireError::BadLength {
            what: "oldstyle greeting",
            len: buf.len() as u64,
        })?;
        if GreetingKind::decode(prefix)? != GreetingKind::Oldstyle {
            return Err(WireError::BadMagic {
                what: "oldstyle greeting",
                found: consts::IHAVEOPT,
            });
        }
        let mut r = Reader::new(&buf[16..], "oldstyle greeting");
        Ok(OldstyleGreeting {
            size: r.u64()?,
            flags: r.u32()?,
        })
    }

    /// The transmission flags part of [`Self::flags`].
    pub fn transmission_flags(&self) -> u16 {
        (self.flags & 0xffff) as u16
    }
}

/// The newstyle greeting: magics and the server's handshake flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewstyleGreeting {
    /// `NBD_FLAG_FIXED_NEWSTYLE`, `NBD_FLAG_NO_ZEROES` and unknown bits.
    pub handshake_flags: u16,
}

impl NewstyleGreeting {
    /// Appends the 18-byte greeting.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(consts::NBDMAGIC);
        out.put_u64(consts::IHAVEOPT);
        out.put_u16(self.handshake_flags);
    }

    /// Decodes a complete 18-byte greeting.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() != size::NEWSTYLE_GREETING {
            return Err(WireError::BadLength {
                what: "newstyle greeting",
                len: buf.len() as u64,
            });
        }
        let mut r = Reader::new(buf, "newstyle greeting");
        let prefix = r.array::<16>()?;
        if GreetingKind::decode(&prefix)? != GreetingKind::Newstyle {
            return Err(WireError::BadMagic {
                what: "newstyle greeting",
                found: consts::OLDSTYLE_MAGIC,
            });
        }
        Ok(NewstyleGreeting {
            handshake_flags: r.u16()?,
        })
    }
}

/// The client's 32-bit answer to a newstyle greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags(pub u32);

impl ClientFlags {
    /// Appends the 4 bytes.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32(self.0);
    }

    /// Decodes exactly 4 bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, "client flags");
        let v = r.u32()?;
        r.finish()?;
        Ok(ClientFlags(v))
    }
}

/// The server's reply to `NBD_OPT_EXPORT_NAME`: size and transmission flags,
/// followed by 124 zero bytes unless `NO_ZEROES` was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportNameReply {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub transmission_flags: u16,
}

impl ExportNameReply {
    /// Appends the reply, with the zero padding when `zeroes` is true.
    pub fn encode(&self, out: &mut impl BufMut, zeroes: bool) {
        out.put_u64(self.size);
        out.put_u16(self.transmission_flags);
        if zeroes {
            out.put_bytes(0, size::EXPORT_NAME_ZEROES);
        }
    }

    /// Decodes the reply; `buf` is 10 bytes, or 134 with the padding (whose
    /// content is ignored).
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        if buf.len() != size::EXPORT_NAME_REPLY
            && buf.len() != size::EXPORT_NAME_REPLY + size::EXPORT_NAME_ZEROES
        {
            return Err(WireError::BadLength {
                what: "export name reply",
                len: buf.len() as u64,
            });
        }
        let mut r = Reader::new(buf, "export name reply");
        Ok(ExportNameReply {
            size: r.u64()?,
            transmission_flags: r.u16()?,
        })
    }
}
