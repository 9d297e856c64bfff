//! Stopping a ring: no more accepts, every connection closed gracefully within a deadline,
//! and the wake-up read cancelled before the core's memory goes.

use std::time::{Duration, Instant};

use io_uring::opcode;

use super::{Core, Status};
use crate::ring::{Kind, Token};

impl Core {
    /// Destroys every connection at once (a stop whose deadline passed).
    pub(crate) fn destroy_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.destroy(k, None);
        }
    }

    /// Starts stopping this thread: no more accepts; every connection is closed gracefully
    /// and cut off at `deadline`.
    pub(crate) fn begin_stop(&mut self, deadline: Instant) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(deadline);
        self.cancel_accepts();
        self.udp_stop();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, None);
            if let Some(c) = self.conns.get_mut(key) {
                if c.status == Status::Closing {
                    c.close_deadline = Some(deadline);
                }
            }
        }
    }

    /// True once stopping and nothing is left in flight except the wake-up read.
    pub(crate) fn drained(&self) -> bool {
        self.stopping.is_some() && self.conns.is_empty() && self.listeners.iter().all(|l| !l.armed) && self.udp_idle()
    }

    /// Cancels the wake-up read and waits for it, so the kernel no longer refers to
    /// `wake_buf` when the core is dropped.
    ///
    /// Completions already moved aside (`early`, by a submit that met a full CQ) count too,
    /// and every wait is bounded: a stop or recycle never hangs here. Should the read still
    /// not complete, the word is leaked rather than freed under the kernel.
    pub(crate) fn quiesce(&mut self) {
        let is_wake = |ud: u64| Token::from_u64(ud).is_some_and(|t| t.kind == Kind::Wake);
        if self.early.drain(..).any(|(ud, _, _)| is_wake(ud)) {
            self.wake_armed = false;
        }
        if !self.wake_armed {
            return;
        }
        let ud = Token::new(Kind::Wake, 0, 0).to_u64();
        let sqe = opcode::AsyncCancel::new(ud).build().user_data(Token::new(Kind::Shutdown, 0, 0).to_u64());
        self.push(sqe);
        if self.early.drain(..).any(|(ud, _, _)| is_wake(ud)) {
            self.wake_armed = false;
        }
        for _ in 0..200 {
            if !self.wake_armed {
                return;
            }
            let _ = self.ring.submit_and_wait(Some(Duration::from_millis(10)));
            let mut woke = false;
            self.ring.drain(|ud, _, _| woke |= is_wake(ud));
            if woke {
                self.wake_armed = false;
            }
        }
        log::error!("the wake-up read did not complete after its cancel; leaking its buffer");
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
    }
}
