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
    // libnbd takes no default TLS username from $USER (only $LOGNAME or
    // the terminal's login): a value here shows that ours ignores it too.
    cmd.env("USER", "user-from-environment");
    cmd
}

/// A difference between the two traces that a known defect of ours
/// causes: the consecutive lines `libnbd` of libnbd 1.24.4's trace are
/// the lines `ours` in ours (one hunk of a line diff).
#[derive(Clone, Copy)]
struct Expected {
    libnbd: &'static [&'static str],
    ours: &'static [&'static str],
    /// What is wrong on our side (or, starting with "on purpose", why we
    /// differ deliberately: docs/api-fidelity.md lists those).
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
        let mut known = false;
        for (k, e) in expected.iter().enumerate() {
            if e.libnbd == l.as_slice() && e.ours == r.as_slice() {
                seen[k] = true;
                known = true;
            }
        }
        match known {
            true => {}
            false => problems.push(format!(
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
// Known differences (defects of ours, found by these tests)

/// Known differences of `tests/c/diff/aio.c`.
const AIO_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/commands.c`.
const COMMANDS_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/info.c`.
const INFO_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/shutdown.c`.
const SHUTDOWN_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/subprocess.c`.
const SUBPROCESS_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/uri.c`.
const URI_DIFFS: &[Expected] = &[
    Expected {
        libnbd: &["nbd_connect_uri (h, uri) = -1 ECONNREFUSED", "state after: created=0 connecting=0 negotiating=0 ready=0 processing=0 dead=1 closed=0"],
        ours: &["nbd_connect_uri (h, uri) = -1 EINVAL", "state after: created=1 connecting=0 negotiating=0 ready=0 processing=0 dead=0 closed=0"],
        defect: "nbd_connect_uri refuses an empty socket= at parse time (EINVAL, handle stays created); libnbd tries to connect (ECONNREFUSED, dead)",
    },
    Expected {
        libnbd: &["nbd_connect_uri (h, uri) = -1 ECONNREFUSED"],
        ours: &["nbd_connect_uri (h, uri) = -1 EINVAL"],
        defect: "nbd_connect_uri refuses port 99999 at parse time (EINVAL); libnbd fails to connect (ECONNREFUSED)",
    },
];

/// Known differences of `tests/c/diff/connect.c`.
const CONNECT_DIFFS: &[Expected] = &[
    Expected {
        libnbd: &["nbd_poll (h, 1000) = -1 EINVAL", "state aio_connect refused: created=0 connecting=1 negotiating=0 ready=0 processing=0 dead=0 closed=0"],
        ours: &["nbd_poll (h, 1000) = -1 ECONNREFUSED", "state aio_connect refused: created=0 connecting=0 negotiating=0 ready=0 processing=0 dead=1 closed=0"],
        defect: "on purpose: nbd_aio_connect to a refused port: nbd_poll fails with ECONNREFUSED and the handle is dead; libnbd's nbd_poll takes the refused socket's POLLHUP for a read event, which is invalid while connecting (EINVAL), and the handle stays connecting until nbd_aio_notify_write",
    },
];

/// Known differences of `tests/c/diff/opt.c`.
const OPT_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/tls.c`.
const TLS_DIFFS: &[Expected] = &[Expected {
    libnbd: &[
        "nbd_set_tls_priority (h, \"BOGUS-PRIORITY\") = 0",
        "nbd_get_tls_priority (h) = \"BOGUS-PRIORITY\"",
    ],
    ours: &[
        "nbd_set_tls_priority (h, \"BOGUS-PRIORITY\") = -1 EINVAL",
        "nbd_get_tls_priority (h) = \"NORMAL:-VERS-ALL:+VERS-TLS1.3\"",
    ],
    defect:
        "on purpose: priority strings we cannot honour are refused when set, not at connect time",
}];

/// Known differences of `tests/c/diff/aio2.c`.
const AIO2_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/dead.c`.
const DEAD_DIFFS: &[Expected] = &[];

/// Known differences of `tests/c/diff/reset.c`.
const RESET_DIFFS: &[Expected] = &[];

// ---------------------------------------------------------------------------
// The cases

#[test]
fn info_handle_debug() {
    differential("info", INFO_DIFFS, |scratch, _| {
        let s = memory(scratch, "1M");
        let uri = s.uri();
        (vec![s], vec![uri])
    });
}

#[test]
fn commands() {
    differential("commands", COMMANDS_DIFFS, |scratch, _| {
        let mem = memory(scratch, "1M");
        let err = nbdkit(
            scratch,
            &["error"],
            &[
                "memory",
                "1M",
                "error-pwrite=EIO",
                "error-pwrite-rate=100%",
                "error-trim=ENOSPC",
                "error-trim-rate=100%",
                "error-zero=EPERM",
                "error-zero-rate=100%",
            ],
        );
        let ro = nbdkit(scratch, &["readonly"], &["memory", "1M"]);
        let args = vec![mem.uri(), err.uri(), ro.uri()];
        (vec![mem, err, ro], args)
    });
}

#[test]
fn aio_and_poll() {
    differential("aio", AIO_DIFFS, |scratch, _| {
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
    differential("shutdown", SHUTDOWN_DIFFS, |scratch, _| {
        let mem = memory(scratch, "1M");
        let args = vec![mem.uri()];
        (vec![mem], args)
    });
}

#[test]
fn opt_mode() {
    differential("opt", OPT_DIFFS, |scratch, _| {
        let mem = nbdkit(
            scratch,
            &["exportname"],
            &[
                "memory",
                "1M",
                "exportname-list=explicit",
                "exportname=",
                "exportname=other",
                "exportname-strict=true",
            ],
        );
        let args = vec![mem.uri(), mem.socket().display().to_string()];
        (vec![mem], args)
    });
}

#[test]
fn uris() {
    differential("uri", URI_DIFFS, |scratch, _| {
        let mem = memory(scratch, "1M");
        let tcp = nbdkit_tcp(scratch);
        let args = vec![
            mem.socket().display().to_string(),
            tcp.tcp_port().expect("a TCP port").to_string(),
        ];
        (vec![mem, tcp], args)
    });
}

#[test]
fn tls_settings() {
    differential("tls", TLS_DIFFS, |scratch, _| {
        let mem = memory(scratch, "1M");
        let keys = psk_file(scratch, "alice");
        let psk = format!("--tls-psk={}", keys.display());
        let tls = nbdkit(scratch, &["--tls=require", &psk], &["memory", "1M"]);
        let args = vec![
            mem.uri(),
            tls.socket().display().to_string(),
            keys.display().to_string(),
        ];
        (vec![mem, tls], args)
    });
}

#[test]
fn subprocess() {
    differential("subprocess", SUBPROCESS_DIFFS, |_, _| {
        let args = vec![
            latest_root().join("run").display().to_string(),
            latest_nbdkit_plugin("memory").display().to_string(),
        ];
        (vec![], args)
    });
}

#[test]
fn strict_mode() {
    differential("strict", &[], |scratch, _| {
        let mem = nbdkit(
            scratch,
            &["blocksize-policy"],
            &[
                "memory",
                "1M",
                "blocksize-minimum=512",
                "blocksize-preferred=4096",
                "blocksize-maximum=65536",
            ],
        );
        let args = vec![mem.uri()];
        (vec![mem], args)
    });
}

#[test]
fn connect_transports() {
    differential("connect", CONNECT_DIFFS, |scratch, _| {
        let mem = memory(scratch, "1M");
        let tcp = nbdkit_tcp(scratch);
        let closed = free_tcp_port();
        let args = vec![
            mem.socket().display().to_string(),
            tcp.tcp_port().expect("a TCP port").to_string(),
            closed.to_string(),
        ];
        (vec![mem, tcp], args)
    });
}

/// nbdkit 1.48's memory plugin (1 MiB) on a free TCP port of 127.0.0.1.
fn nbdkit_tcp(scratch: &Scratch) -> Server {
    Server::nbdkit_latest_tcp(scratch, &["memory", "1M"])
}

#[test]
fn info_on_qemu_nbd() {
    // qemu-nbd negotiates extended headers and sends a description.
    differential("info", INFO_DIFFS, |scratch, _| {
        let image = scratch.file("disk.raw");
        qemu_img_create(&image, "raw", 1024 * 1024);
        let s = Server::qemu_nbd(scratch, &image, "raw", "", &["-D", "a disk"]);
        let uri = s.uri();
        (vec![s], vec![uri])
    });
}

#[test]
fn info_on_nbd_server() {
    // nbd-server: simple replies only, and no NBD_INFO_NAME.
    differential("info", INFO_DIFFS, |scratch, _| {
        let file = scratch.file("disk.img");
        std::fs::write(&file, vec![0u8; 1024 * 1024]).unwrap();
        let s = Server::nbd_server(
            scratch,
            &[NbdServerExport {
                name: "one".into(),
                file,
                size: 1024 * 1024,
                readonly: false,
            }],
        );
        let uri = s.uri();
        (vec![s], vec![uri])
    });
}

#[test]
fn commands_on_qemu_nbd() {
    // Extended headers (64-bit block status) on the main export.
    differential("commands", COMMANDS_DIFFS, |scratch, _| {
        let image = scratch.file("disk.raw");
        qemu_img_create(&image, "raw", 1024 * 1024);
        let main = Server::qemu_nbd(scratch, &image, "raw", "", &[]);
        let err = nbdkit(
            scratch,
            &["error"],
            &[
                "memory",
                "1M",
                "error-pwrite=EIO",
                "error-pwrite-rate=100%",
                "error-trim=ENOSPC",
                "error-trim-rate=100%",
                "error-zero=EPERM",
                "error-zero-rate=100%",
            ],
        );
        let ro_image = scratch.file("ro.raw");
        qemu_img_create(&ro_image, "raw", 1024 * 1024);
        let ro = Server::qemu_nbd(scratch, &ro_image, "raw", "", &["-r"]);
        let args = vec![main.uri(), err.uri(), ro.uri()];
        (vec![main, err, ro], args)
    });
}

#[test]
fn aio_commands_and_aio_opt() {
    differential("aio2", AIO2_DIFFS, |scratch, _| {
        let mem = memory(scratch, "1M");
        let args = vec![
            mem.uri(),
            latest_root().join("run").display().to_string(),
            latest_nbdkit_plugin("memory").display().to_string(),
        ];
        (vec![mem], args)
    });
}

/// The server is killed (SIGKILL, by PID, from the program) under a
/// connected handle: the errno of the next command, the handle's state,
/// calls on the dead handle.
#[test]
fn server_dies() {
    differential("dead", DEAD_DIFFS, |scratch, _| {
        let mem = memory(scratch, "1M");
        let args = vec![mem.uri(), mem.pid().to_string()];
        (vec![mem], args)
    });
}

/// The server is killed while it holds requests it has not read: the
/// connection is reset under commands in flight.
#[test]
fn connection_reset() {
    differential("reset", RESET_DIFFS, |scratch, _| {
        let mem = nbdkit(scratch, &["delay"], &["memory", "1M", "delay-read=30"]);
        let args = vec![mem.uri(), mem.pid().to_string()];
        (vec![mem], args)
    });
}
