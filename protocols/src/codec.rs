//! The protocol contract shared by every parser.

/// What [`Decoder::input`] learned from the unparsed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The length of the next packet is not known yet: wait for more bytes.
    Need,
    /// The next packet is exactly this many bytes long (it may not have fully arrived yet).
    Packet(usize),
}

/// What kind of message a packet carried (WebSocket distinguishes text and binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Text (UTF-8 for WebSocket; lines for `text://`).
    Text,
    /// Binary data (the kind of raw `tcp://` and `frame://` messages).
    Binary,
    /// A protocol handshake request (the WebSocket upgrade request head) that the engine
    /// answers before any message flows.
    Handshake,
    /// A WebSocket ping: received (only when the application asked to see pings) or sent
    /// (a server heartbeat). The data is the ping payload (at most 125 bytes).
    Ping,
    /// A WebSocket pong, received (only when asked for) or sent unsolicited.
    Pong,
    /// A WebSocket close frame. The data is the raw close payload: empty, or a 2-byte
    /// big-endian status code followed by a UTF-8 reason.
    Close,
}

/// One decoded message, borrowed from the receive buffer or the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The payload.
    pub data: &'a [u8],
    /// Its kind.
    pub kind: MessageKind,
}

impl<'a> Message<'a> {
    /// A binary message.
    pub fn binary(data: &'a [u8]) -> Message<'a> {
        Message { data, kind: MessageKind::Binary }
    }
    /// A text message.
    pub fn text(data: &'a [u8]) -> Message<'a> {
        Message { data, kind: MessageKind::Text }
    }
}

impl std::ops::Deref for Message<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Message<'_> {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.data == other
    }
}

impl PartialEq<[u8]> for Message<'_> {
    fn eq(&self, other: &[u8]) -> bool {
        self.data == other
    }
}

impl AsRef<[u8]> for Message<'_> {
    fn as_ref(&self) -> &[u8] {
        self.data
    }
}

/// What a decoder wants sent on its own behalf (see [`Decoder::poll_reply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to send.
    None,
    /// Send the bytes written to `out`.
    Send,
    /// Send them, then close the connection gracefully (WebSocket close echo).
    SendThenClose,
}

