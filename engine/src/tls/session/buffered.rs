//! A session over rustls's buffered `Connection`, behind the same [`TlsSession`] trait: not
//! the engine's (see `session.rs`), compiled for the tests and with the `tls-buffered`
//! feature, which lets `RINGMAN_TLS_SESSION=buffered` choose it, to measure the unbuffered
//! session against (`benches/tls_cost.rs`, the `session_cost` test; ARCHITECTURE.md, "TLS").
//!
//! Its copies: `read_tls` copies every record into rustls's deframer buffer, the plaintext
//! is copied into a `Vec` per record and then out by `reader()`; `writer()` encrypts each
//! record into a `Vec` and `write_tls` copies it into the send queue.

use std::io::{self, Read, Write};
use std::sync::Arc;

use super::{failure, looks_like_http, Fed, Sink, TlsSession, HANDSHAKE_RECORD};
use crate::error::TlsFailure;

/// A session over rustls's buffered connection (client or server), kept to measure the
/// unbuffered one against.
pub(crate) struct Buffered {
    conn: rustls::Connection,
    /// Nothing was received yet (a server checks that the first byte opens a TLS record).
    fresh: bool,
    failed: bool,
    closed: bool,
}

impl Buffered {
    pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Buffered, TlsFailure> {
        let mut conn = rustls::ServerConnection::new(config).map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        // The send queue's limit governs what the application may queue.
        conn.set_buffer_limit(None);
        Ok(Buffered { conn: conn.into(), fresh: true, failed: false, closed: false })
    }

    #[cfg(feature = "tls-buffered")]
    pub(crate) fn client(
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Buffered, TlsFailure> {
        let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        conn.set_buffer_limit(None);
        Ok(Buffered { conn: conn.into(), fresh: false, failed: false, closed: false })
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
        self.0.append(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.0.append(b);
            n += b.len();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsSession for Buffered {
    fn start(&mut self, out: Sink<'_>) {
        self.flush(out);
    }

    fn feed(&mut self, ciphertext: &mut [u8], plain: &mut Vec<u8>, out: Sink<'_>) -> Result<Fed, TlsFailure> {
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
        let mut ciphertext: &[u8] = ciphertext;
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
        if self.failed || self.closed || self.conn.is_handshaking() {
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
