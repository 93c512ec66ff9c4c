//! Text helpers with no dependency on the rest of the crate: how strings
//! appear in debug traces (used by the call boundary, the pointer helpers
//! and the debug module alike).

use std::ffi::CStr;

/// Formats a string argument or result for a trace: in double quotes, with
/// bytes outside printable ASCII written as `\xNN`.
pub(crate) fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        if (0x20..0x7f).contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// Like [`quote`], or `NULL` for a missing string.
pub(crate) fn quote_opt(s: Option<&CStr>) -> String {
    s.map_or_else(|| "NULL".to_string(), |s| quote(s.to_bytes()))
}
