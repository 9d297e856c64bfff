//! Frame headers (RFC 6455 §5.2): parsing and writing.

use super::{apply_mask, WsError};

/// A frame opcode. Reserved opcodes (0x3-0x7, 0xB-0xF) are rejected by [`parse_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first frame of a text message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Parses the 4-bit wire value; `None` for reserved opcodes.
    pub fn from_bits(b: u8) -> Option<OpCode> {
        Some(match b {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// True for close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header. The payload follows `header_len` bytes after the frame start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of the message.
    pub fin: bool,
    /// RSV1 ("compressed" under permessage-deflate).
    pub rsv1: bool,
    /// RSV2 (no extension here defines it).
    pub rsv2: bool,
    /// RSV3 (no extension here defines it).
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the mask bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub payload_len: u64,
    /// Header length: 2, 4 or 10 bytes, plus 4 with a mask.
    pub header_len: usize,
}

impl FrameHeader {
    /// Header plus payload, or `None` if that does not fit a `usize`.
    pub fn frame_len(&self) -> Option<usize> {
        usize::try_from(self.payload_len).ok()?.checked_add(self.header_len)
    }
}

/// Parses the frame header at the start of `buf`: `Ok(None)` while it is incomplete.
///
/// Checks what needs no connection state: reserved opcodes, control frames longer than 125
/// bytes or fragmented, and 64-bit lengths with the most significant bit set. Non-minimal
/// length encodings are accepted. Masking, reserved bits and fragmentation order depend on
/// the role and the negotiated extensions and are checked by the decoder.
///
/// ```
/// use ringman_protocols::ws::{parse_header, OpCode};
/// let h = parse_header(&[0x81, 0x85, 1, 2, 3, 4]).unwrap().unwrap();
/// assert_eq!((h.fin, h.opcode, h.payload_len, h.header_len), (true, OpCode::Text, 5, 6));
/// assert_eq!(parse_header(&[0x81]).unwrap(), None);
/// ```
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, WsError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        _ => return Ok(None),
    };
    let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(WsError::Protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(WsError::Protocol("fragmented control frame"));
        }
        if len7 > 125 {
            return Err(WsError::Protocol("control frame payload over 125 bytes"));
        }
    }
    let (payload_len, mut header_len) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (u16::from_be_bytes([b[0], b[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0; 8];
                a.copy_from_slice(b);
                let n = u64::from_be_bytes(a);
                if n >> 63 != 0 {
                    return Err(WsError::Protocol("64-bit payload length with the high bit set"));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    let mask = if masked {
        let Some(k) = buf.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        header_len += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        rsv1: b0 & 0x40 != 0,
        rsv2: b0 & 0x20 != 0,
        rsv3: b0 & 0x10 != 0,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// Length of the header [`write_frame`] produces for a payload of `len` bytes.
pub fn header_len(len: usize, masked: bool) -> usize {
    let base = match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    base + if masked { 4 } else { 0 }
}

/// Appends one frame (header, then `payload`, masked with `mask` if given) to `out`.
///
/// ```
/// use ringman_protocols::ws::{write_frame, OpCode};
/// let mut out = Vec::new();
/// write_frame(&mut out, true, false, OpCode::Text, b"hi", None);
/// assert_eq!(out, [0x81, 2, b'h', b'i']);
/// ```
pub fn write_frame(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    out.reserve(header_len(payload.len(), mask.is_some()) + payload.len());
    out.push((fin as u8) << 7 | (rsv1 as u8) << 6 | opcode.bits());
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let start = out.len();
    if let Some(k) = mask {
        out.extend_from_slice(&k);
        out.extend_from_slice(payload);
        apply_mask(&mut out[start + 4..], k, 0);
    } else {
        out.extend_from_slice(payload);
    }
}

/// Appends a close frame carrying `code` and `reason` (truncated to fit 125 bytes at a
/// character boundary); `code: None` writes an empty close frame.
pub fn write_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = Vec::with_capacity(125);
    if let Some(c) = code {
        payload.extend_from_slice(&c.to_be_bytes());
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..end]);
    }
    write_frame(out, true, false, OpCode::Close, &payload, mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 100_000] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let payload = vec![0xabu8; len];
                let mut out = Vec::new();
                write_frame(&mut out, true, false, OpCode::Binary, &payload, mask);
                let h = parse_header(&out).unwrap().unwrap();
                assert_eq!(h.payload_len as usize, len);
                assert_eq!(h.header_len, header_len(len, mask.is_some()));
                assert_eq!(h.frame_len(), Some(out.len()));
                assert_eq!(h.mask, mask);
                for cut in 0..h.header_len {
                    assert_eq!(parse_header(&out[..cut]).unwrap(), None);
                }
            }
        }
    }

    #[test]
    fn non_minimal_lengths_accepted() {
        let h = parse_header(&[0x82, 126, 0, 5]).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (5, 4));
        let h = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0, 5]).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (5, 10));
    }

    #[test]
    fn rejects_what_needs_no_state() {
        assert!(parse_header(&[0x83, 0]).is_err());
        assert!(parse_header(&[0x8b, 0]).is_err());
        assert!(parse_header(&[0x09, 0]).is_err(), "fragmented ping");
        assert!(parse_header(&[0x89, 126, 0, 126]).is_err(), "long ping");
        assert!(parse_header(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn close_reason_truncated_on_char_boundary() {
        let mut out = Vec::new();
        write_close(&mut out, Some(1000), &"é".repeat(100), None);
        let h = parse_header(&out).unwrap().unwrap();
        assert!(h.payload_len <= 125);
        assert!(std::str::from_utf8(&out[h.header_len + 2..]).is_ok());
    }
}
