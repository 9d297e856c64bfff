//! Request head validation and the zero-copy [`Request`] view.
//!
//! The request line is checked here against the RFC 9112 §3 grammar (byte tables, no
//! allocation); the field lines are tokenised by [`httparse`]: it is the parser under hyper,
//! zero-copy (every field borrows from the input), SIMD-accelerated, fuzzed for years and
//! free of allocation. On top of it this module enforces what httparse leaves to the caller
//! (RFC 9112 rules that keep front proxies and this server agreeing on message boundaries):
//! CRLF-only line endings (no bare LF or CR), no obsolete line folding, one valid `Host`,
//! one plain decimal `Content-Length`, `Transfer-Encoding` exactly `chunked` and never with
//! `Content-Length`, request targets in origin-, absolute- or asterisk-form only. The full
//! list, with the status of each refusal, is in the [module docs](super#strictness-rfc-9112-rfc-9110).
//!
//! A request is parsed once on the engine path: [`HttpDecoder`](super::HttpDecoder) validates
//! the head while framing it, and [`Request::from_decoded`] then only reads the fields back.
//! [`Request::parse`] is the fully validating entry point for bytes from anywhere else.

use std::mem::MaybeUninit;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::HttpError;

/// Most header fields accepted in one request (more ⇒ 431).
pub const MAX_HEADERS: usize = 100;

/// The protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: connections close after each response unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: connections persist unless `Connection: close`.
    Http11,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length` bytes follow (0 when absent).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the framing layer needs to know about a validated head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadInfo {
    pub framing: Framing,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

/// Header slots for one httparse call, left uninitialized: httparse writes the slots it
/// fills and exposes only those, so nothing has to zero all [`MAX_HEADERS`] of them first.
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Validates a complete head (`head` ends with the empty line) and returns its framing.
pub(crate) fn check_head(head: &[u8]) -> Result<HeadInfo, HttpError> {
    let parsed = ParsedHead::parse(head)?;
    Ok(parsed.info)
}

/// Rejects bare CR and bare LF anywhere in `bytes` (RFC 9112 §2.2: a bare CR must be
/// rejected; a bare LF is refused too so that no intermediary can split lines differently).
pub(crate) fn check_line_endings(bytes: &[u8]) -> Result<(), HttpError> {
    match bare_line_ending(bytes, 0) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// The first bare LF or bare CR in `bytes[from..]` (a CR in the last byte may still be
/// followed by LF and is not reported), with the length of the prefix before the offending
/// byte: the bare LF itself, or the byte after a bare CR.
pub(crate) fn bare_line_ending(bytes: &[u8], from: usize) -> Option<(usize, HttpError)> {
    // One search for both bytes: every CR found must be followed by LF, which is then
    // stepped over, so any LF found is a bare one. A CR just before `from` was not
    // checked against its successor yet.
    let mut at = if from > 0 && bytes.get(from - 1) == Some(&b'\r') { from - 1 } else { from };
    while let Some(i) = memchr::memchr2(b'\r', b'\n', &bytes[at..]) {
        let i = at + i;
        if bytes[i] == b'\n' {
            return Some((i, HttpError::Malformed("bare LF")));
        }
        match bytes.get(i + 1) {
            None => return None,
            Some(b'\n') => at = i + 2,
            Some(_) => return Some((i + 1, HttpError::Malformed("bare CR"))),
        }
    }
    None
}

fn map_httparse(e: httparse::Error) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::Version => HttpError::UnsupportedVersion,
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::Token => HttpError::Malformed("invalid method"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Status => HttpError::Malformed("invalid request line"),
    }
}

/// Early check of an incomplete head: an error as soon as the bytes cannot start a request.
/// `buf` starts at the request line; it may or may not hold the whole line yet.
pub(crate) fn check_partial(buf: &[u8]) -> Result<(), HttpError> {
    match request_line(buf)? {
        // The field lines received so far, through httparse (which reads only the two
        // versions it knows; the rarer HTTP/1.2+ heads are checked once complete).
        Some(line) if line.exact => {
            let mut slots = header_slots();
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(buf, &mut slots) {
                Ok(_) => Ok(()),
                Err(e) => Err(map_httparse(e)),
            }
        }
        _ => Ok(()),
    }
}

/// Longest method accepted: longer than every registered method (the longest,
/// `UPDATEREDIRECTREF`, has 17 bytes). A longer one is answered 501 (RFC 9112 §3) as soon
/// as its first bytes arrive.
pub const MAX_METHOD_LEN: usize = 20;

/// Longest request target accepted (8 KiB); longer is answered 414 (RFC 9112 §3, RFC 9110
/// §15.5.15) as soon as that many bytes of it arrived.
pub const MAX_TARGET_LEN: usize = 8 * 1024;

/// `tchar` (RFC 9110 §5.6.2): the bytes of a method, a field name or a transfer coding.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// Bytes allowed in a request target: visible ASCII (RFC 9112 §3.2 with RFC 3986) except
/// `#` (a fragment is never sent). The RFC 3986 delimiters that browsers send unencoded in
/// paths and queries (`[ ] { } | \ ^ `` " < >`) are let through, as every major server does;
/// `%` must start a valid percent-encoding (checked separately).
static TARGET_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = b != b'#' as usize;
        b += 1;
    }
    t
};

