//! `nbd+ssh://` and `nbds+ssh://` URIs with a fake `ssh` first in `PATH`:
//! a script that records its arguments and then runs nbdkit on its
//! stdin/stdout, as the real `ssh ... nc ...` tunnel would carry the
//! server's. Checked: the exact command line (ports, user, compression,
//! `nbd-port`, a remote socket quoted for the remote shell), TLS through the
//! tunnel with `tls-username` (the URI's user is the ssh user), the
//! subprocess pid, no URI from `nbd_get_uri`, and that hostile hosts, users
//! and sockets are refused before anything runs.
//!
//! This binary holds one test: it changes `PATH` for the whole process.

#![warn(clippy::undocumented_unsafe_blocks)]

mod conn_support;

use conn_support::*;
use nbd_ffi::connect::*;
use nbd_ffi::tls::*;
use nbd_ffi::uri::*;
use std::os::unix::fs::PermissionsExt;

/// The fake ssh's calls so far, one `Vec` of arguments per call.
fn calls(log: &std::path::Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.split("----\n")
        .filter(|c| !c.is_empty())
        .map(|c| c.lines().map(str::to_string).collect())
        .collect()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn ssh_transport_with_a_fake_ssh() {
    let dir = scratch("conn-ssh");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("ssh.log");
    let server_args = dir.join("server-args");
    std::fs::write(&server_args, "").unwrap();
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{log}'\n\
         echo ---- >> '{log}'\n\
         exec nbdkit -s --exit-with-parent $(cat '{args}') memory 1M\n",
        log = log.display(),
        args = server_args.display()
    );
    let ssh = bin.join("ssh");
    std::fs::write(&ssh, script).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    // The only test of this binary: nothing else reads the environment now.
    std::env::set_var("PATH", format!("{}:{path}", bin.display()));

    // Plain: every part of the URI in its place.
    let h = H::new();
    h.with_str(
        nbd_connect_uri,
        "NBD+SSH://bob@server:2222/exp?nbd-port=99&compress=true",
    )
    .unwrap();
    assert_eq!(h.size(), 1 << 20);
    assert_eq!(
        calls(&log).last().unwrap(),
        &args(&[
            "-C",
            "-p",
            "2222",
            "-o",
            "User=bob",
            "--",
            "server",
            "nc",
            "localhost",
            "99"
        ])
    );
    let pid = h.subprocess_pid().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).starts_with("nbdkit\0"));
    // libnbd makes no URI for an ssh connection.
    assert_eq!(h.string(nbd_get_uri).unwrap_err().0, libc::EINVAL);
    drop(h);

    // Defaults, an IPv6 server, and a remote socket the remote shell must
    // see as one word.
    for (uri, expect) in [
        (
            "nbd+ssh://server/",
            args(&["-p", "22", "--", "server", "nc", "localhost", "10809"]),
        ),
        (
            "nbd+ssh://[::1]:22/",
            args(&["-p", "22", "--", "::1", "nc", "localhost", "10809"]),
        ),
        (
            "nbd+ssh://server/?socket=/run/nbd%20x;id.sock",
            args(&[
                "-p",
                "22",
                "--",
                "server",
                "nc",
                "-U",
                "'/run/nbd x;id.sock'",
            ]),
        ),
    ] {
        let h = H::new();
        h.with_str(nbd_connect_uri, uri).unwrap();
        assert_eq!(calls(&log).last().unwrap(), &expect, "{uri}");
    }

    // TLS through the tunnel: the URI's user logs in to ssh, tls-username
    // is the PSK identity.
    let psk = dir.join("keys.psk");
    std::fs::write(&psk, format!("alice:{}\n", "5a".repeat(32))).unwrap();
    std::fs::write(
        &server_args,
        format!("--tls=require --tls-psk={}", psk.display()),
    )
    .unwrap();
    let h = H::new();
    h.set_bool(nbd_set_uri_allow_local_file, true).unwrap();
    let uri = format!(
        "nbds+ssh://bob@server/?tls-psk-file={}&tls-username=alice",
        psk.display()
    );
    h.with_str(nbd_connect_uri, &uri).unwrap();
    assert_eq!(h.tls_negotiated(), 1);
    assert_eq!(h.string(nbd_get_tls_username).unwrap(), "alice");
    assert_eq!(
        calls(&log).last().unwrap(),
        &args(&[
            "-p",
            "22",
            "-o",
            "User=bob",
            "--",
            "server",
            "nc",
            "localhost",
            "10809"
        ])
    );
    drop(h);

    // Hostile parts: refused (EINVAL) before ssh runs.
    let before = calls(&log).len();
    for uri in [
        "nbd+ssh://-oProxyCommand=id/",
        "nbd+ssh://%2DoProxyCommand=id/",
        "nbd+ssh://-bob@server/",
        "nbd+ssh://b%20b@server/",
        "nbd+ssh://b%3Bid@server/",
        "nbd+ssh://h%3Bid/",
        "nbd+ssh://h%60id%60/",
        "nbd+ssh://server/?socket=-oProxyCommand=id",
        "nbd+ssh://server/?socket=/a%0Aid",
        "nbd+ssh:///",
    ] {
        let h = H::new();
        let (errno, msg) = h.with_str(nbd_connect_uri, uri).unwrap_err();
        assert_eq!(errno, libc::EINVAL, "{uri}: {msg}");
        // SAFETY: h is open.
        assert_eq!(unsafe { nbd_ffi::state::nbd_aio_is_created(h.0) }, 1);
    }
    // Forbidden transport: EPERM, nothing run.
    let h = H::new();
    // SAFETY: h is open.
    let rc = unsafe {
        nbd_set_uri_allow_transports(h.0, nbd_ffi::constants::LIBNBD_ALLOW_TRANSPORT_UNIX)
    };
    assert_eq!(rc, 0);
    assert_eq!(
        h.with_str(nbd_connect_uri, "nbd+ssh://server/")
            .unwrap_err()
            .0,
        libc::EPERM
    );
    assert_eq!(calls(&log).len(), before, "ssh ran for a refused URI");
}
