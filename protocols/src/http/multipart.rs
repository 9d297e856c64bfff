//! A streaming, sans-IO `multipart/form-data` parser (RFC 7578 over RFC 2046 syntax).
//!
//! [`MultipartParser`] takes the body in pieces of any size and reports what it finds as
//! [`MultipartEvent`]s: a part's headers, pieces of its content (borrowed from the input whenever
//! possible), the end of a part and the end of the body. Memory stays bounded whatever the
//! body's size: a part's header block is limited ([`MultipartParser::header_limit`]), the
//! number of parts too ([`MultipartParser::max_parts`], 1024 like Workerman's
//! `Request::$maxFileUploads`), and between pushes only the few bytes that might begin a
//! delimiter are kept.

use std::ops::Range;

use memchr::memmem::Finder;

use super::form::FormError;

/// Most parts a [`MultipartParser`] accepts by default (Workerman's `maxFileUploads`).
pub const DEFAULT_MAX_PARTS: usize = 1024;

/// Default limit on one part's header block, terminating empty line included.
pub const DEFAULT_PART_HEADER_LIMIT: usize = 16 * 1024;

/// Most header fields in one part.
const MAX_PART_FIELDS: usize = 16;

/// The headers of one part, as reported by [`MultipartEvent::Part`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHead<'a> {
    /// The `name` parameter of `Content-Disposition`.
    pub name: Option<&'a str>,
    /// The `filename` parameter, present for file uploads. Sent by the client and not
    /// sanitised: never use it as a path.
    pub filename: Option<&'a str>,
    /// The part's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The raw header lines, each ending in CRLF (without the empty line).
    pub raw: &'a [u8],
}

impl<'a> PartHead<'a> {
    /// Parses a header block ending with the empty line (or an empty block).
    pub(crate) fn parse(block: &'a [u8]) -> Result<PartHead<'a>, FormError> {
        let mut head = PartHead { name: None, filename: None, content_type: None, raw: b"" };
        if block.is_empty() {
            return Ok(head);
        }
        head.raw = &block[..block.len() - 2];
        let mut fields = [httparse::EMPTY_HEADER; MAX_PART_FIELDS];
        match httparse::parse_headers(block, &mut fields) {
            Ok(httparse::Status::Complete((n, _))) if n == block.len() => {}
            _ => return Err(FormError::Malformed("invalid part headers")),
        }
        for f in fields.iter().take_while(|f| !f.name.is_empty()) {
            let Ok(v) = std::str::from_utf8(f.value) else { continue };
            if f.name.eq_ignore_ascii_case("content-disposition") {
                head.name = disposition_param(v, "name");
                head.filename = disposition_param(v, "filename");
            } else if f.name.eq_ignore_ascii_case("content-type") {
                head.content_type = Some(v);
            }
        }
        Ok(head)
    }
}

/// A `Content-Disposition` parameter value (quoted or token), escapes left as sent.
fn disposition_param<'a>(v: &'a str, key: &str) -> Option<&'a str> {
    // Skip the disposition type.
    let mut rest = &v[v.find(';')? + 1..];
    loop {
        rest = rest.trim_start();
        let eq = rest.find('=')?;
        let k = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let (val, after) = if let Some(q) = rest.strip_prefix('"') {
            let bytes = q.as_bytes();
            let mut i = 0;
            let mut end = None;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 2,
                    b'"' => {
                        end = Some(i);
                        break;
                    }
                    _ => i += 1,
                }
            }
            let end = end?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            (rest[..end].trim_end(), &rest[end..])
        };
        if k.eq_ignore_ascii_case(key) {
            return Some(val);
        }
        rest = after.trim_start().strip_prefix(';')?;
    }
}

