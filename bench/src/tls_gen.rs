//! The TLS load (`--scenario https|handshake|wss`, the suite's P10–P12): one thread,
//! non-blocking sockets, one level-triggered epoll set, a rustls client (0.23, the buffered
//! `ClientConnection`, crypto from aws-lc-rs as in the engine) per connection. Closed loop
//! only.
//!
//! * `https` and `wss`: `conns` connections are opened, handshaken and (wss) upgraded before
//!   the run, blocking, one after the other; then each keeps `depth` requests (`http`'s
//!   `GET /hello`, or `ws`'s masked text frames) in flight. Everything queued for a
//!   connection during one wakeup is encrypted with one write (one record per batch) and
//!   sent with one `write`; each readable socket is read until it would block, every read
//!   decrypted at once. Session resumption is on (irrelevant: connections live all run).
//! * `handshake`: `conns` slots, each running one connection after another: a non-blocking
//!   connect, a full TLS 1.3 handshake (resumption off, so every handshake is full), one
//!   `GET /hello` (written before the handshake ends; rustls sends it with the client's
//!   Finished), the answer read, then an abortive close (`SO_LINGER` 0: RST, no
//!   `TIME_WAIT`, as the other generators close). A message is one whole connection;
//!   latency runs from the connect to the answer.
//!
//! **Equal terms.** The client offers one protocol version (TLS 1.3), one cipher suite
//! ([`SUITE`]) and one key-exchange group ([`GROUP`]: X25519, which every server here has;
//! nginx's OpenSSL 3.0 has no ML-KEM), so every server negotiates the same parameters
//! whatever its own preference; the generator checks what was negotiated on every
//! connection and fails on anything else. It offers ALPN `http/1.1`, sends SNI `localhost`
//! and verifies the chain against the harness's CA ([`crate::pki`]); every server sends the
//! same ECDSA P-256 leaf. Bytes are counted on both sides of the TLS layer, so the figures
//! state what each server puts on the wire ([`TlsWire`]).

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

use crate::cli::{LoadOpts, Scenario};
use crate::error::LoadError;
use crate::hist::Latency;
use crate::loadgen::{now_ns, thread_cpu, Edge, Epoll, LoadResult, DRAIN_TIMEOUT, IN, INOUT, PROGRESS_AFTER};
use crate::report::{Outcome, Record};
use crate::wire::{self, ResponseCounter};

/// The one cipher suite the generator offers (so every server negotiates it).
pub const SUITE: &str = "TLS13_AES_128_GCM_SHA256";
/// The one key-exchange group the generator offers.
pub const GROUP: &str = "X25519";
/// The one protocol version the generator offers.
pub const VERSION: &str = "TLSv1_3";

/// Handshakes with this many failed connections and not one answer give up.
const GIVE_UP_AFTER: usize = 100;

/// What the TLS layer carried in one run: the parameters every connection negotiated (all
/// the same: checked) and the bytes per message on both sides of TLS.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsWire {
    /// Protocol version (`TLSv1_3`).
    pub version: String,
    /// Cipher suite ([`SUITE`]).
    pub suite: String,
    /// Key-exchange group ([`GROUP`]).
    pub group: String,
    /// ALPN protocol the server chose (`none` when it chose none).
    pub alpn: String,
    /// Full handshakes (`handshake`: one per connection; keep-alive: those of the set-up).
    pub full: u64,
    /// Resumed handshakes (`handshake`: always 0, resumption is off).
    pub resumed: u64,
    /// Ciphertext bytes received per response (records, tickets and, for `handshake`, the
    /// server's whole handshake flight).
    pub tls_in_per_msg: f64,
    /// Ciphertext bytes sent per request (for `handshake`, the client's handshake too).
    pub tls_out_per_msg: f64,
    /// Plaintext bytes per response: the HTTP head and body, or the WebSocket frame.
    pub plain_in_per_msg: f64,
    /// `http`: the header names of the first response, in order (`Date, Content-Type, ...`).
    pub headers: String,
}

