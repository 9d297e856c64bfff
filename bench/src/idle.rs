//! P5: memory per idle connection.
//!
//! Opens `n` connections, makes one 1-byte echo round trip on each (so the server has
//! accepted and armed every one of them), waits for the server to settle, and reads the
//! server's VmRSS before and after. Connections come from rotating 127.0.0.x source
//! addresses (IP_BIND_ADDRESS_NO_PORT) so ephemeral ports never run short across runs.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::LoadError;

/// Connections per source address.
pub const PER_SOURCE: usize = 2500;

static NEXT_SOURCE: AtomicU8 = AtomicU8::new(2);

/// Picks the next 127.0.0.x source address (x in 2..=254, wrapping).
pub fn next_source() -> Ipv4Addr {
    let x = NEXT_SOURCE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(if x >= 254 { 2 } else { x + 1 }));
    Ipv4Addr::new(127, 0, 0, x.unwrap_or(2))
}

/// Opens one connection from `source` to `addr`.
pub fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Result<TcpStream, LoadError> {
    let err = |source| LoadError::Connect { addr, source };
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    let one: libc::c_int = 1;
    // SAFETY: valid socket fd and option buffer; failure only means ports are chosen at bind.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    s.bind(&SockAddr::from(SocketAddrV4::new(source, 0))).map_err(err)?;
    s.connect(&SockAddr::from(addr)).map_err(err)?;
    let _ = s.set_linger(Some(Duration::ZERO));
    let _ = s.set_tcp_nodelay(true);
    Ok(s.into())
}

/// Result of an idle-connection run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleResult {
    /// Connections held open.
    pub conns: usize,
    /// Server RSS before connecting, bytes.
    pub rss_before: u64,
    /// Server RSS with every connection open, bytes.
    pub rss_after: u64,
}

impl IdleResult {
    /// RSS growth per connection in bytes.
    pub fn per_conn(&self) -> f64 {
        if self.conns == 0 {
            return 0.0;
        }
        (self.rss_after as f64 - self.rss_before as f64) / self.conns as f64
    }
}

/// Opens `n` echo connections to `addr` and measures RSS through `rss` (server VmRSS).
pub fn run(addr: SocketAddr, n: usize, rss: impl Fn() -> u64) -> Result<IdleResult, LoadError> {
    let rss_before = rss();
    let mut conns = Vec::with_capacity(n);
    let mut source = next_source();
    for i in 0..n {
        if i > 0 && i % PER_SOURCE == 0 {
            source = next_source();
        }
        conns.push(connect_from(source, addr)?);
    }
    // One round trip per connection, pipelined over all of them.
    for s in &mut conns {
        s.write_all(b"x").map_err(|source| LoadError::Connect { addr, source })?;
    }
    for s in &mut conns {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|source| LoadError::Connect { addr, source })?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = rss();
    drop(conns);
    Ok(IdleResult { conns: n, rss_before, rss_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_conn_math() {
        let r = IdleResult { conns: 1000, rss_before: 1_000_000, rss_after: 5_096_000 };
        assert_eq!(r.per_conn(), 4096.0);
        assert_eq!(IdleResult { conns: 0, rss_before: 0, rss_after: 9 }.per_conn(), 0.0);
    }

    #[test]
    fn sources_rotate_within_loopback() {
        for _ in 0..600 {
            let a = next_source();
            assert_eq!(a.octets()[..3], [127, 0, 0]);
            assert!((2..=254).contains(&a.octets()[3]));
        }
    }

    #[test]
    fn idle_against_a_tiny_echo_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().take(20) {
                let mut s = s.unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
                held.push(s);
            }
        });
        let r = run(addr, 20, || 7).unwrap();
        assert_eq!((r.conns, r.rss_before, r.rss_after), (20, 7, 7));
    }
}
