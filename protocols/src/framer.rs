//! Per-connection receive buffering shared by the engine and the load generator.

use crate::{Decoder, Input, Message, ProtocolError, Reply};

/// What the framer hands to its sink.
#[derive(Debug)]
pub enum Delivery<'a> {
    /// A message for the application.
    Message(Message<'a>),
    /// Bytes the protocol sends on its own (pong, close echo, 100 Continue), and whether
    /// to close once they are sent.
    Reply(&'a [u8], Reply),
}

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
    /// The most buffer capacity a framer keeps for reuse once what it held was delivered;
    /// more is given back (see [`Framer::capacity`]).
    pub const RETAIN: usize = 64 * 1024;

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
        F: FnMut(Delivery<'_>) -> Flow,
    {
        if self.buffered() > 0 {
            self.append(data);
            return self.drain(codec, max, sink);
        }
        let limit = codec.packet_limit(max);
        let mut off = 0;
        while off < data.len() {
            let rest = &mut data[off..];
            let n = match codec.input(rest, max)? {
                Input::Need => break,
                Input::Packet(n) => check_len(n, limit, max)?,
            };
            if n > rest.len() {
                self.want = Some(n);
                break;
            }
            off += n;
            if deliver(codec, &mut rest[..n], &mut sink)? == Flow::Stop {
                self.stash(&data[off..]);
                return Ok(Flow::Stop);
            }
        }
        self.stash(&data[off..]);
        if self.want.is_none() && self.buffered() > limit {
            return Err(ProtocolError::TooLarge { len: self.buffered(), max });
        }
        if self.buffered() == 0 {
            return Ok(Flow::Continue);
        }
        Ok(interim(codec, &mut sink))
    }

    /// Drops everything buffered (the connection is being closed) and releases the memory.
    pub fn discard(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
        self.want = None;
    }

    /// Buffers `data` without parsing it (while the connection's receiving is paused).
    pub fn push(&mut self, data: &[u8]) {
        self.stash(data);
    }

    /// Delivers messages already buffered (after a [`Flow::Stop`], when receiving resumes).
    pub fn drain<F>(&mut self, codec: &mut dyn Decoder, max: usize, mut sink: F) -> Result<Flow, ProtocolError>
    where
        F: FnMut(Delivery<'_>) -> Flow,
    {
        let limit = codec.packet_limit(max);
        let mut flow = Flow::Continue;
        while self.buffered() > 0 {
            let n = match self.want {
                Some(n) => n,
                None => match codec.input(&self.buf[self.start..], max)? {
                    Input::Need => break,
                    Input::Packet(n) => check_len(n, limit, max)?,
                },
            };
            if n > self.buffered() {
                self.want = Some(n);
                break;
            }
            self.want = None;
            let at = self.start;
            self.start += n;
            if deliver(codec, &mut self.buf[at..at + n], &mut sink)? == Flow::Stop {
                flow = Flow::Stop;
                break;
            }
        }
        self.release();
        // Stopped by the sink (a pause): what is left may be many complete packets, not one
        // oversized one; it is parsed when delivery resumes.
        if flow == Flow::Stop {
            return Ok(flow);
        }
        if self.want.is_none() && self.buffered() > limit {
            return Err(ProtocolError::TooLarge { len: self.buffered(), max });
        }
        if self.buffered() == 0 {
            return Ok(flow);
        }
        Ok(interim(codec, &mut sink))
    }

    /// Keeps the unparsed tail of a feed.
    fn stash(&mut self, tail: &[u8]) {
        if !tail.is_empty() {
            self.append(tail);
        }
    }

    /// Appends received bytes behind the buffered ones. Bytes already delivered (before
    /// `start`) are never carried along: they are dropped when the buffer is full (moving
    /// the undelivered ones to the front, or into a larger buffer that takes only those)
    /// and whenever they outnumber the undelivered ones. Each move costs at most what was
    /// appended or delivered since the last one, and the buffer holds about twice what is
    /// undelivered at most, however long the stream runs.
    fn append(&mut self, data: &[u8]) {
        let keep = self.buffered() + data.len();
        let cap = self.buf.capacity();
        if self.buf.len() + data.len() > cap {
            // Grow toward the announced length with the data that actually arrived (at most
            // twice it, so copies stay amortised): a header announcing 10 MiB reserves
            // nothing big until the bytes come.
            let target = match self.want {
                Some(n) => n.min(keep.saturating_mul(2).max(GROW_MIN)),
                None => keep.saturating_mul(2).max(GROW_MIN),
            }
            .max(keep);
            if target <= cap || keep <= cap / 2 {
                self.compact();
            } else {
                let mut grown = Vec::with_capacity(target);
                grown.extend_from_slice(&self.buf[self.start..]);
                self.buf = grown;
                self.start = 0;
            }
        } else if self.start >= self.buffered() {
            self.compact();
        }
        self.buf.extend_from_slice(data);
    }

    /// Moves the undelivered bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// After a delivery: forgets what was delivered and gives back memory a large packet
    /// needed once. A buffer of at most [`Framer::RETAIN`] bytes is kept for reuse (so small packets
    /// that span receives allocate nothing); a larger one is freed when it empties and
    /// shrunk when at most a quarter of it is still in use, so every connection does not
    /// keep the peak of its largest packet.
    fn release(&mut self) {
        if self.start == self.buf.len() {
            if self.buf.capacity() > Self::RETAIN {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
            self.start = 0;
        } else if self.buf.capacity() > Self::RETAIN && self.buffered() <= self.buf.capacity() / 4 {
            let mut kept = Vec::with_capacity((self.buffered() * 2).max(GROW_MIN));
            kept.extend_from_slice(&self.buf[self.start..]);
            self.buf = kept;
            self.start = 0;
        }
    }
}

/// The smallest reservation for a partial packet.
const GROW_MIN: usize = 16 * 1024;

/// Decodes one packet, hands its message and then any protocol reply to the sink.
fn deliver<F>(codec: &mut dyn Decoder, packet: &mut [u8], sink: &mut F) -> Result<Flow, ProtocolError>
where
    F: FnMut(Delivery<'_>) -> Flow,
{
    if let Some(msg) = codec.decode(packet)? {
        if sink(Delivery::Message(msg)) == Flow::Stop {
            return Ok(Flow::Stop);
        }
    }
    Ok(interim(codec, sink))
}

std::thread_local! {
    /// Where protocol replies (pongs, close echoes, `100 Continue`) are written: one buffer
    /// per thread instead of one per connection (an idle connection keeps none). Taken out
    /// for one `poll_reply` and the reply's delivery and put back after, so a nested use
    /// finds an empty buffer rather than a borrowed one.
    static REPLY: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Hands the sink what the codec wants sent on its own now, if anything; also asked while a
/// packet is still incomplete (bytes are buffered), as HTTP's `100 Continue` is awaited
/// before the rest arrives.
fn interim<F>(codec: &mut dyn Decoder, sink: &mut F) -> Flow
where
    F: FnMut(Delivery<'_>) -> Flow,
{
    let mut reply = REPLY.take();
    reply.clear();
    let flow = match codec.poll_reply(&mut reply) {
        Reply::None => Flow::Continue,
        r => sink(Delivery::Reply(&reply, r)),
    };
    REPLY.set(reply);
    flow
}

/// `limit` is the codec's [`Decoder::packet_limit`] for `max`; `max` is what errors report.
fn check_len(n: usize, limit: usize, max: usize) -> Result<usize, ProtocolError> {
    if n == 0 {
        return Err(ProtocolError::Malformed { protocol: "codec", reason: "announced a zero-length packet" });
    }
    if n > limit {
        return Err(ProtocolError::TooLarge { len: n, max });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, MessageKind, Protocol, Raw, Text};
    use proptest::prelude::*;

    fn run(p: &dyn Protocol, chunks: &[Vec<u8>], max: usize) -> (Vec<Vec<u8>>, Option<ProtocolError>) {
        let mut codec = p.decoder();
        let mut f = Framer::new();
        let mut out = Vec::new();
        for c in chunks {
            let mut c = c.clone();
            if let Err(e) = f.feed(codec.as_mut(), &mut c, max, |d| {
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

    fn stop_sink(d: Delivery<'_>, out: &mut Vec<Vec<u8>>, every: usize) -> Flow {
        if let Delivery::Message(m) = d {
            out.push(m.to_vec());
        }
        if out.len().is_multiple_of(every) {
            Flow::Stop
        } else {
            Flow::Continue
        }
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
            for m in &msgs { Frame.encoder().encode(m, MessageKind::Binary, &mut wire); }
            let (parts, e) = run(&Frame, &split(&wire, &cuts), 1 << 20);
            prop_assert!(e.is_none());
            prop_assert_eq!(parts, msgs);
        }

        #[test]
        fn memory_follows_received_bytes(chunks in proptest::collection::vec(1usize..5000, 1..40)) {
            // A frame announcing 10 MiB, fed a little at a time: the buffer never holds more
            // than about twice what arrived.
            let mut codec = Frame.decoder();
            let mut f = Framer::new();
            let mut got = 0usize;
            let mut first = true;
            for n in chunks {
                let mut c = vec![7u8; n];
                if first {
                    if n < 4 { continue; }
                    c[..4].copy_from_slice(&(10u32 << 20).to_be_bytes());
                    first = false;
                }
                got += n;
                f.feed(codec.as_mut(), &mut c, 16 << 20, |_| Flow::Continue).unwrap();
                prop_assert!(f.capacity() <= (2 * got).max(GROW_MIN) + 5000, "capacity {} after {} bytes", f.capacity(), got);
            }
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
            for m in &msgs { Frame.encoder().encode(m, MessageKind::Binary, &mut wire); }
            let mut f = Framer::new();
            let mut out: Vec<Vec<u8>> = Vec::new();
            for mut c in split(&wire, &cuts) {
                let mut flow = f.feed(codec.as_mut(), &mut c, 1 << 20, |d| stop_sink(d, &mut out, stop_every)).unwrap();
                while flow == Flow::Stop {
                    flow = f.drain(codec.as_mut(), 1 << 20, |d| stop_sink(d, &mut out, stop_every)).unwrap();
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
    fn interim_reply_while_the_body_is_missing() {
        let mut codec = crate::http::Http.decoder();
        let mut f = Framer::new();
        let mut got = Vec::new();
        let mut sink = |d: Delivery<'_>| {
            got.push(match d {
                Delivery::Message(m) => m.to_vec(),
                Delivery::Reply(b, _) => b.to_vec(),
            });
            Flow::Continue
        };
        let mut head = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".to_vec();
        f.feed(codec.as_mut(), &mut head, 1024, &mut sink).unwrap();
        f.feed(codec.as_mut(), &mut b"h".to_vec(), 1024, &mut sink).unwrap();
        f.feed(codec.as_mut(), &mut b"i".to_vec(), 1024, &mut sink).unwrap();
        assert_eq!(got.len(), 2, "one 100 Continue, then the request");
        assert_eq!(got[0], crate::http::CONTINUE_RESPONSE);
        assert!(got[1].ends_with(b"\r\n\r\nhi"));
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

    /// Lines of 1 B to 40 KB (deterministic), as one long stream.
    fn long_text_stream(lines: usize) -> (Vec<u8>, usize) {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let (mut wire, mut longest) = (Vec::new(), 0);
        for _ in 0..lines {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = 1 + (x % 40_000) as usize;
            longest = longest.max(n + 1);
            wire.extend(std::iter::repeat_n(b'a' + (x % 26) as u8, n));
            wire.push(b'\n');
        }
        (wire, longest)
    }

    #[test]
    fn a_long_stream_does_not_creep() {
        // Packets spanning receives, back to back, so the framer is rarely empty: it must not
        // keep what it already delivered in front of what it still holds.
        let (mut wire, longest) = long_text_stream(400);
        let mut codec = Text.decoder();
        let mut f = Framer::new();
        let (mut lines, mut peak) = (0, 0);
        for c in wire.chunks_mut(8192) {
            f.feed(codec.as_mut(), c, 1 << 20, |d| {
                lines += usize::from(matches!(d, Delivery::Message(_)));
                Flow::Continue
            })
            .unwrap();
            peak = peak.max(f.capacity());
        }
        assert_eq!(lines, 400);
        assert!(peak <= 2 * (longest + 8192), "capacity reached {peak} for lines of at most {longest} bytes");
    }

    #[test]
    fn capacity_is_given_back_once_delivered() {
        // A 1 MB frame, then small ones: the megabyte is not kept.
        let mut codec = Frame.decoder();
        let mut wire = Vec::new();
        Frame.encoder().encode(&vec![7u8; 1_000_000], MessageKind::Binary, &mut wire);
        let mut f = Framer::new();
        for c in wire.chunks_mut(8192) {
            f.feed(codec.as_mut(), c, 1 << 21, |_| Flow::Continue).unwrap();
        }
        assert_eq!(f.buffered(), 0);
        assert!(f.capacity() <= Framer::RETAIN, "{} kept after delivery", f.capacity());
        // A large packet delivered with the start of the next one behind it: shrunk to
        // about what is left.
        let mut wire = Vec::new();
        Frame.encoder().encode(&vec![7u8; 1_000_000], MessageKind::Binary, &mut wire);
        Frame.encoder().encode(&[9u8; 100], MessageKind::Binary, &mut wire);
        wire.truncate(wire.len() - 50);
        for c in wire.chunks_mut(8192) {
            f.feed(codec.as_mut(), c, 1 << 21, |_| Flow::Continue).unwrap();
        }
        assert_eq!(f.buffered(), 54);
        assert!(f.capacity() <= Framer::RETAIN, "{} kept for 54 bytes", f.capacity());
        // Small packets spanning receives reuse the buffer: it stays.
        let mut f = Framer::new();
        let mut wire = Vec::new();
        for _ in 0..100 {
            Frame.encoder().encode(&[1u8; 3000], MessageKind::Binary, &mut wire);
        }
        let mut caps = Vec::new();
        for c in wire.chunks_mut(1000) {
            f.feed(codec.as_mut(), c, 1 << 21, |_| Flow::Continue).unwrap();
            caps.push(f.capacity());
        }
        assert!(caps[10..].iter().all(|&c| c == caps[10] && c > 0), "{caps:?}");
    }

    #[test]
    fn a_paused_backlog_is_released_once_drained() {
        // Bytes pushed while paused, then drained a message at a time.
        let (wire, _) = long_text_stream(100);
        let mut codec = Text.decoder();
        let mut f = Framer::new();
        for c in wire.chunks(8192) {
            f.push(c);
        }
        assert_eq!(f.buffered(), wire.len());
        let mut lines = 0;
        loop {
            let flow = f
                .drain(codec.as_mut(), 1 << 20, |d| {
                    lines += usize::from(matches!(d, Delivery::Message(_)));
                    Flow::Stop
                })
                .unwrap();
            // While draining, the buffer follows what is left.
            assert!(f.capacity() <= (4 * f.buffered()).max(Framer::RETAIN), "{} for {}", f.capacity(), f.buffered());
            if flow == Flow::Continue {
                break;
            }
        }
        assert_eq!(lines, 100);
        assert_eq!(f.buffered(), 0);
        assert!(f.capacity() <= Framer::RETAIN);
    }

    #[test]
    fn spanning_packet_grows_by_doubling() {
        let mut codec = Frame.decoder();
        let mut wire = Vec::new();
        Frame.encoder().encode(&vec![7u8; 1_000_000], MessageKind::Binary, &mut wire);
        let mut f = Framer::new();
        let mut got = 0;
        let (mut grows, mut cap) = (0, 0);
        for c in wire.chunks_mut(4096) {
            f.feed(codec.as_mut(), c, 1 << 21, |d| {
                if let Delivery::Message(m) = d {
                    got = m.len();
                }
                Flow::Continue
            })
            .unwrap();
            if f.capacity() > cap {
                grows += 1;
                cap = f.capacity();
            }
        }
        assert_eq!(got, 1_000_000);
        // 16 KiB doubling to 1 MB: a handful of reallocations, not one per receive.
        assert!(grows <= 8, "{grows} reallocations");
    }
}