/// The generator's client configuration: TLS 1.3, [`SUITE`], [`GROUP`], ALPN `http/1.1`,
/// the chain verified against the CA certificate in `ca` (PEM), session resumption on or
/// off.
pub fn client_config(ca: &Path, resumption: bool) -> Result<Arc<ClientConfig>, LoadError> {
    let err = |detail: String| LoadError::Tls { stage: "config", detail };
    let cert = CertificateDer::from_pem_file(ca).map_err(|e| err(format!("{}: {e}", ca.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| err(format!("{}: {e}", ca.display())))?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut c = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resumption {
        c.resumption = Resumption::disabled();
    }
    Ok(Arc::new(c))
}

/// Runs one TLS load of `opts` (`https`, `handshake` or `wss`) against `addr`, trusting the
/// CA in `ca`; `edge` marks the measured window.
pub fn run(addr: SocketAddr, opts: &LoadOpts, ca: &Path, edge: impl FnMut(Edge)) -> Result<LoadResult, LoadError> {
    match opts.scenario {
        Scenario::Https | Scenario::Wss => run_keepalive(addr, opts, client_config(ca, true)?, edge),
        Scenario::Handshake => run_handshakes(addr, opts, client_config(ca, false)?, edge),
        _ => Err(LoadError::Unexpected("the TLS generator runs https, handshake and wss only")),
    }
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from(crate::pki::SERVER_NAME).expect("a valid DNS name")
}

fn tls_err(tls: &ClientConnection, e: rustls::Error) -> LoadError {
    LoadError::Tls { stage: if tls.is_handshaking() { "handshake" } else { "record" }, detail: e.to_string() }
}

/// Bytes counted on both sides of TLS.
#[derive(Debug, Default, Clone, Copy)]
struct Bytes {
    tls_in: u64,
    tls_out: u64,
    plain_in: u64,
}

/// The negotiated parameters seen so far (every connection must agree) and the handshake
/// kinds.
#[derive(Debug, Default)]
struct Seen {
    wire: TlsWire,
}

impl Seen {
    /// Checks the parameters `tls` negotiated and counts its handshake.
    fn note(&mut self, tls: &ClientConnection) -> Result<(), LoadError> {
        let version = tls.protocol_version().map_or_else(|| "none".into(), |v| format!("{v:?}"));
        let suite = tls.negotiated_cipher_suite().map_or_else(|| "none".into(), |s| format!("{:?}", s.suite()));
        // (A resumed TLS 1.3 handshake may not name its group; every full one does.)
        let group = tls.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name()));
        if version != VERSION || suite != SUITE || group.as_deref().is_some_and(|g| g != GROUP) {
            return Err(LoadError::Tls {
                stage: "negotiated",
                detail: format!(
                    "{version} {suite} {} instead of {VERSION} {SUITE} {GROUP}",
                    group.as_deref().unwrap_or("-")
                ),
            });
        }
        let w = &mut self.wire;
        match tls.handshake_kind() {
            Some(HandshakeKind::Resumed) => w.resumed += 1,
            _ => w.full += 1,
        }
        if w.version.is_empty() {
            w.version = version;
            w.suite = suite;
            w.alpn = tls.alpn_protocol().map_or_else(|| "none".into(), |p| String::from_utf8_lossy(p).into_owned());
        }
        if let (true, Some(g)) = (w.group.is_empty(), group) {
            w.group = g;
        }
        Ok(())
    }

    /// The figures, with the bytes per message of the measured window (`answered` answers
    /// in it).
    fn finish(mut self, ph: &Phases, answered: u64, headers: Option<String>) -> TlsWire {
        let per = |v1: u64, v0: u64, n: u64| if n > 0 { v1.saturating_sub(v0) as f64 / n as f64 } else { 0.0 };
        let (b0, b1) = (&ph.bytes_at_start, &ph.bytes_at_end);
        self.wire.tls_in_per_msg = per(b1.tls_in, b0.tls_in, answered);
        self.wire.tls_out_per_msg = per(b1.tls_out, b0.tls_out, ph.sent_at_end.saturating_sub(ph.sent_at_start));
        self.wire.plain_in_per_msg = per(b1.plain_in, b0.plain_in, answered);
        self.wire.headers = headers.unwrap_or_default();
        self.wire
    }
}

/// Collects the head of the first HTTP response (up to 16 KiB) and names its headers.
#[derive(Debug)]
pub(crate) struct HeadProbe {
    buf: Vec<u8>,
    /// The header names, once the head was complete.
    pub(crate) names: Option<String>,
    active: bool,
}

impl HeadProbe {
    /// A probe that collects (`active`) or ignores everything fed to it.
    pub(crate) fn new(active: bool) -> HeadProbe {
        HeadProbe { buf: Vec::new(), names: None, active }
    }

    /// Feeds the next received bytes of the connection (from its first response on).
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if !self.active || self.names.is_some() || self.buf.len() > 16 * 1024 {
            return;
        }
        self.buf.extend_from_slice(data);
        if let Some(end) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
            self.names = Some(header_names(&self.buf[..end]));
        }
    }
}

