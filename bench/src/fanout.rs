//! Push fan-out (`--scenario fanout`): the workload of chat and push gateways.
//!
//! `conns` WebSocket subscribers and one publisher connect to the server. The publisher sends
//! a text message every `1 / rate` seconds (open loop, default [`DEFAULT_RATE`]/s), each
//! stamped with its sequence number and intended send time (`pub:<seq> <ns> ` + padding to
//! `size` bytes). The server sends every message that starts with `pub:` to every connection
//! (ringman: [`ringman::WorkerHandle::broadcast`]; tokio peer: a `tokio::sync::broadcast`
//! channel), so the publisher gets its own messages back too and discards them.
//!
//! The subscribers live on one epoll thread (the caller's, pinned to the client CPU; the
//! publisher thread inherits the pinning). Every delivery is checked against the subscriber's
//! expected sequence number ([`Tally`]): expected = published × subscribers, and missing,
//! duplicated or reordered deliveries are counted, never dropped silently.
//!
//! Figures (as [`LoadResult`]): `messages` = deliveries received inside the window (so msgs/s
//! = deliveries/s and the server's µs/msg = CPU per delivery), `latency` = publish-to-delivery
//! time (from the intended send time) of the messages published inside the window, including
//! deliveries during the drain (`late`), `sent` = expected deliveries, `received` = deliveries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{LoadOpts, Scenario};
use crate::error::LoadError;
use crate::hist::Latency;
use crate::loadgen::{self, now_ns, Edge, LoadResult, DRAIN_TIMEOUT};
use crate::wire;

/// Publisher messages per second when `--rate` is not given.
pub const DEFAULT_RATE: f64 = 200.0;

/// Prefix of a message the server must broadcast.
pub const PREFIX: &[u8] = b"pub:";

/// Deliveries per second the suite's P7 cells aim at: the publish rate is this over the
/// subscriber count (200/s for 1,000 subscribers, 20/s for 10,000).
pub const SUITE_DELIVERIES: f64 = 200_000.0;

/// The suite's P7 workload: `subscribers` subscribers, 64-byte messages.
pub fn suite_opts(subscribers: usize, warmup: Duration, duration: Duration) -> LoadOpts {
    LoadOpts {
        scenario: Scenario::Fanout,
        conns: subscribers,
        size: 64,
        depth: 1,
        duration,
        warmup,
        rate: Some((SUITE_DELIVERIES / subscribers as f64).max(1.0)),
        wire: Default::default(),
    }
}

/// Short description: `fanout 64B c1000 200/s` (`fanout-redis ...` for the Redis variant).
pub fn workload(o: &LoadOpts) -> String {
    let rate = crate::report::thousands(o.rate.unwrap_or(DEFAULT_RATE));
    format!("{} {}B c{} {rate}/s", o.scenario.name(), o.size, o.conns)
}

/// The payload of message `seq`, published (intended) at `stamp_ns`: `pub:<seq> <ns> `,
/// padded with letters to at least `size` bytes.
pub fn stamp(seq: u64, stamp_ns: u64, size: usize) -> Vec<u8> {
    let mut p = format!("pub:{seq} {stamp_ns} ").into_bytes();
    let pad = size.saturating_sub(p.len());
    p.extend((0..pad).map(|i| b'a' + (i % 26) as u8));
    p
}

/// `(seq, stamp_ns)` of a payload built by [`stamp`].
pub fn parse_stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let rest = payload.strip_prefix(PREFIX)?;
    let mut it = rest.splitn(3, |&b| b == b' ');
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let seq = num(it.next()?)?;
    let ns = num(it.next()?)?;
    it.next()?;
    Some((seq, ns))
}

/// One unmasked server frame at the start of `buf`: `(opcode, payload range, frame length)`,
/// or None if incomplete.
pub fn server_frame(buf: &[u8]) -> Result<Option<(u8, std::ops::Range<usize>, usize)>, LoadError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 != 0 {
        return Err(LoadError::Fanout("the server sent a masked frame".into()));
    }
    let (head, len) = match buf[1] & 0x7f {
        126 if buf.len() < 4 => return Ok(None),
        126 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
        127 if buf.len() < 10 => return Ok(None),
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (10, usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX))
        }
        n => (2, n as usize),
    };
    let total = head + len;
    if len > 1 << 20 {
        return Err(LoadError::Fanout(format!("a {len}-byte frame (expected small messages)")));
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((buf[0] & 0x0f, head..total, total)))
}

