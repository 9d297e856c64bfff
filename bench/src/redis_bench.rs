//! Redis in the benchmarks (issue 18): push fan-out across two processes through Redis
//! (`run --scenario fanout-redis`), and the Redis client's pipelined rate beside
//! `redis-benchmark`'s (`redis-client`).
//!
//! **fanout-redis.** [`measure_fanout`] starts a `redis-server` ([`RedisProc`]: free port,
//! no persistence) and two ringman processes (`serve-ringman fanout-redis://ip:port
//! redis://...`, [`crate::fanout::serve_ringman_redis`]), all three pinned to the server
//! CPU. It waits until Redis reports both processes subscribed to the topic (`PUBSUB
//! NUMSUB`), then runs the fan-out client of `src/fanout.rs` with the subscribers spread over
//! both servers and the publisher on the first ([`crate::fanout::run_spread`]): a published
//! message goes publisher → server A → `PUBLISH` → Redis → both servers' subscriptions →
//! every connection of each. Server CPU = both servers' process trees; the redis-server's
//! CPU is sampled at the same window edges (`upstream_cpu_us_per_msg`).
//!
//! **redis-client.** [`client_rates`] starts one `redis-server` on the server CPU and, per
//! round and per (connections, depth) cell, runs the same `SET` test and then `GET` test
//! (one key, `size`-byte value, `requests` requests spread over the connections) three ways,
//! all on the client CPU: ringman's client with callbacks keeping `depth` commands in flight
//! per connection (`Redis::send`, a sliding window), ringman's client with
//! `Redis::pipeline` batches of `depth` awaited whole (what `redis-benchmark -P` does), and
//! `redis-benchmark -t set|get -P depth -c conns -n requests -d size` itself.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringman::redis::{Cmd, OwnedValue, Redis, RedisConfig};

use crate::cli::{Env, LoadOpts, RedisClientOpts, ServerKind};
use crate::error::{BenchError, ServerError};
use crate::report::{thousands, Figures};
use crate::server::{self, ServerProc};
use crate::summary::Stat;

