//! Hostile servers during transmission: every reply byte is untrusted. A bad
//! reply must fail the command it names (when framing is intact) or kill the
//! connection (when it is not); never a panic, a hang, unbounded memory, a
//! success over bytes not received, or payload outside the command's buffer
//! (the Harness asserts the last). Also: the client's own strictness checks.

mod common;
use bytes::{BufMut, Bytes};
use common::*;
use nbd_proto::client::{
    errno, strict, ChunkKind, Client, Command, CommandKind, Event, Payload, ProtocolError,
    RecvTarget, State, SubmitError,
};
use nbd_proto::consts::{cmd_flags, errno as nbd_errno, limits, reply_type as rt};
use nbd_proto::consts::{transmission_flags as tf, CONTEXT_BASE_ALLOCATION};
use nbd_proto::wire::reply::ErrorChunk;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ----- allocation tracking (largest single allocation, per thread) -----

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|m| {
        if size > m.get() {
            m.set(size);
        }
    });
}

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

// ----- helpers -----

const MODES: [Mode; 3] = [Mode::Simple, Mode::Structured, Mode::Extended];
const CHUNKED: [Mode; 2] = [Mode::Structured, Mode::Extended];
const DONE: u16 = 1;

fn raw_chunk(mode: Mode, flags: u16, ty: u16, cookie: u64, req_off: u64, p: &[u8]) -> Vec<u8> {
    let mut v = chunk(mode, flags, ty, cookie, req_off, p.len() as u64);
    v.extend_from_slice(p);
    v
}

fn flush(c: &mut Client) -> u64 {
    c.submit(Command::new(CommandKind::Flush, 0, 0)).unwrap()
}

fn write(c: &mut Client, off: u64, data: &'static [u8]) -> u64 {
    c.submit(Command::write(off, Bytes::from_static(data)))
        .unwrap()
}

fn block_status(c: &mut Client, off: u64, len: u64) -> u64 {
    c.submit(Command::new(CommandKind::BlockStatus, off, len))
        .unwrap()
}

fn untouched(h: &Harness, cookie: u64) -> bool {
    h.bufs[&cookie].iter().all(|&b| b == 0xee)
}

fn err_chunk(mode: Mode, done: bool, cookie: u64, req_off: u64, error: u32) -> Vec<u8> {
    error_chunk(
        mode,
        done,
        cookie,
        req_off,
        &ErrorChunk {
            error,
            message: "boom".into(),
            offset: None,
        },
    )
}

fn error_payload(error: u32, msg_len: u16, msg: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.put_u32(error);
    p.put_u16(msg_len);
    p.extend_from_slice(msg);
    p.extend_from_slice(tail);
    p
}

/// Feeds `s` and asserts the client consumed all of it.
fn feed_all(c: &mut Client, h: &mut Harness, s: &[u8]) {
    assert_eq!(h.feed(c, s), s.len(), "events: {:?}", h.events);
}

/// A good reply to an 8-byte READ in `mode` with `data`.
fn good_read_reply(mode: Mode, cookie: u64, off: u64, data: &[u8]) -> Vec<u8> {
    match mode {
        Mode::Simple => {
            let mut v = simple(cookie, 0);
            v.extend_from_slice(data);
            v
        }
        _ => data_chunk(mode, true, cookie, off, off, data),
    }
}

// ----- framing: magic, cookies, reply forms -----

#[test]
fn reply_bad_magic_dies() {
    for mode in MODES {
        for i in 0..4 {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 0, 8);
            let mut s = good_read_reply(mode, r, 0, b"abcdefgh");
            s[i] ^= 0x04;
            h.feed(&mut c, &s);
            assert_dead(&c, &h, errno::EPROTO);
            assert_eq!(result_of(&h, r), Err(errno::ENOTCONN));
            assert!(untouched(&h, r), "{mode:?}");
        }
    }
}

#[test]
fn reply_for_an_unknown_cookie_dies() {
    for mode in MODES {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 8);
        let s = match mode {
            Mode::Simple => simple(r + 100, 0),
            _ => none_chunk(mode, r + 100, 0),
        };
        h.feed(&mut c, &s);
        assert_dead(&c, &h, errno::EPROTO);
        assert!(matches!(
            dead_reason(&h),
            Some(ProtocolError::UnknownCookie(x)) if *x == r + 100
        ));
        assert_eq!(result_of(&h, r), Err(errno::ENOTCONN));
    }
}

#[test]
fn reply_for_a_retired_cookie_dies() {
    for mode in MODES {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 8);
        feed_all(&mut c, &mut h, &good_read_reply(mode, r, 0, b"abcdefgh"));
        assert_eq!(result_of(&h, r), Ok(()));
        let again = good_read_reply(mode, r, 0, b"ZZZZZZZZ");
        h.feed(&mut c, &again);
        assert_dead(&c, &h, errno::EPROTO);
        assert_eq!(result_of(&h, r), Ok(()), "no second completion");
        assert_eq!(h.bufs[&r], b"abcdefgh", "retired buffer not rewritten");
    }
}

#[test]
fn simple_reply_with_data_to_a_read_after_structured_replies_dies() {
    let (mut c, mut h) = ready(Mode::Structured);
    let r = h.read(&mut c, 0, 8);
    let mut s = simple(r, 0);
    s.extend_from_slice(b"abcdefgh");
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
    assert_eq!(result_of(&h, r), Err(errno::ENOTCONN));
    assert!(untouched(&h, r));
}

#[test]
fn simple_error_reply_to_a_read_after_structured_replies_fails_only_that_read() {
    // No payload can follow an error simple reply, so framing is intact.
    let (mut c, mut h) = ready(Mode::Structured);
    let r = h.read(&mut c, 0, 8);
    feed_all(&mut c, &mut h, &simple(r, nbd_errno::EIO));
    assert_eq!(result_of(&h, r), Err(errno::EIO));
    assert!(untouched(&h, r));
    assert_usable(&mut c, &mut h, Mode::Structured);
}

#[test]
fn simple_reply_to_a_non_read_with_structured_replies_is_accepted() {
    let (mut c, mut h) = ready(Mode::Structured);
    let f = flush(&mut c);
    feed_all(&mut c, &mut h, &simple(f, 0));
    assert_eq!(result_of(&h, f), Ok(()));
}

#[test]
fn structured_chunk_without_negotiation_dies() {
    let (mut c, mut h) = ready(Mode::Simple);
    let r = h.read(&mut c, 0, 8);
    h.feed(
        &mut c,
        &data_chunk(Mode::Structured, true, r, 0, 0, b"abcdefgh"),
    );
    assert_dead(&c, &h, errno::EPROTO);
    assert!(matches!(
        dead_reason(&h),
        Some(ProtocolError::NotNegotiated(_))
    ));
    assert!(untouched(&h, r));
}

#[test]
fn extended_header_without_negotiation_dies() {
    for mode in [Mode::Simple, Mode::Structured] {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 8);
        h.feed(
            &mut c,
            &data_chunk(Mode::Extended, true, r, 0, 0, b"abcdefgh"),
        );
        assert_dead(&c, &h, errno::EPROTO);
        assert!(untouched(&h, r));
        assert_eq!(result_of(&h, r), Err(errno::ENOTCONN));
    }
}

#[test]
fn compact_chunk_under_extended_headers_dies() {
    let (mut c, mut h) = ready(Mode::Extended);
    let r = h.read(&mut c, 0, 8);
    let mut s = data_chunk(Mode::Structured, true, r, 0, 0, b"abcdefgh");
    s.extend_from_slice(&[0; 16]);
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
    assert!(untouched(&h, r));
}

#[test]
fn simple_reply_under_extended_headers_dies() {
    for error in [0, nbd_errno::EIO] {
        let (mut c, mut h) = ready(Mode::Extended);
        let f = flush(&mut c);
        let mut s = simple(f, error);
        s.extend_from_slice(&[0; 16]);
        h.feed(&mut c, &s);
        assert_dead(&c, &h, errno::EPROTO);
        assert_eq!(result_of(&h, f), Err(errno::ENOTCONN));
    }
}

// ----- chunk lengths -----

#[test]
fn chunk_length_over_the_cap_dies_at_the_header() {
    let over = limits::MAX_CHUNK_METADATA + 1;
    for mode in CHUNKED {
        let hdr = if mode == Mode::Extended { 32 } else { 20 };
        for ty in [rt::BLOCK_STATUS, rt::ERROR, rt::NONE, 100, rt::OFFSET_HOLE] {
            let (mut c, mut h) = ready(mode);
            let b = block_status(&mut c, 0, 4096);
            let s = chunk(mode, DONE, ty, b, 0, over);
            assert_eq!(h.feed(&mut c, &s), hdr, "{mode:?} type {ty}");
            assert_dead(&c, &h, errno::EPROTO);
            assert!(matches!(
                dead_reason(&h),
                Some(ProtocolError::TooLong { .. })
            ));
            assert_eq!(result_of(&h, b), Err(errno::ENOTCONN));
        }
        // A data chunk may be as long as its read, not more.
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 16);
        let s = chunk(mode, DONE, rt::OFFSET_DATA, r, 0, u64::from(u32::MAX));
        assert_eq!(h.feed(&mut c, &s), hdr);
        assert_dead(&c, &h, errno::EPROTO);
        assert!(untouched(&h, r));
    }
}

