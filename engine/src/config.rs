//! The settings a worker's ring threads share (read-only once started). They live below the
//! core so that the state machines read them without knowing about `Worker`.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringman_protocols::{MessageKind, Protocol};

use crate::addr::ListenSocket;

/// How `send()` hands data to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Submit at once and look for the completion before returning: `send()` can answer
    /// [`SendStatus::Sent`](crate::SendStatus::Sent), like Workerman's `true`. One
    /// `io_uring_enter` per send.
    Eager,
    /// Queue the send and submit all sends of a loop turn together: one `io_uring_enter`
    /// per turn, `send()` answers `Queued` (a kept file body written through whole by
    /// `WebServer` or `send_file` answers `Sent`: it went out without the ring).
    Batched,
}

/// TCP keepalive of a socket (`SO_KEEPALIVE`, with `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and
/// `TCP_KEEPCNT`): the kernel probes a connection that has been silent for `idle`, every
/// `interval`, and gives it up after `probes` unanswered probes — the application then sees
/// `on_error` ([`ConnError::Io`](crate::ConnError::Io), `ETIMEDOUT`) and `on_close`, with no
/// heartbeat of its own.
///
/// On by default for TCP, on accepted connections ([`Worker::keepalive`](crate::Worker::keepalive))
/// and outgoing ones ([`AsyncTcpConnection::keepalive`](crate::AsyncTcpConnection::keepalive)),
/// as Workerman does (it sets `SO_KEEPALIVE` on its sockets and nothing else). A value left
/// `None` keeps the system's setting: Linux's defaults are 7200 s idle
/// (`net.ipv4.tcp_keepalive_time`), 75 s interval (`tcp_keepalive_intvl`) and 9 probes
/// (`tcp_keepalive_probes`), so a vanished peer is given up after about 2 h 11 min.
/// [`Keepalive::default()`] changes none of them: the engine does not pick a period the
/// administrator did not, and keepalive probes of idle connections cost the network
/// something; set shorter values where a dead peer must be found sooner.
///
/// Keepalive only probes a connection with nothing unacknowledged in flight. A peer that
/// vanishes while the server still has data for it is found by the retransmission limit
/// instead (`net.ipv4.tcp_retries2`, about 15 min on Linux). So when any of the three values
/// is set, the engine also sets `TCP_USER_TIMEOUT` to the keepalive's whole span
/// (`idle + interval × probes`, as in effect on the socket): a peer that stops answering is
/// then given up after the same time whether the server was sending to it or not.
///
/// Durations are whole seconds for the kernel (rounded up, at least 1 s). The settings go
/// on the listening socket, which accepted connections inherit (no system call per accept),
/// and on each outgoing connection's socket before it connects.
///
/// ```no_run
/// # use ringman_engine::{Keepalive, Worker};
/// # use std::time::Duration;
/// let mut w = Worker::<()>::new("text://0.0.0.0:8000").unwrap();
/// // Give a silent peer up after 60 s + 3 × 10 s.
/// w.keepalive = Some(Keepalive::new(Duration::from_secs(60), Duration::from_secs(10), 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    /// Silence before the first probe (`TCP_KEEPIDLE`); `None`: the system's (7200 s).
    pub idle: Option<Duration>,
    /// Time between probes (`TCP_KEEPINTVL`); `None`: the system's (75 s).
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is given up (`TCP_KEEPCNT`); `None`: the
    /// system's (9).
    pub probes: Option<u32>,
}

impl Keepalive {
    /// Keepalive with all three values set.
    pub const fn new(idle: Duration, interval: Duration, probes: u32) -> Keepalive {
        Keepalive { idle: Some(idle), interval: Some(interval), probes: Some(probes) }
    }

    /// Whether any value differs from the system's.
    fn tuned(&self) -> bool {
        self.idle.is_some() || self.interval.is_some() || self.probes.is_some()
    }

    /// Turns keepalive on for `sock` with these values (and `TCP_USER_TIMEOUT` to match,
    /// see the type's docs).
    pub(crate) fn apply(&self, sock: &socket2::SockRef<'_>) -> io::Result<()> {
        // Whole seconds, at least one (the kernel refuses 0).
        let secs = |d: Duration| {
            Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
        };
        let mut ka = socket2::TcpKeepalive::new();
        if let Some(d) = self.idle {
            ka = ka.with_time(secs(d));
        }
        if let Some(d) = self.interval {
            ka = ka.with_interval(secs(d));
        }
        if let Some(n) = self.probes {
            ka = ka.with_retries(n.max(1));
        }
        sock.set_tcp_keepalive(&ka)?;
        // (Cleared otherwise: an inherited listener may carry its predecessor's.)
        let span = if self.tuned() {
            Some(sock.tcp_keepalive_time()? + sock.tcp_keepalive_interval()? * sock.tcp_keepalive_retries()?)
        } else {
            None
        };
        sock.set_tcp_user_timeout(span)
    }

