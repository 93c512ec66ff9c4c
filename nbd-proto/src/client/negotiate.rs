//! Handshake and option haggling: the greeting, automatic negotiation in
//! libnbd's order, and the step-by-step options of opt mode.

use super::{Client, Event, OptionFailure, Phase, ProtocolError, SubmitError, TlsMode};
use crate::consts::{client_flags, handshake_flags, info, limits, opt, rep, size};
use crate::wire::handshake::{
    ClientFlags, ExportNameReply, GreetingKind, NewstyleGreeting, OldstyleGreeting,
};
use crate::wire::option::{opt_name, Info, OptionReply, OptionReplyHeader, OptionRequest};
use crate::wire::reply::ChunkHeader;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// What the bytes being accumulated are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    GreetingPrefix,
    GreetingRest(GreetingKind),
    OptionReplyHeader,
    OptionReplyPayload(OptionReplyHeader),
    ExportNameReply,
    /// A reply header (16 or 32 bytes first; 20 for a structured chunk).
    ReplyHeader,
    /// The buffered payload of a chunk.
    ChunkPayload(ChunkHeader),
    /// The 8-byte offset that starts an `OFFSET_DATA` payload.
    OffsetDataPrefix(ChunkHeader),
}

impl Expect {
    pub(super) fn is_transmission(self) -> bool {
        matches!(
            self,
            Expect::ReplyHeader | Expect::ChunkPayload(_) | Expect::OffsetDataPrefix(_)
        )
    }
}

/// One option the negotiation plan still has to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    StartTls,
    ExtendedHeaders,
    /// Automatic: skipped when extended headers or structured replies are
    /// already in force.
    StructuredReply,
    /// Opt mode: sent whatever is already negotiated.
    OptStructuredReply,
    /// Select the configured contexts automatically: skipped when
    /// `request_meta_context` is off; otherwise the contexts selected so far
    /// are forgotten, and the request is skipped without structured replies
    /// or with no contexts configured.
    SetMeta,
    /// Select explicitly given contexts.
    SetMetaQueries(Vec<String>),
    ListMeta(Vec<String>),
    List,
    Info,
    Go,
    ExportName,
    Abort,
    /// Opt mode: wait for the caller.
    Pause,
}

/// The option in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) option: u32,
    /// Contexts gathered by a SET_META_CONTEXT in flight.
    pub(super) contexts: Vec<crate::wire::option::MetaContext>,
}

/// Most metadata contexts one `NBD_OPT_SET_META_CONTEXT` may select.
const MAX_CONTEXTS: usize = 1024;

/// Upper bound of a reply payload, by reply type, checked at the header so
/// that nothing large is ever buffered.
fn max_reply_payload(reply_type: u32) -> u32 {
    let s = limits::MAX_STRING as u32;
    match reply_type {
        rep::ACK => 0,
        rep::SERVER => 4 + 2 * s,
        rep::INFO => 2 + s,
        rep::META_CONTEXT => 4 + s,
        t if t & rep::FLAG_ERROR != 0 => s,
        _ => 0,
    }
}

impl<U> Client<U> {
    pub(super) fn on_negotiation_message(&mut self, msg: &[u8]) {
        let result = match self.expect {
            Expect::GreetingPrefix => self.on_greeting_prefix(msg),
            Expect::GreetingRest(kind) => self.on_greeting(kind, msg),
            Expect::OptionReplyHeader => self.on_option_reply_header(msg),
            Expect::OptionReplyPayload(h) => self.on_option_reply(h, msg),
            Expect::ExportNameReply => self.on_export_name_reply(msg),
            _ => Err(ProtocolError::Unexpected("internal framing state")),
        };
        if let Err(e) = result {
            self.die(e);
        }
    }

    fn on_greeting_prefix(&mut self, msg: &[u8]) -> Result<(), ProtocolError> {
        let prefix: &[u8; size::GREETING_PREFIX] = msg
            .try_into()
            .map_err(|_| ProtocolError::Unexpected("greeting length"))?;
        let kind = GreetingKind::decode(prefix)?;
        // Keep the prefix: the greeting decoders want the whole message.
        self.expect(Expect::GreetingRest(kind), kind.greeting_len());
        self.acc.extend_from_slice(msg);
        Ok(())
    }

