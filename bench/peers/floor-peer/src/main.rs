//! The "kernel floor": the least work an io_uring echo server can do per message.
//!
//! One ring (SINGLE_ISSUER | DEFER_TASKRUN), one multishot accept, one multishot recv per
//! connection into a provided buffer ring, and one SEND per connection per completion batch
//! (everything received for a connection in that batch goes out together). Short sends are
//! resumed, buffers are recycled as soon as their bytes are copied, and a multishot recv that
//! ran out of buffers (ENOBUFS) or otherwise stopped is re-armed.
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const BGID: u16 = 0;
const BUF_COUNT: u16 = 4096;
const BUF_SIZE: usize = 4096;
const ACCEPT: u64 = u64::MAX;
const KIND_RECV: u64 = 0;
const KIND_SEND: u64 = 1;

/// A provided-buffer ring registered with the kernel.
struct BufRing {
    entries: *mut types::BufRingEntry,
    bufs: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> std::io::Result<Self> {
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
        let mut br = BufRing { entries: ptr.cast(), bufs: vec![0u8; BUF_COUNT as usize * BUF_SIZE], tail: 0 };
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
        let addr = self.bufs.as_ptr() as u64 + bid as u64 * BUF_SIZE as u64;
        // SAFETY: idx < BUF_COUNT, so the entry is inside the mapping; the kernel only reads
        // entries between its head and our published tail, and this slot is past the tail.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(addr);
        e.set_len(BUF_SIZE as u32);
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

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        let at = bid as usize * BUF_SIZE;
        &self.bufs[at..at + len]
    }
}

#[derive(Default)]
struct Conn {
    fd: i32,
    /// Bytes handed to the in-flight SEND (must not move while it is in flight).
    sending: Vec<u8>,
    sent: usize,
    /// Bytes received since the last SEND was issued.
    pending: Vec<u8>,
    send_inflight: bool,
    recv_armed: bool,
    eof: bool,
    broken: bool,
    dirty: bool,
}

struct Server {
    ring: IoUring,
    bufs: BufRing,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    dirty: Vec<usize>,
    listen_fd: i32,
}

fn ud(idx: usize, kind: u64) -> u64 {
    ((idx as u64) << 1) | kind
}

impl Server {
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every SQE we build points either at nothing (accept, recv with provided
            // buffers) or at a connection's `sending` Vec, which is not touched until the
            // SEND completes (send_inflight guards it) and whose slot is not freed before.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            self.ring.submit().expect("io_uring_enter");
        }
    }

    fn arm_accept(&mut self) {
        let sqe = opcode::AcceptMulti::new(types::Fd(self.listen_fd)).build().user_data(ACCEPT);
        self.push(sqe);
    }

    fn arm_recv(&mut self, idx: usize) {
        let c = self.conns[idx].as_mut().expect("live conn");
        c.recv_armed = true;
        let sqe = opcode::RecvMulti::new(types::Fd(c.fd), BGID).build().user_data(ud(idx, KIND_RECV));
        self.push(sqe);
    }

    fn send(&mut self, idx: usize) {
        let c = self.conns[idx].as_mut().expect("live conn");
        let rest = &c.sending[c.sent..];
        let sqe =
            opcode::Send::new(types::Fd(c.fd), rest.as_ptr(), rest.len() as u32).build().user_data(ud(idx, KIND_SEND));
        c.send_inflight = true;
        self.push(sqe);
    }

    fn flush(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].as_mut() else { return };
        c.dirty = false;
        if c.send_inflight || c.pending.is_empty() || c.broken {
            return;
        }
        std::mem::swap(&mut c.sending, &mut c.pending);
        c.sent = 0;
        self.send(idx);
    }

    fn maybe_close(&mut self, idx: usize) {
        let Some(c) = self.conns[idx].as_ref() else { return };
        let done = c.broken || (c.eof && c.pending.is_empty());
        if done && !c.send_inflight && !c.recv_armed {
            // SAFETY: the fd is ours and no request referencing it is in flight any more.
            unsafe { libc::close(c.fd) };
            self.conns[idx] = None;
            self.free.push(idx);
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.arm_accept();
        }
        if res < 0 {
            return;
        }
        let one: libc::c_int = 1;
        // SAFETY: `res` is a fresh socket fd; the option value is a valid c_int.
        unsafe {
            libc::setsockopt(
                res,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let conn = Conn { fd: res, ..Conn::default() };
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
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("recv with provided buffer has a bid");
            let c = self.conns[idx].as_mut().expect("live conn");
            c.pending.extend_from_slice(self.bufs.buf(bid, res as usize));
            self.bufs.push(bid);
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
        if more {
            return;
        }
        let c = self.conns[idx].as_mut().expect("live conn");
        c.recv_armed = false;
        if res > 0 || res == -libc::ENOBUFS {
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
            // SAFETY: plain syscall on our own fd; it makes the armed recv terminate.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        } else {
            c.sent += res as usize;
            if c.sent < c.sending.len() {
                self.send(idx);
                return;
            }
            c.sending.clear();
            c.sent = 0;
            if !c.pending.is_empty() {
                self.flush(idx);
                return;
            }
        }
        self.maybe_close(idx);
    }

    fn run(&mut self) -> std::io::Result<()> {
        self.arm_accept();
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(4096);
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
                let idx = (ud >> 1) as usize;
                match ud & 1 {
                    KIND_RECV => self.on_recv(idx, res, flags),
                    _ => self.on_send(idx, res),
                }
            }
            self.bufs.publish();
            let dirty = std::mem::take(&mut self.dirty);
            for &idx in &dirty {
                self.flush(idx);
            }
            self.dirty = dirty;
            self.dirty.clear();
        }
    }
}

fn main() {
    let args = peer_common::parse(&["echo"]);
    let listener = std::net::TcpListener::bind(args.addr).expect("bind");
    // SAFETY: re-listening on our own bound socket only raises the backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(32768)
        .build(4096)
        .expect("io_uring setup");
    let bufs = BufRing::new(&ring).expect("buffer ring");
    let mut server =
        Server { ring, bufs, conns: Vec::new(), free: Vec::new(), dirty: Vec::new(), listen_fd: listener.as_raw_fd() };
    peer_common::announce(listener.local_addr().expect("local addr"));
    if let Err(e) = server.run() {
        eprintln!("floor-peer: {e}");
        std::process::exit(1);
    }
}