/// How long `redis-server` may take to answer `PING`, and the servers to subscribe.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A `redis-server` on a free loopback port, pinned to one CPU, without persistence
/// (killed on drop).
pub struct RedisProc {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

fn redis_err(what: impl Into<String>) -> ServerError {
    ServerError::Redis(what.into())
}

impl RedisProc {
    /// Starts `redis-server` pinned to `cpu` and waits until it answers `PING`.
    pub fn start(cpu: usize) -> Result<RedisProc, ServerError> {
        let bin = find_on_path("redis-server").ok_or(ServerError::NotInstalled("redis-server"))?;
        let addr = server::free_addr()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        pin_child(&mut cmd, cpu);
        let child = cmd.spawn().map_err(|source| ServerError::Spawn { program: bin.display().to_string(), source })?;
        let mut r = RedisProc { addr, child };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = r.child.try_wait() {
                return Err(ServerError::Exited { status: status.to_string(), stderr: "redis-server".into() });
            }
            if matches!(command(addr, &Cmd::new("PING")), Ok(OwnedValue::SimpleString(s)) if s == b"PONG") {
                return Ok(r);
            }
            if Instant::now() > deadline {
                return Err(ServerError::StartTimeout(addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if it has exited.
    pub fn check_alive(&mut self) -> Result<(), ServerError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ServerError::Exited { status: status.to_string(), stderr: "redis-server".into() }),
            _ => Ok(()),
        }
    }

    /// `redis://ip:port`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Waits until `n` clients are subscribed to `topic` (`PUBSUB NUMSUB`).
    pub fn wait_subscribers(&mut self, topic: &str, n: i64) -> Result<(), ServerError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let reply = command(self.addr, &Cmd::new("PUBSUB").arg("NUMSUB").arg(topic))
                .map_err(|e| redis_err(format!("PUBSUB NUMSUB: {e}")))?;
            let count = reply.as_array().and_then(|a| a.get(1)).and_then(|v| match v {
                OwnedValue::Integer(i) => Some(*i),
                _ => None,
            });
            if count == Some(n) {
                return Ok(());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(redis_err(format!("{n} subscribers to {topic} expected, Redis reports {count:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn pin_child(cmd: &mut Command, cpu: usize) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // sched_setaffinity (a raw syscall, async-signal-safe); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let _ = server::set_affinity(0, cpu);
            Ok(())
        });
    }
}

/// Sends `cmd` over a fresh blocking connection and returns the one reply.
pub fn command(addr: SocketAddr, cmd: &Cmd) -> std::io::Result<OwnedValue> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&cmd.to_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match OwnedValue::parse(&buf) {
            Ok((v, _)) => return Ok(v),
            Err(ringman::protocols::resp::RespError::Incomplete) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `run --scenario fanout-redis`: a fresh redis-server and two `kind` servers (ringman) on
/// the server CPU, subscribers spread over both, the publisher on the first.
pub fn measure_fanout(kind: ServerKind, opts: &LoadOpts, env: &Env, progress: bool) -> Result<Figures, BenchError> {
    let mut redis = RedisProc::start(env.server_cpu)?;
    let mut a = ServerProc::start_fanout_redis(kind, redis.addr, env.server_cpu, &env.peers_dir)?;
    let mut b = ServerProc::start_fanout_redis(kind, redis.addr, env.server_cpu, &env.peers_dir)?;
    // A positive signal: both processes hold their broker subscription before anything is
    // published (a message published earlier would reach one process only).
    if let Err(e) = redis.wait_subscribers(crate::fanout::REDIS_TOPIC, 2) {
        a.check_alive()?;
        b.check_alive()?;
        return Err(e.into());
    }
    match crate::suite::measure_procs(
        &[a.addr, b.addr],
        &[a.pid(), b.pid()],
        &[redis.pid()],
        crate::suite::Upstream::Beside,
        opts,
        env,
        progress,
    ) {
        Ok(f) => Ok(f),
        Err(e) => {
            a.check_alive()?;
            b.check_alive()?;
            redis.check_alive()?;
            Err(e)
        }
    }
}

/// The three ways the `redis-client` subcommand drives Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// ringman's client, `Redis::send` with callbacks: `depth` commands in flight per
    /// connection, the next sent as soon as one answers.
    RingmanSend,
    /// ringman's client, `Redis::pipeline` batches of `depth` commands, each awaited whole.
    RingmanPipeline,
    /// `redis-benchmark -P depth`.
    RedisBenchmark,
}

impl Tool {
    /// All tools, in table order.
    pub const ALL: [Tool; 3] = [Tool::RingmanSend, Tool::RingmanPipeline, Tool::RedisBenchmark];

    /// Name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Tool::RingmanSend => "ringman send()",
            Tool::RingmanPipeline => "ringman pipeline()",
            Tool::RedisBenchmark => "redis-benchmark",
        }
    }
}

/// `SET` or `GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// `SET key:__rand_int__ <value>`.
    Set,
    /// `GET key:__rand_int__`.
    Get,
}

impl Test {
    /// Both, in the order they run (`GET` reads what `SET` wrote).
    pub const ALL: [Test; 2] = [Test::Set, Test::Get];

    /// Command name.
    pub fn name(self) -> &'static str {
        match self {
            Test::Set => "SET",
            Test::Get => "GET",
        }
    }
}

/// The key redis-benchmark uses without `-r`; ringman's client uses the same one.
pub const KEY: &str = "key:__rand_int__";

/// One measurement: requests/s and CPU per request of the client and of redis-server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second (redis-benchmark: its own figure).
    pub rps: f64,
    /// Client CPU µs per request.
    pub client_us: f64,
    /// redis-server CPU µs per request.
    pub redis_us: f64,
}

