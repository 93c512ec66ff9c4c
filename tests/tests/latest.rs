//! libnbd 1.24's own programs (nbdinfo, nbddump, nbdcopy, nbdsh), run
//! through `ROOT/run` (see [`latest_root`]) once on libnbd 1.24.4 itself and
//! once with `--lib` on the library under test, with the same arguments,
//! against nbdkit 1.48 (memory, pattern and data plugins), qemu-nbd (which
//! negotiates extended headers; a qcow2 with a persistent dirty bitmap) and
//! nbd-server (simple replies only).
//!
//! What is compared: exit status and standard output, byte for byte.  The
//! only normalisation is in `nbdinfo --version`, whose library line ends
//! with the library's `nbd_get_version_extra` in parentheses when that is
//! not empty: libnbd 1.24.4 (Debian's build) has none, ours names itself
//! there.  `nbd_get_package_name` ("libnbd") and `nbd_get_version`
//! ("1.24.4") are compared unnormalised.  Standard error is only compared
//! for being empty or not (error texts are ours to word).  Copies are
//! checked against the known content of the source.
//!
//! Validating these tests without our library: point the library under
//! test at libnbd 1.24.4's own directory,
//! `NBD_TEST_LIBDIR=/tmp/libnbd-latest/sysroot/usr/lib/x86_64-linux-gnu`;
//! every case then runs libnbd 1.24.4 on both sides and the checks that
//! tell the two libraries apart expect libnbd's values on both.

use nbd_tests::*;
use std::fs;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Running both sides

/// Runs `program args` on both libraries; asserts the same exit status,
/// the same stdout and stderr empty on both or neither; returns libnbd
/// 1.24.4's run for checks of its own.
fn same(program: &str, args: &[&str]) -> Output {
    let reference = run(latest_tool(program, Side::Libnbd).args(args));
    let ours = run(latest_tool(program, Side::UnderTest).args(args));
    assert_eq!(
        reference.code(),
        ours.code(),
        "{program} {args:?}: exit status {} on libnbd 1.24.4, {} on the library under test\n\
         libnbd stderr: {}\nours stderr: {}",
        reference.code(),
        ours.code(),
        reference.stderr,
        ours.stderr
    );
    assert_eq!(
        reference.stdout, ours.stdout,
        "{program} {args:?}: stdout differs (left: libnbd 1.24.4, right: library under test)"
    );
    assert_eq!(
        reference.stderr.is_empty(),
        ours.stderr.is_empty(),
        "{program} {args:?}: only one side wrote to stderr\nlibnbd: {}\nours: {}",
        reference.stderr,
        ours.stderr
    );
    reference
}

/// [`same`], and the reference must have exited with `code`.
fn same_code(program: &str, args: &[&str], code: i32) -> Output {
    let out = same(program, args);
    assert_eq!(
        out.code(),
        code,
        "{program} {args:?} on libnbd 1.24.4 exited {}:\n{}",
        out.code(),
        out.stderr
    );
    out
}

/// `nbdinfo --can/--is/--has FLAG` on both sides: exit 0 (true) or 2
/// (false), the same on both, nothing printed; returns the answer.
fn flag(what: &str, flag: &str, uri: &str) -> bool {
    let out = same("nbdinfo", &[what, flag, uri]);
    assert!(
        matches!(out.code(), 0 | 2),
        "nbdinfo {what} {flag}: exit {} (an error, not an answer):\n{}",
        out.code(),
        out.stderr
    );
    assert!(out.stdout.is_empty());
    out.code() == 0
}

/// The value of `key` in nbdinfo's JSON output.
fn json_field(json: &serde_json::Value, key: &str) -> serde_json::Value {
    json.get(key)
        .unwrap_or_else(|| panic!("no {key:?} in {json}"))
        .clone()
}

// ---------------------------------------------------------------------------
// Servers and their content

