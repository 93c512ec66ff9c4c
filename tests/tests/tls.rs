//! TLS against real servers, on the library under test: nbdkit
//! (`--tls=require` with `--tls-certificates` or `--tls-psk`) and qemu-nbd
//! (`tls-creds-x509` requiring a client certificate, `tls-creds-psk`), on
//! Unix sockets and TCP, through the Python bindings (`scripts/tls.py`:
//! connect, write, read back, 64 reads in flight, flush, block status) and
//! Debian's `nbdinfo` and `nbdcopy` over `nbds+unix://` URIs. Certificates
//! and keys are made for each test by [`nbd_tests::pki`].
//!
//! The failures: unknown CA, wrong host name, expired certificate, no CA
//! but the system's (the CVE-2024-7383 lesson: the system store is checked,
//! it does not let everything through), wrong PSK key, unknown PSK user,
//! a server without TLS under `LIBNBD_TLS_REQUIRE`. Each must fail the
//! connect and leave the handle dead. Downgrade attempts a real server would
//! not make (STARTTLS answered with garbage, oldstyle) are scripted in
//! nbd-ffi/tests/tls_scripted.rs.

use nbd_tests::pki::{Pki, PSK_USER};
use nbd_tests::*;
use std::path::Path;

fn nbdsh() -> std::path::PathBuf {
    require("nbdsh", "libnbd-bin")
}

/// A scratch directory with certificates and keys.
fn setup() -> (Scratch, Pki) {
    let scratch = Scratch::new();
    let pki = Pki::generate(&scratch.file("pki"));
    (scratch, pki)
}

/// What `tls.py` reported.
#[derive(Debug)]
enum Outcome {
    /// Connected: `get_tls_negotiated`, and the I/O went through.
    Ok { negotiated: bool, uri: String },
    /// The connect failed with this errno (name or number) and message.
    Failed { errno: String, error: String },
}

