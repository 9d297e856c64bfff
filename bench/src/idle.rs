//! P5: memory per idle connection.
//!
//! Opens connections, makes one 1-byte echo round trip on each (so the server has accepted
//! and armed every one of them), waits for the server to settle, and reads the server's
//! VmRSS. [`run_slope`] does this at two connection counts and reports the slope between
//! them, so fixed costs paid by the first connections (pools, rings, first-touch of buffer
//! arenas) are not spread over the per-connection figure; it also reports the kernel slab
//! growth over the same step. Connections come from rotating 127.0.0.x source
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

/// Opens `n` more echo connections to `addr` (appended to `conns`), each with one round trip.
fn open_echoed(addr: SocketAddr, n: usize, conns: &mut Vec<TcpStream>) -> Result<(), LoadError> {
    let first = conns.len();
    let mut source = next_source();
    for i in 0..n {
        if i > 0 && i % PER_SOURCE == 0 {
            source = next_source();
        }
        conns.push(connect_from(source, addr)?);
    }
    // One round trip per connection, pipelined over all of them.
    for s in &mut conns[first..] {
        s.write_all(b"x").map_err(|source| LoadError::Connect { addr, source })?;
    }
    for s in &mut conns[first..] {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|source| LoadError::Connect { addr, source })?;
    }
    Ok(())
}

/// How long the server gets to settle before RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

/// Opens `n` echo connections to `addr` and measures RSS through `rss` (server VmRSS).
pub fn run(addr: SocketAddr, n: usize, rss: impl Fn() -> u64) -> Result<IdleResult, LoadError> {
    let rss_before = rss();
    let mut conns = Vec::with_capacity(n);
    open_echoed(addr, n, &mut conns)?;
    std::thread::sleep(SETTLE);
    let rss_after = rss();
    drop(conns);
    Ok(IdleResult { conns: n, rss_before, rss_after })
}

/// Result of a two-point idle-connection run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlopeResult {
    /// Smaller connection count.
    pub lo: usize,
    /// Larger connection count.
    pub hi: usize,
    /// Server RSS with no connection, bytes.
    pub rss_base: u64,
    /// Server RSS with `lo` connections, bytes.
    pub rss_lo: u64,
    /// Server RSS with `hi` connections, bytes.
    pub rss_hi: u64,
    /// Kernel slab with `lo` connections, bytes (0 if unreadable).
    pub slab_lo: u64,
    /// Kernel slab with `hi` connections, bytes.
    pub slab_hi: u64,
}

fn slope(lo: u64, hi: u64, n: usize) -> f64 {
    if n == 0 {
        return 0.0;
    }
    (hi as f64 - lo as f64) / n as f64
}

impl SlopeResult {
    /// Server RSS bytes per connection between the two counts.
    pub fn per_conn(&self) -> f64 {
        slope(self.rss_lo, self.rss_hi, self.hi - self.lo)
    }

    /// Kernel slab bytes per connection between the two counts (machine-wide, so both ends
    /// of each loopback connection); None when `/proc/meminfo` was unreadable.
    pub fn slab_per_conn(&self) -> Option<f64> {
        (self.slab_lo > 0 && self.slab_hi > 0).then(|| slope(self.slab_lo, self.slab_hi, self.hi - self.lo))
    }

    /// The old single-point figure: growth from no connection to `hi`, divided by `hi`
    /// (includes the fixed costs the slope leaves out).
    pub fn per_conn_from_zero(&self) -> f64 {
        slope(self.rss_base, self.rss_hi, self.hi)
    }
}

/// Opens `lo` echo connections, reads RSS (`rss`) and slab (`slab`), opens `hi - lo` more and
/// reads both again. `lo < hi`.
pub fn run_slope(
    addr: SocketAddr,
    lo: usize,
    hi: usize,
    rss: impl Fn() -> u64,
    slab: impl Fn() -> u64,
) -> Result<SlopeResult, LoadError> {
    let rss_base = rss();
    let mut conns = Vec::with_capacity(hi);
    open_echoed(addr, lo, &mut conns)?;
    std::thread::sleep(SETTLE);
    let (rss_lo, slab_lo) = (rss(), slab());
    open_echoed(addr, hi.saturating_sub(lo), &mut conns)?;
    std::thread::sleep(SETTLE);
    let (rss_hi, slab_hi) = (rss(), slab());
    drop(conns);
    Ok(SlopeResult { lo, hi, rss_base, rss_lo, rss_hi, slab_lo, slab_hi })
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
    fn slope_math() {
        let r = SlopeResult {
            lo: 2000,
            hi: 10_000,
            rss_base: 1_000_000,
            rss_lo: 3_000_000,
            rss_hi: 9_400_000,
            slab_lo: 50_000_000,
            slab_hi: 66_000_000,
        };
        assert_eq!(r.per_conn(), 800.0);
        assert_eq!(r.slab_per_conn(), Some(2000.0));
        assert_eq!(r.per_conn_from_zero(), 840.0);
        assert_eq!(SlopeResult { slab_lo: 0, ..r }.slab_per_conn(), None);
        assert_eq!(SlopeResult { lo: 5, hi: 5, ..r }.per_conn(), 0.0);
        // RSS may shrink (reclaim) between the points: the slope goes negative, not wrapping.
        assert!(SlopeResult { rss_hi: 2_000_000, ..r }.per_conn() < 0.0);
    }

    #[test]
    fn slope_against_a_tiny_echo_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().take(30) {
                let mut s = s.unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
                held.push(s);
            }
        });
        let calls = std::cell::Cell::new(0u64);
        let rss = || {
            calls.set(calls.get() + 1);
            calls.get() * 1000
        };
        let r = run_slope(addr, 10, 30, rss, || 5).unwrap();
        assert_eq!((r.lo, r.hi, r.rss_base, r.rss_lo, r.rss_hi), (10, 30, 1000, 2000, 3000));
        assert_eq!(r.per_conn(), 50.0);
        assert_eq!(r.slab_per_conn(), Some(0.0));
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
