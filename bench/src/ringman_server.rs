//! The ringman server process the harness benchmarks (`ringman-bench serve-ringman ADDR`).
//!
//! The harness spawns `current_exe serve-ringman <scheme>://ip:port`, pinned to the server
//! CPU, and waits until the port accepts connections. Schemes: `tcp` (raw echo), `text`
//! (line echo), `frame` (4-byte length frame echo). The process serves with exactly one ring
//! thread until SIGTERM/SIGINT.
//!
//! `RINGMAN_SEND_MODE=eager` selects [`ringman::SendMode::Eager`] instead of the default
//! batched sends, so both can be measured with the same harness.

use ringman::{run_all, SendMode, Server, Worker};

/// Serves `addr` (`<scheme>://ip:port`) with ringman until the process is terminated.
pub fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = Worker::<()>::new(addr)?;
    w.count = 1;
    w.name = "bench".into();
    match std::env::var("RINGMAN_SEND_MODE").as_deref() {
        Ok("eager") => w.send_mode = SendMode::Eager,
        Ok("batched") | Err(_) => w.send_mode = SendMode::Batched,
        Ok(other) => return Err(format!("RINGMAN_SEND_MODE must be eager or batched, not {other}").into()),
    }
    w.on_message(|conn, msg, _| {
        conn.send(msg);
    });
    run_all(Server::new().add(w))?;
    Ok(())
}
