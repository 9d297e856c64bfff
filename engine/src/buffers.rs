//! Memory shared with the kernel: the provided-buffer ring for receives and the registered
//! (fixed) arena for sends.
//!
//! # Invariants (the only place that reasons about kernel-visible memory)
//!
//! 1. Both regions are anonymous `mmap`s owned by the ring thread; they are unmapped only in
//!    `Drop`, after the ring has been told to forget them (`unregister_*`) and after the engine
//!    has stopped every operation that could still write to them (a ring thread exits only
//!    once its connection slab is empty and its accept/wake operations have completed).
//! 2. A receive buffer is owned by the kernel from the moment its id is published in the ring
//!    (tail store with `Release` ordering) until a CQE names it; then it is owned by the engine
//!    (as a [`RecvBuf`] guard when its bytes are read) until [`RecvRing::give_back`] or
//!    [`RecvRing::recycle`] republishes it. The engine returns every buffer a CQE names,
//!    including CQEs for connections that are already gone. A send chunk lent bytes of a
//!    taken buffer ([`ChunkMem::Lent`]) is one more hold on it: the buffer is republished
//!    only when the delivery and every such chunk have let go, so the kernel never writes
//!    into bytes a send has yet to read.
//! 3. A send chunk is owned by exactly one connection's send queue (a shared chunk holds a
//!    reference to bytes the application may share elsewhere: read only, never written).
//!    While a send SQE (or the iovec array of a SENDMSG) points into it, the chunk stays in
//!    that queue (one send in flight per connection), so it is never handed to another
//!    connection, or freed, before the CQE. The iovec array and `msghdr` of a connection's
//!    SENDMSG live in its slot, untouched until that CQE.
//! 4. UDP: a socket's [`RecvMsgHdr`] (the `msghdr` its multishot RECVMSG was armed with) lives
//!    in the socket's slot, which is freed only after the receive's last CQE; a
//!    [`DatagramOut`] (SENDMSG header, iovec, destination address and bytes) is boxed and
//!    kept in the datagrams-in-flight slab until its CQE. The datagram pool ([`UDP_BGID`])
//!    follows invariants 1 and 2 like the stream pool.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use crate::ring::Ring;
use io_uring::types::BufRingEntry;

/// Buffer group id of the per-ring receive pool.
pub(crate) const RECV_BGID: u16 = 0;

/// Buffer group id of the per-ring datagram pool (UDP sockets: each buffer holds one
/// datagram with its `io_uring_recvmsg_out` header and the sender's address).
pub(crate) const UDP_BGID: u16 = 1;

// The kernel reads `struct io_uring_buf` (16 bytes) from the ring; the tail overlays the
// `resv` field of entry 0.
const _: () = assert!(std::mem::size_of::<BufRingEntry>() == 16);

