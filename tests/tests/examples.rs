//! The C examples of `c-examples/`, built against the header and library
//! under test, run against real servers; their output is checked.

use nbd_tests::*;
use std::fs;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// Builds the examples and checks which library is loaded, once.
fn setup() {
    assert_library_under_test_loaded();
    c_examples();
}

fn has_line(out: &Output, line: &str) {
    assert!(
        out.stdout.lines().any(|l| l == line),
        "expected the line {line:?} in:\n{}",
        out.stdout
    );
}

/// The value after `prefix` on the line starting with it.
fn value_after<'a>(out: &'a Output, prefix: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", out.stdout))
}

fn run_example_ok(name: &str, args: &[&str]) -> Output {
    run_ok(example(name).args(args))
}

/// Runs an example that must fail, and checks that it said why.
fn run_example_fails(name: &str, args: &[&str], why: &str) -> Output {
    let out = run(example(name).args(args));
    assert_ne!(out.code(), 0, "{name} should have failed");
    assert!(
        out.stderr.contains(why),
        "{name}: expected {why:?} in stderr, got:\n{}",
        out.stderr
    );
    out
}

/// A 64 MiB qcow2 image: data at [1M, 3M) (0x55) and [10M, 10M+64K)
/// (0xaa), an explicitly zeroed MiB at 20M, the rest unallocated.
fn sparse_qcow2(scratch: &Scratch) -> std::path::PathBuf {
    let image = scratch.file("sparse.qcow2");
    qemu_img_create(&image, "qcow2", 64 * MIB);
    qemu_io(
        &image,
        "qcow2",
        &[
            "write -P 0x55 1M 2M",
            "write -P 0xaa 10M 64k",
            "write -z 20M 1M",
        ],
    );
    image
}

fn raw_image(scratch: &Scratch, name: &str, size: u64) -> std::path::PathBuf {
    let image = scratch.file(name);
    qemu_img_create(&image, "raw", size);
    image
}

fn two_export_nbd_server(scratch: &Scratch) -> (Server, std::path::PathBuf) {
    let disk = raw_image(scratch, "disk.img", 16 * MIB);
    let second = raw_image(scratch, "second.img", 8 * MIB);
    let server = Server::nbd_server(
        scratch,
        &[
            NbdServerExport {
                name: "disk".into(),
                file: disk.clone(),
                size: 16 * MIB,
                readonly: false,
            },
            NbdServerExport {
                name: "second".into(),
                file: second,
                size: 8 * MIB,
                readonly: true,
            },
        ],
    );
    (server, disk)
}

/// nbdkit's eval plugin serving two read-only exports with descriptions.
fn listing_nbdkit(scratch: &Scratch) -> Server {
    Server::nbdkit(
        scratch,
        &[
            "eval",
            "list_exports=printf 'INTERLEAVED\\nalpha\\nfirst disk\\nbeta\\nsecond disk\\n'",
            "open=echo \"$3\"",
            "get_size=case \"$2\" in alpha) echo 1M;; beta) echo 2M;; *) echo 0;; esac",
            "pread=head -c \"$3\" /dev/zero",
        ],
    )
}

#[test]
fn examples_load_the_library_under_test() {
    setup();
    let dir = c_examples();
    for name in C_EXAMPLES {
        if !c_example_built(name) && C_EXAMPLES_1_20.contains(name) {
            continue; // the header predates libnbd 1.20
        }
        assert_binary_loads(&dir.join(name), Lib::UnderTest);
    }
}

/// The hexdump format of first-sector, written independently here.
fn hexdump(data: &[u8]) -> String {
    let mut s = String::new();
    for (row, chunk) in data.chunks(16).enumerate() {
        s.push_str(&format!("{:08x} ", row * 16));
        for i in 0..16 {
            if i % 8 == 0 {
                s.push(' ');
            }
            match chunk.get(i) {
                Some(b) => s.push_str(&format!("{b:02x} ")),
                None => s.push_str("   "),
            }
        }
        s.push_str(" |");
        for &b in chunk {
            s.push(if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '.'
            });
        }
        s.push_str("|\n");
    }
    s
}

#[test]
fn first_sector_dumps_the_boot_sector() {
    setup();
    let scratch = Scratch::new();
    let image = raw_image(&scratch, "boot.img", MIB);
    let mut sector = vec![0u8; 512];
    sector[..25].copy_from_slice(b"NBD-RS first sector test\n");
    for i in 0..256 {
        sector[64 + i] = i as u8;
    }
    sector[510] = 0x55;
    sector[511] = 0xaa;
    let mut content = fs::read(&image).unwrap();
    content[..512].copy_from_slice(&sector);
    content[512..1024].fill(0xff); // must not appear
    fs::write(&image, &content).unwrap();

    let server = Server::qemu_nbd(&scratch, &image, "raw", "", &[]);
    let expected = hexdump(&sector);
    let by_socket = run_example_ok("first-sector", &[server.socket().to_str().unwrap()]);
    assert_eq!(by_socket.stdout, expected);
    let by_uri = run_example_ok("first-sector", &[&server.uri()]);
    assert_eq!(by_uri.stdout, expected);
    assert_eq!(by_uri.stdout.lines().count(), 32);
}

