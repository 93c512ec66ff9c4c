//! The libnbd C ABI on top of `nbd-proto`.
//!
//! This crate builds as a static library that `build-so.sh` links into
//! `libnbd.so.0`, exporting exactly libnbd 1.24's 165 functions with
//! libnbd's symbol versions; `include/libnbd.h` is generated from it by
//! cbindgen.
//!
//! The exports are declared once, in the API table (`api/*.api`), from which
//! `build.rs` generates [`exports`] (each export's boilerplate: panic
//! boundary, handle lock, debug trace, state and argument checks), the
//! `LIBNBD_HAVE_*` macros and the linker version script.
//!
//! Layout: the infrastructure every export uses (`panic`'s boundary
//! macro, `errors`, `ptr`, `text`: these depend on nothing else of the
//! crate; then `callbacks`, `state`), then one module per
//! family of libnbd calls: `handle`, `debug`, `negotiation`, `tls`, `uri`,
//! `opt`, `connect`, `info`, `commands`, `aio`. The public Rust items are
//! the C ABI itself (`extern "C"` functions, `#[repr(C)]` callback structs,
//! `LIBNBD_*` constants) plus the pure-Rust URI parser.

#![deny(unsafe_op_in_unsafe_fn)]
// Every unsafe block states why it is sound (checked by clippy).
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
pub mod panic;

pub mod aio;
pub mod commands;
pub mod connect;
pub mod debug;
pub mod errors;
pub mod ext;
pub mod handle;
pub mod info;
pub mod negotiation;
pub mod opt;
pub mod state;
pub mod tls;
pub mod uri;

pub mod callbacks;
pub mod constants;
mod engine;
pub mod exports;
mod hooks;
mod ptr;
mod settings;
mod text;
pub(crate) mod wait;
