//! Repeated measurements: one cell per (workload, server), its samples reduced to a median
//! and a spread (min–max), flags for disturbed cells, and the `compare` table.

use std::fmt::Write as _;

use crate::cli::ServerKind;
use crate::report::{thousands, Outcome, Record};

/// Steal above this share of all CPU time during a cell (or the run) flags it.
pub const STEAL_FLAG: f64 = 0.02;
/// CPU time not explained by the server and the load generator above this many cores
/// (median over the cell's rounds) flags it.
pub const OTHER_FLAG: f64 = 0.20;
/// A load generator above this share of its core makes the throughput a client figure.
pub const CLIENT_BOUND: f64 = 0.90;

/// Median, minimum and maximum of a cell's samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl Stat {
    /// The statistic of `values` (None when empty; NaNs are ignored).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Stat { median, min: v[0], max: v[n - 1] })
    }

    /// The spread as percentages of the median: `-3/+2%` (min and max relative to it).
    pub fn spread(&self) -> String {
        if self.median == 0.0 {
            return "n/a".into();
        }
        let lo = (self.min / self.median - 1.0) * 100.0;
        let hi = (self.max / self.median - 1.0) * 100.0;
        format!("-{:.0}/+{:.0}%", (-lo).max(0.0), hi.max(0.0))
    }

    /// `(max - min) / median`.
    pub fn relative_range(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median
        }
    }
}

/// What a cell measured.
#[derive(Debug, Clone, PartialEq)]
pub enum CellValue {
    /// Throughput/latency cells.
    Load {
        /// msgs/s.
        rate: Stat,
        /// p50 µs.
        p50: Stat,
        /// p99 µs.
        p99: Stat,
        /// Server CPU µs per message (None: unknown).
        srv_us: Option<Stat>,
        /// Median server utilisation.
        srv_util: Option<f64>,
        /// Median load-generator utilisation.
        cli_util: f64,
        /// Median unexplained CPU in cores.
        other: Option<f64>,
        /// Largest unexplained CPU of a round, in cores.
        other_max: Option<f64>,
        /// Largest steal share of a round.
        steal: f64,
        /// Bytes of a request and of a response (median over the rounds that counted them)
        /// and the first response's header names (`http`).
        wire: Option<crate::loadgen::WireBytes>,
    },
    /// Idle-memory cells (P5).
    Idle {
        /// Server RSS bytes per idle connection.
        per_conn: Stat,
        /// Kernel slab bytes per connection (machine-wide, both socket ends).
        slab_per_conn: Option<Stat>,
    },
    /// No round succeeded.
    Skipped(String),
}

/// One (workload, server) cell over its rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Suite id.
    pub id: String,
    /// Workload.
    pub workload: String,
    /// Server.
    pub server: String,
    /// Rounds that produced a figure.
    pub ok: usize,
    /// Rounds attempted.
    pub rounds: usize,
    /// Reduced value.
    pub value: CellValue,
    /// Errors of failed rounds (distinct).
    pub errors: Vec<String>,
}

impl Cell {
    /// Flag letters: `S` steal, `O` other CPU in the median round, `o` other CPU in some
    /// round only, `E` failed rounds, `c` client-bound.
    pub fn flags(&self) -> String {
        let mut f = String::new();
        if let CellValue::Load { steal, other, other_max, cli_util, .. } = &self.value {
            if *steal > STEAL_FLAG {
                f.push('S');
            }
            if other.is_some_and(|o| o > OTHER_FLAG) {
                f.push('O');
            } else if other_max.is_some_and(|o| o > OTHER_FLAG) {
                f.push('o');
            }
            if *cli_util >= CLIENT_BOUND {
                f.push('c');
            }
        }
        if self.ok < self.rounds && self.ok > 0 {
            f.push('E');
        }
        f
    }

    /// Median throughput (Load) or bytes per connection (Idle).
    pub fn headline(&self) -> Option<f64> {
        match &self.value {
            CellValue::Load { rate, .. } => Some(rate.median),
            CellValue::Idle { per_conn, .. } => Some(per_conn.median),
            CellValue::Skipped(_) => None,
        }
    }
}