#[test]
fn extended_64_bit_lengths_over_the_cap_die() {
    for len in [1u64 << 32, 1 << 40, i64::MAX as u64, u64::MAX] {
        for ty in [rt::OFFSET_DATA, rt::BLOCK_STATUS_EXT, rt::ERROR, rt::NONE] {
            let (mut c, mut h) = ready(Mode::Extended);
            let r = h.read(&mut c, 0, 16);
            let mut s = chunk(Mode::Extended, DONE, ty, r, 0, len);
            s.extend_from_slice(&[0; 64]);
            assert_eq!(h.feed(&mut c, &s), 32);
            assert_dead(&c, &h, errno::EPROTO);
            assert!(untouched(&h, r));
        }
    }
}

#[test]
fn extended_data_chunk_longer_than_the_request_is_rejected_unwritten() {
    // Under the cap: the framing holds, the chunk is skipped, nothing written.
    let (mut c, mut h) = ready(Mode::Extended);
    let r = h.read(&mut c, 0, 16);
    let s = data_chunk(Mode::Extended, true, r, 0, 0, &[0x55; 64]);
    feed_all(&mut c, &mut h, &s);
    assert_eq!(result_of(&h, r), Err(errno::EPROTO));
    assert!(untouched(&h, r));
    assert_usable(&mut c, &mut h, Mode::Extended);
}

#[test]
fn huge_block_status_chunk_is_not_allocated_up_front() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let b = block_status(&mut c, 0, 4096);
        let announced = 60u64 << 20;
        let mut s = chunk(
            mode,
            DONE,
            if mode == Mode::Extended {
                rt::BLOCK_STATUS_EXT
            } else {
                rt::BLOCK_STATUS
            },
            b,
            0,
            announced,
        );
        s.put_u32(CTX);
        s.extend_from_slice(&[0u8; 100]);
        LARGEST.with(|m| m.set(0));
        feed_all(&mut c, &mut h, &s);
        let largest = LARGEST.with(|m| m.get());
        assert!(
            largest < 1 << 20,
            "{mode:?}: allocated {largest} bytes for 104 bytes received"
        );
        // It keeps waiting for the rest and keeps consuming.
        assert_eq!(completions(&h, b), 0);
        assert!(c.wants_read());
        assert_eq!(c.state(), State::Processing);
        feed_all(&mut c, &mut h, &[0u8; 4096]);
        assert_eq!(completions(&h, b), 0);
        c.handle_eof();
        h.feed(&mut c, &[]);
        assert_dead(&c, &h, errno::ENOTCONN);
        assert_eq!(result_of(&h, b), Err(errno::ENOTCONN));
    }
}

// ----- NONE -----

#[test]
fn none_chunk_with_a_payload_fails_the_command() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let f = flush(&mut c);
        feed_all(
            &mut c,
            &mut h,
            &raw_chunk(mode, DONE, rt::NONE, f, 0, b"junk"),
        );
        assert_eq!(result_of(&h, f), Err(errno::EPROTO));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn none_chunk_without_done_fails_the_command() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 8);
        let mut s = data_chunk(mode, false, r, 0, 0, b"abcdefgh");
        s.extend(raw_chunk(mode, 0, rt::NONE, r, 0, b""));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(completions(&h, r), 0, "not done yet");
        feed_all(&mut c, &mut h, &none_chunk(mode, r, 0));
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_usable(&mut c, &mut h, mode);
    }
}

// ----- content chunks -----

#[test]
fn data_chunk_outside_the_request_is_rejected_unwritten() {
    // Request: 16 bytes at 4096.
    let cases: &[(u64, usize)] = &[(0, 8), (4088, 8), (4095, 2), (4096 + 8, 16), (4096 + 16, 1)];
    for mode in CHUNKED {
        for &(off, len) in cases {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 4096, 16);
            let data = vec![0x11; len];
            feed_all(&mut c, &mut h, &data_chunk(mode, true, r, 4096, off, &data));
            assert_eq!(result_of(&h, r), Err(errno::EPROTO), "{mode:?} {off}+{len}");
            assert!(untouched(&h, r));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn rejected_data_chunk_is_never_a_payload_target() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 4096, 16);
        let s = data_chunk(mode, true, r, 4096, 0, &[0x11; 16]);
        // Zero-copy driver: the whole chunk is control bytes, skipped.
        assert_eq!(c.handle_input(&s), s.len());
        assert_eq!(c.recv_target(), RecvTarget::Control);
        h.feed(&mut c, &[]);
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert!(untouched(&h, r));
    }
}

