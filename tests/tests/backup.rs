//! The incremental-backup pull flow (`c-examples/backup-pull.c`) against
//! QEMU's servers: a qcow2 with a persistent dirty bitmap, writes after the
//! bitmap was made, the bitmap frozen, the image exported with the bitmap
//! (qemu-storage-daemon `bitmaps=[b0]`, qemu-nbd `-B b0`, and a bitmap
//! added at run time over QMP), and the example copying only the dirty
//! extents.
//!
//! What is proven, each time:
//! - updating the previous full backup gives exactly the current disk;
//! - into an empty target, the dirty ranges equal the disk, everything
//!   else reads as zeroes and is a hole (`qemu-img map`), dirty ranges that
//!   read as zeroes included;
//! - clean ranges were never read: the server's own trace of the requests
//!   it received (`nbd_receive_request`) shows reads only inside dirty
//!   data ranges, and their total equals the dirty data bytes and the
//!   example's own count;
//! - the example built against Debian's libnbd prints the same and writes
//!   the same target.

use nbd_tests::qemu::*;
use nbd_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1024 * 1024;
const K64: u64 = 64 * 1024;
const SIZE: u64 = 16 * MIB;

fn example_src() -> PathBuf {
    repo_root().join("c-examples/backup-pull.c")
}

fn qemu_img() -> PathBuf {
    require("qemu-img", "qemu-utils")
}

/// A change made after the bitmap: `(offset, length, byte)`, byte 0 for
/// a zeroed or discarded range.
type Change = (u64, u64, u8);

/// The writes made before the bitmap (the state of the full backup).
const BEFORE: &[Change] = &[(0, 8 * MIB, 0x22), (12 * MIB, MIB, 0x44)];

/// The changes after the bitmap, with the qemu-io commands making them:
/// data, a zeroed range over old data, a discard over old data, data
/// longer than the example's 4 MiB reads, data over the end of old data.
const AFTER: &[(&str, Change)] = &[
    ("write -P 0x11 1M 64k", (MIB, K64, 0x11)),
    ("write -z 2M 64k", (2 * MIB, K64, 0)),
    ("discard 3M 128k", (3 * MIB, 2 * K64, 0)),
    ("write -P 0x55 5M 2M", (5 * MIB, 2 * MIB, 0x55)),
    ("write -P 0x66 9M 5M", (9 * MIB, 5 * MIB, 0x66)),
];

fn apply(content: &mut [u8], changes: impl IntoIterator<Item = Change>) {
    for (off, len, byte) in changes {
        content[off as usize..(off + len) as usize].fill(byte);
    }
}

fn content_before() -> Vec<u8> {
    let mut v = vec![0u8; SIZE as usize];
    apply(&mut v, BEFORE.iter().copied());
    v
}

fn content_after() -> Vec<u8> {
    let mut v = content_before();
    apply(&mut v, AFTER.iter().map(|(_, c)| *c));
    v
}

/// The dirty ranges holding data, and those reading as zeroes.
fn dirty_data() -> Vec<(u64, u64)> {
    AFTER
        .iter()
        .filter(|(_, (_, _, b))| *b != 0)
        .map(|(_, (o, l, _))| (*o, *l))
        .collect()
}

fn dirty_zero() -> Vec<(u64, u64)> {
    AFTER
        .iter()
        .filter(|(_, (_, _, b))| *b == 0)
        .map(|(_, (o, l, _))| (*o, *l))
        .collect()
}

/// The source image with bitmap `b0` made after [`BEFORE`] and frozen
/// after [`AFTER`]; and the full backup taken when the bitmap was made.
fn source_and_full_backup(scratch: &Scratch) -> (PathBuf, PathBuf) {
    let src = scratch.file("src.qcow2");
    qemu_img_create(&src, "qcow2", SIZE);
    qemu_io(
        &src,
        "qcow2",
        &["write -P 0x22 0 8M", "write -P 0x44 12M 1M"],
    );
    let full = scratch.file("full.raw");
    run_ok(
        Command::new(qemu_img())
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&src)
            .arg(&full),
    );
    assert_eq!(sha256_file(&full), sha256(&content_before()));
    run_ok(
        Command::new(qemu_img())
            .args(["bitmap", "--add"])
            .arg(&src)
            .arg("b0"),
    );
    let cmds: Vec<&str> = AFTER.iter().map(|(c, _)| *c).collect();
    qemu_io(&src, "qcow2", &cmds);
    run_ok(
        Command::new(qemu_img())
            .args(["bitmap", "--disable"])
            .arg(&src)
            .arg("b0"),
    );
    (src, full)
}

