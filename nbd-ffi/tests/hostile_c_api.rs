//! A hostile server against the C API: every stage of the protocol (greeting,
//! options, opt mode, simple, structured and extended replies, block status)
//! meets a server that lies, and each test checks what a C caller sees: the
//! return value, `nbd_get_errno()`, whether the handle died or still works
//! (then a good command must succeed), that no byte lands outside the
//! caller's buffer and no stale data is reported as read, and that every
//! callback's `.free` runs exactly once.
//!
//! Tests named `..._newer_than_libnbd_1_14` check where this library is
//! stricter than libnbd 1.14.

#![warn(clippy::undocumented_unsafe_blocks)]

mod evil;

use evil::*;
use libc::{EINVAL, EIO, ENOENT, ENOTCONN, EOVERFLOW, EPERM, EPROTO};
use nbd_ffi::constants::{
    LIBNBD_CMD_FLAG_REQ_ONE, LIBNBD_READ_DATA, LIBNBD_READ_ERROR, LIBNBD_READ_HOLE,
};
use nbd_proto::consts::{cmd, errno as nbd_errno, opt, rep, reply_flags::DONE, reply_type};
use nbd_proto::server::ServerCodec;
use nbd_proto::wire::option::{
    BlockSize, Info, MetaContext, OptionReply, OptionReplyHeader, OptionRequest, ServerEntry,
};
use nbd_proto::wire::reply::{ChunkHeader, ErrorChunk};
use nbd_proto::wire::to_vec;
use std::sync::mpsc;

const MIB: u64 = 1 << 20;

/// An option reply header announcing `length` bytes.
fn opt_header(option: u32, reply_type: u32, length: u32) -> Vec<u8> {
    to_vec(|v| {
        OptionReplyHeader {
            option,
            reply_type,
            length,
        }
        .encode(v)
    })
}

fn is_go(r: &OptionRequest) -> bool {
    matches!(r, OptionRequest::Go { .. })
}

fn is_info(r: &OptionRequest) -> bool {
    matches!(r, OptionRequest::Info { .. })
}

/// A connect to a server announcing a size above `INT64_MAX`: as in libnbd
/// 1.24 the connection is made, and `nbd_get_size` fails with `EOVERFLOW`
/// instead of returning a negative size (CVE-2023-5215), while data
/// commands still work.
fn assert_connected_with_oversized_export(c: &Conn) {
    assert_eq!(c.rc, 0, "connect: {:?}", last_error());
    assert_eq!(c.size(), -1, "never a negative size");
    assert_eq!(evil::errno(), libc::EOVERFLOW, "{:?}", last_error());
    c.assert_good_read(0, 512);
}

/// A connect that the server ruins: it must fail and leave the handle dead.
fn assert_connect_dies(c: &Conn, errno: i32) {
    assert_eq!(c.rc, -1, "connect must fail");
    assert_eq!(c.connect_errno, errno, "{:?}", last_error());
    assert!(c.is_dead(), "the handle must be dead");
    assert_eq!(c.size(), -1, "no size from a dead handle");
}

/// A connect whose server hangs up during the handshake: as in libnbd 1.24
/// the call fails without an errno (0) and says why.
fn assert_connect_dies_at_eof(c: &Conn) {
    let (_, msg) = last_error();
    assert!(
        msg.ends_with(": recv: server disconnected unexpectedly"),
        "{msg}"
    );
    assert_connect_dies(c, 0);
}

// ---------------------------------------------------------------------------
// Reads answered by a script

/// What a caller saw of one 512-byte read answered by a hostile script.
struct ReadOutcome {
    rc: i32,
    errno: i32,
    dead: bool,
    buf: Guarded,
}

impl ReadOutcome {
    /// The read failed with `errno` and the handle survived (a good read
    /// afterwards succeeded, checked by [`read_with`]).
    fn fails_softly(&self, errno: i32) {
        assert_eq!(self.rc, -1, "the read must fail");
        assert_eq!(self.errno, errno, "errno");
        assert!(!self.dead, "the handle must survive");
        self.buf.assert_guards();
    }

    /// The read failed and the handle is dead.
    fn fails_hard(&self, errno: i32) {
        assert_eq!(self.rc, -1, "the read must fail");
        assert_eq!(self.errno, errno, "errno");
        assert!(self.dead, "the handle must be dead");
        self.buf.assert_guards();
    }
}

/// Connects to a server in `mode` (with `nbd_set_pread_initialize(false)`,
/// so untouched bytes keep the canary), reads `len` bytes at `offset` and
/// lets `evil` answer; then, if the handle survived, a good read must work.
fn read_with(
    mode: Mode,
    offset: u64,
    len: usize,
    evil: impl FnOnce(&mut Evil, &Req) + Send + 'static,
) -> ReadOutcome {
    let c = Conn::ready(Export::new(mode), setup::no_init, move |s| {
        let r = s.expect_request(cmd::READ);
        assert_eq!((r.offset(), r.len()), (offset, len as u64));
        evil(s, &r);
        s.serve();
    });
    let buf = Guarded::new(len);
    let rc = c.pread(&buf, offset);
    let errno = if rc == -1 { evil::errno() } else { 0 };
    let dead = c.is_dead();
    if !dead {
        c.assert_good_read(0, 4096);
    }
    c.finish();
    ReadOutcome {
        rc,
        errno,
        dead,
        buf,
    }
}

// ---------------------------------------------------------------------------
// Greeting

#[test]
fn greeting_bad_magic_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Simple), setup::none, |s| {
        s.raw(b"NBDMAGICnotmagic\x00\x03");
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn greeting_truncated_then_eof_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Simple), setup::none, |s| {
        s.raw(b"NBDMAGICIHA");
        s.hang_up();
    });
    assert_connect_dies_at_eof(&c);
    c.finish();
}

#[test]
fn greeting_oldstyle_size_over_int64_max_is_eoverflow_cve_2023_5215() {
    let c = Conn::start(Export::new(Mode::Simple), setup::none, |s| {
        s.set_codec(ServerCodec::oldstyle(1 << 63, 1));
        s.serve();
    });
    assert_connected_with_oversized_export(&c);
    c.finish();
}

#[test]
fn greeting_oldstyle_with_sane_size_is_served() {
    let c = Conn::start(Export::new(Mode::Simple), setup::none, |s| {
        s.set_codec(ServerCodec::oldstyle(MIB, 1));
        s.serve();
    });
    assert_eq!(c.rc, 0, "{:?}", last_error());
    assert_eq!(c.size(), MIB as i64);
    c.assert_good_read(512, 1024);
    c.finish();
}

#[test]
fn greeting_newstyle_without_fixed_goes_straight_to_export_name() {
    let c = Conn::start(Export::new(Mode::Simple), setup::none, |s| {
        s.set_codec(ServerCodec::newstyle(0));
        let req = s.option().expect("an option");
        assert!(matches!(req, OptionRequest::ExportName(_)), "{req:?}");
        s.answer(&req);
        s.serve();
    });
    assert_eq!(c.rc, 0, "{:?}", last_error());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn greeting_unknown_handshake_flags_are_ignored() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.set_codec(ServerCodec::newstyle(0xffff));
        assert!(s.negotiate());
        s.serve();
    });
    assert_eq!(c.rc, 0, "{:?}", last_error());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn export_name_reply_size_over_int64_max_is_eoverflow_cve_2023_5215() {
    let c = Conn::start(Export::new(Mode::Simple), setup::none, |s| {
        s.set_codec(ServerCodec::newstyle(0));
        s.ex.size = u64::MAX;
        let req = s.option().expect("an option");
        s.answer(&req);
        s.serve();
    });
    assert_connected_with_oversized_export(&c);
    c.finish();
}