    fn on_greeting(&mut self, kind: GreetingKind, msg: &[u8]) -> Result<(), ProtocolError> {
        self.greeting = Some(kind);
        self.chunks_received += 1;
        match kind {
            GreetingKind::Oldstyle => {
                let g = OldstyleGreeting::decode(msg)?;
                if self.config.tls == TlsMode::Require {
                    return Err(ProtocolError::TlsRequired(
                        "the server uses oldstyle negotiation",
                    ));
                }
                self.set_export(g.size, g.transmission_flags())?;
                self.enter_transmission();
                Ok(())
            }
            GreetingKind::Newstyle => {
                let g = NewstyleGreeting::decode(msg)?;
                self.server_flags = g.handshake_flags;
                self.fixed_newstyle = g.handshake_flags & handshake_flags::FIXED_NEWSTYLE != 0;
                let mut flags = 0;
                if self.fixed_newstyle {
                    flags |= self.config.handshake_flags & client_flags::FIXED_NEWSTYLE;
                }
                if g.handshake_flags & handshake_flags::NO_ZEROES != 0 {
                    flags |= self.config.handshake_flags & client_flags::NO_ZEROES;
                }
                let fixed = flags & client_flags::FIXED_NEWSTYLE != 0;
                if !fixed && self.config.tls == TlsMode::Require {
                    return Err(ProtocolError::TlsRequired(
                        "the server does not support fixed newstyle negotiation",
                    ));
                }
                self.sent_client_flags = flags;
                self.no_zeroes = flags & client_flags::NO_ZEROES != 0;
                self.fixed_newstyle = fixed;
                self.tx.push_with(|b| ClientFlags(flags).encode(b));
                self.phase = super::Phase::Options;
                self.plan.clear();
                if fixed {
                    if self.config.tls != TlsMode::Disable {
                        self.plan.push_back(Step::StartTls);
                    }
                    self.plan_after_tls();
                } else if self.config.opt_mode {
                    // As libnbd: opt mode waits for the caller even here;
                    // only nbd_opt_go (as NBD_OPT_EXPORT_NAME) and
                    // nbd_opt_abort can follow.
                    self.plan.push_back(Step::Pause);
                } else {
                    self.plan.push_back(Step::ExportName);
                }
                self.advance_plan();
                Ok(())
            }
        }
    }

    /// The automatic steps that follow STARTTLS (or the greeting).
    fn plan_after_tls(&mut self) {
        if self.config.request_extended_headers {
            self.plan.push_back(Step::ExtendedHeaders);
        }
        if self.config.request_structured_replies {
            self.plan.push_back(Step::StructuredReply);
        }
        if self.config.opt_mode {
            self.plan.push_back(Step::Pause);
        } else {
            self.plan.push_back(Step::SetMeta);
            self.plan.push_back(Step::Go);
        }
    }

    /// Sends the next applicable option of the plan, or pauses.
    pub(super) fn advance_plan(&mut self) {
        if self.phase != Phase::Options || self.current.is_some() {
            return;
        }
        while let Some(step) = self.plan.pop_front() {
            let req = match step {
                Step::Pause => {
                    self.paused = true;
                    continue;
                }
                Step::StartTls => OptionRequest::StartTls,
                Step::ExtendedHeaders => OptionRequest::ExtendedHeaders,
                Step::StructuredReply => {
                    if self.structured {
                        continue;
                    }
                    OptionRequest::StructuredReply
                }
                Step::OptStructuredReply => OptionRequest::StructuredReply,
                Step::SetMeta => {
                    if !self.config.request_meta_context {
                        continue;
                    }
                    self.contexts.clear();
                    self.meta_valid = false;
                    if !self.structured || self.config.request_meta_contexts.is_empty() {
                        self.meta_skipped = true;
                        continue;
                    }
                    self.meta_skipped = false;
                    OptionRequest::SetMetaContext {
                        name: self.config.export_name.clone(),
                        queries: self.config.request_meta_contexts.clone(),
                    }
                }
                Step::SetMetaQueries(queries) => {
                    self.contexts.clear();
                    self.meta_valid = false;
                    self.meta_skipped = false;
                    OptionRequest::SetMetaContext {
                        name: self.config.export_name.clone(),
                        queries,
                    }
                }
                Step::ListMeta(queries) => OptionRequest::ListMetaContext {
                    name: self.config.export_name.clone(),
                    queries,
                },
                Step::List => OptionRequest::List,
                Step::Info | Step::Go => {
                    self.export = super::ExportInfo::default();
                    self.got_export_info = false;
                    let mut requests = Vec::new();
                    if self.config.full_info {
                        requests.push(info::NAME);
                        requests.push(info::DESCRIPTION);
                    }
                    if self.config.request_block_size {
                        requests.push(info::BLOCK_SIZE);
                    }
                    let name = self.config.export_name.clone();
                    if step == Step::Info {
                        OptionRequest::Info { name, requests }
                    } else {
                        OptionRequest::Go { name, requests }
                    }
                }
                Step::ExportName => {
                    self.chunks_sent += 1;
                    self.tx.push_with(|b| {
                        OptionRequest::ExportName(self.config.export_name.clone()).encode(b)
                    });
                    self.phase = Phase::ExportName;
                    let len = if self.no_zeroes {
                        size::EXPORT_NAME_REPLY
                    } else {
                        size::EXPORT_NAME_REPLY + size::EXPORT_NAME_ZEROES
                    };
                    self.expect(Expect::ExportNameReply, len);
                    return;
                }
                Step::Abort => OptionRequest::Abort,
            };
            self.send_option(req);
            return;
        }
        if self.paused {
            self.push_event(Event::Negotiating);
        }
    }

