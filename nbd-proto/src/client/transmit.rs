//! The transmission phase: submitting commands, and checking every reply and
//! chunk against the command it names before anything reaches its buffer.

use super::negotiate::Expect;
use super::ranges::{RangeError, RangeSet};
use super::{
    errno, ChunkKind, Client, Command, CommandError, CommandKind, Event, Payload, Phase,
    ProtocolError, SubmitError,
};
use crate::consts::{self, cmd_flags, limits, reply_type, size};
use crate::wire::reply::{
    chunk_name, BlockStatus, ChunkHeader, ErrorChunk, OffsetHole, ReplyHeader,
};
use crate::wire::request::{BlockStatusPayload, RequestHeader};
use alloc::format;
use alloc::vec::Vec;

/// A command waiting for its reply.
#[derive(Debug)]
pub(super) struct InFlight<U> {
    /// The driver's data for the command.
    pub(super) data: U,
    kind: CommandKind,
    offset: u64,
    length: u64,
    flags: u16,
    error: Option<CommandError>,
    /// READ: the parts of the request covered by data and hole chunks.
    ranges: RangeSet,
    /// READ: a simple reply delivered the whole range.
    simple_data: bool,
    /// BLOCK_STATUS: the contexts that got extents.
    contexts_seen: Vec<u32>,
    /// BLOCK_STATUS with a context list: the ids asked for (empty: every
    /// negotiated context).
    contexts_wanted: Vec<u32>,
    /// Stream position of the request's first byte.
    tx_start: u64,
}

impl<U> InFlight<U> {
    fn fail(&mut self, e: CommandError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    /// `[start, end)` of a chunk at export offset `off`, relative to the
    /// request, if it lies inside it.
    fn relative(&self, off: u64, len: u64) -> Option<(u64, u64)> {
        let start = off.checked_sub(self.offset)?;
        let end = start.checked_add(len)?;
        (end <= self.length).then_some((start, end))
    }
}

/// READ payload being received into a command's buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct PayloadState {
    pub(super) cookie: u64,
    pub(super) buf_offset: u64,
    pub(super) remaining: u64,
    start: u64,
    len: u64,
    /// The reply ends with this payload (simple reply, or chunk with DONE).
    done: bool,
}

impl<U> Client<U> {
    pub(super) fn reply_header_len(&self) -> usize {
        if self.extended {
            size::EXTENDED_REPLY
        } else {
            size::SIMPLE_REPLY
        }
    }

    /// Queues a command with no data; returns its cookie. Nothing is
    /// queued on error.
    pub fn submit(&mut self, c: Command) -> Result<u64, SubmitError>
    where
        U: Default,
    {
        self.submit_with(c, U::default()).map_err(|(e, _)| e)
    }

    /// Queues a command carrying `data` (see [`Client`]); returns its
    /// cookie. On error nothing is queued and the data comes back. An
    /// `NBD_CMD_DISC` has no reply: its data is dropped at once.
    pub fn submit_with(&mut self, c: Command, data: U) -> Result<u64, (SubmitError, U)> {
        match self.enqueue(c) {
            Ok((cookie, None)) => Ok(cookie),
            Ok((cookie, Some(f))) => {
                self.cmds.insert(cookie, f(data));
                Ok(cookie)
            }
            Err(e) => Err((e, data)),
        }
    }

