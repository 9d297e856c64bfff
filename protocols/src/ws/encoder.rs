//! The send side shared by server and client connections.

use std::any::Any;

use super::deflate::Deflater;
use super::frame::{header_len, write_frame, OpCode};
use super::DeflateParams;
use crate::{Encoder, MessageKind};

/// Per-connection WebSocket encoder: one unfragmented frame per message.
///
/// [`MessageKind::Text`] becomes opcode 0x1, [`MessageKind::Binary`] 0x2 and
/// [`MessageKind::Handshake`] is written raw, without framing (the handshake response).
/// [`MessageKind::Ping`], [`MessageKind::Pong`] and [`MessageKind::Close`] become control
/// frames (payload cut to 125 bytes); after a close frame the encoder writes nothing more
/// (RFC 6455 §5.5.1).
/// Server encoders never mask; client encoders mask every frame with a fresh key (or a
/// fixed one, see [`WsEncoder::client_with_key`]). After
/// [`configure`](Encoder::configure) with [`DeflateParams`], data messages are compressed
/// and sent with RSV1 set.
#[derive(Debug)]
pub struct WsEncoder {
    client: bool,
    fixed_key: Option<[u8; 4]>,
    rng: MaskRng,
    deflater: Option<Deflater>,
    scratch: Vec<u8>,
    /// A close frame was written: nothing may follow it.
    closed: bool,
}

impl WsEncoder {
    /// A server encoder (unmasked frames).
    pub fn server() -> Self {
        WsEncoder {
            client: false,
            fixed_key: None,
            rng: MaskRng::new(),
            deflater: None,
            scratch: Vec::new(),
            closed: false,
        }
    }

    /// A client encoder masking each frame with a fresh pseudo-random key.
    pub fn client() -> Self {
        WsEncoder { client: true, ..Self::server() }
    }

    /// A client encoder masking every frame with `key` (deterministic tests, load generators
    /// that want to skip the random source; RFC 6455 asks for unpredictable keys).
    pub fn client_with_key(key: [u8; 4]) -> Self {
        WsEncoder { client: true, fixed_key: Some(key), ..Self::server() }
    }

    /// Enables (or, with `None`, disables) compression with the negotiated parameters.
    pub fn set_deflate(&mut self, p: Option<DeflateParams>) {
        self.deflater = p.map(|p| {
            let (reset, bits) = if self.client {
                (p.client_no_context_takeover, p.client_max_window_bits)
            } else {
                (p.server_no_context_takeover, p.server_max_window_bits)
            };
            Deflater::with_window_bits(p.level, reset, bits.unwrap_or(15))
        });
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        if !self.client {
            return None;
        }
        Some(self.fixed_key.unwrap_or_else(|| self.rng.key()))
    }

    /// Appends a control frame (ping, pong or close with a raw payload of at most 125 bytes;
    /// longer payloads are truncated).
    pub fn encode_control(&mut self, opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        let m = self.mask();
        write_frame(out, true, false, opcode, &payload[..payload.len().min(125)], m);
    }

    /// Appends a close frame with `code` and `reason` (truncated to fit).
    pub fn encode_close(&mut self, code: u16, reason: &str, out: &mut Vec<u8>) {
        let m = self.mask();
        super::frame::write_close(out, Some(code), reason, m);
    }
}

impl Encoder for WsEncoder {
    fn encode(&mut self, payload: &[u8], kind: MessageKind, out: &mut Vec<u8>) {
        if self.closed {
            // RFC 6455 §5.5.1: nothing may follow our close frame.
            return;
        }
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
            MessageKind::Handshake => {
                out.extend_from_slice(payload);
                return;
            }
            MessageKind::Ping => return self.encode_control(OpCode::Ping, payload, out),
            MessageKind::Pong => return self.encode_control(OpCode::Pong, payload, out),
            MessageKind::Close => {
                self.encode_control(OpCode::Close, payload, out);
                self.closed = true;
                return;
            }
        };
        let m = self.mask();
        match self.deflater.as_mut() {
            Some(d) => {
                let mut z = std::mem::take(&mut self.scratch);
                z.clear();
                d.deflate(payload, &mut z);
                write_frame(out, true, true, opcode, &z, m);
                if z.capacity() <= 64 * 1024 {
                    self.scratch = z;
                }
            }
            None => write_frame(out, true, false, opcode, payload, m),
        }
    }

    /// Accepts [`DeflateParams`] or `Option<DeflateParams>`; anything else is ignored.
    fn configure(&mut self, cfg: &dyn Any) {
        if let Some(p) = cfg.downcast_ref::<DeflateParams>() {
            self.set_deflate(Some(*p));
        } else if let Some(p) = cfg.downcast_ref::<Option<DeflateParams>>() {
            self.set_deflate(*p);
        }
    }

    fn overhead(&self, len: usize) -> usize {
        let head = header_len(len, self.client);
        match self.deflater {
            // Stored blocks add 5 bytes per 64 KiB in the worst case, plus the block start.
            Some(_) => head + 4 + 5 * (len / 16_384 + 1) + 8,
            None => head,
        }
    }
}

/// Xorshift64* masking-key source, seeded from the process's hash randomness.
///
/// Masking keys only need to be unpredictable to third parties on the path (RFC 6455
/// §10.3); this is not a cryptographic generator.
#[derive(Debug, Clone)]
pub struct MaskRng(u64);

impl MaskRng {
    /// A generator with a fresh seed.
    pub fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(&h as *const _ as usize);
        MaskRng(h.finish() | 1)
    }

    /// The next 4-byte key.
    pub fn key(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32).to_ne_bytes()
    }
}

impl Default for MaskRng {
    fn default() -> Self {
        Self::new()
    }
}
