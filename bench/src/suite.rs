//! One measurement (`run`) and the standard suite (`compare`).

use std::time::{Duration, Instant};

use crate::cli::{Env, Generator, LoadOpts, Scenario, ServerKind};
use crate::error::{BenchError, LoadError, ServerError};
use crate::loadgen::{self, Edge};
use crate::report::{self, Figures, Outcome, Record};
use crate::rng::Rng;
use crate::server::{self, ServerProc};
use crate::target::{self, Target, TargetError};
use crate::{idle, machine, proxy, ringman_server, summary, uring_gen};

/// Short description of a workload (`echo 64B c64 d16`, `... open 90000/s`).
pub fn workload(o: &LoadOpts) -> String {
    let name = if o.scenario == Scenario::Proxy { "proxy echo" } else { o.scenario.name() };
    let mut s = match o.scenario {
        Scenario::Http => match (o.wire.file_size, o.wire.path.as_deref()) {
            (Some(size), Some(p)) if p != crate::wire::file_path(size) => {
                format!("http {p} (file {size}B beside) c{} d{}", o.conns, o.depth)
            }
            (Some(size), _) => format!("http file {size}B c{} d{}", o.conns, o.depth),
            _ => format!("http c{} d{}", o.conns, o.depth),
        },
        Scenario::Https => format!("https c{} d{}", o.conns, o.depth),
        Scenario::Handshake => format!("https full handshake c{}", o.conns),
        Scenario::Fanout | Scenario::FanoutRedis => return crate::fanout::workload(o),
        _ => format!("{} {}B c{} d{}", name, o.size, o.conns, o.depth),
    };
    if let Some(r) = o.rate {
        s = format!("{name} c{} open {}/s", o.conns, report::thousands(r));
        if o.scenario != Scenario::Http {
            s = format!("{name} {}B c{} open {}/s", o.size, o.conns, report::thousands(r));
        }
    }
    s
}

fn peers_needed(kind: ServerKind) -> bool {
    !matches!(kind, ServerKind::Ringman | ServerKind::RingmanStatic | ServerKind::RingmanWeb | ServerKind::Nginx)
}

/// Starts `kind`, runs the load, returns the figures. The load generator thread is pinned to
/// `env.client_cpu` first.
pub fn measure(kind: ServerKind, opts: &LoadOpts, env: &Env) -> Result<Figures, BenchError> {
    measure_with(kind, opts, env, None)
}

/// [`measure`] with the peers that take it given `--buf-size buf` (and the server serving
/// the file of `opts.wire.file_size`, if set).
pub fn measure_with(kind: ServerKind, opts: &LoadOpts, env: &Env, buf: Option<usize>) -> Result<Figures, BenchError> {
    let mut srv =
        ServerProc::start_with(kind, opts.scenario, opts.wire.file_size, buf, env.server_cpu, &env.peers_dir)?;
    match measure_at(srv.addr, Some(srv.pid()), opts, env, false) {
        Ok(f) => Ok(f),
        Err(e) => {
            srv.check_alive()?;
            Err(e)
        }
    }
}

/// Loads `addr` with `opts` and samples the process tree of `pid` (if known) for the server
/// CPU columns. `progress`: print a line on stderr every second of a long run.
pub fn measure_at(
    addr: std::net::SocketAddr,
    pid: Option<u32>,
    opts: &LoadOpts,
    env: &Env,
    progress: bool,
) -> Result<Figures, BenchError> {
    measure_behind(addr, pid, None, opts, env, progress)
}

/// [`measure_at`] through a second process: `upstream`, the echo server behind a proxy
/// (scenario `proxy`). The server CPU columns are the **whole path**, `pid` and `upstream`
/// together (a proxy is worth what the path costs, not what the proxy alone does); the
/// upstream's share is `upstream_cpu_us_per_msg` as well, so the proxy's own share is the
/// difference.
pub fn measure_behind(
    addr: std::net::SocketAddr,
    pid: Option<u32>,
    upstream: Option<u32>,
    opts: &LoadOpts,
    env: &Env,
    progress: bool,
) -> Result<Figures, BenchError> {
    let (pids, ups): (Vec<u32>, Vec<u32>) = (pid.into_iter().collect(), upstream.into_iter().collect());
    measure_procs(&[addr], &pids, &ups, Upstream::InServer, opts, env, progress)
}

/// How [`measure_procs`] counts the processes behind the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Part of the path under test: in the server CPU columns (a proxy's echo).
    InServer,
    /// A service beside the servers: sampled on its own, not in the server columns (the
    /// redis-server of `fanout-redis`).
    Beside,
}

