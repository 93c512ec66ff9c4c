//! Property tests of the wire layer: decode(encode(x)) == x for every message
//! type over generated valid values, and no decoder panics on arbitrary
//! bytes. The server codec is held to the same: any valid client stream
//! decodes identically however it is split, and arbitrary bytes never make it
//! panic or consume more than it was given.

use nbd_proto::consts::{self, client_flags, cmd, cmd_flags, opt, rep, reply_type};
use nbd_proto::server::{Phase, ServerCodec, ServerEvent};
use nbd_proto::wire::handshake::{
    ClientFlags, ExportNameReply, GreetingKind, NewstyleGreeting, OldstyleGreeting,
};
use nbd_proto::wire::option::{
    BlockSize, Info, MetaContext, OptionHeader, OptionReply, OptionReplyHeader, OptionRequest,
    ServerEntry,
};
use nbd_proto::wire::reply::{
    BlockStatus, ChunkHeader, ErrorChunk, Extent, OffsetHole, ReplyHeader, SimpleReply,
};
use nbd_proto::wire::request::{BlockStatusPayload, RequestHeader};
use nbd_proto::wire::to_vec;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------- strategies

/// A valid protocol string: UTF-8 without NUL (and far below 4096 bytes).
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

const KNOWN_OPTIONS: [u32; 10] = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11];

fn option_request() -> impl Strategy<Value = OptionRequest> {
    prop_oneof![
        name().prop_map(OptionRequest::ExportName),
        Just(OptionRequest::Abort),
        Just(OptionRequest::List),
        Just(OptionRequest::StartTls),
        (name(), vec(any::<u16>(), 0..8))
            .prop_map(|(name, requests)| OptionRequest::Info { name, requests }),
        (name(), vec(any::<u16>(), 0..8))
            .prop_map(|(name, requests)| OptionRequest::Go { name, requests }),
        Just(OptionRequest::StructuredReply),
        (name(), vec(name(), 0..4))
            .prop_map(|(name, queries)| OptionRequest::ListMetaContext { name, queries }),
        (name(), vec(name(), 0..4))
            .prop_map(|(name, queries)| OptionRequest::SetMetaContext { name, queries }),
        Just(OptionRequest::ExtendedHeaders),
        (
            any::<u32>().prop_filter("unknown option", |o| !KNOWN_OPTIONS.contains(o)),
            bytes(32)
        )
            .prop_map(|(option, data)| OptionRequest::Unknown { option, data }),
    ]
}

/// Block sizes that satisfy every constraint of the specification.
fn block_size() -> impl Strategy<Value = BlockSize> {
    (0u32..=16, any::<bool>(), 0u32..1000, 0u32..=31).prop_map(|(min_exp, unbounded, k, p)| {
        let minimum = 1u32 << min_exp;
        let preferred = 1u32 << p.max(min_exp).max(9);
        let maximum = if unbounded {
            u32::MAX
        } else {
            preferred.saturating_add(minimum * k)
        };
        BlockSize {
            minimum,
            preferred,
            maximum,
        }
    })
}

fn info() -> impl Strategy<Value = Info> {
    prop_oneof![
        (0..=i64::MAX as u64, any::<u16>()).prop_map(|(size, transmission_flags)| Info::Export {
            size,
            transmission_flags
        }),
        name().prop_map(Info::Name),
        name().prop_map(Info::Description),
        block_size().prop_map(Info::BlockSize),
        (4u16.., bytes(32)).prop_map(|(info_type, data)| Info::Unknown { info_type, data }),
    ]
}

fn server_entry() -> impl Strategy<Value = ServerEntry> {
    (name(), name()).prop_map(|(name, description)| ServerEntry { name, description })
}

fn meta_context() -> impl Strategy<Value = MetaContext> {
    (any::<u32>(), name()).prop_map(|(id, name)| MetaContext { id, name })
}

fn option_reply() -> impl Strategy<Value = OptionReply> {
    prop_oneof![
        Just(OptionReply::Ack),
        server_entry().prop_map(OptionReply::Server),
        info().prop_map(OptionReply::Info),
        meta_context().prop_map(OptionReply::MetaContext),
        (any::<u32>(), name()).prop_map(|(t, message)| OptionReply::Error {
            reply_type: t | rep::FLAG_ERROR,
            message
        }),
        (5u32..rep::FLAG_ERROR, bytes(32))
            .prop_map(|(reply_type, data)| OptionReply::Unknown { reply_type, data }),
    ]
}

