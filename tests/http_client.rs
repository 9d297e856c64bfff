//! The async HTTP client against servers this project did not write: Python's
//! `http.server` (HTTP/1.0, bodies delimited by the close), Python asyncio servers that
//! answer with exact bytes (chunked, 1xx, SSE streamed slowly, keep-alive, redirects,
//! malformed framing), and nginx for a pooled keep-alive load.

mod common;

use std::time::Duration;

use ringman::components::http_client::{ClientConfig, HttpClient, HttpClientError, Request};
use ringman::spawn;

use common::{on_ring, py_tcp_server, ring, PyServer};

/// An asyncio server that reads one request head at a time and answers with `script`'s
/// `answer(path, conn_no, req_no)` (bytes, or a list of byte chunks written with a pause
/// between them), keeping the connection unless the answer is `None`.
fn scripted(answer: &str) -> PyServer {
    py_tcp_server(
        &["itertools"],
        &format!(
            r#"
conns = itertools.count(1)
{answer}
async def handle(r, w):
    conn = next(conns)
    n = 0
    while True:
        head = b''
        while not head.endswith(b'\r\n\r\n'):
            b = await r.read(1)
            if not b:
                w.close()
                return
            head += b
        n += 1
        line = head.split(b'\r\n')[0].decode()
        method, path = line.split(' ')[0], line.split(' ')[1]
        length = 0
        chunked = b'transfer-encoding: chunked' in head.lower()
        for h in head.split(b'\r\n')[1:]:
            if h.lower().startswith(b'content-length:'):
                length = int(h.split(b':')[1])
        body = await r.readexactly(length) if length else b''
        if chunked:
            while True:
                size = int((await r.readline()).strip().split(b';')[0], 16)
                if size == 0:
                    await r.readline()
                    break
                body += await r.readexactly(size)
                await r.readline()
        out = answer(method, path, body, conn, n)
        if out is None:
            w.close()
            return
        if isinstance(out, list):
            for part in out:
                w.write(part)
                await w.drain()
                await asyncio.sleep(0.05)
        else:
            w.write(out)
            await w.drain()
"#
        ),
    )
}

#[test]
fn keep_alive_chunked_interim_head_and_no_content_against_a_real_server() {
    let server = scripted(
        r#"
def answer(method, path, body, conn, n):
    tag = f'conn={conn} req={n}'.encode()
    if path == '/chunked':
        return b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n' + b'%x\r\n' % len(tag) + tag + b'\r\n0\r\n\r\n'
    if path == '/continue':
        return b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(tag) + tag
    if path == '/empty':
        return b'HTTP/1.1 204 No Content\r\n\r\n'
    if path == '/echo':
        return b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(body) + body
    return b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(tag) + tag
"#,
    );
    let base = format!("http://127.0.0.1:{}", server.port);
    let ring = ring();
    let got = on_ring(&ring, move || async move {
        let c = HttpClient::new(ClientConfig { max_conn_per_addr: 1, ..Default::default() });
        let mut out = Vec::new();
        for path in ["/plain", "/chunked", "/continue", "/empty"] {
            let r = c.get(&format!("{base}{path}")).await.unwrap();
            out.push(format!("{} {}", r.status(), String::from_utf8_lossy(&r.body)));
        }
        let r = c.send(Request::head(&format!("{base}/plain"))).await.unwrap();
        out.push(format!("HEAD {} {}", r.status(), r.body.len()));
        let r = c.send(Request::post(&format!("{base}/echo")).body("posted body")).await.unwrap();
        out.push(format!("{}", String::from_utf8_lossy(&r.body)));
        // A streamed request body, written while the request is in flight.
        let (req, mut tx) = Request::post(&format!("{base}/echo")).body_stream();
        let c2 = c.clone();
        let pending = spawn(async move { c2.send(req).await }).unwrap();
        for part in ["one ", "two ", "three"] {
            tx.send(part).await;
        }
        tx.finish();
        let r = pending.await.unwrap().unwrap();
        out.push(format!("{}", String::from_utf8_lossy(&r.body)));
        out.push(format!("{:?}", c.pool_counts(&base).unwrap()));
        out
    });
    assert_eq!(
        got,
        [
            "200 conn=1 req=1",
            "200 conn=1 req=2",
            "200 conn=1 req=3",
            "204 ",
            "HEAD 200 0",
            "posted body",
            "one two three",
            "(1, 1)",
        ],
        "one keep-alive connection carries every request"
    );
    ring.stop();
}

