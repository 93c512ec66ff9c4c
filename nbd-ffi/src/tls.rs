//! TLS settings: `nbd_set_tls` (`LIBNBD_TLS_DISABLE`, `_ALLOW`,
//! `_REQUIRE`), certificates, peer verification, PSK username and key file,
//! the host name the server's certificate must carry, and the priority
//! string. They are taken when the handle connects (`TlsSettings::options`);
//! the engine's TLS layer (`engine::tls`, OpenSSL) uses them once the server
//! accepts `NBD_OPT_STARTTLS`. The exports are generated from `api/tls.api`.
//!
//! The TLS host name (`nbd_set_tls_hostname`, the `tls-hostname` URI
//! parameter) is sent as SNI and checked against the server's certificate
//! (when peer verification is on) instead of the host connected to; over a
//! Unix socket, a subprocess or an ssh tunnel there is no host name unless
//! one is set, and then no name check, as in libnbd.
//!
//! Priority strings are GnuTLS syntax in libnbd; see `tls::priority` for the
//! part that maps onto OpenSSL and what is refused.

pub(crate) mod priority;

use crate::constants::{LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE};
use crate::errors::Error;
use crate::handle::HandleInner;
use crate::ptr::MallocStr;
use crate::settings::TlsSettings;
use priority::Priority;
use std::ffi::{c_char, c_int, CStr, CString};

pub use crate::exports::tls::*;

/// What `nbd_get_tls_priority` returns when none was set: libnbd's
/// compile-time default.
const DEFAULT_PRIORITY: &CStr = c"NORMAL";

impl TlsSettings {
    /// What an NBD URI says about TLS: `nbds` schemes require it, and the
    /// query parameters (and a URI's user name) set the credentials.
    pub(crate) fn apply_uri(&mut self, uri: &crate::uri::NbdUri) -> Result<(), Error> {
        let c = |s: &str, what: &str| {
            CString::new(s).map_err(|_| Error::Invalid(format!("URI {what} contains NUL")))
        };
        if uri.tls {
            self.mode = LIBNBD_TLS_REQUIRE;
        }
        if let Some(dir) = &uri.tls_certificates {
            self.certificates = Some(c(dir, "tls-certificates")?);
        }
        if let Some(file) = &uri.tls_psk_file {
            self.psk_file = Some(c(file, "tls-psk-file")?);
        }
        // Through ssh the URI's user logs in to ssh; only tls-username is
        // the TLS user then.
        let authority_user = match uri.transport {
            crate::uri::Transport::Ssh { .. } => None,
            _ => uri.username.as_ref(),
        };
        if let Some(user) = uri.tls_username.as_ref().or(authority_user) {
            self.username = Some(c(user, "tls-username")?);
        }
        if let Some(verify) = uri.tls_verify_peer {
            self.verify_peer = verify;
        }
        if let Some(host) = &uri.tls_hostname {
            self.hostname = Some(c(host, "tls-hostname")?);
        }
        if let Some(text) = &uri.tls_priority {
            // The policy allowed it (uri::UriPolicy::check).
            self.set_priority(&c(text, "tls-priority")?)?;
        }
        Ok(())
    }

    /// Checks and stores a priority string (`EINVAL` if it cannot be
    /// honoured with OpenSSL).
    pub(crate) fn set_priority(&mut self, text: &CStr) -> Result<(), Error> {
        let s = text
            .to_str()
            .map_err(|_| Error::Invalid("the TLS priority string is not valid UTF-8".into()))?;
        let parsed = Priority::parse(s).map_err(Error::Invalid)?;
        self.priority = Some((text.to_owned(), parsed));
        Ok(())
    }

    /// The host name in effect: the one set, else the host connected to.
    fn effective_hostname(&self) -> Option<&CStr> {
        self.hostname
            .as_deref()
            .or(self.connect_hostname.as_deref())
    }

