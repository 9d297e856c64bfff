//! WebSocket with a real client (tungstenite) and, when installed, the Autobahn suite.

mod common;

use std::net::SocketAddr;

use common::*;
use crossbeam_channel::unbounded;
use ringman::protocols::MessageKind;
use ringman::{Running, Worker, WsDecision};
use tungstenite::{client::IntoClientRequest, Message};

fn ws_echo(max: usize) -> (Running, SocketAddr) {
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 2;
    w.max_package_size = max;
    w.on_message(|c, m, _| {
        c.send_as(m.data, m.kind);
    });
    start(w)
}

fn client(addr: SocketAddr, path: &str) -> tungstenite::WebSocket<std::net::TcpStream> {
    let s = connect(addr);
    let (ws, resp) = tungstenite::client(format!("ws://{addr}{path}"), s).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

#[test]
fn echo_keeps_text_and_binary_types() {
    let (_srv, addr) = ws_echo(1 << 20);
    let mut ws = client(addr, "/");
    ws.send(Message::text("héllo")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    let big = "x".repeat(200_000);
    ws.send(Message::text(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(big));
    ws.send(Message::Ping(b"p".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"p".to_vec().into()));
    ws.close(None).unwrap();
    // The server echoes the close and closes.
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
}

#[test]
fn connect_callback_sees_request_and_can_reject_or_pick_subprotocol() {
    let (tx, rx) = unbounded::<(String, Option<String>)>();
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_websocket_connect(move |_, req, _| {
        tx.send((req.path.to_string(), req.origin.map(str::to_string))).unwrap();
        if req.path.starts_with("/private") {
            WsDecision::Reject(403)
        } else {
            WsDecision::Accept(ringman::protocols::ws::Accept {
                subprotocol: req.protocols.iter().find(|p| **p == "chat").map(|p| p.to_string()),
                ..Default::default()
            })
        }
    });
    let (ctx, crx) = unbounded::<&'static str>();
    w.on_websocket_connected(move |_, _| ctx.send("connected").unwrap());
    w.on_message(|c, m, _| {
        c.send_as(m.data, m.kind);
    });
    let (_srv, addr) = start(w);
    let mut req = format!("ws://{addr}/room?id=7").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "other, chat".parse().unwrap());
    req.headers_mut().insert("Origin", "http://example.com".parse().unwrap());
    let (mut ws, resp) = tungstenite::client(req, connect(addr)).unwrap();
    assert_eq!(resp.headers().get("Sec-WebSocket-Protocol").unwrap(), "chat");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), ("/room?id=7".into(), Some("http://example.com".into())));
    assert_eq!(crx.recv_timeout(PATIENCE).unwrap(), "connected");
    ws.send(Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hi"));
    let err = tungstenite::client(format!("ws://{addr}/private"), connect(addr)).unwrap_err();
    match err {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        e => panic!("expected 403, got {e:?}"),
    }
}

#[test]
fn bad_handshakes_get_http_errors() {
    let (_srv, addr) = ws_echo(1 << 20);
    let cases: [(&str, &str); 3] = [
        ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n", "426"),
        ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "400"),
        ("POST / HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
    ];
    for (req, status) in cases {
        let mut s = connect(addr);
        write_all(&mut s, req.as_bytes());
        let resp = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
    }
}

#[test]
fn oversized_message_closes_with_1009_and_others_continue() {
    let (_srv, addr) = ws_echo(1024);
    let mut good = client(addr, "/");
    let mut bad = client(addr, "/");
    bad.send(Message::binary(vec![1u8; 4096])).unwrap();
    match bad.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    good.send(Message::text("fine")).unwrap();
    assert_eq!(good.read().unwrap(), Message::text("fine"));
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let (_srv, addr) = ws_echo(1 << 20);
    let mut s = connect(addr);
    write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    // A masked text frame (mask 0) carrying 0xff.
    write_all(&mut s, &[0x81, 0x81, 0, 0, 0, 0, 0xff]);
    let all = read_to_eof(&mut s);
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&all[at..at + 4], &[0x88, 0x02, 0x03, 0xef], "close frame with 1007");
}

