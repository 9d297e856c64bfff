//! The connect state machine (outgoing connections, Workerman's `AsyncTcpConnection`): a
//! slot in the same slab as accepted connections, its name resolved off the ring,
//! `IORING_OP_CONNECT` on its socket, the connect timeout (the slot's close deadline), the
//! upgrade of a `ws://` client, and reconnecting in the same slot (so the id stays valid).
//!
//! ```text
//!  connect() ─► Connecting ─(name resolved, CONNECT ok[, TLS handshake])─► Connect event ─(ws: 101)─► Established
//!                   │  sends are held                         (ws: upgrade request sent)
//!                   └─ refused / timed out / name not found ─► on_error(CONNECT_FAIL), on_close
//!  reconnect(after): the slot, once its on_close ran, gets a fresh socket and dials again
//! ```
//!
//! Through a proxy, the dial resolves and connects to the proxy instead, and the tunnel is
//! negotiated (`proxy.rs`) before the `Connect` event: the rest is as for a direct dial.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types};
use ringman_protocols::ws::{client_handshake_request, generate_key, WsDecoder, WsEncoder, DEFLATE_OFFER};
use ringman_protocols::{Decoder, Encoder, Framer, Protocol};
use socket2::{SockAddr, Socket, Type};

use super::proxy::{Handshake, ProxySpec};
use super::send::{enqueue, SendQueue};
use super::slot::{ConnState, WsSession};
use super::{gen_of, Core, Event, Status};
use crate::error::{panic_message, ConnError, ConnectError, EngineError};
use crate::id::ConnectionId;
use crate::ring::{Kind, Token};
use crate::timers::TimerId;

/// Socket options of an outgoing connection.
#[derive(Debug, Clone)]
pub(crate) struct DialOptions {
    pub(crate) connect_timeout: Duration,
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) nodelay: bool,
    pub(crate) keepalive: Option<crate::config::Keepalive>,
}

/// What a `ws://` client offers in its upgrade request.
#[derive(Debug, Clone, Default)]
pub(crate) struct WsOffer {
    /// Extra header fields (CR/LF-carrying ones are skipped).
    pub(crate) headers: Vec<(String, String)>,
    /// Subprotocols offered in `Sec-WebSocket-Protocol`.
    pub(crate) protocols: Vec<String>,
    /// Offer permessage-deflate.
    pub(crate) deflate: bool,
    /// Heartbeat interval once upgraded.
    pub(crate) ping_interval: Option<Duration>,
    /// The `Sec-WebSocket-Key` of the current attempt.
    pub(crate) key: String,
}

/// The dialing state of an outgoing connection, kept for its whole life (reconnects dial
/// again from it).
pub(crate) struct Dial {
    /// Host as given (a name or an address literal), port, and the `ws://` path.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
    pub(crate) opts: DialOptions,
    /// The protocol of a non-WebSocket connection (fresh parsers per attempt).
    pub(crate) protocol: Arc<dyn Protocol>,
    pub(crate) ws: Option<WsOffer>,
    /// TLS over the connection (`wss://`, `ssl://`): its client configuration.
    pub(crate) tls: Option<crate::tls::ClientSetup>,
    /// The proxy the tunnel goes through (the dial connects to it, not to `host`).
    pub(crate) proxy: Option<ProxySpec>,
    /// This attempt's negotiation with the proxy, while it runs.
    pub(crate) handshake: Option<Box<Handshake>>,
    /// `unix://`: the socket file to connect to (`host` holds it as text, `port` is 0).
    pub(crate) unix: Option<std::path::PathBuf>,
    /// Addresses the name resolved to, and the one being tried (the next is tried when
    /// one refuses: `localhost` may answer on `127.0.0.1` but not on `::1`).
    addrs: Vec<SockAddr>,
    next: usize,
    /// The address of the CONNECT in flight; the SQE points at it.
    sockaddr: Option<Box<SockAddr>>,
    /// This attempt's CONNECT succeeded (a Unix socket's peer has no `SocketAddr` to tell).
    connected: bool,
    /// Sends made before the connection is usable, in order.
    pub(crate) held: SendQueue,
    /// `reconnect(after)` was asked for.
    pub(crate) reconnect: Option<Duration>,
    /// The last error of this attempt, reported when no address is left.
    last_error: Option<i32>,
    /// Which attempt this is (bumped by every renewal): a name answer or a redial timer of
    /// an earlier attempt is ignored.
    attempt: u32,
    /// The timer that starts a renewed attempt after its delay, while it waits.
    redial: Option<TimerId>,
    /// This attempt waits for the resolver (and must be forgotten there if it ends).
    resolving: bool,
}

