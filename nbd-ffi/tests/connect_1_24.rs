//! The connect, TLS and URI calls of libnbd 1.16-1.24 against real nbdkit
//! servers, through the C exports: the socket activation name (what the
//! server sees in `LISTEN_FDNAMES`), `nbd_get_subprocess_pid` (the child's
//! own pid), `nbd_supports_vsock`, the TLS host name (an X.509 certificate
//! whose name only the set host name matches), TLS priority strings
//! (accepted, refused, and the protocol version nbdkit reports), URI
//! variants (case, `nbd-port`, `tls-hostname`, `tls-priority` and its
//! policy), `nbd_is_uri`, and the wrong-state and NULL errors.
//! `nbd+ssh://` runs in connect_ssh.rs (it changes `PATH`).

#![warn(clippy::undocumented_unsafe_blocks)]

mod conn_support;
#[path = "../../tests/src/pki.rs"]
#[allow(dead_code, unreachable_pub)]
mod pki;

use conn_support::*;
use nbd_ffi::connect::*;
use nbd_ffi::constants::{LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE};
use nbd_ffi::tls::*;
use nbd_ffi::uri::*;
use pki::{Pki, PSK_USER};
use std::path::Path;

const SIZE: i64 = 1 << 20;

/// Each test's certificates, in its own scratch directory.
fn pki(dir: &Path) -> Pki {
    Pki::generate(&dir.join("pki"))
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

// ----- socket activation and subprocesses -----

#[test]
fn socket_activation_name_reaches_the_server_and_the_pid_is_the_childs() {
    let dir = scratch("conn-activation");
    for (i, name) in [None, Some(""), Some("foo"), Some("Disk0")]
        .iter()
        .enumerate()
    {
        let h = H::new();
        assert_eq!(h.string(nbd_get_socket_activation_name).unwrap(), "");
        if let Some(n) = name {
            h.with_str(nbd_set_socket_activation_name, n).unwrap();
            assert_eq!(h.string(nbd_get_socket_activation_name).unwrap(), *n);
        }
        // The shell records what it was given, then becomes nbdkit (same
        // pid, so LISTEN_PID stays right).
        let env = dir.join(format!("env-{i}"));
        let script = format!(
            "env | grep '^LISTEN_' > '{}'; exec nbdkit --exit-with-parent memory {SIZE}",
            env.display()
        );
        h.argv(
            nbd_connect_systemd_socket_activation,
            &["sh", "-c", &script],
        )
        .unwrap();
        assert_eq!(h.size(), SIZE);
        let seen = std::fs::read_to_string(&env).unwrap();
        let expect = match name {
            Some(n) if !n.is_empty() => n,
            _ => "unknown",
        };
        assert!(
            seen.lines()
                .any(|l| l == format!("LISTEN_FDNAMES={expect}")),
            "{name:?}: {seen}"
        );
        assert!(seen.lines().any(|l| l == "LISTEN_FDS=1"), "{seen}");
        let pid = h.subprocess_pid().unwrap();
        assert!(
            seen.lines().any(|l| l == format!("LISTEN_PID={pid}")),
            "pid {pid}: {seen}"
        );
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(String::from_utf8_lossy(&cmdline).contains("nbdkit"));
        // nbd_get_uri names the socket made for the server, as in libnbd.
        let uri = h.string(nbd_get_uri).unwrap();
        assert!(uri.starts_with("nbd+unix:///?socket=/"), "{uri}");
        // Connected: the name can no longer change.
        let (errno, _) = h.with_str(nbd_set_socket_activation_name, "x").unwrap_err();
        assert_eq!(errno, libc::EINVAL);
    }
}

#[test]
fn socket_activation_name_checks() {
    let h = H::new();
    let (errno, msg) = h
        .with_str(nbd_set_socket_activation_name, &"a".repeat(33))
        .unwrap_err();
    assert_eq!(errno, libc::ENAMETOOLONG, "{msg}");
    assert!(msg.starts_with("nbd_set_socket_activation_name: "), "{msg}");
    h.with_str(nbd_set_socket_activation_name, &"a".repeat(32))
        .unwrap();
    for bad in ["a-b", "a b", "a.b", "a_b", "é"] {
        let (errno, _) = h.with_str(nbd_set_socket_activation_name, bad).unwrap_err();
        assert_eq!(errno, libc::EINVAL, "{bad}");
    }
    // A refused name leaves the old one.
    assert_eq!(
        h.string(nbd_get_socket_activation_name).unwrap(),
        "a".repeat(32)
    );
    let (errno, _) = h.with_null(nbd_set_socket_activation_name).unwrap_err();
    assert_eq!(errno, libc::EFAULT);
    h.with_str(nbd_set_socket_activation_name, "").unwrap();
    assert_eq!(h.string(nbd_get_socket_activation_name).unwrap(), "");
    // NULL handles.
    // SAFETY: NULL is refused, not dereferenced.
    let p = unsafe { nbd_get_socket_activation_name(std::ptr::null_mut()) };
    assert!(p.is_null());
    assert_eq!(last_error().0, libc::EFAULT);
}

#[test]
fn subprocess_pid_of_a_command_and_none_otherwise() {
    let dir = scratch("conn-pid");
    let h = H::new();
    // Not connected: no subprocess.
    let (errno, msg) = h.subprocess_pid().unwrap_err();
    assert_eq!(errno, libc::ESRCH, "{msg}");
    h.argv(
        nbd_connect_command,
        &["nbdkit", "-s", "--exit-with-parent", "memory", "1M"],
    )
    .unwrap();
    let pid = h.subprocess_pid().unwrap();
    assert!(pid > 1);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).starts_with("nbdkit\0-s\0"));
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_kill_subprocess(h.0, 0) }, 0);
    // libnbd 1.24 reaps in nbd_close, not here: the pid stays known.
    assert_eq!(h.subprocess_pid().unwrap(), pid);

    // A plain socket connection has no subprocess either.
    let server = Nbdkit::unix(&dir, &["memory", "1M"]);
    let h = H::new();
    h.with_str(nbd_connect_unix, &s(&server.socket)).unwrap();
    assert_eq!(h.subprocess_pid().unwrap_err().0, libc::ESRCH);
    // An empty argv is refused before anything runs.
    let h = H::new();
    assert_eq!(
        h.argv(nbd_connect_command, &[]).unwrap_err().0,
        libc::EINVAL
    );
    assert_eq!(h.subprocess_pid().unwrap_err().0, libc::ESRCH);
}

