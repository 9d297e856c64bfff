//! Request bodies of HTML forms: `application/x-www-form-urlencoded` (also query strings)
//! and `multipart/form-data`.

use std::borrow::Cow;

/// Why a multipart body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// The body does not follow RFC 7578 / RFC 2046 multipart syntax.
    #[error("malformed multipart body: {0}")]
    Malformed(&'static str),
    /// More parts than the limit (1024 by default, Workerman's `maxFileUploads`).
    #[error("more than {0} multipart parts")]
    TooManyParts(usize),
    /// The boundary is empty or contains CR or LF.
    #[error("invalid multipart boundary")]
    InvalidBoundary,
    /// A part's header block is larger than the limit (in bytes).
    #[error("multipart part headers larger than {0} bytes")]
    PartHeadersTooLarge(usize),
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` escapes (and `+` as space when `plus_as_space`), borrowing when there is
/// nothing to decode. Malformed escapes are kept literally.
///
/// ```
/// use ringman_protocols::http::percent_decode;
/// assert_eq!(percent_decode(b"a%20b+c", true), &b"a b c"[..]);
/// assert_eq!(percent_decode(b"100%", false), &b"100%"[..]);
/// ```
pub fn percent_decode(input: &[u8], plus_as_space: bool) -> Cow<'_, [u8]> {
    if !input.iter().any(|&b| b == b'%' || (plus_as_space && b == b'+')) {
        return Cow::Borrowed(input);
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => match (input.get(i + 1).and_then(|&b| hex(b)), input.get(i + 2).and_then(|&b| hex(b))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_as_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

fn lossy(c: Cow<'_, [u8]>) -> Cow<'_, str> {
    match c {
        Cow::Borrowed(b) => String::from_utf8_lossy(b),
        Cow::Owned(v) => match String::from_utf8(v) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        },
    }
}

/// Iterator over the `(name, value)` pairs of a urlencoded string; see [`parse_urlencoded`].
#[derive(Debug, Clone)]
pub struct UrlEncoded<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for UrlEncoded<'a> {
    type Item = (Cow<'a, str>, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = memchr::memchr(b'&', self.rest).unwrap_or(self.rest.len());
            let pair = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or(b"");
            if pair.is_empty() {
                continue;
            }
            let (n, v) = match memchr::memchr(b'=', pair) {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            return Some((lossy(percent_decode(n, true)), lossy(percent_decode(v, true))));
        }
    }
}

/// Parses `application/x-www-form-urlencoded` data (a POST body or a query string) lazily
/// into decoded `(name, value)` pairs; invalid UTF-8 is replaced with U+FFFD.
///
/// ```
/// use ringman_protocols::http::parse_urlencoded;
/// let v: Vec<_> = parse_urlencoded(b"a=1&b=x+y%21&&c").collect();
/// assert_eq!(v, [("a".into(), "1".into()), ("b".into(), "x y!".into()), ("c".into(), "".into())]);
/// ```
pub fn parse_urlencoded(input: &[u8]) -> UrlEncoded<'_> {
    UrlEncoded { rest: input }
}

/// The `boundary` parameter of a `multipart/form-data` content type.
///
/// ```
/// use ringman_protocols::http::boundary_from_content_type;
/// assert_eq!(boundary_from_content_type("multipart/form-data; boundary=\"ab c\""), Some("ab c"));
/// assert_eq!(boundary_from_content_type("text/plain; boundary=x"), None);
/// ```
pub fn boundary_from_content_type(ct: &str) -> Option<&str> {
    let mut params = ct.split(';');
    let mime = params.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        (!v.is_empty() && v.len() <= 70 && !v.bytes().any(|b| b == b'\r' || b == b'\n')).then_some(v)
    })
}

/// One part of a `multipart/form-data` body, borrowed from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part<'a> {
    /// The `name` parameter of `Content-Disposition`.
    pub name: Option<&'a str>,
    /// The `filename` parameter, for file uploads (not sanitised: never use it as a path).
    pub filename: Option<&'a str>,
    /// The part's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The part's raw header lines.
    pub headers: &'a [u8],
    /// The part's content.
    pub data: &'a [u8],
}

/// Splits an in-memory `multipart/form-data` body into its parts (RFC 7578), borrowed from
/// it. The preamble and epilogue are ignored; the closing delimiter is required. Limits are
/// those of [`MultipartParser`](super::MultipartParser)'s defaults (1024 parts, 16 KiB of
/// headers per part).
///
/// ```
/// use ringman_protocols::http::parse_multipart;
/// let body = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XX--\r\n";
/// let parts = parse_multipart(body, "XX").unwrap();
/// assert_eq!((parts[0].name, parts[0].data), (Some("a"), &b"1"[..]));
/// ```
pub fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, FormError> {
    super::multipart::parse_whole(body, boundary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_fields_and_a_file() {
        let body = b"preamble\r\n--b0undary\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n--b0undary\r\nContent-Disposition: form-data; name=\"tags\"\r\n\r\na,b\r\nc\r\n--b0undary\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a;b.txt\"\r\nContent-Type: text/plain\r\n\r\nline1\r\n--not-the-boundary\r\n\r\n--b0undary--\r\nepilogue";
        let parts = parse_multipart(body, "b0undary").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!((parts[0].name, parts[0].data), (Some("title"), &b"Hello"[..]));
        assert_eq!((parts[1].name, parts[1].data), (Some("tags"), &b"a,b\r\nc"[..]));
        assert_eq!(parts[2].name, Some("upload"));
        assert_eq!(parts[2].filename, Some("a;b.txt"));
        assert_eq!(parts[2].content_type, Some("text/plain"));
        assert_eq!(parts[2].data, b"line1\r\n--not-the-boundary\r\n");
        assert_eq!(parts[0].filename, None);
    }

    #[test]
    fn malformed_multipart() {
        assert!(parse_multipart(b"--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx", "b").is_err());
        assert!(parse_multipart(b"nothing here", "b").is_err());
        assert!(parse_multipart(b"--bX", "b").is_err());
        assert_eq!(parse_multipart(b"--b--", "b").unwrap(), vec![]);
        let mut many = Vec::new();
        for _ in 0..=crate::http::DEFAULT_MAX_PARTS {
            many.extend_from_slice(b"--b\r\n\r\nx\r\n");
        }
        many.extend_from_slice(b"--b--");
        assert_eq!(parse_multipart(&many, "b"), Err(FormError::TooManyParts(crate::http::DEFAULT_MAX_PARTS)));
    }

    #[test]
    fn urlencoded_edge_cases() {
        let v: Vec<_> = parse_urlencoded(b"%zz=%e2%9c%93&=e&k=%ff").collect();
        assert_eq!(v[0], ("%zz".into(), "\u{2713}".into()));
        assert_eq!(v[1], ("".into(), "e".into()));
        assert_eq!(v[2].1, "\u{fffd}");
        assert!(matches!(percent_decode(b"plain", true), Cow::Borrowed(_)));
        assert_eq!(percent_decode(b"%4", false), &b"%4"[..]);
    }
}
