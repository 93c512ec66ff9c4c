//! Golden bytes for every message of the wire layer, written out by hand from
//! the layouts in the NBD specification (doc/proto.md): big-endian, fields in
//! spec order, magics spelled out. Each test checks encode == golden and
//! decode(golden) == value; the second half checks what decoders must reject.

use nbd_proto::consts::{cmd, cmd_flags, info, opt, rep, reply_flags, reply_type};
use nbd_proto::server::ServerCodec;
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
use nbd_proto::wire::{to_vec, WireError};

/// Bytes from hex, ignoring spaces.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex: {s}");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn with_zeroes(mut v: Vec<u8>, n: usize) -> Vec<u8> {
    v.resize(v.len() + n, 0);
    v
}

const NBDMAGIC: &str = "4e42444d41474943";
const IHAVEOPT: &str = "49484156454f5054";
const OPT_REPLY: &str = "0003e889045565a9";

// ---------------------------------------------------------------- handshake

#[test]
fn oldstyle_greeting() {
    let v = OldstyleGreeting {
        size: 0x1_0000_0000,
        flags: 0x0000_0003,
    };
    let g = with_zeroes(
        hex(&format!(
            "{NBDMAGIC} 0000420281861253 0000000100000000 00000003"
        )),
        124,
    );
    assert_eq!(g.len(), 152);
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(OldstyleGreeting::decode(&g), Ok(v));
    assert_eq!(v.transmission_flags(), 3);
    let prefix: [u8; 16] = g[..16].try_into().unwrap();
    assert_eq!(GreetingKind::decode(&prefix), Ok(GreetingKind::Oldstyle));
    assert_eq!(GreetingKind::Oldstyle.greeting_len(), 152);
    // The reserved bytes are ignored.
    let mut g2 = g.clone();
    g2[151] = 0xff;
    assert_eq!(OldstyleGreeting::decode(&g2), Ok(v));
}

#[test]
fn newstyle_greeting() {
    let v = NewstyleGreeting {
        handshake_flags: 0x0003,
    };
    let g = hex(&format!("{NBDMAGIC} {IHAVEOPT} 0003"));
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(NewstyleGreeting::decode(&g), Ok(v));
    let prefix: [u8; 16] = g[..16].try_into().unwrap();
    assert_eq!(GreetingKind::decode(&prefix), Ok(GreetingKind::Newstyle));
    assert_eq!(GreetingKind::Newstyle.greeting_len(), 18);
}

#[test]
fn client_flags() {
    let g = hex("00000003");
    assert_eq!(to_vec(|o| ClientFlags(3).encode(o)), g);
    assert_eq!(ClientFlags::decode(&g), Ok(ClientFlags(3)));
}

#[test]
fn export_name_reply_with_and_without_zeroes() {
    let v = ExportNameReply {
        size: 0x0010_0000,
        transmission_flags: 0x0005,
    };
    let short = hex("0000000000100000 0005");
    let long = with_zeroes(short.clone(), 124);
    assert_eq!(to_vec(|o| v.encode(o, false)), short);
    assert_eq!(to_vec(|o| v.encode(o, true)), long);
    assert_eq!(ExportNameReply::decode(&short), Ok(v));
    assert_eq!(ExportNameReply::decode(&long), Ok(v));
}

// ---------------------------------------------------------- option requests

/// Checks an option request against its golden bytes both ways.
fn option_golden(v: OptionRequest, golden: &str) {
    let g = hex(golden);
    assert_eq!(to_vec(|o| v.encode(o)), g, "{v:?}");
    let h = OptionHeader::decode(g[..16].try_into().unwrap()).unwrap();
    assert_eq!(h.option, v.code());
    assert_eq!(h.length as usize, g.len() - 16);
    assert_eq!(to_vec(|o| h.encode(o)), &g[..16]);
    assert_eq!(OptionRequest::decode(h.option, &g[16..]), Ok(v));
}

#[test]
fn option_requests_without_payload() {
    option_golden(
        OptionRequest::Abort,
        &format!("{IHAVEOPT} 00000002 00000000"),
    );
    option_golden(
        OptionRequest::List,
        &format!("{IHAVEOPT} 00000003 00000000"),
    );
    option_golden(
        OptionRequest::StartTls,
        &format!("{IHAVEOPT} 00000005 00000000"),
    );
    option_golden(
        OptionRequest::StructuredReply,
        &format!("{IHAVEOPT} 00000008 00000000"),
    );
    option_golden(
        OptionRequest::ExtendedHeaders,
        &format!("{IHAVEOPT} 0000000b 00000000"),
    );
}

