//! What the engine calls back: the per-command and per-option hooks the C
//! API implements with its callback structs, and the narrowing of extents
//! for 32-bit extent callbacks.

use crate::callbacks::NbdExtent;
use std::ffi::CString;

/// Callbacks of one command. Dropping the object releases them (`.free`).
pub(crate) trait CommandHooks: Send {
    /// A piece of a structured read: `subbuf` is inside the caller's buffer.
    fn chunk(
        &mut self,
        _subbuf: *const u8,
        _count: usize,
        _offset: u64,
        _status: u32,
        _error: &mut i32,
    ) -> i32 {
        0
    }
    /// Whether the extents go to [`CommandHooks::extent64`] (64-bit
    /// entries) rather than [`CommandHooks::extent`].
    fn wide(&self) -> bool {
        false
    }
    /// Extents for one context, 64-bit (`nbd_extent64_callback`).
    fn extent64(
        &mut self,
        _context: &CString,
        _offset: u64,
        _entries: &mut [NbdExtent],
        _error: &mut i32,
    ) -> i32 {
        0
    }
    /// Extents for one context, as (length, flags) pairs.
    fn extent(
        &mut self,
        _context: &CString,
        _offset: u64,
        _entries: &mut [u32],
        _error: &mut i32,
    ) -> i32 {
        0
    }
    /// The command finished; return 1 to retire it at once.
    fn complete(&mut self, _error: &mut i32) -> i32 {
        0
    }
}

/// Callbacks of an option issued in opt mode.
pub(crate) trait OptHooks: Send {
    /// An export from `NBD_OPT_LIST`.
    fn export(&mut self, _name: &str, _description: &str) -> i32 {
        0
    }
    /// A context from `NBD_OPT_LIST_META_CONTEXT`.
    fn context(&mut self, _name: &str) -> i32 {
        0
    }
    /// The option finished.
    fn complete(&mut self, _error: &mut i32) -> i32 {
        0
    }
}

/// What a 32-bit extent callback gets for a length above 32 bits: the
/// largest multiple of 64 MiB that fits (libnbd's value); later extents
/// of that reply are left out.
pub(crate) const TRUNCATED_EXTENT: u32 = !(64 * 1024 * 1024 - 1);

/// Narrows 64-bit extents for a 32-bit `nbd_extent_callback`, as libnbd
/// does: a length above 32 bits becomes [`TRUNCATED_EXTENT`] and ends the
/// list; flags above 32 bits end the list before that extent, unless it is
/// the first, which is then passed with flags 0 and the second value is
/// true (the command fails with `EOVERFLOW`).
pub(crate) fn narrow_extents(extents: &[nbd_proto::wire::reply::Extent]) -> (Vec<u32>, bool) {
    let mut entries = Vec::with_capacity(extents.len() * 2);
    let mut overflow = false;
    for (i, e) in extents.iter().enumerate() {
        let (length, truncated) = match u32::try_from(e.length) {
            Ok(l) => (l, false),
            Err(_) => (TRUNCATED_EXTENT, true),
        };
        let flags = match u32::try_from(e.flags) {
            Ok(f) => f,
            Err(_) if i == 0 => {
                overflow = true;
                entries.extend([length, 0]);
                break;
            }
            Err(_) => break,
        };
        entries.extend([length, flags]);
        if truncated {
            break;
        }
    }
    (entries, overflow)
}
