//! What the blocking and the tokio client share: the protocol core, the
//! table of commands in flight with their buffers, and the steps between
//! the core and a socket. Only the waiting for the socket differs between
//! the two clients.
//!
//! The core carries each command's [`Slot`] (its own buffer, or a mark
//! that the caller lends one for the call that waits for it, [`Lend`]),
//! lends it back for READ payload, holes, errors and extents, and returns it
//! on completion; [`Conn`] keeps only the completed ones until collected.

use crate::{CommandId, Error, Extent, Output};
use bytes::Bytes;
use nbd_proto::client::{
    errno, Client, Command, CommandError, CommandKind, Event, Payload, ProtocolError, RecvTarget,
    Segment, State, Step,
};
use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;

/// Size of the buffer protocol bytes are received into.
const RBUF: usize = 64 * 1024;
/// Most segments gathered for one vectored write.
pub(crate) const MAX_IOV: usize = 64;

/// A buffer the caller lends for the duration of one call, for one command.
pub(crate) enum Lend<'a> {
    /// Nothing lent.
    None,
    /// READ payload for `cookie` goes here.
    Read(u64, &'a mut [u8]),
    /// WRITE payload of `cookie` comes from here.
    Write(u64, &'a [u8]),
}

impl Lend<'_> {
    fn cookie(&self) -> Option<u64> {
        match self {
            Lend::None => None,
            Lend::Read(c, _) | Lend::Write(c, _) => Some(*c),
        }
    }
}

/// Where a command's data lives.
enum Buf {
    /// No data.
    None,
    /// The command owns its read buffer.
    Owned(Vec<u8>),
    /// The caller lends the buffer to the call that waits for it. If that
    /// call was abandoned (a dropped future), payload is discarded and the
    /// completion dropped.
    Lent,
}

/// How a command ended.
enum Outcome {
    Ok,
    /// The server (or the core) failed this command alone.
    Failed(CommandError),
    /// The connection ended under it.
    Ended,
}

/// A command in flight (carried by the core), or completed and not yet
/// collected.
pub(crate) struct Slot {
    kind: CommandKind,
    /// Export offset of the request.
    offset: u64,
    buf: Buf,
    /// BLOCK_STATUS: the context asked for.
    context: u32,
    extents: Vec<Extent>,
    /// READ: the first error chunk (offset within the request, errno).
    read_error: Option<(u64, i32)>,
    /// Stream position just past the request's last byte.
    tx_end: u64,
    done: Option<Outcome>,
}

/// How the connection ended.
enum End {
    Closed,
    Dead(ProtocolError),
}

/// The shared state of one connection.
pub(crate) struct Conn {
    pub(crate) client: Client<Slot>,
    /// Completed commands not yet collected.
    slots: HashMap<u64, Slot>,
    /// Cookies in completion order, for `wait_next` (may hold stale ones).
    completed: VecDeque<u64>,
    /// Received protocol bytes not yet consumed: `rbuf[start..end]`.
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Where payload of an abandoned read goes.
    scratch: Box<[u8]>,
    /// The last `recv_buf` was for READ payload.
    recv_payload: bool,
    /// Bytes sent so far.
    sent: u64,
    /// Negotiation events since the last opt-mode call.
    pub(crate) opt_events: Vec<Event>,
    ended: Option<End>,
}

impl Conn {
    pub(crate) fn new(config: &crate::Config) -> Self {
        Conn {
            client: Client::with_data(config.to_proto()),
            slots: HashMap::new(),
            completed: VecDeque::new(),
            rbuf: vec![0; RBUF].into_boxed_slice(),
            start: 0,
            end: 0,
            scratch: vec![0; RBUF].into_boxed_slice(),
            recv_payload: false,
            sent: 0,
            opt_events: Vec::new(),
            ended: None,
        }
    }

    pub(crate) fn can(&self, flag: u16) -> bool {
        self.client.can(flag)
    }

    /// The error every call returns once the connection ended.
    pub(crate) fn end_error(&self) -> Option<Error> {
        match &self.ended {
            None => None,
            Some(End::Closed) => Some(Error::Closed),
            Some(End::Dead(e)) => Some(Error::Connection(e.clone())),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.ended, Some(End::Closed))
    }

