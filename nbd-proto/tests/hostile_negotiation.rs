//! Hostile servers during the handshake: every byte the server sends is
//! untrusted. A bad server must get a dead connection with a clear reason
//! (or, where the spec allows going on, a clean refusal of the option),
//! never a panic, a hang, unbounded buffering or a Ready over bad data.

mod common;
use common::*;
use nbd_proto::client::{errno, Client, Config, Event, ProtocolError, State, TlsMode};
use nbd_proto::consts::{handshake_flags as hf, limits, opt, rep};
use nbd_proto::wire::option::{MetaContext, OptionReply, ServerEntry};
use nbd_proto::wire::WireError;

const FIXED: u16 = hf::FIXED_NEWSTYLE | hf::NO_ZEROES;

fn fresh(cfg: Config) -> (Client, Harness) {
    (Client::new(cfg), Harness::default())
}

fn opt_mode(mode: Mode) -> Config {
    {
        let mut config = config(mode);
        config.opt_mode = true;
        config
    }
}

/// A Mode::Simple client that has sent its flags and NBD_OPT_GO.
fn at_go() -> (Client, Harness) {
    let (mut c, mut h) = fresh(config(Mode::Simple));
    h.feed(&mut c, &greeting(FIXED));
    let out = drain(&mut c);
    assert_eq!(parse_options(&out[4..])[0].0, opt::GO);
    (c, h)
}

/// An opt-mode client paused in Negotiating after the greeting.
fn negotiating() -> (Client, Harness) {
    let (mut c, mut h) = fresh(opt_mode(Mode::Simple));
    h.feed(&mut c, &greeting(FIXED));
    drain(&mut c);
    assert_eq!(c.state(), State::Negotiating);
    h.events.clear();
    (c, h)
}

fn no_ready(h: &Harness) -> bool {
    !h.events.iter().any(|e| matches!(e, Event::Ready))
}

fn wire_error(h: &Harness) -> WireError {
    match dead_reason(h) {
        Some(ProtocolError::Wire(w)) => w.clone(),
        other => panic!("expected a wire error, got {other:?}"),
    }
}

// ----- greeting -----

#[test]
fn greeting_bad_nbdmagic_dies_without_sending() {
    for i in 0..8 {
        let mut g = greeting(FIXED);
        g[i] ^= 0x01;
        let (mut c, mut h) = fresh(config(Mode::Structured));
        assert_eq!(h.feed(&mut c, &g), 16, "byte {i}");
        assert_dead(&c, &h, errno::EPROTO);
        assert!(matches!(
            wire_error(&h),
            WireError::BadMagic {
                what: "greeting",
                ..
            }
        ));
        assert!(drain(&mut c).is_empty(), "nothing may be sent");
        assert!(no_ready(&h));
    }
}

#[test]
fn greeting_bad_version_magic_dies_without_sending() {
    for i in 8..16 {
        let mut g = greeting(FIXED);
        g[i] ^= 0x80;
        let (mut c, mut h) = fresh(config(Mode::Structured));
        h.feed(&mut c, &g);
        assert_dead(&c, &h, errno::EPROTO);
        assert!(matches!(
            wire_error(&h),
            WireError::BadMagic {
                what: "greeting version",
                ..
            }
        ));
        assert!(drain(&mut c).is_empty());
    }
}

// ----- option reply framing -----

#[test]
fn option_reply_bad_magic_dies() {
    for i in 0..8 {
        let (mut c, mut h) = at_go();
        let mut r = go_ok(SIZE, FLAGS);
        r[i] ^= 0x10;
        h.feed(&mut c, &r);
        assert_dead(&c, &h, errno::EPROTO);
        assert!(matches!(
            wire_error(&h),
            WireError::BadMagic {
                what: "option reply",
                ..
            }
        ));
        assert!(no_ready(&h));
        assert!(drain(&mut c).is_empty());
    }
}

#[test]
fn option_reply_for_a_different_option_dies() {
    let (mut c, mut h) = at_go();
    h.feed(&mut c, &info_export(opt::INFO, SIZE, FLAGS));
    assert_dead(&c, &h, errno::EPROTO);
    assert!(matches!(
        dead_reason(&h),
        Some(ProtocolError::WrongOption {
            want: opt::GO,
            got: opt::INFO
        })
    ));
}

#[test]
fn ack_with_payload_dies() {
    let (mut c, mut h) = fresh(config(Mode::Structured));
    let mut s = greeting(FIXED);
    s.extend(raw_opt_reply(opt::STRUCTURED_REPLY, rep::ACK, &[0; 4]));
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
    assert!(!c.structured_replies());
}

#[test]
fn option_reply_length_over_64_mib_dies_at_the_header() {
    for len in [limits::MAX_OPTION_PAYLOAD + 1, u32::MAX] {
        let (mut c, mut h) = at_go();
        let mut s = raw_opt_header(opt::GO, rep::INFO, len);
        s.extend_from_slice(&[0; 64]);
        // The header alone is enough to die; nothing of the payload is buffered.
        assert_eq!(h.feed(&mut c, &s), 20);
        assert_dead(&c, &h, errno::EPROTO);
    }
}

