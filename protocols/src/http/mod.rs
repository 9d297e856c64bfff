//! `http://`: HTTP/1.1 server side, sans-IO and zero-copy.
//!
//! * [`HttpDecoder`] frames requests out of the byte stream (head, then a `Content-Length` or
//!   chunked body), enforces the limits and answers errors with the right status
//!   (400/413/417/431/501/505, always with `Connection: close`).
//! * [`Request::parse`] turns a decoded packet into a borrowed view: method, path, query,
//!   headers, cookies, body, trailers and the keep-alive decision.
//! * [`Response`] builds responses (headers, cookies, body, chunked streaming, Server-Sent
//!   Events); [`StaticResponse`] is a pre-encoded response whose `Date` is patched in place.
//! * Forms: [`parse_urlencoded`], [`parse_multipart`], the streaming [`MultipartParser`],
//!   and [`FormData`] (uploads over a threshold spilled to temporary files).
//! * Helpers: [`http_date`], [`mime_for_path`], [`parse_range`], [`resolve_path`].
//!
//! Compared with Workerman's `Http` protocol this is stricter: bare LF/CR, obsolete line
//! folding, duplicate `Content-Length`, `Content-Length` with `Transfer-Encoding`, unknown
//! transfer codings, missing/duplicate `Host` are all refused; `Connection: close` and
//! HTTP/1.0 without keep-alive are honoured ([`Request::keep_alive`]); `Expect:
//! 100-continue` is supported ([`HttpDecoder::pending_continue`]).
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

#[cfg(test)]
mod conformance;
mod date;
mod error;
mod form;
mod framing;
mod mime;
mod multipart;
mod path;
mod range;
mod request;
mod response;

pub use date::{http_date, DateCache};
pub use error::{reason_phrase, write_error_response, HttpError};
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
