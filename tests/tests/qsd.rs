//! qemu-storage-daemon's NBD exports (`--nbd-server`, `--export type=nbd`),
//! the way libvirt and modern QEMU export disks, on Unix sockets and TCP:
//! several exports on one server (read-only and writable, with
//! descriptions), `bitmaps=[...]` and `allocation-depth=on`, TLS with
//! `tls-creds-x509` and `tls-creds-psk`, `max-connections` and multi-conn.
//!
//! Everything is looked at twice: through the C API (`tests/c/qemu-client.c`
//! built against Debian's libnbd and against the library under test) and
//! through Debian's nbdinfo and nbdcopy loaded on each library; the two
//! outputs must be equal (only `nbdinfo --version`'s library line is left
//! out, see [`without_library_lines`]), and they are also checked against
//! what the images are known to hold.

use nbd_tests::pki::{Pki, PSK_USER};
use nbd_tests::qemu::*;
use nbd_tests::*;
use std::path::{Path, PathBuf};

fn nbdinfo() -> PathBuf {
    require("nbdinfo", "libnbd-bin")
}

fn nbdcopy() -> PathBuf {
    require("nbdcopy", "libnbd-bin")
}

/// Debian's programs resolve `libnbd.so.0` to the library under test
/// through `LD_LIBRARY_PATH` (asked of the dynamic linker; the C programs
/// are checked when built, see [`build_c`]).
fn setup() {
    for program in [nbdinfo(), nbdcopy()] {
        assert_binary_loads(&program, Lib::UnderTest);
        assert_binary_loads(&program, Lib::Debian);
    }
}

/// A daemon serving [`backed_disk`] read-only as "disk" (bitmap b0,
/// allocation depth) and a 4 MiB raw file writable as "scratch".
fn two_exports(scratch: &Scratch, qsd: Qsd) -> Server {
    let disk = backed_disk(scratch);
    let raw = scratch.file("scratch.raw");
    qemu_img_create(&raw, "raw", 4 * MIB);
    qsd.image("n0", &disk, "qcow2", true)
        .image("n1", &raw, "raw", false)
        .export("id=e0,node-name=n0,name=disk,description=backup source,bitmaps.0=b0,allocation-depth=on")
        .export("id=e1,node-name=n1,name=scratch,description=scratch disk,writable=on")
        .start(scratch)
}

