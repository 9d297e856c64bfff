//! The per-thread reactor core: ring, connection slab, buffers, timers.
//!
//! A `Core` lives in a thread-local of its ring thread and is only ever touched by that
//! thread, so nothing here locks. The runner (`worker/runner.rs`) borrows it briefly for each
//! step and never while a user callback runs; user-facing calls (`Connection::send`,
//! `Timer::add`) borrow it the same way. Anything that must call back into user code
//! (on_close, on_buffer_full, ...) is queued as an [`Event`] and delivered by the runner once
//! the borrow is released.
//!
//! One file per state machine, each with the completion handler of its operation:
//!
//! | file | state machine | handler |
//! |------|---------------|---------|
//! | `accept.rs` | multishot accept, descriptor back-off, the connection cap, runtime listen/unlisten, new slots | `on_accept` |
//! | `recv.rs` | multishot receive, pause/resume, ENOBUFS, delivery hand-off | `on_recv` |
//! | `send.rs` | send queue, the limit, eager/batched submission | `on_send` |
//! | `close.rs` | close, end (linger), destroy, freeing a slot | `on_cancel` |
//! | `connect.rs` | outgoing connections: dial, held sends, `ws://` upgrade, reconnect | `on_connect` |
//! | `proxy.rs` | an outgoing connection's HTTP `CONNECT` / SOCKS5 handshake | `on_proxy` |
//! | `timeouts.rs` | close deadlines, idle/packet timeouts, heartbeat | — |
//! | `shutdown.rs` | stop, drain | — |
//! | `wake.rs` | the mailbox's eventfd read, commands from other threads | `on_wake` |
//! | `slot.rs` | one connection's state, ids, the turn clock | — |
//! | `udp.rs` | UDP sockets (`udp://` workers, `AsyncUdpConnection`): multishot RECVMSG on the datagram pool, SENDMSG, truncation, the client's receive timeout | `on_udp`, `on_udp_send` |

mod accept;
mod close;
mod connect;
mod proxy;
mod recv;
mod send;
mod shutdown;
mod slot;
mod through;
mod timeouts;
mod tls;
mod udp;
mod wake;

#[cfg(test)]
mod orders;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::squeue;
use ringman_protocols::Framer;
use slab::Slab;

use crate::addr::ListenSocket;
use crate::buffers::{RecvRing, SendArena};
use crate::config::WorkerConfig;
use crate::error::ConnError;
use crate::id::ConnectionId;
use crate::mailbox::Mailbox;
use crate::ring::{FixedSend, Ring, RingMode, Token};
use crate::stats::ThreadStats;
use crate::timers::Timers;

use crate::hooks::{Hook, IdErrFn, IdFn};
pub(crate) use connect::{Dial, DialOptions, WsOffer};
pub(crate) use proxy::{ProxyKind, ProxySpec};
pub(crate) use recv::RecvWork;
pub use send::SendStatus;
use slot::{gen_of, Serials};
pub(crate) use slot::{ConnState, FileSlot, Stamp};
pub use udp::UdpConnection;
pub(crate) use udp::{Role, UdpClient, UdpErrFn, UdpEvent, UdpFn, UdpMsgFn, UdpWork};

thread_local! {
    static CORE: RefCell<Option<Core>> = const { RefCell::new(None) };
    static THREAD: Cell<u16> = const { Cell::new(u16::MAX) };
    static REAPED: Cell<u64> = const { Cell::new(0) };
}

/// How many batches of completions this thread has reaped ([`Core::reap`]). Whatever
/// happened before the completions being handled were produced happened before the latest
/// batch was reaped: code that must have seen such changes (a `WebServer`'s negative
/// lookups, through inotify) looks again once per new value.
pub(crate) fn reaped_batches() -> u64 {
    REAPED.with(Cell::get)
}

