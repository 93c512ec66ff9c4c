//! Our [`Client`] paired with a memory-backed NBD server built on our
//! [`ServerCodec`], in the style of quinn's `tests/util.rs`: both ends run in
//! one thread and a pump moves bytes between them in configurable pieces.
//!
//! The server ([`MemServer`]) answers the options the client sends
//! (structured replies, extended headers if configured, `base:allocation`,
//! GO/INFO with export information and block sizes, LIST) and serves every
//! command from a 1 MiB disk with a per-block allocation map. It may hold
//! requests and execute and answer them in random order, split READ replies
//! into data and hole chunks sent in random order, and interleave the chunks
//! of several replies. A small "bad sector" range fails every read or write
//! that touches it, so the expected result of each command is known.
//!
//! The property test drives hundreds of random commands through the pair
//! and checks each against a reference model: a plain `Vec<u8>` updated in
//! submission order. To keep the model exact whatever order the server picks,
//! a command overlapping an in-flight command is issued only when neither of
//! the two modifies the disk; otherwise the test waits for completions first.

use bytes::Bytes;
use nbd_proto::client::{
    errno, ChunkKind, Client, Command, CommandKind, Config, Event, Payload, RecvTarget, Segment,
    State, SubmitError,
};
use nbd_proto::consts::{
    cmd, cmd_flags, errno as nbd_errno, handshake_flags as hf, info, opt, rep, state,
    transmission_flags as tf, CONTEXT_BASE_ALLOCATION,
};
use nbd_proto::server::{Phase, ServerCodec, ServerEvent};
use nbd_proto::wire::option::{
    BlockSize, Info, MetaContext, OptionReply, OptionRequest, ServerEntry,
};
use nbd_proto::wire::reply::{BlockStatus, ErrorChunk, Extent};
use nbd_proto::wire::request::RequestHeader;
use proptest::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

// ----- the export -----

/// Export size.
const SIZE: u64 = 1 << 20;
/// Granularity of the server's allocation map.
const BLOCK: u64 = 512;
/// Reads and writes touching `[BAD_START, BAD_END)` fail with EIO.
const BAD_START: u64 = 0xF_0000;
const BAD_END: u64 = 0xF_1000;
/// The id the server gives `base:allocation`.
const CTX_ID: u32 = 42;
const EXPORT_FLAGS: u16 = tf::HAS_FLAGS
    | tf::SEND_FLUSH
    | tf::SEND_FUA
    | tf::SEND_TRIM
    | tf::SEND_WRITE_ZEROES
    | tf::SEND_DF
    | tf::SEND_CACHE
    | tf::SEND_FAST_ZERO;
const BLOCK_SIZE: BlockSize = BlockSize {
    minimum: 1,
    preferred: 4096,
    maximum: 32 * 1024 * 1024,
};
/// What `NBD_OPT_LIST` reports; both names (and "") open the same disk.
const EXPORTS: [(&str, &str); 2] = [("disk", "the test disk"), ("disk2", "")];

/// Allocation states of a block.
const DATA: u8 = 0;
/// Allocated and reads as zeroes.
const ZERO: u8 = 1;
/// Unallocated (reads as zeroes).
const HOLE: u8 = 2;

/// `n` commands, or a few under Miri (scripts/miri.sh), which interprets
/// every step thousands of times slower: 12, or 4 when the session moves one
/// byte at a time (about 25 s a command there).
fn ops_count(n: usize, xfer: Xfer) -> usize {
    match (cfg!(miri), xfer) {
        (false, _) => n,
        (true, Xfer::One) => n.min(4),
        (true, _) => n.min(12),
    }
}

/// The disk both the server and the model start from: 256 KiB of data (one
/// 8 KiB stretch of it zero, but allocated), then holes. Built once and
/// copied: filling it byte by byte takes seconds under Miri, and some tests
/// ask for it dozens of times.
fn initial_disk() -> Vec<u8> {
    static DISK: OnceLock<Vec<u8>> = OnceLock::new();
    DISK.get_or_init(|| {
        let mut d = vec![0u8; SIZE as usize];
        for (i, b) in d.iter_mut().enumerate().take(256 * 1024) {
            *b = (i % 251) as u8 + 1;
        }
        d[0x1_0000..0x1_2000].fill(0);
        d
    })
    .clone()
}

fn initial_alloc() -> Vec<u8> {
    (0..SIZE / BLOCK)
        .map(|b| if b * BLOCK < 256 * 1024 { DATA } else { HOLE })
        .collect()
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b + blen && b < a + alen
}

fn touches_bad(off: u64, len: u64) -> bool {
    overlaps(off, len, BAD_START, BAD_END - BAD_START)
}

/// A small deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (0 if `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.index(i + 1);
            v.swap(i, j);
        }
    }
}

// ----- the server -----

/// How the memory server behaves.
#[derive(Debug, Clone)]
struct ServerOpts {
    handshake_flags: u16,
    /// Accept `NBD_OPT_STRUCTURED_REPLY`.
    structured: bool,
    /// Accept `NBD_OPT_EXTENDED_HEADERS`.
    extended: bool,
    /// Answer `NBD_OPT_GO` (otherwise `NBD_REP_ERR_UNSUP`, as old servers do).
    go: bool,
    /// Send an oldstyle greeting (no negotiation at all).
    oldstyle: bool,
    /// Hold requests and execute and answer them in random order, chunk by
    /// chunk; otherwise answer each at once, in order.
    hold: bool,
    seed: u64,
}

impl Default for ServerOpts {
    fn default() -> Self {
        ServerOpts {
            handshake_flags: hf::FIXED_NEWSTYLE | hf::NO_ZEROES,
            structured: true,
            extended: true,
            go: true,
            oldstyle: false,
            hold: false,
            seed: 1,
        }
    }
}

/// A memory-backed NBD server on top of [`ServerCodec`].
struct MemServer {
    codec: ServerCodec,
    opts: ServerOpts,
    rng: Rng,
    disk: Vec<u8>,
    alloc: Vec<u8>,
    /// The context selected by `NBD_OPT_SET_META_CONTEXT`.
    ctx: Option<u32>,
    /// Received bytes the codec has not taken yet.
    inbuf: Vec<u8>,
    /// Bytes on the wire towards the client, and how far the client read.
    out: Vec<u8>,
    out_pos: usize,
    /// Requests received and not executed yet (hold mode).
    queued: Vec<(RequestHeader, Option<Bytes>)>,
    /// Executed requests whose reply chunks are not all sent yet.
    active: Vec<VecDeque<Bytes>>,
    /// Options seen, in order.
    options: Vec<u32>,
    /// Requests executed.
    executed: usize,
    /// `NBD_CMD_DISC` received.
    disc: bool,
    /// The server closed the connection (after DISC or ABORT).
    closed: bool,
}

impl MemServer {
    fn new(opts: ServerOpts) -> Self {
        let mut s = MemServer {
            codec: if opts.oldstyle {
                ServerCodec::oldstyle(SIZE, u32::from(EXPORT_FLAGS))
            } else {
                ServerCodec::newstyle(opts.handshake_flags)
            },
            rng: Rng::new(opts.seed),
            opts,
            disk: initial_disk(),
            alloc: initial_alloc(),
            ctx: None,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            queued: Vec::new(),
            active: Vec::new(),
            options: Vec::new(),
            executed: 0,
            disc: false,
            closed: false,
        };
        s.flush_codec();
        s
    }

    fn flush_codec(&mut self) {
        let b = self.codec.take_output();
        self.out.extend_from_slice(&b);
    }