/// A cell of the `redis-client` table: every round of one (test, conns, depth, tool).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// SET or GET.
    pub test: Test,
    /// Connections.
    pub conns: usize,
    /// Commands in flight per connection.
    pub depth: usize,
    /// Who drove Redis.
    pub tool: Tool,
    /// One entry per round.
    pub rounds: Vec<Rate>,
}

fn client_err(what: impl std::fmt::Display) -> BenchError {
    BenchError::RedisClient(what.to_string())
}

/// `ringman-bench redis-client`: measures, prints the table and the ratio lines, returns
/// the cells.
pub fn client_rates(o: &RedisClientOpts) -> Result<Vec<Cell>, BenchError> {
    let bench = find_on_path("redis-benchmark").ok_or(ServerError::NotInstalled("redis-benchmark"))?;
    let mut redis = RedisProc::start(o.server_cpu)?;
    let url = redis.url();
    // The ring thread inherits the pinning of the thread that starts it.
    server::pin_self(o.client_cpu).map_err(|source| BenchError::Affinity { cpu: o.client_cpu, source })?;
    let mut w = ringman::Worker::<()>::without_listener();
    w.count = 1;
    w.name = "bench-redis-client".into();
    let ring = ringman::Server::new().add(w).start().map_err(client_err)?;
    let mut cells: Vec<Cell> = Vec::new();
    for round in 0..o.repeat {
        for &conns in &o.conns {
            for &depth in &o.depths {
                for tool in Tool::ALL {
                    for test in Test::ALL {
                        let r = match tool {
                            Tool::RedisBenchmark => redis_benchmark(&bench, &redis, test, conns, depth, o)?,
                            _ => ringman_rate(&ring, &url, &redis, tool, test, conns, depth, o)?,
                        };
                        redis.check_alive()?;
                        eprintln!(
                            "round {}/{}: {} c{conns} P{depth} {:<18} {:>12} req/s",
                            round + 1,
                            o.repeat,
                            test.name(),
                            tool.name(),
                            thousands(r.rps)
                        );
                        match cells
                            .iter_mut()
                            .find(|c| (c.test, c.conns, c.depth, c.tool) == (test, conns, depth, tool))
                        {
                            Some(c) => c.rounds.push(r),
                            None => cells.push(Cell { test, conns, depth, tool, rounds: vec![r] }),
                        }
                    }
                }
            }
        }
    }
    ring.stop();
    println!("{}", table(&cells, o));
    Ok(cells)
}

/// CPU time (user + system) of this process, or of its waited-for children.
fn rusage(who: i32) -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter for getrusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and pointer; the call only writes `ru`.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One ringman measurement on the ring: `conns` clients of one connection each, `test`
/// `requests` times, `depth` in flight per connection.
#[allow(clippy::too_many_arguments)]
fn ringman_rate(
    ring: &ringman::Running,
    url: &str,
    redis: &RedisProc,
    tool: Tool,
    test: Test,
    conns: usize,
    depth: usize,
    o: &RedisClientOpts,
) -> Result<Rate, BenchError> {
    let (tx, rx) = std::sync::mpsc::channel::<Result<Duration, String>>();
    let (url, requests, size) = (url.to_string(), o.requests, o.size);
    let cpu0 = (rusage(libc::RUSAGE_SELF), server::tree_cpu(redis.pid()));
    let posted = ring.worker(0).run_on(0, move || {
        let r = ringman::spawn(async move {
            let out = drive(&url, tool, test, conns, depth, requests, size).await;
            let _ = tx.send(out);
        });
        if let Err(e) = r {
            eprintln!("redis-client: spawn: {e}");
        }
    });
    if !posted {
        return Err(client_err("the ring thread is gone"));
    }
    let elapsed = rx
        .recv_timeout(Duration::from_secs(300))
        .map_err(|_| client_err("no answer from the ring within 300 s"))?
        .map_err(client_err)?;
    let cpu1 = (rusage(libc::RUSAGE_SELF), server::tree_cpu(redis.pid()));
    let per_req = |d: Duration| d.as_secs_f64() * 1e6 / requests as f64;
    Ok(Rate {
        rps: requests as f64 / elapsed.as_secs_f64().max(1e-9),
        client_us: per_req(cpu1.0.saturating_sub(cpu0.0)),
        redis_us: per_req(cpu1.1.saturating_sub(cpu0.1)),
    })
}