/// Whether a request line httparse accepted also passes [`request_line`]: httparse checked
/// the method is a token and the target holds no control, space or DEL; what remains is the
/// lengths, ASCII only, no `#`, and valid percent-encodings.
fn line_is_plain(method: &str, target: &str) -> bool {
    let t = target.as_bytes();
    if method.is_empty() || method.len() > MAX_METHOD_LEN || t.is_empty() || t.len() > MAX_TARGET_LEN {
        return false;
    }
    // Targets are short: a table walk beats setting up a vector search.
    if t.iter().all(|&b| TARGET_BYTES[b as usize] && b != b'%') {
        return true;
    }
    let mut i = 0;
    while i < t.len() {
        match t[i] {
            b'%' if t.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => i += 3,
            b if b != b'%' && TARGET_BYTES[b as usize] => i += 1,
            _ => return false,
        }
    }
    true
}

/// A validated request line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLine<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub version: Version,
    /// The version was literally `HTTP/1.0` or `HTTP/1.1` (httparse reads the head then).
    pub exact: bool,
    /// Length of the line including its CRLF.
    pub len: usize,
}

/// Validates the request line at the start of `buf` (RFC 9112 §3):
/// `method SP request-target SP HTTP-version CRLF`, single spaces, nothing else.
///
/// `Ok(None)` while the line is incomplete and nothing seen so far is wrong. The verdict on
/// a prefix never changes when more bytes arrive, so a request split anywhere gets the same
/// answer as a request arriving whole.
pub(crate) fn request_line(buf: &[u8]) -> Result<Option<RequestLine<'_>>, HttpError> {
    const BAD_METHOD: HttpError = HttpError::Malformed("invalid method");
    const BAD_TARGET: HttpError = HttpError::Malformed("invalid request target");
    const BAD_VERSION: HttpError = HttpError::Malformed("invalid HTTP version");
    // method = token, at most MAX_METHOD_LEN bytes.
    let window = &buf[..buf.len().min(MAX_METHOD_LEN + 1)];
    let method_end = match memchr::memchr(b' ', window) {
        Some(i) if i > 0 && window[..i].iter().all(|&b| TCHAR[b as usize]) => i,
        Some(_) => return Err(BAD_METHOD),
        None if !window.iter().all(|&b| TCHAR[b as usize]) => return Err(BAD_METHOD),
        None if window.len() > MAX_METHOD_LEN => return Err(HttpError::NotImplemented("method too long")),
        None => return Ok(None),
    };
    // request-target: visible ASCII, valid percent-encodings, at most MAX_TARGET_LEN bytes.
    let target_start = method_end + 1;
    let rest = &buf[target_start..];
    let window = &rest[..rest.len().min(MAX_TARGET_LEN + 1)];
    let len = window.iter().position(|&b| !TARGET_BYTES[b as usize]);
    for p in memchr::memchr_iter(b'%', &window[..len.unwrap_or(window.len())]) {
        for k in 1..3 {
            match rest.get(p + k) {
                None => return Ok(None),
                Some(h) if h.is_ascii_hexdigit() => {}
                Some(_) => return Err(BAD_TARGET),
            }
        }
    }
    let target_end = match len {
        None if window.len() > MAX_TARGET_LEN => return Err(HttpError::TargetTooLong),
        None => return Ok(None),
        Some(n) if n > MAX_TARGET_LEN => return Err(HttpError::TargetTooLong),
        Some(n) if n > 0 && matches!(rest[n], b' ' | b'\r') => target_start + n,
        Some(_) => return Err(BAD_TARGET),
    };
    if buf[target_end] == b'\r' {
        // `GET /` CRLF: an HTTP/0.9 simple request, well-formed but not a version we speak.
        return match buf.get(target_end + 1) {
            None => Ok(None),
            Some(b'\n') => Err(HttpError::UnsupportedVersion),
            Some(_) => Err(BAD_TARGET),
        };
    }
    // HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive, then CRLF.
    const PATTERN: &[u8; 10] = b"HTTP/1.1\r\n";
    let v = &buf[target_end + 1..];
    let fast = match v.get(..10) {
        Some(b"HTTP/1.1\r\n") => Some(Version::Http11),
        Some(b"HTTP/1.0\r\n") => Some(Version::Http10),
        _ => None,
    };
    if let Some(version) = fast {
        let method = std::str::from_utf8(&buf[..method_end]).map_err(|_| BAD_METHOD)?;
        let target = std::str::from_utf8(&buf[target_start..target_end]).map_err(|_| BAD_TARGET)?;
        return Ok(Some(RequestLine { method, target, version, exact: true, len: target_end + 11 }));
    }
    for (k, &b) in v.iter().take(10).enumerate() {
        let ok = match k {
            5 | 7 => b.is_ascii_digit(),
            _ => b == PATTERN[k],
        };
        if !ok {
            return Err(BAD_VERSION);
        }
    }
    if v.len() < 10 {
        return Ok(None);
    }
    let version = match (v[5], v[7]) {
        (b'1', b'0') => Version::Http10,
        // A higher minor version of HTTP/1 is handled as the highest we speak (RFC 9110 §2.5).
        (b'1', _) => Version::Http11,
        _ => return Err(HttpError::UnsupportedVersion),
    };
    // Both halves end at ASCII bytes: the slices are valid UTF-8 (every byte checked is ASCII).
    let method = std::str::from_utf8(&buf[..method_end]).map_err(|_| BAD_METHOD)?;
    let target = std::str::from_utf8(&buf[target_start..target_end]).map_err(|_| BAD_TARGET)?;
    Ok(Some(RequestLine { method, target, version, exact: matches!(v[7], b'0' | b'1'), len: target_end + 11 }))
}

