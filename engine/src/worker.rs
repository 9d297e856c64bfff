//! `Worker`: a listener, its protocol, its callbacks, and the loop each ring thread runs.

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringman_protocols::{Delivery, Flow, Message, MessageKind, Protocol, Reply};

use crate::connection::Connection;
use crate::error::{panic_message, ConnError, EngineError};
use crate::reactor::{self, with_core, Core, Event, ListenerSlot};
use crate::ring::{Kind, Token};
use crate::server::{self, Cmd, ThreadStats, WorkerHandle};

/// How `send()` hands data to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Submit at once and look for the completion before returning: `send()` can answer
    /// [`SendStatus::Sent`](crate::SendStatus::Sent), like Workerman's `true`. One
    /// `io_uring_enter` per send.
    Eager,
    /// Queue the send and submit all sends of a loop turn together: one `io_uring_enter`
    /// per turn, `send()` always answers `Queued`.
    Batched,
}

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

/// Settings shared by all threads of a worker (read-only once started).
pub(crate) struct WorkerConfig {
    pub name: String,
    pub protocol: Arc<dyn Protocol>,
    pub max_send_buffer_size: usize,
    pub max_package_size: usize,
    pub send_mode: SendMode,
    pub backpressure: bool,
    pub close_timeout: Duration,
    pub default_kind: MessageKind,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub max_requests: Option<u64>,
    pub max_memory: Option<u64>,
    pub idle_timeout: Option<Duration>,
    pub packet_timeout: Option<Duration>,
    pub ping_interval: Option<Duration>,
    /// Handed to each new connection's `Decoder::configure` (WebSocket control frames).
    pub decoder_config: Option<Box<dyn std::any::Any + Send + Sync>>,
}

type StartFn<S> = Arc<dyn Fn(&WorkerInfo, &mut S) + Send + Sync>;
type ConnFn<S> = Arc<dyn Fn(&Connection, &mut S) + Send + Sync>;
type MsgFn<S> = Arc<dyn Fn(&Connection, &Message<'_>, &mut S) + Send + Sync>;
type ErrFn<S> = Arc<dyn Fn(&Connection, &ConnError, &mut S) + Send + Sync>;
pub(crate) type DataFn<S> = Arc<dyn Fn(&Connection, &[u8], &mut S) + Send + Sync>;
pub(crate) type WsCloseFn<S> = Arc<dyn Fn(&Connection, Option<u16>, &str, &mut S) + Send + Sync>;
pub(crate) type WsConnectFn<S> = Arc<
    dyn for<'r> Fn(&Connection, &ringman_protocols::ws::HandshakeRequest<'r>, &mut S) -> crate::websocket::WsDecision
        + Send
        + Sync,
>;

pub(crate) struct Callbacks<S> {
    on_worker_start: Option<StartFn<S>>,
    on_worker_stop: Option<StartFn<S>>,
    on_connect: Option<ConnFn<S>>,
    on_message: Option<MsgFn<S>>,
    on_close: Option<ConnFn<S>>,
    on_error: Option<ErrFn<S>>,
    on_buffer_full: Option<ConnFn<S>>,
    on_buffer_drain: Option<ConnFn<S>>,
    pub(crate) on_websocket_connect: Option<WsConnectFn<S>>,
    pub(crate) on_websocket_connected: Option<ConnFn<S>>,
    pub(crate) on_websocket_ping: Option<DataFn<S>>,
    pub(crate) on_websocket_pong: Option<DataFn<S>>,
    pub(crate) on_websocket_close: Option<WsCloseFn<S>>,
}

impl<S> Callbacks<S> {
    /// The WebSocket control frames user callbacks want delivered, if any.
    fn control_frames(&self) -> Option<ringman_protocols::ws::ControlFrames> {
        let c = ringman_protocols::ws::ControlFrames {
            pings: self.on_websocket_ping.is_some(),
            pongs: self.on_websocket_pong.is_some(),
            close: self.on_websocket_close.is_some(),
        };
        (c != Default::default()).then_some(c)
    }
}

