//! Faults injected by real servers, seen through nbdsh (the Python
//! bindings) on the library under test: nbdkit's `error` filter makes data
//! commands fail (every failure must be reported, with its errno, to
//! synchronous callers and to completion callbacks, and the connection must
//! survive), and its `delay` filter makes reads slow (they must still return
//! the right data). The script is `scripts/faults.py`.

use nbd_tests::*;
use std::path::Path;

fn nbdsh() -> std::path::PathBuf {
    require("nbdsh", "libnbd-bin")
}

/// Runs `faults.py` in `mode` against `uri` and checks that it ran on the
/// library under test and finished.
fn faults_script(uri: &str, mode: &str) -> Output {
    assert_library_under_test_loaded();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/faults.py");
    let code = format!("exec(open({:?}).read())", path.display().to_string());
    let out = run_ok(
        tool(nbdsh(), Lib::UnderTest)
            .env("NBD_URI", uri)
            .env("NBD_FAULT_MODE", mode)
            .args(["-c", NBDSH_PRINT_LOADED, "-c", &code]),
    );
    assert_ran_on_library_under_test(&out.stdout);
    assert!(
        out.stdout.lines().any(|l| l == "faults.py: OK"),
        "faults.py did not finish:\n{}",
        out.stdout
    );
    out
}

/// The failures nbdkit's log filter recorded (`return=-1 error=<errno>`).
fn logged_failures(log: &Path, errno: &str) -> usize {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("nbdkit log {}: {e}", log.display()));
    text.lines()
        .filter(|l| l.contains(&format!("return=-1 error={errno}")))
        .count()
}

/// The number printed after `key=` on the script's line starting `prefix`.
fn reported(stdout: &str, prefix: &str, key: &str) -> usize {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{stdout}"));
    line.split(&format!("{key}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

#[test]
fn error_filter_at_100_percent_every_failure_is_reported() {
    let scratch = Scratch::new();
    let server = Server::nbdkit(
        &scratch,
        &[
            "--filter=error",
            "memory",
            "16M",
            "error-rate=100%",
            "error=EIO",
        ],
    );
    let out = faults_script(&server.uri(), "all");
    // 7 synchronous commands, 16 aio reads, 4 aio writes, 1 aio block status.
    assert!(
        out.stdout.lines().any(|l| l == "all: 28 failures reported"),
        "{}",
        out.stdout
    );
}

#[test]
fn error_filter_at_10_percent_each_failure_is_reported_once_and_no_stale_data() {
    let scratch = Scratch::new();
    let log = scratch.file("requests.log");
    let logfile = format!("logfile={}", log.display());
    let server = Server::nbdkit(
        &scratch,
        &[
            "--filter=log",
            "--filter=error",
            "memory",
            "4M",
            "error-rate=10%",
            "error=EIO",
            &logfile,
        ],
    );
    let out = faults_script(&server.uri(), "some");
    let client_saw = reported(&out.stdout, "some:", "failures");
    // Stopping the server makes sure its log is complete.
    drop(server);
    let server_sent = logged_failures(&log, "EIO");
    assert!(server_sent > 0, "the filter injected no error");
    assert_eq!(
        client_saw, server_sent,
        "every failure the server sent must reach the caller, and nothing else"
    );
}

#[test]
fn error_filter_on_writes_reports_enospc_and_reads_still_work() {
    let scratch = Scratch::new();
    let server = Server::nbdkit(
        &scratch,
        &[
            "--filter=error",
            "memory",
            "1M",
            "error-pwrite-rate=100%",
            "error-pwrite=ENOSPC",
        ],
    );
    let out = faults_script(&server.uri(), "enospc");
    assert!(
        out.stdout.lines().any(|l| l == "enospc: ok"),
        "{}",
        out.stdout
    );
}

#[test]
fn delay_filter_reads_are_slow_but_correct() {
    let scratch = Scratch::new();
    let server = Server::nbdkit(
        &scratch,
        &["--filter=delay", "memory", "4M", "delay-read=20ms"],
    );
    let out = faults_script(&server.uri(), "delay");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "delay: 64 aio reads verified"),
        "{}",
        out.stdout
    );
}