    /// Bytes not yet read by the client.
    fn pending_out(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    fn consume_out(&mut self, n: usize) {
        self.out_pos += n;
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 1 << 16 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Takes bytes from the client.
    fn recv(&mut self, data: &[u8]) {
        if self.closed || self.disc {
            return;
        }
        self.inbuf.extend_from_slice(data);
        let mut pos = 0;
        loop {
            let n = self.codec.feed(&self.inbuf[pos..]);
            assert!(n <= self.inbuf.len() - pos, "codec consumed more than fed");
            pos += n;
            let mut polled = false;
            while let Some(r) = self.codec.poll_event() {
                polled = true;
                match r {
                    Ok(ev) => self.on_event(ev),
                    Err(e) => panic!("server codec rejected the client's bytes: {e}"),
                }
                if self.closed || self.disc {
                    self.inbuf.clear();
                    return;
                }
            }
            if n == 0 && !polled {
                break;
            }
        }
        self.inbuf.drain(..pos);
    }

    fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::ClientFlags(_) => {}
            ServerEvent::Option(o) => self.on_option(o),
            ServerEvent::InvalidOption { option, error } => {
                panic!("client sent an invalid option {option}: {error}")
            }
            ServerEvent::Request { header, payload } => self.on_request(header, payload),
        }
    }

    fn reply(&mut self, option: u32, r: OptionReply) {
        self.codec
            .send_option_reply(option, &r)
            .expect("option reply");
    }

    fn refuse(&mut self, option: u32, reply_type: u32) {
        self.reply(
            option,
            OptionReply::Error {
                reply_type,
                message: "refused by the memory server".into(),
            },
        );
    }

    fn known_export(name: &str) -> bool {
        name.is_empty() || EXPORTS.iter().any(|(n, _)| *n == name)
    }

    fn on_option(&mut self, o: OptionRequest) {
        let code = o.code();
        self.options.push(code);
        match o {
            OptionRequest::StructuredReply if self.opts.structured => {
                self.reply(code, OptionReply::Ack)
            }
            OptionRequest::ExtendedHeaders if self.opts.extended => {
                self.reply(code, OptionReply::Ack)
            }
            OptionRequest::SetMetaContext { name, queries } => {
                if !self.codec.structured_replies() {
                    self.refuse(code, rep::ERR_INVALID);
                } else if !Self::known_export(&name) {
                    self.refuse(code, rep::ERR_UNKNOWN);
                } else {
                    self.ctx = None;
                    for q in queries {
                        if q == CONTEXT_BASE_ALLOCATION && self.ctx.is_none() {
                            self.ctx = Some(CTX_ID);
                            let m = MetaContext {
                                id: CTX_ID,
                                name: q,
                            };
                            self.reply(code, OptionReply::MetaContext(m));
                        }
                    }
                    self.reply(code, OptionReply::Ack);
                }
            }
            OptionRequest::ListMetaContext { queries, .. } => {
                if queries.is_empty()
                    || queries
                        .iter()
                        .any(|q| q == "base:" || q == CONTEXT_BASE_ALLOCATION)
                {
                    let m = MetaContext {
                        id: 0,
                        name: CONTEXT_BASE_ALLOCATION.into(),
                    };
                    self.reply(code, OptionReply::MetaContext(m));
                }
                self.reply(code, OptionReply::Ack);
            }
            OptionRequest::List => {
                for (name, description) in EXPORTS {
                    let e = ServerEntry {
                        name: name.into(),
                        description: description.into(),
                    };
                    self.reply(code, OptionReply::Server(e));
                }
                self.reply(code, OptionReply::Ack);
            }
            OptionRequest::Go { .. } if !self.opts.go => self.refuse(code, rep::ERR_UNSUP),
            OptionRequest::Info { name, requests } | OptionRequest::Go { name, requests } => {
                if !Self::known_export(&name) {
                    self.refuse(code, rep::ERR_UNKNOWN);
                } else {
                    let export = Info::Export {
                        size: SIZE,
                        transmission_flags: EXPORT_FLAGS,
                    };
                    self.reply(code, OptionReply::Info(export));
                    let canonical = if name.is_empty() { "disk" } else { &name };
                    if requests.contains(&info::NAME) {
                        self.reply(code, OptionReply::Info(Info::Name(canonical.into())));
                    }
                    if requests.contains(&info::DESCRIPTION) {
                        let d = EXPORTS
                            .iter()
                            .find(|(n, _)| *n == canonical)
                            .map_or("", |(_, d)| d);
                        self.reply(code, OptionReply::Info(Info::Description(d.into())));
                    }
                    // Sent whether asked for or not, as the spec allows.
                    self.reply(code, OptionReply::Info(Info::BlockSize(BLOCK_SIZE)));
                    self.reply(code, OptionReply::Ack);
                }
            }
            OptionRequest::ExportName(name) => {
                if Self::known_export(&name) {
                    self.codec.send_export_name_reply(SIZE, EXPORT_FLAGS);
                } else {
                    self.closed = true;
                }
            }
            OptionRequest::Abort => {
                self.reply(code, OptionReply::Ack);
                self.closed = true;
            }
            _ => self.refuse(code, rep::ERR_UNSUP),
        }
        self.flush_codec();
    }

    fn on_request(&mut self, h: RequestHeader, payload: Option<Bytes>) {
        assert_eq!(self.codec.phase(), Phase::Transmission);
        if h.command == cmd::DISC {
            self.disc = true;
            self.maybe_close();
            return;
        }
        if self.opts.hold {
            self.queued.push((h, payload));
        } else {
            for chunk in self.execute(h, payload) {
                self.out.extend_from_slice(&chunk);
            }
        }
    }

    fn maybe_close(&mut self) {
        if self.disc && self.queued.is_empty() && self.active.is_empty() {
            self.closed = true;
        }
    }

    /// Hold mode: executes a held request or sends one chunk of an executed
    /// one, both picked at random. Without `force`, does so only half the
    /// time. Returns whether anything happened.
    fn release(&mut self, force: bool) -> bool {
        if self.queued.is_empty() && self.active.is_empty() {
            return false;
        }
        if !force && self.rng.chance(1, 2) {
            return false;
        }
        if !self.queued.is_empty() && (self.active.is_empty() || self.rng.chance(1, 2)) {
            let i = self.rng.index(self.queued.len());
            let (h, p) = self.queued.swap_remove(i);
            let chunks = self.execute(h, p);
            self.active.push(chunks.into());
        } else {
            let i = self.rng.index(self.active.len());
            let chunk = self.active[i].pop_front().expect("reply chunk");
            self.out.extend_from_slice(&chunk);
            if self.active[i].is_empty() {
                self.active.swap_remove(i);
            }
        }
        self.maybe_close();
        true
    }

    /// The codec output of one `send_*` call, as one unit of a reply.
    fn take(&mut self) -> Bytes {
        self.codec.take_output()
    }

