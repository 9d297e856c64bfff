//! The accept state machine: one multishot accept per listener, a back-off when the
//! process runs out of descriptors, and a fresh slot per accepted connection.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ConnState, Core, Event, FileSlot, ListenerSlot};
use crate::error::panic_message;
use crate::ring::{Kind, Token};
use io_uring::{cqueue, opcode, types};

impl Core {
    pub(crate) fn arm_accept(&mut self, idx: usize) {
        let l = &mut self.listeners[idx];
        let fd = match &l.fd {
            Some(fd) if !l.armed && !l.closing => fd.as_raw_fd(),
            _ => return,
        };
        l.armed = true;
        // Non-blocking, as Workerman's accepted streams are: the engine's own writes outside
        // the ring (`through.rs`) must never wait for the socket; the ring's operations
        // are the same on either kind.
        let sqe = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(Token::new(Kind::Accept, idx, 0).to_u64());
        self.push(sqe);
    }

    pub(crate) fn on_accept(&mut self, idx: usize, res: i32, flags: u32) {
        let l = &mut self.listeners[idx];
        if !cqueue::more(flags) {
            l.armed = false;
            if l.closing {
                // Unlistened: its accept is over, the socket can go.
                l.closing = false;
                l.fd = None;
            }
        }
        if res < 0 {
            match -res {
                libc::ECANCELED => {}
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    // Out of descriptors or memory: back off instead of spinning on errors.
                    log::warn!("accept failed: {}; retrying in 100 ms", io::Error::from_raw_os_error(-res));
                    self.accept_retry = Some(crate::clock::now() + Duration::from_millis(100));
                }
                _ => {}
            }
        } else {
            // SAFETY: a fresh descriptor from accept that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            if self.stopping.is_none() {
                self.open_conn(fd);
            }
        }
        if self.stopping.is_none() && self.accept_retry.is_none() && !self.accept_paused {
            self.arm_accept(idx);
        }
    }

    /// When accepting resumes after a descriptor shortage, if it is paused for one.
    pub(crate) fn accept_retry_at(&self) -> Option<Instant> {
        self.accept_retry
    }

    /// Re-arms accepts that were paused by a descriptor shortage.
    pub(crate) fn retry_accepts(&mut self, now: Instant) {
        if self.accept_retry.is_some_and(|t| t <= now) {
            self.accept_retry = None;
            if self.stopping.is_none() {
                for i in 0..self.listeners.len() {
                    self.arm_accept(i);
                }
            }
        }
    }

    pub(super) fn open_conn(&mut self, fd: OwnedFd) {
        if !self.take_place() {
            // At the worker's cap: closed at once (when `fd` drops), so the backlog drains.
            self.stats.refused.add(1);
            #[cfg(test)]
            crate::sim::observe_refused(self, &fd);
            return;
        }
        // Protocol code (a custom protocol's constructors) is isolated like user code: a
        // panic refuses this connection only (its socket closes when `fd` drops).
        let protocol = &self.cfg.protocol;
        let decoder_config = self.cfg.decoder_config.as_deref();
        let made = catch_unwind(AssertUnwindSafe(|| {
            let encoder = protocol.encoder();
            let mut decoder = protocol.decoder();
            if let Some(cfg) = decoder_config {
                decoder.configure(cfg);
            }
            (encoder, decoder)
        }));
        let (encoder, decoder) = match made {
            Ok(x) => x,
            Err(p) => {
                log::error!("protocol {} panicked creating a connection: {}", protocol.name(), panic_message(&*p));
                self.give_places(1);
                return;
            }
        };
        let serial = self.serials.take(self.thread);
        let key = self.insert_slot(ConnState::new(fd, serial, decoder, encoder, &self.cfg, self.stamp));
        if self.cfg.handshake_first {
            self.conns[key].extra().upgrade_held = Some(Default::default());
        }
        if let Err(f) = self.start_server_tls(key) {
            // (rustls refused to make a session: the connection cannot be served.)
            log::error!("TLS session for an accepted connection: {f}");
            self.destroy(key, None);
            return;
        }
        self.stats.accepted.add(1);
        if key < self.fixed_files as usize {
            self.conns[key].file = FileSlot::Later;
        }
        self.arm_recv(key);
        let id = self.id_of(key);
        self.events.push_back(Event::Connect(id));
    }

    /// Stops accepting, and receiving on a `udp://` worker's sockets; the sockets stay open
    /// (a successor process may own a copy).
    pub(crate) fn pause_accept(&mut self) {
        self.accept_paused = true;
        self.cancel_accepts();
        self.udp_pause();
    }

    /// Starts accepting on `fd` as well (`WorkerHandle::listen`), unless this ring already
    /// does; armed unless the ring is stopping or accepting is paused. A `udp://` worker's
    /// socket is received on instead (`Core::udp_listen`).
    pub(crate) fn listen(&mut self, fd: Arc<crate::addr::ListenSocket>) {
        if fd.is_datagram() {
            if let Err(e) = self.udp_listen(fd) {
                // (Only the datagram pool's registration, on a ring's first UDP socket, fails.)
                log::error!("cannot serve a UDP socket on ring {}: {e}", self.thread);
            }
            return;
        }
        if self.listeners.iter().any(|l| !l.closing && l.fd.as_ref().is_some_and(|f| Arc::ptr_eq(f, &fd))) {
            return;
        }
        let slot = ListenerSlot::new(fd);
        let idx = match self.listeners.iter().position(|l| l.fd.is_none() && !l.armed) {
            Some(i) => {
                self.listeners[i] = slot;
                i
            }
            None => {
                self.listeners.push(slot);
                self.listeners.len() - 1
            }
        };
        if self.stopping.is_none() && self.accept_retry.is_none() && !self.accept_paused {
            self.arm_accept(idx);
        }
    }

    /// Stops accepting and lets go of every listening socket (`WorkerHandle::unlisten`): an
    /// armed accept is cancelled first and its socket let go of when the cancel has ended
    /// it; the connections stay. A `udp://` worker's sockets close the same way
    /// (`Core::udp_unlisten`).
    pub(crate) fn unlisten(&mut self) {
        self.udp_unlisten();
        for i in 0..self.listeners.len() {
            let l = &mut self.listeners[i];
            if l.closing {
                continue;
            }
            if l.armed {
                l.closing = true;
                self.cancel_accept(i);
            } else {
                l.fd = None;
            }
        }
    }

    fn cancel_accept(&mut self, i: usize) {
        let ud = Token::new(Kind::Accept, i, 0).to_u64();
        let sqe = opcode::AsyncCancel::new(ud).build().user_data(Token::new(Kind::Shutdown, 0, 0).to_u64());
        // Through `push`: a full submission queue is submitted first, never dropped (a lost
        // cancel would leave the accept armed and the stop waiting forever).
        self.push(sqe);
    }

    pub(super) fn cancel_accepts(&mut self) {
        for i in 0..self.listeners.len() {
            if self.listeners[i].armed {
                self.cancel_accept(i);
            }
        }
    }

    /// Registers connection `key`'s socket in the ring's fixed-file table under its key
    /// ([`FileSlot::Later`]): operations submitted from now on name the slot; one in flight
    /// keeps the file it was given. One `io_uring_register` call; a refusal leaves the
    /// connection on its descriptor.
    pub(super) fn register_file(&mut self, key: usize) {
        let c = &mut self.conns[key];
        c.file = match self.ring.update_file(key as u32, c.fd.as_raw_fd()) {
            Ok(()) => {
                self.stats.registered_files.add(1);
                FileSlot::Registered
            }
            Err(e) => {
                log::debug!("fixed-file slot {key}: {e}; the connection uses its descriptor");
                FileSlot::Never
            }
        };
    }

    /// Clears connection `key`'s fixed-file slot, before its descriptor closes (the
    /// table's reference would keep the socket open) and before the key can be reused.
    pub(super) fn unregister_file(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if std::mem::replace(&mut c.file, FileSlot::Never) != FileSlot::Registered {
            return;
        }
        match self.ring.update_file(key as u32, -1) {
            Ok(()) => self.stats.registered_files.sub(1),
            Err(e) => log::error!("clearing fixed-file slot {key}: {e}; its socket stays open until the ring ends"),
        }
    }
}
