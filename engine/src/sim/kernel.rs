//! The simulated kernel: a model of io_uring and of the sockets behind it, at the boundary
//! the engine really uses (`ring::Ring`). It decodes the engine's SQEs as the kernel reads
//! them (the uapi `io_uring_sqe` layout), keeps operations in flight by `user_data`, picks
//! receive buffers from the engine's provided-buffer ring the way the kernel does (reading
//! the published tail, writing into the buffer's memory), reads send data from the SQE's
//! address when the send completes, and posts completions into a bounded CQ with an
//! overflow list.
//!
//! Behind every connection is a scripted peer with a byte stream in each direction. The
//! engine's descriptor for it is one end of a Unix socket pair; the simulator keeps the
//! other end, which tells it when the engine shuts the socket down (`shutdown(2)` is a plain
//! syscall, not a ring operation). Nothing travels through the pair: the bytes live here.
//!
//! What it models (and the kernel rules it keeps):
//! * no order across operations: each completes whenever the schedule says so;
//! * a single-shot receive (buffer select) posts one CQE without `F_MORE`;
//! * multishot receive and accept end with a CQE lacking `F_MORE` on error, EOF, an empty
//!   buffer ring (`-ENOBUFS`), a full CQ, or spontaneously; a multishot's own CQEs stay in
//!   stream order;
//! * sends complete in full (`MSG_WAITALL`) or fail; without it they may complete short;
//! * a cancel posts `-ECANCELED` for each target it finds, then its own result (a count
//!   for `CANCEL_ALL`, 0, or `-ENOENT`); a target that was already due may complete normally
//!   first;
//! * a full CQ keeps further CQEs in an overflow list (`IORING_FEAT_NODROP`), flushed on
//!   the next enter; submission may answer `EBUSY` while completions wait;
//! * faults the loopback kernel rarely produces: resets and `EPIPE` mid-stream, peers that
//!   half-close or vanish, `EMFILE`/`ECONNABORTED` on accept, refused and never-answered
//!   connects, withheld buffers;
//! * listening sockets: the worker's first listener and each one its `listen()` opens later
//!   (`register_listener`: the simulated worker's `open` registers what it makes); clients
//!   connect only while one is open, and when the engine closes it the clients still queued
//!   on it are reset, as the kernel does; a listener closed while an accept is in flight on
//!   it is a violation (the kernel's accept would hold it open and go on accepting);
//! * proxies: a connection to port 1080/1081 (SOCKS5, with / without user-password
//!   authentication) or 3128/3129 (HTTP `CONNECT`, with / without Basic authentication)
//!   reaches a proxy peer that checks the handshake, then answers — sometimes refusing (bad
//!   credentials, target unreachable), sometimes splitting its answer across turns, sometimes
//!   with the target's first bytes right behind it, sometimes resetting mid-handshake — and
//!   then relays to the echoing remote. It records a violation when bytes for the target
//!   arrive before the engine has read the whole answer.
//!
//! What it checks on every call (a violation is recorded and fails the run): an operation
//! on a descriptor the engine already closed, an SQE it does not model, a receive buffer
//! handed back twice or never handed out, more bytes completed than a send asked for.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use io_uring::{opcode, squeue, types::BufRingEntry};

use ringman_protocols::ws::{parse_header, write_close, write_frame, OpCode};

use super::rng::Rng;
use crate::ring::FixedSend;

// The kernel reads 64-byte SQEs; the decoder below reads the same layout.
const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);

pub(super) const IOSQE_BUFFER_SELECT: u8 = 1 << 5;
/// `IOSQE_FIXED_FILE`: the SQE's fd is an index into the fixed-file table.
const IOSQE_FIXED_FILE: u8 = 1 << 0;
pub(super) const IORING_RECV_MULTISHOT: u16 = 1 << 1;
const IORING_ACCEPT_MULTISHOT: u16 = 1 << 0;
const IORING_ASYNC_CANCEL_ALL: u32 = 1 << 0;
const IORING_ASYNC_CANCEL_FD: u32 = 1 << 1;
pub(super) const CQE_F_BUFFER: u32 = 1 << 0;
pub(super) const CQE_F_MORE: u32 = 1 << 1;
/// `IORING_CQE_F_BUF_MORE`: the kernel goes on filling the buffer this CQE named.
pub(super) const CQE_F_BUF_MORE: u32 = 1 << 4;
/// `IOU_PBUF_RING_INC` (registration flag).
const PBUF_RING_INC: u16 = 2;

/// The fields of an `io_uring_sqe` the engine sets.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sqe {
    pub(super) opcode: u8,
    pub(super) flags: u8,
    pub(super) ioprio: u16,
    pub(super) fd: i32,
    pub(super) addr: u64,
    pub(super) len: u32,
    pub(super) op_flags: u32,
    pub(super) user_data: u64,
    pub(super) buf_group: u16,
}

impl Sqe {
    fn decode(e: &squeue::Entry) -> Sqe {
        // SAFETY: `Entry` is `repr(C)` around the 64-byte `io_uring_sqe` (asserted above);
        // reading it as bytes is reading what the kernel would read.
        let b: [u8; 64] = unsafe { std::mem::transmute_copy(e) };
        let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
        Sqe {
            opcode: b[0],
            flags: b[1],
            ioprio: u16_at(2),
            fd: u32_at(4) as i32,
            addr: u64_at(16),
            len: u32_at(24),
            op_flags: u32_at(28),
            user_data: u64_at(32),
            buf_group: u16_at(40),
        }
    }
}

/// What an in-flight operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    /// A multishot accept on listener `listener` (its index in `SimKernel::listeners`).
    Accept {
        listener: usize,
    },
    /// A receive with buffer select: multishot, or one completion (`len` 0: the buffer's
    /// size).
    Recv {
        sock: usize,
        multishot: bool,
        len: usize,
    },
    /// A send of `len` bytes at `addr`, or (`vec`) a SENDMSG whose `msghdr` is at `addr`
    /// and whose iovecs hold `len` bytes in all: read at completion, as a kernel that
    /// copies late would, so the engine must keep header, iovecs and bytes until the CQE.
    Send {
        sock: usize,
        addr: u64,
        len: usize,
        waitall: bool,
        vec: bool,
    },
    Wake {
        addr: u64,
    },
    Connect {
        sock: usize,
        outcome: ConnectOutcome,
        due: u64,
        /// The destination port (it picks the peer: a proxy, or the echoing remote).
        port: u16,
    },
    /// A plain single-shot receive into the engine's buffer at `addr` (no buffer select).
    RecvInto {
        sock: usize,
        addr: u64,
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectOutcome {
    Accepted,
    Refused,
    /// Never answered: only the engine's connect timeout (a cancel) ends it.
    Hang,
}

#[derive(Debug, Clone)]
struct Op {
    ud: u64,
    fd: RawFd,
    kind: OpKind,
}

/// Which protocol a peer speaks (so what it writes parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    Raw,
    Text,
    Frame,
    /// WebSocket: the peer sends the upgrade request, waits for the 101, then sends masked
    /// data frames, pings and (sometimes) a close; it answers the server's pings and close.
    Ws,
}

/// A WebSocket peer's progress.
#[derive(Debug, Default)]
pub(crate) struct WsPeer {
    /// The 101 arrived: frames may be sent (RFC 6455 §4.1: not before).
    pub(crate) upgraded: bool,
    /// How far `received` has been parsed (the 101 head, then whole frames).
    parsed: usize,
    /// We sent our close frame / the server sent its close frame.
    pub(crate) close_sent: bool,
    pub(crate) close_received: bool,
}

/// The credentials the simulated proxies accept.
pub(crate) const PROXY_USER: &str = "sim";
pub(crate) const PROXY_PASS: &str = "pass";
/// The target name the application dials through a proxy (the proxy resolves it).
pub(crate) const PROXY_TARGET: &str = "echo.sim";
/// The target port.
pub(crate) const PROXY_TARGET_PORT: u16 = 7;

/// A proxy peer's answer to one request: the request's length, the answer, its refusal
/// (if it is one) and whether it opens the tunnel.
type ProxyAnswer = (usize, Vec<u8>, Option<String>, bool);

/// A proxy peer's progress.
#[derive(Debug, Default)]
pub(crate) struct ProxyPeer {
    socks5: bool,
    /// It demands credentials.
    auth: bool,
    /// SOCKS5: 0 greeting, 1 user/password, 2 request (HTTP: always 2).
    phase: u8,
    /// How much of `received` the handshake consumed (what follows is for the target).
    pub(crate) request_end: usize,
    /// Where the answer of the current phase ends in `written`.
    pub(crate) answer_end: usize,
    /// Where a refusal becomes known to a reader in `written`: a SOCKS5 answer's first two
    /// bytes carry its verdict (the engine fails the dial on them, unread rest and all); an
    /// HTTP answer's head must be read whole.
    pub(crate) refusal_end: usize,
    /// The rest of an answer, written on a later turn (a split answer).
    pending: Vec<u8>,
    /// The answer being written is a success: the tunnel opens once it is all written.
    opening: bool,
    /// The tunnel is open (the final answer was a success).
    pub(crate) open: bool,
    /// The refusal it answered, as the engine must report it (a substring of the error).
    pub(crate) refusal: Option<String>,
}

