//! One connection slot: its state, the id serials it is named by, and the turn clock its
//! activity stamps are read from.

use std::any::Any;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringman_protocols::{Decoder, Encoder, Framer, MessageKind};

use super::connect::Dial;
use super::send::SendQueue;
use super::{Core, Status};
use crate::hooks::Hooks;

/// A point on a core's monotonic clock in milliseconds since the core started, never zero so
/// that `Option<Stamp>` takes 4 bytes: activity stamps cost 4 bytes per connection instead of
/// an `Instant`'s 16 (P5 measures bytes per idle connection). Differences wrap after ~49
/// days, far beyond any timeout they are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(NonZeroU32);

impl Stamp {
    pub(super) const MIN: Stamp = Stamp(NonZeroU32::MIN);

    pub(super) fn at(epoch: Instant, t: Instant) -> Stamp {
        let ms = t.saturating_duration_since(epoch).as_millis() as u32;
        Stamp(NonZeroU32::new(ms).unwrap_or(NonZeroU32::MIN))
    }

    /// Time from `self` to the later stamp `now`.
    pub(super) fn until(self, now: Stamp) -> Duration {
        Duration::from_millis(u64::from(now.0.get().wrapping_sub(self.0.get())))
    }
}

/// Process-wide source of connection serials (see `ConnectionId`); rings take blocks.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Serials a ring reserves at a time, so accepting touches the shared counter rarely.
const SERIAL_BLOCK: u64 = 4096;

/// Serials are 48 bits (the thread takes the top 16 of an id).
const SERIAL_MASK: u64 = (1 << 48) - 1;

/// The block of serials a core hands out.
pub(super) struct Serials {
    next: u64,
    end: u64,
}

impl Serials {
    /// The next id number for a connection of `thread`: thread (16 bits) | serial (48 bits).
    pub(super) const fn new() -> Serials {
        Serials { next: 0, end: 0 }
    }

