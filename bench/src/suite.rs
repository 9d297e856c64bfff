//! One measurement (`run`) and the standard suite (`compare`).

use std::time::{Duration, Instant};

use crate::cli::{Env, LoadOpts, Scenario, ServerKind};
use crate::error::{BenchError, LoadError, ServerError};
use crate::loadgen::{self, Edge};
use crate::report::{self, Figures, Outcome, Record};
use crate::server::{self, ServerProc};
use crate::target::{self, Target, TargetError};
use crate::{idle, machine, ringman_server};

/// Short description of a workload (`echo 64B c64 d16`, `... open 90000/s`).
pub fn workload(o: &LoadOpts) -> String {
    let mut s = match o.scenario {
        Scenario::Http => format!("http c{} d{}", o.conns, o.depth),
        sc => format!("{} {}B c{} d{}", sc.name(), o.size, o.conns, o.depth),
    };
    if let Some(r) = o.rate {
        s = format!("{} c{} open {}/s", o.scenario.name(), o.conns, report::thousands(r));
        if o.scenario != Scenario::Http {
            s = format!("{} {}B c{} open {}/s", o.scenario.name(), o.size, o.conns, report::thousands(r));
        }
    }
    s
}

fn peers_needed(kind: ServerKind) -> bool {
    !matches!(kind, ServerKind::Ringman | ServerKind::Nginx)
}

/// Starts `kind`, runs the load, returns the figures. The load generator thread is pinned to
/// `env.client_cpu` first.
pub fn measure(kind: ServerKind, opts: &LoadOpts, env: &Env) -> Result<Figures, BenchError> {
    let mut srv = ServerProc::start(kind, opts.scenario, env.server_cpu, &env.peers_dir)?;
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
    server::pin_self(env.client_cpu).map_err(|source| BenchError::Affinity { cpu: env.client_cpu, source })?;
    let srv_cpu = || pid.map(server::tree_cpu);
    let (mut cpu0, mut cpu1) = (None, None);
    let (mut busy0, mut busy1) = ((Duration::ZERO, Duration::ZERO), (Duration::ZERO, Duration::ZERO));
    let busy = || (server::cpu_busy(env.server_cpu), server::cpu_busy(env.client_cpu));
    let started = Instant::now();
    let mut t0 = started;
    let mut t1 = t0;
    let mut last = (started, 0u64);
    let res = loadgen::run(addr, opts, |e| match e {
        Edge::Start => {
            busy0 = busy();
            cpu0 = srv_cpu();
            t0 = Instant::now();
        }
        Edge::End => {
            busy1 = busy();
            cpu1 = srv_cpu();
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
    })?;
    if res.received == 0 {
        return Err(LoadError::NoResponse.into());
    }
    let wall = t1.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    let server_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
        _ => None,
    };
    Ok(Figures {
        rate: res.rate(),
        latency: res.latency.summary(),
        curve: res.latency.curve(),
        server_cpu_us_per_msg: server_cpu.map(|c| if res.messages > 0 { c * 1e6 / res.messages as f64 } else { 0.0 }),
        server_util: server_cpu.map(|c| c / wall),
        client_util: res.client_util(),
        server_core_busy: busy1.0.saturating_sub(busy0.0).as_secs_f64() / wall,
        client_core_busy: busy1.1.saturating_sub(busy0.1).as_secs_f64() / wall,
        sent: res.sent,
        received: res.received,
        bad_status: res.bad_status,
        lost_conns: res.lost_conns,
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
    Ok(Record { id: "run".into(), workload: workload(opts), server: t.url.clone(), outcome: Outcome::Done(f) })
}

/// `ringman-bench run`: one measurement, printed as a table row plus details.
pub fn run(kind: ServerKind, opts: &LoadOpts, env: &Env) -> Result<Record, BenchError> {
    if peers_needed(kind) {
        server::ensure_peers(&env.peers_dir, &env.out_dir)?;
    }
    let mut srv = ServerProc::start(kind, opts.scenario, env.server_cpu, &env.peers_dir)?;
    let f = match measure_at(srv.addr, Some(srv.pid()), opts, env, true) {
        Ok(f) => f,
        Err(e) => {
            srv.check_alive()?;
            return Err(e);
        }
    };
    Ok(Record { id: "run".into(), workload: workload(opts), server: kind.name().into(), outcome: Outcome::Done(f) })
}

/// One suite entry: id, workload, servers.
struct Entry {
    id: &'static str,
    opts: LoadOpts,
    servers: &'static [ServerKind],
}

const ECHO_SERVERS: &[ServerKind] =
    &[ServerKind::Ringman, ServerKind::Tokio, ServerKind::TokioUring, ServerKind::Monoio, ServerKind::Floor];
const HTTP_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio, ServerKind::Nginx];
const WS_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio];
const OPEN_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio, ServerKind::Floor];