    fn send_option(&mut self, req: OptionRequest) {
        self.chunks_sent += 1;
        self.tx.push_with(|b| req.encode(b));
        self.current = Some(Pending {
            option: req.code(),
            contexts: Vec::new(),
        });
        self.expect(Expect::OptionReplyHeader, size::OPTION_REPLY_HEADER);
    }

    fn on_option_reply_header(&mut self, msg: &[u8]) -> Result<(), ProtocolError> {
        let arr: &[u8; size::OPTION_REPLY_HEADER] = msg
            .try_into()
            .map_err(|_| ProtocolError::Unexpected("option reply length"))?;
        let h = OptionReplyHeader::decode(arr)?;
        let want = self.current.as_ref().map_or(0, |p| p.option);
        if want == opt::STARTTLS && self.config.tls == TlsMode::Require {
            // No downgrade: anything but a plain acknowledgement or an error
            // reply to this very option means there will be no TLS.
            let ack = h.reply_type == rep::ACK && h.length == 0;
            if h.option != want || !(ack || h.is_error()) {
                return Err(ProtocolError::TlsRequired(
                    "the server answered NBD_OPT_STARTTLS with neither an \
                     acknowledgement nor an error",
                ));
            }
        }
        if h.option != want {
            return Err(ProtocolError::WrongOption {
                want,
                got: h.option,
            });
        }
        if h.length > max_reply_payload(h.reply_type) {
            return Err(ProtocolError::TooLong {
                what: "option reply",
                len: u64::from(h.length),
            });
        }
        if h.length == 0 {
            self.on_option_reply(h, &[])
        } else {
            self.expect(Expect::OptionReplyPayload(h), h.length as usize);
            Ok(())
        }
    }

    fn on_option_reply(
        &mut self,
        h: OptionReplyHeader,
        payload: &[u8],
    ) -> Result<(), ProtocolError> {
        let reply = OptionReply::decode(&h, payload)?;
        self.expect(Expect::OptionReplyHeader, size::OPTION_REPLY_HEADER);
        let option = h.option;
        if let OptionReply::Error {
            reply_type,
            message,
        } = reply
        {
            let failure = OptionFailure {
                reply_type,
                message,
            };
            return self.on_option_error(option, failure);
        }
        match (option, reply) {
            (opt::ABORT, _) => {
                self.current = None;
                self.close();
            }
            (opt::STARTTLS, OptionReply::Ack) => {
                if self.tls_negotiated {
                    // A second TLS session inside the first is not
                    // something a client can follow.
                    return Err(ProtocolError::Unexpected(
                        "the server accepted NBD_OPT_STARTTLS twice",
                    ));
                }
                self.current = None;
                self.phase = Phase::AwaitTls;
                self.push_event(Event::StartTls);
            }
            (opt::EXTENDED_HEADERS, OptionReply::Ack) => {
                self.extended = true;
                self.structured = true;
                self.option_done(option, Ok(()));
            }
            (opt::STRUCTURED_REPLY, OptionReply::Ack) => {
                self.structured = true;
                self.option_done(option, Ok(()));
            }
            (opt::SET_META_CONTEXT, OptionReply::MetaContext(m)) => {
                if let Some(p) = self.current.as_mut() {
                    // The check below is quadratic: bound the count first.
                    if p.contexts.len() >= MAX_CONTEXTS {
                        return Err(ProtocolError::TooLong {
                            what: "metadata context list",
                            len: p.contexts.len() as u64 + 1,
                        });
                    }
                    if p.contexts.iter().any(|c| c.id == m.id) {
                        return Err(ProtocolError::Unexpected("duplicate metadata context id"));
                    }
                    p.contexts.push(m.clone());
                }
                self.push_event(Event::MetaContext(m));
            }
            (opt::SET_META_CONTEXT, OptionReply::Ack) => {
                self.meta_valid = true;
                self.contexts = self
                    .current
                    .as_mut()
                    .map(|p| core::mem::take(&mut p.contexts))
                    .unwrap_or_default();
                self.option_done(option, Ok(()));
            }
            (opt::LIST_META_CONTEXT, OptionReply::MetaContext(m)) => {
                self.push_event(Event::MetaContext(m));
            }
            (opt::LIST, OptionReply::Server(s)) => self.push_event(Event::Export(s)),
            (opt::LIST | opt::LIST_META_CONTEXT, OptionReply::Ack) => {
                self.option_done(option, Ok(()))
            }
            (opt::INFO | opt::GO, OptionReply::Info(i)) => {
                match &i {
                    Info::Export {
                        size,
                        transmission_flags,
                    } => self.set_export(*size, *transmission_flags)?,
                    Info::Name(n) => self.export.name = Some(n.clone()),
                    Info::Description(d) => self.export.description = Some(d.clone()),
                    Info::BlockSize(b) => self.export.block_size = Some(*b),
                    Info::Unknown { .. } => return Ok(()),
                }
                self.push_event(Event::Info(i));
            }
            (opt::INFO | opt::GO, OptionReply::Ack) => {
                if !self.got_export_info {
                    return Err(ProtocolError::Unexpected(
                        "option acknowledged without NBD_INFO_EXPORT",
                    ));
                }
                if self.meta_skipped {
                    self.meta_skipped = false;
                    self.meta_valid = true;
                }
                if option == opt::GO {
                    self.current = None;
                    self.push_event(Event::OptionDone {
                        option,
                        result: Ok(()),
                    });
                    self.enter_transmission();
                } else {
                    self.option_done(option, Ok(()));
                }
            }
            _ => return Err(ProtocolError::Unexpected("option reply type")),
        }
        Ok(())
    }

