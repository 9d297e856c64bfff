//! Helpers shared by the integration tests: real servers on loopback, std::net clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringman::{Running, Server, Worker};

/// A worker that echoes every message, on `threads` ring threads.
pub fn echo_worker(addr: &str, threads: usize) -> Worker<()> {
    let mut w = Worker::<()>::new(addr).unwrap();
    w.count = threads;
    w.on_message(|c, m, _| {
        c.send(m);
    });
    w
}

/// Generous bound so a broken build fails instead of hanging; never a performance check.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Waits for `cond`, checking every few milliseconds; panics naming `what` after PATIENCE.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(std::time::Instant::now() < end, "timed out after {PATIENCE:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn start<S: Default + 'static>(w: Worker<S>) -> (Running, SocketAddr) {
    let running = Server::new().add(w).start().expect("server starts");
    let addr = running.local_addr(0).expect("bound address");
    (running, addr)
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Shrinks `s`'s receive buffer to `bytes` (`SO_RCVBUF`): a peer whose reads lag fills the
/// other end's send buffer sooner.
pub fn small_receive_buffer(s: &TcpStream, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setting an option on a socket the caller owns, with a valid int.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
}

pub fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until the peer closes cleanly (FIN); returns everything received. Panics when the
/// read fails instead: a reset, or no close within PATIENCE (the read timeout [`connect`]
/// sets), so "the server closed the connection" fails against a server that never closes.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    if s.read_timeout().ok().flatten().is_none() {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    if let Err(e) = s.read_to_end(&mut out) {
        panic!("expected the peer to close the connection, got {e} after {} bytes", out.len());
    }
    out
}

/// How a connection the peer is expected to end has ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A clean close (FIN).
    Eof,
    /// A reset (RST), the expected outcome when the peer aborts with unread data pending.
    Reset,
}

/// Reads until the peer ends the connection, by a close or a reset; returns what arrived and
/// how it ended. Panics on any other error, the read timeout (PATIENCE) included.
pub fn read_to_end_or_reset(s: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut out = Vec::new();
    if s.read_timeout().ok().flatten().is_none() {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, Ending::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, Ending::Reset),
            Err(e) => panic!("expected the peer to end the connection, got {e} after {} bytes", out.len()),
        }
    }
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

pub fn write_all(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).expect("write");
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A Python server script (`python3 -c`), killed when dropped. Its first stdout line is the
/// port it listens on; later lines (reports of what it saw) arrive through [`PyServer::line`].
pub struct PyServer {
    child: std::process::Child,
    pub port: u16,
    lines: crossbeam_channel::Receiver<String>,
}

impl PyServer {
    pub fn start(script: &str) -> PyServer {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("python3 runs (the tests need python3 with the websockets package)");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("server printed {line:?}"));
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        PyServer { child, port, lines }
    }

    /// The server's next report line (within PATIENCE).
    pub fn line(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("a line from the python server")
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python asyncio TCP server on 127.0.0.1 (port 0, reported on stdout) serving each
/// connection with `handler`, the definition of `async def handle(r, w)` (a stream reader
/// and writer); `modules` are imported besides asyncio.
pub fn py_tcp_server(modules: &[&str], handler: &str) -> PyServer {
    let imports: String = modules.iter().map(|m| format!("import {m}\n")).collect();
    PyServer::start(&format!(
        "import asyncio\n{imports}{handler}\n\
         async def main():\n    s = await asyncio.start_server(handle, '127.0.0.1', 0)\n\
         \x20   print(s.sockets[0].getsockname()[1], flush=True)\n    await s.serve_forever()\n\
         asyncio.run(main())\n"
    ))
}

/// A Python `websockets` server on 127.0.0.1 (port 0, reported on stdout) running
/// `handler` (a name defined in `defs`) with extra `serve` keyword arguments `serve_args`;
/// `modules` are imported besides asyncio.
pub fn py_ws_server(modules: &[&str], handler: &str, serve_args: &str, defs: &str) -> PyServer {
    let imports: String = modules.iter().map(|m| format!("import {m}\n")).collect();
    let sep = if serve_args.is_empty() { "" } else { ", " };
    PyServer::start(&format!(
        "import asyncio\n{imports}from websockets.asyncio.server import serve\n{defs}\n\
         async def main():\n    async with serve({handler}, '127.0.0.1', 0{sep}{serve_args}) as s:\n\
         \x20       print(list(s.sockets)[0].getsockname()[1], flush=True)\n\
         \x20       await asyncio.get_running_loop().create_future()\n\
         asyncio.run(main())\n"
    ))
}

/// An asyncio echo server: every byte back, until the peer closes.
pub fn py_echo() -> PyServer {
    py_tcp_server(
        &[],
        r#"
async def handle(r, w):
    while True:
        d = await r.read(65536)
        if not d:
            break
        w.write(d)
        await w.drain()
    w.close()
"#,
    )
}

#[path = "../../bench/src/ports.rs"]
mod ports;

/// A port for a peer that cannot report the port it picked: outside the kernel's ephemeral
/// range and reserved for this test process (the bench crate's `ports` module, compiled in
/// here). A port released by a bind to port 0 is in the ephemeral range, where the kernel
/// hands it to the next connection that needs a source port: that race lost CI runs.
pub fn free_port() -> u16 {
    ports::free_port().expect("a free port outside the ephemeral range")
}

/// Builds an example once into the target dir of this test binary; returns its path.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    // <target>/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target = profile_dir.parent().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.args(["build", "--example", name]).env("CARGO_TARGET_DIR", target);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("cargo build --example");
    assert!(st.success(), "building the {name} example failed");
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.exists(), "{bin:?} missing");
    bin
}

