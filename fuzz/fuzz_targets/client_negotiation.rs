//! The client fed arbitrary server bytes from the first byte on.
//! Byte 0 picks the configuration, byte 1 the feeding step; the rest is the
//! server's stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_proto::client::{Client, Command, CommandKind, Config, State, TlsMode};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let sel = data[0];
    let step = usize::from(data[1] % 64) + 1;
    let config = {
        let mut config = Config::default();
        config.request_structured_replies = sel & 1 != 0;
        config.request_extended_headers = sel & 2 != 0;
        config.opt_mode = sel & 4 != 0;
        config.full_info = sel & 8 != 0;
        config.tls = match (sel >> 4) & 3 {
            1 => TlsMode::Allow,
            2 => TlsMode::Require,
            _ => TlsMode::Disable,
        };
        config.request_meta_contexts = if sel & 64 != 0 {
            vec!["base:allocation".into()]
        } else {
            vec![]
        };
        config
    };
    let mut c = Client::<Vec<u8>>::with_data(config);
    let mut read_sent = false;
    let mut done = Vec::new();
    let stream = &data[2..];
    let mut pos = 0;
    let mut round = 0u8;
    while pos < stream.len() {
        let end = (pos + 64).min(stream.len());
        common::feed_checked(&mut c, &mut done, &stream[pos..end], step);
        pos = end;
        match c.state() {
            State::Negotiating => {
                round = round.wrapping_add(1);
                let _ = match round % 5 {
                    0 => c.opt_list(),
                    1 => c.opt_info(),
                    2 => c.opt_list_meta_context(vec!["base:".into()]),
                    3 => c.opt_go(),
                    _ => c.opt_abort(),
                };
            }
            State::Ready if !read_sent => {
                read_sent = c
                    .submit_with(Command::new(CommandKind::Read, 0, 512), vec![0; 512])
                    .is_ok();
            }
            State::Dead | State::Closed => break,
            _ => {}
        }
        if c.state() == State::Connecting && !c.wants_read() && !c.wants_write() {
            // Waiting for TLS: pretend it worked.
            c.tls_established();
        }
    }
    c.handle_eof();
    common::drain(&mut c, &mut done);
    assert!(matches!(c.state(), State::Dead | State::Closed));
});
