//! The load generator: one thread, non-blocking sockets, one level-triggered epoll set.
//!
//! Closed loop keeps `depth` messages in flight on every connection and sends the next one as
//! soon as a response completes. Open loop sends on a constant-rate [`Schedule`] regardless
//! of responses and measures latency from each message's intended send time. Writes are
//! batched: everything queued for a connection during one epoll wakeup goes out in one
//! `write`, and each readable socket is read once per wakeup with a large buffer.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::cli::{LoadOpts, Scenario};
use crate::error::LoadError;
use crate::hist::Latency;
use crate::schedule::Schedule;
use crate::wire::{self, ResponseCounter};

/// Edges of the measured window, reported to the caller so it can sample the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// The measured window starts now.
    Start,
    /// The measured window ends now.
    End,
    /// About once a second on runs longer than [`PROGRESS_AFTER`]: totals so far.
    Progress {
        /// Messages sent so far.
        sent: u64,
        /// Responses received so far.
        received: u64,
    },
}

/// Runs (warmup + window) longer than this report [`Edge::Progress`] every second.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(3);

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Responses completed inside the measured window.
    pub messages: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Latency of the responses completed inside the window.
    pub latency: Latency,
    /// Messages sent during the whole run (warmup, window and drain).
    pub sent: u64,
    /// Responses received during the whole run.
    pub received: u64,
    /// Responses with an error status (http only).
    pub bad_status: u64,
    /// Connections that closed or failed before the end.
    pub lost_conns: usize,
    /// CPU time the load generator used inside the window.
    pub client_cpu: Duration,
    /// True when every sent message was answered before the drain timeout.
    pub drained: bool,
    /// Messages of the window answered only after it ended, during the drain (their latency
    /// is in `latency`; always 0 for the classic generator, which records by completion time).
    pub late: u64,
    /// Open loop: actual minus intended send time of the window's messages (None for the
    /// classic generator and for closed loop).
    pub send_lag: Option<Latency>,
    /// The TLS scenarios: what was negotiated and the bytes per message on both sides of
    /// TLS (`src/tls_gen.rs`); None otherwise.
    pub tls: Option<crate::tls_gen::TlsWire>,
    /// What a request and a response weighed on the wire (the `uring` and `classic`
    /// generators; None for the others, whose figures live elsewhere: `tls`).
    pub wire: Option<WireBytes>,
}

/// The bytes of one message on the wire, as the generator counted them over the whole run
/// (warmup, window and drain): the server's response bytes are what the comparison tables
/// state beside each server (an nginx answer carries `Server` and `Connection` headers a
/// ringman answer does not).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WireBytes {
    /// Bytes of one request as sent (`http`: the request head; `ws`: the masked frame).
    pub request: f64,
    /// Bytes received per response: every byte received after the connection set-up, over
    /// the responses received.
    pub response: f64,
    /// `http`: the header names of the first response, in order (`Date, Content-Type, ...`).
    pub headers: Option<String>,
}

impl WireBytes {
    /// The figures of a run that sent requests of `request` bytes and received `rx_bytes`
    /// bytes in `responses` responses.
    pub fn of(request: usize, rx_bytes: u64, responses: u64, headers: Option<String>) -> Option<WireBytes> {
        (responses > 0).then(|| WireBytes {
            request: request as f64,
            response: rx_bytes as f64 / responses as f64,
            headers,
        })
    }
}

impl LoadResult {
    /// Responses per second inside the window.
    pub fn rate(&self) -> f64 {
        let s = self.window.as_secs_f64();
        if s > 0.0 {
            self.messages as f64 / s
        } else {
            0.0
        }
    }

    /// Share of one CPU the load generator used in the window (1.0 = one full core).
    pub fn client_util(&self) -> f64 {
        let s = self.window.as_secs_f64();
        if s > 0.0 {
            self.client_cpu.as_secs_f64() / s
        } else {
            0.0
        }
    }
}

/// How long to wait for outstanding responses after the window.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC, the clock timerfd uses).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer; the call only writes `ru`.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn sys(call: &'static str) -> LoadError {
    LoadError::Sys { call, source: std::io::Error::last_os_error() }
}

struct Conn {
    stream: TcpStream,
    counter: ResponseCounter,
    /// Send times (ns) of the messages in flight, oldest first.
    stamps: VecDeque<u64>,
    out: Vec<u8>,
    out_off: usize,
    want_out: bool,
    dirty: bool,
    dead: bool,
}

/// Epoll fd owned by the loop (also the TLS generator's, `src/tls_gen.rs`).
pub(crate) struct Epoll(pub(crate) i32);

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this fd.
        unsafe { libc::close(self.0) };
    }
}

