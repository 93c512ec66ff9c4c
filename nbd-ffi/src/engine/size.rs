//! What the engine holds on the heap, for `nbd_get_handle_size`.

use super::{Cmd, Done, Engine};
use std::mem::size_of;

impl Engine {
    /// An estimate of the bytes the engine has allocated: its receive buffer,
    /// its tables of commands in flight and finished, and the error texts
    /// those hold. The protocol core's and OpenSSL's own allocations are
    /// counted by their fixed parts only.
    pub(crate) fn heap_size(&self) -> usize {
        let messages: usize = self
            .done
            .iter()
            .filter_map(|d| d.message.as_ref())
            .map(String::capacity)
            .sum();
        self.rbuf.capacity()
            + self.cmds.capacity() * (size_of::<u64>() + size_of::<Cmd>())
            + self.done.capacity() * size_of::<Done>()
            + messages
            + self
                .client
                .as_ref()
                .map_or(0, |_| size_of::<nbd_proto::client::Client>())
    }
}