/// [`measure_behind`] with several servers and several processes behind them: the load goes
/// to `addrs` (only `fanout` uses more than the first: [`crate::fanout::run_spread`]), the
/// server CPU columns are the sum over the process trees of `pids` (none: `n/a`), plus
/// `upstream`'s with [`Upstream::InServer`]; `upstream_cpu_us_per_msg` is the sum over
/// `upstream` (`fanout-redis`: the redis-server, [`Upstream::Beside`]).
pub fn measure_procs(
    addrs: &[std::net::SocketAddr],
    pids: &[u32],
    upstream: &[u32],
    counted: Upstream,
    opts: &LoadOpts,
    env: &Env,
    progress: bool,
) -> Result<Figures, BenchError> {
    let addr = addrs[0];
    server::pin_self(env.client_cpu).map_err(|source| BenchError::Affinity { cpu: env.client_cpu, source })?;
    // The edges run on the client CPU while the generator works, so they must be short (the
    // generator waits meanwhile): the server's process tree is listed once, before the load
    // (its threads and children exist by the time it accepts connections), and /proc/stat is
    // read once per edge for both the machine line and the two cores' busy time.
    let trees =
        |roots: &[u32]| (!roots.is_empty()).then(|| roots.iter().flat_map(|&p| server::tree(p)).collect::<Vec<_>>());
    let srv_pids = trees(pids);
    let up_pids = trees(upstream);
    let up_cpu = || up_pids.as_ref().map(|p| p.iter().map(|&p| server::proc_cpu(p)).sum::<Duration>());
    // The server columns: the servers, plus the upstream when it is part of the path.
    let srv_pids = match (counted, srv_pids, &up_pids) {
        (Upstream::InServer, Some(mut s), Some(u)) => {
            let more: Vec<u32> = u.iter().copied().filter(|p| !s.contains(p)).collect();
            s.extend(more);
            Some(s)
        }
        (_, s, _) => s,
    };
    let srv_cpu = || srv_pids.as_ref().map(|p| p.iter().map(|&p| server::proc_cpu(p)).sum::<Duration>());
    let (mut cpu0, mut cpu1) = (None, None);
    let (mut up0, mut up1) = (None, None);
    let (mut busy0, mut busy1) = ((Duration::ZERO, Duration::ZERO), (Duration::ZERO, Duration::ZERO));
    let client_cpus = env.generator_cpus();
    let tck = machine::clk_tck();
    let stat = || {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let core = |c| server::parse_cpu_busy(&text, c, tck).unwrap_or_default();
        let busy = (core(env.server_cpu), client_cpus.iter().map(|&c| core(c)).sum());
        (busy, machine::parse_cpu_times(&text, tck).unwrap_or_default())
    };
    let (mut machine0, mut machine1) = (machine::CpuTimes::default(), machine::CpuTimes::default());
    let started = Instant::now();
    let mut t0 = started;
    let mut t1 = t0;
    let mut last = (started, 0u64);
    let edge = |e| match e {
        Edge::Start => {
            (busy0, machine0) = stat();
            cpu0 = srv_cpu();
            up0 = up_cpu();
            t0 = Instant::now();
        }
        Edge::End => {
            cpu1 = srv_cpu();
            up1 = up_cpu();
            (busy1, machine1) = stat();
            t1 = Instant::now();
        }
        Edge::Progress { sent, received } if progress => {
            let now = Instant::now();
            let secs = now.duration_since(started);
            let phase = if secs < opts.warmup {
                "warmup"
            } else if secs < opts.warmup + opts.duration {
                "window"
            } else {
                "drain"
            };
            let rate = (received - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
            eprintln!(
                "[{:>5.1}s] {phase:<6} sent {:>12} received {:>12}  {:>11} msg/s",
                secs.as_secs_f64(),
                report::thousands(sent as f64),
                report::thousands(received as f64),
                report::thousands(rate)
            );
            last = (now, received);
        }
        Edge::Progress { .. } => {}
    };
    // A proxy in front of an echo is loaded as the echo itself.
    let wire_opts = LoadOpts { scenario: opts.scenario.wire(), ..opts.clone() };
    let opts = &wire_opts;
    let res = match env.generator {
        _ if opts.scenario.is_tls() => {
            let ca = crate::pki::shared()?.ca();
            crate::tls_gen::run(addr, opts, &ca, edge)?
        }
        _ if opts.scenario == Scenario::Fanout => crate::fanout::run_spread(addrs, opts, edge)?,
        _ if opts.scenario == Scenario::Udp => crate::udp_gen::run(addr, opts, edge)?,
        Generator::Uring => {
            let tuning =
                uring_gen::Tuning { threads: env.client_threads, pace: env.pace, cpus: env.client_cpus.clone() };
            uring_gen::run(addr, opts, &tuning, edge)?
        }
        Generator::Classic => loadgen::run(addr, opts, edge)?,
    };
    if res.received == 0 {
        return Err(LoadError::NoResponse.into());
    }
    let wall = t1.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    let server_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
        _ => None,
    };
    let upstream_cpu = match (up0, up1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
        _ => None,
    };
    let per_msg = |c: f64| if res.messages > 0 { c * 1e6 / res.messages as f64 } else { 0.0 };
    Ok(Figures {
        rate: res.rate(),
        latency: res.latency.summary(),
        curve: res.latency.curve(),
        server_cpu_us_per_msg: server_cpu.map(per_msg),
        server_util: server_cpu.map(|c| c / wall),
        upstream_cpu_us_per_msg: upstream_cpu.map(per_msg),
        client_util: res.client_util(),
        steal: machine1.since(&machine0).steal_share(),
        other_cores: server_cpu.map(|srv| {
            let beside = if counted == Upstream::Beside { upstream_cpu.unwrap_or(0.0) } else { 0.0 };
            machine::unexplained_cores(
                machine1.since(&machine0).busy,
                Duration::from_secs_f64(srv + beside),
                res.client_cpu,
                t1.saturating_duration_since(t0),
            )
        }),
        server_core_busy: busy1.0.saturating_sub(busy0.0).as_secs_f64() / wall,
        client_core_busy: busy1.1.saturating_sub(busy0.1).as_secs_f64() / wall,
        sent: res.sent,
        received: res.received,
        bad_status: res.bad_status,
        lost_conns: res.lost_conns,
        late: res.late,
        send_lag: res.send_lag.as_ref().map(|l| l.summary()),
        wire: res.wire.or_else(|| {
            // TLS: the plaintext inside it (the request as the plain scenario sends it).
            res.tls.as_ref().map(|t| crate::loadgen::WireBytes {
                request: crate::wire::request_for(&LoadOpts { scenario: opts.scenario.plain(), ..opts.clone() }).len()
                    as f64,
                response: t.plain_in_per_msg,
                headers: (!t.headers.is_empty()).then(|| t.headers.clone()),
            })
        }),
        tls: res.tls,
    })
}

/// `ringman-bench run --target URL`: one measurement of a server that is already running.
pub fn run_target(t: &Target, pid: Option<u32>, opts: &LoadOpts, env: &Env) -> Result<Record, BenchError> {
    if let Some(pid) = pid {
        if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            return Err(TargetError::NoPid { pid }.into());
        }
    }
    let addr = t.resolve()?;
    let f = match measure_at(addr, pid, opts, env, true) {
        Ok(f) => f,
        Err(BenchError::Load(e)) => return Err(target::classify(t, e).into()),
        Err(e) => return Err(e),
    };
    Ok(Record {
        id: "run".into(),
        workload: workload(opts),
        server: t.url.clone(),
        round: 0,
        outcome: Outcome::Done(f),
    })
}

/// `ringman-bench run`: one measurement, printed as a table row plus details.
pub fn run(kind: ServerKind, opts: &LoadOpts, env: &Env) -> Result<Record, BenchError> {
    if peers_needed(kind) {
        server::ensure_peers(&env.peers_dir, &env.out_dir)?;
    }
    let f = if opts.scenario == Scenario::FanoutRedis {
        if !kind.supports(Scenario::FanoutRedis) {
            return Err(ServerError::Unsupported { server: kind.name(), scenario: opts.scenario.name() }.into());
        }
        crate::redis_bench::measure_fanout(kind, opts, env, true)?
    } else if opts.scenario == Scenario::Proxy {
        if !kind.supports(Scenario::Proxy) {
            return Err(ServerError::Unsupported { server: kind.name(), scenario: opts.scenario.name() }.into());
        }
        crate::proxy::measure(Some(kind), opts, env, true)?
    } else {
        let mut srv = match opts.wire.file_size {
            Some(size) => ServerProc::start_files(kind, size, env.server_cpu, &env.peers_dir)?,
            None => ServerProc::start(kind, opts.scenario, env.server_cpu, &env.peers_dir)?,
        };
        match measure_at(srv.addr, Some(srv.pid()), opts, env, true) {
            Ok(f) => f,
            Err(e) => {
                srv.check_alive()?;
                return Err(e);
            }
        }
    };
    Ok(Record {
        id: "run".into(),
        workload: workload(opts),
        server: kind.name().into(),
        round: 0,
        outcome: Outcome::Done(f),
    })
}

