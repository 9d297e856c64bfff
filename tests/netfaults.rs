//! Faults on a real network path. The server and its clients live in two network namespaces
//! joined by a veth pair; nftables drops or resets packets and tc's tbf throttles the link,
//! always on the veth ends inside the namespaces, so nothing reaches the host's own rules:
//!
//! * 3 % random loss both ways while 20 clients (python asyncio and `websockets`) burst mixed
//!   sizes up to 300 KB over text, frame and websocket: everything echoed, in order;
//! * the echo direction throttled to a few Mbit/s while 20 clients each burst 3 MB at the
//!   echo example: nothing lost, and the server's peak RSS stays under 64 MiB;
//! * resets injected mid-stream: each affected connection gets `on_close` once, the others
//!   and the server carry on;
//! * peers that vanish silently: found by the idle timeout (text) and the WebSocket heartbeat
//!   (`ConnError::NoPong`), while the other clients carry on;
//! * the same with no application heartbeat at all: short TCP keepalive settings find an idle
//!   vanished peer, and the matching `TCP_USER_TIMEOUT` one the server is sending to.
//!
//! Loss and resets are applied where packets arrive (the input hook of the receiving
//! namespace), as on a real path: a sender's own stack never learns of a drop locally.
//! They need root (CI runs them as root) and `ip`, `tc` and `nft`; a host that cannot create
//! network namespaces must say so with `RINGMAN_NO_NETNS=1`, or they fail.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use net::{Link, Side};
use ringman::{ConnError, Connection, ConnectionId, Keepalive, Running, SendStatus, Server, Worker};

/// Bound for runs that move tens of megabytes through a lossy or throttled link: generous, so
/// a broken build fails instead of hanging; never a performance check.
const LONG_PATIENCE: Duration = Duration::from_secs(600);

/// Bound for each step of the tests that steer single connections (a minute where seconds
/// suffice): again only so that a broken build fails instead of hanging.
const STEP_PATIENCE: Duration = Duration::from_secs(60);

