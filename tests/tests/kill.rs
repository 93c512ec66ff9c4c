//! The server dies under load: `tests/c/kill-load.c` keeps 64 aio commands
//! (64 KiB reads and writes) in flight against an nbdkit memory server,
//! driven by `nbd_poll`, and the test kills the server with SIGKILL at a
//! pseudo-random moment (20–200 ms after the load started, from a seeded
//! generator). Every run must end with: every command completed exactly
//! once (the in-flight ones with an error, no success after the first
//! error), the last completion less than 1 s after the kill,
//! `nbd_aio_is_dead` = 1, each `.free` run exactly once, and as many file
//! descriptors open after `nbd_close` as before `nbd_create`.
//!
//! The suite runs 200 kills, several at once, and 40 more over TLS (PSK);
//! `KILL_RUNS=1000 cargo test -p nbd-tests --test kill` runs 1000 (opt-in
//! soak; `KILL_TLS_RUNS` for the TLS ones). `KILL_SEED` changes
//! the seed, `KILL_JOBS` the number of runs at once (default 4).
//!
//! A client with SIGPIPE at its default disposition writing 32 MiB at a
//! time survives the server being killed (Unix socket: EPIPE) or reset
//! (TCP: the kernel answers with RST, as the killed server had unread data).
//!
//! Servers that never finish a reply are in `nbd-ffi/tests/stuck_server.rs`.

mod cbuild;

use nbd_tests::*;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// How long the client may take to exit after the kill: a hang detector,
/// not a speed test, so generous enough for a loaded 2-core machine
/// running other tests (10 s was not always).
const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

/// xorshift64*, for the kill delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Starts `cmd` with stdout piped and stderr to a file; waits for the
/// "READY" line.
fn start_client(mut cmd: Command) -> (Child, BufReader<std::process::ChildStdout>, std::fs::File) {
    let err = tempfile::tempfile().expect("temporary file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err.try_clone().expect("dup")))
        .spawn()
        .expect("start the client");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read the client");
    if line.trim_end() != "READY" {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the client did not get ready: {line:?}\n{}", read_all(err));
    }
    (child, out, err)
}

fn read_all(mut f: std::fs::File) -> String {
    use std::io::Seek;
    let mut s = String::new();
    f.rewind().expect("rewind");
    f.read_to_string(&mut s).expect("read");
    s
}

/// Waits for the client; returns its exit status, stdout and stderr.
fn finish_client(
    mut child: Child,
    mut out: BufReader<std::process::ChildStdout>,
    err: std::fs::File,
) -> (std::process::ExitStatus, String, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > EXIT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the client did not exit within {EXIT_TIMEOUT:?} of the kill:\n{}",
                read_all(err)
            );
        }
        thread::sleep(Duration::from_millis(2));
    };
    let mut stdout = String::new();
    out.read_to_string(&mut stdout).expect("client output");
    (status, stdout, read_all(err))
}

fn sigkill(pid: libc::pid_t) {
    // SAFETY: kill(2) on the PID of a server this test started (not yet
    // reaped, so the PID cannot have been reused).
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill the server"
    );
}

/// One run: start the server and the load, kill the server after
/// `delay`, check what the client saw. Returns the number of commands.
/// With `tls`, the connection runs TLS with a pre-shared key.
fn one_run(exe: &Path, seed: u64, delay: Duration, tls: bool) -> i64 {
    let scratch = Scratch::new();
    let (server, uri) = if tls {
        let keys = psk_file(&scratch, "kill");
        let server = Server::nbdkit_psk(&scratch, &keys, &["memory", "64M"]);
        let uri = server.psk_uri("kill", &keys);
        (server, uri)
    } else {
        let server = Server::nbdkit(&scratch, &["memory", "64M"]);
        let uri = server.uri();
        (server, uri)
    };
    let mut cmd = tool(exe, Lib::UnderTest);
    cmd.arg("load").arg(uri).arg(format!("0x{seed:x}"));
    let (child, out, err) = start_client(cmd);
    thread::sleep(delay);
    let kill_ns = cbuild::monotonic_ns();
    sigkill(server.pid());
    let (status, stdout, stderr) = finish_client(child, out, err);
    drop(server);
    let ctx = format!("seed 0x{seed:x}, kill after {delay:?}:\n{stdout}{stderr}");
    assert!(status.success(), "client failed ({status}), {ctx}");
    let f = cbuild::fields(&stdout, "RESULT ");
    let get = |k: &str| *f.get(k).unwrap_or_else(|| panic!("no {k}, {ctx}"));
    assert!(get("issued") >= 64, "{ctx}");
    assert_eq!(
        get("completed"),
        get("issued"),
        "every command completes, {ctx}"
    );
    assert!(
        get("errors") >= 1,
        "commands in flight at the kill fail, {ctx}"
    );
    assert_eq!(
        get("ok_after_err"),
        0,
        "no success after the first error, {ctx}"
    );
    assert_eq!(
        get("bad_calls"),
        0,
        "one completion call per command, {ctx}"
    );
    assert_eq!(get("bad_frees"), 0, "each .free exactly once, {ctx}");
    assert_eq!(
        get("records"),
        get("issued") + get("issue_failures"),
        "{ctx}"
    );
    assert_eq!(get("dead"), 1, "nbd_aio_is_dead, {ctx}");
    assert_eq!(get("in_flight"), 0, "nbd_aio_in_flight once dead, {ctx}");
    assert_eq!(get("fds_after"), get("fds_before"), "fd leak, {ctx}");
    let late = get("last_completion_ns") - kill_ns;
    assert!(
        late < 1_000_000_000,
        "last completion {late} ns after the kill, {ctx}"
    );
    assert!(
        get("first_err_ns") >= kill_ns,
        "an error before the kill, {ctx}"
    );
    get("issued")
}

