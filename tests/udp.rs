//! `udp://` workers and the UDP client against Python UDP peers on loopback.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start, wait_until, PATIENCE};
use ringman::{AsyncUdpConnection, ConnError, ListenAddr, SendMode, SendStatus, Worker};

/// Runs a python3 script with a hard deadline; returns its stdout, panics with its stderr.
fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("timeout").args(["60", "python3", "-c", script]).args(args).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn udp_echo(threads: usize) -> Worker<()> {
    let mut w = Worker::<()>::new("udp://127.0.0.1:0").unwrap();
    w.count = threads;
    w.on_datagram(|peer, msg, _| {
        peer.send(msg);
    });
    w
}

/// 700 datagrams of 0 to 60,000 bytes (seeded), each sent once the previous one's echo
/// arrived, each echoed byte for byte.
const SEQUENTIAL: &str = r#"
import random, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.settimeout(20)
s.connect(("127.0.0.1", port))
biggest = 0
for i in range(n):
    size = 60000 if i == 3 else (0 if i == 5 else rng.randrange(0, 60001))
    data = bytes(rng.getrandbits(8) for _ in range(min(size, 64))) * (size // 64 + 1)
    data = data[:size]
    s.send(data)
    back = s.recv(65536)
    assert back == data, f"datagram {i}: sent {len(data)} bytes, got {len(back)} back"
    biggest = max(biggest, size)
print(n, biggest)
"#;

/// The tests of this file run one at a time: the `unlisten` test releases its port and
/// serves it again, and in between another test's socket (bound to port 0) can be given that
/// port; with SO_REUSEPORT on both, datagrams meant for one would reach the other.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn seven_hundred_datagrams_up_to_60000_bytes_echoed_exactly() {
    let _serial = serial();
    let (_running, addr) = start(udp_echo(2));
    let out = python(SEQUENTIAL, &[&addr.port().to_string(), "700"]);
    assert_eq!(out.trim(), "700 60000");
}

/// 50 sockets (50 ports) send at once, 20 rounds; each must get back exactly its own
/// datagrams, in its own port.
const FIFTY: &str = r#"
import select, socket, sys
port, peers, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(peers):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
for r in range(rounds):
    for i, s in enumerate(socks):
        s.sendto(f"peer {i} round {r} ".encode() + bytes([i]) * (i * 100), ("127.0.0.1", port))
    waiting = {s.fileno(): (i, s) for i, s in enumerate(socks)}
    while waiting:
        ready, _, _ = select.select([s for _, s in waiting.values()], [], [], 20)
        assert ready, f"round {r}: {len(waiting)} peers got no answer"
        for s in ready:
            i, _ = waiting.pop(s.fileno())
            data, src = s.recvfrom(65536)
            want = f"peer {i} round {r} ".encode() + bytes([i]) * (i * 100)
            assert data == want, f"peer {i} round {r} got {data[:30]!r}"
            assert src[1] == port
print("ok")
"#;

#[test]
fn fifty_peers_at_once_each_answered_on_its_own_port() {
    let _serial = serial();
    let seen: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let mut w = Worker::<()>::new("udp://127.0.0.1:0").unwrap();
    w.count = 2;
    let s2 = seen.clone();
    w.on_datagram(move |peer, msg, _| {
        s2.lock().unwrap().insert(peer.remote_addr());
        assert_eq!(peer.send(msg), SendStatus::Queued, "batched sends are queued to the end of the turn");
    });
    let (running, addr) = start(w);
    let out = python(FIFTY, &[&addr.port().to_string(), "50", "20"]);
    let mut lines = out.lines();
    let ports: HashSet<SocketAddr> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p.parse().unwrap())))
        .collect();
    assert_eq!(lines.next(), Some("ok"));
    assert_eq!(ports.len(), 50);
    assert_eq!(*seen.lock().unwrap(), ports, "the server saw each peer under its own address");
    let requests: u64 = (0..2).map(|t| running.worker(0).stats()[t].requests.get()).sum();
    assert_eq!(requests, 50 * 20, "one request per datagram");
}