/// Runs on the ring: opens the clients, checks each with `PING` (so the timed part excludes
/// connecting), then sends `requests` commands and returns the time from the first send to
/// the last answer. Every answer is checked (`SET`: `OK`; `GET`: the value written).
async fn drive(
    url: &str,
    tool: Tool,
    test: Test,
    conns: usize,
    depth: usize,
    requests: usize,
    size: usize,
) -> Result<Duration, String> {
    let mut cfg = RedisConfig::from_url(url).map_err(|e| e.to_string())?;
    cfg.pool_size = 1;
    cfg.max_backlog = depth.max(cfg.max_backlog);
    let clients: Vec<Redis> =
        (0..conns).map(|_| Redis::connect(cfg.clone())).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    for c in &clients {
        c.cmd(&Cmd::new("PING")).await.map_err(|e| format!("PING: {e}"))?;
    }
    let value = vec![b'x'; size];
    let cmd = match test {
        Test::Set => Cmd::new("SET").key(KEY).arg(&value[..]),
        Test::Get => Cmd::new("GET").key(KEY),
    };
    let check = move |r: Result<OwnedValue, ringman::redis::RedisError>| -> Result<(), String> {
        match (test, r) {
            (Test::Set, Ok(v)) if v.is_ok() => Ok(()),
            (Test::Get, Ok(OwnedValue::Bulk(Some(v)))) if v.len() == size => Ok(()),
            (_, Ok(v)) => Err(format!("{}: unexpected answer {v:?}", test.name())),
            (_, Err(e)) => Err(format!("{}: {e}", test.name())),
        }
    };
    let start = Instant::now();
    let out = match tool {
        Tool::RingmanSend => window(clients, cmd, depth, requests, check).await,
        _ => batches(clients, cmd, depth, requests, check).await,
    };
    let elapsed = start.elapsed();
    out.map(|()| elapsed)
}

type Check = dyn Fn(Result<OwnedValue, ringman::redis::RedisError>) -> Result<(), String>;

/// Shared state of a callback-driven run.
struct Window {
    cmd: Cmd,
    check: Box<Check>,
    /// Commands not sent yet.
    unsent: std::cell::Cell<usize>,
    /// Answers still expected.
    pending: std::cell::Cell<usize>,
    error: std::cell::RefCell<Option<String>>,
    waker: std::cell::RefCell<Option<std::task::Waker>>,
}

/// Sends `cmd` on client `c`; its answer sends the next one on the same client while any
/// remain, so every connection keeps `depth` in flight.
fn fire(st: &std::rc::Rc<Window>, c: &Redis) {
    st.unsent.set(st.unsent.get() - 1);
    let (st2, c2) = (st.clone(), c.clone());
    c.send(&st.cmd, move |r| {
        if let Err(e) = (st2.check)(r) {
            st2.error.borrow_mut().get_or_insert(e);
        }
        if st2.unsent.get() > 0 && st2.error.borrow().is_none() {
            fire(&st2, &c2);
        }
        st2.pending.set(st2.pending.get() - 1);
        if st2.pending.get() == 0 || st2.error.borrow().is_some() {
            if let Some(w) = st2.waker.borrow_mut().take() {
                w.wake();
            }
        }
    });
}

