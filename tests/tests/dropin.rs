//! Debian's own libnbd programs (nbdinfo, nbdcopy, nbdsh, fio's nbd
//! engine) run unchanged on the library under test, loaded through
//! `LD_LIBRARY_PATH`, against qemu-nbd, nbdkit and nbd-server.  nbdinfo's
//! output must equal what it prints with Debian's libnbd; copies and I/O
//! are verified by checksums.

use nbd_tests::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

fn nbdinfo() -> PathBuf {
    require("nbdinfo", "libnbd-bin")
}

fn nbdcopy() -> PathBuf {
    require("nbdcopy", "libnbd-bin")
}

fn nbdsh() -> PathBuf {
    require("nbdsh", "libnbd-bin")
}

fn fio() -> PathBuf {
    require("fio", "fio")
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// A 64 MiB qcow2 image: data at [1M, 3M) (0x55) and [10M, 10M+64K)
/// (0xaa), an explicitly zeroed MiB at 20M, the rest unallocated.
fn sparse_qcow2(scratch: &Scratch, name: &str) -> PathBuf {
    let image = scratch.file(name);
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

/// The raw content of [`sparse_qcow2`].
fn sparse_qcow2_content() -> Vec<u8> {
    let mut v = vec![0u8; 64 * MIB as usize];
    v[MIB as usize..3 * MIB as usize].fill(0x55);
    v[10 * MIB as usize..10 * MIB as usize + 65536].fill(0xaa);
    v
}

fn raw_image(scratch: &Scratch, name: &str, size: u64) -> PathBuf {
    let image = scratch.file(name);
    qemu_img_create(&image, "raw", size);
    image
}

/// A sparse raw file of `size` bytes with pseudo-random data in some
/// ranges and holes elsewhere; returns its path and full content.
fn sparse_random_file(scratch: &Scratch, name: &str, size: u64, seed: u64) -> (PathBuf, Vec<u8>) {
    let path = scratch.file(name);
    let f = fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let mut content = vec![0u8; size as usize];
    let ranges = [
        (0, 4 * MIB),
        (8 * MIB, 3 * MIB),
        (size - 2 * MIB, MIB + 12345),
    ];
    for (i, (off, len)) in ranges.into_iter().enumerate() {
        let len = len.min(size - off);
        let data = pseudo_random(seed + i as u64, len as usize);
        f.write_all_at(&data, off).unwrap();
        content[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    (path, content)
}

fn nbd_server_with(scratch: &Scratch, exports: &[(&str, &Path, u64, bool)]) -> Server {
    let exports: Vec<NbdServerExport> = exports
        .iter()
        .map(|&(name, file, size, readonly)| NbdServerExport {
            name: name.to_string(),
            file: file.to_path_buf(),
            size,
            readonly,
        })
        .collect();
    Server::nbd_server(scratch, &exports)
}

// ---------------------------------------------------------------------------
// The library under test really is what the tools load.

#[test]
fn tools_load_the_library_under_test() {
    assert_library_under_test_loaded();
    for binary in [nbdinfo(), nbdcopy(), fio()] {
        assert_binary_loads(&binary, Lib::UnderTest);
        assert_binary_loads(&binary, Lib::Debian);
    }
    // nbdinfo prints the loaded library's name and version, as nbdsh
    // read them from the library under test.
    let out = run_ok(tool(nbdinfo(), Lib::UnderTest).arg("--version"));
    let identity = under_test_identity();
    assert!(
        out.stdout.lines().any(|l| l == identity),
        "nbdinfo --version does not name {identity}:\n{}",
        out.stdout
    );
}

// ---------------------------------------------------------------------------
// nbdinfo: same output with both libraries.

/// Runs nbdinfo with `args` on both libraries and asserts equal exit
/// codes and equal stdout (apart from library name/version lines).
/// Returns Debian's run for further checks.
fn nbdinfo_same(args: &[&str]) -> Output {
    let debian = run(tool(nbdinfo(), Lib::Debian).args(args));
    let ours = run(tool(nbdinfo(), Lib::UnderTest).args(args));
    assert_eq!(
        debian.code(),
        ours.code(),
        "nbdinfo {args:?}: exit code {} with Debian's libnbd, {} with the library under test\n\
         Debian stderr: {}\nours stderr: {}",
        debian.code(),
        ours.code(),
        debian.stderr,
        ours.stderr
    );
    assert_eq!(
        without_library_lines(&debian.stdout),
        without_library_lines(&ours.stdout),
        "nbdinfo {args:?}: output differs (left: Debian's libnbd, right: library under test)"
    );
    assert_eq!(
        debian.stderr.is_empty(),
        ours.stderr.is_empty(),
        "nbdinfo {args:?}: only one of the runs wrote errors"
    );
    debian
}

/// What an export is expected to look like.
struct Expect<'a> {
    size: u64,
    read_only: bool,
    exports: &'a [&'a str],
    /// Whether base:allocation (and thus --map) works.
    map: bool,
}

fn check_nbdinfo_everywhere(uri: &str, expect: &Expect) {
    // Plain and JSON summaries.
    let plain = nbdinfo_same(&[uri]);
    assert_eq!(plain.code(), 0);
    assert!(
        plain.stdout.starts_with("protocol: newstyle-fixed"),
        "{}",
        plain.stdout
    );
    let json = nbdinfo_same(&["--json", uri]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("nbdinfo --json is JSON");
    assert_eq!(v["exports"][0]["is_read_only"], expect.read_only);

    // Listing.
    let list = nbdinfo_same(&["--list", uri]);
    assert_eq!(list.code(), 0);
    for name in expect.exports {
        assert!(
            list.stdout.contains(&format!("export=\"{name}\":")),
            "{name} not listed"
        );
    }
    let list_json = nbdinfo_same(&["--list", "--json", uri]);
    let v: serde_json::Value = serde_json::from_str(&list_json.stdout).expect("JSON");
    assert_eq!(
        v["exports"].as_array().map(|a| a.len()),
        Some(expect.exports.len())
    );

    // Size.
    let size = nbdinfo_same(&["--size", uri]);
    assert_eq!(size.stdout.trim(), expect.size.to_string());

    // Capabilities: exit code 0 = yes, 2 = no.
    for what in [
        "connect",
        "read",
        "write",
        "flush",
        "fua",
        "trim",
        "zero",
        "fast-zero",
        "cache",
        "df",
        "multi-conn",
        "structured-reply",
    ] {
        let out = nbdinfo_same(&["--can", what, uri]);
        assert!(
            matches!(out.code(), 0 | 2),
            "--can {what}: exit {}",
            out.code()
        );
        if what == "connect" || what == "read" {
            assert_eq!(out.code(), 0, "--can {what}");
        }
        if what == "write" {
            assert_eq!(out.code() == 0, !expect.read_only, "--can write");
        }
    }
    for what in ["read-only", "rotational"] {
        let out = nbdinfo_same(&["--is", what, uri]);
        assert!(
            matches!(out.code(), 0 | 2),
            "--is {what}: exit {}",
            out.code()
        );
        if what == "read-only" {
            assert_eq!(out.code() == 0, expect.read_only, "--is read-only");
        }
    }

    // Block status map.
    let map = nbdinfo_same(&["--map", uri]);
    let totals = nbdinfo_same(&["--map", "--totals", uri]);
    let map_json = nbdinfo_same(&["--map", "--json", uri]);
    if expect.map {
        assert_eq!(map.code(), 0);
        let covered: u64 = map
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        assert_eq!(covered, expect.size, "--map does not cover the export");
        assert!(totals.stdout.contains('%'));
        let v: serde_json::Value = serde_json::from_str(&map_json.stdout).expect("JSON map");
        assert!(v.as_array().is_some_and(|a| !a.is_empty()));
    } else {
        assert_ne!(map.code(), 0, "--map should fail without base:allocation");
    }
}

#[test]
fn nbdinfo_qemu_nbd() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let image = sparse_qcow2(&scratch, "disk.qcow2");
    let server = Server::qemu_nbd(
        &scratch,
        &image,
        "qcow2",
        "disk",
        &["-A", "-D", "test disk"],
    );
    let uri = server.uri();
    check_nbdinfo_everywhere(
        &uri,
        &Expect {
            size: 64 * MIB,
            read_only: false,
            exports: &["disk"],
            map: true,
        },
    );
    let depth = nbdinfo_same(&["--map=qemu:allocation-depth", &uri]);
    assert_eq!(depth.code(), 0);
    assert!(depth.stdout.contains("local"), "{}", depth.stdout);
    let map = nbdinfo_same(&["--map", &uri]);
    assert!(
        map.stdout.contains("1048576     2097152    0  data"),
        "{}",
        map.stdout
    );
    let plain = nbdinfo_same(&[&uri]);
    assert!(plain.stdout.contains("description: test disk"));
    assert!(plain.stdout.contains("qemu:allocation-depth"));

    let ro_image = scratch.file("ro.qcow2");
    fs::copy(&image, &ro_image).unwrap();
    let ro = Server::qemu_nbd(&scratch, &ro_image, "qcow2", "ro", &["-r"]);
    check_nbdinfo_everywhere(
        &ro.uri(),
        &Expect {
            size: 64 * MIB,
            read_only: true,
            exports: &["ro"],
            map: true,
        },
    );
}

#[test]
fn nbdinfo_nbdkit() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let memory = Server::nbdkit(&scratch, &["memory", "32M"]);
    check_nbdinfo_everywhere(
        &memory.uri(),
        &Expect {
            size: 32 * MIB,
            read_only: false,
            exports: &[""],
            map: true,
        },
    );
    let pattern = Server::nbdkit(&scratch, &["pattern", "5M"]);
    check_nbdinfo_everywhere(
        &pattern.uri(),
        &Expect {
            size: 5 * MIB,
            read_only: true,
            exports: &[""],
            map: true,
        },
    );
    let listing = Server::nbdkit(
        &scratch,
        &[
            "eval",
            "list_exports=printf 'INTERLEAVED\\nalpha\\nfirst disk\\nbeta\\nsecond disk\\n'",
            "open=echo \"$3\"",
            "get_size=case \"$2\" in alpha) echo 1M;; beta) echo 3M;; *) echo 0;; esac",
            "pread=head -c \"$3\" /dev/zero",
        ],
    );
    check_nbdinfo_everywhere(
        &listing.uri_for("beta"),
        &Expect {
            size: 3 * MIB,
            read_only: true,
            exports: &["alpha", "beta"],
            map: true,
        },
    );
    let list = nbdinfo_same(&["--list", "--json", &listing.uri()]);
    assert!(
        list.stdout.contains("\"description\": \"second disk\""),
        "{}",
        list.stdout
    );
}

#[test]
fn nbdinfo_nbd_server() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let disk = raw_image(&scratch, "disk.img", 16 * MIB);
    let second = raw_image(&scratch, "second.img", 8 * MIB);
    let server = nbd_server_with(
        &scratch,
        &[
            ("disk", &disk, 16 * MIB, false),
            ("second", &second, 8 * MIB, true),
        ],
    );
    let exports = ["disk", "second"];
    check_nbdinfo_everywhere(
        &server.uri_for("disk"),
        &Expect {
            size: 16 * MIB,
            read_only: false,
            exports: &exports,
            map: false,
        },
    );
    check_nbdinfo_everywhere(
        &server.uri_for("second"),
        &Expect {
            size: 8 * MIB,
            read_only: true,
            exports: &exports,
            map: false,
        },
    );
    let plain = nbdinfo_same(&[&server.uri_for("disk")]);
    assert!(
        plain.stdout.contains("using simple packets"),
        "{}",
        plain.stdout
    );
    // A missing export fails the same way with both libraries.
    let missing = nbdinfo_same(&[&server.uri_for("nope")]);
    assert_ne!(missing.code(), 0);
}

