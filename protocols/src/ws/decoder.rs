//! The receive side shared by server and client connections: handshake head, then frames.

use super::deflate::Inflater;
use super::frame::{parse_header, write_close, write_frame, FrameHeader, OpCode};
use super::handshake::{reject_response, HandshakeError, HandshakeRequest, MAX_HEAD};
use super::utf8::{self, Utf8Validator};
use super::{apply_mask, close_code, negotiate_deflate, validate_response, DeflateParams, MaskRng, WsError};
use crate::{Decoder, Input, Message, MessageKind, ProtocolError, Reply};

/// Which end of the connection this decoder serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Server: receives masked frames, sends unmasked ones.
    Server,
    /// Client: receives unmasked frames, sends masked ones; `key` is the
    /// `Sec-WebSocket-Key` it sent (to check the 101 response).
    Client {
        /// The key of the handshake request.
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the request (server) or response (client) head.
    Handshake,
    /// Exchanging frames.
    Open,
    /// A close frame was received and echoed, or the connection failed: ignore the rest.
    Closed,
}

/// A fragmented message being reassembled.
#[derive(Debug, Clone, Copy)]
struct Fragmented {
    kind: MessageKind,
    compressed: bool,
    /// Payload bytes received so far (before inflating).
    wire: usize,
}

/// What one packet produced (the message is borrowed only once the decoder is done).
enum Got {
    Nothing,
    Head,
    /// Unfragmented message: the packet from this offset.
    InPacket(MessageKind, usize),
    /// Reassembled message in `msg`.
    Assembled(MessageKind),
}

/// Per-connection WebSocket decoder (RFC 6455 + RFC 7692), for either role.
///
/// Feed it with [`Framer`](crate::Framer) like any [`Decoder`]. In handshake state it
/// announces the request head as one packet and delivers it as a
/// [`MessageKind::Handshake`] message; then it parses frames:
///
/// * an unfragmented, uncompressed data frame is delivered straight from the (unmasked)
///   packet; fragmented or compressed messages are assembled in the decoder's buffer;
/// * the reassembled (and inflated) size is bounded by `max` (close 1009);
/// * text is UTF-8 checked, incrementally across fragments (close 1007);
/// * pings are answered through [`Decoder::poll_reply`] (unless
///   [`WsDecoder::set_auto_pong`] turned that off); a close frame is echoed with
///   [`Reply::SendThenClose`];
/// * violations end with an error whose [`Decoder::error_reply`] is a close frame
///   (1002/1007/1009) or, during the handshake, an HTTP error response.
#[derive(Debug)]
pub struct WsDecoder {
    role: Role,
    state: State,
    /// Negotiate and accept permessage-deflate.
    allow_deflate: bool,
    inflater: Option<Inflater>,
    auto_pong: bool,
    /// Which control frames are delivered to the application as messages.
    control: ControlFrames,
    /// Header of the packet announced by the last `input`.
    pending: Option<FrameHeader>,
    frag: Option<Fragmented>,
    /// Reassembly / inflate buffer.
    msg: Vec<u8>,
    utf8: Utf8Validator,
    /// Replies not yet polled, and whether to close after them.
    reply: Vec<u8>,
    close_after_reply: bool,
    /// `max` from the last `input` call (bounds inflating in `decode`).
    max: usize,
    /// Handshake scan position (bytes known to hold no `\r\n\r\n`).
    scanned: usize,
    /// The error this decoder reported last (for `error_reply`).
    failure: Option<WsError>,
    /// Parameters negotiated during the handshake.
    negotiated: Option<DeflateParams>,
    rng: MaskRng,
}

/// Which received control frames a [`WsDecoder`] delivers as messages (kinds
/// [`MessageKind::Ping`], [`MessageKind::Pong`], [`MessageKind::Close`]) instead of handling
/// them silently. Pass it to [`Decoder::configure`] (the engine does when the worker has
/// `on_websocket_ping` / `on_websocket_pong` / `on_websocket_close` callbacks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlFrames {
    /// Deliver pings, and stop answering them automatically (the application pongs).
    pub pings: bool,
    /// Deliver pongs.
    pub pongs: bool,
    /// Deliver the peer's close frame (its payload) before the automatic echo.
    pub close: bool,
}

/// Reassembly buffers larger than this are released after their message.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Longest frame header: 2 bytes, a 64-bit extended length and a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;