async fn window(
    clients: Vec<Redis>,
    cmd: Cmd,
    depth: usize,
    requests: usize,
    check: impl Fn(Result<OwnedValue, ringman::redis::RedisError>) -> Result<(), String> + 'static,
) -> Result<(), String> {
    let st = std::rc::Rc::new(Window {
        cmd,
        check: Box::new(check),
        unsent: std::cell::Cell::new(requests),
        pending: std::cell::Cell::new(requests),
        error: std::cell::RefCell::new(None),
        waker: std::cell::RefCell::new(None),
    });
    'start: for _ in 0..depth {
        for c in &clients {
            if st.unsent.get() == 0 {
                break 'start;
            }
            fire(&st, c);
        }
    }
    std::future::poll_fn(|cx| {
        if st.pending.get() == 0 || st.error.borrow().is_some() {
            std::task::Poll::Ready(())
        } else {
            *st.waker.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    })
    .await;
    // An error stops refilling; the answers still in flight are left to their callbacks.
    let error = st.error.borrow_mut().take();
    error.map_or(Ok(()), Err)
}

async fn batches(
    clients: Vec<Redis>,
    cmd: Cmd,
    depth: usize,
    requests: usize,
    check: impl Fn(Result<OwnedValue, ringman::redis::RedisError>) -> Result<(), String> + 'static,
) -> Result<(), String> {
    let batch: std::rc::Rc<Vec<Cmd>> = std::rc::Rc::new(vec![cmd; depth]);
    let left = std::rc::Rc::new(std::cell::Cell::new(requests));
    let check = std::rc::Rc::new(check);
    let mut tasks = Vec::new();
    for c in clients {
        let (batch, left, check) = (batch.clone(), left.clone(), check.clone());
        let task = ringman::spawn(async move {
            loop {
                let n = left.get().min(batch.len());
                if n == 0 {
                    return Ok::<(), String>(());
                }
                left.set(left.get() - n);
                for r in c.pipeline(&batch[..n]).await {
                    check(r)?;
                }
            }
        })
        .map_err(|e| e.to_string())?;
        tasks.push(task);
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// One `redis-benchmark -t set|get` run pinned to the client CPU; its own requests/s.
fn redis_benchmark(
    bin: &std::path::Path,
    redis: &RedisProc,
    test: Test,
    conns: usize,
    depth: usize,
    o: &RedisClientOpts,
) -> Result<Rate, BenchError> {
    let mut cmd = Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &redis.addr.port().to_string(), "--csv"])
        .args(["-t", &test.name().to_ascii_lowercase(), "-P", &depth.to_string()])
        .args(["-c", &conns.to_string(), "-n", &o.requests.to_string(), "-d", &o.size.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    pin_child(&mut cmd, o.client_cpu);
    let cpu0 = (rusage(libc::RUSAGE_CHILDREN), server::tree_cpu(redis.pid()));
    let out = cmd.output().map_err(|source| ServerError::Spawn { program: bin.display().to_string(), source })?;
    let cpu1 = (rusage(libc::RUSAGE_CHILDREN), server::tree_cpu(redis.pid()));
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(client_err(format!("redis-benchmark exited with {}: {text}", out.status)));
    }
    let rps = parse_csv_rps(&text, test.name())
        .ok_or_else(|| client_err(format!("no {} line in redis-benchmark's output: {text:?}", test.name())))?;
    let per_req = |d: Duration| d.as_secs_f64() * 1e6 / o.requests as f64;
    Ok(Rate {
        rps,
        client_us: per_req(cpu1.0.saturating_sub(cpu0.0)),
        redis_us: per_req(cpu1.1.saturating_sub(cpu0.1)),
    })
}

/// The `rps` column of `test`'s line in `redis-benchmark --csv` output
/// (`"SET","123456.79","0.123",...`).
pub fn parse_csv_rps(text: &str, test: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let mut f = l.split(',').map(|x| x.trim().trim_matches('"'));
        if f.next()? != test {
            return None;
        }
        f.next()?.parse().ok()
    })
}

fn range(s: &Stat, f: impl Fn(f64) -> String) -> String {
    format!("{} [{}..{}]", f(s.median), f(s.min), f(s.max))
}

