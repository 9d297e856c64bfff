//! WebSocket glue: the upgrade handshake between the protocol's decoder and user code.
//!
//! The `websocket://` decoder delivers the upgrade request head as a
//! [`MessageKind::Handshake`](ringman_protocols::MessageKind::Handshake) message. Here it is
//! parsed, offered to `on_websocket_connect` (which may refuse it, pick a subprotocol or
//! add headers), answered with `101 Switching Protocols` (or the refusal), and the
//! connection's encoder learns the negotiated compression. `on_websocket_connected` follows.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ringman_protocols::ws::{self, Accept, HandshakeRequest, WebSocket};
use ringman_protocols::{Message, MessageKind};

use super::{Callbacks, Worker};
use crate::connection::Connection;

/// What `on_websocket_connect` decides about an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsDecision {
    /// Accept, optionally choosing a subprotocol and adding response headers
    /// (compression is negotiated by the engine).
    Accept(Accept),
    /// Refuse with this HTTP status (for example 403); the connection is then closed.
    Reject(u16),
}

impl WsDecision {
    /// Accept with no subprotocol and no extra headers.
    pub fn accept() -> WsDecision {
        WsDecision::Accept(Accept::default())
    }
}

impl<S: Default + 'static> Worker<S> {
    /// Inspects an upgrade request (path, query, headers, origin, offered subprotocols)
    /// before the `101` is sent; returns whether and how to accept it.
    pub fn on_websocket_connect(
        &mut self,
        f: impl for<'r> Fn(&Connection, &HandshakeRequest<'r>, &mut S) -> WsDecision + Send + Sync + 'static,
    ) -> &mut Self {
        self.cb.on_websocket_connect = Some(std::sync::Arc::new(f));
        self
    }

    /// Runs after the `101` was queued: the connection now carries WebSocket messages.
    pub fn on_websocket_connected(&mut self, f: impl Fn(&Connection, &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_websocket_connected = Some(std::sync::Arc::new(f));
        self
    }

    /// Receives each ping's payload instead of the automatic pong (Workerman's
    /// `onWebSocketPing`): answering is then up to `f`.
    ///
    /// ```no_run
    /// use ringman_engine::{MessageKind, Worker};
    /// let mut w = Worker::<()>::new("websocket://127.0.0.1:8080").unwrap();
    /// w.on_websocket_ping(|conn, payload, _| {
    ///     // Liveness bookkeeping here, then the pong the client expects.
    ///     conn.send_as(payload, MessageKind::Pong);
    /// });
    /// ```
    pub fn on_websocket_ping(&mut self, f: impl Fn(&Connection, &[u8], &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_websocket_ping = Some(std::sync::Arc::new(f));
        self
    }

    /// Receives each pong's payload (Workerman's `onWebSocketPong`), for example to measure
    /// round trips of server pings sent with `send_as(payload, MessageKind::Ping)`.
    pub fn on_websocket_pong(&mut self, f: impl Fn(&Connection, &[u8], &mut S) + Send + Sync + 'static) -> &mut Self {
        self.cb.on_websocket_pong = Some(std::sync::Arc::new(f));
        self
    }

    /// The peer sent a close frame: `f` gets its status code and reason (Workerman's
    /// `onWebSocketClose`). The engine still echoes the close (or, when the server started
    /// the handshake with [`Connection::websocket_close`], just closes) after `f` returns;
    /// `on_close` follows when the connection is gone. To answer with a code of your own,
    /// call `websocket_close(code, reason)` inside `f`: that frame is then the echo.
    pub fn on_websocket_close(
        &mut self,
        f: impl Fn(&Connection, Option<u16>, &str, &mut S) + Send + Sync + 'static,
    ) -> &mut Self {
        self.cb.on_websocket_close = Some(std::sync::Arc::new(f));
        self
    }
}

/// Hands a received control frame to its callback.
pub(crate) fn control<S>(conn: &Connection, msg: &Message<'_>, cb: &Callbacks<S>, state: &mut S) {
    match msg.kind {
        MessageKind::Ping => {
            if let Some(f) = &cb.on_websocket_ping {
                f(conn, msg.data, state);
            }
        }
        MessageKind::Pong => {
            if let Some(f) = &cb.on_websocket_pong {
                f(conn, msg.data, state);
            }
        }
        MessageKind::Close => {
            if let Some(f) = &cb.on_websocket_close {
                let (code, reason) = match msg.data {
                    [a, b, rest @ ..] => (Some(u16::from_be_bytes([*a, *b])), std::str::from_utf8(rest).unwrap_or("")),
                    _ => (None, ""),
                };
                f(conn, code, reason, state);
            }
        }
        _ => {}
    }
}

/// Answers one upgrade request head.
pub(crate) fn handshake<S>(conn: &Connection, head: &[u8], cb: &Callbacks<S>, state: &mut S) {
    let req = match HandshakeRequest::parse(head) {
        Ok(r) => r,
        Err(e) => {
            conn.end(Some(&ws::reject_response(e.status())));
            return;
        }
    };
    let decision = match &cb.on_websocket_connect {
        Some(f) => match catch_unwind(AssertUnwindSafe(|| f(conn, &req, state))) {
            Ok(d) => d,
            Err(_) => WsDecision::Reject(500),
        },
        None => WsDecision::accept(),
    };
    let mut accept = match decision {
        WsDecision::Accept(a) => a,
        WsDecision::Reject(status) => {
            conn.end(Some(&ws::reject_response(status)));
            return;
        }
    };
    // The decoder negotiated exactly this when it read the head (same function, same input).
    let deflate_on = conn
        .protocol_object()
        .is_some_and(|p| p.as_any().and_then(|a| a.downcast_ref::<WebSocket>()).is_some_and(|w| w.deflate));
    accept.deflate = if deflate_on { ws::negotiate_deflate(&req) } else { None };
    conn.send_raw(ws::handshake_response(&req, &accept));
    conn.configure_encoder(&accept.deflate);
    conn.set_upgraded();
    if let Some(f) = &cb.on_websocket_connected {
        if catch_unwind(AssertUnwindSafe(|| f(conn, state))).is_err() {
            conn.destroy();
        }
    }
}

/// An outgoing `ws://` connection's upgrade was answered: the decoder validated the `101`
/// against this attempt's key. The encoder learns the negotiated compression, held messages
/// go out, and the connection's `on_websocket_connect` gets the response.
pub(crate) fn client_upgraded(conn: &Connection, head: &[u8]) {
    let Some(key) = conn.ws_client_key() else { return };
    let resp = match ringman_protocols::ws::validate_response(head, &key) {
        Ok(r) => r,
        // (The decoder accepted exactly this head with this key.)
        Err(_) => return,
    };
    conn.configure_encoder(&resp.deflate);
    conn.ws_client_upgraded();
    conn.run_websocket_connect_hook(&resp);
}
