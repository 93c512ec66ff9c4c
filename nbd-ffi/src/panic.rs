//! The boundary between C and Rust that every exported function goes through.
//!
//! `ffi_boundary!` runs an export's body under `catch_unwind`, so no Rust
//! panic ever unwinds into C code. The body returns `Result<R, Error>`; the
//! boundary turns `Ok` into the C return value and both `Err` and a caught
//! panic into the failure value of the C return type, after recording the
//! error for `nbd_get_error`/`nbd_get_errno`. A test (`tests/boundary.rs`)
//! reads the sources and fails if any `nbd_*` export skips the macro.

use crate::errors::{self, Error};
use std::ffi::{c_char, c_int, CStr};
use std::panic::{self, AssertUnwindSafe};

/// A value an export's body can produce, and how it crosses into C.
pub(crate) trait CReturn {
    /// The C return type.
    type C;
    /// Converts a successful result.
    fn into_c(self) -> Self::C;
    /// The value returned when the call fails (-1, NULL, 0 for the few
    /// unsigned results that have no failure value).
    fn failure() -> Self::C;
    /// How the value reads in a debug trace (`leave: ret=...`).
    fn trace(&self) -> String;
}

impl CReturn for c_int {
    type C = c_int;
    fn into_c(self) -> c_int {
        self
    }
    fn failure() -> c_int {
        -1
    }
    fn trace(&self) -> String {
        self.to_string()
    }
}

/// Cookies and sizes (`int64_t`).
impl CReturn for i64 {
    type C = i64;
    fn into_c(self) -> i64 {
        self
    }
    fn failure() -> i64 {
        -1
    }
    fn trace(&self) -> String {
        self.to_string()
    }
}

/// Counters (`uint64_t`): these calls cannot fail in libnbd, so the only
/// failures (NULL handle, panic) return 0.
impl CReturn for u64 {
    type C = u64;
    fn into_c(self) -> u64 {
        self
    }
    fn failure() -> u64 {
        0
    }
    fn trace(&self) -> String {
        self.to_string()
    }
}

/// `ssize_t` counts.
impl CReturn for isize {
    type C = isize;
    fn into_c(self) -> isize {
        self
    }
    fn failure() -> isize {
        -1
    }
    fn trace(&self) -> String {
        self.to_string()
    }
}

/// Bitmasks (`uint32_t`, `unsigned`): these calls cannot fail in libnbd, so
/// the only failures (NULL handle, panic) return an empty mask.
impl CReturn for u32 {
    type C = u32;
    fn into_c(self) -> u32 {
        self
    }
    fn failure() -> u32 {
        0
    }
    fn trace(&self) -> String {
        self.to_string()
    }
}

/// The private data field (`uintptr_t`); 0 means "not set".
impl CReturn for usize {
    type C = usize;
    fn into_c(self) -> usize {
        self
    }
    fn failure() -> usize {
        0
    }
    fn trace(&self) -> String {
        self.to_string()
    }
}

/// C booleans are `int`s: 1, 0, or -1 for an error.
impl CReturn for bool {
    type C = c_int;
    fn into_c(self) -> c_int {
        c_int::from(self)
    }
    fn failure() -> c_int {
        -1
    }
    fn trace(&self) -> String {
        c_int::from(*self).to_string()
    }
}

/// `void` results (`nbd_close`).
impl CReturn for () {
    type C = ();
    fn into_c(self) {}
    fn failure() {}
    fn trace(&self) -> String {
        String::new()
    }
}

/// A pointer the library keeps ownership of (`nbd_get_error`).
impl CReturn for *const c_char {
    type C = *const c_char;
    fn into_c(self) -> *const c_char {
        self
    }
    fn failure() -> *const c_char {
        std::ptr::null()
    }
    fn trace(&self) -> String {
        format!("{self:p}")
    }
}

/// A pointer handed to the caller (`nbd_create`).
impl<T> CReturn for *mut T {
    type C = *mut T;
    fn into_c(self) -> *mut T {
        self
    }
    fn failure() -> *mut T {
        std::ptr::null_mut()
    }
    fn trace(&self) -> String {
        format!("{self:p}")
    }
}

/// A string with static storage (`nbd_get_version`, `nbd_connection_state`).
impl CReturn for &'static CStr {
    type C = *const c_char;
    fn into_c(self) -> *const c_char {
        self.as_ptr()
    }
    fn failure() -> *const c_char {
        std::ptr::null()
    }
    fn trace(&self) -> String {
        crate::text::quote(self.to_bytes())
    }
}

/// Runs `body` as the whole of the export `fname`; see the module docs.
/// Use it through [`ffi_boundary!`].
pub(crate) fn boundary<R: CReturn>(
    fname: &'static str,
    body: impl FnOnce() -> Result<R, Error>,
) -> R::C {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => value.into_c(),
        Ok(Err(error)) => {
            errors::record(fname, &error);
            R::failure()
        }
        Err(_payload) => {
            errors::record(fname, &Error::Panic);
            R::failure()
        }
    }
}

/// Wraps the body of an exported `nbd_*` function.
///
/// `ffi_boundary!("nbd_x", |fname| { ... })` binds the API name to `fname`
/// for use in the body; `ffi_boundary!("nbd_x", { ... })` does without. The
/// name must be the function's own (`tests/boundary.rs` checks it). The block
/// evaluates to `Result<R, Error>` where `R: CReturn`, and may use `?`.
macro_rules! ffi_boundary {
    ($fname:literal, |$name:ident| $body:block) => {{
        let $name: &'static str = $fname;
        $crate::panic::boundary($name, move || $body)
    }};
    ($fname:literal, $body:block) => {
        $crate::panic::boundary($fname, move || $body)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_failure_value_and_message() {
        let r: c_int = boundary("nbd_test_panic", || -> Result<c_int, Error> {
            panic!("boom");
        });
        assert_eq!(r, -1);
        let p: *const c_char = boundary("nbd_test_panic", || -> Result<*const c_char, Error> {
            panic!("boom");
        });
        assert!(p.is_null());
        // SAFETY: reads this thread's last error, just set by the boundary.
        let msg = unsafe { CStr::from_ptr(crate::errors::nbd_get_error()) };
        assert!(msg
            .to_str()
            .unwrap()
            .starts_with("nbd_test_panic: internal error: panic"));
    }

    #[test]
    fn error_becomes_failure_value() {
        let r = boundary("nbd_test_err", || {
            Err::<i64, _>(Error::NotPermitted("not here".into()))
        });
        assert_eq!(r, -1);
        let r: c_int = boundary("nbd_test_ok", || Ok(true));
        assert_eq!(r, 1);
    }
}