/// One suite entry: id, workload, servers, and what the peers' receive buffer is.
struct Entry {
    id: &'static str,
    opts: LoadOpts,
    servers: &'static [ServerKind],
    /// `--buf-size` of the peers that take it ([`server::takes_buf_size`]); None: the peer's
    /// own default.
    buf: fn(ServerKind) -> Option<usize>,
}

/// Every peer keeps its own receive buffer (tokio, tokio-uring, monoio, epoll: 64 KiB per
/// connection; the floor: 1024 x 8 KiB provided buffers, ringman's former ring shape).
fn own_buffers(_: ServerKind) -> Option<usize> {
    None
}

/// P5: the peers that hold a receive buffer per connection get the size of ringman's whole
/// receive buffers (`ringman::WHOLE_RECV_BUFFER`, 8 KiB: what one of its receives delivers
/// on a kernel without incremental buffers), so an idle connection costs each of them what
/// its buffer costs at a size fit for small messages. (ringman's default buffers are 64 KiB,
/// shared by the ring's connections and consumed in pieces; a peer given 64 KiB per
/// connection would hold 8 times as much per idle connection, which would flatter ringman.
/// The floor's provided buffers are ringman's ring shape already.)
fn ringman_sized_buffers(kind: ServerKind) -> Option<usize> {
    server::takes_buf_size(kind).then(ringman_recv_buffer)
}

/// The size the per-connection peers read with in P5: ringman's whole receive buffer.
pub fn ringman_recv_buffer() -> usize {
    ringman::WHOLE_RECV_BUFFER as usize
}

/// P13 (bulk echo): each peer keeps the receive buffer it does best with. The peers' 64 KiB
/// per-connection buffers and the floor's 8 KiB provided buffers are their defaults; see
/// [`BULK_BUFFERS`] for what was measured.
fn bulk_buffers(kind: ServerKind) -> Option<usize> {
    BULK_BUFFERS.iter().find(|(k, _)| *k == kind).map(|&(_, b)| b)
}

/// P13's receive buffer per peer, where it is not the peer's default, chosen by A/B runs
/// (bench/README.md, "Bulk echo"): the floor spends 13–17 % less CPU per message with 64 KiB
/// provided buffers than with its 8 KiB default at every size (8 KiB: a 256 KiB message is 32
/// completions); tokio did worse with 256 KiB than with its 64 KiB, and epoll's 256 KiB was
/// within the noise of its 64 KiB, so they keep theirs.
pub const BULK_BUFFERS: &[(ServerKind, usize)] = &[(ServerKind::Floor, 64 * 1024)];

const ECHO_SERVERS: &[ServerKind] = &[
    ServerKind::Ringman,
    ServerKind::Tokio,
    ServerKind::TokioUring,
    ServerKind::Monoio,
    ServerKind::Floor,
    ServerKind::Epoll,
];

/// P5 also measures tokio with one receive buffer per thread instead of one per connection
/// (the completion-based runtimes lend a buffer to the kernel for every pending read, so they
/// have no such variant).
const IDLE_SERVERS: &[ServerKind] = &[
    ServerKind::Ringman,
    ServerKind::Tokio,
    ServerKind::TokioShared,
    ServerKind::TokioUring,
    ServerKind::Monoio,
    ServerKind::Floor,
    ServerKind::Epoll,
];
const HTTP_SERVERS: &[ServerKind] =
    &[ServerKind::Ringman, ServerKind::RingmanStatic, ServerKind::Tokio, ServerKind::Nginx];
const WS_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio, ServerKind::Fastwebsockets];
/// P10 and P11: HTTPS keep-alive and full handshakes; ringman, nginx (`ssl`) and the tokio
/// peer (hyper on tokio-rustls) hold the same certificate (`src/pki.rs`).
const HTTPS_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio, ServerKind::Nginx];
/// P12: wss echo (nginx echoes no WebSocket); the tokio peer is tokio-tungstenite on
/// tokio-rustls.
const WSS_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio];
const FANOUT_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio];
/// P9: UDP echo, ringman's `udp://` worker against a tokio `UdpSocket`.
const UDP_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio];
/// P6 runs this many times `--repeat` rounds: its p99 over one window is set by how many
/// millisecond-long preemptions of either core (kernel threads, the VM's agent) fall into it
/// and scatters by several times between rounds, so its median needs more of them.
const OPEN_LOOP_ROUNDS: usize = 2;
const OPEN_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio, ServerKind::Floor, ServerKind::Epoll];
/// P13: bulk echo against the echo servers (tokio-uring, unmaintained and the slowest of
/// them at 64 bytes, keeps only its P1, P2 and P5 cells).
const BULK_SERVERS: &[ServerKind] =
    &[ServerKind::Ringman, ServerKind::Tokio, ServerKind::Monoio, ServerKind::Floor, ServerKind::Epoll];
/// P14: static files from ringman's `WebServer`, nginx (`sendfile on`) and hyper on tokio.
const FILE_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Nginx, ServerKind::Tokio];
/// P15: the same `/hello` answer without and behind a `WebServer`.
const FALLTHROUGH_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::RingmanWeb];

/// P13's workloads: (message bytes, connections, messages in flight per connection).
pub const BULK: [(usize, usize, usize); 3] = [(16 * 1024, 16, 2), (64 * 1024, 16, 2), (256 * 1024, 4, 2)];
/// P14's file sizes ("30 KB" and "1 MB"), each fetched over 32 keep-alive connections, one
/// request in flight on each.
pub const FILE_SIZES: [usize; 2] = [30_000, 1_000_000];
/// P17: active connections, each sending now and then at [`MANY_RATE`] messages/s in all.
pub const MANY_CONNS: usize = 10_000;
/// P17's total rate (5 messages/s per connection): open loop, the same for every server.
pub const MANY_RATE: f64 = 50_000.0;
/// File descriptors a process needs beyond its connections (listeners, rings, pipes, logs).
pub const NOFILE_SLACK: u64 = 1024;

/// Idle connections of P5 (full and quick): RSS is read at [`IDLE_CONNS_LO`] and at this
/// count, and the slope between them is the figure.
pub const IDLE_CONNS: usize = 10_000;
/// First P5 reading (the pools are warm by then).
pub const IDLE_CONNS_LO: usize = 2_000;

fn timing(quick: bool) -> (Duration, Duration) {
    if quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
    }
}

/// Warmup and window of the TLS cells (P10–P12): as the others in full mode; `--quick`
/// keeps them short (0.25 s + 1 s) so the eight TLS cells add about half a minute.
fn tls_timing(quick: bool) -> (Duration, Duration) {
    if quick {
        (Duration::from_millis(250), Duration::from_secs(1))
    } else {
        timing(quick)
    }
}

