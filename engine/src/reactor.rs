//! The per-thread reactor core: ring, connection slab, buffers, timers.
//!
//! A `Core` lives in a thread-local of its ring thread and is only ever touched by that
//! thread, so nothing here locks. The worker loop (`worker.rs`) borrows it briefly for each
//! step and never while a user callback runs; user-facing calls (`Connection::send`,
//! `Timer::add`) borrow it the same way. Anything that must call back into user code
//! (on_close, on_buffer_full, ...) is queued as an [`Event`] and delivered by the loop once
//! the borrow is released.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use ringman_protocols::{Decoder, Encoder, Framer, MessageKind};
use slab::Slab;

use crate::buffers::{ChunkMem, RecvRing, SendArena, CHUNK, RECV_BGID};
use crate::connection::{Connection, ConnectionId, SendStatus};
use crate::error::{panic_message, ConnError};
use crate::ring::{FixedSend, Kind, RingMode, Token};
use crate::server::{Mailbox, ThreadStats};
use crate::timer::Timers;
use crate::worker::{SendMode, WorkerConfig};

thread_local! {
    static CORE: RefCell<Option<Core>> = const { RefCell::new(None) };
    static THREAD: Cell<u16> = const { Cell::new(u16::MAX) };
}

/// Runs `f` on this thread's core; `None` when not on a ring thread.
pub(crate) fn with_core<R>(f: impl FnOnce(&mut Core) -> R) -> Option<R> {
    CORE.with(|c| match c.try_borrow_mut() {
        Ok(mut g) => g.as_mut().map(f),
        Err(_) => {
            debug_assert!(false, "re-entrant core borrow");
            None
        }
    })
}

/// Global index of the current ring thread, if this is one.
pub(crate) fn current_thread() -> Option<u16> {
    let t = THREAD.with(Cell::get);
    (t != u16::MAX).then_some(t)
}

pub(crate) fn install(core: Core) {
    THREAD.with(|t| t.set(core.thread));
    CORE.with(|c| *c.borrow_mut() = Some(core));
}

pub(crate) fn uninstall() -> Option<Core> {
    THREAD.with(|t| t.set(u16::MAX));
    CORE.with(|c| c.borrow_mut().take())
}

/// Something the worker loop must tell user code about.
pub(crate) enum Event {
    Connect(Connection),
    Close(Connection),
    Error(Connection, ConnError),
    BufferFull(Connection),
    BufferDrain(Connection),
    /// `resume_recv()` was called: deliver what was buffered while paused.
    Resume(Connection),
}

/// Lifecycle of a connection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Established,
    /// `close()` was called: flush the send queue, then close (bounded by a deadline).
    Closing,
    /// `end()` flushed and half-closed: incoming bytes are discarded until the peer closes
    /// or the linger deadline passes, so the peer reads our last reply instead of a reset.
    Lingering,
    /// Destroyed: on_close was queued, the socket is shut down, the slot waits for its
    /// in-flight operations to complete before the fd is closed and the slot freed.
    Closed,
}

pub(crate) struct Chunk {
    mem: ChunkMem,
    start: usize,
    end: usize,
}

/// The application send buffer of one connection (Workerman's `sendBuffer`), made of
/// registered chunks when available.
#[derive(Default)]
pub(crate) struct SendQueue {
    chunks: VecDeque<Chunk>,
    len: usize,
}

/// A point on a core's monotonic clock in milliseconds since the core started, never zero so
/// that `Option<Stamp>` takes 4 bytes: activity stamps cost 4 bytes per connection instead of
/// an `Instant`'s 16 (P5 measures bytes per idle connection). Differences wrap after ~49
/// days, far beyond any timeout they are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(NonZeroU32);

impl Stamp {
    const MIN: Stamp = Stamp(NonZeroU32::MIN);

    fn at(epoch: Instant, t: Instant) -> Stamp {
        let ms = t.saturating_duration_since(epoch).as_millis() as u32;
        Stamp(NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN))
    }

    /// Time from `self` to the later stamp `now`.
    fn until(self, now: Stamp) -> Duration {
        Duration::from_millis(u64::from(now.0.get().wrapping_sub(self.0.get())))
    }
}

/// Process-wide source of connection serials (see [`ConnectionId`]); rings take blocks.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);
/// Serials a ring reserves at a time, so accepting touches the shared counter rarely.
const SERIAL_BLOCK: u64 = 4096;
/// Serials are 48 bits (the thread takes the top 16 of an id).
const SERIAL_MASK: u64 = (1 << 48) - 1;

/// The block of serials a core hands out.
struct Serials {
    next: u64,
    end: u64,
}

impl Serials {
    /// The next id number for a connection of `thread`: thread (16 bits) | serial (48 bits).
    fn take(&mut self, thread: u16) -> u64 {
        if self.next == self.end {
            self.next = NEXT_SERIAL.fetch_add(SERIAL_BLOCK, Ordering::Relaxed);
            self.end = self.next + SERIAL_BLOCK;
        }
        let n = self.next & SERIAL_MASK;
        self.next += 1;
        (thread as u64) << 48 | n
    }
}

/// The generation a slot's operations carry in their `user_data` (24 bits of the serial).
fn gen_of(serial: u64) -> u32 {
    serial as u32 & 0xFF_FFFF
}

/// One connection slot.
pub(crate) struct ConnState {
    pub fd: RawFd,
    /// The connection's id number ([`ConnectionId::as_u64`]).
    pub serial: u64,
    pub status: Status,
    /// `on_close` is queued but not delivered yet: the slot stays (user code sees the
    /// connection's context, address and counters in `on_close`).
    close_hold: bool,
    recv_armed: bool,
    pub paused: bool,
    /// Receiving was paused by the engine because the send queue reached its limit
    /// (`WorkerConfig::backpressure`); resumed once it drained to half.
    throttled: bool,
    send_inflight: bool,
    dirty: bool,
    /// Operations whose CQE has not arrived yet; the slot is freed only at zero.
    inflight: u32,
    /// Taken by the worker loop while it delivers messages.
    pub decoder: Option<Box<dyn Decoder>>,
    pub framer: Option<Framer>,
    encoder: Box<dyn Encoder>,
    identity_encoder: bool,
    sendq: SendQueue,
    drain_pending: bool,
    buffer_full: bool,
    /// Half-close and linger after the flush instead of closing (`end()`).
    linger: bool,
    pub default_kind: MessageKind,
    pub max_send_buffer_size: usize,
    pub max_package_size: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// The peer's address, read at accept.
    pub peer: Option<SocketAddr>,
    pub context: Option<Box<dyn std::any::Any>>,
    close_deadline: Option<Instant>,
    /// Last time bytes arrived or a send completed (turn clock): the idle timeout's base.
    active: Stamp,
    /// Since when an incomplete packet has been buffered: the packet timeout's base.
    partial_since: Option<Stamp>,
    /// Last time bytes arrived (turn clock): the heartbeat's base.
    heard: Stamp,
    /// When the unanswered heartbeat ping went out, if one is outstanding.
    ping_sent: Option<Stamp>,
    /// The WebSocket handshake is done: frames (and heartbeat pings) may be sent.
    pub upgraded: bool,
    /// We sent a WebSocket close frame and wait for the peer's (bounded by
    /// `close_deadline`); its close is then not echoed.
    pub ws_close_sent: bool,
}

