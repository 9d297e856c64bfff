//! Pipes that hold a body's pages, so that a response is written to its socket by reference
//! instead of being copied into it.
//!
//! A [`BodyPipe`] is filled once with a body that never changes (a kept file body): its
//! pages belong to the pipe alone (its write end is closed at once). To answer a request
//! the ring thread writes the response head into its [`Scratch`] pipe, `tee(2)`s the body's
//! pages behind it (the pages are shared, not copied) and `splice(2)`s the whole response
//! into the socket, whose sk_buffs then hold the same pages. The kernel's only copy of the
//! body is the one made when the pipe was filled; a plain `send` copies it per response.
//!
//! Why not the ring: io_uring runs `IORING_OP_TEE` and `IORING_OP_SPLICE` on its io-wq
//! worker threads (forced async), a thread hop per response. The three calls here do not
//! block: both pipes are `O_NONBLOCK`, `tee` and `splice` get `SPLICE_F_NONBLOCK`, and an
//! accepted socket is `O_NONBLOCK` (`splice` to a socket honours only the socket's own
//! flag). They run only when nothing is queued before the response, so bytes never
//! overtake earlier ones; what the socket does not take is queued as any send is.
//!
//! Invariants (the kernel's pipe rules this module relies on):
//! 1. A body pipe is never written after it is filled (its write end is closed), so pages
//!    the sockets still hold keep the bytes they were filled with: `tee` clears the
//!    "can merge" flag of the buffers it links, and nothing writes into the source.
//! 2. The scratch pipe is empty between calls: whatever the socket did not take is read
//!    out before [`write_through`] returns, so the next response starts on an empty pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;

use crate::sys::syscall;

/// The largest body kept in a pipe: a pipe's default capacity (16 pages), so filling it
/// needs no `F_SETPIPE_SZ` and charges no more than any pipe to the user's pipe pages.
pub(crate) const BODY_PIPE_MAX: usize = 64 * 1024;

/// The smallest body worth a pipe: below it, the copy a plain send makes costs less than
/// the extra `write` and `tee` (see bench/README.md, "Files").
pub(crate) const BODY_PIPE_MIN: usize = 8 * 1024;

/// The scratch pipe's capacity: a head of a few pages and the largest piped body.
const SCRATCH_SIZE: libc::c_int = 2 * BODY_PIPE_MAX as libc::c_int;

/// A body that never changes, with (when the kernel gave one) a pipe holding its pages.
pub(crate) struct KeptBody {
    /// The body's bytes: sent by reference when it cannot go through the pipe.
    pub(crate) bytes: Bytes,
    /// The pipe holding the same bytes, for [`write_through`].
    pub(crate) pipe: Option<BodyPipe>,
}

impl KeptBody {
    /// `bytes`, kept in a pipe too when `piped` and the size is in the piped range.
    pub(crate) fn new(bytes: Bytes, piped: bool) -> KeptBody {
        let fits = (BODY_PIPE_MIN..=BODY_PIPE_MAX).contains(&bytes.len());
        let pipe = if piped && fits {
            BodyPipe::fill(&bytes).inspect_err(|e| log::debug!("no pipe for a kept body: {e}")).ok()
        } else {
            None
        };
        KeptBody { bytes, pipe }
    }
}

/// The read end of a pipe filled with a body (module invariant 1).
pub(crate) struct BodyPipe {
    fd: OwnedFd,
    len: usize,
}

impl BodyPipe {
    /// A pipe holding `body` whole; an error when the pipe cannot hold it (a user over
    /// `fs.pipe-user-pages-soft` gets pipes of two pages).
    pub(crate) fn fill(body: &[u8]) -> io::Result<BodyPipe> {
        let (r, w) = pipe()?;
        let mut at = 0;
        while at < body.len() {
            // SAFETY: writes from the live slice `body[at..]` into our pipe.
            let n = syscall!(unsafe { libc::write(w.as_raw_fd(), body[at..].as_ptr().cast(), body.len() - at) })?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            at += n as usize;
        }
        drop(w);
        Ok(BodyPipe { fd: r, len: body.len() })
    }
}

/// The per-thread pipe a response is assembled in (module invariant 2).
pub(crate) struct Scratch {
    r: OwnedFd,
    w: OwnedFd,
}

impl Scratch {
    /// A scratch pipe, grown to hold a head and the largest piped body where the user may
    /// (if not, a `tee` that does not fit falls back to a plain send).
    pub(crate) fn new() -> io::Result<Scratch> {
        let (r, w) = pipe()?;
        // SAFETY: fcntl on our own pipe descriptor.
        if let Err(e) = syscall!(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, SCRATCH_SIZE) }) {
            log::debug!("scratch pipe stays at its default size: {e}");
        }
        Ok(Scratch { r, w })
    }
}