    /// Executes a request; returns its reply as chunks to send in order.
    fn execute(&mut self, h: RequestHeader, payload: Option<Bytes>) -> Vec<Bytes> {
        self.executed += 1;
        let (off, len) = (h.offset, h.length);
        let in_bounds = off.checked_add(len).is_some_and(|e| e <= SIZE);
        let known = matches!(
            h.command,
            cmd::READ
                | cmd::WRITE
                | cmd::FLUSH
                | cmd::TRIM
                | cmd::CACHE
                | cmd::WRITE_ZEROES
                | cmd::BLOCK_STATUS
        );
        if !known || !in_bounds {
            return self.error_reply(h, nbd_errno::EINVAL, None);
        }
        let io = matches!(
            h.command,
            cmd::READ | cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES
        );
        if io && touches_bad(off, len) {
            return self.error_reply(h, nbd_errno::EIO, Some(off.max(BAD_START)));
        }
        let (o, l) = (off as usize, len as usize);
        match h.command {
            cmd::READ => self.read_reply(h),
            cmd::WRITE => {
                let p = payload.expect("write payload");
                assert_eq!(p.len(), l, "write payload length");
                self.disk[o..o + l].copy_from_slice(&p);
                for b in off / BLOCK..(off + len).div_ceil(BLOCK) {
                    self.alloc[b as usize] = DATA;
                }
                self.ok_reply(h)
            }
            cmd::TRIM | cmd::WRITE_ZEROES => {
                self.disk[o..o + l].fill(0);
                let whole = if h.command == cmd::WRITE_ZEROES && h.flags & cmd_flags::NO_HOLE != 0 {
                    ZERO
                } else {
                    HOLE
                };
                // Only blocks covered entirely change state; the others keep
                // their (now partly zeroed) data.
                for b in off.div_ceil(BLOCK)..(off + len) / BLOCK {
                    self.alloc[b as usize] = whole;
                }
                self.ok_reply(h)
            }
            cmd::FLUSH | cmd::CACHE => self.ok_reply(h),
            _ => self.status_reply(h),
        }
    }

    /// Success without data: a NONE chunk, or a simple reply where allowed.
    fn ok_reply(&mut self, h: RequestHeader) -> Vec<Bytes> {
        let simple_ok = !self.codec.extended_headers();
        if !self.codec.structured_replies() || (simple_ok && self.rng.chance(1, 4)) {
            self.codec.send_simple_reply(h.cookie, 0, &[]);
        } else {
            self.codec.send_none(h.cookie, h.offset, true).unwrap();
        }
        vec![self.take()]
    }

    /// Failure with `err`; `at` is where in the export it happened.
    fn error_reply(&mut self, h: RequestHeader, err: u32, at: Option<u64>) -> Vec<Bytes> {
        let mut v = Vec::new();
        let structured = self.codec.structured_replies();
        let simple_ok = !self.codec.extended_headers();
        if !structured || (simple_ok && h.command != cmd::READ && self.rng.chance(1, 4)) {
            self.codec.send_simple_reply(h.cookie, err, &[]);
            v.push(self.take());
            return v;
        }
        let offset = match at {
            Some(at) if self.rng.chance(1, 2) => {
                // A read may deliver the good part before the error.
                if h.command == cmd::READ && at > h.offset && self.rng.chance(1, 2) {
                    let (o, e) = (h.offset as usize, at as usize);
                    self.codec
                        .send_offset_data(h.cookie, h.offset, h.offset, &self.disk[o..e], false)
                        .unwrap();
                    v.push(self.take());
                }
                Some(at)
            }
            _ => None,
        };
        let e = ErrorChunk {
            error: err,
            message: "memory server error".into(),
            offset,
        };
        // The error chunk may end the reply, or a NONE chunk after it may.
        let trailing_none = self.rng.chance(1, 3);
        self.codec
            .send_error(h.cookie, h.offset, &e, !trailing_none)
            .unwrap();
        v.push(self.take());
        if trailing_none {
            self.codec.send_none(h.cookie, h.offset, true).unwrap();
            v.push(self.take());
        }
        v
    }

    /// A successful READ: one simple reply, one data chunk, or several data
    /// and hole chunks in random order.
    fn read_reply(&mut self, h: RequestHeader) -> Vec<Bytes> {
        let (o, l) = (h.offset as usize, h.length as usize);
        if !self.codec.structured_replies() {
            self.codec
                .send_simple_reply(h.cookie, 0, &self.disk[o..o + l]);
            return vec![self.take()];
        }
        let df = h.flags & cmd_flags::DF != 0;
        let mut pieces: Vec<(usize, usize)> = if df || l == 1 || self.rng.chance(1, 3) {
            vec![(0, l)]
        } else if self.rng.chance(1, 2) {
            // Random cut points.
            let mut cuts: Vec<usize> = (0..1 + self.rng.index(7.min(l - 1)))
                .map(|_| 1 + self.rng.index(l - 1))
                .collect();
            cuts.push(0);
            cuts.push(l);
            cuts.sort_unstable();
            cuts.dedup();
            cuts.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
        } else {
            // Runs of all-zero and not-all-zero blocks.
            let mut v: Vec<(usize, usize, bool)> = Vec::new();
            let mut pos = 0;
            while pos < l {
                let abs = o + pos;
                let end = ((abs / BLOCK as usize + 1) * BLOCK as usize).min(o + l) - o;
                let zero = self.disk[abs..o + end].iter().all(|&b| b == 0);
                match v.last_mut() {
                    Some((_, n, z)) if *z == zero => *n += end - pos,
                    _ => v.push((pos, end - pos, zero)),
                }
                pos = end;
            }
            v.into_iter().map(|(s, n, _)| (s, n)).collect()
        };
        self.rng.shuffle(&mut pieces);
        let trailing_none = self.rng.chance(1, 4);
        let mut v = Vec::new();
        for (i, &(s, n)) in pieces.iter().enumerate() {
            let done = i + 1 == pieces.len() && !trailing_none;
            let range = o + s..o + s + n;
            let at = (o + s) as u64;
            if !df && self.disk[range.clone()].iter().all(|&b| b == 0) && self.rng.chance(3, 4) {
                self.codec
                    .send_offset_hole(h.cookie, h.offset, at, n as u32, done)
                    .unwrap();
            } else {
                self.codec
                    .send_offset_data(h.cookie, h.offset, at, &self.disk[range], done)
                    .unwrap();
            }
            v.push(self.take());
        }
        if trailing_none {
            self.codec.send_none(h.cookie, h.offset, true).unwrap();
            v.push(self.take());
        }
        v
    }

    /// The `base:allocation` extents of `[off, off + len)` from the map. The
    /// last extent may run on to the end of its run (as the spec allows),
    /// except with REQ_ONE.
    fn extents(&mut self, off: u64, len: u64, req_one: bool) -> Vec<Extent> {
        let end = off + len;
        let stretch = !req_one && self.rng.chance(1, 3);
        let mut v = Vec::new();
        let mut pos = off;
        while pos < end {
            let s = self.alloc[(pos / BLOCK) as usize];
            let mut run_end = (pos / BLOCK + 1) * BLOCK;
            while run_end < SIZE && self.alloc[(run_end / BLOCK) as usize] == s {
                run_end += BLOCK;
            }
            let stop = if run_end >= end && stretch {
                run_end
            } else {
                run_end.min(end)
            };
            let flags = match s {
                DATA => 0,
                ZERO => state::ZERO,
                _ => state::HOLE | state::ZERO,
            };
            v.push(Extent {
                length: stop - pos,
                flags: u64::from(flags),
            });
            pos = stop;
            if req_one {
                break;
            }
        }
        v
    }

    fn status_reply(&mut self, h: RequestHeader) -> Vec<Bytes> {
        let Some(ctx) = self.ctx else {
            return self.error_reply(h, nbd_errno::EINVAL, None);
        };
        let extents = self.extents(h.offset, h.length, h.flags & cmd_flags::REQ_ONE != 0);
        let status = BlockStatus {
            context_id: ctx,
            extents,
        };
        let trailing_none = self.rng.chance(1, 3);
        let mut v = Vec::new();
        self.codec
            .send_block_status(h.cookie, h.offset, &status, !trailing_none)
            .unwrap();
        v.push(self.take());
        if trailing_none {
            self.codec.send_none(h.cookie, h.offset, true).unwrap();
            v.push(self.take());
        }
        v
    }
}

