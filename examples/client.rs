//! Echo-checking client:
//! `cargo run --release --example client -- <tcp|text|frame|ws|wss|ssl|udp>://HOST:PORT[/path]
//! [--conns N] [--messages M] [--size B] [--binary] [--tls] [--ca FILE] [--proxy PROXY]`.
//!
//! Opens N outgoing connections spread over the ring threads (one `Worker` without a
//! listener; each thread opens its share in `on_worker_start`). Each connection writes M
//! messages of B bytes in one burst right after `connect()` (they are held until the
//! connection is up, then pipelined) and checks that the echoes come back in order and
//! byte-identical (`tcp://` is a byte stream: the concatenation is compared). `ws://` sends
//! text frames of valid UTF-8 by default, which any echo server returns as they came
//! (Workerman's echoes every message as a text frame, and a binary payload in a text frame
//! is invalid UTF-8 a conforming client must refuse); `--binary` sends binary frames with
//! every byte value instead. `wss://` is `ws://` over TLS, `ssl://` is `tcp://` over TLS;
//! `--tls` puts `text://` or `frame://` over TLS. The server is verified against the
//! built-in roots, or against the CA certificates of `--ca FILE`. `--proxy
//! socks5://USER:PASS@HOST:PORT` or `--proxy http://[USER:PASS@]HOST:PORT` reaches the
//! server through a SOCKS5 or HTTP `CONNECT` proxy (a refusal is reported with the proxy's
//! answer; TLS starts once the tunnel is open). `udp://` opens N UDP clients
//! (`AsyncUdpConnection`), each sending its M datagrams of B bytes one after the other, the
//! next once the previous one's echo arrived (a datagram lost or unanswered within 5 s is
//! an error). The last line
//! is `ok: N connections x M messages` (exit 0), or `error: …` on any mismatch, connect
//! failure or early close (exit 1).

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ringman::{
    run_all, AsyncTcpConnection, AsyncUdpConnection, ClientTls, Connection, Message, Proxy, Server, UdpConnection,
    Worker,
};

fn usage() -> ExitCode {
    eprintln!(
        "usage: client <tcp|text|frame|ws|wss|ssl|udp>://HOST:PORT[/path] [--conns N] [--messages M] [--size B] [--binary] \
         [--tls] [--ca FILE] [--proxy socks5://USER:PASS@HOST:PORT | http://[USER:PASS@]HOST:PORT]"
    );
    ExitCode::from(2)
}

/// What all ring threads share: how many connections are done, and the first failure.
#[derive(Default)]
struct Shared {
    done: AtomicUsize,
    error: Mutex<Option<String>>,
}

