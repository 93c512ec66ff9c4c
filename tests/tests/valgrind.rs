//! Memory checking: every C example of `c-examples/` (built against the
//! library under test) and the misuse program `nbd-ffi/tests/c/misuse.c`
//! run under valgrind's memcheck against real servers, with
//! `--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99`:
//! they must pass their own checks with 0 errors and 0 definite leaks.
//! Every program is run; none is skipped (`all_programs_are_covered`).

mod cbuild;

use nbd_tests::*;
use std::process::Command;
use std::time::Duration;

/// What memcheck's exit code is when it found an error or a definite leak.
const VALGRIND_ERROR: i32 = 99;

/// The programs this file runs.
const COVERED: &[&str] = &[
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
    "socket-activation",
    "tls-psk",
    "backup-pull",
    "dirty-map",
];

fn memcheck(program: &std::path::Path) -> Command {
    let valgrind = require("valgrind", "valgrind");
    let mut cmd = tool(valgrind, Lib::UnderTest);
    cmd.args([
        "-q",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--error-exitcode=99",
        "--track-fds=no",
    ])
    .arg(program);
    cmd
}

/// Runs `program args` under memcheck; asserts a clean run.
fn check(program: &std::path::Path, args: &[&str]) -> Output {
    let out = run_timeout(memcheck(program).args(args), Duration::from_secs(600));
    assert_ne!(
        out.code(),
        VALGRIND_ERROR,
        "valgrind found errors or definite leaks in {}:\n{}",
        program.display(),
        out.stderr
    );
    assert_eq!(
        out.code(),
        0,
        "{} failed under valgrind:\n{}{}",
        program.display(),
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stderr.contains("definitely lost") && !out.stderr.contains("Invalid "),
        "{}",
        out.stderr
    );
    out
}

fn example_path(name: &str) -> std::path::PathBuf {
    c_examples().join(name)
}

#[test]
fn all_programs_are_covered() {
    let mut want: Vec<&str> = C_EXAMPLES.to_vec();
    want.push("socket-activation");
    want.sort();
    let mut have = COVERED.to_vec();
    have.sort();
    assert_eq!(have, want, "a C example is not run under valgrind");
    let dir = repo_root().join("c-examples");
    let mut sources: Vec<String> = std::fs::read_dir(&dir)
        .expect("c-examples")
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".c").map(str::to_string)
        })
        .collect();
    sources.sort();
    assert_eq!(sources, want, "c-examples/ has a program not listed here");
}

#[test]
fn examples_on_nbdkit_under_memcheck() {
    let scratch = Scratch::new();
    let kit = Server::nbdkit(&scratch, &["memory", "16M"]);
    let uri = kit.uri();
    let socket = kit.socket().to_str().unwrap().to_string();
    for (name, args) in [
        ("first-sector", vec![uri.as_str()]),
        ("get-size", vec![uri.as_str()]),
        ("read-write", vec![uri.as_str()]),
        ("aio-poll", vec![socket.as_str()]),
        ("server-flags", vec![uri.as_str()]),
        ("batched", vec![uri.as_str(), "16"]),
        ("map", vec![uri.as_str()]),
    ] {
        check(&example_path(name), &args);
    }
}

#[test]
fn threads_example_under_memcheck() {
    let scratch = Scratch::new();
    let kit = Server::nbdkit(&scratch, &["memory", "16M"]);
    check(&example_path("threads"), &[&kit.uri()]);
}

#[test]
fn examples_on_qemu_nbd_and_nbd_server_under_memcheck() {
    let scratch = Scratch::new();
    let image = scratch.file("sparse.qcow2");
    qemu_img_create(&image, "qcow2", 64 << 20);
    qemu_io(&image, "qcow2", &["write -P 0x55 1M 2M", "write -z 20M 1M"]);
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &[]);
    check(&example_path("structured-read"), &[&qemu.uri()]);
    check(&example_path("map"), &[&qemu.uri()]);
    check(&example_path("list-exports"), &[&qemu.uri()]);

    let disk = scratch.file("disk.img");
    qemu_img_create(&disk, "raw", 16 << 20);
    let server = Server::nbd_server(
        &scratch,
        &[NbdServerExport {
            name: "disk".into(),
            file: disk,
            size: 16 << 20,
            readonly: false,
        }],
    );
    check(&example_path("list-exports"), &[&server.uri()]);
    check(&example_path("aio-poll"), &[&server.uri_for("disk")]);
}

#[test]
fn tls_psk_example_under_memcheck() {
    let scratch = Scratch::new();
    let keys = psk_file(&scratch, "alice");
    let kit = Server::nbdkit_psk(&scratch, &keys, &["memory", "16M"]);
    check(
        &example_path("tls-psk"),
        &[
            keys.to_str().unwrap(),
            "alice",
            kit.socket().to_str().unwrap(),
        ],
    );
}

#[test]
fn socket_activation_under_memcheck() {
    require("nbdkit", "nbdkit");
    let out = check(
        &example_path("socket-activation"),
        &["nbdkit", "memory", "2M"],
    );
    assert!(
        out.stdout.contains("export size: 2097152 bytes"),
        "{}",
        out.stdout
    );
}