impl ConnState {
    pub(crate) fn queued(&self) -> usize {
        self.sendq.len
    }
}

/// Per-thread engine state.
pub(crate) struct Core {
    pub ring: IoUring,
    pub mode: RingMode,
    pub thread: u16,
    pub conns: Slab<ConnState>,
    serials: Serials,
    /// Slot of each live connection by serial, for ids rebuilt with `ConnectionId::from_u64`.
    /// Built on the first such lookup and kept from then on: applications that never
    /// rebuild ids pay nothing per connection for it.
    by_serial: RefCell<Option<HashMap<u64, u32>>>,
    /// User values (contexts) of freed slots, dropped by the loop outside the core borrow.
    pub graveyard: Vec<Box<dyn std::any::Any>>,
    recv: RecvRing,
    arena: SendArena,
    fixed_send: FixedSend,
    pub listeners: Vec<ListenerSlot>,
    pub events: VecDeque<Event>,
    early: Vec<(u64, i32, u32)>,
    dirty: Vec<usize>,
    enobufs: Vec<usize>,
    scratch: Vec<u8>,
    pub timers: Timers,
    pub cfg: Arc<WorkerConfig>,
    pub mailbox: Arc<Mailbox>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    pub stats: Arc<ThreadStats>,
    pub stopping: Option<Instant>,
    accept_retry: Option<Instant>,
    accept_paused: bool,
    closing: usize,
    /// Set when this run drains for a recycle rather than a stop.
    pub recycle: bool,
    /// Wall clock read once per loop turn, after the wait.
    pub wall: std::time::SystemTime,
    /// When this core started: the origin of [`Stamp`]s.
    epoch: Instant,
    /// The monotonic clock read once per loop turn, after the wait, as a [`Stamp`].
    pub stamp: Stamp,
}

/// A listening socket this ring accepts on. The ring never closes it: the ring thread (own
/// SO_REUSEPORT socket) or `Running` (shared socket) does, so a restarted ring reuses it.
pub(crate) struct ListenerSlot {
    pub fd: RawFd,
    pub armed: bool,
}

impl Core {
    pub(crate) fn new(
        thread: u16,
        cfg: Arc<WorkerConfig>,
        listeners: Vec<ListenerSlot>,
        mailbox: Arc<Mailbox>,
        stats: Arc<ThreadStats>,
        fixed_bytes: usize,
    ) -> Result<Core, crate::EngineError> {
        let (mut ring, mode) = crate::ring::build()?;
        let recv =
            RecvRing::new(&ring, cfg.recv_buffers, cfg.recv_buffer_size).map_err(crate::EngineError::BufferRing)?;
        let (mut arena, err) = SendArena::new(&ring, fixed_bytes);
        if let Some(e) = err {
            eprintln!("ringman: registered send buffers unavailable ({e}); sending from heap buffers");
        }
        let fixed_send = if arena.fixed_chunks() > 0 {
            let mut probe = arena.alloc();
            let (ptr, _) = arena.bytes(&mut probe);
            let r = crate::ring::probe_fixed_send(&mut ring, ptr);
            arena.release(probe);
            r
        } else {
            FixedSend::WriteFixed
        };
        Ok(Core {
            ring,
            mode,
            thread,
            conns: Slab::with_capacity(1024),
            serials: Serials { next: 0, end: 0 },
            by_serial: RefCell::new(None),
            graveyard: Vec::new(),
            recv,
            arena,
            fixed_send,
            listeners,
            events: VecDeque::new(),
            early: Vec::new(),
            dirty: Vec::new(),
            enobufs: Vec::new(),
            scratch: Vec::new(),
            timers: Timers::default(),
            cfg,
            mailbox,
            wake_buf: Box::new(0),
            wake_armed: false,
            stats,
            stopping: None,
            accept_retry: None,
            accept_paused: false,
            closing: 0,
            recycle: false,
            wall: std::time::SystemTime::now(),
            epoch: Instant::now(),
            stamp: Stamp::MIN,
        })
    }

