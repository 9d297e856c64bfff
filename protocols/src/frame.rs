//! `frame://`: a 4-byte big-endian total length (header included), then the payload.

use crate::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError};

/// Length-prefixed frames: `u32` big-endian total length (including the 4 header bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct Frame;

/// Per-connection state of [`Frame`] (none is needed).
#[derive(Debug, Default)]
pub struct FrameCodec;

/// Size of the length header.
const HEADER: usize = 4;

impl Protocol for Frame {
    fn name(&self) -> &'static str {
        "frame"
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(FrameCodec)
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(FrameCodec)
    }
}

impl Decoder for FrameCodec {
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError> {
        let Some(head) = buf.get(..HEADER) else {
            return Ok(Input::Need);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len < HEADER {
            return Err(ProtocolError::Malformed {
                protocol: "frame",
                reason: "length field smaller than the 4-byte header",
            });
        }
        if len > max {
            return Err(ProtocolError::TooLarge { len, max });
        }
        Ok(Input::Packet(len))
    }

    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        Ok(Some(Message::binary(&packet[HEADER..])))
    }
}

impl Encoder for FrameCodec {
    fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
        let total = u32::try_from(payload.len() + HEADER).expect("frame payload exceeds 4 GiB");
        out.reserve(payload.len() + HEADER);
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(payload);
    }

    fn overhead(&self, _len: usize) -> usize {
        HEADER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut c = FrameCodec;
        let mut out = Vec::new();
        c.encode(b"hello", MessageKind::Binary, &mut out);
        assert_eq!(&out[..4], &9u32.to_be_bytes());
        assert_eq!(c.input(&out[..3], 100), Ok(Input::Need));
        assert_eq!(c.input(&out, 100), Ok(Input::Packet(9)));
        assert_eq!(c.decode(&mut out).unwrap().unwrap().data, b"hello");
    }

    #[test]
    fn bad_lengths() {
        let mut c = FrameCodec;
        assert!(matches!(c.input(&[0, 0, 0, 3], 100), Err(ProtocolError::Malformed { .. })));
        assert!(matches!(c.input(&[0, 0, 1, 0], 100), Err(ProtocolError::TooLarge { len: 256, max: 100 })));
        assert_eq!(c.input(&[0, 0, 0, 4], 100), Ok(Input::Packet(4)));
    }
}
