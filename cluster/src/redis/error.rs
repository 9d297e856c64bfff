//! The Redis client's errors.

use ringman_protocols::resp::{ErrorKind, OwnedServerError};

/// Why a Redis command produced no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RedisError {
    /// The server answered with an error reply (`-ERR ...`, `-WRONGTYPE ...`): its code
    /// and message, with [`OwnedServerError::kind`] for matching.
    #[error("redis: {0}")]
    Server(OwnedServerError),
    /// No answer within the command timeout. The command may still run on the server; its
    /// late answer is discarded.
    #[error("redis: no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection closed while the command was sent and unanswered: it may or may not
    /// have run.
    #[error("redis: connection lost before the answer")]
    Disconnected,
    /// Too many commands wait for a connection that is down.
    #[error("redis: {0} commands already wait for the connection")]
    Backlog(usize),
    /// The server's answer is not what the command returns (for the typed helpers).
    #[error("redis: unexpected answer: {0}")]
    Unexpected(String),
    /// A URL or option the client refuses.
    #[error("redis: bad configuration: {0}")]
    Config(String),
    /// Used off a ring thread (the client lives on the ring that created it).
    #[error("redis: not on the client's ring thread")]
    NotOnRing,
    /// The client was shut down.
    #[error("redis: client closed")]
    Closed,
}

impl RedisError {
    /// The kind of a server error reply, if this is one.
    pub fn server_kind(&self) -> Option<ErrorKind> {
        match self {
            RedisError::Server(e) => Some(e.kind()),
            _ => None,
        }
    }
}
