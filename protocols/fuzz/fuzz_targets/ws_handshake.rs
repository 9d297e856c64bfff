#![no_main]
// WebSocket opening handshake: arbitrary request heads through HandshakeRequest::parse,
// negotiate_deflate and handshake_response, and arbitrary byte streams through the server
// decoder starting in handshake state (split at every byte). Nothing may panic; a rejected
// request must be answered with an HTTP error; an accepted one must yield a response that
// a client accepts.
use ringman_protocols::ws::{
    handshake_response, negotiate_deflate, parse_offer, validate_response, Accept, HandshakeRequest, WsDecoder,
};
use ringman_protocols::{Delivery, Flow, Framer, MessageKind};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_offer(s);
    }
    if let Ok(req) = HandshakeRequest::parse(data) {
        let accept = Accept { deflate: negotiate_deflate(&req), subprotocol: req.protocols.first().map(|p| p.to_string()), ..Default::default() };
        let resp = handshake_response(&req, &accept);
        let ok = validate_response(&resp, req.key).expect("own 101 must validate");
        assert_eq!(ok.deflate.map(|d| d.response_header()), accept.deflate.map(|d| d.response_header()));
    }
    // Whole and byte-by-byte feeds must agree on the handshake and on accept/reject.
    let mut outcomes = Vec::new();
    for step in [data.len().max(1), 1] {
        let mut dec = WsDecoder::server(true);
        let mut framer = Framer::new();
        let mut heads = Vec::new();
        let mut failed = false;
        for c in data.chunks(step) {
            let mut c = c.to_vec();
            let r = framer.feed(&mut dec, &mut c, 1 << 16, |d| {
                if let Delivery::Message(m) = d {
                    if m.kind == MessageKind::Handshake {
                        assert!(HandshakeRequest::parse(m.data).is_ok());
                        heads.push(m.data.to_vec());
                    }
                }
                Flow::Continue
            });
            if let Err(e) = r {
                let mut out = Vec::new();
                ringman_protocols::Decoder::error_reply(&mut dec, &e, &mut out);
                assert!(out.starts_with(b"HTTP/1.1 4") || out.first() == Some(&0x88));
                failed = true;
                break;
            }
        }
        assert!(heads.len() <= 1);
        outcomes.push((heads, failed));
    }
    assert_eq!(outcomes[0], outcomes[1], "whole feed vs byte-by-byte feed");
});
