//! Regressions for the correctness issue: nothing lost in the default send mode, keep-alive
//! file serving, ids unique for the life of the process, `on_close` seeing its connection,
//! protocol code isolated like user code, user `Drop` code outside the engine, responses kept
//! in step, cross-thread calls that act.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use crossbeam_channel::unbounded;
use ringman::protocols::{Decoder, Encoder, Input, Message, MessageKind, Protocol, ProtocolError};
use ringman::{ConnError, Connection, SendStatus, Timer, Worker};

/// Workerman's burst workload, by a real asyncio client: `conns` connections each write
/// `msgs` messages (sizes cycling 1 B … 300000 B) in one burst while reading; every echo
/// must come back in order and byte-identical.
const BURST_CLIENT: &str = r#"
import asyncio, struct, sys
proto, host, port, conns, msgs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
SIZES = [1, 7, 100, 1000, 65536, 300000]
def payload(c, i):
    seed = f"{c}:{i}:".encode()
    n = SIZES[i % len(SIZES)]
    return (seed * (n // len(seed) + 1))[:n]
def check(c, i, got, want):
    if got != want:
        sys.exit(f"connection {c}: message {i} is {len(got)} bytes {got[:24]!r}, expected {len(want)} bytes {want[:24]!r}")
async def stream(c):
    r, w = await asyncio.open_connection(host, port, limit=1 << 20)
    out = [payload(c, i) for i in range(msgs)]
    if proto == "tcp":
        wire = b"".join(out)
        async def writer():
            w.write(wire)
            await w.drain()
        async def reader():
            got = await r.readexactly(len(wire))
            if got != wire:
                at = next(i for i in range(len(wire)) if got[i] != wire[i])
                sys.exit(f"connection {c}: the echo differs from byte {at} of {len(wire)}")
        await asyncio.gather(writer(), reader())
        w.close()
        return
    if proto == "text":
        wire = b"".join(m + b"\n" for m in out)
    else:
        wire = b"".join(struct.pack(">I", len(m) + 4) + m for m in out)
    async def writer():
        w.write(wire)
        await w.drain()
    async def reader():
        for i, m in enumerate(out):
            if proto == "text":
                got = (await r.readuntil(b"\n"))[:-1]
            else:
                n = struct.unpack(">I", await r.readexactly(4))[0]
                got = await r.readexactly(n - 4)
            check(c, i, got, m)
    await asyncio.gather(writer(), reader())
    w.close()
async def ws(c):
    import websockets
    async with websockets.connect(f"ws://{host}:{port}/", max_size=None, compression=None) as s:
        out = [payload(c, i).decode() for i in range(msgs)]
        async def writer():
            for m in out:
                await s.send(m)
        async def reader():
            for i, m in enumerate(out):
                check(c, i, (await s.recv()).encode(), m.encode())
        await asyncio.gather(writer(), reader())
async def main():
    await asyncio.gather(*[(ws if proto == "websocket" else stream)(c) for c in range(conns)])
    print(f"ok {conns * msgs}")
asyncio.run(main())
"#;

fn python(script: &str, args: &[String]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (the tests need python3 with the websockets package)")
}

/// Raw `tcp://`: echoes are sent from the receive buffers they arrived in (lent to the
/// send queue); a pool of 16 buffers lends at most 8, so most bursts also take the copying
/// path, interleaved on one connection.
#[test]
fn burst_of_mixed_sizes_is_echoed_whole_over_raw_tcp_from_the_receive_buffers() {
    burst_against_echo("tcp", 0);
    burst_against_echo("tcp", 16);
}

fn burst_against_default_echo(scheme: &str) {
    burst_against_echo(scheme, 0)
}

/// With `recv_buffers` (0: the default).
fn burst_against_echo(scheme: &str, recv_buffers: u16) {
    let send_fail = Arc::new(AtomicUsize::new(0));
    let mut w = echo_worker(&format!("{scheme}://127.0.0.1:0"), 2);
    if recv_buffers > 0 {
        w.recv_buffers = recv_buffers;
    }
    // Everything at its default: SendMode::Batched, max_send_buffer_size 1 MiB.
    let errors = send_fail.clone();
    w.on_error(move |_, e, _| {
        eprintln!("on_error: {e}");
        errors.fetch_add(1, Ordering::SeqCst);
    });
    let (_srv, addr) = start(w);
    let args = [scheme.to_string(), addr.ip().to_string(), addr.port().to_string(), "20".into(), "40".into()];
    let out = python(BURST_CLIENT, &args);
    assert!(
        out.status.success(),
        "{scheme}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 800");
    assert_eq!(send_fail.load(Ordering::SeqCst), 0, "{scheme}: a send was refused");
}

#[test]
fn burst_of_mixed_sizes_is_echoed_whole_over_text() {
    burst_against_default_echo("text");
}

#[test]
fn burst_of_mixed_sizes_is_echoed_whole_over_frame() {
    burst_against_default_echo("frame");
}

#[test]
fn burst_of_mixed_sizes_is_echoed_whole_over_websocket() {
    burst_against_default_echo("websocket");
}

/// The limit still holds against a peer that does not read: what the kernel cannot take
/// stays counted, and sends beyond it are refused with on_error.
#[test]
fn limit_still_refuses_when_the_peer_does_not_read() {
    let (tx, rx) = unbounded::<(usize, usize, usize)>();
    let mut w = Worker::<()>::new("tcp://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_send_buffer_size = 256 * 1024;
    w.on_message(move |c, _, _| {
        let chunk = vec![b'x'; 64 * 1024];
        let (mut queued, mut failed) = (0, 0);
        // Far more than the socket buffers and the limit together can hold.
        for _ in 0..2000 {
            match c.send(&chunk) {
                SendStatus::Failed => failed += 1,
                _ => queued += 1,
            }
        }
        tx.send((queued, failed, c.send_queue_len())).unwrap();
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    write_all(&mut s, b"go");
    let (queued, failed, unsent) = rx.recv_timeout(PATIENCE).unwrap();
    assert!(failed > 0, "nothing refused ({queued} queued)");
    assert!(unsent >= 256 * 1024, "refused while only {unsent} bytes were unsent");
    assert!(unsent < 256 * 1024 + 64 * 1024, "{unsent} bytes queued beyond the limit and one message");
}

fn webroot() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringman-correctness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "first file\n").unwrap();
    std::fs::write(dir.join("b.txt"), "second file\n").unwrap();
    std::fs::write(dir.join("c.txt"), vec![b'c'; 100_000]).unwrap();
    dir
}

#[test]
fn keep_alive_connection_serves_small_files_one_after_another() {
    let root = webroot();
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    let files = ringman::http::WebServer::new(&root).unwrap();
    files.install(&mut w, |conn, req, _| {
        ringman::http::respond(conn, req, ringman::protocols::http::Response::new(404).body("no"));
    });
    let (_srv, addr) = start(w);
    let base = format!("http://{addr}");
    // curl reuses one connection for URLs on one command line; --max-time turns a hang
    // into a failure.
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "15"])
        .args([format!("{base}/a.txt"), format!("{base}/b.txt"), format!("{base}/c.txt"), format!("{base}/a.txt")])
        .output()
        .expect("curl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {stderr}");
    let mut want = b"first file\nsecond file\n".to_vec();
    want.extend_from_slice(&[b'c'; 100_000]);
    want.extend_from_slice(b"first file\n");
    assert_eq!(out.stdout.len(), want.len());
    assert!(out.stdout == want, "bodies differ");
    assert_eq!(stderr.matches("Connected to").count(), 1, "curl opened more than one connection: {stderr}");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn bad_request_reply_survives_a_peer_that_keeps_sending() {
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_request(|conn, req, _| ringman::http::respond(conn, req, ringman::protocols::http::Response::new(200)));
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    // A bad request followed by more bytes than the server will ever parse.
    write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 400");
    // Keep sending after the reply: the server lingers and drains it, then sees our close.
    for _ in 0..16 {
        write_all(&mut s, &[b'z'; 4096]);
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("a clean close after the reply, not a reset");
    assert!(String::from_utf8_lossy(&rest).contains("\r\n\r\n"));
}

#[test]
fn ids_stay_unique_across_a_ring_restart_and_lost_connections_get_on_close() {
    let (opened_tx, opened) = unbounded::<Connection>();
    let (closed_tx, closed) = unbounded::<Connection>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(move |c, _| opened_tx.send(*c).unwrap());
    w.on_close(move |c, _| closed_tx.send(*c).unwrap());
    w.on_message(|c, m, _| {
        c.send(m);
    });
    let (srv, addr) = start(w);
    let mut seen = std::collections::HashSet::new();
    let mut keep = Vec::new();
    for _ in 0..3 {
        let mut s = connect(addr);
        write_all(&mut s, b"hi\n");
        assert_eq!(read_exact(&mut s, 3), b"hi\n");
        keep.push(s);
        assert!(seen.insert(opened.recv_timeout(PATIENCE).unwrap().id()));
    }
    let before: Vec<_> = seen.iter().copied().collect();
    assert!(srv.worker(0).crash_thread_for_test(0));
    // The dead ring's three connections reach on_close, on the restarted thread.
    let mut lost: Vec<_> = (0..3).map(|_| closed.recv_timeout(PATIENCE).unwrap().id()).collect();
    let mut want = before.clone();
    lost.sort();
    want.sort();
    assert_eq!(lost, want);
    for mut s in keep {
        assert!(read_to_eof(&mut s).is_empty(), "the dead ring's sockets are closed");
    }
    // The open-connections counter forgets them too (it outlives the ring).
    wait_until("no connection counted open", || srv.worker(0).stats()[0].connections.get() == 0);
    // New connections after the restart never reuse an id.
    for _ in 0..20 {
        let mut s = connect(addr);
        write_all(&mut s, b"x\n");
        assert_eq!(read_exact(&mut s, 2), b"x\n");
        let id = opened.recv_timeout(PATIENCE).unwrap().id();
        assert!(seen.insert(id), "id {id} repeated");
    }
    assert_eq!(srv.worker(0).stats()[0].restarts.get(), 1);
}

#[test]
fn ids_are_not_reused_by_a_later_server_in_the_same_process() {
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        let (tx, rx) = unbounded::<Connection>();
        let mut w = echo_worker("text://127.0.0.1:0", 1);
        w.on_connect(move |c, _| tx.send(*c).unwrap());
        let (srv, addr) = start(w);
        for _ in 0..5 {
            let mut s = connect(addr);
            write_all(&mut s, b"a\n");
            read_exact(&mut s, 2);
            assert!(ids.insert(rx.recv_timeout(PATIENCE).unwrap().id()));
        }
        drop(srv);
    }
}

/// SO_LINGER 0: closing the socket sends a reset instead of a FIN.
fn reset_on_close(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0);
}

/// What on_close saw of its connection.
#[derive(Debug, Clone)]
struct Seen {
    context: Option<String>,
    remote: Option<SocketAddr>,
    read: u64,
    written: u64,
    open: bool,
}

fn observing_worker() -> (Worker<()>, crossbeam_channel::Receiver<Seen>) {
    let (tx, rx) = unbounded::<Seen>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(|c, _| c.set_context(String::from("user-42")));
    w.on_message(|c, m, _| match &m[..] {
        b"bye" => c.close(Some(b"closing")),
        b"kill" => c.destroy(),
        _ => {
            c.send(m);
        }
    });
    w.on_close(move |c, _| {
        tx.send(Seen {
            context: c.with_context(|s: &mut String| s.clone()),
            remote: c.remote_addr(),
            read: c.bytes_read(),
            written: c.bytes_written(),
            open: c.is_open(),
        })
        .unwrap();
    });
    (w, rx)
}

#[test]
fn on_close_sees_the_connection_whoever_closed_it() {
    let (w, rx) = observing_worker();
    let (_srv, addr) = start(w);
    // The peer closes (EOF).
    let mut s = connect(addr);
    let local = s.local_addr().unwrap();
    write_all(&mut s, b"ping\n");
    assert_eq!(read_exact(&mut s, 5), b"ping\n");
    drop(s);
    let seen = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(seen.context.as_deref(), Some("user-42"));
    assert_eq!(seen.remote, Some(local));
    assert_eq!((seen.read, seen.written, seen.open), (5, 5, false));
    // The peer resets.
    let mut s2 = connect(addr);
    let local = s2.local_addr().unwrap();
    reset_on_close(&s2);
    write_all(&mut s2, b"abc\n");
    assert_eq!(read_exact(&mut s2, 4), b"abc\n");
    drop(s2);
    let seen = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!((seen.context.as_deref(), seen.remote, seen.read), (Some("user-42"), Some(local), 4));
    // The server closes gracefully, then abortively.
    for (cmd, reply) in [(&b"bye\n"[..], &b"closing\n"[..]), (b"kill\n", b"")] {
        let mut s = connect(addr);
        let local = s.local_addr().unwrap();
        write_all(&mut s, cmd);
        assert_eq!(read_to_eof(&mut s), reply);
        let seen = rx.recv_timeout(PATIENCE).unwrap();
        assert_eq!(seen.context.as_deref(), Some("user-42"));
        assert_eq!(seen.remote, Some(local));
        assert_eq!((seen.read, seen.written), (cmd.len() as u64, reply.len() as u64));
    }
}

/// A custom protocol whose decoder, encoder or error reply panics on demand.
struct Fragile;
struct FragileCodec;

impl Protocol for Fragile {
    fn name(&self) -> &'static str {
        "fragile"
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(FragileCodec)
    }
    fn encoder(&self) -> Box<dyn Encoder> {
        Box::new(FragileCodec)
    }
}

