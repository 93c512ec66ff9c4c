//! Input: framing and decoding of what the client sends, per phase.

use super::{Phase, ServerCodec, ServerError, ServerEvent};
use crate::consts::{self, client_flags, cmd, cmd_flags, handshake_flags, opt, size};
use crate::wire::handshake::ClientFlags;
use crate::wire::option::{OptionHeader, OptionRequest};
use crate::wire::request::RequestHeader;
use bytes::BytesMut;

/// Where the message at the front of the input buffer stands.
enum Frame {
    /// This many more bytes are needed (never zero).
    Incomplete(usize),
    /// The first this-many bytes form a whole message.
    Complete(usize),
    /// Nothing may be framed until the server answers a pending option.
    Blocked,
    /// The header seen so far is a protocol violation.
    Invalid(ServerError),
}

/// `Complete` or `Incomplete` for a message of `total` bytes.
fn progress(have: usize, total: usize) -> Frame {
    match total.checked_sub(have) {
        Some(0) | None => Frame::Complete(total),
        Some(more) => Frame::Incomplete(more),
    }
}

/// The first `N` bytes of `buf`, if it has that many.
fn head<const N: usize>(buf: &[u8]) -> Option<&[u8; N]> {
    buf.get(..N).and_then(|s| s.try_into().ok())
}

impl ServerCodec {
    /// Whether [`feed`](Self::feed) would accept bytes now: the codec is
    /// alive, no decoded event waits to be polled and no option answer is
    /// pending.
    pub fn wants_read(&self) -> bool {
        !self.dead && matches!(self.frame(), Frame::Incomplete(_))
    }