#[test]
fn data_chunk_offset_wrapping_at_2_64_is_rejected() {
    for mode in CHUNKED {
        for off in [u64::MAX - 3, u64::MAX, u64::MAX - 15] {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 0, 16);
            feed_all(
                &mut c,
                &mut h,
                &data_chunk(mode, true, r, 0, off, &[0x22; 8]),
            );
            assert_eq!(result_of(&h, r), Err(errno::EPROTO), "{mode:?} {off}");
            assert!(untouched(&h, r));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn data_chunk_for_a_read_at_the_top_of_the_offset_space_is_checked() {
    // Strictness off so the read itself may sit at the end of 2^64.
    for mode in CHUNKED {
        let cfg = {
            let mut config = config(mode);
            config.strict = 0;
            config
        };
        let (mut c, mut h) = ready_with(cfg, &handshake(mode));
        let base = u64::MAX - 7;
        let r = h.read(&mut c, base, 8);
        // Past the end (wraps): rejected.
        feed_all(
            &mut c,
            &mut h,
            &data_chunk(mode, false, r, base, base + 4, &[0x33; 8]),
        );
        assert!(untouched(&h, r));
        // Exactly the request: accepted (and the read still fails as a whole).
        feed_all(
            &mut c,
            &mut h,
            &data_chunk(mode, true, r, base, base, b"12345678"),
        );
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_eq!(h.bufs[&r], b"12345678");
    }
}

#[test]
fn hole_chunk_outside_the_request_is_rejected() {
    let cases: &[(u64, u32)] = &[
        (0, 8),
        (4095, 2),
        (4096 + 8, 16),
        (4096 + 16, 1),
        (u64::MAX - 3, 8),
        (u64::MAX, 1),
        (4096, u32::MAX),
    ];
    for mode in CHUNKED {
        for &(off, len) in cases {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 4096, 16);
            feed_all(&mut c, &mut h, &hole_chunk(mode, true, r, 4096, off, len));
            assert_eq!(result_of(&h, r), Err(errno::EPROTO), "{mode:?} {off}+{len}");
            assert!(untouched(&h, r), "no zeroing of a rejected hole");
            assert!(!h
                .events
                .iter()
                .any(|e| matches!(e, Event::ReadChunk { .. })));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn overlapping_data_chunks_are_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 16);
        let mut s = data_chunk(mode, false, r, 0, 0, b"aaaaaaaaaa");
        s.extend(data_chunk(mode, false, r, 0, 8, b"bbbbbbbb"));
        s.extend(none_chunk(mode, r, 0));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_eq!(&h.bufs[&r][..10], b"aaaaaaaaaa");
        assert_eq!(
            &h.bufs[&r][10..],
            &[0xee; 6],
            "overlapping bytes not written"
        );
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn duplicated_data_chunk_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 8);
        let mut s = data_chunk(mode, false, r, 0, 0, b"aaaaaaaa");
        s.extend(data_chunk(mode, true, r, 0, 0, b"bbbbbbbb"));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_eq!(h.bufs[&r], b"aaaaaaaa");
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn hole_overlapping_data_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 16);
        let mut s = data_chunk(mode, false, r, 0, 0, b"abcdefgh");
        s.extend(hole_chunk(mode, false, r, 0, 4, 8));
        s.extend(hole_chunk(mode, true, r, 0, 0, 8)); // duplicate of the data
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_eq!(&h.bufs[&r][..8], b"abcdefgh", "data not zeroed");
        assert_eq!(&h.bufs[&r][8..], &[0xee; 8]);
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn data_overlapping_a_hole_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 16);
        let mut s = hole_chunk(mode, false, r, 0, 0, 8);
        s.extend(data_chunk(mode, true, r, 0, 4, b"xxxxxxxx"));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_eq!(&h.bufs[&r][..8], &[0; 8]);
        assert_eq!(&h.bufs[&r][8..], &[0xee; 8]);
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn done_before_the_whole_range_is_covered_is_eio() {
    for mode in CHUNKED {
        type Script = fn(Mode, u64) -> Vec<u8>;
        let scripts: [(&str, Script); 4] = [
            ("none only", |m, r| none_chunk(m, r, 0)),
            ("half data", |m, r| {
                data_chunk(m, true, r, 0, 0, b"abcdefgh")
            }),
            ("hole then none", |m, r| {
                let mut s = hole_chunk(m, false, r, 0, 8, 8);
                s.extend(none_chunk(m, r, 0));
                s
            }),
            ("all but one byte", |m, r| {
                let mut s = data_chunk(m, false, r, 0, 0, b"abcdefgh");
                s.extend(hole_chunk(m, true, r, 0, 8, 7));
                s
            }),
        ];
        for (name, script) in scripts {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 0, 16);
            feed_all(&mut c, &mut h, &script(mode, r));
            assert_eq!(result_of(&h, r), Err(errno::EIO), "{mode:?}: {name}");
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn content_chunks_for_a_non_read_are_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let cmds = [
            flush(&mut c),
            write(&mut c, 0, b"12345678"),
            c.submit(Command::new(CommandKind::Trim, 0, 8)).unwrap(),
            c.submit(Command::new(CommandKind::Cache, 0, 8)).unwrap(),
            block_status(&mut c, 0, 8),
        ];
        drain(&mut c);
        for (i, &k) in cmds.iter().enumerate() {
            // The Harness panics if any payload is handed out for these cookies.
            let s = if i % 2 == 0 {
                data_chunk(mode, true, k, 0, 0, b"12345678")
            } else {
                hole_chunk(mode, true, k, 0, 0, 8)
            };
            feed_all(&mut c, &mut h, &s);
            assert_eq!(result_of(&h, k), Err(errno::EPROTO));
        }
        assert!(!h
            .events
            .iter()
            .any(|e| matches!(e, Event::ReadChunk { .. })));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn hole_of_length_zero_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 16);
        feed_all(&mut c, &mut h, &hole_chunk(mode, true, r, 0, 0, 0));
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert!(untouched(&h, r));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn hole_chunk_of_the_wrong_length_is_rejected() {
    for mode in CHUNKED {
        for len in [0usize, 8, 11, 13, 16] {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 0, 16);
            let mut p = Vec::new();
            p.put_u64(0);
            p.put_u32(16);
            p.resize(len, 0);
            feed_all(
                &mut c,
                &mut h,
                &raw_chunk(mode, DONE, rt::OFFSET_HOLE, r, 0, &p),
            );
            assert_eq!(result_of(&h, r), Err(errno::EPROTO), "{mode:?} {len}");
            assert!(untouched(&h, r));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn data_chunk_without_data_is_rejected() {
    for mode in CHUNKED {
        for len in [0usize, 4, 8] {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 0, 16);
            let p = vec![0u8; len];
            feed_all(
                &mut c,
                &mut h,
                &raw_chunk(mode, DONE, rt::OFFSET_DATA, r, 0, &p),
            );
            assert_eq!(result_of(&h, r), Err(errno::EPROTO), "{mode:?} {len}");
            assert!(untouched(&h, r));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn read_reply_too_fragmented_fails_the_read() {
    // 4096 separate one-byte holes are tracked; one more separate range is not.
    let (mut c, mut h) = ready(Mode::Structured);
    let r = h.read(&mut c, 0, 16384);
    let mut s = Vec::new();
    for i in 0..4097u64 {
        s.extend(hole_chunk(Mode::Structured, false, r, 0, i * 2, 1));
    }
    s.extend(none_chunk(Mode::Structured, r, 0));
    feed_all(&mut c, &mut h, &s);
    assert_eq!(result_of(&h, r), Err(errno::EPROTO));
    assert_eq!(h.bufs[&r][8192], 0xee, "the refused hole is not zeroed");
    assert_usable(&mut c, &mut h, Mode::Structured);
}

#[test]
fn a_bad_chunk_fails_only_its_own_command() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let a = h.read(&mut c, 0, 8);
        let b = h.read(&mut c, 8, 8);
        let mut s = data_chunk(mode, false, a, 0, 100, b"AAAAAAAA");
        s.extend(data_chunk(mode, true, b, 8, 8, b"BBBBBBBB"));
        s.extend(data_chunk(mode, true, a, 0, 0, b"aaaaaaaa"));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, a), Err(errno::EPROTO));
        assert_eq!(result_of(&h, b), Ok(()));
        assert_eq!(h.bufs[&b], b"BBBBBBBB");
        assert_usable(&mut c, &mut h, mode);
    }
}

// ----- error chunks -----

#[test]
fn error_chunk_shorter_than_6_bytes_is_rejected() {
    for mode in CHUNKED {
        for len in [0usize, 4, 5] {
            let (mut c, mut h) = ready(mode);
            let f = flush(&mut c);
            let p = error_payload(nbd_errno::ENOSPC, 0, b"", b"")[..len].to_vec();
            feed_all(&mut c, &mut h, &raw_chunk(mode, DONE, rt::ERROR, f, 0, &p));
            assert_eq!(result_of(&h, f), Err(errno::EPROTO), "{mode:?} {len}");
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn error_chunk_with_message_past_its_end_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let f = flush(&mut c);
        let p = error_payload(nbd_errno::ENOSPC, 100, b"short", b"");
        feed_all(&mut c, &mut h, &raw_chunk(mode, DONE, rt::ERROR, f, 0, &p));
        assert_eq!(result_of(&h, f), Err(errno::EPROTO));
        // ERROR_OFFSET whose message eats into the offset.
        let r = h.read(&mut c, 0, 16);
        let p = error_payload(nbd_errno::EIO, 8, b"message!", &[0; 4]);
        feed_all(
            &mut c,
            &mut h,
            &raw_chunk(mode, DONE, rt::ERROR_OFFSET, r, 0, &p),
        );
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        // ERROR with trailing bytes after the message.
        let f = flush(&mut c);
        let p = error_payload(nbd_errno::EIO, 2, b"hi", b"xx");
        feed_all(&mut c, &mut h, &raw_chunk(mode, DONE, rt::ERROR, f, 0, &p));
        assert_eq!(result_of(&h, f), Err(errno::EPROTO));
        assert!(!h
            .events
            .iter()
            .any(|e| matches!(e, Event::ReadError { .. })));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn error_chunk_with_error_value_zero_is_eproto() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let f = flush(&mut c);
        feed_all(&mut c, &mut h, &err_chunk(mode, true, f, 0, 0));
        assert_eq!(result_of(&h, f), Err(errno::EPROTO));
        let r = h.read(&mut c, 0, 8);
        let e = ErrorChunk {
            error: 0,
            message: String::new(),
            offset: Some(4),
        };
        feed_all(&mut c, &mut h, &error_chunk(mode, true, r, 0, &e));
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn unknown_nbd_error_value_maps_to_einval() {
    for value in [2u32, 4, 9999, u32::MAX] {
        // Simple replies (both modes where they are allowed).
        for mode in [Mode::Simple, Mode::Structured] {
            let (mut c, mut h) = ready(mode);
            let f = flush(&mut c);
            feed_all(&mut c, &mut h, &simple(f, value));
            assert_eq!(result_of(&h, f), Err(errno::EINVAL), "{mode:?} {value}");
            assert_usable(&mut c, &mut h, mode);
        }
        for mode in CHUNKED {
            let (mut c, mut h) = ready(mode);
            let f = flush(&mut c);
            feed_all(&mut c, &mut h, &err_chunk(mode, true, f, 0, value));
            assert_eq!(result_of(&h, f), Err(errno::EINVAL), "{mode:?} {value}");
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn known_nbd_error_values_pass_through() {
    let known = [
        (nbd_errno::EPERM, errno::EPERM),
        (nbd_errno::EIO, errno::EIO),
        (nbd_errno::ENOMEM, errno::ENOMEM),
        (nbd_errno::EINVAL, errno::EINVAL),
        (nbd_errno::ENOSPC, errno::ENOSPC),
        (nbd_errno::EOVERFLOW, errno::EOVERFLOW),
        (nbd_errno::ENOTSUP, errno::ENOTSUP),
        (nbd_errno::ESHUTDOWN, errno::ESHUTDOWN),
    ];
    for (wire, local) in known {
        let (mut c, mut h) = ready(Mode::Simple);
        let r = h.read(&mut c, 0, 8);
        feed_all(&mut c, &mut h, &simple(r, wire));
        assert_eq!(result_of(&h, r), Err(local));
        assert!(untouched(&h, r), "no payload after an error simple reply");
        assert_usable(&mut c, &mut h, Mode::Simple);
        for mode in CHUNKED {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 0, 8);
            feed_all(&mut c, &mut h, &err_chunk(mode, true, r, 0, wire));
            assert_eq!(result_of(&h, r), Err(local));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn error_offset_outside_the_request_is_eproto() {
    for mode in CHUNKED {
        for off in [0u64, 4095, 4096 + 16, 4096 + 17, u64::MAX] {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 4096, 16);
            let e = ErrorChunk {
                error: nbd_errno::EIO,
                message: "bad sector".into(),
                offset: Some(off),
            };
            feed_all(&mut c, &mut h, &error_chunk(mode, true, r, 4096, &e));
            assert_eq!(result_of(&h, r), Err(errno::EPROTO), "{mode:?} {off}");
            assert!(!h
                .events
                .iter()
                .any(|e| matches!(e, Event::ReadError { .. })));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn error_offset_inside_a_read_reports_where_and_the_server_errno() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 4096, 16);
        let mut s = data_chunk(mode, false, r, 4096, 4096, b"abcdefgh");
        s.extend(error_chunk(
            mode,
            true,
            r,
            4096,
            &ErrorChunk {
                error: nbd_errno::EIO,
                message: String::new(),
                offset: Some(4100),
            },
        ));
        feed_all(&mut c, &mut h, &s);
        assert!(h.events.contains(&Event::ReadError {
            cookie: r,
            buf_offset: 4,
            errno: errno::EIO
        }));
        assert_eq!(result_of(&h, r), Err(errno::EIO));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn error_offset_on_a_write_reports_the_server_errno() {
    // The spec allows ERROR_OFFSET for WRITE, TRIM and BLOCK_STATUS too.
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let w = write(&mut c, 4096, b"0123456789abcdef");
        let e = ErrorChunk {
            error: nbd_errno::ENOSPC,
            message: "full".into(),
            offset: Some(4096 + 8),
        };
        feed_all(&mut c, &mut h, &error_chunk(mode, true, w, 4096, &e));
        assert_eq!(result_of(&h, w), Err(errno::ENOSPC));
        assert!(!h
            .events
            .iter()
            .any(|e| matches!(e, Event::ReadError { .. })));
        // Outside the write: a protocol error instead.
        let w = write(&mut c, 4096, b"0123456789abcdef");
        let e = ErrorChunk {
            offset: Some(4096 + 16),
            ..e
        };
        feed_all(&mut c, &mut h, &error_chunk(mode, true, w, 4096, &e));
        assert_eq!(result_of(&h, w), Err(errno::EPROTO));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn unknown_chunk_type_without_error_bit_is_eproto_and_survives() {
    for mode in CHUNKED {
        for done in [true, false] {
            let (mut c, mut h) = ready(mode);
            let r = h.read(&mut c, 0, 8);
            let mut s = raw_chunk(mode, if done { DONE } else { 0 }, 100, r, 0, b"mystery");
            if !done {
                s.extend(data_chunk(mode, true, r, 0, 0, b"abcdefgh"));
            }
            feed_all(&mut c, &mut h, &s);
            assert_eq!(result_of(&h, r), Err(errno::EPROTO), "{mode:?} done={done}");
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn unknown_chunk_type_with_error_bit_uses_the_errno_from_its_payload() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let f = flush(&mut c);
        let p = error_payload(nbd_errno::ENOSPC, 4, b"full", b"extra fields");
        feed_all(
            &mut c,
            &mut h,
            &raw_chunk(mode, DONE, rt::FLAG_ERROR | 100, f, 0, &p),
        );
        assert_eq!(result_of(&h, f), Err(errno::ENOSPC));
        // Its message may not run past the chunk.
        let f = flush(&mut c);
        let p = error_payload(nbd_errno::ENOSPC, 40, b"full", b"");
        feed_all(
            &mut c,
            &mut h,
            &raw_chunk(mode, DONE, rt::FLAG_ERROR | 100, f, 0, &p),
        );
        assert_eq!(result_of(&h, f), Err(errno::EPROTO));
        assert_usable(&mut c, &mut h, mode);
    }
}

// ----- block status -----

fn bs_type(mode: Mode) -> u16 {
    if mode == Mode::Extended {
        rt::BLOCK_STATUS_EXT
    } else {
        rt::BLOCK_STATUS
    }
}

#[test]
fn block_status_for_a_non_block_status_command_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 4096);
        let f = flush(&mut c);
        let mut s = status_chunk(mode, true, r, 0, CTX, &[(4096, 0)]);
        s.extend(status_chunk(mode, true, f, 0, CTX, &[(4096, 0)]));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, r), Err(errno::EPROTO));
        assert_eq!(result_of(&h, f), Err(errno::EPROTO));
        assert!(untouched(&h, r));
        assert!(!h.events.iter().any(|e| matches!(e, Event::Extents { .. })));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn block_status_for_an_unknown_context_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let b = block_status(&mut c, 0, 4096);
        let mut s = status_chunk(mode, false, b, 0, CTX + 1, &[(4096, 0)]);
        s.extend(status_chunk(mode, true, b, 0, CTX, &[(4096, 0)]));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, b), Err(errno::EPROTO));
        assert!(!h
            .events
            .iter()
            .any(|e| matches!(e, Event::Extents { context_id, .. } if *context_id != CTX)));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn block_status_of_the_wrong_length_is_rejected() {
    for mode in CHUNKED {
        let lens: &[usize] = if mode == Mode::Extended {
            &[0, 4, 8, 8 + 8, 8 + 16 + 8, 8 + 15]
        } else {
            &[0, 4, 8, 4 + 8 + 3, 4 + 7, 4 + 8 + 4]
        };
        for &len in lens {
            let (mut c, mut h) = ready(mode);
            let b = block_status(&mut c, 0, 4096);
            let mut p = Vec::new();
            p.put_u32(CTX);
            if mode == Mode::Extended {
                p.put_u32(((len.saturating_sub(8)) / 16) as u32);
            }
            p.resize(len, 0x01);
            feed_all(
                &mut c,
                &mut h,
                &raw_chunk(mode, DONE, bs_type(mode), b, 0, &p),
            );
            assert_eq!(result_of(&h, b), Err(errno::EPROTO), "{mode:?} {len}");
            assert!(!h.events.iter().any(|e| matches!(e, Event::Extents { .. })));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn empty_block_status_chunk_before_a_good_one_is_rejected() {
    // A zero-length chunk has no payload to parse; it must still be refused.
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let b = block_status(&mut c, 0, 4096);
        let mut s = raw_chunk(mode, 0, bs_type(mode), b, 0, b"");
        s.extend(status_chunk(mode, true, b, 0, CTX, &[(4096, 0)]));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, b), Err(errno::EPROTO));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn block_status_zero_length_extent_is_rejected() {
    for mode in CHUNKED {
        for extents in [&[(0u64, 0u64), (4096, 0)][..], &[(4096, 0), (0, 1)][..]] {
            let (mut c, mut h) = ready(mode);
            let b = block_status(&mut c, 0, 8192);
            feed_all(
                &mut c,
                &mut h,
                &status_chunk(mode, true, b, 0, CTX, extents),
            );
            assert_eq!(result_of(&h, b), Err(errno::EPROTO));
            assert!(!h.events.iter().any(|e| matches!(e, Event::Extents { .. })));
            assert_usable(&mut c, &mut h, mode);
        }
    }
}

#[test]
fn block_status_extents_past_the_export_end_are_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let b = block_status(&mut c, SIZE - 4096, 4096);
        feed_all(
            &mut c,
            &mut h,
            &status_chunk(mode, true, b, SIZE - 4096, CTX, &[(4096, 0), (1, 0)]),
        );
        assert_eq!(result_of(&h, b), Err(errno::EPROTO));
        // Past the request but within the export is allowed.
        let b = block_status(&mut c, 0, 4096);
        feed_all(
            &mut c,
            &mut h,
            &status_chunk(mode, true, b, 0, CTX, &[(SIZE, 0)]),
        );
        assert_eq!(result_of(&h, b), Ok(()));
        assert_usable(&mut c, &mut h, mode);
    }
    // 64-bit extent lengths whose sum wraps.
    let (mut c, mut h) = ready(Mode::Extended);
    let b = block_status(&mut c, 0, 4096);
    feed_all(
        &mut c,
        &mut h,
        &status_chunk(Mode::Extended, true, b, 0, CTX, &[(u64::MAX, 0), (2, 0)]),
    );
    assert_eq!(result_of(&h, b), Err(errno::EPROTO));
    assert_usable(&mut c, &mut h, Mode::Extended);
}

#[test]
fn block_status_req_one_answered_with_several_extents_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let b = c
            .submit(Command::new(CommandKind::BlockStatus, 0, 8192).with_flags(cmd_flags::REQ_ONE))
            .unwrap();
        let s = status_chunk(mode, true, b, 0, CTX, &[(4096, 0), (4096, 3)]);
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, b), Err(errno::EPROTO));
        let b = c
            .submit(Command::new(CommandKind::BlockStatus, 0, 8192).with_flags(cmd_flags::REQ_ONE))
            .unwrap();
        feed_all(
            &mut c,
            &mut h,
            &status_chunk(mode, true, b, 0, CTX, &[(4096, 0)]),
        );
        assert_eq!(result_of(&h, b), Ok(()));
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn block_status_for_the_same_context_twice_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let b = block_status(&mut c, 0, 8192);
        let mut s = status_chunk(mode, false, b, 0, CTX, &[(8192, 0)]);
        s.extend(status_chunk(mode, true, b, 0, CTX, &[(8192, 3)]));
        feed_all(&mut c, &mut h, &s);
        assert_eq!(result_of(&h, b), Err(errno::EPROTO));
        let n = h
            .events
            .iter()
            .filter(|e| matches!(e, Event::Extents { .. }))
            .count();
        assert_eq!(n, 1, "only the first set of extents is reported");
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn block_status_without_extents_for_the_negotiated_context_is_rejected() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let b = block_status(&mut c, 0, 4096);
        feed_all(&mut c, &mut h, &none_chunk(mode, b, 0));
        assert_eq!(result_of(&h, b), Err(errno::EPROTO));
        // A simple reply claims success without any extents.
        if mode == Mode::Structured {
            let b = block_status(&mut c, 0, 4096);
            feed_all(&mut c, &mut h, &simple(b, 0));
            assert_eq!(result_of(&h, b), Err(errno::EPROTO));
        }
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn extended_reply_offset_not_echoing_the_request_is_rejected() {
    let mode = Mode::Extended;
    let (mut c, mut h) = ready(mode);
    let r = h.read(&mut c, 4096, 8);
    feed_all(
        &mut c,
        &mut h,
        &data_chunk(mode, true, r, 0, 4096, b"abcdefgh"),
    );
    assert_eq!(result_of(&h, r), Err(errno::EPROTO));
    assert!(untouched(&h, r));
    let b = block_status(&mut c, 4096, 4096);
    feed_all(
        &mut c,
        &mut h,
        &status_chunk(mode, true, b, 8192, CTX, &[(4096, 0)]),
    );
    assert_eq!(result_of(&h, b), Err(errno::EPROTO));
    assert!(!h.events.iter().any(|e| matches!(e, Event::Extents { .. })));
    let f = c.submit(Command::new(CommandKind::Trim, 4096, 8)).unwrap();
    feed_all(&mut c, &mut h, &none_chunk(mode, f, 4095));
    assert_eq!(result_of(&h, f), Err(errno::EPROTO));
    assert_usable(&mut c, &mut h, mode);
}

#[test]
fn block_status_ext_with_the_wrong_descriptor_count_is_rejected() {
    let mode = Mode::Extended;
    for count in [0u32, 1, 3, u32::MAX] {
        let (mut c, mut h) = ready(mode);
        let b = block_status(&mut c, 0, 8192);
        let mut p = Vec::new();
        p.put_u32(CTX);
        p.put_u32(count);
        for _ in 0..2 {
            p.put_u64(4096);
            p.put_u64(0);
        }
        feed_all(
            &mut c,
            &mut h,
            &raw_chunk(mode, DONE, rt::BLOCK_STATUS_EXT, b, 0, &p),
        );
        assert_eq!(result_of(&h, b), Err(errno::EPROTO), "count {count}");
        assert_usable(&mut c, &mut h, mode);
    }
}

#[test]
fn compact_block_status_under_extended_headers_is_rejected() {
    let mode = Mode::Extended;
    let (mut c, mut h) = ready(mode);
    let b = block_status(&mut c, 0, 4096);
    let mut p = Vec::new();
    p.put_u32(CTX);
    p.put_u32(4096);
    p.put_u32(0);
    feed_all(
        &mut c,
        &mut h,
        &raw_chunk(mode, DONE, rt::BLOCK_STATUS, b, 0, &p),
    );
    assert_eq!(result_of(&h, b), Err(errno::EPROTO));
    assert_usable(&mut c, &mut h, mode);
}

#[test]
fn extended_block_status_without_extended_headers_is_rejected() {
    let mode = Mode::Structured;
    let (mut c, mut h) = ready(mode);
    let b = block_status(&mut c, 0, 4096);
    let mut p = Vec::new();
    p.put_u32(CTX);
    p.put_u32(1);
    p.put_u64(4096);
    p.put_u64(0);
    feed_all(
        &mut c,
        &mut h,
        &raw_chunk(mode, DONE, rt::BLOCK_STATUS_EXT, b, 0, &p),
    );
    assert_eq!(result_of(&h, b), Err(errno::EPROTO));
    assert_usable(&mut c, &mut h, mode);
}

// ----- truncation and death -----

fn check_every_cut(mode: Mode, stream: &[u8], submit: &dyn Fn(&mut Client, &mut Harness) -> u64) {
    // The whole stream completes the command successfully.
    let (mut c, mut h) = ready(mode);
    let k = submit(&mut c, &mut h);
    feed_all(&mut c, &mut h, stream);
    assert_eq!(result_of(&h, k), Ok(()), "{mode:?}: the full reply is good");
    for cut in 0..stream.len() {
        let (mut c, mut h) = ready(mode);
        let k = submit(&mut c, &mut h);
        feed_all(&mut c, &mut h, &stream[..cut]);
        assert_eq!(
            completions(&h, k),
            0,
            "{mode:?}: complete after {cut} bytes"
        );
        assert!(c.wants_read());
        assert_eq!(c.state(), State::Processing);
        c.handle_eof();
        h.feed(&mut c, &[]);
        assert_dead(&c, &h, errno::ENOTCONN);
        assert_eq!(result_of(&h, k), Err(errno::ENOTCONN), "{mode:?} cut {cut}");
    }
}

#[test]
fn truncated_read_reply_fails_with_enotconn_at_every_cut() {
    for mode in MODES {
        let stream = match mode {
            Mode::Simple => {
                let mut v = simple(1, 0);
                v.extend_from_slice(b"0123456789abcdef");
                v
            }
            _ => {
                let mut v = data_chunk(mode, false, 1, 0, 8, b"89abcdef");
                v.extend(hole_chunk(mode, false, 1, 0, 0, 8));
                v.extend(none_chunk(mode, 1, 0));
                v
            }
        };
        check_every_cut(mode, &stream, &|c, h| {
            let k = h.read(c, 0, 16);
            assert_eq!(k, 1);
            k
        });
    }
}

#[test]
fn truncated_block_status_reply_fails_with_enotconn_at_every_cut() {
    for mode in CHUNKED {
        let stream = status_chunk(mode, true, 1, 0, CTX, &[(4096, 0), (4096, 3)]);
        check_every_cut(mode, &stream, &|c, _| block_status(c, 0, 8192));
    }
}

#[test]
fn truncated_error_reply_fails_with_enotconn_at_every_cut() {
    for mode in CHUNKED {
        let stream = err_chunk(mode, true, 1, 0, nbd_errno::EIO);
        // The full stream fails the command with EIO rather than succeeding:
        // check the prefixes only.
        for cut in 0..stream.len() {
            let (mut c, mut h) = ready(mode);
            let f = flush(&mut c);
            feed_all(&mut c, &mut h, &stream[..cut]);
            assert_eq!(completions(&h, f), 0);
            c.handle_eof();
            h.feed(&mut c, &[]);
            assert_eq!(result_of(&h, f), Err(errno::ENOTCONN));
        }
    }
}

#[test]
fn reply_fed_one_byte_at_a_time_is_the_same_as_at_once() {
    for mode in CHUNKED {
        let (mut c, mut h) = ready(mode);
        let r = h.read(&mut c, 0, 16);
        let b = block_status(&mut c, 0, 8192);
        let mut s = data_chunk(mode, false, r, 0, 8, b"89abcdef");
        s.extend(status_chunk(mode, true, b, 0, CTX, &[(4096, 0), (4096, 3)]));
        s.extend(hole_chunk(mode, true, r, 0, 0, 8));
        for byte in &s {
            feed_all(&mut c, &mut h, std::slice::from_ref(byte));
        }
        assert_eq!(result_of(&h, r), Ok(()));
        assert_eq!(result_of(&h, b), Ok(()));
        assert_eq!(&h.bufs[&r][..8], &[0; 8]);
        assert_eq!(&h.bufs[&r][8..], b"89abcdef");
    }
}

#[test]
fn many_commands_in_flight_each_complete_once_when_the_connection_dies() {
    #[derive(Debug, Clone, Copy)]
    enum Death {
        Eof,
        IoError,
        Abandon,
        BadMagic,
    }
    for mode in MODES {
        for death in [Death::Eof, Death::IoError, Death::Abandon, Death::BadMagic] {
            let (mut c, mut h) = ready(mode);
            let mut cookies = Vec::new();
            for i in 0..40 {
                cookies.push(h.read(&mut c, i * 16, 16));
            }
            for _ in 0..5 {
                cookies.push(write(&mut c, 0, b"payload!"));
                cookies.push(flush(&mut c));
            }
            if mode != Mode::Simple {
                for _ in 0..5 {
                    cookies.push(block_status(&mut c, 0, 4096));
                }
            }
            // One command completes normally first; another is half received.
            let first = cookies[0];
            feed_all(&mut c, &mut h, &good_read_reply(mode, first, 0, &[7; 16]));
            let partial = cookies[1];
            let mut s = good_read_reply(mode, partial, 16, &[9; 16]);
            s.truncate(s.len() - 5);
            feed_all(&mut c, &mut h, &s);
            // Don't send everything queued: some requests are still unsent.
            let mut out = Vec::new();
            c.take_output(&mut out, &mut |_, _, _| &[]);
            assert_eq!(c.in_flight(), cookies.len() - 1);
            match death {
                Death::Eof => c.handle_eof(),
                Death::IoError => c.handle_io_error("connection reset"),
                Death::Abandon => c.abandon(),
                Death::BadMagic => {
                    // Finish the partial payload, then garbage.
                    let mut g = vec![9u8; 5];
                    g.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
                    g.extend_from_slice(&[0; 28]);
                    h.feed(&mut c, &g);
                }
            }
            h.feed(&mut c, &[]);
            let want = match death {
                Death::Eof | Death::Abandon => errno::ENOTCONN,
                Death::IoError => errno::EIO,
                Death::BadMagic => errno::EPROTO,
            };
            assert_dead(&c, &h, want);
            assert_eq!(result_of(&h, first), Ok(()));
            for &k in &cookies[1..] {
                if matches!(death, Death::BadMagic) && k == partial {
                    // Its payload completed before the garbage arrived.
                    assert_eq!(result_of(&h, k), Ok(()), "{mode:?}");
                    continue;
                }
                assert_eq!(result_of(&h, k), Err(errno::ENOTCONN), "{mode:?} {death:?}");
            }
            // Every completion precedes the Dead event.
            let dead_at = h
                .events
                .iter()
                .position(|e| matches!(e, Event::Dead(_)))
                .unwrap();
            assert!(h.events[dead_at + 1..]
                .iter()
                .all(|e| !matches!(e, Event::Complete { .. })));
            // Later input and calls are ignored; nothing completes again.
            let n = h.events.len();
            assert_eq!(h.feed(&mut c, &good_read_reply(mode, 2, 16, &[1; 16])), 0);
            c.handle_eof();
            c.abandon();
            h.feed(&mut c, &[]);
            assert_eq!(h.events.len(), n);
            assert!(matches!(
                c.submit(Command::new(CommandKind::Flush, 0, 0)),
                Err(SubmitError::InvalidState(_))
            ));
        }
    }
}

// ----- client-side strictness -----

/// A client for `mode` with `strict` bits, whose GO replies are `go`.
fn strict_client(mode: Mode, strict: u32, go: Vec<u8>) -> (Client, Harness) {
    let cfg = {
        let mut config = config(mode);
        config.strict = strict;
        config
    };
    let mut s = handshake_before_go(mode);
    s.extend(go);
    ready_with(cfg, &s)
}

/// Asserts a submission is refused with `want` and queues nothing.
fn refused(c: &mut Client, cmd: Command, want: &SubmitError) {
    let (pending, inflight) = (c.pending_output(), c.in_flight());
    let what = format!("{:?} {:?}", cmd.kind, cmd.flags);
    assert_eq!(c.submit(cmd).as_ref(), Err(want), "{what}");
    assert_eq!(c.pending_output(), pending, "{what}: nothing queued");
    assert_eq!(c.in_flight(), inflight);
}

/// Asserts a submission is accepted and queues one request.
fn accepted(c: &mut Client, cmd: Command) {
    let before = c.pending_output();
    let what = format!("{:?} {:?}", cmd.kind, cmd.flags);
    assert!(c.submit(cmd).is_ok(), "{what}");
    assert!(c.pending_output() > before, "{what}");
}

fn cmd(kind: CommandKind, off: u64, len: u64) -> Command {
    Command::new(kind, off, len)
}

fn write_cmd(off: u64, len: u64) -> Command {
    Command {
        kind: CommandKind::Write,
        offset: off,
        length: len,
        flags: 0,
        payload: Payload::External,
    }
}

#[test]
fn strict_commands_refuses_unadvertised_commands_and_flags() {
    use CommandKind::*;
    let bare = tf::HAS_FLAGS;
    let list = || {
        vec![
            (cmd(Flush, 0, 0), "flush"),
            (cmd(Trim, 0, 512), "trim"),
            (cmd(Cache, 0, 512), "cache"),
            (cmd(WriteZeroes, 0, 512), "write zeroes"),
            (write_cmd(0, 512).with_flags(cmd_flags::FUA), "FUA"),
            (cmd(Read, 0, 512).with_flags(cmd_flags::DF), "DF"),
            (
                cmd(WriteZeroes, 0, 512).with_flags(cmd_flags::FAST_ZERO),
                "write zeroes",
            ),
        ]
    };
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, bare));
    for (command, what) in list() {
        refused(&mut c, command, &SubmitError::NotSupported(what));
    }
    let (mut c, _) = strict_client(
        Mode::Structured,
        strict::ALL & !strict::COMMANDS,
        go_ok(SIZE, bare),
    );
    for (command, _) in list() {
        accepted(&mut c, command);
    }
}

#[test]
fn strict_commands_refuses_writes_on_a_read_only_export() {
    use CommandKind::*;
    let ro = FLAGS | tf::READ_ONLY;
    let list = || {
        vec![
            write_cmd(0, 512),
            cmd(Trim, 0, 512),
            cmd(WriteZeroes, 0, 512),
        ]
    };
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, ro));
    assert!(c.is_read_only());
    // The export offers trim and zeroes, so all three fail as writes
    // (EPERM, as libnbd's nbd_pwrite on a read-only export).
    for command in list() {
        refused(&mut c, command, &SubmitError::ReadOnly);
    }
    assert_eq!(
        SubmitError::ReadOnly.errno(),
        nbd_proto::consts::errno::EPERM as i32
    );
    accepted(&mut c, cmd(Read, 0, 512));
    let (mut c, _) = strict_client(
        Mode::Structured,
        strict::ALL & !strict::COMMANDS,
        go_ok(SIZE, ro),
    );
    for command in list() {
        accepted(&mut c, command);
    }
}

#[test]
fn strict_commands_refuses_block_status_without_contexts_and_df_without_structured() {
    use CommandKind::*;
    let (mut c, _) = strict_client(Mode::Simple, strict::ALL, go_ok(SIZE, FLAGS));
    assert!(c.meta_contexts().is_empty());
    refused(
        &mut c,
        cmd(BlockStatus, 0, 512),
        &SubmitError::NoMetaContext,
    );
    assert_eq!(
        SubmitError::NoMetaContext.errno(),
        nbd_proto::client::errno::ENOTSUP
    );
    refused(
        &mut c,
        cmd(Read, 0, 512).with_flags(cmd_flags::DF),
        &SubmitError::NotSupported("DF without structured replies"),
    );
    let (mut c, _) = strict_client(
        Mode::Simple,
        strict::ALL & !strict::COMMANDS,
        go_ok(SIZE, FLAGS),
    );
    accepted(&mut c, cmd(BlockStatus, 0, 512));
    accepted(&mut c, cmd(Read, 0, 512).with_flags(cmd_flags::DF));
    // With contexts negotiated, block status is fine under strict COMMANDS.
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, FLAGS));
    assert!(c.meta_context_id(CONTEXT_BASE_ALLOCATION).is_some());
    accepted(&mut c, cmd(BlockStatus, 0, 512));
}

