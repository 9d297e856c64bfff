//! The three system calls the file monitor needs (`inotify_init1`, `inotify_add_watch`,
//! `poll`) behind a safe interface, and the decoding of the events read from the inotify
//! descriptor (plain byte parsing, no pointer casts).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

/// Size of `struct inotify_event` without its name.
const HEADER: usize = 16;

/// An inotify instance (close-on-exec, non-blocking: reads happen after [`wait`] says the
/// descriptor is readable).
#[derive(Debug)]
pub(super) struct Inotify {
    file: File,
}

/// One decoded `struct inotify_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Event {
    /// The watch descriptor (-1 for `IN_Q_OVERFLOW`).
    pub wd: i32,
    /// `IN_*` bits.
    pub mask: u32,
    /// The entry's name inside the watched directory (empty for events on the directory).
    pub name: OsString,
}

impl Inotify {
    pub(super) fn new() -> io::Result<Inotify> {
        // SAFETY: takes no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created by the call above and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify { file: File::from(owned) })
    }

    /// Adds (or updates) a watch on `path`; returns its watch descriptor.
    pub(super) fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a NUL-terminated string alive for the whole call; the descriptor
        // is this instance's own, open for as long as `self`.
        let wd = unsafe { libc::inotify_add_watch(self.file.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Reads every queued event (none when the queue is empty).
    pub(super) fn read_events(&mut self, buf: &mut [u8]) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        loop {
            match self.file.read(buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend(decode(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.file.as_fd()
    }
}

/// Decodes a buffer of whole `struct inotify_event`s (the kernel never splits one).
pub(super) fn decode(mut buf: &[u8]) -> Vec<Event> {
    let word = |b: &[u8], at: usize| -> [u8; 4] { [b[at], b[at + 1], b[at + 2], b[at + 3]] };
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let wd = i32::from_ne_bytes(word(buf, 0));
        let mask = u32::from_ne_bytes(word(buf, 4));
        let len = u32::from_ne_bytes(word(buf, 12)) as usize;
        let Some(raw) = buf.get(HEADER..HEADER + len) else { break };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        out.push(Event { wd, mask, name: OsString::from_vec(raw[..end].to_vec()) });
        buf = &buf[HEADER + len..];
    }
    out
}

/// Blocks until `a` or `b` is readable or hung up, or `timeout` passed (`None`: no limit).
/// Returns whether each one is ready.
pub(super) fn wait(a: BorrowedFd<'_>, b: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<(bool, bool)> {
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
    let mut fds = [
        libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is an array of two initialized pollfd whose descriptors are borrowed
        // (open) for the whole call; the length passed is the array's.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            let ready = |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
            return Ok((ready(&fds[0]), ready(&fds[1])));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
