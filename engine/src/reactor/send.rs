//! The send state machine: the application send buffer of each connection (registered
//! chunks when available), its limit, and one send in flight per connection, submitted at
//! once (eager) or once per loop turn (batched).

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use io_uring::opcode;

use super::slot::ConnState;
use super::tls::put;
use super::{gen_of, Core, Event, Status};
use super::{on_socket, FileSlot};
use crate::buffers::{ChunkMem, SendArena, CHUNK, LEND_MIN};
use crate::config::SendMode;
use crate::error::{panic_message, ConnError};
use crate::mailbox::Enc;
use crate::ring::{FixedSend, Kind, Token};
use crate::tls::session::RecordSink;

/// What `send()` did with the data (Workerman's `true` / `null` / `false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// The write was submitted and its completion came back in full before `send()`
    /// returned: the bytes are in the kernel's socket buffer (Workerman's `true`).
    Sent,
    /// The bytes are in the connection's application buffer (registered memory when
    /// available) and the ring drains it (Workerman's `null`). Always the answer for a
    /// connection owned by another thread, and in [`SendMode::Batched`](crate::SendMode)
    /// (except for a kept file body written through whole by `WebServer`/`send_file`,
    /// which answers `Sent`).
    Queued,
    /// Nothing was queued: the connection is closing or closed, or the bytes of earlier
    /// sends that the kernel has not taken yet were already at `max_send_buffer_size`
    /// (Workerman's check-before-append rule; bytes not yet offered to the kernel are offered
    /// first, so batching never refuses what a direct write would have taken). Then
    /// `on_error` reports SEND_FAIL, the worker's `send_fail` counter grows and the
    /// connection stays open. Workerman's `false`.
    Failed,
}

impl SendStatus {
    /// True unless the data was dropped.
    pub fn is_ok(self) -> bool {
        self != SendStatus::Failed
    }
}

impl Core {
    /// Queues (and in eager mode submits) `data` on connection `key`.
    ///
    /// The limit counts what the kernel has not taken, as Workerman's does: a send is refused
    /// only when the bytes still unsent reach `max_send_buffer_size`. Bytes queued in this
    /// loop turn but not yet offered to the kernel (batched mode) are offered first
    /// ([`Core::offer_pending`]), so batching never refuses what an eager write would have
    /// delivered.
    pub(crate) fn send(&mut self, key: usize, data: &[u8], enc: Enc) -> SendStatus {
        let status = self.send_now(key, Payload::Copy(data), enc);
        #[cfg(test)]
        crate::sim::observe_send(self, key, data, enc, status);
        status
    }

    /// [`Core::send`] of shared bytes: a large message that goes on the wire as it is (raw,
    /// or through an identity encoder, without TLS) joins the send queue by reference,
    /// without a copy; anything else is encoded (copied) as `send` does.
    pub(crate) fn send_shared(&mut self, key: usize, data: bytes::Bytes, enc: Enc) -> SendStatus {
        #[cfg(test)]
        let copy = data.clone();
        let status = self.send_now(key, Payload::Share(data), enc);
        #[cfg(test)]
        crate::sim::observe_send(self, key, &copy, enc, status);
        status
    }

