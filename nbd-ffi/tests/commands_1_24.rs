//! The data commands libnbd 1.16 to 1.24 added or changed, through the C
//! API: 64-bit block status (`nbd_block_status_64`, the filtered
//! `nbd_block_status_filter` and their aio forms), the 32-bit callback's
//! narrowing of 64-bit extents, `nbd_can_block_status_payload`,
//! `nbd_get_extended_headers_negotiated`, `LIBNBD_SIZE_PAYLOAD`, 64-bit
//! counts, `LIBNBD_CMD_FLAG_PAYLOAD_LEN` with `LIBNBD_STRICT_AUTO_FLAG`,
//! `LIBNBD_STRICT_PAYLOAD` and `nbd_poll2`.
//!
//! Real servers where they can show it: qemu-nbd (extended headers, a
//! dirty bitmap as a second context, a sparse 8 GiB image) and nbdkit (no
//! extended headers); the scripted server of `evil/` for what no real
//! server sends (64-bit flags, extents above 4 GiB in chosen places) and to
//! look at the bytes on the wire.

mod evil;

use evil::{last_error, Conn, Export, Mode, BASE_ALLOCATION, BASE_ID};
use nbd_ffi::callbacks::{CompletionCallback, Extent64Callback, ExtentCallback, NbdExtent};
use nbd_ffi::constants::*;
use nbd_ffi::handle::Handle;
use nbd_proto::consts::{cmd, cmd_flags, transmission_flags as tf};
use nbd_proto::wire::request::BlockStatusPayload;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const BITMAP: &str = "qemu:dirty-bitmap:b0";

// ---------------------------------------------------------------------------
// Servers

