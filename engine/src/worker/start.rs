//! Starting a worker: its listeners are bound on the caller's thread (so errors come back
//! from `start()`), then one supervised ring thread per `count`.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::listen;
use super::runner::{supervise, Runner};
use super::{cpus, Worker, WorkerInfo, MAX_DATAGRAM};
use crate::addr::{ListenAddr, ListenSocket};
use crate::config::{ConnCap, Keepalive, Listeners, OpenListeners, WorkerConfig};
use crate::error::EngineError;
use crate::handle::WorkerHandle;
use crate::mailbox;
use crate::reactor::{Core, ListenerSlot};
use crate::stats::ThreadStats;

/// Type-erased start of a worker, so workers with different state types share a `Server`.
pub(crate) trait Spawn {
    fn spawn(
        self: Box<Self>,
        threads: &mut Vec<JoinHandle<()>>,
    ) -> Result<(WorkerHandle, Option<ListenAddr>), EngineError>;
}

impl<S> Worker<S> {
    /// The worker's protocol (the simulator encodes with it as the engine does).
    #[cfg(test)]
    pub(crate) fn protocol_arc(&self) -> Arc<dyn ringman_protocols::Protocol> {
        self.protocol.clone()
    }

    /// Whether the worker has an `on_buffer_drain` (the simulator's model of who listens).
    #[cfg(test)]
    pub(crate) fn has_buffer_drain(&self) -> bool {
        self.cb.on_buffer_drain.is_some()
    }

    /// The settings the ring threads share.
    fn config(&self) -> Result<WorkerConfig, EngineError> {
        let w = self;
        // HTTP and WebSocket (both HTTP/1.1) announce it through ALPN.
        let alpn_http1 = matches!(w.protocol.name(), "http" | "websocket");
        let tls = match &w.tls {
            Some(t) => {
                // Its identity in a reload hand-off of ticket keys: the successor builds the
                // same worker, with the same name and configured address.
                let addr = w.addr.as_ref().map_or_else(|| "none".to_string(), ToString::to_string);
                let loaded = crate::tls::load_server_with(t, alpn_http1, Some(&format!("{}@{addr}", w.name)))?;
                match crate::tls::ktls_probe() {
                    Ok(()) => log::info!("{}: TLS in userspace (rustls); the kernel offers kTLS", w.name),
                    Err(e) => log::info!("{}: TLS in userspace (rustls); no kTLS in this kernel ({e})", w.name),
                }
                Some(loaded)
            }
            None => None,
        };
        Ok(WorkerConfig {
            name: w.name.clone(),
            protocol: w.protocol.clone(),
            max_send_buffer_size: w.max_send_buffer_size,
            max_package_size: w.max_package_size,
            send_mode: w.send_mode,
            backpressure: w.backpressure,
            close_timeout: w.close_timeout,
            stop_timeout: w.stop_timeout,
            default_kind: w.default_kind,
            recv_buffers: w.recv_buffers.next_power_of_two().min(32768),
            recv_buffer_size: w.recv_buffer_size.max(512),
            recv_incremental: w.recv_incremental,
            max_requests: w.max_requests,
            max_memory: w.max_memory,
            idle_timeout: w.idle_timeout,
            packet_timeout: w.packet_timeout,
            ping_interval: w.websocket_ping_interval.filter(|_| w.protocol.supports_ping()),
            decoder_config: w.cb.control_frames().map(|c| Box::new(c) as Box<dyn std::any::Any + Send + Sync>),
            listens_for_drain: w.cb.on_buffer_drain.is_some(),
            // (The one protocol with pings is the one with an upgrade handshake.)
            handshake_first: w.protocol.supports_ping(),
            tls,
            conn_cap: w.max_connections.map(|max| ConnCap { max, open: Default::default() }),
            max_datagram: w.max_datagram_size.clamp(1, MAX_DATAGRAM),
            udp_buffers: w.udp_recv_buffers.next_power_of_two().clamp(2, 32768),
            udp_protocol: w.protocol.clone(),
        })
    }

    /// The parts of one ring thread of this worker, for the deterministic simulator: its
    /// settings and its loop, on ring thread `thread` (the caller registered its mailbox),
    /// with the sockets the simulator made (its handle's `listen`/`unlisten` act on them).
    /// The simulated worker has a stream listener and a UDP socket: its datagrams are raw.
    #[cfg(test)]
    pub(crate) fn into_sim(
        self,
        thread: u16,
        stats: Arc<ThreadStats>,
        listeners: Arc<Listeners>,
    ) -> (Arc<WorkerConfig>, Runner<S>)
    where
        S: Default,
    {
        let mut cfg = self.config().expect("the simulator's TLS settings load");
        cfg.udp_protocol = Arc::new(ringman_protocols::Raw);
        let cfg = Arc::new(cfg);
        let handle = WorkerHandle {
            name: self.name.clone().into(),
            threads: vec![thread].into(),
            stop_timeout: self.stop_timeout,
            stats: vec![stats.clone()].into(),
            listen: None,
            protocol: self.protocol.name(),
            reloadable: self.reloadable,
            tls: None,
            tickets: None,
            listeners: Some(listeners),
        };
        let info = WorkerInfo { id: 0, count: 1, name: self.name.clone(), handle };
        (cfg, Runner::new(Arc::new(self.cb), info, stats))
    }
}

