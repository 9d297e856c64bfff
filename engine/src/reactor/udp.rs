//! The UDP state machine: datagram sockets in their own slab, each with one multishot
//! RECVMSG on the ring's datagram pool and any number of SENDMSGs in flight.
//!
//! * **Receiving.** A socket is armed once (`RecvMsgMulti` on [`UDP_BGID`]); each datagram
//!   arrives in one provided buffer as `io_uring_recvmsg_out`, the sender's address, then the
//!   payload. A datagram whose payload did not fit (`MSG_TRUNC` in the header's flags) is
//!   dropped and counted (`ThreadStats::udp_truncated`), never delivered cut. Everything else
//!   goes to the runner as a [`UdpWork`] (buffer, payload range, sender, the socket's
//!   decoder), which parses and delivers it and hands it back ([`Core::udp_end`]). ENOBUFS
//!   re-arms at the end of the turn, after the batch gave its buffers back; a multishot that
//!   ends otherwise is re-armed at once.
//! * **Sending.** Each datagram is encoded into a boxed [`DatagramOut`] (header, iovec,
//!   destination, bytes) kept until its CQE; in [`SendMode::Batched`] the SENDMSG waits for the
//!   turn's submit (`Queued`), in [`SendMode::Eager`] it is submitted at once and its
//!   completion looked for before `send()` returns (`Sent` / `Failed`, or `Queued` when the
//!   kernel has not answered yet). A refusal (EMSGSIZE, ECONNREFUSED, ...) counts as
//!   `send_fail`.
//! * **Closing.** A socket being closed cancels its receive and is freed (its descriptor
//!   closed, or let go of, when other holders share it) only once its last CQE — receive
//!   and sends — has arrived. A worker's socket (closed by a stop or `unlisten`) still
//!   delivers the datagrams its cancelled receive took from the kernel before the cancel
//!   ended it, and may answer them: a datagram the kernel handed over is never dropped
//!   (with a reload, the successor reads what the old process left queued on the shared
//!   socket). A client's socket drops them: its `on_close` has run.
//! * **Pausing.** `pause_accept` (a reload's old process) cancels the receive of the
//!   worker's sockets and keeps them open, so the successor that shares them reads on;
//!   `unlisten` closes them, `listen` adds new ones (`Core::listen`).
//! * **Clients** (`AsyncUdpConnection`) are connected sockets in the same slab, with their own
//!   callbacks and an optional receive timeout: a send starts the wait when none runs, any
//!   datagram received ends it, and when it passes the client gets `on_error`
//!   ([`ConnError::RecvTimeout`]) and is closed (`on_close`).

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{cqueue, opcode, types};
use ringman_protocols::{Decoder, Encoder, Message, MessageKind, Protocol};
use slab::Slab;

use super::{Core, Event, SendStatus};
use crate::addr::ListenSocket;
use crate::buffers::{datagram_buf_size, sockaddr_from, DatagramOut, RecvBuf, RecvMsgHdr, RecvRing, UDP_BGID};
use crate::config::SendMode;
use crate::error::ConnError;
use crate::mailbox::Enc;
use crate::ring::{Kind, Token};
use crate::timers::TimerId;

/// One UDP peer as seen from a socket of this process (Workerman's `UdpConnection`): the
/// socket (a `udp://` worker's, or an [`AsyncUdpConnection`](crate::AsyncUdpConnection)'s)
/// and the peer's address. It is `Copy` and can be stored; [`UdpConnection::send`] sends a
/// datagram from that socket to that peer. Once the socket is closed every call is a
/// harmless no-op (`send` answers [`SendStatus::Failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpConnection {
    pub(crate) thread: u16,
    pub(crate) key: u32,
    pub(crate) gen: u32,
    pub(crate) peer: SocketAddr,
}