#[test]
fn export_name_reply_truncated_then_eof_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Simple), setup::none, |s| {
        s.set_codec(ServerCodec::newstyle(0));
        s.option().expect("an option");
        s.raw(&[0, 0, 0, 0, 0, 16]);
        s.hang_up();
    });
    assert_connect_dies_at_eof(&c);
    c.finish();
}

// ---------------------------------------------------------------------------
// Options, negotiated automatically

#[test]
fn option_reply_bad_magic_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(|r| matches!(r, OptionRequest::ExtendedHeaders));
        let mut bad = opt_header(opt::EXTENDED_HEADERS, rep::ACK, 0);
        bad[0] ^= 0xff;
        s.raw(&bad);
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn option_reply_for_another_option_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(|r| matches!(r, OptionRequest::ExtendedHeaders));
        s.raw(&opt_header(opt::LIST, rep::ACK, 0));
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn option_reply_oversize_fails_without_waiting_for_the_payload() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        // 16 MiB of "info" is never sent: the client must give up at the header.
        s.raw(&opt_header(opt::GO, rep::INFO, 16 << 20));
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn option_error_reply_length_0xffffffff_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        s.raw(&opt_header(opt::GO, rep::ERR_UNKNOWN, u32::MAX));
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn option_error_message_over_4096_bytes_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(|r| matches!(r, OptionRequest::ExtendedHeaders));
        s.raw(&opt_header(opt::EXTENDED_HEADERS, rep::ERR_UNSUP, 5000));
        s.raw(&[b'x'; 5000]);
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn option_ack_with_payload_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(|r| matches!(r, OptionRequest::ExtendedHeaders));
        s.raw(&opt_header(opt::EXTENDED_HEADERS, rep::ACK, 4));
        s.raw(b"junk");
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn option_unknown_reply_type_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(|r| matches!(r, OptionRequest::ExtendedHeaders));
        s.raw(&opt_header(opt::EXTENDED_HEADERS, 0x55, 0));
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn go_acked_without_info_export_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        s.reply(opt::GO, OptionReply::Ack);
        s.send();
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn go_info_export_size_over_int64_max_is_eoverflow_cve_2023_5215() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        s.ex.size = (1 << 63) + 512;
        let info = s.info_export();
        s.reply(opt::GO, info);
        s.reply(opt::GO, OptionReply::Ack);
        s.send();
        s.serve();
    });
    assert_connected_with_oversized_export(&c);
    c.finish();
}

#[test]
fn go_info_export_of_wrong_length_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        s.raw(&opt_header(opt::GO, rep::INFO, 10));
        s.raw(&[0, 0, 0, 0, 0, 0, 0, 0x10, 0, 1]);
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn go_info_block_size_not_a_power_of_two_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        let bad = BlockSize {
            minimum: 3,
            preferred: 4096,
            maximum: 1 << 20,
        };
        s.reply(opt::GO, OptionReply::Info(Info::BlockSize(bad)));
        s.send();
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn go_refused_fails_the_connect_with_the_servers_reason() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        s.refuse(opt::GO, rep::ERR_UNKNOWN);
        s.send();
        s.wait_close();
    });
    assert_connect_dies(&c, ENOENT);
    c.finish();
}

#[test]
fn go_unsupported_falls_back_to_export_name() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        s.refuse(opt::GO, rep::ERR_UNSUP);
        s.send();
        let req = s.option().expect("an option");
        assert!(matches!(req, OptionRequest::ExportName(_)), "{req:?}");
        s.answer(&req);
        s.serve();
    });
    assert_eq!(c.rc, 0, "{:?}", last_error());
    assert_eq!(c.size(), MIB as i64);
    c.assert_good_read(4096, 512);
    c.finish();
}

#[test]
fn server_vanishes_after_the_client_flags() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        assert!(matches!(
            s.event(),
            Some(nbd_proto::server::ServerEvent::ClientFlags(_))
        ));
        s.hang_up();
    });
    assert_connect_dies_at_eof(&c);
    c.finish();
}

#[test]
fn server_vanishes_in_the_middle_of_an_option_reply() {
    let c = Conn::start(Export::new(Mode::Structured), setup::none, |s| {
        s.greet();
        s.negotiate_until(is_go);
        let info = s.info_export();
        s.reply(opt::GO, info);
        s.send();
        s.raw(&opt_header(opt::GO, rep::ACK, 0)[..9]);
        s.hang_up();
    });
    assert_connect_dies_at_eof(&c);
    c.finish();
}

