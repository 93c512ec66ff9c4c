//! Option haggling: option requests from the client, option replies from the
//! server, and the payloads of both.

use super::{put_string32, to_message, to_string, Reader, WireError};
use crate::consts::{self, info, limits, opt, rep, size};
use alloc::string::String;
use alloc::vec::Vec;
use bytes::BufMut;

/// The 16-byte header of an option request: `IHAVEOPT`, option, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code (`NBD_OPT_*`).
    pub option: u32,
    /// Length of the payload that follows.
    pub length: u32,
}

impl OptionHeader {
    /// Appends the header.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(consts::IHAVEOPT);
        out.put_u32(self.option);
        out.put_u32(self.length);
    }

    /// Decodes a 16-byte header.
    pub fn decode(buf: &[u8; size::OPTION_HEADER]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, "option header");
        let magic = r.u64()?;
        if magic != consts::IHAVEOPT {
            return Err(WireError::BadMagic {
                what: "option",
                found: magic,
            });
        }
        Ok(OptionHeader {
            option: r.u32()?,
            length: r.u32()?,
        })
    }
}

/// An option request with its decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionRequest {
    /// `NBD_OPT_EXPORT_NAME`: enter transmission on this export.
    ExportName(String),
    /// `NBD_OPT_ABORT`.
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO`: export name and the information types requested.
    Info {
        /// Export name.
        name: String,
        /// Requested `NBD_INFO_*` types.
        requests: Vec<u16>,
    },
    /// `NBD_OPT_GO`: like `Info`, then enter transmission.
    Go {
        /// Export name.
        name: String,
        /// Requested `NBD_INFO_*` types.
        requests: Vec<u16>,
    },
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT`.
    ListMetaContext {
        /// Export name.
        name: String,
        /// Queries (context names or prefixes).
        queries: Vec<String>,
    },
    /// `NBD_OPT_SET_META_CONTEXT`.
    SetMetaContext {
        /// Export name.
        name: String,
        /// Context names to select.
        queries: Vec<String>,
    },
    /// `NBD_OPT_EXTENDED_HEADERS`.
    ExtendedHeaders,
    /// Any other option, kept raw (clients may probe; servers answer UNSUP).
    Unknown {
        /// Option code.
        option: u32,
        /// Raw payload.
        data: Vec<u8>,
    },
}

