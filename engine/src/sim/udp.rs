//! The simulated kernel's UDP: datagram sockets behind the engine's descriptors, the
//! multishot RECVMSG on the datagram pool (buffer group 1) with the kernel's buffer layout
//! (`io_uring_recvmsg_out`, the sender's address in the name field, the payload, `MSG_TRUNC`
//! and the full length when the payload did not fit), SENDMSG (header and destination read
//! at submission, the bytes when the send completes, as the kernel does), and the peers:
//! the server socket's peers send datagrams of random sizes — some larger than the engine's
//! buffers — each carrying its sender and sequence number, so that what the application is
//! given can be judged exactly; a client's peer echoes what it receives, or loses it.
//!
//! The worker's sockets are registered when they are made (at start, and by each
//! `listen()`); peers send to the open one, and while none is (after `unlisten`) their
//! datagrams meet a closed port. A socket the engine closes drops what was still queued on
//! it, as the kernel does.
//!
//! It records a violation for a datagram delivered cut, altered, twice, under the wrong
//! sender or after the kernel truncated it, a reply sent to anyone but the datagram's
//! sender, an operation on a closed descriptor, and a datagram buffer given back twice.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};

use io_uring::opcode;

use super::kernel::{
    ino_of, BufRing, SimKernel, Sqe, CQE_F_BUFFER, CQE_F_MORE, IORING_RECV_MULTISHOT, IOSQE_BUFFER_SELECT,
};
use super::rng::Rng;

/// The most a UDP datagram carries over IPv4 (larger sends fail with EMSGSIZE).
const IPV4_MAX: usize = 65_507;

/// Bytes the server peers put in front of each datagram: `U`, the peer, its sequence number.
const ID_LEN: usize = 1 + 2 + 8;

/// Datagrams a socket's receive queue holds (more are dropped, as a full socket buffer does).
const QUEUE_MAX: usize = 64;

struct USock {
    fd: RawFd,
    ino: u64,
    server: bool,
    /// A client's connected peer.
    peer: Option<SocketAddr>,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
enum UKind {
    /// Multishot RECVMSG; the name and control room of its `msghdr`.
    Recv { namelen: usize, controllen: usize },
    /// SENDMSG of `len` bytes at `base` to `to` (`None`: the connected peer).
    Send { to: Option<SocketAddr>, base: u64, len: usize },
}

#[derive(Debug, Clone, Copy)]
struct UOp {
    ud: u64,
    sock: usize,
    kind: UKind,
}

/// Per-seed rates (per mille) of the UDP world.
struct URates {
    send: u32,
    big: u32,
    complete: u32,
    end: u32,
    withhold: u32,
    echo_lost: u32,
    refuse: u32,
}

/// The UDP side of one simulated kernel.
pub(crate) struct SimUdp {
    rng: Rng,
    rates: URates,
    pub(super) bufs: Option<BufRing>,
    socks: Vec<USock>,
    ops: Vec<UOp>,
    /// The engine's `max_datagram`.
    max_datagram: usize,
    peers: Vec<SocketAddr>,
    next_seq: Vec<u64>,
    /// Every datagram a server peer sent, by (peer, sequence number).
    sent: BTreeMap<(u16, u64), Vec<u8>>,
    /// Datagrams handed to the engine whole (a CQE posted): each must be delivered, even
    /// when its socket was being closed by then (a stop, `unlisten`).
    handed: BTreeSet<(u16, u64)>,
    pub(crate) delivered: BTreeSet<(u16, u64)>,
    /// Datagrams handed to the engine cut (`MSG_TRUNC`).
    pub(crate) truncated: u64,
    calm: bool,
}

/// The (peer, sequence number) a server peer's datagram starts with.
fn dgram_id(b: &[u8]) -> Option<(u16, u64)> {
    if b.len() < ID_LEN || b[0] != b'U' {
        return None;
    }
    Some((u16::from_be_bytes([b[1], b[2]]), u64::from_be_bytes(b[3..11].try_into().ok()?)))
}

impl SimUdp {
    pub(crate) fn new(seed: u64) -> SimUdp {
        // (A stream of its own: the other draws of every seed stay as they were.)
        let mut rng = Rng::new(seed, 10);
        let rates = URates {
            send: rng.range(20, 600) as u32,
            big: rng.rate(150),
            complete: rng.range(200, 900) as u32,
            end: rng.rate(100),
            withhold: rng.rate(100),
            echo_lost: rng.rate(300),
            refuse: rng.rate(100),
        };
        let n = rng.range(1, 9) as usize;
        let peers = (0..n).map(|i| SocketAddr::from(([10, 0, 0, 1 + i as u8], 5000 + i as u16))).collect();
        SimUdp {
            rng,
            rates,
            bufs: None,
            socks: Vec::new(),
            ops: Vec::new(),
            max_datagram: 0,
            peers,
            next_seq: vec![0; n],
            sent: BTreeMap::new(),
            handed: BTreeSet::new(),
            delivered: BTreeSet::new(),
            truncated: 0,
            calm: false,
        }
    }

