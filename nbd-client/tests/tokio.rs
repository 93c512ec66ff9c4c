//! The tokio client against qemu-nbd and nbdkit: the blocking tests' core
//! cases, plus cancellation.
#![cfg(feature = "tokio")]

mod common;

use common::{nbdkit, pattern, qemu};
use nbd_client::tokio::Client;
use nbd_client::{Config, Error, BASE_ALLOCATION};
use std::collections::HashMap;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn write_read_verify_and_holes() {
    let on_disk = pattern(MIB as usize, 2);
    let srv = qemu(8 * MIB, &[(4 * MIB, &on_disk)], &[]);
    rt().block_on(async {
        let mut c = Client::connect(&srv.addr(), &Config::new()).await.unwrap();
        assert_eq!(c.size(), 8 * MIB);
        let data = pattern(3 * MIB as usize + 5, 1);
        c.write_at(&data, 1).await.unwrap();
        c.flush().await.unwrap();
        let mut back = vec![0u8; data.len()];
        c.read_at(&mut back, 1).await.unwrap();
        assert!(back == data);
        // Hole after the data, then the data written into the image.
        let mut buf = vec![0xAAu8; 2 * MIB as usize];
        c.read_at(&mut buf, 4 * MIB - MIB / 2).await.unwrap();
        assert!(buf[..MIB as usize / 2 - 6].iter().all(|&b| b == 0));
        assert!(buf[MIB as usize / 2..MIB as usize * 3 / 2] == on_disk[..]);
        c.zero(1, 100).await.unwrap();
        c.trim(MIB, MIB).await.unwrap();
        c.disconnect().await.unwrap();
    });
}

#[test]
fn block_status() {
    let data = pattern(MIB as usize, 3);
    let srv = qemu(8 * MIB, &[(2 * MIB, &data)], &[]);
    rt().block_on(async {
        let mut c = Client::connect(&srv.addr(), &Config::new()).await.unwrap();
        let size = c.size();
        let ext = c.block_status(0, size, BASE_ALLOCATION).await.unwrap();
        let at = |off: u64| {
            *ext.iter()
                .find(|e| e.offset <= off && off < e.offset + e.length)
                .expect("offset described")
        };
        assert!(at(0).is_hole());
        assert!(!at(2 * MIB).is_hole());
        assert!(at(6 * MIB).is_hole());
        c.disconnect().await.unwrap();
    });
}

#[test]
fn sixty_four_in_flight() {
    let srv = nbdkit(&["memory", "64M"]);
    rt().block_on(async {
        let mut c = Client::connect(&srv.addr(), &Config::new()).await.unwrap();
        const LEN: usize = 256 * 1024;
        let writes: Vec<_> = (0..64u64)
            .map(|i| c.submit_write(pattern(LEN, i), i * LEN as u64).unwrap())
            .collect();
        assert_eq!(c.in_flight(), 64);
        for id in writes {
            c.wait(id).await.unwrap();
        }
        let mut ids = HashMap::new();
        for i in (0..64u64).rev() {
            ids.insert(c.submit_read(i * LEN as u64, LEN).unwrap(), i);
        }
        assert_eq!(c.in_flight(), 64);
        for _ in 0..64 {
            let (id, out) = c.wait_next().await.unwrap();
            let i = ids.remove(&id).unwrap();
            assert!(out.unwrap().into_data().unwrap() == pattern(LEN, i));
        }
        assert!(ids.is_empty());
        c.disconnect().await.unwrap();
    });
}

#[test]
fn opt_mode() {
    let srv = qemu(4 * MIB, &[], &["-x", "disk0"]);
    rt().block_on(async {
        let config = Config::new().opt_mode(true).export_name("disk0");
        let mut c = Client::connect(&srv.addr(), &config).await.unwrap();
        assert!(c.is_negotiating());
        let exports = c.list_exports().await.unwrap();
        assert_eq!(exports[0].name, "disk0");
        let ctx = c.list_meta_contexts(&["base:"]).await.unwrap();
        assert_eq!(ctx, [BASE_ALLOCATION]);
        c.go().await.unwrap();
        assert_eq!(c.size(), 4 * MIB);
        c.disconnect().await.unwrap();
    });
}

#[test]
fn errors() {
    let srv = qemu(MIB, &[], &[]);
    rt().block_on(async {
        let mut c = Client::connect(&srv.addr(), &Config::new()).await.unwrap();
        let mut b = vec![0u8; 8192];
        assert!(matches!(
            c.read_at(&mut b, MIB - 1).await,
            Err(Error::Submit(_))
        ));
        c.read_at(&mut b, 0).await.unwrap();
        c.disconnect().await.unwrap();
    });
    let srv = nbdkit(&[
        "--filter=error",
        "memory",
        "4M",
        "error=EIO",
        "error-pread-rate=100%",
    ]);
    rt().block_on(async {
        let mut c = Client::connect(&srv.addr(), &Config::new()).await.unwrap();
        let mut b = vec![0u8; 4096];
        let e = c.read_at(&mut b, 0).await.unwrap_err();
        assert_eq!(e.errno(), 5, "{e:?}");
        c.write_at(b"abc", 0).await.unwrap();
    });
}

#[test]
fn server_killed_mid_command() {
    let mut srv = nbdkit(&["--filter=delay", "memory", "4M", "rdelay=30"]);
    let rt = rt();
    let mut c = rt
        .block_on(Client::connect(&srv.addr(), &Config::new()))
        .unwrap();
    let id = c.submit_read(0, 4096).unwrap();
    let waiter = std::thread::spawn(move || {
        let r = rt.block_on(c.wait(id));
        (c, r)
    });
    std::thread::sleep(Duration::from_millis(300));
    srv.kill();
    let (mut c, r) = waiter.join().unwrap();
    assert!(matches!(r, Err(Error::Connection(_))), "{r:?}");
    let rt = self::rt();
    let mut b = [0u8; 4];
    assert!(rt.block_on(c.read_at(&mut b, 0)).is_err());
}

#[test]
fn dropped_read_future_leaves_the_connection_usable() {
    let srv = nbdkit(&["--filter=delay", "memory", "4M", "rdelay=1"]);
    rt().block_on(async {
        let mut c = Client::connect(&srv.addr(), &Config::new()).await.unwrap();
        c.write_at(&pattern(8192, 7), 0).await.unwrap();
        {
            let mut buf = vec![0u8; 4096];
            // Give up long before the delayed reply.
            // (On a machine stalled for a second the read may finish
            // instead; the rest of the test holds either way.)
            let _ = tokio::time::timeout(Duration::from_millis(50), c.read_at(&mut buf, 0)).await;
        }
        // The abandoned reply arrives and is discarded; this one is right.
        let mut buf = vec![0u8; 4096];
        c.read_at(&mut buf, 4096).await.unwrap();
        assert!(buf == pattern(8192, 7)[4096..]);
        assert_eq!(c.in_flight(), 0);
        c.disconnect().await.unwrap();
    });
}

#[test]
fn tokio_example_runs() {
    let srv = qemu(16 * MIB, &[], &[]);
    let exe = common::example("tokio_client", &["tokio"]);
    let out = std::process::Command::new(exe)
        .arg(srv.addr())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified"));
}
