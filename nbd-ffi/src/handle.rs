//! The handle (`struct nbd_handle`): creation, closing, the lock every call
//! takes, and the settings that belong to the handle itself (name, private
//! data) or to the library (package name, version).
//!
//! A handle is a [`Handle`] in a `Box`, given to C as an opaque pointer. All
//! of its state sits in one `HandleInner` behind one `Mutex`: every call
//! locks it through `Handle::call`, which is also where debug traces are
//! written, and holds it for its whole duration except while a synchronous
//! call waits for the socket (`crate::wait`): then the lock is released
//! around the blocking `poll(2)` so that other threads' calls on the handle
//! go on. No threads are created.

use crate::errors::Error;
use crate::panic::CReturn;
use crate::ptr;
use crate::settings::{
    CommandSettings, DebugSettings, NegotiationSettings, TlsSettings, UriPolicy,
};
use crate::state::State;
use std::ffi::{CStr, CString};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// `struct nbd_handle`: one client connection and its settings. Opaque to C.
#[derive(Debug)]
pub struct Handle {
    inner: Mutex<HandleInner>,
    /// Signalled by the thread that polled the socket, once it has done the
    /// I/O (other waiting threads re-check their condition).
    pub(crate) woken: Condvar,
}

/// The handle locked by one API call: derefs to [`HandleInner`]. A
/// synchronous call may give the lock up while it waits
/// ([`crate::wait`]); nothing else can, and nothing can reach the inner
/// state through it meanwhile.
#[derive(Debug)]
pub(crate) struct Locked<'a> {
    pub(crate) handle: &'a Handle,
    /// `None` only while the lock is given up inside a wait.
    pub(crate) guard: Option<MutexGuard<'a, HandleInner>>,
}

impl Deref for Locked<'_> {
    type Target = HandleInner;
    fn deref(&self) -> &HandleInner {
        match self.guard.as_deref() {
            Some(inner) => inner,
            // Only the wait takes the guard, and it puts it back before
            // anything else runs.
            None => unreachable!("handle used while its lock is given up"),
        }
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut HandleInner {
        match self.guard.as_deref_mut() {
            Some(inner) => inner,
            None => unreachable!("handle used while its lock is given up"),
        }
    }
}

impl Locked<'_> {
    /// Takes the lock again after a wait (a poisoned lock too: the state
    /// is the engine's, which a panic elsewhere leaves consistent enough to
    /// fail the call).
    pub(crate) fn relock(&mut self) {
        if self.guard.is_none() {
            let g = self
                .handle
                .inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.guard = Some(g);
        }
    }
}

/// Everything a handle holds, guarded by the handle's lock.
#[derive(Debug)]
pub(crate) struct HandleInner {
    /// The name used in debug messages.
    pub(crate) name: CString,
    /// The application's `nbd_set_private_data` value.
    pub(crate) private_data: usize,
    /// The connection: protocol state machine, socket, commands in flight.
    pub(crate) engine: crate::engine::Engine,
    /// Where the handle connected, as a URI (for `nbd_get_uri`).
    pub(crate) connected_uri: Option<crate::uri::NbdUri>,
    /// `nbd_set_debug` and the debug callback.
    pub(crate) debug: DebugSettings,
    /// What the handshake asks the server for.
    pub(crate) negotiation: NegotiationSettings,
    /// How data commands are checked and prepared.
    pub(crate) commands: CommandSettings,
    /// TLS settings (stored; this build cannot use TLS).
    pub(crate) tls: TlsSettings,
    /// What `nbd_connect_uri` accepts.
    pub(crate) uri_policy: UriPolicy,
    /// Connection settings (the socket activation name).
    pub(crate) connect: crate::connect::ConnectSettings,
    /// Threads waiting on the socket ([`crate::wait`]).
    pub(crate) wait: crate::wait::WaitState,
}

