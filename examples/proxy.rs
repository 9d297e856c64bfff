//! Transparent TCP proxy:
//! `cargo run --release --example proxy -- tcp://LISTEN_IP:PORT tcp://UPSTREAM_HOST:PORT`.
//!
//! Each accepted connection opens one upstream connection and the two are piped both ways
//! (`client.pipe(up)`, `up.pipe(client)`): bytes flow with back-pressure (a side whose
//! destination's send buffer is full stops reading until it drained), and either side
//! closing closes the other once what it sent was flushed. An upstream that cannot be
//! reached closes the client.

use std::process::ExitCode;

use ringman::{run_all_then, AsyncTcpConnection, Server, Worker};

fn usage() -> ExitCode {
    eprintln!("usage: proxy tcp://LISTEN_IP:PORT tcp://UPSTREAM_HOST:PORT");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // Engine diagnostics (a ring restarted, accept backing off) go to stderr.
    ringman::ops::logger::init();
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        return usage();
    };
    if !listen.starts_with("tcp://") || !upstream.starts_with("tcp://") {
        return usage();
    }
    if let Err(e) = AsyncTcpConnection::new(&upstream) {
        eprintln!("proxy: {e}");
        return ExitCode::FAILURE;
    }
    let mut w = match Worker::<()>::new(&listen) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    w.name = "proxy".into();
    let target = upstream.clone();
    w.on_connect(move |client, _| {
        // A failed connect is logged, and the upstream's close then closes the client.
        if let Err(e) = AsyncTcpConnection::new(&target).and_then(|up| up.connect_piped(client)) {
            eprintln!("proxy: {target}: {e}");
            client.close(None);
        }
    });
    let result = run_all_then(Server::new().add(w), |running| {
        println!("proxy on {}, upstream {upstream}", running.local_addr(0).map(|a| a.to_string()).unwrap_or_default());
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
