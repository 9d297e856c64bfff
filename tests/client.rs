//! Outgoing connections (`AsyncTcpConnection`) against servers this project did not write:
//! Python asyncio and `websockets` servers, plus refused ports, unknown names, a server
//! that never answers the upgrade, reconnects, and `pipe()` in a proxy.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use ringman::{AsyncTcpConnection, ConnError, Connection, Running, SendStatus, Server, Worker};

use common::{
    connect, free_port, py_echo, py_tcp_server, py_ws_server, read_exact, start, wait_until, PyServer, PATIENCE,
};

const WS_ECHO: &str = r#"
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    token = ws.request.headers.get('X-Token')
    async for m in ws:
        if m == 'whoami':
            await ws.send(f'token={token} path={ws.request.path} proto={ws.subprotocol}')
        elif m == 'bye':
            await ws.close(4000, 'asked to')
        else:
            await ws.send(m)
async def main():
    async with serve(echo, '127.0.0.1', 0, subprotocols=['superchat', 'chat'], compression=None) as s:
        print(list(s.sockets)[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()
asyncio.run(main())
"#;

/// What a client connection reported, in order.
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Connect(u64),
    Message(Vec<u8>),
    Error(u32, String),
    Close(u64),
    WsConnect(Option<String>),
    BufferFull,
    BufferDrain,
}

/// A ring thread with no listener that runs `open` at start; events arrive on the receiver.
fn client_ring(open: impl Fn(Sender<Got>) + Send + Sync + 'static) -> (Running, Receiver<Got>) {
    let (tx, rx) = unbounded();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.on_worker_start(move |_, _| open(tx.clone()));
    (Server::new().add(w).start().expect("client ring starts"), rx)
}

/// Installs callbacks that report everything on `tx`.
fn report(conn: &Connection, tx: &Sender<Got>) {
    let t = tx.clone();
    conn.on_connect(move |c| t.send(Got::Connect(c.id().as_u64())).unwrap());
    let t = tx.clone();
    conn.on_message(move |_, m| t.send(Got::Message(m.data.to_vec())).unwrap());
    let t = tx.clone();
    conn.on_error(move |_, e: &ConnError| t.send(Got::Error(e.code(), e.to_string())).unwrap());
    let t = tx.clone();
    conn.on_close(move |c| t.send(Got::Close(c.id().as_u64())).unwrap());
}

/// Dials `text://127.0.0.1:port` from the ring thread this runs on, reporting on `tx`.
fn dial_reported(port: u16, tx: &Sender<Got>) -> Connection {
    let conn = AsyncTcpConnection::new(&format!("text://127.0.0.1:{port}")).unwrap().connect().unwrap();
    report(&conn, tx);
    conn
}

/// [`dial_reported`] for three rounds: each connect sends `first`, and each of the first two
/// closes asks to reconnect `after`.
fn dial_rounds(port: u16, tx: &Sender<Got>, first: &'static str, after: Duration) -> Connection {
    let conn = dial_reported(port, tx);
    let t = tx.clone();
    conn.on_connect(move |c| {
        t.send(Got::Connect(c.id().as_u64())).unwrap();
        c.send(first);
    });
    let rounds = std::rc::Rc::new(std::cell::Cell::new(0));
    let t = tx.clone();
    conn.on_close(move |c| {
        t.send(Got::Close(c.id().as_u64())).unwrap();
        rounds.set(rounds.get() + 1);
        if rounds.get() < 3 {
            assert!(c.reconnect(after));
        }
    });
    conn
}

/// Waits until the ring that ran `client_ring` holds no slot for connection `id`: nothing
/// more can happen to it (no reconnect pending, no callback left to run).
fn wait_slot_freed(ring: &Running, id: u64) {
    wait_until(&format!("connection {id} is gone from its ring"), || {
        let (rows, _) = ringman::ops::status::connections(ring.workers(), PATIENCE);
        rows.iter().all(|r| r.info.id.as_u64() != id)
    });
}

/// The next event is CONNECT_FAIL (code 1) with a message containing `needle`.
fn expect_connect_fail(rx: &Receiver<Got>, needle: &str) {
    match next(rx) {
        Got::Error(1, msg) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected CONNECT_FAIL, got {other:?}"),
    }
}

fn next(rx: &Receiver<Got>) -> Got {
    rx.recv_timeout(PATIENCE).expect("an event from the client ring")
}

#[test]
fn sends_made_before_the_connection_is_up_arrive_in_order() {
    let server = py_echo();
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = dial_reported(port, &tx);
        // A burst written before the TCP handshake completed: held, then sent in order.
        for i in 0..500 {
            assert!(conn.send(format!("line {i}")).is_ok());
        }
        assert!(!conn.is_open(), "still connecting");
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    for i in 0..500 {
        assert_eq!(next(&rx), Got::Message(format!("line {i}").into_bytes()));
    }
}

#[test]
fn a_refused_port_reports_connect_fail_then_close() {
    let port = free_port();
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
        conn.send("lost");
    });
    expect_connect_fail(&rx, "refused");
    assert!(matches!(next(&rx), Got::Close(_)));
}

#[test]
fn an_unknown_name_reports_name_not_found() {
    let (_ring, rx) = client_ring(|tx| {
        let conn = AsyncTcpConnection::new("tcp://no-such-host.invalid:80").unwrap().connect().unwrap();
        report(&conn, &tx);
    });
    expect_connect_fail(&rx, "not found");
    assert!(matches!(next(&rx), Got::Close(_)));
}

#[test]
fn localhost_resolves_and_falls_back_across_its_addresses() {
    // The server listens on 127.0.0.1 only; `localhost` may resolve to ::1 first.
    let server = py_echo();
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("text://localhost:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
        conn.send("hi");
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    assert_eq!(next(&rx), Got::Message(b"hi".to_vec()));
}

#[test]
fn a_server_that_never_answers_the_upgrade_times_out() {
    // Accepts, reads, never writes.
    let server = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    while await r.read(4096):
        pass
"#,
    );
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let mut c = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/")).unwrap();
        c.connect_timeout = Duration::from_millis(300);
        let conn = c.connect().unwrap();
        report(&conn, &tx);
    });
    assert!(matches!(next(&rx), Got::Connect(_)), "the TCP connection is up");
    expect_connect_fail(&rx, "handshake");
    assert!(matches!(next(&rx), Got::Close(_)));
}

#[test]
fn websocket_client_talks_to_python_websockets() {
    let server = PyServer::start(WS_ECHO);
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let mut c = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/room/7?x=1")).unwrap();
        c.headers.push(("X-Token".into(), "secret".into()));
        c.websocket_protocols = vec!["chat".into()];
        let conn = c.connect().unwrap();
        report(&conn, &tx);
        let t = tx.clone();
        conn.on_websocket_connect(move |_, resp| t.send(Got::WsConnect(resp.protocol.map(str::to_string))).unwrap());
        // Held until the 101.
        conn.send("whoami");
        conn.send_binary([0u8, 1, 2, 255]);
        conn.send("x".repeat(200_000));
        conn.send("bye");
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    assert_eq!(next(&rx), Got::WsConnect(Some("chat".into())));
    assert_eq!(next(&rx), Got::Message(b"token=secret path=/room/7?x=1 proto=chat".to_vec()));
    assert_eq!(next(&rx), Got::Message(vec![0, 1, 2, 255]));
    assert_eq!(next(&rx), Got::Message("x".repeat(200_000).into_bytes()));
    // The server closes with 4000: the close handshake completes and the connection closes.
    assert!(matches!(next(&rx), Got::Close(_)));
}

