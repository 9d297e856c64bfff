//! Responses written through: a head and a file body, written by the ring thread itself
//! ([`crate::sendfile::write_through`]: `send` of the head, `sendfile` of the body) when
//! nothing waits before them on the connection, so the file's pages reach the socket by
//! reference instead of being copied into it. What the socket does not take, and every
//! response that cannot go through, is queued as one send (head and body in one SENDMSG,
//! the body by reference to its kept bytes).
//!
//! Only accepted connections go through: their sockets are non-blocking (accept.rs), so the
//! calls never wait. Outgoing connections, TLS and held sends take the queue. In either send
//! mode a response written through whole answers `Sent` (its bytes are in the socket).

use std::io;
use std::os::fd::AsRawFd;

use super::send::{enqueue, Chunk, SHARE_MIN};
use super::{Core, SendStatus, Status};
use crate::buffers::ChunkMem;
use crate::mailbox::Enc;
use crate::sendfile::{FileBody, SENDFILE_MAX, SENDFILE_MIN};

impl Core {
    /// Sends `head` then `body`, raw, on connection `key` as one send would: written
    /// through when nothing waits before them, else queued together.
    pub(crate) fn send_head_body(&mut self, key: usize, head: &[u8], body: &FileBody<'_>) -> SendStatus {
        let c = &mut self.conns[key];
        let plain = c.status == Status::Established
            && c.extra.as_ref().is_none_or(|e| e.upgrade_held.is_none())
            && super::tls::layer(c).is_none();
        if !plain {
            // Held, encrypted or closing: two sends, each under its usual rules.
            let head_status = self.send(key, head, Enc::Raw);
            if head_status == SendStatus::Failed {
                return SendStatus::Failed;
            }
            return self.send_shared(key, body.bytes.clone(), Enc::Raw);
        }
        let status = self.head_body(key, head, body);
        #[cfg(test)]
        crate::sim::observe_send(self, key, &[head, &body.bytes[..]].concat(), Enc::Raw, status);
        status
    }

    fn head_body(&mut self, key: usize, head: &[u8], body: &FileBody<'_>) -> SendStatus {
        // The limit as for any send: what the kernel has not taken is offered first.
        if self.conns[key].sendq.len >= self.conns[key].max_send_buffer_size {
            self.offer_pending(key);
        }
        let c = &self.conns[key];
        if c.status != Status::Established {
            return SendStatus::Failed;
        }
        if c.sendq.len >= c.max_send_buffer_size {
            let queued = c.sendq.len;
            return self.refuse(key, queued);
        }
        let total = head.len() + body.bytes.len();
        let mut done = 0;
        let (min, max) = through_range(self);
        let through =
            c.sendq.len == 0 && !c.send_inflight && c.dial().is_none() && (min..=max).contains(&body.bytes.len());
        if through {
            match self.write_through(key, head, body) {
                Ok(n) => done = n,
                // The queued send below meets the socket's error and ends the connection as
                // any failed send does.
                Err(e) => log::trace!("write through failed: {e}"),
            }
            let c = &mut self.conns[key];
            if done > 0 {
                c.bytes_written += done as u64;
                c.active = self.stamp;
                self.stats.sendfile_bytes.add(done.saturating_sub(head.len()) as u64);
            }
            if done == total {
                return SendStatus::Sent;
            }
        }
        // The rest (all of it, unless it went through in part), in one submission.
        let c = &mut self.conns[key];
        let before = c.sendq.len;
        let from_head = done.min(head.len());
        enqueue(&mut self.arena, &mut c.sendq, &head[from_head..]);
        let rest = body.bytes.slice(done - from_head..);
        if rest.len() >= SHARE_MIN {
            let end = rest.len();
            c.sendq.len += end;
            c.sendq.push(Chunk { mem: ChunkMem::Shared(rest), start: 0, end });
        } else {
            enqueue(&mut self.arena, &mut c.sendq, &rest);
        }
        let status = self.kick(key, before);
        if done > 0 && status == SendStatus::Failed {
            // The rest failed inline (eager mode) after part of it reached the peer: the send
            // was taken, as Workerman's partly written and buffered one is (`null`), and the
            // failure is reported by on_error and on_close. `Failed` would say nothing went.
            return SendStatus::Queued;
        }
        status
    }

    /// The write itself: `send` and `sendfile` on the kernel's socket, or the simulator's model
    /// of it.
    fn write_through(&mut self, key: usize, head: &[u8], body: &FileBody<'_>) -> io::Result<usize> {
        let fd = self.conns[key].fd.as_raw_fd();
        #[cfg(test)]
        if let Some(k) = self.ring.sim_mut() {
            return k.write_through(fd, head, &body.bytes);
        }
        crate::sendfile::write_through(fd, head, body.file, body.offset, body.bytes.len())
    }
}

/// The sizes of body written through: [`SENDFILE_MIN`] to [`SENDFILE_MAX`], except in the
/// simulator, whose state checks want every size (the range is a cost, not a rule of the
/// state machine).
fn through_range(core: &Core) -> (usize, usize) {
    #[cfg(test)]
    if core.ring.is_sim() {
        return (0, usize::MAX);
    }
    let _ = core;
    (SENDFILE_MIN, SENDFILE_MAX)
}