    /// Buffers received bytes and returns how many were consumed.
    ///
    /// It takes at most the rest of the current message, and nothing while a
    /// decoded message waits for [`poll_event`](Self::poll_event), while the
    /// answer to `NBD_OPT_GO` / `NBD_OPT_EXPORT_NAME` is pending, or once the
    /// header seen is invalid or the codec is dead. An oversized length is
    /// caught from the header alone, before any of its payload is buffered.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while !self.dead {
            let rest = input.get(used..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            let Frame::Incomplete(more) = self.frame() else {
                break;
            };
            let take = more.min(rest.len());
            self.input
                .extend_from_slice(rest.get(..take).unwrap_or_default());
            used += take;
        }
        used
    }

    /// The next decoded message, if a whole one was fed.
    ///
    /// Returns `None` when more bytes are needed (or the codec is dead or
    /// blocked on a pending option answer). An `Err` is returned once, and
    /// makes the codec dead.
    pub fn poll_event(&mut self) -> Option<Result<ServerEvent, ServerError>> {
        if self.dead {
            return None;
        }
        let result = match self.frame() {
            Frame::Incomplete(_) | Frame::Blocked => return None,
            Frame::Invalid(e) => Err(e),
            Frame::Complete(total) if total <= self.input.len() => {
                let msg = self.input.split_to(total);
                self.decode(msg)
            }
            // Unreachable by construction of `Frame::Complete`.
            Frame::Complete(_) => return None,
        };
        if result.is_err() {
            self.dead = true;
            self.input.clear();
        }
        Some(result)
    }

    /// Whether a request with this header carries a payload.
    fn has_payload(&self, h: &RequestHeader) -> bool {
        h.command == cmd::WRITE || (self.extended && h.flags & cmd_flags::PAYLOAD_LEN != 0)
    }

    /// Frames the message at the front of the input buffer.
    fn frame(&self) -> Frame {
        let buf = &self.input[..];
        match self.phase {
            Phase::Handshake => progress(buf.len(), size::CLIENT_FLAGS),
            Phase::Options => {
                if self.awaiting.is_some() {
                    return Frame::Blocked;
                }
                let Some(raw) = head::<{ size::OPTION_HEADER }>(buf) else {
                    // Take the magic first, and reject a wrong one at once.
                    let Some(magic) = head::<8>(buf).map(|m| u64::from_be_bytes(*m)) else {
                        return progress(buf.len(), 8);
                    };
                    if magic != consts::IHAVEOPT {
                        return Frame::Invalid(ServerError::BadMagic {
                            what: "option",
                            found: magic,
                        });
                    }
                    return progress(buf.len(), size::OPTION_HEADER);
                };
                let h = match OptionHeader::decode(raw) {
                    Ok(h) => h,
                    Err(e) => return Frame::Invalid(e.into()),
                };
                if h.length > self.max_option_payload {
                    return Frame::Invalid(ServerError::OptionTooLarge {
                        option: h.option,
                        length: h.length,
                        max: self.max_option_payload,
                    });
                }
                match usize::try_from(h.length)
                    .ok()
                    .and_then(|l| l.checked_add(size::OPTION_HEADER))
                {
                    Some(total) => progress(buf.len(), total),
                    None => Frame::Invalid(ServerError::OptionTooLarge {
                        option: h.option,
                        length: h.length,
                        max: self.max_option_payload,
                    }),
                }
            }
            Phase::Transmission => {
                let hlen = RequestHeader::encoded_len(self.extended);
                let Some(raw) = buf.get(..hlen) else {
                    // Take the magic first, and reject a wrong one at once.
                    let want = if self.extended {
                        consts::EXTENDED_REQUEST_MAGIC
                    } else {
                        consts::REQUEST_MAGIC
                    };
                    let Some(magic) = head::<4>(buf).map(|m| u32::from_be_bytes(*m)) else {
                        return progress(buf.len(), 4);
                    };
                    if magic != want {
                        return Frame::Invalid(ServerError::BadMagic {
                            what: "request",
                            found: u64::from(magic),
                        });
                    }
                    return progress(buf.len(), hlen);
                };
                let h = match RequestHeader::decode(raw, self.extended) {
                    Ok(h) => h,
                    Err(e) => return Frame::Invalid(e.into()),
                };
                if !self.has_payload(&h) {
                    return progress(buf.len(), hlen);
                }
                let too_large = ServerError::PayloadTooLarge {
                    command: h.command,
                    length: h.length,
                    max: self.max_payload,
                };
                if h.length > self.max_payload {
                    return Frame::Invalid(too_large);
                }
                match usize::try_from(h.length)
                    .ok()
                    .and_then(|l| l.checked_add(hlen))
                {
                    Some(total) => progress(buf.len(), total),
                    None => Frame::Invalid(too_large),
                }
            }
        }
    }

    /// Decodes one complete message framed by [`Self::frame`].
    fn decode(&mut self, mut msg: BytesMut) -> Result<ServerEvent, ServerError> {
        match self.phase {
            Phase::Handshake => {
                let ClientFlags(flags) = ClientFlags::decode(&msg)?;
                if flags & !client_flags::MASK != 0 {
                    return Err(ServerError::UnknownClientFlags(flags));
                }
                // Each client flag answers the handshake flag of the same bit.
                let advertised = u32::from(self.handshake_flags)
                    & u32::from(handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES);
                if flags & !advertised != 0 {
                    return Err(ServerError::UnadvertisedClientFlags(flags));
                }
                self.client_flags = Some(flags);
                self.no_zeroes = flags & client_flags::NO_ZEROES != 0;
                self.phase = Phase::Options;
                Ok(ServerEvent::ClientFlags(flags))
            }
            Phase::Options => {
                let raw = head::<{ size::OPTION_HEADER }>(&msg).ok_or(ServerError::Malformed(
                    crate::wire::WireError::BadLength {
                        what: "option header",
                        len: msg.len() as u64,
                    },
                ))?;
                let h = OptionHeader::decode(raw)?;
                let payload = msg.get(size::OPTION_HEADER..).unwrap_or_default();
                if h.option == opt::GO || h.option == opt::EXPORT_NAME {
                    self.awaiting = Some(h.option);
                }
                Ok(match OptionRequest::decode(h.option, payload) {
                    Ok(req) => ServerEvent::Option(req),
                    Err(error) => ServerEvent::InvalidOption {
                        option: h.option,
                        error,
                    },
                })
            }
            Phase::Transmission => {
                let hlen = RequestHeader::encoded_len(self.extended).min(msg.len());
                let header = RequestHeader::decode(&msg.split_to(hlen), self.extended)?;
                let payload = self.has_payload(&header).then(|| msg.freeze());
                Ok(ServerEvent::Request { header, payload })
            }
        }
    }
}
