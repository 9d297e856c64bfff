// Shared driver: the first byte picks split points, the rest is the stream. Checks that any
// split yields the same messages as feeding the stream whole, that it errors exactly when the
// whole feed does, and that nothing panics.
use ringman_protocols::{Delivery, Flow, Framer, Protocol, ProtocolError};

fn run(p: &dyn Protocol, chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
    let mut dec = p.decoder();
    let mut framer = Framer::new();
    let mut out = Vec::new();
    for c in chunks {
        let mut c = c.to_vec();
        if let Err(e) = framer.feed(dec.as_mut(), &mut c, max, |d| {
            if let Delivery::Message(m) = d {
                out.push(m.to_vec());
            }
            Flow::Continue
        }) {
            return (out, Some(e));
        }
    }
    (out, None)
}

pub fn check(p: &dyn Protocol, data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else { return };
    let max = 64 + (seed as usize) * 16;
    let step = 1 + (seed as usize % 13);
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    let whole = run(p, &[stream], max);
    let split = run(p, &chunks, max);
    // A split must not change what is accepted: both feeds error or neither does, with the
    // same messages delivered before the error (a split-dependent accept/reject is request
    // smuggling).
    assert_eq!(whole.1.is_some(), split.1.is_some(), "whole {:?} vs split {:?}", whole.1, split.1);
    assert_eq!(whole.0, split.0);
}
