//! The driver's per-command data (`Client<U>`): kept by the client with
//! each command, lent back for payload, write segments and every step of a
//! reply, returned on completion; holes and read errors are steps.

mod common;
use common::*;
use nbd_proto::client::{
    errno, Client, Command, CommandKind, Event, Payload, Segment, Step, SubmitError,
};
use nbd_proto::wire::reply::ErrorChunk;

/// A client carrying a `Vec<u8>` per command, ready in `mode`.
fn ready_with_data(mode: Mode) -> Client<Vec<u8>> {
    let mut c = Client::with_data(config(mode));
    let hs = handshake(mode);
    let mut used = 0;
    while used < hs.len() {
        used += c.handle_input(&hs[used..]);
        let mut out = Vec::new();
        c.take_output(&mut out, &mut |_, _, _| &[]);
    }
    while c.poll_event().is_some() {}
    assert_eq!(c.state(), nbd_proto::client::State::Ready);
    c
}

/// Feeds `input`, READ payload into the buffer the command carries.
fn feed(c: &mut Client<Vec<u8>>, input: &[u8]) {
    let mut used = 0;
    while used < input.len() {
        if let Some(t) = c.payload_target() {
            let n = t.len.min(input.len() - used);
            let o = t.buf_offset as usize;
            t.data[o..o + n].copy_from_slice(&input[used..used + n]);
            c.handle_payload(n);
            used += n;
        } else {
            let n = c.handle_input(&input[used..]);
            assert!(n > 0, "the client stopped");
            used += n;
        }
    }
}

#[test]
fn the_buffer_comes_back_filled_and_holes_are_steps() {
    let mode = Mode::Structured;
    let mut c = ready_with_data(mode);
    let a = c
        .submit_with(Command::new(CommandKind::Read, 0, 16), vec![0xee; 16])
        .unwrap();
    let _ = drain_out(&mut c);
    let mut replies = data_chunk(mode, false, a, 0, 8, b"abcdefgh");
    replies.extend(hole_chunk(mode, true, a, 0, 0, 8));
    feed(&mut c, &replies);
    // The whole reply is in: its completion is queued, yet the hole step
    // still lends the buffer.
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.data(a).map(Vec::len), Some(16));
    let mut holes = 0;
    let mut back = None;
    while let Some(step) = c.poll_step() {
        match step {
            Step::ReadData { data, len, .. } => {
                assert_eq!(len, 8);
                assert_eq!(&data[8..], b"abcdefgh");
            }
            Step::ReadHole {
                buf_offset,
                len,
                data,
                ..
            } => {
                holes += 1;
                assert_eq!(&data[..8], &[0xee; 8], "the driver zeroes holes");
                data[buf_offset as usize..(buf_offset + len) as usize].fill(0);
            }
            Step::Complete {
                cookie,
                result,
                data,
            } => {
                assert_eq!(cookie, a);
                assert_eq!(result, Ok(()));
                back = Some(data);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(holes, 1);
    assert_eq!(back.unwrap(), b"\0\0\0\0\0\0\0\0abcdefgh");
    assert!(c.data(a).is_none(), "returned, not kept");
}

#[test]
fn a_read_error_is_a_step_with_the_buffer() {
    let mode = Mode::Structured;
    let mut c = ready_with_data(mode);
    let a = c
        .submit_with(Command::new(CommandKind::Read, 0, 512), vec![0; 512])
        .unwrap();
    let _ = drain_out(&mut c);
    let e = ErrorChunk {
        error: 5,
        offset: Some(256),
        message: "bad".into(),
    };
    feed(&mut c, &error_chunk(mode, true, a, 0, &e));
    let steps: Vec<String> = std::iter::from_fn(|| {
        c.poll_step().map(|s| match s {
            Step::ReadError {
                buf_offset,
                errno,
                data,
                ..
            } => format!("error {buf_offset} {errno} {}", data.len()),
            Step::Complete { result, data, .. } => {
                format!("complete {:?} {}", result.map_err(|e| e.errno), data.len())
            }
            other => format!("{other:?}"),
        })
    })
    .collect();
    assert_eq!(
        steps,
        [
            format!("error 256 {} 512", errno::EIO),
            format!("complete Err({}) 512", errno::EIO),
        ]
    );
}

#[test]
fn write_segments_lend_the_payload_and_a_refused_command_gives_it_back() {
    let mut c = ready_with_data(Mode::Simple);
    let mut w = Command::new(CommandKind::Write, 0, 5);
    w.payload = Payload::External;
    let k = c.submit_with(w, b"hello".to_vec()).unwrap();
    let mut sent = Vec::new();
    {
        let mut segs = [Segment::Bytes(&[]); 8];
        let n = c.transmit_segments(&mut segs);
        for s in &segs[..n] {
            match *s {
                Segment::Bytes(b) => sent.extend_from_slice(b),
                Segment::External {
                    cookie,
                    buf_offset,
                    len,
                    data,
                } => {
                    assert_eq!(cookie, k);
                    let o = buf_offset as usize;
                    sent.extend_from_slice(&data[o..o + len]);
                }
            }
        }
    }
    assert!(sent.ends_with(b"hello"));
    c.advance_transmit(sent.len());
    // A command refused at once: nothing queued, the data comes back.
    let (e, data) = c
        .submit_with(
            Command::new(CommandKind::Read, u64::MAX - 1, 512),
            vec![7; 3],
        )
        .unwrap_err();
    assert!(
        matches!(e, SubmitError::OutOfBounds | SubmitError::Invalid(_)),
        "{e:?}"
    );
    assert_eq!(data, [7, 7, 7]);
    assert_eq!(c.in_flight(), 1);
    feed(&mut c, &simple(k, 0));
    match c.poll_event() {
        Some(Event::Complete { cookie, data, .. }) => {
            assert_eq!(cookie, k);
            assert_eq!(data, b"hello");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_lost_connection_returns_every_commands_data_newest_first() {
    let mut c = ready_with_data(Mode::Simple);
    let cookies: Vec<u64> = (0..3u8)
        .map(|i| {
            c.submit_with(Command::new(CommandKind::Flush, 0, 0), vec![i])
                .unwrap()
        })
        .collect();
    let _ = drain_out(&mut c);
    c.handle_eof();
    let mut back = Vec::new();
    while let Some(e) = c.poll_event() {
        if let Event::Complete {
            cookie,
            result,
            data,
        } = e
        {
            assert_eq!(result.unwrap_err().errno, errno::ENOTCONN);
            back.push((cookie, data));
        }
    }
    assert_eq!(
        back,
        [
            (cookies[2], vec![2]),
            (cookies[1], vec![1]),
            (cookies[0], vec![0]),
        ]
    );
}

fn drain_out(c: &mut Client<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    c.take_output(&mut out, &mut |_, _, _| &[]);
    out
}
