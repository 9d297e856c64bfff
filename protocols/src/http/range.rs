//! `Range: bytes=...` for a representation of known length (RFC 9110 §14).

/// An inclusive byte range `start..=end` within a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value of a 206 response: `bytes start-end/total`.
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, total)
    }

    /// The `Content-Range` value of a 416 response: `bytes */total`.
    pub fn unsatisfied(total: u64) -> String {
        format!("bytes */{total}")
    }
}

/// How to answer a request given its `Range` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Send the whole representation with 200 (no usable `Range`: other unit, syntax error,
    /// or several ranges).
    Full,
    /// Send this part with 206 and [`ByteRange::content_range`].
    Partial(ByteRange),
    /// 416 with `Content-Range: bytes */len` ([`ByteRange::unsatisfied`]).
    Unsatisfiable,
}

fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Saturate: a position beyond u64 is simply beyond the end.
    Some(s.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

/// Evaluates a `Range` field value for a representation of `len` bytes.
///
/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` yields [`RangeOutcome::Partial`] (the end
/// clamped to `len - 1`) or [`RangeOutcome::Unsatisfiable`]. Anything the server may ignore
/// under RFC 9110 §14.2 yields [`RangeOutcome::Full`]: another unit, invalid syntax, and
/// **requests for several ranges** (answered with the whole representation instead of
/// `multipart/byteranges`, which also defuses overlapping-range amplification).
///
/// ```
/// use ringman_protocols::http::{parse_range, ByteRange, RangeOutcome};
/// assert_eq!(parse_range(b"bytes=0-99", 50), RangeOutcome::Partial(ByteRange { start: 0, end: 49 }));
/// assert_eq!(parse_range(b"bytes=-10", 50), RangeOutcome::Partial(ByteRange { start: 40, end: 49 }));
/// assert_eq!(parse_range(b"bytes=50-", 50), RangeOutcome::Unsatisfiable);
/// assert_eq!(parse_range(b"bytes=0-1,5-6", 50), RangeOutcome::Full);
/// ```
pub fn parse_range(value: &[u8], len: u64) -> RangeOutcome {
    let value = super::request::trim_ows(value);
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"bytes=") {
        return RangeOutcome::Full;
    }
    let mut specs = super::request::list_tokens(&value[6..]);
    let Some(spec) = specs.next() else { return RangeOutcome::Full };
    if specs.next().is_some() {
        return RangeOutcome::Full;
    }
    let Some(dash) = memchr::memchr(b'-', spec) else { return RangeOutcome::Full };
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        // suffix-range: the last n bytes.
        let Some(n) = number(last) else { return RangeOutcome::Full };
        if n == 0 || len == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        return RangeOutcome::Partial(ByteRange { start: len.saturating_sub(n), end: len - 1 });
    }
    let Some(start) = number(first) else { return RangeOutcome::Full };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(e) if e >= start => e,
            _ => return RangeOutcome::Full,
        }
    };
    if start >= len {
        return RangeOutcome::Unsatisfiable;
    }
    RangeOutcome::Partial(ByteRange { start, end: end.min(len - 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, len: u64) -> RangeOutcome {
        parse_range(s.as_bytes(), len)
    }
    fn part(start: u64, end: u64) -> RangeOutcome {
        RangeOutcome::Partial(ByteRange { start, end })
    }

    #[test]
    fn edge_cases() {
        assert_eq!(p("bytes=0-0", 1), part(0, 0));
        assert_eq!(p("Bytes= 2-", 10), part(2, 9));
        assert_eq!(p("bytes=9-", 10), part(9, 9));
        assert_eq!(p("bytes=10-", 10), RangeOutcome::Unsatisfiable);
        assert_eq!(p("bytes=-0", 10), RangeOutcome::Unsatisfiable);
        assert_eq!(p("bytes=-20", 10), part(0, 9));
        assert_eq!(p("bytes=-1", 0), RangeOutcome::Unsatisfiable);
        assert_eq!(p("bytes=0-", 0), RangeOutcome::Unsatisfiable);
        assert_eq!(p("bytes=5-2", 10), RangeOutcome::Full);
        assert_eq!(p("bytes=a-b", 10), RangeOutcome::Full);
        assert_eq!(p("bytes=-", 10), RangeOutcome::Full);
        assert_eq!(p("bytes=+1-2", 10), RangeOutcome::Full);
        assert_eq!(p("items=0-1", 10), RangeOutcome::Full);
        assert_eq!(p("bytes=", 10), RangeOutcome::Full);
        assert_eq!(p("bytes=0-1, 3-4", 10), RangeOutcome::Full);
        assert_eq!(p("bytes=0-99999999999999999999999", 10), part(0, 9));
        assert_eq!(p("bytes=99999999999999999999999-", 10), RangeOutcome::Unsatisfiable);
        assert_eq!(ByteRange { start: 2, end: 5 }.content_range(10), "bytes 2-5/10");
        assert_eq!(ByteRange { start: 2, end: 5 }.len(), 4);
        assert_eq!(ByteRange::unsatisfied(10), "bytes */10");
    }
}