    /// Handshake finished: transmission, or opt mode waiting for the caller.
    pub(crate) fn settled(&self) -> bool {
        matches!(
            self.client.state(),
            State::Ready | State::Processing | State::Negotiating
        )
    }

    /// The largest request to send in one command.
    pub(crate) fn max_request(&self) -> u64 {
        self.client
            .export()
            .block_size
            .map_or(crate::DEFAULT_MAX_REQUEST, |b| u64::from(b.maximum))
            .clamp(1, crate::DEFAULT_MAX_REQUEST)
    }

    // ----- submitting -----

    fn submit(&mut self, cmd: Command, buf: Buf, context: u32) -> Result<u64, Error> {
        if let Some(e) = self.end_error() {
            return Err(e);
        }
        let (kind, offset) = (cmd.kind, cmd.offset);
        let slot = Slot {
            kind,
            offset,
            buf,
            context,
            extents: Vec::new(),
            read_error: None,
            // Set below, once the request is queued.
            tx_end: u64::MAX,
            done: None,
        };
        let cookie = self.client.submit_with(cmd, slot).map_err(|(e, _)| e)?;
        let tx_end = self.sent + self.client.pending_output() as u64;
        if let Some(s) = self.client.data_mut(cookie) {
            s.tx_end = tx_end;
        }
        Ok(cookie)
    }

    /// A READ into the caller's buffer, lent to the call that waits.
    pub(crate) fn submit_read_lent(&mut self, offset: u64, len: usize) -> Result<u64, Error> {
        let cmd = Command::new(CommandKind::Read, offset, len as u64);
        self.submit(cmd, Buf::Lent, 0)
    }

    /// A READ into a buffer the command owns.
    pub(crate) fn submit_read(&mut self, buf: Vec<u8>, offset: u64) -> Result<CommandId, Error> {
        let cmd = Command::new(CommandKind::Read, offset, buf.len() as u64);
        self.submit(cmd, Buf::Owned(buf), 0).map(CommandId)
    }

    /// A WRITE from the caller's buffer, lent to the call that waits.
    pub(crate) fn submit_write_lent(&mut self, offset: u64, len: usize) -> Result<u64, Error> {
        let mut cmd = Command::new(CommandKind::Write, offset, len as u64);
        cmd.payload = Payload::External;
        self.submit(cmd, Buf::Lent, 0)
    }

    /// A WRITE of bytes the core holds.
    pub(crate) fn submit_write(&mut self, data: Bytes, offset: u64) -> Result<CommandId, Error> {
        self.submit(Command::write(offset, data), Buf::None, 0)
            .map(CommandId)
    }

    /// FLUSH, TRIM, WRITE_ZEROES, CACHE.
    pub(crate) fn submit_simple(
        &mut self,
        kind: CommandKind,
        offset: u64,
        len: u64,
    ) -> Result<CommandId, Error> {
        self.submit(Command::new(kind, offset, len), Buf::None, 0)
            .map(CommandId)
    }

    /// BLOCK_STATUS for one context. The length is cut to the export's end
    /// and, without extended headers, to what 32 bits can say.
    pub(crate) fn submit_block_status(
        &mut self,
        offset: u64,
        len: u64,
        context: &str,
    ) -> Result<CommandId, Error> {
        let Some(id) = self.client.meta_context_id(context) else {
            return Err(Error::NoMetaContext(context.to_string()));
        };
        let mut len = len.min(self.client.export().size.saturating_sub(offset));
        if !self.client.extended_headers() {
            let min = self
                .client
                .export()
                .block_size
                .map_or(1, |b| u64::from(b.minimum.max(1)));
            len = len.min(u64::from(u32::MAX) / min * min);
        }
        if len == 0 {
            // Let the core refuse what is out of bounds; an empty range
            // at the very end is a zero-length request.
            len = 1;
        }
        self.submit(
            Command::new(CommandKind::BlockStatus, offset, len),
            Buf::None,
            id,
        )
        .map(CommandId)
    }

    // ----- collecting -----

    /// Whether the command completed (or is unknown, so waiting is over).
    pub(crate) fn is_done(&self, cookie: u64) -> bool {
        self.client.data(cookie).is_none()
    }

