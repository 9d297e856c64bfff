//! Handing listening sockets to a successor process (zero-downtime reload).
//!
//! A process that replaces itself passes its listening sockets to the new copy of the
//! program: the descriptors stay open across `exec`, and one environment variable tells
//! the successor which descriptor listens on which address. A [`crate::Server`] started in
//! the successor adopts those sockets instead of binding new ones, so the accept queues
//! survive the switch.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Prepares `listeners` (each a listening socket with the address it is bound to) for a
/// successor process: clears FD_CLOEXEC on every descriptor so it survives `exec`, and
/// returns the environment variable name and value the successor must be started with.
///
/// The value lists the descriptors per address, `ADDR=FD,FD;ADDR=FD` (addresses in the
/// order they first appear), e.g. `127.0.0.1:8000=3,4;[::1]:9000=5`. A [`crate::Worker`]
/// on one of these addresses, started in the successor, takes its listening sockets from
/// there (each is checked to be a listener bound to that address, and made close-on-exec
/// again).
///
/// The descriptors stay inheritable after the call: set FD_CLOEXEC again once the
/// successor is spawned, so later children do not inherit them.
///
/// ```no_run
/// use std::os::fd::AsFd;
/// let l = std::net::TcpListener::bind("127.0.0.1:8000")?;
/// let addr = l.local_addr()?;
/// let (name, value) = ringman_engine::handover::successor_env(&[(l.as_fd(), addr)])?;
/// std::process::Command::new("/proc/self/exe").env(name, value).spawn()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn successor_env(listeners: &[(BorrowedFd<'_>, SocketAddr)]) -> std::io::Result<(&'static str, String)> {
    let mut groups: Vec<(SocketAddr, Vec<i32>)> = Vec::new();
    for (fd, addr) in listeners {
        let raw = fd.as_raw_fd();
        crate::sys::set_cloexec(raw, false)?;
        match groups.iter_mut().find(|(a, _)| a == addr) {
            Some((_, fds)) => fds.push(raw),
            None => groups.push((*addr, vec![raw])),
        }
    }
    let value = groups
        .iter()
        .map(|(addr, fds)| {
            let fds: Vec<String> = fds.iter().map(i32::to_string).collect();
            format!("{addr}={}", fds.join(","))
        })
        .collect::<Vec<_>>()
        .join(";");
    Ok((crate::worker::LISTEN_FDS_ENV, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, IntoRawFd};

    fn cloexec(fd: BorrowedFd<'_>) -> bool {
        // SAFETY: F_GETFD on a descriptor borrowed for the call.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn lists_descriptors_per_address_and_clears_cloexec() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // A second descriptor for a's address (as with one SO_REUSEPORT socket per thread).
        let a2 = a.try_clone().unwrap();
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        for l in [&a, &b, &a2] {
            assert!(cloexec(l.as_fd()), "std opens sockets close-on-exec");
        }
        let (name, value) = successor_env(&[(a.as_fd(), addr_a), (b.as_fd(), addr_b), (a2.as_fd(), addr_a)]).unwrap();
        assert_eq!(name, "RINGMAN_LISTEN_FDS");
        let (fa, fb, fa2) = (a.as_raw_fd(), b.as_raw_fd(), a2.as_raw_fd());
        assert_eq!(value, format!("{addr_a}={fa},{fa2};{addr_b}={fb}"));
        for l in [&a, &b, &a2] {
            assert!(!cloexec(l.as_fd()), "FD_CLOEXEC cleared");
        }
    }

    #[test]
    fn the_successor_adopts_what_it_lists() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("[::1]:0").or_else(|_| std::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (name, value) = successor_env(&[(a.as_fd(), addr_a), (b.as_fd(), addr_b)]).unwrap();
        assert_eq!(successor_env(&[]).unwrap().1, "");
        // No other engine unit test touches this variable.
        std::env::set_var(name, &value);
        // The test's listeners keep owning the descriptors: the adopted copies are released.
        let adopt =
            |addr| -> Vec<i32> { crate::worker::inherited(addr).into_iter().map(IntoRawFd::into_raw_fd).collect() };
        let (got_a, got_b) = (adopt(addr_a), adopt(addr_b));
        std::env::remove_var(name);
        assert_eq!(got_a, vec![a.as_raw_fd()], "{value}");
        assert_eq!(got_b, vec![b.as_raw_fd()], "{value}");
        assert!(cloexec(a.as_fd()) && cloexec(b.as_fd()), "adoption makes them close-on-exec again");
    }
}
