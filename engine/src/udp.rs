//! UDP handles: [`UdpConnection`] (one peer of a UDP socket, Workerman's `UdpConnection`)
//! and [`AsyncUdpConnection`] (a UDP client, Workerman's class of the same name).
//!
//! A `udp://` worker hands `on_datagram` a `UdpConnection` naming the sender; sending on it
//! answers that sender from the socket the datagram arrived on:
//!
//! ```no_run
//! use ringman_engine::{run_all, Server, Worker};
//! let mut w = Worker::<()>::new("udp://0.0.0.0:9000").unwrap();
//! w.on_datagram(|peer, msg, _| {
//!     peer.send(msg);
//! });
//! run_all(Server::new().add(w)).unwrap();
//! ```
//!
//! A client, on a ring thread:
//!
//! ```no_run
//! use ringman_engine::{AsyncUdpConnection, Worker};
//! use std::time::Duration;
//! let mut w = Worker::<()>::without_listener();
//! w.on_worker_start(|_, _| {
//!     let mut client = AsyncUdpConnection::new("udp://127.0.0.1:9000").unwrap();
//!     client.recv_timeout = Some(Duration::from_secs(2));
//!     let conn = client.connect().unwrap();
//!     conn.on_message(|c, msg| {
//!         println!("{}", String::from_utf8_lossy(msg.data));
//!         c.close();
//!     });
//!     conn.on_error(|_, e| eprintln!("{e}")); // RecvTimeout: no answer within 2 s
//!     conn.send("ping");
//! });
//! ```

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringman_protocols::{Message, MessageKind, Protocol};
use socket2::{Domain, Socket, Type};

use crate::addr::ListenSocket;
use crate::error::{ConnError, EngineError};
use crate::mailbox::{post, Cmd, Enc};
use crate::reactor::{
    current_thread, with_core, Role, SendStatus, UdpClient, UdpConnection, UdpErrFn, UdpFn, UdpMsgFn,
};

impl UdpConnection {
    /// Sends `data`, encoded with the socket's protocol (`text` appends the newline), as one
    /// datagram to this peer (a client's: to the address it connected to).
    ///
    /// * [`SendStatus::Sent`] — handed to the kernel, which took it (in
    ///   [`SendMode::Eager`](crate::SendMode) the SENDMSG is submitted at once and its
    ///   completion came back before `send` returned).
    /// * [`SendStatus::Queued`] — batched: the SENDMSG goes out with the loop turn's one
    ///   submit ([`SendMode::Batched`](crate::SendMode), the default), or the kernel has not
    ///   answered yet, or the call came from another thread (it travels through the owning
    ///   ring's mailbox). A refusal found later counts in `send_fail` (and reaches a
    ///   client's `on_error`).
    /// * [`SendStatus::Failed`] — the kernel refused the datagram (EMSGSIZE above the
    ///   protocol's maximum, ECONNREFUSED, ...; counted in
    ///   [`ThreadStats::send_fail`](crate::ThreadStats::send_fail)), or the socket is closed.
    ///
    /// UDP keeps no send buffer: nothing is retried, a datagram the network loses is lost.
    pub fn send(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Default)
    }

    /// Sends `data` as is, bypassing the protocol's encoder.
    pub fn send_raw(&self, data: impl AsRef<[u8]>) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Raw)
    }

    /// Sends a message of the given kind (the kind matters only to protocols that encode it).
    pub fn send_as(&self, data: impl AsRef<[u8]>, kind: MessageKind) -> SendStatus {
        self.send_impl(data.as_ref(), Enc::Kind(kind))
    }

    fn send_impl(&self, data: &[u8], enc: Enc) -> SendStatus {
        if current_thread() == Some(self.thread) {
            return with_core(|c| c.udp_send(self, data, enc)).unwrap_or(SendStatus::Failed);
        }
        let (me, data) = (*self, Bytes::copy_from_slice(data));
        let call = move || {
            me.send_impl(&data, enc);
        };
        if post(self.thread, Cmd::Call(Box::new(call))) {
            SendStatus::Queued
        } else {
            SendStatus::Failed
        }
    }

    /// The peer: the sender of the datagram (a worker's), or the address a client connected to.
    pub fn remote_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The socket's local address (`None` off its ring thread or once closed).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        with_core(|c| c.udp_local_addr(self)).flatten()
    }

    /// The ring thread that owns the socket.
    pub fn thread(&self) -> u16 {
        self.thread
    }

    /// Whether the socket is open (on its ring thread; `false` elsewhere).
    pub fn is_open(&self) -> bool {
        with_core(|c| c.udp_is_open(self)).unwrap_or(false)
    }

    /// Closes a client's socket: its receive is cancelled, datagrams in flight complete,
    /// then the descriptor closes; `on_close` runs once. On a worker's peer this does
    /// nothing (the worker's socket serves every peer; Workerman's `close` on a UDP peer
    /// closes nothing either). From another thread the call travels through the mailbox.
    pub fn close(&self) {
        if current_thread() == Some(self.thread) {
            with_core(|c| c.udp_close(self));
        } else {
            let me = *self;
            post(self.thread, Cmd::Call(Box::new(move || me.close())));
        }
    }

    /// A client's own `on_message`: each message of each datagram the peer sends. False
    /// when this is not an open client on the calling thread.
    pub fn on_message(&self, f: impl FnMut(&UdpConnection, &Message<'_>) + 'static) -> bool {
        let mut f: Option<UdpMsgFn> = Some(Box::new(f));
        // The callback it replaces (or the new one, refused) is dropped outside the core.
        let old = with_core(|c| c.udp_hooks(self).map(|h| std::mem::replace(&mut h.on_message, f.take())));
        f.is_none() && old.is_some()
    }

    /// A client's own `on_error`: a receive or send the kernel failed (`ConnError::Io`,
    /// for example ECONNREFUSED when nothing listens on the peer's port; the socket stays
    /// open), or the receive timeout ([`ConnError::RecvTimeout`], then the socket closes).
    pub fn on_error(&self, f: impl FnMut(&UdpConnection, &ConnError) + 'static) -> bool {
        let mut f: Option<UdpErrFn> = Some(Box::new(f));
        let old = with_core(|c| c.udp_hooks(self).map(|h| std::mem::replace(&mut h.on_error, f.take())));
        f.is_none() && old.is_some()
    }

    /// A client's own `on_close`: runs once, after `close()` or the receive timeout, or when
    /// its ring stops.
    pub fn on_close(&self, f: impl FnMut(&UdpConnection) + 'static) -> bool {
        let mut f: Option<UdpFn> = Some(Box::new(f));
        let old = with_core(|c| c.udp_hooks(self).map(|h| std::mem::replace(&mut h.on_close, f.take())));
        f.is_none() && old.is_some()
    }
}

