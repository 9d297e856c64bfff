//! The epoll floor: the least work a readiness-based (epoll) echo server can do per message.
//!
//! std + libc only, one thread, level-triggered epoll, nonblocking sockets. Each connection
//! has one buffer of `--buf-size` bytes (default 64 KiB; reserved, not zeroed, so only touched pages become resident, as in the
//! tokio peer). A readable connection gets one `read` into its buffer and one `write` of
//! those bytes straight from it; a short write keeps the rest, switches the connection's
//! interest to EPOLLOUT until it drains, and stops reading meanwhile (back-pressure). Beside
//! the tokio peer it separates the runtime's cost from the kernel interface's.
use std::os::fd::AsRawFd;

const LISTENER: u64 = u64::MAX;
const MAX_EVENTS: usize = 1024;

struct Conn {
    fd: i32,
    buf: Vec<u8>,
    /// Bytes `buf[sent..]` still to be written (empty: reading).
    sent: usize,
}

struct Server {
    ep: i32,
    listen_fd: i32,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Receive buffer per connection (`--buf-size`).
    buf_size: usize,
}

fn ctl(ep: i32, op: i32, fd: i32, events: u32, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event for the duration of the call; fds are ours.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Server {
    fn accept_all(&mut self) {
        loop {
            // SAFETY: accept4 on our listening socket; null address pointers are allowed.
            let fd = unsafe {
                libc::accept4(
                    self.listen_fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                // EAGAIN: drained; anything else (EMFILE, ECONNABORTED): retry on the next event.
                return;
            }
            peer_common::set_nodelay(fd);
            let conn = Conn { fd, buf: Vec::with_capacity(self.buf_size), sent: 0 };
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
            if ctl(self.ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32, idx as u64).is_err() {
                self.close(idx);
            }
        }
    }

    fn close(&mut self, idx: usize) {
        if let Some(c) = self.conns[idx].take() {
            // SAFETY: the fd is ours; closing also removes it from the epoll set.
            unsafe { libc::close(c.fd) };
            self.free.push(idx);
        }
    }

    /// Writes `buf[sent..]`. Ok(true): all written; Ok(false): the socket is full.
    fn flush(c: &mut Conn) -> Result<bool, ()> {
        while c.sent < c.buf.len() {
            let rest = &c.buf[c.sent..];
            // SAFETY: `rest` is initialised memory of `rest.len()` bytes.
            let n = unsafe { libc::write(c.fd, rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                return match errno() {
                    libc::EAGAIN => Ok(false),
                    libc::EINTR => continue,
                    _ => Err(()),
                };
            }
            c.sent += n as usize;
        }
        c.buf.clear();
        c.sent = 0;
        Ok(true)
    }

    fn on_event(&mut self, idx: usize, events: u32) {
        let ep = self.ep;
        let Some(c) = self.conns[idx].as_mut() else { return };
        let ok = if !c.buf.is_empty() {
            // Waiting for EPOLLOUT: finish the short write, then read again.
            match Self::flush(c) {
                Ok(true) => ctl(ep, libc::EPOLL_CTL_MOD, c.fd, libc::EPOLLIN as u32, idx as u64).is_ok(),
                Ok(false) => true,
                Err(()) => false,
            }
        } else if events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            // SAFETY: reads at most `capacity` bytes into the Vec's reserved (empty) storage.
            let n = unsafe { libc::read(c.fd, c.buf.as_mut_ptr().cast(), c.buf.capacity()) };
            if n > 0 {
                // SAFETY: the kernel initialised the first `n` <= capacity bytes.
                unsafe { c.buf.set_len(n as usize) };
                match Self::flush(c) {
                    Ok(true) => true,
                    Ok(false) => ctl(ep, libc::EPOLL_CTL_MOD, c.fd, libc::EPOLLOUT as u32, idx as u64).is_ok(),
                    Err(()) => false,
                }
            } else {
                n < 0 && matches!(errno(), libc::EAGAIN | libc::EINTR)
            }
        } else {
            true
        };
        if !ok {
            self.close(idx);
        }
    }

    fn run(&mut self) -> std::io::Result<()> {
        // SAFETY: an all-zero epoll_event is a valid value.
        let mut events = vec![unsafe { std::mem::zeroed::<libc::epoll_event>() }; MAX_EVENTS];
        loop {
            // SAFETY: `events` has room for MAX_EVENTS entries.
            let n = unsafe { libc::epoll_wait(self.ep, events.as_mut_ptr(), MAX_EVENTS as i32, -1) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return Err(std::io::Error::last_os_error());
            }
            for ev in &events[..n as usize] {
                let (token, flags) = (ev.u64, ev.events);
                if token == LISTENER {
                    self.accept_all();
                } else {
                    self.on_event(token as usize, flags);
                }
            }
        }
    }
}

fn main() {
    let args = peer_common::parse(&["echo"], &[]);
    let listener = std::net::TcpListener::bind(args.addr).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking listener");
    // SAFETY: re-listening on our own bound socket only raises the backlog.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    // SAFETY: plain syscall, result checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        eprintln!("epoll-peer: epoll_create1: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    ctl(ep, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), libc::EPOLLIN as u32, LISTENER).expect("epoll_ctl listener");
    let mut server =
        Server { ep, listen_fd: listener.as_raw_fd(), conns: Vec::new(), free: Vec::new(), buf_size: args.buf_size() };
    peer_common::announce(listener.local_addr().expect("local addr"));
    if let Err(e) = server.run() {
        eprintln!("epoll-peer: {e}");
        std::process::exit(1);
    }
}