#[test]
fn reconnect_keeps_the_id_and_dials_again() {
    // Closes every connection after answering one line.
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
    let port = server.port;
    let (ring, rx) = client_ring(move |tx| {
        dial_rounds(port, &tx, "ping", Duration::from_millis(10));
    });
    let mut ids = Vec::new();
    for _ in 0..3 {
        match next(&rx) {
            Got::Connect(id) => ids.push(id),
            other => panic!("expected a connect, got {other:?}"),
        }
        assert_eq!(next(&rx), Got::Message(b"ping".to_vec()));
        assert!(matches!(next(&rx), Got::Close(_)));
    }
    assert!(ids.iter().all(|&i| i == ids[0]), "one id across reconnects: {ids:?}");
    // No fourth round: the slot is freed (a pending reconnect keeps it) and nothing came.
    wait_slot_freed(&ring, ids[0]);
    assert_eq!(rx.try_recv().ok(), None, "no fourth round");
}

fn registered_files(ring: &Running) -> u64 {
    ring.workers()[0].stats().iter().map(|s| s.registered_files.get()).sum()
}

thread_local! {
    static DIALED: std::cell::RefCell<Option<Connection>> = const { std::cell::RefCell::new(None) };
}

/// An outgoing connection joins its ring's fixed-file table once established, at its second
/// send, serves a burst from there, and leaves the table before a redial replaces its
/// socket: three rounds against a Python asyncio server that closes on `next`, each on a
/// fresh socket registered anew; after the last, no slot is left.
#[test]
fn a_registered_outgoing_connection_redials_on_a_fresh_socket() {
    let server = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    while True:
        d = await r.readline()
        if not d or d == b'next\n':
            break
        w.write(d)
        await w.drain()
    w.close()
"#,
    );
    let port = server.port;
    let (ring, rx) = client_ring(move |tx| {
        let conn = dial_rounds(port, &tx, "hello", Duration::ZERO);
        DIALED.with(|d| *d.borrow_mut() = Some(conn));
    });
    let on_ring = |f: fn(&Connection)| {
        assert!(ring.worker(0).run_on(0, move || DIALED.with(|d| f(d.borrow().as_ref().expect("dialed")))));
    };
    let mut ids = Vec::new();
    for round in 0..3 {
        match next(&rx) {
            Got::Connect(id) => ids.push(id),
            other => panic!("round {round}: expected a connect, got {other:?}"),
        }
        assert_eq!(next(&rx), Got::Message(b"hello".to_vec()), "round {round}");
        assert_eq!(registered_files(&ring), 0, "round {round}: registered before its second send");
        // The second send: 200 lines in one write, echoed in order.
        on_ring(|c| {
            let burst: String = (0..200).map(|i| format!("line {i}\n")).collect();
            c.send(burst.trim_end());
        });
        for i in 0..200 {
            assert_eq!(next(&rx), Got::Message(format!("line {i}").into_bytes()), "round {round}");
        }
        wait_until("the second send registered the socket", || registered_files(&ring) == 1);
        on_ring(|c| {
            c.send("next");
        });
        assert!(matches!(next(&rx), Got::Close(_)), "round {round}");
        wait_until("the slot cleared when the socket ended", || registered_files(&ring) == 0);
    }
    assert!(ids.iter().all(|&i| i == ids[0]), "one id across reconnects: {ids:?}");
    wait_slot_freed(&ring, ids[0]);
    assert_eq!(registered_files(&ring), 0);
}

/// A proxy worker: each accepted connection opens one upstream connection and the two are
/// piped both ways.
fn proxy(upstream: u16) -> (Running, std::net::SocketAddr) {
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(move |client, _| {
        let up = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{upstream}")).unwrap().connect().unwrap();
        assert!(client.pipe(up));
        assert!(up.pipe(*client));
        let c = *client;
        up.on_error(move |_, _| c.close(None));
    });
    start(w)
}

#[test]
fn a_piped_proxy_carries_a_burst_both_ways() {
    let server = py_echo();
    let (_proxy, addr) = proxy(server.port);
    let mut s = connect(addr);
    let body: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let body = body.clone();
        std::thread::spawn(move || w.write_all(&body).unwrap())
    };
    assert_eq!(read_exact(&mut s, body.len()), body);
    writer.join().unwrap();
}

#[test]
fn an_upstream_that_closes_mid_stream_closes_the_client_after_the_bytes() {
    let server = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    await r.read(1)
    w.write(b'z' * 300000)
    await w.drain()
    w.close()
"#,
    );
    let (_proxy, addr) = proxy(server.port);
    let mut s = connect(addr);
    s.write_all(b"go").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 300_000, "every byte before the close");
    assert!(got.iter().all(|&b| b == b'z'));
}

#[test]
fn a_failing_client_disturbs_nothing_else_on_its_ring() {
    let server = py_echo();
    let port = server.port;
    let dead = free_port();
    let (_ring, rx) = client_ring(move |tx| {
        let good = AsyncTcpConnection::new(&format!("text://127.0.0.1:{port}")).unwrap().connect().unwrap();
        report(&good, &tx);
        for _ in 0..20 {
            let bad = AsyncTcpConnection::new(&format!("text://127.0.0.1:{dead}")).unwrap().connect().unwrap();
            bad.on_error(|_, _| {});
            let bad2 = AsyncTcpConnection::new("text://no-such-host.invalid:1").unwrap().connect().unwrap();
            bad2.on_error(|_, _| {});
        }
        good.send("still here");
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    assert_eq!(next(&rx), Got::Message(b"still here".to_vec()));
}

#[test]
fn connect_off_a_ring_thread_is_refused_and_run_on_reaches_one() {
    assert!(matches!(
        AsyncTcpConnection::new("tcp://127.0.0.1:1").unwrap().connect(),
        Err(ringman::EngineError::NotOnRingThread)
    ));
    let server = py_echo();
    let port = server.port;
    let (ring, _rx) = client_ring(|_| {});
    let (tx, rx) = unbounded();
    assert!(ring.worker(0).run_on(0, move || {
        let conn = AsyncTcpConnection::new(&format!("text://127.0.0.1:{port}")).unwrap().connect().unwrap();
        let tx = tx.clone();
        conn.on_message(move |_, m| tx.send(m.data.to_vec()).unwrap());
        conn.send("from another thread");
    }));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"from another thread");
}

// ------------------------------------------------------------------ servers we did not write

/// Reads `Got::Message` chunks until `n` bytes arrived (a `tcp://` byte stream).
fn collect_bytes(rx: &Receiver<Got>, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(rx) {
            Got::Message(m) => out.extend_from_slice(&m),
            Got::Connect(_) => {}
            other => panic!("expected bytes, got {other:?} after {} of {n}", out.len()),
        }
    }
    out
}

