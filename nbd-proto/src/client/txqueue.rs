//! The client's output queue: encoded headers in one growing buffer, and
//! write payloads referenced rather than copied, so a driver can hand the
//! whole queue to `writev` in one call.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use bytes::Bytes;

/// One piece of pending output, as [`super::Client::transmit_segments`] reports it.
///
/// Exhaustive on purpose: a driver must send every byte of every segment,
/// so a new kind of segment has to break its match, not fall into a
/// wildcard arm.
#[derive(Debug, PartialEq, Eq)]
pub enum Segment<'a, U = ()> {
    /// Bytes the client owns (headers, option requests, owned payloads).
    Bytes(&'a [u8]),
    /// Payload bytes the driver owns: `len` bytes of the write buffer of command
    /// `cookie`, starting at `buf_offset` within that buffer.
    External {
        /// The write command.
        cookie: u64,
        /// Where in the command's buffer to start.
        buf_offset: u64,
        /// How many bytes.
        len: usize,
        /// The command's data (where the driver keeps the buffer).
        data: &'a U,
    },
}

impl<U> Clone for Segment<'_, U> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<U> Copy for Segment<'_, U> {}

impl<U> Segment<'_, U> {
    /// The number of bytes in this segment.
    pub fn len(&self) -> usize {
        match self {
            Segment::Bytes(b) => b.len(),
            Segment::External { len, .. } => *len,
        }
    }

    /// Whether the segment is empty (never true for queued segments).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug)]
enum Seg {
    /// `buf[start..end]`.
    Inline { start: usize, end: usize },
    /// An owned payload, from `pos`.
    Owned { data: Bytes, pos: usize },
    /// A driver-owned payload.
    External { cookie: u64, pos: u64, len: usize },
}

#[derive(Debug, Default)]
pub(crate) struct TxQueue {
    buf: Vec<u8>,
    segs: VecDeque<Seg>,
    total: usize,
    /// Bytes ever sent; with `total`, tells what a queue position refers to.
    sent: u64,
}

impl TxQueue {
    pub(crate) fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Frees the buffers when nothing is queued (no segment refers to them).
    pub(crate) fn shrink_idle(&mut self) {
        if self.segs.is_empty() {
            self.buf = Vec::new();
            self.segs = VecDeque::new();
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.total
    }

    /// The stream position where the next appended byte will go.
    pub(crate) fn end_position(&self) -> u64 {
        self.sent + self.total as u64
    }

    /// The stream position of the next byte to send.
    pub(crate) fn sent_position(&self) -> u64 {
        self.sent
    }

    /// Drops every queued byte from stream position `pos` on. Only bytes not
    /// yet sent can go: `pos` below [`Self::sent_position`] is raised to it.
    pub(crate) fn truncate_to(&mut self, pos: u64) {
        let pos = pos.max(self.sent);
        let mut excess =
            usize::try_from(self.end_position().saturating_sub(pos)).unwrap_or(usize::MAX);
        while excess > 0 {
            let Some(back) = self.segs.back_mut() else {
                break;
            };
            let len = match back {
                Seg::Inline { start, end } => *end - *start,
                Seg::Owned { data, pos } => data.len() - *pos,
                Seg::External { len, .. } => *len,
            };
            if len <= excess {
                self.segs.pop_back();
                self.total -= len;
                excess -= len;
                continue;
            }
            match back {
                Seg::Inline { end, .. } => {
                    *end -= excess;
                    self.buf.truncate(*end);
                }
                Seg::Owned { data, .. } => data.truncate(data.len() - excess),
                Seg::External { len, .. } => *len -= excess,
            }
            self.total -= excess;
            excess = 0;
        }
        if self.segs.is_empty() {
            self.buf.clear();
        }
    }

    /// Appends inline bytes produced by `f`, merging with a trailing inline segment.
    pub(crate) fn push_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        f(&mut self.buf);
        let end = self.buf.len();
        if end == start {
            return;
        }
        self.total += end - start;
        if let Some(Seg::Inline { end: e, .. }) = self.segs.back_mut() {
            if *e == start {
                *e = end;
                return;
            }
        }
        self.segs.push_back(Seg::Inline { start, end });
    }