/// nbdkit 1.48's data plugin: "hello" at 0, bytes 1 2 3 at 1 MiB, 100 'x'
/// at 4 MiB, 8 MiB in all (the rest reads as zeroes and is a hole).
fn data_server(scratch: &Scratch) -> Server {
    Server::nbdkit_latest(
        scratch,
        &[
            "data",
            r#"data="hello" @1048576 1 2 3 @4194304 "x"*100"#,
            "size=8M",
        ],
    )
}

/// The content of [`data_server`].
fn data_content() -> Vec<u8> {
    let mut v = vec![0u8; 8 * MIB as usize];
    v[..5].copy_from_slice(b"hello");
    v[MIB as usize..MIB as usize + 3].copy_from_slice(&[1, 2, 3]);
    v[4 * MIB as usize..4 * MIB as usize + 100].fill(b'x');
    v
}

/// A 16 MiB qcow2 with a persistent dirty bitmap `bm0`: 0x11 in the first
/// MiB written before the bitmap was added (clean), then 0x22 at
/// [2M, 2.5M), zeroes written at [6M, 7M) and 0x33 at [8M, 8M+64K) (dirty).
fn bitmap_qcow2(scratch: &Scratch) -> PathBuf {
    let image = scratch.file("bitmap.qcow2");
    qemu_img_create(&image, "qcow2", 16 * MIB);
    qemu_io(&image, "qcow2", &["write -P 0x11 0 1M"]);
    let qemu_img = require("qemu-img", "qemu-utils");
    run_ok(
        std::process::Command::new(qemu_img)
            .args(["bitmap", "--add"])
            .arg(&image)
            .arg("bm0"),
    );
    qemu_io(
        &image,
        "qcow2",
        &[
            "write -P 0x22 2M 512k",
            "write -z 6M 1M",
            "write -P 0x33 8M 64k",
        ],
    );
    image
}

/// The content of [`bitmap_qcow2`].
fn bitmap_content() -> Vec<u8> {
    let mut v = vec![0u8; 16 * MIB as usize];
    v[..MIB as usize].fill(0x11);
    v[2 * MIB as usize..2 * MIB as usize + 512 * 1024].fill(0x22);
    v[8 * MIB as usize..8 * MIB as usize + 65536].fill(0x33);
    v
}

/// qemu-nbd exporting [`bitmap_qcow2`] as `exp` with the bitmap (`-B bm0`)
/// and the allocation depth (`-A`) as meta contexts.
fn qemu_server(scratch: &Scratch) -> Server {
    let image = bitmap_qcow2(scratch);
    Server::qemu_nbd(scratch, &image, "qcow2", "exp", &["-B", "bm0", "-A"])
}

/// nbd-server with a 4 MiB file exported read-write as `one` and
/// read-only as `two` ("abc" at 1000, the rest zeroes).
fn nbd_server(scratch: &Scratch) -> (Server, Vec<u8>) {
    let file = scratch.file("nbd-server.img");
    let mut content = vec![0u8; 4 * MIB as usize];
    content[1000..1003].copy_from_slice(b"abc");
    fs::write(&file, &content).unwrap();
    let export = |name: &str, readonly| NbdServerExport {
        name: name.into(),
        file: file.clone(),
        size: 4 * MIB,
        readonly,
    };
    let server = Server::nbd_server(scratch, &[export("one", false), export("two", true)]);
    (server, content)
}

fn assert_file_is(path: &Path, want: &[u8], what: &str) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got == want,
        "{what}: content differs from the source (sha256 {} vs {})",
        sha256(&got),
        sha256(want)
    );
}

// ---------------------------------------------------------------------------
// Which library each side loads

#[test]
fn each_side_loads_its_library() {
    let ours = latest_nbdsh_loaded_library(Side::UnderTest);
    assert_eq!(
        ours,
        libnbd_dir().join("libnbd.so.0").canonicalize().unwrap(),
        "nbdsh run with --lib did not load the library under test"
    );
    let theirs = latest_nbdsh_loaded_library(Side::Libnbd);
    assert_eq!(
        theirs,
        latest_libdir().join("libnbd.so.0").canonicalize().unwrap(),
        "nbdsh run without --lib did not load libnbd 1.24.4"
    );
}