/// A TCP worker's listening sockets on `addr` — inherited from a predecessor process
/// (reload) first, then bound — and the address they are bound to (the real port).
fn open_inet<S>(
    w: &Worker<S>,
    addr: std::net::SocketAddr,
    count: usize,
) -> Result<(Vec<ListenSocket>, std::net::SocketAddr), EngineError> {
    let mut fds: Vec<OwnedFd> = listen::inherited(&ListenAddr::Inet(addr));
    for fd in &fds {
        // This process's keepalive settings, not its predecessor's.
        let bound = crate::sys::local_addr(fd.as_fd()).unwrap_or(addr);
        Keepalive::configure(w.keepalive, &socket2::SockRef::from(fd))
            .map_err(|source| EngineError::Listen { addr: bound, source })?;
    }
    let mut bound = None;
    if let Some(fd) = fds.first() {
        bound = crate::sys::local_addr(fd.as_fd());
    } else {
        listen::probe_port(addr)?;
    }
    let n = if w.reuse_port { count } else { 1 };
    fds.truncate(n);
    while fds.len() < n {
        let fd = listen::listen(bound.unwrap_or(addr), w.reuse_port, w.backlog, w.keepalive)?;
        if bound.is_none() {
            bound = crate::sys::local_addr(fd.as_fd());
        }
        fds.push(fd);
    }
    Ok((fds.into_iter().map(ListenSocket::inet).collect(), bound.unwrap_or(addr)))
}

/// A `udp://` worker's sockets on `addr` — every one a predecessor process handed over
/// (reload: their receive queues go on being read, none is dropped), then as many more as
/// it takes to have one per ring with `reuse_port` (else one) — and the address they are
/// bound to (the real port).
fn open_udp<S>(
    w: &Worker<S>,
    addr: std::net::SocketAddr,
    count: usize,
) -> Result<(Vec<ListenSocket>, std::net::SocketAddr), EngineError> {
    let mut fds: Vec<OwnedFd> = listen::inherited(&ListenAddr::Udp(addr));
    let n = if w.reuse_port { count } else { 1 };
    let bound = match fds.first() {
        Some(fd) => {
            let bound = crate::sys::local_addr(fd.as_fd()).unwrap_or(addr);
            let more = n.saturating_sub(fds.len());
            fds.extend(super::udp::join(bound, more, w.reuse_port)?);
            bound
        }
        None => {
            fds = super::udp::bind(addr, n, w.reuse_port)?;
            crate::sys::local_addr(fds[0].as_fd()).unwrap_or(addr)
        }
    };
    Ok((fds.into_iter().map(ListenSocket::udp).collect(), bound))
}