/// A server process on a Unix socket in its own scratch directory; killed
/// (by its pid) and cleaned up on drop.
struct Server {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "nbd-ffi-cmd124-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Server {
    fn spawn(dir: PathBuf, socket: PathBuf, mut cmd: Command) -> Server {
        let log = std::fs::File::create(dir.join("server.log")).expect("log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let start = Instant::now();
        while UnixStream::connect(&socket).is_err() {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!(
                    "{cmd:?} exited ({status}): {}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{cmd:?} did not listen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Server { child, dir, socket }
    }

    /// qemu-nbd serving `image` (persistent, several clients).
    fn qemu_nbd(dir: PathBuf, image: &Path, format: &str, extra: &[&str]) -> Server {
        let socket = dir.join("qemu.sock");
        let mut cmd = Command::new("qemu-nbd");
        cmd.args(["-f", format, "--persistent", "--shared=8", "-k"])
            .arg(&socket)
            .args(extra)
            .arg(image);
        Server::spawn(dir, socket, cmd)
    }

    /// nbdkit in the foreground with `args` (plugin and parameters).
    fn nbdkit(dir: PathBuf, args: &[&str]) -> Server {
        let socket = dir.join("nbdkit.sock");
        let mut cmd = Command::new("nbdkit");
        cmd.args(["--foreground", "--exit-with-parent", "-U"])
            .arg(&socket)
            .args(args);
        Server::spawn(dir, socket, cmd)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A qcow2 image of 8 GiB with the persistent bitmap `b0`, then 1 MiB
/// written at 0 and 64 KiB at 5 GiB (so the bitmap marks them dirty):
/// its allocation has an extent longer than 4 GiB.
fn qcow2_with_bitmap(dir: &Path) -> PathBuf {
    let img = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("8G"));
    run(Command::new("qemu-img")
        .args(["bitmap", "--add"])
        .arg(&img)
        .arg("b0"));
    run(Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 1 0 1M",
            "-c",
            "write -P 2 5G 64k",
        ])
        .arg(&img));
    img
}

// ---------------------------------------------------------------------------
// The C API, wrapped

/// A handle; closed on drop.
struct H(*mut Handle);

impl H {
    fn new() -> H {
        // SAFETY: no preconditions.
        let h = unsafe { nbd_ffi::handle::nbd_create() };
        assert!(!h.is_null());
        H(h)
    }

    fn add_meta(&self, name: &str) {
        let n = CString::new(name).unwrap();
        // SAFETY: open handle, C string.
        let rc = unsafe { nbd_ffi::negotiation::nbd_add_meta_context(self.0, n.as_ptr()) };
        assert_eq!(rc, 0, "{:?}", last_error());
    }

    fn connect(server: &Server, contexts: &[&str]) -> H {
        let h = H::new();
        for c in contexts {
            h.add_meta(c);
        }
        let path = CString::new(server.socket.to_str().unwrap()).unwrap();
        // SAFETY: open handle, C string.
        let rc = unsafe { nbd_ffi::connect::nbd_connect_unix(h.0, path.as_ptr()) };
        assert_eq!(rc, 0, "connect: {:?}", last_error());
        h
    }

    fn extended(&self) -> c_int {
        // SAFETY: open handle.
        unsafe { nbd_ffi::info::nbd_get_extended_headers_negotiated(self.0) }
    }

    fn can_payload(&self) -> c_int {
        // SAFETY: open handle.
        unsafe { nbd_ffi::info::nbd_can_block_status_payload(self.0) }
    }

    fn block_size(&self, t: c_int) -> i64 {
        // SAFETY: open handle.
        unsafe { nbd_ffi::info::nbd_get_block_size(self.0, t) }
    }

    fn strict(&self) -> u32 {
        // SAFETY: open handle.
        unsafe { nbd_ffi::commands::nbd_get_strict_mode(self.0) }
    }

    fn set_strict(&self, flags: u32) {
        // SAFETY: open handle.
        let rc = unsafe { nbd_ffi::commands::nbd_set_strict_mode(self.0, flags) };
        assert_eq!(rc, 0, "{:?}", last_error());
    }

    fn bs64(&self, count: u64, offset: u64, p: &'static Seen, flags: u32) -> c_int {
        // SAFETY: open handle; the probe is immortal.
        unsafe { nbd_ffi::commands::nbd_block_status_64(self.0, count, offset, p.cb64(), flags) }
    }

    fn bs32(&self, count: u64, offset: u64, p: &'static Seen, flags: u32) -> c_int {
        // SAFETY: as above.
        unsafe { nbd_ffi::commands::nbd_block_status(self.0, count, offset, p.cb32(), flags) }
    }

    fn filter(
        &self,
        count: u64,
        offset: u64,
        contexts: &[&str],
        p: &'static Seen,
        flags: u32,
    ) -> c_int {
        let owned: Vec<CString> = contexts.iter().map(|c| CString::new(*c).unwrap()).collect();
        let mut list: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
        list.push(std::ptr::null_mut());
        // SAFETY: open handle; list is NULL-terminated and outlives the call.
        unsafe {
            nbd_ffi::commands::nbd_block_status_filter(
                self.0,
                count,
                offset,
                list.as_mut_ptr(),
                p.cb64(),
                flags,
            )
        }
    }

    fn pwrite(&self, data: &[u8], offset: u64, flags: u32) -> c_int {
        // SAFETY: open handle; data readable for its length.
        unsafe {
            nbd_ffi::commands::nbd_pwrite(self.0, data.as_ptr().cast(), data.len(), offset, flags)
        }
    }

    fn pread(&self, len: usize, offset: u64) -> Vec<u8> {
        let mut buf = vec![0xeeu8; len];
        // SAFETY: open handle; buf writable for its length.
        let rc = unsafe {
            nbd_ffi::commands::nbd_pread(self.0, buf.as_mut_ptr().cast(), len, offset, 0)
        };
        assert_eq!(rc, 0, "pread: {:?}", last_error());
        buf
    }

    fn trim(&self, count: u64, offset: u64) -> c_int {
        // SAFETY: open handle.
        unsafe { nbd_ffi::commands::nbd_trim(self.0, count, offset, 0) }
    }

    fn zero(&self, count: u64, offset: u64) -> c_int {
        // SAFETY: open handle.
        unsafe { nbd_ffi::commands::nbd_zero(self.0, count, offset, 0) }
    }

    fn poll2(&self, fd: c_int, timeout: c_int) -> c_int {
        // SAFETY: open handle.
        unsafe { nbd_ffi::aio::nbd_poll2(self.0, fd, timeout) }
    }

    fn in_flight(&self) -> c_int {
        // SAFETY: open handle.
        unsafe { nbd_ffi::aio::nbd_aio_in_flight(self.0) }
    }
}

impl Drop for H {
    fn drop(&mut self) {
        // SAFETY: open, closed once.
        unsafe { nbd_ffi::handle::nbd_close(self.0) };
    }
}

/// `nbd_get_errno()` and whether the message names `what`.
fn failed_with(errno: c_int, what: &str) {
    let (e, msg) = last_error();
    assert_eq!(e, errno, "errno of {msg:?}");
    assert!(msg.contains(what), "{msg:?} should mention {what:?}");
}

// ---------------------------------------------------------------------------
// Callback probes

/// One extent callback call: context, offset, (length, flags), `*error`.
type Call = (String, u64, Vec<(u64, u64)>, c_int);

/// Records extent (32- and 64-bit) and completion callback calls.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<Call>>,
    completions: Mutex<Vec<c_int>>,
    frees: AtomicUsize,
}

impl Seen {
    fn new() -> &'static Seen {
        Box::leak(Box::default())
    }