/// Where the first `CRLF CRLF` of `buf` starts. The finder is built once: building one per
/// search cost more than the search itself on request-sized heads.
pub(crate) fn find_head_end(buf: &[u8]) -> Option<usize> {
    static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
    HEAD_END.find(buf)
}

/// `unreserved / sub-delims` of RFC 3986 (the bytes of a reg-name besides `%`), as a table,
/// without `,`: a comma in `Host` reads as a list of hosts to an intermediary that joined
/// two `Host` lines.
static REG_NAME_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let extra = b"-._~!$&'()*+;=";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
};

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a non-empty reg-name or IPv4
/// address, or a bracketed IP literal, then optionally a decimal port. Nothing that could
/// smuggle a path, user info, a second host or whitespace.
pub(crate) fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() || v.len() > 255 {
        return false;
    }
    // The common shape in one pass: name bytes, then optionally `:` and a decimal port.
    let name_len = v.iter().position(|&b| !REG_NAME_BYTES[b as usize]).unwrap_or(v.len());
    if name_len == v.len() {
        return true;
    }
    if name_len > 0 && v[name_len] == b':' {
        let port = &v[name_len + 1..];
        return port.len() <= 5 && port.iter().all(u8::is_ascii_digit);
    }
    valid_host_escaped(v)
}

/// [`valid_host`] for what its fast path leaves: IP literals and percent-encoded names.
fn valid_host_escaped(v: &[u8]) -> bool {
    let port = if let [b'[', rest @ ..] = v {
        let Some(close) = memchr::memchr(b']', rest) else { return false };
        let literal = &rest[..close];
        if literal.is_empty() || !literal.iter().all(|&b| REG_NAME_BYTES[b as usize] || b == b':') {
            return false;
        }
        match &rest[close + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        }
    } else {
        // Hosts are short: a plain scan beats setting up a vector search.
        let (name, port) = match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        };
        if name.is_empty() {
            return false;
        }
        if !name.iter().all(|&b| REG_NAME_BYTES[b as usize]) {
            // Only percent-encodings may remain.
            let mut i = 0;
            while i < name.len() {
                match name[i] {
                    b'%' if name.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) => i += 3,
                    b if REG_NAME_BYTES[b as usize] => i += 1,
                    _ => return false,
                }
            }
        }
        port
    };
    port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit))
}

/// Trailer fields refused with 400 (RFC 9110 §6.5.1: fields needed before the content,
/// for framing, routing, authentication, request modifiers, response control or content
/// format, must not be sent or processed as trailers). Lower-case.
const FORBIDDEN_TRAILERS: &[&[u8]] = &[
    b"content-length",
    b"transfer-encoding",
    b"trailer",
    b"te",
    b"host",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"upgrade",
    b"authorization",
    b"proxy-authorization",
    b"cookie",
    b"expect",
    b"max-forwards",
    b"forwarded",
    b"range",
    b"if-range",
    b"if-match",
    b"if-none-match",
    b"if-modified-since",
    b"if-unmodified-since",
    b"cache-control",
    b"pragma",
    b"content-type",
    b"content-encoding",
    b"content-range",
];

/// Refuses a trailer section naming a [`FORBIDDEN_TRAILERS`] field.
pub(crate) fn check_trailer_fields(fields: &[httparse::Header<'_>]) -> Result<(), HttpError> {
    for f in fields {
        let name = f.name.as_bytes();
        if FORBIDDEN_TRAILERS.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return Err(HttpError::ForbiddenTrailer);
        }
    }
    Ok(())
}

/// Iterates the comma-separated tokens of a list-valued field, trimmed, skipping empties.
pub(crate) fn list_tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

pub(crate) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Everything extracted from a validated head.
struct ParsedHead<'a> {
    method: &'a str,
    target: &'a str,
    version: Version,
    /// The header lines (each ending in CRLF), without the request line and final CRLF.
    header_block: &'a [u8],
    info: HeadInfo,
    conn_close: bool,
    conn_keep_alive: bool,
}