/// The header names of an HTTP head (status line first), in order, comma separated.
pub fn header_names(head: &[u8]) -> String {
    head.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|l| l.iter().position(|&b| b == b':').map(|c| String::from_utf8_lossy(&l[..c]).trim().to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A TLS connection on a non-blocking socket.
struct TlsConn {
    stream: TcpStream,
    tls: ClientConnection,
    /// EPOLLOUT asked for (the socket did not take everything).
    want_out: bool,
}

impl TlsConn {
    /// Reads what the socket holds, decrypts it and hands the plaintext to `sink`. False
    /// when the connection ended (EOF, reset, or the server's close_notify); an error for a
    /// TLS failure or an error of `sink`.
    fn receive(
        &mut self,
        rbuf: &mut [u8],
        bytes: &mut Bytes,
        mut sink: impl FnMut(&mut [u8]) -> Result<(), LoadError>,
    ) -> Result<bool, LoadError> {
        loop {
            let eof = match self.tls.read_tls(&mut self.stream) {
                Ok(0) => true,
                Ok(n) => {
                    bytes.tls_in += n as u64;
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return Ok(false),
            };
            if let Err(e) = self.tls.process_new_packets() {
                return Err(tls_err(&self.tls, e));
            }
            loop {
                match self.tls.reader().read(rbuf) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        bytes.plain_in += n as u64;
                        sink(&mut rbuf[..n])?;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return Ok(false),
                }
            }
            if eof {
                return Ok(false);
            }
        }
    }

    /// Writes the records the session holds; asks for EPOLLOUT while the socket does not
    /// take them all, and stops asking once it did. False when the connection failed.
    fn flush(&mut self, ep: &Epoll, token: u64, bytes: &mut Bytes) -> Result<bool, LoadError> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.stream) {
                Ok(n) => bytes.tls_out += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(false),
            }
        }
        let pending = self.tls.wants_write();
        if pending != self.want_out {
            ep.ctl(libc::EPOLL_CTL_MOD, self.stream.as_raw_fd(), if pending { INOUT } else { IN }, token)?;
            self.want_out = pending;
        }
        Ok(true)
    }
}

/// Blocking, during set-up: writes what the session holds, then reads once and processes
/// it. False at EOF.
fn pump(tls: &mut ClientConnection, s: &mut TcpStream, addr: SocketAddr) -> Result<bool, LoadError> {
    let io = |source| LoadError::Connect { addr, source };
    while tls.wants_write() {
        tls.write_tls(s).map_err(io)?;
    }
    if tls.read_tls(s).map_err(io)? == 0 {
        return Ok(false);
    }
    if let Err(e) = tls.process_new_packets() {
        return Err(tls_err(tls, e));
    }
    Ok(true)
}

/// Opens one keep-alive connection: TCP connect, TLS handshake and (wss) the WebSocket
/// upgrade, all blocking; then the socket is made non-blocking.
fn open(addr: SocketAddr, cfg: &Arc<ClientConfig>, opts: &LoadOpts) -> Result<TlsConn, LoadError> {
    let mut s = TcpStream::connect(addr).map_err(|source| LoadError::Connect { addr, source })?;
    let _ = s.set_nodelay(true);
    // Close with RST so repeated runs leave no TIME_WAIT behind (as the other generators).
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|source| LoadError::Connect { addr, source })?;
    let mut tls = ClientConnection::new(cfg.clone(), server_name())
        .map_err(|e| LoadError::Tls { stage: "config", detail: e.to_string() })?;
    // Everything written is encrypted at once, whatever the socket takes.
    tls.set_buffer_limit(None);
    while tls.is_handshaking() {
        if !pump(&mut tls, &mut s, addr)? {
            return Err(LoadError::Tls { stage: "handshake", detail: "the server closed the connection".into() });
        }
    }
    if opts.scenario == Scenario::Wss {
        let closed = || LoadError::Handshake("connection closed".into());
        tls.writer()
            .write_all(&wire::ws_handshake_for(opts, addr))
            .map_err(|source| LoadError::Connect { addr, source })?;
        let mut head = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            loop {
                match tls.reader().read(&mut b) {
                    Ok(0) => return Err(closed()),
                    Ok(n) => head.extend_from_slice(&b[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return Err(closed()),
                }
            }
            if let Some(end) = memchr::memmem::find(&head, b"\r\n\r\n") {
                wire::check_ws_handshake(&head[..end + 4])?;
                // The server sends nothing before the first frame it echoes.
                if head.len() > end + 4 {
                    return Err(LoadError::Unexpected("bytes after the WebSocket handshake answer"));
                }
                break;
            }
            if head.len() > 16 * 1024 {
                return Err(LoadError::Handshake("response head too long".into()));
            }
            if !pump(&mut tls, &mut s, addr)? {
                return Err(closed());
            }
        }
    }
    s.set_nonblocking(true).map_err(|source| LoadError::Sys { call: "set_nonblocking", source })?;
    Ok(TlsConn { stream: s, tls, want_out: false })
}

