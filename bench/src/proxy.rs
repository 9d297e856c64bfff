//! The proxy scenarios (P8: 64-byte messages, P16: large ones streamed through): load
//! generator → proxy under test → echo server.
//!
//! Every measurement starts a fresh upstream echo (ringman's own, `serve-ringman tcp://`,
//! [`UPSTREAM`]) and, in front of it, the proxy under test: ringman's
//! (`serve-ringman proxy://ip:port tcp://upstream`, `examples/proxy.rs` on one ring thread)
//! or the tokio peer's (`--mode proxy --upstream ip:port`, `copy_bidirectional` per
//! connection on a current_thread runtime). Both processes are pinned to the server CPU (on
//! a 2-vCPU machine the generator has the other one), so the proxy and its upstream share a
//! core, as a sidecar proxy and its service often do. The server CPU columns are the whole
//! path, the proxy's process and the echo's together (what a proxy costs is what the path
//! costs: a proxy that made its upstream work harder would look cheap alone); the echo's share
//! is also sampled on its own ([`Figures::upstream_cpu_us_per_msg`]), so the proxy's own
//! share is the difference. The baseline row [`DIRECT`] loads the same echo
//! without a proxy in the same rounds, so the latency the proxy adds is the difference of
//! two rows measured side by side.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cli::{Env, LoadOpts, Scenario, ServerKind};
use crate::error::BenchError;
use crate::report::{thousands, Figures, Record};
use crate::server::ServerProc;
use crate::summary::Stat;

/// The upstream echo server behind every proxy (and the baseline): ringman's raw echo, which
/// needs no peer build.
pub const UPSTREAM: ServerKind = ServerKind::Ringman;
/// Server name of the baseline rows: the generator loads the upstream echo directly.
pub const DIRECT: &str = "direct";
/// The proxies of P8 and P16.
pub const PROXY_SERVERS: &[ServerKind] = &[ServerKind::Ringman, ServerKind::Tokio];
/// Suite id of the 64-byte proxy cell.
pub const ID: &str = "P8";
/// Suite id of the large-message proxy cell (streaming through).
pub const LARGE_ID: &str = "P16";
/// The suite's proxy cells.
pub const IDS: [&str; 2] = [ID, LARGE_ID];

/// P8's workload: 64-byte echo through the proxy, 64 connections, depth 1.
pub fn suite_opts(warmup: Duration, duration: Duration) -> LoadOpts {
    LoadOpts {
        scenario: Scenario::Proxy,
        conns: 64,
        size: 64,
        depth: 1,
        duration,
        warmup,
        rate: None,
        wire: Default::default(),
    }
}

/// P16's workload: 64 KiB messages through the proxy, 16 connections, 2 in flight on each
/// (the bulk echo's middle cell, P13, through a proxy).
pub fn large_opts(warmup: Duration, duration: Duration) -> LoadOpts {
    LoadOpts { conns: 16, size: 64 * 1024, depth: 2, ..suite_opts(warmup, duration) }
}

/// Report name of a P8 subject (`None` = the baseline).
pub fn subject_name(proxy: Option<ServerKind>) -> &'static str {
    proxy.map_or(DIRECT, ServerKind::name)
}

/// One measurement: a fresh upstream echo on the server CPU, `proxy` in front of it on the
/// same CPU (None: the generator loads the echo directly), `opts` through it.
pub fn measure(proxy: Option<ServerKind>, opts: &LoadOpts, env: &Env, progress: bool) -> Result<Figures, BenchError> {
    let mut up = ServerProc::start(UPSTREAM, Scenario::Echo, env.server_cpu, &env.peers_dir)?;
    let Some(kind) = proxy else {
        return match crate::suite::measure_behind(up.addr, Some(up.pid()), None, opts, env, progress) {
            Ok(f) => Ok(f),
            Err(e) => {
                up.check_alive()?;
                Err(e)
            }
        };
    };
    let mut px = ServerProc::start_proxy(kind, up.addr, env.server_cpu, &env.peers_dir)?;
    match crate::suite::measure_behind(px.addr, Some(px.pid()), Some(up.pid()), opts, env, progress) {
        Ok(f) => Ok(f),
        Err(e) => {
            px.check_alive()?;
            up.check_alive()?;
            Err(e)
        }
    }
}

