//! Eight threads share one handle (`tests/c/threads-stress.c`): synchronous
//! and aio reads and writes on disjoint regions, every read checked, for
//! about 3 s against nbdkit (and 2 s more over TLS); errors stay in the
//! thread that caused them (see the C file). Then the same program, shorter, under valgrind's
//! helgrind (see [`threads_under_helgrind`] for what is judged).

mod cbuild;

use nbd_tests::*;
use std::time::Duration;

#[test]
fn eight_threads_share_one_handle_with_verified_data_and_own_errors() {
    let scratch = Scratch::new();
    let server = Server::nbdkit(&scratch, &["memory", "64M"]);
    stress(&server.uri(), "3");
}

/// The same over TLS: whichever thread holds the handle drives OpenSSL.
#[test]
fn eight_threads_share_one_tls_handle() {
    let scratch = Scratch::new();
    let keys = psk_file(&scratch, "threads");
    let server = Server::nbdkit_psk(&scratch, &keys, &["memory", "64M"]);
    stress(&server.psk_uri("threads", &keys), "2");
}

fn stress(uri: &str, seconds: &str) {
    let exe = cbuild::build("threads-stress");
    let out = run_timeout(
        tool(&exe, Lib::UnderTest).arg(uri).arg(seconds),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "threads-stress failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    let f = cbuild::fields(&out.stdout, "OK ");
    assert!(f["ops"] >= 100, "too few operations: {}", out.stdout);
    assert!(f["aio"] > 0 && f["verified"] > 0, "{}", out.stdout);
    assert_eq!(
        out.stdout.matches(" keeps its own error").count(),
        2,
        "{}",
        out.stdout
    );
}

/// Suppressions for helgrind, written for this library: it locks its
/// handle with Rust's std `Mutex`, built on raw futexes, which helgrind does
/// not model (and, inlined, the lock shows no std frame to match). Every
/// access the library makes under that lock looks unordered to helgrind, so
/// reports whose stack goes through the library are suppressed here; what
/// remains are reports about the C program's own accesses.
const HELGRIND_SUPP: &str = r#"
{
   nbd-rs-futex-mutex-invisible-to-helgrind
   Helgrind:Race
   ...
   obj:*/libnbd.so.0*
}
"#;

/// helgrind's verdict. Our library locks with Rust's std Mutex, on raw
/// futexes: helgrind cannot see those locks, so it reports the accesses they
/// order as races (false positives); run with `HELGRIND_STRICT=1` to fail on
/// any report. By default the test requires the program to pass its own
/// checks under helgrind and prints the reports.
#[test]
fn threads_under_helgrind() {
    let valgrind = require("valgrind", "valgrind");
    let exe = cbuild::build("threads-stress");
    let scratch = Scratch::new();
    let supp = scratch.file("rust-std.supp");
    std::fs::write(&supp, HELGRIND_SUPP).expect("write suppressions");
    let server = Server::nbdkit(&scratch, &["memory", "64M"]);
    let strict = std::env::var_os("HELGRIND_STRICT").is_some_and(|v| v == "1");
    let out = run_timeout(
        tool(&valgrind, Lib::UnderTest)
            .args(["--tool=helgrind", "--error-exitcode=97", "-q"])
            .arg(format!("--suppressions={}", supp.display()))
            .arg(&exe)
            .arg(server.uri())
            .arg("1"),
        Duration::from_secs(300),
    );
    assert!(
        out.code() == 0 || out.code() == 97,
        "threads-stress failed under helgrind:\n{}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("OK ops="), "{}", out.stdout);
    let reports =
        out.stderr.matches("Possible data race").count() + out.stderr.matches("lock order").count();
    println!(
        "helgrind: {reports} reports outside the suppressed library accesses (exit {})",
        out.code()
    );
    if strict {
        assert_eq!(out.code(), 0, "helgrind reported errors:\n{}", out.stderr);
    }
}
