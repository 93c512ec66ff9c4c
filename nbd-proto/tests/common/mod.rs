//! Shared helpers for the client tests: scripted server byte streams built
//! with the wire encoders, and a buffered driver that records where READ
//! payload lands.
#![allow(dead_code, unreachable_pub)]

use bytes::BufMut;
use nbd_proto::client::{Client, Command, CommandKind, Config, Event, State};
use nbd_proto::consts::{handshake_flags, info, opt, transmission_flags as tf};
use nbd_proto::wire::handshake::NewstyleGreeting;
use nbd_proto::wire::option::{BlockSize, Info, MetaContext, OptionReply};
use nbd_proto::wire::reply::{
    BlockStatus, ChunkHeader, ErrorChunk, Extent, OffsetHole, SimpleReply,
};
use std::collections::HashMap;

/// Which reply style the scripted connection negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Simple replies only.
    Simple,
    /// Structured replies, compact headers.
    Structured,
    /// Extended headers.
    Extended,
}

pub const SIZE: u64 = 1 << 20;
pub const FLAGS: u16 = tf::HAS_FLAGS
    | tf::SEND_FLUSH
    | tf::SEND_FUA
    | tf::SEND_TRIM
    | tf::SEND_WRITE_ZEROES
    | tf::SEND_DF
    | tf::SEND_CACHE
    | tf::SEND_FAST_ZERO;
pub const CTX: u32 = 7;

pub fn greeting(flags: u16) -> Vec<u8> {
    let mut v = Vec::new();
    NewstyleGreeting {
        handshake_flags: flags,
    }
    .encode(&mut v);
    v
}

pub fn opt_reply(option: u32, r: &OptionReply) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode(option, &mut v);
    v
}

pub fn ack(option: u32) -> Vec<u8> {
    opt_reply(option, &OptionReply::Ack)
}

pub fn unsup(option: u32) -> Vec<u8> {
    opt_reply(
        option,
        &OptionReply::Error {
            reply_type: nbd_proto::consts::rep::ERR_UNSUP,
            message: String::new(),
        },
    )
}

/// The GO replies of a good server: export info, block sizes, ACK.
pub fn go_ok(size: u64, flags: u16) -> Vec<u8> {
    let mut v = opt_reply(
        opt::GO,
        &OptionReply::Info(Info::Export {
            size,
            transmission_flags: flags,
        }),
    );
    v.extend(opt_reply(
        opt::GO,
        &OptionReply::Info(Info::BlockSize(BlockSize {
            minimum: 1,
            preferred: 4096,
            maximum: 32 * 1024 * 1024,
        })),
    ));
    v.extend(ack(opt::GO));
    v
}

pub fn config(mode: Mode) -> Config {
    Config {
        request_structured_replies: mode != Mode::Simple,
        request_extended_headers: mode == Mode::Extended,
        request_meta_contexts: vec!["base:allocation".into()],
        ..Config::default()
    }
}

/// The server bytes of a complete good negotiation for `config(mode)`.
pub fn handshake(mode: Mode) -> Vec<u8> {
    let mut v = greeting(handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES);
    match mode {
        Mode::Simple => {}
        Mode::Structured => v.extend(ack(opt::STRUCTURED_REPLY)),
        Mode::Extended => v.extend(ack(opt::EXTENDED_HEADERS)),
    }
    if mode != Mode::Simple {
        v.extend(opt_reply(
            opt::SET_META_CONTEXT,
            &OptionReply::MetaContext(MetaContext {
                id: CTX,
                name: "base:allocation".into(),
            }),
        ));
        v.extend(ack(opt::SET_META_CONTEXT));
    }
    v.extend(go_ok(SIZE, FLAGS));
    v
}

/// A driver that feeds bytes and records READ payload per cookie, asserting
/// every payload lands inside its command's buffer.
#[derive(Default)]
pub struct Harness {
    pub bufs: HashMap<u64, Vec<u8>>,
    pub events: Vec<Event>,
}

impl Harness {
    /// Feeds `input`, returns how many bytes the client consumed.
    pub fn feed(&mut self, c: &mut Client, input: &[u8]) -> usize {
        let bufs = &mut self.bufs;
        let n = c.feed(input, &mut |cookie, off, data| {
            let buf = bufs
                .get_mut(&cookie)
                .unwrap_or_else(|| panic!("payload for cookie {cookie} without a read buffer"));
            let off = off as usize;
            assert!(
                off + data.len() <= buf.len(),
                "payload outside the read buffer"
            );
            buf[off..off + data.len()].copy_from_slice(data);
        });
        assert!(n <= input.len());
        while let Some(e) = c.poll_event() {
            if let Event::ReadChunk {
                cookie,
                buf_offset,
                len,
                kind: nbd_proto::client::ChunkKind::Hole,
            } = e
            {
                let buf = self.bufs.get_mut(&cookie).expect("hole without buffer");
                let (o, l) = (buf_offset as usize, len as usize);
                assert!(o + l <= buf.len(), "hole outside the read buffer");
                buf[o..o + l].fill(0);
            }
            self.events.push(e);
        }
        n
    }