    /// The engine receives up to `max_datagram` bytes per datagram.
    pub(crate) fn set_max_datagram(&mut self, max_datagram: usize) {
        self.max_datagram = max_datagram;
    }

    /// The worker listens on the UDP socket `fd` (inode `ino`).
    pub(super) fn add_server(&mut self, fd: RawFd, ino: u64) {
        self.socks.push(USock { fd, ino, server: true, peer: None, queue: VecDeque::new(), closed: false });
    }

    /// A datagram from the first peer to the worker's open socket (the schedule's last one
    /// before the stop: a listening worker must deliver it), whatever its queue holds.
    pub(crate) fn probe_datagram(&mut self) -> Option<(u16, u64)> {
        let server = self.socks.iter().position(|s| s.server && !s.closed && ino_of(s.fd) == Some(s.ino))?;
        let seq = self.next_seq[0];
        self.next_seq[0] += 1;
        let mut d = vec![b'U'];
        d.extend_from_slice(&0u16.to_be_bytes());
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(b"probe");
        self.sent.insert((0, seq), d.clone());
        let from = self.peers[0];
        self.socks[server].queue.push_back((from, d));
        Some((0, seq))
    }

    pub(super) fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    pub(super) fn calm_down(&mut self) {
        self.calm = true;
    }

    /// The application was given `data` from `from` by `on_datagram`: it must be one whole
    /// datagram that sender sent, handed to the engine uncut, delivered once.
    pub(crate) fn check_delivery(&mut self, from: SocketAddr, data: &[u8]) -> Result<(), String> {
        let Some(id) = dgram_id(data) else {
            return Err(format!("on_datagram was given {} bytes no peer sent as a datagram", data.len()));
        };
        match self.sent.get(&id) {
            Some(d) if d.as_slice() == data => {}
            Some(d) => return Err(format!("datagram {id:?} of {} bytes delivered as {} bytes", d.len(), data.len())),
            None => return Err(format!("datagram {id:?} delivered but never sent")),
        }
        if self.peers.get(id.0 as usize) != Some(&from) {
            return Err(format!("datagram {id:?} delivered as from {from}"));
        }
        if !self.handed.contains(&id) {
            return Err(format!("datagram {id:?} delivered though the kernel handed it over cut (or not at all)"));
        }
        if !self.delivered.insert(id) {
            return Err(format!("datagram {id:?} delivered twice"));
        }
        Ok(())
    }