impl<'a> ParsedHead<'a> {
    fn parse(head: &'a [u8]) -> Result<Self, HttpError> {
        if let Some((clean, e)) = bare_line_ending(head, 0) {
            // A fault in the request line before it is reported first, as the framer's
            // early checks do on a head arriving in pieces.
            request_line(&head[..clean])?;
            return Err(e);
        }
        if !head.ends_with(b"\r\n\r\n") {
            return Err(HttpError::Malformed("incomplete head"));
        }
        if head.starts_with(b"\r\n") {
            return Err(HttpError::Malformed("empty line before request line"));
        }
        let mut slots = header_slots();
        let mut req = httparse::Request::new(&mut []);
        // The common case first: httparse reads the whole head, and the request line it
        // accepted (token method, single spaces, `HTTP/1.0` or `HTTP/1.1`, target bytes
        // 0x21..=0x7E or >= 0x80) needs only the checks httparse leaves out. Any doubt goes
        // to `request_line`, which gives the verdict the framer's early checks give.
        match req.parse_with_uninit_headers(head, &mut slots) {
            Ok(httparse::Status::Complete(n))
                if n == head.len() && line_is_plain(req.method.unwrap_or(""), req.path.unwrap_or("")) =>
            {
                let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };
                Self::finish(head, req.method.unwrap_or(""), req.path.unwrap_or(""), version, req.headers)
            }
            other => Self::parse_unusual(head, other),
        }
    }

    /// A head httparse refused or whose request line needs the full check: the verdict of
    /// [`request_line`], or a field error, or an HTTP/1.2+ head read field by field.
    #[cold]
    #[inline(never)]
    fn parse_unusual(head: &'a [u8], httparse_said: httparse::Result<usize>) -> Result<Self, HttpError> {
        let line = request_line(head)?.ok_or(HttpError::Malformed("incomplete head"))?;
        if line.exact {
            // The request line is fine: httparse refused a field line.
            return Err(match httparse_said.map_err(map_httparse)? {
                httparse::Status::Complete(_) => HttpError::Malformed("trailing bytes after head"),
                httparse::Status::Partial => HttpError::Malformed("incomplete head"),
            });
        }
        // HTTP/1.2 .. HTTP/1.9 (httparse knows only two versions): the field lines alone.
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(&head[line.len..], &mut fields).map_err(map_httparse)? {
            httparse::Status::Complete((n, fields)) if line.len + n == head.len() => {
                Self::finish(head, line.method, line.target, line.version, fields)
            }
            _ => Err(HttpError::Malformed("incomplete head")),
        }
    }

    /// The checks on a tokenised head: target form, fields, framing.
    #[inline(always)]
    fn finish(
        head: &'a [u8],
        method: &'a str,
        target: &'a str,
        version: Version,
        fields: &[httparse::Header<'a>],
    ) -> Result<Self, HttpError> {
        if method == "CONNECT" {
            return Err(HttpError::NotImplemented("CONNECT"));
        }
        if !(target.starts_with('/') || (target == "*" && method == "OPTIONS") || absolute_path(target).is_some()) {
            return Err(HttpError::Malformed("unsupported request target form"));
        }
        if let Some(authority) = (!target.starts_with('/')).then(|| absolute_authority(target)).flatten() {
            // RFC 9110 §4.2.1: an http(s) URI with an empty host must be rejected; §4.2.4:
            // user info in it is treated as an error.
            if !valid_host(authority.as_bytes()) {
                return Err(HttpError::Malformed("invalid authority in absolute-form target"));
            }
        }

        let mut hosts = 0;
        let mut content_length: Option<u64> = None;
        let mut te_seen = false;
        let mut chunked = false;
        let mut expect_continue = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        for h in fields {
            let name = h.name.as_bytes();
            let value = h.value;
            if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
                if !valid_host(value) {
                    return Err(HttpError::BadHost);
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                if content_length.is_some() {
                    return Err(HttpError::DuplicateContentLength);
                }
                content_length = Some(parse_content_length(value)?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                if te_seen {
                    return Err(HttpError::InvalidTransferEncoding);
                }
                te_seen = true;
                let (mut codings, mut chunks, mut last_chunked) = (0, 0, false);
                for c in list_tokens(value) {
                    codings += 1;
                    last_chunked = c.eq_ignore_ascii_case(b"chunked");
                    chunks += usize::from(last_chunked);
                }
                // chunked absent, not last or repeated: the length cannot be determined
                // (RFC 9112 §6.3) ⇒ 400; chunked last after a coding we do not implement
                // ⇒ 501 (RFC 9112 §6.1).
                if !last_chunked || chunks > 1 {
                    return Err(HttpError::InvalidTransferEncoding);
                }
                if codings > 1 {
                    return Err(HttpError::UnsupportedTransferEncoding);
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                for t in list_tokens(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"expect") && version == Version::Http11 {
                // HTTP/1.0 recipients must ignore 100-continue (RFC 9110 §10.1.1).
                if value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(HttpError::ExpectationFailed);
                }
            }
        }
        match version {
            Version::Http11 if hosts != 1 => return Err(HttpError::BadHost),
            Version::Http10 if hosts > 1 => return Err(HttpError::BadHost),
            _ => {}
        }
        if te_seen && content_length.is_some() {
            return Err(HttpError::ConflictingFraming);
        }
        if te_seen && version == Version::Http10 {
            return Err(HttpError::InvalidTransferEncoding);
        }
        let framing = if chunked { Framing::Chunked } else { Framing::Length(content_length.unwrap_or(0)) };
        let expect_continue = expect_continue && framing != Framing::Length(0);
        let line_end = memchr::memchr(b'\n', head).map_or(head.len(), |i| i + 1);
        Ok(ParsedHead {
            method,
            target,
            version,
            header_block: &head[line_end..head.len() - 2],
            info: HeadInfo { framing, expect_continue },
            conn_close,
            conn_keep_alive,
        })
    }
}

/// `1*DIGIT` only: no sign, no list, no spaces inside (httparse trimmed the outer ones), no
/// leading zeros (`0` itself aside), no value beyond `u64`. Leading zeros and huge values
/// are valid syntax, but intermediaries disagree on them (octal readings, wrap-around or
/// truncation on overflow), so a request carrying one is refused as invalid framing.
fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || (v.len() > 1 && v[0] == b'0') {
        return Err(HttpError::InvalidContentLength);
    }
    let mut n: u64 = 0;
    for &d in v {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(HttpError::InvalidContentLength)?;
    }
    Ok(n)
}

/// The authority of an absolute-form target (`http://h:1/p` ⇒ `h:1`), if it is one.
fn absolute_authority(target: &str) -> Option<&str> {
    let rest = strip_scheme(target)?;
    Some(&rest[..rest.find(['/', '?']).unwrap_or(rest.len())])
}

/// The part after `http://` or `https://` (scheme case-insensitive).
fn strip_scheme(target: &str) -> Option<&str> {
    // Bytes, not `str` slices: a target may hold multi-byte characters, and cutting one at
    // byte 7 or 8 would panic. A match is ASCII, so the cut after it is a char boundary.
    let b = target.as_bytes();
    if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        Some(&target[7..])
    } else if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        Some(&target[8..])
    } else {
        None
    }
}