    #[inline]
    fn send_now(&mut self, key: usize, payload: Payload<'_>, enc: Enc) -> SendStatus {
        let data = payload.as_slice();
        let c = &self.conns[key];
        if c.status == Status::Established && c.sendq.len >= c.max_send_buffer_size {
            self.offer_pending(key);
        }
        // (Offering may have found the connection dead.)
        let c = &mut self.conns[key];
        if c.status != Status::Established {
            if c.status == Status::Connecting {
                return self.hold(key, data, enc, Queue::Held);
            }
            return SendStatus::Failed;
        }
        if enc != Enc::Raw && c.extra.as_ref().is_some_and(|e| e.upgrade_held.is_some()) {
            // A WebSocket server connection before its 101: frames wait for it.
            return self.hold(key, data, enc, Queue::Held);
        }
        if super::tls::layer(c).is_some_and(|t| t.session.handshaking()) {
            // An accepted TLS connection before its handshake ends: nothing can be encrypted
            // yet. The plaintext waits in the send memory, under the same limit.
            return self.hold(key, data, enc, Queue::TlsHeld);
        }
        if c.sendq.len >= c.max_send_buffer_size {
            let queued = c.sendq.len;
            return self.refuse(key, queued);
        }
        let before = c.sendq.len;
        let unchanged = (enc == Enc::Raw || c.identity_encoder) && super::tls::layer(c).is_none();
        let share = matches!(&payload, Payload::Share(b) if b.len() >= SHARE_MIN) && unchanged;
        // Bytes of the receive buffer being delivered (an echo, a pipe) are sent from where
        // they arrived when the ring can spare the buffer.
        let lend = match (&payload, self.delivering) {
            (Payload::Copy(d), Some((bid, at, len))) if unchanged && d.len() >= LEND_MIN => {
                let p = d.as_ptr() as usize;
                p >= at && p + d.len() <= at + len && self.recv.lend(bid)
            }
            _ => false,
        };
        let c = &mut self.conns[key];
        if lend {
            #[cfg(test)]
            if let Some(k) = self.ring.sim_mut() {
                k.mark("send from a receive buffer");
            }
            let c = &mut self.conns[key];
            let (bid, ptr) = (self.delivering.map_or(0, |d| d.0), std::ptr::NonNull::from(data).cast::<u8>());
            c.sendq.len += data.len();
            let mem = ChunkMem::Lent { bid, ptr, len: data.len() };
            c.sendq.push(Chunk { mem, start: 0, end: data.len() });
        } else if share {
            let Payload::Share(b) = payload else { unreachable!("checked above") };
            c.sendq.len += b.len();
            let end = b.len();
            c.sendq.push(Chunk { mem: ChunkMem::Shared(b), start: 0, end });
        } else if let Err(p) = encode_onto(&mut self.arena, &mut self.scratch, c, Queue::Wire, data, enc) {
            self.destroy(key, Some(ConnError::Panic(format!("encoder: {p}"))));
            return SendStatus::Failed;
        }
        self.kick(key, before)
    }

