//! Client side of every scenario: the bytes of one request and the counting of responses.
//!
//! `text` and `frame` reuse the protocols crate ([`ringman_protocols::Encoder::encode`]
//! builds the request, [`Framer`] splits the responses). `http` and `ws` plug a small response
//! [`Decoder`] of their own into the same [`Framer`]. `echo` counts raw bytes.

use ringman_protocols::{
    Decoder, Delivery, Flow, Frame, Framer, Input, Message, MessageKind, Protocol, ProtocolError, Text,
};

use crate::cli::Scenario;
use crate::error::LoadError;

/// Largest response the client accepts.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// The fixed WebSocket key of the handshake request (RFC 6455's example nonce).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The HTTP request of the `http` scenario.
pub const HTTP_REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";

/// Bytes of one request of `scenario` carrying a `size`-byte payload.
pub fn request(scenario: Scenario, size: usize) -> Vec<u8> {
    let payload = payload(size);
    let mut out = Vec::new();
    match scenario {
        Scenario::Echo => out = payload,
        Scenario::Text => Text.encoder().encode(&payload, MessageKind::Text, &mut out),
        Scenario::Frame => Frame.encoder().encode(&payload, MessageKind::Binary, &mut out),
        Scenario::Ws => ws_client_frame(0x1, &payload, [0x12, 0x34, 0x56, 0x78], &mut out),
        Scenario::Http => out.extend_from_slice(HTTP_REQUEST),
    }
    out
}

/// A printable payload without newlines (valid text, valid UTF-8).
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The WebSocket upgrade request sent before the `ws` scenario starts.
pub fn ws_handshake(host: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Checks a complete handshake response head (`...\r\n\r\n`): the status must be 101.
pub fn check_ws_handshake(head: &[u8]) -> Result<(), LoadError> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line).trim_end().to_string();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some("101")) if v.starts_with("HTTP/1.") => Ok(()),
        _ => Err(LoadError::Handshake(line)),
    }
}

/// Appends a masked client frame (FIN set) with `opcode` and `payload`.
pub fn ws_client_frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Splits unmasked server WebSocket frames; data frames are messages, control frames are not.
#[derive(Debug, Default)]
pub struct WsServerCodec;

impl Decoder for WsServerCodec {
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError> {
        if buf.len() < 2 {
            return Ok(Input::Need);
        }
        let masked = buf[1] & 0x80 != 0;
        let (head, len) = match buf[1] & 0x7f {
            126 if buf.len() < 4 => return Ok(Input::Need),
            126 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
            127 if buf.len() < 10 => return Ok(Input::Need),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(b);
                (10, usize::try_from(len).unwrap_or(usize::MAX))
            }
            n => (2, n as usize),
        };
        let total: usize = head + if masked { 4 } else { 0 };
        let total = total.saturating_add(len);
        if total > max {
            return Err(ProtocolError::TooLarge { len: total, max });
        }
        Ok(Input::Packet(total))
    }

    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        let opcode = packet[0] & 0x0f;
        if packet[1] & 0x80 != 0 {
            return Err(ProtocolError::Malformed { protocol: "websocket", reason: "server frames must not be masked" });
        }
        let head = match packet[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        match opcode {
            0x0..=0x2 => Ok(Some(Message::binary(&packet[head..]))),
            0x8..=0xa => Ok(None),
            _ => Err(ProtocolError::Malformed { protocol: "websocket", reason: "reserved opcode" }),
        }
    }
}

/// Splits HTTP/1.1 responses by their head and `Content-Length`; the message is the status
/// code as three ASCII digits followed by the body.
#[derive(Debug, Default)]
pub struct HttpResponseCodec {
    head_len: usize,
}

fn content_length(head: &[u8]) -> Result<usize, ProtocolError> {
    const BAD: ProtocolError = ProtocolError::Malformed { protocol: "http", reason: "bad Content-Length" };
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = memchr::memchr(b':', line) else { continue };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(&line[colon + 1..]).map_err(|_| BAD)?;
            return v.trim().parse().map_err(|_| BAD);
        }
    }
    Ok(0)
}

impl Decoder for HttpResponseCodec {
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError> {
        let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
            if buf.len() > max {
                return Err(ProtocolError::TooLarge { len: buf.len(), max });
            }
            return Ok(Input::Need);
        };
        if !buf.starts_with(b"HTTP/1.") || end < 12 {
            return Err(ProtocolError::Malformed { protocol: "http", reason: "not an HTTP/1.x status line" });
        }
        self.head_len = end + 4;
        Ok(Input::Packet(self.head_len + content_length(&buf[..end])?))
    }

    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        // "HTTP/1.1 200 ..." -> status digits at 9..12, then the body.
        let head = self.head_len.min(packet.len());
        packet.copy_within(9..12, head - 3);
        Ok(Some(Message::binary(&packet[head - 3..])))
    }
}

/// Per-connection response counter.
pub struct ResponseCounter {
    kind: Counter,
}