/// The ranges `qemu-img map` says hold data in a raw file.
fn data_ranges(file: &Path) -> Vec<(u64, u64)> {
    let out = run_ok(
        Command::new(qemu_img())
            .args(["map", "--output=json", "-f", "raw"])
            .arg(file),
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("qemu-img map JSON");
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for e in v.as_array().expect("array") {
        if e["data"] != true {
            continue;
        }
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        match ranges.last_mut() {
            Some(last) if last.0 + last.1 == start => last.1 += len,
            _ => ranges.push((start, len)),
        }
    }
    ranges
}

/// The number after `prefix` on the example's line starting with it.
fn number(out: &Output, prefix: &str) -> u64 {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", out.stdout))
}

/// Runs the example built for `lib` on bitmap b0.
fn run_example(lib: Lib, uri: &str, target: &Path) -> Output {
    run_example_with(lib, uri, "b0", target)
}

fn run_example_with(lib: Lib, uri: &str, bitmap: &str, target: &Path) -> Output {
    let exe = build_c(&example_src(), lib);
    run_ok(tool(exe, lib).arg(uri).arg(bitmap).arg(target))
}

/// Runs the whole check against a server exporting the source with `b0`;
/// `reads` returns the read requests the server received so far.
fn check_backup(scratch: &Scratch, uri: &str, full: &Path, reads: &dyn Fn() -> Vec<Request>) {
    let data_bytes: u64 = dirty_data().iter().map(|r| r.1).sum();
    let zero_bytes: u64 = dirty_zero().iter().map(|r| r.1).sum();

    // 1. The previous full backup, brought up to date.
    let incremental = scratch.file("incremental.raw");
    std::fs::copy(full, &incremental).unwrap();
    let before = reads().len();
    let out = run_example(Lib::UnderTest, uri, &incremental);
    assert_eq!(number(&out, "export size: "), SIZE);
    assert_eq!(number(&out, "dirty: "), data_bytes + zero_bytes);
    assert_eq!(number(&out, "copied: "), data_bytes);
    assert_eq!(number(&out, "zeroed: "), zero_bytes);
    assert_eq!(
        number(&out, "clean, not read: "),
        SIZE - data_bytes - zero_bytes
    );
    assert_eq!(
        sha256_file(&incremental),
        sha256(&content_after()),
        "the updated backup differs from the disk"
    );

    // The server saw reads only inside dirty data, adding up to it.
    let seen: Vec<Request> = reads()[before..]
        .iter()
        .copied()
        .filter(|r| r.kind == CMD_READ)
        .collect();
    assert!(!seen.is_empty(), "the server's trace shows no reads");
    for r in &seen {
        assert!(
            dirty_data()
                .iter()
                .any(|(o, l)| r.from >= *o && r.from + r.len <= o + l),
            "read of [{}, +{}) is outside the dirty data {:?}",
            r.from,
            r.len,
            dirty_data()
        );
    }
    assert_eq!(seen.iter().map(|r| r.len).sum::<u64>(), data_bytes);
    // "copied: N bytes in R reads": R is what the server counted.
    let example_reads: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("copied: "))
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the number of reads");
    assert_eq!(seen.len() as u64, example_reads);

    // 2. An empty target: only the dirty ranges are filled in, the rest
    //    stays a hole, and so do the dirty ranges reading as zeroes.
    let fresh = scratch.file("fresh.raw");
    let out_fresh = run_example(Lib::UnderTest, uri, &fresh);
    assert_eq!(number(&out_fresh, "copied: "), data_bytes);
    let mut want = vec![0u8; SIZE as usize];
    apply(
        &mut want,
        AFTER.iter().map(|(_, c)| *c).filter(|c| c.2 != 0),
    );
    assert_eq!(sha256_file(&fresh), sha256(&want));
    assert_eq!(
        data_ranges(&fresh),
        dirty_data(),
        "data outside the dirty data ranges"
    );
    // The zeroed ranges over old data in the full backup became holes.
    let holes = data_ranges(&incremental);
    for (o, l) in dirty_zero() {
        assert!(
            !holes.iter().any(|(ho, hl)| *ho < o + l && o < ho + hl),
            "[{o}, +{l}) should be a hole in the updated backup: {holes:?}"
        );
    }

    // 3. Debian's libnbd running the same example: same output, same file.
    let debian_target = scratch.file("debian.raw");
    std::fs::copy(full, &debian_target).unwrap();
    let debian = run_example(Lib::Debian, uri, &debian_target);
    assert_eq!(
        debian.stdout, out.stdout,
        "left: Debian's libnbd, right: ours"
    );
    assert_eq!(sha256_file(&debian_target), sha256_file(&incremental));
}

