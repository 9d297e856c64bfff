//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692): a zero-copy, sans-IO codec.
//!
//! Server flow, as the engine drives it:
//!
//! 1. [`WebSocket`]'s decoder announces the upgrade request head (up to 16 KiB, else 431) and
//!    delivers it as a [`MessageKind::Handshake`](crate::MessageKind::Handshake) message.
//!    An invalid request fails `decode`; [`Decoder::error_reply`](crate::Decoder::error_reply)
//!    then writes the HTTP error (400, or 426 with `Sec-WebSocket-Version: 13`).
//! 2. The engine parses the head with [`HandshakeRequest::parse`], lets the application
//!    accept or refuse it, and sends [`handshake_response`] or [`reject_response`].
//!    The compression in force is [`negotiate_deflate`] of the request (the decoder computes
//!    the same); pass it to the encoder with [`Encoder::configure`](crate::Encoder::configure).
//! 3. Frames flow: see [`WsDecoder`] and [`WsEncoder`].
//!
//! ```
//! use ringman_protocols::{ws, Delivery, Flow, Framer, MessageKind, Protocol, Reply};
//! let proto = ws::WebSocket::new();
//! let (mut dec, mut enc) = (proto.decoder(), proto.encoder());
//! let mut wire = ws::client_handshake_request("h", "/", "dGhlIHNhbXBsZSBub25jZQ==", &[]);
//! let mut client = ws::WsEncoder::client();
//! client.encode(b"hi", MessageKind::Text, &mut wire);
//! let mut framer = Framer::new();
//! let mut got = Vec::new();
//! framer.feed(dec.as_mut(), &mut wire, 1 << 20, |d| {
//!     if let Delivery::Message(m) = d { got.push((m.kind, m.data.to_vec())); }
//!     Flow::Continue
//! }).unwrap();
//! assert_eq!(got[0].0, MessageKind::Handshake);
//! assert_eq!(got[1], (MessageKind::Text, b"hi".to_vec()));
//! # let _ = (&mut enc, Reply::None);
//! # use ringman_protocols::Encoder;
//! ```

mod client;
mod decoder;
mod deflate;
mod encoder;
mod error;
mod frame;
mod handshake;
mod mask;
mod server;
mod utf8;

#[cfg(test)]
mod tests;

pub use client::{
    client_handshake_request, generate_key, validate_response, ClientHandshakeError, HandshakeResponse,
    WebSocketClient, DEFLATE_OFFER,
};
pub use decoder::{ControlFrames, Role, WsDecoder};
pub use deflate::{negotiate_deflate, parse_offer, DeflateParams, Deflater, Inflater};
pub use encoder::{MaskRng, WsEncoder};
pub use error::{close_code, WsError};
pub use frame::{header_len, parse_header, write_close, write_frame, FrameHeader, OpCode};
pub use handshake::{
    accept_key, handshake_response, is_valid_key, reject_response, Accept, HandshakeError, HandshakeRequest, MAX_HEAD,
    WS_GUID,
};
pub use mask::apply_mask;
pub use server::WebSocket;
pub use utf8::{InvalidUtf8, Utf8Validator};
