//! HTTP/1.1 responses, for clients: a sans-IO, streaming parser.
//!
//! [`ResponseParser`] is fed the bytes of a connection as they arrive and reports
//! [`ResponseEvent`]s through a callback: interim `1xx` responses, the head, body data (a
//! slice of the input: the body is never copied or buffered), and the end. Only the head
//! (and a chunk-size or trailer line split across reads) is copied, into a small buffer.
//!
//! It is as strict as the server's request parser (RFC 9112), because a response read
//! differently by a client and a proxy in between is the same desynchronisation hazard:
//!
//! | input | verdict | RFC |
//! |---|---|---|
//! | a status line other than `HTTP/1.0` or `HTTP/1.1`, three digits, SP, reason (the SP before an empty reason may be missing) | [`ResponseError::Malformed`] | 9112 §4 |
//! | a bare CR or LF as a line end, obsolete line folding, whitespace before a colon | `Malformed` | 9112 §2.2, §5.1, §5.2 |
//! | a head beyond the limit (16 KiB by default) or more than 100 fields | `HeadTooLarge`, `TooManyHeaders` | 9112 §5 |
//! | `Content-Length` not a plain decimal, or more than one | `InvalidContentLength`, `DuplicateContentLength` | 9112 §6.3 |
//! | a transfer coding other than `chunked` (the client sends no `TE`) | `UnsupportedTransferEncoding` | 9112 §6.1 |
//! | `Transfer-Encoding` and `Content-Length` together | chunked wins, the connection is not reused | 9112 §6.3 |
//! | a malformed chunk-size line, extension or chunk end | `InvalidChunk` | 9112 §7.1 |
//! | `101 Switching Protocols` (never asked for) | `UnexpectedUpgrade` | 9110 §15.2.2 |
//! | EOF inside a head, a length-delimited or a chunked body | `Incomplete` | 9112 §8 |
//!
//! Framing follows RFC 9112 §6.3: no body after a `HEAD` request, a `1xx`, `204` or `304`;
//! else chunked, else `Content-Length`, else the body runs until the server closes (and the
//! connection cannot be reused). Trailer fields are read, checked for syntax and dropped:
//! they are never merged into the head.

use super::error::HttpError;
use super::framing::parse_chunk_line;
use super::request::{list_tokens, trim_ows, MAX_HEADERS};

/// Why a response is refused (the connection must be closed: it can no longer be framed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The status line, a field line or a line ending does not follow RFC 9112.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    /// No end of the head within the limit.
    #[error("response head exceeds {limit} bytes")]
    HeadTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// More header fields than the parser accepts.
    #[error("too many header fields in the response")]
    TooManyHeaders,
    /// `Content-Length` is not a plain decimal number.
    #[error("invalid Content-Length in the response")]
    InvalidContentLength,
    /// More than one `Content-Length`.
    #[error("duplicate Content-Length in the response")]
    DuplicateContentLength,
    /// A transfer coding other than `chunked`.
    #[error("unsupported transfer coding in the response")]
    UnsupportedTransferEncoding,
    /// The chunked body is malformed.
    #[error("invalid chunked body: {0}")]
    InvalidChunk(&'static str),
    /// `101 Switching Protocols` although no upgrade was asked for.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
    /// The connection ended before the response did.
    #[error("the connection closed before the response was complete")]
    Incomplete,
}

