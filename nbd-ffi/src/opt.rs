//! Option negotiation ("opt mode"): with `nbd_set_opt_mode` on, connecting
//! stops in the negotiating state and the caller issues handshake options
//! itself (`nbd_opt_list`, `nbd_opt_info`, `nbd_opt_go`, ...).
//!
//! The exports are generated from `api/opt.api`; this module implements
//! them. Each `nbd_opt_*` issues its option on the engine and, in the
//! synchronous form, polls until the server's final reply; the
//! `nbd_aio_opt_*` forms return at once and report through their
//! completion callback, whose `*error` is 0 when the server agreed and an
//! errno when it refused (`ENOTSUP`, or `EINVAL` for a request the server
//! called invalid).

pub use crate::exports::opt::*;

use crate::callbacks::{CompletionCallback, ContextCallback, ListCallback, Owned};
use crate::errors::{Cause, Error};
use crate::handle::{HandleInner, Locked};
use crate::hooks::OptCallbacks;
use crate::state::State;
use nbd_proto::consts::opt;
use std::ffi::{c_int, CStr};

/// The opt-mode requests.
#[derive(Clone, PartialEq, Eq)]
enum Request {
    Go,
    Abort,
    List,
    Info,
    StartTls,
    ExtendedHeaders,
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT` with these queries.
    ListMetaContext(Vec<String>),
    /// `NBD_OPT_SET_META_CONTEXT` with these queries.
    SetMetaContext(Vec<String>),
}

impl Request {
    /// The option whose reply ends the request.
    fn code(&self) -> u32 {
        match self {
            Request::Go => opt::GO,
            Request::Abort => opt::ABORT,
            Request::List => opt::LIST,
            Request::Info => opt::INFO,
            Request::StartTls => opt::STARTTLS,
            Request::ExtendedHeaders => opt::EXTENDED_HEADERS,
            Request::StructuredReply => opt::STRUCTURED_REPLY,
            Request::ListMetaContext(_) => opt::LIST_META_CONTEXT,
            Request::SetMetaContext(_) => opt::SET_META_CONTEXT,
        }
    }

    /// What the synchronous form returns on success.
    fn kind(&self) -> Outcome {
        match self {
            Request::List | Request::ListMetaContext(_) | Request::SetMetaContext(_) => {
                Outcome::Count
            }
            Request::StartTls | Request::ExtendedHeaders | Request::StructuredReply => {
                Outcome::Agreed
            }
            Request::Go | Request::Abort | Request::Info => Outcome::Zero,
        }
    }
}

/// The synchronous result of a request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 0 on success.
    Zero,
    /// How many exports or contexts the server reported.
    Count,
    /// 1 if the server agreed, 0 if it refused.
    Agreed,
}

/// The handle's metadata context list, as the protocol core takes it.
fn handle_contexts(inner: &HandleInner) -> Vec<String> {
    strings(inner.negotiation.meta_contexts.iter().map(|c| c.as_c_str()))
}

fn strings<'a>(list: impl IntoIterator<Item = &'a CStr>) -> Vec<String> {
    list.into_iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect()
}

/// Before `NBD_OPT_STARTTLS`: the engine needs TLS settings to run the
/// handshake with. A handle whose TLS mode is `LIBNBD_TLS_DISABLE` has none
/// yet; like libnbd, the explicit request uses its credentials anyway.
fn prepare_starttls(inner: &mut HandleInner) -> Result<(), Error> {
    if inner.engine.has_tls_options() {
        return Ok(());
    }
    let mode = inner.tls.mode;
    inner.tls.mode = crate::constants::LIBNBD_TLS_ALLOW;
    let options = inner.tls.options();
    inner.tls.mode = mode;
    inner.engine.set_tls_options(options?);
    Ok(())
}

/// Issues `request`; with `sync`, waits for the server's final reply and
/// returns what the synchronous form returns.
fn option(
    inner: &mut Locked<'_>,
    request: Request,
    callbacks: OptCallbacks,
    sync: bool,
) -> Result<c_int, Error> {
    if request == Request::StartTls {
        prepare_starttls(inner)?;
    }
    // Settings that may change while negotiating apply to this request.
    let n = &inner.negotiation;
    let export = n.export_name.to_string_lossy().into_owned();
    let contexts = handle_contexts(inner);
    let (request_meta, full_info, block_size) =
        (n.request_meta_context, n.full_info, n.request_block_size);
    let code = request.kind();
    let final_option = request.code();
    inner
        .engine
        .start_opt(final_option, callbacks.boxed(), move |c| {
            let config = c.config_mut();
            config.export_name = export;
            config.request_meta_contexts = contexts;
            config.request_meta_context = request_meta;
            config.full_info = full_info;
            config.request_block_size = block_size;
            match request {
                Request::Go => c.opt_go(),
                Request::Abort => c.opt_abort(),
                Request::List => c.opt_list(),
                Request::Info => c.opt_info(),
                Request::StartTls => c.opt_starttls(),
                Request::ExtendedHeaders => c.opt_extended_headers(),
                Request::StructuredReply => c.opt_structured_reply(),
                Request::ListMetaContext(q) => c.opt_list_meta_context(q),
                Request::SetMetaContext(q) => c.opt_set_meta_context(q),
            }
        })?;
    if !sync {
        return Ok(0);
    }
    inner.run_until(|e| !e.opt_running())?;
    let result = inner
        .engine
        .take_opt_result()
        .ok_or(Error::Engine(Cause::new(
            libc::EIO,
            "the option finished without a result",
        )))?;
    if code == Outcome::Agreed {
        // A refusal is an answer (0); only a connection that did not
        // survive the request is an error.
        if inner.state() == State::Negotiating {
            return Ok(c_int::from(result.error == 0));
        }
        if let Some(death) = inner.engine.death() {
            return Err(death.clone().into());
        }
        let errno = if result.error != 0 {
            result.error
        } else {
            libc::ENOTCONN
        };
        return Err(Error::Engine(Cause::new(
            errno,
            format!(
                "the connection did not survive {}: {}",
                nbd_proto::wire::option::opt_name(final_option),
                result.message
            ),
        )));
    }
    if result.error != 0 {
        return Err(Error::Engine(Cause::new(result.error, result.message)));
    }
    Ok(match code {
        Outcome::Count => result.count,
        _ => 0,
    })
}

fn completion_only(completion: Owned<CompletionCallback>) -> OptCallbacks {
    OptCallbacks {
        completion: Some(completion),
        ..OptCallbacks::default()
    }
}

fn with_list(
    list: Owned<ListCallback>,
    completion: Option<Owned<CompletionCallback>>,
) -> OptCallbacks {
    // Mid-option callbacks are released before the completion callback.
    OptCallbacks {
        list: Some(list),
        context: None,
        completion,
    }
}

fn with_context(
    context: Owned<ContextCallback>,
    completion: Option<Owned<CompletionCallback>>,
) -> OptCallbacks {
    OptCallbacks {
        list: None,
        context: Some(context),
        completion,
    }
}

// ----- synchronous -----

/// `nbd_opt_go`.
pub(crate) fn opt_go(inner: &mut Locked<'_>) -> Result<c_int, Error> {
    option(inner, Request::Go, OptCallbacks::default(), true)
}

/// `nbd_opt_abort`.
pub(crate) fn opt_abort(inner: &mut Locked<'_>) -> Result<c_int, Error> {
    option(inner, Request::Abort, OptCallbacks::default(), true)
}

/// `nbd_opt_starttls`: 1 if TLS is now up, 0 if the server refused.
pub(crate) fn opt_starttls(inner: &mut Locked<'_>) -> Result<c_int, Error> {
    option(inner, Request::StartTls, OptCallbacks::default(), true)
}

/// `nbd_opt_extended_headers`: 1 if the server agreed, 0 if it refused.
pub(crate) fn opt_extended_headers(inner: &mut Locked<'_>) -> Result<c_int, Error> {
    option(
        inner,
        Request::ExtendedHeaders,
        OptCallbacks::default(),
        true,
    )
}

/// `nbd_opt_structured_reply`: 1 if the server agreed, 0 if it refused.
pub(crate) fn opt_structured_reply(inner: &mut Locked<'_>) -> Result<c_int, Error> {
    option(
        inner,
        Request::StructuredReply,
        OptCallbacks::default(),
        true,
    )
}

/// `nbd_opt_list`: how many exports the server listed.
pub(crate) fn opt_list(
    inner: &mut Locked<'_>,
    list_callback: Owned<ListCallback>,
) -> Result<c_int, Error> {
    option(inner, Request::List, with_list(list_callback, None), true)
}

/// `nbd_opt_info`.
pub(crate) fn opt_info(inner: &mut Locked<'_>) -> Result<c_int, Error> {
    option(inner, Request::Info, OptCallbacks::default(), true)
}

/// `nbd_opt_list_meta_context`, for the handle's context list.
pub(crate) fn opt_list_meta_context(
    inner: &mut Locked<'_>,
    context_callback: Owned<ContextCallback>,
) -> Result<c_int, Error> {
    let q = handle_contexts(inner);
    let cbs = with_context(context_callback, None);
    option(inner, Request::ListMetaContext(q), cbs, true)
}

/// `nbd_opt_list_meta_context_queries`.
pub(crate) fn opt_list_meta_context_queries(
    inner: &mut Locked<'_>,
    queries: Vec<&CStr>,
    context_callback: Owned<ContextCallback>,
) -> Result<c_int, Error> {
    let cbs = with_context(context_callback, None);
    option(inner, Request::ListMetaContext(strings(queries)), cbs, true)
}

/// `nbd_opt_set_meta_context`, for the handle's context list.
pub(crate) fn opt_set_meta_context(
    inner: &mut Locked<'_>,
    context_callback: Owned<ContextCallback>,
) -> Result<c_int, Error> {
    let q = handle_contexts(inner);
    let cbs = with_context(context_callback, None);
    option(inner, Request::SetMetaContext(q), cbs, true)
}

/// `nbd_opt_set_meta_context_queries`.
pub(crate) fn opt_set_meta_context_queries(
    inner: &mut Locked<'_>,
    queries: Vec<&CStr>,
    context_callback: Owned<ContextCallback>,
) -> Result<c_int, Error> {
    let cbs = with_context(context_callback, None);
    option(inner, Request::SetMetaContext(strings(queries)), cbs, true)
}

// ----- asynchronous -----

/// `nbd_aio_opt_go`.
pub(crate) fn aio_opt_go(
    inner: &mut Locked<'_>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    option(
        inner,
        Request::Go,
        completion_only(completion_callback),
        false,
    )
}

/// `nbd_aio_opt_abort`.
pub(crate) fn aio_opt_abort(inner: &mut Locked<'_>) -> Result<c_int, Error> {
    option(inner, Request::Abort, OptCallbacks::default(), false)
}

/// `nbd_aio_opt_starttls`.
pub(crate) fn aio_opt_starttls(
    inner: &mut Locked<'_>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let cbs = completion_only(completion_callback);
    option(inner, Request::StartTls, cbs, false)
}

/// `nbd_aio_opt_extended_headers`.
pub(crate) fn aio_opt_extended_headers(
    inner: &mut Locked<'_>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let cbs = completion_only(completion_callback);
    option(inner, Request::ExtendedHeaders, cbs, false)
}

/// `nbd_aio_opt_structured_reply`.
pub(crate) fn aio_opt_structured_reply(
    inner: &mut Locked<'_>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let cbs = completion_only(completion_callback);
    option(inner, Request::StructuredReply, cbs, false)
}

/// `nbd_aio_opt_list`.
pub(crate) fn aio_opt_list(
    inner: &mut Locked<'_>,
    list_callback: Owned<ListCallback>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let cbs = with_list(list_callback, Some(completion_callback));
    option(inner, Request::List, cbs, false)
}

/// `nbd_aio_opt_info`.
pub(crate) fn aio_opt_info(
    inner: &mut Locked<'_>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    option(
        inner,
        Request::Info,
        completion_only(completion_callback),
        false,
    )
}

/// `nbd_aio_opt_list_meta_context`.
pub(crate) fn aio_opt_list_meta_context(
    inner: &mut Locked<'_>,
    context_callback: Owned<ContextCallback>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let q = handle_contexts(inner);
    let cbs = with_context(context_callback, Some(completion_callback));
    option(inner, Request::ListMetaContext(q), cbs, false)
}

/// `nbd_aio_opt_list_meta_context_queries`.
pub(crate) fn aio_opt_list_meta_context_queries(
    inner: &mut Locked<'_>,
    queries: Vec<&CStr>,
    context_callback: Owned<ContextCallback>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let cbs = with_context(context_callback, Some(completion_callback));
    option(
        inner,
        Request::ListMetaContext(strings(queries)),
        cbs,
        false,
    )
}

/// `nbd_aio_opt_set_meta_context`.
pub(crate) fn aio_opt_set_meta_context(
    inner: &mut Locked<'_>,
    context_callback: Owned<ContextCallback>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let q = handle_contexts(inner);
    let cbs = with_context(context_callback, Some(completion_callback));
    option(inner, Request::SetMetaContext(q), cbs, false)
}

/// `nbd_aio_opt_set_meta_context_queries`.
pub(crate) fn aio_opt_set_meta_context_queries(
    inner: &mut Locked<'_>,
    queries: Vec<&CStr>,
    context_callback: Owned<ContextCallback>,
    completion_callback: Owned<CompletionCallback>,
) -> Result<c_int, Error> {
    let cbs = with_context(context_callback, Some(completion_callback));
    option(inner, Request::SetMetaContext(strings(queries)), cbs, false)
}
