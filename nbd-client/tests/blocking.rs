//! The blocking client against qemu-nbd and nbdkit.

mod common;

use common::{nbdkit, pattern, qemu};
use nbd_client::blocking::Client;
use nbd_client::{Config, Error, Output, BASE_ALLOCATION};
use std::collections::HashMap;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

#[test]
fn qemu_write_read_verify() {
    let srv = qemu(8 * MIB, &[], &[]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    assert_eq!(c.size(), 8 * MIB);
    assert!(!c.is_read_only());
    assert!(c.can_flush());
    assert!(c.structured_replies());
    let data = pattern(3 * MIB as usize + 123, 1);
    c.write_at(&data, 4097).unwrap();
    c.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_at(&mut back, 4097).unwrap();
    assert!(back == data, "read back differs");
    // Trim and zero: the range reads as zeroes afterwards.
    c.zero(4097, 1000).unwrap();
    c.trim(2 * MIB, MIB).unwrap();
    let mut z = vec![0xAAu8; 1000];
    c.read_at(&mut z, 4097).unwrap();
    assert!(z.iter().all(|&b| b == 0));
    c.disconnect().unwrap();
    // The data reached the image.
    let img = std::fs::read(srv.image.as_ref().unwrap()).unwrap();
    assert_eq!(&img[4097 + 1000..4097 + 5000], &data[1000..5000]);
}

#[test]
fn qemu_large_request_is_split() {
    let srv = qemu(80 * MIB, &[], &[]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    // Over the 32 MiB a request may carry.
    let data = pattern(70 * MIB as usize, 9);
    c.write_at(&data, 0).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_at(&mut back, 0).unwrap();
    assert!(back == data);
}

#[test]
fn qemu_holes_are_zeroed() {
    let data = pattern(MIB as usize, 2);
    let srv = qemu(8 * MIB, &[(2 * MIB, &data)], &[]);
    for config in [
        Config::new(),
        Config::new()
            .structured_replies(false)
            .extended_headers(false),
    ] {
        let mut c = Client::connect(&srv.addr(), &config).unwrap();
        // Garbage in the buffer: the hole must overwrite it.
        let mut buf = vec![0xAAu8; 4 * MIB as usize];
        c.read_at(&mut buf, 0).unwrap();
        assert!(
            buf[..2 * MIB as usize].iter().all(|&b| b == 0),
            "hole not zeroed"
        );
        assert!(buf[2 * MIB as usize..3 * MIB as usize] == data[..]);
        assert!(buf[3 * MIB as usize..].iter().all(|&b| b == 0));
        c.disconnect().unwrap();
    }
}

#[test]
fn qemu_block_status() {
    let data = pattern(MIB as usize, 3);
    let srv = qemu(8 * MIB, &[(2 * MIB, &data)], &[]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    assert!(c.can_meta_context(BASE_ALLOCATION));
    let ext = c.block_status(0, c.size(), BASE_ALLOCATION).unwrap();
    assert!(!ext.is_empty());
    assert_eq!(ext[0].offset, 0);
    // Contiguous.
    for w in ext.windows(2) {
        assert_eq!(w[0].offset + w[0].length, w[1].offset);
    }
    let at = |off: u64| {
        *ext.iter()
            .find(|e| e.offset <= off && off < e.offset + e.length)
            .expect("offset described")
    };
    assert!(at(0).is_hole() && at(0).is_zero());
    assert!(!at(2 * MIB).is_hole() && !at(2 * MIB).is_zero());
    assert!(at(5 * MIB).is_hole());
    // A context that was not negotiated.
    assert!(matches!(
        c.block_status(0, 4096, "qemu:nope"),
        Err(Error::NoMetaContext(_))
    ));
    // No contexts asked for: block status unavailable (qemu-nbd takes one
    // client at a time).
    c.disconnect().unwrap();
    let mut c = Client::connect(&srv.addr(), &Config::new().no_meta_contexts()).unwrap();
    assert!(!c.can_meta_context(BASE_ALLOCATION));
    assert!(c.block_status(0, 4096, BASE_ALLOCATION).is_err());
}

#[test]
fn qemu_64_in_flight() {
    let srv = qemu(8 * MIB, &[], &[]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    const N: u64 = 64;
    const LEN: usize = 64 * 1024;
    let writes: Vec<_> = (0..N)
        .map(|i| c.submit_write(pattern(LEN, i), i * LEN as u64).unwrap())
        .collect();
    assert_eq!(c.in_flight(), N as usize);
    for id in writes {
        assert_eq!(c.wait(id).unwrap(), Output::Done);
    }
    assert_eq!(c.in_flight(), 0);
    // 64 reads at once, in reverse order of offset.
    let mut ids = HashMap::new();
    for i in (0..N).rev() {
        ids.insert(c.submit_read(i * LEN as u64, LEN).unwrap(), i);
    }
    assert_eq!(c.in_flight(), N as usize);
    let mut seen = 0;
    while seen < N {
        let (id, out) = c.wait_next().unwrap();
        let i = ids.remove(&id).expect("each id once");
        assert!(out.unwrap().into_data().unwrap() == pattern(LEN, i));
        seen += 1;
    }
    assert!(ids.is_empty());
    assert!(matches!(c.wait_next(), Err(Error::InvalidState(_))));
    // A read the command owns, over a hole: garbage in its buffer is zeroed.
    let id = c.submit_read_into(vec![0xAA; LEN], 6 * MIB).unwrap();
    assert!(c
        .wait(id)
        .unwrap()
        .into_data()
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    // Reused buffers.
    let buf = vec![0u8; LEN];
    let id = c.submit_read_into(buf, 5 * LEN as u64).unwrap();
    assert!(c.wait(id).unwrap().into_data().unwrap() == pattern(LEN, 5));
    assert!(matches!(c.wait(id), Err(Error::UnknownCommand)));
}

#[test]
fn qemu_opt_mode_lists_then_go() {
    let srv = qemu(4 * MIB, &[], &["-x", "disk0", "-D", "the disk"]);
    let mut c = Client::connect(&srv.addr(), &Config::new().opt_mode(true)).unwrap();
    assert!(c.is_negotiating());
    let exports = c.list_exports().unwrap();
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].name, "disk0");
    assert_eq!(exports[0].description, "the disk");
    c.set_export_name("disk0").unwrap();
    let ctx = c.list_meta_contexts(&[]).unwrap();
    assert!(ctx.iter().any(|n| n == BASE_ALLOCATION), "{ctx:?}");
    // A wrong name fails and leaves the client in opt mode.
    c.set_export_name("nope").unwrap();
    assert!(matches!(c.go(), Err(Error::Option(_))));
    assert!(c.is_negotiating());
    c.set_export_name("disk0").unwrap();
    c.go().unwrap();
    assert!(!c.is_negotiating());
    assert_eq!(c.size(), 4 * MIB);
    assert!(c.can_meta_context(BASE_ALLOCATION));
    let mut b = [1u8; 16];
    c.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0; 16]);
    c.disconnect().unwrap();

    // Opt mode ended with abort.
    let c = Client::connect(&srv.addr(), &Config::new().opt_mode(true)).unwrap();
    c.disconnect().unwrap();
}

#[test]
fn unknown_export_is_an_error() {
    let srv = qemu(MIB, &[], &["-x", "disk0"]);
    let e = Client::connect(&srv.addr(), &Config::new().export_name("other")).unwrap_err();
    assert!(matches!(e, Error::Connection(_)), "{e:?}");
    let io: std::io::Error = e.into();
    assert!(io.raw_os_error().is_none());
}

#[test]
fn read_past_end_is_an_error() {
    let srv = qemu(MIB, &[], &[]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    let mut b = vec![0u8; 4096];
    let e = c.read_at(&mut b, MIB - 100).unwrap_err();
    assert!(matches!(e, Error::Submit(_)), "{e:?}");
    assert_eq!(e.errno(), libc_einval());
    assert!(c.write_at(&b, MIB).is_err());
    // The connection is still good.
    c.read_at(&mut b, 0).unwrap();
    // Empty requests are no-ops.
    c.read_at(&mut [], 0).unwrap();
    c.disconnect().unwrap();
}

#[test]
fn read_only_export_refuses_writes() {
    let srv = qemu(MIB, &[], &["-r"]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    assert!(c.is_read_only());
    let e = c.write_at(b"x", 0).unwrap_err();
    assert!(matches!(e, Error::Submit(_)));
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
}

#[test]
fn server_read_error_fails_only_that_command() {
    let srv = nbdkit(&[
        "--filter=error",
        "memory",
        "4M",
        "error=EIO",
        "error-pread-rate=100%",
    ]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    let mut b = vec![0u8; 4096];
    let e = c.read_at(&mut b, 8192).unwrap_err();
    match &e {
        Error::Command { errno, offset, .. } => {
            assert_eq!(*errno, 5);
            // nbdkit 1.32 sends NBD_REPLY_TYPE_ERROR (no offset); with
            // ERROR_OFFSET the offset lies in the request.
            assert!(offset.is_none_or(|o| (8192..8192 + 4096).contains(&o)));
        }
        other => panic!("{other:?}"),
    }
    // Writes still work.
    c.write_at(b"abc", 0).unwrap();
    c.disconnect().unwrap();
}

#[test]
fn server_killed_mid_command() {
    let mut srv = nbdkit(&["--filter=delay", "memory", "4M", "rdelay=30"]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    let ids: Vec<_> = (0..4)
        .map(|i| c.submit_read(i * 4096, 4096).unwrap())
        .collect();
    // The waiter sends the requests; the server dies while they wait.
    let waiter = std::thread::spawn(move || {
        let r: Vec<_> = ids.into_iter().map(|id| c.wait(id)).collect();
        (c, r)
    });
    std::thread::sleep(Duration::from_millis(300));
    srv.kill();
    let (mut c, results) = waiter.join().unwrap();
    for r in &results {
        assert!(matches!(r, Err(Error::Connection(_))), "{r:?}");
    }
    // Every later call fails the same way, without panicking.
    let mut b = [0u8; 10];
    assert!(matches!(c.read_at(&mut b, 0), Err(Error::Connection(_))));
    assert!(c.disconnect().is_err());
}

#[test]
fn nbdkit_memory_all_header_modes() {
    let srv = nbdkit(&["memory", "64M"]);
    for config in [
        Config::new(),
        Config::new().extended_headers(false),
        Config::new()
            .structured_replies(false)
            .extended_headers(false),
    ] {
        let mut c = Client::connect(&srv.addr(), &config).unwrap();
        assert_eq!(c.size(), 64 * MIB);
        let data = pattern(MIB as usize, 4);
        c.write_at(&data, 10 * MIB + 1).unwrap();
        let mut back = vec![0u8; data.len()];
        c.read_at(&mut back, 10 * MIB + 1).unwrap();
        assert!(back == data);
        let mut hole = vec![0x55u8; 4096];
        c.read_at(&mut hole, 40 * MIB).unwrap();
        assert!(hole.iter().all(|&b| b == 0));
        if c.structured_replies() {
            let ext = c.block_status(40 * MIB, MIB, BASE_ALLOCATION).unwrap();
            assert!(ext[0].is_zero());
        }
        c.disconnect().unwrap();
    }
}

fn libc_einval() -> i32 {
    22
}

/// The example program runs against qemu-nbd and checks its own work.
#[test]
fn blocking_example_runs() {
    let srv = qemu(16 * MIB, &[], &[]);
    let exe = common::example("blocking_client", &[]);
    let out = std::process::Command::new(exe)
        .arg(srv.addr())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verified"), "{stdout}");
}

/// Large writes and large read replies in flight together: neither side's
/// full socket buffer may block the other for good.
#[test]
fn large_writes_and_reads_interleaved() {
    let srv = qemu(160 * MIB, &[], &[]);
    let mut c = Client::connect(&srv.addr(), &Config::new()).unwrap();
    const LEN: usize = 2 * MIB as usize;
    for i in 0..16u64 {
        c.write_at(&pattern(LEN, i), i * LEN as u64).unwrap();
    }
    let mut reads = HashMap::new();
    let mut writes = Vec::new();
    for i in 0..16u64 {
        reads.insert(c.submit_read(i * LEN as u64, LEN).unwrap(), i);
        writes.push(
            c.submit_write(pattern(LEN, 100 + i), (16 + i) * LEN as u64)
                .unwrap(),
        );
    }
    assert_eq!(c.in_flight(), 32);
    while let Ok((id, out)) = c.wait_next() {
        let out = out.unwrap();
        if let Some(i) = reads.remove(&id) {
            assert!(out.into_data().unwrap() == pattern(LEN, i));
        }
    }
    assert!(reads.is_empty());
    let mut back = vec![0u8; LEN];
    c.read_at(&mut back, 20 * LEN as u64).unwrap();
    assert!(back == pattern(LEN, 104));
    c.disconnect().unwrap();
}

/// Over TCP, with nbdkit on a free local port.
#[test]
fn tcp_connect() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port_arg = port.to_string();
    let args = ["-f", "-i", "127.0.0.1", "-p", &port_arg, "memory", "8M"];
    let _server = common::ChildGuard(
        std::process::Command::new("nbdkit")
            .args(args)
            .spawn()
            .unwrap(),
    );
    let addr = format!("127.0.0.1:{port}");
    let mut tries = 0;
    let mut c = loop {
        match Client::connect(&addr, &Config::new()) {
            Ok(c) => break c,
            Err(Error::Io(_)) if tries < 500 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(c.size(), 8 * MIB);
    let data = pattern(MIB as usize, 11);
    c.write_at(&data, 3).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_at(&mut back, 3).unwrap();
    assert!(back == data);
    c.disconnect().unwrap();
}

/// Over a socket pair given to `nbdkit -s` as its stdin and stdout.
#[test]
fn socketpair_stream() {
    use std::os::fd::OwnedFd;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd: OwnedFd = theirs.into();
    let _server = common::ChildGuard(
        std::process::Command::new("nbdkit")
            .args(["-s", "memory", "1M"])
            .stdin(fd.try_clone().unwrap())
            .stdout(fd)
            .spawn()
            .unwrap(),
    );
    let mut c = Client::from_unix_stream(ours, &Config::new()).unwrap();
    assert_eq!(c.size(), MIB);
    c.write_at(b"pair", 10).unwrap();
    let mut b = [0u8; 4];
    c.read_at(&mut b, 10).unwrap();
    assert_eq!(&b, b"pair");
    c.disconnect().unwrap();
}
