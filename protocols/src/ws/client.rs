//! The client side: upgrade request, 101 validation, and the `ws://` client protocol.

use base64::Engine as _;

use super::deflate::parse_params;
use super::handshake::{has_token, header_values, single_value, MAX_HEADERS};
use super::{accept_key, DeflateParams, MaskRng, WsDecoder, WsEncoder};
use crate::{Decoder, Encoder, Protocol};

/// The extension offer a client sends to ask for permessage-deflate. It leaves out
/// `client_max_window_bits`: that parameter lets the server ask for a window below 32 KiB
/// (RFC 7692 §7.1.2.2; Python `websockets` asks for 12 bits), which our deflater cannot honour,
/// so [`validate_response`] would then refuse the answer to our own offer.
pub const DEFLATE_OFFER: &str = "permessage-deflate";

/// A fresh random `Sec-WebSocket-Key` (base64 of 16 pseudo-random bytes).
pub fn generate_key() -> String {
    let mut rng = MaskRng::new();
    let mut raw = [0u8; 16];
    for c in raw.chunks_mut(4) {
        c.copy_from_slice(&rng.key());
    }
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The upgrade request a client sends: `GET path` to `host` with `key`, plus `extra`
/// header fields (fields containing CR or LF are skipped). Add
/// `("Sec-WebSocket-Extensions", DEFLATE_OFFER)` to ask for compression.
///
/// ```
/// use ringman_protocols::ws::{client_handshake_request, HandshakeRequest};
/// let req = client_handshake_request("example.com", "/chat", "dGhlIHNhbXBsZSBub25jZQ==", &[]);
/// assert_eq!(HandshakeRequest::parse(&req).unwrap().path, "/chat");
/// ```
pub fn client_handshake_request(host: &str, path: &str, key: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let path = if path.is_empty() { "/" } else { path };
    let mut s = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (n, v) in extra {
        if !n.is_empty() && !format!("{n}{v}").contains(['\r', '\n']) {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Why a client refuses the server's handshake response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientHandshakeError {
    /// Not a parsable HTTP/1.1 response head.
    #[error("malformed handshake response")]
    Malformed,
    /// The status is not 101 (the server refused the upgrade).
    #[error("server answered {0} instead of 101")]
    Status(u16),
    /// `Upgrade: websocket` or `Connection: upgrade` is missing.
    #[error("response lacks Upgrade: websocket / Connection: upgrade")]
    NotUpgraded,
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    #[error("wrong Sec-WebSocket-Accept")]
    BadAccept,
    /// The server accepted an extension that was not offered or cannot be honoured.
    #[error("unsupported extension in response")]
    BadExtension,
}

impl ClientHandshakeError {
    /// A short static description.
    pub fn reason(&self) -> &'static str {
        match self {
            ClientHandshakeError::Malformed => "malformed handshake response",
            ClientHandshakeError::Status(s) => refusal(*s),
            ClientHandshakeError::NotUpgraded => "response lacks Upgrade/Connection",
            ClientHandshakeError::BadAccept => "wrong Sec-WebSocket-Accept",
            ClientHandshakeError::BadExtension => "unsupported extension in response",
        }
    }
}

/// "server refused the upgrade", naming the common statuses (a static text: it travels in
/// `ProtocolError::Malformed`).
fn refusal(status: u16) -> &'static str {
    match status {
        200 => "server refused the upgrade: 200 OK",
        301 => "server refused the upgrade: 301 Moved Permanently",
        302 => "server refused the upgrade: 302 Found",
        303 => "server refused the upgrade: 303 See Other",
        307 => "server refused the upgrade: 307 Temporary Redirect",
        308 => "server refused the upgrade: 308 Permanent Redirect",
        400 => "server refused the upgrade: 400 Bad Request",
        401 => "server refused the upgrade: 401 Unauthorized",
        403 => "server refused the upgrade: 403 Forbidden",
        404 => "server refused the upgrade: 404 Not Found",
        405 => "server refused the upgrade: 405 Method Not Allowed",
        408 => "server refused the upgrade: 408 Request Timeout",
        426 => "server refused the upgrade: 426 Upgrade Required",
        429 => "server refused the upgrade: 429 Too Many Requests",
        500 => "server refused the upgrade: 500 Internal Server Error",
        502 => "server refused the upgrade: 502 Bad Gateway",
        503 => "server refused the upgrade: 503 Service Unavailable",
        504 => "server refused the upgrade: 504 Gateway Timeout",
        _ => match status / 100 {
            1 => "server refused the upgrade: a 1xx status other than 101",
            2 => "server refused the upgrade: a 2xx status",
            3 => "server refused the upgrade: a 3xx redirect",
            4 => "server refused the upgrade: a 4xx client error",
            5 => "server refused the upgrade: a 5xx server error",
            _ => "server refused the upgrade: a status other than 101",
        },
    }
}

/// A validated `101 Switching Protocols` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse<'a> {
    /// The subprotocol the server chose.
    pub protocol: Option<&'a str>,
    /// The compression the server accepted (wire terms).
    pub deflate: Option<DeflateParams>,
    /// Every header field, in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

/// Validates the server's response head to a request sent with `key`.
///
/// ```
/// use ringman_protocols::ws::{validate_response, ClientHandshakeError};
/// let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
/// assert!(validate_response(ok, "dGhlIHNhbXBsZSBub25jZQ==").is_ok());
/// assert_eq!(validate_response(ok, "AAAAAAAAAAAAAAAAAAAAAA=="), Err(ClientHandshakeError::BadAccept));
/// ```
pub fn validate_response<'a>(head: &'a [u8], key: &str) -> Result<HandshakeResponse<'a>, ClientHandshakeError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(ClientHandshakeError::Malformed),
    }
    if resp.version != Some(1) {
        return Err(ClientHandshakeError::Malformed);
    }
    match resp.code {
        Some(101) => {}
        Some(c) => return Err(ClientHandshakeError::Status(c)),
        None => return Err(ClientHandshakeError::Malformed),
    }
    let headers: Vec<(&'a str, &'a [u8])> = resp.headers.iter().map(|h| (h.name, h.value)).collect();
    let find = |name: &'static str| header_values(&headers, name);
    let token = has_token;
    if !find("upgrade").any(|v| token(v, "websocket")) || !find("connection").any(|v| token(v, "upgrade")) {
        return Err(ClientHandshakeError::NotUpgraded);
    }
    match single_value(&headers, "sec-websocket-accept") {
        Some(v) if v.trim_ascii() == accept_key(key).as_bytes() => {}
        _ => return Err(ClientHandshakeError::BadAccept),
    }
    let mut deflate = None;
    for ext in find("sec-websocket-extensions") {
        let ext = std::str::from_utf8(ext).map_err(|_| ClientHandshakeError::BadExtension)?;
        for e in ext.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let p = parse_params(e).ok_or(ClientHandshakeError::BadExtension)?;
            // Our deflater always uses a 32 KiB window.
            if deflate.is_some() || p.client_max_window_bits.is_some_and(|b| b < 15) {
                return Err(ClientHandshakeError::BadExtension);
            }
            deflate = Some(p);
        }
    }
    let protocol: Option<&'a str> = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::trim);
    Ok(HandshakeResponse { protocol, deflate, headers })
}

