//! The connection handle user code holds (Workerman's `TcpConnection`).

use std::net::SocketAddr;

use bytes::Bytes;

use ringman_protocols::MessageKind;

use crate::reactor::{current_thread, with_core, Enc, Status};
use crate::server::{post, Cmd};

/// What `send()` did with the data (Workerman's `true` / `null` / `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// The write was submitted and its completion came back in full before `send()`
    /// returned: the bytes are in the kernel's socket buffer (Workerman's `true`).
    Sent,
    /// The bytes are in the connection's application buffer (registered memory when
    /// available) and the ring drains it (Workerman's `null`). Always the answer for a
    /// connection owned by another thread, or in [`SendMode::Batched`](crate::SendMode).
    Queued,
    /// Nothing was queued: the connection is closing or closed, or the bytes of earlier
    /// sends that the kernel has not taken yet were already at `max_send_buffer_size`
    /// (Workerman's check-before-append rule; bytes not yet offered to the kernel are offered
    /// first, so batching never refuses what a direct write would have taken). Then
    /// `on_error` reports SEND_FAIL, the worker's `send_fail` counter grows and the
    /// connection stays open. Workerman's `false`.
    Failed,
}

impl SendStatus {
    /// True unless the data was dropped.
    pub fn is_ok(self) -> bool {
        self != SendStatus::Failed
    }
}

/// Identifies a connection across all ring threads of the process, for the life of the
/// process (Workerman's `$connection->id`).
///
/// The number ([`ConnectionId::as_u64`]) is ring thread (16 bits) | serial (48 bits). Serials
/// come from one process-wide counter (each ring reserves them in blocks), so no two
/// connections of a process ever share an id — not across ring restarts, recycles, or
/// servers started one after another. The counter would wrap after 2^48 accepts (about
/// 9 years at a million accepts per second), so a stale id can never name a later
/// connection in practice. Ids the engine hands out also carry the connection's slot, so
/// looking one up is an index; an id rebuilt with [`ConnectionId::from_u64`] is found
/// through a per-ring map instead.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionId {
    serial: u64,
    slot: u32,
}

/// `slot` of an id rebuilt from its number: look it up by serial.
const NO_SLOT: u32 = u32::MAX;

impl ConnectionId {
    pub(crate) fn new(serial: u64, slot: usize) -> ConnectionId {
        ConnectionId { serial, slot: slot as u32 }
    }
    pub(crate) fn thread(self) -> u16 {
        (self.serial >> 48) as u16
    }
    /// The slot, when the id carries one.
    pub(crate) fn slot(self) -> Option<usize> {
        (self.slot != NO_SLOT).then_some(self.slot as usize)
    }
    pub(crate) fn serial(self) -> u64 {
        self.serial
    }
    /// The id as a number (unique in the process, never reused).
    pub fn as_u64(self) -> u64 {
        self.serial
    }
    /// Rebuilds an id from [`ConnectionId::as_u64`] (for example one kept in another
    /// service): it names the same connection, and nothing once that connection is gone.
    pub fn from_u64(v: u64) -> ConnectionId {
        ConnectionId { serial: v, slot: NO_SLOT }
    }
}

impl PartialEq for ConnectionId {
    fn eq(&self, other: &Self) -> bool {
        self.serial == other.serial
    }
}
impl Eq for ConnectionId {}
impl std::hash::Hash for ConnectionId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.serial.hash(h);
    }
}
impl PartialOrd for ConnectionId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ConnectionId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.serial.cmp(&other.serial)
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.serial)
    }
}

/// A handle to one connection. It is `Copy`, can be stored (in a timer, in another
/// connection's context, in a map of users) and used later; once the connection is gone
/// every call is a harmless no-op (`send` answers [`SendStatus::Failed`]).
///
/// On the ring thread that owns the connection every method acts directly. From any other
/// thread, `send`, `close` and `destroy` travel through that thread's mailbox (`send` then
/// answers `Queued`), and the getters answer `None` / 0.
///
/// ```no_run
/// # use ringman_engine::Worker;
/// let mut w = Worker::<()>::new("text://127.0.0.1:8000").unwrap();
/// w.on_message(|conn, msg, _| {
///     conn.send(msg);
/// });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection {
    id: ConnectionId,
}

impl Connection {
    /// A handle for a connection id (for example one received from another thread).
    pub fn from_id(id: ConnectionId) -> Connection {
        Connection { id }
    }