#[test]
fn option_reply_length_over_what_its_type_allows_dies() {
    // 1 MiB of "info" is under the 64 MiB wire cap but far over any valid INFO.
    let (mut c, mut h) = at_go();
    let s = raw_opt_header(opt::GO, rep::INFO, 1 << 20);
    assert_eq!(h.feed(&mut c, &s), 20);
    assert_dead(&c, &h, errno::EPROTO);
    assert!(matches!(
        dead_reason(&h),
        Some(ProtocolError::TooLong { .. })
    ));
}

#[test]
fn error_message_over_4096_bytes_dies() {
    let (mut c, mut h) = fresh(config(Mode::Structured));
    let mut s = greeting(FIXED);
    s.extend(raw_opt_reply(
        opt::STRUCTURED_REPLY,
        rep::ERR_UNSUP,
        &[b'x'; limits::MAX_STRING + 1],
    ));
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
}

#[test]
fn error_message_of_exactly_4096_bytes_is_a_refusal() {
    let (mut c, mut h) = fresh(config(Mode::Structured));
    let mut s = greeting(FIXED);
    s.extend(raw_opt_reply(
        opt::STRUCTURED_REPLY,
        rep::ERR_UNSUP,
        &[b'x'; limits::MAX_STRING],
    ));
    assert_eq!(h.feed(&mut c, &s), s.len());
    assert_alive(&c, &h);
    assert!(h.events.iter().any(|e| matches!(e,
        Event::OptionDone { option: opt::STRUCTURED_REPLY, result: Err(f) }
            if f.reply_type == rep::ERR_UNSUP && f.message.len() == limits::MAX_STRING)));
    // Negotiation went on without structured replies, straight to GO.
    assert!(!c.structured_replies());
    let out = drain(&mut c);
    let opts: Vec<u32> = parse_options(&out[4..]).iter().map(|o| o.0).collect();
    assert_eq!(opts, [opt::STRUCTURED_REPLY, opt::GO]);
}

#[test]
fn rep_server_name_length_past_the_payload_dies() {
    let (mut c, mut h) = negotiating();
    c.opt_list().unwrap();
    let mut p = Vec::new();
    p.extend_from_slice(&10u32.to_be_bytes());
    p.extend_from_slice(b"abc");
    h.feed(&mut c, &raw_opt_reply(opt::LIST, rep::SERVER, &p));
    assert_dead(&c, &h, errno::EPROTO);
    assert!(!h.events.iter().any(|e| matches!(e, Event::Export(_))));
}

#[test]
fn rep_server_name_length_u32_max_dies() {
    let (mut c, mut h) = negotiating();
    c.opt_list().unwrap();
    let mut p = Vec::new();
    p.extend_from_slice(&u32::MAX.to_be_bytes());
    p.extend_from_slice(b"name");
    h.feed(&mut c, &raw_opt_reply(opt::LIST, rep::SERVER, &p));
    assert_dead(&c, &h, errno::EPROTO);
    assert!(!h.events.iter().any(|e| matches!(e, Event::Export(_))));
}

#[test]
fn rep_server_shorter_than_its_length_field_dies() {
    let (mut c, mut h) = negotiating();
    c.opt_list().unwrap();
    h.feed(&mut c, &raw_opt_reply(opt::LIST, rep::SERVER, &[0, 0]));
    assert_dead(&c, &h, errno::EPROTO);
}

// ----- NBD_REP_INFO -----

#[test]
fn info_export_of_the_wrong_size_dies() {
    for extra in [0usize, 9, 11, 13, 20] {
        let (mut c, mut h) = at_go();
        let mut p = vec![0u8, 0]; // NBD_INFO_EXPORT
        p.extend(std::iter::repeat_n(0x01, extra));
        let mut s = raw_opt_reply(opt::GO, rep::INFO, &p);
        s.extend(ack(opt::GO));
        h.feed(&mut c, &s);
        assert_dead(&c, &h, errno::EPROTO);
        assert!(no_ready(&h), "payload of {extra}");
        assert_eq!(c.export().size, 0);
    }
}

#[test]
fn info_block_size_of_the_wrong_size_dies() {
    for extra in [0usize, 4, 11, 13, 16] {
        let (mut c, mut h) = at_go();
        let mut s = info_export(opt::GO, SIZE, FLAGS);
        let mut p = vec![0u8, 3]; // NBD_INFO_BLOCK_SIZE
        p.extend(std::iter::repeat_n(0, extra));
        s.extend(raw_opt_reply(opt::GO, rep::INFO, &p));
        s.extend(ack(opt::GO));
        h.feed(&mut c, &s);
        assert_dead(&c, &h, errno::EPROTO);
        assert!(no_ready(&h));
        assert_eq!(c.export().block_size, None);
    }
}

