//! The io_uring load generator (`--generator uring`, the default).
//!
//! Each generator thread owns one ring and a share of the connections (connection `i` goes to
//! thread `i % threads`). Per connection one multishot `IORING_OP_RECV` picks its buffers from
//! the thread's provided-buffer ring; everything queued for a connection during one loop turn
//! goes out as one `IORING_OP_SEND` (one send in flight per connection, short sends resumed).
//! A loop turn is one `io_uring_enter` that submits the turn's sends and waits for at least one
//! completion or the turn's timeout, then handles every completion that arrived.
//!
//! * **Closed loop**: every connection keeps `depth` messages in flight; a completed response
//!   queues the next message, sent at the end of the turn.
//! * **Open loop**: message `seq` is intended at `start + seq / rate` ([`Schedule`]). No timer
//!   per message: the wait timeout of each turn is the next intended time, but never closer
//!   than [`PACE_SLACK_NS`], and a turn sends everything whose intended time has passed. The
//!   send lag (time the send was handed to the kernel minus intended time) is recorded, and
//!   latency counts from the intended time (coordinated-omission safe). Responses are reaped
//!   in batches too: a turn waits for all responses in flight, but at most the pace after the
//!   first one arrived (kernel 6.12+ `min_wait`; older kernels wake per response). The pace
//!   ([`Tuning::pace`], default [`PACE_SLACK_NS`]) is thus the open loop's time resolution.
//! * **Window**: latency is recorded for the messages sent (closed loop) or intended (open
//!   loop) inside the window, whenever their response arrives before the drain timeout;
//!   responses that arrive after the window are counted as `late`. msgs/s counts the
//!   responses completed inside the window, as the classic generator does.
//!
//! The pure pieces ([`Pacer`], [`SendQueue`], [`Matcher`]) carry no I/O and are unit tested.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, CancelBuilder, Timespec};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::cli::LoadOpts;
use crate::error::LoadError;
use crate::hist::Latency;
use crate::loadgen::{self, now_ns, Edge, LoadResult, DRAIN_TIMEOUT, PROGRESS_AFTER};
use crate::schedule::Schedule;
use crate::wire::{self, ResponseCounter};

/// Default finest spacing of open-loop send batches (`--pace`): a turn waits at most until the
/// next intended send time, but at least this long (unless a completion wakes it first).
pub const PACE_SLACK_NS: u64 = 20_000;
/// Longest wait of one turn, so phase edges are noticed even with no traffic.
const MAX_WAIT_NS: u64 = 50_000_000;
/// Open-loop completion batching: a turn waits for every response in flight (or the pacing
/// timeout), but no longer than the pace (`--pace`, default [`PACE_SLACK_NS`]) once at least
/// one is there. Fewer wakeups per message; a response is timestamped at most that late.
const REAP_WAIT_US: u32 = (PACE_SLACK_NS / 1000) as u32;
/// io_uring_enter flags.
const ENTER_GETEVENTS: u32 = 1;
const ENTER_EXT_ARG: u32 = 1 << 3;

/// `struct io_uring_getevents_arg` (with `min_wait_usec`, kernel 6.12+).
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// Provided buffers per thread (power of two) and their size.
const BUF_COUNT: u16 = 1024;
const BUF_SIZE: usize = 16 * 1024;
/// Buffer group of the receive ring.
const BGID: u16 = 0;
/// user_data: connection index << 1 | kind.
const KIND_RECV: u64 = 0;
const KIND_SEND: u64 = 1;

// ---------------------------------------------------------------------------------------------
// Pure pieces.

/// Open-loop pacing for one thread: hands out the global sequence numbers `offset, offset +
/// stride, ...` of a [`Schedule`] once each, when they fall due, and says when to wake next.
/// Pure logic on elapsed nanoseconds.
#[derive(Debug, Clone)]
pub struct Pacer {
    schedule: Schedule,
    stride: u64,
    /// The next sequence number this pacer hands out.
    next: u64,
    slack_ns: u64,
}

impl Pacer {
    /// A pacer for the sequence numbers `s` with `s % stride == offset`.
    pub fn new(schedule: Schedule, stride: usize, offset: usize, slack_ns: u64) -> Self {
        let stride = stride.max(1) as u64;
        let offset = offset as u64 % stride;
        Pacer { schedule, stride, next: offset, slack_ns }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// This pacer's messages due `elapsed_ns` after the start that were not handed out yet,
    /// oldest first. A late turn gets everything it missed.
    pub fn due(&mut self, elapsed_ns: u64) -> impl Iterator<Item = u64> {
        let end = self.schedule.due_count(elapsed_ns);
        let from = self.next;
        let stride = self.stride;
        let mut last = from;
        while last < end {
            last += stride;
        }
        self.next = last;
        (from..last).step_by(stride as usize)
    }

    /// When to wake next (ns after the start): the next message's intended time, but no sooner
    /// than the slack after `elapsed_ns`.
    pub fn wake_at(&self, elapsed_ns: u64) -> u64 {
        self.schedule.intended_ns(self.next).max(elapsed_ns + self.slack_ns)
    }
}

/// Outgoing bytes of one connection: requests queued during a turn are handed to the kernel as
/// one send when no send is in flight; a short send continues with the rest.
#[derive(Debug, Default)]
pub struct SendQueue {
    /// Queued, not yet handed to a send.
    pending: Vec<u8>,
    /// Intended times of the queued messages (open loop only, for the send lag).
    pending_stamps: Vec<u64>,
    /// Owned by the send in flight (must not move or change until its completion).
    inflight: Vec<u8>,
    /// Bytes of `inflight` the kernel has taken.
    done: usize,
    busy: bool,
}

impl SendQueue {
    /// Queues one request; `intended` is its intended send time when the send lag is wanted.
    pub fn push(&mut self, request: &[u8], intended: Option<u64>) {
        self.pending.extend_from_slice(request);
        if let Some(t) = intended {
            self.pending_stamps.push(t);
        }
    }

