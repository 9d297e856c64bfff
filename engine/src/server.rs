//! Starting and stopping groups of workers; the cross-thread mailboxes.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use socket2::{Domain, Socket, Type};

use crate::connection::ConnectionId;
use crate::error::EngineError;
use crate::reactor::{current_thread, with_core};
use crate::worker::Spawn;

/// A counter written by its ring thread only and read by anyone (status, metrics).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// Live counters of one ring thread.
#[derive(Debug, Default)]
pub struct ThreadStats {
    /// Open connections.
    pub connections: Counter,
    /// Connections accepted since start.
    pub accepted: Counter,
    /// Messages delivered to `on_message` (Workerman's `total_request`).
    pub requests: Counter,
    /// Sends refused because the send buffer was full.
    pub send_fail: Counter,
    /// Times the completion queue was seen overflowing (kernel kept the CQEs).
    pub cq_overflows: Counter,
    /// Live timers.
    pub timers: Counter,
    /// Times the thread was restarted by the supervisor (after a crash or a recycle).
    pub restarts: Counter,
    /// Unix time (seconds) of the thread's last loop turn; 0 while it is (re)starting.
    pub heartbeat: Counter,
    /// `on_message` handler latency, sampled.
    pub latency: LatencyHistogram,
}

/// A log2-bucketed histogram of nanoseconds, written by one thread, read by any.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 48],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl LatencyHistogram {
    pub(crate) fn record(&self, ns: u64) {
        let b = (64 - ns.max(1).leading_zeros() as usize).min(47);
        let slot = &self.buckets[b];
        slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in nanoseconds, as the upper bound of its power-of-two
    /// bucket (so within a factor of two); `None` without samples.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(1u64 << i);
            }
        }
        Some(1u64 << 47)
    }
}

/// Work sent to a ring thread from elsewhere.
pub(crate) enum Cmd {
    Send {
        conn: ConnectionId,
        data: Bytes,
        enc: crate::reactor::Enc,
    },
    Close {
        conn: ConnectionId,
        data: Option<Bytes>,
    },
    Destroy {
        conn: ConnectionId,
    },
    Broadcast {
        data: Bytes,
    },
    Call(Box<dyn FnOnce() + Send>),
    Stop {
        timeout: Duration,
    },
    /// Stop accepting, drain like a stop, then start the thread afresh (same id).
    Recycle {
        timeout: Duration,
    },
    /// Stop accepting only (the listener stays open for a successor process).
    PauseAccept,
    /// Test hook: panic outside any user callback, as an engine bug would.
    Crash,
}

/// The inbox of one ring thread: a channel plus an eventfd the ring has a read armed on.
pub(crate) struct Mailbox {
    tx: Sender<Cmd>,
    rx: Receiver<Cmd>,
    efd: RawFd,
    /// Set by the first sender after the ring last drained; spares further eventfd writes.
    notified: AtomicBool,
}

impl Mailbox {
    fn new() -> std::io::Result<Mailbox> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(Mailbox { tx, rx, efd: crate::sys::eventfd()?, notified: AtomicBool::new(false) })
    }

    pub(crate) fn eventfd(&self) -> RawFd {
        self.efd
    }

    fn post(&self, cmd: Cmd) -> bool {
        if self.tx.send(cmd).is_err() {
            return false;
        }
        // Push first, then flag: the ring clears the flag before draining, so a command
        // pushed after its drain always finds the flag clear and writes the eventfd.
        if !self.notified.swap(true, Ordering::AcqRel) {
            crate::sys::eventfd_signal(self.efd);
        }
        true
    }

    /// Takes the next command (the ring thread only).
    pub(crate) fn next(&self) -> Option<Cmd> {
        self.rx.try_recv().ok()
    }

    pub(crate) fn clear_notified(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        // SAFETY: our eventfd, closed once; the ring's read on it was cancelled (quiesce).
        unsafe { libc::close(self.efd) };
    }
}

/// Mailboxes of every ring thread in the process, indexed by global thread id. Read-locked
/// only on cross-thread operations, never on a connection's own thread.
static REGISTRY: RwLock<Vec<Option<Arc<Mailbox>>>> = RwLock::new(Vec::new());

pub(crate) fn post(thread: u16, cmd: Cmd) -> bool {
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    match reg.get(thread as usize) {
        Some(Some(mb)) => mb.post(cmd),
        _ => false,
    }
}

fn register() -> Result<(u16, Arc<Mailbox>), EngineError> {
    let mb = Arc::new(Mailbox::new().map_err(EngineError::Spawn)?);
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    let idx = match reg.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            reg.push(None);
            reg.len() - 1
        }
    };
    if idx >= u16::MAX as usize {
        return Err(EngineError::TooManyThreads);
    }
    reg[idx] = Some(mb.clone());
    Ok((idx as u16, mb))
}

pub(crate) fn unregister(thread: u16) {
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if let Some(slot) = reg.get_mut(thread as usize) {
        *slot = None;
    }
}