impl WsDecoder {
    /// A server decoder waiting for the upgrade request; `deflate` allows negotiating
    /// permessage-deflate.
    pub fn server(deflate: bool) -> Self {
        Self::new(Role::Server, State::Handshake, deflate)
    }

    /// A server decoder for a connection whose handshake is already done, with the
    /// negotiated compression (tests, fuzzing, handshakes done elsewhere).
    pub fn server_open(deflate: Option<DeflateParams>) -> Self {
        let mut d = Self::new(Role::Server, State::Open, deflate.is_some());
        d.set_deflate(deflate);
        d
    }

    /// A client decoder waiting for the `101` response to a request sent with `key`;
    /// `deflate` accepts a permessage-deflate answer (if the request offered it).
    pub fn client(key: &str, deflate: bool) -> Self {
        Self::new(Role::Client { key: key.to_owned() }, State::Handshake, deflate)
    }

    /// A client decoder for a connection whose handshake is already done.
    pub fn client_open(deflate: Option<DeflateParams>) -> Self {
        let mut d = Self::new(Role::Client { key: String::new() }, State::Open, deflate.is_some());
        d.set_deflate(deflate);
        d
    }

    fn new(role: Role, state: State, allow_deflate: bool) -> Self {
        WsDecoder {
            role,
            state,
            allow_deflate,
            inflater: None,
            auto_pong: true,
            control: ControlFrames::default(),
            pending: None,
            frag: None,
            msg: Vec::new(),
            utf8: Utf8Validator::default(),
            reply: Vec::new(),
            close_after_reply: false,
            max: usize::MAX,
            scanned: 0,
            failure: None,
            negotiated: None,
            rng: MaskRng::new(),
        }
    }

    /// Turns the automatic pong on or off (on by default). When off, pings are dropped
    /// silently (the engine may answer them itself).
    pub fn set_auto_pong(&mut self, on: bool) {
        self.auto_pong = on;
    }

    /// The compression negotiated during the handshake (in wire terms: `server_*` are the
    /// server's parameters whichever end this is).
    pub fn negotiated(&self) -> Option<DeflateParams> {
        self.negotiated
    }

    /// True once a close frame was received (or the connection failed).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Sets the compression in force.
    fn set_deflate(&mut self, p: Option<DeflateParams>) {
        self.negotiated = p;
        self.inflater = p.map(|p| {
            let peer_resets = match self.role {
                Role::Server => p.client_no_context_takeover,
                Role::Client { .. } => p.server_no_context_takeover,
            };
            Inflater::new(peer_resets)
        });
    }

    fn mask(&mut self) -> Option<[u8; 4]> {
        match self.role {
            Role::Server => None,
            Role::Client { .. } => Some(self.rng.key()),
        }
    }

    fn fail(&mut self, e: WsError) -> ProtocolError {
        self.failure = Some(e.clone());
        e.into()
    }

    fn input_head(&mut self, buf: &[u8]) -> Result<Input, WsError> {
        // Reject early anything that cannot become the expected head.
        let prefix: &[u8] = match self.role {
            Role::Server => b"GET ",
            Role::Client { .. } => b"HTTP/1.1 ",
        };
        let n = buf.len().min(prefix.len());
        if buf[..n] != prefix[..n] {
            return Err(match self.role {
                Role::Server => HandshakeError::NotGet.into(),
                Role::Client { .. } => WsError::Protocol("handshake response is not HTTP/1.1"),
            });
        }
        let from = self.scanned.saturating_sub(3).min(buf.len());
        match memchr::memmem::find(&buf[from..], b"\r\n\r\n") {
            Some(i) if from + i + 4 <= MAX_HEAD => Ok(Input::Packet(from + i + 4)),
            Some(_) => Err(HandshakeError::HeadTooLarge.into()),
            None if buf.len() >= MAX_HEAD => Err(HandshakeError::HeadTooLarge.into()),
            None => {
                self.scanned = buf.len();
                Ok(Input::Need)
            }
        }
    }