/// Anonymous, page-aligned memory.
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    fn new(len: usize) -> io::Result<Mmap> {
        // SAFETY: anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: NonNull::new(ptr.cast()).expect("mmap returned null"), len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and nobody else unmaps.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The provided-buffer ring (IORING_REGISTER_PBUF_RING, 5.19) that multishot receives pick
/// their buffers from.
pub(crate) struct RecvRing {
    entries: Mmap,
    data: Mmap,
    count: u16,
    buf_size: u32,
    bgid: u16,
    /// Local copy of the tail; published to the kernel in [`RecvRing::publish`].
    tail: u16,
    unpublished: bool,
    /// Per buffer: how many hold it out of the kernel's hands (its receive's delivery, and
    /// each send chunk lent its bytes); it goes back when the last lets go (invariant 2).
    holds: Vec<u16>,
    /// Send chunks lent receive bytes, in all.
    lent: usize,
}

/// Received bytes shorter than this are copied when sent, never lent.
pub(crate) const LEND_MIN: usize = 1024;

impl RecvRing {
    /// Maps `count` buffers of `buf_size` bytes and registers them as buffer group
    /// [`RECV_BGID`] of `ring`. `count` must be a power of two ≤ 32768.
    pub(crate) fn new(ring: &mut Ring, count: u16, buf_size: u32) -> io::Result<RecvRing> {
        RecvRing::with_group(ring, count, buf_size, RECV_BGID)
    }

    /// [`RecvRing::new`] as buffer group `bgid` (the datagram pool is [`UDP_BGID`]).
    pub(crate) fn with_group(ring: &mut Ring, count: u16, buf_size: u32, bgid: u16) -> io::Result<RecvRing> {
        assert!(count.is_power_of_two() && count <= 32768);
        let entries = Mmap::new(count as usize * std::mem::size_of::<BufRingEntry>())?;
        let data = Mmap::new(count as usize * buf_size as usize)?;
        let mut ring_buf = RecvRing {
            entries,
            data,
            count,
            buf_size,
            bgid,
            tail: 0,
            unpublished: false,
            holds: vec![0; count as usize],
            lent: 0,
        };
        // SAFETY: the entry array is page aligned (mmap), sized for `count` entries, and lives
        // until the owner unregisters it before dropping it (invariant 1).
        unsafe {
            ring.register_buf_ring(ring_buf.entries.ptr.as_ptr() as u64, count, bgid)?;
        }
        for bid in 0..count {
            ring_buf.push(bid);
        }
        ring_buf.publish();
        Ok(ring_buf)
    }

    /// Size of each buffer: the most one receive completion can deliver.
    pub(crate) fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Takes buffer `bid`, into which the kernel wrote `len` bytes, out of the kernel's
    /// hands until [`RecvRing::give_back`] (invariant 2).
    ///
    /// # Safety
    /// A CQE of this ring named `bid` with result `len`, and that CQE's buffer has not been
    /// taken or recycled since: each CQE's buffer is taken once.
    pub(crate) unsafe fn take(&mut self, bid: u16, len: usize) -> RecvBuf {
        debug_assert!(bid < self.count && len <= self.buf_size as usize);
        debug_assert_eq!(self.holds[bid as usize], 0, "buffer {bid} taken while held");
        self.holds[bid as usize] = 1;
        // SAFETY: `bid < count` (the kernel only names buffers we published), so the offset
        // lies inside the data mapping.
        let ptr = unsafe { self.data.ptr.add(bid as usize * self.buf_size as usize) };
        RecvBuf { bid, ptr, len }
    }

    /// Hands a taken buffer back to the kernel (visible after [`RecvRing::publish`]) —
    /// unless send chunks still hold bytes of it: then the last of them returns it.
    pub(crate) fn give_back(&mut self, buf: RecvBuf) {
        let bid = buf.bid;
        std::mem::forget(buf);
        self.let_go(bid);
    }

    /// Lends bytes of taken buffer `bid` to a send chunk, which keeps it out of the
    /// kernel's hands until [`RecvRing::unlend`]. Refused (the caller copies) while a
    /// half of the pool is lent already, so receives never starve on bytes waiting to
    /// be sent.
    pub(crate) fn lend(&mut self, bid: u16) -> bool {
        let held = &mut self.holds[bid as usize];
        if self.lent >= self.count as usize / 2 || *held == 0 || *held == u16::MAX {
            return false;
        }
        *held += 1;
        self.lent += 1;
        true
    }

    /// A send chunk lent bytes of `bid` let go of them.
    pub(crate) fn unlend(&mut self, bid: u16) {
        self.lent -= 1;
        self.let_go(bid);
    }

    fn let_go(&mut self, bid: u16) {
        let held = &mut self.holds[bid as usize];
        debug_assert!(*held > 0, "buffer {bid} let go more often than held");
        *held -= 1;
        if *held == 0 {
            self.push(bid);
        }
    }

    /// Hands buffer `bid` back without taking it (a completion whose bytes are not wanted:
    /// a connection already gone, an error that still named a buffer).
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.push(bid);
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: `idx < count`, inside the entry mapping; the kernel never reads entries at or
        // beyond the published tail, so writing this slot does not race with it.
        let entry = unsafe { &mut *self.entries.ptr.as_ptr().cast::<BufRingEntry>().add(idx) };
        // SAFETY: `bid < count`, so the address is inside the data mapping.
        let addr = unsafe { self.data.ptr.as_ptr().add(bid as usize * self.buf_size as usize) };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.unpublished = true;
    }

    /// Publishes recycled buffers to the kernel with one release store.
    pub(crate) fn publish(&mut self) {
        if !self.unpublished {
            return;
        }
        self.unpublished = false;
        // SAFETY: entry 0 exists and was initialised; the tail field overlays its `resv`.
        let tail = unsafe { BufRingEntry::tail(self.entries.ptr.as_ptr().cast()) };
        // SAFETY: the kernel reads the tail concurrently, so store it atomically; the pointer
        // is 2-byte aligned inside our mapping.
        unsafe { (*tail.cast::<AtomicU16>()).store(self.tail, Ordering::Release) };
    }

    /// Unregisters the group; called before the mappings are dropped.
    pub(crate) fn unregister(&self, ring: &mut Ring) {
        ring.unregister_buf_ring(self.bgid);
    }
}

