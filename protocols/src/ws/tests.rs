//! End-to-end tests of the WebSocket codec driven through [`Framer`].

use proptest::prelude::*;

use super::*;
use crate::{Decoder, Delivery, Encoder, Flow, Framer, MessageKind, Protocol, ProtocolError, Reply};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Msg(MessageKind, Vec<u8>),
    Reply(Vec<u8>, Reply),
}

/// Feeds `chunks` through a framer; returns events, the error (if any) and its error_reply.
fn run(dec: &mut dyn Decoder, chunks: &[Vec<u8>], max: usize) -> (Vec<Ev>, Option<(ProtocolError, Vec<u8>)>) {
    let mut f = Framer::new();
    let mut evs = Vec::new();
    for c in chunks {
        let mut c = c.clone();
        let r = f.feed(dec, &mut c, max, |d| {
            evs.push(match d {
                Delivery::Message(m) => Ev::Msg(m.kind, m.data.to_vec()),
                Delivery::Reply(b, r) => Ev::Reply(b.to_vec(), r),
            });
            Flow::Continue
        });
        if let Err(e) = r {
            let mut out = Vec::new();
            dec.error_reply(&e, &mut out);
            return (evs, Some((e, out)));
        }
    }
    (evs, None)
}

fn frame(fin: bool, rsv1: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, fin, rsv1, op, payload, Some(MASK));
    out
}

fn close_code_of(reply: &[u8]) -> u16 {
    let h = parse_header(reply).unwrap().unwrap();
    assert_eq!(h.opcode, OpCode::Close);
    u16::from_be_bytes([reply[h.header_len], reply[h.header_len + 1]])
}

/// Runs frames on an open server connection; returns events and the close code of the failure.
fn server(frames: &[Vec<u8>], deflate: Option<DeflateParams>, max: usize) -> (Vec<Ev>, Option<u16>) {
    let mut d = WsDecoder::server_open(deflate);
    let (evs, err) = run(&mut d, &[frames.concat()], max);
    (evs, err.map(|(_, out)| close_code_of(&out)))
}

fn split(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(data[at..c].to_vec());
        at = c;
    }
    out.push(data[at..].to_vec());
    out
}

#[test]
fn handshake_then_messages_through_framer() {
    let mut wire = client_handshake_request("h", "/x", KEY, &[("Sec-WebSocket-Extensions", DEFLATE_OFFER)]);
    let mut enc = WsEncoder::client_with_key(MASK);
    let params = DeflateParams::default();
    enc.configure(&params);
    enc.encode("héllo".as_bytes(), MessageKind::Text, &mut wire);
    let mut plain = WsEncoder::client_with_key(MASK);
    plain.encode(&[1, 2, 3], MessageKind::Binary, &mut wire);
    let mut dec = WebSocket::new().decoder();
    let (evs, err) = run(dec.as_mut(), &[wire], 1 << 20);
    assert!(err.is_none(), "{err:?}");
    let Ev::Msg(MessageKind::Handshake, head) = &evs[0] else { panic!("{evs:?}") };
    let req = HandshakeRequest::parse(head).unwrap();
    assert_eq!(negotiate_deflate(&req), Some(params));
    assert_eq!(evs[1], Ev::Msg(MessageKind::Text, "héllo".as_bytes().to_vec()));
    assert_eq!(evs[2], Ev::Msg(MessageKind::Binary, vec![1, 2, 3]));
}

#[test]
fn handshake_errors_become_http_replies() {
    let cases: &[(&str, &str)] = &[
        ("POST / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 "),
        ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", "HTTP/1.1 400 "),
        (
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            "HTTP/1.1 426 ",
        ),
    ];
    for (req, want) in cases {
        let mut d = WsDecoder::server(true);
        let (evs, err) = run(&mut d, &[req.as_bytes().to_vec()], 1 << 20);
        assert!(evs.is_empty());
        let (_, out) = err.expect("must fail");
        assert!(out.starts_with(want.as_bytes()), "{req:?} -> {}", String::from_utf8_lossy(&out));
    }
    let (_, err) = run(&mut WsDecoder::server(true), &[b"GET /".to_vec(), vec![b'a'; 20_000]], 1 << 20);
    assert!(err.unwrap().1.starts_with(b"HTTP/1.1 431 "));
    // Rejected as soon as the first bytes cannot be "GET ".
    let (_, err) = run(&mut WsDecoder::server(true), &[b"\x16\x03".to_vec()], 1 << 20);
    assert!(err.unwrap().1.starts_with(b"HTTP/1.1 400 "));
}