#[test]
fn option_export_name() {
    option_golden(
        OptionRequest::ExportName("foo".into()),
        &format!("{IHAVEOPT} 00000001 00000003 666f6f"),
    );
    option_golden(
        OptionRequest::ExportName(String::new()),
        &format!("{IHAVEOPT} 00000001 00000000"),
    );
}

#[test]
fn option_info_and_go_with_info_requests() {
    option_golden(
        OptionRequest::Info {
            name: "ex".into(),
            requests: vec![info::BLOCK_SIZE, info::NAME],
        },
        &format!("{IHAVEOPT} 00000006 0000000c 00000002 6578 0002 0003 0001"),
    );
    option_golden(
        OptionRequest::Go {
            name: String::new(),
            requests: vec![],
        },
        &format!("{IHAVEOPT} 00000007 00000006 00000000 0000"),
    );
    option_golden(
        OptionRequest::Go {
            name: "a".into(),
            requests: vec![info::EXPORT, info::DESCRIPTION],
        },
        &format!("{IHAVEOPT} 00000007 0000000b 00000001 61 0002 0000 0002"),
    );
}

#[test]
fn option_list_and_set_meta_context_with_queries() {
    option_golden(
        OptionRequest::ListMetaContext {
            name: "ex".into(),
            queries: vec!["base:".into()],
        },
        &format!("{IHAVEOPT} 00000009 00000013 00000002 6578 00000001 00000005 626173653a"),
    );
    option_golden(
        OptionRequest::ListMetaContext {
            name: "ex".into(),
            queries: vec![],
        },
        &format!("{IHAVEOPT} 00000009 0000000a 00000002 6578 00000000"),
    );
    option_golden(
        OptionRequest::SetMetaContext {
            name: String::new(),
            queries: vec!["base:allocation".into(), "x".into()],
        },
        &format!(
            "{IHAVEOPT} 0000000a 00000020 00000000 00000002 \
             0000000f 626173653a616c6c6f636174696f6e 00000001 78"
        ),
    );
}

#[test]
fn option_unknown_is_kept_raw() {
    option_golden(
        OptionRequest::Unknown {
            option: 0x1234,
            data: vec![0xde, 0xad],
        },
        &format!("{IHAVEOPT} 00001234 00000002 dead"),
    );
    // The withdrawn PEEK_EXPORT is not decoded either.
    option_golden(
        OptionRequest::Unknown {
            option: opt::PEEK_EXPORT,
            data: vec![],
        },
        &format!("{IHAVEOPT} 00000004 00000000"),
    );
}

// ----------------------------------------------------------- option replies

/// Checks an option reply against its golden bytes both ways.
fn reply_golden(option: u32, v: OptionReply, golden: &str) {
    let g = hex(golden);
    assert_eq!(to_vec(|o| v.encode(option, o)), g, "{v:?}");
    let h = OptionReplyHeader::decode(g[..20].try_into().unwrap()).unwrap();
    assert_eq!(h.option, option);
    assert_eq!(h.reply_type, v.reply_type());
    assert_eq!(OptionReply::decode(&h, &g[20..]), Ok(v.clone()));
    // The server codec emits the same bytes.
    let mut c = ServerCodec::newstyle(1);
    c.take_output();
    c.send_option_reply(option, &v).unwrap();
    assert_eq!(c.take_output(), g);
}

#[test]
fn option_reply_header() {
    let v = OptionReplyHeader {
        option: opt::GO,
        reply_type: rep::INFO,
        length: 12,
    };
    let g = hex(&format!("{OPT_REPLY} 00000007 00000003 0000000c"));
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(OptionReplyHeader::decode(g[..].try_into().unwrap()), Ok(v));
    assert!(!v.is_error());
}

#[test]
fn reply_ack() {
    reply_golden(
        opt::STRUCTURED_REPLY,
        OptionReply::Ack,
        &format!("{OPT_REPLY} 00000008 00000001 00000000"),
    );
}

#[test]
fn reply_server() {
    reply_golden(
        opt::LIST,
        OptionReply::Server(ServerEntry {
            name: "ex".into(),
            description: "hi".into(),
        }),
        &format!("{OPT_REPLY} 00000003 00000002 00000008 00000002 6578 6869"),
    );
    reply_golden(
        opt::LIST,
        OptionReply::Server(ServerEntry {
            name: String::new(),
            description: String::new(),
        }),
        &format!("{OPT_REPLY} 00000003 00000002 00000004 00000000"),
    );
}

#[test]
fn reply_info_export() {
    reply_golden(
        opt::GO,
        OptionReply::Info(Info::Export {
            size: 0x4000_0000,
            transmission_flags: 0x0005,
        }),
        &format!("{OPT_REPLY} 00000007 00000003 0000000c 0000 0000000040000000 0005"),
    );
}

