//! HTTP glue: `on_request`, `respond`, and a static-file `WebServer` that streams.
//!
//! Requests are framed and parsed by `ringman_protocols::http` (zero-copy); this module only
//! connects them to connections: it adds the cached `Date` header, honours keep-alive
//! (`Connection: close`, HTTP/1.0), and streams file bodies through the send buffer with
//! back-pressure (the next piece is read when the buffer drains).

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ringman_protocols::http::{self as h, DateCache, RangeOutcome, Request, Response, StaticResponse};

use crate::connection::Connection;
use crate::reactor::SendStatus;
use crate::worker::Worker;

thread_local! {
    static DATE: RefCell<DateCache> = RefCell::new(DateCache::default());
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The current `Date` value, formatted once per second per thread. On a ring thread the
/// clock is the one read once per loop turn, so answering costs no clock read.
pub fn date_now() -> [u8; 29] {
    let now = crate::reactor::with_core(|c| c.wall).unwrap_or_else(SystemTime::now);
    DATE.with(|d| *d.borrow_mut().get(now))
}

/// Sends `resp` as the answer to `req` on `conn`: adds `Date`, answers `HEAD` without a
/// body, and closes after the flush when the request does not keep the connection alive.
pub fn respond(conn: &Connection, req: &Request<'_>, resp: Response<'_>) {
    let keep = req.keep_alive();
    let resp = resp.date(&date_now());
    let resp = if keep { resp } else { resp.set_header("Connection", "close") };
    OUT.with(|o| {
        let mut out = o.borrow_mut();
        out.clear();
        if req.method() == "HEAD" {
            resp.write_head_to(&mut out);
        } else {
            resp.write_to(&mut out);
        }
        send_in_step(conn, &out[..]);
    });
    if !keep {
        conn.close(None);
    }
}

/// Sends one response's bytes. Should the send buffer refuse them (`on_error` reports
/// SEND_FAIL), the connection is closed after what it already holds: a pipelined response
/// must not vanish and leave later answers out of step with their requests.
fn send_in_step(conn: &Connection, bytes: &[u8]) -> bool {
    if conn.send_raw(bytes) == SendStatus::Failed {
        conn.close(None);
        return false;
    }
    true
}

/// Sends a pre-encoded response (only its `Date` is refreshed): the fast path for small
/// fixed answers. Keep-alive is handled as in [`respond`]; a request that closes gets the
/// bytes followed by a close (the pre-encoded head cannot carry `Connection: close`).
pub fn respond_static(conn: &Connection, req: &Request<'_>, resp: &mut StaticResponse) {
    resp.set_date(&date_now());
    send_in_step(conn, resp.as_bytes());
    if !req.keep_alive() {
        conn.close(None);
    }
}

impl<S: Default + 'static> Worker<S> {
    /// Handles each HTTP request (`http://` workers): `f` gets the parsed request and
    /// answers with [`respond`]. Requests arrive in order; pipelined requests are answered
    /// in order as long as each is answered before `f` returns.
    pub fn on_request(
        &mut self,
        f: impl for<'r> Fn(&Connection, &Request<'r>, &mut S) + Send + Sync + 'static,
    ) -> &mut Self {
        // The built-in `http` protocol's decoder validated each request head while framing
        // it: its messages are read back without a second parse. Any other protocol gets the
        // full parse. A worker's protocol never changes: look it up on the first request.
        let from_http_decoder = std::sync::OnceLock::new();
        self.on_message(move |conn, msg, state| {
            let decoded = match from_http_decoder.get() {
                Some(&d) => d,
                None => conn
                    .protocol_object()
                    .is_some_and(|p| *from_http_decoder.get_or_init(|| p.as_any().is_some_and(|a| a.is::<h::Http>()))),
            };
            let parsed = if decoded { Request::from_decoded(msg.data) } else { Request::parse(msg.data) };
            match parsed {
                Ok(req) => f(conn, &req, state),
                Err(e) => {
                    let mut out = Vec::new();
                    h::write_error_response(e.status(), &mut out);
                    conn.end(Some(&out));
                }
            }
        })
    }
}

/// Serves files under a directory: index file, `Range` (206/416) with `If-Range`, `ETag`,
/// conditional requests (`If-None-Match`, `If-Modified-Since` ⇒ 304; `If-Match`,
/// `If-Unmodified-Since` ⇒ 412),
/// MIME type by extension, no directory listing. Paths with `..`, encoded dot segments, NUL
/// bytes or symlinks leading out of the root are refused (404). Bodies are streamed in
/// 64 KiB pieces as the send buffer drains.
#[derive(Clone)]
pub struct WebServer {
    root: Arc<PathBuf>,
    index: &'static str,
}

/// A file being streamed to a connection (kept in the connection's streaming slot, so the
/// application's context is left alone).
struct Streaming {
    file: File,
    remaining: u64,
    /// Close once the body is queued (the request did not keep the connection alive).
    close_after: bool,
}

const PIECE: usize = 64 * 1024;

impl WebServer {
    /// Serves `root` (canonicalized now; it must exist).
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<WebServer> {
        Ok(WebServer { root: Arc::new(root.as_ref().canonicalize()?), index: "index.html" })
    }

