//! What the handshake asks the server for: the export name, extended
//! headers, structured replies, metadata contexts, handshake flags, extra export information, block sizes and the
//! list of metadata contexts to request.
//!
//! These are plain settings until the connection engine reads them. Most may
//! only change before connecting, or while negotiating in opt mode. The
//! exports are generated from `api/negotiation.api`; the few that do more
//! than read or write a field are implemented here.

pub use crate::exports::negotiation::*;

use crate::constants::LIBNBD_HANDSHAKE_FLAG_MASK;
use crate::errors::Error;
use crate::handle::HandleInner;
use crate::ptr::{self, MallocStr};
use crate::state::State;
use std::ffi::{c_int, CStr, CString};

/// The handshake settings of one handle.
#[derive(Debug)]
pub(crate) struct NegotiationSettings {
    /// The export to ask for; empty means the server's default export.
    pub(crate) export_name: CString,
    /// Whether to ask for structured replies.
    pub(crate) request_structured_replies: bool,
    /// Whether to ask for extended headers (ignored without structured
    /// replies, which they imply).
    pub(crate) request_extended_headers: bool,
    /// Whether connecting (or `nbd_opt_go`/`nbd_opt_info`) selects the
    /// contexts of `meta_contexts` with `NBD_OPT_SET_META_CONTEXT` first.
    pub(crate) request_meta_context: bool,
    /// `LIBNBD_HANDSHAKE_FLAG_*` bits the client is willing to use.
    pub(crate) handshake_flags: u32,
    /// Whether to ask for the export's name and description too.
    pub(crate) full_info: bool,
    /// Whether to ask for block size constraints.
    pub(crate) request_block_size: bool,
    /// Metadata contexts to request, in order.
    pub(crate) meta_contexts: Vec<CString>,
    /// Whether connecting stops in the negotiating state (opt mode).
    pub(crate) opt_mode: bool,
}

impl Default for NegotiationSettings {
    /// libnbd's defaults for a new handle.
    fn default() -> Self {
        NegotiationSettings {
            export_name: CString::default(),
            request_structured_replies: true,
            request_extended_headers: true,
            request_meta_context: true,
            handshake_flags: LIBNBD_HANDSHAKE_FLAG_MASK,
            full_info: false,
            request_block_size: true,
            meta_contexts: Vec::new(),
            opt_mode: false,
        }
    }
}

/// `nbd_set_export_name`: names longer than 4096 bytes fail with
/// `ENAMETOOLONG`. While negotiating, the contexts selected for the old
/// name are forgotten.
pub(crate) fn set_export_name(inner: &mut HandleInner, export_name: &CStr) -> Result<c_int, Error> {
    let name = ptr::protocol_string(export_name, "export name")?;
    inner.negotiation.export_name = name.to_owned();
    if inner.state() == State::Negotiating {
        inner.engine.forget_meta_contexts();
    }
    Ok(0)
}

/// `nbd_add_meta_context`: names longer than 4096 bytes fail with
/// `ENAMETOOLONG`.
pub(crate) fn add_meta_context(inner: &mut HandleInner, name: &CStr) -> Result<c_int, Error> {
    let name = ptr::protocol_string(name, "meta context name")?;
    inner.negotiation.meta_contexts.push(name.to_owned());
    Ok(0)
}

/// `nbd_get_meta_context`: a copy of entry `i` of the request list; an
/// index past the end fails with `EINVAL`.
pub(crate) fn get_meta_context(inner: &mut HandleInner, i: usize) -> Result<MallocStr, Error> {
    let list = &inner.negotiation.meta_contexts;
    let name = list.get(i).ok_or(Error::OutOfRange {
        what: "meta context request",
        index: i,
        len: list.len(),
    })?;
    MallocStr::new(name)
}