/// Why a protocol rejected the bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The packet (or the bytes buffered while waiting for its end) exceeds `max_package_size`.
    #[error("packet of {len} bytes exceeds max_package_size {max}")]
    TooLarge {
        /// Length announced by the packet, or bytes buffered without finding its end.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The bytes do not follow the protocol.
    #[error("malformed {protocol} packet: {reason}")]
    Malformed {
        /// Name of the protocol that rejected the bytes.
        protocol: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// A packet started arriving but was not complete within the worker's packet timeout
    /// (an HTTP request head or body sent too slowly: the engine answers 408).
    #[error("packet not completed within {0:?}")]
    Timeout(std::time::Duration),
}

/// Per-connection receive-side state of one protocol.
///
/// The engine creates one decoder per connection with [`Protocol::decoder`], so a decoder may
/// keep state between packets (scan offsets, handshake progress, fragment reassembly).
pub trait Decoder: Send {
    /// Examines the unparsed bytes, which always start at a packet boundary.
    ///
    /// Returns [`Input::Need`] while the packet length is unknown, [`Input::Packet`] once it
    /// is, or an error to reject the connection. `max` is the connection's
    /// `max_package_size`; announcing a longer packet must be an error.
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError>;

    /// Turns one complete packet (exactly the length `input` announced) into the message for
    /// `on_message`. The packet may be modified in place (unmasking); the message may borrow
    /// from the packet or from the decoder (reassembled fragments). `Ok(None)` means the
    /// packet carried no message for the application (a control frame, a fragment).
    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError>;

    /// Applies per-connection settings chosen by the engine after the decoder was created
    /// (for example which WebSocket control frames the application wants to see).
    fn configure(&mut self, cfg: &dyn std::any::Any) {
        let _ = cfg;
    }

    /// Longest packet `input` may announce when the connection's `max_package_size` is
    /// `max`. The default is `max` itself (the whole packet counts, as in Workerman); a
    /// protocol that applies `max` to the payload (WebSocket) adds its framing overhead.
    fn packet_limit(&self, max: usize) -> usize {
        max
    }

    /// Bytes the protocol must send by itself (a pong, a close echo, an interim response),
    /// appended to `out`. Polled after each `decode`, and also after a feed that left a
    /// packet incomplete (where HTTP's `100 Continue` comes from).
    fn poll_reply(&mut self, out: &mut Vec<u8>) -> Reply {
        let _ = out;
        Reply::None
    }

    /// Bytes to send before the connection is closed because of `err` (an HTTP 400, a
    /// WebSocket close frame), appended to `out`.
    fn error_reply(&mut self, err: &ProtocolError, out: &mut Vec<u8>) {
        let _ = (err, out);
    }
}

/// Per-connection send-side state of one protocol.
///
/// Kept apart from [`Decoder`] so `send()` can encode while a message is being delivered.
pub trait Encoder: Send {
    /// Appends the wire form of `payload`, sent as a message of `kind`, to `out`. Protocols
    /// without message kinds ignore it.
    fn encode(&mut self, payload: &[u8], kind: MessageKind, out: &mut Vec<u8>);

    /// Applies per-connection settings negotiated after the encoder was created (for
    /// example WebSocket compression parameters from the handshake).
    fn configure(&mut self, cfg: &dyn std::any::Any) {
        let _ = cfg;
    }

    /// True when `encode` copies the payload unchanged, so callers may skip it.
    fn is_identity(&self) -> bool {
        false
    }

    /// Bytes `encode` adds around a payload of `len` bytes, so callers can reserve exactly.
    fn overhead(&self, len: usize) -> usize {
        let _ = len;
        16
    }
}

/// A protocol: a name plus factories of per-connection decoders and encoders.
///
/// Implement it to plug your own protocol into a `Worker`:
///
/// ```
/// use ringman_protocols::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError};
/// /// One-byte length prefix.
/// struct Tiny;
/// struct TinyCodec;
/// impl Decoder for TinyCodec {
///     fn input(&mut self, buf: &[u8], _max: usize) -> Result<Input, ProtocolError> {
///         Ok(buf.first().map_or(Input::Need, |&n| Input::Packet(1 + n as usize)))
///     }
///     fn decode<'a>(&'a mut self, p: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
///         Ok(Some(Message::binary(&p[1..])))
///     }
/// }
/// impl Encoder for TinyCodec {
///     fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
///         out.push(payload.len() as u8);
///         out.extend_from_slice(payload);
///     }
/// }
/// impl Protocol for Tiny {
///     fn name(&self) -> &'static str { "tiny" }
///     fn decoder(&self) -> Box<dyn Decoder> { Box::new(TinyCodec) }
///     fn encoder(&self) -> Box<dyn Encoder> { Box::new(TinyCodec) }
/// }
/// ```
pub trait Protocol: Send + Sync + 'static {
    /// Short name, shown in status output (`text`, `frame`, `tcp`, ...).
    fn name(&self) -> &'static str;
    /// A fresh decoder for a new connection.
    fn decoder(&self) -> Box<dyn Decoder>;
    /// A fresh encoder for a new connection.
    fn encoder(&self) -> Box<dyn Encoder>;

    /// How long a connection may stay silent, with nothing in flight, before the engine
    /// closes it quietly, unless the worker sets its own `idle_timeout`. HTTP: 60 s
    /// (the keep-alive timeout). Default: none.
    fn idle_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// How long a packet that started arriving may take to complete before the protocol's
    /// timeout reply is sent and the connection ends, unless the worker sets its own
    /// `packet_timeout`. HTTP: 30 s (the header and body timeout). Default: none.
    fn packet_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether the protocol can ping its peer once a connection is upgraded
    /// ([`MessageKind::Ping`] frames), so a heartbeat applies (WebSocket). Default: no.
    fn supports_ping(&self) -> bool {
        false
    }

    /// The concrete protocol, for engine glue that needs its settings (WebSocket's
    /// compression switch). `None` unless a protocol opts in.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}
