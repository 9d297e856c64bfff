//! The receive state machine: one multishot receive per connection from the provided
//! buffer ring, paused and resumed by cancel and re-arm, re-armed after ENOBUFS, and the
//! hand-off of received bytes to the runner's delivery (and back).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use io_uring::{cqueue, opcode, squeue};
use ringman_protocols::{Decoder, Framer};

use super::on_socket;
use super::{gen_of, Core, Event, Status};
use crate::buffers::{RecvBuf, RECV_BGID};
use crate::error::{panic_message, ConnError};
use crate::hooks::IdMsgFn;
use crate::id::ConnectionId;
use crate::ring::{Kind, Token};

impl Core {
    pub(super) fn arm_recv(&mut self, key: usize) {
        let c = &mut self.conns[key];
        // (An outgoing connection reads only once its CONNECT succeeded, and, through a
        // proxy, once the tunnel is open: the proxy's answer is the handshake's to read.)
        let dialing = c.status == Status::Connecting && c.dial().is_none_or(|d| !d.connected() || d.proxying());
        if c.recv_armed || c.paused || c.status == Status::Closed || dialing {
            return;
        }
        c.recv_armed = true;
        c.inflight += 1;
        let sqe = if c.paced {
            // One buffer (length 0: the buffer's size); the completion, without F_MORE, arms
            // the next one. See `ConnState::paced`.
            on_socket!(c, key, |fd| opcode::Recv::new(fd, std::ptr::null_mut(), 0)
                .buf_group(RECV_BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT))
        } else {
            on_socket!(c, key, |fd| opcode::RecvMulti::new(fd, RECV_BGID).build())
        };
        let sqe = sqe.user_data(Token::new(Kind::Recv, key, gen_of(c.serial)).to_u64());
        self.push(sqe);
    }

    /// A receive completion, first half, for tests: [`Core::on_recv_into`]'s work returned.
    #[cfg(test)]
    pub(crate) fn on_recv(&mut self, tok: Token, res: i32, flags: u32) -> Option<RecvWork> {
        let mut work = None;
        self.on_recv_into(tok, res, flags, &mut work);
        work
    }