    /// What the engine needs to run TLS, or `None` with TLS disabled.
    pub(crate) fn options(&self) -> Result<Option<crate::engine::tls::TlsOptions>, Error> {
        use std::os::unix::ffi::OsStrExt;
        if self.mode == LIBNBD_TLS_DISABLE {
            return Ok(None);
        }
        let path =
            |s: &CString| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes()));
        // The username only matters with a PSK file; if the login name
        // cannot be found, the handshake fails (libnbd 1.24: the handle is
        // then dead), not the connect before connecting.
        let mut username_error = None;
        let username = match (&self.username, &self.psk_file) {
            (Some(u), _) => u.clone(),
            (None, Some(_)) => login_name().unwrap_or_else(|e| {
                username_error = Some(crate::errors::Cause::new(e.errno(), e.to_string()));
                CString::default()
            }),
            (None, None) => CString::default(),
        };
        Ok(Some(crate::engine::tls::TlsOptions {
            certificates: self.certificates.as_ref().map(path),
            verify_peer: self.verify_peer,
            username: username.to_string_lossy().into_owned(),
            username_error,
            psk_file: self.psk_file.as_ref().map(path),
            hostname: self
                .effective_hostname()
                .map(|h| h.to_string_lossy().into_owned()),
            priority: self.priority.as_ref().map(|(_, p)| p.clone()),
        }))
    }
}

/// Checks a `LIBNBD_TLS_*` parameter (`EINVAL` outside the set).
pub(crate) fn check_tls_mode(param: &'static str, tls: c_int) -> Result<(), Error> {
    if (LIBNBD_TLS_DISABLE..=LIBNBD_TLS_REQUIRE).contains(&tls) {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            param,
            value: tls.into(),
        })
    }
}

extern "C" {
    // POSIX; the libc crate does not bind it.
    fn getlogin_r(buf: *mut c_char, bufsize: libc::size_t) -> c_int;
}

/// The default PSK username: `$LOGNAME`, else the login name of the process.
fn login_name() -> Result<CString, Error> {
    if let Some(name) = std::env::var_os("LOGNAME").filter(|v| !v.is_empty()) {
        use std::os::unix::ffi::OsStringExt;
        return CString::new(name.into_vec())
            .map_err(|_| Error::Invalid("LOGNAME contains a NUL byte".to_string()));
    }
    let mut buf = vec![0u8; 256];
    // SAFETY: buf is writable for buf.len() bytes; getlogin_r writes a
    // NUL-terminated name of at most that size or returns an error number.
    let rc = unsafe { getlogin_r(buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
    if rc != 0 {
        // No controlling terminal (daemons, CI): no default, as in libnbd
        // 1.24, which does not fall back to `$USER` either.
        return Err(Error::Os {
            context: "getlogin_r",
            errno: rc,
        });
    }
    let name = CStr::from_bytes_until_nul(&buf).map_err(|_| Error::Os {
        context: "getlogin_r",
        errno: libc::ERANGE,
    })?;
    Ok(name.to_owned())
}

/// `nbd_set_tls`: `LIBNBD_TLS_DISABLE`, `_ALLOW` (if the server offers
/// it) or `_REQUIRE` (fail rather than go on in clear).
pub(crate) fn set_tls(inner: &mut HandleInner, tls: c_int) -> Result<c_int, Error> {
    check_tls_mode("tls", tls)?;
    inner.tls.mode = tls;
    Ok(0)
}

/// `nbd_get_tls_username`: the one set, else `$LOGNAME`, else the login
/// name.
pub(crate) fn get_tls_username(inner: &mut HandleInner) -> Result<MallocStr, Error> {
    match &inner.tls.username {
        Some(name) => MallocStr::new(name),
        None => MallocStr::new(&login_name()?),
    }
}

/// `nbd_get_tls_hostname`: the host name set, else the one the handle
/// connected to over TCP, else "".
pub(crate) fn get_tls_hostname(inner: &mut HandleInner) -> Result<MallocStr, Error> {
    MallocStr::new(inner.tls.effective_hostname().unwrap_or(c""))
}

/// `nbd_set_tls_priority`: a GnuTLS priority string, checked now against
/// what this library can map onto OpenSSL (see [`priority`]).
pub(crate) fn set_tls_priority(inner: &mut HandleInner, priority: &CStr) -> Result<c_int, Error> {
    inner.tls.set_priority(priority)?;
    Ok(0)
}

/// `nbd_get_tls_priority`: the string set, else "NORMAL" (libnbd's default).
pub(crate) fn get_tls_priority(inner: &mut HandleInner) -> Result<MallocStr, Error> {
    match &inner.tls.priority {
        Some((text, _)) => MallocStr::new(text),
        None => MallocStr::new(DEFAULT_PRIORITY),
    }
}
