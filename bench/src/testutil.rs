//! Helpers shared by the unit tests of several modules.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::cli::{LoadOpts, Scenario};
use crate::hist::Percentiles;
use crate::report::Figures;

/// A tiny threaded std::net echo server; returns its address.
pub fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut b = [0u8; 8192];
                loop {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&b[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A short load (100 ms warmup, 300 ms window, 33-byte messages).
pub fn short_load(scenario: Scenario, conns: usize, depth: usize, rate: Option<f64>) -> LoadOpts {
    LoadOpts {
        scenario,
        conns,
        size: 33,
        depth,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        rate,
        wire: Default::default(),
    }
}

/// Figures of a clean, client-bound run with the given rate, server CPU, steal and other cores.
pub fn figures(rate: f64, srv: f64, steal: f64, other: f64) -> Figures {
    Figures {
        rate,
        latency: Percentiles { p50: rate / 1000.0, p90: 0.0, p99: rate / 100.0, p999: 0.0, max: 0.0, mean: 0.0 },
        curve: vec![],
        server_cpu_us_per_msg: Some(srv),
        server_util: Some(0.9),
        upstream_cpu_us_per_msg: None,
        client_util: 0.95,
        server_core_busy: 1.0,
        client_core_busy: 1.0,
        steal,
        other_cores: Some(other),
        sent: 1,
        received: 1,
        bad_status: 0,
        lost_conns: 0,
        late: 0,
        send_lag: None,
        tls: None,
        wire: None,
    }
}

/// The peers workspace, when its release build exists; None (with a note) when the host says
/// it was not built (`RINGMAN_NO_BENCH_PEERS=1`). Panics with the fix when it is missing
/// otherwise (`scripts/test` builds it first).
pub fn built_peers(what: &str) -> Option<std::path::PathBuf> {
    if std::env::var_os("RINGMAN_NO_BENCH_PEERS").is_some_and(|v| v == "1") {
        eprintln!("RINGMAN_NO_BENCH_PEERS=1: {what} not tested");
        return None;
    }
    let peers = crate::cli::Env::default().peers_dir;
    for bin in crate::server::PEER_BINS {
        let path = crate::server::peer_bin(&peers, bin);
        assert!(
            path.exists(),
            "{} missing: build the peers (cargo build --release --manifest-path bench/peers/Cargo.toml; \
             scripts/test does), or set RINGMAN_NO_BENCH_PEERS=1 to leave out {what}",
            path.display()
        );
    }
    Some(peers)
}

/// Runs `serve(addr)` (a ringman server) on a thread at a free port reserved for this
/// process ([`crate::server::free_addr`]) and returns the address once it accepts
/// connections. A server that stops first fails the test with its own error.
pub fn on_thread<E: std::fmt::Display>(serve: impl FnOnce(SocketAddr) -> Result<(), E> + Send + 'static) -> SocketAddr {
    let addr = crate::server::free_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let end = serve(addr).map_err(|e| e.to_string());
        let _ = tx.send(end);
    });
    let deadline = std::time::Instant::now() + crate::server::START_TIMEOUT;
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(end) = rx.try_recv() {
            panic!("the server for {addr} stopped before it accepted a connection: {end:?}");
        }
        assert!(std::time::Instant::now() < deadline, "nothing listened on {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
    addr
}