    /// Pushes an SQE, submitting first if the queue is full.
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every SQE built by the engine points into memory that outlives the
            // operation: buffer-ring memory and arena chunks (buffers.rs invariants), heap send
            // chunks kept in the send queue until the CQE, `wake_buf` kept until the core
            // is dropped after its read completed.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                    eprintln!("ringman: submit failed: {e}");
                }
                // EBUSY: the CQ is full; move completions aside so the kernel can post more.
                self.stash_completions();
            }
        }
    }

    fn stash_completions(&mut self) {
        for cqe in self.ring.completion() {
            self.early.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
    }

    pub(crate) fn arm_accept(&mut self, idx: usize) {
        let l = &mut self.listeners[idx];
        if l.armed {
            return;
        }
        l.armed = true;
        let sqe = opcode::AcceptMulti::new(types::Fd(l.fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(Token::new(Kind::Accept, idx, 0).to_u64());
        self.push(sqe);
    }

    pub(crate) fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        self.wake_armed = true;
        let ptr: *mut u64 = &mut *self.wake_buf;
        let sqe = opcode::Read::new(types::Fd(self.mailbox.eventfd()), ptr.cast(), 8)
            .build()
            .user_data(Token::new(Kind::Wake, 0, 0).to_u64());
        self.push(sqe);
    }

    pub(crate) fn wake_done(&mut self) {
        self.wake_armed = false;
    }

    /// Submits everything queued and waits for at least one completion or `timeout`.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) {
        self.flush_dirty();
        self.rearm_enobufs();
        self.recv.publish();
        if !self.early.is_empty() || !self.events.is_empty() {
            let _ = self.ring.submit();
            return;
        }
        let r = match timeout {
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        if let Err(e) = r {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => eprintln!("ringman: io_uring_enter failed: {e}"),
            }
        }
    }

    /// Moves every available completion into `out`, oldest first.
    pub(crate) fn reap(&mut self, out: &mut Vec<(u64, i32, u32)>) {
        out.append(&mut self.early);
        let mut cq = self.ring.completion();
        if cq.overflow() > 0 {
            // Only reachable without IORING_FEAT_NODROP; with it the kernel keeps overflowed
            // CQEs and `submit` flushes them (IORING_SQ_CQ_OVERFLOW is checked there).
            eprintln!("ringman: {} completions were dropped by CQ overflow", cq.overflow());
        }
        out.extend(cq.by_ref().map(|c| (c.user_data(), c.result(), c.flags())));
        drop(cq);
        if self.ring.submission().cq_overflow() {
            self.stats.cq_overflows.set(self.stats.cq_overflows.get() + 1);
        }
    }

    // ---------------------------------------------------------------- accept

    pub(crate) fn on_accept(&mut self, idx: usize, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.listeners[idx].armed = false;
        }
        if res < 0 {
            match -res {
                libc::ECANCELED => {}
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                    // Out of descriptors or memory: back off instead of spinning on errors.
                    eprintln!("ringman: accept failed: {}; retrying in 100 ms", io::Error::from_raw_os_error(-res));
                    self.accept_retry = Some(Instant::now() + Duration::from_millis(100));
                }
                _ => {}
            }
        } else if self.stopping.is_some() {
            // SAFETY: a fresh descriptor from accept that nothing else refers to.
            unsafe { libc::close(res) };
        } else {
            self.open_conn(res);
        }
        if !self.listeners[idx].armed && self.stopping.is_none() && self.accept_retry.is_none() && !self.accept_paused {
            self.arm_accept(idx);
        }
    }

    /// When accepting resumes after a descriptor shortage, if it is paused for one.
    pub(crate) fn accept_retry_at(&self) -> Option<Instant> {
        self.accept_retry
    }

    /// Re-arms accepts that were paused by a descriptor shortage.
    pub(crate) fn retry_accepts(&mut self, now: Instant) {
        if self.accept_retry.is_some_and(|t| t <= now) {
            self.accept_retry = None;
            if self.stopping.is_none() {
                for i in 0..self.listeners.len() {
                    self.arm_accept(i);
                }
            }
        }
    }

    fn open_conn(&mut self, fd: RawFd) {
        // Protocol code (a custom protocol's constructors) is isolated like user code: a
        // panic refuses this connection only.
        let protocol = &self.cfg.protocol;
        let decoder_config = self.cfg.decoder_config.as_deref();
        let made = catch_unwind(AssertUnwindSafe(|| {
            let encoder = protocol.encoder();
            let mut decoder = protocol.decoder();
            if let Some(cfg) = decoder_config {
                decoder.configure(cfg);
            }
            (encoder, decoder)
        }));
        let (encoder, decoder) = match made {
            Ok(x) => x,
            Err(p) => {
                eprintln!(
                    "ringman: protocol {} panicked creating a connection: {}",
                    protocol.name(),
                    panic_message(&*p)
                );
                // SAFETY: a fresh descriptor from accept that nothing else refers to.
                unsafe { libc::close(fd) };
                return;
            }
        };
        let identity_encoder = encoder.is_identity();
        let serial = self.serials.take(self.thread);
        let key = self.conns.insert(ConnState {
            fd,
            serial,
            close_hold: false,
            peer: crate::sys::peer_addr(fd),
            status: Status::Established,
            recv_armed: false,
            paused: false,
            throttled: false,
            send_inflight: false,
            dirty: false,
            inflight: 0,
            decoder: Some(decoder),
            framer: Some(Framer::new()),
            encoder,
            identity_encoder,
            sendq: SendQueue::default(),
            drain_pending: false,
            buffer_full: false,
            linger: false,
            default_kind: self.cfg.default_kind,
            max_send_buffer_size: self.cfg.max_send_buffer_size,
            max_package_size: self.cfg.max_package_size,
            bytes_read: 0,
            bytes_written: 0,
            context: None,
            close_deadline: None,
            active: self.stamp,
            heard: self.stamp,
            ping_sent: None,
            upgraded: false,
            partial_since: None,
            ws_close_sent: false,
        });
        if let Some(m) = self.by_serial.get_mut() {
            m.insert(serial, key as u32);
        }
        self.stats.connections.set(self.stats.connections.get() + 1);
        self.stats.accepted.set(self.stats.accepted.get() + 1);
        self.arm_recv(key);
        let conn = self.handle(key);
        self.events.push_back(Event::Connect(conn));
    }

    /// Reads the monotonic clock into [`Core::stamp`] (once per loop turn).
    pub(crate) fn update_stamp(&mut self) {
        self.stamp = Stamp::at(self.epoch, Instant::now());
    }

    pub(crate) fn handle(&self, key: usize) -> Connection {
        Connection::from_id(ConnectionId::new(self.conns[key].serial, key))
    }

    /// The slot of `conn` if it lives on this thread and is still the same connection.
    pub(crate) fn lookup(&self, conn: ConnectionId) -> Option<usize> {
        if conn.thread() != self.thread {
            return None;
        }
        let key = match conn.slot() {
            Some(k) => k,
            None => {
                let mut map = self.by_serial.borrow_mut();
                let map = map.get_or_insert_with(|| self.conns.iter().map(|(k, c)| (c.serial, k as u32)).collect());
                *map.get(&conn.serial())? as usize
            }
        };
        match self.conns.get(key) {
            Some(c) if c.serial == conn.serial() => Some(key),
            _ => None,
        }
    }

    /// Whether a completion's token belongs to the current occupant of its slot.
    fn live(&self, tok: Token) -> bool {
        matches!(self.conns.get(tok.slot as usize), Some(c) if gen_of(c.serial) == tok.gen)
    }

    // ---------------------------------------------------------------- receive

    fn arm_recv(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.recv_armed || c.paused || c.status == Status::Closed {
            return;
        }
        c.recv_armed = true;
        c.inflight += 1;
        let sqe = opcode::RecvMulti::new(types::Fd(c.fd), RECV_BGID)
            .build()
            .user_data(Token::new(Kind::Recv, key, gen_of(c.serial)).to_u64());
        self.push(sqe);
    }

    /// First half of a receive completion. Returns the data and the taken parser state when
    /// there is something to deliver; handles EOF, errors and ENOBUFS itself.
    pub(crate) fn recv_begin(&mut self, tok: Token, res: i32, flags: u32) -> Option<RecvWork> {
        let bid = cqueue::buffer_select(flags);
        let key = tok.slot as usize;
        if !self.live(tok) {
            // Stale completion: the buffer still has to go back to the kernel.
            if let Some(b) = bid {
                self.recv.recycle(b);
            }
            return None;
        }
        let more = cqueue::more(flags);
        let c = &mut self.conns[key];
        if !more {
            c.recv_armed = false;
            c.inflight -= 1;
        }
        if res <= 0 {
            if let Some(b) = bid {
                self.recv.recycle(b);
            }
            match -res {
                0 => self.destroy(key, None),
                libc::ENOBUFS => {
                    // The buffer ring ran dry; the multishot ended. Re-arm once buffers are
                    // back (end of this loop turn, after this batch recycled its buffers).
                    if c.status != Status::Closed {
                        self.enobufs.push(key);
                    }
                }
                libc::ECANCELED => {
                    // pause_recv() or destroy() cancelled it. If the connection was resumed
                    // (or started lingering) before this completion arrived, that resume found
                    // the receive still armed and left it: re-arm now. arm_recv declines
                    // for paused and closed connections.
                    self.arm_recv(key);
                }
                e => {
                    if c.status != Status::Closed {
                        self.destroy(key, Some(ConnError::Io(io::Error::from_raw_os_error(e))));
                    }
                }
            }
            self.try_free(key);
            return None;
        }
        let bid = bid.expect("receive completion without a buffer");
        let len = res as usize;
        c.bytes_read += len as u64;
        c.active = self.stamp;
        c.heard = self.stamp;
        c.ping_sent = None;
        if !more && c.status != Status::Closed {
            // Multishot ended without an error (for instance the CQ was nearly full): re-arm.
            self.arm_recv(key);
        }
        let c = &mut self.conns[key];
        if matches!(c.status, Status::Closed | Status::Lingering) || c.decoder.is_none() {
            self.recv.recycle(bid);
            self.try_free(key);
            return None;
        }
        // SAFETY: the CQE named `bid` with `len` bytes and we recycle it only in `recv_end`,
        // after the slice is gone (buffers.rs invariant 2).
        let data = unsafe { self.recv.filled(bid, len) };
        if c.paused {
            c.framer.as_mut().expect("framer present").push(data);
            self.recv.recycle(bid);
            return None;
        }
        let conn = Connection::from_id(ConnectionId::new(c.serial, key));
        Some(RecvWork {
            conn,
            key,
            bid: Some(bid),
            data: data.as_mut_ptr(),
            len,
            decoder: c.decoder.take().expect("decoder present"),
            framer: c.framer.take().expect("framer present"),
            max: c.max_package_size,
        })
    }

    /// Takes the parser state of a connection to deliver what it buffered while paused.
    pub(crate) fn resume_begin(&mut self, conn: ConnectionId) -> Option<RecvWork> {
        let key = self.lookup(conn)?;
        let c = &mut self.conns[key];
        // Lingering discards input: nothing buffered is delivered either.
        if c.paused || matches!(c.status, Status::Closed | Status::Lingering) || c.decoder.is_none() {
            return None;
        }
        self.arm_recv(key);
        let c = &mut self.conns[key];
        Some(RecvWork {
            conn: Connection::from_id(conn),
            key,
            bid: None,
            data: std::ptr::null_mut(),
            len: 0,
            decoder: c.decoder.take().expect("decoder present"),
            framer: c.framer.take().expect("framer present"),
            max: c.max_package_size,
        })
    }

    /// Second half: returns the buffer, puts the parser state back, handles a parse error.
    /// On a protocol error the decoder's error reply (an HTTP 400, a close frame) is sent
    /// and the connection ends with a half-close and linger; `on_error` is queued first.
    pub(crate) fn recv_end(&mut self, mut w: RecvWork, delivered: u64, err: Option<ringman_protocols::ProtocolError>) {
        if let Some(b) = w.bid {
            self.recv.recycle(b);
        }
        self.stats.requests.set(self.stats.requests.get() + delivered);
        let Some(key) = self.lookup(w.conn.id()) else { return };
        let mut reply = Vec::new();
        let mut reply_panic = None;
        if let Some(e) = &err {
            reply_panic = error_reply(w.decoder.as_mut(), e, &mut reply).err();
        }
        let c = &mut self.conns[key];
        c.partial_since = match (w.framer.buffered(), c.partial_since) {
            (0, _) => None,
            (_, Some(t)) => Some(t),
            (_, None) => Some(self.stamp),
        };
        c.decoder = Some(w.decoder);
        c.framer = Some(w.framer);
        let Some(e) = err else { return };
        if c.status == Status::Closed {
            return;
        }
        if let Some(p) = reply_panic {
            self.destroy(key, Some(ConnError::Panic(p)));
            return;
        }
        self.fail(key, e, &reply);
    }

    /// Ends a connection the protocol gave up on: with the decoder's `reply` (sent raw, then
    /// half-close and linger, `on_error` first), or destroyed with `on_error` when there is
    /// nothing to say.
    fn fail(&mut self, key: usize, e: ringman_protocols::ProtocolError, reply: &[u8]) {
        match self.conns.get(key) {
            Some(c) if c.status != Status::Closed => {}
            _ => return,
        }
        // After our WebSocket close frame nothing else may be sent (not a second close).
        if reply.is_empty() || self.conns[key].ws_close_sent {
            self.destroy(key, Some(ConnError::Protocol(e)));
        } else {
            let conn = self.handle(key);
            self.events.push_back(Event::Error(conn, ConnError::Protocol(e)));
            // A pause the engine's backpressure will not lift: nothing more reaches the
            // decoder that failed.
            self.user_pause(key);
            self.end(key, Some(reply));
        }
    }

    /// Whether messages may still be delivered to `conn` in this batch.
    pub(crate) fn can_deliver(&self, conn: ConnectionId) -> bool {
        matches!(self.lookup(conn), Some(k) if self.conns[k].status != Status::Closed && !self.conns[k].paused)
    }

    fn rearm_enobufs(&mut self) {
        if self.enobufs.is_empty() {
            return;
        }
        self.recv.publish();
        let keys = std::mem::take(&mut self.enobufs);
        for key in &keys {
            if self.conns.contains(*key) {
                self.arm_recv(*key);
            }
        }
        self.enobufs = keys;
        self.enobufs.clear();
    }

    pub(crate) fn pause(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.paused {
            return;
        }
        c.paused = true;
        if c.recv_armed {
            let ud = Token::new(Kind::Recv, key, gen_of(c.serial)).to_u64();
            c.inflight += 1;
            let sqe = opcode::AsyncCancel::new(ud)
                .build()
                .user_data(Token::new(Kind::Cancel, key, gen_of(c.serial)).to_u64());
            self.push(sqe);
        }
    }

    /// `pause_recv()` from user code: the pause is the application's from now on (the
    /// engine's backpressure no longer lifts it).
    pub(crate) fn user_pause(&mut self, key: usize) {
        self.conns[key].throttled = false;
        self.pause(key);
    }

    pub(crate) fn resume(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.paused || c.status == Status::Closed {
            return;
        }
        c.paused = false;
        c.throttled = false;
        // Time spent paused is the application's, not the peer's: the packet timeout and
        // the heartbeat start afresh (pongs may have waited unread in the socket).
        c.partial_since = None;
        c.heard = self.stamp;
        c.ping_sent = None;
        let conn = self.handle(key);
        self.events.push_back(Event::Resume(conn));
    }

    // ---------------------------------------------------------------- send

    /// Queues (and in eager mode submits) `data` on connection `key`.
    ///
    /// The limit counts what the kernel has not taken, as Workerman's does: a send is refused
    /// only when the bytes still unsent reach `max_send_buffer_size`. Bytes queued in this
    /// loop turn but not yet offered to the kernel (batched mode) are offered first
    /// ([`Core::offer_pending`]), so batching never refuses what an eager write would have
    /// delivered.
    pub(crate) fn send(&mut self, key: usize, data: &[u8], enc: Enc) -> SendStatus {
        let c = &self.conns[key];
        if c.status == Status::Established && c.sendq.len >= c.max_send_buffer_size {
            self.offer_pending(key);
        }
        // (Offering may have found the connection dead.)
        let c = &mut self.conns[key];
        if c.status != Status::Established {
            return SendStatus::Failed;
        }
        if c.sendq.len >= c.max_send_buffer_size {
            let (queued, limit) = (c.sendq.len, c.max_send_buffer_size);
            self.stats.send_fail.set(self.stats.send_fail.get() + 1);
            let conn = self.handle(key);
            self.events.push_back(Event::Error(conn, ConnError::SendBufferFull { queued, limit }));
            return SendStatus::Failed;
        }
        let kind = match enc {
            Enc::Raw => None,
            Enc::Default => Some(c.default_kind),
            Enc::Kind(k) => Some(k),
        };
        match kind {
            None => enqueue(&mut self.arena, &mut c.sendq, data),
            Some(_) if c.identity_encoder => enqueue(&mut self.arena, &mut c.sendq, data),
            Some(kind) => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                // Protocol code is isolated like user code: a panicking encoder ends only
                // this connection.
                let encoded = catch_unwind(AssertUnwindSafe(|| c.encoder.encode(data, kind, &mut scratch)));
                if let Err(p) = encoded {
                    self.scratch = scratch;
                    self.destroy(key, Some(ConnError::Panic(format!("encoder: {}", panic_message(&*p)))));
                    return SendStatus::Failed;
                }
                enqueue(&mut self.arena, &mut c.sendq, &scratch);
                if scratch.capacity() <= 256 * 1024 {
                    self.scratch = scratch;
                }
            }
        }
        let c = &mut self.conns[key];
        if !c.send_inflight {
            match self.cfg.send_mode {
                SendMode::Eager => {
                    self.submit_send(key);
                    match self.complete_inline(key, false) {
                        Some(Inline::Sent) => return SendStatus::Sent,
                        Some(Inline::Gone) => return SendStatus::Failed,
                        Some(Inline::Partial) | None => {}
                    }
                }
                SendMode::Batched => {
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(key);
                    }
                }
            }
        }
        let c = &mut self.conns[key];
        c.drain_pending = true;
        if c.sendq.len >= c.max_send_buffer_size && !c.buffer_full {
            // Same rule as the refusal: full means the kernel has not taken the bytes.
            self.offer_pending(key);
        }
        let Some(c) = self.conns.get_mut(key) else { return SendStatus::Queued };
        if c.status == Status::Established && c.sendq.len >= c.max_send_buffer_size && !c.buffer_full {
            c.buffer_full = true;
            if self.cfg.backpressure && !c.paused {
                // Stop taking this peer's input until its output drains: the peer is slowed
                // by TCP instead of its answers being refused (see `Worker::backpressure`).
                c.throttled = true;
                self.pause(key);
            }
            let conn = self.handle(key);
            self.events.push_back(Event::BufferFull(conn));
        }
        SendStatus::Queued
    }

    /// Offers the bytes of connection `key` that the kernel has not seen yet (queued in this
    /// turn, or a continuation not yet submitted) and takes the completions it posts inline,
    /// until the queue is below the limit or the socket stops taking bytes. One
    /// `io_uring_enter` per chunk, only on the rare path of a queue at its limit.
    fn offer_pending(&mut self, key: usize) {
        loop {
            let Some(c) = self.conns.get(key) else { return };
            if c.status == Status::Closed || c.sendq.len < c.max_send_buffer_size {
                return;
            }
            if !c.send_inflight {
                self.submit_send(key);
            }
            match self.complete_inline(key, true) {
                // Taken whole, and the next piece (if any) is submitted: keep offering.
                Some(Inline::Partial) if self.conns.get(key).is_some_and(|c| c.send_inflight) => {}
                _ => return,
            }
        }
    }

    /// Eager path: submit now and look for this send's completion among those the kernel
    /// posted during submission (a send that fits in the socket buffer completes inline).
    /// Other completions are kept, in order, for the loop.
    ///
    /// With `getevents` the enter also runs deferred task work (DEFER_TASKRUN), so a send
    /// that was parked on a full socket and has since been taken completes here too.
    fn complete_inline(&mut self, key: usize, getevents: bool) -> Option<Inline> {
        let submitted = if getevents {
            let queued = self.ring.submission().len() as u32;
            // SAFETY: no argument pointer is passed; the call submits the queued SQEs (their
            // memory is valid per `push`'s contract) and runs pending completions, no wait.
            unsafe { self.ring.submitter().enter::<libc::sigset_t>(queued, 0, IORING_ENTER_GETEVENTS, None) }
        } else {
            self.ring.submit()
        };
        if submitted.is_err() {
            return None;
        }
        let c = &self.conns[key];
        let want = Token::new(Kind::Send, key, gen_of(c.serial)).to_u64();
        let mut mine = None;
        for cqe in self.ring.completion() {
            if cqe.user_data() == want && mine.is_none() {
                mine = Some(cqe.result());
            } else {
                self.early.push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
        }
        let res = mine?;
        self.on_send_done(key, res);
        Some(match self.conns.get(key) {
            Some(c) if c.status == Status::Closed => Inline::Gone,
            None => Inline::Gone,
            Some(c) if c.sendq.len == 0 => Inline::Sent,
            Some(_) => Inline::Partial,
        })
    }

    fn flush_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.dirty);
        for &key in &keys {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
                if !c.send_inflight && c.sendq.len > 0 && c.status != Status::Closed {
                    self.submit_send(key);
                }
            }
        }
        self.dirty = keys;
        self.dirty.clear();
    }

    fn submit_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let Some(head) = c.sendq.chunks.front_mut() else { return };
        let (base, _) = self.arena.bytes(&mut head.mem);
        // SAFETY: start..end lies within the chunk (enqueue keeps end ≤ capacity).
        let ptr = unsafe { base.add(head.start) };
        let len = (head.end - head.start) as u32;
        let fd = types::Fd(c.fd);
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let sqe = match (&head.mem, self.fixed_send) {
            (ChunkMem::Fixed(_), FixedSend::SendFixed) => opcode::Send::new(fd, ptr, len)
                .ioprio(crate::ring::RECVSEND_FIXED_BUF)
                .buf_group(0)
                .flags(flags)
                .build(),
            (ChunkMem::Fixed(_), FixedSend::WriteFixed) => {
                opcode::WriteFixed::new(fd, ptr, len, 0).offset(u64::MAX).build()
            }
            (ChunkMem::Heap(_), _) => opcode::Send::new(fd, ptr, len).flags(flags).build(),
        };
        c.send_inflight = true;
        c.inflight += 1;
        let ud = Token::new(Kind::Send, key, gen_of(c.serial)).to_u64();
        self.push(sqe.user_data(ud));
    }

    pub(crate) fn on_send(&mut self, tok: Token, res: i32) {
        if self.live(tok) {
            self.on_send_done(tok.slot as usize, res);
        }
    }

    fn on_send_done(&mut self, key: usize, res: i32) {
        let c = &mut self.conns[key];
        c.send_inflight = false;
        c.inflight -= 1;
        if res < 0 {
            if c.status != Status::Closed && res != -libc::ECANCELED {
                self.destroy(key, Some(ConnError::Io(io::Error::from_raw_os_error(-res))));
            }
            self.try_free(key);
            return;
        }
        let mut n = res as usize;
        c.bytes_written += n as u64;
        c.active = self.stamp;
        c.sendq.len -= n;
        while n > 0 {
            let head = c.sendq.chunks.front_mut().expect("completion beyond queued bytes");
            let take = n.min(head.end - head.start);
            head.start += take;
            n -= take;
            if head.start == head.end {
                let done = c.sendq.chunks.pop_front().expect("head exists");
                self.arena.release(done.mem);
            }
        }
        if c.status == Status::Closed {
            self.try_free(key);
            return;
        }
        if c.buffer_full && c.sendq.len < c.max_send_buffer_size {
            c.buffer_full = false;
        }
        if c.throttled && c.sendq.len <= c.max_send_buffer_size / 2 {
            c.throttled = false;
            // A closing connection stays paused (Workerman pauses receiving on close too).
            if c.status == Status::Established {
                self.resume(key);
            }
        }
        let c = &mut self.conns[key];
        if c.sendq.len > 0 {
            // Short send or more data queued meanwhile: one send in flight, keep going.
            self.submit_send(key);
            return;
        }
        // Owed since a send answered Queued, whoever completed the queue (the loop, or an
        // inline completion of a later send): the event is delivered by the loop.
        if c.drain_pending {
            c.drain_pending = false;
            let conn = self.handle(key);
            self.events.push_back(Event::BufferDrain(conn));
        }
        let c = &mut self.conns[key];
        c.drain_pending = false;
        if c.status == Status::Closing {
            self.flushed_closing(key);
        }
    }

    // ---------------------------------------------------------------- close

    /// Graceful close: send `data`, flush, then close; a peer that never reads is cut off at
    /// the close deadline.
    pub(crate) fn close(&mut self, key: usize, data: Option<&[u8]>) {
        if let Some(d) = data {
            self.send(key, d, Enc::Default);
        }
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.status != Status::Established {
            return;
        }
        c.status = Status::Closing;
        c.close_deadline = Some(Instant::now() + self.cfg.close_timeout);
        if !c.ws_close_sent {
            // (A pending WebSocket close handshake is already counted.)
            self.closing += 1;
        }
        if c.sendq.len == 0 && !c.send_inflight {
            self.flushed_closing(key);
        }
    }

    /// Sends `data` raw, flushes, half-closes and lingers (bounded) before closing.
    pub(crate) fn end(&mut self, key: usize, data: Option<&[u8]>) {
        if let Some(d) = data {
            self.send(key, d, Enc::Raw);
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.linger = true;
        }
        self.close(key, None);
    }

    /// The send queue of a Closing connection is empty: close, or half-close and linger.
    fn flushed_closing(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if !c.linger {
            self.destroy(key, None);
            return;
        }
        c.status = Status::Lingering;
        c.throttled = false;
        c.close_deadline = Some(Instant::now() + LINGER);
        // SAFETY: half-closing our own socket: the peer sees FIN after our last bytes.
        unsafe { libc::shutdown(c.fd, libc::SHUT_WR) };
        if c.paused {
            // Keep draining what the peer sends so its close is seen.
            c.paused = false;
            self.arm_recv(key);
        }
    }

    /// Abortive close: on_close is queued now, the socket shut down; the slot is freed when
    /// the last in-flight operation has completed (never earlier, so no late completion can
    /// reach a reused slot or buffer).
    pub(crate) fn destroy(&mut self, key: usize, err: Option<ConnError>) {
        let c = &mut self.conns[key];
        if c.status == Status::Closed {
            return;
        }
        if matches!(c.status, Status::Closing | Status::Lingering) || c.ws_close_sent && c.status == Status::Established
        {
            self.closing -= 1;
        }
        c.status = Status::Closed;
        c.close_deadline = None;
        let fd = c.fd;
        let gen = gen_of(c.serial);
        // SAFETY: shutting down our own socket; it wakes any receive or send parked on it.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        if c.inflight > 0 {
            // Cancel before close (runtimes.md pitfall 4): nothing may keep running on an fd
            // number that the kernel could hand out again.
            c.inflight += 1;
            let sqe = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                .build()
                .user_data(Token::new(Kind::Cancel, key, gen).to_u64());
            self.push(sqe);
        }
        let conn = self.handle(key);
        if let Some(e) = err {
            self.events.push_back(Event::Error(conn, e));
        }
        // The slot stays until on_close has run (`close_delivered`).
        self.conns[key].close_hold = true;
        self.events.push_back(Event::Close(conn));
        self.stats.connections.set(self.stats.connections.get() - 1);
    }

    /// `on_close` of `conn` has run (or was skipped): its slot may go once idle.
    pub(crate) fn close_delivered(&mut self, conn: ConnectionId) {
        if let Some(key) = self.lookup(conn) {
            self.conns[key].close_hold = false;
            self.try_free(key);
        }
    }

    pub(crate) fn on_cancel(&mut self, tok: Token) {
        if self.live(tok) {
            let key = tok.slot as usize;
            self.conns[key].inflight -= 1;
            self.try_free(key);
        }
    }

    /// Frees a destroyed slot once nothing is in flight. Safe to call on a freed key.
    fn try_free(&mut self, key: usize) {
        match self.conns.get(key) {
            Some(c) if c.status == Status::Closed && c.inflight == 0 && !c.close_hold => {}
            _ => return,
        }
        let mut c = self.conns.remove(key);
        if let Some(m) = self.by_serial.get_mut() {
            m.remove(&c.serial);
        }
        // SAFETY: no operation refers to this fd any more (inflight == 0); closed once.
        unsafe { libc::close(c.fd) };
        for chunk in c.sendq.chunks.drain(..) {
            self.arena.release(chunk.mem);
        }
        // User values are dropped by the loop, outside the core (their Drop may call in).
        if let Some(ctx) = c.context.take() {
            self.graveyard.push(ctx);
        }
    }

    /// Destroys connections whose close deadline passed. Returns the next deadline.
    pub(crate) fn expire_closing(&mut self, now: Instant) -> Option<Instant> {
        if self.closing == 0 {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut expired = Vec::new();
        for (key, c) in self.conns.iter() {
            if let Some(d) = c.close_deadline {
                if d <= now {
                    expired.push(key);
                } else {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
            }
        }
        for key in expired {
            self.destroy(key, None);
        }
        next
    }

    /// Starts a WebSocket close handshake: `frame` (our close frame, already encoded by the
    /// caller through the encoder) is queued; the connection closes when the peer answers
    /// with its close, or is cut off after `close_timeout`.
    pub(crate) fn start_ws_close(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.status != Status::Established || c.ws_close_sent {
            return;
        }
        c.ws_close_sent = true;
        c.close_deadline = Some(Instant::now() + self.cfg.close_timeout);
        self.closing += 1;
    }

    /// Applies the idle and packet timeouts (called about once a second when either is
    /// configured). A connection with a packet that has been incomplete for longer than the
    /// packet timeout gets the protocol's timeout reply (HTTP 408) and `on_error`; one that
    /// has been silent, with nothing queued or in flight, for the idle timeout is closed
    /// quietly (the normal end of a keep-alive connection).
    ///
    /// With a WebSocket heartbeat (`ping_interval`), an upgraded connection that has been
    /// silent for an interval gets a ping; one that leaves it unanswered for another interval
    /// is destroyed with `ConnError::NoPong` (a dead peer, which TCP alone would not notice
    /// for a long time).
    pub(crate) fn expire_idle(&mut self, now: Instant) {
        let now = Stamp::at(self.epoch, now);
        let (idle, packet, ping) = (self.cfg.idle_timeout, self.cfg.packet_timeout, self.cfg.ping_interval);
        let mut late = Vec::new();
        let mut idle_keys = Vec::new();
        let mut to_ping = Vec::new();
        let mut dead = Vec::new();
        for (key, c) in self.conns.iter() {
            if c.status != Status::Established || c.decoder.is_none() {
                continue;
            }
            // A paused connection leaves the peer's pongs unread in the socket: no heartbeat.
            if let (Some(iv), true) = (ping, c.upgraded && !c.ws_close_sent && !c.paused) {
                match c.ping_sent {
                    Some(t) if t.until(now) >= iv => {
                        dead.push(key);
                        continue;
                    }
                    // No ping into a full send buffer (it would only report SendBufferFull).
                    None if c.heard.until(now) >= iv && c.sendq.len < c.max_send_buffer_size => {
                        to_ping.push(key);
                        continue;
                    }
                    _ => {}
                }
            }
            match (c.partial_since, packet) {
                (Some(t), Some(limit)) if !c.paused && t.until(now) >= limit => {
                    late.push(key);
                    continue;
                }
                _ => {}
            }
            if let Some(limit) = idle {
                let quiet = c.sendq.len == 0 && !c.send_inflight && c.partial_since.is_none();
                if quiet && c.active.until(now) >= limit {
                    idle_keys.push(key);
                }
            }
        }
        // Each key is in at most one list, but acting on one connection can end it (and free
        // its slot) before a later list is reached: look every key up again.
        let open = |core: &Core, key: usize| core.conns.get(key).is_some_and(|c| c.status == Status::Established);
        for key in idle_keys {
            if open(self, key) {
                self.close(key, None);
            }
        }
        for key in dead {
            if open(self, key) {
                let after = ping.unwrap_or_default();
                self.destroy(key, Some(ConnError::NoPong { after }));
            }
        }
        for key in to_ping {
            if open(self, key)
                && self.send(key, b"", Enc::Kind(ringman_protocols::MessageKind::Ping)) != SendStatus::Failed
            {
                if let Some(c) = self.conns.get_mut(key) {
                    c.ping_sent = Some(now);
                }
            }
        }
        for key in late {
            if !open(self, key) {
                continue;
            }
            let err = ringman_protocols::ProtocolError::Timeout(packet.unwrap_or_default());
            let c = &mut self.conns[key];
            let mut reply = Vec::new();
            if let Some(d) = c.decoder.as_mut() {
                if let Err(p) = error_reply(d.as_mut(), &err, &mut reply) {
                    self.destroy(key, Some(ConnError::Panic(p)));
                    continue;
                }
            }
            if let Some(f) = c.framer.as_mut() {
                f.discard();
            }
            c.partial_since = None;
            self.fail(key, err, &reply);
        }
    }

    // ---------------------------------------------------------------- shutdown

    /// Starts stopping this thread: no more accepts; every connection is closed gracefully
    /// and cut off at `deadline`.
    pub(crate) fn begin_stop(&mut self, deadline: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(deadline);
        self.cancel_accepts();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, None);
            if let Some(c) = self.conns.get_mut(key) {
                if c.status == Status::Closing {
                    c.close_deadline = Some(deadline);
                }
            }
        }
    }

    /// Stops accepting; the listener stays open (a successor process may own a copy).
    pub(crate) fn pause_accept(&mut self) {
        self.accept_paused = true;
        self.cancel_accepts();
    }

    fn cancel_accepts(&mut self) {
        for i in 0..self.listeners.len() {
            if self.listeners[i].armed {
                let ud = Token::new(Kind::Accept, i, 0).to_u64();
                let sqe = opcode::AsyncCancel::new(ud).build().user_data(Token::new(Kind::Shutdown, 0, 0).to_u64());
                // Through `push`: a full submission queue is submitted first, never dropped
                // (a lost cancel would leave the accept armed and the stop waiting forever).
                self.push(sqe);
            }
        }
    }

    /// True once stopping and nothing is left in flight except the wake-up read.
    pub(crate) fn drained(&self) -> bool {
        self.stopping.is_some() && self.conns.is_empty() && self.listeners.iter().all(|l| !l.armed)
    }

    /// Cancels the wake-up read and waits for it, so the kernel no longer refers to
    /// `wake_buf` when the core is dropped.
    ///
    /// Completions already moved aside (`early`, by a submit that met a full CQ) count too,
    /// and every wait is bounded: a stop or recycle never hangs here. Should the read still
    /// not complete, the word is leaked rather than freed under the kernel.
    pub(crate) fn quiesce(&mut self) {
        let is_wake = |ud: u64| Token::from_u64(ud).is_some_and(|t| t.kind == Kind::Wake);
        if self.early.drain(..).any(|(ud, _, _)| is_wake(ud)) {
            self.wake_armed = false;
        }
        if !self.wake_armed {
            return;
        }
        let ud = Token::new(Kind::Wake, 0, 0).to_u64();
        let sqe = opcode::AsyncCancel::new(ud).build().user_data(Token::new(Kind::Shutdown, 0, 0).to_u64());
        self.push(sqe);
        if self.early.drain(..).any(|(ud, _, _)| is_wake(ud)) {
            self.wake_armed = false;
        }
        let ts = types::Timespec::from(Duration::from_millis(10));
        for _ in 0..200 {
            if !self.wake_armed {
                return;
            }
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for cqe in self.ring.completion() {
                if is_wake(cqe.user_data()) {
                    self.wake_armed = false;
                }
            }
        }
        eprintln!("ringman: the wake-up read did not complete after its cancel; leaking its buffer");
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
    }

    /// Passes negotiated settings to a connection's encoder (`Encoder::configure`).
    pub(crate) fn configure_encoder(&mut self, key: usize, cfg: &dyn std::any::Any) {
        self.conns[key].encoder.configure(cfg);
    }

    /// Snapshot of every connection slot.
    pub(crate) fn connections(&self) -> Vec<crate::ConnInfo> {
        self.conns
            .iter()
            .map(|(k, c)| crate::ConnInfo {
                id: ConnectionId::new(c.serial, k),
                protocol: self.cfg.protocol.name(),
                local: crate::sys::local_addr(c.fd),
                remote: c.peer,
                recv_q: c.framer.as_ref().map_or(0, Framer::buffered),
                send_q: c.sendq.len,
                bytes_read: c.bytes_read,
                bytes_written: c.bytes_written,
                status: match c.status {
                    Status::Established => "ESTABLISHED",
                    Status::Closing => "CLOSING",
                    Status::Lingering => "LINGERING",
                    Status::Closed => "CLOSED",
                },
                paused: c.paused,
            })
            .collect()
    }

    /// What this ring runs with (for diagnostics and tests).
    pub(crate) fn info(&self) -> crate::RingInfo {
        crate::RingInfo {
            thread: self.thread,
            mode: self.mode,
            fixed_send_chunks: self.arena.fixed_chunks(),
            send_op_with_fixed_buffer: self.fixed_send == FixedSend::SendFixed,
            recv_buffer_size: self.recv.buf_size(),
            connections: self.conns.len(),
        }
    }
}