#[test]
fn unfragmented_message_is_zero_copy() {
    let mut d = WsDecoder::server_open(None);
    let mut pkt = frame(true, false, OpCode::Binary, b"abcdef");
    let n = match d.input(&pkt, 1024).unwrap() {
        crate::Input::Packet(n) => n,
        other => panic!("{other:?}"),
    };
    let range = pkt.as_ptr_range();
    let m = d.decode(&mut pkt[..n]).unwrap().unwrap();
    assert_eq!(m.data, b"abcdef");
    assert!(range.contains(&m.data.as_ptr()));
}

#[test]
fn fragmented_with_interleaved_ping() {
    let frames = [
        frame(false, false, OpCode::Text, b"he"),
        frame(true, false, OpCode::Ping, b"p"),
        frame(false, false, OpCode::Continuation, b"ll"),
        frame(true, false, OpCode::Pong, b"x"),
        frame(true, false, OpCode::Continuation, b"o"),
    ];
    let (evs, err) = server(&frames, None, 1024);
    assert_eq!(err, None);
    let mut pong = Vec::new();
    write_frame(&mut pong, true, false, OpCode::Pong, b"p", None);
    assert_eq!(evs, [Ev::Reply(pong, Reply::Send), Ev::Msg(MessageKind::Text, b"hello".to_vec())]);
}

#[test]
fn auto_pong_can_be_disabled() {
    let mut d = WsDecoder::server_open(None);
    d.set_auto_pong(false);
    let (evs, err) = run(&mut d, &[frame(true, false, OpCode::Ping, b"p")], 1024);
    assert!(evs.is_empty() && err.is_none());
}

#[test]
fn protocol_violations_close_1002() {
    let unmasked = {
        let mut v = Vec::new();
        write_frame(&mut v, true, false, OpCode::Text, b"x", None);
        v
    };
    let cases: Vec<Vec<Vec<u8>>> = vec![
        vec![unmasked],
        vec![frame(true, false, OpCode::Continuation, b"x")],
        vec![frame(false, false, OpCode::Text, b"x"), frame(true, false, OpCode::Text, b"y")],
        vec![frame(true, true, OpCode::Text, b"x")], // RSV1 without deflate
        vec![vec![0x83, 0x80, 1, 2, 3, 4]],          // reserved opcode
        vec![vec![0xa1, 0x80, 1, 2, 3, 4]],          // RSV2
        vec![vec![0x09, 0x80, 1, 2, 3, 4]],          // fragmented ping
        vec![frame(true, false, OpCode::Ping, &[0; 126])],
        vec![frame(true, false, OpCode::Close, &[3])],
        vec![frame(true, false, OpCode::Close, &1005u16.to_be_bytes())],
        vec![frame(true, false, OpCode::Close, &999u16.to_be_bytes())],
        vec![frame(true, false, OpCode::Close, &1015u16.to_be_bytes())],
        vec![frame(true, false, OpCode::Close, &5000u16.to_be_bytes())],
    ];
    for c in cases {
        let (_, code) = server(&c, None, 1024);
        assert_eq!(code, Some(1002), "{c:?}");
    }
    // RSV1 on a continuation frame, even with deflate negotiated.
    let c = [frame(false, true, OpCode::Text, b"x"), frame(true, true, OpCode::Continuation, b"y")];
    assert_eq!(server(&c, Some(DeflateParams::default()), 1024).1, Some(1002));
}

