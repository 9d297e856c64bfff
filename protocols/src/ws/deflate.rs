//! permessage-deflate (RFC 7692): negotiation, inflating with a size guard, deflating.
//!
//! The backend is `flate2` with its default pure-Rust `miniz_oxide`, which always compresses
//! with a 32 KiB window. Offers that require `server_max_window_bits` below 15 are therefore
//! declined (the next offer is tried, else the connection runs uncompressed). Inflating uses a
//! 32 KiB window, which decodes data compressed with any smaller window, so
//! `client_max_window_bits` needs no restriction and is never echoed.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{HandshakeRequest, WsError};

/// The sync-flush tail stripped from each compressed message and restored before inflating.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Negotiated permessage-deflate parameters, in wire terms (`server_*` always describe the
/// server's compressor, whichever end holds them).
///
/// Hand them to [`Encoder::configure`](crate::Encoder::configure) after the handshake (the
/// encoders accept `DeflateParams` or `Option<DeflateParams>`); each end picks its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message (the server may reset its
    /// inflater too).
    pub client_no_context_takeover: bool,
    /// The client asked the server to use at most this window (9-15 when accepted; 8 is
    /// declined because zlib's raw deflate cannot use a 256-byte window).
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` as offered (`Some(15)` when sent without a value); not echoed.
    pub client_max_window_bits: Option<u8>,
    /// Compression level for outgoing messages (0-9, not negotiated; default 6).
    pub level: u32,
}

impl Default for DeflateParams {
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            level: 6,
        }
    }
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value accepting these parameters.
    ///
    /// ```
    /// use ringman_protocols::ws::DeflateParams;
    /// let p = DeflateParams { client_no_context_takeover: true, ..Default::default() };
    /// assert_eq!(p.response_header(), "permessage-deflate; client_no_context_takeover");
    /// ```
    pub fn response_header(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(b) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={b}"));
        }
        s
    }
}

/// Picks the first acceptable permessage-deflate offer of `req` (deterministic: the engine
/// and the decoder call it on the same request and get the same answer).
///
/// ```
/// use ringman_protocols::ws::{negotiate_deflate, HandshakeRequest};
/// let head = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
///     Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
/// let p = negotiate_deflate(&HandshakeRequest::parse(head).unwrap()).unwrap();
/// assert_eq!(p.response_header(), "permessage-deflate");
/// ```
pub fn negotiate_deflate(req: &HandshakeRequest<'_>) -> Option<DeflateParams> {
    req.extensions.iter().find_map(|offer| parse_offer(offer))
}

/// Parses one extension offer (`permessage-deflate; param; param=value`); `None` if it is
/// another extension, malformed, or asks for something zlib cannot do
/// (`server_max_window_bits=8`).
pub fn parse_offer(offer: &str) -> Option<DeflateParams> {
    parse_params(offer).filter(|p| p.server_max_window_bits.is_none_or(|b| b >= 9))
}

/// Parses a permessage-deflate extension element without judging the window sizes.
pub(crate) fn parse_params(offer: &str) -> Option<DeflateParams> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut p = DeflateParams::default();
    let (mut seen_snct, mut seen_cnct) = (false, false);
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (part, None),
        };
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() && !seen_snct => {
                seen_snct = true;
                p.server_no_context_takeover = true;
            }
            "client_no_context_takeover" if value.is_none() && !seen_cnct => {
                seen_cnct = true;
                p.client_no_context_takeover = true;
            }
            "server_max_window_bits" if p.server_max_window_bits.is_none() => {
                p.server_max_window_bits = Some(window_bits(value?)?);
            }
            "client_max_window_bits" if p.client_max_window_bits.is_none() => {
                p.client_max_window_bits = Some(match value {
                    Some(v) => window_bits(v)?,
                    None => 15,
                });
            }
            _ => return None,
        }
    }
    Some(p)
}

fn unquote(v: &str) -> Option<&str> {
    match v.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(v),
    }
}

fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') {
        return None;
    }
    v.parse().ok().filter(|b| (8..=15).contains(b))
}

/// Per-connection inflater for received messages.
pub struct Inflater {
    d: Decompress,
    reset_each_message: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("reset_each_message", &self.reset_each_message).finish()
    }
}

/// Output reserved per inflate step.
const CHUNK: usize = 16 * 1024;

