//! The callback structs of the C API and the rule that goes with them.
//!
//! Each struct is passed by value and holds a function pointer, the caller's
//! `user_data`, and an optional `free` function. libnbd promises to call
//! `free(user_data)` exactly once, when the callback can no longer be
//! called, and that includes the case where the API call fails at once.
//! `Owned` is how this crate keeps that promise: an export wraps every
//! callback struct it receives in an `Owned` before doing anything else, and
//! `Owned`'s `Drop` calls `free`. Whether the call fails, succeeds and stores
//! the callback, or panics, the `free` runs once, when the last owner lets go.
//!
//! The Rust names are mapped to libnbd's (`nbd_completion_callback`, ...) by
//! `cbindgen.toml`; the layout (three pointer-sized members) is checked
//! against libnbd's header by `tests/header.rs`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// The type of the `free` member every callback struct has. (Crate-private:
/// the structs spell it out so that no extra typedef lands in the header.)
pub(crate) type FreeFn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// `nbd_completion_callback`: called once when an asynchronous command or
/// option finishes; `*error` holds its errno (0 on success).
#[repr(C)]
#[derive(Debug)]
pub struct CompletionCallback {
    /// Returns 1 to retire the command at once, 0 to leave it for
    /// `nbd_aio_command_completed`; may be NULL.
    pub callback: Option<unsafe extern "C" fn(user_data: *mut c_void, error: *mut c_int) -> c_int>,
    /// Passed back unchanged.
    pub user_data: *mut c_void,
    /// Releases `user_data`; may be NULL.
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `nbd_chunk_callback`: called for each piece of a structured read reply.
#[repr(C)]
#[derive(Debug)]
pub struct ChunkCallback {
    /// Gets the chunk (inside the caller's buffer), its length, its offset in
    /// the export, one of the `LIBNBD_READ_*` statuses and the error so far.
    pub callback: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            subbuf: *const c_void,
            count: libc::size_t,
            offset: u64,
            status: c_uint,
            error: *mut c_int,
        ) -> c_int,
    >,
    /// Passed back unchanged.
    pub user_data: *mut c_void,
    /// Releases `user_data`; may be NULL.
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `nbd_extent_callback`: called with the extents of one metadata context.
#[repr(C)]
#[derive(Debug)]
pub struct ExtentCallback {
    /// Gets the context name, the starting offset and `nr_entries` 32-bit
    /// words (length, flags pairs), plus the error so far.
    pub callback: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            metacontext: *const c_char,
            offset: u64,
            entries: *mut u32,
            nr_entries: libc::size_t,
            error: *mut c_int,
        ) -> c_int,
    >,
    /// Passed back unchanged.
    pub user_data: *mut c_void,
    /// Releases `user_data`; may be NULL.
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `nbd_extent`: one entry of a 64-bit block status reply, as passed to
/// `nbd_extent64_callback`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdExtent {
    /// Length of the extent in bytes (never above `INT64_MAX`).
    pub length: u64,
    /// The context's flags for the extent (`LIBNBD_STATE_*` for
    /// `base:allocation`).
    pub flags: u64,
}

