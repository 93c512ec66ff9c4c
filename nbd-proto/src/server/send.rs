//! Output: encoding of every server message into the output buffer.
//!
//! Encoders that can fail check before writing, so a failed call leaves the
//! output buffer as it was.

use super::{Phase, ServerCodec};
use crate::consts::{opt, rep, reply_flags, reply_type, size};
use crate::wire::handshake::ExportNameReply;
use crate::wire::option::OptionReply;
use crate::wire::reply::{BlockStatus, ChunkHeader, ErrorChunk, OffsetHole, SimpleReply};
use crate::wire::WireError;
use bytes::{BufMut, Bytes};

fn done_flag(done: bool) -> u16 {
    if done {
        reply_flags::DONE
    } else {
        0
    }
}

fn too_big(what: &'static str, len: usize) -> WireError {
    WireError::BadValue {
        what,
        value: len as u64,
    }
}

impl ServerCodec {
    /// Whether output is waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes all pending output.
    pub fn take_output(&mut self) -> Bytes {
        self.output.split().freeze()
    }

    /// The pending output, for a driver that writes it in pieces; report what
    /// was written with [`advance_output`](Self::advance_output).
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Discards the first `n` bytes of pending output (all of it if `n` is
    /// larger).
    pub fn advance_output(&mut self, n: usize) {
        let n = n.min(self.output.len());
        let _ = self.output.split_to(n);
    }

    /// Appends arbitrary bytes, for servers that misbehave on purpose. The
    /// phase is not changed.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.output.put_slice(bytes);
    }