impl Epoll {
    /// A new epoll set (close-on-exec).
    pub(crate) fn new() -> Result<Epoll, LoadError> {
        // SAFETY: plain syscall; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(sys("epoll_create1"));
        }
        Ok(Epoll(ep))
    }

    pub(crate) fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) -> Result<(), LoadError> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll fd and event pointer.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(sys("epoll_ctl"));
        }
        Ok(())
    }
}

const TIMER: u64 = u64::MAX;
/// Finest spacing of open-loop send batches (10 µs).
pub const TIMER_SLACK_NS: u64 = 10_000;
pub(crate) const IN: u32 = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32;
pub(crate) const INOUT: u32 = IN | libc::EPOLLOUT as u32;

/// Opens `n` connections to `addr` (blocking connect, then non-blocking), performing the
/// WebSocket handshake when the scenario needs it.
pub fn connect_all(addr: SocketAddr, scenario: Scenario, n: usize) -> Result<Vec<TcpStream>, LoadError> {
    connect_with(addr, scenario, n, &wire::ws_handshake(&addr.to_string()))
}

/// [`connect_all`] with an explicit WebSocket upgrade request (`ws` only).
pub fn connect_with(
    addr: SocketAddr,
    scenario: Scenario,
    n: usize,
    ws_request: &[u8],
) -> Result<Vec<TcpStream>, LoadError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let s = TcpStream::connect(addr).map_err(|source| LoadError::Connect { addr, source })?;
        let _ = s.set_nodelay(true);
        // Close with RST so thousands of benchmark sockets leave no TIME_WAIT behind.
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        out.push(s);
    }
    if scenario == Scenario::Ws {
        for s in &mut out {
            s.write_all(ws_request).map_err(|source| LoadError::Connect { addr, source })?;
        }
        for s in &mut out {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            // Byte-wise so no frame byte after the head is consumed (the server sends none yet).
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    Ok(_) => return Err(LoadError::Handshake("connection closed".into())),
                    Err(e) => return Err(LoadError::Connect { addr, source: e }),
                }
                if head.len() > 16 * 1024 {
                    return Err(LoadError::Handshake("response head too long".into()));
                }
            }
            wire::check_ws_handshake(&head)?;
        }
    }
    for s in &out {
        s.set_nonblocking(true).map_err(|source| LoadError::Sys { call: "set_nonblocking", source })?;
    }
    Ok(out)
}