/// What [`MultipartParser::push`] found. For every part: one `Part`, zero or more `Data`,
/// one `PartEnd`; after the last part, one `End`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartEvent<'a> {
    /// A part begins; its headers.
    Part(PartHead<'a>),
    /// A piece of the current part's content, in order. A part's content may arrive in
    /// any number of pieces, whatever the pushes were.
    Data(&'a [u8]),
    /// The current part is complete.
    PartEnd,
    /// The closing delimiter: the body is complete (the epilogue is ignored).
    End,
}

/// Where the parser is in the body.
#[derive(Debug, Clone)]
enum State {
    /// Before the first delimiter (skipped).
    Preamble,
    /// Just after a delimiter: `--` closes, else transport padding then CRLF.
    AfterDelim,
    /// After a first `-`.
    Dash,
    /// In transport padding (count so far).
    Padding(usize),
    /// After the CR that ends a delimiter line.
    Cr,
    /// In a part's header block.
    Headers,
    /// In a part's content.
    Body,
    /// After the closing delimiter (skipped).
    Epilogue,
    /// An error was reported; it is reported again.
    Failed(FormError),
}

/// Where the header block of the part just started lies.
enum HeadAt {
    /// In the current input (no copy).
    Input(Range<usize>),
    /// In the parser's buffer (it spanned pushes).
    Buffered,
}

/// One step's finding, as positions (turned into an [`MultipartEvent`] by the caller).
enum Raw {
    Head(HeadAt),
    /// Content in the current input.
    Data(Range<usize>),
    /// Content held back from an earlier push (now known not to be a delimiter).
    Spill,
    PartEnd,
    End,
}

/// Streaming `multipart/form-data` parser: push the body in pieces of any size, receive
/// [`MultipartEvent`]s; call [`finish`](Self::finish) after the last piece.
///
/// Content is handed out borrowed from the pushed bytes, except the few bytes at the end
/// of a push that might start a delimiter: those are kept and handed out (or dropped, if
/// they were a delimiter) on the next push.
///
/// ```
/// use ringman_protocols::http::{MultipartEvent, FormError, MultipartParser};
/// let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XX--\r\n";
/// let mut p = MultipartParser::new("XX").unwrap();
/// let mut content = Vec::new();
/// for piece in body.chunks(7) {
///     p.push(piece, |ev| {
///         match ev {
///             MultipartEvent::Part(head) => assert_eq!(head.name, Some("a")),
///             MultipartEvent::Data(d) => content.extend_from_slice(d),
///             MultipartEvent::PartEnd | MultipartEvent::End => {}
///         }
///         Ok::<_, FormError>(())
///     })
///     .unwrap();
/// }
/// p.finish().unwrap();
/// assert_eq!(content, b"hello");
/// ```
#[derive(Debug, Clone)]
pub struct MultipartParser {
    /// `CRLF--boundary`.
    delim: Vec<u8>,
    finder: Finder<'static>,
    state: State,
    /// A proper prefix of `delim` seen at the end of the previous push.
    carry: Vec<u8>,
    /// Former `carry` being handed out as content.
    spill: Vec<u8>,
    /// A header block that spans pushes.
    head: Vec<u8>,
    parts: usize,
    max_parts: usize,
    header_limit: usize,
}

impl MultipartParser {
    /// A parser for the given boundary (the `boundary` parameter of the content type, see
    /// [`boundary_from_content_type`](super::boundary_from_content_type)). The boundary must
    /// be non-empty and contain no CR or LF.
    pub fn new(boundary: &str) -> Result<MultipartParser, FormError> {
        if boundary.is_empty() || boundary.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(FormError::InvalidBoundary);
        }
        let delim = [b"\r\n--", boundary.as_bytes()].concat();
        let finder = Finder::new(&delim).into_owned();
        Ok(MultipartParser {
            delim,
            finder,
            state: State::Preamble,
            // The first delimiter may open the body: it is found as if a CRLF preceded it.
            carry: b"\r\n".to_vec(),
            spill: Vec::new(),
            head: Vec::new(),
            parts: 0,
            max_parts: DEFAULT_MAX_PARTS,
            header_limit: DEFAULT_PART_HEADER_LIMIT,
        })
    }

    /// Sets the most parts accepted (default [`DEFAULT_MAX_PARTS`]); one more is
    /// [`FormError::TooManyParts`].
    pub fn max_parts(mut self, n: usize) -> MultipartParser {
        self.max_parts = n;
        self
    }

    /// Sets the largest header block of one part, final empty line included (default
    /// [`DEFAULT_PART_HEADER_LIMIT`]); a larger one is [`FormError::PartHeadersTooLarge`].
    pub fn header_limit(mut self, bytes: usize) -> MultipartParser {
        self.header_limit = bytes;
        self
    }

    /// Number of parts begun so far.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Whether the closing delimiter has been seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Epilogue)
    }

    /// Parses the next piece of the body, calling `on_event` for each finding in order.
    /// Stops at the first error: a [`FormError`] (converted with `From`; the parser then
    /// keeps answering it) or the first error `on_event` returns.
    pub fn push<E: From<FormError>>(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(MultipartEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut pos = 0;
        loop {
            let raw = match self.step(input, &mut pos) {
                Ok(Some(raw)) => raw,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.fail(e).into()),
            };
            let event = match raw {
                Raw::Data(r) => MultipartEvent::Data(&input[r]),
                Raw::Spill => MultipartEvent::Data(&self.spill),
                Raw::PartEnd => MultipartEvent::PartEnd,
                Raw::End => MultipartEvent::End,
                Raw::Head(at) => {
                    let block = match at {
                        HeadAt::Input(r) => &input[r],
                        HeadAt::Buffered => &self.head[..],
                    };
                    match PartHead::parse(block) {
                        Ok(head) => MultipartEvent::Part(head),
                        Err(e) => return Err(self.fail(e).into()),
                    }
                }
            };
            on_event(event)?;
        }
    }

    /// Checks that the body was complete: `Ok` once the closing delimiter was seen.
    pub fn finish(&self) -> Result<(), FormError> {
        match &self.state {
            State::Epilogue => Ok(()),
            State::Failed(e) => Err(e.clone()),
            State::Preamble => Err(FormError::Malformed("no opening delimiter")),
            State::AfterDelim | State::Dash | State::Padding(_) | State::Cr => {
                Err(FormError::Malformed("delimiter not followed by CRLF"))
            }
            State::Headers => Err(FormError::Malformed("unterminated part headers")),
            State::Body => Err(FormError::Malformed("no closing delimiter")),
        }
    }

    fn fail(&mut self, e: FormError) -> FormError {
        self.state = State::Failed(e.clone());
        e
    }

    /// Parses on from `input[*pos..]` up to the next finding; `None` when the input is used
    /// up.
    fn step(&mut self, input: &[u8], pos: &mut usize) -> Result<Option<Raw>, FormError> {
        self.spill.clear();
        if !matches!(self.state, State::Headers) {
            self.head.clear();
        }
        loop {
            if let State::Failed(e) = &self.state {
                return Err(e.clone());
            }
            if *pos >= input.len() {
                return Ok(None);
            }
            match self.state {
                State::Preamble | State::Body => {
                    let body = matches!(self.state, State::Body);
                    if let Some(found) = self.scan(input, pos, body) {
                        return Ok(Some(found));
                    }
                }
                State::AfterDelim | State::Dash | State::Padding(_) | State::Cr => {
                    let b = input[*pos];
                    *pos += 1;
                    let next = match (&self.state, b) {
                        (State::AfterDelim, b'-') => State::Dash,
                        (State::Dash, b'-') => State::Epilogue,
                        (State::AfterDelim, b' ' | b'\t') => State::Padding(1),
                        (State::Padding(n), b' ' | b'\t') if *n < self.header_limit => State::Padding(n + 1),
                        (State::Padding(_), b' ' | b'\t') => {
                            return Err(FormError::Malformed("transport padding too long"))
                        }
                        (State::AfterDelim | State::Padding(_), b'\r') => State::Cr,
                        (State::Cr, b'\n') => State::Headers,
                        _ => return Err(FormError::Malformed("delimiter not followed by CRLF")),
                    };
                    match next {
                        State::Epilogue => {
                            self.state = next;
                            return Ok(Some(Raw::End));
                        }
                        State::Headers if self.parts >= self.max_parts => {
                            return Err(FormError::TooManyParts(self.max_parts))
                        }
                        State::Headers => self.parts += 1,
                        _ => {}
                    }
                    self.state = next;
                }
                State::Headers => {
                    if let Some(at) = self.headers(input, pos)? {
                        self.state = State::Body;
                        return Ok(Some(Raw::Head(at)));
                    }
                }
                State::Epilogue => *pos = input.len(),
                State::Failed(_) => {}
            }
        }
    }

    /// Looks for the delimiter in content (`body`) or the preamble (skipped).
    fn scan(&mut self, input: &[u8], pos: &mut usize, body: bool) -> Option<Raw> {
        let d = self.delim.len();
        if !self.carry.is_empty() {
            let c = self.carry.len();
            let rest = &input[*pos..];
            let n = (d - c).min(rest.len());
            if rest[..n] == self.delim[c..c + n] {
                *pos += n;
                if c + n < d {
                    self.carry.extend_from_slice(&rest[..n]);
                    return None;
                }
                self.carry.clear();
                self.state = State::AfterDelim;
                return body.then_some(Raw::PartEnd);
            }
            // Not a delimiter. The delimiter has a single CR (its first byte), so none can
            // start later inside the carried bytes: they are content.
            if body {
                std::mem::swap(&mut self.carry, &mut self.spill);
                return Some(Raw::Spill);
            }
            self.carry.clear();
        }
        let rest = &input[*pos..];
        match self.finder.find(rest) {
            Some(0) => {
                *pos += d;
                self.state = State::AfterDelim;
                body.then_some(Raw::PartEnd)
            }
            Some(i) => {
                let r = *pos..*pos + i;
                *pos += i;
                body.then_some(Raw::Data(r))
            }
            None => {
                // Keep back the longest end that is a prefix of the delimiter: it starts at
                // the last CR, if anywhere.
                let from = rest.len().saturating_sub(d - 1);
                let keep = memchr::memrchr(b'\r', &rest[from..])
                    .map(|j| from + j)
                    .filter(|&k| self.delim.starts_with(&rest[k..]))
                    .unwrap_or(rest.len());
                self.carry.extend_from_slice(&rest[keep..]);
                let r = *pos..*pos + keep;
                *pos = input.len();
                (body && keep > 0).then_some(Raw::Data(r))
            }
        }
    }

    /// Collects a header block; `Some` once it is complete.
    fn headers(&mut self, input: &[u8], pos: &mut usize) -> Result<Option<HeadAt>, FormError> {
        let limit = self.header_limit;
        let rest = &input[*pos..];
        if self.head.is_empty() {
            if rest.starts_with(b"\r\n") {
                *pos += 2;
                return Ok(Some(HeadAt::Input(*pos..*pos)));
            }
            let window = &rest[..rest.len().min(limit)];
            if let Some(i) = memchr::memmem::find(window, b"\r\n\r\n") {
                let r = *pos..*pos + i + 4;
                *pos += i + 4;
                return Ok(Some(HeadAt::Input(r)));
            }
            if rest.len() >= limit {
                return Err(FormError::PartHeadersTooLarge(limit));
            }
            self.head.extend_from_slice(rest);
            *pos = input.len();
            return Ok(None);
        }
        let old = self.head.len();
        let take = rest.len().min(limit.saturating_sub(old));
        self.head.extend_from_slice(&rest[..take]);
        let end = if self.head.starts_with(b"\r\n") {
            Some(2)
        } else {
            memchr::memmem::find(&self.head[old.saturating_sub(3)..], b"\r\n\r\n")
                .map(|i| old.saturating_sub(3) + i + 4)
        };
        match end {
            Some(end) => {
                *pos += end - old;
                self.head.truncate(end);
                if end == 2 {
                    // An empty block.
                    self.head.clear();
                }
                Ok(Some(HeadAt::Buffered))
            }
            None if self.head.len() >= limit => Err(FormError::PartHeadersTooLarge(limit)),
            None => {
                *pos += take;
                Ok(None)
            }
        }
    }
}