impl OptionRequest {
    /// The option code of this request.
    pub fn code(&self) -> u32 {
        match self {
            OptionRequest::ExportName(_) => opt::EXPORT_NAME,
            OptionRequest::Abort => opt::ABORT,
            OptionRequest::List => opt::LIST,
            OptionRequest::StartTls => opt::STARTTLS,
            OptionRequest::Info { .. } => opt::INFO,
            OptionRequest::Go { .. } => opt::GO,
            OptionRequest::StructuredReply => opt::STRUCTURED_REPLY,
            OptionRequest::ListMetaContext { .. } => opt::LIST_META_CONTEXT,
            OptionRequest::SetMetaContext { .. } => opt::SET_META_CONTEXT,
            OptionRequest::ExtendedHeaders => opt::EXTENDED_HEADERS,
            OptionRequest::Unknown { option, .. } => *option,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            OptionRequest::ExportName(n) => n.len(),
            OptionRequest::Info { name, requests } | OptionRequest::Go { name, requests } => {
                4 + name.len() + 2 + 2 * requests.len()
            }
            OptionRequest::ListMetaContext { name, queries }
            | OptionRequest::SetMetaContext { name, queries } => {
                4 + name.len() + 4 + queries.iter().map(|q| 4 + q.len()).sum::<usize>()
            }
            OptionRequest::Unknown { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Appends header and payload.
    pub fn encode(&self, out: &mut impl BufMut) {
        OptionHeader {
            option: self.code(),
            length: self.payload_len() as u32,
        }
        .encode(out);
        match self {
            OptionRequest::ExportName(n) => out.put_slice(n.as_bytes()),
            OptionRequest::Info { name, requests } | OptionRequest::Go { name, requests } => {
                put_string32(out, name);
                out.put_u16(requests.len() as u16);
                for r in requests {
                    out.put_u16(*r);
                }
            }
            OptionRequest::ListMetaContext { name, queries }
            | OptionRequest::SetMetaContext { name, queries } => {
                put_string32(out, name);
                out.put_u32(queries.len() as u32);
                for q in queries {
                    put_string32(out, q);
                }
            }
            OptionRequest::Unknown { data, .. } => out.put_slice(data),
            _ => {}
        }
    }

    /// Decodes the payload of option `option` (the header was already read).
    pub fn decode(option: u32, payload: &[u8]) -> Result<Self, WireError> {
        let empty = |req: OptionRequest| {
            if payload.is_empty() {
                Ok(req)
            } else {
                Err(WireError::BadLength {
                    what: "option payload",
                    len: payload.len() as u64,
                })
            }
        };
        let mut r = Reader::new(payload, "option payload");
        match option {
            opt::EXPORT_NAME => Ok(OptionRequest::ExportName(to_string(
                payload,
                "export name",
            )?)),
            opt::ABORT => empty(OptionRequest::Abort),
            opt::LIST => empty(OptionRequest::List),
            opt::STARTTLS => empty(OptionRequest::StartTls),
            opt::STRUCTURED_REPLY => empty(OptionRequest::StructuredReply),
            opt::EXTENDED_HEADERS => empty(OptionRequest::ExtendedHeaders),
            opt::INFO | opt::GO => {
                let name = r.string32("export name")?;
                let n = r.u16()?;
                if r.remaining() != 2 * usize::from(n) {
                    return Err(WireError::BadLength {
                        what: "info request list",
                        len: r.remaining() as u64,
                    });
                }
                let mut requests = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    requests.push(r.u16()?);
                }
                Ok(if option == opt::INFO {
                    OptionRequest::Info { name, requests }
                } else {
                    OptionRequest::Go { name, requests }
                })
            }
            opt::LIST_META_CONTEXT | opt::SET_META_CONTEXT => {
                let name = r.string32("export name")?;
                let n = r.u32()?;
                // Each query needs at least 4 bytes: bound the allocation by the input.
                if (n as usize) > r.remaining() / 4 {
                    return Err(WireError::BadLength {
                        what: "meta context query list",
                        len: u64::from(n),
                    });
                }
                let mut queries = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    queries.push(r.string32("meta context query")?);
                }
                r.finish()?;
                Ok(if option == opt::LIST_META_CONTEXT {
                    OptionRequest::ListMetaContext { name, queries }
                } else {
                    OptionRequest::SetMetaContext { name, queries }
                })
            }
            _ => Ok(OptionRequest::Unknown {
                option,
                data: payload.to_vec(),
            }),
        }
    }
}

/// The 20-byte header of an option reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option being answered.
    pub option: u32,
    /// Reply type (`NBD_REP_*`).
    pub reply_type: u32,
    /// Payload length.
    pub length: u32,
}

impl OptionReplyHeader {
    /// Appends the header.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u64(consts::OPTION_REPLY_MAGIC);
        out.put_u32(self.option);
        out.put_u32(self.reply_type);
        out.put_u32(self.length);
    }

    /// Decodes a 20-byte header, checking the magic and the 64 MiB payload cap.
    pub fn decode(buf: &[u8; size::OPTION_REPLY_HEADER]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, "option reply header");
        let magic = r.u64()?;
        if magic != consts::OPTION_REPLY_MAGIC {
            return Err(WireError::BadMagic {
                what: "option reply",
                found: magic,
            });
        }
        let h = OptionReplyHeader {
            option: r.u32()?,
            reply_type: r.u32()?,
            length: r.u32()?,
        };
        if h.length > limits::MAX_OPTION_PAYLOAD {
            return Err(WireError::BadLength {
                what: "option reply",
                len: u64::from(h.length),
            });
        }
        Ok(h)
    }

    /// Whether the reply type has the error bit.
    pub fn is_error(&self) -> bool {
        self.reply_type & rep::FLAG_ERROR != 0
    }
}