    /// Validates a frame header against the connection state; returns the packet length.
    fn check_frame(&self, h: &FrameHeader, max: usize) -> Result<usize, WsError> {
        match (&self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(WsError::Protocol("unmasked client frame")),
            (Role::Client { .. }, true) => return Err(WsError::Protocol("masked server frame")),
            _ => {}
        }
        if h.rsv2 || h.rsv3 {
            return Err(WsError::Protocol("reserved bit set"));
        }
        if h.rsv1 && (self.inflater.is_none() || !matches!(h.opcode, OpCode::Text | OpCode::Binary)) {
            return Err(WsError::Protocol("RSV1 set without permessage-deflate or on a non-initial frame"));
        }
        let so_far = match (h.opcode, &self.frag) {
            (OpCode::Continuation, None) => return Err(WsError::Protocol("continuation without a message")),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(WsError::Protocol("new message before the fragmented one ended"))
            }
            (OpCode::Continuation, Some(f)) => f.wire,
            _ => 0,
        };
        let len = usize::try_from(h.payload_len).unwrap_or(usize::MAX);
        let total = so_far.saturating_add(len);
        if total > max {
            return Err(WsError::TooLarge { len: total, max });
        }
        h.frame_len().ok_or(WsError::TooLarge { len: usize::MAX, max })
    }

    fn decode_head(&mut self, head: &[u8]) -> Result<Got, WsError> {
        self.scanned = 0;
        let params = match &self.role {
            Role::Server => {
                let req = HandshakeRequest::parse(head)?;
                negotiate_deflate(&req).filter(|_| self.allow_deflate)
            }
            Role::Client { key } => {
                let resp = validate_response(head, key).map_err(|e| WsError::Protocol(e.reason()))?;
                resp.deflate.filter(|_| self.allow_deflate)
            }
        };
        self.set_deflate(params);
        self.state = State::Open;
        Ok(Got::Head)
    }

    fn decode_frame(&mut self, packet: &mut [u8]) -> Result<Got, WsError> {
        let h = match self.pending.take() {
            Some(h) => h,
            None => {
                let h = parse_header(packet)?.ok_or(WsError::Protocol("truncated frame"))?;
                self.check_frame(&h, self.max)?;
                h
            }
        };
        if h.frame_len() != Some(packet.len()) {
            return Err(WsError::Protocol("packet does not match the frame length"));
        }
        let payload = &mut packet[h.header_len..];
        if let Some(k) = h.mask {
            apply_mask(payload, k, 0);
        }
        let max = self.max;
        match h.opcode {
            OpCode::Ping if self.control.pings => Ok(Got::InPacket(MessageKind::Ping, h.header_len)),
            OpCode::Ping => {
                if self.auto_pong && !self.close_after_reply {
                    let m = self.mask();
                    write_frame(&mut self.reply, true, false, OpCode::Pong, payload, m);
                }
                Ok(Got::Nothing)
            }
            OpCode::Pong if self.control.pongs => Ok(Got::InPacket(MessageKind::Pong, h.header_len)),
            OpCode::Pong => Ok(Got::Nothing),
            OpCode::Close => {
                let code = match payload.len() {
                    0 => None,
                    1 => return Err(WsError::Protocol("one-byte close payload")),
                    _ => {
                        let c = u16::from_be_bytes([payload[0], payload[1]]);
                        if !close_code::is_valid(c) {
                            return Err(WsError::Protocol("invalid close code"));
                        }
                        if !utf8::is_valid(&payload[2..]) {
                            return Err(WsError::InvalidUtf8("close reason"));
                        }
                        Some(c)
                    }
                };
                let m = self.mask();
                write_close(&mut self.reply, Some(code.unwrap_or(close_code::NORMAL)), "", m);
                self.close_after_reply = true;
                self.state = State::Closed;
                if self.control.close {
                    return Ok(Got::InPacket(MessageKind::Close, h.header_len));
                }
                Ok(Got::Nothing)
            }
            OpCode::Text | OpCode::Binary if h.fin && !h.rsv1 => {
                // The fast path: the whole message is this packet.
                if h.opcode == OpCode::Text && !utf8::is_valid(payload) {
                    return Err(WsError::InvalidUtf8("text message"));
                }
                let kind = if h.opcode == OpCode::Text { MessageKind::Text } else { MessageKind::Binary };
                Ok(Got::InPacket(kind, h.header_len))
            }
            OpCode::Text | OpCode::Binary => {
                self.start_message();
                let kind = if h.opcode == OpCode::Text { MessageKind::Text } else { MessageKind::Binary };
                self.frag = Some(Fragmented { kind, compressed: h.rsv1, wire: 0 });
                self.append(payload, h.fin, max)
            }
            OpCode::Continuation => self.append(payload, h.fin, max),
        }
    }

    fn start_message(&mut self) {
        self.msg.clear();
        if self.msg.capacity() > KEEP_CAPACITY {
            self.msg = Vec::new();
        }
        self.utf8.reset();
    }

    /// Adds one fragment to the message being assembled; delivers it after the last one.
    fn append(&mut self, payload: &[u8], fin: bool, max: usize) -> Result<Got, WsError> {
        let Some(f) = self.frag.as_mut() else {
            return Err(WsError::Protocol("continuation without a message"));
        };
        f.wire += payload.len();
        let (kind, compressed) = (f.kind, f.compressed);
        if compressed {
            let inf = self.inflater.as_mut().ok_or(WsError::Protocol("RSV1 without permessage-deflate"))?;
            inf.inflate(payload, fin, &mut self.msg, max)?;
        } else {
            if self.msg.len() + payload.len() > max {
                return Err(WsError::TooLarge { len: self.msg.len() + payload.len(), max });
            }
            self.msg.extend_from_slice(payload);
        }
        if kind == MessageKind::Text {
            let ok = if fin { self.utf8.finish(&self.msg) } else { self.utf8.check(&self.msg) };
            ok.map_err(|_| WsError::InvalidUtf8("text message"))?;
        }
        if !fin {
            return Ok(Got::Nothing);
        }
        self.frag = None;
        Ok(Got::Assembled(kind))
    }
}