/// Splits a whole in-memory body into parts borrowed from it (see
/// [`parse_multipart`](super::parse_multipart)).
pub(crate) fn parse_whole<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<super::Part<'a>>, FormError> {
    let mut p = MultipartParser::new(boundary)?;
    let mut pos = 0;
    let mut parts: Vec<super::Part<'a>> = Vec::new();
    let mut data_start = 0;
    while let Some(raw) = p.step(body, &mut pos)? {
        match raw {
            Raw::Head(HeadAt::Input(r)) => {
                let h = PartHead::parse(&body[r.clone()])?;
                data_start = r.end;
                let data = &body[r.end..r.end];
                let (name, filename, content_type, headers) = (h.name, h.filename, h.content_type, h.raw);
                parts.push(super::Part { name, filename, content_type, headers, data });
            }
            Raw::Data(r) => {
                if let Some(part) = parts.last_mut() {
                    part.data = &body[data_start..r.end];
                }
            }
            // With the whole body in one push, nothing is held back between pushes.
            Raw::Head(HeadAt::Buffered) | Raw::Spill => return Err(FormError::Malformed("body split unexpectedly")),
            Raw::PartEnd | Raw::End => {}
        }
    }
    p.finish()?;
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An owned event; consecutive `Data` pieces merged.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Part { name: Option<String>, filename: Option<String>, ct: Option<String>, raw: Vec<u8> },
        Data(Vec<u8>),
        PartEnd,
        End,
    }

    fn run<'a>(
        pieces: impl IntoIterator<Item = &'a [u8]>,
        boundary: &str,
        header_limit: usize,
    ) -> (Vec<Ev>, Result<(), FormError>) {
        let mut p = MultipartParser::new(boundary).unwrap().header_limit(header_limit);
        let mut evs: Vec<Ev> = Vec::new();
        for piece in pieces {
            let r = p.push(piece, |ev| {
                match ev {
                    MultipartEvent::Part(h) => evs.push(Ev::Part {
                        name: h.name.map(str::to_owned),
                        filename: h.filename.map(str::to_owned),
                        ct: h.content_type.map(str::to_owned),
                        raw: h.raw.to_vec(),
                    }),
                    MultipartEvent::Data(d) => {
                        assert!(!d.is_empty(), "empty data event");
                        match evs.last_mut() {
                            Some(Ev::Data(v)) => v.extend_from_slice(d),
                            _ => evs.push(Ev::Data(d.to_vec())),
                        }
                    }
                    MultipartEvent::PartEnd => evs.push(Ev::PartEnd),
                    MultipartEvent::End => evs.push(Ev::End),
                }
                Ok::<_, FormError>(())
            });
            if let Err(e) = r {
                // Errors are sticky.
                assert_eq!(p.push(b"more", |_| Ok::<_, FormError>(())), Err(e.clone()));
                assert_eq!(p.finish(), Err(e.clone()));
                return (evs, Err(e));
            }
        }
        (evs, p.finish())
    }

    fn split_at<'a>(body: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in cuts {
            pieces.push(&body[from..c]);
            from = c;
        }
        pieces.push(&body[from..]);
        pieces
    }

    const BODY: &[u8] = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ \t\r\n\