    /// A receive completion, first half. Puts the data and the taken parser state into
    /// `out` when there is something to deliver (the runner parses and delivers, then
    /// calls [`Core::recv_end`]); handles EOF, errors and ENOBUFS itself. The work is
    /// written in place: returned, it would be copied several times on its way to the
    /// runner (160 bytes, a `memmove` each, on every receive).
    pub(crate) fn on_recv_into(&mut self, tok: Token, res: i32, flags: u32, out: &mut Option<RecvWork>) {
        let bid = cqueue::buffer_select(flags);
        let key = tok.slot as usize;
        if !self.live(tok) {
            // Stale completion: the buffer still has to go back to the kernel.
            if let Some(b) = bid {
                self.recv.recycle(b, res.max(0) as usize, flags);
            }
            return;
        }
        let more = cqueue::more(flags);
        let c = &mut self.conns[key];
        if !more {
            c.recv_armed = false;
            c.inflight -= 1;
        }
        if res <= 0 {
            if let Some(b) = bid {
                self.recv.recycle(b, 0, flags);
            }
            match -res {
                // The peer finished sending while delivery is paused (back-pressure, or the
                // application's pause): what arrived before its EOF may still sit
                // undelivered in the framer — in a WebSocket close handshake, the peer's
                // close frame among it. Stay paused with the receive disarmed; resuming
                // delivers those bytes and re-arms it, and the socket reports the EOF again
                // then. (A graceful close that stays paused ends when flushed, or at its
                // close deadline.)
                0 if c.paused && matches!(c.status, Status::Established | Status::WsClosing | Status::Closing) => {}
                // The server hung up (or reset the connection) during an outgoing
                // connection's TLS handshake: the connect failed.
                0 | libc::ECONNRESET if self.tls_dial_broke(key, res) => {}
                0 => self.destroy(key, None),
                libc::ENOBUFS => {
                    // The buffer ring ran dry; the multishot ended. Re-arm once buffers are
                    // back (end of this loop turn, after this batch recycled its buffers).
                    if self.conns[key].status != Status::Closed {
                        self.enobufs.push(key);
                    }
                }
                libc::ECANCELED => {
                    // pause_recv() or destroy() cancelled it. If the connection was resumed
                    // (or started lingering) before this completion arrived, that resume found
                    // the receive still armed and left it: re-arm now. arm_recv declines
                    // for paused and closed connections.
                    self.arm_recv(key);
                }
                e => {
                    if self.conns[key].status != Status::Closed && !self.tls_dial_broke(key, res) {
                        self.destroy(key, Some(ConnError::Io(io::Error::from_raw_os_error(e))));
                    }
                }
            }
            self.try_free(key);
            return;
        }
        let bid = bid.expect("receive completion without a buffer");
        let len = res as usize;
        c.bytes_read += len as u64;
        c.active = self.stamp;
        if let Some(ws) = c.ws.as_mut() {
            ws.heard(self.stamp);
        }
        if !more && c.status != Status::Closed {
            // A multishot that ended without an error (for instance the CQ was nearly full),
            // or a paced connection's single-shot: re-arm.
            self.arm_recv(key);
        }
        let c = &mut self.conns[key];
        if matches!(c.status, Status::Closed | Status::Lingering) || c.decoder.is_none() {
            self.recv.recycle(bid, len, flags);
            self.try_free(key);
            return;
        }
        // SAFETY: this CQE named `bid` with `len > 0` bytes and `flags`, and each CQE's piece
        // is taken once.
        let mut buf = unsafe { self.recv.take(bid, len, flags) };
        if c.extra.as_ref().is_some_and(|e| e.tls.is_some()) {
            *out = self.tls_input(key, buf);
            return;
        }
        if c.paused {
            c.framer.as_mut().expect("framer present").push(buf.bytes());
            self.recv.give_back(buf);
            return;
        }
        self.delivering = Some(buf.region());
        *out = Some(RecvWork {
            id: ConnectionId::new(c.serial, key),
            buf: Some(buf),
            plain: None,
            peer_closed: false,
            on_message: c.extra.as_mut().and_then(|e| e.hooks.on_message.take()),
            worker_callbacks: c.dial().is_none(),
            decoder: c.decoder.take().expect("decoder present"),
            framer: c.framer.take().expect("framer present"),
            max: c.max_package_size,
        });
    }

    /// Takes the parser state of a connection to deliver what it buffered while paused.
    pub(crate) fn resume_begin(&mut self, conn: ConnectionId) -> Option<RecvWork> {
        let key = self.lookup(conn)?;
        let c = &mut self.conns[key];
        // Lingering discards input: nothing buffered is delivered either.
        if c.paused || matches!(c.status, Status::Closed | Status::Lingering) || c.decoder.is_none() {
            return None;
        }
        // The receive is armed again only after this backlog is delivered (`recv_end`):
        // armed now, it would pull the socket's whole queue into the framer before a pause
        // that the delivery makes could cancel it, and a peer that keeps sending would grow
        // the backlog by that much on every resume.
        Some(RecvWork {
            id: conn,
            buf: None,
            plain: None,
            peer_closed: false,
            on_message: c.extra.as_mut().and_then(|e| e.hooks.on_message.take()),
            worker_callbacks: c.dial().is_none(),
            decoder: c.decoder.take().expect("decoder present"),
            framer: c.framer.take().expect("framer present"),
            max: c.max_package_size,
        })
    }

