//! tokio peer on a current_thread runtime. Modes: `echo` (raw bytes, one `--buf-size`
//! receive buffer per connection, default 64 KiB), `text` (newline
//! delimited lines echoed), `frame` (4-byte big-endian total length incl. header), `http`
//! (hyper 1.x, `GET /hello` -> `Hello World`), `ws` (tokio-tungstenite echo), `fanout`
//! (tokio-tungstenite; every text message starting with `pub:` goes to every connection
//! through a `tokio::sync::broadcast` channel; a subscriber feeds every message queued for it
//! and flushes once per batch), `files` (`--root DIR`: hyper serving the files of a
//! directory, read per request, with the header set of ringman's `WebServer`), `proxy` (`--upstream IP:PORT`: each accepted
//! connection opens one upstream connection and `tokio::io::copy_bidirectional` forwards
//! both ways until either side closes), `udp` (a `tokio::net::UdpSocket` answering each
//! datagram to its sender), `https` and `wss` (`--cert FILE --key FILE`: the `http` and `ws`
//! modes inside TLS, tokio-rustls on rustls 0.23 with aws-lc-rs, configured as ringman's
//! server is: TLS 1.3 and 1.2, stateless session tickets (here from rustls's aws-lc-rs
//! ticketer; ringman has ticket keys of its own), the server's cipher order, ALPN
//! `http/1.1`).
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

/// Messages a slow fan-out subscriber may fall behind before it skips some (it then misses
/// deliveries, which the harness counts).
const FANOUT_BACKLOG: usize = 4096;

#[derive(Clone, Copy)]
enum Mode {
    Echo,
    /// Echo reading into one buffer per thread: idle connections hold no buffer (P5's
    /// shared-buffer variant).
    EchoShared,
    Text,
    Frame,
    Http,
    Ws,
    Fanout,
    Proxy,
    Https,
    Wss,
    Files,
}

fn main() {
    let args = peer_common::parse(
        &["echo", "echo-shared", "text", "frame", "http", "ws", "fanout", "proxy", "udp", "https", "wss", "files"],
        &["https", "wss"],
    );
    let mode = match args.mode.as_str() {
        "echo" => Mode::Echo,
        "echo-shared" => Mode::EchoShared,
        "text" => Mode::Text,
        "frame" => Mode::Frame,
        "http" => Mode::Http,
        "fanout" => Mode::Fanout,
        "proxy" => Mode::Proxy,
        "https" => Mode::Https,
        "wss" => Mode::Wss,
        "files" => Mode::Files,
        _ => Mode::Ws,
    };
    let acceptor = args.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key));
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().expect("runtime");
    if args.mode == "udp" {
        rt.block_on(udp_echo(args.addr));
        return;
    }
    rt.block_on(async move {
        // The backlog of the other servers (ringman, nginx, epoll, floor: 4096) instead of
        // tokio's 1024, so 10,000 connections opened in a burst (P17) are not held up by
        // SYNs dropped from a full accept queue.
        let socket =
            if args.addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
                .expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(args.addr).expect("bind");
        let listener: TcpListener = socket.listen(4096).expect("listen");
        peer_common::announce(listener.local_addr().expect("local addr"));
        let hub = tokio::sync::broadcast::channel::<Message>(FANOUT_BACKLOG).0;
        let upstream = args.upstream;
        let buf_size = args.buf_size();
        let root = Arc::new(args.root.clone().unwrap_or_default());
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            // One spawn per mode: a task's allocation is the size of its future, so an echo
            // connection must not carry the state of the largest mode (hyper, TLS) with it.
            // P5 counts those bytes per idle connection.
            match mode {
                Mode::Echo => drop(tokio::spawn(echo(stream, buf_size))),
                Mode::EchoShared => drop(tokio::spawn(echo_shared(stream))),
                Mode::Text => drop(tokio::spawn(delimited(stream, text_complete))),
                Mode::Frame => drop(tokio::spawn(delimited(stream, frame_complete))),
                Mode::Http => drop(tokio::spawn(http(stream))),
                Mode::Ws => drop(tokio::spawn(ws(stream))),
                Mode::Fanout => drop(tokio::spawn(fanout(stream, hub.clone()))),
                Mode::Proxy => drop(tokio::spawn(proxy(stream, upstream))),
                Mode::Files => drop(tokio::spawn(files(stream, root.clone()))),
                Mode::Https | Mode::Wss => {
                    let Some(acceptor) = acceptor.clone() else { continue };
                    drop(tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else { return };
                        match mode {
                            Mode::Https => drop(http(tls).await),
                            _ => drop(ws(tls).await),
                        }
                    }));
                }
            }
        }
    });
}