    fn ud(&'static self) -> *mut c_void {
        self as *const Seen as *mut c_void
    }

    fn cb64(&'static self) -> Extent64Callback {
        Extent64Callback {
            callback: Some(on_extent64),
            user_data: self.ud(),
            free: Some(on_free),
        }
    }

    fn cb32(&'static self) -> ExtentCallback {
        ExtentCallback {
            callback: Some(on_extent32),
            user_data: self.ud(),
            free: Some(on_free),
        }
    }

    fn completion(&'static self) -> CompletionCallback {
        CompletionCallback {
            callback: Some(on_complete),
            user_data: self.ud(),
            free: Some(on_free),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The entries given for `context` (panics unless exactly one call).
    fn of(&self, context: &str) -> Vec<(u64, u64)> {
        let calls: Vec<Call> = self
            .calls()
            .into_iter()
            .filter(|c| c.0 == context)
            .collect();
        assert_eq!(calls.len(), 1, "one call for {context}: {:?}", self.calls());
        calls[0].2.clone()
    }

    fn frees(&self) -> usize {
        self.frees.load(Ordering::SeqCst)
    }
}

/// The probe behind `ud`.
///
/// # Safety
///
/// `ud` comes from [`Seen::ud`].
unsafe fn seen<'a>(ud: *mut c_void) -> &'a Seen {
    // SAFETY: the caller's contract: a leaked Seen.
    unsafe { &*(ud as *const Seen) }
}

unsafe extern "C" fn on_free(ud: *mut c_void) {
    // SAFETY: every struct built here carries a Seen.
    unsafe { seen(ud) }.frees.fetch_add(1, Ordering::SeqCst);
}

unsafe extern "C" fn on_complete(ud: *mut c_void, error: *mut c_int) -> c_int {
    // SAFETY: as in on_free; error is valid during the call.
    let (s, e) = unsafe { (seen(ud), *error) };
    s.completions.lock().unwrap().push(e);
    0
}

unsafe extern "C" fn on_extent64(
    ud: *mut c_void,
    context: *const c_char,
    offset: u64,
    entries: *mut NbdExtent,
    n: libc::size_t,
    error: *mut c_int,
) -> c_int {
    // SAFETY: the library passes a C string, n entries and an int, all
    // valid during the call.
    let (s, name, list, e) = unsafe {
        (
            seen(ud),
            CStr::from_ptr(context).to_string_lossy().into_owned(),
            std::slice::from_raw_parts(entries, n).to_vec(),
            *error,
        )
    };
    let pairs = list.iter().map(|x| (x.length, x.flags)).collect();
    s.calls.lock().unwrap().push((name, offset, pairs, e));
    0
}

unsafe extern "C" fn on_extent32(
    ud: *mut c_void,
    context: *const c_char,
    offset: u64,
    entries: *mut u32,
    n: libc::size_t,
    error: *mut c_int,
) -> c_int {
    // SAFETY: as in on_extent64, with n 32-bit words.
    let (s, name, words, e) = unsafe {
        (
            seen(ud),
            CStr::from_ptr(context).to_string_lossy().into_owned(),
            std::slice::from_raw_parts(entries, n).to_vec(),
            *error,
        )
    };
    assert_eq!(words.len() % 2, 0, "entries come in pairs");
    let pairs = words
        .chunks(2)
        .map(|p| (u64::from(p[0]), u64::from(p[1])))
        .collect();
    s.calls.lock().unwrap().push((name, offset, pairs, e));
    0
}

/// The total length of `entries`.
fn total(entries: &[(u64, u64)]) -> u64 {
    entries.iter().map(|e| e.0).sum()
}

// ---------------------------------------------------------------------------
// qemu-nbd: extended headers

#[test]
fn qemu_block_status_64_bit_and_filtered() {
    let dir = scratch("qemu-bs");
    let img = qcow2_with_bitmap(&dir);
    let srv = Server::qemu_nbd(dir, &img, "qcow2", &["-B", "b0"]);
    let h = H::connect(&srv, &[BASE_ALLOCATION, BITMAP]);
    assert_eq!(h.extended(), 1, "qemu-nbd 10 speaks extended headers");
    assert_eq!(h.can_payload(), 1, "and takes a context list");

    // 64-bit: an extent longer than 4 GiB arrives whole.
    let p = Seen::new();
    assert_eq!(h.bs64(6 * GIB, 0, p, 0), 0, "{:?}", last_error());
    let base = p.of(BASE_ALLOCATION);
    assert_eq!(base[0], (MIB, 0), "1 MiB of data first");
    assert!(base[1].0 > 4 * GIB, "one long hole: {base:?}");
    assert_eq!(base[1].1, (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO) as u64);
    assert!(total(&base) >= 6 * GIB);
    let dirty = p.of(BITMAP);
    assert_eq!(dirty[0], (MIB, u64::from(LIBNBD_STATE_DIRTY as u32)));
    assert!(dirty[1].0 > 4 * GIB && dirty[1].1 == 0, "{dirty:?}");
    assert_eq!(p.frees(), 1);

    // 32-bit: the long extent is cut to 4 GiB - 64 MiB, and the list ends there.
    let p32 = Seen::new();
    assert_eq!(h.bs32(6 * GIB, 0, p32, 0), 0, "{:?}", last_error());
    assert_eq!(p32.of(BASE_ALLOCATION), [(MIB, 0), (0xfc00_0000, 3)]);
    assert_eq!(p32.of(BITMAP), [(MIB, 1), (0xfc00_0000, 0)]);

    // Filtered: only the contexts named, with the same answers.
    let f = Seen::new();
    assert_eq!(
        h.filter(6 * GIB, 0, &[BITMAP], f, 0),
        0,
        "{:?}",
        last_error()
    );
    assert_eq!(f.calls().len(), 1, "{:?}", f.calls());
    assert_eq!(f.of(BITMAP), dirty);
    let f2 = Seen::new();
    assert_eq!(
        h.filter(
            6 * GIB,
            0,
            &[BITMAP, BASE_ALLOCATION],
            f2,
            LIBNBD_CMD_FLAG_REQ_ONE
        ),
        0,
        "{:?}",
        last_error()
    );
    assert_eq!(f2.of(BITMAP), [(MIB, 1)], "REQ_ONE: one extent each");
    assert_eq!(f2.of(BASE_ALLOCATION), [(MIB, 0)]);

    // A name that was not negotiated: EINVAL, nothing sent, callback freed.
    let bad = Seen::new();
    assert_eq!(
        h.filter(4096, 0, &["base:allocation", "nope:x"], bad, 0),
        -1
    );
    failed_with(libc::EINVAL, "nope:x not negotiated");
    assert!(bad.calls().is_empty());
    assert_eq!(bad.frees(), 1);

    // The aio form.
    let a = Seen::new();
    let done = Seen::new();
    let names = [CString::new(BITMAP).unwrap()];
    let mut list = [names[0].as_ptr().cast_mut(), std::ptr::null_mut()];
    // SAFETY: open handle; list is NULL-terminated; the probes are immortal.
    let cookie = unsafe {
        nbd_ffi::aio::nbd_aio_block_status_filter(
            h.0,
            8 * MIB,
            0,
            list.as_mut_ptr(),
            a.cb64(),
            done.completion(),
            0,
        )
    };
    assert!(cookie > 0, "{:?}", last_error());
    while h.in_flight() > 0 {
        assert_eq!(h.poll2(-1, 10_000), 1);
    }
    assert_eq!(*done.completions.lock().unwrap(), [0]);
    assert_eq!(a.of(BITMAP)[0], (MIB, 1));
    // SAFETY: open handle.
    assert_eq!(
        unsafe { nbd_ffi::aio::nbd_aio_command_completed(h.0, cookie as u64) },
        1
    );
    assert_eq!((a.frees(), done.frees()), (1, 1));
}

#[test]
fn qemu_payload_len_flag_and_strict_auto_flag() {
    let dir = scratch("qemu-flags");
    let img = dir.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&img)
        .arg("64M"));
    let srv = Server::qemu_nbd(dir, &img, "raw", &[]);
    let h = H::connect(&srv, &[BASE_ALLOCATION]);
    assert_eq!(h.extended(), 1);
    assert_eq!(h.strict(), LIBNBD_STRICT_MASK, "every check on by default");
    let data = [7u8; 4096];

