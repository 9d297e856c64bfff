//! The ringman server process the harness benchmarks (`ringman-bench serve-ringman ADDR`).
//!
//! The harness spawns `current_exe serve-ringman <scheme>://ip:port`, pinned to the server
//! CPU, and waits until the port accepts connections. Schemes: `tcp` (raw echo), `udp`
//! (datagram echo, to each sender), `text`
//! (line echo), `frame` (4-byte length frame echo), `websocket`, `http`, `fanout` (WebSocket
//! broadcast of every `pub:` message, see `src/fanout.rs`). The process serves with exactly
//! one ring thread until SIGTERM/SIGINT.
//!
//! `RINGMAN_SEND_MODE=eager` selects [`ringman::SendMode::Eager`] instead of the default
//! batched sends, so both can be measured with the same harness.
//!
//! `RINGMAN_HTTP=static` (the `ringman-static` server row) answers `GET /hello` from a
//! pre-encoded [`StaticResponse`] (only its `Date` is patched); the default (`build`, the
//! `ringman` row) builds and encodes a [`Response`] per request, as the hyper peer does.
//! Both send the same header set as hyper: `Content-Type`, `Content-Length`, `Date`.
//!
//! `RINGMAN_WEB_ROOT=DIR` (the harness's `--file-size`) puts a [`WebServer`] of `DIR` in
//! front of either: files are served from it, other requests fall through to `/hello`.
//!
//! `serve-ringman proxy://ip:port tcp://upstream:port` ([`serve_proxy`]) is the transparent
//! TCP proxy of `examples/proxy.rs` on one ring thread: each accepted connection opens one
//! upstream connection (`AsyncTcpConnection::connect`) and the two are piped both ways.
//!
//! `serve-ringman https://ip:port CERT KEY` and `wss://ip:port CERT KEY` ([`serve_tls`])
//! are the `http` and `websocket` servers above with the worker's TLS
//! (`Worker::tls = Some(TlsConfig::new(CERT, KEY))`, the engine's defaults otherwise): the
//! same `/hello` answer (`RINGMAN_HTTP` applies) and the same echo, inside TLS.
//!
//! `serve-ringman fanout-redis://ip:port redis://host:port` is the fan-out server whose
//! `pub:` messages go through a Redis channel (`crate::fanout::serve_ringman_redis`), so
//! several such processes deliver every message to all their connections.

use ringman::http::{respond, respond_static, WebServer};
use ringman::protocols::http::{Response, StaticResponse};
use ringman::{run_all, AsyncTcpConnection, SendMode, Server, TlsConfig, Worker};

/// Environment variable selecting the HTTP answer path (`build` or `static`).
pub const HTTP_ENV: &str = "RINGMAN_HTTP";

/// Environment variable naming a directory to serve with [`WebServer`] (`--file-size`):
/// requests no file answers fall through to the usual `/hello` handler.
pub const WEB_ROOT_ENV: &str = "RINGMAN_WEB_ROOT";

/// Installs `handler` on `w`, behind a [`WebServer`] of [`WEB_ROOT_ENV`]'s directory if set.
fn install_http<S: Default + 'static>(
    w: &mut Worker<S>,
    handler: impl for<'r> Fn(&ringman::Connection, &ringman::http::Request<'r>, &mut S) + Send + Sync + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    match std::env::var_os(WEB_ROOT_ENV) {
        Some(root) => WebServer::new(root)?.install(w, handler),
        None => {
            w.on_request(handler);
        }
    }
    Ok(())
}

/// Serves `addr` (`<scheme>://ip:port`) with ringman until the process is terminated.
pub fn serve(addr: &str) -> Result<(), Box<dyn std::error::Error>> {
    serve_with(addr, None)
}

/// Serves `https://ip:port` (the `http` server) or `wss://ip:port` (the `websocket` echo)
/// with the chain in `cert` and its key in `key`, until the process is terminated.
pub fn serve_tls(addr: &str, cert: &std::path::Path, key: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let plain = if let Some(rest) = addr.strip_prefix("https://") {
        format!("http://{rest}")
    } else if let Some(rest) = addr.strip_prefix("wss://") {
        format!("websocket://{rest}")
    } else {
        return Err(format!("TLS is served on https:// or wss://, not {addr}").into());
    };
    let tls = TlsConfig::new(cert, key);
    // The files' errors (unreadable, no key, a key of another certificate) name the file.
    tls.check()?;
    serve_with(&plain, Some(tls))
}

