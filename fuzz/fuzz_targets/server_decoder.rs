//! The server-side codec fed arbitrary client bytes.
//!
//! Byte 0 selects the server:
//! * bit 0: oldstyle greeting (starts in transmission) instead of newstyle;
//! * bit 1: pretend structured replies were negotiated (setter);
//! * bit 2: pretend extended headers were negotiated (setter);
//! * bit 3: the newstyle greeting omits `NO_ZEROES`;
//! * bit 4: the newstyle greeting omits `FIXED_NEWSTYLE`;
//! * bit 5: refuse `NBD_OPT_STRUCTURED_REPLY` / `NBD_OPT_EXTENDED_HEADERS`;
//! * bit 6: small caps on option and request payloads;
//! * bit 7: drain output in pieces (`output` / `advance_output`).
//!
//! Byte 1 is the feeding step (0: everything at once); the rest is the
//! client's stream. Options are answered plausibly (ACKs, GO with export
//! info), so the stream can reach the transmission phase.
//!
//! Checked: no panic; `feed` consumes at most what it is offered, and
//! nothing once the codec is dead; an error is reported once and then the
//! codec is inert; a payload is present exactly when the request carries
//! one, and its length is the request length; every decoded message
//! re-encodes to exactly the bytes it was decoded from.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nbd_proto::consts::{client_flags, cmd, cmd_flags, handshake_flags, opt, rep};
use nbd_proto::server::{Phase, ServerCodec, ServerEvent};
use nbd_proto::wire::handshake::ClientFlags;
use nbd_proto::wire::option::{Info, MetaContext, OptionReply, OptionRequest, ServerEntry};
use nbd_proto::wire::reply::{BlockStatus, ErrorChunk, Extent};
use nbd_proto::wire::request::RequestHeader;

const SIZE: u64 = 1 << 20;

struct Answerer {
    refuse_upgrades: bool,
    piecewise: bool,
    /// The server closed the connection (ABORT, DISC, bad EXPORT_NAME).
    closed: bool,
}

impl Answerer {
    fn drain(&self, c: &mut ServerCodec) {
        if self.piecewise {
            while c.has_output() {
                let n = c.output().len();
                c.advance_output(n / 2 + 1);
            }
        } else {
            let _: Bytes = c.take_output();
        }
        assert!(!c.has_output());
    }

    fn reply(c: &mut ServerCodec, option: u32, r: OptionReply) {
        c.send_option_reply(option, &r).expect("small option reply");
    }

    fn error(c: &mut ServerCodec, option: u32, reply_type: u32) {
        let r = OptionReply::Error {
            reply_type,
            message: "no".into(),
        };
        Self::reply(c, option, r);
    }

    fn option(&mut self, c: &mut ServerCodec, o: OptionRequest) {
        let code = o.code();
        match o {
            OptionRequest::StructuredReply | OptionRequest::ExtendedHeaders => {
                if self.refuse_upgrades {
                    Self::error(c, code, rep::ERR_UNSUP);
                } else {
                    Self::reply(c, code, OptionReply::Ack);
                }
            }
            OptionRequest::Go { name, requests } | OptionRequest::Info { name, requests } => {
                if name.len() % 4 == 3 {
                    Self::error(c, code, rep::ERR_UNKNOWN);
                } else {
                    let export = Info::Export {
                        size: SIZE,
                        transmission_flags: 0x1ed,
                    };
                    Self::reply(c, code, OptionReply::Info(export));
                    if !requests.is_empty() {
                        Self::reply(c, code, OptionReply::Info(Info::Name(name)));
                    }
                    Self::reply(c, code, OptionReply::Ack);
                }
            }
            OptionRequest::ExportName(name) => {
                if name.len() % 4 == 3 {
                    self.closed = true;
                } else {
                    c.send_export_name_reply(SIZE, 0x1ed);
                }
            }
            OptionRequest::List => {
                let e = ServerEntry {
                    name: "disk".into(),
                    description: "d".into(),
                };
                Self::reply(c, code, OptionReply::Server(e));
                Self::reply(c, code, OptionReply::Ack);
            }
            OptionRequest::SetMetaContext { queries, .. }
            | OptionRequest::ListMetaContext { queries, .. } => {
                for (i, name) in queries.into_iter().take(4).enumerate() {
                    let m = MetaContext { id: i as u32, name };
                    Self::reply(c, code, OptionReply::MetaContext(m));
                }
                Self::reply(c, code, OptionReply::Ack);
            }
            OptionRequest::Abort => {
                Self::reply(c, code, OptionReply::Ack);
                self.closed = true;
            }
            OptionRequest::StartTls | OptionRequest::Unknown { .. } => {
                Self::error(c, code, rep::ERR_UNSUP)
            }
        }
    }

