//! The proxy state machine: an outgoing connection dialled through an HTTP `CONNECT` proxy
//! or a SOCKS5 proxy (Workerman 5.2's `proxyHttp` / `proxySocks5`). The dial connects to
//! the proxy (its name resolved like any dial's); then, before the connection's protocol
//! sees a byte, the tunnel is negotiated here: the requests go out through the send queue,
//! the answers come back through a single-shot `IORING_OP_RECV` into a small buffer of the
//! handshake's own (never the provided-buffer ring, so the multishot receive and the framer
//! stay out of it), read by the sans-IO [`Handshake`].
//!
//! ```text
//!  CONNECT to the proxy ok ─► Proxying ─(answer: 2xx / SOCKS5 reply 0)─► as a direct dial
//!      (sends stay held)         │        (on_connect; ws: upgrade; held sends released;
//!                                │         bytes after the answer go to the framer first)
//!                                └─ refused / closed / reset / timed out ─► on_error(CONNECT_FAIL
//!                                   naming the proxy's answer), on_close, reconnect as usual
//! ```
//!
//! SOCKS5 (RFC 1928, with RFC 1929 user/password): greeting, method choice, optional
//! authentication, then `CONNECT` naming the target by its domain name (the proxy resolves
//! it) or its address literal. HTTP: `CONNECT host:port HTTP/1.1` with `Host` and, with
//! credentials, `Proxy-Authorization: Basic`. The connect timeout covers the handshake.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types};

use super::send::enqueue;
use super::{gen_of, Core, Status};
use crate::error::{ConnError, ConnectError};
use crate::ring::{Kind, Token};

/// Which kind of proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyKind {
    /// HTTP `CONNECT`.
    Http,
    /// SOCKS5.
    Socks5,
}

/// Where and how to reach a proxy.
#[derive(Debug, Clone)]
pub(crate) struct ProxySpec {
    pub(crate) kind: ProxyKind,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// User name and password.
    pub(crate) auth: Option<(String, String)>,
}

impl ProxySpec {
    /// `host:port` of the proxy, for messages.
    pub(crate) fn addr(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// `host:port`, an IPv6 literal in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The longest HTTP answer head accepted from a proxy.
const MAX_HTTP_ANSWER: usize = 16 * 1024;

/// Size of the handshake's receive buffer.
const RECV_BUF: usize = 1024;

/// Where a handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// HTTP: waiting for the answer head.
    HttpAnswer,
    /// SOCKS5: waiting for the method choice.
    Method,
    /// SOCKS5: waiting for the user/password verdict.
    Auth,
    /// SOCKS5: waiting for the reply to `CONNECT`.
    Reply,
}

/// What the handshake wants after some input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send these bytes, then keep reading.
    Send(Vec<u8>),
    /// Keep reading.
    More,
    /// The tunnel is open; these bytes followed the answer and belong to the target.
    Open(Vec<u8>),
    /// The proxy refused (or spoke nonsense): its answer, for the error message.
    Refused(String),
}

/// One attempt's negotiation with the proxy (sans-IO: bytes in, bytes out).
pub(crate) struct Handshake {
    phase: Phase,
    /// Answer bytes not consumed yet.
    got: Vec<u8>,
    auth: Option<(String, String)>,
    host: String,
    port: u16,
    /// The receive buffer the kernel writes into while a read is in flight.
    buf: Box<[u8; RECV_BUF]>,
    /// A read into `buf` is in flight (the buffer must not go before its completion).
    reading: bool,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake").field("phase", &self.phase).field("got", &self.got.len()).finish_non_exhaustive()
    }
}

impl Handshake {
    /// A handshake through `spec` to `host:port`, and the first bytes to send.
    pub(crate) fn start(spec: &ProxySpec, host: &str, port: u16) -> (Handshake, Vec<u8>) {
        let mut h = Handshake {
            phase: Phase::HttpAnswer,
            got: Vec::new(),
            auth: spec.auth.clone(),
            host: host.to_string(),
            port,
            buf: Box::new([0; RECV_BUF]),
            reading: false,
        };
        let first = match spec.kind {
            ProxyKind::Http => h.http_request(),
            ProxyKind::Socks5 => {
                h.phase = Phase::Method;
                // No authentication (0), and user/password (2) when there are credentials.
                if h.auth.is_some() {
                    vec![5, 2, 0, 2]
                } else {
                    vec![5, 1, 0]
                }
            }
        };
        (h, first)
    }

