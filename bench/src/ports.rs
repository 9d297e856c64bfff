//! Free loopback ports for servers that are told their port before they bind it.
//!
//! The usual trick (bind port 0, read the port back, release it) loses a race: a port
//! released that way lies in the kernel's ephemeral range, where the next outgoing
//! connection of any process may take it as its source port before the server binds it
//! (`EADDRINUSE`), which lost a CI run twice. A port handed out here lies outside that
//! range, is free on 127.0.0.1 for TCP and UDP when chosen, and stays reserved for this
//! process's life by a lock on a file in the temporary directory, so that no other process
//! using this module (a test binary or the harness running beside it) picks it too.
//!
//! This file is also compiled into the facade crate's integration tests (`tests/common`),
//! so it uses nothing but `std` and `libc`.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// A port outside the ephemeral range, free on 127.0.0.1 for TCP and UDP and reserved for
/// this process (see the module's documentation). `None` when every candidate is taken.
pub fn free_port() -> Option<u16> {
    let (lo, hi) = ephemeral_range();
    // The unprivileged ports outside [lo, hi], the last one left out (pairs need p + 1).
    let below = lo.saturating_sub(10_000).max(1024)..lo;
    let above = (hi + 1).min(65_534)..65_534;
    let (n_below, n_above) = (below.end - below.start, above.end - above.start);
    let n = n_below + n_above;
    // Processes start at different points (their pid) and walk by a prime step.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..n {
        let step = NEXT.fetch_add(7919, Ordering::Relaxed);
        let i = seed.wrapping_add(step) % n.max(1);
        let port = if i < n_below { below.start + i } else { above.start + (i - n_below) };
        if try_reserve(port as u16) {
            return Some(port as u16);
        }
    }
    None
}

/// The kernel's ephemeral port range (`ip_local_port_range`), its default when unreadable.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Reserves `port` for this process's life if it is free on 127.0.0.1 for TCP and UDP and
/// no other process holds its lock file. A port reserved once is never reserved again by
/// this process (its lock is held), so ports handed out never repeat.
pub fn try_reserve(port: u16) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join("ringman-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    // Shared by every user, as the temporary directory itself (sticky, writable by all):
    // the tests may run as root and the harness as a user, or the other way round. Only the
    // owner can change the mode; a directory made by another user already has it.
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    let path = dir.join(port.to_string());
    // A lock file made by another user is opened for reading: `flock` needs no more.
    let opened = std::fs::OpenOptions::new().append(true).create(true).open(&path);
    let Ok(lock) = opened.or_else(|_| std::fs::File::open(&path)) else { return false };
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false; // another process holds it (or this one, on another descriptor)
    }
    let tcp = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
    if tcp && udp {
        // Held until this process exits, when the kernel drops the lock.
        std::mem::forget(lock);
    }
    tcp && udp
}