/// Warmup and window of issue 20's cells (P13–P17, 32 cells per round): 1 s + 5 s in full
/// mode (their messages are large or their rate fixed, so 5 s hold tens of thousands of
/// them), 0.25 s + 1 s with `--quick`.
fn payload_timing(quick: bool) -> (Duration, Duration) {
    if quick {
        (Duration::from_millis(250), Duration::from_secs(1))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    }
}

fn entries(quick: bool) -> Vec<Entry> {
    let (warmup, duration) = timing(quick);
    let o = |scenario, conns, size, depth| LoadOpts {
        scenario,
        conns,
        size,
        depth,
        duration,
        warmup,
        rate: None,
        wire: Default::default(),
    };
    let e = |id, opts, servers| Entry { id, opts, servers, buf: own_buffers };
    let mut v = vec![
        e("P1", o(Scenario::Echo, 64, 64, 1), ECHO_SERVERS),
        e("P2", o(Scenario::Echo, 64, 64, 16), ECHO_SERVERS),
        e("P3", o(Scenario::Http, 256, 0, 16), HTTP_SERVERS),
        e("P3", o(Scenario::Http, 256, 0, 1), HTTP_SERVERS),
        e("P4", o(Scenario::Ws, 100, 20, 1), WS_SERVERS),
        e("P7", crate::fanout::suite_opts(1000, warmup, duration), FANOUT_SERVERS),
        e("P9", o(Scenario::Udp, 64, 64, 1), UDP_SERVERS),
    ];
    if !quick {
        v.push(e("P7", crate::fanout::suite_opts(10_000, warmup, duration), FANOUT_SERVERS));
    }
    let (warmup, duration) = tls_timing(quick);
    let t = |scenario, conns, size, depth| LoadOpts { warmup, duration, ..o(scenario, conns, size, depth) };
    v.extend([
        // As P3's depth-1 cell, inside TLS.
        e("P10", t(Scenario::Https, 256, 0, 1), HTTPS_SERVERS),
        // 32 connections at a time, each: connect, full handshake, one request, close.
        e("P11", t(Scenario::Handshake, 32, 0, 1), HTTPS_SERVERS),
        // As P4, inside TLS.
        e("P12", t(Scenario::Wss, 100, 20, 1), WSS_SERVERS),
    ]);
    // Issue 20: real payloads.
    let (warmup, duration) = payload_timing(quick);
    let b = |scenario, conns, size, depth| LoadOpts { warmup, duration, ..o(scenario, conns, size, depth) };
    for (size, conns, depth) in BULK {
        v.push(Entry {
            id: "P13",
            opts: b(Scenario::Echo, conns, size, depth),
            servers: BULK_SERVERS,
            buf: bulk_buffers,
        });
    }
    for size in FILE_SIZES {
        let mut opts = b(Scenario::Http, 32, 0, 1);
        opts.wire.file_size = Some(size);
        opts.wire.path = Some(crate::wire::file_path(size));
        v.push(e("P14", opts, FILE_SERVERS));
    }
    v.push(e("P15", b(Scenario::Http, 64, 0, 1), FALLTHROUGH_SERVERS));
    // P16 (large messages through the proxies) runs with P8, below.
    v.push(e("P17", LoadOpts { rate: Some(MANY_RATE), ..b(Scenario::Echo, MANY_CONNS, 64, 1) }, OPEN_SERVERS));
    v
}

/// Every cell the suite runs, as (id, workload, server names): the entries, P5, P8 and P16
/// (with their `direct` baseline). P6 is left out: its workload carries the rate it takes
/// from P1's median.
pub fn catalog(quick: bool) -> Vec<(&'static str, String, Vec<&'static str>)> {
    let names = |list: &[ServerKind]| list.iter().map(|k| k.name()).collect::<Vec<_>>();
    let mut v: Vec<(&'static str, String, Vec<&'static str>)> =
        entries(quick).iter().map(|e| (e.id, workload(&e.opts), names(e.servers))).collect();
    v.push(("P5", format!("idle slope {IDLE_CONNS_LO}->{IDLE_CONNS}"), names(IDLE_SERVERS)));
    let (w, d) = timing(quick);
    let (pw, pd) = payload_timing(quick);
    for (id, opts) in [(proxy::ID, proxy::suite_opts(w, d)), (proxy::LARGE_ID, proxy::large_opts(pw, pd))] {
        let subjects = std::iter::once(proxy::DIRECT).chain(names(proxy::PROXY_SERVERS)).collect();
        v.push((id, workload(&opts), subjects));
    }
    v
}

/// Rounds per cell when `--repeat` is not given.
pub fn default_repeat(quick: bool) -> usize {
    if quick {
        3
    } else {
        5
    }
}

/// The order of `servers` in each of `rounds` rounds: an independent shuffle per round.
pub fn round_orders<T: Clone>(servers: &[T], rounds: usize, rng: &mut Rng) -> Vec<Vec<T>> {
    (0..rounds)
        .map(|_| {
            let mut v = servers.to_vec();
            rng.shuffle(&mut v);
            v
        })
        .collect()
}