    /// Queues a command's request; returns its cookie and, unless it is
    /// `NBD_CMD_DISC`, how to make its table entry.
    #[allow(clippy::type_complexity)]
    fn enqueue(
        &mut self,
        c: Command,
    ) -> Result<(u64, Option<impl FnOnce(U) -> InFlight<U>>), SubmitError> {
        if self.phase != Phase::Transmission {
            return Err(SubmitError::InvalidState("the handle is not connected"));
        }
        if self.disconnect_sent {
            return Err(SubmitError::AfterDisconnect);
        }
        self.check_command(&c)?;
        let cookie = self.next_cookie;
        let (offset, length) = if c.kind == CommandKind::Disconnect {
            (0, 0)
        } else {
            (c.offset, c.length)
        };
        // A context list travels as the payload: the header then carries
        // the payload's length, and the range's length is inside it.
        let filter = match &c.payload {
            Payload::Contexts(ids) => Some(BlockStatusPayload {
                length,
                ids: ids.clone(),
            }),
            _ => None,
        };
        let header = RequestHeader {
            flags: if filter.is_some() {
                c.flags | cmd_flags::PAYLOAD_LEN
            } else {
                c.flags
            },
            command: c.kind.code(),
            cookie,
            offset,
            length: filter.as_ref().map_or(length, |f| f.encoded_len() as u64),
        };
        let (bytes, n) = header
            .to_array(self.extended)
            .map_err(|_| SubmitError::TooLarge)?;
        self.next_cookie += 1;
        self.chunks_sent += 1;
        let tx_start = self.tx.end_position();
        self.tx.push_with(|b| {
            b.extend_from_slice(&bytes[..n]);
            if let Some(f) = &filter {
                f.encode(b);
            }
        });
        let contexts_wanted = match c.payload {
            Payload::Owned(data) => {
                self.tx.push_owned(data);
                Vec::new()
            }
            Payload::External => {
                self.tx.push_external(cookie, length as usize);
                Vec::new()
            }
            Payload::Contexts(ids) => ids,
            Payload::None => Vec::new(),
        };
        if c.kind == CommandKind::Disconnect {
            self.disconnect_sent = true;
            self.update_direction();
            return Ok((cookie, None));
        }
        self.update_direction();
        let (kind, flags) = (c.kind, c.flags);
        Ok((
            cookie,
            Some(move |data| InFlight {
                data,
                kind,
                offset,
                length,
                flags,
                error: None,
                ranges: RangeSet::default(),
                simple_data: false,
                contexts_seen: Vec::new(),
                contexts_wanted,
                tx_start,
            }),
        ))
    }

    /// Ends the session politely: `NBD_CMD_DISC` in transmission (commands in
    /// flight still complete), `NBD_OPT_ABORT` while negotiating.
    pub fn shutdown(&mut self) -> Result<(), SubmitError> {
        match self.state() {
            // A second disconnect is refused like any command after the
            // first (libnbd 1.24: EINVAL).
            super::State::Ready | super::State::Processing => self
                .enqueue(Command::new(CommandKind::Disconnect, 0, 0))
                .map(|_| ()),
            super::State::Negotiating => self.opt_abort(),
            _ => Err(SubmitError::InvalidState("the handle is not connected")),
        }
    }

    /// Withdraws every command whose request has not started going out
    /// (libnbd's `LIBNBD_SHUTDOWN_ABANDON_PENDING`): its bytes leave the
    /// output queue and it completes with `ENOTCONN`. Requests partly sent
    /// stay, or the stream would be corrupt. Returns how many were withdrawn.
    pub fn abandon_unsent(&mut self) -> usize {
        self.abandon_unsent_after(0)
    }

    /// [`Client::abandon_unsent`] for a driver whose transport already took
    /// the next `committed` bytes of [`Client::transmit_segments`] without
    /// reporting them sent (a TLS write that must be retried): requests that
    /// start inside those bytes count as started and stay.
    pub fn abandon_unsent_after(&mut self, committed: usize) -> usize {
        let sent = self.tx.sent_position() + committed as u64;
        let unsent: Vec<u64> = self
            .cmds
            .iter()
            .filter(|(_, c)| c.tx_start >= sent)
            .map(|(cookie, _)| cookie)
            .collect();
        let Some(from) = unsent
            .iter()
            .filter_map(|&c| self.cmds.get(c).map(|c| c.tx_start))
            .min()
        else {
            return 0;
        };
        self.tx.truncate_to(from);
        self.chunks_sent -= unsent.len() as u64;
        for &cookie in &unsent {
            if let Some(c) = self.cmds.remove(cookie) {
                self.push_event(Event::Complete {
                    cookie,
                    result: Err(CommandError::new(
                        errno::ENOTCONN,
                        "abandoned before it was sent",
                    )),
                    data: c.data,
                });
            }
        }
        self.update_direction();
        unsent.len()
    }

    /// Whether `NBD_CMD_DISC` was queued.
    pub fn disconnect_sent(&self) -> bool {
        self.disconnect_sent
    }

