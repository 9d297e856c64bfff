//! One connection's TLS session: the narrow interface the receive and send state machines
//! use ([`TlsSession`]) and its implementation over rustls.
//!
//! The state machines never see a TLS type: they hand over the ciphertext of a receive
//! buffer and get plaintext for the framer; they hand over plaintext (encoded messages) and
//! get records for the send queue, written through a sink closure straight into its
//! chunks. Handshake records produced while reading (the server's flight, alerts, session
//! tickets) come out through the same sink, so nothing waits for the application to send.

use std::io::{self, Read, Write};
use std::sync::Arc;

use crate::error::TlsFailure;

/// Where a session writes the records it produces (the connection's send queue).
pub(crate) type Sink<'a> = &'a mut dyn FnMut(&[u8]);

/// What one [`TlsSession::feed`] found besides plaintext.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fed {
    /// The handshake completed during this call.
    pub(crate) handshake_done: bool,
    /// The peer sent `close_notify`: it sends nothing more.
    pub(crate) peer_closed: bool,
}

/// The operations the reactor needs from a TLS session.
pub(crate) trait TlsSession {
    /// Records produced before any input (a client's ClientHello).
    fn start(&mut self, out: Sink<'_>);
    /// Takes ciphertext as received, appends the plaintext it carried to `plain`, writes
    /// the records it made the session produce to `out`. On an error the alert (if any) is
    /// written to `out` first.
    fn feed(&mut self, ciphertext: &[u8], plain: &mut Vec<u8>, out: Sink<'_>) -> Result<Fed, TlsFailure>;
    /// Encrypts `plain` into records written to `out` (held inside until the handshake
    /// completes, then written out by the `feed` that completes it).
    fn encrypt(&mut self, plain: &[u8], out: Sink<'_>);
    /// Writes `close_notify` (once; nothing after a failure).
    fn close_notify(&mut self, out: Sink<'_>);
    /// Whether the handshake is still in progress.
    fn handshaking(&self) -> bool;
    /// The peer's certificate (DER), when it presented one that verified.
    fn peer_certificate(&self) -> Option<Vec<u8>>;
}

/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// A session over rustls's buffered connection (client or server).
pub(crate) struct Rustls {
    conn: rustls::Connection,
    /// Nothing was received yet (a server checks that the first byte opens a TLS record).
    fresh: bool,
    failed: bool,
    closed: bool,
}

impl Rustls {
    /// A server session.
    pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Rustls, TlsFailure> {
        let mut conn = rustls::ServerConnection::new(config).map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        // The send queue's limit governs what the application may queue.
        conn.set_buffer_limit(None);
        Ok(Rustls { conn: conn.into(), fresh: true, failed: false, closed: false })
    }

    /// A client session verifying the server as `name`.
    pub(crate) fn client(
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Rustls, TlsFailure> {
        let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        conn.set_buffer_limit(None);
        Ok(Rustls { conn: conn.into(), fresh: false, failed: false, closed: false })
    }

    fn flush(&mut self, out: Sink<'_>) {
        let mut w = SinkWriter(out);
        while self.conn.wants_write() {
            // Writing into memory cannot fail.
            if self.conn.write_tls(&mut w).is_err() {
                break;
            }
        }
    }
}

/// `io::Write` over a sink, for `write_tls`.
struct SinkWriter<'a>(Sink<'a>);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            (self.0)(b);
            n += b.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether `bytes` open like an HTTP/1 request line (a method in capitals, then a space).
fn looks_like_http(bytes: &[u8]) -> bool {
    let method_len = bytes.iter().take(8).take_while(|b| b.is_ascii_uppercase()).count();
    method_len >= 3 && bytes.get(method_len) == Some(&b' ') || method_len == bytes.len() && method_len > 0
}

impl TlsSession for Rustls {
    fn start(&mut self, out: Sink<'_>) {
        self.flush(out);
    }

    fn feed(&mut self, mut ciphertext: &[u8], plain: &mut Vec<u8>, out: Sink<'_>) -> Result<Fed, TlsFailure> {
        if self.failed {
            return Err(TlsFailure::Peer("input after a failed session".into()));
        }
        if self.fresh && !ciphertext.is_empty() {
            self.fresh = false;
            if ciphertext[0] != HANDSHAKE_RECORD {
                self.failed = true;
                return Err(TlsFailure::NotTls { plain_http: looks_like_http(ciphertext) });
            }
        }
        let was_handshaking = self.conn.is_handshaking();
        let mut fed = Fed::default();
        while !ciphertext.is_empty() {
            if let Err(e) = self.conn.read_tls(&mut ciphertext) {
                self.failed = true;
                return Err(TlsFailure::Peer(e.to_string()));
            }
            let state = match self.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    self.failed = true;
                    // The alert that tells the peer why.
                    self.flush(out);
                    return Err(failure(was_handshaking && self.conn.is_handshaking(), e));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let at = plain.len();
                plain.resize(at + n, 0);
                if self.conn.reader().read_exact(&mut plain[at..]).is_err() {
                    plain.truncate(at);
                }
            }
            fed.peer_closed |= state.peer_has_closed();
        }
        fed.handshake_done = was_handshaking && !self.conn.is_handshaking();
        self.flush(out);
        Ok(fed)
    }

    fn encrypt(&mut self, plain: &[u8], out: Sink<'_>) {
        if self.failed || self.closed {
            return;
        }
        // With no buffer limit the writer takes everything.
        let _ = self.conn.writer().write_all(plain);
        self.flush(out);
    }

    fn close_notify(&mut self, out: Sink<'_>) {
        if self.failed || self.closed {
            return;
        }
        self.closed = true;
        self.conn.send_close_notify();
        self.flush(out);
    }

    fn handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        if self.conn.is_handshaking() {
            return None;
        }
        Some(self.conn.peer_certificates()?.first()?.as_ref().to_vec())
    }
}

/// A rustls error as the connection reports it.
fn failure(handshaking: bool, e: rustls::Error) -> TlsFailure {
    if handshaking {
        TlsFailure::Handshake(e.to_string())
    } else {
        TlsFailure::Peer(e.to_string())
    }
}

/// The simulator's session: no handshake, no records; plaintext passes unchanged both ways,
/// so the simulated peers speak plaintext while the connection takes the TLS paths.
#[cfg(test)]
pub(crate) struct PassThrough;

#[cfg(test)]
impl TlsSession for PassThrough {
    fn start(&mut self, _out: Sink<'_>) {}

    fn feed(&mut self, ciphertext: &[u8], plain: &mut Vec<u8>, _out: Sink<'_>) -> Result<Fed, TlsFailure> {
        plain.extend_from_slice(ciphertext);
        Ok(Fed::default())
    }

    fn encrypt(&mut self, plain: &[u8], out: Sink<'_>) {
        out(plain);
    }

    fn close_notify(&mut self, _out: Sink<'_>) {}

    fn handshaking(&self) -> bool {
        false
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        None
    }
}