    pub(super) fn take(&mut self, thread: u16) -> u64 {
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
pub(super) fn gen_of(serial: u64) -> u32 {
    serial as u32 & 0xFF_FFFF
}

/// Where a connection's operations name its socket: by descriptor, or by its entry in the
/// ring's fixed-file table (at the slot's key), which spares each operation the kernel's
/// descriptor lookup and file reference count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileSlot {
    /// By descriptor until its second send, then registered ([`super::Core::register_file`]):
    /// a connection that sends again is likely to keep going, and one that answers once
    /// and closes (HTTP without keep-alive) does not pay the two `io_uring_register` calls
    /// (about 0.3 µs together) for nothing. Accepted connections start here, outgoing ones
    /// once established (a redial clears the slot before it replaces the socket).
    Later,
    /// In the table. The entry is cleared before `fd` closes: the table holds its own
    /// reference, and a socket left there would never close.
    Registered,
    /// By descriptor for good (or, for an outgoing connection, until it is established): a
    /// key beyond the table, a ring without one, or a refused registration.
    Never,
}

/// One connection slot. The generic state of a connection: protocol-specific state lives
/// in its own optional values (`ws`, `streaming`), not in flags here.
pub(crate) struct ConnState {
    /// The socket; closed when the slot is freed (dropped with it).
    pub(crate) fd: OwnedFd,
    /// Whether operations name the socket by its fixed-file slot ([`super::on_socket`]).
    pub(crate) file: FileSlot,
    /// The connection's id number (`ConnectionId::as_u64`).
    pub(crate) serial: u64,
    pub(crate) status: Status,
    /// `on_close` is queued but not delivered yet: the slot stays (user code sees the
    /// connection's context, address and counters in `on_close`).
    pub(super) close_hold: bool,
    pub(super) recv_armed: bool,
    pub(crate) paused: bool,
    /// Receiving was paused by the engine because the send queue reached its limit
    /// (`WorkerConfig::backpressure`); resumed once it drained to half.
    pub(super) throttled: bool,
    /// Back-pressure paused it and its send queue has not emptied since: it reads with
    /// single-shot receives (one buffer at a time) instead of a multishot, so a peer whose
    /// socket queue grew to megabytes while it was paused cannot pour them into the framer
    /// between a resume and the next pause.
    pub(super) paced: bool,
    /// Whether a full send queue pauses this connection's receiving (the worker's
    /// `backpressure`, unless changed for this connection: `pipe` turns it off).
    pub(crate) backpressure: bool,
    /// The connection's own `on_buffer_drain` is not wanted for now (`pipe` wants it only
    /// while it holds its source paused): no event is queued for it meanwhile.
    pub(crate) drain_muted: bool,
    pub(super) send_inflight: bool,
    pub(super) dirty: bool,
    /// Operations whose CQE has not arrived yet; the slot is freed only at zero.
    pub(super) inflight: u32,
    /// Taken by the runner while it delivers messages.
    pub(super) decoder: Option<Box<dyn Decoder>>,
    pub(super) framer: Option<Framer>,
    pub(super) encoder: Box<dyn Encoder>,
    pub(super) identity_encoder: bool,
    pub(super) sendq: SendQueue,
    pub(super) drain_pending: bool,
    pub(super) buffer_full: bool,
    /// Half-close and linger after the flush instead of closing (`end()`).
    pub(super) linger: bool,
    pub(crate) default_kind: MessageKind,
    pub(crate) max_send_buffer_size: usize,
    pub(crate) max_package_size: usize,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    /// The peer's address, read at accept.
    pub(crate) peer: Option<SocketAddr>,
    /// The application's per-connection value (`Connection::set_context`).
    pub(crate) context: Option<Box<dyn Any>>,
    /// What only some connections carry (per-connection callbacks, a streamed file, the
    /// dialing state of an outgoing connection), boxed so plain connections pay one word.
    pub(crate) extra: Option<Box<Extra>>,
    pub(super) close_deadline: Option<Instant>,
    /// Last time bytes arrived or a send completed (turn clock): the idle timeout's base.
    pub(super) active: Stamp,
    /// Since when an incomplete packet has been buffered: the packet timeout's base.
    pub(super) partial_since: Option<Stamp>,
    /// The WebSocket session, once the upgrade is answered: frames (and heartbeat pings)
    /// may be sent.
    pub(crate) ws: Option<WsSession>,
}

/// The rarely used parts of a connection slot.
#[derive(Default)]
pub(crate) struct Extra {
    /// The engine's own value for a response in progress (a file that `http::send_file`
    /// streams), kept apart from the application's context.
    pub(crate) streaming: Option<Box<dyn Any>>,
    /// Callbacks that override the worker's for this connection.
    pub(crate) hooks: Hooks,
    /// The dialing state of an outgoing connection (`AsyncTcpConnection`).
    pub(crate) dial: Option<Box<Dial>>,
    /// An accepted WebSocket connection whose upgrade is not answered yet: the messages the
    /// application sends meanwhile (from `on_connect`, say), encoded and held until the
    /// `101` is queued, as Workerman holds them. `None` once upgraded.
    pub(crate) upgrade_held: Option<super::send::SendQueue>,
    /// The TLS session of a TLS connection (`reactor/tls.rs`).
    pub(crate) tls: Option<super::tls::TlsLayer>,
}

impl Extra {
    /// Bytes of the sends held until the connection can take them onto the wire: an
    /// outgoing connection being established, a WebSocket server connection before its
    /// 101, a TLS connection before its handshake ends.
    pub(crate) fn held_len(&self) -> usize {
        self.dial.as_deref().map_or(0, |d| d.held_len())
            + self.upgrade_held.as_ref().map_or(0, |q| q.len)
            + self.tls.as_ref().map_or(0, |t| t.held.len)
    }
}

impl ConnState {
    /// The extra part, created on first use.
    pub(crate) fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// The dialing state, for an outgoing connection.
    pub(crate) fn dial(&self) -> Option<&Dial> {
        self.extra.as_ref()?.dial.as_deref()
    }

    /// The dialing state, for an outgoing connection.
    pub(crate) fn dial_mut(&mut self) -> Option<&mut Dial> {
        self.extra.as_mut()?.dial.as_deref_mut()
    }
}

/// What a connection carries once its WebSocket upgrade is answered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WsSession {
    /// Last time bytes arrived (turn clock): the heartbeat's base.
    pub(super) heard: Stamp,
    /// When the unanswered heartbeat ping went out, if one is outstanding.
    pub(super) ping_sent: Option<Stamp>,
    /// The heartbeat interval of a client connection (`AsyncTcpConnection`) in
    /// milliseconds, 0 for the worker's (accepted connections). (4 bytes, not an
    /// `Option<Duration>`'s 16: every slot holds room for a session.)
    pub(super) ping_interval_ms: u32,
}

impl WsSession {
    pub(super) fn new(now: Stamp, ping_interval: Option<Duration>) -> WsSession {
        let ping_interval_ms = ping_interval.map_or(0, |d| d.as_millis().clamp(1, u32::MAX as u128) as u32);
        WsSession { heard: now, ping_sent: None, ping_interval_ms }
    }

    /// The heartbeat interval: the session's own, else `worker`'s.
    pub(super) fn interval(&self, worker: Option<Duration>) -> Option<Duration> {
        match self.ping_interval_ms {
            0 => worker,
            ms => Some(Duration::from_millis(u64::from(ms))),
        }
    }

    /// The peer was heard from: any bytes answer the heartbeat.
    pub(super) fn heard(&mut self, now: Stamp) {
        self.heard = now;
        self.ping_sent = None;
    }
}

