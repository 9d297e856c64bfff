//! Sans-IO, zero-copy frame parsers for ringman.
//!
//! A protocol follows Workerman's `input` / `decode` / `encode` contract:
//!
//! * [`Decoder::input`] looks at the unparsed bytes and answers [`Input::Need`] (wait for more),
//!   [`Input::Packet`] (the next packet is `n` bytes long) or an error (reject: the engine calls
//!   `on_error` and closes that connection).
//! * [`Decoder::decode`] turns one complete packet into the message handed to `on_message`,
//!   borrowing from the packet (zero-copy) whenever it can.
//! * [`Encoder::encode`] appends the wire form of an outgoing message.
//!
//! Nothing here touches a socket: the engine, the load generator and the tests all drive the
//! same code. [`Framer`] holds the one piece of per-connection buffering logic: it parses
//! straight out of the receive buffer and copies only the tail of a packet that spans
//! buffers.
//!
//! ```
//! use ringman_protocols::{Delivery, Framer, Flow, Protocol, Text};
//! let mut codec = Text.decoder();
//! let mut framer = Framer::new();
//! let mut got = Vec::new();
//! let mut wire = *b"hel";
//! let mut sink = |d: Delivery| {
//!     if let Delivery::Message(m) = d { got.push(m.data.to_vec()); }
//!     Flow::Continue
//! };
//! framer.feed(codec.as_mut(), &mut wire, 1 << 20, &mut sink).unwrap();
//! let mut wire = *b"lo\r\nworld\n";
//! framer.feed(codec.as_mut(), &mut wire, 1 << 20, &mut sink).unwrap();
//! assert_eq!(got, vec![b"hello".to_vec(), b"world".to_vec()]);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod codec;
mod frame;
mod framer;
pub mod http;
mod raw;
pub mod resp;
mod text;
pub mod ws;

pub use codec::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError, Reply};
pub use frame::{Frame, FrameCodec};
pub use framer::{Delivery, Flow, Framer};
pub use raw::{Raw, RawCodec};
pub use text::{Text, TextCodec};

/// Default largest packet a connection accepts (Workerman's `maxPackageSize`, 10 MiB).
pub const DEFAULT_MAX_PACKAGE_SIZE: usize = 10 * 1024 * 1024;

/// Looks up a built-in protocol by the scheme of a listen address (`tcp`, `text`, `frame`,
/// `http`, `websocket`).
///
/// ```
/// assert_eq!(ringman_protocols::by_scheme("frame").unwrap().name(), "frame");
/// assert!(ringman_protocols::by_scheme("gopher").is_none());
/// ```
pub fn by_scheme(scheme: &str) -> Option<std::sync::Arc<dyn Protocol>> {
    match scheme {
        "tcp" => Some(std::sync::Arc::new(Raw)),
        "text" => Some(std::sync::Arc::new(Text)),
        "frame" => Some(std::sync::Arc::new(Frame)),
        "http" => Some(std::sync::Arc::new(http::Http)),
        "websocket" => Some(std::sync::Arc::new(ws::WebSocket::new())),
        _ => None,
    }
}
