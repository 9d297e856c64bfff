//! Results: one record per measurement, the text table, compare.json and latency.svg.

use std::fmt::Write as _;

use crate::hist::Percentiles;

/// Outcome of one measurement.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a few hundred records per run; boxing would only add noise
pub enum Outcome {
    /// Measured.
    Done(Figures),
    /// Idle-connection memory (P5).
    Idle {
        /// Connections at the first RSS reading.
        conns_lo: usize,
        /// Connections at the second RSS reading.
        conns: usize,
        /// RSS slope between the two readings, bytes per connection.
        bytes_per_conn: f64,
        /// Kernel slab growth per connection between the readings, bytes (machine-wide:
        /// both socket ends).
        slab_per_conn: Option<f64>,
        /// Server RSS with no connection, bytes.
        rss_before: u64,
        /// Server RSS with `conns_lo` connections, bytes.
        rss_lo: u64,
        /// Server RSS with `conns` connections, bytes.
        rss_after: u64,
    },
    /// Not measured, with the reason.
    Skipped(String),
}

/// Figures of a throughput/latency measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Responses per second in the window.
    pub rate: f64,
    /// Latency percentiles, µs.
    pub latency: Percentiles,
    /// `(quantile, µs)` curve for the chart.
    pub curve: Vec<(f64, f64)>,
    /// Server CPU µs per message (None: the server's process is unknown).
    pub server_cpu_us_per_msg: Option<f64>,
    /// Server CPU utilisation in the window (1.0 = one core; None: process unknown).
    pub server_util: Option<f64>,
    /// Scenario `proxy`: CPU µs per message of the upstream echo server behind the proxy, its
    /// share of `server_cpu_us_per_msg` (which is the whole path: proxy and echo);
    /// `fanout-redis`: the redis-server's, not part of `server_cpu_us_per_msg`; None otherwise.
    pub upstream_cpu_us_per_msg: Option<f64>,
    /// Load generator CPU utilisation in the window (1.0 = one core).
    pub client_util: f64,
    /// Whole-core busy share of the server CPU in the window (/proc/stat; includes softirq
    /// and anything else running there). Much above `server_util` + softirq = foreign load.
    pub server_core_busy: f64,
    /// Whole-core busy share of the client CPU in the window.
    pub client_core_busy: f64,
    /// Steal over the window as a share of all the machine's CPU time (0..1).
    pub steal: f64,
    /// Busy CPU time of the whole machine in the window not explained by the server and the
    /// load generator, in cores (None when the server's process is unknown).
    pub other_cores: Option<f64>,
    /// Messages sent over the whole run.
    pub sent: u64,
    /// Responses received over the whole run.
    pub received: u64,
    /// Error statuses (http).
    pub bad_status: u64,
    /// Connections lost.
    pub lost_conns: usize,
    /// Window messages answered during the drain after the window (uring generator).
    pub late: u64,
    /// Open loop, uring generator: send lag (actual − intended send time), µs.
    pub send_lag: Option<Percentiles>,
    /// TLS scenarios: the negotiated parameters and the bytes per message on both sides of
    /// TLS (`src/tls_gen.rs`).
    pub tls: Option<crate::tls_gen::TlsWire>,
    /// Bytes of a request and of a response on the wire (TLS: the plaintext inside it); None
    /// where the generator does not count them (fan-out, UDP).
    pub wire: Option<crate::loadgen::WireBytes>,
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Suite id (`P1`...) or `run`.
    pub id: String,
    /// Human description of the workload.
    pub workload: String,
    /// Server name (or the target URL).
    pub server: String,
    /// Round of a repeated suite (0-based; 0 for `run`).
    pub round: usize,
    /// Result.
    pub outcome: Outcome,
}

impl Record {
    /// Figures, if measured.
    pub fn figures(&self) -> Option<&Figures> {
        match &self.outcome {
            Outcome::Done(f) => Some(f),
            _ => None,
        }
    }
}

