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
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod client;
pub mod consts;
pub mod server;
pub mod wire;
