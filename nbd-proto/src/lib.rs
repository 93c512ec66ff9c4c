//! A sans-IO implementation of the Network Block Device (NBD) protocol.
//!
//! This crate turns bytes into events and commands into bytes. It never touches
//! a socket, a file, a clock, a thread or the environment, so it runs under any
//! I/O model (blocking sockets, mio, tokio, io_uring) and replays exactly in
//! tests and fuzzers.
//!
//! * [`consts`]: the numbers of the wire protocol.
//! * [`wire`]: encode and decode of every message in both directions.
//! * [`client`]: the client state machine (handshake, option haggling in
//!   automatic or step-by-step mode, transmission with many commands in
//!   flight and a zero-copy data path).
//! * [`server`]: a server-side codec, for tests that script servers and for
//!   projects that embed a server.
//!
//! Without the default `std` feature the crate is `#![no_std]` and needs only
//! `alloc`.
//!
//! # Driving the client
//!
//! A [`client::Client`] does no I/O: the driver owns the socket, moves bytes
//! between it and the client, and acts on what the client reports. Each
//! command carries the driver's data (`U`, here the READ's buffer): the
//! client keeps it with the command, lends it back wherever the buffer is
//! needed and returns it on completion, so the driver keeps no table of its
//! own. The loop, over any blocking stream:
//!
//! ```no_run
//! use nbd_proto::client::{Client, Command, CommandKind, Config, Event, Segment, Step};
//! use std::io::{IoSlice, Read, Write};
//!
//! fn run(sock: &mut (impl Read + Write)) -> std::io::Result<Vec<u8>> {
//!     let mut c: Client<Vec<u8>> = Client::with_data(Config::default());
//!     let mut rbuf = vec![0u8; 64 * 1024];
//!     let (mut start, mut end) = (0, 0);
//!     let mut read = None;
//!     loop {
//!         // 1. Send what is pending (WRITE payload the driver holds comes
//!         //    as Segment::External, with the command's data lent).
//!         while c.wants_write() {
//!             let mut segs = [Segment::Bytes(&[]); 16];
//!             let n = c.transmit_segments(&mut segs);
//!             let iov: Vec<IoSlice<'_>> = segs[..n]
//!                 .iter()
//!                 .map(|s| match *s {
//!                     Segment::Bytes(b) => IoSlice::new(b),
//!                     Segment::External { buf_offset, len, data, .. } => {
//!                         let o = buf_offset as usize;
//!                         IoSlice::new(&data[o..o + len])
//!                     }
//!                 })
//!                 .collect();
//!             let sent = sock.write_vectored(&iov)?;
//!             c.advance_transmit(sent);
//!         }
//!         // 2. Act on every step; a hole must be zeroed by the driver.
//!         while let Some(step) = c.poll_step() {
//!             match step {
//!                 Step::Event(Event::Ready) => {
//!                     let cmd = Command::new(CommandKind::Read, 0, 4096);
//!                     c.submit_with(cmd, vec![0; 4096]).map_err(|(e, _)| {
//!                         std::io::Error::other(e.to_string())
//!                     })?;
//!                 }
//!                 Step::ReadHole { buf_offset, len, data, .. } => {
//!                     let o = buf_offset as usize;
//!                     data[o..o + len as usize].fill(0);
//!                 }
//!                 Step::Complete { result: Ok(()), data, .. } => read = Some(data),
//!                 Step::Complete { result: Err(e), .. } => {
//!                     return Err(std::io::Error::other(e.to_string()))
//!                 }
//!                 Step::Event(Event::Dead(e)) => return Err(std::io::Error::other(e.to_string())),
//!                 Step::Event(Event::Closed) => return Err(std::io::ErrorKind::NotConnected.into()),
//!                 _ => {}
//!             }
//!         }
//!         if let Some(data) = read.take() {
//!             return Ok(data);
//!         }
//!         // 3. Receive: READ payload straight into the command's buffer,
//!         //    protocol bytes into the driver's buffer for handle_input.
//!         if let Some(t) = c.payload_target() {
//!             let o = t.buf_offset as usize;
//!             let dst = &mut t.data[o..o + t.len];
//!             let n = if start < end {
//!                 let n = dst.len().min(end - start);
//!                 dst[..n].copy_from_slice(&rbuf[start..start + n]);
//!                 start += n;
//!                 n
//!             } else {
//!                 sock.read(dst)?
//!             };
//!             if n == 0 {
//!                 c.handle_eof();
//!             } else {
//!                 c.handle_payload(n);
//!             }
//!         } else if start < end {
//!             start += c.handle_input(&rbuf[start..end]);
//!         } else {
//!             let n = sock.read(&mut rbuf)?;
//!             (start, end) = (0, n);
//!             if n == 0 {
//!                 c.handle_eof();
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! The rules a driver must keep are on [`client::Client`]; a complete
//! driver is `examples/blocking.rs`.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod client;
pub mod consts;
pub mod server;
pub mod wire;
