//! Prometheus text exposition (via the control socket and an optional HTTP listener).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use ringman_engine::WorkerHandle;

use crate::OpsError;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders every worker's per-thread counters in the Prometheus text format (0.0.4).
pub fn render(workers: &[WorkerHandle]) -> String {
    type Get = fn(&ringman_engine::ThreadStats) -> u64;
    let families: [(&str, &str, &str, Get); 10] = [
        ("ringman_connections", "gauge", "Open accepted connections.", |s| s.connections.get()),
        ("ringman_timers", "gauge", "Live timers.", |s| s.timers.get()),
        ("ringman_accepted_total", "counter", "Connections accepted.", |s| s.accepted.get()),
        ("ringman_refused_total", "counter", "Connections closed at once at the worker's max_connections.", |s| {
            s.refused.get()
        }),
        ("ringman_requests_total", "counter", "Messages delivered to on_message.", |s| s.requests.get()),
        (
            "ringman_send_fail_total",
            "counter",
            "Sends refused because the send buffer was full, and datagrams the kernel refused.",
            |s| s.send_fail.get(),
        ),
        ("ringman_udp_truncated_total", "counter", "Datagrams dropped for exceeding max_datagram_size.", |s| {
            s.udp_truncated.get()
        }),
        ("ringman_cq_overflows_total", "counter", "Completion queue overflows seen.", |s| s.cq_overflows.get()),
        ("ringman_restarts_total", "counter", "Ring thread restarts by the supervisor.", |s| s.restarts.get()),
        ("ringman_heartbeat_seconds", "gauge", "Unix time of the thread's last loop turn.", |s| s.heartbeat.get()),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for w in workers {
            for (i, s) in w.stats().iter().enumerate() {
                let _ = writeln!(out, "{name}{{worker=\"{}\",thread=\"{i}\"}} {}", esc(w.name()), get(s));
            }
        }
    }
    let name = "ringman_handler_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} on_message handler latency (sampled; power-of-two bucket bounds).\n# TYPE {name} summary"
    );
    for w in workers {
        for (i, s) in w.stats().iter().enumerate() {
            let labels = format!("worker=\"{}\",thread=\"{i}\"", esc(w.name()));
            for q in [0.5, 0.9, 0.99] {
                let v = s.latency.quantile_ns(q).map_or_else(|| "NaN".to_string(), |n| format!("{:e}", n as f64 / 1e9));
                let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {v}");
            }
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.latency.count());
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringman_resident_memory_bytes Resident memory of the process.\n# TYPE ringman_resident_memory_bytes gauge\nringman_resident_memory_bytes {}",
        crate::status::rss_bytes()
    );
    out
}

/// Serves `GET /metrics` on `addr` from a background thread (blocking std::net, one
/// request per connection). Returns the bound address.
pub fn serve_http(addr: SocketAddr, workers: Arc<[WorkerHandle]>) -> Result<SocketAddr, OpsError> {
    let l = TcpListener::bind(addr).map_err(|source| OpsError::Metrics { addr, source })?;
    let bound = l.local_addr().map_err(|source| OpsError::Metrics { addr, source })?;
    std::thread::Builder::new()
        .name("ringman-metrics".into())
        .spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let ok = req.starts_with(b"GET /metrics ") || req.starts_with(b"GET /metrics?");
                let (status, body) =
                    if ok { ("200 OK", render(&workers)) } else { ("404 Not Found", "not found\n".to_string()) };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
        .map_err(|source| OpsError::Metrics { addr, source })?;
    Ok(bound)
}
