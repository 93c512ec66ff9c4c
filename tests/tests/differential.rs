//! Differential tests: the C programs of `tests/c/diff/` are compiled once
//! against libnbd 1.24's header and library, then run through libnbd
//! 1.24's own loader on libnbd 1.24.4 and, with the library under test put
//! first on the library path, on ours; each against its own fresh server
//! of the same kind.  The programs print a canonical trace of every call
//! (return value, errno name, data read back, states, callback order) and
//! the two traces must be identical.
//!
//! Where they differ because of a known defect of ours, the case lists the
//! difference as [`Expected`]: the pair of lines (libnbd's, ours) with the
//! defect named.  A listed difference that no longer shows fails the test,
//! so that the list is kept up to date; nothing is normalised away.
//!
//! Validating the programs without our library:
//! `NBD_TEST_LIBDIR=/tmp/libnbd-latest/sysroot/usr/lib/x86_64-linux-gnu`
//! runs libnbd 1.24.4 on both sides; the expected differences are then
//! not required (see [`under_test_is_latest`]).

use nbd_tests::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

// ---------------------------------------------------------------------------
// Building and running

/// Compiles `tests/c/diff/<name>.c` against libnbd 1.24's header and links
/// it with libnbd 1.24's `libnbd.so.0` (no rpath: the loader's library path
/// decides which library runs).  Once per test binary.
fn build(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    require("cc", "gcc");
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("c").join("diff");
    let out_dir = repo_root()
        .join("target")
        .join("c-diff")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&out_dir).expect("create target/c-diff");
    let exe = out_dir.join(name);
    let libdir = latest_libdir();
    run_ok(
        Command::new("cc")
            .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
            .arg("-I")
            .arg(&src_dir)
            .arg("-I")
            .arg(latest_header().parent().expect("include dir"))
            .arg(src_dir.join(format!("{name}.c")))
            .arg("-o")
            .arg(&exe)
            .arg(libdir.join("libnbd.so.0"))
            .args(["-Wl,--allow-shlib-undefined", "-lpthread"]),
    );
    built.insert(name.to_string(), exe.clone());
    exe
}

/// A command running `exe` through libnbd 1.24's dynamic loader on `side`:
/// the same loader, C library and program either way; the library under
/// test is put first on the library path for [`Side::UnderTest`].
fn on_side(exe: &Path, side: Side) -> Command {
    let sysroot = latest_root().join("sysroot");
    let libdir = latest_libdir();
    let mut path = String::new();
    if side == Side::UnderTest {
        path.push_str(&libnbd_dir().display().to_string());
        path.push(':');
    }
    path.push_str(&format!(
        "{}:{}",
        libdir.display(),
        sysroot.join("lib/x86_64-linux-gnu").display()
    ));
    let mut cmd = Command::new(libdir.join("ld-linux-x86-64.so.2"));
    cmd.arg("--library-path").arg(path).arg(exe);
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd.env_remove("LD_PRELOAD");
    cmd.env_remove("LIBNBD_DEBUG");
    cmd.env("LC_ALL", "C");
    cmd
}

/// A difference between the two traces that a known defect of ours
/// causes: the consecutive lines `libnbd` of libnbd 1.24.4's trace are
/// the lines `ours` in ours (one hunk of a line diff).
struct Expected {
    libnbd: &'static [&'static str],
    ours: &'static [&'static str],
    /// What is wrong on our side.
    defect: &'static str,
}

/// Runs `program` once per side, each with a fresh setup from `setup`
/// (which returns the servers to keep alive and the program's arguments),
/// and compares the traces; returns libnbd's trace.
fn differential<S>(program: &str, expected: &[Expected], setup: S) -> String
where
    S: Fn(&Scratch, Side) -> (Vec<Server>, Vec<String>),
{
    let exe = build(program);
    let mut outputs = Vec::new();
    for side in Side::BOTH {
        let scratch = Scratch::new();
        let (servers, args) = setup(&scratch, side);
        let out = run_timeout(on_side(&exe, side).args(&args), Duration::from_secs(60));
        drop(servers);
        outputs.push(out);
    }
    let (reference, ours) = (&outputs[0], &outputs[1]);
    assert_eq!(
        reference.code(),
        0,
        "{program} failed on libnbd 1.24.4:\n{}{}",
        reference.stdout,
        reference.stderr
    );
    assert_eq!(
        reference.code(),
        ours.code(),
        "{program}: exit status {} on libnbd 1.24.4, {} on ours\n{}{}",
        reference.code(),
        ours.code(),
        ours.stdout,
        ours.stderr
    );
    compare(program, &reference.stdout, &ours.stdout, expected);
    reference.stdout.clone()
}