/// Ratio of `value` to the ringman row of the same workload, as text.
fn ratio(records: &[Record], r: &Record, value: impl Fn(&Record) -> Option<f64>) -> String {
    let base = records.iter().find(|x| x.id == r.id && x.workload == r.workload && x.server == "ringman");
    match (base.and_then(&value), value(r)) {
        (Some(b), Some(v)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "n/a".into(),
    }
}

fn idle_value(r: &Record) -> Option<f64> {
    match r.outcome {
        Outcome::Idle { bytes_per_conn, .. } => Some(bytes_per_conn),
        _ => None,
    }
}

/// Formats a number with thousands separators.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One progress line for a finished measurement.
pub fn progress_line(r: &Record) -> String {
    match &r.outcome {
        Outcome::Done(f) => format!(
            "{:<3} {:<28} {:<14} {:>11} msg/s  p50 {:>8.1} µs  p99 {:>8.1} µs  srv {:>6} µs/msg ({:>3}%)  client {:>3.0}%  cores busy {:>3.0}/{:>3.0}%{}{}",
            r.id,
            r.workload,
            r.server,
            thousands(f.rate),
            f.latency.p50,
            f.latency.p99,
            opt(f.server_cpu_us_per_msg, 2),
            opt(f.server_util.map(|u| u * 100.0), 0),
            f.client_util * 100.0,
            f.server_core_busy * 100.0,
            f.client_core_busy * 100.0,
            if f.sent != f.received || f.lost_conns > 0 || f.bad_status > 0 {
                format!("  [sent {} recv {} lost {} bad {}]", f.sent, f.received, f.lost_conns, f.bad_status)
            } else {
                String::new()
            },
            match f.send_lag {
                Some(l) => format!("  send lag p50 {:.1} p99 {:.1} µs, late {}", l.p50, l.p99, f.late),
                None if f.late > 0 => format!("  late {}", f.late),
                None => String::new(),
            }
        ),
        Outcome::Idle { conns_lo, conns, bytes_per_conn, slab_per_conn, rss_before, rss_lo, rss_after } => format!(
            "{:<3} {:<28} {:<14} {conns_lo}->{conns} conns: {:.0} B/conn, slab {} B/conn (RSS {:.1} / {:.1} / {:.1} MiB)",
            r.id,
            r.workload,
            r.server,
            bytes_per_conn,
            opt(*slab_per_conn, 0),
            *rss_before as f64 / 1048576.0,
            *rss_lo as f64 / 1048576.0,
            *rss_after as f64 / 1048576.0
        ),
        Outcome::Skipped(why) => format!("{:<3} {:<28} {:<14} skipped: {why}", r.id, r.workload, r.server),
    }
}

/// The final table.
pub fn table(records: &[Record]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<3} {:<28} {:<14} {:>12} {:>10} {:>10} {:>12} {:>7} {:>7} {:>9}",
        "id", "scenario", "server", "msgs/s", "p50 µs", "p99 µs", "srv µs/msg", "srv%", "cli%", "vs ringman"
    );
    for r in records {
        match &r.outcome {
            Outcome::Done(f) => {
                let _ = writeln!(
                    s,
                    "{:<3} {:<28} {:<14} {:>12} {:>10.1} {:>10.1} {:>12} {:>7} {:>7.0} {:>9}",
                    r.id,
                    r.workload,
                    r.server,
                    thousands(f.rate),
                    f.latency.p50,
                    f.latency.p99,
                    opt(f.server_cpu_us_per_msg, 3),
                    opt(f.server_util.map(|u| u * 100.0), 0),
                    f.client_util * 100.0,
                    ratio(records, r, |x| x.figures().map(|f| f.rate))
                );
            }
            Outcome::Idle { bytes_per_conn, .. } => {
                let _ = writeln!(
                    s,
                    "{:<3} {:<28} {:<14} {:>12} {:>10} {:>10} {:>12} {:>7} {:>7} {:>9}",
                    r.id,
                    r.workload,
                    r.server,
                    format!("{:.0} B/conn", bytes_per_conn),
                    "",
                    "",
                    "",
                    "",
                    "",
                    ratio(records, r, idle_value)
                );
            }
            Outcome::Skipped(why) => {
                let why: String = why.chars().take(80).collect();
                let _ = writeln!(s, "{:<3} {:<28} {:<14} skipped: {why}", r.id, r.workload, r.server);
            }
        }
    }
    s
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for None / non-finite.
pub fn json_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "null".into(), json_num)
}