#[test]
fn info_block_size_invalid_values_die() {
    let bad: &[(u32, u32, u32)] = &[
        (0, 4096, 32 << 20),             // minimum 0
        (3, 4096, 32 << 20),             // minimum not a power of two
        (128 << 10, 128 << 10, 1 << 20), // minimum over 64 KiB
        (512, 256, 32 << 20),            // preferred under 512
        (4096, 2048, 32 << 20),          // preferred under minimum
        (1, 1000, 32 << 20),             // preferred not a power of two
        (512, 4096, 2048),               // maximum under preferred
        (512, 4096, 8193),               // maximum not a multiple of minimum
        (0, 0, 0),
    ];
    for &(min, pref, max) in bad {
        let (mut c, mut h) = at_go();
        let s = go_with(SIZE, FLAGS, min, pref, max);
        h.feed(&mut c, &s);
        assert_dead(&c, &h, errno::EPROTO);
        assert!(no_ready(&h), "({min}, {pref}, {max}) accepted");
    }
}

#[test]
fn info_block_size_maximum_u32_max_is_valid() {
    let (mut c, mut h) = at_go();
    h.feed(&mut c, &go_with(SIZE, FLAGS, 512, 4096, u32::MAX));
    assert_eq!(c.state(), State::Ready);
    assert_eq!(c.export().block_size.unwrap().maximum, u32::MAX);
}

#[test]
fn go_acknowledged_without_info_export_dies() {
    let (mut c, mut h) = at_go();
    let mut s = info_block_size(opt::GO, 1, 4096, 1 << 20);
    s.extend(ack(opt::GO));
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
    assert!(no_ready(&h));
}

#[test]
fn unknown_info_type_is_ignored() {
    let (mut c, mut h) = at_go();
    let mut s = raw_opt_reply(opt::GO, rep::INFO, &[0x12, 0x34, 1, 2, 3]);
    s.extend(go_ok(SIZE, FLAGS));
    h.feed(&mut c, &s);
    assert_eq!(c.state(), State::Ready);
    assert_eq!(c.export().size, SIZE);
}

#[test]
fn info_name_not_utf8_dies() {
    let (mut c, mut h) = at_go();
    let mut s = raw_opt_reply(opt::GO, rep::INFO, &[0, 1, 0xff, 0xfe]);
    s.extend(go_ok(SIZE, FLAGS));
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
}

// ----- export size over INT64_MAX -----
// libnbd connects to such a server and lets nbd_get_size report EOVERFLOW,
// so the client keeps the size as announced.

#[test]
fn export_size_over_int64_max_via_info_is_kept() {
    for size in [i64::MAX as u64 + 1, u64::MAX] {
        let (mut c, mut h) = at_go();
        h.feed(&mut c, &go_ok(size, FLAGS));
        assert_eq!(c.state(), State::Ready);
        assert_eq!(c.export().size, size);
    }
}

#[test]
fn export_size_of_int64_max_is_accepted() {
    let (mut c, mut h) = at_go();
    h.feed(&mut c, &go_ok(i64::MAX as u64, FLAGS));
    assert_eq!(c.state(), State::Ready);
    assert_eq!(c.export().size, i64::MAX as u64);
}

#[test]
fn export_size_over_int64_max_via_export_name_reply_is_kept() {
    for zeroes in [true, false] {
        let flags = if zeroes { 0 } else { hf::NO_ZEROES };
        let (mut c, mut h) = fresh(config(Mode::Structured));
        let mut s = greeting(flags);
        s.extend(export_name_reply(i64::MAX as u64 + 1, FLAGS, zeroes));
        h.feed(&mut c, &s);
        assert_eq!(c.state(), State::Ready);
        assert_eq!(c.export().size, i64::MAX as u64 + 1);
    }
}

#[test]
fn export_size_over_int64_max_via_oldstyle_is_kept() {
    let (mut c, mut h) = fresh(config(Mode::Simple));
    h.feed(&mut c, &oldstyle(u64::MAX, u32::from(FLAGS)));
    assert_eq!(c.state(), State::Ready);
    assert_eq!(c.export().size, u64::MAX);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn oldstyle_good_greeting_enters_transmission() {
    let (mut c, mut h) = fresh(config(Mode::Simple));
    let s = oldstyle(SIZE, u32::from(FLAGS) | 0xabcd_0000);
    assert_eq!(h.feed(&mut c, &s), s.len());
    assert_eq!(c.state(), State::Ready);
    assert_eq!(c.export().flags, FLAGS);
    assert!(
        drain(&mut c).is_empty(),
        "oldstyle: the client sends nothing"
    );
    h.events.clear();
    assert_usable(&mut c, &mut h, Mode::Simple);
}

// ----- reply types -----

#[test]
fn unknown_option_reply_type_dies() {
    for payload in [&[][..], &[1, 2, 3, 4][..]] {
        let (mut c, mut h) = fresh(config(Mode::Structured));
        let mut s = greeting(FIXED);
        s.extend(raw_opt_reply(opt::STRUCTURED_REPLY, 0x42, payload));
        h.feed(&mut c, &s);
        assert_dead(&c, &h, errno::EPROTO);
    }
}

#[test]
fn reply_type_not_valid_for_the_option_dies() {
    // An INFO reply to STRUCTURED_REPLY, a META_CONTEXT reply to GO.
    let (mut c, mut h) = fresh(config(Mode::Structured));
    let mut s = greeting(FIXED);
    s.extend(info_export(opt::STRUCTURED_REPLY, SIZE, FLAGS));
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);

    let (mut c, mut h) = at_go();
    let s = opt_reply(
        opt::GO,
        &OptionReply::MetaContext(MetaContext {
            id: 1,
            name: "base:allocation".into(),
        }),
    );
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
}

