//! Echo server:
//! `cargo run --release --example echo -- <scheme>://<ip>:<port>|unix:///path [--protocol P] [--unix-mode OCTAL] [--threads N] [--batched] [--cert FILE --key FILE]
//! [--pid-file F] [--log-file F] [--metrics ADDR] [--stdout-file F] [--user U] [--group G] [--graceful-timeout SECS] [--pinned ADDR]
//! [--watch PATH]... [--watch-binary] [--watch-ext EXT]... [--watch-debounce MS] [start [-d] | stop [-g] | restart [-d] [-g] |
//! reload [-g] | status [-d] | connections | metrics]`.
//!
//! Every message comes back under the scheme's protocol (`tcp`, `text`, `frame`,
//! `websocket`: text stays text, binary stays binary), or the one `--protocol` names
//! (`tcp|text|frame|websocket|http`; for `unix:///path` and `udp://ip:port`, whose URLs
//! name none: raw bytes without it; `http` answers each request with its own body, and is
//! refused over `udp://` as `websocket` is). `udp://` echoes each datagram (or each message
//! the protocol finds in it) to its sender. `--unix-mode` sets the socket file's
//! permissions (e.g. `660`). Without a
//! verb it runs in the foreground, prints the address it listens on and exits cleanly on
//! SIGINT/SIGTERM; the verbs are Workerman's (see `ringman::ops`). `--watch PATH` (file or
//! directory, repeatable) turns on the file monitor (`ops::Options::watch`): a change of a
//! watched file or of the binary reloads the server gracefully; `--watch-binary` watches
//! the binary alone, `--watch-ext` keeps only some extensions in watched directories.
//! `--cert FILE --key FILE` serves over TLS (PEM chain, leaf first, and its key):
//! `websocket://` becomes wss, `text://` TLS text.

use std::process::ExitCode;

use ringman::ops::{self, Options};
use ringman::{Server, Worker};