/// The hunks of a line diff of `a` and `b` (longest common subsequence):
/// each a run of lines of `a` replaced by a run of lines of `b`.
fn hunks<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(usize, Vec<&'a str>, Vec<&'a str>)> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out: Vec<(usize, Vec<&str>, Vec<&str>)> = Vec::new();
    let mut open = false;
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
            open = false;
            continue;
        }
        if !open {
            out.push((i + 1, Vec::new(), Vec::new()));
            open = true;
        }
        let hunk = out.last_mut().expect("an open hunk");
        if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            hunk.1.push(a[i]);
            i += 1;
        } else {
            hunk.2.push(b[j]);
            j += 1;
        }
    }
    out
}

/// Compares two traces: every hunk of their diff must be listed in
/// `expected`, and every listed hunk must be seen (unless the library
/// under test is libnbd itself, when there is none).
fn compare(program: &str, reference: &str, ours: &str, expected: &[Expected]) {
    let a: Vec<&str> = reference.lines().collect();
    let b: Vec<&str> = ours.lines().collect();
    let mut seen = vec![false; expected.len()];
    let mut problems = Vec::new();
    for (line, l, r) in hunks(&a, &b) {
        let known = expected
            .iter()
            .position(|e| e.libnbd == l.as_slice() && e.ours == r.as_slice());
        match known {
            Some(k) => seen[k] = true,
            None => problems.push(format!(
                "at line {line} of libnbd's trace:\n  libnbd: {:?}\n  ours:   {:?}",
                l, r
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "{program}: the traces differ:\n{}\n--- libnbd 1.24.4 trace:\n{reference}--- our trace:\n{ours}",
        problems.join("\n")
    );
    if !under_test_is_latest() {
        for (e, s) in expected.iter().zip(seen) {
            assert!(
                s,
                "{program}: the expected difference ({}) no longer shows: update the list\n  libnbd: {:?}\n  ours:   {:?}",
                e.defect, e.libnbd, e.ours
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Servers

/// nbdkit 1.48 with `filters` (names, e.g. `error`) in front of `plugin`
/// and its parameters, on a Unix socket in `scratch`; one thread, so that
/// replies come in the order of the requests and traces are repeatable.
fn nbdkit(scratch: &Scratch, filters: &[&str], plugin_and_args: &[&str]) -> Server {
    let mut all = vec!["--threads=1"];
    all.extend_from_slice(filters);
    Server::nbdkit_latest_filtered(scratch, &all, plugin_and_args)
}

/// nbdkit 1.48's memory plugin, `size` bytes.
fn memory(scratch: &Scratch, size: &str) -> Server {
    nbdkit(scratch, &[], &["memory", size])
}

// ---------------------------------------------------------------------------
// The cases

#[test]
fn info_handle_debug() {
    differential("info", &[], |scratch, _| {
        let s = memory(scratch, "1M");
        let uri = s.uri();
        (vec![s], vec![uri])
    });
}

#[test]
fn commands() {
    differential("commands", &[], |scratch, _| {
        let mem = memory(scratch, "1M");
        let err = nbdkit(
            scratch,
            &["error"],
            &["memory", "1M", "error-pwrite=EIO", "error-pwrite-rate=100%",
              "error-trim=ENOSPC", "error-trim-rate=100%", "error-zero=EPERM",
              "error-zero-rate=100%",],
        );
        let ro = nbdkit(scratch, &["readonly"], &["memory", "1M"]);
        let args = vec![mem.uri(), err.uri(), ro.uri()];
        (vec![mem, err, ro], args)
    });
}

#[test]
fn aio_and_poll() {
    differential("aio", &[], |scratch, _| {
        let mem = memory(scratch, "1M");
        let err = nbdkit(
            scratch,
            &["error"],
            &["memory", "1M", "error-pread=EIO", "error-pread-rate=100%"],
        );
        let args = vec![mem.uri(), err.uri()];
        (vec![mem, err], args)
    });
}

#[test]
fn shutdown_and_disconnect() {
    differential("shutdown", &[], |scratch, _| {
        let mem = memory(scratch, "1M");
        let args = vec![mem.uri()];
        (vec![mem], args)
    });
}