    fn http_request(&self) -> Vec<u8> {
        let target = host_port(&self.host, self.port);
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((user, pass)) = &self.auth {
            let token = base64(format!("{user}:{pass}").as_bytes());
            req.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        req.push_str("\r\n");
        req.into_bytes()
    }

    /// The SOCKS5 `CONNECT` request: an address literal as such, a name as a domain name.
    fn socks_request(&self) -> Vec<u8> {
        let mut req = vec![5, 1, 0];
        match self.host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => {
                req.push(1);
                req.extend_from_slice(&a.octets());
            }
            Ok(std::net::IpAddr::V6(a)) => {
                req.push(4);
                req.extend_from_slice(&a.octets());
            }
            Err(_) => {
                // (Names longer than 255 bytes were refused when the proxy was set.)
                req.push(3);
                req.push(self.host.len() as u8);
                req.extend_from_slice(self.host.as_bytes());
            }
        }
        req.extend_from_slice(&self.port.to_be_bytes());
        req
    }

    /// Feeds bytes the proxy sent.
    pub(crate) fn input(&mut self, data: &[u8]) -> Step {
        self.got.extend_from_slice(data);
        match self.phase {
            Phase::HttpAnswer => self.http_answer(),
            Phase::Method => {
                let [ver, method, ..] = self.got[..] else { return Step::More };
                if ver != 5 {
                    return Step::Refused(format!("not a SOCKS5 answer (version {ver})"));
                }
                self.got.drain(..2);
                match (method, &self.auth) {
                    (0, _) => {
                        self.phase = Phase::Reply;
                        Step::Send(self.socks_request())
                    }
                    (2, Some((user, pass))) => {
                        self.phase = Phase::Auth;
                        let mut req = vec![1, user.len() as u8];
                        req.extend_from_slice(user.as_bytes());
                        req.push(pass.len() as u8);
                        req.extend_from_slice(pass.as_bytes());
                        Step::Send(req)
                    }
                    (2, None) => Step::Refused("SOCKS5 proxy requires user/password authentication".into()),
                    (0xFF, _) => {
                        Step::Refused("SOCKS5 proxy accepts none of the offered authentication methods".into())
                    }
                    (m, _) => Step::Refused(format!("SOCKS5 proxy chose method {m}, which was not offered")),
                }
            }
            Phase::Auth => {
                let [_, status, ..] = self.got[..] else { return Step::More };
                self.got.drain(..2);
                if status != 0 {
                    return Step::Refused(format!("SOCKS5 user/password authentication failed (status {status})"));
                }
                self.phase = Phase::Reply;
                Step::Send(self.socks_request())
            }
            Phase::Reply => {
                let [ver, rep, ..] = self.got[..] else { return Step::More };
                if ver != 5 {
                    return Step::Refused(format!("not a SOCKS5 reply (version {ver})"));
                }
                if rep != 0 {
                    return Step::Refused(format!("SOCKS5 reply {rep}: {}", socks_reply_meaning(rep)));
                }
                let len = match self.got.get(3) {
                    None => return Step::More,
                    Some(1) => 4 + 4 + 2,
                    Some(4) => 4 + 16 + 2,
                    Some(3) => match self.got.get(4) {
                        Some(&n) => 4 + 1 + n as usize + 2,
                        None => return Step::More,
                    },
                    Some(t) => return Step::Refused(format!("SOCKS5 reply with unknown address type {t}")),
                };
                if self.got.len() < len {
                    return Step::More;
                }
                Step::Open(self.got.split_off(len))
            }
        }
    }

    fn http_answer(&mut self) -> Step {
        let Some(end) = self.got.windows(4).position(|w| w == b"\r\n\r\n") else {
            if self.got.len() > MAX_HTTP_ANSWER {
                return Step::Refused(format!("HTTP proxy answer head longer than {MAX_HTTP_ANSWER} bytes"));
            }
            return Step::More;
        };
        let head = &self.got[..end];
        let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(head.len());
        let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
        let mut parts = line.splitn(3, ' ');
        let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let ok = version.starts_with("HTTP/1.")
            && code.len() == 3
            && code.bytes().all(|b| b.is_ascii_digit())
            && code.starts_with('2');
        if !ok {
            // The status line is the proxy's answer ("HTTP/1.1 407 Proxy Authentication
            // Required"); control characters are not passed on into logs.
            let shown: String = line.chars().take(200).map(|c| if c.is_control() { '?' } else { c }).collect();
            return Step::Refused(shown);
        }
        Step::Open(self.got.split_off(end + 4))
    }
}