/// Counts a reaped batch without a ring (tests of code that reads [`reaped_batches`]).
#[cfg(test)]
pub(crate) fn reap_for_test() {
    REAPED.with(|r| r.set(r.get() + 1));
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

/// Runs `f` as if on a thread that is not a ring thread: the public API then takes the
/// cross-thread path (the mailbox). The simulator's stand-in for other threads.
#[cfg(test)]
pub(crate) fn as_other_thread<R>(f: impl FnOnce() -> R) -> R {
    let me = THREAD.with(|t| t.replace(u16::MAX));
    let r = f();
    THREAD.with(|t| t.set(me));
    r
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
    Connect(ConnectionId),
    Close(ConnectionId),
    /// Boxed, with [`Event::Udp`]: events are moved on every pop, and the rare large ones
    /// would make every one as large (176 bytes, a `memmove` per completion).
    Error(ConnectionId, Box<ConnError>),
    BufferFull(ConnectionId),
    BufferDrain(ConnectionId),
    /// `resume_recv()` was called: deliver what was buffered while paused.
    Resume(ConnectionId),
    /// Something a UDP client's callbacks must hear.
    Udp(Box<UdpEvent>),
}

/// Most entries of a ring's fixed-file table. The kernel allocates the table when it is
/// registered (a pointer and a bit per entry: 0.5 MiB at this size); connections beyond it
/// use their descriptors.
const FIXED_FILES_MAX: u64 = 1 << 16;

/// Registers the ring's sparse fixed-file table: as many entries as the process may open
/// descriptors, up to [`FIXED_FILES_MAX`]. A kernel without sparse tables (before 5.19)
/// gets none, and every operation names the socket's descriptor.
///
/// Why: an operation on a registered file skips the per-operation `fget`/`fput` of the
/// descriptor (an atomic increment and decrement on the shared file, and the file-flag
/// checks); the multishot receive holds its file for its life anyway, so the gain is on
/// every send (P1: about 1 % of the server's CPU per message, bench/README.md).
fn fixed_file_table(ring: &mut Ring) -> u32 {
    let slots = crate::sys::nofile_limit().unwrap_or(FIXED_FILES_MAX).min(FIXED_FILES_MAX) as u32;
    match ring.register_files_sparse(slots) {
        Ok(()) => slots,
        Err(e) => {
            log::debug!("no fixed-file table ({e}): operations name descriptors");
            0
        }
    }
}

/// Builds an SQE on connection `$c`'s socket, naming it by its fixed-file slot (`$key`)
/// when it is registered there, else by its descriptor: `$build` is written once and
/// compiled for both target types.
macro_rules! on_socket {
    ($c:expr, $key:expr, |$fd:ident| $build:expr) => {
        if $c.file == $crate::reactor::FileSlot::Registered {
            let $fd = io_uring::types::Fixed($key as u32);
            $build
        } else {
            let $fd = io_uring::types::Fd(std::os::fd::AsRawFd::as_raw_fd(&$c.fd));
            $build
        }
    };
}
pub(crate) use on_socket;

// Every completion pops the event queue; an event stays a few words.
const _: () = assert!(std::mem::size_of::<Event>() <= 32);

/// Lifecycle of a connection slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// An outgoing connection being established: its name resolving, its CONNECT in flight,
    /// or (`ws://`) its upgrade unanswered. Sends are held until it is established; the
    /// close deadline is the connect timeout.
    Connecting,
    Established,
    /// Our WebSocket close frame is queued and we wait for the peer's (bounded by the close
    /// deadline): messages are still delivered, nothing more is sent, and the peer's close
    /// is not echoed.
    WsClosing,
    /// `close()` was called: flush the send queue, then close (bounded by a deadline).
    Closing,
    /// `end()` flushed and half-closed: incoming bytes are discarded until the peer closes
    /// or the linger deadline passes, so the peer reads our last reply instead of a reset.
    Lingering,
    /// Destroyed: on_close was queued, the socket is shut down, the slot waits for its
    /// in-flight operations to complete before the fd is closed and the slot freed.
    Closed,
}