/// A server process this project did not write, killed when dropped.
struct Daemon {
    child: std::process::Child,
    port: u16,
    dir: Option<std::path::PathBuf>,
}

impl Daemon {
    /// Runs `cmd` (told to listen on `port`) and waits until it accepts on 127.0.0.1.
    fn start(mut cmd: std::process::Command, port: u16, dir: Option<std::path::PathBuf>) -> Daemon {
        let child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e} (CI installs redis-server and nginx-light)"));
        let mut d = Daemon { child, port, dir };
        common::wait_until("the server accepts connections", || {
            assert!(d.child.try_wait().unwrap().is_none(), "{cmd:?} exited");
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn redis() -> Daemon {
    let port = common::free_port();
    let mut cmd = std::process::Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    Daemon::start(cmd, port, None)
}

/// A RESP command (array of bulk strings).
fn resp(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

#[test]
fn redis_answers_ping_and_a_pipelined_burst_in_order() {
    let server = redis();
    let port = server.port;
    let value = |i: usize| format!("value-{i}-{}", "r".repeat(i * 37 % 900));
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
        // Inline command first, then 300 SETs and 300 GETs written in one burst.
        conn.send("PING\r\n");
        for i in 0..300 {
            conn.send(resp(&["SET", &format!("ringman:{i}"), &value(i)]));
        }
        for i in 0..300 {
            conn.send(resp(&["GET", &format!("ringman:{i}")]));
        }
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    let mut want = b"+PONG\r\n".to_vec();
    want.extend(b"+OK\r\n".repeat(300));
    for i in 0..300 {
        let v = value(i);
        want.extend_from_slice(format!("${}\r\n{v}\r\n", v.len()).as_bytes());
    }
    let got = collect_bytes(&rx, want.len());
    assert!(got == want, "redis answered {:?}", String::from_utf8_lossy(&got[..got.len().min(300)]));
}

/// The nginx binary, if installed.
fn nginx_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

#[test]
fn nginx_serves_a_file_to_a_raw_http_request() {
    let Some(nginx) = nginx_binary() else {
        // A host without nginx must say so explicitly, or this fails.
        if std::env::var_os("RINGMAN_NO_NGINX").is_some_and(|v| v == "1") {
            eprintln!("RINGMAN_NO_NGINX=1: nginx test skipped");
            return;
        }
        panic!("no nginx binary: install nginx-light (scripts/test does as root), or set RINGMAN_NO_NGINX=1 to skip this test");
    };
    let port = common::free_port();
    let dir = std::env::temp_dir().join(format!("ringman-nginx-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let body: Vec<u8> = (0..200_000u32).map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize]).collect();
    std::fs::write(dir.join("www/file.txt"), &body).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         server {{ listen 127.0.0.1:{port}; root {d}/www; }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = std::process::Command::new(nginx);
    cmd.arg("-p").arg(&dir).arg("-c").arg(dir.join("nginx.conf")).arg("-e").arg(dir.join("error.log"));
    let server = Daemon::start(cmd, port, Some(dir));
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("tcp://localhost:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
        conn.send("GET /file.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    // nginx closes after the response: everything up to our on_close.
    let mut got = Vec::new();
    loop {
        match next(&rx) {
            Got::Message(m) => got.extend_from_slice(&m),
            Got::Close(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&got[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("server: nginx"), "{head}");
    assert!(got[split..] == body[..], "the body ({} bytes, expected {})", got.len() - split, body.len());
}

// ------------------------------------------------------------------ WebSocket client features

#[test]
fn websocket_client_negotiates_permessage_deflate_with_python_websockets() {
    let server = py_ws_server(
        &[],
        "echo",
        "compression='deflate', max_size=None",
        r#"
async def echo(ws):
    async for m in ws:
        if m == 'ext?':
            await ws.send(ws.response.headers.get('Sec-WebSocket-Extensions', 'none'))
        else:
            await ws.send(m)
"#,
    );
    let port = server.port;
    let big = "compressible text, ".repeat(100_000); // 1.9 MB
    let big2 = big.clone();
    let (read_tx, read_rx) = unbounded();
    let (_ring, rx) = client_ring(move |tx| {
        let mut c = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/")).unwrap();
        c.deflate = true;
        let conn = c.connect().unwrap();
        // The burst below is held until the 101: room for it.
        conn.set_max_send_buffer_size(8 << 20);
        report(&conn, &tx);
        let t = tx.clone();
        conn.on_websocket_connect(move |_, resp| {
            t.send(Got::WsConnect(resp.deflate.as_ref().map(|_| "deflate".to_string()))).unwrap();
        });
        let (t, rt) = (tx.clone(), read_tx.clone());
        conn.on_message(move |c, m| {
            t.send(Got::Message(m.data.to_vec())).unwrap();
            rt.send(c.bytes_read()).unwrap();
        });
        conn.send("ext?");
        conn.send(&big2);
        conn.send_binary(vec![0u8; 500_000]);
        conn.send("small");
    });
    match next(&rx) {
        Got::Connect(_) => {}
        other => panic!("expected the connect, got {other:?}"),
    }
    assert_eq!(next(&rx), Got::WsConnect(Some("deflate".into())), "the client's offer was accepted");
    match next(&rx) {
        Got::Message(m) => {
            let ext = String::from_utf8(m).unwrap();
            assert!(ext.starts_with("permessage-deflate"), "{ext}");
        }
        other => panic!("{other:?}"),
    }
    let _ = read_rx.recv_timeout(PATIENCE).unwrap();
    assert!(next(&rx) == Got::Message(big.clone().into_bytes()), "the 1.9 MB text came back intact");
    let _ = read_rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(next(&rx), Got::Message(vec![0u8; 500_000]));
    assert_eq!(next(&rx), Got::Message(b"small".to_vec()));
    let _ = read_rx.recv_timeout(PATIENCE).unwrap();
    let total = read_rx.recv_timeout(PATIENCE).unwrap();
    assert!(total < 200_000, "2.4 MB of echoes arrived in {total} bytes: compressed on the wire");
}

#[test]
fn websocket_client_reassembles_fragmented_server_messages() {
    let server = py_ws_server(
        &[],
        "handler",
        "compression=None",
        r#"
async def handler(ws):
    await ws.recv()
    await ws.send(['frag', 'mented ', 'text'])
    await ws.send([b'\x00\x01', b'', b'\x02\xff'])
    await ws.send([('%05d' % i) * 2000 for i in range(60)])
    await ws.send('after')
    await ws.wait_closed()
"#,
    );
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/")).unwrap().connect().unwrap();
        report(&conn, &tx);
        conn.send("go");
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    assert_eq!(next(&rx), Got::Message(b"fragmented text".to_vec()));
    assert_eq!(next(&rx), Got::Message(vec![0, 1, 2, 255]));
    let long: String = (0..60).map(|i| format!("{i:05}").repeat(2000)).collect();
    assert!(next(&rx) == Got::Message(long.into_bytes()), "60 fragments of 10 kB, one message");
    assert_eq!(next(&rx), Got::Message(b"after".to_vec()));
}

/// A minimal WebSocket server on raw asyncio: it counts the client's pings (answering each
/// with a pong), checks every client frame is masked, and after three pings sends
/// `pings=3`; it answers a close frame with a close frame and prints the code.
const RAW_WS: &str = r#"
GUID = b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11'
async def frame(r):
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack('!H', await r.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack('!Q', await r.readexactly(8))[0]
    mask = await r.readexactly(4) if b1 & 0x80 else None
    data = bytearray(await r.readexactly(n))
    if mask:
        for i in range(n):
            data[i] ^= mask[i % 4]
    return b0 & 0x0f, mask is not None, bytes(data)
def out(op, data):
    return bytes([0x80 | op, len(data)]) + data
async def handle(r, w):
    head = await r.readuntil(b'\r\n\r\n')
    key = [l.split(b':', 1)[1].strip() for l in head.split(b'\r\n') if l.lower().startswith(b'sec-websocket-key:')][0]
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    w.write(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
            b'Sec-WebSocket-Accept: ' + accept + b'\r\n\r\n')
    pings = 0
    while True:
        op, masked, data = await frame(r)
        if not masked:
            print('unmasked frame', flush=True)
            break
        if op == 9:
            pings += 1
            w.write(out(10, data))
            if pings == 3:
                w.write(out(1, b'pings=3'))
        elif op == 8:
            print('close', struct.unpack('!H', data[:2])[0], data[2:].decode(), 'after', pings, 'pings', flush=True)
            w.write(out(8, data[:2]))
            await w.drain()
            break
        await w.drain()
    w.close()
"#;

#[test]
fn websocket_client_heartbeat_pings_the_server() {
    let server = py_tcp_server(&["base64", "hashlib", "struct"], RAW_WS);
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let mut c = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/")).unwrap();
        c.websocket_ping_interval = Some(Duration::from_millis(30));
        let conn = c.connect().unwrap();
        report(&conn, &tx);
        let t = tx.clone();
        conn.on_message(move |c, m| {
            t.send(Got::Message(m.data.to_vec())).unwrap();
            c.websocket_close(1000, "enough");
        });
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    // Only the pings (answered with pongs, so no NoPong error) make the server speak.
    assert_eq!(next(&rx), Got::Message(b"pings=3".to_vec()));
    assert!(matches!(next(&rx), Got::Close(_)));
    let line = server.line();
    assert!(line.starts_with("close 1000 enough after "), "{line}");
}

#[test]
fn websocket_client_close_completes_the_handshake_with_python_websockets() {
    let server = py_ws_server(
        &[],
        "echo",
        "",
        r#"
async def echo(ws):
    async for m in ws:
        print('got', m, flush=True)
        await ws.send(m)
    print('closed', ws.close_code, ws.close_reason, flush=True)
"#,
    );
    let port = server.port;
    let (late_tx, late_rx) = unbounded::<SendStatus>();
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/")).unwrap().connect().unwrap();
        report(&conn, &tx);
        let (t, late_tx) = (tx.clone(), late_tx.clone());
        conn.on_message(move |c, m| {
            t.send(Got::Message(m.data.to_vec())).unwrap();
            c.websocket_close(1000, "bye");
            late_tx.send(c.send("late")).unwrap();
        });
        conn.send("hello");
    });
    assert!(matches!(next(&rx), Got::Connect(_)));
    assert_eq!(next(&rx), Got::Message(b"hello".to_vec()));
    // Nothing goes out after the close frame: the send is refused, and the server's next
    // report is the close, not a "late" message.
    assert_eq!(late_rx.recv_timeout(PATIENCE).unwrap(), SendStatus::Failed, "a send after the close frame");
    assert!(matches!(next(&rx), Got::Close(_)), "closed without an error");
    assert_eq!(server.line(), "got hello");
    assert_eq!(server.line(), "closed 1000 bye");
}

#[test]
fn websocket_upgrade_answered_403_is_a_connect_fail_naming_the_status() {
    let server = py_ws_server(
        &["http"],
        "handler",
        "process_request=reject",
        r#"
def reject(connection, request):
    return connection.respond(http.HTTPStatus.FORBIDDEN, 'go away\n')
async def handler(ws):
    await ws.send('should not happen')
"#,
    );
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/private")).unwrap().connect().unwrap();
        report(&conn, &tx);
        let t = tx.clone();
        conn.on_websocket_connect(move |_, _| t.send(Got::WsConnect(None)).unwrap());
        conn.send("held, never sent");
    });
    assert!(matches!(next(&rx), Got::Connect(_)), "the TCP connection is up");
    expect_connect_fail(&rx, "403");
    assert!(matches!(next(&rx), Got::Close(_)));
}

// ------------------------------------------------------------------ per-connection callbacks

#[test]
fn per_connection_callbacks_override_the_workers_on_accepted_connections() {
    #[derive(Default)]
    struct Count(usize);
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<Count>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    let t = tx.clone();
    w.on_connect(move |conn, n| {
        n.0 += 1;
        // The first connection gets its own on_message and on_close.
        if n.0 == 1 {
            conn.on_message(|c, m| {
                c.send([b"own:", m.data].concat());
            });
            let t = t.clone();
            conn.on_close(move |_| t.send("own close".into()).unwrap());
        }
    });
    w.on_message(|c, m, _| {
        c.send([b"worker:", m.data].concat());
    });
    let t = tx.clone();
    w.on_close(move |_, _| t.send("worker close".into()).unwrap());
    let (server, addr) = start(w);
    let line = |s: &mut std::net::TcpStream, msg: &str| {
        s.write_all(format!("{msg}\n").as_bytes()).unwrap();
        let mut r = std::io::BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        std::io::BufRead::read_line(&mut r, &mut l).unwrap();
        l
    };
    let mut a = connect(addr);
    assert_eq!(line(&mut a, "x"), "own:x\n");
    let mut b = connect(addr);
    assert_eq!(line(&mut b, "x"), "worker:x\n");
    assert_eq!(line(&mut a, "y"), "own:y\n");
    assert_eq!(line(&mut b, "y"), "worker:y\n");
    drop(a);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "own close");
    drop(b);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "worker close", "the worker's on_close for the other");
    // Both slots freed: every callback has run; nothing more came.
    wait_until("both connections are gone", || {
        ringman::ops::status::connections(server.workers(), PATIENCE).0.is_empty()
    });
    assert_eq!(rx.try_recv().ok(), None, "nothing more");
}

// ------------------------------------------------------------------ pipe() back-pressure

#[test]
fn pipe_back_pressure_relays_every_byte_to_a_slow_reader_in_bounded_memory() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    const TOTAL: usize = 48_000_000;
    // Sends TOTAL bytes as soon as a connection opens, then closes.
    let server = py_tcp_server(
        &[],
        &format!(
            r#"
CHUNK = bytes(i % 251 for i in range(1000000))
async def handle(r, w):
    for _ in range({}):
        w.write(CHUNK)
        await w.drain()
    w.close()
"#,
            TOTAL / 1_000_000
        ),
    );
    let upstream = server.port;
    let max_queued = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let limit = Arc::new(AtomicUsize::new(0));
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    let (mq, errs, lim) = (max_queued.clone(), errors.clone(), limit.clone());
    w.on_connect(move |client, _| {
        let up = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{upstream}")).unwrap().connect().unwrap();
        assert!(client.pipe(up));
        assert!(up.pipe(*client));
        lim.store(client.max_send_buffer_size(), Ordering::SeqCst);
        for c in [*client, up] {
            let errs = errs.clone();
            c.on_error(move |_, e| errs.lock().unwrap().push(e.to_string()));
        }
        let (c, mq) = (*client, mq.clone());
        ringman::Timer::add(Duration::from_millis(1), true, move || {
            mq.fetch_max(c.send_queue_len(), Ordering::SeqCst);
        })
        .unwrap();
    });
    let (_proxy, addr) = start(w);
    let mut s = connect(addr);
    // A small receive buffer and a reader that naps: the proxy's side to us stays full.
    common::small_receive_buffer(&s, 32 * 1024);
    let mut got = 0usize;
    let mut buf = vec![0u8; 16384];
    let mut reads = 0usize;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().enumerate().all(|(i, &b)| b == ((got + i) % 1_000_000 % 251) as u8), "bytes at {got}");
        got += n;
        reads += 1;
        if reads.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(got, TOTAL, "every byte, then the close");
    assert!(errors.lock().unwrap().is_empty(), "no SEND_FAIL or other error: {:?}", errors.lock().unwrap());
    // Bounded, though not by the limit alone: bytes still arriving between the pause and the
    // cancel of the upstream's multishot receive are buffered, then handed to the pipe at
    // once on resume (up to about a socket receive buffer). The stream is never buffered
    // whole.
    let (max, limit) = (max_queued.load(Ordering::SeqCst), limit.load(Ordering::SeqCst));
    let bound = TOTAL / 3;
    eprintln!("the proxy's send queue to the slow reader peaked at {max} bytes (limit {limit})");
    assert!(max > 0 && max <= bound, "the proxy's queue to the slow reader peaked at {max} (limit {limit})");
}

#[test]
fn a_piped_proxy_relays_megabytes_the_upstream_sent_just_before_closing() {
    // Regression: an EOF that arrived while the upstream side was paused (the client's send
    // buffer full) destroyed it at once, dropping what had been received but not yet
    // delivered to the pipe: the client got about 1.3 MB of 3 MB.
    let server = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    await r.read(1)
    w.write(bytes(i % 251 for i in range(6000000)))
    await w.drain()
    w.close()
"#,
    );
    let (_proxy, addr) = proxy(server.port);
    for _ in 0..3 {
        let mut s = connect(addr);
        // One byte: exactly what the upstream reads (unread input would make its close a reset).
        s.write_all(b"g").unwrap();
        let got = common::read_to_eof(&mut s);
        assert_eq!(got.len(), 6_000_000, "every byte the upstream sent before closing");
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
}

#[test]
fn pipe_holds_back_its_source_while_the_destination_is_still_connecting() {
    // Regression: pipe() paused its source only from `dest`'s `on_buffer_full`, which sends
    // held while `dest` was still connecting never raise: past `max_send_buffer_size` they
    // were refused (SEND_FAIL) and the bytes lost. (The proxy example lost data this way
    // whenever a client's burst arrived before the upstream was up.)
    //
    // The destination's accept queue is full for half a second, so its SYN is dropped and
    // retried after a second, while the source sends 5 MB at once.
    let sink = PyServer::start(
        r#"
import socket, time
N = 5000000
want = bytes(i % 251 for i in range(N))
l = socket.socket()
l.bind(('127.0.0.1', 0))
l.listen(0)
filler = socket.create_connection(l.getsockname())
print(l.getsockname()[1], flush=True)
time.sleep(0.5)
f, _ = l.accept()
f.close()
filler.close()
c, _ = l.accept()
n, ok = 0, True
while d := c.recv(65536):
    ok = ok and d == want[n:n + len(d)]
    n += len(d)
print('got', n, ok, flush=True)
"#,
    );
    let source = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    w.write(bytes(i % 251 for i in range(5000000)))
    await w.drain()
    w.close()
"#,
    );
    let (src_port, dest_port) = (source.port, sink.port);
    let (_ring, rx) = client_ring(move |tx| {
        let dest = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{dest_port}")).unwrap().connect().unwrap();
        let src = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{src_port}")).unwrap().connect().unwrap();
        assert!(src.pipe(dest));
        for c in [src, dest] {
            let t = tx.clone();
            c.on_error(move |_, e: &ConnError| t.send(Got::Error(e.code(), e.to_string())).unwrap());
        }
        let t = tx.clone();
        dest.on_close(move |c| t.send(Got::Close(c.id().as_u64())).unwrap());
    });
    match next(&rx) {
        Got::Close(_) => {}
        other => panic!("expected the destination's close after flushing, got {other:?}"),
    }
    assert_eq!(sink.line(), "got 5000000 True", "every byte, in order, then the close");
}

/// A proxy's two directions flow independently: an upstream that writes a large answer
/// (far beyond every socket buffer) before it reads anything of the client's equally large
/// request gets both through, while the proxy's queue toward it sits at its limit.
#[test]
fn a_pipe_does_not_couple_its_two_directions() {
    const N: usize = 64 << 20;
    // A blocking server: it reads nothing at all until its whole answer is written.
    let server = PyServer::start(&format!(
        r#"
import socket, threading
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
def serve(c):
    c.sendall(b'u' * {N})
    got = 0
    while got < {N}:
        d = c.recv(1 << 20)
        if not d:
            break
        got += len(d)
    c.sendall(b'got %d' % got)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#
    ));
    let (_proxy, addr) = proxy(server.port);
    let mut s = connect(addr);
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&vec![b'c'; N]).unwrap())
    };
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), N + format!("got {N}").len(), "answer, then the count");
    assert!(got[..N].iter().all(|&b| b == b'u'));
    assert_eq!(&got[N..], format!("got {N}").as_bytes());
}