/// The checks every transport gets, given the URIs of [`two_exports`]'
/// "disk" and "scratch": listing, info with the three contexts, nbdinfo in
/// all its modes, and data both ways with nbdcopy.
fn check_two_exports(scratch: &Scratch, disk: &str, rw: &str, tls: bool) {
    let (disk, rw) = (disk.to_string(), rw.to_string());

    // Option mode: both exports with their descriptions and contexts.
    let list = client_same(&["list", &disk]);
    let text = &list.stdout;
    for line in [
        "export \"disk\" description \"backup source\"",
        "export \"scratch\" description \"scratch disk\"",
        "listed: 2",
        "info \"disk\": size 8388608 read_only 1 multi_conn 1",
        "info \"scratch\": size 4194304 read_only 0 multi_conn 1",
        "  context qemu:dirty-bitmap:b0",
        "  context qemu:allocation-depth",
        "  3 contexts",
        "  1 contexts",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    }

    // The contexts, walked over the whole export.
    let info = client_same(&[
        "info",
        &disk,
        "base:allocation",
        "qemu:allocation-depth",
        "qemu:dirty-bitmap:b0",
        "qemu:dirty-bitmap:missing",
    ]);
    assert_eq!(client_value(&info, "tls"), if tls { "1" } else { "0" });
    assert_eq!(client_value(&info, "description"), "\"backup source\"");
    assert_eq!(client_value(&info, "is_read_only"), "1");
    assert_eq!(
        client_value(&info, "context qemu:dirty-bitmap:missing"),
        "0"
    );
    assert_eq!(client_map(&info, "qemu:dirty-bitmap:b0"), dirty_map());
    assert_eq!(client_map(&info, "qemu:allocation-depth"), depth_map());
    let alloc = client_map(&info, "base:allocation");
    assert!(alloc.contains(&(2 * MIB, K64, 3)), "{alloc:?}");
    assert!(alloc.contains(&(4 * MIB, 2 * MIB, 3)), "{alloc:?}");
    let info_rw = client_same(&["info", &rw, "base:allocation"]);
    assert_eq!(client_value(&info_rw, "is_read_only"), "0");
    assert_eq!(client_value(&info_rw, "can_trim"), "1");

    // Debian's nbdinfo on both libraries.
    let nbdinfo = nbdinfo();
    for args in [
        vec![disk.as_str()],
        vec!["--json", &disk],
        vec!["--list", &disk],
        vec!["--list", "--json", &disk],
        vec!["--size", &disk],
        vec!["--map", &disk],
        vec!["--map", "--totals", &disk],
        vec!["--map=qemu:dirty-bitmap:b0", &disk],
        vec!["--map=qemu:allocation-depth", "--json", &disk],
        vec!["--map", &rw],
        vec![&rw],
    ] {
        tool_same(&nbdinfo, &args);
    }
    for (what, yes) in [("write", false), ("trim", false), ("multi-conn", true)] {
        let out = tool_same(&nbdinfo, &["--can", what, &disk]);
        assert_eq!(out.code(), if yes { 0 } else { 2 }, "--can {what}");
    }
    let out = tool_same(&nbdinfo, &["--can", "write", &rw]);
    assert_eq!(out.code(), 0);
    let map = tool_same(&nbdinfo, &["--map=qemu:dirty-bitmap:b0", &disk]);
    assert_eq!(
        map.stdout.matches("dirty").count(),
        4,
        "four dirty extents:\n{}",
        map.stdout
    );

    // Data: the disk's content, and a copy into the writable export.
    let nbdcopy = nbdcopy();
    let out = scratch.file("disk-copy.raw");
    run_ok(tool(&nbdcopy, Lib::UnderTest).arg(&disk).arg(&out));
    assert_eq!(sha256_file(&out), sha256(&backed_disk_content()));
    let src = scratch.file("random.raw");
    let data = pseudo_random(3, 4 * MIB as usize);
    std::fs::write(&src, &data).unwrap();
    run_ok(
        tool(&nbdcopy, Lib::UnderTest)
            .args(["--connections=2", "--flush"])
            .arg(&src)
            .arg(&rw),
    );
    for lib in [Lib::Debian, Lib::UnderTest] {
        let back = scratch.file("back.raw");
        run_ok(tool(&nbdcopy, lib).arg(&rw).arg(&back));
        assert_eq!(sha256_file(&back), sha256(&data), "{lib:?}");
        std::fs::remove_file(&back).unwrap();
    }
    // The read-only export refuses the copy with both libraries.
    let refused = tool_same(&nbdcopy, &[src.to_str().unwrap(), &disk]);
    assert_ne!(refused.code(), 0);
}

#[test]
fn exports_on_a_unix_socket() {
    setup();
    let scratch = Scratch::new();
    let server = two_exports(&scratch, Qsd::new());
    check_two_exports(
        &scratch,
        &server.uri_for("disk"),
        &server.uri_for("scratch"),
        false,
    );
    // An export the server does not have: the same failure with both.
    let out = same_output(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("c/qemu-client.c"),
        &["info", &server.uri_for("nope")],
    );
    assert_eq!(out.code(), 1);
    assert!(
        out.stdout.starts_with("FAILED nbd_connect_uri"),
        "{}",
        out.stdout
    );
}

#[test]
fn exports_on_tcp() {
    setup();
    let scratch = Scratch::new();
    let server = two_exports(&scratch, Qsd::new().tcp());
    assert!(server.uri().starts_with("nbd://127.0.0.1:"));
    check_two_exports(
        &scratch,
        &server.uri_for("disk"),
        &server.uri_for("scratch"),
        false,
    );
}

/// The client side of the TLS tests: `nbdcopy` and `nbdinfo` are given
/// the credentials in the URI (`tls-certificates`, `tls-psk-file`), which
/// needs `nbd_set_uri_allow_local_file` (qemu-client sets it; Debian's
/// programs do for the URIs they are given).
fn client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c/qemu-client.c")
}

