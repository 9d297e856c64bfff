//! The UDP echo load (`--scenario udp`): `conns` connected UDP sockets on one thread, each
//! keeping `depth` datagrams of `size` bytes in flight (closed loop). Each datagram carries
//! its send time in its first 8 bytes, so an echo's latency is read from the echo itself;
//! a socket that hears nothing for 200 ms counts its datagrams in flight as lost
//! and sends `depth` new ones (UDP does not retransmit; on loopback this does not happen
//! unless a socket buffer overflows).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::cli::LoadOpts;
use crate::error::LoadError;
use crate::hist::Latency;
use crate::loadgen::{now_ns, thread_cpu, Edge, LoadResult, DRAIN_TIMEOUT};

/// Silence after which a socket's datagrams in flight are taken as lost.
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

struct Sock {
    s: UdpSocket,
    inflight: usize,
    heard: u64,
}

fn sys(call: &'static str) -> LoadError {
    LoadError::Sys { call, source: std::io::Error::last_os_error() }
}

/// Sends one datagram stamped `now` on `s`; false when the socket buffer is full.
fn send(s: &UdpSocket, buf: &mut [u8], now: u64) -> bool {
    buf[..8].copy_from_slice(&now.to_le_bytes());
    s.send(buf).is_ok()
}

/// Runs one UDP echo load against `addr`; `edge` marks the measured window.
pub fn run(addr: SocketAddr, opts: &LoadOpts, mut edge: impl FnMut(Edge)) -> Result<LoadResult, LoadError> {
    let size = opts.size.max(8);
    let mut socks = Vec::with_capacity(opts.conns);
    for _ in 0..opts.conns.max(1) {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|source| LoadError::Connect { addr, source })?;
        s.connect(addr).map_err(|source| LoadError::Connect { addr, source })?;
        s.set_nonblocking(true).map_err(|source| LoadError::Sys { call: "set_nonblocking", source })?;
        socks.push(Sock { s, inflight: 0, heard: 0 });
    }
    // SAFETY: plain syscall; the result is checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(sys("epoll_create1"));
    }
    let _close = scopeguard(ep);
    for (i, s) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: valid epoll fd, socket fd and event pointer.
        if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.s.as_raw_fd(), &mut ev) } < 0 {
            return Err(sys("epoll_ctl"));
        }
    }
    let mut out = vec![b'u'; size];
    let mut rbuf = vec![0u8; 65_536];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut lat = Latency::new();
    let (mut sent, mut received, mut window_msgs, mut lost) = (0u64, 0u64, 0u64, 0u64);
    let start = now_ns();
    let window_start = start + opts.warmup.as_nanos() as u64;
    let window_end = window_start + opts.duration.as_nanos() as u64;
    let drain_end = window_end + DRAIN_TIMEOUT.as_nanos() as u64;
    let (mut measuring, mut sending) = (false, true);
    let (mut cpu_start, mut client_cpu) = (Duration::ZERO, Duration::ZERO);
    let loss_ns = LOSS_TIMEOUT.as_nanos() as u64;
    for s in &mut socks {
        s.heard = start;
        for _ in 0..opts.depth.max(1) {
            if send(&s.s, &mut out, start) {
                s.inflight += 1;
                sent += 1;
            }
        }
    }
    let tick = 1_000_000_000u64;
    let mut next_tick = start + tick;
    loop {
        let now = now_ns();
        if now >= next_tick {
            edge(Edge::Progress { sent, received });
            next_tick += tick;
        }
        if !measuring && sending && now >= window_start {
            edge(Edge::Start);
            cpu_start = thread_cpu();
            lat.reset();
            window_msgs = 0;
            measuring = true;
        }
        if sending && now >= window_end {
            client_cpu = thread_cpu().saturating_sub(cpu_start);
            edge(Edge::End);
            measuring = false;
            sending = false;
        }
        if !sending && (now >= drain_end || socks.iter().all(|s| s.inflight == 0)) {
            break;
        }
        // SAFETY: `events` has room for its length; the call only writes there.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 10) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(sys("epoll_wait"));
        }
        let now = now_ns();
        for ev in &events[..n as usize] {
            let s = &mut socks[ev.u64 as usize];
            while let Ok(len) = s.s.recv(&mut rbuf) {
                received += 1;
                s.inflight = s.inflight.saturating_sub(1);
                s.heard = now;
                if len >= 8 {
                    let stamp = u64::from_le_bytes(rbuf[..8].try_into().expect("8 bytes"));
                    if measuring {
                        window_msgs += 1;
                        lat.record(now.saturating_sub(stamp));
                    }
                }
                if sending && send(&s.s, &mut out, now) {
                    s.inflight += 1;
                    sent += 1;
                }
            }
        }
        for s in &mut socks {
            if s.inflight > 0 && now.saturating_sub(s.heard) > loss_ns {
                lost += s.inflight as u64;
                s.inflight = 0;
                s.heard = now;
                for _ in 0..opts.depth.max(1) {
                    if sending && send(&s.s, &mut out, now) {
                        s.inflight += 1;
                        sent += 1;
                    }
                }
            }
        }
    }
    if lost > 0 {
        eprintln!("udp: {lost} datagrams lost (no echo within {LOSS_TIMEOUT:?})");
    }
    Ok(LoadResult {
        messages: window_msgs,
        window: opts.duration,
        latency: lat,
        sent,
        received,
        bad_status: 0,
        lost_conns: 0,
        client_cpu,
        drained: socks.iter().all(|s| s.inflight == 0),
        late: 0,
        send_lag: None,
        tls: None,
        wire: None,
    })
}

/// Closes the epoll descriptor when dropped.
struct EpollFd(i32);

impl Drop for EpollFd {
    fn drop(&mut self) {
        // SAFETY: this descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn scopeguard(fd: i32) -> EpollFd {
    EpollFd(fd)
}