/// What a SOCKS5 reply code means (RFC 1928 §6).
fn socks_reply_meaning(rep: u8) -> &'static str {
    match rep {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

/// Standard base64 with padding (RFC 4648 §4), for `Proxy-Authorization: Basic`.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Core {
    /// The TCP connection to `key`'s proxy is up: the handshake starts (its first request
    /// queued, its first read armed).
    pub(super) fn proxy_start(&mut self, key: usize) {
        let Some(d) = self.conns[key].dial_mut() else { return };
        let Some(spec) = d.proxy.as_ref() else { return };
        debug_assert!(d.handshake.as_ref().is_none_or(|h| !h.reading), "a handshake read is still in flight");
        let (h, first) = Handshake::start(spec, &d.host, d.port);
        d.handshake = Some(Box::new(h));
        self.proxy_send(key, &first);
        self.proxy_read(key);
    }

    /// Queues handshake bytes (ahead of nothing: the application's sends are held).
    fn proxy_send(&mut self, key: usize, bytes: &[u8]) {
        let c = &mut self.conns[key];
        enqueue(&mut self.arena, &mut c.sendq, bytes);
        if !c.send_inflight {
            self.submit_send(key);
        }
    }

    /// Arms one read of the proxy's answer into the handshake's buffer.
    fn proxy_read(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let gen = gen_of(c.serial);
        let fd = types::Fd(c.fd.as_raw_fd());
        let Some(h) = c.extra.as_mut().and_then(|e| e.dial.as_mut()).and_then(|d| d.handshake.as_mut()) else {
            return;
        };
        if h.reading {
            return;
        }
        h.reading = true;
        let sqe = opcode::Recv::new(fd, h.buf.as_mut_ptr(), RECV_BUF as u32)
            .build()
            .user_data(Token::new(Kind::Proxy, key, gen).to_u64());
        c.inflight += 1;
        // The kernel writes into `h.buf` until the completion: the handshake (boxed, so it
        // does not move) stays in the slot until then — the slot is freed, and a new attempt
        // replaces the handshake, only once nothing is in flight.
        self.push(sqe);
    }

    /// A read of the proxy's answer completed.
    pub(crate) fn on_proxy(&mut self, tok: Token, res: i32) {
        if !self.live(tok) {
            return;
        }
        let key = tok.slot as usize;
        let c = &mut self.conns[key];
        c.inflight -= 1;
        let Some(d) = c.extra.as_mut().and_then(|e| e.dial.as_mut()) else { return };
        let Some(h) = d.handshake.as_mut() else { return };
        h.reading = false;
        if c.status != Status::Connecting {
            // Destroyed meanwhile (timed out, closed): its cancel made this completion.
            self.try_free(key);
            return;
        }
        let step = match res {
            0 => Step::Refused("the proxy closed the connection during the handshake".into()),
            r if r < 0 => Step::Refused(format!("handshake failed: {}", io::Error::from_raw_os_error(-r))),
            n => {
                c.bytes_read += n as u64;
                c.active = self.stamp;
                let n = n as usize;
                let data = h.buf[..n].to_vec();
                h.input(&data)
            }
        };
        match step {
            Step::More => self.proxy_read(key),
            Step::Send(bytes) => {
                self.proxy_send(key, &bytes);
                self.proxy_read(key);
            }
            Step::Refused(answer) => self.proxy_failed(key, answer),
            Step::Open(rest) => {
                let c = &mut self.conns[key];
                if let Some(d) = c.dial_mut() {
                    d.handshake = None;
                }
                let backlog = !rest.is_empty();
                if backlog {
                    // The target's first bytes came with the answer: they reach the
                    // protocol's framer before anything read later.
                    if let Some(f) = c.framer.as_mut() {
                        f.push(&rest);
                    }
                }
                self.tunnel_open(key, backlog);
            }
        }
    }

    /// The handshake of `key` failed: CONNECT_FAIL naming the proxy's answer.
    fn proxy_failed(&mut self, key: usize, answer: String) {
        let Some(d) = self.conns[key].dial() else { return };
        let proxy = d.proxy.as_ref().map(ProxySpec::addr).unwrap_or_default();
        let target = d.target();
        self.destroy(key, Some(ConnError::Connect { target, cause: ConnectError::Proxy { proxy, answer } }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ProxyKind, auth: bool) -> ProxySpec {
        ProxySpec { kind, host: "proxy".into(), port: 1, auth: auth.then(|| ("user".to_string(), "pass".to_string())) }
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn http_connect_with_basic_auth_and_bytes_after_the_answer() {
        let (mut h, req) = Handshake::start(&spec(ProxyKind::Http, true), "example.com", 443);
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"
        );
        // Split anywhere; the bytes after the head are the target's.
        let answer = b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\nHELLO";
        for split in 1..answer.len() {
            let (mut h, _) = Handshake::start(&spec(ProxyKind::Http, true), "example.com", 443);
            let mut target = None::<Vec<u8>>;
            for b in answer.chunks(split) {
                match (&mut target, h.input(b)) {
                    // Once open, later reads are the target's (the connection's own receive).
                    (Some(t), _) => t.extend_from_slice(b),
                    (None, Step::More) => {}
                    (None, Step::Open(rest)) => target = Some(rest),
                    (None, s) => panic!("split {split}: {s:?}"),
                }
            }
            assert_eq!(target.as_deref(), Some(&b"HELLO"[..]), "split {split}");
        }
        assert_eq!(h.input(answer), Step::Open(b"HELLO".to_vec()));
    }

    #[test]
    fn http_refusal_carries_the_status_line() {
        let (mut h, _) = Handshake::start(&spec(ProxyKind::Http, false), "::1", 80);
        assert_eq!(
            h.input(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"),
            Step::Refused("HTTP/1.1 407 Proxy Authentication Required".into())
        );
        let (_, req) = Handshake::start(&spec(ProxyKind::Http, false), "::1", 80);
        assert!(req.starts_with(b"CONNECT [::1]:80 HTTP/1.1\r\n"));
    }

    #[test]
    fn socks5_with_user_password_and_a_domain_name() {
        let (mut h, greet) = Handshake::start(&spec(ProxyKind::Socks5, true), "example.com", 80);
        assert_eq!(greet, [5, 2, 0, 2]);
        assert_eq!(h.input(&[5, 2]), Step::Send(b"\x01\x04user\x04pass".to_vec()));
        let mut connect = vec![5, 1, 0, 3, 11];
        connect.extend_from_slice(b"example.com");
        connect.extend_from_slice(&80u16.to_be_bytes());
        assert_eq!(h.input(&[1]), Step::More);
        assert_eq!(h.input(&[0]), Step::Send(connect));
        assert_eq!(h.input(&[5, 0, 0, 1, 127, 0]), Step::More);
        assert_eq!(h.input(&[0, 1, 0x1f, 0x90, b'x']), Step::Open(b"x".to_vec()));
    }

    #[test]
    fn socks5_refusals_name_the_cause() {
        let (mut h, greet) = Handshake::start(&spec(ProxyKind::Socks5, false), "10.0.0.1", 7);
        assert_eq!(greet, [5, 1, 0]);
        assert_eq!(h.input(&[5, 0]), Step::Send(vec![5, 1, 0, 1, 10, 0, 0, 1, 0, 7]));
        assert_eq!(h.input(&[5, 5]), Step::Refused("SOCKS5 reply 5: connection refused".into()));
        let (mut h, _) = Handshake::start(&spec(ProxyKind::Socks5, true), "h", 7);
        assert_eq!(h.input(&[5, 2]), Step::Send(b"\x01\x04user\x04pass".to_vec()));
        match h.input(&[1, 1]) {
            Step::Refused(m) => assert!(m.contains("authentication failed"), "{m}"),
            s => panic!("{s:?}"),
        }
        let (mut h, _) = Handshake::start(&spec(ProxyKind::Socks5, false), "h", 7);
        match h.input(&[5, 0xFF]) {
            Step::Refused(m) => assert!(m.contains("none of the offered"), "{m}"),
            s => panic!("{s:?}"),
        }
    }
}