#[test]
fn reply_info_name_and_description() {
    reply_golden(
        opt::INFO,
        OptionReply::Info(Info::Name("ex".into())),
        &format!("{OPT_REPLY} 00000006 00000003 00000004 0001 6578"),
    );
    reply_golden(
        opt::INFO,
        OptionReply::Info(Info::Description("hi".into())),
        &format!("{OPT_REPLY} 00000006 00000003 00000004 0002 6869"),
    );
}

#[test]
fn reply_info_block_size() {
    reply_golden(
        opt::GO,
        OptionReply::Info(Info::BlockSize(BlockSize {
            minimum: 1,
            preferred: 4096,
            maximum: 0x0200_0000,
        })),
        &format!("{OPT_REPLY} 00000007 00000003 0000000e 0003 00000001 00001000 02000000"),
    );
}

#[test]
fn reply_info_unknown() {
    reply_golden(
        opt::GO,
        OptionReply::Info(Info::Unknown {
            info_type: 9,
            data: vec![1, 2],
        }),
        &format!("{OPT_REPLY} 00000007 00000003 00000004 0009 0102"),
    );
}

#[test]
fn reply_meta_context() {
    reply_golden(
        opt::SET_META_CONTEXT,
        OptionReply::MetaContext(MetaContext {
            id: 1,
            name: "base:allocation".into(),
        }),
        &format!("{OPT_REPLY} 0000000a 00000004 00000013 00000001 626173653a616c6c6f636174696f6e"),
    );
}

#[test]
fn reply_errors() {
    reply_golden(
        0x1234,
        OptionReply::Error {
            reply_type: rep::ERR_UNSUP,
            message: String::new(),
        },
        &format!("{OPT_REPLY} 00001234 80000001 00000000"),
    );
    reply_golden(
        opt::GO,
        OptionReply::Error {
            reply_type: rep::ERR_UNKNOWN,
            message: "no".into(),
        },
        &format!("{OPT_REPLY} 00000007 80000006 00000002 6e6f"),
    );
    reply_golden(
        opt::EXTENDED_HEADERS,
        OptionReply::Error {
            reply_type: rep::ERR_EXT_HEADER_REQD,
            message: String::new(),
        },
        &format!("{OPT_REPLY} 0000000b 8000000a 00000000"),
    );
    // Any type with bit 31 is an error, known or not.
    reply_golden(
        opt::LIST,
        OptionReply::Error {
            reply_type: 0x8000_0100,
            message: "x".into(),
        },
        &format!("{OPT_REPLY} 00000003 80000100 00000001 78"),
    );
    let h = OptionReplyHeader::decode(
        &hex(&format!("{OPT_REPLY} 00000003 80000100 00000001"))
            .try_into()
            .unwrap(),
    )
    .unwrap();
    assert!(h.is_error());
}

#[test]
fn reply_unknown_type() {
    reply_golden(
        opt::LIST,
        OptionReply::Unknown {
            reply_type: 5,
            data: vec![0xff],
        },
        &format!("{OPT_REPLY} 00000003 00000005 00000001 ff"),
    );
}

// ----------------------------------------------------------------- requests

#[test]
fn compact_request_header() {
    let v = RequestHeader {
        flags: cmd_flags::FUA,
        command: cmd::WRITE,
        cookie: 0x0102_0304_0506_0708,
        offset: 0x1000,
        length: 0x200,
    };
    let g = hex("25609513 0001 0001 0102030405060708 0000000000001000 00000200");
    assert_eq!(g.len(), 28);
    assert_eq!(to_vec(|o| v.encode(false, o).unwrap()), g);
    let (arr, n) = v.to_array(false).unwrap();
    assert_eq!(&arr[..n], &g[..]);
    assert_eq!(RequestHeader::decode(&g, false), Ok(v));
}

#[test]
fn extended_request_header() {
    let v = RequestHeader {
        flags: cmd_flags::PAYLOAD_LEN,
        command: cmd::BLOCK_STATUS,
        cookie: 9,
        offset: 0,
        length: 0x1_0000_0000,
    };
    let g = hex("21e41c71 0020 0007 0000000000000009 0000000000000000 0000000100000000");
    assert_eq!(g.len(), 32);
    assert_eq!(to_vec(|o| v.encode(true, o).unwrap()), g);
    let (arr, n) = v.to_array(true).unwrap();
    assert_eq!(&arr[..n], &g[..]);
    assert_eq!(RequestHeader::decode(&g, true), Ok(v));
}

#[test]
fn block_status_payload() {
    let v = BlockStatusPayload {
        length: 0x1_0000,
        ids: vec![1, 2],
    };
    let g = hex("0000000000010000 00000001 00000002");
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(v.encoded_len(), g.len());
    assert_eq!(BlockStatusPayload::decode(&g), Ok(v));
    let empty = BlockStatusPayload {
        length: 7,
        ids: vec![],
    };
    assert_eq!(
        BlockStatusPayload::decode(&hex("0000000000000007")),
        Ok(empty)
    );
}

