//! Handing listening sockets to a successor process (zero-downtime reload).
//!
//! A process that replaces itself passes its listening sockets — and its `udp://` workers'
//! datagram sockets — to the new copy of the program: the descriptors stay open across
//! `exec`, and one environment variable tells the successor which descriptor listens on
//! which address. A [`crate::Server`] started in the successor adopts those sockets instead
//! of binding new ones, so the accept queues (and the datagrams queued on a UDP socket)
//! survive the switch.
//!
//! The session-ticket keys of the TLS workers go along ([`pass_ticket_keys`]), so that a
//! client's ticket from before the reload resumes its session with the successor.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;

use crate::addr::ListenAddr;
use crate::handle::WorkerHandle;

/// Environment variable naming the descriptor of the memfd that holds a predecessor's
/// session-ticket keys (written by [`pass_ticket_keys`]; the keys themselves never appear
/// in the environment or the command line, both readable in `/proc`).
pub const TICKET_KEYS_FD_ENV: &str = crate::tls::tickets::TICKET_KEYS_FD_ENV;

/// Prepares `cmd`, the successor about to be spawned, to receive the session-ticket keys
/// of those `workers` that serve TLS: the current and previous key of each (with their
/// ages, so the successor rotates on the same schedule) go into a sealed memfd, whose
/// descriptor number goes into [`TICKET_KEYS_FD_ENV`]. The descriptor stays close-on-exec
/// in this process; a hook run in the child just before `exec` clears the flag there, so no
/// other child inherits it. The successor's TLS workers adopt the keys at start (each the
/// keys of the worker with its name and configured address), read the memfd and close it.
///
/// Returns the memfd (`None` when no worker serves TLS): keep it until `cmd` is spawned,
/// then drop it. Without a call the variable is not passed on either (`cmd` inherits this
/// process's environment, which may still name its own predecessor's descriptor): it is
/// removed from `cmd`'s environment first.
pub fn pass_ticket_keys(cmd: &mut std::process::Command, workers: &[WorkerHandle]) -> std::io::Result<Option<OwnedFd>> {
    cmd.env_remove(TICKET_KEYS_FD_ENV);
    let sets: Vec<&crate::tls::tickets::TicketKeys> = workers.iter().filter_map(|w| w.tickets.as_deref()).collect();
    if sets.is_empty() {
        return Ok(None);
    }
    let fd = crate::tls::tickets::handoff_memfd(&sets)?;
    let raw = fd.as_raw_fd();
    cmd.env(TICKET_KEYS_FD_ENV, raw.to_string());
    // SAFETY: the hook runs in the forked child before `exec`: it makes one fcntl call
    // (async-signal-safe), allocates nothing, takes no lock, and touches only the memfd's
    // number, which the child inherited open from this process (the caller keeps `fd`
    // until the spawn).
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: F_SETFD on an inherited descriptor; the result is checked.
            if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(Some(fd))
}

