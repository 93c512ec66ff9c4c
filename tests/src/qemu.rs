//! QEMU's NBD servers for the tests: qemu-storage-daemon with
//! `--nbd-server` and `--export type=nbd` (built up with [`Qsd`]), qemu-nbd
//! with arbitrary options ([`qemu_nbd_args`]), their QMP monitor and trace
//! log, and C programs built against either libnbd ([`build_c`]) so that
//! the same source can be run on Debian's libnbd and on the library under
//! test and the outputs compared ([`same_output`]).

use crate::*;
use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Mutex;

/// Escapes a value for QEMU's `key=value,...` option syntax (a comma is
/// written twice).
pub fn qemu_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// A qemu-storage-daemon command line, built option by option, then
/// started with [`Qsd::start`] (stopped by PID when the [`Server`] is
/// dropped).
///
/// ```no_run
/// # use nbd_tests::{Scratch, qemu::Qsd};
/// # let scratch = Scratch::new();
/// # let image = scratch.file("disk.qcow2");
/// let server = Qsd::new()
///     .image("n0", &image, "qcow2", false)
///     .export("id=e0,node-name=n0,name=disk,writable=on")
///     .server_option("max-connections=4")
///     .start(&scratch);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Qsd {
    args: Vec<String>,
    exports: Vec<String>,
    server: Vec<String>,
    tcp: bool,
    qmp: bool,
    trace: bool,
}

impl Qsd {
    /// An empty configuration: Unix socket, no block nodes, no exports.
    pub fn new() -> Qsd {
        Qsd::default()
    }

    /// Adds the block node `node` for `image` in `format` (`raw` or
    /// `qcow2`), on top of a `file` node `NODE-file`; `read_only` opens
    /// both read-only (an image opened read-write is left with its
    /// persistent bitmaps marked in use if the daemon dies).
    pub fn image(mut self, node: &str, image: &Path, format: &str, read_only: bool) -> Qsd {
        let ro = if read_only { "on" } else { "off" };
        self.args.push("--blockdev".into());
        self.args.push(format!(
            "driver=file,node-name={node}-file,filename={},read-only={ro}",
            qemu_opt(&image.display().to_string())
        ));
        self.args.push("--blockdev".into());
        self.args.push(format!(
            "driver={format},node-name={node},file={node}-file,read-only={ro}"
        ));
        self
    }

    /// Adds `--object SPEC` (e.g. `tls-creds-psk,id=tls0,...`).
    pub fn object(mut self, spec: &str) -> Qsd {
        self.args.push("--object".into());
        self.args.push(spec.to_string());
        self
    }

    /// Adds `--export type=nbd,SPEC`; the `name=` of the first export is
    /// the server's default export ([`Server::uri`]).
    pub fn export(mut self, spec: &str) -> Qsd {
        self.exports.push(spec.to_string());
        self
    }

    /// Adds an option of `--nbd-server` (`max-connections=N`,
    /// `tls-creds=ID`).
    pub fn server_option(mut self, option: &str) -> Qsd {
        self.server.push(option.to_string());
        self
    }

    /// Listens on a free port of 127.0.0.1 instead of a Unix socket.
    pub fn tcp(mut self) -> Qsd {
        self.tcp = true;
        self
    }

    /// Adds a QMP monitor on a Unix socket ([`Server::qmp`]).
    pub fn qmp(mut self) -> Qsd {
        self.qmp = true;
        self
    }

    /// Traces every NBD request the server receives ([`Server::requests`]).
    pub fn trace_requests(mut self) -> Qsd {
        self.trace = true;
        self
    }

