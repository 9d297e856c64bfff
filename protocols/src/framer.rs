//! Per-connection receive buffering shared by the engine and the load generator.

use crate::{Decoder, Input, ProtocolError};

/// What the message sink wants after one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Deliver the next message.
    Continue,
    /// Stop delivering (the connection closed or paused); keep the rest buffered.
    Stop,
}

/// Splits a byte stream into messages with as little copying as possible.
///
/// While nothing is buffered, packets are parsed and decoded straight out of the slice handed
/// to [`Framer::feed`] (the kernel's receive buffer, in the engine). Only the bytes of a packet
/// that has not fully arrived are copied into the framer's own buffer; once such a packet is
/// complete it is decoded from there, and parsing returns to the zero-copy path as soon as
/// the buffer empties.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Start of unparsed data in `buf`.
    start: usize,
    /// Length of the packet at `start`, once the codec has announced it.
    want: Option<usize>,
}

impl Framer {
    /// An empty framer; it allocates only when a packet spans two feeds.
    pub const fn new() -> Self {
        Framer { buf: Vec::new(), start: 0, want: None }
    }

    /// Bytes received but not yet delivered.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Heap capacity held by the framer (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Parses `data` (just received) and calls `sink` with each decoded message, in order.
    ///
    /// Returns an error when the codec rejects the stream or a packet exceeds `max`; the
    /// connection must then be closed. Messages delivered before the error stay delivered.
    pub fn feed<F>(
        &mut self,
        codec: &mut dyn Decoder,
        data: &mut [u8],
        max: usize,
        mut sink: F,
    ) -> Result<Flow, ProtocolError>
    where
        F: FnMut(&[u8]) -> Flow,
    {
        if self.buffered() > 0 {
            self.buf.extend_from_slice(data);
            return self.drain(codec, max, sink);
        }
        let mut off = 0;
        while off < data.len() {
            let rest = &mut data[off..];
            let n = match codec.input(rest, max)? {
                Input::Need => break,
                Input::Packet(n) => check_len(n, max)?,
            };
            if n > rest.len() {
                self.want = Some(n);
                break;
            }
            off += n;
            if let Some(msg) = codec.decode(&mut rest[..n])? {
                if sink(msg) == Flow::Stop {
                    self.stash(&data[off..]);
                    return Ok(Flow::Stop);
                }
            }
        }
        self.stash(&data[off..]);
        if self.want.is_none() && self.buffered() > max {
            return Err(ProtocolError::TooLarge { len: self.buffered(), max });
        }
        Ok(Flow::Continue)
    }

    /// Buffers `data` without parsing it (while the connection's receiving is paused).
    pub fn push(&mut self, data: &[u8]) {
        self.stash(data);
    }

    /// Delivers messages already buffered (after a [`Flow::Stop`], when receiving resumes).
    pub fn drain<F>(&mut self, codec: &mut dyn Decoder, max: usize, mut sink: F) -> Result<Flow, ProtocolError>
    where
        F: FnMut(&[u8]) -> Flow,
    {
        let mut flow = Flow::Continue;
        while self.buffered() > 0 {
            let n = match self.want {
                Some(n) => n,
                None => match codec.input(&self.buf[self.start..], max)? {
                    Input::Need => break,
                    Input::Packet(n) => check_len(n, max)?,
                },
            };
            if n > self.buffered() {
                self.want = Some(n);
                break;
            }
            self.want = None;
            let at = self.start;
            self.start += n;
            if let Some(msg) = codec.decode(&mut self.buf[at..at + n])? {
                if sink(msg) == Flow::Stop {
                    flow = Flow::Stop;
                    break;
                }
            }
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.want.is_none() && self.buffered() > max {
            return Err(ProtocolError::TooLarge { len: self.buffered(), max });
        }
        Ok(flow)
    }

    /// Keeps the unparsed tail, compacting first so the buffer does not creep.
    fn stash(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if let Some(n) = self.want {
            // One allocation for the whole packet instead of doubling through it.
            self.buf.reserve(n.saturating_sub(self.buf.len()));
        }
        self.buf.extend_from_slice(tail);
    }
}

fn check_len(n: usize, max: usize) -> Result<usize, ProtocolError> {
    if n == 0 {
        return Err(ProtocolError::Malformed { protocol: "codec", reason: "announced a zero-length packet" });
    }
    if n > max {
        return Err(ProtocolError::TooLarge { len: n, max });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, Protocol, Raw, Text};
    use proptest::prelude::*;

    fn run(p: &dyn Protocol, chunks: &[Vec<u8>], max: usize) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
        let mut codec = p.decoder();
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            let mut c = c.clone();
            if let Err(e) = f.feed(codec.as_mut(), &mut c, max, |m| {
                out.push(m.to_vec());
                Flow::Continue
            }) {
                return (out, Some(e));
            }
        }
        (out, None)
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

