//! The client in the transmission phase with a mix of commands in flight,
//! fed arbitrary server replies.
//! Byte 0 picks the reply mode, byte 1 the feeding step, byte 2 the command
//! mix; the rest is the server's stream after a good negotiation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_proto::client::{Client, Command, CommandKind, Config, State};
use nbd_proto::consts::{cmd_flags, handshake_flags, opt, transmission_flags as tf};
use nbd_proto::wire::handshake::NewstyleGreeting;
use nbd_proto::wire::option::{Info, MetaContext, OptionReply};

#[path = "common.rs"]
mod common;

fn handshake(mode: u8) -> Vec<u8> {
    let mut v = Vec::new();
    NewstyleGreeting {
        handshake_flags: handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES,
    }
    .encode(&mut v);
    match mode {
        1 => OptionReply::Ack.encode(opt::STRUCTURED_REPLY, &mut v),
        2 => OptionReply::Ack.encode(opt::EXTENDED_HEADERS, &mut v),
        _ => {}
    }
    if mode != 0 {
        OptionReply::MetaContext(MetaContext {
            id: 1,
            name: "base:allocation".into(),
        })
        .encode(opt::SET_META_CONTEXT, &mut v);
        OptionReply::Ack.encode(opt::SET_META_CONTEXT, &mut v);
    }
    let flags = tf::HAS_FLAGS
        | tf::SEND_FLUSH
        | tf::SEND_FUA
        | tf::SEND_TRIM
        | tf::SEND_WRITE_ZEROES
        | tf::SEND_DF
        | tf::SEND_CACHE;
    OptionReply::Info(Info::Export {
        size: 1 << 20,
        transmission_flags: flags,
    })
    .encode(opt::GO, &mut v);
    OptionReply::Ack.encode(opt::GO, &mut v);
    v
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let mode = data[0] % 3;
    let step = usize::from(data[1] % 64) + 1;
    let mix = data[2];
    let config = {
        let mut config = Config::default();
        config.request_structured_replies = mode >= 1;
        config.request_extended_headers = mode == 2;
        config.request_meta_contexts = vec!["base:allocation".into()];
        config
    };
    let mut c = Client::<Vec<u8>>::with_data(config);
    let mut done = Vec::new();
    common::feed_checked(&mut c, &mut done, &handshake(mode), 7);
    assert_eq!(c.state(), State::Ready);
    // Cookies 1..: reads of several sizes, a write, block status, flush, trim.
    for (i, len) in [512u64, 1024, 1, 2048].into_iter().enumerate() {
        let off = u64::from(mix) * 512 + i as u64 * 8192;
        let flags = if mix & 1 != 0 && mode >= 1 {
            cmd_flags::DF
        } else {
            0
        };
        let _ = c.submit_with(
            Command::new(CommandKind::Read, off, len).with_flags(flags),
            vec![0; len as usize],
        );
    }
    let _ = c.submit(Command::write(0, bytes::Bytes::from_static(&[1; 100])));
    let _ = c.submit(
        Command::new(CommandKind::BlockStatus, 0, 1 << 16).with_flags(if mix & 2 != 0 {
            cmd_flags::REQ_ONE
        } else {
            0
        }),
    );
    let _ = c.submit(Command::new(CommandKind::Flush, 0, 0));
    let _ = c.submit(Command::new(CommandKind::Trim, 4096, 4096));
    let submitted = c.in_flight();
    common::feed_checked(&mut c, &mut done, &data[3..], step);
    c.handle_eof();
    common::drain(&mut c, &mut done);
    // Every command completed exactly once, one way or another.
    assert_eq!(done.len(), submitted);
});