    /// After the stop: every datagram handed over whole was delivered; the engine counted
    /// every truncated one; nothing is in flight.
    pub(crate) fn final_check(&self, truncated_counted: u64) -> Vec<String> {
        let mut errs = Vec::new();
        let lost: Vec<_> = self.handed.difference(&self.delivered).take(5).collect();
        if !lost.is_empty() {
            errs.push(format!("datagrams handed to the engine whole but never delivered: {lost:?}"));
        }
        if truncated_counted != self.truncated {
            errs.push(format!("{} datagrams truncated, {truncated_counted} counted", self.truncated));
        }
        if !self.ops.is_empty() {
            errs.push(format!("{} UDP operations in flight after the stop", self.ops.len()));
        }
        errs
    }
}

impl SimKernel {
    /// The UDP socket behind `fd` (learned on its first operation), unless closed.
    fn udp_sock(&mut self, fd: RawFd) -> Option<usize> {
        let ino = ino_of(fd)?;
        let u = &mut self.udp;
        if let Some(i) = u.socks.iter().position(|s| s.ino == ino && !s.closed) {
            return Some(i);
        }
        // (The worker's sockets are known from their registration: this is a client's.)
        // SAFETY: only borrowed for getpeername; `fd` is open (fstat succeeded above).
        let peer = crate::sys::peer_addr(unsafe { BorrowedFd::borrow_raw(fd) });
        peer?;
        u.socks.push(USock { fd, ino, server: false, peer, queue: VecDeque::new(), closed: false });
        let i = u.socks.len() - 1;
        self.note(format!("udp {i}: a client's socket"));
        Some(i)
    }

    /// A RECVMSG or SENDMSG SQE.
    pub(super) fn issue_udp(&mut self, s: Sqe) {
        let Some(sock) = self.udp_sock(s.fd) else {
            self.violation(format!("UDP operation on fd {}, which names no open UDP socket", s.fd));
            self.post(s.user_data, -libc::EBADF, 0);
            return;
        };
        // SAFETY: the SQE's address is the engine's `msghdr`, which the kernel reads at
        // submission (now); the engine keeps it alive while the operation is in flight.
        let hdr = unsafe { std::ptr::read_unaligned(s.addr as *const libc::msghdr) };
        if s.opcode == opcode::RecvMsgMulti::CODE {
            let multishot = s.ioprio & IORING_RECV_MULTISHOT != 0;
            if !multishot || s.flags & IOSQE_BUFFER_SELECT == 0 || s.buf_group != crate::buffers::UDP_BGID {
                return self.violation(format!("unmodelled RECVMSG {s:?}"));
            }
            let kind = UKind::Recv { namelen: hdr.msg_namelen as usize, controllen: hdr.msg_controllen };
            self.udp.ops.push(UOp { ud: s.user_data, sock, kind });
            return;
        }
        if hdr.msg_iovlen != 1 {
            return self.violation(format!("SENDMSG with {} iovecs", hdr.msg_iovlen));
        }
        // SAFETY: one iovec at `msg_iov`, inside the engine's datagram box.
        let iov = unsafe { std::ptr::read_unaligned(hdr.msg_iov) };
        let to = (!hdr.msg_name.is_null()).then(|| {
            // SAFETY: `msg_namelen` bytes at `msg_name`, inside the engine's datagram box.
            let name = unsafe { std::slice::from_raw_parts(hdr.msg_name as *const u8, hdr.msg_namelen as usize) };
            crate::buffers::sockaddr_from(name)
        });
        let to = match to {
            Some(None) => return self.violation(format!("SENDMSG to an unreadable address {s:?}")),
            Some(Some(a)) => Some(a),
            None => None,
        };
        let kind = UKind::Send { to, base: iov.iov_base as u64, len: iov.iov_len };
        self.udp.ops.push(UOp { ud: s.user_data, sock, kind });
        if self.udp.rng.chance(self.rates.inline) {
            // Room in the socket buffer: the datagram leaves during submission.
            let i = self.udp.ops.len() - 1;
            self.udp_complete(i);
        }
    }

    /// Cancels the UDP operation `ud` (it posts `-ECANCELED`); the number cancelled.
    pub(super) fn udp_cancel(&mut self, ud: u64) -> usize {
        match self.udp.ops.iter().position(|o| o.ud == ud) {
            Some(i) => {
                self.udp.ops.remove(i);
                self.post(ud, -libc::ECANCELED, 0);
                1
            }
            None => 0,
        }
    }