    proptest! {
        #[test]
        fn text_any_split_same_messages(lines in proptest::collection::vec("[a-z\r]{0,40}", 0..30), cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
            let mut wire = Vec::new();
            for l in &lines { wire.extend_from_slice(l.as_bytes()); wire.push(b'\n'); }
            let (whole, e1) = run(&Text, &[wire.clone()], 1 << 20);
            let (parts, e2) = run(&Text, &split(&wire, &cuts), 1 << 20);
            prop_assert!(e1.is_none() && e2.is_none());
            prop_assert_eq!(&whole, &parts);
            prop_assert_eq!(whole.len(), lines.len());
        }

        #[test]
        fn frame_any_split_same_messages(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20), cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
            let mut wire = Vec::new();
            for m in &msgs { Frame.encoder().encode(m, &mut wire); }
            let (parts, e) = run(&Frame, &split(&wire, &cuts), 1 << 20);
            prop_assert!(e.is_none());
            prop_assert_eq!(parts, msgs);
        }

        #[test]
        fn raw_any_split_same_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000), cuts in proptest::collection::vec(any::<usize>(), 0..20)) {
            let (parts, e) = run(&Raw, &split(&data, &cuts), 1 << 20);
            prop_assert!(e.is_none());
            prop_assert_eq!(parts.concat(), data);
        }

        #[test]
        fn stop_and_drain_lose_nothing(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..20), cuts in proptest::collection::vec(any::<usize>(), 0..10), stop_every in 1usize..5) {
            let mut codec = Frame.decoder();
            let mut wire = Vec::new();
            for m in &msgs { Frame.encoder().encode(m, &mut wire); }
            let mut f = Framer::new();
            let mut out: Vec<Vec<u8>> = Vec::new();
            for mut c in split(&wire, &cuts) {
                let mut flow = f.feed(codec.as_mut(), &mut c, 1 << 20, |m| { out.push(m.to_vec()); if out.len() % stop_every == 0 { Flow::Stop } else { Flow::Continue } }).unwrap();
                while flow == Flow::Stop {
                    flow = f.drain(codec.as_mut(), 1 << 20, |m| { out.push(m.to_vec()); if out.len() % stop_every == 0 { Flow::Stop } else { Flow::Continue } }).unwrap();
                }
            }
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..10)) {
            let _ = run(&Frame, &chunks, 512);
            let _ = run(&Text, &chunks, 512);
        }
    }

    #[test]
    fn oversized_frame_rejected_before_buffering() {
        let (_, e) = run(&Frame, &[vec![0, 0x10, 0, 0, 1, 2]], 1024);
        assert_eq!(e, Some(ProtocolError::TooLarge { len: 0x100000, max: 1024 }));
    }

    #[test]
    fn endless_text_line_rejected() {
        let chunks: Vec<Vec<u8>> = (0..10).map(|_| vec![b'x'; 200]).collect();
        let (_, e) = run(&Text, &chunks, 1000);
        assert!(matches!(e, Some(ProtocolError::TooLarge { .. })));
    }

    #[test]
    fn spanning_packet_is_copied_once() {
        let mut codec = Frame.decoder();
        let mut wire = Vec::new();
        Frame.encoder().encode(&vec![7u8; 100_000], &mut wire);
        let mut f = Framer::new();
        let mut got = 0;
        for c in wire.chunks_mut(4096) {
            f.feed(codec.as_mut(), c, 1 << 20, |m| {
                got = m.len();
                Flow::Continue
            })
            .unwrap();
            assert!(f.capacity() == 0 || f.capacity() >= 100_004);
        }
        assert_eq!(got, 100_000);
    }
}