#[test]
fn supports_vsock_on_linux() {
    // libnbd: true when built for a platform with AF_VSOCK, whatever the
    // kernel has loaded.
    let h = H::new();
    assert_eq!(h.int(nbd_supports_vsock).unwrap(), 1);
    // SAFETY: a NULL handle is refused.
    assert_eq!(unsafe { nbd_supports_vsock(std::ptr::null_mut()) }, -1);
    assert_eq!(last_error().0, libc::EFAULT);
}

// ----- TLS host name -----

#[test]
fn tls_hostname_replaces_the_connect_host_for_the_certificate_check() {
    let dir = scratch("conn-tls-hostname");
    let pki = pki(&dir);
    let ca = s(&pki.dir("client-ca-only"));
    // A server whose certificate says DNS:other.invalid only.
    let other = format!("--tls-certificates={}", s(&pki.dir("server-other-name")));
    let tcp = Nbdkit::tcp(&dir, &["--tls=require", &other, "memory", "1M"]);
    let port = tcp.port.unwrap().to_string();

    let connect_tcp =
        |hostname: Option<&str>| -> (H, Result<std::ffi::c_int, (std::ffi::c_int, String)>) {
            let h = H::new();
            h.set_tls(LIBNBD_TLS_REQUIRE);
            h.with_str(nbd_set_tls_certificates, &ca).unwrap();
            if let Some(n) = hostname {
                h.with_str(nbd_set_tls_hostname, n).unwrap();
            }
            let (host, port) = (c("localhost"), c(&port));
            // SAFETY: h is open; both strings live for the call.
            let rc = check(unsafe { nbd_connect_tcp(h.0, host.as_ptr(), port.as_ptr()) });
            (h, rc)
        };
    // Connecting to "localhost": the certificate does not match.
    let (h, rc) = connect_tcp(None);
    let (_, msg) = rc.unwrap_err();
    assert!(msg.contains("certificate"), "{msg}");
    assert!(h.is_dead());
    // The host connected to is the host name in effect.
    assert_eq!(h.string(nbd_get_tls_hostname).unwrap(), "localhost");
    // With the TLS host name set it does.
    let (h, rc) = connect_tcp(Some("other.invalid"));
    rc.unwrap();
    assert_eq!(h.tls_negotiated(), 1);
    assert_eq!(h.size(), SIZE);
    assert_eq!(h.string(nbd_get_tls_hostname).unwrap(), "other.invalid");
    let uri = h.string(nbd_get_uri).unwrap();
    assert!(uri.contains("tls-hostname=other.invalid"), "{uri}");
    // Connected: too late to change it.
    let (errno, _) = h.with_str(nbd_set_tls_hostname, "x").unwrap_err();
    assert_eq!(errno, libc::EINVAL);

    // Over a Unix socket there is no host name unless one is set, and then
    // it is checked: a server certified for "localhost" fails "other.invalid".
    let good = format!("--tls-certificates={}", s(&pki.dir("server")));
    let udir = dir.join("unix");
    std::fs::create_dir_all(&udir).unwrap();
    let unix = Nbdkit::unix(&udir, &["--tls=require", &good, "memory", "1M"]);
    let h = H::new();
    assert_eq!(h.string(nbd_get_tls_hostname).unwrap(), "");
    h.set_tls(LIBNBD_TLS_REQUIRE);
    h.with_str(nbd_set_tls_certificates, &ca).unwrap();
    h.with_str(nbd_connect_unix, &s(&unix.socket)).unwrap();
    assert_eq!(h.string(nbd_get_tls_hostname).unwrap(), "");
    let h = H::new();
    h.set_tls(LIBNBD_TLS_REQUIRE);
    h.with_str(nbd_set_tls_certificates, &ca).unwrap();
    h.with_str(nbd_set_tls_hostname, "other.invalid").unwrap();
    let (_, msg) = h.with_str(nbd_connect_unix, &s(&unix.socket)).unwrap_err();
    assert!(msg.contains("certificate"), "{msg}");
    let h = H::new();
    h.set_tls(LIBNBD_TLS_REQUIRE);
    h.with_str(nbd_set_tls_certificates, &ca).unwrap();
    h.with_str(nbd_set_tls_hostname, "localhost").unwrap();
    h.with_str(nbd_connect_unix, &s(&unix.socket)).unwrap();
    assert_eq!(h.tls_negotiated(), 1);

    // The URI parameter does the same.
    let h = H::new();
    h.set_bool(nbd_set_uri_allow_local_file, true).unwrap();
    let uri = format!("nbds://localhost:{port}/?tls-certificates={ca}&tls-hostname=other.invalid");
    h.with_str(nbd_connect_uri, &uri).unwrap();
    assert_eq!(h.tls_negotiated(), 1);
    assert_eq!(h.string(nbd_get_tls_hostname).unwrap(), "other.invalid");

    let h = H::new();
    assert_eq!(
        h.with_null(nbd_set_tls_hostname).unwrap_err().0,
        libc::EFAULT
    );
}