/// `nbd_extent64_callback`: receives the extents of one metadata context
/// from `nbd_block_status_64` and `nbd_block_status_filter`.
#[repr(C)]
#[derive(Debug)]
pub struct Extent64Callback {
    /// Called once per context with the extents starting at `offset`.
    pub callback: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            metacontext: *const c_char,
            offset: u64,
            entries: *mut NbdExtent,
            nr_entries: libc::size_t,
            error: *mut c_int,
        ) -> c_int,
    >,
    /// Passed to `callback` and `free`.
    pub user_data: *mut c_void,
    /// Called once when the callback will not be called again.
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `nbd_list_callback`: called once per export the server lists.
#[repr(C)]
#[derive(Debug)]
pub struct ListCallback {
    /// Gets the export's name and description.
    pub callback: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            name: *const c_char,
            description: *const c_char,
        ) -> c_int,
    >,
    /// Passed back unchanged.
    pub user_data: *mut c_void,
    /// Releases `user_data`; may be NULL.
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `nbd_context_callback`: called once per metadata context the server lists.
#[repr(C)]
#[derive(Debug)]
pub struct ContextCallback {
    /// Gets the context's name.
    pub callback:
        Option<unsafe extern "C" fn(user_data: *mut c_void, name: *const c_char) -> c_int>,
    /// Passed back unchanged.
    pub user_data: *mut c_void,
    /// Releases `user_data`; may be NULL.
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// `nbd_debug_callback`: receives debug messages instead of stderr.
#[repr(C)]
#[derive(Debug)]
pub struct DebugCallback {
    /// Gets the API function the message comes from and the message.
    pub callback: Option<
        unsafe extern "C" fn(
            user_data: *mut c_void,
            context: *const c_char,
            msg: *const c_char,
        ) -> c_int,
    >,
    /// Passed back unchanged.
    pub user_data: *mut c_void,
    /// Releases `user_data`; may be NULL.
    pub free: Option<unsafe extern "C" fn(user_data: *mut c_void)>,
}

/// What [`Owned`] needs to know about a callback struct.
pub(crate) trait CallbackStruct {
    /// The `user_data` member.
    fn user_data(&self) -> *mut c_void;
    /// The `free` member.
    fn free_fn(&self) -> FreeFn;
    /// Whether the `callback` member is NULL.
    fn has_no_function(&self) -> bool;
}

macro_rules! callback_struct {
    ($($t:ty),*) => {$(
        impl CallbackStruct for $t {
            fn user_data(&self) -> *mut c_void {
                self.user_data
            }
            fn free_fn(&self) -> FreeFn {
                self.free
            }
            fn has_no_function(&self) -> bool {
                self.callback.is_none()
            }
        }
    )*};
}
callback_struct!(
    CompletionCallback,
    ChunkCallback,
    ExtentCallback,
    Extent64Callback,
    ListCallback,
    ContextCallback,
    DebugCallback
);

/// A callback struct received from C, whose `free` runs exactly once: when
/// this value is dropped. Never copy the inner struct out.
#[derive(Debug)]
pub(crate) struct Owned<T: CallbackStruct> {
    raw: T,
}

impl<T: CallbackStruct> Owned<T> {
    /// Takes charge of a callback struct passed to an export.
    ///
    /// # Safety
    ///
    /// `raw` must be what the C caller passed, not yet owned by anything else;
    /// its `free` (if any) must be safe to call once with its `user_data`, and
    /// its `callback` (if any) with its `user_data` until then.
    pub(crate) unsafe fn new(raw: T) -> Self {
        Owned { raw }
    }

    /// Whether the caller passed no callback at all: both `.callback` and
    /// `.free` NULL. libnbd rejects that (`EFAULT`) where a callback is
    /// mandatory; a struct with only `.free` set counts as given.
    pub(crate) fn is_null(&self) -> bool {
        self.raw.has_no_function() && self.raw.free_fn().is_none()
    }

    /// The struct, to call its `callback` with its `user_data`.
    pub(crate) fn raw(&self) -> &T {
        &self.raw
    }
}

impl Owned<DebugCallback> {
    /// Passes one debug message to the callback, if it has a function.
    /// Returns false when `.callback` is NULL so the caller can fall back.
    pub(crate) fn call(&self, context: &CStr, msg: &CStr) -> bool {
        match self.raw.callback {
            Some(f) => {
                // SAFETY: Owned::new's contract makes f callable with this
                // user_data until the free; the strings outlive the call.
                unsafe { f(self.raw.user_data, context.as_ptr(), msg.as_ptr()) };
                true
            }
            None => false,
        }
    }
}

// SAFETY: libnbd calls a handle's callbacks (and their free functions) on
// whichever thread is inside an API call on that handle; a C caller agrees to
// that by passing them. The pointers are only used while the handle's lock
// is held, so they are never used from two threads at once.
unsafe impl<T: CallbackStruct> Send for Owned<T> {}

impl<T: CallbackStruct> Drop for Owned<T> {
    fn drop(&mut self) {
        if let Some(free) = self.raw.free_fn() {
            // SAFETY: Owned::new's contract; Drop runs once, so free does too.
            unsafe { free(self.raw.user_data()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static FREES: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn count_free(user_data: *mut c_void) {
        assert_eq!(user_data as usize, 42);
        FREES.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn free_runs_once_on_drop() {
        let raw = CompletionCallback {
            callback: None,
            // An address that is never dereferenced (no provenance needed).
            user_data: std::ptr::null_mut::<u8>().wrapping_add(42).cast::<c_void>(),
            free: Some(count_free),
        };
        // SAFETY: count_free accepts this user_data.
        let owned = unsafe { Owned::new(raw) };
        assert!(
            !owned.is_null(),
            "a free function alone counts as a callback"
        );
        assert_eq!(FREES.load(Ordering::SeqCst), 0);
        drop(owned);
        assert_eq!(FREES.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn layout_is_three_pointers() {
        let three = 3 * std::mem::size_of::<*const c_void>();
        assert_eq!(std::mem::size_of::<CompletionCallback>(), three);
        assert_eq!(std::mem::size_of::<ChunkCallback>(), three);
        assert_eq!(std::mem::size_of::<ExtentCallback>(), three);
        assert_eq!(std::mem::size_of::<ListCallback>(), three);
        assert_eq!(std::mem::size_of::<ContextCallback>(), three);
        assert_eq!(std::mem::size_of::<DebugCallback>(), three);
    }
}