    /// After bytes joined the send queue of connection `key` (which held `before`): submits
    /// them (eager) or marks the connection for the turn's flush (batched), then applies the
    /// limit's events. The answer of the send that queued them.
    pub(super) fn kick(&mut self, key: usize, before: usize) -> SendStatus {
        let c = &mut self.conns[key];
        if c.sendq.len == before {
            // Nothing to write (an empty raw message): done at once when nothing waits
            // (Workerman's `true`), else behind the bytes that do (their drain event follows).
            return if before == 0 { SendStatus::Sent } else { SendStatus::Queued };
        }
        if !c.send_inflight {
            match self.cfg.send_mode {
                SendMode::Eager => {
                    self.submit_send(key);
                    match self.complete_inline(key, false) {
                        Some(Inline::Sent) => return SendStatus::Sent,
                        Some(Inline::Gone) => return SendStatus::Failed,
                        Some(Inline::Partial) | None => {}
                    }
                }
                SendMode::Batched => {
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(key);
                    }
                    self.turn_bytes += c.sendq.len - before;
                    if self.turn_bytes >= flush_bytes(self) {
                        // Enough waits to be worth an `io_uring_enter` of its own: the bytes
                        // leave now instead of after the rest of the turn's completions.
                        #[cfg(test)]
                        if let Some(k) = self.ring.sim_mut() {
                            k.mark("batched sends flushed within a turn");
                        }
                        self.flush_dirty();
                        self.submit();
                    }
                }
            }
        }
        let c = &mut self.conns[key];
        c.drain_pending = true;
        if c.sendq.len >= c.max_send_buffer_size && !c.buffer_full {
            // Same rule as the refusal: full means the kernel has not taken the bytes.
            self.offer_pending(key);
        }
        let Some(c) = self.conns.get_mut(key) else { return SendStatus::Queued };
        if c.status == Status::Established && c.sendq.len >= c.max_send_buffer_size && !c.buffer_full {
            c.buffer_full = true;
            if c.backpressure && !c.paused {
                // Stop taking this peer's input until its output drains: the peer is slowed
                // by TCP instead of its answers being refused (see `Worker::backpressure`).
                c.throttled = true;
                c.paced = true;
                self.pause(key);
            }
            let id = self.id_of(key);
            self.events.push_back(Event::BufferFull(id));
        }
        SendStatus::Queued
    }

    /// A send refused by the limit (`queued` bytes the kernel has not taken): SEND_FAIL.
    pub(super) fn refuse(&mut self, key: usize, queued: usize) -> SendStatus {
        let limit = self.conns[key].max_send_buffer_size;
        self.stats.send_fail.add(1);
        let id = self.id_of(key);
        self.events.push_back(Event::Error(id, Box::new(ConnError::SendBufferFull { queued, limit })));
        SendStatus::Failed
    }

    /// A send on a connection that cannot take it onto the wire yet — an outgoing one still
    /// being established, a WebSocket server connection before its 101, a TLS connection
    /// before its handshake ends: encoded now and held until it can (Workerman buffers these
    /// too, under the same limit): refused once the held bytes are at the limit, and the
    /// send that brings them there fires `on_buffer_full`, as Workerman's does while
    /// connecting. (Receiving is throttled only once the bytes join the send queue: a
    /// `ws://` client must still read its 101, a TLS server its peer's handshake.)
    fn hold(&mut self, key: usize, data: &[u8], enc: Enc, queue: Queue) -> SendStatus {
        let c = &mut self.conns[key];
        let held = held_len(c);
        if held >= c.max_send_buffer_size {
            return self.refuse(key, held);
        }
        if let Err(p) = encode_onto(&mut self.arena, &mut self.scratch, c, queue, data, enc) {
            self.destroy(key, Some(ConnError::Panic(format!("encoder: {p}"))));
            return SendStatus::Failed;
        }
        let c = &mut self.conns[key];
        if held_len(c) >= c.max_send_buffer_size && !c.buffer_full {
            c.buffer_full = true;
            let id = self.id_of(key);
            self.events.push_back(Event::BufferFull(id));
        }
        SendStatus::Queued
    }

    /// The held sends of an outgoing connection that just became usable join its send queue
    /// under the same rules as any send: at the limit the buffer is full (`on_buffer_full`,
    /// unless it fired while the bytes were held) and back-pressure pauses receiving until
    /// the queue drained to half; `on_buffer_drain` follows once it is empty.
    pub(super) fn release_held(&mut self, key: usize, held: SendQueue) {
        if held.len == 0 {
            return;
        }
        let held = self.encrypt_held(key, held);
        let c = &mut self.conns[key];
        c.sendq.len += held.len;
        c.sendq.chunks.extend(held.chunks);
        c.drain_pending = true;
        if !c.send_inflight {
            self.submit_send(key);
        }
        let c = &mut self.conns[key];
        if c.sendq.len >= c.max_send_buffer_size {
            if c.backpressure && !c.paused {
                c.throttled = true;
                c.paced = true;
                self.pause(key);
            }
            let c = &mut self.conns[key];
            if !c.buffer_full {
                c.buffer_full = true;
                let id = self.id_of(key);
                self.events.push_back(Event::BufferFull(id));
            }
        }
    }

    /// Offers the bytes of connection `key` that the kernel has not seen yet (queued in this
    /// turn, or a continuation not yet submitted) and takes the completions it posts inline,
    /// until the queue is below the limit or the socket stops taking bytes. One
    /// `io_uring_enter` per chunk, only on the rare path of a queue at its limit.
    pub(super) fn offer_pending(&mut self, key: usize) {
        // Chunk by chunk (no SENDMSG over the whole queue): the offer stops once the queue
        // is below the limit, as Workerman's direct write would, rather than emptying it —
        // an emptied queue in the middle of the application's sends would owe it an
        // `on_buffer_drain` that Workerman never fires there.
        self.single_chunk_sends = true;
        self.offer_chunks(key);
        self.single_chunk_sends = false;
    }

    fn offer_chunks(&mut self, key: usize) {
        loop {
            let Some(c) = self.conns.get(key) else { return };
            if c.status == Status::Closed || c.sendq.len < c.max_send_buffer_size {
                return;
            }
            if !c.send_inflight {
                self.submit_send(key);
            }
            match self.complete_inline(key, true) {
                // Taken whole, and the next piece (if any) is submitted: keep offering.
                Some(Inline::Partial) if self.conns.get(key).is_some_and(|c| c.send_inflight) => {}
                _ => return,
            }
        }
    }

    /// Eager path: submit now and look for this send's completion among those the kernel
    /// posted during submission (a send that fits in the socket buffer completes inline).
    /// Other completions are kept, in order, for the loop.
    ///
    /// With `getevents` the enter also runs deferred task work (DEFER_TASKRUN), so a send
    /// that was parked on a full socket and has since been taken completes here too.
    fn complete_inline(&mut self, key: usize, getevents: bool) -> Option<Inline> {
        let submitted = if getevents { self.ring.submit_getevents() } else { self.ring.submit() };
        if submitted.is_err() {
            return None;
        }
        let c = &self.conns[key];
        let want = Token::new(Kind::Send, key, gen_of(c.serial)).to_u64();
        let mut mine = None;
        let early = &mut self.early;
        self.ring.drain(|ud, res, flags| {
            if ud == want && mine.is_none() {
                mine = Some(res);
            } else {
                early.push((ud, res, flags));
            }
        });
        let res = mine?;
        self.on_send_done(key, res);
        Some(match self.conns.get(key) {
            Some(c) if c.status == Status::Closed => Inline::Gone,
            None => Inline::Gone,
            Some(c) if c.sendq.len == 0 => Inline::Sent,
            Some(_) => Inline::Partial,
        })
    }

    pub(super) fn flush_dirty(&mut self) {
        self.turn_bytes = 0;
        if self.dirty.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.dirty);
        for &key in &keys {
            if let Some(c) = self.conns.get_mut(key) {
                c.dirty = false;
                if !c.send_inflight && c.sendq.len > 0 && c.status != Status::Closed {
                    self.submit_send(key);
                }
            }
        }
        self.dirty = keys;
        self.dirty.clear();
    }

    pub(super) fn submit_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if c.file == FileSlot::Later && c.bytes_written > 0 {
            // The connection's second send: from here on it is named by its table slot.
            self.register_file(key);
        }
        let c = &mut self.conns[key];
        if c.sendq.chunks.len() > 1 && !self.single_chunk_sends {
            return self.submit_sendmsg(key);
        }
        let Some(head) = c.sendq.chunks.front_mut() else { return };
        let (base, _) = self.arena.bytes(&mut head.mem);
        // SAFETY: start..end lies within the chunk (enqueue keeps end ≤ capacity).
        let ptr = unsafe { base.add(head.start) };
        let len = (head.end - head.start) as u32;
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let sqe = match (&head.mem, self.fixed_send) {
            (ChunkMem::Fixed(_), FixedSend::SendFixed) => on_socket!(c, key, |fd| opcode::Send::new(fd, ptr, len)
                .ioprio(crate::ring::RECVSEND_FIXED_BUF)
                .buf_group(0)
                .flags(flags)
                .build()),
            (ChunkMem::Fixed(_), FixedSend::Plain)
            | (ChunkMem::Heap(_) | ChunkMem::Shared(_) | ChunkMem::Lent { .. }, _) => {
                on_socket!(c, key, |fd| opcode::Send::new(fd, ptr, len).flags(flags).build())
            }
        };
        c.send_inflight = true;
        c.inflight += 1;
        let ud = Token::new(Kind::Send, key, gen_of(c.serial)).to_u64();
        self.push(sqe.user_data(ud));
    }

    /// One SENDMSG for the first [`MAX_IOV`] chunks of a queue that holds several (a
    /// response head and its body, messages queued in one turn): one operation and one
    /// completion instead of one per chunk. The header and iovec array are lent to the queue
    /// until the CQE (buffers.rs invariant 3).
    fn submit_sendmsg(&mut self, key: usize) {
        let mut v = self.send_vecs.pop().unwrap_or_else(SendVec::new);
        let c = &mut self.conns[key];
        let mut n = 0;
        for chunk in c.sendq.chunks.iter_mut().take(MAX_IOV) {
            let (base, _) = self.arena.bytes(&mut chunk.mem);
            // SAFETY: start..end lies within the chunk (enqueue keeps end ≤ capacity).
            let ptr = unsafe { base.add(chunk.start) };
            v.iov[n] = libc::iovec { iov_base: ptr.cast(), iov_len: chunk.end - chunk.start };
            n += 1;
        }
        v.hdr.msg_iov = v.iov.as_mut_ptr();
        v.hdr.msg_iovlen = n;
        let flags = (libc::MSG_NOSIGNAL | libc::MSG_WAITALL) as u32;
        let sqe = on_socket!(c, key, |fd| opcode::SendMsg::new(fd, &v.hdr).flags(flags).build());
        c.sendq.vec = Some(v);
        c.send_inflight = true;
        c.inflight += 1;
        let ud = Token::new(Kind::Send, key, gen_of(c.serial)).to_u64();
        self.push(sqe.user_data(ud));
    }

    pub(crate) fn on_send(&mut self, tok: Token, res: i32) {
        if self.live(tok) {
            self.on_send_done(tok.slot as usize, res);
        }
    }

    pub(super) fn on_send_done(&mut self, key: usize, res: i32) {
        let c = &mut self.conns[key];
        c.send_inflight = false;
        c.inflight -= 1;
        if let Some(v) = c.sendq.vec.take() {
            self.send_vecs.push(v);
        }
        if res < 0 {
            if c.status != Status::Closed && res != -libc::ECANCELED && !self.tls_dial_broke(key, res) {
                self.destroy(key, Some(ConnError::Io(io::Error::from_raw_os_error(-res))));
            }
            self.try_free(key);
            return;
        }
        let mut n = res as usize;
        c.bytes_written += n as u64;
        c.active = self.stamp;
        c.sendq.len -= n;
        while n > 0 {
            let head = c.sendq.chunks.front_mut().expect("completion beyond queued bytes");
            let take = n.min(head.end - head.start);
            head.start += take;
            n -= take;
            if head.start == head.end {
                let done = c.sendq.chunks.pop_front().expect("head exists");
                self.arena.release(done.mem);
            }
        }
        c.sendq.give_back_room();
        if c.status == Status::Closed {
            self.try_free(key);
            return;
        }
        // (Sends still held by a `ws://` client waiting for its 101 keep it full.)
        if c.buffer_full && c.unsent() < c.max_send_buffer_size {
            c.buffer_full = false;
        }
        if c.throttled && c.sendq.len <= c.max_send_buffer_size / 2 {
            c.throttled = false;
            // A closing connection stays paused (Workerman pauses receiving on close too);
            // one waiting for the peer's WebSocket close frame must read it.
            if matches!(c.status, Status::Established | Status::WsClosing) {
                self.resume(key);
            }
        }
        let c = &mut self.conns[key];
        if c.sendq.len > 0 {
            // Short send or more data queued meanwhile: one send in flight, keep going.
            self.submit_send(key);
            return;
        }
        // The output caught up: the next receive may be a multishot again.
        c.paced = false;
        // Owed since a send answered Queued, whoever completed the queue (the loop, or an
        // inline completion of a later send): the event is delivered by the loop.
        // Queued only when someone listens: the worker (`on_buffer_drain`), or the
        // connection's own callback — otherwise every answered message would cost an event.
        if c.drain_pending
            && (self.cfg.listens_for_drain
                || !c.drain_muted
                    && c.extra.as_ref().is_some_and(|e| {
                        e.hooks.on_buffer_drain.is_some() || e.hooks.drain_running || e.hooks.drain_awaited
                    }))
        {
            c.drain_pending = false;
            // The futures awaiting it are woken by this event.
            if let Some(e) = c.extra.as_mut() {
                e.hooks.drain_awaited = false;
            }
            let id = self.id_of(key);
            self.events.push_back(Event::BufferDrain(id));
        }
        let c = &mut self.conns[key];
        c.drain_pending = false;
        if c.status == Status::Closing {
            self.flushed_closing(key);
        }
    }

    /// Sends `data` to every established connection this thread accepted (Workerman's
    /// `$worker->connections`): the application's outgoing connections speak to other
    /// servers and are left out.
    pub(crate) fn broadcast(&mut self, data: &[u8]) {
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.status == Status::Established && c.dial().is_none())
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            self.send(k, data, Enc::Default);
        }
    }
}