/// Runs one load against `addr`. `edge` is called at the start and end of the measured
/// window (sample server CPU there).
pub fn run(addr: SocketAddr, opts: &LoadOpts, mut edge: impl FnMut(Edge)) -> Result<LoadResult, LoadError> {
    let streams = connect_with(addr, opts.scenario, opts.conns, &wire::ws_handshake_for(opts, addr))?;
    let request = wire::request_for(opts);
    let schedule = opts.rate.and_then(Schedule::new);

    let ep = Epoll::new()?;
    let mut conns: Vec<Conn> = Vec::with_capacity(streams.len());
    for (i, stream) in streams.into_iter().enumerate() {
        ep.ctl(libc::EPOLL_CTL_ADD, stream.as_raw_fd(), IN, i as u64)?;
        conns.push(Conn {
            stream,
            counter: ResponseCounter::for_load(opts),
            stamps: VecDeque::new(),
            out: Vec::with_capacity(request.len() * opts.depth.max(1)),
            out_off: 0,
            want_out: false,
            dirty: false,
            dead: false,
        });
    }
    let timer = Timer::new()?;
    ep.ctl(libc::EPOLL_CTL_ADD, timer.0, libc::EPOLLIN as u32, TIMER)?;

    let mut lat = Latency::new();
    let (mut sent, mut received, mut bad_status, mut window_msgs) = (0u64, 0u64, 0u64, 0u64);
    let mut lost = 0usize;
    let mut dirty: Vec<usize> = Vec::with_capacity(conns.len());
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut rbuf = vec![0u8; 256 * 1024];
    let mut rx_bytes = 0u64;
    // The head of the first response of connection 0 (http: its header names).
    let mut probe = crate::tls_gen::HeadProbe::new(opts.scenario == crate::cli::Scenario::Http);

    let start = now_ns();
    let window_start = start + opts.warmup.as_nanos() as u64;
    let window_end = window_start + opts.duration.as_nanos() as u64;
    let drain_end = window_end + DRAIN_TIMEOUT.as_nanos() as u64;
    let mut measuring = false;
    let mut cpu_start = Duration::ZERO;
    let mut client_cpu = Duration::ZERO;
    let mut pacer = schedule.map(Pacer::new);
    let mut armed_at = 0u64;
    let enqueue = |c: &mut Conn, stamp: u64, dirty: &mut Vec<usize>, idx: usize| {
        c.out.extend_from_slice(&request);
        c.stamps.push_back(stamp);
        if !c.dirty {
            c.dirty = true;
            dirty.push(idx);
        }
    };
    if opts.warmup.is_zero() {
        edge(Edge::Start);
        cpu_start = thread_cpu();
        measuring = true;
    }
    if schedule.is_none() {
        for (i, c) in conns.iter_mut().enumerate() {
            for _ in 0..opts.depth {
                enqueue(c, start, &mut dirty, i);
                sent += 1;
            }
        }
    }
    let mut phase_sending = true;
    let tick = 1_000_000_000u64;
    let mut next_tick = if opts.warmup + opts.duration > PROGRESS_AFTER { start + tick } else { u64::MAX };
    loop {
        let now = now_ns();
        if now >= next_tick {
            edge(Edge::Progress { sent, received });
            next_tick += tick;
        }
        // Phase edges.
        if !measuring && phase_sending && now >= window_start {
            edge(Edge::Start);
            cpu_start = thread_cpu();
            lat.reset();
            window_msgs = 0;
            measuring = true;
        }
        if phase_sending && now >= window_end {
            client_cpu = thread_cpu().saturating_sub(cpu_start);
            edge(Edge::End);
            measuring = false;
            phase_sending = false;
        }
        // Open loop: send everything that is due.
        if let (Some(p), true) = (pacer.as_mut(), phase_sending) {
            for seq in p.due(now - start) {
                let idx = Schedule::conn_for(seq, conns.len());
                if conns[idx].dead {
                    continue;
                }
                enqueue(&mut conns[idx], start + p.schedule.intended_ns(seq), &mut dirty, idx);
                sent += 1;
            }
            let at = start + p.wake_at(now - start);
            if at != armed_at {
                timer.arm_abs(at)?;
                armed_at = at;
            }
        } else if !phase_sending && armed_at != 0 {
            timer.disarm()?;
            armed_at = 0;
        }
        // Flush.
        for &idx in &dirty {
            let c = &mut conns[idx];
            c.dirty = false;
            if c.dead {
                continue;
            }
            flush(&ep, idx, c)?;
            if c.dead {
                lost += 1;
            }
        }
        dirty.clear();
        if lost == conns.len() {
            return Err(LoadError::AllConnectionsLost(lost));
        }
        if !phase_sending {
            let outstanding = conns.iter().any(|c| !c.dead && !c.stamps.is_empty());
            if !outstanding || now >= drain_end {
                break;
            }
        }
        // Wait.
        let deadline = if phase_sending {
            if measuring {
                window_end
            } else {
                window_start
            }
        } else {
            drain_end
        };
        let timeout_ms = (deadline.saturating_sub(now)).div_ceil(1_000_000).min(1000) as i32;
        // SAFETY: valid epoll fd; `events` has room for `events.len()` entries.
        let n = unsafe { libc::epoll_wait(ep.0, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(LoadError::Sys { call: "epoll_wait", source: e });
        }
        let now = now_ns();
        for ev in &events[..n as usize] {
            let token = ev.u64;
            let flags = ev.events;
            if token == TIMER {
                // Re-arming (timerfd_settime) resets the expiry count, so no read is needed
                // while the schedule runs; after it, drain the count so epoll stays quiet.
                if !phase_sending {
                    timer.clear();
                }
                continue;
            }
            let idx = token as usize;
            let c = &mut conns[idx];
            if c.dead {
                continue;
            }
            if flags & libc::EPOLLOUT as u32 != 0 && !c.dirty {
                c.dirty = true;
                dirty.push(idx);
            }
            if flags & (IN | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) == 0 {
                continue;
            }
            let mut closed = false;
            loop {
                match c.stream.read(&mut rbuf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(got) => {
                        rx_bytes += got as u64;
                        if idx == 0 {
                            probe.feed(&rbuf[..got]);
                        }
                        let (done, bad) = c.counter.feed(&mut rbuf[..got])?;
                        bad_status += bad;
                        for _ in 0..done {
                            let Some(t) = c.stamps.pop_front() else { break };
                            received += 1;
                            if measuring {
                                lat.record(now.saturating_sub(t));
                                window_msgs += 1;
                            }
                            if schedule.is_none() && phase_sending {
                                enqueue(c, now, &mut dirty, idx);
                                sent += 1;
                            }
                        }
                        if got < rbuf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                c.dead = true;
                lost += 1;
                let _ = ep.ctl(libc::EPOLL_CTL_DEL, c.stream.as_raw_fd(), 0, 0);
            }
        }
    }
    let window = opts.duration;
    let drained = conns.iter().all(|c| c.dead || c.stamps.is_empty());
    Ok(LoadResult {
        messages: window_msgs,
        window,
        latency: lat,
        sent,
        received,
        bad_status,
        lost_conns: lost,
        client_cpu,
        drained,
        late: 0,
        send_lag: None,
        tls: None,
        wire: WireBytes::of(request.len(), rx_bytes, received, probe.names),
    })
}

/// Open-loop pacing over a [`Schedule`]: hands out each message once, when it falls due, and
/// says when to wake for the next one. Pure logic on elapsed nanoseconds, no clock.
#[derive(Debug, Clone)]
struct Pacer {
    schedule: Schedule,
    next_seq: u64,
}

impl Pacer {
    fn new(schedule: Schedule) -> Self {
        Pacer { schedule, next_seq: 0 }
    }

    /// The messages due `elapsed_ns` after the start and not handed out yet, in order. A late
    /// wakeup gets every message it missed (latency still counts from the intended times).
    fn due(&mut self, elapsed_ns: u64) -> std::ops::Range<u64> {
        let end = self.schedule.due_count(elapsed_ns).max(self.next_seq);
        let due = self.next_seq..end;
        self.next_seq = end;
        due
    }

    /// When to wake next (nanoseconds after the start): the next message's intended time, but
    /// no sooner than TIMER_SLACK_NS from now, since a timer syscall per message would cost
    /// more client CPU than the message itself.
    fn wake_at(&self, elapsed_ns: u64) -> u64 {
        self.schedule.intended_ns(self.next_seq).max(elapsed_ns + TIMER_SLACK_NS)
    }
}

/// Writes as much queued output as the socket takes; asks for EPOLLOUT when it stalls.
fn flush(ep: &Epoll, idx: usize, c: &mut Conn) -> Result<(), LoadError> {
    while c.out_off < c.out.len() {
        match c.stream.write(&c.out[c.out_off..]) {
            Ok(n) => c.out_off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.dead = true;
                let _ = ep.ctl(libc::EPOLL_CTL_DEL, c.stream.as_raw_fd(), 0, 0);
                return Ok(());
            }
        }
    }
    if c.out_off == c.out.len() {
        c.out.clear();
        c.out_off = 0;
        if c.want_out {
            c.want_out = false;
            ep.ctl(libc::EPOLL_CTL_MOD, c.stream.as_raw_fd(), IN, idx as u64)?;
        }
    } else if !c.want_out {
        c.want_out = true;
        ep.ctl(libc::EPOLL_CTL_MOD, c.stream.as_raw_fd(), INOUT, idx as u64)?;
    }
    Ok(())
}

/// A CLOCK_MONOTONIC timerfd for open-loop send times.
struct Timer(i32);

impl Timer {
    fn new() -> Result<Self, LoadError> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(sys("timerfd_create"));
        }
        Ok(Timer(fd))
    }

    fn arm_abs(&self, at_ns: u64) -> Result<(), LoadError> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid timerfd and itimerspec; old value not requested.
        if unsafe { libc::timerfd_settime(self.0, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) } < 0 {
            return Err(sys("timerfd_settime"));
        }
        Ok(())
    }

    fn disarm(&self) -> Result<(), LoadError> {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let spec = libc::itimerspec { it_interval: zero, it_value: zero };
        // SAFETY: valid timerfd and itimerspec; a zero value disarms.
        if unsafe { libc::timerfd_settime(self.0, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(sys("timerfd_settime"));
        }
        self.clear();
        Ok(())
    }

    fn clear(&self) {
        let mut v = 0u64;
        // SAFETY: reading 8 bytes into a u64 from our non-blocking timerfd.
        unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: we own this fd.
        unsafe { libc::close(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{echo_server, short_load as opts};
    use std::net::TcpListener;

    fn check(r: &LoadResult) {
        assert!(r.drained, "{r:?}");
        assert_eq!(r.sent, r.received, "{r:?}");
        assert_eq!(r.lost_conns, 0);
        assert_eq!(r.bad_status, 0);
        assert!(r.messages > 0 && r.messages <= r.received);
        assert_eq!(r.latency.len(), r.messages);
    }

    #[test]
    fn closed_loop_counts_add_up() {
        let addr = echo_server();
        for s in [Scenario::Echo, Scenario::Text, Scenario::Frame] {
            let mut edges = Vec::new();
            let o = opts(s, 4, 3, None);
            let r = run(addr, &o, |e| edges.push(e)).unwrap();
            check(&r);
            let n = crate::wire::request_for(&o).len() as f64;
            assert_eq!(r.wire, Some(WireBytes { request: n, response: n, headers: None }), "{s:?}");
            assert_eq!(edges, vec![Edge::Start, Edge::End]);
        }
    }

    #[test]
    fn open_loop_sends_and_drains() {
        let addr = echo_server();
        let o = LoadOpts { warmup: Duration::ZERO, ..opts(Scenario::Frame, 3, 1, Some(2000.0)) };
        let r = run(addr, &o, |_| {}).unwrap();
        check(&r);
    }

    /// Drives a pacer with a simulated clock: `wakeups` yields the delay of each wakeup past
    /// the time the pacer asked for. Returns every handed-out message as (seq, handed out at).
    fn simulate(rate: f64, end_ns: u64, mut late_by: impl FnMut() -> u64) -> Vec<(u64, u64)> {
        let mut p = Pacer::new(Schedule::new(rate).unwrap());
        let mut out = Vec::new();
        let mut now = 0;
        while now < end_ns {
            out.extend(p.due(now).map(|seq| (seq, now)));
            let wake = p.wake_at(now);
            assert!(wake >= now + TIMER_SLACK_NS, "timer armed closer than the slack: {wake} at {now}");
            now = wake + late_by();
        }
        out.extend(p.due(end_ns).map(|seq| (seq, end_ns)));
        out
    }

    fn check_pacing(rate: f64, end_ns: u64, out: &[(u64, u64)]) {
        let s = Schedule::new(rate).unwrap();
        // Each message exactly once, in order; never before its intended time.
        for (i, &(seq, at)) in out.iter().enumerate() {
            assert_eq!(seq, i as u64, "messages handed out once each, in order");
            assert!(s.intended_ns(seq) <= at, "message {seq} sent at {at} before {}", s.intended_ns(seq));
        }
        // Everything due by the end went out.
        assert_eq!(out.len() as u64, s.due_count(end_ns));
    }

    #[test]
    fn pacer_sends_exactly_what_is_due() {
        // 2000/s over 300 ms: messages 0..=600 are due (t = 0 included).
        let out = simulate(2000.0, 300_000_000, || 0);
        check_pacing(2000.0, 300_000_000, &out);
        assert_eq!(out.len(), 601);
        // Woken on time, each message goes out at its intended time.
        let s = Schedule::new(2000.0).unwrap();
        assert!(out.iter().all(|&(seq, at)| at == s.intended_ns(seq)));
    }

    #[test]
    fn pacer_catches_up_after_late_wakeups() {
        // Wakeups late by a pseudo-random 0..5 ms: the count by the end does not drift.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let jitter = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 5_000_000
        };
        let out = simulate(2000.0, 300_000_000, jitter);
        check_pacing(2000.0, 300_000_000, &out);
        assert_eq!(out.len(), 601);
        // A late wakeup sends a batch: several messages share one wakeup time.
        assert!(out.windows(2).any(|w| w[0].1 == w[1].1), "late wakeups batch the backlog");
    }

    #[test]
    fn pacer_batches_rates_finer_than_the_timer_slack() {
        // 1M/s is one message per microsecond, finer than TIMER_SLACK_NS: wakeups are spaced
        // by the slack and each sends the messages that fell due meanwhile.
        let end = 1_000_000;
        let out = simulate(1e6, end, || 0);
        check_pacing(1e6, end, &out);
        assert_eq!(out.len(), 1001);
        let wakeups = out.iter().map(|&(_, at)| at).collect::<std::collections::BTreeSet<_>>();
        assert!(wakeups.len() as u64 <= end / TIMER_SLACK_NS + 2, "{} wakeups", wakeups.len());
    }

    #[test]
    fn pacer_deals_messages_round_robin_with_increasing_times() {
        let s = Schedule::new(997.0).unwrap();
        let mut p = Pacer::new(s);
        let mut last = [None::<u64>; 3];
        for seq in p.due(1_000_000_000) {
            let c = Schedule::conn_for(seq, 3);
            assert_eq!(c, (seq % 3) as usize);
            let t = s.intended_ns(seq);
            assert!(last[c].is_none_or(|l| l < t), "connection {c}: intended times increase");
            last[c] = Some(t);
        }
        assert!(last.iter().all(Option::is_some));
        // Nothing twice: the same instant again hands out nothing new.
        assert!(p.due(1_000_000_000).is_empty());
    }

    #[test]
    fn refused_connection_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(matches!(run(addr, &opts(Scenario::Echo, 1, 1, None), |_| {}), Err(LoadError::Connect { .. })));
    }
}