/// A callback that installs the connection's own `on_message` takes effect from the next
/// message of the same read on: a line protocol that switches to `pipe()` (or any handler)
/// after its first line must not lose the lines that arrived with it to the old handler.
#[test]
fn an_on_message_installed_mid_batch_gets_the_rest_of_the_batch() {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    let t = tx.clone();
    w.on_message(move |c, m, _| {
        t.send(format!("worker:{}", String::from_utf8_lossy(m.data))).unwrap();
        let t = t.clone();
        c.on_message(move |_, m| t.send(format!("own:{}", String::from_utf8_lossy(m.data))).unwrap());
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    // One write, one read on the server: three lines in a single batch.
    s.write_all(b"a\nb\nc\n").unwrap();
    let got: Vec<String> = (0..3).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    assert_eq!(got, ["worker:a", "own:b", "own:c"]);
}

/// A panicking `on_close` that first asked for a reconnect: the connection is closed
/// already, so the panic is only logged — the renewed attempt (same id) goes on, and fails
/// again on the refused port with its own CONNECT_FAIL, not with `ConnError::Panic`.
#[test]
fn a_panicking_on_close_does_not_destroy_the_reconnect_it_asked_for() {
    let port = free_port();
    let (ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
        let t = tx.clone();
        let rounds = std::rc::Rc::new(std::cell::Cell::new(0));
        conn.on_close(move |c| {
            t.send(Got::Close(c.id().as_u64())).unwrap();
            rounds.set(rounds.get() + 1);
            if rounds.get() < 2 {
                c.reconnect(Duration::from_millis(10));
            }
            panic!("on_close fails after asking for a reconnect");
        });
    });
    let mut id = 0;
    for _ in 0..2 {
        expect_connect_fail(&rx, "refused");
        let Got::Close(i) = next(&rx) else { panic!("expected the close") };
        id = i;
    }
    wait_slot_freed(&ring, id);
    assert_eq!(rx.try_recv().ok(), None, "nothing after the second close");
}

// ------------------------------------------------------------------ reconnect, public API

/// A server that answers one line and closes: every connection ends on its own.
fn one_line_server() -> PyServer {
    py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    d = await r.readline()
    w.write(d)
    await w.drain()
    w.close()
"#,
    )
}