// ----- TLS priority -----

#[test]
fn tls_priority_set_get_and_refused() {
    let h = H::new();
    assert_eq!(h.string(nbd_get_tls_priority).unwrap(), "NORMAL");
    h.with_str(nbd_set_tls_priority, "SECURE256:-VERS-TLS1.2")
        .unwrap();
    assert_eq!(
        h.string(nbd_get_tls_priority).unwrap(),
        "SECURE256:-VERS-TLS1.2"
    );
    for bad in [
        "garbage",
        "@SYSTEM",
        "NORMAL:+ARCFOUR-128",
        "NORMAL:+VERS-TLS1.0",
        "NONE",
        "NORMAL:-VERS-ALL",
    ] {
        let (errno, msg) = h.with_str(nbd_set_tls_priority, bad).unwrap_err();
        assert_eq!(errno, libc::EINVAL, "{bad}: {msg}");
        assert!(
            msg.starts_with("nbd_set_tls_priority: TLS priority"),
            "{msg}"
        );
    }
    // The refused strings left the good one.
    assert_eq!(
        h.string(nbd_get_tls_priority).unwrap(),
        "SECURE256:-VERS-TLS1.2"
    );
    assert_eq!(
        h.with_null(nbd_set_tls_priority).unwrap_err().0,
        libc::EFAULT
    );
}

