//! Gathering per-thread figures and rendering Workerman's `status` and `connections` tables.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ringman_engine::{ConnInfo, ListenAddr, WorkerHandle};

/// One ring thread's row of the status table.
#[derive(Debug, Clone)]
pub struct ThreadRow {
    /// Worker name.
    pub worker: String,
    /// `scheme://addr` or `none`.
    pub listening: String,
    /// Thread index within the worker.
    pub thread: usize,
    /// Open connections.
    pub connections: u64,
    /// Sends refused (buffer full).
    pub send_fail: u64,
    /// Connections refused at the worker's `max_connections`.
    pub refused: u64,
    /// Live timers.
    pub timers: u64,
    /// Messages handled since start.
    pub requests: u64,
    /// Messages per second since the previous sample.
    pub qps: u64,
    /// Whether the thread failed to answer a ping within the probe timeout.
    pub busy: bool,
    /// Supervisor restarts.
    pub restarts: u64,
    /// Accepted connections since start.
    pub accepted: u64,
    /// Handler latency p50 in µs.
    pub p50_us: Option<u64>,
    /// Handler latency p99 in µs.
    pub p99_us: Option<u64>,
}

/// Resident memory of this process in bytes: the same figure `Worker::max_memory` is
/// compared with (`ringman_engine::resident_memory`); 0 when procfs cannot be read.
pub fn rss_bytes() -> u64 {
    ringman_engine::resident_memory().unwrap_or(0)
}

fn listening(w: &WorkerHandle) -> String {
    match w.listen_at() {
        None => "none".to_string(),
        Some(a @ ListenAddr::Unix(_)) => format!("{a} ({})", w.protocol()),
        // (`udp://ip:port`: the address names its transport.)
        Some(a @ ListenAddr::Udp(_)) => a.to_string(),
        Some(a) => format!("{}://{a}", w.protocol()),
    }
}

/// Runs `f` on every ring thread of every worker and collects the answers for up to
/// `timeout`, keyed by process-wide ring thread id. Threads missing from the map are busy.
pub fn ask_threads<T: Send + 'static>(
    workers: &[WorkerHandle],
    timeout: Duration,
    f: impl Fn() -> T + Send + Sync + Clone + 'static,
) -> HashMap<u16, T> {
    let (tx, rx) = crossbeam_channel::unbounded::<(u16, T)>();
    let mut expected = 0;
    for w in workers {
        let (tx, f) = (tx.clone(), f.clone());
        expected += w.on_each_thread(move || {
            if let Some(info) = ringman_engine::ring_info() {
                let _ = tx.send((info.thread, f()));
            }
        });
    }
    drop(tx);
    let end = Instant::now() + timeout;
    let mut out = HashMap::new();
    while out.len() < expected {
        match rx.recv_deadline(end) {
            Ok((t, v)) => {
                out.insert(t, v);
            }
            Err(_) => break,
        }
    }
    out
}

/// Current `requests` counter of every thread, in worker/thread order.
pub fn request_counts(workers: &[WorkerHandle]) -> Vec<u64> {
    workers.iter().flat_map(|w| w.stats().iter().map(|s| s.requests.get())).collect()
}

/// Builds the rows. `prev` is an earlier [`request_counts`] sample taken `elapsed` ago.
pub fn rows(workers: &[WorkerHandle], prev: Option<(&[u64], Duration)>, probe: Duration) -> Vec<ThreadRow> {
    let alive = ask_threads(workers, probe, || ());
    let mut out = Vec::new();
    let mut k = 0;
    for w in workers {
        for (i, s) in w.stats().iter().enumerate() {
            let requests = s.requests.get();
            let qps = match prev {
                Some((p, el)) if el.as_secs_f64() > 0.0 => {
                    (requests.saturating_sub(p.get(k).copied().unwrap_or(requests)) as f64 / el.as_secs_f64()).round()
                        as u64
                }
                _ => 0,
            };
            k += 1;
            let busy = w.ring_thread(i).is_none_or(|t| !alive.contains_key(&t));
            out.push(ThreadRow {
                worker: w.name().to_string(),
                listening: listening(w),
                thread: i,
                connections: s.connections.get(),
                send_fail: s.send_fail.get(),
                refused: s.refused.get(),
                timers: s.timers.get(),
                requests,
                qps,
                busy,
                restarts: s.restarts.get(),
                accepted: s.accepted.get(),
                p50_us: s.latency.quantile_ns(0.5).map(|n| n.div_ceil(1000)),
                p99_us: s.latency.quantile_ns(0.99).map(|n| n.div_ceil(1000)),
            });
        }
    }
    out
}