/// README: `reconnect(after)` keeps the id, the callbacks and the context. The context is
/// set on the first connection only; after two reconnects it is still there, updated.
#[test]
fn reconnect_keeps_the_context() {
    let server = one_line_server();
    let port = server.port;
    let (ctx_tx, ctx_rx) = unbounded::<Option<u32>>();
    let (ring, rx) = client_ring(move |tx| {
        let conn = dial_reported(port, &tx);
        conn.set_context(0u32);
        let (t, ctx_tx) = (tx.clone(), ctx_tx.clone());
        conn.on_connect(move |c| {
            t.send(Got::Connect(c.id().as_u64())).unwrap();
            // The count of connects so far, kept in the context across reconnects.
            ctx_tx
                .send(c.with_context(|n: &mut u32| {
                    *n += 1;
                    *n
                }))
                .unwrap();
            c.send("ping");
        });
        let t = tx.clone();
        conn.on_close(move |c| {
            t.send(Got::Close(c.id().as_u64())).unwrap();
            if c.with_context(|n: &mut u32| *n) < Some(3) {
                assert!(c.reconnect(Duration::ZERO));
            }
        });
    });
    let mut id = None;
    for round in 1..=3 {
        let Got::Connect(i) = next(&rx) else { panic!("expected a connect") };
        assert_eq!(*id.get_or_insert(i), i, "the same id");
        assert_eq!(ctx_rx.recv_timeout(PATIENCE).unwrap(), Some(round), "the context after {round} connect(s)");
        assert_eq!(next(&rx), Got::Message(b"ping".to_vec()));
        assert_eq!(next(&rx), Got::Close(i));
    }
    wait_slot_freed(&ring, id.unwrap());
    assert_eq!(rx.try_recv().ok(), None, "no fourth round");
}

