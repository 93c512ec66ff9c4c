//! The same client as `blocking.rs`, driven by tokio: the core does not change,
//! only the driver does.
//!
//! Usage: `tokio <unix-socket-path | host:port> [export-name]`
//!
//! Connects, writes 1 MiB (payload held by the core as `Bytes`), reads it back
//! into a buffer with payload received straight into it, verifies, disconnects.

use bytes::Bytes;
use nbd_proto::client::{Client, Command, CommandKind, Config, Event, RecvTarget, Segment};
use std::io::IoSlice;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

struct Driver {
    client: Client,
    io: Box<dyn Stream>,
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Driver {
    async fn flush(&mut self) -> std::io::Result<()> {
        while self.client.wants_write() {
            let mut segs = [Segment::Bytes(&[]); 32];
            let n = self.client.transmit_segments(&mut segs);
            let slices: Vec<IoSlice<'_>> = segs[..n]
                .iter()
                .filter_map(|s| match *s {
                    Segment::Bytes(b) => Some(IoSlice::new(b)),
                    // This driver only submits owned payloads.
                    Segment::External { .. } => None,
                })
                .collect();
            let sent = self.io.write_vectored(&slices).await?;
            self.client.advance_transmit(sent);
        }
        Ok(())
    }

    async fn read_some(&mut self, read_buf: &mut [u8]) -> std::io::Result<()> {
        loop {
            match self.client.recv_target() {
                RecvTarget::Payload {
                    buf_offset, len, ..
                } => {
                    let o = buf_offset as usize;
                    let dst = &mut read_buf[o..o + len];
                    let n = if self.start < self.end {
                        let n = len.min(self.end - self.start);
                        dst[..n].copy_from_slice(&self.rbuf[self.start..self.start + n]);
                        self.start += n;
                        n
                    } else {
                        match self.io.read(dst).await? {
                            0 => {
                                self.client.handle_eof();
                                return Ok(());
                            }
                            n => n,
                        }
                    };
                    self.client.handle_payload(n);
                    return Ok(());
                }
                RecvTarget::Control if self.start < self.end => {
                    let n = self.client.handle_input(&self.rbuf[self.start..self.end]);
                    self.start += n;
                    if n == 0 || self.start == self.end {
                        return Ok(());
                    }
                }
                RecvTarget::Control => {
                    let n = self.io.read(&mut self.rbuf).await?;
                    if n == 0 {
                        self.client.handle_eof();
                        return Ok(());
                    }
                    self.start = 0;
                    self.end = n;
                }
            }
        }
    }

    async fn until(
        &mut self,
        read_buf: &mut [u8],
        mut done: impl FnMut(&Event) -> bool,
    ) -> Result<Event, String> {
        loop {
            self.flush().await.map_err(|e| e.to_string())?;
            while let Some(e) = self.client.poll_event() {
                if let Event::Dead(why) = &e {
                    return Err(format!("connection died: {why}"));
                }
                if done(&e) {
                    return Ok(e);
                }
            }
            if !self.client.wants_read() {
                return Err("client idle before the condition was met".into());
            }
            self.read_some(read_buf).await.map_err(|e| e.to_string())?;
        }
    }

    async fn complete(&mut self, cookie: u64, read_buf: &mut [u8]) -> Result<(), String> {
        match self
            .until(
                read_buf,
                |e| matches!(e, Event::Complete { cookie: c, .. } if *c == cookie),
            )
            .await?
        {
            Event::Complete { result: Ok(()), .. } => Ok(()),
            Event::Complete { result: Err(e), .. } => Err(format!("command failed: {}", e.message)),
            _ => unreachable!("until returns the matching event"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("tokio: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: tokio <socket|host:port> [export]")?;
    let export = args.next().unwrap_or_default();
    let io: Box<dyn Stream> = if addr.contains('/') {
        Box::new(
            UnixStream::connect(&addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?,
        )
    } else {
        let s = TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        s.set_nodelay(true).ok();
        Box::new(s)
    };
    let mut d = Driver {
        client: Client::new({
            let mut config = Config::default();
            config.export_name = export;
            config
        }),
        io,
        rbuf: vec![0; 64 * 1024],
        start: 0,
        end: 0,
    };
    d.until(&mut [], |e| matches!(e, Event::Ready)).await?;
    let size = d.client.export().size;
    println!("connected: size {size}");
    let len = (1024 * 1024).min(size as usize);
    let pattern: Bytes = (0..len)
        .map(|i| (i * 13 % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let w = d
        .client
        .submit(Command::write(0, pattern.clone()))
        .map_err(|e| e.to_string())?;
    d.complete(w, &mut []).await?;
    let mut back = vec![0u8; len];
    let r = d
        .client
        .submit(Command::new(CommandKind::Read, 0, len as u64))
        .map_err(|e| e.to_string())?;
    d.complete(r, &mut back).await?;
    if back[..] != pattern[..] {
        return Err("read back data differs from what was written".into());
    }
    println!("wrote and read back {len} bytes: data verified");
    d.client.shutdown().map_err(|e| e.to_string())?;
    d.until(&mut [], |e| matches!(e, Event::Closed)).await?;
    println!("disconnected");
    Ok(())
}
