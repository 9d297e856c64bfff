//! `tcp://`: no framing; every receive is delivered as it arrived.

use crate::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError};

/// Raw bytes: each chunk the kernel hands over becomes one message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Raw;

/// Per-connection state of [`Raw`] (none is needed).
#[derive(Debug, Default)]
pub struct RawCodec;

impl Protocol for Raw {
    fn name(&self) -> &'static str {
        "tcp"
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(RawCodec)
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(RawCodec)
    }
}

impl Decoder for RawCodec {
    fn input(&mut self, buf: &[u8], _max: usize) -> Result<Input, ProtocolError> {
        Ok(if buf.is_empty() { Input::Need } else { Input::Packet(buf.len()) })
    }
    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        Ok(Some(Message::binary(packet)))
    }
}

impl Encoder for RawCodec {
    fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
        out.extend_from_slice(payload);
    }
    fn overhead(&self, _len: usize) -> usize {
        0
    }
    fn is_identity(&self) -> bool {
        true
    }
}