impl Dial {
    /// A dial of `host:port` (`path` for `ws://`).
    pub(crate) fn new(
        host: String,
        port: u16,
        path: String,
        opts: DialOptions,
        protocol: Arc<dyn Protocol>,
        ws: Option<WsOffer>,
        proxy: Option<ProxySpec>,
    ) -> Dial {
        Dial {
            host,
            port,
            path,
            opts,
            protocol,
            ws,
            tls: None,
            proxy,
            handshake: None,
            unix: None,
            addrs: Vec::new(),
            next: 0,
            sockaddr: None,
            connected: false,
            held: SendQueue::default(),
            reconnect: None,
            last_error: None,
            attempt: 0,
            redial: None,
            resolving: false,
        }
    }

    /// Whether this attempt's CONNECT succeeded (it may still wait for a `ws://` upgrade).
    pub(crate) fn connected(&self) -> bool {
        self.connected
    }

    /// Whether a renewed attempt waits for its reconnect delay (its redial timer is armed).
    pub(crate) fn waiting_redial(&self) -> bool {
        self.redial.is_some()
    }

    /// Which attempt this is (bumped by every renewal).
    #[cfg(test)]
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Bytes of the sends held until the connection is usable.
    pub(crate) fn held_len(&self) -> usize {
        self.held.len
    }

    /// The host and port the dial connects to: the proxy's, or the target's.
    fn dial_host(&self) -> (String, u16) {
        match &self.proxy {
            Some(p) => (p.host.clone(), p.port),
            None => (self.host.clone(), self.port),
        }
    }

    /// The tunnel through the proxy is being negotiated (the connection's own receive
    /// waits until it is open).
    pub(crate) fn proxying(&self) -> bool {
        self.handshake.is_some()
    }

    /// `host:port` (or `unix://path`) for messages.
    pub(crate) fn target(&self) -> String {
        if self.unix.is_some() {
            format!("unix://{}", self.host)
        } else if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The protocol name shown in status output.
    pub(crate) fn protocol_name(&self) -> &'static str {
        if self.ws.is_some() {
            "ws"
        } else {
            self.protocol.name()
        }
    }

    /// Fresh parsers for one attempt (a `ws://` client gets a new key each time).
    fn codec(&mut self) -> Result<Codec, String> {
        if let Some(ws) = self.ws.as_mut() {
            ws.key = generate_key();
            return Ok((Box::new(WsDecoder::client(&ws.key, ws.deflate)), Box::new(WsEncoder::client())));
        }
        // A custom protocol's constructors are user code.
        let protocol = &self.protocol;
        catch_unwind(AssertUnwindSafe(|| (protocol.decoder(), protocol.encoder())))
            .map_err(|p| format!("protocol {} panicked creating a connection: {}", protocol.name(), panic_message(&*p)))
    }

    /// The `ws://` upgrade request of this attempt.
    pub(super) fn upgrade_request(&self) -> Option<Vec<u8>> {
        let ws = self.ws.as_ref()?;
        let host = match (self.port, self.host.contains(':')) {
            (80, false) => self.host.clone(),
            (80, true) => format!("[{}]", self.host),
            _ => self.target(),
        };
        let mut extra: Vec<(&str, &str)> = ws.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let protocols = ws.protocols.join(", ");
        if !protocols.is_empty() {
            extra.push(("Sec-WebSocket-Protocol", &protocols));
        }
        if ws.deflate {
            extra.push(("Sec-WebSocket-Extensions", DEFLATE_OFFER));
        }
        Some(client_handshake_request(&host, &self.path, &ws.key, &extra))
    }
}

