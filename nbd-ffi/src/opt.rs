//! Option negotiation ("opt mode"): with `nbd_set_opt_mode` on, connecting
//! stops in the negotiating state and the caller issues handshake options
//! itself (`nbd_opt_list`, `nbd_opt_info`, `nbd_opt_go`, ...).
//!
//! Each `nbd_opt_*` issues its option on the engine and, in the synchronous
//! form, polls until the server's final reply; the `nbd_aio_opt_*` forms
//! return at once and report through their completion callback.

use crate::callbacks::{CompletionCallback, ContextCallback, ListCallback, Owned};
use crate::errors::Error;
use crate::handle::Handle;
use crate::hooks::OptCallbacks;
use crate::ptr;
use crate::state::Permitted;
use nbd_proto::consts::opt;
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
                Permitted::CREATED.check(inner.state())?;
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

/// The opt-mode requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    Go,
    Abort,
    List,
    Info,
    ListMetaContext,
}

/// Shared body of every `nbd_opt_*` and `nbd_aio_opt_*` call. `mandatory`
/// names a mid-option callback the call requires; `sync` waits for the
/// server's final reply and returns the count of listed items (for the
/// listing options) or 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
unsafe fn option(
    fname: &'static str,
    h: *mut Handle,
    request: Request,
    callbacks: OptCallbacks,
    mandatory: Option<(&'static str, bool)>,
    sync: bool,
) -> Result<c_int, Error> {
    // SAFETY: forwarded from this function's contract.
    let h = unsafe { ptr::handle(h) }?;
    let args = || {
        mandatory
            .map(|(p, _)| format!("{p}=<fn>"))
            .unwrap_or_default()
    };
    h.call(fname, args, |inner| {
        Permitted::NEGOTIATING.check(inner.state())?;
        if let Some((param, true)) = mandatory {
            return Err(Error::NullPointer { param });
        }
        let queries: Vec<String> = inner
            .negotiation
            .meta_contexts
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        let export = inner.negotiation.export_name.to_string_lossy().into_owned();
        let code = match request {
            Request::Go => opt::GO,
            Request::Abort => opt::ABORT,
            Request::List => opt::LIST,
            Request::Info => opt::INFO,
            Request::ListMetaContext => opt::LIST_META_CONTEXT,
        };
        inner.engine.start_opt(code, callbacks.boxed(), |c| {
            // The export name may have changed since connecting.
            c.config_mut().export_name = export;
            match request {
                Request::Go => c.opt_go(),
                Request::Abort => c.opt_abort(),
                Request::List => c.opt_list(),
                Request::Info => c.opt_info(),
                Request::ListMetaContext => c.opt_list_meta_context(queries),
            }
        })?;
        if !sync {
            return Ok(0);
        }
        inner.engine.run_until(|e| !e.opt_running())?;
        let result = inner.engine.take_opt_result().ok_or(Error::Engine {
            errno: libc::EIO,
            message: "the option finished without a result".into(),
        })?;
        if result.error != 0 {
            return Err(Error::Engine {
                errno: result.error,
                message: result.message,
            });
        }
        Ok(match request {
            Request::List | Request::ListMetaContext => result.count,
            _ => 0,
        })
    })
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
        unsafe { option(fname, h, Request::Go, OptCallbacks::default(), None, true) }
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
        unsafe {
            option(
                fname,
                h,
                Request::Abort,
                OptCallbacks::default(),
                None,
                true,
            )
        }
    })
}

/// Asks the server for its exports, calling `list_callback` for each;
/// returns how many there were.
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
        let mandatory = Some(("list_callback", list.is_null()));
        let cbs = OptCallbacks {
            list: Some(list),
            ..OptCallbacks::default()
        };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { option(fname, h, Request::List, cbs, mandatory, true) }
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
        unsafe { option(fname, h, Request::Info, OptCallbacks::default(), None, true) }
    })
}

/// Asks the server which of the requested metadata contexts it supports
/// (all of them if none was requested), calling `context_callback` for
/// each; returns how many there were.
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
        let mandatory = Some(("context_callback", context.is_null()));
        let cbs = OptCallbacks {
            context: Some(context),
            ..OptCallbacks::default()
        };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { option(fname, h, Request::ListMetaContext, cbs, mandatory, true) }
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
        let completion = Some(unsafe { Owned::new(completion_callback) });
        let cbs = OptCallbacks {
            completion,
            ..OptCallbacks::default()
        };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { option(fname, h, Request::Go, cbs, None, false) }
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
        unsafe {
            option(
                fname,
                h,
                Request::Abort,
                OptCallbacks::default(),
                None,
                false,
            )
        }
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
        let completion = Some(unsafe { Owned::new(completion_callback) });
        // SAFETY: as above.
        let list = unsafe { Owned::new(list_callback) };
        let mandatory = Some(("list_callback", list.is_null()));
        // Mid-option callbacks are released before the completion callback.
        let cbs = OptCallbacks {
            list: Some(list),
            context: None,
            completion,
        };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { option(fname, h, Request::List, cbs, mandatory, false) }
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
        let completion = Some(unsafe { Owned::new(completion_callback) });
        let cbs = OptCallbacks {
            completion,
            ..OptCallbacks::default()
        };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { option(fname, h, Request::Info, cbs, None, false) }
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
        let completion = Some(unsafe { Owned::new(completion_callback) });
        // SAFETY: as above.
        let context = unsafe { Owned::new(context_callback) };
        let mandatory = Some(("context_callback", context.is_null()));
        let cbs = OptCallbacks {
            list: None,
            context: Some(context),
            completion,
        };
        // SAFETY: h is NULL or open (see # Safety).
        unsafe { option(fname, h, Request::ListMetaContext, cbs, mandatory, false) }
    })
}