    // AUTO_FLAG on: PAYLOAD_LEN is the library's business either way.
    assert_eq!(h.pwrite(&data, 0, 0), 0, "{:?}", last_error());
    assert_eq!(
        h.pwrite(&data, 4096, LIBNBD_CMD_FLAG_PAYLOAD_LEN),
        0,
        "{:?}",
        last_error()
    );
    let p = Seen::new();
    assert_eq!(
        h.filter(65536, 0, &[BASE_ALLOCATION], p, LIBNBD_CMD_FLAG_PAYLOAD_LEN),
        0
    );
    // Commands without a payload do not take it.
    assert_eq!(
        h.bs64(4096, 0, Seen::new(), LIBNBD_CMD_FLAG_PAYLOAD_LEN),
        -1
    );
    failed_with(libc::EINVAL, "flags");
    assert_eq!(h.pwrite(&data, 0, LIBNBD_CMD_FLAG_REQ_ONE), -1);
    failed_with(libc::EINVAL, "flags");
    assert_eq!(
        h.pwrite(&data, 0, 1 << 16),
        -1,
        "beyond 16 bits: always wrong"
    );
    failed_with(libc::EINVAL, "flags");
    // DF belongs to nbd_pread_structured, not to nbd_pread.
    let mut buf = vec![0u8; 4096];
    // SAFETY: open handle; buf writable for its length.
    let rc = unsafe {
        nbd_ffi::commands::nbd_pread(h.0, buf.as_mut_ptr().cast(), 4096, 0, LIBNBD_CMD_FLAG_DF)
    };
    assert_eq!(rc, -1);
    failed_with(libc::EINVAL, "flags");
    let chunks = evil::Probe::new();
    // SAFETY: as above; the probe is immortal.
    let rc = unsafe {
        nbd_ffi::commands::nbd_pread_structured(
            h.0,
            buf.as_mut_ptr().cast(),
            4096,
            0,
            chunks.chunk(),
            LIBNBD_CMD_FLAG_DF,
        )
    };
    assert_eq!(rc, 0, "{:?}", last_error());
    assert_eq!(buf, data);

