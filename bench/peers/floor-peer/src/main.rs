//! The "kernel floor": the least work an io_uring echo server can do per message.
//!
//! One ring (SINGLE_ISSUER | DEFER_TASKRUN, SQ 1024 / CQ 4096 as ringman's), one multishot
//! accept straight into the fixed-file table (no regular fds for connections), one multishot
//! recv per connection into a provided buffer ring of the same shape as ringman's (1024 ×
//! 8 KiB; `--buf-size B` sets the size of each buffer), and one SENDMSG per connection per
//! completion batch whose iovecs point at the received buffers themselves: nothing is copied
//! in user space, and a buffer goes back to the kernel only once the send that carried it
//! completed. Short sends are resumed, and a multishot recv that ran out of buffers (ENOBUFS)
//! is re-armed once buffers were recycled.
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const BGID: u16 = 0;
const BUF_COUNT: u16 = 1024;
/// Size of each provided buffer without `--buf-size`: ringman's default receive buffer.
const DEFAULT_BUF_SIZE: usize = 8192;
const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 4096;
/// Fixed-file table size ceiling (the kernel also caps it at RLIMIT_NOFILE).
const MAX_FILES: u64 = 65536;
const ACCEPT: u64 = u64::MAX;
const KIND_RECV: u64 = 0;
const KIND_SEND: u64 = 1;
/// Shutdown and close: nothing to do on completion.
const KIND_OTHER: u64 = 2;

/// A provided-buffer ring registered with the kernel.
struct BufRing {
    entries: *mut types::BufRingEntry,
    bufs: Vec<u8>,
    tail: u16,
    /// Size of each buffer.
    size: usize,
}

impl BufRing {
    fn new(ring: &IoUring, size: usize) -> std::io::Result<Self> {
        let bytes = BUF_COUNT as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: anonymous private mapping, no file or existing memory involved; the result
        // is checked against MAP_FAILED. mmap memory is page aligned, as the kernel requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut br = BufRing { entries: ptr.cast(), bufs: vec![0u8; BUF_COUNT as usize * size], tail: 0, size };
        for bid in 0..BUF_COUNT {
            br.push(bid);
        }
        br.publish();
        // SAFETY: `entries` points to BUF_COUNT page-aligned entries that live (never unmapped)
        // as long as the process; the buffers they name live in `bufs`, which is never
        // reallocated (the BufRing lives until exit).
        unsafe { ring.submitter().register_buf_ring_with_flags(ptr as u64, BUF_COUNT, BGID, 0)? };
        Ok(br)
    }

