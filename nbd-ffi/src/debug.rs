//! Debug messages: the per-handle switch, the optional debug callback, the
//! default output on stderr, and the helpers that format call traces.
//!
//! With debugging on, every call on a handle is traced as `enter: <args>`
//! and `leave: ret=<value>` or `leave: error="<message>"` (see
//! `Handle::call`). Messages go to the debug callback if one is set, else
//! to stderr as `libnbd: debug: <handle name>: <context>: <message>`, the
//! format libnbd uses; `<context>` is the API function's name.

use crate::callbacks::{DebugCallback, Owned};
use crate::errors::Error;
use crate::handle::HandleInner;
use crate::settings::DebugSettings;
use std::ffi::{c_int, CStr, CString};
use std::io::Write;

pub(crate) use crate::text::{quote, quote_opt};

impl DebugSettings {
    /// The settings of a new handle: on if `LIBNBD_DEBUG` is exactly "1".
    pub(crate) fn from_env() -> Self {
        let enabled = std::env::var_os("LIBNBD_DEBUG").is_some_and(|v| v == "1");
        DebugSettings {
            enabled,
            callback: None,
        }
    }

    /// Emits one message if debugging is on.
    pub(crate) fn emit(&self, handle_name: &CStr, context: &str, msg: &str) {
        if !self.enabled {
            return;
        }
        if let Some(cb) = &self.callback {
            let context = c_text(context);
            let msg = c_text(msg);
            if cb.call(&context, &msg) {
                return;
            }
        }
        let line = format!(
            "libnbd: debug: {}: {context}: {msg}\n",
            String::from_utf8_lossy(handle_name.to_bytes())
        );
        // One write per line so that lines from several threads do not mix;
        // a failing stderr is not worth failing the API call for.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// A C copy of a message; messages built here hold no NUL, but be safe.
fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', "\\x00")).unwrap_or_default()
}

/// `nbd_set_debug_callback`: sends the handle's debug messages to the
/// callback instead of stderr, replacing (and freeing) any callback set
/// before. The callback runs with the handle locked and must not call
/// `nbd_*` functions on the same handle.
pub(crate) fn set_debug_callback(
    inner: &mut HandleInner,
    callback: Owned<DebugCallback>,
) -> Result<c_int, Error> {
    // Dropping the previous callback runs its free.
    inner.debug.callback = Some(callback);
    Ok(0)
}

/// `nbd_clear_debug_callback`: removes (and frees) the debug callback;
/// messages go to stderr again.
pub(crate) fn clear_debug_callback(inner: &mut HandleInner) -> Result<c_int, Error> {
    inner.debug.callback = None;
    Ok(0)
}

pub use crate::exports::debug::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(b"ab\n\"c"), "\"ab\\x0a\"c\"");
        assert_eq!(quote_opt(None), "NULL");
        assert_eq!(quote(&[0xff]), "\"\\xff\"");
    }
}
