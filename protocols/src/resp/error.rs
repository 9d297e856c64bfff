//! Why bytes are not valid RESP.

use crate::ProtocolError;

/// A RESP parse failure.
///
/// Everything except [`RespError::Incomplete`] means the stream is broken and the connection
/// cannot be resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// The bytes end before the value does (only [`Value::parse`](super::Value::parse)
    /// reports it; the decoder answers `Input::Need`).
    #[error("incomplete RESP value")]
    Incomplete,
    /// A value starts with a byte that is no RESP2 or RESP3 type.
    #[error("unknown RESP type byte 0x{0:02x}")]
    BadType(u8),
    /// A streamed RESP3 string or aggregate (`$?`, `*?`, ...), which Redis never sends.
    #[error("streamed RESP3 strings and aggregates are not supported")]
    Streamed,
    /// A length or element count is not a decimal number (or has more than 20 characters).
    #[error("invalid RESP length")]
    BadLength,
    /// A negative length other than the RESP2 nulls `$-1` and `*-1`.
    #[error("negative RESP length")]
    NegativeLength,
    /// A line does not end in CR LF, a CR or LF stands alone, or a blob misses its CR LF.
    #[error("missing CR LF in RESP value")]
    MissingCrlf,
    /// An integer (`:`) is not a 64-bit signed decimal.
    #[error("invalid RESP integer")]
    BadInteger,
    /// A double (`,`) does not parse.
    #[error("invalid RESP double")]
    BadDouble,
    /// A boolean (`#`) is neither `t` nor `f`.
    #[error("invalid RESP boolean")]
    BadBoolean,
    /// A big number (`(`) is not an optionally signed run of digits.
    #[error("invalid RESP big number")]
    BadBigNumber,
    /// A RESP3 null (`_`) carries bytes.
    #[error("invalid RESP null")]
    BadNull,
    /// A verbatim string (`=`) lacks its three-byte format and colon.
    #[error("invalid RESP verbatim string")]
    BadVerbatim,
    /// Aggregates nest deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error("RESP aggregates nest deeper than {}", super::MAX_DEPTH)]
    TooDeep,
}

impl RespError {
    /// A short static description, used as the `reason` of [`ProtocolError::Malformed`].
    pub fn reason(&self) -> &'static str {
        match self {
            RespError::Incomplete => "incomplete value",
            RespError::BadType(_) => "unknown type byte",
            RespError::Streamed => "streamed strings and aggregates are not supported",
            RespError::BadLength => "invalid length",
            RespError::NegativeLength => "negative length other than the -1 null",
            RespError::MissingCrlf => "missing CR LF",
            RespError::BadInteger => "invalid integer",
            RespError::BadDouble => "invalid double",
            RespError::BadBoolean => "invalid boolean",
            RespError::BadBigNumber => "invalid big number",
            RespError::BadNull => "invalid null",
            RespError::BadVerbatim => "invalid verbatim string",
            RespError::TooDeep => "aggregates nested too deep",
        }
    }
}

impl From<RespError> for ProtocolError {
    fn from(e: RespError) -> Self {
        ProtocolError::Malformed { protocol: "resp", reason: e.reason() }
    }
}