    /// The peers act: the server's peers send datagrams. Closed descriptors are noticed.
    pub(super) fn udp_world(&mut self) {
        for i in 0..self.udp.socks.len() {
            let s = &self.udp.socks[i];
            if s.closed || ino_of(s.fd) == Some(s.ino) {
                continue;
            }
            self.udp.socks[i].closed = true;
            let dropped = std::mem::take(&mut self.udp.socks[i].queue).len();
            self.note(format!("udp {i}: engine closed its fd ({dropped} datagrams queued on it dropped)"));
            if self.udp.ops.iter().any(|o| o.sock == i) {
                self.violation(format!("udp {i}: fd closed while an operation is in flight"));
            }
        }
        let Some(server) = self.udp.socks.iter().position(|s| s.server && !s.closed) else {
            if !self.udp.calm && self.udp.socks.iter().any(|s| s.server) {
                // (Unlistened: the peers' datagrams meet a closed port.)
                self.mark("udp datagrams meet a closed port");
            }
            return;
        };
        let u = &mut self.udp;
        if u.calm {
            return;
        }
        for _ in 0..u.rng.range(1, 4) {
            if !u.rng.chance(u.rates.send) {
                continue;
            }
            let p = u.rng.below(u.peers.len() as u64) as usize;
            let size = if u.rng.chance(u.rates.big) {
                u.rng.range(u.max_datagram as u64 + 1, (2 * u.max_datagram).min(IPV4_MAX) as u64 + 1) as usize
            } else {
                u.rng.range(ID_LEN as u64, u.max_datagram as u64 + 1) as usize
            };
            if u.socks[server].queue.len() >= QUEUE_MAX {
                continue;
            }
            let seq = u.next_seq[p];
            u.next_seq[p] += 1;
            let mut d = Vec::with_capacity(size);
            d.push(b'U');
            d.extend_from_slice(&(p as u16).to_be_bytes());
            d.extend_from_slice(&seq.to_be_bytes());
            let salt = u.rng.next();
            d.extend((ID_LEN..size).map(|i| (i as u64).wrapping_mul(131).wrapping_add(salt) as u8));
            u.sent.insert((p as u16, seq), d.clone());
            let from = u.peers[p];
            u.socks[server].queue.push_back((from, d));
        }
    }

    /// Completes what the schedule says.
    pub(super) fn udp_progress(&mut self) {
        let mut i = 0;
        while i < self.udp.ops.len() {
            let complete = self.udp.calm || self.udp.rng.chance(self.udp.rates.complete);
            if complete && self.udp_complete(i) {
                continue;
            }
            i += 1;
        }
    }

    /// Completes UDP op `i` if it can; true when it left the list.
    fn udp_complete(&mut self, i: usize) -> bool {
        let op = self.udp.ops[i];
        match op.kind {
            UKind::Recv { namelen, controllen } => self.udp_recv(i, op, namelen, controllen),
            UKind::Send { to, base, len } => {
                self.udp.ops.remove(i);
                // SAFETY: the iovec's bytes, inside the engine's datagram box, which it keeps
                // until this CQE (the kernel reads them when the send runs).
                let data = unsafe { std::slice::from_raw_parts(base as *const u8, len) }.to_vec();
                self.udp_sent(op, to, data);
                true
            }
        }
    }

    fn udp_sent(&mut self, op: UOp, to: Option<SocketAddr>, data: Vec<u8>) {
        let (server, peer) = (self.udp.socks[op.sock].server, self.udp.socks[op.sock].peer);
        if data.len() > IPV4_MAX {
            self.mark("udp EMSGSIZE");
            self.post(op.ud, -libc::EMSGSIZE, 0);
            return;
        }
        if server {
            let Some(to) = to else {
                self.violation("a SENDMSG on the worker's socket without a destination".into());
                self.post(op.ud, -libc::EDESTADDRREQ, 0);
                return;
            };
            if let Some((p, seq)) = dgram_id(&data) {
                if self.udp.peers.get(p as usize) != Some(&to) {
                    self.violation(format!("the reply to datagram {:?} went to {to}", (p, seq)));
                } else {
                    self.mark("udp reply to its sender");
                }
            }
            self.post(op.ud, data.len() as i32, 0);
            return;
        }
        if to.is_some() && to != peer {
            self.violation(format!("a client sent to {to:?}, not its peer {peer:?}"));
        }
        let peer = peer.expect("a client has a peer");
        if !self.udp.calm && self.udp.rng.chance(self.udp.rates.refuse) {
            // (An ICMP port unreachable from an earlier datagram.)
            self.mark("udp send refused");
            self.post(op.ud, -libc::ECONNREFUSED, 0);
            return;
        }
        let n = data.len() as i32;
        if !self.udp.calm && self.udp.rng.chance(self.udp.rates.echo_lost) {
            self.mark("udp echo lost");
        } else if self.udp.socks[op.sock].queue.len() < QUEUE_MAX {
            self.udp.socks[op.sock].queue.push_back((peer, data));
        }
        self.post(op.ud, n, 0);
    }