/// A UDP client's `on_message`.
pub(crate) type UdpMsgFn = Box<dyn FnMut(&UdpConnection, &Message<'_>)>;
/// A UDP client's `on_error`.
pub(crate) type UdpErrFn = Box<dyn FnMut(&UdpConnection, &ConnError)>;
/// A UDP client's `on_close`.
pub(crate) type UdpFn = Box<dyn FnMut(&UdpConnection)>;

/// The callbacks of a UDP client socket.
#[derive(Default)]
pub(crate) struct UdpHooks {
    pub on_message: Option<UdpMsgFn>,
    pub on_error: Option<UdpErrFn>,
    pub on_close: Option<UdpFn>,
}

/// What a UDP client socket holds beyond a server socket.
pub(crate) struct UdpClient {
    pub peer: SocketAddr,
    pub hooks: UdpHooks,
    pub recv_timeout: Option<Duration>,
    /// The receive timer, while a send waits for an answer.
    waiting: Option<TimerId>,
}

impl UdpClient {
    pub(crate) fn new(peer: SocketAddr, recv_timeout: Option<Duration>) -> UdpClient {
        UdpClient { peer, hooks: UdpHooks::default(), recv_timeout, waiting: None }
    }
}

/// Whose socket it is.
pub(crate) enum Role {
    /// A `udp://` worker's: datagrams go to the worker's `on_datagram`.
    Server,
    /// An outgoing (connected) socket with its own callbacks.
    Client(Box<UdpClient>),
}

struct UdpSock {
    /// The socket (a worker's is shared with its `Listeners`, and with other rings without
    /// SO_REUSEPORT).
    fd: Arc<ListenSocket>,
    gen: u32,
    /// The header the multishot RECVMSG was armed with (buffers.rs, invariant 4).
    hdr: RecvMsgHdr,
    armed: bool,
    /// Operations whose last CQE has not arrived: the receive while armed, each send.
    inflight: usize,
    closing: bool,
    /// Taken out while the runner parses a datagram with it.
    decoder: Option<Box<dyn Decoder>>,
    encoder: Box<dyn Encoder>,
    /// For a fresh decoder after a datagram that ended inside a packet (decoders keep
    /// scanning state between the pieces of a stream; datagrams are parsed each on its own).
    protocol: Arc<dyn Protocol>,
    raw: bool,
    role: Role,
}

/// The UDP sockets of one ring and what they share.
#[derive(Default)]
pub(crate) struct Udp {
    socks: Slab<UdpSock>,
    /// The datagram pool, registered when the ring opens its first UDP socket.
    pool: Option<RecvRing>,
    /// Datagrams in flight: the socket's slot and the datagram.
    out: Slab<(usize, Box<DatagramOut>)>,
    /// Sockets whose receive ended with ENOBUFS: re-armed at the end of the turn.
    rearm: Vec<usize>,
}

impl Udp {
    /// Unregisters the datagram pool (before the core's memory goes).
    pub(crate) fn unregister(&self, ring: &mut crate::ring::Ring) {
        if let Some(p) = &self.pool {
            p.unregister(ring);
        }
    }

    /// The sockets' descriptors, for an abandoned core (everything else is leaked with it).
    pub(crate) fn take_fds(&mut self) -> Vec<Arc<ListenSocket>> {
        self.socks.drain().map(|s| s.into_fd_leaking_the_rest()).collect()
    }
}

impl UdpSock {
    fn into_fd_leaking_the_rest(self) -> Arc<ListenSocket> {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used again and its other fields are deliberately leaked
        // (their memory may still be named by operations of an abandoned ring).
        unsafe { std::ptr::read(&me.fd) }
    }
}

/// Socket generations: process-wide, so a handle to a socket of a restarted ring never
/// matches a later socket in the same slot (24 bits go into `user_data`).
static GENS: AtomicU32 = AtomicU32::new(1);

/// Something a UDP client's callbacks must hear, delivered by the runner outside the core.
pub(crate) enum UdpEvent {
    /// A receive or send failed; the socket stays open.
    Error(UdpConnection, ConnError),
    /// The socket closed (after `error`, if one caused it); its callbacks go with the event.
    Closed(UdpConnection, Option<ConnError>, UdpHooks),
}

/// One received datagram on its way to user code (the runner parses it and hands it back
/// with [`Core::udp_end`]).
pub(crate) struct UdpWork {
    pub conn: UdpConnection,
    pub buf: RecvBuf,
    pub payload: std::ops::Range<usize>,
    pub decoder: Box<dyn Decoder>,
    /// A client's `on_message`, taken out while it runs; `None` for a worker's socket.
    pub on_message: Option<UdpMsgFn>,
    pub server: bool,
    pub raw: bool,
    pub max: usize,
}

impl Core {
    /// Serves a `udp://` worker's socket on this ring (at start, or `WorkerHandle::listen`):
    /// its receive is armed unless receiving is paused. Nothing happens on a ring that is
    /// stopping, or that serves this socket already.
    pub(crate) fn udp_listen(&mut self, fd: Arc<ListenSocket>) -> std::io::Result<()> {
        let served = self.udp.socks.iter().any(|(_, s)| matches!(s.role, Role::Server) && Arc::ptr_eq(&s.fd, &fd));
        if self.stopping.is_some() || served {
            return Ok(());
        }
        let protocol = self.cfg.udp_protocol.clone();
        self.udp_open(fd, protocol, Role::Server).map(drop)
    }

    /// Adds a UDP socket to this ring and arms its receive.
    pub(crate) fn udp_open(
        &mut self,
        fd: Arc<ListenSocket>,
        protocol: Arc<dyn Protocol>,
        role: Role,
    ) -> std::io::Result<UdpConnection> {
        if self.udp.pool.is_none() {
            let size = datagram_buf_size(self.cfg.max_datagram);
            self.udp.pool = Some(RecvRing::with_group(&mut self.ring, self.cfg.udp_buffers, size, UDP_BGID, 0)?);
        }
        let gen = GENS.fetch_add(1, Ordering::Relaxed) & 0xFF_FFFF;
        let peer = match &role {
            Role::Client(c) => c.peer,
            Role::Server => crate::sys::local_addr(fd.as_fd()).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        let key = self.udp.socks.insert(UdpSock {
            fd,
            gen,
            hdr: RecvMsgHdr::new(),
            armed: false,
            inflight: 0,
            closing: false,
            decoder: Some(protocol.decoder()),
            encoder: protocol.encoder(),
            raw: protocol.name() == "tcp",
            protocol,
            role,
        });
        self.udp_arm(key);
        Ok(UdpConnection { thread: self.thread, key: key as u32, gen, peer })
    }

    fn udp_arm(&mut self, key: usize) {
        let paused = self.accept_paused;
        let s = &mut self.udp.socks[key];
        if s.armed || s.closing || (paused && matches!(s.role, Role::Server)) {
            return;
        }
        s.armed = true;
        s.inflight += 1;
        let sqe = opcode::RecvMsgMulti::new(types::Fd(s.fd.as_raw_fd()), s.hdr.as_ptr(), UDP_BGID)
            .build()
            .user_data(Token::new(Kind::Udp, key, s.gen).to_u64());
        self.push(sqe);
    }

    /// The socket of `conn`, if it is still open on this ring (a worker's socket being
    /// closed still answers the datagrams it delivers).
    fn udp_key(&self, conn: &UdpConnection) -> Option<usize> {
        if conn.thread != self.thread {
            return None;
        }
        match self.udp.socks.get(conn.key as usize) {
            Some(s) if s.gen == conn.gen && (!s.closing || matches!(s.role, Role::Server)) => Some(conn.key as usize),
            _ => None,
        }
    }

    /// Whether `conn`'s socket is open.
    pub(crate) fn udp_is_open(&self, conn: &UdpConnection) -> bool {
        self.udp_key(conn).is_some()
    }

    /// The local address of `conn`'s socket.
    pub(crate) fn udp_local_addr(&self, conn: &UdpConnection) -> Option<SocketAddr> {
        self.udp_key(conn).and_then(|k| crate::sys::local_addr(self.udp.socks[k].fd.as_fd()))
    }

    /// A client's callbacks (to set one).
    pub(crate) fn udp_hooks(&mut self, conn: &UdpConnection) -> Option<&mut UdpHooks> {
        let key = self.udp_key(conn)?;
        match &mut self.udp.socks[key].role {
            Role::Client(c) => Some(&mut c.hooks),
            Role::Server => None,
        }
    }

    /// End of a turn: sockets that met ENOBUFS are re-armed (the batch gave its buffers
    /// back) and returned buffers are published.
    pub(super) fn udp_turn(&mut self) {
        for key in std::mem::take(&mut self.udp.rearm) {
            if self.udp.socks.contains(key) {
                self.udp_arm(key);
            }
        }
        if let Some(p) = &mut self.udp.pool {
            p.publish();
        }
    }

    /// A RECVMSG completion. Returns a datagram to deliver; handles errors, truncation and
    /// re-arming itself.
    pub(crate) fn on_udp(&mut self, tok: Token, res: i32, flags: u32) -> Option<UdpWork> {
        let bid = cqueue::buffer_select(flags);
        let key = tok.slot as usize;
        let more = cqueue::more(flags);
        let live = matches!(self.udp.socks.get(key), Some(s) if s.gen == tok.gen);
        if !live {
            // (Cannot happen: a socket is freed only after its last CQE. The buffer goes
            // back all the same.)
            self.udp_recycle(bid);
            return None;
        }
        let s = &mut self.udp.socks[key];
        if !more {
            s.armed = false;
            s.inflight -= 1;
        }
        if res < 0 {
            self.udp_recycle(bid);
            let s = &self.udp.socks[key];
            let (closing, client) = (s.closing, matches!(s.role, Role::Client(_)));
            match -res {
                libc::ENOBUFS => self.udp.rearm.push(key),
                libc::ECANCELED => {}
                errno if !closing => {
                    // A connected client learns of an ICMP error (ECONNREFUSED) this way.
                    let conn = self.udp_conn(key, None);
                    if client {
                        let err = ConnError::Io(std::io::Error::from_raw_os_error(errno));
                        self.events.push_back(Event::Udp(Box::new(UdpEvent::Error(conn, err))));
                    } else {
                        log::debug!("udp receive on {}: errno {errno}", conn.peer);
                    }
                    if !more {
                        self.udp_arm(key);
                    }
                }
                _ => {}
            }
            self.udp_try_free(key);
            return None;
        }
        if !more && !self.udp.socks[key].closing {
            self.udp_arm(key);
        }
        let Some(bid) = bid else {
            self.udp_try_free(key);
            return None;
        };
        let pool = self.udp.pool.as_mut().expect("a UDP socket implies the pool");
        // SAFETY: this CQE named `bid` with result `res` (the bytes written into it), and the
        // buffer is taken once, here.
        let mut buf = unsafe { pool.take(bid, res as usize, 0) };
        let s = &mut self.udp.socks[key];
        // The payload follows the header and the address field (no control data is asked for).
        let at = crate::buffers::RECVMSG_OUT_LEN + s.hdr.get().msg_namelen as usize;
        let (truncated, from, len) = match io_uring::types::RecvMsgOut::parse(buf.bytes(), s.hdr.get()) {
            Ok(out) => (out.is_payload_truncated(), sockaddr_from(out.name_data()), out.payload_data().len()),
            Err(()) => (true, None, 0),
        };
        // (A buffer holds exactly `max_datagram` bytes of payload: anything longer was cut.)
        // A closing client drops what still arrives; a worker's socket delivers it.
        let client = matches!(s.role, Role::Client(_));
        if truncated || (s.closing && client) {
            if truncated {
                self.stats.udp_truncated.add(1);
            }
            self.udp.pool.as_mut().expect("pool").give_back(buf);
            // (The last completion of a closing socket frees it.)
            self.udp_try_free(key);
            return None;
        }
        let (hook, peer, server) = match &mut s.role {
            Role::Server => (None, from, true),
            Role::Client(c) => {
                if let Some(t) = c.waiting.take() {
                    // (The timer's closure holds two integers: dropping it here is harmless.)
                    drop(self.timers.del(t));
                }
                let Role::Client(c) = &mut self.udp.socks[key].role else { unreachable!() };
                (c.hooks.on_message.take(), Some(c.peer), false)
            }
        };
        let s = &mut self.udp.socks[key];
        let (Some(peer), Some(decoder)) = (peer, s.decoder.take()) else {
            self.udp.pool.as_mut().expect("pool").give_back(buf);
            return None;
        };
        let raw = s.raw;
        let conn = UdpConnection { thread: self.thread, key: key as u32, gen: s.gen, peer };
        let max = self.cfg.max_package_size;
        Some(UdpWork { conn, buf, payload: at..at + len, decoder, on_message: hook, server, raw, max })
    }

    /// A delivered datagram comes back: its buffer to the pool, the decoder (a fresh one when
    /// the datagram ended inside a packet: `clean` false) and the client's `on_message` to
    /// the socket. A callback with no socket left (or replaced meanwhile) is handed back, to
    /// be dropped outside the core.
    pub(crate) fn udp_end(&mut self, w: UdpWork, delivered: u64, clean: bool) -> Option<UdpMsgFn> {
        let UdpWork { conn, buf, decoder, on_message, server, .. } = w;
        self.udp.pool.as_mut().expect("pool").give_back(buf);
        if server {
            self.stats.requests.add(delivered);
        }
        let key = conn.key as usize;
        let Some(s) = self.udp.socks.get_mut(key).filter(|s| s.gen == conn.gen) else {
            return on_message;
        };
        s.decoder = Some(if clean { decoder } else { s.protocol.decoder() });
        let back = match (&mut s.role, on_message) {
            (Role::Client(c), Some(f)) if c.hooks.on_message.is_none() => {
                c.hooks.on_message = Some(f);
                None
            }
            (_, f) => f,
        };
        // (A closing worker's socket whose last completion carried this datagram goes now,
        // unless its answer is in flight.)
        self.udp_try_free(key);
        back
    }

    fn udp_recycle(&mut self, bid: Option<u16>) {
        if let (Some(b), Some(p)) = (bid, self.udp.pool.as_mut()) {
            p.recycle(b, 0, 0);
        }
    }

    fn udp_conn(&self, key: usize, peer: Option<SocketAddr>) -> UdpConnection {
        let s = &self.udp.socks[key];
        let peer = peer.unwrap_or(match &s.role {
            Role::Client(c) => c.peer,
            Role::Server => SocketAddr::from(([0, 0, 0, 0], 0)),
        });
        UdpConnection { thread: self.thread, key: key as u32, gen: s.gen, peer }
    }

    /// Sends `data` (encoded with the socket's protocol unless `enc` is raw) from `conn`'s
    /// socket to `conn`'s peer. See [`UdpConnection::send`] for the three answers.
    pub(crate) fn udp_send(&mut self, conn: &UdpConnection, data: &[u8], enc: Enc) -> SendStatus {
        let Some(key) = self.udp_key(conn) else { return SendStatus::Failed };
        let s = &mut self.udp.socks[key];
        let mut bytes = Vec::with_capacity(data.len() + 8);
        match enc {
            Enc::Raw => bytes.extend_from_slice(data),
            Enc::Default => s.encoder.encode(data, MessageKind::Binary, &mut bytes),
            Enc::Kind(k) => s.encoder.encode(data, k, &mut bytes),
        }
        let (to, timeout) = match &s.role {
            Role::Server => (Some(conn.peer), None),
            Role::Client(c) => (None, c.recv_timeout.filter(|_| c.waiting.is_none())),
        };
        s.inflight += 1;
        let gen = s.gen;
        let fd = types::Fd(s.fd.as_raw_fd());
        let d = DatagramOut::new(to, bytes);
        let hdr = d.msghdr();
        let slot = self.udp.out.insert((key, d));
        let ud = Token::new(Kind::UdpSend, slot, gen).to_u64();
        self.push(opcode::SendMsg::new(fd, hdr).build().user_data(ud));
        if let Some(t) = timeout {
            self.udp_wait(key, gen, t);
        }
        if self.cfg.send_mode == SendMode::Batched {
            return SendStatus::Queued;
        }
        // Eager: submit now and look for the answer.
        if self.ring.submit_getevents().is_err() {
            return SendStatus::Queued;
        }
        let mut mine = None;
        let early = &mut self.early;
        self.ring.drain(|u, res, flags| {
            if u == ud && mine.is_none() {
                mine = Some(res);
            } else {
                early.push((u, res, flags));
            }
        });
        match mine {
            Some(res) => {
                self.on_udp_send(Token::new(Kind::UdpSend, slot, gen), res);
                if res >= 0 {
                    SendStatus::Sent
                } else {
                    SendStatus::Failed
                }
            }
            None => SendStatus::Queued,
        }
    }

    /// Starts a client's receive timer.
    fn udp_wait(&mut self, key: usize, gen: u32, after: Duration) {
        let cb = Box::new(move || {
            super::with_core(|c| c.udp_expire(key, gen, after));
        });
        if let Ok(id) = self.timers.add(crate::clock::now(), after, false, cb) {
            if let Role::Client(c) = &mut self.udp.socks[key].role {
                c.waiting = Some(id);
            }
        }
    }

    /// A client's receive timer fired: nothing arrived since the send that started it.
    fn udp_expire(&mut self, key: usize, gen: u32, after: Duration) {
        match self.udp.socks.get_mut(key) {
            Some(s) if s.gen == gen && !s.closing => {
                if let Role::Client(c) = &mut s.role {
                    c.waiting = None;
                }
            }
            _ => return,
        }
        self.udp_close_key(key, Some(ConnError::RecvTimeout { after }));
    }

    /// A SENDMSG completion.
    pub(crate) fn on_udp_send(&mut self, tok: Token, res: i32) {
        let Some((key, d)) = self.udp.out.try_remove(tok.slot as usize) else { return };
        drop(d);
        let Some(s) = self.udp.socks.get_mut(key) else { return };
        s.inflight -= 1;
        if res < 0 {
            self.stats.send_fail.add(1);
            let conn = self.udp_conn(key, None);
            let s = &self.udp.socks[key];
            if matches!(s.role, Role::Client(_)) && !s.closing {
                let err = ConnError::Io(std::io::Error::from_raw_os_error(-res));
                self.events.push_back(Event::Udp(Box::new(UdpEvent::Error(conn, err))));
            } else {
                log::debug!("udp send refused: errno {}", -res);
            }
        }
        self.udp_try_free(key);
    }

    /// Closes a client's socket (`on_close` follows once). A worker's socket closes only
    /// when its ring stops, or with `unlisten`.
    pub(crate) fn udp_close(&mut self, conn: &UdpConnection) {
        if let Some(key) = self.udp_key(conn) {
            if matches!(self.udp.socks[key].role, Role::Client(_)) {
                self.udp_close_key(key, None);
            }
        }
    }

    fn udp_close_key(&mut self, key: usize, err: Option<ConnError>) {
        let s = &mut self.udp.socks[key];
        if s.closing {
            return;
        }
        s.closing = true;
        if s.armed {
            let ud = Token::new(Kind::Udp, key, s.gen).to_u64();
            self.push(opcode::AsyncCancel::new(ud).build().user_data(Token::new(Kind::Shutdown, 0, 0).to_u64()));
        }
        let conn = self.udp_conn(key, None);
        if let Role::Client(c) = &mut self.udp.socks[key].role {
            if let Some(t) = c.waiting.take() {
                drop(self.timers.del(t));
            }
            let hooks = std::mem::take(&mut c.hooks);
            self.events.push_back(Event::Udp(Box::new(UdpEvent::Closed(conn, err, hooks))));
        }
        self.udp_try_free(key);
    }

    /// Frees a closing socket whose last CQE has arrived (its descriptor closes here, or
    /// with the last ring that shares it).
    fn udp_try_free(&mut self, key: usize) {
        if matches!(self.udp.socks.get(key), Some(s) if s.closing && s.inflight == 0) {
            self.udp.socks.remove(key);
        }
    }

    /// Pausing (`pause_accept`): the worker's sockets stop receiving (their receive is
    /// cancelled; datagrams it took before the cancel are still delivered) and stay open.
    pub(super) fn udp_pause(&mut self) {
        let armed: Vec<(usize, u32)> = self
            .udp
            .socks
            .iter()
            .filter(|(_, s)| matches!(s.role, Role::Server) && s.armed && !s.closing)
            .map(|(k, s)| (k, s.gen))
            .collect();
        for (key, gen) in armed {
            let ud = Token::new(Kind::Udp, key, gen).to_u64();
            self.push(opcode::AsyncCancel::new(ud).build().user_data(Token::new(Kind::Shutdown, 0, 0).to_u64()));
        }
    }

    /// `unlisten`: the worker's sockets on this ring close (their receives cancelled, each
    /// let go of after its last completion); clients stay.
    pub(super) fn udp_unlisten(&mut self) {
        let keys: Vec<usize> =
            self.udp.socks.iter().filter(|(_, s)| matches!(s.role, Role::Server)).map(|(k, _)| k).collect();
        for k in keys {
            self.udp_close_key(k, None);
        }
    }

    /// Stopping: every UDP socket of this ring closes.
    pub(super) fn udp_stop(&mut self) {
        let keys: Vec<usize> = self.udp.socks.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.udp_close_key(k, None);
        }
    }

    /// True when no UDP socket is left (all closed and their operations completed).
    pub(super) fn udp_idle(&self) -> bool {
        self.udp.socks.is_empty()
    }

    /// Open UDP sockets and datagrams in flight (for the simulator's final checks).
    #[cfg(test)]
    pub(crate) fn udp_counts(&self) -> (usize, usize) {
        (self.udp.socks.len(), self.udp.out.len())
    }

    /// Whether this ring still holds a worker's UDP socket (open or closing).
    #[cfg(test)]
    pub(crate) fn udp_serves(&self) -> bool {
        self.udp.socks.iter().any(|(_, s)| matches!(s.role, Role::Server))
    }

    /// The UDP sockets' states, for the simulator's failure messages.
    #[cfg(test)]
    pub(crate) fn udp_states(&self) -> String {
        let socks = self
            .udp
            .socks
            .iter()
            .map(|(k, s)| format!("{k}: armed {} inflight {} closing {}", s.armed, s.inflight, s.closing));
        socks.collect::<Vec<_>>().join(", ")
    }
}