impl ConnState {
    /// A fresh established connection on socket `fd`.
    pub(super) fn new(
        fd: OwnedFd,
        serial: u64,
        decoder: Box<dyn Decoder>,
        encoder: Box<dyn Encoder>,
        cfg: &crate::config::WorkerConfig,
        now: Stamp,
    ) -> ConnState {
        let peer = crate::sys::peer_addr(std::os::fd::AsFd::as_fd(&fd));
        ConnState {
            fd,
            file: FileSlot::Never,
            serial,
            status: Status::Established,
            close_hold: false,
            recv_armed: false,
            paused: false,
            throttled: false,
            paced: false,
            backpressure: cfg.backpressure,
            drain_muted: false,
            send_inflight: false,
            dirty: false,
            inflight: 0,
            identity_encoder: encoder.is_identity(),
            decoder: Some(decoder),
            framer: Some(Framer::new()),
            encoder,
            sendq: SendQueue::default(),
            drain_pending: false,
            buffer_full: false,
            linger: false,
            default_kind: cfg.default_kind,
            max_send_buffer_size: cfg.max_send_buffer_size,
            max_package_size: cfg.max_package_size,
            bytes_read: 0,
            bytes_written: 0,
            peer,
            context: None,
            extra: None,
            close_deadline: None,
            active: now,
            partial_since: None,
            ws: None,
        }
    }

    /// Bytes the kernel has not taken: the send buffer, plus the sends held until the
    /// connection can take them ([`Extra::held_len`]).
    pub(crate) fn unsent(&self) -> usize {
        self.sendq.len + self.extra.as_deref().map_or(0, Extra::held_len)
    }

    /// Gives up the socket of a slot whose ring is abandoned (see `Core::abandon`); the rest
    /// (parser state, queued chunks, user values) is leaked, never dropped: its memory may
    /// still be referred to by the dead ring, and its owners' code is not to run there.
    pub(super) fn into_fd_leaking_the_rest(self) -> OwnedFd {
        let ConnState { fd, decoder, framer, encoder, sendq, context, extra, .. } = self;
        std::mem::forget((decoder, framer, encoder, sendq, context, extra));
        fd
    }
}

/// Whether a connection in `status` has a close deadline the sweep watches (the connect
/// timeout, a close or a linger bound): such slots are what `Core::closing` counts.
fn timed(status: Status) -> bool {
    matches!(status, Status::Connecting | Status::WsClosing | Status::Closing | Status::Lingering)
}

/// Whether a slot counts in the worker's connection gauge: an accepted connection that is
/// not closed (outgoing connections are the application's own, as in Workerman, where
/// `$worker->connections` holds only accepted ones).
fn gauged(c: &ConnState) -> bool {
    c.dial().is_none() && c.status != Status::Closed
}

/// The slab's counters are kept here only: a slot enters with [`Core::insert_slot`], changes
/// status with [`Core::set_status`] and leaves with [`Core::remove_slot`], each adjusting
/// `closing`, `dials` and the connection gauge from what it changes.
/// [`Core::check_invariants`] recounts them from the slab.
impl Core {
    /// Puts a new connection into the slab, counted; returns its slot.
    pub(super) fn insert_slot(&mut self, state: ConnState) -> usize {
        let (deadline, dial, gauge) = (timed(state.status), state.dial().is_some(), gauged(&state));
        let serial = state.serial;
        let key = self.conns.insert(state);
        if let Some(m) = self.by_serial.get_mut() {
            m.insert(serial, key as u32);
        }
        self.closing += usize::from(deadline);
        self.dials += usize::from(dial);
        if gauge {
            self.stats.connections.add(1);
        }
        key
    }

    /// Moves slot `key` to `new`, adjusting the counters from the old status.
    pub(super) fn set_status(&mut self, key: usize, new: Status) {
        let c = &mut self.conns[key];
        let (old, was_gauged) = (c.status, gauged(c));
        if old == new {
            return;
        }
        c.status = new;
        let now_gauged = gauged(c);
        self.closing = self.closing + usize::from(timed(new)) - usize::from(timed(old));
        let g = &self.stats.connections;
        g.set(g.get() + u64::from(now_gauged) - u64::from(was_gauged));
    }

    /// Takes a closed slot out of the slab, uncounted.
    pub(super) fn remove_slot(&mut self, key: usize) -> ConnState {
        debug_assert_eq!(self.conns[key].status, Status::Closed, "only closed slots are freed");
        let c = self.conns.remove(key);
        if let Some(m) = self.by_serial.get_mut() {
            m.remove(&c.serial);
        }
        self.dials -= usize::from(c.dial().is_some());
        if c.dial().is_none() {
            self.give_places(1);
        }
        c
    }

