//! The opening handshake (RFC 6455 §4.2): request validation, 101 response, rejections.

use base64::Engine as _;

use super::DeflateParams;

/// The GUID appended to the client key before hashing (RFC 6455 §1.3).
pub const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest request head accepted before the handshake is refused with 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// Most header fields accepted in a handshake request.
pub const MAX_HEADERS: usize = 64;

/// Why an upgrade request was refused; [`HandshakeError::status`] is the HTTP status sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The head is not a parsable HTTP/1.x request (400).
    #[error("malformed request head")]
    Malformed,
    /// No `\r\n\r\n` within [`MAX_HEAD`] bytes (431).
    #[error("request head too large")]
    HeadTooLarge,
    /// More than 100 header fields (431).
    #[error("too many header fields")]
    TooManyHeaders,
    /// The method is not `GET` (400).
    #[error("method is not GET")]
    NotGet,
    /// The request is HTTP/1.0 (the upgrade needs HTTP/1.1) (400).
    #[error("HTTP/1.1 required")]
    HttpVersion,
    /// No `Host`, or several (400).
    #[error("missing or duplicate Host")]
    BadHost,
    /// `Upgrade` does not name `websocket` (400).
    #[error("missing Upgrade: websocket")]
    NoUpgrade,
    /// `Connection` lacks the `upgrade` token (400).
    #[error("Connection header lacks the upgrade token")]
    NoConnectionUpgrade,
    /// No `Sec-WebSocket-Version` (400).
    #[error("missing Sec-WebSocket-Version")]
    MissingVersion,
    /// `Sec-WebSocket-Version` other than 13 (426, with `Sec-WebSocket-Version: 13`).
    #[error("unsupported Sec-WebSocket-Version")]
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key`, or several (400).
    #[error("missing or duplicate Sec-WebSocket-Key")]
    MissingKey,
    /// `Sec-WebSocket-Key` is not the base64 encoding of 16 bytes (400).
    #[error("Sec-WebSocket-Key is not base64 of 16 bytes")]
    InvalidKey,
}

impl HandshakeError {
    /// HTTP status of the rejection: 400, 426 (version) or 431 (head size).
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::HeadTooLarge | HandshakeError::TooManyHeaders => 431,
            _ => 400,
        }
    }

    /// A short static description.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed request head",
            HandshakeError::HeadTooLarge => "request head too large",
            HandshakeError::TooManyHeaders => "too many header fields",
            HandshakeError::NotGet => "method is not GET",
            HandshakeError::HttpVersion => "HTTP/1.1 required",
            HandshakeError::BadHost => "missing or duplicate Host",
            HandshakeError::NoUpgrade => "missing Upgrade: websocket",
            HandshakeError::NoConnectionUpgrade => "Connection header lacks the upgrade token",
            HandshakeError::MissingVersion => "missing Sec-WebSocket-Version",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version",
            HandshakeError::MissingKey => "missing or duplicate Sec-WebSocket-Key",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key is not base64 of 16 bytes",
        }
    }
}

/// A validated upgrade request, borrowing from the request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRequest<'a> {
    /// Request target (path and query), e.g. `/chat?room=1`.
    pub path: &'a str,
    /// `Host` header value.
    pub host: &'a str,
    /// `Sec-WebSocket-Key` value (validated: base64 of 16 bytes).
    pub key: &'a str,
    /// `Origin` header value, if any.
    pub origin: Option<&'a str>,
    /// Subprotocols offered in `Sec-WebSocket-Protocol` (all occurrences, comma-split, trimmed),
    /// in the client's order of preference.
    pub protocols: Vec<&'a str>,
    /// Extension offers from `Sec-WebSocket-Extensions` (all occurrences, comma-split, trimmed).
    pub extensions: Vec<&'a str>,
    /// Every header field, in order (names as sent).
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> HandshakeRequest<'a> {
    /// Parses and validates an upgrade request head (through the blank line).
    ///
    /// Checks, in this order: HTTP syntax, `GET`, HTTP/1.1, exactly one `Host`,
    /// `Upgrade: websocket`, the `upgrade` token in `Connection`, `Sec-WebSocket-Version: 13`
    /// (missing: 400, other: 426), exactly one `Sec-WebSocket-Key` decoding to 16 bytes.
    ///
    /// ```
    /// use ringman_protocols::ws::HandshakeRequest;
    /// let head = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
    ///     Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    ///     Sec-WebSocket-Version: 13\r\n\r\n";
    /// let req = HandshakeRequest::parse(head).unwrap();
    /// assert_eq!(req.path, "/chat");
    /// assert_eq!(req.accept_key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /// ```
    pub fn parse(head: &'a [u8]) -> Result<HandshakeRequest<'a>, HandshakeError> {
        if head.len() > MAX_HEAD {
            return Err(HandshakeError::HeadTooLarge);
        }
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut raw);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(HandshakeError::Malformed),
            Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
            Err(_) => return Err(HandshakeError::Malformed),
        }
        if req.method != Some("GET") {
            return Err(HandshakeError::NotGet);
        }
        if req.version != Some(1) {
            return Err(HandshakeError::HttpVersion);
        }
        let path = req.path.ok_or(HandshakeError::Malformed)?;
        let headers: Vec<(&'a str, &'a [u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
        let find = |name: &'static str| header_values(&headers, name);
        let single = |name: &'static str| single_value(&headers, name);
        let text = |v: &'a [u8]| std::str::from_utf8(v).map(str::trim);

        let host = single("host").and_then(|v| text(v).ok()).filter(|h| !h.is_empty());
        let host = host.ok_or(HandshakeError::BadHost)?;
        if !find("upgrade").any(|v| has_token(v, "websocket")) {
            return Err(HandshakeError::NoUpgrade);
        }
        if !find("connection").any(|v| has_token(v, "upgrade")) {
            return Err(HandshakeError::NoConnectionUpgrade);
        }
        if find("sec-websocket-version").next().is_none() {
            return Err(HandshakeError::MissingVersion);
        }
        if !find("sec-websocket-version").all(|v| v.trim_ascii() == b"13") {
            return Err(HandshakeError::UnsupportedVersion);
        }
        let key = single("sec-websocket-key").ok_or(HandshakeError::MissingKey)?;
        let key = text(key).map_err(|_| HandshakeError::InvalidKey)?;
        if !is_valid_key(key) {
            return Err(HandshakeError::InvalidKey);
        }
        let origin = single("origin").and_then(|v| text(v).ok());
        let protocols = list_values(&headers, "sec-websocket-protocol");
        let extensions = list_values(&headers, "sec-websocket-extensions");
        Ok(HandshakeRequest { path, host, key, origin, protocols, extensions, headers })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    /// The `Sec-WebSocket-Accept` value answering this request.
    pub fn accept_key(&self) -> String {
        accept_key(self.key)
    }
}

/// The values of every header field called `name` (case-insensitive).
pub(crate) fn header_values<'h, 'a: 'h>(
    headers: &'h [(&'a str, &'a [u8])],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> + 'h {
    headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

/// The value of the only header field called `name`; `None` if absent or repeated.
pub(crate) fn single_value<'a>(headers: &[(&'a str, &'a [u8])], name: &'static str) -> Option<&'a [u8]> {
    let mut it = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
    match (it.next(), it.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

/// All comma-separated elements of every `name` field, trimmed, empty ones dropped.
fn list_values<'a>(headers: &[(&'a str, &'a [u8])], name: &'static str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// True if the comma-separated header value contains `token` (case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// True if `key` is the canonical base64 encoding of exactly 16 bytes.
pub fn is_valid_key(key: &str) -> bool {
    key.len() == 24 && matches!(base64::engine::general_purpose::STANDARD.decode(key), Ok(v) if v.len() == 16)
}

/// `base64(sha1(key + GUID))`: the `Sec-WebSocket-Accept` value for a client key.
///
/// ```
/// assert_eq!(ringman_protocols::ws::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.digest().bytes())
}

/// How the application answers an upgrade request it accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    /// The subprotocol chosen (should be one of [`HandshakeRequest::protocols`]).
    pub subprotocol: Option<String>,
    /// Extra response headers (fields whose name or value contain CR or LF are skipped).
    pub extra_headers: Vec<(String, String)>,
    /// Negotiated compression, normally [`negotiate_deflate`](super::negotiate_deflate) of
    /// the request (the decoder assumes exactly that).
    pub deflate: Option<DeflateParams>,
}

