//! The C API against arbitrary server bytes: a thread plays the fuzz input
//! as the server's byte stream over a socketpair, in frames each sent once
//! the client has sent a given number of bytes (see [`frames`]; a real
//! server answers what it was asked, and the library rightly refuses a
//! reply to an option it has not sent yet), then hangs up; the client, through
//! nbd-ffi's `extern "C"` functions, connects in opt mode and runs
//! opt_info, opt_list, opt_go, get_size, pread, pwrite, flush, trim, zero,
//! cache, pread_structured, block_status, block_status_64 and
//! block_status_filter (64-bit extents and the filter's payload under
//! extended headers). Asserts: no panic (the
//! libfuzzer hook aborts even on a panic the library would catch), every
//! call returns a value its man page allows, every callback sees arguments
//! inside what was asked, and every `.free` runs exactly once.
//!
//! Seeds (fuzz/seeds/abi/) are the server side of real nbdkit, qemu-nbd
//! and nbd-server sessions running this same sequence, recorded by
//! fuzz/record_abi_seeds.py.
//!
//! The input's length also picks the TLS mode (see [`tls_mode`]): with
//! `ALLOW` or `REQUIRE` the client asks for STARTTLS, and an input that
//! acknowledges it sends its following bytes to OpenSSL's handshake through
//! the engine's TLS layer (PSK credentials from a fixed file), so the glue
//! between them meets garbage too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nbd_ffi::callbacks::{
    ChunkCallback, Extent64Callback, ExtentCallback, ListCallback, NbdExtent,
};
use nbd_ffi::handle::Handle;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::io::Read;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The length of every data command.
const LEN: usize = 4096;

/// What one callback struct saw.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    frees: AtomicUsize,
    /// The request: (offset, length) for chunk and extent callbacks.
    offset: u64,
    len: u64,
    /// The caller's buffer, for chunk callbacks.
    buf: usize,
}

unsafe extern "C" fn on_free(ud: *mut c_void) {
    // SAFETY: every user_data here points to a Seen that outlives the handle.
    let s = unsafe { &*(ud as *const Seen) };
    s.frees.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_list(ud: *mut c_void, name: *const c_char, desc: *const c_char) -> c_int {
    // SAFETY: as in on_free; both strings are valid C strings for the call.
    let s = unsafe { &*(ud as *const Seen) };
    assert!(!name.is_null() && !desc.is_null());
    // SAFETY: checked non-NULL; the library passes C strings.
    unsafe {
        let _ = CStr::from_ptr(name).to_bytes().len();
        let _ = CStr::from_ptr(desc).to_bytes().len();
    }
    s.calls.fetch_add(1, Ordering::SeqCst);
    0
}

unsafe extern "C" fn on_chunk(
    ud: *mut c_void,
    subbuf: *const c_void,
    count: libc::size_t,
    offset: u64,
    status: c_uint,
    error: *mut c_int,
) -> c_int {
    // SAFETY: as in on_free; error is valid for the call.
    let (s, e) = unsafe { (&*(ud as *const Seen), *error) };
    s.calls.fetch_add(1, Ordering::SeqCst);
    let start = subbuf as usize;
    assert!(
        start >= s.buf && start + count <= s.buf + s.len as usize,
        "chunk outside the buffer"
    );
    assert!(
        offset >= s.offset && offset + count as u64 <= s.offset + s.len,
        "chunk outside the request"
    );
    assert_eq!(
        (start - s.buf) as u64,
        offset - s.offset,
        "chunk at the wrong place"
    );
    assert!(status <= 2, "unknown status {status}");
    assert!(e >= 0, "negative errno {e}");
    0
}

unsafe extern "C" fn on_extent(
    ud: *mut c_void,
    context: *const c_char,
    offset: u64,
    entries: *mut u32,
    nr_entries: libc::size_t,
    error: *mut c_int,
) -> c_int {
    // SAFETY: as in on_free; context is a C string, entries holds nr_entries
    // words for the call.
    let (s, e) = unsafe { (&*(ud as *const Seen), *error) };
    s.calls.fetch_add(1, Ordering::SeqCst);
    assert!(!context.is_null());
    // SAFETY: checked non-NULL.
    let _ = unsafe { CStr::from_ptr(context) };
    assert_eq!(offset, s.offset, "extents from another offset");
    assert!(nr_entries.is_multiple_of(2), "odd number of extent words");
    if nr_entries > 0 {
        assert!(!entries.is_null());
        // SAFETY: entries holds nr_entries words.
        let words = unsafe { std::slice::from_raw_parts(entries, nr_entries) };
        let _ = words.iter().copied().fold(0u64, |a, w| a ^ w as u64);
    }
    assert!(e >= 0);
    0
}

unsafe extern "C" fn on_extent64(
    ud: *mut c_void,
    context: *const c_char,
    offset: u64,
    entries: *mut NbdExtent,
    nr_entries: libc::size_t,
    error: *mut c_int,
) -> c_int {
    // SAFETY: as in on_free; context is a C string, entries holds nr_entries
    // extents for the call.
    let (s, e) = unsafe { (&*(ud as *const Seen), *error) };
    s.calls.fetch_add(1, Ordering::SeqCst);
    assert!(!context.is_null());
    // SAFETY: checked non-NULL.
    let _ = unsafe { CStr::from_ptr(context) };
    assert_eq!(offset, s.offset, "extents from another offset");
    if nr_entries > 0 {
        assert!(!entries.is_null());
        // SAFETY: entries holds nr_entries extents.
        let extents = unsafe { std::slice::from_raw_parts(entries, nr_entries) };
        for x in extents {
            // The man page: a length never exceeds INT64_MAX.
            assert!(x.length <= i64::MAX as u64, "extent length above INT64_MAX");
        }
    }
    assert!(e >= 0);
    0
}

fn ud(s: &Seen) -> *mut c_void {
    s as *const Seen as *mut c_void
}

/// The input as frames: `[u32 LE need][u16 LE len][len bytes]` means
/// "once the client has sent `need` bytes in all, send these"; a truncated
/// frame sends what there is.
fn frames(mut input: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    while input.len() >= 6 {
        let need = u32::from_le_bytes(input[..4].try_into().unwrap()) as usize;
        let len = u16::from_le_bytes(input[4..6].try_into().unwrap()) as usize;
        let data = &input[6..(6 + len).min(input.len())];
        input = &input[6 + data.len()..];
        out.push((need, data));
    }
    out
}

/// How long the server waits for client bytes a frame needs before it
/// decides the client is waiting for it (mutated inputs ask for bytes the
/// client will never send).
const IDLE_MS: c_int = 2;

/// Polls `fd` for `events`; returns the revents (0 on timeout).
fn poll1(fd: c_int, events: i16, ms: c_int) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r <= 0 {
        0
    } else {
        p.revents
    }
}

