// Shared driver: the first byte picks split points, the rest is the stream. Checks that any
// split yields the same messages as feeding the stream whole, that it errors exactly when the
// whole feed does, and that nothing panics.
use ringman_protocols::{Decoder, Delivery, Flow, Framer, Protocol, ProtocolError};

/// Feeds `chunks` as the engine does when delivery is paused mid-batch: the sink answers
/// `Flow::Stop` after every `every`-th message, the chunk that arrives while stopped is only
/// buffered (`Framer::push`), then `Framer::drain` resumes delivery (up to the next stop);
/// after the last chunk it drains until nothing stops. Returns the messages as `keep` maps
/// them and the error it ended in, if any.
#[allow(dead_code)]
pub fn run_with_stops<T>(
    dec: &mut dyn Decoder,
    chunks: &[&[u8]],
    max: usize,
    every: usize,
    mut keep: impl FnMut(Delivery<'_>) -> Option<T>,
) -> (Vec<T>, Option<ProtocolError>) {
    let mut framer = Framer::new();
    let mut out = Vec::new();
    let mut n = 0usize;
    let mut sink = |d: Delivery<'_>| {
        let Some(t) = keep(d) else { return Flow::Continue };
        out.push(t);
        n += 1;
        if n.is_multiple_of(every) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    let mut stopped = false;
    for c in chunks {
        let r = if stopped {
            framer.push(c);
            framer.drain(dec, max, &mut sink)
        } else {
            framer.feed(dec, &mut c.to_vec(), max, &mut sink)
        };
        match r {
            Ok(flow) => stopped = flow == Flow::Stop,
            Err(e) => return (out, Some(e)),
        }
    }
    while stopped {
        match framer.drain(dec, max, &mut sink) {
            Ok(flow) => stopped = flow == Flow::Stop,
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

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

#[allow(dead_code)]
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
    // Stopping delivery (a pause) after every few messages, with the input choosing how
    // many, and draining on resume changes nothing either.
    let every = 1 + (stream.first().copied().unwrap_or(0) as usize % 4);
    let keep = |d: Delivery<'_>| match d {
        Delivery::Message(m) => Some(m.to_vec()),
        Delivery::Reply(..) => None,
    };
    let stopped = run_with_stops(p.decoder().as_mut(), &chunks, max, every, keep);
    assert_eq!(whole.1.is_some(), stopped.1.is_some(), "whole {:?} vs stopped {:?}", whole.1, stopped.1);
    assert_eq!(whole.0, stopped.0);
}