/// Prepares `listeners` (each a listening socket with the address it is bound to: a
/// `SocketAddr`, or a [`ListenAddr`] for TCP, Unix and UDP sockets alike) for a successor
/// process: clears FD_CLOEXEC on every descriptor so it survives `exec`, and returns the
/// environment variable name and value the successor must be started with.
///
/// The value lists the descriptors per address, `ADDR=FD,FD;ADDR=FD` (addresses in the
/// order they first appear), e.g.
/// `127.0.0.1:8000=3,4;[::1]:9000=5;unix:/run/a.sock=6;udp:0.0.0.0:9000=7,8` (a socket
/// file's path has `%`, `;`, `=`, `,` and bytes outside printable ASCII percent-encoded). A
/// [`crate::Worker`] on one of these addresses, started in the successor, takes its sockets
/// from there (each is checked to be a listener bound to that address — for
/// [`ListenAddr::Udp`], a datagram socket bound to it and connected to no peer — and made
/// close-on-exec again). A `udp://` worker keeps every socket it is handed, even more than
/// it has rings (a ring then serves several), so no receive queue is dropped.
///
/// The descriptors stay inheritable after the call: set FD_CLOEXEC again once the
/// successor is spawned, so later children do not inherit them. Once the successor serves,
/// call [`release_socket_files`] so that this process leaves the Unix socket files to it.
///
/// ```no_run
/// use std::os::fd::AsFd;
/// let l = std::net::TcpListener::bind("127.0.0.1:8000")?;
/// let addr = l.local_addr()?;
/// let (name, value) = ringman_engine::handover::successor_env(&[(l.as_fd(), addr)])?;
/// std::process::Command::new("/proc/self/exe").env(name, value).spawn()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn successor_env<A: Clone + Into<ListenAddr>>(
    listeners: &[(BorrowedFd<'_>, A)],
) -> std::io::Result<(&'static str, String)> {
    let mut groups: Vec<(ListenAddr, Vec<i32>)> = Vec::new();
    for (fd, addr) in listeners {
        let addr: ListenAddr = addr.clone().into();
        let raw = fd.as_raw_fd();
        crate::sys::set_cloexec(raw, false)?;
        match groups.iter_mut().find(|(a, _)| *a == addr) {
            Some((_, fds)) => fds.push(raw),
            None => groups.push((addr, vec![raw])),
        }
    }
    let value = groups
        .iter()
        .map(|(addr, fds)| {
            let fds: Vec<String> = fds.iter().map(i32::to_string).collect();
            format!("{}={}", crate::worker::encode_addr(addr), fds.join(","))
        })
        .collect::<Vec<_>>()
        .join(";");
    Ok((crate::worker::LISTEN_FDS_ENV, value))
}

/// Leaves the socket files of these Unix addresses to a successor process that adopted
/// their sockets: when this process's listeners on them close (its final stop after a
/// reload), the files stay. Without this call a process removes its socket files when
/// its listeners close. Call it only once the successor serves (a reload that failed keeps
/// them this process's). TCP addresses are ignored.
pub fn release_socket_files<'a>(addrs: impl IntoIterator<Item = &'a ListenAddr>) {
    for a in addrs {
        if let ListenAddr::Unix(p) = a {
            crate::addr::hand_over(p);
        }
    }
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
        // A socket file whose name holds every separator of the encoding, and a non-UTF-8 byte.
        let dir = std::env::temp_dir().join(format!("ringman-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = {
            use std::os::unix::ffi::OsStrExt;
            dir.join(std::ffi::OsStr::from_bytes(b"a;b=c,d%e f\xff.sock"))
        };
        let _ = std::fs::remove_file(&path);
        let u = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let addr_u = ListenAddr::Unix(path.clone());
        // UDP: a worker's datagram socket; a connected one (a client's), and a TCP listener
        // listed as UDP, which are not adopted.
        let d = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr_d = ListenAddr::Udp(d.local_addr().unwrap());
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.connect(d.local_addr().unwrap()).unwrap();
        let addr_c = ListenAddr::Udp(c.local_addr().unwrap());
        let (name, value) = successor_env(&[
            (a.as_fd(), ListenAddr::from(addr_a)),
            (b.as_fd(), addr_b.into()),
            (u.as_fd(), addr_u.clone()),
            (d.as_fd(), addr_d.clone()),
            (c.as_fd(), addr_c.clone()),
            (a.as_fd(), ListenAddr::Udp(addr_a)),
        ])
        .unwrap();
        assert!(value.contains(&format!("udp:{}={}", d.local_addr().unwrap(), d.as_raw_fd())), "{value}");
        assert_eq!(successor_env::<ListenAddr>(&[]).unwrap().1, "");
        assert!(value.contains(&format!("a%3Bb%3Dc%2Cd%25e f%FF.sock={};", u.as_raw_fd())), "{value}");
        // No other engine unit test touches this variable.
        std::env::set_var(name, &value);
        // The test's listeners keep owning the descriptors: the adopted copies are released.
        let adopt = |addr: &ListenAddr| -> Vec<i32> {
            crate::worker::inherited(addr).into_iter().map(IntoRawFd::into_raw_fd).collect()
        };
        let (got_a, got_b, got_u) = (adopt(&addr_a.into()), adopt(&addr_b.into()), adopt(&addr_u));
        let (got_d, got_c, tcp_as_udp) = (adopt(&addr_d), adopt(&addr_c), adopt(&ListenAddr::Udp(addr_a)));
        let elsewhere = adopt(&ListenAddr::Unix(dir.join("other.sock")));
        std::env::remove_var(name);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got_a, vec![a.as_raw_fd()], "{value}");
        assert_eq!(got_b, vec![b.as_raw_fd()], "{value}");
        assert_eq!(got_u, vec![u.as_raw_fd()], "{value}");
        assert_eq!(got_d, vec![d.as_raw_fd()], "{value}");
        assert!(got_c.is_empty(), "a connected UDP socket is a client's, not a worker's");
        assert!(tcp_as_udp.is_empty(), "a TCP listener is no UDP socket");
        assert!(elsewhere.is_empty(), "only the listed path");
        assert!(
            cloexec(a.as_fd()) && cloexec(b.as_fd()) && cloexec(u.as_fd()) && cloexec(d.as_fd()),
            "adoption makes them close-on-exec again"
        );
    }
}
