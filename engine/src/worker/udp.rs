//! `udp://` workers: their sockets (bound on the caller's thread, one SO_REUSEPORT socket per
//! ring thread, or adopted from a reload predecessor), and the delivery of received datagrams to `on_datagram` and to UDP clients'
//! own callbacks, reached from the runner's dispatch by one arm.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ringman_protocols::{Input, Message, MessageKind};
use socket2::{Domain, Socket, Type};

use super::Callbacks;
use crate::error::{panic_message, EngineError};
use crate::reactor::{with_core, UdpEvent, UdpWork};
use crate::ring::{Kind, Token};

/// Binds `n` UDP sockets on `addr` (SO_REUSEPORT when `reuse_port`; the kernel then spreads
/// datagrams over them by the sender's address). A port anyone holds already is refused
/// (`AddrInUse`), as for stream listeners.
pub(super) fn bind(addr: SocketAddr, n: usize, reuse_port: bool) -> Result<Vec<OwnedFd>, EngineError> {
    if addr.port() != 0 {
        // The probe: a bind without SO_REUSEPORT fails if anyone holds the port.
        drop(open(addr, false)?);
    }
    let first = open(addr, reuse_port)?;
    // Port 0: the others join the port the first one got.
    let bound = crate::sys::local_addr(std::os::fd::AsFd::as_fd(&first)).unwrap_or(addr);
    let mut fds = vec![first];
    fds.extend(join(bound, n.max(1) - 1, reuse_port)?);
    Ok(fds)
}

/// Binds `n` more SO_REUSEPORT sockets on `bound`, the address of sockets this process holds
/// already (bound here, or handed over by a reload predecessor): no probe.
pub(super) fn join(bound: SocketAddr, n: usize, reuse_port: bool) -> Result<Vec<OwnedFd>, EngineError> {
    (0..n).map(|_| open(bound, reuse_port)).collect()
}

/// One UDP socket bound to `addr`.
fn open(addr: SocketAddr, reuse: bool) -> Result<OwnedFd, EngineError> {
    let err = |source: std::io::Error| {
        if source.raw_os_error() == Some(libc::EADDRINUSE) {
            EngineError::AddrInUse { addr }
        } else {
            EngineError::Listen { addr, source }
        }
    };
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM.cloexec(), None).map_err(err)?;
    if reuse {
        s.set_reuse_port(true).map_err(err)?;
    }
    if addr.is_ipv6() {
        let _ = s.set_only_v6(false);
    }
    s.bind(&addr.into()).map_err(err)?;
    Ok(s.into())
}

/// A UDP completion (`Kind::Udp` receive, `Kind::UdpSend` send).
pub(super) fn complete<S>(cb: &Callbacks<S>, state: &mut S, tok: Token, res: i32, flags: u32) {
    if tok.kind == Kind::UdpSend {
        with_core(|c| c.on_udp_send(tok, res));
        return;
    }
    if let Some(w) = with_core(|c| c.on_udp(tok, res, flags)).flatten() {
        deliver(cb, state, w);
    }
}

/// Parses one datagram with its socket's protocol and delivers each message in it. As in
/// Workerman, a datagram is parsed on its own: an incomplete rest (a line without its
/// newline) and anything after a protocol error are dropped with it.
fn deliver<S>(cb: &Callbacks<S>, state: &mut S, mut w: UdpWork) {
    let conn = w.conn;
    let mut hook = w.on_message.take();
    let mut delivered = 0u64;
    let (server, raw, max) = (w.server, w.raw, w.max);
    let range = w.payload.clone();
    let payload = &mut w.buf.bytes()[range];
    let decoder = w.decoder.as_mut();
    // Whether the decoder consumed the datagram exactly (else it may hold scanning state).
    let mut clean = true;
    let mut call = |msg: &Message<'_>| {
        delivered += 1;
        let r = if server {
            match &cb.on_datagram {
                Some(f) => catch_unwind(AssertUnwindSafe(|| f(&conn, msg, state))),
                None => Ok(()),
            }
        } else {
            match hook.as_mut() {
                Some(f) => catch_unwind(AssertUnwindSafe(|| f(&conn, msg))),
                None => Ok(()),
            }
        };
        if let Err(p) = r {
            log::error!("on_datagram from {} panicked: {}", conn.peer, panic_message(&*p));
        }
    };
    if payload.is_empty() {
        if raw {
            call(&Message { data: &[], kind: MessageKind::Binary });
        }
    } else {
        // The decoder is protocol code: a panic in it drops this datagram only.
        let r = catch_unwind(AssertUnwindSafe(|| {
            let mut off = 0;
            while off < payload.len() {
                let rest = &mut payload[off..];
                let n = match decoder.input(rest, max) {
                    Ok(Input::Packet(n)) if n > 0 && n <= rest.len() => n,
                    _ => return false,
                };
                off += n;
                match decoder.decode(&mut rest[..n]) {
                    Ok(Some(msg)) => call(&msg),
                    Ok(None) => {}
                    Err(_) => return false,
                }
            }
            true
        }));
        clean = matches!(r, Ok(true));
        if let Err(p) = r {
            log::error!("decoder panicked on a datagram from {}: {}", conn.peer, panic_message(&*p));
        }
    }
    w.on_message = hook;
    let dropped = with_core(|c| c.udp_end(w, delivered, clean));
    // A replaced or orphaned callback is dropped here, outside the core.
    drop(dropped);
}

/// Delivers a UDP client's event to its own callbacks.
pub(super) fn deliver_event(ev: UdpEvent) {
    match ev {
        UdpEvent::Error(conn, e) => {
            let f = with_core(|c| c.udp_hooks(&conn).and_then(|h| h.on_error.take())).flatten();
            if let Some(mut f) = f {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&conn, &e))) {
                    log::error!("udp on_error panicked: {}", panic_message(&*p));
                }
                let back = with_core(|c| match c.udp_hooks(&conn) {
                    Some(h) if h.on_error.is_none() => {
                        h.on_error = Some(f);
                        None
                    }
                    _ => Some(f),
                })
                .flatten();
                drop(back);
            }
        }
        UdpEvent::Closed(conn, e, mut hooks) => {
            if let (Some(e), Some(f)) = (e, hooks.on_error.as_mut()) {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&conn, &e))) {
                    log::error!("udp on_error panicked: {}", panic_message(&*p));
                }
            }
            if let Some(f) = hooks.on_close.as_mut() {
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&conn))) {
                    log::error!("udp on_close panicked: {}", panic_message(&*p));
                }
            }
        }
    }
}