/// WebSocket client protocol (for the load generator and `ws://` client connections).
///
/// The caller sends [`client_handshake_request`] with the same `key`; the decoder then
/// delivers the validated `101` head as a
/// [`MessageKind::Handshake`](crate::MessageKind::Handshake) message, followed by the
/// server's messages. Configure the encoder with the response's
/// [`HandshakeResponse::deflate`] when compression was offered.
#[derive(Debug, Clone)]
pub struct WebSocketClient {
    /// The `Sec-WebSocket-Key` sent in the request.
    pub key: String,
    /// Accept a permessage-deflate answer.
    pub deflate: bool,
}

impl Protocol for WebSocketClient {
    fn name(&self) -> &'static str {
        "websocket-client"
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(WsDecoder::client(&self.key, self.deflate))
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(WsEncoder::client())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn resp(extra: &str) -> String {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n")
    }

    #[test]
    fn response_validation() {
        assert!(validate_response(resp("").as_bytes(), KEY).is_ok());
        let r = resp("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n");
        assert!(validate_response(r.as_bytes(), KEY).unwrap().deflate.unwrap().server_no_context_takeover);
        let r = resp("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=10\r\n");
        assert_eq!(validate_response(r.as_bytes(), KEY), Err(ClientHandshakeError::BadExtension));
        let r = resp("Sec-WebSocket-Extensions: x-foo\r\n");
        assert_eq!(validate_response(r.as_bytes(), KEY), Err(ClientHandshakeError::BadExtension));
        let r = "HTTP/1.1 403 Forbidden\r\n\r\n";
        assert_eq!(validate_response(r.as_bytes(), KEY), Err(ClientHandshakeError::Status(403)));
        assert_eq!(ClientHandshakeError::Status(403).reason(), "server refused the upgrade: 403 Forbidden");
        assert_eq!(ClientHandshakeError::Status(418).reason(), "server refused the upgrade: a 4xx client error");
        let r = resp("").replace("Upgrade: websocket\r\n", "");
        assert_eq!(validate_response(r.as_bytes(), KEY), Err(ClientHandshakeError::NotUpgraded));
    }

    #[test]
    fn generated_keys_are_valid_and_differ() {
        let (a, b) = (generate_key(), generate_key());
        assert!(super::super::is_valid_key(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn request_skips_injected_headers() {
        let r = client_handshake_request("h", "", KEY, &[("X-A", "1"), ("X-B", "2\r\nEvil: 1")]);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("GET / HTTP/1.1\r\n") && s.contains("X-A: 1\r\n") && !s.contains("Evil"));
    }
}