/// Sends the sizes given, each to be answered unless it is above the limit: the answers
/// that arrive must be exactly those under the limit, in order.
const LIMIT: &str = r#"
import socket, sys
port, limit = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.connect(("127.0.0.1", port))
for size in [limit, limit + 1, 3 * limit, limit - 1, 65507]:
    s.send(bytes([size % 251]) * size)
    if size <= limit:
        back = s.recv(65536)
        assert back == bytes([size % 251]) * size, f"{size}: got {len(back)} bytes"
# A marker behind the dropped ones: everything before it was handled.
s.send(b"end")
assert s.recv(65536) == b"end"
print("ok")
"#;

#[test]
fn a_datagram_above_the_limit_is_dropped_and_counted_never_cut() {
    let _serial = serial();
    let mut w = udp_echo(1);
    w.max_datagram_size = 1000;
    let (running, addr) = start(w);
    let out = python(LIMIT, &[&addr.port().to_string(), "1000"]);
    assert_eq!(out.trim(), "ok");
    let stats = &running.worker(0).stats()[0];
    assert_eq!(stats.udp_truncated.get(), 3, "1001, 3000 and 65,507 bytes: dropped and counted");
    assert_eq!(stats.requests.get(), 3, "1000, 999 and the marker delivered");
    assert_eq!(running.worker(0).protocol(), "udp", "status tables list it as udp://");
    let metrics = ringman::ops::metrics::render(running.workers());
    assert!(metrics.contains("ringman_udp_truncated_total{worker=\"none\",thread=\"0\"} 3"), "{metrics}");
}

const TEXT: &str = r#"
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.connect(("127.0.0.1", port))
s.send(b"one\ntwo\r\nthree without its newline")
got = [s.recv(65536), s.recv(65536)]
s.send(b"four\n")
got.append(s.recv(65536))
print(repr(got))
"#;

#[test]
fn text_protocol_over_udp_one_message_per_line() {
    let _serial = serial();
    let mut w = Worker::<()>::with_protocol("udp://127.0.0.1:0", Arc::new(ringman::protocols::Text)).unwrap();
    w.count = 1;
    w.on_datagram(|peer, line, _| {
        let mut answer = b"got ".to_vec();
        answer.extend_from_slice(line);
        peer.send(answer);
    });
    let (running, addr) = start(w);
    let out = python(TEXT, &[&addr.port().to_string()]);
    // Each line answered on its own (the encoder adds the newline); the unterminated rest
    // of the first datagram dropped with it, as Workerman does.
    assert_eq!(out.trim(), r"[b'got one\n', b'got two\n', b'got four\n']");
    assert_eq!(running.worker(0).stats()[0].requests.get(), 3);
}

#[test]
fn set_protocol_on_a_udp_worker_and_its_udp_listen_address() {
    let _serial = serial();
    // `udp://` names no protocol: raw datagrams until `set_protocol` picks one.
    let mut w = Worker::<()>::new("udp://127.0.0.1:0").unwrap();
    assert_eq!(w.protocol_name(), "tcp");
    w.set_protocol("text").unwrap();
    assert_eq!(w.protocol_name(), "text");
    assert!(w.is_udp());
    assert_eq!(w.listen_at().and_then(ListenAddr::as_udp).map(|a| a.port()), Some(0));
    w.count = 1;
    w.on_datagram(|peer, line, _| {
        let mut answer = b"got ".to_vec();
        answer.extend_from_slice(line);
        peer.send(answer);
    });
    let (running, addr) = start(w);
    assert_eq!(running.listen_at(0), Some(&ListenAddr::Udp(addr)));
    assert_eq!(running.listen_at(0).unwrap().to_string(), format!("udp://{addr}"));
    assert_eq!(running.listen_at(0).unwrap().as_inet(), None, "not a TCP address");
    let out = python(TEXT, &[&addr.port().to_string()]);
    assert_eq!(out.trim(), r"[b'got one\n', b'got two\n', b'got four\n']");
    let rows = ringman::ops::status::rows(running.workers(), None, PATIENCE);
    assert_eq!(rows[0].listening, format!("udp://{addr}"), "the status table's listen column");

    // A protocol with a handshake is refused at start, whichever way it was chosen.
    let mut w = Worker::<()>::new("udp://127.0.0.1:0").unwrap();
    w.set_protocol("websocket").unwrap();
    assert!(ringman::Server::new().add(w).start().is_err());
    assert!(matches!(
        Worker::<()>::new("udp://127.0.0.1:0").unwrap().set_protocol("nope").err(),
        Some(ringman::EngineError::UnknownProtocol(_))
    ));
}