    /// Answers a request through the encoders, whatever it asks for: they
    /// must not panic either.
    fn request(&mut self, c: &mut ServerCodec, h: &RequestHeader, payload: Option<&Bytes>) {
        let (cookie, off) = (h.cookie, h.offset);
        if h.command == cmd::DISC {
            self.closed = true;
            return;
        }
        if !c.structured_replies() {
            let data = vec![0u8; (h.length as usize).min(64)];
            let data = if h.command == cmd::READ {
                &data[..]
            } else {
                &[][..]
            };
            c.send_simple_reply(cookie, 0, data);
            return;
        }
        match h.command {
            cmd::READ => {
                let n = h.length.min(64) as usize;
                let _ = c.send_offset_data(cookie, off, off, &vec![1u8; n], false);
                let _ = c.send_offset_hole(cookie, off, off, h.length as u32, false);
                let _ = c.send_none(cookie, off, true);
            }
            cmd::BLOCK_STATUS => {
                let status = BlockStatus {
                    context_id: 0,
                    extents: vec![Extent {
                        length: h.length,
                        flags: u64::from(h.flags),
                    }],
                };
                let _ = c.send_block_status(cookie, off, &status, true);
            }
            _ => {
                let e = ErrorChunk {
                    error: 22,
                    message: String::from_utf8_lossy(payload.map_or(&[][..], |p| p.as_ref()))
                        .chars()
                        .take(16)
                        .collect(),
                    offset: (h.flags & 1 != 0).then_some(off),
                };
                let _ = c.send_error(cookie, off, &e, true);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let sel = data[0];
    let step = match data[1] {
        0 => usize::MAX,
        s => usize::from(s % 64) + 1,
    };
    let stream = &data[2..];
    let mut c = if sel & 1 != 0 {
        ServerCodec::oldstyle(SIZE, 0x1ed)
    } else {
        let mut flags = handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES;
        if sel & 8 != 0 {
            flags &= !handshake_flags::NO_ZEROES;
        }
        if sel & 16 != 0 {
            flags &= !handshake_flags::FIXED_NEWSTYLE;
        }
        ServerCodec::newstyle(flags)
    };
    if sel & 2 != 0 {
        c.set_structured_replies(true);
    }
    if sel & 4 != 0 {
        c.set_extended_headers(true);
    }
    if sel & 64 != 0 {
        c.set_max_option_payload(256);
        c.set_max_payload(4096);
    }
    let mut a = Answerer {
        refuse_upgrades: sel & 32 != 0,
        piecewise: sel & 128 != 0,
        closed: false,
    };
    a.drain(&mut c);

    let mut pos = 0;
    // Where the message being framed starts in `stream`.
    let mut msg_start = 0;
    let mut errors = 0;
    while pos < stream.len() && !a.closed {
        let end = pos.saturating_add(step).min(stream.len());
        let piece = &stream[pos..end];
        let was_dead = c.is_dead();
        let wanted = c.wants_read();
        let n = c.feed(piece);
        assert!(n <= piece.len(), "feed consumed more than supplied");
        if was_dead {
            assert_eq!(n, 0, "a dead codec consumed input");
        }
        if !wanted {
            assert_eq!(n, 0, "consumed input while not wanting to read");
        }
        pos += n;
        let mut polled = false;
        while let Some(r) = c.poll_event() {
            polled = true;
            let phase = c.phase();
            let extended = c.extended_headers();
            let ev = match r {
                Ok(ev) => ev,
                Err(_) => {
                    errors += 1;
                    assert!(c.is_dead(), "an error must kill the codec");
                    assert!(c.poll_event().is_none(), "events after an error");
                    assert!(!c.wants_read());
                    break;
                }
            };
            let raw = &stream[msg_start..pos];
            msg_start = pos;
            match ev {
                ServerEvent::ClientFlags(f) => {
                    assert_eq!(c.phase(), Phase::Options);
                    assert_eq!(f & !client_flags::MASK, 0);
                    let mut v = Vec::new();
                    ClientFlags(f).encode(&mut v);
                    assert_eq!(raw, &v[..], "client flags re-encode");
                }
                ServerEvent::Option(o) => {
                    assert_eq!(phase, Phase::Options);
                    let mut v = Vec::new();
                    o.encode(&mut v);
                    assert_eq!(raw, &v[..], "option request re-encodes: {o:?}");
                    if o.code() == opt::GO || o.code() == opt::EXPORT_NAME {
                        assert_eq!(c.awaiting_reply(), Some(o.code()));
                    }
                    a.option(&mut c, o);
                    if !a.closed {
                        assert_eq!(c.awaiting_reply(), None, "answered");
                    }
                }
                ServerEvent::InvalidOption { option, .. } => {
                    assert_eq!(phase, Phase::Options);
                    assert!(raw.len() >= 16);
                    assert_eq!(raw[8..12], option.to_be_bytes());
                    if option == opt::EXPORT_NAME {
                        a.closed = true;
                    } else {
                        Answerer::error(&mut c, option, rep::ERR_INVALID);
                        assert_eq!(c.awaiting_reply(), None, "answered");
                    }
                }
                ServerEvent::Request { header, payload } => {
                    assert_eq!(phase, Phase::Transmission);
                    let carries = header.command == cmd::WRITE
                        || (extended && header.flags & cmd_flags::PAYLOAD_LEN != 0);
                    assert_eq!(payload.is_some(), carries, "payload presence");
                    if let Some(p) = &payload {
                        assert_eq!(p.len() as u64, header.length, "payload length");
                    }
                    let mut v = Vec::new();
                    header
                        .encode(extended, &mut v)
                        .expect("decoded header re-encodes");
                    v.extend_from_slice(payload.as_deref().unwrap_or_default());
                    assert_eq!(raw, &v[..], "request re-encodes");
                    a.request(&mut c, &header, payload.as_ref());
                }
            }
            a.drain(&mut c);
            if a.closed {
                break;
            }
        }
        if c.is_dead() {
            // Inert from now on.
            assert_eq!(c.feed(&stream[pos..]), 0, "a dead codec consumed input");
            assert!(c.poll_event().is_none());
            break;
        }
        if n == 0 && !polled {
            // Nothing consumed and nothing decoded: only a pending option
            // answer may block the codec, and every option is answered.
            panic!(
                "codec stalled: phase {:?}, awaiting {:?}, wants_read {}",
                c.phase(),
                c.awaiting_reply(),
                c.wants_read()
            );
        }
    }
    assert!(errors <= 1, "an error is reported once");
});
