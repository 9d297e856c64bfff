//! One connection's TLS session: the narrow interface the receive and send state machines
//! use ([`TlsSession`]) and its implementation over rustls 0.23's unbuffered connection API
//! ([`Unbuffered`]).
//!
//! The state machines never see a TLS type: they hand over the ciphertext of a receive
//! buffer and get plaintext for the framer; they hand over plaintext (encoded messages) and
//! get records written through a [`RecordSink`] straight into the free bytes of the send
//! queue's chunks. Handshake records produced while reading (the server's flight, alerts,
//! session tickets) come out through the same sink, so nothing waits for the application to
//! send.
//!
//! Copies on the path of one message with [`Unbuffered`] (rustls 0.23.x):
//! - receive: a record that lies whole in one receive buffer is decrypted in place there;
//!   the bytes of a record split across receive buffers are first copied into the session's
//!   window (`Unbuffered::window`) and decrypted in place there. rustls then copies the
//!   plaintext of each record into a `Vec` of its own (one allocation per record: 0.23's
//!   `ReadTraffic` pops it from an internal queue), and the session copies it on to the
//!   framer's input. The buffered `Connection` copied every record once more (into its
//!   deframer buffer).
//! - send: `WriteTraffic::encrypt` writes the records into the queue's chunk; inside, 0.23's
//!   record layer still encrypts each record into a `Vec` of its own and copies it into the
//!   slice (one allocation and one copy per record), as the buffered connection did before
//!   its records were copied into the chunks.
//!
//! rustls's buffered connection sits behind the same trait in `session/buffered.rs`, compiled
//! for the tests and with the `tls-buffered` feature only: the measurements in
//! ARCHITECTURE.md ("TLS") compare the two (`benches/tls_cost.rs`, the `session_cost` test).

use std::sync::Arc;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, UnbufferedStatus, WriteTraffic,
};
use rustls::CommonState;

use crate::buffers::CHUNK;
use crate::error::TlsFailure;

/// Where a session writes the records it produces: the end of the connection's send queue,
/// whose chunks' free bytes a record is written into in place.
pub(crate) trait RecordSink {
    /// Copies `bytes` (records made elsewhere: the buffered session's, the simulator's
    /// pass-through) to the end of the queue.
    #[cfg(any(test, feature = "tls-buffered"))]
    fn append(&mut self, bytes: &[u8]);
    /// The free bytes after the queue's last byte, in its tail chunk (possibly none).
    fn room(&mut self) -> &mut [u8];
    /// At least `n` free contiguous bytes after the queue's last byte: the tail chunk's when
    /// it has them, else those of a fresh chunk (a block of exactly `n` bytes of its own when
    /// `n` exceeds a chunk).
    fn reserve(&mut self, n: usize) -> &mut [u8];
    /// The first `n` bytes of the slice the last `room` or `reserve` returned now hold
    /// records: they join the queue.
    fn commit(&mut self, n: usize);
    /// Bytes in the queue.
    fn queued(&self) -> usize;
}

