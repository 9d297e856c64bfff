//! The TLS layer of a connection, between the receive and send state machines and the
//! framer: received ciphertext is decrypted before the framer sees it, and everything a
//! connection sends (encoded messages, a `ws://` upgrade request, held sends) is encrypted
//! into its send queue. The session itself is behind [`TlsSession`]; this file decides
//! what the connection does with what the session reports.
//!
//! ```text
//!  accept ─► handshaking (sends held in plaintext, counted against the send limit; cut
//!     │         off at the handshake timeout; a close() waits for the handshake to send them)
//!     │         first bytes not a TLS record: a plaintext HTTP request gets a 400, any
//!     │         other garbage is closed; a failed handshake flushes its alert and closes
//!     └─(handshake done)─► established: held sends encrypted into the queue, then
//!            plaintext to the framer, sends encrypted
//!            close(): close_notify after the queued records; the peer's close_notify: close
//! ```

use super::recv::RecvWork;
use super::send::{QueueSink, SendQueue};
use super::slot::{ConnState, Stamp};
use super::{Core, Event, Status};
use crate::buffers::{RecvBuf, SendArena};
use crate::error::{ConnError, ConnectError, TlsFailure};
use crate::id::ConnectionId;
use crate::tls::session::TlsSession;

/// A connection's TLS session, when it began (the handshake timeout's base), and the
/// plaintext sent before its handshake ended.
pub(crate) struct TlsLayer {
    pub(super) session: Box<dyn TlsSession>,
    pub(super) since: Stamp,
    /// What an accepted connection sent before its handshake ended, encoded, in send
    /// memory: counted in `ConnState::unsent` against `max_send_buffer_size`, encrypted into
    /// the send queue once the handshake is done.
    pub(super) held: SendQueue,
    /// The session failed and that was reported: input still arriving while the alert is
    /// flushed (receives already posted when reading stopped) is dropped unread, so one
    /// failure is one `on_error`.
    failed: bool,
}

impl TlsLayer {
    fn new(session: Box<dyn TlsSession>, since: Stamp) -> TlsLayer {
        TlsLayer { session, since, held: SendQueue::default(), failed: false }
    }
}

impl TlsLayer {
    /// The peer's verified certificate (DER).
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.session.peer_certificate()
    }
}

/// The answer to a plaintext HTTP request on a TLS port.
const PLAIN_HTTP_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 71\r\n\r\nThis port speaks HTTPS: the request was sent as plain HTTP. Use https.\n";

/// Appends `data` to a send queue, encrypted when the connection has a TLS layer.
pub(super) fn put(arena: &mut SendArena, q: &mut SendQueue, tls: Option<&mut TlsLayer>, data: &[u8]) {
    match tls {
        None => super::send::enqueue(arena, q, data),
        Some(t) => t.session.encrypt(data, &mut QueueSink { arena, q }),
    }
}

/// The TLS layer of `c`, if it has one.
pub(super) fn layer(c: &mut ConnState) -> Option<&mut TlsLayer> {
    c.extra.as_mut()?.tls.as_mut()
}

impl Core {
    /// Gives an accepted connection its server session, when the worker has TLS.
    pub(super) fn start_server_tls(&mut self, key: usize) -> Result<(), TlsFailure> {
        #[cfg(test)]
        if self.sim_passthrough(key) {
            return Ok(());
        }
        let Some(cfg) = self.cfg.tls.as_ref() else { return Ok(()) };
        let session = crate::tls::session::server(cfg.config.clone())?;
        let since = self.stamp;
        self.conns[key].extra().tls = Some(TlsLayer::new(session, since));
        Ok(())
    }

    /// Gives an outgoing connection whose CONNECT succeeded its client session and sends
    /// the ClientHello. False when it has no TLS.
    pub(super) fn start_client_tls(&mut self, key: usize) -> bool {
        // (In the simulator the pass-through layer has no handshake: the dial goes on as
        // without TLS, its held sends and upgrade request passing through the layer.)
        #[cfg(test)]
        if self.sim_passthrough(key) {
            return false;
        }
        let Some(setup) = self.conns[key].dial().and_then(|d| d.tls.as_ref()) else { return false };
        let made = crate::tls::session::client(setup.config.clone(), setup.name.clone());
        let session = match made {
            Ok(s) => s,
            Err(f) => {
                let target = self.conns[key].dial().map(|d| d.target()).unwrap_or_default();
                let cause = ConnectError::Tls(f.reason());
                self.destroy(key, Some(ConnError::Connect { target, cause }));
                return true;
            }
        };
        let since = self.stamp;
        let c = &mut self.conns[key];
        c.extra().tls = Some(TlsLayer::new(session, since));
        let ConnState { extra, sendq: q, .. } = c;
        let layer = extra.as_mut().and_then(|e| e.tls.as_mut()).expect("just set");
        layer.session.start(&mut QueueSink { arena: &mut self.arena, q });
        self.kick_send(key);
        true
    }

