//! Helpers shared by the integration tests: real servers on loopback, std::net clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringman::{Running, Server, Worker};

/// A worker that echoes every message, on `threads` ring threads.
pub fn echo_worker(addr: &str, threads: usize) -> Worker<()> {
    let mut w = Worker::<()>::new(addr).unwrap();
    w.count = threads;
    w.on_message(|c, m, _| {
        c.send(m);
    });
    w
}

/// Generous bound so a broken build fails instead of hanging; never a performance check.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Waits for `cond`, checking every few milliseconds; panics naming `what` after PATIENCE.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(std::time::Instant::now() < end, "timed out after {PATIENCE:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn start<S: Default + 'static>(w: Worker<S>) -> (Running, SocketAddr) {
    let running = Server::new().add(w).start().expect("server starts");
    let addr = running.local_addr(0).expect("bound address");
    (running, addr)
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until the peer closes; returns everything received.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

pub fn write_all(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).expect("write");
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
