//! Basic client behaviour against scripted good servers, in every reply mode.

mod common;
use common::*;
use nbd_proto::client::{Client, Command, CommandKind, Event, State};

#[test]
fn negotiates_in_every_mode() {
    for mode in [Mode::Simple, Mode::Structured, Mode::Extended] {
        let (c, _) = ready(mode);
        assert_eq!(c.export().size, SIZE);
        assert_eq!(c.protocol(), Some("newstyle-fixed"));
        assert_eq!(c.structured_replies(), mode != Mode::Simple);
        assert_eq!(c.extended_headers(), mode == Mode::Extended);
        assert_eq!(
            c.meta_context_id("base:allocation").is_some(),
            mode != Mode::Simple
        );
    }
}

#[test]
fn simple_read_lands_in_buffer() {
    let (mut c, mut h) = ready(Mode::Simple);
    let cookie = h.read(&mut c, 4096, 8);
    assert_eq!(cookie, 1);
    let mut reply = simple(cookie, 0);
    reply.extend_from_slice(b"abcdefgh");
    assert_eq!(h.feed(&mut c, &reply), reply.len());
    assert_eq!(h.completion(cookie), Some(Ok(())));
    assert_eq!(h.bufs[&cookie], b"abcdefgh");
    assert_eq!(c.state(), State::Ready);
}

#[test]
fn structured_read_with_hole_and_data_out_of_order() {
    for mode in [Mode::Structured, Mode::Extended] {
        let (mut c, mut h) = ready(mode);
        let a = h.read(&mut c, 0, 16);
        let b = h.read(&mut c, 100, 4);
        let mut s = data_chunk(mode, true, b, 100, 100, b"wxyz");
        s.extend(data_chunk(mode, false, a, 0, 8, b"01234567"));
        s.extend(hole_chunk(mode, false, a, 0, 0, 8));
        s.extend(none_chunk(mode, a, 0));
        assert_eq!(h.feed(&mut c, &s), s.len());
        assert_eq!(h.completion(a), Some(Ok(())));
        assert_eq!(h.completion(b), Some(Ok(())));
        assert_eq!(&h.bufs[&a][..8], &[0u8; 8]);
        assert_eq!(&h.bufs[&a][8..], b"01234567");
        assert_eq!(h.bufs[&b], b"wxyz");
    }
}

#[test]
fn cookies_are_sequential_and_writes_are_encoded() {
    let (mut c, _h) = ready(Mode::Structured);
    let w = c
        .submit(Command::write(0, bytes::Bytes::from_static(b"hello")))
        .unwrap();
    let f = c.submit(Command::new(CommandKind::Flush, 0, 0)).unwrap();
    assert_eq!((w, f), (1, 2));
    let out = drain(&mut c);
    // Compact header: magic, flags, type, cookie, offset, length, then payload.
    assert_eq!(&out[..4], &[0x25, 0x60, 0x95, 0x13]);
    assert_eq!(&out[6..8], &[0, 1]);
    assert_eq!(&out[8..16], &1u64.to_be_bytes());
    assert_eq!(&out[24..28], &5u32.to_be_bytes());
    assert_eq!(&out[28..33], b"hello");
    assert_eq!(out.len(), 28 + 5 + 28);
}

#[test]
fn block_status_reports_extents() {
    for mode in [Mode::Structured, Mode::Extended] {
        let (mut c, mut h) = ready(mode);
        let cookie = c
            .submit(Command::new(CommandKind::BlockStatus, 0, 8192))
            .unwrap();
        let s = status_chunk(mode, true, cookie, 0, CTX, &[(4096, 0), (4096, 3)]);
        h.feed(&mut c, &s);
        assert_eq!(h.completion(cookie), Some(Ok(())));
        assert!(h.events.iter().any(|e| matches!(e,
            Event::Extents { context_id, extents, .. } if *context_id == CTX && extents.len() == 2)));
    }
}

#[test]
fn disconnect_closes_when_the_server_hangs_up() {
    let (mut c, mut h) = ready(Mode::Simple);
    let r = h.read(&mut c, 0, 4);
    c.shutdown().unwrap();
    assert!(c.submit(Command::new(CommandKind::Flush, 0, 0)).is_err());
    assert!(c.disconnect_in_flight());
    drain(&mut c);
    assert_ne!(c.state(), State::Closed);
    let mut reply = simple(r, 0);
    reply.extend_from_slice(b"1234");
    h.feed(&mut c, &reply);
    assert_eq!(h.completion(r), Some(Ok(())));
    // NBD_CMD_DISC has no reply: the client stays ready, reading, until
    // the server closes the connection (libnbd 1.24 does the same).
    assert_eq!(c.state(), State::Ready);
    assert!(c.wants_read());
    assert!(c.disconnect_in_flight());
    c.handle_eof();
    h.feed(&mut c, &[]);
    assert_eq!(c.state(), State::Closed);
    assert!(!c.disconnect_in_flight());
    assert!(h.events.iter().any(|e| matches!(e, Event::Closed)));
}

