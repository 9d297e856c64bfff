//! The close state machine: graceful close (flush, then close), `end()` (flush, half-close,
//! linger), abortive destroy, and freeing a slot only once nothing is in flight.

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use io_uring::{opcode, types};

use super::{gen_of, Core, Event, Status};
use crate::error::ConnError;
use crate::id::ConnectionId;
use crate::mailbox::Enc;
use crate::ring::{Kind, Token};

impl Core {
    /// Ends a connection the protocol gave up on: with the decoder's `reply` (sent raw, then
    /// half-close and linger, `on_error` first), or destroyed with `on_error` when there is
    /// nothing to say.
    pub(super) fn fail(&mut self, key: usize, e: ringman_protocols::ProtocolError, reply: &[u8]) {
        match self.conns.get(key) {
            Some(c) if c.status != Status::Closed => {}
            _ => return,
        }
        // An outgoing `ws://` connection whose upgrade response was refused (a 403, a wrong
        // accept key) was never established: CONNECT_FAIL naming the cause, as for a refused
        // TCP connect, not a protocol error.
        if let Some(target) = self.ws_dial_target(key) {
            let why = match &e {
                ringman_protocols::ProtocolError::Malformed { reason, .. } => reason.to_string(),
                other => other.to_string(),
            };
            let cause = crate::error::ConnectError::Handshake(why);
            self.destroy(key, Some(ConnError::Connect { target, cause }));
            return;
        }
        // After our WebSocket close frame nothing else may be sent (not a second close).
        if reply.is_empty() || self.conns[key].status == Status::WsClosing {
            self.destroy(key, Some(ConnError::Protocol(e)));
        } else {
            let id = self.id_of(key);
            self.events.push_back(Event::Error(id, Box::new(ConnError::Protocol(e))));
            // A pause the engine's backpressure will not lift: nothing more reaches the
            // decoder that failed.
            self.user_pause(key);
            self.end(key, Some(reply));
        }
    }

    /// Graceful close: send `data`, flush, then close; a peer that never reads is cut off at
    /// the close deadline.
    pub(crate) fn close(&mut self, key: usize, data: Option<&[u8]>) {
        if let Some(d) = data {
            self.send(key, d, Enc::Default);
        }
        let Some(c) = self.conns.get_mut(key) else { return };
        match c.status {
            // (A WebSocket close handshake, too, now flushes and closes.)
            Status::Established | Status::WsClosing => {}
            // Nothing was sent yet: as in Workerman, closing a connection still being
            // established destroys it (what it held is dropped).
            Status::Connecting => {
                self.destroy(key, None);
                return;
            }
            Status::Closing | Status::Lingering | Status::Closed => return,
        }
        c.close_deadline = Some(crate::clock::now() + self.cfg.close_timeout);
        self.set_status(key, Status::Closing);
        // A TLS connection says so after its last record.
        self.tls_close_notify(key);
        let c = &mut self.conns[key];
        if c.sendq.len > 0 && !c.send_inflight {
            self.submit_send(key);
        }
        let c = &self.conns[key];
        if c.sendq.len == 0 && !c.send_inflight {
            self.flushed_closing(key);
        }
    }

    /// Sends `data` raw, flushes, half-closes and lingers (bounded) before closing.
    pub(crate) fn end(&mut self, key: usize, data: Option<&[u8]>) {
        if let Some(d) = data {
            self.send(key, d, Enc::Raw);
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.linger = true;
        }
        self.close(key, None);
    }

    /// The send queue of a Closing connection is empty: close, or half-close and linger
    /// (unless a TLS handshake must end first to send what the connection holds).
    pub(super) fn flushed_closing(&mut self, key: usize) {
        if self.tls_close_waits(key) {
            return;
        }
        let c = &mut self.conns[key];
        if !c.linger {
            self.destroy(key, None);
            return;
        }
        c.throttled = false;
        c.close_deadline = Some(crate::clock::now() + LINGER);
        self.set_status(key, Status::Lingering);
        let c = &mut self.conns[key];
        // The peer sees FIN after our last bytes.
        crate::sys::shutdown(c.fd.as_fd(), libc::SHUT_WR);
        if c.paused {
            // Keep draining what the peer sends so its close is seen.
            c.paused = false;
            self.arm_recv(key);
        }
    }