#[test]
fn strict_flags_refuses_flags_not_valid_for_the_command() {
    use CommandKind::*;
    let list = || {
        vec![
            cmd(Read, 0, 512).with_flags(cmd_flags::FUA),
            cmd(Flush, 0, 0).with_flags(cmd_flags::FUA),
            cmd(Trim, 0, 512).with_flags(cmd_flags::DF),
            cmd(BlockStatus, 0, 512).with_flags(cmd_flags::FUA),
            cmd(Read, 0, 512).with_flags(cmd_flags::REQ_ONE),
            write_cmd(0, 512).with_flags(cmd_flags::NO_HOLE),
            cmd(Cache, 0, 512).with_flags(1 << 9),
            cmd(Flush, 0, 0).with_flags(1 << 15),
        ]
    };
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, FLAGS));
    for command in list() {
        let f = command.flags;
        refused(&mut c, command, &SubmitError::BadFlags(f));
    }
    let (mut c, _) = strict_client(
        Mode::Structured,
        strict::ALL & !strict::FLAGS,
        go_ok(SIZE, FLAGS),
    );
    for command in list() {
        accepted(&mut c, command);
    }
}

#[test]
fn payload_len_flag_is_refused_but_on_writes_with_extended_headers() {
    for mode in MODES {
        for s in [strict::ALL, 0] {
            let (mut c, _) = strict_client(mode, s, go_ok(SIZE, FLAGS));
            let f = cmd_flags::PAYLOAD_LEN;
            refused(
                &mut c,
                cmd(CommandKind::Read, 0, 512).with_flags(f),
                &SubmitError::BadFlags(f),
            );
            refused(
                &mut c,
                cmd(CommandKind::BlockStatus, 0, 512).with_flags(f),
                &SubmitError::BadFlags(f),
            );
            if mode == Mode::Extended {
                // The header's length is the payload's anyway: harmless.
                accepted(&mut c, write_cmd(0, 512).with_flags(f));
            } else {
                refused(
                    &mut c,
                    write_cmd(0, 512).with_flags(f),
                    &SubmitError::BadFlags(f),
                );
            }
        }
    }
}

