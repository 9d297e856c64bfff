//! The protocol contract shared by every parser.

/// What [`Codec::input`] learned from the unparsed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The length of the next packet is not known yet: wait for more bytes.
    Need,
    /// The next packet is exactly this many bytes long (it may not have fully arrived yet).
    Packet(usize),
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
    /// `on_message`. The packet may be modified in place (unmasking). `Ok(None)` means the
    /// packet carried no message for the application.
    fn decode<'a>(&mut self, packet: &'a mut [u8]) -> Result<Option<&'a [u8]>, ProtocolError>;
}

/// Per-connection send-side state of one protocol.
///
/// Kept apart from [`Decoder`] so `send()` can encode while a message is being delivered.
pub trait Encoder: Send {
    /// Appends the wire form of `payload` to `out`.
    fn encode(&mut self, payload: &[u8], out: &mut Vec<u8>);

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
/// use ringman_protocols::{Decoder, Encoder, Input, Protocol, ProtocolError};
/// /// One-byte length prefix.
/// struct Tiny;
/// struct TinyCodec;
/// impl Decoder for TinyCodec {
///     fn input(&mut self, buf: &[u8], _max: usize) -> Result<Input, ProtocolError> {
///         Ok(buf.first().map_or(Input::Need, |&n| Input::Packet(1 + n as usize)))
///     }
///     fn decode<'a>(&mut self, p: &'a mut [u8]) -> Result<Option<&'a [u8]>, ProtocolError> {
///         Ok(Some(&p[1..]))
///     }
/// }
/// impl Encoder for TinyCodec {
///     fn encode(&mut self, payload: &[u8], out: &mut Vec<u8>) {
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
}