/// Per-thread engine state.
pub(crate) struct Core {
    pub ring: Ring,
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
    /// Entries of this ring's fixed-file table (0: none): accepted connections whose slab
    /// key is below it are registered there under their key (`ConnState::file`).
    fixed_files: u32,
    pub listeners: Vec<ListenerSlot>,
    /// UDP sockets (`udp.rs`).
    udp: udp::Udp,
    pub events: VecDeque<Event>,
    early: Vec<(u64, i32, u32)>,
    dirty: Vec<usize>,
    /// Bytes queued by batched sends since the last flush (see [`send::FLUSH_BYTES`]).
    turn_bytes: usize,
    enobufs: Vec<usize>,
    scratch: Vec<u8>,
    /// Spare SENDMSG headers for multi-chunk sends (one per send in flight, lent to the
    /// connection's queue until its CQE).
    // (Boxed: a header's address is handed to the kernel and must not move with the Vec.)
    #[allow(clippy::vec_box)]
    send_vecs: Vec<Box<send::SendVec>>,
    /// The receive buffer being delivered (id, address, length): sends of bytes inside it
    /// may borrow them instead of copying ([`RecvRing::lend`]).
    delivering: Option<(u16, usize, usize)>,
    /// Sends go one chunk per operation (while a queue at its limit is offered).
    single_chunk_sends: bool,
    /// Decrypted bytes of a TLS receive on their way to the framer (reused).
    tls_plain: Vec<u8>,
    pub timers: Timers,
    /// Outgoing connections in the slab (the timeout sweep runs while there are any: their
    /// heartbeats).
    dials: usize,
    /// Resolved host names of outgoing connections (and recent failures), per thread, with
    /// when they expire.
    dns: HashMap<(String, u16), (crate::resolve::Answer, Instant)>,
    pub cfg: Arc<WorkerConfig>,
    pub mailbox: Arc<Mailbox>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    pub stats: Arc<ThreadStats>,
    pub stopping: Option<Instant>,
    accept_retry: Option<Instant>,
    accept_paused: bool,
    closing: usize,
    /// Places this core holds under the worker's `max_connections` (one per accepted slot
    /// while a cap is set): given back when the core goes with slots left (an abandoned ring).
    placed: usize,
    /// Set when this run drains for a recycle rather than a stop.
    pub recycle: bool,
    /// Wall clock read once per loop turn, after the wait.
    pub wall: std::time::SystemTime,
    /// When this core started: the origin of [`Stamp`]s.
    epoch: Instant,
    /// The monotonic clock read once per loop turn, after the wait, as a [`Stamp`].
    pub stamp: Stamp,
}

/// A listening socket this ring accepts on. It is shared with the worker's
/// [`Listeners`](crate::config::Listeners) (so a restarted ring accepts on the same socket)
/// and, without SO_REUSEPORT, with the worker's other rings: the last holder closes it.
/// `fd` is `None` once the ring let go of it (`WorkerHandle::unlisten`); the slot is reused
/// by the next listener (its index names its accept in `user_data`).
pub(crate) struct ListenerSlot {
    pub fd: Option<Arc<ListenSocket>>,
    pub armed: bool,
    /// Unlistened while its accept was armed: the accept's cancel is in flight, and the
    /// socket is let go of when its last completion arrives (never before: see Pitfalls,
    /// "Cancel before close").
    pub closing: bool,
}

impl ListenerSlot {
    pub(crate) fn new(fd: Arc<ListenSocket>) -> ListenerSlot {
        ListenerSlot { fd: Some(fd), armed: false, closing: false }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // The ring forgets the buffers before they are unmapped; the connections' sockets
        // (only left on an abnormal exit) close when the slab drops after this.
        self.recv.unregister(&mut self.ring);
        self.udp.unregister(&mut self.ring);
        self.arena.unregister(&mut self.ring);
        self.give_places(self.placed);
    }
}

impl Core {
    pub(crate) fn new(
        thread: u16,
        cfg: Arc<WorkerConfig>,
        listeners: Vec<ListenerSlot>,
        mailbox: Arc<Mailbox>,
        stats: Arc<ThreadStats>,
        fixed_bytes: usize,
    ) -> Result<Core, crate::error::EngineError> {
        let (ring, mode) = crate::ring::build()?;
        Core::with_ring(thread, cfg, listeners, mailbox, stats, fixed_bytes, ring, mode)
    }

