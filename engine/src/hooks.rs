//! Per-connection callbacks (Workerman's `$connection->onMessage = …`): they override the
//! worker's for one connection, accepted or outgoing. They live in the connection's slot on
//! its ring thread, so they need not be `Send`; they are stored here by id (the handle layer
//! wraps them), which keeps the core free of the handle type.

use ringman_protocols::ws::HandshakeResponse;
use ringman_protocols::Message;

use crate::error::ConnError;
use crate::id::ConnectionId;

/// A callback on a connection.
pub(crate) type IdFn = Box<dyn FnMut(ConnectionId)>;
/// A message callback.
pub(crate) type IdMsgFn = Box<dyn for<'a> FnMut(ConnectionId, &Message<'a>)>;
/// An error callback.
pub(crate) type IdErrFn = Box<dyn FnMut(ConnectionId, &ConnError)>;
/// A WebSocket client's upgrade-answered callback.
pub(crate) type IdWsFn = Box<dyn for<'a> FnMut(ConnectionId, &HandshakeResponse<'a>)>;

/// The callbacks one connection overrides; `None` falls back to the worker's (accepted
/// connections) or to nothing (outgoing connections, which have no worker callbacks).
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_connect: Option<IdFn>,
    pub(crate) on_message: Option<IdMsgFn>,
    pub(crate) on_close: Option<IdFn>,
    pub(crate) on_error: Option<IdErrFn>,
    pub(crate) on_buffer_full: Option<IdFn>,
    pub(crate) on_buffer_drain: Option<IdFn>,
    pub(crate) on_websocket_connect: Option<IdWsFn>,
    /// `on_buffer_drain` is taken out because it runs: it still listens (a send it makes
    /// that drains at once owes it the next drain event).
    pub(crate) drain_running: bool,
    /// A future awaits the send buffer's drain (`Connection::drained`).
    pub(crate) drain_awaited: bool,
}

/// Which callback of [`Hooks`] (for taking one out while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Connect,
    Close,
    BufferFull,
    BufferDrain,
}

impl Hooks {
    /// The slot of a plain connection callback.
    pub(crate) fn slot(&mut self, hook: Hook) -> &mut Option<IdFn> {
        match hook {
            Hook::Connect => &mut self.on_connect,
            Hook::Close => &mut self.on_close,
            Hook::BufferFull => &mut self.on_buffer_full,
            Hook::BufferDrain => &mut self.on_buffer_drain,
        }
    }
}