/// Numbers the default handle names "nbd1", "nbd2", ... for the process.
static HANDLE_COUNTER: AtomicU64 = AtomicU64::new(1);

impl Handle {
    fn new() -> Self {
        let n = HANDLE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = CString::new(format!("nbd{n}")).unwrap_or_default();
        Handle {
            inner: Mutex::new(HandleInner {
                name,
                private_data: 0,
                engine: crate::engine::Engine::new(),
                connected_uri: None,
                debug: DebugSettings::from_env(),
                negotiation: NegotiationSettings::default(),
                commands: CommandSettings::default(),
                tls: TlsSettings::default(),
                uri_policy: UriPolicy::default(),
                connect: crate::connect::ConnectSettings::default(),
                wait: crate::wait::WaitState::default(),
            }),
            woken: Condvar::new(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, HandleInner>, Error> {
        self.inner.lock().map_err(|_| Error::Poisoned)
    }

    /// Runs `body` as the API call `fname` with the handle locked, tracing
    /// `enter: <args>` and the result when debugging is on. `args` is only
    /// evaluated for the trace.
    pub(crate) fn call<R: CReturn>(
        &self,
        fname: &'static str,
        args: impl FnOnce() -> String,
        body: impl FnOnce(&mut Locked<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let guard = self.lock()?;
        let mut inner = Locked {
            handle: self,
            guard: Some(guard),
        };
        if inner.debug.enabled {
            let args = args();
            let msg = if args.is_empty() {
                "enter:".to_string()
            } else {
                format!("enter: {args}")
            };
            inner.trace(fname, &msg);
        }
        let result = body(&mut inner);
        inner.relock();
        // A thread blocked in poll(2) on this handle learns of a connection
        // this call ended.
        inner.wake_poller_if_ended();
        if inner.debug.enabled {
            let msg = match &result {
                Ok(value) => format!("leave: ret={}", value.trace()),
                Err(error) => {
                    let (_, text) = crate::errors::message(fname, error);
                    format!("leave: error={}", crate::debug::quote(text.as_bytes()))
                }
            };
            inner.trace(fname, &msg);
        }
        result
    }
}

impl HandleInner {
    /// Where the connection is, in the seven states the C API shows.
    pub(crate) fn state(&self) -> State {
        use nbd_proto::client::State as S;
        match self.engine.state() {
            None => State::Created,
            Some(S::Connecting) => State::Connecting,
            Some(S::Negotiating) => State::Negotiating,
            // libnbd is "processing" only while it writes a request or
            // reads a reply; waiting for replies is "ready"
            // (nbd_aio_is_processing(3)).
            Some(S::Ready | S::Processing) => match self.engine.client() {
                Some(c) if c.mid_message() => State::Processing,
                _ => State::Ready,
            },
            Some(S::Closed) => State::Closed,
            Some(S::Dead) => State::Dead,
        }
    }

    /// Emits a debug message from the API function `context`.
    pub(crate) fn trace(&self, context: &str, msg: &str) {
        self.debug.emit(&self.name, context, msg);
    }
}

/// Creates a new handle, not connected, with default settings. Returns NULL
/// (with the error set) only if the library cannot allocate one.
///
/// # Safety
///
/// Always safe to call; the handle must eventually be passed to `nbd_close`.
#[no_mangle]
pub unsafe extern "C" fn nbd_create() -> *mut Handle {
    ffi_boundary!("nbd_create", |fname| {
        let handle = Box::new(Handle::new());
        if let Ok(inner) = handle.lock() {
            inner.trace(fname, "opening handle");
        }
        Ok(Box::into_raw(handle))
    })
}

/// Closes the handle and frees everything it holds, calling the `free`
/// function of every callback it still stores. NULL is ignored.
///
/// # Safety
///
/// `h` must be NULL or a handle from `nbd_create` that is still open, and no
/// other thread may be using it. It must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn nbd_close(h: *mut Handle) {
    ffi_boundary!("nbd_close", |fname| {
        // SAFETY: h is NULL or open and unused elsewhere (see # Safety).
        if let Some(handle) = unsafe { ptr::take_handle(h) } {
            // Close even a handle whose lock an earlier panic poisoned.
            let inner = handle
                .inner
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner);
            inner.trace(fname, "closing handle");
            // Dropping inner releases the stored callbacks (each free once).
            drop(inner);
        }
        Ok(())
    })
}

pub use crate::exports::handle::*;

/// The package name reported by `nbd_get_package_name`: programs compare it
/// with "libnbd", the API this library implements.
pub(crate) const PACKAGE_NAME: &CStr = c_str(b"libnbd\0");

/// The libnbd version whose API and ABI this library implements, reported by
/// `nbd_get_version` (programs compare it with the version they were built
/// for). It comes from `package.metadata.libnbd.version` in nbd-ffi's
/// Cargo.toml, through build.rs.
pub(crate) const LIBNBD_VERSION: &CStr =
    c_str(concat!(env!("NBD_LIBNBD_VERSION"), "\0").as_bytes());

/// This implementation's own name and release, reported by
/// `nbd_get_version_extra` (where libnbd's packagers put their build's
/// extra version): "nbd-rs " and the workspace version from Cargo.toml.
pub(crate) const VERSION_EXTRA: &CStr =
    c_str(concat!("nbd-rs ", env!("CARGO_PKG_VERSION"), "\0").as_bytes());

/// Builds a `&CStr` at compile time; a missing or early NUL stops the build.
const fn c_str(bytes: &'static [u8]) -> &'static CStr {
    match CStr::from_bytes_with_nul(bytes) {
        Ok(s) => s,
        Err(_) => panic!("bad C string constant"),
    }
}

/// `nbd_get_handle_size`: the bytes the handle holds, as far as the library
/// can count them: the handle itself, its strings and lists, and the
/// connection's buffers and commands in flight.
pub(crate) fn handle_size(inner: &mut HandleInner) -> Result<isize, Error> {
    let strings = |v: &[CString]| v.iter().map(|s| s.as_bytes_with_nul().len()).sum::<usize>();
    let opt = |s: &Option<CString>| s.as_ref().map_or(0, |s| s.as_bytes_with_nul().len());
    let n = &inner.negotiation;
    let size = std::mem::size_of::<Handle>()
        + inner.name.as_bytes_with_nul().len()
        + n.export_name.as_bytes_with_nul().len()
        + strings(&n.meta_contexts)
        + n.meta_contexts.capacity() * std::mem::size_of::<CString>()
        + opt(&inner.tls.certificates)
        + opt(&inner.tls.username)
        + opt(&inner.tls.psk_file)
        + inner.engine.heap_size();
    Ok(isize::try_from(size).unwrap_or(isize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_thread_safe() {
        // C programs share one handle between threads; the lock makes that
        // sound, and the type system agrees.
        fn shareable<T: Send + Sync>() {}
        shareable::<Handle>();
    }

    #[test]
    fn versions() {
        assert_eq!(PACKAGE_NAME.to_str().unwrap(), "libnbd");
        // "1.N.M" with N even: a stable libnbd release.
        let v: Vec<u32> = LIBNBD_VERSION
            .to_str()
            .unwrap()
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(v.len(), 3);
        assert_eq!((v[0], v[1] % 2), (1, 0));
        assert!(v[1] >= 24);
        assert_eq!(
            VERSION_EXTRA.to_str().unwrap(),
            format!("nbd-rs {}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn handle_names_count_up() {
        let a = Handle::new();
        let b = Handle::new();
        let na: u64 = a.lock().unwrap().name.to_str().unwrap()[3..]
            .parse()
            .unwrap();
        let nb: u64 = b.lock().unwrap().name.to_str().unwrap()[3..]
            .parse()
            .unwrap();
        assert!(nb > na);
    }
}
