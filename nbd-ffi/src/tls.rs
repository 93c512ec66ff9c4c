//! TLS settings: `nbd_set_tls` (`LIBNBD_TLS_DISABLE`, `_ALLOW`,
//! `_REQUIRE`), certificates, peer verification, PSK username and key file.
//! They are taken when the handle connects ([`TlsSettings::options`]); the
//! engine's TLS layer (`engine::tls`, OpenSSL) uses them once the server
//! accepts `NBD_OPT_STARTTLS`.

use crate::constants::{LIBNBD_TLS_DISABLE, LIBNBD_TLS_REQUIRE};
use crate::debug::quote_opt;
use crate::errors::Error;
use crate::handle::Handle;
use crate::ptr::{self, MallocStr};
use crate::state::Permitted;
use std::ffi::{c_char, c_int, CStr, CString};

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
        }
    }
}

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
        if let Some(user) = uri.tls_username.as_ref().or(uri.username.as_ref()) {
            self.username = Some(c(user, "tls-username")?);
        }
        if let Some(verify) = uri.tls_verify_peer {
            self.verify_peer = verify;
        }
        Ok(())
    }

    /// What the engine needs to run TLS, or `None` with TLS disabled.
    /// `hostname` is the server's name when the caller gave one (TCP).
    pub(crate) fn options(
        &self,
        hostname: Option<String>,
    ) -> Result<Option<crate::engine::tls::TlsOptions>, Error> {
        use std::os::unix::ffi::OsStrExt;
        if self.mode == LIBNBD_TLS_DISABLE {
            return Ok(None);
        }
        let path =
            |s: &CString| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes()));
        // The username only matters with a PSK file.
        let username = match (&self.username, &self.psk_file) {
            (Some(u), _) => u.clone(),
            (None, Some(_)) => login_name()?,
            (None, None) => CString::default(),
        };
        Ok(Some(crate::engine::tls::TlsOptions {
            certificates: self.certificates.as_ref().map(path),
            verify_peer: self.verify_peer,
            username: username.to_string_lossy().into_owned(),
            psk_file: self.psk_file.as_ref().map(path),
            hostname,
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
        // No controlling terminal (daemons, CI): the user's name will do.
        if let Some(user) = std::env::var_os("USER").filter(|v| !v.is_empty()) {
            use std::os::unix::ffi::OsStringExt;
            return CString::new(user.into_vec())
                .map_err(|_| Error::Invalid("USER contains a NUL byte".to_string()));
        }
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

/// Chooses whether to use TLS: `LIBNBD_TLS_DISABLE`, `_ALLOW` (if the
/// server offers it) or `_REQUIRE` (fail rather than go on in clear).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_tls(h: *mut Handle, tls: c_int) -> c_int {
    ffi_boundary!("nbd_set_tls", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("tls={tls}"),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                check_tls_mode("tls", tls)?;
                inner.tls.mode = tls;
                Ok(0)
            },
        )
    })
}

/// Returns the TLS mode requested (`LIBNBD_TLS_*`).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_tls(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_tls", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| Ok(inner.tls.mode))
    })
}

/// Returns 1 if the connection uses TLS, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_tls_negotiated(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_tls_negotiated", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| {
            Permitted::HANDSHAKE_KNOWN.check(inner.state())?;
            Ok(c_int::from(
                inner.engine.client().is_some_and(|c| c.tls_negotiated()),
            ))
        })
    })
}

/// Sets the directory to read TLS certificates from.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `dir` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_tls_certificates(h: *mut Handle, dir: *const c_char) -> c_int {
    ffi_boundary!("nbd_set_tls_certificates", |fname| {
        // SAFETY: dir is NULL or a C string (see # Safety).
        let dir = unsafe { ptr::opt_cstr(dir) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("dir={}", quote_opt(dir)),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                inner.tls.certificates = Some(ptr::required(dir, "dir")?.to_owned());
                Ok(0)
            },
        )
    })
}

/// Chooses whether the server's certificate is verified (default: yes).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_tls_verify_peer(h: *mut Handle, verify: bool) -> c_int {
    ffi_boundary!("nbd_set_tls_verify_peer", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("verify={verify}"),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                inner.tls.verify_peer = verify;
                Ok(0)
            },
        )
    })
}

/// Returns 1 if the server's certificate will be verified, else 0.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_tls_verify_peer(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_get_tls_verify_peer", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| Ok(inner.tls.verify_peer))
    })
}

/// Sets the username for TLS pre-shared key authentication.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `username` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_tls_username(h: *mut Handle, username: *const c_char) -> c_int {
    ffi_boundary!("nbd_set_tls_username", |fname| {
        // SAFETY: username is NULL or a C string (see # Safety).
        let username = unsafe { ptr::opt_cstr(username) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("username={}", quote_opt(username)),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                inner.tls.username = Some(ptr::required(username, "username")?.to_owned());
                Ok(0)
            },
        )
    })
}

/// Returns a copy of the TLS username (the one set, else `$LOGNAME`, else
/// the login name); the caller must `free` it.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_get_tls_username(h: *mut Handle) -> *mut c_char {
    ffi_boundary!("nbd_get_tls_username", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |inner| match &inner.tls.username {
            Some(name) => MallocStr::new(name),
            None => MallocStr::new(&login_name()?),
        })
    })
}

/// Sets the file of pre-shared keys for TLS PSK authentication.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open;
/// `filename` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn nbd_set_tls_psk_file(h: *mut Handle, filename: *const c_char) -> c_int {
    ffi_boundary!("nbd_set_tls_psk_file", |fname| {
        // SAFETY: filename is NULL or a C string (see # Safety).
        let filename = unsafe { ptr::opt_cstr(filename) };
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(
            fname,
            || format!("filename={}", quote_opt(filename)),
            |inner| {
                Permitted::CREATED.check(inner.state())?;
                inner.tls.psk_file = Some(ptr::required(filename, "filename")?.to_owned());
                Ok(0)
            },
        )
    })
}

/// Returns 1: this library supports TLS (OpenSSL).
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open.
#[no_mangle]
pub unsafe extern "C" fn nbd_supports_tls(h: *mut Handle) -> c_int {
    ffi_boundary!("nbd_supports_tls", |fname| {
        // SAFETY: h is NULL or open (see # Safety).
        let h = unsafe { ptr::handle(h) }?;
        h.call(fname, String::new, |_| Ok(true))
    })
}