#[test]
fn strict_bounds_refuses_requests_past_the_export_end() {
    use CommandKind::*;
    let list = || {
        vec![
            cmd(Read, SIZE - 4, 8),
            cmd(Read, SIZE, 1),
            write_cmd(SIZE - 1, 2),
            cmd(Trim, u64::MAX, 2),
            cmd(BlockStatus, SIZE, 512),
            cmd(Read, u64::MAX - 1, 4),
        ]
    };
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, FLAGS));
    for command in list() {
        // Writes, trims and zeroes: ENOSPC, the others EINVAL (as libnbd).
        let want = match command.kind {
            Write | Trim | WriteZeroes => SubmitError::OutOfBoundsWrite,
            _ => SubmitError::OutOfBounds,
        };
        refused(&mut c, command, &want);
    }
    accepted(&mut c, cmd(Read, SIZE - 8, 8));
    let (mut c, _) = strict_client(
        Mode::Structured,
        strict::ALL & !strict::BOUNDS,
        go_ok(SIZE, FLAGS),
    );
    for command in list() {
        accepted(&mut c, command);
    }
}

#[test]
fn strict_zero_size_refuses_zero_length_requests() {
    use CommandKind::*;
    let list = || {
        vec![
            cmd(Read, 0, 0),
            write_cmd(0, 0),
            cmd(Trim, 0, 0),
            cmd(WriteZeroes, 0, 0),
            cmd(Cache, 0, 0),
            cmd(BlockStatus, 0, 0),
        ]
    };
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, FLAGS));
    for command in list() {
        refused(&mut c, command, &SubmitError::ZeroSize);
    }
    accepted(&mut c, cmd(Flush, 0, 0));
    let (mut c, mut h) = strict_client(
        Mode::Structured,
        strict::ALL & !strict::ZERO_SIZE,
        go_ok(SIZE, FLAGS),
    );
    for command in list() {
        accepted(&mut c, command);
    }
    // A zero-length read answered by NONE alone is complete (nothing to cover).
    let r = h.read(&mut c, 0, 0);
    feed_all(&mut c, &mut h, &none_chunk(Mode::Structured, r, 0));
    assert_eq!(result_of(&h, r), Ok(()));
}