impl Inflater {
    /// An inflater; `no_context_takeover` resets the window after every message.
    pub fn new(no_context_takeover: bool) -> Self {
        Inflater { d: Decompress::new(false), reset_each_message: no_context_takeover }
    }

    /// Inflates one fragment of a compressed message, appending to `out`; `fin` marks the
    /// last fragment (the stripped sync tail is restored after it). Fails with
    /// [`WsError::TooLarge`] as soon as `out` would exceed `max` bytes, without allocating
    /// much beyond it (a decompression bomb is cut short).
    pub fn inflate(&mut self, input: &[u8], fin: bool, out: &mut Vec<u8>, max: usize) -> Result<(), WsError> {
        self.feed(input, out, max)?;
        if fin {
            self.feed(&TAIL, out, max)?;
            if self.reset_each_message {
                self.d.reset(false);
            }
        }
        Ok(())
    }

    /// Forgets the current message (after an error, or to start over).
    pub fn reset(&mut self) {
        self.d.reset(false);
    }

    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), WsError> {
        loop {
            if out.len() > max {
                return Err(WsError::TooLarge { len: out.len(), max });
            }
            let room = (max + 1 - out.len()).min(CHUNK);
            if out.capacity() - out.len() < room {
                out.reserve(room);
            }
            let (in0, out0) = (self.d.total_in(), out.len());
            let status = self.d.decompress_vec(input, out, FlushDecompress::Sync).map_err(|_| WsError::Inflate)?;
            let used = (self.d.total_in() - in0) as usize;
            input = &input[used..];
            if out.len() > max {
                return Err(WsError::TooLarge { len: out.len(), max });
            }
            let full = out.len() == out.capacity();
            match status {
                Status::StreamEnd => {
                    // A final deflate block (BFINAL): the stream is over; what follows is
                    // only the restored tail, and a new stream starts with the next message.
                    self.d.reset(false);
                    return Ok(());
                }
                _ if input.is_empty() && !full => return Ok(()),
                _ if used == 0 && out.len() == out0 && !full => return Err(WsError::Inflate),
                _ => {}
            }
        }
    }
}

/// Per-connection deflater for sent messages.
pub struct Deflater {
    c: Compress,
    reset_each_message: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").field("reset_each_message", &self.reset_each_message).finish()
    }
}

impl Deflater {
    /// A deflater at `level` (0-9); `no_context_takeover` resets the window after every message.
    pub fn new(level: u32, no_context_takeover: bool) -> Self {
        Deflater::with_window_bits(level, no_context_takeover, 15)
    }

    /// A deflater whose LZ77 window is `2^bits` bytes (9-15), as negotiated with
    /// `server_max_window_bits` / `client_max_window_bits`.
    pub fn with_window_bits(level: u32, no_context_takeover: bool, bits: u8) -> Self {
        let c = Compress::new_with_window_bits(Compression::new(level.min(9)), false, bits.clamp(9, 15));
        Deflater { c, reset_each_message: no_context_takeover }
    }