/// Block size constraints (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Minimum block size: a power of two from 1 to 64 KiB.
    pub minimum: u32,
    /// Preferred block size: a power of two, at least the minimum and 512.
    pub preferred: u32,
    /// Maximum payload size: a multiple of the minimum, at least the preferred.
    pub maximum: u32,
}

impl BlockSize {
    /// Checks the constraints the specification puts on the three values.
    pub fn validate(&self) -> Result<(), WireError> {
        let bad = |what, value: u32| {
            Err(WireError::BadValue {
                what,
                value: u64::from(value),
            })
        };
        if !self.minimum.is_power_of_two() || self.minimum > limits::MAX_MIN_BLOCK_SIZE {
            return bad("minimum block size", self.minimum);
        }
        if !self.preferred.is_power_of_two() || self.preferred < self.minimum.max(512) {
            return bad("preferred block size", self.preferred);
        }
        if self.maximum != u32::MAX
            && (self.maximum < self.preferred || !self.maximum.is_multiple_of(self.minimum))
        {
            return bad("maximum block size", self.maximum);
        }
        Ok(())
    }
}

/// One `NBD_REP_INFO` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    Export {
        /// Export size in bytes.
        size: u64,
        /// Transmission flags.
        transmission_flags: u16,
    },
    /// `NBD_INFO_NAME`: canonical name.
    Name(String),
    /// `NBD_INFO_DESCRIPTION`.
    Description(String),
    /// `NBD_INFO_BLOCK_SIZE`.
    BlockSize(BlockSize),
    /// An information type this implementation does not know; clients ignore it.
    Unknown {
        /// The `NBD_INFO_*` type.
        info_type: u16,
        /// Raw data after the type.
        data: Vec<u8>,
    },
}

impl Info {
    /// Appends the payload (without the option reply header).
    pub fn encode(&self, out: &mut impl BufMut) {
        match self {
            Info::Export {
                size,
                transmission_flags,
            } => {
                out.put_u16(info::EXPORT);
                out.put_u64(*size);
                out.put_u16(*transmission_flags);
            }
            Info::Name(n) => {
                out.put_u16(info::NAME);
                out.put_slice(n.as_bytes());
            }
            Info::Description(d) => {
                out.put_u16(info::DESCRIPTION);
                out.put_slice(d.as_bytes());
            }
            Info::BlockSize(b) => {
                out.put_u16(info::BLOCK_SIZE);
                out.put_u32(b.minimum);
                out.put_u32(b.preferred);
                out.put_u32(b.maximum);
            }
            Info::Unknown { info_type, data } => {
                out.put_u16(*info_type);
                out.put_slice(data);
            }
        }
    }

    /// Length of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        2 + match self {
            Info::Export { .. } => 10,
            Info::Name(n) => n.len(),
            Info::Description(d) => d.len(),
            Info::BlockSize(_) => 12,
            Info::Unknown { data, .. } => data.len(),
        }
    }

    /// Decodes a complete `NBD_REP_INFO` payload, validating its size and values.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "info reply");
        let info_type = r.u16()?;
        let exact = |want: usize| {
            if payload.len() == want {
                Ok(())
            } else {
                Err(WireError::BadLength {
                    what: "info reply",
                    len: payload.len() as u64,
                })
            }
        };
        match info_type {
            info::EXPORT => {
                exact(12)?;
                let size = r.u64()?;
                let transmission_flags = r.u16()?;
                Ok(Info::Export {
                    size,
                    transmission_flags,
                })
            }
            info::NAME => Ok(Info::Name(to_string(r.rest(), "canonical name")?)),
            info::DESCRIPTION => Ok(Info::Description(to_string(r.rest(), "description")?)),
            info::BLOCK_SIZE => {
                exact(14)?;
                let b = BlockSize {
                    minimum: r.u32()?,
                    preferred: r.u32()?,
                    maximum: r.u32()?,
                };
                b.validate()?;
                Ok(Info::BlockSize(b))
            }
            other => Ok(Info::Unknown {
                info_type: other,
                data: r.rest().to_vec(),
            }),
        }
    }
}