impl Decoder for FragileCodec {
    fn input(&mut self, buf: &[u8], _max: usize) -> Result<Input, ProtocolError> {
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => Ok(Input::Packet(i + 1)),
            None => Ok(Input::Need),
        }
    }
    fn decode<'a>(&'a mut self, packet: &'a mut [u8]) -> Result<Option<Message<'a>>, ProtocolError> {
        let line = &packet[..packet.len() - 1];
        match line {
            b"decoder-panic" => panic!("decoder bug"),
            b"malformed" => Err(ProtocolError::Malformed { protocol: "fragile", reason: "asked to fail" }),
            _ => Ok(Some(Message::text(line))),
        }
    }
    fn error_reply(&mut self, _err: &ProtocolError, _out: &mut Vec<u8>) {
        panic!("error_reply bug");
    }
}

impl Encoder for FragileCodec {
    fn encode(&mut self, payload: &[u8], _kind: MessageKind, out: &mut Vec<u8>) {
        if payload == b"encoder-panic" {
            panic!("encoder bug");
        }
        out.extend_from_slice(payload);
        out.push(b'\n');
    }
}

#[test]
fn panicking_protocol_code_closes_only_its_connection() {
    let (tx, rx) = unbounded::<String>();
    let mut w = Worker::<()>::with_protocol("fragile://127.0.0.1:0", Arc::new(Fragile)).unwrap();
    w.count = 1;
    w.on_message(|c, m, _| {
        c.send(m);
    });
    w.on_error(move |_, e, _| tx.send(e.to_string()).unwrap());
    let (srv, addr) = start(w);
    let mut bystander = connect(addr);
    write_all(&mut bystander, b"hello\n");
    assert_eq!(read_exact(&mut bystander, 6), b"hello\n");
    for (line, what) in [
        (&b"decoder-panic\n"[..], "decoder bug"),
        (b"encoder-panic\n", "encoder bug"),
        (b"malformed\n", "error_reply bug"),
    ] {
        let mut s = connect(addr);
        write_all(&mut s, line);
        assert!(read_to_eof(&mut s).is_empty());
        let err = rx.recv_timeout(PATIENCE).unwrap();
        assert!(err.contains(what), "on_error said {err:?}, expected a panic naming {what:?}");
        // The ring is alive and the other connection did not notice.
        write_all(&mut bystander, b"still here\n");
        assert_eq!(read_exact(&mut bystander, 11), b"still here\n");
    }
    assert_eq!(srv.worker(0).stats()[0].restarts.get(), 0, "the ring thread died");
}