// ------------------------------------------------------------------ replies

#[test]
fn simple_reply() {
    let v = SimpleReply {
        error: 5,
        cookie: 0x0a,
    };
    let g = hex("67446698 00000005 000000000000000a");
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(ReplyHeader::decode(&g), Ok(ReplyHeader::Simple(v)));
    assert_eq!(ReplyHeader::Simple(v).cookie(), 0x0a);
    let mut c = ServerCodec::oldstyle(0, 0);
    c.take_output();
    c.send_simple_reply(0x0a, 5, b"");
    assert_eq!(c.take_output(), g);
}

#[test]
fn structured_chunk_header() {
    let v = ChunkHeader {
        flags: reply_flags::DONE,
        chunk_type: reply_type::NONE,
        cookie: 3,
        offset: None,
        length: 0,
    };
    let g = hex("668e33ef 0001 0000 0000000000000003 00000000");
    assert_eq!(g.len(), 20);
    assert_eq!(to_vec(|o| v.encode(o).unwrap()), g);
    assert_eq!(ReplyHeader::decode(&g), Ok(ReplyHeader::Chunk(v)));
    assert!(v.is_done() && !v.is_error());
}

#[test]
fn extended_chunk_header() {
    let v = ChunkHeader {
        flags: 0,
        chunk_type: reply_type::ERROR,
        cookie: 3,
        offset: Some(0x200),
        length: 0x1_0000_0008,
    };
    let g = hex("6e8a278c 0000 8001 0000000000000003 0000000000000200 0000000100000008");
    assert_eq!(g.len(), 32);
    assert_eq!(to_vec(|o| v.encode(o).unwrap()), g);
    assert_eq!(ReplyHeader::decode(&g), Ok(ReplyHeader::Chunk(v)));
    assert!(!v.is_done() && v.is_error());
}

/// A codec in transmission with the given header style.
fn codec(extended: bool) -> ServerCodec {
    let mut c = ServerCodec::oldstyle(0, 0);
    c.take_output();
    c.set_extended_headers(extended);
    c
}

#[test]
fn none_chunk() {
    let mut c = codec(false);
    c.send_none(3, 0x200, true).unwrap();
    assert_eq!(
        c.take_output(),
        hex("668e33ef 0001 0000 0000000000000003 00000000")
    );
    let mut c = codec(true);
    c.send_none(3, 0x200, true).unwrap();
    assert_eq!(
        c.take_output(),
        hex("6e8a278c 0001 0000 0000000000000003 0000000000000200 0000000000000000")
    );
}

#[test]
fn offset_data_prefix() {
    // Structured: header (length = 8 + data), then the 64-bit offset, then data.
    let g = hex("668e33ef 0001 0001 0000000000000003 0000000a 0000000000000204 6162");
    let mut c = codec(false);
    c.send_offset_data(3, 0x200, 0x204, b"ab", true).unwrap();
    assert_eq!(c.take_output(), g);
    let ReplyHeader::Chunk(h) = ReplyHeader::decode(&g[..20]).unwrap() else {
        panic!()
    };
    assert_eq!((h.chunk_type, h.length), (reply_type::OFFSET_DATA, 10));
    assert_eq!(u64::from_be_bytes(g[20..28].try_into().unwrap()), 0x204);

    // Extended: the header also carries the request offset.
    let g = hex(
        "6e8a278c 0000 0001 0000000000000003 0000000000000200 000000000000000a \
         0000000000000204 6162",
    );
    let mut c = codec(true);
    c.send_offset_data(3, 0x200, 0x204, b"ab", false).unwrap();
    assert_eq!(c.take_output(), g);
    let ReplyHeader::Chunk(h) = ReplyHeader::decode(&g[..32]).unwrap() else {
        panic!()
    };
    assert_eq!(h.offset, Some(0x200));
}

#[test]
fn offset_hole() {
    let v = OffsetHole {
        offset: 0x1000,
        length: 0x200,
    };
    let g = hex("0000000000001000 00000200");
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(OffsetHole::decode(&g), Ok(v));
    let mut c = codec(false);
    c.send_offset_hole(4, 0x1000, 0x1000, 0x200, true).unwrap();
    let whole = hex("668e33ef 0001 0002 0000000000000004 0000000c 0000000000001000 00000200");
    assert_eq!(c.take_output(), whole);
    let mut c = codec(true);
    c.send_offset_hole(4, 0x1000, 0x1000, 0x200, true).unwrap();
    let whole = hex(
        "6e8a278c 0001 0002 0000000000000004 0000000000001000 000000000000000c \
         0000000000001000 00000200",
    );
    assert_eq!(c.take_output(), whole);
}