/// What `nbd_get_version_extra` returns on `side`, through nbdsh.
fn version_extra(side: Side) -> String {
    let out =
        run_ok(latest_tool("nbdsh", side).args(["-c", "print('EXTRA=' + h.get_version_extra())"]));
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("EXTRA="))
        .expect("nbdsh printed the extra version")
        .to_string()
}

#[test]
fn version_extra_differs_legitimately() {
    // Debian's build of libnbd 1.24.4 sets no extra version; ours names
    // the implementation and its release there.
    assert_eq!(version_extra(Side::Libnbd), "");
    let ours = version_extra(Side::UnderTest);
    if under_test_is_latest() {
        assert_eq!(ours, "");
    } else {
        assert!(
            ours.starts_with("nbd-rs "),
            "our nbd_get_version_extra: {ours:?}"
        );
    }
}

#[test]
fn nbdinfo_version() {
    let reference = run_ok(latest_tool("nbdinfo", Side::Libnbd).arg("--version"));
    let ours = run_ok(latest_tool("nbdinfo", Side::UnderTest).arg("--version"));
    assert_eq!(reference.stdout, "nbdinfo 1.24.4\nlibnbd 1.24.4\n");
    // The only normalisation: our extra version, which nbdinfo appends to
    // the library line in parentheses.
    let extra = version_extra(Side::UnderTest);
    let ours_text = if extra.is_empty() {
        ours.stdout.clone()
    } else {
        ours.stdout.replacen(&format!(" ({extra})"), "", 1)
    };
    assert_eq!(reference.stdout, ours_text, "nbdinfo --version");
}

// ---------------------------------------------------------------------------
// nbdkit 1.48

#[test]
fn nbdinfo_on_nbdkit_data() {
    let scratch = Scratch::new();
    let server = data_server(&scratch);
    let uri = server.uri();

    let plain = same_code("nbdinfo", &[&uri], 0);
    assert!(
        plain.stdout.contains("export-size: 8388608 (8M)"),
        "{}",
        plain.stdout
    );
    assert!(plain.stdout.contains("using structured packets"));

    let json = same_code("nbdinfo", &["--json", &uri], 0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json_field(&v, "structured"), true);
    assert_eq!(json_field(&v["exports"][0], "export-size"), 8388608);

    let map = same_code("nbdinfo", &["--map", &uri], 0);
    assert!(map.stdout.contains("hole,zero"), "{}", map.stdout);
    assert!(map.stdout.lines().any(|l| l.ends_with(" data")));
    same_code("nbdinfo", &["--map", "--totals", &uri], 0);
    same_code("nbdinfo", &["--map", "--json", &uri], 0);

    let list = same_code("nbdinfo", &["--list", &uri], 0);
    assert!(list.stdout.contains("export=\"\":"), "{}", list.stdout);
    same_code("nbdinfo", &["--list", "--json", &uri], 0);

    let size = same_code("nbdinfo", &["--size", &uri], 0);
    assert_eq!(size.stdout, "8388608\n");

    assert!(flag("--can", "connect", &uri));
    assert!(flag("--can", "read", &uri));
    assert!(flag("--can", "write", &uri));
    assert!(flag("--can", "flush", &uri));
    assert!(flag("--can", "trim", &uri));
    assert!(flag("--can", "zero", &uri));
    assert!(flag("--can", "multi-conn", &uri));
    assert!(!flag("--can", "block-status-payload", &uri));
    assert!(!flag("--is", "read-only", &uri));
    assert!(!flag("--is", "rotational", &uri));
    assert!(!flag("--is", "tls", &uri));
    assert!(flag("--has", "structured-reply", &uri));
    // nbdkit 1.48 does not offer extended headers.
    assert!(!flag("--has", "extended-headers", &uri));
}