#[test]
fn strict_align_refuses_requests_not_aligned_to_the_minimum_block_size() {
    use CommandKind::*;
    let go = || go_with(SIZE, FLAGS, 512, 4096, 32 << 20);
    let list = || {
        vec![
            cmd(Read, 1, 512),
            cmd(Read, 0, 100),
            write_cmd(512, 513),
            cmd(Trim, 256, 512),
            cmd(BlockStatus, 0, 1),
        ]
    };
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go());
    for command in list() {
        refused(&mut c, command, &SubmitError::Unaligned(512));
    }
    accepted(&mut c, cmd(Read, 512, 1024));
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL & !strict::ALIGN, go());
    for command in list() {
        accepted(&mut c, command);
    }
    // A minimum of 1 constrains nothing.
    let (mut c, _) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, FLAGS));
    accepted(&mut c, cmd(Read, 1, 3));
}

#[test]
fn strict_payload_refuses_reads_and_writes_over_64_mib() {
    use CommandKind::*;
    let big = 1u64 << 30;
    let over = limits::MAX_REQUEST_PAYLOAD + 512;
    for mode in MODES {
        let (mut c, _) = strict_client(mode, strict::ALL, go_ok(big, FLAGS));
        refused(&mut c, cmd(Read, 0, over), &SubmitError::TooLarge);
        refused(&mut c, write_cmd(0, over), &SubmitError::TooLarge);
        accepted(&mut c, cmd(Read, 0, limits::MAX_REQUEST_PAYLOAD));
        accepted(&mut c, cmd(Trim, 0, over));
        let (mut c, _) = strict_client(mode, strict::ALL & !strict::PAYLOAD, go_ok(big, FLAGS));
        accepted(&mut c, cmd(Read, 0, over));
        accepted(&mut c, write_cmd(0, over));
    }
}

