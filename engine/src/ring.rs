//! Ring setup, feature probing and the `user_data` encoding.
//!
//! Every SQE the engine submits carries a [`Token`] in `user_data`: the operation kind, the
//! slab slot it belongs to and that slot's generation. A completion whose generation does not
//! match the slot's current occupant is stale and is never delivered to a connection.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use crate::error::EngineError;

/// What an in-flight operation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Multishot accept on listener `slot`.
    Accept = 1,
    /// Multishot receive of connection `slot`.
    Recv = 2,
    /// The single send in flight of connection `slot`.
    Send = 3,
    /// ASYNC_CANCEL of every operation on connection `slot`'s fd (before its close).
    Cancel = 4,
    /// Read of the thread's wake-up eventfd.
    Wake = 5,
    /// Cancellation of listener or wake operations during shutdown.
    Shutdown = 6,
    /// IORING_OP_CONNECT of outgoing connection `slot`.
    Connect = 7,
    /// A read of the proxy's handshake answer on outgoing connection `slot`.
    Proxy = 8,
    /// Multishot RECVMSG of UDP socket `slot` (its own slab, `reactor/udp.rs`).
    Udp = 9,
    /// A SENDMSG of one datagram, `slot` naming it among the datagrams in flight.
    UdpSend = 10,
}

/// `user_data` layout: kind (8 bits) | generation (24 bits) | slot (32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub gen: u32,
    pub slot: u32,
}

impl Token {
    pub(crate) const fn new(kind: Kind, slot: usize, gen: u32) -> Token {
        Token { kind, gen: gen & 0xFF_FFFF, slot: slot as u32 }
    }

    pub(crate) const fn to_u64(self) -> u64 {
        (self.kind as u64) << 56 | (self.gen as u64) << 32 | self.slot as u64
    }

    pub(crate) fn from_u64(v: u64) -> Option<Token> {
        let kind = match (v >> 56) as u8 {
            1 => Kind::Accept,
            2 => Kind::Recv,
            3 => Kind::Send,
            4 => Kind::Cancel,
            5 => Kind::Wake,
            6 => Kind::Shutdown,
            7 => Kind::Connect,
            8 => Kind::Proxy,
            9 => Kind::Udp,
            10 => Kind::UdpSend,
            _ => return None,
        };
        Some(Token { kind, gen: ((v >> 32) & 0xFF_FFFF) as u32, slot: v as u32 })
    }
}

/// How the ring was set up, for status output and ARCHITECTURE.md's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN (6.1): completions are produced only when
    /// this thread enters the kernel, so no interrupts break into the loop.
    DeferTaskrun,
    /// IORING_SETUP_COOP_TASKRUN | TASKRUN_FLAG (5.19): fewer IPIs, task work flagged in the SQ.
    CoopTaskrun,
    /// No optional setup flags.
    Plain,
}

/// Submission queue size; the completion queue is four times larger because multishot
/// operations produce many CQEs per SQE (ARCHITECTURE.md, "Pitfalls").
pub(crate) const SQ_ENTRIES: u32 = 1024;

/// `io_uring_enter` flag: reap completions (and run deferred task work).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// The submission and completion queues the core talks to: the kernel's ring, or (in test
/// builds) the deterministic simulator's model of it. This is the one boundary between the
/// engine and io_uring; everything above it is the same code in both cases.
pub(crate) struct Ring {
    backend: Backend,
}

// The kernel's ring stays inline (no indirection on the per-message path); the simulated
// one, in test builds only, is boxed.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Kernel(IoUring),
    #[cfg(test)]
    Sim(Box<crate::sim::kernel::SimKernel>),
}

impl Ring {
    /// The kernel's ring.
    pub(crate) fn kernel(ring: IoUring) -> Ring {
        Ring { backend: Backend::Kernel(ring) }
    }

    /// A simulated ring.
    #[cfg(test)]
    pub(crate) fn sim(kernel: crate::sim::kernel::SimKernel) -> Ring {
        Ring { backend: Backend::Sim(Box::new(kernel)) }
    }

    /// Whether this ring is simulated.
    #[cfg(test)]
    pub(crate) fn is_sim(&self) -> bool {
        matches!(self.backend, Backend::Sim(_))
    }

    /// The simulated kernel behind this ring, if it is one.
    #[cfg(test)]
    pub(crate) fn sim_mut(&mut self) -> Option<&mut crate::sim::kernel::SimKernel> {
        match &mut self.backend {
            Backend::Sim(k) => Some(k),
            Backend::Kernel(_) => None,
        }
    }

