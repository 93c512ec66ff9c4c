//! Harness for the drop-in tests of our `libnbd.so.0`.
//!
//! It starts real NBD servers (qemu-nbd, nbdkit, nbd-server) on Unix
//! sockets in temporary directories and stops them by PID when dropped,
//! finds (or builds) the library under test, runs programs against it
//! with `LD_LIBRARY_PATH` and checks that it really was the library they
//! loaded, and builds the C examples of `c-examples/`.
//!
//! Environment:
//! - `NBD_TEST_LIBDIR`: the directory holding the `libnbd.so.0` under
//!   test.  Unset: `make -C <repo> lib` builds ours into `target/release`.
//!   Pointing it at a system directory (`/usr/lib/x86_64-linux-gnu`)
//!   validates the suite itself against Debian's libnbd.
//! - `NBD_TEST_INCLUDE`: the directory holding the `libnbd.h` the C
//!   examples are compiled with (default: `include/` of the repository,
//!   or `/usr/include` when `NBD_TEST_LIBDIR` is a system directory).

pub mod pki;
pub mod qemu;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The libnbd release whose API our library implements, as
/// `nbd_get_version` and `libnbd.pc` report it: nbd-ffi's
/// `[package.metadata.libnbd] version`.
pub fn libnbd_api_version() -> String {
    let manifest =
        fs::read_to_string(repo_root().join("nbd-ffi/Cargo.toml")).expect("nbd-ffi/Cargo.toml");
    let mut in_section = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == "[package.metadata.libnbd]";
        } else if in_section {
            if let Some(v) = line.strip_prefix("version") {
                return v
                    .trim()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches('"')
                    .to_string();
            }
        }
    }
    panic!("nbd-ffi/Cargo.toml lacks [package.metadata.libnbd] version")
}

/// The package name `nbd_get_package_name` reports, on libnbd and on ours
/// alike (ours names itself in `nbd_get_version_extra`).
pub const DEBIAN_PACKAGE_NAME: &str = "libnbd";

/// How long a server may take to start listening (a hang detector: a
/// loaded machine may need far more than usual).
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a command run by [`run`] may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The root of the repository (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Finds `program` on `PATH`, or fails the test saying which Debian
/// package provides it.
pub fn require(program: &str, package: &str) -> PathBuf {
    if program.contains('/') {
        let p = PathBuf::from(program);
        if p.is_file() {
            return p;
        }
    } else if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(program);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`{program}` was not found: install the Debian package `{package}` \
         (scripts/install-deps.sh installs everything the tests need)"
    );
}

// ---------------------------------------------------------------------------
// Scratch directories and images

/// A temporary directory, removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates a new, empty temporary directory.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("nbd-tests-")
            .tempdir()
            .expect("create a temporary directory");
        Scratch { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path for `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Creates an image with `qemu-img create` (format `raw` or `qcow2`).
pub fn qemu_img_create(path: &Path, format: &str, size: u64) {
    let qemu_img = require("qemu-img", "qemu-utils");
    run_ok(
        Command::new(qemu_img)
            .args(["create", "-q", "-f", format])
            .arg(path)
            .arg(size.to_string()),
    );
}

/// Runs `qemu-io` commands (such as `write -P 0x55 1M 64k`) on an image.
pub fn qemu_io(path: &Path, format: &str, commands: &[&str]) {
    let qemu_io = require("qemu-io", "qemu-utils");
    let mut cmd = Command::new(qemu_io);
    cmd.args(["-f", format]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.arg(path);
    run_ok(&mut cmd);
}

/// The content of the nbdkit `pattern` plugin: every 8-byte aligned word
/// holds its own offset, big-endian.
pub fn pattern_data(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let o = offset + i;
            let word = o & !7;
            (word >> (8 * (7 - (o & 7)))) as u8
        })
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The SHA-256 of `data`, as printed by `sha256sum`.
pub fn sha256(data: &[u8]) -> String {
    let sum = require("sha256sum", "coreutils");
    let mut child = Command::new(sum)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("sha256sum output");
    writer.join().expect("writer").expect("write to sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a checksum")
        .to_string()
}

/// The SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    sha256(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

// ---------------------------------------------------------------------------
// Running commands

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output (lossily decoded).
    pub stdout: String,
    /// Its standard error (lossily decoded).
    pub stderr: String,
}

impl Output {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// A shell-like rendering of a command, with the environment variables
/// the harness sets, for the test log.
pub fn describe(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if k == "PATH" || k == "LC_ALL" {
            continue;
        }
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|<>()".contains(c)) {
            let _ = write!(s, " '{}'", a.replace('\'', "'\\''"));
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

/// Runs a command to completion (killing it after `timeout`), printing
/// the command line and what it wrote.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let shown = describe(cmd);
    println!("$ {shown}");
    let mut out_file = tempfile::tempfile().expect("temporary file");
    let mut err_file = tempfile::tempfile().expect("temporary file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_file.try_clone().expect("dup")))
        .stderr(Stdio::from(err_file.try_clone().expect("dup")))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{shown}` did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let read = |f: &mut fs::File| {
        let mut v = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut v).expect("read output");
        String::from_utf8_lossy(&v).into_owned()
    };
    let out = Output {
        status,
        stdout: read(&mut out_file),
        stderr: read(&mut err_file),
    };
    const SHOW: usize = 4000;
    let clip = |s: &str| -> String {
        if s.len() > SHOW {
            let mut end = SHOW;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... [{} bytes]", &s[..end], s.len())
        } else {
            s.to_string()
        }
    };
    if !out.stdout.is_empty() {
        println!("{}", clip(&out.stdout).trim_end());
    }
    if !out.stderr.is_empty() {
        println!("[stderr] {}", clip(&out.stderr).trim_end());
    }
    println!("[exit {}]", out.code());
    out
}