/// Asks every ring thread of the process to stop (Workerman's `Worker::stopAll()`):
/// listeners close, connections are flushed and closed within the workers' `stop_timeout`.
pub fn stop_all() {
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    for mb in reg.iter().flatten() {
        mb.post(Cmd::Stop { timeout: Duration::from_secs(2) });
    }
}

/// A handle on the ring threads of one running worker, usable from any thread.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub(crate) name: Arc<str>,
    pub(crate) threads: Arc<[u16]>,
    pub(crate) stop_timeout: Duration,
    pub(crate) stats: Arc<[Arc<ThreadStats>]>,
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) protocol: &'static str,
    pub(crate) reloadable: bool,
}

impl WorkerHandle {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of ring threads.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Sends `data` (encoded by the worker's protocol) to every open connection of this
    /// worker, on all its threads. The calling thread's share is queued at once; the other
    /// threads get one mailbox message each.
    pub fn broadcast(&self, data: impl Into<Bytes>) {
        let data = data.into();
        let here = current_thread();
        for &t in self.threads.iter() {
            if Some(t) == here {
                with_core(|c| c.broadcast(&data));
            } else {
                post(t, Cmd::Broadcast { data: data.clone() });
            }
        }
    }

    /// Runs `f` on every ring thread of this worker (for example to read thread-local
    /// state or count connections). Returns how many threads accepted the call.
    pub fn on_each_thread(&self, f: impl Fn() + Send + Sync + 'static) -> usize {
        let f = Arc::new(f);
        self.threads
            .iter()
            .filter(|&&t| {
                let f = f.clone();
                post(t, Cmd::Call(Box::new(move || f())))
            })
            .count()
    }

    /// Asks this worker's threads to stop (graceful, bounded by `stop_timeout`).
    pub fn stop(&self) {
        self.stop_within(self.stop_timeout);
    }

    /// Asks this worker's threads to stop; connections get `timeout` to flush and close.
    pub fn stop_within(&self, timeout: Duration) {
        for &t in self.threads.iter() {
            post(t, Cmd::Stop { timeout });
        }
    }

    /// Stops accepting new connections on every thread; existing connections keep running.
    /// The listening sockets stay open, so a successor process that inherited them keeps
    /// the accept queue (zero-downtime reload).
    pub fn pause_accept(&self) {
        for &t in self.threads.iter() {
            post(t, Cmd::PauseAccept);
        }
    }

    /// Restarts thread `i` (same id): it stops accepting, lets its connections flush within
    /// `timeout`, then starts afresh with new state (Workerman's max_request recycling).
    pub fn recycle(&self, i: usize, timeout: Duration) -> bool {
        self.threads.get(i).is_some_and(|&t| post(t, Cmd::Recycle { timeout }))
    }

    /// Counters of each thread, by thread id (`0..count`).
    pub fn stats(&self) -> &[Arc<ThreadStats>] {
        &self.stats
    }

    /// The address the worker listens on (with the real port).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// The worker's protocol name.
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// Whether a reload replaces this worker (Workerman's `reloadable`).
    pub fn reloadable(&self) -> bool {
        self.reloadable
    }

    /// Process-wide ring thread index of thread `i`.
    pub fn ring_thread(&self, i: usize) -> Option<u16> {
        self.threads.get(i).copied()
    }

    #[doc(hidden)]
    /// Test hook: makes thread `i` panic outside user code so the supervisor restarts it.
    pub fn crash_thread_for_test(&self, i: usize) -> bool {
        self.threads.get(i).is_some_and(|&t| post(t, Cmd::Crash))
    }
}

/// Opens a listening socket. `reuse_port` lets one socket per thread share the port.
pub(crate) fn listen(addr: SocketAddr, reuse_port: bool, backlog: i32) -> Result<RawFd, EngineError> {
    let err = |source: std::io::Error| {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            EngineError::AddrInUse { addr }
        } else {
            EngineError::Listen { addr, source }
        }
    };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    if reuse_port {
        s.set_reuse_port(true).map_err(err)?;
    }
    if addr.is_ipv6() {
        // `[::]` listens dual-stack, as in Workerman.
        let _ = s.set_only_v6(false);
    }
    // Accepted sockets inherit TCP_NODELAY from the listener.
    s.set_tcp_nodelay(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(backlog).map_err(err)?;
    Ok(s.into_raw_fd())
}

/// Environment variable through which a parent process hands its listening sockets to a
/// successor (zero-downtime reload): `ADDR=FD,FD;ADDR=FD`, e.g. `127.0.0.1:8000=3,4`.
pub const LISTEN_FDS_ENV: &str = "RINGMAN_LISTEN_FDS";

/// Listening descriptors inherited for `addr` through [`LISTEN_FDS_ENV`], if any. Each is
/// checked to be a listening socket bound to `addr` before use.
pub(crate) fn inherited(addr: SocketAddr) -> Vec<RawFd> {
    let Ok(spec) = std::env::var(LISTEN_FDS_ENV) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in spec.split(';') {
        let Some((a, fds)) = entry.split_once('=') else { continue };
        if a.parse::<SocketAddr>().ok() != Some(addr) {
            continue;
        }
        for fd in fds.split(',').filter_map(|f| f.trim().parse::<RawFd>().ok()) {
            if crate::sys::local_addr(fd) == Some(addr) {
                crate::sys::set_cloexec(fd);
                out.push(fd);
            }
        }
    }
    out
}

/// Fails with [`EngineError::AddrInUse`] if anything already listens on `addr`, even a
/// SO_REUSEPORT socket of another process (which a SO_REUSEPORT bind would silently join).
pub(crate) fn probe_port(addr: SocketAddr) -> Result<(), EngineError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let fd = listen(addr, false, 1)?;
    // SAFETY: the probe socket we just opened, closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// A group of workers to start together.
///
/// ```no_run
/// use ringman_engine::{Server, Worker};
/// let mut text = Worker::<()>::new("text://127.0.0.1:8000").unwrap();
/// text.on_message(|c, m, _| { c.send(m); });
/// let mut frame = Worker::<()>::new("frame://127.0.0.1:8001").unwrap();
/// frame.on_message(|c, m, _| { c.send(m); });
/// let running = Server::new().add(text).add(frame).start().unwrap();
/// running.wait();
/// ```
#[derive(Default)]
pub struct Server {
    workers: Vec<Box<dyn Spawn>>,
}

impl Server {
    /// An empty group.
    pub fn new() -> Server {
        Server::default()
    }