    /// Second half: returns the buffer, puts the parser state back, handles a parse error.
    /// On a protocol error the decoder's error reply (an HTTP 400, a close frame) is sent
    /// and the connection ends with a half-close and linger; `on_error` is queued first.
    /// `work` is left empty (taken in place, not moved in: see [`Core::on_recv_into`]).
    pub(crate) fn recv_end(
        &mut self,
        work: &mut Option<RecvWork>,
        delivered: u64,
        err: Option<ringman_protocols::ProtocolError>,
    ) {
        let Some(mut w) = work.take() else { return };
        // A batch without received bytes is a resume's delivery of what was buffered while
        // paused.
        let resumed = w.buf.is_none() && w.plain.is_none();
        if let Some(b) = w.buf.take() {
            self.delivering = None;
            self.recv.give_back(b);
        }
        if let Some(p) = w.plain.take() {
            if p.capacity() <= 256 * 1024 {
                self.tls_plain = p;
            }
        }
        // Workerman's `total_request` (and so `max_requests`) counts what the worker's
        // accepted connections received, not the replies of the application's own clients.
        if w.worker_callbacks {
            self.stats.requests.add(delivered);
        }
        let Some(key) = self.lookup(w.id) else {
            // A user closure is dropped by the runner, outside the core.
            self.graveyard.extend(w.on_message.take().map(|f| Box::new(f) as Box<dyn std::any::Any>));
            return;
        };
        let mut reply = Vec::new();
        let mut reply_panic = None;
        if let Some(e) = &err {
            reply_panic = error_reply(w.decoder.as_mut(), e, &mut reply).err();
        }
        let c = &mut self.conns[key];
        c.partial_since = match (w.framer.buffered(), c.partial_since) {
            (0, _) => None,
            (_, Some(t)) => Some(t),
            (_, None) => Some(self.stamp),
        };
        c.decoder = Some(w.decoder);
        c.framer = Some(w.framer);
        if let Some(f) = w.on_message.take() {
            // Unless the callback installed another meanwhile (that one is kept).
            let hooks = &mut c.extra().hooks;
            if hooks.on_message.is_none() {
                hooks.on_message = Some(f);
            } else {
                self.graveyard.push(Box::new(f));
            }
        }
        let c = &mut self.conns[key];
        if w.peer_closed && err.is_none() {
            // The TLS peer's close_notify came with these bytes: it sends nothing more.
            self.close(key, None);
            return;
        }
        let Some(e) = err else {
            if resumed {
                // The backlog is delivered (or a pause stopped it): read again unless paused.
                self.arm_recv(key);
            }
            return;
        };
        if c.status == Status::Closed {
            return;
        }
        if let Some(p) = reply_panic {
            self.destroy(key, Some(ConnError::Panic(p)));
            return;
        }
        self.fail(key, e, &reply);
    }

    /// The connection's own `on_message` (taken out while it runs) and whether the worker's
    /// applies, for delivering messages outside a receive batch; `None` when it is gone or
    /// closed.
    pub(crate) fn take_message_hook(&mut self, conn: ConnectionId) -> Option<(Option<IdMsgFn>, bool)> {
        let k = self.lookup(conn)?;
        let c = &mut self.conns[k];
        if c.status == Status::Closed {
            return None;
        }
        Some((c.extra.as_mut().and_then(|e| e.hooks.on_message.take()), c.dial().is_none()))
    }

    /// Puts back a hook taken with [`Core::take_message_hook`] unless another was installed
    /// meanwhile; one not put back is handed back, to be dropped outside the core.
    pub(crate) fn put_message_hook(&mut self, conn: ConnectionId, f: IdMsgFn) -> Option<IdMsgFn> {
        let Some(k) = self.lookup(conn) else { return Some(f) };
        let hooks = &mut self.conns[k].extra().hooks;
        if hooks.on_message.is_none() {
            hooks.on_message = Some(f);
            None
        } else {
            Some(f)
        }
    }