#[test]
fn nbdinfo_version_and_bad_uri() {
    assert_library_under_test_loaded();
    let version = nbdinfo_same(&["--version"]);
    assert!(version.stdout.starts_with("nbdinfo "));
    let scratch = Scratch::new();
    let bad = nbdinfo_same(&[&format!(
        "nbd+unix:///?socket={}",
        scratch.file("none.sock").display()
    )]);
    assert_eq!(bad.code(), 1);
}

// ---------------------------------------------------------------------------
// nbdcopy with several connections and requests in flight.

fn copy(src: &str, dst: &str, extra: &[&str]) {
    let mut cmd = tool(nbdcopy(), Lib::UnderTest);
    cmd.args(["--connections=4", "--requests=16"])
        .args(extra)
        .arg(src)
        .arg(dst);
    run_ok(&mut cmd);
}

fn assert_same_checksum(what: &str, got: &[u8], want: &[u8]) {
    let (g, w) = (sha256(got), sha256(want));
    println!("{what}: sha256 {g} (expected {w})");
    assert_eq!(got.len(), want.len(), "{what}: size differs");
    assert_eq!(g, w, "{what}: checksum differs");
}

#[test]
fn nbdcopy_nbd_to_file() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let (src, content) = sparse_random_file(&scratch, "src.img", 32 * MIB, 1);
    let qemu = Server::qemu_nbd(&scratch, &src, "raw", "src", &["-r"]);
    let out = scratch.file("out.img");
    copy(&qemu.uri(), out.to_str().unwrap(), &[]);
    assert_same_checksum("qemu-nbd -> file", &fs::read(&out).unwrap(), &content);

    let pattern = Server::nbdkit(&scratch, &["pattern", "24M"]);
    let out2 = scratch.file("pattern.img");
    copy(&pattern.uri(), out2.to_str().unwrap(), &["--requests=64"]);
    assert_same_checksum(
        "nbdkit pattern -> file",
        &fs::read(&out2).unwrap(),
        &pattern_data(0, 24 * MIB as usize),
    );

    let image = sparse_qcow2(&scratch, "sparse.qcow2");
    let sparse = Server::qemu_nbd(&scratch, &image, "qcow2", "sparse", &[]);
    let out3 = scratch.file("sparse.raw");
    copy(&sparse.uri(), out3.to_str().unwrap(), &[]);
    assert_same_checksum(
        "qcow2 -> file",
        &fs::read(&out3).unwrap(),
        &sparse_qcow2_content(),
    );
}

