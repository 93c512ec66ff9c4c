//! qemu-nbd's modes as a matrix: `-x` name, `-r`, `-e N` with multi-conn,
//! `-t` persistence (and its absence), `-D` description, `-B` bitmap, `-A`
//! allocation depth, `--tls-creds` (x509 and psk objects), socket
//! activation (`nbd_connect_systemd_socket_activation`, qemu-nbd reads
//! `LISTEN_FDS`), raw images and qcow2 over a backing file.
//!
//! Each mode is driven through the C API (`tests/c/qemu-client.c`, built
//! against Debian's libnbd and against the library under test, outputs
//! compared) and Debian's nbdinfo and nbdcopy on both libraries (outputs
//! compared), and checked against what the image is known to hold.

use nbd_tests::pki::{Pki, PSK_USER};
use nbd_tests::qemu::*;
use nbd_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn nbdinfo() -> PathBuf {
    require("nbdinfo", "libnbd-bin")
}

fn nbdcopy() -> PathBuf {
    require("nbdcopy", "libnbd-bin")
}

/// Debian's programs resolve `libnbd.so.0` to the library under test
/// through `LD_LIBRARY_PATH`, and to Debian's without it.
fn setup() {
    for program in [nbdinfo(), nbdcopy()] {
        assert_binary_loads(&program, Lib::UnderTest);
        assert_binary_loads(&program, Lib::Debian);
    }
}

/// A 4 MiB raw image: 0x77 in its first MiB, the rest a hole.
fn raw_disk(scratch: &Scratch, name: &str) -> PathBuf {
    let image = scratch.file(name);
    qemu_img_create(&image, "raw", 4 * MIB);
    qemu_io(&image, "raw", &["write -P 0x77 0 1M"]);
    image
}

fn raw_disk_content() -> Vec<u8> {
    let mut v = vec![0u8; 4 * MIB as usize];
    v[..MIB as usize].fill(0x77);
    v
}

/// What every mode gets: qemu-client's info (with `contexts`) and listing,
/// nbdinfo's summary, JSON, listing and maps on both libraries; and the
/// content read with nbdcopy on both libraries, when `content` is given.
/// Returns qemu-client's info output.
fn common_checks(
    scratch: &Scratch,
    uri: &str,
    contexts: &[&str],
    content: Option<&[u8]>,
) -> Output {
    let mut args = vec!["info", uri, "base:allocation"];
    args.extend_from_slice(contexts);
    let info = client_same(&args);
    client_same(&["list", uri]);
    let nbdinfo = nbdinfo();
    tool_same(&nbdinfo, &[uri]);
    tool_same(&nbdinfo, &["--json", uri]);
    tool_same(&nbdinfo, &["--list", uri]);
    tool_same(&nbdinfo, &["--map", uri]);
    for ctx in contexts {
        tool_same(&nbdinfo, &[&format!("--map={ctx}"), uri]);
    }
    if let Some(content) = content {
        let want = sha256(content);
        for lib in [Lib::Debian, Lib::UnderTest] {
            let out = scratch.file("copy.raw");
            run_ok(tool(nbdcopy(), lib).arg(uri).arg(&out));
            assert_eq!(sha256_file(&out), want, "content read with {lib:?}");
            std::fs::remove_file(&out).unwrap();
        }
    }
    info
}

#[test]
fn export_name_x() {
    setup();
    let scratch = Scratch::new();
    let image = raw_disk(&scratch, "disk.raw");
    let server = qemu_nbd_args(
        &scratch,
        "disk",
        &["-t", "-x", "disk", "-f", "raw", image.to_str().unwrap()],
    );
    let info = common_checks(&scratch, &server.uri(), &[], Some(&raw_disk_content()));
    assert_eq!(client_value(&info, "export"), "\"disk\"");
    assert_eq!(client_value(&info, "is_read_only"), "0");
    let list = client_same(&["list", &server.uri()]);
    assert!(list.stdout.contains("export \"disk\" description \"\""));
    assert!(list.stdout.contains("listed: 1"));
    // Another name is refused the same way by both libraries.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/qemu-client.c");
    let other = same_output(&src, &["info", &server.uri_for("other")]);
    assert_eq!(other.code(), 1);
    assert!(other.stdout.starts_with("FAILED nbd_connect_uri"));
}