    /// Submits a READ and prepares a buffer (filled with 0xee) for it.
    pub fn read(&mut self, c: &mut Client, offset: u64, len: u64) -> u64 {
        let cookie = c
            .submit(Command::new(CommandKind::Read, offset, len))
            .expect("read submitted");
        self.bufs.insert(cookie, vec![0xee; len as usize]);
        cookie
    }

    /// The completion result for a cookie, if seen.
    pub fn completion(&self, cookie: u64) -> Option<Result<(), i32>> {
        self.events.iter().find_map(|e| match e {
            Event::Complete { cookie: c, result } if *c == cookie => {
                Some(result.as_ref().map(|_| ()).map_err(|e| e.errno))
            }
            _ => None,
        })
    }

    pub fn dead(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Dead(_)))
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// A client in the transmission phase after a good negotiation, its output drained.
pub fn ready(mode: Mode) -> (Client, Harness) {
    let mut c = Client::new(config(mode));
    let mut h = Harness::default();
    let hs = handshake(mode);
    assert_eq!(h.feed(&mut c, &hs), hs.len());
    drain(&mut c);
    assert_eq!(c.state(), State::Ready, "events: {:?}", h.events);
    h.events.clear();
    (c, h)
}

/// Discards the client's pending output.
pub fn drain(c: &mut Client) -> Vec<u8> {
    let mut out = Vec::new();
    c.take_output(&mut out, &mut |_, _, _| &[]);
    out
}

// ----- reply builders -----

pub fn simple(cookie: u64, error: u32) -> Vec<u8> {
    let mut v = Vec::new();
    SimpleReply { error, cookie }.encode(&mut v);
    v
}

/// A chunk header for `mode` (structured or extended; `req_offset` is used
/// only with extended headers).
pub fn chunk(mode: Mode, flags: u16, ty: u16, cookie: u64, req_offset: u64, len: u64) -> Vec<u8> {
    let mut v = Vec::new();
    ChunkHeader {
        flags,
        chunk_type: ty,
        cookie,
        offset: (mode == Mode::Extended).then_some(req_offset),
        length: len,
    }
    .encode(&mut v)
    .expect("chunk header");
    v
}

pub fn data_chunk(
    mode: Mode,
    done: bool,
    cookie: u64,
    req_offset: u64,
    offset: u64,
    data: &[u8],
) -> Vec<u8> {
    let mut v = chunk(
        mode,
        if done { 1 } else { 0 },
        nbd_proto::consts::reply_type::OFFSET_DATA,
        cookie,
        req_offset,
        8 + data.len() as u64,
    );
    v.put_u64(offset);
    v.extend_from_slice(data);
    v
}

pub fn hole_chunk(
    mode: Mode,
    done: bool,
    cookie: u64,
    req_offset: u64,
    offset: u64,
    len: u32,
) -> Vec<u8> {
    let mut v = chunk(
        mode,
        if done { 1 } else { 0 },
        nbd_proto::consts::reply_type::OFFSET_HOLE,
        cookie,
        req_offset,
        12,
    );
    OffsetHole {
        offset,
        length: len,
    }
    .encode(&mut v);
    v
}

pub fn none_chunk(mode: Mode, cookie: u64, req_offset: u64) -> Vec<u8> {
    chunk(
        mode,
        1,
        nbd_proto::consts::reply_type::NONE,
        cookie,
        req_offset,
        0,
    )
}

pub fn error_chunk(
    mode: Mode,
    done: bool,
    cookie: u64,
    req_offset: u64,
    e: &ErrorChunk,
) -> Vec<u8> {
    let ty = if e.offset.is_some() {
        nbd_proto::consts::reply_type::ERROR_OFFSET
    } else {
        nbd_proto::consts::reply_type::ERROR
    };
    let mut v = chunk(
        mode,
        if done { 1 } else { 0 },
        ty,
        cookie,
        req_offset,
        e.encoded_len() as u64,
    );
    e.encode(&mut v);
    v
}

pub fn status_chunk(
    mode: Mode,
    done: bool,
    cookie: u64,
    req_offset: u64,
    ctx: u32,
    extents: &[(u64, u64)],
) -> Vec<u8> {
    let wide = mode == Mode::Extended;
    let bs = BlockStatus {
        context_id: ctx,
        extents: extents
            .iter()
            .map(|&(length, flags)| Extent { length, flags })
            .collect(),
    };
    let ty = if wide {
        nbd_proto::consts::reply_type::BLOCK_STATUS_EXT
    } else {
        nbd_proto::consts::reply_type::BLOCK_STATUS
    };
    let mut v = chunk(
        mode,
        if done { 1 } else { 0 },
        ty,
        cookie,
        req_offset,
        bs.encoded_len(wide) as u64,
    );
    bs.encode(wide, &mut v);
    v
}

pub const INFO_EXPORT: u16 = info::EXPORT;
