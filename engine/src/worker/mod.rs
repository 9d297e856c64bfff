//! `Worker`: a listener, its protocol, its settings and callbacks (Workerman's `Worker`).
//!
//! The builder and callbacks live here; `start.rs` binds and spawns the ring threads,
//! `runner.rs` is the loop each of them runs under a supervisor, `listen.rs` opens (or
//! inherits) listening sockets, `websocket.rs` answers upgrade requests.

mod callbacks;
mod listen;
mod runner;
mod start;
mod udp;
mod websocket;

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use ringman_protocols::{Message, MessageKind, Protocol};

use crate::addr::ListenAddr;
use crate::config::{Keepalive, SendMode};
use crate::connection::Connection;
use crate::error::{ConnError, EngineError};
use crate::handle::WorkerHandle;
use crate::reactor::UdpConnection;

pub(crate) use callbacks::Callbacks;
#[cfg(test)]
pub(crate) use listen::inherited;
pub(crate) use listen::{encode_addr, LISTEN_FDS_ENV};
pub(crate) use start::Spawn;
pub use websocket::WsDecision;

/// What a ring thread knows about itself, passed to `on_worker_start` / `on_worker_stop`.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Index of this thread within its worker, `0..count`.
    pub id: usize,
    /// Number of threads of the worker.
    pub count: usize,
    /// The worker's name.
    pub name: String,
    /// Handle for broadcasts and cross-thread calls.
    pub handle: WorkerHandle,
}

