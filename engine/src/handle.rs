//! `WorkerHandle`: a handle on the ring threads of one running worker, usable from any
//! thread (broadcasts, cross-thread calls, stop, recycle, counters).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Listeners;
use crate::error::EngineError;
use crate::mailbox::{post, Cmd};
use crate::reactor::{current_thread, with_core};
use crate::stats::ThreadStats;

/// A handle on the ring threads of one running worker, usable from any thread.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub(crate) name: Arc<str>,
    pub(crate) threads: Arc<[u16]>,
    pub(crate) stop_timeout: Duration,
    pub(crate) stats: Arc<[Arc<ThreadStats>]>,
    pub(crate) listen: Option<crate::addr::ListenAddr>,
    pub(crate) protocol: &'static str,
    pub(crate) reloadable: bool,
    /// The worker's certificate reload, when it serves TLS.
    pub(crate) tls: Option<Arc<crate::tls::CertReload>>,
    /// The worker's session-ticket keys, when it serves TLS (handed to a reload successor).
    pub(crate) tickets: Option<Arc<crate::tls::tickets::TicketKeys>>,
    /// The worker's listening sockets (`None` without a listen address).
    pub(crate) listeners: Option<Arc<Listeners>>,
}

impl WorkerHandle {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads the worker's certificate and key files again (and those of its SNI names) and
    /// serves them to new handshakes on every ring; connections in flight keep their
    /// sessions. On an error (the same checks as at start, naming the file) the
    /// certificates served so far stay. A `reload` of the process picks new files up by
    /// itself: the successor reads them when it starts.
    pub fn reload_tls(&self) -> Result<(), crate::error::TlsSetupError> {
        let reload = self.tls.as_ref().ok_or(crate::error::TlsSetupError::NotTls)?;
        reload.reload().inspect_err(|e| {
            log::error!("{}: certificate reload failed, still serving the previous certificates: {e}", self.name)
        })
    }

    /// The generation and age of the worker's session-ticket keys (for `status`), when it
    /// serves TLS. Never the keys themselves.
    pub fn tls_ticket_keys(&self) -> Option<crate::tls::TicketKeyInfo> {
        self.tickets.as_ref().map(|t| t.info())
    }

    /// Number of ring threads.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Sends `data` (encoded by the worker's protocol) to every open connection this worker
    /// accepted, on all its threads (Workerman's `$worker->connections`: outgoing
    /// connections opened with `AsyncTcpConnection` are not included). The calling thread's share is queued at once; the other
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

    /// Runs `f` on thread `i` of this worker (for example to open an outgoing connection
    /// there with [`AsyncTcpConnection`](crate::AsyncTcpConnection), whose callbacks need
    /// not be `Send`). Returns false when that thread is gone.
    ///
    /// ```no_run
    /// # let handle: ringman_engine::WorkerHandle = unimplemented!();
    /// handle.run_on(0, || {
    ///     let conn = ringman_engine::AsyncTcpConnection::new("tcp://127.0.0.1:6379").unwrap().connect().unwrap();
    ///     conn.on_message(|_, reply| println!("{}", String::from_utf8_lossy(reply.data)));
    ///     conn.send("PING\r\n");
    /// });
    /// ```
    pub fn run_on(&self, i: usize, f: impl FnOnce() + Send + 'static) -> bool {
        self.threads.get(i).is_some_and(|&t| post(t, Cmd::Call(Box::new(f))))
    }

    /// Asks this worker's threads to stop (graceful, bounded by `stop_timeout`).
    pub fn stop(&self) {
        self.stop_within(self.stop_timeout);
    }

    /// Asks this worker's threads to stop; connections get `timeout` to flush and close.
    pub fn stop_within(&self, timeout: Duration) {
        for &t in self.threads.iter() {
            post(t, Cmd::Stop { timeout: Some(timeout) });
        }
    }

    /// Stops accepting new connections on every thread; existing connections keep running.
    /// The listening sockets stay open, so a successor process that inherited them keeps
    /// the accept queue (zero-downtime reload). A `udp://` worker stops receiving the same
    /// way: its sockets' receives are cancelled (datagrams they took before are still
    /// delivered) and the sockets stay open, their receive queues left to the successor.
    pub fn pause_accept(&self) {
        for &t in self.threads.iter() {
            post(t, Cmd::PauseAccept);
        }
    }

    /// Listens again after [`WorkerHandle::unlisten`] (Workerman's `$worker->listen()`): new
    /// listening sockets on the worker's address (the port it was given, or the one the
    /// kernel chose at start; the same socket file for `unix://`, which `unlisten` removed),
    /// one per ring thread with `reuse_port`, else one shared, and
    /// every ring accepts on them from its next loop turn. A `udp://` worker gets new
    /// datagram sockets the same way (one per ring with `reuse_port`) and receives on them.
    /// Callable from any thread (a timer, `on_worker_start`, another program thread). Does
    /// nothing when the worker listens already.
    ///
    /// Errors: [`EngineError::NoListenAddress`] for a worker made with
    /// `Worker::without_listener`; [`EngineError::AddrInUse`] when something else took the
    /// port meanwhile — or while the rings are still letting go of the sockets of an
    /// `unlisten` issued an instant before (they do so within a loop turn or two; call again;
    /// for `unix://` that case is [`EngineError::SocketFileInUse`]).
    pub fn listen(&self) -> Result<(), EngineError> {
        let l = self.listeners.as_ref().ok_or(EngineError::NoListenAddress)?;
        let mut fds = l.fds.lock().unwrap_or_else(|e| e.into_inner());
        if !fds.is_empty() {
            return Ok(());
        }
        *fds = (l.open)()?.into_iter().map(Arc::new).collect();
        for (i, &t) in self.threads.iter().enumerate() {
            for fd in Listeners::share(&fds, i, l.rings) {
                post(t, Cmd::Listen { fd });
            }
        }
        Ok(())
    }

    /// Stops listening (Workerman's `$worker->unlisten()`): every ring thread of the worker
    /// stops accepting and closes its listening socket (after cancelling its accept), so new
    /// clients are refused by the kernel; the connections already accepted carry on.
    /// [`WorkerHandle::listen`] opens the port again. A `unix://` worker's socket file is
    /// removed when its socket closes. A `udp://` worker's sockets close the same way (after
    /// their receives are cancelled; datagrams those took before are still delivered and may
    /// be answered), so the port is released and datagrams sent to it meet the kernel's
    /// port-unreachable answer. Callable from any thread. Unlike
    /// [`WorkerHandle::pause_accept`], which keeps the sockets open for a reload's
    /// successor, this releases the port.
    pub fn unlisten(&self) {
        let Some(l) = &self.listeners else { return };
        let mut fds = l.fds.lock().unwrap_or_else(|e| e.into_inner());
        fds.clear();
        for &t in self.threads.iter() {
            post(t, Cmd::Unlisten);
        }
    }

    /// Whether the worker listens (it has a listen address and no `unlisten` since its
    /// start or its last `listen`).
    pub fn is_listening(&self) -> bool {
        self.listeners.as_ref().is_some_and(|l| !l.fds.lock().unwrap_or_else(|e| e.into_inner()).is_empty())
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

    /// The IP address (TCP, or UDP for a `udp://` worker) the worker listens on (with the
    /// real port); `None` for a worker without a listener or on a Unix socket (see
    /// [`WorkerHandle::listen_at`]).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.as_ref()?.ip()
    }

    /// Where the worker listens: its TCP or UDP address (the real port) or its Unix socket
    /// file.
    pub fn listen_at(&self) -> Option<&crate::addr::ListenAddr> {
        self.listen.as_ref()
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