impl Core {
    /// Connections whose `on_close` has not run: open ones, and closed ones whose event is
    /// still queued (for a core about to be abandoned).
    ///
    /// A connection whose `on_connect` was still queued is left out: user code never saw it,
    /// so it gets no `on_close` either (Workerman pairs the two).
    pub(crate) fn unclosed(&self) -> Vec<Connection> {
        let unseen: Vec<ConnectionId> =
            self.events.iter().filter_map(|e| if let Event::Connect(c) = e { Some(c.id()) } else { None }).collect();
        self.conns
            .iter()
            .filter(|(_, c)| c.status != Status::Closed || c.close_hold)
            .map(|(k, _)| self.handle(k))
            .filter(|c| !unseen.contains(&c.id()))
            .collect()
    }

    /// Tears down a core whose loop panicked: its state cannot be trusted to have cancelled
    /// operations, so the memory the kernel may still write into (receive buffers, send
    /// arena, the wake-up word) is leaked rather than unmapped; the ring itself is closed,
    /// which makes the kernel cancel everything, and the connections' sockets are closed.
    pub(crate) fn abandon(self) {
        let mut me = std::mem::ManuallyDrop::new(self);
        for (_, c) in me.conns.iter() {
            // SAFETY: descriptors of this core's connections, closed once; no ring will
            // submit on them again.
            unsafe { libc::close(c.fd) };
        }
        // SAFETY: each field is dropped at most once and never used again; the fields not
        // dropped here (buffers, arena, wake word, slab) are deliberately leaked.
        unsafe {
            std::ptr::drop_in_place(&mut me.ring);
            std::ptr::drop_in_place(&mut me.mailbox);
            std::ptr::drop_in_place(&mut me.stats);
            std::ptr::drop_in_place(&mut me.cfg);
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        for (_, c) in self.conns.iter() {
            // SAFETY: descriptors of connections still in the slab (abnormal exit), closed once.
            unsafe { libc::close(c.fd) };
        }
        self.recv.unregister(&self.ring);
        self.arena.unregister(&self.ring);
    }
}

/// The decoder's answer to its own error (HTTP 400, a close frame), with a panic in that
/// protocol code caught and returned as its message.
fn error_reply(d: &mut dyn Decoder, e: &ringman_protocols::ProtocolError, out: &mut Vec<u8>) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| d.error_reply(e, out))).map_err(|p| format!("error_reply: {}", panic_message(&*p)))
}