#[test]
fn examples_fail_cleanly_without_a_server() {
    setup();
    let scratch = Scratch::new();
    let missing = scratch.file("no-such.sock");
    for name in [
        "first-sector",
        "get-size",
        "map",
        "list-exports",
        "aio-poll",
    ] {
        let out = run_example_fails(name, &[missing.to_str().unwrap()], &format!("{name}: "));
        // nbd_get_error() gives the reason: the socket does not exist.
        assert!(
            out.stderr.contains("No such file or directory"),
            "{name}: nbd_get_error() did not give the reason: {}",
            out.stderr
        );
    }
    run_example_fails("get-size", &[], "usage");
}

#[test]
fn get_size_by_uri_and_socket() {
    setup();
    let scratch = Scratch::new();
    let server = Server::nbdkit(&scratch, &["null", "1234567"]);
    for target in [server.uri(), server.socket().display().to_string()] {
        let out = run_example_ok("get-size", &[&target]);
        assert_eq!(out.stdout, "1234567\n(1.2 MiB)\n");
    }
    let scratch2 = Scratch::new();
    let image = scratch2.file("big.qcow2");
    qemu_img_create(&image, "qcow2", 5 << 30);
    let qemu = Server::qemu_nbd(&scratch2, &image, "qcow2", "big", &[]);
    let out = run_example_ok("get-size", &[&qemu.uri()]);
    assert_eq!(out.stdout, format!("{}\n(5.0 GiB)\n", 5u64 << 30));
}

/// The byte read-write.c writes at offset `o`.
fn read_write_byte(o: u64) -> u8 {
    (((o >> 12).wrapping_mul(151)) ^ o.wrapping_mul(7) ^ 0xa5) as u8
}

/// Checks the file behind a server after read-write ran on it.
fn check_read_write_file(file: &Path, out: &Output) {
    let data = fs::read(file).unwrap();
    let zeroed = value_after(out, "zeroed ");
    // "65536 bytes at offset 1048576, verified"
    let words: Vec<&str> = zeroed.split_whitespace().collect();
    let zlen: u64 = words[0].parse().unwrap();
    let zoff: u64 = words[4].trim_end_matches(',').parse().unwrap();
    for (o, &b) in data[..4 * MIB as usize].iter().enumerate() {
        let o = o as u64;
        let want = if o >= zoff && o < zoff + zlen {
            0
        } else {
            read_write_byte(o)
        };
        assert_eq!(b, want, "{} differs at offset {o}", file.display());
    }
    assert!(
        data[4 * MIB as usize..].iter().all(|&b| b == 0),
        "written past 4 MiB"
    );
}

fn check_read_write_output(out: &Output, fua: bool) {
    has_line(
        out,
        &format!(
            "wrote 4194304 bytes at offset 0 (16 requests, fua on last: {})",
            if fua { "yes" } else { "no" }
        ),
    );
    has_line(out, "verified 4194304 bytes");
    has_line(out, "zeroed 65536 bytes at offset 1048576, verified");
    has_line(
        out,
        "trimmed 65536 bytes at offset 4128768, rewrote, verified",
    );
    has_line(out, "read-write: OK");
}

#[test]
fn read_write_on_nbdkit_memory() {
    setup();
    let scratch = Scratch::new();
    let server = Server::nbdkit(&scratch, &["memory", "32M"]);
    let out = run_example_ok("read-write", &[&server.uri()]);
    has_line(&out, "size: 33554432");
    has_line(&out, "flushed");
    check_read_write_output(&out, true);
}

#[test]
fn read_write_on_qemu_nbd_raw_file() {
    setup();
    let scratch = Scratch::new();
    let image = raw_image(&scratch, "rw.img", 8 * MIB);
    let server = Server::qemu_nbd(&scratch, &image, "raw", "", &[]);
    let out = run_example_ok("read-write", &[server.socket().to_str().unwrap()]);
    check_read_write_output(&out, true);
    drop(server);
    check_read_write_file(&image, &out);
}

#[test]
fn read_write_on_nbd_server() {
    setup();
    let scratch = Scratch::new();
    let (server, disk) = two_export_nbd_server(&scratch);
    let out = run_example_ok("read-write", &[&server.uri_for("disk")]);
    check_read_write_output(&out, true);
    drop(server);
    check_read_write_file(&disk, &out);
    // The second export is read-only: the program must refuse.
    let scratch2 = Scratch::new();
    let (server, _) = two_export_nbd_server(&scratch2);
    run_example_fails("read-write", &[&server.uri_for("second")], "read-only");
}

