//! `text://`: newline-delimited messages (telnet friendly).

use crate::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError};

/// Newline-delimited text. `decode` strips the trailing `\n` or `\r\n`; `encode` appends `\n`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Text;

/// Per-connection state of [`Text`]: how far the current packet has been scanned, so a
/// packet arriving in many pieces is scanned once, not once per piece.
#[derive(Debug, Default)]
pub struct TextCodec {
    scanned: usize,
}

impl Protocol for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(TextCodec::default())
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(TextCodec::default())
    }
}

impl Decoder for TextCodec {
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError> {
        // `scanned` is only a hint: callers hand back the same packet start until it is
        // decoded, so bytes below it are known to hold no newline.
        let from = self.scanned.min(buf.len());
        match memchr::memchr(b'\n', &buf[from..]) {
            Some(i) => {
                let len = from + i + 1;
                if len > max {
                    return Err(ProtocolError::TooLarge { len, max });
                }
                Ok(Input::Packet(len))
            }
            None => {
                if buf.len() >= max {
                    return Err(ProtocolError::TooLarge { len: buf.len(), max });
                }
                self.scanned = buf.len();
                Ok(Input::Need)
            }
        }
    }

    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        self.scanned = 0;
        let mut end = packet.len();
        if end > 0 && packet[end - 1] == b'\n' {
            end -= 1;
            if end > 0 && packet[end - 1] == b'\r' {
                end -= 1;
            }
        }
        Ok(Some(Message::text(&packet[..end])))
    }
}

impl Encoder for TextCodec {
    fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
        out.reserve(payload.len() + 1);
        out.extend_from_slice(payload);
        out.push(b'\n');
    }

    fn overhead(&self, _len: usize) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_crlf_and_lf() {
        let mut c = TextCodec::default();
        let mut p = *b"abc\r\n";
        assert_eq!(c.input(&p, 100), Ok(Input::Packet(5)));
        assert_eq!(c.decode(&mut p).unwrap().unwrap().data, b"abc");
        let mut p = *b"\n";
        assert_eq!(c.decode(&mut p).unwrap().unwrap().data, b"");
    }

    #[test]
    fn too_long_line_is_rejected() {
        let mut c = TextCodec::default();
        assert!(matches!(c.input(&[b'a'; 10], 10), Err(ProtocolError::TooLarge { .. })));
        assert!(matches!(c.input(b"aaaaaaaaaaaa\n", 10), Err(ProtocolError::TooLarge { .. })));
        assert_eq!(c.input(b"aaaa", 10), Ok(Input::Need));
    }

    #[test]
    fn encode_appends_newline() {
        let mut out = Vec::new();
        TextCodec::default().encode(b"hi", MessageKind::Text, &mut out);
        assert_eq!(out, b"hi\n");
    }
}