pub(crate) struct Chunk {
    pub(super) mem: ChunkMem,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The application send buffer of one connection (Workerman's `sendBuffer`), made of
/// registered chunks when available.
#[derive(Default)]
pub(crate) struct SendQueue {
    pub(super) chunks: VecDeque<Chunk>,
    pub(super) len: usize,
    /// The SENDMSG header of the send in flight, when it covers several chunks.
    pub(super) vec: Option<Box<SendVec>>,
}

/// Emptied queues' room kept for reuse per ring thread, at most this many.
const ROOMS_KEPT: usize = 1024;

thread_local! {
    /// Room (chunk arrays) of send queues that emptied, handed to the next queue that needs
    /// some: a connection holds no queue memory while it has nothing to send (an idle one
    /// costs its slot only), and the per-message path still never allocates once the pool
    /// holds as many rooms as connections send at once.
    static ROOMS: std::cell::RefCell<Vec<VecDeque<Chunk>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl SendQueue {
    /// Appends a chunk; an empty queue without room takes one from the pool (or room for
    /// exactly one chunk: most queues never hold more).
    pub(super) fn push(&mut self, c: Chunk) {
        if self.chunks.capacity() == 0 {
            match ROOMS.with(|r| r.borrow_mut().pop()) {
                Some(room) => self.chunks = room,
                None => self.chunks.reserve_exact(1),
            }
        }
        self.chunks.push_back(c);
    }

    /// Gives an emptied queue's room back to the pool (kept if small and the pool has
    /// space, else freed).
    pub(super) fn give_back_room(&mut self) {
        if !self.chunks.is_empty() || self.chunks.capacity() == 0 {
            return;
        }
        let room = std::mem::take(&mut self.chunks);
        if room.capacity() <= 4 {
            ROOMS.with(|r| {
                let mut r = r.borrow_mut();
                if r.len() < ROOMS_KEPT {
                    r.push(room);
                }
            });
        }
    }
}

/// The most chunks one SENDMSG covers (the kernel's limit is `UIO_MAXIOV`, 1024).
pub(crate) const MAX_IOV: usize = 64;

/// Shared bytes shorter than this are copied into the queue (where they coalesce with
/// their neighbours) rather than queued by reference.
pub(crate) const SHARE_MIN: usize = 4096;

/// A SENDMSG header with its iovec array, pooled per ring.
pub(crate) struct SendVec {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_IOV],
}

impl SendVec {
    fn new() -> Box<SendVec> {
        // SAFETY: `msghdr` and `iovec` are plain data; all-zero is a valid value of both
        // (null pointers, zero lengths).
        Box::new(unsafe { std::mem::zeroed() })
    }
}

/// The bytes of a send: borrowed (copied into the queue) or shared (queued by reference
/// when they go on the wire as they are).
enum Payload<'a> {
    Copy(&'a [u8]),
    Share(bytes::Bytes),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Copy(d) => d,
            Payload::Share(b) => b,
        }
    }
}