/// `io_uring_enter` flag: reap completions (and run deferred task work).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// How long `end()` waits for the peer to close after our half-close.
const LINGER: Duration = Duration::from_secs(1);

/// How `send` encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enc {
    /// As is.
    Raw,
    /// With the protocol's encoder, as the connection's default message kind.
    Default,
    /// With the protocol's encoder, as this kind.
    Kind(MessageKind),
}

/// Outcome of an eager send's inline completion.
enum Inline {
    Sent,
    Partial,
    Gone,
}

/// A receive batch being delivered by the worker loop.
pub(crate) struct RecvWork {
    pub conn: Connection,
    #[allow(dead_code)]
    pub key: usize,
    bid: Option<u16>,
    data: *mut u8,
    len: usize,
    pub decoder: Box<dyn Decoder>,
    pub framer: Framer,
    pub max: usize,
}

impl RecvWork {
    /// The received bytes (empty when resuming from the framer's buffer).
    ///
    /// # Safety
    /// Must not outlive this `RecvWork` (the buffer is recycled in `recv_end`).
    pub(crate) unsafe fn data<'a>(&self) -> &'a mut [u8] {
        if self.data.is_null() {
            return &mut [];
        }
        // SAFETY: pointer and length come from `RecvRing::filled` for a buffer this batch owns.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

/// Appends `data` to a send queue, filling the tail chunk first. A message larger than a
/// chunk that starts an empty queue goes into one heap chunk of its own size, so it leaves
/// in a single send.
fn enqueue(arena: &mut SendArena, q: &mut SendQueue, mut data: &[u8]) {
    q.len += data.len();
    if q.chunks.is_empty() && data.len() > CHUNK {
        let b = data.to_vec().into_boxed_slice();
        let end = b.len();
        q.chunks.push_back(Chunk { mem: ChunkMem::Heap(b), start: 0, end });
        return;
    }
    while !data.is_empty() {
        if let Some(tail) = q.chunks.back_mut() {
            let (base, cap) = arena.bytes(&mut tail.mem);
            let room = cap - tail.end;
            if room > 0 {
                let n = room.min(data.len());
                // SAFETY: `tail.end + n ≤ cap`, inside the chunk; the region beyond `end` is
                // not part of any in-flight send (sends cover `start..end` at submit time).
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(tail.end), n) };
                tail.end += n;
                data = &data[n..];
                continue;
            }
        }
        q.chunks.push_back(Chunk { mem: arena.alloc(), start: 0, end: 0 });
    }
}

#[cfg(test)]
#[path = "reactor_orders.rs"]
mod orders;