impl<S> Default for Callbacks<S> {
    fn default() -> Self {
        Callbacks {
            on_worker_start: None,
            on_worker_stop: None,
            on_connect: None,
            on_message: None,
            on_close: None,
            on_error: None,
            on_buffer_full: None,
            on_buffer_drain: None,
            on_websocket_connect: None,
            on_websocket_connected: None,
            on_websocket_ping: None,
            on_websocket_pong: None,
            on_websocket_close: None,
        }
    }
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
    addr: Option<SocketAddr>,
    protocol: Arc<dyn Protocol>,
    /// Number of ring threads (default: number of CPUs).
    pub count: usize,
    /// Name shown in status output (default `none`).
    pub name: String,
    /// One SO_REUSEPORT listener per thread (default true); otherwise one shared listener.
    pub reuse_port: bool,
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
    /// Recycle a thread (drain, then restart it with fresh state) after this many messages.
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
    /// Listen backlog (capped by `net.core.somaxconn`).
    pub backlog: i32,
    /// Pin ring thread `i` to CPU `(cpu_offset + i) % ncpu` when set.
    pub pin_cpus: Option<usize>,
    /// Receive buffers per ring (power of two) and their size.
    pub recv_buffers: u16,
    /// Size of each receive buffer: the most one receive completion delivers. (A multishot
    /// receive may post several completions for one connection in a turn; what bounds a
    /// connection's intake is the pool, and `backpressure` once its answers back up.)
    pub recv_buffer_size: u32,
    /// Registered send memory each ring asks for (taken from a process budget within the
    /// 8 MiB memlock limit; heap buffers are used beyond it).
    pub fixed_send_bytes: usize,
    pub(crate) cb: Callbacks<S>,
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Splits `scheme://host:port`.
fn parse_addr(addr: &str) -> Result<(String, SocketAddr), EngineError> {
    let bad = |reason| EngineError::BadAddress { addr: addr.to_string(), reason };
    let (scheme, rest) = addr.split_once("://").ok_or_else(|| bad("expected scheme://ip:port"))?;
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad("scheme must be alphanumeric"));
    }
    let sock = rest
        .to_socket_addrs()
        .map_err(|_| bad("expected ip:port (IPv6 as [::1]:port)"))?
        .next()
        .ok_or_else(|| bad("address resolves to nothing"))?;
    Ok((scheme.to_ascii_lowercase(), sock))
}

