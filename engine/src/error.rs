//! Typed errors of the engine.

use std::io;

use ringman_protocols::ProtocolError;

/// Errors returned when configuring or starting workers.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The listen address is not `scheme://ip:port` or `unix:///path`.
    #[error("invalid listen address {addr:?}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No protocol is registered for the scheme.
    #[error("unknown scheme {0:?} (known: tcp, text, frame, http, websocket, unix, or a custom protocol via Worker::with_protocol)")]
    UnknownScheme(String),
    /// `set_protocol` was given a name that is not a built-in protocol.
    #[error("unknown protocol {0:?} (known: tcp, text, frame, http, websocket; a custom one through with_protocol)")]
    UnknownProtocol(String),
    /// The port is already taken by another socket.
    #[error("cannot listen on {addr}: address already in use")]
    AddrInUse {
        /// The address that is taken.
        addr: std::net::SocketAddr,
    },
    /// Creating, binding or listening on the socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A live server already listens on the Unix socket file (a connection to it was
    /// accepted). A stale file left by a process that died is removed instead.
    #[error("cannot listen on unix://{}: a server is already listening on this socket file", path.display())]
    SocketFileInUse {
        /// The socket file.
        path: std::path::PathBuf,
    },
    /// The path of a `unix://` listener exists and is not a socket (it is left alone).
    #[error("cannot listen on unix://{}: the path exists and is not a socket", path.display())]
    NotASocket {
        /// The path.
        path: std::path::PathBuf,
    },
    /// Creating, binding, setting the mode of, or listening on a Unix socket failed.
    #[error("cannot listen on unix://{}: {source}", path.display())]
    ListenUnix {
        /// The socket file.
        path: std::path::PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// io_uring is disabled (seccomp, `kernel.io_uring_disabled`) or missing.
    #[error(
        "io_uring is unavailable on this system ({0}); check seccomp profiles and the kernel.io_uring_disabled sysctl"
    )]
    IoUringUnavailable(io::Error),
    /// The ring could not be set up.
    #[error("io_uring setup failed: {0}")]
    Ring(io::Error),
    /// Registering the receive buffer ring failed.
    #[error("registering the provided-buffer ring failed: {0}")]
    BufferRing(io::Error),
    /// A thread-local API (Timer, Connection helpers) was used outside a ring thread.
    #[error("not on a ringman ring thread")]
    NotOnRingThread,
    /// The connection is gone (closed, or never on this thread).
    #[error("no such connection on this ring thread")]
    NoSuchConnection,
    /// Spawning a ring thread failed.
    #[error("spawning a ring thread failed: {0}")]
    Spawn(io::Error),
    /// Too many ring threads in this process (ids are 16 bits).
    #[error("too many ring threads in this process")]
    TooManyThreads,
    /// `listen()` on a worker that has no listen address (`Worker::without_listener`).
    #[error("the worker has no listen address")]
    NoListenAddress,
    /// The ring is stopping: it opens no new connections.
    #[error("the ring thread is stopping")]
    Stopping,
    /// Creating a socket for an outgoing connection failed (descriptors exhausted, ...).
    #[error("cannot create a socket: {0}")]
    Socket(io::Error),
    /// A timer interval the engine refuses: zero for a repeating timer (it would spin the
    /// ring; Workerman refuses intervals ≤ 0 too), or one so long that its deadline is not
    /// representable.
    #[error("invalid timer interval {interval:?}: {reason}")]
    TimerInterval {
        /// The interval as given.
        interval: std::time::Duration,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Why a connection reported `on_error`.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The protocol rejected the received bytes or a packet exceeded `max_package_size`;
    /// the connection is closed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// `send()` dropped data because the send buffer was already at `max_send_buffer_size`
    /// (Workerman's SEND_FAIL); the connection stays open.
    #[error("send buffer full ({queued} bytes queued, limit {limit}): data dropped")]
    SendBufferFull {
        /// Bytes queued when the send was refused.
        queued: usize,
        /// The connection's `max_send_buffer_size`.
        limit: usize,
    },
    /// A user callback panicked; the connection is closed, the thread keeps running.
    #[error("callback panicked: {0}")]
    Panic(String),
    /// The socket failed (reset, broken pipe, ...); the connection is closed.
    #[error("socket error: {0}")]
    Io(io::Error),
    /// A client connection could not be established (Workerman's CONNECT_FAIL, code 1): the
    /// name did not resolve, the peer refused or did not answer within the connect timeout,
    /// or (for `ws://`) the server did not complete the upgrade. `on_close` follows.
    #[error("connect to {target} failed: {cause}")]
    Connect {
        /// `host:port` as given.
        target: String,
        /// Why.
        cause: ConnectError,
    },
    /// A WebSocket heartbeat ping went unanswered (nothing at all was received) for this
    /// long: the peer is presumed dead and the connection destroyed.
    #[error("no answer to a heartbeat ping within {after:?}")]
    NoPong {
        /// The worker's `websocket_ping_interval`.
        after: std::time::Duration,
    },
    /// A UDP client sent and nothing arrived within its receive timeout
    /// (`AsyncUdpConnection::recv_timeout`): the client is closed (`on_close` follows).
    #[error("no datagram received within {after:?}")]
    RecvTimeout {
        /// The client's receive timeout.
        after: std::time::Duration,
    },
}