#[test]
fn nbdcopy_file_to_nbd() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let src = scratch.file("random.img");
    let content = pseudo_random(7, 24 * MIB as usize);
    fs::write(&src, &content).unwrap();

    let dst = raw_image(&scratch, "dst.img", 24 * MIB);
    let qemu = Server::qemu_nbd(&scratch, &dst, "raw", "dst", &[]);
    copy(src.to_str().unwrap(), &qemu.uri(), &["--flush"]);
    drop(qemu);
    assert_same_checksum("file -> qemu-nbd", &fs::read(&dst).unwrap(), &content);

    let disk = raw_image(&scratch, "disk.img", 24 * MIB);
    let server = nbd_server_with(&scratch, &[("disk", &disk, 24 * MIB, false)]);
    copy(
        src.to_str().unwrap(),
        &server.uri(),
        &["--flush", "--requests=32"],
    );
    drop(server);
    assert_same_checksum("file -> nbd-server", &fs::read(&disk).unwrap(), &content);

    // Into nbdkit memory and back out again.
    let memory = Server::nbdkit(&scratch, &["memory", "24M"]);
    copy(src.to_str().unwrap(), &memory.uri(), &[]);
    let back = scratch.file("back.img");
    copy(&memory.uri(), back.to_str().unwrap(), &[]);
    assert_same_checksum(
        "file -> nbdkit -> file",
        &fs::read(&back).unwrap(),
        &content,
    );
}

