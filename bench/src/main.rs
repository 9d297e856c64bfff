//! `ringman-bench`: see `bench/README.md`.
use ringman_bench::cli::{self, Command, Subject};
use ringman_bench::error::{ArgError, BenchError};
use ringman_bench::{pki, redis_bench, report, suite, tls_gen, wire};

fn main() {
    let cmd = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", cli::USAGE);
            std::process::exit(2);
        }
    };
    let done = dispatch(cmd);
    // The TLS scenarios' certificates (made on first use) go with the run.
    pki::remove_shared();
    if let Err(e) = done {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn dispatch(cmd: Command) -> Result<(), BenchError> {
    match cmd {
        Command::Help => println!("{}", cli::USAGE),
        Command::Run { server, mut load, env, payload, json } => {
            refuse_debug_build()?;
            if let Some(path) = payload {
                let bytes = std::fs::read(&path)
                    .map_err(|e| ArgError::Payload { path: path.clone(), reason: e.to_string() })?;
                wire::check_payload(load.scenario, &bytes)
                    .map_err(|reason| ArgError::Payload { path, reason: reason.into() })?;
                load.size = bytes.len();
                load.wire.payload = Some(bytes);
            }
            let r = match &server {
                Subject::Spawn(kind) => suite::run(*kind, &load, &env)?,
                Subject::Target { target, pid } => suite::run_target(target, *pid, &load, &env)?,
            };
            println!("{}", report::table(std::slice::from_ref(&r)));
            if let Some(f) = r.figures() {
                println!(
                    "latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}\n\
                     sent {} received {} (late {}) bad-status {} lost-conns {}{}\n\
                     server CPU {}, client CPU {:.0}% of a core ({:.3} µs/msg)\n\
                     cores busy server/client {:.0}/{:.0}%{}",
                    f.latency.p50,
                    f.latency.p90,
                    f.latency.p99,
                    f.latency.p999,
                    f.latency.max,
                    f.latency.mean,
                    f.sent,
                    f.received,
                    f.late,
                    f.bad_status,
                    f.lost_conns,
                    f.send_lag
                        .map(|l| format!("\nsend lag µs: p50 {:.1}  p99 {:.1}  max {:.1}", l.p50, l.p99, l.max))
                        .unwrap_or_default(),
                    match (f.server_cpu_us_per_msg, f.server_util) {
                        (Some(us), Some(u)) => format!("{us:.3} µs/msg ({:.0}% of a core)", u * 100.0),
                        _ => "n/a (no --target-pid)".into(),
                    },
                    f.client_util * 100.0,
                    if f.rate > 0.0 { f.client_util * 1e6 / f.rate } else { 0.0 },
                    f.server_core_busy * 100.0,
                    f.client_core_busy * 100.0,
                    if f.client_util > 0.9 { "  (client-bound: the load generator is saturated)" } else { "" }
                );
                match (f.upstream_cpu_us_per_msg, load.scenario) {
                    (Some(up), cli::Scenario::FanoutRedis) => println!(
                        "redis-server CPU {up:.3} µs/delivery; both servers + redis-server {} µs/delivery",
                        f.server_cpu_us_per_msg.map_or_else(|| "n/a".into(), |s| format!("{:.3}", s + up))
                    ),
                    (Some(up), _) => println!(
                        "whole path (the server CPU above) = proxy {} + upstream echo {up:.3} µs/msg",
                        f.server_cpu_us_per_msg.map_or_else(|| "n/a".into(), |s| format!("{:.3}", s - up))
                    ),
                    (None, _) => {}
                }
                if f.tls.is_some() {
                    print!("{}", tls_gen::section(std::slice::from_ref(&r)));
                } else if let Some(w) = &f.wire {
                    println!(
                        "wire: request {:.0} B, response {:.0} B{}",
                        w.request,
                        w.response,
                        w.headers.as_ref().map_or_else(String::new, |h| format!(" (headers {h})"))
                    );
                }
                if f.bad_status > 0 && f.bad_status == f.received {
                    eprintln!("warning: every response had a non-2xx status");
                }
            }
            if let Some(path) = json {
                let mut meta = suite::run_meta();
                if let Subject::Target { target, pid } = &server {
                    meta.push(("target", target.url.clone()));
                    meta.push(("target_pid", pid.map_or_else(|| "n/a".into(), |p| p.to_string())));
                }
                std::fs::write(&path, report::json(std::slice::from_ref(&r), &meta))
                    .map_err(|source| BenchError::Output { path: path.clone(), source })?;
                eprintln!("wrote {}", path.display());
            }
        }
        Command::Compare { quick, only, env, repeat, seed, cells, files } => {
            refuse_debug_build()?;
            suite::compare(quick, only.as_deref(), &env, repeat, seed, cells.as_deref(), &files)?;
        }
        Command::RedisClient(o) => {
            refuse_debug_build()?;
            redis_bench::client_rates(&o)?;
        }
        Command::ServeRingman { addr, upstream, tls } => suite::serve_ringman(&addr, upstream.as_deref(), tls)?,
    }
    Ok(())
}

/// Measurements of a debug build are meaningless: refuse them.
fn refuse_debug_build() -> Result<(), BenchError> {
    if cfg!(debug_assertions) {
        return Err(BenchError::DebugBuild);
    }
    Ok(())
}