#[test]
fn kinds_are_explicit_on_send() {
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_message(|c, m, _| {
        c.send_binary(m.data);
        c.send_text(m.data);
        c.set_default_kind(MessageKind::Binary);
        c.send(m.data);
    });
    let (_srv, addr) = start(w);
    let mut ws = client(addr, "/");
    ws.send(Message::text("k")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(b"k".to_vec()));
    assert_eq!(ws.read().unwrap(), Message::text("k"));
    assert_eq!(ws.read().unwrap(), Message::binary(b"k".to_vec()));
}

/// A worker that reports WebSocket control events and starts heartbeats and closes on
/// command: `"ping me"` makes it ping, `"bye"` starts the closing handshake (and then tries
/// to send once more, which must not reach the wire).
fn control_worker(close_timeout: std::time::Duration) -> (Running, SocketAddr, crossbeam_channel::Receiver<String>) {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    w.close_timeout = close_timeout;
    let t = tx.clone();
    w.on_websocket_ping(move |c, p, _| {
        t.send(format!("ping {}", String::from_utf8_lossy(p))).unwrap();
        c.send_as([b"re:", p].concat(), MessageKind::Pong);
    });
    let t = tx.clone();
    w.on_websocket_pong(move |_, p, _| t.send(format!("pong {}", String::from_utf8_lossy(p))).unwrap());
    let t = tx.clone();
    w.on_websocket_close(move |_, code, reason, _| t.send(format!("peer close {code:?} {reason}")).unwrap());
    w.on_close(move |_, _| tx.send("closed".into()).unwrap());
    w.on_message(|c, m, _| match m.data {
        b"ping me" => {
            c.send_as("hb", MessageKind::Ping);
        }
        b"bye" => {
            c.websocket_close(4000, "bye now");
            c.send_text("must not be sent");
        }
        _ => {
            c.send_as(m.data, m.kind);
        }
    });
    let (srv, addr) = start(w);
    (srv, addr, rx)
}

#[test]
fn ping_and_pong_callbacks_replace_the_automatic_pong() {
    let (_srv, addr, events) = control_worker(std::time::Duration::from_secs(5));
    let mut ws = client(addr, "/");
    ws.send(Message::Ping(b"p1".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"re:p1".to_vec().into()));
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "ping p1");
    // A server heartbeat: tungstenite answers it with a pong on its next write.
    ws.send(Message::text("ping me")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Ping(b"hb".to_vec().into()));
    ws.send(Message::text("echo")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("echo"));
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "pong hb");
    // The peer's close reaches on_websocket_close and is still echoed.
    ws.close(Some(tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "done".into() })).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1000),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "peer close Some(1000) done");
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "closed");
}

#[test]
fn server_initiated_close_waits_for_the_peer() {
    let (_srv, addr, events) = control_worker(std::time::Duration::from_secs(5));
    let mut ws = client(addr, "/");
    ws.send(Message::text("bye")).unwrap();
    // Our close frame arrives, and nothing after it; tungstenite answers it, the server
    // then closes the TCP connection.
    match ws.read() {
        Ok(Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 4000);
            assert_eq!(f.reason.as_str(), "bye now");
        }
        other => panic!("expected our close frame, got {other:?}"),
    }
    match ws.read() {
        Ok(other) => panic!("nothing may follow the close frame: {other:?}"),
        Err(tungstenite::Error::ConnectionClosed) => {}
        Err(e) => panic!("expected a clean close, got {e:?}"),
    }
    // The peer's answer is reported, not echoed back.
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "peer close Some(4000) bye now");
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "closed");
}