impl<S: Default + 'static> Spawn for Worker<S> {
    fn spawn(
        self: Box<Self>,
        threads: &mut Vec<JoinHandle<()>>,
    ) -> Result<(WorkerHandle, Option<ListenAddr>), EngineError> {
        let w = *self;
        let count = w.count.max(1);
        if w.is_udp() && (w.protocol.supports_ping() || w.protocol.name() == "http") {
            let addr = w.addr.as_ref().map_or_else(String::new, |a| a.to_string());
            return Err(EngineError::BadAddress { addr, reason: "http and websocket do not run over udp://" });
        }
        if w.is_udp() && w.tls.is_some() {
            let addr = w.addr.as_ref().map_or_else(String::new, |a| a.to_string());
            return Err(EngineError::BadAddress { addr, reason: "TLS does not run over udp:// (no DTLS)" });
        }
        // Settings first: a TLS file that cannot be used fails the start before anything
        // is bound.
        let cfg = Arc::new(w.config()?);
        // Listeners: bound here, on the caller's thread, so errors come back from start().
        // Each is shared by the threads that serve it (one per thread with SO_REUSEPORT)
        // and closed when the last of them exits; a ring restarted by its supervisor keeps it.
        // A `udp://` worker's sockets are kept the same way: one SO_REUSEPORT socket per ring
        // (or one they share).
        let (fds, bound) = match &w.addr {
            None => (Vec::new(), None),
            Some(ListenAddr::Udp(addr)) => {
                let (fds, bound) = open_udp(&w, *addr, count)?;
                (fds, Some(ListenAddr::Udp(bound)))
            }
            Some(ListenAddr::Inet(addr)) => {
                let (fds, bound) = open_inet(&w, *addr, count)?;
                (fds, Some(ListenAddr::Inet(bound)))
            }
            Some(ListenAddr::Unix(path)) => {
                // Handed over by a predecessor process (reload), else bound here. One socket,
                // shared by the rings: Unix sockets have no SO_REUSEPORT.
                let fd = match listen::inherited(&ListenAddr::Unix(path.clone())).into_iter().next() {
                    Some(fd) => fd,
                    None => listen::listen_unix(path, w.backlog, w.unix_mode)?,
                };
                (vec![ListenSocket::unix(fd, path.clone())], Some(ListenAddr::Unix(path.clone())))
            }
        };
        let reuse_port = w.reuse_port && matches!(bound, Some(ListenAddr::Inet(_) | ListenAddr::Udp(_)));
        let listeners = bound.clone().map(|at| {
            let (backlog, keepalive, mode) = (w.backlog, w.keepalive, w.unix_mode);
            let n = if reuse_port { count } else { 1 };
            let open: OpenListeners = Box::new(move || match &at {
                ListenAddr::Inet(addr) => {
                    listen::probe_port(*addr)?;
                    (0..n)
                        .map(|_| listen::listen(*addr, reuse_port, backlog, keepalive).map(ListenSocket::inet))
                        .collect()
                }
                ListenAddr::Unix(path) => {
                    Ok(vec![ListenSocket::unix(listen::listen_unix(path, backlog, mode)?, path.clone())])
                }
                ListenAddr::Udp(addr) => {
                    Ok(super::udp::bind(*addr, n, reuse_port)?.into_iter().map(ListenSocket::udp).collect())
                }
            });
            Arc::new(Listeners { open, rings: count, fds: Mutex::new(fds.into_iter().map(Arc::new).collect()) })
        });
        let mut regs = Vec::new();
        for _ in 0..count {
            match mailbox::register() {
                Ok(r) => regs.push(r),
                Err(e) => {
                    regs.iter().for_each(|(t, _)| mailbox::unregister(*t));
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
            listen: bound.clone(),
            // (A `udp://` worker shows as such in status tables, whatever parses its datagrams.)
            protocol: if w.is_udp() { "udp" } else { w.protocol.name() },
            reloadable: w.reloadable,
            tls: cfg.tls.as_ref().map(|t| t.reload.clone()),
            tickets: cfg.tls.as_ref().map(|t| t.tickets.clone()),
            listeners: listeners.clone(),
        };
        let cb = Arc::new(w.cb);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded::<Result<(), EngineError>>(count);
        let first_thread = threads.len();
        // Ring threads running: the last to exit lets go of the worker's listening sockets
        // (its final stop: a Unix socket file is removed then, even while handles live on).
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (i, (thread, mailbox)) in regs.into_iter().enumerate() {
            let listeners = listeners.clone();
            let stats = stats[i].clone();
            let info = WorkerInfo { id: i, count, name: w.name.clone(), handle: handle.clone() };
            let (cfg, cb, ready_tx) = (cfg.clone(), cb.clone(), ready_tx.clone());
            let fixed = w.fixed_send_bytes;
            let pin = w.pin_cpus.map(|off| (off + i) % cpus());
            let live_here = live.clone();
            live.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let t = std::thread::Builder::new().name(format!("ringman-{}-{}", w.name, i)).spawn(move || {
                if let Some(cpu) = pin {
                    let _ = crate::sys::pin_to_cpu(cpu);
                }
                supervise(&info, &ready_tx, || {
                    // Its own SO_REUSEPORT sockets, or the shared one: the current ones (a
                    // restarted ring), if the worker listens. Stream listeners are accepted
                    // on, a `udp://` worker's sockets received on.
                    let (udp, stream): (Vec<_>, Vec<_>) = listeners
                        .iter()
                        .flat_map(|l| l.for_ring(i))
                        .partition(|fd: &Arc<ListenSocket>| fd.is_datagram());
                    let slots = stream.into_iter().map(ListenerSlot::new).collect();
                    let mut core = Core::new(thread, cfg.clone(), slots, mailbox.clone(), stats.clone(), fixed)?;
                    for fd in udp {
                        core.udp_listen(fd).map_err(EngineError::BufferRing)?;
                    }
                    let stats = core.stats.clone();
                    Ok((core, Runner::new(cb.clone(), info.clone(), stats)))
                });
                mailbox::unregister(thread);
                if live_here.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                    if let Some(l) = &listeners {
                        l.fds.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    }
                }
            });
            match t {
                Ok(t) => threads.push(t),
                Err(e) => {
                    live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
