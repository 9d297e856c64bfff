//! The thread-per-core io_uring engine behind ringman.
//!
//! One ring thread per core owns a slab of connections, a provided-buffer ring for receives
//! and a registered arena for sends. User code plugs in through [`Worker`] callbacks, holds
//! [`Connection`] handles, and schedules work with [`Timer`]. See ARCHITECTURE.md for the
//! path of a message from completion to callback to send.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Layers; a module imports only from its own layer's leaves and the layers before it:
//   error, sys, ring, buffers, config, stats, id, mailbox, timers   (below the core)
//   reactor                                                          (the state machines)
//   connection, timer, handle                                        (handles user code holds)
//   worker                                                           (builder, runner, listeners)
//   http, server, handover                                           (on top)
mod buffers;
mod config;
mod connection;
mod error;
mod handle;
pub mod handover;
pub mod http;
mod id;
mod mailbox;
mod reactor;
mod ring;
mod server;
pub mod stats;
mod sys;
mod timer;
mod timers;
mod worker;

pub use config::SendMode;
pub use connection::Connection;
pub use error::{ConnError, EngineError};
pub use handle::WorkerHandle;
pub use id::ConnectionId;
pub use reactor::SendStatus;
pub use ring::RingMode;
/// The message types callbacks receive, re-exported from `ringman_protocols`.
pub use ringman_protocols::{Message, MessageKind};
pub use server::{run_all, run_all_then, stop_all, Running, Server};
pub use stats::ThreadStats;
pub use sys::resident_memory;
pub use timer::{Timer, TimerId};
pub use worker::{Worker, WorkerInfo, WsDecision};

/// What a ring thread runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingInfo {
    /// Process-wide index of the ring thread.
    pub thread: u16,
    /// Setup flags the kernel accepted.
    pub mode: RingMode,
    /// Registered send chunks (16 KiB each); 0 means heap-only sends.
    pub fixed_send_chunks: usize,
    /// True when registered chunks go out with IORING_OP_SEND + IORING_RECVSEND_FIXED_BUF,
    /// false when with IORING_OP_WRITE_FIXED.
    pub send_op_with_fixed_buffer: bool,
    /// Size of each provided receive buffer.
    pub recv_buffer_size: u32,
    /// Connection slots in use (including closed ones waiting for completions).
    pub connections: usize,
}

/// One connection as listed by `connections` (Workerman's connection status output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Process-wide id.
    pub id: ConnectionId,
    /// Protocol name.
    pub protocol: &'static str,
    /// Local address.
    pub local: Option<std::net::SocketAddr>,
    /// Peer address.
    pub remote: Option<std::net::SocketAddr>,
    /// Bytes received but not yet delivered (waiting for the rest of a packet, or paused).
    pub recv_q: usize,
    /// Bytes in the application send buffer.
    pub send_q: usize,
    /// Bytes received so far.
    pub bytes_read: u64,
    /// Bytes sent so far.
    pub bytes_written: u64,
    /// `ESTABLISHED`, `CLOSING`, `LINGERING` or `CLOSED`.
    pub status: &'static str,
    /// True while receiving is paused.
    pub paused: bool,
}

/// The connections of the current ring thread (empty off ring threads). Meant for status
/// tools: call it through [`WorkerHandle::on_each_thread`].
pub fn thread_connections() -> Vec<ConnInfo> {
    reactor::with_core(|c| c.connections()).unwrap_or_default()
}

/// Information about the current ring thread; `None` off ring threads.
pub fn ring_info() -> Option<RingInfo> {
    reactor::with_core(|c| c.info())
}
