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
//!    (tail store with `Release` ordering) until a CQE names it without `F_BUF_MORE`; then it
//!    is owned by the engine until [`RecvRing::give_back`] or [`RecvRing::recycle`]
//!    republishes it. Consumed in pieces (`IOU_PBUF_RING_INC`), each CQE with bytes hands the
//!    engine the next piece (right behind the last; the engine counts where), and only a CQE
//!    without `F_BUF_MORE` ends the kernel's hold; a CQE without bytes never does (it
//!    consumed nothing). The engine accounts every piece a CQE names, including CQEs for
//!    connections that are already gone. Each piece being delivered (a [`RecvBuf`] guard)
//!    and each send chunk lent bytes of one ([`ChunkMem::Lent`]) is a hold on the buffer: it
//!    is republished only when the kernel is done with it and every hold has let go, so the
//!    kernel never writes into bytes a delivery or a send has yet to read.
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
///
/// Registered with `IOU_PBUF_RING_INC` (6.12) where the kernel has it and the worker asks
/// for it: the kernel then fills a buffer in pieces, one per completion, each right behind
/// the last, and sets `IORING_CQE_F_BUF_MORE` on every completion but the one that used the
/// buffer up. A 64-byte message takes 64 bytes of a buffer, not all of it, so buffers can be
/// large (a bulk stream needs few completions) without small messages of many connections
/// emptying the pool.
pub(crate) struct RecvRing {
    entries: Mmap,
    data: Mmap,
    count: u16,
    buf_size: u32,
    bgid: u16,
    /// Buffers are consumed in pieces (`IOU_PBUF_RING_INC`).
    incremental: bool,
    /// Local copy of the tail; published to the kernel in [`RecvRing::publish`].
    tail: u16,
    unpublished: bool,
    /// Per buffer: who holds it and how far the kernel has filled it (invariant 2).
    bufs: Vec<BufState>,
    /// Send chunks lent receive bytes, in all.
    lent: usize,
}

/// The engine's view of one receive buffer.
#[derive(Clone, Copy)]
struct BufState {
    /// How many hold pieces of it out of the kernel's hands: the delivery of a piece, and
    /// each send chunk lent bytes of it.
    holds: u16,
    /// The kernel may still write into it: published and not yet used up (for a buffer
    /// consumed in pieces, until a completion names it without `F_BUF_MORE`).
    kernel: bool,
    /// Bytes of it the kernel has filled since it was published: where its next piece begins.
    filled: u32,
}

/// `IOU_PBUF_RING_INC` (linux/io_uring.h, 6.12): the ring's buffers are consumed in pieces.
const IOU_PBUF_RING_INC: u16 = 2;

/// Receive buffer size where the kernel cannot consume buffers in pieces: a worker's pool of
/// larger buffers is split into buffers of this size, so that one small message does not
/// take a large buffer from the pool.
pub const WHOLE_RECV_BUFFER: u32 = 8192;

/// Received bytes shorter than this are copied when sent, never lent.
pub(crate) const LEND_MIN: usize = 1024;