/// [`run_timeout`] with [`DEFAULT_TIMEOUT`].
pub fn run(cmd: &mut Command) -> Output {
    run_timeout(cmd, DEFAULT_TIMEOUT)
}

/// Runs a command and asserts that it succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let shown = describe(cmd);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "`{shown}` failed with exit code {}:\n{}{}",
        out.code(),
        out.stdout,
        out.stderr
    );
    out
}

// ---------------------------------------------------------------------------
// The library under test

/// True for the directories the dynamic linker searches by default:
/// pointing `NBD_TEST_LIBDIR` at one of them means "test with the system
/// (Debian) libnbd", which is how the suite itself is validated.
pub fn is_system_dir(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    ["/usr/lib", "/lib", "/usr/lib64", "/lib64", "/usr/local/lib"]
        .iter()
        .any(|sys| dir.starts_with(sys))
}

/// The directory holding the `libnbd.so.0` under test: `NBD_TEST_LIBDIR`
/// if set, else ours, built by `make -C <repo> lib` into `target/release`.
pub fn libnbd_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("NBD_TEST_LIBDIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => {
                let root = repo_root();
                require("make", "make");
                println!("building the library under test with `make -C {} lib`", root.display());
                let out = run_timeout(
                    Command::new("make").arg("-C").arg(&root).arg("lib"),
                    Duration::from_secs(1200),
                );
                assert!(
                    out.status.success(),
                    "`make -C {} lib` failed (exit {}); set NBD_TEST_LIBDIR to test a prebuilt library:\n{}",
                    root.display(),
                    out.code(),
                    out.stderr
                );
                root.join("target").join("release")
            }
        };
        assert!(
            dir.join("libnbd.so.0").exists(),
            "{} has no libnbd.so.0 (set NBD_TEST_LIBDIR to the directory of the library under test, \
             or fix `make lib`)",
            dir.display()
        );
        let dir = dir.canonicalize().expect("canonical library directory");
        println!("library under test: {}/libnbd.so.0", dir.display());
        dir
    })
    .clone()
}

/// Python for `nbdsh -c`: prints `LOADED <path>` for the `libnbd.so` the
/// process has mapped (from `/proc/self/maps`), whatever name and version
/// that library reports: how the tests tell which library a script ran on
/// (ours reports libnbd's package name and the libnbd version it
/// implements, so names alone cannot tell).
pub const NBDSH_PRINT_LOADED: &str = "import re as _re\n\
    for _l in open('/proc/self/maps'):\n    \
    _m = _re.search(r'(/\\S*/libnbd\\.so[.0-9]*)$', _l.strip())\n    \
    if _m:\n        print('LOADED', _m.group(1)); break\n";