/// README: `cancel_reconnect()` gives up a pending reconnect: the slot is freed, the id
/// names nothing, and no dial happens.
#[test]
fn cancel_reconnect_gives_up_the_pending_attempt() {
    let server = silent_server();
    let port = server.port;
    let (ring, rx) = client_ring(move |tx| {
        waiting_for_redial(port, &tx, |a| a.cancel_reconnect());
    });
    let Got::Connect(id) = next(&rx) else { panic!("expected a connect") };
    assert_eq!(next(&rx), Got::Close(id));
    // An hour-long delay would keep the slot; the cancel frees it.
    wait_slot_freed(&ring, id);
    assert_eq!(rx.try_recv().ok(), None, "nothing after the cancel");
}

/// A server that accepts and reads but never writes: a `ws://` client there waits for its
/// `101` until its connect timeout.
fn silent_server() -> PyServer {
    py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    while await r.read(4096):
        pass
"#,
    )
}

/// Opens a `tcp://` connection to `port` that, once up the first time, asks to reconnect in
/// an hour; once the renewed attempt waits for that delay, `during_delay` runs (from a
/// timer). Reports Connect/Close/Error on `tx`.
fn waiting_for_redial(port: u16, tx: &Sender<Got>, during_delay: impl Fn(Connection) + Clone + 'static) -> Connection {
    let a = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{port}")).unwrap().connect().unwrap();
    let t = tx.clone();
    let connects = std::rc::Rc::new(std::cell::Cell::new(0));
    a.on_connect(move |c| {
        t.send(Got::Connect(c.id().as_u64())).unwrap();
        connects.set(connects.get() + 1);
        if connects.get() == 1 {
            assert!(c.reconnect(Duration::from_secs(3600)));
        }
    });
    let t = tx.clone();
    let closes = std::rc::Rc::new(std::cell::Cell::new(0));
    a.on_close(move |c| {
        t.send(Got::Close(c.id().as_u64())).unwrap();
        closes.set(closes.get() + 1);
        if closes.get() == 1 {
            // The slot is renewed once the old socket's last completion came: then it has no
            // peer address any more (the closed one kept its own).
            let (c, f) = (*c, during_delay.clone());
            let timer = std::rc::Rc::new(std::cell::Cell::new(None));
            let me = timer.clone();
            let id = ringman::Timer::add(Duration::from_millis(1), true, move || {
                if c.remote_addr().is_none() {
                    ringman::Timer::del(me.get().expect("timer id"));
                    f(c);
                }
            });
            timer.set(Some(id.unwrap()));
        }
    });
    let t = tx.clone();
    a.on_error(move |_, e: &ConnError| t.send(Got::Error(e.code(), e.to_string())).unwrap());
    a
}

/// Closing a connection while it waits for its reconnect delay, then cancelling the
/// reconnect: the attempt ends once (one more `on_close`), and the ring's counters stay
/// right — another connection's deadline (a `ws://` upgrade that is never answered) is still
/// enforced afterwards.
#[test]
fn closing_during_a_reconnect_delay_then_cancelling_keeps_other_deadlines() {
    let server = silent_server();
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let t = tx.clone();
        waiting_for_redial(port, &tx, move |a| {
            a.close(None);
            a.cancel_reconnect();
            let t = t.clone();
            // On a later turn, as an unrelated piece of the application would.
            ringman::Timer::add(Duration::ZERO, false, move || {
                let mut b = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/")).unwrap();
                b.connect_timeout = Duration::from_millis(300);
                report(&b.connect().unwrap(), &t);
            })
            .unwrap();
        });
    });
    let Got::Connect(a) = next(&rx) else { panic!("expected the first connect") };
    assert_eq!(next(&rx), Got::Close(a), "the reconnect's close");
    assert_eq!(next(&rx), Got::Close(a), "the waiting attempt, closed");
    let Got::Connect(b) = next(&rx) else { panic!("expected the ws client's TCP connect") };
    assert_ne!(a, b);
    expect_connect_fail(&rx, "handshake");
    assert_eq!(next(&rx), Got::Close(b));
}

