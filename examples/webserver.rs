//! Static file server: `cargo run --release --example webserver -- http://127.0.0.1:PORT <root-dir>`.
//!
//! Serves files under `<root-dir>` (streamed, Range, 304, MIME types, no listing). `GET /hello`
//! — when no file named `hello` exists — answers `200 Hello World` as `text/plain`, the
//! classic plaintext benchmark, from a pre-encoded response.
//!
//! `GET /session` counts visits per session (`visits: N`): sessions in memory by default,
//! in a directory shared with other processes with `--session-dir DIR`, or in Redis with
//! `--session-redis URL`. `/session?regenerate` gives the session a new id (keeping the
//! count), `/session?destroy` ends it. Session options: `--session-lifetime SECS` (how long
//! an unused session lives, 1440), `--session-gc SECS` (sweep interval, 60),
//! `--session-cookie-lifetime SECS` (the cookie's `Max-Age`; 0, the default, sends none),
//! `--session-secure`, `--session-same-site strict|lax|none`, `--session-domain DOMAIN`.
//!
//! `--cert FILE --key FILE` serves HTTPS (PEM chain, leaf first, and its key); a plaintext
//! request on that port gets a 400 that says so.

use std::process::ExitCode;
use std::time::Duration;

use ringman::components::session::{
    FileHandler, MemoryHandler, RedisHandler, SameSite, Session, SessionConfig, SessionError, Sessions,
};
use ringman::http::{date_now, respond, Request, WebServer};
use ringman::protocols::http::Response;
use ringman::{run_all_then, Connection, SendStatus, Server, Worker};

const USAGE: &str =
    "usage: webserver http://<ip>:<port> <root-dir> [--threads N] [--cert FILE --key FILE] [--session-dir DIR | \
                     --session-redis URL] [--session-lifetime SECS] [--session-gc SECS] \
                     [--session-cookie-lifetime SECS] [--session-secure] [--session-same-site strict|lax|none] \
                     [--session-domain DOMAIN]";

