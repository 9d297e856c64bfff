//! The callbacks of a worker, shared by all its threads.

use std::sync::Arc;

use ringman_protocols::Message;

use super::websocket::WsDecision;
use super::WorkerInfo;
use crate::connection::Connection;
use crate::error::ConnError;
use crate::reactor::UdpConnection;

pub(super) type StartFn<S> = Arc<dyn Fn(&WorkerInfo, &mut S) + Send + Sync>;
pub(super) type ConnFn<S> = Arc<dyn Fn(&Connection, &mut S) + Send + Sync>;
pub(super) type MsgFn<S> = Arc<dyn Fn(&Connection, &Message<'_>, &mut S) + Send + Sync>;
pub(super) type ErrFn<S> = Arc<dyn Fn(&Connection, &ConnError, &mut S) + Send + Sync>;
pub(super) type DatagramFn<S> = Arc<dyn Fn(&UdpConnection, &Message<'_>, &mut S) + Send + Sync>;
pub(super) type DataFn<S> = Arc<dyn Fn(&Connection, &[u8], &mut S) + Send + Sync>;
pub(super) type WsCloseFn<S> = Arc<dyn Fn(&Connection, Option<u16>, &str, &mut S) + Send + Sync>;
pub(super) type WsConnectFn<S> =
    Arc<dyn for<'r> Fn(&Connection, &ringman_protocols::ws::HandshakeRequest<'r>, &mut S) -> WsDecision + Send + Sync>;

pub(crate) struct Callbacks<S> {
    pub(super) on_worker_start: Option<StartFn<S>>,
    pub(super) on_worker_stop: Option<StartFn<S>>,
    pub(super) on_connect: Option<ConnFn<S>>,
    pub(super) on_message: Option<MsgFn<S>>,
    pub(super) on_datagram: Option<DatagramFn<S>>,
    pub(super) on_close: Option<ConnFn<S>>,
    pub(super) on_error: Option<ErrFn<S>>,
    pub(super) on_buffer_full: Option<ConnFn<S>>,
    pub(super) on_buffer_drain: Option<ConnFn<S>>,
    pub(super) on_websocket_connect: Option<WsConnectFn<S>>,
    pub(super) on_websocket_connected: Option<ConnFn<S>>,
    pub(super) on_websocket_ping: Option<DataFn<S>>,
    pub(super) on_websocket_pong: Option<DataFn<S>>,
    pub(super) on_websocket_close: Option<WsCloseFn<S>>,
}

impl<S> Callbacks<S> {
    /// The WebSocket control frames user callbacks want delivered, if any.
    pub(super) fn control_frames(&self) -> Option<ringman_protocols::ws::ControlFrames> {
        let c = ringman_protocols::ws::ControlFrames {
            pings: self.on_websocket_ping.is_some(),
            pongs: self.on_websocket_pong.is_some(),
            close: self.on_websocket_close.is_some(),
        };
        (c != Default::default()).then_some(c)
    }
}

impl<S> Default for Callbacks<S> {
    fn default() -> Self {
        Callbacks {
            on_worker_start: None,
            on_worker_stop: None,
            on_connect: None,
            on_message: None,
            on_datagram: None,
            on_close: None,
            on_error: None,
            on_buffer_full: None,
            on_buffer_drain: None,
            on_websocket_connect: None,
            on_websocket_connected: None,
            on_websocket_ping: None,
            on_websocket_pong: None,
            on_websocket_close: None,
        }
    }
}