/// A listening service: address, protocol, threads and callbacks (Workerman's `Worker`).
///
/// `S` is per-thread user state: each ring thread builds its own `S::default()`, lets
/// `on_worker_start` fill it, and hands `&mut S` to every callback of that thread. No locks
/// are involved because no other thread ever sees it.
///
/// ```no_run
/// use ringman_engine::{run_all, Server, Worker};
/// #[derive(Default)]
/// struct Stats { messages: u64 }
/// let mut w = Worker::<Stats>::new("text://0.0.0.0:8000").unwrap();
/// w.count = 4;
/// w.name = "echo".into();
/// w.on_message(|conn, msg, st| {
///     st.messages += 1;
///     conn.send(msg);
/// });
/// run_all(Server::new().add(w)).unwrap();
/// ```
pub struct Worker<S = ()> {
    /// Where it listens; `ListenAddr::Udp`: a datagram service instead of a stream listener.
    addr: Option<ListenAddr>,
    protocol: Arc<dyn Protocol>,
    /// Number of ring threads (default: number of CPUs).
    pub count: usize,
    /// Name shown in status output (default `none`).
    pub name: String,
    /// One SO_REUSEPORT listener per thread (default true); otherwise one shared listener.
    /// A `unix://` worker always has one listener shared by its threads (Unix sockets have
    /// no SO_REUSEPORT), which in practice means one ring takes the connections (see
    /// ARCHITECTURE.md, "Listeners"): give it `count = 1` unless that is fine.
    pub reuse_port: bool,
    /// Permissions of a `unix://` worker's socket file (for example `0o660`), set right
    /// after it is bound and before it listens. Default `None`: what `bind(2)` creates,
    /// `0777` minus the process's umask (usually `0755`), as Workerman leaves it. Connecting
    /// needs write permission on the file.
    pub unix_mode: Option<u32>,
    /// Default send buffer limit of each connection (1 MiB).
    pub max_send_buffer_size: usize,
    /// Default largest packet of each connection (10 MiB).
    pub max_package_size: usize,
    /// How `send()` submits (default [`SendMode::Batched`]: measured cheaper per message;
    /// choose [`SendMode::Eager`] for Workerman's `true` answers; see ARCHITECTURE.md).
    pub send_mode: SendMode,
    /// Pause receiving on a connection whose send buffer reached `max_send_buffer_size`,
    /// until it has drained to half (default true). The peer is then slowed by TCP flow
    /// control instead of its answers being refused: a client that writes a burst of
    /// requests and reads the answers as they come gets every answer, however large the
    /// burst. Workerman keeps reading and refuses the sends (`false`, SEND_FAIL) once the
    /// buffer is full; set this to false for exactly that behaviour. Sends from elsewhere
    /// (broadcasts) to a full connection are refused either way.
    pub backpressure: bool,
    /// How long `close()` waits for the send buffer to flush before cutting the peer off.
    pub close_timeout: Duration,
    /// How long a stop waits for connections to flush.
    pub stop_timeout: Duration,
    /// The message kind `send()` uses unless a connection changes it (WebSocket text).
    pub default_kind: MessageKind,
    /// Whether a reload replaces this worker (default true; Workerman's `reloadable`).
    pub reloadable: bool,
    /// Recycle a thread (drain, then restart it with fresh state) after this many messages
    /// on its accepted connections (replies on outgoing connections do not count).
    pub max_requests: Option<u64>,
    /// Recycle threads while the process's resident memory exceeds this many bytes
    /// (checked once a second; one thread at a time, in turn, so the service keeps serving).
    pub max_memory: Option<u64>,
    /// Close connections that received nothing and had nothing to send for this long
    /// (quietly: `on_close` only). Default: 60 s for `http://` (keep-alive timeout), none
    /// otherwise (Workerman has none; its users write the heartbeat loop themselves). A
    /// request whose answer the application holds back (no bytes moving) counts as idle.
    pub idle_timeout: Option<Duration>,
    /// A packet that started arriving must be complete within this time, else the protocol's
    /// timeout reply is sent (HTTP `408`, WebSocket close 1008) with `on_error`, and the
    /// connection ends. For `http://` this is the header and body timeout (default 30 s,
    /// slow-loris defence; raise it for large uploads over slow links); none otherwise.
    /// Connections paused by the application are exempt.
    pub packet_timeout: Option<Duration>,
    /// WebSocket heartbeat (`websocket://` only): a connection silent for this long gets a
    /// ping, and one that then stays silent for another interval is destroyed with
    /// [`ConnError::NoPong`] (dead-peer detection; Workerman leaves it to TCP keepalive).
    /// Any received bytes count as an answer. Default none.
    pub websocket_ping_interval: Option<Duration>,
    /// TCP keepalive of accepted connections (default on, with the system's timing: see
    /// [`Keepalive`] for the defaults and how to shorten them); `None` turns it off. Set on
    /// the listening socket, which accepted connections inherit.
    pub keepalive: Option<Keepalive>,
    /// The most accepted connections the worker holds at once, across all its ring threads
    /// (default none). At the cap a new connection is accepted and closed at once — the
    /// client sees the connection closed before any data (a reset, if it had already sent
    /// something) — and counted in [`ThreadStats::refused`](crate::ThreadStats::refused)
    /// (the `refused` column of `status`, `ringman_refused_total` in the metrics), so the
    /// listen backlog keeps draining instead of filling with clients left waiting. A
    /// connection holds its place until its slot is freed, just after its `on_close`; the
    /// next connection accepted after that gets in. Outgoing connections do not count.
    pub max_connections: Option<usize>,
    /// Listen backlog (capped by `net.core.somaxconn`).
    pub backlog: i32,
    /// Pin ring thread `i` to CPU `(cpu_offset + i) % ncpu` when set.
    pub pin_cpus: Option<usize>,
    /// Receive buffers per ring (power of two; default 256) and their size.
    pub recv_buffers: u16,
    /// Size of each receive buffer (default 32 KiB; 8 MiB of buffers per ring): the most one
    /// receive completion delivers. (A multishot receive may post several completions for one connection in a
    /// turn; what bounds a connection's intake is the pool, and `backpressure` once its
    /// answers back up.)
    pub recv_buffer_size: u32,
    /// Let the kernel consume each receive buffer in pieces (default true; Linux 6.12,
    /// `IOU_PBUF_RING_INC`): a message takes as many bytes of a buffer as it has, so large
    /// buffers serve bulk streams in few completions and small messages of many connections
    /// alike. Where the kernel lacks it, or when false, each completion takes a whole buffer,
    /// and a kernel without it gets the same memory as buffers of 8 KiB
    /// ([`WHOLE_RECV_BUFFER`](crate::WHOLE_RECV_BUFFER)) when they are larger.
    pub recv_incremental: bool,
    /// `udp://` workers and UDP clients: the largest datagram payload received (default and
    /// most 65,527 bytes, UDP's limit over IPv6; IPv4's is 65,507). Each buffer of the ring's
    /// datagram pool holds this much plus the `io_uring_recvmsg_out` header and the sender's
    /// address; a larger datagram is dropped and counted in
    /// [`ThreadStats::udp_truncated`](crate::ThreadStats::udp_truncated), never delivered cut.
    pub max_datagram_size: usize,
    /// Buffers in each ring's datagram pool (default 64, a power of two): how many datagrams
    /// the kernel can hold for the ring between two loop turns before the receive pauses
    /// (ENOBUFS; re-armed at the end of the turn). The pool is only mapped on rings that
    /// open a UDP socket.
    pub udp_recv_buffers: u16,
    /// Registered send memory each ring asks for (taken from a process budget within the
    /// 8 MiB memlock limit; heap buffers are used beyond it).
    pub fixed_send_bytes: usize,
    /// Serve every connection over TLS (Workerman's `transport = 'ssl'`): the scheme's
    /// protocol runs inside it (`websocket://` is then wss, `http://` https). The files are
    /// read and checked when the worker starts; a mistake (unreadable file, a key that
    /// matches no certificate, a chain in the wrong order) fails the start naming the file.
    /// Default none.
    pub tls: Option<crate::tls::TlsConfig>,
    pub(crate) cb: Callbacks<S>,
}