/// Delivery accounting: every subscriber must get every published message once, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Per subscriber: the next sequence number expected.
    next: Vec<u64>,
    /// Deliveries counted.
    pub delivered: u64,
    /// Sequence numbers skipped (a later message arrived first).
    pub skipped: u64,
    /// Deliveries of a sequence number at or below one already delivered.
    pub stale: u64,
}

impl Tally {
    /// `subscribers` subscribers, nothing delivered.
    pub fn new(subscribers: usize) -> Self {
        Tally { next: vec![0; subscribers], ..Tally::default() }
    }

    /// Records that `sub` got message `seq`.
    pub fn deliver(&mut self, sub: usize, seq: u64) {
        self.delivered += 1;
        let next = &mut self.next[sub];
        if seq < *next {
            self.stale += 1;
        } else {
            self.skipped += seq - *next;
            *next = seq + 1;
        }
    }

    /// Whether every subscriber got messages `0..published`: each reached the last one, and
    /// as many deliveries arrived as expected (a message overtaken by a later one, as through
    /// Redis with two publishing connections, may still be on its way when the last one is
    /// in; a duplicate can make up for a missing one, but both are reported).
    pub fn complete(&self, published: u64) -> bool {
        self.next.iter().all(|&n| n >= published) && self.delivered >= self.expected(published)
    }

    /// Deliveries expected when `published` messages went out.
    pub fn expected(&self, published: u64) -> u64 {
        published * self.next.len() as u64
    }

    /// Deliveries of messages `0..published` that never arrived.
    pub fn missing(&self, published: u64) -> u64 {
        let short: u64 = self.next.iter().map(|&n| published.saturating_sub(n)).sum();
        short + self.skipped
    }
}

/// Subscriber connection state.
struct Sub {
    stream: TcpStream,
    buf: Vec<u8>,
    dead: bool,
}

/// Window edges and counters shared with the accounting loop.
#[derive(Debug, Clone, Copy)]
struct Window {
    start_ns: u64,
    end_ns: u64,
}

impl Window {
    fn contains(&self, ns: u64) -> bool {
        ns >= self.start_ns && ns < self.end_ns
    }
}

/// Runs one fan-out load against `addr`: `opts.conns` subscribers, one publisher at
/// `opts.rate` (default [`DEFAULT_RATE`]) messages/s of `opts.size` bytes.
pub fn run(addr: SocketAddr, opts: &LoadOpts, edge: impl FnMut(Edge)) -> Result<LoadResult, LoadError> {
    run_spread(&[addr], opts, edge)
}

