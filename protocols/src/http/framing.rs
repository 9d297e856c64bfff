//! [`HttpDecoder`]: finds where each request ends (head, then a `Content-Length` or chunked
//! body), enforcing the limits, and de-chunks chunked bodies.
//!
//! Scanning is incremental: a head or a chunked body that arrives in many pieces is scanned
//! once, not once per piece (the framer hands back the same packet start until `decode`).

use super::error::{itoa_buf, write_error_response};
use super::request::{
    bare_line_ending, check_head, check_line_endings, check_partial, check_trailer_fields, find_head_end, request_line,
    Framing,
};
use super::{HttpError, MAX_HEADERS, MAX_METHOD_LEN};
use crate::{Decoder, Input, Message, ProtocolError, Reply};

/// Default limit of the request head (request line + header fields + empty line): 16 KiB,
/// like Workerman's `Http::MAX_HEADER_LENGTH`. Longer ⇒ 431.
pub const DEFAULT_HEAD_LIMIT: usize = 16 * 1024;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// The interim response sent for `Expect: 100-continue`.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    /// No interim response due.
    Idle,
    /// The head asked for one and the body has not arrived yet.
    Pending,
    /// Handed out for this request.
    Sent,
}

#[derive(Debug, Clone, Copy)]
enum Scan {
    /// Looking for the end of the head; bytes below `scanned` hold no CRLFCRLF start.
    Head { scanned: usize, line_checked: bool },
    /// Walking a chunked body. `pos` is the start of the next chunk-size line (or trailer
    /// line once `trailers` is set), `body` the data bytes seen so far.
    Chunked { head_len: usize, pos: usize, body: u64, trailers: Option<usize> },
}

/// Per-connection HTTP/1.1 request decoder (the [`Decoder`] of [`Http`](super::Http)).
///
/// * `input` announces one packet per request: head plus body. Several requests in one
///   buffer (pipelining) are separate packets, decoded in order. Empty lines between
///   requests (RFC 9112 §2.2) become packets that decode to no message.
/// * `decode` yields `Message { kind: Binary }` whose data is the packet itself when the
///   body is `Content-Length` framed (zero-copy), or, for a chunked body, a normalized copy:
///   the head without `Transfer-Encoding` plus `Content-Length: n`, the de-chunked body, then
///   the trailer section (if any). Feed it to [`Request::parse`](super::Request::parse).
/// * Errors are [`HttpError`]s converted to [`ProtocolError`]; the last one is remembered so
///   [`Decoder::error_reply`] writes the matching 400/408/413/414/417/431/501/505 response with
///   `Connection: close`.
///
/// **100-continue:** when `input` sees a complete head with `Expect: 100-continue` whose
/// body has not fully arrived, it records that an interim `100 Continue` is due.
/// [`Decoder::poll_reply`] hands it out ([`CONTINUE_RESPONSE`], once per request): the
/// [`Framer`](crate::Framer) polls after every feed that leaves a packet incomplete, so the
/// client waiting for it gets it. If the body arrived in the same feed as the head, `decode`
/// drops the unsent 100 (RFC 9110 §10.1.1 allows omitting it once the body is received).
/// Code driving the decoder without a framer can use [`HttpDecoder::pending_continue`].
#[derive(Debug)]
pub struct HttpDecoder {
    scan: Scan,
    cont: Continue,
    head_limit: usize,
    norm: Vec<u8>,
    last_error: Option<HttpError>,
}

impl Default for HttpDecoder {
    fn default() -> Self {
        HttpDecoder::new()
    }
}

impl HttpDecoder {
    /// A decoder with the default 16 KiB head limit.
    pub fn new() -> Self {
        HttpDecoder::with_head_limit(DEFAULT_HEAD_LIMIT)
    }

    /// A decoder with a custom head limit (bytes of request line + fields + empty line).
    pub fn with_head_limit(head_limit: usize) -> Self {
        HttpDecoder {
            scan: Scan::Head { scanned: 0, line_checked: false },
            cont: Continue::Idle,
            head_limit,
            norm: Vec::new(),
            last_error: None,
        }
    }

    /// True once per request when a `100 Continue` should be sent now (see the type docs).
    pub fn pending_continue(&mut self) -> bool {
        if self.cont == Continue::Pending {
            self.cont = Continue::Sent;
            true
        } else {
            false
        }
    }

    /// The error that made `input` or `decode` fail last, if any.
    pub fn last_error(&self) -> Option<&HttpError> {
        self.last_error.as_ref()
    }

