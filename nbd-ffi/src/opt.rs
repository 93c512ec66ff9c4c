//! Option negotiation ("opt mode"): with `nbd_set_opt_mode` on, connecting
//! stops in the negotiating state and the caller issues handshake options
//! itself (`nbd_opt_list`, `nbd_opt_info`, `nbd_opt_go`, ...).
//!
//! The `opt_*` calls need the connection engine. Until it lands they check
//! the handle, its state and the callbacks, release every callback passed in
//! (mid-option callbacks before completion callbacks), and fail with
//! `ENOTSUP`.

use crate::callbacks::{CompletionCallback, ContextCallback, ListCallback, Owned};
use crate::errors::{not_yet_implemented, Error};
use crate::handle::Handle;
use crate::ptr;
use crate::state::Permitted;
use std::ffi::c_int;

/// Chooses whether connecting stops for option negotiation (default: no).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_opt_mode(h: *mut Handle, enable: bool) -> c_int {
    ffi_boundary!("nbd_set_opt_mode", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("enable={enable}"),
            |inner| {
                Permitted::CREATED.check(inner.state)?;
                inner.negotiation.opt_mode = enable;
                Ok(0)
            },
        )
    })
}

/// Returns 1 if opt mode is on, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_opt_mode(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_opt_mode", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| Ok(inner.negotiation.opt_mode))
    })
}

/// Shared body of the options that take no mid-option callback.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
unsafe fn plain_option(fname: &'static str, h: *mut Handle) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(fname, String::new, |inner| {
        Permitted::NEGOTIATING.check(inner.state)?;
        not_yet_implemented::<c_int>()
    })
}

/// Shared body of the options whose mid-option callback is mandatory.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
unsafe fn listing_option(
    fname: &'static str,
    h: *mut Handle,
    callback_is_null: bool,
    param: &'static str,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    h.call(
        fname,
        || format!("{param}=<fn>"),
        |inner| {
            Permitted::NEGOTIATING.check(inner.state)?;
            if callback_is_null {
                return Err(Error::NullPointer { param });
            }
            not_yet_implemented::<c_int>()
        },
    )
}

/// Ends negotiation and moves on to the export chosen by the export name.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_opt_go(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_opt_go", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { plain_option(fname, h) }
    })
}

/// Ends negotiation without connecting to an export.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_opt_abort(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_opt_abort", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { plain_option(fname, h) }
    })
}

/// Asks the server for its exports, calling `list_callback` for each.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `list_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_opt_list(h: *mut Handle, list_callback: ListCallback) -> c_int {
    ffi_boundary!("nbd_opt_list", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let list = unsafe { Owned::new(list_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { listing_option(fname, h, list.is_null(), "list_callback") }
    })
}

/// Asks the server about the export named by the export name, without
/// connecting to it.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_opt_info(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_opt_info", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { plain_option(fname, h) }
    })
}

/// Asks the server which of the requested metadata contexts it supports,
/// calling `context_callback` for each.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `context_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_opt_list_meta_context(
    h: *mut Handle,
    context_callback: ContextCallback,
) -> c_int {
    ffi_boundary!("nbd_opt_list_meta_context", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let context = unsafe { Owned::new(context_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { listing_option(fname, h, context.is_null(), "context_callback") }
    })
}

/// Starts `nbd_opt_go` without waiting.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_opt_go(
    h: *mut Handle,
    completion_callback: CompletionCallback,
) -> c_int {
    ffi_boundary!("nbd_aio_opt_go", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { plain_option(fname, h) }
    })
}

/// Starts `nbd_opt_abort` without waiting.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_opt_abort(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_aio_opt_abort", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { plain_option(fname, h) }
    })
}

/// Starts `nbd_opt_list` without waiting.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open; both
/// callbacks must be callable (and freeable) with their `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_opt_list(
    h: *mut Handle,
    list_callback: ListCallback,
    completion_callback: CompletionCallback,
) -> c_int {
    ffi_boundary!("nbd_aio_opt_list", |fname| {
        // SAFETY: the caller hands both callbacks over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: as above.
        let list = unsafe { Owned::new(list_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { listing_option(fname, h, list.is_null(), "list_callback") }
    })
}

/// Starts `nbd_opt_info` without waiting.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `completion_callback` must be callable (and freeable) with its `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_opt_info(
    h: *mut Handle,
    completion_callback: CompletionCallback,
) -> c_int {
    ffi_boundary!("nbd_aio_opt_info", |fname| {
        // SAFETY: the caller hands the callback over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { plain_option(fname, h) }
    })
}

/// Starts `nbd_opt_list_meta_context` without waiting.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open; both
/// callbacks must be callable (and freeable) with their `user_data`.
#[no_mangle]
pub unsafe extern "C" fn nbd_aio_opt_list_meta_context(
    h: *mut Handle,
    context_callback: ContextCallback,
    completion_callback: CompletionCallback,
) -> c_int {
    ffi_boundary!("nbd_aio_opt_list_meta_context", |fname| {
        // SAFETY: the caller hands both callbacks over to us (see # Safety).
        let _completion = unsafe { Owned::new(completion_callback) };
        // SAFETY: as above.
        let context = unsafe { Owned::new(context_callback) };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { listing_option(fname, h, context.is_null(), "context_callback") }
    })
}