fn usage() -> ExitCode {
    eprintln!(
        "usage: echo <scheme>://<ip>:<port>|unix:///path [--protocol tcp|text|frame|websocket|http] [--unix-mode OCTAL] [--threads N] [--cert FILE --key FILE] [--batched|--eager] [--max-package BYTES] [--max-connections N] [--pid-file F] [--log-file F] [--metrics ADDR] \
         [--stdout-file F] [--user U] [--group G] [--graceful-timeout SECS] [--pinned ADDR] \
         [--watch PATH]... [--watch-binary] [--watch-ext EXT]... [--watch-debounce MS] [start [-d] | stop [-g] | restart [-d] [-g] | reload [-g] | status [-d] | connections | metrics]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else { return usage() };
    let mut threads = None;
    let mut batched = false;
    let mut eager = false;
    let mut max_package: Option<usize> = None;
    let mut max_connections: Option<usize> = None;
    let mut protocol: Option<String> = None;
    let mut unix_mode: Option<u32> = None;
    let mut opts = Options::default();
    let mut verb = Vec::new();
    let mut pinned: Option<String> = None;
    let (mut cert, mut key): (Option<String>, Option<String>) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cert" => match args.next() {
                Some(f) => cert = Some(f),
                None => return usage(),
            },
            "--key" => match args.next() {
                Some(f) => key = Some(f),
                None => return usage(),
            },
            "--threads" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => threads = Some(n),
                None => return usage(),
            },
            "--protocol" => match args.next() {
                Some(p) => protocol = Some(p),
                None => return usage(),
            },
            "--unix-mode" => match args.next().and_then(|m| u32::from_str_radix(&m, 8).ok()) {
                Some(m) => unix_mode = Some(m),
                None => return usage(),
            },
            "--batched" => batched = true,
            "--eager" => eager = true,
            "--max-package" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => max_package = Some(n),
                None => return usage(),
            },
            "--max-connections" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => max_connections = Some(n),
                None => return usage(),
            },
            "--pid-file" => match args.next() {
                Some(f) => opts.pid_file = Some(f.into()),
                None => return usage(),
            },
            "--log-file" => match args.next() {
                Some(f) => opts.log_file = Some(f.into()),
                None => return usage(),
            },
            "--metrics" => match args.next().and_then(|a| a.parse().ok()) {
                Some(a) => opts.metrics_addr = Some(a),
                None => return usage(),
            },
            "--pinned" => match args.next() {
                Some(a) => pinned = Some(a),
                None => return usage(),
            },
            "--stdout-file" => match args.next() {
                Some(f) => opts.stdout_file = f.into(),
                None => return usage(),
            },
            "--user" => match args.next() {
                Some(u) => opts.user = Some(u),
                None => return usage(),
            },
            "--group" => match args.next() {
                Some(g) => opts.group = Some(g),
                None => return usage(),
            },
            "--graceful-timeout" => match args.next().and_then(|s| s.parse().ok()) {
                Some(secs) => opts.graceful_stop_timeout = std::time::Duration::from_secs_f64(secs),
                None => return usage(),
            },
            "--watch" => match args.next() {
                Some(p) => opts.watch.get_or_insert_with(ops::Watch::new).paths.push(p.into()),
                None => return usage(),
            },
            "--watch-binary" => {
                opts.watch.get_or_insert_with(ops::Watch::new);
            }
            "--watch-ext" => match args.next() {
                Some(e) => opts.watch.get_or_insert_with(ops::Watch::new).extensions.push(e),
                None => return usage(),
            },
            "--watch-debounce" => match args.next().and_then(|s| s.parse().ok()) {
                Some(ms) => {
                    opts.watch.get_or_insert_with(ops::Watch::new).debounce = std::time::Duration::from_millis(ms)
                }
                None => return usage(),
            },
            _ if a.starts_with("--") => return usage(),
            _ => verb.push(a),
        }
    }
    // Check the address before daemonizing, so a typo fails in the terminal.
    for a in std::iter::once(&addr).chain(pinned.as_ref()) {
        if let Err(e) = Worker::<()>::new(a) {
            eprintln!("echo: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(Err(e)) =
        protocol.as_deref().map(|p| Worker::<()>::new(&addr).and_then(|mut w| w.set_protocol(p).map(drop)))
    {
        eprintln!("echo: {e}");
        return ExitCode::FAILURE;
    }
    let tls = match (cert, key) {
        (Some(c), Some(k)) => Some(ringman::TlsConfig::new(c, k)),
        (None, None) => None,
        _ => return usage(),
    };
    // Check the certificate and key before daemonizing too.
    if let Some(Err(e)) = tls.as_ref().map(ringman::TlsConfig::check) {
        eprintln!("echo: {e}");
        return ExitCode::FAILURE;
    }
    opts.on_started = Some(Box::new(|running| {
        if let Some(a) = running.listen_at(0) {
            println!("listening on {a}");
        }
    }));
    ops::main_with_args(opts, &verb, |launch| {
        let mut w = Worker::<()>::new(&addr).expect("address checked above");
        if let Some(p) = &protocol {
            w.set_protocol(p).expect("protocol checked above");
        }
        w.unix_mode = unix_mode;
        if let Some(n) = threads {
            w.count = n;
        }
        if batched {
            w.send_mode = ringman::SendMode::Batched;
        }
        if eager {
            w.send_mode = ringman::SendMode::Eager;
        }
        w.max_connections = max_connections;
        if let Some(n) = max_package {
            w.max_package_size = n;
        }
        w.name = "echo".into();
        w.tls = tls.clone();
        w.on_message(|conn, msg, _| {
            conn.send_as(msg.data, msg.kind);
        });
        // (`udp://`: each datagram back to its sender.)
        w.on_datagram(|peer, msg, _| {
            peer.send(msg.data);
        });
        if w.protocol_name() == "http" {
            // Each request's body comes back as the response.
            w.on_request(|conn, req, _| {
                ringman::http::respond(conn, req, ringman::http::Response::new(200).body(req.body()));
            });
        }
        let mut server = Server::new().add(w);
        // A second, non-reloadable echo worker: a reload leaves it in the old process.
        if let Some(p) = pinned.filter(|_| launch.starts("pinned")) {
            let mut w = Worker::<()>::new(&p).expect("pinned address");
            w.name = "pinned".into();
            w.count = 1;
            w.reloadable = false;
            w.on_message(|conn, msg, _| {
                conn.send_as(msg.data, msg.kind);
            });
            server = server.add(w);
        }
        server
    })
}