/// The run's phases on the monotonic clock: warmup, window, drain; edges fired once each.
struct Phases {
    window_start: u64,
    window_end: u64,
    drain_end: u64,
    next_tick: u64,
    measuring: bool,
    sending: bool,
    cpu_start: Duration,
    client_cpu: Duration,
    /// Bytes and requests at the window's edges (the per-message figures are the window's).
    bytes_at_start: Bytes,
    bytes_at_end: Bytes,
    sent_at_start: u64,
    sent_at_end: u64,
}

impl Phases {
    fn new(opts: &LoadOpts, start: u64) -> Phases {
        let window_start = start + opts.warmup.as_nanos() as u64;
        let window_end = window_start + opts.duration.as_nanos() as u64;
        Phases {
            window_start,
            window_end,
            drain_end: window_end + DRAIN_TIMEOUT.as_nanos() as u64,
            next_tick: if opts.warmup + opts.duration > PROGRESS_AFTER { start + 1_000_000_000 } else { u64::MAX },
            measuring: false,
            sending: true,
            cpu_start: Duration::ZERO,
            client_cpu: Duration::ZERO,
            bytes_at_start: Bytes::default(),
            bytes_at_end: Bytes::default(),
            sent_at_start: 0,
            sent_at_end: 0,
        }
    }

    /// Fires the edges due at `now`; true when the window starts now (reset its figures).
    fn advance(&mut self, now: u64, sent: u64, received: u64, bytes: &Bytes, edge: &mut impl FnMut(Edge)) -> bool {
        if now >= self.next_tick {
            edge(Edge::Progress { sent, received });
            self.next_tick += 1_000_000_000;
        }
        let mut started = false;
        if !self.measuring && self.sending && now >= self.window_start {
            edge(Edge::Start);
            self.cpu_start = thread_cpu();
            self.measuring = true;
            (self.bytes_at_start, self.sent_at_start) = (*bytes, sent);
            started = true;
        }
        if self.sending && now >= self.window_end {
            self.client_cpu = thread_cpu().saturating_sub(self.cpu_start);
            edge(Edge::End);
            self.measuring = false;
            self.sending = false;
            (self.bytes_at_end, self.sent_at_end) = (*bytes, sent);
        }
        started
    }

    /// How long the next wait may last (ms, at most 1 s).
    fn wait_ms(&self, now: u64) -> i32 {
        let deadline = match (self.sending, self.measuring) {
            (true, true) => self.window_end,
            (true, false) => self.window_start,
            (false, _) => self.drain_end,
        };
        deadline.saturating_sub(now).div_ceil(1_000_000).min(1000) as i32
    }
}