#[test]
fn invalid_utf8_closes_1007_fast() {
    assert_eq!(server(&[frame(true, false, OpCode::Text, &[0xff])], None, 1024).1, Some(1007));
    // The first fragment already cannot be UTF-8: fail before the message ends.
    let (evs, code) = server(&[frame(false, false, OpCode::Text, &[b'a', 0xc0, 0x80])], None, 1024);
    assert!(evs.is_empty());
    assert_eq!(code, Some(1007));
    // A code point split across fragments is fine.
    let e = "€".as_bytes();
    let frames = [frame(false, false, OpCode::Text, &e[..1]), frame(true, false, OpCode::Continuation, &e[1..])];
    let (evs, code) = server(&frames, None, 1024);
    assert_eq!((evs, code), (vec![Ev::Msg(MessageKind::Text, e.to_vec())], None));
    // ...but not a message ending inside one.
    assert_eq!(server(&[frame(true, false, OpCode::Text, &e[..2])], None, 1024).1, Some(1007));
    // Close reasons too.
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.push(0xff);
    assert_eq!(server(&[frame(true, false, OpCode::Close, &close)], None, 1024).1, Some(1007));
}

#[test]
fn close_is_echoed_then_nothing_more() {
    let mut close = 4001u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    let frames = [frame(true, false, OpCode::Close, &close), frame(true, false, OpCode::Text, b"late")];
    let (evs, code) = server(&frames, None, 1024);
    assert_eq!(code, None);
    assert_eq!(evs.len(), 1);
    let Ev::Reply(b, Reply::SendThenClose) = &evs[0] else { panic!("{evs:?}") };
    assert_eq!(b, &[0x88, 2, 0x0f, 0xa1]);
    // Empty close: answered with 1000.
    let (evs, _) = server(&[frame(true, false, OpCode::Close, b"")], None, 1024);
    assert_eq!(evs, [Ev::Reply(vec![0x88, 2, 0x03, 0xe8], Reply::SendThenClose)]);
}

#[test]
fn size_limit_applies_to_reassembled_message() {
    let frames = [frame(false, false, OpCode::Binary, &[0; 60]), frame(true, false, OpCode::Continuation, &[0; 60])];
    assert_eq!(server(&frames, None, 100).1, Some(1009));
    assert_eq!(server(&frames, None, 1000).1, None);
    // Announced length alone is enough to refuse.
    assert_eq!(server(&[vec![0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]], None, 1 << 20).1, Some(1009));
}

#[test]
fn compressed_messages_and_bomb_guard() {
    let p = DeflateParams::default();
    let mut d = Deflater::new(6, false);
    let mut z = Vec::new();
    d.deflate(&[b'a'; 5000], &mut z);
    // Compressed, split in three fragments.
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let frames = [
        frame(false, true, OpCode::Binary, a),
        frame(false, false, OpCode::Continuation, b),
        frame(true, false, OpCode::Continuation, c),
    ];
    let (evs, code) = server(&frames, Some(p), 1 << 20);
    assert_eq!(code, None);
    assert_eq!(evs, [Ev::Msg(MessageKind::Binary, vec![b'a'; 5000])]);
    // Same message against a 4 KiB limit: inflating stops, close 1009.
    assert_eq!(server(&frames, Some(p), 4096).1, Some(1009));
    // Corrupt data: 1007.
    assert_eq!(server(&[frame(true, true, OpCode::Binary, &[0xff; 8])], Some(p), 1 << 20).1, Some(1007));
}

#[test]
fn server_encoder_frames_and_compresses() {
    let mut e = WsEncoder::server();
    let mut out = Vec::new();
    e.encode(b"hi", MessageKind::Text, &mut out);
    e.encode(b"yo", MessageKind::Binary, &mut out);
    assert_eq!(out, [0x81, 2, b'h', b'i', 0x82, 2, b'y', b'o']);
    assert!(e.overhead(2) >= 2);
    e.configure(&Some(DeflateParams { server_no_context_takeover: true, ..Default::default() }));
    let msg = vec![b'z'; 10_000];
    let mut out = Vec::new();
    e.encode(&msg, MessageKind::Text, &mut out);
    let h = parse_header(&out).unwrap().unwrap();
    assert!(h.rsv1 && h.mask.is_none() && out.len() < 200);
    assert!(out.len() <= msg.len() + e.overhead(msg.len()));
    // A client decoder inflates it back.
    let mut c = WsDecoder::client_open(Some(DeflateParams { server_no_context_takeover: true, ..Default::default() }));
    let (evs, err) = run(&mut c, &[out], 1 << 20);
    assert!(err.is_none());
    assert_eq!(evs, [Ev::Msg(MessageKind::Text, msg)]);
}