impl<S: Default + 'static> Worker<S> {
    /// A worker for `scheme://ip:port` with a built-in protocol: `tcp` (raw bytes), `text`
    /// (newline-delimited) or `frame` (4-byte length prefix).
    pub fn new(addr: &str) -> Result<Worker<S>, EngineError> {
        let (scheme, sock) = parse_addr(addr)?;
        let protocol = ringman_protocols::by_scheme(&scheme).ok_or(EngineError::UnknownScheme(scheme))?;
        Ok(Worker::build(Some(sock), protocol))
    }

    /// A worker speaking a custom protocol on `scheme://ip:port` (the scheme is only a label).
    pub fn with_protocol(addr: &str, protocol: Arc<dyn Protocol>) -> Result<Worker<S>, EngineError> {
        let (_, sock) = parse_addr(addr)?;
        Ok(Worker::build(Some(sock), protocol))
    }

    /// A worker without a listener: threads that only run timers and cross-thread calls.
    pub fn without_listener() -> Worker<S> {
        Worker::build(None, Arc::new(ringman_protocols::Raw))
    }

    fn build(addr: Option<SocketAddr>, protocol: Arc<dyn Protocol>) -> Worker<S> {
        let http = protocol.name() == "http";
        Worker {
            addr,
            protocol,
            count: cpus(),
            name: "none".into(),
            reuse_port: true,
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
            idle_timeout: http.then_some(Duration::from_secs(60)),
            packet_timeout: http.then_some(Duration::from_secs(30)),
            websocket_ping_interval: None,
            backlog: 4096,
            pin_cpus: None,
            recv_buffers: 1024,
            recv_buffer_size: 8192,
            fixed_send_bytes: 1024 * 1024,
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

/// Type-erased start of a worker, so workers with different state types share a `Server`.
pub(crate) trait Spawn {
    fn spawn(
        self: Box<Self>,
        threads: &mut Vec<JoinHandle<()>>,
        shared: &mut Vec<RawFd>,
    ) -> Result<(WorkerHandle, Option<SocketAddr>), EngineError>;
}

impl<S: Default + 'static> Spawn for Worker<S> {
    fn spawn(
        self: Box<Self>,
        threads: &mut Vec<JoinHandle<()>>,
        shared: &mut Vec<RawFd>,
    ) -> Result<(WorkerHandle, Option<SocketAddr>), EngineError> {
        let w = *self;
        let count = w.count.max(1);
        // Listeners: bound here, on the caller's thread, so errors come back from start().
        let mut fds: Vec<RawFd> = Vec::new();
        let mut bound = None;
        let close_all = |fds: &[RawFd]| {
            for &fd in fds {
                // SAFETY: listeners opened above and not yet handed to any thread.
                unsafe { libc::close(fd) };
            }
        };
        if let Some(addr) = w.addr {
            // Sockets handed over by a predecessor process (reload) come first.
            fds = server::inherited(addr);
            if let Some(&fd) = fds.first() {
                bound = crate::sys::local_addr(fd);
            } else {
                server::probe_port(addr)?;
            }
            let n = if w.reuse_port { count } else { 1 };
            let mut addr_i = bound.unwrap_or(addr);
            fds.truncate(n);
            for _ in fds.len()..n {
                match server::listen(addr_i, w.reuse_port, w.backlog) {
                    Ok(fd) => {
                        if bound.is_none() {
                            bound = crate::sys::local_addr(fd);
                            addr_i = bound.unwrap_or(addr);
                        }
                        fds.push(fd);
                    }
                    Err(e) => {
                        close_all(&fds);
                        return Err(e);
                    }
                }
            }
            if !w.reuse_port {
                shared.push(fds[0]);
            }
        }
        let mut regs = Vec::new();
        for _ in 0..count {
            match server::register_thread() {
                Ok(r) => regs.push(r),
                Err(e) => {
                    regs.iter().for_each(|(t, _)| server::unregister(*t));
                    if w.reuse_port {
                        close_all(&fds);
                    }
                    return Err(e);
                }
            }
        }
        let stats: Vec<Arc<ThreadStats>> = (0..count).map(|_| Arc::new(ThreadStats::default())).collect();
        let handle = WorkerHandle {
            name: w.name.clone().into(),
            threads: regs.iter().map(|(t, _)| *t).collect::<Vec<_>>().into(),
            stop_timeout: w.stop_timeout,
            stats: stats.clone().into(),
            listen: bound,
            protocol: w.protocol.name(),
            reloadable: w.reloadable,
        };
        let cfg = Arc::new(WorkerConfig {
            name: w.name.clone(),
            protocol: w.protocol.clone(),
            max_send_buffer_size: w.max_send_buffer_size,
            max_package_size: w.max_package_size,
            send_mode: w.send_mode,
            backpressure: w.backpressure,
            close_timeout: w.close_timeout,
            default_kind: w.default_kind,
            recv_buffers: w.recv_buffers.next_power_of_two().min(32768),
            recv_buffer_size: w.recv_buffer_size.max(512),
            max_requests: w.max_requests,
            max_memory: w.max_memory,
            idle_timeout: w.idle_timeout,
            packet_timeout: w.packet_timeout,
            ping_interval: w.websocket_ping_interval.filter(|_| w.protocol.name() == "websocket"),
            decoder_config: w.cb.control_frames().map(|c| Box::new(c) as Box<dyn std::any::Any + Send + Sync>),
        });
        let cb = Arc::new(w.cb);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), EngineError>>(count);
        let first_thread = threads.len();
        for (i, (thread, mailbox)) in regs.into_iter().enumerate() {
            // The thread owns (and closes at exit) its own SO_REUSEPORT listener; a shared
            // listener is closed by `Running` after every thread exited.
            let (listen_fd, owned) = match w.addr {
                None => (None, false),
                Some(_) if w.reuse_port => (Some(fds[i]), true),
                Some(_) => (Some(fds[0]), false),
            };
            let stats = stats[i].clone();
            let info = WorkerInfo { id: i, count, name: w.name.clone(), handle: handle.clone() };
            let (cfg, cb, ready_tx) = (cfg.clone(), cb.clone(), ready_tx.clone());
            let fixed = w.fixed_send_bytes;
            let pin = w.pin_cpus.map(|off| (off + i) % cpus());
            let t = std::thread::Builder::new().name(format!("ringman-{}-{}", w.name, i)).spawn(move || {
                if let Some(cpu) = pin {
                    let _ = crate::sys::pin_to_cpu(cpu);
                }
                supervise(thread, &info, listen_fd, &ready_tx, || {
                    let listeners: Vec<ListenerSlot> =
                        listen_fd.map(|fd| ListenerSlot { fd, armed: false }).into_iter().collect();
                    let core = Core::new(thread, cfg.clone(), listeners, mailbox.clone(), stats.clone(), fixed)?;
                    let stats = core.stats.clone();
                    Ok((
                        core,
                        Runner {
                            cb: cb.clone(),
                            state: S::default(),
                            info: info.clone(),
                            sampled: 0,
                            stats,
                            lost: Vec::new(),
                        },
                    ))
                });
                if let (Some(fd), true) = (listen_fd, owned) {
                    // SAFETY: this thread's own listener, closed once, after its last ring.
                    unsafe { libc::close(fd) };
                }
                server::unregister(thread);
            });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    handle.stop();
                    return Err(EngineError::Spawn(e));
                }
            }
        }
        drop(ready_tx);
        let mut first_err = None;
        for _ in first_thread..threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => break,
            }
        }
        if let Some(e) = first_err {
            handle.stop();
            return Err(e);
        }
        Ok((handle, bound))
    }
}