/// The parsed head of a response (owned: it outlives the bytes it came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase (may be empty).
    pub reason: String,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ResponseHead {
    /// The first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// [`ResponseHead::header`] as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// What the parser reports.
#[derive(Debug, PartialEq, Eq)]
pub enum ResponseEvent<'a> {
    /// An interim `1xx` response (not `101`): a client skips it and waits for the final one.
    Interim(u16),
    /// The final response's head.
    Head(ResponseHead),
    /// Body bytes, in order (de-chunked), borrowed from the input.
    Data(&'a [u8]),
    /// The response is complete; `reusable` says whether the connection may carry another
    /// request (keep-alive, and the body was framed by its length or chunks).
    End {
        /// The connection may be reused.
        reusable: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// `n` body bytes left.
    Length(u64),
    ChunkLine,
    /// `n` bytes of the current chunk left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Default limit of a response head.
pub const DEFAULT_RESPONSE_HEAD_LIMIT: usize = 16 * 1024;

/// The streaming response parser of one connection (see the module docs).
///
/// ```
/// use ringman_protocols::http::{ResponseEvent, ResponseParser};
/// let mut p = ResponseParser::new();
/// p.start(false);
/// let mut body = Vec::new();
/// let mut status = 0;
/// let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
/// for piece in wire.chunks(7) {
///     p.feed(piece, |ev| match ev {
///         ResponseEvent::Head(h) => status = h.status,
///         ResponseEvent::Data(d) => body.extend_from_slice(d),
///         _ => {}
///     })
///     .unwrap();
/// }
/// assert_eq!((status, &body[..]), (200, &b"hello"[..]));
/// assert!(p.is_done());
/// ```
#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    /// Bytes of a head, chunk-size line or trailer section not complete yet.
    buf: Vec<u8>,
    head_limit: usize,
    head_request: bool,
    reusable: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        ResponseParser::new()
    }
}

impl ResponseParser {
    /// A parser with the default head limit.
    pub fn new() -> ResponseParser {
        ResponseParser::with_head_limit(DEFAULT_RESPONSE_HEAD_LIMIT)
    }

    /// A parser whose heads may be `limit` bytes long.
    pub fn with_head_limit(limit: usize) -> ResponseParser {
        ResponseParser { state: State::Done, buf: Vec::new(), head_limit: limit, head_request: false, reusable: false }
    }

    /// Expects the response to the request just sent (`head_request`: it was a `HEAD`,
    /// so the response has no body whatever its fields say).
    pub fn start(&mut self, head_request: bool) {
        self.state = State::Head;
        self.buf.clear();
        self.head_request = head_request;
        self.reusable = false;
    }

    /// True once the response ended (and before [`ResponseParser::start`]).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Parses `input`, reporting events to `sink`. Returns how many bytes it took: all of
    /// them, unless the response ended inside `input` (the rest belongs to no request: a
    /// caller that pipelines feeds it to the next response after `start`).
    pub fn feed(&mut self, input: &[u8], mut sink: impl FnMut(ResponseEvent<'_>)) -> Result<usize, ResponseError> {
        let mut pos = 0;
        while pos < input.len() || self.state == State::Length(0) {
            let rest = &input[pos..];
            match self.state {
                State::Done => break,
                State::Head => match self.take_line_block(rest, true)? {
                    None => pos = input.len(),
                    Some(used) => {
                        pos += used;
                        self.head(&mut sink)?;
                    }
                },
                State::Length(0) => self.end(&mut sink),
                State::Length(n) => {
                    let take = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    sink(ResponseEvent::Data(&rest[..take]));
                    pos += take;
                    self.state = State::Length(n - take as u64);
                    if n == take as u64 {
                        self.end(&mut sink);
                    }
                }
                State::UntilClose => {
                    sink(ResponseEvent::Data(rest));
                    pos = input.len();
                }
                State::ChunkLine => match self.take_line(rest)? {
                    None => pos = input.len(),
                    Some(used) => {
                        pos += used;
                        let size = parse_chunk_line(&self.buf).map_err(chunk_error)?;
                        self.buf.clear();
                        self.state = if size == 0 { State::Trailers } else { State::ChunkData(size) };
                    }
                },
                State::ChunkData(n) => {
                    let take = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
                    sink(ResponseEvent::Data(&rest[..take]));
                    pos += take;
                    self.state = if n == take as u64 { State::ChunkEnd } else { State::ChunkData(n - take as u64) };
                }
                State::ChunkEnd => {
                    // Two bytes, possibly split: CR then LF.
                    self.buf.push(rest[0]);
                    pos += 1;
                    match self.buf.as_slice() {
                        b"\r" => {}
                        b"\r\n" => {
                            self.buf.clear();
                            self.state = State::ChunkLine;
                        }
                        _ => return Err(ResponseError::InvalidChunk("chunk data not followed by CRLF")),
                    }
                }
                State::Trailers => match self.take_line_block(rest, false)? {
                    None => pos = input.len(),
                    Some(used) => {
                        pos += used;
                        self.trailers()?;
                        self.end(&mut sink);
                    }
                },
            }
        }
        Ok(pos)
    }

    /// The connection reached EOF: ends a body delimited by the close, or reports that the
    /// response was cut short. Nothing happens when no response was expected.
    pub fn finish(&mut self, mut sink: impl FnMut(ResponseEvent<'_>)) -> Result<(), ResponseError> {
        match self.state {
            State::Done => Ok(()),
            State::UntilClose => {
                self.reusable = false;
                self.end(&mut sink);
                Ok(())
            }
            State::Head if self.buf.is_empty() => Err(ResponseError::Incomplete),
            _ => Err(ResponseError::Incomplete),
        }
    }

    fn end(&mut self, sink: &mut impl FnMut(ResponseEvent<'_>)) {
        self.state = State::Done;
        self.buf.clear();
        sink(ResponseEvent::End { reusable: self.reusable });
    }

    /// Appends `rest` to the buffer up to the end of one line (`LF`); `Some(bytes taken)`
    /// once the line is complete (it is then `buf`).
    fn take_line(&mut self, rest: &[u8]) -> Result<Option<usize>, ResponseError> {
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                self.buf.extend_from_slice(&rest[..=i]);
                Ok(Some(i + 1))
            }
            None => {
                self.buf.extend_from_slice(rest);
                if self.buf.len() > 1024 {
                    return Err(ResponseError::InvalidChunk("chunk-size line too long"));
                }
                Ok(None)
            }
        }
    }

    /// Appends `rest` up to the end of a block of lines closed by an empty line (a head, or
    /// a trailer section, which may be empty: then the block is just CRLF). Bare CR or LF
    /// is refused as soon as it is seen.
    fn take_line_block(&mut self, rest: &[u8], head: bool) -> Result<Option<usize>, ResponseError> {
        let mut i = 0;
        while i < rest.len() {
            let b = rest[i];
            self.buf.push(b);
            i += 1;
            let n = self.buf.len();
            match b {
                b'\n' if n < 2 || self.buf[n - 2] != b'\r' => return Err(ResponseError::Malformed("bare LF")),
                b'\n' => {
                    let block_end = self.buf.ends_with(b"\r\n\r\n") || self.buf.as_slice() == b"\r\n";
                    if block_end && !(head && self.buf.as_slice() == b"\r\n") {
                        return Ok(Some(i));
                    }
                    if head && self.buf.as_slice() == b"\r\n" {
                        // RFC 9112 §2.2 lets a recipient skip empty lines before a message; a
                        // response has none, so one here is a desynchronised stream.
                        return Err(ResponseError::Malformed("empty line before the status line"));
                    }
                }
                _ if n >= 2 && self.buf[n - 2] == b'\r' => return Err(ResponseError::Malformed("bare CR")),
                _ => {}
            }
            if self.buf.len() > self.head_limit {
                return Err(ResponseError::HeadTooLarge { limit: self.head_limit });
            }
        }
        Ok(None)
    }

    /// A complete head is in `buf`: parse it and choose the framing.
    fn head(&mut self, sink: &mut impl FnMut(ResponseEvent<'_>)) -> Result<(), ResponseError> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ResponseError::Malformed("incomplete head")),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
            Err(httparse::Error::Version) => return Err(ResponseError::Malformed("not HTTP/1.0 or HTTP/1.1")),
            Err(httparse::Error::Status) => return Err(ResponseError::Malformed("invalid status code")),
            Err(_) => return Err(ResponseError::Malformed("invalid status line or field")),
        }
        let minor = resp.version.unwrap_or(1);
        let status = resp.code.unwrap_or(0);
        if !(100..=999).contains(&status) {
            return Err(ResponseError::Malformed("invalid status code"));
        }
        // (`HTTP/1.1 200` CRLF, without the SP before an empty reason, is accepted: the
        // reason is ignored anyway, and the framing cannot be read two ways.)
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut te = false;
        let mut close = minor == 0;
        for h in resp.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                if length.is_some() {
                    return Err(ResponseError::DuplicateContentLength);
                }
                length = Some(parse_length(h.value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                // Only `chunked`, once, last (and first: the client asked for no coding).
                for (i, t) in list_tokens(h.value).enumerate() {
                    if !t.eq_ignore_ascii_case(b"chunked") || i > 0 || chunked {
                        return Err(ResponseError::UnsupportedTransferEncoding);
                    }
                    chunked = true;
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for t in list_tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") && minor == 0 {
                        close = false;
                    }
                }
            }
        }
        if te && !chunked {
            return Err(ResponseError::UnsupportedTransferEncoding);
        }
        let head = ResponseHead {
            minor_version: minor,
            status,
            reason: resp.reason.unwrap_or("").to_string(),
            headers: resp.headers.iter().map(|h| (h.name.to_string(), trim_ows(h.value).to_vec())).collect(),
        };
        self.buf.clear();
        match status {
            101 => return Err(ResponseError::UnexpectedUpgrade),
            100..=199 => {
                // Interim: the final response follows on the same stream.
                sink(ResponseEvent::Interim(status));
                self.state = State::Head;
                return Ok(());
            }
            _ => {}
        }
        let no_body = self.head_request || status == 204 || status == 304;
        self.reusable = !close;
        sink(ResponseEvent::Head(head));
        self.state = if no_body {
            State::Length(0)
        } else if chunked {
            // With a Content-Length too, chunked wins; the connection is not reused
            // (RFC 9112 §6.3: a sender of both may be attempting to smuggle).
            if length.is_some() {
                self.reusable = false;
            }
            State::ChunkLine
        } else if let Some(n) = length {
            State::Length(n)
        } else {
            self.reusable = false;
            State::UntilClose
        };
        Ok(())
    }

    /// A complete trailer section is in `buf`: check its syntax, drop it.
    fn trailers(&mut self) -> Result<(), ResponseError> {
        if self.buf.as_slice() != b"\r\n" {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(&self.buf, &mut slots) {
                Ok(httparse::Status::Complete(_)) => {}
                _ => return Err(ResponseError::InvalidChunk("invalid trailer section")),
            }
        }
        self.buf.clear();
        Ok(())
    }
}

fn parse_length(v: &[u8]) -> Result<u64, ResponseError> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(ResponseError::InvalidContentLength);
    }
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).ok_or(ResponseError::InvalidContentLength)
}