/// Runs engine calls from its `Drop`, as user values often do (unregistering from a room).
struct CallsIn(crossbeam_channel::Sender<&'static str>, &'static str);

impl Drop for CallsIn {
    fn drop(&mut self) {
        // Both need the engine: they must find it free, not borrowed by whoever drops us.
        let count = Timer::count();
        let t = Timer::add(Duration::from_secs(3600), false, || {});
        let _ = self.0.send(if t.is_ok() && count < usize::MAX { self.1 } else { "engine busy" });
        if let Ok(id) = t {
            Timer::del(id);
        }
    }
}

#[test]
fn user_drop_code_may_call_into_the_engine() {
    let (tx, rx) = unbounded::<&'static str>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    let t = tx.clone();
    w.on_connect(move |c, _| c.set_context(CallsIn(t.clone(), "context dropped")));
    w.on_message(move |c, m, _| match &m[..] {
        b"replace" => c.set_context(0u8),
        b"timer" => {
            let guard = CallsIn(tx.clone(), "timer closure dropped");
            let id = Timer::add(Duration::from_secs(3600), false, move || {
                let _ = &guard;
            })
            .unwrap();
            Timer::del(id);
            c.send("ok");
        }
        _ => {
            c.send("ok");
        }
    });
    let (srv, addr) = start(w);
    // Replaced context, deleted timer, and a context freed with its slot.
    let mut s = connect(addr);
    write_all(&mut s, b"replace\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "context dropped");
    write_all(&mut s, b"timer\n");
    assert_eq!(read_exact(&mut s, 3), b"ok\n");
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "timer closure dropped");
    let mut s2 = connect(addr);
    write_all(&mut s2, b"x\n");
    assert_eq!(read_exact(&mut s2, 3), b"ok\n");
    drop(s2);
    assert_eq!(rx.recv_timeout(PATIENCE).unwrap(), "context dropped");
    write_all(&mut s, b"y\n");
    assert_eq!(read_exact(&mut s, 3), b"ok\n");
    assert_eq!(srv.worker(0).stats()[0].restarts.get(), 0);
}

