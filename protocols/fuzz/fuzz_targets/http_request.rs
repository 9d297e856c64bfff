#![no_main]
//! HTTP/1.1 decoder through the Framer over arbitrary splits, then `Request::parse` and the
//! helpers on every decoded packet. Checks: no panic; split and whole feeds yield the same
//! requests; every packet the decoder accepts parses as a request, and `Request::from_decoded`
//! (the engine's path) reads it back exactly as `Request::parse` does.
use ringman_protocols::http::{
    boundary_from_content_type, parse_multipart, parse_range, parse_urlencoded, resolve_path, HttpDecoder, Request,
};
use ringman_protocols::{Decoder, Delivery, Flow, Framer};

mod shared;

fn run(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
    let mut dec = HttpDecoder::new();
    let mut framer = Framer::new();
    let mut out = Vec::new();
    for c in chunks {
        let mut c = c.to_vec();
        let r = framer.feed(&mut dec, &mut c, max, |d| {
            if let Delivery::Message(m) = d {
                out.push(m.data.to_vec());
            }
            Flow::Continue
        });
        let _ = dec.pending_continue();
        if let Err(e) = r {
            let mut reply = Vec::new();
            dec.error_reply(&e, &mut reply);
            assert!(reply.starts_with(b"HTTP/1.1 4") || reply.starts_with(b"HTTP/1.1 5"));
            return (out, Some(reply));
        }
    }
    (out, None)
}

fn exercise(req: &Request<'_>) {
    let _ = req.headers().count();
    let _ = req.cookies().count();
    let _ = req.trailers().count();
    let _ = req.keep_alive();
    let _ = resolve_path(req.path());
    if let Some(q) = req.query() {
        let _ = parse_urlencoded(q.as_bytes()).count();
    }
    if let Some(r) = req.header("range") {
        let _ = parse_range(r, req.body().len() as u64);
    }
    let _ = parse_urlencoded(req.body()).count();
    if let Some(b) = req.content_type().and_then(boundary_from_content_type) {
        let _ = parse_multipart(req.body(), b);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let max = 256 + (seed as usize) * 64;
    let step = 1 + (seed as usize % 17);
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    let whole = run(&[stream], max);
    let split = run(&chunks, max);
    // Both feeds error or neither does, with the same messages before the error: a
    // split-dependent accept/reject would be request smuggling.
    assert_eq!(whole.1.is_some(), split.1.is_some(), "whole {:?} vs split {:?}", whole.1, split.1);
    assert_eq!(whole.0, split.0);
    // Stopping delivery (a pause) after every few requests, the input choosing how many,
    // then draining on resume: the same requests, the same outcome.
    let every = 1 + (stream.first().copied().unwrap_or(0) as usize % 4);
    let keep = |d: Delivery<'_>| match d {
        Delivery::Message(m) => Some(m.data.to_vec()),
        Delivery::Reply(..) => None,
    };
    let stopped = shared::run_with_stops(&mut HttpDecoder::new(), &chunks, max, every, keep);
    assert_eq!(whole.1.is_some(), stopped.1.is_some(), "whole {:?} vs stopped {:?}", whole.1, stopped.1);
    assert_eq!(whole.0, stopped.0);
    for m in &whole.0 {
        let req = Request::parse(m).expect("decoder accepted a packet that does not parse");
        assert_eq!(Request::from_decoded(m), Ok(req), "the engine's read-back differs from the full parse");
        exercise(&req);
    }
    // Request::parse and the helpers on raw input too.
    if let Ok(req) = Request::parse(stream) {
        exercise(&req);
    }
    let _ = Request::from_decoded(stream);
    let _ = resolve_path(std::str::from_utf8(stream).unwrap_or("/"));
    let _ = parse_multipart(stream, "b");
});