    /// A completed command that nobody waits for by id, if any.
    pub(crate) fn next_completed(&mut self) -> Option<u64> {
        while let Some(&c) = self.completed.front() {
            if self.slots.get(&c).is_some_and(|s| s.done.is_some()) {
                return Some(c);
            }
            self.completed.pop_front();
        }
        None
    }

    /// Whether any command is waiting that `wait_next` could return.
    pub(crate) fn has_pending_owned(&self) -> bool {
        self.client
            .commands()
            .any(|(_, s)| !matches!(s.buf, Buf::Lent))
    }

    /// Takes a completed command's result out of the table.
    pub(crate) fn take(&mut self, cookie: u64) -> Result<Output, Error> {
        let Some(slot) = self.slots.remove(&cookie) else {
            return Err(if self.client.data(cookie).is_some() {
                // Not complete (callers check first).
                Error::InvalidState("the command has not completed")
            } else {
                Error::UnknownCommand
            });
        };
        if slot.done.is_some() {
            // Keep the completion queue to commands nobody collected.
            if let Some(pos) = self.completed.iter().position(|&c| c == cookie) {
                self.completed.remove(pos);
            }
        }
        match slot.done {
            None => Err(Error::InvalidState("the command has not completed")),
            Some(Outcome::Ended) => Err(self.end_error().unwrap_or(Error::Closed)),
            Some(Outcome::Failed(e)) => Err(Error::Command {
                errno: e.errno,
                message: e.message,
                offset: slot.read_error.map(|(o, _)| slot.offset.saturating_add(o)),
            }),
            Some(Outcome::Ok) => Ok(match (slot.kind, slot.buf) {
                (CommandKind::Read, Buf::Owned(v)) => Output::Data(v),
                (CommandKind::BlockStatus, _) => Output::Extents(slot.extents),
                _ => Output::Done,
            }),
        }
    }

    // ----- sending -----

    /// Whether a request went out whole and waits for its reply: then
    /// reading cannot wait forever, so a writer that cannot go on may read.
    pub(crate) fn reply_due(&self) -> bool {
        self.client.commands().any(|(_, s)| s.tx_end <= self.sent)
    }

    /// Gathers pending output into `iov`; returns how many entries were
    /// filled, or `None` if a lent write buffer is gone (the connection is
    /// then abandoned: its stream cannot be completed).
    pub(crate) fn gather<'a>(
        &'a self,
        lend: &'a Lend<'_>,
        iov: &mut [IoSlice<'a>; MAX_IOV],
    ) -> Option<usize> {
        let mut segs: [Segment<'a, Slot>; MAX_IOV] = [Segment::Bytes(&[]); MAX_IOV];
        let n = self.client.transmit_segments(&mut segs);
        for (slot, seg) in iov.iter_mut().zip(&segs[..n]) {
            *slot = match *seg {
                Segment::Bytes(b) => IoSlice::new(b),
                Segment::External {
                    cookie,
                    buf_offset,
                    len,
                    ..
                } => {
                    let Lend::Write(c, data) = lend else {
                        return None;
                    };
                    if *c != cookie {
                        return None;
                    }
                    let start = usize::try_from(buf_offset).ok()?;
                    IoSlice::new(data.get(start..start.checked_add(len)?)?)
                }
            };
        }
        Some(n)
    }

    /// `n` bytes of the gathered output were sent.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.client.advance_transmit(n);
        self.sent += n as u64;
    }

    /// A lent write buffer went missing: nothing sane can follow.
    pub(crate) fn lost_write_buffer(&mut self) {
        self.client
            .handle_io_error("write payload no longer available");
    }

    /// The transport failed.
    pub(crate) fn io_error(&mut self, e: &std::io::Error) {
        self.client.handle_io_error(e.to_string());
    }

    // ----- receiving -----

