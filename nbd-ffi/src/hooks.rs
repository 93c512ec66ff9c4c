//! The bridge from C callback structs to the engine's hooks: a command's
//! chunk, extent and completion callbacks, and an option's list, context and
//! completion callbacks. Each wrapper owns its callbacks through
//! [`Owned`], so dropping it (when the engine is done) runs every `.free`
//! exactly once.

use crate::callbacks::{
    ChunkCallback, CompletionCallback, ContextCallback, Extent64Callback, ExtentCallback,
    ListCallback, NbdExtent, Owned,
};
use crate::engine::{CommandHooks, OptHooks};
use std::ffi::{c_int, CString};

/// Callbacks of one data command.
#[derive(Debug, Default)]
pub(crate) struct CmdCallbacks {
    /// `nbd_aio_pread_structured`'s chunk callback.
    pub(crate) chunk: Option<Owned<ChunkCallback>>,
    /// `nbd_aio_block_status`'s extent callback.
    pub(crate) extent: Option<Owned<ExtentCallback>>,
    /// The 64-bit extent callback of `nbd_aio_block_status_64` and
    /// `nbd_aio_block_status_filter`.
    pub(crate) extent64: Option<Owned<Extent64Callback>>,
    /// The completion callback of every `nbd_aio_*` command.
    pub(crate) completion: Option<Owned<CompletionCallback>>,
}

impl CmdCallbacks {
    /// Boxes the callbacks for the engine, or `None` when there are none.
    pub(crate) fn boxed(self) -> Option<Box<dyn CommandHooks>> {
        if self.chunk.is_none()
            && self.extent.is_none()
            && self.extent64.is_none()
            && self.completion.is_none()
        {
            None
        } else {
            Some(Box::new(self))
        }
    }
}

impl CommandHooks for CmdCallbacks {
    fn wide(&self) -> bool {
        self.extent64.is_some()
    }

    fn extent64(
        &mut self,
        context: &CString,
        offset: u64,
        entries: &mut [NbdExtent],
        error: &mut i32,
    ) -> i32 {
        let Some(cb) = &self.extent64 else { return 0 };
        let raw = cb.raw();
        match raw.callback {
            // SAFETY: Owned's contract makes the callback callable with its
            // user_data; entries and context outlive the call.
            Some(f) => unsafe {
                f(
                    raw.user_data,
                    context.as_ptr(),
                    offset,
                    entries.as_mut_ptr(),
                    entries.len(),
                    error as *mut c_int,
                )
            },
            None => 0,
        }
    }

    fn chunk(
        &mut self,
        subbuf: *const u8,
        count: usize,
        offset: u64,
        status: u32,
        error: &mut i32,
    ) -> i32 {
        let Some(cb) = &self.chunk else { return 0 };
        let raw = cb.raw();
        match raw.callback {
            // SAFETY: Owned's contract makes the callback callable with its
            // user_data; subbuf lies inside the caller's own buffer.
            Some(f) => unsafe {
                f(
                    raw.user_data,
                    subbuf.cast(),
                    count,
                    offset,
                    status,
                    error as *mut c_int,
                )
            },
            None => 0,
        }
    }

    fn extent(
        &mut self,
        context: &CString,
        offset: u64,
        entries: &mut [u32],
        error: &mut i32,
    ) -> i32 {
        let Some(cb) = &self.extent else { return 0 };
        let raw = cb.raw();
        match raw.callback {
            // SAFETY: as above; entries and context outlive the call.
            Some(f) => unsafe {
                f(
                    raw.user_data,
                    context.as_ptr(),
                    offset,
                    entries.as_mut_ptr(),
                    entries.len(),
                    error as *mut c_int,
                )
            },
            None => 0,
        }
    }

    fn complete(&mut self, error: &mut i32) -> i32 {
        let Some(cb) = &self.completion else { return 0 };
        let raw = cb.raw();
        match raw.callback {
            // SAFETY: as above.
            Some(f) => unsafe { f(raw.user_data, error as *mut c_int) },
            None => 0,
        }
    }
}

/// Callbacks of one opt-mode request.
#[derive(Debug, Default)]
pub(crate) struct OptCallbacks {
    /// `nbd_opt_list`'s callback.
    pub(crate) list: Option<Owned<ListCallback>>,
    /// `nbd_opt_list_meta_context`'s callback.
    pub(crate) context: Option<Owned<ContextCallback>>,
    /// The `nbd_aio_opt_*` completion callback.
    pub(crate) completion: Option<Owned<CompletionCallback>>,
}

impl OptCallbacks {
    /// Boxes the callbacks for the engine, or `None` when there are none.
    pub(crate) fn boxed(self) -> Option<Box<dyn OptHooks>> {
        if self.list.is_none() && self.context.is_none() && self.completion.is_none() {
            None
        } else {
            Some(Box::new(self))
        }
    }
}

impl OptHooks for OptCallbacks {
    fn export(&mut self, name: &str, description: &str) -> i32 {
        let Some(cb) = &self.list else { return 0 };
        let raw = cb.raw();
        let (Ok(n), Ok(d)) = (CString::new(name), CString::new(description)) else {
            return 0;
        };
        match raw.callback {
            // SAFETY: Owned's contract; the strings outlive the call.
            Some(f) => unsafe { f(raw.user_data, n.as_ptr(), d.as_ptr()) },
            None => 0,
        }
    }

    fn context(&mut self, name: &str) -> i32 {
        let Some(cb) = &self.context else { return 0 };
        let raw = cb.raw();
        let Ok(n) = CString::new(name) else { return 0 };
        match raw.callback {
            // SAFETY: Owned's contract; the string outlives the call.
            Some(f) => unsafe { f(raw.user_data, n.as_ptr()) },
            None => 0,
        }
    }

    fn complete(&mut self, error: &mut i32) -> i32 {
        let Some(cb) = &self.completion else { return 0 };
        let raw = cb.raw();
        match raw.callback {
            // SAFETY: Owned's contract.
            Some(f) => unsafe { f(raw.user_data, error as *mut c_int) },
            None => 0,
        }
    }
}