#[test]
fn set_meta_context_duplicate_id_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::meta, |s| {
        s.greet();
        s.negotiate_until(|r| matches!(r, OptionRequest::SetMetaContext { .. }));
        for name in ["base:allocation", "qemu:dirty-bitmap:x"] {
            let m = MetaContext {
                id: 3,
                name: name.into(),
            };
            s.reply(opt::SET_META_CONTEXT, OptionReply::MetaContext(m));
        }
        s.reply(opt::SET_META_CONTEXT, OptionReply::Ack);
        s.send();
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

#[test]
fn set_meta_context_name_over_4096_bytes_kills_the_handle() {
    let c = Conn::start(Export::new(Mode::Structured), setup::meta, |s| {
        s.greet();
        s.negotiate_until(|r| matches!(r, OptionRequest::SetMetaContext { .. }));
        let m = MetaContext {
            id: 1,
            name: "x".repeat(8192),
        };
        s.reply(opt::SET_META_CONTEXT, OptionReply::MetaContext(m));
        s.send();
        s.wait_close();
    });
    assert_connect_dies(&c, EPROTO);
    c.finish();
}

// ---------------------------------------------------------------------------
// Opt mode

/// Connects in opt mode to a server that answers correctly until the
/// option `pred` picks, which `evil` answers.
fn opt_conn(
    pred: fn(&OptionRequest) -> bool,
    evil: impl FnOnce(&mut Evil, OptionRequest) + Send + 'static,
) -> Conn {
    let c = Conn::start(
        Export::new(Mode::Structured),
        |h| {
            setup::opt_mode(h);
            setup::meta(h);
        },
        move |s| {
            s.greet();
            if let Some(req) = s.negotiate_until(pred) {
                evil(s, req);
            }
        },
    );
    assert_eq!(c.rc, 0, "{:?}", last_error());
    assert!(c.is_negotiating());
    c
}

fn is_list(r: &OptionRequest) -> bool {
    matches!(r, OptionRequest::List)
}

fn is_list_meta(r: &OptionRequest) -> bool {
    matches!(r, OptionRequest::ListMetaContext { .. })
}

#[test]
fn opt_list_reports_every_export_and_frees_the_callback_once() {
    let c = opt_conn(is_list, |s, req| {
        s.answer(&req);
        s.negotiate();
        s.serve();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), 2, "{:?}", last_error());
    assert_eq!(*p.names.lock().unwrap(), ["a:first", "b:"]);
    p.assert_freed_once();
    assert_eq!(c.opt_go(), 0, "{:?}", last_error());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn opt_list_server_name_length_past_payload_kills_the_handle() {
    let c = opt_conn(is_list, |s, _| {
        s.raw(&opt_header(opt::LIST, rep::SERVER, 6));
        s.raw(&[0, 0, 0, 10, b'a', b'b']);
        s.wait_close();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), -1);
    assert_eq!(evil::errno(), ENOTCONN, "{:?}", last_error());
    assert!(c.is_dead());
    assert_eq!(p.calls(), 0);
    p.assert_freed_once();
    c.finish();
}

#[test]
fn opt_list_server_name_length_0xffffffff_kills_the_handle() {
    let c = opt_conn(is_list, |s, _| {
        s.raw(&opt_header(opt::LIST, rep::SERVER, 5));
        s.raw(&[0xff, 0xff, 0xff, 0xff, b'x']);
        s.wait_close();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), -1);
    assert!(c.is_dead());
    assert_eq!(p.calls(), 0);
    p.assert_freed_once();
    c.finish();
}

#[test]
fn opt_list_reply_longer_than_any_export_entry_fails_at_once_cve_2017_2630() {
    let c = opt_conn(is_list, |s, _| {
        // 1 MiB announced, never sent: the client must not wait for it.
        s.raw(&opt_header(opt::LIST, rep::SERVER, 1 << 20));
        s.raw(&[0, 0, 0x10, 0]);
        s.wait_close();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), -1);
    assert!(c.is_dead());
    assert_eq!(p.calls(), 0);
    p.assert_freed_once();
    c.finish();
}

#[test]
fn opt_list_4096_byte_export_name_arrives_intact() {
    let c = opt_conn(is_list, |s, req| {
        s.ex.exports = vec![("n".repeat(4096), "d".repeat(4096))];
        s.answer(&req);
        s.wait_close();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), 1, "{:?}", last_error());
    let names = p.names.lock().unwrap().clone();
    assert_eq!(
        names,
        [format!("{}:{}", "n".repeat(4096), "d".repeat(4096))]
    );
    p.assert_freed_once();
    c.finish();
}

#[test]
fn opt_list_server_vanishes_mid_option_returns_error_cve_2021_20286() {
    let c = opt_conn(is_list, |s, _| {
        let e = ServerEntry {
            name: "a".into(),
            description: String::new(),
        };
        s.reply(opt::LIST, OptionReply::Server(e));
        s.hang_up();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), -1);
    assert_eq!(evil::errno(), ENOTCONN, "{:?}", last_error());
    assert!(c.is_dead());
    assert_eq!(p.calls(), 1);
    p.assert_freed_once();
    c.finish();
}

#[test]
fn opt_list_server_vanishes_before_replying() {
    let c = opt_conn(is_list, |s, _| s.hang_up());
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), -1);
    assert_eq!(evil::errno(), ENOTCONN, "{:?}", last_error());
    assert!(c.is_dead());
    assert_eq!(p.calls(), 0);
    p.assert_freed_once();
    c.finish();
}