/// Outcome of an eager send's inline completion.
pub(super) enum Inline {
    Sent,
    Partial,
    Gone,
}

/// Which queue of a connection a send goes to.
#[derive(Clone, Copy)]
enum Queue {
    /// The send queue (what goes on the wire next).
    Wire,
    /// An outgoing connection's held sends (before it is established), or a WebSocket
    /// server connection's (before its 101).
    Held,
    /// An accepted TLS connection's held sends (before its handshake ends).
    TlsHeld,
}

/// Bytes held for an outgoing connection being established, for a WebSocket server
/// connection before its 101, or for a TLS connection before its handshake ends.
fn held_len(c: &ConnState) -> usize {
    c.extra.as_deref().map_or(0, |e| e.held_len())
}

/// Encodes `data` with the connection's encoder (unless raw, or the encoder is the
/// identity) and appends it to the chosen queue. A panicking encoder (protocol code, isolated
/// like user code) appends nothing and returns its message.
fn encode_onto(
    arena: &mut SendArena,
    scratch: &mut Vec<u8>,
    c: &mut ConnState,
    queue: Queue,
    data: &[u8],
    enc: Enc,
) -> Result<(), String> {
    let kind = match enc {
        Enc::Raw => None,
        Enc::Default => Some(c.default_kind),
        Enc::Kind(k) => Some(k),
    };
    // What goes on the wire is encrypted on a TLS connection; held sends stay plaintext
    // until they join the send queue.
    let (q, tls) = match queue {
        Queue::Wire => (&mut c.sendq, c.extra.as_deref_mut().and_then(|e| e.tls.as_mut())),
        Queue::Held => match c.extra.as_deref_mut() {
            Some(super::slot::Extra { dial: Some(d), .. }) => (&mut d.held, None),
            Some(super::slot::Extra { upgrade_held: Some(q), .. }) => (q, None),
            _ => return Ok(()),
        },
        Queue::TlsHeld => match c.extra.as_deref_mut().and_then(|e| e.tls.as_mut()) {
            Some(t) => (&mut t.held, None),
            None => return Ok(()),
        },
    };
    match kind {
        None => put(arena, q, tls, data),
        Some(_) if c.identity_encoder => put(arena, q, tls, data),
        Some(kind) => {
            let mut buf = std::mem::take(scratch);
            buf.clear();
            let encoder = &mut c.encoder;
            let encoded = catch_unwind(AssertUnwindSafe(|| encoder.encode(data, kind, &mut buf)));
            if let Err(p) = encoded {
                *scratch = buf;
                return Err(panic_message(&*p));
            }
            put(arena, q, tls, &buf);
            if buf.capacity() <= 256 * 1024 {
                *scratch = buf;
            }
        }
    }
    Ok(())
}

