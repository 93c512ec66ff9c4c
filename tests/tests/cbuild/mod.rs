//! Builds the C test programs of `tests/c/` against the header and the
//! library under test (`-Wall -Wextra -Werror`), once per test binary.

#![allow(dead_code)] // Each test binary uses a different subset.

use nbd_tests::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The header directory: `NBD_TEST_INCLUDE`, else `include/` of the
/// repository (or `/usr/include` when testing a system library).
pub(crate) fn include_dir() -> PathBuf {
    match std::env::var_os("NBD_TEST_INCLUDE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ if is_system_dir(&libnbd_dir()) => PathBuf::from("/usr/include"),
        _ => repo_root().join("include"),
    }
}

/// Compiles `tests/c/<name>.c` and returns the binary, which loads the
/// library under test through its rpath.
pub(crate) fn build(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    require("cc", "gcc");
    let libdir = libnbd_dir();
    let out_dir = repo_root()
        .join("target")
        .join("c-tests")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&out_dir).expect("create target/c-tests");
    let exe = out_dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("c")
        .join(format!("{name}.c"));
    run_ok(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-g", "-I"])
            .arg(include_dir())
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg("-L")
            .arg(&libdir)
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .args(["-lnbd", "-lpthread"]),
    );
    assert_binary_loads(&exe, Lib::UnderTest);
    built.insert(name.to_string(), exe.clone());
    exe
}

/// `CLOCK_MONOTONIC` in nanoseconds, comparable with the C programs'.
pub(crate) fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The `key=value` fields of the line starting with `prefix`.
pub(crate) fn fields(text: &str, prefix: &str) -> HashMap<String, i64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.parse()
                    .unwrap_or_else(|_| panic!("bad number in {w:?}", w = (k, v))),
            )
        })
        .collect()
}
