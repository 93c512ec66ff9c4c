//! Connecting, failing, closing: the life of the connection, its child
//! process and socket-activation directory.

use super::{transport, Engine, EngineError};
use nbd_proto::client::{Client, Config, State};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

impl Engine {
    /// Starts a connection on a socket that may still be connecting.
    pub(crate) fn start(
        &mut self,
        config: Config,
        pending: transport::Pending,
    ) -> Result<(), EngineError> {
        self.config = Some(Box::new(config));
        if pending.in_progress {
            self.pending = Some(pending);
            Ok(())
        } else {
            self.attach(pending.fd);
            Ok(())
        }
    }

    /// Starts a connection on an already connected socket.
    pub(crate) fn start_connected(&mut self, config: Config, fd: OwnedFd) {
        self.config = Some(Box::new(config));
        self.attach(fd);
    }

    /// The process ID of the connection's child process, if it has one
    /// (`nbd_get_subprocess_pid`).
    pub(crate) fn child_pid(&self) -> Option<libc::pid_t> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Records the child process of the connection.
    pub(crate) fn set_child(&mut self, child: transport::Child, dir: Option<PathBuf>) {
        self.child = Some(child);
        self.activation_dir = dir;
    }

    fn attach(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
        // The client takes the settings over: the engine keeps no copy.
        let config = self.config.take().map(|c| *c).unwrap_or_default();
        self.client = Some(Client::with_data(config));
    }

    /// Completes a pending non-blocking connect once the socket is writable.
    pub(super) fn finish_connect(&mut self) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        match transport::connect_result(&p.fd) {
            Ok(()) => self.attach(p.fd),
            Err(e) => {
                if p.fallbacks.is_empty() {
                    self.fail_connect(p.tcp, EngineError::io(&e, "connect"));
                } else {
                    let rest = std::mem::take(&mut p.fallbacks);
                    match transport::connect_addrs(rest) {
                        Ok(next) => {
                            if next.in_progress {
                                self.pending = Some(next);
                            } else {
                                self.attach(next.fd);
                            }
                        }
                        Err(e) => self.fail_connect(true, EngineError::io(&e, "connect")),
                    }
                }
            }
        }
    }

    /// A connect that failed on every address. A TCP connect leaves the
    /// handle newly created, as libnbd 1.24 does (a later connect may be
    /// tried); the call that saw it reports `e` ([`Engine::take_start_error`]).
    /// Any other makes the handle dead.
    fn fail_connect(&mut self, tcp: bool, e: EngineError) {
        if tcp {
            self.pending = None;
            self.start_error = Some(e);
        } else {
            self.fail(e);
        }
    }

    /// Why the last TCP connect failed, once (see [`Engine::fail_connect`]).
    pub(crate) fn take_start_error(&mut self) -> Option<EngineError> {
        self.start_error.take()
    }

    /// TLS could not start or its handshake failed: the connection dies,
    /// reporting `why` with its own errno (not the protocol client's).
    pub(super) fn fail_tls(&mut self, why: EngineError) {
        if self.dead.is_none() {
            self.dead = Some(why.clone());
        }
        if let Some(c) = self.client.as_mut() {
            c.tls_failed(why.text());
        }
    }

    /// Records that starting the connection failed: the handle is dead.
    pub(crate) fn fail_start(&mut self, e: EngineError) {
        self.pending = None;
        self.fail(e);
    }

    fn fail(&mut self, e: EngineError) {
        if self.dead.is_none() {
            self.dead = Some(e.clone());
        }
        if let Some(c) = self.client.as_mut() {
            c.handle_io_error(e.text());
        }
        self.process_events();
    }

    /// Signals the child process (`nbd_kill_subprocess`). It neither waits
    /// nor touches the connection, as in libnbd: the child is reaped when
    /// the handle closes, so a child that ignores the signal, or one sent
    /// `SIGSTOP`, cannot hang the caller here.
    pub(crate) fn kill_child(&mut self, signal: i32) -> Result<(), EngineError> {
        let Some(child) = self.child.as_ref() else {
            return Err(EngineError::new(libc::ESRCH, "no subprocess exists"));
        };
        let sig = if signal == 0 { libc::SIGTERM } else { signal };
        // SAFETY: kill(2) on our own child, which is not reaped before the
        // engine drops (so the pid cannot have been reused).
        if unsafe { libc::kill(child.pid, sig) } == -1 {
            let e = io::Error::last_os_error();
            return Err(EngineError::io(&e, "kill"));
        }
        Ok(())
    }

    /// Once `NBD_CMD_DISC` is written (or the session closed after
    /// `NBD_OPT_ABORT`), nothing more goes to the server: TLS ends with
    /// close_notify and a plain socket's write side is shut, which is what
    /// tells servers that wait for it (nbdkit) to hang up, as libnbd 1.24
    /// does.
    pub(super) fn end_writes_after_disconnect(&mut self) {
        let Some(c) = self.client.as_ref() else {
            return;
        };
        let disc_written = c.disconnect_in_flight()
            && c.pending_output() == 0
            && self.tls.as_ref().is_none_or(|t| t.committed() == 0);
        if !disc_written && c.state() != State::Closed {
            return;
        }
        if let Some(t) = self.tls.as_mut() {
            t.close_notify();
        } else if !self.writes_shut {
            self.writes_shut = true;
            if let Some(fd) = self.fd.as_ref() {
                // SAFETY: shutdown(2) on the socket we own; an error (the
                // peer already gone) changes nothing.
                unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
            }
        }
    }

    /// Closing the handle: the connection ends; commands in flight complete
    /// with `ENOTCONN` (their completion callbacks are called, as in libnbd
    /// 1.24), and every callback still held is released (`.free`) when the
    /// engine drops.
    fn close(&mut self) {
        self.closing = true;
        if self.dead.is_none() {
            if let Some(t) = self.tls.as_mut() {
                t.close_notify();
            }
        }
        if let Some(c) = self.client.as_mut() {
            c.abandon();
        }
        self.process_events();
        self.large_reads = 0;
        self.finish_user_opt(libc::ENOTCONN, "the handle was closed");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
        self.fd = None;
        if let Some(child) = self.child.take() {
            // Reap the child once its socket is closed, as libnbd does.
            let mut status = 0;
            // SAFETY: signals and waits for our own child process.
            unsafe {
                if child.kill_on_close {
                    libc::kill(child.pid, libc::SIGTERM);
                }
                libc::waitpid(child.pid, &mut status, 0);
            }
        }
        if let Some(dir) = self.activation_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