/// The `redis-client` table (median [min..max] of the rounds) and, per test and cell, the
/// ratio of each ringman way to redis-benchmark (medians).
pub fn table(cells: &[Cell], o: &RedisClientOpts) -> String {
    let mut s = String::new();
    let rounds = cells.iter().map(|c| c.rounds.len()).max().unwrap_or(0);
    let _ = writeln!(
        s,
        "Redis client rate: {} requests per test, {}-byte values, one key ({KEY}); redis-server on CPU {}, \
         clients on CPU {}; median [min..max] of {rounds} rounds",
        thousands(o.requests as f64),
        o.size,
        o.server_cpu,
        o.client_cpu
    );
    let _ = writeln!(
        s,
        "{:<4} {:>5} {:>5}  {:<18} {:>30} {:>22} {:>22}",
        "test", "conns", "depth", "client", "requests/s", "client CPU µs/req", "redis CPU µs/req"
    );
    let stat = |c: &Cell, f: fn(&Rate) -> f64| Stat::of(c.rounds.iter().map(f));
    for c in cells {
        let (Some(rps), Some(cl), Some(rd)) = (stat(c, |r| r.rps), stat(c, |r| r.client_us), stat(c, |r| r.redis_us))
        else {
            continue;
        };
        let _ = writeln!(
            s,
            "{:<4} {:>5} {:>5}  {:<18} {:>30} {:>22} {:>22}",
            c.test.name(),
            c.conns,
            c.depth,
            c.tool.name(),
            range(&rps, thousands),
            range(&cl, |x| format!("{x:.2}")),
            range(&rd, |x| format!("{x:.2}"))
        );
    }
    for line in verdicts(cells) {
        let _ = writeln!(s, "{line}");
    }
    s
}