    /// In the simulator: gives connection `key` the pass-through layer when the schedule
    /// draws it.
    #[cfg(test)]
    fn sim_passthrough(&mut self, key: usize) -> bool {
        if self.ring.sim_mut().is_none() || !crate::sim::tls_passthrough() {
            return false;
        }
        if let Some(k) = self.ring.sim_mut() {
            k.mark("tls layer");
        }
        let since = self.stamp;
        let session = Box::new(crate::tls::session::PassThrough);
        self.conns[key].extra().tls = Some(TlsLayer::new(session, since));
        true
    }

    /// Makes sure a connection with bytes queued has (or gets, this turn) a send.
    pub(super) fn kick_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.send_inflight || c.sendq.len == 0 || c.status == Status::Closed {
            return;
        }
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Received ciphertext of a TLS connection: decrypted, the session's own records
    /// queued, failures handled; the plaintext goes to the framer like received bytes.
    pub(super) fn tls_input(&mut self, key: usize, mut buf: RecvBuf) -> Option<RecvWork> {
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let c = &mut self.conns[key];
        let ConnState { extra, sendq, .. } = c;
        let layer = extra.as_mut().and_then(|e| e.tls.as_mut()).expect("a TLS connection");
        if layer.failed {
            self.tls_plain = plain;
            self.recv.give_back(buf);
            return None;
        }
        // (Decrypted in place: the buffer is the engine's until it is given back.)
        let fed = layer.session.feed(buf.bytes(), &mut plain, &mut QueueSink { arena: &mut self.arena, q: sendq });
        self.recv.give_back(buf);
        self.kick_send(key);
        let fed = match fed {
            Ok(f) => f,
            Err(f) => {
                self.tls_plain = plain;
                self.tls_failed(key, f);
                return None;
            }
        };
        if fed.handshake_done {
            self.tls_handshake_done(key);
        }
        let c = &mut self.conns[key];
        if plain.is_empty() || c.status == Status::Closed {
            self.tls_plain = plain;
            if fed.peer_closed {
                self.close(key, None);
            }
            return None;
        }
        if c.paused {
            c.framer.as_mut().expect("framer present").push(&plain);
            self.tls_plain = plain;
            if fed.peer_closed {
                self.close(key, None);
            }
            return None;
        }
        Some(RecvWork {
            id: ConnectionId::new(c.serial, key),
            buf: None,
            plain: Some(plain),
            peer_closed: fed.peer_closed,
            on_message: c.extra.as_mut().and_then(|e| e.hooks.on_message.take()),
            worker_callbacks: c.dial().is_none(),
            decoder: c.decoder.take().expect("decoder present"),
            framer: c.framer.take().expect("framer present"),
            max: c.max_package_size,
        })
    }

    /// The handshake of `key` completed: an accepted connection's held sends join its send
    /// queue, encrypted (and a `close()` that waited for them sends `close_notify` after
    /// them); an outgoing connection sends its `ws://` upgrade request, or becomes
    /// established (its held sends follow, encrypted).
    fn tls_handshake_done(&mut self, key: usize) {
        if self.conns[key].dial().is_none() {
            let held = layer(&mut self.conns[key]).map(|t| std::mem::take(&mut t.held)).unwrap_or_default();
            self.release_held(key, held);
            if self.conns[key].status == Status::Closing {
                self.tls_close_notify(key);
                self.kick_send(key);
            }
            return;
        }
        let id = self.id_of(key);
        self.events.push_back(Event::Connect(id));
        let Some(d) = self.conns[key].dial() else { return };
        match d.upgrade_request() {
            Some(req) => {
                let c = &mut self.conns[key];
                let ConnState { extra, sendq, .. } = c;
                let tls = extra.as_mut().and_then(|e| e.tls.as_mut());
                put(&mut self.arena, sendq, tls, &req);
                self.kick_send(key);
            }
            None => self.established(key),
        }
    }