    /// Adds a worker.
    #[allow(clippy::should_implement_trait)]
    pub fn add<S: Default + 'static>(mut self, w: crate::Worker<S>) -> Server {
        self.workers.push(Box::new(w));
        self
    }

    /// Binds every listener and starts every ring thread. Errors (bad port, io_uring
    /// unavailable, ...) are returned before any connection is accepted.
    pub fn start(self) -> Result<Running, EngineError> {
        crate::sys::ignore_sigpipe();
        let mut running =
            Running { threads: Vec::new(), workers: Vec::new(), addrs: Vec::new(), shared_fds: Vec::new() };
        for w in self.workers {
            let started = w.spawn(&mut running.threads, &mut running.shared_fds);
            match started {
                Ok((handle, addr)) => {
                    running.workers.push(handle);
                    running.addrs.push(addr);
                }
                Err(e) => {
                    running.stop();
                    running.join();
                    return Err(e);
                }
            }
        }
        Ok(running)
    }
}

pub(crate) fn register_thread() -> Result<(u16, Arc<Mailbox>), EngineError> {
    register()
}

/// Workers that are running. Dropping it stops them and waits for their threads.
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    workers: Vec<WorkerHandle>,
    addrs: Vec<Option<SocketAddr>>,
    shared_fds: Vec<RawFd>,
}

impl Running {
    /// Handles of all workers, in the order added.
    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// The address worker `i` (in the order added) listens on, with the real port when
    /// port 0 was asked for.
    pub fn local_addr(&self, i: usize) -> Option<SocketAddr> {
        self.addrs.get(i).copied().flatten()
    }

    /// Handle of worker `i`.
    pub fn worker(&self, i: usize) -> &WorkerHandle {
        &self.workers[i]
    }

    /// Asks every thread to stop; returns at once (see [`Running::wait`]).
    pub fn stop(&self) {
        for w in &self.workers {
            w.stop();
        }
    }

    /// Blocks until every ring thread has exited.
    pub fn wait(mut self) {
        self.join();
    }

    fn join(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for fd in self.shared_fds.drain(..) {
            // SAFETY: shared listeners are closed once, after every thread using them exited.
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop();
            self.join();
        }
    }
}

/// Starts the workers and blocks until they stop, by [`stop_all`] or SIGINT/SIGTERM
/// (Workerman's `Worker::runAll()`).
pub fn run_all(server: Server) -> Result<(), EngineError> {
    run_all_then(server, |_| {})
}

/// Like [`run_all`], calling `started` once every listener is bound and every thread runs
/// (for example to print the addresses).
pub fn run_all_then(server: Server, started: impl FnOnce(&Running)) -> Result<(), EngineError> {
    // Block the stop signals in this thread before spawning, so every ring thread inherits
    // the mask and only the waiter below receives them.
    // SAFETY: building a signal set and changing this thread's mask.
    let set = unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let running = server.start()?;
    started(&running);
    let handles: Vec<WorkerHandle> = running.workers.clone();
    std::thread::Builder::new()
        .name("ringman-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: waits for one of the blocked signals in `set`.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                for h in &handles {
                    h.stop();
                }
            }
        })
        .map_err(EngineError::Spawn)?;
    running.wait();
    Ok(())
}
