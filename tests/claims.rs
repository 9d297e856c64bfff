//! Behaviour the README and ARCHITECTURE promise, each checked end to end with real sockets
//! and, where a peer matters, a client this project did not write (python `websockets`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;

use common::*;
use crossbeam_channel::unbounded;
use ringman::protocols::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError};
use ringman::{Connection, ConnectionId, SendStatus, Server, Timer, Worker};

#[test]
fn timer_del_all_cancels_every_timer_of_the_thread() {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<()>::without_listener();
    w.count = 1;
    w.on_worker_start(move |_, _| {
        for i in 0..3 {
            let t = tx.clone();
            Timer::add(std::time::Duration::from_millis(10), true, move || t.send(format!("tick {i}")).unwrap())
                .unwrap();
        }
        let t = tx.clone();
        Timer::add(std::time::Duration::from_millis(35), false, move || {
            Timer::del_all();
            t.send(format!("deleted, {} left", Timer::count())).unwrap();
            // Timers still work after del_all; this one fires after ten more periods of the
            // cancelled ones.
            let t2 = t.clone();
            Timer::add(std::time::Duration::from_millis(100), false, move || t2.send("later".into()).unwrap()).unwrap();
        })
        .unwrap();
    });
    let _srv = Server::new().add(w).start().unwrap();
    let mut got = Vec::new();
    while got.last().is_none_or(|m| m != "later") {
        got.push(rx.recv_timeout(PATIENCE).expect("timer events"));
    }
    let at = got.iter().position(|m| m.starts_with("deleted")).expect("del_all ran");
    assert_eq!(got[at], "deleted, 0 left");
    assert!(got[..at].iter().any(|m| m == "tick 2"), "the repeating timers ran before: {got:?}");
    assert_eq!(&got[at + 1..], ["later"], "no tick after del_all: {got:?}");
}

/// A protocol of fixed four-byte packets, answered as `<payload>`.
struct Quad;
struct QuadDecoder;
struct QuadEncoder;

impl Protocol for Quad {
    fn name(&self) -> &'static str {
        "quad"
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(QuadDecoder)
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(QuadEncoder)
    }
}

impl Decoder for QuadDecoder {
    fn input(&mut self, _buf: &[u8], _max: usize) -> Result<Input, ProtocolError> {
        Ok(Input::Packet(4))
    }
    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        Ok(Some(Message::binary(packet)))
    }
}

impl Encoder for QuadEncoder {
    fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
        out.push(b'<');
        out.extend_from_slice(payload);
        out.push(b'>');
    }
}

#[test]
fn with_protocol_uses_the_custom_decoder_and_encoder() {
    let (tx, rx) = unbounded::<Vec<u8>>();
    let mut w = Worker::<()>::with_protocol("quad://127.0.0.1:0", Arc::new(Quad)).unwrap();
    w.count = 1;
    w.on_message(move |c, m, _| {
        tx.send(m.data.to_vec()).unwrap();
        c.send(m);
    });
    let (srv, addr) = start(w);
    assert_eq!(srv.worker(0).protocol(), "quad");
    let mut s = connect(addr);
    // Split across writes: packets are cut by the decoder, not by the reads.
    write_all(&mut s, b"abcde");
    write_all(&mut s, b"fgh");
    assert_eq!(read_exact(&mut s, 12), b"<abcd><efgh>");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"abcd");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), b"efgh");
}

/// Listening sockets bound to `port` on 127.0.0.1, from /proc/net/tcp.
fn listeners_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(&local) && l.split_whitespace().nth(3) == Some("0A"))
        .count()
}