/// Runs `scripts/tls.py` on the library under test with `target`, the
/// `NBD_TLS_*` settings and extra environment; `expect_ok` says which
/// outcome the script must reach (it asserts that itself too).
fn tls_script_env(
    target: &str,
    settings: &[(&str, &str)],
    expect_ok: bool,
    env: &[(&str, &Path)],
) -> Outcome {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tls.py");
    let code = format!("exec(open({:?}).read())", path.display().to_string());
    let mut cmd = tool(nbdsh(), Lib::UnderTest);
    cmd.env("NBD_TLS_TARGET", target)
        .env("NBD_TLS_EXPECT", if expect_ok { "ok" } else { "fail" })
        .args(["-c", NBDSH_PRINT_LOADED, "-c", &code]);
    for (k, v) in settings {
        cmd.env(format!("NBD_TLS_{k}"), v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(
        out.code() == 0 && out.stdout.lines().any(|l| l == "tls.py: OK"),
        "tls.py ({target}, {settings:?}) did not finish as expected:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_ran_on_library_under_test(&out.stdout);
    if let Some(line) = out.stdout.lines().find(|l| l.starts_with("FAIL ")) {
        let rest = line.trim_start_matches("FAIL errno=");
        let (errno, error) = rest.split_once(" error=").unwrap_or((rest, ""));
        return Outcome::Failed {
            errno: errno.to_string(),
            error: error.to_string(),
        };
    }
    let negotiated = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("NEGOTIATED "))
        .unwrap_or_else(|| panic!("no NEGOTIATED line:\n{}", out.stdout));
    assert!(
        out.stdout.lines().any(|l| l.starts_with("IO OK extents=")),
        "{}",
        out.stdout
    );
    let uri = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("URI "))
        .unwrap_or_default()
        .to_string();
    Outcome::Ok {
        negotiated: negotiated == "1",
        uri,
    }
}

/// Connects (and does the I/O); returns whether TLS was negotiated and
/// `get_uri`.
fn connects(target: &str, settings: &[(&str, &str)], env: &[(&str, &Path)]) -> (bool, String) {
    match tls_script_env(target, settings, true, env) {
        Outcome::Ok { negotiated, uri } => (negotiated, uri),
        other => panic!("{target} {settings:?}: {other:?}"),
    }
}

/// Connects with TLS and checks it was negotiated; returns `get_uri`.
fn works(target: &str, settings: &[(&str, &str)]) -> String {
    let (negotiated, uri) = connects(target, settings, &[]);
    assert!(negotiated, "{target}: connected without TLS");
    uri
}

/// Connects and expects failure; returns the error message.
fn fails(target: &str, settings: &[(&str, &str)]) -> (String, String) {
    fails_env(target, settings, &[])
}

fn fails_env(target: &str, settings: &[(&str, &str)], env: &[(&str, &Path)]) -> (String, String) {
    match tls_script_env(target, settings, false, env) {
        Outcome::Failed { errno, error } => (errno, error),
        other => panic!("{target}: {other:?}"),
    }
}

fn unix(server: &Server) -> String {
    format!("unix:{}", server.socket().display())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn nbdkit_x509(scratch: &Scratch, dir: &Path, tcp: bool) -> Server {
    let certs = format!("--tls-certificates={}", dir.display());
    let args = ["--tls=require", &certs, "memory", "16M"];
    if tcp {
        Server::nbdkit_tcp(scratch, &args)
    } else {
        Server::nbdkit(scratch, &args)
    }
}

fn nbdkit_psk(scratch: &Scratch, pki: &Pki, tls: &str) -> Server {
    let psk = format!("--tls-psk={}", pki.psk_file().display());
    Server::nbdkit(scratch, &[tls, &psk, "memory", "16M"])
}

fn qemu_nbd_tls(scratch: &Scratch, object: &str) -> Server {
    let image = scratch.file("disk.raw");
    qemu_img_create(&image, "raw", 16 << 20);
    Server::qemu_nbd(
        scratch,
        &image,
        "raw",
        "",
        &["--object", object, "--tls-creds", "tls0"],
    )
}

// ----- working connections -----

#[test]
fn nbdkit_x509_over_unix() {
    let (scratch, pki) = setup();
    let server = nbdkit_x509(&scratch, &pki.dir("server"), false);
    let ca = s(&pki.dir("client-ca-only"));
    works(&unix(&server), &[("CERTS", &ca)]);
}

#[test]
fn nbdkit_psk_over_unix_and_get_uri_says_nbds() {
    let (scratch, pki) = setup();
    let server = nbdkit_psk(&scratch, &pki, "--tls=require");
    let psk = s(&pki.psk_file());
    let uri = works(&unix(&server), &[("PSK", &psk), ("USER", PSK_USER)]);
    assert!(uri.starts_with("nbds+unix://"), "{uri}");
}

#[test]
fn qemu_nbd_x509_with_a_client_certificate() {
    let (scratch, pki) = setup();
    let dir = pki.dir("server");
    let server = qemu_nbd_tls(
        &scratch,
        &format!(
            "tls-creds-x509,id=tls0,endpoint=server,verify-peer=on,dir={}",
            dir.display()
        ),
    );
    works(&unix(&server), &[("CERTS", &s(&pki.dir("client")))]);
    // Without a client certificate qemu-nbd refuses the session.
    let (_, error) = fails(&unix(&server), &[("CERTS", &s(&pki.dir("client-ca-only")))]);
    assert!(!error.is_empty());
}

#[test]
fn qemu_nbd_psk() {
    let (scratch, pki) = setup();
    let server = qemu_nbd_tls(
        &scratch,
        &format!(
            "tls-creds-psk,id=tls0,endpoint=server,dir={}",
            pki.dir("psk").display()
        ),
    );
    let psk = s(&pki.psk_file());
    works(&unix(&server), &[("PSK", &psk), ("USER", PSK_USER)]);
    let wrong = s(&pki.wrong_psk_file());
    fails(&unix(&server), &[("PSK", &wrong), ("USER", PSK_USER)]);
}

#[test]
fn tcp_host_name_is_checked_against_the_certificate() {
    let (scratch, pki) = setup();
    let server = nbdkit_x509(&scratch, &pki.dir("server"), true);
    let port = server.tcp_port().unwrap();
    let ca = s(&pki.dir("client-ca-only"));
    works(&format!("tcp:localhost:{port}"), &[("CERTS", &ca)]);
    works(
        &format!("uri:nbds://localhost:{port}/?tls-certificates={ca}"),
        &[],
    );
    // The certificate names localhost, not 127.0.0.1.
    let (_, error) = fails(&format!("tcp:127.0.0.1:{port}"), &[("CERTS", &ca)]);
    assert!(error.contains("certificate"), "{error}");
    // Unless the caller turns verification off.
    works(
        &format!("tcp:127.0.0.1:{port}"),
        &[("CERTS", &ca), ("VERIFY", "0")],
    );
}

#[test]
fn certificate_for_another_host_name_is_rejected() {
    let (scratch, pki) = setup();
    let server = nbdkit_x509(&scratch, &pki.dir("server-other-name"), true);
    let port = server.tcp_port().unwrap();
    let ca = s(&pki.dir("client-ca-only"));
    let (_, error) = fails(&format!("tcp:localhost:{port}"), &[("CERTS", &ca)]);
    assert!(error.contains("certificate"), "{error}");
}

#[test]
fn expired_certificate_is_rejected() {
    let (scratch, pki) = setup();
    let server = nbdkit_x509(&scratch, &pki.dir("server-expired"), false);
    let ca = s(&pki.dir("client-ca-only"));
    let (_, error) = fails(&unix(&server), &[("CERTS", &ca)]);
    assert!(error.contains("expired"), "{error}");
}

#[test]
fn certificate_from_an_unknown_ca_is_rejected_unless_verification_is_off() {
    let (scratch, pki) = setup();
    let server = nbdkit_x509(&scratch, &pki.dir("server-other-ca"), false);
    let ca = s(&pki.dir("client-ca-only"));
    let (_, error) = fails(&unix(&server), &[("CERTS", &ca)]);
    assert!(error.contains("certificate"), "{error}");
    works(&unix(&server), &[("CERTS", &ca), ("VERIFY", "0")]);
}

#[test]
fn without_a_certificates_directory_the_system_cas_decide_cve_2024_7383() {
    // libnbd 1.14 connected here without checking the certificate at all.
    let (scratch, pki) = setup();
    let server = nbdkit_x509(&scratch, &pki.dir("server"), false);
    let home = scratch.file("home");
    std::fs::create_dir_all(&home).unwrap();
    let (_, error) = fails_env(&unix(&server), &[], &[("HOME", &home)]);
    assert!(error.contains("certificate"), "{error}");
    // libnbd's default directories are looked in.
    for sub in [".pki/libnbd", ".config/pki/libnbd"] {
        let home = scratch.file(&format!("home-{}", sub.replace('/', "_")));
        let dir = home.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            pki.dir("client-ca-only").join("ca-cert.pem"),
            dir.join("ca-cert.pem"),
        )
        .unwrap();
        let (negotiated, _) = connects(&unix(&server), &[], &[("HOME", &home)]);
        assert!(negotiated, "{sub}");
    }
}

#[test]
fn wrong_psk_key_and_unknown_psk_user_are_rejected() {
    let (scratch, pki) = setup();
    let server = nbdkit_psk(&scratch, &pki, "--tls=require");
    let wrong = s(&pki.wrong_psk_file());
    fails(&unix(&server), &[("PSK", &wrong), ("USER", PSK_USER)]);
    // The right key under a name the server does not know.
    let text = std::fs::read_to_string(pki.psk_file()).unwrap();
    let bob = scratch.file("bob.psk");
    std::fs::write(&bob, text.replace(&format!("{PSK_USER}:"), "bob:")).unwrap();
    fails(&unix(&server), &[("PSK", &s(&bob)), ("USER", "bob")]);
    // A user missing from the file fails before any handshake.
    let (_, error) = fails(&unix(&server), &[("PSK", &s(&bob)), ("USER", "carol")]);
    assert!(error.contains("no key for username carol"), "{error}");
}

#[test]
fn require_against_a_server_without_tls_fails_with_enotsup() {
    let scratch = Scratch::new();
    let server = Server::nbdkit(&scratch, &["memory", "16M"]);
    let (errno, error) = fails(&unix(&server), &[]);
    assert!(errno == "ENOTSUP" || errno == "95", "{errno} {error}");
    assert!(error.contains("TLS required"), "{error}");
}

#[test]
fn allow_works_with_and_without_tls() {
    let (scratch, pki) = setup();
    let plain = Server::nbdkit(&scratch, &["memory", "16M"]);
    let (negotiated, _) = connects(&unix(&plain), &[("MODE", "allow")], &[]);
    assert!(!negotiated, "TLS with a server that has none");
    // nbdkit --tls=on offers TLS without requiring it.
    let tls = nbdkit_psk(&scratch, &pki, "--tls=on");
    let psk = s(&pki.psk_file());
    let settings = [("MODE", "allow"), ("PSK", &psk), ("USER", PSK_USER)];
    let (negotiated, _) = connects(&unix(&tls), &settings, &[]);
    assert!(negotiated, "ALLOW did not use the server's TLS");
}

#[test]
fn uri_query_parameters_set_the_credentials() {
    let (scratch, pki) = setup();
    let server = nbdkit_psk(&scratch, &pki, "--tls=require");
    let sock = server.socket().display().to_string();
    let psk = s(&pki.psk_file());
    // tls-username, and the user part of the URI.
    works(
        &format!("uri:nbds+unix:///?socket={sock}&tls-psk-file={psk}&tls-username={PSK_USER}"),
        &[],
    );
    works(
        &format!("uri:nbds+unix://{PSK_USER}@/?socket={sock}&tls-psk-file={psk}"),
        &[],
    );
    // A plain nbd+unix URI on a handle set to TLS_REQUIRE still uses TLS.
    works(
        &format!("uri:nbd+unix:///?socket={sock}"),
        &[("PSK", &psk), ("USER", PSK_USER)],
    );
}

// ----- Debian's tools on our library -----

#[test]
fn nbdinfo_over_nbds_unix_matches_debians_libnbd() {
    let (scratch, pki) = setup();
    let server = nbdkit_psk(&scratch, &pki, "--tls=require");
    let uri = server.psk_uri(PSK_USER, &pki.psk_file());
    let nbdinfo = require("nbdinfo", "libnbd-bin");
    let ours = run_ok(tool(&nbdinfo, Lib::UnderTest).arg(&uri));
    assert!(
        ours.stdout.contains("with TLS"),
        "TLS not reported:\n{}",
        ours.stdout
    );
    let theirs = run_ok(tool(&nbdinfo, Lib::Debian).arg(&uri));
    assert_eq!(
        without_library_lines(&ours.stdout),
        without_library_lines(&theirs.stdout)
    );
    // And a server without TLS under an nbds URI: refused.
    let plain = Server::nbdkit(&scratch, &["memory", "1M"]);
    let out = run(tool(&nbdinfo, Lib::UnderTest)
        .arg(format!("nbds+unix:///?socket={}", plain.socket().display())));
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("TLS required"), "{}", out.stderr);
}