// ----- the pair and its pump -----

/// How many bytes each transfer moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Xfer {
    One,
    Random,
    All,
}

/// What the test expects of a command in flight.
#[derive(Debug)]
struct Expected {
    kind: CommandKind,
    offset: u64,
    length: u64,
    flags: u16,
    result: Result<(), i32>,
    /// READ and BLOCK_STATUS: the model's bytes at submission.
    snapshot: Option<Vec<u8>>,
}

impl Expected {
    fn modifies(&self) -> bool {
        matches!(
            self.kind,
            CommandKind::Write | CommandKind::Trim | CommandKind::WriteZeroes
        )
    }

    fn has_range(&self) -> bool {
        self.kind != CommandKind::Flush
    }
}

/// A client and a memory server joined by two in-memory pipes.
struct Pair {
    client: Client,
    server: MemServer,
    rng: Rng,
    xfer: Xfer,
    /// Drive the client with handle_input/recv_target/handle_payload and
    /// transmit_segments/advance_transmit instead of feed/take_output.
    zero_copy: bool,
    /// Bytes on the wire towards the server.
    c2s: Vec<u8>,
    eof_sent: bool,
    /// READ buffers, per cookie.
    bufs: HashMap<u64, Vec<u8>>,
    /// WRITE payloads the driver holds (`Payload::External`), per cookie.
    wbufs: HashMap<u64, Bytes>,
    /// READ chunks reported, per cookie: (buf_offset, len).
    chunks: HashMap<u64, Vec<(u64, u64)>>,
    /// Extents reported, per cookie.
    extents: HashMap<u64, Vec<(u32, Vec<Extent>)>>,
    /// Commands in flight, with what they must produce.
    pending: HashMap<u64, Expected>,
    /// Every completion seen.
    completed: HashMap<u64, Result<(), i32>>,
    /// READ buffers of completed reads, kept when `keep_reads` is set.
    keep_reads: bool,
    finished_reads: HashMap<u64, Vec<u8>>,
    /// Every event except READ chunks.
    events: Vec<Event>,
}

impl Pair {
    fn new(config: Config, opts: ServerOpts, xfer: Xfer, zero_copy: bool) -> Self {
        let seed = opts.seed;
        Pair {
            client: Client::new(config),
            server: MemServer::new(opts),
            rng: Rng::new(seed ^ 0x5555),
            xfer,
            zero_copy,
            c2s: Vec::new(),
            eof_sent: false,
            bufs: HashMap::new(),
            wbufs: HashMap::new(),
            chunks: HashMap::new(),
            extents: HashMap::new(),
            pending: HashMap::new(),
            completed: HashMap::new(),
            keep_reads: false,
            finished_reads: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// How many of `avail` bytes the next transfer moves.
    fn amount(&mut self, avail: usize) -> usize {
        match self.xfer {
            Xfer::One => 1.min(avail),
            Xfer::All => avail,
            Xfer::Random => {
                let cap = if self.rng.chance(1, 2) { 32 } else { 16 * 1024 };
                1 + self.rng.index(avail.min(cap))
            }
        }
    }

    /// Client output to the wire; returns the bytes moved.
    fn client_send(&mut self) -> usize {
        if !self.client.wants_write() {
            return 0;
        }
        if !self.zero_copy {
            let before = self.c2s.len();
            let wbufs = &self.wbufs;
            self.client
                .take_output(&mut self.c2s, &mut |cookie, off, len| {
                    let b = wbufs.get(&cookie).expect("external write payload");
                    &b[off as usize..off as usize + len]
                });
            return self.c2s.len() - before;
        }
        let mut want = self.amount(self.client.pending_output());
        let mut segs = [Segment::Bytes(&[]); 4];
        let n = self.client.transmit_segments(&mut segs);
        let mut sent = 0;
        for seg in &segs[..n] {
            if want == 0 {
                break;
            }
            let bytes: &[u8] = match *seg {
                Segment::Bytes(b) => b,
                Segment::External {
                    cookie,
                    buf_offset,
                    len,
                    ..
                } => {
                    let b = self.wbufs.get(&cookie).expect("external write payload");
                    &b[buf_offset as usize..buf_offset as usize + len]
                }
            };
            let take = want.min(bytes.len());
            self.c2s.extend_from_slice(&bytes[..take]);
            want -= take;
            sent += take;
        }
        self.client.advance_transmit(sent);
        sent
    }

    /// Wire to server; returns the bytes moved.
    fn server_recv(&mut self) -> usize {
        if self.c2s.is_empty() {
            return 0;
        }
        let n = self.amount(self.c2s.len());
        let data: Vec<u8> = self.c2s.drain(..n).collect();
        self.server.recv(&data);
        n
    }

    /// Wire to client; returns the bytes the client took.
    fn client_recv(&mut self) -> usize {
        let avail = self.server.pending_out().len();
        if avail == 0 || !self.client.wants_read() {
            return 0;
        }
        let n = self.amount(avail);
        let data = &self.server.out[self.server.out_pos..self.server.out_pos + n];
        let bufs = &mut self.bufs;
        let used = if self.zero_copy {
            let mut used = 0;
            while used < data.len() {
                match self.client.recv_target() {
                    RecvTarget::Control => {
                        let k = self.client.handle_input(&data[used..]);
                        used += k;
                        if k == 0 && self.client.recv_target() == RecvTarget::Control {
                            break;
                        }
                    }
                    RecvTarget::Payload {
                        cookie,
                        buf_offset,
                        len,
                    } => {
                        // A real driver recv()s straight into the buffer.
                        let k = len.min(data.len() - used);
                        assert!(k > 0, "empty payload target");
                        let buf = bufs.get_mut(&cookie).expect("payload without a buffer");
                        let o = buf_offset as usize;
                        buf[o..o + k].copy_from_slice(&data[used..used + k]);
                        self.client.handle_payload(k);
                        used += k;
                    }
                }
            }
            used
        } else {
            self.client.feed(data, &mut |cookie, off, d| {
                let buf = bufs.get_mut(&cookie).expect("payload without a buffer");
                let o = off as usize;
                buf[o..o + d.len()].copy_from_slice(d);
            })
        };
        assert!(used <= n, "client consumed more than offered");
        if used < n {
            assert!(
                matches!(self.client.state(), State::Closed | State::Dead),
                "client refused input in state {:?}",
                self.client.state()
            );
        }
        self.server.consume_out(used);
        used
    }

    /// One round of the pump; returns whether anything moved.
    fn step(&mut self) -> bool {
        let mut progress = self.client_send() > 0;
        progress |= self.server_recv() > 0;
        if self.server.opts.hold {
            progress |= self.server.release(false);
        }
        progress |= self.client_recv() > 0;
        if self.server.closed && self.server.pending_out().is_empty() && !self.eof_sent {
            self.eof_sent = true;
            self.client.handle_eof();
            progress = true;
        }
        self.drain_events();
        progress
    }

    /// Pumps until `done` holds.
    fn run_until(&mut self, what: &str, done: impl Fn(&Pair) -> bool) {
        let mut idle = 0;
        let mut rounds = 0u64;
        while !done(self) {
            rounds += 1;
            assert!(rounds < 50_000_000, "no end in sight waiting for {what}");
            if self.step() || self.server.release(true) {
                idle = 0;
                continue;
            }
            idle += 1;
            assert!(
                idle < 3,
                "stalled waiting for {what}: client {:?}, in flight {}, server phase {:?}, \
                 closed {}, events {:?}",
                self.client.state(),
                self.client.in_flight(),
                self.server.codec.phase(),
                self.server.closed,
                self.events
            );
        }
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::ReadChunk {
                    cookie,
                    buf_offset,
                    len,
                    kind,
                } => {
                    let buf = self.bufs.get_mut(&cookie).expect("chunk without a buffer");
                    let (o, n) = (buf_offset as usize, len as usize);
                    assert!(o + n <= buf.len(), "chunk outside its buffer");
                    if kind == ChunkKind::Hole {
                        buf[o..o + n].fill(0);
                    }
                    self.chunks
                        .entry(cookie)
                        .or_default()
                        .push((buf_offset, len));
                }
                Event::Extents {
                    cookie,
                    context_id,
                    extents,
                } => {
                    self.extents
                        .entry(cookie)
                        .or_default()
                        .push((context_id, extents));
                }
                Event::Complete { cookie, result, .. } => {
                    let r = result.as_ref().map(|_| ()).map_err(|e| e.errno);
                    assert!(
                        self.completed.insert(cookie, r).is_none(),
                        "cookie {cookie} completed twice"
                    );
                    self.check_completion(cookie, r, &result);
                    self.events.push(Event::Complete {
                        cookie,
                        result,
                        data: (),
                    });
                }
                other => self.events.push(other),
            }
        }
    }