fn check_aio_poll(out: &Output) {
    has_line(out, "batch 1: wrote 64 blocks");
    has_line(out, "batch 2: rewrote 32 blocks, verified 32 blocks");
    has_line(out, "batch 3: verified 64 blocks");
    let tail = value_after(out, "completions: 192, max in flight: ");
    let max: u32 = tail.parse().unwrap();
    assert!(
        (2..=64).contains(&max),
        "max in flight {max}: commands were not overlapped"
    );
    has_line(out, "aio-poll: OK");
}

#[test]
fn aio_poll_loop() {
    setup();
    let scratch = Scratch::new();
    let kit = Server::nbdkit(&scratch, &["memory", "16M"]);
    let out = run_example_ok("aio-poll", &[kit.socket().to_str().unwrap()]);
    has_line(&out, "connected (newstyle-fixed)");
    check_aio_poll(&out);

    let image = sparse_qcow2(&scratch);
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &[]);
    check_aio_poll(&run_example_ok("aio-poll", &[&qemu.uri()]));

    let (nbd_server, _) = two_export_nbd_server(&scratch);
    check_aio_poll(&run_example_ok("aio-poll", &[&nbd_server.uri_for("disk")]));
}

fn check_threads(out: &Output) {
    for i in 0..8 {
        has_line(out, &format!("thread {i}: 96 blocks written and verified"));
    }
    has_line(out, "final check: 8388608 bytes verified");
    has_line(out, "threads: OK");
}

#[test]
fn threads_share_one_handle() {
    setup();
    let scratch = Scratch::new();
    let kit = Server::nbdkit(&scratch, &["memory", "16M"]);
    check_threads(&run_example_ok("threads", &[&kit.uri()]));
    let (nbd_server, _) = two_export_nbd_server(&scratch);
    check_threads(&run_example_ok("threads", &[&nbd_server.uri_for("disk")]));
}

#[test]
fn list_exports_then_go() {
    setup();
    let scratch = Scratch::new();

    let kit = listing_nbdkit(&scratch);
    let out = run_example_ok("list-exports", &[kit.socket().to_str().unwrap()]);
    assert_eq!(
        out.stdout,
        "export 1: \"alpha\" (description: \"first disk\")\n\
         export 2: \"beta\" (description: \"second disk\")\n\
         2 exports\n\
         connected to \"alpha\": 1048576 bytes\n"
    );

    let (nbd_server, _) = two_export_nbd_server(&scratch);
    let out = run_example_ok("list-exports", &[&nbd_server.uri()]);
    assert_eq!(
        out.stdout,
        "export 1: \"disk\"\nexport 2: \"second\"\n2 exports\nconnected to \"disk\": 16777216 bytes\n"
    );

    let image = sparse_qcow2(&scratch);
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &["-D", "test disk"]);
    let out = run_example_ok("list-exports", &[&qemu.uri()]);
    assert_eq!(
        out.stdout,
        "export 1: \"disk\" (description: \"test disk\")\n1 export\nconnected to \"disk\": 67108864 bytes\n"
    );
}

/// Compares server-flags with what Debian's nbdinfo reports (as JSON)
/// for the same export.
/// nbd-server answers NBD_OPT_INFO (which nbdinfo uses) with size 0, so
/// the size is checked against `size` rather than nbdinfo for it.
fn server_flags_agree_with_nbdinfo(uri: &str, structured: bool, size: u64) {
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let info = run_ok(tool(&nbdinfo, Lib::Debian).args(["--json", uri]));
    let json: serde_json::Value = serde_json::from_str(&info.stdout).expect("nbdinfo JSON");
    let export = &json["exports"][0];

    let out = run_example_ok("server-flags", &[uri]);
    let get = |key: &str| value_after(&out, &format!("{key}: ")).to_string();

    assert_eq!(get("protocol"), json["protocol"].as_str().unwrap());
    assert_eq!(get("structured_replies"), json["structured"].to_string());
    assert_eq!(get("structured_replies"), structured.to_string());
    assert_eq!(get("tls"), json["TLS"].to_string());
    assert_eq!(get("export-size"), size.to_string());
    if structured {
        assert_eq!(get("export-size"), export["export-size"].to_string());
    }
    assert_eq!(get("handshake_flags"), "0x3 fixed_newstyle no_zeroes");
    let mut compared = 0;
    for (key, value) in export.as_object().unwrap() {
        if key.starts_with("is_") || key.starts_with("can_") || key.starts_with("block_size_") {
            assert_eq!(get(key), value.to_string(), "{key} differs from nbdinfo");
            compared += 1;
        }
    }
    assert!(compared >= 10, "only {compared} flags compared");
    for key in [
        "block_size_minimum",
        "block_size_preferred",
        "block_size_maximum",
    ] {
        if export.get(key).is_none() {
            assert_eq!(get(key), "0 (not advertised)");
        }
    }
    let has_base = export["contexts"]
        .as_array()
        .map(|a| a.iter().any(|c| c == "base:allocation"))
        .unwrap_or(false);
    assert_eq!(
        get("can_meta_context base:allocation"),
        has_base.to_string()
    );
}