/// Two network namespaces joined by a veth pair, removed on drop.
mod net {
    use std::io::Write;
    use std::net::Ipv4Addr;
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};

    /// One end of the link.
    #[derive(Clone, Copy, Debug)]
    pub enum Side {
        Server,
        Client,
    }

    /// Prefix of the namespaces' names; the test process's pid follows it, so leftovers of a
    /// killed run can be recognised and removed.
    const PREFIX: &str = "ringman-nf-";

    /// `ns-s` (server, 10.77.TAG.1/24) and `ns-c` (client, 10.77.TAG.2/24).
    pub struct Link {
        tag: u8,
        server_ns: String,
        client_ns: String,
        /// One link at a time: each test's traffic (20 clients, throttled links) is meant to
        /// have the machine's two cores to itself, so its deadlines never measure another
        /// test's load. Released after `Drop` removed the namespaces (fields drop last).
        _turn: std::sync::MutexGuard<'static, ()>,
    }

    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(prog)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{prog}: {e}"))?;
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).map_err(|e| format!("{prog} stdin: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("{prog}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{prog} {}: {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Removes namespaces left by test processes that no longer exist (killed runs).
    fn sweep_stale() {
        let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = run("ip", &["netns", "del", &name], None);
            }
        }
    }

    impl Link {
        /// Builds the link for test number `tag` (unique per test), once no other test holds one.
        /// `None` (the test is skipped) when it cannot be built and `RINGMAN_NO_NETNS=1` is
        /// set; a panic otherwise.
        pub fn new(tag: u8) -> Option<Link> {
            // (A test that panicked poisoned the lock; its namespaces are gone all the same.)
            let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
            sweep_stale();
            let pid = std::process::id();
            let link = Link {
                tag,
                server_ns: format!("{PREFIX}{pid}-{tag}-s"),
                client_ns: format!("{PREFIX}{pid}-{tag}-c"),
                _turn: turn,
            };
            match link.build() {
                Ok(()) => Some(link),
                Err(e) if std::env::var_os("RINGMAN_NO_NETNS").is_some_and(|v| v == "1") => {
                    eprintln!("RINGMAN_NO_NETNS=1: network fault test skipped ({e})");
                    None
                }
                Err(e) => panic!(
                    "cannot build two network namespaces joined by a veth pair ({e}): these tests need root, \
                     iproute2 and nftables; set RINGMAN_NO_NETNS=1 to skip them"
                ),
            }
        }

        fn build(&self) -> Result<(), String> {
            let (s, c) = (self.server_ns.as_str(), self.client_ns.as_str());
            run("ip", &["netns", "add", s], None)?;
            run("ip", &["netns", "add", c], None)?;
            // Both ends are named inside their own namespace: nothing is created in the host's.
            run(
                "ip",
                &[
                    "-n",
                    s,
                    "link",
                    "add",
                    self.dev(Side::Server),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    self.dev(Side::Client),
                    "netns",
                    c,
                ],
                None,
            )?;
            for side in [Side::Server, Side::Client] {
                let (ns, dev) = (self.ns(side), self.dev(side));
                let addr = format!("{}/24", self.ip(side));
                run("ip", &["-n", ns, "addr", "add", &addr, "dev", dev], None)?;
                // One segment per packet (no 64 KiB GSO bursts), so a dropped packet is what
                // it would be on a wire: one MSS.
                run("ip", &["-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1", "up"], None)?;
                run("ip", &["-n", ns, "link", "set", "dev", "lo", "up"], None)?;
                run("ip", &["netns", "exec", ns, "nft", "list", "ruleset"], None)?;
                run("ip", &["netns", "exec", ns, "tc", "qdisc", "show", "dev", dev], None)?;
            }
            Ok(())
        }

        /// The namespace's name.
        pub fn ns(&self, side: Side) -> &str {
            match side {
                Side::Server => &self.server_ns,
                Side::Client => &self.client_ns,
            }
        }

        /// The veth end's name inside its namespace.
        pub fn dev(&self, side: Side) -> &'static str {
            match side {
                Side::Server => "veth-s",
                Side::Client => "veth-c",
            }
        }

        pub fn ip(&self, side: Side) -> Ipv4Addr {
            Ipv4Addr::new(10, 77, self.tag, if matches!(side, Side::Server) { 1 } else { 2 })
        }

        /// Loads an nftables ruleset (`nft -f` syntax) into the namespace.
        pub fn nft(&self, side: Side, ruleset: &str) {
            run("ip", &["netns", "exec", self.ns(side), "nft", "-f", "-"], Some(ruleset))
                .unwrap_or_else(|e| panic!("{e}\nruleset:\n{ruleset}"));
        }

        /// The namespace's ruleset, with counters.
        pub fn nft_list(&self, side: Side) -> String {
            run("ip", &["netns", "exec", self.ns(side), "nft", "list", "ruleset"], None).unwrap()
        }

        /// Runs `tc ARGS` in the namespace.
        pub fn tc(&self, side: Side, args: &[&str]) -> String {
            let mut all = vec!["netns", "exec", self.ns(side), "tc"];
            all.extend_from_slice(args);
            run("ip", &all, None).unwrap_or_else(|e| panic!("{e}"))
        }

        /// `ip netns exec NS program`: add the arguments, then spawn.
        pub fn command(&self, side: Side, program: impl AsRef<std::ffi::OsStr>) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", self.ns(side)]).arg(program);
            c
        }

        /// Moves the calling thread into the namespace. Sockets it creates from then on
        /// belong there (and stay there when used from other threads); threads it spawns
        /// start there.
        pub fn enter(&self, side: Side) {
            let path = format!("/run/netns/{}", self.ns(side));
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: `f` is an open namespace file for the whole call; setns(CLONE_NEWNET)
            // changes only this thread's network namespace and reads no memory of ours.
            let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        }

        /// Runs `f` on a fresh thread inside the namespace and returns its result.
        pub fn run_in<T: Send>(&self, side: Side, f: impl FnOnce() -> T + Send) -> T {
            std::thread::scope(|s| {
                s.spawn(|| {
                    self.enter(side);
                    f()
                })
                .join()
                .expect("thread in the namespace")
            })
        }
    }

    impl Drop for Link {
        fn drop(&mut self) {
            // Processes still inside keep a namespace alive until they exit; the name goes now.
            let _ = run("ip", &["netns", "del", &self.server_ns], None);
            let _ = run("ip", &["netns", "del", &self.client_ns], None);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The server side: echo workers that record what happens to each connection.

// The payloads are read through `Debug`, in assertion messages.
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum Event {
    Connect { id: u64, peer: SocketAddr },
    Error { id: u64, error: String, no_pong: bool },
    SendFailed { id: u64 },
    BufferFull { id: u64 },
    BufferDrain { id: u64 },
    Close { id: u64 },
}

/// What the server's callbacks saw, in order.
#[derive(Default)]
struct Events {
    list: Mutex<Vec<Event>>,
    changed: Condvar,
}

impl Events {
    fn push(&self, e: Event) {
        self.lock().push(e);
        self.changed.notify_all();
    }

    /// The list, even after a failed test's panic poisoned the lock (ring threads still
    /// report while the server stops).
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.list.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `cond` holds for the events (panics naming `what` after `patience`);
    /// returns them.
    fn wait_for(&self, what: &str, patience: Duration, cond: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let end = Instant::now() + patience;
        let mut list = self.lock();
        while !cond(&list) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let seen = list.clone();
                drop(list);
                panic!("timed out after {patience:?} waiting until {what}; server events: {seen:#?}");
            }
            list = self.changed.wait_timeout(list, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        list.clone()
    }

    fn snapshot(&self) -> Vec<Event> {
        self.lock().clone()
    }
}

fn closes(ev: &[Event], id: u64) -> usize {
    ev.iter().filter(|e| matches!(e, Event::Close { id: i } if *i == id)).count()
}

fn errors(ev: &[Event], id: u64) -> Vec<&Event> {
    ev.iter().filter(|e| matches!(e, Event::Error { id: i, .. } | Event::SendFailed { id: i } if *i == id)).collect()
}

/// The server-side id of the connection from `port`.
fn id_of(ev: &[Event], port: u16) -> Option<u64> {
    ev.iter().find_map(|e| match e {
        Event::Connect { id, peer } if peer.port() == port => Some(*id),
        _ => None,
    })
}

/// An echo worker on `ip`, port chosen by the kernel, recording into `events`. Every message
/// goes back under its own kind (text stays text, binary stays binary).
fn echo_worker(scheme: &str, ip: Ipv4Addr, events: &Arc<Events>) -> Worker<()> {
    let mut w = Worker::<()>::new(&format!("{scheme}://{ip}:0")).unwrap();
    w.count = 2;
    w.name = scheme.into();
    let ev = events.clone();
    w.on_connect(move |c, _| ev.push(Event::Connect { id: c.id().as_u64(), peer: c.remote_addr().unwrap() }));
    let ev = events.clone();
    w.on_message(move |c, m, _| {
        if c.send_as(m.data, m.kind) == SendStatus::Failed {
            ev.push(Event::SendFailed { id: c.id().as_u64() });
        }
    });
    let ev = events.clone();
    w.on_error(move |c, e, _| {
        let no_pong = matches!(e, ConnError::NoPong { .. });
        ev.push(Event::Error { id: c.id().as_u64(), error: e.to_string(), no_pong })
    });
    let ev = events.clone();
    w.on_buffer_full(move |c, _| ev.push(Event::BufferFull { id: c.id().as_u64() }));
    let ev = events.clone();
    w.on_buffer_drain(move |c, _| ev.push(Event::BufferDrain { id: c.id().as_u64() }));
    let ev = events.clone();
    w.on_close(move |c, _| ev.push(Event::Close { id: c.id().as_u64() }));
    w
}

/// Starts the workers inside the server namespace: the listening sockets are bound there,
/// and the ring threads (spawned from there) live there.
fn start_in(link: &Link, workers: impl FnOnce() -> Server + Send) -> Running {
    link.run_in(Side::Server, || workers().start().expect("server starts"))
}

// ---------------------------------------------------------------------------------------
// Peer processes.

/// A child process killed (and reaped) on drop, whatever happens to the test.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn collect(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs `cmd` to its end (killed after `patience`), calling `tick` every few milliseconds
/// meanwhile; returns (success, stdout, stderr).
fn run_to_end(mut cmd: Command, patience: Duration, mut tick: impl FnMut()) -> (bool, String, String) {
    let mut p = Proc(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("peer process starts"));
    let (out, err) = (collect(p.0.stdout.take().unwrap()), collect(p.0.stderr.take().unwrap()));
    let end = Instant::now() + patience;
    let status = loop {
        if let Some(st) = p.0.try_wait().unwrap() {
            break st;
        }
        tick();
        if Instant::now() >= end {
            let _ = p.0.kill();
            let _ = p.0.wait();
            panic!(
                "peer {cmd:?} still running after {patience:?}\nstdout: {}\nstderr: {}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

/// Python clients: `ARGS = host text_port frame_port ws_port n_text n_frame n_ws bytes`.
/// Each client sends, in one pipelined burst, messages of mixed sizes (1 B to 300 KB, each
/// burst has a 300 KB one) adding up to at least `bytes`, while reading the echoes; it checks
/// them byte for byte and in order (text and frame: the whole echoed stream equals the sent
/// one; websocket: each message, with its kind) and prints `ok KIND N MESSAGES BYTES` or
/// `fail KIND N ERROR`.
const PY_CLIENTS: &str = r#"
import asyncio, random, struct, sys
from websockets.asyncio.client import connect

host = sys.argv[1]
ports = {'text': int(sys.argv[2]), 'frame': int(sys.argv[3]), 'ws': int(sys.argv[4])}
counts = {'text': int(sys.argv[5]), 'frame': int(sys.argv[6]), 'ws': int(sys.argv[7])}
budget = int(sys.argv[8])
STALL = 60  # seconds without any echo: the server lost something (only so a broken build fails)
SIZES = [1, 17, 1000, 4096, 65536, 100000, 300000]
NO_NEWLINE = bytes(b if b not in (10, 13) else 32 for b in range(256))
PRINTABLE = bytes(32 + b % 95 for b in range(256))

def payloads(seed, line):
    rng = random.Random(seed)
    sizes, total = [300000], 300000
    while total < budget:
        n = rng.choice(SIZES + [rng.randrange(1, 300001)])
        sizes.append(n)
        total += n
    rng.shuffle(sizes)
    out = []
    for n in sizes:
        b = rng.randbytes(n)
        out.append(b.translate(NO_NEWLINE) if line else b)
    return out

async def stream(kind, n):
    msgs = payloads(n, kind == 'text')
    if kind == 'text':
        wire = [m + b'\n' for m in msgs]
    else:
        wire = [struct.pack('>I', len(m) + 4) + m for m in msgs]
    expected = b''.join(wire)
    r, w = await asyncio.open_connection(host, ports[kind])
    async def send():
        for x in wire:
            w.write(x)
        await w.drain()
    async def recv():
        got = 0
        while got < len(expected):
            d = await asyncio.wait_for(r.read(1 << 16), STALL)
            if not d:
                raise EOFError(f'closed after {got} of {len(expected)} bytes')
            if d != expected[got:got + len(d)]:
                i = next(i for i in range(len(d)) if d[i] != expected[got + i])
                raise ValueError(f'echoed byte {got + i} differs')
            got += len(d)
    await asyncio.gather(send(), recv())
    w.close()
    await w.wait_closed()
    return len(msgs), len(expected)

async def websocket(n):
    msgs = [m if i % 2 else m.translate(PRINTABLE).decode('ascii') for i, m in enumerate(payloads(1000 + n, False))]
    async with connect(f'ws://{host}:{ports["ws"]}/', max_size=None) as ws:
        async def send():
            for m in msgs:
                await ws.send(m)
        async def recv():
            for i, m in enumerate(msgs):
                got = await asyncio.wait_for(ws.recv(), STALL)
                if type(got) is not type(m) or got != m:
                    raise ValueError(f'message {i} differs ({type(got).__name__} of {len(got)}, sent {type(m).__name__} of {len(m)})')
        await asyncio.gather(send(), recv())
    return len(msgs), sum(len(m) for m in msgs)

async def main():
    jobs = [(k, n) for k in ('text', 'frame', 'ws') for n in range(counts[k])]
    res = await asyncio.gather(*[websocket(n) if k == 'ws' else stream(k, n) for k, n in jobs], return_exceptions=True)
    bad = 0
    for (k, n), r in zip(jobs, res):
        if isinstance(r, BaseException):
            bad += 1
            print(f'fail {k} {n} {r!r}', flush=True)
        else:
            print(f'ok {k} {n} {r[0]} {r[1]}', flush=True)
    sys.exit(1 if bad else 0)

asyncio.run(main())
"#;

/// Runs [`PY_CLIENTS`] in the client namespace and insists that every client reports `ok`.
fn python_clients(link: &Link, ports: [u16; 3], counts: [usize; 3], bytes: usize, tick: impl FnMut()) -> Vec<String> {
    let mut cmd = link.command(Side::Client, "python3");
    cmd.arg("-c").arg(PY_CLIENTS).arg(link.ip(Side::Server).to_string());
    cmd.args(ports.map(|p| p.to_string())).args(counts.map(|c| c.to_string())).arg(bytes.to_string());
    let (ok, out, err) = run_to_end(cmd, LONG_PATIENCE, tick);
    let lines: Vec<String> = out.lines().map(str::to_owned).collect();
    let total: usize = counts.iter().sum();
    assert!(
        ok && lines.len() == total && lines.iter().all(|l| l.starts_with("ok ")),
        "python clients (exit ok: {ok}):\n{out}\nstderr: {err}"
    );
    lines
}

/// Packets counted by the nftables rules commented `comment` in a ruleset listing.
fn counted(ruleset: &str, comment: &str) -> u64 {
    ruleset
        .lines()
        .filter(|l| l.contains(&format!("comment \"{comment}\"")))
        .map(|l| {
            let n = l.split("counter packets ").nth(1).unwrap_or_else(|| panic!("no counter in {l}"));
            n.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// std::net clients (text and frame) for the tests that steer individual connections.

/// Deterministic payloads: message `i` of stream `seed`, 1 B to 64 KiB, no line ends when
/// `line` (text protocol).
fn payload(seed: u64, i: u64, line: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = match next() % 4 {
        0 => 1 + next() % 16,
        1 => 1 + next() % 1024,
        2 => 1 + next() % 16384,
        _ => 1 + next() % 65536,
    } as usize;
    (0..len)
        .map(|_| {
            let b = next() as u8;
            if line && (b == b'\n' || b == b'\r') {
                b' '
            } else {
                b
            }
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scheme {
    Text,
    Frame,
}

fn encode(scheme: Scheme, p: &[u8]) -> Vec<u8> {
    match scheme {
        Scheme::Text => [p, b"\n"].concat(),
        Scheme::Frame => common::frame(p),
    }
}

/// How a streaming client ended.
// The payloads are read through `Debug`, in assertion messages.
#[allow(dead_code)]
#[derive(Debug)]
enum End {
    /// Every message written was echoed intact.
    Done,
    /// The socket failed (reset, broken pipe, end of stream) with every echo read before it
    /// intact.
    Io(String),
    /// An echo differed from what was sent.
    Corrupt(String),
}

/// A client writing messages back to back on one thread while another reads and checks the
/// echoes, until told to stop.
struct Streamer {
    port: u16,
    written: Arc<AtomicU64>,
    echoed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    writer: JoinHandle<Option<String>>,
    reader: JoinHandle<End>,
}

impl Streamer {
    fn start(link: &Link, server: SocketAddr, scheme: Scheme, seed: u64) -> Streamer {
        let s = link.run_in(Side::Client, || TcpStream::connect(server)).expect("connect");
        s.set_read_timeout(Some(common::PATIENCE)).unwrap();
        let port = s.local_addr().unwrap().port();
        let written = Arc::new(AtomicU64::new(0));
        let echoed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer_done = Arc::new(AtomicBool::new(false));
        let line = scheme == Scheme::Text;
        let writer = {
            let (mut s, written, stop, done) =
                (s.try_clone().unwrap(), written.clone(), stop.clone(), writer_done.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                let failed = loop {
                    if stop.load(Ordering::SeqCst) {
                        break None;
                    }
                    if let Err(e) = s.write_all(&encode(scheme, &payload(seed, i, line))) {
                        break Some(e.to_string());
                    }
                    i += 1;
                    written.store(i, Ordering::SeqCst);
                };
                done.store(true, Ordering::SeqCst);
                failed
            })
        };
        let reader = {
            let (written, echoed) = (written.clone(), echoed.clone());
            let mut r = BufReader::new(s);
            std::thread::spawn(move || {
                let mut i = 0;
                loop {
                    // Read message i only once it was written in full, so the reader never
                    // waits for an echo of a message that will not be sent.
                    if i >= written.load(Ordering::SeqCst) {
                        if writer_done.load(Ordering::SeqCst) && i >= written.load(Ordering::SeqCst) {
                            return End::Done;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    let want = payload(seed, i, line);
                    let got = match scheme {
                        Scheme::Text => {
                            let mut v = Vec::new();
                            match r.read_until(b'\n', &mut v) {
                                Ok(_) if v.last() == Some(&b'\n') => {
                                    v.pop();
                                    Ok(v)
                                }
                                Ok(_) => Err("end of stream".to_string()),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        Scheme::Frame => {
                            let mut h = [0u8; 4];
                            r.read_exact(&mut h).map_err(|e| e.to_string()).and_then(|()| {
                                let n = u32::from_be_bytes(h) as usize;
                                if n < 4 {
                                    return Ok(h.to_vec());
                                }
                                let mut v = vec![0u8; n - 4];
                                r.read_exact(&mut v).map(|()| v).map_err(|e| e.to_string())
                            })
                        }
                    };
                    match got {
                        Ok(v) if v == want => {}
                        Ok(v) => return End::Corrupt(format!("echo {i}: {} bytes, sent {}", v.len(), want.len())),
                        Err(e) => return End::Io(format!("after {i} echoes: {e}")),
                    }
                    i += 1;
                    echoed.store(i, Ordering::SeqCst);
                }
            })
        };
        Streamer { port, written, echoed, stop, writer, reader }
    }

    fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::SeqCst)
    }

    fn finished(&self) -> bool {
        self.writer.is_finished() && self.reader.is_finished()
    }

    /// Stops writing, waits for the remaining echoes; returns (writer error, end, messages).
    fn finish(self) -> (Option<String>, End, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let w = self.writer.join().unwrap();
        let end = self.reader.join().unwrap();
        (w, end, self.written.load(Ordering::SeqCst))
    }
}

fn wait_until(what: &str, patience: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + patience;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {patience:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn three_percent_loss_both_ways_everything_echoed_in_order() {
    let Some(link) = Link::new(1) else { return };
    let events = Arc::new(Events::default());
    let ip = link.ip(Side::Server);
    let server = start_in(&link, || {
        Server::new().add(echo_worker("text", ip, &events)).add(echo_worker("frame", ip, &events)).add(echo_worker(
            "websocket",
            ip,
            &events,
        ))
    });
    let ports = [0, 1, 2].map(|i| server.local_addr(i).unwrap().port());
    // Each end drops 3 % of the packets that reach it over the veth, at random.
    for side in [Side::Server, Side::Client] {
        link.nft(
            side,
            &format!(
                "table inet ringman_faults {{\n  chain input {{\n    type filter hook input priority 0;\n    \
                 iifname \"{}\" numgen random mod 100 < 3 counter drop comment \"loss\"\n  }}\n}}\n",
                link.dev(side)
            ),
        );
    }
    // 20 clients: 7 text, 7 frame, 6 websocket, about 1 MB each way each.
    let counts = [7, 7, 6];
    let lines = python_clients(&link, ports, counts, 1_000_000, || {});
    let conns: usize = counts.iter().sum();
    // The loss was real, both ways.
    for side in [Side::Server, Side::Client] {
        let dropped = counted(&link.nft_list(side), "loss");
        assert!(dropped > 0, "no packet dropped on the {side:?} side:\n{}", link.nft_list(side));
    }
    // Server side: 20 connections, each closed once, none with an error or a refused send.
    let ev = events.wait_for("every connection closed", common::PATIENCE, |ev| {
        ev.iter().filter(|e| matches!(e, Event::Close { .. })).count() >= conns
    });
    let ids: Vec<u64> =
        ev.iter().filter_map(|e| if let Event::Connect { id, .. } = e { Some(*id) } else { None }).collect();
    assert_eq!(ids.len(), conns, "{lines:#?}\n{ev:#?}");
    for id in ids {
        assert_eq!(closes(&ev, id), 1, "connection {id}: {ev:#?}");
        assert!(errors(&ev, id).is_empty(), "connection {id}: {ev:#?}");
    }
}

/// Throttles the server's egress (the echo direction) to 6 Mbit/s with tc's tbf. The clients'
/// side stays fast, so their bursts reach the server far faster than it can send them back:
/// it must push back (pause reading, let TCP slow the senders) rather than buffer or drop.
fn throttle_echo_direction(link: &Link) {
    let dev = link.dev(Side::Server);
    link.tc(
        Side::Server,
        &["qdisc", "add", "dev", dev, "root", "tbf", "rate", "6mbit", "burst", "16kb", "limit", "128kb"],
    );
}

/// Bytes that went through the server's tbf qdisc.
fn throttled_bytes(link: &Link) -> u64 {
    let stats = link.tc(Side::Server, &["-s", "qdisc", "show", "dev", link.dev(Side::Server)]);
    stats
        .split("Sent ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("tc -s: {stats}"))
}

#[test]
fn throttled_link_pushes_back_end_to_end_and_loses_nothing() {
    let Some(link) = Link::new(2) else { return };
    let events = Arc::new(Events::default());
    let ip = link.ip(Side::Server);
    let server = start_in(&link, || {
        let mut s = Server::new();
        for scheme in ["text", "frame", "websocket"] {
            // A small send buffer, so modest bursts fill it many times over.
            let mut w = echo_worker(scheme, ip, &events);
            w.max_send_buffer_size = 128 * 1024;
            s = s.add(w);
        }
        s
    });
    let ports = [0, 1, 2].map(|i| server.local_addr(i).unwrap().port());
    throttle_echo_direction(&link);
    // 20 clients (7 text, 7 frame, 6 websocket), each bursting about 1 MB of mixed sizes up
    // to 300 KB.
    let counts = [7, 7, 6];
    let per_client = 1_000_000;
    python_clients(&link, ports, counts, per_client, || {});
    assert!(throttled_bytes(&link) >= 20 * per_client as u64, "the echoes did not go through the throttle");
    // Every connection filled its send buffer and was paused (on_buffer_full), drained and
    // resumed (on_buffer_drain), and not one send was refused: the engine pushed back on the
    // senders instead of dropping echoes.
    let conns: usize = counts.iter().sum();
    let ev = events.wait_for("every connection closed", STEP_PATIENCE, |ev| {
        ev.iter().filter(|e| matches!(e, Event::Close { .. })).count() >= conns
    });
    let ids: Vec<u64> =
        ev.iter().filter_map(|e| if let Event::Connect { id, .. } = e { Some(*id) } else { None }).collect();
    assert_eq!(ids.len(), conns, "{ev:#?}");
    for id in ids {
        let full = ev.iter().filter(|e| matches!(e, Event::BufferFull { id: i } if *i == id)).count();
        let drained = ev.iter().filter(|e| matches!(e, Event::BufferDrain { id: i } if *i == id)).count();
        assert!(full >= 1 && drained >= 1, "connection {id}: {full} times full, {drained} times drained");
        assert!(errors(&ev, id).is_empty(), "connection {id}: {:#?}", errors(&ev, id));
        assert_eq!(closes(&ev, id), 1, "connection {id}");
    }
}

#[test]
fn throttled_link_keeps_the_server_under_64_mib() {
    // What the peak is made of (echo example, two rings, measured): 16 MiB of receive
    // buffers, 18-20 MB of send queues (20 x the 1 MiB limit, draining to half before a
    // resume), and the input of paused connections, which is now about one receive buffer
    // each: a connection that back-pressure paused reads one buffer at a time until its send
    // queue empties (`ConnState::paced`). Measured: 45-47 MiB (78 MiB when framers crept and
    // a resumed multishot emptied a socket queue of MBs into them; 58-63 MiB with only the
    // framers fixed).
    let Some(link) = Link::new(5) else { return };
    // The echo example, a process of its own, so its RSS is the server's alone.
    let echo = common::example_binary("echo");
    let mut cmd = link.command(Side::Server, &echo);
    // (Its pid file goes to the temp dir, not the working directory.)
    let pid_file = std::env::temp_dir().join(format!("ringman-netfaults-{}.pid", std::process::id()));
    cmd.arg(format!("text://{}:0", link.ip(Side::Server))).args(["--threads", "2"]).arg("--pid-file").arg(&pid_file);
    let mut server = Proc(cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("echo example starts"));
    let mut first = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let port: u16 = first
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("echo printed {first:?}"))
        .port();
    // `ip netns exec` execs the program: the child's pid is the server's.
    let status = format!("/proc/{}/status", server.0.id());
    let exe = std::fs::read_link(format!("/proc/{}/exe", server.0.id())).unwrap();
    assert_eq!(exe.file_name(), echo.file_name(), "{exe:?}");
    let kib = |field: &str| -> u64 {
        let s = std::fs::read_to_string(&status).unwrap_or_else(|e| panic!("{status}: {e}"));
        let line = s.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {s}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    throttle_echo_direction(&link);
    let clients = 20;
    let per_client = 3_000_000;
    python_clients(&link, [port, 0, 0], [clients, 0, 0], per_client, || {});
    assert!(throttled_bytes(&link) >= (clients * per_client) as u64, "the echoes did not go through the throttle");
    // VmHWM: the peak resident set over the server's whole life.
    let peak = kib("VmHWM:");
    println!("the server's peak RSS: {peak} KiB");
    assert!(peak < 64 * 1024, "the server's RSS reached {peak} KiB (limit 64 MiB)");
}

#[test]
fn resets_mid_stream_close_only_the_affected_connections() {
    let Some(link) = Link::new(3) else { return };
    let events = Arc::new(Events::default());
    let ip = link.ip(Side::Server);
    let server =
        start_in(&link, || Server::new().add(echo_worker("text", ip, &events)).add(echo_worker("frame", ip, &events)));
    let addr = |i| server.local_addr(i).unwrap();
    // Ten streaming clients, five per protocol; the reset hits two of each.
    let streams: Vec<Streamer> = (0..10)
        .map(|n| {
            let scheme = if n % 2 == 0 { Scheme::Text } else { Scheme::Frame };
            Streamer::start(&link, addr(n % 2), scheme, n as u64)
        })
        .collect();
    let affected = |n: usize| n < 4;
    // Mid-stream: every client has had echoes back and keeps writing.
    wait_until("every client has 20 echoes", STEP_PATIENCE, || streams.iter().all(|s| s.echoed() >= 20));
    let ports: Vec<String> = streams.iter().take(4).map(|s| s.port.to_string()).collect();
    let set = ports.join(", ");
    // Any packet of an affected connection that reaches either end is answered with a reset
    // to its sender (the resets themselves pass), so both ends see one.
    let rule = |side: Side, dir: &str| {
        format!(
            "table inet ringman_faults {{\n  chain input {{\n    type filter hook input priority 0;\n    \
             iifname \"{}\" tcp {dir} {{ {set} }} tcp flags & rst == 0 counter reject with tcp reset comment \"reset\"\n  }}\n}}\n",
            link.dev(side)
        )
    };
    let before: Vec<u64> = streams.iter().map(Streamer::echoed).collect();
    // The client's rule first: the server, still echoing the clients' stream, meets a reset
    // on its next segment. (Installed the other way round, a loaded machine could let the
    // server's last echoes be acknowledged before the client's rule came in; the server's own
    // rule then answers only the client, and the server, with nothing left to send, would
    // learn of the reset only from keepalive, hours later.)
    link.nft(Side::Client, &rule(Side::Client, "dport"));
    link.nft(Side::Server, &rule(Side::Server, "sport"));
    // Each affected client's socket fails; each affected connection is closed on the server.
    wait_until("the affected clients see their sockets fail", STEP_PATIENCE, || {
        streams.iter().take(4).all(Streamer::finished)
    });
    let affected_ids: Vec<u64> = {
        let ev = events.snapshot();
        streams.iter().take(4).map(|s| id_of(&ev, s.port).expect("connection recorded")).collect()
    };
    events.wait_for("the affected connections closed", STEP_PATIENCE, |ev| {
        affected_ids.iter().all(|id| closes(ev, *id) >= 1)
    });
    // The others carry on: 20 more echoes each after the resets.
    wait_until("the other clients have 20 more echoes", STEP_PATIENCE, || {
        streams.iter().enumerate().skip(4).all(|(n, s)| s.echoed() >= before[n] + 20)
    });
    let ev = events.snapshot();
    let mut others = Vec::new();
    for (n, s) in streams.into_iter().enumerate() {
        let port = s.port;
        let id = id_of(&ev, port).expect("connection recorded");
        let (write_err, end, written) = s.finish();
        if affected(n) {
            assert!(
                matches!(end, End::Io(_)) || write_err.is_some(),
                "client {n} (port {port}) saw no failure: {end:?}, {written} written"
            );
            assert!(!matches!(end, End::Corrupt(_)), "client {n}: {end:?}");
        } else {
            assert!(
                write_err.is_none() && matches!(end, End::Done),
                "client {n}: {write_err:?} {end:?} ({written} written)"
            );
            assert!(closes(&ev, id) == 0 && errors(&ev, id).is_empty(), "client {n} (id {id}): {ev:#?}");
            others.push(id);
        }
    }
    // The resets were injected (which end's rule answers first is a race; at least one did).
    let rules = [link.nft_list(Side::Server), link.nft_list(Side::Client)];
    assert!(rules.iter().map(|r| counted(r, "reset")).sum::<u64>() > 0, "no reset rule fired: {rules:#?}");
    // The server still takes new connections and echoes on them.
    let fresh = Streamer::start(&link, addr(1), Scheme::Frame, 99);
    wait_until("a new client has 20 echoes", STEP_PATIENCE, || fresh.echoed() >= 20);
    let fresh_port = fresh.port;
    let (write_err, end, _) = fresh.finish();
    assert!(write_err.is_none() && matches!(end, End::Done), "{write_err:?} {end:?}");
    // Every connection ends with exactly one on_close: the clients are gone (their sockets
    // closed by `finish`), the fresh one last.
    let fresh_id = id_of(&events.snapshot(), fresh_port).unwrap();
    let ev = events.wait_for("every connection closed", STEP_PATIENCE, |ev| {
        closes(ev, fresh_id) == 1 && others.iter().all(|id| closes(ev, *id) >= 1)
    });
    for id in affected_ids.iter().chain(&others).chain([&fresh_id]) {
        assert_eq!(closes(&ev, *id), 1, "connection {id}: {ev:#?}");
    }
    for id in others.iter().chain([&fresh_id]) {
        assert!(errors(&ev, *id).is_empty(), "connection {id}: {ev:#?}");
    }
}

/// One connection of a chatting client: text (std::net) or WebSocket (tungstenite).
enum Chat {
    Text(BufReader<TcpStream>),
    Ws(Box<tungstenite::WebSocket<TcpStream>>),
}

impl Chat {
    /// Sends message `i` and checks its echo.
    fn round(&mut self, seed: u64, i: u64) -> Result<(), String> {
        match self {
            Chat::Text(r) => {
                let want = payload(seed, i, true);
                r.get_mut().write_all(&encode(Scheme::Text, &want)).map_err(|e| format!("write {i}: {e}"))?;
                let mut got = Vec::new();
                r.read_until(b'\n', &mut got).map_err(|e| format!("read {i}: {e}"))?;
                if got.pop() != Some(b'\n') || got != want {
                    return Err(format!("echo {i} differs or is cut ({} bytes, sent {})", got.len(), want.len()));
                }
            }
            Chat::Ws(ws) => {
                use tungstenite::Message;
                let raw = payload(seed, i, false);
                let want = if i.is_multiple_of(2) {
                    Message::Binary(raw.into())
                } else {
                    Message::Text(raw.iter().map(|b| char::from(32 + b % 95)).collect::<String>().into())
                };
                ws.send(want.clone()).map_err(|e| format!("send {i}: {e}"))?;
                loop {
                    match ws.read().map_err(|e| format!("read {i}: {e}"))? {
                        Message::Ping(_) | Message::Pong(_) => continue,
                        got if got == want => break,
                        got => return Err(format!("echo {i} differs ({} bytes, sent {})", got.len(), want.len())),
                    }
                }
            }
        }
        Ok(())
    }
}

/// A client that sends one message, waits for its echo and checks it, over and over (with a
/// short pause between rounds so several fit on two cores), until told to stop.
struct Chatter {
    port: u16,
    rounds: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Result<(), String>, Chat)>,
}

impl Chatter {
    fn start(link: &Link, server: SocketAddr, ws: bool, seed: u64) -> Chatter {
        let s = link.run_in(Side::Client, || TcpStream::connect(server)).expect("connect");
        s.set_read_timeout(Some(common::PATIENCE)).unwrap();
        s.set_nodelay(true).unwrap();
        let port = s.local_addr().unwrap().port();
        let mut chat = if ws {
            let (ws, _) = tungstenite::client(format!("ws://{server}/"), s).expect("websocket handshake");
            Chat::Ws(Box::new(ws))
        } else {
            Chat::Text(BufReader::new(s))
        };
        let rounds = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (rounds, stop) = (rounds.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = chat.round(seed, i) {
                        return (Err(e), chat);
                    }
                    i += 1;
                    rounds.store(i, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                }
                (Ok(()), chat)
            })
        };
        Chatter { port, rounds, stop, thread }
    }

    fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::SeqCst)
    }

    /// Stops after the current round; returns how it went and the open connection.
    fn stop(self) -> (Result<(), String>, Chat) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn silently_vanished_peers_are_found_by_idle_timeout_and_websocket_ping() {
    let Some(link) = Link::new(4) else { return };
    let events = Arc::new(Events::default());
    let ip = link.ip(Side::Server);
    let server = start_in(&link, || {
        let mut text = echo_worker("text", ip, &events);
        text.idle_timeout = Some(Duration::from_secs(2));
        let mut ws = echo_worker("websocket", ip, &events);
        ws.websocket_ping_interval = Some(Duration::from_secs(1));
        Server::new().add(text).add(ws)
    });
    let (text_addr, ws_addr) = (server.local_addr(0).unwrap(), server.local_addr(1).unwrap());
    // Three text and three websocket clients; the first of each will vanish.
    let mut chatters: Vec<Chatter> =
        (0..6).map(|n| Chatter::start(&link, if n < 3 { text_addr } else { ws_addr }, n >= 3, n)).collect();
    wait_until("every client has 10 rounds", STEP_PATIENCE, || chatters.iter().all(|c| c.rounds() >= 10));
    let ev = events.snapshot();
    let ids: Vec<u64> = chatters.iter().map(|c| id_of(&ev, c.port).expect("connection recorded")).collect();
    let ws_gone = chatters.remove(3);
    let text_gone = chatters.remove(0);
    let (text_id, ws_id) = (ids[0], ids[3]);
    let healthy_ids = [ids[1], ids[2], ids[4], ids[5]];
    let gone_ports = format!("{}, {}", text_gone.port, ws_gone.port);
    // They stop talking after a complete round, and keep their sockets open (nothing they
    // send would get through anyway) ...
    let mut vanished = Vec::new();
    for c in [text_gone, ws_gone] {
        let (r, chat) = c.stop();
        r.expect("round before vanishing");
        vanished.push(chat);
    }
    // ... and every packet of theirs is dropped where it arrives, both ways.
    for (side, dir) in [(Side::Server, "sport"), (Side::Client, "dport")] {
        link.nft(
            side,
            &format!(
                "table inet ringman_faults {{\n  chain input {{\n    type filter hook input priority 0;\n    \
                 iifname \"{}\" tcp {dir} {{ {gone_ports} }} counter drop comment \"vanish\"\n  }}\n}}\n",
                link.dev(side)
            ),
        );
    }
    // The idle timeout closes the text connection; the heartbeat pings the websocket one and
    // gives it up with NoPong.
    let ev = events
        .wait_for("both vanished peers closed", STEP_PATIENCE, |ev| closes(ev, text_id) == 1 && closes(ev, ws_id) == 1);
    // Nobody else was closed, and the others carry on: 10 more rounds each.
    for id in healthy_ids {
        assert!(closes(&ev, id) == 0 && errors(&ev, id).is_empty(), "connection {id}: {ev:#?}");
    }
    let now: Vec<u64> = chatters.iter().map(Chatter::rounds).collect();
    wait_until("the other clients have 10 more rounds", STEP_PATIENCE, || {
        chatters.iter().zip(&now).all(|(c, n)| c.rounds() >= n + 10)
    });
    for c in chatters {
        let (r, chat) = c.stop();
        r.expect("a healthy client's rounds");
        drop(chat);
    }
    // The idle close is quiet (on_close only); the heartbeat's is NoPong.
    let ev = events
        .wait_for("every connection closed", STEP_PATIENCE, |ev| healthy_ids.iter().all(|id| closes(ev, *id) >= 1));
    assert!(errors(&ev, text_id).is_empty(), "{ev:#?}");
    let ws_errors = errors(&ev, ws_id);
    assert!(
        matches!(ws_errors.as_slice(), [Event::Error { no_pong: true, .. }]),
        "the vanished websocket peer: {ws_errors:#?}"
    );
    for id in ids {
        assert_eq!(closes(&ev, id), 1, "connection {id}: {ev:#?}");
    }
    for id in healthy_ids {
        assert!(errors(&ev, id).is_empty(), "connection {id}: {ev:#?}");
    }
    // The server's last words to the vanished peers (ping, close) were dropped on the way.
    assert!(counted(&link.nft_list(Side::Client), "vanish") > 0, "{}", link.nft_list(Side::Client));
    drop(vanished);
}

/// Drops every packet of the client ports `ports` where it arrives, both ways: those peers
/// vanish without a FIN or a reset.
fn vanish(link: &Link, ports: &[u16]) {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ports = ports.join(", ");
    for (side, dir) in [(Side::Server, "sport"), (Side::Client, "dport")] {
        link.nft(
            side,
            &format!(
                "table inet ringman_faults {{\n  chain input {{\n    type filter hook input priority 0;\n    \
                 iifname \"{}\" tcp {dir} {{ {ports} }} counter drop comment \"vanish\"\n  }}\n}}\n",
                link.dev(side)
            ),
        );
    }
}

#[test]
fn keepalive_finds_vanished_peers_without_an_application_heartbeat() {
    let Some(link) = Link::new(6) else { return };
    let events = Arc::new(Events::default());
    let ip = link.ip(Side::Server);
    let server = start_in(&link, || {
        // No idle timeout, no heartbeat: only TCP keepalive (given up after 1 s + 3 x 1 s),
        // and the TCP_USER_TIMEOUT it brings for unacknowledged data.
        let mut text = echo_worker("text", ip, &events);
        text.keepalive = Some(Keepalive::new(Duration::from_secs(1), Duration::from_secs(1), 3));
        Server::new().add(text)
    });
    let addr = server.local_addr(0).unwrap();
    // Three clients: the first vanishes while idle, the second vanishes and then the server
    // sends it 4 MB (so data is unacknowledged: keepalive alone never probes then), the
    // third carries on.
    let mut chatters: Vec<Chatter> = (0..3).map(|n| Chatter::start(&link, addr, false, 40 + n)).collect();
    wait_until("every client has 10 rounds", STEP_PATIENCE, || chatters.iter().all(|c| c.rounds() >= 10));
    let ev = events.snapshot();
    let ids: Vec<u64> = chatters.iter().map(|c| id_of(&ev, c.port).expect("connection recorded")).collect();
    let healthy = chatters.pop().unwrap();
    let mut vanished = Vec::new();
    let mut ports = Vec::new();
    for c in chatters {
        ports.push(c.port);
        let (r, chat) = c.stop();
        r.expect("round before vanishing");
        vanished.push(chat);
    }
    vanish(&link, &ports);
    let mut big = vec![b'k'; 4 << 20];
    big.push(b'\n');
    assert_ne!(Connection::from_id(ConnectionId::from_u64(ids[1])).send(big), SendStatus::Failed);
    let ev = events
        .wait_for("both vanished peers closed", STEP_PATIENCE, |ev| closes(ev, ids[0]) == 1 && closes(ev, ids[1]) == 1);
    // Each was given up by the kernel: on_error, then on_close. The kernel reports
    // ETIMEDOUT; a send parked on the socket then completes with EPIPE, and whichever
    // completion the ring sees first names the error.
    for (id, causes) in [(ids[0], &["timed out"][..]), (ids[1], &["timed out", "Broken pipe"][..])] {
        let errs = errors(&ev, id);
        assert!(
            matches!(errs.as_slice(), [Event::Error { error, .. }] if causes.iter().any(|c| error.contains(c))),
            "connection {id}: {errs:#?}"
        );
    }
    assert!(closes(&ev, ids[2]) == 0 && errors(&ev, ids[2]).is_empty(), "{ev:#?}");
    let now = healthy.rounds();
    wait_until("the healthy client has 10 more rounds", STEP_PATIENCE, || healthy.rounds() >= now + 10);
    let (r, chat) = healthy.stop();
    r.expect("the healthy client's rounds");
    drop(chat);
    events.wait_for("the healthy connection closed", STEP_PATIENCE, |ev| closes(ev, ids[2]) == 1);
    // The server's probes and retransmissions to the vanished peers were dropped on the way.
    assert!(counted(&link.nft_list(Side::Client), "vanish") > 0, "{}", link.nft_list(Side::Client));
    drop(vanished);
}