fn big_pipelined_responses(backpressure: bool) -> (Vec<u8>, usize) {
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.backpressure = backpressure;
    w.max_send_buffer_size = 64 * 1024;
    let big = Arc::new(vec![b'r'; 16 << 20]);
    let errors = Arc::new(AtomicUsize::new(0));
    let e2 = errors.clone();
    w.on_error(move |_, e, _| {
        if matches!(e, ConnError::SendBufferFull { .. }) {
            e2.fetch_add(1, Ordering::SeqCst);
        }
    });
    w.on_request(move |conn, req, _| {
        ringman::http::respond(conn, req, ringman::protocols::http::Response::new(200).body(&big[..]));
    });
    let (_srv, addr) = start(w);
    let mut s = connect(addr);
    // Three pipelined requests; we read nothing until all are written, so the first 16 MiB
    // answer cannot leave and the second is refused.
    write_all(
        &mut s,
        b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    if backpressure {
        // All three answers come; then we close.
        let mut all = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        while all.windows(12).filter(|w| w == b"HTTP/1.1 200").count() < 3 || all.len() < 3 * (16 << 20) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {} bytes", all.len());
            all.extend_from_slice(&buf[..n]);
        }
        return (all, errors.load(Ordering::SeqCst));
    }
    (read_to_eof(&mut s), errors.load(Ordering::SeqCst))
}