    /// Whether `NBD_CMD_DISC` was queued and the connection is still open.
    /// The server sends no reply to it: the session ends when the server
    /// closes the connection (or resets it), not when the request is
    /// written, and until then it counts as a command in flight (libnbd
    /// 1.24 stays ready with it in flight, see nbd_aio_disconnect(3)).
    pub fn disconnect_in_flight(&self) -> bool {
        self.phase == Phase::Transmission && self.disconnect_sent
    }

    /// Fails every command in flight because the connection ended,
    /// newest first (as libnbd 1.24 does).
    pub(super) fn fail_all(&mut self, why: &ProtocolError) {
        if self.cmds.is_empty() {
            return;
        }
        let failed: Vec<(u64, InFlight<U>)> = self.cmds.drain().collect();
        for (cookie, c) in failed.into_iter().rev() {
            self.push_event(Event::Complete {
                cookie,
                result: Err(CommandError::new(
                    errno::ENOTCONN,
                    format!("connection ended: {why}"),
                )),
                data: c.data,
            });
        }
    }

    fn finish_command(&mut self, cookie: u64) {
        let Some(mut c) = self.cmds.remove(cookie) else {
            return;
        };
        if c.error.is_none() {
            match c.kind {
                CommandKind::Read if !c.simple_data && c.ranges.covered() != c.length => {
                    c.fail(CommandError::new(
                        errno::EIO,
                        format!(
                            "server reply covered {} of {} bytes of the read",
                            c.ranges.covered(),
                            c.length
                        ),
                    ));
                }
                CommandKind::BlockStatus => {
                    let wanted =
                        |id: u32| c.contexts_wanted.is_empty() || c.contexts_wanted.contains(&id);
                    if let Some(m) = self
                        .contexts
                        .iter()
                        .find(|m| wanted(m.id) && !c.contexts_seen.contains(&m.id))
                    {
                        c.fail(CommandError::proto(format!(
                            "server sent no extents for context {}",
                            m.name
                        )));
                    }
                }
                _ => {}
            }
        }
        let result = match c.error {
            Some(e) => Err(e),
            None => Ok(()),
        };
        // The data travels with the completion.
        self.push_event(Event::Complete {
            cookie,
            result,
            data: c.data,
        });
    }

    pub(super) fn after_discard(&mut self) {
        if let Some(cookie) = self.discard_done.take() {
            self.finish_command(cookie);
        }
        let n = self.reply_header_len();
        self.expect(Expect::ReplyHeader, n);
    }

    pub(super) fn payload_advance(&mut self, n: u64) {
        let Some(p) = self.payload.as_mut() else {
            return;
        };
        let n = n.min(p.remaining);
        p.remaining -= n;
        p.buf_offset += n;
        if p.remaining > 0 {
            return;
        }
        let p = *p;
        self.payload = None;
        self.push_event(Event::ReadChunk {
            cookie: p.cookie,
            buf_offset: p.start,
            len: p.len,
            kind: ChunkKind::Data,
        });
        let n = self.reply_header_len();
        self.expect(Expect::ReplyHeader, n);
        if p.done {
            self.finish_command(p.cookie);
        }
    }

    pub(super) fn on_reply_message(&mut self, msg: &[u8]) {
        let result = match self.expect {
            Expect::ReplyHeader => self.on_reply_header(msg),
            Expect::ChunkPayload(h) => {
                self.on_chunk_payload(h, msg);
                Ok(())
            }
            Expect::OffsetDataPrefix(h) => {
                self.on_offset_data_prefix(h, msg);
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected("internal framing state")),
        };
        if let Err(e) = result {
            self.die(e);
        }
    }