/// `median [min..max]` with `prec` decimals.
fn range(s: &Stat, prec: usize) -> String {
    format!("{:.prec$} [{:.prec$}..{:.prec$}]", s.median, s.min, s.max)
}

/// What P8 reduces to per subject.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyCell {
    /// Proxy name, or [`DIRECT`].
    pub server: String,
    /// msgs/s.
    pub rate: Stat,
    /// p99 µs.
    pub p99: Stat,
    /// Proxy p99 − baseline p99 of the same round, µs (None for the baseline, or without
    /// baseline rounds).
    pub added_p99: Option<Stat>,
    /// CPU µs per message of the whole path: the proxy and the echo behind it (for the
    /// baseline the echo alone, which is its whole path).
    pub srv_us: Option<Stat>,
    /// CPU µs per message of the proxy's process alone (whole path − echo, per round).
    pub proxy_us: Option<Stat>,
    /// CPU µs per message of the upstream echo behind the proxy.
    pub upstream_us: Option<Stat>,
}

/// Reduces the records of the proxy cell `id` (P8 or P16): one [`ProxyCell`] per subject
/// (baseline first, then the proxies in [`PROXY_SERVERS`] order). The added p99 pairs each
/// proxy round with the baseline round of the same round number, which ran minutes apart at
/// most.
pub fn cells(records: &[Record], id: &str) -> Vec<ProxyCell> {
    let p8: Vec<&Record> = records.iter().filter(|r| r.id == id).collect();
    let direct_p99 = |round: usize| {
        p8.iter().find(|r| r.server == DIRECT && r.round == round).and_then(|r| r.figures()).map(|f| f.latency.p99)
    };
    let names = std::iter::once(DIRECT).chain(PROXY_SERVERS.iter().map(|k| k.name()));
    names
        .filter_map(|name| {
            let figs: Vec<(usize, &Figures)> =
                p8.iter().filter(|r| r.server == name).filter_map(|r| r.figures().map(|f| (r.round, f))).collect();
            let rate = Stat::of(figs.iter().map(|(_, f)| f.rate))?;
            let added = (name != DIRECT)
                .then(|| Stat::of(figs.iter().filter_map(|(round, f)| Some(f.latency.p99 - direct_p99(*round)?))))
                .flatten();
            Some(ProxyCell {
                server: name.to_string(),
                rate,
                p99: Stat::of(figs.iter().map(|(_, f)| f.latency.p99))?,
                added_p99: added,
                srv_us: Stat::of(figs.iter().filter_map(|(_, f)| f.server_cpu_us_per_msg)),
                proxy_us: Stat::of(
                    figs.iter().filter_map(|(_, f)| Some(f.server_cpu_us_per_msg? - f.upstream_cpu_us_per_msg?)),
                ),
                upstream_us: Stat::of(figs.iter().filter_map(|(_, f)| f.upstream_cpu_us_per_msg)),
            })
        })
        .collect()
}

/// The lines below the `compare` table for P8 and P16 (empty when neither ran).
pub fn section(records: &[Record]) -> String {
    IDS.iter().map(|id| section_of(records, id)).collect()
}