/// Appends `data` to a send queue, filling the tail chunk first. A message larger than a
/// chunk that starts an empty queue goes into one heap chunk of its own size, so it leaves
/// in a single send.
pub(super) fn enqueue(arena: &mut SendArena, q: &mut SendQueue, mut data: &[u8]) {
    q.len += data.len();
    if q.chunks.is_empty() && data.len() > CHUNK {
        let b = data.to_vec().into_boxed_slice();
        let end = b.len();
        q.push(Chunk { mem: ChunkMem::Heap(b), start: 0, end });
        return;
    }
    while !data.is_empty() {
        if let Some(tail) = q.chunks.back_mut() {
            let (base, cap) = arena.bytes(&mut tail.mem);
            let room = cap - tail.end;
            if room > 0 {
                let n = room.min(data.len());
                // SAFETY: `tail.end + n ≤ cap`, inside the chunk; the region beyond `end` is
                // not part of any in-flight send (sends cover `start..end` at submit time).
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base.add(tail.end), n) };
                tail.end += n;
                data = &data[n..];
                continue;
            }
        }
        // The first chunk of an empty queue is sized for what it is given (a lone answer);
        // a queue that grows takes whole chunks, so a backlog stays a few large iovecs.
        let want = if q.chunks.is_empty() { data.len() } else { CHUNK };
        q.push(Chunk { mem: arena.alloc_for(want), start: 0, end: 0 });
    }
}

