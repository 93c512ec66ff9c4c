//! A small blocking NBD client on `std::net`, driving `nbd_proto::client::Client`.
//!
//! Usage: `blocking <unix-socket-path | host:port> [export-name]`
//!
//! It negotiates, writes a pattern to the first 1 MiB of the export, reads it
//! back (READ payload goes straight into the destination buffer), checks it,
//! asks for block status if the server offers `base:allocation`, and
//! disconnects. It exits non-zero on any mismatch or error.
//!
//! Each command carries its buffer in the client ([`Io`]): the client lends
//! it back for the WRITE payload it sends, for the READ payload it receives
//! and for holes to zero, and returns it on completion. The driver keeps no
//! table of its own.

use nbd_proto::client::{Client, Command, CommandKind, Config, Event, Segment, Step};
use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// What a command carries: the buffer its payload comes from or goes to.
#[derive(Debug, Default)]
enum Io {
    /// No payload.
    #[default]
    None,
    /// A READ's destination.
    Read(Vec<u8>),
    /// A WRITE's payload.
    Write(Vec<u8>),
}

/// Drives the client over a blocking stream.
struct Driver {
    client: Client<Io>,
    stream: Box<dyn Stream>,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` not yet consumed: `rbuf[start..end]`.
    start: usize,
    end: usize,
}

impl Driver {
    /// Sends everything pending, with vectored writes.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.client.wants_write() {
            let mut segs = [Segment::Bytes(&[]); 32];
            let n = self.client.transmit_segments(&mut segs);
            let slices: Vec<IoSlice<'_>> = segs[..n]
                .iter()
                .map(|s| match *s {
                    Segment::Bytes(b) => IoSlice::new(b),
                    // The WRITE's own buffer, lent by the client.
                    Segment::External {
                        buf_offset,
                        len,
                        data: Io::Write(w),
                        ..
                    } => {
                        let o = buf_offset as usize;
                        IoSlice::new(&w[o..o + len])
                    }
                    Segment::External { .. } => unreachable!("only writes have payload"),
                })
                .collect();
            let sent = self.stream.write_vectored(&slices)?;
            self.client.advance_transmit(sent);
        }
        Ok(())
    }

    /// Reads once and feeds the client; READ payload lands in the READ's
    /// own buffer.
    fn read_some(&mut self) -> std::io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        loop {
            match self.client.payload_target() {
                Some(t) => {
                    let Io::Read(buf) = t.data else {
                        unreachable!("only reads get payload")
                    };
                    let (o, len) = (t.buf_offset as usize, t.len);
                    let dst = &mut buf[o..o + len];
                    let n = if self.start < self.end {
                        // Payload already buffered behind the header.
                        let n = len.min(self.end - self.start);
                        dst[..n].copy_from_slice(&self.rbuf[self.start..self.start + n]);
                        self.start += n;
                        n
                    } else {
                        // Straight from the socket into the caller's buffer.
                        let n = self.stream.read(dst)?;
                        if n == 0 {
                            self.client.handle_eof();
                            return Ok(());
                        }
                        n
                    };
                    self.client.handle_payload(n);
                    return Ok(());
                }
                None => {
                    if self.start < self.end {
                        let n = self.client.handle_input(&self.rbuf[self.start..self.end]);
                        self.start += n;
                        if n == 0 || self.start == self.end {
                            return Ok(());
                        }
                        continue;
                    }
                    let n = self.stream.read(&mut self.rbuf)?;
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

    /// Runs until `done` says so, returning the events seen (a READ's
    /// completion carries its buffer).
    fn run_until(
        &mut self,
        mut done: impl FnMut(&Event<Io>) -> bool,
    ) -> Result<Vec<Event<Io>>, String> {
        let mut seen = Vec::new();
        loop {
            self.flush().map_err(|e| e.to_string())?;
            while let Some(step) = self.client.poll_step() {
                let e = match step {
                    // The payload is in the buffer already.
                    Step::ReadData { .. } => continue,
                    // Nothing was received for a hole: zero it.
                    Step::ReadHole {
                        buf_offset,
                        len,
                        data,
                        ..
                    } => {
                        if let Io::Read(buf) = data {
                            let o = buf_offset as usize;
                            buf[o..o + len as usize].fill(0);
                        }
                        continue;
                    }
                    // The command will complete with the error.
                    Step::ReadError { .. } => continue,
                    Step::Extents {
                        cookie,
                        context_id,
                        extents,
                        ..
                    } => Event::Extents {
                        cookie,
                        context_id,
                        extents,
                    },
                    Step::Complete {
                        cookie,
                        result,
                        data,
                    } => Event::Complete {
                        cookie,
                        result,
                        data,
                    },
                    Step::Event(e) => e,
                };
                if let Event::Dead(why) = &e {
                    return Err(format!("connection died: {why}"));
                }
                let stop = done(&e);
                seen.push(e);
                if stop {
                    return Ok(seen);
                }
            }
            if !self.client.wants_read() {
                return Err("client is idle but the condition was not met".into());
            }
            self.read_some().map_err(|e| e.to_string())?;
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("blocking: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: blocking <socket|host:port> [export]")?;
    let export = args.next().unwrap_or_default();
    let stream: Box<dyn Stream> = if addr.contains('/') {
        Box::new(UnixStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?)
    } else {
        let s = TcpStream::connect(&addr).map_err(|e| format!("{addr}: {e}"))?;
        s.set_nodelay(true).ok();
        Box::new(s)
    };
    let config = {
        let mut config = Config::default();
        config.export_name = export;
        config.request_meta_contexts = vec!["base:allocation".into()];
        config
    };
    let mut d = Driver {
        client: Client::with_data(config),
        stream,
        rbuf: vec![0; 64 * 1024],
        start: 0,
        end: 0,
    };
    d.run_until(|e| matches!(e, Event::Ready))?;
    let size = d.client.export().size;
    println!(
        "connected: size {size}, flags 0x{:x}, structured {}, extended {}",
        d.client.export().flags,
        d.client.structured_replies(),
        d.client.extended_headers()
    );
    let len = (1024 * 1024).min(size as usize);
    let pattern: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();

    // Write with the payload referenced (Segment::External), then read back.
    let mut w = Command::new(CommandKind::Write, 0, len as u64);
    w.payload = nbd_proto::client::Payload::External;
    let wc = d
        .client
        .submit_with(w, Io::Write(pattern.clone()))
        .map_err(|(e, _)| e.to_string())?;
    wait_ok(&mut d, wc)?;
    let rc = d
        .client
        .submit_with(
            Command::new(CommandKind::Read, 0, len as u64),
            Io::Read(vec![0u8; len]),
        )
        .map_err(|(e, _)| e.to_string())?;
    let events = wait_ok(&mut d, rc)?;
    let Some(Event::Complete {
        data: Io::Read(back),
        ..
    }) = events.last()
    else {
        return Err("the read gave no buffer back".into());
    };
    if *back != pattern {
        return Err("read back data differs from what was written".into());
    }
    println!("wrote and read back {len} bytes: data verified");

    if let Some(id) = d.client.meta_context_id("base:allocation") {
        let bc = d
            .client
            .submit(Command::new(CommandKind::BlockStatus, 0, size))
            .map_err(|e| e.to_string())?;
        let events = wait_ok(&mut d, bc)?;
        let n: usize = events
            .iter()
            .filter_map(|e| match e {
                Event::Extents {
                    context_id,
                    extents,
                    ..
                } if *context_id == id => Some(extents.len()),
                _ => None,
            })
            .sum();
        println!("block status: {n} extents");
    }
    d.client.shutdown().map_err(|e| e.to_string())?;
    d.run_until(|e| matches!(e, Event::Closed))?;
    println!("disconnected");
    Ok(())
}

fn wait_ok(d: &mut Driver, cookie: u64) -> Result<Vec<Event<Io>>, String> {
    let events = d.run_until(|e| matches!(e, Event::Complete { cookie: c, .. } if *c == cookie))?;
    match events.last() {
        Some(Event::Complete { result: Ok(()), .. }) => Ok(events),
        Some(Event::Complete { result: Err(e), .. }) => {
            Err(format!("command failed: {} ({})", e.message, e.errno))
        }
        _ => Err("no completion".into()),
    }
}
