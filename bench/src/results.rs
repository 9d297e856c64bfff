//! `bench/RESULTS.md`, written by `compare` from the records of one run: the run's identity
//! (commit, date, machine, the exact command), the goal verdicts, every cell's table with
//! medians and spreads and the bytes of its responses, and the sections below the text
//! table (open-loop tails, proxies, TLS). Nothing in it is typed by hand; the hand-written
//! history of earlier measurements is `bench/HISTORY.md`.

use std::fmt::Write as _;

use crate::goals::{self, Judged, NotJudged};
use crate::report::thousands;
use crate::summary::{Cell, CellValue, Stat};

/// The marker on the first lines of a generated file.
pub const GENERATED: &str = "<!-- Written by `ringman-bench compare` from one run. Do not edit: rerun the command \
                             under \"Run\" to regenerate it. Earlier hand-assembled results: bench/HISTORY.md. -->";

/// Everything about a run the file states besides its cells.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// The command line, as typed.
    pub command: String,
    /// `git rev-parse HEAD`.
    pub head: String,
    /// Uncommitted changes to tracked files.
    pub dirty: bool,
    /// When the run ended (HTTP date, UTC).
    pub date: String,
    /// `--quick`.
    pub quick: bool,
    /// Whether only some cells or servers ran (`--cells`, `--servers`).
    pub partial: Option<String>,
    /// Rounds per cell.
    pub repeat: usize,
    /// Seed of the round orders.
    pub seed: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// `(name, value)` lines about the machine and the run (kernel, CPUs, load, steal...).
    pub machine: Vec<(String, String)>,
    /// The loud warnings of the run (steal, foreign load).
    pub warnings: Vec<String>,
}

/// One line per suite id: what the cell measures (the README's suite table, condensed).
pub fn describe(id: &str) -> &'static str {
    match id {
        "P1" => "raw echo, 64-byte messages, 64 connections, one in flight each",
        "P2" => "raw echo, 64-byte messages, 64 connections, 16 in flight each",
        "P3" => "HTTP/1.1 `GET /hello` keep-alive, 256 connections, pipelined 16 deep and not pipelined",
        "P4" => "WebSocket echo, 20-byte text frames, 100 connections",
        "P5" => "server RSS per idle connection: slope between 2,000 and 10,000 connections (peers with a per-connection receive buffer get ringman's default size)",
        "P6" => "open-loop echo at half of ringman's P1 rate: latency at a fixed load",
        "P7" => "push fan-out: one publisher, deliveries to every subscriber (srv µs per delivery)",
        "P8" => "64-byte echo through a TCP proxy to ringman's echo; server CPU = the whole path (proxy and echo)",
        "P9" => "UDP echo, 64-byte datagrams, 64 sockets",
        "P10" => "HTTPS keep-alive (TLS 1.3), 256 connections, one request in flight each",
        "P11" => "full TLS 1.3 handshakes, each with one request, 32 connections at a time",
        "P12" => "wss echo (TLS 1.3), 20-byte frames, 100 connections",
        "P13" => "bulk echo: 16 KiB and 64 KiB over 16 connections, 256 KiB over 4, two in flight each (each peer with its own receive buffer)",
        "P14" => "static files over keep-alive, 32 connections: ringman's WebServer, nginx (sendfile on), hyper on tokio",
        "P15" => "`GET /hello` falling through a WebServer (`ringman-web`) vs the same answer without one (`ringman`)",
        "P16" => "64 KiB messages streamed through the TCP proxies to ringman's echo; server CPU = the whole path",
        "P17" => "10,000 active connections, open loop at a fixed total rate (5 messages/s per connection)",
        _ => "",
    }
}

fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        thousands(v)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn range(s: &Stat) -> String {
    format!("{} [{}..{}]", num(s.median), num(s.min), num(s.max))
}

