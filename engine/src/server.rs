//! Starting and stopping groups of workers (Workerman's `Worker::runAll()` / `stopAll()`).

use std::net::SocketAddr;
use std::thread::JoinHandle;

use crate::error::EngineError;
use crate::handle::WorkerHandle;
use crate::mailbox::{post_all, Cmd};
use crate::worker::{Spawn, Worker};

/// Asks every ring thread of the process to stop (Workerman's `Worker::stopAll()`):
/// listeners close, and each worker's connections are flushed and closed within that
/// worker's `stop_timeout`.
pub fn stop_all() {
    post_all(|| Cmd::Stop { timeout: None });
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
    pub fn add<S: Default + 'static>(mut self, w: Worker<S>) -> Server {
        self.workers.push(Box::new(w));
        self
    }

    /// Binds every listener and starts every ring thread. Errors (bad port, io_uring
    /// unavailable, ...) are returned before any connection is accepted.
    pub fn start(self) -> Result<Running, EngineError> {
        crate::sys::ignore_sigpipe();
        let mut running = Running { threads: Vec::new(), workers: Vec::new(), addrs: Vec::new() };
        for w in self.workers {
            let started = w.spawn(&mut running.threads);
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

/// Workers that are running. Dropping it stops them and waits for their threads.
pub struct Running {
    threads: Vec<JoinHandle<()>>,
    workers: Vec<WorkerHandle>,
    addrs: Vec<Option<crate::addr::ListenAddr>>,
}

impl Running {
    /// Handles of all workers, in the order added.
    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// The IP address (TCP, or UDP for a `udp://` worker) worker `i` (in the order added)
    /// listens on, with the real port when port 0 was asked for; `None` for a `unix://`
    /// worker (see [`Running::listen_at`]).
    pub fn local_addr(&self, i: usize) -> Option<SocketAddr> {
        self.addrs.get(i).and_then(|a| a.as_ref()?.ip())
    }

    /// Where worker `i` (in the order added) listens: its TCP or UDP address (the real
    /// port) or its Unix socket file.
    pub fn listen_at(&self, i: usize) -> Option<&crate::addr::ListenAddr> {
        self.addrs.get(i)?.as_ref()
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