#[test]
fn unknown_error_reply_type_is_a_refusal() {
    let (mut c, mut h) = fresh(config(Mode::Structured));
    let mut s = greeting(FIXED);
    s.extend(raw_opt_reply(
        opt::STRUCTURED_REPLY,
        rep::FLAG_ERROR | 0x1234,
        b"nope",
    ));
    h.feed(&mut c, &s);
    assert_alive(&c, &h);
    assert!(h.events.iter().any(|e| matches!(e,
        Event::OptionDone { option: opt::STRUCTURED_REPLY, result: Err(f) }
            if f.errno() == errno::EINVAL && f.message == "nope")));
}

#[test]
fn duplicate_meta_context_id_dies() {
    let (mut c, mut h) = fresh(config(Mode::Structured));
    let mut s = greeting(FIXED);
    s.extend(ack(opt::STRUCTURED_REPLY));
    let m = OptionReply::MetaContext(MetaContext {
        id: 3,
        name: "base:allocation".into(),
    });
    s.extend(opt_reply(opt::SET_META_CONTEXT, &m));
    s.extend(opt_reply(opt::SET_META_CONTEXT, &m));
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
}

#[test]
fn data_while_no_option_is_in_flight_dies() {
    let (mut c, mut h) = negotiating();
    assert!(!c.wants_read(), "nothing to wait for while negotiating");
    assert_eq!(h.feed(&mut c, &[0x00]), 0);
    assert_dead(&c, &h, errno::EPROTO);
    assert!(matches!(
        dead_reason(&h),
        Some(ProtocolError::Unexpected(_))
    ));
}

#[test]
fn data_after_an_option_finished_dies() {
    // The trailing byte arrives in the same read as the last reply.
    let (mut c, mut h) = negotiating();
    c.opt_list().unwrap();
    let mut s = ack(opt::LIST);
    s.push(0xff);
    assert_eq!(h.feed(&mut c, &s), s.len() - 1);
    assert_dead(&c, &h, errno::EPROTO);
    assert!(h.events.iter().any(|e| matches!(
        e,
        Event::OptionDone {
            option: opt::LIST,
            result: Ok(())
        }
    )));
}

// ----- GO refusals -----

#[test]
fn go_refused_with_err_unsup_falls_back_to_export_name() {
    let (mut c, mut h) = at_go();
    h.feed(&mut c, &unsup(opt::GO));
    assert_alive(&c, &h);
    let out = drain(&mut c);
    let opts = parse_options(&out);
    assert_eq!(opts, [(opt::EXPORT_NAME, Vec::new())]);
    // NO_ZEROES was agreed: a 10-byte reply enters transmission.
    let s = export_name_reply(SIZE, FLAGS, false);
    assert_eq!(h.feed(&mut c, &s), s.len());
    assert_eq!(c.state(), State::Ready);
    assert_eq!(c.export().size, SIZE);
    h.events.clear();
    assert_usable(&mut c, &mut h, Mode::Simple);
}

#[test]
fn go_refused_with_err_unknown_dies_with_enoent() {
    let (mut c, mut h) = at_go();
    h.feed(&mut c, &opt_error(opt::GO, rep::ERR_UNKNOWN));
    assert_dead(&c, &h, errno::ENOENT);
    assert!(matches!(
        dead_reason(&h),
        Some(ProtocolError::Refused { .. })
    ));
    assert!(drain(&mut c).is_empty(), "no fallback to EXPORT_NAME");
}

#[test]
fn go_refused_with_err_unknown_in_opt_mode_stays_negotiating() {
    let (mut c, mut h) = negotiating();
    c.opt_go().unwrap();
    let out = drain(&mut c);
    assert_eq!(parse_options(&out)[0].0, opt::GO);
    h.feed(&mut c, &opt_error(opt::GO, rep::ERR_UNKNOWN));
    assert_alive(&c, &h);
    assert_eq!(c.state(), State::Negotiating);
    assert!(h.events.iter().any(|e| matches!(e,
        Event::OptionDone { option: opt::GO, result: Err(f) } if f.errno() == errno::ENOENT)));
    assert!(drain(&mut c).is_empty());
    // A second attempt works.
    c.opt_go().unwrap();
    drain(&mut c);
    h.feed(&mut c, &go_ok(SIZE, FLAGS));
    assert_eq!(c.state(), State::Ready);
}

