//! HTTP behaviour with real clients: curl and raw std::net sockets.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;

use common::*;
use ringman::http::{respond, WebServer};
use ringman::protocols::http::Response;
use ringman::{Running, Worker};

fn server(root: &std::path::Path) -> (Running, SocketAddr) {
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_package_size = 64 * 1024;
    WebServer::new(root).unwrap().install(&mut w, |conn, req, _| {
        if req.path() == "/hello" {
            respond(conn, req, Response::new(200).header("Content-Type", "text/plain").body("Hello World"));
        } else if req.path() == "/echo" {
            let body = req.body().to_vec();
            respond(conn, req, Response::new(200).body(body));
        } else {
            respond(conn, req, Response::new(404).body("Not Found"));
        }
    });
    start(w)
}

fn root() -> tempdir::Dir {
    let d = tempdir::Dir::new();
    std::fs::write(d.path().join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(d.path().join("data.bin"), (0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::fs::write(d.path().join("sub/a.txt"), "abcdefghij").unwrap();
    d
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ringman-http-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out =
        Command::new("curl").args(["-s", "-S", "--max-time", "20", "-D", "-"]).args(args).output().expect("curl runs");
    let text = out.stdout;
    let split = text.windows(4).position(|w| w == b"\r\n\r\n").map_or(text.len(), |i| i + 4);
    (String::from_utf8_lossy(&text[..split]).into_owned(), text[split..].to_vec())
}

#[test]
fn hello_keep_alive_and_files_with_curl() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let base = format!("http://{addr}");
    let (head, body) = curl(&[&format!("{base}/hello")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"));
    assert!(head.contains("Date: "));
    assert_eq!(body, b"Hello World");
    // Two URLs on one connection: curl reports reuse.
    let out = Command::new("curl")
        .args(["-s", "-v", "--max-time", "20", &format!("{base}/hello"), &format!("{base}/sub/a.txt")])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Re-using existing connection"));
    assert_eq!(out.stdout, b"Hello Worldabcdefghij");
    let (head, body) = curl(&[&format!("{base}/")]);
    assert!(head.contains("text/html"));
    assert_eq!(body, b"<h1>home</h1>");
    let (_, body) = curl(&[&format!("{base}/data.bin")]);
    assert_eq!(body.len(), 300_000);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[test]
fn range_and_not_modified() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let url = format!("http://{addr}/sub/a.txt");
    let (head, body) = curl(&["-r", "2-4", &url]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(head.contains("Content-Range: bytes 2-4/10"));
    assert_eq!(body, b"cde");
    let (head, _) = curl(&["-r", "50-60", &url]);
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    let (head, _) = curl(&[&url]);
    let lm = head.lines().find_map(|l| l.strip_prefix("Last-Modified: ")).unwrap().trim().to_string();
    let (head, body) = curl(&["-H", &format!("If-Modified-Since: {lm}"), &url]);
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    assert!(body.is_empty());
}

#[test]
fn traversal_attempts_are_refused() {
    let d = root();
    let (_srv, addr) = server(d.path());
    std::os::unix::fs::symlink("/etc", d.path().join("escape")).unwrap();
    for path in [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/sub/%2E%2E%2f%2E%2E%2fetc/passwd",
        "/escape/passwd",
        "/x%00y",
    ] {
        let mut s = connect(addr);
        write_all(&mut s, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
        let resp = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
        assert!(resp.starts_with("HTTP/1.1 404") || resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
        assert!(!resp.contains("root:"), "{path} leaked /etc/passwd");
    }
}

#[test]
fn pipelining_http10_and_connection_close() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let mut s = connect(addr);
    write_all(&mut s, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /sub/a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let all = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
    let first = all.find("Hello World").unwrap();
    let second = all.find("abcdefghij").unwrap();
    assert!(first < second, "answered in order");
    assert_eq!(all.matches("HTTP/1.1 200").count(), 3);
    // HTTP/1.0 without keep-alive: answered, then closed by the server.
    let mut s = connect(addr);
    write_all(&mut s, b"GET /hello HTTP/1.0\r\n\r\n");
    let resp = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
    assert!(resp.contains("Hello World"));
}

#[test]
fn chunked_upload_and_limits() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let mut s = connect(addr);
    write_all(&mut s, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let resp = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
    assert!(resp.ends_with("hello world"), "{resp}");
    // curl's own chunked upload.
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "abc",
            &format!("http://{addr}/echo"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"abc");
    let cases: [(&[u8], &str); 4] = [
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "400"),
        (b"BOGUS\r\n\r\n", "400"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", "413"),
    ];
    for (req, status) in cases {
        let mut s = connect(addr);
        write_all(&mut s, req);
        let resp = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{resp}");
    }
    let mut s = connect(addr);
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    let _ = s.write_all(big.as_bytes());
    let resp = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

/// Reads one response with a `Content-Length` body: (head, body).
fn read_response(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.extend_from_slice(&read_exact(s, 1));
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let body = read_exact(s, len);
    (head, body)
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let mut s = connect(addr);
    write_all(&mut s, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    // The client waits for the interim response before it sends the body.
    assert_eq!(read_exact(&mut s, 25), b"HTTP/1.1 100 Continue\r\n\r\n");
    write_all(&mut s, b"hello");
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello");
    // Head and body together: the 100 is no longer useful and is not sent.
    write_all(&mut s, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok");
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    // curl asks for it on its own and reports the interim response.
    let out = Command::new("curl")
        .args([
            "-s",
            "-v",
            "--max-time",
            "20",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "payload",
            &format!("http://{addr}/echo"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP/1.1 100 Continue"));
    assert_eq!(out.stdout, b"payload");
}

fn timeout_server(
    idle: Option<std::time::Duration>,
    packet: Option<std::time::Duration>,
) -> (Running, SocketAddr, crossbeam_channel::Receiver<String>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.idle_timeout = idle;
    w.packet_timeout = packet;
    let etx = tx.clone();
    w.on_error(move |_, e, _| etx.send(format!("error: {e}")).unwrap());
    w.on_close(move |_, _| tx.send("close".into()).unwrap());
    w.on_request(|conn, req, _| respond(conn, req, Response::new(200).body("ok")));
    let (srv, addr) = start(w);
    (srv, addr, rx)
}

#[test]
fn slow_request_head_gets_408_and_others_are_unaffected() {
    let (_srv, addr, events) = timeout_server(None, Some(std::time::Duration::from_millis(300)));
    let mut slow = connect(addr);
    write_all(&mut slow, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    // Another client is served normally while the slow head waits.
    let mut fine = connect(addr);
    write_all(&mut fine, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = read_response(&mut fine);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"ok");
    let resp = String::from_utf8_lossy(&read_to_eof(&mut slow)).into_owned();
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(resp.contains("Connection: close"), "{resp}");
    let first = events.recv_timeout(PATIENCE).unwrap();
    assert!(first.starts_with("error: packet not completed"), "{first}");
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "close");
    // The served connection is still open and usable.
    write_all(&mut fine, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(&mut fine).1, b"ok");
}

#[test]
fn idle_keep_alive_connection_is_closed_quietly() {
    let (_srv, addr, events) = timeout_server(Some(std::time::Duration::from_millis(300)), None);
    let mut s = connect(addr);
    write_all(&mut s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, _) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Nothing more is sent: the server closes without a word and without on_error.
    assert!(read_to_eof(&mut s).is_empty());
    assert_eq!(events.recv_timeout(PATIENCE).unwrap(), "close");
    assert!(events.try_recv().is_err());
}

fn streaming_server() -> (Running, SocketAddr) {
    use ringman::protocols::http::{chunk, last_chunk, sse_event};
    use ringman::Timer;
    use std::time::Duration;
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_request(|conn, req, _| match req.path() {
        "/events" => {
            respond(conn, req, Response::event_stream());
            for i in 1..=3u64 {
                let conn = *conn;
                Timer::add(Duration::from_millis(20 * i), false, move || {
                    let mut out = Vec::new();
                    sse_event(Some("tick"), &format!("n={i}"), Some(&i.to_string()), None, &mut out);
                    conn.send_raw(&out);
                    if i == 3 {
                        conn.close(None);
                    }
                })
                .unwrap();
            }
        }
        "/stream" => {
            respond(conn, req, Response::new(200).chunked().body("first;"));
            for (i, piece) in ["second;", "third"].into_iter().enumerate() {
                let conn = *conn;
                Timer::add(Duration::from_millis(20 * (i as u64 + 1)), false, move || {
                    let mut out = Vec::new();
                    chunk(piece.as_bytes(), &mut out);
                    if i == 1 {
                        last_chunk(&mut out);
                    }
                    conn.send_raw(&out);
                })
                .unwrap();
            }
        }
        _ => respond(conn, req, Response::new(200).body("Hello World")),
    });
    start(w)
}

#[test]
fn server_sent_events_stream_to_curl() {
    let (_srv, addr) = streaming_server();
    let (head, body) = curl(&["-N", &format!("http://{addr}/events")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
    assert_eq!(
        String::from_utf8_lossy(&body),
        "event: tick\nid: 1\ndata: n=1\n\nevent: tick\nid: 2\ndata: n=2\n\nevent: tick\nid: 3\ndata: n=3\n\n"
    );
}

#[test]
fn chunked_response_streams_and_keeps_the_connection() {
    let (_srv, addr) = streaming_server();
    let base = format!("http://{addr}");
    let out = Command::new("curl")
        .args(["-s", "-v", "--max-time", "20", &format!("{base}/stream"), &format!("{base}/hello")])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Transfer-Encoding: chunked"), "{log}");
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first;second;thirdHello World");
}

#[test]
fn send_file_from_a_handler_streams_with_ranges() {
    use ringman::http::{continue_file, send_file};
    let d = root();
    let file = d.path().join("data.bin");
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.on_request(move |conn, req, _| {
        if !(req.path() == "/report" && send_file(conn, req, &file)) {
            respond(conn, req, Response::new(404).body("Not Found"));
        }
    });
    w.on_buffer_drain(|conn, _| continue_file(conn));
    let (_srv, addr) = start(w);
    let (head, body) = curl(&[&format!("http://{addr}/report")]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: application/octet-stream"), "{head}");
    assert_eq!(body.len(), 300_000);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    let (head, body) = curl(&["-r", "100000-100009", &format!("http://{addr}/report")]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, (100_000..100_010u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let (head, _) = curl(&[&format!("http://{addr}/other")]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn pipelined_request_waits_for_a_streaming_file_body() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let mut s = connect(addr);
    // A 300,000-byte file, then a pipelined upload asking for 100 Continue.
    write_all(
        &mut s,
        b"GET /data.bin HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "nothing inside the file body");
    assert_eq!(read_exact(&mut s, 25), b"HTTP/1.1 100 Continue\r\n\r\n");
    write_all(&mut s, b"ok");
    assert_eq!(read_response(&mut s).1, b"ok");
}

/// Splits a byte stream into `Content-Length` framed responses: (status line, head, body).
fn split_responses(mut all: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    while !all.is_empty() {
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head") + 4;
        let head = String::from_utf8_lossy(&all[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
            .expect("Content-Length");
        let status = head.lines().next().unwrap().to_string();
        out.push((status, head, all[end..end + len].to_vec()));
        all = &all[end + len..];
    }
    out
}

#[test]
fn malformed_pipelined_request_is_answered_after_the_valid_one_then_eof() {
    let d = root();
    let (_srv, addr) = server(d.path());
    // The issue's examples, each behind a valid request and in front of many more.
    let cases: [(&[u8], &str); 9] = [
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", "400"),
        (b"GET /hello HTTP/1.1\r\nHost:\r\n\r\n", "400"),
        (b"GET /h\xc3\xa9llo HTTP/1.1\r\nHost: x\r\n\r\n", "400"),
        (b"GET /hello HTTP/1\r\nHost: x\r\n\r\n", "400"),
        (b"GET /hello http/1.1\r\nHost: x\r\n\r\n", "400"),
        (b"GET /hello HTTP/2.0\r\nHost: x\r\n\r\n", "505"),
        (b"GETGETGETGETGETGETGETGET /hello HTTP/1.1\r\nHost: x\r\n\r\n", "501"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\nabcdefg", "400"),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nContent-Length: 5\r\n\r\n",
            "400",
        ),
    ];
    for (bad, status) in cases {
        let what = String::from_utf8_lossy(bad).into_owned();
        let mut s = connect(addr);
        let mut wire = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        wire.extend_from_slice(bad);
        // Far more than one receive: still unread when the server refuses the request, so a
        // plain close would reset the connection and destroy the answer in flight.
        for _ in 0..4000 {
            wire.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        write_all(&mut s, &wire);
        let all = read_to_eof(&mut s);
        let responses = split_responses(&all);
        let statuses: Vec<&str> = responses.iter().map(|(s, _, _)| s.as_str()).collect();
        assert_eq!(statuses.len(), 2, "{what}: {statuses:?}");
        assert_eq!(statuses[0], "HTTP/1.1 200 OK", "{what}");
        assert_eq!(responses[0].2, b"Hello World", "{what}");
        assert!(statuses[1].starts_with(&format!("HTTP/1.1 {status} ")), "{what}: {statuses:?}");
        assert!(responses[1].1.contains("Connection: close\r\n"), "{what}");
    }
    // HTTP/1.2 is served as HTTP/1.1; curl's empty Host (`-H 'Host;'`) is refused.
    let mut s = connect(addr);
    write_all(&mut s, b"GET /hello HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n");
    let responses = split_responses(&read_to_eof(&mut s));
    assert_eq!((responses[0].0.as_str(), &responses[0].2[..]), ("HTTP/1.1 200 OK", &b"Hello World"[..]));
    let (head, _) = curl(&["-H", "Host;", &format!("http://{addr}/hello")]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

/// The value of field `name` in a response head printed by curl.
fn field(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[test]
fn conditional_requests_with_etags() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let url = format!("http://{addr}/sub/a.txt");
    let (head, _) = curl(&[&url]);
    let etag = field(&head, "ETag").expect("ETag on 200");
    let lm = field(&head, "Last-Modified").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong validator: {etag}");
    // If-None-Match: 304 carrying the ETag; a list and the weak form match too.
    for inm in [etag.clone(), format!("\"nope\", {etag}"), format!("W/{etag}"), "*".to_string()] {
        let (head, body) = curl(&["-H", &format!("If-None-Match: {inm}"), &url]);
        assert!(head.starts_with("HTTP/1.1 304"), "{inm}: {head}");
        assert_eq!(field(&head, "ETag").as_deref(), Some(etag.as_str()));
        assert!(body.is_empty());
    }
    // If-None-Match takes precedence over If-Modified-Since, both ways.
    let (head, body) = curl(&["-H", "If-None-Match: \"other\"", "-H", &format!("If-Modified-Since: {lm}"), &url]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"abcdefghij");
    let (head, _) = curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        "-H",
        "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
        &url,
    ]);
    assert!(head.starts_with("HTTP/1.1 304"), "{head}");
    // If-Match / If-Unmodified-Since: 412 when they do not hold.
    let (head, _) = curl(&["-H", "If-Match: \"other\"", &url]);
    assert!(head.starts_with("HTTP/1.1 412"), "{head}");
    let (head, _) = curl(&["-H", &format!("If-Match: {etag}"), &url]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = curl(&["-H", "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT", &url]);
    assert!(head.starts_with("HTTP/1.1 412"), "{head}");

    // If-Range: the range when the validator matches, the whole file when it does not.
    let (head, body) = curl(&["-r", "2-4", "-H", &format!("If-Range: {etag}"), &url]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, b"cde");
    for stale in ["\"other\"".to_string(), format!("W/{etag}"), "Thu, 01 Jan 1970 00:00:00 GMT".to_string()] {
        let (head, body) = curl(&["-r", "2-4", "-H", &format!("If-Range: {stale}"), &url]);
        assert!(head.starts_with("HTTP/1.1 200"), "{stale}: {head}");
        assert_eq!(body, b"abcdefghij");
    }
    // Written before this test ran, the file's date is a strong validator (§8.8.2.2).
    let old = d.path().join("old.txt");
    std::fs::write(&old, "0123456789").unwrap();
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600)).unwrap();
    let old_url = format!("http://{addr}/old.txt");
    let old_lm = field(&curl(&[&old_url]).0, "Last-Modified").unwrap();
    let (head, body) = curl(&["-r", "0-1", "-H", &format!("If-Range: {old_lm}"), &old_url]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert_eq!(body, b"01");
}

#[test]
fn etag_changes_when_a_file_is_rewritten_within_a_second() {
    use std::os::unix::fs::MetadataExt;
    let d = root();
    let (_srv, addr) = server(d.path());
    let path = d.path().join("twice.txt");
    let url = format!("http://{addr}/twice.txt");
    let etag_of = || field(&curl(&[&url]).0, "ETag").unwrap();
    // Same size, same second, same inode: only the nanoseconds of the modification time
    // differ. Rewrite until the file system shows a new time within the same second (the
    // clock of the file system advances in ticks, so two quick writes may share one).
    for _attempt in 0..100 {
        std::fs::write(&path, "first").unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let first = etag_of();
        let after = loop {
            std::fs::write(&path, "again").unwrap();
            let m = std::fs::metadata(&path).unwrap();
            if (m.mtime(), m.mtime_nsec()) != (before.mtime(), before.mtime_nsec()) {
                break m;
            }
        };
        if after.mtime() != before.mtime() {
            continue; // crossed a second boundary: not the case under test
        }
        assert_eq!((after.len(), after.ino()), (before.len(), before.ino()));
        let second = etag_of();
        assert_ne!(first, second, "the ETag must change with the content");
        let (head, body) = curl(&["-H", &format!("If-None-Match: {first}"), &url]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, b"again");
        // Last-Modified alone could not tell the two versions apart.
        let lm_first = h_date(before.mtime());
        let lm_second = h_date(after.mtime());
        assert_eq!(lm_first, lm_second);
        return;
    }
    panic!("never saw two writes within one second");
}

fn h_date(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    String::from_utf8(ringman::protocols::http::http_date(t).to_vec()).unwrap()
}

/// Symbolic links under the root: a relative one that stays inside is followed; one that
/// climbs out, or any absolute one (even into the root: the kernel's `RESOLVE_BENEATH`
/// refuses absolute links, a documented choice), is a 404; a FIFO is no file (and opening
/// it must not block the ring: the next request is still answered).
#[test]
fn links_fifos_and_directories_under_the_root() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let p = d.path();
    std::os::unix::fs::symlink("sub/a.txt", p.join("rel-inside")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", p.join("sub/rel-outside")).unwrap();
    std::os::unix::fs::symlink(p.join("sub/a.txt"), p.join("abs-inside")).unwrap();
    let fifo = std::ffi::CString::new(p.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::create_dir(p.join("noindex")).unwrap();
    let cases = [
        ("/rel-inside", "200"),
        ("/sub/rel-outside", "404"),
        ("/abs-inside", "404"),
        ("/pipe", "404"),
        ("/noindex/", "404"),
        ("/sub/", "404"),
        ("/", "200"),
        ("/hello", "200"),
    ];
    // All pipelined on one connection, in one write.
    let mut s = connect(addr);
    let burst: String = cases.iter().map(|(path, _)| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).collect();
    write_all(&mut s, burst.as_bytes());
    for (path, want) in cases {
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with(&format!("HTTP/1.1 {want}")), "{path}: {head}");
        if path == "/rel-inside" {
            assert_eq!(body, b"abcdefghij");
        }
    }
}

/// Kept bodies follow the file: replaced by a rename (a new inode), rewritten in place with
/// another size, truncated to nothing, removed.
#[test]
fn kept_bodies_follow_renames_rewrites_and_removal() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let path = d.path().join("doc.txt");
    let get = || {
        let mut s = connect(addr);
        write_all(&mut s, b"GET /doc.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let all = read_to_eof(&mut s);
        let text = String::from_utf8_lossy(&all).into_owned();
        let status = text.lines().next().unwrap_or("").to_string();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    };
    std::fs::write(&path, "version one").unwrap();
    assert_eq!(get().1, "version one");
    assert_eq!(get().1, "version one", "served again (now from the kept body)");
    let tmp = d.path().join("doc.tmp");
    std::fs::write(&tmp, "version two!").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert_eq!(get().1, "version two!");
    std::fs::write(&path, "3").unwrap();
    assert_eq!(get().1, "3");
    std::fs::write(&path, "").unwrap();
    let (status, body) = get();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "");
    std::fs::remove_file(&path).unwrap();
    assert!(get().0.starts_with("HTTP/1.1 404"));
}

/// Large bodies pipelined in one burst to a client that reads slowly: kept ones (1 MB,
/// queued whole) and streamed ones (over 1 MiB) alternate; every response arrives whole
/// and in order, none refused by the send buffer's limit.
#[test]
fn pipelined_large_bodies_kept_and_streamed_to_a_slow_reader() {
    let d = root();
    let kept: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let streamed: Vec<u8> = (0..1_500_000u32).map(|i| (i % 247) as u8).collect();
    std::fs::write(d.path().join("kept.bin"), &kept).unwrap();
    std::fs::write(d.path().join("streamed.bin"), &streamed).unwrap();
    let (_srv, addr) = server(d.path());
    let order = ["/kept.bin", "/kept.bin", "/streamed.bin", "/kept.bin", "/streamed.bin", "/kept.bin", "/hello"];
    let mut s = connect(addr);
    let burst: String = order.iter().map(|p| format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n")).collect();
    write_all(&mut s, burst.as_bytes());
    // Slow: the server's socket buffer fills and its send queue holds the rest.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for p in order {
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "{p}: {head}");
        match p {
            "/kept.bin" => assert!(body == kept, "{p}: {} bytes, not the file", body.len()),
            "/streamed.bin" => assert!(body == streamed, "{p}: {} bytes, not the file", body.len()),
            _ => assert_eq!(body, b"Hello World"),
        }
    }
}

/// Paths no file answers are remembered per ring thread (the request falls through to the
/// application without a lookup), and forgotten at the first change: each path below is
/// asked for three times on a keep-alive connection (404 from the application), then the
/// change is made, and the very next request — on the same connection and on a new one —
/// gets the file. Changes: files created, directories made several levels deep after the
/// server started, a directory moved in from outside the root, a rename, a symbolic link,
/// an index file appearing, a removed file coming back.
#[test]
fn files_appearing_after_requests_fell_through_are_served_at_once() {
    let d = root();
    let (_srv, addr) = server(d.path());
    let p = |rel: &str| d.path().join(rel);
    let mut keep = connect(addr);
    let ask = |s: &mut std::net::TcpStream, path: &str| -> (String, Vec<u8>) {
        write_all(s, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let (head, body) = read_response(s);
        (head.lines().next().unwrap_or("").to_string(), body)
    };
    let outside = std::env::temp_dir().join(format!("ringman-http-outside-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(outside.join("in")).unwrap();
    std::fs::write(outside.join("in/moved.txt"), "moved").unwrap();
    std::fs::create_dir(p("noindex")).unwrap();
    type Change<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, &str, Change)> = vec![
        ("/new.txt", "new", Box::new(|| std::fs::write(p("new.txt"), "new").unwrap())),
        ("/sub/late.txt", "late", Box::new(|| std::fs::write(p("sub/late.txt"), "late").unwrap())),
        (
            "/a/b/c/deep.txt",
            "deep",
            Box::new(|| {
                std::fs::create_dir_all(p("a/b/c")).unwrap();
                std::fs::write(p("a/b/c/deep.txt"), "deep").unwrap();
            }),
        ),
        ("/a/b/c/later.txt", "later", Box::new(|| std::fs::write(p("a/b/c/later.txt"), "later").unwrap())),
        ("/outside/in/moved.txt", "moved", Box::new(|| std::fs::rename(&outside, p("outside")).unwrap())),
        ("/outside/in/after.txt", "after", Box::new(|| std::fs::write(p("outside/in/after.txt"), "after").unwrap())),
        ("/renamed.txt", "new", Box::new(|| std::fs::rename(p("new.txt"), p("renamed.txt")).unwrap())),
        ("/link", "late", Box::new(|| std::os::unix::fs::symlink("sub/late.txt", p("link")).unwrap())),
        ("/noindex/", "index", Box::new(|| std::fs::write(p("noindex/index.html"), "index").unwrap())),
        ("/new.txt", "back", Box::new(|| std::fs::write(p("new.txt"), "back").unwrap())),
    ];
    for round in 0..3 {
        for (path, body, change) in &cases {
            if round > 0 {
                // Gone again (the next round makes it appear once more).
                if *path == "/outside/in/moved.txt" {
                    std::fs::rename(p("outside"), &outside).unwrap();
                } else {
                    let f = p(path.trim_start_matches('/'));
                    let _ = std::fs::remove_file(if path.ends_with('/') { f.join("index.html") } else { f });
                }
            }
            for _ in 0..3 {
                let (status, _) = ask(&mut keep, path);
                assert!(status.starts_with("HTTP/1.1 404"), "round {round} {path} before the change: {status}");
            }
            change();
            let (status, got) = ask(&mut keep, path);
            assert!(status.starts_with("HTTP/1.1 200"), "round {round} {path} right after the change: {status}");
            assert_eq!(got, body.as_bytes(), "round {round} {path}");
            let (status, _) = ask(&mut connect(addr), path);
            assert!(status.starts_with("HTTP/1.1 200"), "round {round} {path} on a new connection: {status}");
        }
    }
    let _ = std::fs::remove_dir_all(&outside);
}

/// Kept bodies of 8 KiB to 64 KiB go to the socket with `sendfile` when the connection is
/// idle, and what the socket does not take is queued from the kept bytes. On one keep-alive
/// connection: 30 KB files asked one after another, a range of one, a small file (below
/// `sendfile`'s range), and bursts of 120 requests for a 60 KB file from a client that
/// waits before reading (its socket fills mid-body, the rest is queued); curl fetches a
/// range of a 1 MB file (above the range) on a new connection meanwhile; a second client
/// vanishes in the middle of a 1 MB body. Every byte arrives as the file has it,
/// and the thread's `sendfile_bytes` counter shows the kernel took body bytes from the
/// files (so the test fails if the bodies only went the copying way).
#[test]
fn kept_bodies_go_out_with_sendfile_and_survive_slow_and_vanishing_readers() {
    let d = root();
    let mid: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let wide: Vec<u8> = (0..60_000u32).map(|i| (i * 11 % 239) as u8).collect();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    std::fs::write(d.path().join("mid.bin"), &mid).unwrap();
    std::fs::write(d.path().join("wide.bin"), &wide).unwrap();
    std::fs::write(d.path().join("big.bin"), &big).unwrap();
    let (srv, addr) = server(d.path());
    let taken = || srv.worker(0).stats()[0].sendfile_bytes.get();
    let mut s = connect(addr);
    // A small receive buffer: the server's socket fills sooner while this client lags.
    small_receive_buffer(&s, 32 * 1024);
    let ask = |s: &mut std::net::TcpStream, path: &str, extra: &str| {
        write_all(s, format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes());
    };
    for round in 0..10 {
        ask(&mut s, "/mid.bin", "");
        let (head, body) = read_response(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        assert!(body == mid, "round {round}: {} bytes, not the file", body.len());
    }
    assert!(taken() > 0, "no body bytes went out with sendfile");
    ask(&mut s, "/mid.bin", "Range: bytes=1000-25999\r\n");
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(body == mid[1000..26_000], "range: {} bytes, not the file's", body.len());
    ask(&mut s, "/sub/a.txt", "");
    assert_eq!(read_response(&mut s).1, b"abcdefghij");
    for round in 0..3 {
        let before = taken();
        // A burst, read late: the socket takes the first bodies whole, fills up during a
        // later one (`sendfile` takes part: the send buffer grows to 4 MiB at most), and the
        // rest of it and the bodies after it wait in the queue.
        let burst: String = (0..120).map(|_| "GET /wide.bin HTTP/1.1\r\nHost: x\r\n\r\n").collect();
        write_all(&mut s, burst.as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(100));
        for n in 0..120 {
            let (head, body) = read_response(&mut s);
            assert!(head.starts_with("HTTP/1.1 200"), "burst {round}.{n}: {head}");
            assert!(body == wide, "burst {round}.{n}: {} bytes, not the file", body.len());
        }
        assert!(taken() > before, "burst {round}: nothing went out with sendfile");
        let (head, body) = curl(&["-r", "500000-500099", &format!("http://{addr}/big.bin")]);
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert!(body == big[500_000..500_100], "curl's range");
    }
    // A reader that vanishes mid-body costs nobody else anything.
    let mut gone = connect(addr);
    ask(&mut gone, "/big.bin", "");
    let _ = read_exact(&mut gone, 1000);
    drop(gone);
    ask(&mut s, "/mid.bin", "");
    let (head, body) = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200") && body == mid, "after a vanished reader: {head}");
}

/// The open file a path names is remembered with its metadata (no open or `fstat` per
/// request), and watched itself: a write through a hard link outside the root — which no
/// watch on the tree's directories reports — is served at the next request, on the same
/// keep-alive connection.
#[test]
fn a_remembered_file_written_through_a_link_outside_the_root_is_served_new() {
    let d = root();
    let outside = tempdir::Dir::new();
    let original = outside.path().join("shared.txt");
    std::fs::write(&original, vec![b'a'; 20_000]).unwrap();
    std::fs::hard_link(&original, d.path().join("linked.txt")).unwrap();
    let (_srv, addr) = server(d.path());
    let mut s = connect(addr);
    let get = |s: &mut std::net::TcpStream| {
        write_all(s, b"GET /linked.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        read_response(s)
    };
    for round in 0..3 {
        let (head, body) = get(&mut s);
        assert!(head.starts_with("HTTP/1.1 200") && body == vec![b'a'; 20_000], "round {round}: {head}");
    }
    for (round, (byte, len)) in [(b'b', 20_000), (b'c', 5_000), (b'd', 70_000)].into_iter().enumerate() {
        std::fs::write(&original, vec![byte; len]).unwrap();
        let (head, body) = get(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "change {round}: {head}");
        assert!(body == vec![byte; len], "change {round}: {} bytes of the old content", body.len());
    }
}