/// [`run`] with the subscribers spread over the servers at `addrs` (subscriber `i` on
/// `addrs[i % len]`) and the publisher on `addrs[0]`: servers that share their messages
/// (through Redis, `fanout-redis`) are loaded as one.
pub fn run_spread(addrs: &[SocketAddr], opts: &LoadOpts, mut edge: impl FnMut(Edge)) -> Result<LoadResult, LoadError> {
    let n = addrs.len();
    assert!(n > 0, "run_spread needs at least one server");
    let mut streams = Vec::with_capacity(opts.conns);
    for (k, &addr) in addrs.iter().enumerate() {
        // Subscribers k, k + n, k + 2n, ... (the order inside `streams` is irrelevant).
        let count = opts.conns / n + usize::from(k < opts.conns % n);
        streams.extend(loadgen::connect_with(addr, Scenario::Ws, count, &wire::ws_handshake_for(opts, addr))?);
    }
    let publisher =
        loadgen::connect_with(addrs[0], Scenario::Ws, 1, &wire::ws_handshake_for(opts, addrs[0]))?.remove(0);
    let rate = opts.rate.unwrap_or(DEFAULT_RATE);
    let period_ns = (1e9 / rate).max(1.0);
    let start = now_ns();
    let win = Window {
        start_ns: start + opts.warmup.as_nanos() as u64,
        end_ns: start + (opts.warmup + opts.duration).as_nanos() as u64,
    };
    let published = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let pub_thread = {
        let (published, stop, done, size) = (published.clone(), stop.clone(), done.clone(), opts.size);
        std::thread::Builder::new()
            .name("fanout-pub".into())
            .spawn(move || {
                let mut s = publisher;
                let r = publish(&mut s, start, win.end_ns, period_ns, size, &published, &stop);
                done.store(true, Ordering::Release);
                // Keep the connection open until the subscribers are drained: closing it (with
                // SO_LINGER 0, an RST) would discard messages the server has not read yet.
                while !stop.load(Ordering::Relaxed) {
                    discard_input(&s, &mut vec![0u8; 4096]);
                    std::thread::sleep(Duration::from_millis(5));
                }
                r
            })
            .map_err(|source| LoadError::Sys { call: "spawn", source })?
    };
    let result = subscribe(streams, opts, win, &published, &done, &mut edge);
    stop.store(true, Ordering::Relaxed);
    let pub_result = pub_thread.join().unwrap_or(Err(LoadError::Fanout("the publisher panicked".into())));
    let r = result?;
    pub_result?;
    Ok(r)
}

/// The publisher: message `k` is due at `start + k * period`; stamps carry the intended time.
fn publish(
    s: &mut TcpStream,
    start: u64,
    end: u64,
    period_ns: f64,
    size: usize,
    published: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), LoadError> {
    s.set_nonblocking(false).map_err(|source| LoadError::Sys { call: "set_nonblocking", source })?;
    let mut frame = Vec::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut seq = 0u64;
    loop {
        let due = start + (seq as f64 * period_ns) as u64;
        if due >= end || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = now_ns();
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        frame.clear();
        wire::ws_client_frame(0x1, &stamp(seq, due, size), [0x21, 0x43, 0x65, 0x87], &mut frame);
        s.write_all(&frame).map_err(|source| LoadError::Sys { call: "publisher write", source })?;
        seq += 1;
        published.store(seq, Ordering::Release);
        // The server broadcasts to the publisher as well: discard what came back.
        discard_input(s, &mut scratch);
    }
}