/// Where a session writes the records it produces (the connection's send queue).
pub(crate) type Sink<'a> = &'a mut dyn RecordSink;

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
    /// Takes ciphertext as received (the receive buffer: a session may decrypt in place),
    /// appends the plaintext it carried to `plain`, writes the records it made the session
    /// produce to `out`. On an error the alert (if any) is written to `out` first.
    fn feed(&mut self, ciphertext: &mut [u8], plain: &mut Vec<u8>, out: Sink<'_>) -> Result<Fed, TlsFailure>;
    /// Encrypts `plain` into records written to `out`. Only once the handshake is done: the
    /// reactor holds what is sent before (counted against the send limit) and hands it over
    /// when `feed` reports the handshake done. Nothing after a failure or `close_notify`.
    fn encrypt(&mut self, plain: &[u8], out: Sink<'_>);
    /// Writes `close_notify` (once; nothing after a failure, nor before the handshake is
    /// done: no record can be protected yet).
    fn close_notify(&mut self, out: Sink<'_>);
    /// Whether the handshake is still in progress.
    fn handshaking(&self) -> bool;
    /// The peer's certificate (DER), when it presented one that verified.
    fn peer_certificate(&self) -> Option<Vec<u8>>;
}

/// Which rustls API sessions are built on.
#[cfg(any(test, feature = "tls-buffered"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `UnbufferedServerConnection` / `UnbufferedClientConnection` (the default).
    Unbuffered,
    /// The buffered `ServerConnection` / `ClientConnection`, kept to measure against.
    Buffered,
}

/// The API of this process's sessions: [`Api::Unbuffered`] unless the environment says
/// `RINGMAN_TLS_SESSION=buffered` (read once).
#[cfg(feature = "tls-buffered")]
pub(crate) fn api() -> Api {
    static API: std::sync::OnceLock<Api> = std::sync::OnceLock::new();
    *API.get_or_init(|| match std::env::var("RINGMAN_TLS_SESSION").as_deref() {
        Ok("buffered") => {
            log::info!("TLS sessions over rustls's buffered connection (RINGMAN_TLS_SESSION)");
            Api::Buffered
        }
        _ => Api::Unbuffered,
    })
}

/// A server session.
pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Box<dyn TlsSession>, TlsFailure> {
    #[cfg(feature = "tls-buffered")]
    if api() == Api::Buffered {
        return Ok(Box::new(Buffered::server(config)?));
    }
    let conn = UnbufferedServerConnection::new(config).map_err(|e| TlsFailure::Handshake(e.to_string()))?;
    Ok(Box::new(Unbuffered::new(conn, true)))
}

/// A client session verifying the server as `name`.
pub(crate) fn client(
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> Result<Box<dyn TlsSession>, TlsFailure> {
    #[cfg(feature = "tls-buffered")]
    if api() == Api::Buffered {
        return Ok(Box::new(Buffered::client(config, name)?));
    }
    let conn = UnbufferedClientConnection::new(config, name).map_err(|e| TlsFailure::Handshake(e.to_string()))?;
    Ok(Box::new(Unbuffered::new(conn, false)))
}

/// The first byte of a TLS handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Bytes of a TLS record header (type, version, length).
const RECORD_HEADER: usize = 5;

/// rustls's largest record payload (it fragments application data at 2^14 bytes).
const MAX_FRAGMENT: usize = 16 * 1024;

/// The largest record a peer may send: 2^14 bytes of payload plus 2048 of expansion, and
/// the header.
const MAX_RECORD: usize = MAX_FRAGMENT + 2048 + RECORD_HEADER;

/// The smallest share of a large message worth a record in the rest of a chunk; less, and
/// the next chunk begins.
const MIN_PIECE: usize = 1024;

/// Whether `bytes` open like an HTTP/1 request line (a method in capitals, then a space).
fn looks_like_http(bytes: &[u8]) -> bool {
    let method_len = bytes.iter().take(8).take_while(|b| b.is_ascii_uppercase()).count();
    method_len >= 3 && bytes.get(method_len) == Some(&b' ') || method_len == bytes.len() && method_len > 0
}

/// A rustls error as the connection reports it.
fn failure(handshaking: bool, e: rustls::Error) -> TlsFailure {
    if handshaking {
        TlsFailure::Handshake(e.to_string())
    } else {
        TlsFailure::Peer(e.to_string())
    }
}

// ------------------------------------------------------------------------------ unbuffered

/// The side of an unbuffered connection: rustls defines `process_tls_records` for each.
pub(crate) trait Side {
    /// rustls's per-side data.
    type Data;
    /// `process_tls_records` of this side.
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// The state both sides share (handshaking, the peer's certificates).
    fn common(&self) -> &CommonState;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &CommonState {
        self
    }
}

/// A session over rustls's unbuffered connection (client or server).
pub(crate) struct Unbuffered<C> {
    conn: C,
    /// Received ciphertext rustls has not discarded yet: the start of a record whose rest
    /// has not arrived (and the handshake fragments rustls joins in place until a message is
    /// whole). Bounded by one handshake message plus a record, since every complete record is
    /// processed at once; its memory is taken (room for a whole record at once) when a record
    /// straddles receives and given back when a receive ends on a record boundary, so an
    /// idle connection holds none.
    window: Vec<u8>,
    /// Nothing was received yet (a server checks that the first byte opens a TLS record).
    fresh: bool,
    failed: bool,
    /// `close_notify` was written.
    closed: bool,
    /// The peer's `close_notify` was read: later input is ignored.
    peer_closed: bool,
}

/// What a pump does once the session can send application data.
enum Then<'a> {
    /// Nothing: stop there.
    Rest,
    /// Encrypt these bytes.
    Encrypt(&'a [u8]),
    /// Write `close_notify`.
    CloseNotify,
}

/// How a pump ended without an error.
#[derive(Default)]
struct Pumped {
    /// The peer's `close_notify` was read.
    peer_closed: bool,
    /// Its `Then` was done (the session reached the state that allows it).
    done: bool,
}

impl<C: Side> Unbuffered<C> {
    fn new(conn: C, server: bool) -> Unbuffered<C> {
        Unbuffered { conn, window: Vec::new(), fresh: server, failed: false, closed: false, peer_closed: false }
    }

    /// Runs the session over the window (no new input) until it rests, doing `then` when it
    /// can send.
    fn pump_window(&mut self, plain: &mut Vec<u8>, out: Sink<'_>, then: Then<'_>) -> Result<Pumped, rustls::Error> {
        let (used, r) = pump(&mut self.conn, &mut self.window, plain, out, then);
        self.window.drain(..used);
        r
    }

    /// Feeds `input` in as few copies as the record boundaries allow: records that lie
    /// whole in it are decrypted in place; only the bytes of a record that began in an
    /// earlier receive, and the start of one that ends in a later one, go through the
    /// window.
    fn take_input(
        &mut self,
        mut input: &mut [u8],
        plain: &mut Vec<u8>,
        out: Sink<'_>,
    ) -> Result<Pumped, rustls::Error> {
        let mut all = Pumped::default();
        while !input.is_empty() && !all.peer_closed {
            let r = if self.window.is_empty() {
                let (used, r) = pump(&mut self.conn, input, plain, &mut *out, Then::Rest);
                keep(&mut self.window, &input[used..]);
                input = &mut [];
                r
            } else {
                // Complete the record the window begins with, then go on in place. (When the
                // window holds joined handshake fragments its first bytes are no header: the
                // guess is wrong, rustls leaves bytes in the window, and the rest of the
                // input follows them there: correct either way.)
                let need = record_rest(&self.window, input).clamp(1, input.len());
                let (head, rest) = std::mem::take(&mut input).split_at_mut(need);
                keep(&mut self.window, head);
                let r = self.pump_window(plain, &mut *out, Then::Rest);
                if self.window.is_empty() || rest.is_empty() || r.is_err() {
                    input = rest;
                } else {
                    keep(&mut self.window, rest);
                    let more = self.pump_window(plain, &mut *out, Then::Rest);
                    all.peer_closed |= more.as_ref().is_ok_and(|p| p.peer_closed);
                    more?;
                }
                r
            };
            all.peer_closed |= r?.peer_closed;
        }
        Ok(all)
    }
}

/// Appends `bytes` to the window, giving an empty one room for a whole record at once (no
/// growth by steps while a record arrives).
fn keep(window: &mut Vec<u8>, bytes: &[u8]) {
    if window.capacity() == 0 && !bytes.is_empty() {
        window.reserve_exact(MAX_RECORD.max(bytes.len()));
    }
    window.extend_from_slice(bytes);
}

/// Bytes still missing from the record that `window` begins with, reading its header from
/// `window` and then `input`; all of `input` when the header is incomplete even so.
fn record_rest(window: &[u8], input: &[u8]) -> usize {
    let mut header = [0u8; RECORD_HEADER];
    for (i, b) in window.iter().chain(input).take(RECORD_HEADER).enumerate() {
        header[i] = *b;
    }
    if window.len() + input.len() < RECORD_HEADER {
        return input.len();
    }
    let total = RECORD_HEADER + usize::from(u16::from_be_bytes([header[3], header[4]]));
    total.saturating_sub(window.len())
}

/// Drives `conn` over `buf` until it rests (needs more input, or can send and `then` is
/// done): plaintext to `plain`, records to `out`. Returns the bytes of `buf` rustls is done
/// with (to be removed from its front). On an error the alerts rustls queued are written to
/// `out` first.
fn pump<C: Side>(
    conn: &mut C,
    buf: &mut [u8],
    plain: &mut Vec<u8>,
    out: Sink<'_>,
    mut then: Then<'_>,
) -> (usize, Result<Pumped, rustls::Error>) {
    let mut used = 0;
    let mut pumped = Pumped::default();
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut buf[used..]);
        let mut rest = false;
        let mut error = None;
        match state {
            Err(e) => error = Some(e),
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(record) = r.next_record() {
                    match record {
                        Ok(record) => {
                            discard += record.discard;
                            plain.extend_from_slice(record.payload);
                        }
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
            }
            Ok(ConnectionState::EncodeTlsData(mut e)) => encode(&mut e, out),
            // (The records are in the send queue: the reactor submits it.)
            Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
            Ok(ConnectionState::PeerClosed) => pumped.peer_closed = true,
            Ok(ConnectionState::WriteTraffic(mut w)) => {
                rest = true;
                pumped.done = true;
                match std::mem::replace(&mut then, Then::Rest) {
                    Then::Rest => {}
                    Then::Encrypt(p) => {
                        if let Err(e) = encrypt(&mut w, p, out) {
                            error = Some(rustls::Error::General(format!("encrypting: {e}")));
                        }
                    }
                    Then::CloseNotify => close_notify(&mut w, out),
                }
            }
            // Early data is never accepted (the configurations leave `max_early_data_size`
            // at 0, so rustls refuses it in the handshake); if it came anyway, it is
            // neither delivered nor dropped silently.
            Ok(ConnectionState::ReadEarlyData(_)) => {
                error = Some(rustls::Error::General("early data, which this server does not accept".into()))
            }
            // BlockedHandshake, Closed, and any state a later 0.23 adds.
            Ok(_) => rest = true,
        }
        used += discard;
        if let Some(e) = error {
            flush_alerts(conn, out);
            return (used, Err(e));
        }
        if rest {
            return (used, Ok(pumped));
        }
    }
}

/// After an error: writes the records rustls queued (its alert) to `out`. (Each call
/// hands out a queued record before it would look at any input, so no input is passed: the
/// record that failed must not be processed again.)
fn flush_alerts<C: Side>(conn: &mut C, out: Sink<'_>) {
    while conn.common().wants_write() {
        match conn.process(&mut []).state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => encode(&mut e, out),
            // (Plaintext of a failed session is not delivered.)
            Ok(ConnectionState::ReadTraffic(mut r)) => while r.next_record().is_some() {},
            _ => return,
        }
    }
}

