//! Outgoing connections (`AsyncTcpConnection`) against servers this project did not write:
//! Python asyncio and `websockets` servers, plus refused ports, unknown names, a server
//! that never answers the upgrade, reconnects, and `pipe()` in a proxy.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};
use ringman::{AsyncTcpConnection, ConnError, Connection, Running, Server, Worker};

use common::{connect, read_exact, start, PyServer, PATIENCE};

const ECHO: &str = r#"
import asyncio
async def handle(r, w):
    while True:
        d = await r.read(65536)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
"#;

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

fn next(rx: &Receiver<Got>) -> Got {
    rx.recv_timeout(PATIENCE).expect("an event from the client ring")
}

#[test]
fn sends_made_before_the_connection_is_up_arrive_in_order() {
    let server = PyServer::start(ECHO);
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("text://127.0.0.1:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
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
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("tcp://127.0.0.1:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
        conn.send("lost");
    });
    match next(&rx) {
        Got::Error(1, msg) => assert!(msg.contains("refused"), "{msg}"),
        other => panic!("expected CONNECT_FAIL, got {other:?}"),
    }
    assert!(matches!(next(&rx), Got::Close(_)));
}

#[test]
fn an_unknown_name_reports_name_not_found() {
    let (_ring, rx) = client_ring(|tx| {
        let conn = AsyncTcpConnection::new("tcp://no-such-host.invalid:80").unwrap().connect().unwrap();
        report(&conn, &tx);
    });
    match next(&rx) {
        Got::Error(1, msg) => assert!(msg.contains("not found"), "{msg}"),
        other => panic!("expected CONNECT_FAIL, got {other:?}"),
    }
    assert!(matches!(next(&rx), Got::Close(_)));
}

#[test]
fn localhost_resolves_and_falls_back_across_its_addresses() {
    // The server listens on 127.0.0.1 only; `localhost` may resolve to ::1 first.
    let server = PyServer::start(ECHO);
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
    let server = PyServer::start(
        r#"
import asyncio
async def handle(r, w):
    while await r.read(4096):
        pass
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
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
    match next(&rx) {
        Got::Error(1, msg) => assert!(msg.contains("handshake"), "{msg}"),
        other => panic!("expected CONNECT_FAIL, got {other:?}"),
    }
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
    let server = PyServer::start(
        r#"
import asyncio
async def handle(r, w):
    d = await r.readline()
    w.write(d)
    await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
"#,
    );
    let port = server.port;
    let (_ring, rx) = client_ring(move |tx| {
        let conn = AsyncTcpConnection::new(&format!("text://127.0.0.1:{port}")).unwrap().connect().unwrap();
        report(&conn, &tx);
        let rounds = std::rc::Rc::new(std::cell::Cell::new(0));
        let t = tx.clone();
        conn.on_connect(move |c| {
            t.send(Got::Connect(c.id().as_u64())).unwrap();
            c.send("ping");
        });
        let t = tx.clone();
        conn.on_close(move |c| {
            t.send(Got::Close(c.id().as_u64())).unwrap();
            rounds.set(rounds.get() + 1);
            if rounds.get() < 3 {
                assert!(c.reconnect(Duration::from_millis(10)));
            }
        });
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
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "no fourth round");
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
    let server = PyServer::start(ECHO);
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
    let server = PyServer::start(
        r#"
import asyncio
async def handle(r, w):
    await r.read(1)
    w.write(b'z' * 300000)
    await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
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
    let server = PyServer::start(ECHO);
    let port = server.port;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
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
    let server = PyServer::start(ECHO);
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

#[test]
fn a_piped_proxy_relays_megabytes_the_upstream_sent_just_before_closing() {
    // Regression: an EOF that arrived while the upstream side was paused (the client's send
    // buffer full) destroyed it at once, dropping what had been received but not yet
    // delivered to the pipe: the client got about 1.3 MB of 3 MB.
    let server = PyServer::start(
        r#"
import asyncio
async def handle(r, w):
    await r.read(1)
    w.write(bytes(i % 251 for i in range(6000000)))
    await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, '127.0.0.1', 0)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
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

// ------------------------------------------------------------------ WebSocket client features

#[test]
fn websocket_upgrade_answered_403_is_a_connect_fail_naming_the_status() {
    let server = PyServer::start(
        r#"
import asyncio, http
from websockets.asyncio.server import serve
def reject(connection, request):
    return connection.respond(http.HTTPStatus.FORBIDDEN, 'go away\n')
async def handler(ws):
    await ws.send('should not happen')
async def main():
    async with serve(handler, '127.0.0.1', 0, process_request=reject) as s:
        print(list(s.sockets)[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()
asyncio.run(main())
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
    match next(&rx) {
        Got::Error(1, msg) => assert!(msg.contains("403"), "{msg}"),
        other => panic!("expected CONNECT_FAIL, got {other:?}"),
    }
    assert!(matches!(next(&rx), Got::Close(_)));
}

#[test]
fn websocket_client_negotiates_permessage_deflate_with_python_websockets() {
    let server = PyServer::start(
        r#"
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        if m == 'ext?':
            await ws.send(ws.response.headers.get('Sec-WebSocket-Extensions', 'none'))
        else:
            await ws.send(m)
async def main():
    async with serve(echo, '127.0.0.1', 0, compression='deflate', max_size=None) as s:
        print(list(s.sockets)[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()
asyncio.run(main())
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