/// The TLS server of `https` and `wss`: the chain in `cert`, its key in `key` (PEM); TLS 1.3
/// and 1.2, stateless tickets (rustls's ticketer), the server's cipher order, ALPN
/// `http/1.1` (ringman's server settings, `engine/src/tls/mod.rs`).
fn tls_acceptor(cert: &Path, key: &Path) -> TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the key belongs to the certificate");
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().expect("ticketer");
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Each datagram back to its sender, one socket, one task.
async fn udp_echo(addr: std::net::SocketAddr) {
    let s = tokio::net::UdpSocket::bind(addr).await.expect("bind");
    peer_common::announce(s.local_addr().expect("local addr"));
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf).await else { continue };
        let _ = s.send_to(&buf[..n], from).await;
    }
}

async fn echo(mut s: TcpStream, buf_size: usize) -> std::io::Result<()> {
    // Reserved, not zeroed: like the io_uring peers, only the pages that receive data become
    // resident, so the idle-connection RSS comparison (P5) is fair. Its size is `--buf-size`
    // (P5 gives every peer ringman's default receive buffer size).
    let mut buf: Vec<u8> = Vec::with_capacity(buf_size);
    loop {
        buf.clear();
        let n = s.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf).await?;
    }
}

/// Transparent TCP proxy: one upstream connection per client, bytes copied both ways by
/// `copy_bidirectional` (each side's EOF is passed on as a write shutdown of the other).
async fn proxy(mut client: TcpStream, upstream: Option<std::net::SocketAddr>) -> std::io::Result<()> {
    let Some(upstream) = upstream else { return Ok(()) };
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut up).await?;
    Ok(())
}

thread_local! {
    /// The one receive buffer of `echo-shared` connections on this thread.
    static SHARED: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 * 1024]);
}

/// Echo without a buffer per connection: wait for readiness, read into the thread's shared
/// buffer, write back at once; only a write the socket does not take whole is copied (into
/// a buffer of its own, until it is out). Idle connections hold no buffer at all.
async fn echo_shared(mut s: TcpStream) -> std::io::Result<()> {
    loop {
        s.readable().await?;
        let step = SHARED.with(|b| {
            let buf = &mut b.borrow_mut()[..];
            let n = match s.try_read(buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Some(Vec::new())),
                Err(e) => return Err(e),
            };
            let w = match s.try_write(&buf[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            Ok(Some(buf[w..n].to_vec()))
        })?;
        match step {
            None => return Ok(()),
            Some(rest) if !rest.is_empty() => s.write_all(&rest).await?,
            Some(_) => {}
        }
    }
}

/// Length of the complete newline-terminated lines at the start of `buf`.
fn text_complete(buf: &[u8]) -> usize {
    buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Length of the complete frames at the start of `buf`.
fn frame_complete(buf: &[u8]) -> usize {
    let mut off = 0;
    while buf.len() - off >= 4 {
        let len = u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 4 || buf.len() - off < len {
            break;
        }
        off += len;
    }
    off
}

/// Echoes every complete message back, batching all complete messages of one read.
async fn delimited(mut s: TcpStream, complete: fn(&[u8]) -> usize) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let n = s.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let done = complete(&buf);
        if done > 0 {
            s.write_all(&buf[..done]).await?;
            buf.drain(..done);
        }
    }
}

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = if req.uri().path() == "/hello" {
        Response::builder().header("Content-Type", "text/plain").body(Full::new(Bytes::from_static(b"Hello World")))
    } else {
        Response::builder().status(404).body(Full::new(Bytes::new()))
    };
    Ok(resp.expect("static response"))
}

