//! `http://`: HTTP/1.1 server side, sans-IO and zero-copy.
//!
//! * [`HttpDecoder`] frames requests out of the byte stream (head, then a `Content-Length` or
//!   chunked body), enforces the limits and answers errors with the right status
//!   (400/408/413/414/417/431/501/505, always with `Connection: close`; see
//!   [Strictness](#strictness-rfc-9112-rfc-9110)).
//! * [`Request::parse`] turns a decoded packet into a borrowed view: method, path, query,
//!   headers, cookies, body, trailers and the keep-alive decision.
//! * [`Response`] builds responses (headers, cookies, body, chunked streaming, Server-Sent
//!   Events); [`StaticResponse`] is a pre-encoded response whose `Date` is patched in place.
//! * Forms: [`parse_urlencoded`], [`parse_multipart`], the streaming [`MultipartParser`],
//!   and [`FormData`] (uploads over a threshold spilled to temporary files).
//! * Helpers: [`http_date`], [`parse_http_date`], [`entity_tags_match`], [`mime_for_path`],
//!   [`parse_range`], [`resolve_path`].
//!
//! `Connection: close` and HTTP/1.0 without keep-alive are honoured
//! ([`Request::keep_alive`]); `Expect: 100-continue` is supported
//! ([`HttpDecoder::pending_continue`]).
//!
//! # Strictness (RFC 9112, RFC 9110)
//!
//! A server behind a proxy must never read a request differently from the proxy: that is
//! how requests are smuggled. So every request is held to the RFC 9112 grammar, and where
//! the RFCs leave a choice (reject, or repair and go on) the rejecting one is taken.
//! Malformed input is answered **400**; a well-formed request the server cannot serve gets
//! the specific status. Every error response carries `Connection: close`, and the
//! connection then ends with a half-close: the reply is delivered even when the client
//! has already sent more, and nothing sent after the refused request is ever answered.
//! The verdict never depends on how the bytes are split into reads.
//!
//! | Request | Status | Rule |
//! |---|---|---|
//! | Bare LF or bare CR anywhere in the head, a chunk line or the trailers | 400 | RFC 9112 §2.2 (bare CR MUST be rejected; bare LF refused too) |
//! | Whitespace before the first field line; obsolete line folding | 400 | RFC 9112 §2.2, §5.2 |
//! | Request line not `method SP target SP version CRLF` with single spaces | 400 | RFC 9112 §3 |
//! | Method not a token | 400 | RFC 9112 §3.1 |
//! | Method longer than [`MAX_METHOD_LEN`] (20) bytes | 501 | RFC 9112 §3 (a method longer than any implemented) |
//! | `CONNECT` | 501 | RFC 9110 §9.1, §9.3.6 (not implemented by this server) |
//! | Target longer than [`MAX_TARGET_LEN`] (8 KiB) | 414 | RFC 9112 §3, RFC 9110 §15.5.15 |
//! | Target byte outside visible ASCII (controls, SP inside, DEL, ≥ 0x80), `#`, `%` not followed by two hex digits | 400 | RFC 9112 §3.2, RFC 3986 §2.1 (decoders disagree on bad escapes, e.g. `%u0041`) |
//! | Target not origin-form, absolute-form (`http`/`https`) or `*` with `OPTIONS` | 400 | RFC 9112 §3.2 |
//! | Absolute-form with an empty host, user info or a bad port | 400 | RFC 9110 §4.2.1, §4.2.4 |
//! | Version not `HTTP/` DIGIT `.` DIGIT (`HTTP/1`, `http/1.1`, `HTTP/01.1`, `HTTP/1.10`) | 400 | RFC 9112 §2.3 (malformed, not unsupported) |
//! | Major version other than 1 (`HTTP/2.0`, `HTTP/0.9`, the HTTP/2 preface) or an HTTP/0.9 line without version | 505 | RFC 9110 §15.6.6 |
//! | `HTTP/1.2` … `HTTP/1.9` | served as 1.1 | RFC 9110 §2.5 |
//! | HTTP/1.1 without `Host`, any request with two `Host` lines, an empty or invalid `Host` (not `uri-host [":" port]`, or with a `,`) | 400 | RFC 9112 §3.2, RFC 9110 §7.2 |
//! | Field name not a token, whitespace before the colon, a control byte (NUL, CR, …) in a value | 400 | RFC 9112 §5.1, RFC 9110 §5.5 |
//! | More than [`MAX_HEADERS`] fields, or a head over the head limit (16 KiB) | 431 | RFC 6585 §5 |
//! | `Content-Length` not `1*DIGIT`, a list, repeated (even equal), with leading zeros, or beyond 64 bits | 400 | RFC 9110 §8.6, RFC 9112 §6.3 (invalid framing; leading zeros and huge values are refused because intermediaries read them differently) |
//! | `Content-Length` (or a chunked body) over `max_package_size` | 413 | RFC 9110 §15.5.14 |
//! | `Content-Length` with `Transfer-Encoding` | 400 | RFC 9112 §6.1 (MAY reject: a smuggling attempt) |
//! | `Transfer-Encoding` without `chunked` last, `chunked` twice, empty, split over two field lines, or in HTTP/1.0 | 400 | RFC 9112 §6.3 (length cannot be determined), §6.1 |
//! | A coding before `chunked` (`gzip, chunked`) | 501 | RFC 9112 §6.1 (coding not understood) |
//! | Chunk size not `1*HEXDIG` (≤ 16 digits), whitespace after it not followed by `;`, a malformed extension, data not followed by CRLF | 400 | RFC 9112 §7.1, §7.1.1 |
//! | A malformed trailer field | 400 | RFC 9112 §7.1.2 |
//! | A trailer field that must not be a trailer: `Content-Length`, `Transfer-Encoding`, `Trailer`, `TE`, `Host`, `Connection`, `Keep-Alive`, `Proxy-Connection`, `Upgrade`, `Authorization`, `Proxy-Authorization`, `Cookie`, `Expect`, `Max-Forwards`, `Forwarded`, `Range`, `If-*`, `Cache-Control`, `Pragma`, `Content-Type`, `Content-Encoding`, `Content-Range` | 400 | RFC 9110 §6.5.1 (framing, routing, authentication, request modifiers, content format) |
//! | `Expect` other than `100-continue` (HTTP/1.1) | 417 | RFC 9110 §10.1.1 |
//! | No complete head or body within the packet timeout | 408 | RFC 9110 §15.5.9 |
//!
//! Accepted trailer fields are never merged into the header fields: they are read with
//! [`Request::trailers`] only. For an absolute-form target, [`Request::host`] is the target's
//! authority, not the `Host` field (RFC 9112 §3.2.2). Bytes that browsers send unencoded in
//! a target (`[ ] { } | \ ^` and the like) are accepted, as by every common server.
//!
//! ```
//! use ringman_protocols::http::{HttpDecoder, Request, Response};
//! use ringman_protocols::{Decoder, Input};
//! let mut dec = HttpDecoder::new();
//! let mut wire = b"GET /hi?name=ann HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec();
//! let Input::Packet(n) = dec.input(&wire, 1 << 20).unwrap() else { panic!() };
//! let msg = dec.decode(&mut wire[..n]).unwrap().unwrap();
//! let req = Request::parse(msg.data).unwrap();
//! assert_eq!(req.path(), "/hi");
//! let mut out = Vec::new();
//! Response::new(200).header("Content-Type", "text/plain").body("hello").write_to(&mut out);
//! assert!(out.ends_with(b"Content-Length: 5\r\n\r\nhello"));
//! ```