#[test]
fn block_status_compact() {
    let v = BlockStatus {
        context_id: 1,
        extents: vec![
            Extent {
                length: 0x1000,
                flags: 3,
            },
            Extent {
                length: 0x2000,
                flags: 0,
            },
        ],
    };
    let g = hex("00000001 00001000 00000003 00002000 00000000");
    assert_eq!(to_vec(|o| v.encode(false, o)), g);
    assert_eq!(v.encoded_len(false), g.len());
    assert_eq!(BlockStatus::decode(&g, false), Ok(v.clone()));
    let mut c = codec(false);
    c.send_block_status(5, 0, &v, true).unwrap();
    let mut whole = hex("668e33ef 0001 0005 0000000000000005 00000014");
    whole.extend(&g);
    assert_eq!(c.take_output(), whole);
}

#[test]
fn block_status_ext() {
    let v = BlockStatus {
        context_id: 1,
        extents: vec![Extent {
            length: 0x1_0000_0000,
            flags: 1,
        }],
    };
    let g = hex("00000001 00000001 0000000100000000 0000000000000001");
    assert_eq!(to_vec(|o| v.encode(true, o)), g);
    assert_eq!(v.encoded_len(true), g.len());
    assert_eq!(BlockStatus::decode(&g, true), Ok(v.clone()));
    let mut c = codec(true);
    c.send_block_status(5, 0x10, &v, false).unwrap();
    let mut whole = hex("6e8a278c 0000 0006 0000000000000005 0000000000000010 0000000000000018");
    whole.extend(&g);
    assert_eq!(c.take_output(), whole);
}

#[test]
fn error_chunk() {
    let v = ErrorChunk {
        error: 22,
        message: "bad".into(),
        offset: None,
    };
    let g = hex("00000016 0003 626164");
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(v.encoded_len(), g.len());
    assert_eq!(ErrorChunk::decode(reply_type::ERROR, &g), Ok(v.clone()));
    let mut c = codec(false);
    c.send_error(6, 0, &v, true).unwrap();
    let mut whole = hex("668e33ef 0001 8001 0000000000000006 00000009");
    whole.extend(&g);
    assert_eq!(c.take_output(), whole);
}

#[test]
fn error_offset_chunk() {
    let v = ErrorChunk {
        error: 5,
        message: String::new(),
        offset: Some(0x1234),
    };
    let g = hex("00000005 0000 0000000000001234");
    assert_eq!(to_vec(|o| v.encode(o)), g);
    assert_eq!(v.encoded_len(), g.len());
    assert_eq!(
        ErrorChunk::decode(reply_type::ERROR_OFFSET, &g),
        Ok(v.clone())
    );
    let mut c = codec(true);
    c.send_error(6, 0x1000, &v, true).unwrap();
    let mut whole = hex("6e8a278c 0001 8002 0000000000000006 0000000000001000 000000000000000e");
    whole.extend(&g);
    assert_eq!(c.take_output(), whole);
}

#[test]
fn unknown_error_chunk_needs_only_the_prefix() {
    // An unknown error type: message kept, trailing bytes allowed.
    let g = hex("00000001 0001 78 ffff");
    assert_eq!(
        ErrorChunk::decode(0x8003, &g),
        Ok(ErrorChunk {
            error: 1,
            message: "x".into(),
            offset: None,
        })
    );
}

// --------------------------------------------------------------- rejections

fn is_bad_magic<T: std::fmt::Debug>(r: Result<T, WireError>) -> bool {
    matches!(r, Err(WireError::BadMagic { .. }))
}

fn is_bad_length<T: std::fmt::Debug>(r: Result<T, WireError>) -> bool {
    matches!(r, Err(WireError::BadLength { .. }))
}

fn is_bad_value<T: std::fmt::Debug>(r: Result<T, WireError>) -> bool {
    matches!(r, Err(WireError::BadValue { .. }))
}