/// The end of a send queue as a TLS session writes its records: into the free bytes of the
/// tail chunk, or of a fresh one, in place.
pub(super) struct QueueSink<'a> {
    pub(super) arena: &'a mut SendArena,
    pub(super) q: &'a mut SendQueue,
}

impl RecordSink for QueueSink<'_> {
    #[cfg(any(test, feature = "tls-buffered"))]
    fn append(&mut self, bytes: &[u8]) {
        enqueue(self.arena, self.q, bytes);
    }

    fn room(&mut self) -> &mut [u8] {
        let Some(tail) = self.q.chunks.back_mut() else { return &mut [] };
        let (base, cap) = self.arena.bytes(&mut tail.mem);
        // SAFETY: `end ≤ cap` (enqueue and commit keep it so), so `end..cap` lies inside the
        // chunk; no send covers it (sends cover `start..end` at submit time), and the slice
        // borrows this sink, which holds the only reference to the queue meanwhile.
        unsafe { std::slice::from_raw_parts_mut(base.add(tail.end), cap - tail.end) }
    }

    fn reserve(&mut self, n: usize) -> &mut [u8] {
        if self.room().len() < n {
            let mem = if n <= CHUNK { self.arena.alloc() } else { ChunkMem::Heap(vec![0u8; n].into_boxed_slice()) };
            self.q.push(Chunk { mem, start: 0, end: 0 });
        }
        self.room()
    }

    fn commit(&mut self, n: usize) {
        let tail = self.q.chunks.back_mut().expect("a chunk was reserved");
        debug_assert!(tail.end + n <= self.arena.bytes(&mut tail.mem).1, "a commit beyond the chunk");
        tail.end += n;
        self.q.len += n;
    }

    fn queued(&self) -> usize {
        self.q.len
    }
}

/// Bytes of batched sends after which the turn's sends are submitted at once, before the
/// turn's remaining completions are handled. Small messages still leave together at the end
/// of the turn (one `io_uring_enter` for all); a turn that queues bulk data sends it while
/// it handles the rest, so the peer gets the first answers sooner (16 KiB echo: bench/README.md,
/// "Flushing within a turn").
pub(crate) const FLUSH_BYTES: usize = 32 * 1024;

