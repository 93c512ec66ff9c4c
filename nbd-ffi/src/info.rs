//! What the server told us in the handshake: the export's size, block
//! sizes, flags (`nbd_can_*`, `nbd_is_*`), names and protocol details.
//!
//! They are only meaningful once negotiation has begun, so on a new handle
//! they fail with `ENOTCONN` as libnbd's do; while negotiating in opt mode,
//! the export's details are known only after `nbd_opt_info` succeeded.

use crate::constants::{LIBNBD_SIZE_MAXIMUM, LIBNBD_SIZE_MINIMUM};
use crate::debug::quote_opt;
use crate::errors::Error;
use crate::handle::{Handle, HandleInner};
use crate::panic::CReturn;
use crate::ptr::{self, MallocStr};
use crate::state::Permitted;
use nbd_proto::client::Client;
use nbd_proto::consts::transmission_flags as tf;
use std::ffi::{c_char, c_int, CStr};

/// Shared body of the getters without parameters.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
unsafe fn handshake_info<R: CReturn>(
    fname: &'static str,
    h: *mut Handle,
    get: impl FnOnce(&HandleInner, &Client) -> Result<R, Error>,
) -> Result<R, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(fname, String::new, |inner| {
        Permitted::HANDSHAKE_KNOWN.check(inner.state())?;
        let client = connected(inner)?;
        get(inner, client)
    })
}

/// The protocol client of a handle past the created state.
fn connected(inner: &HandleInner) -> Result<&Client, Error> {
    inner.engine.client().ok_or(Error::Engine {
        errno: libc::ENOTCONN,
        message: "the handle is not connected".into(),
    })
}

/// The export's details, which opt mode only knows after `nbd_opt_info`.
fn export_known(c: &Client) -> Result<&nbd_proto::client::ExportInfo, Error> {
    if c.has_export_info() {
        Ok(c.export())
    } else {
        Err(Error::Engine {
            errno: libc::EINVAL,
            message: "the server has not described the export yet (use nbd_opt_info or nbd_opt_go)"
                .into(),
        })
    }
}

/// Whether the export has transmission flag `flag`, as 0 or 1.
fn flag(c: &Client, flag: u16) -> Result<c_int, Error> {
    Ok(c_int::from(export_known(c)?.has(flag)))
}

/// Returns the size of the export in bytes.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_size(h: *mut Handle) -> i64 {
    ffi_boundary!("nbd_get_size", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<i64>(fname, h, |_, c| Ok(export_known(c)?.size as i64)) }
    })
}

/// Returns one of the server's block size constraints
/// (`LIBNBD_SIZE_MINIMUM`, `_PREFERRED` or `_MAXIMUM`), or 0 if it gave none.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_block_size(h: *mut Handle, size_type: c_int) -> i64 {
    ffi_boundary!("nbd_get_block_size", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("size_type={size_type}"),
            |inner| {
                Permitted::HANDSHAKE_KNOWN.check(inner.state())?;
                if !(LIBNBD_SIZE_MINIMUM..=LIBNBD_SIZE_MAXIMUM).contains(&size_type) {
                    return Err(Error::InvalidValue {
                        param: "size_type",
                        value: size_type.into(),
                    });
                }
                let e = export_known(connected(inner)?)?;
                Ok(e.block_size.map_or(0, |b| {
                    i64::from(match size_type {
                        LIBNBD_SIZE_MINIMUM => b.minimum,
                        LIBNBD_SIZE_MAXIMUM => b.maximum,
                        _ => b.preferred,
                    })
                }))
            },
        )
    })
}

/// Returns 1 if the export is read-only, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_is_read_only(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_is_read_only", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::READ_ONLY)) }
    })
}

/// Returns 1 if the server supports flush, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_flush(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_flush", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::SEND_FLUSH)) }
    })
}

/// Returns 1 if the server supports the FUA flag, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_fua(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_fua", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::SEND_FUA)) }
    })
}

/// Returns 1 if the export is on a rotational medium, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_is_rotational(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_is_rotational", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::ROTATIONAL)) }
    })
}

/// Returns 1 if the server supports trim, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_trim(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_trim", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::SEND_TRIM)) }
    })
}

/// Returns 1 if the server supports writing zeroes, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_zero(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_zero", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::SEND_WRITE_ZEROES)) }
    })
}

/// Returns 1 if the server supports the FAST_ZERO flag, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_fast_zero(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_fast_zero", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::SEND_FAST_ZERO)) }
    })
}

/// Returns 1 if the server supports the DF flag, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_df(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_df", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::SEND_DF)) }
    })
}

/// Returns 1 if the server allows several connections to share the export consistently, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_multi_conn(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_multi_conn", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::CAN_MULTI_CONN)) }
    })
}

/// Returns 1 if the server supports cache requests, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_cache(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_can_cache", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| flag(c, tf::SEND_CACHE)) }
    })
}

/// Returns 1 if the server agreed to the metadata context `metacontext`,
/// else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `metacontext` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_can_meta_context(h: *mut Handle, metacontext: *const c_char) -> c_int {
    ffi_boundary!("nbd_can_meta_context", |fname| {
        // SAFETY: metacontext is NULL or a C string (see # Safety).
        let name = unsafe { ptr::opt_cstr(metacontext) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("metacontext={}", quote_opt(name)),
            |inner| {
                Permitted::HANDSHAKE_KNOWN.check(inner.state())?;
                let name = ptr::required(name, "metacontext")?;
                let c = connected(inner)?;
                Ok(c_int::from(
                    c.meta_context_id(&name.to_string_lossy()).is_some(),
                ))
            },
        )
    })
}

/// Returns the protocol variant in use ("oldstyle", "newstyle" or
/// "newstyle-fixed"), a static string.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_protocol(h: *mut Handle) -> *const c_char {
    ffi_boundary!("nbd_get_protocol", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            handshake_info::<&'static CStr>(fname, h, |_, c| {
                Ok(match c.protocol() {
                    Some("oldstyle") => c"oldstyle",
                    Some("newstyle") => c"newstyle",
                    _ => c"newstyle-fixed",
                })
            })
        }
    })
}

/// Returns a copy of the export name the server reported as canonical;
/// the caller must `free` it.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_canonical_export_name(h: *mut Handle) -> *mut c_char {
    ffi_boundary!("nbd_get_canonical_export_name", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            handshake_info::<MallocStr>(fname, h, |inner, c| {
                let e = export_known(c)?;
                match &e.name {
                    Some(n) => {
                        MallocStr::new(&std::ffi::CString::new(n.as_str()).unwrap_or_default())
                    }
                    // No NBD_INFO_NAME: the name that was asked for is the best answer.
                    None => MallocStr::new(&inner.negotiation.export_name),
                }
            })
        }
    })
}

/// Returns a copy of the export description the server reported; the
/// caller must `free` it.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_export_description(h: *mut Handle) -> *mut c_char {
    ffi_boundary!("nbd_get_export_description", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe {
            handshake_info::<MallocStr>(fname, h, |_, c| {
                let e = export_known(c)?;
                match &e.description {
                    Some(d) => {
                        MallocStr::new(&std::ffi::CString::new(d.as_str()).unwrap_or_default())
                    }
                    None => Err(Error::Engine {
                        errno: libc::ENOTSUP,
                        message: "the server did not send a description (see nbd_set_full_info)"
                            .into(),
                    }),
                }
            })
        }
    })
}

/// Returns 1 if the server agreed to structured replies, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_structured_replies_negotiated(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_structured_replies_negotiated", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { handshake_info::<c_int>(fname, h, |_, c| Ok(c_int::from(c.structured_replies()))) }
    })
}