fn ratio(cells: &[Cell], c: &Cell) -> String {
    let base = cells.iter().find(|x| x.id == c.id && x.workload == c.workload && x.server == "ringman");
    match (base.and_then(Cell::headline), c.headline()) {
        (Some(b), Some(v)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "-".into(),
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The tables of one suite id.
fn id_section(id: &str, cells: &[Cell], all: &[Cell], s: &mut String) {
    let _ = writeln!(s, "### {id}: {}\n", describe(id));
    let load: Vec<&Cell> = cells.iter().filter(|c| matches!(c.value, CellValue::Load { .. })).collect();
    let idle: Vec<&Cell> = cells.iter().filter(|c| matches!(c.value, CellValue::Idle { .. })).collect();
    if !load.is_empty() {
        let _ = writeln!(
            s,
            "| workload | server | msgs/s | spread | p50 µs | p99 µs | srv µs/msg median [min..max] | srv% | cli% | \
             other | req B | resp B | n | srv vs ringman | flags |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for c in &load {
            let CellValue::Load { rate, p50, p99, srv_us, srv_util, cli_util, other, wire, .. } = &c.value else {
                continue;
            };
            // The ratio column compares server CPU per message (the suite's figure).
            let srv_ratio = {
                let base = all.iter().find(|x| x.id == c.id && x.workload == c.workload && x.server == "ringman");
                let b = base.and_then(|b| match &b.value {
                    CellValue::Load { srv_us, .. } => srv_us.map(|x| x.median),
                    _ => None,
                });
                match (b, srv_us) {
                    (Some(b), Some(v)) if b > 0.0 => format!("{:.2}x", v.median / b),
                    _ => "-".into(),
                }
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {:.0} | {} | {} | {} | {}/{} | {} | {} |",
                md_cell(&c.workload),
                c.server,
                thousands(rate.median),
                rate.spread(),
                p50.median,
                p99.median,
                srv_us.as_ref().map_or_else(|| "n/a".into(), range),
                srv_util.map_or_else(|| "n/a".into(), |u| format!("{:.0}", u * 100.0)),
                cli_util * 100.0,
                other.map_or_else(|| "n/a".into(), |o| format!("{o:.2}")),
                wire.as_ref().map_or_else(|| "-".into(), |w| format!("{:.0}", w.request)),
                wire.as_ref().map_or_else(|| "-".into(), |w| format!("{:.0}", w.response)),
                c.ok,
                c.rounds,
                srv_ratio,
                c.flags()
            );
        }
        let heads: Vec<String> =
            load.iter()
                .filter_map(|c| match &c.value {
                    CellValue::Load { wire: Some(w), .. } => w.headers.as_ref().map(|h| {
                        format!("- {} {}: {:.0} B per response; headers {h}", c.workload, c.server, w.response)
                    }),
                    _ => None,
                })
                .collect();
        if !heads.is_empty() {
            let _ = writeln!(
                s,
                "\nResponse bytes (as received, head and body) and the header names of the first response:\n"
            );
            for h in heads {
                let _ = writeln!(s, "{h}");
            }
        }
        let _ = writeln!(s);
    }
    if !idle.is_empty() {
        let _ = writeln!(
            s,
            "| workload | server | RSS B/conn median [min..max] | kernel slab B/conn | n | vs ringman | flags |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for c in &idle {
            let CellValue::Idle { per_conn, slab_per_conn } = &c.value else { continue };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {}/{} | {} | {} |",
                md_cell(&c.workload),
                c.server,
                range(per_conn),
                slab_per_conn.map_or_else(|| "n/a".into(), |x| format!("{:.0}", x.median)),
                c.ok,
                c.rounds,
                ratio(all, c),
                c.flags()
            );
        }
        let _ = writeln!(s);
    }
    for c in cells.iter().filter(|c| c.ok == 0) {
        let why: String = c.errors.first().map_or("no result", String::as_str).chars().take(160).collect();
        let _ = writeln!(s, "- not measured: {} {}: {}", md_cell(&c.workload), c.server, md_cell(&why));
    }
    for c in cells.iter().filter(|c| c.ok > 0 && !c.errors.is_empty()) {
        let why: String = c.errors[0].chars().take(160).collect();
        let _ = writeln!(
            s,
            "- failed rounds: {} {}: {}/{} ok; {}",
            md_cell(&c.workload),
            c.server,
            c.ok,
            c.rounds,
            md_cell(&why)
        );
    }
    if cells.iter().any(|c| !c.errors.is_empty()) {
        let _ = writeln!(s);
    }
}

/// The whole file.
pub fn render(
    run: &RunFacts,
    cells: &[Cell],
    judged: &[Judged],
    not_judged: &[NotJudged],
    details: &[(&str, String)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{GENERATED}\n");
    let _ = writeln!(s, "# Benchmark results\n");
    let kind = match (&run.partial, run.quick) {
        (Some(p), true) => format!("a partial `--quick` run ({p}): **not the whole suite**"),
        (Some(p), false) => format!("a partial run ({p}): **not the whole suite**"),
        (None, true) => "the whole suite in `--quick` mode (short windows, 3 rounds)".into(),
        (None, false) => "the whole suite".into(),
    };
    let _ = writeln!(
        s,
        "Every figure below comes from one `ringman-bench compare` run at the commit named here, {kind}; \
         the harness wrote this file (`src/results.rs`) and computed the goal verdicts from `bench/goals.json` \
         (`src/goals.rs`). Medians of {} rounds per cell (P6: twice as many), the servers in a fresh random \
         order every round.\n",
        run.repeat
    );
    let _ = writeln!(s, "## Run\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| command | `{}` |", md_cell(&run.command));
    let _ = writeln!(
        s,
        "| commit | `{}`{} |",
        run.head,
        if run.dirty { " **with uncommitted changes** (dirty)" } else { " (clean)" }
    );
    let _ = writeln!(s, "| date | {} |", run.date);
    let _ = writeln!(
        s,
        "| rounds | {} per cell, seed {} (replay the orders with `--seed {}`) |",
        run.repeat, run.seed, run.seed
    );
    let _ = writeln!(s, "| took | {:.0} s |", run.seconds);
    for (k, v) in &run.machine {
        let _ = writeln!(s, "| {} | {} |", md_cell(k), md_cell(v));
    }
    let _ = writeln!(s);
    for w in &run.warnings {
        let _ = writeln!(s, "**{}**\n", md_cell(w));
    }
    let skipped = crate::summary::skipped_servers(cells);
    if !skipped.is_empty() {
        let _ = writeln!(s, "Servers that produced no figure:\n");
        for (server, why) in skipped {
            let why: String = why.chars().take(160).collect();
            let _ = writeln!(s, "- {server}: {}", md_cell(&why));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Goals (issue 20)\n");
    let _ = writeln!(
        s,
        "From `bench/goals.json`. subject and baseline x factor are median [min..max] over the rounds; \
         **within spread**: the two ranges overlap, so these rounds cannot tell (the ratio of the medians \
         is only a hint); **met** / **not met**: every round on the same side.\n"
    );
    s.push_str(&goals::markdown(judged, not_judged));
    let _ = writeln!(s, "\n## Cells\n");
    let _ = writeln!(
        s,
        "Per cell: msgs/s (spread = min/max vs the median), p50 and p99 of the median round, server CPU per \
         message (**the figure to compare**: the load generator has one core and many cells are client-bound), \
         srv% and cli% (one core = 100), other = cores busy outside the server and the generator, req B and \
         resp B = bytes of a request and of a response on the wire (TLS cells: the plaintext), n = rounds with \
         a figure / rounds, srv vs ringman = the server CPU medians' ratio. Flags: S steal > {:.0} % in a round, \
         O median other > {:.2} cores (o: in some round), c client-bound (cli% >= {:.0}), E failed rounds.\n",
        crate::summary::STEAL_FLAG * 100.0,
        crate::summary::OTHER_FLAG,
        crate::summary::CLIENT_BOUND * 100.0
    );
    let mut ids: Vec<&str> = Vec::new();
    for c in cells {
        if !ids.contains(&c.id.as_str()) {
            ids.push(&c.id);
        }
    }
    ids.sort_by_key(|id| id.trim_start_matches('P').parse::<u32>().unwrap_or(u32::MAX));
    for id in ids {
        let of: Vec<Cell> = cells.iter().filter(|c| c.id == id).cloned().collect();
        id_section(id, &of, cells, &mut s);
        for (_, text) in details.iter().filter(|(d, t)| *d == id && !t.trim().is_empty()) {
            let _ = writeln!(s, "```\n{}\n```\n", text.trim_end());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcome, Record};

    fn rec(id: &str, workload: &str, server: &str, round: usize, srv: f64) -> Record {
        let mut f = crate::testutil::figures(1000.0 + round as f64, srv, 0.0, 0.0);
        f.wire = Some(crate::loadgen::WireBytes {
            request: 35.0,
            response: 113.0,
            headers: Some("Content-Type, Content-Length, Date".into()),
        });
        Record { id: id.into(), workload: workload.into(), server: server.into(), round, outcome: Outcome::Done(f) }
    }

    #[test]
    fn renders_a_whole_file() {
        let mut rs = Vec::new();
        for round in 0..3 {
            rs.push(rec("P3", "http c256 d1", "ringman", round, 4.0 + round as f64 * 0.1));
            rs.push(rec("P3", "http c256 d1", "nginx", round, 5.0));
            rs.push(rec("P13", "echo 16384B c16 d2", "ringman", round, 7.0));
        }
        rs.push(Record {
            id: "P13".into(),
            workload: "echo 16384B c16 d2".into(),
            server: "floor".into(),
            round: 0,
            outcome: Outcome::Skipped("floor-peer exited | x".into()),
        });
        let cells = crate::summary::cells(&rs);
        let g = crate::goals::Goals::parse(
            r#"{"goals": [{"name": "http", "metric": "server_cpu_us_per_msg", "compare": "<=", "factor": 0.8,
                "subject": {"cell": "P3", "server": "ringman"}, "baseline": {"server": "nginx"}}],
                "not_judged": [{"name": "x", "why": "y"}]}"#,
        )
        .unwrap();
        let judged = crate::goals::judge_all(&g, &cells);
        let run = RunFacts {
            command: "ringman-bench compare --quick --cells P3,P13".into(),
            head: "0123456789abcdef0123456789abcdef01234567".into(),
            dirty: true,
            date: "Sun, 06 Dec 2026 01:00:00 GMT".into(),
            quick: true,
            partial: Some("--cells P3,P13".into()),
            repeat: 3,
            seed: 42,
            seconds: 12.0,
            machine: vec![("kernel".into(), "6.18".into())],
            warnings: vec!["!!! WARNING: steal".into()],
        };
        let md = render(&run, &cells, &judged, &g.not_judged, &[("P3", "detail line\n".into())]);
        assert!(md.starts_with(GENERATED), "{md}");
        for needle in [
            "| command | `ringman-bench compare --quick --cells P3,P13` |",
            "| commit | `0123456789abcdef0123456789abcdef01234567` **with uncommitted changes** (dirty) |",
            "| date | Sun, 06 Dec 2026 01:00:00 GMT |",
            "| rounds | 3 per cell, seed 42",
            "| kernel | 6.18 |",
            "**!!! WARNING: steal**",
            "a partial `--quick` run (--cells P3,P13): **not the whole suite**",
            "- floor: floor-peer exited \\| x",
            "| http | P3 ringman | ringman <= 0.80 x nginx | 4.10 [4.00..4.20] µs/msg | 4.00 [4.00..4.00] | 0.82x | **within spread** |",
            "- x: y",
            "### P3: HTTP/1.1",
            "| http c256 d1 | ringman | 1,001 | -0/+0% | 1.0 | 10.0 | 4.10 [4.00..4.20] | 90 | 95 | 0.00 | 35 | 113 | 3/3 | 1.00x | c |",
            "| http c256 d1 | nginx | 1,001 | -0/+0% | 1.0 | 10.0 | 5.00 [5.00..5.00] | 90 | 95 | 0.00 | 35 | 113 | 3/3 | 1.22x | c |",
            "- http c256 d1 nginx: 113 B per response; headers Content-Type, Content-Length, Date",
            "```\ndetail line\n```",
            "### P13: bulk echo",
            "- not measured: echo 16384B c16 d2 floor: floor-peer exited \\| x",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
        }
        // Ids in numeric order: P3 before P13.
        assert!(md.find("### P3:").unwrap() < md.find("### P13:").unwrap());
        // Every table row has as many cells as its header.
        for table in md.split("\n\n").filter(|t| t.starts_with('|')) {
            let widths: Vec<usize> =
                table.lines().filter(|l| !l.starts_with("|---")).map(|l| l.matches(" | ").count()).collect();
            assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
        }
    }

    #[test]
    fn every_suite_id_is_described() {
        for id in crate::cli::SUITE_IDS {
            assert!(!describe(id).is_empty(), "{id}");
        }
        assert_eq!(describe("P99"), "");
    }
}
