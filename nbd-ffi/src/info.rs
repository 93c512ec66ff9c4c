//! What the server told us in the handshake: the export's size, block
//! sizes, flags (`nbd_can_*`, `nbd_is_*`), names and protocol details.
//!
//! They are only meaningful once negotiation has begun, so on a new handle
//! they fail with `ENOTCONN` as libnbd's do; while negotiating in opt mode,
//! the export's details are known only after `nbd_opt_info` succeeded.

use crate::constants::{
    LIBNBD_SIZE_MAXIMUM, LIBNBD_SIZE_MINIMUM, LIBNBD_SIZE_PAYLOAD, LIBNBD_SIZE_PREFERRED,
};
use crate::engine::ProtoClient;
use crate::errors::{Cause, Error};
use crate::handle::HandleInner;
use crate::ptr::MallocStr;
use nbd_proto::consts::transmission_flags as tf;
use std::ffi::{c_int, CStr};

pub use crate::exports::info::*;

/// The protocol client of a handle past the created state.
fn connected(inner: &HandleInner) -> Result<&ProtoClient, Error> {
    inner
        .engine
        .client()
        .ok_or(Error::Engine(Cause::NotConnected(
            "the handle is not connected",
        )))
}

/// The export's details, which opt mode only knows after `nbd_opt_info`.
fn export_known(c: &ProtoClient) -> Result<&nbd_proto::client::ExportInfo, Error> {
    if c.has_export_info() {
        Ok(c.export())
    } else {
        Err(Error::Engine(Cause::InvalidState(
            "the server has not described the export yet (use nbd_opt_info or nbd_opt_go)",
        )))
    }
}

/// Whether the export has transmission flag `flag`, as 0 or 1.
fn flag(inner: &HandleInner, flag: u16) -> Result<c_int, Error> {
    Ok(c_int::from(export_known(connected(inner)?)?.has(flag)))
}

/// The largest write payload libnbd sends while `LIBNBD_STRICT_PAYLOAD` is
/// on (`LIBNBD_SIZE_PAYLOAD`): the server's maximum block size kept between
/// 1 MiB and 64 MiB, or 32 MiB when the server gave none (the size beyond
/// which some servers disconnect).
pub(crate) fn payload_max(c: &ProtoClient) -> u64 {
    const MIB: u64 = 1024 * 1024;
    match c.export().block_size {
        Some(b) if b.maximum > 0 => u64::from(b.maximum).clamp(MIB, 64 * MIB),
        _ => 32 * MIB,
    }
}

/// `nbd_get_size`: the export's size; `EOVERFLOW` above `INT64_MAX`.
pub(crate) fn get_size(inner: &mut HandleInner) -> Result<i64, Error> {
    let size = export_known(connected(inner)?)?.size;
    i64::try_from(size).map_err(|_| {
        Error::Engine(Cause::Overflow(format!(
            "server claims size {size} which does not fit in signed result"
        )))
    })
}

/// `nbd_get_block_size`: one of the server's constraints (`LIBNBD_SIZE_*`),
/// 0 if it gave none; `LIBNBD_SIZE_PAYLOAD` is the library's own limit.
pub(crate) fn get_block_size(inner: &mut HandleInner, size_type: c_int) -> Result<i64, Error> {
    if !(LIBNBD_SIZE_MINIMUM..=LIBNBD_SIZE_PAYLOAD).contains(&size_type) {
        return Err(Error::InvalidValue {
            param: "size_type",
            value: size_type.into(),
        });
    }
    let c = connected(inner)?;
    let e = export_known(c)?;
    if size_type == LIBNBD_SIZE_PAYLOAD {
        return Ok(payload_max(c) as i64);
    }
    Ok(e.block_size.map_or(0, |b| {
        i64::from(match size_type {
            LIBNBD_SIZE_MINIMUM => b.minimum,
            LIBNBD_SIZE_PREFERRED => b.preferred,
            LIBNBD_SIZE_MAXIMUM => b.maximum,
            _ => 0,
        })
    }))
}

/// `nbd_is_read_only`.
pub(crate) fn is_read_only(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::READ_ONLY)
}

/// `nbd_can_flush`.
pub(crate) fn can_flush(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::SEND_FLUSH)
}