/// Reads and drops whatever is readable on `s` without blocking.
fn discard_input(s: &TcpStream, scratch: &mut [u8]) {
    loop {
        // SAFETY: valid fd and buffer; MSG_DONTWAIT keeps a blocking socket from blocking.
        let n = unsafe { libc::recv(s.as_raw_fd(), scratch.as_mut_ptr().cast(), scratch.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            return;
        }
    }
}

const EVENTS: usize = 1024;

fn subscribe(
    streams: Vec<TcpStream>,
    opts: &LoadOpts,
    win: Window,
    published: &AtomicU64,
    done: &AtomicBool,
    edge: &mut impl FnMut(Edge),
) -> Result<LoadResult, LoadError> {
    let sys = |call| LoadError::Sys { call, source: std::io::Error::last_os_error() };
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(sys("epoll_create1"));
    }
    // SAFETY: we own `ep`; closed when the guard drops.
    let _guard = EpollFd(ep);
    let mut subs: Vec<Sub> = streams.into_iter().map(|stream| Sub { stream, buf: Vec::new(), dead: false }).collect();
    for (i, s) in subs.iter().enumerate() {
        let mut ev = libc::epoll_event { events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, u64: i as u64 };
        // SAFETY: valid epoll fd, socket fd and event pointer.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.stream.as_raw_fd(), &mut ev) } < 0 {
            return Err(sys("epoll_ctl"));
        }
    }
    let mut tally = Tally::new(subs.len());
    let mut latency = Latency::new();
    let (mut in_window, mut late, mut lost) = (0u64, 0u64, 0usize);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut rbuf = vec![0u8; 256 * 1024];
    let (mut started, mut ended) = (false, false);
    let (mut cpu0, mut cpu1) = (Duration::ZERO, Duration::ZERO);
    let mut next_progress = now_ns() + 1_000_000_000;
    let progress = opts.warmup + opts.duration > loadgen::PROGRESS_AFTER;
    let drain_deadline = win.end_ns + DRAIN_TIMEOUT.as_nanos() as u64;
    let mut drained = false;
    loop {
        let now = now_ns();
        if !started && now >= win.start_ns {
            started = true;
            edge(Edge::Start);
            cpu0 = process_cpu();
        }
        if !ended && now >= win.end_ns {
            ended = true;
            cpu1 = process_cpu();
            edge(Edge::End);
        }
        if progress && now >= next_progress {
            next_progress += 1_000_000_000;
            let p = published.load(Ordering::Acquire);
            edge(Edge::Progress { sent: tally.expected(p), received: tally.delivered });
        }
        if ended {
            // The publisher stops at the window's end; wait for its last message to be counted.
            let finished = done.load(Ordering::Acquire);
            if finished && tally.complete(published.load(Ordering::Acquire)) {
                drained = true;
                break;
            }
            if now >= drain_deadline || subs.iter().all(|s| s.dead) {
                break;
            }
        }
        let next_edge = if !started {
            win.start_ns
        } else if !ended {
            win.end_ns
        } else {
            drain_deadline
        };
        let timeout_ms = (next_edge.saturating_sub(now) / 1_000_000).clamp(1, 100) as i32;
        // SAFETY: valid epoll fd and event buffer of EVENTS entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), EVENTS as i32, timeout_ms) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(sys("epoll_wait"));
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let sub = &mut subs[i];
            if sub.dead {
                continue;
            }
            match sub.stream.read(&mut rbuf) {
                Ok(0) => {
                    sub.dead = true;
                    lost += 1;
                }
                Ok(k) => {
                    // Per read, not per wakeup: draining 1,000 sockets takes a while.
                    let t = now_ns();
                    sub.buf.extend_from_slice(&rbuf[..k]);
                    let mut off = 0;
                    while let Some((op, range, len)) = server_frame(&sub.buf[off..])? {
                        if op <= 0x2 {
                            let payload = &sub.buf[off + range.start..off + range.end];
                            let (seq, stamp_ns) = parse_stamp(payload).ok_or_else(|| {
                                LoadError::Fanout(format!(
                                    "a subscriber got {:?}, not a published message",
                                    wire::preview(payload)
                                ))
                            })?;
                            tally.deliver(i, seq);
                            if started && !ended {
                                in_window += 1;
                            }
                            if win.contains(stamp_ns) {
                                latency.record(t.saturating_sub(stamp_ns));
                                if ended {
                                    late += 1;
                                }
                            }
                        }
                        off += len;
                    }
                    sub.buf.drain(..off);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    sub.dead = true;
                    lost += 1;
                }
            }
            if sub.dead {
                // SAFETY: valid fds; a dead socket leaves the set.
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, sub.stream.as_raw_fd(), std::ptr::null_mut()) };
            }
        }
    }
    let p = published.load(Ordering::Acquire);
    let missing = tally.missing(p);
    if missing > 0 || tally.stale > 0 {
        eprintln!(
            "fanout: {missing} of {} deliveries missing, {} stale or duplicated, {} out of order ({lost} subscribers lost)",
            tally.expected(p),
            tally.stale,
            tally.skipped
        );
    }
    Ok(LoadResult {
        messages: in_window,
        window: Duration::from_nanos(win.end_ns - win.start_ns),
        latency,
        sent: tally.expected(p),
        received: tally.delivered,
        bad_status: 0,
        lost_conns: lost,
        client_cpu: cpu1.saturating_sub(cpu0),
        drained,
        late,
        send_lag: None,
        tls: None,
        wire: None,
    })
}

struct EpollFd(i32);

impl Drop for EpollFd {
    fn drop(&mut self) {
        // SAFETY: we own this fd.
        unsafe { libc::close(self.0) };
    }
}