/// Idle connections of P5 (full and quick).
pub const IDLE_CONNS: usize = 10_000;

fn timing(quick: bool) -> (Duration, Duration) {
    if quick {
        (Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (Duration::from_secs(2), Duration::from_secs(10))
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
    vec![
        Entry { id: "P1", opts: o(Scenario::Echo, 64, 64, 1), servers: ECHO_SERVERS },
        Entry { id: "P2", opts: o(Scenario::Echo, 64, 64, 16), servers: ECHO_SERVERS },
        Entry { id: "P3", opts: o(Scenario::Http, 256, 0, 16), servers: HTTP_SERVERS },
        Entry { id: "P3", opts: o(Scenario::Http, 256, 0, 1), servers: HTTP_SERVERS },
        Entry { id: "P4", opts: o(Scenario::Ws, 100, 20, 1), servers: WS_SERVERS },
    ]
}

/// `ringman-bench compare`: the standard suite against every available server.
pub fn compare(
    quick: bool,
    only: Option<&[ServerKind]>,
    env: &Env,
    _repeat: Option<usize>,
    _seed: Option<u64>,
) -> Result<Vec<Record>, BenchError> {
    let started = Instant::now();
    let wanted = |k: ServerKind| only.is_none_or(|o| o.contains(&k));
    let peer_err = if ServerKind::ALL.iter().any(|&k| peers_needed(k) && wanted(k)) {
        server::ensure_peers(&env.peers_dir, &env.out_dir).err().map(|e| e.to_string())
    } else {
        None
    };
    let mut records = Vec::new();
    let push = |r: Record, records: &mut Vec<Record>| {
        eprintln!("[{:>5.1}s] {}", started.elapsed().as_secs_f64(), report::progress_line(&r));
        records.push(r);
    };
    let skip_reason = |k: ServerKind| -> Option<String> {
        match (&peer_err, peers_needed(k)) {
            (Some(e), true) => Some(e.clone()),
            _ => None,
        }
    };
    let one = |id: &str, k: ServerKind, opts: &LoadOpts| -> Record {
        let outcome = match skip_reason(k) {
            Some(why) => Outcome::Skipped(why),
            None => match measure(k, opts, env) {
                Ok(f) => Outcome::Done(f),
                Err(e) => Outcome::Skipped(e.to_string()),
            },
        };
        Record { id: id.into(), workload: workload(opts), server: k.name().into(), outcome }
    };
    for e in entries(quick) {
        for &k in e.servers.iter().filter(|&&k| wanted(k)) {
            let r = one(e.id, k, &e.opts);
            push(r, &mut records);
        }
    }
    // P5: idle connections.
    for &k in ECHO_SERVERS.iter().filter(|&&k| wanted(k)) {
        let workload = format!("idle {IDLE_CONNS} conns");
        let outcome = match skip_reason(k) {
            Some(why) => Outcome::Skipped(why),
            None => match idle_rss(k, env) {
                Ok(o) => o,
                Err(e) => Outcome::Skipped(e.to_string()),
            },
        };
        push(Record { id: "P5".into(), workload, server: k.name().into(), outcome }, &mut records);
    }
    // P6: open loop at 50% of ringman's P1 peak (tokio's if ringman did not run).
    let p1 = |name: &str| {
        records.iter().find(|r| r.id == "P1" && r.server == name).and_then(|r| r.figures()).map(|f| f.rate)
    };
    let base = p1("ringman").map(|r| (r, "ringman")).or_else(|| p1("tokio").map(|r| (r, "tokio")));
    match base {
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
            eprintln!("P6 open loop at {} msg/s = 50% of {from}'s P1 peak", report::thousands(rate));
            for &k in OPEN_SERVERS.iter().filter(|&&k| wanted(k)) {
                let r = one("P6", k, &opts);
                push(r, &mut records);
            }
        }
        _ => push(
            Record {
                id: "P6".into(),
                workload: "echo open loop".into(),
                server: "ringman".into(),
                outcome: Outcome::Skipped("no P1 peak (ringman or tokio) to derive the rate from".into()),
            },
            &mut records,
        ),
    }
    println!("\n{}", report::table(&records));
    write_outputs(&records, quick, env, started.elapsed())?;
    Ok(records)
}

fn idle_rss(kind: ServerKind, env: &Env) -> Result<Outcome, BenchError> {
    let srv = ServerProc::start(kind, Scenario::Echo, env.server_cpu, &env.peers_dir)?;
    let r = idle::run(srv.addr, IDLE_CONNS, || srv.rss())?;
    Ok(Outcome::Idle { conns: r.conns, bytes_per_conn: r.per_conn(), rss_before: r.rss_before, rss_after: r.rss_after })
}

/// Metadata lines of a result: commit, rustc, kernel, load average and steal so far.
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

fn write_outputs(records: &[Record], quick: bool, env: &Env, took: Duration) -> Result<(), BenchError> {
    let out = &env.out_dir;
    let io = |path: std::path::PathBuf| move |source| BenchError::Output { path, source };
    std::fs::create_dir_all(out).map_err(io(out.clone()))?;
    let meta = [
        ("quick", quick.to_string()),
        ("server_cpu", env.server_cpu.to_string()),
        ("client_cpu", env.client_cpu.to_string()),
        ("suite_seconds", format!("{:.1}", took.as_secs_f64())),
        ("kernel", std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()),
    ];
    let j = out.join("compare.json");
    std::fs::write(&j, report::json(records, &meta)).map_err(io(j.clone()))?;
    let s = out.join("latency.svg");
    std::fs::write(&s, report::svg(records)).map_err(io(s.clone()))?;
    eprintln!("wrote {} and {} ({:.0} s)", j.display(), s.display(), took.as_secs_f64());
    Ok(())
}

/// `ringman-bench serve-ringman ADDR`.
pub fn serve_ringman(addr: &str) -> Result<(), ServerError> {
    ringman_server::serve(addr)
        .map_err(|e| ServerError::Exited { status: "serve-ringman failed".into(), stderr: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_shape() {
        let e = entries(true);
        assert_eq!(e.len(), 5);
        assert!(e.iter().all(|e| e.servers.iter().all(|s| s.supports(e.opts.scenario))));
        assert!(OPEN_SERVERS.iter().chain(ECHO_SERVERS).all(|s| s.supports(Scenario::Echo)));
        let (w, d) = timing(true);
        // 20 timed runs + P5 must fit in two minutes.
        assert!((w + d).as_secs_f64() * 20.0 < 80.0);
    }

    #[test]
    fn workload_names() {
        let o = LoadOpts::default();
        assert_eq!(workload(&o), "echo 64B c64 d1");
        assert_eq!(
            workload(&LoadOpts { scenario: Scenario::Http, conns: 256, depth: 16, ..o.clone() }),
            "http c256 d16"
        );
        assert_eq!(workload(&LoadOpts { rate: Some(90000.0), ..o }), "echo 64B c64 open 90,000/s");
    }
}