    /// With extended headers every reply header is 32 bytes, but a wrong
    /// magic is known from the first 4: fail then, rather than wait for the
    /// rest of a header that a server which sent a 16-byte simple reply will
    /// never send.
    pub(super) fn check_partial_reply_header(&mut self) {
        if self.expect != Expect::ReplyHeader || !self.extended {
            return;
        }
        let Some(magic) = self.acc.get(..4) else {
            return;
        };
        let magic = u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]);
        let e = match magic {
            consts::EXTENDED_REPLY_MAGIC => return,
            consts::SIMPLE_REPLY_MAGIC => {
                ProtocolError::NotNegotiated("simple reply with extended headers")
            }
            consts::STRUCTURED_REPLY_MAGIC => {
                ProtocolError::NotNegotiated("compact structured chunk with extended headers")
            }
            found => ProtocolError::Wire(crate::wire::WireError::BadMagic {
                what: "reply",
                found: u64::from(found),
            }),
        };
        self.die(e);
    }

    fn on_reply_header(&mut self, msg: &[u8]) -> Result<(), ProtocolError> {
        if !self.extended && msg.len() == size::SIMPLE_REPLY {
            let magic = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
            if magic == consts::STRUCTURED_REPLY_MAGIC {
                self.expect(Expect::ReplyHeader, size::STRUCTURED_REPLY);
                self.acc.extend_from_slice(msg);
                return Ok(());
            }
        }
        let header = ReplyHeader::decode(msg)?;
        self.chunks_received += 1;
        let n = self.reply_header_len();
        self.expect(Expect::ReplyHeader, n);
        match header {
            ReplyHeader::Simple(s) => {
                if self.extended {
                    return Err(ProtocolError::NotNegotiated(
                        "simple reply with extended headers",
                    ));
                }
                let structured = self.structured;
                let c = self
                    .cmds
                    .get_mut(s.cookie)
                    .ok_or(ProtocolError::UnknownCookie(s.cookie))?;
                if s.error != 0 {
                    c.fail(CommandError::new(
                        errno::from_nbd(s.error),
                        format!("server replied with error {}", s.error),
                    ));
                    self.finish_command(s.cookie);
                    return Ok(());
                }
                if c.kind == CommandKind::Read {
                    if structured {
                        return Err(ProtocolError::Unexpected(
                            "simple reply with data to a read after structured replies were negotiated",
                        ));
                    }
                    c.simple_data = true;
                    if c.length > 0 {
                        self.payload = Some(PayloadState {
                            cookie: s.cookie,
                            buf_offset: 0,
                            remaining: c.length,
                            start: 0,
                            len: c.length,
                            done: true,
                        });
                        return Ok(());
                    }
                }
                self.finish_command(s.cookie);
                Ok(())
            }
            ReplyHeader::Chunk(h) => self.on_chunk_header(h),
        }
    }

    fn on_chunk_header(&mut self, h: ChunkHeader) -> Result<(), ProtocolError> {
        if !self.structured {
            return Err(ProtocolError::NotNegotiated("structured replies"));
        }
        if h.offset.is_some() != self.extended {
            return Err(ProtocolError::NotNegotiated(if self.extended {
                "compact structured chunk with extended headers"
            } else {
                "extended headers"
            }));
        }
        let extended = self.extended;
        let c = self
            .cmds
            .get_mut(h.cookie)
            .ok_or(ProtocolError::UnknownCookie(h.cookie))?;
        // Lengths first: a length we will not buffer or skip ends the connection.
        let cap = if h.chunk_type == reply_type::OFFSET_DATA && c.kind == CommandKind::Read {
            c.length.saturating_add(8).max(limits::MAX_CHUNK_METADATA)
        } else {
            limits::MAX_CHUNK_METADATA
        };
        if h.length > cap {
            return Err(ProtocolError::TooLong {
                what: chunk_name(h.chunk_type),
                len: h.length,
            });
        }
        let mut problem: Option<CommandError> = None;
        if let Some(off) = h.offset {
            if off != c.offset {
                problem = Some(CommandError::proto(format!(
                    "reply offset {off} does not match the request offset {}",
                    c.offset
                )));
            }
        }
        let is_read = c.kind == CommandKind::Read;
        let buffered = match h.chunk_type {
            reply_type::NONE => {
                if h.length != 0 {
                    problem.get_or_insert(CommandError::proto("NONE chunk with a payload"));
                }
                if !h.is_done() {
                    problem.get_or_insert(CommandError::proto("NONE chunk without the DONE flag"));
                }
                false
            }
            reply_type::OFFSET_DATA => {
                if !is_read {
                    problem.get_or_insert(CommandError::proto(
                        "data chunk for a command that is not a read",
                    ));
                } else if h.length <= 8 {
                    problem.get_or_insert(CommandError::proto("data chunk too short"));
                }
                true
            }
            reply_type::OFFSET_HOLE => {
                if !is_read {
                    problem.get_or_insert(CommandError::proto(
                        "hole chunk for a command that is not a read",
                    ));
                } else if h.length != OffsetHole::LEN as u64 {
                    problem.get_or_insert(CommandError::proto("hole chunk of the wrong length"));
                }
                true
            }
            reply_type::BLOCK_STATUS | reply_type::BLOCK_STATUS_EXT => {
                if c.kind != CommandKind::BlockStatus {
                    problem.get_or_insert(CommandError::proto(
                        "block status chunk for a command that is not block status",
                    ));
                } else if (h.chunk_type == reply_type::BLOCK_STATUS_EXT) != extended {
                    problem.get_or_insert(CommandError::proto(
                        "block status chunk of the form not negotiated",
                    ));
                } else if h.length == 0 {
                    // An empty payload is never parsed below: refuse it here,
                    // it must hold a context id and at least one extent.
                    problem.get_or_insert(CommandError::proto("empty block status chunk"));
                }
                true
            }
            t if t & reply_type::FLAG_ERROR != 0 => {
                if h.length < 6 {
                    problem.get_or_insert(CommandError::proto("error chunk too short"));
                }
                true
            }
            t => {
                problem.get_or_insert(CommandError::proto(format!("unknown chunk type {t}")));
                false
            }
        };
        if let Some(p) = problem {
            c.fail(p);
            return self.skip_chunk(h);
        }
        if !buffered || h.length == 0 {
            if h.is_done() {
                self.finish_command(h.cookie);
            }
            return Ok(());
        }
        if h.chunk_type == reply_type::OFFSET_DATA {
            self.expect(Expect::OffsetDataPrefix(h), 8);
        } else {
            self.expect(Expect::ChunkPayload(h), h.length as usize);
        }
        Ok(())
    }

    /// Skips a chunk's payload; completes the command after it if DONE.
    fn skip_chunk(&mut self, h: ChunkHeader) -> Result<(), ProtocolError> {
        self.skip(h.length, h.is_done().then_some(h.cookie));
        Ok(())
    }

    fn skip(&mut self, len: u64, done: Option<u64>) {
        self.discard_done = done;
        if len == 0 {
            self.after_discard();
        } else {
            self.discard = len;
        }
    }

    fn on_offset_data_prefix(&mut self, h: ChunkHeader, msg: &[u8]) {
        let mut off = [0u8; 8];
        off.copy_from_slice(msg);
        let off = u64::from_be_bytes(off);
        let data_len = h.length - 8;
        let Some(c) = self.cmds.get_mut(h.cookie) else {
            return self.skip(data_len, None);
        };
        let checked = match c.relative(off, data_len) {
            None => Err(CommandError::proto(format!(
                "data chunk at {off}+{data_len} outside the request {}+{}",
                c.offset, c.length
            ))),
            Some((start, end)) => match c.ranges.insert(start, end) {
                Ok(()) => Ok(start),
                Err(RangeError::Overlap) => Err(CommandError::proto(
                    "data chunk overlaps data already received",
                )),
                Err(RangeError::TooFragmented) => {
                    Err(CommandError::proto("read reply too fragmented"))
                }
            },
        };
        match checked {
            Ok(start) => {
                self.payload = Some(PayloadState {
                    cookie: h.cookie,
                    buf_offset: start,
                    remaining: data_len,
                    start,
                    len: data_len,
                    done: h.is_done(),
                });
            }
            Err(e) => {
                c.fail(e);
                self.skip(data_len, h.is_done().then_some(h.cookie));
            }
        }
    }

    fn on_chunk_payload(&mut self, h: ChunkHeader, payload: &[u8]) {
        let n = self.reply_header_len();
        self.expect(Expect::ReplyHeader, n);
        let export_size = self.export.size;
        let known_context =
            |id: u32, ctx: &[crate::wire::option::MetaContext]| ctx.iter().any(|m| m.id == id);
        let contexts = core::mem::take(&mut self.contexts);
        let mut event = None;
        if let Some(c) = self.cmds.get_mut(h.cookie) {
            let outcome: Result<(), CommandError> = match h.chunk_type {
                reply_type::OFFSET_HOLE => match OffsetHole::decode(payload) {
                    Err(e) => Err(CommandError::proto(format!("{e}"))),
                    Ok(hole) => match c.relative(hole.offset, u64::from(hole.length)) {
                        None => Err(CommandError::proto("hole chunk outside the request")),
                        Some((start, end)) => match c.ranges.insert(start, end) {
                            Ok(()) => {
                                event = Some(Event::ReadChunk {
                                    cookie: h.cookie,
                                    buf_offset: start,
                                    len: end - start,
                                    kind: ChunkKind::Hole,
                                });
                                Ok(())
                            }
                            Err(RangeError::Overlap) => Err(CommandError::proto(
                                "hole chunk overlaps data already received",
                            )),
                            Err(RangeError::TooFragmented) => {
                                Err(CommandError::proto("read reply too fragmented"))
                            }
                        },
                    },
                },
                reply_type::BLOCK_STATUS | reply_type::BLOCK_STATUS_EXT => {
                    let wide = h.chunk_type == reply_type::BLOCK_STATUS_EXT;
                    match BlockStatus::decode(payload, wide) {
                        Err(e) => Err(CommandError::proto(format!("{e}"))),
                        Ok(bs) => check_extents(
                            c,
                            &bs,
                            export_size,
                            known_context(bs.context_id, &contexts),
                        )
                        .map(|()| {
                            c.contexts_seen.push(bs.context_id);
                            event = Some(Event::Extents {
                                cookie: h.cookie,
                                context_id: bs.context_id,
                                extents: bs.extents,
                            });
                        }),
                    }
                }
                t => match ErrorChunk::decode(t, payload) {
                    Err(e) => Err(CommandError::proto(format!("{e}"))),
                    Ok(e) if e.error == 0 => {
                        Err(CommandError::proto("error chunk with error value 0"))
                    }
                    Ok(e) => {
                        let errno = errno::from_nbd(e.error);
                        if let Some(off) = e.offset {
                            // The spec allows ERROR_OFFSET for READ, WRITE, TRIM
                            // and BLOCK_STATUS; only a READ has a buffer to report on.
                            match c.relative(off, 0) {
                                Some((start, _)) if start < c.length => {
                                    if c.kind == CommandKind::Read {
                                        event = Some(Event::ReadError {
                                            cookie: h.cookie,
                                            buf_offset: start,
                                            errno,
                                        });
                                    }
                                }
                                _ => {
                                    c.fail(CommandError::proto("error offset outside the request"))
                                }
                            }
                        }
                        let msg = if e.message.is_empty() {
                            format!("server reported error {}", e.error)
                        } else {
                            format!("server reported error {}: {}", e.error, e.message)
                        };
                        Err(CommandError::new(errno, msg))
                    }
                },
            };
            if let Err(e) = outcome {
                c.fail(e);
            }
        }
        self.contexts = contexts;
        if let Some(e) = event {
            self.push_event(e);
        }
        if h.is_done() {
            self.finish_command(h.cookie);
        }
    }
}

/// Validates the extents of one block status chunk for command `c`.
fn check_extents<U>(
    c: &InFlight<U>,
    bs: &BlockStatus,
    export_size: u64,
    known: bool,
) -> Result<(), CommandError> {
    if !known {
        return Err(CommandError::proto(format!(
            "block status for unknown context id {}",
            bs.context_id
        )));
    }
    if c.contexts_seen.contains(&bs.context_id) {
        return Err(CommandError::proto(
            "block status for the same context twice",
        ));
    }
    if c.flags & cmd_flags::REQ_ONE != 0 && bs.extents.len() > 1 {
        return Err(CommandError::proto(
            "several extents in reply to a REQ_ONE request",
        ));
    }
    let mut end = c.offset;
    for e in &bs.extents {
        if e.length == 0 {
            return Err(CommandError::proto("zero-length extent"));
        }
        end = end
            .checked_add(e.length)
            .filter(|&x| x <= export_size)
            .ok_or_else(|| CommandError::proto("extents reach past the end of the export"))?;
    }
    Ok(())
}