    fn fail(&mut self, e: HttpError) -> ProtocolError {
        self.last_error = Some(e.clone());
        e.into()
    }

    fn reset(&mut self) {
        self.scan = Scan::Head { scanned: 0, line_checked: false };
        self.cont = Continue::Idle;
    }

    fn scan(&mut self, buf: &[u8], max: usize) -> Result<Input, HttpError> {
        loop {
            match self.scan {
                Scan::Head { scanned, line_checked } => {
                    if buf.starts_with(b"\r\n") {
                        return Ok(Input::Packet(2));
                    }
                    let limit = buf.len().min(self.head_limit);
                    let from = scanned.saturating_sub(3).min(limit);
                    let Some(i) = find_head_end(&buf[from..limit]) else {
                        // A bare LF or CR among the new bytes ends the request now: waiting
                        // for a CRLFCRLF that may never come would answer split input
                        // differently from whole input. A fault of the request line before
                        // it is reported first, as a whole head's check does.
                        let bare = bare_line_ending(buf, scanned.min(buf.len()));
                        let clean = &buf[..bare.as_ref().map_or(buf.len(), |(n, _)| *n)];
                        let mut checked = line_checked;
                        if !checked {
                            if let Some(nl) = memchr::memchr(b'\n', clean) {
                                // The request line is complete: reject garbage now instead of
                                // buffering up to the head limit. Only the line: the field
                                // lines are checked once the head is complete, so a fault
                                // among them is found the same whichever bytes had arrived
                                // when the line's end did (found by the fuzz smoke: a control
                                // byte in a field that arrived with the request line was a 400
                                // whole and nothing split).
                                check_partial(&clean[..=nl])?;
                                checked = true;
                            } else if clean.len() > MAX_METHOD_LEN {
                                // An over-long method or target is answered (501, 414) before
                                // its line ends.
                                request_line(clean)?;
                                if bare.is_none() && buf.len() >= self.head_limit {
                                    // The line alone fills the head: only the target can.
                                    return Err(HttpError::TargetTooLong);
                                }
                            }
                        }
                        if let Some((_, e)) = bare {
                            return Err(e);
                        }
                        if buf.len() >= self.head_limit {
                            return Err(HttpError::HeadTooLarge { limit: self.head_limit });
                        }
                        self.scan = Scan::Head { scanned: buf.len(), line_checked: checked };
                        return Ok(Input::Need);
                    };
                    let head_len = from + i + 4;
                    let info = check_head(&buf[..head_len])?;
                    match info.framing {
                        Framing::Length(n) => {
                            let total = (head_len as u64).saturating_add(n);
                            if total > max as u64 {
                                return Err(HttpError::BodyTooLarge { len: n, max });
                            }
                            if info.expect_continue && (buf.len() as u64) < total {
                                self.cont = Continue::Pending;
                            }
                            return Ok(Input::Packet(total as usize));
                        }
                        Framing::Chunked => {
                            if info.expect_continue {
                                self.cont = Continue::Pending;
                            }
                            self.scan = Scan::Chunked { head_len, pos: head_len, body: 0, trailers: None };
                        }
                    }
                }
                Scan::Chunked { head_len, pos, body, trailers } => {
                    return self.scan_chunked(buf, max, head_len, pos, body, trailers);
                }
            }
        }
    }