    /// True while a send is in flight.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// True when nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        !self.busy && self.pending.is_empty()
    }

    /// Starts a send of everything queued if none is in flight: returns the bytes to send
    /// (valid until [`SendQueue::on_sent`]) and hands the queued intended times to `lag`.
    pub fn start(&mut self, mut lag: impl FnMut(u64)) -> Option<&[u8]> {
        if self.busy || self.pending.is_empty() {
            return None;
        }
        std::mem::swap(&mut self.inflight, &mut self.pending);
        self.pending.clear();
        self.done = 0;
        self.busy = true;
        for t in self.pending_stamps.drain(..) {
            lag(t);
        }
        Some(&self.inflight)
    }

    /// The kernel took `n` bytes of the send in flight. Returns the rest when the send was
    /// short (send it again); otherwise the queue is free for the next [`SendQueue::start`].
    pub fn on_sent(&mut self, n: usize) -> Option<&[u8]> {
        debug_assert!(self.busy);
        self.done = (self.done + n).min(self.inflight.len());
        if self.done < self.inflight.len() {
            return Some(&self.inflight[self.done..]);
        }
        self.busy = false;
        self.inflight.clear();
        self.done = 0;
        None
    }
}

/// Matches received bytes to the messages in flight on one connection: responses complete in
/// order, so each completed response takes the oldest stamp.
pub struct Matcher {
    counter: ResponseCounter,
    /// Stamps (send or intended time, ns) of the messages in flight, oldest first.
    stamps: VecDeque<u64>,
}

impl Matcher {
    /// A matcher for `opts.scenario` responses.
    pub fn new(counter: ResponseCounter) -> Self {
        Matcher { counter, stamps: VecDeque::new() }
    }

    /// A message stamped `stamp` went out (or was queued).
    pub fn push(&mut self, stamp: u64) {
        self.stamps.push_back(stamp);
    }

    /// Messages in flight.
    pub fn outstanding(&self) -> usize {
        self.stamps.len()
    }

    /// Feeds received bytes; calls `done(stamp)` for every completed response in order and
    /// returns the number of responses with an error status. A response with no message in
    /// flight is an error ([`LoadError::Unexpected`]).
    pub fn feed(&mut self, data: &mut [u8], mut done: impl FnMut(u64)) -> Result<u64, LoadError> {
        let (n, bad) = self.counter.feed(data)?;
        for _ in 0..n {
            match self.stamps.pop_front() {
                Some(t) => done(t),
                None => return Err(LoadError::Unexpected("a response arrived with no message in flight")),
            }
        }
        Ok(bad)
    }
}

// ---------------------------------------------------------------------------------------------
// Kernel-shared memory.