    // AUTO_FLAG off: the caller must get it right.
    h.set_strict(LIBNBD_STRICT_MASK & !LIBNBD_STRICT_AUTO_FLAG);
    assert_eq!(h.pwrite(&data, 0, 0), -1);
    failed_with(libc::EINVAL, "PAYLOAD_LEN");
    assert_eq!(
        h.pwrite(&data, 0, LIBNBD_CMD_FLAG_PAYLOAD_LEN),
        0,
        "{:?}",
        last_error()
    );
    assert_eq!(h.filter(65536, 0, &[BASE_ALLOCATION], Seen::new(), 0), -1);
    failed_with(libc::EINVAL, "PAYLOAD_LEN");
    let q = Seen::new();
    assert_eq!(
        h.filter(65536, 0, &[BASE_ALLOCATION], q, LIBNBD_CMD_FLAG_PAYLOAD_LEN),
        0,
        "{:?}",
        last_error()
    );
    assert_eq!(total(&q.of(BASE_ALLOCATION)), 65536);
    assert_eq!(h.pread(4096, 0), data);
}

#[test]
fn qemu_payload_size_and_strict_payload() {
    let dir = scratch("qemu-payload");
    let img = dir.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&img)
        .arg("128M"));
    let srv = Server::qemu_nbd(dir, &img, "raw", &[]);
    let h = H::connect(&srv, &[]);
    let max = h.block_size(LIBNBD_SIZE_MAXIMUM);
    assert!(max > 0, "qemu-nbd advertises a maximum");
    let payload = h.block_size(LIBNBD_SIZE_PAYLOAD);
    assert_eq!(payload, max.clamp(MIB as i64, 64 * MIB as i64));
    assert_eq!(h.block_size(4), -1, "no size type 4");
    failed_with(libc::EINVAL, "size_type");

    // Above the payload limit: ERANGE before anything is sent.
    let big = vec![1u8; payload as usize + 512];
    assert_eq!(h.pwrite(&big, 0, 0), -1);
    failed_with(libc::ERANGE, "maximum payload size is");
    // Up to it: fine.
    assert_eq!(
        h.pwrite(&big[..payload as usize], 0, 0),
        0,
        "{:?}",
        last_error()
    );
    // Without STRICT_PAYLOAD only libnbd's hard 64 MiB cap is left.
    h.set_strict(LIBNBD_STRICT_MASK & !LIBNBD_STRICT_PAYLOAD);
    let huge = vec![1u8; 64 * MIB as usize + 512];
    assert_eq!(h.pwrite(&huge, 0, 0), -1);
    failed_with(libc::ERANGE, "too large");
    assert_eq!(h.pread(512, 0), vec![1u8; 512], "the connection is fine");
}

