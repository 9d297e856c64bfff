//! One RESP element at a time: the header line and, for blobs, the data behind it.
//!
//! Shared by the decoder's packet scanner and [`Value::parse`](super::Value::parse), so both
//! accept exactly the same bytes.

use super::RespError;

/// Longest header line of a numeric element (`:`, lengths, counts): a sign and 19 digits.
const NUMERIC_LINE: usize = 20;

/// The aggregate types (their elements follow the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Agg {
    /// `*`
    Array,
    /// `~`
    Set,
    /// `>`
    Push,
    /// `%` (the count is of pairs)
    Map,
    /// `|` (the count is of pairs; a value follows the pairs)
    Attribute,
}

/// One lexed element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Elem<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    Null,
    Double(f64),
    Bool(bool),
    BigNumber(&'a [u8]),
    Bulk(Option<&'a [u8]>),
    BlobError(&'a [u8]),
    Verbatim(&'a [u8], &'a [u8]),
    NullArray,
    Agg(Agg, usize),
}

/// The outcome of lexing at a position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step<'a> {
    /// More bytes are needed. `scanned`: bytes of the header line known to hold no CR
    /// (pass it back as the hint); `want`: the element's full length, once known.
    Need { scanned: usize, want: Option<usize> },
    /// The element and its length in bytes.
    Done(Elem<'a>, usize),
}

/// Lexes the element at the start of `buf`. `hint` is a `scanned` from an earlier
/// [`Step::Need`] on the same bytes (0 if none): the search for the line end resumes there.
pub(crate) fn element(buf: &[u8], hint: usize) -> Result<Step<'_>, RespError> {
    let Some(&t) = buf.first() else {
        return Ok(Step::Need { scanned: 0, want: None });
    };
    let limit = match t {
        b'+' | b'-' | b',' | b'(' => usize::MAX,
        b':' | b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|' => NUMERIC_LINE,
        b'_' => 0,
        b'#' => 1,
        _ => return Err(RespError::BadType(t)),
    };
    let from = hint.clamp(1, buf.len());
    let Some(i) = memchr::memchr2(b'\r', b'\n', &buf[from..]) else {
        if buf.len() - 1 > limit {
            return Err(too_long(t));
        }
        return Ok(Step::Need { scanned: buf.len(), want: None });
    };
    let cr = from + i;
    if buf[cr] == b'\n' {
        return Err(RespError::MissingCrlf);
    }
    let line = &buf[1..cr];
    if line.len() > limit {
        return Err(too_long(t));
    }
    match buf.get(cr + 1) {
        None => return Ok(Step::Need { scanned: cr, want: None }),
        Some(b'\n') => {}
        Some(_) => return Err(RespError::MissingCrlf),
    }
    let head = cr + 2;
    let elem = match t {
        b'+' => Elem::Simple(line),
        b'-' => Elem::Error(line),
        b':' => Elem::Int(parse_i64(line).ok_or(RespError::BadInteger)?),
        b'_' => Elem::Null,
        b',' => Elem::Double(parse_double(line)?),
        b'#' => match line {
            b"t" => Elem::Bool(true),
            b"f" => Elem::Bool(false),
            _ => return Err(RespError::BadBoolean),
        },
        b'(' => {
            let digits = line.strip_prefix(b"-").or_else(|| line.strip_prefix(b"+")).unwrap_or(line);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(RespError::BadBigNumber);
            }
            Elem::BigNumber(line)
        }
        b'$' | b'!' | b'=' => {
            let len = match parse_len(line)? {
                Len::Null if t == b'$' => return Ok(Step::Done(Elem::Bulk(None), head)),
                Len::Null => return Err(RespError::NegativeLength),
                Len::N(n) => n,
            };
            let end = head.checked_add(len).ok_or(RespError::BadLength)?;
            let total = end.checked_add(2).ok_or(RespError::BadLength)?;
            if buf.len() < total {
                return Ok(Step::Need { scanned: cr, want: Some(total) });
            }
            if &buf[end..total] != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            let data = &buf[head..end];
            let elem = match t {
                b'$' => Elem::Bulk(Some(data)),
                b'!' => Elem::BlobError(data),
                _ => match data {
                    [_, _, _, b':', text @ ..] => Elem::Verbatim(&data[..3], text),
                    _ => return Err(RespError::BadVerbatim),
                },
            };
            return Ok(Step::Done(elem, total));
        }
        _ => {
            let kind = match t {
                b'*' => Agg::Array,
                b'~' => Agg::Set,
                b'>' => Agg::Push,
                b'%' => Agg::Map,
                _ => Agg::Attribute,
            };
            match parse_len(line)? {
                Len::Null if t == b'*' => Elem::NullArray,
                Len::Null => return Err(RespError::NegativeLength),
                Len::N(n) => Elem::Agg(kind, n),
            }
        }
    };
    Ok(Step::Done(elem, head))
}

/// The error for a header line longer than its type allows.
fn too_long(t: u8) -> RespError {
    match t {
        b':' => RespError::BadInteger,
        b'_' => RespError::BadNull,
        b'#' => RespError::BadBoolean,
        _ => RespError::BadLength,
    }
}

enum Len {
    Null,
    N(usize),
}

/// A length or count: decimal digits, or `-1` (null). `?` (streamed) and other negatives
/// are refused.
fn parse_len(line: &[u8]) -> Result<Len, RespError> {
    match line {
        b"-1" => Ok(Len::Null),
        b"?" => Err(RespError::Streamed),
        [b'-', rest @ ..] if !rest.is_empty() && rest.iter().all(u8::is_ascii_digit) => Err(RespError::NegativeLength),
        _ if !line.is_empty() && line.iter().all(u8::is_ascii_digit) => line
            .iter()
            .try_fold(0usize, |n, &d| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))
            .map(Len::N)
            .ok_or(RespError::BadLength),
        _ => Err(RespError::BadLength),
    }
}

/// A signed 64-bit decimal with an optional sign.
pub(crate) fn parse_i64(line: &[u8]) -> Option<i64> {
    let (neg, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        // Accumulate negatively so i64::MIN parses.
        n = n.checked_mul(10)?.checked_sub(d)?;
    }
    if neg {
        Some(n)
    } else {
        n.checked_neg()
    }
}

/// A RESP3 double: `inf`, `-inf`, `nan` or a decimal with optional exponent.
fn parse_double(line: &[u8]) -> Result<f64, RespError> {
    match line {
        b"inf" | b"+inf" => return Ok(f64::INFINITY),
        b"-inf" => return Ok(f64::NEG_INFINITY),
        b"nan" | b"-nan" => return Ok(f64::NAN),
        _ => {}
    }
    // Rust also accepts words ("infinity", "NaN"): only digits, signs, '.', 'e' pass here.
    if line.is_empty() || !line.iter().all(|&c| c.is_ascii_digit() || matches!(c, b'+' | b'-' | b'.' | b'e' | b'E')) {
        return Err(RespError::BadDouble);
    }
    std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or(RespError::BadDouble)
}
