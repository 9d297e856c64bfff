//! Parsed replies: [`Value`] borrows from the packet, [`OwnedValue`] owns its bytes.

use super::encode::{push_bulk, push_header};
use super::lex::{self, Agg, Elem, Step};
use super::{RespError, MAX_DEPTH};

/// The kind of a server error, from its first word (Redis's error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `ERR`: a generic error (unknown command, syntax, wrong arguments).
    Err,
    /// `WRONGTYPE`: the key holds another type.
    WrongType,
    /// `MOVED`: the slot lives on another cluster node.
    Moved,
    /// `ASK`: ask another cluster node for this one command.
    Ask,
    /// `TRYAGAIN`: a cluster slot is migrating.
    TryAgain,
    /// `CROSSSLOT`: the keys hash to different slots.
    CrossSlot,
    /// `CLUSTERDOWN`: the cluster is down.
    ClusterDown,
    /// `LOADING`: the server is loading its dataset.
    Loading,
    /// `BUSY`: a script or function is running.
    Busy,
    /// `NOSCRIPT`: no script with that SHA1.
    NoScript,
    /// `NOAUTH`: authentication is required.
    NoAuth,
    /// `WRONGPASS`: wrong user name or password.
    WrongPass,
    /// `NOPERM`: the user lacks a permission.
    NoPerm,
    /// `NOPROTO`: the protocol version asked for by `HELLO` is not supported.
    NoProto,
    /// `READONLY`: writing to a read-only replica.
    ReadOnly,
    /// `MASTERDOWN`: the replica lost its master.
    MasterDown,
    /// `OOM`: the command would exceed `maxmemory`.
    Oom,
    /// `EXECABORT`: a transaction was discarded because of earlier errors.
    ExecAbort,
    /// `NOREPLICAS`: not enough good replicas to write.
    NoReplicas,
    /// Any other code.
    Other,
}

impl ErrorKind {
    /// The kind of an error code (`WRONGTYPE` → [`ErrorKind::WrongType`]).
    pub fn from_code(code: &[u8]) -> ErrorKind {
        match code {
            b"ERR" => ErrorKind::Err,
            b"WRONGTYPE" => ErrorKind::WrongType,
            b"MOVED" => ErrorKind::Moved,
            b"ASK" => ErrorKind::Ask,
            b"TRYAGAIN" => ErrorKind::TryAgain,
            b"CROSSSLOT" => ErrorKind::CrossSlot,
            b"CLUSTERDOWN" => ErrorKind::ClusterDown,
            b"LOADING" => ErrorKind::Loading,
            b"BUSY" => ErrorKind::Busy,
            b"NOSCRIPT" => ErrorKind::NoScript,
            b"NOAUTH" => ErrorKind::NoAuth,
            b"WRONGPASS" => ErrorKind::WrongPass,
            b"NOPERM" => ErrorKind::NoPerm,
            b"NOPROTO" => ErrorKind::NoProto,
            b"READONLY" => ErrorKind::ReadOnly,
            b"MASTERDOWN" => ErrorKind::MasterDown,
            b"OOM" => ErrorKind::Oom,
            b"EXECABORT" => ErrorKind::ExecAbort,
            b"NOREPLICAS" => ErrorKind::NoReplicas,
            _ => ErrorKind::Other,
        }
    }
}

/// Splits an error text into its code (first word) and message (the rest).
fn split_error(text: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b' ', text) {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text, &[]),
    }
}

/// An error reply (`-` simple error or `!` blob error), borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerError<'a> {
    text: &'a [u8],
}