#[test]
fn server_flags_match_nbdinfo() {
    setup();
    let scratch = Scratch::new();
    let kit = Server::nbdkit(&scratch, &["memory", "16M"]);
    server_flags_agree_with_nbdinfo(&kit.uri(), true, 16 * MIB);
    let listing = listing_nbdkit(&scratch);
    server_flags_agree_with_nbdinfo(&listing.uri_for("beta"), true, 2 * MIB);
    let image = sparse_qcow2(&scratch);
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &[]);
    server_flags_agree_with_nbdinfo(&qemu.uri(), true, 64 * MIB);
    let ro_image = scratch.file("ro.qcow2");
    fs::copy(&image, &ro_image).unwrap();
    let ro = Server::qemu_nbd(&scratch, &ro_image, "qcow2", "ro", &["-r"]);
    server_flags_agree_with_nbdinfo(&ro.uri(), true, 64 * MIB);
    let (nbd_server, _) = two_export_nbd_server(&scratch);
    server_flags_agree_with_nbdinfo(&nbd_server.uri_for("disk"), false, 16 * MIB);
    server_flags_agree_with_nbdinfo(&nbd_server.uri_for("second"), false, 8 * MIB);
}

fn check_batched(out: &Output, depth: u32) {
    has_line(out, "wrote 1024 blocks of 16384 bytes");
    has_line(out, "read and verified 1024 blocks of 16384 bytes");
    let max: u32 = value_after(out, &format!("queue depth {depth}, max in flight "))
        .parse()
        .unwrap();
    assert!(
        max >= 2 && max <= depth,
        "max in flight {max} with depth {depth}"
    );
    has_line(out, "batched: OK");
}

#[test]
fn batched_with_bounded_queue() {
    setup();
    let scratch = Scratch::new();
    let kit = Server::nbdkit(&scratch, &["memory", "16M"]);
    check_batched(&run_example_ok("batched", &[&kit.uri()]), 16);
    check_batched(&run_example_ok("batched", &[&kit.uri(), "3"]), 3);
    let image = raw_image(&scratch, "batched.img", 32 * MIB);
    let qemu = Server::qemu_nbd(&scratch, &image, "raw", "b", &[]);
    check_batched(&run_example_ok("batched", &[&qemu.uri(), "64"]), 64);
    run_example_fails("batched", &[&kit.uri(), "0"], "DEPTH");
}

#[test]
fn structured_read_tiles_every_request() {
    setup();
    let scratch = Scratch::new();
    let image = sparse_qcow2(&scratch);
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &[]);
    let out = run_example_ok("structured-read", &[&qemu.uri()]);
    has_line(&out, "structured replies: negotiated");
    has_line(
        &out,
        "read 67108864 bytes in 16 requests of up to 4194304 bytes",
    );
    let data = value_after(&out, "data chunks: ");
    let hole = value_after(&out, "hole chunks: ");
    let bytes = |s: &str| -> (u64, u64) {
        let (n, rest) = s.split_once(" (").unwrap();
        (
            n.parse().unwrap(),
            rest.trim_end_matches(" bytes)").parse().unwrap(),
        )
    };
    let (dn, db) = bytes(data);
    let (hn, hb) = bytes(hole);
    assert!(
        dn >= 2 && hn >= 2,
        "expected data and hole chunks: {data} / {hole}"
    );
    assert_eq!(db + hb, 64 * MIB);
    assert!(
        db >= 2 * MIB + 64 * 1024,
        "the written data must arrive as data"
    );
    has_line(
        &out,
        "every byte covered exactly once; data matches nbd_pread",
    );
    has_line(&out, "df read: 1 chunk");
    has_line(&out, "structured-read: OK");

    let kit = Server::nbdkit(&scratch, &["pattern", "8M"]);
    let out = run_example_ok("structured-read", &[&kit.uri()]);
    has_line(&out, "structured-read: OK");

    let (nbd_server, _) = two_export_nbd_server(&scratch);
    run_example_fails(
        "structured-read",
        &[&nbd_server.uri()],
        "did not negotiate structured replies",
    );
}