#[test]
fn reject_bad_magic_everywhere() {
    let arr16 = |s: &str| -> [u8; 16] { hex(s).try_into().unwrap() };
    // Greeting, first and second magic.
    assert!(is_bad_magic(GreetingKind::decode(&arr16(&format!(
        "4e42444d41474944 {IHAVEOPT}"
    )))));
    assert!(is_bad_magic(GreetingKind::decode(&arr16(&format!(
        "{NBDMAGIC} 49484156454f5055"
    )))));
    // Each greeting decoder insists on its own kind.
    let old = with_zeroes(
        hex(&format!(
            "{NBDMAGIC} 0000420281861253 0000000000000000 00000000"
        )),
        124,
    );
    let new = hex(&format!("{NBDMAGIC} {IHAVEOPT} 0001"));
    assert!(is_bad_magic(NewstyleGreeting::decode(&old[..18])));
    let mut new_as_old = new.clone();
    new_as_old.resize(152, 0);
    assert!(is_bad_magic(OldstyleGreeting::decode(&new_as_old)));
    let mut bad = new.clone();
    bad[0] = 0;
    assert!(is_bad_magic(NewstyleGreeting::decode(&bad)));
    let mut bad = old.clone();
    bad[15] ^= 1;
    assert!(is_bad_magic(OldstyleGreeting::decode(&bad)));
    // Option request.
    assert!(is_bad_magic(OptionHeader::decode(&arr16(
        "49484156454f5055 00000001 00000000"
    ))));
    // Option reply.
    let r: [u8; 20] = hex("0003e889045565aa 00000001 00000001 00000000")
        .try_into()
        .unwrap();
    assert!(is_bad_magic(OptionReplyHeader::decode(&r)));
    // Requests: wrong magic, and each magic in the other mode.
    let compact = hex("25609513 0000 0000 0000000000000001 0000000000000000 00000001");
    let ext = hex("21e41c71 0000 0000 0000000000000001 0000000000000000 0000000000000001");
    assert!(is_bad_magic(RequestHeader::decode(&compact, true)));
    assert!(is_bad_magic(RequestHeader::decode(&ext, false)));
    let mut bad = compact.clone();
    bad[3] = 0x14;
    assert!(is_bad_magic(RequestHeader::decode(&bad, false)));
    // Replies.
    assert!(is_bad_magic(ReplyHeader::decode(&hex(
        "67446699 00000000 0000000000000001"
    ))));
    assert!(is_bad_magic(ReplyHeader::decode(&hex(
        "25609513 00000000 0000000000000001"
    ))));
}

#[test]
fn reject_wrong_fixed_lengths() {
    assert!(is_bad_length(OldstyleGreeting::decode(&[0; 151])));
    assert!(is_bad_length(NewstyleGreeting::decode(&[0; 17])));
    assert!(is_bad_length(ClientFlags::decode(&[0; 5])));
    assert!(is_bad_length(ClientFlags::decode(&[0; 3])));
    assert!(is_bad_length(ExportNameReply::decode(&[0; 11])));
    assert!(is_bad_length(ExportNameReply::decode(&[0; 133])));
    let compact = hex("25609513 0000 0000 0000000000000001 0000000000000000 00000001");
    assert!(is_bad_length(RequestHeader::decode(&compact[..27], false)));
    let mut long = compact.clone();
    long.push(0);
    assert!(is_bad_length(RequestHeader::decode(&long, false)));
    // A reply header must be exactly as long as its magic says.
    let simple = hex("67446698 00000000 0000000000000001");
    assert!(is_bad_length(ReplyHeader::decode(&simple[..15])));
    let structured = hex("668e33ef 0001 0000 0000000000000003 00000000");
    assert!(is_bad_length(ReplyHeader::decode(&structured[..16])));
    assert!(is_bad_length(ReplyHeader::decode(&[0x66, 0x8e])));
}

#[test]
fn reject_option_payloads() {
    // Options without payload must have none.
    for o in [
        opt::ABORT,
        opt::LIST,
        opt::STARTTLS,
        opt::STRUCTURED_REPLY,
        opt::EXTENDED_HEADERS,
    ] {
        assert!(is_bad_length(OptionRequest::decode(o, &[0])));
    }
    // INFO/GO: request count must match what follows.
    assert!(is_bad_length(OptionRequest::decode(
        opt::GO,
        &hex("00000000 0002 0003")
    )));
    assert!(is_bad_length(OptionRequest::decode(
        opt::INFO,
        &hex("00000000 0000 00")
    )));
    // Name length past the payload.
    assert!(is_bad_length(OptionRequest::decode(
        opt::GO,
        &hex("00000005 6162 0000")
    )));
    // Meta context: more queries than bytes, trailing bytes.
    assert!(is_bad_length(OptionRequest::decode(
        opt::SET_META_CONTEXT,
        &hex("00000000 ffffffff 00000000")
    )));
    assert!(is_bad_length(OptionRequest::decode(
        opt::LIST_META_CONTEXT,
        &hex("00000000 00000000 00")
    )));
    // Export names: NUL, bad UTF-8, longer than 4096.
    assert!(matches!(
        OptionRequest::decode(opt::EXPORT_NAME, b"a\0b"),
        Err(WireError::BadString { .. })
    ));
    assert!(matches!(
        OptionRequest::decode(opt::EXPORT_NAME, &[0xff]),
        Err(WireError::BadString { .. })
    ));
    assert!(OptionRequest::decode(opt::EXPORT_NAME, &[b'a'; 4096]).is_ok());
    assert!(OptionRequest::decode(opt::EXPORT_NAME, &[b'a'; 4097]).is_err());
    let mut long_name = hex("00001001");
    long_name.extend([b'a'; 4097]);
    long_name.extend(hex("0000"));
    assert!(is_bad_length(OptionRequest::decode(opt::GO, &long_name)));
}