/// A connection's parsers.
type Codec = (Box<dyn Decoder>, Box<dyn Encoder>);

/// A stream socket for `addr`'s family (close-on-exec; options applied by the dial).
fn socket_for(addr: &SockAddr) -> io::Result<OwnedFd> {
    Ok(Socket::new(addr.domain(), Type::STREAM.cloexec(), None)?.into())
}

/// Cache size at which expired name answers are dropped.
const DNS_CACHE_PRUNE_AT: usize = 1024;

/// Stand-in address of a connection whose name is still resolving.
const UNRESOLVED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

impl Core {
    /// Opens an outgoing connection: a slot in `Connecting`, dialled at once (or when its
    /// name has resolved). Failures to come are reported through `on_error` (CONNECT_FAIL);
    /// only a ring that is stopping, or no socket at all, fails here.
    pub(crate) fn connect(&mut self, mut dial: Dial) -> Result<ConnectionId, EngineError> {
        if self.stopping.is_some() {
            return Err(EngineError::Stopping);
        }
        let fd = socket_for(&UNRESOLVED.into()).map_err(EngineError::Socket)?;
        let (decoder, encoder) = dial.codec().map_err(|e| EngineError::Socket(io::Error::other(e)))?;
        let serial = self.serials.take(self.thread);
        let mut state = ConnState::new(fd, serial, decoder, encoder, &self.cfg, self.stamp);
        state.status = Status::Connecting;
        state.peer = None;
        // (A timeout too long to represent is no deadline.)
        state.close_deadline = crate::clock::now().checked_add(dial.opts.connect_timeout);
        state.extra().dial = Some(Box::new(dial));
        let key = self.insert_slot(state);
        self.dial(key);
        Ok(self.id_of(key))
    }

    /// Starts (or restarts) the dial of `key`: resolves its name unless it is an address
    /// literal or cached, then connects.
    fn dial(&mut self, key: usize) {
        let Some(d) = self.conns[key].dial() else { return };
        if let Some(path) = &d.unix {
            match SockAddr::unix(path) {
                Ok(a) => self.dial_addrs(key, vec![a]),
                Err(e) => {
                    let target = d.target();
                    self.destroy(key, Some(ConnError::Connect { target, cause: ConnectError::Io(e) }))
                }
            }
            return;
        }
        let (host, port) = d.dial_host();
        if let Ok(ip) = host.parse::<IpAddr>() {
            self.dial_addrs(key, vec![SocketAddr::new(ip, port).into()]);
            return;
        }
        let now = crate::clock::now();
        let cached = self.dns.get(&(host.clone(), port)).filter(|(_, until)| *until > now).map(|(a, _)| a.clone());
        match cached {
            Some(Ok(addrs)) => self.dial_addrs(key, addrs.into_iter().map(SockAddr::from).collect()),
            // A recent failure (the negative cache): the name is not asked again yet.
            Some(Err(reason)) => {
                self.name_failed(key, host, ConnectError::NameNotFound { host: String::new(), reason })
            }
            None => match crate::resolve::lookup(&host, port, self.id_of(key), d.attempt) {
                Ok(()) => {
                    if let Some(d) = self.conns[key].dial_mut() {
                        d.resolving = true;
                    }
                }
                Err(cause) => self.name_failed(key, host, cause),
            },
        }
    }

    /// The dial of `key` cannot resolve its name: CONNECT_FAIL.
    fn name_failed(&mut self, key: usize, host: String, cause: ConnectError) {
        let cause = match cause {
            ConnectError::NameNotFound { reason, .. } => ConnectError::NameNotFound { host, reason },
            other => other,
        };
        let target = self.conns[key].dial().map(Dial::target).unwrap_or_default();
        self.destroy(key, Some(ConnError::Connect { target, cause }));
    }