    /// Checks a completion against what the model predicted.
    fn check_completion(
        &mut self,
        cookie: u64,
        r: Result<(), i32>,
        full: &Result<(), nbd_proto::client::CommandError>,
    ) {
        let chunks = self.chunks.remove(&cookie).unwrap_or_default();
        let extents = self.extents.remove(&cookie).unwrap_or_default();
        let buf = self.bufs.remove(&cookie);
        self.wbufs.remove(&cookie);
        let Some(exp) = self.pending.remove(&cookie) else {
            // Commands submitted outside the tracked path.
            return;
        };
        assert_eq!(
            r, exp.result,
            "cookie {cookie} ({:?} {}+{} flags {:#x}): {full:?}",
            exp.kind, exp.offset, exp.length, exp.flags
        );
        if r.is_err() {
            return;
        }
        match exp.kind {
            CommandKind::Read => {
                let buf = buf.expect("read buffer");
                let want = exp.snapshot.as_ref().expect("read snapshot");
                if buf != *want {
                    let first = buf.iter().zip(want).position(|(a, b)| a != b);
                    panic!(
                        "cookie {cookie}: read {}+{} returned wrong data, first difference at \
                         {first:?}",
                        exp.offset, exp.length
                    );
                }
                // The chunks tile the buffer exactly once.
                let mut c = chunks;
                c.sort_unstable();
                let mut at = 0;
                for (o, n) in c {
                    assert_eq!(o, at, "cookie {cookie}: chunks leave a gap or overlap");
                    at += n;
                }
                assert_eq!(at, exp.length, "cookie {cookie}: chunks cover the read");
                if self.keep_reads {
                    self.finished_reads.insert(cookie, buf);
                }
            }
            CommandKind::BlockStatus => {
                assert_eq!(extents.len(), 1, "cookie {cookie}: one context reported");
                let (id, ext) = &extents[0];
                assert_eq!(*id, CTX_ID);
                let req_one = exp.flags & cmd_flags::REQ_ONE != 0;
                let total: u64 = ext.iter().map(|e| e.length).sum();
                assert!(!ext.is_empty());
                if req_one {
                    assert_eq!(ext.len(), 1, "REQ_ONE gives one extent");
                    assert!(total <= exp.length);
                } else {
                    assert!(total >= exp.length, "extents cover the request");
                }
                let snap = exp.snapshot.as_ref().expect("status snapshot");
                let mut at = 0u64;
                for e in ext {
                    let hole = e.flags & u64::from(state::HOLE) != 0;
                    let zero = e.flags & u64::from(state::ZERO) != 0;
                    assert!(!hole || zero, "this server's holes read as zeroes");
                    let s = at.min(exp.length) as usize;
                    let t = (at + e.length).min(exp.length) as usize;
                    if zero {
                        assert!(
                            snap[s..t].iter().all(|&b| b == 0),
                            "cookie {cookie}: extent {s}..{t} claims zeroes over data"
                        );
                    }
                    at += e.length;
                }
            }
            _ => {}
        }
    }

    /// Submits a command the test tracks; prepares its buffers.
    fn submit(&mut self, c: Command, exp: Expected, external: Option<Bytes>) -> u64 {
        let kind = c.kind;
        let len = c.length;
        let cookie = self
            .client
            .submit(c)
            .unwrap_or_else(|e| panic!("submit {kind:?} refused: {e}"));
        if kind == CommandKind::Read {
            self.bufs.insert(cookie, vec![0xee; len as usize]);
        }
        if let Some(b) = external {
            self.wbufs.insert(cookie, b);
        }
        self.pending.insert(cookie, exp);
        cookie
    }

    fn dead(&self) -> Option<&Event> {
        self.events.iter().find(|e| matches!(e, Event::Dead(_)))
    }

    fn connect(&mut self) {
        self.run_until("Ready", |p| {
            p.client.state() == State::Ready || p.dead().is_some() || p.server.closed
        });
        assert_eq!(
            self.client.state(),
            State::Ready,
            "events {:?}",
            self.events
        );
        assert_eq!(self.server.codec.phase(), Phase::Transmission);
    }
}

// ----- the random command mix -----

/// One random command, before it is fitted to the export and the mode.
#[derive(Debug, Clone)]
struct Op {
    kind: u8,
    offset: u64,
    len: u64,
    flags: u8,
    fill: u8,
}

fn op() -> impl Strategy<Value = Op> {
    (0u8..16, 0..SIZE, 1u64..=8192, any::<u8>(), any::<u8>()).prop_map(
        |(kind, offset, len, flags, fill)| Op {
            kind,
            offset,
            len,
            flags,
            fill,
        },
    )
}

/// The parameters of one session.
#[derive(Debug, Clone)]
struct Session {
    client_structured: bool,
    client_extended: bool,
    server_extended: bool,
    xfer: Xfer,
    zero_copy: bool,
    hold: bool,
    depth: usize,
    seed: u64,
    /// End with NBD_CMD_DISC while commands may still be in flight.
    disconnect: bool,
}

fn session() -> impl Strategy<Value = Session> {
    (
        any::<(bool, bool, bool)>(),
        prop_oneof![Just(Xfer::One), Just(Xfer::Random), Just(Xfer::All)],
        any::<(bool, bool, bool)>(),
        1usize..=16,
        any::<u64>(),
    )
        .prop_map(
            |((cs, ce, se), xfer, (zero_copy, hold, disconnect), depth, seed)| Session {
                client_structured: cs,
                client_extended: ce,
                server_extended: se,
                xfer,
                zero_copy,
                hold,
                depth,
                seed,
                disconnect,
            },
        )
}

fn client_config(structured: bool, extended: bool) -> Config {
    {
        let mut config = Config::default();
        config.request_structured_replies = structured;
        config.request_extended_headers = extended;
        config.request_meta_contexts = vec![CONTEXT_BASE_ALLOCATION.into()];
        config
    }
}