    fn scan_chunked(
        &mut self,
        buf: &[u8],
        max: usize,
        head_len: usize,
        mut pos: usize,
        mut body: u64,
        mut trailers: Option<usize>,
    ) -> Result<Input, HttpError> {
        let result = loop {
            if let Some(start) = trailers {
                // trailer-section = *( field-line CRLF ) CRLF
                let Some(nl) = find_line(buf, pos, self.head_limit) else {
                    if buf.len() - start >= self.head_limit {
                        break Err(HttpError::HeadTooLarge { limit: self.head_limit });
                    }
                    break Ok(Input::Need);
                };
                if nl == 0 || buf[nl - 1] != b'\r' {
                    break Err(HttpError::InvalidChunk("bare LF in trailer"));
                }
                let line_end = nl + 1;
                if line_end - start > self.head_limit {
                    break Err(HttpError::HeadTooLarge { limit: self.head_limit });
                }
                if line_end - pos == 2 {
                    let block = &buf[start..line_end];
                    if block.len() > 2 {
                        check_line_endings(block)?;
                        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                        match httparse::parse_headers(block, &mut fields) {
                            Ok(httparse::Status::Complete((n, fields))) if n == block.len() => {
                                check_trailer_fields(fields)?;
                            }
                            Err(httparse::Error::TooManyHeaders) => break Err(HttpError::TooManyHeaders),
                            _ => break Err(HttpError::InvalidChunk("invalid trailer field")),
                        }
                    }
                    if line_end > max {
                        break Err(HttpError::BodyTooLarge { len: line_end as u64, max });
                    }
                    break Ok(Input::Packet(line_end));
                }
                pos = line_end;
                continue;
            }
            let Some(nl) = find_line(buf, pos, MAX_CHUNK_LINE) else {
                if buf.len() - pos >= MAX_CHUNK_LINE {
                    break Err(HttpError::InvalidChunk("chunk-size line too long"));
                }
                break Ok(Input::Need);
            };
            let size = parse_chunk_line(&buf[pos..=nl])?;
            if body.saturating_add(size) > max as u64 {
                break Err(HttpError::BodyTooLarge { len: body.saturating_add(size), max });
            }
            let data = nl + 1;
            if size == 0 {
                pos = data;
                trailers = Some(data);
                continue;
            }
            let end = data as u64 + size + 2;
            if (buf.len() as u64) < end {
                break Ok(Input::Need);
            }
            let end = end as usize;
            if &buf[end - 2..end] != b"\r\n" {
                break Err(HttpError::InvalidChunk("chunk data not followed by CRLF"));
            }
            body += size;
            pos = end;
        };
        self.scan = Scan::Chunked { head_len, pos, body, trailers };
        result
    }

    /// Copies a validated chunked packet into `norm` in Content-Length form.
    fn normalize(&mut self, packet: &[u8], head_len: usize) {
        let norm = &mut self.norm;
        norm.clear();
        norm.reserve(packet.len());
        let head = &packet[..head_len];
        let first = memchr::memchr(b'\n', head).map_or(0, |i| i + 1);
        norm.extend_from_slice(&head[..first]);
        let mut rest = &head[first..head_len - 2];
        while !rest.is_empty() {
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let line = &rest[..end];
            rest = &rest[end..];
            let is_te = line.len() >= 18 && line[..18].eq_ignore_ascii_case(b"transfer-encoding:");
            if !is_te {
                norm.extend_from_slice(line);
            }
        }
        let len_at = norm.len();
        norm.extend_from_slice(b"Content-Length: ");
        let digits_at = norm.len();
        norm.extend_from_slice(b"00000000000000000000\r\n\r\n");
        let body_at = norm.len();
        let mut pos = head_len;
        loop {
            let nl = pos + memchr::memchr(b'\n', &packet[pos..]).expect("validated chunk line");
            let size = parse_chunk_line(&packet[pos..=nl]).expect("validated chunk line") as usize;
            pos = nl + 1;
            if size == 0 {
                break;
            }
            norm.extend_from_slice(&packet[pos..pos + size]);
            pos += size + 2;
        }
        let body_len = norm.len() - body_at;
        // Trailer section: field lines plus the final CRLF; nothing when there are none.
        if packet.len() - pos > 2 {
            norm.extend_from_slice(&packet[pos..]);
        }
        let digits = itoa_buf(body_len as u64);
        let d = digits.as_bytes();
        // Replace the zero-padded placeholder with the exact digits.
        norm.splice(digits_at..digits_at + 20, d.iter().copied());
        debug_assert!(norm[len_at..].starts_with(b"Content-Length: "));
    }
}