/// Anonymous, page-aligned memory.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    fn new(len: usize) -> Result<Mmap, LoadError> {
        // SAFETY: anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(LoadError::Sys { call: "mmap", source: std::io::Error::last_os_error() });
        }
        Ok(Mmap { ptr: NonNull::new(ptr.cast()).ok_or(LoadError::Unexpected("mmap returned null"))?, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and nobody else unmaps.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The provided-buffer ring the multishot receives pick from. A buffer belongs to the kernel
/// from its publication until a completion names it, then to us until [`BufRing::recycle`].
struct BufRing {
    entries: Mmap,
    data: Mmap,
    tail: u16,
    dirty: bool,
}

impl BufRing {
    fn new(ring: &IoUring) -> Result<BufRing, LoadError> {
        let entries = Mmap::new(BUF_COUNT as usize * std::mem::size_of::<BufRingEntry>())?;
        let data = Mmap::new(BUF_COUNT as usize * BUF_SIZE)?;
        let mut br = BufRing { entries, data, tail: 0, dirty: false };
        // SAFETY: the entry array is page aligned (mmap), holds BUF_COUNT entries, and outlives
        // the registration: `Worker` unregisters it and drops the ring before this value.
        unsafe { ring.submitter().register_buf_ring_with_flags(br.entries.ptr.as_ptr() as u64, BUF_COUNT, BGID, 0) }
            .map_err(|source| LoadError::Sys { call: "io_uring_register(PBUF_RING)", source })?;
        for bid in 0..BUF_COUNT {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    /// The bytes the kernel wrote into buffer `bid` (a completion named it, `len` its result).
    fn filled(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(bid < BUF_COUNT && len <= BUF_SIZE, "buffer {bid} len {len} out of range");
        // SAFETY: in bounds of `data` (asserted); the kernel no longer writes this buffer (a
        // completion handed it to us) and `&mut self` makes the slice exclusive until recycled.
        unsafe { std::slice::from_raw_parts_mut(self.data.ptr.as_ptr().add(bid as usize * BUF_SIZE), len) }
    }

    /// Hands buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    fn recycle(&mut self, bid: u16) {
        let idx = (self.tail & (BUF_COUNT - 1)) as usize;
        // SAFETY: `idx < BUF_COUNT`, inside the entry mapping; the kernel reads no entry at or
        // beyond the published tail, so writing this slot does not race with it.
        let e = unsafe { &mut *self.entries.ptr.as_ptr().cast::<BufRingEntry>().add(idx) };
        e.set_addr(self.data.ptr.as_ptr() as u64 + bid as u64 * BUF_SIZE as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.dirty = true;
    }

    /// Publishes recycled buffers with one release store of the tail.
    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        // SAFETY: entry 0 exists; the shared tail overlays its `resv` field.
        let tail = unsafe { BufRingEntry::tail(self.entries.ptr.as_ptr().cast()) };
        // SAFETY: the kernel reads the tail concurrently, so it is stored atomically; the
        // pointer is 2-byte aligned inside our mapping.
        unsafe { (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release) };
    }
}

// ---------------------------------------------------------------------------------------------
// One generator thread.

/// Absolute phase times (CLOCK_MONOTONIC ns), shared by all threads.
#[derive(Debug, Clone, Copy)]
struct Phases {
    start: u64,
    window_start: u64,
    window_end: u64,
    drain_end: u64,
}

impl Phases {
    fn in_window(&self, t: u64) -> bool {
        (self.window_start..self.window_end).contains(&t)
    }
}

struct Conn {
    /// Owns the socket (closed, with RST, when the worker drops).
    _stream: TcpStream,
    fd: i32,
    matcher: Matcher,
    out: SendQueue,
    dirty: bool,
    dead: bool,
}

/// What one thread measured.
#[derive(Default)]
struct ThreadResult {
    latency: Latency,
    lag: Option<Latency>,
    window_msgs: u64,
    sent: u64,
    received: u64,
    bad_status: u64,
    late: u64,
    lost: usize,
    live: usize,
    drained: bool,
    /// Bytes received over the run (every response byte).
    rx_bytes: u64,
    /// `http`: the header names of the thread's first connection's first response.
    headers: Option<String>,
}

struct Worker<'a> {
    // Field order matters: the ring is dropped before the buffer memory it used.
    ring: IoUring,
    bufs: BufRing,
    conns: Vec<Conn>,
    dirty: Vec<usize>,
    request: &'a [u8],
    phases: Phases,
    open: bool,
    depth: usize,
    /// The kernel supports min_wait batching.
    batch: bool,
    /// Open loop: longest delay of a response's timestamp (min_wait), µs.
    reap_wait_us: u32,
    res: ThreadResult,
    /// Where the running totals are published for the progress lines.
    progress: &'a Totals,
    /// The head of connection 0's first response (`http`: its header names).
    probe: crate::tls_gen::HeadProbe,
}

fn ud(idx: usize, kind: u64) -> u64 {
    ((idx as u64) << 1) | kind
}

fn build_ring(entries: u32) -> Result<IoUring, LoadError> {
    let cq = entries * 8;
    let tuned = IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_cqsize(cq).build(entries);
    match tuned {
        Ok(r) => Ok(r),
        // Kernels before 6.1 lack DEFER_TASKRUN: a plain ring works the same, a bit slower.
        Err(_) => IoUring::builder()
            .setup_cqsize(cq)
            .build(entries)
            .map_err(|source| LoadError::Sys { call: "io_uring_setup", source }),
    }
}

impl<'a> Worker<'a> {
    fn new(
        streams: Vec<TcpStream>,
        opts: &LoadOpts,
        request: &'a [u8],
        phases: Phases,
        progress: &'a Totals,
    ) -> Result<Worker<'a>, LoadError> {
        let entries = (streams.len() as u32 * 2).next_power_of_two().clamp(64, 4096);
        let ring = build_ring(entries)?;
        let bufs = BufRing::new(&ring)?;
        // Registered files: requests name connection `i` as fixed file `i`, sparing the
        // per-request fd lookup.
        let fds: Vec<i32> = streams.iter().map(|s| s.as_raw_fd()).collect();
        ring.submitter()
            .register_files(&fds)
            .map_err(|source| LoadError::Sys { call: "io_uring_register(FILES)", source })?;
        let conns = streams
            .into_iter()
            .map(|stream| {
                // io_uring parks a blocking socket's request on poll; O_NONBLOCK would not help.
                let _ = stream.set_nonblocking(false);
                Conn {
                    fd: stream.as_raw_fd(),
                    _stream: stream,
                    matcher: Matcher::new(ResponseCounter::for_load(opts)),
                    out: SendQueue::default(),
                    dirty: false,
                    dead: false,
                }
            })
            .collect::<Vec<_>>();
        let open = opts.rate.is_some();
        let res = ThreadResult { lag: open.then(Latency::new), live: conns.len(), ..ThreadResult::default() };
        let batch = ring.params().is_feature_min_timeout();
        Ok(Worker {
            ring,
            bufs,
            dirty: Vec::with_capacity(conns.len()),
            conns,
            request,
            phases,
            open,
            depth: opts.depth.max(1),
            batch,
            reap_wait_us: REAP_WAIT_US,
            res,
            progress,
            probe: crate::tls_gen::HeadProbe::new(opts.scenario == crate::cli::Scenario::Http),
        })
    }

    fn push(&mut self, sqe: squeue::Entry) -> Result<(), LoadError> {
        loop {
            // SAFETY: every SQE points at nothing (multishot recv with provided buffers) or at
            // a connection's in-flight send bytes, which stay put until that send's completion
            // (SendQueue keeps them while `busy`), and connections outlive the ring's requests.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit().map_err(|source| LoadError::Sys { call: "io_uring_enter", source })?;
        }
    }

    fn arm_recv(&mut self, idx: usize) -> Result<(), LoadError> {
        let sqe = opcode::RecvMulti::new(types::Fixed(idx as u32), BGID).build().user_data(ud(idx, KIND_RECV));
        self.push(sqe)
    }

    fn mark(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(idx);
        }
    }

    /// Queues one message on connection `idx`, stamped `stamp`.
    fn enqueue(&mut self, idx: usize, stamp: u64) {
        let c = &mut self.conns[idx];
        if c.dead {
            return;
        }
        c.out.push(self.request, self.open.then_some(stamp));
        c.matcher.push(stamp);
        self.res.sent += 1;
        self.mark(idx);
    }

    /// Hands every dirty connection's queued bytes to one send each.
    fn flush(&mut self) -> Result<(), LoadError> {
        let now = if self.open { now_ns() } else { 0 };
        let dirty = std::mem::take(&mut self.dirty);
        for &idx in &dirty {
            let c = &mut self.conns[idx];
            c.dirty = false;
            if c.dead {
                continue;
            }
            let (phases, lag) = (self.phases, &mut self.res.lag);
            let Some(bytes) = c.out.start(|t| {
                if let (Some(l), true) = (lag.as_mut(), phases.in_window(t)) {
                    l.record(now.saturating_sub(t));
                }
            }) else {
                continue;
            };
            let sqe = opcode::Send::new(types::Fixed(idx as u32), bytes.as_ptr(), bytes.len() as u32)
                .build()
                .user_data(ud(idx, KIND_SEND));
            self.push(sqe)?;
        }
        self.dirty = dirty;
        self.dirty.clear();
        Ok(())
    }

    fn kill(&mut self, idx: usize) {
        let c = &mut self.conns[idx];
        if !c.dead {
            c.dead = true;
            self.res.lost += 1;
            self.res.live -= 1;
            // Ends the multishot receive; the fd is closed when the stream drops.
            // SAFETY: plain syscall on a socket this connection owns.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        }
    }

    fn on_recv(&mut self, idx: usize, res: i32, flags: u32, now: u64) -> Result<(), LoadError> {
        if res > 0 {
            let bid =
                cqueue::buffer_select(flags).ok_or(LoadError::Unexpected("receive completion without a buffer"))?;
            let data = self.bufs.filled(bid, res as usize);
            self.res.rx_bytes += res as u64;
            if idx == 0 && self.probe.names.is_none() {
                self.probe.feed(data);
            }
            let c = &mut self.conns[idx];
            let (phases, open) = (self.phases, self.open);
            let r = &mut self.res;
            let mut replies = 0usize;
            let fed = c.matcher.feed(data, |t| {
                r.received += 1;
                let in_window_now = phases.in_window(now);
                if in_window_now {
                    r.window_msgs += 1;
                }
                if phases.in_window(t) {
                    r.latency.record(now.saturating_sub(t));
                    if now >= phases.window_end {
                        r.late += 1;
                    }
                }
                replies += 1;
            });
            self.bufs.recycle(bid);
            self.res.bad_status += fed?;
            if !open && now < self.phases.window_end && !self.conns[idx].dead {
                for _ in 0..replies {
                    self.enqueue(idx, now);
                }
            }
        }
        if cqueue::more(flags) {
            return Ok(());
        }
        if self.conns[idx].dead {
            return Ok(());
        }
        if res > 0 || res == -libc::ENOBUFS {
            self.arm_recv(idx)
        } else {
            // EOF or an error: the connection is gone.
            self.kill(idx);
            Ok(())
        }
    }

    fn on_send(&mut self, idx: usize, res: i32) -> Result<(), LoadError> {
        if res < 0 {
            self.kill(idx);
            return Ok(());
        }
        let c = &mut self.conns[idx];
        if let Some(rest) = c.out.on_sent(res as usize) {
            if c.dead {
                return Ok(());
            }
            let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
            let sqe = opcode::Send::new(types::Fixed(idx as u32), ptr, len).build().user_data(ud(idx, KIND_SEND));
            return self.push(sqe);
        }
        if !c.out.is_idle() {
            self.mark(idx);
        }
        Ok(())
    }

    fn outstanding_count(&self) -> usize {
        self.conns.iter().filter(|c| !c.dead).map(|c| c.matcher.outstanding()).sum()
    }

    /// Submits the turn's requests and waits for `want` completions. With batching (kernel
    /// 6.12+, IORING_FEAT_MIN_TIMEOUT) the kernel wakes us once `want` completions are there
    /// or the reap wait passed with at least one. Never longer than `timeout_ns`.
    fn enter(&mut self, want: usize, timeout_ns: u64) -> Result<(), LoadError> {
        let ts = Timespec::from(Duration::from_nanos(timeout_ns));
        let arg = GeteventsArg {
            sigmask: 0,
            sigmask_sz: 0,
            min_wait_usec: if self.batch { self.reap_wait_us } else { 0 },
            ts: (&ts as *const Timespec) as u64,
        };
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: `arg` is a valid io_uring_getevents_arg (EXT_ARG) whose `ts` points to a
        // timespec that outlives the call; the SQEs submitted were checked when pushed.
        let r =
            unsafe { self.ring.submitter().enter(to_submit, want as u32, ENTER_GETEVENTS | ENTER_EXT_ARG, Some(&arg)) };
        match r {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(source) => Err(LoadError::Sys { call: "io_uring_enter", source }),
        }
    }

    fn outstanding(&self) -> bool {
        self.conns.iter().any(|c| !c.dead && c.matcher.outstanding() > 0)
    }

    fn run(&mut self, mut pacer: Option<Pacer>) -> Result<(), LoadError> {
        for idx in 0..self.conns.len() {
            self.arm_recv(idx)?;
        }
        let p = self.phases;
        if pacer.is_none() {
            let now = now_ns();
            for idx in 0..self.conns.len() {
                for _ in 0..self.depth {
                    self.enqueue(idx, now);
                }
            }
        }
        let local = self.conns.len();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            let now = now_ns();
            let sending = now < p.window_end;
            let mut wake = if now < p.window_start {
                p.window_start
            } else if sending {
                p.window_end
            } else {
                p.drain_end
            };
            if let Some(pc) = pacer.as_mut() {
                if sending {
                    let stride = pc.stride as usize;
                    for seq in pc.due(now - p.start) {
                        let idx = (seq as usize / stride) % local;
                        let t = p.start + pc.schedule().intended_ns(seq);
                        self.enqueue(idx, t);
                    }
                    wake = wake.min(p.start + pc.wake_at(now - p.start));
                }
            }
            self.flush()?;
            self.bufs.publish();
            self.progress.sent.store(self.res.sent, Ordering::Relaxed);
            self.progress.received.store(self.res.received, Ordering::Relaxed);
            if self.res.live == 0 {
                return Err(LoadError::AllConnectionsLost(self.conns.len()));
            }
            if !sending && (!self.outstanding() || now >= p.drain_end) {
                break;
            }
            let wait = wake.saturating_sub(now).clamp(1, MAX_WAIT_NS);
            // Closed loop: wake at the first completion (the next message goes out at once,
            // keeping the server busy; batching wakeups measured slower and costlier here).
            // Open loop: nothing to send before the pacing timeout, so wait for every response
            // in flight; min_wait still wakes us a pace after the first one.
            let want = if self.batch && self.open { self.outstanding_count().max(1) } else { 1 };
            self.enter(want, wait)?;
            let now = now_ns();
            cqes.clear();
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            for &(ud, res, flags) in &cqes {
                let idx = (ud >> 1) as usize;
                match ud & 1 {
                    KIND_RECV => self.on_recv(idx, res, flags, now)?,
                    _ => self.on_send(idx, res)?,
                }
            }
        }
        self.res.drained = !self.outstanding();
        Ok(())
    }

    /// Cancels every request still in flight so no completion can name freed memory, then
    /// unregisters the buffer ring (the ring and the mappings drop afterwards, in that order).
    fn finish(&mut self) {
        let _ = self.ring.submit();
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(Timespec::from(Duration::from_secs(1))), CancelBuilder::any().all());
        for c in self.ring.completion() {
            if let Some(bid) = cqueue::buffer_select(c.flags()) {
                self.bufs.recycle(bid);
            }
        }
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

fn thread_main(
    streams: Vec<TcpStream>,
    opts: &LoadOpts,
    request: &[u8],
    phases: Phases,
    pacer: Option<Pacer>,
    progress: &Totals,
) -> Result<ThreadResult, LoadError> {
    let mut w = Worker::new(streams, opts, request, phases, progress)?;
    if let Some(p) = pacer.as_ref() {
        w.reap_wait_us = (p.slack_ns / 1000).clamp(1, u32::MAX as u64) as u32;
    }
    let r = w.run(pacer);
    w.finish();
    r?;
    w.res.headers = w.probe.names.take();
    Ok(std::mem::take(&mut w.res))
}

/// One thread's running totals, published once per loop turn for the progress lines.
#[derive(Debug, Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
}