/// One `NBD_REP_SERVER` payload: an export name and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// Export name.
    pub name: String,
    /// Description (may be empty).
    pub description: String,
}

impl ServerEntry {
    /// Appends the payload.
    pub fn encode(&self, out: &mut impl BufMut) {
        put_string32(out, &self.name);
        out.put_slice(self.description.as_bytes());
    }

    /// Length of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        4 + self.name.len() + self.description.len()
    }

    /// Decodes a complete payload; the name length must fit inside it.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "server reply");
        let len = r.u32()?;
        if len as usize > r.remaining() {
            return Err(WireError::BadLength {
                what: "server reply name",
                len: u64::from(len),
            });
        }
        let name = to_string(r.bytes(len as usize)?, "export name")?;
        let description = to_string(r.rest(), "export description")?;
        Ok(ServerEntry { name, description })
    }
}

/// One `NBD_REP_META_CONTEXT` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContext {
    /// Context id chosen by the server (meaningful after SET).
    pub id: u32,
    /// Context name.
    pub name: String,
}

impl MetaContext {
    /// Appends the payload.
    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32(self.id);
        out.put_slice(self.name.as_bytes());
    }

    /// Length of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        4 + self.name.len()
    }

    /// Decodes a complete payload.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload, "meta context reply");
        let id = r.u32()?;
        let name = to_string(r.rest(), "meta context name")?;
        Ok(MetaContext { id, name })
    }
}

/// A complete option reply as the server codec sends it and tests script it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionReply {
    /// `NBD_REP_ACK`.
    Ack,
    /// `NBD_REP_SERVER`.
    Server(ServerEntry),
    /// `NBD_REP_INFO`.
    Info(Info),
    /// `NBD_REP_META_CONTEXT`.
    MetaContext(MetaContext),
    /// An error reply (`NBD_REP_ERR_*` or any type with bit 31) and its message.
    Error {
        /// The reply type, with the error bit.
        reply_type: u32,
        /// Optional human-readable message.
        message: String,
    },
    /// A non-error reply type this implementation does not know, kept raw.
    Unknown {
        /// The reply type.
        reply_type: u32,
        /// Raw payload.
        data: Vec<u8>,
    },
}

impl OptionReply {
    /// The `NBD_REP_*` type.
    pub fn reply_type(&self) -> u32 {
        match self {
            OptionReply::Ack => rep::ACK,
            OptionReply::Server(_) => rep::SERVER,
            OptionReply::Info(_) => rep::INFO,
            OptionReply::MetaContext(_) => rep::META_CONTEXT,
            OptionReply::Error { reply_type, .. } | OptionReply::Unknown { reply_type, .. } => {
                *reply_type
            }
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            OptionReply::Ack => 0,
            OptionReply::Server(s) => s.encoded_len(),
            OptionReply::Info(i) => i.encoded_len(),
            OptionReply::MetaContext(m) => m.encoded_len(),
            OptionReply::Error { message, .. } => message.len(),
            OptionReply::Unknown { data, .. } => data.len(),
        }
    }

