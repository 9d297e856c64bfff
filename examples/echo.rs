//! Echo server: `cargo run --release --example echo -- <scheme>://<ip>:<port> [--threads N]`.
//!
//! Every message comes back under the scheme's protocol (`tcp`, `text`, `frame`). Prints the
//! address it listens on and exits cleanly on SIGINT/SIGTERM.

use std::process::ExitCode;

use ringman::{run_all_then, Server, Worker};

fn usage() -> ExitCode {
    eprintln!("usage: echo <scheme>://<ip>:<port> [--threads N] [--batched]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else { return usage() };
    let mut threads = None;
    let mut batched = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--threads" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => threads = Some(n),
                None => return usage(),
            },
            "--batched" => batched = true,
            _ => return usage(),
        }
    }
    let mut w = match Worker::<()>::new(&addr) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("echo: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) = threads {
        w.count = n;
    }
    if batched {
        w.send_mode = ringman::SendMode::Batched;
    }
    w.name = "echo".into();
    w.on_message(|conn, msg, _| {
        conn.send(msg);
    });
    let result = run_all_then(Server::new().add(w), |running| {
        if let Some(a) = running.local_addr(0) {
            println!("listening on {a}");
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::FAILURE
        }
    }
}