/// Parses "OFFSET LENGTH FLAGS DESCRIPTION" lines (map and nbdinfo --map),
/// merging neighbours with equal flags.
fn parse_map(text: &str) -> Vec<(u64, u64, u32)> {
    let mut v: Vec<(u64, u64, u32)> = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 4 || w[0].parse::<u64>().is_err() {
            continue;
        }
        let (off, len, flags) = (
            w[0].parse().unwrap(),
            w[1].parse().unwrap(),
            w[2].parse().unwrap(),
        );
        match v.last_mut() {
            Some(last) if last.2 == flags && last.0 + last.1 == off => last.1 += len,
            _ => v.push((off, len, flags)),
        }
    }
    v
}

#[test]
fn map_matches_nbdinfo() {
    setup();
    let scratch = Scratch::new();
    let image = sparse_qcow2(&scratch);
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &[]);
    let out = run_example_ok("map", &[&qemu.uri()]);
    let ours = parse_map(&out.stdout);
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let reference = run_ok(tool(&nbdinfo, Lib::Debian).args(["--map", &qemu.uri()]));
    assert_eq!(
        ours,
        parse_map(&reference.stdout),
        "map differs from nbdinfo --map"
    );
    assert!(
        ours.contains(&(MIB, 2 * MIB, 0)),
        "[1M,3M) must be data: {ours:?}"
    );
    assert!(
        ours.contains(&(10 * MIB, 64 * 1024, 0)),
        "[10M,+64K) must be data: {ours:?}"
    );
    assert_eq!(ours.first().unwrap(), &(0, MIB, 3));
    let end = ours.last().map(|e| e.0 + e.1).unwrap();
    assert_eq!(end, 64 * MIB);
    // Each printed line is already merged.
    assert_eq!(ours.len(), out.stdout.lines().count() - 1);
    has_line(
        &out,
        &format!(
            "total: 67108864 bytes, {} extents, 2162688 bytes allocated",
            ours.len()
        ),
    );

    let kit = Server::nbdkit(&scratch, &["memory", "8M"]);
    let out = run_example_ok("map", &[&kit.uri()]);
    assert_eq!(parse_map(&out.stdout), vec![(0, 8 * MIB, 3)]);

    let (nbd_server, _) = two_export_nbd_server(&scratch);
    run_example_fails(
        "map",
        &[&nbd_server.uri()],
        "does not support base:allocation",
    );
}

/// `make install` puts the library, header and libnbd.pc under a prefix; a C
/// program built with nothing but `pkg-config --cflags --libs libnbd` from
/// there links against it and runs.
#[test]
fn install_and_link_with_pkg_config() {
    if is_system_dir(&libnbd_dir()) {
        eprintln!("install_and_link_with_pkg_config: tests our own install, not a system library");
        return;
    }
    let scratch = Scratch::new();
    let prefix = scratch.file("usr");
    run_ok(
        std::process::Command::new("make")
            .arg("-C")
            .arg(repo_root())
            .arg("install")
            .arg(format!("PREFIX={}", prefix.display())),
    );
    for f in [
        "lib/libnbd.so.0",
        "lib/libnbd.so",
        "include/libnbd.h",
        "lib/pkgconfig/libnbd.pc",
    ] {
        assert!(prefix.join(f).exists(), "make install did not install {f}");
    }
    let pkgconfig = |args: &[&str]| {
        let out = run_ok(
            std::process::Command::new(require("pkg-config", "pkg-config"))
                .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
                .args(args)
                .arg("libnbd"),
        );
        out.stdout.trim().to_string()
    };
    // libnbd.pc carries the libnbd version whose API we implement.
    assert_eq!(pkgconfig(&["--modversion"]), libnbd_api_version());
    let cflags = pkgconfig(&["--cflags"]);
    let libs = pkgconfig(&["--libs"]);
    assert!(
        cflags.contains(&prefix.join("include").display().to_string()),
        "{cflags}"
    );
    let exe = scratch.file("get-size");
    let mut cc = std::process::Command::new("cc");
    cc.arg("-std=c99")
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg(repo_root().join("c-examples/get-size.c"))
        .arg("-o")
        .arg(&exe)
        .args(cflags.split_whitespace())
        .args(libs.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()));
    run_ok(&mut cc);
    let server = Server::nbdkit(&scratch, &["null", "4096"]);
    // No LD_LIBRARY_PATH (cargo sets one): the rpath alone must find it.
    let out = run_ok(
        std::process::Command::new(&exe)
            .env_remove("LD_LIBRARY_PATH")
            .arg(server.uri()),
    );
    assert_eq!(out.stdout, "4096\n(4.0 KiB)\n");
    // The program resolved libnbd.so.0 to the installed copy.
    let ldd = run_ok(
        std::process::Command::new("ldd")
            .env_remove("LD_LIBRARY_PATH")
            .arg(&exe),
    );
    assert!(
        ldd.stdout
            .contains(&prefix.join("lib/libnbd.so.0").display().to_string()),
        "{}",
        ldd.stdout
    );
}