/// Write payload bytes: mostly a pattern, sometimes all zeroes.
fn write_data(op: &Op, len: u64) -> Bytes {
    if op.fill.is_multiple_of(5) {
        return Bytes::from(vec![0u8; len as usize]);
    }
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(op.fill | 1).wrapping_add(op.fill))
            .collect::<Vec<u8>>(),
    )
}

/// The outcome of a session, to compare driving styles.
struct Outcome {
    reads: HashMap<u64, Vec<u8>>,
    completed: HashMap<u64, Result<(), i32>>,
    disk: Vec<u8>,
}

/// Runs one session: handshake, `ops` as commands, optional disconnect, then
/// checks everything against the model.
fn run_session(s: &Session, ops: &[Op]) -> Outcome {
    let opts = ServerOpts {
        extended: s.server_extended,
        hold: s.hold,
        seed: s.seed,
        ..ServerOpts::default()
    };
    let cfg = client_config(s.client_structured, s.client_extended);
    let mut p = Pair::new(cfg, opts, s.xfer, s.zero_copy);
    p.keep_reads = true;
    p.connect();
    let extended = s.client_extended && s.server_extended;
    let structured = s.client_structured || extended;
    assert_eq!(p.client.extended_headers(), extended);
    assert_eq!(p.client.structured_replies(), structured);
    assert_eq!(p.server.codec.extended_headers(), extended);
    assert_eq!(p.server.codec.structured_replies(), structured);
    assert_eq!(
        p.client.meta_context_id(CONTEXT_BASE_ALLOCATION),
        structured.then_some(CTX_ID)
    );
    assert_eq!(p.client.export().size, SIZE);
    assert_eq!(p.client.export().block_size, Some(BLOCK_SIZE));

    let mut model = initial_disk();
    let mut submitted = 0usize;
    for op in ops {
        // Fit the op to the export and the transfer mode.
        let mut len = if s.xfer == Xfer::One {
            op.len % 700 + 1
        } else if op.flags & 0x40 != 0 {
            op.len * 8
        } else {
            op.len
        };
        let mut off = op.offset;
        if op.flags & 0x80 != 0 {
            // Block aligned, so trims and zeroes free whole blocks.
            off &= !4095;
            len = len.div_ceil(4096) * 4096;
        }
        if op.kind == 15 {
            // Aimed at the bad sector.
            off = (BAD_START + op.offset % (BAD_END - BAD_START)).saturating_sub(len / 2);
        }
        len = len.min(SIZE);
        off = off.min(SIZE - len);
        let kind = match op.kind {
            0..=4 | 15 => CommandKind::Read,
            5..=8 => CommandKind::Write,
            9 => CommandKind::Trim,
            10 => CommandKind::WriteZeroes,
            11 | 12 if structured => CommandKind::BlockStatus,
            11 | 12 => CommandKind::Read,
            13 => CommandKind::Flush,
            _ => CommandKind::Cache,
        };
        let (off, len) = if kind == CommandKind::Flush {
            (0, 0)
        } else {
            (off, len)
        };
        let flags = match kind {
            CommandKind::Read if structured && op.flags & 1 != 0 => cmd_flags::DF,
            CommandKind::Write | CommandKind::Trim if op.flags & 2 != 0 => cmd_flags::FUA,
            CommandKind::WriteZeroes => {
                let mut f = 0;
                if op.flags & 2 != 0 {
                    f |= cmd_flags::FUA;
                }
                if op.flags & 4 != 0 {
                    f |= cmd_flags::NO_HOLE;
                }
                if op.flags & 8 != 0 {
                    f |= cmd_flags::FAST_ZERO;
                }
                f
            }
            CommandKind::BlockStatus if op.flags & 1 != 0 => cmd_flags::REQ_ONE,
            _ => 0,
        };
        let exp = Expected {
            kind,
            offset: off,
            length: len,
            flags,
            result: Ok(()),
            snapshot: None,
        };
        // Wait for room in the queue, and for every in-flight command that
        // overlaps this one when either writes.
        let depth = s.depth;
        p.run_until("room and no conflicting command", |p| {
            p.client.in_flight() < depth
                && !p.pending.values().any(|q| {
                    (q.modifies() || exp.modifies())
                        && q.has_range()
                        && exp.has_range()
                        && overlaps(q.offset, q.length, off, len)
                })
        });
        let bad = matches!(
            kind,
            CommandKind::Read | CommandKind::Write | CommandKind::Trim | CommandKind::WriteZeroes
        ) && touches_bad(off, len);
        let (o, l) = (off as usize, len as usize);
        let mut exp = Expected {
            result: if bad { Err(errno::EIO) } else { Ok(()) },
            ..exp
        };
        let mut external = None;
        let command = match kind {
            CommandKind::Read | CommandKind::BlockStatus => {
                exp.snapshot = Some(model[o..o + l].to_vec());
                Command::new(kind, off, len).with_flags(flags)
            }
            CommandKind::Write => {
                let data = write_data(op, len);
                if !bad {
                    model[o..o + l].copy_from_slice(&data);
                }
                if op.fill & 0x10 != 0 {
                    external = Some(data);
                    Command {
                        kind,
                        offset: off,
                        length: len,
                        flags,
                        payload: Payload::External,
                    }
                } else {
                    Command::write(off, data).with_flags(flags)
                }
            }
            CommandKind::Trim | CommandKind::WriteZeroes => {
                if !bad {
                    model[o..o + l].fill(0);
                }
                Command::new(kind, off, len).with_flags(flags)
            }
            _ => Command::new(kind, off, len).with_flags(flags),
        };
        p.submit(command, exp, external);
        submitted += 1;
        // Let the pump run a little between submissions.
        for _ in 0..p.rng.below(4) {
            p.step();
        }
        assert!(p.dead().is_none(), "client died: {:?}", p.dead());
    }

    if s.disconnect {
        p.client.shutdown().expect("shutdown");
        assert!(p.client.disconnect_sent());
        assert!(matches!(
            p.client.submit(Command::new(CommandKind::Read, 0, 1)),
            Err(SubmitError::AfterDisconnect)
        ));
        p.run_until("Closed", |p| {
            matches!(p.client.state(), State::Closed | State::Dead)
        });
        assert_eq!(p.client.state(), State::Closed, "events {:?}", p.events);
        assert!(p.events.contains(&Event::Closed));
        // The client closes when the server hangs up after NBD_CMD_DISC.
        assert!(p.server.closed);
        assert!(p.server.disc);
    } else {
        p.run_until("all completions", |p| p.pending.is_empty());
        assert_eq!(p.client.state(), State::Ready);
    }
    assert!(p.dead().is_none(), "client died: {:?}", p.dead());
    assert!(p.pending.is_empty(), "commands never completed");
    assert_eq!(p.completed.len(), submitted, "every command completed once");
    assert_eq!(p.client.in_flight(), 0);
    assert_eq!(p.server.executed, submitted);
    assert!(!p.server.codec.is_dead());
    assert!(p.server.disk == model, "server disk differs from the model");
    Outcome {
        reads: std::mem::take(&mut p.finished_reads),
        completed: p.completed,
        disk: model,
    }
}

/// 64 cases unless PROPTEST_CASES says otherwise (scripts/miri.sh asks for
/// 4, as Miri runs each session thousands of times slower).
fn mix_config() -> ProptestConfig {
    match std::env::var_os("PROPTEST_CASES") {
        Some(_) => ProptestConfig::default(),
        None => ProptestConfig::with_cases(64),
    }
}