#[test]
fn nbddump_on_nbdkit_data_and_pattern() {
    let scratch = Scratch::new();
    let data = data_server(&scratch);
    let out = same_code("nbddump", &[&data.uri()], 0);
    assert!(
        out.stdout.starts_with("0000000000: 68 65 6c 6c 6f 00"),
        "{}",
        out.stdout
    );
    same_code("nbddump", &["--length=4k", &data.uri()], 0);

    let pattern = Server::nbdkit_latest(&scratch, &["pattern", "1M"]);
    let out = same_code(
        "nbddump",
        &["--offset=4096", "--length=64k", &pattern.uri()],
        0,
    );
    assert!(
        out.stdout
            .starts_with("0000001000: 00 00 00 00 00 00 10 00"),
        "{}",
        out.stdout
    );
}

#[test]
fn nbdcopy_nbdkit_to_file() {
    let scratch = Scratch::new();
    let data = data_server(&scratch);
    let pattern = Server::nbdkit_latest(&scratch, &["pattern", "3M"]);
    for side in Side::BOTH {
        let dst = scratch.file(&format!("data-{side:?}.raw"));
        run_ok(latest_tool("nbdcopy", side).arg(data.uri()).arg(&dst));
        assert_file_is(
            &dst,
            &data_content(),
            &format!("nbdcopy data on {}", side.name()),
        );

        let dst = scratch.file(&format!("pattern-{side:?}.raw"));
        run_ok(
            latest_tool("nbdcopy", side)
                .args(["--request-size=65536", "--connections=2"])
                .arg(pattern.uri())
                .arg(&dst),
        );
        assert_file_is(
            &dst,
            &pattern_data(0, 3 * MIB as usize),
            &format!("nbdcopy pattern on {}", side.name()),
        );
    }
}

#[test]
fn nbdcopy_between_two_nbdkits() {
    let scratch = Scratch::new();
    let data = data_server(&scratch);
    for side in Side::BOTH {
        // A fresh destination for each side, read back through nbdcopy.
        let memory = Server::nbdkit_latest(&scratch, &["memory", "8M"]);
        let out = run_ok(
            latest_tool("nbdcopy", side)
                .arg(data.uri())
                .arg(memory.uri()),
        );
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        let back = scratch.file(&format!("back-{side:?}.raw"));
        run_ok(latest_tool("nbdcopy", side).arg(memory.uri()).arg(&back));
        assert_file_is(
            &back,
            &data_content(),
            &format!("nbdkit data -> nbdkit memory on {}", side.name()),
        );
    }
}

// ---------------------------------------------------------------------------
// qemu-nbd: extended headers, dirty bitmap, allocation depth