#[test]
fn length_over_u32_max_without_extended_headers_is_always_refused() {
    use CommandKind::*;
    let huge = 1u64 << 32;
    for mode in [Mode::Simple, Mode::Structured] {
        for s in [strict::ALL, 0] {
            let (mut c, _) = strict_client(mode, s, go_ok(i64::MAX as u64, FLAGS));
            for command in [
                cmd(Read, 0, huge),
                write_cmd(0, huge),
                cmd(Trim, 0, huge),
                cmd(WriteZeroes, 0, u64::MAX),
                cmd(Cache, 0, huge),
            ] {
                refused(&mut c, command, &SubmitError::TooLarge);
            }
            accepted(&mut c, cmd(Trim, 0, u64::from(u32::MAX)));
        }
    }
    // With extended headers a 64-bit length goes out.
    let (mut c, _) = strict_client(Mode::Extended, 0, go_ok(SIZE, FLAGS));
    let before = c.pending_output();
    accepted(&mut c, cmd(Trim, 0, huge));
    assert_eq!(c.pending_output() - before, 32);
    let (mut c, _) = strict_client(Mode::Extended, strict::ALL, go_ok(i64::MAX as u64, FLAGS));
    accepted(&mut c, cmd(Trim, 0, huge));
}

#[test]
fn refused_submissions_do_not_consume_cookies() {
    let (mut c, mut h) = strict_client(Mode::Structured, strict::ALL, go_ok(SIZE, FLAGS));
    refused(
        &mut c,
        cmd(CommandKind::Read, SIZE, 8),
        &SubmitError::OutOfBounds,
    );
    refused(&mut c, cmd(CommandKind::Read, 0, 0), &SubmitError::ZeroSize);
    let r = h.read(&mut c, 0, 8);
    assert_eq!(r, 1);
    feed_all(
        &mut c,
        &mut h,
        &data_chunk(Mode::Structured, true, 1, 0, 0, b"abcdefgh"),
    );
    assert_eq!(result_of(&h, r), Ok(()));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::ReadChunk {
            kind: ChunkKind::Data,
            ..
        }
    )));
}

/// Mutated streams per run; under Miri, which interprets every step
/// thousands of times slower, a sample (scripts/miri.sh).
const MUTATION_RUNS: usize = if cfg!(miri) { 300 } else { 6000 };