/// The README's first command runs this example: the server is started by
/// the library itself through socket activation, and stopped on close.
#[test]
fn socket_activation_starts_and_stops_the_server() {
    setup();
    let scratch = Scratch::new();
    let image = scratch.file("disk.qcow2");
    qemu_img_create(&image, "qcow2", 64 * MIB);
    let img = image.display().to_string();
    let out = run_example_ok("socket-activation", &["qemu-nbd", "-f", "qcow2", &img]);
    assert!(
        out.stdout.contains("export size: 67108864 bytes"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("verified 1048576 bytes"),
        "{}",
        out.stdout
    );
    // The data really reached the image (byte 1 is 31 + 7).
    let io = run_ok(
        std::process::Command::new(require("qemu-io", "qemu-utils"))
            .args(["-f", "qcow2", "-c", "read -P 38 1 1", "-c", "read -P 7 0 1"])
            .arg(&image),
    );
    assert!(!io.stdout.contains("failed"), "{}", io.stdout);
    assert_eq!(
        io.stdout.matches("read 1/1 bytes").count(),
        2,
        "{}",
        io.stdout
    );
    // No qemu-nbd serving this image survives the handle.
    let ps = run_ok(std::process::Command::new("ps").args(["-eo", "args"]));
    assert!(
        !ps.stdout.lines().any(|l| l.contains(&img)),
        "server still running:\n{}",
        ps.stdout
    );
    let out = run_example_ok("socket-activation", &["nbdkit", "memory", "2M"]);
    assert!(
        out.stdout.contains("export size: 2097152 bytes"),
        "{}",
        out.stdout
    );
}

/// The TLS example: PSK with nbdkit on a Unix socket and on TCP, and a
/// clear failure when the key is wrong or the server has no TLS.
#[test]
fn tls_psk_example() {
    setup();
    let scratch = Scratch::new();
    let keys = psk_file(&scratch, "alice");
    let k = keys.to_str().unwrap();
    let psk = format!("--tls-psk={k}");
    let kit = Server::nbdkit_psk(&scratch, &keys, &["memory", "8M"]);
    let out = run_example_ok("tls-psk", &[k, "alice", kit.socket().to_str().unwrap()]);
    has_line(&out, "protocol: newstyle-fixed with TLS (PSK user alice)");
    has_line(&out, "wrote, read back and verified 262144 bytes over TLS");
    let tcp = Server::nbdkit_tcp(&scratch, &["--tls=require", &psk, "memory", "8M"]);
    let port = tcp.tcp_port().unwrap().to_string();
    let out = run_example_ok("tls-psk", &[k, "alice", "localhost", &port]);
    has_line(&out, "wrote, read back and verified 262144 bytes over TLS");

    let wrong = scratch.file("wrong.psk");
    std::fs::write(&wrong, format!("alice:{}\n", "00".repeat(32))).unwrap();
    run_example_fails(
        "tls-psk",
        &[
            wrong.to_str().unwrap(),
            "alice",
            kit.socket().to_str().unwrap(),
        ],
        "nbd_connect_unix: TLS handshake: ",
    );
    let plain = Server::nbdkit(&scratch, &["memory", "8M"]);
    run_example_fails(
        "tls-psk",
        &[k, "alice", plain.socket().to_str().unwrap()],
        "TLS required but the server refused NBD_OPT_STARTTLS: Operation not supported (errno 95)",
    );
}

// ---------------------------------------------------------------------------
// dirty-map: a program written for the libnbd 1.16 - 1.24 API

/// False (saying why) when the header under test predates libnbd 1.20, so
/// that dirty-map was not built (the suite run against Debian's 1.14).
fn dirty_map_built(test: &str) -> bool {
    let built = c_example_built("dirty-map");
    if !built {
        eprintln!("{test}: dirty-map needs a libnbd 1.20 header; skipped");
    }
    built
}

/// The extents dirty-map printed under `[ctx]`, as `(offset, length, flags)`.
fn dirty_map_section(out: &Output, ctx: &str) -> Vec<(u64, u64, u32)> {
    let header = format!("[{ctx}]");
    let mut lines = out.stdout.lines().skip_while(|l| *l != header);
    assert!(
        lines.next().is_some(),
        "no {header} section in:\n{}",
        out.stdout
    );
    let v: Vec<(u64, u64, u32)> = lines
        .take_while(|l| !l.starts_with("total "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 4, "not an extent line: {l:?}");
            (
                w[0].parse().unwrap(),
                w[1].parse().unwrap(),
                w[2].parse().unwrap(),
            )
        })
        .collect();
    // Printed merged: neighbours differ and tile the export from 0.
    for pair in v.windows(2) {
        assert_eq!(pair[0].0 + pair[0].1, pair[1].0, "gap in {ctx}: {v:?}");
        assert_ne!(pair[0].2, pair[1].2, "{ctx} not merged: {v:?}");
    }
    assert_eq!(v.first().map(|e| e.0), Some(0), "{ctx}: {v:?}");
    v
}