#[test]
fn nbdcopy_nbd_to_nbd() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let pattern = Server::nbdkit(&scratch, &["pattern", "32M"]);
    let dst = raw_image(&scratch, "dst.img", 32 * MIB);
    let qemu = Server::qemu_nbd(&scratch, &dst, "raw", "dst", &[]);
    copy(&pattern.uri(), &qemu.uri(), &["--requests=32", "--flush"]);
    drop(qemu);
    assert_same_checksum(
        "nbdkit pattern -> qemu-nbd",
        &fs::read(&dst).unwrap(),
        &pattern_data(0, 32 * MIB as usize),
    );

    let image = sparse_qcow2(&scratch, "sparse.qcow2");
    let src = Server::qemu_nbd(&scratch, &image, "qcow2", "src", &["-r"]);
    let disk = scratch.file("disk.img");
    // Non-zero garbage first, so that the holes must really be written.
    fs::write(&disk, vec![0x77u8; 64 * MIB as usize]).unwrap();
    let server = nbd_server_with(&scratch, &[("disk", &disk, 64 * MIB, false)]);
    copy(&src.uri(), &server.uri(), &["--flush"]);
    drop(server);
    assert_same_checksum(
        "qcow2 -> nbd-server",
        &fs::read(&disk).unwrap(),
        &sparse_qcow2_content(),
    );
}

