//! Shared checks for the client fuzz targets.

use nbd_proto::client::{ChunkKind, Client, Event};
use std::collections::HashMap;

/// Feeds `input` in pieces of `step` bytes, checking the invariants: no
/// panic, consumed <= supplied, every payload and hole inside its command's
/// buffer, and every command completed at most once.
pub fn feed_checked(
    c: &mut Client,
    bufs: &mut HashMap<u64, Vec<u8>>,
    done: &mut Vec<u64>,
    input: &[u8],
    step: usize,
) {
    let step = step.max(1);
    for piece in input.chunks(step) {
        let n = c.feed(piece, &mut |cookie, off, data| {
            let buf = bufs
                .get_mut(&cookie)
                .expect("payload for a command without a buffer");
            let off = off as usize;
            assert!(off + data.len() <= buf.len(), "payload outside its buffer");
            buf[off..off + data.len()].copy_from_slice(data);
        });
        assert!(n <= piece.len(), "consumed more than supplied");
        let mut out = Vec::new();
        c.take_output(&mut out, &mut |_, _, _| &[]);
        while let Some(e) = c.poll_event() {
            match e {
                Event::ReadChunk {
                    cookie,
                    buf_offset,
                    len,
                    kind,
                } => {
                    let buf = bufs
                        .get(&cookie)
                        .expect("chunk for a command without a buffer");
                    let end = buf_offset.checked_add(len).expect("chunk range overflows");
                    assert!(end <= buf.len() as u64, "chunk outside its buffer");
                    if kind == ChunkKind::Hole {
                        bufs.get_mut(&cookie).unwrap()[buf_offset as usize..end as usize].fill(0);
                    }
                }
                Event::ReadError {
                    cookie, buf_offset, ..
                } => {
                    let buf = bufs
                        .get(&cookie)
                        .expect("error for a command without a buffer");
                    assert!(buf_offset < buf.len() as u64);
                }
                Event::Complete { cookie, .. } => {
                    assert!(!done.contains(&cookie), "command completed twice");
                    done.push(cookie);
                }
                _ => {}
            }
        }
        if n < piece.len() {
            break;
        }
    }
}
