//! The settings a handle carries, one plain struct per family, with
//! libnbd's defaults. The families' modules act on them; the handle only
//! holds them, so `handle.rs` depends on this module alone.

use crate::callbacks::{DebugCallback, Owned};
use crate::constants::*;
use crate::tls::priority::Priority;
use std::ffi::{c_int, CString};

/// The command settings of one handle.
#[derive(Debug)]
pub(crate) struct CommandSettings {
    /// `LIBNBD_STRICT_*` checks done on the client side.
    pub(crate) strict_mode: u32,
    /// Whether read buffers are zeroed before anything else happens.
    pub(crate) pread_initialize: bool,
}

impl Default for CommandSettings {
    /// libnbd's defaults: every strictness check on, buffers zeroed.
    fn default() -> Self {
        CommandSettings {
            strict_mode: LIBNBD_STRICT_MASK,
            pread_initialize: true,
        }
    }
}

/// The debug settings of one handle.
#[derive(Debug)]
pub(crate) struct DebugSettings {
    /// Whether messages are produced at all.
    pub(crate) enabled: bool,
    /// Where they go instead of stderr.
    pub(crate) callback: Option<Owned<DebugCallback>>,
}

/// The handshake settings of one handle.
#[derive(Debug)]
pub(crate) struct NegotiationSettings {
    /// The export to ask for; empty means the server's default export.
    pub(crate) export_name: CString,
    /// Whether to ask for structured replies.
    pub(crate) request_structured_replies: bool,
    /// Whether to ask for extended headers (ignored without structured
    /// replies, which they imply).
    pub(crate) request_extended_headers: bool,
    /// Whether connecting (or `nbd_opt_go`/`nbd_opt_info`) selects the
    /// contexts of `meta_contexts` with `NBD_OPT_SET_META_CONTEXT` first.
    pub(crate) request_meta_context: bool,
    /// `LIBNBD_HANDSHAKE_FLAG_*` bits the client is willing to use.
    pub(crate) handshake_flags: u32,
    /// Whether to ask for the export's name and description too.
    pub(crate) full_info: bool,
    /// Whether to ask for block size constraints.
    pub(crate) request_block_size: bool,
    /// Metadata contexts to request, in order.
    pub(crate) meta_contexts: Vec<CString>,
    /// Whether connecting stops in the negotiating state (opt mode).
    pub(crate) opt_mode: bool,
}

impl Default for NegotiationSettings {
    /// libnbd's defaults for a new handle.
    fn default() -> Self {
        NegotiationSettings {
            export_name: CString::default(),
            request_structured_replies: true,
            request_extended_headers: true,
            request_meta_context: true,
            handshake_flags: LIBNBD_HANDSHAKE_FLAG_MASK,
            full_info: false,
            request_block_size: true,
            meta_contexts: Vec::new(),
            opt_mode: false,
        }
    }
}

/// The TLS settings of one handle.
#[derive(Debug)]
pub(crate) struct TlsSettings {
    /// One of `LIBNBD_TLS_*`.
    pub(crate) mode: c_int,
    /// Directory holding certificates, if set.
    pub(crate) certificates: Option<CString>,
    /// Whether to verify the server's certificate.
    pub(crate) verify_peer: bool,
    /// PSK username, if set (otherwise the login name is used).
    pub(crate) username: Option<CString>,
    /// PSK key file, if set.
    pub(crate) psk_file: Option<CString>,
    /// `nbd_set_tls_hostname`: the name the server's certificate must
    /// carry, in preference to the host connected to.
    pub(crate) hostname: Option<CString>,
    /// The host name the handle connected to (TCP), once connecting.
    pub(crate) connect_hostname: Option<CString>,
    /// `nbd_set_tls_priority`: the string as set, and what it means.
    pub(crate) priority: Option<(CString, Priority)>,
}

impl Default for TlsSettings {
    /// libnbd's defaults: TLS off, peer verification on.
    fn default() -> Self {
        TlsSettings {
            mode: LIBNBD_TLS_DISABLE,
            certificates: None,
            verify_peer: true,
            username: None,
            psk_file: None,
            hostname: None,
            connect_hostname: None,
            priority: None,
        }
    }
}

/// What URIs a handle accepts.
#[derive(Debug)]
pub(crate) struct UriPolicy {
    /// `LIBNBD_ALLOW_TRANSPORT_*` bits.
    pub(crate) transports: u32,
    /// `LIBNBD_TLS_*`: forbid, allow or require `nbds` schemes.
    pub(crate) tls: c_int,
    /// Whether query parameters may name local files.
    pub(crate) local_file: bool,
    /// Whether the `tls-priority` parameter is accepted.
    pub(crate) tls_priority: bool,
}

impl Default for UriPolicy {
    /// libnbd's defaults: every transport, TLS or not, no local files, no
    /// TLS priority.
    fn default() -> Self {
        UriPolicy {
            transports: LIBNBD_ALLOW_TRANSPORT_MASK,
            tls: LIBNBD_TLS_ALLOW,
            local_file: false,
            tls_priority: false,
        }
    }
}
