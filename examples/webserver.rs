//! Static file server: `cargo run --release --example webserver -- http://127.0.0.1:PORT <root-dir>`.
//!
//! Serves files under `<root-dir>` (streamed, Range, 304, MIME types, no listing). `GET /hello`
//! — when no file named `hello` exists — answers `200 Hello World` as `text/plain`, the
//! classic plaintext benchmark, from a pre-encoded response.

use std::process::ExitCode;

use ringman::http::{respond, WebServer};
use ringman::protocols::http::Response;
use ringman::{run_all_then, Server, Worker};

fn main() -> ExitCode {
    // Engine diagnostics (a ring restarted, accept backing off) go to stderr.
    ringman::ops::logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(addr), Some(root)) = (args.first(), args.get(1)) else {
        eprintln!("usage: webserver http://<ip>:<port> <root-dir> [--threads N]");
        return ExitCode::from(2);
    };
    let mut w = match Worker::<()>::new(addr) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("webserver: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) =
        args.iter().position(|a| a == "--threads").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok())
    {
        w.count = n;
    }
    w.name = "webserver".into();
    let files = match WebServer::new(root) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("webserver: {root}: {e}");
            return ExitCode::FAILURE;
        }
    };
    files.install(&mut w, |conn, req, _| {
        if req.path() == "/hello" {
            respond(conn, req, Response::new(200).header("Content-Type", "text/plain").body("Hello World"));
        } else {
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