/// Waits for events; returns how many (0 on EINTR).
fn wait(ep: &Epoll, events: &mut [libc::epoll_event], ms: i32) -> Result<usize, LoadError> {
    // SAFETY: valid epoll fd; `events` has room for `events.len()` entries.
    let n = unsafe { libc::epoll_wait(ep.0, events.as_mut_ptr(), events.len() as i32, ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(LoadError::Sys { call: "epoll_wait", source: e });
    }
    Ok(n as usize)
}

/// The per-connection state of the keep-alive loop besides its TLS connection.
struct KaState {
    counter: ResponseCounter,
    /// Send times (ns) of the requests in flight, oldest first.
    stamps: VecDeque<u64>,
    /// Plaintext queued this turn (encrypted as one write at the flush).
    out: Vec<u8>,
    dirty: bool,
    dead: bool,
}

impl KaState {
    fn enqueue(&mut self, request: &[u8], stamp: u64, dirty: &mut Vec<usize>, idx: usize) {
        self.out.extend_from_slice(request);
        self.stamps.push_back(stamp);
        if !self.dirty {
            self.dirty = true;
            dirty.push(idx);
        }
    }
}

fn run_keepalive(
    addr: SocketAddr,
    opts: &LoadOpts,
    cfg: Arc<ClientConfig>,
    mut edge: impl FnMut(Edge),
) -> Result<LoadResult, LoadError> {
    let request = wire::request_for(opts);
    let ep = Epoll::new()?;
    let mut seen = Seen::default();
    let mut conns: Vec<(TlsConn, KaState)> = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        let c = open(addr, &cfg, opts)?;
        seen.note(&c.tls)?;
        ep.ctl(libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), IN, i as u64)?;
        let st = KaState {
            counter: ResponseCounter::for_load(opts),
            stamps: VecDeque::new(),
            out: Vec::with_capacity(request.len() * opts.depth.max(1)),
            dirty: false,
            dead: false,
        };
        conns.push((c, st));
    }
    let mut bytes = Bytes::default();
    let mut probe = HeadProbe::new(opts.scenario.plain() == Scenario::Http);
    let mut lat = Latency::new();
    let (mut sent, mut received, mut bad_status, mut window_msgs) = (0u64, 0u64, 0u64, 0u64);
    let mut lost = 0usize;
    let mut dirty: Vec<usize> = Vec::with_capacity(conns.len());
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut rbuf = vec![0u8; 64 * 1024];
    let start = now_ns();
    let mut ph = Phases::new(opts, start);
    for (i, (_, st)) in conns.iter_mut().enumerate() {
        for _ in 0..opts.depth {
            st.enqueue(&request, start, &mut dirty, i);
            sent += 1;
        }
    }
    loop {
        let now = now_ns();
        if ph.advance(now, sent, received, &bytes, &mut edge) {
            lat.reset();
            window_msgs = 0;
        }
        for &idx in &dirty {
            let (c, st) = &mut conns[idx];
            st.dirty = false;
            if st.dead {
                continue;
            }
            if !st.out.is_empty() {
                let w = c.tls.writer().write_all(&st.out);
                st.out.clear();
                if w.is_err() {
                    st.dead = true;
                    lost += 1;
                    continue;
                }
            }
            if !c.flush(&ep, idx as u64, &mut bytes)? {
                st.dead = true;
                lost += 1;
            }
        }
        dirty.clear();
        if lost == conns.len() {
            return Err(LoadError::AllConnectionsLost(lost));
        }
        if !ph.sending {
            let outstanding = conns.iter().any(|(_, st)| !st.dead && !st.stamps.is_empty());
            if !outstanding || now >= ph.drain_end {
                break;
            }
        }
        let n = wait(&ep, &mut events, ph.wait_ms(now))?;
        let now = now_ns();
        for ev in &events[..n] {
            let (idx, flags) = (ev.u64 as usize, ev.events);
            let (c, st) = &mut conns[idx];
            if st.dead {
                continue;
            }
            if flags & libc::EPOLLOUT as u32 != 0 && !st.dirty {
                st.dirty = true;
                dirty.push(idx);
            }
            if flags & (IN | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) == 0 {
                continue;
            }
            let (measuring, sending) = (ph.measuring, ph.sending);
            let alive = c.receive(&mut rbuf, &mut bytes, |data| {
                if idx == 0 {
                    probe.feed(data);
                }
                let (done, bad) = st.counter.feed(data)?;
                bad_status += bad;
                for _ in 0..done {
                    let t = st.stamps.pop_front().ok_or(LoadError::Unexpected("a response nobody asked for"))?;
                    received += 1;
                    if measuring {
                        lat.record(now.saturating_sub(t));
                        window_msgs += 1;
                    }
                    if sending {
                        st.enqueue(&request, now, &mut dirty, idx);
                        sent += 1;
                    }
                }
                Ok(())
            })?;
            if !alive {
                st.dead = true;
                lost += 1;
                let _ = ep.ctl(libc::EPOLL_CTL_DEL, c.stream.as_raw_fd(), 0, 0);
            } else if c.tls.wants_write() && !st.dirty {
                // Records the session made while reading (alerts, key updates) go out too.
                st.dirty = true;
                dirty.push(idx);
            }
        }
    }
    let drained = conns.iter().all(|(_, st)| st.dead || st.stamps.is_empty());
    let tls = seen.finish(&ph, window_msgs, probe.names);
    Ok(LoadResult {
        messages: window_msgs,
        window: opts.duration,
        latency: lat,
        sent,
        received,
        bad_status,
        lost_conns: lost,
        client_cpu: ph.client_cpu,
        drained,
        late: 0,
        send_lag: None,
        tls: Some(tls),
        wire: None,
    })
}

/// One connection of the `handshake` scenario.
struct Hs {
    c: TlsConn,
    counter: ResponseCounter,
    /// When the connect started (ns).
    started: u64,
    connected: bool,
}

/// Starts a non-blocking connect with a TLS session whose request waits inside it.
fn dial(addr: SocketAddr, cfg: &Arc<ClientConfig>, request: &[u8]) -> Result<TlsConn, LoadError> {
    let sys = |call| move |source| LoadError::Sys { call, source };
    let sock =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).map_err(sys("socket"))?;
    sock.set_nonblocking(true).map_err(sys("set_nonblocking"))?;
    let _ = sock.set_tcp_nodelay(true);
    let _ = sock.set_linger(Some(Duration::ZERO));
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(source) => return Err(LoadError::Connect { addr, source }),
    }
    let mut tls = ClientConnection::new(cfg.clone(), server_name())
        .map_err(|e| LoadError::Tls { stage: "config", detail: e.to_string() })?;
    tls.set_buffer_limit(None);
    // Held by the session until the handshake ends, then sent with the client's Finished.
    tls.writer().write_all(request).map_err(sys("rustls writer"))?;
    Ok(TlsConn { stream: sock.into(), tls, want_out: true })
}