/// `v` with `prec` decimals, or `n/a`.
pub fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.prec$}"))
}

/// A JSON number with 3 decimals (`null` if not finite).
pub fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

/// compare.json: `{"meta": {...}, "results": [...]}`.
pub fn json(records: &[Record], meta: &[(&str, String)]) -> String {
    json_with(records, meta, None)
}

/// [`json`] plus `"cells": <cells>` (a JSON array, already rendered) before the results.
pub fn json_with(records: &[Record], meta: &[(&str, String)], cells: Option<&str>) -> String {
    let mut s = String::from("{\n  \"meta\": {");
    for (i, (k, v)) in meta.iter().enumerate() {
        let _ = write!(s, "{}{}: {}", if i > 0 { ", " } else { "" }, json_str(k), json_str(v));
    }
    s.push_str("},\n");
    if let Some(c) = cells {
        let _ = writeln!(s, "  \"cells\": {c},");
    }
    s.push_str("  \"results\": [\n");
    for (i, r) in records.iter().enumerate() {
        let _ = write!(
            s,
            "    {{\"id\": {}, \"workload\": {}, \"server\": {}, \"round\": {}, ",
            json_str(&r.id),
            json_str(&r.workload),
            json_str(&r.server),
            r.round
        );
        match &r.outcome {
            Outcome::Done(f) => {
                let curve: Vec<String> =
                    f.curve.iter().map(|(q, v)| format!("[{}, {}]", json_num(*q), json_num(*v))).collect();
                let _ = write!(
                    s,
                    "\"status\": \"ok\", \"msgs_per_s\": {}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \
                     \"p999_us\": {}, \"max_us\": {}, \"mean_us\": {}, \"server_cpu_us_per_msg\": {}, \
                     \"server_util\": {}, \"upstream_cpu_us_per_msg\": {}, \"client_util\": {}, \
                     \"server_core_busy\": {}, \"client_core_busy\": {}, \
                     \"steal\": {}, \"other_cores\": {}, \"sent\": {}, \"received\": {}, \"bad_status\": {}, \
                     \"lost_conns\": {}, \"late\": {}, \"send_lag_p50_us\": {}, \"send_lag_p99_us\": {}, \"tls\": {}, \
                     \"request_bytes\": {}, \"response_bytes\": {}, \"response_headers\": {}, \"curve\": [{}]}}",
                    json_num(f.rate),
                    json_num(f.latency.p50),
                    json_num(f.latency.p90),
                    json_num(f.latency.p99),
                    json_num(f.latency.p999),
                    json_num(f.latency.max),
                    json_num(f.latency.mean),
                    json_opt(f.server_cpu_us_per_msg),
                    json_opt(f.server_util),
                    json_opt(f.upstream_cpu_us_per_msg),
                    json_num(f.client_util),
                    json_num(f.server_core_busy),
                    json_num(f.client_core_busy),
                    json_num(f.steal),
                    json_opt(f.other_cores),
                    f.sent,
                    f.received,
                    f.bad_status,
                    f.lost_conns,
                    f.late,
                    f.send_lag.map_or("null".into(), |l| json_num(l.p50)),
                    f.send_lag.map_or("null".into(), |l| json_num(l.p99)),
                    f.tls.as_ref().map_or_else(|| "null".into(), tls_json),
                    json_opt(f.wire.as_ref().map(|w| w.request)),
                    json_opt(f.wire.as_ref().map(|w| w.response)),
                    f.wire.as_ref().and_then(|w| w.headers.as_deref()).map_or_else(|| "null".into(), json_str),
                    curve.join(", ")
                );
            }
            Outcome::Idle { conns_lo, conns, bytes_per_conn, slab_per_conn, rss_before, rss_lo, rss_after } => {
                let from_zero = (*rss_after as f64 - *rss_before as f64) / (*conns).max(1) as f64;
                let _ = write!(
                    s,
                    "\"status\": \"ok\", \"idle_conns_lo\": {conns_lo}, \"idle_conns\": {conns}, \
                     \"bytes_per_conn\": {}, \"slab_per_conn\": {}, \"bytes_per_conn_from_zero_incl_fixed\": {}, \
                     \"rss_before\": {rss_before}, \"rss_lo\": {rss_lo}, \"rss_after\": {rss_after}}}",
                    json_num(*bytes_per_conn),
                    json_opt(*slab_per_conn),
                    json_num(from_zero)
                );
            }
            Outcome::Skipped(why) => {
                let _ = write!(s, "\"status\": \"skipped\", \"reason\": {}}}", json_str(why));
            }
        }
        s.push_str(if i + 1 < records.len() { ",\n" } else { "\n" });
    }
    s.push_str("  ]\n}\n");
    s
}

