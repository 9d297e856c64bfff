//! One measurement (`run`) and the standard suite (`compare`).

use std::time::{Duration, Instant};

use crate::cli::{Env, Generator, LoadOpts, Scenario, ServerKind};
use crate::error::{BenchError, ServerError};
use crate::loadgen::{self, Edge};
use crate::report::{self, Figures, Outcome, Record};
use crate::server::{self, ServerProc};
use crate::{idle, ringman_server, uring_gen};

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
    server::pin_self(env.client_cpu).map_err(|source| BenchError::Affinity { cpu: env.client_cpu, source })?;
    let mut cpu0 = Duration::ZERO;
    let mut cpu1 = Duration::ZERO;
    let (mut busy0, mut busy1) = ((Duration::ZERO, Duration::ZERO), (Duration::ZERO, Duration::ZERO));
    let busy = || (server::cpu_busy(env.server_cpu), server::cpu_busy(env.client_cpu));
    let mut t0 = Instant::now();
    let mut t1 = t0;
    let edge = |e| match e {
        Edge::Start => {
            busy0 = busy();
            cpu0 = srv.cpu();
            t0 = Instant::now();
        }
        Edge::End => {
            busy1 = busy();
            cpu1 = srv.cpu();
            t1 = Instant::now();
        }
    };
    let res = match env.generator {
        Generator::Uring => {
            let tuning = uring_gen::Tuning { threads: env.client_threads, pace: env.pace };
            uring_gen::run(srv.addr, opts, &tuning, edge)
        }
        Generator::Classic => loadgen::run(srv.addr, opts, edge),
    };
    let res = match res {
        Ok(r) => r,
        Err(e) => {
            srv.check_alive()?;
            return Err(e.into());
        }
    };
    let server_cpu = cpu1.saturating_sub(cpu0);
    let wall = t1.saturating_duration_since(t0).as_secs_f64().max(1e-9);
    Ok(Figures {
        rate: res.rate(),
        latency: res.latency.summary(),
        curve: res.latency.curve(),
        server_cpu_us_per_msg: if res.messages > 0 {
            server_cpu.as_secs_f64() * 1e6 / res.messages as f64
        } else {
            0.0
        },
        server_util: server_cpu.as_secs_f64() / wall,
        client_util: res.client_util(),
        server_core_busy: busy1.0.saturating_sub(busy0.0).as_secs_f64() / wall,
        client_core_busy: busy1.1.saturating_sub(busy0.1).as_secs_f64() / wall,
        sent: res.sent,
        received: res.received,
        bad_status: res.bad_status,
        lost_conns: res.lost_conns,
        late: res.late,
        send_lag: res.send_lag.as_ref().map(|l| l.summary()),
    })
}

/// `ringman-bench run`: one measurement, printed as a table row plus details.
pub fn run(kind: ServerKind, opts: &LoadOpts, env: &Env) -> Result<Record, BenchError> {
    if peers_needed(kind) {
        server::ensure_peers(&env.peers_dir, &env.out_dir)?;
    }
    let f = measure(kind, opts, env)?;
    Ok(Record { id: "run".into(), workload: workload(opts), server: kind.name(), outcome: Outcome::Done(f) })
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
    let o = |scenario, conns, size, depth| LoadOpts { scenario, conns, size, depth, duration, warmup, rate: None };
    vec![
        Entry { id: "P1", opts: o(Scenario::Echo, 64, 64, 1), servers: ECHO_SERVERS },
        Entry { id: "P2", opts: o(Scenario::Echo, 64, 64, 16), servers: ECHO_SERVERS },
        Entry { id: "P3", opts: o(Scenario::Http, 256, 0, 16), servers: HTTP_SERVERS },
        Entry { id: "P3", opts: o(Scenario::Http, 256, 0, 1), servers: HTTP_SERVERS },
        Entry { id: "P4", opts: o(Scenario::Ws, 100, 20, 1), servers: WS_SERVERS },
    ]
}

/// `ringman-bench compare`: the standard suite against every available server.
pub fn compare(quick: bool, only: Option<&[ServerKind]>, env: &Env) -> Result<Vec<Record>, BenchError> {
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
        Record { id: id.into(), workload: workload(opts), server: k.name(), outcome }
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
        push(Record { id: "P5".into(), workload, server: k.name(), outcome }, &mut records);
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
                server: "ringman",
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
