//! Thin wrappers over socket syscalls that the ring does not cover.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::SockAddr;

type AddrFn = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn addr_of(fd: RawFd, f: AddrFn) -> Option<SocketAddr> {
    // SAFETY: `try_init` hands us storage and a length sized for any socket address; the
    // syscall fills at most that much and reports the length it used.
    let (_, addr) =
        unsafe {
            SockAddr::try_init(|storage, len| {
                if f(fd, storage.cast(), len) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        }
        .ok()?;
    addr.as_socket()
}

/// `getpeername(2)`.
pub(crate) fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    addr_of(fd, libc::getpeername)
}

/// `getsockname(2)`.
pub(crate) fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    addr_of(fd, libc::getsockname)
}

/// A non-blocking, close-on-exec eventfd for cross-thread wake-ups.
pub(crate) fn eventfd() -> std::io::Result<RawFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

/// Adds one to an eventfd counter (wakes a ring waiting on it).
pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Ignores SIGPIPE process-wide if it still has its default action (like Workerman): a write
/// to a reset socket must fail with EPIPE, not kill the server.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: querying then setting a signal disposition; no handler code runs.
    unsafe {
        let mut old = MaybeUninit::<libc::sigaction>::zeroed();
        if libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) == 0
            && old.assume_init().sa_sigaction == libc::SIG_DFL
        {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for cpu < 1024.
    unsafe {
        let mut set = MaybeUninit::<libc::cpu_set_t>::zeroed().assume_init();
        libc::CPU_SET(cpu % 1024, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets FD_CLOEXEC (inherited descriptors must not leak into further children by accident).
pub(crate) fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we were handed; failure leaves it unchanged.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Clears FD_CLOEXEC so `fd` survives exec into a successor process.
pub fn clear_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; the result is checked.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Resident set size of this process, from `/proc/self/statm`.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
