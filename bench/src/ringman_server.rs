//! The ringman server process the harness benchmarks (`ringman-bench serve-ringman ADDR`).
//!
//! The harness spawns `current_exe serve-ringman <scheme>://ip:port`, pinned to the server
//! CPU, and waits until the port accepts connections. Schemes: `tcp` (raw echo), `text`
//! (line echo), `frame` (4-byte length frame echo), `fanout` (WebSocket broadcast of every
//! `pub:` message, see `src/fanout.rs`). The process serves with exactly one ring
//! thread until SIGTERM/SIGINT.
//!
//! `RINGMAN_SEND_MODE=eager` selects [`ringman::SendMode::Eager`] instead of the default
//! batched sends, so both can be measured with the same harness.

use ringman::http::respond_static;
use ringman::protocols::http::{Response, StaticResponse};
use ringman::{run_all, SendMode, Server, Worker};

/// Serves `addr` (`<scheme>://ip:port`) with ringman until the process is terminated.
pub fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    if addr.starts_with("http://") {
        return serve_http(addr);
    }
    if let Some(rest) = addr.strip_prefix("fanout://") {
        return crate::fanout::serve_ringman(&format!("websocket://{rest}"));
    }
    let mut w = Worker::<()>::new(addr)?;
    w.count = 1;
    w.name = "bench".into();
    match std::env::var("RINGMAN_SEND_MODE").as_deref() {
        Ok("eager") => w.send_mode = SendMode::Eager,
        Ok("batched") | Err(_) => w.send_mode = SendMode::Batched,
        Ok(other) => return Err(format!("RINGMAN_SEND_MODE must be eager or batched, not {other}").into()),
    }
    w.on_message(|conn, msg, _| {
        conn.send_as(msg.data, msg.kind);
    });
    run_all(Server::new().add(w))?;
    Ok(())
}

/// `GET /hello` → `200 Hello World` (text/plain) from a pre-encoded response; 404 otherwise.
fn serve_http(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = Worker::<Option<StaticResponse>>::new(addr)?;
    w.count = 1;
    w.name = "bench-http".into();
    w.on_worker_start(|_, hello| {
        let resp =
            Response::new(200).header("Server", "ringman").header("Content-Type", "text/plain").body("Hello World");
        *hello = Some(StaticResponse::new(&resp));
    });
    w.on_request(|conn, req, hello| match hello.as_mut() {
        Some(r) if req.path() == "/hello" => respond_static(conn, req, r),
        _ => ringman::http::respond(conn, req, Response::new(404).body("Not Found")),
    });
    run_all(Server::new().add(w))?;
    Ok(())
}
