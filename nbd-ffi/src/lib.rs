//! The libnbd C ABI on top of `nbd-proto`.
