//! Unit tests: client byte streams built with the wire encoders, fed whole
//! and one byte at a time, to a minimal scripted server.

use super::*;
use crate::consts::{client_flags, cmd, cmd_flags, handshake_flags, info, opt, rep};
use crate::wire::handshake::ClientFlags;
use crate::wire::option::{Info, OptionHeader, OptionReply, ServerEntry};
use crate::wire::reply::{BlockStatus, ErrorChunk, Extent, ReplyHeader};
use crate::wire::request::BlockStatusPayload;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

fn req(flags: u16, command: u16, cookie: u64, offset: u64, length: u64) -> RequestHeader {
    RequestHeader {
        flags,
        command,
        cookie,
        offset,
        length,
    }
}

/// Appends a request header and its payload.
fn put_req(out: &mut Vec<u8>, h: RequestHeader, extended: bool, payload: &[u8]) {
    h.encode(extended, out).unwrap();
    out.extend_from_slice(payload);
}

/// The answers of a minimal good server.
fn answer(c: &mut ServerCodec, ev: &ServerEvent) {
    let ServerEvent::Option(o) = ev else {
        return;
    };
    let code = o.code();
    match o {
        OptionRequest::List => {
            let e = ServerEntry {
                name: "a".into(),
                description: "d".into(),
            };
            c.send_option_reply(code, &OptionReply::Server(e)).unwrap();
            c.send_option_reply(code, &OptionReply::Ack).unwrap();
        }
        OptionRequest::Go { .. } => {
            let i = Info::Export {
                size: 1 << 20,
                transmission_flags: 1,
            };
            c.send_option_reply(code, &OptionReply::Info(i)).unwrap();
            c.send_option_reply(code, &OptionReply::Ack).unwrap();
        }
        OptionRequest::ExportName(_) => c.send_export_name_reply(1 << 20, 1),
        OptionRequest::StructuredReply | OptionRequest::ExtendedHeaders => {
            c.send_option_reply(code, &OptionReply::Ack).unwrap();
        }
        _ => {
            let e = OptionReply::Error {
                reply_type: rep::ERR_UNSUP,
                message: String::new(),
            };
            c.send_option_reply(code, &e).unwrap();
        }
    }
}

/// Feeds `stream` in pieces of at most `chunk` bytes, answering options;
/// returns the events (or the error that ended them), the output, and how
/// much of the stream was consumed.
fn run(
    mut c: ServerCodec,
    stream: &[u8],
    chunk: usize,
) -> (
    Vec<Result<ServerEvent, ServerError>>,
    Vec<u8>,
    usize,
    ServerCodec,
) {
    let mut events = Vec::new();
    let mut pos = 0;
    loop {
        let end = stream.len().min(pos + chunk);
        let n = c.feed(&stream[pos..end]);
        assert!(n <= end - pos);
        pos += n;
        let mut progressed = n > 0;
        while let Some(ev) = c.poll_event() {
            progressed = true;
            if let Ok(ev) = &ev {
                answer(&mut c, ev);
            }
            events.push(ev);
        }
        if !progressed {
            break;
        }
    }
    let out = c.take_output().to_vec();
    (events, out, pos, c)
}

fn compact_stream() -> (Vec<u8>, usize) {
    let mut s = Vec::new();
    ClientFlags(client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES).encode(&mut s);
    let opts = [
        OptionRequest::List,
        OptionRequest::StructuredReply,
        OptionRequest::SetMetaContext {
            name: "x".into(),
            queries: vec!["base:allocation".into()],
        },
        OptionRequest::Info {
            name: "x".into(),
            requests: vec![info::BLOCK_SIZE],
        },
        OptionRequest::Unknown {
            option: 99,
            data: vec![1, 2, 3],
        },
        OptionRequest::Go {
            name: "x".into(),
            requests: vec![],
        },
    ];
    for o in &opts {
        o.encode(&mut s);
    }
    put_req(&mut s, req(0, cmd::READ, 1, 0, 4096), false, &[]);
    put_req(
        &mut s,
        req(cmd_flags::FUA, cmd::WRITE, 2, 512, 5),
        false,
        b"hello",
    );
    put_req(&mut s, req(0, cmd::WRITE, 3, 0, 0), false, &[]);
    put_req(&mut s, req(0, cmd::FLUSH, 4, 0, 0), false, &[]);
    put_req(&mut s, req(0, cmd::BLOCK_STATUS, 5, 0, 1 << 20), false, &[]);
    put_req(&mut s, req(0, cmd::DISC, 6, 0, 0), false, &[]);
    (s, 1 + opts.len() + 6)
}