/// The TLS version nbdkit reports for its (only) session.
fn session_version(server: &Nbdkit) -> String {
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("TLS session: ("))
        .unwrap_or_else(|| panic!("no TLS session in the log:\n{log}"));
    let v = line.split("TLS session: (").nth(1).unwrap();
    v.split(')').next().unwrap().to_string()
}

#[test]
fn tls_priority_decides_the_protocol_version() {
    let dir = scratch("conn-tls-priority");
    let pki = pki(&dir);
    let psk = s(&pki.psk_file());
    let ca = s(&pki.dir("client-ca-only"));
    let certs = format!("--tls-certificates={}", s(&pki.dir("server")));
    let psk_arg = format!("--tls-psk={psk}");
    for (n, (priority, x509, version)) in [
        ("NORMAL:-VERS-TLS1.3", false, "TLS1.2"),
        ("NORMAL:-VERS-TLS1.2", false, "TLS1.3"),
        ("SECURE256", false, "TLS1.3"),
        (
            "NONE:+VERS-TLS1.2:+ECDHE-RSA:+ECDHE-ECDSA:+AES-128-GCM:+AEAD:+GROUP-ALL",
            true,
            "TLS1.2",
        ),
        (
            "NONE:+VERS-TLS1.3:+CHACHA20-POLY1305:+AEAD:+GROUP-X25519:+SIGN-ALL",
            true,
            "TLS1.3",
        ),
        ("PFS:-VERS-TLS1.3", true, "TLS1.2"),
    ]
    .into_iter()
    .enumerate()
    {
        let sdir = dir.join(format!("s{n}"));
        std::fs::create_dir_all(&sdir).unwrap();
        let server = if x509 {
            Nbdkit::unix(&sdir, &["--tls=require", &certs, "memory", "1M"])
        } else {
            Nbdkit::unix(&sdir, &["--tls=require", &psk_arg, "memory", "1M"])
        };
        let h = H::new();
        h.set_tls(LIBNBD_TLS_REQUIRE);
        if x509 {
            h.with_str(nbd_set_tls_certificates, &ca).unwrap();
        } else {
            h.with_str(nbd_set_tls_psk_file, &psk).unwrap();
            h.with_str(nbd_set_tls_username, PSK_USER).unwrap();
        }
        h.with_str(nbd_set_tls_priority, priority).unwrap();
        h.with_str(nbd_connect_unix, &s(&server.socket))
            .unwrap_or_else(|e| panic!("{priority}: {e:?}"));
        assert_eq!(h.size(), SIZE);
        drop(h);
        assert_eq!(session_version(&server), version, "{priority}");
    }

    // A string with nothing for pre-shared keys (TLS 1.2 only, a cipher and
    // MAC no PSK suite has) fails the connection, with a clear reason.
    let sdir = dir.join("psk-none");
    std::fs::create_dir_all(&sdir).unwrap();
    let server = Nbdkit::unix(&sdir, &["--tls=require", &psk_arg, "memory", "1M"]);
    let h = H::new();
    h.set_tls(LIBNBD_TLS_REQUIRE);
    h.with_str(nbd_set_tls_psk_file, &psk).unwrap();
    h.with_str(nbd_set_tls_username, PSK_USER).unwrap();
    h.with_str(
        nbd_set_tls_priority,
        "NONE:+VERS-TLS1.2:+DHE-RSA:+AES-256-CBC:+SHA256:+GROUP-ALL",
    )
    .unwrap();
    let (_, msg) = h
        .with_str(nbd_connect_unix, &s(&server.socket))
        .unwrap_err();
    assert!(msg.contains("pre-shared keys"), "{msg}");
    assert!(h.is_dead());
    // Connected or dead: too late to set.
    assert_eq!(
        h.with_str(nbd_set_tls_priority, "NORMAL").unwrap_err().0,
        libc::EINVAL
    );
}