#[test]
fn opt_list_error_after_entries_keeps_negotiating() {
    let c = opt_conn(is_list, |s, _| {
        let e = ServerEntry {
            name: "a".into(),
            description: String::new(),
        };
        s.reply(opt::LIST, OptionReply::Server(e));
        s.refuse(opt::LIST, rep::ERR_POLICY);
        s.send();
        s.negotiate();
        s.serve();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list(p.list()), -1);
    assert_eq!(evil::errno(), EPERM, "{:?}", last_error());
    assert!(c.is_negotiating());
    assert_eq!(p.calls(), 1);
    p.assert_freed_once();
    assert_eq!(c.opt_go(), 0, "{:?}", last_error());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn aio_opt_list_server_vanishes_completion_sees_the_error() {
    let c = opt_conn(is_list, |s, _| s.hang_up());
    let list = Probe::new();
    let done = Probe::new();
    assert_eq!(c.aio_opt_list(list.list(), done.completion()), 0);
    c.poll_until(|_| done.calls() == 1);
    assert!(c.is_dead());
    let errors = done.errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1);
    assert_ne!(errors[0], 0, "the completion must see the failure");
    assert_eq!(list.calls(), 0);
    list.assert_freed_once();
    done.assert_freed_once();
    c.finish();
}

#[test]
fn close_during_aio_opt_list_frees_both_callbacks_once() {
    let (tx, rx) = mpsc::channel();
    let c = opt_conn(is_list, move |s, _| {
        tx.send(()).unwrap();
        s.wait_close();
    });
    let list = Probe::new();
    let done = Probe::new();
    assert_eq!(c.aio_opt_list(list.list(), done.completion()), 0);
    rx.recv().expect("the server saw the option");
    c.finish();
    list.assert_freed_once();
    done.assert_freed_once();
    assert_eq!(list.calls(), 0);
    assert!(done.calls() <= 1);
    assert!(done.errors.lock().unwrap().iter().all(|&e| e != 0));
}

#[test]
fn opt_list_meta_context_server_vanishes_mid_option() {
    let c = opt_conn(is_list_meta, |s, _| {
        let m = MetaContext {
            id: 0,
            name: "base:allocation".into(),
        };
        s.reply(opt::LIST_META_CONTEXT, OptionReply::MetaContext(m));
        s.hang_up();
    });
    let p = Probe::new();
    assert_eq!(c.opt_list_meta_context(p.context()), -1);
    assert!(c.is_dead());
    assert_eq!(p.calls(), 1);
    p.assert_freed_once();
    c.finish();
}

#[test]
fn opt_info_server_vanishes_mid_option() {
    let c = opt_conn(is_info, |s, _| {
        let info = s.info_export();
        s.reply(opt::INFO, info);
        s.hang_up();
    });
    assert_eq!(c.opt_info(), -1);
    assert_eq!(evil::errno(), ENOTCONN, "{:?}", last_error());
    assert!(c.is_dead());
    assert_eq!(c.size(), -1);
    c.finish();
}

#[test]
fn opt_go_server_vanishes_mid_option() {
    let c = opt_conn(is_go, |s, _| s.hang_up());
    assert_eq!(c.opt_go(), -1);
    assert_eq!(evil::errno(), ENOTCONN, "{:?}", last_error());
    assert!(c.is_dead());
    c.finish();
}

#[test]
fn opt_info_refused_keeps_negotiating_and_go_still_works() {
    let c = opt_conn(is_info, |s, _| {
        s.refuse(opt::INFO, rep::ERR_UNKNOWN);
        s.send();
        s.negotiate();
        s.serve();
    });
    assert_eq!(c.opt_info(), -1);
    assert_eq!(evil::errno(), ENOENT, "{:?}", last_error());
    assert!(c.is_negotiating());
    assert_eq!(c.opt_go(), 0, "{:?}", last_error());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn opt_info_refused_after_info_export_reports_no_size() {
    let c = opt_conn(is_info, |s, _| {
        let info = OptionReply::Info(Info::Export {
            size: 4096,
            transmission_flags: 1,
        });
        s.reply(opt::INFO, info);
        s.refuse(opt::INFO, rep::ERR_UNKNOWN);
        s.send();
        s.negotiate();
        s.serve();
    });
    assert_eq!(c.opt_info(), -1);
    assert!(c.is_negotiating());
    // The export the failed option started to describe must not be reported.
    assert_eq!(c.size(), -1, "size of a refused export");
    assert_ne!(evil::errno(), 0);
    assert_eq!(c.opt_go(), 0, "{:?}", last_error());
    assert_eq!(c.size(), MIB as i64);
    c.finish();
}

#[test]
fn opt_info_negative_size_is_eoverflow_cve_2023_5215() {
    let c = opt_conn(is_info, |s, _| {
        let info = OptionReply::Info(Info::Export {
            size: u64::MAX,
            transmission_flags: 1,
        });
        s.reply(opt::INFO, info);
        s.reply(opt::INFO, OptionReply::Ack);
        s.send();
        s.negotiate();
    });
    assert_eq!(c.opt_info(), 0, "{:?}", last_error());
    assert!(c.is_negotiating());
    assert_eq!(c.size(), -1);
    assert_eq!(evil::errno(), libc::EOVERFLOW);
    c.finish();
}

#[test]
fn opt_go_refused_keeps_negotiating_and_retry_works() {
    let c = opt_conn(is_go, |s, _| {
        s.refuse(opt::GO, rep::ERR_POLICY);
        s.send();
        s.negotiate();
        s.serve();
    });
    assert_eq!(c.opt_go(), -1);
    assert_eq!(evil::errno(), EPERM, "{:?}", last_error());
    assert!(c.is_negotiating());
    assert_eq!(c.opt_go(), 0, "{:?}", last_error());
    c.assert_good_read(0, 512);
    c.finish();
}

// ---------------------------------------------------------------------------
// Simple replies

#[test]
fn simple_reply_error_fails_the_read_and_the_handle_survives() {
    let o = read_with(Mode::Simple, 0, 512, |s, r| {
        s.reply_error(r, nbd_errno::EIO, "")
    });
    o.fails_softly(EIO);
    o.buf.assert_untouched();
}

#[test]
fn simple_reply_unknown_error_value_becomes_einval() {
    let o = read_with(Mode::Simple, 0, 512, |s, r| s.reply_error(r, 9999, ""));
    o.fails_softly(EINVAL);
    o.buf.assert_untouched();
}

#[test]
fn simple_reply_for_unknown_cookie_kills_the_handle() {
    let o = read_with(Mode::Simple, 0, 512, |s, r| {
        s.codec()
            .send_simple_reply(r.cookie() + 100, 0, &[0x11; 512]);
        s.send();
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn simple_reply_bad_magic_kills_the_handle() {
    let o = read_with(Mode::Simple, 0, 512, |s, r| {
        let mut b = vec![0x67, 0x44, 0x66, 0x99, 0, 0, 0, 0];
        b.extend_from_slice(&r.cookie().to_be_bytes());
        s.raw(&b);
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn simple_reply_truncated_payload_then_eof_fails_the_read() {
    let o = read_with(Mode::Simple, 0, 512, |s, r| {
        s.codec().send_simple_reply(r.cookie(), 0, &[0x11; 200]);
        s.hang_up();
    });
    o.fails_hard(ENOTCONN);
}

#[test]
fn structured_chunk_without_negotiation_kills_the_handle() {
    let o = read_with(Mode::Simple, 0, 512, |s, r| {
        let mut payload = 0u64.to_be_bytes().to_vec();
        payload.extend_from_slice(&[0x11; 512]);
        s.chunk_raw(DONE, reply_type::OFFSET_DATA, r.cookie(), 0, 520, &payload);
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn reply_repeated_for_a_completed_cookie_kills_the_handle() {
    let c = Conn::ready(Export::new(Mode::Simple), setup::none, |s| {
        let r = s.expect_request(cmd::READ);
        let data = pattern(r.offset(), r.len() as usize);
        s.reply_data(&r, &data);
        s.reply_data(&r, &data);
        s.serve();
    });
    c.assert_good_read(0, 512);
    let buf = Guarded::new(512);
    assert_eq!(c.pread(&buf, 0), -1);
    assert_ne!(evil::errno(), 0);
    assert!(c.is_dead());
    buf.assert_guards();
    c.finish();
}

// ---------------------------------------------------------------------------
// Structured replies: where the data goes

#[test]
fn data_chunk_offset_near_2_pow_64_is_rejected_buffer_untouched() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.data_chunk(r, u64::MAX - 7, &[0x11; 8], true);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn data_chunk_wrapping_past_2_pow_64_is_rejected_buffer_untouched() {
    let o = read_with(Mode::Structured, 4096, 512, |s, r| {
        // offset + length wraps around to land inside the request.
        s.data_chunk(r, u64::MAX - 255, &[0x11; 512], true);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn hole_chunk_offset_near_2_pow_64_is_rejected_buffer_untouched() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.codec()
            .send_offset_hole(r.cookie(), 0, u64::MAX - 100, 512, true)
            .unwrap();
        s.send();
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn data_chunk_before_the_request_is_rejected() {
    let o = read_with(Mode::Structured, 4096, 512, |s, r| {
        s.data_chunk(r, 4096 - 256, &[0x11; 512], true);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn data_chunk_past_the_request_end_is_rejected() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.data_chunk(r, 256, &[0x11; 512], true);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn hole_chunk_past_the_request_end_is_rejected() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.codec()
            .send_offset_hole(r.cookie(), 0, 500, 13, true)
            .unwrap();
        s.send();
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn overlapping_data_chunks_fail_the_read() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.data_chunk(r, 0, &pattern(0, 300), false);
        s.data_chunk(r, 200, &[0x11; 312], true);
    });
    o.fails_softly(EPROTO);
    // The first chunk was fine; the overlapping one was not applied.
    assert_eq!(&o.buf.inside()[..300], &pattern(0, 300)[..]);
    assert!(o.buf.inside()[300..].iter().all(|&b| b == CANARY));
}

#[test]
fn duplicated_data_chunk_fails_the_read() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.data_chunk(r, 0, &pattern(0, 256), false);
        s.data_chunk(r, 0, &pattern(0, 256), false);
        s.data_chunk(r, 256, &pattern(256, 256), true);
    });
    o.fails_softly(EPROTO);
}

#[test]
fn hole_over_data_already_received_fails_the_read() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.data_chunk(r, 0, &pattern(0, 512), false);
        s.codec()
            .send_offset_hole(r.cookie(), 0, 100, 100, true)
            .unwrap();
        s.send();
    });
    o.fails_softly(EPROTO);
    // Not zeroed by the rejected hole.
    assert_eq!(o.buf.inside(), &pattern(0, 512)[..]);
}

#[test]
fn done_before_full_coverage_fails_the_read_cve_2022_0485() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.data_chunk(r, 0, &pattern(0, 256), true);
    });
    o.fails_softly(EIO);
    // Half of the buffer was never written: that must not pass as a read.
    assert!(o.buf.inside()[256..].iter().all(|&b| b == CANARY));
}

#[test]
fn none_chunk_alone_fails_a_read_cve_2022_0485() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.codec().send_none(r.cookie(), 0, true).unwrap();
        s.send();
    });
    o.fails_softly(EIO);
    o.buf.assert_untouched();
}

#[test]
fn aio_done_before_full_coverage_completion_sees_eio_cve_2022_0485() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::no_init, |s| {
        let r = s.expect_request(cmd::READ);
        s.data_chunk(&r, 0, &pattern(0, 100), true);
        s.serve();
    });
    let done = Probe::new();
    let buf = Guarded::leaked(512);
    let cookie = c.aio_pread(buf, 0, done.completion());
    assert!(cookie > 0, "{:?}", last_error());
    c.poll_until(|c| c.in_flight() == 0);
    assert_eq!(*done.errors.lock().unwrap(), [EIO]);
    // Freed when retired, not when completed (libnbd 1.24).
    assert_eq!(done.frees(), 0);
    assert_eq!(c.command_completed(cookie), -1);
    done.assert_freed_once();
    assert_eq!(evil::errno(), EIO);
    assert!(!c.is_dead());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn failed_read_with_pread_initialize_shows_zeroes_not_stale_bytes() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let r = s.expect_request(cmd::READ);
        s.data_chunk(&r, 0, &pattern(0, 128), true);
        s.serve();
    });
    let buf = Guarded::new(512);
    assert_eq!(c.pread(&buf, 0), -1);
    assert_eq!(evil::errno(), EIO);
    buf.assert_guards();
    assert_eq!(&buf.inside()[..128], &pattern(0, 128)[..]);
    assert!(buf.inside()[128..].iter().all(|&b| b == 0), "stale bytes");
    c.finish();
}