impl ConnError {
    /// Workerman's numeric code: `CONNECT_FAIL` = 1 for a client connection that could not
    /// be established, `SEND_FAIL` = 2 for a refused send, and ringman adds 3 = protocol error, 4 = panic, 5 = socket error,
    /// 6 = heartbeat unanswered, 7 = UDP receive timeout.
    pub fn code(&self) -> u32 {
        match self {
            ConnError::Connect { .. } => 1,
            ConnError::SendBufferFull { .. } => 2,
            ConnError::Protocol(_) => 3,
            ConnError::Panic(_) => 4,
            ConnError::Io(_) => 5,
            ConnError::NoPong { .. } => 6,
            ConnError::RecvTimeout { .. } => 7,
        }
    }
}

/// Why a client connection could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve (`/etc/hosts`, then DNS per `/etc/resolv.conf`).
    #[error("name {host:?} not found: {reason}")]
    NameNotFound {
        /// The name.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
    /// The peer refused the connection (nothing listens on the port).
    #[error("connection refused")]
    Refused,
    /// No answer within the connect timeout (for `ws://`, no complete upgrade).
    #[error("timed out after {0:?}")]
    TimedOut(std::time::Duration),
    /// The server answered the WebSocket upgrade with something other than a valid `101`.
    #[error("WebSocket handshake refused: {0}")]
    Handshake(String),
    /// The proxy refused the tunnel, or the handshake with it failed: `answer` is the
    /// proxy's answer (an HTTP status line such as `HTTP/1.1 407 Proxy Authentication
    /// Required`, a SOCKS5 reply code and its meaning, a failed user/password check) or what
    /// went wrong (closed, reset, no answer within the connect timeout).
    #[error("proxy {proxy}: {answer}")]
    Proxy {
        /// The proxy's `host:port`.
        proxy: String,
        /// Its answer, or what went wrong.
        answer: String,
    },
    /// Any other socket error (network unreachable, no route, bind failed, ...).
    #[error("{0}")]
    Io(io::Error),
    /// Too many host names wait for the resolver already (some DNS server is not
    /// answering): the dial fails at once instead of queuing behind them.
    #[error("resolver busy: {waiting} names wait for a lookup already")]
    ResolverBusy {
        /// Names waiting to be looked up.
        waiting: usize,
    },
}

impl ConnectError {
    /// The cause of a failed `connect(2)` with errno `errno`.
    pub(crate) fn from_errno(errno: i32) -> ConnectError {
        match errno {
            libc::ECONNREFUSED => ConnectError::Refused,
            e => ConnectError::Io(io::Error::from_raw_os_error(e)),
        }
    }
}

/// The message of a caught panic's payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}
