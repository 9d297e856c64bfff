//! Zero-downtime reload: handing the listening sockets to a fresh copy of the binary.

use std::ffi::OsString;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use ringman_engine::{handover, ListenAddr, WorkerHandle};

use crate::{daemon, OpsError};

/// Environment variable naming the pipe descriptor on which a reload successor reports
/// `ok <pid>` once it serves (and has taken over the pid file and control socket).
pub const READY_FD_ENV: &str = "RINGMAN_READY_FD";
/// Environment variable listing (comma-separated) the worker names a successor must not
/// start: the non-reloadable workers, which keep running in the old process.
pub const SKIP_WORKERS_ENV: &str = "RINGMAN_SKIP_WORKERS";
/// Environment variable listing older processes still running non-reloadable workers;
/// the successor stops them when it stops.
pub const PREDECESSORS_ENV: &str = "RINGMAN_PREDECESSORS";

/// Listening sockets of this process bound to `addr` — a TCP address or a Unix socket file
/// (found by scanning `/proc/self/fd`: SO_ACCEPTCONN set and `getsockname` equal to `addr`),
/// or for a `udp://` address its datagram sockets (SOCK_DGRAM, bound to `addr`, connected
/// to no peer: the worker's, not its UDP clients').
pub fn listener_fds(addr: &ListenAddr) -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let mut fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| {
            // SAFETY: the descriptor is only borrowed for two getsockopt/getsockname calls;
            // if it was closed since the directory listing, the calls fail harmlessly.
            let b = unsafe { BorrowedFd::borrow_raw(fd) };
            let s = socket2::SockRef::from(&b);
            let local = s.local_addr().ok();
            match addr {
                ListenAddr::Udp(addr) => {
                    s.r#type().ok() == Some(socket2::Type::DGRAM)
                        && local.is_some_and(|a| a.as_socket() == Some(*addr))
                        && s.peer_addr().is_err()
                }
                _ => {
                    s.is_listener().unwrap_or(false)
                        && local.is_some_and(|a| match addr {
                            ListenAddr::Inet(addr) => a.as_socket() == Some(*addr),
                            ListenAddr::Unix(path) => a.as_pathname() == Some(path.as_path()),
                            _ => false,
                        })
                }
            }
        })
        .collect();
    fds.sort_unstable();
    fds
}