    /// Hands buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (BUF_COUNT - 1)) as usize;
        let addr = self.bufs.as_ptr() as u64 + bid as u64 * self.size as u64;
        // SAFETY: idx < BUF_COUNT, so the entry is inside the mapping; the kernel only reads
        // entries between its head and our published tail, and this slot is past the tail.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(addr);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the pushed buffers to the kernel.
    fn publish(&self) {
        // SAFETY: `entries` is the base of the ring, whose first entry's `resv` field is the
        // shared tail; it is 2-byte aligned and only written by us, read by the kernel.
        let tail = unsafe { &*(types::BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Address of buffer `bid` plus `off` (inside the buffer).
    fn addr(&self, bid: u16, off: usize) -> *mut libc::c_void {
        debug_assert!(off < self.size);
        self.bufs[bid as usize * self.size + off..].as_ptr() as *mut libc::c_void
    }
}

struct Conn {
    /// Index in the fixed-file table.
    slot: u32,
    /// Received buffers (bid, len) not yet handed to a send.
    pending: Vec<(u16, u32)>,
    /// Buffers the in-flight SENDMSG carries; returned to the kernel when it completes.
    inflight: Vec<(u16, u32)>,
    /// Bytes of `inflight` already sent (a short send is resumed from here).
    skip: usize,
    /// iovecs of the in-flight SENDMSG (not touched while it is in flight).
    iov: Vec<libc::iovec>,
    /// The in-flight SENDMSG's header (boxed: stable address while the slab grows).
    msg: Box<libc::msghdr>,
    send_inflight: bool,
    recv_armed: bool,
    eof: bool,
    broken: bool,
    dirty: bool,
}

impl Conn {
    fn new(slot: u32) -> Self {
        Conn {
            slot,
            pending: Vec::new(),
            inflight: Vec::new(),
            skip: 0,
            iov: Vec::new(),
            // SAFETY: an all-zero msghdr (no name, no iovecs, no control data) is valid.
            msg: Box::new(unsafe { std::mem::zeroed() }),
            send_inflight: false,
            recv_armed: false,
            eof: false,
            broken: false,
            dirty: false,
        }
    }
}

struct Server {
    ring: IoUring,
    bufs: BufRing,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    /// Connections whose multishot recv stopped with ENOBUFS.
    starved: Vec<usize>,
    recycled: bool,
    listen_fd: i32,
}

fn ud(idx: usize, kind: u64) -> u64 {
    ((idx as u64) << 2) | kind
}

impl Server {
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every SQE we build points either at nothing (accept, recv with provided
            // buffers, shutdown, close) or at a connection's boxed `msg`, its `iov` and the
            // provided buffers in `inflight`, none of which is touched, moved or recycled
            // until the SENDMSG completes (send_inflight guards them) and whose slot is not
            // freed before.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            self.ring.submit().expect("io_uring_enter");
        }
    }

    fn arm_accept(&mut self) {
        let sqe =
            opcode::AcceptMulti::new(types::Fd(self.listen_fd)).allocate_file_index(true).build().user_data(ACCEPT);
        self.push(sqe);
    }

    fn arm_recv(&mut self, idx: usize) {
        let c = self.conns[idx].as_mut().expect("live conn");
        c.recv_armed = true;
        let sqe = opcode::RecvMulti::new(types::Fixed(c.slot), BGID).build().user_data(ud(idx, KIND_RECV));
        self.push(sqe);
    }

    /// Issues a SENDMSG of `inflight` from byte `skip` on.
    fn send(&mut self, idx: usize) {
        let c = self.conns[idx].as_mut().expect("live conn");
        c.iov.clear();
        let mut skip = c.skip;
        for &(bid, len) in &c.inflight {
            let len = len as usize;
            if skip >= len {
                skip -= len;
                continue;
            }
            c.iov.push(libc::iovec { iov_base: self.bufs.addr(bid, skip), iov_len: len - skip });
            skip = 0;
        }
        c.msg.msg_iov = c.iov.as_mut_ptr();
        c.msg.msg_iovlen = c.iov.len() as _;
        let sqe = opcode::SendMsg::new(types::Fixed(c.slot), &*c.msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(ud(idx, KIND_SEND));
        c.send_inflight = true;
        self.push(sqe);
    }

    fn flush(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].as_mut() else { return };
        c.dirty = false;
        if c.send_inflight || c.pending.is_empty() || c.broken {
            return;
        }
        std::mem::swap(&mut c.inflight, &mut c.pending);
        c.skip = 0;
        self.send(idx);
    }

    fn recycle(bufs: &mut BufRing, list: &mut Vec<(u16, u32)>) -> bool {
        for &(bid, _) in list.iter() {
            bufs.push(bid);
        }
        let any = !list.is_empty();
        list.clear();
        any
    }

    fn maybe_close(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].as_mut() else { return };
        let done = c.broken || (c.eof && c.pending.is_empty());
        if done && !c.send_inflight && !c.recv_armed {
            self.recycled |= Self::recycle(&mut self.bufs, &mut c.pending);
            let sqe = opcode::Close::new(types::Fixed(c.slot)).build().user_data(ud(idx, KIND_OTHER));
            self.conns[idx] = None;
            self.free.push(idx);
            self.push(sqe);
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.arm_accept();
        }
        if res < 0 {
            return;
        }
        // TCP_NODELAY is inherited from the listening socket (set in main).
        let conn = Conn::new(res as u32);
        let idx = match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.arm_recv(idx);
    }

    fn on_recv(&mut self, idx: usize, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let c = self.conns[idx].as_mut().expect("live conn");
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("recv with provided buffer has a bid");
            if c.broken {
                self.bufs.push(bid);
                self.recycled = true;
            } else {
                c.pending.push((bid, res as u32));
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(idx);
                }
            }
        }
        if more {
            return;
        }
        c.recv_armed = false;
        if res == -libc::ENOBUFS {
            self.starved.push(idx);
        } else if res > 0 {
            if !c.broken {
                self.arm_recv(idx);
            }
        } else if res == 0 {
            c.eof = true;
        } else {
            c.broken = true;
        }
        self.maybe_close(idx);
    }

    fn on_send(&mut self, idx: usize, res: i32) {
        let c = self.conns[idx].as_mut().expect("live conn");
        c.send_inflight = false;
        if res < 0 {
            c.broken = true;
            self.recycled |= Self::recycle(&mut self.bufs, &mut c.inflight);
            self.recycled |= Self::recycle(&mut self.bufs, &mut c.pending);
            // Ends the armed multishot recv.
            let sqe =
                opcode::Shutdown::new(types::Fixed(c.slot), libc::SHUT_RDWR).build().user_data(ud(idx, KIND_OTHER));
            self.push(sqe);
        } else {
            let total: usize = c.inflight.iter().map(|&(_, len)| len as usize).sum();
            c.skip += res as usize;
            if c.skip < total {
                self.send(idx);
                return;
            }
            self.recycled |= Self::recycle(&mut self.bufs, &mut c.inflight);
            c.skip = 0;
            if !c.pending.is_empty() {
                self.flush(idx);
                return;
            }
        }
        self.maybe_close(idx);
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.arm_accept();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(CQ_ENTRIES as usize);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            for &(ud, res, flags) in &cqes {
                if ud == ACCEPT {
                    self.on_accept(res, flags);
                    continue;
                }
                let idx = (ud >> 2) as usize;
                match ud & 3 {
                    KIND_RECV => self.on_recv(idx, res, flags),
                    KIND_SEND => self.on_send(idx, res),
                    _ => {}
                }
            }
            let dirty = std::mem::take(&mut self.dirty);
            for &idx in &dirty {
                self.flush(idx);
            }
            self.dirty = dirty;
            self.dirty.clear();
            if std::mem::take(&mut self.recycled) {
                self.bufs.publish();
                for idx in std::mem::take(&mut self.starved) {
                    if self.conns[idx].as_ref().is_some_and(|c| !c.broken && !c.eof) {
                        self.arm_recv(idx);
                    } else {
                        self.maybe_close(idx);
                    }
                }
            }
        }
    }
}