/// The path-and-query of an absolute-form target (`http://host/p?q` ⇒ `/p?q`), `/` when
/// it has none.
fn absolute_path(target: &str) -> Option<&str> {
    let rest = strip_scheme(target)?;
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Some(&rest[i..]),
        Some(_) | None => Some("/"),
    }
}

/// A parsed request: a view borrowing every field from the decoded packet.
///
/// Obtain it with [`Request::parse`] on the message data that
/// [`HttpDecoder`](super::HttpDecoder) produced (a packet with a `Content-Length` body, or a
/// de-chunked copy whose trailer fields follow the body).
///
/// ```
/// use ringman_protocols::http::Request;
/// let req = Request::parse(b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\nCookie: s=1; t=2\r\n\r\n").unwrap();
/// assert_eq!(req.method(), "GET");
/// assert_eq!(req.path(), "/a/b");
/// assert_eq!(req.query(), Some("x=1"));
/// assert_eq!(req.header("HOST"), Some(&b"h"[..]));
/// assert_eq!(req.cookie("t"), Some("2"));
/// assert!(req.keep_alive());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: Version,
    head: &'a [u8],
    header_block: &'a [u8],
    body: &'a [u8],
    trailer_block: &'a [u8],
    keep_alive: bool,
}

impl<'a> Request<'a> {
    /// Parses and validates one complete request (head, then exactly the body its
    /// `Content-Length` announces, then optionally a trailer section).
    ///
    /// A request still carrying `Transfer-Encoding: chunked` is refused: pass the decoder's
    /// output, which has been de-chunked.
    pub fn parse(data: &'a [u8]) -> Result<Request<'a>, HttpError> {
        let end = find_head_end(data).ok_or(HttpError::Malformed("incomplete head"))? + 4;
        let (head, rest) = data.split_at(end);
        let p = ParsedHead::parse(head)?;
        let len = match p.info.framing {
            Framing::Length(n) => n,
            Framing::Chunked => return Err(HttpError::Malformed("chunked body not decoded")),
        };
        let len =
            usize::try_from(len).ok().filter(|&n| n <= rest.len()).ok_or(HttpError::Malformed("truncated body"))?;
        let (body, trailer_block) = rest.split_at(len);
        if !trailer_block.is_empty() {
            check_line_endings(trailer_block)?;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(trailer_block, &mut headers).map_err(map_httparse)? {
                httparse::Status::Complete((n, fields)) if n == trailer_block.len() => check_trailer_fields(fields)?,
                _ => return Err(HttpError::Malformed("bytes after the body")),
            }
        }
        let trailer_block = trailer_block.get(..trailer_block.len().saturating_sub(2)).unwrap_or(b"");
        let parts =
            Parts { method: p.method, target: p.target, version: p.version, head, header_block: p.header_block };
        Ok(parts.assemble(body, trailer_block, p.conn_close, p.conn_keep_alive))
    }

    /// Builds the view of a message that [`HttpDecoder`](super::HttpDecoder) decoded,
    /// without validating its head a second time (the decoder did, while framing it).
    ///
    /// This is the engine's per-request path (`Worker::on_request` on `http://` workers). It
    /// reads the request line, `Content-Length` and `Connection` straight from the bytes, and
    /// hands anything unusual (a trailer section, a `Transfer-Encoding` field, a shape the
    /// decoder never produces) to [`Request::parse`]. For every message the decoder produces,
    /// the result equals `Request::parse(data)`.
    ///
    /// Use it only on such messages. On other bytes it never panics, but it does not repeat
    /// the decoder's checks (field syntax, line endings, `Host`, conflicting framing), so it
    /// may accept a request that [`Request::parse`] refuses.
    ///
    /// ```
    /// use ringman_protocols::http::{HttpDecoder, Request};
    /// use ringman_protocols::{Decoder, Input};
    /// let mut dec = HttpDecoder::new();
    /// let mut wire = b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".to_vec();
    /// let Input::Packet(n) = dec.input(&wire, 1 << 20).unwrap() else { panic!() };
    /// let msg = dec.decode(&mut wire[..n]).unwrap().unwrap();
    /// let req = Request::from_decoded(msg.data).unwrap();
    /// assert_eq!((req.path(), req.query(), req.keep_alive()), ("/a", Some("b=1"), false));
    /// assert_eq!(req, Request::parse(msg.data).unwrap());
    /// ```
    pub fn from_decoded(data: &'a [u8]) -> Result<Request<'a>, HttpError> {
        match Request::read_decoded(data) {
            Some(req) => Ok(req),
            None => Request::parse(data),
        }
    }

    /// The common shape of a decoded request: head, then exactly the `Content-Length` body.
    /// `None` when the bytes are anything else (the caller then parses them fully).
    fn read_decoded(data: &'a [u8]) -> Option<Request<'a>> {
        // Request line: method SP target SP "HTTP/1.x" CRLF (single spaces: httparse's
        // strict mode, which the decoder used, accepts nothing else).
        let line_end = memchr::memchr(b'\n', data)? + 1;
        let line = data[..line_end].strip_suffix(b"\r\n")?;
        let (method_target, version) = line.split_at(line.len().checked_sub(9)?);
        let version = match version {
            b" HTTP/1.1" => Version::Http11,
            b" HTTP/1.0" => Version::Http10,
            _ => return None,
        };
        let sp = memchr::memchr(b' ', method_target)?;
        let method_target = std::str::from_utf8(method_target).ok()?;
        // `sp` indexes an ASCII byte, so both halves are `str` slices on char boundaries.
        let (method, target) = (&method_target[..sp], &method_target[sp + 1..]);
        if method.is_empty() || target.is_empty() {
            return None;
        }

        // Field lines up to the empty line; only three names matter here. They are told
        // apart by their first byte and length before any comparison.
        let mut content_length: Option<u64> = None;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        let mut pos = line_end;
        let end = loop {
            let rest = &data[pos..];
            if rest.starts_with(b"\r\n") {
                break pos + 2;
            }
            let nl = memchr::memchr(b'\n', rest)?;
            let field = rest[..nl].strip_suffix(b"\r")?;
            pos += nl + 1;
            match field.first().map(u8::to_ascii_lowercase) {
                Some(b'c') => {
                    if let Some(v) = field_value(field, b"content-length") {
                        if content_length.is_some() {
                            return None;
                        }
                        content_length = Some(parse_content_length(trim_ows(v)).ok()?);
                    } else if let Some(v) = field_value(field, b"connection") {
                        for t in list_tokens(v) {
                            if t.eq_ignore_ascii_case(b"close") {
                                conn_close = true;
                            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                                conn_keep_alive = true;
                            }
                        }
                    }
                }
                Some(b't') if field_value(field, b"transfer-encoding").is_some() => return None,
                _ => {}
            }
        };
        let (head, body) = data.split_at(end);
        let header_block = &head[line_end..end - 2];
        // Anything after the announced body is a trailer section: the full parse checks it.
        if usize::try_from(content_length.unwrap_or(0)).ok()? != body.len() {
            return None;
        }
        let parts = Parts { method, target, version, head, header_block };
        Some(parts.assemble(body, &[], conn_close, conn_keep_alive))
    }

    /// The method, case-sensitive as sent (`GET`, `POST`, ...).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target exactly as sent (may be absolute-form or `*`).
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path part of the target, still percent-encoded (see
    /// [`resolve_path`](super::resolve_path) to map it to a file).
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query string after `?`, still percent-encoded (see
    /// [`parse_urlencoded`](super::parse_urlencoded)).
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The raw head: request line, header lines and the final empty line.
    pub fn raw_head(&self) -> &'a [u8] {
        self.head
    }

    /// The body (already de-chunked).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Every header field in order, as `(name, value)`; values have surrounding
    /// whitespace removed. Duplicates are returned separately.
    pub fn headers(&self) -> Fields<'a> {
        Fields { rest: self.header_block }
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// [`header`](Self::header) as UTF-8 (`None` when absent or not UTF-8).
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// All values of fields named `name` (case-insensitive), in order.
    pub fn header_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.headers().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// The host the request is for: the authority of an absolute-form target (which takes
    /// the place of the `Host` field, RFC 9112 §3.2.2), else the `Host` field.
    pub fn host(&self) -> Option<&'a str> {
        absolute_authority(self.target).or_else(|| self.header_str("host"))
    }

    /// Trailer fields that followed a chunked body (empty otherwise).
    pub fn trailers(&self) -> Fields<'a> {
        Fields { rest: self.trailer_block }
    }

    /// The first trailer field named `name` (case-insensitive).
    pub fn trailer(&self, name: &str) -> Option<&'a [u8]> {
        self.trailers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every cookie from every `Cookie` field, as `(name, value)` (surrounding double quotes
    /// removed, no percent-decoding).
    pub fn cookies(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.header_all("cookie").filter_map(|v| std::str::from_utf8(v).ok()).flat_map(|v| v.split(';')).filter_map(
            |pair| {
                let (n, v) = pair.split_once('=')?;
                let n = n.trim();
                let v = v.trim();
                let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                (!n.is_empty()).then_some((n, v))
            },
        )
    }

    /// The value of the first cookie named `name`.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.cookies().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3):
    /// `Connection: close` closes; HTTP/1.1 persists by default; HTTP/1.0 persists only with
    /// `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// The `Content-Type` field.
    pub fn content_type(&self) -> Option<&'a str> {
        self.header_str("content-type")
    }

    /// Whether this is a WebSocket upgrade request (`Upgrade: websocket` and `Connection`
    /// listing `upgrade`).
    pub fn is_upgrade(&self) -> bool {
        self.header_all("upgrade").any(|v| list_tokens(v).any(|t| t.eq_ignore_ascii_case(b"websocket")))
            && self.header_all("connection").any(|v| list_tokens(v).any(|t| t.eq_ignore_ascii_case(b"upgrade")))
    }
}

/// The value of `field` (a `name:value` line without CRLF) when its name is `name`
/// (lower-case, compared case-insensitively).
fn field_value<'a>(field: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    match field.split_at_checked(name.len())? {
        (n, [b':', value @ ..]) if n.eq_ignore_ascii_case(name) => Some(value),
        _ => None,
    }
}