/// dirty-map on the library under test against the backed disk of
/// `nbd_tests::qemu` (bitmap b0 added, then writes), exported read-only by
/// qemu-nbd with `-B b0` as the default export "" (so that the bare socket
/// path reaches it too).
fn dirty_map_qemu_server(scratch: &Scratch) -> Server {
    let disk = nbd_tests::qemu::backed_disk(scratch);
    Server::qemu_nbd(scratch, &disk, "qcow2", "", &["-r", "-B", "b0"])
}

/// Built against our header, run on our library: the dirty extents are
/// those libnbd 1.24.4's own `nbdinfo --map=qemu:dirty-bitmap:b0` prints
/// (and those the image was made with), the allocation extents those of
/// its `nbdinfo --map`; the extended-header path (64-bit block status, the
/// filtered walk) is taken.
#[test]
fn dirty_map_matches_nbdinfo_1_24() {
    setup();
    if !dirty_map_built("dirty_map_matches_nbdinfo_1_24") {
        return;
    }
    let scratch = Scratch::new();
    let qemu = dirty_map_qemu_server(&scratch);
    let uri = qemu.uri();
    let out = run_example_ok("dirty-map", &[&uri, "b0"]);
    let dirty = dirty_map_section(&out, "qemu:dirty-bitmap:b0");
    let alloc = dirty_map_section(&out, "base:allocation");

    let nbdinfo_map = |ctx: &str| {
        let o = run_ok(
            latest_tool("nbdinfo", Side::Libnbd)
                .arg(format!("--map={ctx}"))
                .arg(&uri),
        );
        parse_map(&o.stdout)
    };
    let reference = nbdinfo_map("qemu:dirty-bitmap:b0");
    assert_eq!(
        dirty, reference,
        "dirty extents differ from libnbd 1.24.4's nbdinfo (right)"
    );
    assert_eq!(
        dirty,
        nbd_tests::qemu::dirty_map(),
        "not the image's writes"
    );
    assert_eq!(
        alloc,
        nbdinfo_map("base:allocation"),
        "allocation differs from libnbd 1.24.4's nbdinfo --map (right)"
    );
    assert_eq!(alloc.last().map(|e| e.0 + e.1), Some(8 * MIB));

    for line in [
        "connected in option mode (newstyle-fixed)",
        "extended headers: agreed",
        "  server agreed to base:allocation",
        "  server agreed to qemu:dirty-bitmap:b0",
        "meta contexts: 2 of 2 agreed",
        "block status payload: yes",
        "export size: 8388608",
        "dirty-map: OK",
    ] {
        has_line(&out, line);
    }
    let dirty_bytes: u64 = dirty.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
    has_line(
        &out,
        &format!(
            "total qemu:dirty-bitmap:b0: {} extents, {dirty_bytes} bytes dirty",
            dirty.len()
        ),
    );
    has_line(
        &out,
        &format!(
            "filtered walk of qemu:dirty-bitmap:b0: the same {} extents",
            dirty.len()
        ),
    );
    let traffic: Vec<u64> = value_after(&out, "traffic: ")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(traffic.len(), 2, "{}", out.stdout);
    assert!(traffic.iter().all(|&n| n > 0), "{}", out.stdout);
    // The package name libnbd, and the version the library reports.
    has_line(&out, &format!("library: {}", under_test_identity()));
    assert!(under_test_identity().starts_with("libnbd "));

    // A bitmap the server does not have: base:allocation alone.
    let out = run_example_ok("dirty-map", &[&uri, "nosuch"]);
    has_line(&out, "meta contexts: 1 of 2 agreed");
    has_line(&out, "qemu:dirty-bitmap:nosuch: not offered by the server");
    has_line(&out, "filtered walk: skipped, no dirty bitmap");
    assert_eq!(dirty_map_section(&out, "base:allocation"), alloc);
}

/// Compiles `c-examples/dirty-map.c` against libnbd 1.24's own header
/// (`ROOT/sysroot/usr/include`) and links it against libnbd 1.24.4's
/// `libnbd.so` (its symbol versions; the root's libraries need a newer C
/// library than the host's, hence `--allow-shlib-undefined`), without an
/// rpath: the loader's library path decides which library it runs on.
fn dirty_map_for_libnbd_1_24(scratch: &Scratch) -> PathBuf {
    let header = latest_header();
    let exe = scratch.file("dirty-map-1.24");
    run_ok(
        std::process::Command::new(require("cc", "gcc"))
            .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-g", "-I"])
            .arg(header.parent().unwrap())
            .arg(repo_root().join("c-examples/dirty-map.c"))
            .arg("-o")
            .arg(&exe)
            .arg("-L")
            .arg(latest_libdir())
            .args(["-lnbd", "-Wl,--allow-shlib-undefined", "-lpthread"]),
    );
    let libnbd = latest_libdir().join("libnbd.so.0").canonicalize().unwrap();
    let ours = libnbd_dir().join("libnbd.so.0").canonicalize().unwrap();
    assert_eq!(latest_binary_loads(&exe, Side::Libnbd), libnbd);
    assert_eq!(latest_binary_loads(&exe, Side::UnderTest), ours);
    exe
}

