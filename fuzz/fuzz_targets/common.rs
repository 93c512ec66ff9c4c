//! Shared checks for the client fuzz targets.

use nbd_proto::client::{Client, Step};

/// Feeds `input` in pieces of `step` bytes, checking the invariants: no
/// panic, consumed <= supplied, every payload, hole and error inside the
/// buffer its command carries (READs carry theirs, the client lends it
/// back), and every command completed at most once, its buffer returned.
pub fn feed_checked(c: &mut Client<Vec<u8>>, done: &mut Vec<u64>, input: &[u8], step: usize) {
    let step = step.max(1);
    for piece in input.chunks(step) {
        let mut used = 0;
        while used < piece.len() {
            if let Some(t) = c.payload_target() {
                let take = t.len.min(piece.len() - used);
                let off = t.buf_offset as usize;
                assert!(off + take <= t.data.len(), "payload outside its buffer");
                t.data[off..off + take].copy_from_slice(&piece[used..used + take]);
                c.handle_payload(take);
                used += take;
                continue;
            }
            let n = c.handle_input(&piece[used..]);
            assert!(n <= piece.len() - used, "consumed more than supplied");
            used += n;
            if n == 0 && c.payload_target().is_none() {
                break;
            }
        }
        let mut out = Vec::new();
        c.take_output(&mut out, &mut |_, _, _| &[]);
        drain(c, done);
        if used < piece.len() {
            break;
        }
    }
}

/// Pulls every step, checking it against the buffer its command carries.
pub fn drain(c: &mut Client<Vec<u8>>, done: &mut Vec<u64>) {
    while let Some(s) = c.poll_step() {
        match s {
            Step::ReadData {
                buf_offset,
                len,
                data,
                ..
            } => {
                let end = buf_offset.checked_add(len).expect("chunk range overflows");
                assert!(end <= data.len() as u64, "chunk outside its buffer");
            }
            Step::ReadHole {
                buf_offset,
                len,
                data,
                ..
            } => {
                let end = buf_offset.checked_add(len).expect("hole range overflows");
                assert!(end <= data.len() as u64, "hole outside its buffer");
                data[buf_offset as usize..end as usize].fill(0);
            }
            Step::ReadError {
                buf_offset, data, ..
            } => assert!(buf_offset < data.len() as u64, "error outside its buffer"),
            Step::Extents { .. } => {}
            Step::Complete { cookie, .. } => {
                assert!(!done.contains(&cookie), "command completed twice");
                done.push(cookie);
            }
            Step::Event(_) => {}
        }
    }
}