fn run_handshakes(
    addr: SocketAddr,
    opts: &LoadOpts,
    cfg: Arc<ClientConfig>,
    mut edge: impl FnMut(Edge),
) -> Result<LoadResult, LoadError> {
    let request = wire::request_for(opts);
    let ep = Epoll::new()?;
    let token = |slot: usize, gen: u64| (gen << 32) | slot as u64;
    let mut slots: Vec<Option<Hs>> = (0..opts.conns).map(|_| None).collect();
    let mut gens = vec![0u64; opts.conns];
    let mut seen = Seen::default();
    let mut bytes = Bytes::default();
    let mut probe = HeadProbe::new(true);
    let mut lat = Latency::new();
    let (mut sent, mut received, mut bad_status, mut window_msgs) = (0u64, 0u64, 0u64, 0u64);
    let mut lost = 0usize;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut rbuf = vec![0u8; 64 * 1024];
    let start = now_ns();
    let mut ph = Phases::new(opts, start);
    let begin = |slot: usize, gen: u64, now: u64| -> Result<Hs, LoadError> {
        let c = dial(addr, &cfg, &request)?;
        ep.ctl(libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), INOUT, token(slot, gen))?;
        Ok(Hs { c, counter: ResponseCounter::for_load(opts), started: now, connected: false })
    };
    for (slot, s) in slots.iter_mut().enumerate() {
        *s = Some(begin(slot, 0, start)?);
        sent += 1;
    }
    loop {
        let now = now_ns();
        if ph.advance(now, sent, received, &bytes, &mut edge) {
            lat.reset();
            window_msgs = 0;
        }
        if !ph.sending && (slots.iter().all(Option::is_none) || now >= ph.drain_end) {
            break;
        }
        let n = wait(&ep, &mut events, ph.wait_ms(now))?;
        let now = now_ns();
        for ev in &events[..n] {
            let (slot, gen, flags) = ((ev.u64 & 0xffff_ffff) as usize, ev.u64 >> 32, ev.events);
            // An event of a connection this slot has already closed.
            if gens[slot] != gen {
                continue;
            }
            let Some(hs) = slots[slot].as_mut() else { continue };
            let mut failed = false;
            let mut done = 0u64;
            if !hs.connected {
                let err = flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
                match hs.c.stream.take_error() {
                    Ok(None) if !err && flags & libc::EPOLLOUT as u32 != 0 => hs.connected = true,
                    Ok(None) if !err => continue,
                    Ok(Some(e)) | Err(e) if received == 0 && e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        return Err(LoadError::Connect { addr, source: e });
                    }
                    _ => failed = true,
                }
            }
            if hs.connected && flags & (IN | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32) != 0 {
                let Hs { c, counter, .. } = hs;
                let first = slot == 0 && gen == 0;
                let alive = c.receive(&mut rbuf, &mut bytes, |data| {
                    if first {
                        probe.feed(data);
                    }
                    let (n, bad) = counter.feed(data)?;
                    done += n;
                    bad_status += bad;
                    Ok(())
                })?;
                failed = !alive && done == 0;
            }
            if hs.connected && !failed && done == 0 && !hs.c.flush(&ep, token(slot, gen), &mut bytes)? {
                failed = true;
            }
            if done == 0 && !failed {
                continue;
            }
            // The connection is over: answered, or failed.
            let hs = slots[slot].take().expect("checked above");
            if done > 0 {
                seen.note(&hs.c.tls)?;
                received += 1;
                if ph.measuring {
                    lat.record(now.saturating_sub(hs.started));
                    window_msgs += 1;
                }
            } else {
                lost += 1;
                if received == 0 && lost >= GIVE_UP_AFTER {
                    return Err(LoadError::AllConnectionsLost(lost));
                }
            }
            // Closing the socket (RST: SO_LINGER 0) also takes it out of the epoll set.
            drop(hs);
            gens[slot] += 1;
            if ph.sending {
                slots[slot] = Some(begin(slot, gens[slot], now)?);
                sent += 1;
            }
        }
    }
    let drained = slots.iter().all(Option::is_none);
    let tls = seen.finish(&ph, window_msgs, probe.names);
    Ok(LoadResult {
        messages: window_msgs,
        window: opts.duration,
        latency: lat,
        sent,
        received,
        bad_status,
        lost_conns: lost,
        client_cpu: ph.client_cpu,
        drained,
        late: 0,
        send_lag: None,
        tls: Some(tls),
        wire: None,
    })
}

