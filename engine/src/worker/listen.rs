//! Listening sockets: opened here, or inherited from a predecessor process (zero-downtime
//! reload), and the probe that refuses a port another process already serves.

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

use crate::config::Keepalive;
use crate::error::EngineError;

/// Opens a listening socket. `reuse_port` lets one socket per thread share the port;
/// `keepalive` is set on it, so accepted sockets inherit it.
pub(crate) fn listen(
    addr: SocketAddr,
    reuse_port: bool,
    backlog: i32,
    keepalive: Option<Keepalive>,
) -> Result<OwnedFd, EngineError> {
    let err = |source: std::io::Error| {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            EngineError::AddrInUse { addr }
        } else {
            EngineError::Listen { addr, source }
        }
    };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    if reuse_port {
        s.set_reuse_port(true).map_err(err)?;
    }
    if addr.is_ipv6() {
        // `[::]` listens dual-stack, as in Workerman.
        let _ = s.set_only_v6(false);
    }
    // Accepted sockets inherit TCP_NODELAY from the listener, and SO_KEEPALIVE, the
    // TCP_KEEP* values and TCP_USER_TIMEOUT too.
    s.set_tcp_nodelay(true).map_err(err)?;
    Keepalive::configure(keepalive, &socket2::SockRef::from(&s)).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(backlog).map_err(err)?;
    Ok(s.into())
}

/// Environment variable through which a parent process hands its listening sockets to a
/// successor (zero-downtime reload): `ADDR=FD,FD;ADDR=FD`, e.g. `127.0.0.1:8000=3,4`.
pub(crate) const LISTEN_FDS_ENV: &str = "RINGMAN_LISTEN_FDS";

/// Listening descriptors inherited for `addr` through [`LISTEN_FDS_ENV`], if any. Each is
/// checked to be a listening socket bound to `addr` before use.
pub(crate) fn inherited(addr: SocketAddr) -> Vec<OwnedFd> {
    let Ok(spec) = std::env::var(LISTEN_FDS_ENV) else { return Vec::new() };
    let mut taken: Vec<RawFd> = Vec::new();
    for entry in spec.split(';') {
        let Some((a, fds)) = entry.split_once('=') else { continue };
        if a.parse::<SocketAddr>().ok() != Some(addr) {
            continue;
        }
        for fd in fds.split(',').filter_map(|f| f.trim().parse::<RawFd>().ok()) {
            if fd < 0 || taken.contains(&fd) {
                continue;
            }
            // SAFETY: only borrowed for the checks below; a descriptor that is not open makes
            // them fail harmlessly.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let sock = socket2::SockRef::from(&borrowed);
            if sock.is_listener().unwrap_or(false) && crate::sys::local_addr(borrowed) == Some(addr) {
                let _ = crate::sys::set_cloexec(fd, true);
                taken.push(fd);
            }
        }
    }
    taken
        .into_iter()
        // SAFETY: each descriptor was handed to this process for exactly this address by its
        // predecessor, is open (checked above) and is taken once (duplicates skipped); no
        // other code of the process owns it.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Fails with [`EngineError::AddrInUse`] if anything already listens on `addr`, even a
/// SO_REUSEPORT socket of another process (which a SO_REUSEPORT bind would silently join).
pub(crate) fn probe_port(addr: SocketAddr) -> Result<(), EngineError> {
    if addr.port() == 0 {
        return Ok(());
    }
    // The probe socket is closed when dropped here.
    listen(addr, false, 1, None).map(drop)
}