#[test]
fn http_1_0_bodies_delimited_by_the_close_from_python_http_server() {
    let dir = std::env::temp_dir().join(format!("ringman-hc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &content).unwrap();
    let port = common::free_port();
    let mut server = std::process::Command::new("python3")
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    common::wait_until("http.server listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let ring = ring();
    let url = format!("http://127.0.0.1:{port}/big.bin");
    let (status, body, missing) = on_ring(&ring, move || async move {
        let c = HttpClient::new(Default::default());
        let r = c.get(&url).await.unwrap();
        let missing = c.get(&url.replace("big.bin", "nope")).await.unwrap().status();
        (r.status(), r.body.to_vec(), missing)
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((status, missing), (200, 404));
    assert!(body == content, "300 KB arrive intact ({} bytes)", body.len());
    ring.stop();
}

/// Server-Sent Events written slowly: the stream yields each event as it arrives.
#[test]
fn a_streamed_response_yields_chunks_as_they_arrive() {
    let server = scripted(
        r#"
def answer(method, path, body, conn, n):
    head = b'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n'
    events = [b'data: %d\n\n' % i for i in range(5)]
    return [head] + [b'%x\r\n' % len(e) + e + b'\r\n' for e in events] + [b'0\r\n\r\n']
"#,
    );
    let url = format!("http://127.0.0.1:{}/events", server.port);
    let ring = ring();
    let chunks = on_ring(&ring, move || async move {
        let c = HttpClient::new(Default::default());
        let mut s = c.send_streaming(Request::get(&url)).await.unwrap();
        let mut got = Vec::new();
        while let Some(ch) = s.chunk().await.unwrap() {
            got.push(String::from_utf8_lossy(&ch).to_string());
        }
        got
    });
    // Written 50 ms apart, so each arrives as its own chunk.
    assert_eq!(chunks.concat(), "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
    assert!(chunks.len() >= 3, "streamed, not buffered whole: {chunks:?}");
    ring.stop();
}

#[test]
fn redirects_are_off_by_default_and_followed_up_to_the_limit() {
    let server = scripted(
        r#"
def answer(method, path, body, conn, n):
    if path.startswith('/hop'):
        k = int(path[4:])
        loc = b'/hop%d' % (k + 1) if k < 3 else b'/final'
        return b'HTTP/1.1 302 Found\r\nLocation: ' + loc + b'\r\nContent-Length: 0\r\n\r\n'
    if path == '/see-other':
        return b'HTTP/1.1 303 See Other\r\nLocation: /final\r\nContent-Length: 0\r\n\r\n'
    return b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(method) + method.encode()
"#,
    );
    let base = format!("http://127.0.0.1:{}", server.port);
    let ring = ring();
    let got = on_ring(&ring, move || async move {
        let off = HttpClient::new(Default::default());
        let on = HttpClient::new(ClientConfig { max_redirects: 5, ..Default::default() });
        let short = HttpClient::new(ClientConfig { max_redirects: 2, ..Default::default() });
        let a = off.get(&format!("{base}/hop0")).await.unwrap();
        let b = on.get(&format!("{base}/hop0")).await.unwrap();
        let c = short.get(&format!("{base}/hop0")).await.unwrap_err();
        // 303 turns a POST into a GET.
        let d = on.send(Request::post(&format!("{base}/see-other")).body("x")).await.unwrap();
        vec![
            format!("{} {:?}", a.status(), a.header("location")),
            format!("{} {}", b.status(), String::from_utf8_lossy(&b.body)),
            format!("{}", matches!(c, HttpClientError::TooManyRedirects(2))),
            format!("{} {}", d.status(), String::from_utf8_lossy(&d.body)),
        ]
    });
    assert_eq!(got, ["302 Some(\"/hop1\")", "200 GET", "true", "200 GET"]);
    ring.stop();
}

/// Malformed framing from a server is an error, not a guess; a server that never answers
/// times out; one that closes a kept-alive connection gets a retry on a fresh one.
#[test]
fn bad_framing_timeouts_and_stale_connections() {
    let server = scripted(
        r#"
once = set()
def answer(method, path, body, conn, n):
    if path == '/smuggle':
        return b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc'
    if path == '/silent':
        return b''
    if conn in once:
        # The kept-alive connection of '/once': the next request on it is not answered,
        # the connection is closed instead (as a server's keep-alive timeout does).
        return None
    if path == '/once':
        once.add(conn)
    return b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
"#,
    );
    let base = format!("http://127.0.0.1:{}", server.port);
    let ring = ring();
    let got = on_ring(&ring, move || async move {
        let c = HttpClient::new(ClientConfig {
            max_conn_per_addr: 1,
            request_timeout: Duration::from_millis(400),
            ..Default::default()
        });
        let smuggle = c.get(&format!("{base}/smuggle")).await.unwrap_err();
        let silent = c.get(&format!("{base}/silent")).await.unwrap_err();
        let first = c.get(&format!("{base}/once")).await.unwrap();
        // The next request reuses that connection, which the server closes unanswered:
        // the client sends it again on a fresh connection.
        let second = c.get(&format!("{base}/plain")).await;
        vec![
            format!("{smuggle}"),
            format!("{}", matches!(silent, HttpClientError::Timeout(_))),
            format!("{}", first.status()),
            format!("{:?}", second.map(|r| r.status())),
        ]
    });
    assert_eq!(got[0], "duplicate Content-Length in the response");
    assert_eq!(&got[1..], ["true", "200", "Ok(200)"]);
    ring.stop();
}

/// The pool under load: 200 concurrent requests over at most 4 connections to nginx.
#[test]
fn a_pool_of_four_carries_two_hundred_concurrent_requests_to_nginx() {
    if std::env::var_os("RINGMAN_NO_NGINX").is_some() {
        return;
    }
    let port = common::free_port();
    let dir = std::env::temp_dir().join(format!("ringman-hc-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(dir.join("www/index.html"), "hello from nginx\n").unwrap();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{ access_log off; keepalive_requests 100000; client_body_temp_path {d}; proxy_temp_path {d};\n\
         fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let nginx =
        ["nginx", "/usr/sbin/nginx"].into_iter().find(|p| std::process::Command::new(p).arg("-v").output().is_ok());
    let mut server = std::process::Command::new(nginx.expect("nginx is installed (or set RINGMAN_NO_NGINX=1)"))
        .args(["-c"])
        .arg(dir.join("nginx.conf"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("nginx listens", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let ring = ring();
    let url = format!("http://127.0.0.1:{port}/index.html");
    let (ok, open) = on_ring(&ring, move || async move {
        let c = HttpClient::new(ClientConfig { max_conn_per_addr: 4, ..Default::default() });
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let c = c.clone();
                let url = url.clone();
                spawn(async move { c.get(&url).await.map(|r| r.body) }).unwrap()
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok_and(|b| &b[..] == b"hello from nginx\n") {
                ok += 1;
            }
        }
        (ok, c.pool_counts(&url).unwrap())
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(ok, 200);
    assert!(open.0 <= 4, "at most 4 connections: {open:?}");
    ring.stop();
}

/// The `http_client` example against the scripted server: one line per URL, in order,
/// status and size; exit 1 when one failed.
#[test]
fn the_http_client_example_prints_status_and_size_per_url() {
    let server = scripted(
        r#"
def answer(method, path, body, conn, n):
    size = int(path[1:])
    return b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % size + b'x' * size
"#,
    );
    let urls: Vec<String> = [10, 0, 70000].iter().map(|n| format!("http://127.0.0.1:{}/{n}", server.port)).collect();
    let out = std::process::Command::new(common::example_binary("http_client")).args(&urls).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let want: Vec<String> = urls.iter().zip([10, 0, 70000]).map(|(u, n)| format!("200 {n} bytes  {u}")).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), want, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let refused = format!("http://127.0.0.1:{}/", common::free_port());
    let out = std::process::Command::new(common::example_binary("http_client")).arg(&refused).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("error connect failed"));
}