/// Why a runner returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Stopped for good.
    Stopped,
    /// Drained for a recycle: start afresh.
    Recycle,
}

/// Runs a ring thread and restarts it when it dies (with backoff) or is recycled, keeping
/// its id, listener and mailbox. `make` builds a fresh core and runner. The first start's
/// outcome is reported on `ready`, so configuration errors surface from `start()`.
fn supervise<S: 'static>(
    thread: u16,
    info: &WorkerInfo,
    _listen: Option<RawFd>,
    ready: &crossbeam_channel::Sender<Result<(), EngineError>>,
    make: impl Fn() -> Result<(Core, Runner<S>), EngineError>,
) {
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    let mut lost: Vec<Connection> = Vec::new();
    loop {
        let made = match catch_unwind(AssertUnwindSafe(&make)) {
            Ok(r) => r,
            Err(p) => Err(EngineError::Ring(std::io::Error::other(panic_message(&*p)))),
        };
        let (core, mut runner) = match made {
            Ok(x) => x,
            Err(e) => {
                if first {
                    let _ = ready.send(Err(e));
                    return;
                }
                eprintln!("ringman: restarting {} #{} failed: {e}; retrying in {backoff:?}", info.name, info.id);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if first {
            let _ = ready.send(Ok(()));
            first = false;
        }
        runner.lost = std::mem::take(&mut lost);
        let stats = core.stats.clone();
        reactor::install(core);
        match catch_unwind(AssertUnwindSafe(|| runner.run())) {
            Ok(Exit::Stopped) => {
                drop(reactor::uninstall());
                return;
            }
            Ok(Exit::Recycle) => {
                drop(reactor::uninstall());
                backoff = Duration::from_millis(100);
            }
            Err(p) => {
                eprintln!(
                    "ringman: ring thread {} #{} (ring {thread}) died: {}; restarting in {backoff:?}",
                    info.name,
                    info.id,
                    panic_message(&*p)
                );
                if let Some(core) = reactor::uninstall() {
                    // Their on_close is owed: the restarted runner delivers it.
                    lost.extend(core.unclosed());
                    core.abandon();
                }
                // The dead ring's sockets are closed: none of them is open any more.
                stats.connections.set(0);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        stats.restarts.set(stats.restarts.get() + 1);
        stats.heartbeat.set(0);
    }
}

/// The loop of one ring thread.
struct Runner<S> {
    cb: Arc<Callbacks<S>>,
    state: S,
    info: WorkerInfo,
    /// Messages seen, for sampling handler latency one in [`LATENCY_SAMPLE`].
    sampled: u32,
    /// This thread's counters (the core's, kept here so delivery need not fetch them).
    stats: Arc<ThreadStats>,
    /// Connections a dead predecessor ring held whose `on_close` never ran: delivered after
    /// `on_worker_start`.
    lost: Vec<Connection>,
}

/// One `on_message` in this many is timed for the latency histogram.
const LATENCY_SAMPLE: u32 = 8;

impl<S: 'static> Runner<S> {
    fn run(mut self) -> Exit {
        if let Some(f) = self.cb.on_worker_start.clone() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&self.info, &mut self.state))) {
                eprintln!(
                    "ringman: on_worker_start panicked on {} #{}: {}",
                    self.info.name,
                    self.info.id,
                    panic_message(&*p)
                );
            }
        }
        // Connections of a ring that died: their sockets are closed; on_close is owed. The
        // handles no longer reach a slot (getters answer None, sends Failed).
        for conn in std::mem::take(&mut self.lost) {
            if let Some(f) = self.cb.on_close.clone() {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&conn, &mut self.state))) {
                    eprintln!("ringman: on_close panicked: {}", panic_message(&*p));
                }
            }
        }
        with_core(|c| {
            c.arm_wake();
            for i in 0..c.listeners.len() {
                c.arm_accept(i);
            }
        });
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        let start_requests = with_core(|c| c.stats.requests.get()).unwrap_or(0);
        let (id, count) = (self.info.id as u64, self.info.count.max(1) as u64);
        let mut last_memory_check = 0u64;
        let mut last_sweep = 0u64;
        loop {
            self.deliver_events();
            self.run_timers();
            self.drain_mailbox();
            self.deliver_events();
            let now = Instant::now();
            let (exit, timeout) = with_core(|c| {
                c.stats.timers.set(c.timers.len() as u64);
                if let Some(max) = c.cfg.max_requests {
                    if c.stopping.is_none() && c.stats.requests.get() - start_requests >= max {
                        c.recycle = true;
                        c.begin_stop(now + c.cfg.close_timeout);
                    }
                }
                if let Some(max) = c.cfg.max_memory {
                    let sec = c.stats.heartbeat.get();
                    // Once a second, and only the thread whose turn it is (by id), so the
                    // threads of a worker recycle one after another rather than all at once.
                    if c.stopping.is_none() && sec != last_memory_check && sec % count == id {
                        last_memory_check = sec;
                        if crate::sys::resident_bytes().is_some_and(|rss| rss > max) {
                            c.recycle = true;
                            c.begin_stop(now + c.cfg.close_timeout);
                        }
                    }
                }
                c.retry_accepts(now);
                let timeouts =
                    c.cfg.idle_timeout.is_some() || c.cfg.packet_timeout.is_some() || c.cfg.ping_interval.is_some();
                if timeouts && c.stats.heartbeat.get() != last_sweep {
                    last_sweep = c.stats.heartbeat.get();
                    c.expire_idle(now);
                }
                let close_next = c.expire_closing(now);
                if let Some(deadline) = c.stopping {
                    if now >= deadline {
                        let keys: Vec<usize> = c.conns.iter().map(|(k, _)| k).collect();
                        for k in keys {
                            c.destroy(k, None);
                        }
                    }
                }
                let mut timeout = c.timers.next_timeout(now);
                if c.cfg.max_memory.is_some() || timeouts {
                    // Wake at least once a second for the memory check and the timeouts.
                    timeout = Some(timeout.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1))));
                }
                // A descriptor shortage paused accepting: wake when the back-off ends, even
                // on a ring with nothing else to do.
                for d in [close_next, c.stopping, c.accept_retry_at()].into_iter().flatten() {
                    let t = d.saturating_duration_since(now);
                    timeout = Some(timeout.map_or(t, |x| x.min(t)));
                }
                (c.drained() && c.events.is_empty(), timeout)
            })
            .expect("core installed");
            if exit {
                break;
            }
            with_core(|c| {
                c.submit_and_wait(timeout);
                c.reap(&mut cqes);
                // One wall-clock read per turn serves the heartbeat and HTTP Date headers.
                c.wall = std::time::SystemTime::now();
                c.update_stamp();
                c.stats.heartbeat.set(c.wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
            });
            for (ud, res, flags) in cqes.drain(..) {
                self.complete(ud, res, flags);
                self.deliver_events();
            }
        }
        if let Some(f) = self.cb.on_worker_stop.clone() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&self.info, &mut self.state))) {
                eprintln!("ringman: on_worker_stop panicked: {}", panic_message(&*p));
            }
        }
        with_core(|c| c.quiesce());
        if with_core(|c| c.recycle).unwrap_or(false) {
            Exit::Recycle
        } else {
            Exit::Stopped
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let Some(tok) = Token::from_u64(ud) else { return };
        match tok.kind {
            Kind::Recv => {
                let work = with_core(|c| c.recv_begin(tok, res, flags)).flatten();
                if let Some(w) = work {
                    self.deliver(w);
                }
            }
            Kind::Send => {
                with_core(|c| c.on_send(tok, res));
            }
            Kind::Accept => {
                with_core(|c| c.on_accept(tok.slot as usize, res, flags));
            }
            Kind::Cancel => {
                with_core(|c| c.on_cancel(tok));
            }
            Kind::Wake => {
                with_core(|c| {
                    c.wake_done();
                    if c.stopping.is_none() || !c.conns.is_empty() {
                        c.arm_wake();
                    }
                });
                self.drain_mailbox();
            }
            Kind::Shutdown => {}
        }
    }

    /// Parses and delivers one receive batch, zero-copy where the packet lies in one buffer.
    fn deliver(&mut self, mut w: reactor::RecvWork) {
        let conn = w.conn;
        let id = conn.id();
        let Runner { cb, state, sampled, stats, .. } = self;
        let mut delivered = 0u64;
        let mut panicked = None;
        // SAFETY: `data` is used only inside this function, before `recv_end` recycles it.
        let data = unsafe { w.data() };
        let max = w.max;
        let mut sink = |d: Delivery<'_>| {
            match d {
                Delivery::Message(msg) if msg.kind == MessageKind::Handshake => {
                    if let Err(p) =
                        catch_unwind(AssertUnwindSafe(|| crate::websocket::handshake(&conn, msg.data, cb, state)))
                    {
                        panicked = Some(panic_message(&*p));
                        return Flow::Stop;
                    }
                }
                Delivery::Message(msg)
                    if matches!(msg.kind, MessageKind::Ping | MessageKind::Pong | MessageKind::Close) =>
                {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| crate::websocket::control(&conn, &msg, cb, state)))
                    {
                        panicked = Some(panic_message(&*p));
                        return Flow::Stop;
                    }
                }
                Delivery::Message(msg) => {
                    delivered += 1;
                    if let Some(f) = &cb.on_message {
                        *sampled = sampled.wrapping_add(1);
                        let t0 = (*sampled % LATENCY_SAMPLE == 0).then(Instant::now);
                        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&conn, &msg, state))) {
                            panicked = Some(panic_message(&*p));
                            return Flow::Stop;
                        }
                        if let Some(t0) = t0 {
                            stats.latency.record(t0.elapsed().as_nanos() as u64);
                        }
                    }
                }
                Delivery::Reply(bytes, reply) => {
                    // After our own close frame nothing more is sent (no pong, and the peer's
                    // close, which answers ours, is not echoed): the connection just closes.
                    if !conn.ws_close_sent() {
                        conn.send_raw(bytes);
                    }
                    if reply == Reply::SendThenClose {
                        conn.close(None);
                    }
                }
            }
            if with_core(|c| c.can_deliver(id)).unwrap_or(false) {
                Flow::Continue
            } else {
                Flow::Stop
            }
        };
        // The decoder is protocol code (custom protocols are user code): a panic in it ends
        // only this connection, like a panicking callback.
        let result = catch_unwind(AssertUnwindSafe(|| {
            if data.is_empty() {
                w.framer.drain(w.decoder.as_mut(), max, &mut sink)
            } else {
                w.framer.feed(w.decoder.as_mut(), data, max, &mut sink)
            }
        }));
        let err = match result {
            Ok(r) => r.err(),
            Err(p) => {
                panicked.get_or_insert_with(|| format!("decoder: {}", panic_message(&*p)));
                None
            }
        };
        with_core(|c| {
            c.recv_end(w, delivered, err);
            if let Some(msg) = panicked {
                if let Some(k) = c.lookup(id) {
                    c.destroy(k, Some(ConnError::Panic(msg)));
                }
            }
        });
    }

    /// Calls the user callbacks for queued events. A panicking callback closes only its
    /// connection.
    fn deliver_events(&mut self) {
        while let Some(ev) = with_core(|c| c.events.pop_front()).flatten() {
            let cb = &self.cb;
            let state = &mut self.state;
            let (conn, r) = match ev {
                Event::Connect(c) => {
                    (c, cb.on_connect.as_ref().map(|f| catch_unwind(AssertUnwindSafe(|| f(&c, state)))))
                }
                Event::Close(c) => {
                    let r = cb.on_close.as_ref().map(|f| catch_unwind(AssertUnwindSafe(|| f(&c, state))));
                    // The slot was kept for on_close (context, address, counters); now it may go.
                    with_core(|core| core.close_delivered(c.id()));
                    (c, r)
                }
                Event::Error(c, e) => {
                    (c, cb.on_error.as_ref().map(|f| catch_unwind(AssertUnwindSafe(|| f(&c, &e, state)))))
                }
                Event::BufferFull(c) => {
                    (c, cb.on_buffer_full.as_ref().map(|f| catch_unwind(AssertUnwindSafe(|| f(&c, state)))))
                }
                Event::BufferDrain(c) => {
                    (c, cb.on_buffer_drain.as_ref().map(|f| catch_unwind(AssertUnwindSafe(|| f(&c, state)))))
                }
                Event::Resume(c) => {
                    if let Some(w) = with_core(|core| core.resume_begin(c.id())).flatten() {
                        self.deliver(w);
                    }
                    continue;
                }
            };
            if let Some(Err(p)) = r {
                let msg = panic_message(&*p);
                with_core(|c| {
                    if let Some(k) = c.lookup(conn.id()) {
                        c.destroy(k, Some(ConnError::Panic(msg)));
                    }
                });
            }
        }
        self.bury();
    }

    /// Drops the user values of freed slots, outside the core borrow (their `Drop` may call
    /// back into the engine).
    fn bury(&mut self) {
        if with_core(|c| c.graveyard.is_empty()).unwrap_or(true) {
            return;
        }
        let dead = with_core(|c| std::mem::take(&mut c.graveyard)).unwrap_or_default();
        drop(dead);
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some((id, mut f)) = with_core(|c| c.timers.pop_due(now)).flatten() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(&mut f)) {
                eprintln!("ringman: timer callback panicked: {}", panic_message(&*p));
            }
            // A finished one-shot's closure is dropped here, outside the core.
            let done = with_core(|c| c.timers.restore(id, f)).flatten();
            drop(done);
            self.deliver_events();
        }
    }

    fn drain_mailbox(&mut self) {
        with_core(|c| c.mailbox.clear_notified());
        while let Some(cmd) = with_core(|c| c.mailbox.next()).flatten() {
            match cmd {
                Cmd::Call(f) => {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
                        eprintln!("ringman: cross-thread call panicked: {}", panic_message(&*p));
                    }
                }
                Cmd::Crash => panic!("crash requested (test hook)"),
                cmd => {
                    with_core(|c| c.command(&cmd));
                    // Its payload (shared bytes, possibly with a user owner) is dropped here,
                    // outside the core.
                    drop(cmd);
                }
            }
            self.deliver_events();
        }
    }
}

