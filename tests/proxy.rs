//! Outgoing connections through proxies this project did not write: `microsocks` (SOCKS5
//! with user/password) and `tinyproxy` (HTTP `CONNECT` with Basic authentication), both
//! Debian packages, in front of Python servers. Right credentials carry pipelined bursts and
//! WebSocket upgrades; wrong or missing credentials, an unreachable target, a proxy that is
//! down and one that never answers are CONNECT_FAIL naming what the proxy said.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use ringman::{AsyncTcpConnection, ConnError, Connection, Proxy, Running, Server, Worker};

use common::{example_binary, free_port, py_echo, py_tcp_server, py_ws_server, wait_until, PATIENCE};

const USER: &str = "alice";
const PASS: &str = "s3cret_pw";

/// A proxy server process on 127.0.0.1, killed (and its files removed) on drop.
struct ProxyPeer {
    child: Child,
    port: u16,
    conf: Option<std::path::PathBuf>,
}

impl ProxyPeer {
    /// `microsocks` requiring `USER` / `PASS`.
    fn socks5() -> ProxyPeer {
        let port = free_port();
        let child = Command::new("microsocks")
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-u", USER, "-P", PASS])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("microsocks runs (Debian package microsocks; scripts/test installs it)");
        ProxyPeer::up(child, port, None)
    }

    /// `tinyproxy` requiring Basic `USER` / `PASS`.
    fn http() -> ProxyPeer {
        let port = free_port();
        let conf = std::env::temp_dir().join(format!("ringman-tinyproxy-{}-{port}.conf", std::process::id()));
        // (No ConnectPort line: CONNECT to any port is allowed.)
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 100\nAllow 127.0.0.1\n\
                 BasicAuth {USER} {PASS}\nLogLevel Critical\n"
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy runs (Debian package tinyproxy; scripts/test installs it)");
        ProxyPeer::up(child, port, Some(conf))
    }

    fn up(child: Child, port: u16, conf: Option<std::path::PathBuf>) -> ProxyPeer {
        let peer = ProxyPeer { child, port, conf };
        wait_until("the proxy accepts connections", || TcpStream::connect(("127.0.0.1", port)).is_ok());
        peer
    }

    /// The proxy with these credentials (`None`: without any).
    fn proxy(&self, auth: Option<(&str, &str)>) -> Proxy {
        let p = match &self.conf {
            None => Proxy::socks5(&format!("127.0.0.1:{}", self.port)),
            Some(_) => Proxy::http(&format!("127.0.0.1:{}", self.port)),
        }
        .unwrap();
        match auth {
            Some((u, pw)) => p.with_auth(u, pw).unwrap(),
            None => p,
        }
    }

    fn right(&self) -> Proxy {
        self.proxy(Some((USER, PASS)))
    }
}

impl Drop for ProxyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(c) = &self.conf {
            let _ = std::fs::remove_file(c);
        }
    }
}

/// What a client connection reported, in order.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Connect,
    Message(Vec<u8>),
    Error(u32, String),
    Close,
    WsConnect,
}

/// A ring thread with no listener that runs `open` at start; events arrive on the receiver.
fn client_ring(open: impl Fn(Sender<Got>) + Send + Sync + 'static) -> (Running, Receiver<Got>) {
    let (tx, rx) = unbounded();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.on_worker_start(move |_, _| open(tx.clone()));
    (Server::new().add(w).start().expect("client ring starts"), rx)
}

/// Opens `url` through `proxy` and reports everything it does on `tx`.
fn open(url: &str, proxy: Proxy, tx: &Sender<Got>) -> Connection {
    let mut client = AsyncTcpConnection::new(url).unwrap();
    client.proxy = Some(proxy);
    client.connect_timeout = PATIENCE;
    let conn = client.connect().unwrap();
    let t = tx.clone();
    conn.on_connect(move |_| t.send(Got::Connect).unwrap());
    let t = tx.clone();
    conn.on_message(move |_, m| t.send(Got::Message(m.data.to_vec())).unwrap());
    let t = tx.clone();
    conn.on_error(move |_, e: &ConnError| t.send(Got::Error(e.code(), e.to_string())).unwrap());
    let t = tx.clone();
    conn.on_close(move |_| t.send(Got::Close).unwrap());
    let t = tx.clone();
    conn.on_websocket_connect(move |_, _| t.send(Got::WsConnect).unwrap());
    conn
}