/// The lines below `compare`'s table for the TLS cells: per cell and server, what was
/// negotiated and the bytes per message on both sides of TLS (from the cell's first
/// measured round: they do not change between rounds). Empty without TLS cells.
pub fn section(records: &[Record]) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut done: Vec<(&str, &str, &str)> = Vec::new();
    for r in records {
        let Outcome::Done(f) = &r.outcome else { continue };
        let Some(w) = &f.tls else { continue };
        let key = (r.id.as_str(), r.workload.as_str(), r.server.as_str());
        if done.contains(&key) {
            continue;
        }
        done.push(key);
        let handshakes = if w.resumed > 0 {
            format!("{} full + {} resumed handshakes", w.full, w.resumed)
        } else {
            format!("{} full handshakes", w.full)
        };
        let headers = if w.headers.is_empty() { String::new() } else { format!(" ({})", w.headers) };
        lines.push(format!(
            "{:<3} {:<28} {:<14} {} {} {} alpn {}, {handshakes}; per message: response {:.0} B plaintext{headers}, \
             TLS {:.0} B in / {:.0} B out",
            r.id,
            r.workload,
            r.server,
            w.version,
            w.suite,
            w.group,
            w.alpn,
            w.plain_in_per_msg,
            w.tls_in_per_msg,
            w.tls_out_per_msg
        ));
    }
    if lines.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\nTLS cells: the generator offers only {VERSION} {SUITE} {GROUP} (checked on every connection); bytes per \
         message over the window (handshake: the whole connection)\n"
    );
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ServerKind;
    use crate::server::ServerProc;
    use crate::testutil::short_load;

    #[test]
    fn header_names_in_order() {
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: x\r\nContent-Type: text/plain\r\n\
                     Content-Length: 11\r\nConnection: keep-alive";
        assert_eq!(header_names(head), "Server, Date, Content-Type, Content-Length, Connection");
        let mut p = HeadProbe::new(true);
        p.feed(b"HTTP/1.1 200 OK\r\nA: 1\r");
        assert_eq!(p.names, None);
        p.feed(b"\nB: 2\r\n\r\nbodyHTTP/1.1 200 OK\r\nC: 3\r\n\r\n");
        assert_eq!(p.names.as_deref(), Some("A, B"));
        let mut off = HeadProbe::new(false);
        off.feed(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n");
        assert_eq!(off.names, None);
    }

    #[test]
    fn the_client_offers_one_suite_and_one_group() {
        let pki = crate::pki::shared().unwrap();
        for resumption in [true, false] {
            let c = client_config(&pki.ca(), resumption).unwrap();
            let p = c.crypto_provider();
            assert_eq!(p.cipher_suites.iter().map(|s| format!("{:?}", s.suite())).collect::<Vec<_>>(), [SUITE]);
            assert_eq!(p.kx_groups.iter().map(|g| format!("{:?}", g.name())).collect::<Vec<_>>(), [GROUP]);
            assert_eq!(c.alpn_protocols, [b"http/1.1".to_vec()]);
        }
        let missing = client_config(Path::new("/nonexistent/ca.pem"), true).unwrap_err();
        assert!(matches!(missing, LoadError::Tls { stage: "config", .. }), "{missing}");
    }

    #[test]
    fn section_states_the_parameters_and_bytes() {
        let mut f = crate::testutil::figures(1000.0, 10.0, 0.0, 0.0);
        f.tls = Some(TlsWire {
            version: VERSION.into(),
            suite: SUITE.into(),
            group: GROUP.into(),
            alpn: "http/1.1".into(),
            full: 2,
            resumed: 0,
            tls_in_per_msg: 150.4,
            tls_out_per_msg: 60.0,
            plain_in_per_msg: 127.0,
            headers: "Content-Type, Content-Length, Date".into(),
        });
        let rec = |round| Record {
            id: "P10".into(),
            workload: "https c4 d1".into(),
            server: "ringman".into(),
            round,
            outcome: Outcome::Done(f.clone()),
        };
        let s = section(&[rec(0), rec(1)]);
        assert_eq!(s.lines().filter(|l| l.starts_with("P10")).count(), 1, "one line per cell: {s}");
        for needle in [
            "TLSv1_3 TLS13_AES_128_GCM_SHA256 X25519 alpn http/1.1, 2 full handshakes",
            "response 127 B plaintext (Content-Type, Content-Length, Date), TLS 150 B in / 60 B out",
        ] {
            assert!(s.contains(needle), "{needle}: {s}");
        }
        assert!(section(&[]).is_empty());
    }

    /// What every TLS run must show: every request answered, none lost, no error status,
    /// the offered parameters negotiated, `handshake` full handshakes only.
    fn check(r: &LoadResult, who: &str, scenario: Scenario) {
        assert!(r.drained, "{who}: {r:?}");
        assert_eq!((r.sent, r.lost_conns, r.bad_status), (r.received, 0, 0), "{who}: {r:?}");
        assert!(r.messages > 0 && r.messages <= r.received, "{who}: {r:?}");
        assert_eq!(r.latency.len(), r.messages, "{who}: {r:?}");
        let w = r.tls.as_ref().expect("TLS figures");
        eprintln!("{who}: {} answers, {w:?}", r.received);
        assert_eq!((w.version.as_str(), w.suite.as_str(), w.group.as_str()), (VERSION, SUITE, GROUP), "{who}");
        assert_eq!(w.alpn, "http/1.1", "{who}");
        assert!(w.tls_in_per_msg > w.plain_in_per_msg && w.plain_in_per_msg > 0.0, "{who}: {w:?}");
        match scenario {
            Scenario::Handshake => {
                assert_eq!((w.full, w.resumed), (r.received, 0), "{who}: one full handshake per connection");
                assert!(w.headers.to_ascii_lowercase().contains("content-length"), "{who}: {w:?}");
            }
            Scenario::Https => assert!(w.headers.to_ascii_lowercase().contains("content-length"), "{who}: {w:?}"),
            _ => assert!(w.headers.is_empty(), "{who}: {w:?}"),
        }
    }

    /// Runs every TLS scenario `server` supports against `at(scenario)` at tiny size.
    fn run_all(who: &str, kind: ServerKind, mut at: impl FnMut(Scenario) -> SocketAddr) {
        let ca = crate::pki::shared().unwrap().ca();
        for (s, conns, depth) in [(Scenario::Https, 4, 3), (Scenario::Handshake, 3, 1), (Scenario::Wss, 4, 2)] {
            if !kind.supports(s) {
                continue;
            }
            let o = LoadOpts { size: 20, ..short_load(s, conns, depth, None) };
            let r = run(at(s), &o, &ca, |_| {}).unwrap_or_else(|e| panic!("{who} {s:?}: {e}"));
            check(&r, &format!("{who} {s:?}"), s);
        }
    }

    /// The ringman engine's TLS servers (`serve_tls` on a thread), and the same
    /// certificate's files.
    fn ringman_tls(s: Scenario) -> SocketAddr {
        let pki = crate::pki::shared().unwrap();
        let (cert, key) = (pki.cert(), pki.key());
        crate::testutil::on_thread(move |a| {
            let url = format!("{}://{a}", crate::server::ringman_scheme(s));
            crate::ringman_server::serve_tls(&url, &cert, &key)
        })
    }

    #[test]
    fn tls_scenarios_against_the_ringman_engine() {
        run_all("ringman", ServerKind::Ringman, ringman_tls);
    }

    #[test]
    fn tls_scenarios_against_nginx() {
        if crate::server::find_on_path("nginx").is_none() {
            eprintln!("nginx is not installed: its TLS half is not tested (apt-get install nginx-light)");
            return;
        }
        let peers = crate::cli::Env::default().peers_dir;
        let mut running = Vec::new();
        run_all("nginx", ServerKind::Nginx, |s| {
            let p = ServerProc::start(ServerKind::Nginx, s, 0, &peers)
                .unwrap_or_else(|e| panic!("nginx with TLS did not start: {e}"));
            let a = p.addr;
            running.push(p);
            a
        });
    }

    /// The tokio-rustls peer, when the peers workspace was built (as the proxy test: set
    /// RINGMAN_NO_BENCH_PEERS=1 to leave it out).
    #[test]
    fn tls_scenarios_against_the_tokio_rustls_peer() {
        if std::env::var_os("RINGMAN_NO_BENCH_PEERS").is_some_and(|v| v == "1") {
            eprintln!("RINGMAN_NO_BENCH_PEERS=1: the tokio-rustls peer is not tested");
            return;
        }
        let peers = crate::cli::Env::default().peers_dir;
        let bin = crate::server::peer_bin(&peers, "tokio-peer");
        assert!(
            bin.exists(),
            "{} missing: build the peers (cargo build --release --manifest-path bench/peers/Cargo.toml; \
             scripts/test does), or set RINGMAN_NO_BENCH_PEERS=1",
            bin.display()
        );
        let mut running = Vec::new();
        run_all("tokio", ServerKind::Tokio, |s| {
            let p = ServerProc::start(ServerKind::Tokio, s, 0, &peers)
                .unwrap_or_else(|e| panic!("tokio peer (rebuild bench/peers if it predates --mode https): {e}"));
            let a = p.addr;
            running.push(p);
            a
        });
    }
}