/// `reconnect()` asked again after a close during the delay is honoured: the connection
/// dials again (same id) once that close's `on_close` ran.
#[test]
fn a_reconnect_after_a_close_during_the_delay_dials_again() {
    let server = silent_server();
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        waiting_for_redial(port, &tx, |a| {
            a.close(None);
            assert!(a.reconnect(Duration::ZERO));
        });
    });
    let Got::Connect(a) = next(&rx) else { panic!("expected the first connect") };
    assert_eq!(next(&rx), Got::Close(a));
    assert_eq!(next(&rx), Got::Close(a), "the waiting attempt, closed");
    assert_eq!(next(&rx), Got::Connect(a), "dialled again after the close");
}

/// `cancel_reconnect()` from a thread other than the connection's takes effect there: the
/// connection waiting for its delay is given up (a send to it fails instead of being held).
#[test]
fn cancel_reconnect_from_another_thread_gives_the_delay_up() {
    let server = silent_server();
    let port = server.port;
    let (ring, rx) = client_ring(move |tx| {
        let t = tx.clone();
        waiting_for_redial(port, &tx, move |_| t.send(Got::Message(b"waiting".to_vec())).unwrap());
    });
    let Got::Connect(a) = next(&rx) else { panic!("expected the first connect") };
    assert_eq!(next(&rx), Got::Close(a));
    assert_eq!(next(&rx), Got::Message(b"waiting".to_vec()));
    let conn = Connection::from_id(ringman::ConnectionId::from_u64(a));
    // Whether a send is held (the renewed attempt waits) or refused (it is gone), asked on
    // the ring after everything posted before.
    let probe = |conn: Connection| {
        let (tx, rx) = unbounded();
        assert!(ring.worker(0).run_on(0, move || tx.send(conn.send("x")).unwrap()));
        rx.recv_timeout(PATIENCE).expect("the ring answers")
    };
    assert_eq!(probe(conn), ringman::SendStatus::Queued, "held for the renewed attempt");
    conn.cancel_reconnect();
    assert_eq!(probe(conn), ringman::SendStatus::Failed, "the waiting attempt is gone");
}

/// A worker that also holds an outgoing connection (to a server the test plays): a
/// broadcast reaches only the accepted connections, the worker's connection gauge counts only
/// them, and the messages the outgoing connection receives do not count as requests (so
/// they do not run `max_requests` down).
#[test]
fn broadcast_gauges_and_max_requests_cover_only_accepted_connections() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_port = upstream.local_addr().unwrap().port();
    let (tx, rx) = unbounded();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_requests = Some(3);
    w.on_message(|c, m, _| {
        c.send(m.data);
    });
    w.on_worker_start(move |_, _| {
        let up = AsyncTcpConnection::new(&format!("text://127.0.0.1:{up_port}")).unwrap().connect().unwrap();
        let t = tx.clone();
        up.on_connect(move |c| t.send(Got::Connect(c.id().as_u64())).unwrap());
        let t = tx.clone();
        up.on_message(move |_, m| t.send(Got::Message(m.data.to_vec())).unwrap());
    });
    let (srv, addr) = start(w);
    let (mut up, _) = upstream.accept().unwrap();
    up.set_read_timeout(Some(PATIENCE)).unwrap();
    let Got::Connect(up_id) = next(&rx) else { panic!("expected the outgoing connection up") };
    let up_conn = Connection::from_id(ringman::ConnectionId::from_u64(up_id));
    let mut client = connect(addr);
    client.write_all(b"hi\n").unwrap();
    assert_eq!(read_exact(&mut client, 3), b"hi\n");
    let handle = srv.worker(0).clone();
    assert_eq!(handle.stats()[0].connections.get(), 1, "the accepted connection only");

    handle.broadcast("all");
    assert_eq!(read_exact(&mut client, 4), b"all\n");
    // Posted after the broadcast, so on the upstream socket it comes after anything the
    // broadcast put there.
    assert!(handle.run_on(0, move || {
        up_conn.send("marker");
    }));
    let mut line = Vec::new();
    let mut byte = [0u8];
    while byte[0] != b'\n' {
        up.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    assert_eq!(line, b"marker\n", "the broadcast reached the outgoing connection");

    // More replies on the outgoing connection than `max_requests`.
    up.write_all(b"1\n2\n3\n4\n5\n").unwrap();
    for i in 1..=5 {
        assert_eq!(next(&rx), Got::Message(i.to_string().into_bytes()));
    }
    // Read on the ring, after the batch that delivered them was counted.
    let (ctx, crx) = unbounded();
    let stats = handle.stats()[0].clone();
    assert!(handle.run_on(0, move || ctx.send((stats.requests.get(), stats.restarts.get())).unwrap()));
    assert_eq!(crx.recv_timeout(PATIENCE).unwrap(), (1, 0), "(requests, restarts)");
    client.write_all(b"still\n").unwrap();
    assert_eq!(read_exact(&mut client, 6), b"still\n", "not recycled");
}

/// Sends held while a `ws://` client waits for its 101 fill its send buffer as Workerman's
/// do: `on_buffer_full` fires while connecting, a send at the limit is refused (SEND_FAIL),
/// and the held messages still go out after the upgrade (the upgrade request's own send
/// completing does not end the full state), followed by `on_buffer_drain`.
#[test]
fn held_sends_fire_on_buffer_full_while_connecting_and_drain_after_the_upgrade() {
    let server = PyServer::start(WS_ECHO);
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let mut c = AsyncTcpConnection::new(&format!("ws://127.0.0.1:{port}/")).unwrap();
        c.websocket_protocols = vec!["chat".into()];
        let conn = c.connect().unwrap();
        report(&conn, &tx);
        let t = tx.clone();
        conn.on_buffer_full(move |_| t.send(Got::BufferFull).unwrap());
        let t = tx.clone();
        conn.on_buffer_drain(move |_| t.send(Got::BufferDrain).unwrap());
        conn.set_max_send_buffer_size(1000);
        assert!(conn.send("a".repeat(600)).is_ok());
        assert!(conn.send("b".repeat(600)).is_ok(), "below the limit before it: taken");
        assert!(!conn.send("c").is_ok(), "at the limit: refused");
    });
    assert_eq!(next(&rx), Got::BufferFull, "on_buffer_full while connecting");
    assert!(matches!(next(&rx), Got::Error(2, _)), "SEND_FAIL for the refused send");
    assert!(matches!(next(&rx), Got::Connect(_)));
    let mut rest: Vec<Got> = (0..3).map(|_| next(&rx)).collect();
    // The drain (our bytes taken by the kernel) and the echoes come in either order.
    let drain = rest.iter().position(|g| *g == Got::BufferDrain).expect("on_buffer_drain");
    rest.remove(drain);
    assert_eq!(rest, [Got::Message("a".repeat(600).into_bytes()), Got::Message("b".repeat(600).into_bytes())]);
}