#[test]
fn backup_pull_from_qemu_storage_daemon() {
    let scratch = Scratch::new();
    let (src, full) = source_and_full_backup(&scratch);
    let server = Qsd::new()
        .image("n0", &src, "qcow2", true)
        .export("id=e0,node-name=n0,name=vda,bitmaps.0=b0")
        .trace_requests()
        .start(&scratch);
    check_backup(&scratch, &server.uri(), &full, &|| server.requests());
}

#[test]
fn backup_pull_from_qemu_nbd_with_bitmap() {
    let scratch = Scratch::new();
    let (src, full) = source_and_full_backup(&scratch);
    let trace = scratch.file("qemu-nbd.trace");
    let trace_opt = format!("nbd_receive_request*,file={}", trace.display());
    let server = qemu_nbd_args(
        &scratch,
        "",
        &[
            "-r",
            "-t",
            "-e",
            "4",
            "-B",
            "b0",
            "-f",
            "qcow2",
            "-T",
            &trace_opt,
            src.to_str().unwrap(),
        ],
    );
    let reads = || requests_in(&std::fs::read_to_string(&trace).unwrap_or_default());
    check_backup(&scratch, &server.uri(), &full, &reads);
    // The example also takes a bare socket path (the export "").
    let target = scratch.file("by-socket.raw");
    let out = run_example(Lib::UnderTest, server.socket().to_str().unwrap(), &target);
    assert!(out.stdout.contains("backup-pull: OK"));
}

#[test]
fn backup_pull_refuses_a_missing_bitmap() {
    let scratch = Scratch::new();
    let (src, _) = source_and_full_backup(&scratch);
    let server = Qsd::new()
        .image("n0", &src, "qcow2", true)
        .export("id=e0,node-name=n0,name=vda")
        .start(&scratch);
    let exe = build_c(&example_src(), Lib::UnderTest);
    let target = scratch.file("t.raw");
    let out = run(tool(exe, Lib::UnderTest)
        .arg(server.uri())
        .arg("b0")
        .arg(&target));
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("no bitmap b0"), "{}", out.stderr);
}