/// The library an nbdsh run with [`NBDSH_PRINT_LOADED`] had mapped.
pub fn loaded_library(stdout: &str) -> PathBuf {
    let path = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LOADED "))
        .unwrap_or_else(|| panic!("no LOADED line (was NBDSH_PRINT_LOADED run?):\n{stdout}"));
    Path::new(path)
        .canonicalize()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Asserts that an nbdsh run with [`NBDSH_PRINT_LOADED`] ran on the
/// library under test ([`libnbd_dir`]).
pub fn assert_ran_on_library_under_test(stdout: &str) {
    let want = libnbd_dir()
        .join("libnbd.so.0")
        .canonicalize()
        .expect("the library under test");
    assert_eq!(
        loaded_library(stdout),
        want,
        "the script did not run on the library under test:\n{stdout}"
    );
}

/// Which libnbd a program should load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    /// Debian's, found by the dynamic linker as usual: the reference.
    Debian,
    /// The library under test, through `LD_LIBRARY_PATH`.
    UnderTest,
}

/// A command for `program` that will load the given libnbd.  `nbdsh`
/// starts `python3` from `PATH`, so `/usr/bin` is put first for it to find
/// the system Python that has the `nbd` module.
pub fn tool(program: impl AsRef<OsStr>, lib: Lib) -> Command {
    let mut cmd = Command::new(program);
    match lib {
        Lib::Debian => {
            cmd.env_remove("LD_LIBRARY_PATH");
        }
        Lib::UnderTest => {
            cmd.env("LD_LIBRARY_PATH", libnbd_dir());
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![PathBuf::from("/usr/bin"), PathBuf::from("/bin")];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    cmd.env("LC_ALL", "C");
    cmd
}

/// Asserts that `binary`, run with `LD_LIBRARY_PATH` set as [`tool`] sets
/// it for `lib`, resolves `libnbd.so.0` to that library (asks the dynamic
/// linker with `LD_TRACE_LOADED_OBJECTS`, as `ldd` does).
pub fn assert_binary_loads(binary: &Path, lib: Lib) {
    let out = run_ok(tool(binary, lib).env("LD_TRACE_LOADED_OBJECTS", "1"));
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("libnbd.so.0 "))
        .unwrap_or_else(|| panic!("{} does not link libnbd.so.0", binary.display()));
    let path = line
        .split("=>")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    let loaded = Path::new(path)
        .canonicalize()
        .unwrap_or_else(|e| panic!("libnbd.so.0 resolved to {path}: {e}"));
    match lib {
        Lib::UnderTest => {
            let want = libnbd_dir()
                .join("libnbd.so.0")
                .canonicalize()
                .expect("library");
            assert_eq!(
                loaded,
                want,
                "{} loaded {} instead of the library under test",
                binary.display(),
                loaded.display()
            );
        }
        Lib::Debian => assert!(
            is_system_dir(&loaded),
            "{} loaded {} instead of the system libnbd",
            binary.display(),
            loaded.display()
        ),
    }
}

/// Runs `nbdsh` on the library under test and asserts that the process
/// mapped that library (see [`NBDSH_PRINT_LOADED`]).  Checked once per test
/// binary.
pub fn assert_library_under_test_loaded() {
    under_test_identity();
}

/// "NAME VERSION" as the library under test reports them
/// (`nbd_get_package_name`, `nbd_get_version`), read through `nbdsh` once
/// the run is known to have mapped that library; programs such as
/// `nbdinfo --version` print the same.
pub fn under_test_identity() -> String {
    static IDENTITY: OnceLock<String> = OnceLock::new();
    IDENTITY
        .get_or_init(|| {
            let nbdsh = require("nbdsh", "libnbd-bin");
            let out = run(tool(&nbdsh, Lib::UnderTest).args([
                "-c",
                NBDSH_PRINT_LOADED,
                "-c",
                "print('PACKAGE', h.get_package_name(), h.get_version())",
            ]));
            assert!(
                out.status.success(),
                "nbdsh failed (is python3-libnbd installed? it must be importable by /usr/bin/python3):\n{}",
                out.stderr
            );
            assert_ran_on_library_under_test(&out.stdout);
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix("PACKAGE "))
                .expect("nbdsh printed the package")
                .to_string()
        })
        .clone()
}

/// Lines of `text` without those naming a libnbd implementation and its
/// version (`nbdinfo --version` prints one), which legitimately differ.
pub fn without_library_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let first = l.split_whitespace().next().unwrap_or("");
            first != DEBIAN_PACKAGE_NAME
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

// ---------------------------------------------------------------------------
// libnbd 1.24 (the newest Debian ships), extracted under one root

/// Where `scripts/install-deps.sh` extracts libnbd 1.24 and nbdkit 1.48
/// (with `../shared/tools/libnbd-latest.sh`) unless `LIBNBD_LATEST` says
/// otherwise.
pub const LIBNBD_LATEST_DEFAULT: &str = "/tmp/libnbd-latest";