/// `ringman-bench compare`: the standard suite against every available server, each cell
/// `repeat` times with the servers in a seeded random order per round; `cells`: only the
/// workloads with these ids (P6 then derives its rate from P1 only if P1 ran too).
#[allow(clippy::too_many_arguments)] // the command line's options, one each
pub fn compare(
    quick: bool,
    only: Option<&[ServerKind]>,
    env: &Env,
    repeat: Option<usize>,
    seed: Option<u64>,
    cells: Option<&[String]>,
    files: &crate::cli::CompareFiles,
) -> Result<Vec<Record>, BenchError> {
    // A goals file that does not parse stops the run before it starts, not after it.
    let goals_path = files.goals.clone().unwrap_or_else(crate::goals::default_path);
    let goals = crate::goals::Goals::load(&goals_path)?;
    let partial = match (cells, only) {
        (None, None) => None,
        (c, o) => Some(
            [
                c.map(|c| format!("--cells {}", c.join(","))),
                o.map(|o| format!("--servers {}", o.iter().map(|k| k.name()).collect::<Vec<_>>().join(","))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        ),
    };
    let results_path = files.results.clone().unwrap_or_else(|| match (&partial, quick) {
        (None, false) => std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md"),
        _ => env.out_dir.join("RESULTS.md"),
    });
    let wanted_id = |id: &str| cells.is_none_or(|c| c.iter().any(|x| x == id));
    let started = Instant::now();
    let repeat = repeat.unwrap_or_else(|| default_repeat(quick));
    let seed = seed.unwrap_or_else(Rng::clock_seed);
    let mut rng = Rng::new(seed);
    let identity = machine::Identity::collect();
    let snap0 = machine::Snapshot::now();
    eprintln!(
        "compare{}: {repeat} rounds per cell, servers in a random order per round (seed {seed}; replay with --seed {seed})",
        if quick { " --quick" } else { "" }
    );
    let wanted = |k: ServerKind| only.is_none_or(|o| o.contains(&k));
    let peer_err = if ServerKind::ALL.iter().any(|&k| peers_needed(k) && wanted(k)) {
        server::ensure_peers(&env.peers_dir, &env.out_dir).err().map(|e| e.to_string())
    } else {
        None
    };
    let mut records = Vec::new();
    let push = |r: Record, records: &mut Vec<Record>| {
        eprintln!("[{:>6.1}s] r{} {}", started.elapsed().as_secs_f64(), r.round + 1, report::progress_line(&r));
        records.push(r);
    };
    let skip_reason = |k: ServerKind| -> Option<String> {
        match (&peer_err, peers_needed(k)) {
            (Some(e), true) => Some(e.clone()),
            _ => None,
        }
    };
    let one = |id: &str, k: ServerKind, opts: &LoadOpts, buf: Option<usize>, round: usize| -> Record {
        let outcome = match skip_reason(k) {
            Some(why) => Outcome::Skipped(why),
            None => match measure_with(k, opts, env, buf) {
                Ok(f) => Outcome::Done(f),
                Err(e) => Outcome::Skipped(e.to_string()),
            },
        };
        Record { id: id.into(), workload: workload(opts), server: k.name().into(), round, outcome }
    };
    let servers_of = |list: &[ServerKind]| list.iter().copied().filter(|&k| wanted(k)).collect::<Vec<_>>();
    for e in entries(quick).into_iter().filter(|e| wanted_id(e.id)) {
        // Thousands of connections: the generator and each server hold one descriptor per
        // connection (servers inherit the harness's limits).
        let nofile =
            (e.opts.conns > 1000).then(|| machine::ensure_nofile(e.opts.conns as u64 + NOFILE_SLACK).err()).flatten();
        for (round, order) in round_orders(&servers_of(e.servers), repeat, &mut rng).into_iter().enumerate() {
            for k in order {
                let r = match &nofile {
                    Some(why) => Record {
                        id: e.id.into(),
                        workload: workload(&e.opts),
                        server: k.name().into(),
                        round,
                        outcome: Outcome::Skipped(why.clone()),
                    },
                    None => one(e.id, k, &e.opts, (e.buf)(k), round),
                };
                push(r, &mut records);
            }
        }
    }
    // P5: idle connections.
    let idle = if wanted_id("P5") { servers_of(IDLE_SERVERS) } else { Vec::new() };
    for (round, order) in round_orders(&idle, repeat, &mut rng).into_iter().enumerate() {
        for k in order {
            let workload = format!("idle slope {IDLE_CONNS_LO}->{IDLE_CONNS}");
            let outcome = match skip_reason(k) {
                Some(why) => Outcome::Skipped(why),
                None => match idle_rss(k, env, ringman_sized_buffers(k)) {
                    Ok(o) => o,
                    Err(e) => Outcome::Skipped(e.to_string()),
                },
            };
            push(Record { id: "P5".into(), workload, server: k.name().into(), round, outcome }, &mut records);
        }
    }
    // P6: open loop at 50% of ringman's median P1 rate (tokio's if ringman did not run).
    let p1 = |name: &str| {
        summary::Stat::of(
            records.iter().filter(|r| r.id == "P1" && r.server == name).filter_map(|r| r.figures()).map(|f| f.rate),
        )
        .map(|s| s.median)
    };
    let base = p1("ringman").map(|r| (r, "ringman")).or_else(|| p1("tokio").map(|r| (r, "tokio")));
    match base {
        _ if !wanted_id("P6") => {}
        Some((peak, from)) if peak > 0.0 => {
            let (warmup, duration) = timing(quick);
            let rate = (peak * 0.5).round();
            let opts = LoadOpts {
                scenario: Scenario::Echo,
                conns: 64,
                size: 64,
                depth: 1,
                duration,
                warmup,
                rate: Some(rate),
                wire: Default::default(),
            };
            eprintln!("P6 open loop at {} msg/s = 50% of {from}'s median P1 rate", report::thousands(rate));
            let rounds = repeat * OPEN_LOOP_ROUNDS;
            for (round, order) in round_orders(&servers_of(OPEN_SERVERS), rounds, &mut rng).into_iter().enumerate() {
                for k in order {
                    let r = one("P6", k, &opts, None, round);
                    push(r, &mut records);
                }
            }
        }
        _ => push(
            Record {
                id: "P6".into(),
                workload: "echo open loop".into(),
                server: "ringman".into(),
                round: 0,
                outcome: Outcome::Skipped("no P1 rate (ringman or tokio) to derive the rate from".into()),
            },
            &mut records,
        ),
    }
    // P8 and P16: generator -> proxy -> echo, each proxy beside the echo loaded directly.
    let proxies = servers_of(proxy::PROXY_SERVERS);
    let (w8, d8) = timing(quick);
    let (w16, d16) = payload_timing(quick);
    for (id, opts) in [(proxy::ID, proxy::suite_opts(w8, d8)), (proxy::LARGE_ID, proxy::large_opts(w16, d16))] {
        if proxies.is_empty() || !wanted_id(id) {
            continue;
        }
        let subjects: Vec<Option<ServerKind>> =
            std::iter::once(None).chain(proxies.iter().copied().map(Some)).collect();
        for (round, order) in round_orders(&subjects, repeat, &mut rng).into_iter().enumerate() {
            for k in order {
                let outcome = match k.and_then(skip_reason) {
                    Some(why) => Outcome::Skipped(why),
                    None => match proxy::measure(k, &opts, env, false) {
                        Ok(f) => Outcome::Done(f),
                        Err(e) => Outcome::Skipped(e.to_string()),
                    },
                };
                let server = proxy::subject_name(k).into();
                push(Record { id: id.into(), workload: workload(&opts), server, round, outcome }, &mut records);
            }
        }
    }
    let snap1 = machine::Snapshot::now();
    let cells = summary::cells(&records);
    let judged = crate::goals::judge_all(&goals, &cells);
    let run = RunInfo { quick, repeat, seed, identity, snap0, snap1, took: started.elapsed() };
    let head = run.head_lines(&cells);
    println!(
        "\n{}{}{}\n{}",
        summary::table(&cells, &head),
        proxy::section(&records),
        crate::tls_gen::section(&records),
        crate::goals::text(&judged)
    );
    write_outputs(&records, &cells, &run, env, &judged)?;
    let facts = crate::results::RunFacts {
        command: command_line(),
        head: run.identity.head.clone(),
        dirty: run.identity.dirty,
        date: String::from_utf8_lossy(&ringman::http::date_now()).into_owned(),
        quick,
        partial,
        repeat,
        seed,
        seconds: run.took.as_secs_f64(),
        machine: run.machine_lines(env),
        warnings: warnings(run.steal_share(), &cells),
    };
    let md = crate::results::render(&facts, &cells, &judged, &goals.not_judged, &details(&records, &cells));
    let io = |path: std::path::PathBuf| move |source| BenchError::Output { path, source };
    if let Some(dir) = results_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    }
    std::fs::write(&results_path, md).map_err(io(results_path.clone()))?;
    eprintln!("wrote {} (goals from {})", results_path.display(), goals_path.display());
    Ok(records)
}

/// The command line as typed (arguments with spaces or quotes single-quoted).
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./,:=+@%".contains(c)) {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text blocks below the table that belong to a suite id, for the results file: the
/// open-loop tails (P6, P17), the proxy tables (P8, P16), the TLS lines (P10–P12).
fn details(records: &[Record], cells: &[summary::Cell]) -> Vec<(&'static str, String)> {
    // A block's header line, then its lines about `id`.
    let lines_for = |text: &str, id: &str| {
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let own: Vec<&str> = lines.filter(|l| l.split_whitespace().next() == Some(id)).collect();
        if own.is_empty() {
            String::new()
        } else {
            format!("{header}\n{}\n", own.join("\n"))
        }
    };
    let open = summary::open_loop_section(cells);
    let tls = crate::tls_gen::section(records);
    let mut v: Vec<(&'static str, String)> = vec![("P6", lines_for(&open, "P6")), ("P17", lines_for(&open, "P17"))];
    for id in proxy::IDS {
        v.push((id, proxy::section_of(records, id)));
    }
    for id in ["P10", "P11", "P12"] {
        v.push((id, lines_for(&tls, id)));
    }
    v
}

/// What `compare` records about itself and the machine.
struct RunInfo {
    quick: bool,
    repeat: usize,
    seed: u64,
    identity: machine::Identity,
    snap0: machine::Snapshot,
    snap1: machine::Snapshot,
    took: Duration,
}

impl RunInfo {
    fn steal_share(&self) -> f64 {
        self.snap1.cpu.since(&self.snap0.cpu).steal_share()
    }

    fn meta(&self, env: &Env) -> Vec<(&'static str, String)> {
        let id = &self.identity;
        vec![
            ("quick", self.quick.to_string()),
            ("repeat", self.repeat.to_string()),
            ("seed", self.seed.to_string()),
            ("commit", id.commit.clone()),
            ("rustc", id.rustc.clone()),
            ("kernel", id.kernel.clone()),
            ("cpus", id.cpus.to_string()),
            ("server_cpu", env.server_cpu.to_string()),
            ("client_cpu", env.client_cpu.to_string()),
            ("client_cpus", env.generator_cpus().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")),
            ("client_threads", env.client_threads.to_string()),
            ("loadavg_start", self.snap0.loadavg.clone()),
            ("loadavg_end", self.snap1.loadavg.clone()),
            ("steal_since_boot_start_s", format!("{:.1}", self.snap0.cpu.steal.as_secs_f64())),
            ("steal_since_boot_end_s", format!("{:.1}", self.snap1.cpu.steal.as_secs_f64())),
            ("steal_share_run", format!("{:.4}", self.steal_share())),
            ("suite_seconds", format!("{:.1}", self.took.as_secs_f64())),
        ]
    }

    /// The machine and placement, for the results file.
    fn machine_lines(&self, env: &Env) -> Vec<(String, String)> {
        let id = &self.identity;
        let mut v: Vec<(String, String)> = vec![
            ("kernel".into(), id.kernel.clone()),
            ("rustc".into(), id.rustc.clone()),
            ("CPUs online".into(), id.cpus.to_string()),
        ];
        v.extend(machine::facts().into_iter().map(|(k, val)| (k.replace('_', " "), val)));
        let cpus = env.generator_cpus().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
        v.extend([
            (
                "placement".into(),
                format!(
                    "server on CPU {}, load generator ({}, {} thread(s)) on CPU {cpus}",
                    env.server_cpu,
                    env.generator.name(),
                    env.client_threads
                ),
            ),
            ("load average".into(), format!("start {}, end {}", self.snap0.loadavg, self.snap1.loadavg)),
            ("steal during the run".into(), format!("{:.2} % of CPU time", self.steal_share() * 100.0)),
        ]);
        v
    }

    /// The lines above the table: identity, machine state at start and end, warnings, legend.
    fn head_lines(&self, cells: &[summary::Cell]) -> Vec<String> {
        let id = &self.identity;
        let mut h = vec![
            format!(
                "compare{}: {} rounds per cell, servers in a random order per round, seed {} ({:.0} s)",
                if self.quick { " --quick" } else { "" },
                self.repeat,
                self.seed,
                self.took.as_secs_f64()
            ),
            format!("commit {}  {}  kernel {}  {} CPUs", id.commit, id.rustc, id.kernel, id.cpus),
            format!(
                "start: load average {}, steal since boot {:.1} s",
                self.snap0.loadavg,
                self.snap0.cpu.steal.as_secs_f64()
            ),
            format!(
                "end:   load average {}, steal since boot {:.1} s; steal during the run {:.2} % of CPU time",
                self.snap1.loadavg,
                self.snap1.cpu.steal.as_secs_f64(),
                self.steal_share() * 100.0
            ),
        ];
        h.extend(warnings(self.steal_share(), cells));
        h.push(format!(
            "medians of {} rounds; spread = min/max vs the median; other = CPU cores busy outside server + load \
             generator; flags: S steal > {:.0} % in a round, O median other > {:.2} cores (o: in some round only), \
             c client-bound (cli% >= {:.0}: compare srv µs/msg), E failed rounds",
            self.repeat,
            summary::STEAL_FLAG * 100.0,
            summary::OTHER_FLAG,
            summary::CLIENT_BOUND * 100.0
        ));
        h.push(format!(
            "P5: server RSS slope between {IDLE_CONNS_LO} and {IDLE_CONNS} idle connections (B/conn), and the \
             machine's kernel slab growth over the same step per connection (slab, both socket ends)"
        ));
        h
    }
}

/// Loud run-level warnings: steal over the whole run, or many cells with foreign CPU load.
pub fn warnings(run_steal: f64, cells: &[summary::Cell]) -> Vec<String> {
    let mut w = Vec::new();
    if run_steal > summary::STEAL_FLAG {
        w.push(format!(
            "!!! WARNING: the hypervisor stole {:.1} % of this VM's CPU time during the run: every figure is suspect",
            run_steal * 100.0
        ));
    }
    let load: Vec<_> = cells.iter().filter(|c| matches!(c.value, summary::CellValue::Load { .. })).collect();
    let other = load.iter().filter(|c| c.flags().contains('O')).count();
    if !load.is_empty() && other * 4 >= load.len() {
        w.push(format!(
            "!!! WARNING: {other} of {} cells had more than {:.2} cores busy outside the server and the load \
             generator (another process ran): rerun on a quiet machine",
            load.len(),
            summary::OTHER_FLAG
        ));
    }
    let steal = load.iter().filter(|c| c.flags().contains('S')).count();
    if steal > 0 && run_steal <= summary::STEAL_FLAG {
        w.push(format!("!!! WARNING: {steal} cells saw steal above {:.0} %", summary::STEAL_FLAG * 100.0));
    }
    w
}

fn idle_rss(kind: ServerKind, env: &Env, buf: Option<usize>) -> Result<Outcome, BenchError> {
    let srv = ServerProc::start_with(kind, Scenario::Echo, None, buf, env.server_cpu, &env.peers_dir)?;
    let r = idle::run_slope(srv.addr, IDLE_CONNS_LO, IDLE_CONNS, || srv.rss(), machine::slab_bytes)?;
    Ok(Outcome::Idle {
        conns_lo: r.lo,
        conns: r.hi,
        bytes_per_conn: r.per_conn(),
        slab_per_conn: r.slab_per_conn(),
        rss_before: r.rss_base,
        rss_lo: r.rss_lo,
        rss_after: r.rss_hi,
    })
}

/// Metadata of a single `run`: commit, rustc, kernel, load average.
pub fn run_meta() -> Vec<(&'static str, String)> {
    let id = machine::Identity::collect();
    let snap = machine::Snapshot::now();
    vec![
        ("commit", id.commit),
        ("rustc", id.rustc),
        ("kernel", id.kernel),
        ("cpus", id.cpus.to_string()),
        ("loadavg", snap.loadavg),
    ]
}

/// For the chart: per cell, the round whose throughput is closest to the cell's median.
fn median_rounds<'a>(records: &'a [Record], cells: &[summary::Cell]) -> Vec<&'a Record> {
    cells
        .iter()
        .filter_map(|c| {
            let summary::CellValue::Load { rate, .. } = &c.value else { return None };
            records
                .iter()
                .filter(|r| r.id == c.id && r.workload == c.workload && r.server == c.server)
                .filter_map(|r| r.figures().map(|f| (r, (f.rate - rate.median).abs())))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|x| x.0)
        })
        .collect()
}