#[test]
fn qemu_trim_and_zero_beyond_4_gib() {
    let dir = scratch("qemu-big");
    let img = dir.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&img)
        .arg("8G"));
    let srv = Server::qemu_nbd(dir, &img, "raw", &["--discard=unmap"]);
    let h = H::connect(&srv, &[BASE_ALLOCATION]);
    assert_eq!(h.extended(), 1);
    let data = vec![0x5au8; 65536];
    for off in [GIB, 5 * GIB, 7 * GIB] {
        assert_eq!(h.pwrite(&data, off, 0), 0, "{:?}", last_error());
    }
    // One 5 GiB zero request from 1 GiB on: all three writes are gone.
    assert_eq!(
        h.zero(5 * GIB + 65536, GIB - 65536 / 2),
        0,
        "{:?}",
        last_error()
    );
    assert!(h.pread(65536 / 2, GIB).iter().all(|&b| b == 0));
    assert!(h.pread(65536, 5 * GIB).iter().all(|&b| b == 0));
    assert_eq!(h.pread(65536, 7 * GIB), data, "beyond the range: kept");
    // One 6 GiB trim from 2 GiB on (whether the file system punches the
    // hole is up to it).
    assert_eq!(h.trim(6 * GIB, 2 * GIB), 0, "{:?}", last_error());
    // The zeroed range reads as one extent of zeroes longer than 4 GiB.
    let p = Seen::new();
    assert_eq!(h.bs64(6 * GIB, 2 * GIB, p, 0), 0, "{:?}", last_error());
    let e = p.of(BASE_ALLOCATION);
    assert!(e[0].0 >= 4 * GIB, "{e:?}");
    assert_ne!(e[0].1 & LIBNBD_STATE_ZERO as u64, 0, "{e:?}");
    assert!(total(&e) >= 6 * GIB);
}

// ---------------------------------------------------------------------------
// nbdkit: no extended headers

#[test]
fn nbdkit_without_extended_headers() {
    let srv = Server::nbdkit(scratch("nbdkit"), &["memory", "8G"]);
    let h = H::connect(&srv, &[BASE_ALLOCATION]);
    if h.extended() == 1 {
        eprintln!("this nbdkit speaks extended headers: nothing to test here");
        return;
    }
    assert_eq!(h.can_payload(), 0, "never without extended headers");

    // Filtering needs extended headers: ENOTSUP, callback freed unused.
    let p = Seen::new();
    assert_eq!(h.filter(4096, 0, &[BASE_ALLOCATION], p, 0), -1);
    failed_with(libc::ENOTSUP, "extended headers");
    assert!(p.calls().is_empty());
    assert_eq!(p.frees(), 1);

    // Counts are 32 bits on the wire: ERANGE above that.
    assert_eq!(h.trim(5 * GIB, 0), -1);
    failed_with(libc::ERANGE, "too large");
    assert_eq!(h.zero(4 * GIB, 0), -1);
    failed_with(libc::ERANGE, "too large");
    assert_eq!(h.zero(4 * GIB - 4096, 0), 0, "{:?}", last_error());

    // block_status_64 works over compact replies too.
    let q = Seen::new();
    assert_eq!(h.bs64(GIB, 0, q, 0), 0, "{:?}", last_error());
    assert!(total(&q.of(BASE_ALLOCATION)) > 0);

    // Writes: PAYLOAD_LEN is cleared under AUTO_FLAG, refused without it.
    assert_eq!(
        h.pwrite(&[1; 512], 0, LIBNBD_CMD_FLAG_PAYLOAD_LEN),
        0,
        "{:?}",
        last_error()
    );
    h.set_strict(LIBNBD_STRICT_MASK & !LIBNBD_STRICT_AUTO_FLAG);
    assert_eq!(h.pwrite(&[1; 512], 0, LIBNBD_CMD_FLAG_PAYLOAD_LEN), -1);
    failed_with(libc::EINVAL, "PAYLOAD_LEN");
    assert_eq!(h.pwrite(&[2; 512], 0, 0), 0, "{:?}", last_error());

    // No maximum from the server: 32 MiB, else the clamped maximum.
    let max = h.block_size(LIBNBD_SIZE_MAXIMUM);
    let want = if max == 0 {
        32 * MIB as i64
    } else {
        max.clamp(MIB as i64, 64 * MIB as i64)
    };
    assert_eq!(h.block_size(LIBNBD_SIZE_PAYLOAD), want);
}