/// The largest UDP payload (over IPv6; 65,507 over IPv4).
pub(crate) const MAX_DATAGRAM: usize = 65_527;

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Splits `scheme://host:port`, or `unix:///path` (scheme `unix`).
fn parse_addr(addr: &str) -> Result<(String, ListenAddr), EngineError> {
    let bad = |reason| EngineError::BadAddress { addr: addr.to_string(), reason };
    let (scheme, rest) = addr.split_once("://").ok_or_else(|| bad("expected scheme://ip:port or unix:///path"))?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad("scheme must be alphanumeric"));
    }
    let scheme = scheme.to_ascii_lowercase();
    if scheme == "unix" {
        return Ok((scheme, ListenAddr::Unix(listen::unix_listen_path(rest).map_err(bad)?)));
    }
    let sock = rest
        .to_socket_addrs()
        .map_err(|_| bad("expected ip:port (IPv6 as [::1]:port)"))?
        .next()
        .ok_or_else(|| bad("address resolves to nothing"))?;
    Ok((scheme.clone(), if scheme == "udp" { ListenAddr::Udp(sock) } else { ListenAddr::Inet(sock) }))
}

impl<S: Default + 'static> Worker<S> {
    /// A worker for `scheme://ip:port` with a built-in protocol: `tcp` (raw bytes), `text`
    /// (newline-delimited), `frame` (4-byte length prefix), `http` (HTTP/1.1, see
    /// `on_request`) or `websocket` (RFC 6455, see `on_websocket_connect`).
    ///
    /// `udp://ip:port` is a datagram service instead: raw datagrams (see
    /// [`Worker::on_datagram`]) until [`Worker::set_protocol`] or [`Worker::with_protocol`]
    /// chooses a protocol to parse them.
    ///
    /// `unix:///path/to/socket` listens on a Unix-domain stream socket instead, with raw
    /// bytes (`tcp`) until [`Worker::set_protocol`] chooses another protocol (Workerman's
    /// `$worker->protocol`). A relative path is made absolute against the current
    /// directory. The socket file gets [`Worker::unix_mode`]; a stale file left by a server
    /// that died is removed at start, a live one is [`EngineError::SocketFileInUse`]. The
    /// file is removed when the worker stops for good — not on a reload, whose successor
    /// inherits the socket. Keepalive and `reuse_port` do not apply to Unix sockets.
    ///
    /// ```no_run
    /// use ringman_engine::{run_all, Server, Worker};
    /// let mut w = Worker::<()>::new("unix:///run/echo.sock").unwrap();
    /// w.set_protocol("text").unwrap();
    /// w.unix_mode = Some(0o660);
    /// w.on_message(|conn, msg, _| {
    ///     conn.send(msg);
    /// });
    /// run_all(Server::new().add(w)).unwrap();
    /// ```
    pub fn new(addr: &str) -> Result<Worker<S>, EngineError> {
        let (scheme, at) = parse_addr(addr)?;
        let protocol = match at {
            ListenAddr::Unix(_) | ListenAddr::Udp(_) => Arc::new(ringman_protocols::Raw),
            ListenAddr::Inet(_) => ringman_protocols::by_scheme(&scheme).ok_or(EngineError::UnknownScheme(scheme))?,
        };
        Ok(Worker::build(Some(at), protocol))
    }

    /// A worker speaking a custom protocol on `scheme://ip:port` (the scheme is only a label),
    /// `unix:///path` or `udp://ip:port`: a datagram service whose datagrams the protocol
    /// parses (each datagram on its own, as Workerman does: for `text`, every complete line
    /// in it is a message and an unterminated rest is dropped). Protocols with a handshake or
    /// a stream of requests (`http`, `websocket`) do not run over UDP: `start()` refuses them.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// let mut w = ringman_engine::Worker::<()>::with_protocol("udp://0.0.0.0:9000", Arc::new(ringman_protocols::Text)).unwrap();
    /// w.on_datagram(|peer, line, _| {
    ///     peer.send(line); // back to the sender, with the newline
    /// });
    /// ```
    pub fn with_protocol(addr: &str, protocol: Arc<dyn Protocol>) -> Result<Worker<S>, EngineError> {
        let (_, at) = parse_addr(addr)?;
        Ok(Worker::build(Some(at), protocol))
    }

    /// Chooses the protocol by name — `tcp`, `text`, `frame`, `http` or `websocket` —
    /// whatever the address's scheme (Workerman's `$worker->protocol`); meant for transports
    /// whose URL names no protocol, such as `unix://` and `udp://` (where `http` and
    /// `websocket` are refused by `start()`). The idle and packet timeouts follow the new
    /// protocol's defaults unless they were changed (a `udp://` worker has none). A name that
    /// is not a built-in protocol is [`EngineError::UnknownProtocol`] (use
    /// [`Worker::set_custom_protocol`]).
    pub fn set_protocol(&mut self, name: &str) -> Result<&mut Self, EngineError> {
        let protocol = ringman_protocols::by_scheme(&name.to_ascii_lowercase())
            .ok_or_else(|| EngineError::UnknownProtocol(name.to_string()))?;
        Ok(self.set_custom_protocol(protocol))
    }

    /// Chooses a custom protocol (as [`Worker::with_protocol`] does at construction).
    pub fn set_custom_protocol(&mut self, protocol: Arc<dyn Protocol>) -> &mut Self {
        if !self.is_udp() {
            if self.idle_timeout == self.protocol.idle_timeout() {
                self.idle_timeout = protocol.idle_timeout();
            }
            if self.packet_timeout == self.protocol.packet_timeout() {
                self.packet_timeout = protocol.packet_timeout();
            }
        }
        self.protocol = protocol;
        self
    }

    /// The name of the worker's protocol (`tcp`, `text`, ..., or a custom protocol's).
    pub fn protocol_name(&self) -> &'static str {
        self.protocol.name()
    }

    /// The address the worker will listen on, if any (before `start`: as given; a port 0
    /// stays 0 here, the bound one is in [`WorkerHandle::listen_at`]).
    pub fn listen_at(&self) -> Option<&ListenAddr> {
        self.addr.as_ref()
    }

    /// Whether this is a `udp://` worker.
    pub fn is_udp(&self) -> bool {
        matches!(self.addr, Some(ListenAddr::Udp(_)))
    }

    /// A worker without a listener: threads that only run timers and cross-thread calls.
    pub fn without_listener() -> Worker<S> {
        Worker::build(None, Arc::new(ringman_protocols::Raw))
    }

    fn build(addr: Option<ListenAddr>, protocol: Arc<dyn Protocol>) -> Worker<S> {
        let (idle_timeout, packet_timeout) = match addr {
            // (Per-connection timeouts have no meaning for datagrams.)
            Some(ListenAddr::Udp(_)) => (None, None),
            _ => (protocol.idle_timeout(), protocol.packet_timeout()),
        };
        Worker {
            addr,
            protocol,
            count: cpus(),
            name: "none".into(),
            reuse_port: true,
            unix_mode: None,
            max_send_buffer_size: 1024 * 1024,
            max_package_size: ringman_protocols::DEFAULT_MAX_PACKAGE_SIZE,
            send_mode: SendMode::Batched,
            backpressure: true,
            close_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(2),
            default_kind: MessageKind::Text,
            reloadable: true,
            max_requests: None,
            max_memory: None,
            idle_timeout,
            packet_timeout,
            websocket_ping_interval: None,
            keepalive: Some(Keepalive::default()),
            max_connections: None,
            backlog: 4096,
            pin_cpus: None,
            recv_buffers: 256,
            recv_buffer_size: 32 * 1024,
            recv_incremental: true,
            fixed_send_bytes: 1024 * 1024,
            tls: None,
            max_datagram_size: MAX_DATAGRAM,
            udp_recv_buffers: 64,
            cb: Callbacks::default(),
        }
    }

    /// Runs on each ring thread before it accepts: build the thread's state here.
    pub fn on_worker_start(&mut self, f: impl Fn(&WorkerInfo, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_worker_start = Some(Arc::new(f));
        self
    }
    /// Runs on each ring thread when it stops, after its connections closed.
    pub fn on_worker_stop(&mut self, f: impl Fn(&WorkerInfo, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_worker_stop = Some(Arc::new(f));
        self
    }
    /// A connection was accepted (before any message).
    pub fn on_connect(&mut self, f: impl Fn(&Connection, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_connect = Some(Arc::new(f));
        self
    }
    /// A complete message arrived. It borrows the receive buffer (it derefs to `[u8]`):
    /// copy what you keep.
    pub fn on_message(&mut self, f: impl Fn(&Connection, &Message<'_>, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_message = Some(Arc::new(f));
        self
    }
    /// A `udp://` worker received a datagram (Workerman's `onMessage` of a UDP worker): called
    /// once per message the protocol finds in it (raw: the whole datagram, also an empty
    /// one). `peer` names the sender; [`UdpConnection::send`] answers it from the socket the
    /// datagram arrived on. The message borrows the receive buffer: copy what you keep.
    /// (Stream callbacks — `on_connect`, `on_close`, ... — are not called for datagrams.)
    ///
    /// ```no_run
    /// let mut w = ringman_engine::Worker::<()>::new("udp://0.0.0.0:9000").unwrap();
    /// w.on_datagram(|peer, msg, _| {
    ///     peer.send(msg);
    /// });
    /// ```
    pub fn on_datagram(
        &mut self,
        f: impl Fn(&UdpConnection, &Message<'_>, &mut S) + Send + Sync + 'static,
    ) -> &mut Self {
        self.cb.on_datagram = Some(Arc::new(f));
        self
    }
    /// The connection closed (exactly once per connection, whoever closed it). The handle
    /// still answers its context, addresses and byte counters here. If a ring thread dies
    /// (an engine bug; user panics never kill it), its connections' `on_close` runs on the
    /// restarted thread after `on_worker_start`, with handles that no longer reach a slot.
    pub fn on_close(&mut self, f: impl Fn(&Connection, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_close = Some(Arc::new(f));
        self
    }
    /// Something went wrong on a connection (see [`ConnError::code`]).
    pub fn on_error(&mut self, f: impl Fn(&Connection, &ConnError, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_error = Some(Arc::new(f));
        self
    }
    /// The send buffer reached `max_send_buffer_size`.
    pub fn on_buffer_full(&mut self, f: impl Fn(&Connection, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_buffer_full = Some(Arc::new(f));
        self
    }
    /// The send buffer, which held queued data, is empty again.
    pub fn on_buffer_drain(&mut self, f: impl Fn(&Connection, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_buffer_drain = Some(Arc::new(f));
        self
    }
}