#[test]
fn client_round_trip() {
    let req = client_handshake_request("h", "/", KEY, &[]);
    let parsed = HandshakeRequest::parse(&req).unwrap();
    let mut resp = handshake_response(&parsed, &Accept::default());
    let mut srv = WsEncoder::server();
    srv.encode(b"from server", MessageKind::Binary, &mut resp);
    let mut c = WebSocketClient { key: KEY.into(), deflate: true }.decoder();
    let (evs, err) = run(c.as_mut(), &[resp], 1 << 20);
    assert!(err.is_none(), "{err:?}");
    assert!(matches!(&evs[0], Ev::Msg(MessageKind::Handshake, _)));
    assert_eq!(evs[1], Ev::Msg(MessageKind::Binary, b"from server".to_vec()));
    // Masked frames from a server are refused; the client's close reply is masked.
    let (_, err) = run(&mut WsDecoder::client_open(None), &[frame(true, false, OpCode::Text, b"x")], 1024);
    let out = err.unwrap().1;
    assert!(parse_header(&out).unwrap().unwrap().mask.is_some());
    // Wrong accept key fails the client.
    let bad = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
    let (_, err) = run(&mut WsDecoder::client(KEY, false), &[bad.to_vec()], 1024);
    assert!(err.is_some());
}

#[derive(Debug, Clone)]
enum Piece {
    Msg { text: bool, data: Vec<u8>, frags: usize, ping_at: Option<usize> },
    Ping(Vec<u8>),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..400), 1usize..5, proptest::option::of(0usize..5))
            .prop_map(|(text, data, frags, ping_at)| {
                // Text pieces carry valid UTF-8 (mapped from the random bytes).
                let data = if text { String::from_utf8_lossy(&data).into_owned().into_bytes() } else { data };
                Piece::Msg { text, data, frags, ping_at }
            }),
        proptest::collection::vec(any::<u8>(), 0..125).prop_map(Piece::Ping),
    ]
}

/// Wire bytes (masked client frames) and the expected events.
fn build(pieces: &[Piece], deflate: bool) -> (Vec<u8>, Vec<Ev>) {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    let mut z = Deflater::new(6, false);
    let pong = |p: &[u8]| {
        let mut v = Vec::new();
        write_frame(&mut v, true, false, OpCode::Pong, p, None);
        Ev::Reply(v, Reply::Send)
    };
    for p in pieces {
        match p {
            Piece::Ping(data) => {
                wire.extend(frame(true, false, OpCode::Ping, data));
                want.push(pong(data));
            }
            Piece::Msg { text, data, frags, ping_at } => {
                let body = if deflate {
                    let mut v = Vec::new();
                    z.deflate(data, &mut v);
                    v
                } else {
                    data.clone()
                };
                let n = *frags;
                let size = body.len().div_ceil(n).max(1);
                let chunks: Vec<&[u8]> = if body.is_empty() { vec![&[][..]] } else { body.chunks(size).collect() };
                for (i, c) in chunks.iter().enumerate() {
                    let op = if i > 0 {
                        OpCode::Continuation
                    } else if *text {
                        OpCode::Text
                    } else {
                        OpCode::Binary
                    };
                    wire.extend(frame(i + 1 == chunks.len(), deflate && i == 0, op, c));
                    if *ping_at == Some(i) && i + 1 < chunks.len() {
                        wire.extend(frame(true, false, OpCode::Ping, b"mid"));
                        want.push(pong(b"mid"));
                    }
                }
                let kind = if *text { MessageKind::Text } else { MessageKind::Binary };
                want.push(Ev::Msg(kind, data.clone()));
            }
        }
    }
    (wire, want)
}