fn extended_stream() -> (Vec<u8>, usize) {
    let mut s = Vec::new();
    ClientFlags(client_flags::FIXED_NEWSTYLE).encode(&mut s);
    OptionRequest::ExtendedHeaders.encode(&mut s);
    OptionRequest::ExportName("e".into()).encode(&mut s);
    put_req(&mut s, req(0, cmd::WRITE, 1, 8, 3), true, b"abc");
    let bs = BlockStatusPayload {
        length: 1 << 40,
        ids: vec![1, 2],
    };
    let mut p = Vec::new();
    bs.encode(&mut p);
    let flags = cmd_flags::PAYLOAD_LEN | cmd_flags::REQ_ONE;
    put_req(
        &mut s,
        req(flags, cmd::BLOCK_STATUS, 2, 0, p.len() as u64),
        true,
        &p,
    );
    put_req(&mut s, req(0, cmd::TRIM, 3, 0, 1 << 33), true, &[]);
    put_req(&mut s, req(0, cmd::READ, 4, 4096, 1 << 16), true, &[]);
    put_req(&mut s, req(0, cmd::DISC, 5, 0, 0), true, &[]);
    (s, 3 + 5)
}

#[test]
fn one_byte_and_whole_give_identical_events() {
    for (flags, (stream, count)) in [
        (
            handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES,
            compact_stream(),
        ),
        (handshake_flags::FIXED_NEWSTYLE, extended_stream()),
        (
            handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES,
            extended_stream(),
        ),
    ] {
        let mut results = Vec::new();
        for chunk in [1, 3, 7, stream.len()] {
            let (events, out, used, c) = run(ServerCodec::newstyle(flags), &stream, chunk);
            assert_eq!(used, stream.len(), "chunk {chunk}");
            assert_eq!(events.len(), count, "chunk {chunk}");
            assert!(events.iter().all(|e| e.is_ok()));
            assert_eq!(c.phase(), Phase::Transmission);
            assert!(!c.is_dead());
            results.push((events, out));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]));
    }
}

#[test]
fn compact_events_are_decoded() {
    let (stream, _) = compact_stream();
    let flags = handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES;
    let (events, out, _, c) = run(ServerCodec::newstyle(flags), &stream, 1);
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events[0], ServerEvent::ClientFlags(3));
    assert!(c.no_zeroes());
    assert!(c.structured_replies());
    assert!(!c.extended_headers());
    assert_eq!(
        events[5],
        ServerEvent::Option(OptionRequest::Unknown {
            option: 99,
            data: vec![1, 2, 3]
        })
    );
    assert_eq!(
        events[8],
        ServerEvent::Request {
            header: req(cmd_flags::FUA, cmd::WRITE, 2, 512, 5),
            payload: Some(Bytes::from_static(b"hello")),
        }
    );
    assert_eq!(
        events[9],
        ServerEvent::Request {
            header: req(0, cmd::WRITE, 3, 0, 0),
            payload: Some(Bytes::new()),
        }
    );
    assert_eq!(
        events[7],
        ServerEvent::Request {
            header: req(0, cmd::READ, 1, 0, 4096),
            payload: None,
        }
    );
    // Greeting first.
    assert_eq!(&out[..8], b"NBDMAGIC");
    assert_eq!(&out[8..16], b"IHAVEOPT");
}