/// The lines for the proxy cell `id` (empty when it did not run).
pub fn section_of(records: &[Record], id: &str) -> String {
    let cells = cells(records, id);
    let mut s = String::new();
    if cells.iter().all(|c| c.server == DIRECT) {
        return s;
    }
    let workload = records.iter().find(|r| r.id == id).map_or("", |r| r.workload.as_str());
    let _ = writeln!(
        s,
        "{id} proxy ({workload}): generator -> proxy -> ringman echo (proxy and echo both on the server CPU); \
         median [min..max] of the rounds; path CPU = proxy + echo processes (the server CPU of the table), \
         proxy = path - echo; added p99 = proxy p99 - {DIRECT} p99 of the same round"
    );
    let _ = writeln!(
        s,
        "{:<8} {:>28} {:>28} {:>28} {:>24} {:>24} {:>24}",
        "server", "msgs/s", "p99 µs", "added p99 µs", "path CPU µs/msg", "proxy CPU µs/msg", "echo CPU µs/msg"
    );
    let na = |x: &Option<Stat>, prec| x.as_ref().map_or_else(|| "n/a".into(), |x| range(x, prec));
    for c in &cells {
        let direct = c.server == DIRECT;
        let rate = format!("{} [{}..{}]", thousands(c.rate.median), thousands(c.rate.min), thousands(c.rate.max));
        // The baseline's path is the echo itself.
        let (proxy_cpu, echo_cpu) =
            if direct { ("-".to_string(), na(&c.srv_us, 2)) } else { (na(&c.proxy_us, 2), na(&c.upstream_us, 2)) };
        let added = c.added_p99.as_ref().map_or_else(|| "-".into(), |x| range(x, 1));
        let _ = writeln!(
            s,
            "{:<8} {:>28} {:>28} {:>28} {:>24} {:>24} {:>24}",
            c.server,
            rate,
            range(&c.p99, 1),
            added,
            na(&c.srv_us, 2),
            proxy_cpu,
            echo_cpu
        );
    }
    let find = |k: ServerKind| cells.iter().find(|c| c.server == k.name());
    if let (Some(r), Some(t)) = (find(ServerKind::Ringman), find(ServerKind::Tokio)) {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => format!("{:.2}x", a / b),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            s,
            "ringman/tokio (medians): path CPU µs/msg {}, proxy CPU µs/msg {}, added p99 {}, msgs/s {}",
            ratio(r.srv_us.map(|x| x.median), t.srv_us.map(|x| x.median)),
            ratio(r.proxy_us.map(|x| x.median), t.proxy_us.map(|x| x.median)),
            ratio(r.added_p99.map(|x| x.median), t.added_p99.map(|x| x.median)),
            ratio(Some(r.rate.median), Some(t.rate.median))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Outcome;

    fn rec(server: &str, round: usize, p99: f64, srv: f64, up: Option<f64>) -> Record {
        let mut f = crate::testutil::figures(100_000.0, srv, 0.0, 0.0);
        f.latency.p99 = p99;
        f.upstream_cpu_us_per_msg = up;
        Record { id: ID.into(), workload: "w".into(), server: server.into(), round, outcome: Outcome::Done(f) }
    }

    #[test]
    fn added_p99_pairs_rounds() {
        let rs = vec![
            rec(DIRECT, 0, 100.0, 3.0, None),
            rec("ringman", 0, 130.0, 4.0, Some(3.0)),
            rec("tokio", 0, 180.0, 8.0, Some(3.0)),
            rec(DIRECT, 1, 200.0, 3.0, None),
            rec("ringman", 1, 210.0, 5.0, Some(3.0)),
            rec("tokio", 1, 260.0, 9.0, Some(3.0)),
            // A round without a baseline adds no difference.
            rec("tokio", 2, 900.0, 10.0, Some(3.0)),
        ];
        let c = cells(&rs, ID);
        assert_eq!(c.iter().map(|c| c.server.as_str()).collect::<Vec<_>>(), [DIRECT, "ringman", "tokio"]);
        assert!(cells(&rs, LARGE_ID).is_empty());
        assert_eq!(c[0].added_p99, None);
        assert_eq!(c[1].added_p99, Some(Stat { median: 20.0, min: 10.0, max: 30.0 }));
        assert_eq!(c[2].added_p99, Some(Stat { median: 70.0, min: 60.0, max: 80.0 }));
        // The server CPU is the whole path; the proxy's share is what the echo leaves of it.
        assert_eq!(c[2].srv_us.unwrap().median, 9.0);
        assert_eq!(c[1].upstream_us.unwrap().median, 3.0);
        assert_eq!(c[1].proxy_us.unwrap(), Stat { median: 1.5, min: 1.0, max: 2.0 });
        assert_eq!(c[0].proxy_us, None);
        let s = section(&rs);
        assert!(
            s.contains("ringman/tokio (medians): path CPU µs/msg 0.50x, proxy CPU µs/msg 0.25x, added p99 0.29x"),
            "{s}"
        );
        assert!(s.starts_with("P8 proxy (w):"), "{s}");
        assert!(section(&[rec(DIRECT, 0, 1.0, 1.0, None)]).is_empty());
    }

    /// Every message through the proxy comes back: closed loop (several in flight per
    /// connection, two generator threads) and open loop, no connection lost.
    fn load_through(proxy: std::net::SocketAddr, who: &str) {
        use crate::uring_gen::{run, Tuning};
        let o = crate::testutil::short_load(Scenario::Proxy, 16, 4, None);
        let r = run(proxy, &o, &Tuning { threads: 2, ..Tuning::default() }, |_| {}).unwrap();
        let open =
            LoadOpts { warmup: Duration::ZERO, ..crate::testutil::short_load(Scenario::Proxy, 8, 1, Some(2000.0)) };
        let r2 = run(proxy, &open, &Tuning::default(), |_| {}).unwrap();
        for r in [r, r2] {
            assert!(r.drained && r.received > 0, "{who}: {r:?}");
            assert_eq!((r.sent, r.lost_conns), (r.received, 0), "{who}: {r:?}");
        }
    }

    #[test]
    fn both_proxies_answer_every_message() {
        use crate::testutil::on_thread;
        let up = on_thread(|a| crate::ringman_server::serve(&format!("tcp://{a}")));
        let px =
            on_thread(move |a| crate::ringman_server::serve_proxy(&format!("proxy://{a}"), &format!("tcp://{up}")));
        load_through(px, "ringman proxy");
        // The tokio peer's proxy: the peers workspace must have been built (no build here),
        // unless the host says explicitly that it was not.
        let peers = Env::default().peers_dir;
        if std::env::var_os("RINGMAN_NO_BENCH_PEERS").is_some_and(|v| v == "1") {
            eprintln!("RINGMAN_NO_BENCH_PEERS=1: the tokio proxy half is not tested");
            return;
        }
        let tokio = crate::server::peer_bin(&peers, "tokio-peer");
        assert!(
            tokio.exists(),
            "{} missing: build the peers (cargo build --release --manifest-path bench/peers/Cargo.toml; \
             scripts/test does), or set RINGMAN_NO_BENCH_PEERS=1 to skip the tokio proxy half",
            tokio.display()
        );
        match ServerProc::start_proxy(ServerKind::Tokio, up, 0, &peers) {
            Ok(t) => load_through(t.addr, "tokio proxy"),
            Err(e) => panic!("tokio proxy (rebuild bench/peers if it predates --mode proxy): {e}"),
        }
    }

    #[test]
    fn suite_workload() {
        let o = suite_opts(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(crate::suite::workload(&o), "proxy echo 64B c64 d1");
        let l = large_opts(Duration::ZERO, Duration::from_secs(1));
        assert_eq!(crate::suite::workload(&l), "proxy echo 65536B c16 d2");
        assert!(PROXY_SERVERS.iter().all(|k| k.supports(Scenario::Proxy)));
        assert!(!ServerKind::Floor.supports(Scenario::Proxy));
        assert_eq!((subject_name(None), subject_name(Some(ServerKind::Tokio))), (DIRECT, "tokio"));
    }
}