impl Core {
    /// Applies a command from another thread.
    fn command(&mut self, cmd: &Cmd) {
        match cmd {
            Cmd::Send { conn, data, enc } => {
                if let Some(k) = self.lookup(*conn) {
                    self.send(k, data, *enc);
                }
            }
            Cmd::Close { conn, data } => {
                if let Some(k) = self.lookup(*conn) {
                    self.close(k, data.as_deref());
                }
            }
            Cmd::Destroy { conn } => {
                if let Some(k) = self.lookup(*conn) {
                    self.destroy(k, None);
                }
            }
            Cmd::Broadcast { data } => self.broadcast(data),
            Cmd::Stop { timeout } => self.begin_stop(Instant::now() + *timeout),
            Cmd::Recycle { timeout } => {
                self.recycle = true;
                self.begin_stop(Instant::now() + *timeout);
            }
            Cmd::PauseAccept => self.pause_accept(),
            Cmd::Call(_) | Cmd::Crash => unreachable!("handled by the runner"),
        }
    }

    /// Sends `data` to every established connection of this thread.
    pub(crate) fn broadcast(&mut self, data: &[u8]) {
        let keys: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.status == reactor::Status::Established).map(|(k, _)| k).collect();
        for k in keys {
            self.send(k, data, reactor::Enc::Default);
        }
    }
}
