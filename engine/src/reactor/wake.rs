//! The ring's side of its mailbox: the read armed on the eventfd, and the commands other
//! threads send.

use io_uring::{opcode, types};

use super::Core;
use crate::mailbox::Cmd;
use crate::ring::{Kind, Token};

impl Core {
    pub(crate) fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        self.wake_armed = true;
        let ptr: *mut u64 = &mut *self.wake_buf;
        let sqe = opcode::Read::new(types::Fd(self.mailbox.eventfd()), ptr.cast(), 8)
            .build()
            .user_data(Token::new(Kind::Wake, 0, 0).to_u64());
        self.push(sqe);
    }

    /// The wake-up read completed: commands wait in the mailbox (the runner drains it
    /// next). The read is re-armed unless the ring is about to exit.
    pub(crate) fn on_wake(&mut self) {
        self.wake_armed = false;
        if self.stopping.is_none() || !self.conns.is_empty() {
            self.arm_wake();
        }
    }

    /// Applies a command from another thread (`Call` and `Crash` are the runner's).
    pub(crate) fn command(&mut self, cmd: &Cmd) {
        match cmd {
            Cmd::Send { conn, data, enc } => {
                if let Some(k) = self.lookup(*conn) {
                    // (A cheap clone of the shared bytes: large ones join the queue by
                    // reference.)
                    self.send_shared(k, data.clone(), *enc);
                }
            }
            Cmd::Close { conn, data } => {
                if let Some(k) = self.lookup(*conn) {
                    self.close(k, data.as_deref());
                }
            }
            Cmd::Destroy { conn } => {
                if let Some(k) = self.lookup(*conn) {
                    self.destroy(k, None);
                }
            }
            Cmd::Broadcast { data } => self.broadcast(data),
            Cmd::Stop { timeout } => {
                let timeout = timeout.unwrap_or(self.cfg.stop_timeout);
                self.begin_stop(crate::clock::now() + timeout);
            }
            Cmd::Recycle { timeout } => {
                self.recycle = true;
                self.begin_stop(crate::clock::now() + *timeout);
            }
            Cmd::PauseAccept => self.pause_accept(),
            Cmd::Listen { fd } => self.listen(fd.clone()),
            Cmd::Unlisten => self.unlisten(),
            Cmd::Resolved { conn, attempt, host, port, addrs } => {
                self.on_resolved(*conn, *attempt, host.clone(), *port, addrs.clone())
            }
            Cmd::Call(_) | Cmd::Crash => unreachable!("handled by the runner"),
        }
    }
}