/// The `101 Switching Protocols` response accepting `req`.
///
/// ```
/// use ringman_protocols::ws::{handshake_response, Accept, HandshakeRequest};
/// let head = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// let resp = handshake_response(&HandshakeRequest::parse(head).unwrap(), &Accept::default());
/// assert!(resp.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// assert!(resp.ends_with(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"));
/// ```
pub fn handshake_response(req: &HandshakeRequest<'_>, accept: &Accept) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    if let Some(p) = accept.subprotocol.as_deref().filter(|p| clean(p)) {
        push_header(&mut out, "Sec-WebSocket-Protocol", p);
    }
    if let Some(d) = &accept.deflate {
        push_header(&mut out, "Sec-WebSocket-Extensions", &d.response_header());
    }
    for (n, v) in &accept.extra_headers {
        if clean(n) && clean(v) && !n.is_empty() {
            push_header(&mut out, n, v);
        }
    }
    push_header(&mut out, "Sec-WebSocket-Accept", &req.accept_key());
    out.extend_from_slice(b"\r\n");
    out
}

fn clean(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n')
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A response refusing the upgrade with `status` (and `Connection: close`); 426 carries
/// `Sec-WebSocket-Version: 13`.
///
/// ```
/// let r = ringman_protocols::ws::reject_response(426);
/// assert!(r.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
/// ```
pub fn reject_response(status: u16) -> Vec<u8> {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: 0\r\n").into_bytes();
    if status == 426 {
        out.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn with(replace: &str, by: &str) -> Result<(), HandshakeError> {
        let head = GOOD.replace(replace, by);
        HandshakeRequest::parse(head.as_bytes()).map(|_| ())
    }

    #[test]
    fn rfc_example() {
        let r = HandshakeRequest::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(r.host, "server.example.com");
        assert_eq!(r.origin, Some("http://example.com"));
        assert_eq!(r.protocols, ["chat", "superchat"]);
        assert_eq!(r.accept_key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(r.header("upgrade"), Some(&b"websocket"[..]));
    }

    #[test]
    fn each_violation_is_precise() {
        use HandshakeError::*;
        assert_eq!(with("GET ", "POST "), Err(NotGet));
        assert_eq!(with("HTTP/1.1", "HTTP/1.0"), Err(HttpVersion));
        assert_eq!(with("Host: server.example.com\r\n", ""), Err(BadHost));
        assert_eq!(with("Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n"), Err(BadHost));
        assert_eq!(with("Upgrade: websocket", "Upgrade: h2c"), Err(NoUpgrade));
        assert_eq!(with("Upgrade: websocket\r\n", ""), Err(NoUpgrade));
        assert_eq!(with("Connection: Upgrade", "Connection: keep-alive"), Err(NoConnectionUpgrade));
        assert_eq!(with("Sec-WebSocket-Version: 13\r\n", ""), Err(MissingVersion));
        assert_eq!(with("Version: 13", "Version: 8"), Err(UnsupportedVersion));
        assert_eq!(with("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), Err(MissingKey));
        assert_eq!(with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ"), Err(InvalidKey));
        assert_eq!(with("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZXg="), Err(InvalidKey));
        assert_eq!(with("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="), Err(InvalidKey));
        assert_eq!(with("\r\n\r\n", "\r\nbad header\r\n\r\n"), Err(Malformed));
        assert_eq!(UnsupportedVersion.status(), 426);
        assert_eq!(NoUpgrade.status(), 400);
    }

    #[test]
    fn tokens_are_case_insensitive_lists() {
        assert_eq!(with("Connection: Upgrade", "Connection: keep-alive,  UPGRADE "), Ok(()));
        assert_eq!(with("Upgrade: websocket", "Upgrade: WebSocket"), Ok(()));
    }

    #[test]
    fn response_skips_injected_headers() {
        let r = HandshakeRequest::parse(GOOD.as_bytes()).unwrap();
        let a = Accept {
            subprotocol: Some("chat".into()),
            extra_headers: vec![("X-Ok".into(), "1".into()), ("X-Bad".into(), "a\r\nSet-Cookie: x".into())],
            deflate: None,
        };
        let resp = String::from_utf8(handshake_response(&r, &a)).unwrap();
        assert!(resp.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(resp.contains("X-Ok: 1\r\n"));
        assert!(!resp.contains("Set-Cookie"));
        assert!(resp.ends_with("\r\n\r\n"));
    }
}