#[test]
fn data_chunk_aimed_at_another_commands_range_is_rejected() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::no_init, |s| {
        let a = s.expect_request(cmd::READ);
        let b = s.expect_request(cmd::READ);
        // A's cookie, B's offset: must not reach either buffer.
        s.data_chunk(&a, b.offset(), &[0x11; 512], true);
        s.serve_one(&b);
        s.serve();
    });
    let (da, db) = (Probe::new(), Probe::new());
    let (ba, bb) = (Guarded::leaked(512), Guarded::leaked(512));
    let ka = c.aio_pread(ba, 0, da.completion());
    let kb = c.aio_pread(bb, 8192, db.completion());
    assert!(ka > 0 && kb > 0);
    c.poll_until(|c| c.in_flight() == 0);
    assert_eq!(c.command_completed(ka), -1);
    assert_eq!(c.command_completed(kb), 1);
    assert_eq!(*da.errors.lock().unwrap(), [EPROTO]);
    assert_eq!(*db.errors.lock().unwrap(), [0]);
    ba.assert_untouched();
    assert_eq!(bb.inside(), &pattern(8192, 512)[..]);
    bb.assert_guards();
    da.assert_freed_once();
    db.assert_freed_once();
    assert!(!c.is_dead());
    c.finish();
}

#[test]
fn data_chunk_too_short_is_rejected() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.chunk_raw(DONE, reply_type::OFFSET_DATA, r.cookie(), 0, 8, &[0; 8]);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn hole_chunk_of_wrong_length_is_rejected() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        let mut p = 0u64.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
        s.chunk_raw(DONE, reply_type::OFFSET_HOLE, r.cookie(), 0, 16, &p);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn hole_chunk_of_zero_length_is_rejected() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        let mut p = 0u64.to_be_bytes().to_vec();
        p.extend_from_slice(&0u32.to_be_bytes());
        s.chunk_raw(DONE, reply_type::OFFSET_HOLE, r.cookie(), 0, 12, &p);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn unknown_chunk_type_fails_the_command_and_is_skipped() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.chunk_raw(DONE, 77, r.cookie(), 0, 10, &[0x11; 10]);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn unknown_error_chunk_type_reports_its_error() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        let mut p = nbd_errno::EPERM.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 2, b'n', b'o', 1, 2, 3]);
        s.chunk_raw(DONE, reply_type::FLAG_ERROR | 77, r.cookie(), 0, 11, &p);
    });
    o.fails_softly(EPERM);
    o.buf.assert_untouched();
}

#[test]
fn error_chunk_reports_its_errno_and_the_handle_survives() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.reply_error(r, nbd_errno::ENOSPC, "disk full");
    });
    o.fails_softly(libc::ENOSPC);
    o.buf.assert_untouched();
}

#[test]
fn error_chunk_with_error_zero_fails_with_eproto() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| s.reply_error(r, 0, "fine"));
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn error_chunk_message_length_past_the_payload_fails_with_eproto() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        let mut p = nbd_errno::EIO.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 100, b'a', b'b', b'c', b'd']);
        s.chunk_raw(DONE, reply_type::ERROR, r.cookie(), 0, 10, &p);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn error_chunk_too_short_fails_with_eproto() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.chunk_raw(DONE, reply_type::ERROR, r.cookie(), 0, 3, &[0, 0, 5]);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn error_offset_outside_the_request_fails_with_eproto() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        let e = ErrorChunk {
            error: nbd_errno::EIO,
            message: String::new(),
            offset: Some(4096),
        };
        s.codec().send_error(r.cookie(), 0, &e, true).unwrap();
        s.send();
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn error_offset_chunk_reaches_the_chunk_callback_as_read_error() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::no_init, |s| {
        let r = s.expect_request(cmd::READ);
        s.data_chunk(&r, 0, &pattern(0, 256), false);
        let e = ErrorChunk {
            error: nbd_errno::EIO,
            message: "bad sector".into(),
            offset: Some(256),
        };
        s.codec().send_error(r.cookie(), 0, &e, false).unwrap();
        s.codec().send_none(r.cookie(), 0, true).unwrap();
        s.send();
        s.serve();
    });
    let p = Probe::new();
    let buf = Guarded::new(512);
    assert_eq!(c.pread_structured(&buf, 0, p.chunk()), -1);
    assert_eq!(evil::errno(), EIO);
    let chunks = p.chunks.lock().unwrap().clone();
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    assert_eq!(chunks[0].status, LIBNBD_READ_DATA as u32);
    assert_eq!((chunks[0].offset, chunks[0].count), (0, 256));
    assert_eq!(chunks[1].status, LIBNBD_READ_ERROR as u32);
    assert_eq!((chunks[1].offset, chunks[1].count), (256, 0));
    assert_eq!(chunks[1].error, EIO);
    for ch in &chunks {
        assert!(buf.range().contains(&ch.addr));
        assert!(ch.addr + ch.count <= buf.range().end);
    }
    p.assert_freed_once();
    buf.assert_guards();
    assert!(!c.is_dead());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn chunk_callback_pointers_stay_inside_the_buffer() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let r = s.expect_request(cmd::READ);
        let base = r.offset();
        s.data_chunk(&r, base + 256, &pattern(base + 256, 256), false);
        s.codec()
            .send_offset_hole(r.cookie(), base, base, 128, false)
            .unwrap();
        s.data_chunk(&r, base + 128, &pattern(base + 128, 128), true);
        s.serve();
    });
    let p = Probe::new();
    let buf = Guarded::new(512);
    assert_eq!(c.pread_structured(&buf, 8192, p.chunk()), 0);
    let mut want = pattern(8192, 512);
    want[..128].fill(0);
    assert_eq!(buf.inside(), &want[..]);
    buf.assert_guards();
    let chunks = p.chunks.lock().unwrap().clone();
    let summary: Vec<_> = chunks
        .iter()
        .map(|c| (c.offset, c.count, c.status))
        .collect();
    assert_eq!(
        summary,
        [
            (8192 + 256, 256, LIBNBD_READ_DATA as u32),
            (8192, 128, LIBNBD_READ_HOLE as u32),
            (8192 + 128, 128, LIBNBD_READ_DATA as u32),
        ]
    );
    for ch in &chunks {
        assert_eq!(ch.addr - buf.range().start, (ch.offset - 8192) as usize);
    }
    p.assert_freed_once();
    c.finish();
}

