//! What the handshake asks the server for: the export name, extended
//! headers, structured replies, metadata contexts, handshake flags, extra export information, block sizes and the
//! list of metadata contexts to request.
//!
//! These are plain settings until the connection engine reads them. Most may
//! only change before connecting, or while negotiating in opt mode. The
//! exports are generated from `api/negotiation.api`; the few that do more
//! than read or write a field are implemented here.

pub use crate::exports::negotiation::*;

use crate::errors::Error;
use crate::handle::HandleInner;
use crate::ptr::{self, MallocStr};
use crate::state::State;
use std::ffi::{c_int, CStr};

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