/// Writes a record rustls made (a handshake message, an alert) into the queue.
fn encode<D>(e: &mut EncodeTlsData<'_, D>, out: Sink<'_>) {
    let required_size = match e.encode(out.room()) {
        Ok(n) => return out.commit(n),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => required_size,
        Err(EncodeError::AlreadyEncoded) => return,
    };
    if let Ok(n) = e.encode(out.reserve(required_size)) {
        out.commit(n);
    }
}

/// Encrypts `plain` straight into the queue's chunks: into the tail chunk when the records
/// fit there, else into a fresh chunk; a message whose records exceed a chunk gets a block
/// of its own when it starts an empty queue (one send, as for plaintext), and is otherwise
/// laid out chunk by chunk, one run of records per chunk.
fn encrypt<D>(w: &mut WriteTraffic<'_, D>, mut plain: &[u8], out: Sink<'_>) -> Result<(), EncryptError> {
    let required = match w.encrypt(plain, out.room()) {
        Ok(n) => {
            out.commit(n);
            return Ok(());
        }
        Err(EncryptError::InsufficientSize(s)) => s.required_size,
        Err(e) => return Err(e),
    };
    if required <= CHUNK || out.queued() == 0 {
        let n = w.encrypt(plain, out.reserve(required))?;
        out.commit(n);
        return Ok(());
    }
    // The bytes each record adds (header, tag, content type): the same for every record of
    // a session, over-estimated if rustls also owes a KeyUpdate (then a piece may not fit
    // where planned and takes a chunk of its own).
    let overhead = (required - plain.len()).div_ceil(plain.len().div_ceil(MAX_FRAGMENT));
    while !plain.is_empty() {
        let mut room = out.room().len();
        if fits(room, overhead) < MIN_PIECE.min(plain.len()) {
            room = out.reserve(CHUNK).len();
        }
        let take = fits(room, overhead).clamp(1, plain.len());
        let n = match w.encrypt(&plain[..take], out.room()) {
            Ok(n) => n,
            Err(EncryptError::InsufficientSize(s)) => w.encrypt(&plain[..take], out.reserve(s.required_size))?,
            Err(e) => return Err(e),
        };
        out.commit(n);
        plain = &plain[take..];
    }
    Ok(())
}

