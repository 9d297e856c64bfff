#![no_main]
// WebSocket frames on an open connection: the first byte picks the limit, the split step,
// the role and whether permessage-deflate is on; the rest is the stream. Any split must give
// the same messages as the whole stream, messages must respect the limit and text messages
// must be UTF-8; nothing may panic, and error replies must be close frames. The lowest bit
// asks for control frames to be delivered (on_websocket_ping / _pong / _close).
use ringman_protocols::ws::{parse_header, ControlFrames, DeflateParams, OpCode, WsDecoder};
use ringman_protocols::{Decoder, Delivery, Flow, Framer, MessageKind, ProtocolError};

mod shared;

fn decoder(seed: u8) -> WsDecoder {
    let deflate = (seed & 0x40 != 0).then(|| DeflateParams {
        client_no_context_takeover: seed & 0x20 != 0,
        server_no_context_takeover: seed & 0x20 != 0,
        ..Default::default()
    });
    let mut d = if seed & 0x80 != 0 { WsDecoder::client_open(deflate) } else { WsDecoder::server_open(deflate) };
    if seed & 0x01 != 0 {
        d.configure(&ControlFrames { pings: true, pongs: true, close: true });
    }
    d
}

fn run(seed: u8, chunks: &[&[u8]], max: usize) -> (Vec<(MessageKind, Vec<u8>)>, Option<ProtocolError>) {
    let mut dec = decoder(seed);
    let mut framer = Framer::new();
    let mut out = Vec::new();
    for c in chunks {
        let mut c = c.to_vec();
        let r = framer.feed(&mut dec, &mut c, max, |d| {
            if let Delivery::Message(m) = d {
                match m.kind {
                    MessageKind::Ping | MessageKind::Pong | MessageKind::Close => {
                        assert!(seed & 0x01 != 0 && m.data.len() <= 125)
                    }
                    _ => assert!(m.data.len() <= max),
                }
                if m.kind == MessageKind::Text {
                    assert!(std::str::from_utf8(m.data).is_ok());
                }
                out.push((m.kind, m.data.to_vec()));
            }
            Flow::Continue
        });
        if let Err(e) = r {
            let mut reply = Vec::new();
            dec.error_reply(&e, &mut reply);
            let h = parse_header(&reply).unwrap().unwrap();
            assert_eq!(h.opcode, OpCode::Close);
            return (out, Some(e));
        }
    }
    (out, None)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let max = 16 + (seed as usize & 0x1f) * 64;
    let step = 1 + (seed as usize % 7);
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    let whole = run(seed, &[stream], max);
    let split = run(seed, &chunks, max);
    // Both feeds error or neither does, with the same messages before the error: a
    // split-dependent accept/reject would be request smuggling.
    assert_eq!(whole.1.is_some(), split.1.is_some(), "whole {:?} vs split {:?}", whole.1, split.1);
    assert_eq!(whole.0, split.0);
    // Stopping delivery (a pause) after every few messages, the input choosing how many,
    // then draining on resume: the same messages, the same outcome.
    let every = 1 + (stream.first().copied().unwrap_or(0) as usize % 4);
    let keep = |d: Delivery<'_>| match d {
        Delivery::Message(m) => Some((m.kind, m.data.to_vec())),
        Delivery::Reply(..) => None,
    };
    let stopped = shared::run_with_stops(&mut decoder(seed), &chunks, max, every, keep);
    assert_eq!(whole.1.is_some(), stopped.1.is_some(), "whole {:?} vs stopped {:?}", whole.1, stopped.1);
    assert_eq!(whole.0, stopped.0);
});