impl<'a> ServerError<'a> {
    /// The error as sent: `WRONGTYPE Operation against a key holding the wrong kind of value`.
    pub fn new(text: &'a [u8]) -> Self {
        ServerError { text }
    }
    /// The whole error text.
    pub fn text(&self) -> &'a [u8] {
        self.text
    }
    /// The error code: the first word (`ERR`, `WRONGTYPE`, `MOVED`).
    pub fn code(&self) -> &'a [u8] {
        split_error(self.text).0
    }
    /// The text after the code (`3999 127.0.0.1:6381` for a `MOVED`).
    pub fn message(&self) -> &'a [u8] {
        split_error(self.text).1
    }
    /// The code as a typed kind.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_code(self.code())
    }
    /// An owned copy.
    pub fn to_owned_error(&self) -> OwnedServerError {
        OwnedServerError { text: self.text.to_vec() }
    }
}

impl std::fmt::Display for ServerError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.text))
    }
}

/// An error reply that owns its text (a `std::error::Error`, for a client's error type).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedServerError {
    text: Vec<u8>,
}

impl OwnedServerError {
    /// A borrowed view.
    pub fn as_error(&self) -> ServerError<'_> {
        ServerError { text: &self.text }
    }
    /// The whole error text.
    pub fn text(&self) -> &[u8] {
        &self.text
    }
    /// The error code: the first word (`ERR`, `WRONGTYPE`, `MOVED`).
    pub fn code(&self) -> &[u8] {
        split_error(&self.text).0
    }
    /// The text after the code.
    pub fn message(&self) -> &[u8] {
        split_error(&self.text).1
    }
    /// The code as a typed kind.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_code(self.code())
    }
}

impl std::fmt::Display for OwnedServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_error().fmt(f)
    }
}

impl std::error::Error for OwnedServerError {}

