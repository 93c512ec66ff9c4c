//! Runs the example clients (`examples/blocking.rs`, `examples/tokio.rs`)
//! against real servers: qemu-nbd (compact and extended headers) and, when
//! installed, nbdkit. `cargo test` builds the examples before the tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process that is killed when dropped.
struct Server {
    child: Child,
    _dir: TempDir,
    socket: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nbd-proto-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait_for_socket(p: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "server socket {p:?} never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn qemu_nbd(tag: &str) -> Server {
    let dir = TempDir::new(tag);
    let img = dir.0.join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("32M")
        .status()
        .expect("qemu-img is required (package qemu-utils)");
    assert!(st.success());
    let socket = dir.0.join("nbd.sock");
    let mut child = Command::new("qemu-nbd")
        .args(["-f", "qcow2", "--persistent", "-k"])
        .arg(&socket)
        .arg(&img)
        .stdout(Stdio::null())
        .spawn()
        .expect("qemu-nbd is required (package qemu-utils)");
    wait_for_socket(&socket, &mut child);
    Server {
        child,
        _dir: dir,
        socket,
    }
}

fn nbdkit(tag: &str) -> Server {
    let dir = TempDir::new(tag);
    let socket = dir.0.join("nbd.sock");
    let mut child = Command::new("nbdkit")
        .args(["-f", "-U"])
        .arg(&socket)
        .args(["memory", "16M"])
        .spawn()
        .expect("nbdkit is required (package nbdkit; .ci/run installs it)");
    wait_for_socket(&socket, &mut child);
    Server {
        child,
        _dir: dir,
        socket,
    }
}

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("examples").join(name);
    assert!(p.exists(), "example {p:?} not built");
    p
}

fn run_example(name: &str, server: &Server) -> String {
    let out = Command::new(example(name))
        .arg(&server.socket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("data verified"), "{stdout}");
    assert!(stdout.contains("disconnected"), "{stdout}");
    stdout
}

#[test]
fn blocking_example_against_qemu_nbd() {
    let s = qemu_nbd("blocking");
    let out = run_example("blocking", &s);
    // qemu-nbd 8.2+ negotiates extended headers; the example reports it.
    assert!(out.contains("structured true"), "{out}");
    assert!(out.contains("block status:"), "{out}");
}

#[test]
fn tokio_example_against_qemu_nbd() {
    let s = qemu_nbd("tokio");
    run_example("tokio", &s);
}

#[test]
fn examples_against_nbdkit() {
    let s = nbdkit("nbdkit");
    let out = run_example("blocking", &s);
    assert!(out.contains("extended false"), "{out}");
    run_example("tokio", &s);
}