/// Per (test, conns, depth): `ringman send()` and `pipeline()` requests/s over
/// redis-benchmark's (medians).
pub fn verdicts(cells: &[Cell]) -> Vec<String> {
    let median = |c: &Cell| Stat::of(c.rounds.iter().map(|r| r.rps)).map(|s| s.median);
    let mut out = Vec::new();
    for base in cells.iter().filter(|c| c.tool == Tool::RedisBenchmark) {
        let Some(b) = median(base).filter(|&b| b > 0.0) else { continue };
        let ratio = |tool: Tool| {
            cells
                .iter()
                .find(|c| (c.test, c.conns, c.depth, c.tool) == (base.test, base.conns, base.depth, tool))
                .and_then(median)
                .map_or_else(|| "n/a".to_string(), |m| format!("{:.2}x", m / b))
        };
        out.push(format!(
            "{} c{} P{}: ringman/redis-benchmark requests/s: send() {}, pipeline() {}",
            base.test.name(),
            base.conns,
            base.depth,
            ratio(Tool::RingmanSend),
            ratio(Tool::RingmanPipeline)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\"\n\
                    \"SET\",\"512820.53\",\"0.847\",\"0.240\"\n\"GET\",\"699300.69\",\"0.600\",\"0.100\"\n";
        assert_eq!(parse_csv_rps(text, "SET"), Some(512_820.53));
        assert_eq!(parse_csv_rps(text, "GET"), Some(699_300.69));
        assert_eq!(parse_csv_rps(text, "INCR"), None);
        assert_eq!(parse_csv_rps("\"SET\",\"x\"", "SET"), None);
    }

    #[test]
    fn verdicts_divide_medians() {
        let rate = |rps| Rate { rps, client_us: 1.0, redis_us: 1.0 };
        let cell = |tool, rps: &[f64]| Cell {
            test: Test::Set,
            conns: 1,
            depth: 16,
            tool,
            rounds: rps.iter().map(|&r| rate(r)).collect(),
        };
        let cells =
            vec![cell(Tool::RingmanSend, &[90.0, 100.0, 300.0]), cell(Tool::RedisBenchmark, &[200.0, 50.0, 400.0])];
        assert_eq!(verdicts(&cells), ["SET c1 P16: ringman/redis-benchmark requests/s: send() 0.50x, pipeline() n/a"]);
        let t = table(&cells, &RedisClientOpts::default());
        assert!(t.contains("100 [90..300]") && t.contains("200 [50..400]"), "{t}");
    }

    /// Two ringman fan-out servers sharing one Redis channel, 20 subscribers spread over
    /// both, the publisher on the first: every subscriber gets every message exactly once,
    /// also those on the server the publisher is not connected to (skipped with a note when
    /// redis-server is not installed).
    #[test]
    fn fanout_through_redis_reaches_both_servers() {
        let Ok(mut redis) = RedisProc::start(0) else {
            eprintln!("note: redis-server is not installed; skipped");
            return;
        };
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let addr = server::free_addr().unwrap();
            let url = redis.url();
            std::thread::spawn(move || {
                let _ = crate::fanout::serve_ringman_redis(&format!("websocket://{addr}"), &url);
            });
            addrs.push(addr);
        }
        for addr in &addrs {
            let deadline = Instant::now() + READY_TIMEOUT;
            while TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "ringman did not listen on {addr}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        redis.wait_subscribers(crate::fanout::REDIS_TOPIC, 2).unwrap();
        let opts = LoadOpts {
            scenario: crate::cli::Scenario::FanoutRedis.wire(),
            conns: 20,
            size: 40,
            rate: Some(500.0),
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(300),
            ..LoadOpts::default()
        };
        let r = crate::fanout::run_spread(&addrs, &opts, |_| {}).unwrap();
        assert!(r.drained, "{r:?}");
        assert_eq!(r.lost_conns, 0);
        assert!(r.sent >= 20 * 100, "{r:?}");
        assert_eq!(r.sent, r.received, "every subscriber on both servers got every message once");
    }

    /// Against a real redis-server (skipped with a note when it is not installed): both
    /// ringman ways complete every request with checked answers, and the subscriber check
    /// sees what SUBSCRIBE does.
    #[test]
    fn ringman_ways_against_redis_server() {
        let Ok(mut redis) = RedisProc::start(0) else {
            eprintln!("note: redis-server is not installed; skipped");
            return;
        };
        let url = redis.url();
        let mut w = ringman::Worker::<()>::without_listener();
        w.count = 1;
        let ring = ringman::Server::new().add(w).start().unwrap();
        let o = RedisClientOpts { requests: 1_001, size: 7, ..RedisClientOpts::default() };
        for tool in [Tool::RingmanSend, Tool::RingmanPipeline] {
            for test in Test::ALL {
                let r = ringman_rate(&ring, &url, &redis, tool, test, 3, 16, &o).unwrap();
                assert!(r.rps > 0.0, "{tool:?} {test:?} {r:?}");
            }
        }
        // The last GET read the 7-byte value the SETs wrote.
        let v = command(redis.addr, &Cmd::new("GET").arg(KEY)).unwrap();
        assert_eq!(v, OwnedValue::Bulk(Some(b"xxxxxxx".to_vec())));
        // A GET of a value of another size is refused by the check.
        let wrong = RedisClientOpts { size: 8, ..o.clone() };
        let e = ringman_rate(&ring, &url, &redis, Tool::RingmanPipeline, Test::Get, 1, 4, &wrong).unwrap_err();
        assert!(e.to_string().contains("unexpected answer"), "{e}");
        let e = ringman_rate(&ring, &url, &redis, Tool::RingmanSend, Test::Get, 2, 4, &wrong).unwrap_err();
        assert!(e.to_string().contains("unexpected answer"), "{e}");
        // No subscriber yet: the wait times out only when asked for one; zero is there at once.
        redis.wait_subscribers("t", 0).unwrap();
        let mut sub = TcpStream::connect(redis.addr).unwrap();
        sub.write_all(&Cmd::new("SUBSCRIBE").arg("t").to_bytes()).unwrap();
        redis.wait_subscribers("t", 1).unwrap();
        ring.stop();
    }
}
