//! Starts real NBD servers on Unix sockets in private temp directories.
#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "nbd-client-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server, killed (by PID) on drop.
pub struct Server {
    child: Option<Child>,
    pub sock: PathBuf,
    pub image: Option<PathBuf>,
    _dir: TempDir,
}

impl Server {
    pub fn addr(&self) -> String {
        self.sock.to_str().unwrap().to_string()
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_for_socket(child: &mut Child, sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sparse raw image of `size` bytes with `data` written at the given
/// offsets (everything else a hole).
pub fn sparse_image(dir: &Path, size: u64, data: &[(u64, &[u8])]) -> PathBuf {
    let img = dir.join("disk.img");
    let f = File::create(&img).unwrap();
    f.set_len(size).unwrap();
    for (off, bytes) in data {
        f.write_all_at(bytes, *off).unwrap();
    }
    f.sync_all().unwrap();
    img
}

/// qemu-nbd serving a sparse raw image, persistent (`-t`), with `extra`
/// arguments (e.g. `-x name`, `-r`).
pub fn qemu(size: u64, data: &[(u64, &[u8])], extra: &[&str]) -> Server {
    let dir = TempDir::new();
    let img = sparse_image(&dir.0, size, data);
    let sock = dir.0.join("nbd.sock");
    let mut child = Command::new("qemu-nbd")
        .arg("-k")
        .arg(&sock)
        .args(["-f", "raw", "-t"])
        .args(extra)
        .arg(&img)
        .stdin(Stdio::null())
        .spawn()
        .expect("qemu-nbd is installed");
    wait_for_socket(&mut child, &sock);
    Server {
        child: Some(child),
        sock,
        image: Some(img),
        _dir: dir,
    }
}

/// nbdkit in the foreground with these plugin/filter arguments.
pub fn nbdkit(args: &[&str]) -> Server {
    let dir = TempDir::new();
    let sock = dir.0.join("nbd.sock");
    let mut child = Command::new("nbdkit")
        .arg("-f")
        .arg("-U")
        .arg(&sock)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("nbdkit is installed");
    wait_for_socket(&mut child, &sock);
    Server {
        child: Some(child),
        sock,
        image: None,
        _dir: dir,
    }
}

/// Bytes that differ at every offset and between seeds.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64).wrapping_mul(31).wrapping_add(seed * 7 + 1) % 251) as u8)
        .collect()
}

/// The path of an example program of this package. `cargo test` builds
/// the examples before it runs the tests; when only one test target was
/// asked for, the example is built here.
pub fn example(name: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let p = profile_dir.join("examples").join(name);
    if !p.exists() {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "nbd-client", "--example", name]);
        if !features.is_empty() {
            cmd.arg("--features").arg(features.join(","));
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building example {name} failed");
    }
    assert!(p.exists(), "{} not built", p.display());
    p
}

/// Kills (by PID) and reaps a child process on drop, panics included.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