    /// Starts the daemon in the foreground and waits until it listens.
    pub fn start(self, scratch: &Scratch) -> Server {
        let prog = require("qemu-storage-daemon", "qemu-utils");
        let (socket, log) = server_paths(scratch, "qsd");
        let mut cmd = Command::new(prog);
        let qmp = self.qmp.then(|| socket.with_extension("qmp"));
        let trace = self.trace.then(|| socket.with_extension("trace"));
        if let Some(qmp) = &qmp {
            cmd.arg("--chardev").arg(format!(
                "socket,id=qmp0,path={},server=on,wait=off",
                qemu_opt(&qmp.display().to_string())
            ));
            cmd.args(["--monitor", "chardev=qmp0"]);
        }
        if let Some(trace) = &trace {
            cmd.arg("--trace").arg(format!(
                "nbd_receive_request*,file={}",
                qemu_opt(&trace.display().to_string())
            ));
        }
        cmd.args(&self.args);
        let port = self.tcp.then(free_tcp_port);
        let mut server_arg = match port {
            Some(port) => format!("addr.type=inet,addr.host=127.0.0.1,addr.port={port}"),
            None => format!(
                "addr.type=unix,addr.path={}",
                qemu_opt(&socket.display().to_string())
            ),
        };
        for o in &self.server {
            server_arg.push(',');
            server_arg.push_str(o);
        }
        cmd.arg("--nbd-server").arg(server_arg);
        for e in &self.exports {
            cmd.arg("--export").arg(format!("type=nbd,{e}"));
        }
        let export = self
            .exports
            .first()
            .and_then(|e| {
                e.split(',')
                    .find_map(|kv| kv.strip_prefix("name="))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let mut server = Server::spawn("qemu-storage-daemon", cmd, socket, log, &export, port);
        server.qmp = qmp;
        server.trace = trace;
        server
    }
}

/// `qemu-nbd` on a Unix socket in `scratch` with exactly the options
/// `args` (the image last), serving `export` by default.  Unlike
/// [`Server::qemu_nbd`] nothing is added but `-k SOCKET`: no `--persistent`,
/// no `--shared`.
pub fn qemu_nbd_args(scratch: &Scratch, export: &str, args: &[&str]) -> Server {
    let prog = require("qemu-nbd", "qemu-utils");
    let (socket, log) = server_paths(scratch, "qemu-nbd");
    let mut cmd = Command::new(prog);
    cmd.arg("-k").arg(&socket).args(args);
    Server::spawn("qemu-nbd", cmd, socket, log, export, None)
}

/// [`qemu_nbd_args`] listening on a free port of 127.0.0.1.
pub fn qemu_nbd_tcp(scratch: &Scratch, export: &str, args: &[&str]) -> Server {
    let prog = require("qemu-nbd", "qemu-utils");
    let (socket, log) = server_paths(scratch, "qemu-nbd");
    let port = free_tcp_port();
    let mut cmd = Command::new(prog);
    cmd.args(["-b", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(args);
    Server::spawn("qemu-nbd", cmd, socket, log, export, Some(port))
}

/// One NBD request as the server's trace recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The command type (0 read, 1 write, 2 disconnect, 3 flush, 4 trim,
    /// 5 cache, 6 write zeroes, 7 block status).
    pub kind: u16,
    /// The offset.
    pub from: u64,
    /// The length.
    pub len: u64,
}

/// NBD_CMD_READ.
pub const CMD_READ: u16 = 0;

impl Server {
    /// Sends one QMP command (`execute` with `arguments`) to
    /// qemu-storage-daemon's monitor and returns its `return` value; fails
    /// the test on an `error` answer.
    pub fn qmp(&self, execute: &str, arguments: serde_json::Value) -> serde_json::Value {
        let path = self.qmp.as_ref().expect("this server has no QMP monitor");
        let stream = UnixStream::connect(path).expect("connect to QMP");
        stream
            .set_read_timeout(Some(DEFAULT_TIMEOUT))
            .expect("timeout");
        let mut writer = stream.try_clone().expect("dup");
        let mut reader = std::io::BufReader::new(stream);
        let next = |reader: &mut std::io::BufReader<UnixStream>| -> serde_json::Value {
            loop {
                let mut line = String::new();
                let n = reader.read_line(&mut line).expect("read QMP");
                assert!(n > 0, "QMP closed");
                let v: serde_json::Value = serde_json::from_str(&line).expect("QMP JSON");
                if v.get("event").is_none() {
                    return v;
                }
            }
        };
        let greeting = next(&mut reader);
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        for (cmd, args) in [
            ("qmp_capabilities", serde_json::json!({})),
            (execute, arguments),
        ] {
            let msg = serde_json::json!({ "execute": cmd, "arguments": args });
            println!("QMP -> {msg}");
            writeln!(writer, "{msg}").expect("write QMP");
            let answer = next(&mut reader);
            println!("QMP <- {answer}");
            assert!(answer.get("error").is_none(), "QMP {cmd}: {answer}");
            if cmd == execute {
                return answer["return"].clone();
            }
        }
        unreachable!()
    }

    /// The NBD requests the server received so far (see
    /// [`Qsd::trace_requests`]; for qemu-nbd pass
    /// `-T nbd_receive_request*,file=PATH` and use [`requests_in`]).
    pub fn requests(&self) -> Vec<Request> {
        let path = self.trace.as_ref().expect("this server is not traced");
        requests_in(&fs::read_to_string(path).unwrap_or_default())
    }
}

/// Parses the `nbd_receive_request` events of a QEMU trace log:
/// `... Got request: { magic = 0x25609513, .flags = 0x0, .type = 0x0,
/// from = 8192, len = 4096 }`.
pub fn requests_in(trace: &str) -> Vec<Request> {
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        let v = rest.split([',', ' ', '}']).next()?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    };
    trace
        .lines()
        .filter(|l| l.contains("Got request"))
        .map(|l| Request {
            kind: field(l, ".type = ").unwrap_or_else(|| panic!("no type: {l}")) as u16,
            from: field(l, "from = ").unwrap_or_else(|| panic!("no offset: {l}")),
            len: field(l, "len = ").unwrap_or_else(|| panic!("no length: {l}")),
        })
        .collect()
}

/// Compiles the C program `src` (`-std=c11 -Wall -Wextra -Werror`) against
/// `lib`'s header and library: Debian's (`/usr/include`,
/// `/usr/lib/x86_64-linux-gnu`, from libnbd-dev) or the library under test
/// (with `NBD_TEST_INCLUDE` or `include/`).  Built once per test binary.
pub fn build_c(src: &Path, lib: Lib) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<(PathBuf, bool), PathBuf>>> = OnceLock::new();
    let key = (src.to_path_buf(), lib == Lib::Debian);
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    require("cc", "gcc");
    let (include, libdir, sub) = match lib {
        Lib::Debian => {
            let include = PathBuf::from("/usr/include");
            assert!(
                include.join("libnbd.h").exists(),
                "Debian's libnbd.h is missing: apt-get install libnbd-dev"
            );
            (
                include,
                PathBuf::from("/usr/lib/x86_64-linux-gnu"),
                "debian",
            )
        }
        Lib::UnderTest => {
            let libdir = libnbd_dir();
            let include = match std::env::var_os("NBD_TEST_INCLUDE") {
                Some(d) if !d.is_empty() => PathBuf::from(d),
                _ if is_system_dir(&libdir) => PathBuf::from("/usr/include"),
                _ => repo_root().join("include"),
            };
            (include, libdir, "under-test")
        }
    };
    let out_dir = repo_root()
        .join("target")
        .join("c-tests")
        .join(std::process::id().to_string())
        .join(sub);
    fs::create_dir_all(&out_dir).expect("create target/c-tests");
    let exe = out_dir.join(src.file_stem().expect("a file name"));
    run_ok(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-g", "-I"])
            .arg(&include)
            .arg(src)
            .arg("-o")
            .arg(&exe)
            .arg("-L")
            .arg(&libdir)
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .args(["-lnbd", "-lpthread"]),
    );
    assert_binary_loads(&exe, lib);
    built.insert(key, exe.clone());
    exe
}

/// `tests/c/qemu-client.c` built for `lib`.
pub fn qemu_client(lib: Lib) -> PathBuf {
    build_c(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("c/qemu-client.c"),
        lib,
    )
}

/// Runs the C program `src` (see [`build_c`]) with `args` built against
/// Debian's libnbd and against the library under test; asserts equal exit
/// codes and equal standard output, and returns the run on the library
/// under test.
pub fn same_output(src: &Path, args: &[&str]) -> Output {
    let debian = run(tool(build_c(src, Lib::Debian), Lib::Debian).args(args));
    let ours = run(tool(build_c(src, Lib::UnderTest), Lib::UnderTest).args(args));
    assert_eq!(
        debian.stdout,
        ours.stdout,
        "{} {args:?}: output differs (left: Debian's libnbd, right: library under test)",
        src.display()
    );
    assert_eq!(
        debian.code(),
        ours.code(),
        "{} {args:?}: exit code differs; Debian stderr: {}\nours stderr: {}",
        src.display(),
        debian.stderr,
        ours.stderr
    );
    ours
}

/// Runs qemu-client with `args` on both libraries, where the connection
/// must fail: both must fail in the same call (the `FAILED CALL errno=E`
/// line) with exit status 1; the errno is not compared, and is returned
/// as `(Debian's, ours)`.  Only for the failures where the errno
/// legitimately differs: libnbd (1.14 and 1.24 alike) reports errno 0 for
/// a failed TLS handshake, as its TLS library's error carries no errno,
/// while this library names the cause (EIO when the peer closed during the
/// handshake, EACCES or the like for a certificate it rejected).
pub fn client_same_failure(args: &[&str]) -> (String, String) {
    let exe = |lib| qemu_client(lib);
    let debian = run(tool(exe(Lib::Debian), Lib::Debian).args(args));
    let ours = run(tool(exe(Lib::UnderTest), Lib::UnderTest).args(args));
    let failed = |out: &Output| -> (String, String) {
        assert_eq!(
            out.code(),
            1,
            "qemu-client {args:?} should fail:\n{}",
            out.stdout
        );
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("FAILED "))
            .unwrap_or_else(|| panic!("no FAILED line:\n{}", out.stdout));
        let (call, errno) = line.split_once(" errno=").expect("errno");
        (call.to_string(), errno.to_string())
    };
    let (debian_call, debian_errno) = failed(&debian);
    let (our_call, our_errno) = failed(&ours);
    assert_eq!(
        debian_call, our_call,
        "qemu-client {args:?}: failed in another call"
    );
    println!("errno: Debian's libnbd {debian_errno}, library under test {our_errno}");
    (debian_errno, our_errno)
}