/// The root of the extracted libnbd 1.24: `LIBNBD_LATEST`, else
/// [`LIBNBD_LATEST_DEFAULT`].  Fails the test, saying how to make it, when
/// its `run` wrapper is missing (CI always has it).
pub fn latest_root() -> PathBuf {
    let root = match std::env::var_os("LIBNBD_LATEST") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(LIBNBD_LATEST_DEFAULT),
    };
    assert!(
        root.join("run").is_file() && root.join("sysroot").is_dir(),
        "libnbd 1.24 is not extracted under {} (no run wrapper there): run \
         scripts/install-deps.sh, or ../shared/tools/libnbd-latest.sh {0} \
         (set LIBNBD_LATEST to use another root)",
        root.display()
    );
    root
}

/// The directory of libnbd 1.24.4's own `libnbd.so.0` (and of the other
/// libraries of that suite).
pub fn latest_libdir() -> PathBuf {
    latest_root().join("sysroot/usr/lib/x86_64-linux-gnu")
}

/// libnbd 1.24's header, the specification of the functions added after 1.14.
pub fn latest_header() -> PathBuf {
    latest_root().join("sysroot/usr/include/libnbd.h")
}

/// The `.so` of nbdkit 1.48's plugin `name` (`memory`, `pattern`, `data`
/// ...): nbdkit from the root looks for plugins in the host's directory,
/// which holds Debian's older nbdkit's plugins, so the path is given.
pub fn latest_nbdkit_plugin(name: &str) -> PathBuf {
    let p = latest_libdir().join(format!("nbdkit/plugins/nbdkit-{name}-plugin.so"));
    assert!(p.is_file(), "nbdkit 1.48 has no plugin {}", p.display());
    p
}

/// Which library a libnbd 1.24 program runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// libnbd 1.24.4 itself: the reference.
    Libnbd,
    /// The library under test ([`libnbd_dir`]), put first with `run --lib`.
    UnderTest,
}

impl Side {
    /// Both sides, the reference first.
    pub const BOTH: [Side; 2] = [Side::Libnbd, Side::UnderTest];

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Side::Libnbd => "libnbd 1.24.4",
            Side::UnderTest => "library under test",
        }
    }
}