/// Groups samples into cells: workloads in first-appearance order, servers within one in
/// report order ([`ServerKind::ALL`], others last), whatever order the rounds ran them in.
pub fn cells(records: &[Record]) -> Vec<Cell> {
    let mut keys: Vec<(String, String, String)> = Vec::new();
    for r in records {
        let k = (r.id.clone(), r.workload.clone(), r.server.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let workload_pos = |k: &(String, String, String)| keys.iter().position(|x| x.0 == k.0 && x.1 == k.1);
    let server_pos =
        |name: &str| ServerKind::ALL.iter().position(|s| s.name() == name).unwrap_or(ServerKind::ALL.len());
    let mut keys = keys.clone().into_iter().map(|k| (workload_pos(&k), server_pos(&k.2), k)).collect::<Vec<_>>();
    keys.sort_by_key(|(w, s, _)| (*w, *s));
    let keys = keys.into_iter().map(|(_, _, k)| k);
    keys.map(|(id, workload, server)| {
        let rs: Vec<&Record> =
            records.iter().filter(|r| r.id == id && r.workload == workload && r.server == server).collect();
        reduce(id, workload, server, &rs)
    })
    .collect()
}

fn reduce(id: String, workload: String, server: String, rs: &[&Record]) -> Cell {
    let mut errors: Vec<String> = Vec::new();
    for r in rs {
        if let Outcome::Skipped(why) = &r.outcome {
            if !errors.contains(why) {
                errors.push(why.clone());
            }
        }
    }
    let figs: Vec<_> = rs.iter().filter_map(|r| r.figures()).collect();
    let idle: Vec<_> = rs
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Idle { bytes_per_conn, slab_per_conn, .. } => Some((*bytes_per_conn, *slab_per_conn)),
            _ => None,
        })
        .collect();
    let ok = figs.len() + idle.len();
    let value = if let Some(rate) = Stat::of(figs.iter().map(|f| f.rate)) {
        let median_of = |v: Vec<f64>| Stat::of(v).map(|s| s.median);
        CellValue::Load {
            rate,
            p50: Stat::of(figs.iter().map(|f| f.latency.p50)).unwrap_or(rate),
            p99: Stat::of(figs.iter().map(|f| f.latency.p99)).unwrap_or(rate),
            srv_us: Stat::of(figs.iter().filter_map(|f| f.server_cpu_us_per_msg)),
            srv_util: median_of(figs.iter().filter_map(|f| f.server_util).collect()),
            cli_util: median_of(figs.iter().map(|f| f.client_util).collect()).unwrap_or(0.0),
            other: median_of(figs.iter().filter_map(|f| f.other_cores).collect()),
            other_max: Stat::of(figs.iter().filter_map(|f| f.other_cores)).map(|s| s.max),
            steal: figs.iter().map(|f| f.steal).fold(0.0, f64::max),
            wire: Stat::of(figs.iter().filter_map(|f| f.wire.as_ref().map(|w| w.response))).map(|resp| {
                crate::loadgen::WireBytes {
                    request: median_of(figs.iter().filter_map(|f| f.wire.as_ref().map(|w| w.request)).collect())
                        .unwrap_or(0.0),
                    response: resp.median,
                    headers: figs.iter().find_map(|f| f.wire.as_ref().and_then(|w| w.headers.clone())),
                }
            }),
        }
    } else if let Some(per_conn) = Stat::of(idle.iter().map(|x| x.0)) {
        CellValue::Idle { per_conn, slab_per_conn: Stat::of(idle.iter().filter_map(|x| x.1)) }
    } else {
        CellValue::Skipped(errors.first().cloned().unwrap_or_else(|| "no result".into()))
    };
    Cell { id, workload, server, ok, rounds: rs.len(), value, errors }
}

