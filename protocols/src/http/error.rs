//! Why a request was rejected, and the status code that says so.

use crate::ProtocolError;

/// A request the server must refuse, with the response status it maps to ([`HttpError::status`]).
///
/// Every variant is answered with a short `text/plain` response carrying `Connection: close`
/// (see [`write_error_response`]); the connection is then closed, because after a framing
/// error the server can no longer tell where the next request starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request line, a header line or the line endings do not follow RFC 9112 (400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// No end of the header block within the head limit (16 KiB by default) (431).
    #[error("request head exceeds {limit} bytes")]
    HeadTooLarge {
        /// The head limit in force.
        limit: usize,
    },
    /// More header fields than the parser accepts ([`MAX_HEADERS`](super::MAX_HEADERS)) (431).
    #[error("too many header fields")]
    TooManyHeaders,
    /// The body (or the whole request) is longer than `max_package_size` (413).
    #[error("request body of {len} bytes exceeds the limit of {max}")]
    BodyTooLarge {
        /// Length announced (or reached while de-chunking).
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// Both `Content-Length` and `Transfer-Encoding` were sent (request smuggling vector) (400).
    #[error("both Content-Length and Transfer-Encoding present")]
    ConflictingFraming,
    /// `Content-Length` is not a plain decimal number (400).
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// More than one `Content-Length` field (even with equal values) (400).
    #[error("duplicate Content-Length")]
    DuplicateContentLength,
    /// A transfer coding other than exactly `chunked` (`gzip, chunked`, ...) (501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferEncoding,
    /// `Transfer-Encoding` that cannot be honoured: repeated, empty, `chunked` not last, or sent
    /// in an HTTP/1.0 request (400).
    #[error("invalid Transfer-Encoding")]
    InvalidTransferEncoding,
    /// The chunked body is malformed (400).
    #[error("invalid chunked body: {0}")]
    InvalidChunk(&'static str),
    /// HTTP/1.1 request without exactly one valid `Host`, or HTTP/1.0 with several (400).
    #[error("missing, duplicate or invalid Host")]
    BadHost,
    /// A well-formed version this server does not speak: a major version other than 1
    /// (`HTTP/2.0`, `HTTP/0.9`) or an HTTP/0.9-style request line without a version (505).
    /// A malformed version (`HTTP/1`, `http/1.1`, `HTTP/01.1`) is [`HttpError::Malformed`].
    #[error("HTTP version not supported")]
    UnsupportedVersion,
    /// A method this server cannot implement: longer than [`MAX_METHOD_LEN`](super::MAX_METHOD_LEN)
    /// bytes, or `CONNECT` (501).
    #[error("method not implemented: {0}")]
    NotImplemented(&'static str),
    /// The request target is longer than [`MAX_TARGET_LEN`](super::MAX_TARGET_LEN) (414).
    #[error("request target too long")]
    TargetTooLong,
    /// A chunked trailer section carries a field that must not be sent as a trailer
    /// (framing, routing, authentication, request modifiers; see the module docs) (400).
    #[error("forbidden trailer field")]
    ForbiddenTrailer,
    /// An `Expect` value other than `100-continue` (417).
    #[error("unsupported expectation")]
    ExpectationFailed,
}

impl HttpError {
    /// The response status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedTransferEncoding | HttpError::NotImplemented(_) => 501,
            HttpError::TargetTooLong => 414,
            HttpError::UnsupportedVersion => 505,
            HttpError::ExpectationFailed => 417,
            HttpError::Malformed(_)
            | HttpError::ConflictingFraming
            | HttpError::InvalidContentLength
            | HttpError::DuplicateContentLength
            | HttpError::InvalidTransferEncoding
            | HttpError::InvalidChunk(_)
            | HttpError::BadHost
            | HttpError::ForbiddenTrailer => 400,
        }
    }

    /// A fixed description, for [`ProtocolError::Malformed`].
    pub fn reason(&self) -> &'static str {
        match self {
            HttpError::Malformed(r) | HttpError::InvalidChunk(r) | HttpError::NotImplemented(r) => r,
            HttpError::TargetTooLong => "request target too long",
            HttpError::ForbiddenTrailer => "forbidden trailer field",
            HttpError::HeadTooLarge { .. } => "request head too large",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::BodyTooLarge { .. } => "request body too large",
            HttpError::ConflictingFraming => "both Content-Length and Transfer-Encoding",
            HttpError::InvalidContentLength => "invalid Content-Length",
            HttpError::DuplicateContentLength => "duplicate Content-Length",
            HttpError::UnsupportedTransferEncoding => "unsupported transfer coding",
            HttpError::InvalidTransferEncoding => "invalid Transfer-Encoding",
            HttpError::BadHost => "missing, duplicate or invalid Host",
            HttpError::UnsupportedVersion => "HTTP version not supported",
            HttpError::ExpectationFailed => "unsupported expectation",
        }
    }
}

impl From<HttpError> for ProtocolError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::BodyTooLarge { len, max } => {
                ProtocolError::TooLarge { len: usize::try_from(len).unwrap_or(usize::MAX), max }
            }
            other => ProtocolError::Malformed { protocol: "http", reason: other.reason() },
        }
    }
}

/// The standard reason phrase of a status code (`""` for unknown codes).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a complete error response for `status`: status line, `Content-Type: text/plain`,
/// `Content-Length`, `Connection: close` and the reason phrase as body.
///
/// ```
/// let mut out = Vec::new();
/// ringman_protocols::http::write_error_response(431, &mut out);
/// assert!(out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
/// assert!(out.windows(19).any(|w| w == b"Connection: close\r\n"));
/// ```
pub fn write_error_response(status: u16, out: &mut Vec<u8>) {
    let reason = reason_phrase(status);
    let mut num = itoa_buf(u64::from(status));
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(num.as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
    num = itoa_buf(reason.len() as u64);
    out.extend_from_slice(num.as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(reason.as_bytes());
}

/// Decimal digits of `n` without allocating through `format!`.
pub(crate) struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

pub(crate) fn itoa_buf(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(HttpError::Malformed("x").status(), 400);
        assert_eq!(HttpError::HeadTooLarge { limit: 1 }.status(), 431);
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
        assert_eq!(HttpError::BodyTooLarge { len: 2, max: 1 }.status(), 413);
        assert_eq!(HttpError::ConflictingFraming.status(), 400);
        assert_eq!(HttpError::DuplicateContentLength.status(), 400);
        assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(HttpError::UnsupportedVersion.status(), 505);
        assert_eq!(HttpError::ExpectationFailed.status(), 417);
        assert_eq!(HttpError::NotImplemented("x").status(), 501);
        assert_eq!(HttpError::TargetTooLong.status(), 414);
        assert_eq!(HttpError::ForbiddenTrailer.status(), 400);
    }

    #[test]
    fn error_response_is_complete() {
        let mut out = Vec::new();
        write_error_response(400, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 11\r\nConnection: close\r\n\r\nBad Request"
        );
        assert_eq!(itoa_buf(0).as_bytes(), b"0");
        assert_eq!(itoa_buf(u64::MAX).as_bytes(), b"18446744073709551615");
    }
}
