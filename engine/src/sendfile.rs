//! A response head and a file body written to a socket by the ring thread itself, the body
//! with `sendfile(2)`: the kernel hands the file's page-cache pages to the socket instead of
//! copying bytes from user memory into it (what a `send` of the body does).
//!
//! Why not the ring: io_uring has no sendfile operation, and runs `IORING_OP_SPLICE` on its
//! io-wq worker threads (forced async), a thread hop per response. Neither call here waits
//! for the socket: the head goes with `MSG_DONTWAIT`, and the socket is non-blocking
//! (accepted with `SOCK_NONBLOCK`; `sendfile` honours only the socket's own flag). The file
//! is read from the page cache; a page that left it is read from disk inside the call, as
//! nginx's `sendfile` does (only bodies the server read in full recently come here).
//!
//! Measured on loopback (bench/README.md, "Files"): bodies of 16 KiB to 64 KiB cost the
//! server 15–25 % less CPU this way than one send of head and kept body; below about 8 KiB
//! the copy is cheaper than the second call, and above 64 KiB (several pushes of 64 KiB)
//! the send wins again.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use bytes::Bytes;

use crate::sys::syscall;

/// The smallest body that goes through `sendfile` (below it one copying send is cheaper).
pub(crate) const SENDFILE_MIN: usize = 8 * 1024;

/// The largest: what the kernel moves in one step (`sendfile` goes through a pipe of 16
/// pages). A larger body is split into several socket writes, each pushed and paced on its
/// own, and costs more this way than as one send of the kept bytes (bench/README.md).
pub(crate) const SENDFILE_MAX: usize = 64 * 1024;

/// A body that is the bytes at `offset` of an open file, with those bytes kept in memory
/// (what the socket does not take at once is queued from them).
pub(crate) struct FileBody<'a> {
    /// The body's bytes, as read when the file was last seen to change.
    pub(crate) bytes: Bytes,
    /// The open file the bytes were read from.
    pub(crate) file: BorrowedFd<'a>,
    /// Where the body begins in the file.
    pub(crate) offset: u64,
}

/// Writes `head`, then `count` bytes of `file` from `offset`, to the non-blocking socket
/// `sock`: returns how many bytes of the two the socket took (0 when it took none: its
/// buffer is full). A socket error is returned only when nothing was taken; after part of
/// the response it surfaces on the caller's next send.
pub(crate) fn write_through(
    sock: RawFd,
    head: &[u8],
    file: BorrowedFd<'_>,
    offset: u64,
    count: usize,
) -> io::Result<usize> {
    let mut taken = 0;
    if !head.is_empty() {
        let flags = libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        // SAFETY: sends from the live slice `head` on the caller's socket.
        match syscall!(unsafe { libc::send(sock, head.as_ptr().cast(), head.len(), flags) }) {
            Ok(n) => taken = n as usize,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
        if taken < head.len() {
            return Ok(taken);
        }
    }
    let mut off = offset as libc::off_t;
    // SAFETY: `off` is a live local the call advances; both descriptors are the caller's.
    match syscall!(unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, count) }) {
        Ok(n) => Ok(taken + n as usize),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || taken > 0 => Ok(taken),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

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

    fn file_of(body: &[u8]) -> std::os::fd::OwnedFd {
        crate::sys::sealed_memfd(c"body", body).unwrap()
    }

    #[test]
    fn responses_go_through_whole_from_any_offset() {
        let body = pattern(30_000);
        let file = file_of(&body);
        let (s, mut c) = pair();
        for (round, at) in [0usize, 0, 4095, 12_345, 29_999].into_iter().enumerate() {
            let head = format!("head {round}\r\n");
            let n = write_through(s.as_raw_fd(), head.as_bytes(), file.as_fd(), at as u64, body.len() - at).unwrap();
            assert_eq!(n, head.len() + body.len() - at, "round {round}: taken whole");
            let mut got = vec![0u8; n];
            c.read_exact(&mut got).unwrap();
            assert_eq!(&got[..head.len()], head.as_bytes());
            assert!(got[head.len()..] == body[at..], "round {round}: body bytes");
        }
    }

    #[test]
    fn a_full_socket_takes_part_then_nothing_and_what_it_took_is_in_order() {
        let body = pattern(256 * 1024);
        let file = file_of(&body);
        let (s, mut c) = pair();
        let whole = [&b"HEAD\r\n"[..], &body[..]].concat();
        // The peer reads nothing: the socket takes whole responses, then part of one.
        let mut expected = Vec::new();
        let taken = loop {
            let n = write_through(s.as_raw_fd(), b"HEAD\r\n", file.as_fd(), 0, body.len()).unwrap();
            expected.extend_from_slice(&whole[..n]);
            if n < whole.len() {
                break n;
            }
            assert!(expected.len() < 1 << 30, "the socket never filled");
        };
        // Full now: a further call returns at once (whatever it took is tracked too).
        let more = write_through(s.as_raw_fd(), b"HEAD\r\n", file.as_fd(), 0, body.len()).unwrap();
        expected.extend_from_slice(&whole[..more]);
        assert!(taken < whole.len() && more < whole.len(), "a full socket takes less than a response");
        let mut got = vec![0u8; expected.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == expected, "what the socket took is the responses' bytes in order");
    }

    #[test]
    fn a_closed_peer_is_an_error() {
        crate::sys::ignore_sigpipe();
        let body = pattern(20_000);
        let file = file_of(&body);
        let (s, c) = pair();
        drop(c);
        let mut err = None;
        for _ in 0..100 {
            match write_through(s.as_raw_fd(), b"h", file.as_fd(), 0, body.len()) {
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let e = err.expect("a closed peer fails the write");
        assert!(matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)), "{e}");
    }
}