fn next(rx: &Receiver<Got>) -> Got {
    rx.recv_timeout(PATIENCE).expect("an event from the client ring")
}

/// The first event is CONNECT_FAIL (code 1) naming `needle` (never an `on_connect`), then
/// `on_close`.
fn expect_connect_fail(rx: &Receiver<Got>, needle: &str) {
    match next(rx) {
        Got::Error(1, msg) => assert!(msg.contains(needle), "{msg:?} does not contain {needle:?}"),
        other => panic!("expected CONNECT_FAIL naming {needle:?}, got {other:?}"),
    }
    assert_eq!(next(rx), Got::Close);
}

/// Line `i` of a burst.
fn line(i: usize) -> String {
    format!("line {i} {}", "x".repeat(i % 300))
}

/// 3000 lines sent before the tunnel is up (held, then pipelined) and 3000 more from
/// `on_connect`, all echoed in order through `proxy`.
fn pipelined_burst(proxy: Proxy) {
    const N: usize = 3000;
    let server = py_echo();
    let url = format!("text://127.0.0.1:{}", server.port);
    let (_ring, rx) = client_ring(move |tx| {
        let conn = open(&url, proxy.clone(), &tx);
        conn.set_max_send_buffer_size(8 << 20);
        for i in 0..N {
            assert!(conn.send(line(i)).is_ok());
        }
        let t = tx.clone();
        conn.on_connect(move |c| {
            t.send(Got::Connect).unwrap();
            for i in N..2 * N {
                assert!(c.send(line(i)).is_ok());
            }
        });
    });
    assert_eq!(next(&rx), Got::Connect);
    for i in 0..2 * N {
        assert_eq!(next(&rx), Got::Message(line(i).into_bytes()), "echo {i}");
    }
}

#[test]
fn socks5_with_right_credentials_carries_pipelined_bursts() {
    let socks = ProxyPeer::socks5();
    pipelined_burst(socks.right());
}

#[test]
fn http_connect_with_right_credentials_carries_pipelined_bursts() {
    let http = ProxyPeer::http();
    pipelined_burst(http.right());
}

#[test]
fn a_proxy_given_by_url_and_name_is_resolved_here_and_used() {
    // The proxy's own name is resolved by the client (localhost may answer on ::1 first;
    // the proxies listen on 127.0.0.1 only); credentials come percent-encoded in the URL.
    let socks = ProxyPeer::socks5();
    let http = ProxyPeer::http();
    let enc: String = PASS.bytes().map(|b| format!("%{b:02X}")).collect();
    for url in [
        format!("socks5://{USER}:{enc}@localhost:{}", socks.port),
        format!("http://{USER}:{enc}@localhost:{}", http.port),
    ] {
        let server = py_echo();
        let target = format!("frame://127.0.0.1:{}", server.port);
        let proxy = Proxy::parse(&url).unwrap();
        let (_ring, rx) = client_ring(move |tx| {
            let conn = open(&target, proxy.clone(), &tx);
            conn.send(vec![7u8; 100_000]);
        });
        assert_eq!(next(&rx), Got::Connect, "{url}");
        assert_eq!(next(&rx), Got::Message(vec![7u8; 100_000]), "{url}");
    }
}

#[test]
fn wrong_or_missing_credentials_are_connect_fail_with_the_proxys_refusal() {
    let socks = ProxyPeer::socks5();
    let http = ProxyPeer::http();
    let server = py_echo();
    let url = format!("text://127.0.0.1:{}", server.port);
    let cases = [
        // RFC 1929: a non-zero status.
        (socks.proxy(Some((USER, "wrong"))), "authentication failed"),
        (socks.proxy(Some(("mallory", PASS))), "authentication failed"),
        // No credentials offered: the proxy accepts none of the methods.
        (socks.proxy(None), "none of the offered authentication methods"),
        // tinyproxy answers wrong credentials with 401, missing ones with 407.
        (http.proxy(Some((USER, "wrong"))), "401 Unauthorized"),
        (http.proxy(None), "407 Proxy Authentication Required"),
    ];
    for (proxy, needle) in cases {
        let u = url.clone();
        let (_ring, rx) = client_ring(move |tx| {
            let conn = open(&u, proxy.clone(), &tx);
            conn.send("never sent");
        });
        expect_connect_fail(&rx, needle);
    }
}

