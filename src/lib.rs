//! ringman: Workerman's programming model (Worker, Connection, protocols, Timer) on
//! thread-per-core io_uring rings.
//!
//! ```no_run
//! use ringman::{run_all, Server, Worker};
//! let mut worker = Worker::<()>::new("text://0.0.0.0:8000").unwrap();
//! worker.count = 4;
//! worker.on_connect(|conn, _| println!("new connection {}", conn.id()));
//! worker.on_message(|conn, data, _| {
//!     conn.send(data);
//! });
//! worker.on_close(|conn, _| println!("connection {} closed", conn.id()));
//! run_all(Server::new().add(worker)).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use ringman_engine::{
    current_ring, ktls_probe, resident_memory, ring_info, run_all, run_all_then, run_on_ring, stop_all,
    thread_connections, AsyncTcpConnection, AsyncUdpConnection, ClientTls, ConnError, ConnInfo, ConnectError,
    Connection, ConnectionId, EngineError, Keepalive, ListenAddr, Message, MessageKind, Proxy, RingInfo, RingMode,
    Running, SendMode, SendStatus, Server, ThreadStats, Timeouts, Timer, TimerId, TlsConfig, TlsFailure, TlsSetupError,
    UdpConnection, Worker, WorkerHandle, WorkerInfo, WsDecision, WHOLE_RECV_BUFFER,
};

#[doc(hidden)]
pub use ringman_engine::{set_resolver_hook_for_test, ResolverHook};

/// Async code on the rings: spawn a future on the calling ring thread (it need not be
/// `Send`), await a connection's messages, its drained send buffer, a connect, a sleep.
pub use ringman_engine::{spawn, timeout, DialError, Elapsed, JoinError, JoinHandle, OwnedMessage};

/// The futures of ringman's async API (what `Connection::messages`, `Connection::drained`,
/// `AsyncTcpConnection::connect_async` and `Timer::sleep` return).
pub mod future {
    pub use ringman_engine::{Connecting, Drained, Messages, Recv, Sleep, Timeout};
}

/// Counters of a ring thread (`WorkerHandle::stats`).
pub use ringman_engine::stats;

/// HTTP glue: answering requests on a connection, static files, and the request and response
/// types a handler needs (one import: `use ringman::http::{respond, Request, Response}`).
pub mod http {
    pub use ringman_engine::http::{continue_file, date_now, respond, respond_static, send_file, WebServer};
    pub use ringman_protocols::http::{Request, Response, StaticResponse};
}

/// Handing listening sockets to a successor process (zero-downtime reload).
pub use ringman_engine::handover;

/// Operating a service: Workerman's command line (`start -d`, `stop`, `reload`, `status`, ...),
/// daemon mode, the control socket, zero-downtime reload, Prometheus metrics and the log file.
pub use ringman_ops as ops;

/// Beyond one process: the async Redis client (`cluster::redis`), `Channel`, groups and
/// pushes across processes (`Cluster`), and `GlobalData`.
pub use ringman_cluster as cluster;

/// The async Redis client on the rings (also at `cluster::redis`).
pub use ringman_cluster::redis;

/// Workerman's components: the async HTTP client, HTTP sessions, cron, FileMonitor.
pub use ringman_components as components;

/// The sans-IO protocol layer (raw tcp, text, frame, http, websocket, and the traits for
/// your own).
pub use ringman_protocols as protocols;