    /// Appends an option reply (header and payload) answering `option`.
    ///
    /// An ACK to `NBD_OPT_GO` enters transmission, an ACK to
    /// `NBD_OPT_STRUCTURED_REPLY` turns on structured replies, an ACK to
    /// `NBD_OPT_EXTENDED_HEADERS` turns on extended headers. Any final reply
    /// (ACK or error) ends [`awaiting_reply`](Self::awaiting_reply). Fails,
    /// appending nothing, if the payload does not fit the 32-bit length.
    pub fn send_option_reply(&mut self, option: u32, reply: &OptionReply) -> Result<(), WireError> {
        let before = self.output.len();
        reply.encode(option, &mut self.output);
        let payload = (self.output.len() - before).saturating_sub(size::OPTION_REPLY_HEADER);
        if u32::try_from(payload).is_err() {
            self.output.truncate(before);
            return Err(too_big("option reply length", payload));
        }
        let is_final =
            matches!(reply, OptionReply::Ack) || reply.reply_type() & rep::FLAG_ERROR != 0;
        if is_final {
            self.awaiting = None;
        }
        if matches!(reply, OptionReply::Ack) {
            match option {
                opt::GO => self.phase = Phase::Transmission,
                opt::STRUCTURED_REPLY => self.structured = true,
                opt::EXTENDED_HEADERS => {
                    self.extended = true;
                    self.structured = true;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Appends the reply to `NBD_OPT_EXPORT_NAME` (with 124 zero bytes unless
    /// `NO_ZEROES` was agreed) and enters transmission.
    pub fn send_export_name_reply(&mut self, size: u64, transmission_flags: u16) {
        ExportNameReply {
            size,
            transmission_flags,
        }
        .encode(&mut self.output, !self.no_zeroes);
        self.phase = Phase::Transmission;
        self.awaiting = None;
    }

    /// Appends a simple reply and, for a successful READ, its data. Nothing
    /// stops a caller from sending one when structured replies or extended
    /// headers forbid it: misbehaving servers need to.
    pub fn send_simple_reply(&mut self, cookie: u64, error: u32, data: &[u8]) {
        SimpleReply { error, cookie }.encode(&mut self.output);
        self.output.put_slice(data);
    }

    /// Appends a chunk header of the negotiated form (extended headers carry
    /// `req_offset`, structured ones drop it) announcing `length` bytes.
    fn chunk_header(
        &mut self,
        flags: u16,
        chunk_type: u16,
        cookie: u64,
        req_offset: u64,
        length: usize,
    ) -> Result<(), WireError> {
        ChunkHeader {
            flags,
            chunk_type,
            cookie,
            offset: self.extended.then_some(req_offset),
            length: length as u64,
        }
        .encode(&mut self.output)
    }

    /// Appends a chunk of any type with a raw payload; the header form follows
    /// [`extended_headers`](Self::extended_headers). Fails, appending nothing,
    /// if a structured header cannot carry the length.
    pub fn send_chunk(
        &mut self,
        flags: u16,
        chunk_type: u16,
        cookie: u64,
        req_offset: u64,
        payload: &[u8],
    ) -> Result<(), WireError> {
        self.chunk_header(flags, chunk_type, cookie, req_offset, payload.len())?;
        self.output.put_slice(payload);
        Ok(())
    }

    /// Appends an `NBD_REPLY_TYPE_NONE` chunk (the spec wants `done`).
    pub fn send_none(&mut self, cookie: u64, req_offset: u64, done: bool) -> Result<(), WireError> {
        self.send_chunk(done_flag(done), reply_type::NONE, cookie, req_offset, &[])
    }

    /// Appends an `NBD_REPLY_TYPE_OFFSET_DATA` chunk: `data` read at
    /// `data_offset`, answering the request at `req_offset`.
    pub fn send_offset_data(
        &mut self,
        cookie: u64,
        req_offset: u64,
        data_offset: u64,
        data: &[u8],
        done: bool,
    ) -> Result<(), WireError> {
        let len = data
            .len()
            .checked_add(8)
            .ok_or_else(|| too_big("data chunk length", data.len()))?;
        let flags = done_flag(done);
        self.chunk_header(flags, reply_type::OFFSET_DATA, cookie, req_offset, len)?;
        self.output.put_u64(data_offset);
        self.output.put_slice(data);
        Ok(())
    }

    /// Appends an `NBD_REPLY_TYPE_OFFSET_HOLE` chunk.
    pub fn send_offset_hole(
        &mut self,
        cookie: u64,
        req_offset: u64,
        hole_offset: u64,
        hole_length: u32,
        done: bool,
    ) -> Result<(), WireError> {
        let flags = done_flag(done);
        self.chunk_header(
            flags,
            reply_type::OFFSET_HOLE,
            cookie,
            req_offset,
            OffsetHole::LEN,
        )?;
        OffsetHole {
            offset: hole_offset,
            length: hole_length,
        }
        .encode(&mut self.output);
        Ok(())
    }

    /// Appends a block status chunk: `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` with
    /// extended headers, `NBD_REPLY_TYPE_BLOCK_STATUS` otherwise. Fails,
    /// appending nothing, if a compact descriptor cannot hold a length or
    /// flags value (send those with [`send_chunk`](Self::send_chunk)).
    pub fn send_block_status(
        &mut self,
        cookie: u64,
        req_offset: u64,
        status: &BlockStatus,
        done: bool,
    ) -> Result<(), WireError> {
        let wide = self.extended;
        if wide {
            if u32::try_from(status.extents.len()).is_err() {
                return Err(too_big(
                    "block status descriptor count",
                    status.extents.len(),
                ));
            }
        } else {
            for e in &status.extents {
                for (what, v) in [("extent length", e.length), ("extent flags", e.flags)] {
                    if u32::try_from(v).is_err() {
                        return Err(WireError::BadValue { what, value: v });
                    }
                }
            }
        }
        let chunk_type = if wide {
            reply_type::BLOCK_STATUS_EXT
        } else {
            reply_type::BLOCK_STATUS
        };
        let len = status.encoded_len(wide);
        self.chunk_header(done_flag(done), chunk_type, cookie, req_offset, len)?;
        status.encode(wide, &mut self.output);
        Ok(())
    }

    /// Appends an error chunk: `NBD_REPLY_TYPE_ERROR_OFFSET` when
    /// `error.offset` is set, `NBD_REPLY_TYPE_ERROR` otherwise. Fails,
    /// appending nothing, if the message is longer than 65535 bytes.
    pub fn send_error(
        &mut self,
        cookie: u64,
        req_offset: u64,
        error: &ErrorChunk,
        done: bool,
    ) -> Result<(), WireError> {
        if u16::try_from(error.message.len()).is_err() {
            return Err(too_big("error message length", error.message.len()));
        }
        let chunk_type = if error.offset.is_some() {
            reply_type::ERROR_OFFSET
        } else {
            reply_type::ERROR
        };
        let len = error.encoded_len();
        self.chunk_header(done_flag(done), chunk_type, cookie, req_offset, len)?;
        error.encode(&mut self.output);
        Ok(())
    }
}