/// One RESP2 or RESP3 value, borrowing strings from the packet it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `+OK`
    SimpleString(&'a [u8]),
    /// `-ERR ...` or a RESP3 blob error `!`.
    Error(ServerError<'a>),
    /// `:42`
    Integer(i64),
    /// `$5\r\nhello`; `None` is the RESP2 null bulk string `$-1`.
    Bulk(Option<&'a [u8]>),
    /// `*n` (RESP2 and RESP3).
    Array(Vec<Value<'a>>),
    /// RESP3 `_`, or the RESP2 null array `*-1`.
    Null,
    /// RESP3 `,1.5` (`inf`, `-inf`, `nan` included).
    Double(f64),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `(` digits, with their optional sign, as sent.
    BigNumber(&'a [u8]),
    /// RESP3 `=`: a three-byte format (`txt`, `mkd`) and the text.
    Verbatim {
        /// The format, three bytes.
        format: &'a [u8],
        /// The text.
        text: &'a [u8],
    },
    /// RESP3 `%`: key-value pairs in the order sent.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// RESP3 `~`.
    Set(Vec<Value<'a>>),
    /// RESP3 `>`: out-of-band data (pub/sub messages, invalidations).
    Push(Vec<Value<'a>>),
    /// A value preceded by RESP3 attributes (`|`); consecutive attributes are merged. The
    /// accessors look through it to the value; [`Value::strip`] does so explicitly.
    Attributed {
        /// The attribute pairs.
        attributes: Vec<(Value<'a>, Value<'a>)>,
        /// The annotated value.
        value: Box<Value<'a>>,
    },
}

impl<'a> Value<'a> {
    /// Parses the value at the start of `buf`; returns it and the bytes it took.
    ///
    /// Fails with [`RespError::Incomplete`] when `buf` ends early. It accepts exactly what
    /// the [`Resp`](super::Resp) decoder announces as a packet, so parsing a decoded
    /// message only fails on a decoder bug.
    ///
    /// ```
    /// use ringman_protocols::resp::Value;
    /// let (v, n) = Value::parse(b"*2\r\n:1\r\n$3\r\nabc\r\n+next").unwrap();
    /// assert_eq!(n, 17);
    /// assert_eq!(v, Value::Array(vec![Value::Integer(1), Value::Bulk(Some(b"abc"))]));
    /// ```
    pub fn parse(buf: &'a [u8]) -> Result<(Value<'a>, usize), RespError> {
        let mut pos = 0;
        let v = parse_at(buf, &mut pos, 0)?;
        Ok((v, pos))
    }

    /// The value behind any attributes.
    pub fn strip(&self) -> &Value<'a> {
        match self {
            Value::Attributed { value, .. } => value,
            v => v,
        }
    }

    /// The value behind any attributes, by value.
    pub fn into_stripped(self) -> Value<'a> {
        match self {
            Value::Attributed { value, .. } => *value,
            v => v,
        }
    }

    /// The bytes of a simple string, bulk string or verbatim text.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self.strip() {
            Value::SimpleString(s) | Value::Bulk(Some(s)) | Value::Verbatim { text: s, .. } => Some(s),
            _ => None,
        }
    }

    /// [`Value::as_bytes`] as UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer reply, or a string or big number holding a decimal that fits `i64`.
    pub fn as_int(&self) -> Option<i64> {
        match *self.strip() {
            Value::Integer(n) => Some(n),
            Value::BigNumber(s) => lex::parse_i64(s),
            _ => self.as_bytes().and_then(lex::parse_i64),
        }
    }

    /// A double, an integer, or a string holding a number.
    pub fn as_double(&self) -> Option<f64> {
        match *self.strip() {
            Value::Double(d) => Some(d),
            Value::Integer(n) => Some(n as f64),
            _ => self.as_str().and_then(|s| s.parse().ok()),
        }
    }

    /// A RESP3 boolean, or the RESP2 integers 0 and 1.
    pub fn as_bool(&self) -> Option<bool> {
        match *self.strip() {
            Value::Boolean(b) => Some(b),
            Value::Integer(0) => Some(false),
            Value::Integer(1) => Some(true),
            _ => None,
        }
    }

    /// The elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self.strip() {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array, set or push, by value; `Err(self)` for anything else.
    pub fn into_array(self) -> Result<Vec<Value<'a>>, Value<'a>> {
        match self.into_stripped() {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => Ok(v),
            v => Err(v),
        }
    }

    /// The pairs of a RESP3 map.
    pub fn as_map(&self) -> Option<&[(Value<'a>, Value<'a>)]> {
        match self.strip() {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The pairs of a RESP3 map, or of a RESP2 array of alternating keys and values (what
    /// `HGETALL` answers in RESP2), by value; `Err(self)` for anything else.
    pub fn into_pairs(self) -> Result<Vec<(Value<'a>, Value<'a>)>, Value<'a>> {
        match self.into_stripped() {
            Value::Map(m) => Ok(m),
            Value::Array(v) if v.len() % 2 == 0 => {
                let mut it = v.into_iter();
                let mut pairs = Vec::with_capacity(it.len() / 2);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Ok(pairs)
            }
            v => Err(v),
        }
    }

    /// The error, if this is an error reply.
    pub fn as_error(&self) -> Option<ServerError<'a>> {
        match *self.strip() {
            Value::Error(e) => Some(e),
            _ => None,
        }
    }

    /// True for every form of null: RESP3 `_`, `$-1` and `*-1`.
    pub fn is_nil(&self) -> bool {
        matches!(self.strip(), Value::Null | Value::Bulk(None))
    }

    /// True for `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self.strip(), Value::SimpleString(b"OK"))
    }

    /// A copy that owns its bytes, to keep past the receive buffer (across an `.await`).
    pub fn to_owned_value(&self) -> OwnedValue {
        let list = |v: &[Value<'_>]| v.iter().map(Value::to_owned_value).collect();
        let pairs =
            |m: &[(Value<'_>, Value<'_>)]| m.iter().map(|(k, v)| (k.to_owned_value(), v.to_owned_value())).collect();
        match self {
            Value::SimpleString(s) => OwnedValue::SimpleString(s.to_vec()),
            Value::Error(e) => OwnedValue::Error(e.to_owned_error()),
            Value::Integer(n) => OwnedValue::Integer(*n),
            Value::Bulk(b) => OwnedValue::Bulk(b.map(<[u8]>::to_vec)),
            Value::Array(v) => OwnedValue::Array(list(v)),
            Value::Null => OwnedValue::Null,
            Value::Double(d) => OwnedValue::Double(*d),
            Value::Boolean(b) => OwnedValue::Boolean(*b),
            Value::BigNumber(s) => OwnedValue::BigNumber(s.to_vec()),
            Value::Verbatim { format, text } => OwnedValue::Verbatim { format: format.to_vec(), text: text.to_vec() },
            Value::Map(m) => OwnedValue::Map(pairs(m)),
            Value::Set(v) => OwnedValue::Set(list(v)),
            Value::Push(v) => OwnedValue::Push(list(v)),
            Value::Attributed { attributes, value } => {
                OwnedValue::Attributed { attributes: pairs(attributes), value: Box::new(value.to_owned_value()) }
            }
        }
    }

    /// Appends the RESP wire form of this value to `out` (RESP3 types in RESP3 syntax).
    ///
    /// A simple string or simple error holding CR or LF cannot be sent as one: it is written
    /// as a bulk string or blob error. A verbatim format is padded or cut to three bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::SimpleString(s) if memchr::memchr2(b'\r', b'\n', s).is_none() => line(out, b'+', s),
            Value::SimpleString(s) => push_bulk(out, &[], s),
            Value::Error(e) if memchr::memchr2(b'\r', b'\n', e.text).is_none() => line(out, b'-', e.text),
            Value::Error(e) => blob(out, b'!', &[e.text]),
            Value::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Value::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Value::Bulk(Some(b)) => push_bulk(out, &[], b),
            Value::Array(v) => list(out, b'*', v),
            Value::Null => out.extend_from_slice(b"_\r\n"),
            Value::Double(d) => {
                let s = match *d {
                    d if d.is_nan() => "nan".to_string(),
                    f64::INFINITY => "inf".to_string(),
                    f64::NEG_INFINITY => "-inf".to_string(),
                    d => format!("{d:?}"),
                };
                line(out, b',', s.as_bytes())
            }
            Value::Boolean(b) => line(out, b'#', if *b { b"t" } else { b"f" }),
            Value::BigNumber(s) => line(out, b'(', s),
            Value::Verbatim { format, text } => {
                let mut f = [b' '; 3];
                for (d, s) in f.iter_mut().zip(format.iter()) {
                    *d = *s;
                }
                blob(out, b'=', &[&f, b":", text]);
            }
            Value::Map(m) => map(out, b'%', m),
            Value::Set(v) => list(out, b'~', v),
            Value::Push(v) => list(out, b'>', v),
            Value::Attributed { attributes, value } => {
                map(out, b'|', attributes);
                value.write(out);
            }
        }
    }
}

fn line(out: &mut Vec<u8>, t: u8, s: &[u8]) {
    out.push(t);
    out.extend_from_slice(s);
    out.extend_from_slice(b"\r\n");
}

fn blob(out: &mut Vec<u8>, t: u8, parts: &[&[u8]]) {
    push_header(out, t, parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

fn list(out: &mut Vec<u8>, t: u8, v: &[Value<'_>]) {
    push_header(out, t, v.len());
    for e in v {
        e.write(out);
    }
}

fn map(out: &mut Vec<u8>, t: u8, m: &[(Value<'_>, Value<'_>)]) {
    push_header(out, t, m.len());
    for (k, v) in m {
        k.write(out);
        v.write(out);
    }
}

/// Parses the value at `*pos`, `depth` aggregates deep, and moves `*pos` past it.
fn parse_at<'a>(buf: &'a [u8], pos: &mut usize, depth: usize) -> Result<Value<'a>, RespError> {
    let mut attributes: Vec<(Value<'a>, Value<'a>)> = Vec::new();
    loop {
        let (elem, n) = match lex::element(&buf[*pos..], 0)? {
            Step::Need { .. } => return Err(RespError::Incomplete),
            Step::Done(elem, n) => (elem, n),
        };
        *pos += n;
        let value = match elem {
            Elem::Simple(s) => Value::SimpleString(s),
            Elem::Error(e) | Elem::BlobError(e) => Value::Error(ServerError { text: e }),
            Elem::Int(i) => Value::Integer(i),
            Elem::Null | Elem::NullArray => Value::Null,
            Elem::Double(d) => Value::Double(d),
            Elem::Bool(b) => Value::Boolean(b),
            Elem::BigNumber(s) => Value::BigNumber(s),
            Elem::Bulk(b) => Value::Bulk(b),
            Elem::Verbatim(format, text) => Value::Verbatim { format, text },
            Elem::Agg(kind, count) => {
                if depth >= MAX_DEPTH {
                    return Err(RespError::TooDeep);
                }
                // Each element takes at least 3 bytes: never reserve for more than could fit.
                let room = (buf.len() - *pos) / 3;
                match kind {
                    Agg::Map | Agg::Attribute => {
                        let mut pairs = Vec::with_capacity(count.min(room / 2));
                        for _ in 0..count {
                            let k = parse_at(buf, pos, depth + 1)?;
                            let v = parse_at(buf, pos, depth + 1)?;
                            pairs.push((k, v));
                        }
                        if kind == Agg::Attribute {
                            attributes.append(&mut pairs);
                            continue;
                        }
                        Value::Map(pairs)
                    }
                    _ => {
                        let mut items = Vec::with_capacity(count.min(room));
                        for _ in 0..count {
                            items.push(parse_at(buf, pos, depth + 1)?);
                        }
                        match kind {
                            Agg::Set => Value::Set(items),
                            Agg::Push => Value::Push(items),
                            _ => Value::Array(items),
                        }
                    }
                }
            }
        };
        return Ok(if attributes.is_empty() {
            value
        } else {
            Value::Attributed { attributes, value: Box::new(value) }
        });
    }
}

/// A [`Value`] that owns its bytes (see [`Value::to_owned_value`]).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // Each variant is the owned form of the `Value` variant of that name.
pub enum OwnedValue {
    SimpleString(Vec<u8>),
    Error(OwnedServerError),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<OwnedValue>),
    Null,
    Double(f64),
    Boolean(bool),
    BigNumber(Vec<u8>),
    Verbatim { format: Vec<u8>, text: Vec<u8> },
    Map(Vec<(OwnedValue, OwnedValue)>),
    Set(Vec<OwnedValue>),
    Push(Vec<OwnedValue>),
    Attributed { attributes: Vec<(OwnedValue, OwnedValue)>, value: Box<OwnedValue> },
}

impl OwnedValue {
    /// Parses the value at the start of `buf` into an owned value; see [`Value::parse`].
    pub fn parse(buf: &[u8]) -> Result<(OwnedValue, usize), RespError> {
        Value::parse(buf).map(|(v, n)| (v.to_owned_value(), n))
    }

    /// A borrowed view (allocates the element lists of aggregates).
    pub fn as_value(&self) -> Value<'_> {
        fn list(v: &[OwnedValue]) -> Vec<Value<'_>> {
            v.iter().map(OwnedValue::as_value).collect()
        }
        match self {
            OwnedValue::Array(v) => Value::Array(list(v)),
            OwnedValue::Set(v) => Value::Set(list(v)),
            OwnedValue::Push(v) => Value::Push(list(v)),
            OwnedValue::Map(m) => Value::Map(m.iter().map(|(k, v)| (k.as_value(), v.as_value())).collect()),
            OwnedValue::Attributed { attributes, value } => Value::Attributed {
                attributes: attributes.iter().map(|(k, v)| (k.as_value(), v.as_value())).collect(),
                value: Box::new(value.as_value()),
            },
            other => other.scalar().unwrap_or(Value::Null),
        }
    }

    /// The borrowed form of a non-aggregate (behind any attributes); `None` for aggregates.
    fn scalar(&self) -> Option<Value<'_>> {
        Some(match self.strip() {
            OwnedValue::SimpleString(s) => Value::SimpleString(s),
            OwnedValue::Error(e) => Value::Error(e.as_error()),
            OwnedValue::Integer(n) => Value::Integer(*n),
            OwnedValue::Bulk(b) => Value::Bulk(b.as_deref()),
            OwnedValue::Null => Value::Null,
            OwnedValue::Double(d) => Value::Double(*d),
            OwnedValue::Boolean(b) => Value::Boolean(*b),
            OwnedValue::BigNumber(s) => Value::BigNumber(s),
            OwnedValue::Verbatim { format, text } => Value::Verbatim { format, text },
            _ => return None,
        })
    }

    /// The value behind any attributes.
    pub fn strip(&self) -> &OwnedValue {
        match self {
            OwnedValue::Attributed { value, .. } => value,
            v => v,
        }
    }

    /// The value behind any attributes, by value.
    pub fn into_stripped(self) -> OwnedValue {
        match self {
            OwnedValue::Attributed { value, .. } => *value,
            v => v,
        }
    }

    /// See [`Value::as_bytes`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        self.scalar().and_then(|v| v.as_bytes())
    }

    /// See [`Value::as_str`].
    pub fn as_str(&self) -> Option<&str> {
        self.scalar().and_then(|v| v.as_str())
    }

    /// See [`Value::as_int`].
    pub fn as_int(&self) -> Option<i64> {
        self.scalar().and_then(|v| v.as_int())
    }

    /// See [`Value::as_double`].
    pub fn as_double(&self) -> Option<f64> {
        self.scalar().and_then(|v| v.as_double())
    }

    /// See [`Value::as_bool`].
    pub fn as_bool(&self) -> Option<bool> {
        self.scalar().and_then(|v| v.as_bool())
    }

    /// See [`Value::is_nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self.strip(), OwnedValue::Null | OwnedValue::Bulk(None))
    }

    /// See [`Value::is_ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self.strip(), OwnedValue::SimpleString(s) if s == b"OK")
    }

    /// The error, if this is an error reply.
    pub fn as_error(&self) -> Option<&OwnedServerError> {
        match self.strip() {
            OwnedValue::Error(e) => Some(e),
            _ => None,
        }
    }

    /// The elements of an array, set or push.
    pub fn as_array(&self) -> Option<&[OwnedValue]> {
        match self.strip() {
            OwnedValue::Array(v) | OwnedValue::Set(v) | OwnedValue::Push(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an array, set or push, by value; `Err(self)` for anything else.
    pub fn into_array(self) -> Result<Vec<OwnedValue>, OwnedValue> {
        match self.into_stripped() {
            OwnedValue::Array(v) | OwnedValue::Set(v) | OwnedValue::Push(v) => Ok(v),
            v => Err(v),
        }
    }

    /// The pairs of a RESP3 map.
    pub fn as_map(&self) -> Option<&[(OwnedValue, OwnedValue)]> {
        match self.strip() {
            OwnedValue::Map(m) => Some(m),
            _ => None,
        }
    }

    /// See [`Value::into_pairs`].
    pub fn into_pairs(self) -> Result<Vec<(OwnedValue, OwnedValue)>, OwnedValue> {
        match self.into_stripped() {
            OwnedValue::Map(m) => Ok(m),
            OwnedValue::Array(v) if v.len() % 2 == 0 => {
                let mut it = v.into_iter();
                let mut pairs = Vec::with_capacity(it.len() / 2);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Ok(pairs)
            }
            v => Err(v),
        }
    }

    /// Appends the RESP wire form; see [`Value::write`].
    pub fn write(&self, out: &mut Vec<u8>) {
        self.as_value().write(out)
    }
}

impl From<&Value<'_>> for OwnedValue {
    fn from(v: &Value<'_>) -> Self {
        v.to_owned_value()
    }
}