fn ratio(cells: &[Cell], c: &Cell) -> String {
    let base = cells.iter().find(|x| x.id == c.id && x.workload == c.workload && x.server == "ringman");
    match (base.and_then(Cell::headline), c.headline()) {
        (Some(b), Some(v)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "n/a".into(),
    }
}

/// Servers none of whose cells produced a figure, with the first reason.
pub fn skipped_servers(cells: &[Cell]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for c in cells {
        let all_skipped = cells.iter().filter(|x| x.server == c.server).all(|x| x.ok == 0);
        if all_skipped && !out.iter().any(|(s, _)| *s == c.server) {
            out.push((c.server.clone(), c.errors.first().cloned().unwrap_or_default()));
        }
    }
    out
}

/// The `compare` table: header lines (`head`), warnings, skipped servers, then one row per
/// measured cell.
pub fn table(cells: &[Cell], head: &[String]) -> String {
    let mut s = String::new();
    for h in head {
        let _ = writeln!(s, "{h}");
    }
    for (server, why) in skipped_servers(cells) {
        let why: String = why.chars().take(100).collect();
        let _ = writeln!(s, "skipped: {server}: {why}");
    }
    for c in cells.iter().filter(|c| c.ok > 0 && !c.errors.is_empty()) {
        let why: String = c.errors[0].chars().take(100).collect();
        let _ = writeln!(s, "failed rounds: {} {} {}: {}/{} ok; {why}", c.id, c.workload, c.server, c.ok, c.rounds);
    }
    let _ = writeln!(
        s,
        "{:<3} {:<26} {:<14} {:>12} {:>9} {:>9} {:>9} {:>10} {:>9} {:>5} {:>5} {:>6} {:>9} {:>3} {:>8} {:<5}",
        "id",
        "scenario",
        "server",
        "msgs/s",
        "spread",
        "p50 µs",
        "p99 µs",
        "srv µs/msg",
        "spread",
        "srv%",
        "cli%",
        "other",
        "resp B",
        "n",
        "vs ring",
        "flags"
    );
    for c in cells.iter().filter(|c| c.ok > 0) {
        let n = format!("{}", c.ok);
        match &c.value {
            CellValue::Load { rate, p50, p99, srv_us, srv_util, cli_util, other, wire, .. } => {
                let _ = writeln!(
                    s,
                    "{:<3} {:<26} {:<14} {:>12} {:>9} {:>9.1} {:>9.1} {:>10} {:>9} {:>5} {:>5.0} {:>6} {:>9} {:>3} {:>8} {:<5}",
                    c.id,
                    c.workload,
                    c.server,
                    thousands(rate.median),
                    rate.spread(),
                    p50.median,
                    p99.median,
                    srv_us.map_or_else(|| "n/a".into(), |x| format!("{:.3}", x.median)),
                    srv_us.map_or_else(|| "n/a".into(), |x| x.spread()),
                    srv_util.map_or_else(|| "n/a".into(), |u| format!("{:.0}", u * 100.0)),
                    cli_util * 100.0,
                    other.map_or_else(|| "n/a".into(), |o| format!("{:.2}", o)),
                    wire.as_ref().map_or_else(|| "-".into(), |w| format!("{:.0}", w.response)),
                    n,
                    ratio(cells, c),
                    c.flags()
                );
            }
            CellValue::Idle { per_conn, slab_per_conn } => {
                let _ = writeln!(
                    s,
                    "{:<3} {:<26} {:<14} {:>12} {:>9} {:>9} {:>9} {:>10} {:>9} {:>5} {:>5} {:>6} {:>9} {:>3} {:>8} {:<5}",
                    c.id,
                    c.workload,
                    c.server,
                    format!("{:.0} B/conn", per_conn.median),
                    per_conn.spread(),
                    "",
                    "",
                    slab_per_conn.map_or_else(String::new, |x| format!("slab {:.0}", x.median)),
                    "",
                    "",
                    "",
                    "",
                    "",
                    n,
                    ratio(cells, c),
                    c.flags()
                );
            }
            CellValue::Skipped(_) => {}
        }
    }
    open_loop_tails(cells, &mut s);
    s
}

/// Below the table, the p99 spread of the open-loop cells (P6): their tail over a short
/// window is set by how many millisecond-long preemptions of the server's or the generator's
/// core fall into it, so single rounds scatter by several times and only the median over the
/// rounds, with its spread, is worth comparing.
fn open_loop_tails(cells: &[Cell], s: &mut String) {
    s.push_str(&open_loop_section(cells));
}

/// The open-loop block of [`table`] on its own (empty without open-loop cells).
pub fn open_loop_section(cells: &[Cell]) -> String {
    let mut s = String::new();
    let open: Vec<&Cell> = cells.iter().filter(|c| c.ok > 0 && c.workload.contains(" open ")).collect();
    if open.is_empty() {
        return s;
    }
    let _ = writeln!(s, "open loop p99 µs, median [min..max] of the rounds:");
    for c in open {
        if let CellValue::Load { p50, p99, .. } = &c.value {
            let _ = writeln!(
                s,
                "  {:<3} {:<14} p99 {:>8.1} [{:.1}..{:.1}]   p50 {:>6.1} [{:.1}..{:.1}]",
                c.id, c.server, p99.median, p99.min, p99.max, p50.median, p50.min, p50.max
            );
        }
    }
    s
}

/// The cells as a JSON array (medians, min, max, rounds, flags).
pub fn json(cells: &[Cell]) -> String {
    use crate::report::{json_num, json_opt, json_str};
    let stat = |s: &Stat| {
        format!("{{\"median\": {}, \"min\": {}, \"max\": {}}}", json_num(s.median), json_num(s.min), json_num(s.max))
    };
    let ostat = |s: &Option<Stat>| s.as_ref().map_or_else(|| "null".to_string(), stat);
    let mut out = String::from("[\n");
    for (i, c) in cells.iter().enumerate() {
        let _ = write!(
            out,
            "    {{\"id\": {}, \"workload\": {}, \"server\": {}, \"ok\": {}, \"rounds\": {}, \"flags\": {}, ",
            json_str(&c.id),
            json_str(&c.workload),
            json_str(&c.server),
            c.ok,
            c.rounds,
            json_str(&c.flags())
        );
        match &c.value {
            CellValue::Load { rate, p50, p99, srv_us, srv_util, cli_util, other, steal, wire, .. } => {
                let _ = write!(
                    out,
                    "\"msgs_per_s\": {}, \"p50_us\": {}, \"p99_us\": {}, \"server_cpu_us_per_msg\": {}, \
                     \"server_util\": {}, \"client_util\": {}, \"other_cores\": {}, \"max_steal\": {}, \
                     \"request_bytes\": {}, \"response_bytes\": {}}}",
                    stat(rate),
                    stat(p50),
                    stat(p99),
                    ostat(srv_us),
                    json_opt(*srv_util),
                    json_num(*cli_util),
                    json_opt(*other),
                    json_num(*steal),
                    json_opt(wire.as_ref().map(|w| w.request)),
                    json_opt(wire.as_ref().map(|w| w.response))
                );
            }
            CellValue::Idle { per_conn, slab_per_conn } => {
                let _ = write!(
                    out,
                    "\"bytes_per_conn\": {}, \"slab_per_conn\": {}}}",
                    stat(per_conn),
                    ostat(slab_per_conn)
                );
            }
            CellValue::Skipped(why) => {
                let _ = write!(out, "\"skipped\": {}}}", json_str(why));
            }
        }
        out.push_str(if i + 1 < cells.len() { ",\n" } else { "\n" });
    }
    out.push_str("  ]");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::figures as fig;

    fn rec(server: &str, round: usize, outcome: Outcome) -> Record {
        Record { id: "P1".into(), workload: "echo 64B c64 d1".into(), server: server.into(), round, outcome }
    }

    #[test]
    fn median_and_spread() {
        let s = Stat::of([5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert_eq!(Stat::of([4.0, 1.0, 3.0, 2.0]).unwrap().median, 2.5);
        assert_eq!(Stat::of([]), None);
        assert_eq!(Stat::of([f64::NAN, 2.0]).unwrap().median, 2.0);
        let s = Stat::of([97.0, 100.0, 102.0]).unwrap();
        assert_eq!(s.spread(), "-3/+2%");
        assert!((s.relative_range() - 0.05).abs() < 1e-12);
        assert_eq!(Stat::of([0.0]).unwrap().spread(), "n/a");
    }

    #[test]
    fn cells_keep_order_and_reduce() {
        let rs = vec![
            rec("tokio", 0, Outcome::Done(fig(90.0, 5.0, 0.0, 0.1))),
            rec("ringman", 0, Outcome::Done(fig(100.0, 4.0, 0.0, 0.1))),
            rec("ringman", 1, Outcome::Done(fig(110.0, 4.2, 0.05, 0.3))),
            rec("tokio", 1, Outcome::Skipped("crashed".into())),
            rec("ringman", 2, Outcome::Done(fig(120.0, 4.4, 0.0, 0.3))),
            rec("tokio", 2, Outcome::Done(fig(80.0, 5.5, 0.0, 0.1))),
        ];
        let cs = cells(&rs);
        assert_eq!(cs.iter().map(|c| c.server.as_str()).collect::<Vec<_>>(), ["ringman", "tokio"], "report order");
        let ringman = &cs[0];
        assert_eq!((ringman.ok, ringman.rounds), (3, 3));
        let CellValue::Load { rate, srv_us, steal, other, .. } = &ringman.value else { panic!() };
        assert_eq!((rate.median, rate.min, rate.max), (110.0, 100.0, 120.0));
        assert_eq!(srv_us.unwrap().median, 4.2);
        assert_eq!((*steal, *other), (0.05, Some(0.3)));
        assert_eq!(ringman.flags(), "SOc");
        // One disturbed round of three: the median is clean, the cell gets a lowercase flag.
        let one_bad = cells(&[
            rec("ringman", 0, Outcome::Done(fig(100.0, 4.0, 0.0, 0.9))),
            rec("ringman", 1, Outcome::Done(fig(100.0, 4.0, 0.0, 0.0))),
            rec("ringman", 2, Outcome::Done(fig(100.0, 4.0, 0.0, 0.01))),
        ]);
        assert_eq!(one_bad[0].flags(), "oc");
        let tokio = &cs[1];
        assert_eq!((tokio.ok, tokio.rounds), (2, 3));
        assert_eq!(tokio.errors, ["crashed"]);
        assert_eq!(tokio.flags(), "cE");
        let t = table(&cs, &["seed 1".into()]);
        assert!(t.starts_with("seed 1\n"), "{t}");
        assert!(t.contains("failed rounds: P1 echo 64B c64 d1 tokio: 2/3 ok; crashed"), "{t}");
        // tokio median 85 vs ringman 110.
        assert!(t.contains("0.77x") && t.contains("1.00x"), "{t}");
    }

    #[test]
    fn open_loop_cells_get_their_p99_spread_below_the_table() {
        let open = |round, p99: f64| {
            let mut f = fig(1000.0, 5.0, 0.0, 0.0);
            f.latency.p99 = p99;
            Record {
                id: "P6".into(),
                workload: "echo 64B c64 open 1,000/s".into(),
                server: "ringman".into(),
                round,
                outcome: Outcome::Done(f),
            }
        };
        let cs = cells(&[open(0, 900.0), open(1, 300.0), open(2, 1500.0)]);
        let t = table(&cs, &[]);
        assert!(t.contains("open loop p99 µs, median [min..max] of the rounds:"), "{t}");
        assert!(t.contains("  P6  ringman        p99    900.0 [300.0..1500.0]"), "{t}");
        // Closed-loop cells only: no such block.
        let t = table(&cells(&[rec("ringman", 0, Outcome::Done(fig(100.0, 4.0, 0.0, 0.0)))]), &[]);
        assert!(!t.contains("open loop"), "{t}");
    }

    #[test]
    fn skipped_servers_are_listed_first() {
        let rs = vec![
            rec("ringman", 0, Outcome::Done(fig(100.0, 4.0, 0.0, 0.0))),
            rec("nginx", 0, Outcome::Skipped("nginx not found on PATH".into())),
            rec("nginx", 1, Outcome::Skipped("nginx not found on PATH".into())),
        ];
        let cs = cells(&rs);
        assert_eq!(skipped_servers(&cs), [("nginx".to_string(), "nginx not found on PATH".to_string())]);
        let t = table(&cs, &[]);
        assert!(t.starts_with("skipped: nginx: nginx not found on PATH\n"), "{t}");
        assert!(!t.lines().any(|l| l.starts_with("P1") && l.contains("nginx")), "{t}");
        assert_eq!(cs[0].flags(), "c");
    }

    #[test]
    fn idle_cells() {
        let idle = |b: f64| Outcome::Idle {
            conns_lo: 2000,
            conns: 10_000,
            bytes_per_conn: b,
            slab_per_conn: Some(2000.0),
            rss_before: 0,
            rss_lo: 0,
            rss_after: 0,
        };
        let mut rs = vec![rec("ringman", 0, idle(800.0)), rec("ringman", 1, idle(820.0))];
        rs.push(rec("tokio", 0, idle(6400.0)));
        for r in &mut rs {
            r.id = "P5".into();
        }
        let cs = cells(&rs);
        let CellValue::Idle { per_conn, slab_per_conn } = &cs[0].value else { panic!() };
        assert_eq!(per_conn.median, 810.0);
        assert_eq!(slab_per_conn.unwrap().median, 2000.0);
        let t = table(&cs, &[]);
        assert!(t.contains("810 B/conn") && t.contains("7.90x") && t.contains("slab 2000"), "{t}");
    }

    #[test]
    fn cells_json_balances() {
        let rs = vec![
            rec("ringman", 0, Outcome::Done(fig(100.0, 4.0, 0.0, 0.0))),
            rec("nginx", 0, Outcome::Skipped("no \"nginx\"".into())),
        ];
        let j = json(&cells(&rs));
        assert!(j.contains("\"msgs_per_s\": {\"median\": 100.000"), "{j}");
        assert!(j.contains("\"skipped\": \"no \\\"nginx\\\"\""), "{j}");
        assert_eq!(j.matches('{').count(), j.matches('}').count());
    }
}