#[test]
fn chunk_callback_failure_fails_the_read_and_the_handle_survives() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| s.serve());
    let p = Probe::new().returning(-1);
    let buf = Guarded::new(512);
    assert_eq!(c.pread_structured(&buf, 0, p.chunk()), -1);
    assert_eq!(evil::errno(), EPROTO);
    assert_eq!(p.calls(), 1);
    p.assert_freed_once();
    assert!(!c.is_dead());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn chunk_for_unknown_cookie_kills_the_handle() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.codec()
            .send_offset_data(r.cookie() ^ 0x8000, 0, 0, &[0x11; 512], true)
            .unwrap();
        s.send();
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn chunk_length_0xffffffff_fails_without_waiting_for_the_payload() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.chunk_raw(
            DONE,
            reply_type::OFFSET_DATA,
            r.cookie(),
            0,
            u64::from(u32::MAX),
            &[0; 8],
        );
        s.wait_close();
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn data_chunk_for_a_flush_fails_the_flush() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let r = s.expect_request(cmd::FLUSH);
        let mut p = 0u64.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x11; 16]);
        s.chunk_raw(DONE, reply_type::OFFSET_DATA, r.cookie(), 0, 24, &p);
        s.serve();
    });
    assert_eq!(c.flush(), -1);
    assert_eq!(evil::errno(), EPROTO);
    assert!(!c.is_dead());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn simple_reply_with_data_after_structured_negotiation_kills_the_handle() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.codec().send_simple_reply(r.cookie(), 0, &[0x11; 512]);
        s.send();
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn simple_error_reply_after_structured_negotiation_is_accepted() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        s.codec().send_simple_reply(r.cookie(), nbd_errno::EIO, &[]);
        s.send();
    });
    o.fails_softly(EIO);
    o.buf.assert_untouched();
}

#[test]
fn server_vanishes_in_the_middle_of_a_data_chunk() {
    let o = read_with(Mode::Structured, 0, 512, |s, r| {
        let mut p = 0u64.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x11; 100]);
        s.chunk_raw(DONE, reply_type::OFFSET_DATA, r.cookie(), 0, 520, &p);
        s.hang_up();
    });
    o.fails_hard(ENOTCONN);
}

// ---------------------------------------------------------------------------
// Many commands in flight

#[test]
fn sixteen_in_flight_server_closes_mid_reply_each_fails_once() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let reqs: Vec<Req> = (0..16).map(|_| s.expect_request(cmd::READ)).collect();
        // Half of a chunk header, then nothing.
        let mut h = Vec::new();
        ChunkHeader {
            flags: DONE,
            chunk_type: reply_type::OFFSET_DATA,
            cookie: reqs[5].cookie(),
            offset: None,
            length: 520,
        }
        .encode(&mut h)
        .unwrap();
        s.raw(&h[..10]);
        s.hang_up();
    });
    let probes: Vec<&'static Probe> = (0..16).map(|_| Probe::new()).collect();
    let cookies: Vec<i64> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| c.aio_pread(Guarded::leaked(512), i as u64 * 512, p.completion()))
        .collect();
    assert!(cookies.iter().all(|&k| k > 0), "{:?}", last_error());
    c.poll_until(|c| c.in_flight() == 0);
    assert!(c.is_dead());
    for (p, &cookie) in probes.iter().zip(&cookies) {
        let errors = p.errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "one completion per command");
        assert_ne!(errors[0], 0, "the completion must see the failure");
        assert_eq!(p.frees(), 0, "freed at retirement");
        assert_eq!(c.command_completed(cookie), -1);
        p.assert_freed_once();
        assert_ne!(evil::errno(), 0);
    }
    c.finish();
    for p in &probes {
        p.assert_freed_once();
    }
}

#[test]
fn close_with_sixteen_in_flight_frees_every_callback_once() {
    let (tx, rx) = mpsc::channel();
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, move |s| {
        for _ in 0..16 {
            s.expect_request(cmd::READ);
        }
        tx.send(()).unwrap();
        s.wait_close();
    });
    let chunks: Vec<&'static Probe> = (0..16).map(|_| Probe::new()).collect();
    let dones: Vec<&'static Probe> = (0..16).map(|_| Probe::new()).collect();
    for i in 0..16 {
        let buf = Guarded::leaked(512);
        let k = c.aio_pread_structured(
            buf,
            i * 512,
            chunks[i as usize].chunk(),
            dones[i as usize].completion(),
        );
        assert!(k > 0, "{:?}", last_error());
    }
    rx.recv().expect("the server saw the requests");
    assert_eq!(c.in_flight(), 16);
    c.finish();
    for (ch, d) in chunks.iter().zip(&dones) {
        ch.assert_freed_once();
        d.assert_freed_once();
        assert_eq!(ch.calls(), 0);
        assert!(d.calls() <= 1);
        assert!(d.errors.lock().unwrap().iter().all(|&e| e != 0));
    }
}

#[test]
fn aio_failures_mixed_with_successes_complete_each_once() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let reqs: Vec<Req> = (0..8).map(|_| s.expect_request(cmd::READ)).collect();
        // Answer in reverse order; every odd one with an error.
        for (i, r) in reqs.iter().enumerate().rev() {
            if i % 2 == 1 {
                s.reply_error(r, nbd_errno::EIO, "odd");
            } else {
                s.serve_one(r);
            }
        }
        s.serve();
    });
    let probes: Vec<&'static Probe> = (0..8).map(|_| Probe::new()).collect();
    let bufs: Vec<&'static Guarded> = (0..8).map(|_| Guarded::leaked(512)).collect();
    let cookies: Vec<i64> = probes
        .iter()
        .zip(&bufs)
        .enumerate()
        .map(|(i, (p, buf))| c.aio_pread(buf, i as u64 * 512, p.completion()))
        .collect();
    assert!(cookies.iter().all(|&k| k > 0));
    c.poll_until(|c| c.in_flight() == 0);
    for (i, (p, buf)) in probes.iter().zip(&bufs).enumerate() {
        let want = if i % 2 == 1 { EIO } else { 0 };
        assert_eq!(*p.errors.lock().unwrap(), [want]);
        assert_eq!(p.frees(), 0, "freed at retirement");
        let r = c.command_completed(cookies[i]);
        assert_eq!(r, if want == 0 { 1 } else { -1 });
        p.assert_freed_once();
        buf.assert_guards();
        if i % 2 == 0 {
            assert_eq!(buf.inside(), &pattern(i as u64 * 512, 512)[..]);
        }
    }
    assert!(!c.is_dead());
    c.assert_good_read(0, 512);
    c.finish();
}