    /// Whether received bytes wait to be consumed.
    pub(crate) fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// Feeds buffered bytes to the core, copying READ payload that arrived
    /// behind its header into the command's buffer.
    pub(crate) fn consume_buffered(&mut self, lend: &mut Lend<'_>) {
        while self.start < self.end {
            match self.client.recv_target() {
                RecvTarget::Payload { .. } => {
                    let avail = self.end - self.start;
                    let Some(t) = self.client.payload_target() else {
                        self.start = self.end;
                        break;
                    };
                    let dst = payload_dst(
                        t.data,
                        lend,
                        &mut self.scratch,
                        t.cookie,
                        t.buf_offset,
                        t.len.min(avail),
                    );
                    let n = dst.len();
                    dst.copy_from_slice(&self.rbuf[self.start..self.start + n]);
                    self.start += n;
                    self.client.handle_payload(n);
                }
                RecvTarget::Control => {
                    let n = self.client.handle_input(&self.rbuf[self.start..self.end]);
                    self.start += n;
                    if n == 0 && self.client.recv_target() == RecvTarget::Control {
                        // Dead or closed: the rest means nothing.
                        self.start = self.end;
                    }
                }
            }
        }
        self.start = 0;
        self.end = 0;
    }

    /// Where the next `recv` should put its bytes: READ payload straight
    /// into the command's buffer, protocol bytes into the receive buffer.
    /// Call only when nothing is buffered.
    pub(crate) fn recv_buf<'s>(&'s mut self, lend: &'s mut Lend<'_>) -> &'s mut [u8] {
        match self.client.payload_target() {
            Some(t) => {
                self.recv_payload = true;
                payload_dst(
                    t.data,
                    lend,
                    &mut self.scratch,
                    t.cookie,
                    t.buf_offset,
                    t.len,
                )
            }
            None => {
                self.recv_payload = false;
                &mut self.rbuf[..]
            }
        }
    }

    /// `n` bytes arrived in the buffer [`Conn::recv_buf`] gave.
    pub(crate) fn received(&mut self, n: usize, lend: &mut Lend<'_>) {
        if n == 0 {
            self.client.handle_eof();
        } else if self.recv_payload {
            self.client.handle_payload(n);
        } else {
            self.start = 0;
            self.end = n;
            self.consume_buffered(lend);
        }
    }

    // ----- events -----

    /// Applies the core's events: zeroes holes, records read errors,
    /// extents and completions, notes the end of the connection.
    pub(crate) fn drain(&mut self, lend: &mut Lend<'_>) {
        // Steps of a reply act on the command's slot, which the core lends;
        // completions and the rest wait for the second pass.
        let mut events: Vec<Event<Slot>> = Vec::new();
        while let Some(step) = self.client.poll_step() {
            match step {
                Step::ReadData { .. } => {}
                Step::ReadHole {
                    cookie,
                    buf_offset,
                    len,
                    data,
                } => {
                    let has_buffer =
                        lend.cookie() == Some(cookie) || matches!(data.buf, Buf::Owned(_));
                    if !has_buffer {
                        // A read nobody waits for any more.
                        continue;
                    }
                    // Lengths are within the request, so they fit a buffer.
                    let mut left = usize::try_from(len).unwrap_or(usize::MAX);
                    let mut at = buf_offset;
                    while left > 0 {
                        let dst = payload_dst(data, lend, &mut self.scratch, cookie, at, left);
                        if dst.is_empty() {
                            break;
                        }
                        dst.fill(0);
                        let n = dst.len();
                        left -= n;
                        at += n as u64;
                    }
                }
                Step::ReadError {
                    buf_offset,
                    errno,
                    data,
                    ..
                } => {
                    data.read_error.get_or_insert((buf_offset, errno));
                }
                Step::Extents {
                    context_id,
                    extents,
                    data: s,
                    ..
                } => {
                    if s.context == context_id && s.extents.is_empty() {
                        let mut off = s.offset;
                        for e in extents {
                            s.extents.push(Extent {
                                offset: off,
                                length: e.length,
                                flags: e.flags,
                            });
                            off = off.saturating_add(e.length);
                        }
                    }
                }
                Step::Complete {
                    cookie,
                    result,
                    data,
                } => events.push(Event::Complete {
                    cookie,
                    result,
                    data,
                }),
                Step::Event(e) => events.push(e),
            }
        }
        if events.is_empty() {
            return;
        }
        // The core completes every command in flight with ENOTCONN right
        // before it reports the end: those ended with the connection.
        let mut ended_from = events.len();
        if let Some(i) = events
            .iter()
            .position(|e| matches!(e, Event::Dead(_) | Event::Closed))
        {
            let mut j = i;
            while j > 0
                && matches!(&events[j - 1],
                    Event::Complete { result: Err(e), .. } if e.errno == errno::ENOTCONN)
            {
                j -= 1;
            }
            ended_from = j;
        }
        for (i, event) in events.into_iter().enumerate() {
            match event {
                Event::Complete {
                    cookie,
                    result,
                    data: mut slot,
                } => {
                    let outcome = match result {
                        Ok(()) => Outcome::Ok,
                        Err(_) if i >= ended_from => Outcome::Ended,
                        Err(e) => Outcome::Failed(e),
                    };
                    let lent = matches!(slot.buf, Buf::Lent);
                    if lent && lend.cookie() != Some(cookie) {
                        // Its caller gave up waiting: nobody wants it.
                        continue;
                    }
                    if !lent {
                        self.completed.push_back(cookie);
                    }
                    slot.done = Some(outcome);
                    self.slots.insert(cookie, slot);
                }
                Event::Dead(e) => self.ended = Some(End::Dead(e)),
                Event::Closed => {
                    self.ended.get_or_insert(End::Closed);
                }
                Event::StartTls => self
                    .client
                    .tls_failed("TLS is not implemented by nbd-client"),
                other => self.opt_events.push(strip(other)),
            }
        }
    }
}