/// CPU time (user + system) of the whole process: every generator thread.
fn process_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer; the call only writes `ru`.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn sleep_until(t: u64) {
    let now = now_ns();
    if t > now {
        std::thread::sleep(Duration::from_nanos(t - now));
    }
}

/// How often the harness thread looks whether the generator threads finished their drain
/// (only on runs that print progress lines).
const DRAIN_POLL_NS: u64 = 20_000_000;

/// The once-a-second progress report of the harness thread (the generator threads only
/// publish their totals).
struct Ticker<'t> {
    next: u64,
    totals: &'t [Totals],
}

impl<'t> Ticker<'t> {
    fn new(start: u64, totals: &'t [Totals]) -> Self {
        Ticker { next: start + 1_000_000_000, totals }
    }

    /// Sleeps until `t`, reporting [`Edge::Progress`] at every whole second on the way.
    fn sleep_until(&mut self, t: u64, edge: &mut dyn FnMut(Edge)) {
        while self.next <= t {
            sleep_until(self.next);
            let sum = |f: fn(&Totals) -> &AtomicU64| self.totals.iter().map(|x| f(x).load(Ordering::Relaxed)).sum();
            edge(Edge::Progress { sent: sum(|x| &x.sent), received: sum(|x| &x.received) });
            self.next += 1_000_000_000;
        }
        sleep_until(t);
    }
}