    /// An attempt of `key` that waited for the resolver ended: the resolver forgets it (a
    /// name nobody waits for any more is not looked up).
    pub(super) fn stop_resolving(&mut self, key: usize) {
        let id = self.id_of(key);
        if let Some(d) = self.conns[key].dial_mut().filter(|d| d.resolving) {
            d.resolving = false;
            crate::resolve::forget(&d.host, d.port, id, d.attempt);
        }
    }

    /// The resolver answered for `conn` (through the mailbox).
    pub(crate) fn on_resolved(
        &mut self,
        conn: ConnectionId,
        attempt: u32,
        host: String,
        port: u16,
        addrs: Result<Vec<SocketAddr>, String>,
    ) {
        let now = crate::clock::now();
        // Bounded: expired answers go once the cache is large, all of them if it stays so.
        if self.dns.len() >= DNS_CACHE_PRUNE_AT {
            self.dns.retain(|_, (_, until)| *until > now);
            if self.dns.len() >= DNS_CACHE_PRUNE_AT {
                self.dns.clear();
            }
        }
        let ttl = if addrs.is_ok() { crate::resolve::CACHE_TTL } else { crate::resolve::NEGATIVE_TTL };
        self.dns.insert((host.clone(), port), (addrs.clone(), now + ttl));
        let Some(key) = self.lookup(conn) else { return };
        // Only the attempt that asked, and only while it waits for this answer (nothing in
        // flight, no address chosen): an answer for an attempt a reconnect replaced must not
        // dial the new one a second time.
        let c = &self.conns[key];
        let waiting = c.status == Status::Connecting
            && c.inflight == 0
            && c.dial().is_some_and(|d| d.attempt == attempt && d.sockaddr.is_none() && !d.waiting_redial());
        if !waiting {
            return;
        }
        if let Some(d) = self.conns[key].dial_mut() {
            d.resolving = false;
        }
        match addrs {
            Ok(a) => self.dial_addrs(key, a.into_iter().map(SockAddr::from).collect()),
            Err(reason) => self.name_failed(key, host.clone(), ConnectError::NameNotFound { host, reason }),
        }
    }

    fn dial_addrs(&mut self, key: usize, addrs: Vec<SockAddr>) {
        if let Some(d) = self.conns[key].dial_mut() {
            d.addrs = addrs;
            d.next = 0;
            d.last_error = None;
        }
        self.connect_next(key);
    }

    /// Submits a CONNECT to the next address of `key`, or fails the dial when none is left.
    fn connect_next(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let Some(d) = c.dial_mut() else { return };
        let Some(addr) = d.addrs.get(d.next).cloned() else {
            let errno = d.last_error.unwrap_or(libc::ECONNREFUSED);
            let target = d.target();
            self.destroy(key, Some(ConnError::Connect { target, cause: ConnectError::from_errno(errno) }));
            return;
        };
        d.next += 1;
        let opts = d.opts.clone();
        debug_assert_eq!(c.inflight, 0, "a CONNECT in flight still names the socket being replaced");
        // A socket of the address's family, with the dial's options. (The placeholder, or a
        // socket whose CONNECT failed, is closed by the replacement: no operation refers to it
        // — the failed CONNECT's completion has arrived.) TCP options only for TCP.
        let fresh = socket_for(&addr).and_then(|fd| {
            if addr.is_unix() {
                return Ok(fd);
            }
            let s = socket2::SockRef::from(&fd);
            if let Some(b) = opts.bind {
                s.bind(&b.into())?;
            }
            s.set_tcp_nodelay(opts.nodelay)?;
            if let Some(ka) = opts.keepalive {
                ka.apply(&s)?;
            }
            Ok(fd)
        });
        let fd = match fresh {
            Ok(fd) => fd,
            Err(e) => {
                let target = self.conns[key].dial().map(Dial::target).unwrap_or_default();
                self.destroy(key, Some(ConnError::Connect { target, cause: ConnectError::Io(e) }));
                return;
            }
        };
        let c = &mut self.conns[key];
        // (A dial is not in the fixed-file table before it is established.)
        debug_assert!(c.file == super::FileSlot::Never, "a registered socket replaced");
        c.fd = fd;
        let raw = c.fd.as_raw_fd();
        let gen = gen_of(c.serial);
        let d = c.dial_mut().expect("dial present");
        let sa = d.sockaddr.insert(Box::new(addr));
        // The kernel reads the address at submission; it stays boxed in the slot until the
        // completion anyway.
        let sqe = opcode::Connect::new(types::Fd(raw), sa.as_ptr().cast(), sa.len())
            .build()
            .user_data(Token::new(Kind::Connect, key, gen).to_u64());
        c.inflight += 1;
        self.push(sqe);
    }