/// A negotiation event, which carries no command data.
fn strip(e: Event<Slot>) -> Event {
    match e {
        Event::Negotiating => Event::Negotiating,
        Event::StartTls => Event::StartTls,
        Event::Export(x) => Event::Export(x),
        Event::MetaContext(x) => Event::MetaContext(x),
        Event::Info(x) => Event::Info(x),
        Event::OptionDone { option, result } => Event::OptionDone { option, result },
        Event::Ready => Event::Ready,
        Event::Closed => Event::Closed,
        Event::Dead(why) => Event::Dead(why),
        // Command events are steps (see drain), never kept.
        _ => Event::Ready,
    }
}

/// The part of command `cookie`'s buffer at `buf_offset`, at most `len`
/// bytes: the lent buffer, the command's own, or (for a read nobody waits
/// for any more) scratch space. Never empty unless `len` is 0.
fn payload_dst<'s>(
    slot: &'s mut Slot,
    lend: &'s mut Lend<'_>,
    scratch: &'s mut [u8],
    cookie: u64,
    buf_offset: u64,
    len: usize,
) -> &'s mut [u8] {
    let range = usize::try_from(buf_offset)
        .ok()
        .and_then(|s| Some(s..s.checked_add(len)?));
    if let Some(range) = range {
        match lend {
            Lend::Read(c, buf) if *c == cookie => {
                if let Some(dst) = buf.get_mut(range.clone()) {
                    return dst;
                }
            }
            _ => {}
        }
        if let Buf::Owned(v) = &mut slot.buf {
            if let Some(dst) = v.get_mut(range) {
                return dst;
            }
        }
    }
    let n = len.min(scratch.len());
    &mut scratch[..n]
}

impl Conn {
    /// Whether a completed command waits for `wait_next`.
    pub(crate) fn has_buffered_completion(&self) -> bool {
        self.completed
            .iter()
            .any(|c| self.slots.get(c).is_some_and(|s| s.done.is_some()))
    }
}

/// The outcome of an opt-mode call from the events it produced: success
/// once in transmission, else the server's refusal if there was one.
pub(crate) fn option_result(conn: &Conn, events: Vec<Event>) -> Result<Vec<Event>, Error> {
    if matches!(conn.client.state(), State::Ready | State::Processing) {
        return Ok(events);
    }
    let refusal = events.iter().rev().find_map(|e| match e {
        Event::OptionDone { result: Err(f), .. } => Some(f.clone()),
        _ => None,
    });
    match refusal {
        Some(f) => Err(Error::Option(f)),
        None => Ok(events),
    }
}

/// The exports an `NBD_OPT_LIST` produced.
pub(crate) fn exports(events: Vec<Event>) -> Vec<crate::ExportEntry> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Export(x) => Some(crate::ExportEntry {
                name: x.name,
                description: x.description,
            }),
            _ => None,
        })
        .collect()
}

/// The context names an `NBD_OPT_LIST_META_CONTEXT` produced.
pub(crate) fn contexts(events: Vec<Event>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::MetaContext(m) => Some(m.name),
            _ => None,
        })
        .collect()
}
