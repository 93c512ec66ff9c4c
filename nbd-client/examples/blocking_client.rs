//! A tour of the blocking client.
//!
//! Usage: `blocking_client <unix-socket-path | host:port> [export-name]`
//!
//! Writes a pattern to the first MiB of the export, reads it back and
//! checks it, keeps 64 reads in flight at once, prints the allocation map
//! and disconnects. Exits non-zero on any mismatch or error. It writes to
//! the export: point it at a scratch disk.

use nbd_client::blocking::Client;
use nbd_client::{Config, BASE_ALLOCATION};

fn main() {
    if let Err(e) = run() {
        eprintln!("blocking_client: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: blocking_client <socket|host:port> [export]")?;
    let config = Config::new().export_name(args.next().unwrap_or_default());
    let mut nbd = Client::connect(&addr, &config)?;
    println!(
        "connected: {} bytes, read-only {}, structured replies {}, extended headers {}",
        nbd.size(),
        nbd.is_read_only(),
        nbd.structured_replies(),
        nbd.extended_headers()
    );

    let len = nbd.size().min(1 << 20) as usize;
    let pattern: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    nbd.write_at(&pattern, 0)?;
    let mut back = vec![0; len];
    nbd.read_at(&mut back, 0)?;
    if back != pattern {
        return Err("read back data differs from what was written".into());
    }
    println!("wrote and read back {len} bytes: data verified");

    // 64 reads in flight; each owns its buffer.
    let piece = len / 64;
    let ids = (0..64)
        .map(|i| nbd.submit_read((i * piece) as u64, piece))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, id) in ids.into_iter().enumerate() {
        let data = nbd.wait(id)?.into_data().ok_or("a read returned no data")?;
        if data[..] != pattern[i * piece..(i + 1) * piece] {
            return Err(format!("pipelined read {i} differs").into());
        }
    }
    println!("64 reads in flight: data verified");

    if nbd.can_meta_context(BASE_ALLOCATION) {
        let extents = nbd.block_status(0, nbd.size(), BASE_ALLOCATION)?;
        for e in extents.iter().take(8) {
            let what = match (e.is_hole(), e.is_zero()) {
                (true, _) => "hole",
                (false, true) => "zero",
                (false, false) => "data",
            };
            println!("  {:>12} +{:<12} {what}", e.offset, e.length);
        }
        println!("block status: {} extents", extents.len());
    }
    nbd.disconnect()?;
    println!("disconnected");
    Ok(())
}
