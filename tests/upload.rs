//! Form uploads through a real `http://` worker: curl `-F` uploads, spilling of large files
//! to temporary files, and malformed multipart bodies.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use common::*;
use ringman::http::respond;
use ringman::protocols::http::{FormData, Response, UploadConfig};
use ringman::{Running, Worker};

/// What the handler saw, sent back to the test.
#[derive(Debug)]
struct Seen {
    title: Option<String>,
    fields: usize,
    files: usize,
    small_name: String,
    small_type: Option<String>,
    small_in_memory: Option<Vec<u8>>,
    small_path: Option<PathBuf>,
    big_name: String,
    big_size: u64,
    big_in_memory: bool,
    big_path: Option<PathBuf>,
    /// The spilled file's bytes, read while the form was alive.
    big_on_disk: Vec<u8>,
    big_mode: u32,
    /// Whether the spilled file still existed after the form was dropped.
    big_exists_after_drop: bool,
}

/// A temporary directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("ringman-upload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().path()).collect()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An `http://` worker answering `/upload` with the form it collected (400 when the body
/// is not a valid form) and `/ping` with `pong`; reports uploads on `tx`.
fn server(spool: &Path, tx: mpsc::Sender<Seen>) -> (Running, SocketAddr) {
    let mut w = Worker::<()>::new("http://127.0.0.1:0").unwrap();
    w.count = 1;
    w.max_package_size = 8 << 20;
    let mut cfg = UploadConfig::default();
    cfg.tmp_dir = spool.to_path_buf();
    w.on_request(move |conn, req, _| {
        if req.path() == "/ping" {
            respond(conn, req, Response::new(200).body("pong"));
            return;
        }
        let form = match FormData::from_request(req, &cfg) {
            Ok(form) => form,
            Err(e) => {
                respond(conn, req, Response::new(400).body(format!("bad form: {e}")));
                return;
            }
        };
        let (Some(small), Some(big)) = (form.file("small"), form.file("big")) else {
            respond(conn, req, Response::new(422).body("missing files"));
            return;
        };
        let big_path = big.path().map(Path::to_path_buf);
        let (big_on_disk, big_mode) = match &big_path {
            Some(p) => {
                use std::os::unix::fs::PermissionsExt;
                (std::fs::read(p).unwrap_or_default(), std::fs::metadata(p).map_or(0, |m| m.permissions().mode()))
            }
            None => (Vec::new(), 0),
        };
        let mut seen = Seen {
            title: form.field("title").map(str::to_owned),
            fields: form.fields().len(),
            files: form.files().len(),
            small_name: small.file_name().to_owned(),
            small_type: small.content_type().map(str::to_owned),
            small_in_memory: small.bytes().map(<[u8]>::to_vec),
            small_path: small.path().map(Path::to_path_buf),
            big_name: big.file_name().to_owned(),
            big_size: big.size(),
            big_in_memory: big.bytes().is_some(),
            big_path: big_path.clone(),
            big_on_disk,
            big_mode,
            big_exists_after_drop: true,
        };
        drop(form);
        seen.big_exists_after_drop = big_path.as_deref().is_some_and(Path::exists);
        let _ = tx.send(seen);
        respond(conn, req, Response::new(200).body("stored"));
    });
    start(w)
}

/// About 1 MiB of varied bytes, with CR, LF and dashes in it.
fn big_content() -> Vec<u8> {
    let mut x: u32 = 12345;
    let mut v: Vec<u8> = (0..(1 << 20) + 4321)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    for i in (0..v.len() - 8).step_by(4099) {
        v[i..i + 8].copy_from_slice(b"\r\n------");
    }
    v
}

fn curl_upload(url: &str, args: &[String]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "-o", "-", "-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.split_at(text.len().saturating_sub(3));
    (code.to_owned(), body.to_owned())
}