    pub(crate) fn push_owned(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.total += data.len();
        self.segs.push_back(Seg::Owned { data, pos: 0 });
    }

    pub(crate) fn push_external(&mut self, cookie: u64, len: usize) {
        if len == 0 {
            return;
        }
        self.total += len;
        self.segs.push_back(Seg::External {
            cookie,
            pos: 0,
            len,
        });
    }

    /// Fills `out` in order, stopping after the segment that brings the total
    /// to `max_bytes` or more.
    /// An external payload's command data comes from `data(cookie)`; the
    /// list stops before one whose command is gone (a reply completed it
    /// before its payload went out).
    pub(crate) fn segments<'a, U: 'a>(
        &'a self,
        out: &mut [Segment<'a, U>],
        max_bytes: usize,
        data: impl Fn(u64) -> Option<&'a U>,
    ) -> usize {
        let mut n = 0;
        let mut bytes = 0;
        for (slot, seg) in out.iter_mut().zip(self.segs.iter()) {
            if bytes >= max_bytes {
                break;
            }
            *slot = match seg {
                Seg::Inline { start, end } => Segment::Bytes(&self.buf[*start..*end]),
                Seg::Owned { data, pos } => Segment::Bytes(&data[*pos..]),
                Seg::External { cookie, pos, len } => match data(*cookie) {
                    Some(data) => Segment::External {
                        cookie: *cookie,
                        buf_offset: *pos,
                        len: *len,
                        data,
                    },
                    None => break,
                },
            };
            bytes += slot.len();
            n += 1;
        }
        n
    }

    /// Marks `n` bytes as sent. `n` must not exceed [`Self::pending`].
    pub(crate) fn advance(&mut self, mut n: usize) {
        n = n.min(self.total);
        self.total -= n;
        self.sent += n as u64;
        while n > 0 {
            let Some(front) = self.segs.front_mut() else {
                break;
            };
            let (left, done) = match front {
                Seg::Inline { start, end } => {
                    let take = n.min(*end - *start);
                    *start += take;
                    (take, *start == *end)
                }
                Seg::Owned { data, pos } => {
                    let take = n.min(data.len() - *pos);
                    *pos += take;
                    (take, *pos == data.len())
                }
                Seg::External { pos, len, .. } => {
                    let take = n.min(*len);
                    *pos += take as u64;
                    *len -= take;
                    (take, *len == 0)
                }
            };
            n -= left;
            if done {
                self.segs.pop_front();
            }
        }
        if self.segs.is_empty() {
            self.buf.clear();
        }
    }

    /// Copies pending output into `out` (buffered use). External payloads are
    /// obtained from `payload(cookie, buf_offset, len)`.
    pub(crate) fn drain_into<'p>(
        &mut self,
        out: &mut Vec<u8>,
        payload: &mut dyn FnMut(u64, u64, usize) -> &'p [u8],
    ) {
        out.reserve(self.total);
        for seg in self.segs.drain(..) {
            match seg {
                Seg::Inline { start, end } => out.extend_from_slice(&self.buf[start..end]),
                Seg::Owned { data, pos } => out.extend_from_slice(&data[pos..]),
                Seg::External { cookie, pos, len } => {
                    let data = payload(cookie, pos, len);
                    let take = data.len().min(len);
                    out.extend_from_slice(&data[..take]);
                    out.resize(out.len() + (len - take), 0);
                }
            }
        }
        self.buf.clear();
        self.sent += self.total as u64;
        self.total = 0;
    }

    /// Drops everything (the connection died).
    pub(crate) fn clear(&mut self) {
        self.segs.clear();
        self.buf.clear();
        self.total = 0;
    }
}