    /// Appends header and payload as a reply to `option`.
    pub fn encode(&self, option: u32, out: &mut impl BufMut) {
        OptionReplyHeader {
            option,
            reply_type: self.reply_type(),
            length: self.payload_len() as u32,
        }
        .encode(out);
        match self {
            OptionReply::Ack => {}
            OptionReply::Server(s) => s.encode(out),
            OptionReply::Info(i) => i.encode(out),
            OptionReply::MetaContext(m) => m.encode(out),
            OptionReply::Error { message, .. } => out.put_slice(message.as_bytes()),
            OptionReply::Unknown { data, .. } => out.put_slice(data),
        }
    }

    /// Decodes the payload of a reply whose header was already read.
    ///
    /// An ACK must have no payload; error messages are kept (lossily) but
    /// must not exceed 4096 bytes.
    pub fn decode(header: &OptionReplyHeader, payload: &[u8]) -> Result<Self, WireError> {
        if header.length as usize != payload.len() {
            return Err(WireError::BadLength {
                what: "option reply payload",
                len: payload.len() as u64,
            });
        }
        if header.is_error() {
            if payload.len() > limits::MAX_STRING {
                return Err(WireError::BadLength {
                    what: "option error message",
                    len: payload.len() as u64,
                });
            }
            return Ok(OptionReply::Error {
                reply_type: header.reply_type,
                message: to_message(payload),
            });
        }
        match header.reply_type {
            rep::ACK => {
                if payload.is_empty() {
                    Ok(OptionReply::Ack)
                } else {
                    Err(WireError::BadLength {
                        what: "ACK reply",
                        len: payload.len() as u64,
                    })
                }
            }
            rep::SERVER => Ok(OptionReply::Server(ServerEntry::decode(payload)?)),
            rep::INFO => Ok(OptionReply::Info(Info::decode(payload)?)),
            rep::META_CONTEXT => Ok(OptionReply::MetaContext(MetaContext::decode(payload)?)),
            other => Ok(OptionReply::Unknown {
                reply_type: other,
                data: payload.to_vec(),
            }),
        }
    }
}

/// The symbolic name of an option reply error, for messages.
pub fn rep_error_name(reply_type: u32) -> &'static str {
    match reply_type {
        rep::ERR_UNSUP => "NBD_REP_ERR_UNSUP",
        rep::ERR_POLICY => "NBD_REP_ERR_POLICY",
        rep::ERR_INVALID => "NBD_REP_ERR_INVALID",
        rep::ERR_PLATFORM => "NBD_REP_ERR_PLATFORM",
        rep::ERR_TLS_REQD => "NBD_REP_ERR_TLS_REQD",
        rep::ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN",
        rep::ERR_SHUTDOWN => "NBD_REP_ERR_SHUTDOWN",
        rep::ERR_BLOCK_SIZE_REQD => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        rep::ERR_TOO_BIG => "NBD_REP_ERR_TOO_BIG",
        rep::ERR_EXT_HEADER_REQD => "NBD_REP_ERR_EXT_HEADER_REQD",
        _ => "unknown error",
    }
}

/// The symbolic name of an option, for messages.
pub fn opt_name(option: u32) -> &'static str {
    match option {
        opt::EXPORT_NAME => "NBD_OPT_EXPORT_NAME",
        opt::ABORT => "NBD_OPT_ABORT",
        opt::LIST => "NBD_OPT_LIST",
        opt::PEEK_EXPORT => "NBD_OPT_PEEK_EXPORT",
        opt::STARTTLS => "NBD_OPT_STARTTLS",
        opt::INFO => "NBD_OPT_INFO",
        opt::GO => "NBD_OPT_GO",
        opt::STRUCTURED_REPLY => "NBD_OPT_STRUCTURED_REPLY",
        opt::LIST_META_CONTEXT => "NBD_OPT_LIST_META_CONTEXT",
        opt::SET_META_CONTEXT => "NBD_OPT_SET_META_CONTEXT",
        opt::EXTENDED_HEADERS => "NBD_OPT_EXTENDED_HEADERS",
        _ => "unknown option",
    }
}