/// The head fields both constructors extract, before the derived ones are computed.
struct Parts<'a> {
    method: &'a str,
    target: &'a str,
    version: Version,
    head: &'a [u8],
    header_block: &'a [u8],
}

impl<'a> Parts<'a> {
    /// Derives path, query and the keep-alive decision (one place, so that
    /// [`Request::parse`] and [`Request::from_decoded`] cannot drift apart).
    fn assemble(self, body: &'a [u8], trailer_block: &'a [u8], conn_close: bool, conn_keep_alive: bool) -> Request<'a> {
        let origin = if self.target.starts_with('/') || self.target == "*" {
            self.target
        } else {
            absolute_path(self.target).unwrap_or("/")
        };
        // Byte search: `?` is ASCII, so the split falls on char boundaries.
        let (path, query) = match memchr::memchr(b'?', origin.as_bytes()) {
            Some(i) => (&origin[..i], Some(&origin[i + 1..])),
            None => (origin, None),
        };
        let keep_alive = match self.version {
            _ if conn_close => false,
            Version::Http11 => true,
            Version::Http10 => conn_keep_alive,
        };
        Request {
            method: self.method,
            target: self.target,
            path,
            query,
            version: self.version,
            head: self.head,
            header_block: self.header_block,
            body,
            trailer_block,
            keep_alive,
        }
    }
}