/// A `ws://` path carrying CR/LF would inject header fields into the upgrade request: such a
/// URL is refused up front with a clear error.
#[test]
fn a_ws_path_with_crlf_is_refused() {
    let err = AsyncTcpConnection::new("ws://127.0.0.1:9/chat\r\nX-Injected: yes").unwrap_err();
    assert!(matches!(err, ringman::EngineError::BadAddress { .. }), "{err:?}");
    assert!(err.to_string().contains("control characters"), "{err}");
}

/// Opens the stalled-name gate (and removes the resolver hook) when dropped, so the
/// resolver threads are released even when the test fails.
struct Gate(std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>);

impl Drop for Gate {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
        ringman::set_resolver_hook_for_test("stalled", None);
    }
}

/// A name whose DNS server never answers (the resolver hook blocks on it), with a client
/// that keeps timing out and reconnecting at once: the name is looked up once, not once per
/// attempt, and a lookup of `localhost` meanwhile is not held up behind it.
#[test]
fn a_stalled_name_with_a_reconnect_loop_does_not_delay_other_lookups() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    let gate = Gate(Arc::new((Mutex::new(false), Condvar::new())));
    let asked = Arc::new(AtomicUsize::new(0));
    let (g, n) = (gate.0.clone(), asked.clone());
    ringman::set_resolver_hook_for_test(
        "stalled",
        Some(Arc::new(move |host: &str, _port: u16| {
            if host != "stalled.invalid" {
                return None;
            }
            n.fetch_add(1, Ordering::SeqCst);
            let mut open = g.0.lock().unwrap();
            while !*open {
                open = g.1.wait(open).unwrap();
            }
            Some(Err("released".to_string()))
        })),
    );
    let server = py_echo();
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let mut a = AsyncTcpConnection::new("tcp://stalled.invalid:9").unwrap();
        a.connect_timeout = Duration::from_millis(50);
        let a = a.connect().unwrap();
        let t = tx.clone();
        let closes = std::rc::Rc::new(std::cell::Cell::new(0));
        a.on_close(move |c| {
            closes.set(closes.get() + 1);
            t.send(Got::Close(c.id().as_u64())).unwrap();
            if closes.get() < 5 {
                c.reconnect(Duration::ZERO);
                return;
            }
            // Five attempts have asked for the stalled name: now another name.
            let b = AsyncTcpConnection::new(&format!("text://localhost:{port}")).unwrap();
            let b = b.connect().unwrap();
            report(&b, &t);
            b.send("hi");
        });
    });
    for _ in 0..5 {
        assert!(matches!(next(&rx), Got::Close(_)), "an attempt on the stalled name timed out");
    }
    assert!(matches!(next(&rx), Got::Connect(_)), "localhost resolved meanwhile");
    assert_eq!(next(&rx), Got::Message(b"hi".to_vec()));
    assert_eq!(asked.load(Ordering::SeqCst), 1, "one lookup of the stalled name for all its attempts");
    drop(gate);
}

/// A name that does not resolve is remembered for a short while: a reconnect right after
/// the failure fails the same way without asking the resolver again.
#[test]
fn a_failed_name_is_cached_briefly() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let asked = Arc::new(AtomicUsize::new(0));
    let n = asked.clone();
    ringman::set_resolver_hook_for_test(
        "missing",
        Some(Arc::new(move |host: &str, _port: u16| {
            (host == "missing.invalid").then(|| {
                n.fetch_add(1, Ordering::SeqCst);
                Err("no such name".to_string())
            })
        })),
    );
    let (_ring, rx) = client_ring(|tx| {
        let conn = AsyncTcpConnection::new("tcp://missing.invalid:80").unwrap().connect().unwrap();
        report(&conn, &tx);
        let t = tx.clone();
        let rounds = std::rc::Rc::new(std::cell::Cell::new(0));
        conn.on_close(move |c| {
            t.send(Got::Close(c.id().as_u64())).unwrap();
            rounds.set(rounds.get() + 1);
            if rounds.get() < 2 {
                c.reconnect(Duration::ZERO);
            }
        });
    });
    for _ in 0..2 {
        expect_connect_fail(&rx, "no such name");
        assert!(matches!(next(&rx), Got::Close(_)));
    }
    assert_eq!(asked.load(Ordering::SeqCst), 1, "the second attempt used the cached failure");
    ringman::set_resolver_hook_for_test("missing", None);
}

/// A connection that was a pipe's destination gets its own `on_buffer_drain` events once
/// the application installs one (the pipe's muting of them ends with the pipe's callback).
#[test]
fn a_former_pipe_destination_gets_its_own_drain_events() {
    let echo = py_echo();
    let silent = silent_server();
    let (e, s) = (echo.port, silent.port);
    let (_ring, rx) = client_ring(move |tx| {
        let src = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{s}")).unwrap().connect().unwrap();
        let dest = AsyncTcpConnection::new(&format!("text://127.0.0.1:{e}")).unwrap().connect().unwrap();
        assert!(src.pipe(dest));
        // The application takes `dest` back.
        let t = tx.clone();
        dest.on_buffer_drain(move |_| t.send(Got::BufferDrain).unwrap());
        let t = tx.clone();
        dest.on_message(move |_, m| t.send(Got::Message(m.data.to_vec())).unwrap());
        dest.send("hello");
    });
    let mut got = vec![next(&rx), next(&rx)];
    got.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(got, [Got::BufferDrain, Got::Message(b"hello".to_vec())]);
}

/// An `on_buffer_drain` that sends again, where that send drains at once (it reaches the
/// limit, so it is offered to the kernel inside the callback and taken whole): the drain
/// it is owed still comes.
#[test]
fn a_send_draining_inside_on_buffer_drain_still_gets_its_drain_event() {
    let echo = py_echo();
    let port = echo.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("text://127.0.0.1:{port}")).unwrap().connect().unwrap();
        conn.set_max_send_buffer_size(8);
        let t = tx.clone();
        let drains = std::rc::Rc::new(std::cell::Cell::new(0));
        conn.on_buffer_drain(move |c| {
            t.send(Got::BufferDrain).unwrap();
            drains.set(drains.get() + 1);
            if drains.get() == 1 {
                // 17 bytes against a limit of 8: queued, then offered at once.
                assert_eq!(c.send("0123456789abcdef"), ringman::SendStatus::Queued);
            }
        });
        conn.send("hello");
    });
    let mut drains = 0;
    while drains < 2 {
        if next(&rx) == Got::BufferDrain {
            drains += 1;
        }
    }
}