fn request_header(extended: bool) -> impl Strategy<Value = RequestHeader> {
    let max_len = if extended {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    (
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        0..=max_len,
    )
        .prop_map(|(flags, command, cookie, offset, length)| RequestHeader {
            flags,
            command,
            cookie,
            offset,
            length,
        })
}

fn chunk_header() -> impl Strategy<Value = ChunkHeader> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u64>(),
        any::<Option<u64>>(),
        any::<u64>(),
    )
        .prop_map(|(flags, chunk_type, cookie, offset, length)| ChunkHeader {
            flags,
            chunk_type,
            cookie,
            offset,
            length: if offset.is_some() {
                length
            } else {
                length & 0xffff_ffff
            },
        })
}

fn block_status(wide: bool) -> impl Strategy<Value = BlockStatus> {
    let mask = if wide { u64::MAX } else { 0xffff_ffff };
    (
        any::<u32>(),
        vec((any::<u64>(), any::<u64>()), 1..16).prop_map(move |v| {
            v.into_iter()
                .map(|(length, flags)| Extent {
                    length: length & mask,
                    flags: flags & mask,
                })
                .collect::<Vec<_>>()
        }),
    )
        .prop_map(|(context_id, extents)| BlockStatus {
            context_id,
            extents,
        })
}

fn error_chunk() -> impl Strategy<Value = ErrorChunk> {
    (any::<u32>(), name(), any::<Option<u64>>()).prop_map(|(error, message, offset)| ErrorChunk {
        error,
        message,
        offset,
    })
}

/// Arbitrary bytes, sometimes starting with a magic so that decoders get past
/// their first check.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let magics: Vec<Vec<u8>> = vec![
        consts::NBDMAGIC.to_be_bytes().to_vec(),
        consts::IHAVEOPT.to_be_bytes().to_vec(),
        consts::OPTION_REPLY_MAGIC.to_be_bytes().to_vec(),
        consts::REQUEST_MAGIC.to_be_bytes().to_vec(),
        consts::EXTENDED_REQUEST_MAGIC.to_be_bytes().to_vec(),
        consts::SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec(),
        consts::STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec(),
        consts::EXTENDED_REPLY_MAGIC.to_be_bytes().to_vec(),
        [
            consts::NBDMAGIC.to_be_bytes(),
            consts::IHAVEOPT.to_be_bytes(),
        ]
        .concat(),
        [
            consts::NBDMAGIC.to_be_bytes(),
            consts::OLDSTYLE_MAGIC.to_be_bytes(),
        ]
        .concat(),
        Vec::new(),
    ];
    (proptest::sample::select(magics), bytes(300)).prop_map(|(mut m, rest)| {
        m.extend(rest);
        m
    })
}

// ---------------------------------------------------------------- round trips