#[test]
fn a_target_the_proxy_cannot_reach_is_connect_fail_with_its_answer() {
    let socks = ProxyPeer::socks5();
    let http = ProxyPeer::http();
    let dead = free_port();
    let url = format!("text://127.0.0.1:{dead}");
    for (proxy, needle) in
        [(socks.right(), "SOCKS5 reply 5: connection refused"), (http.right(), "500 Unable to connect")]
    {
        let u = url.clone();
        let (_ring, rx) = client_ring(move |tx| {
            open(&u, proxy.clone(), &tx);
        });
        expect_connect_fail(&rx, needle);
    }
}

#[test]
fn a_proxy_that_is_down_or_silent_is_connect_fail() {
    let server = py_echo();
    let url = format!("text://127.0.0.1:{}", server.port);
    let down = Proxy::socks5(&format!("127.0.0.1:{}", free_port())).unwrap();
    let u = url.clone();
    let (_ring, rx) = client_ring(move |tx| {
        open(&u, down.clone(), &tx);
    });
    expect_connect_fail(&rx, "refused");
    // Accepts, reads, never answers: the connect timeout covers the handshake.
    let silent = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    while await r.read(4096):
        pass
"#,
    );
    for proxy in
        [Proxy::socks5(&format!("127.0.0.1:{}", silent.port)), Proxy::http(&format!("127.0.0.1:{}", silent.port))]
    {
        let (proxy, u) = (proxy.unwrap(), url.clone());
        let (_ring, rx) = client_ring(move |tx| {
            let mut client = AsyncTcpConnection::new(&u).unwrap();
            client.proxy = Some(proxy.clone());
            client.connect_timeout = Duration::from_millis(300);
            let conn = client.connect().unwrap();
            let t = tx.clone();
            conn.on_connect(move |_| t.send(Got::Connect).unwrap());
            let t = tx.clone();
            conn.on_error(move |_, e| t.send(Got::Error(e.code(), e.to_string())).unwrap());
            let t = tx.clone();
            conn.on_close(move |_| t.send(Got::Close).unwrap());
        });
        expect_connect_fail(&rx, "no complete answer to the handshake within 300ms");
    }
}

#[test]
fn a_target_that_speaks_first_is_heard_after_the_proxys_answer() {
    // The greeting may arrive in the same read as the proxy's answer: it must reach the
    // protocol whole, before the echoes, and on_connect first.
    let server = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    w.write(b'HELLO from the target\n')
    while True:
        d = await r.read(65536)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.close()
"#,
    );
    let socks = ProxyPeer::socks5();
    let http = ProxyPeer::http();
    // (Whether the greeting shares a read with the answer depends on timing: several
    // connections per proxy.)
    for proxy in [socks.right(), http.right()] {
        let url = format!("text://127.0.0.1:{}", server.port);
        let (tx, rx) = unbounded::<(u64, Got)>();
        let mut w = Worker::<()>::without_listener();
        w.count = 1;
        w.on_worker_start(move |_, _| {
            for _ in 0..10 {
                let mut client = AsyncTcpConnection::new(&url).unwrap();
                client.proxy = Some(proxy.clone());
                let conn = client.connect().unwrap();
                let t = tx.clone();
                conn.on_connect(move |c| t.send((c.id().as_u64(), Got::Connect)).unwrap());
                let t = tx.clone();
                conn.on_message(move |c, m| t.send((c.id().as_u64(), Got::Message(m.data.to_vec()))).unwrap());
                let t = tx.clone();
                conn.on_error(move |c, e| t.send((c.id().as_u64(), Got::Error(e.code(), e.to_string()))).unwrap());
                for i in 0..100 {
                    conn.send(line(i));
                }
            }
        });
        let _ring = Server::new().add(w).start().expect("client ring starts");
        let mut per_conn = vec![Vec::new(); 10];
        let mut ids = Vec::new();
        while per_conn.iter().map(Vec::len).sum::<usize>() < 10 * 102 {
            let (id, got) = rx.recv_timeout(PATIENCE).expect("an event from the client ring");
            let n = match ids.iter().position(|x| *x == id) {
                Some(n) => n,
                None => {
                    ids.push(id);
                    ids.len() - 1
                }
            };
            per_conn[n].push(got);
        }
        for got in per_conn {
            assert_eq!(got[0], Got::Connect);
            assert_eq!(got[1], Got::Message(b"HELLO from the target".to_vec()));
            for i in 0..100 {
                assert_eq!(got[2 + i], Got::Message(line(i).into_bytes()));
            }
        }
    }
}