#[test]
fn send_answers_sent_queued_and_failed() {
    let _serial = serial();
    let answers: Arc<Mutex<Vec<SendStatus>>> = Arc::default();
    let mut w = Worker::<()>::new("udp://127.0.0.1:0").unwrap();
    w.count = 1;
    w.send_mode = SendMode::Eager;
    let a2 = answers.clone();
    w.on_datagram(move |peer, msg, _| {
        // Eager: the kernel's answer comes back before send() returns. 70,000 bytes is
        // more than a UDP datagram can carry: refused (EMSGSIZE).
        let big = peer.send(vec![1u8; 70_000]);
        let ok = peer.send(msg);
        a2.lock().unwrap().extend([big, ok]);
    });
    let (running, addr) = start(w);
    let out = python(
        r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.send(b"hi")
print(s.recv(65536).decode())
"#,
        &[&addr.port().to_string()],
    );
    assert_eq!(out.trim(), "hi");
    assert_eq!(*answers.lock().unwrap(), [SendStatus::Failed, SendStatus::Sent]);
    assert_eq!(running.worker(0).stats()[0].send_fail.get(), 1);

    // Batched (the default): queued at send(), the refusal counted when the turn's submit
    // meets it.
    let answers: Arc<Mutex<Vec<SendStatus>>> = Arc::default();
    let mut w = udp_echo(1);
    let a2 = answers.clone();
    w.on_datagram(move |peer, msg, _| {
        let big = peer.send(vec![1u8; 70_000]);
        let ok = peer.send(msg);
        a2.lock().unwrap().extend([big, ok]);
    });
    let (running, addr) = start(w);
    let out = python(
        r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(20)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.send(b"hi")
print(s.recv(65536).decode())
"#,
        &[&addr.port().to_string()],
    );
    assert_eq!(out.trim(), "hi");
    assert_eq!(*answers.lock().unwrap(), [SendStatus::Queued, SendStatus::Queued]);
    wait_until("the refused datagram is counted", || running.worker(0).stats()[0].send_fail.get() == 1);
}

/// A Python UDP server: echoes (`echo`) or reads and never answers (`silent`); prints its
/// port, then serves until stdin closes.
const PY_SERVER: &str = r#"
import select, socket, sys
mode = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
n = 0
while True:
    r, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in r:
        break
    data, src = s.recvfrom(65536)
    n += 1
    if mode == "echo":
        s.sendto(data, src)
print(n, flush=True)
"#;