/// A `redis-server` this test started (no persistence), killed when dropped.
/// `restart` kills it and starts a fresh one on the same port (an outage; data is lost).
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::with_args(&[])
    }

    /// With extra `redis-server` arguments (`--requirepass`, ...).
    pub fn with_args(extra: &[&str]) -> RedisServer {
        let mut s =
            RedisServer { child: None, port: free_port(), extra: extra.iter().map(|s| s.to_string()).collect() };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        cmd.args(&self.extra);
        let child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server does not start: {e} (scripts/test installs it)"));
        self.child = Some(child);
        let port = self.port;
        let child = self.child.as_mut().expect("just set");
        wait_until("redis-server accepts connections", || {
            // (Exited: a bad argument, or the port taken — never talk to someone else's.)
            assert!(child.try_wait().unwrap().is_none(), "redis-server exited at start");
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops it (connections drop); `start_again` brings it back on the same port.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    /// Runs one command over a fresh connection (`AUTH`ed with `password` first when
    /// given) and returns the raw reply bytes (one read of a short reply).
    pub fn raw(&self, password: Option<&str>, db: u32, args: &[&str]) -> String {
        let mut s = connect(SocketAddr::from(([127, 0, 0, 1], self.port)));
        let enc = |args: &[&str]| {
            let mut v = format!("*{}\r\n", args.len()).into_bytes();
            for a in args {
                v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
            v
        };
        let mut expect_ok = 0;
        if let Some(p) = password {
            s.write_all(&enc(&["AUTH", p])).unwrap();
            expect_ok += 1;
        }
        let db = db.to_string();
        s.write_all(&enc(&["SELECT", &db])).unwrap();
        expect_ok += 1;
        s.write_all(&enc(args)).unwrap();
        let want_prefix = "+OK\r\n".repeat(expect_ok);
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "redis closed");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(rest) = text.strip_prefix(&want_prefix) {
                let complete = if rest.starts_with('$') && !rest.starts_with("$-1") {
                    rest.matches("\r\n").count() >= 2
                } else {
                    rest.ends_with("\r\n")
                };
                if complete {
                    return rest.to_string();
                }
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A ring with no listener, to run client code on.
pub fn ring() -> Running {
    let mut w = ringman::Worker::<()>::without_listener();
    w.count = 1;
    ringman::Server::new().add(w).start().expect("a ring starts")
}

/// Runs the future `make` builds as a task on `ring`'s thread and returns its output.
pub fn on_ring<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    ring: &Running,
    make: impl FnOnce() -> F + Send + 'static,
) -> T {
    let (tx, rx) = crossbeam_channel::unbounded();
    assert!(ring.worker(0).run_on(0, move || {
        ringman::spawn(async move {
            let _ = tx.send(make().await);
        })
        .unwrap();
    }));
    rx.recv_timeout(PATIENCE * 2).expect("the task answered")
}

/// Ports `p` for `n` servers that each also listen on `p + 1` (the chat example's page):
/// every port and its successor free a moment ago, and no two pairs overlapping.
pub fn free_port_pairs(n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| loop {
            // A reserved port is never handed out again, so pairs cannot overlap.
            let p = free_port();
            if ports::try_reserve(p + 1) {
                break p;
            }
        })
        .collect()
}

/// Sockets held in the fixed-file tables of this process's rings, as the kernel reports
/// them (each io_uring descriptor's `/proc/self/fdinfo`: the entries listed under
/// `UserFiles`). A socket held there stays open whatever happened to its descriptor.
/// The kernel lists the table only when it can take the ring's lock: a ring busy at that
/// moment is read again.
pub fn sockets_in_file_tables() -> usize {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
        let is_ring = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().contains("io_uring"));
        if !is_ring {
            continue;
        }
        let info = entry.path().to_string_lossy().replace("/fd/", "/fdinfo/");
        for _ in 0..1000 {
            let Ok(text) = std::fs::read_to_string(&info) else { break };
            let Some(start) = text.find("UserFiles:") else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            total += text[start..]
                .lines()
                .skip(1)
                .take_while(|l| !l.starts_with("UserBufs:"))
                .filter(|l| l.trim_start().split_once(':').is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
                .count();
            break;
        }
    }
    total
}