#[test]
fn mutated_reply_streams_never_report_unreceived_data() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for i in 0..MUTATION_RUNS {
        let mode = MODES[i % 3];
        let (mut c, mut h) = ready(mode);
        let a = h.read(&mut c, 0, 16);
        let b = h.read(&mut c, 100, 8);
        let f = flush(&mut c);
        let w = write(&mut c, 0, b"12345678");
        let mut reads = vec![(a, 16u64), (b, 8)];
        let mut all = vec![a, b, f, w];
        let mut s = Vec::new();
        let mut bs = None;
        if mode == Mode::Simple {
            s.extend(good_read_reply(mode, b, 100, b"BBBBBBBB"));
            s.extend(good_read_reply(mode, a, 0, b"0123456789abcdef"));
            s.extend(simple(f, 0));
            s.extend(simple(w, nbd_errno::ENOSPC));
        } else {
            let k = block_status(&mut c, 0, 8192);
            bs = Some(k);
            all.push(k);
            let r = h.read(&mut c, 200, 4);
            reads.push((r, 4));
            all.push(r);
            s.extend(data_chunk(mode, false, a, 0, 8, b"89abcdef"));
            s.extend(data_chunk(mode, true, b, 100, 100, b"BBBBBBBB"));
            s.extend(hole_chunk(mode, false, a, 0, 0, 8));
            s.extend(status_chunk(mode, true, k, 0, CTX, &[(4096, 0), (4096, 3)]));
            s.extend(none_chunk(mode, a, 0));
            s.extend(err_chunk(mode, true, f, 0, nbd_errno::EIO));
            s.extend(none_chunk(mode, w, 0));
            s.extend(hole_chunk(mode, true, r, 200, 200, 4));
        }
        drain(&mut c);
        mutate(&mut rng, &mut s);
        feed_in_pieces(&mut rng, &mut c, &mut h, &s);
        c.handle_eof();
        h.feed(&mut c, &[]);
        assert!(matches!(c.state(), State::Dead | State::Closed), "#{i}");
        for &k in &all {
            assert_eq!(
                completions(&h, k),
                1,
                "#{i} {mode:?} cookie {k}: {:?}",
                h.events
            );
        }
        let done_at = |k: u64| {
            h.events
                .iter()
                .position(|e| matches!(e, Event::Complete { cookie, .. } if *cookie == k))
                .unwrap()
        };
        // Nothing happens to a command after it completed.
        for (at, e) in h.events.iter().enumerate() {
            let k = match e {
                Event::ReadChunk { cookie, .. }
                | Event::ReadError { cookie, .. }
                | Event::Extents { cookie, .. } => *cookie,
                _ => continue,
            };
            assert!(at < done_at(k), "#{i}: event after completion: {e:?}");
        }
        // A successful read was covered exactly once by what was received.
        for &(k, len) in &reads {
            if h.completion(k) != Some(Ok(())) {
                continue;
            }
            let mut parts: Vec<(u64, u64)> = h
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::ReadChunk {
                        cookie,
                        buf_offset,
                        len,
                        ..
                    } if *cookie == k => Some((*buf_offset, *len)),
                    _ => None,
                })
                .collect();
            parts.sort_unstable();
            let mut end = 0;
            for (o, l) in parts {
                assert_eq!(o, end, "#{i} {mode:?}: gap or overlap in read {k}");
                end = o + l;
            }
            assert_eq!(end, len, "#{i} {mode:?}: read {k} not fully covered");
        }
        // Successful block status reported the negotiated context.
        if let Some(k) = bs {
            if h.completion(k) == Some(Ok(())) {
                assert!(h.events.iter().any(|e| matches!(e,
                    Event::Extents { cookie, context_id, .. } if *cookie == k && *context_id == CTX)));
            }
        }
    }
}

#[test]
fn eof_after_disconnect_fails_pending_commands_once_and_closes() {
    for mode in MODES {
        let (mut c, mut h) = ready(mode);
        let a = h.read(&mut c, 0, 8);
        let f = flush(&mut c);
        c.shutdown().unwrap();
        drain(&mut c);
        feed_all(&mut c, &mut h, &good_read_reply(mode, a, 0, b"abcdefgh"));
        assert_eq!(result_of(&h, a), Ok(()));
        c.handle_eof();
        h.feed(&mut c, &[]);
        assert_eq!(c.state(), State::Closed);
        assert!(h.events.contains(&Event::Closed));
        assert!(!h.dead());
        assert_eq!(result_of(&h, f), Err(errno::ENOTCONN));
        assert_eq!(result_of(&h, a), Ok(()));
        assert_eq!(
            h.feed(&mut c, &simple(f, 0)),
            0,
            "input after close is ignored"
        );
    }
}

// ----- block status with a context list (NBD_CMD_FLAG_PAYLOAD_LEN) -----

/// The second context of [`two_contexts`].
const CTX2: u32 = 9;

/// An extended-headers client that negotiated `base:allocation` (CTX) and
/// `qemu:dirty-bitmap:b` (CTX2).
fn two_contexts() -> (Client, Harness) {
    use nbd_proto::consts::{handshake_flags, opt};
    use nbd_proto::wire::option::{MetaContext, OptionReply};
    let cfg = {
        let mut config = config(Mode::Extended);
        config.request_meta_contexts = vec!["base:allocation".into(), "qemu:dirty-bitmap:b".into()];
        config
    };
    let mut s = greeting(handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES);
    s.extend(ack(opt::EXTENDED_HEADERS));
    for (id, name) in [(CTX, "base:allocation"), (CTX2, "qemu:dirty-bitmap:b")] {
        s.extend(opt_reply(
            opt::SET_META_CONTEXT,
            &OptionReply::MetaContext(MetaContext {
                id,
                name: name.into(),
            }),
        ));
    }
    s.extend(ack(opt::SET_META_CONTEXT));
    s.extend(go_ok(SIZE, FLAGS | tf::BLOCK_STAT_PAYLOAD));
    let (c, h) = ready_with(cfg, &s);
    assert_eq!(c.meta_contexts().len(), 2);
    (c, h)
}

fn filtered(off: u64, len: u64, ids: Vec<u32>) -> Command {
    let mut c = Command::new(CommandKind::BlockStatus, off, len);
    c.payload = Payload::Contexts(ids);
    c
}

#[test]
fn context_list_goes_out_as_the_payload_with_payload_len() {
    use nbd_proto::wire::request::{BlockStatusPayload, RequestHeader};
    let (mut c, mut h) = two_contexts();
    let cookie = c
        .submit(filtered(4096, 8192, vec![CTX2]).with_flags(cmd_flags::REQ_ONE))
        .unwrap();
    let out = drain(&mut c);
    let header = RequestHeader::decode(&out[..32], true).unwrap();
    assert_eq!(header.flags, cmd_flags::REQ_ONE | cmd_flags::PAYLOAD_LEN);
    assert_eq!(header.command, nbd_proto::consts::cmd::BLOCK_STATUS);
    assert_eq!(header.offset, 4096);
    assert_eq!(header.length, 12, "the header carries the payload's length");
    assert_eq!(
        BlockStatusPayload::decode(&out[32..]).unwrap(),
        BlockStatusPayload {
            length: 8192,
            ids: vec![CTX2]
        }
    );
    // Only the context asked for is due; its extents are checked against
    // the range (8192 bytes at 4096), not against the payload's length.
    let mut s = status_chunk(Mode::Extended, false, cookie, 4096, CTX2, &[(8192, 1)]);
    s.extend(none_chunk(Mode::Extended, cookie, 4096));
    h.feed(&mut c, &s);
    assert_eq!(result_of(&h, cookie), Ok(()));
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::Extents { cookie: k, context_id: CTX2, .. } if *k == cookie
    )));
}

#[test]
fn context_list_reply_missing_a_wanted_context_fails_the_command() {
    let (mut c, mut h) = two_contexts();
    let cookie = c.submit(filtered(0, 4096, vec![CTX, CTX2])).unwrap();
    drain(&mut c);
    let mut s = status_chunk(Mode::Extended, false, cookie, 0, CTX, &[(4096, 0)]);
    s.extend(none_chunk(Mode::Extended, cookie, 0));
    h.feed(&mut c, &s);
    assert_eq!(result_of(&h, cookie), Err(errno::EPROTO));
    assert_alive(&c, &h);
}

#[test]
fn context_list_needs_extended_headers_and_block_status() {
    for mode in [Mode::Simple, Mode::Structured] {
        let (mut c, _) = ready(mode);
        refused(
            &mut c,
            filtered(0, 512, vec![CTX]),
            &SubmitError::NotSupported("a block status context list without extended headers"),
        );
    }
    let (mut c, _) = ready(Mode::Extended);
    let mut w = write_cmd(0, 512);
    w.payload = Payload::Contexts(vec![CTX]);
    refused(
        &mut c,
        w,
        &SubmitError::Invalid("write with a context list"),
    );
}

#[test]
fn chunk_counters_follow_messages_not_bytes() {
    let mut c = Client::new(config(Mode::Structured));
    let mut h = Harness::default();
    assert_eq!((c.chunks_sent(), c.chunks_received()), (0, 0));
    h.feed(&mut c, &handshake(Mode::Structured));
    drain(&mut c);
    assert_eq!(c.state(), State::Ready);
    // STRUCTURED_REPLY, SET_META_CONTEXT and GO went out; of what came
    // back only the greeting counts (option replies do not, as in libnbd).
    assert_eq!(c.chunks_sent(), 3);
    assert_eq!(c.chunks_received(), 1);
    let f = flush(&mut c);
    let r = h.read(&mut c, 0, 1024);
    assert_eq!(c.chunks_sent(), 5);
    let mut s = simple(f, 0);
    s.extend(data_chunk(Mode::Structured, false, r, 0, 0, &[1; 512]));
    s.extend(data_chunk(Mode::Structured, true, r, 0, 512, &[2; 512]));
    h.feed(&mut c, &s);
    assert_eq!(c.chunks_received(), 4);
    // A request withdrawn before it went out is not counted.
    let _ = flush(&mut c);
    assert_eq!(c.chunks_sent(), 6);
    assert_eq!(c.abandon_unsent(), 1);
    assert_eq!(c.chunks_sent(), 5);
}