fn write_outputs(
    records: &[Record],
    cells: &[summary::Cell],
    run: &RunInfo,
    env: &Env,
    judged: &[crate::goals::Judged],
) -> Result<(), BenchError> {
    let out = &env.out_dir;
    let io = |path: std::path::PathBuf| move |source| BenchError::Output { path, source };
    std::fs::create_dir_all(out).map_err(io(out.clone()))?;
    let j = out.join("compare.json");
    // `"cells": [...]`, then `"goals": [...]` (the verdicts) as the next member.
    let cells_json = format!("{},\n  \"goals\": {}", summary::json(cells), crate::goals::json(judged));
    std::fs::write(&j, report::json_with(records, &run.meta(env), Some(&cells_json))).map_err(io(j.clone()))?;
    let s = out.join("latency.svg");
    let reps: Vec<Record> = median_rounds(records, cells).into_iter().cloned().collect();
    std::fs::write(&s, report::svg(&reps)).map_err(io(s.clone()))?;
    eprintln!("wrote {} and {} ({:.0} s)", j.display(), s.display(), run.took.as_secs_f64());
    Ok(())
}

/// `ringman-bench serve-ringman ADDR [UPSTREAM | CERT KEY]`.
pub fn serve_ringman(
    addr: &str,
    upstream: Option<&str>,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<(), ServerError> {
    let served = match (upstream, tls) {
        (_, Some((cert, key))) => ringman_server::serve_tls(addr, &cert, &key),
        (Some(up), None) if addr.starts_with("fanout-redis://") => {
            crate::fanout::serve_ringman_redis(&addr.replacen("fanout-redis://", "websocket://", 1), up)
        }
        (Some(up), None) => ringman_server::serve_proxy(addr, up),
        (None, None) => ringman_server::serve(addr),
    };
    served.map_err(|e| ServerError::Exited { status: "serve-ringman failed".into(), stderr: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_shape() {
        let e = entries(true);
        assert_eq!(e.len(), 17);
        assert!(e.iter().all(|e| e.servers.iter().all(|s| s.supports(e.opts.scenario))));
        assert!(OPEN_SERVERS.iter().chain(ECHO_SERVERS).all(|s| s.supports(Scenario::Echo)));
        // P5 measures the shared-buffer tokio echo beside the per-connection one.
        assert!(IDLE_SERVERS.contains(&ServerKind::TokioShared) && IDLE_SERVERS.contains(&ServerKind::Tokio));
        assert!(!ECHO_SERVERS.contains(&ServerKind::TokioShared));
        // P4 has the fastwebsockets peer; the fan-out cells only the servers that broadcast.
        let p4 = e.iter().find(|e| e.id == "P4").unwrap();
        assert!(p4.servers.contains(&ServerKind::Fastwebsockets));
        assert!(e.iter().filter(|e| e.id == "P7").all(|e| !e.servers.contains(&ServerKind::Fastwebsockets)));
        let (w, d) = timing(true);
        // 25 timed cells (P9's two included) and P8's three (direct, ringman, tokio) x 3
        // rounds, P6's four cells twice as often (+ P5 and server start-up) must fit in a
        // little over 4 minutes.
        let cells = 25 + proxy::PROXY_SERVERS.len() + 1 + 4 * (OPEN_LOOP_ROUNDS - 1);
        assert!((w + d).as_secs_f64() * cells as f64 * default_repeat(true) as f64 <= 245.0);
        // The TLS cells: P10 and P11 against ringman, tokio and nginx, P12 against ringman
        // and tokio, each on the same certificate; short in quick mode (about 30 s in all).
        let tls: Vec<&Entry> = e.iter().filter(|e| e.opts.scenario.is_tls()).collect();
        assert_eq!(tls.iter().map(|e| e.id).collect::<Vec<_>>(), ["P10", "P11", "P12"]);
        assert_eq!(tls.iter().map(|e| e.servers.len()).sum::<usize>(), 8);
        assert!(tls[..2]
            .iter()
            .all(|e| e.servers.contains(&ServerKind::Nginx) && e.servers.contains(&ServerKind::Tokio)));
        // Issue 20's cells: bulk echo at three sizes against five echo servers, two files
        // against ringman, nginx and hyper, the fall-through pair, 10,000 connections open
        // loop; with P16's three proxy subjects about two minutes in quick mode.
        let ids = |id: &str| e.iter().filter(|e| e.id == id).collect::<Vec<_>>();
        let bulk = ids("P13");
        assert_eq!(
            bulk.iter().map(|e| workload(&e.opts)).collect::<Vec<_>>(),
            ["echo 16384B c16 d2", "echo 65536B c16 d2", "echo 262144B c4 d2"]
        );
        assert!(bulk.iter().all(|e| e.servers == BULK_SERVERS && e.servers.len() == 5));
        let files = ids("P14");
        assert_eq!(
            files.iter().map(|e| workload(&e.opts)).collect::<Vec<_>>(),
            ["http file 30000B c32 d1", "http file 1000000B c32 d1"]
        );
        assert!(files.iter().all(|e| e.servers.contains(&ServerKind::Nginx) && e.servers.contains(&ServerKind::Tokio)));
        assert_eq!(ids("P15")[0].servers, [ServerKind::Ringman, ServerKind::RingmanWeb]);
        let many = &ids("P17")[0].opts;
        assert_eq!((many.conns, many.rate), (MANY_CONNS, Some(MANY_RATE)));
        assert_eq!(workload(many), "echo 64B c10000 open 50,000/s");
        let payload_cells =
            e.iter().filter(|e| ["P13", "P14", "P15", "P17"].contains(&e.id)).map(|e| e.servers.len()).sum::<usize>()
                + 3;
        assert_eq!(payload_cells, 30);
        let (pw, pd) = payload_timing(true);
        assert!((pw + pd).as_secs_f64() * payload_cells as f64 * default_repeat(true) as f64 <= 115.0);
        // Receive buffers: P5 gives the per-connection peers ringman's size, nothing else.
        assert_eq!(ringman_recv_buffer(), 8192);
        assert_eq!(ringman_sized_buffers(ServerKind::Tokio), Some(ringman_recv_buffer()));
        assert_eq!(ringman_sized_buffers(ServerKind::Epoll), Some(ringman_recv_buffer()));
        assert_eq!(ringman_sized_buffers(ServerKind::Ringman), None);
        assert_eq!(ringman_sized_buffers(ServerKind::TokioShared), None);
        assert!(BULK_BUFFERS.iter().all(|(k, _)| server::takes_buf_size(*k) && BULK_SERVERS.contains(k)));
        let tls_cells = tls.iter().map(|e| e.servers.len()).sum::<usize>() as f64;
        let (tw, td) = tls_timing(true);
        assert!((tw + td).as_secs_f64() * tls_cells * default_repeat(true) as f64 <= 30.0);
        assert_eq!(tls_timing(false), timing(false));
    }

    /// Every goal of `bench/goals.json` names cells the suite runs (in quick and in full
    /// mode): the id, the workload as `compare` prints it (or an id with one workload), and a
    /// server of that cell, with a metric the cell has.
    #[test]
    fn the_goals_file_names_cells_the_suite_runs() {
        use crate::goals::{Baseline, CellRef, Goals, Metric};
        let goals = Goals::load(&crate::goals::default_path()).unwrap();
        assert!(goals.goals.len() >= 14, "{}", goals.goals.len());
        for quick in [true, false] {
            let cat = catalog(quick);
            let check = |r: &CellRef, metric: Metric, goal: &str| {
                let of_id: Vec<_> = cat.iter().filter(|c| c.0 == r.id).collect();
                let cell = match &r.workload {
                    Some(w) => of_id.iter().find(|c| c.1 == *w),
                    None => {
                        assert_eq!(of_id.len(), 1, "{goal}: {} has several workloads: name one", r.id);
                        of_id.first()
                    }
                };
                let cell = cell.unwrap_or_else(|| panic!("{goal}: no cell {r:?} (quick {quick})"));
                assert!(cell.2.contains(&r.server.as_str()), "{goal}: {} does not run in {cell:?}", r.server);
                let idle = r.id == "P5";
                assert_eq!(metric == Metric::BytesPerConn, idle, "{goal}: metric {metric:?} for {}", r.id);
            };
            for g in &goals.goals {
                check(&g.subject, g.metric, &g.name);
                if let Baseline::Cell { cell, .. } = &g.baseline {
                    check(cell, g.metric, &g.name);
                }
            }
        }
        // Issue 20's goals are all there.
        let names: Vec<&str> = goals.goals.iter().map(|g| g.name.as_str()).collect();
        for needle in ["bulk echo 16 KiB", "bulk echo 256 KiB", "static file 1 MB", "fall-through", "(P1)", "(P5)"] {
            assert!(names.iter().any(|n| n.contains(needle)), "{needle}: {names:?}");
        }
        assert!(goals.not_judged.iter().any(|n| n.name.contains("64-byte")));
    }

    #[test]
    fn rounds_are_seeded_permutations() {
        let servers = ECHO_SERVERS;
        let a = round_orders(servers, 5, &mut Rng::new(99));
        assert_eq!(a, round_orders(servers, 5, &mut Rng::new(99)), "same seed, same orders");
        assert_eq!(a.len(), 5);
        for order in &a {
            let mut o = order.clone();
            o.sort_by_key(|k| k.name());
            let mut s = servers.to_vec();
            s.sort_by_key(|k| k.name());
            assert_eq!(o, s, "every round runs every server once");
        }
        assert!(a.windows(2).any(|w| w[0] != w[1]), "orders differ between rounds");
        assert_eq!((default_repeat(true), default_repeat(false)), (3, 5));
    }

    #[test]
    fn run_level_warnings() {
        let fig = |other: f64, steal: f64| crate::testutil::figures(1.0, 1.0, steal, other);
        let rec = |server: &str, f| Record {
            id: "P1".into(),
            workload: "w".into(),
            server: server.into(),
            round: 0,
            outcome: Outcome::Done(f),
        };
        let quiet = summary::cells(&[rec("a", fig(0.01, 0.0)), rec("b", fig(0.02, 0.0))]);
        assert!(warnings(0.0, &quiet).is_empty());
        assert_eq!(warnings(0.05, &quiet).len(), 1);
        assert!(warnings(0.05, &quiet)[0].contains("stole 5.0 %"));
        let busy = summary::cells(&[rec("a", fig(0.9, 0.0)), rec("b", fig(0.02, 0.03))]);
        let w = warnings(0.0, &busy);
        assert!(w.iter().any(|l| l.contains("1 of 2 cells")), "{w:?}");
        assert!(w.iter().any(|l| l.contains("1 cells saw steal")), "{w:?}");
    }

    #[test]
    fn workload_names() {
        let o = LoadOpts::default();
        assert_eq!(workload(&o), "echo 64B c64 d1");
        assert_eq!(
            workload(&LoadOpts { scenario: Scenario::Http, conns: 256, depth: 16, ..o.clone() }),
            "http c256 d16"
        );
        assert_eq!(workload(&LoadOpts { rate: Some(90000.0), ..o.clone() }), "echo 64B c64 open 90,000/s");
        assert_eq!(workload(&LoadOpts { scenario: Scenario::Https, conns: 256, ..o.clone() }), "https c256 d1");
        assert_eq!(
            workload(&LoadOpts { scenario: Scenario::Handshake, conns: 32, ..o.clone() }),
            "https full handshake c32"
        );
        assert_eq!(workload(&LoadOpts { scenario: Scenario::Wss, conns: 100, size: 20, ..o }), "wss 20B c100 d1");
    }
}