#[test]
fn read_only_r() {
    setup();
    let scratch = Scratch::new();
    let image = raw_disk(&scratch, "ro.raw");
    let server = qemu_nbd_args(
        &scratch,
        "",
        &["-t", "-r", "-f", "raw", image.to_str().unwrap()],
    );
    let uri = server.uri();
    let info = common_checks(&scratch, &uri, &[], Some(&raw_disk_content()));
    assert_eq!(client_value(&info, "is_read_only"), "1");
    assert_eq!(client_value(&info, "can_trim"), "0");
    assert_eq!(client_value(&info, "can_zero"), "0");
    assert_eq!(
        tool_same(&nbdinfo(), &["--is", "read-only", &uri]).code(),
        0
    );
    assert_eq!(tool_same(&nbdinfo(), &["--can", "write", &uri]).code(), 2);
    // nbdcopy into it fails with both libraries, and nothing changed.
    let src = scratch.file("src.raw");
    std::fs::write(&src, vec![0x99u8; 4 * MIB as usize]).unwrap();
    let refused = tool_same(&nbdcopy(), &[src.to_str().unwrap(), &uri]);
    assert_ne!(refused.code(), 0);
    assert_eq!(sha256_file(&image), sha256(&raw_disk_content()));
}

#[test]
fn shared_e_and_multi_conn() {
    setup();
    let scratch = Scratch::new();
    let image = raw_disk(&scratch, "shared.raw");
    let server = qemu_nbd_args(
        &scratch,
        "",
        &["-t", "-e", "3", "-f", "raw", image.to_str().unwrap()],
    );
    let uri = server.uri();
    let info = common_checks(&scratch, &uri, &[], None);
    assert_eq!(client_value(&info, "can_multi_conn"), "1");
    let out = client_same(&["multiconn", &uri, "3"]);
    assert_eq!(out.stdout.matches("can_multi_conn 1").count(), 3);
    let out = client_same(&["maxconn", &uri, "3"]);
    assert!(
        out.stdout
            .contains("extra connection while 3 open: waiting"),
        "{}",
        out.stdout
    );
    // Several connections of nbdcopy on our library write it all.
    let src = scratch.file("src.raw");
    let data = pseudo_random(11, 4 * MIB as usize);
    std::fs::write(&src, &data).unwrap();
    run_ok(
        tool(nbdcopy(), Lib::UnderTest)
            .args(["--connections=3", "--flush"])
            .arg(&src)
            .arg(&uri),
    );
    drop(server);
    assert_eq!(sha256_file(&image), sha256(&data));

    // -e 1: one client at a time, and no multi-conn.
    let single = qemu_nbd_args(
        &scratch,
        "",
        &["-t", "-e", "1", "-f", "raw", image.to_str().unwrap()],
    );
    let info = client_same(&["info", &single.uri()]);
    assert_eq!(client_value(&info, "can_multi_conn"), "0");
    assert_eq!(
        tool_same(&nbdinfo(), &["--can", "multi-conn", &single.uri()]).code(),
        2
    );
    client_same(&["maxconn", &single.uri(), "1"]);
}