/// Iterator over validated header (or trailer) lines, yielding `(name, value)`.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = memchr::memchr(b'\n', self.rest).map_or(self.rest.len(), |i| i + 1);
            let (line, rest) = self.rest.split_at(end);
            self.rest = rest;
            let line = line.strip_suffix(b"\r\n").unwrap_or(line);
            let Some(colon) = memchr::memchr(b':', line) else { continue };
            // Names were validated as tokens, so they are ASCII.
            let Ok(name) = std::str::from_utf8(&line[..colon]) else { continue };
            return Some((name, trim_ows(&line[colon + 1..])));
        }
    }
}

#[cfg(test)]
mod tests {
    /// Found by the fuzz smoke: a target with a multi-byte character within its first
    /// eight bytes panicked where the scheme was compared as a `str` slice.
    #[test]
    fn a_target_with_a_multibyte_character_near_its_start_is_no_absolute_form() {
        assert_eq!(strip_scheme("/?baƤ%1=1"), None);
        assert_eq!(strip_scheme("ET/?baƤ%1=1"), None);
        assert_eq!(strip_scheme("httpƤ://h/"), None);
        assert_eq!(strip_scheme("HTTP://hƤ/p"), Some("hƤ/p"));
        assert_eq!(strip_scheme("https://Ƥ"), Some("Ƥ"));
    }

    use super::*;
    use proptest::prelude::*;