/// The TLS figures of a result as a JSON object.
fn tls_json(w: &crate::tls_gen::TlsWire) -> String {
    format!(
        "{{\"version\": {}, \"suite\": {}, \"group\": {}, \"alpn\": {}, \"full_handshakes\": {}, \
         \"resumed_handshakes\": {}, \"tls_in_per_msg\": {}, \"tls_out_per_msg\": {}, \"plain_in_per_msg\": {}, \
         \"headers\": {}}}",
        json_str(&w.version),
        json_str(&w.suite),
        json_str(&w.group),
        json_str(&w.alpn),
        w.full,
        w.resumed,
        json_num(w.tls_in_per_msg),
        json_num(w.tls_out_per_msg),
        json_num(w.plain_in_per_msg),
        json_str(&w.headers)
    )
}

const COLORS: [&str; 9] =
    ["#d62728", "#e377c2", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#bcbd22"];

fn color(server: &str) -> &'static str {
    let i = crate::cli::ServerKind::parse(server)
        .map_or(7, |k| crate::cli::ServerKind::ALL.iter().position(|&x| x == k).unwrap_or(7));
    COLORS[i % COLORS.len()]
}

/// Horizontal position of quantile `q`: log10(1 / (1 - q)), capped at 5 ("99.999%").
pub fn quantile_x(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-5)).log10().min(5.0)
}