/// The most plaintext whose records (of up to [`MAX_FRAGMENT`] bytes, `overhead` bytes
/// more each) fit in `room` bytes.
fn fits(room: usize, overhead: usize) -> usize {
    let record = MAX_FRAGMENT + overhead;
    room / record * MAX_FRAGMENT + (room % record).saturating_sub(overhead)
}

/// Writes `close_notify` into the queue.
fn close_notify<D>(w: &mut WriteTraffic<'_, D>, out: Sink<'_>) {
    let required = match w.queue_close_notify(out.room()) {
        Ok(n) => return out.commit(n),
        Err(EncryptError::InsufficientSize(s)) => s.required_size,
        Err(_) => return,
    };
    if let Ok(n) = w.queue_close_notify(out.reserve(required)) {
        out.commit(n);
    }
}

impl<C: Side> TlsSession for Unbuffered<C> {
    fn start(&mut self, out: Sink<'_>) {
        // (A client's first flight; nothing to read yet, so nothing can fail.)
        if let Err(e) = self.pump_window(&mut Vec::new(), out, Then::Rest) {
            log::error!("TLS session start: {e}");
            self.failed = true;
        }
    }

    fn feed(&mut self, ciphertext: &mut [u8], plain: &mut Vec<u8>, out: Sink<'_>) -> Result<Fed, TlsFailure> {
        if self.failed {
            return Err(TlsFailure::Peer("input after a failed session".into()));
        }
        if self.peer_closed {
            // Nothing may follow close_notify; the connection is closing.
            return Ok(Fed::default());
        }
        if self.fresh && !ciphertext.is_empty() {
            self.fresh = false;
            if ciphertext[0] != HANDSHAKE_RECORD {
                self.failed = true;
                return Err(TlsFailure::NotTls { plain_http: looks_like_http(ciphertext) });
            }
        }
        let was_handshaking = self.conn.common().is_handshaking();
        let taken = self.take_input(ciphertext, plain, out);
        if self.window.is_empty() && self.window.capacity() > 0 {
            self.window = Vec::new();
        }
        match taken {
            Ok(p) => {
                self.peer_closed = p.peer_closed;
                let handshake_done = was_handshaking && !self.conn.common().is_handshaking();
                Ok(Fed { handshake_done, peer_closed: p.peer_closed })
            }
            Err(e) => {
                self.failed = true;
                self.window = Vec::new();
                Err(failure(was_handshaking && self.conn.common().is_handshaking(), e))
            }
        }
    }