impl RecvRing {
    /// Maps `count` buffers of `buf_size` bytes and registers them as buffer group
    /// [`RECV_BGID`] of `ring`, consumed in pieces when `incremental` and the kernel can
    /// (else split into buffers of [`WHOLE_RECV_BUFFER`] bytes where larger). `count` must be
    /// a power of two ≤ 32768.
    pub(crate) fn new(ring: &mut Ring, count: u16, buf_size: u32, incremental: bool) -> io::Result<RecvRing> {
        if incremental {
            match RecvRing::with_group(ring, count, buf_size, RECV_BGID, IOU_PBUF_RING_INC) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    log::debug!("receive buffers: no incremental consumption in this kernel (6.12); whole buffers");
                }
                r => return r,
            }
            if buf_size > WHOLE_RECV_BUFFER {
                let total = count as u64 * buf_size as u64;
                let n = (total / WHOLE_RECV_BUFFER as u64).clamp(1, 32768) as u16;
                let n = if n.is_power_of_two() { n } else { n.next_power_of_two() / 2 };
                return RecvRing::with_group(ring, n, WHOLE_RECV_BUFFER, RECV_BGID, 0);
            }
        }
        RecvRing::with_group(ring, count, buf_size, RECV_BGID, 0)
    }

    /// [`RecvRing::new`] as buffer group `bgid` with registration `flags` (the datagram pool
    /// is [`UDP_BGID`], whole buffers).
    pub(crate) fn with_group(
        ring: &mut Ring,
        count: u16,
        buf_size: u32,
        bgid: u16,
        flags: u16,
    ) -> io::Result<RecvRing> {
        assert!(count.is_power_of_two() && count <= 32768);
        let entries = Mmap::new(count as usize * std::mem::size_of::<BufRingEntry>())?;
        let data = Mmap::new(count as usize * buf_size as usize)?;
        let mut ring_buf = RecvRing {
            entries,
            data,
            count,
            buf_size,
            bgid,
            incremental: flags & IOU_PBUF_RING_INC != 0,
            tail: 0,
            unpublished: false,
            bufs: vec![BufState { holds: 0, kernel: false, filled: 0 }; count as usize],
            lent: 0,
        };
        // SAFETY: the entry array is page aligned (mmap), sized for `count` entries, and lives
        // until the owner unregisters it before dropping it (invariant 1).
        unsafe {
            ring.register_buf_ring(ring_buf.entries.ptr.as_ptr() as u64, count, bgid, flags)?;
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

    /// Whether the kernel consumes the buffers in pieces.
    pub(crate) fn incremental(&self) -> bool {
        self.incremental
    }

    /// Takes the `len` bytes a completion delivered into buffer `bid` out of the kernel's
    /// hands until [`RecvRing::give_back`] (invariant 2). `flags` are the completion's: with
    /// `F_BUF_MORE` the kernel goes on filling the rest of the buffer.
    ///
    /// # Safety
    /// A CQE of this ring named `bid` with result `len > 0` and `flags`, and that CQE has
    /// not been taken or recycled since: each CQE's piece is taken once.
    pub(crate) unsafe fn take(&mut self, bid: u16, len: usize, flags: u32) -> RecvBuf {
        let at = self.piece(bid, len, flags);
        let b = &mut self.bufs[bid as usize];
        debug_assert!(self.incremental || b.holds == 0, "buffer {bid} taken while held");
        b.holds += 1;
        // SAFETY: `bid < count` (the kernel only names buffers we published) and the piece
        // ends within the buffer (`piece`), so the range lies inside the data mapping.
        let ptr = unsafe { self.data.ptr.add(bid as usize * self.buf_size as usize + at) };
        RecvBuf { bid, ptr, len }
    }

    /// Accounts a completion's piece of `bid` (`len > 0` bytes): returns where it begins,
    /// and lets go of the kernel's hold when the buffer is used up.
    fn piece(&mut self, bid: u16, len: usize, flags: u32) -> usize {
        let incremental = self.incremental;
        let b = &mut self.bufs[bid as usize];
        debug_assert!(b.kernel, "buffer {bid} named by a completion while the engine held it");
        debug_assert!(len > 0 && b.filled as usize + len <= self.buf_size as usize);
        let at = b.filled as usize;
        b.filled += len as u32;
        if !(incremental && io_uring::cqueue::buffer_more(flags)) {
            b.kernel = false;
        }
        at
    }

    /// Hands a taken piece back — the buffer goes back to the kernel (visible after
    /// [`RecvRing::publish`]) once the kernel is done with it and nothing else holds a piece
    /// of it (send chunks lent its bytes, other pieces being delivered).
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
        let held = &mut self.bufs[bid as usize].holds;
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
        let b = &mut self.bufs[bid as usize];
        debug_assert!(b.holds > 0, "buffer {bid} let go more often than held");
        b.holds -= 1;
        self.settle(bid);
    }

    /// Republishes `bid` if neither the kernel nor the engine holds any of it.
    fn settle(&mut self, bid: u16) {
        let b = self.bufs[bid as usize];
        if b.holds == 0 && !b.kernel {
            self.push(bid);
        }
    }

    /// A completion named `bid` and nobody wants what it delivered (a connection already
    /// gone, an error): let go at once. A completion without bytes (`len == 0`: EOF, an
    /// error) consumed a whole buffer, which goes back, but not a buffer consumed in pieces:
    /// the kernel moves on only past bytes it filled (and kernels before a fix of 2025 named
    /// that buffer without `F_BUF_MORE` all the same), so it stays the kernel's.
    pub(crate) fn recycle(&mut self, bid: u16, len: usize, flags: u32) {
        if len > 0 {
            self.piece(bid, len, flags);
        } else if !self.incremental {
            self.bufs[bid as usize].kernel = false;
        }
        self.settle(bid);
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
        self.bufs[bid as usize] = BufState { holds: 0, kernel: true, filled: 0 };
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

/// The smallest heap chunk [`SendArena::alloc_for`] makes for a small message.
pub(crate) const SMALL_HEAP_CHUNK: usize = 256;

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
        self.alloc_for(CHUNK)
    }

    /// A chunk for a send queue that needs room for `want` more bytes: registered if one is
    /// free, else a pooled heap chunk; with the pool empty too, a heap chunk of `want`
    /// rounded up to a power of two (at least [`SMALL_HEAP_CHUNK`], at most a standard
    /// chunk). A burst of thousands of small answers beyond the registered chunks (every
    /// connection of a large server answering in one turn, a fan-out to thousands) then
    /// holds what the answers need, not 16 KiB each, and the allocator keeps that much less
    /// after the burst. (`enqueue` asks for a whole chunk once a queue grows.)
    pub(crate) fn alloc_for(&mut self, want: usize) -> ChunkMem {
        if let Some(i) = self.free.pop() {
            return ChunkMem::Fixed(i);
        }
        if let Some(b) = self.heap_pool.pop() {
            return ChunkMem::Heap(b);
        }
        let size = want.next_power_of_two().clamp(SMALL_HEAP_CHUNK, CHUNK);
        ChunkMem::Heap(vec![0u8; size].into_boxed_slice())
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