#[test]
fn pipelined_response_refused_by_a_full_buffer_closes_instead_of_skipping() {
    // Workerman's behaviour (no backpressure): the second answer is refused while the first
    // is still queued; the connection then closes after the first instead of skipping one.
    let (all, errors) = big_pipelined_responses(false);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(all.starts_with(b"HTTP/1.1 200"));
    assert_eq!(all.len() - head_end, 16 << 20, "exactly one whole response, then the close");
    assert!(errors >= 1, "on_error reported the refused send");
}

#[test]
fn backpressure_delivers_every_pipelined_response() {
    let (all, errors) = big_pipelined_responses(true);
    assert_eq!(all.windows(12).filter(|w| w == b"HTTP/1.1 200").count(), 3);
    assert_eq!(errors, 0);
}

#[test]
fn pause_resume_and_end_work_from_another_thread() {
    let (tx, rx) = unbounded::<Connection>();
    let (msg_tx, msgs) = unbounded::<Vec<u8>>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(move |c, _| tx.send(*c).unwrap());
    // "probe" comes from a second connection on the same ring and is echoed: its round trip
    // shows the ring read what arrived before it.
    w.on_message(move |c, m, _| {
        if m == b"probe" {
            c.send(m);
        } else {
            msg_tx.send(m.to_vec()).unwrap();
        }
    });
    let (srv, addr) = start(w);
    let mut s = connect(addr);
    let conn = rx.recv_timeout(PATIENCE).unwrap();
    let mut probe = connect(addr);
    rx.recv_timeout(PATIENCE).unwrap();
    let paused = |want: bool| {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let (rows, _) = ringman::ops::status::connections(srv.workers(), Duration::from_secs(5));
            if rows.iter().any(|r| r.info.id == conn.id() && r.info.paused == want) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "paused never became {want}");
            std::thread::yield_now();
        }
    };
    // This test thread is not a ring thread.
    conn.pause_recv();
    paused(true);
    write_all(&mut s, b"while paused\n");
    // Nothing is delivered while paused: the ring serves another connection's round trip
    // (and reports the paused one again) after these bytes were sent, and still has not
    // handed them over.
    write_all(&mut probe, b"probe\n");
    assert_eq!(read_exact(&mut probe, 6), b"probe\n");
    paused(true);
    assert_eq!(msgs.try_recv().ok(), None, "a message was delivered while paused");
    conn.resume_recv();
    paused(false);
    assert_eq!(msgs.recv_timeout(PATIENCE).unwrap(), b"while paused");
    conn.end(Some(b"the end"));
    assert_eq!(read_to_eof(&mut s), b"the end");
    s.flush().unwrap();
}

