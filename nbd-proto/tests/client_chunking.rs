//! Property: the client's events and the data it delivers do not depend on how
//! the server's byte stream is split into reads.

mod common;
use common::*;
use nbd_proto::client::{Client, Command, CommandKind, Event};
use nbd_proto::wire::reply::ErrorChunk;
use proptest::prelude::*;

/// A stream exercising every reply form: handshake, then replies to the
/// commands `submit_all` queues.
fn session(mode: Mode) -> Vec<u8> {
    let mut s = handshake(mode);
    match mode {
        Mode::Simple => {
            let mut r = simple(1, 0);
            r.extend(vec![1u8; 512]);
            s.extend(r);
            s.extend(simple(3, 0));
            s.extend(simple(2, 5));
        }
        _ => {
            s.extend(data_chunk(mode, false, 1, 0, 256, &[2u8; 256]));
            s.extend(status_chunk(mode, true, 4, 0, CTX, &[(4096, 1), (8192, 0)]));
            s.extend(hole_chunk(mode, false, 1, 0, 0, 256));
            s.extend(none_chunk(mode, 1, 0));
            s.extend(none_chunk(mode, 3, 0));
            s.extend(error_chunk(
                mode,
                true,
                2,
                4096,
                &ErrorChunk {
                    error: 5,
                    message: "nope".into(),
                    offset: None,
                },
            ));
        }
    }
    s
}

/// Runs the session with the stream cut at `cuts`; returns events and the
/// read buffer.
fn run(mode: Mode, cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let stream = session(mode);
    let mut c = Client::new(config(mode));
    let mut h = Harness::default();
    let mut pos = 0;
    let mut submitted = false;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    // Commands are submitted once the handshake is through, as a driver would.
    points.push(handshake(mode).len());
    points.sort_unstable();
    for p in points {
        while pos < p {
            let n = h.feed(&mut c, &stream[pos..p]);
            assert!(n > 0, "client stalled at {pos}");
            pos += n;
            if !submitted && c.state() == nbd_proto::client::State::Ready {
                submit_all(&mut c, &mut h, mode);
                submitted = true;
            }
            drain(&mut c);
        }
    }
    let buf = h.bufs.get(&1).cloned().unwrap_or_default();
    (h.events, buf)
}

fn submit_all(c: &mut Client, h: &mut Harness, mode: Mode) {
    assert_eq!(h.read(c, 0, 512), 1);
    assert_eq!(
        c.submit(Command::new(CommandKind::Trim, 4096, 4096))
            .unwrap(),
        2
    );
    assert_eq!(c.submit(Command::new(CommandKind::Flush, 0, 0)).unwrap(), 3);
    if mode != Mode::Simple {
        assert_eq!(
            c.submit(Command::new(CommandKind::BlockStatus, 0, 8192))
                .unwrap(),
            4
        );
    }
}

proptest! {
    #[test]
    fn split_points_do_not_matter(cuts in proptest::collection::vec(any::<usize>(), 0..40), m in 0u8..3) {
        let mode = [Mode::Simple, Mode::Structured, Mode::Extended][m as usize];
        let whole = run(mode, &[]);
        let split = run(mode, &cuts);
        prop_assert_eq!(&whole, &split);
        // Sanity: the session really completed every command.
        let completions = whole.0.iter().filter(|e| matches!(e, Event::Complete { .. })).count();
        prop_assert_eq!(completions, if mode == Mode::Simple { 3 } else { 4 });
    }
}

#[test]
fn one_byte_at_a_time_matches_whole() {
    for mode in [Mode::Simple, Mode::Structured, Mode::Extended] {
        let len = session(mode).len();
        let cuts: Vec<usize> = (0..len).collect();
        assert_eq!(run(mode, &[]), run(mode, &cuts));
        let (_, buf) = run(mode, &cuts);
        if mode != Mode::Simple {
            assert_eq!(&buf[..256], &[0u8; 256][..]);
            assert_eq!(&buf[256..], &[2u8; 256][..]);
        } else {
            assert_eq!(buf, vec![1u8; 512]);
        }
    }
}
