//! NBD URIs: the parser and builder ([`NbdUri`]), the per-handle policy of
//! what `nbd_connect_uri` may accept (`nbd_set_uri_allow_*`), `nbd_get_uri`,
//! `nbd_is_uri` and `nbd_supports_uri`. The exports are generated from
//! `api/uri.api`.

mod parse;

pub use parse::{looks_like_uri, NbdUri, Transport, UriError, DEFAULT_PORT, DEFAULT_VSOCK_CID};

pub use crate::exports::uri::*;

use crate::constants::{
    LIBNBD_ALLOW_TRANSPORT_SSH, LIBNBD_ALLOW_TRANSPORT_TCP, LIBNBD_ALLOW_TRANSPORT_UNIX,
    LIBNBD_ALLOW_TRANSPORT_VSOCK, LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE,
};
use crate::errors::Error;
use crate::handle::HandleInner;
use crate::ptr::MallocStr;
use crate::settings::UriPolicy;
use crate::tls::check_tls_mode;
use std::ffi::{c_int, CStr};

impl UriPolicy {
    /// Checks a parsed URI against the policy (`EPERM` when refused).
    pub(crate) fn check(&self, uri: &NbdUri) -> Result<(), Error> {
        let bit = match uri.transport {
            Transport::Tcp { .. } => LIBNBD_ALLOW_TRANSPORT_TCP,
            Transport::Unix { .. } => LIBNBD_ALLOW_TRANSPORT_UNIX,
            Transport::Vsock { .. } => LIBNBD_ALLOW_TRANSPORT_VSOCK,
            Transport::Ssh { .. } => LIBNBD_ALLOW_TRANSPORT_SSH,
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
        if uri.tls_priority.is_some() && !self.tls_priority {
            return Err(Error::NotPermitted(
                "URI parameter tls-priority (overriding the TLS priority) is not allowed; \
                 nbd_set_uri_allow_tls_priority enables it"
                    .into(),
            ));
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

/// `nbd_set_uri_allow_tls`: whether URIs may, must, or must not ask for
/// TLS (`LIBNBD_TLS_*`).
pub(crate) fn set_uri_allow_tls(inner: &mut HandleInner, tls: c_int) -> Result<c_int, Error> {
    check_tls_mode("tls", tls)?;
    inner.uri_policy.tls = tls;
    Ok(0)
}

/// `nbd_is_uri`: whether `uri` looks like an NBD URI (its scheme is an NBD
/// one, in any case, followed by `://`); it is not parsed further.
pub(crate) fn is_uri(_inner: &mut HandleInner, uri: &CStr) -> Result<bool, Error> {
    Ok(std::str::from_utf8(uri.to_bytes()).is_ok_and(parse::looks_like_uri))
}

/// `nbd_get_uri`: a URI that would reach the same server and export with
/// the handle's current settings. Connections made without an address (a
/// socket, a command, an ssh tunnel) have none (`EINVAL`).
pub(crate) fn get_uri(inner: &mut HandleInner) -> Result<MallocStr, Error> {
    let base = inner.connected_uri.as_ref().ok_or(Error::Invalid(
        "cannot construct a URI for this kind of connection (a socket, a command or ssh)".into(),
    ))?;
    let tls = &inner.tls;
    let text = |s: &Option<std::ffi::CString>| s.as_ref().map(|c| c.to_string_lossy().into_owned());
    let mut uri = NbdUri::new(base.transport.clone());
    uri.tls = tls.mode == LIBNBD_TLS_REQUIRE;
    // The export is the one currently chosen (opt mode may change it).
    uri.export_name = inner.negotiation.export_name.to_string_lossy().into_owned();
    uri.username = text(&tls.username);
    uri.tls_certificates = text(&tls.certificates);
    uri.tls_psk_file = text(&tls.psk_file);
    uri.tls_verify_peer = (!tls.verify_peer).then_some(false);
    uri.tls_hostname = text(&tls.hostname);
    uri.tls_priority = tls
        .priority
        .as_ref()
        .map(|(t, _)| t.to_string_lossy().into_owned())
        .filter(|t| t != "NORMAL");
    let text = std::ffi::CString::new(uri.to_uri_string())
        .map_err(|_| Error::Invalid("the URI contains NUL".into()))?;
    MallocStr::new(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constants::LIBNBD_ALLOW_TRANSPORT_MASK;

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

    #[test]
    fn policy_for_1_24_parameters_and_ssh() {
        let mut p = UriPolicy::default();
        let e = prep(&p, "nbd://h/?tls-priority=NORMAL").unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
        p.tls_priority = true;
        assert_eq!(
            prep(&p, "nbd://h/?tls-priority=NORMAL")
                .unwrap()
                .tls_priority
                .as_deref(),
            Some("NORMAL")
        );
        // tls-hostname names no local file: always allowed.
        assert!(prep(&p, "nbds://h/?tls-hostname=x").is_ok());
        assert!(prep(&p, "nbd+ssh://h/").is_ok());
        p.transports = LIBNBD_ALLOW_TRANSPORT_MASK & !LIBNBD_ALLOW_TRANSPORT_SSH;
        assert_eq!(prep(&p, "nbd+ssh://h/").unwrap_err().errno(), libc::EPERM);
        assert!(prep(&p, "nbd://h/").is_ok());
    }
}
