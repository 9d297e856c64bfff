//! Typed errors of the harness.

use std::path::PathBuf;

/// A bad command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    /// No subcommand was given.
    #[error("missing subcommand (run, compare, serve-ringman, help)")]
    MissingCommand,
    /// The subcommand is not known.
    #[error("unknown subcommand {0:?}")]
    UnknownCommand(String),
    /// An option is not known for this subcommand.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// An option needs a value and none followed.
    #[error("option {0} needs a value")]
    MissingValue(String),
    /// A value could not be parsed.
    #[error("bad value {value:?} for {option}: {reason}")]
    BadValue {
        /// The option.
        option: String,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A required option is absent.
    #[error("missing required option {0}")]
    Required(&'static str),
    /// A `--target` URL that does not parse.
    #[error("bad --target {url:?}: {reason}")]
    BadTarget {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--scenario` and the `--target` scheme name different wire protocols.
    #[error("--scenario {scenario} does not match the target's {scheme}:// (use {expected}:// for {scenario})")]
    SchemeMismatch {
        /// The scenario given.
        scenario: &'static str,
        /// The target's scheme.
        scheme: String,
        /// The scheme the scenario needs.
        expected: &'static str,
    },
    /// Two options that exclude each other.
    #[error("{0} and {1} exclude each other")]
    Conflict(&'static str, &'static str),
    /// The `--payload` file cannot be used.
    #[error("--payload {path}: {reason}")]
    Payload {
        /// The file.
        path: PathBuf,
        /// Why (read error, or content the scenario cannot carry).
        reason: String,
    },
}

/// A failure of the load generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Connecting to the server failed.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// Server address.
        addr: std::net::SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// A system call of the event loop failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// The call.
        call: &'static str,
        /// OS error.
        source: std::io::Error,
    },
    /// The WebSocket handshake was not answered with 101.
    #[error("websocket handshake rejected: {0:?}")]
    Handshake(String),
    /// The server sent bytes that do not parse as responses of the scenario.
    #[error("bad response: {0}")]
    Protocol(#[from] ringman_protocols::ProtocolError),
    /// Every connection failed.
    #[error("all {0} connections were closed or failed")]
    AllConnectionsLost(usize),
    /// An echo scenario's first response differs from the request (escaped, truncated).
    #[error("the first response differs from the request (sent {expected:?}, got {got:?})")]
    NotEcho {
        /// Start of the request.
        expected: String,
        /// Start of the response.
        got: String,
    },
    /// The push fan-out workload saw something it cannot account for.
    #[error("fanout: {0}")]
    Fanout(String),
    /// Not a single response arrived during the whole run.
    #[error("no response arrived during the run")]
    NoResponse,
    /// The kernel or the server did something the generator cannot account for.
    #[error("unexpected: {0}")]
    Unexpected(&'static str),
    /// A load generator thread panicked.
    #[error("load generator thread {0} panicked")]
    ThreadPanicked(usize),
    /// TLS failed (`src/tls_gen.rs`): the client configuration, a handshake or a record the
    /// server sent, or the server negotiated other parameters than the ones offered.
    #[error("TLS {stage}: {detail}")]
    Tls {
        /// What was going on: `config`, `handshake`, `record`, `negotiated`.
        stage: &'static str,
        /// rustls's reason, or what was negotiated instead.
        detail: String,
    },
}

/// A failure to build, start or observe a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The server does not implement this scenario.
    #[error("{server} does not implement scenario {scenario}")]
    Unsupported {
        /// Server name.
        server: &'static str,
        /// Scenario name.
        scenario: &'static str,
    },
    /// A proxy was started without an upstream to forward to, or `fanout-redis` without a
    /// Redis.
    #[error("the proxy and fanout-redis scenarios need an upstream (ServerProc::start_proxy, start_fanout_redis)")]
    NoUpstream,
    /// The executable is not available.
    #[error("{0} not found on PATH")]
    NotInstalled(&'static str),
    /// Every loopback port outside the kernel's ephemeral range is taken or reserved.
    #[error("no free loopback port outside the ephemeral range (see ip_local_port_range)")]
    NoFreePort,
    /// `cargo build` of the peers workspace failed.
    #[error("building peers failed ({status}); log: {log}")]
    PeerBuild {
        /// Exit status of cargo.
        status: String,
        /// Path of the build log.
        log: PathBuf,
    },
    /// Spawning the process failed.
    #[error("spawning {program} failed: {source}")]
    Spawn {
        /// Program path.
        program: String,
        /// OS error.
        source: std::io::Error,
    },
    /// The process exited before it accepted connections.
    #[error("exited with {status} before listening; stderr: {stderr}")]
    Exited {
        /// Exit status.
        status: String,
        /// Last lines of stderr.
        stderr: String,
    },
    /// The process did not accept connections in time.
    #[error("did not accept connections on {0} within the start timeout")]
    StartTimeout(std::net::SocketAddr),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The `redis-server` the harness started did not do what was expected.
    #[error("redis-server: {0}")]
    Redis(String),
}

/// Any failure of a subcommand.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad command line.
    #[error(transparent)]
    Args(#[from] ArgError),
    /// Load generation failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A server could not be run.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Writing results failed.
    #[error("{path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Loading a `--target` failed.
    #[error(transparent)]
    Target(#[from] crate::target::TargetError),
    /// `run` and `compare` refuse a debug build of the harness.
    #[error("this is a debug build of ringman-bench; measurements need --release (cargo run --release -p ringman-bench -- ...)")]
    DebugBuild,
    /// A `redis-client` measurement failed (a command failed or answered something else).
    #[error("redis-client: {0}")]
    RedisClient(String),
    /// The goals file cannot be used.
    #[error(transparent)]
    Goals(#[from] crate::goals::GoalsError),
    /// Pinning the load generator to its CPU failed.
    #[error("sched_setaffinity(cpu {cpu}) failed: {source}")]
    Affinity {
        /// The CPU.
        cpu: usize,
        /// OS error.
        source: std::io::Error,
    },
}