/// True when the "library under test" is in fact libnbd 1.24.4's own
/// (`NBD_TEST_LIBDIR` pointing at [`latest_libdir`]): how the tests of
/// `latest.rs` are validated before our library has every 1.24 function.
pub fn under_test_is_latest() -> bool {
    match (libnbd_dir().canonicalize(), latest_libdir().canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A command running libnbd 1.24's `program` (`nbdinfo`, `nbdcopy`,
/// `nbddump`, `nbdsh`, `nbdkit` ...) through `ROOT/run`, on libnbd 1.24.4
/// or, with `--lib`, on the library under test.  Same arguments, same
/// loader and C library either way: only `libnbd.so.0` differs.
pub fn latest_tool(program: &str, side: Side) -> Command {
    let mut cmd = Command::new(latest_root().join("run"));
    if side == Side::UnderTest {
        cmd.arg("--lib").arg(libnbd_dir());
    }
    cmd.arg(program);
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.env_remove("LD_PRELOAD");
    cmd.env("LC_ALL", "C");
    cmd
}

/// The dynamic loader of libnbd 1.24's root and the library path its
/// `ROOT/run` wrapper gives it on `side` (the library under test's
/// directory first for [`Side::UnderTest`], as `run --lib` does).
fn latest_loader(side: Side) -> (PathBuf, String) {
    let sysroot = latest_root().join("sysroot");
    let libdir = latest_libdir();
    let mut loader = libdir.join("ld-linux-x86-64.so.2");
    if !loader.is_file() {
        loader = sysroot.join("lib64/ld-linux-x86-64.so.2");
    }
    let mut path = String::new();
    if side == Side::UnderTest {
        let _ = write!(path, "{}:", libnbd_dir().display());
    }
    let _ = write!(
        path,
        "{}:{}",
        libdir.display(),
        sysroot.join("lib/x86_64-linux-gnu").display()
    );
    (loader, path)
}

/// A command running a program of ours, `exe` (built against libnbd 1.24's
/// header, see [`latest_header`]), the way `ROOT/run` runs libnbd 1.24's
/// own programs: through the root's dynamic loader and C library, on
/// libnbd 1.24.4 or, for [`Side::UnderTest`], on the library under test.
/// `exe` should have no rpath, so that the loader's library path decides.
pub fn latest_run_binary(exe: &Path, side: Side) -> Command {
    let (loader, path) = latest_loader(side);
    let mut cmd = Command::new(loader);
    cmd.arg("--library-path").arg(path).arg(exe);
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.env_remove("LD_PRELOAD");
    cmd.env("LC_ALL", "C");
    cmd
}

/// The `libnbd.so.0` the root's loader resolves for `exe` on `side`
/// (`ld.so --list`, as [`latest_run_binary`] would run it).
pub fn latest_binary_loads(exe: &Path, side: Side) -> PathBuf {
    let (loader, path) = latest_loader(side);
    let mut cmd = Command::new(loader);
    cmd.arg("--list").arg("--library-path").arg(path).arg(exe);
    cmd.env_remove("LD_LIBRARY_PATH");
    let out = run_ok(&mut cmd);
    let line = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("libnbd.so.0 "))
        .unwrap_or_else(|| panic!("{} does not link libnbd.so.0", exe.display()));
    let p = line
        .split("=>")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    Path::new(p)
        .canonicalize()
        .unwrap_or_else(|e| panic!("libnbd.so.0 resolved to {p}: {e}"))
}

/// The path of the `libnbd.so.0` that libnbd 1.24's Python module loaded in
/// `nbdsh` on `side` (read from `/proc/self/maps`, whatever the library
/// calls itself).
pub fn latest_nbdsh_loaded_library(side: Side) -> PathBuf {
    let out = run_ok(latest_tool("nbdsh", side).args(["-c", NBDSH_PRINT_LOADED]));
    loaded_library(&out.stdout)
}

// ---------------------------------------------------------------------------
// C examples

/// The C example programs (`c-examples/*.c`).
pub const C_EXAMPLES: &[&str] = &[
    "first-sector",
    "get-size",
    "read-write",
    "aio-poll",
    "threads",
    "list-exports",
    "server-flags",
    "batched",
    "structured-read",
    "map",
    "tls-psk",
    "backup-pull",
    "dirty-map",
];

/// The C examples that use the API of libnbd 1.20 and later: their
/// Makefile leaves them out when the header predates it (Debian's 1.14),
/// and so does [`c_examples`].
pub const C_EXAMPLES_1_20: &[&str] = &["dirty-map"];

/// True when the `libnbd.h` in `include` has the libnbd 1.20 API (it
/// defines `LIBNBD_HAVE_NBD_BLOCK_STATUS_FILTER`).
pub fn header_has_1_20_api(include: &Path) -> bool {
    fs::read_to_string(include.join("libnbd.h"))
        .map(|h| h.contains("LIBNBD_HAVE_NBD_BLOCK_STATUS_FILTER"))
        .unwrap_or(false)
}

/// Whether the C example `name` was built by [`c_examples`]: all are,
/// except those of [`C_EXAMPLES_1_20`] against an older header.
pub fn c_example_built(name: &str) -> bool {
    c_examples().join(name).is_file()
}

/// Builds the C examples with their Makefile against the header directory
/// (`NBD_TEST_INCLUDE`, else `include/`, or `/usr/include` when testing
/// the system library) and the library under test; returns the directory
/// of the binaries.  Built once per test binary, always from scratch.
pub fn c_examples() -> PathBuf {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        require("make", "make");
        require("cc", "gcc");
        let root = repo_root();
        let libdir = libnbd_dir();
        let system = is_system_dir(&libdir);
        let include = match std::env::var_os("NBD_TEST_INCLUDE") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ if system => PathBuf::from("/usr/include"),
            _ => root.join("include"),
        };
        assert!(
            include.join("libnbd.h").exists(),
            "{} has no libnbd.h (for Debian's header: apt-get install libnbd-dev)",
            include.display()
        );
        let out = root.join("target").join(if system {
            "c-examples-system"
        } else {
            "c-examples"
        });
        let mut make = Command::new("make");
        make.arg("-B")
            .arg("-C")
            .arg(root.join("c-examples"))
            .arg(format!("INCLUDE={}", include.display()))
            .arg(format!("LIBDIR={}", libdir.display()))
            .arg(format!("OUT={}", out.display()));
        run_ok(&mut make);
        let new_api = header_has_1_20_api(&include);
        for name in C_EXAMPLES {
            if !new_api && C_EXAMPLES_1_20.contains(name) {
                let _ = fs::remove_file(out.join(name));
                println!(
                    "{name}: not built, {} predates libnbd 1.20",
                    include.display()
                );
                continue;
            }
            assert!(out.join(name).is_file(), "{name} was not built");
        }
        out
    })
    .clone()
}

