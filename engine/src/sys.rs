//! Thin wrappers over the syscalls the ring does not cover, through one [`syscall!`] helper.
//! Descriptors are owned ([`OwnedFd`]) or borrowed ([`BorrowedFd`]): closing is dropping.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::SockAddr;

/// Calls a libc function that reports failure as -1 with `errno`, turning that into an
/// [`io::Error`]. The call itself must be wrapped in `unsafe` by the caller, with its
/// `// SAFETY:` reasoning.
macro_rules! syscall {
    ($call:expr) => {{
        let r = $call;
        if r == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use syscall;

type AddrFn = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sockaddr_of(fd: BorrowedFd<'_>, f: AddrFn) -> Option<SockAddr> {
    // SAFETY: `try_init` hands us storage and a length sized for any socket address; the
    // syscall fills at most that much and reports the length it used.
    let (_, addr) =
        unsafe { SockAddr::try_init(|storage, len| syscall!(f(fd.as_raw_fd(), storage.cast(), len)).map(drop)) }
            .ok()?;
    Some(addr)
}

/// `getpeername(2)`.
pub(crate) fn peer_addr(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    sockaddr_of(fd, libc::getpeername)?.as_socket()
}

/// `getsockname(2)`.
pub(crate) fn local_addr(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    sockaddr_of(fd, libc::getsockname)?.as_socket()
}

/// The socket file a Unix-domain socket is bound to (`getsockname(2)`), or, with `peer`,
/// the one its peer is bound to (`getpeername(2)`); `None` for an unnamed end or another
/// family.
pub(crate) fn unix_path(fd: BorrowedFd<'_>, peer: bool) -> Option<std::path::PathBuf> {
    let a = sockaddr_of(fd, if peer { libc::getpeername } else { libc::getsockname })?;
    a.as_pathname().map(std::path::Path::to_path_buf)
}

/// A non-blocking, close-on-exec eventfd for cross-thread wake-ups.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = syscall!(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd counter (wakes a ring waiting on it). A full counter (EAGAIN)
/// already means "wake up", so the result is not needed.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd the caller holds open.
    let _ = syscall!(unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) });
}

/// `shutdown(2)` on a socket we hold open; errors (not connected) are of no interest.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, how: libc::c_int) {
    // SAFETY: plain syscall on a descriptor the caller holds open.
    let _ = syscall!(unsafe { libc::shutdown(fd.as_raw_fd(), how) });
}

/// Asks the kernel to attach the TLS upper-layer protocol (kTLS) to a connected TCP socket:
/// the probe of whether this kernel could take over TLS records.
pub(crate) fn set_tcp_ulp_tls(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    const TCP_ULP: libc::c_int = 31;
    let name = b"tls";
    // SAFETY: `name` outlives the call and its length is passed with it.
    syscall!(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    })
    .map(drop)
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
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for cpu < 1024.
    let set = unsafe {
        let mut set = MaybeUninit::<libc::cpu_set_t>::zeroed().assume_init();
        libc::CPU_SET(cpu % 1024, &mut set);
        set
    };
    // SAFETY: the set is a live, initialised cpu_set_t of the size passed.
    syscall!(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) }).map(drop)
}

/// A sealed, close-on-exec `memfd` named `name` holding exactly `data`: written, then
/// sealed against writes, growth and shrinking, so whoever reads it later sees these bytes.
pub(crate) fn sealed_memfd(name: &std::ffi::CStr, data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call; the result is checked.
    let fd = syscall!(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: writes from a live slice of the length passed, to a descriptor we own.
        let n = syscall!(unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) })?;
        done += n as usize;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own; the result is checked.
    syscall!(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) })?;
    Ok(fd)
}

/// Sets (`on`) or clears FD_CLOEXEC: inherited descriptors must not leak into further
/// children by accident, and handed-over ones must survive exec into a successor.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; results are checked.
    let flags = syscall!(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    let want = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
    if want != flags {
        // SAFETY: as above.
        syscall!(unsafe { libc::fcntl(fd, libc::F_SETFD, want) })?;
    }
    Ok(())
}

/// The soft limit on this process's open descriptors (`RLIMIT_NOFILE`); `None` when
/// unlimited or unreadable.
pub(crate) fn nofile_limit() -> Option<u64> {
    let mut lim = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit writes one `rlimit` into the storage we pass.
    syscall!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, lim.as_mut_ptr()) }).ok()?;
    // SAFETY: initialised by the successful call above.
    let cur = unsafe { lim.assume_init() }.rlim_cur;
    (cur != libc::RLIM_INFINITY).then_some(cur)
}

/// Resident memory of this process in bytes (`/proc/self/statm`, the same figure as
/// `VmRSS`): what `max_memory` compares against and what status reports.
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// `openat2(2)` (Linux 5.6) of `rel` under the directory `dir`, read only, refusing any
/// resolution that leaves `dir` (`..`, absolute paths and symbolic links pointing outside,
/// or absolute ones at all) and "magic" links: the kernel checks containment in the one
/// lookup, so a file server pays one syscall per miss instead of a `realpath`.
/// Non-blocking, so a FIFO under `dir` cannot stall the caller (reads of regular files
/// ignore the flag). `ENOSYS` on an older kernel.
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, rel: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: `open_how` is plain data; all-zero is valid (no flags, mode 0, no resolve flags).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `rel` is NUL-terminated, `how` is a valid `open_how` of the size passed; the
    // returned descriptor is new and owned by the result.
    let fd = syscall!(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    })?;
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens directory `path` as a handle for [`open_beneath`] (`O_PATH`: no read access
/// needed, nothing but lookups beneath it).
pub(crate) fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `c` is NUL-terminated; the returned descriptor is new and owned by the result.
    let fd = syscall!(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking, close-on-exec inotify instance (`inotify_init1(2)`).
pub(crate) fn inotify() -> io::Result<OwnedFd> {
    // SAFETY: takes no pointers; returns a new descriptor or -1.
    let fd = syscall!(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds (or updates) a watch for `mask` on `path` to inotify instance `fd`
/// (`inotify_add_watch(2)`); returns the watch descriptor.
pub(crate) fn inotify_watch(fd: BorrowedFd<'_>, path: &std::path::Path, mask: u32) -> io::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `c` is NUL-terminated and alive for the call; `fd` is borrowed, so open.
    syscall!(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) })
}

/// Removes watch `wd` from inotify instance `fd` (`inotify_rm_watch(2)`).
pub(crate) fn inotify_unwatch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: takes no pointers; `fd` is borrowed, so open.
    syscall!(unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloexec_is_set_and_cleared() {
        let fd = eventfd().unwrap();
        // SAFETY: F_GETFD on a descriptor this test owns.
        let get = || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC;
        assert_ne!(get(), 0, "eventfds are created close-on-exec");
        set_cloexec(fd.as_raw_fd(), false).unwrap();
        assert_eq!(get(), 0);
        set_cloexec(fd.as_raw_fd(), true).unwrap();
        assert_ne!(get(), 0);
        assert!(set_cloexec(-1, true).is_err(), "a bad descriptor is an error, not a no-op");
    }

    #[test]
    fn resident_memory_is_plausible() {
        let rss = resident_memory().expect("procfs is mounted");
        assert!(rss > 64 * 1024 && rss < 64 << 30, "{rss}");
    }
}
