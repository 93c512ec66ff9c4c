//! What the engine holds on the heap, for `nbd_get_handle_size`.

use super::{Cmd, Engine, ProtoClient};
use std::mem::size_of;

impl Engine {
    /// An estimate of the bytes the engine has allocated: its receive buffer
    /// and its tables of commands in flight and finished (fixed-size
    /// records: no server text is kept). The protocol core's and OpenSSL's
    /// own allocations are counted by their fixed parts only.
    pub(crate) fn heap_size(&self) -> usize {
        self.rbuf.capacity()
            + self.in_flight() * (size_of::<u64>() + size_of::<Cmd>())
            + self.done.heap_size()
            + self.client.as_ref().map_or(0, |_| size_of::<ProtoClient>())
    }
}
