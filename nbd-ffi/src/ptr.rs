//! The few audited conversions from C pointers to Rust values.
//!
//! Exports never dereference a caller's pointer themselves: they call one of
//! these helpers, whose contracts are stated once here. NULL is always
//! checked; a NULL that libnbd documents as forbidden becomes `EFAULT`.
//!
//! Caller buffers (`nbd_pread`'s `buf`) may be fresh, uninitialised
//! `malloc` memory. Making a `&mut [u8]` over such memory is undefined
//! behaviour in Rust, so [`OutBuf`] keeps a raw pointer and only writes
//! through it (the connection engine adds raw copies of received payload).

use crate::constants::MAX_STRING_LEN;
use crate::errors::Error;
use crate::panic::CReturn;
use std::ffi::{c_char, c_void, CStr};
use std::ptr::NonNull;

/// Borrows the handle behind `h` (generic over the handle type, so that
/// this module depends on nothing above it).
///
/// # Safety
///
/// `h` must be NULL or a pointer returned by `nbd_create` that has not been
/// passed to `nbd_close`, and it must stay open for the lifetime `'a`
/// (libnbd forbids closing a handle while another call on it is running).
pub(crate) unsafe fn handle<'a, H>(h: *mut H) -> Result<&'a H, Error> {
    // SAFETY: by the contract above, a non-NULL h points to a live Handle
    // created by Box::into_raw in nbd_create; only shared access is given out,
    // and the Handle's own Mutex guards its contents.
    unsafe { h.as_ref() }.ok_or(Error::NullPointer { param: "h" })
}

/// Takes back ownership of the handle behind `h`, or `None` for NULL.
///
/// # Safety
///
/// `h` must be NULL or a pointer returned by `nbd_create` that has not been
/// closed, and no other thread may be using it (the rule of `nbd_close`).
pub(crate) unsafe fn take_handle<H>(h: *mut H) -> Option<Box<H>> {
    if h.is_null() {
        return None;
    }
    // SAFETY: h came from Box::into_raw in nbd_create and, by the contract
    // above, is neither closed nor in use, so we are its only owner.
    Some(unsafe { Box::from_raw(h) })
}

/// Reads the C string at `p`, or `None` for NULL. NULL checks are done later
/// with [`required`], after the handle-state check, in libnbd's order.
///
/// # Safety
///
/// `p` must be NULL or point to a NUL-terminated string that stays valid
/// and unmodified for `'a`.
pub(crate) unsafe fn opt_cstr<'a>(p: *const c_char) -> Option<&'a CStr> {
    if p.is_null() {
        None
    } else {
        // SAFETY: non-NULL and NUL-terminated by the contract above.
        Some(unsafe { CStr::from_ptr(p) })
    }
}

/// Fails with `EFAULT` if a mandatory string parameter was NULL.
pub(crate) fn required<'a>(s: Option<&'a CStr>, param: &'static str) -> Result<&'a CStr, Error> {
    s.ok_or(Error::NullPointer { param })
}

/// Fails with `EFAULT` if a mandatory pointer parameter (a buffer, an
/// address) was NULL.
pub(crate) fn required_ptr<T>(p: *const T, param: &'static str) -> Result<NonNull<T>, Error> {
    NonNull::new(p.cast_mut()).ok_or(Error::NullPointer { param })
}

/// Checks a string that is sent to the server (export and metadata context
/// names): the NBD protocol caps them at 4096 bytes (`ENAMETOOLONG`).
pub(crate) fn protocol_string<'a>(s: &'a CStr, what: &'static str) -> Result<&'a CStr, Error> {
    let len = s.to_bytes().len();
    if len > MAX_STRING_LEN {
        Err(Error::NameTooLong { what, len })
    } else {
        Ok(s)
    }
}

/// Reads a NULL-terminated list of strings (`char **`: metadata context
/// queries, block status filters). It may be empty; NULL fails with `EFAULT`.
///
/// # Safety
///
/// `list` must be NULL or point to an array of pointers ending with NULL,
/// each entry a NUL-terminated string, all valid for `'a`.
pub(crate) unsafe fn string_list<'a>(
    list: *const *mut c_char,
    param: &'static str,
) -> Result<Vec<&'a CStr>, Error> {
    let list = required_ptr(list, param)?;
    let mut out = Vec::new();
    loop {
        // SAFETY: the array is NULL-terminated (contract above) and we stop at
        // the terminator, so index out.len() is inside it.
        let entry = unsafe { *list.as_ptr().add(out.len()) };
        if entry.is_null() {
            break;
        }
        // SAFETY: each non-NULL entry is a valid C string (contract above).
        out.push(unsafe { CStr::from_ptr(entry) });
    }
    Ok(out)
}

/// A socket address copied from the caller (`nbd_aio_connect`).
#[derive(Clone, Copy)]
pub(crate) struct SockAddr {
    /// The address bytes, in storage large enough for any family.
    pub(crate) storage: libc::sockaddr_storage,
    /// How many bytes of `storage` are the address.
    pub(crate) len: libc::socklen_t,
}