struct PyServer {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl PyServer {
    fn start(mode: &str) -> PyServer {
        let mut child = Command::new("timeout")
            .args(["60", "python3", "-c", PY_SERVER, mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        PyServer { port: line.trim().parse().expect("the server's port"), child, out }
    }

    /// Stops the server; returns how many datagrams it received.
    fn stop(mut self) -> usize {
        drop(self.child.stdin.take());
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        line.trim().parse().unwrap()
    }
}

#[derive(Debug, PartialEq)]
enum Seen {
    Message(Vec<u8>),
    Error(u32),
    Close,
}

#[test]
fn client_against_a_python_echo_server() {
    let _serial = serial();
    let server = PyServer::start("echo");
    let ring = common::ring();
    let (tx, rx) = crossbeam_channel::unbounded::<Seen>();
    let port = server.port;
    assert!(ring.worker(0).run_on(0, move || {
        let mut client = AsyncUdpConnection::new(&format!("udp://127.0.0.1:{port}")).unwrap();
        client.recv_timeout = Some(Duration::from_secs(10));
        let conn = client.connect().unwrap();
        let sent = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let t = tx.clone();
        let s2 = sent.clone();
        assert!(conn.on_message(move |c, msg| {
            t.send(Seen::Message(msg.to_vec())).unwrap();
            // The next one only after this answer: 100 in all, of growing sizes.
            if s2.get() < 100 {
                s2.set(s2.get() + 1);
                c.send(vec![s2.get() as u8; s2.get() * 500]);
            } else {
                c.close();
            }
        }));
        let t = tx.clone();
        conn.on_error(move |_, e| t.send(Seen::Error(e.code())).unwrap());
        conn.on_close(move |_| tx.send(Seen::Close).unwrap());
        sent.set(1);
        assert_eq!(conn.send(vec![1u8; 500]), SendStatus::Queued);
    }));
    for i in 1..=100usize {
        let got = rx.recv_timeout(PATIENCE).expect("an echo");
        assert_eq!(got, Seen::Message(vec![i as u8; i * 500]), "answer {i}");
    }
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Seen::Close, "closed once, without an error");
    assert_eq!(server.stop(), 100);
    ring.stop();
    assert!(rx.try_recv().is_err(), "nothing after on_close");
}

#[test]
fn client_receive_timeout_against_a_silent_port() {
    let _serial = serial();
    let server = PyServer::start("silent");
    let ring = common::ring();
    let (tx, rx) = crossbeam_channel::unbounded::<Seen>();
    let port = server.port;
    assert!(ring.worker(0).run_on(0, move || {
        let mut client = AsyncUdpConnection::new(&format!("udp://127.0.0.1:{port}")).unwrap();
        client.recv_timeout = Some(Duration::from_millis(300));
        let conn = client.connect().unwrap();
        let t = tx.clone();
        conn.on_message(move |_, msg| t.send(Seen::Message(msg.to_vec())).unwrap());
        let t = tx.clone();
        conn.on_error(move |_, e| {
            assert!(matches!(e, ConnError::RecvTimeout { after } if *after == Duration::from_millis(300)));
            t.send(Seen::Error(e.code())).unwrap()
        });
        conn.on_close(move |c| {
            assert!(!c.is_open());
            tx.send(Seen::Close).unwrap()
        });
        conn.send("anyone?");
    }));
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Seen::Error(7), "RecvTimeout");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), Seen::Close);
    assert_eq!(server.stop(), 1, "the datagram reached the silent server");
    ring.stop();
}

#[test]
fn start_refuses_http_over_udp_and_a_taken_port() {
    let _serial = serial();
    let w = Worker::<()>::with_protocol("udp://127.0.0.1:0", Arc::new(ringman::protocols::http::Http)).unwrap();
    assert!(ringman::Server::new().add(w).start().is_err());
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let w = Worker::<()>::new(&format!("udp://{}", taken.local_addr().unwrap())).unwrap();
    let e = ringman::Server::new().add(w).start().err().expect("the port is taken");
    assert!(matches!(e, ringman::EngineError::AddrInUse { .. }), "{e}");
}