#[test]
fn server_initiated_close_cuts_off_a_silent_peer() {
    let (_srv, addr, events) = control_worker(std::time::Duration::from_millis(300));
    let ws = client(addr, "/");
    let mut s = ws.into_inner();
    // A masked text frame "bye" (mask 0), then silence: the close is never answered.
    write_all(&mut s, &[0x81, 0x83, 0, 0, 0, 0, b'b', b'y', b'e']);
    let all = read_to_eof(&mut s);
    let mut expect = vec![0x88, 9, 0x0f, 0xa0];
    expect.extend_from_slice(b"bye now");
    assert_eq!(all, expect, "our close frame, nothing else, then the connection is cut");
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "closed");
}

fn heartbeat_worker() -> (Running, SocketAddr, crossbeam_channel::Receiver<String>) {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    w.websocket_ping_interval = Some(std::time::Duration::from_millis(300));
    let t = tx.clone();
    w.on_error(move |_, e, _| t.send(format!("error {}: {e}", e.code())).unwrap());
    w.on_close(move |_, _| tx.send("closed".into()).unwrap());
    w.on_message(|c, m, _| {
        c.send_as(m.data, m.kind);
    });
    let (srv, addr) = start(w);
    (srv, addr, rx)
}

#[test]
fn heartbeat_pings_a_silent_peer_and_keeps_it_while_it_answers() {
    let (_srv, addr, events) = heartbeat_worker();
    let mut ws = client(addr, "/");
    for _ in 0..3 {
        // tungstenite queues the pong and sends it on the next read or write.
        assert_eq!(ws.read().unwrap(), Message::Ping(Vec::new().into()));
    }
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still here"));
    assert!(events.try_recv().is_err(), "no error, no close");
}

#[test]
fn heartbeat_destroys_a_peer_that_never_answers() {
    let (_srv, addr, events) = heartbeat_worker();
    let mut s = client(addr, "/").into_inner();
    // The handshake is done; the client now stays silent and reads whatever comes.
    assert_eq!(read_to_eof(&mut s), [0x89, 0x00], "one unanswered ping, then the cut");
    let e = events.recv_timeout(PATIENCE).unwrap();
    assert!(e.starts_with("error 6: no answer to a heartbeat ping"), "{e}");
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "closed");
}

#[test]
fn paused_connections_get_no_heartbeat_and_idle_close_is_safe() {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<u32>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    // Same period: idle close and heartbeat fall due in the same sweep.
    w.idle_timeout = Some(std::time::Duration::from_millis(300));
    w.websocket_ping_interval = Some(std::time::Duration::from_millis(300));
    // The first connection is paused by the application.
    w.on_websocket_connected(|c, seen| {
        if *seen == 0 {
            c.pause_recv();
        }
        *seen += 1;
    });
    let t = tx.clone();
    w.on_error(move |_, e, _| t.send(format!("error: {e}")).unwrap());
    w.on_close(move |_, _| tx.send("closed".into()).unwrap());
    w.on_message(|c, m, _| {
        c.send_as(m.data, m.kind);
    });
    let (_srv, addr) = start(w);
    let mut s = client(addr, "/").into_inner();
    // Paused by the application: never pinged (its pongs could not be read), closed as idle.
    assert!(read_to_eof(&mut s).is_empty());
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "closed");
    assert!(rx.try_recv().is_err(), "no NoPong, no other error");
    // The ring thread is still serving.
    let mut ws = client(addr, "/");
    ws.send(Message::text("alive")).unwrap();
    let got = ws.read().unwrap();
    assert!(got == Message::text("alive") || got == Message::Ping(Vec::new().into()), "{got:?}");
}

#[test]
fn peer_close_can_be_answered_with_an_own_code() {
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_websocket_close(|c, _, _, _| c.websocket_close(4001, "mine"));
    let (_srv, addr) = start(w);
    let mut ws = client(addr, "/");
    ws.close(None).unwrap();
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!((u16::from(f.code), f.reason.as_str()), (4001, "mine")),
        other => panic!("expected our own close answer, got {other:?}"),
    }
    assert!(matches!(ws.read(), Err(tungstenite::Error::ConnectionClosed)));
}

/// Case count of the Autobahn fuzzingclient suite as kosoku ships it (compression included).
const AUTOBAHN_CASES: usize = 517;