/// Ids kept as numbers (`as_u64`, for instance in another service) find their connection
/// again with `from_u64`, including connections opened after the first such lookup, and
/// never find one that closed.
#[test]
fn ids_rebuilt_from_numbers_reach_their_connection_until_it_closes() {
    let (tx, rx) = unbounded::<SendStatus>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_connect(|c, _| {
        c.send(c.id().as_u64().to_string());
    });
    // "<id>" sends "hello <id>" to that connection, from this ring thread.
    w.on_message(move |_, m, _| {
        let id: u64 = std::str::from_utf8(m).unwrap().parse().unwrap();
        let target = Connection::from_id(ringman::ConnectionId::from_u64(id));
        tx.send(target.send(format!("hello {id}"))).unwrap();
    });
    let (_srv, addr) = start(w);
    let id_of = |s: &mut std::net::TcpStream| {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        String::from_utf8(line).unwrap()
    };
    let mut a = connect(addr);
    let ida = id_of(&mut a);
    let mut b = connect(addr);
    let _idb = id_of(&mut b);
    write_all(&mut b, format!("{ida}\n").as_bytes());
    assert_ne!(rx.recv_timeout(PATIENCE).unwrap(), SendStatus::Failed);
    assert_eq!(read_exact(&mut a, 7 + ida.len()), format!("hello {ida}\n").as_bytes());
    // A connection opened after the first rebuilt lookup.
    let mut c = connect(addr);
    let idc = id_of(&mut c);
    write_all(&mut b, format!("{idc}\n").as_bytes());
    assert_ne!(rx.recv_timeout(PATIENCE).unwrap(), SendStatus::Failed);
    assert_eq!(read_exact(&mut c, 7 + idc.len()), format!("hello {idc}\n").as_bytes());
    // A closed one answers Failed.
    drop(a);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        write_all(&mut b, format!("{ida}\n").as_bytes());
        if rx.recv_timeout(PATIENCE).unwrap() == SendStatus::Failed {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a closed connection still answered");
    }
}

#[test]
fn close_and_destroy_work_from_another_thread() {
    let (tx, rx) = unbounded::<Connection>();
    let (closed_tx, closed) = unbounded::<Connection>();
    let mut w = Worker::<()>::new("text://127.0.0.1:0").unwrap();
    w.count = 2;
    w.on_connect(move |c, _| tx.send(*c).unwrap());
    w.on_close(move |c, _| closed_tx.send(*c).unwrap());
    let (_srv, addr) = start(w);
    // From this test thread (not a ring thread): close flushes its data, then closes.
    let mut a = connect(addr);
    let ca = rx.recv_timeout(PATIENCE).unwrap();
    ca.close(Some(b"bye"));
    assert_eq!(read_to_eof(&mut a), b"bye\n");
    assert_eq!(closed.recv_timeout(PATIENCE).unwrap().id(), ca.id());
    // destroy closes at once.
    let mut b = connect(addr);
    let cb = rx.recv_timeout(PATIENCE).unwrap();
    cb.destroy();
    assert!(read_to_eof(&mut b).is_empty());
    assert_eq!(closed.recv_timeout(PATIENCE).unwrap().id(), cb.id());
    // Once gone, more calls change nothing and on_close does not repeat.
    ca.destroy();
    cb.close(None);
    let mut c = connect(addr);
    let cc = rx.recv_timeout(PATIENCE).unwrap();
    cc.destroy();
    assert!(read_to_eof(&mut c).is_empty());
    assert_eq!(closed.recv_timeout(PATIENCE).unwrap().id(), cc.id(), "an extra on_close arrived");
}