/// Reads what the client sent; None once it closed.
fn drain(fd: c_int, total: &mut usize) -> Option<()> {
    let mut buf = [0u8; 65536];
    // SAFETY: fd is open; buf is writable.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n == 0 {
        return None;
    }
    if n > 0 {
        *total += n as usize;
    } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock {
        return None;
    }
    Some(())
}

/// The fake server: plays the frames, reading the client as it goes (so a
/// client writing a large request never blocks against it), then hangs up
/// its sending side and reads until the client closes.
fn serve(input: Vec<u8>) -> (c_int, std::thread::JoinHandle<()>) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let server = std::thread::spawn(move || {
        let fd = theirs.as_raw_fd();
        let mut total = 0usize;
        'frames: for (need, data) in frames(&input) {
            while total < need {
                if poll1(fd, libc::POLLIN, IDLE_MS) == 0 {
                    break;
                }
                if drain(fd, &mut total).is_none() {
                    break 'frames;
                }
            }
            let mut rest = data;
            while !rest.is_empty() {
                let ev = poll1(fd, libc::POLLIN | libc::POLLOUT, 1000);
                if ev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                    && drain(fd, &mut total).is_none()
                {
                    break 'frames;
                }
                if ev & libc::POLLOUT != 0 {
                    // SAFETY: fd is open; rest is readable.
                    let n = unsafe {
                        libc::send(
                            fd,
                            rest.as_ptr().cast(),
                            rest.len(),
                            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                        )
                    };
                    if n > 0 {
                        rest = &rest[n as usize..];
                    } else if std::io::Error::last_os_error().kind()
                        != std::io::ErrorKind::WouldBlock
                    {
                        break 'frames;
                    }
                }
            }
        }
        let _ = theirs.shutdown(std::net::Shutdown::Write);
        let mut reader = &theirs;
        let mut buf = vec![0u8; 65536];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    (ours.into_raw_fd(), server)
}

/// `LIBNBD_TLS_*` for an input: DISABLE for most, ALLOW or REQUIRE for
/// two lengths in five (the recorded seeds keep their meaning at the other
/// lengths).
fn tls_mode(input: &[u8]) -> c_int {
    match input.len() % 5 {
        1 => 1,
        2 => 2,
        _ => 0,
    }
}

/// A PSK file for the TLS runs, written once.
fn psk_file() -> &'static CStr {
    static FILE: std::sync::OnceLock<std::ffi::CString> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("nbd-fuzz-abi-{}.psk", std::process::id()));
        std::fs::write(&path, format!("fuzz:{}\n", "42".repeat(32))).expect("PSK file");
        std::ffi::CString::new(path.to_str().expect("UTF-8 temp dir")).expect("no NUL")
    })
}

fn ok_or_fail(rc: c_int, what: &str) -> bool {
    assert!(rc == 0 || rc == -1, "{what} returned {rc}");
    rc == 0
}