#[test]
fn extended_events_are_decoded() {
    let (stream, _) = extended_stream();
    let flags = handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES;
    let (events, out, _, c) = run(ServerCodec::newstyle(flags), &stream, 1);
    let events: Vec<_> = events.into_iter().map(Result::unwrap).collect();
    assert!(c.extended_headers() && c.structured_replies());
    assert!(!c.no_zeroes(), "the client did not ask for NO_ZEROES");
    // greeting 18 + ACK 20 + export name reply 10 + 124 zeroes
    assert_eq!(out.len(), 18 + 20 + 134);
    let ServerEvent::Request {
        header,
        payload: Some(p),
    } = &events[4]
    else {
        panic!("{:?}", events[4]);
    };
    assert_eq!(header.command, cmd::BLOCK_STATUS);
    let bs = BlockStatusPayload::decode(p).unwrap();
    assert_eq!(bs.ids, vec![1, 2]);
    assert_eq!(
        events[5],
        ServerEvent::Request {
            header: req(0, cmd::TRIM, 3, 0, 1 << 33),
            payload: None
        }
    );
}

#[test]
fn no_zeroes_when_both_agree() {
    let mut s = Vec::new();
    ClientFlags(client_flags::MASK).encode(&mut s);
    OptionRequest::ExportName(String::new()).encode(&mut s);
    let flags = handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES;
    let (events, out, _, c) = run(ServerCodec::newstyle(flags), &s, 1);
    assert_eq!(events.len(), 2);
    assert!(c.no_zeroes());
    assert_eq!(out.len(), 18 + 10);
}

#[test]
fn feed_waits_for_the_answer_to_go() {
    let mut c = ServerCodec::newstyle(handshake_flags::FIXED_NEWSTYLE);
    let mut s = Vec::new();
    ClientFlags(1).encode(&mut s);
    OptionRequest::Go {
        name: String::new(),
        requests: vec![],
    }
    .encode(&mut s);
    let go_end = s.len();
    put_req(&mut s, req(0, cmd::READ, 1, 0, 1), false, &[]);
    assert_eq!(c.feed(&s), 4);
    assert!(matches!(
        c.poll_event(),
        Some(Ok(ServerEvent::ClientFlags(1)))
    ));
    assert_eq!(c.feed(&s[4..]), go_end - 4);
    assert_eq!(c.feed(&s[go_end..]), 0, "an event is pending");
    assert!(matches!(c.poll_event(), Some(Ok(ServerEvent::Option(_)))));
    assert_eq!(c.awaiting_reply(), Some(opt::GO));
    assert!(!c.wants_read());
    assert_eq!(c.feed(&s[go_end..]), 0, "framing depends on the answer");
    assert_eq!(c.poll_event(), None);
    // An error keeps haggling going.
    let err = OptionReply::Error {
        reply_type: rep::ERR_UNKNOWN,
        message: "no".to_string(),
    };
    c.send_option_reply(opt::GO, &err).unwrap();
    assert_eq!(c.phase(), Phase::Options);
    assert_eq!(c.awaiting_reply(), None);
    // The request magic is not an option magic: caught after 8 bytes.
    assert_eq!(c.feed(&s[go_end..]), 8);
    assert!(matches!(
        c.poll_event(),
        Some(Err(ServerError::BadMagic { what: "option", .. }))
    ));
    assert!(c.is_dead());
    assert_eq!(c.poll_event(), None);
    assert_eq!(c.feed(&s), 0);
}

#[test]
fn oldstyle_goes_straight_to_transmission() {
    let mut c = ServerCodec::oldstyle(1 << 30, 3);
    assert_eq!(c.take_output().len(), 152);
    assert_eq!(c.phase(), Phase::Transmission);
    let mut s = Vec::new();
    put_req(&mut s, req(0, cmd::WRITE, 9, 0, 2), false, b"hi");
    assert_eq!(c.feed(&s), s.len());
    assert_eq!(
        c.poll_event(),
        Some(Ok(ServerEvent::Request {
            header: req(0, cmd::WRITE, 9, 0, 2),
            payload: Some(Bytes::from_static(b"hi")),
        }))
    );
    c.send_simple_reply(9, 0, &[]);
    assert_eq!(c.output().len(), 16);
    c.advance_output(10);
    assert_eq!(c.output().len(), 6);
    c.advance_output(100);
    assert!(!c.has_output());
}