#[test]
fn websocket_clients_upgrade_through_either_proxy() {
    let server = py_ws_server(
        &[],
        "echo",
        "compression=None",
        r#"
async def echo(ws):
    async for m in ws:
        await ws.send(m)
"#,
    );
    let socks = ProxyPeer::socks5();
    let http = ProxyPeer::http();
    for proxy in [socks.right(), http.right()] {
        let url = format!("ws://127.0.0.1:{}/chat", server.port);
        let (_ring, rx) = client_ring(move |tx| {
            let conn = open(&url, proxy.clone(), &tx);
            // Held until the 101, which comes through the tunnel.
            for i in 0..200 {
                conn.send_text(line(i));
            }
        });
        assert_eq!(next(&rx), Got::Connect);
        assert_eq!(next(&rx), Got::WsConnect);
        for i in 0..200 {
            assert_eq!(next(&rx), Got::Message(line(i).into_bytes()));
        }
    }
}

#[test]
fn a_reconnect_goes_through_the_proxy_again() {
    // The target closes each connection after its first line; the client reconnects once.
    let server = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    d = await r.readline()
    w.write(d)
    await w.drain()
    w.close()
"#,
    );
    let socks = ProxyPeer::socks5();
    let proxy = socks.right();
    let url = format!("text://127.0.0.1:{}", server.port);
    let (_ring, rx) = client_ring(move |tx| {
        let conn = open(&url, proxy.clone(), &tx);
        let t = tx.clone();
        let attempts = std::rc::Rc::new(std::cell::Cell::new(0));
        conn.on_connect(move |c| {
            attempts.set(attempts.get() + 1);
            t.send(Got::Connect).unwrap();
            c.send(format!("attempt {}", attempts.get()));
        });
        let t = tx.clone();
        let closes = std::rc::Rc::new(std::cell::Cell::new(0));
        conn.on_close(move |c| {
            closes.set(closes.get() + 1);
            t.send(Got::Close).unwrap();
            if closes.get() == 1 {
                c.reconnect(Duration::ZERO);
            }
        });
    });
    for attempt in 1..=2 {
        assert_eq!(next(&rx), Got::Connect);
        assert_eq!(next(&rx), Got::Message(format!("attempt {attempt}").into_bytes()));
        assert_eq!(next(&rx), Got::Close);
    }
}

#[test]
fn the_client_example_goes_through_either_proxy() {
    let server = py_echo();
    let socks = ProxyPeer::socks5();
    let http = ProxyPeer::http();
    let client = example_binary("client");
    let target = format!("frame://127.0.0.1:{}", server.port);
    let cases = [
        (format!("socks5://{USER}:{PASS}@127.0.0.1:{}", socks.port), Ok("ok: 3 connections x 50 messages")),
        (format!("http://{USER}:{PASS}@127.0.0.1:{}", http.port), Ok("ok: 3 connections x 50 messages")),
        (format!("http://127.0.0.1:{}", http.port), Err("407 Proxy Authentication Required")),
        (format!("socks5://{USER}:nope@127.0.0.1:{}", socks.port), Err("authentication failed")),
    ];
    for (proxy, want) in cases {
        let out = Command::new(&client)
            .args([&target, "--conns", "3", "--messages", "50", "--size", "20000", "--proxy", &proxy])
            .output()
            .expect("the client example runs");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        match want {
            Ok(line) => assert!(out.status.success() && stdout.contains(line), "{proxy}: {stdout} {stderr}"),
            Err(needle) => {
                assert_eq!(out.status.code(), Some(1), "{proxy}: {stdout} {stderr}");
                assert!(stderr.contains(&format!("connect to 127.0.0.1:{} failed", server.port)), "{proxy}: {stderr}");
                assert!(stderr.contains(needle), "{proxy}: {stderr}");
            }
        }
    }
}
