//! README rows and documented defaults that had no test of their own: the default size
//! limits on real sockets (as defaults, never set by the test), the default timeouts as a
//! default-built worker and its connections report them, the WebSocket packet timeout,
//! per-connection limits, and per-connection buffer events on accepted connections.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use crossbeam_channel::unbounded;
use ringman::protocols::ProtocolError;
use ringman::{AsyncTcpConnection, ConnError, SendStatus, Timeouts, Worker};

const MIB: usize = 1024 * 1024;

/// Sends `chunk`-byte blocks on `conn` (whose peer does not read) until one is refused;
/// returns the bytes the connection had not handed to the kernel at the refusal, and the
/// limit it reports.
fn send_until_refused(conn: &ringman::Connection, chunk: usize) -> (usize, usize) {
    let block = vec![b'x'; chunk];
    let mut total = 0usize;
    loop {
        match conn.send(&block) {
            SendStatus::Failed => return (conn.send_queue_len(), conn.max_send_buffer_size()),
            _ => total += chunk,
        }
        assert!(total < 1024 * MIB, "nothing refused after {total} bytes");
    }
}

/// README: `maxSendBufferSize` 1 MiB by default, per worker and per connection; a send is
/// refused once the bytes the kernel has not taken reach it. One connection keeps the
/// default, another sets its own limit.
#[test]
fn send_buffer_limit_defaults_to_1_mib_and_is_per_connection() {
    const CHUNK: usize = 16 * 1024;
    let (tx, rx) = unbounded::<(usize, usize)>();
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_message(move |c, m, _| {
        if m.data.starts_with(b"small") {
            c.set_max_send_buffer_size(64 * 1024);
        }
        tx.send(send_until_refused(c, CHUNK)).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut default = connect(addr);
    write_all(&mut default, b"default");
    let (unsent, limit) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(limit, MIB, "the default limit");
    assert!((MIB..MIB + CHUNK).contains(&unsent), "refused with {unsent} bytes unsent");
    let mut small = connect(addr);
    write_all(&mut small, b"small");
    let (unsent, limit) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(limit, 64 * 1024, "the connection's own limit");
    assert!((64 * 1024..64 * 1024 + CHUNK).contains(&unsent), "refused with {unsent} bytes unsent");
}

/// README: `maxPackageSize` 10 MiB by default. A `frame://` packet of exactly 10 MiB
/// (length prefix included) is delivered; one byte more is refused as TooLarge and the
/// connection closes.
#[test]
fn package_limit_defaults_to_10_mib() {
    let (tx, rx) = unbounded::<Result<usize, String>>();
    let mut w = Worker::<()>::new("frame://127.0.0.1:0").unwrap();
    w.count = 1;
    let t = tx.clone();
    w.on_message(move |c, m, _| {
        t.send(Ok(m.data.len())).unwrap();
        c.send(b"ok");
    });
    w.on_error(move |_, e, _| {
        tx.send(Err(match e {
            ConnError::Protocol(ProtocolError::TooLarge { max, .. }) => format!("too large, max {max}"),
            other => other.to_string(),
        }))
        .unwrap();
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    let payload = vec![7u8; 10 * MIB - 4];
    write_all(&mut s, &frame(&payload));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Ok(10 * MIB - 4), "a 10 MiB packet is delivered");
    assert_eq!(read_exact(&mut s, 6), frame(b"ok"));
    // The length prefix alone announces the oversized packet.
    write_all(&mut s, &((10 * MIB + 1) as u32).to_be_bytes());
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Err(format!("too large, max {}", 10 * MIB)));
    assert!(read_to_eof(&mut s).is_empty(), "closed after the refusal");
}

/// README: per-connection `maxPackageSize`. A connection that lowered its own limit refuses
/// a line the worker's default accepts on another connection.
#[test]
fn set_max_package_size_refuses_on_that_connection_only() {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<usize>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(|c, n| {
        *n += 1;
        if *n == 1 {
            c.set_max_package_size(16);
        }
    });
    let t = tx.clone();
    w.on_message(move |c, m, _| {
        t.send(format!("{} bytes", m.data.len())).unwrap();
        c.send(m);
    });
    w.on_error(move |c, e, _| tx.send(format!("error at limit {}: {e}", c.max_package_size())).unwrap());
    let (_srv, addr) = start(w);
    let mut limited = connect(addr);
    write_all(&mut limited, b"short\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "5 bytes");
    assert_eq!(read_exact(&mut limited, 6), b"short\n");
    let mut other = connect(addr);
    let long = [b'y'; 40];
    write_all(&mut other, &[&long[..], b"\n"].concat());
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "40 bytes", "the worker's default accepts 40 bytes");
    assert_eq!(read_exact(&mut other, 41)[..40], long);
    write_all(&mut limited, &[&long[..], b"\n"].concat());
    let got = rx.recv_timeout(PATIENCE).unwrap();
    assert!(got.starts_with("error at limit 16: packet of"), "{got}");
    assert!(read_to_eof(&mut limited).is_empty(), "the limited connection is closed");
}

/// README: per-connection `on_buffer_full` / `on_buffer_drain` on an accepted connection
/// override the worker's.
#[test]
fn per_connection_buffer_events_on_an_accepted_connection() {
    const CHUNK: usize = 16 * 1024;
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    let t = tx.clone();
    w.on_buffer_full(move |_, _| t.send("worker full".into()).unwrap());
    let t = tx.clone();
    w.on_buffer_drain(move |_, _| t.send("worker drain".into()).unwrap());
    let t = tx.clone();
    w.on_connect(move |c, _| {
        c.set_max_send_buffer_size(64 * 1024);
        let t2 = t.clone();
        c.on_buffer_full(move |_| t2.send("own full".into()).unwrap());
        let t2 = t.clone();
        c.on_buffer_drain(move |_| t2.send("own drain".into()).unwrap());
    });
    let t = tx.clone();
    w.on_message(move |c, _, _| {
        // Until the limit is reached (the peer is not reading yet), then one refused send.
        let block = vec![b'z'; CHUNK];
        let mut sent = 0usize;
        while c.send(&block) != SendStatus::Failed {
            sent += CHUNK;
        }
        t.send(format!("sent {sent}")).unwrap();
    });
    w.on_close(move |_, _| tx.send("closed".into()).unwrap());
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"go");
    let mut got: Vec<String> = (0..2).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    got.sort();
    assert_eq!(got[0], "own full", "{got:?}");
    let sent: usize = got[1].strip_prefix("sent ").expect("the sender's report").parse().unwrap();
    // The peer reads it all: the buffer drains.
    let mut buf = vec![0u8; sent];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "own drain");
    drop(s);
    // on_close comes last: the worker's buffer callbacks never ran for this connection.
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "closed", "the worker's buffer callbacks ran too");
}