    /// Queues an SQE; false when the submission queue is full.
    ///
    /// # Safety
    /// Every pointer in `sqe` stays valid until its operation's last completion.
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        match &mut self.backend {
            // SAFETY: the caller's contract is the kernel's.
            Backend::Kernel(r) => unsafe { r.submission().push(sqe).is_ok() },
            #[cfg(test)]
            Backend::Sim(k) => k.push(sqe),
        }
    }

    /// Submits the queued SQEs without waiting.
    pub(crate) fn submit(&mut self) -> io::Result<usize> {
        match &mut self.backend {
            Backend::Kernel(r) => r.submit(),
            #[cfg(test)]
            Backend::Sim(k) => k.submit(false),
        }
    }

    /// Submits and reaps what completed meanwhile (runs deferred task work), without waiting.
    pub(crate) fn submit_getevents(&mut self) -> io::Result<usize> {
        match &mut self.backend {
            Backend::Kernel(r) => {
                let queued = r.submission().len() as u32;
                // SAFETY: no argument pointer is passed; the call submits the queued SQEs
                // (their memory is valid per `push`'s contract) and runs pending completions.
                unsafe { r.submitter().enter::<libc::sigset_t>(queued, 0, IORING_ENTER_GETEVENTS, None) }
            }
            #[cfg(test)]
            Backend::Sim(k) => k.submit(true),
        }
    }

    /// Submits and waits for at least one completion, or until `timeout` passes.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        match &mut self.backend {
            Backend::Kernel(r) => match timeout {
                Some(t) => {
                    let ts = types::Timespec::from(t);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    r.submitter().submit_with_args(1, &args)
                }
                None => r.submit_and_wait(1),
            },
            #[cfg(test)]
            Backend::Sim(k) => k.wait(timeout),
        }
    }

    /// Hands every posted completion to `f`, oldest first.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(u64, i32, u32)) {
        match &mut self.backend {
            Backend::Kernel(r) => r.completion().for_each(|c| f(c.user_data(), c.result(), c.flags())),
            #[cfg(test)]
            Backend::Sim(k) => k.drain(f),
        }
    }

    /// Completions the kernel dropped (only without IORING_FEAT_NODROP).
    pub(crate) fn dropped(&mut self) -> u32 {
        match &mut self.backend {
            Backend::Kernel(r) => r.completion().overflow(),
            #[cfg(test)]
            Backend::Sim(_) => 0,
        }
    }

    /// Whether completions wait in the kernel's overflow list (IORING_SQ_CQ_OVERFLOW).
    pub(crate) fn cq_overflow(&mut self) -> bool {
        match &mut self.backend {
            Backend::Kernel(r) => r.submission().cq_overflow(),
            #[cfg(test)]
            Backend::Sim(k) => k.cq_overflow(),
        }
    }

    /// Registers a provided-buffer ring of `count` entries at `addr` as group `bgid`, with
    /// the kernel's registration `flags` (`IOU_PBUF_RING_INC`, 6.12: consumed in pieces).
    ///
    /// # Safety
    /// The entry array is page aligned, holds `count` entries and outlives the registration.
    pub(crate) unsafe fn register_buf_ring(&mut self, addr: u64, count: u16, bgid: u16, flags: u16) -> io::Result<()> {
        match &mut self.backend {
            // SAFETY: the caller's contract is the kernel's.
            Backend::Kernel(r) => unsafe { r.submitter().register_buf_ring_with_flags(addr, count, bgid, flags) },
            #[cfg(test)]
            Backend::Sim(k) => k.register_buf_ring(addr, count, bgid, flags),
        }
    }

    /// Unregisters buffer group `bgid`.
    pub(crate) fn unregister_buf_ring(&mut self, bgid: u16) {
        match &mut self.backend {
            Backend::Kernel(r) => drop(r.submitter().unregister_buf_ring(bgid)),
            #[cfg(test)]
            Backend::Sim(k) => k.unregister_buf_ring(bgid),
        }
    }

    /// Registers `iov` as fixed buffer 0.
    ///
    /// # Safety
    /// The memory outlives the registration.
    pub(crate) unsafe fn register_buffer(&mut self, iov: libc::iovec) -> io::Result<()> {
        match &mut self.backend {
            // SAFETY: the caller's contract is the kernel's.
            Backend::Kernel(r) => unsafe { r.submitter().register_buffers(&[iov]) },
            #[cfg(test)]
            Backend::Sim(k) => k.register_buffer(iov),
        }
    }

    /// Registers an empty fixed-file table of `slots` entries (`IORING_RSRC_REGISTER_SPARSE`,
    /// 5.19). More than the process's descriptor limit is refused (EMFILE).
    pub(crate) fn register_files_sparse(&mut self, slots: u32) -> io::Result<()> {
        match &mut self.backend {
            Backend::Kernel(r) => r.submitter().register_files_sparse(slots),
            #[cfg(test)]
            Backend::Sim(k) => k.register_files_sparse(slots),
        }
    }

    /// Puts the file behind `fd` into fixed-file slot `slot` (the table takes its own
    /// reference: the file stays open until the slot is cleared), or clears the slot when
    /// `fd` is -1. One `io_uring_register` call, done when it returns.
    pub(crate) fn update_file(&mut self, slot: u32, fd: RawFd) -> io::Result<()> {
        match &mut self.backend {
            Backend::Kernel(r) => r.submitter().register_files_update(slot, &[fd]).map(drop),
            #[cfg(test)]
            Backend::Sim(k) => k.update_file(slot, fd),
        }
    }

    /// Unregisters the fixed buffers.
    pub(crate) fn unregister_buffers(&mut self) {
        match &mut self.backend {
            Backend::Kernel(r) => drop(r.submitter().unregister_buffers()),
            #[cfg(test)]
            Backend::Sim(k) => k.unregister_buffers(),
        }
    }
}