fn chunk_error(e: HttpError) -> ResponseError {
    match e {
        HttpError::InvalidChunk(why) => ResponseError::InvalidChunk(why),
        _ => ResponseError::InvalidChunk("invalid chunk-size line"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a whole feed reported: interim statuses, the head's status, the body, the end.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Seen {
        interim: Vec<u16>,
        status: Option<u16>,
        body: Vec<u8>,
        end: Option<bool>,
    }

    /// Feeds `wire` split at `cuts`, then EOF when `eof`.
    fn run(wire: &[u8], head_request: bool, cuts: &[usize], eof: bool) -> Result<(Seen, usize), ResponseError> {
        let mut p = ResponseParser::new();
        p.start(head_request);
        let mut seen = Seen::default();
        let mut used = 0;
        let mut from = 0;
        let mut sink = |ev: ResponseEvent<'_>| match ev {
            ResponseEvent::Interim(s) => seen.interim.push(s),
            ResponseEvent::Head(h) => seen.status = Some(h.status),
            ResponseEvent::Data(d) => seen.body.extend_from_slice(d),
            ResponseEvent::End { reusable } => seen.end = Some(reusable),
        };
        for &c in cuts.iter().chain(std::iter::once(&wire.len())) {
            let piece = &wire[from..c];
            let n = p.feed(piece, &mut sink)?;
            used += n;
            from = c;
            if n < piece.len() {
                break;
            }
        }
        if eof {
            p.finish(&mut sink)?;
        }
        Ok((seen, used))
    }

    /// `wire` whole, split at every byte boundary, and byte by byte: the same outcome.
    fn every_split(wire: &[u8], head_request: bool, eof: bool) -> Result<(Seen, usize), ResponseError> {
        let whole = run(wire, head_request, &[], eof);
        for cut in 1..wire.len() {
            assert_eq!(
                run(wire, head_request, &[cut], eof),
                whole,
                "split at {cut} of {:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let all: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(run(wire, head_request, &all, eof), whole, "byte by byte");
        whole
    }

    fn ok(wire: &[u8]) -> Seen {
        every_split(wire, false, false).unwrap().0
    }

    fn err(wire: &[u8]) -> ResponseError {
        every_split(wire, false, true).unwrap_err()
    }

    #[test]
    fn content_length_body_and_reuse() {
        let s = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(s, Seen { interim: vec![], status: Some(200), body: b"hello".to_vec(), end: Some(true) });
        // An empty reason, with or without the SP before it.
        assert_eq!(ok(b"HTTP/1.1 204 \r\n\r\n").status, Some(204));
        assert_eq!(ok(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").end, Some(true));
        // Connection: close ends reuse.
        assert_eq!(ok(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx").end, Some(false));
        // HTTP/1.0 keeps the connection only when asked to.
        assert_eq!(ok(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx").end, Some(false));
        assert_eq!(ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx").end, Some(true));
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let s = ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n");
        assert_eq!((s.body.as_slice(), s.end), (&b"hello world"[..], Some(true)));
        // chunked and Content-Length: chunked wins, no reuse (RFC 9112 §6.3).
        let s = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
        assert_eq!((s.body.as_slice(), s.end), (&b"ab"[..], Some(false)));
    }

    #[test]
    fn no_body_after_head_204_304_and_interim_responses_are_skipped() {
        let (s, _) = every_split(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true, false).unwrap();
        assert_eq!((s.status, s.body.len(), s.end), (Some(200), 0, Some(true)));
        assert_eq!(ok(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n").end, Some(true));
        let s = ok(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!((s.interim, s.status, s.body), (vec![100, 103], Some(200), b"ok".to_vec()));
    }

    #[test]
    fn a_body_without_framing_runs_to_the_close() {
        let (s, _) = every_split(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", false, true).unwrap();
        assert_eq!((s.body.as_slice(), s.end), (&b"until the end"[..], Some(false)));
    }

    #[test]
    fn bytes_after_the_response_are_left_to_the_caller() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200";
        let (s, used) = run(wire, false, &[], false).unwrap();
        assert_eq!((s.body.as_slice(), used), (&b"ok"[..], wire.len() - 12));
    }

    #[test]
    fn malformed_responses_are_refused() {
        use ResponseError::*;
        let cases: &[(&[u8], ResponseError)] = &[
            (b"HTTP/1.2 200 OK\r\n\r\n", Malformed("not HTTP/1.0 or HTTP/1.1")),
            (b"HTTP/2 200 OK\r\n\r\n", Malformed("not HTTP/1.0 or HTTP/1.1")),
            (b"http/1.1 200 OK\r\n\r\n", Malformed("not HTTP/1.0 or HTTP/1.1")),
            (b"HTTP/1.1 20 OK\r\n\r\n", Malformed("invalid status code")),
            (b"HTTP/1.1 2000 OK\r\n\r\n", Malformed("invalid status code")),
            (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", Malformed("bare LF")),
            (b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", Malformed("bare CR")),
            (b"\r\nHTTP/1.1 200 OK\r\n\r\n", Malformed("empty line before the status line")),
            (b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n", Malformed("invalid status line or field")),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", Malformed("invalid status line or field")),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", DuplicateContentLength),
            (b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx", InvalidContentLength),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\nx", InvalidContentLength),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", InvalidContentLength),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", UnsupportedTransferEncoding),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", UnsupportedTransferEncoding),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n", UnsupportedTransferEncoding),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
                InvalidChunk("invalid chunk extension"),
            ),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", InvalidChunk("missing chunk size")),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                InvalidChunk("chunk data not followed by CRLF"),
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", UnexpectedUpgrade),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", Incomplete),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", Incomplete),
            (b"HTTP/1.1 200 OK\r\nContent-", Incomplete),
        ];
        for (wire, want) in cases {
            assert_eq!(&err(wire), want, "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn heads_beyond_the_limits_are_refused() {
        let mut long = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', DEFAULT_RESPONSE_HEAD_LIMIT));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            run(&long, false, &[], false).unwrap_err(),
            ResponseError::HeadTooLarge { limit: DEFAULT_RESPONSE_HEAD_LIMIT }
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(run(&many, false, &[], false).unwrap_err(), ResponseError::TooManyHeaders);
    }
}