/// Outcomes that pass, for both `behavior` and `behaviorClose` (as Autobahn's own report
/// colours them green).
const AUTOBAHN_PASS: [&str; 3] = ["OK", "NON-STRICT", "INFORMATIONAL"];

/// Judges an Autobahn report index (`{agent: {case id: {behavior, behaviorClose, ..}}}`):
/// the ids of the cases that did not pass, and the number of cases.
fn autobahn_verdict(index: &serde_json::Value) -> (Vec<String>, usize) {
    let agents = index.as_object().expect("index.json: an object keyed by agent");
    assert_eq!(agents.len(), 1, "one agent (the echo server) in the report: {:?}", agents.keys());
    let mut bad = Vec::new();
    let mut n = 0;
    for cases in agents.values() {
        for (case, r) in cases.as_object().expect("cases keyed by id") {
            n += 1;
            let b = r["behavior"].as_str().unwrap_or("missing");
            let bc = r["behaviorClose"].as_str().unwrap_or("missing");
            if !AUTOBAHN_PASS.contains(&b) || !AUTOBAHN_PASS.contains(&bc) {
                bad.push(format!("{case} ({b}/{bc})"));
            }
        }
    }
    (bad, n)
}

#[test]
fn autobahn_verdict_rejects_every_non_passing_outcome() {
    let index = serde_json::json!({"echo": {
        "1.1.1": {"behavior": "OK", "behaviorClose": "OK"},
        "2.1": {"behavior": "NON-STRICT", "behaviorClose": "INFORMATIONAL"},
        "3.1": {"behavior": "UNIMPLEMENTED", "behaviorClose": "OK"},
        "4.1": {"behavior": "OK", "behaviorClose": "UNCLEAN"},
        "5.1": {"behavior": "WRONG CODE", "behaviorClose": "OK"},
        "6.1": {"behavior": "OK"},
    }});
    let (bad, n) = autobahn_verdict(&index);
    assert_eq!(n, 6);
    assert_eq!(bad, ["3.1 (UNIMPLEMENTED/OK)", "4.1 (OK/UNCLEAN)", "5.1 (WRONG CODE/OK)", "6.1 (OK/missing)"]);
}

/// Checks the Autobahn fuzzingclient report (all cases, compression included). `.ci/run`
/// runs `kosoku` against the release echo example, points `RINGMAN_AUTOBAHN_REPORT` at its
/// `index.json` and runs this test explicitly (running the suite against a debug build takes
/// over ten minutes, so it is not part of a plain `cargo test`).
#[test]
#[ignore = "needs an Autobahn report: run by .ci/run with RINGMAN_AUTOBAHN_REPORT set"]
fn autobahn_report_has_no_failures() {
    let path = std::env::var_os("RINGMAN_AUTOBAHN_REPORT")
        .expect("RINGMAN_AUTOBAHN_REPORT must point at the kosoku report's index.json (see .ci/run)");
    let index = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&index).expect("index.json is JSON");
    let (bad, n) = autobahn_verdict(&v);
    assert!(bad.is_empty(), "{} of {n} Autobahn cases did not pass: {bad:?}", bad.len());
    assert_eq!(n, AUTOBAHN_CASES, "the whole suite ran");
}

/// Messages sent before the upgrade is answered (from `on_connect`, which runs when the TCP
/// connection is accepted, and a broadcast reaching it then) are held and follow the 101,
/// as Workerman holds them: the client's first frames are those messages, in order.
#[test]
fn messages_sent_before_the_upgrade_follow_the_101() {
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.on_connect(|c, _| {
        c.send("welcome");
        c.send_binary([1u8, 2, 3]);
    });
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (running, addr) = start(w);
    let mut ws = client(addr, "/");
    assert_eq!(ws.read().unwrap(), tungstenite::Message::Text("welcome".into()));
    assert_eq!(ws.read().unwrap(), tungstenite::Message::Binary(vec![1u8, 2, 3].into()));
    ws.send(tungstenite::Message::Text("echo".into())).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::Text("echo".into()));
    running.stop();
}