// ---------------------------------------------------------------------------
// nbdsh (the Python bindings) on the library under test.

fn nbdsh_script(script: &str, uri: &str, env: &[(&str, &str)]) -> Output {
    let path = scripts_dir().join(script);
    assert!(path.is_file(), "{} is missing", path.display());
    let code = format!("exec(open({:?}).read())", path.display().to_string());
    let mut cmd = tool(nbdsh(), Lib::UnderTest);
    cmd.env("NBD_URI", uri)
        .args(["-c", NBDSH_PRINT_LOADED, "-c", &code]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_ok(&mut cmd);
    assert_ran_on_library_under_test(&out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l == format!("PACKAGE {}", under_test_identity())),
        "the script did not print the library's name and version:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l == format!("{script}: OK")),
        "{script} did not finish:\n{}",
        out.stdout
    );
    out
}

#[test]
fn nbdsh_readwrite_script() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let memory = Server::nbdkit(&scratch, &["memory", "32M"]);
    let out = nbdsh_script("readwrite.py", &memory.uri(), &[]);
    for line in [
        "sync: ok",
        "aio reads: 64 verified",
        "zero: ok",
        "trim: ok",
        "cache: ok",
    ] {
        assert!(out.stdout.lines().any(|l| l == line), "missing {line:?}");
    }
    assert!(out.stdout.contains("pread_structured: "));
    assert!(out.stdout.contains("block_status: "));
    assert!(out.stdout.contains("aio writes: 64 completed"));

    let image = sparse_qcow2(&scratch, "disk.qcow2");
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &[]);
    let out = nbdsh_script("readwrite.py", &qemu.uri(), &[]);
    assert!(out.stdout.contains("block_status: "));

    let disk = raw_image(&scratch, "disk.img", 16 * MIB);
    let server = nbd_server_with(&scratch, &[("disk", &disk, 16 * MIB, false)]);
    let out = nbdsh_script("readwrite.py", &server.uri(), &[]);
    assert!(out
        .stdout
        .contains("block_status: base:allocation not offered"));
}

#[test]
fn nbdsh_transports_script() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let unix = Server::nbdkit(&scratch, &["pattern", "1M"]);
    // A TCP server on a free loopback port chosen by binding port 0.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.local_addr().unwrap().port()
    };
    let mut tcp = std::process::Command::new(require("nbdkit", "nbdkit"))
        .args([
            "-f",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "pattern",
            "1M",
        ])
        .spawn()
        .expect("start nbdkit on TCP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nbdkit did not listen on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let port_s = port.to_string();
    let out = nbdsh_script(
        "transports.py",
        &unix.uri(),
        &[("NBD_TCP_PORT", port_s.as_str())],
    );
    let _ = tcp.kill();
    let _ = tcp.wait();
    for line in [
        "connect_command: ok (size 1048576)",
        "socket_activation: ok (size 2097152)",
        "connect_tcp: ok (size 1048576)",
        "connect_tcp by name: ok (size 1048576)",
        "connect_uri tcp: ok (size 1048576)",
        "connect_socket: ok (size 1048576)",
        "aio_connect_unix: ok (size 1048576)",
        "refused: ok",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            out.stdout
        );
    }
}

#[test]
fn nbdsh_shutdown_abandons_unsent_commands() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let memory = Server::nbdkit(&scratch, &["memory", "64M"]);
    let out = nbdsh_script("abandon.py", &memory.uri(), &[]);
    assert!(
        out.stdout.lines().any(|l| l == "abandoned: 2"),
        "{}",
        out.stdout
    );
}