mod client;
#[cfg(test)]
mod conformance;
mod date;
mod error;
mod etag;
mod form;
mod framing;
mod mime;
mod multipart;
mod path;
mod range;
mod request;
mod response;

pub use client::{ResponseError, ResponseEvent, ResponseHead, ResponseParser, DEFAULT_RESPONSE_HEAD_LIMIT};
pub use date::{http_date, parse_http_date, DateCache};
pub use error::{reason_phrase, write_error_response, HttpError};
pub use etag::{entity_tags_match, EntityTagMatch};
pub use form::{
    boundary_from_content_type, parse_multipart, parse_urlencoded, percent_decode, FormCollector, FormData, FormError,
    FormField, Part, PersistError, UploadConfig, UploadError, UploadedFile, UrlEncoded,
};
pub use framing::{HttpDecoder, CONTINUE_RESPONSE, DEFAULT_HEAD_LIMIT};
pub use mime::{mime_for_extension, mime_for_path};
pub use multipart::{MultipartEvent, MultipartParser, PartHead, DEFAULT_MAX_PARTS, DEFAULT_PART_HEADER_LIMIT};
pub use path::{is_within, resolve_path, PathError};
pub use range::{parse_range, ByteRange, RangeOutcome};
pub use request::{Fields, Request, Version, MAX_HEADERS, MAX_METHOD_LEN, MAX_TARGET_LEN};
pub use response::{chunk, last_chunk, sse_comment, sse_event, Cookie, IntoBody, Response, SameSite, StaticResponse};

use crate::{Decoder, Encoder, MessageKind, Protocol};

/// The `http` protocol: [`HttpDecoder`] per connection, and an identity [`HttpEncoder`]
/// (responses are written with [`Response::write_to`] by the engine's HTTP glue).
#[derive(Debug, Default, Clone, Copy)]
pub struct Http;

impl Protocol for Http {
    fn name(&self) -> &'static str {
        "http"
    }
    /// The keep-alive timeout: 60 s.
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(60))
    }
    /// The header and body timeout (slow-loris defence): 30 s.
    fn packet_timeout(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(30))
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(HttpDecoder::new())
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(HttpEncoder)
    }
    /// Lets engine glue recognise this protocol: its messages come from [`HttpDecoder`], so
    /// they can be read with [`Request::from_decoded`].
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Sends bytes unchanged: HTTP responses are already complete wire messages
/// ([`Response::write_to`], [`StaticResponse`], [`chunk`], [`sse_event`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpEncoder;

impl Encoder for HttpEncoder {
    fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
        out.extend_from_slice(payload);
    }
    fn overhead(&self, _len: usize) -> usize {
        0
    }
    fn is_identity(&self) -> bool {
        true
    }
}