fn served_by(reuse_port: bool) -> (usize, std::collections::BTreeSet<usize>) {
    let (tx, rx) = unbounded::<usize>();
    let mut w = Worker::<usize>::new("text://127.0.0.1:0").unwrap();
    w.count = 3;
    w.reuse_port = reuse_port;
    w.on_worker_start(|info, id| *id = info.id);
    w.on_message(move |c, m, id| {
        tx.send(*id).unwrap();
        c.send(m);
    });
    let (_srv, addr) = start(w);
    let listeners = listeners_on(addr.port());
    // Sixty clients at once, each holding its connection until every one has been served.
    let all_served = Arc::new(std::sync::Barrier::new(60));
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let all_served = all_served.clone();
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let line = format!("client {i}\n");
                write_all(&mut s, line.as_bytes());
                assert_eq!(read_exact(&mut s, line.len()), line.as_bytes());
                all_served.wait();
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every connection is served");
    }
    let threads = (0..60).map(|_| rx.recv_timeout(PATIENCE).unwrap()).collect();
    (listeners, threads)
}

#[test]
fn shared_listener_serves_every_connection_from_one_socket() {
    let (listeners, threads) = served_by(false);
    assert_eq!(listeners, 1, "reuse_port = false: one listening socket shared by the threads");
    assert!(!threads.is_empty());
    // The default, for contrast: one SO_REUSEPORT socket per thread.
    let (listeners, _) = served_by(true);
    assert_eq!(listeners, 3);
}

/// ARCHITECTURE.md: without `reuse_port` "all threads arm accept on one shared socket", so
/// sixty clients at once are not all served by one thread.
#[test]
#[ignore = "engine: with reuse_port = false one ring thread accepts every connection (its armed \
            accept on the shared socket is always the one woken)"]
fn shared_listener_spreads_connections_over_threads() {
    let (_, threads) = served_by(false);
    assert!(threads.len() > 1, "one socket, yet only ring thread {threads:?} accepted");
}

#[test]
fn send_and_broadcast_from_a_plain_std_thread() {
    let (tx, rx) = unbounded::<u64>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 2;
    w.on_connect(move |c, _| tx.send(c.id().as_u64()).unwrap());
    let (srv, addr) = start(w);
    let mut a = connect(addr);
    let ida = rx.recv_timeout(PATIENCE).unwrap();
    let mut b = connect(addr);
    let idb = rx.recv_timeout(PATIENCE).unwrap();
    let handle = srv.worker(0).clone();
    let sender = std::thread::spawn(move || {
        let st = Connection::from_id(ConnectionId::from_u64(ida)).send("to a");
        handle.broadcast("to all");
        st
    });
    assert_eq!(sender.join().unwrap(), SendStatus::Queued, "from a non-ring thread a send is queued");
    assert_eq!(read_exact(&mut a, 5), b"to a\n");
    assert_eq!(read_exact(&mut a, 7), b"to all\n");
    assert_eq!(read_exact(&mut b, 7), b"to all\n");
    let _ = idb;
}

#[test]
fn stale_connection_id_answers_failed() {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<Option<u64>>::new("text://127.0.0.1:0").unwrap();
    w.count = 1; // both connections on the same ring thread
    w.on_message(move |c, m, first| match m.data {
        b"first" => {
            *first = Some(c.id().as_u64());
            c.close(Some(b"bye"));
        }
        _ => {
            let stale = Connection::from_id(ConnectionId::from_u64(first.unwrap()));
            tx.send(format!("{:?} {:?}", stale.send("ghost"), c.send("live"))).unwrap();
        }
    });
    let (tx2, closed) = unbounded::<()>();
    w.on_close(move |_, _| tx2.send(()).unwrap());
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"first\n");
    assert_eq!(read_to_eof(&mut s), b"bye\n");
    closed.recv_timeout(PATIENCE).unwrap();
    // A new connection may reuse the slot: the stale id must still not reach it.
    let mut s2 = connect(addr);
    write_all(&mut s2, b"second\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "Failed Queued");
    assert_eq!(read_exact(&mut s2, 5), b"live\n");
}

