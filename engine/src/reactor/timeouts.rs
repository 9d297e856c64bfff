//! Deadlines: the close deadline of closing connections, the idle and packet timeouts, and
//! the WebSocket heartbeat.

use std::time::Instant;

use super::recv::error_reply;
use super::{Core, SendStatus, Stamp, Status};
use crate::error::ConnError;
use crate::mailbox::Enc;

impl Core {
    /// Destroys connections whose close deadline passed. Returns the next deadline.
    pub(crate) fn expire_closing(&mut self, now: Instant) -> Option<Instant> {
        if self.closing == 0 {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (key, c) in self.conns.iter() {
            if let Some(d) = c.close_deadline {
                if d <= now {
                    expired.push(key);
                } else {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        for key in expired {
            // A dial that ran out of time (resolution, connect, or a `ws://` upgrade) is a
            // connect failure; any other deadline is a close that took too long.
            let err = match self.conns[key].status {
                Status::Connecting => self.connect_timed_out(key),
                _ => None,
            };
            #[cfg(test)]
            crate::sim::observe_deadline(self.id_of(key));
            self.destroy(key, err);
        }
        next
    }

    /// Applies the idle and packet timeouts (called about once a second when either is
    /// configured). A connection with a packet that has been incomplete for longer than the
    /// packet timeout gets the protocol's timeout reply (HTTP 408) and `on_error`; one that
    /// has been silent, with nothing queued or in flight, for the idle timeout is closed
    /// quietly (the normal end of a keep-alive connection).
    ///
    /// With a WebSocket heartbeat (`ping_interval`), an upgraded connection that has been
    /// silent for an interval gets a ping; one that leaves it unanswered for another interval
    /// is destroyed with `ConnError::NoPong` (a dead peer, which TCP alone would not notice
    /// for a long time).
    pub(crate) fn expire_idle(&mut self, now: Instant) {
        let now = Stamp::at(self.epoch, now);
        let (idle, packet, ping) = (self.cfg.idle_timeout, self.cfg.packet_timeout, self.cfg.ping_interval);
        let mut late = Vec::new();
        let mut idle_keys = Vec::new();
        let mut to_ping = Vec::new();
        let mut dead = Vec::new();
        let mut handshakes = Vec::new();
        for (key, c) in self.conns.iter() {
            if c.status != Status::Established || c.decoder.is_none() {
                continue;
            }
            if self.tls_late(key, now) {
                handshakes.push(key);
                continue;
            }
            // A paused connection leaves the peer's pongs unread in the socket: no heartbeat.
            let iv = c.ws.and_then(|ws| ws.interval(ping));
            if let (Some(iv), Some(ws), false) = (iv, c.ws, c.paused) {
                match ws.ping_sent {
                    Some(t) if t.until(now) >= iv => {
                        dead.push(key);
                        continue;
                    }
                    // No ping into a full send buffer (it would only report SendBufferFull).
                    None if ws.heard.until(now) >= iv && c.sendq.len < c.max_send_buffer_size => {
                        to_ping.push(key);
                        continue;
                    }
                    _ => {}
                }
            }
            // The worker's idle and packet timeouts are for the connections it accepted.
            if c.dial().is_some() {
                continue;
            }
            match (c.partial_since, packet) {
                (Some(t), Some(limit)) if !c.paused && t.until(now) >= limit => {
                    late.push(key);
                    continue;
                }
                _ => {}
            }
            if let Some(limit) = idle {
                let quiet = c.sendq.len == 0 && !c.send_inflight && c.partial_since.is_none();
                if quiet && c.active.until(now) >= limit {
                    idle_keys.push(key);
                }
            }
        }
        // Each key is in at most one list, but acting on one connection can end it (and free
        // its slot) before a later list is reached: look every key up again.
        let open = |core: &Core, key: usize| core.conns.get(key).is_some_and(|c| c.status == Status::Established);
        for key in handshakes {
            if open(self, key) {
                let after = self.cfg.tls.as_ref().map(|t| t.handshake_timeout).unwrap_or_default();
                self.destroy(key, Some(ConnError::Tls(crate::error::TlsFailure::HandshakeTimeout(after))));
            }
        }
        for key in idle_keys {
            if open(self, key) {
                #[cfg(test)]
                crate::sim::observe_idle_close(self.id_of(key));
                self.close(key, None);
            }
        }
        for key in dead {
            if open(self, key) {
                let after = self.conns[key].ws.and_then(|ws| ws.interval(ping)).unwrap_or_default();
                self.destroy(key, Some(ConnError::NoPong { after }));
            }
        }
        for key in to_ping {
            if open(self, key)
                && self.send(key, b"", Enc::Kind(ringman_protocols::MessageKind::Ping)) != SendStatus::Failed
            {
                if let Some(ws) = self.conns.get_mut(key).and_then(|c| c.ws.as_mut()) {
                    ws.ping_sent = Some(now);
                }
            }
        }
        for key in late {
            if !open(self, key) {
                continue;
            }
            let err = ringman_protocols::ProtocolError::Timeout(packet.unwrap_or_default());
            let c = &mut self.conns[key];
            let mut reply = Vec::new();
            if let Some(d) = c.decoder.as_mut() {
                if let Err(p) = error_reply(d.as_mut(), &err, &mut reply) {
                    self.destroy(key, Some(ConnError::Panic(p)));
                    continue;
                }
            }
            if let Some(f) = c.framer.as_mut() {
                f.discard();
            }
            c.partial_since = None;
            self.fail(key, err, &reply);
        }
    }
}