#[test]
fn zero_copy_payload_target() {
    let (mut c, mut h) = ready(Mode::Structured);
    let r = h.read(&mut c, 0, 10);
    let s = data_chunk(Mode::Structured, true, r, 0, 0, b"0123456789");
    // Header (20) + offset (8): then the client points at the payload.
    assert_eq!(c.handle_input(&s), 28);
    match c.recv_target() {
        nbd_proto::client::RecvTarget::Payload {
            cookie,
            buf_offset,
            len,
        } => {
            assert_eq!((cookie, buf_offset, len), (r, 0, 10));
        }
        other => panic!("expected payload target, got {other:?}"),
    }
    c.handle_payload(4);
    match c.recv_target() {
        nbd_proto::client::RecvTarget::Payload {
            buf_offset, len, ..
        } => assert_eq!((buf_offset, len), (4, 6)),
        other => panic!("{other:?}"),
    }
    c.handle_payload(6);
    let mut done = false;
    while let Some(e) = c.poll_event() {
        if let Event::Complete { cookie, result, .. } = e {
            assert_eq!(cookie, r);
            assert!(result.is_ok());
            done = true;
        }
    }
    assert!(done);
    let _ = h;
}

#[test]
fn opt_mode_lists_and_goes() {
    use nbd_proto::consts::{handshake_flags, opt};
    use nbd_proto::wire::option::{OptionReply, ServerEntry};
    let mut cfg = config(Mode::Structured);
    cfg.opt_mode = true;
    let mut c = Client::new(cfg);
    let mut h = Harness::default();
    let mut s = greeting(handshake_flags::FIXED_NEWSTYLE);
    s.extend(ack(opt::STRUCTURED_REPLY));
    h.feed(&mut c, &s);
    assert_eq!(c.state(), State::Negotiating);
    assert!(h.events.contains(&Event::Negotiating));
    c.opt_list().unwrap();
    let mut s = opt_reply(
        opt::LIST,
        &OptionReply::Server(ServerEntry {
            name: "a".into(),
            description: "first".into(),
        }),
    );
    s.extend(opt_reply(
        opt::LIST,
        &OptionReply::Server(ServerEntry {
            name: "b".into(),
            description: String::new(),
        }),
    ));
    s.extend(ack(opt::LIST));
    h.feed(&mut c, &s);
    let names: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Export(s) => Some(s.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(c.state(), State::Negotiating);
    c.opt_go().unwrap();
    let mut s = opt_reply(
        opt::SET_META_CONTEXT,
        &OptionReply::MetaContext(nbd_proto::wire::option::MetaContext {
            id: 1,
            name: "base:allocation".into(),
        }),
    );
    s.extend(ack(opt::SET_META_CONTEXT));
    s.extend(go_ok(SIZE, FLAGS));
    h.feed(&mut c, &s);
    drain(&mut c);
    assert_eq!(c.state(), State::Ready);
}

#[test]
fn reset_after_abort_or_disconnect_is_a_clean_close() {
    use nbd_proto::consts::{handshake_flags, opt};
    // opt mode, ABORT sent, then the server resets the connection.
    let mut cfg = config(Mode::Structured);
    cfg.opt_mode = true;
    let mut c = Client::new(cfg);
    let mut h = Harness::default();
    let mut s = greeting(handshake_flags::FIXED_NEWSTYLE);
    s.extend(ack(opt::STRUCTURED_REPLY));
    h.feed(&mut c, &s);
    c.opt_abort().unwrap();
    drain(&mut c);
    c.handle_io_error("recv: Connection reset by peer");
    assert_eq!(c.state(), State::Closed);
    // Transmission: DISC sent with a read in flight; the reset closes the
    // client and fails the read rather than reporting success.
    let (mut c, mut h) = ready(Mode::Simple);
    let r = h.read(&mut c, 0, 4);
    c.shutdown().unwrap();
    drain(&mut c);
    c.handle_io_error("recv: Connection reset by peer");
    h.feed(&mut c, &[]);
    assert_eq!(c.state(), State::Closed);
    assert_eq!(
        h.completion(r),
        Some(Err(nbd_proto::client::errno::ENOTCONN))
    );
    // Without a disconnect request, the same error kills the connection.
    let (mut c, _) = ready(Mode::Simple);
    c.handle_io_error("recv: Connection reset by peer");
    assert_eq!(c.state(), State::Dead);
}

#[test]
fn abandon_unsent_withdraws_only_requests_not_started() {
    let (mut c, mut h) = ready(Mode::Simple);
    let a = h.read(&mut c, 0, 4);
    let b = h.read(&mut c, 4, 4);
    let w = c
        .submit(Command::write(8, bytes::Bytes::from_static(b"xyz!")))
        .unwrap();
    // 10 bytes of the first request went out; the rest did not.
    c.advance_transmit(10);
    assert_eq!(c.abandon_unsent(), 2);
    assert_eq!(c.in_flight(), 1);
    let rest = drain(&mut c);
    assert_eq!(rest.len(), 28 - 10, "only the first request's tail remains");
    h.feed(&mut c, &[]);
    assert_eq!(
        h.completion(b),
        Some(Err(nbd_proto::client::errno::ENOTCONN))
    );
    assert_eq!(
        h.completion(w),
        Some(Err(nbd_proto::client::errno::ENOTCONN))
    );
    assert_eq!(h.completion(a), None);
    // The first read still completes normally, and new commands queue after it.
    let mut reply = simple(a, 0);
    reply.extend_from_slice(b"abcd");
    h.feed(&mut c, &reply);
    assert_eq!(h.completion(a), Some(Ok(())));
    let f = c.submit(Command::new(CommandKind::Flush, 0, 0)).unwrap();
    let out = drain(&mut c);
    assert_eq!(out.len(), 28);
    assert_eq!(&out[8..16], &f.to_be_bytes());
    // Nothing unsent: nothing to withdraw.
    assert_eq!(c.abandon_unsent(), 0);
}