    /// Answers `req` from the directory. Returns false (sending nothing) when no file
    /// matches, so the caller can answer otherwise (404, or an application route).
    pub fn serve(&self, conn: &Connection, req: &Request<'_>) -> bool {
        if req.method() != "GET" && req.method() != "HEAD" {
            return false;
        }
        let Ok(rel) = h::resolve_path(req.path()) else { return false };
        let mut path = self.root.join(rel);
        if path.is_dir() {
            path = path.join(self.index);
        }
        let Ok(canon) = path.canonicalize() else { return false };
        if !h::is_within(&self.root, &canon) {
            return false;
        }
        send_file(conn, req, &canon)
    }

    /// Installs this server on an `http://` worker: files first, then `fallback` for
    /// requests no file answers. Also hooks `on_buffer_drain` to continue file bodies.
    pub fn install<S: Default + 'static>(
        self,
        worker: &mut Worker<S>,
        fallback: impl for<'r> Fn(&Connection, &Request<'r>, &mut S) + Send + Sync + 'static,
    ) {
        worker.on_request(move |conn, req, state| {
            if !self.serve(conn, req) {
                fallback(conn, req, state);
            }
        });
        worker.on_buffer_drain(|conn, _| continue_file(conn));
    }
}

/// Answers `req` with the file at `path` (Workerman's `Response::withFile`): `Range` (206 /
/// 416, GET only) with `If-Range`, a strong `ETag` (size, inode, nanosecond modification
/// time), `Last-Modified`, the preconditions of RFC 9110 §13 (`If-Match` and
/// `If-Unmodified-Since` ⇒ 412; `If-None-Match`, which takes precedence over
/// `If-Modified-Since` ⇒ 304 carrying `ETag` and `Last-Modified`), MIME type by extension,
/// `HEAD` without a body; the body streams in 64 KiB pieces as the send buffer drains. Returns false,
/// sending nothing, when `path` is not a readable regular file. `path` is used as given:
/// resolve untrusted names with [`WebServer`] (or `resolve_path` + `is_within`) first.
///
/// The worker must continue the stream from `on_buffer_drain` by calling
/// [`continue_file`] (as [`WebServer::install`] does) for bodies larger than one piece.
///
/// ```no_run
/// use ringman_engine::http::{continue_file, send_file, respond};
/// use ringman_protocols::http::Response;
/// let mut w = ringman_engine::Worker::<()>::new("http://127.0.0.1:8080").unwrap();
/// w.on_request(|conn, req, _| {
///     if req.path() == "/report" && send_file(conn, req, "/var/lib/app/report.pdf".as_ref()) {
///         return;
///     }
///     respond(conn, req, Response::new(404).body("Not Found"));
/// });
/// w.on_buffer_drain(|conn, _| continue_file(conn));
/// ```
pub fn send_file(conn: &Connection, req: &Request<'_>, path: &Path) -> bool {
    let Ok(mut file) = File::open(path) else { return false };
    let Ok(meta) = file.metadata() else { return false };
    if !meta.is_file() {
        return false;
    }
    let len = meta.len();
    let modified = meta.modified().ok();
    let last_modified = modified.map(h::http_date);
    let etag = entity_tag(&meta);
    let validators = |status: u16| {
        let mut r = Response::new(status).header("ETag", etag.clone());
        if let Some(lm) = &last_modified {
            r = r.header("Last-Modified", std::str::from_utf8(lm).unwrap_or(""));
        }
        r
    };
    match preconditions(req, etag.as_bytes(), modified) {
        Precondition::Proceed => {}
        Precondition::NotModified => {
            respond(conn, req, validators(304));
            return true;
        }
        Precondition::Failed => {
            respond(conn, req, validators(412));
            return true;
        }
    }
    // RFC 9110 §14.2: ranges are defined for GET only; §13.1.5: If-Range makes a Range
    // conditional on the representation being the one the client holds part of.
    let range = req
        .header("range")
        .filter(|_| req.method() == "GET")
        .filter(|_| req.header("if-range").is_none_or(|v| if_range_holds(v, etag.as_bytes(), modified)));
    let (status, start, count, content_range) = match range.map(|r| h::parse_range(r, len)) {
        Some(RangeOutcome::Partial(r)) => (206, r.start, r.len(), Some(r.content_range(len))),
        Some(RangeOutcome::Unsatisfiable) => {
            let resp = Response::new(416).header("Content-Range", h::ByteRange::unsatisfied(len));
            respond(conn, req, resp);
            return true;
        }
        _ => (200, 0, len, None),
    };
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", h::reason_phrase(status)).as_bytes());
    head.extend_from_slice(b"Date: ");
    head.extend_from_slice(&date_now());
    head.extend_from_slice(format!("\r\nContent-Type: {}\r\n", h::mime_for_path(&path.to_string_lossy())).as_bytes());
    head.extend_from_slice(format!("Content-Length: {count}\r\nAccept-Ranges: bytes\r\nETag: {etag}\r\n").as_bytes());
    if let Some(lm) = &last_modified {
        head.extend_from_slice(b"Last-Modified: ");
        head.extend_from_slice(lm);
        head.extend_from_slice(b"\r\n");
    }
    if let Some(cr) = content_range {
        head.extend_from_slice(format!("Content-Range: {cr}\r\n").as_bytes());
    }
    if !req.keep_alive() {
        head.extend_from_slice(b"Connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    if !send_in_step(conn, &head) {
        return true;
    }
    if req.method() == "HEAD" || count == 0 || file.seek(SeekFrom::Start(start)).is_err() {
        if !req.keep_alive() {
            conn.close(None);
        }
        return true;
    }
    conn.set_streaming(Some(Streaming { file, remaining: count, close_after: !req.keep_alive() }));
    // Pipelined requests (and their `100 Continue`) wait until the body is out, so nothing
    // is written into the middle of it.
    conn.pause_recv();
    pump(conn);
    true
}

/// The strong entity tag of a file: size, inode and modification time in nanoseconds, so it
/// changes whenever the file does, even twice within one second (where `Last-Modified`
/// cannot tell), and when a file is replaced by another (a new inode).
fn entity_tag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let nanos = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("\"{:x}-{:x}-{:x}\"", meta.len(), meta.ino(), nanos)
}