proptest! {
    #[test]
    fn greetings(size in any::<u64>(), flags in any::<u32>(), hs in any::<u16>()) {
        let old = OldstyleGreeting { size, flags };
        let b = to_vec(|o| old.encode(o));
        prop_assert_eq!(b.len(), GreetingKind::Oldstyle.greeting_len());
        prop_assert_eq!(GreetingKind::decode(b[..16].try_into().unwrap()), Ok(GreetingKind::Oldstyle));
        prop_assert_eq!(OldstyleGreeting::decode(&b), Ok(old));
        let new = NewstyleGreeting { handshake_flags: hs };
        let b = to_vec(|o| new.encode(o));
        prop_assert_eq!(b.len(), GreetingKind::Newstyle.greeting_len());
        prop_assert_eq!(NewstyleGreeting::decode(&b), Ok(new));
    }

    #[test]
    fn client_flags_and_export_name_reply(
        f in any::<u32>(), size in any::<u64>(), tf in any::<u16>(), zeroes in any::<bool>()
    ) {
        prop_assert_eq!(ClientFlags::decode(&to_vec(|o| ClientFlags(f).encode(o))), Ok(ClientFlags(f)));
        let r = ExportNameReply { size, transmission_flags: tf };
        let b = to_vec(|o| r.encode(o, zeroes));
        prop_assert_eq!(b.len(), if zeroes { 134 } else { 10 });
        prop_assert_eq!(ExportNameReply::decode(&b), Ok(r));
    }

    #[test]
    fn option_requests(req in option_request()) {
        let b = to_vec(|o| req.encode(o));
        let h = OptionHeader::decode(b[..16].try_into().unwrap()).unwrap();
        prop_assert_eq!(h.option, req.code());
        prop_assert_eq!(h.length as usize, b.len() - 16);
        prop_assert_eq!(to_vec(|o| h.encode(o)), &b[..16]);
        prop_assert_eq!(OptionRequest::decode(h.option, &b[16..]), Ok(req));
    }

    #[test]
    fn option_reply_headers(option in any::<u32>(), reply_type in any::<u32>(), length in 0..=consts::limits::MAX_OPTION_PAYLOAD) {
        let h = OptionReplyHeader { option, reply_type, length };
        let b = to_vec(|o| h.encode(o));
        prop_assert_eq!(OptionReplyHeader::decode(&b[..].try_into().unwrap()), Ok(h));
    }

    #[test]
    fn option_replies(option in any::<u32>(), reply in option_reply()) {
        let b = to_vec(|o| reply.encode(option, o));
        let h = OptionReplyHeader::decode(b[..20].try_into().unwrap()).unwrap();
        prop_assert_eq!(h.option, option);
        prop_assert_eq!(h.reply_type, reply.reply_type());
        prop_assert_eq!(h.length as usize, b.len() - 20);
        prop_assert_eq!(OptionReply::decode(&h, &b[20..]), Ok(reply));
    }

    #[test]
    fn option_reply_payloads(i in info(), s in server_entry(), m in meta_context(), b in block_size()) {
        prop_assert!(b.validate().is_ok());
        let enc = to_vec(|o| i.encode(o));
        prop_assert_eq!(enc.len(), i.encoded_len());
        prop_assert_eq!(Info::decode(&enc), Ok(i));
        let enc = to_vec(|o| s.encode(o));
        prop_assert_eq!(enc.len(), s.encoded_len());
        prop_assert_eq!(ServerEntry::decode(&enc), Ok(s));
        let enc = to_vec(|o| m.encode(o));
        prop_assert_eq!(enc.len(), m.encoded_len());
        prop_assert_eq!(MetaContext::decode(&enc), Ok(m));
    }

    #[test]
    fn request_headers(extended in any::<bool>(), h in request_header(true)) {
        let h = if extended { h } else { RequestHeader { length: h.length & 0xffff_ffff, ..h } };
        let b = to_vec(|o| h.encode(extended, o).unwrap());
        prop_assert_eq!(b.len(), RequestHeader::encoded_len(extended));
        let (arr, n) = h.to_array(extended).unwrap();
        prop_assert_eq!(&arr[..n], &b[..]);
        prop_assert_eq!(RequestHeader::decode(&b, extended), Ok(h));
    }

    #[test]
    fn block_status_payloads(length in any::<u64>(), ids in vec(any::<u32>(), 0..32)) {
        let p = BlockStatusPayload { length, ids };
        let b = to_vec(|o| p.encode(o));
        prop_assert_eq!(b.len(), p.encoded_len());
        prop_assert_eq!(BlockStatusPayload::decode(&b), Ok(p));
    }

    #[test]
    fn reply_headers(error in any::<u32>(), cookie in any::<u64>(), c in chunk_header()) {
        let s = SimpleReply { error, cookie };
        let b = to_vec(|o| s.encode(o));
        prop_assert_eq!(ReplyHeader::decode(&b), Ok(ReplyHeader::Simple(s)));
        let b = to_vec(|o| c.encode(o).unwrap());
        prop_assert_eq!(b.len(), if c.offset.is_some() { 32 } else { 20 });
        prop_assert_eq!(ReplyHeader::decode(&b), Ok(ReplyHeader::Chunk(c)));
        let b = to_vec(|o| ReplyHeader::Chunk(c).encode(o).unwrap());
        prop_assert_eq!(ReplyHeader::decode(&b), Ok(ReplyHeader::Chunk(c)));
    }

    #[test]
    fn chunk_payloads(
        offset in any::<u64>(), length in 1..=u32::MAX,
        compact in block_status(false), wide in block_status(true), e in error_chunk()
    ) {
        let hole = OffsetHole { offset, length };
        let b = to_vec(|o| hole.encode(o));
        prop_assert_eq!(b.len(), OffsetHole::LEN);
        prop_assert_eq!(OffsetHole::decode(&b), Ok(hole));
        let b = to_vec(|o| compact.encode(false, o));
        prop_assert_eq!(b.len(), compact.encoded_len(false));
        prop_assert_eq!(BlockStatus::decode(&b, false), Ok(compact));
        let b = to_vec(|o| wide.encode(true, o));
        prop_assert_eq!(b.len(), wide.encoded_len(true));
        prop_assert_eq!(BlockStatus::decode(&b, true), Ok(wide));
        let t = if e.offset.is_some() { reply_type::ERROR_OFFSET } else { reply_type::ERROR };
        let b = to_vec(|o| e.encode(o));
        prop_assert_eq!(b.len(), e.encoded_len());
        prop_assert_eq!(ErrorChunk::decode(t, &b), Ok(e));
    }
}