fn main() {
    let args = peer_common::parse(&["echo"], &[]);
    let listener = std::net::TcpListener::bind(args.addr).expect("bind");
    let fd = listener.as_raw_fd();
    // Accepted sockets inherit TCP_NODELAY from the listener (they cannot get it later: they
    // exist only as fixed files).
    peer_common::set_nodelay(fd);
    // SAFETY: re-listening on our own bound socket only raises the backlog.
    unsafe { libc::listen(fd, 4096) };
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)
        .expect("io_uring setup");
    // SAFETY: an all-zero rlimit is a valid out-parameter.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let files = (lim.rlim_cur as u64).clamp(1024, MAX_FILES) as u32;
    ring.submitter().register_files_sparse(files).expect("fixed-file table");
    let bufs = BufRing::new(&ring, args.buf_size.unwrap_or(DEFAULT_BUF_SIZE)).expect("buffer ring");
    let mut server = Server {
        ring,
        bufs,
        conns: Vec::new(),
        free: Vec::new(),
        dirty: Vec::new(),
        starved: Vec::new(),
        recycled: false,
        listen_fd: fd,
    };
    peer_common::announce(listener.local_addr().expect("local addr"));
    if let Err(e) = server.run() {
        eprintln!("floor-peer: {e}");
        std::process::exit(1);
    }
}