/// Process-wide facts for the status header.
#[derive(Debug, Clone)]
pub struct Header {
    /// `DAEMON` or `DEBUG` (foreground), as Workerman prints.
    pub daemon: bool,
    /// Unix time the server started.
    pub started: u64,
    /// Server pid.
    pub pid: u32,
}

fn mib(bytes: u64) -> String {
    format!("{:.2}M", bytes as f64 / (1024.0 * 1024.0))
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

const RULE_G: &str =
    "---------------------------------------------------GLOBAL STATUS---------------------------------------------------------";
const RULE_P: &str =
    "---------------------------------------------------PROCESS STATUS--------------------------------------------------------";

/// Column header of the per-thread table (tab after `pid`, as Workerman).
pub const STATUS_COLUMNS: &str = "pid\tmemory  listening                 name        thread connections send_fail refused timers  total_request qps    status  restarts p50_us   p99_us";

/// The session-ticket keys of the workers serving TLS: (worker name, figures).
pub fn ticket_keys(workers: &[WorkerHandle]) -> Vec<(String, ringman_engine::TicketKeyInfo)> {
    workers.iter().filter_map(|w| Some((w.name().to_string(), w.tls_ticket_keys()?))).collect()
}

fn hours_or_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else {
        format!("{s} s")
    }
}

/// Renders the `status` output.
pub fn render_status(h: &Header, rows: &[ThreadRow]) -> String {
    render_status_with_tickets(h, rows, &[])
}