#[test]
fn nbdcopy_through_tls_both_ways() {
    let (scratch, pki) = setup();
    let server = nbdkit_psk(&scratch, &pki, "--tls=require");
    let uri = server.psk_uri(PSK_USER, &pki.psk_file());
    let src = scratch.file("src.img");
    let data = pseudo_random(7, 16 << 20);
    std::fs::write(&src, &data).unwrap();
    let nbdcopy = require("nbdcopy", "libnbd-bin");
    assert_binary_loads(&nbdcopy, Lib::UnderTest);
    run_ok(tool(&nbdcopy, Lib::UnderTest).arg(&src).arg(&uri));
    let back = scratch.file("back.img");
    run_ok(
        tool(&nbdcopy, Lib::UnderTest)
            .args(["--connections=4", "--requests=16"])
            .arg(&uri)
            .arg(&back),
    );
    assert_eq!(sha256_file(&back), sha256(&data));

    // qemu-nbd with X.509 and a client certificate.
    let q = qemu_nbd_tls(
        &scratch,
        &format!(
            "tls-creds-x509,id=tls0,endpoint=server,dir={}",
            pki.dir("server").display()
        ),
    );
    let quri = format!(
        "nbds+unix:///?socket={}&tls-certificates={}",
        q.socket().display(),
        pki.dir("client").display()
    );
    run_ok(tool(&nbdcopy, Lib::UnderTest).arg(&src).arg(&quri));
    let qback = scratch.file("qback.img");
    run_ok(tool(&nbdcopy, Lib::UnderTest).arg(&quri).arg(&qback));
    assert_eq!(sha256_file(&qback), sha256(&data));
}