    /// A CONNECT completed.
    pub(crate) fn on_connect(&mut self, tok: Token, res: i32) {
        if !self.live(tok) {
            return;
        }
        let key = tok.slot as usize;
        let c = &mut self.conns[key];
        c.inflight -= 1;
        if c.status != Status::Connecting {
            // Destroyed meanwhile (timed out, closed): its cancel made this completion.
            self.try_free(key);
            return;
        }
        if res < 0 {
            if let Some(d) = c.dial_mut() {
                d.last_error = Some(-res);
            }
            self.connect_next(key);
            return;
        }
        c.peer = c.dial().and_then(|d| d.sockaddr.as_ref()?.as_socket());
        if let Some(d) = c.dial_mut() {
            d.connected = true;
        }
        c.active = self.stamp;
        if c.dial().is_some_and(|d| d.proxy.is_some()) {
            // The tunnel first; `tunnel_open` continues from there.
            self.proxy_start(key);
            return;
        }
        self.tunnel_open(key, false);
    }

    /// The connection reaches its target (directly, or through an open proxy tunnel):
    /// `on_connect`, then the `ws://` upgrade or the held sends. `backlog`: the framer holds
    /// the target's first bytes (they came with the proxy's answer) and is delivered before
    /// the receive is armed.
    ///
    /// Over TLS the handshake starts here (after the tunnel, when there is one); its end is
    /// the connect (`on_connect` means a verified server), then the upgrade or the
    /// established connection.
    pub(super) fn tunnel_open(&mut self, key: usize, backlog: bool) {
        if backlog && self.conns[key].dial().is_some_and(|d| d.tls.is_some()) {
            // A TLS server speaks only after the ClientHello: bytes before it are not TLS.
            let target = self.conns[key].dial().map(|d| d.target()).unwrap_or_default();
            let cause = ConnectError::Tls("the target sent bytes before the TLS handshake began".into());
            self.destroy(key, Some(ConnError::Connect { target, cause }));
            return;
        }
        if !backlog {
            self.arm_recv(key);
        }
        if self.start_client_tls(key) {
            return;
        }
        let id = self.id_of(key);
        if backlog {
            // (Delivered after on_connect; the delivery arms the receive.)
            self.events.push_back(Event::Connect(id));
            self.events.push_back(Event::Resume(id));
        } else {
            self.events.push_back(Event::Connect(id));
        }
        let request = self.conns[key].dial().and_then(Dial::upgrade_request);
        match request {
            // The upgrade goes out first; what the application sends waits for the 101.
            Some(req) => {
                let c = &mut self.conns[key];
                enqueue(&mut self.arena, &mut c.sendq, &req);
                // (The proxy's last request may still be in flight: one send at a time.)
                if !c.send_inflight {
                    self.submit_send(key);
                }
            }
            None => self.established(key),
        }
    }

    /// The connection is usable: sends made meanwhile go out.
    pub(crate) fn established(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.status != Status::Connecting {
            return;
        }
        c.close_deadline = None;
        self.set_status(key, Status::Established);
        let c = &mut self.conns[key];
        if key < self.fixed_files as usize {
            // Its socket stays until the connection ends or redials (which clears the slot
            // first, `try_free`): registered at its second send, like an accepted one.
            c.file = super::FileSlot::Later;
        }
        let held = c.dial_mut().map(|d| std::mem::take(&mut d.held)).unwrap_or_default();
        self.release_held(key, held);
    }

