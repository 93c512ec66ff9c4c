//! nbd-rs extensions to the libnbd API, declared in `include/libnbd-ext.h`
//! and exported under their own symbol version node (`NBDRS_0.2`), never
//! changing a libnbd default. Their names start with `nbdrs_`.
//!
//! * `nbdrs_set_timeout` / `nbdrs_get_timeout`: a limit on how long a
//!   waiting call lets the server make no progress (see `crate::wait`).

use crate::errors::Error;
use crate::handle::Handle;
use crate::ptr;
use std::ffi::c_int;

/// The symbol version node of the extensions (in `libnbd.syms`).
pub const EXTENSION_NODE: &str = "NBDRS_0.2";

/// The exported extension functions, in the order `libnbd.syms` lists them.
pub const EXTENSION_SYMBOLS: [&str; 2] = ["nbdrs_get_timeout", "nbdrs_set_timeout"];

/// Sets the handle's timeout, in milliseconds: when a waiting call (the
/// synchronous API, `nbd_poll`, `nbd_poll2`) finds that the server made no
/// progress for this long while something from it was due, the connection
/// is killed: the call fails with `ETIMEDOUT`, every command in flight
/// completes with `ETIMEDOUT`, and the handle is dead. 0 (the default)
/// waits forever, as libnbd does. Values above `INT64_MAX` fail with
/// `EINVAL`. May be called at any time, from any thread; a call already
/// waiting uses the new value from its next wake-up.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbdrs_set_timeout(h: *mut Handle, ms: u64) -> c_int {
    ffi_boundary!("nbdrs_set_timeout", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("ms={ms}"),
            |inner| -> Result<c_int, Error> {
                if i64::try_from(ms).is_err() {
                    return Err(Error::Invalid("timeout too large".into()));
                }
                inner.wait.set_timeout_ms(ms);
                Ok(0)
            },
        )
    })
}

/// Returns the handle's timeout in milliseconds (0: none), or -1 with the
/// error set for a NULL handle.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbdrs_get_timeout(h: *mut Handle) -> i64 {
    ffi_boundary!("nbdrs_get_timeout", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| -> Result<i64, Error> {
            Ok(i64::try_from(inner.wait.timeout_ms()).unwrap_or(i64::MAX))
        })
    })
}