    fn err(s: &[u8]) -> HttpError {
        Request::parse(s).unwrap_err()
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |s: &[u8]| Request::parse(s).unwrap().keep_alive();
        assert!(ka(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn fields_and_cookies() {
        let r = Request::parse(
            b"POST http://example.com/up?a=b HTTP/1.1\r\nHost: example.com:8080\r\nX-A: 1\r\nx-a:  2 \r\nCookie: a=1; b=\"q\"\r\nCookie: c=3\r\nContent-Length: 3\r\n\r\nabc",
        )
        .unwrap();
        assert_eq!(r.path(), "/up");
        assert_eq!(r.query(), Some("a=b"));
        assert_eq!(r.body(), b"abc");
        assert_eq!(r.header_all("X-a").collect::<Vec<_>>(), vec![&b"1"[..], b"2"]);
        assert_eq!(r.cookies().collect::<Vec<_>>(), vec![("a", "1"), ("b", "q"), ("c", "3")]);
        // Absolute form: the target's authority stands in for Host (RFC 9112 §3.2.2).
        assert_eq!(r.host(), Some("example.com"));
        assert_eq!(r.version(), Version::Http11);
        assert_eq!(r.headers().count(), 6);
    }

    #[test]
    fn trailers_after_body() {
        let r = Request::parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiX-Sum: 9\r\n\r\n").unwrap();
        assert_eq!(r.body(), b"hi");
        assert_eq!(r.trailer("x-sum"), Some(&b"9"[..]));
        assert_eq!(r.header("x-sum"), None);
        assert!(Request::parse(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhijunk").is_err());
    }

    #[test]
    fn rejects() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), HttpError::BadHost);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), HttpError::BadHost);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), HttpError::BadHost);
        assert_eq!(err(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), HttpError::Malformed("bare LF"));
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), HttpError::Malformed("bare CR"));
        assert_eq!(err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), HttpError::UnsupportedVersion);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET x HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
        assert_eq!(err(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n").status(), 501);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n").status(), 400);
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"), HttpError::ExpectationFailed);
        assert_eq!(err(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(err(&many), HttpError::TooManyHeaders);
        assert_eq!(err(&many).status(), 431);
    }

    #[test]
    fn framing_headers() {
        let head = |s: &[u8]| check_head(s).map(|i| i.framing);
        assert_eq!(head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"), Ok(Framing::Length(5)));
        assert_eq!(head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"), Ok(Framing::Chunked));
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
            Err(HttpError::DuplicateContentLength)
        );
        for bad in [&b"5, 5"[..], b"+5", b"-1", b"0x5", b"5 5", b""] {
            let mut h = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ".to_vec();
            h.extend_from_slice(bad);
            h.extend_from_slice(b"\r\n\r\n");
            assert_eq!(head(&h), Err(HttpError::InvalidContentLength), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::ConflictingFraming)
        );
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Err(HttpError::InvalidTransferEncoding)
        );
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::InvalidTransferEncoding)
        );
        assert_eq!(
            head(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HttpError::InvalidTransferEncoding)
        );
        assert_eq!(
            head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n")
                .map_err(|e| e.status()),
            Err(400)
        );
    }

    #[test]
    fn options_star_and_absolute_root() {
        let r = Request::parse(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r.path(), "*");
        let r = Request::parse(b"GET https://a?x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((r.path(), r.query()), ("/", None));
        assert!(Request::parse(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
    }

    /// Passes one complete request through the decoder; returns the decoded message data.
    fn decoded(wire: &[u8]) -> Vec<u8> {
        use crate::{Decoder, Input};
        let mut dec = super::super::HttpDecoder::new();
        let mut buf = wire.to_vec();
        let n = match dec.input(&buf, 1 << 20) {
            Ok(Input::Packet(n)) if n <= buf.len() => n,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(wire)),
        };
        dec.decode(&mut buf[..n]).unwrap().unwrap().data.to_vec()
    }

    #[test]
    fn from_decoded_equals_parse() {
        // (request, whether the fields are read back without the full parse)
        for (wire, quick) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], true),
            (b"GET /a/b?x=1&y HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\nconnection: upgrade, close\r\n\r\n", true),
            (b"POST http://example.com/up?a=b HTTP/1.1\r\nHost: example.com\r\ncontent-LENGTH: 3\r\n\r\nabc", true),
            (b"GET /%C3%A9 HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Ws: \t v \t\r\nCookie: a=1; b=2\r\n\r\n", true),
            (b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true),
            // A trailer section is left to the full parse, which validates it.
            (
                b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n",
                false,
            ),
        ] {
            let m = decoded(wire);
            let what = String::from_utf8_lossy(wire);
            assert!(Request::parse(&m).is_ok(), "{what}");
            assert_eq!(Request::from_decoded(&m), Request::parse(&m), "{what}");
            assert_eq!(Request::read_decoded(&m).is_some(), quick, "{what}");
        }
    }

    #[test]
    fn from_decoded_hands_odd_bytes_to_the_full_parse() {
        for wire in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\nx",
            b"POST / HTTP/1.1\r\nHost: a\r\n\r\nhijunk",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET /\r\nHost: a\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a",
        ] {
            assert!(Request::read_decoded(wire).is_none(), "{:?}", String::from_utf8_lossy(wire));
            assert_eq!(Request::from_decoded(wire), Request::parse(wire));
        }
    }

    /// Valid requests of many shapes: (wire bytes, whether a trailer section follows).
    fn valid_request() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let field = (
            proptest::sample::select(vec!["X-A", "Accept", "cookie", "Connection", "CONNECTION", "User-Agent"]),
            "[!-~]([ !-~]{0,12}[!-~])?",
        );
        (
            proptest::sample::select(vec!["GET", "POST", "HEAD", "DELETE", "PATCH"]),
            "(/([a-zA-Z0-9._~-]|%[0-9a-fA-F]{2}){0,6}){1,3}(\\?([a-z0-9=&]|%[0-9A-F]{2}){0,10})?",
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(field, 0..6),
            proptest::sample::select(vec!["", "close", "keep-alive", "Upgrade, CLOSE", " Keep-Alive , x"]),
            proptest::collection::vec(any::<u8>(), 0..40),
            0u8..3,
        )
            .prop_map(|(method, target, absolute, http10, fields, conn, body, mode)| {
                let target = if absolute { format!("http://h.example{target}") } else { target };
                let version = if http10 { "1.0" } else { "1.1" };
                let mut w = format!("{method} {target} HTTP/{version}\r\nHost: h.example\r\n").into_bytes();
                for (name, value) in fields {
                    w.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                if !conn.is_empty() {
                    w.extend_from_slice(format!("Connection:{conn}\r\n").as_bytes());
                }
                let chunked = mode > 0 && !http10;
                if chunked {
                    w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    if !body.is_empty() {
                        w.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                        w.extend_from_slice(&body);
                        w.extend_from_slice(b"\r\n");
                    }
                    w.extend_from_slice(if mode == 2 { &b"0\r\nX-T: 1\r\n\r\n"[..] } else { b"0\r\n\r\n" });
                } else if body.is_empty() {
                    w.extend_from_slice(b"\r\n");
                } else {
                    w.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
                    w.extend_from_slice(&body);
                }
                (w, chunked && mode == 2)
            })
    }

    proptest::proptest! {
        #[test]
        fn decoded_requests_read_back_like_parse((wire, trailers) in valid_request()) {
            let m = decoded(&wire);
            let full = Request::parse(&m);
            proptest::prop_assert!(full.is_ok());
            proptest::prop_assert_eq!(Request::from_decoded(&m), full);
            proptest::prop_assert_eq!(Request::read_decoded(&m).is_some(), !trailers);
        }

        #[test]
        fn from_decoded_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..120), cut in any::<usize>()) {
            let mut wire = b"GET /x HTTP/1.1\r\nContent-Length: 3\r\n".to_vec();
            wire.extend_from_slice(&tail);
            let _ = Request::from_decoded(&wire[..cut % (wire.len() + 1)]);
            let _ = Request::from_decoded(&tail);
        }
    }

    #[test]
    fn upgrade_detection() {
        let r = Request::parse(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        )
        .unwrap();
        assert!(r.is_upgrade());
    }
}
