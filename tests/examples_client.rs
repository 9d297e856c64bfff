//! The `client` and `proxy` examples, built and run as processes against peers this project
//! did not write: Python asyncio echo servers and a Python `websockets` echo server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};

use common::{
    connect, example_binary, py_echo, py_tcp_server, read_exact, read_to_end_or_reset, read_to_eof, PyServer, PATIENCE,
};

const WS_ECHO: &str = r#"
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, '127.0.0.1', 0, max_size=None) as s:
        print(list(s.sockets)[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()
asyncio.run(main())
"#;

/// A WebSocket echo server that answers every message with a text frame, whatever it got
/// (as Workerman's default websocket server does).
const WS_TEXT_ECHO: &str = r#"
import asyncio
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m.encode() if isinstance(m, str) else m, text=True)
async def main():
    async with serve(echo, '127.0.0.1', 0, max_size=None) as s:
        print(list(s.sockets)[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().create_future()
asyncio.run(main())
"#;

/// Output of a finished example run.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// Collects a pipe on a thread.
fn collect(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs the client example with `args` until it exits on its own (killed after PATIENCE).
fn run_client(args: &[&str]) -> Run {
    let mut child = Command::new(example_binary("client"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client example starts");
    let (out, err) = (collect(child.stdout.take().unwrap()), collect(child.stderr.take().unwrap()));
    let end = std::time::Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client {args:?} did not exit within {PATIENCE:?}; stderr: {}", err.join().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = child.wait().unwrap();
    Run { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Runs the client and insists on `ok: N connections x M messages` and exit 0.
fn expect_ok(url: &str, conns: usize, messages: usize, size: usize) {
    let (c, m, s) = (conns.to_string(), messages.to_string(), size.to_string());
    let run = run_client(&[url, "--conns", &c, "--messages", &m, "--size", &s]);
    assert!(
        run.status.success() && run.last_line() == format!("ok: {conns} connections x {messages} messages"),
        "client {url} x{conns} x{messages} of {size} B: {:?}\nstdout: {}\nstderr: {}",
        run.status,
        run.stdout,
        run.stderr
    );
}

#[test]
fn client_example_checks_pipelined_echoes_over_tcp_text_and_frame() {
    let server = py_echo();
    let p = server.port;
    for (scheme, sizes) in [("tcp", [1, 1000, 70_000]), ("text", [1, 100, 20_000]), ("frame", [0, 1000, 200_000])] {
        for size in sizes {
            let messages = if size > 50_000 { 20 } else { 300 };
            expect_ok(&format!("{scheme}://127.0.0.1:{p}"), 5, messages, size);
        }
    }
    // Defaults: one connection, one message of 64 bytes; a name instead of an address.
    let run = run_client(&[&format!("text://localhost:{p}")]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.last_line(), "ok: 1 connections x 1 messages");
}

#[test]
fn client_example_checks_pipelined_echoes_over_websocket() {
    let server = PyServer::start(WS_ECHO);
    let p = server.port;
    expect_ok(&format!("ws://127.0.0.1:{p}/echo"), 4, 200, 100);
    expect_ok(&format!("ws://127.0.0.1:{p}/"), 3, 50, 10_000);
    // Frames with 16- and 64-bit lengths, bigger than the default send buffer in one burst.
    expect_ok(&format!("ws://127.0.0.1:{p}"), 2, 4, 600_000);
}

/// Against a server that echoes everything as text frames, the default (text frames of
/// UTF-8) passes; `--binary` against the plain echo server checks binary frames.
#[test]
fn client_example_sends_text_frames_by_default_and_binary_on_request() {
    let text_only = PyServer::start(WS_TEXT_ECHO);
    expect_ok(&format!("ws://127.0.0.1:{}/", text_only.port), 3, 100, 1000);
    let echo = PyServer::start(WS_ECHO);
    let url = format!("ws://127.0.0.1:{}/", echo.port);
    let run = run_client(&[&url, "--conns", "2", "--messages", "50", "--size", "3000", "--binary"]);
    assert!(run.status.success() && run.last_line() == "ok: 2 connections x 50 messages", "{}", run.stderr);
    let run = run_client(&[&format!("text://127.0.0.1:{}", echo.port), "--binary"]);
    assert!(!run.status.success(), "--binary is for ws:// only");
}

#[test]
fn client_example_reports_a_refused_port_and_exits_1() {
    let dead = common::free_port();
    for scheme in ["tcp", "ws"] {
        let run = run_client(&[&format!("{scheme}://127.0.0.1:{dead}"), "--conns", "3"]);
        assert_eq!(run.status.code(), Some(1), "{scheme}: stdout {} stderr {}", run.stdout, run.stderr);
        let line = run.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{}", run.stderr));
        assert!(line.contains("refused"), "{line}");
        assert!(!run.stdout.contains("ok:"), "{}", run.stdout);
    }
}

#[test]
fn client_example_reports_an_early_close_and_a_corrupted_echo() {
    // Answers the first line, then closes.
    let closing = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    w.write(await r.readline())
    await w.drain()
    w.close()
"#,
    );
    let run = run_client(&[&format!("text://127.0.0.1:{}", closing.port), "--messages", "5"]);
    assert_eq!(run.status.code(), Some(1), "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.lines().any(|l| l.starts_with("error: ") && l.contains("closed early")), "{}", run.stderr);
    // Echoes every chunk with its first byte flipped.
    let corrupt = py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    first = True
    while d := await r.read(65536):
        if first:
            d = bytes([d[0] ^ 1]) + d[1:]
            first = False
        w.write(d)
        await w.drain()
    w.close()
"#,
    );
    let run = run_client(&[&format!("tcp://127.0.0.1:{}", corrupt.port), "--messages", "3"]);
    assert_eq!(run.status.code(), Some(1), "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.lines().any(|l| l.starts_with("error: ") && l.contains("byte 0")), "{}", run.stderr);
}

/// The proxy example, listening on a port it picked; killed on drop.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let mut child = Command::new(example_binary("proxy"))
            .args(["tcp://127.0.0.1:0", upstream])
            .stdout(Stdio::piped())
            .spawn()
            .expect("proxy example starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // "proxy on 127.0.0.1:PORT, upstream ..."
        let addr = line
            .strip_prefix("proxy on ")
            .and_then(|r| r.split(',').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("proxy printed {line:?}"));
        Proxy { child, addr }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn proxy_example_carries_a_multi_megabyte_burst_both_ways() {
    let server = py_echo();
    let proxy = Proxy::start(&format!("tcp://localhost:{}", server.port));
    let mut s = connect(proxy.addr);
    let body: Vec<u8> = (0..8_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let body = body.clone();
        std::thread::spawn(move || w.write_all(&body).unwrap())
    };
    let got = read_exact(&mut s, body.len());
    writer.join().unwrap();
    assert!(got == body, "the echo through the proxy differs");
    // The client example through the proxy: several connections, pipelined.
    expect_ok(&format!("tcp://{}", proxy.addr), 4, 100, 10_000);
    expect_ok(&format!("frame://{}", proxy.addr), 3, 10, 300_000);
}

/// Waits for a byte, sends 3 MB and closes (with whatever else was sent unread).
fn closing_upstream() -> PyServer {
    py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    await r.read(1)
    w.write(bytes(i % 251 for i in range(3000000)))
    await w.drain()
    w.close()
"#,
    )
}

#[test]
fn proxy_example_relays_an_upstream_that_closes_mid_stream() {
    let server = closing_upstream();
    let proxy = Proxy::start(&format!("tcp://127.0.0.1:{}", server.port));
    for _ in 0..2 {
        let mut s = connect(proxy.addr);
        // One byte: exactly what the upstream reads (unread bytes would make its close a reset).
        s.write_all(b"g").unwrap();
        let got = read_to_eof(&mut s);
        assert_eq!(got.len(), 3_000_000, "every byte the upstream sent, then the close");
        assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
}

#[test]
fn proxy_example_survives_an_upstream_that_resets_under_a_sending_client() {
    // The upstream closes with the client's bytes unread (a reset): the client is closed
    // (what it gets is a prefix of what the upstream sent) and the proxy keeps serving.
    let server = closing_upstream();
    let proxy = Proxy::start(&format!("tcp://127.0.0.1:{}", server.port));
    let mut s = connect(proxy.addr);
    s.write_all(b"go").unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = [7u8; 16384];
            while w.write_all(&chunk).is_ok() {}
        })
    };
    // The client's unread bytes make the proxy's close a reset here, or not, by timing;
    // either ends the connection (a connection left open fails).
    let (got, _ending) = read_to_end_or_reset(&mut s);
    assert!(got.len() <= 3_000_000);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "a prefix of the upstream's bytes");
    writer.join().unwrap();
    let mut again = connect(proxy.addr);
    again.write_all(b"x").unwrap();
    assert_eq!(read_to_eof(&mut again).len(), 3_000_000, "the proxy still serves");
}

#[test]
fn proxy_example_closes_the_client_when_the_upstream_refuses() {
    let dead = common::free_port();
    let mut proxy = Proxy::start(&format!("tcp://127.0.0.1:{dead}"));
    for _ in 0..3 {
        let mut s: TcpStream = connect(proxy.addr);
        let _ = s.write_all(b"hello");
        assert!(read_to_eof(&mut s).is_empty(), "closed without a byte");
    }
    assert!(proxy.child.try_wait().unwrap().is_none(), "the proxy keeps running");
}