/// A close-on-exec, non-blocking pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    syscall!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Writes `head` and then `body` to the non-blocking socket `sock` without copying the
/// body: returns how many bytes of the two the socket took (0 when it took none: its buffer
/// is full). An error of the socket is returned as is; an error of the pipes (a scratch pipe
/// too small for the body) takes nothing and answers 0, so the caller queues the whole.
pub(crate) fn write_through(scratch: &mut Scratch, sock: RawFd, head: &[u8], body: &BodyPipe) -> io::Result<usize> {
    let total = head.len() + body.len;
    let mut staged = 0;
    if !head.is_empty() {
        // SAFETY: writes from the live slice `head` into our pipe.
        let n = unsafe { libc::write(scratch.w.as_raw_fd(), head.as_ptr().cast(), head.len()) };
        staged = n.max(0) as usize;
        if staged < head.len() {
            return scratch.empty(staged).map(|()| 0);
        }
    }
    // SAFETY: duplicates page references from our body pipe into our scratch pipe.
    let n = unsafe {
        libc::tee(body.fd.as_raw_fd(), scratch.w.as_raw_fd(), body.len, libc::SPLICE_F_NONBLOCK as libc::c_uint)
    };
    staged += n.max(0) as usize;
    if staged < total {
        return scratch.empty(staged).map(|()| 0);
    }
    // SAFETY: moves page references from our scratch pipe into the caller's socket.
    let sent = unsafe {
        libc::splice(
            scratch.r.as_raw_fd(),
            std::ptr::null_mut(),
            sock,
            std::ptr::null_mut(),
            total,
            libc::SPLICE_F_NONBLOCK as libc::c_uint,
        )
    };
    let (sent, err) = match sent {
        -1 => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::WouldBlock => (0, None),
            e => (0, Some(e)),
        },
        n => (n as usize, None),
    };
    if sent < total {
        scratch.empty(total - sent)?;
    }
    match err {
        Some(e) => Err(e),
        None => Ok(sent),
    }
}

impl Scratch {
    /// Reads `n` bytes the socket did not take out of the scratch pipe (invariant 2). On a
    /// failure the pipe is replaced, so the next response still starts on an empty one.
    fn empty(&mut self, mut n: usize) -> io::Result<()> {
        let mut sink = [0u8; 16 * 1024];
        while n > 0 {
            // SAFETY: reads at most `sink.len()` bytes from our pipe into the local array.
            let r = unsafe { libc::read(self.r.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len().min(n)) };
            if r <= 0 {
                *self = Scratch::new()?;
                return Ok(());
            }
            n -= r as usize;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (s, c)
    }

    #[test]
    fn responses_go_through_whole_and_the_body_pipe_serves_again() {
        let body = pattern(30_000);
        let kept = BodyPipe::fill(&body).unwrap();
        let mut scratch = Scratch::new().unwrap();
        let (s, mut c) = pair();
        for round in 0..5 {
            let head = format!("head {round}\r\n");
            let n = write_through(&mut scratch, s.as_raw_fd(), head.as_bytes(), &kept).unwrap();
            assert_eq!(n, head.len() + body.len(), "round {round}: taken whole");
            let mut got = vec![0u8; n];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got[..head.len()], head.as_bytes());
            assert!(got[head.len()..] == body[..], "round {round}: body bytes");
        }
    }

    #[test]
    fn a_full_socket_takes_part_and_the_next_response_still_begins_with_its_head() {
        let body = pattern(BODY_PIPE_MAX);
        let kept = BodyPipe::fill(&body).unwrap();
        let mut scratch = Scratch::new().unwrap();
        let (s, mut c) = pair();
        let whole = [&b"HEAD\r\n"[..], &body[..]].concat();
        // The peer reads nothing: the socket takes whole responses, then part of one.
        let mut expected = Vec::new();
        let taken = loop {
            let n = write_through(&mut scratch, s.as_raw_fd(), b"HEAD\r\n", &kept).unwrap();
            expected.extend_from_slice(&whole[..n]);
            if n < whole.len() {
                break n;
            }
            assert!(expected.len() < 256 << 20, "the socket never filled");
        };
        let mut got = vec![0u8; expected.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == expected, "what the socket took is the responses' bytes in order");
        // Whatever the socket did not take left the scratch pipe: nothing more arrives, and
        // the next response begins with its head.
        c.set_nonblocking(true).unwrap();
        assert!(c.read(&mut [0u8; 1]).is_err(), "no stray bytes after the part taken ({taken})");
        c.set_nonblocking(false).unwrap();
        let n = write_through(&mut scratch, s.as_raw_fd(), b"HEAD\r\n", &kept).unwrap();
        assert_eq!(n, whole.len(), "the emptied socket takes a whole response");
        let mut got = vec![0u8; n];
        c.read_exact(&mut got).unwrap();
        assert!(got == whole, "a response after a partial one is whole and in order");
    }

    #[test]
    fn a_closed_peer_is_an_error_and_leaves_the_scratch_pipe_empty() {
        crate::sys::ignore_sigpipe();
        let body = pattern(20_000);
        let kept = BodyPipe::fill(&body).unwrap();
        let mut scratch = Scratch::new().unwrap();
        let (s, c) = pair();
        drop(c);
        let mut err = None;
        for _ in 0..10 {
            match write_through(&mut scratch, s.as_raw_fd(), b"h", &kept) {
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let e = err.expect("a reset peer fails the write");
        assert!(matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)), "{e}");
        let mut probe = [0u8; 1];
        // SAFETY: a non-blocking read of our own pipe into a local byte.
        let r = unsafe { libc::read(scratch.r.as_raw_fd(), probe.as_mut_ptr().cast(), 1) };
        assert_eq!(r, -1, "scratch pipe empty");
    }

    #[test]
    fn bodies_out_of_the_piped_range_are_kept_without_a_pipe() {
        assert!(KeptBody::new(Bytes::from(pattern(100)), true).pipe.is_none());
        assert!(KeptBody::new(Bytes::from(pattern(BODY_PIPE_MAX + 1)), true).pipe.is_none());
        assert!(KeptBody::new(Bytes::from(pattern(BODY_PIPE_MIN)), false).pipe.is_none());
        assert!(KeptBody::new(Bytes::from(pattern(BODY_PIPE_MIN)), true).pipe.is_some());
    }
}