Content-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\
\r\n--XyQ-ish\r\n--Xy\r\r\n--XyZ\r\n\r\nno headers\r\n--XyZ--\r\nepilogue --XyZ";

    fn expected() -> Vec<Ev> {
        vec![
            Ev::Part {
                name: Some("a".into()),
                filename: None,
                ct: None,
                raw: b"Content-Disposition: form-data; name=\"a\"\r\n".to_vec(),
            },
            Ev::Data(b"1".to_vec()),
            Ev::PartEnd,
            Ev::Part {
                name: Some("f".into()),
                filename: Some("x.bin".into()),
                ct: Some("application/octet-stream".into()),
                raw: b"Content-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n".to_vec(),
            },
            Ev::Data(b"\r\n--XyQ-ish\r\n--Xy\r".to_vec()),
            Ev::PartEnd,
            Ev::Part { name: None, filename: None, ct: None, raw: Vec::new() },
            Ev::Data(b"no headers".to_vec()),
            Ev::PartEnd,
            Ev::End,
        ]
    }

    #[test]
    fn whole_and_byte_by_byte() {
        assert_eq!(run([BODY], "XyZ", 1024), (expected(), Ok(())));
        assert_eq!(run(BODY.chunks(1), "XyZ", 1024), (expected(), Ok(())));
        let parts = parse_whole(BODY, "XyZ").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1].data, b"\r\n--XyQ-ish\r\n--Xy\r");
    }

    #[test]
    fn content_is_borrowed_from_the_input() {
        let mut p = MultipartParser::new("XyZ").unwrap();
        let range = BODY.as_ptr_range();
        p.push(BODY, |ev| {
            if let MultipartEvent::Data(d) = ev {
                assert!(range.contains(&d.as_ptr()));
            }
            Ok::<_, FormError>(())
        })
        .unwrap();
        assert!(p.is_done());
        assert_eq!(p.parts(), 3);
    }

    #[test]
    fn limits_and_errors() {
        assert_eq!(MultipartParser::new("").unwrap_err(), FormError::InvalidBoundary);
        assert_eq!(MultipartParser::new("a\rb").unwrap_err(), FormError::InvalidBoundary);
        // Header block over the limit, whole or in pieces.
        for step in [1, 7, BODY.len()] {
            let (_, r) = run(BODY.chunks(step), "XyZ", 50);
            assert_eq!(r, Err(FormError::PartHeadersTooLarge(50)), "step {step}");
        }
        let mut p = MultipartParser::new("XyZ").unwrap().max_parts(2);
        let r = p.push(BODY, |_| Ok::<_, FormError>(()));
        assert_eq!(r, Err(FormError::TooManyParts(2)));
        for (body, why) in [
            (&b"no delimiter"[..], "no opening delimiter"),
            (b"--XyZ", "delimiter not followed by CRLF"),
            (b"--XyZ\r\nA: b\r\n", "unterminated part headers"),
            (b"--XyZ\r\n\r\ndata\r\n--Xy", "no closing delimiter"),
        ] {
            assert_eq!(run([body], "XyZ", 1024).1, Err(FormError::Malformed(why)));
        }
        assert_eq!(
            run([&b"--XyZx\r\n"[..]], "XyZ", 1024).1,
            Err(FormError::Malformed("delimiter not followed by CRLF"))
        );
        assert_eq!(
            run([&b"--XyZ\r\nbad header\r\n\r\n"[..]], "XyZ", 1024).1,
            Err(FormError::Malformed("invalid part headers"))
        );
        // The callback's own error stops the parse.
        let mut p = MultipartParser::new("XyZ").unwrap();
        let r: Result<(), &str> = p.push(BODY, |ev| match ev {
            MultipartEvent::Data(_) => Err("stop"),
            _ => Ok(()),
        });
        assert_eq!(r, Err("stop"));
    }

    impl From<FormError> for &'static str {
        fn from(_: FormError) -> &'static str {
            "form"
        }
    }

    /// Pieces of part content, chosen to sit near the delimiter.
    #[derive(Debug, Clone)]
    enum Frag {
        Bytes(Vec<u8>),
        /// `CRLF--` and a proper prefix of the boundary.
        NearDelim(prop::sample::Index),
        /// The boundary after `--` but without the CRLF.
        DashesBoundary,
        Crlf,
        Cr,
    }

    fn frag() -> impl Strategy<Value = Frag> {
        prop_oneof![
            prop::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'B'), any::<u8>()], 0..24)
                .prop_map(Frag::Bytes),
            any::<prop::sample::Index>().prop_map(Frag::NearDelim),
            Just(Frag::DashesBoundary),
            Just(Frag::Crlf),
            Just(Frag::Cr),
        ]
    }

    #[derive(Debug, Clone)]
    struct ModelPart {
        name: Option<String>,
        filename: Option<String>,
        ct: Option<String>,
        padding: String,
        data: Vec<Frag>,
    }

    fn model_part() -> impl Strategy<Value = ModelPart> {
        (
            prop::option::of("[a-z_]{0,6}"),
            prop::option::of("[a-z. ]{0,8}"),
            prop::option::of("[a-z]{1,5}/[a-z]{1,5}"),
            "[ \t]{0,2}",
            prop::collection::vec(frag(), 0..6),
        )
            .prop_map(|(name, filename, ct, padding, data)| ModelPart { name, filename, ct, padding, data })
    }

    fn materialize(frags: &[Frag], boundary: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frags {
            match f {
                Frag::Bytes(b) => v.extend_from_slice(b),
                Frag::NearDelim(i) => {
                    v.extend_from_slice(b"\r\n--");
                    v.extend_from_slice(&boundary.as_bytes()[..i.index(boundary.len())]);
                }
                Frag::DashesBoundary => {
                    v.extend_from_slice(b"--");
                    v.extend_from_slice(boundary.as_bytes());
                }
                Frag::Crlf => v.extend_from_slice(b"\r\n"),
                Frag::Cr => v.push(b'\r'),
            }
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any split of a well-formed body yields the parts it was built from.
        #[test]
        fn any_split_yields_the_parts(
            boundary in "[A-Za-z0-9'()+_,./:=?-]{1,12}",
            preamble in prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            parts in prop::collection::vec(model_part(), 0..5),
            epilogue in prop::collection::vec(any::<u8>(), 0..16),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let delim = [b"\r\n--", boundary.as_bytes()].concat();
            let contains = |hay: &[u8]| memchr::memmem::find(hay, &delim).is_some();
            let mut body = Vec::new();
            if let Some(p) = &preamble {
                prop_assume!(!contains(&[b"\r\n", &p[..]].concat()));
                body.extend_from_slice(p);
                body.extend_from_slice(b"\r\n");
            }
            let mut want = Vec::new();
            for part in &parts {
                let data = materialize(&part.data, &boundary);
                prop_assume!(!contains(&data));
                body.extend_from_slice(b"--");
                body.extend_from_slice(boundary.as_bytes());
                body.extend_from_slice(part.padding.as_bytes());
                body.extend_from_slice(b"\r\n");
                let mut raw = Vec::new();
                if part.name.is_some() || part.filename.is_some() {
                    raw.extend_from_slice(b"Content-Disposition: form-data");
                    if let Some(n) = &part.name {
                        raw.extend_from_slice(format!("; name=\"{n}\"").as_bytes());
                    }
                    if let Some(f) = &part.filename {
                        raw.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
                    }
                    raw.extend_from_slice(b"\r\n");
                }
                if let Some(ct) = &part.ct {
                    raw.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
                }
                body.extend_from_slice(&raw);
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n");
                want.push(Ev::Part {
                    name: part.name.clone(),
                    filename: part.filename.clone(),
                    ct: part.ct.clone(),
                    raw,
                });
                if !data.is_empty() {
                    want.push(Ev::Data(data));
                }
                want.push(Ev::PartEnd);
            }
            body.extend_from_slice(b"--");
            body.extend_from_slice(boundary.as_bytes());
            body.extend_from_slice(b"--");
            body.extend_from_slice(&epilogue);
            want.push(Ev::End);

            let whole = run([&body[..]], &boundary, DEFAULT_PART_HEADER_LIMIT);
            prop_assert_eq!(&whole, &(want.clone(), Ok(())));
            let split = run(split_at(&body, &cuts), &boundary, DEFAULT_PART_HEADER_LIMIT);
            prop_assert_eq!(&split, &whole);
            let bytewise = run(body.chunks(1), &boundary, DEFAULT_PART_HEADER_LIMIT);
            prop_assert_eq!(&bytewise, &whole);
            // The one-shot parser agrees.
            let one_shot = parse_whole(&body, &boundary).unwrap();
            let data: Vec<Vec<u8>> = one_shot.iter().map(|p| p.data.to_vec()).collect();
            let want_data: Vec<Vec<u8>> = parts.iter().map(|p| materialize(&p.data, &boundary)).collect();
            prop_assert_eq!(data, want_data);
        }

        /// Arbitrary bytes: a split feed reports the same events and the same outcome as a
        /// whole one.
        #[test]
        fn any_split_of_any_bytes_agrees(
            body in prop::collection::vec(
                prop_oneof![
                    Just(b'\r'), Just(b'\n'), Just(b'-'), Just(b'b'), Just(b' '), Just(b':'), Just(b'a'),
                    any::<u8>()
                ],
                0..200,
            ),
            header_limit in 0usize..64,
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let whole = run([&body[..]], "b", header_limit);
            let split = run(split_at(&body, &cuts), "b", header_limit);
            prop_assert_eq!(&split, &whole);
        }
    }
}