    /// A `ws://` client's upgrade was answered with a valid 101: the session starts (with
    /// the client's heartbeat) and held messages go out.
    pub(crate) fn ws_client_upgraded(&mut self, key: usize) {
        let now = self.stamp;
        let c = &mut self.conns[key];
        let interval = c.dial().and_then(|d| d.ws.as_ref()?.ping_interval);
        c.ws = Some(WsSession::new(now, interval));
        self.established(key);
    }

    /// `host:port` of an outgoing `ws://` connection still waiting for its upgrade.
    pub(super) fn ws_dial_target(&self, key: usize) -> Option<String> {
        let c = &self.conns[key];
        let d = c.dial().filter(|d| d.ws.is_some() && c.status == Status::Connecting)?;
        Some(d.target())
    }

    /// Whether the heartbeat sweep has work beyond the worker's own settings.
    pub(crate) fn has_dials(&self) -> bool {
        self.dials > 0
    }

    /// The error a dial that ran out of time reports.
    pub(super) fn connect_timed_out(&self, key: usize) -> Option<ConnError> {
        let d = self.conns[key].dial()?;
        let timeout = d.opts.connect_timeout;
        if let (Some(p), true) = (&d.proxy, d.proxying()) {
            let answer = format!("no complete answer to the handshake within {timeout:?}");
            return Some(ConnError::Connect {
                target: d.target(),
                cause: ConnectError::Proxy { proxy: p.addr(), answer },
            });
        }
        let cause = match (d.ws.is_some() || d.tls.is_some(), d.connected) {
            // Connected, but the server never completed the upgrade (or TLS handshake).
            (true, true) => ConnectError::Handshake(format!("no answer within {:?}", d.opts.connect_timeout)),
            _ => ConnectError::TimedOut(d.opts.connect_timeout),
        };
        Some(ConnError::Connect { target: d.target(), cause })
    }

    /// `reconnect(after)` on `key`: the current socket (if open) is destroyed; once its
    /// `on_close` has run the slot dials again after `after`. False for a connection that was
    /// not opened with `connect`.
    pub(crate) fn reconnect(&mut self, key: usize, after: Duration) -> bool {
        let c = &mut self.conns[key];
        let Some(d) = c.dial_mut() else { return false };
        if let Some(t) = d.redial.take() {
            // Still waiting from an earlier reconnect: only the delay changes.
            drop(self.timers.del(t));
            if let Err(e) = self.schedule_redial(key, after) {
                log::error!("reconnect of {}: {e}", self.id_of(key));
                self.retire_quietly(key);
                return false;
            }
            return true;
        }
        d.reconnect = Some(after);
        if c.status != Status::Closed {
            self.destroy(key, None);
        }
        true
    }

    /// Cancels a `reconnect` that has not dialled yet: a renewed slot still waiting for its
    /// delay is freed quietly (its `on_close` ran already).
    pub(crate) fn cancel_reconnect(&mut self, key: usize) {
        let Some(d) = self.conns[key].dial_mut() else { return };
        d.reconnect = None;
        let Some(t) = d.redial.take() else { return };
        drop(self.timers.del(t));
        self.retire_quietly(key);
    }

    /// Frees a renewed slot whose attempt never started (its `on_close` ran already for the
    /// previous one), without another `on_close`.
    fn retire_quietly(&mut self, key: usize) {
        if let Some(t) = self.conns[key].dial_mut().and_then(|d| d.redial.take()) {
            drop(self.timers.del(t));
        }
        self.conns[key].close_deadline = None;
        self.set_status(key, Status::Closed);
        self.try_free(key);
    }

    /// A destroyed dial waiting for its reconnect delay gives the delay up: its redial timer
    /// goes (a later `reconnect` asks afresh, `cancel_reconnect` finds nothing to cancel).
    pub(super) fn drop_redial(&mut self, key: usize) {
        if let Some(t) = self.conns[key].dial_mut().and_then(|d| d.redial.take()) {
            drop(self.timers.del(t));
        }
    }