fn main() -> ExitCode {
    // Engine diagnostics (a ring restarted, accept backing off) go to stderr.
    ringman::ops::logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(root)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let sessions = match session_setup(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("webserver: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut w = match Worker::<()>::new(addr) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("webserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) = opt(&args, "--threads").and_then(|n| n.parse().ok()) {
        w.count = n;
    }
    w.name = "webserver".into();
    match (opt(&args, "--cert"), opt(&args, "--key")) {
        (Some(c), Some(k)) => w.tls = Some(ringman::TlsConfig::new(c, k)),
        (None, None) => {}
        _ => {
            eprintln!("webserver: --cert and --key go together\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let files = match WebServer::new(root) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("webserver: {e}: {root}");
            return ExitCode::FAILURE;
        }
    };
    let gc = sessions.clone();
    w.on_worker_start(move |_, _| {
        if let Err(e) = gc.start_gc() {
            eprintln!("webserver: session sweep: {e}");
        }
    });
    files.install(&mut w, move |conn, req, _| match req.path() {
        "/hello" => {
            respond(conn, req, Response::new(200).header("Content-Type", "text/plain").body("Hello World"));
        }
        "/session" => session_page(&sessions, conn, req),
        _ => {
            respond(conn, req, Response::new(404).header("Content-Type", "text/plain").body("Not Found"));
        }
    });
    let result = run_all_then(Server::new().add(w), |running| {
        if let Some(a) = running.local_addr(0) {
            println!("listening on {a}");
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("webserver: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value after option `name`.
fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1))
}

/// The sessions the options ask for.
fn session_setup(args: &[String]) -> Result<Sessions, String> {
    let opt = |name: &str| opt(args, name);
    let secs = |name: &str| -> Result<Option<u64>, String> {
        opt(name).map(|v| v.parse().map_err(|_| format!("{name}: not a number of seconds: {v}"))).transpose()
    };
    let mut cfg = SessionConfig::default();
    if let Some(s) = secs("--session-lifetime")? {
        cfg.gc_max_lifetime = Duration::from_secs(s);
    }
    if let Some(s) = secs("--session-gc")? {
        cfg.gc_interval = Duration::from_secs(s.max(1));
    }
    if let Some(s) = secs("--session-cookie-lifetime")? {
        cfg.cookie_lifetime = s;
    }
    cfg.secure = args.iter().any(|a| a == "--session-secure");
    if let Some(v) = opt("--session-same-site") {
        cfg.same_site = Some(match v.to_ascii_lowercase().as_str() {
            "strict" => SameSite::Strict,
            "lax" => SameSite::Lax,
            "none" => SameSite::None,
            _ => return Err(format!("--session-same-site: {v}")),
        });
    }
    cfg.cookie_domain = opt("--session-domain").cloned();
    Ok(match (opt("--session-dir"), opt("--session-redis")) {
        (Some(_), Some(_)) => return Err("--session-dir and --session-redis exclude each other".into()),
        (Some(dir), None) => Sessions::new(cfg, FileHandler::new(dir).map_err(|e| format!("{dir}: {e}"))?),
        (None, Some(url)) => Sessions::new(cfg, RedisHandler::new(url).map_err(|e| e.to_string())?),
        (None, None) => Sessions::new(cfg, MemoryHandler::new()),
    })
}

/// `/session`: counts this session's visits. The session is loaded and saved in a task
/// (the file and Redis handlers answer later); the connection stops reading meanwhile, so
/// a pipelined request waits for this answer.
fn session_page(sessions: &Sessions, conn: &Connection, req: &Request<'_>) {
    let start = sessions.start(req);
    let (sessions, conn) = (sessions.clone(), *conn);
    let (keep_alive, head) = (req.keep_alive(), req.method() == "HEAD");
    let action = req.query().unwrap_or("").to_string();
    conn.pause_recv();
    let spawned = conn.spawn(async move {
        let resp = match count_visit(&sessions, start.await, &action).await {
            Ok(resp) => resp,
            Err(e) => {
                eprintln!("webserver: session: {e}");
                Response::new(503).header("Content-Type", "text/plain").body("session store unavailable\n")
            }
        };
        answer(&conn, keep_alive, head, resp);
    });
    if let Err(e) = spawned {
        eprintln!("webserver: session: {e}");
        conn.close(None);
    }
}

async fn count_visit(
    sessions: &Sessions,
    session: Result<Session, SessionError>,
    action: &str,
) -> Result<Response<'static>, SessionError> {
    let mut s = session?;
    if action == "destroy" {
        s.destroy();
        return sessions.save(s, text("session destroyed\n".into())).await;
    }
    let visits = s.get_str("visits").and_then(|v| v.parse().ok()).unwrap_or(0u64) + 1;
    s.set("visits", visits.to_string());
    if action == "regenerate" {
        s.regenerate()?;
    }
    sessions.save(s, text(format!("visits: {visits}\n"))).await
}

fn text(body: String) -> Response<'static> {
    Response::new(200).header("Content-Type", "text/plain").header("Cache-Control", "no-store").body(body)
}

/// `respond` for an answer made after the request is gone: `Date`, `Connection: close`
/// when the request did not keep the connection, no body for `HEAD`; then reading resumes.
fn answer(conn: &Connection, keep_alive: bool, head: bool, resp: Response<'_>) {
    let resp = resp.date(&date_now());
    let resp = if keep_alive { resp } else { resp.set_header("Connection", "close") };
    let mut out = Vec::new();
    if head {
        resp.write_head_to(&mut out);
    } else {
        resp.write_to(&mut out);
    }
    if conn.send_raw(&out) == SendStatus::Failed || !keep_alive {
        conn.close(None);
    } else {
        conn.resume_recv();
    }
}