#[test]
fn poll2_wakes_for_the_other_descriptor() {
    let srv = Server::nbdkit(scratch("poll2"), &["memory", "1M"]);
    let h = H::connect(&srv, &[]);
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (r, w) = (fds[0], fds[1]);

    // Idle and the pipe empty: a zero timeout expires.
    assert_eq!(h.poll2(r, 0), 0, "{:?}", last_error());
    // A byte in the pipe ends an unbounded wait on an idle handle.
    // SAFETY: w is the pipe's write end.
    assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
    assert_eq!(h.poll2(r, -1), 1);
    assert_eq!(h.poll2(r, -1), 1, "still readable: still wakes");
    let mut b = [0u8; 1];
    // SAFETY: r is the pipe's read end; b has room for one byte.
    assert_eq!(unsafe { libc::read(r, b.as_mut_ptr().cast(), 1) }, 1);

    // With a command in flight, poll2 drives it like nbd_poll.
    let buf = Box::leak(vec![0u8; 4096].into_boxed_slice());
    let done = Seen::new();
    // SAFETY: open handle; the buffer is leaked, so it outlives the command.
    let cookie = unsafe {
        nbd_ffi::aio::nbd_aio_pread(
            h.0,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            done.completion(),
            0,
        )
    };
    assert!(cookie > 0);
    while h.in_flight() > 0 {
        assert_eq!(h.poll2(r, 10_000), 1, "{:?}", last_error());
    }
    assert_eq!(*done.completions.lock().unwrap(), [0]);
    // -1: no extra descriptor, like nbd_poll.
    assert_eq!(h.poll2(-1, 0), 0);
    // SAFETY: closes our own pipe.
    unsafe {
        libc::close(r);
        libc::close(w);
    }
}

// ---------------------------------------------------------------------------
// Scripted server

/// Connects with `base:allocation` to an extended-headers server whose
/// first block status request `answer` replies to (then it serves).
fn scripted_bs(
    answer: impl FnOnce(&mut evil::Evil, &evil::Req) + Send + 'static,
) -> (Conn, &'static Seen) {
    let c = Conn::ready(
        Export::new(Mode::Extended).sized(1 << 40),
        evil::setup::meta,
        move |s| {
            let r = s.expect_request(cmd::BLOCK_STATUS);
            answer(s, &r);
            s.serve();
        },
    );
    (c, Seen::new())
}

#[test]
fn narrow_callback_drops_a_later_extent_with_64_bit_flags() {
    let (c, p) = scripted_bs(|s, r| {
        s.reply_extents(r, BASE_ID, &[(4096, 1), (4096, 1 << 33), (4096, 2)], true);
    });
    // SAFETY: open handle; the probe is immortal.
    let rc = unsafe { nbd_ffi::commands::nbd_block_status(c.h, 1 << 36, 0, p.cb32(), 0) };
    assert_eq!(rc, 0, "{:?}", last_error());
    assert_eq!(
        p.calls(),
        [(BASE_ALLOCATION.to_string(), 0, vec![(4096, 1)], 0)]
    );
    c.finish();
}

#[test]
fn narrow_callback_truncates_a_long_extent_and_stops() {
    let (c, p) = scripted_bs(|s, r| {
        s.reply_extents(r, BASE_ID, &[(4096, 1), (5 * GIB, 3), (4096, 2)], true);
    });
    // SAFETY: as above.
    let rc = unsafe { nbd_ffi::commands::nbd_block_status(c.h, 1 << 36, 0, p.cb32(), 0) };
    assert_eq!(rc, 0, "{:?}", last_error());
    assert_eq!(p.of(BASE_ALLOCATION), [(4096, 1), (0xfc00_0000, 3)]);
    c.finish();
}

#[test]
fn narrow_callback_reports_eoverflow_for_first_extent_flags() {
    let (c, p) = scripted_bs(|s, r| {
        s.reply_extents(r, BASE_ID, &[(8 * GIB, 1 << 40), (4096, 3)], true);
    });
    // SAFETY: as above.
    let rc = unsafe { nbd_ffi::commands::nbd_block_status(c.h, 1 << 36, 0, p.cb32(), 0) };
    assert_eq!(rc, -1);
    failed_with(libc::EOVERFLOW, "32 bits");
    assert_eq!(
        p.calls(),
        [(
            BASE_ALLOCATION.to_string(),
            0,
            vec![(0xfc00_0000, 0)],
            libc::EOVERFLOW
        )]
    );
    assert!(!c.is_dead(), "only the command fails");
    c.assert_good_read(0, 512);
    c.finish();
}

#[test]
fn wide_callback_gets_every_64_bit_value() {
    let ext = [
        (4096, 1u64 << 33),
        (5 * GIB, 3),
        (4096, u64::from(u32::MAX) + 7),
    ];
    let (c, p) = scripted_bs(move |s, r| {
        s.reply_extents(r, BASE_ID, &ext, true);
    });
    // SAFETY: as above.
    let rc = unsafe { nbd_ffi::commands::nbd_block_status_64(c.h, 1 << 36, 0, p.cb64(), 0) };
    assert_eq!(rc, 0, "{:?}", last_error());
    assert_eq!(p.of(BASE_ALLOCATION), ext);
    assert_eq!(p.frees(), 1);
    c.finish();
}