/// The same source built against libnbd 1.24's header runs unchanged on
/// our library and on libnbd 1.24.4 (through the root's loader, as
/// `ROOT/run` and `run --lib` run libnbd's programs), with identical
/// output, byte for byte, traffic counters included; and that output is
/// also what the build against our header prints.  Against qemu-nbd
/// (extended headers, the bitmap, payloads), Debian's nbdkit 1.32 (no
/// extended headers) and nbdkit 1.48.
#[test]
fn dirty_map_built_for_libnbd_1_24_runs_on_both() {
    setup();
    if !dirty_map_built("dirty_map_built_for_libnbd_1_24_runs_on_both") {
        return;
    }
    let scratch = Scratch::new();
    let exe = dirty_map_for_libnbd_1_24(&scratch);
    let qemu = dirty_map_qemu_server(&scratch);
    let kit = Server::nbdkit(&scratch, &["memory", "4M"]);
    let kit_latest = Server::nbdkit_latest(&scratch, &["memory", "4M"]);
    for target in [
        qemu.uri(),
        qemu.socket().display().to_string(),
        kit.uri(),
        kit_latest.uri(),
    ] {
        let reference = run_ok(latest_run_binary(&exe, Side::Libnbd).args([&target, "b0"]));
        let ours = run_ok(latest_run_binary(&exe, Side::UnderTest).args([&target, "b0"]));
        assert_eq!(
            reference.stdout, ours.stdout,
            "{target}: output differs (left: libnbd 1.24.4, right: library under test)"
        );
        assert!(ours.stderr.is_empty(), "{}", ours.stderr);
        let our_header = run_example_ok("dirty-map", &[&target, "b0"]);
        assert_eq!(
            our_header.stdout, ours.stdout,
            "{target}: the build against our header prints otherwise"
        );
        has_line(&ours, "dirty-map: OK");
        has_line(&ours, &format!("library: libnbd {}", libnbd_api_version()));
    }
    let out = run_ok(latest_run_binary(&exe, Side::UnderTest).args([&qemu.uri(), "b0"]));
    assert_eq!(
        dirty_map_section(&out, "qemu:dirty-bitmap:b0"),
        nbd_tests::qemu::dirty_map()
    );
    has_line(
        &out,
        "filtered walk of qemu:dirty-bitmap:b0: the same 9 extents",
    );
}

/// Debian's nbdkit 1.32 has no extended headers: the program falls back to
/// structured replies, maps base:allocation alone (nbdkit has no dirty
/// bitmap) and says it skips the filtered walk.  nbd-server has neither:
/// the program stops with a clear message.
#[test]
fn dirty_map_without_extended_headers() {
    setup();
    if !dirty_map_built("dirty_map_without_extended_headers") {
        return;
    }
    let scratch = Scratch::new();
    let kit = Server::nbdkit(
        &scratch,
        &["data", "data=@1048576 1 2 3 4 @2097152 5", "size=4M"],
    );
    let out = run_example_ok("dirty-map", &[kit.socket().to_str().unwrap(), "b0"]);
    for line in [
        "extended headers: refused",
        "structured replies: agreed",
        "  server agreed to base:allocation",
        "meta contexts: 1 of 2 agreed",
        "block status payload: no",
        "qemu:dirty-bitmap:b0: not offered by the server",
        "export size: 4194304",
        "filtered walk: skipped, the server does not accept block status payloads",
        "dirty-map: OK",
    ] {
        has_line(&out, line);
    }
    assert!(!out.stdout.contains("[qemu:dirty-bitmap:b0]"));
    let alloc = dirty_map_section(&out, "base:allocation");
    let reference =
        run_ok(tool(require("nbdinfo", "libnbd-bin"), Lib::Debian).args(["--map", &kit.uri()]));
    assert_eq!(alloc, parse_map(&reference.stdout));
    assert!(
        alloc
            .iter()
            .any(|e| e.2 == 0 && e.0 <= MIB && e.0 + e.1 > MIB),
        "the data at 1M is not data: {alloc:?}"
    );

    let (nbd_server, _) = two_export_nbd_server(&scratch);
    let out = run_example_fails(
        "dirty-map",
        &[&nbd_server.uri_for("disk"), "b0"],
        "neither extended headers nor structured replies",
    );
    assert!(
        out.stdout.contains("extended headers: refused"),
        "{}",
        out.stdout
    );
}
