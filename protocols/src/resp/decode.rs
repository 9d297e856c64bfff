//! The packet scanner: finds where the next complete RESP value ends.

use super::lex::{self, Agg, Elem, Step};
use super::{RespError, MAX_DEPTH};
use crate::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError};

/// RESP2 and RESP3, as a Redis client receives them: each packet is one complete reply (an
/// attribute together with the value it annotates counts as one).
#[derive(Debug, Default, Clone, Copy)]
pub struct Resp;

impl Protocol for Resp {
    fn name(&self) -> &'static str {
        "resp"
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(RespCodec::new())
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(RespCodec::new())
    }
}

/// Per-connection state of [`Resp`].
///
/// The decoder walks the elements of a reply iteratively: a stack holds how many elements
/// each open aggregate still expects, so nesting costs no call stack and is bounded by
/// [`MAX_DEPTH`]. Blob payloads are jumped over by their announced length. When a reply is
/// incomplete, the walk stops at the first incomplete element and resumes there on the next
/// call (the engine hands back the same packet start, with more bytes behind it), so a
/// large reply arriving in many pieces is scanned once, not once per piece.
///
/// `decode` hands the raw reply bytes on unchanged (zero-copy); parse them with
/// [`Value::parse`](super::Value::parse). The encoder sends payloads as they are (build
/// them with [`encode_command`](super::encode_command) or [`Cmd`](super::Cmd)).
#[derive(Debug, Default)]
pub struct RespCodec {
    /// Offset of the first element not walked yet; 0 with an empty stack means a fresh reply.
    pos: usize,
    /// Bytes of that element's header line already searched for its end.
    hint: usize,
    /// Elements still expected by each open level; the bottom entry is the reply itself.
    stack: Vec<usize>,
}

impl RespCodec {
    /// A decoder at a reply boundary.
    pub fn new() -> Self {
        RespCodec::default()
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.hint = 0;
        self.stack.clear();
    }

    /// Walks elements from `self.pos`; `Some(len)` once the reply is complete.
    fn walk(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
        loop {
            let (elem, n) = match lex::element(&buf[self.pos..], self.hint)? {
                Step::Need { scanned, want } => {
                    self.hint = scanned;
                    if let Some(len) = want.map(|w| self.pos.saturating_add(w)).filter(|&len| len > max) {
                        return Err(ProtocolError::TooLarge { len, max });
                    }
                    if buf.len() > max {
                        return Err(ProtocolError::TooLarge { len: buf.len(), max });
                    }
                    return Ok(None);
                }
                Step::Done(elem, n) => (elem, n),
            };
            self.pos += n;
            self.hint = 0;
            match elem {
                Elem::Agg(kind, count) => {
                    // The elements of this aggregate sit one level deeper than it.
                    if self.stack.len() > MAX_DEPTH {
                        return Err(RespError::TooDeep.into());
                    }
                    let count = match kind {
                        Agg::Map | Agg::Attribute => count.saturating_mul(2),
                        _ => count,
                    };
                    // Every element takes at least 3 bytes ("+\r\n"): refuse counts no
                    // packet within `max` could hold before waiting for them.
                    let least = self.pos.saturating_add(count.saturating_mul(3));
                    if least > max {
                        return Err(ProtocolError::TooLarge { len: least, max });
                    }
                    if kind != Agg::Attribute {
                        // An attribute takes no slot: the value it annotates follows it.
                        self.consume_one();
                    }
                    if count > 0 {
                        self.stack.push(count);
                    }
                }
                _ => self.consume_one(),
            }
            while self.stack.last() == Some(&0) {
                self.stack.pop();
            }
            if self.stack.is_empty() {
                let len = self.pos;
                self.reset();
                if len > max {
                    return Err(ProtocolError::TooLarge { len, max });
                }
                return Ok(Some(len));
            }
        }
    }

    fn consume_one(&mut self) {
        if let Some(top) = self.stack.last_mut() {
            *top -= 1;
        }
    }
}

impl Decoder for RespCodec {
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError> {
        if self.stack.is_empty() || self.pos > buf.len() {
            // A fresh reply (or bytes that are not the ones walked before: start over).
            self.reset();
            self.stack.push(1);
        }
        match self.walk(buf, max) {
            Ok(Some(len)) => Ok(Input::Packet(len)),
            Ok(None) => Ok(Input::Need),
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        Ok(Some(Message::binary(packet)))
    }
}

impl Encoder for RespCodec {
    fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
        out.extend_from_slice(payload);
    }

    fn is_identity(&self) -> bool {
        true
    }

    fn overhead(&self, _len: usize) -> usize {
        0
    }
}