    fn on_option_error(
        &mut self,
        option: u32,
        failure: OptionFailure,
    ) -> Result<(), ProtocolError> {
        if matches!(option, opt::INFO | opt::GO) {
            // What the server said about the export before refusing it does
            // not describe an export the caller can use.
            self.export = super::ExportInfo::default();
            self.got_export_info = false;
        }
        match option {
            opt::ABORT => {
                self.current = None;
                self.close();
                return Ok(());
            }
            opt::STARTTLS if self.config.tls == TlsMode::Require => {
                return Err(ProtocolError::TlsRequired(
                    "the server refused NBD_OPT_STARTTLS",
                ));
            }
            opt::SET_META_CONTEXT => self.contexts.clear(),
            opt::GO if failure.reply_type == rep::ERR_UNSUP => {
                // Old servers: fall back to NBD_OPT_EXPORT_NAME.
                self.current = None;
                self.plan.push_front(Step::ExportName);
                self.advance_plan();
                return Ok(());
            }
            opt::GO | opt::INFO
                if failure.reply_type == rep::ERR_TLS_REQD
                    && self.config.tls == TlsMode::Require => {}
            opt::GO if !self.config.opt_mode => {
                return Err(ProtocolError::Refused {
                    option: opt_name(option),
                    errno: failure.errno(),
                    message: failure.to_string(),
                });
            }
            _ => {}
        }
        if failure.reply_type == rep::ERR_SHUTDOWN {
            // The spec asks for a soft disconnect.
            self.current = None;
            self.plan.clear();
            self.push_event(Event::OptionDone {
                option,
                result: Err(failure),
            });
            self.send_option(OptionRequest::Abort);
            return Ok(());
        }
        self.option_done(option, Err(failure));
        Ok(())
    }

    fn option_done(&mut self, option: u32, result: Result<(), OptionFailure>) {
        self.current = None;
        self.push_event(Event::OptionDone { option, result });
        self.advance_plan();
    }

    fn on_export_name_reply(&mut self, msg: &[u8]) -> Result<(), ProtocolError> {
        let r = ExportNameReply::decode(msg)?;
        self.set_export(r.size, r.transmission_flags)?;
        if self.config.opt_mode {
            self.push_event(Event::OptionDone {
                option: opt::GO,
                result: Ok(()),
            });
        }
        self.enter_transmission();
        Ok(())
    }

    fn set_export(&mut self, size: u64, flags: u16) -> Result<(), ProtocolError> {
        // A size above INT64_MAX is kept as announced: libnbd connects and
        // lets nbd_get_size report EOVERFLOW.
        self.export.size = size;
        self.export.flags = flags;
        self.got_export_info = true;
        Ok(())
    }

    fn enter_transmission(&mut self) {
        self.phase = Phase::Transmission;
        self.current = None;
        self.plan.clear();
        self.paused = false;
        let n = self.reply_header_len();
        self.expect(Expect::ReplyHeader, n);
        self.push_event(Event::Ready);
    }