/// README: `packet_timeout` on `websocket://`: a frame that started arriving and is not
/// completed in time is answered with close 1008 (policy violation) and `on_error`.
#[test]
fn websocket_packet_timeout_closes_with_1008() {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    w.packet_timeout = Some(Duration::from_millis(200));
    let t = tx.clone();
    w.on_error(move |_, e, _| t.send(format!("error: {e}")).unwrap());
    w.on_close(move |_, _| tx.send("closed".into()).unwrap());
    let (_srv, addr) = start(w);
    let s = connect(addr);
    let (ws, resp) = tungstenite::client(format!("ws://{addr}/"), s).expect("handshake");
    assert_eq!(resp.status(), 101);
    let mut s = ws.into_inner();
    // A masked text frame announcing 10 bytes, of which 2 arrive.
    write_all(&mut s, &[0x81, 0x80 | 10, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    let got = read_to_eof(&mut s);
    assert!(got.len() >= 4, "{got:?}");
    assert_eq!(got[0], 0x88, "a close frame: {got:?}");
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1008, "close code: {got:?}");
    let err = rx.recv_timeout(PATIENCE).unwrap();
    assert!(err.starts_with("error: ") && err.contains("not completed within"), "{err}");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "closed");
}

/// The documented default timeouts, as a default-built worker has them and as its running
/// connections report them: HTTP 60 s idle and 30 s packet (none for other protocols), 5 s
/// close timeout; 5 s connect timeout for outgoing connections.
#[test]
fn default_timeouts_as_workers_and_connections_report_them() {
    let http = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    assert_eq!(
        (http.idle_timeout, http.packet_timeout),
        (Some(Duration::from_secs(60)), Some(Duration::from_secs(30)))
    );
    assert_eq!(http.close_timeout, Duration::from_secs(5));
    let text = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    assert_eq!((text.idle_timeout, text.packet_timeout), (None, None));
    assert_eq!(AsyncTcpConnection::new("tcp://127.0.0.1:1").unwrap().connect_timeout, Duration::from_secs(5));

    // What running connections report: an accepted HTTP one, an accepted text one, and an
    // outgoing one from a ring of a default-built worker.
    let (tx, rx) = unbounded::<(&'static str, Option<Timeouts>)>();
    let mut http = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    http.count = 1;
    let t = tx.clone();
    http.on_connect(move |c, _| t.send(("http", c.timeouts())).unwrap());
    let (_h, http_addr) = start(http);
    let _c = connect(http_addr);
    assert_eq!(
        rx.recv_timeout(PATIENCE).unwrap(),
        (
            "http",
            Some(Timeouts {
                idle: Some(Duration::from_secs(60)),
                packet: Some(Duration::from_secs(30)),
                close: Duration::from_secs(5),
                connect: None,
            })
        )
    );
    let mut text = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    text.count = 1;
    let t = tx.clone();
    text.on_connect(move |c, _| t.send(("text", c.timeouts())).unwrap());
    let t = tx.clone();
    text.on_worker_start(move |_, _| {
        // An outgoing connection reports its settings as soon as it exists (before its
        // dial to the discard port has an outcome).
        let conn = AsyncTcpConnection::new("tcp://127.0.0.1:9").unwrap().connect().unwrap();
        t.send(("outgoing", conn.timeouts())).unwrap();
        conn.destroy();
    });
    let (_t, text_addr) = start(text);
    let _c = connect(text_addr);
    let mut got: Vec<_> = (0..2).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    got.sort_by_key(|(what, _)| *what);
    let plain = Timeouts { idle: None, packet: None, close: Duration::from_secs(5), connect: None };
    assert_eq!(
        got,
        [("outgoing", Some(Timeouts { connect: Some(Duration::from_secs(5)), ..plain })), ("text", Some(plain)),]
    );
}