fuzz_target!(|data: &[u8]| {
    let (fd, server) = serve(data.to_vec());
    let mut buf = vec![0u8; LEN];
    let wdata = vec![0x5au8; LEN];
    let list = Seen::default();
    let chunk = Seen {
        offset: 0,
        len: LEN as u64,
        buf: buf.as_ptr() as usize,
        ..Seen::default()
    };
    let extent = Seen {
        offset: 0,
        len: 65536,
        ..Seen::default()
    };
    let extent64 = Seen {
        offset: 0,
        len: 65536,
        ..Seen::default()
    };
    let filtered = Seen {
        offset: 0,
        len: 65536,
        ..Seen::default()
    };
    let connected;
    // SAFETY: every call gets the open handle h, valid C strings, buffers
    // valid for their lengths, and callbacks whose user_data (list, chunk,
    // extent) outlive the handle.
    unsafe {
        let h: *mut Handle = nbd_ffi::handle::nbd_create();
        assert!(!h.is_null());
        assert_eq!(nbd_ffi::opt::nbd_set_opt_mode(h, true), 0);
        let tls = tls_mode(data);
        if tls != 0 {
            assert_eq!(nbd_ffi::tls::nbd_set_tls(h, tls), 0);
            assert_eq!(
                nbd_ffi::tls::nbd_set_tls_psk_file(h, psk_file().as_ptr()),
                0
            );
            assert_eq!(nbd_ffi::tls::nbd_set_tls_username(h, c"fuzz".as_ptr()), 0);
        }
        assert_eq!(
            nbd_ffi::negotiation::nbd_set_export_name(h, c"disk".as_ptr()),
            0
        );
        assert_eq!(
            nbd_ffi::negotiation::nbd_add_meta_context(h, c"base:allocation".as_ptr()),
            0
        );
        connected = ok_or_fail(nbd_ffi::connect::nbd_connect_socket(h, fd), "connect");
        if connected {
            ok_or_fail(nbd_ffi::opt::nbd_opt_info(h), "opt_info");
            let n = nbd_ffi::opt::nbd_opt_list(
                h,
                ListCallback {
                    callback: Some(on_list),
                    user_data: ud(&list),
                    free: Some(on_free),
                },
            );
            assert!(n >= -1, "opt_list returned {n}");
            if n >= 0 {
                assert_eq!(
                    n as usize,
                    list.calls.load(Ordering::SeqCst),
                    "opt_list count"
                );
            }
            ok_or_fail(nbd_ffi::opt::nbd_opt_go(h), "opt_go");
        }
        let size = nbd_ffi::info::nbd_get_size(h);
        assert!(size >= -1, "get_size returned {size}");
        ok_or_fail(
            nbd_ffi::commands::nbd_pread(h, buf.as_mut_ptr().cast(), LEN, 0, 0),
            "pread",
        );
        ok_or_fail(
            nbd_ffi::commands::nbd_pwrite(h, wdata.as_ptr().cast(), LEN, 4096, 0),
            "pwrite",
        );
        ok_or_fail(nbd_ffi::commands::nbd_flush(h, 0), "flush");
        ok_or_fail(nbd_ffi::commands::nbd_trim(h, LEN as u64, 8192, 0), "trim");
        ok_or_fail(nbd_ffi::commands::nbd_zero(h, LEN as u64, 12288, 0), "zero");
        ok_or_fail(nbd_ffi::commands::nbd_cache(h, LEN as u64, 0, 0), "cache");
        ok_or_fail(
            nbd_ffi::commands::nbd_pread_structured(
                h,
                buf.as_mut_ptr().cast(),
                LEN,
                0,
                ChunkCallback {
                    callback: Some(on_chunk),
                    user_data: ud(&chunk),
                    free: Some(on_free),
                },
                0,
            ),
            "pread_structured",
        );
        ok_or_fail(
            nbd_ffi::commands::nbd_block_status(
                h,
                65536,
                0,
                ExtentCallback {
                    callback: Some(on_extent),
                    user_data: ud(&extent),
                    free: Some(on_free),
                },
                0,
            ),
            "block_status",
        );
        ok_or_fail(
            nbd_ffi::commands::nbd_block_status_64(
                h,
                65536,
                0,
                Extent64Callback {
                    callback: Some(on_extent64),
                    user_data: ud(&extent64),
                    free: Some(on_free),
                },
                0,
            ),
            "block_status_64",
        );
        let mut contexts = [c"base:allocation".as_ptr().cast_mut(), std::ptr::null_mut()];
        ok_or_fail(
            nbd_ffi::commands::nbd_block_status_filter(
                h,
                65536,
                0,
                contexts.as_mut_ptr(),
                Extent64Callback {
                    callback: Some(on_extent64),
                    user_data: ud(&filtered),
                    free: Some(on_free),
                },
                0,
            ),
            "block_status_filter",
        );
        let dead = nbd_ffi::state::nbd_aio_is_dead(h);
        assert!(dead == 0 || dead == 1);
        nbd_ffi::handle::nbd_close(h);
    }
    // opt_list is only called on a connected handle.
    for (s, given) in [
        (&list, connected),
        (&chunk, true),
        (&extent, true),
        (&extent64, true),
        (&filtered, true),
    ] {
        assert_eq!(
            s.frees.load(Ordering::SeqCst),
            usize::from(given),
            ".free must run exactly once"
        );
    }
    server.join().expect("server thread");
});