    /// Abortive close: on_close is queued now, the socket shut down; the slot is freed when
    /// the last in-flight operation has completed (never earlier, so no late completion can
    /// reach a reused slot or buffer).
    pub(crate) fn destroy(&mut self, key: usize, err: Option<ConnError>) {
        let c = &mut self.conns[key];
        if c.status == Status::Closed {
            return;
        }
        c.close_deadline = None;
        self.set_status(key, Status::Closed);
        self.drop_redial(key);
        self.stop_resolving(key);
        let c = &mut self.conns[key];
        let gen = gen_of(c.serial);
        // Wakes any receive or send parked on the socket.
        crate::sys::shutdown(c.fd.as_fd(), libc::SHUT_RDWR);
        let fd = c.fd.as_raw_fd();
        if c.inflight > 0 {
            // Cancel before close (ARCHITECTURE.md, "Pitfalls"): nothing may keep running on an fd
            // number that the kernel could hand out again.
            c.inflight += 1;
            let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                .build()
                .user_data(Token::new(Kind::Cancel, key, gen).to_u64());
            self.push(sqe);
        }
        let id = self.id_of(key);
        if let Some(e) = err {
            self.events.push_back(Event::Error(id, Box::new(e)));
        }
        // The slot stays until on_close has run (`close_delivered`).
        self.conns[key].close_hold = true;
        self.events.push_back(Event::Close(id));
    }

    /// `on_close` of `conn` has run (or was skipped): its slot may go once idle.
    pub(crate) fn close_delivered(&mut self, conn: ConnectionId) {
        if let Some(key) = self.lookup(conn) {
            self.conns[key].close_hold = false;
            self.try_free(key);
        }
    }

    pub(crate) fn on_cancel(&mut self, tok: Token) {
        if self.live(tok) {
            let key = tok.slot as usize;
            self.conns[key].inflight -= 1;
            self.try_free(key);
        }
    }

    /// Frees a destroyed slot once nothing is in flight. Safe to call on a freed key.
    pub(super) fn try_free(&mut self, key: usize) {
        match self.conns.get(key) {
            Some(c) if c.status == Status::Closed && c.inflight == 0 && !c.close_hold => {}
            _ => return,
        }
        // `reconnect(after)` was asked for: the slot (and so the id) lives on, with a fresh
        // socket, and dials again.
        let again = self.conns[key].dial_mut().and_then(|d| d.reconnect.take());
        // Before the descriptor closes (with the slot, or replaced by a redial's): nothing
        // is in flight on it.
        #[cfg(test)]
        let registered = self.conns[key].file == super::FileSlot::Registered;
        self.unregister_file(key);
        if let (Some(after), None) = (again, self.stopping) {
            #[cfg(test)]
            if let (true, Some(k)) = (registered, self.ring.sim_mut()) {
                k.mark("a registered dial redials");
            }
            self.renew(key, after);
            return;
        }
        let mut c = self.remove_slot(key);
        for chunk in c.sendq.chunks.drain(..) {
            self.arena.release(chunk.mem);
        }
        // Held sends (of a dial, before a 101, before a TLS handshake's end) too.
        if let Some(e) = c.extra.as_deref_mut() {
            let dial = e.dial.as_deref_mut().map(|d| std::mem::take(&mut d.held));
            let tls = e.tls.as_mut().map(|t| std::mem::take(&mut t.held));
            for q in [dial, e.upgrade_held.take(), tls].into_iter().flatten() {
                for chunk in q.chunks {
                    self.arena.release(chunk.mem);
                }
            }
        }
        // User values are dropped by the loop, outside the core (their Drop may call in).
        self.graveyard.extend(c.context.take());
        self.graveyard.extend(c.extra.take().map(|e| e as Box<dyn std::any::Any>));
        // The socket closes here, when the slot's state drops: no operation refers to it any
        // more (inflight == 0).
        drop(c);
    }

    /// Starts a WebSocket close handshake: our close frame is queued (by the caller, through
    /// the encoder); the connection closes when the peer answers with its close, or is cut
    /// off after `close_timeout`. Messages are still delivered meanwhile; nothing more is
    /// sent (RFC 6455 §5.5.1).
    pub(crate) fn start_ws_close(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.status != Status::Established || c.ws.is_none() {
            return;
        }
        c.close_deadline = Some(crate::clock::now() + self.cfg.close_timeout);
        self.set_status(key, Status::WsClosing);
    }

    /// The WebSocket upgrade of `key` is answered: it now carries a session (heartbeat,
    /// close handshake).
    pub(crate) fn start_ws_session(&mut self, key: usize) {
        let now = self.stamp;
        self.conns[key].ws.get_or_insert_with(|| super::slot::WsSession::new(now, None));
        // What the application sent before the 101 follows it.
        if let Some(held) = self.conns[key].extra.as_mut().and_then(|e| e.upgrade_held.take()) {
            self.release_held(key, held);
        }
    }
}

/// How long `end()` waits for the peer to close after our half-close.
const LINGER: Duration = Duration::from_secs(1);