    /// The process-wide unique id.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    fn local<R>(&self, f: impl FnOnce(&mut crate::reactor::Core, usize) -> R) -> Option<R> {
        if current_thread() != Some(self.id.thread()) {
            return None;
        }
        // `f` may own a user value (`set_context`): when the connection is gone it is
        // dropped here, after the core is released, not inside the borrow.
        let mut f = Some(f);
        let r = with_core(|c| c.lookup(self.id).map(|k| (f.take().expect("called once"))(c, k))).flatten();
        drop(f);
        r
    }

    /// Encodes `data` with the connection's protocol and sends it.
    /// The message kind is the connection's default (see [`Connection::set_default_kind`]).
    pub fn send(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Default)
    }

    /// Sends `data` as is, bypassing the protocol's encoder.
    pub fn send_raw(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Raw)
    }

    /// Sends a text message (WebSocket opcode 0x1; other protocols ignore the kind).
    pub fn send_text(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Kind(MessageKind::Text))
    }

    /// Sends a binary message (WebSocket opcode 0x2; other protocols ignore the kind).
    pub fn send_binary(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Kind(MessageKind::Binary))
    }

    /// Sends a message of the given kind.
    pub fn send_as(&self, data: impl AsRef<[u8]>, kind: MessageKind) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Kind(kind))
    }

    /// The kind `send` uses (the worker's default: text).
    pub fn set_default_kind(&self, kind: MessageKind) {
        self.local(|c, k| c.conns[k].default_kind = kind);
    }

    fn send_impl(&self, data: &[u8], enc: Enc) -> SendStatus {
        if current_thread() == Some(self.id.thread()) {
            return with_core(|c| match c.lookup(self.id) {
                Some(k) => c.send(k, data, enc),
                None => SendStatus::Failed,
            })
            .unwrap_or(SendStatus::Failed);
        }
        let cmd = Cmd::Send { conn: self.id, data: Bytes::copy_from_slice(data), enc };
        if post(self.id.thread(), cmd) {
            SendStatus::Queued
        } else {
            SendStatus::Failed
        }
    }

    /// Sends shared bytes; from another thread this avoids a copy.
    pub fn send_bytes(&self, data: Bytes) -> SendStatus {
        if current_thread() == Some(self.id.thread()) {
            return self.send(&data);
        }
        if post(self.id.thread(), Cmd::Send { conn: self.id, data, enc: Enc::Default }) {
            SendStatus::Queued
        } else {
            SendStatus::Failed
        }
    }

    /// Sends `data` (if any), flushes the send buffer, then closes. A peer that stops reading
    /// is cut off after the worker's `close_timeout`. `on_close` fires once, when the
    /// connection is actually closed.
    pub fn close(&self, data: Option<&[u8]>) {
        if current_thread() == Some(self.id.thread()) {
            self.local(|c, k| c.close(k, data));
        } else {
            post(self.id.thread(), Cmd::Close { conn: self.id, data: data.map(Bytes::copy_from_slice) });
        }
    }

    /// Starts the WebSocket closing handshake (RFC 6455 §7): sends a close frame with `code`
    /// and `reason` (cut to fit 125 bytes), then waits for the peer's close frame and closes;
    /// a peer that does not answer is cut off after the worker's `close_timeout`. Messages
    /// that arrive meanwhile are still delivered; nothing more is sent after the close frame.
    /// On other protocols this is [`Connection::close`].
    ///
    /// ```no_run
    /// # let conn: ringman_engine::Connection = unimplemented!();
    /// conn.websocket_close(1001, "server restarting");
    /// ```
    pub fn websocket_close(&self, code: u16, reason: &str) {
        if current_thread() != Some(self.id.thread()) {
            let (conn, reason) = (*self, reason.to_owned());
            post(self.id.thread(), Cmd::Call(Box::new(move || conn.websocket_close(code, &reason))));
            return;
        }
        // Before the upgrade (or on another protocol) there is no WebSocket to close.
        if !self.local(|c, k| c.conns[k].upgraded).unwrap_or(false) {
            self.close(None);
            return;
        }
        let mut payload = Vec::with_capacity(125);
        payload.extend_from_slice(&code.to_be_bytes());
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        if self.send_as(&payload, MessageKind::Close) == SendStatus::Failed {
            // The send buffer is full (or the connection is going): no handshake possible.
            self.close(None);
            return;
        }
        self.local(|c, k| c.start_ws_close(k));
    }

    /// The WebSocket handshake answer is queued: frames (heartbeats, a close) may follow.
    pub(crate) fn set_upgraded(&self) {
        self.local(|c, k| c.conns[k].upgraded = true);
    }

    /// True once [`Connection::websocket_close`] sent our close frame.
    pub(crate) fn ws_close_sent(&self) -> bool {
        self.local(|c, k| c.conns[k].ws_close_sent).unwrap_or(false)
    }

    /// Sends `data` as is, flushes, then half-closes and lingers briefly before closing, so
    /// the peer reads the last bytes rather than a reset (Workerman 5.2's `end()`).
    ///
    /// From another thread the call travels through the owning thread's mailbox.
    pub fn end(&self, data: Option<&[u8]>) {
        if current_thread() == Some(self.id.thread()) {
            self.local(|c, k| c.end(k, data));
        } else {
            let (conn, data) = (*self, data.map(<[u8]>::to_vec));
            post(self.id.thread(), Cmd::Call(Box::new(move || conn.end(data.as_deref()))));
        }
    }

    /// Closes at once, dropping anything still queued. `on_close` fires once.
    pub fn destroy(&self) {
        if current_thread() == Some(self.id.thread()) {
            self.local(|c, k| c.destroy(k, None));
        } else {
            post(self.id.thread(), Cmd::Destroy { conn: self.id });
        }
    }

    /// Stops reading from the socket (and delivering messages) until [`Connection::resume_recv`].
    /// Bytes that were already in flight are kept and delivered after resuming.
    ///
    /// From another thread the call travels through the owning thread's mailbox (it takes
    /// effect when that thread reaches it).
    pub fn pause_recv(&self) {
        if current_thread() == Some(self.id.thread()) {
            self.local(|c, k| c.user_pause(k));
        } else {
            let conn = *self;
            post(self.id.thread(), Cmd::Call(Box::new(move || conn.pause_recv())));
        }
    }

    /// Resumes reading after [`Connection::pause_recv`].
    /// From another thread the call travels through the owning thread's mailbox.
    pub fn resume_recv(&self) {
        if current_thread() == Some(self.id.thread()) {
            self.local(|c, k| c.resume(k));
        } else {
            let conn = *self;
            post(self.id.thread(), Cmd::Call(Box::new(move || conn.resume_recv())));
        }
    }

    /// True while the connection is established (not closing or closed).
    pub fn is_open(&self) -> bool {
        self.local(|c, k| c.conns[k].status == Status::Established).unwrap_or(false)
    }

    /// The peer's address (read when the connection was accepted, so `on_close` still
    /// sees it after the peer vanished).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.local(|c, k| c.conns[k].peer).flatten()
    }

    /// The local address the connection was accepted on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local(|c, k| crate::sys::local_addr(c.conns[k].fd)).flatten()
    }

    /// Bytes received so far.
    pub fn bytes_read(&self) -> u64 {
        self.local(|c, k| c.conns[k].bytes_read).unwrap_or(0)
    }

    /// Bytes the kernel accepted for sending so far.
    pub fn bytes_written(&self) -> u64 {
        self.local(|c, k| c.conns[k].bytes_written).unwrap_or(0)
    }

    /// Bytes waiting in the application send buffer.
    pub fn send_queue_len(&self) -> usize {
        self.local(|c, k| c.conns[k].queued()).unwrap_or(0)
    }

    /// The send buffer limit of this connection (default: the worker's, 1 MiB).
    pub fn max_send_buffer_size(&self) -> usize {
        self.local(|c, k| c.conns[k].max_send_buffer_size).unwrap_or(0)
    }

    /// Changes the send buffer limit of this connection.
    pub fn set_max_send_buffer_size(&self, bytes: usize) {
        self.local(|c, k| c.conns[k].max_send_buffer_size = bytes);
    }

    /// The largest packet this connection accepts (default: the worker's, 10 MiB).
    pub fn max_package_size(&self) -> usize {
        self.local(|c, k| c.conns[k].max_package_size).unwrap_or(0)
    }

    /// Changes the packet limit of this connection.
    pub fn set_max_package_size(&self, bytes: usize) {
        self.local(|c, k| c.conns[k].max_package_size = bytes);
    }

    /// The protocol name (`tcp`, `text`, `frame`, ...).
    pub fn protocol(&self) -> Option<&'static str> {
        self.local(|c, _| c.cfg.protocol.name())
    }

    /// The worker's protocol object.
    pub(crate) fn protocol_object(&self) -> Option<std::sync::Arc<dyn ringman_protocols::Protocol>> {
        self.local(|c, _| c.cfg.protocol.clone())
    }

    /// Name of the worker this connection belongs to.
    pub fn worker_name(&self) -> Option<String> {
        self.local(|c, _| c.cfg.name.clone())
    }

    /// Hands negotiated settings to the connection's encoder (see `Encoder::configure`).
    pub fn configure_encoder(&self, cfg: &dyn std::any::Any) {
        self.local(|c, k| c.configure_encoder(k, cfg));
    }

    /// Stores a per-connection user value (replacing any previous one).
    pub fn set_context<T: 'static>(&self, value: T) {
        // The previous value is dropped here, after the core is released: its `Drop` may use
        // connections and timers.
        let _old = self.local(|c, k| c.conns[k].context.replace(Box::new(value)));
    }

    /// Runs `f` on the per-connection value of type `T`, if one is set. The value is taken
    /// out while `f` runs, so `f` may freely use this and other connections.
    pub fn with_context<T: 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut boxed = self.local(|c, k| c.conns[k].context.take()).flatten()?;
        let r = boxed.downcast_mut::<T>().map(f);
        let mut back = Some(boxed);
        self.local(|c, k| {
            let slot = &mut c.conns[k].context;
            if slot.is_none() {
                *slot = back.take();
            }
        });
        // A value not put back (replaced by `f`, or the connection is gone) is dropped here,
        // outside the core.
        drop(back);
        r
    }
}