#[test]
fn reject_info_payloads_of_the_wrong_size() {
    let export = hex("0000 0000000040000000 0005");
    assert!(Info::decode(&export).is_ok());
    assert!(is_bad_length(Info::decode(&export[..11])));
    let mut longer = export.clone();
    longer.push(0);
    assert!(is_bad_length(Info::decode(&longer)));
    let bs = hex("0003 00000001 00001000 02000000");
    assert!(Info::decode(&bs).is_ok());
    assert!(is_bad_length(Info::decode(&bs[..13])));
    let mut longer = bs.clone();
    longer.push(0);
    assert!(is_bad_length(Info::decode(&longer)));
    assert!(is_bad_length(Info::decode(&[0])));
    assert!(is_bad_length(Info::decode(&[])));
}

fn block_size(minimum: u32, preferred: u32, maximum: u32) -> Result<Info, WireError> {
    let mut p = hex("0003");
    for v in [minimum, preferred, maximum] {
        p.extend(v.to_be_bytes());
    }
    Info::decode(&p)
}

#[test]
fn reject_invalid_block_sizes() {
    // Valid edges.
    assert!(block_size(1, 512, 512).is_ok());
    assert!(block_size(65536, 65536, 65536 * 3).is_ok());
    assert!(block_size(512, 4096, u32::MAX).is_ok());
    assert!(block_size(1, 1 << 31, 1 << 31).is_ok());
    // Minimum: zero, not a power of two, above 64 KiB.
    assert!(is_bad_value(block_size(0, 4096, 4096)));
    assert!(is_bad_value(block_size(3, 4096, 4096)));
    assert!(is_bad_value(block_size(1 << 17, 1 << 17, 1 << 17)));
    // Preferred: below 512, not a power of two, below the minimum.
    assert!(is_bad_value(block_size(1, 256, 4096)));
    assert!(is_bad_value(block_size(1, 4095, 4096)));
    assert!(is_bad_value(block_size(65536, 32768, 65536)));
    // Maximum: not a multiple of the minimum, below the preferred.
    assert!(is_bad_value(block_size(4096, 4096, 4096 * 3 + 1)));
    assert!(is_bad_value(block_size(512, 4096, 2048)));
}

#[test]
fn export_size_above_int64_max_decodes() {
    // libnbd accepts it; nbd_get_size then reports EOVERFLOW.
    for (text, size) in [
        ("0000 7fffffffffffffff 0001", i64::MAX as u64),
        ("0000 8000000000000000 0001", 1 << 63),
        ("0000 ffffffffffffffff 0001", u64::MAX),
    ] {
        assert_eq!(
            Info::decode(&hex(text)).unwrap(),
            Info::Export {
                size,
                transmission_flags: 1
            }
        );
    }
}

fn reply_header(reply_type: u32, length: u32) -> OptionReplyHeader {
    OptionReplyHeader {
        option: opt::GO,
        reply_type,
        length,
    }
}

#[test]
fn reject_ack_with_payload() {
    let h = reply_header(rep::ACK, 1);
    assert!(is_bad_length(OptionReply::decode(&h, &[0])));
}

#[test]
fn reject_payload_not_matching_header() {
    let h = reply_header(rep::SERVER, 8);
    assert!(is_bad_length(OptionReply::decode(&h, &hex("00000000"))));
}

#[test]
fn reject_option_reply_over_64_mib() {
    let at = hex(&format!("{OPT_REPLY} 00000003 00000002 04000000"));
    assert!(OptionReplyHeader::decode(&at.try_into().unwrap()).is_ok());
    let over = hex(&format!("{OPT_REPLY} 00000003 00000002 04000001"));
    assert!(is_bad_length(OptionReplyHeader::decode(
        &over.try_into().unwrap()
    )));
    let max = hex(&format!("{OPT_REPLY} 00000003 00000002 ffffffff"));
    assert!(is_bad_length(OptionReplyHeader::decode(
        &max.try_into().unwrap()
    )));
}

#[test]
fn reject_error_message_over_4096() {
    let ok = vec![b'e'; 4096];
    let h = reply_header(rep::ERR_UNSUP, 4096);
    assert!(OptionReply::decode(&h, &ok).is_ok());
    let long = vec![b'e'; 4097];
    let h = reply_header(rep::ERR_UNSUP, 4097);
    assert!(is_bad_length(OptionReply::decode(&h, &long)));
}