/// Creates the ring with the best setup the kernel accepts.
pub(crate) fn build() -> Result<(Ring, RingMode), EngineError> {
    type Apply = fn(&mut io_uring::Builder);
    let attempts: [(RingMode, Apply); 3] = [
        (RingMode::DeferTaskrun, |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        (RingMode::CoopTaskrun, |b| {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }),
        (RingMode::Plain, |_| {}),
    ];
    let mut last = None;
    for (mode, apply) in attempts {
        let mut b = IoUring::builder();
        // CQSIZE: room for bursts of multishot completions. CLAMP: accept the kernel's max
        // rather than failing. SUBMIT_ALL: one failing SQE must not stall other connections'.
        b.setup_cqsize(SQ_ENTRIES * 4).setup_clamp().setup_submit_all();
        apply(&mut b);
        match b.build(SQ_ENTRIES) {
            Ok(ring) => return Ok((Ring::kernel(ring), mode)),
            Err(e) => match e.raw_os_error() {
                // Disabled by seccomp or sysctl: no flag combination will help.
                Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EACCES) => {
                    return Err(EngineError::IoUringUnavailable(e))
                }
                _ => last = Some(e),
            },
        }
    }
    Err(EngineError::Ring(last.unwrap_or_else(|| io::Error::other("ring setup failed"))))
}

/// `IORING_RECVSEND_FIXED_BUF` (uapi `io_uring.h`): the send's address lies in the registered
/// buffer whose index is in `sqe->buf_index` (the field `buf_group` shares).
pub(crate) const RECVSEND_FIXED_BUF: u16 = 1 << 2;

/// How sends from registered chunks are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FixedSend {
    /// IORING_OP_SEND with IORING_RECVSEND_FIXED_BUF.
    SendFixed,
    /// A plain IORING_OP_SEND of the registered memory: the kernel refused the fixed buffer
    /// (kernels to 6.18 take it only for SEND_ZC). A copying send gains nothing from the
    /// registration, and plain SEND is cheaper than IORING_OP_WRITE_FIXED, which goes
    /// through the file's `write_iter` (P1: 3.14 against 3.29 µs per message, five rounds
    /// each, bench/README.md).
    Plain,
}

/// Finds out whether `IORING_OP_SEND` accepts a fixed buffer on this kernel, with one real
/// send over a socketpair (no version guessing). `ring` must have buffer index 0 registered.
pub(crate) fn probe_fixed_send(ring: &mut Ring, buf: *const u8) -> FixedSend {
    #[allow(clippy::infallible_destructuring_match)] // (a second variant in test builds)
    let ring = match &mut ring.backend {
        Backend::Kernel(r) => r,
        #[cfg(test)]
        Backend::Sim(k) => return k.fixed_send(),
    };
    // Both ends close when dropped, after the completion was waited for.
    let Ok((tx, _rx)) = std::os::unix::net::UnixStream::pair() else { return FixedSend::Plain };
    let sqe = opcode::Send::new(types::Fd(tx.as_raw_fd()), buf, 1)
        .ioprio(crate::ring::RECVSEND_FIXED_BUF)
        .buf_group(0)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(u64::MAX);
    // SAFETY: `buf` points into registered memory that outlives this call, and the socket
    // stays open; we wait for the completion below before returning.
    let pushed = unsafe { ring.submission().push(&sqe).is_ok() };
    let mut result = FixedSend::Plain;
    if pushed && ring.submit_and_wait(1).is_ok() {
        if let Some(cqe) = ring.completion().next() {
            if cqe.result() == 1 {
                result = FixedSend::SendFixed;
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip() {
        let t = Token::new(Kind::Send, 123_456, 0xAB_CDEF);
        assert_eq!(Token::from_u64(t.to_u64()), Some(t));
        let t = Token::new(Kind::Recv, u32::MAX as usize, 0x1FF_FFFF);
        assert_eq!(Token::from_u64(t.to_u64()).unwrap().gen, 0xFF_FFFF);
        assert_eq!(Token::from_u64(u64::MAX), None);
    }
}
