//! What the handshake asks the server for: the export name, structured
//! replies, handshake flags, extra export information, block sizes and the
//! list of metadata contexts to request.
//!
//! These are plain settings until the connection engine reads them. Most may
//! only change before connecting, or while negotiating in opt mode.

use crate::constants::LIBNBD_HANDSHAKE_FLAG_MASK;
use crate::debug::quote_opt;
use crate::errors::{check_flags, Error};
use crate::handle::Handle;
use crate::ptr::{self, MallocStr};
use crate::state::Permitted;
use std::ffi::{c_char, c_int, CString};

/// The handshake settings of one handle.
#[derive(Debug)]
pub(crate) struct NegotiationSettings {
    /// The export to ask for; empty means the server's default export.
    pub(crate) export_name: CString,
    /// Whether to ask for structured replies.
    pub(crate) request_structured_replies: bool,
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
            handshake_flags: LIBNBD_HANDSHAKE_FLAG_MASK,
            full_info: false,
            request_block_size: true,
            meta_contexts: Vec::new(),
            opt_mode: false,
        }
    }
}

/// Sets the name of the export to connect to (default: the empty string).
/// Names longer than 4096 bytes fail with `ENAMETOOLONG`.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `export_name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_export_name(h: *mut Handle, export_name: *const c_char) -> c_int {
    ffi_boundary!("nbd_set_export_name", |fname| {
        // SAFETY: export_name is NULL or a C string (see # Safety).
        let name = unsafe { ptr::opt_cstr(export_name) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("export_name={}", quote_opt(name)),
            |inner| {
                Permitted::CREATED_OR_NEGOTIATING.check(inner.state())?;
                let name = ptr::required(name, "export_name")?;
                let name = ptr::protocol_string(name, "export name")?;
                inner.negotiation.export_name = name.to_owned();
                Ok(0)
            },
        )
    })
}

/// Returns a copy of the export name that will be requested; the caller
/// must `free` it.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_export_name(h: *mut Handle) -> *mut c_char {
    ffi_boundary!("nbd_get_export_name", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            MallocStr::new(&inner.negotiation.export_name)
        })
    })
}

/// Chooses whether to ask the server for structured replies (default: yes).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_request_structured_replies(
    h: *mut Handle,
    request: bool,
) -> c_int {
    ffi_boundary!("nbd_set_request_structured_replies", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("request={request}"),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                inner.negotiation.request_structured_replies = request;
                Ok(0)
            },
        )
    })
}

/// Returns 1 if structured replies will be requested, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_request_structured_replies(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_request_structured_replies", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Ok(inner.negotiation.request_structured_replies)
        })
    })
}

/// Limits the handshake flags the client offers (`LIBNBD_HANDSHAKE_FLAG_*`;
/// unknown bits fail with `EINVAL`).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_handshake_flags(h: *mut Handle, flags: u32) -> c_int {
    ffi_boundary!("nbd_set_handshake_flags", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("flags=0x{flags:x}"),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                check_flags("flags", flags, LIBNBD_HANDSHAKE_FLAG_MASK)?;
                inner.negotiation.handshake_flags = flags;
                Ok(0)
            },
        )
    })
}

/// Returns the handshake flags: those offered before connecting, those
/// agreed with the server afterwards.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_handshake_flags(h: *mut Handle) -> u32 {
    ffi_boundary!("nbd_get_handshake_flags", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Ok(inner.negotiation.handshake_flags)
        })
    })
}

/// Chooses whether to hint to the server that the export's canonical name
/// and description are wanted (default: no).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_full_info(h: *mut Handle, request: bool) -> c_int {
    ffi_boundary!("nbd_set_full_info", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("request={request}"),
            |inner| {
                Permitted::CREATED_OR_NEGOTIATING.check(inner.state())?;
                inner.negotiation.full_info = request;
                Ok(0)
            },
        )
    })
}

/// Returns 1 if full export information will be requested, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_full_info(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_full_info", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| Ok(inner.negotiation.full_info))
    })
}

/// Chooses whether to ask the server for its block size constraints
/// (default: yes).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_request_block_size(h: *mut Handle, request: bool) -> c_int {
    ffi_boundary!("nbd_set_request_block_size", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("request={request}"),
            |inner| {
                Permitted::CREATED_OR_NEGOTIATING.check(inner.state())?;
                inner.negotiation.request_block_size = request;
                Ok(0)
            },
        )
    })
}

/// Returns 1 if block size constraints will be requested, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_request_block_size(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_request_block_size", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Ok(inner.negotiation.request_block_size)
        })
    })
}

/// Appends a metadata context (such as "base:allocation") to the list to
/// request. Names longer than 4096 bytes fail with `ENAMETOOLONG`.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `name` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_add_meta_context(h: *mut Handle, name: *const c_char) -> c_int {
    ffi_boundary!("nbd_add_meta_context", |fname| {
        // SAFETY: name is NULL or a C string (see # Safety).
        let name = unsafe { ptr::opt_cstr(name) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("name={}", quote_opt(name)),
            |inner| {
                Permitted::CREATED_OR_NEGOTIATING.check(inner.state())?;
                let name = ptr::required(name, "name")?;
                let name = ptr::protocol_string(name, "meta context name")?;
                inner.negotiation.meta_contexts.push(name.to_owned());
                Ok(0)
            },
        )
    })
}

/// Returns how many metadata contexts are on the request list.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_nr_meta_contexts(h: *mut Handle) -> libc::ssize_t {
    ffi_boundary!("nbd_get_nr_meta_contexts", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            // A Vec never holds more than isize::MAX elements.
            Ok(libc::ssize_t::try_from(inner.negotiation.meta_contexts.len()).unwrap_or(-1))
        })
    })
}

/// Returns a copy of entry `i` of the metadata context request list (the
/// caller must `free` it); an index past the end fails with `EINVAL`.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_meta_context(h: *mut Handle, i: libc::size_t) -> *mut c_char {
    ffi_boundary!("nbd_get_meta_context", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("i={i}"),
            |inner| {
                let list = &inner.negotiation.meta_contexts;
                let name = list.get(i).ok_or(Error::OutOfRange {
                    what: "meta context request",
                    index: i,
                    len: list.len(),
                })?;
                MallocStr::new(name)
            },
        )
    })
}

/// Empties the metadata context request list.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_clear_meta_contexts(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_clear_meta_contexts", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Permitted::CREATED_OR_NEGOTIATING.check(inner.state())?;
            inner.negotiation.meta_contexts.clear();
            Ok(0)
        })
    })
}