    /// The session of `key` failed: a plaintext HTTP request gets a 400 in plaintext, an
    /// outgoing connection reports CONNECT_FAIL with the reason, any other connection
    /// reports the failure and closes once the alert is flushed.
    fn tls_failed(&mut self, key: usize, f: TlsFailure) {
        if self.conns[key].status == Status::Closed {
            return;
        }
        let id = self.id_of(key);
        if matches!(f, TlsFailure::NotTls { plain_http: true }) {
            // The answer goes out in plaintext: the layer goes.
            self.drop_tls_layer(key);
            self.events.push_back(Event::Error(id, Box::new(ConnError::Tls(f))));
            self.user_pause(key);
            self.end(key, Some(PLAIN_HTTP_400));
            return;
        }
        if self.conns[key].status == Status::Connecting {
            let target = self.conns[key].dial().map(|d| d.target()).unwrap_or_default();
            let cause = ConnectError::Tls(f.reason());
            self.destroy(key, Some(ConnError::Connect { target, cause }));
            return;
        }
        // What waited for the handshake will never be sent: a close() that waited for it
        // ends once the alert is flushed.
        if let Some(t) = layer(&mut self.conns[key]) {
            t.failed = true;
            for chunk in std::mem::take(&mut t.held).chunks {
                self.arena.release(chunk.mem);
            }
        }
        self.events.push_back(Event::Error(id, Box::new(ConnError::Tls(f))));
        self.user_pause(key);
        self.close(key, None);
        let c = &self.conns[key];
        if c.status == Status::Closing && c.sendq.len == 0 && !c.send_inflight {
            self.flushed_closing(key);
        }
    }

    /// An outgoing TLS connection whose socket ended (`res` 0) or failed during its
    /// handshake: the connect failed (CONNECT_FAIL, not a socket error: the server never
    /// became usable). False, and nothing done, for any other connection.
    pub(super) fn tls_dial_broke(&mut self, key: usize, res: i32) -> bool {
        let c = &self.conns[key];
        if c.status != Status::Connecting || c.extra.as_ref().is_none_or(|e| e.tls.is_none()) {
            return false;
        }
        let target = c.dial().map(|d| d.target()).unwrap_or_default();
        let why = match -res {
            0 => "the server closed the connection during the handshake".to_string(),
            libc::ECONNRESET => "the server reset the connection during the handshake".to_string(),
            e => format!("during the handshake: {}", std::io::Error::from_raw_os_error(e)),
        };
        self.destroy(key, Some(ConnError::Connect { target, cause: ConnectError::Tls(why) }));
        true
    }

    /// Queues `close_notify` on a TLS connection that starts closing.
    pub(super) fn tls_close_notify(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let ConnState { extra, sendq, .. } = c;
        let Some(layer) = extra.as_mut().and_then(|e| e.tls.as_mut()) else { return };
        layer.session.close_notify(&mut QueueSink { arena: &mut self.arena, q: sendq });
    }

    /// Whether a closing connection must wait for its handshake before it may end: it
    /// holds sends that only the handshake's keys can encrypt (the close deadline bounds
    /// the wait).
    pub(super) fn tls_close_waits(&mut self, key: usize) -> bool {
        layer(&mut self.conns[key]).is_some_and(|t| t.held.len > 0 && t.session.handshaking())
    }

    /// Removes the TLS layer of `key`, returning the send memory of what it held.
    pub(super) fn drop_tls_layer(&mut self, key: usize) {
        let Some(t) = self.conns[key].extra.as_mut().and_then(|e| e.tls.take()) else { return };
        for chunk in t.held.chunks {
            self.arena.release(chunk.mem);
        }
    }

    /// Held plaintext sends joining the send queue of a TLS connection: encrypted in order.
    pub(super) fn encrypt_held(&mut self, key: usize, held: SendQueue) -> SendQueue {
        let Some(layer) = layer(&mut self.conns[key]) else { return held };
        let mut out = SendQueue::default();
        for mut chunk in held.chunks {
            let (base, _) = self.arena.bytes(&mut chunk.mem);
            // SAFETY: `start..end` lies inside the chunk (enqueue keeps end ≤ capacity) and
            // holds bytes written by `enqueue`; a held chunk is in no send, so nothing else
            // refers to it while this slice lives.
            let plain = unsafe { std::slice::from_raw_parts(base.add(chunk.start), chunk.end - chunk.start) };
            layer.session.encrypt(plain, &mut QueueSink { arena: &mut self.arena, q: &mut out });
            self.arena.release(chunk.mem);
        }
        out
    }

    /// Connections of this worker whose handshake outlived the handshake timeout (checked
    /// in the once-a-second sweep).
    pub(super) fn tls_late(&self, key: usize, now: Stamp) -> bool {
        let Some(limit) = self.cfg.tls.as_ref().map(|t| t.handshake_timeout) else { return false };
        let c = &self.conns[key];
        c.extra
            .as_ref()
            .and_then(|e| e.tls.as_ref())
            .is_some_and(|t| t.session.handshaking() && t.since.until(now) >= limit)
    }
}