/// [`same_output`] for `tests/c/qemu-client.c`, which must succeed.
pub fn client_same(args: &[&str]) -> Output {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/qemu-client.c");
    let out = same_output(&src, args);
    assert_eq!(
        out.code(),
        0,
        "qemu-client {args:?} failed:\n{}",
        out.stderr
    );
    out
}

/// Runs `program` (nbdinfo, nbdcopy ...) with `args` on Debian's libnbd
/// and on the library under test; asserts equal exit codes and equal
/// standard output apart from the lines naming the library
/// ([`without_library_lines`]: `nbdinfo --version` prints one, which
/// legitimately differs); returns Debian's run.
pub fn tool_same(program: &Path, args: &[&str]) -> Output {
    let debian = run(tool(program, Lib::Debian).args(args));
    let ours = run(tool(program, Lib::UnderTest).args(args));
    assert_eq!(
        debian.code(),
        ours.code(),
        "{} {args:?}: exit code {} with Debian's libnbd, {} with the library under test\n\
         Debian stderr: {}\nours stderr: {}",
        program.display(),
        debian.code(),
        ours.code(),
        debian.stderr,
        ours.stderr
    );
    assert_eq!(
        without_library_lines(&debian.stdout),
        without_library_lines(&ours.stdout),
        "{} {args:?}: output differs (left: Debian's libnbd, right: library under test)",
        program.display()
    );
    assert_eq!(
        debian.stderr.is_empty(),
        ours.stderr.is_empty(),
        "{} {args:?}: only one of the runs wrote errors",
        program.display()
    );
    debian
}