#[test]
fn non_fixed_newstyle_server_goes_straight_to_export_name() {
    for (flags, zeroes) in [(0u16, true), (hf::NO_ZEROES, false)] {
        let (mut c, mut h) = fresh(config(Mode::Structured));
        h.feed(&mut c, &greeting(flags));
        assert!(!c.fixed_newstyle());
        let out = drain(&mut c);
        let want_flags = u32::from(flags & hf::NO_ZEROES);
        assert_eq!(&out[..4], &want_flags.to_be_bytes());
        assert_eq!(parse_options(&out[4..]), [(opt::EXPORT_NAME, Vec::new())]);
        let s = export_name_reply(SIZE, FLAGS, zeroes);
        assert_eq!(h.feed(&mut c, &s), s.len());
        assert_eq!(c.state(), State::Ready);
        assert!(!c.structured_replies());
    }
}

#[test]
fn export_name_reply_with_zeroes_when_no_zeroes_agreed_is_misframed() {
    // The server agreed NO_ZEROES but sends the padding: the client takes 10
    // bytes, enters transmission and then sees garbage as a reply header.
    let (mut c, mut h) = fresh(config(Mode::Simple));
    let mut s = greeting(hf::NO_ZEROES);
    s.extend(export_name_reply(SIZE, FLAGS, true));
    h.feed(&mut c, &s);
    assert_dead(&c, &h, errno::EPROTO);
}

// ----- TLS required -----

fn tls_required() -> Config {
    {
        let mut config = config(Mode::Structured);
        config.tls = TlsMode::Require;
        config
    }
}

#[test]
fn tls_required_against_oldstyle_dies_without_sending() {
    let (mut c, mut h) = fresh(tls_required());
    h.feed(&mut c, &oldstyle(SIZE, u32::from(FLAGS)));
    assert_dead(&c, &h, errno::ENOTSUP);
    assert!(matches!(
        dead_reason(&h),
        Some(ProtocolError::TlsRequired(_))
    ));
    assert!(no_ready(&h));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn tls_required_against_non_fixed_newstyle_dies_without_sending() {
    for flags in [0, hf::NO_ZEROES] {
        let (mut c, mut h) = fresh(tls_required());
        h.feed(&mut c, &greeting(flags));
        assert_dead(&c, &h, errno::ENOTSUP);
        let out = drain(&mut c);
        // No export name (nor anything else) in clear.
        assert!(out.len() <= 4, "sent {out:?}");
    }
}

#[test]
fn tls_required_and_starttls_refused_dies_without_sending_options() {
    for refusal in [
        rep::ERR_UNSUP,
        rep::ERR_POLICY,
        rep::ERR_INVALID,
        rep::ERR_SHUTDOWN,
    ] {
        let (mut c, mut h) = fresh(tls_required());
        h.feed(&mut c, &greeting(FIXED));
        let out = drain(&mut c);
        assert_eq!(parse_options(&out[4..]), [(opt::STARTTLS, Vec::new())]);
        h.feed(&mut c, &opt_error(opt::STARTTLS, refusal));
        assert_dead(&c, &h, errno::ENOTSUP);
        assert!(
            drain(&mut c).is_empty(),
            "nothing may follow a refused STARTTLS"
        );
    }
}

#[test]
fn tls_required_and_starttls_ack_with_extra_bytes_stops_at_the_tls_boundary() {
    let (mut c, mut h) = fresh(tls_required());
    h.feed(&mut c, &greeting(FIXED));
    drain(&mut c);
    let mut s = ack(opt::STARTTLS);
    s.extend_from_slice(b"\x16\x03\x01 not for the NBD layer");
    assert_eq!(h.feed(&mut c, &s), 20, "bytes after the ACK belong to TLS");
    assert!(h.events.contains(&Event::StartTls));
    assert!(!c.wants_read() && !c.wants_write());
    assert!(drain(&mut c).is_empty());
    c.tls_failed("bad certificate");
    h.feed(&mut c, &[]);
    assert_dead(&c, &h, errno::EIO);
}

#[test]
fn tls_required_and_starttls_answered_with_anything_but_ack_dies_without_sending() {
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "ack with payload",
            raw_opt_reply(opt::STARTTLS, rep::ACK, &[0; 4]),
        ),
        (
            "rep_server",
            raw_opt_reply(opt::STARTTLS, rep::SERVER, &[0, 0, 0, 0]),
        ),
        ("rep_info", raw_opt_reply(opt::STARTTLS, rep::INFO, &[0, 0])),
        ("ack for another option", ack(opt::GO)),
        ("unknown reply type", raw_opt_reply(opt::STARTTLS, 77, &[])),
    ];
    for (what, reply) in cases {
        let (mut c, mut h) = fresh(tls_required());
        h.feed(&mut c, &greeting(FIXED));
        drain(&mut c);
        h.feed(&mut c, &reply);
        assert_dead(&c, &h, errno::ENOTSUP);
        assert!(
            matches!(dead_reason(&h), Some(ProtocolError::TlsRequired(_))),
            "{what}: {:?}",
            dead_reason(&h)
        );
        assert!(drain(&mut c).is_empty(), "{what}: sent something in clear");
    }
}