// ------------------------------------------------------- decoders never panic

proptest! {
    #[test]
    fn handshake_decoders_never_panic(b in input()) {
        let mut prefix = [0u8; 16];
        let n = b.len().min(16);
        prefix[..n].copy_from_slice(&b[..n]);
        let _ = GreetingKind::decode(&prefix);
        let _ = OldstyleGreeting::decode(&b);
        let _ = NewstyleGreeting::decode(&b);
        let _ = ClientFlags::decode(&b);
        let _ = ExportNameReply::decode(&b);
        let mut padded = b.clone();
        padded.resize(152, 0);
        let _ = OldstyleGreeting::decode(&padded);
        let _ = NewstyleGreeting::decode(&padded[..18]);
    }

    #[test]
    fn option_decoders_never_panic(
        b in input(),
        option in prop_oneof![0u32..16, any::<u32>()],
        reply_type in prop_oneof![0u32..8, (0u32..16).prop_map(|t| t | rep::FLAG_ERROR), any::<u32>()],
    ) {
        let mut h16 = [0u8; 16];
        let n = b.len().min(16);
        h16[..n].copy_from_slice(&b[..n]);
        let _ = OptionHeader::decode(&h16);
        let mut h20 = [0u8; 20];
        let n = b.len().min(20);
        h20[..n].copy_from_slice(&b[..n]);
        let _ = OptionReplyHeader::decode(&h20);
        let _ = OptionRequest::decode(option, &b);
        let _ = Info::decode(&b);
        let _ = ServerEntry::decode(&b);
        let _ = MetaContext::decode(&b);
        let exact = OptionReplyHeader { option, reply_type, length: b.len() as u32 };
        let _ = OptionReply::decode(&exact, &b);
        let lying = OptionReplyHeader { option, reply_type, length: option };
        let _ = OptionReply::decode(&lying, &b);
        if b.len() >= 12 {
            let v = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
            let _ = BlockSize { minimum: v(0), preferred: v(4), maximum: v(8) }.validate();
        }
    }

    #[test]
    fn transmission_decoders_never_panic(b in input(), t in prop_oneof![0u16..8, 0x8000u16..0x8004, any::<u16>()]) {
        let _ = RequestHeader::decode(&b, false);
        let _ = RequestHeader::decode(&b, true);
        let _ = RequestHeader::decode(&b[..b.len().min(28)], false);
        let _ = RequestHeader::decode(&b[..b.len().min(32)], true);
        let _ = BlockStatusPayload::decode(&b);
        let _ = ReplyHeader::decode(&b);
        for n in [16, 20, 32] {
            let _ = ReplyHeader::decode(&b[..b.len().min(n)]);
        }
        let _ = OffsetHole::decode(&b);
        let _ = BlockStatus::decode(&b, false);
        let _ = BlockStatus::decode(&b, true);
        let _ = ErrorChunk::decode(t, &b);
    }
}

// ------------------------------------------------------------ server codec

/// Plays a minimal good server: acknowledges what moves the phase on.
fn answer(c: &mut ServerCodec, ev: &ServerEvent) {
    if let ServerEvent::Option(o) = ev {
        match o {
            OptionRequest::ExportName(_) => c.send_export_name_reply(1 << 20, 1),
            OptionRequest::Go { .. }
            | OptionRequest::StructuredReply
            | OptionRequest::ExtendedHeaders => {
                c.send_option_reply(o.code(), &OptionReply::Ack).unwrap();
            }
            _ => {
                let e = OptionReply::Error {
                    reply_type: rep::ERR_UNSUP,
                    message: String::new(),
                };
                c.send_option_reply(o.code(), &e).unwrap();
            }
        }
    }
}

