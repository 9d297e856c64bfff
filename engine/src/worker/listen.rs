//! Listening sockets: opened here, or inherited from a predecessor process (zero-downtime
//! reload), the probe that refuses a port another process already serves, and the Unix
//! socket files (a stale one removed, a live one refused).

use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::addr::ListenAddr;
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
/// successor (zero-downtime reload): `ADDR=FD,FD;ADDR=FD`, e.g. `127.0.0.1:8000=3,4`; a
/// `udp://` worker's datagram sockets are listed as `udp:127.0.0.1:9000=5,6`; a Unix
/// socket's `ADDR` is `unix:` and its path with `%`, `;`, `=`, `,` and bytes outside
/// printable ASCII percent-encoded (`handover::successor_env` writes it).
pub(crate) const LISTEN_FDS_ENV: &str = "RINGMAN_LISTEN_FDS";

/// `addr` as it is written in [`LISTEN_FDS_ENV`].
pub(crate) fn encode_addr(addr: &ListenAddr) -> String {
    use std::os::unix::ffi::OsStrExt;
    match addr {
        ListenAddr::Inet(a) => a.to_string(),
        ListenAddr::Udp(a) => format!("udp:{a}"),
        ListenAddr::Unix(p) => {
            let mut out = String::from("unix:");
            for &b in p.as_os_str().as_bytes() {
                if (b.is_ascii_graphic() && !matches!(b, b'%' | b';' | b'=' | b',')) || b == b' ' {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
    }
}

/// The address [`encode_addr`] wrote, if `s` is one.
fn decode_addr(s: &str) -> Option<ListenAddr> {
    use std::os::unix::ffi::OsStringExt;
    if let Some(udp) = s.strip_prefix("udp:") {
        return udp.parse().ok().map(ListenAddr::Udp);
    }
    let Some(rest) = s.strip_prefix("unix:") else { return s.parse().ok().map(ListenAddr::Inet) };
    let (mut bytes, mut it) = (Vec::new(), rest.bytes());
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    Some(ListenAddr::Unix(std::ffi::OsString::from_vec(bytes).into()))
}

/// Whether `fd` is a listening socket bound to `addr` (for a UDP address: a datagram socket
/// bound to it and connected to no peer).
fn listens_on(fd: BorrowedFd<'_>, addr: &ListenAddr) -> bool {
    let sock = socket2::SockRef::from(&fd);
    match addr {
        ListenAddr::Udp(a) => {
            sock.r#type().ok() == Some(Type::DGRAM)
                && crate::sys::local_addr(fd) == Some(*a)
                && crate::sys::peer_addr(fd).is_none()
        }
        ListenAddr::Inet(a) => sock.is_listener().unwrap_or(false) && crate::sys::local_addr(fd) == Some(*a),
        ListenAddr::Unix(p) => {
            sock.is_listener().unwrap_or(false) && crate::sys::unix_path(fd, false).as_deref() == Some(p.as_path())
        }
    }
}

/// Listening descriptors inherited for `addr` through [`LISTEN_FDS_ENV`], if any. Each is
/// checked to be a listening socket bound to `addr` before use (for `ListenAddr::Udp`: a
/// datagram socket bound to it).
pub(crate) fn inherited(addr: &ListenAddr) -> Vec<OwnedFd> {
    let Ok(spec) = std::env::var(LISTEN_FDS_ENV) else { return Vec::new() };
    let mut taken: Vec<RawFd> = Vec::new();
    for entry in spec.split(';') {
        let Some((a, fds)) = entry.rsplit_once('=') else { continue };
        if decode_addr(a).as_ref() != Some(addr) {
            continue;
        }
        for fd in fds.split(',').filter_map(|f| f.trim().parse::<RawFd>().ok()) {
            if fd < 0 || taken.contains(&fd) {
                continue;
            }
            // SAFETY: only borrowed for the checks below; a descriptor that is not open makes
            // them fail harmlessly.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            if listens_on(borrowed, addr) {
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

/// Opens a Unix-domain listening socket at `path` (an absolute path). A socket file already
/// there is tried first: if a server accepts a connection on it, that is
/// [`EngineError::SocketFileInUse`]; if the connection is refused, the file is stale (its
/// server died without removing it) and is removed. A path that exists and is not a socket
/// is [`EngineError::NotASocket`]. With `mode`, the file's permissions are set to it after
/// binding and before listening (so no client connects before they are right); otherwise
/// they are what `bind(2)` gives: `0777` minus the process's umask.
pub(crate) fn listen_unix(path: &Path, backlog: i32, mode: Option<u32>) -> Result<OwnedFd, EngineError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let err = |source: std::io::Error| EngineError::ListenUnix { path: path.to_path_buf(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(EngineError::NotASocket { path: path.to_path_buf() });
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(EngineError::SocketFileInUse { path: path.to_path_buf() }),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                log::info!("removing stale socket file {}", path.display());
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                    _ => {}
                }
            }
            // Gone meanwhile: bind below.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).map_err(err)?;
    s.bind(&SockAddr::unix(path).map_err(err)?).map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            // Another server bound the path between the check and the bind.
            EngineError::SocketFileInUse { path: path.to_path_buf() }
        } else {
            err(e)
        }
    })?;
    let listening = mode
        .map_or(Ok(()), |m| std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)))
        .and_then(|()| s.listen(backlog));
    if let Err(e) = listening {
        let _ = std::fs::remove_file(path);
        return Err(err(e));
    }
    Ok(s.into())
}

/// `path` made absolute against the current directory (so that a reload successor started
/// elsewhere, and `getsockname`, name the same file). Unix socket paths are limited to 107
/// bytes.
pub(crate) fn unix_listen_path(path: &str) -> Result<PathBuf, &'static str> {
    if path.is_empty() {
        return Err("expected unix:///path/to/socket");
    }
    let p = std::path::absolute(path).map_err(|_| "cannot make the socket path absolute")?;
    if p.as_os_str().len() > 107 {
        return Err("a unix socket path is at most 107 bytes long");
    }
    Ok(p)
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