    /// Hands queued datagrams to a multishot RECVMSG, each in one buffer of the datagram
    /// pool as the kernel lays it out.
    fn udp_recv(&mut self, i: usize, op: UOp, namelen: usize, controllen: usize) -> bool {
        for _ in 0..self.udp.rng.range(1, 4) {
            if self.udp.socks[op.sock].queue.is_empty() {
                return false;
            }
            let withhold = !self.udp.calm && self.udp.rng.chance(self.udp.rates.withhold);
            let taken = if withhold { None } else { self.udp.bufs.as_mut().and_then(BufRing::take) };
            let Some((bid, addr, cap)) = taken else {
                self.mark("udp ENOBUFS");
                self.udp.ops.remove(i);
                self.post(op.ud, -libc::ENOBUFS, 0);
                return true;
            };
            let (from, data) = self.udp.socks[op.sock].queue.pop_front().expect("checked");
            let head = crate::buffers::RECVMSG_OUT_LEN + namelen + controllen;
            if cap < head {
                self.violation(format!("datagram buffer of {cap} bytes cannot hold the {head}-byte header"));
                return false;
            }
            let room = cap - head;
            let n = data.len().min(room);
            let cut = data.len() > room;
            let mut name = [0u8; 16];
            if let SocketAddr::V4(a) = from {
                name[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                name[2..4].copy_from_slice(&a.port().to_be_bytes());
                name[4..8].copy_from_slice(&a.ip().octets());
            }
            let header: [u32; 4] =
                [name.len() as u32, 0, data.len() as u32, if cut { libc::MSG_TRUNC as u32 } else { 0 }];
            // SAFETY: `addr..addr+cap` is datagram buffer `bid`, published by the engine and
            // the kernel's until this CQE names it; header, name field and `n ≤ room`
            // payload bytes fit in `cap`.
            unsafe {
                let p = addr as *mut u8;
                std::ptr::copy_nonoverlapping(header.as_ptr().cast::<u8>(), p, 16);
                std::ptr::write_bytes(p.add(16), 0, namelen + controllen);
                std::ptr::copy_nonoverlapping(name.as_ptr(), p.add(16), name.len().min(namelen));
                std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(head), n);
            }
            let server = self.udp.socks[op.sock].server;
            if cut {
                self.mark("udp datagram truncated");
                self.udp.truncated += 1;
            } else if let (true, Some(id)) = (server, dgram_id(&data)) {
                self.note(format!(
                    "udp {}: datagram {id:?} ({} bytes) handed over in buffer {bid}",
                    op.sock,
                    data.len()
                ));
                self.udp.handed.insert(id);
                if self.udp.socks.iter().position(|s| s.server) != Some(op.sock) {
                    self.mark("udp datagram on a relistened socket");
                }
            }
            let end = !self.udp.calm && self.udp.rng.chance(self.udp.rates.end);
            let flags = CQE_F_BUFFER | (bid as u32) << 16 | if end { 0 } else { CQE_F_MORE };
            if !self.post(op.ud, (head + n) as i32, flags) || end {
                self.mark("udp multishot ended");
                self.udp.ops.remove(i);
                return true;
            }
        }
        false
    }
}