/// libvirt's way: the bitmap is made on the running daemon over QMP
/// (`block-dirty-bitmap-add`), the guest's writes arrive over NBD (here
/// nbdsh on the library under test), the bitmap is frozen
/// (`block-dirty-bitmap-disable`) and a read-only export with it is added
/// at run time (`block-export-add`).  The dirty and zero ranges are taken
/// from the server through Debian's libnbd; the clean ones must not be
/// read, and the updated backup must equal the disk as read by nbdcopy.
#[test]
fn backup_pull_after_a_bitmap_added_over_qmp() {
    let scratch = Scratch::new();
    let src = scratch.file("live.qcow2");
    qemu_img_create(&src, "qcow2", SIZE);
    qemu_io(
        &src,
        "qcow2",
        &["write -P 0x22 0 8M", "write -P 0x44 12M 1M"],
    );
    let full = scratch.file("full.raw");
    run_ok(
        Command::new(qemu_img())
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&src)
            .arg(&full),
    );
    let server = Qsd::new()
        .image("n0", &src, "qcow2", false)
        .export("id=e0,node-name=n0,name=live,writable=on")
        .qmp()
        .trace_requests()
        .start(&scratch);
    server.qmp(
        "block-dirty-bitmap-add",
        serde_json::json!({ "node": "n0", "name": "inc0", "persistent": false }),
    );
    // The guest writes (through our library): data, zeroes, more data.
    let nbdsh = require("nbdsh", "libnbd-bin");
    run_ok(
        tool(&nbdsh, Lib::UnderTest)
            .args(["-u", &server.uri_for("live"), "-c"])
            .arg(
                "h.pwrite(b'\\x11' * 65536, 1048576)\n\
                 h.zero(131072, 2097152)\n\
                 h.pwrite(b'\\x55' * (5 * 1048576), 9 * 1048576)\n\
                 h.flush()",
            ),
    );
    server.qmp(
        "block-dirty-bitmap-disable",
        serde_json::json!({ "node": "n0", "name": "inc0" }),
    );
    server.qmp(
        "block-export-add",
        serde_json::json!({
            "type": "nbd", "id": "e1", "node-name": "n0", "name": "backup",
            "writable": false, "bitmaps": ["inc0"]
        }),
    );
    let uri = server.uri_for("backup");

    // The bitmap and allocation, as Debian's libnbd reads them.
    let map_out = run_ok(tool(qemu_client(Lib::Debian), Lib::Debian).args([
        "info",
        &uri,
        "qemu:dirty-bitmap:inc0",
        "base:allocation",
    ]));
    let dirty = client_map(&map_out, "qemu:dirty-bitmap:inc0");
    let alloc = client_map(&map_out, "base:allocation");
    let dirty_ranges: Vec<(u64, u64)> = dirty
        .iter()
        .filter(|e| e.2 & 1 != 0)
        .map(|e| (e.0, e.1))
        .collect();
    assert_eq!(
        dirty_ranges,
        vec![(MIB, K64), (2 * MIB, 2 * K64), (9 * MIB, 5 * MIB)],
        "the bitmap did not record the writes"
    );
    // Dirty bytes that hold data (not reading as zeroes).
    let overlap = |a: (u64, u64), b: (u64, u64)| -> u64 {
        let (s, e) = (a.0.max(b.0), (a.0 + a.1).min(b.0 + b.1));
        e.saturating_sub(s)
    };
    let data_bytes: u64 = dirty_ranges
        .iter()
        .map(|d| {
            alloc
                .iter()
                .filter(|a| a.2 & 2 == 0)
                .map(|a| overlap(*d, (a.0, a.1)))
                .sum::<u64>()
        })
        .sum();
    assert_eq!(
        data_bytes,
        K64 + 5 * MIB,
        "the zeroed range should read as zeroes"
    );

    let target = scratch.file("incremental.raw");
    std::fs::copy(&full, &target).unwrap();
    let before = server.requests().len();
    let out = run_example_with(Lib::UnderTest, &uri, "inc0", &target);
    assert_eq!(number(&out, "copied: "), data_bytes);
    assert_eq!(number(&out, "zeroed: "), 2 * K64);
    let reads: Vec<Request> = server.requests()[before..]
        .iter()
        .copied()
        .filter(|r| r.kind == CMD_READ)
        .collect();
    assert_eq!(reads.iter().map(|r| r.len).sum::<u64>(), data_bytes);
    for r in &reads {
        assert!(
            dirty_ranges
                .iter()
                .any(|(o, l)| r.from >= *o && r.from + r.len <= o + l),
            "read of a clean range: [{}, +{})",
            r.from,
            r.len
        );
    }
    let now = scratch.file("now.raw");
    run_ok(
        tool(require("nbdcopy", "libnbd-bin"), Lib::Debian)
            .arg(&uri)
            .arg(&now),
    );
    assert_eq!(sha256_file(&target), sha256_file(&now));
}