#[test]
fn persistent_t_and_without() {
    setup();
    let scratch = Scratch::new();
    let image = raw_disk(&scratch, "persist.raw");
    let server = qemu_nbd_args(&scratch, "", &["-t", "-f", "raw", image.to_str().unwrap()]);
    let out = client_same(&["persist", &server.uri(), "4"]);
    assert!(out
        .stdout
        .contains("round 3: connected, saw the previous write"));
    drop(server);

    // Without -t qemu-nbd serves one client and exits.  One server per
    // library; both must see the same.
    let mut outputs = Vec::new();
    for lib in [Lib::Debian, Lib::UnderTest] {
        let mut server = qemu_nbd_args(&scratch, "", &["-f", "raw", image.to_str().unwrap()]);
        let out = run_ok(tool(qemu_client(lib), lib).args(["persist", &server.uri(), "1"]));
        let status = server
            .wait_for_exit(Duration::from_secs(60))
            .expect("qemu-nbd without -t still runs after its client left");
        assert!(status.success(), "qemu-nbd exited with {status}");
        outputs.push(out.stdout);
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn description_d() {
    setup();
    let scratch = Scratch::new();
    let image = raw_disk(&scratch, "d.raw");
    let server = qemu_nbd_args(
        &scratch,
        "vol",
        &[
            "-t",
            "-x",
            "vol",
            "-D",
            "a described volume",
            "-f",
            "raw",
            image.to_str().unwrap(),
        ],
    );
    let info = common_checks(&scratch, &server.uri(), &[], None);
    assert_eq!(client_value(&info, "description"), "\"a described volume\"");
    let list = client_same(&["list", &server.uri()]);
    assert!(list
        .stdout
        .contains("export \"vol\" description \"a described volume\""));
    let plain = tool_same(&nbdinfo(), &[&server.uri()]);
    assert!(plain.stdout.contains("description: a described volume"));
}

#[test]
fn bitmap_b_and_allocation_depth_a_on_qcow2_with_backing() {
    setup();
    let scratch = Scratch::new();
    let disk = backed_disk(&scratch);
    let server = qemu_nbd_args(
        &scratch,
        "",
        &[
            "-t",
            "-r",
            "-B",
            "b0",
            "-A",
            "-f",
            "qcow2",
            disk.to_str().unwrap(),
        ],
    );
    let info = common_checks(
        &scratch,
        &server.uri(),
        &["qemu:dirty-bitmap:b0", "qemu:allocation-depth"],
        Some(&backed_disk_content()),
    );
    assert_eq!(client_map(&info, "qemu:dirty-bitmap:b0"), dirty_map());
    assert_eq!(client_map(&info, "qemu:allocation-depth"), depth_map());
    // Depth 2: the data of the backing file shows through.
    assert!(depth_map().iter().any(|e| e.2 == 2));
    let list = client_same(&["list", &server.uri()]);
    assert!(list.stdout.contains("  context qemu:dirty-bitmap:b0"));
    assert!(list.stdout.contains("  context qemu:allocation-depth"));

    // Without -A and -B the contexts are not offered.
    let plain = qemu_nbd_args(
        &scratch,
        "",
        &["-t", "-r", "-f", "qcow2", disk.to_str().unwrap()],
    );
    let info = client_same(&[
        "info",
        &plain.uri(),
        "qemu:dirty-bitmap:b0",
        "qemu:allocation-depth",
    ]);
    assert_eq!(client_value(&info, "context qemu:dirty-bitmap:b0"), "0");
    assert_eq!(client_value(&info, "context qemu:allocation-depth"), "0");
}

#[test]
fn raw_and_qcow2_formats() {
    setup();
    let scratch = Scratch::new();
    let raw = raw_disk(&scratch, "r.raw");
    let q = qemu_nbd_args(&scratch, "", &["-t", "-f", "raw", raw.to_str().unwrap()]);
    let info = common_checks(&scratch, &q.uri(), &[], Some(&raw_disk_content()));
    assert_eq!(
        client_map(&info, "base:allocation"),
        vec![(0, MIB, 0), (MIB, 3 * MIB, 3)]
    );
    let disk = backed_disk(&scratch);
    let q2 = qemu_nbd_args(
        &scratch,
        "",
        &["-t", "-r", "-f", "qcow2", disk.to_str().unwrap()],
    );
    let info = common_checks(&scratch, &q2.uri(), &[], Some(&backed_disk_content()));
    assert_eq!(client_value(&info, "size"), (8 * MIB).to_string());
}

#[test]
fn tls_creds_x509_on_tcp() {
    setup();
    let scratch = Scratch::new();
    let pki = Pki::generate(&scratch.file("pki"));
    let image = raw_disk(&scratch, "tls.raw");
    let object = format!(
        "tls-creds-x509,id=tls0,endpoint=server,verify-peer=on,dir={}",
        qemu_opt(&pki.dir("server").display().to_string())
    );
    let server = qemu_nbd_tcp(
        &scratch,
        "",
        &[
            "-t",
            "--object",
            &object,
            "--tls-creds",
            "tls0",
            "-f",
            "raw",
            image.to_str().unwrap(),
        ],
    );
    let port = server.tcp_port().unwrap();
    let uri = |dir: &str| {
        format!(
            "nbds://localhost:{port}/?tls-certificates={}",
            pki.dir(dir).display()
        )
    };
    let info = common_checks(&scratch, &uri("client"), &[], Some(&raw_disk_content()));
    assert_eq!(client_value(&info, "tls"), "1");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/qemu-client.c");
    let plain = same_output(&src, &["info", &server.uri()]);
    assert_eq!(plain.code(), 1);
    client_same_failure(&["info", &uri("client-ca-only")]);
}

#[test]
fn tls_creds_psk_on_a_unix_socket() {
    setup();
    let scratch = Scratch::new();
    let pki = Pki::generate(&scratch.file("pki"));
    let image = raw_disk(&scratch, "psk.raw");
    let object = format!(
        "tls-creds-psk,id=tls0,endpoint=server,dir={}",
        qemu_opt(&pki.dir("psk").display().to_string())
    );
    let server = qemu_nbd_args(
        &scratch,
        "",
        &[
            "-t",
            "-e",
            "2",
            "--object",
            &object,
            "--tls-creds",
            "tls0",
            "-f",
            "raw",
            image.to_str().unwrap(),
        ],
    );
    let uri = |keys: &Path| {
        format!(
            "nbds+unix://{PSK_USER}@/?socket={}&tls-psk-file={}",
            server.socket().display(),
            keys.display()
        )
    };
    let good = uri(&pki.psk_file());
    let info = common_checks(&scratch, &good, &[], Some(&raw_disk_content()));
    assert_eq!(client_value(&info, "tls"), "1");
    client_same(&["multiconn", &good, "2"]);
    client_same_failure(&["info", &uri(&pki.wrong_psk_file())]);
}

/// No qemu-nbd serving `image` is left running.
fn assert_no_server_for(image: &Path) {
    let ps = run_ok(std::process::Command::new("ps").args(["-eo", "args"]));
    let img = image.display().to_string();
    assert!(
        !ps.stdout
            .lines()
            .any(|l| l.contains("qemu-nbd") && l.contains(&img)),
        "a qemu-nbd for {img} survived its handle:\n{}",
        ps.stdout
    );
}

#[test]
fn socket_activation() {
    setup();
    let scratch = Scratch::new();
    let raw = raw_disk(&scratch, "act.raw");
    let qemu_nbd = require("qemu-nbd", "qemu-utils");
    let q = qemu_nbd.to_str().unwrap();
    let out = client_same(&["activate", "", q, "-f", "raw", raw.to_str().unwrap()]);
    assert_eq!(client_value(&out, "size"), (4 * MIB).to_string());
    assert!(
        out.stdout.contains("wrote and read back: yes"),
        "{}",
        out.stdout
    );
    assert_no_server_for(&raw);

    // With a name, a description, read-only, over qcow2 with a backing file.
    let disk = backed_disk(&scratch);
    let args = [
        "activate",
        "vda",
        q,
        "-x",
        "vda",
        "-D",
        "activated",
        "-r",
        "-f",
        "qcow2",
        disk.to_str().unwrap(),
    ];
    let run_on = |lib| run_ok(tool(qemu_client(lib), lib).args(args));
    let debian = run_on(Lib::Debian);
    let out = run_on(Lib::UnderTest);
    assert_eq!(debian.stdout, out.stdout);
    assert_eq!(client_value(&out, "description"), "\"activated\"");
    assert_eq!(client_value(&out, "is_read_only"), "1");
    assert_eq!(client_value(&out, "context base:allocation"), "1");
    assert!(
        out.stdout.contains("write refused: errno="),
        "{}",
        out.stdout
    );
    assert_no_server_for(&disk);
}

/// libnbd (1.14 and 1.24 alike) refuses nbd_pwrite on a read-only export
/// before sending it, with EPERM; so does this library (it set EINVAL until
/// this test found it).
#[test]
fn write_on_a_read_only_export_is_eperm() {
    setup();
    let scratch = Scratch::new();
    let raw = raw_disk(&scratch, "ro.raw");
    let q = require("qemu-nbd", "qemu-utils");
    let out = client_same(&[
        "activate",
        "",
        q.to_str().unwrap(),
        "-r",
        "-f",
        "raw",
        raw.to_str().unwrap(),
    ]);
    assert!(
        out.stdout.contains("write refused: errno=EPERM"),
        "{}",
        out.stdout
    );
}