#[test]
fn head_through_send_file_has_headers_and_no_body() {
    use ringman::http::{continue_file, respond, send_file};
    use ringman::protocols::http::Response;
    let dir = std::env::temp_dir().join(format!("ringman-claims-head-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("data.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    let f = file.clone();
    w.on_request(move |conn, req, _| {
        if !(req.path() == "/file" && send_file(conn, req, &f)) {
            respond(conn, req, Response::new(404).body("Not Found"));
        }
    });
    w.on_buffer_drain(|conn, _| continue_file(conn));
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 100000\r\n"), "{head}");
    // No body: the next bytes on the same connection are the next response.
    write_all(&mut s, b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n");
    let next = read_head(&mut s);
    assert!(next.starts_with("HTTP/1.1 404"), "a HEAD answer must carry no body, got {next:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Reads one response head (through the blank line), byte by byte.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("response head");
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn tiny_receive_buffer_pool_still_echoes_every_byte() {
    // Two 512-byte receive buffers for the whole ring: many connections sending at once run
    // the pool dry (ENOBUFS), and each one must be re-armed and read to the end.
    let mut w = echo_worker("tcp://127.0.0.1:0", 1);
    w.recv_buffers = 2;
    w.recv_buffer_size = 512;
    let (_srv, addr) = start(w);
    const CONNS: usize = 32;
    const BYTES: usize = 64 * 1024;
    let clients: Vec<_> = (0..CONNS)
        .map(|i| {
            std::thread::spawn(move || {
                let s = connect(addr);
                let data: Vec<u8> = (0..BYTES).map(|j| (i * 31 + j % 251) as u8).collect();
                let mut w = s.try_clone().unwrap();
                let out = data.clone();
                let writer = std::thread::spawn(move || w.write_all(&out).unwrap());
                let mut r = s;
                let mut back = vec![0u8; BYTES];
                r.read_exact(&mut back).expect("every byte echoed");
                writer.join().unwrap();
                assert!(back == data, "connection {i}: echo differs");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// Runs a python3 script with a hard deadline; returns stdout, panics with stderr on failure.
fn python(script: &str, args: &[String]) -> String {
    let out = Command::new("timeout").args(["60", "python3", "-c", script]).args(args).output().expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const DEFLATE_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1], compression="deflate", open_timeout=20, close_timeout=20) as ws:
        print(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
        text = "compress me " * 5000
        await ws.send(text)
        assert await asyncio.wait_for(ws.recv(), 20) == text, "text echo"
        data = bytes(range(256)) * 400
        await ws.send(data)
        assert await asyncio.wait_for(ws.recv(), 20) == data, "binary echo"
        print("echo ok")

asyncio.run(main())
"#;

#[test]
fn permessage_deflate_with_python_websockets() {
    let mut w = Worker::<()>::new("websocket://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_message(|c, m, _| {
        c.send_as(m.data, m.kind);
    });
    let (_srv, addr) = start(w);
    let out = python(DEFLATE_CLIENT, &[format!("ws://{addr}/")]);
    let mut lines = out.lines();
    let ext = lines.next().unwrap_or_default();
    assert!(ext.starts_with("permessage-deflate"), "compression negotiated: {out:?}");
    assert_eq!(lines.next(), Some("echo ok"), "{out}");
}

/// A running example process, killed on drop if still alive; its stdout lines on a channel.
struct Child {
    child: std::process::Child,
    lines: crossbeam_channel::Receiver<String>,
}

impl Child {
    fn spawn(cmd: &mut Command) -> Child {
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("example starts");
        let (tx, lines) = unbounded();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Child { child, lines }
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("a line from the example")
    }

    /// SIGTERM, then the exit status (within PATIENCE).
    fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling the child this test spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut status = None;
        wait_until("the example exits after SIGTERM", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(url: &str) -> (String, Vec<u8>) {
    let out = Command::new("curl").args(["-s", "-S", "--max-time", "20", "-D", "-", url]).output().expect("curl runs");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = out.stdout;
    let split = text.windows(4).position(|w| w == b"\r\n\r\n").map_or(text.len(), |i| i + 4);
    (String::from_utf8_lossy(&text[..split]).into_owned(), text[split..].to_vec())
}

#[test]
fn webserver_example_serves_curl_and_stops_on_sigterm() {
    let root = std::env::temp_dir().join(format!("ringman-claims-www-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>claims</h1>").unwrap();
    let bin = example_binary("webserver");
    let srv = Child::spawn(Command::new(bin).arg("http://127.0.0.1:0").arg(&root).args(["--threads", "2"]));
    let line = srv.line();
    let addr: SocketAddr = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("{line}")).parse().unwrap();
    let (head, body) = curl(&format!("http://{addr}/hello"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"Hello World");
    let (head, body) = curl(&format!("http://{addr}/index.html"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"<h1>claims</h1>");
    let (head, _) = curl(&format!("http://{addr}/nothing-here"));
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // SIGTERM stops run_all: the process exits on its own, successfully.
    let status = srv.terminate();
    assert!(status.success(), "graceful exit after SIGTERM: {status}");
    assert!(TcpStream::connect(addr).is_err(), "the listener is gone");
    let _ = std::fs::remove_dir_all(root);
}

const CHAT_CLIENTS: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1], open_timeout=20) as a, connect(sys.argv[1], open_timeout=20) as b:
        await a.send("hello from a")
        got = await asyncio.wait_for(b.recv(), 20)
        print(got)
        # The sender gets the broadcast too.
        print(await asyncio.wait_for(a.recv(), 20))

asyncio.run(main())
"#;

#[test]
fn chat_example_broadcasts_between_python_clients() {
    let bin = example_binary("chat");
    // The chat example serves its page on port + 1.
    let port = common::free_port_pairs(1)[0];
    let srv = Child::spawn(Command::new(bin).arg(format!("websocket://127.0.0.1:{port}")));
    let line = srv.line();
    assert!(line.starts_with("chat on "), "{line}");
    let (head, body) = curl(&format!("http://127.0.0.1:{}/", port + 1));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("<form"), "the chat page");
    let out = python(CHAT_CLIENTS, &[format!("ws://127.0.0.1:{port}/")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert!(l.ends_with(": hello from a"), "the other client and the sender get the message: {out}");
    }
    assert_eq!(lines[0], lines[1], "one broadcast line, with the sender's id");
    assert!(srv.terminate().success());
}

#[test]
fn accept_survives_running_out_of_descriptors() {
    // The echo example with 64 descriptors and more clients than that: accept hits EMFILE,
    // backs off, and serves the waiting clients as descriptors free up.
    let bin = example_binary("echo");
    let dir = std::env::temp_dir().join(format!("ringman-claims-emfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(["text://127.0.0.1:0", "--threads", "1", "--pid-file"]).arg(dir.join("e.pid"));
    // SAFETY: setrlimit is async-signal-safe; runs in the child before exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 64, rlim_max: 64 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let srv = Child::spawn(&mut cmd);
    let line = srv.line();
    let addr: SocketAddr = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("{line}")).parse().unwrap();
    const N: usize = 200;
    let mut conns: Vec<TcpStream> = (0..N)
        .map(|i| {
            let mut s = connect(addr);
            write_all(&mut s, format!("{i:03}\n").as_bytes());
            s
        })
        .collect();
    // The first half is dropped unread; the rest is answered in accept order, each closed
    // once answered so the next one can be accepted.
    let rest = conns.split_off(N / 2);
    drop(conns);
    for (i, mut s) in rest.into_iter().enumerate() {
        let mut got = [0u8; 4];
        if let Err(e) = s.read_exact(&mut got) {
            panic!("client {} of {N} not served after EMFILE: {e}", N / 2 + i);
        }
        assert_eq!(&got, format!("{:03}\n", N / 2 + i).as_bytes());
    }
    let mut s = connect(addr);
    write_all(&mut s, b"still up\n");
    assert_eq!(read_exact(&mut s, 9), b"still up\n");
    drop(s);
    assert!(srv.terminate().success());
    let _ = std::fs::remove_dir_all(dir);
}