impl std::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SockAddr")
            .field("family", &self.storage.ss_family)
            .field("len", &self.len)
            .finish()
    }
}

/// Copies the caller's socket address: NULL fails with `EFAULT`, a length
/// that no address has (0, or more than `sockaddr_storage`) with `EINVAL`.
///
/// # Safety
///
/// `addr` must be NULL or point to `addrlen` readable bytes.
pub(crate) unsafe fn sockaddr(
    addr: *const libc::sockaddr,
    addrlen: libc::socklen_t,
) -> Result<SockAddr, Error> {
    let addr = required_ptr(addr, "addr")?;
    let len = addrlen as usize;
    if len == 0 || len > std::mem::size_of::<libc::sockaddr_storage>() {
        return Err(Error::Invalid(format!("invalid address length {addrlen}")));
    }
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: addr is readable for len bytes (contract above) and storage is
    // at least len bytes (checked above); the two cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            std::ptr::addr_of_mut!(storage).cast::<u8>(),
            len,
        )
    };
    Ok(SockAddr {
        storage,
        len: addrlen,
    })
}

/// A string allocated with `malloc`, handed to C which frees it with `free`.
/// It is the return type of every `char *nbd_get_*` call.
pub(crate) struct MallocStr(NonNull<c_char>);

impl MallocStr {
    /// Copies `s` into fresh `malloc` memory (`ENOMEM` if that fails).
    pub(crate) fn new(s: &CStr) -> Result<Self, Error> {
        let bytes = s.to_bytes_with_nul();
        // SAFETY: malloc with a non-zero size; the result is checked below.
        let p = unsafe { libc::malloc(bytes.len()) }.cast::<c_char>();
        let p = NonNull::new(p).ok_or(Error::Os {
            context: "malloc",
            errno: libc::ENOMEM,
        })?;
        // SAFETY: p is a fresh allocation of bytes.len() bytes, which cannot
        // overlap the source.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr().cast(), p.as_ptr(), bytes.len()) };
        Ok(MallocStr(p))
    }

    fn as_cstr(&self) -> &CStr {
        // SAFETY: self.0 holds the NUL-terminated copy made in new() and is
        // owned by self until into_c gives it away.
        unsafe { CStr::from_ptr(self.0.as_ptr()) }
    }
}

impl Drop for MallocStr {
    fn drop(&mut self) {
        // SAFETY: still ours (into_c forgets self), allocated by malloc.
        unsafe { libc::free(self.0.as_ptr().cast()) }
    }
}

impl CReturn for MallocStr {
    type C = *mut c_char;
    fn into_c(self) -> *mut c_char {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
    fn failure() -> *mut c_char {
        std::ptr::null_mut()
    }
    fn trace(&self) -> String {
        crate::text::quote(self.as_cstr().to_bytes())
    }
}

/// A caller's output buffer that may be uninitialised: written only through
/// raw pointer writes, never viewed as a slice.
#[derive(Debug)]
pub(crate) struct OutBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl OutBuf {
    /// Wraps `buf`/`count` as passed to a read call (`EFAULT` for NULL).
    ///
    /// # Safety
    ///
    /// `buf` must be NULL or writable for `count` bytes for as long as the
    /// `OutBuf` is used (for the aio calls: until the command is retired).
    pub(crate) unsafe fn new(buf: *mut c_void, count: usize) -> Result<Self, Error> {
        let ptr = required_ptr(buf.cast::<u8>(), "buf")?;
        Ok(OutBuf { ptr, len: count })
    }

    /// The buffer's address and length, for the engine to hold until the
    /// command completes.
    pub(crate) fn parts(&self) -> (*mut u8, usize) {
        (self.ptr.as_ptr(), self.len)
    }

    /// Sets the whole buffer to zero (`nbd_set_pread_initialize`).
    pub(crate) fn zero(&self) {
        // SAFETY: the region is writable for len bytes (see new()).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), 0, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_string_limit() {
        let ok = std::ffi::CString::new(vec![b'a'; MAX_STRING_LEN]).unwrap();
        let long = std::ffi::CString::new(vec![b'a'; MAX_STRING_LEN + 1]).unwrap();
        assert!(protocol_string(&ok, "export name").is_ok());
        let err = protocol_string(&long, "export name").unwrap_err();
        assert_eq!(err.errno(), libc::ENAMETOOLONG);
    }

    #[test]
    fn outbuf_zeroes_uninitialised_memory() {
        let mut storage = std::mem::MaybeUninit::<[u8; 8]>::uninit();
        // SAFETY: storage is 8 writable bytes for the whole test.
        let buf = unsafe { OutBuf::new(storage.as_mut_ptr().cast(), 8) }.unwrap();
        buf.zero();
        // SAFETY: zero() initialised all 8 bytes.
        let bytes = unsafe { storage.assume_init() };
        assert_eq!(bytes, [0u8; 8]);
        // SAFETY: NULL is allowed and reported.
        let err = unsafe { OutBuf::new(std::ptr::null_mut(), 8) }.unwrap_err();
        assert_eq!(err.errno(), libc::EFAULT);
    }
}