/// Generator settings that are not part of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Generator threads.
    pub threads: usize,
    /// Open loop: time resolution — sends are batched no finer than this, and responses are
    /// reaped (timestamped) at most this late.
    pub pace: Duration,
    /// CPUs for the threads: thread `t` is pinned to `cpus[t % cpus.len()]`. Empty: every
    /// thread inherits the calling thread's CPU affinity.
    pub cpus: Vec<usize>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { threads: 1, pace: Duration::from_nanos(PACE_SLACK_NS), cpus: Vec::new() }
    }
}

/// Runs one load against `addr`. `edge` is called at the start and end of the measured
/// window. Client CPU is the whole process's CPU time between the edges.
pub fn run(
    addr: SocketAddr,
    opts: &LoadOpts,
    tuning: &Tuning,
    mut edge: impl FnMut(Edge),
) -> Result<LoadResult, LoadError> {
    let threads = tuning.threads.clamp(1, opts.conns.max(1));
    let slack = (tuning.pace.as_nanos() as u64).max(1);
    // The workload's own wire (a `--target`'s path and Host, a `--payload` file).
    let streams = loadgen::connect_with(addr, opts.scenario, opts.conns, &wire::ws_handshake_for(opts, addr))?;
    let request = wire::request_for(opts);
    let schedule = opts.rate.and_then(Schedule::new);
    let mut shares: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        shares[i % threads].push(s);
    }
    let start = now_ns();
    let window_start = start + opts.warmup.as_nanos() as u64;
    let window_end = window_start + opts.duration.as_nanos() as u64;
    let phases = Phases { start, window_start, window_end, drain_end: window_end + DRAIN_TIMEOUT.as_nanos() as u64 };
    let totals: Vec<Totals> = (0..threads).map(|_| Totals::default()).collect();
    let cpus = &tuning.cpus;
    let (results, cpu) = std::thread::scope(|scope| {
        let handles = shares
            .into_iter()
            .enumerate()
            .map(|(t, share)| {
                let pacer = schedule.map(|s| Pacer::new(s, threads, t, slack));
                let (request, progress) = (&request, &totals[t]);
                let cpu = (!cpus.is_empty()).then(|| cpus[t % cpus.len()]);
                std::thread::Builder::new().name(format!("loadgen-{t}")).spawn_scoped(scope, move || {
                    if let Some(c) = cpu {
                        crate::server::pin_self(c)
                            .map_err(|source| LoadError::Sys { call: "sched_setaffinity", source })?;
                    }
                    thread_main(share, opts, request, phases, pacer, progress)
                })
            })
            .collect::<Vec<_>>();
        // Runs longer than PROGRESS_AFTER report the totals about once a second, as the
        // classic generator does (warmup, window and drain alike).
        let mut ticker = (opts.warmup + opts.duration > PROGRESS_AFTER).then(|| Ticker::new(start, &totals));
        let mut wait_until = |t: u64, edge: &mut dyn FnMut(Edge)| match ticker.as_mut() {
            Some(tk) => tk.sleep_until(t, edge),
            None => sleep_until(t),
        };
        wait_until(window_start, &mut edge);
        edge(Edge::Start);
        let cpu0 = process_cpu();
        wait_until(window_end, &mut edge);
        let cpu = process_cpu().saturating_sub(cpu0);
        edge(Edge::End);
        if let Some(tk) = ticker.as_mut() {
            // The drain: keep reporting until every thread is done.
            while !handles.iter().all(|h| h.as_ref().map_or(true, |h| h.is_finished())) {
                tk.sleep_until(now_ns() + DRAIN_POLL_NS, &mut edge);
            }
        }
        let results = handles
            .into_iter()
            .enumerate()
            .map(|(t, h)| match h {
                Ok(h) => h.join().unwrap_or(Err(LoadError::ThreadPanicked(t))),
                Err(source) => Err(LoadError::Sys { call: "thread spawn", source }),
            })
            .collect::<Vec<_>>();
        (results, cpu)
    });
    let mut total = LoadResult {
        messages: 0,
        window: opts.duration,
        latency: Latency::new(),
        sent: 0,
        received: 0,
        bad_status: 0,
        lost_conns: 0,
        client_cpu: cpu,
        drained: true,
        late: 0,
        send_lag: schedule.map(|_| Latency::new()),
        tls: None,
        wire: None,
    };
    let (mut rx_bytes, mut headers) = (0u64, None);
    for r in results {
        let r = r?;
        total.messages += r.window_msgs;
        total.latency.merge(&r.latency);
        total.sent += r.sent;
        total.received += r.received;
        total.bad_status += r.bad_status;
        total.lost_conns += r.lost;
        total.drained &= r.drained;
        total.late += r.late;
        if let (Some(t), Some(l)) = (total.send_lag.as_mut(), r.lag.as_ref()) {
            t.merge(l);
        }
        rx_bytes += r.rx_bytes;
        headers = headers.or(r.headers);
    }
    total.wire = loadgen::WireBytes::of(request.len(), rx_bytes, total.received, headers);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Scenario;
    use crate::testutil::{echo_server, short_load as opts};

    // --- Pacer: a simulated clock, no sleeping. ---

    /// Drives `threads` pacers over one schedule with a simulated clock: each pacer's wakeups
    /// come `late_by()` after the time it asked for. Returns every handed-out message as
    /// (seq, thread, handed out at).
    fn simulate(rate: f64, threads: usize, end: u64, mut late_by: impl FnMut() -> u64) -> Vec<(u64, usize, u64)> {
        let s = Schedule::new(rate).unwrap();
        let mut out = Vec::new();
        for t in 0..threads {
            let mut p = Pacer::new(s, threads, t, PACE_SLACK_NS);
            let mut now = 0;
            while now < end {
                out.extend(p.due(now).map(|seq| (seq, t, now)));
                let wake = p.wake_at(now);
                assert!(wake >= now + PACE_SLACK_NS, "wakeup closer than the slack: {wake} at {now}");
                now = wake + late_by();
            }
            out.extend(p.due(end).map(|seq| (seq, t, end)));
        }
        out.sort_unstable();
        out
    }

    fn check_pacing(rate: f64, threads: usize, end: u64, out: &[(u64, usize, u64)]) {
        let s = Schedule::new(rate).unwrap();
        for (i, &(seq, t, at)) in out.iter().enumerate() {
            assert_eq!(seq, i as u64, "every message handed out exactly once");
            assert_eq!(seq as usize % threads, t, "message {seq} went to the wrong thread");
            assert!(s.intended_ns(seq) <= at, "message {seq} sent at {at}, before {}", s.intended_ns(seq));
        }
        assert_eq!(out.len() as u64, s.due_count(end), "everything due by the end went out");
    }

    #[test]
    fn pacer_on_time_sends_at_intended_times() {
        // 2000/s over 300 ms, one thread: 601 messages (t = 0 included), each at its time.
        let out = simulate(2000.0, 1, 300_000_000, || 0);
        check_pacing(2000.0, 1, 300_000_000, &out);
        assert_eq!(out.len(), 601);
        let s = Schedule::new(2000.0).unwrap();
        assert!(out.iter().all(|&(seq, _, at)| at == s.intended_ns(seq)));
    }

    #[test]
    fn pacer_batches_finer_rates_into_slack_sized_turns() {
        // 1M/s = one message per µs: turns are PACE_SLACK_NS apart and each sends its batch.
        let end = 2_000_000;
        let out = simulate(1e6, 1, end, || 0);
        check_pacing(1e6, 1, end, &out);
        let turns = out.iter().map(|&(_, _, at)| at).collect::<std::collections::BTreeSet<_>>();
        assert!(turns.len() as u64 <= end / PACE_SLACK_NS + 2, "{} turns", turns.len());
        assert!(out.len() > 10 * turns.len(), "batches of ~20 messages");
    }

    #[test]
    fn pacer_late_turns_catch_up_and_threads_split_the_schedule() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let jitter = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 3_000_000
        };
        for threads in [1, 2, 3] {
            let out = simulate(5000.0, threads, 200_000_000, jitter);
            check_pacing(5000.0, threads, 200_000_000, &out);
            assert_eq!(out.len(), 1001);
        }
    }

    // --- SendQueue: batching and short sends. ---

    #[test]
    fn send_queue_batches_a_turn_and_resumes_short_sends() {
        let mut q = SendQueue::default();
        assert!(q.is_idle() && q.start(|_| {}).is_none());
        let mut lags = Vec::new();
        q.push(b"aaa", Some(1));
        q.push(b"bb", Some(2));
        assert_eq!(q.start(|t| lags.push(t)).unwrap(), b"aaabb", "one send for the whole turn");
        assert_eq!(lags, [1, 2]);
        assert!(q.busy());
        // Queued while a send is in flight: waits for it.
        q.push(b"c", None);
        assert!(q.start(|_| {}).is_none());
        // A short send continues with the rest, in order.
        assert_eq!(q.on_sent(2).unwrap(), b"abb");
        assert_eq!(q.on_sent(1).unwrap(), b"bb");
        assert!(q.on_sent(2).is_none());
        assert!(!q.busy() && !q.is_idle());
        assert_eq!(q.start(|_| {}).unwrap(), b"c");
        assert!(q.on_sent(1).is_none());
        assert!(q.is_idle());
    }

    // --- Matcher: responses split and coalesced across receives. ---

    /// Feeds `wire` in pieces cut at `cuts` and returns the stamps completed.
    fn matched(s: Scenario, size: usize, wire: &[u8], stamps: u64, cuts: &[usize]) -> Vec<u64> {
        let mut m = Matcher::new(ResponseCounter::new(s, size));
        for t in 0..stamps {
            m.push(100 + t);
        }
        let mut got = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain([wire.len()].iter()) {
            let c = c.min(wire.len()).max(at);
            m.feed(&mut wire[at..c].to_vec(), |t| got.push(t)).unwrap();
            at = c;
        }
        assert_eq!(m.outstanding() as u64, stamps - got.len() as u64);
        got
    }

    #[test]
    fn matcher_pairs_responses_with_stamps_across_splits_and_coalescing() {
        let http = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nHello World".to_vec();
        // A server frame carrying the generated payload (the first echo is checked).
        let mut ws = vec![0x81, 5];
        ws.extend_from_slice(&wire::message_payload(&LoadOpts {
            scenario: Scenario::Ws,
            size: 5,
            ..LoadOpts::default()
        }));
        let cases: Vec<(Scenario, usize, Vec<u8>)> = vec![
            (Scenario::Echo, 64, wire::request(Scenario::Echo, 64)),
            (Scenario::Text, 20, wire::request(Scenario::Text, 20)),
            (Scenario::Frame, 20, wire::request(Scenario::Frame, 20)),
            (Scenario::Ws, 5, ws),
            (Scenario::Http, 0, http),
        ];
        for (s, size, one) in cases {
            let wire = one.repeat(7);
            let len = wire.len();
            let expect: Vec<u64> = (100..107).collect();
            // Coalesced: everything in one receive.
            assert_eq!(matched(s, size, &wire, 7, &[]), expect, "{s:?} coalesced");
            // Split byte by byte, and at awkward places (mid-head, mid-body, across messages).
            let bytes: Vec<usize> = (1..len).collect();
            assert_eq!(matched(s, size, &wire, 7, &bytes), expect, "{s:?} bytewise");
            let odd = [1, one.len() - 1, one.len() + 2, 3 * one.len() + 1, len - 1];
            assert_eq!(matched(s, size, &wire, 7, &odd), expect, "{s:?} odd cuts");
            // A partial response completes nothing.
            assert!(matched(s, size, &wire[..one.len() - 1], 7, &[]).is_empty(), "{s:?} partial");
        }
    }

    #[test]
    fn matcher_rejects_a_response_nobody_asked_for() {
        let mut m = Matcher::new(ResponseCounter::new(Scenario::Echo, 4));
        m.push(1);
        let mut got = Vec::new();
        assert!(matches!(m.feed(&mut b"abcdefgh".to_vec(), |t| got.push(t)), Err(LoadError::Unexpected(_))));
        assert_eq!(got, [1]);
    }

    // --- The whole generator against real servers (counts only, no timing assertions). ---

    fn check(r: &LoadResult) {
        assert!(r.drained, "{r:?}");
        assert_eq!(r.sent, r.received, "{r:?}");
        assert_eq!((r.lost_conns, r.bad_status), (0, 0), "{r:?}");
        assert!(r.messages > 0 && r.messages <= r.received, "{r:?}");
        assert!(!r.latency.is_empty() && r.latency.len() <= r.received, "{r:?}");
        assert!(r.late <= r.latency.len(), "{r:?}");
    }

    #[test]
    fn closed_loop_against_a_std_echo_server() {
        let addr = echo_server();
        for (s, threads) in [(Scenario::Echo, 1), (Scenario::Text, 2), (Scenario::Frame, 3)] {
            let mut edges = Vec::new();
            let tuning = Tuning { threads, ..Tuning::default() };
            let o = opts(s, 6, 4, None);
            let r = run(addr, &o, &tuning, |e| edges.push(e)).unwrap();
            check(&r);
            assert!(r.send_lag.is_none());
            // An echo answers every request with its own bytes: counted on the wire, the
            // response weighs what the request did (no head to name: not http).
            let n = crate::wire::request_for(&o).len() as f64;
            assert_eq!(r.wire, Some(loadgen::WireBytes { request: n, response: n, headers: None }), "{s:?}");
            assert_eq!(edges, vec![Edge::Start, Edge::End]);
        }
    }

    #[test]
    fn open_loop_against_a_std_echo_server() {
        let addr = echo_server();
        for threads in [1, 2] {
            let o = LoadOpts { warmup: Duration::ZERO, ..opts(Scenario::Frame, 4, 1, Some(3000.0)) };
            let tuning = Tuning { threads, pace: Duration::from_micros(100), ..Tuning::default() };
            let r = run(addr, &o, &tuning, |_| {}).unwrap();
            check(&r);
            let lag = r.send_lag.as_ref().unwrap();
            // Every message intended inside the window has a send lag sample and a latency.
            assert_eq!(lag.len(), r.latency.len(), "{r:?}");
        }
    }

    #[test]
    fn long_runs_report_progress_every_second_and_threads_follow_the_cpu_list() {
        let addr = echo_server();
        // Longer than PROGRESS_AFTER: one progress edge per whole second, drain included.
        let o = LoadOpts {
            warmup: Duration::from_millis(200),
            duration: PROGRESS_AFTER,
            ..opts(Scenario::Echo, 4, 1, Some(2000.0))
        };
        let tuning = Tuning { threads: 2, cpus: vec![0], ..Tuning::default() };
        let mut edges = Vec::new();
        let r = run(addr, &o, &tuning, |e| edges.push(e)).unwrap();
        check(&r);
        let at = |want: Edge| edges.iter().position(|&e| e == want).unwrap();
        let (start, end) = (at(Edge::Start), at(Edge::End));
        let progress: Vec<(usize, u64, u64)> = edges
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match *e {
                Edge::Progress { sent, received } => Some((i, sent, received)),
                _ => None,
            })
            .collect();
        assert_eq!(progress.len(), 3, "{edges:?}");
        // The window starts at 0.2 s and ends at 3.2 s: the ticks at 1, 2 and 3 s fall inside.
        assert!(start < progress[0].0 && progress[2].0 < end, "{edges:?}");
        for w in progress.windows(2) {
            assert!(w[1].1 > w[0].1 && w[1].2 > w[0].2, "totals must grow: {edges:?}");
        }
        assert!(progress.iter().all(|&(_, sent, received)| received <= sent && sent <= r.sent));
        // Short runs print nothing.
        let mut edges = Vec::new();
        let tuning = Tuning { cpus: vec![0], ..Tuning::default() };
        run(addr, &opts(Scenario::Echo, 2, 1, None), &tuning, |e| edges.push(e)).unwrap();
        assert_eq!(edges, vec![Edge::Start, Edge::End]);
    }

    /// The repo's own engine as the server: `ringman_server::serve` on a thread.
    fn ringman_server(scheme: &str) -> SocketAddr {
        let scheme = scheme.to_string();
        crate::testutil::on_thread(move |a| crate::ringman_server::serve(&format!("{scheme}://{a}")))
    }

    #[test]
    fn every_scenario_against_the_ringman_engine() {
        for (scheme, s, depth) in [
            ("tcp", Scenario::Echo, 8),
            ("text", Scenario::Text, 4),
            ("frame", Scenario::Frame, 1),
            ("websocket", Scenario::Ws, 2),
            ("http", Scenario::Http, 16),
        ] {
            let addr = ringman_server(scheme);
            let r = run(addr, &opts(s, 8, depth, None), &Tuning { threads: 2, ..Tuning::default() }, |_| {}).unwrap();
            check(&r);
            let w = r.wire.as_ref().unwrap();
            if s == Scenario::Http {
                // `Hello World` with ringman's three headers, named in order.
                assert_eq!(w.headers.as_deref(), Some("Date, Content-Type, Content-Length"), "{w:?}");
                assert!(w.response > 11.0 + 60.0 && w.response < 200.0, "{w:?}");
            } else {
                assert_eq!(w.headers, None);
            }
            let o = LoadOpts { warmup: Duration::ZERO, ..opts(s, 8, 1, Some(2000.0)) };
            let r = run(addr, &o, &Tuning::default(), |_| {}).unwrap();
            check(&r);
        }
    }
}