/// A UDP client to be opened (Workerman's `AsyncUdpConnection`): the peer, its protocol and
/// options. [`AsyncUdpConnection::connect`] opens a connected UDP socket on the calling ring
/// thread and returns its [`UdpConnection`]; set its callbacks there (`on_message`,
/// `on_error`, `on_close`) before returning to the loop.
#[derive(Clone)]
pub struct AsyncUdpConnection {
    peer: SocketAddr,
    protocol: Arc<dyn Protocol>,
    /// How long a send waits for an answer (default none: forever). A send starts the wait
    /// when none runs; any datagram received ends it. When it passes, `on_error` gets
    /// [`ConnError::RecvTimeout`] and the client closes (`on_close`).
    pub recv_timeout: Option<Duration>,
    /// Local address to bind before connecting (default: any address, a free port).
    pub bind: Option<SocketAddr>,
}

impl AsyncUdpConnection {
    /// A client of `udp://host:port` (raw datagrams). The name is resolved here, with the
    /// system's resolver (a blocking call: on a ring thread, prefer an IP address).
    pub fn new(addr: &str) -> Result<AsyncUdpConnection, EngineError> {
        AsyncUdpConnection::with_protocol(addr, Arc::new(ringman_protocols::Raw))
    }

    /// A client of `udp://host:port` speaking `protocol` over datagrams (for example
    /// `ringman_protocols::Text`: each send is one line, each line of an answer a message).
    pub fn with_protocol(addr: &str, protocol: Arc<dyn Protocol>) -> Result<AsyncUdpConnection, EngineError> {
        let bad = |reason| EngineError::BadAddress { addr: addr.to_string(), reason };
        let rest = addr.strip_prefix("udp://").ok_or_else(|| bad("expected udp://host:port"))?;
        let peer = rest
            .to_socket_addrs()
            .map_err(|_| bad("expected host:port (IPv6 as [::1]:port)"))?
            .next()
            .ok_or_else(|| bad("address resolves to nothing"))?;
        Ok(AsyncUdpConnection { peer, protocol, recv_timeout: None, bind: None })
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Opens the socket on the calling ring thread: bound (to `bind`, or any address) and
    /// connected to the peer, so it receives only the peer's datagrams. Off a ring thread it
    /// is [`EngineError::NotOnRingThread`]; on a ring that is stopping,
    /// [`EngineError::Stopping`].
    pub fn connect(&self) -> Result<UdpConnection, EngineError> {
        if current_thread().is_none() {
            return Err(EngineError::NotOnRingThread);
        }
        if with_core(|c| c.stopping.is_some()).unwrap_or(false) {
            // (Its stop has closed this ring's UDP sockets already: a new one would outlive it.)
            return Err(EngineError::Stopping);
        }
        let s =
            Socket::new(Domain::for_address(self.peer), Type::DGRAM.cloexec(), None).map_err(EngineError::Socket)?;
        let local = self.bind.unwrap_or(match self.peer {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        });
        s.bind(&local.into()).map_err(EngineError::Socket)?;
        s.connect(&self.peer.into()).map_err(EngineError::Socket)?;
        let client = UdpClient::new(self.peer, self.recv_timeout);
        let protocol = self.protocol.clone();
        with_core(|c| c.udp_open(Arc::new(ListenSocket::udp(s.into())), protocol, Role::Client(Box::new(client))))
            .ok_or(EngineError::NotOnRingThread)?
            .map_err(EngineError::Socket)
    }
}