/// `nbd_can_fua`.
pub(crate) fn can_fua(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::SEND_FUA)
}

/// `nbd_is_rotational`.
pub(crate) fn is_rotational(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::ROTATIONAL)
}

/// `nbd_can_trim`.
pub(crate) fn can_trim(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::SEND_TRIM)
}

/// `nbd_can_zero`.
pub(crate) fn can_zero(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::SEND_WRITE_ZEROES)
}

/// `nbd_can_fast_zero`.
pub(crate) fn can_fast_zero(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::SEND_FAST_ZERO)
}

/// `nbd_can_block_status_payload`: the server takes a context list with
/// block status (`NBD_FLAG_BLOCK_STAT_PAYLOAD`), which needs extended
/// headers.
pub(crate) fn can_block_status_payload(inner: &mut HandleInner) -> Result<c_int, Error> {
    let c = connected(inner)?;
    let e = export_known(c)?;
    Ok(c_int::from(
        c.extended_headers() && e.has(tf::BLOCK_STAT_PAYLOAD),
    ))
}

/// `nbd_can_df`.
pub(crate) fn can_df(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::SEND_DF)
}

/// `nbd_can_multi_conn`.
pub(crate) fn can_multi_conn(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::CAN_MULTI_CONN)
}

/// `nbd_can_cache`.
pub(crate) fn can_cache(inner: &mut HandleInner) -> Result<c_int, Error> {
    flag(inner, tf::SEND_CACHE)
}

/// `nbd_can_meta_context`: whether the server agreed to `metacontext`.
pub(crate) fn can_meta_context(
    inner: &mut HandleInner,
    metacontext: &CStr,
) -> Result<c_int, Error> {
    let requested = !inner.negotiation.meta_contexts.is_empty();
    let c = connected(inner)?;
    if requested && !c.meta_contexts_valid() {
        // Contexts were asked for but no selection succeeded (e.g.
        // nbd_set_request_meta_context (h, false)): libnbd 1.24 fails.
        return Err(Error::Invalid(
            "metadata contexts were requested, but no NBD_OPT_SET_META_CONTEXT succeeded".into(),
        ));
    }
    Ok(c_int::from(
        c.meta_context_id(&metacontext.to_string_lossy()).is_some(),
    ))
}

/// `nbd_get_protocol`: "oldstyle", "newstyle" or "newstyle-fixed".
pub(crate) fn get_protocol(inner: &mut HandleInner) -> Result<&'static CStr, Error> {
    Ok(match connected(inner)?.protocol() {
        Some("oldstyle") => c"oldstyle",
        Some("newstyle") => c"newstyle",
        _ => c"newstyle-fixed",
    })
}

/// `nbd_get_canonical_export_name`: the name the server reported
/// (`NBD_INFO_NAME`); `ENOTSUP` when it reported none, as in libnbd.
pub(crate) fn get_canonical_export_name(inner: &mut HandleInner) -> Result<MallocStr, Error> {
    let e = export_known(connected(inner)?)?;
    match &e.name {
        Some(n) => MallocStr::new(&std::ffi::CString::new(n.as_str()).unwrap_or_default()),
        None => Err(Error::Engine(Cause::NotSupported(
            "the server sent no canonical name (see nbd_set_full_info)".into(),
        ))),
    }
}

/// `nbd_get_export_description`: `ENOTSUP` when the server sent none.
pub(crate) fn get_export_description(inner: &mut HandleInner) -> Result<MallocStr, Error> {
    let e = export_known(connected(inner)?)?;
    match &e.description {
        Some(d) => MallocStr::new(&std::ffi::CString::new(d.as_str()).unwrap_or_default()),
        None => Err(Error::Engine(Cause::NotSupported(
            "the server did not send a description (see nbd_set_full_info)".into(),
        ))),
    }
}

/// `nbd_get_structured_replies_negotiated`.
pub(crate) fn get_structured_replies_negotiated(inner: &mut HandleInner) -> Result<bool, Error> {
    Ok(connected(inner)?.structured_replies())
}

/// `nbd_get_extended_headers_negotiated`.
pub(crate) fn get_extended_headers_negotiated(inner: &mut HandleInner) -> Result<bool, Error> {
    Ok(connected(inner)?.extended_headers())
}
