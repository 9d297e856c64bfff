//! The `ws://` server protocol.

use super::{WsDecoder, WsEncoder};
use crate::{Decoder, Encoder, Protocol};

/// WebSocket server protocol (RFC 6455, with RFC 7692 permessage-deflate).
///
/// Each connection starts in handshake state: the decoder delivers the upgrade request
/// head as a [`MessageKind::Handshake`](crate::MessageKind::Handshake) message; the engine
/// parses it with [`HandshakeRequest::parse`](super::HandshakeRequest::parse), asks the
/// application, sends [`handshake_response`](super::handshake_response) (or
/// [`reject_response`](super::reject_response)) and configures the encoder with
/// [`negotiate_deflate`](super::negotiate_deflate)'s result.
///
/// ```
/// use ringman_protocols::{ws::WebSocket, Protocol};
/// assert_eq!(WebSocket::new().name(), "websocket");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WebSocket {
    /// Negotiate permessage-deflate when the client offers it (default true).
    pub deflate: bool,
    /// Answer pings automatically (default true).
    pub auto_pong: bool,
}

impl WebSocket {
    /// Compression allowed, automatic pongs.
    pub const fn new() -> Self {
        WebSocket { deflate: true, auto_pong: true }
    }

    /// Turns permessage-deflate negotiation on or off.
    pub const fn with_deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }

    /// Turns automatic pongs on or off.
    pub const fn with_auto_pong(mut self, on: bool) -> Self {
        self.auto_pong = on;
        self
    }
}

impl Default for WebSocket {
    fn default() -> Self {
        Self::new()
    }
}

impl Protocol for WebSocket {
    fn name(&self) -> &'static str {
        "websocket"
    }
    fn supports_ping(&self) -> bool {
        true
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        let mut d = WsDecoder::server(self.deflate);
        d.set_auto_pong(self.auto_pong);
        Box::new(d)
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(WsEncoder::server())
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
