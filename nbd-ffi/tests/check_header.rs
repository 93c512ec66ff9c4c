//! The committed include/libnbd.h is exactly what cbindgen generates from
//! the current sources (the same check as `make check-header`).

mod common;

use common::{repo_root, run, scratch};
use std::process::Command;

/// The cbindgen version pinned in the Makefile.
fn pinned_version() -> String {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).expect("Makefile");
    makefile
        .lines()
        .find_map(|l| l.strip_prefix("CBINDGEN_VERSION := "))
        .expect("CBINDGEN_VERSION in Makefile")
        .trim()
        .to_string()
}

#[test]
fn committed_header_is_cbindgen_output() {
    let cbindgen = std::env::var("CBINDGEN").unwrap_or_else(|_| "cbindgen".into());
    let installed = Command::new(&cbindgen)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let pinned = pinned_version();
    // CI installs the pinned cbindgen (scripts/install-deps.sh): there a
    // missing or different cbindgen is a failure, not a reason to skip.
    let must_run = std::env::var_os("CI").is_some();
    match installed {
        None if must_run => panic!("cbindgen {pinned} is not installed (CI must have it)"),
        Some(v) if must_run && v != format!("cbindgen {pinned}") => {
            panic!("found {v}, but the header is generated with cbindgen {pinned}")
        }
        None => {
            eprintln!(
                "SKIPPED committed_header_is_cbindgen_output: cbindgen is not installed \
                 (cargo install cbindgen --version {pinned} --locked)"
            );
            return;
        }
        Some(v) if v != format!("cbindgen {pinned}") => {
            eprintln!(
                "SKIPPED committed_header_is_cbindgen_output: found {v}, the header is \
                 generated with cbindgen {pinned}"
            );
            return;
        }
        Some(_) => {}
    }
    let out = scratch("check-header").join("libnbd.h");
    run(Command::new(&cbindgen)
        .current_dir(repo_root())
        .args(["--quiet", "--config", "cbindgen.toml", "--output"])
        .arg(&out)
        .arg("nbd-ffi"));
    let generated = std::fs::read_to_string(&out).unwrap();
    let committed = std::fs::read_to_string(repo_root().join("include/libnbd.h")).unwrap();
    assert!(
        generated == committed,
        "include/libnbd.h is stale: run `make header` and commit the result"
    );
}