/// Sets (`on`) or clears FD_CLOEXEC on a descriptor this process owns.
fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; the results are checked.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        let new = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
        if flags < 0 || (new != flags && libc::fcntl(fd, libc::F_SETFD, new) < 0) {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The program to run as successor: the path this process was started from when it still
/// exists (so a replaced binary is picked up), else `/proc/self/exe`.
fn program() -> PathBuf {
    if let Ok(p) = std::fs::read_link("/proc/self/exe") {
        let s = p.to_string_lossy().to_string();
        if !s.ends_with(" (deleted)") && p.exists() {
            return p;
        }
        let stripped = PathBuf::from(s.trim_end_matches(" (deleted)"));
        if stripped.exists() {
            return stripped;
        }
    }
    PathBuf::from("/proc/self/exe")
}

/// What a reload hands over.
#[derive(Debug, Clone, Default)]
pub struct Handover {
    /// Each listening descriptor (or `udp://` worker's socket) of the reloadable workers
    /// with the address it listens on.
    pub pairs: Vec<(RawFd, ListenAddr)>,
    /// The reloadable workers: those serving TLS hand their session-ticket keys over
    /// ([`handover::pass_ticket_keys`]), so sessions resume across the reload.
    pub workers: Vec<WorkerHandle>,
}

/// Collects the listening sockets of the reloadable workers, and the datagram sockets of
/// their `udp://` workers.
pub fn handover(workers: &[WorkerHandle]) -> Handover {
    let mut pairs = Vec::new();
    for w in workers.iter().filter(|w| w.reloadable()) {
        let Some(addr) = w.listen_at() else { continue };
        pairs.extend(listener_fds(addr).into_iter().map(|f| (f, addr.clone())));
    }
    Handover { pairs, workers: workers.iter().filter(|w| w.reloadable()).cloned().collect() }
}

/// After the old process paused accepting, wakes the successor's accepts on any listener
/// that keeps a connection queued: io_uring accepts wait exclusively, so a wake-up taken
/// by an accept the old process then cancelled would otherwise leave that connection
/// queued until the next one arrives. The wake-up is a throwaway loopback (or Unix-socket)
/// connection (the successor sees it open and close at once). Runs for `window`. UDP
/// sockets need none (receives do not wait exclusively) and are left out.
pub fn kick_stuck_listeners(pairs: &[(RawFd, ListenAddr)], window: Duration) {
    let pairs: Vec<&(RawFd, ListenAddr)> = pairs.iter().filter(|(_, a)| !matches!(a, ListenAddr::Udp(_))).collect();
    let end = std::time::Instant::now() + window;
    let mut pending: Vec<Option<std::time::Instant>> = vec![None; pairs.len()];
    while std::time::Instant::now() < end {
        for (k, (fd, addr)) in pairs.iter().enumerate() {
            let fd = *fd;
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd on a listener this process still holds; 0 timeout.
            let ready = unsafe { libc::poll(&mut pfd, 1, 0) } == 1 && pfd.revents & libc::POLLIN != 0;
            if !ready {
                pending[k] = None;
                continue;
            }
            let since = *pending[k].get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= Duration::from_millis(30) {
                let addr = match addr {
                    ListenAddr::Inet(a) => *a,
                    ListenAddr::Unix(path) => {
                        let _ = std::os::unix::net::UnixStream::connect(path);
                        pending[k] = None;
                        continue;
                    }
                    _ => continue,
                };
                let mut target = addr;
                if addr.ip().is_unspecified() {
                    target.set_ip(if addr.is_ipv6() {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    });
                }
                let _ = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200));
                pending[k] = None;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the successor with the same argv and the handed-over sockets, and waits until it
/// reports ready. Returns its pid; on failure the successor is killed.
pub fn spawn_successor(
    h: &Handover,
    skip: &[String],
    predecessors: &[i32],
    ready_timeout: Duration,
) -> Result<u32, OpsError> {
    let sys = |what: &'static str| move |source: std::io::Error| OpsError::Sys { what, source };
    // SAFETY: the descriptors were found listening in /proc/self/fd and stay open while the
    // workers hold them, which outlasts this call.
    let listeners: Vec<_> =
        h.pairs.iter().map(|(fd, addr)| (unsafe { BorrowedFd::borrow_raw(*fd) }, addr.clone())).collect();
    // Clears FD_CLOEXEC on the listeners: from here on, every exit path sets it again.
    let listen_env = handover::successor_env(&listeners);
    let result = listen_env.map_err(sys("clear FD_CLOEXEC on a listener")).and_then(|(name, value)| {
        let (r, w) = daemon::pipe()?;
        let spawned = set_cloexec(w, false).map_err(sys("clear FD_CLOEXEC on the ready pipe")).and_then(|()| {
            let mut args = std::env::args_os();
            let arg0 = args.next().unwrap_or_else(|| OsString::from("ringman"));
            let mut cmd = std::process::Command::new(program());
            cmd.arg0(arg0)
                .args(args)
                .env(name, value)
                .env(READY_FD_ENV, w.to_string())
                .env(SKIP_WORKERS_ENV, skip.join(","))
                .env(PREDECESSORS_ENV, predecessors.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","));
            // Session-ticket keys: a failure to pass them costs resumption, not the reload.
            let keys = handover::pass_ticket_keys(&mut cmd, &h.workers).unwrap_or_else(|e| {
                log::warn!("reload: session-ticket keys not handed over ({e}); the successor makes new ones");
                None
            });
            let spawned = cmd.spawn().map_err(sys("spawn successor"));
            // (The successor holds its own copy of the memfd; ours closes here.)
            drop(keys);
            spawned
        });
        // SAFETY: our copy of the write end; the successor holds its own.
        unsafe { libc::close(w) };
        Ok((r, spawned))
    });
    for &(fd, _) in &h.pairs {
        let _ = set_cloexec(fd, true);
    }
    let (r, spawned) = result?;
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            // SAFETY: the read end is ours and unused.
            unsafe { libc::close(r) };
            return Err(e);
        }
    };
    let answer = daemon::read_ready(r, ready_timeout);
    let pid = child.id();
    match answer {
        Some(s) if s.starts_with("ok") => {
            // The successor serves on the Unix sockets too: their files are its to remove.
            handover::release_socket_files(h.pairs.iter().map(|(_, a)| a));
            // Reap it should it exit while we still run (no zombie).
            let _ = std::thread::Builder::new().name("ringman-successor".into()).spawn(move || child.wait());
            Ok(pid)
        }
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(OpsError::ReloadFailed(match other {
                None => format!("successor {pid} not ready within {ready_timeout:?}"),
                Some(s) if s.trim().is_empty() => format!("successor {pid} exited before it was ready"),
                Some(s) => s.trim().trim_start_matches("error:").trim().to_string(),
            }))
        }
    }
}
