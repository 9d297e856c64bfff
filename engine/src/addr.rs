//! Where a worker listens — an IP address and port (TCP or UDP), or a Unix-domain socket
//! file — and the
//! listening socket itself ([`ListenSocket`]), which removes its socket file when it closes
//! unless a successor process took it over.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The address a worker listens on: `scheme://ip:port`, `udp://ip:port` or `unix:///path`.
///
/// `Display` writes `ip:port` (IPv6 in brackets) for the first (whose scheme names its
/// protocol), `udp://ip:port` and `unix:///path` for the others, as a listen URL names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenAddr {
    /// A TCP address (with the real port once bound).
    Inet(SocketAddr),
    /// A Unix-domain stream socket: the path of its socket file (absolute).
    Unix(PathBuf),
    /// A UDP address: a datagram service (with the real port once bound).
    Udp(SocketAddr),
}

impl ListenAddr {
    /// The TCP address, if this is one.
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Inet(a) => Some(*a),
            ListenAddr::Unix(_) | ListenAddr::Udp(_) => None,
        }
    }

    /// The UDP address, if this is one.
    pub fn as_udp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Udp(a) => Some(*a),
            ListenAddr::Inet(_) | ListenAddr::Unix(_) => None,
        }
    }

    /// The IP address and port, TCP or UDP; `None` for a Unix-domain socket.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Inet(a) | ListenAddr::Udp(a) => Some(*a),
            ListenAddr::Unix(_) => None,
        }
    }

    /// The socket file's path, if this is a Unix-domain address.
    pub fn as_unix(&self) -> Option<&Path> {
        match self {
            ListenAddr::Inet(_) | ListenAddr::Udp(_) => None,
            ListenAddr::Unix(p) => Some(p),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> ListenAddr {
        ListenAddr::Inet(a)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Inet(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            ListenAddr::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

/// Socket files handed to a successor process (`handover::release_socket_files`): their
/// listeners close here without removing them.
static HANDED_OVER: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Marks `path` as owned by a successor process from now on.
pub(crate) fn hand_over(path: &Path) {
    let mut v = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner());
    if !v.iter().any(|p| p == path) {
        v.push(path.to_path_buf());
    }
}

fn handed_over(path: &Path) -> bool {
    HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|p| p == path)
}

/// The identity (device, inode) of the file at `path`, without following a symlink.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A worker's socket — a stream listener, or a `udp://` worker's datagram socket —, shared
/// (through an `Arc`) by the rings that serve it and the worker's `Listeners`; the last
/// holder closes it. (A UDP client's socket is one too, held by its ring alone.)
///
/// A Unix-domain listener also owns its socket file: when it closes, the file is removed —
/// unless it was handed to a successor process (reload), or the file at the path is no
/// longer the one this socket created (compared by device and inode, so a file another
/// server bound there since is left alone). The file is removed before the socket closes,
/// so that while it exists a client can tell a live server from a stale file.
#[derive(Debug)]
pub(crate) struct ListenSocket {
    fd: OwnedFd,
    /// The socket file and its identity when bound or adopted.
    file: Option<(PathBuf, Option<(u64, u64)>)>,
    /// A datagram socket: rings receive on it (`Core::udp_listen`) instead of accepting.
    datagram: bool,
}

impl ListenSocket {
    /// A TCP listener.
    pub(crate) fn inet(fd: OwnedFd) -> ListenSocket {
        ListenSocket { fd, file: None, datagram: false }
    }

    /// A Unix-domain listener bound (or adopted) at `path`.
    pub(crate) fn unix(fd: OwnedFd, path: PathBuf) -> ListenSocket {
        let id = file_id(&path);
        ListenSocket { fd, file: Some((path, id)), datagram: false }
    }

    /// A UDP socket.
    pub(crate) fn udp(fd: OwnedFd) -> ListenSocket {
        ListenSocket { fd, file: None, datagram: true }
    }

    /// Whether this is a UDP socket (received on, not accepted on).
    pub(crate) fn is_datagram(&self) -> bool {
        self.datagram
    }
}

impl AsFd for ListenSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for ListenSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        let Some((path, id)) = &self.file else { return };
        if id.is_some() && file_id(path) == *id && !handed_over(path) {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("cannot remove socket file {}: {e}", path.display());
            }
        }
        // `fd` closes after this.
    }
}