/// A receive buffer the engine holds between the completion that filled it and its return
/// to the kernel ([`RecvRing::give_back`]). Its bytes are borrowed from the guard, so no
/// slice of it can outlive the hold.
///
/// Dropping a guard instead of giving it back leaks the buffer from the pool (the kernel
/// never gets it again); that only happens while a ring thread unwinds from a panic, when
/// the whole pool is abandoned anyway.
#[must_use = "a receive buffer must be given back to its ring"]
pub(crate) struct RecvBuf {
    bid: u16,
    ptr: NonNull<u8>,
    len: usize,
}

impl RecvBuf {
    /// The buffer's id and the address range of its received bytes (to recognise a send
    /// of bytes that lie in it).
    pub(crate) fn region(&self) -> (u16, usize, usize) {
        (self.bid, self.ptr.as_ptr() as usize, self.len)
    }

    /// The received bytes.
    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr+len` lies inside the ring's data mapping, which outlives every
        // guard (the ring is dropped only after its runner returned), and the buffer is the
        // engine's alone until `give_back` consumes this guard (invariant 2). The slice
        // borrows the guard, so it cannot outlive the hold.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        debug_assert!(std::thread::panicking(), "receive buffer {} dropped without give_back", self.bid);
    }
}

/// Size of one send chunk.
pub(crate) const CHUNK: usize = 16 * 1024;

/// The most heap chunk memory one ring keeps pooled for reuse (once its registered chunks
/// are all in use, send queues take heap chunks; those beyond this are freed when drained).
pub(crate) const HEAP_POOL_BYTES: usize = 1024 * 1024;

/// Process-wide budget of registered (pinned) send memory, shared by all rings.
///
/// Registration pins pages and counts against RLIMIT_MEMLOCK (8 MiB for non-root here), so
/// rings take a slice of this budget and fall back to heap chunks when it is spent.
static FIXED_BUDGET: AtomicUsize = AtomicUsize::new(6 * 1024 * 1024);

/// Registered send memory of one ring: `count` chunks of [`CHUNK`] bytes, registered as fixed
/// buffer index 0.
pub(crate) struct SendArena {
    mem: Option<Mmap>,
    free: Vec<u16>,
    heap_pool: Vec<Box<[u8]>>,
    reserved: usize,
    /// Receive buffers of released lent chunks, on their way back to the receive ring.
    unlent: Vec<u16>,
}

/// Where a chunk's bytes live.
pub(crate) enum ChunkMem {
    /// Chunk `n` of the registered arena (sent with a fixed-buffer send).
    Fixed(u16),
    /// Heap memory (arena exhausted or unavailable, or a single large message).
    Heap(Box<[u8]>),
    /// Bytes the application shares with the queue ([`Connection::send_bytes`](crate::Connection::send_bytes),
    /// a cached file body): sent from where they are, never copied. Their capacity is their
    /// length, so nothing ever finds room to append in them; they are only read.
    Shared(bytes::Bytes),
    /// `len` received bytes at `ptr`, inside receive buffer `bid`, which the chunk holds
    /// out of the kernel's hands ([`RecvRing::lend`]) until it is released: an echo or a
    /// `pipe()` sends what arrived from where it arrived. Read only, like `Shared`.
    Lent { bid: u16, ptr: NonNull<u8>, len: usize },
}

impl SendArena {
    /// Registers up to `want` bytes of send chunks with `ring`. Returns an arena without fixed
    /// chunks when the budget is spent or the kernel refuses (ENOMEM under memlock).
    pub(crate) fn new(ring: &mut Ring, want: usize) -> (SendArena, Option<io::Error>) {
        let mut arena =
            SendArena { mem: None, free: Vec::new(), heap_pool: Vec::new(), reserved: 0, unlent: Vec::new() };
        let want = want / CHUNK * CHUNK;
        // (A simulated ring pins nothing: it takes what it asks for, so a seed's run does
        // not depend on what other rings of the process hold.)
        #[cfg(test)]
        if ring.is_sim() {
            let n = want / CHUNK;
            if let (true, Ok(mem)) = (n > 0, Mmap::new(want)) {
                let iov = libc::iovec { iov_base: mem.ptr.as_ptr().cast(), iov_len: want };
                // SAFETY: the simulated kernel only records the region.
                if unsafe { ring.register_buffer(iov) }.is_ok() {
                    arena.free = (0..n as u16).rev().collect();
                    arena.mem = Some(mem);
                }
            }
            return (arena, None);
        }
        let got = FIXED_BUDGET
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| Some(b - b.min(want)))
            .map(|b| b.min(want))
            .unwrap_or(0);
        if got < CHUNK {
            FIXED_BUDGET.fetch_add(got, Ordering::AcqRel);
            return (arena, None);
        }
        let mem = match Mmap::new(got) {
            Ok(m) => m,
            Err(e) => {
                FIXED_BUDGET.fetch_add(got, Ordering::AcqRel);
                return (arena, Some(e));
            }
        };
        let iov = libc::iovec { iov_base: mem.ptr.as_ptr().cast(), iov_len: got };
        // SAFETY: the mapping outlives the registration: `Drop for Core` unregisters buffers
        // before this arena (and its mapping) is dropped (invariant 1).
        match unsafe { ring.register_buffer(iov) } {
            Ok(()) => {
                let n = (got / CHUNK) as u16;
                arena.free = (0..n).rev().collect();
                arena.mem = Some(mem);
                arena.reserved = got;
                (arena, None)
            }
            Err(e) => {
                FIXED_BUDGET.fetch_add(got, Ordering::AcqRel);
                (arena, Some(e))
            }
        }
    }

    /// Number of registered chunks (0 when running on heap chunks only).
    pub(crate) fn fixed_chunks(&self) -> usize {
        self.mem.as_ref().map_or(0, |m| m.len / CHUNK)
    }

    /// A chunk for a send queue: registered if one is free, else a pooled heap chunk.
    pub(crate) fn alloc(&mut self) -> ChunkMem {
        match self.free.pop() {
            Some(i) => ChunkMem::Fixed(i),
            None => ChunkMem::Heap(self.heap_pool.pop().unwrap_or_else(|| vec![0u8; CHUNK].into_boxed_slice())),
        }
    }

    /// Returns a chunk. Heap chunks of the standard size are pooled, up to
    /// [`HEAP_POOL_BYTES`]; the rest go back to the allocator.
    pub(crate) fn release(&mut self, mem: ChunkMem) {
        match mem {
            ChunkMem::Fixed(i) => self.free.push(i),
            ChunkMem::Heap(b) if b.len() == CHUNK && self.heap_pool.len() < HEAP_POOL_BYTES / CHUNK => {
                self.heap_pool.push(b)
            }
            ChunkMem::Heap(_) | ChunkMem::Shared(_) => {}
            // Returned to the receive ring by `Core::return_lent` (the arena cannot reach it).
            ChunkMem::Lent { bid, .. } => self.unlent.push(bid),
        }
    }

    /// Receive buffers whose lent bytes were released since the last call.
    pub(crate) fn take_unlent(&mut self) -> impl Iterator<Item = u16> + '_ {
        self.unlent.drain(..)
    }

    /// Base pointer and capacity of a chunk. A shared chunk's capacity is its length (no
    /// room to write): callers write only between a chunk's `end` and its capacity.
    pub(crate) fn bytes(&mut self, mem: &mut ChunkMem) -> (*mut u8, usize) {
        match mem {
            ChunkMem::Fixed(i) => {
                let base = self.mem.as_ref().expect("fixed chunk without arena").ptr.as_ptr();
                // SAFETY: `i` < chunk count, so the offset is inside the arena mapping.
                (unsafe { base.add(*i as usize * CHUNK) }, CHUNK)
            }
            ChunkMem::Heap(b) => (b.as_mut_ptr(), b.len()),
            // (Read only: see above; the pointer is mutable only to share the signature.)
            ChunkMem::Shared(b) => (b.as_ptr().cast_mut(), b.len()),
            ChunkMem::Lent { ptr, len, .. } => (ptr.as_ptr(), *len),
        }
    }

    /// Unregisters the arena; called before the mapping is dropped.
    pub(crate) fn unregister(&self, ring: &mut Ring) {
        if self.mem.is_some() {
            ring.unregister_buffers();
        }
    }
}

impl Drop for SendArena {
    fn drop(&mut self) {
        FIXED_BUDGET.fetch_add(self.reserved, Ordering::AcqRel);
    }
}

/// The `msghdr` a UDP socket's multishot RECVMSG is armed with: room for the sender's
/// address (IPv4 or IPv6) and no control data. The kernel lays each datagram out in a
/// provided buffer as `io_uring_recvmsg_out`, this much name, then the payload, so the
/// header also tells the engine where the payload starts (invariant 4 keeps it alive).
pub(crate) struct RecvMsgHdr(Box<libc::msghdr>);

/// Bytes reserved for the sender's address in each datagram buffer (`sockaddr_in6`, which
/// holds an IPv4 `sockaddr_in` too).
pub(crate) const UDP_NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// Size of the `io_uring_recvmsg_out` header in front of each received datagram.
pub(crate) const RECVMSG_OUT_LEN: usize = 16;

impl RecvMsgHdr {
    pub(crate) fn new() -> RecvMsgHdr {
        // SAFETY: `msghdr` is plain data; all-zero is a valid value (null pointers, lengths 0).
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        hdr.msg_namelen = UDP_NAME_LEN as libc::socklen_t;
        RecvMsgHdr(hdr)
    }

    pub(crate) fn as_ptr(&self) -> *const libc::msghdr {
        &*self.0
    }

    pub(crate) fn get(&self) -> &libc::msghdr {
        &self.0
    }
}

/// Buffer size for datagrams of up to `payload` bytes: header, address, payload.
pub(crate) fn datagram_buf_size(payload: usize) -> u32 {
    (RECVMSG_OUT_LEN + UDP_NAME_LEN + payload) as u32
}

/// One datagram on its way out: the SENDMSG header points at the iovec, the destination
/// address (none on a connected socket) and the bytes, all inside this box (invariant 4).
pub(crate) struct DatagramOut {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: Option<socket2::SockAddr>,
    data: Vec<u8>,
}

impl DatagramOut {
    /// `data` for `to` (or the connected peer), with the header's pointers set.
    pub(crate) fn new(to: Option<std::net::SocketAddr>, data: Vec<u8>) -> Box<DatagramOut> {
        // SAFETY: `msghdr` is plain data; all-zero is a valid value.
        let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let iov = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut d = Box::new(DatagramOut { hdr, iov, addr: to.map(socket2::SockAddr::from), data });
        d.iov.iov_base = d.data.as_mut_ptr().cast();
        d.iov.iov_len = d.data.len();
        d.hdr.msg_iov = &mut d.iov;
        d.hdr.msg_iovlen = 1;
        if let Some(a) = &d.addr {
            d.hdr.msg_name = a.as_ptr() as *mut libc::c_void;
            d.hdr.msg_namelen = a.len();
        }
        d
    }

    /// The header to hand to SENDMSG (valid while this box lives and is not modified).
    pub(crate) fn msghdr(&self) -> *const libc::msghdr {
        &self.hdr
    }
}

/// The sender's address from the name bytes of a received datagram (a `sockaddr_in` or
/// `sockaddr_in6` as the kernel wrote it).
pub(crate) fn sockaddr_from(name: &[u8]) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    let family = u16::from_ne_bytes(name.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(name.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(name.get(24..28)?.try_into().ok()?);
            Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope).into())
        }
        _ => None,
    }
}
