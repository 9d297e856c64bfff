//! `ringman-bench`: see `bench/README.md`.
use ringman_bench::cli::{self, Command};
use ringman_bench::error::BenchError;
use ringman_bench::{report, suite};

fn main() {
    let cmd = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", cli::USAGE);
            std::process::exit(2);
        }
    };
    if let Err(e) = dispatch(cmd) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn dispatch(cmd: Command) -> Result<(), BenchError> {
    match cmd {
        Command::Help => println!("{}", cli::USAGE),
        Command::Run { server, load, env } => {
            let r = suite::run(server, &load, &env)?;
            println!("{}", report::table(std::slice::from_ref(&r)));
            if let Some(f) = r.figures() {
                println!(
                    "latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}\n\
                     sent {} received {} (late {}) bad-status {} lost-conns {}{}\n\
                     server CPU {:.3} µs/msg ({:.0}% of a core), client CPU {:.0}% of a core ({:.3} µs/msg)\n\
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
                    f.server_cpu_us_per_msg,
                    f.server_util * 100.0,
                    f.client_util * 100.0,
                    if f.rate > 0.0 { f.client_util * 1e6 / f.rate } else { 0.0 },
                    f.server_core_busy * 100.0,
                    f.client_core_busy * 100.0,
                    if f.client_util > 0.9 { "  (client-bound: the load generator is saturated)" } else { "" }
                );
            }
        }
        Command::Compare { quick, only, env } => {
            suite::compare(quick, only.as_deref(), &env)?;
        }
        Command::ServeRingman(addr) => suite::serve_ringman(&addr)?,
    }
    Ok(())
}
