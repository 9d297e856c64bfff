//! Argument parsing shared by the benchmark peers: `--addr IP:PORT [--mode MODE]`.
use std::io::Write;
use std::net::SocketAddr;

/// Parsed command line of a peer.
#[derive(Debug, Clone)]
pub struct Args {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Protocol mode (peers that only echo ignore it, but reject anything but `echo`).
    pub mode: String,
}

/// Parses `--addr IP:PORT [--mode MODE]`, exiting with status 2 on bad input.
pub fn parse(modes: &[&str]) -> Args {
    let mut addr = None;
    let mut mode = "echo".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => addr = it.next(),
            "--mode" => mode = it.next().unwrap_or_default(),
            _ => die(&format!("unknown argument {a:?}")),
        }
    }
    let addr: SocketAddr = match addr.as_deref().map(str::parse) {
        Some(Ok(a)) => a,
        _ => die("--addr IP:PORT is required"),
    };
    if !modes.contains(&mode.as_str()) {
        die(&format!("mode {mode:?} not supported; supported: {modes:?}"));
    }
    Args { addr, mode }
}

/// Prints the readiness line the harness waits for.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

fn die(msg: &str) -> ! {
    eprintln!("error: {msg}\nusage: PEER --addr IP:PORT [--mode MODE]");
    std::process::exit(2)
}
