//! Work sent to a ring thread from elsewhere: the commands, each thread's inbox, and the
//! process-wide registry that finds a thread's inbox by its index.
//!
//! A ring thread keeps a read armed on its inbox's eventfd; a sender pushes the command on
//! a channel and writes the eventfd only when the ring has drained since the last write.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use ringman_protocols::MessageKind;

use crate::error::EngineError;
use crate::id::ConnectionId;

/// How `send` encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enc {
    /// As is.
    Raw,
    /// With the protocol's encoder, as the connection's default message kind.
    Default,
    /// With the protocol's encoder, as this kind.
    Kind(MessageKind),
}

/// Work sent to a ring thread from elsewhere.
pub(crate) enum Cmd {
    Send {
        conn: ConnectionId,
        data: Bytes,
        enc: Enc,
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
    /// Stop; `None` gives connections the worker's `stop_timeout`.
    Stop {
        timeout: Option<Duration>,
    },
    /// Stop accepting, drain like a stop, then start the thread afresh (same id).
    Recycle {
        timeout: Duration,
    },
    /// Stop accepting (and receiving on a `udp://` worker's sockets) only: the sockets stay
    /// open for a successor process.
    PauseAccept,
    /// Accept on this listening socket too, or receive on this `udp://` worker's socket
    /// (`WorkerHandle::listen`).
    Listen {
        fd: Arc<crate::addr::ListenSocket>,
    },
    /// Stop accepting and let go of the listening sockets, and close a `udp://` worker's
    /// sockets (`WorkerHandle::unlisten`).
    Unlisten,
    /// The resolver's answer for an outgoing connection's host name.
    Resolved {
        conn: ConnectionId,
        attempt: u32,
        host: String,
        port: u16,
        addrs: Result<Vec<std::net::SocketAddr>, String>,
    },
    /// Test hook: panic outside any user callback, as an engine bug would.
    Crash,
}

/// The inbox of one ring thread: a channel plus an eventfd the ring has a read armed on.
pub(crate) struct Mailbox {
    tx: Sender<Cmd>,
    rx: Receiver<Cmd>,
    /// Closed when the mailbox is dropped, which happens after the ring's read on it was
    /// cancelled (`Core::quiesce`) or the ring itself was closed.
    efd: OwnedFd,
    /// Set by the first sender after the ring last drained; spares further eventfd writes.
    notified: AtomicBool,
}

impl Mailbox {
    fn new() -> std::io::Result<Mailbox> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(Mailbox { tx, rx, efd: crate::sys::eventfd()?, notified: AtomicBool::new(false) })
    }

    /// The eventfd the ring reads to learn that commands wait.
    pub(crate) fn eventfd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    fn post(&self, cmd: Cmd) -> bool {
        if self.tx.send(cmd).is_err() {
            return false;
        }
        // Push first, then flag: the ring clears the flag before draining, so a command
        // pushed after its drain always finds the flag clear and writes the eventfd.
        if !self.notified.swap(true, Ordering::AcqRel) {
            crate::sys::eventfd_signal(self.efd.as_fd());
        }
        true
    }

    /// Takes the next command (the ring thread only).
    pub(crate) fn next(&self) -> Option<Cmd> {
        self.rx.try_recv().ok()
    }

    /// Called by the ring before it drains: the next sender writes the eventfd again.
    pub(crate) fn clear_notified(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }
}

/// Mailboxes of every ring thread in the process, indexed by global thread id. Read-locked
/// only on cross-thread operations, never on a connection's own thread.
static REGISTRY: RwLock<Vec<Option<Arc<Mailbox>>>> = RwLock::new(Vec::new());

/// Posts `cmd` to ring thread `thread`; false when that thread is gone.
pub(crate) fn post(thread: u16, cmd: Cmd) -> bool {
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    match reg.get(thread as usize) {
        Some(Some(mb)) => mb.post(cmd),
        _ => false,
    }
}

/// Posts the command `make` builds to every ring thread of the process.
pub(crate) fn post_all(make: impl Fn() -> Cmd) {
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    for mb in reg.iter().flatten() {
        mb.post(make());
    }
}

/// Gives a new ring thread its index and inbox (the lowest free index).
pub(crate) fn register() -> Result<(u16, Arc<Mailbox>), EngineError> {
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

/// Frees the index of a ring thread that has exited.
pub(crate) fn unregister(thread: u16) {
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if let Some(slot) = reg.get_mut(thread as usize) {
        *slot = None;
    }
}
