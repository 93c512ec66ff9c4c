//! The tokio client: the blocking example's tour, as async code.
//!
//! Usage: `tokio_client <unix-socket-path | host:port> [export-name]`
//! (build with `--features tokio`). It writes to the export: point it at a
//! scratch disk.

use nbd_client::tokio::Client;
use nbd_client::{Config, BASE_ALLOCATION};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("tokio_client: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: tokio_client <socket|host:port> [export]")?;
    let config = Config::new().export_name(args.next().unwrap_or_default());
    let mut nbd = Client::connect(&addr, &config).await?;
    println!("connected: {} bytes", nbd.size());

    let len = nbd.size().min(1 << 20) as usize;
    let pattern: Vec<u8> = (0..len).map(|i| (i * 13 % 253) as u8).collect();
    // Owned bytes go out without a copy.
    let id = nbd.submit_write(pattern.clone(), 0)?;
    nbd.wait(id).await?;
    let mut back = vec![0; len];
    nbd.read_at(&mut back, 0).await?;
    if back != pattern {
        return Err("read back data differs from what was written".into());
    }
    println!("wrote and read back {len} bytes: data verified");

    let piece = len / 64;
    let ids = (0..64)
        .map(|i| nbd.submit_read((i * piece) as u64, piece))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, id) in ids.into_iter().enumerate() {
        let data = nbd.wait(id).await?.into_data().ok_or("no data")?;
        if data[..] != pattern[i * piece..(i + 1) * piece] {
            return Err(format!("pipelined read {i} differs").into());
        }
    }
    println!("64 reads in flight: data verified");

    if nbd.can_meta_context(BASE_ALLOCATION) {
        let extents = nbd.block_status(0, nbd.size(), BASE_ALLOCATION).await?;
        println!("block status: {} extents", extents.len());
    }
    nbd.disconnect().await?;
    println!("disconnected");
    Ok(())
}