/// latency.svg: one panel per workload, one percentile curve per server
/// (x: percentile on the usual 1/(1-q) log scale, y: latency µs on a log scale).
pub fn svg(records: &[Record]) -> String {
    let mut panels: Vec<(String, Vec<&Record>)> = Vec::new();
    for r in records.iter().filter(|r| r.figures().is_some_and(|f| !f.curve.is_empty())) {
        let key = format!("{} {}", r.id, r.workload);
        match panels.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => panels.push((key, vec![r])),
        }
    }
    let (pw, ph, cols) = (460.0, 300.0, 2usize);
    let rows = panels.len().div_ceil(cols).max(1);
    let (w, h) = (pw * cols as f64, ph * rows as f64 + 30.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">ringman-bench latency percentiles (µs, log scale)</text>"
    );
    for (pi, (title, rs)) in panels.iter().enumerate() {
        let (ox, oy) = ((pi % cols) as f64 * pw, 30.0 + (pi / cols) as f64 * ph);
        let (l, t, pwid, phei) = (ox + 55.0, oy + 25.0, pw - 75.0, ph - 75.0);
        let vals = rs.iter().flat_map(|r| r.figures().into_iter().flat_map(|f| f.curve.iter().map(|p| p.1)));
        let (mut lo, mut hi) = (f64::MAX, 0.0f64);
        for v in vals {
            lo = lo.min(v.max(1.0));
            hi = hi.max(v);
        }
        let (lo, hi) = ((lo.max(1.0)).log10().floor(), (hi.max(10.0)).log10().ceil().max(lo.log10().floor() + 1.0));
        let y = |v: f64| t + phei - (v.max(1.0).log10() - lo) / (hi - lo) * phei;
        let x = |q: f64| l + quantile_x(q) / 5.0 * pwid;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" font-size=\"12\">{}</text>", l, oy + 15.0, xml(title));
        let _ =
            writeln!(s, "<rect x=\"{l}\" y=\"{t}\" width=\"{pwid}\" height=\"{phei}\" fill=\"none\" stroke=\"#999\"/>");
        let mut d = lo;
        while d <= hi {
            let yy = y(10f64.powf(d));
            let _ = writeln!(
                s,
                "<line x1=\"{l}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" \
                 text-anchor=\"end\">{}</text>",
                l + pwid,
                l - 4.0,
                yy + 4.0,
                thousands(10f64.powf(d))
            );
            d += 1.0;
        }
        for (q, label) in [(0.0, "0%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%")] {
            let xx = x(q);
            let _ = writeln!(
                s,
                "<line x1=\"{xx:.1}\" y1=\"{t}\" x2=\"{xx:.1}\" y2=\"{}\" stroke=\"#eee\"/><text x=\"{xx:.1}\" \
                 y=\"{}\" text-anchor=\"middle\">{label}</text>",
                t + phei,
                t + phei + 14.0
            );
        }
        for (ri, r) in rs.iter().enumerate() {
            let Some(f) = r.figures() else { continue };
            let pts: Vec<String> = f.curve.iter().map(|&(q, v)| format!("{:.1},{:.1}", x(q), y(v))).collect();
            let c = color(&r.server);
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n\
                 <text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>",
                pts.join(" "),
                l + 6.0,
                t + 14.0 + ri as f64 * 13.0,
                xml(&r.server)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, server: &str, rate: f64) -> Record {
        Record {
            id: id.into(),
            workload: "echo 64B c64 d1".into(),
            server: server.into(),
            round: 0,
            outcome: Outcome::Done(Figures {
                rate,
                latency: Percentiles { p50: 10.0, p90: 20.0, p99: 30.0, p999: 40.0, max: 50.0, mean: 12.0 },
                curve: vec![(0.0, 5.0), (0.5, 10.0), (0.99, 30.0), (1.0, 50.0)],
                server_cpu_us_per_msg: Some(4.5),
                server_util: Some(0.9),
                upstream_cpu_us_per_msg: None,
                client_util: 1.0,
                server_core_busy: 0.95,
                client_core_busy: 1.0,
                steal: 0.0,
                other_cores: Some(0.05),
                sent: 10,
                received: 10,
                bad_status: 0,
                lost_conns: 0,
                late: 0,
                send_lag: None,
                tls: None,
                wire: None,
            }),
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.4), "1,234,567");
    }

    #[test]
    fn table_has_ratio_vs_ringman() {
        let rs = vec![rec("P1", "ringman", 100.0), rec("P1", "tokio", 50.0)];
        let t = table(&rs);
        assert!(t.contains("0.50x") && t.contains("1.00x"), "{t}");
        let only_tokio = vec![rec("P1", "tokio", 50.0)];
        assert!(table(&only_tokio).contains("n/a"));
    }

    #[test]
    fn json_is_well_formed_enough() {
        let mut rs = vec![rec("P1", "ringman", 100.0)];
        rs.push(Record {
            id: "P3".into(),
            workload: "w".into(),
            server: "nginx".into(),
            round: 0,
            outcome: Outcome::Skipped("no \"nginx\"\n".into()),
        });
        let j = json(&rs, &[("quick", "true".into())]);
        assert!(j.contains("\"msgs_per_s\": 100.000"));
        assert!(j.contains("no \\\"nginx\\\"\\n"));
        assert_eq!(j.matches('{').count(), j.matches('}').count());
        assert_eq!(j.matches('[').count(), j.matches(']').count());
    }

    #[test]
    fn svg_draws_a_curve_per_server() {
        let rs = vec![rec("P1", "ringman", 100.0), rec("P1", "tokio", 50.0)];
        let s = svg(&rs);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(!s.contains("NaN"));
    }

    #[test]
    fn quantile_axis() {
        assert_eq!(quantile_x(0.0), 0.0);
        assert!((quantile_x(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(quantile_x(1.0), 5.0);
    }
}
