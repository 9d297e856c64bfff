//! The connection handle user code holds (Workerman's `TcpConnection`).

use std::any::Any;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use bytes::Bytes;

use ringman_protocols::ws::HandshakeResponse;
use ringman_protocols::{Message, MessageKind};

use crate::error::ConnError;
use crate::hooks::Hooks;
use crate::id::ConnectionId;
use crate::mailbox::{post, Cmd, Enc};
use crate::reactor::{current_thread, with_core, ConnState, Core, SendStatus, Status};

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

/// The timeouts a connection runs with ([`Connection::timeouts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `idle_timeout` (`None`: never closed for being idle).
    pub idle: Option<std::time::Duration>,
    /// `packet_timeout` (`None`: a packet may take forever).
    pub packet: Option<std::time::Duration>,
    /// `close_timeout`: how long a graceful close may flush.
    pub close: std::time::Duration,
    /// `connect_timeout` of an outgoing connection; `None` for an accepted one.
    pub connect: Option<std::time::Duration>,
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

    fn local<R>(&self, f: impl FnOnce(&mut Core, usize) -> R) -> Option<R> {
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

    /// Sends shared bytes as [`Connection::send`] does, without copying them where it can:
    /// from another thread they travel by reference, and a large message (4 KiB or more)
    /// that goes on the wire as it is (a protocol whose encoder leaves bytes unchanged, no
    /// TLS) joins the send buffer by reference and is sent from where it lies.
    pub fn send_bytes(&self, data: Bytes) -> SendStatus {
        self.send_bytes_as(data, Enc::Default)
    }

    /// [`Connection::send_bytes`] bypassing the protocol's encoder (as
    /// [`Connection::send_raw`]).
    pub fn send_bytes_raw(&self, data: Bytes) -> SendStatus {
        self.send_bytes_as(data, Enc::Raw)
    }

    fn send_bytes_as(&self, data: Bytes, enc: Enc) -> SendStatus {
        if current_thread() == Some(self.id.thread()) {
            return with_core(|c| match c.lookup(self.id) {
                Some(k) => c.send_shared(k, data, enc),
                None => SendStatus::Failed,
            })
            .unwrap_or(SendStatus::Failed);
        }
        if post(self.id.thread(), Cmd::Send { conn: self.id, data, enc }) {
            SendStatus::Queued
        } else {
            SendStatus::Failed
        }
    }

    /// Sends `head` and then `body`, raw, as one send: on this connection's thread, when
    /// nothing waits before them, written at once with the file's pages handed to the
    /// socket by reference (see `reactor/through.rs`); else queued together.
    pub(crate) fn send_head_body(&self, head: &[u8], body: &crate::sendfile::FileBody<'_>) -> SendStatus {
        if current_thread() == Some(self.id.thread()) {
            return with_core(|c| match c.lookup(self.id) {
                Some(k) => c.send_head_body(k, head, body),
                None => SendStatus::Failed,
            })
            .unwrap_or(SendStatus::Failed);
        }
        let data = Bytes::from([head, &body.bytes[..]].concat());
        if post(self.id.thread(), Cmd::Send { conn: self.id, data, enc: Enc::Raw }) {
            SendStatus::Queued
        } else {
            SendStatus::Failed
        }
    }

    /// Sends `data` (if any), flushes the send buffer, then closes. A peer that stops reading
    /// is cut off after the worker's `close_timeout`. `on_close` fires once, when the
    /// connection is actually closed. An outgoing connection that is still being established
    /// is destroyed instead, with what it held (Workerman does the same).
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
        if !self.local(|c, k| c.conns[k].ws.is_some()).unwrap_or(false) {
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
        self.local(|c, k| c.start_ws_session(k));
    }

    /// True once [`Connection::websocket_close`] sent our close frame.
    pub(crate) fn ws_close_sent(&self) -> bool {
        self.local(|c, k| c.conns[k].status == Status::WsClosing).unwrap_or(false)
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
    /// sees it after the peer vanished). `None` for a Unix-domain connection, whose peer
    /// has no IP address (see [`Connection::unix_path`]).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.local(|c, k| c.conns[k].peer).flatten()
    }

    /// On a TLS connection whose peer presented a certificate that verified (mutual TLS,
    /// `TlsConfig::client_ca`; or the server's, on an outgoing connection), that
    /// certificate in DER; `None` otherwise, and before the handshake completed.
    pub fn tls_peer_certificate(&self) -> Option<Vec<u8>> {
        self.local(|c, k| c.conns[k].extra.as_ref()?.tls.as_ref()?.peer_certificate()).flatten()
    }

    /// The local address the connection was accepted on (`None` for a Unix-domain one).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local(|c, k| crate::sys::local_addr(c.conns[k].fd.as_fd())).flatten()
    }

    /// For a Unix-domain connection, the socket file it runs through: the one it was
    /// accepted on (a `unix://` worker's), or the one an outgoing connection reached. A
    /// Unix client's own end is normally unnamed, so this is the only address such a
    /// connection has. `None` for TCP connections (and once the connection is gone, or
    /// on another thread).
    pub fn unix_path(&self) -> Option<std::path::PathBuf> {
        self.local(|c, k| {
            let fd = c.conns[k].fd.as_fd();
            crate::sys::unix_path(fd, false).or_else(|| crate::sys::unix_path(fd, true))
        })
        .flatten()
    }

    /// The TCP keepalive the kernel applies to this connection's socket, read back from it
    /// (`getsockopt`): the values in effect, all three set; `None` when keepalive is off (or
    /// the connection is gone, or on another thread). See [`Keepalive`](crate::Keepalive).
    pub fn keepalive(&self) -> Option<crate::Keepalive> {
        self.local(|c, k| crate::config::Keepalive::of(&socket2::SockRef::from(&c.conns[k].fd))).flatten()
    }

    /// The socket's `TCP_USER_TIMEOUT` (how long sent data may stay unacknowledged before
    /// the connection is given up), `None` when unset (the kernel's retransmission limit
    /// applies). The engine sets it with a tuned [`Keepalive`](crate::Keepalive).
    pub fn tcp_user_timeout(&self) -> Option<std::time::Duration> {
        self.local(|c, k| socket2::SockRef::from(&c.conns[k].fd).tcp_user_timeout().ok().flatten()).flatten()
    }

    /// Bytes received so far.
    pub fn bytes_read(&self) -> u64 {
        self.local(|c, k| c.conns[k].bytes_read).unwrap_or(0)
    }

    /// Bytes the kernel accepted for sending so far.
    pub fn bytes_written(&self) -> u64 {
        self.local(|c, k| c.conns[k].bytes_written).unwrap_or(0)
    }

    /// Bytes waiting in the application send buffer (for an outgoing connection still being
    /// established, with the sends held until it is).
    pub fn send_queue_len(&self) -> usize {
        self.local(|c, k| c.conns[k].unsent()).unwrap_or(0)
    }

    /// True once the unsent bytes reach `max_send_buffer_size` (the next send would be
    /// refused); one look-up.
    /// The unsent bytes, or `None` when the connection is gone or closed (for futures).
    pub(crate) fn unsent_if_open(&self) -> Option<usize> {
        self.local(|c, k| (c.conns[k].status != Status::Closed).then(|| c.conns[k].unsent())).flatten()
    }

    /// True while the connection has a slot on the calling thread (whatever its state).
    pub(crate) fn is_known(&self) -> bool {
        self.local(|_, _| ()).is_some()
    }

    /// A future awaits this connection's drain: the engine queues the drain event for it
    /// (cleared when the event is delivered).
    pub(crate) fn await_drain(&self) {
        self.local(|c, k| c.conns[k].extra().hooks.drain_awaited = true);
    }

    pub(crate) fn send_queue_full(&self) -> bool {
        self.local(|c, k| c.conns[k].unsent() >= c.conns[k].max_send_buffer_size).unwrap_or(false)
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

    /// The timeouts this connection runs with (its worker's, and for an outgoing one its
    /// `connect_timeout`); `None` off its ring thread or once it is gone. Read-only.
    pub fn timeouts(&self) -> Option<Timeouts> {
        self.local(|c, k| Timeouts {
            idle: c.cfg.idle_timeout,
            packet: c.cfg.packet_timeout,
            close: c.cfg.close_timeout,
            connect: c.conns[k].dial().map(|d| d.opts.connect_timeout),
        })
    }

    /// The protocol name (`tcp`, `text`, `frame`, `http`, `websocket`, or a custom one).
    pub fn protocol(&self) -> Option<&'static str> {
        self.local(|c, k| c.protocol_name(k))
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
        self.set_value(|c| &mut c.context, Some(Box::new(value)));
    }

    /// Runs `f` on the per-connection value of type `T`, if one is set. The value is taken
    /// out while `f` runs, so `f` may freely use this and other connections.
    pub fn with_context<T: 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.with_value(|c| &mut c.context, f)
    }

    /// Stores (or with `None` clears) the engine's per-connection value for a response in
    /// progress (`http::send_file`), apart from the application's context.
    pub(crate) fn set_streaming<T: 'static>(&self, value: Option<T>) {
        self.set_value(|c| &mut c.extra().streaming, value.map(|v| Box::new(v) as Box<dyn Any>));
    }

    /// Runs `f` on the streaming value of type `T`, if one is set (see `with_context`).
    pub(crate) fn with_streaming<T: 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        self.with_value(|c| &mut c.extra().streaming, f)
    }

    fn set_value(&self, field: fn(&mut ConnState) -> &mut Option<Box<dyn Any>>, value: Option<Box<dyn Any>>) {
        // The previous value (or `value`, when the connection is gone) is dropped here, after
        // the core is released: its `Drop` may use connections and timers.
        let mut value = Some(value);
        let old = self.local(|c, k| std::mem::replace(field(&mut c.conns[k]), value.take().flatten()));
        drop((old, value));
    }

    fn with_value<T: 'static, R>(
        &self,
        field: fn(&mut ConnState) -> &mut Option<Box<dyn Any>>,
        f: impl FnOnce(&mut T) -> R,
    ) -> Option<R> {
        let mut boxed = self.local(|c, k| field(&mut c.conns[k]).take()).flatten()?;
        let r = boxed.downcast_mut::<T>().map(f);
        let mut back = Some(boxed);
        self.local(|c, k| {
            let slot = field(&mut c.conns[k]);
            if slot.is_none() {
                *slot = back.take();
            }
        });
        // A value not put back (replaced by `f`, or the connection is gone) is dropped here,
        // outside the core.
        drop(back);
        r
    }

    // ------------------------------------------------------------ per-connection callbacks

    /// This connection's own `on_connect` (Workerman's `$connection->onConnect = …`): for an
    /// outgoing connection, it runs once the connection is established (each time, after a
    /// reconnect). Like every per-connection callback it replaces the worker's for this
    /// connection only, runs on the connection's ring thread (so it need not be `Send`), and
    /// can only be set there: off that thread, or on a connection that is gone, nothing is
    /// set and the answer is false.
    pub fn on_connect(&self, f: impl FnMut(&Connection) + 'static) -> bool {
        self.set_hook(|h| &mut h.on_connect, wrap(f))
    }

    /// This connection's own `on_message` (Workerman's `$connection->onMessage = …`).
    pub fn on_message(&self, mut f: impl FnMut(&Connection, &Message<'_>) + 'static) -> bool {
        let hook: crate::hooks::IdMsgFn = Box::new(move |id, m: &Message<'_>| f(&Connection::from_id(id), m));
        self.set_hook(|h| &mut h.on_message, hook)
    }

    /// This connection's own `on_close`.
    pub fn on_close(&self, f: impl FnMut(&Connection) + 'static) -> bool {
        self.set_hook(|h| &mut h.on_close, wrap(f))
    }

    /// This connection's own `on_error` (an outgoing connection's CONNECT_FAIL comes here).
    pub fn on_error(&self, mut f: impl FnMut(&Connection, &ConnError) + 'static) -> bool {
        let hook: crate::hooks::IdErrFn = Box::new(move |id, e: &ConnError| f(&Connection::from_id(id), e));
        self.set_hook(|h| &mut h.on_error, hook)
    }

    /// This connection's own `on_buffer_full`.
    pub fn on_buffer_full(&self, f: impl FnMut(&Connection) + 'static) -> bool {
        self.set_hook(|h| &mut h.on_buffer_full, wrap(f))
    }

    /// This connection's own `on_buffer_drain` (it replaces a `pipe`'s, whose muting of
    /// drain events ends with it).
    pub fn on_buffer_drain(&self, f: impl FnMut(&Connection) + 'static) -> bool {
        let set = self.set_hook(|h| &mut h.on_buffer_drain, wrap(f));
        if set {
            self.mute_drain(false);
        }
        set
    }

    /// For a `ws://` client: runs when the server's `101` has been validated, with the
    /// response (chosen subprotocol, negotiated compression, headers). Messages sent before
    /// go out right after it. (Workerman's `onWebSocketConnect` of `AsyncTcpConnection`.)
    pub fn on_websocket_connect(&self, mut f: impl FnMut(&Connection, &HandshakeResponse<'_>) + 'static) -> bool {
        let hook: crate::hooks::IdWsFn = Box::new(move |id, r: &HandshakeResponse<'_>| f(&Connection::from_id(id), r));
        self.set_hook(|h| &mut h.on_websocket_connect, hook)
    }

    /// Forwards everything this connection receives to `dest` (sent with `dest`'s protocol),
    /// pausing this connection while `dest`'s send buffer is full and resuming it when that
    /// buffer has drained, and closes `dest` (after it flushed) when this connection closes
    /// (Workerman's `pipe()`; it sets this connection's `on_message` and `on_close` and
    /// `dest`'s `on_buffer_full` and `on_buffer_drain`). Both connections must live on the
    /// calling ring thread; a two-way proxy is `a.pipe(b)` and `b.pipe(a)`.
    pub fn pipe(&self, dest: Connection) -> bool {
        let src = *self;
        if current_thread() != Some(self.id.thread()) || current_thread() != Some(dest.id.thread()) {
            return false;
        }
        // Each direction's flow is this pipe's business: `dest`'s own back-pressure would stop
        // reading `dest` whenever this direction is congested, stalling the other one.
        dest.set_backpressure(false);
        // `dest` counts as full once its unsent bytes (held ones too, while it is still
        // connecting) reach its limit: the next send would be refused and its bytes lost.
        let full = move || dest.send_queue_full();
        // The source waits for `dest` to drain only while it is paused: until then `dest`'s
        // drain events (one per flushed send in batched mode) are not even queued.
        let hold = move |src: &Connection| {
            src.pause_recv();
            dest.mute_drain(false);
        };
        self.on_message(move |src, m| {
            dest.send(m.data);
            // Pause at once: `on_buffer_full` runs later, after more of what already arrived
            // would have been forwarded (and refused).
            if full() {
                hold(src);
            }
        }) && self.on_close(move |_| dest.close(None))
            && dest.on_buffer_full(move |_| hold(&src))
            // A drain event queued before the buffer filled again must not resume the source.
            && dest.set_hook(
                |h| &mut h.on_buffer_drain,
                wrap(move |d| {
                    if !full() {
                        src.resume_recv();
                        d.mute_drain(true);
                    }
                }),
            )
            && {
                dest.mute_drain(true);
                true
            }
    }

    /// Whether a full send buffer pauses this connection's receiving until it drained to
    /// half (default: the worker's `backpressure`, true; outgoing connections too). Turn it
    /// off for a connection whose input does not produce its output — `pipe` does so for its
    /// destination, since a proxy's two directions flow independently.
    pub fn set_backpressure(&self, on: bool) {
        self.local(|c, k| {
            let s = &mut c.conns[k];
            s.backpressure = on;
            if !on && s.paused {
                // A pause the engine made for back-pressure is lifted with it.
                c.lift_throttle(k);
            }
        });
    }

    /// Whether the connection's own `on_buffer_drain` is wanted (see `pipe`).
    pub(crate) fn mute_drain(&self, muted: bool) {
        self.local(|c, k| c.conns[k].drain_muted = muted);
    }

    /// For an outgoing connection: closes the current socket if it is open and connects
    /// again after `after`, with the same id, callbacks and context (Workerman's
    /// `reconnect()`). Call it from `on_close` or `on_error` to keep a client connected;
    /// `on_connect` runs again once it is. The dial starts on a later loop turn (after
    /// `after`, even when it is zero); sends made once `on_close` has returned are held for
    /// the new connection, while sends in between (the old connection is closed) answer
    /// `Failed`. [`Connection::cancel_reconnect`] during the delay gives up; so does `close()`
    /// or `destroy()` during the delay, which ends the waiting attempt (its `on_close` runs;
    /// a `reconnect` asked from then on starts a new delay). False for an
    /// accepted connection, or one that is gone (its `on_close` has returned).
    ///
    /// From another thread the call travels through the owning thread's mailbox (and
    /// answers true when it was posted).
    pub fn reconnect(&self, after: std::time::Duration) -> bool {
        if current_thread() == Some(self.id.thread()) {
            return self.local(|c, k| c.reconnect(k, after)).unwrap_or(false);
        }
        let conn = *self;
        post(
            self.id.thread(),
            Cmd::Call(Box::new(move || {
                conn.reconnect(after);
            })),
        )
    }

    /// Cancels a `reconnect` that has not dialled yet: the connection stays closed and its id
    /// names nothing from then on. (A connection closed during its reconnect delay has
    /// given that delay up already; a `reconnect` asked after the close is cancelled here.)
    ///
    /// From another thread the call travels through the owning thread's mailbox.
    pub fn cancel_reconnect(&self) {
        if current_thread() == Some(self.id.thread()) {
            self.local(|c, k| c.cancel_reconnect(k));
        } else {
            let conn = *self;
            post(self.id.thread(), Cmd::Call(Box::new(move || conn.cancel_reconnect())));
        }
    }

    /// The `Sec-WebSocket-Key` of an outgoing `ws://` connection's current attempt.
    pub(crate) fn ws_client_key(&self) -> Option<String> {
        self.local(|c, k| c.conns[k].dial().and_then(|d| Some(d.ws.as_ref()?.key.clone()))).flatten()
    }

    /// An outgoing `ws://` connection's upgrade completed.
    pub(crate) fn ws_client_upgraded(&self) {
        self.local(|c, k| c.ws_client_upgraded(k));
    }

    /// Runs the connection's `on_websocket_connect` (taken out while it runs).
    pub(crate) fn run_websocket_connect_hook(&self, resp: &HandshakeResponse<'_>) {
        let Some(mut f) = self.local(|c, k| c.conns[k].extra().hooks.on_websocket_connect.take()).flatten() else {
            return;
        };
        f(self.id, resp);
        let mut back = Some(f);
        self.local(|c, k| {
            let slot = &mut c.conns[k].extra().hooks.on_websocket_connect;
            if slot.is_none() {
                *slot = back.take();
            }
        });
        drop(back);
    }

    /// Installs a per-connection callback; the one it replaces is dropped outside the core.
    fn set_hook<T: 'static>(&self, field: fn(&mut Hooks) -> &mut Option<T>, f: T) -> bool {
        let mut f = Some(f);
        let old = self.local(|c, k| std::mem::replace(field(&mut c.conns[k].extra().hooks), f.take()));
        let set = f.is_none();
        drop((old, f));
        set
    }
}

/// A connection callback stored by id.
fn wrap(mut f: impl FnMut(&Connection) + 'static) -> crate::hooks::IdFn {
    Box::new(move |id| f(&Connection::from_id(id)))
}