    /// [`Core::new`] on a given ring (the kernel's, or the simulator's).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_ring(
        thread: u16,
        cfg: Arc<WorkerConfig>,
        listeners: Vec<ListenerSlot>,
        mailbox: Arc<Mailbox>,
        stats: Arc<ThreadStats>,
        fixed_bytes: usize,
        mut ring: Ring,
        mode: RingMode,
    ) -> Result<Core, crate::error::EngineError> {
        let recv = RecvRing::new(&mut ring, cfg.recv_buffers, cfg.recv_buffer_size, cfg.recv_incremental)
            .map_err(crate::error::EngineError::BufferRing)?;
        let (mut arena, err) = SendArena::new(&mut ring, fixed_bytes);
        if let Some(e) = err {
            log::warn!("registered send buffers unavailable ({e}); sending from heap buffers");
        }
        let fixed_send = if arena.fixed_chunks() > 0 {
            let mut probe = arena.alloc();
            let (ptr, _) = arena.bytes(&mut probe);
            let r = crate::ring::probe_fixed_send(&mut ring, ptr);
            arena.release(probe);
            r
        } else {
            FixedSend::Plain
        };
        let fixed_files = fixed_file_table(&mut ring);
        Ok(Core {
            ring,
            mode,
            thread,
            conns: Slab::with_capacity(1024),
            serials: Serials::new(),
            by_serial: RefCell::new(None),
            graveyard: Vec::new(),
            recv,
            arena,
            fixed_send,
            fixed_files,
            listeners,
            udp: udp::Udp::default(),
            events: VecDeque::new(),
            early: Vec::new(),
            dirty: Vec::new(),
            turn_bytes: 0,
            enobufs: Vec::new(),
            scratch: Vec::new(),
            send_vecs: Vec::new(),
            delivering: None,
            single_chunk_sends: false,
            tls_plain: Vec::new(),
            timers: Timers::default(),
            dns: HashMap::new(),
            dials: 0,
            cfg,
            mailbox,
            wake_buf: Box::new(0),
            wake_armed: false,
            stats,
            stopping: None,
            accept_retry: None,
            accept_paused: false,
            closing: 0,
            placed: 0,
            recycle: false,
            wall: crate::clock::wall(),
            epoch: crate::clock::now(),
            stamp: Stamp::MIN,
        })
    }

    /// Pushes an SQE, submitting first if the queue is full.
    pub(super) fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every SQE built by the engine points into memory that outlives the
            // operation: buffer-ring memory and arena chunks (buffers.rs invariants), heap send
            // chunks kept in the send queue until the CQE, `wake_buf` kept until the core
            // is dropped after its read completed, a proxy handshake's boxed receive buffer
            // kept in its slot until the read's CQE (`Core::proxy_read`).
            if unsafe { self.ring.push(&sqe) } {
                return;
            }
            self.submit();
        }
    }

    /// Submits the queued SQEs without waiting.
    pub(super) fn submit(&mut self) {
        if let Err(e) = self.ring.submit() {
            if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                log::error!("submit failed: {e}");
            }
            // EBUSY: the CQ is full; move completions aside so the kernel can post more.
            self.stash_completions();
        }
    }

    fn stash_completions(&mut self) {
        let early = &mut self.early;
        self.ring.drain(|ud, res, flags| early.push((ud, res, flags)));
    }

    /// Submits everything queued and waits for at least one completion or `timeout`.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) {
        #[cfg(test)]
        crate::sim::on_turn(self);
        self.flush_dirty();
        self.rearm_enobufs();
        self.return_lent();
        self.recv.publish();
        self.udp_turn();
        if !self.early.is_empty() || !self.events.is_empty() {
            let _ = self.ring.submit();
            return;
        }
        if let Err(e) = self.ring.submit_and_wait(timeout) {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => log::error!("io_uring_enter failed: {e}"),
            }
        }
    }

    /// Moves every available completion into `out`, oldest first.
    pub(crate) fn reap(&mut self, out: &mut Vec<(u64, i32, u32)>) {
        REAPED.with(|r| r.set(r.get() + 1));
        out.append(&mut self.early);
        let dropped = self.ring.dropped();
        if dropped > 0 {
            // Only reachable without IORING_FEAT_NODROP; with it the kernel keeps overflowed
            // CQEs and `submit` flushes them (IORING_SQ_CQ_OVERFLOW is checked there).
            log::error!("{dropped} completions were dropped by CQ overflow");
        }
        self.ring.drain(|ud, res, flags| out.push((ud, res, flags)));
        if self.ring.cq_overflow() {
            self.stats.cq_overflows.add(1);
        }
    }

    /// Reads the monotonic clock into [`Core::stamp`] (once per loop turn).
    pub(crate) fn update_stamp(&mut self) {
        self.stamp = Stamp::at(self.epoch, crate::clock::now());
    }

    /// The id of the connection in slot `key`.
    pub(crate) fn id_of(&self, key: usize) -> ConnectionId {
        ConnectionId::new(self.conns[key].serial, key)
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
    pub(super) fn live(&self, tok: Token) -> bool {
        matches!(self.conns.get(tok.slot as usize), Some(c) if gen_of(c.serial) == tok.gen)
    }

    /// Takes `conn`'s own `hook` out while it runs (put back with [`Core::put_hook`]), and
    /// whether the worker's callback applies when there is none (not for outgoing
    /// connections, which have only their own). `None` for a connection that is gone.
    pub(crate) fn take_hook(&mut self, conn: ConnectionId, hook: Hook) -> Option<(Option<IdFn>, bool)> {
        let key = self.lookup(conn)?;
        let c = &mut self.conns[key];
        let worker = c.dial().is_none();
        let own = c.extra.as_mut().and_then(|e| e.hooks.slot(hook).take());
        if hook == Hook::BufferDrain && own.is_some() {
            c.extra().hooks.drain_running = true;
        }
        Some((own, worker))
    }

    /// Puts back a hook taken with [`Core::take_hook`], unless the callback installed a new
    /// one meanwhile. A hook with no connection left is handed back, to be dropped outside.
    pub(crate) fn put_hook(&mut self, conn: ConnectionId, hook: Hook, f: IdFn) -> Option<IdFn> {
        let Some(key) = self.lookup(conn) else { return Some(f) };
        let hooks = &mut self.conns[key].extra().hooks;
        if hook == Hook::BufferDrain {
            hooks.drain_running = false;
        }
        let slot = hooks.slot(hook);
        if slot.is_none() {
            *slot = Some(f);
            None
        } else {
            Some(f)
        }
    }

    /// [`Core::take_hook`] for `on_error`.
    pub(crate) fn take_error_hook(&mut self, conn: ConnectionId) -> Option<(Option<IdErrFn>, bool)> {
        let key = self.lookup(conn)?;
        let c = &mut self.conns[key];
        let worker = c.dial().is_none();
        Some((c.extra.as_mut().and_then(|e| e.hooks.on_error.take()), worker))
    }

    /// [`Core::put_hook`] for `on_error`.
    pub(crate) fn put_error_hook(&mut self, conn: ConnectionId, f: IdErrFn) -> Option<IdErrFn> {
        let Some(key) = self.lookup(conn) else { return Some(f) };
        let slot = &mut self.conns[key].extra().hooks.on_error;
        if slot.is_none() {
            *slot = Some(f);
            None
        } else {
            Some(f)
        }
    }

    /// The protocol name of the connection in slot `key`.
    pub(crate) fn protocol_name(&self, key: usize) -> &'static str {
        self.conns[key].dial().map_or_else(|| self.cfg.protocol.name(), |d| d.protocol_name())
    }

    /// Passes negotiated settings to a connection's encoder (`Encoder::configure`).
    pub(crate) fn configure_encoder(&mut self, key: usize, cfg: &dyn std::any::Any) {
        self.conns[key].encoder.configure(cfg);
    }

    /// Snapshot of every connection slot.
    pub(crate) fn connections(&self) -> Vec<crate::info::ConnInfo> {
        self.conns
            .iter()
            .map(|(k, c)| crate::info::ConnInfo {
                id: ConnectionId::new(c.serial, k),
                protocol: self.protocol_name(k),
                local: crate::sys::local_addr(c.fd.as_fd()),
                remote: c.peer,
                recv_q: c.framer.as_ref().map_or(0, Framer::buffered),
                send_q: c.sendq.len,
                bytes_read: c.bytes_read,
                bytes_written: c.bytes_written,
                status: match c.status {
                    Status::Connecting => "CONNECTING",
                    Status::Established => "ESTABLISHED",
                    Status::WsClosing => "WS_CLOSING",
                    Status::Closing => "CLOSING",
                    Status::Lingering => "LINGERING",
                    Status::Closed => "CLOSED",
                },
                paused: c.paused,
            })
            .collect()
    }

    /// What this ring runs with (for diagnostics and tests).
    pub(crate) fn info(&self) -> crate::info::RingInfo {
        crate::info::RingInfo {
            thread: self.thread,
            mode: self.mode,
            fixed_send_chunks: self.arena.fixed_chunks(),
            send_op_with_fixed_buffer: self.fixed_send == FixedSend::SendFixed,
            recv_buffer_size: self.recv.buf_size(),
            recv_incremental: self.recv.incremental(),
            connections: self.conns.len(),
        }
    }

    /// Connections whose `on_close` has not run: open ones, and closed ones whose event is
    /// still queued (for a core about to be abandoned).
    ///
    /// A connection whose `on_connect` was still queued is left out: user code never saw it,
    /// so it gets no `on_close` either (Workerman pairs the two).
    pub(crate) fn unclosed(&self) -> Vec<ConnectionId> {
        let unseen: Vec<ConnectionId> =
            self.events.iter().filter_map(|e| if let Event::Connect(c) = e { Some(*c) } else { None }).collect();
        // Outgoing connections are left out: their callbacks were their own, and they died
        // with the core (the worker's `on_close` is for the connections it accepted).
        self.conns
            .iter()
            .filter(|(_, c)| (c.status != Status::Closed || c.close_hold) && c.dial().is_none())
            .map(|(k, _)| self.id_of(k))
            .filter(|c| !unseen.contains(c))
            .collect()
    }

    /// Publishes every returned receive buffer and unregisters the ring, returning what the
    /// simulated kernel found wrong (a buffer never given back).
    #[cfg(test)]
    pub(crate) fn release_buffers_for_sim(&mut self) -> Vec<String> {
        self.return_lent();
        self.recv.publish();
        self.recv.unregister(&mut self.ring);
        self.ring.sim_mut().map(|k| std::mem::take(&mut k.violations)).unwrap_or_default()
    }

    /// Tears down a core whose loop panicked: its state cannot be trusted to have cancelled
    /// operations, so the memory the kernel may still write into (receive buffers, send
    /// arena, the wake-up word) is leaked rather than unmapped; the ring itself is closed,
    /// which makes the kernel cancel everything, and the connections' sockets are closed.
    pub(crate) fn abandon(self) {
        let mut me = std::mem::ManuallyDrop::new(self);
        // Its accepted connections close here: their places under the cap are free again.
        let placed = me.placed;
        me.give_places(placed);
        // SAFETY: each field is dropped at most once and never used again; the fields not
        // dropped here (buffers, arena, wake word, the slab's parser state and user values)
        // are deliberately leaked. The ring goes first: closing it makes the kernel cancel
        // every operation before the sockets and listeners close.
        unsafe {
            std::ptr::drop_in_place(&mut me.ring);
            std::ptr::drop_in_place(&mut me.listeners);
            std::ptr::drop_in_place(&mut me.mailbox);
            std::ptr::drop_in_place(&mut me.stats);
            std::ptr::drop_in_place(&mut me.cfg);
        }
        for c in me.conns.drain() {
            drop(c.into_fd_leaking_the_rest());
        }
        drop(me.udp.take_fds());
    }
}