fn in_transmission(extended: bool) -> ServerCodec {
    let mut c = ServerCodec::oldstyle(0, 0);
    c.take_output();
    c.set_extended_headers(extended);
    c
}

#[test]
fn oversize_and_bad_magic_are_typed_errors() {
    // Option payload over the cap: caught from the header, nothing buffered.
    let mut c = ServerCodec::newstyle(1);
    let mut s = vec![0, 0, 0, 1];
    OptionHeader {
        option: opt::LIST,
        length: ServerCodec::DEFAULT_MAX_OPTION_PAYLOAD + 1,
    }
    .encode(&mut s);
    s.extend_from_slice(&[0; 64]);
    assert_eq!(c.feed(&s), 4);
    c.poll_event().unwrap().unwrap();
    assert_eq!(c.feed(&s[4..]), 16);
    assert_eq!(
        c.poll_event(),
        Some(Err(ServerError::OptionTooLarge {
            option: opt::LIST,
            length: ServerCodec::DEFAULT_MAX_OPTION_PAYLOAD + 1,
            max: ServerCodec::DEFAULT_MAX_OPTION_PAYLOAD,
        }))
    );
    assert!(c.is_dead());

    // A configurable cap.
    let mut c = ServerCodec::newstyle(1);
    c.set_max_option_payload(8);
    let mut s = vec![0, 0, 0, 1];
    OptionRequest::ExportName("123456789".into()).encode(&mut s);
    assert_eq!(c.feed(&s), 4);
    c.poll_event().unwrap().unwrap();
    assert_eq!(c.feed(&s[4..]), 16);
    assert!(matches!(
        c.poll_event(),
        Some(Err(ServerError::OptionTooLarge { length: 9, .. }))
    ));

    // Write payload over the cap, compact and extended.
    for extended in [false, true] {
        let mut c = in_transmission(extended);
        c.set_max_payload(1024);
        let mut s = Vec::new();
        put_req(&mut s, req(0, cmd::WRITE, 1, 0, 1025), extended, &[0; 1025]);
        let hl = RequestHeader::encoded_len(extended);
        assert_eq!(c.feed(&s), hl);
        assert_eq!(
            c.poll_event(),
            Some(Err(ServerError::PayloadTooLarge {
                command: cmd::WRITE,
                length: 1025,
                max: 1024
            }))
        );
    }
    let mut c = in_transmission(true);
    let mut s = Vec::new();
    put_req(
        &mut s,
        req(cmd_flags::PAYLOAD_LEN, cmd::BLOCK_STATUS, 1, 0, u64::MAX),
        true,
        &[],
    );
    assert_eq!(c.feed(&s), 32);
    assert!(matches!(
        c.poll_event(),
        Some(Err(ServerError::PayloadTooLarge { .. }))
    ));

    // Bad request magic; compact magic while extended; extended while compact.
    let mut s = Vec::new();
    put_req(&mut s, req(0, cmd::READ, 1, 0, 1), false, &[]);
    for (extended, stream) in [
        (true, s.clone()),
        (false, {
            let mut e = Vec::new();
            put_req(&mut e, req(0, cmd::READ, 1, 0, 1), true, &[]);
            e
        }),
    ] {
        let mut c = in_transmission(extended);
        assert_eq!(c.feed(&stream), 4, "caught at the magic");
        assert!(matches!(
            c.poll_event(),
            Some(Err(ServerError::BadMagic {
                what: "request",
                ..
            }))
        ));
    }
    let mut c = in_transmission(false);
    s[0] ^= 0xff;
    c.feed(&s);
    assert!(matches!(
        c.poll_event(),
        Some(Err(ServerError::BadMagic { .. }))
    ));

    // Unknown client flags.
    let mut c = ServerCodec::newstyle(1);
    assert_eq!(c.feed(&[0, 0, 0, 5, 0xff]), 4);
    assert_eq!(
        c.poll_event(),
        Some(Err(ServerError::UnknownClientFlags(5)))
    );
    assert_eq!(c.client_flags(), None);

    // Known client flags the greeting did not advertise.
    for (hs, cf) in [(1, 3), (0, 1), (2, 1)] {
        let mut c = ServerCodec::newstyle(hs);
        assert_eq!(c.feed(&[0, 0, 0, cf]), 4);
        assert_eq!(
            c.poll_event(),
            Some(Err(ServerError::UnadvertisedClientFlags(u32::from(cf))))
        );
    }
}