#[test]
fn curl_uploads_spill_big_files_only() {
    let files = Dir::new("files");
    let spool = Dir::new("spool");
    let big = big_content();
    std::fs::write(files.0.join("big.bin"), &big).unwrap();
    std::fs::write(files.0.join("small.txt"), b"small file\r\n--contents").unwrap();
    let (tx, rx) = mpsc::channel();
    let (_srv, addr) = server(&spool.0, tx);

    let args = [
        "-F".to_owned(),
        "title=hello upload".to_owned(),
        "-F".to_owned(),
        format!("small=@{};type=text/plain", files.0.join("small.txt").display()),
        "-F".to_owned(),
        format!("big=@{}", files.0.join("big.bin").display()),
    ];
    let (code, body) = curl_upload(&format!("http://{addr}/upload"), &args);
    assert_eq!((code.as_str(), body.as_str()), ("200", "stored"));
    let seen = rx.recv_timeout(PATIENCE).expect("the handler reported");

    assert_eq!(seen.title.as_deref(), Some("hello upload"));
    assert_eq!((seen.fields, seen.files), (1, 2));
    assert_eq!(seen.small_name, "small.txt");
    assert_eq!(seen.small_type.as_deref(), Some("text/plain"));
    assert_eq!(seen.small_in_memory.as_deref(), Some(&b"small file\r\n--contents"[..]));
    assert!(seen.small_path.is_none(), "small file kept in memory");

    assert_eq!(seen.big_name, "big.bin");
    assert_eq!(seen.big_size, big.len() as u64);
    assert!(!seen.big_in_memory, "big file spilled");
    let path = seen.big_path.expect("big file has a temporary path");
    assert_eq!(path.parent(), Some(spool.0.as_path()), "spilled into the configured directory");
    assert!(path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ringman.upload.")));
    assert!(seen.big_on_disk == big, "spilled bytes differ from the uploaded file");
    assert_eq!(seen.big_mode & 0o777, 0o600);
    assert!(!seen.big_exists_after_drop, "temporary file removed when the form is dropped");
    assert!(spool.entries().is_empty(), "nothing left in the spool directory: {:?}", spool.entries());
}

/// Reads one response with a `Content-Length` body from a keep-alive connection.
fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read head"), 1, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .expect("Content-Length");
    (head, read_exact(s, len))
}

fn post(boundary: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[test]
fn malformed_multipart_gets_400_and_spares_other_connections() {
    let spool = Dir::new("bad-spool");
    let (tx, rx) = mpsc::channel();
    let (_srv, addr) = server(&spool.0, tx);

    // Another client, connected before and used after the bad requests.
    let mut other = connect(addr);
    write_all(&mut other, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(&mut other).1, b"pong");

    let mut bad = connect(addr);
    // A file part larger than the threshold without its closing delimiter: it was being
    // spilled when the body ended.
    let mut truncated = b"--XX\r\nContent-Disposition: form-data; name=\"big\"; filename=\"a\"\r\n\r\n".to_vec();
    truncated.extend(std::iter::repeat_n(b'z', 200_000));
    let no_crlf = b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XXoops\r\n".to_vec();
    let bad_headers = b"--XX\r\nnot a header line\r\n\r\n1\r\n--XX--\r\n".to_vec();
    for body in [truncated, no_crlf, bad_headers] {
        write_all(&mut bad, &post("XX", &body));
        let (head, body) = read_response(&mut bad);
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert!(String::from_utf8_lossy(&body).starts_with("bad form: malformed multipart body"), "{body:?}");
    }
    let mut not_a_form = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n".to_vec();
    not_a_form.extend_from_slice(b"Content-Length: 2\r\nConnection: close\r\n\r\nhi");
    write_all(&mut bad, &not_a_form);
    let resp = String::from_utf8_lossy(&read_to_eof(&mut bad)).into_owned();
    assert!(resp.starts_with("HTTP/1.1 400") && resp.ends_with("bad form: not a form content type"), "{resp}");
    assert!(spool.entries().is_empty(), "partial spill removed: {:?}", spool.entries());
    assert!(rx.try_recv().is_err(), "no malformed body reached the application as a form");

    // The other connection is still served, on the same socket.
    write_all(&mut other, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(read_response(&mut other).1, b"pong");
}
