//! Why a WebSocket connection fails, and the close code that says so.

use super::HandshakeError;
use crate::ProtocolError;

/// Close status codes (RFC 6455 §7.4.1) used by this implementation.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data of a type the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// Data inconsistent with the message type (invalid UTF-8 in a text message).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Internal server error.
    pub const INTERNAL: u16 = 1011;

    /// True if `code` may appear in a close frame on the wire: 1000-1003, 1007-1011 and the
    /// registered/private range 3000-4999. 1004-1006, 1015 and everything else are invalid.
    pub fn is_valid(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

/// A WebSocket failure: either the upgrade request was refused, or the frame stream broke
/// the protocol. [`WsError::close_code`] gives the close code sent before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The upgrade request was invalid; answered with an HTTP error status.
    #[error("websocket handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The frames break RFC 6455 or RFC 7692 (close 1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or a close reason is not UTF-8 (close 1007).
    #[error("websocket: invalid UTF-8 in {0}")]
    InvalidUtf8(&'static str),
    /// A compressed message does not inflate (close 1007).
    #[error("websocket: corrupt compressed message")]
    Inflate,
    /// A message (reassembled or inflated) exceeds `max_package_size` (close 1009).
    #[error("websocket message of at least {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Bytes reached (or announced) when the limit was hit.
        len: usize,
        /// The limit in force.
        max: usize,
    },
}

impl WsError {
    /// The close status code to send for this error (meaningless for handshake errors).
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::Handshake(_) | WsError::Protocol(_) => close_code::PROTOCOL,
            WsError::InvalidUtf8(_) | WsError::Inflate => close_code::INVALID_PAYLOAD,
            WsError::TooLarge { .. } => close_code::TOO_BIG,
        }
    }

    /// A short static description, used as the `reason` of [`ProtocolError::Malformed`].
    pub fn reason(&self) -> &'static str {
        match self {
            WsError::Handshake(h) => h.reason(),
            WsError::Protocol(r) => r,
            WsError::InvalidUtf8("close reason") => "invalid UTF-8 in close reason",
            WsError::InvalidUtf8(_) => "invalid UTF-8 in text message",
            WsError::Inflate => "corrupt compressed message",
            WsError::TooLarge { .. } => "message too large",
        }
    }
}

impl From<WsError> for ProtocolError {
    fn from(e: WsError) -> Self {
        match e {
            WsError::TooLarge { len, max } => ProtocolError::TooLarge { len, max },
            e => ProtocolError::Malformed { protocol: "websocket", reason: e.reason() },
        }
    }
}