    /// Appends the compressed form of one whole message to `out` (sync-flushed, tail
    /// stripped, as RFC 7692 §7.2.1 requires).
    pub fn deflate(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        // Reserve deflate's worst case so one call usually suffices; then feed the input
        // without flushing and finish with a separate sync flush. (Asking for a sync flush
        // while the output buffer runs full lost input with the miniz backend: Autobahn
        // 12.2.9 found it, message 40 came back 180 bytes short.)
        out.reserve(input.len() + input.len() / 16 + 64);
        let mut rest = input;
        while !rest.is_empty() {
            if out.capacity() - out.len() < 64 {
                out.reserve(rest.len() / 2 + 1024);
            }
            let before = self.c.total_in();
            // Errors are impossible with valid buffers.
            let _ = self.c.compress_vec(rest, out, FlushCompress::None);
            rest = &rest[(self.c.total_in() - before) as usize..];
        }
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            let _ = self.c.compress_vec(&[], out, FlushCompress::Sync);
            if out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // An empty message compresses to a single empty stored block's first byte.
            out.push(0x00);
        }
        if self.reset_each_message {
            self.c.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers() {
        assert_eq!(parse_offer("x-webkit-deflate-frame"), None);
        assert_eq!(parse_offer("permessage-deflate"), Some(DeflateParams::default()));
        let p = parse_offer("permessage-deflate; client_max_window_bits; server_no_context_takeover").unwrap();
        assert!(p.server_no_context_takeover && p.client_max_window_bits == Some(15));
        assert_eq!(
            parse_offer("permessage-deflate; server_max_window_bits=10").unwrap().server_max_window_bits,
            Some(10)
        );
        assert_eq!(parse_offer("permessage-deflate; server_max_window_bits=8"), None);
        assert_eq!(
            parse_offer("permessage-deflate; server_max_window_bits=\"15\"").unwrap().server_max_window_bits,
            Some(15)
        );
        assert_eq!(
            parse_offer("permessage-deflate; client_max_window_bits=9").unwrap().client_max_window_bits,
            Some(9)
        );
        assert_eq!(parse_offer("permessage-deflate; client_max_window_bits=16"), None);
        assert_eq!(parse_offer("permessage-deflate; client_max_window_bits=07"), None);
        assert_eq!(parse_offer("permessage-deflate; server_max_window_bits"), None);
        assert_eq!(parse_offer("permessage-deflate; server_no_context_takeover=1"), None);
        assert_eq!(parse_offer("permessage-deflate; server_no_context_takeover; server_no_context_takeover"), None);
        assert_eq!(parse_offer("permessage-deflate; foo"), None);
    }

    #[test]
    fn first_acceptable_offer_wins() {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8, foo\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover, permessage-deflate\r\n\r\n";
        let req = HandshakeRequest::parse(head).unwrap();
        let p = negotiate_deflate(&req).unwrap();
        assert!(p.client_no_context_takeover);
        assert_eq!(p.response_header(), "permessage-deflate; client_no_context_takeover");
    }

    fn round_trip(no_ctx: bool) {
        let mut d = Deflater::new(6, no_ctx);
        let mut i = Inflater::new(no_ctx);
        let msgs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"hello hello hello hello".to_vec(),
            (0..100_000u32).map(|x| (x % 251) as u8).collect(),
            b"hello hello hello hello".to_vec(),
            (0..5000u32).map(|x| (x.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        ];
        for m in &msgs {
            let mut wire = Vec::new();
            d.deflate(m, &mut wire);
            assert!(!wire.ends_with(&TAIL) || m.is_empty());
            // Inflate in uneven pieces.
            let mut out = Vec::new();
            let cut = wire.len() / 3;
            i.inflate(&wire[..cut], false, &mut out, 1 << 20).unwrap();
            i.inflate(&wire[cut..], true, &mut out, 1 << 20).unwrap();
            assert_eq!(&out, m);
        }
    }

    #[test]
    fn round_trips_with_and_without_context_takeover() {
        round_trip(false);
        round_trip(true);
    }

    #[test]
    fn context_takeover_shrinks_repeats() {
        let mut d = Deflater::new(6, false);
        let msg = b"The quick brown fox jumps over the lazy dog, again and again.";
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.deflate(msg, &mut a);
        d.deflate(msg, &mut b);
        assert!(b.len() < a.len());
    }

    #[test]
    fn bomb_is_cut_short() {
        let mut d = Deflater::new(9, false);
        let mut wire = Vec::new();
        d.deflate(&vec![0u8; 10 << 20], &mut wire);
        assert!(wire.len() < 20_000);
        let mut out = Vec::new();
        let e = Inflater::new(false).inflate(&wire, true, &mut out, 64 * 1024).unwrap_err();
        assert!(matches!(e, WsError::TooLarge { max: 65536, .. }));
        assert!(out.capacity() < 256 * 1024, "allocated {}", out.capacity());
    }

    #[test]
    fn garbage_fails() {
        let mut out = Vec::new();
        assert_eq!(Inflater::new(false).inflate(&[0xff; 16], true, &mut out, 1 << 20), Err(WsError::Inflate));
    }

    #[test]
    fn rfc7692_hello_examples() {
        // §7.2.3.1: "Hello" compressed in one message.
        let mut out = Vec::new();
        Inflater::new(false).inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], true, &mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.3: uncompressed (stored) block.
        let mut out = Vec::new();
        Inflater::new(false)
            .inflate(&[0x00, 0x05, 0x00, 0xfa, 0xff, b'H', b'e', b'l', b'l', b'o', 0x00], true, &mut out, 100)
            .unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.2: context takeover, second message refers back to the first.
        let mut i = Inflater::new(false);
        let mut out = Vec::new();
        i.inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], true, &mut out, 100).unwrap();
        out.clear();
        i.inflate(&[0xf2, 0x00, 0x11, 0x00, 0x00], true, &mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
    }
}