#[test]
fn the_echo_and_client_examples_over_udp() {
    let _serial = serial();
    // The client example against a Python UDP echo server: 4 clients × 50 datagrams.
    let server = PyServer::start("echo");
    let out = Command::new(common::example_binary("client"))
        .args([&format!("udp://127.0.0.1:{}", server.port), "--conns", "4", "--messages", "50", "--size", "3000"])
        .output()
        .expect("the client example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().last(), Some("ok: 4 connections x 50 messages"));
    assert_eq!(server.stop(), 200);

    // The echo example on udp:// against a Python client.
    // (In a directory of its own: the echo writes its pid file into its working directory.)
    let dir = std::env::temp_dir().join(format!("ringman-udp-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut echo = Command::new(common::example_binary("echo"))
        .args(["udp://127.0.0.1:0", "--threads", "2"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo example runs");
    let mut line = String::new();
    BufReader::new(echo.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on udp://").expect("the address line").parse().unwrap();
    let out = python(SEQUENTIAL, &[&addr.port().to_string(), "100"]);
    let _ = echo.kill();
    let _ = echo.wait();
    assert_eq!(out.split_whitespace().next(), Some("100"));

    // `--protocol text` over udp://: each line of a datagram echoed as its own datagram.
    let mut echo = Command::new(common::example_binary("echo"))
        .args(["udp://127.0.0.1:0", "--threads", "1", "--protocol", "text"])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo example runs");
    let mut line = String::new();
    BufReader::new(echo.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr: SocketAddr = line.trim().strip_prefix("listening on udp://").expect("the address line").parse().unwrap();
    let out = python(TEXT, &[&addr.port().to_string()]);
    let _ = echo.kill();
    let _ = echo.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.trim(), r"[b'one\n', b'two\n', b'four\n']");
}

/// A Python UDP client on a connected socket, driven line by line over stdin: `send TEXT`
/// prints `got ANSWER`, `refused` (the kernel's port-unreachable answer) or `timeout`;
/// `until_refused` sends probes until one meets port-unreachable (`refused`), for up to
/// 20 s (`still served`).
const PY_PEER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.rstrip("\n").partition(" ")
    if cmd == "send":
        s.settimeout(20)
        try:
            s.send(arg.encode())
            while True:
                back = s.recv(65536)
                if back != b"probe":
                    break
            print("got " + back.decode(), flush=True)
        except ConnectionRefusedError:
            print("refused", flush=True)
        except socket.timeout:
            print("timeout", flush=True)
    elif cmd == "until_refused":
        s.settimeout(0.05)
        end, out = time.time() + 20, "still served"
        while time.time() < end:
            try:
                s.send(b"probe")
                s.recv(65536)
            except ConnectionRefusedError:
                out = "refused"
                break
            except socket.timeout:
                pass
        print(out, flush=True)
"#;

struct PyPeer {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl PyPeer {
    fn start(port: u16) -> PyPeer {
        let mut child = Command::new("timeout")
            .args(["120", "python3", "-c", PY_PEER, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut peer = PyPeer { child, out };
        assert_eq!(peer.line(), "ready");
        peer
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn ask(&mut self, cmd: &str) -> String {
        use std::io::Write;
        writeln!(self.child.stdin.as_mut().unwrap(), "{cmd}").unwrap();
        self.line()
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listens again (from the test's thread), retrying while the rings still let go of the
/// sockets of the last `unlisten`.
fn listen_again(h: &ringman::WorkerHandle) {
    let end = std::time::Instant::now() + PATIENCE;
    loop {
        match h.listen() {
            Ok(()) => return,
            Err(ringman::EngineError::AddrInUse { .. }) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("listen again: {e}"),
        }
    }
}

/// Runtime `unlisten()` / `listen()` on a `udp://` worker: served, released (a Python peer's
/// datagrams meet the kernel's port-unreachable), served again on the same port — from a
/// ring thread (a datagram asks for it) and from another thread, with one SO_REUSEPORT
/// socket per ring and with one shared socket.
#[test]
fn udp_unlisten_releases_the_port_and_listen_serves_it_again() {
    let _serial = serial();
    for reuse_port in [true, false] {
        let mut w = Worker::<Option<ringman::WorkerHandle>>::new("udp://127.0.0.1:0").unwrap();
        w.count = 2;
        w.reuse_port = reuse_port;
        w.on_worker_start(|info, st| *st = Some(info.handle.clone()));
        w.on_datagram(|peer, msg, st| {
            if &msg[..] == b"unlisten" {
                st.as_ref().unwrap().unlisten();
                // (The socket is closing: the datagram it delivered is still answered.)
                peer.send("unlistened");
            } else {
                peer.send(msg);
            }
        });
        let (running, addr) = start(w);
        let h = running.worker(0).clone();
        let mut peer = PyPeer::start(addr.port());
        assert_eq!(peer.ask("send one"), "got one");
        assert_eq!(peer.ask("send unlisten"), "got unlistened", "reuse_port {reuse_port}");
        assert!(!h.is_listening());
        assert_eq!(peer.ask("until_refused"), "refused", "the port is released");
        assert_eq!(peer.ask("send anyone"), "refused", "nothing answers while unlistened");
        assert!(std::net::UdpSocket::bind(addr).map(drop).is_ok(), "anyone may bind the port now");
        listen_again(&h);
        assert!(h.is_listening());
        assert_eq!(h.listen_addr(), Some(addr), "the same address");
        assert_eq!(peer.ask("send two"), "got two", "served again");
        // Unlistened from another thread this time, and listened again.
        h.unlisten();
        assert_eq!(peer.ask("until_refused"), "refused");
        listen_again(&h);
        assert_eq!(peer.ask("send three"), "got three");
        let requests: u64 = h.stats().iter().map(|s| s.requests.get()).sum();
        assert!(requests >= 4, "one, unlisten, two, three: {requests}");
        running.stop();
    }
}

/// Keeps `NSOCK` connected sockets sending numbered datagrams, at most `WINDOW` unanswered
/// per socket (one unanswered for 3 s no longer holds its place: a lost datagram shows up in
/// the final count instead of stalling the socket), so the server's receive buffers never
/// fill: any datagram the kernel accepted and no one answered is one the server lost.
/// Commands on stdin: `wait N` prints `ok` once N more answers arrived (`stalled` after
/// 30 s); `stop` stops sending, waits up to 10 s for the answers still due and prints
/// `sent S answered A missing M refused R wrong W [first missing]`.
const PY_STREAM: &str = r#"
import select, socket, sys, time
port, nsock, window = map(int, sys.argv[1:4])
socks = []
for i in range(nsock):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    socks.append(s)
pending = [{} for _ in socks]
nxt = [0] * nsock
sent = answered = refused = wrong = 0
goal, goal_by, sending, end = None, 0, True, 0
print("ready", flush=True)
inputs = [sys.stdin] + socks
while True:
    now = time.time()
    if sending:
        for i, s in enumerate(socks):
            live = sum(1 for t, _ in pending[i].values() if now - t < 3)
            while live < window:
                seq = nxt[i]
                nxt[i] += 1
                data = b"%d:%d:" % (i, seq) + b"x" * (seq % 500)
                try:
                    s.send(data)
                except ConnectionRefusedError:
                    refused += 1
                pending[i][seq] = (now, data)
                sent += 1
                live += 1
    ready, _, _ = select.select(inputs, [], [], 0.2)
    for f in ready:
        if f is sys.stdin:
            words = sys.stdin.readline().split()
            if not words or words[0] == "stop":
                sending = False
                inputs.remove(sys.stdin)
                end = time.time() + 10
            else:
                goal, goal_by = answered + int(words[1]), time.time() + 30
            continue
        i = socks.index(f)
        while True:
            try:
                data = f.recv(65536)
            except BlockingIOError:
                break
            except ConnectionRefusedError:
                refused += 1
                continue
            seq = int(data.split(b":", 2)[1])
            if pending[i].get(seq, (0, None))[1] == data:
                del pending[i][seq]
                answered += 1
            else:
                wrong += 1
    if goal is not None and (answered >= goal or time.time() > goal_by):
        print("ok" if answered >= goal else "stalled", flush=True)
        goal = None
    if not sending and (not any(pending) or time.time() > end):
        missing = sorted((i, q) for i, p in enumerate(pending) for q in p)
        print("sent %d answered %d missing %d refused %d wrong %d %s"
              % (sent, answered, len(missing), refused, wrong, missing[:10]), flush=True)
        break
"#;

/// The inodes of the UDP sockets bound to `127.0.0.1:port` (from `/proc/net/udp`).
fn udp_inodes(port: u16) -> std::collections::BTreeSet<u64> {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&want.as_str())).then(|| f[9].parse().unwrap())
        })
        .collect()
}

/// The socket inodes among the open descriptors of process `pid`.
fn socket_inodes_of(pid: i32) -> std::collections::BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let link = std::fs::read_link(e.ok()?.path()).ok()?;
            link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The echo example as an ops daemon on `udp://`: a plain and a graceful reload hand the
/// worker's sockets to the successor (the very sockets: same inodes, never closed, so the
/// port is never free and nothing queued on them is dropped) while Python peers send
/// continuously. What is guaranteed, and checked: every datagram the kernel accepted for
/// the port is answered, by the old process or by its successor — none lost, none refused.
/// (Datagrams the kernel itself drops for a full receive buffer are outside any server's
/// reach: the peers keep few in flight, so the buffers never fill.)
#[test]
fn reload_hands_the_udp_sockets_over_and_loses_no_datagram() {
    let _serial = serial();
    let port = common::free_port();
    let dir = std::env::temp_dir().join(format!("ringman-udp-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("e.pid");
    let bin = common::example_binary("echo");
    let run = |verb: &[&str]| {
        let out = Command::new(&bin)
            .arg(format!("udp://127.0.0.1:{port}"))
            .args(["--threads", "2", "--pid-file"])
            .arg(&pid_file)
            .arg("--log-file")
            .arg(dir.join("ops.log"))
            .args(verb)
            .output()
            .expect("echo runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{verb:?}: {text}");
        text
    };
    let pid = || std::fs::read_to_string(&pid_file).ok()?.trim().parse::<i32>().ok();
    let alive = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat"))
            .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
    };
    run(&["start", "-d"]);
    let pid1 = pid().expect("pid file");
    let inodes = udp_inodes(port);
    assert_eq!(inodes.len(), 2, "one SO_REUSEPORT socket per ring thread: {inodes:?}");
    assert!(inodes.is_subset(&socket_inodes_of(pid1)), "the daemon holds them");

    let mut peers = Command::new("timeout")
        .args(["300", "python3", "-c", PY_STREAM, &port.to_string(), "8", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = BufReader::new(peers.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let mut ask = |cmd: &str| {
        use std::io::Write;
        writeln!(peers.stdin.as_mut().unwrap(), "{cmd}").unwrap();
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    };
    assert_eq!(ask("wait 300"), "ok");
    let mut pids = vec![pid1];
    for verb in [&["reload"][..], &["reload", "-g"][..]] {
        let before = *pids.last().unwrap();
        let said = run(verb);
        assert!(said.contains("reloaded"), "{said}");
        let next = pid().unwrap();
        assert_ne!(next, before, "{verb:?}: a new process serves");
        let end = std::time::Instant::now() + PATIENCE;
        while alive(before) {
            assert!(std::time::Instant::now() < end, "{verb:?}: the old process {before} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        pids.push(next);
        assert_eq!(ask("wait 300"), "ok", "{verb:?}: the successor answers");
        assert_eq!(udp_inodes(port), inodes, "{verb:?}: the same sockets, never closed");
        assert!(inodes.is_subset(&socket_inodes_of(next)), "{verb:?}: the successor holds them");
    }
    let report = ask("stop");
    let _ = peers.wait();
    let words: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(words[0], "sent", "{report}");
    let (sent, answered): (u64, u64) = (words[1].parse().unwrap(), words[3].parse().unwrap());
    assert!(answered >= 900, "{report}");
    assert_eq!(&words[4..10], ["missing", "0", "refused", "0", "wrong", "0"], "{report}");
    assert_eq!(sent, answered, "{report}");
    run(&["stop"]);
    let last = *pids.last().unwrap();
    let end = std::time::Instant::now() + PATIENCE;
    while alive(last) {
        assert!(std::time::Instant::now() < end, "the last process did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(udp_inodes(port).is_empty(), "the final stop closes the sockets");
    let log = std::fs::read_to_string(dir.join("ops.log")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(log.contains("reload"), "{log}");
}