#[test]
fn reject_server_name_length_past_payload() {
    assert!(ServerEntry::decode(&hex("00000002 6578")).is_ok());
    assert!(is_bad_length(ServerEntry::decode(&hex("00000003 6578"))));
    assert!(is_bad_length(ServerEntry::decode(&hex("ffffffff 6578"))));
    assert!(is_bad_length(ServerEntry::decode(&hex("000000"))));
    let h = reply_header(rep::SERVER, 6);
    assert!(is_bad_length(OptionReply::decode(
        &h,
        &hex("ffffffff 6578")
    )));
}

#[test]
fn reject_meta_context_without_id() {
    assert!(is_bad_length(MetaContext::decode(&hex("000001"))));
}

#[test]
fn reject_block_status_lengths() {
    // Compact: 4 + 8n with n >= 1.
    let one = hex("00000001 00001000 00000000");
    assert!(BlockStatus::decode(&one, false).is_ok());
    assert!(is_bad_length(BlockStatus::decode(&one[..4], false)));
    assert!(is_bad_length(BlockStatus::decode(&one[..11], false)));
    let mut thirteen = one.clone();
    thirteen.push(0);
    assert!(is_bad_length(BlockStatus::decode(&thirteen, false)));
    // Extended: 8 + 16n with n >= 1, and n in the count field.
    let ext = hex("00000001 00000001 0000000000001000 0000000000000000");
    assert!(BlockStatus::decode(&ext, true).is_ok());
    assert!(is_bad_length(BlockStatus::decode(&ext[..8], true)));
    assert!(is_bad_length(BlockStatus::decode(&ext[..23], true)));
    let count2 = hex("00000001 00000002 0000000000001000 0000000000000000");
    assert!(is_bad_value(BlockStatus::decode(&count2, true)));
    let count0 = hex("00000001 00000000 0000000000001000 0000000000000000");
    assert!(is_bad_value(BlockStatus::decode(&count0, true)));
    // A compact payload is not an extended one.
    assert!(BlockStatus::decode(&one, true).is_err());
}

#[test]
fn reject_zero_length_hole() {
    assert!(is_bad_value(OffsetHole::decode(&hex(
        "0000000000001000 00000000"
    ))));
    assert!(is_bad_length(OffsetHole::decode(&hex(
        "0000000000001000 000001"
    ))));
    assert!(is_bad_length(OffsetHole::decode(&hex(
        "0000000000001000 00000001 00"
    ))));
}

#[test]
fn reject_error_chunks() {
    // Shorter than the 6-byte prefix.
    assert!(is_bad_length(ErrorChunk::decode(
        reply_type::ERROR,
        &hex("00000005 00")
    )));
    // Message past the end.
    assert!(is_bad_length(ErrorChunk::decode(
        reply_type::ERROR,
        &hex("00000005 0004 616263")
    )));
    assert!(is_bad_length(ErrorChunk::decode(
        0x8003,
        &hex("00000005 ffff 616263")
    )));
    // ERROR: nothing after the message.
    assert!(is_bad_length(ErrorChunk::decode(
        reply_type::ERROR,
        &hex("00000005 0001 61 00")
    )));
    // ERROR_OFFSET: exactly 8 bytes of offset after the message.
    assert!(is_bad_length(ErrorChunk::decode(
        reply_type::ERROR_OFFSET,
        &hex("00000005 0001 61 00000000000010")
    )));
    assert!(is_bad_length(ErrorChunk::decode(
        reply_type::ERROR_OFFSET,
        &hex("00000005 0001 61 0000000000001000 00")
    )));
    // Message over 4096 bytes even when it fits.
    let mut p = hex("00000005 1001");
    p.extend([b'a'; 4097]);
    assert!(is_bad_length(ErrorChunk::decode(reply_type::ERROR, &p)));
}

#[test]
fn reject_block_status_payload_lengths() {
    assert!(is_bad_length(BlockStatusPayload::decode(&hex(
        "00000000000000"
    ))));
    assert!(is_bad_length(BlockStatusPayload::decode(&hex(
        "0000000000000001 000000"
    ))));
}

#[test]
fn encoders_refuse_what_the_header_cannot_carry() {
    let big = RequestHeader {
        flags: 0,
        command: cmd::READ,
        cookie: 1,
        offset: 0,
        length: 1 << 32,
    };
    assert!(is_bad_value(big.encode(false, &mut Vec::new())));
    assert!(big.to_array(true).is_ok());
    let chunk = ChunkHeader {
        flags: 0,
        chunk_type: reply_type::OFFSET_DATA,
        cookie: 1,
        offset: None,
        length: 1 << 32,
    };
    let mut out = Vec::new();
    assert!(is_bad_value(chunk.encode(&mut out)));
    assert!(out.is_empty(), "nothing written on failure");
}