/// Index of the next `\n` at or after `pos`, looking at most `limit` bytes ahead.
fn find_line(buf: &[u8], pos: usize, limit: usize) -> Option<usize> {
    let end = buf.len().min(pos.saturating_add(limit));
    memchr::memchr(b'\n', &buf[pos.min(end)..end]).map(|i| pos + i)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `chunk-size [chunk-ext] CRLF` (the whole line including CRLF) into the size.
pub(crate) fn parse_chunk_line(line: &[u8]) -> Result<u64, HttpError> {
    let line = line.strip_suffix(b"\r\n").ok_or(HttpError::InvalidChunk("bare LF after chunk size"))?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::InvalidChunk("missing chunk size"));
    }
    if digits > 16 {
        return Err(HttpError::InvalidChunk("chunk size too long"));
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        size = size << 4 | u64::from((b as char).to_digit(16).unwrap_or(0));
    }
    check_extensions(&line[digits..])?;
    Ok(size)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`
fn check_extensions(mut s: &[u8]) -> Result<(), HttpError> {
    const BAD: HttpError = HttpError::InvalidChunk("invalid chunk extension");
    fn skip_ws(s: &mut &[u8]) {
        while let [b' ' | b'\t', rest @ ..] = *s {
            *s = rest;
        }
    }
    fn token<'a>(s: &mut &'a [u8]) -> &'a [u8] {
        let n = s.iter().take_while(|&&b| is_tchar(b)).count();
        let (t, rest) = s.split_at(n);
        *s = rest;
        t
    }
    loop {
        if s.is_empty() {
            return Ok(());
        }
        // BWS is allowed only before a `;` (or `=`): `5 ` CRLF is refused, since a
        // front proxy may read the chunk size differently (RFC 9112 §7.1.1).
        skip_ws(&mut s);
        match s {
            [b';', rest @ ..] => s = rest,
            _ => return Err(BAD),
        }
        skip_ws(&mut s);
        if token(&mut s).is_empty() {
            return Err(BAD);
        }
        let mut after = s;
        skip_ws(&mut after);
        if let [b'=', rest @ ..] = after {
            s = rest;
            skip_ws(&mut s);
            if let [b'"', rest @ ..] = s {
                s = rest;
                loop {
                    match s {
                        [b'"', rest @ ..] => {
                            s = rest;
                            break;
                        }
                        [b'\\', c, rest @ ..] if *c == b'\t' || *c >= 0x20 && *c != 0x7f => s = rest,
                        [c, rest @ ..] if *c == b'\t' || (*c >= 0x20 && *c != 0x7f && *c != b'\\') => s = rest,
                        _ => return Err(BAD),
                    }
                }
            } else if token(&mut s).is_empty() {
                return Err(BAD);
            }
        }
    }
}

impl Decoder for HttpDecoder {
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError> {
        self.scan(buf, max).map_err(|e| self.fail(e))
    }

    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        let scan = self.scan;
        self.reset();
        if packet == b"\r\n" {
            return Ok(None);
        }
        match scan {
            Scan::Chunked { head_len, .. } => {
                self.normalize(packet, head_len);
                Ok(Some(Message::binary(&self.norm)))
            }
            Scan::Head { .. } => Ok(Some(Message::binary(packet))),
        }
    }

    fn poll_reply(&mut self, out: &mut Vec<u8>) -> Reply {
        if self.pending_continue() {
            out.extend_from_slice(CONTINUE_RESPONSE);
            Reply::Send
        } else {
            Reply::None
        }
    }

    fn error_reply(&mut self, err: &ProtocolError, out: &mut Vec<u8>) {
        let status = match (&self.last_error, err) {
            (_, ProtocolError::Timeout(_)) => 408,
            (Some(e), _) => e.status(),
            (None, ProtocolError::TooLarge { .. }) => 413,
            (None, ProtocolError::Malformed { .. }) => 400,
        };
        write_error_response(status, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Request;
    use crate::{Delivery, Flow, Framer};
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    /// Feeds `chunks` through a Framer; returns decoded messages and the error reply, if any.
    fn run(chunks: &[Vec<u8>], max: usize) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        let mut dec = HttpDecoder::new();
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            let mut c = c.clone();
            let r = f.feed(&mut dec, &mut c, max, |d| {
                if let Delivery::Message(m) = d {
                    out.push(m.data.to_vec());
                }
                Flow::Continue
            });
            if let Err(e) = r {
                let mut reply = Vec::new();
                dec.error_reply(&e, &mut reply);
                return (out, Some(reply));
            }
        }
        (out, None)
    }

    fn status_of(reply: &[u8]) -> u16 {
        std::str::from_utf8(&reply[9..12]).unwrap().parse().unwrap()
    }

    fn error_status(wire: &[u8], max: usize) -> u16 {
        let (_, e) = run(&[wire.to_vec()], max);
        let reply = e.expect("expected an error");
        assert!(reply.windows(19).any(|w| w == b"Connection: close\r\n"));
        assert!(reply.windows(16).any(|w| w == b"Content-Length: "));
        status_of(&reply)
    }

    #[test]
    fn pipelined_requests_are_separate_packets() {
        let wire = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
        let (msgs, e) = run(&[wire.to_vec()], MAX);
        assert!(e.is_none());
        let paths: Vec<String> = msgs.iter().map(|m| Request::parse(m).unwrap().path().to_string()).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
        assert_eq!(Request::parse(&msgs[1]).unwrap().body(), b"xyz");
    }

    #[test]
    fn two_requests_in_one_read_zero_copy() {
        let mut dec = HttpDecoder::new();
        let wire = b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(dec.input(wire, MAX), Ok(Input::Packet(28)));
        let mut p = wire[..28].to_vec();
        assert_eq!(dec.decode(&mut p).unwrap().unwrap().data, &wire[..28]);
        assert_eq!(dec.input(&wire[28..], MAX), Ok(Input::Packet(28)));
    }

    #[test]
    fn empty_lines_between_requests_are_skipped() {
        let (msgs, e) = run(&[b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n\r\n".to_vec()], MAX);
        assert!(e.is_none());
        assert_eq!(msgs.len(), 1);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire = b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;name=val;q=\"a \\\" b\"\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nX-Sum: 42\r\n\r\nGET /next HTTP/1.1\r\nHost: h\r\n\r\n";
        let (msgs, e) = run(&[wire.to_vec()], MAX);
        assert!(e.is_none(), "{e:?}");
        assert_eq!(msgs.len(), 2);
        let r = Request::parse(&msgs[0]).unwrap();
        assert_eq!(r.body(), b"hello world");
        assert_eq!(r.header("content-length"), Some(&b"11"[..]));
        assert_eq!(r.header("transfer-encoding"), None);
        assert_eq!(r.header("trailer"), Some(&b"X-Sum"[..]));
        assert_eq!(r.trailer("x-sum"), Some(&b"42"[..]));
        assert_eq!(Request::parse(&msgs[1]).unwrap().path(), "/next");
        // Without trailers, nothing follows the body.
        let (msgs, _) =
            run(&[b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()], MAX);
        let r = Request::parse(&msgs[0]).unwrap();
        assert_eq!((r.body(), r.trailers().count()), (&b""[..], 0));
    }

    #[test]
    fn bad_chunks_are_400() {
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for body in [
            &b"x\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nBad Trailer\r\n\r\n",
            b"0\r\nX: y\n\r\n",
        ] {
            let mut w = head.clone();
            w.extend_from_slice(body);
            assert_eq!(error_status(&w, MAX), 400, "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn chunked_body_over_max_is_413() {
        let mut w = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        w.extend_from_slice(b"ffffffff\r\n");
        assert_eq!(error_status(&w, 4096), 413);
        let mut w = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            w.extend_from_slice(b"200\r\n");
            w.extend_from_slice(&[b'a'; 0x200]);
            w.extend_from_slice(b"\r\n");
        }
        assert_eq!(error_status(&w, 4096), 413);
    }

    #[test]
    fn limits_and_statuses() {
        // No CRLFCRLF within 16 KiB ⇒ 431, whether it arrives at once or in pieces.
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        while big.len() < DEFAULT_HEAD_LIMIT + 10 {
            big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(error_status(&big, MAX), 431);
        let (_, e) = run(&big.chunks(1000).map(<[u8]>::to_vec).collect::<Vec<_>>(), MAX);
        assert_eq!(status_of(&e.unwrap()), 431);
        // Body over max ⇒ 413 as soon as the head is known.
        assert_eq!(error_status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n", 4096), 413);
        assert_eq!(
            error_status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", MAX),
            400
        );
        assert_eq!(
            error_status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", MAX),
            400
        );
        assert_eq!(error_status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", MAX), 400);
        assert_eq!(error_status(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", MAX), 400);
        assert_eq!(error_status(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", MAX), 501);
        assert_eq!(error_status(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: nope\r\n\r\n", MAX), 417);
        assert_eq!(error_status(b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", MAX), 505);
        assert_eq!(error_status(b"GET / HTTP/1.1\r\n\r\n", MAX), 400);
        // Garbage is rejected as soon as the first line is complete, not at 16 KiB.
        assert_eq!(error_status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", MAX), 400);
        assert_eq!(error_status(b"GET / HTTP/1.1\nHost: h\n", MAX), 400);
    }

    #[test]
    fn expect_continue_once_until_body() {
        let mut dec = HttpDecoder::new();
        let head = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(dec.input(head, MAX), Ok(Input::Packet(head.len() + 4)));
        assert!(dec.pending_continue());
        assert!(!dec.pending_continue());
        // Whole request already there: no 100.
        let mut dec = HttpDecoder::new();
        let mut full = head.to_vec();
        full.extend_from_slice(b"abcd");
        dec.input(&full, MAX).unwrap();
        assert!(!dec.pending_continue());
        // poll_reply hands it out too; decode drops an unsent one.
        let mut dec = HttpDecoder::new();
        dec.input(head, MAX).unwrap();
        let mut out = Vec::new();
        assert_eq!(dec.poll_reply(&mut out), Reply::Send);
        assert_eq!(out, CONTINUE_RESPONSE);
        let mut dec = HttpDecoder::new();
        dec.input(head, MAX).unwrap();
        dec.decode(&mut full).unwrap();
        assert!(!dec.pending_continue());
        // HTTP/1.0 ignores Expect.
        let mut dec = HttpDecoder::new();
        dec.input(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", MAX).unwrap();
        assert!(!dec.pending_continue());
    }

    #[test]
    fn error_reply_without_decoder_error_maps_protocol_error() {
        let mut dec = HttpDecoder::new();
        let mut out = Vec::new();
        dec.error_reply(&ProtocolError::TooLarge { len: 2, max: 1 }, &mut out);
        assert_eq!(status_of(&out), 413);
        out.clear();
        dec.error_reply(&ProtocolError::Malformed { protocol: "x", reason: "y" }, &mut out);
        assert_eq!(status_of(&out), 400);
        assert_eq!(
            ProtocolError::from(HttpError::BodyTooLarge { len: 9, max: 1 }),
            ProtocolError::TooLarge { len: 9, max: 1 }
        );
    }

    #[test]
    fn byte_by_byte_equals_whole_and_protocol_factory_works() {
        use crate::Protocol;
        let wire = b"PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        let bytes: Vec<Vec<u8>> = wire.iter().map(|&b| vec![b]).collect();
        let (a, e1) = run(&bytes, MAX);
        let (b, e2) = run(&[wire.to_vec()], MAX);
        assert!(e1.is_none() && e2.is_none());
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert!(!Request::parse(&a[1]).unwrap().keep_alive());
        let p = super::super::Http;
        assert_eq!(p.name(), "http");
        let mut dec = p.decoder();
        assert_eq!(dec.input(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", MAX), Ok(Input::Packet(27)));
        assert!(p.encoder().is_identity());
    }

    fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            out.push(data[at..c].to_vec());
            at = c;
        }
        out.push(data[at..].to_vec());
        out
    }

    fn request_strategy() -> impl Strategy<Value = Vec<u8>> {
        (
            "[a-z]{0,8}",
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(1usize..40, 0..5),
            0u8..3,
        )
            .prop_map(|(path, body, chunks, mode)| {
                let mut w = format!("POST /{path} HTTP/1.1\r\nHost: x\r\n").into_bytes();
                match mode {
                    0 => w.extend_from_slice(b"\r\n"),
                    1 => {
                        w.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                        w.extend_from_slice(&body);
                    }
                    _ => {
                        w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        let mut rest = &body[..];
                        for c in chunks {
                            let n = c.min(rest.len());
                            if n == 0 {
                                break;
                            }
                            w.extend_from_slice(format!("{n:x};e=1\r\n").as_bytes());
                            w.extend_from_slice(&rest[..n]);
                            w.extend_from_slice(b"\r\n");
                            rest = &rest[n..];
                        }
                        if !rest.is_empty() {
                            w.extend_from_slice(format!("{:X}\r\n", rest.len()).as_bytes());
                            w.extend_from_slice(rest);
                            w.extend_from_slice(b"\r\n");
                        }
                        w.extend_from_slice(b"0\r\nX-T: 1\r\n\r\n");
                    }
                }
                w
            })
    }

    proptest! {
        #[test]
        fn any_split_same_requests(reqs in proptest::collection::vec(request_strategy(), 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..30)) {
            let wire = reqs.concat();
            let (whole, e1) = run(std::slice::from_ref(&wire), MAX);
            let (parts, e2) = run(&split(&wire, &cuts), MAX);
            prop_assert!(e1.is_none() && e2.is_none());
            prop_assert_eq!(&whole, &parts);
            prop_assert_eq!(whole.len(), reqs.len());
            for m in &whole {
                let r = Request::parse(m).unwrap();
                prop_assert_eq!(r.method(), "POST");
                prop_assert_eq!(Request::from_decoded(m), Ok(r));
            }
        }

        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..10)) {
            let (msgs, _) = run(&chunks, 4096);
            // Whatever the decoder lets through reads back the same without the second parse.
            for m in msgs { prop_assert_eq!(Request::from_decoded(&m), Request::parse(&m)); }
        }
    }
}
