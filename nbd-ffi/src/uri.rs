//! NBD URIs: the parser and builder ([`NbdUri`]), the per-handle policy of
//! what `nbd_connect_uri` may accept (`nbd_set_uri_allow_*`), and
//! `nbd_get_uri` / `nbd_supports_uri`.

mod parse;

pub use parse::{NbdUri, Transport, UriError, DEFAULT_PORT, DEFAULT_VSOCK_CID};

use crate::constants::{
    LIBNBD_ALLOW_TRANSPORT_MASK, LIBNBD_ALLOW_TRANSPORT_TCP, LIBNBD_ALLOW_TRANSPORT_UNIX,
    LIBNBD_ALLOW_TRANSPORT_VSOCK, LIBNBD_TLS_ALLOW, LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE,
};
use crate::errors::{check_flags, Error};
use crate::handle::Handle;
use crate::ptr::{self, MallocStr};
use crate::state::Permitted;
use crate::tls::check_tls_mode;
use std::ffi::{c_int, CStr};

/// What URIs a handle accepts.
#[derive(Debug)]
pub(crate) struct UriPolicy {
    /// `LIBNBD_ALLOW_TRANSPORT_*` bits.
    pub(crate) transports: u32,
    /// `LIBNBD_TLS_*`: forbid, allow or require `nbds` schemes.
    pub(crate) tls: c_int,
    /// Whether query parameters may name local files.
    pub(crate) local_file: bool,
}

impl Default for UriPolicy {
    /// libnbd's defaults: every transport, TLS or not, no local files.
    fn default() -> Self {
        UriPolicy {
            transports: LIBNBD_ALLOW_TRANSPORT_MASK,
            tls: LIBNBD_TLS_ALLOW,
            local_file: false,
        }
    }
}

impl UriPolicy {
    /// Checks a parsed URI against the policy (`EPERM` when refused).
    pub(crate) fn check(&self, uri: &NbdUri) -> Result<(), Error> {
        let bit = match uri.transport {
            Transport::Tcp { .. } => LIBNBD_ALLOW_TRANSPORT_TCP,
            Transport::Unix { .. } => LIBNBD_ALLOW_TRANSPORT_UNIX,
            Transport::Vsock { .. } => LIBNBD_ALLOW_TRANSPORT_VSOCK,
        };
        if self.transports & bit == 0 {
            return Err(Error::NotPermitted(format!(
                "URI transport {} is not allowed on this handle",
                uri.scheme()
            )));
        }
        let tls_ok = match self.tls {
            LIBNBD_TLS_DISABLE => !uri.tls,
            LIBNBD_TLS_REQUIRE => uri.tls,
            _ => true,
        };
        if !tls_ok {
            return Err(Error::NotPermitted(format!(
                "URI TLS setting {} is not allowed on this handle",
                uri.scheme()
            )));
        }
        if !self.local_file {
            for (param, value) in [
                ("tls-certificates", &uri.tls_certificates),
                ("tls-psk-file", &uri.tls_psk_file),
            ] {
                if value.is_some() {
                    return Err(Error::NotPermitted(format!(
                        "URI parameter {param} names a local file, which needs \
                         nbd_set_uri_allow_local_file"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Parses `uri` and applies the handle's policy: what `nbd_connect_uri` does
/// before connecting.
pub(crate) fn prepare_connect(policy: &UriPolicy, uri: &CStr) -> Result<NbdUri, Error> {
    let text = uri
        .to_str()
        .map_err(|_| Error::Invalid("the URI is not valid UTF-8".to_string()))?;
    let parsed =
        NbdUri::parse(text).map_err(|e| Error::Invalid(format!("invalid NBD URI: {e}")))?;
    policy.check(&parsed)?;
    Ok(parsed)
}

/// Chooses which transports URIs may use (`LIBNBD_ALLOW_TRANSPORT_*`).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_uri_allow_transports(h: *mut Handle, mask: u32) -> c_int {
    ffi_boundary!("nbd_set_uri_allow_transports", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("mask=0x{mask:x}"),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                check_flags("mask", mask, LIBNBD_ALLOW_TRANSPORT_MASK)?;
                inner.uri_policy.transports = mask;
                Ok(0)
            },
        )
    })
}

/// Chooses whether URIs may, must, or must not ask for TLS (`LIBNBD_TLS_*`).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_uri_allow_tls(h: *mut Handle, tls: c_int) -> c_int {
    ffi_boundary!("nbd_set_uri_allow_tls", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("tls={tls}"),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                check_tls_mode("tls", tls)?;
                inner.uri_policy.tls = tls;
                Ok(0)
            },
        )
    })
}

/// Chooses whether URIs may name local files (default: no).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_uri_allow_local_file(h: *mut Handle, allow: bool) -> c_int {
    ffi_boundary!("nbd_set_uri_allow_local_file", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("allow={allow}"),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                inner.uri_policy.local_file = allow;
                Ok(0)
            },
        )
    })
}

/// Returns 1: this build understands NBD URIs.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_supports_uri(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_supports_uri", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |_| Ok(true))
    })
}

/// Returns a URI that would reach the same server and export (the caller
/// must `free` it).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_uri(h: *mut Handle) -> *mut libc::c_char {
    ffi_boundary!("nbd_get_uri", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Permitted::STARTED.check(inner.state())?;
            // Connections made without an address (a socket or a command the
            // caller gave) have no URI.
            let uri = inner.connected_uri.as_ref().ok_or(Error::Invalid(
                "there is no URI for this kind of connection (a socket or a command)".into(),
            ))?;
            // The export is the one currently chosen (opt mode may change it).
            let mut uri = uri.clone();
            uri.export_name = inner.negotiation.export_name.to_string_lossy().into_owned();
            let text = std::ffi::CString::new(uri.to_uri_string())
                .map_err(|_| Error::Invalid("the URI contains NUL".into()))?;
            MallocStr::new(&text)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(policy: &UriPolicy, uri: &str) -> Result<NbdUri, Error> {
        prepare_connect(policy, &std::ffi::CString::new(uri).unwrap())
    }

    #[test]
    fn policy() {
        let mut p = UriPolicy::default();
        assert!(prep(&p, "nbd://h/").is_ok());
        assert!(prep(&p, "nbds://h/").unwrap().tls);
        assert_eq!(
            prep(&p, "nbd://h/?tls-psk-file=/x").unwrap_err().errno(),
            libc::EPERM
        );
        assert_eq!(prep(&p, "http://h/").unwrap_err().errno(), libc::EINVAL);
        p.transports = LIBNBD_ALLOW_TRANSPORT_UNIX;
        assert_eq!(prep(&p, "nbd://h/").unwrap_err().errno(), libc::EPERM);
        p.transports = LIBNBD_ALLOW_TRANSPORT_MASK;
        p.tls = LIBNBD_TLS_REQUIRE;
        assert_eq!(prep(&p, "nbd://h/").unwrap_err().errno(), libc::EPERM);
        assert!(prep(&p, "nbds+unix:///?socket=/s").is_ok());
        p.tls = LIBNBD_TLS_DISABLE;
        assert_eq!(prep(&p, "nbds://h/").unwrap_err().errno(), libc::EPERM);
        p.local_file = true;
        assert!(prep(&p, "nbd://h/?tls-certificates=/x").is_ok());
    }
}
