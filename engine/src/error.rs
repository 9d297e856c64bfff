//! Typed errors of the engine.

use std::io;
use std::path::PathBuf;

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
    /// The worker's or the client's TLS settings could not be loaded (the message names the
    /// file and the mistake).
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
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
    /// The TLS session of an accepted connection failed (a peer that does not speak TLS, a
    /// refused handshake, an alert, a handshake that took too long); the connection is
    /// closed. (An outgoing connection whose handshake fails reports
    /// [`ConnError::Connect`] with [`ConnectError::Tls`].)
    #[error("TLS: {0}")]
    Tls(TlsFailure),
}

impl TlsFailure {
    /// The reason alone (without "handshake failed").
    pub(crate) fn reason(&self) -> String {
        match self {
            TlsFailure::Handshake(r) | TlsFailure::Peer(r) => r.clone(),
            other => other.to_string(),
        }
    }
}

/// Why a TLS session failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsFailure {
    /// The first bytes were not a TLS record; `plain_http` when they look like a plaintext
    /// HTTP request (answered with a 400 saying so).
    #[error("{}", if *plain_http { "a plaintext HTTP request on a TLS port" } else { "the peer does not speak TLS" })]
    NotTls {
        /// The bytes look like an HTTP request line.
        plain_http: bool,
    },
    /// The handshake failed (no common version or cipher suite, a bad certificate, ...).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The handshake was not complete this long after the connection opened.
    #[error("handshake not complete after {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The established session failed (a bad record, an alert from the peer).
    #[error("{0}")]
    Peer(String),
}

impl ConnError {
    /// Workerman's numeric code: `CONNECT_FAIL` = 1 for a client connection that could not
    /// be established, `SEND_FAIL` = 2 for a refused send, and ringman adds 3 = protocol error, 4 = panic, 5 = socket error,
    /// 6 = heartbeat unanswered, 7 = UDP receive timeout, 8 = TLS failure.
    pub fn code(&self) -> u32 {
        match self {
            ConnError::Connect { .. } => 1,
            ConnError::SendBufferFull { .. } => 2,
            ConnError::Protocol(_) => 3,
            ConnError::Panic(_) => 4,
            ConnError::Io(_) => 5,
            ConnError::NoPong { .. } => 6,
            ConnError::RecvTimeout { .. } => 7,
            ConnError::Tls(_) => 8,
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
    /// The TLS handshake failed: the server's certificate did not verify (unknown CA, a
    /// name it is not for, expired) or the server refused ours; the reason is rustls's.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
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

/// Why TLS settings could not be loaded (at start, naming the file).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{} holds no PEM private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key could not be used (unsupported type, damaged).
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// The key belongs to none of the certificates of the chain.
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The key matches a certificate that is not the first of the chain: the leaf must come
    /// first, then the certificates that issued it.
    #[error(
        "{}: chain in the wrong order: the certificate matching the key is number {index} of {count}; the leaf must come first, then its issuers",
        cert.display()
    )]
    ChainOrder {
        /// The certificate file.
        cert: PathBuf,
        /// Position (1-based) of the certificate that matches the key.
        index: usize,
        /// Certificates in the file.
        count: usize,
    },
    /// A CA file for client verification holds no usable certificate.
    #[error("{}: no usable CA certificate", path.display())]
    NoCa {
        /// The file.
        path: PathBuf,
    },
    /// An SNI certificate that is not valid for the name it is to serve.
    #[error("{}: cannot serve {name:?}: {reason}", cert.display())]
    SniName {
        /// The name.
        name: String,
        /// Its certificate file.
        cert: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// `reload_tls` on a worker that does not serve TLS.
    #[error("this worker does not serve TLS")]
    NotTls,
    /// A server name that is not a valid DNS name or address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// `TlsConfig::ticket_key_rotation` is zero or longer than 84 h (tickets live two
    /// periods, and TLS 1.3 allows at most 7 days).
    #[error("ticket_key_rotation {0:?} out of range: more than zero and at most 84 h")]
    TicketKeyRotation(std::time::Duration),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}