#[test]
fn malformed_option_payload_is_not_fatal() {
    let mut c = ServerCodec::newstyle(1);
    let mut s = vec![0, 0, 0, 1];
    OptionHeader {
        option: opt::INFO,
        length: 3,
    }
    .encode(&mut s);
    s.extend_from_slice(&[0, 0, 0]);
    OptionRequest::Abort.encode(&mut s);
    let (events, _, used, c) = run(c_take(&mut c), &s, 1);
    assert_eq!(used, s.len());
    assert!(matches!(
        events[1],
        Ok(ServerEvent::InvalidOption {
            option: opt::INFO,
            ..
        })
    ));
    assert_eq!(events[2], Ok(ServerEvent::Option(OptionRequest::Abort)));
    assert!(!c.is_dead());
}

fn c_take(c: &mut ServerCodec) -> ServerCodec {
    core::mem::replace(c, ServerCodec::oldstyle(0, 0))
}

#[test]
fn chunks_follow_the_negotiated_header() {
    let bs = BlockStatus {
        context_id: 1,
        extents: vec![Extent {
            length: 4096,
            flags: 3,
        }],
    };
    for extended in [false, true] {
        let mut c = in_transmission(extended);
        c.send_none(7, 100, true).unwrap();
        c.send_offset_data(7, 100, 104, b"xy", false).unwrap();
        c.send_offset_hole(7, 100, 200, 512, false).unwrap();
        c.send_block_status(7, 100, &bs, true).unwrap();
        let e = ErrorChunk {
            error: 5,
            message: "m".into(),
            offset: Some(3),
        };
        c.send_error(7, 100, &e, true).unwrap();
        let out = c.take_output();
        let hl = if extended { 32 } else { 20 };
        let ReplyHeader::Chunk(h) = ReplyHeader::decode(&out[..hl]).unwrap() else {
            panic!()
        };
        assert_eq!(h.offset, extended.then_some(100));
        assert!(h.is_done());
        let total = 5 * hl + 10 + 12 + bs.encoded_len(extended) + e.encoded_len();
        assert_eq!(out.len(), total);
    }
    // Compact descriptors cannot hold 64-bit values; nothing is written.
    let mut c = in_transmission(false);
    let wide = BlockStatus {
        context_id: 1,
        extents: vec![Extent {
            length: 1 << 32,
            flags: 0,
        }],
    };
    assert!(c.send_block_status(1, 0, &wide, true).is_err());
    let long = ErrorChunk {
        error: 5,
        message: "x".repeat(70_000),
        offset: None,
    };
    assert!(c.send_error(1, 0, &long, true).is_err());
    assert!(!c.has_output());
}

#[test]
fn setters_override_negotiation() {
    let mut c = ServerCodec::newstyle(0);
    c.set_phase(Phase::Transmission);
    c.set_extended_headers(true);
    c.set_structured_replies(true);
    c.set_no_zeroes(true);
    assert_eq!(c.phase(), Phase::Transmission);
    assert!(c.extended_headers() && c.structured_replies() && c.no_zeroes());
    c.send_raw(b"evil");
    assert!(c.take_output().ends_with(b"evil"));
    c.send_export_name_reply(1, 1);
    assert_eq!(c.take_output().len(), 10);
}
