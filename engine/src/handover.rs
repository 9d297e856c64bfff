//! Handing listening sockets to a successor process (zero-downtime reload): the successor
//! finds them in its environment and accepts on them instead of binding anew.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::worker::LISTEN_FDS_ENV;

/// Prepares `listeners` for a successor process: clears close-on-exec on each so it
/// survives `exec`, and returns the environment variable (name, value) the successor must
/// be started with for its workers to adopt them (value `ADDR=FD,FD;ADDR=FD`).
pub fn successor_env(listeners: &[(BorrowedFd<'_>, SocketAddr)]) -> std::io::Result<(&'static str, String)> {
    let mut by_addr: Vec<(SocketAddr, Vec<i32>)> = Vec::new();
    for (fd, addr) in listeners {
        crate::sys::set_cloexec(fd.as_raw_fd(), false)?;
        match by_addr.iter_mut().find(|(a, _)| a == addr) {
            Some((_, fds)) => fds.push(fd.as_raw_fd()),
            None => by_addr.push((*addr, vec![fd.as_raw_fd()])),
        }
    }
    let value = by_addr
        .iter()
        .map(|(a, fds)| format!("{a}={}", fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(";");
    Ok((LISTEN_FDS_ENV, value))
}