#[test]
fn backup_pull_under_memcheck() {
    let scratch = Scratch::new();
    let image = scratch.file("disk.qcow2");
    qemu_img_create(&image, "qcow2", 8 << 20);
    let qemu_img = require("qemu-img", "qemu-utils");
    run_ok(
        Command::new(&qemu_img)
            .args(["bitmap", "--add"])
            .arg(&image)
            .arg("b0"),
    );
    qemu_io(
        &image,
        "qcow2",
        &["write -P 0x11 1M 64k", "write -z 2M 64k"],
    );
    run_ok(
        Command::new(&qemu_img)
            .args(["bitmap", "--disable"])
            .arg(&image)
            .arg("b0"),
    );
    let qemu = Server::qemu_nbd(&scratch, &image, "qcow2", "disk", &["-r", "-B", "b0"]);
    let target = scratch.file("backup.raw");
    let out = check(
        &example_path("backup-pull"),
        &[&qemu.uri(), "b0", target.to_str().unwrap()],
    );
    assert!(
        out.stdout.contains("copied: 65536 bytes in 1 reads"),
        "{}",
        out.stdout
    );
}

/// dirty-map's both paths: qemu-nbd with a dirty bitmap (extended
/// headers, 64-bit and filtered block status) and nbdkit (structured
/// replies only, base:allocation alone).
#[test]
fn dirty_map_under_memcheck() {
    if !c_example_built("dirty-map") {
        eprintln!("dirty_map_under_memcheck: the header predates libnbd 1.20");
        return;
    }
    let scratch = Scratch::new();
    let disk = nbd_tests::qemu::backed_disk(&scratch);
    let qemu = Server::qemu_nbd(&scratch, &disk, "qcow2", "disk", &["-r", "-B", "b0"]);
    let out = check(&example_path("dirty-map"), &[&qemu.uri(), "b0"]);
    assert!(
        out.stdout
            .contains("filtered walk of qemu:dirty-bitmap:b0: the same 9 extents"),
        "{}",
        out.stdout
    );
    let kit = Server::nbdkit(&scratch, &["memory", "4M"]);
    let out = check(&example_path("dirty-map"), &[&kit.uri(), "b0"]);
    assert!(
        out.stdout.contains("filtered walk: skipped"),
        "{}",
        out.stdout
    );
}

#[test]
fn misuse_under_memcheck() {
    let libdir = libnbd_dir();
    let scratch = Scratch::new();
    let exe = scratch.file("misuse");
    run_ok(
        Command::new(require("cc", "gcc"))
            .args([
                "-std=c11",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-D_GNU_SOURCE",
                "-g",
                "-I",
            ])
            .arg(cbuild::include_dir())
            .arg(repo_root().join("nbd-ffi/tests/c/misuse.c"))
            .arg("-o")
            .arg(&exe)
            .arg("-L")
            .arg(&libdir)
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .args(["-lnbd", "-lpthread"]),
    );
    assert_binary_loads(&exe, Lib::UnderTest);
    let out = check(&exe, &[&libnbd_api_version()]);
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.ends_with(" passed, 0 failed"), "{}", out.stdout);
}

#[test]
fn kill_load_under_memcheck() {
    // The error paths: the server dies with commands in flight. The kill
    // waits for the client's READY (connected, commands in flight), not a
    // fixed time: under valgrind on a busy machine connecting alone took
    // longer than the 1.5 s this test used to wait, and the run failed.
    use std::io::{BufRead, BufReader, Read, Seek};
    use std::process::Stdio;
    let exe = cbuild::build("kill-load");
    let scratch = Scratch::new();
    let kit = Server::nbdkit(&scratch, &["memory", "64M"]);
    let mut err = tempfile::tempfile().expect("temporary file");
    let mut cmd = memcheck(&exe);
    cmd.args(["load", &kit.uri(), "7"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err.try_clone().expect("dup")));
    println!("$ {}", describe(&cmd));
    let mut child = cmd.spawn().expect("start valgrind");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut stdout = String::new();
    out.read_line(&mut stdout).expect("read the client");
    let mut stderr = || {
        let mut s = String::new();
        err.rewind().expect("rewind");
        err.read_to_string(&mut s).expect("read");
        s
    };
    if stdout.trim_end() != "READY" {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the client did not get ready: {stdout:?}\n{}", stderr());
    }
    // SAFETY: kill(2) on the nbdkit this test started, not yet reaped.
    unsafe { libc::kill(kit.pid(), libc::SIGKILL) };
    out.read_to_string(&mut stdout).expect("client output");
    let status = child.wait().expect("wait");
    let stderr = stderr();
    println!("{stdout}[stderr] {stderr}");
    assert_ne!(
        status.code(),
        Some(VALGRIND_ERROR),
        "valgrind found errors:\n{stderr}"
    );
    assert!(
        status.success(),
        "kill-load failed ({status}):\n{stdout}{stderr}"
    );
    assert!(
        !stderr.contains("definitely lost") && !stderr.contains("Invalid "),
        "{stderr}"
    );
    let f = cbuild::fields(&stdout, "RESULT ");
    assert_eq!(f["bad_frees"], 0, "{stdout}");
    assert_eq!(f["dead"], 1, "{stdout}");
}