proptest! {
    #[test]
    fn any_split_same_messages(pieces in proptest::collection::vec(piece(), 0..12), cuts in proptest::collection::vec(any::<usize>(), 0..20), deflate in any::<bool>()) {
        let (wire, want) = build(&pieces, deflate);
        let params = deflate.then(DeflateParams::default);
        let (whole, e1) = run(&mut WsDecoder::server_open(params), std::slice::from_ref(&wire), 1 << 20);
        let (parts, e2) = run(&mut WsDecoder::server_open(params), &split(&wire, &cuts), 1 << 20);
        prop_assert!(e1.is_none(), "{:?}", e1);
        prop_assert!(e2.is_none(), "{:?}", e2);
        prop_assert_eq!(&whole, &want);
        prop_assert_eq!(&parts, &want);
    }

    #[test]
    fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..10), deflate in any::<bool>()) {
        let _ = run(&mut WsDecoder::server_open(deflate.then(DeflateParams::default)), &chunks, 512);
        let _ = run(&mut WsDecoder::server(true), &chunks, 512);
        let _ = run(&mut WsDecoder::client_open(None), &chunks, 512);
    }

    #[test]
    fn handshake_parse_never_panics(head in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(r) = HandshakeRequest::parse(&head) {
            let _ = handshake_response(&r, &Accept { deflate: negotiate_deflate(&r), ..Default::default() });
        }
    }
}

#[test]
fn payload_of_exactly_max_is_accepted_despite_the_header() {
    // 64 KiB payload: the 16-bit length form, 8-byte header with the mask.
    let max = 65_536;
    let (evs, err) = server(&[frame(true, false, OpCode::Binary, &vec![7u8; max])], None, max);
    assert_eq!(err, None);
    assert!(matches!(&evs[..], [Ev::Msg(MessageKind::Binary, d)] if d.len() == max));
    let (_, err) = server(&[frame(true, false, OpCode::Binary, &vec![7u8; max + 1])], None, max);
    assert_eq!(err, Some(close_code::TOO_BIG));
}

#[test]
fn control_frames_are_delivered_when_asked_for() {
    let wire = [
        frame(true, false, OpCode::Ping, b"p"),
        frame(true, false, OpCode::Pong, b"q"),
        frame(true, false, OpCode::Close, &[0x03, 0xe8, b'o', b'k']),
    ];
    // Default: the ping is answered, the pong dropped, the close echoed; no messages.
    let (evs, err) = server(&wire, None, 1 << 20);
    assert_eq!(err, None);
    assert!(evs.iter().all(|e| matches!(e, Ev::Reply(..))), "{evs:?}");
    assert_eq!(evs.len(), 2);
    // With every control kind delivered: no automatic pong, the close still echoed.
    let mut d = WsDecoder::server_open(None);
    d.configure(&ControlFrames { pings: true, pongs: true, close: true });
    let (evs, err) = run(&mut d, &[wire.concat()], 1 << 20);
    assert_eq!(err, None);
    assert_eq!(evs[0], Ev::Msg(MessageKind::Ping, b"p".to_vec()));
    assert_eq!(evs[1], Ev::Msg(MessageKind::Pong, b"q".to_vec()));
    assert_eq!(evs[2], Ev::Msg(MessageKind::Close, vec![0x03, 0xe8, b'o', b'k']));
    assert!(matches!(&evs[3], Ev::Reply(b, Reply::SendThenClose) if close_code_of(b) == 1000));
}

#[test]
fn encoder_writes_control_frames_and_nothing_after_close() {
    let mut enc = WsEncoder::server();
    let mut out = Vec::new();
    enc.encode(b"hb", MessageKind::Ping, &mut out);
    enc.encode(&[0x0f, 0xa0], MessageKind::Close, &mut out);
    enc.encode(b"late", MessageKind::Text, &mut out);
    assert_eq!(out, [0x89, 2, b'h', b'b', 0x88, 2, 0x0f, 0xa0]);
}