#[test]
fn tls_priority_in_uris_needs_permission() {
    let dir = scratch("conn-uri-priority");
    let pki = pki(&dir);
    let psk = s(&pki.psk_file());
    let psk_arg = format!("--tls-psk={psk}");
    let server = Nbdkit::unix(&dir, &["--tls=require", &psk_arg, "memory", "1M"]);
    let query =
        format!("tls-psk-file={psk}&tls-username={PSK_USER}&tls-priority=NORMAL:-VERS-TLS1.3");
    let uri = server.unix_uri("nbds+unix", &query);
    let allow_files = |h: &H| {
        h.set_bool(nbd_set_uri_allow_local_file, true).unwrap();
    };
    let allow_priority = |h: &H| {
        h.set_bool(nbd_set_uri_allow_tls_priority, true).unwrap();
    };
    // Not allowed by default: EPERM, and the handle is still unconnected.
    let h = H::new();
    allow_files(&h);
    let (errno, msg) = h.with_str(nbd_connect_uri, &uri).unwrap_err();
    assert_eq!(errno, libc::EPERM, "{msg}");
    assert!(msg.contains("nbd_set_uri_allow_tls_priority"), "{msg}");
    assert_eq!(h.string(nbd_get_tls_priority).unwrap(), "NORMAL");
    // Allowed but not understood: EINVAL.
    let h = H::new();
    allow_files(&h);
    allow_priority(&h);
    let bad = server.unix_uri(
        "nbds+unix",
        &format!("tls-psk-file={psk}&tls-priority=LEGACY"),
    );
    assert_eq!(
        h.with_str(nbd_connect_uri, &bad).unwrap_err().0,
        libc::EINVAL
    );
    // Allowed: used, and shown by get_tls_priority and get_uri.
    let h = H::new();
    allow_files(&h);
    allow_priority(&h);
    h.with_str(nbd_connect_uri, &uri).unwrap();
    assert_eq!(h.tls_negotiated(), 1);
    assert_eq!(
        h.string(nbd_get_tls_priority).unwrap(),
        "NORMAL:-VERS-TLS1.3"
    );
    let got = h.string(nbd_get_uri).unwrap();
    assert!(got.contains("tls-priority=NORMAL:-VERS-TLS1.3"), "{got}");
    drop(h);
    assert_eq!(session_version(&server), "TLS1.2");
    // Too late once connected.
    let h = H::new();
    h.with_str(nbd_connect_uri, &server.unix_uri("nbd+unix", ""))
        .unwrap_err();
    assert_eq!(
        h.set_bool(nbd_set_uri_allow_tls_priority, true)
            .unwrap_err()
            .0,
        libc::EINVAL
    );
}

// ----- URIs -----