// ---------------------------------------------------------------------------
// Extended headers

#[test]
fn extended_headers_read_works() {
    let c = Conn::ready(Export::new(Mode::Extended), setup::none, |s| s.serve());
    c.assert_good_read(12345, 3000);
    c.finish();
}

#[test]
fn extended_simple_reply_kills_the_handle_without_waiting_for_32_bytes() {
    let o = read_with(Mode::Extended, 0, 512, |s, r| {
        s.codec().send_simple_reply(r.cookie(), nbd_errno::EIO, &[]);
        s.send();
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn extended_compact_chunk_kills_the_handle() {
    let o = read_with(Mode::Extended, 0, 512, |s, r| {
        s.codec().set_extended_headers(false);
        s.data_chunk(r, 0, &[0x11; 512], true);
        s.codec().set_extended_headers(true);
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn extended_chunk_with_wrong_request_offset_is_rejected() {
    let o = read_with(Mode::Extended, 4096, 512, |s, r| {
        s.codec()
            .send_offset_data(r.cookie(), 0, 4096, &[0x11; 512], true)
            .unwrap();
        s.send();
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

#[test]
fn extended_chunk_with_64_bit_length_fails_without_waiting() {
    let o = read_with(Mode::Extended, 0, 512, |s, r| {
        s.chunk_raw(
            DONE,
            reply_type::OFFSET_DATA,
            r.cookie(),
            0,
            1 << 40,
            &[0; 8],
        );
        s.wait_close();
    });
    o.fails_hard(ENOTCONN);
    o.buf.assert_untouched();
}

#[test]
fn extended_data_chunk_offset_near_2_pow_64_is_rejected() {
    let o = read_with(Mode::Extended, 0, 512, |s, r| {
        s.data_chunk(r, u64::MAX - 7, &[0x11; 8], true);
    });
    o.fails_softly(EPROTO);
    o.buf.assert_untouched();
}

// ---------------------------------------------------------------------------
// Block status

/// What a caller saw of one `nbd_block_status` answered by a script.
struct BsOutcome {
    rc: i32,
    errno: i32,
    dead: bool,
    probe: &'static Probe,
}

impl BsOutcome {
    fn fails_softly(&self, errno: i32) {
        assert_eq!(self.rc, -1, "block status must fail");
        assert_eq!(self.errno, errno, "errno");
        assert!(!self.dead);
        self.probe.assert_freed_once();
    }
}

/// Connects with `base:allocation` to a server in `mode` with an export of
/// `size`, asks for block status of `count` bytes at `offset` and lets
/// `evil` answer; then, if the handle survived, a good read must work.
fn block_status_with(
    mode: Mode,
    size: u64,
    count: u64,
    offset: u64,
    flags: u32,
    evil: impl FnOnce(&mut Evil, &Req) + Send + 'static,
) -> BsOutcome {
    let c = Conn::ready(Export::new(mode).sized(size), setup::meta, move |s| {
        let r = s.expect_request(cmd::BLOCK_STATUS);
        evil(s, &r);
        s.serve();
    });
    let probe = Probe::new();
    let rc = c.block_status(count, offset, probe.extent(), flags);
    let errno = if rc == -1 { evil::errno() } else { 0 };
    let dead = c.is_dead();
    if !dead {
        c.assert_good_read(0, 512);
    }
    c.finish();
    BsOutcome {
        rc,
        errno,
        dead,
        probe,
    }
}

#[test]
fn block_status_32_bit_extents_reach_the_callback() {
    let o = block_status_with(Mode::Structured, MIB, 65536, 4096, 0, |s, r| {
        s.reply_extents(r, BASE_ID, &[(4096, 1), (8192, 3)], true);
    });
    assert_eq!(o.rc, 0, "{:?}", last_error());
    let seen = o.probe.extents.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].context, BASE_ALLOCATION);
    assert_eq!(seen[0].offset, 4096);
    assert_eq!(seen[0].entries, [4096, 1, 8192, 3]);
    o.probe.assert_freed_once();
}

#[test]
fn block_status_64_bit_extent_length_is_truncated_not_wrapped_cve_2023_5871() {
    let o = block_status_with(Mode::Extended, 1 << 40, MIB, 0, 0, |s, r| {
        s.reply_extents(r, BASE_ID, &[((1 << 32) + 512, 0), (4096, 1)], true);
    });
    assert_eq!(o.rc, 0, "{:?}", last_error());
    let seen = o.probe.extents.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let e = &seen[0].entries;
    assert_eq!(
        e.len(),
        2,
        "the callback stops at the extent it cannot hold"
    );
    assert_eq!(
        e[0], 0xfc00_0000,
        "truncated to 32 bits (4 GiB - 64 MiB, as libnbd), not wrapped: {e:?}"
    );
    assert_eq!(e[1], 0);
    o.probe.assert_freed_once();
}

#[test]
fn block_status_64_bit_flags_fail_with_eoverflow_cve_2023_5871() {
    let o = block_status_with(Mode::Extended, MIB, 65536, 0, 0, |s, r| {
        s.reply_extents(r, BASE_ID, &[(65536, 1 << 40)], true);
    });
    o.fails_softly(EOVERFLOW);
    // As libnbd: the callback sees the extent with flags 0, never wrapped
    // flags, and is told EOVERFLOW.
    let seen = o.probe.extents.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].entries, [65536, 0]);
    assert_eq!(seen[0].error, EOVERFLOW);
}

#[test]
fn block_status_extents_wrapping_2_pow_64_fail() {
    let o = block_status_with(Mode::Extended, 1 << 40, 65536, 4096, 0, |s, r| {
        s.reply_extents(r, BASE_ID, &[(u64::MAX - 100, 0), (4096, 0)], true);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_extent_past_the_end_of_the_export_fails() {
    let o = block_status_with(Mode::Structured, MIB, 4096, 0, 0, |s, r| {
        s.reply_extents(r, BASE_ID, &[(2 * MIB, 0)], true);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_unknown_context_id_fails() {
    let o = block_status_with(Mode::Structured, MIB, 4096, 0, 0, |s, r| {
        s.reply_extents(r, 99, &[(4096, 0)], true);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_missing_context_before_done_fails_newer_than_libnbd_1_14() {
    let o = block_status_with(Mode::Structured, MIB, 4096, 0, 0, |s, r| {
        s.codec().send_none(r.cookie(), r.offset(), true).unwrap();
        s.send();
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_same_context_twice_fails() {
    let o = block_status_with(Mode::Structured, MIB, 4096, 0, 0, |s, r| {
        s.reply_extents(r, BASE_ID, &[(4096, 0)], false);
        s.reply_extents(r, BASE_ID, &[(4096, 1)], true);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 1);
}

#[test]
fn block_status_zero_length_extent_fails() {
    let o = block_status_with(Mode::Structured, MIB, 4096, 0, 0, |s, r| {
        s.reply_extents(r, BASE_ID, &[(0, 0), (4096, 0)], true);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_req_one_answered_with_several_extents_fails() {
    let o = block_status_with(
        Mode::Structured,
        MIB,
        8192,
        0,
        LIBNBD_CMD_FLAG_REQ_ONE,
        |s, r| {
            s.reply_extents(r, BASE_ID, &[(4096, 0), (4096, 1)], true);
        },
    );
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_empty_chunk_fails() {
    let o = block_status_with(Mode::Structured, MIB, 4096, 0, 0, |s, r| {
        s.chunk_raw(DONE, reply_type::BLOCK_STATUS, r.cookie(), 0, 0, &[]);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_payload_not_a_whole_number_of_extents_fails() {
    let o = block_status_with(Mode::Structured, MIB, 4096, 0, 0, |s, r| {
        let mut p = BASE_ID.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0x10, 0, 0, 0]);
        s.chunk_raw(DONE, reply_type::BLOCK_STATUS, r.cookie(), 0, 10, &p);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_extended_descriptor_count_lie_fails() {
    let o = block_status_with(Mode::Extended, MIB, 4096, 0, 0, |s, r| {
        let mut p = BASE_ID.to_be_bytes().to_vec();
        p.extend_from_slice(&1000u32.to_be_bytes());
        p.extend_from_slice(&4096u64.to_be_bytes());
        p.extend_from_slice(&0u64.to_be_bytes());
        s.chunk_raw(DONE, reply_type::BLOCK_STATUS_EXT, r.cookie(), 0, 24, &p);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_compact_chunk_with_extended_headers_fails() {
    let o = block_status_with(Mode::Extended, MIB, 4096, 0, 0, |s, r| {
        let mut p = BASE_ID.to_be_bytes().to_vec();
        p.extend_from_slice(&4096u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        s.chunk_raw(DONE, reply_type::BLOCK_STATUS, r.cookie(), 0, 12, &p);
    });
    o.fails_softly(EPROTO);
    assert_eq!(o.probe.calls(), 0);
}

#[test]
fn block_status_chunk_for_a_read_fails_the_read() {
    let c = Conn::ready(
        Export::new(Mode::Structured),
        |h| {
            setup::meta(h);
            setup::no_init(h);
        },
        |s| {
            let r = s.expect_request(cmd::READ);
            s.reply_extents(&r, BASE_ID, &[(512, 0)], true);
            s.serve();
        },
    );
    let buf = Guarded::new(512);
    assert_eq!(c.pread(&buf, 0), -1);
    assert_eq!(evil::errno(), EPROTO);
    buf.assert_untouched();
    assert!(!c.is_dead());
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn aio_block_status_server_vanishes_mid_reply_frees_both_callbacks_once() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::meta, |s| {
        let r = s.expect_request(cmd::BLOCK_STATUS);
        let mut p = BASE_ID.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0x10]);
        s.chunk_raw(DONE, reply_type::BLOCK_STATUS, r.cookie(), 0, 12, &p);
        s.hang_up();
    });
    let extent = Probe::new();
    let done = Probe::new();
    // SAFETY: the handle is open; both callbacks carry leaked probes.
    let cookie = unsafe {
        nbd_ffi::aio::nbd_aio_block_status(c.h, 4096, 0, extent.extent(), done.completion(), 0)
    };
    assert!(cookie > 0, "{:?}", last_error());
    c.poll_until(|c| c.in_flight() == 0);
    assert!(c.is_dead());
    assert_eq!(extent.calls(), 0);
    assert_eq!(done.calls(), 1);
    assert_ne!(done.errors.lock().unwrap()[0], 0);
    // Both are freed when the command is retired (libnbd 1.24).
    assert_eq!((extent.frees(), done.frees()), (0, 0));
    assert_eq!(c.command_completed(cookie), -1);
    extent.assert_freed_once();
    done.assert_freed_once();
    c.finish();
    extent.assert_freed_once();
    done.assert_freed_once();
}

#[test]
fn block_status_extent_callback_failure_fails_the_command() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::meta, |s| s.serve());
    let p = Probe::new().returning(-1);
    assert_eq!(c.block_status(4096, 0, p.extent(), 0), -1);
    assert_eq!(evil::errno(), EPROTO);
    assert_eq!(p.calls(), 1);
    p.assert_freed_once();
    assert!(!c.is_dead());
    c.finish();
}

// ---------------------------------------------------------------------------
// Size

#[test]
fn get_size_is_never_negative_cve_2023_5215() {
    // As libnbd 1.24: the connection is made, nbd_get_size fails with
    // EOVERFLOW instead of returning a negative size.
    for size in [1 << 63, u64::MAX, (1 << 63) + 1] {
        let c = Conn::ready(
            Export::new(Mode::Structured).sized(size),
            setup::none,
            |s| s.serve(),
        );
        assert_eq!(c.size(), -1);
        assert_eq!(evil::errno(), libc::EOVERFLOW);
        assert!(evil::last_error().1.contains("does not fit"));
        c.finish();
    }
    let c = Conn::ready(
        Export::new(Mode::Structured).sized(i64::MAX as u64),
        setup::none,
        |s| s.serve(),
    );
    assert_eq!(c.size(), i64::MAX);
    c.finish();
}

#[test]
fn write_error_reply_is_reported_and_the_handle_survives() {
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| {
        let r = s.expect_request(cmd::WRITE);
        assert_eq!(r.payload.as_deref(), Some(&[7u8; 1000][..]));
        s.reply_error(&r, nbd_errno::ENOSPC, "full");
        s.serve();
    });
    assert_eq!(c.pwrite(&[7u8; 1000], 0), -1);
    assert_eq!(evil::errno(), libc::ENOSPC);
    assert!(!c.is_dead());
    assert_eq!(c.trim(4096, 0), 0, "{:?}", last_error());
    c.finish();
}

#[test]
fn server_hanging_up_while_idle_is_seen_by_an_aio_poll_loop() {
    // Ready, nothing in flight: the direction is still READ, and when the
    // server hangs up the next nbd_aio_notify_read must find out (instead
    // of leaving the caller's poll loop spinning on a readable socket).
    let c = Conn::ready(Export::new(Mode::Structured), setup::none, |s| s.hang_up());
    let mut rounds = 0;
    // SAFETY: c.h is open for the whole loop; pfd is one valid pollfd.
    unsafe {
        while nbd_ffi::state::nbd_aio_is_ready(c.h) == 1 {
            rounds += 1;
            assert!(rounds <= 10, "still ready after {rounds} readable polls");
            assert_eq!(nbd_ffi::aio::nbd_aio_get_direction(c.h) & 1, 1);
            let mut pfd = libc::pollfd {
                fd: nbd_ffi::aio::nbd_aio_get_fd(c.h),
                events: libc::POLLIN,
                revents: 0,
            };
            assert_eq!(libc::poll(&mut pfd, 1, 10_000), 1, "poll timed out");
            nbd_ffi::aio::nbd_aio_notify_read(c.h);
        }
    }
    assert!(c.is_dead() || !c.is_ready());
    c.finish();
}