/// The merged extents of context `ctx` in qemu-client's `info` output, as
/// `(offset, length, flags)`.
pub fn client_map(out: &Output, ctx: &str) -> Vec<(u64, u64, u32)> {
    let header = format!("map {ctx}:");
    out.stdout
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let w: Vec<u64> = l
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            (w[0], w[1], w[2] as u32)
        })
        .collect()
}

/// The value of the `key: value` line in qemu-client's output.
pub fn client_value<'a>(out: &'a Output, key: &str) -> &'a str {
    let prefix = format!("{key}: ");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{}", out.stdout))
}

// ---------------------------------------------------------------------------
// A disk image with a backing file and a dirty bitmap

/// One MiB.
pub const MIB: u64 = 1024 * 1024;
/// 64 KiB, qcow2's default cluster size and the bitmap's granularity.
pub const K64: u64 = 64 * 1024;

/// An 8 MiB qcow2 `disk.qcow2` over a backing file `base.qcow2` that holds
/// 0x22 in [0, 4M).  The bitmap `b0` was added to the overlay before these
/// writes to it: 0x11 at [1M, +64K), zeroes at [2M, +64K), a discard at
/// [3M, +64K), 0x33 at [6M, +128K); then the bitmap was disabled (a frozen
/// point-in-time bitmap, which qemu requires for a read-only export).
pub fn backed_disk(scratch: &Scratch) -> PathBuf {
    let base = scratch.file("base.qcow2");
    qemu_img_create(&base, "qcow2", 8 * MIB);
    qemu_io(&base, "qcow2", &["write -P 0x22 0 4M"]);
    let disk = scratch.file("disk.qcow2");
    let qemu_img = require("qemu-img", "qemu-utils");
    run_ok(
        Command::new(&qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(&disk),
    );
    run_ok(
        Command::new(&qemu_img)
            .args(["bitmap", "--add"])
            .arg(&disk)
            .arg("b0"),
    );
    qemu_io(
        &disk,
        "qcow2",
        &[
            "write -P 0x11 1M 64k",
            "write -z 2M 64k",
            "discard 3M 64k",
            "write -P 0x33 6M 128k",
        ],
    );
    run_ok(
        Command::new(&qemu_img)
            .args(["bitmap", "--disable"])
            .arg(&disk)
            .arg("b0"),
    );
    disk
}

/// What [`backed_disk`] reads as.
pub fn backed_disk_content() -> Vec<u8> {
    let mut v = vec![0u8; 8 * MIB as usize];
    let m = MIB as usize;
    let k = K64 as usize;
    v[..4 * m].fill(0x22);
    v[m..m + k].fill(0x11);
    v[2 * m..2 * m + k].fill(0);
    v[3 * m..3 * m + k].fill(0);
    v[6 * m..6 * m + 2 * k].fill(0x33);
    v
}

/// The dirty ranges of `b0` in [`backed_disk`].
pub fn dirty_map() -> Vec<(u64, u64, u32)> {
    vec![
        (0, MIB, 0),
        (MIB, K64, 1),
        (MIB + K64, MIB - K64, 0),
        (2 * MIB, K64, 1),
        (2 * MIB + K64, MIB - K64, 0),
        (3 * MIB, K64, 1),
        (3 * MIB + K64, 3 * MIB - K64, 0),
        (6 * MIB, 2 * K64, 1),
        (6 * MIB + 2 * K64, 2 * MIB - 2 * K64, 0),
    ]
}

/// The allocation depth of [`backed_disk`]: 2 = in the backing file,
/// 1 = in the overlay, 0 = nowhere.
pub fn depth_map() -> Vec<(u64, u64, u32)> {
    vec![
        (0, MIB, 2),
        (MIB, K64, 1),
        (MIB + K64, MIB - K64, 2),
        (2 * MIB, K64, 1),
        (2 * MIB + K64, MIB - K64, 2),
        (3 * MIB, K64, 1),
        (3 * MIB + K64, MIB - K64, 2),
        (4 * MIB, 2 * MIB, 0),
        (6 * MIB, 2 * K64, 1),
        (6 * MIB + 2 * K64, 2 * MIB - 2 * K64, 0),
    ]
}