#[test]
fn nbdinfo_on_qemu_nbd() {
    let scratch = Scratch::new();
    let server = qemu_server(&scratch);
    let uri = server.uri();

    let plain = same_code("nbdinfo", &[&uri], 0);
    assert!(
        plain.stdout.contains("using extended packets"),
        "qemu-nbd did not negotiate extended headers:\n{}",
        plain.stdout
    );
    assert!(plain.stdout.contains("qemu:dirty-bitmap:bm0"));
    assert!(plain.stdout.contains("qemu:allocation-depth"));

    let json = same_code("nbdinfo", &["--json", &uri], 0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(json_field(&v, "extended"), true);
    assert_eq!(
        json_field(&v["exports"][0], "can_block_status_payload"),
        true
    );

    let map = same_code("nbdinfo", &["--map", &uri], 0);
    assert!(
        map.stdout
            .starts_with("         0     1048576    0  data\n"),
        "{}",
        map.stdout
    );

    let dirty = same_code("nbdinfo", &["--map=qemu:dirty-bitmap:bm0", &uri], 0);
    let dirty_lines: Vec<&str> = dirty
        .stdout
        .lines()
        .filter(|l| l.ends_with("dirty"))
        .collect();
    assert_eq!(dirty_lines.len(), 3, "{}", dirty.stdout);
    assert!(dirty.stdout.contains("   2097152      524288    1  dirty"));
    same_code(
        "nbdinfo",
        &["--map=qemu:dirty-bitmap:bm0", "--totals", &uri],
        0,
    );
    same_code(
        "nbdinfo",
        &["--map=qemu:dirty-bitmap:bm0", "--json", &uri],
        0,
    );

    let depth = same_code("nbdinfo", &["--map=qemu:allocation-depth", &uri], 0);
    assert!(depth.stdout.contains("local"), "{}", depth.stdout);
    assert!(depth.stdout.contains("absent"), "{}", depth.stdout);

    // A context the server does not have: an error, the same on both.
    let missing = same("nbdinfo", &["--map=qemu:dirty-bitmap:nope", &uri]);
    assert_ne!(missing.code(), 0);

    let list = same_code("nbdinfo", &["--list", &uri], 0);
    assert!(list.stdout.contains("export=\"exp\":"), "{}", list.stdout);
    same_code("nbdinfo", &["--list", "--json", &uri], 0);
    let size = same_code("nbdinfo", &["--size", &uri], 0);
    assert_eq!(size.stdout, "16777216\n");

    assert!(flag("--has", "extended-headers", &uri));
    assert!(flag("--has", "structured-reply", &uri));
    assert!(flag("--can", "block-status-payload", &uri));
    assert!(flag("--can", "fast-zero", &uri));
    assert!(flag("--can", "cache", &uri));
    assert!(!flag("--is", "read-only", &uri));
    assert!(!flag("--cannot", "flush", &uri));
}

#[test]
fn nbddump_and_nbdcopy_on_qemu_nbd() {
    let scratch = Scratch::new();
    let server = qemu_server(&scratch);
    let out = same_code("nbddump", &[&server.uri()], 0);
    assert!(
        out.stdout.starts_with("0000000000: 11 11"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("0000800000: 33 33"), "{}", out.stdout);

    for side in Side::BOTH {
        let dst = scratch.file(&format!("qemu-{side:?}.raw"));
        run_ok(latest_tool("nbdcopy", side).arg(server.uri()).arg(&dst));
        assert_file_is(
            &dst,
            &bitmap_content(),
            &format!("nbdcopy qemu-nbd on {}", side.name()),
        );
    }
}

#[test]
fn nbdcopy_qemu_nbd_to_nbd_server() {
    // Extended headers on the source, simple replies on the destination.
    let scratch = Scratch::new();
    let source = qemu_server(&scratch);
    for side in Side::BOTH {
        let file = scratch.file(&format!("dst-{side:?}.img"));
        fs::write(&file, vec![0xffu8; 16 * MIB as usize]).unwrap();
        let dst = Server::nbd_server(
            &scratch,
            &[NbdServerExport {
                name: "dst".into(),
                file: file.clone(),
                size: 16 * MIB,
                readonly: false,
            }],
        );
        run_ok(
            latest_tool("nbdcopy", side)
                .arg(source.uri())
                .arg(dst.uri()),
        );
        drop(dst);
        assert_file_is(
            &file,
            &bitmap_content(),
            &format!("qemu-nbd -> nbd-server on {}", side.name()),
        );
    }
}

// ---------------------------------------------------------------------------
// nbd-server: no structured replies

#[test]
fn nbdinfo_nbddump_nbdcopy_on_nbd_server() {
    let scratch = Scratch::new();
    let (server, content) = nbd_server(&scratch);
    let uri = server.uri();

    let plain = same_code("nbdinfo", &[&uri], 0);
    assert!(
        plain.stdout.contains("using simple packets"),
        "{}",
        plain.stdout
    );
    same_code("nbdinfo", &["--json", &uri], 0);
    let list = same_code("nbdinfo", &["--list", &uri], 0);
    assert!(list.stdout.contains("export=\"two\":"), "{}", list.stdout);
    same_code("nbdinfo", &["--list", "--json", &uri], 0);
    // nbdinfo 1.24 takes the size from NBD_OPT_INFO, which nbd-server
    // answers with 0 (after NBD_OPT_GO it says 4194304): both libraries
    // must pass on what the server said.
    let size = same_code("nbdinfo", &["--size", &uri], 0);
    assert_eq!(size.stdout, "0\n");
    // No base:allocation without structured replies: nbdinfo --map fails.
    let map = same("nbdinfo", &["--map", &uri]);
    assert_eq!(map.code(), 1, "{}", map.stderr);
    assert!(!flag("--has", "structured-reply", &uri));
    assert!(flag("--is", "read-only", &server.uri_for("two")));
    assert!(!flag("--is", "read-only", &uri));
    assert!(flag("--can", "multi-conn", &uri));

    same_code("nbddump", &["--length=2k", &uri], 0);
    for side in Side::BOTH {
        let dst = scratch.file(&format!("ns-{side:?}.raw"));
        run_ok(
            latest_tool("nbdcopy", side)
                .arg(server.uri_for("two"))
                .arg(&dst),
        );
        assert_file_is(
            &dst,
            &content,
            &format!("nbdcopy nbd-server on {}", side.name()),
        );
    }
}

// ---------------------------------------------------------------------------
// nbdsh

/// A script for `nbdsh -c`: connects to `uri` asking for `contexts` and
/// prints what a few 1.16+ calls return, then the extents of every
/// context (nbd_block_status_64) and some data.
fn nbdsh_script(uri: &str, contexts: &[&str]) -> String {
    let mut s = String::new();
    for c in contexts {
        s.push_str(&format!("h.add_meta_context({c:?})\n"));
    }
    s.push_str(&format!("h.connect_uri({uri:?})\n"));
    s.push_str(
        "print('size', h.get_size())\n\
         print('extended', h.get_extended_headers_negotiated())\n\
         print('structured', h.get_structured_replies_negotiated())\n\
         print('protocol', h.get_protocol())\n\
         print('package', h.get_package_name())\n\
         print('version', h.get_version())\n\
         print('payload', h.get_block_size(nbd.SIZE_PAYLOAD))\n\
         print('export', h.get_export_name())\n",
    );
    for c in contexts {
        s.push_str(&format!("print('can', {c:?}, h.can_meta_context({c:?}))\n"));
    }
    s.push_str(
        "seen = []\n\
         def extents(ctx, off, entries, err):\n    \
         seen.append((ctx, off, entries))\n    \
         return 0\n\
         if h.get_structured_replies_negotiated():\n    \
         h.block_status_64(h.get_size(), 0, extents)\n\
         for e in sorted(seen):\n    \
         print('extents', e)\n\
         print('data', h.pread(16, 1048576 - 8).hex())\n\
         h.shutdown()\n",
    );
    s
}

#[test]
fn nbdsh_api_calls() {
    let scratch = Scratch::new();
    let qemu = qemu_server(&scratch);
    let script = nbdsh_script(
        &qemu.uri(),
        &[
            "base:allocation",
            "qemu:dirty-bitmap:bm0",
            "qemu:allocation-depth",
        ],
    );
    let out = same_code("nbdsh", &["-c", &script], 0);
    assert!(out.stdout.contains("extended True\n"), "{}", out.stdout);
    assert!(out.stdout.contains("package libnbd\n"), "{}", out.stdout);
    assert!(out.stdout.contains("version 1.24.4\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "extents ('qemu:dirty-bitmap:bm0', 0, [(2097152, 0), (524288, 1), (3670016, 0), \
             (1048576, 1), (1048576, 0), (65536, 1), (8323072, 0)])"
        ),
        "{}",
        out.stdout
    );

    let data = data_server(&scratch);
    let script = nbdsh_script(&data.uri(), &["base:allocation"]);
    let out = same_code("nbdsh", &["-c", &script], 0);
    assert!(out.stdout.contains("extended False\n"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("data 00000000000000000102030000000000\n"),
        "{}",
        out.stdout
    );

    let (ns, _) = nbd_server(&scratch);
    let script = nbdsh_script(&ns.uri(), &["base:allocation"]);
    let out = same_code("nbdsh", &["-c", &script], 0);
    assert!(out.stdout.contains("structured False\n"), "{}", out.stdout);
}