impl Decoder for WsDecoder {
    fn input(&mut self, buf: &[u8], max: usize) -> Result<Input, ProtocolError> {
        self.max = max;
        match self.state {
            State::Handshake => self.input_head(buf).map_err(|e| self.fail(e)),
            // After a close frame nothing more is delivered: swallow whatever follows.
            State::Closed => Ok(Input::Packet(buf.len().min(max).max(1))),
            State::Open => {
                let h = match parse_header(buf) {
                    Ok(Some(h)) => h,
                    Ok(None) => return Ok(Input::Need),
                    Err(e) => return Err(self.fail(e)),
                };
                let n = self.check_frame(&h, max).map_err(|e| self.fail(e))?;
                self.pending = Some(h);
                Ok(Input::Packet(n))
            }
        }
    }

    /// Accepts [`ControlFrames`]; anything else is ignored.
    fn configure(&mut self, cfg: &dyn std::any::Any) {
        if let Some(c) = cfg.downcast_ref::<ControlFrames>() {
            self.control = *c;
        }
    }

    fn packet_limit(&self, max: usize) -> usize {
        // `max` bounds the (reassembled) payload, checked in `check_frame`; the frame header
        // (at most 14 bytes) comes on top, and the handshake head has its own 16 KiB bound.
        max.saturating_add(MAX_FRAME_HEADER).max(MAX_HEAD)
    }

    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        let got = match self.state {
            State::Closed => return Ok(None),
            State::Handshake => self.decode_head(packet),
            State::Open => self.decode_frame(packet),
        };
        match got {
            Err(e) => Err(self.fail(e)),
            Ok(Got::Nothing) => Ok(None),
            Ok(Got::Head) => Ok(Some(Message { data: packet, kind: MessageKind::Handshake })),
            Ok(Got::InPacket(kind, at)) => Ok(Some(Message { data: &packet[at..], kind })),
            Ok(Got::Assembled(kind)) => Ok(Some(Message { data: &self.msg, kind })),
        }
    }

    fn poll_reply(&mut self, out: &mut Vec<u8>) -> Reply {
        if self.reply.is_empty() {
            return Reply::None;
        }
        out.extend_from_slice(&self.reply);
        self.reply.clear();
        if self.close_after_reply {
            Reply::SendThenClose
        } else {
            Reply::Send
        }
    }

    fn error_reply(&mut self, err: &ProtocolError, out: &mut Vec<u8>) {
        let failure = self.failure.take();
        match self.state {
            State::Handshake => {
                let status = match (&failure, err) {
                    (_, ProtocolError::Timeout(_)) => 408,
                    (Some(WsError::Handshake(h)), _) => h.status(),
                    (_, ProtocolError::TooLarge { .. }) => 431,
                    _ => 400,
                };
                if matches!(self.role, Role::Server) {
                    out.extend_from_slice(&reject_response(status));
                }
            }
            State::Open => {
                let code = match (&failure, err) {
                    (_, ProtocolError::Timeout(_)) => close_code::POLICY,
                    (Some(f), _) => f.close_code(),
                    (_, ProtocolError::TooLarge { .. }) => close_code::TOO_BIG,
                    _ => close_code::PROTOCOL,
                };
                let m = self.mask();
                write_close(out, Some(code), "", m);
            }
            State::Closed => {}
        }
        self.state = State::Closed;
        self.reply.clear();
    }
}