#[test]
fn uri_variants() {
    let dir = scratch("conn-uri");
    let tcp = Nbdkit::tcp(&dir, &["memory", "1M"]);
    let port = tcp.port.unwrap();
    let udir = dir.join("unix");
    std::fs::create_dir_all(&udir).unwrap();
    let unix = Nbdkit::unix(&udir, &["memory", "1M"]);
    // Schemes in any case; unknown parameters ignored; nbd-port wins over
    // the authority's port (1 would be refused).
    for uri in [
        unix.unix_uri("NBD+UNIX", ""),
        unix.unix_uri("Nbd+Unix", "x-unknown=1&nbd-port=7"),
        format!("NBD://127.0.0.1:{port}/"),
        format!("nbd://127.0.0.1:1/?nbd-port={port}"),
        format!("nbd://127.0.0.1/?nbd-port={port}&compress=false"),
    ] {
        let h = H::new();
        h.with_str(nbd_connect_uri, &uri)
            .unwrap_or_else(|e| panic!("{uri}: {e:?}"));
        assert_eq!(h.size(), SIZE, "{uri}");
        let got = h.string(nbd_get_uri).unwrap();
        assert!(
            !got.contains("unknown") && !got.contains("nbd-port"),
            "{got}"
        );
        assert!(got.starts_with("nbd"), "{got}");
    }
    let h = H::new();
    h.with_str(
        nbd_connect_uri,
        &format!("nbd://127.0.0.1:1/?nbd-port={port}"),
    )
    .unwrap();
    assert_eq!(
        h.string(nbd_get_uri).unwrap(),
        format!("nbd://127.0.0.1:{port}/")
    );
    // The host connected to is the TLS host name in effect.
    assert_eq!(h.string(nbd_get_tls_hostname).unwrap(), "127.0.0.1");

    // Refused before connecting.
    for (uri, errno) in [
        ("nbd://127.0.0.1/?nbd-port=abc", libc::EINVAL),
        ("nbd://127.0.0.1/?nbd-port=70000", libc::EINVAL),
        ("nbd://h/?compress=maybe", libc::EINVAL),
        ("nbd://h/?tls-verify-peer=maybe", libc::EINVAL),
        ("nbd+ssh:///", libc::EINVAL),
        ("nbd+ssh://-oProxyCommand=id/", libc::EINVAL),
        ("nbd://h/?tls-priority=NORMAL", libc::EPERM),
    ] {
        let h = H::new();
        let (e, msg) = h.with_str(nbd_connect_uri, uri).unwrap_err();
        assert_eq!(e, errno, "{uri}: {msg}");
        // SAFETY: h is open.
        let created = unsafe { nbd_ffi::state::nbd_aio_is_created(h.0) };
        assert_eq!(created, 1, "{uri}");
    }
    // The ssh transport can be forbidden like the others.
    let h = H::new();
    // SAFETY: h is open.
    let rc = unsafe {
        nbd_set_uri_allow_transports(h.0, nbd_ffi::constants::LIBNBD_ALLOW_TRANSPORT_TCP)
    };
    assert_eq!(rc, 0);
    let (e, _) = h
        .with_str(nbd_connect_uri, "nbd+ssh://server/")
        .unwrap_err();
    assert_eq!(e, libc::EPERM);
    // nbds with TLS disabled by the URI policy.
    let h = H::new();
    // SAFETY: h is open.
    assert_eq!(unsafe { nbd_set_uri_allow_tls(h.0, LIBNBD_TLS_DISABLE) }, 0);
    let (e, _) = h.with_str(nbd_connect_uri, "nbds://h/").unwrap_err();
    assert_eq!(e, libc::EPERM);
}

#[test]
fn is_uri_heuristic() {
    let h = H::new();
    let is = |s: &str| {
        let cs = c(s);
        // SAFETY: h is open; cs lives for the call.
        unsafe { nbd_is_uri(h.0, cs.as_ptr()) }
    };
    for yes in [
        "nbd://x",
        "NBD://x",
        "nbds+unix:///?socket=x",
        "nbd+ssh://x",
        "Nbd+Vsock://",
        "nbds+ssh://",
        "nbd://",
        "nbd:///",
    ] {
        assert_eq!(is(yes), 1, "{yes}");
    }
    for no in [
        "nbd:",
        "nbd:x",
        "nbd:/",
        "http://x",
        "file.img",
        "/path/nbd://x",
        "nbd+foo://x",
        " nbd://x",
        "nbd",
        "nbdx://",
        "",
    ] {
        assert_eq!(is(no), 0, "{no}");
    }
    // SAFETY: h is open; NULL is refused.
    assert_eq!(unsafe { nbd_is_uri(h.0, std::ptr::null()) }, -1);
    assert_eq!(last_error().0, libc::EFAULT);
    let x = c("nbd://x");
    // SAFETY: a NULL handle is refused; x lives for the call.
    let rc = unsafe { nbd_is_uri(std::ptr::null_mut(), x.as_ptr()) };
    assert_eq!(rc, -1);
    assert_eq!(last_error().0, libc::EFAULT);
}