/// Feeds `stream` in the given piece sizes (cycled); returns events, output
/// and how much was consumed.
fn drive(stream: &[u8], pieces: &[usize]) -> (Vec<String>, Vec<u8>, usize) {
    let mut c = ServerCodec::newstyle(3);
    let mut events = Vec::new();
    let mut pos = 0usize;
    let mut i = 0;
    loop {
        let piece = pieces
            .get(i % pieces.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        i += 1;
        let end = stream.len().min(pos.saturating_add(piece));
        let n = c.feed(&stream[pos..end]);
        assert!(n <= end - pos, "consumed more than supplied");
        pos += n;
        let mut progressed = n > 0;
        while let Some(ev) = c.poll_event() {
            progressed = true;
            if let Ok(ev) = &ev {
                answer(&mut c, ev);
            }
            events.push(format!("{ev:?}"));
        }
        if !progressed && (end == stream.len() || !c.wants_read()) {
            break;
        }
    }
    (events, c.take_output().to_vec(), pos)
}

/// A request that is valid in the given mode, with its payload.
fn request(extended: bool) -> impl Strategy<Value = (RequestHeader, Vec<u8>)> {
    (request_header(extended), bytes(64), any::<bool>()).prop_map(move |(mut h, data, pl)| {
        h.flags &= !cmd_flags::PAYLOAD_LEN;
        if h.command == cmd::WRITE || (extended && pl) {
            if h.command != cmd::WRITE {
                h.flags |= cmd_flags::PAYLOAD_LEN;
            }
            h.length = data.len() as u64;
            (h, data)
        } else {
            (h, Vec::new())
        }
    })
}

fn client_stream() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        vec(option_request(), 0..6),
        any::<bool>(),
        any::<bool>(),
        vec(request(false), 0..6),
        vec(request(true), 0..6),
    )
        .prop_map(|(opts, extended, export_name, compact, ext)| {
            let mut s = Vec::new();
            ClientFlags(client_flags::MASK).encode(&mut s);
            let mut count = 1;
            // Options that would end haggling early stay out of the prelude.
            for o in opts.iter().filter(|o| {
                !matches!(
                    o,
                    OptionRequest::Go { .. }
                        | OptionRequest::ExportName(_)
                        | OptionRequest::ExtendedHeaders
                )
            }) {
                o.encode(&mut s);
                count += 1;
            }
            if extended {
                OptionRequest::ExtendedHeaders.encode(&mut s);
                count += 1;
            }
            if export_name {
                OptionRequest::ExportName("e".into()).encode(&mut s);
            } else {
                OptionRequest::Go {
                    name: "e".into(),
                    requests: vec![],
                }
                .encode(&mut s);
            }
            count += 1;
            for (h, p) in if extended { ext } else { compact } {
                h.encode(extended, &mut s).unwrap();
                s.extend(p);
                count += 1;
            }
            (s, count)
        })
}

proptest! {
    #[test]
    fn server_codec_is_split_invariant(
        (stream, count) in client_stream(),
        pieces in vec(1usize..40, 1..8),
    ) {
        let whole = drive(&stream, &[usize::MAX]);
        prop_assert_eq!(whole.2, stream.len());
        prop_assert_eq!(whole.0.len(), count);
        prop_assert!(whole.0.iter().all(|e| e.starts_with("Ok(")), "{:?}", whole.0);
        prop_assert_eq!(&drive(&stream, &[1]), &whole);
        prop_assert_eq!(&drive(&stream, &pieces), &whole);
    }

    #[test]
    fn server_codec_never_panics(
        b in input(),
        pieces in vec(1usize..64, 1..8),
        phase in 0u8..3,
        extended in any::<bool>(),
        max in prop_oneof![Just(u32::MAX), 0u32..64],
    ) {
        let mut c = ServerCodec::newstyle(3);
        c.set_max_option_payload(max);
        c.set_max_payload(u64::from(max));
        match phase {
            0 => {}
            1 => c.set_phase(Phase::Options),
            _ => c.set_phase(Phase::Transmission),
        }
        c.set_extended_headers(extended);
        let mut pos = 0;
        let mut stalls = 0;
        for piece in pieces.iter().cycle() {
            let end = b.len().min(pos + piece);
            let n = c.feed(&b[pos..end]);
            prop_assert!(n <= end - pos);
            pos += n;
            let mut progressed = n > 0;
            while let Some(ev) = c.poll_event() {
                progressed = true;
                if let Ok(ev) = &ev {
                    answer(&mut c, ev);
                }
            }
            stalls = if progressed { 0 } else { stalls + 1 };
            if pos == b.len() || stalls > pieces.len() {
                break;
            }
        }
        // Sending never panics either, in whatever state the input left.
        let _ = c.send_none(1, 2, true);
        let _ = c.send_offset_data(1, 2, 3, &b, false);
        let _ = c.send_option_reply(opt::GO, &OptionReply::Ack);
        let _ = c.take_output();
    }
}