enum Counter {
    /// Raw echo: every `size` bytes received is one message.
    Bytes { size: u64, received: u64, counted: u64 },
    /// Framed responses.
    Framed { codec: Box<dyn Decoder>, framer: Framer, status_check: bool },
}

impl ResponseCounter {
    /// A counter for `scenario` where a request carries `size` payload bytes.
    pub fn new(scenario: Scenario, size: usize) -> Self {
        let kind = match scenario {
            Scenario::Echo => Counter::Bytes { size: size.max(1) as u64, received: 0, counted: 0 },
            Scenario::Text => Counter::Framed { codec: Text.decoder(), framer: Framer::new(), status_check: false },
            Scenario::Frame => Counter::Framed { codec: Frame.decoder(), framer: Framer::new(), status_check: false },
            Scenario::Ws => {
                Counter::Framed { codec: Box::new(WsServerCodec), framer: Framer::new(), status_check: false }
            }
            Scenario::Http => Counter::Framed {
                codec: Box::new(HttpResponseCodec::default()),
                framer: Framer::new(),
                status_check: true,
            },
        };
        ResponseCounter { kind }
    }

    /// Feeds received bytes; returns `(complete responses, responses with an error status)`.
    pub fn feed(&mut self, data: &mut [u8]) -> Result<(u64, u64), ProtocolError> {
        match &mut self.kind {
            Counter::Bytes { size, received, counted } => {
                *received += data.len() as u64;
                let done = *received / *size - *counted;
                *counted += done;
                Ok((done, 0))
            }
            Counter::Framed { codec, framer, status_check } => {
                let (mut n, mut bad) = (0u64, 0u64);
                let check = *status_check;
                framer.feed(codec.as_mut(), data, MAX_RESPONSE, |d| {
                    if let Delivery::Message(m) = d {
                        n += 1;
                        if check && !m.starts_with(b"2") {
                            bad += 1;
                        }
                    }
                    Flow::Continue
                })?;
                Ok((n, bad))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: Scenario, size: usize, wire: &[u8], chunk: usize) -> (u64, u64) {
        let mut c = ResponseCounter::new(s, size);
        let (mut n, mut bad) = (0, 0);
        for piece in wire.chunks(chunk.max(1)) {
            let (a, b) = c.feed(&mut piece.to_vec()).unwrap();
            n += a;
            bad += b;
        }
        (n, bad)
    }

    #[test]
    fn echo_counts_bytes() {
        let wire = request(Scenario::Echo, 64).repeat(10);
        for chunk in [1, 7, 64, 100, 640] {
            assert_eq!(count(Scenario::Echo, 64, &wire, chunk), (10, 0));
        }
    }

    #[test]
    fn text_and_frame_echo_their_own_requests() {
        for s in [Scenario::Text, Scenario::Frame] {
            let wire = request(s, 20).repeat(5);
            for chunk in [1, 3, 25, 1000] {
                assert_eq!(count(s, 20, &wire, chunk), (5, 0), "{s:?}");
            }
        }
    }

    #[test]
    fn http_responses_are_split_by_content_length() {
        let one = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nHello World";
        let notfound = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let mut wire = one.repeat(3);
        wire.extend_from_slice(notfound);
        wire.extend_from_slice(one);
        for chunk in [1, 5, 40, 4096] {
            assert_eq!(count(Scenario::Http, 0, &wire, chunk), (5, 1));
        }
        let mut c = ResponseCounter::new(Scenario::Http, 0);
        assert!(c.feed(&mut b"garbage\r\n\r\n".to_vec()).is_err());
    }

    #[test]
    fn ws_frames_of_all_length_forms() {
        let mut wire = Vec::new();
        for len in [0usize, 20, 125, 126, 300, 70_000] {
            wire.push(0x81);
            match len {
                0..=125 => wire.push(len as u8),
                126..=0xffff => {
                    wire.push(126);
                    wire.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    wire.push(127);
                    wire.extend_from_slice(&(len as u64).to_be_bytes());
                }
            }
            wire.extend(std::iter::repeat_n(b'x', len));
        }
        wire.extend_from_slice(&[0x89, 0]); // ping: not a message
        for chunk in [1, 9, 1000, 1 << 20] {
            assert_eq!(count(Scenario::Ws, 0, &wire, chunk), (6, 0));
        }
    }

    #[test]
    fn ws_client_frame_is_masked() {
        let r = request(Scenario::Ws, 20);
        assert_eq!(r[0], 0x81);
        assert_eq!(r[1], 0x80 | 20);
        assert_eq!(r.len(), 2 + 4 + 20);
        let mask = &r[2..6];
        let clear: Vec<u8> = r[6..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(clear, payload(20));
        let mut big = Vec::new();
        ws_client_frame(2, &[0; 70_000], [0; 4], &mut big);
        assert_eq!(big[1], 0x80 | 127);
    }

    #[test]
    fn handshake_status_check() {
        assert!(check_ws_handshake(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_ok());
        assert!(check_ws_handshake(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_err());
        assert!(String::from_utf8(ws_handshake("h")).unwrap().contains(WS_KEY));
    }
}
