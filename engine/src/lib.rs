//! The thread-per-core io_uring engine behind ringman.
//!
//! One ring thread per core owns a slab of connections, a provided-buffer ring for receives
//! and a registered arena for sends. User code plugs in through [`Worker`] callbacks, holds
//! [`Connection`] handles, and schedules work with [`Timer`]. See ARCHITECTURE.md for the
//! path of a message from completion to callback to send.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Layers; a module imports only from its own layer's leaves and the layers before it:
//   error, sys, addr, ring, buffers, config, stats, id, info, mailbox,     (below the core)
//   timers
//   reactor                                                          (the state machines)
//   connection, timer, handle                                        (handles user code holds)
//   exec                                                             (futures on the handles)
//   worker                                                           (builder, runner, listeners)
//   http, server, handover                                           (on top)
mod addr;
mod buffers;
mod client;
mod clock;
mod config;
mod connection;
mod error;
mod exec;
mod handle;
pub mod handover;
mod hooks;
pub mod http;
mod id;
mod info;
mod mailbox;
mod reactor;
mod resolve;
mod ring;
mod sendfile;
mod server;
#[cfg(test)]
mod sim;
pub mod stats;
mod sys;
mod timer;
mod timers;
mod tls;
mod udp;
mod worker;

pub use addr::ListenAddr;
pub use buffers::WHOLE_RECV_BUFFER;
pub use client::{AsyncTcpConnection, Proxy};
pub use config::{Keepalive, SendMode};
pub use connection::{Connection, Timeouts};
pub use error::{ConnError, ConnectError, EngineError, TlsFailure, TlsSetupError};
pub use exec::{
    spawn, timeout, Connecting, DialError, Drained, Elapsed, JoinError, JoinHandle, Messages, OwnedMessage, Recv,
    Sleep, Timeout,
};
pub use handle::WorkerHandle;
pub use id::ConnectionId;
pub use info::{ConnInfo, RingInfo};
pub use reactor::{SendStatus, UdpConnection};
#[doc(hidden)]
pub use resolve::{set_resolver_hook_for_test, ResolverHook};
pub use ring::RingMode;
/// The message types callbacks receive, re-exported from `ringman_protocols`.
pub use ringman_protocols::{Message, MessageKind};
pub use server::{run_all, run_all_then, stop_all, Running, Server};
pub use stats::ThreadStats;
pub use sys::resident_memory;
pub use timer::{Timer, TimerId};
pub use tls::{ktls_probe, ClientTls, TicketKeyInfo, TlsConfig};
pub use udp::AsyncUdpConnection;
pub use worker::{Worker, WorkerInfo, WsDecision};

/// The connections of the current ring thread (empty off ring threads). Meant for status
/// tools: call it through [`WorkerHandle::on_each_thread`].
pub fn thread_connections() -> Vec<ConnInfo> {
    reactor::with_core(|c| c.connections()).unwrap_or_default()
}

/// Information about the current ring thread; `None` off ring threads.
pub fn ring_info() -> Option<RingInfo> {
    reactor::with_core(|c| c.info())
}

/// The process-wide index of the calling ring thread (what [`ConnectionId::thread`]
/// answers for its connections); `None` off ring threads.
pub fn current_ring() -> Option<u16> {
    reactor::current_thread()
}

/// Runs `f` on ring thread `ring` (an index from [`current_ring`] or
/// [`ConnectionId::thread`]), between its completions, like a callback: a panic in it is
/// caught and logged there. False when no such ring runs (its `f` is dropped).
pub fn run_on_ring(ring: u16, f: impl FnOnce() + Send + 'static) -> bool {
    mailbox::post(ring, mailbox::Cmd::Call(Box::new(f)))
}
