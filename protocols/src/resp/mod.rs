//! RESP2 and RESP3 (the Redis serialization protocol): a sans-IO, zero-copy codec for a
//! Redis client.
//!
//! * [`Resp`] is the [`Protocol`](crate::Protocol) of an outgoing connection to Redis. Its
//!   decoder announces one packet per complete reply, however deeply nested, and delivers
//!   the raw reply bytes as a [`MessageKind::Binary`](crate::MessageKind::Binary) message;
//!   its encoder sends payloads unchanged.
//! * [`Value::parse`] turns one reply into a [`Value`] borrowing from it (or an
//!   [`OwnedValue`] to keep across an `.await`). Error replies carry a [`ServerError`]
//!   split into code and message, with a typed [`ErrorKind`].
//! * [`encode_command`] and [`Cmd`] write commands (arrays of bulk strings), with an
//!   optional key prefix.
//! * [`PubSub::from_value`] recognises pub/sub messages and subscription confirmations,
//!   from RESP2 arrays and RESP3 pushes alike.
//!
//! Every RESP2 type (`+ - : $ *`, with the nulls `$-1` and `*-1`) and RESP3 type
//! (`_ , # ! = ( % ~ > |`) is understood. An attribute (`|`) and the value that follows it
//! form one packet; [`Value::Attributed`] exposes the attributes and every accessor looks
//! through them. Streamed strings and aggregates (`$?`, `*?`, `%?`, ...) are refused with
//! [`RespError::Streamed`]: Redis never sends them. Aggregates may nest [`MAX_DEPTH`] levels;
//! deeper replies are refused rather than risking the stack.
//!
//! ```
//! use ringman_protocols::resp::{Cmd, ErrorKind, Resp, Value};
//! use ringman_protocols::{Delivery, Flow, Framer, Protocol};
//! let mut request = Vec::new();
//! Cmd::new("GET").key("k").encode(&mut request);
//! assert_eq!(request, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
//!
//! // Two replies, the second split across two reads.
//! let mut dec = Resp.decoder();
//! let mut framer = Framer::new();
//! let mut replies = Vec::new();
//! for chunk in [&b"$5\r\nhello\r\n-WRONGTYPE Operation"[..], b" against a key\r\n"] {
//!     framer.feed(dec.as_mut(), &mut chunk.to_vec(), 1 << 20, |d| {
//!         if let Delivery::Message(m) = d {
//!             replies.push(Value::parse(m.data).unwrap().0.to_owned_value());
//!         }
//!         Flow::Continue
//!     }).unwrap();
//! }
//! assert_eq!(replies[0].as_bytes(), Some(&b"hello"[..]));
//! assert_eq!(replies[1].as_error().unwrap().kind(), ErrorKind::WrongType);
//! ```

mod decode;
mod encode;
mod error;
mod lex;
mod pubsub;
mod value;

#[cfg(test)]
mod tests;

pub use decode::{Resp, RespCodec};
pub use encode::{encode_command, Arg, Cmd};
pub use error::RespError;
pub use pubsub::{PubSub, SubscriptionKind};
pub use value::{ErrorKind, OwnedServerError, OwnedValue, ServerError, Value};

/// How deeply aggregates may nest (a top-level array of arrays is 2 levels deep).
pub const MAX_DEPTH: usize = 128;