async fn http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(s: S) -> Result<(), hyper::Error> {
    hyper::server::conn::http1::Builder::new()
        .pipeline_flush(true)
        .keep_alive(true)
        .serve_connection(hyper_util::rt::TokioIo::new(s), hyper::service::service_fn(hello))
        .await
}

async fn ws<S: AsyncRead + AsyncWrite + Unpin>(s: S) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut ws = tokio_tungstenite::accept_async(s).await?;
    while let Some(msg) = ws.next().await {
        match msg? {
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// Push fan-out: a `pub:` message from any connection goes to every connection (the sender
/// included), each through its own subscription to the shared channel. A subscriber woken by
/// a message feeds it and every other message already queued for it into the WebSocket sink
/// and flushes once per such batch (one write for the batch, as ringman's batched sends).
async fn fanout(s: TcpStream, hub: broadcast::Sender<Message>) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let mut ws = tokio_tungstenite::accept_async(s).await?;
    let mut rx = hub.subscribe();
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(m) => {
                    ws.feed(m).await?;
                    loop {
                        match rx.try_recv() {
                            Ok(m) => ws.feed(m).await?,
                            Err(TryRecvError::Lagged(_)) => {}
                            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                        }
                    }
                    ws.flush().await?;
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if t.starts_with("pub:") => drop(hub.send(Message::Text(t))),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {}
            },
        }
    }
    Ok(())
}

/// `files`: hyper 1 serving the regular files directly under `root` (HTTP/1.1 keep-alive,
/// `GET` and `HEAD`). Each request opens its file, reads its metadata and its bytes (the
/// page cache serves them) and answers with the header set of ringman's `WebServer` for a
/// whole file: `Date` (hyper's), `Content-Type`, `Content-Length`, `Accept-Ranges: bytes`, a
/// strong `ETag` of size, inode and modification time, and `Last-Modified`. No range or
/// conditional requests (the bench sends neither); anything else is a 404.
async fn files(s: TcpStream, root: Arc<std::path::PathBuf>) -> Result<(), hyper::Error> {
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(
            hyper_util::rt::TokioIo::new(s),
            hyper::service::service_fn(move |req| std::future::ready(Ok::<_, Infallible>(file_response(&req, &root)))),
        )
        .await
}

fn file_response(req: &Request<hyper::body::Incoming>, root: &std::path::Path) -> Response<Full<Bytes>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let not_found = || Response::builder().status(404).body(Full::new(Bytes::new())).expect("static response");
    let head = req.method() == hyper::Method::HEAD;
    if req.method() != hyper::Method::GET && !head {
        return not_found();
    }
    // One plain name directly under the root: no separators, no dot segments.
    let name = req.uri().path().trim_start_matches('/');
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return not_found();
    }
    let Ok(mut file) = std::fs::File::open(root.join(name)) else { return not_found() };
    let Ok(meta) = file.metadata() else { return not_found() };
    if !meta.is_file() {
        return not_found();
    }
    let mut body = Vec::with_capacity(meta.len() as usize);
    if !head && file.read_to_end(&mut body).is_err() {
        return not_found();
    }
    let nanos = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    let etag = format!("\"{:x}-{:x}-{:x}\"", meta.len(), meta.ino(), nanos);
    let mut resp = Response::builder()
        .header("Content-Type", if name.ends_with(".bin") { "application/octet-stream" } else { "text/plain" })
        .header("Content-Length", meta.len())
        .header("Accept-Ranges", "bytes")
        .header("ETag", etag);
    if let Ok(modified) = meta.modified() {
        resp = resp.header("Last-Modified", httpdate::fmt_http_date(modified));
    }
    resp.body(Full::new(Bytes::from(body))).expect("file response")
}