/// CPU time (user + system) of the whole process: the subscriber loop and the publisher.
fn process_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer; the call only writes `ru`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The ringman fan-out server: a WebSocket worker on one ring thread that broadcasts every
/// message starting with `pub:` to every connection of the worker.
pub fn serve_ringman(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    use ringman::{run_all, Server, Worker, WorkerHandle};
    let mut w = Worker::<Option<WorkerHandle>>::new(addr)?;
    w.count = 1;
    w.name = "bench-fanout".into();
    w.on_worker_start(|info, handle| *handle = Some(info.handle.clone()));
    w.on_message(|_, msg, handle| {
        if let (true, Some(h)) = (msg.data.starts_with(PREFIX), handle.as_ref()) {
            h.broadcast(msg.data.to_vec());
        }
    });
    run_all(Server::new().add(w))?;
    Ok(())
}

/// Channel topic of the `fanout-redis` servers.
pub const REDIS_TOPIC: &str = "ringman-bench-fanout";

/// The `fanout-redis` server: as [`serve_ringman`], but a `pub:` message is published on
/// [`REDIS_TOPIC`] through `Channel::redis(redis_url)`, and the process's one subscriber
/// (on its ring, at worker start) broadcasts what the channel delivers to every connection
/// of the worker. Every process subscribed to the topic delivers every message, whichever
/// process got it from the publisher.
pub fn serve_ringman_redis(addr: &str, redis_url: &str) -> Result<(), Box<dyn std::error::Error>> {
    use ringman::cluster::{Channel, ChannelEvent};
    use ringman::{run_all, Server, Worker};
    let channel = Channel::redis(redis_url);
    let mut w = Worker::<()>::new(addr)?;
    w.count = 1;
    w.name = "bench-fanout-redis".into();
    let ch = channel.clone();
    w.on_worker_start(move |info, _| {
        let h = info.handle.clone();
        let sub = ch.subscribe(REDIS_TOPIC, move |_, ev| match ev {
            ChannelEvent::Message(m) => h.broadcast(m.clone()),
            // Messages published during the outage are lost; the client counts them missing.
            ChannelEvent::Gap { from, to } => {
                eprintln!("fanout-redis: broker connection lost for {:?}", to.duration_since(*from).unwrap_or_default())
            }
        });
        if let Err(e) = sub {
            eprintln!("fanout-redis: subscribe: {e}");
            std::process::exit(1);
        }
    });
    w.on_message(move |_, msg, _| {
        if msg.data.starts_with(PREFIX) {
            if let Err(e) = channel.publish(REDIS_TOPIC, msg.data.to_vec()) {
                eprintln!("fanout-redis: publish: {e}");
            }
        }
    });
    run_all(Server::new().add(w))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let p = stamp(42, 123_456_789, 64);
        assert_eq!(p.len(), 64);
        assert!(p.starts_with(b"pub:42 123456789 "));
        assert_eq!(parse_stamp(&p), Some((42, 123_456_789)));
        // Longer than `size`: not truncated.
        let p = stamp(u64::MAX, u64::MAX, 4);
        assert_eq!(parse_stamp(&p), Some((u64::MAX, u64::MAX)));
        assert_eq!(parse_stamp(b"pub:1 2"), None, "no terminating space");
        assert_eq!(parse_stamp(b"hello"), None);
        assert_eq!(parse_stamp(b"pub:x 2 "), None);
    }

    #[test]
    fn server_frames_split() {
        let mut wire = vec![0x81, 5];
        wire.extend_from_slice(b"hello");
        wire.extend_from_slice(&[0x81, 126, 0, 200]);
        wire.extend(std::iter::repeat_n(b'x', 200));
        let (op, r, len) = server_frame(&wire).unwrap().unwrap();
        assert_eq!((op, &wire[r], len), (1, &b"hello"[..], 7));
        let (_, r, len) = server_frame(&wire[7..]).unwrap().unwrap();
        assert_eq!((r.len(), len), (200, 204));
        assert_eq!(server_frame(&wire[7..100]).unwrap(), None);
        assert_eq!(server_frame(&wire[..1]).unwrap(), None);
        assert!(server_frame(&[0x81, 0x85, 0, 0, 0, 0]).is_err(), "masked server frame");
    }

    #[test]
    fn tally_counts_missing_and_stale() {
        let mut t = Tally::new(3);
        for seq in 0..4 {
            t.deliver(0, seq);
            t.deliver(1, seq);
        }
        // Subscriber 2 misses 1 and gets 0 twice.
        for seq in [0, 0, 2, 3] {
            t.deliver(2, seq);
        }
        assert_eq!(t.expected(4), 12);
        assert_eq!(t.delivered, 12);
        assert_eq!((t.skipped, t.stale), (1, 1));
        assert_eq!(t.missing(4), 1);
        assert!(t.complete(4), "every subscriber reached the last message");
        assert!(!t.complete(5));
        assert_eq!(t.missing(5), 4);
        let clean = {
            let mut t = Tally::new(2);
            (0..3).for_each(|s| (0..2).for_each(|i| t.deliver(i, s)));
            t
        };
        assert_eq!((clean.missing(3), clean.skipped, clean.stale, clean.delivered), (0, 0, 0, 6));
        // Reordered: 2 overtakes 1; the subscriber has the last message before it has all.
        let mut t = Tally::new(1);
        t.deliver(0, 0);
        t.deliver(0, 2);
        assert!(!t.complete(3), "message 1 is still on its way");
        t.deliver(0, 1);
        assert!(t.complete(3));
        assert_eq!((t.skipped, t.stale, t.delivered), (1, 1, 3));
    }

    #[test]
    fn suite_cells_and_target_scheme() {
        let (w, d) = (Duration::from_millis(500), Duration::from_secs(2));
        let o = suite_opts(1000, w, d);
        assert_eq!((o.scenario, o.conns, o.rate), (Scenario::Fanout, 1000, Some(200.0)));
        assert_eq!(suite_opts(10_000, w, d).rate, Some(20.0));
        assert_eq!(workload(&o), "fanout 64B c1000 200/s");
        let t = crate::target::Target::parse("fanout://127.0.0.1:9/live").unwrap();
        assert_eq!((t.scenario, t.path.as_str()), (Scenario::Fanout, "/live"));
    }

    /// The tokio fan-out peer, which feeds the messages queued for a subscriber and flushes
    /// once per batch: every subscriber still gets every message once, in order.
    #[test]
    fn every_subscriber_gets_every_message_from_the_tokio_peer() {
        let Some(peers) = crate::testutil::built_peers("the tokio fan-out peer") else { return };
        let srv = crate::server::ServerProc::start(crate::cli::ServerKind::Tokio, Scenario::Fanout, 0, &peers)
            .unwrap_or_else(|e| panic!("tokio fan-out peer: {e}"));
        // Fast enough that subscribers find several messages queued at once (a batch).
        let opts = LoadOpts {
            scenario: Scenario::Fanout,
            conns: 20,
            size: 40,
            rate: Some(5000.0),
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            ..LoadOpts::default()
        };
        let r = run(srv.addr, &opts, |_| {}).unwrap();
        assert!(r.drained, "{r:?}");
        assert_eq!(r.lost_conns, 0);
        assert!(r.sent >= 20 * 1000, "{r:?}");
        assert_eq!(r.sent, r.received, "every subscriber got every message once");
    }

    /// ~20 subscribers against the ringman engine: every subscriber gets every message.
    #[test]
    fn every_subscriber_gets_every_message_from_ringman() {
        let addr = crate::testutil::on_thread(|a| crate::ringman_server::serve(&format!("fanout://{a}")));
        let opts = LoadOpts {
            scenario: Scenario::Fanout,
            conns: 20,
            size: 40,
            rate: Some(500.0),
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            ..LoadOpts::default()
        };
        let r = run(addr, &opts, |_| {}).unwrap();
        assert!(r.drained, "{r:?}");
        assert_eq!(r.lost_conns, 0);
        assert!(r.sent >= 20 * 100, "{r:?}");
        assert_eq!(r.sent, r.received, "every subscriber got every message once");
        assert!(r.messages > 0 && !r.latency.is_empty());
    }
}