/// A command running one C example on the library under test.
pub fn example(name: &str) -> Command {
    tool(c_examples().join(name), Lib::UnderTest)
}

// ---------------------------------------------------------------------------
// Servers

/// One export of an `nbd-server` configuration.
#[derive(Debug, Clone)]
pub struct NbdServerExport {
    /// The export name (the section name).
    pub name: String,
    /// The file served.
    pub file: PathBuf,
    /// Its size in bytes (given explicitly: nbd-server 3.24 reports 0 on
    /// Unix sockets otherwise).
    pub size: u64,
    /// Export read-only.
    pub readonly: bool,
}

/// Writes `keys.psk` in `scratch`: a fixed 32-byte pre-shared key for
/// `user`, in psktool's `user:hexkey` format, as nbdkit and libnbd read it.
pub fn psk_file(scratch: &Scratch, user: &str) -> PathBuf {
    let path = scratch.file("keys.psk");
    fs::write(&path, format!("{user}:{}\n", "5e".repeat(32))).expect("write PSK file");
    path
}

/// A running NBD server on a Unix socket, stopped (SIGTERM, then SIGKILL)
/// by PID when dropped.
pub struct Server {
    name: &'static str,
    pid: libc::pid_t,
    child: Option<Child>,
    socket: PathBuf,
    /// The loopback TCP port, for servers listening on TCP instead.
    tcp_port: Option<u16>,
    export: String,
    log: PathBuf,
    /// qemu-storage-daemon's QMP monitor socket, when it has one.
    qmp: Option<PathBuf>,
    /// The file a qemu server writes its trace events to, when traced.
    trace: Option<PathBuf>,
}

/// A loopback TCP port that was free a moment ago (bound to port 0, then
/// released), for a server to listen on.
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

static SERVER_SEQ: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn server_paths(scratch: &Scratch, name: &str) -> (PathBuf, PathBuf) {
    let n = SERVER_SEQ.fetch_add(1, Ordering::Relaxed);
    (
        scratch.file(&format!("{name}-{n}.sock")),
        scratch.file(&format!("{name}-{n}.log")),
    )
}