#[test]
fn tls_allowed_and_starttls_answered_with_nonsense_dies_as_a_protocol_error() {
    let (mut c, mut h) = fresh({
        let mut config = config(Mode::Structured);
        config.tls = TlsMode::Allow;
        config
    });
    h.feed(&mut c, &greeting(FIXED));
    drain(&mut c);
    h.feed(
        &mut c,
        &raw_opt_reply(opt::STARTTLS, rep::SERVER, &[0, 0, 0, 0]),
    );
    assert_dead(&c, &h, errno::EPROTO);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn starttls_in_opt_mode_forgets_what_was_negotiated_in_clear() {
    // Structured replies and a metadata context agreed in clear, then
    // STARTTLS: after the handshake nothing of that may be trusted.
    let (mut c, mut h) = fresh(opt_mode(Mode::Structured));
    h.feed(&mut c, &greeting(FIXED));
    let out = drain(&mut c);
    let first = parse_options(&out[4..]);
    for (option, _) in &first {
        h.feed(&mut c, &ack(*option));
    }
    assert!(c.structured_replies());
    c.opt_starttls().expect("STARTTLS can be asked for");
    let out = drain(&mut c);
    assert_eq!(parse_options(&out), [(opt::STARTTLS, Vec::new())]);
    h.feed(&mut c, &ack(opt::STARTTLS));
    assert!(h.events.contains(&Event::StartTls));
    c.tls_established();
    h.feed(&mut c, &[]);
    assert!(c.tls_negotiated());
    assert!(
        !c.structured_replies(),
        "structured replies survived STARTTLS"
    );
    assert!(!c.extended_headers(), "extended headers survived STARTTLS");
    assert!(c.meta_contexts().is_empty());
    assert_eq!(c.state(), State::Negotiating);
    // A second STARTTLS goes out (servers refuse it); accepting it kills
    // the connection rather than nesting a session.
    c.opt_starttls().expect("STARTTLS may be asked for again");
    assert_eq!(parse_options(&drain(&mut c)), [(opt::STARTTLS, Vec::new())]);
    h.feed(&mut c, &ack(opt::STARTTLS));
    assert_dead(&c, &h, errno::EPROTO);
}

#[test]
fn starttls_then_tls_established_renegotiates_everything() {
    let (mut c, mut h) = fresh(tls_required());
    h.feed(&mut c, &greeting(FIXED));
    let out = drain(&mut c);
    assert_eq!(parse_options(&out[4..]), [(opt::STARTTLS, Vec::new())]);
    h.feed(&mut c, &ack(opt::STARTTLS));
    assert!(drain(&mut c).is_empty(), "nothing in clear after the ACK");
    c.tls_established();
    // The whole plan runs again, now over TLS.
    let opts: Vec<u32> = parse_options(&drain(&mut c))
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(opts, [opt::STRUCTURED_REPLY], "{opts:?}");
    assert!(c.tls_negotiated());
}

// ----- ERR_SHUTDOWN -----

#[test]
fn err_shutdown_makes_the_client_send_abort() {
    for eof in [false, true] {
        let (mut c, mut h) = fresh(config(Mode::Structured));
        h.feed(&mut c, &greeting(FIXED));
        drain(&mut c);
        h.feed(&mut c, &opt_error(opt::STRUCTURED_REPLY, rep::ERR_SHUTDOWN));
        assert_alive(&c, &h);
        assert!(h.events.iter().any(|e| matches!(e,
            Event::OptionDone { option: opt::STRUCTURED_REPLY, result: Err(f) }
                if f.errno() == errno::ESHUTDOWN)));
        let out = drain(&mut c);
        assert_eq!(parse_options(&out), [(opt::ABORT, Vec::new())]);
        if eof {
            // The server may close without acknowledging the abort.
            c.handle_eof();
        } else {
            h.feed(&mut c, &ack(opt::ABORT));
        }
        h.feed(&mut c, &[]);
        assert_eq!(c.state(), State::Closed);
        assert!(h.events.contains(&Event::Closed));
        assert!(!h.dead());
        assert!(no_ready(&h));
    }
}

// ----- truncation -----

fn truncation_streams() -> Vec<(&'static str, Config, Vec<u8>)> {
    let mut v = Vec::new();
    for (name, mode) in [
        ("simple", Mode::Simple),
        ("structured", Mode::Structured),
        ("extended", Mode::Extended),
    ] {
        v.push((name, config(mode), handshake(mode)));
    }
    v.push((
        "oldstyle",
        config(Mode::Structured),
        oldstyle(SIZE, u32::from(FLAGS)),
    ));
    let mut s = greeting(0);
    s.extend(export_name_reply(SIZE, FLAGS, true));
    v.push(("non-fixed newstyle", config(Mode::Structured), s));
    let mut s = greeting(FIXED);
    s.extend(unsup(opt::GO));
    s.extend(export_name_reply(SIZE, FLAGS, false));
    v.push(("GO fallback", config(Mode::Simple), s));
    let mut s = greeting(FIXED);
    s.extend(opt_reply(
        opt::GO,
        &OptionReply::Info(nbd_proto::wire::option::Info::Name("canonical".into())),
    ));
    s.extend(go_ok(SIZE, FLAGS));
    v.push((
        "GO with name",
        {
            let mut config = config(Mode::Simple);
            config.full_info = true;
            config
        },
        s,
    ));
    v
}

#[test]
fn truncated_negotiation_never_reaches_ready_and_eof_kills() {
    for (name, cfg, stream) in truncation_streams() {
        // The whole stream is good.
        let (mut c, mut h) = fresh(cfg.clone());
        assert_eq!(h.feed(&mut c, &stream), stream.len(), "{name}");
        assert_eq!(c.state(), State::Ready, "{name}: {:?}", h.events);
        for cut in 0..stream.len() {
            let (mut c, mut h) = fresh(cfg.clone());
            assert_eq!(
                h.feed(&mut c, &stream[..cut]),
                cut,
                "{name}: the client must consume a valid prefix ({cut})"
            );
            assert_ne!(c.state(), State::Ready, "{name}: Ready after {cut} bytes");
            assert!(no_ready(&h), "{name}: Ready after {cut} bytes");
            assert_alive(&c, &h);
            assert!(c.wants_read(), "{name}: must want the rest ({cut})");
            c.handle_eof();
            h.feed(&mut c, &[]);
            assert_dead(&c, &h, 0);
            assert!(matches!(dead_reason(&h), Some(ProtocolError::HandshakeEof)));
        }
    }
}

#[test]
fn negotiation_fed_one_byte_at_a_time_reaches_ready() {
    for (name, cfg, stream) in truncation_streams() {
        let (mut c, mut h) = fresh(cfg);
        for (i, b) in stream.iter().enumerate() {
            assert_eq!(h.feed(&mut c, std::slice::from_ref(b)), 1, "{name} @{i}");
            drain(&mut c);
        }
        assert_eq!(c.state(), State::Ready, "{name}");
        assert_eq!(c.export().size, SIZE, "{name}");
        assert_eq!(
            h.events
                .iter()
                .filter(|e| matches!(e, Event::Ready))
                .count(),
            1
        );
    }
}

#[test]
fn info_replies_over_the_type_limit_are_refused_before_buffering() {
    // An error reply may carry at most a 4096-byte message; a huge
    // NBD_REP_SERVER at most two strings. Neither is buffered past its limit.
    let (mut c, mut h) = negotiating();
    c.opt_list().unwrap();
    let s = raw_opt_header(opt::LIST, rep::SERVER, 64 << 20);
    assert_eq!(h.feed(&mut c, &s), 20);
    assert_dead(&c, &h, errno::EPROTO);

    let (mut c, mut h) = negotiating();
    c.opt_list().unwrap();
    let e = ServerEntry {
        name: "x".repeat(limits::MAX_STRING),
        description: "y".repeat(limits::MAX_STRING),
    };
    let s = opt_reply(opt::LIST, &OptionReply::Server(e));
    let mut s2 = s.clone();
    s2.extend(ack(opt::LIST));
    assert_eq!(h.feed(&mut c, &s2), s2.len(), "the largest valid entry");
    assert_alive(&c, &h);
    assert_eq!(c.state(), State::Negotiating);
}

/// Mutated streams per run; under Miri, which interprets every step
/// thousands of times slower, a sample (scripts/miri.sh).
const MUTATION_RUNS: usize = if cfg!(miri) { 300 } else { 6000 };

#[test]
fn mutated_negotiation_streams_never_panic_hang_or_go_ready_twice() {
    let streams = truncation_streams();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..MUTATION_RUNS {
        let (name, cfg, good) = &streams[i % streams.len()];
        let mut s = good.clone();
        mutate(&mut rng, &mut s);
        let (mut c, mut h) = fresh(cfg.clone());
        feed_in_pieces(&mut rng, &mut c, &mut h, &s);
        let readies = h
            .events
            .iter()
            .filter(|e| matches!(e, Event::Ready))
            .count();
        assert!(readies <= 1, "{name} #{i}");
        c.handle_eof();
        h.feed(&mut c, &[]);
        assert!(
            matches!(c.state(), State::Dead | State::Closed),
            "{name} #{i}: {:?}",
            c.state()
        );
        assert!(!c.wants_read() && !c.wants_write());
    }
}

#[test]
fn too_many_meta_contexts_in_one_set_reply_kill_the_connection() {
    use nbd_proto::consts::{handshake_flags, opt};
    use nbd_proto::wire::option::{MetaContext, OptionReply};
    let mut c = nbd_proto::client::Client::new(config(Mode::Structured));
    let mut h = Harness::default();
    let mut s = greeting(handshake_flags::FIXED_NEWSTYLE);
    s.extend(ack(opt::STRUCTURED_REPLY));
    for id in 0..1025u32 {
        s.extend(opt_reply(
            opt::SET_META_CONTEXT,
            &OptionReply::MetaContext(MetaContext {
                id,
                name: "base:allocation".into(),
            }),
        ));
    }
    h.feed(&mut c, &s);
    assert!(h.dead(), "1025 contexts must be refused");
    assert_eq!(c.state(), nbd_proto::client::State::Dead);
}

/// An opt-mode client that has agreed structured replies (and no extended
/// headers), waiting for the caller.
fn negotiating_structured(cfg: Config) -> (Client, Harness) {
    let (mut c, mut h) = fresh(cfg);
    h.feed(&mut c, &greeting(FIXED));
    let mut out = drain(&mut c)[4..].to_vec();
    while c.state() != State::Negotiating {
        for (option, _) in parse_options(&out) {
            let reply = match option {
                opt::STRUCTURED_REPLY => ack(option),
                _ => unsup(option),
            };
            h.feed(&mut c, &reply);
        }
        out = drain(&mut c);
    }
    assert!(c.structured_replies());
    assert!(!c.extended_headers());
    (c, h)
}

fn base_allocation(option: u32) -> Vec<u8> {
    opt_reply(
        option,
        &OptionReply::MetaContext(MetaContext {
            id: 3,
            name: "base:allocation".into(),
        }),
    )
}

#[test]
fn request_meta_context_off_keeps_an_explicit_selection_through_go() {
    let (mut c, mut h) = negotiating_structured({
        let mut config = opt_mode(Mode::Structured);
        config.request_meta_context = false;
        config
    });
    assert!(!c.meta_contexts_valid());
    c.opt_set_meta_context(vec!["base:allocation".into()])
        .unwrap();
    let sent: Vec<u32> = parse_options(&drain(&mut c))
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(sent, [opt::SET_META_CONTEXT]);
    h.feed(&mut c, &base_allocation(opt::SET_META_CONTEXT));
    h.feed(&mut c, &ack(opt::SET_META_CONTEXT));
    assert!(c.meta_contexts_valid());
    assert_eq!(c.meta_context_id("base:allocation"), Some(3));
    // GO goes out alone, and the selection stays.
    c.opt_go().unwrap();
    let sent: Vec<u32> = parse_options(&drain(&mut c))
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(sent, [opt::GO]);
    h.feed(&mut c, &go_ok(1 << 20, 1));
    assert_eq!(c.state(), State::Ready);
    assert!(c.meta_contexts_valid());
    assert_eq!(c.meta_context_id("base:allocation"), Some(3));
}

#[test]
fn automatic_selection_forgets_the_explicit_one_and_validates_when_skipped() {
    // request_meta_context on, no contexts configured: GO forgets the
    // explicit selection and the empty result counts as valid.
    let (mut c, mut h) = negotiating_structured(opt_mode(Mode::Structured));
    c.opt_set_meta_context(vec!["base:allocation".into()])
        .unwrap();
    drain(&mut c);
    h.feed(&mut c, &base_allocation(opt::SET_META_CONTEXT));
    h.feed(&mut c, &ack(opt::SET_META_CONTEXT));
    assert_eq!(c.meta_context_id("base:allocation"), Some(3));
    c.config_mut().request_meta_contexts.clear();
    c.opt_go().unwrap();
    let sent: Vec<u32> = parse_options(&drain(&mut c))
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(sent, [opt::GO]);
    assert!(!c.meta_contexts_valid(), "not before GO succeeds");
    h.feed(&mut c, &go_ok(1 << 20, 1));
    assert_eq!(c.state(), State::Ready);
    assert!(c.meta_contexts().is_empty());
    assert!(c.meta_contexts_valid());
}

#[test]
fn refused_selection_and_forget_leave_the_contexts_invalid() {
    let (mut c, mut h) = negotiating_structured(opt_mode(Mode::Structured));
    c.opt_set_meta_context(vec!["base:allocation".into()])
        .unwrap();
    drain(&mut c);
    h.feed(&mut c, &base_allocation(opt::SET_META_CONTEXT));
    h.feed(&mut c, &ack(opt::SET_META_CONTEXT));
    assert!(c.meta_contexts_valid());
    c.forget_meta_contexts();
    assert!(!c.meta_contexts_valid());
    assert!(c.meta_contexts().is_empty());
    c.opt_set_meta_context(vec!["base:allocation".into()])
        .unwrap();
    drain(&mut c);
    h.feed(&mut c, &opt_error(opt::SET_META_CONTEXT, rep::ERR_UNSUP));
    assert_eq!(c.state(), State::Negotiating);
    assert!(!c.meta_contexts_valid());
    assert!(c.meta_contexts().is_empty());
}

#[test]
fn opt_structured_reply_goes_out_after_extended_headers() {
    let (mut c, mut h) = fresh(opt_mode(Mode::Extended));
    h.feed(&mut c, &greeting(FIXED));
    drain(&mut c);
    h.feed(&mut c, &ack(opt::EXTENDED_HEADERS));
    assert!(c.extended_headers());
    assert!(
        drain(&mut c).is_empty(),
        "STRUCTURED_REPLY skipped automatically"
    );
    c.opt_structured_reply().unwrap();
    assert_eq!(
        parse_options(&drain(&mut c)),
        [(opt::STRUCTURED_REPLY, Vec::new())]
    );
    h.feed(&mut c, &opt_error(opt::STRUCTURED_REPLY, rep::ERR_INVALID));
    assert_eq!(c.state(), State::Negotiating);
    assert!(c.extended_headers(), "a refusal takes nothing back");
    assert!(c.structured_replies());
}
