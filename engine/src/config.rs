//! The settings a worker's ring threads share (read-only once started). They live below the
//! core so that the state machines read them without knowing about `Worker`.

use std::sync::Arc;
use std::time::Duration;

use ringman_protocols::{MessageKind, Protocol};

/// How `send()` hands data to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// Submit at once and look for the completion before returning: `send()` can answer
    /// [`SendStatus::Sent`](crate::SendStatus::Sent), like Workerman's `true`. One
    /// `io_uring_enter` per send.
    Eager,
    /// Queue the send and submit all sends of a loop turn together: one `io_uring_enter`
    /// per turn, `send()` always answers `Queued`.
    Batched,
}

/// Settings shared by all threads of a worker (read-only once started).
pub(crate) struct WorkerConfig {
    pub name: String,
    pub protocol: Arc<dyn Protocol>,
    pub max_send_buffer_size: usize,
    pub max_package_size: usize,
    pub send_mode: SendMode,
    pub backpressure: bool,
    pub close_timeout: Duration,
    /// What a stop without its own timeout (`stop_all`) gives connections to flush.
    pub stop_timeout: Duration,
    pub default_kind: MessageKind,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub max_requests: Option<u64>,
    pub max_memory: Option<u64>,
    pub idle_timeout: Option<Duration>,
    pub packet_timeout: Option<Duration>,
    pub ping_interval: Option<Duration>,
    /// Handed to each new connection's `Decoder::configure` (WebSocket control frames).
    pub decoder_config: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// The worker has an `on_buffer_drain` (else the event is queued only for connections
    /// with their own).
    pub listens_for_drain: bool,
    /// The protocol answers a handshake before any message (the WebSocket server): messages
    /// sent before it is answered are held until then.
    pub handshake_first: bool,
    /// The worker's TLS server settings, loaded at start.
    pub tls: Option<crate::tls::ServerTls>,
}