/// [`serve`], the worker inside TLS when `tls` is given.
fn serve_with(addr: &str, tls: Option<TlsConfig>) -> Result<(), Box<dyn std::error::Error>> {
    if addr.starts_with("http://") {
        return match std::env::var(HTTP_ENV).as_deref() {
            Ok("static") => serve_http_static(addr, tls),
            Ok("build") | Err(_) => serve_http(addr, tls),
            Ok(other) => Err(format!("{HTTP_ENV} must be build or static, not {other}").into()),
        };
    }
    if let Some(rest) = addr.strip_prefix("fanout://") {
        return crate::fanout::serve_ringman(&format!("websocket://{rest}"));
    }
    let mut w = Worker::<()>::new(addr)?;
    w.count = 1;
    w.name = "bench".into();
    w.tls = tls;
    match std::env::var("RINGMAN_SEND_MODE").as_deref() {
        Ok("eager") => w.send_mode = SendMode::Eager,
        Ok("batched") | Err(_) => w.send_mode = SendMode::Batched,
        Ok(other) => return Err(format!("RINGMAN_SEND_MODE must be eager or batched, not {other}").into()),
    }
    recv_buffers_from_env(&mut w)?;
    w.on_message(|conn, msg, _| {
        conn.send_as(msg.data, msg.kind);
    });
    // (`udp://`: each datagram back to its sender.)
    w.on_datagram(|peer, msg, _| {
        peer.send(msg.data);
    });
    run_all(Server::new().add(w))?;
    Ok(())
}

/// `RINGMAN_RECV_BUFFERS=COUNTxSIZE` or `COUNTxSIZE,whole` sets the worker's receive pool
/// (`Worker::recv_buffers`, `recv_buffer_size`; `whole`: `recv_incremental = false`), for
/// A/B runs of the pool's shape; unset, the engine's defaults.
fn recv_buffers_from_env(w: &mut Worker<()>) -> Result<(), Box<dyn std::error::Error>> {
    let Ok(v) = std::env::var("RINGMAN_RECV_BUFFERS") else { return Ok(()) };
    let bad = || format!("RINGMAN_RECV_BUFFERS must be COUNTxSIZE[,whole], not {v}");
    let (shape, whole) = match v.split_once(',') {
        Some((s, "whole")) => (s, true),
        Some(_) => return Err(bad().into()),
        None => (v.as_str(), false),
    };
    let (count, size) = shape.split_once('x').ok_or_else(bad)?;
    w.recv_buffers = count.parse().map_err(|_| bad())?;
    w.recv_buffer_size = size.parse().map_err(|_| bad())?;
    w.recv_incremental = !whole;
    Ok(())
}

/// The `200 Hello World` answer (`respond` adds `Date`; the encoder adds `Content-Length`).
fn hello() -> Response<'static> {
    Response::new(200).header("Content-Type", "text/plain").body("Hello World")
}

/// `GET /hello` → `200 Hello World` (text/plain), built and encoded per request; 404 otherwise.
fn serve_http(addr: &str, tls: Option<TlsConfig>) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = Worker::<()>::new(addr)?;
    w.count = 1;
    w.name = "bench-http".into();
    w.tls = tls;
    install_http(&mut w, |conn, req, _| {
        if req.path() == "/hello" {
            respond(conn, req, hello());
        } else {
            respond(conn, req, Response::new(404).body("Not Found"));
        }
    })?;
    run_all(Server::new().add(w))?;
    Ok(())
}

/// As [`serve_http`], but `/hello` is answered from a pre-encoded response (the fast path).
fn serve_http_static(addr: &str, tls: Option<TlsConfig>) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = Worker::<Option<StaticResponse>>::new(addr)?;
    w.count = 1;
    w.name = "bench-http".into();
    w.tls = tls;
    w.on_worker_start(|_, r| *r = Some(StaticResponse::new(&hello())));
    install_http(&mut w, |conn, req, r| match r.as_mut() {
        Some(r) if req.path() == "/hello" => respond_static(conn, req, r),
        _ => respond(conn, req, Response::new(404).body("Not Found")),
    })?;
    run_all(Server::new().add(w))?;
    Ok(())
}

/// The transparent TCP proxy of `examples/proxy.rs` (the same calls, one ring thread):
/// listens on `listen` (`proxy://ip:port`), and for every accepted connection connects to
/// `upstream` (`tcp://host:port`) and pipes the two connections both ways. An upstream that
/// cannot be reached closes the client.
pub fn serve_proxy(listen: &str, upstream: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rest = listen.strip_prefix("proxy://").ok_or("the proxy listens on proxy://ip:port")?;
    if !upstream.starts_with("tcp://") {
        return Err("the proxy's upstream is tcp://host:port".into());
    }
    // Checked once here, so a typo fails at start rather than per connection.
    AsyncTcpConnection::new(upstream)?;
    let mut w = Worker::<()>::new(&format!("tcp://{rest}"))?;
    w.count = 1;
    w.name = "bench-proxy".into();
    let target = upstream.to_string();
    w.on_connect(move |client, _| {
        if let Err(e) = AsyncTcpConnection::new(&target).and_then(|up| up.connect_piped(client)) {
            eprintln!("proxy: {target}: {e}");
            client.close(None);
        }
    });
    run_all(Server::new().add(w))?;
    Ok(())
}