/// [`FLUSH_BYTES`], or a few KiB in the simulator, so its turns flush within the turn too.
fn flush_bytes(core: &Core) -> usize {
    #[cfg(test)]
    if core.ring.is_sim() {
        return 4096;
    }
    let _ = core;
    FLUSH_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes a queue holds, in order.
    fn contents(arena: &mut SendArena, q: &mut SendQueue) -> Vec<u8> {
        let mut out = Vec::new();
        for c in q.chunks.iter_mut() {
            let (base, cap) = arena.bytes(&mut c.mem);
            assert!(c.start <= c.end && c.end <= cap);
            // SAFETY: `start..end` lies inside the chunk (checked above) and was written by
            // `enqueue`; nothing else refers to this memory in the test.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(base.add(c.start), c.end - c.start) });
        }
        out
    }

    fn heap_arena() -> (crate::ring::Ring, SendArena) {
        let mut ring = crate::ring::Ring::kernel(io_uring::IoUring::new(8).expect("io_uring"));
        // No registered budget: heap chunks only, the same queue logic.
        let (arena, _) = SendArena::new(&mut ring, 0);
        (ring, arena)
    }

    #[test]
    fn small_messages_fill_the_tail_chunk_first() {
        let (_ring, mut arena) = heap_arena();
        let mut q = SendQueue::default();
        enqueue(&mut arena, &mut q, b"hello ");
        enqueue(&mut arena, &mut q, b"world");
        assert_eq!(q.chunks.len(), 1, "both messages share one chunk");
        assert_eq!(q.len, 11);
        assert_eq!(contents(&mut arena, &mut q), b"hello world");
        for c in q.chunks.drain(..) {
            arena.release(c.mem);
        }
    }

    #[test]
    fn a_message_larger_than_a_chunk_starting_an_empty_queue_is_one_chunk() {
        let (_ring, mut arena) = heap_arena();
        let mut q = SendQueue::default();
        let big: Vec<u8> = (0..CHUNK * 3 + 7).map(|i| i as u8).collect();
        enqueue(&mut arena, &mut q, &big);
        assert_eq!(q.chunks.len(), 1, "one send carries it whole");
        assert_eq!(q.len, big.len());
        assert_eq!(contents(&mut arena, &mut q), big);
        for c in q.chunks.drain(..) {
            arena.release(c.mem);
        }
    }

    #[test]
    fn a_large_message_behind_others_spills_over_whole_chunks_in_order() {
        let (_ring, mut arena) = heap_arena();
        let mut q = SendQueue::default();
        enqueue(&mut arena, &mut q, b"head");
        let big: Vec<u8> = (0..CHUNK * 2 + 100).map(|i| (i % 251) as u8).collect();
        enqueue(&mut arena, &mut q, &big);
        let mut want = b"head".to_vec();
        want.extend_from_slice(&big);
        assert_eq!(q.len, want.len());
        assert_eq!(q.chunks.len(), 3, "4 + 2×CHUNK + 100 bytes: a small chunk, a whole one, and a third");
        assert_eq!(contents(&mut arena, &mut q), want);
        for c in q.chunks.drain(..) {
            arena.release(c.mem);
        }
    }

    #[test]
    fn beyond_the_registered_chunks_a_small_message_takes_a_small_heap_chunk() {
        let (_ring, mut arena) = heap_arena();
        let mut q = SendQueue::default();
        enqueue(&mut arena, &mut q, &[7u8; 64]);
        let (_, cap) = arena.bytes(&mut q.chunks[0].mem);
        assert_eq!(cap, crate::buffers::SMALL_HEAP_CHUNK, "64 bytes in a small chunk, not 16 KiB");
        // 192 bytes fit behind them; the other 808 go to a whole chunk: a queue that grows
        // is not made of small pieces.
        enqueue(&mut arena, &mut q, &[8u8; 1000]);
        assert_eq!(q.chunks.len(), 2);
        let (_, cap) = arena.bytes(&mut q.chunks[1].mem);
        assert_eq!(cap, CHUNK);
        let mut want = vec![7u8; 64];
        want.extend_from_slice(&[8u8; 1000]);
        assert_eq!(contents(&mut arena, &mut q), want);
        // A pooled standard chunk is taken before a small one is made.
        arena.release(ChunkMem::Heap(vec![0u8; CHUNK].into_boxed_slice()));
        let mut q2 = SendQueue::default();
        enqueue(&mut arena, &mut q2, b"x");
        let (_, cap) = arena.bytes(&mut q2.chunks[0].mem);
        assert_eq!(cap, CHUNK);
        for c in q.chunks.drain(..).chain(q2.chunks.drain(..)) {
            arena.release(c.mem);
        }
    }
}