#[test]
fn tls_with_x509_certificates_on_tcp() {
    setup();
    let scratch = Scratch::new();
    let pki = Pki::generate(&scratch.file("pki"));
    let object = format!(
        "tls-creds-x509,id=tls0,endpoint=server,verify-peer=on,dir={}",
        qemu_opt(&pki.dir("server").display().to_string())
    );
    let server = two_exports(
        &scratch,
        Qsd::new()
            .tcp()
            .object(&object)
            .server_option("tls-creds=tls0"),
    );
    let port = server.tcp_port().unwrap();
    // The certificate names localhost, so the URIs do too.
    let uri = |export: &str, dir: &str| {
        format!(
            "nbds://localhost:{port}/{export}?tls-certificates={}",
            pki.dir(dir).display()
        )
    };
    check_two_exports(
        &scratch,
        &uri("disk", "client"),
        &uri("scratch", "client"),
        true,
    );
    // The server requires TLS and a client certificate: in clear, and
    // with the CA but no client certificate, both libraries fail alike.
    let plain = same_output(&client(), &["info", &server.uri_for("disk")]);
    assert_eq!(plain.code(), 1, "{}", plain.stdout);
    // (The TLS handshake failures' errno differs: see client_same_failure.)
    client_same_failure(&["info", &uri("disk", "client-ca-only")]);
}

#[test]
fn tls_with_a_pre_shared_key_on_a_unix_socket() {
    setup();
    let scratch = Scratch::new();
    let pki = Pki::generate(&scratch.file("pki"));
    let object = format!(
        "tls-creds-psk,id=tls0,endpoint=server,dir={}",
        qemu_opt(&pki.dir("psk").display().to_string())
    );
    let server = two_exports(
        &scratch,
        Qsd::new().object(&object).server_option("tls-creds=tls0"),
    );
    let uri = |export: &str, keys: &Path| {
        format!(
            "nbds+unix://{PSK_USER}@/{export}?socket={}&tls-psk-file={}",
            server.socket().display(),
            keys.display()
        )
    };
    let keys = pki.psk_file();
    check_two_exports(&scratch, &uri("disk", &keys), &uri("scratch", &keys), true);
    client_same_failure(&["info", &uri("disk", &pki.wrong_psk_file())]);
    let plain = same_output(&client(), &["info", &server.uri_for("disk")]);
    assert_eq!(plain.code(), 1, "{}", plain.stdout);
}

/// `max-connections=2`: two clients are served, a third waits until one
/// leaves; the writable export advertises multi-conn and two handles see
/// each other's flushed writes.  With `max-connections=1` there is no
/// multi-conn.
#[test]
fn max_connections_and_multi_conn() {
    setup();
    let scratch = Scratch::new();
    let raw = scratch.file("shared.raw");
    qemu_img_create(&raw, "raw", 4 * MIB);
    let server = Qsd::new()
        .image("n0", &raw, "raw", false)
        .export("id=e0,node-name=n0,name=shared,writable=on")
        .server_option("max-connections=2")
        .start(&scratch);
    let uri = server.uri();
    let out = client_same(&["maxconn", &uri, "2"]);
    assert!(
        out.stdout
            .contains("extra connection while 2 open: waiting"),
        "{}",
        out.stdout
    );
    let out = client_same(&["multiconn", &uri, "2"]);
    assert_eq!(out.stdout.matches("can_multi_conn 1").count(), 2);
    let nbdinfo = nbdinfo();
    assert_eq!(
        tool_same(&nbdinfo, &["--can", "multi-conn", &uri]).code(),
        0
    );
    drop(server);
    // The data of the multiconn run's second round reached the file.
    let data = std::fs::read(&raw).unwrap();
    assert!(data[..K64 as usize].iter().all(|&b| b == 0x81));
    assert!(data[K64 as usize..2 * K64 as usize]
        .iter()
        .all(|&b| b == 0x80));

    let single = Qsd::new()
        .image("n0", &raw, "raw", false)
        .export("id=e0,node-name=n0,name=shared,writable=on")
        .server_option("max-connections=1")
        .start(&scratch);
    let uri = single.uri();
    assert_eq!(
        tool_same(&nbdinfo, &["--can", "multi-conn", &uri]).code(),
        2
    );
    let info = client_same(&["info", &uri]);
    assert_eq!(client_value(&info, "can_multi_conn"), "0");
    let out = client_same(&["maxconn", &uri, "1"]);
    assert!(out.stdout.contains("maxconn: OK"), "{}", out.stdout);
}
