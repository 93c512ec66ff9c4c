//! Runs tests/c/misuse.c, a C program linked against our libnbd.so.0 (never
//! Debian's), which calls the API with NULL handles and strings, in the wrong
//! state, with oversized names and bad flags, and checks settings, debug
//! output and the callback `.free` rule. See the C file for the checks.

mod common;

use common::{assert_success, cc, crate_dir, repo_root, run, scratch};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The misuse program, compiled once: both tests use it, and building it
/// twice at the same time into one path raced ("Text file busy").
fn build_misuse() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(compile_misuse).clone()
}

/// Compiles misuse.c against include/libnbd.h and our library.
fn compile_misuse() -> PathBuf {
    let so = common::libnbd_so();
    let libdir = so.parent().unwrap().to_path_buf();
    let dir = scratch("misuse");
    let exe = dir.join("misuse");
    run(cc()
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-D_GNU_SOURCE",
            "-I",
        ])
        .arg(repo_root().join("include"))
        .arg(crate_dir().join("tests/c/misuse.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&libdir)
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .args(["-lnbd", "-lpthread"]));
    // Make sure the dynamic linker picks our library, not a system libnbd.
    let ldd = run(Command::new("ldd").arg(&exe));
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let line = ldd
        .lines()
        .find(|l| l.contains("libnbd.so.0"))
        .unwrap_or_else(|| panic!("misuse does not load libnbd.so.0:\n{ldd}"));
    assert!(
        line.contains(&libdir.display().to_string()),
        "misuse loads the wrong libnbd: {line}"
    );
    exe
}

#[test]
fn misuse_from_c() {
    let exe = build_misuse();
    let out = Command::new(&exe)
        // nbd-ffi's build.rs: the libnbd version nbd_get_version reports.
        .arg(env!("NBD_LIBNBD_VERSION"))
        .env_remove("LIBNBD_DEBUG")
        .output()
        .expect("run misuse");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert_success("misuse", &out);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(" passed, 0 failed") && !last.starts_with("0 "),
        "unexpected summary: {last}"
    );
}

#[test]
fn debug_messages_on_stderr_use_libnbd_format() {
    let exe = build_misuse();
    let out = Command::new(&exe)
        .arg("--stderr-debug")
        .env_remove("LIBNBD_DEBUG")
        .output()
        .expect("run misuse --stderr-debug");
    assert_success("misuse --stderr-debug", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "libnbd: debug: probe: nbd_set_debug: leave: ret=0",
            "libnbd: debug: probe: nbd_set_export_name: enter: export_name=\"x\\x0a\"",
            "libnbd: debug: probe: nbd_set_export_name: leave: ret=0",
            "libnbd: debug: probe: nbd_close: closing handle",
        ],
        "stderr was:\n{stderr}"
    );
}
