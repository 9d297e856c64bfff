//! The ringman server process the harness benchmarks (`ringman-bench serve-ringman ADDR`).
//!
//! The harness spawns `current_exe serve-ringman <scheme>://ip:port`, pinned to the server
//! CPU, and waits until the port accepts connections. Schemes used by the suite (Workerman
//! names): `tcp` (raw echo), `text` (line echo), `frame` (4-byte length frame echo), `http`
//! (`GET /hello` answers 200 `Hello World`, `Content-Type: text/plain`, keep-alive,
//! pipelining), `websocket` (echo; text stays text, binary stays binary). The process runs
//! until it receives SIGTERM and should serve with exactly one worker thread.

/// Serves `addr` (`<scheme>://ip:port`) with ringman until the process is terminated.
pub fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let _ = addr;
    todo!("engine owner fills this in")
}