#[test]
fn nbdsh_optmode_script() {
    assert_library_under_test_loaded();
    let scratch = Scratch::new();
    let listing = Server::nbdkit(
        &scratch,
        &[
            "eval",
            "list_exports=printf 'INTERLEAVED\\nalpha\\nfirst disk\\nbeta\\nsecond disk\\n'",
            "open=echo \"$3\"",
            "get_size=case \"$2\" in alpha) echo 1M;; beta) echo 2M;; *) echo 0;; esac",
            "pread=head -c \"$3\" /dev/zero",
        ],
    );
    let out = nbdsh_script(
        "optmode.py",
        &listing.uri(),
        &[("NBD_EXPECT_EXPORTS", "alpha,beta")],
    );
    assert!(out
        .stdout
        .contains("info 'beta': size 2097152 read_only True"));
    assert!(out.stdout.contains("go 'alpha': size 1048576"));

    let image = sparse_qcow2(&scratch, "disk.qcow2");
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &["-A"]);
    let out = nbdsh_script("optmode.py", &qemu.uri(), &[("NBD_EXPECT_EXPORTS", "disk")]);
    assert!(
        out.stdout.contains("'qemu:allocation-depth'"),
        "{}",
        out.stdout
    );

    let disk = raw_image(&scratch, "disk.img", 16 * MIB);
    let second = raw_image(&scratch, "second.img", 8 * MIB);
    let server = nbd_server_with(
        &scratch,
        &[
            ("disk", &disk, 16 * MIB, false),
            ("second", &second, 8 * MIB, true),
        ],
    );
    let out = nbdsh_script(
        "optmode.py",
        &server.uri(),
        &[("NBD_EXPECT_EXPORTS", "disk,second")],
    );
    assert!(out.stdout.contains("go 'disk': size 16777216"));
}

// ---------------------------------------------------------------------------
// fio's nbd engine with data verification.

fn fio_verify(uri: &str, job: &[&str], expect_bytes: u64, jobs: usize) {
    // fio saves verify state files in its working directory: use a scratch one.
    let scratch = Scratch::new();
    let mut cmd = tool(fio(), Lib::UnderTest);
    cmd.current_dir(scratch.path())
        .args(["--name=nbd-verify", "--ioengine=nbd"])
        .arg(format!("--uri={uri}"))
        .args([
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            "--output-format=json",
        ])
        .args(job);
    let out = run_ok(&mut cmd);
    let start = out.stdout.find('{').expect("fio printed JSON");
    let v: serde_json::Value = serde_json::from_str(&out.stdout[start..]).expect("fio JSON");
    let list = v["jobs"].as_array().expect("jobs");
    assert_eq!(list.len(), jobs);
    for j in list {
        assert_eq!(j["error"], 0, "fio job failed: {j}");
        assert_eq!(
            j["write"]["io_bytes"].as_u64(),
            Some(expect_bytes),
            "bytes written"
        );
        // The verify pass reads everything back.
        assert_eq!(
            j["read"]["io_bytes"].as_u64(),
            Some(expect_bytes),
            "bytes verified"
        );
    }
}

#[test]
fn fio_nbd_engine_verifies() {
    assert_library_under_test_loaded();
    assert_binary_loads(&fio(), Lib::UnderTest);
    let scratch = Scratch::new();
    let memory = Server::nbdkit(&scratch, &["memory", "64M"]);
    fio_verify(
        &memory.uri(),
        &["--rw=randwrite", "--bs=4k", "--size=16M", "--iodepth=32"],
        16 * MIB,
        1,
    );
    fio_verify(
        &memory.uri(),
        &[
            "--rw=write",
            "--bs=128k",
            "--size=16M",
            "--iodepth=8",
            "--numjobs=2",
            "--offset_increment=32M",
        ],
        16 * MIB,
        2,
    );
    let image = raw_image(&scratch, "fio.img", 32 * MIB);
    let qemu = Server::qemu_nbd(&scratch, &image, "raw", "fio", &[]);
    fio_verify(
        &qemu.uri(),
        &[
            "--rw=randwrite",
            "--bsrange=512-64k",
            "--size=16M",
            "--iodepth=16",
        ],
        16 * MIB,
        1,
    );
}