    /// Takes a place under the worker's `max_connections` for a connection being
    /// accepted; false at the cap. Every accepted slot holds one (given back in
    /// [`Core::remove_slot`], or by the core when it goes with slots left).
    pub(super) fn take_place(&mut self) -> bool {
        let Some(cap) = &self.cfg.conn_cap else { return true };
        let ok = cap.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap.max).then_some(n + 1)).is_ok();
        self.placed += usize::from(ok);
        ok
    }

    /// Gives back `n` places taken with [`Core::take_place`] (none without a cap).
    pub(super) fn give_places(&mut self, n: usize) {
        if let Some(cap) = &self.cfg.conn_cap {
            cap.open.fetch_sub(n, Ordering::AcqRel);
            self.placed -= n;
        }
    }

    /// Recounts what the core keeps counters of, from the slab, and checks each slot's
    /// state for contradictions; describes the first mismatch. Cheap enough for tests (and
    /// a simulator) to call after every step.
    // (Only tests call it so far.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let closing = self.conns.iter().filter(|(_, c)| timed(c.status)).count();
        if closing != self.closing {
            return Err(format!("closing counter {} but {closing} slots have a close deadline status", self.closing));
        }
        let dials = self.conns.iter().filter(|(_, c)| c.dial().is_some()).count();
        if dials != self.dials {
            return Err(format!("dials counter {} but {dials} outgoing slots", self.dials));
        }
        if self.cfg.conn_cap.is_some() {
            let accepted = self.conns.iter().filter(|(_, c)| c.dial().is_none()).count();
            if accepted != self.placed {
                return Err(format!("{} places under the cap taken but {accepted} accepted slots", self.placed));
            }
        }
        let gauge = self.conns.iter().filter(|(_, c)| gauged(c)).count() as u64;
        if gauge != self.stats.connections.get() {
            return Err(format!("connection gauge {} but {gauge} open accepted slots", self.stats.connections.get()));
        }
        for (key, c) in self.conns.iter() {
            let id = self.id_of(key);
            let ops = u32::from(c.recv_armed) + u32::from(c.send_inflight);
            if c.inflight < ops {
                return Err(format!("{id}: {} operations in flight, fewer than armed ({ops})", c.inflight));
            }
            if c.status == Status::Closed && c.close_deadline.is_some() {
                return Err(format!("{id}: closed with a close deadline"));
            }
            if let Some(d) = c.dial() {
                if d.waiting_redial() && (c.status != Status::Connecting || c.inflight > 0) {
                    return Err(format!("{id}: a redial timer armed in {:?} with {} in flight", c.status, c.inflight));
                }
            }
        }
        if let Some(map) = self.by_serial.borrow().as_ref() {
            if map.len() != self.conns.len() {
                return Err(format!("serial index holds {} slots, the slab {}", map.len(), self.conns.len()));
            }
            if let Some((s, k)) = map.iter().find(|(s, k)| self.conns.get(**k as usize).is_none_or(|c| c.serial != **s))
            {
                return Err(format!("serial index maps {s} to slot {k}, which holds another connection"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_measure_milliseconds_and_are_never_zero() {
        let epoch = Instant::now();
        let a = Stamp::at(epoch, epoch);
        assert_eq!(a, Stamp::MIN, "the epoch itself is the smallest stamp, not zero");
        let b = Stamp::at(epoch, epoch + Duration::from_millis(1500));
        assert_eq!(a.until(b), Duration::from_millis(1499));
        // A time before the epoch saturates to the epoch.
        assert_eq!(Stamp::at(epoch + Duration::from_secs(1), epoch), Stamp::MIN);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 4);
    }

    #[test]
    fn stamp_differences_survive_the_wrap() {
        // Two stamps on either side of the u32 wrap (~49.7 days of uptime).
        let before = Stamp(NonZeroU32::new(u32::MAX - 9).unwrap());
        let after = Stamp(NonZeroU32::new(10).unwrap());
        assert_eq!(before.until(after), Duration::from_millis(20));
    }

    #[test]
    fn serials_are_unique_per_thread_and_carry_it() {
        let mut a = Serials::new();
        let mut b = Serials::new();
        let ids: Vec<u64> = (0..5000).map(|_| a.take(3)).chain((0..5000).map(|_| b.take(4))).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "no serial is handed out twice");
        assert!(ids[..5000].iter().all(|id| id >> 48 == 3));
        assert!(ids[5000..].iter().all(|id| id >> 48 == 4));
        // A second block was taken after 4096 ids.
        assert!(ids[..5000].windows(2).all(|w| w[1] > w[0]));
    }

    #[test]
    fn generations_are_the_low_24_bits() {
        assert_eq!(gen_of(0x0003_0000_0123_4567), 0x23_4567);
        assert_eq!(gen_of(1 << 48 | 0xFF_FFFF), 0xFF_FFFF);
    }
}