/// Renders the `status` output with a line per TLS worker about its session-ticket keys
/// (from [`ticket_keys`]): the current key's generation and age, the rotation period, and
/// whether the keys came from a reload predecessor.
pub fn render_status_with_tickets(
    h: &Header,
    rows: &[ThreadRow],
    tickets: &[(String, ringman_engine::TicketKeyInfo)],
) -> String {
    let mut s = String::new();
    let mem = rss_bytes();
    let _ = writeln!(s, "Start worker in {} mode.", if h.daemon { "DAEMON" } else { "DEBUG" });
    let _ = writeln!(s, "{RULE_G}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(s, "ringman/{}          Linux/{}", env!("CARGO_PKG_VERSION"), release.trim());
    let ktls = match ringman_engine::ktls_probe() {
        Ok(()) => "available (unused: TLS runs in userspace)".to_string(),
        Err(e) => format!("unavailable ({e}); TLS runs in userspace"),
    };
    let _ = writeln!(s, "kernel TLS offload: {ktls}");
    for (name, t) in tickets {
        let _ = writeln!(
            s,
            "session-ticket keys: {name} generation {}, current key {} s old, rotated every {}{}{}",
            t.generation,
            t.age.as_secs(),
            hours_or_secs(t.rotation),
            if t.previous { ", previous key still decrypting" } else { "" },
            if t.adopted { ", adopted from the reload predecessor" } else { "" },
        );
    }
    let run = crate::daemon::now_secs().saturating_sub(h.started);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let _ = writeln!(
        s,
        "start time:{}   run {} days {} hours   load average: {}",
        crate::daemon::fmt_time(h.started),
        run / 86400,
        run / 3600 % 24,
        load.join(", ")
    );
    let mut names: Vec<&str> = rows.iter().map(|r| r.worker.as_str()).collect();
    names.dedup();
    let _ = writeln!(s, "{} workers    {} threads", names.len(), rows.len());
    let _ = writeln!(s, "name        restarts");
    for n in &names {
        let r: u64 = rows.iter().filter(|r| r.worker == *n).map(|r| r.restarts).sum();
        let _ = writeln!(s, "{n:<11} {r}");
    }
    let _ = writeln!(s, "{RULE_P}");
    let _ = writeln!(s, "{STATUS_COLUMNS}");
    for r in rows {
        let _ = writeln!(
            s,
            "{}\t{:<7} {:<25} {:<11} {:<6} {:<11} {:<9} {:<7} {:<7} {:<13} {:<6} {:<7} {:<8} {:<8} {}",
            h.pid,
            mib(mem),
            r.listening,
            r.worker,
            r.thread,
            r.connections,
            r.send_fail,
            r.refused,
            r.timers,
            r.requests,
            r.qps,
            if r.busy { "[busy]" } else { "[idle]" },
            r.restarts,
            opt(r.p50_us),
            opt(r.p99_us)
        );
    }
    let _ = writeln!(s, "{RULE_P}");
    let sum = |f: fn(&ThreadRow) -> u64| rows.iter().map(f).sum::<u64>();
    let _ = write!(
        s,
        "Summary\t{:<7} {:<25} {:<11} {:<6} {:<11} {:<9} {:<7} {:<7} {:<13} {:<6} {:<7} {:<8}",
        mib(mem),
        "-",
        "-",
        rows.len(),
        sum(|r| r.connections),
        sum(|r| r.send_fail),
        sum(|r| r.refused),
        sum(|r| r.timers),
        sum(|r| r.requests),
        sum(|r| r.qps),
        "[Summary]",
        sum(|r| r.restarts)
    );
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

/// Column header of the `connections` output.
pub const CONNECTION_COLUMNS: &str =
    "PID    Worker      Thread CID                  Protocol Recv-Q   Send-Q   Bytes-R      Bytes-W      Status       Local Address          Foreign Address";

/// One connection listed by `connections`.
#[derive(Debug, Clone)]
pub struct ConnRow {
    /// Worker name.
    pub worker: String,
    /// Thread index within the worker.
    pub thread: usize,
    /// The connection.
    pub info: ConnInfo,
}

/// Asks every ring thread for its connections (1 s budget); also returns how many
/// threads did not answer (busy).
pub fn connections(workers: &[WorkerHandle], probe: Duration) -> (Vec<ConnRow>, usize) {
    let answers = ask_threads(workers, probe, ringman_engine::thread_connections);
    let mut rows = Vec::new();
    let mut busy = 0;
    for w in workers {
        for i in 0..w.count() {
            match w.ring_thread(i).and_then(|t| answers.get(&t)) {
                Some(list) => rows.extend(list.iter().map(|c| ConnRow {
                    worker: w.name().to_string(),
                    thread: i,
                    info: c.clone(),
                })),
                None => busy += 1,
            }
        }
    }
    (rows, busy)
}

/// Renders the `connections` output.
pub fn render_connections(pid: u32, rows: &[ConnRow], busy: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{CONNECTION_COLUMNS}");
    let addr = |a: Option<std::net::SocketAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
    for r in rows {
        let c = &r.info;
        let status = if c.paused { format!("{}(paused)", c.status) } else { c.status.to_string() };
        let _ = writeln!(
            s,
            "{:<6} {:<11} {:<6} {:<20} {:<8} {:<8} {:<8} {:<12} {:<12} {:<12} {:<22} {}",
            pid,
            r.worker,
            r.thread,
            c.id,
            c.protocol,
            c.recv_q,
            c.send_q,
            c.bytes_read,
            c.bytes_written,
            status,
            addr(c.local),
            addr(c.remote)
        );
    }
    if busy > 0 {
        let _ = writeln!(s, "({busy} thread(s) busy, their connections are not listed)");
    }
    s
}
