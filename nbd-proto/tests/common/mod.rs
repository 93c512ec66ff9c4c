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
    {
        let mut config = Config::default();
        config.request_structured_replies = mode != Mode::Simple;
        config.request_extended_headers = mode == Mode::Extended;
        config.request_meta_contexts = vec!["base:allocation".into()];
        config
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
            Event::Complete {
                cookie: c, result, ..
            } if *c == cookie => Some(result.as_ref().map(|_| ()).map_err(|e| e.errno)),
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

// ----- helpers for the hostile-input suites -----

/// The reason of the client's `Dead` event, if any.
pub fn dead_reason(h: &Harness) -> Option<&nbd_proto::client::ProtocolError> {
    h.events.iter().find_map(|e| match e {
        Event::Dead(why) => Some(why),
        _ => None,
    })
}

/// Asserts the client died exactly once, for a reason with `errno`, and is inert.
pub fn assert_dead(c: &Client, h: &Harness, errno: i32) {
    assert_eq!(c.state(), State::Dead, "events: {:?}", h.events);
    let deaths: Vec<_> = h
        .events
        .iter()
        .filter(|e| matches!(e, Event::Dead(_)))
        .collect();
    assert_eq!(deaths.len(), 1, "events: {:?}", h.events);
    let why = dead_reason(h).expect("dead event");
    assert_eq!(why.errno(), errno, "dead because: {why}");
    assert!(!c.wants_read(), "a dead client must not want input");
    assert!(!c.wants_write(), "a dead client must not want output");
    assert_eq!(c.pending_output(), 0);
    assert_eq!(c.in_flight(), 0);
}

/// Asserts the client is not dead.
pub fn assert_alive(c: &Client, h: &Harness) {
    assert!(!h.dead(), "unexpected death: {:?}", dead_reason(h));
    assert_ne!(c.state(), State::Dead);
}

/// How many `Complete` events `cookie` got.
pub fn completions(h: &Harness, cookie: u64) -> usize {
    h.events
        .iter()
        .filter(|e| matches!(e, Event::Complete { cookie: c, .. } if *c == cookie))
        .count()
}

/// The result of `cookie`, asserting it completed exactly once.
pub fn result_of(h: &Harness, cookie: u64) -> Result<(), i32> {
    assert_eq!(
        completions(h, cookie),
        1,
        "cookie {cookie} must complete exactly once; events: {:?}",
        h.events
    );
    h.completion(cookie).expect("completion")
}

/// A good 8-byte READ answered correctly for `mode` must succeed: the
/// connection is still usable. Expects no other command in flight afterwards.
pub fn assert_usable(c: &mut Client, h: &mut Harness, mode: Mode) {
    assert_alive(c, h);
    drain(c);
    let cookie = h.read(c, 0, 8);
    let reply = match mode {
        Mode::Simple => {
            let mut v = simple(cookie, 0);
            v.extend_from_slice(b"usable!!");
            v
        }
        _ => data_chunk(mode, true, cookie, 0, 0, b"usable!!"),
    };
    assert_eq!(h.feed(c, &reply), reply.len());
    assert_eq!(result_of(h, cookie), Ok(()), "events: {:?}", h.events);
    assert_eq!(h.bufs[&cookie], b"usable!!");
    assert_eq!(c.state(), State::Ready);
    drain(c);
}

/// An option reply header with any type and (possibly lying) length.
pub fn raw_opt_header(option: u32, reply_type: u32, length: u32) -> Vec<u8> {
    let mut v = Vec::new();
    nbd_proto::wire::option::OptionReplyHeader {
        option,
        reply_type,
        length,
    }
    .encode(&mut v);
    v
}

/// An option reply with any type and a raw payload.
pub fn raw_opt_reply(option: u32, reply_type: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = raw_opt_header(option, reply_type, payload.len() as u32);
    v.extend_from_slice(payload);
    v
}

/// An error reply of type `reply_type` with no message.
pub fn opt_error(option: u32, reply_type: u32) -> Vec<u8> {
    raw_opt_reply(option, reply_type, &[])
}

/// An `NBD_REP_INFO` / `NBD_INFO_EXPORT` reply with any size.
pub fn info_export(option: u32, size: u64, flags: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.put_u16(info::EXPORT);
    p.put_u64(size);
    p.put_u16(flags);
    raw_opt_reply(option, nbd_proto::consts::rep::INFO, &p)
}

/// An `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE` reply with any values.
pub fn info_block_size(option: u32, min: u32, pref: u32, max: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.put_u16(info::BLOCK_SIZE);
    p.put_u32(min);
    p.put_u32(pref);
    p.put_u32(max);
    raw_opt_reply(option, nbd_proto::consts::rep::INFO, &p)
}

/// An oldstyle greeting.
pub fn oldstyle(size: u64, flags: u32) -> Vec<u8> {
    let mut v = Vec::new();
    nbd_proto::wire::handshake::OldstyleGreeting { size, flags }.encode(&mut v);
    v
}

/// The reply to `NBD_OPT_EXPORT_NAME`.
pub fn export_name_reply(size: u64, flags: u16, zeroes: bool) -> Vec<u8> {
    let mut v = Vec::new();
    nbd_proto::wire::handshake::ExportNameReply {
        size,
        transmission_flags: flags,
    }
    .encode(&mut v, zeroes);
    v
}

/// Splits client output made only of option requests into (option, payload).
pub fn parse_options(mut out: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    while !out.is_empty() {
        assert!(out.len() >= 16, "truncated option request: {out:?}");
        assert_eq!(&out[..8], b"IHAVEOPT", "option request magic");
        let option = u32::from_be_bytes(out[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(out[12..16].try_into().unwrap()) as usize;
        assert!(out.len() >= 16 + len, "truncated option payload");
        v.push((option, out[16..16 + len].to_vec()));
        out = &out[16 + len..];
    }
    v
}

/// The server bytes of a good negotiation for `config(mode)` up to (not
/// including) the replies to `NBD_OPT_GO`.
pub fn handshake_before_go(mode: Mode) -> Vec<u8> {
    let full = handshake(mode);
    let go = go_ok(SIZE, FLAGS);
    full[..full.len() - go.len()].to_vec()
}

/// A client driven through `server` with `cfg`, asserting it is Ready.
pub fn ready_with(cfg: Config, server: &[u8]) -> (Client, Harness) {
    let mut c = Client::new(cfg);
    let mut h = Harness::default();
    assert_eq!(h.feed(&mut c, server), server.len());
    drain(&mut c);
    assert_eq!(c.state(), State::Ready, "events: {:?}", h.events);
    h.events.clear();
    (c, h)
}

/// GO replies announcing `size`, `flags` and the given block sizes.
pub fn go_with(size: u64, flags: u16, min: u32, pref: u32, max: u32) -> Vec<u8> {
    let mut v = info_export(opt::GO, size, flags);
    v.extend(info_block_size(opt::GO, min, pref, max));
    v.extend(ack(opt::GO));
    v
}

/// A small deterministic PRNG (xorshift64*) for mutation tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Applies 1 to 4 random mutations (bit flip, byte set, insert, delete,
/// duplicate a run, truncate) to `s`.
pub fn mutate(rng: &mut Rng, s: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if s.is_empty() {
            s.push(rng.next() as u8);
            continue;
        }
        let i = rng.below(s.len());
        match rng.below(6) {
            0 => s[i] ^= 1 << rng.below(8),
            1 => s[i] = [0, 0xff, 0x80, 0x7f, 1][rng.below(5)],
            2 => s.insert(i, rng.next() as u8),
            3 => {
                s.remove(i);
            }
            4 => {
                let n = 1 + rng.below(32.min(s.len() - i));
                let run: Vec<u8> = s[i..i + n].to_vec();
                let at = rng.below(s.len() + 1);
                s.splice(at..at, run);
            }
            _ => s.truncate(i),
        }
    }
}

/// Feeds `s` in random pieces, draining output between them, and asserts the
/// client takes every byte unless it has ended (or hands over to TLS).
pub fn feed_in_pieces(rng: &mut Rng, c: &mut Client, h: &mut Harness, s: &[u8]) {
    let mut at = 0;
    while at < s.len() {
        let n = 1 + rng.below((s.len() - at).min(64));
        let used = h.feed(c, &s[at..at + n]);
        drain(c);
        if used < n {
            assert!(
                matches!(c.state(), State::Dead | State::Closed)
                    || h.events.contains(&Event::StartTls),
                "input refused in state {:?}; events {:?}",
                c.state(),
                h.events
            );
            return;
        }
        at += n;
    }
}