impl Shared {
    /// Records the first failure and stops every ring thread.
    fn fail(&self, why: String) {
        let mut e = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some(why);
            ringman::stop_all();
        }
    }

    fn failed(&self) -> bool {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

/// The test pattern: byte `i` of message `msg` of connection `conn`. Text messages stay
/// alphanumeric (no newline); the others use every byte value.
fn byte(conn: usize, msg: usize, i: usize, text: bool) -> u8 {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let x = ((conn as u64) << 44) ^ ((msg as u64) << 24) ^ i as u64;
    let h = (x.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 29) as usize;
    if text {
        ALNUM[h % ALNUM.len()]
    } else {
        h as u8
    }
}

fn payload(conn: usize, msg: usize, size: usize, text: bool) -> Vec<u8> {
    (0..size).map(|i| byte(conn, msg, i, text)).collect()
}

/// Progress of one connection's check.
struct Check {
    index: usize,
    /// Messages (or, for `tcp://`, bytes) verified so far.
    got: usize,
    done: bool,
}

#[derive(Clone, Copy)]
struct Plan {
    messages: usize,
    size: usize,
    /// `tcp://`: compare a byte stream, not messages.
    stream: bool,
    /// Alphanumeric payloads (`text://`, and `ws://` text frames).
    text: bool,
    ws: bool,
}

impl Plan {
    /// What a connection has to get back: messages, or bytes for a stream.
    fn expected(&self) -> usize {
        if self.stream {
            self.messages * self.size
        } else {
            self.messages
        }
    }

    /// Checks one arrival; Err names the first difference.
    fn check(&self, st: &mut Check, m: &Message<'_>) -> Result<(), String> {
        let data = m.data;
        if self.stream {
            for (k, &b) in data.iter().enumerate() {
                let pos = st.got + k;
                if pos >= self.expected() {
                    return Err(format!("connection {}: {} bytes more than were sent", st.index, data.len() - k));
                }
                let want = byte(st.index, pos / self.size, pos % self.size, self.text);
                if b != want {
                    return Err(format!("connection {}: byte {pos} is {b:#04x}, expected {want:#04x}", st.index));
                }
            }
            st.got += data.len();
            return Ok(());
        }
        if st.got >= self.messages {
            return Err(format!("connection {}: an extra message of {} bytes", st.index, data.len()));
        }
        let want = payload(st.index, st.got, self.size, self.text);
        if data != want.as_slice() {
            let at = data.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(data.len().min(want.len()));
            return Err(format!(
                "connection {}: message {} differs ({} bytes, expected {}; first difference at byte {at})",
                st.index,
                st.got,
                data.len(),
                want.len()
            ));
        }
        st.got += 1;
        Ok(())
    }
}

/// Opens UDP client `index` on this ring thread: its datagrams go one at a time, each
/// once the previous one's echo arrived and matched.
fn open_udp(url: &str, index: usize, plan: Plan, conns: usize, shared: &Arc<Shared>) -> Result<(), String> {
    let mut client = AsyncUdpConnection::new(url).map_err(|e| format!("{url}: {e}"))?;
    client.recv_timeout = Some(std::time::Duration::from_secs(5));
    let conn = client.connect().map_err(|e| format!("{url}: {e}"))?;
    let st = Rc::new(RefCell::new(Check { index, got: 0, done: false }));
    let send_next = move |c: &UdpConnection, n: usize| {
        if n < plan.messages {
            c.send(payload(index, n, plan.size, plan.text));
        }
    };
    let (s2, sh) = (st.clone(), shared.clone());
    conn.on_message(move |c, m| {
        let mut s = s2.borrow_mut();
        if let Err(e) = plan.check(&mut s, m) {
            sh.fail(e);
            c.close();
            return;
        }
        if s.got == plan.messages {
            s.done = true;
            c.close();
        } else {
            send_next(c, s.got);
        }
    });
    let sh = shared.clone();
    conn.on_error(move |_, e| sh.fail(format!("udp client {index}: {e}")));
    let (sh, s2) = (shared.clone(), st.clone());
    conn.on_close(move |_| {
        let s = s2.borrow();
        if s.done {
            if sh.done.fetch_add(1, Ordering::SeqCst) + 1 == conns {
                ringman::stop_all();
            }
        } else {
            sh.fail(format!("udp client {index} closed after {} of {} datagrams", s.got, plan.messages));
        }
    });
    if plan.messages == 0 {
        st.borrow_mut().done = true;
        conn.close();
    } else {
        send_next(&conn, 0);
    }
    Ok(())
}

/// Opens connection `index` on this ring thread and installs its checks.
fn open(
    url: &str,
    tls: Option<&ClientTls>,
    proxy: Option<&Proxy>,
    index: usize,
    plan: Plan,
    conns: usize,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let conn = AsyncTcpConnection::new(url)
        .and_then(|mut c| {
            if let Some(t) = tls {
                c.tls = Some(t.clone());
            }
            c.proxy = proxy.cloned();
            c.connect()
        })
        .map_err(|e| format!("{url}: {e}"))?;
    // The whole burst is held before the connection is up: make room for it.
    let burst = plan.messages * (plan.size + 16);
    conn.set_max_send_buffer_size(conn.max_send_buffer_size().max(burst + 64 * 1024));
    conn.set_max_package_size(conn.max_package_size().max(plan.size + 64));
    let st = Rc::new(RefCell::new(Check { index, got: 0, done: false }));
    // Checked: close (a WebSocket with the closing handshake); counted once closed.
    let finish = {
        let st = st.clone();
        move |c: &Connection| {
            let mut s = st.borrow_mut();
            if !s.done && s.got == plan.expected() {
                s.done = true;
                drop(s);
                if plan.ws {
                    c.websocket_close(1000, "done");
                } else {
                    c.close(None);
                }
            }
        }
    };
    let on_msg = {
        let (st, shared, finish) = (st.clone(), shared.clone(), finish.clone());
        move |c: &Connection, m: &Message<'_>| {
            let r = plan.check(&mut st.borrow_mut(), m);
            match r {
                Ok(()) => finish(c),
                Err(e) => {
                    shared.fail(e);
                    c.destroy();
                }
            }
        }
    };
    conn.on_message(on_msg);
    // Nothing to get back (zero bytes): done once connected.
    conn.on_connect(finish);
    let sh = shared.clone();
    conn.on_error(move |_, e| sh.fail(format!("connection {index}: {e}")));
    let sh = shared.clone();
    conn.on_close(move |_| {
        let s = st.borrow();
        if s.done {
            if sh.done.fetch_add(1, Ordering::SeqCst) + 1 == conns {
                ringman::stop_all();
            }
        } else {
            sh.fail(format!(
                "connection {index} closed early, after {} of {} {}",
                s.got,
                plan.expected(),
                if plan.stream { "bytes" } else { "messages" }
            ));
        }
    });
    for j in 0..plan.messages {
        let data = payload(index, j, plan.size, plan.text);
        let status = match (plan.ws, plan.text) {
            (true, true) => conn.send_text(&data),
            (true, false) => conn.send_binary(&data),
            (false, _) => conn.send(&data),
        };
        if !status.is_ok() {
            return Err(format!("connection {index}: message {j} refused by the send buffer"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    ringman::ops::logger::init();
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else { return usage() };
    let (mut conns, mut messages, mut size, mut binary) = (1usize, 1usize, 64usize, false);
    let (mut tls_flag, mut ca) = (false, None);
    let mut proxy = None;
    while let Some(a) = args.next() {
        let slot = match a.as_str() {
            "--binary" => {
                binary = true;
                continue;
            }
            "--tls" => {
                tls_flag = true;
                continue;
            }
            "--ca" => match args.next() {
                Some(f) => {
                    ca = Some(f);
                    continue;
                }
                None => return usage(),
            },
            "--proxy" => {
                let Some(p) = args.next() else { return usage() };
                match Proxy::parse(&p) {
                    Ok(p) => proxy = Some(p),
                    Err(e) => {
                        eprintln!("error: --proxy {p}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                continue;
            }
            "--conns" => &mut conns,
            "--messages" => &mut messages,
            "--size" => &mut size,
            _ => return usage(),
        };
        match args.next().and_then(|n| n.parse().ok()) {
            Some(n) => *slot = n,
            None => return usage(),
        }
    }
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    if !matches!(scheme.as_str(), "tcp" | "text" | "frame" | "ws" | "wss" | "ssl" | "udp") {
        return usage();
    }
    let udp = scheme == "udp";
    if udp && proxy.is_some() {
        eprintln!("--proxy is for stream connections");
        return usage();
    }
    if udp && (tls_flag || ca.is_some()) {
        eprintln!("--tls and --ca are for stream connections");
        return usage();
    }
    // TLS: from the URL (wss, ssl) or --tls; --ca replaces the built-in roots.
    let tls = (tls_flag || ca.is_some() || matches!(scheme.as_str(), "wss" | "ssl"))
        .then(|| ClientTls { ca: ca.map(Into::into), ..ClientTls::default() });
    let checked = if udp { AsyncUdpConnection::new(&url).map(drop) } else { AsyncTcpConnection::new(&url).map(drop) };
    if let Err(e) = checked {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if conns == 0 {
        println!("ok: 0 connections x {messages} messages");
        return ExitCode::SUCCESS;
    }
    let ws = matches!(scheme.as_str(), "ws" | "wss");
    if binary && !ws {
        eprintln!("--binary is for ws:// only");
        return usage();
    }
    let stream = matches!(scheme.as_str(), "tcp" | "ssl");
    let plan = Plan { messages, size, stream, text: scheme == "text" || ws && !binary, ws };
    let shared = Arc::new(Shared::default());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut w = Worker::<()>::without_listener();
    w.name = "client".into();
    w.count = cpus.min(conns);
    let (sh, u, proxy) = (shared.clone(), url.clone(), Arc::new(proxy));
    w.on_worker_start(move |info, _| {
        // Thread `id` opens connections id, id + count, id + 2 * count, ...
        for index in (info.id..conns).step_by(info.count) {
            if sh.failed() {
                return;
            }
            let opened = if udp {
                open_udp(&u, index, plan, conns, &sh)
            } else {
                open(&u, tls.as_ref(), proxy.as_ref().as_ref(), index, plan, conns, &sh)
            };
            if let Err(e) = opened {
                sh.fail(e);
            }
        }
    });
    if let Err(e) = run_all(Server::new().add(w)) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(e) = shared.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let done = shared.done.load(Ordering::SeqCst);
    if done != conns {
        eprintln!("error: stopped with {done} of {conns} connections checked");
        return ExitCode::FAILURE;
    }
    println!("ok: {conns} connections x {messages} messages");
    ExitCode::SUCCESS
}