    fn encrypt(&mut self, plain: &[u8], out: Sink<'_>) {
        if self.failed || self.closed || plain.is_empty() {
            return;
        }
        match self.pump_window(&mut Vec::new(), out, Then::Encrypt(plain)) {
            Ok(p) if p.done => {}
            Ok(_) => log::error!("TLS: {} bytes to encrypt before the handshake is done: dropped", plain.len()),
            Err(e) => {
                log::error!("TLS: {e}");
                self.failed = true;
            }
        }
    }

    fn close_notify(&mut self, out: Sink<'_>) {
        if self.failed || self.closed || self.conn.common().is_handshaking() {
            return;
        }
        self.closed = true;
        if let Err(e) = self.pump_window(&mut Vec::new(), out, Then::CloseNotify) {
            log::debug!("TLS close_notify: {e}");
        }
    }

    fn handshaking(&self) -> bool {
        self.conn.common().is_handshaking()
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        let common = self.conn.common();
        if common.is_handshaking() {
            return None;
        }
        Some(common.peer_certificates()?.first()?.as_ref().to_vec())
    }
}

// ------------------------------------------------------------------------------ simulator

/// The simulator's session: no handshake, no records; plaintext passes unchanged both ways,
/// so the simulated peers speak plaintext while the connection takes the TLS paths.
#[cfg(test)]
pub(crate) struct PassThrough;

#[cfg(test)]
impl TlsSession for PassThrough {
    fn start(&mut self, _out: Sink<'_>) {}

    fn feed(&mut self, ciphertext: &mut [u8], plain: &mut Vec<u8>, _out: Sink<'_>) -> Result<Fed, TlsFailure> {
        plain.extend_from_slice(ciphertext);
        Ok(Fed::default())
    }

    fn encrypt(&mut self, plain: &[u8], out: Sink<'_>) {
        out.append(plain);
    }

    fn close_notify(&mut self, _out: Sink<'_>) {}

    fn handshaking(&self) -> bool {
        false
    }

    fn peer_certificate(&self) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(any(test, feature = "tls-buffered"))]
mod buffered;
#[cfg(any(test, feature = "tls-buffered"))]
pub(crate) use buffered::Buffered;

#[cfg(test)]
mod tests;