proptest! {
    #![proptest_config(mix_config())]

    /// Random command mixes in every negotiated mode, every transfer size and
    /// both driving styles, with replies in random order.
    #[test]
    fn random_command_mixes(s in session(), ops in prop::collection::vec(op(), 100..300)) {
        // One byte at a time is slow: keep those sessions shorter.
        let n = if s.xfer == Xfer::One { ops.len().min(120) } else { ops.len() };
        let n = ops_count(n, s.xfer);
        run_session(&s, &ops[..n]);
    }
}

// ----- deterministic sessions -----

fn fixed_ops(n: usize, seed: u64) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| Op {
            kind: rng.below(16) as u8,
            offset: rng.below(SIZE),
            len: 1 + rng.below(8192),
            flags: rng.next() as u8,
            fill: rng.next() as u8,
        })
        .collect()
}

/// Opt mode: list the exports, ask about them, then go, against the server.
#[test]
fn opt_mode_session() {
    let cfg = {
        let mut config = client_config(true, true);
        config.opt_mode = true;
        config.full_info = true;
        config
    };
    let mut p = Pair::new(cfg, ServerOpts::default(), Xfer::Random, false);
    let negotiating = |p: &Pair| p.client.state() == State::Negotiating;
    p.run_until("Negotiating", negotiating);
    assert!(p.events.contains(&Event::Negotiating));
    assert!(p.client.extended_headers());
    assert_eq!(p.server.options, [opt::EXTENDED_HEADERS]);
    p.events.clear();

    p.client.opt_list().unwrap();
    p.run_until("LIST", negotiating);
    let exports: Vec<ServerEntry> = p
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Export(x) => Some(x.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(exports.len(), 2);
    assert_eq!(exports[0].name, "disk");
    assert_eq!(exports[0].description, "the test disk");
    assert_eq!(exports[1].name, "disk2");
    assert!(p.events.contains(&Event::OptionDone {
        option: opt::LIST,
        result: Ok(())
    }));
    p.events.clear();

    p.client.config_mut().export_name = "disk".into();
    p.client.opt_info().unwrap();
    p.run_until("INFO", negotiating);
    let e = p.client.export().clone();
    assert_eq!(e.size, SIZE);
    assert_eq!(e.flags, EXPORT_FLAGS);
    assert_eq!(e.name.as_deref(), Some("disk"));
    assert_eq!(e.description.as_deref(), Some("the test disk"));
    assert_eq!(e.block_size, Some(BLOCK_SIZE));
    assert!(p.events.contains(&Event::OptionDone {
        option: opt::INFO,
        result: Ok(())
    }));
    // SET_META_CONTEXT went first, as opt_info asks.
    assert_eq!(
        p.client.meta_context_id(CONTEXT_BASE_ALLOCATION),
        Some(CTX_ID)
    );
    p.events.clear();

    p.client.config_mut().export_name = "nope".into();
    p.client.opt_info().unwrap();
    p.run_until("INFO of an unknown export", negotiating);
    let failed = p.events.iter().any(|e| {
        matches!(e, Event::OptionDone { option: opt::INFO, result: Err(f) }
            if f.reply_type == rep::ERR_UNKNOWN)
    });
    assert!(failed, "events {:?}", p.events);
    p.events.clear();

    // A failed GO leaves the client negotiating, and the codec decoding.
    p.client.opt_go().unwrap();
    p.run_until("GO to an unknown export", negotiating);
    let failed = p.events.iter().any(|e| {
        matches!(e, Event::OptionDone { option: opt::GO, result: Err(f) }
            if f.reply_type == rep::ERR_UNKNOWN)
    });
    assert!(failed, "events {:?}", p.events);
    assert_eq!(p.server.codec.phase(), Phase::Options);
    assert_eq!(p.server.codec.awaiting_reply(), None);
    p.events.clear();

    p.client
        .opt_list_meta_context(vec!["base:".into()])
        .unwrap();
    p.run_until("LIST_META_CONTEXT", negotiating);
    assert!(p.events.contains(&Event::MetaContext(MetaContext {
        id: 0,
        name: CONTEXT_BASE_ALLOCATION.into()
    })));
    p.events.clear();

    p.client.config_mut().export_name = "disk2".into();
    p.client.opt_go().unwrap();
    p.connect();
    assert!(p.events.contains(&Event::Ready));
    assert_eq!(p.client.export().name.as_deref(), Some("disk2"));
    assert_eq!(
        p.client.meta_context_id(CONTEXT_BASE_ALLOCATION),
        Some(CTX_ID)
    );
    assert_eq!(
        p.server.options,
        [
            opt::EXTENDED_HEADERS,
            opt::LIST,
            opt::SET_META_CONTEXT,
            opt::INFO,
            opt::SET_META_CONTEXT,
            opt::INFO,
            opt::SET_META_CONTEXT,
            opt::GO,
            opt::LIST_META_CONTEXT,
            opt::SET_META_CONTEXT,
            opt::GO
        ]
    );

    // The export works.
    let data = Bytes::from_static(b"hello, pair");
    let w = Expected {
        kind: CommandKind::Write,
        offset: 4096,
        length: data.len() as u64,
        flags: 0,
        result: Ok(()),
        snapshot: None,
    };
    p.submit(Command::write(4096, data.clone()), w, None);
    p.run_until("write", |p| p.pending.is_empty());
    let r = Expected {
        kind: CommandKind::Read,
        offset: 4096,
        length: data.len() as u64,
        flags: 0,
        result: Ok(()),
        snapshot: Some(data.to_vec()),
    };
    p.submit(
        Command::new(CommandKind::Read, 4096, data.len() as u64),
        r,
        None,
    );
    p.run_until("read", |p| p.pending.is_empty());
    assert!(p.dead().is_none());
}

/// Opt mode: NBD_OPT_ABORT ends the session cleanly on both sides.
#[test]
fn opt_mode_abort() {
    let cfg = {
        let mut config = client_config(true, false);
        config.opt_mode = true;
        config
    };
    let mut p = Pair::new(cfg, ServerOpts::default(), Xfer::One, true);
    p.run_until("Negotiating", |p| p.client.state() == State::Negotiating);
    p.client.shutdown().unwrap();
    p.run_until("Closed", |p| p.client.state() == State::Closed);
    assert!(p.events.contains(&Event::Closed));
    assert!(p.server.closed);
    assert_eq!(
        p.server.options,
        [opt::STRUCTURED_REPLY, opt::ABORT],
        "events {:?}",
        p.events
    );
}

/// Commands in flight, then NBD_CMD_DISC: every command completes, then the
/// session closes, with the server holding and reordering replies.
#[test]
fn disconnect_after_commands() {
    for (mode, hold) in [(false, false), (true, true), (true, false)] {
        let opts = ServerOpts {
            hold,
            seed: 7,
            ..ServerOpts::default()
        };
        let mut p = Pair::new(client_config(true, mode), opts, Xfer::Random, false);
        p.connect();
        let mut cookies = Vec::new();
        for i in 0..8u64 {
            let off = i * 8192;
            let snap = initial_disk()[off as usize..off as usize + 4096].to_vec();
            let r = Expected {
                kind: CommandKind::Read,
                offset: off,
                length: 4096,
                flags: 0,
                result: Ok(()),
                snapshot: Some(snap),
            };
            cookies.push(p.submit(Command::new(CommandKind::Read, off, 4096), r, None));
        }
        let f = Expected {
            kind: CommandKind::Flush,
            offset: 0,
            length: 0,
            flags: 0,
            result: Ok(()),
            snapshot: None,
        };
        cookies.push(p.submit(Command::new(CommandKind::Flush, 0, 0), f, None));
        p.client.shutdown().unwrap();
        // A second shutdown is refused like any command after NBD_CMD_DISC
        // (libnbd 1.24: EINVAL), and nothing more may be submitted.
        let again = p.client.shutdown().unwrap_err();
        assert_eq!(again, SubmitError::AfterDisconnect);
        assert_eq!(again.errno(), nbd_proto::client::errno::EINVAL);
        assert!(p
            .client
            .submit(Command::new(CommandKind::Flush, 0, 0))
            .is_err());
        p.run_until("Closed", |p| {
            matches!(p.client.state(), State::Closed | State::Dead)
        });
        assert_eq!(p.client.state(), State::Closed, "events {:?}", p.events);
        assert!(p.pending.is_empty());
        for c in cookies {
            assert_eq!(p.completed.get(&c), Some(&Ok(())));
        }
        let closed = p.events.iter().position(|e| *e == Event::Closed).unwrap();
        assert_eq!(closed, p.events.len() - 1, "Closed is the last event");
        p.run_until("the server to see NBD_CMD_DISC", |p| p.server.closed);
        assert!(p.server.disc);
    }
}

/// The zero-copy path (handle_input / recv_target / handle_payload and
/// transmit_segments / advance_transmit) delivers the same data and results
/// as feed / take_output.
#[test]
fn zero_copy_matches_feed() {
    let ops = fixed_ops(ops_count(200, Xfer::All), 99);
    for (structured, extended) in [(false, false), (true, false), (true, true)] {
        for xfer in [Xfer::One, Xfer::Random, Xfer::All] {
            let ops = if xfer == Xfer::One {
                &ops[..ops_count(60, Xfer::One)]
            } else {
                &ops[..]
            };
            let mut outcomes = Vec::new();
            for zero_copy in [false, true] {
                let s = Session {
                    client_structured: structured,
                    client_extended: extended,
                    server_extended: true,
                    xfer,
                    zero_copy,
                    hold: true,
                    depth: 8,
                    seed: 3,
                    disconnect: false,
                };
                outcomes.push(run_session(&s, ops));
            }
            let (a, b) = (&outcomes[0], &outcomes[1]);
            assert_eq!(a.completed, b.completed);
            assert_eq!(a.reads.len(), b.reads.len());
            assert!(a.reads == b.reads, "read data differs between paths");
            assert!(a.disk == b.disk);
            assert!(!a.reads.is_empty());
        }
    }
}

/// Servers without NBD_OPT_GO, or without fixed newstyle: the client falls
/// back to NBD_OPT_EXPORT_NAME and the session works.
#[test]
fn export_name_fallbacks() {
    let cases = [
        ServerOpts {
            go: false,
            ..ServerOpts::default()
        },
        ServerOpts {
            handshake_flags: hf::NO_ZEROES,
            ..ServerOpts::default()
        },
        ServerOpts {
            handshake_flags: 0,
            structured: false,
            extended: false,
            go: false,
            ..ServerOpts::default()
        },
    ];
    let client_flags = [
        nbd_proto::consts::client_flags::MASK,
        nbd_proto::consts::client_flags::FIXED_NEWSTYLE,
    ];
    for (opts, flags) in cases
        .iter()
        .flat_map(|o| client_flags.iter().map(move |f| (o.clone(), *f)))
    {
        let fixed = opts.handshake_flags & hf::FIXED_NEWSTYLE != 0;
        let no_zeroes = opts.handshake_flags & hf::NO_ZEROES != 0
            && flags & nbd_proto::consts::client_flags::NO_ZEROES != 0;
        let cfg = {
            let mut config = client_config(true, true);
            config.handshake_flags = flags;
            config
        };
        let mut p = Pair::new(cfg, opts, Xfer::Random, true);
        p.connect();
        assert_eq!(
            p.client.client_flags(),
            p.server.codec.client_flags().unwrap()
        );
        assert_eq!(p.server.codec.no_zeroes(), no_zeroes);
        assert_eq!(p.client.export().size, SIZE);
        assert_eq!(p.client.fixed_newstyle(), fixed);
        assert_eq!(*p.server.options.last().unwrap(), opt::EXPORT_NAME);
        let r = Expected {
            kind: CommandKind::Read,
            offset: 100,
            length: 1000,
            flags: 0,
            result: Ok(()),
            snapshot: Some(initial_disk()[100..1100].to_vec()),
        };
        p.submit(Command::new(CommandKind::Read, 100, 1000), r, None);
        p.run_until("read", |p| p.pending.is_empty());
        assert!(p.dead().is_none());
    }
}

/// A long session with every knob at its most demanding: one byte at a
/// time, zero-copy, held and reordered replies, deep queue.
#[test]
fn one_byte_at_a_time_extended() {
    let s = Session {
        client_structured: true,
        client_extended: true,
        server_extended: true,
        xfer: Xfer::One,
        zero_copy: true,
        hold: true,
        depth: 16,
        seed: 11,
        disconnect: true,
    };
    run_session(&s, &fixed_ops(ops_count(150, Xfer::One), 5));
}

/// An oldstyle server: no negotiation, simple replies, and the export works.
#[test]
fn oldstyle_server() {
    let opts = ServerOpts {
        oldstyle: true,
        hold: true,
        ..ServerOpts::default()
    };
    let mut p = Pair::new(client_config(true, true), opts, Xfer::Random, true);
    p.connect();
    assert!(!p.client.structured_replies());
    assert_eq!(p.client.export().size, SIZE);
    assert_eq!(p.client.export().flags, EXPORT_FLAGS);
    assert!(p.server.options.is_empty());
    let data = Bytes::from(vec![9u8; 3000]);
    let w = Expected {
        kind: CommandKind::Write,
        offset: 500_000,
        length: 3000,
        flags: 0,
        result: Ok(()),
        snapshot: None,
    };
    p.submit(
        Command {
            kind: CommandKind::Write,
            offset: 500_000,
            length: 3000,
            flags: 0,
            payload: Payload::External,
        },
        w,
        Some(data.clone()),
    );
    p.run_until("write", |p| p.pending.is_empty());
    for (off, len) in [(499_000u64, 5000u64), (BAD_START, 10)] {
        let mut want = initial_disk()[off as usize..(off + len) as usize].to_vec();
        if off == 499_000 {
            want[1000..4000].fill(9);
        }
        let bad = touches_bad(off, len);
        let r = Expected {
            kind: CommandKind::Read,
            offset: off,
            length: len,
            flags: 0,
            result: if bad { Err(errno::EIO) } else { Ok(()) },
            snapshot: Some(want),
        };
        p.submit(Command::new(CommandKind::Read, off, len), r, None);
    }
    p.run_until("reads", |p| p.pending.is_empty());
    assert!(p.dead().is_none());
}

/// TLS "allow" against a server that refuses STARTTLS: negotiation goes on
/// in clear.
#[test]
fn starttls_refused_goes_on_in_clear() {
    let cfg = {
        let mut config = client_config(true, true);
        config.tls = nbd_proto::client::TlsMode::Allow;
        config
    };
    let mut p = Pair::new(cfg, ServerOpts::default(), Xfer::All, false);
    p.connect();
    assert!(!p.client.tls_negotiated());
    assert!(p.client.extended_headers());
    assert_eq!(
        p.server.options,
        [
            opt::STARTTLS,
            opt::EXTENDED_HEADERS,
            opt::SET_META_CONTEXT,
            opt::GO
        ]
    );
}