    /// Starts the delay of a renewed attempt (`after` may be zero: the dial starts on the next
    /// loop turn, never inside the callback that asked, so a dial that fails at once cannot
    /// loop without the ring turning). The close deadline covers the delay plus the connect
    /// timeout.
    fn schedule_redial(&mut self, key: usize, after: Duration) -> Result<(), String> {
        let d = self.conns[key].dial().expect("only dials renew");
        let (attempt, timeout) = (d.attempt, d.opts.connect_timeout);
        let now = crate::clock::now();
        let id = self.id_of(key);
        let redial: crate::timers::TimerFn = Box::new(move || {
            super::with_core(|c| c.redial(id, attempt));
        });
        let t = self.timers.add(now, after, false, redial).map_err(|(e, _)| e.to_string())?;
        let c = &mut self.conns[key];
        c.close_deadline = now.checked_add(after).and_then(|t| t.checked_add(timeout));
        c.dial_mut().expect("only dials renew").redial = Some(t);
        Ok(())
    }

    /// Gives a freed outgoing slot a fresh socket and parser state and dials again after
    /// `after` (same slot, same id; context and callbacks kept).
    pub(super) fn renew(&mut self, key: usize, after: Duration) {
        let codec = self.conns[key].dial_mut().expect("only dials renew").codec();
        let (fd, (decoder, encoder)) = match (socket_for(&UNRESOLVED.into()), codec) {
            (Ok(fd), Ok(codec)) => (fd, codec),
            (Err(e), _) => return self.give_up_renewal(key, &e.to_string()),
            (_, Err(e)) => return self.give_up_renewal(key, &e),
        };
        let c = &mut self.conns[key];
        for chunk in c.sendq.chunks.drain(..) {
            self.arena.release(chunk.mem);
        }
        c.sendq.len = 0;
        if let Some(d) = c.dial_mut() {
            for chunk in d.held.chunks.drain(..) {
                self.arena.release(chunk.mem);
            }
            d.held.len = 0;
            d.handshake = None;
            d.sockaddr = None;
            d.connected = false;
            d.addrs.clear();
            d.attempt = d.attempt.wrapping_add(1);
        }
        debug_assert!(c.file == super::FileSlot::Never, "a registered socket replaced");
        c.fd = fd;
        c.recv_armed = false;
        c.paused = false;
        c.throttled = false;
        c.send_inflight = false;
        c.drain_pending = false;
        c.buffer_full = false;
        c.linger = false;
        c.identity_encoder = encoder.is_identity();
        c.decoder = Some(decoder);
        c.framer = Some(Framer::new());
        c.encoder = encoder;
        c.bytes_read = 0;
        c.bytes_written = 0;
        c.peer = None;
        c.ws = None;
        self.drop_tls_layer(key);
        let c = &mut self.conns[key];
        c.active = self.stamp;
        c.partial_since = None;
        c.close_deadline = None;
        self.set_status(key, Status::Connecting);
        if let Err(e) = self.schedule_redial(key, after) {
            // (A delay too long for the clock.) Retire the renewed slot quietly.
            log::error!("reconnect of {}: {e}", self.id_of(key));
            self.retire_quietly(key);
        }
    }

    /// The reconnect delay of `conn`'s attempt `attempt` ended.
    fn redial(&mut self, conn: ConnectionId, attempt: u32) {
        let Some(key) = self.lookup(conn) else { return };
        let c = &mut self.conns[key];
        let Some(d) = c.dial_mut().filter(|d| d.attempt == attempt && d.redial.is_some()) else { return };
        d.redial = None;
        if c.status == Status::Connecting && c.inflight == 0 {
            self.dial(key);
        }
    }

    /// A renewal that cannot get a socket or parsers: the slot is freed after all.
    fn give_up_renewal(&mut self, key: usize, why: &str) {
        log::error!("reconnect of {} failed: {why}", self.id_of(key));
        self.try_free(key);
    }
}