/// The outcome of a request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precondition {
    Proceed,
    /// 304: the client's copy is current (GET and HEAD).
    NotModified,
    /// 412: a precondition the client set does not hold.
    Failed,
}

/// Seconds since the epoch of a modification time (`None` before 1970).
fn unix_secs(t: SystemTime) -> Option<u64> {
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Evaluates the preconditions in the order of RFC 9110 §13.2.2: `If-Match`, else
/// `If-Unmodified-Since`; then `If-None-Match`, else (GET and HEAD only)
/// `If-Modified-Since`. A date that does not parse is ignored, as the RFC requires.
fn preconditions(req: &Request<'_>, etag: &[u8], modified: Option<SystemTime>) -> Precondition {
    use h::EntityTagMatch::{Strong, Weak};
    let mtime = modified.and_then(unix_secs);
    let get_or_head = matches!(req.method(), "GET" | "HEAD");
    let mut if_match = req.header_all("if-match").peekable();
    if if_match.peek().is_some() {
        if !if_match.any(|v| h::entity_tags_match(v, etag, Strong)) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(mtime)) = (req.header("if-unmodified-since").and_then(h::parse_http_date), mtime) {
        if mtime > since {
            return Precondition::Failed;
        }
    }
    let mut if_none_match = req.header_all("if-none-match").peekable();
    if if_none_match.peek().is_some() {
        // If-None-Match takes precedence: If-Modified-Since is then ignored (§13.1.3).
        if if_none_match.any(|v| h::entity_tags_match(v, etag, Weak)) {
            return if get_or_head { Precondition::NotModified } else { Precondition::Failed };
        }
    } else if get_or_head {
        if let (Some(since), Some(mtime)) = (req.header("if-modified-since").and_then(h::parse_http_date), mtime) {
            if mtime <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// Whether an `If-Range` value names the current representation (RFC 9110 §13.1.5): an
/// entity tag compared strongly, or a date equal to `Last-Modified` that is itself strong
/// (the file was last modified at least a second before now, §8.8.2.2).
fn if_range_holds(value: &[u8], etag: &[u8], modified: Option<SystemTime>) -> bool {
    let value = value.trim_ascii();
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return value.starts_with(b"\"") && h::entity_tags_match(value, etag, h::EntityTagMatch::Strong);
    }
    let (Some(date), Some(mtime)) = (h::parse_http_date(value), modified.and_then(unix_secs)) else { return false };
    let now = unix_secs(SystemTime::now()).unwrap_or(0);
    date == mtime && mtime < now
}

/// Continues a body started by [`send_file`]; call it from `on_buffer_drain`. Does nothing
/// on a connection that is not streaming a file.
pub fn continue_file(conn: &Connection) {
    pump(conn);
}

/// Queues the next pieces of a streaming file until the send buffer holds about a piece.
fn pump(conn: &Connection) {
    let mut buf = vec![0u8; PIECE];
    loop {
        let step = conn.with_streaming(|s: &mut Streaming| {
            if s.remaining == 0 {
                return Err(s.close_after);
            }
            let want = (s.remaining as usize).min(PIECE);
            match s.file.read(&mut buf[..want]) {
                Ok(n) if n > 0 => {
                    s.remaining -= n as u64;
                    Ok(n)
                }
                // The file shrank or failed: the promised length cannot be kept.
                _ => Err(true),
            }
        });
        match step {
            Some(Ok(n)) => {
                if !send_in_step(conn, &buf[..n]) {
                    conn.set_streaming::<Streaming>(None);
                    return;
                }
                if conn.send_queue_len() >= PIECE {
                    return;
                }
            }
            Some(Err(close)) => {
                conn.set_streaming::<Streaming>(None);
                if close {
                    conn.close(None);
                } else {
                    conn.resume_recv();
                }
                return;
            }
            None => return,
        }
    }
}