thread_local! {
    /// Every socket the simulated worker listened on — its first ones, and each that a
    /// `listen()` opened since — as (descriptor, inode, UDP), in order. The kernel learns of
    /// new ones on its next call (`SimKernel::absorb`); the worker's `open` consults it as
    /// the real one probes the port.
    static LISTENERS: RefCell<Vec<(RawFd, u64, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Forgets the listeners of a previous run on this thread.
pub(crate) fn reset_listeners() {
    LISTENERS.with(|l| l.borrow_mut().clear());
}

/// The worker listens on `fd` (a stream listener, or a UDP socket when `udp`).
pub(crate) fn register_listener(fd: RawFd, udp: bool) {
    if let Some(ino) = ino_of(fd) {
        LISTENERS.with(|l| l.borrow_mut().push((fd, ino, udp)));
    }
}

/// Whether a socket the worker listened on is still open (the engine has not closed it): the
/// port is held, and a new `listen()` would meet `EADDRINUSE`.
pub(crate) fn a_listener_is_open() -> bool {
    LISTENERS.with(|l| l.borrow().iter().any(|&(fd, ino, _)| ino_of(fd) == Some(ino)))
}

/// A listening socket as the kernel sees it.
pub(crate) struct LSock {
    fd: RawFd,
    ino: u64,
    closed: bool,
}

/// The upgrade request of a simulated WebSocket client (a fixed RFC 6455 sample key).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// One simulated connection: a peer and the two byte streams.
pub(crate) struct Sock {
    /// Opened by the engine (CONNECT) rather than accepted.
    pub(crate) outgoing: bool,
    /// An accept handed it to the engine.
    pub(crate) accepted: bool,
    fd: RawFd,
    ino: u64,
    /// The simulator's end of the socket pair whose other end the engine holds.
    peer: OwnedFd,
    /// Everything the peer wrote, and how much of it the engine has received.
    pub(crate) written: Vec<u8>,
    pub(crate) taken: usize,
    /// Everything the engine's sends delivered to the peer.
    pub(crate) received: Vec<u8>,
    /// Socket-buffer room towards the peer (sends wait while it is zero: a slow reader).
    window: usize,
    /// The peer half-closed (the engine sees EOF after `written`).
    pub(crate) peer_eof: bool,
    /// The connection was reset (or a send hit EPIPE): operations fail.
    pub(crate) reset: bool,
    /// The peer went silent: it neither reads nor writes any more.
    pub(crate) vanished: bool,
    /// The engine shut its end down (or closed it).
    pub(crate) engine_shut: bool,
    /// The engine closed its descriptor.
    pub(crate) engine_closed: bool,
    /// How far an outgoing connection's remote has echoed what it received.
    echoed: usize,
    /// Bytes the peer still means to write (its budget for this run).
    budget: usize,
    /// The payloads of the data messages the peer wrote (WebSocket), in order.
    pub(crate) msgs: Vec<Vec<u8>>,
    /// WebSocket state (accepted connections of a `websocket://` worker).
    pub(crate) ws: Option<WsPeer>,
    /// Where the peer's close frame ends in `written` (WebSocket).
    pub(crate) close_end: Option<usize>,
    /// The proxy in front of the remote, for a connection made to a proxy's port.
    pub(crate) proxy: Option<ProxyPeer>,
}

impl Sock {
    /// Any fault that lets the engine drop queued bytes legitimately.
    pub(crate) fn faulted(&self) -> bool {
        self.peer_eof || self.reset || self.vanished
    }

    /// What the remote (behind the proxy, if any) received from the engine.
    pub(crate) fn target_received(&self) -> &[u8] {
        match &self.proxy {
            Some(p) if !p.open => &[],
            Some(p) => &self.received[p.request_end..],
            None => &self.received,
        }
    }

    /// What the remote (behind the proxy, if any) wrote that the engine has received.
    pub(crate) fn target_taken(&self) -> &[u8] {
        let from = match &self.proxy {
            Some(p) if !p.open => return &[],
            Some(p) => p.answer_end,
            None => 0,
        };
        &self.written[from.min(self.taken)..self.taken]
    }

    /// A proxied connection whose proxy has not (yet) answered with success, or whose
    /// success answer the engine has not read whole. (A split success answer whose split
    /// fell right at its end leaves only the target's first bytes pending: the answer is
    /// whole, and the engine may open the tunnel before the proxy writes the rest.)
    pub(crate) fn handshake_pending(&self) -> bool {
        self.proxy.as_ref().is_some_and(|p| !(p.open || p.opening) || self.taken < p.answer_end)
    }
}

/// Per-seed probabilities (per mille, per opportunity) of what the schedule does.
#[derive(Debug, Clone)]
pub(crate) struct Rates {
    pub(crate) complete: u32,
    pub(crate) inline: u32,
    pub(crate) short_write: u32,
    pub(crate) multishot_end: u32,
    pub(crate) withhold_buffers: u32,
    pub(crate) reset: u32,
    pub(crate) epipe: u32,
    pub(crate) peer_eof: u32,
    pub(crate) vanish: u32,
    pub(crate) accept_error: u32,
    pub(crate) connect_refused: u32,
    pub(crate) connect_hang: u32,
    /// Proxy peers: refuse a good handshake, split an answer, send target bytes right
    /// behind the answer, reset mid-handshake.
    pub(crate) proxy_refuse: u32,
    pub(crate) proxy_split: u32,
    pub(crate) proxy_banner: u32,
    pub(crate) proxy_reset: u32,
    pub(crate) cancel_race: u32,
    pub(crate) ebusy: u32,
    pub(crate) new_client: u32,
    pub(crate) peer_write: u32,
    pub(crate) peer_read: u32,
    pub(crate) max_clients: usize,
    pub(crate) max_message: usize,
    pub(crate) sq_cap: usize,
    pub(crate) cq_cap: usize,
    pub(crate) max_step: Duration,
}

impl Rates {
    /// Swarm rates for a seed: some faults off, others at varied strength.
    pub(crate) fn draw(rng: &mut Rng) -> Rates {
        Rates {
            complete: rng.range(200, 900) as u32,
            inline: rng.range(0, 1000) as u32,
            short_write: rng.rate(500),
            multishot_end: rng.rate(200),
            withhold_buffers: rng.rate(100),
            reset: rng.rate(4),
            epipe: rng.rate(20),
            peer_eof: rng.rate(4),
            vanish: rng.rate(3),
            accept_error: rng.rate(100),
            connect_refused: rng.rate(300),
            connect_hang: rng.rate(100),
            proxy_refuse: 0,
            proxy_split: 0,
            proxy_banner: 0,
            proxy_reset: 0,
            cancel_race: rng.rate(500),
            ebusy: rng.rate(100),
            new_client: rng.range(20, 300) as u32,
            peer_write: rng.range(50, 600) as u32,
            peer_read: rng.range(100, 1000) as u32,
            max_clients: rng.range(1, 12) as usize,
            max_message: rng.range(16, 40_000) as usize,
            sq_cap: rng.size(64).max(2),
            cq_cap: rng.size(256).max(2),
            max_step: Duration::from_millis(rng.range(0, 40)),
        }
    }

    /// The proxy peers' rates, from their own stream (so the other draws of every seed stay
    /// as they were).
    fn draw_proxy(&mut self, rng: &mut Rng) {
        self.proxy_refuse = rng.rate(300);
        self.proxy_split = rng.rate(500);
        self.proxy_banner = rng.rate(500);
        self.proxy_reset = rng.rate(100);
    }

    /// No faults (the liveness phase): everything that is due completes, peers read.
    pub(crate) fn calm(&mut self) {
        self.complete = 1000;
        self.multishot_end = 0;
        self.withhold_buffers = 0;
        self.reset = 0;
        self.epipe = 0;
        self.peer_eof = 0;
        self.vanish = 0;
        self.accept_error = 0;
        self.ebusy = 0;
        self.proxy_reset = 0;
        self.new_client = 0;
        self.peer_write = 0;
        self.peer_read = 1000;
    }
}

/// The provided-buffer ring as the kernel sees it.
///
/// Consumed in pieces when registered with `IOU_PBUF_RING_INC` (as 6.12 does it): the head
/// entry's address and length are read from the engine's ring each time, a receive takes at
/// most what is left of it, and the kernel writes the advanced address and the shorter
/// length back into the entry; it moves past the entry (and the engine owns the buffer)
/// only once it is used up.
pub(super) struct BufRing {
    entries: *mut BufRingEntry,
    /// Consumed in pieces.
    pub(super) incremental: bool,
    count: u16,
    /// The kernel's consumer index.
    head: u16,
    /// The last tail read (entries before it were checked when they were published).
    seen_tail: u16,
    /// Who holds each buffer: true while the engine does.
    engine_owns: Vec<bool>,
}

impl BufRing {
    /// Buffers the engine published since the last look; returns those it did not hold.
    pub(super) fn scan(&mut self) -> Vec<u16> {
        let b = self;
        // SAFETY: the tail overlays entry 0's `resv`; the engine stores it atomically.
        let tail = unsafe {
            (*BufRingEntry::tail(b.entries).cast::<std::sync::atomic::AtomicU16>())
                .load(std::sync::atomic::Ordering::Acquire)
        };
        let mut bad = Vec::new();
        while b.seen_tail != tail {
            let idx = (b.seen_tail & (b.count - 1)) as usize;
            // SAFETY: `idx < count`, inside the registered entry array.
            let bid = unsafe { (*b.entries.add(idx)).bid() };
            match b.engine_owns.get_mut(bid as usize) {
                Some(owned) if *owned => *owned = false,
                _ => bad.push(bid),
            }
            b.seen_tail = b.seen_tail.wrapping_add(1);
        }
        bad
    }

    /// Takes the next published buffer: (bid, address, length). A buffer consumed in
    /// pieces stays at the head until [`BufRing::consume`] used it up.
    pub(super) fn take(&mut self) -> Option<(u16, u64, usize)> {
        let b = self;
        if b.head == b.seen_tail {
            return None;
        }
        let idx = (b.head & (b.count - 1)) as usize;
        // SAFETY: `idx < count`, inside the registered entry array, published by the engine.
        let e = unsafe { &*b.entries.add(idx) };
        let (bid, addr, len) = (e.bid(), e.addr(), e.len() as usize);
        if !b.incremental {
            b.head = b.head.wrapping_add(1);
            b.engine_owns[bid as usize] = true;
        }
        Some((bid, addr, len))
    }

    /// The bid of the buffer at the head, if one is published (what a completion without
    /// bytes may name).
    pub(super) fn peek(&self) -> Option<u16> {
        if self.head == self.seen_tail {
            return None;
        }
        let idx = (self.head & (self.count - 1)) as usize;
        // SAFETY: as in `take`.
        Some(unsafe { (*self.entries.add(idx)).bid() })
    }

    /// `n > 0` bytes went into the buffer [`BufRing::take`] returned. Returns whether the
    /// kernel goes on filling it (`F_BUF_MORE`): only a buffer consumed in pieces with room
    /// left.
    pub(super) fn consume(&mut self, n: usize) -> bool {
        if !self.incremental {
            return false;
        }
        let idx = (self.head & (self.count - 1)) as usize;
        // SAFETY: `idx < count`, inside the registered entry array; the head entry is the
        // kernel's (published, not yet used up), so writing it back is what the kernel does.
        let e = unsafe { &mut *self.entries.add(idx) };
        let left = e.len() as usize - n;
        if left > 0 {
            e.set_addr(e.addr() + n as u64);
            e.set_len(left as u32);
            return true;
        }
        let bid = e.bid();
        self.head = self.head.wrapping_add(1);
        self.engine_owns[bid as usize] = true;
        false
    }
}

/// The simulated kernel of one ring.
pub(crate) struct SimKernel {
    pub(crate) rng: Rng,
    /// The proxy peers' draws (a stream of their own).
    prng: Rng,
    pub(crate) rates: Rates,
    wire: Wire,
    sq: Vec<Sqe>,
    ops: Vec<Op>,
    cq: VecDeque<(u64, i32, u32)>,
    overflow: VecDeque<(u64, i32, u32)>,
    bufs: Option<BufRing>,
    /// UDP: the datagram pool, the datagram sockets and their peers (`sim/udp.rs`).
    pub(crate) udp: super::udp::SimUdp,
    fixed: Option<(u64, u64)>,
    fixed_send: FixedSend,
    pub(crate) socks: Vec<Sock>,
    by_ino: BTreeMap<u64, usize>,
    /// Clients waiting to be accepted on the open listener.
    backlog: VecDeque<usize>,
    /// The worker's listening sockets, in the order it opened them (at most one open).
    pub(crate) listeners: Vec<LSock>,
    /// How many of `LISTENERS` the kernel knows.
    absorbed: usize,
    pub(crate) eventfd: RawFd,
    pub(crate) now: Instant,
    pub(crate) wall: SystemTime,
    /// Loop turns (waits) so far, and the turn at which connects due later complete.
    pub(crate) turns: u64,
    pub(crate) violations: Vec<String>,
    pub(crate) trace: VecDeque<String>,
    /// Marks of what the schedule reached (coverage of the injected faults).
    pub(crate) marks: BTreeMap<&'static str, u64>,
    /// Set once the fault phase is over.
    pub(crate) calm: bool,
    /// The kernel predates incremental buffer consumption (6.12) and refuses the flag.
    old_kernel: bool,
    /// The fixed-file table: its size, and per registered slot the descriptor it was
    /// registered from and that socket's inode (the table holds the file, not the number).
    files: Option<(u32, FileTable)>,
    /// Draws of the table's own faults (a stream of their own): a fifth of the kernels
    /// have no sparse tables, and a registration may be refused.
    files_rng: Rng,
    files_refused: bool,
    /// Draws of peers that reset right after a write through took part of a response (a
    /// stream of their own).
    through_rng: Rng,
}

/// Registered fixed-file slots: the descriptor each was registered from and its inode.
type FileTable = BTreeMap<u32, (RawFd, u64)>;

const TRACE_LINES: usize = 300;

impl SimKernel {
    /// A kernel for seed `seed`; the worker's first sockets are registered already
    /// ([`register_listener`]).
    pub(crate) fn new(seed: u64, wire: Wire, eventfd: RawFd) -> SimKernel {
        let mut rng = Rng::new(seed, 1);
        let mut rates = Rates::draw(&mut rng);
        let mut prng = Rng::new(seed, 6);
        rates.draw_proxy(&mut prng);
        let fixed_send = if rng.below(2) == 0 { FixedSend::SendFixed } else { FixedSend::Plain };
        let now = Instant::now();
        SimKernel {
            rng,
            prng,
            rates,
            wire,
            sq: Vec::new(),
            ops: Vec::new(),
            cq: VecDeque::new(),
            overflow: VecDeque::new(),
            bufs: None,
            udp: super::udp::SimUdp::new(seed),
            fixed: None,
            fixed_send,
            socks: Vec::new(),
            by_ino: BTreeMap::new(),
            backlog: VecDeque::new(),
            listeners: Vec::new(),
            absorbed: 0,
            eventfd,
            now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            turns: 0,
            violations: Vec::new(),
            trace: VecDeque::new(),
            marks: BTreeMap::new(),
            calm: false,
            old_kernel: Rng::new(seed, 13).below(5) == 0,
            files: None,
            files_rng: Rng::new(seed, 17),
            files_refused: Rng::new(seed, 17).below(5) == 0,
            through_rng: Rng::new(seed, 18),
        }
    }

    pub(crate) fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_LINES && std::env::var_os("RINGMAN_SIM_FULL_TRACE").is_none() {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t{} {line}", self.turns));
    }

    pub(crate) fn mark(&mut self, what: &'static str) {
        *self.marks.entry(what).or_default() += 1;
    }

    pub(super) fn violation(&mut self, what: String) {
        self.note(format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    pub(crate) fn fixed_send(&self) -> FixedSend {
        self.fixed_send
    }

    /// `IORING_REGISTER_FILES2` with `IORING_RSRC_REGISTER_SPARSE`: an empty table, or
    /// EINVAL from a kernel before 5.19.
    pub(crate) fn register_files_sparse(&mut self, slots: u32) -> std::io::Result<()> {
        if self.files_refused {
            self.mark("fixed-file table refused");
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        if self.files.is_some() {
            return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.files = Some((slots, BTreeMap::new()));
        Ok(())
    }

    /// `IORING_REGISTER_FILES_UPDATE` of one slot: the socket behind `fd` goes into `slot`
    /// (the table holds it from now on, whatever happens to the number), or `fd` -1 clears
    /// it. Registering over an occupied slot is a violation: the socket there was never
    /// given up, so the engine lost track of it (the kernel would drop it silently). Some
    /// registrations fail (ENOMEM) while faults run.
    pub(crate) fn update_file(&mut self, slot: u32, fd: RawFd) -> std::io::Result<()> {
        let Some((size, _)) = &self.files else { return Err(std::io::Error::from_raw_os_error(libc::ENXIO)) };
        if slot >= *size {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        if fd == -1 {
            let gone = self.files.as_mut().and_then(|(_, t)| t.remove(&slot));
            if gone.is_some() {
                self.mark("fixed file cleared");
            }
            return Ok(());
        }
        if !self.calm && self.files_rng.chance(30) {
            self.mark("fixed file refused");
            return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let Some(sock) = self.sock_by_fd(fd).filter(|&i| !self.socks[i].engine_closed) else {
            self.violation(format!("fixed-file slot {slot}: registering fd {fd}, which names no open connection"));
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        };
        let ino = self.socks[sock].ino;
        let table = &mut self.files.as_mut().expect("table checked above").1;
        if let Some((old_fd, _)) = table.insert(slot, (fd, ino)) {
            self.violation(format!(
                "fixed-file slot {slot}: registered again (fd {fd}) while it still holds fd {old_fd}'s socket"
            ));
        }
        self.mark("fixed file registered");
        if self.socks[sock].outgoing {
            self.mark("outgoing connection registered");
        }
        self.note(format!("sock {sock}: registered in fixed-file slot {slot}"));
        Ok(())
    }

    /// An SQE naming a fixed-file slot, turned into one naming the descriptor it was
    /// registered from (what the kernel's lookup amounts to); `None` (a violation) when
    /// the slot is empty, or when that descriptor was closed or reused while the slot kept
    /// the socket (the operation would reach a socket the engine no longer owns).
    fn resolve_fixed(&mut self, mut s: Sqe) -> Option<Sqe> {
        if s.flags & IOSQE_FIXED_FILE == 0 {
            return Some(s);
        }
        let slot = s.fd as u32;
        let entry = self.files.as_ref().and_then(|(_, t)| t.get(&slot).copied());
        match entry {
            Some((fd, ino)) if ino_of(fd) == Some(ino) => {
                self.mark("fixed-file operation");
                s.fd = fd;
                s.flags &= !IOSQE_FIXED_FILE;
                Some(s)
            }
            Some((fd, _)) => {
                self.violation(format!("operation on fixed-file slot {slot} after its fd {fd} was closed {s:?}"));
                None
            }
            None => {
                self.violation(format!("operation on fixed-file slot {slot}, which holds no file {s:?}"));
                None
            }
        }
    }

    pub(crate) fn register_buf_ring(&mut self, addr: u64, count: u16, bgid: u16, flags: u16) -> std::io::Result<()> {
        let incremental = flags & PBUF_RING_INC != 0;
        if incremental && self.old_kernel {
            // A kernel before 6.12 refuses the flag.
            self.mark("no incremental buffers");
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let ring = BufRing {
            entries: addr as *mut BufRingEntry,
            incremental,
            count,
            head: 0,
            seen_tail: 0,
            engine_owns: vec![true; count as usize],
        };
        match bgid {
            crate::buffers::RECV_BGID => self.bufs = Some(ring),
            crate::buffers::UDP_BGID => self.udp.bufs = Some(ring),
            _ => self.violation(format!("unmodelled buffer group {bgid}")),
        }
        Ok(())
    }

    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) {
        self.scan_buffers();
        let ring = match bgid {
            crate::buffers::UDP_BGID => self.udp.bufs.take(),
            _ => self.bufs.take(),
        };
        if let Some(b) = ring {
            let held: Vec<usize> = (0..b.count as usize).filter(|&i| b.engine_owns[i]).collect();
            if !held.is_empty() {
                self.violation(format!(
                    "receive buffers {held:?} of group {bgid} never given back before the ring went"
                ));
            }
        }
    }

    pub(crate) fn register_buffer(&mut self, iov: libc::iovec) -> std::io::Result<()> {
        self.fixed = Some((iov.iov_base as u64, iov.iov_len as u64));
        Ok(())
    }

    pub(crate) fn unregister_buffers(&mut self) {
        self.fixed = None;
    }

    /// Learns of the sockets the worker listened on since the last call.
    pub(crate) fn absorb(&mut self) {
        let new: Vec<(RawFd, u64, bool)> = LISTENERS.with(|l| l.borrow()[self.absorbed..].to_vec());
        self.absorbed += new.len();
        for (fd, ino, udp) in new {
            if udp {
                self.udp.add_server(fd, ino);
                self.note(format!("udp: the worker listens on fd {fd}"));
            } else {
                self.listeners.push(LSock { fd, ino, closed: false });
                self.note(format!("listener {}: fd {fd}", self.listeners.len() - 1));
            }
        }
    }

    /// The open listener `fd` names.
    fn open_listener(&self, fd: RawFd) -> Option<usize> {
        let ino = ino_of(fd)?;
        self.listeners.iter().position(|l| l.ino == ino && !l.closed)
    }

    /// A client connects now, if a listener is open (the schedule's last call before the
    /// stop: a listening worker must accept it).
    pub(crate) fn probe_client(&mut self) -> Option<usize> {
        self.absorb();
        self.scan_closes();
        self.listeners.iter().any(|l| !l.closed).then(|| {
            let i = self.new_sock(false);
            self.backlog.push_back(i);
            self.note(format!("sock {i}: the probe client connects"));
            i
        })
    }

    /// Queues an SQE (the kernel reads it at submission).
    pub(crate) fn push(&mut self, e: &squeue::Entry) -> bool {
        if self.sq.len() >= self.rates.sq_cap {
            return false;
        }
        self.sq.push(Sqe::decode(e));
        true
    }

    pub(crate) fn cq_overflow(&self) -> bool {
        !self.overflow.is_empty()
    }

    pub(crate) fn drain(&mut self, mut f: impl FnMut(u64, i32, u32)) {
        while let Some((ud, res, flags)) = self.cq.pop_front() {
            f(ud, res, flags);
        }
    }

    /// `io_uring_enter` without waiting: the SQEs are issued (some complete inline).
    pub(crate) fn submit(&mut self, _getevents: bool) -> std::io::Result<usize> {
        self.flush_overflow();
        if !self.calm && !self.cq.is_empty() && self.rng.chance(self.rates.ebusy) {
            self.mark("submit EBUSY");
            return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
        }
        let n = self.sq.len();
        self.issue();
        Ok(n)
    }

    /// `io_uring_enter` waiting for a completion or `timeout`: one turn of the world.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> std::io::Result<usize> {
        self.turns += 1;
        self.flush_overflow();
        self.issue();
        self.scan_buffers();
        self.scan_closes();
        self.world();
        self.udp_world();
        let before = self.cq.len();
        self.progress();
        self.udp_progress();
        let produced = self.cq.len() > before || !self.overflow.is_empty();
        // Time passes: a little on a busy turn, up to the timeout on an idle one.
        let step = if produced {
            Duration::from_micros(self.rng.below(self.rates.max_step.as_micros() as u64 + 1))
        } else {
            match timeout {
                Some(t) => t,
                None => self.rates.max_step.max(Duration::from_millis(1)),
            }
        };
        self.now += step;
        self.wall += step;
        crate::clock::set_virtual(Some((self.now, self.wall)));
        if produced {
            Ok(0)
        } else {
            Err(std::io::Error::from_raw_os_error(libc::ETIME))
        }
    }

    /// Moves overflowed completions into the CQ as room allows.
    fn flush_overflow(&mut self) {
        while self.cq.len() < self.rates.cq_cap {
            match self.overflow.pop_front() {
                Some(c) => self.cq.push_back(c),
                None => break,
            }
        }
    }

    /// Posts a CQE. A multishot CQE that does not fit ends its operation (returns false
    /// when `more` had to be dropped).
    pub(super) fn post(&mut self, ud: u64, res: i32, mut flags: u32) -> bool {
        if self.cq.len() < self.rates.cq_cap && self.overflow.is_empty() {
            self.cq.push_back((ud, res, flags));
            return true;
        }
        self.mark("CQ overflow");
        let kept = flags & CQE_F_MORE == 0;
        flags &= !CQE_F_MORE;
        self.overflow.push_back((ud, res, flags));
        kept
    }

    /// The sock the engine's descriptor `fd` refers to.
    pub(crate) fn sock_by_fd(&self, fd: RawFd) -> Option<usize> {
        let ino = ino_of(fd)?;
        self.by_ino.get(&ino).copied()
    }

    /// Issues the submitted SQEs in order.
    fn issue(&mut self) {
        self.absorb();
        let sqes = std::mem::take(&mut self.sq);
        for s in sqes {
            self.issue_one(s);
        }
    }

    fn issue_one(&mut self, s: Sqe) {
        let Some(s) = self.resolve_fixed(s) else { return };
        let ud = s.user_data;
        match s.opcode {
            c if c == opcode::AcceptMulti::CODE => {
                if s.ioprio & IORING_ACCEPT_MULTISHOT == 0 {
                    return self.violation(format!("unmodelled accept {s:?}"));
                }
                let Some(listener) = self.open_listener(s.fd) else {
                    return self.violation(format!("accept submitted on fd {}, which names no open listener", s.fd));
                };
                self.ops.push(Op { ud, fd: s.fd, kind: OpKind::Accept { listener } });
            }
            c if c == opcode::RecvMulti::CODE && s.flags & IOSQE_BUFFER_SELECT == 0 => {
                if s.ioprio != 0 || s.len == 0 || s.buf_group != 0 {
                    return self.violation(format!("unmodelled plain receive {s:?}"));
                }
                match self.live_sock(s.fd, "receive") {
                    Some(sock) => {
                        let kind = OpKind::RecvInto { sock, addr: s.addr, len: s.len as usize };
                        self.ops.push(Op { ud, fd: s.fd, kind });
                    }
                    None => drop(self.post(ud, -libc::EBADF, 0)),
                }
            }
            c if c == opcode::RecvMulti::CODE => {
                let multishot = s.ioprio & IORING_RECV_MULTISHOT != 0;
                if s.flags & IOSQE_BUFFER_SELECT == 0 || s.buf_group != 0 || multishot && s.len != 0 {
                    return self.violation(format!("unmodelled receive {s:?}"));
                }
                match self.live_sock(s.fd, "receive") {
                    Some(sock) => {
                        let kind = OpKind::Recv { sock, multishot, len: s.len as usize };
                        self.ops.push(Op { ud, fd: s.fd, kind });
                    }
                    None => drop(self.post(ud, -libc::EBADF, 0)),
                }
            }
            c if c == opcode::Send::CODE => {
                let fixed = s.ioprio & crate::ring::RECVSEND_FIXED_BUF != 0;
                if fixed {
                    let inside =
                        self.fixed.is_some_and(|(base, len)| s.addr >= base && s.addr + s.len as u64 <= base + len);
                    if !inside {
                        return self.violation(format!("fixed send outside the registered buffer {s:?}"));
                    }
                }
                let waitall = s.op_flags & libc::MSG_WAITALL as u32 != 0;
                match self.live_sock(s.fd, "send") {
                    Some(sock) => {
                        let kind = OpKind::Send { sock, addr: s.addr, len: s.len as usize, waitall, vec: false };
                        self.ops.push(Op { ud, fd: s.fd, kind });
                        if self.rng.chance(self.rates.inline) {
                            // Room in the socket buffer: the send completes during submission.
                            let i = self.ops.len() - 1;
                            self.try_complete(i);
                        }
                    }
                    None => drop(self.post(ud, -libc::EBADF, 0)),
                }
            }
            c if c == opcode::Read::CODE => {
                if s.fd != self.eventfd || s.len != 8 {
                    return self.violation(format!("unmodelled read {s:?}"));
                }
                self.ops.push(Op { ud, fd: s.fd, kind: OpKind::Wake { addr: s.addr } });
            }
            c if c == opcode::Connect::CODE => self.issue_connect(s),
            c if c == opcode::SendMsg::CODE && self.sock_by_fd(s.fd).is_some() => self.issue_sendmsg(s),
            c if c == opcode::RecvMsgMulti::CODE || c == opcode::SendMsg::CODE => self.issue_udp(s),
            c if c == opcode::AsyncCancel::CODE => {
                if s.op_flags & IORING_ASYNC_CANCEL_FD != 0 {
                    let all = s.op_flags & IORING_ASYNC_CANCEL_ALL != 0;
                    let fd = s.fd;
                    let n = self.cancel(|op| op.fd == fd, all);
                    let res = if n == 0 { -libc::ENOENT } else { n as i32 };
                    self.post(ud, if all { n as i32 } else { res }, 0);
                } else {
                    let target = s.addr;
                    let n = self.cancel(|op| op.ud == target, false) + self.udp_cancel(target);
                    self.post(ud, if n == 0 { -libc::ENOENT } else { 0 }, 0);
                }
            }
            _ => self.violation(format!("unmodelled opcode {s:?}")),
        }
    }

    /// A SENDMSG on a stream connection (several send chunks in one operation).
    fn issue_sendmsg(&mut self, s: Sqe) {
        if s.op_flags & libc::MSG_NOSIGNAL as u32 == 0 {
            return self.violation(format!("stream SENDMSG without MSG_NOSIGNAL {s:?}"));
        }
        // SAFETY: the SQE's address is the engine's `msghdr`, kept alive until the CQE.
        let hdr = unsafe { std::ptr::read_unaligned(s.addr as *const libc::msghdr) };
        if !hdr.msg_name.is_null() || hdr.msg_controllen != 0 || hdr.msg_iovlen == 0 || hdr.msg_iovlen > 1024 {
            return self.violation(format!("unmodelled stream SENDMSG {hdr:?}"));
        }
        // SAFETY: `msg_iovlen` iovecs at `msg_iov`, inside the engine's header box.
        let iov = unsafe { std::slice::from_raw_parts(hdr.msg_iov, hdr.msg_iovlen) };
        let len = iov.iter().map(|v| v.iov_len).sum::<usize>();
        let waitall = s.op_flags & libc::MSG_WAITALL as u32 != 0;
        let Some(sock) = self.live_sock(s.fd, "send") else {
            self.post(s.user_data, -libc::EBADF, 0);
            return;
        };
        self.mark("stream SENDMSG");
        let kind = OpKind::Send { sock, addr: s.addr, len, waitall, vec: true };
        self.ops.push(Op { ud: s.user_data, fd: s.fd, kind });
        if self.rng.chance(self.rates.inline) {
            let i = self.ops.len() - 1;
            self.try_complete(i);
        }
    }

    /// The socket behind descriptor `fd`, unless the engine closed it (a violation: the
    /// kernel would act on whatever file the number names now).
    fn live_sock(&mut self, fd: RawFd, what: &str) -> Option<usize> {
        match self.sock_by_fd(fd) {
            Some(i) if !self.socks[i].engine_closed => Some(i),
            _ => {
                self.violation(format!("{what} submitted on fd {fd}, which names no open connection"));
                None
            }
        }
    }

    fn issue_connect(&mut self, s: Sqe) {
        if ino_of(s.fd).is_none() {
            return self.violation(format!("connect on a closed fd {s:?}"));
        }
        // SAFETY: a CONNECT's address is the engine's boxed sockaddr, kept alive until the
        // completion (the engine's contract with the kernel); its first field is the family.
        let family = unsafe { std::ptr::read_unaligned(s.addr as *const libc::sa_family_t) };
        // SAFETY: the descriptor is open (checked above) and only borrowed for getsockopt.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.fd) };
        let domain = socket2::SockRef::from(&fd).domain().ok().map(libc::c_int::from);
        if domain != Some(libc::c_int::from(family)) {
            // The kernel refuses it (EAFNOSUPPORT / EINVAL): the dial built the wrong socket.
            return self.violation(format!("connect with a family-{family} address on a {domain:?} socket"));
        }
        if libc::c_int::from(family) == libc::AF_UNIX {
            self.mark("unix connect");
        }
        let r = self.rng.below(1000) as u32;
        let outcome = if self.calm || r >= self.rates.connect_refused + self.rates.connect_hang {
            ConnectOutcome::Accepted
        } else if r < self.rates.connect_refused {
            ConnectOutcome::Refused
        } else {
            ConnectOutcome::Hang
        };
        let due = self.turns + self.rng.below(4);
        // SAFETY: the SQE's address is the engine's boxed socket address (a
        // `sockaddr_storage`, at least as large as a `sockaddr_in`), which the kernel reads at
        // submission (now).
        let sin = unsafe { std::ptr::read_unaligned(s.addr as *const libc::sockaddr_in) };
        let port = if i32::from(sin.sin_family) == libc::AF_INET { u16::from_be(sin.sin_port) } else { 0 };
        let kind = OpKind::Connect { sock: usize::MAX, outcome, due, port };
        self.ops.push(Op { ud: s.user_data, fd: s.fd, kind });
    }

    /// Cancels the operations `hit` selects (the first only, unless `all`): each posts
    /// `-ECANCELED` as its final CQE, or, when it was already due and the schedule says the
    /// race went its way, completes normally first (a multishot is then still ended).
    fn cancel(&mut self, hit: impl Fn(&Op) -> bool, all: bool) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.ops.len() {
            if !hit(&self.ops[i]) {
                i += 1;
                continue;
            }
            n += 1;
            if self.rng.chance(self.rates.cancel_race) {
                self.mark("cancel raced a completion");
                if self.try_complete(i) {
                    // A single-shot completed; the index now holds the next op.
                    if !all {
                        return n;
                    }
                    continue;
                }
            }
            let op = self.ops.remove(i);
            self.post(op.ud, -libc::ECANCELED, 0);
            if !all {
                return n;
            }
        }
        n
    }

    /// Sockets the engine shut down or closed since the last look; a closed listener resets
    /// the clients still queued on it.
    fn scan_closes(&mut self) {
        for l in 0..self.listeners.len() {
            let (fd, ino) = (self.listeners[l].fd, self.listeners[l].ino);
            if self.listeners[l].closed || ino_of(fd) == Some(ino) {
                continue;
            }
            self.listeners[l].closed = true;
            self.note(format!("listener {l}: engine closed its fd"));
            if self.ops.iter().any(|o| o.kind == OpKind::Accept { listener: l }) {
                self.violation(format!("listener {l}: fd closed while its accept is in flight"));
            }
            for s in std::mem::take(&mut self.backlog) {
                self.mark("queued client reset by the listener's close");
                self.note(format!("sock {s}: reset, its listener closed before accepting it"));
                let fd = self.socks[s].fd;
                self.socks[s].engine_closed = true;
                self.socks[s].reset = true;
                // SAFETY: never handed to the engine; ours to close.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        for i in 0..self.socks.len() {
            let s = &self.socks[i];
            if s.engine_closed {
                continue;
            }
            if ino_of(s.fd) != Some(s.ino) {
                self.socks[i].engine_closed = true;
                self.socks[i].engine_shut = true;
                self.note(format!("sock {i}: engine closed its fd"));
                let ino = self.socks[i].ino;
                let kept = self.files.as_ref().and_then(|(_, t)| t.iter().find(|(_, e)| e.1 == ino).map(|(k, _)| *k));
                if let Some(slot) = kept {
                    // The table's reference keeps the socket open: the peer never sees the close.
                    self.violation(format!("sock {i}: fd closed while fixed-file slot {slot} still holds it"));
                }
                if let Some(op) = self.ops.iter().find(|o| op_sock(o) == Some(i)) {
                    let what = format!("sock {i}: fd closed while {:?} is in flight", op.kind);
                    self.violation(what);
                }
                continue;
            }
            if !s.engine_shut && peer_sees_eof(s.peer.as_raw_fd()) {
                self.socks[i].engine_shut = true;
                self.note(format!("sock {i}: engine shut the socket down"));
            }
        }
    }

    /// Buffers the engine published since the last look: each must be one it held.
    fn scan_buffers(&mut self) {
        for bid in self.udp.bufs.as_mut().map(BufRing::scan).unwrap_or_default() {
            self.violation(format!("datagram buffer {bid} published while the kernel already held it"));
        }
        for bid in self.bufs.as_mut().map(BufRing::scan).unwrap_or_default() {
            self.violation(format!("receive buffer {bid} published while the kernel already held it"));
        }
    }

    /// Takes the next published buffer: (bid, address, length).
    fn take_buffer(&mut self) -> Option<(u16, u64, usize)> {
        self.bufs.as_mut()?.take()
    }

    /// The buffer flags of a receive's EOF. Kernels have named a buffer in a completion
    /// without bytes: a whole buffer is then consumed (the engine gets it back); a buffer
    /// consumed in pieces is not — it stays at the head, the kernel's, whether the
    /// completion says `F_BUF_MORE` (kernels with the fix of 2025) or not (before it).
    fn eof_buffer(&mut self) -> u32 {
        if self.calm || self.rng.below(4) != 0 {
            return 0;
        }
        let Some(b) = self.bufs.as_mut() else { return 0 };
        if b.incremental {
            let Some(bid) = b.peek() else { return 0 };
            self.mark("EOF naming a buffer it did not consume");
            let more = if self.rng.below(2) == 0 { CQE_F_BUF_MORE } else { 0 };
            return CQE_F_BUFFER | (bid as u32) << 16 | more;
        }
        let Some((bid, _, _)) = b.take() else { return 0 };
        self.mark("EOF naming a whole buffer");
        CQE_F_BUFFER | (bid as u32) << 16
    }

    pub(crate) fn ops_in_flight(&self) -> usize {
        self.ops.len() + self.udp.ops_in_flight()
    }

    /// The peers act: new clients, writes, reads, faults.
    fn world(&mut self) {
        let r = self.rates.clone();
        let accepted = self.socks.iter().filter(|s| !s.outgoing).count();
        if accepted < r.max_clients && self.rng.chance(r.new_client) {
            if self.listeners.iter().any(|l| !l.closed) {
                let i = self.new_sock(false);
                self.backlog.push_back(i);
                self.note(format!("sock {i}: client connects"));
            } else {
                // Nothing listens: the kernel refuses the connection.
                self.mark("client refused: nothing listens");
            }
        }
        for i in 0..self.socks.len() {
            let s = &self.socks[i];
            if s.engine_closed || s.reset || s.vanished {
                continue;
            }
            if self.rng.chance(r.peer_read) {
                let grant = self.rng.size(256 * 1024);
                self.socks[i].window += grant;
            }
            if self.calm {
                self.socks[i].window = usize::MAX / 2;
            }
            let s = &self.socks[i];
            if s.proxy.as_ref().is_some_and(|p| !p.open) {
                self.proxy_peer(i);
            } else if s.outgoing {
                if let Some(p) = s.proxy.as_ref().filter(|p| s.taken < p.answer_end && s.received.len() > p.request_end)
                {
                    let what = format!(
                        "sock {i}: {} bytes for the target sent before the proxy's answer was read ({} of {})",
                        s.received.len() - p.request_end,
                        s.taken,
                        p.answer_end
                    );
                    self.violation(what);
                }
                let s = &self.socks[i];
                // The remote echoes what it got.
                if s.echoed < s.received.len() && !s.peer_eof {
                    let s = &mut self.socks[i];
                    let (from, to) = (s.echoed, s.received.len());
                    let echo = s.received[from..to].to_vec();
                    s.written.extend_from_slice(&echo);
                    s.echoed = to;
                }
            } else if s.ws.is_some() {
                self.ws_peer(i);
            } else if !s.peer_eof && s.budget > 0 && self.rng.chance(r.peer_write) {
                let n = self.rng.size(r.max_message).min(self.socks[i].budget);
                self.peer_write(i, n);
            }
            if self.calm {
                continue;
            }
            if self.rng.chance(r.reset) {
                self.socks[i].reset = true;
                self.mark("peer reset");
                self.note(format!("sock {i}: reset"));
            } else if self.rng.chance(r.peer_eof) && !self.socks[i].peer_eof {
                self.socks[i].peer_eof = true;
                self.mark("peer half-close");
                self.note(format!("sock {i}: peer half-closes"));
            } else if self.rng.chance(r.vanish) {
                self.socks[i].vanished = true;
                self.mark("peer vanished");
                self.note(format!("sock {i}: peer vanishes"));
            }
        }
    }

    /// A proxy peer's turn: finish a split answer, or read the engine's next request and
    /// answer it (or reset mid-handshake).
    fn proxy_peer(&mut self, i: usize) {
        let r = self.rates.clone();
        let calm = self.calm;
        let s = &mut self.socks[i];
        let p = s.proxy.as_mut().expect("a proxy peer");
        if s.peer_eof {
            return;
        }
        if !p.pending.is_empty() {
            s.written.append(&mut p.pending);
            p.open = p.opening;
            if p.refusal.is_some() {
                s.peer_eof = true;
            }
            return;
        }
        if s.taken < p.answer_end && s.received.len() > p.request_end {
            let what = format!("sock {i}: a request sent before the proxy's previous answer was read");
            return self.violation(what);
        }
        if !calm && s.received.len() > p.request_end && self.prng.chance(r.proxy_reset) {
            s.reset = true;
            self.mark("proxy reset mid-handshake");
            self.note(format!("sock {i}: the proxy resets mid-handshake"));
            return;
        }
        let buf = &s.received[p.request_end..];
        let need_auth = p.auth;
        let parsed: Result<Option<ProxyAnswer>, String> = match (p.socks5, p.phase) {
            (true, 0) => match buf {
                [5, n, rest @ ..] if rest.len() >= *n as usize => {
                    let methods = &rest[..*n as usize];
                    let used = 2 + *n as usize;
                    let pick = if need_auth { 2 } else { 0 };
                    if methods.contains(&pick) {
                        p.phase = if pick == 2 { 1 } else { 2 };
                        Ok(Some((used, vec![5, pick], None, false)))
                    } else {
                        Ok(Some((
                            used,
                            vec![5, 0xFF],
                            Some("none of the offered authentication methods".into()),
                            false,
                        )))
                    }
                }
                [5, ..] | [] => Ok(None),
                _ => Err(format!("not a SOCKS5 greeting: {buf:?}")),
            },
            (true, 1) => match buf {
                [1, ulen, rest @ ..] if rest.len() > *ulen as usize => {
                    let user = &rest[..*ulen as usize];
                    let plen = rest[*ulen as usize] as usize;
                    let after = &rest[*ulen as usize + 1..];
                    if after.len() < plen {
                        Ok(None)
                    } else {
                        let ok = user == PROXY_USER.as_bytes() && &after[..plen] == PROXY_PASS.as_bytes();
                        p.phase = 2;
                        let used = 2 + *ulen as usize + 1 + plen;
                        if ok {
                            Ok(Some((used, vec![1, 0], None, false)))
                        } else {
                            Ok(Some((used, vec![1, 1], Some("authentication failed".into()), false)))
                        }
                    }
                }
                [1, ..] | [] => Ok(None),
                _ => Err(format!("not an RFC 1929 request: {buf:?}")),
            },
            (true, _) => match buf {
                [5, 1, 0, 3, n, rest @ ..] if rest.len() >= *n as usize + 2 => {
                    let name = &rest[..*n as usize];
                    let port = u16::from_be_bytes([rest[*n as usize], rest[*n as usize + 1]]);
                    if name != PROXY_TARGET.as_bytes() || port != PROXY_TARGET_PORT {
                        Err(format!("SOCKS5 CONNECT to {:?}:{port}", String::from_utf8_lossy(name)))
                    } else if !calm && self.prng.chance(r.proxy_refuse) {
                        let refusal = Some("SOCKS5 reply 5: connection refused".to_string());
                        Ok(Some((5 + *n as usize + 2, vec![5, 5, 0, 1, 0, 0, 0, 0, 0, 0], refusal, false)))
                    } else {
                        Ok(Some((5 + *n as usize + 2, vec![5, 0, 0, 1, 10, 0, 0, 9, 0, 7], None, true)))
                    }
                }
                [5, 1, 0, 3, ..] | [5, 1, 0] | [5, 1] | [5] | [] => Ok(None),
                _ => Err(format!("not a SOCKS5 CONNECT by name: {buf:?}")),
            },
            (false, _) => match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                None => Ok(None),
                Some(end) => {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let target = format!("{PROXY_TARGET}:{PROXY_TARGET_PORT}");
                    let mut lines = head.split("\r\n");
                    let good_auth = lines.clone().any(|l| l == "Proxy-Authorization: Basic c2ltOnBhc3M=");
                    if lines.next() != Some(&format!("CONNECT {target} HTTP/1.1"))
                        || !head.contains(&format!("\r\nHost: {target}"))
                    {
                        Err(format!("not an HTTP CONNECT to {target}: {head:?}"))
                    } else if need_auth && !good_auth {
                        let answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"sim\"\r\nContent-Length: 0\r\n\r\n";
                        Ok(Some((
                            end + 4,
                            answer.to_vec(),
                            Some("HTTP/1.1 407 Proxy Authentication Required".into()),
                            false,
                        )))
                    } else if !calm && self.prng.chance(r.proxy_refuse) {
                        let answer = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
                        Ok(Some((end + 4, answer.to_vec(), Some("HTTP/1.1 502 Bad Gateway".into()), false)))
                    } else {
                        Ok(Some((
                            end + 4,
                            b"HTTP/1.1 200 Connection established\r\nVia: sim\r\n\r\n".to_vec(),
                            None,
                            true,
                        )))
                    }
                }
            },
        };
        let (used, mut answer, refusal, success) = match parsed {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(e) => return self.violation(format!("sock {i}: the proxy got {e}")),
        };
        let s = &mut self.socks[i];
        let p = s.proxy.as_mut().expect("a proxy peer");
        p.request_end += used;
        if s.received.len() > p.request_end {
            let extra = s.received.len() - p.request_end;
            return self
                .violation(format!("sock {i}: {extra} bytes sent behind a request, before the proxy answered it"));
        }
        if refusal.is_some() {
            self.mark("proxy refused");
        }
        if success {
            self.mark("proxy tunnel open");
        }
        let split = answer.len() > 1 && self.prng.chance(r.proxy_split);
        let banner = success && self.prng.chance(r.proxy_banner);
        let at = self.prng.range(1, answer.len().max(2) as u64) as usize;
        let s = &mut self.socks[i];
        let p = s.proxy.as_mut().expect("a proxy peer");
        p.answer_end = s.written.len() + answer.len();
        p.refusal_end = s.written.len() + if p.socks5 { answer.len().min(2) } else { answer.len() };
        p.refusal = refusal;
        p.opening = success;
        if success {
            p.request_end = s.received.len();
            s.echoed = p.request_end;
        }
        if banner {
            // The target speaks first: its bytes follow the answer at once.
            answer.extend_from_slice(&self.banner());
            self.mark("proxy target bytes after answer");
        }
        if split {
            self.mark("proxy answer split");
        }
        let s = &mut self.socks[i];
        let p = s.proxy.as_mut().expect("a proxy peer");
        if split {
            p.pending = answer.split_off(at.min(answer.len() - 1));
        }
        s.written.extend_from_slice(&answer);
        if p.pending.is_empty() {
            p.open = p.opening;
            if p.refusal.is_some() {
                s.peer_eof = true;
            }
        }
        let what = if success {
            "opens the tunnel"
        } else if p.refusal.is_some() {
            "refuses"
        } else {
            "answers"
        };
        self.note(format!("sock {i}: the proxy {what}{}", if split { " (split)" } else { "" }));
    }

    /// The first bytes a target that speaks first sends, in the outgoing protocol.
    fn banner(&self) -> Vec<u8> {
        match self.wire {
            Wire::Raw => b"banner".to_vec(),
            Wire::Text => b"banner\n".to_vec(),
            Wire::Frame | Wire::Ws => {
                let mut f = 10u32.to_be_bytes().to_vec();
                f.extend_from_slice(b"banner");
                f
            }
        }
    }

    /// The peer of sock `i` writes one message of about `n` bytes in its protocol.
    fn peer_write(&mut self, i: usize, n: usize) {
        let start = self.socks[i].written.len();
        let fill = |pos: usize| ((pos * 31 + i * 17) % 251) as u8;
        let letters = |pos: usize| b'a' + ((pos * 7 + i * 13) % 26) as u8;
        // (Drawn for every wire, so a seed's other draws do not depend on it.)
        let (text, mask) = (self.rng.below(2) == 0, (self.rng.next() as u32).to_ne_bytes());
        let s = &mut self.socks[i];
        match self.wire {
            Wire::Raw => s.written.extend((start..start + n.max(1)).map(fill)),
            Wire::Text => {
                s.written.extend((start..start + n).map(letters));
                s.written.push(b'\n');
            }
            Wire::Frame => {
                s.written.extend_from_slice(&((n + 4) as u32).to_be_bytes());
                let body = s.written.len();
                s.written.extend((body..body + n).map(fill));
            }
            Wire::Ws => {
                // Text (letters: valid UTF-8) or binary, masked as a client must.
                let payload: Vec<u8> = if text {
                    (start..start + n).map(letters).collect()
                } else {
                    (start..start + n).map(fill).collect()
                };
                let op = if text { OpCode::Text } else { OpCode::Binary };
                write_frame(&mut s.written, true, false, op, &payload, Some(mask));
                s.msgs.push(payload);
            }
        }
        let added = s.written.len() - start;
        s.budget = s.budget.saturating_sub(added);
    }

    /// A WebSocket peer's turn: read the 101 and the server's frames (answer pings and a
    /// close), then maybe send a message, a ping or its own close.
    fn ws_peer(&mut self, i: usize) {
        let r = self.rates.clone();
        let mut replies: Vec<(OpCode, Vec<u8>)> = Vec::new();
        {
            let s = &self.socks[i];
            let head = &s.received[..s.received.len().min(9)];
            if !s.ws.as_ref().expect("a ws peer").upgraded && !b"HTTP/1.1 ".starts_with(head) {
                // RFC 6455 §4.1: the server's first bytes are its handshake response.
                let what =
                    format!("ws peer {i} received {:?} before the handshake response", String::from_utf8_lossy(head));
                return self.violation(what);
            }
        }
        {
            let s = &mut self.socks[i];
            let w = s.ws.as_mut().expect("a ws peer");
            if !w.upgraded {
                match s.received.windows(4).position(|x| x == b"\r\n\r\n") {
                    Some(end) => {
                        w.upgraded = s.received.starts_with(b"HTTP/1.1 101");
                        w.parsed = end + 4;
                        if !w.upgraded {
                            // Refused: the client gives up (half-closes).
                            s.peer_eof = true;
                            return;
                        }
                    }
                    None => return,
                }
            }
            loop {
                let rest = &s.received[w.parsed..];
                let Ok(Some(h)) = parse_header(rest) else { break };
                let Some(len) = h.frame_len().filter(|l| *l <= rest.len()) else { break };
                let payload = rest[h.header_len..len].to_vec();
                w.parsed += len;
                match h.opcode {
                    OpCode::Ping if !w.close_sent => replies.push((OpCode::Pong, payload)),
                    OpCode::Close => {
                        w.close_received = true;
                        if !w.close_sent {
                            w.close_sent = true;
                            replies.push((OpCode::Close, payload));
                        }
                    }
                    _ => {}
                }
            }
        }
        for (op, payload) in replies {
            let mask = (self.rng.next() as u32).to_ne_bytes();
            let fin = self.rng.below(2) == 0;
            let s = &mut self.socks[i];
            write_frame(&mut s.written, true, false, op, &payload, Some(mask));
            if op == OpCode::Close {
                s.close_end = Some(s.written.len());
                // Many clients close TCP right after answering the close.
                s.peer_eof |= fin;
                self.note(format!("sock {i}: ws peer answers the close{}", if fin { " and half-closes" } else { "" }));
            }
        }
        let s = &self.socks[i];
        let w = s.ws.as_ref().expect("a ws peer");
        if !w.upgraded || w.close_sent || s.peer_eof || self.calm {
            return;
        }
        if s.budget > 0 && self.rng.chance(r.peer_write) {
            let n = self.rng.size(r.max_message).min(s.budget);
            self.peer_write(i, n);
        } else if self.rng.chance(r.peer_eof * 4) {
            let mask = (self.rng.next() as u32).to_ne_bytes();
            let s = &mut self.socks[i];
            write_close(&mut s.written, Some(1000), "bye", Some(mask));
            s.close_end = Some(s.written.len());
            s.ws.as_mut().expect("a ws peer").close_sent = true;
            self.mark("ws peer close");
            self.note(format!("sock {i}: ws peer sends its close"));
        } else if self.rng.chance(20) {
            let mask = (self.rng.next() as u32).to_ne_bytes();
            let s = &mut self.socks[i];
            write_frame(&mut s.written, true, false, OpCode::Ping, b"sim", Some(mask));
        }
    }

    fn new_sock(&mut self, outgoing: bool) -> usize {
        let (engine, peer) = socket_pair();
        let fd = engine.as_raw_fd();
        let ino = ino_of(fd).expect("fresh socket");
        let budget = self.rng.size(2 << 20);
        let i = self.socks.len();
        self.socks.push(Sock {
            outgoing,
            accepted: false,
            fd,
            ino,
            peer,
            written: Vec::new(),
            taken: 0,
            received: Vec::new(),
            window: self.rng.size(512 * 1024),
            peer_eof: false,
            reset: false,
            vanished: false,
            engine_shut: false,
            engine_closed: false,
            echoed: 0,
            budget,
            msgs: Vec::new(),
            ws: None,
            close_end: None,
            proxy: None,
        });
        if self.wire == Wire::Ws && !outgoing {
            let req = ringman_protocols::ws::client_handshake_request("sim", "/", WS_KEY, &[]);
            let sk = &mut self.socks[i];
            sk.written.extend_from_slice(&req);
            sk.ws = Some(WsPeer::default());
        }
        self.by_ino.insert(ino, i);
        // The engine's end: handed out by accept (it owns it from the CQE on), or moved over
        // the engine's connecting socket by `connect_accepted`.
        std::mem::forget(engine);
        i
    }

    /// Completes what the schedule picks among the operations that are due (a multishot
    /// may post several completions in one turn).
    fn progress(&mut self) {
        for _ in 0..self.rng.range(1, 3) {
            let mut i = 0;
            while i < self.ops.len() {
                if self.rng.chance(self.rates.complete) && self.try_complete(i) {
                    continue;
                }
                i += 1;
            }
        }
    }

    /// Completes op `i` if it is due; true when it left the list.
    fn try_complete(&mut self, i: usize) -> bool {
        let op = self.ops[i].clone();
        match op.kind {
            OpKind::Accept { listener } => self.complete_accept(i, op.ud, listener),
            OpKind::Recv { sock, multishot, len } => self.complete_recv(i, op.ud, sock, multishot, len),
            OpKind::RecvInto { sock, addr, len } => self.complete_recv_into(i, op.ud, sock, addr, len),
            OpKind::Send { sock, addr, len, waitall, vec } => {
                self.complete_send(i, op.ud, sock, (addr, vec), len, waitall)
            }
            OpKind::Wake { addr } => {
                let mut v = 0u64;
                // SAFETY: reading 8 bytes from our own eventfd into a local.
                let n = unsafe { libc::read(self.eventfd, (&mut v as *mut u64).cast(), 8) };
                if n != 8 {
                    return false;
                }
                // SAFETY: the SQE's buffer is the engine's 8-byte wake word, kept alive while
                // the read is in flight (the engine's contract with the kernel).
                unsafe { std::ptr::write_unaligned(addr as *mut u64, v) };
                self.ops.remove(i);
                self.post(op.ud, 8, 0);
                true
            }
            OpKind::Connect { outcome, due, port, .. } => {
                if self.turns < due || outcome == ConnectOutcome::Hang {
                    return false;
                }
                self.ops.remove(i);
                match outcome {
                    ConnectOutcome::Refused => {
                        self.mark("connect refused");
                        self.post(op.ud, -libc::ECONNREFUSED, 0);
                    }
                    _ => {
                        let s = self.new_sock(true);
                        // The engine's socket becomes the connected one: the pair's end moves
                        // onto its descriptor number.
                        let src = self.socks[s].fd;
                        // SAFETY: both descriptors are open; dup2 replaces the engine's
                        // unconnected socket with the simulated connection atomically.
                        let r = unsafe { libc::dup2(src, op.fd) };
                        assert!(r >= 0, "dup2 failed");
                        // SAFETY: `src` is ours (forgotten in new_sock) and now duplicated.
                        drop(unsafe { OwnedFd::from_raw_fd(src) });
                        let ino = ino_of(op.fd).expect("dup2'd socket");
                        let sk = &mut self.socks[s];
                        sk.fd = op.fd;
                        self.by_ino.remove(&sk.ino);
                        sk.ino = ino;
                        self.by_ino.insert(ino, s);
                        let (socks5, auth) = match port {
                            1080 => (true, true),
                            1081 => (true, false),
                            3128 => (false, true),
                            3129 => (false, false),
                            _ => (false, false),
                        };
                        if matches!(port, 1080 | 1081 | 3128 | 3129) {
                            let phase = if socks5 { 0 } else { 2 };
                            sk.proxy = Some(ProxyPeer { socks5, auth, phase, ..ProxyPeer::default() });
                        }
                        self.note(format!("sock {s}: outgoing connection to port {port} accepted"));
                        self.post(op.ud, 0, 0);
                    }
                }
                true
            }
        }
    }

    fn complete_accept(&mut self, i: usize, ud: u64, listener: usize) -> bool {
        if !self.calm && self.rng.chance(self.rates.accept_error) {
            let e = if self.rng.below(2) == 0 { libc::EMFILE } else { libc::ECONNABORTED };
            self.mark("accept error");
            if e == libc::ECONNABORTED {
                // The client gave up before it was accepted.
                if let Some(s) = self.backlog.pop_front() {
                    let fd = self.socks[s].fd;
                    self.socks[s].engine_closed = true;
                    self.socks[s].reset = true;
                    // SAFETY: never handed to the engine; ours to close.
                    drop(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            // An accept error ends the multishot.
            self.ops.remove(i);
            self.post(ud, -e, 0);
            return true;
        }
        let Some(s) = self.backlog.pop_front() else { return false };
        let end = !self.calm && self.rng.chance(self.rates.multishot_end);
        let more = if end { 0 } else { CQE_F_MORE };
        let fd = self.socks[s].fd;
        self.socks[s].accepted = true;
        if listener > 0 {
            self.mark("accepted on a relistened socket");
        }
        self.note(format!("sock {s}: accepted"));
        if !self.post(ud, fd, more) || end {
            self.ops.remove(i);
            return true;
        }
        false
    }

    fn complete_recv(&mut self, i: usize, ud: u64, sock: usize, multishot: bool, want: usize) -> bool {
        let s = &self.socks[sock];
        if s.reset {
            self.ops.remove(i);
            self.post(ud, -libc::ECONNRESET, 0);
            return true;
        }
        let avail = s.written.len() - s.taken;
        if avail == 0 || s.engine_shut {
            if s.peer_eof || s.engine_shut {
                self.ops.remove(i);
                let flags = self.eof_buffer();
                self.post(ud, 0, flags);
                return true;
            }
            return false;
        }
        if s.vanished && !self.calm {
            return false;
        }
        let withhold = !self.calm && self.rng.chance(self.rates.withhold_buffers);
        let Some((bid, addr, cap)) = (if withhold { None } else { self.take_buffer() }) else {
            self.mark("ENOBUFS");
            self.ops.remove(i);
            self.post(ud, -libc::ENOBUFS, 0);
            return true;
        };
        let cap = if want == 0 { cap } else { cap.min(want) };
        let mut n = avail.min(cap);
        if !self.calm && n > 1 && self.rng.below(2) == 0 {
            n = self.rng.range(1, n as u64) as usize;
        }
        let s = &mut self.socks[sock];
        // SAFETY: `addr..addr+cap` is the engine's receive buffer `bid`, which the engine
        // published and which is the kernel's until this CQE names it; `n ≤ cap`.
        unsafe { std::ptr::copy_nonoverlapping(s.written[s.taken..].as_ptr(), addr as *mut u8, n) };
        s.taken += n;
        let buf_more = self.bufs.as_mut().is_some_and(|b| b.consume(n));
        if buf_more {
            self.mark("piece of a buffer, more to come");
        } else if self.bufs.as_ref().is_some_and(|b| b.incremental) {
            self.mark("last piece of a buffer");
        }
        let buf_flags = CQE_F_BUFFER | (bid as u32) << 16 | if buf_more { CQE_F_BUF_MORE } else { 0 };
        if !multishot {
            self.mark("single-shot receive");
            self.ops.remove(i);
            self.post(ud, n as i32, buf_flags);
            return true;
        }
        let end = !self.calm && self.rng.chance(self.rates.multishot_end);
        let more = if end { 0 } else { CQE_F_MORE };
        let flags = buf_flags | more;
        if !self.post(ud, n as i32, flags) || end {
            self.mark("multishot receive ended");
            self.ops.remove(i);
            return true;
        }
        false
    }

    /// A plain receive: up to `want` bytes into the engine's buffer at `addr`.
    fn complete_recv_into(&mut self, i: usize, ud: u64, sock: usize, addr: u64, want: usize) -> bool {
        let s = &self.socks[sock];
        if s.reset {
            self.ops.remove(i);
            self.post(ud, -libc::ECONNRESET, 0);
            return true;
        }
        let avail = s.written.len() - s.taken;
        if avail == 0 || s.engine_shut {
            if s.peer_eof || s.engine_shut {
                self.ops.remove(i);
                self.post(ud, 0, 0);
                return true;
            }
            return false;
        }
        if s.vanished && !self.calm {
            return false;
        }
        let mut n = avail.min(want);
        if !self.calm && n > 1 && self.rng.below(2) == 0 {
            n = self.rng.range(1, n as u64) as usize;
        }
        let s = &mut self.socks[sock];
        // SAFETY: `addr..addr+want` is the engine's receive buffer for this read, which it
        // keeps alive and untouched until this CQE; `n ≤ want`.
        unsafe { std::ptr::copy_nonoverlapping(s.written[s.taken..].as_ptr(), addr as *mut u8, n) };
        s.taken += n;
        self.mark("plain receive");
        self.ops.remove(i);
        self.post(ud, n as i32, 0);
        true
    }

    fn complete_send(&mut self, i: usize, ud: u64, sock: usize, at: (u64, bool), len: usize, waitall: bool) -> bool {
        let s = &self.socks[sock];
        if s.reset || s.engine_shut {
            self.ops.remove(i);
            let e = if s.reset { libc::ECONNRESET } else { libc::EPIPE };
            self.post(ud, -e, 0);
            return true;
        }
        if !self.calm && self.rng.chance(self.rates.epipe) {
            self.socks[sock].reset = true;
            self.mark("send EPIPE");
            self.note(format!("sock {sock}: send fails with EPIPE"));
            self.ops.remove(i);
            self.post(ud, -libc::EPIPE, 0);
            return true;
        }
        if s.vanished && !self.calm {
            return false;
        }
        let mut n = len.min(s.window);
        if waitall && n < len || n == 0 && len > 0 {
            return false;
        }
        if !self.calm && n > 1 && self.rng.chance(self.rates.short_write) {
            // Without MSG_WAITALL the socket takes what it has room for. With it the kernel
            // retries a partial send and answers short only when the retry failed: the
            // bytes sent so far, and the socket is broken for what follows.
            self.mark("short write");
            n = self.rng.range(1, n as u64) as usize;
            if waitall {
                self.socks[sock].reset = true;
            }
        }
        let (addr, vec) = at;
        let s = &mut self.socks[sock];
        if vec {
            // SAFETY: the engine keeps the SENDMSG header, its iovecs and their bytes alive
            // and unchanged until this completion (buffers.rs invariant 3).
            let hdr = unsafe { std::ptr::read_unaligned(addr as *const libc::msghdr) };
            // SAFETY: as above; `msg_iovlen` was checked at submission.
            let iov = unsafe { std::slice::from_raw_parts(hdr.msg_iov, hdr.msg_iovlen) };
            let mut left = n;
            for v in iov {
                let take = left.min(v.iov_len);
                // SAFETY: `take ≤ iov_len` bytes of memory the engine keeps (see above).
                s.received.extend_from_slice(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, take) });
                left -= take;
            }
            if iov.iter().map(|v| v.iov_len).sum::<usize>() != len {
                self.violation("a SENDMSG's iovecs changed while it was in flight".to_string());
            }
        } else {
            // SAFETY: the engine keeps the send's memory (`addr..addr+len`) alive and unchanged
            // until this completion (buffers.rs invariant 3); `n ≤ len`.
            s.received.extend_from_slice(unsafe { std::slice::from_raw_parts(addr as *const u8, n) });
        }
        let s = &mut self.socks[sock];
        s.window -= n;
        self.ops.remove(i);
        self.post(ud, n as i32, 0);
        true
    }

    /// The engine's write outside the ring (`reactor/through.rs`: `write`, `tee`, `splice`
    /// on a non-blocking socket): the socket takes at once what its window allows, or part
    /// of it, or nothing, or fails as a send would.
    pub(crate) fn write_through(&mut self, fd: RawFd, head: &[u8], body: &[u8]) -> std::io::Result<usize> {
        let Some(sock) = self.sock_by_fd(fd) else {
            self.violation(format!("a write through on fd {fd}, which is no socket"));
            return Err(std::io::Error::from_raw_os_error(libc::EBADF));
        };
        if self.ops.iter().any(|op| matches!(op.kind, OpKind::Send { sock: s, .. } if s == sock)) {
            self.violation(format!("sock {sock}: a write through while a send is in flight"));
        }
        let (reset, shut) = (self.socks[sock].reset, self.socks[sock].engine_shut);
        if reset || shut {
            self.mark("write through on a dead socket");
            let e = if reset { libc::ECONNRESET } else { libc::EPIPE };
            return Err(std::io::Error::from_raw_os_error(e));
        }
        // (Ten times a send's rate: a write through is one call where a send is many.)
        if !self.calm && self.rng.chance(self.rates.epipe * 10) {
            self.socks[sock].reset = true;
            self.mark("write through EPIPE");
            self.note(format!("sock {sock}: write through fails with EPIPE"));
            return Err(std::io::Error::from_raw_os_error(libc::EPIPE));
        }
        let total = head.len() + body.len();
        let s = &self.socks[sock];
        let mut n = if s.vanished && !self.calm { 0 } else { total.min(s.window) };
        // Short, or nothing at all (the socket's memory is full although the peer's window
        // is not).
        if !self.calm && n > 0 && self.rng.chance(self.rates.short_write) {
            n = self.rng.range(0, n as u64 - 1) as usize;
        }
        self.mark(match n {
            0 => "write through refused (socket full)",
            n if n == total => "written through whole",
            _ => "written through in part",
        });
        let s = &mut self.socks[sock];
        let from_head = n.min(head.len());
        s.received.extend_from_slice(&head[..from_head]);
        s.received.extend_from_slice(&body[..n - from_head]);
        s.window -= n;
        self.note(format!("sock {sock}: write through took {n} of {total} bytes"));
        if !self.calm && 0 < n && n < total && self.through_rng.chance(300) {
            // The peer resets right after taking the first part: the queued rest fails,
            // inline when the engine submits it at once.
            self.socks[sock].reset = true;
            self.mark("reset after a write through in part");
            self.note(format!("sock {sock}: the peer resets"));
        }
        Ok(n)
    }

    /// Puts the world in its calm phase: no more faults; everything due completes.
    pub(crate) fn calm_down(&mut self) {
        self.calm = true;
        self.udp.calm_down();
        self.rates.calm();
    }
}

fn op_sock(op: &Op) -> Option<usize> {
    match op.kind {
        OpKind::Recv { sock, .. } | OpKind::Send { sock, .. } | OpKind::RecvInto { sock, .. } => Some(sock),
        _ => None,
    }
}

/// A connected pair of Unix stream sockets (close-on-exec, non-blocking).
fn socket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: two fresh descriptors nobody else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The inode behind descriptor `fd`, if it is open.
pub(super) fn ino_of(fd: RawFd) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is large enough for `struct stat`; fstat writes it or fails.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    // SAFETY: fstat succeeded, so `st` was written.
    (r == 0).then(|| unsafe { st.assume_init() }.st_ino)
}

/// Whether the socket pair end `fd` sees its peer's shutdown (a read would return 0).
fn peer_sees_eof(fd: RawFd) -> bool {
    let mut b = 0u8;
    // SAFETY: a one-byte peek into a local.
    let n = unsafe { libc::recv(fd, (&mut b as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n == 0
}
