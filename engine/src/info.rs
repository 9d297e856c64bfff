//! Snapshots for status tools: what a ring runs with, and one row per connection
//! (Workerman's `status` and `connections` output).

/// What a ring thread runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingInfo {
    /// Process-wide index of the ring thread.
    pub thread: u16,
    /// Setup flags the kernel accepted.
    pub mode: crate::ring::RingMode,
    /// Registered send chunks (16 KiB each); 0 means heap-only sends.
    pub fixed_send_chunks: usize,
    /// True when registered chunks go out with IORING_OP_SEND + IORING_RECVSEND_FIXED_BUF,
    /// false when with a plain IORING_OP_SEND (the kernel refused the fixed buffer).
    pub send_op_with_fixed_buffer: bool,
    /// Size of each provided receive buffer.
    pub recv_buffer_size: u32,
    /// The kernel consumes receive buffers in pieces (`Worker::recv_incremental` and 6.12).
    pub recv_incremental: bool,
    /// Connection slots in use (including closed ones waiting for completions).
    pub connections: usize,
}

/// One connection as listed by `connections` (Workerman's connection status output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Process-wide id.
    pub id: crate::id::ConnectionId,
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
    /// `ESTABLISHED`, `WS_CLOSING` (our WebSocket close frame sent, waiting for the peer's),
    /// `CLOSING`, `LINGERING` or `CLOSED`.
    pub status: &'static str,
    /// True while receiving is paused.
    pub paused: bool,
}