impl Server {
    /// Starts `cmd` as server `name`, logging to `log`, and waits until it
    /// listens on `socket` (or on `tcp_port` of 127.0.0.1 when given).
    pub(crate) fn spawn(
        name: &'static str,
        mut cmd: Command,
        socket: PathBuf,
        log: PathBuf,
        export: &str,
        tcp_port: Option<u16>,
    ) -> Server {
        let logf = fs::File::create(&log).expect("server log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().expect("dup")))
            .stderr(Stdio::from(logf));
        println!("starting {name}: {}", describe(&cmd));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut server = Server {
            name,
            pid: child.id() as libc::pid_t,
            child: Some(child),
            socket,
            tcp_port,
            export: export.to_string(),
            log,
            qmp: None,
            trace: None,
        };
        server.wait_ready();
        server
    }

    /// Waits until the socket accepts connections.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait().expect("wait") {
                    self.child = None;
                    panic!(
                        "{} exited ({status}) before listening:\n{}",
                        self.name,
                        fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
            let up = match self.tcp_port {
                Some(port) => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                None => UnixStream::connect(&self.socket).is_ok(),
            };
            if up {
                return;
            }
            if start.elapsed() > SERVER_START_TIMEOUT {
                panic!(
                    "{} did not listen on {} within {SERVER_START_TIMEOUT:?}:\n{}",
                    self.name,
                    self.socket.display(),
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `qemu-nbd` serving `image` (format `raw` or `qcow2`) as `export`,
    /// persistent, allowing 16 clients at once; `extra` adds options
    /// (`-A`, `-D description`, `-r` ...).
    pub fn qemu_nbd(
        scratch: &Scratch,
        image: &Path,
        format: &str,
        export: &str,
        extra: &[&str],
    ) -> Server {
        let prog = require("qemu-nbd", "qemu-utils");
        let (socket, log) = server_paths(scratch, "qemu-nbd");
        let mut cmd = Command::new(prog);
        cmd.args([
            "-f",
            format,
            "--persistent",
            "--shared=16",
            "-x",
            export,
            "-k",
        ])
        .arg(&socket)
        .args(extra)
        .arg(image);
        Server::spawn("qemu-nbd", cmd, socket, log, export, None)
    }

    /// `nbdkit` in the foreground with a plugin and its parameters, e.g.
    /// `&["memory", "32M"]`; the default export is "".
    pub fn nbdkit(scratch: &Scratch, plugin_and_args: &[&str]) -> Server {
        let prog = require("nbdkit", "nbdkit");
        let (socket, log) = server_paths(scratch, "nbdkit");
        let mut cmd = Command::new(prog);
        cmd.args(["--foreground", "--exit-with-parent", "-U"])
            .arg(&socket)
            .args(plugin_and_args);
        Server::spawn("nbdkit", cmd, socket, log, "", None)
    }

    /// libnbd 1.24's companion nbdkit 1.48 (from [`latest_root`]) in the
    /// foreground, with a plugin by name (see [`latest_nbdkit_plugin`]) and
    /// its parameters, e.g. `&["memory", "8M"]`; the default export is "".
    pub fn nbdkit_latest(scratch: &Scratch, plugin_and_args: &[&str]) -> Server {
        let (plugin, args) = plugin_and_args.split_first().expect("a plugin name");
        let (socket, log) = server_paths(scratch, "nbdkit-1.48");
        let mut cmd = latest_tool("nbdkit", Side::Libnbd);
        cmd.args(["--foreground", "--exit-with-parent", "-U"])
            .arg(&socket)
            .arg(latest_nbdkit_plugin(plugin))
            .args(args);
        Server::spawn("nbdkit 1.48", cmd, socket, log, "", None)
    }

    /// [`Server::nbdkit_latest`] with nbdkit 1.48's filters (by name: `error`,
    /// `delay`, `readonly` ...) in front of the plugin, in the order given;
    /// an entry starting with `-` is an nbdkit option instead (`--threads=1`).
    pub fn nbdkit_latest_filtered(
        scratch: &Scratch,
        filters: &[&str],
        plugin_and_args: &[&str],
    ) -> Server {
        let (plugin, args) = plugin_and_args.split_first().expect("a plugin name");
        let (socket, log) = server_paths(scratch, "nbdkit-1.48");
        let mut cmd = latest_tool("nbdkit", Side::Libnbd);
        cmd.args(["--foreground", "--exit-with-parent", "-U"])
            .arg(&socket);
        for f in filters {
            if f.starts_with('-') {
                cmd.arg(f);
                continue;
            }
            let path = latest_libdir().join(format!("nbdkit/filters/nbdkit-{f}-filter.so"));
            assert!(
                path.is_file(),
                "nbdkit 1.48 has no filter {}",
                path.display()
            );
            cmd.arg(format!("--filter={}", path.display()));
        }
        cmd.arg(latest_nbdkit_plugin(plugin)).args(args);
        Server::spawn("nbdkit 1.48", cmd, socket, log, "", None)
    }

    /// `nbdkit` requiring TLS with the pre-shared keys in `keys` (see
    /// [`psk_file`]), then the plugin and its parameters.
    pub fn nbdkit_psk(scratch: &Scratch, keys: &Path, plugin_and_args: &[&str]) -> Server {
        let psk = format!("--tls-psk={}", keys.display());
        let mut args = vec!["--tls=require", psk.as_str()];
        args.extend_from_slice(plugin_and_args);
        Server::nbdkit(scratch, &args)
    }

    /// [`Server::nbdkit_latest`] listening on a free port of 127.0.0.1
    /// instead of a Unix socket (see [`Server::tcp_port`]).
    pub fn nbdkit_latest_tcp(scratch: &Scratch, plugin_and_args: &[&str]) -> Server {
        let (plugin, args) = plugin_and_args.split_first().expect("a plugin name");
        let (socket, log) = server_paths(scratch, "nbdkit-1.48");
        let port = free_tcp_port();
        let mut cmd = latest_tool("nbdkit", Side::Libnbd);
        cmd.args([
            "--foreground",
            "--exit-with-parent",
            "--threads=1",
            "-i",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .arg(latest_nbdkit_plugin(plugin))
        .args(args);
        Server::spawn("nbdkit 1.48", cmd, socket, log, "", Some(port))
    }

    /// `nbdkit` like [`Server::nbdkit`], listening on a free port of
    /// 127.0.0.1 instead of a Unix socket (see [`Server::tcp_port`]).
    pub fn nbdkit_tcp(scratch: &Scratch, plugin_and_args: &[&str]) -> Server {
        let prog = require("nbdkit", "nbdkit");
        let (socket, log) = server_paths(scratch, "nbdkit");
        let port = free_tcp_port();
        let mut cmd = Command::new(prog);
        cmd.args([
            "--foreground",
            "--exit-with-parent",
            "-i",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args(plugin_and_args);
        Server::spawn("nbdkit", cmd, socket, log, "", Some(port))
    }

    /// `nbd-server` with a configuration file in `scratch` listing
    /// `exports` (listing allowed).  nbd-server serves a single client when
    /// not forking (`-d`), so it runs as a daemon and is tracked through
    /// its PID file.  The default export is the first one.
    pub fn nbd_server(scratch: &Scratch, exports: &[NbdServerExport]) -> Server {
        let prog = require("nbd-server", "nbd-server");
        assert!(!exports.is_empty());
        let (socket, log) = server_paths(scratch, "nbd-server");
        let n = SERVER_SEQ.fetch_add(1, Ordering::Relaxed);
        let config = scratch.file(&format!("nbd-server-{n}.conf"));
        let pidfile = scratch.file(&format!("nbd-server-{n}.pid"));
        let mut text = format!(
            "[generic]\nunixsock = {}\nallowlist = true\n",
            socket.display()
        );
        for e in exports {
            let _ = write!(
                text,
                "[{}]\nexportname = {}\nfilesize = {}\nreadonly = {}\nflush = true\nfua = true\ntrim = true\n",
                e.name,
                e.file.display(),
                e.size,
                e.readonly
            );
        }
        fs::write(&config, text).expect("write nbd-server config");
        let logf = fs::File::create(&log).expect("server log");
        let mut cmd = Command::new(prog);
        cmd.arg("-C")
            .arg(&config)
            .arg("-p")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().expect("dup")))
            .stderr(Stdio::from(logf));
        println!("starting nbd-server: {}", describe(&cmd));
        let status = cmd.status().expect("run nbd-server");
        assert!(
            status.success(),
            "nbd-server failed to start ({status}):\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        let start = Instant::now();
        let pid = loop {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
            {
                break pid;
            }
            assert!(
                start.elapsed() < SERVER_START_TIMEOUT,
                "nbd-server wrote no PID file:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(10));
        };
        let mut server = Server {
            name: "nbd-server",
            pid,
            child: None,
            socket,
            tcp_port: None,
            export: exports[0].name.clone(),
            log,
            qmp: None,
            trace: None,
        };
        server.wait_ready();
        server
    }

    /// The TCP port on 127.0.0.1, for servers started on TCP.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// The server's log (its standard output and error).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The URI of the default export.
    pub fn uri(&self) -> String {
        self.uri_for(&self.export)
    }

    /// The URI of a named export: `nbd+unix://` on the Unix socket, or
    /// `nbd://127.0.0.1:PORT` for a server listening on TCP.
    pub fn uri_for(&self, export: &str) -> String {
        match self.tcp_port {
            Some(port) => format!("nbd://127.0.0.1:{port}/{export}"),
            None => format!("nbd+unix:///{export}?socket={}", self.socket.display()),
        }
    }

    /// The name of the default export.
    pub fn export(&self) -> &str {
        &self.export
    }

    /// Waits up to `within` for the server to exit by itself (qemu-nbd
    /// without `--persistent` does after its last client); returns its exit
    /// status, or `None` if it is still running (it is then stopped when
    /// dropped, as usual).
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                self.pid = 0;
                return Some(status);
            }
            if start.elapsed() > within {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `nbds+unix` URI of the default export for a TLS server, as PSK
    /// user `user` with the key file `keys` (connecting needs
    /// `nbd_set_uri_allow_local_file`).
    pub fn psk_uri(&self, user: &str, keys: &Path) -> String {
        format!(
            "nbds+unix://{user}@/{}?socket={}&tls-psk-file={}",
            self.export,
            self.socket.display(),
            keys.display()
        )
    }

    /// The server's PID.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    fn alive(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        // A daemon is reparented; a zombie nobody reaped counts as dead.
        match fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => !stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false),
            Err(_) => false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- {} log ({}):\n{}",
                self.name,
                self.log.display(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        if self.pid <= 0 {
            return;
        }
        // SAFETY: kill(2) on the PID of the server this value started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let start = Instant::now();
        while self.alive() && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        if self.alive() {
            // SAFETY: as above.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
    }
}