    pub(super) fn aborting(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|p| p.option == opt::ABORT)
    }

    /// Once `NBD_OPT_ABORT` is written the session is over: the server's
    /// reply is optional (the spec lets either side close), and libnbd
    /// 1.24 closes without waiting for it.
    pub(super) fn close_after_abort_sent(&mut self) {
        if self.phase == Phase::Options && self.aborting() && self.tx.is_empty() {
            self.close();
        }
    }

    // ----- TLS -----

    /// Reports that the TLS handshake the client asked for with
    /// [`Event::StartTls`] succeeded. Everything negotiated before is forgotten,
    /// as the spec requires, and negotiation continues over TLS.
    pub fn tls_established(&mut self) {
        if self.phase != Phase::AwaitTls {
            return;
        }
        self.tls_negotiated = true;
        self.structured = false;
        self.extended = false;
        self.contexts.clear();
        self.meta_valid = false;
        self.meta_skipped = false;
        self.export = super::ExportInfo::default();
        self.got_export_info = false;
        self.phase = Phase::Options;
        self.push_event(Event::OptionDone {
            option: opt::STARTTLS,
            result: Ok(()),
        });
        if self.plan.is_empty() && !self.paused {
            self.plan_after_tls();
        }
        self.advance_plan();
        self.update_direction();
    }

    /// Reports that the TLS handshake failed; the connection is dead.
    pub fn tls_failed(&mut self, message: impl Into<String>) {
        self.die(ProtocolError::TlsFailed(message.into()));
        self.update_direction();
    }

    // ----- opt mode -----

    fn queue_opt(&mut self, steps: &[Step]) -> Result<(), SubmitError> {
        if self.state() != super::State::Negotiating {
            return Err(SubmitError::InvalidState("the handle is not negotiating"));
        }
        if !self.fixed_newstyle {
            // Without fixed newstyle the only option a server understands
            // is NBD_OPT_EXPORT_NAME, which ends negotiation; libnbd sends
            // nothing to abort (the connection is simply dropped).
            match steps.last() {
                Some(Step::Go) => self.plan.push_back(Step::ExportName),
                Some(Step::Abort) => self.die(ProtocolError::Shutdown),
                _ => return Err(SubmitError::NotFixedNewstyle),
            }
            self.advance_plan();
            self.update_direction();
            return Ok(());
        }
        self.plan.extend(steps.iter().cloned());
        self.advance_plan();
        self.update_direction();
        Ok(())
    }

    /// Opt mode: select the configured metadata contexts, then `NBD_OPT_GO`.
    pub fn opt_go(&mut self) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::SetMeta, Step::Go])
    }

    /// Opt mode: select the configured metadata contexts, then `NBD_OPT_INFO`.
    pub fn opt_info(&mut self) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::SetMeta, Step::Info])
    }

    /// Opt mode: `NBD_OPT_LIST`; each export arrives as [`Event::Export`].
    pub fn opt_list(&mut self) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::List])
    }

    /// Opt mode: `NBD_OPT_LIST_META_CONTEXT` with these queries.
    pub fn opt_list_meta_context(&mut self, queries: Vec<String>) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::ListMeta(queries)])
    }

    /// Opt mode: `NBD_OPT_SET_META_CONTEXT` with these names.
    pub fn opt_set_meta_context(&mut self, queries: Vec<String>) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::SetMetaQueries(queries)])
    }

    /// Opt mode: `NBD_OPT_STRUCTURED_REPLY`, sent even when structured
    /// replies (or extended headers) are already in force.
    pub fn opt_structured_reply(&mut self) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::OptStructuredReply])
    }

    /// Opt mode: `NBD_OPT_EXTENDED_HEADERS`.
    pub fn opt_extended_headers(&mut self) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::ExtendedHeaders])
    }

    /// Opt mode: `NBD_OPT_STARTTLS`. It is sent even when TLS is already
    /// up (servers refuse it then); a server that accepts it a second time
    /// kills the connection.
    pub fn opt_starttls(&mut self) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::StartTls])
    }

    /// Forgets the metadata contexts selected so far (the export they were
    /// selected for is no longer the one asked for).
    pub fn forget_meta_contexts(&mut self) {
        self.contexts.clear();
        self.meta_valid = false;
        self.meta_skipped = false;
    }

    /// Opt mode: `NBD_OPT_ABORT`; the connection closes after the reply.
    pub fn opt_abort(&mut self) -> Result<(), SubmitError> {
        self.queue_opt(&[Step::Abort])
    }
}