/// An extended-headers export with two contexts; `payload_flag` says
/// whether it advertises `NBD_FLAG_BLOCK_STAT_PAYLOAD`.
fn two_context_export(payload_flag: bool) -> Export {
    let mut ex = Export::new(Mode::Extended).sized(8 * GIB);
    ex.contexts.push((11, BITMAP.to_string()));
    if payload_flag {
        ex.flags |= tf::BLOCK_STAT_PAYLOAD;
    }
    ex
}

fn meta_both(h: *mut Handle) {
    evil::setup::meta(h);
    let n = CString::new(BITMAP).unwrap();
    // SAFETY: open handle, C string.
    assert_eq!(
        unsafe { nbd_ffi::negotiation::nbd_add_meta_context(h, n.as_ptr()) },
        0
    );
}

#[test]
fn filter_sends_the_context_ids_as_payload() {
    let c = Conn::ready(two_context_export(true), meta_both, |s| {
        let r = s.expect_request(cmd::BLOCK_STATUS);
        assert_eq!(r.h.flags, cmd_flags::PAYLOAD_LEN | cmd_flags::REQ_ONE);
        assert_eq!(r.len(), 12, "the header gives the payload's length");
        let payload = BlockStatusPayload::decode(r.payload.as_deref().expect("a payload"))
            .expect("a block status payload");
        assert_eq!(
            payload,
            BlockStatusPayload {
                length: 5 * GIB,
                ids: vec![11]
            }
        );
        s.reply_extents(&r, 11, &[(5 * GIB, 1)], true);
        s.serve();
    });
    let h = H(c.h);
    let p = Seen::new();
    assert_eq!(h.can_payload(), 1);
    assert_eq!(
        h.filter(5 * GIB, 4096, &[BITMAP], p, LIBNBD_CMD_FLAG_REQ_ONE),
        0,
        "{:?}",
        last_error()
    );
    std::mem::forget(h); // Conn closes it.
    assert_eq!(
        p.calls(),
        [(BITMAP.to_string(), 4096, vec![(5 * GIB, 1)], 0)]
    );
    c.finish();
}

#[test]
fn filter_needs_the_servers_support_under_strict_commands() {
    let c = Conn::ready(two_context_export(false), meta_both, |s| {
        // Only the request sent with STRICT_COMMANDS off arrives.
        let r = s.expect_request(cmd::BLOCK_STATUS);
        assert_ne!(r.h.flags & cmd_flags::PAYLOAD_LEN, 0);
        s.reply_extents(&r, BASE_ID, &[(4096, 0)], true);
        s.serve();
    });
    let h = H(c.h);
    assert_eq!(h.can_payload(), 0);
    let p = Seen::new();
    assert_eq!(h.filter(4096, 0, &[BASE_ALLOCATION], p, 0), -1);
    failed_with(libc::EINVAL, "block status payload flag");
    assert_eq!(p.frees(), 1);
    h.set_strict(LIBNBD_STRICT_MASK & !LIBNBD_STRICT_COMMANDS);
    let q = Seen::new();
    assert_eq!(
        h.filter(4096, 0, &[BASE_ALLOCATION], q, 0),
        0,
        "{:?}",
        last_error()
    );
    assert_eq!(q.of(BASE_ALLOCATION), [(4096, 0)]);
    std::mem::forget(h);
    c.finish();
}

#[test]
fn strict_payload_refuses_writes_above_32_mib_when_the_server_says_nothing() {
    let c = Conn::ready(
        Export::new(Mode::Extended).sized(GIB),
        evil::setup::none,
        |s| {
            // The oversized write never arrives; the small one does.
            let r = s.expect_request(cmd::WRITE);
            assert_eq!(r.len(), 32 * MIB);
            assert_ne!(r.h.flags & cmd_flags::PAYLOAD_LEN, 0, "AUTO_FLAG sets it");
            s.reply_ok(&r);
            s.serve();
        },
    );
    let h = H(c.h);
    assert_eq!(h.block_size(LIBNBD_SIZE_MAXIMUM), 0);
    assert_eq!(h.block_size(LIBNBD_SIZE_PAYLOAD), 32 * MIB as i64);
    let data = vec![3u8; 32 * MIB as usize + 1];
    assert_eq!(h.pwrite(&data, 0, 0), -1);
    failed_with(libc::ERANGE, "maximum payload size is 33554432");
    assert_eq!(h.pwrite(&data[1..], 0, 0), 0, "{:?}", last_error());
    std::mem::forget(h);
    c.finish();
}