    /// Whether messages may still be delivered to `conn` in this batch, and the connection's
    /// own `on_message` if one was installed since the batch took its callback (it applies
    /// from the next message on).
    pub(crate) fn can_deliver(&mut self, conn: ConnectionId) -> (bool, Option<IdMsgFn>) {
        let Some(k) = self.lookup(conn) else { return (false, None) };
        let c = &mut self.conns[k];
        let newer = c.extra.as_mut().and_then(|e| e.hooks.on_message.take());
        (c.status != Status::Closed && !c.paused, newer)
    }

    /// Returns to the receive ring the buffers whose lent bytes were sent (or dropped).
    pub(super) fn return_lent(&mut self) {
        for bid in self.arena.take_unlent() {
            self.recv.unlend(bid);
        }
    }

    pub(super) fn rearm_enobufs(&mut self) {
        if self.enobufs.is_empty() {
            return;
        }
        self.return_lent();
        self.recv.publish();
        let keys = std::mem::take(&mut self.enobufs);
        for key in &keys {
            if self.conns.contains(*key) {
                self.arm_recv(*key);
            }
        }
        self.enobufs = keys;
        self.enobufs.clear();
    }

    pub(crate) fn pause(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.paused {
            return;
        }
        c.paused = true;
        if c.recv_armed {
            let ud = Token::new(Kind::Recv, key, gen_of(c.serial)).to_u64();
            c.inflight += 1;
            let sqe = opcode::AsyncCancel::new(ud)
                .build()
                .user_data(Token::new(Kind::Cancel, key, gen_of(c.serial)).to_u64());
            self.push(sqe);
        }
    }

    /// Ends an engine-made back-pressure pause (the connection's back-pressure was turned
    /// off); a pause the application made stays.
    pub(crate) fn lift_throttle(&mut self, key: usize) {
        if self.conns[key].throttled {
            self.resume(key);
        }
    }

    /// `pause_recv()` from user code: the pause is the application's from now on (the
    /// engine's backpressure no longer lifts it).
    pub(crate) fn user_pause(&mut self, key: usize) {
        self.conns[key].throttled = false;
        self.pause(key);
    }

    pub(crate) fn resume(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.paused || c.status == Status::Closed {
            return;
        }
        c.paused = false;
        c.throttled = false;
        // Time spent paused is the application's, not the peer's: the packet timeout and
        // the heartbeat start afresh (pongs may have waited unread in the socket).
        c.partial_since = None;
        if let Some(ws) = c.ws.as_mut() {
            ws.heard(self.stamp);
        }
        let id = self.id_of(key);
        self.events.push_back(Event::Resume(id));
    }
}

/// The decoder's answer to its own error (HTTP 400, a close frame), with a panic in that
/// protocol code caught and returned as its message.
pub(super) fn error_reply(
    d: &mut dyn Decoder,
    e: &ringman_protocols::ProtocolError,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| d.error_reply(e, out))).map_err(|p| format!("error_reply: {}", panic_message(&*p)))
}

/// A receive batch being delivered by the runner: the received bytes (none when resuming
/// from the framer's buffer) and the connection's parser state, taken out of its slot
/// until [`Core::recv_end`] puts them back.
pub(crate) struct RecvWork {
    pub(crate) id: ConnectionId,
    /// The receive buffer, given back to the kernel in `recv_end`.
    pub(crate) buf: Option<RecvBuf>,
    /// Or the plaintext a TLS connection's receive decrypted (the buffer went back).
    pub(crate) plain: Option<Vec<u8>>,
    /// The TLS peer sent `close_notify` after these bytes: close once they are delivered.
    pub(crate) peer_closed: bool,
    /// The connection's own `on_message`, taken out while the batch is delivered.
    pub(crate) on_message: Option<IdMsgFn>,
    /// Whether the worker's callbacks apply (not for outgoing connections).
    pub(crate) worker_callbacks: bool,
    pub(crate) decoder: Box<dyn Decoder>,
    pub(crate) framer: Framer,
    /// The connection's packet size limit.
    pub(crate) max: usize,
}