    /// Sets `keepalive` on `sock`, or turns keepalive off for `None`.
    pub(crate) fn configure(keepalive: Option<Keepalive>, sock: &socket2::SockRef<'_>) -> io::Result<()> {
        match keepalive {
            Some(ka) => ka.apply(sock),
            None => sock.set_keepalive(false),
        }
    }

    /// What the kernel applies to `sock`: `None` when keepalive is off, else the values in
    /// effect (all three set).
    pub(crate) fn of(sock: &socket2::SockRef<'_>) -> Option<Keepalive> {
        if !sock.keepalive().ok()? {
            return None;
        }
        Some(Keepalive::new(
            sock.tcp_keepalive_time().ok()?,
            sock.tcp_keepalive_interval().ok()?,
            sock.tcp_keepalive_retries().ok()?,
        ))
    }
}

/// Opens a worker's sockets on its address: one per ring with SO_REUSEPORT, else one (always
/// one for a Unix socket); stream listeners, or a `udp://` worker's datagram sockets.
pub(crate) type OpenListeners = Box<dyn Fn() -> Result<Vec<ListenSocket>, crate::error::EngineError> + Send + Sync>;

/// A worker's listening sockets (or a `udp://` worker's datagram sockets), shared by its
/// handle (`listen`/`unlisten`) and its rings' supervisors (a restarted ring serves what is
/// current).
pub(crate) struct Listeners {
    pub open: OpenListeners,
    /// The worker's ring threads (how the sockets are shared among them: [`Listeners::share`]).
    pub rings: usize,
    /// The sockets in use (empty while unlistened). Locked by `listen`/`unlisten` while they
    /// post to the rings, so concurrent calls reach every ring in the same order.
    pub fds: Mutex<Vec<Arc<ListenSocket>>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners").field("rings", &self.rings).field("fds", &self.fds).finish_non_exhaustive()
    }
}

impl Listeners {
    /// The sockets ring `i` serves, if the worker listens.
    pub(crate) fn for_ring(&self, i: usize) -> Vec<Arc<ListenSocket>> {
        let fds = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        Self::share(&fds, i, self.rings)
    }

    /// Which of `fds` ring `i` of `rings` serves: with at least one socket per ring (SO_REUSEPORT,
    /// or more sockets handed over by a reload predecessor than there are rings now), ring `i`
    /// takes every socket whose index is `i` modulo `rings`, so each socket has one ring;
    /// with fewer (one socket shared without SO_REUSEPORT), ring `i` shares socket `i` modulo
    /// their number.
    pub(crate) fn share(fds: &[Arc<ListenSocket>], i: usize, rings: usize) -> Vec<Arc<ListenSocket>> {
        let rings = rings.max(1);
        if fds.is_empty() {
            Vec::new()
        } else if fds.len() >= rings {
            fds.iter().skip(i % rings).step_by(rings).cloned().collect()
        } else {
            vec![fds[i % fds.len()].clone()]
        }
    }
}

/// A worker's `max_connections`: the cap and the count of places taken, shared by its rings.
pub(crate) struct ConnCap {
    pub max: usize,
    /// Accepted connections holding a place: taken at accept, given back when the slot is
    /// freed (`Core::take_place`, `Core::give_places`).
    pub open: std::sync::atomic::AtomicUsize,
}

/// Settings shared by all threads of a worker (read-only once started, but for the
/// connection cap's count).
pub(crate) struct WorkerConfig {
    pub name: String,
    pub protocol: Arc<dyn Protocol>,
    pub max_send_buffer_size: usize,
    pub max_package_size: usize,
    pub send_mode: SendMode,
    pub backpressure: bool,
    pub close_timeout: Duration,
    /// What a stop without its own timeout (`stop_all`) gives connections to flush.
    pub stop_timeout: Duration,
    pub default_kind: MessageKind,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub recv_incremental: bool,
    pub max_requests: Option<u64>,
    pub max_memory: Option<u64>,
    pub idle_timeout: Option<Duration>,
    pub packet_timeout: Option<Duration>,
    pub ping_interval: Option<Duration>,
    /// Handed to each new connection's `Decoder::configure` (WebSocket control frames).
    pub decoder_config: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// The worker has an `on_buffer_drain` (else the event is queued only for connections
    /// with their own).
    pub listens_for_drain: bool,
    /// The protocol answers a handshake before any message (the WebSocket server): messages
    /// sent before it is answered are held until then.
    pub handshake_first: bool,
    /// The worker's TLS server settings, loaded at start.
    pub tls: Option<crate::tls::ServerTls>,
    /// `max_connections`, when set.
    pub conn_cap: Option<ConnCap>,
    /// The largest datagram payload UDP sockets receive (`Worker::max_datagram_size`).
    pub max_datagram: usize,
    /// Buffers in the ring's datagram pool (`Worker::udp_recv_buffers`, a power of two).
    pub udp_buffers: u16,
    /// The protocol that parses the datagrams of the worker's UDP sockets: its `protocol`
    /// (the simulator, whose worker has a stream listener and a UDP socket, sets `Raw`).
    pub udp_protocol: Arc<dyn Protocol>,
}