#[test]
fn server_killed_under_aio_load_every_command_fails_promptly() {
    kill_runs(env_number("KILL_RUNS", 200), false);
}

/// The same over TLS (PSK): OpenSSL between the engine and the socket must
/// not change what the caller sees when the server dies.
#[test]
fn server_killed_under_aio_load_over_tls_every_command_fails_promptly() {
    kill_runs(env_number("KILL_TLS_RUNS", 40), true);
}

fn kill_runs(runs: u64, tls: bool) {
    require("nbdkit", "nbdkit");
    let exe = cbuild::build("kill-load");
    let jobs = env_number("KILL_JOBS", 4).max(1);
    let seed = env_number("KILL_SEED", 0x6b69_6c6c);
    let mut rng = Rng(seed | 1);
    let plan: Vec<(u64, Duration)> = (0..runs)
        .map(|_| {
            let s = rng.next();
            (s, Duration::from_millis(20 + rng.next() % 181))
        })
        .collect();
    let next = AtomicUsize::new(0);
    let commands = Mutex::new(0i64);
    let start = Instant::now();
    thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(s, delay)) = plan.get(i) else {
                    break;
                };
                let n = one_run(&exe, s, delay, tls);
                *commands.lock().unwrap() += n;
            });
        }
    });
    println!(
        "{runs} kills{} ({jobs} at once, seed 0x{seed:x}) in {:?}, {} commands",
        if tls { " over TLS" } else { "" },
        start.elapsed(),
        commands.into_inner().unwrap()
    );
}

/// A free TCP port on 127.0.0.1 (there is a small window in which another
/// process could take it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Starts `nbdkit memory 64M` on TCP; returns it and its URI.
fn nbdkit_tcp() -> (Child, String) {
    let port = free_port();
    let child = Command::new(require("nbdkit", "nbdkit"))
        .args([
            "--foreground",
            "--exit-with-parent",
            "-i",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args(["memory", "64M"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start nbdkit");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "nbdkit did not listen"
        );
        thread::sleep(Duration::from_millis(10));
    }
    (child, format!("nbd://127.0.0.1:{port}/"))
}

fn sigpipe_run(uri: &str, pid: libc::pid_t, delay: Duration) {
    let exe = cbuild::build("kill-load");
    let mut cmd = tool(exe, Lib::UnderTest);
    cmd.arg("sigpipe").arg(uri);
    let (child, out, err) = start_client(cmd);
    thread::sleep(delay);
    sigkill(pid);
    let (status, stdout, stderr) = finish_client(child, out, err);
    println!("{stdout}{stderr}");
    assert!(
        status.success(),
        "the client did not survive the broken connection ({status}: SIGPIPE is 13):\n{stdout}{stderr}"
    );
    let f = cbuild::fields(&stdout, "SURVIVED ");
    assert_eq!(f["dead"], 1, "{stdout}");
}

#[test]
fn default_sigpipe_client_survives_server_killed_mid_write_unix() {
    for delay in [20, 60, 150] {
        let scratch = Scratch::new();
        let server = Server::nbdkit(&scratch, &["memory", "64M"]);
        sigpipe_run(&server.uri(), server.pid(), Duration::from_millis(delay));
    }
}

#[test]
fn default_sigpipe_client_survives_connection_reset_mid_write_tcp() {
    for delay in [20, 60, 150] {
        let (mut child, uri) = nbdkit_tcp();
        sigpipe_run(
            &uri,
            child.id() as libc::pid_t,
            Duration::from_millis(delay),
        );
        let _ = child.wait();
    }
}
