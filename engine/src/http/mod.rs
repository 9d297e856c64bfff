//! HTTP glue: `on_request`, `respond`, and a static-file `WebServer` that streams.
//!
//! Requests are framed and parsed by `ringman_protocols::http` (zero-copy); this module only
//! connects them to connections: it adds the cached `Date` header, honours keep-alive
//! (`Connection: close`, HTTP/1.0), and streams file bodies through the send buffer with
//! back-pressure (the next piece is read when the buffer drains).

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use ringman_protocols::http::{self as h, DateCache, RangeOutcome, Request, Response, StaticResponse};

use crate::connection::Connection;
use crate::reactor::SendStatus;
use crate::sendfile::FileBody;
use crate::worker::Worker;

mod lookups;

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
/// bytes or symbolic links leading out of the root are refused (404).
///
/// A path is looked up with `openat2` beneath the root (Linux 5.6; the kernel refuses any
/// resolution that leaves the root). Absolute symbolic links are refused even when they
/// point inside the root (relative ones inside it are followed). Bodies of files up to
/// 1 MiB are kept per ring thread ([`send_file`]) and sent from there without a copy (of
/// 8 KiB to 64 KiB, with `sendfile` when the connection is idle); larger ones stream in
/// 64 KiB pieces as the send buffer drains.
///
/// Lookups are remembered per ring thread: a path no file answers (missing, not a regular
/// file, unreadable, refused; 4,096 paths at most), so requests that fall through to the
/// application skip the lookup, and the open file a path names with its metadata (512 at
/// most), so a request for it costs no open, `fstat` or close. An inotify watch on every
/// directory under the root forgets them all at the first change of a directory entry in
/// the tree, one on each remembered file forgets the paths that named it at the first write
/// or attribute change of that file (through any name), and a change is seen before any
/// request sent after it is answered. Changes the kernel does not report through inotify —
/// made on a network filesystem by another host, in a filesystem mounted under the root
/// later, or through a shared memory mapping of a file — are not seen: turn this off for
/// such roots ([`WebServer::negative_cache`]).
#[derive(Clone)]
pub struct WebServer {
    root: Arc<PathBuf>,
    /// The root as a directory handle for `openat2` lookups; `None` on a kernel without
    /// `openat2`, where lookups resolve the path with `realpath` and compare.
    root_fd: Option<Arc<OwnedFd>>,
    index: &'static str,
    /// Remember lookups (`lookups`).
    negative_cache: bool,
}

/// Why a lookup found no file to serve.
enum Miss {
    /// Only a change of the tree can alter the answer (no such entry, not a regular file,
    /// no permission, a link refused): remembered.
    Absent,
    /// A passing failure (out of descriptors or memory): tried again next time.
    Failed,
}

impl Miss {
    fn of(e: &std::io::Error) -> Miss {
        match e.raw_os_error() {
            Some(
                libc::ENOENT
                | libc::ENOTDIR
                | libc::EACCES
                | libc::EPERM
                | libc::ELOOP
                | libc::EXDEV
                | libc::ENAMETOOLONG
                | libc::ENXIO
                | libc::ENODEV,
            ) => Miss::Absent,
            _ => Miss::Failed,
        }
    }
}

/// A body being sent to a connection (kept in the connection's streaming slot, so the
/// application's context is left alone).
struct Streaming {
    /// The file the rest comes from (`None`: the whole body is queued, the connection waits
    /// for it to drain before it reads the next request).
    file: Option<Rc<File>>,
    /// Where the rest begins in the file (reads are positional: the file may be shared).
    pos: u64,
    remaining: u64,
    /// Close once the body is queued (the request did not keep the connection alive).
    close_after: bool,
}

const PIECE: usize = 64 * 1024;

impl WebServer {
    /// Serves `root` (canonicalized now; it must exist).
    pub fn new(root: impl AsRef<Path>) -> std::io::Result<WebServer> {
        let root = root.as_ref().canonicalize()?;
        let dir = crate::sys::open_dir(&root)?;
        let root_fd = match crate::sys::open_beneath(dir.as_fd(), c".") {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => None,
            _ => Some(Arc::new(dir)),
        };
        Ok(WebServer { root: Arc::new(root), root_fd, index: "index.html", negative_cache: true })
    }

    /// Whether lookups are remembered — the paths no file answers and the open files other
    /// paths name (default true; see the type's docs). Off, every request looks its path up.
    pub fn negative_cache(mut self, on: bool) -> WebServer {
        self.negative_cache = on;
        self
    }

    /// Answers `req` from the directory. Returns false (sending nothing) when no file
    /// matches, so the caller can answer otherwise (404, or an application route).
    pub fn serve(&self, conn: &Connection, req: &Request<'_>) -> bool {
        if req.method() != "GET" && req.method() != "HEAD" {
            return false;
        }
        // (Remembered by the request's path as it came: the resolution below is a function
        // of it, so what the path named it names until the tree changes.)
        let remember = self.negative_cache && self.root_fd.is_some();
        let path = req.path().as_bytes();
        if remember {
            match lookups::known(&self.root, path) {
                lookups::Known::Missing => return false,
                // The same file, unchanged since its metadata was read (its own watch
                // would have said otherwise).
                lookups::Known::Found(f) => return send_opened(conn, req, f.file, &f.meta, f.mime),
                lookups::Known::Unknown => {}
            }
        }
        let Ok(rel) = h::resolve_path(req.path()) else { return false };
        match self.open(rel) {
            Ok((file, meta, name)) => {
                let mime = h::mime_for_path(name.to_str().unwrap_or(""));
                let found = lookups::Found { file: Rc::new(file), meta, mime };
                if remember {
                    lookups::record_found(&self.root, path, &found);
                }
                send_opened(conn, req, found.file, &found.meta, found.mime)
            }
            Err(Miss::Absent) if remember => {
                lookups::record_miss(&self.root, path);
                false
            }
            Err(_) => false,
        }
    }

    /// The regular file `rel` names under the root (a directory's index file), with its
    /// metadata and the name its MIME type comes from; else why not.
    fn open(&self, rel: PathBuf) -> Result<(File, std::fs::Metadata, PathBuf), Miss> {
        let Some(dir) = &self.root_fd else { return self.open_resolved(rel).ok_or(Miss::Failed) };
        let open = |rel: &Path| -> Result<(File, std::fs::Metadata), Miss> {
            use std::os::unix::ffi::OsStrExt;
            let name = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
            let c = std::ffi::CString::new(name.as_os_str().as_bytes()).map_err(|_| Miss::Absent)?;
            let file = File::from(crate::sys::open_beneath(dir.as_fd(), &c).map_err(|e| Miss::of(&e))?);
            let meta = file.metadata().map_err(|_| Miss::Failed)?;
            Ok((file, meta))
        };
        let (mut file, mut meta) = open(&rel)?;
        let mut name = rel;
        if meta.is_dir() {
            name.push(self.index);
            (file, meta) = open(&name)?;
        }
        if meta.is_file() {
            Ok((file, meta, name))
        } else {
            Err(Miss::Absent)
        }
    }

    /// [`WebServer::open`] without `openat2`: resolves the path and checks it stays under
    /// the root.
    fn open_resolved(&self, rel: PathBuf) -> Option<(File, std::fs::Metadata, PathBuf)> {
        let mut path = self.root.join(rel);
        if path.is_dir() {
            path = path.join(self.index);
        }
        let canon = path.canonicalize().ok()?;
        if !h::is_within(&self.root, &canon) {
            return None;
        }
        let file = open_nonblocking(&canon).ok()?;
        let meta = file.metadata().ok()?;
        meta.is_file().then_some((file, meta, canon))
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
/// `HEAD` without a body. Returns false, sending nothing, when `path` is not a readable
/// regular file. `path` is used as given: resolve untrusted names with [`WebServer`] (or
/// `resolve_path` + `is_within`) first.
///
/// Bodies of files up to 1 MiB are read once and kept per ring thread (32 MiB at most,
/// oldest dropped first), and sent from there without a copy; a kept body is used only
/// while the file's device, inode, size, modification and change times are those it was
/// read with (checked with one `fstat` of the freshly opened file per request, the same
/// facts the `ETag` rests on), so a file rewritten or replaced is read again. Larger
/// files stream in 64 KiB pieces as the send buffer drains. Either way the connection
/// reads its next request only once a large body has drained.
///
/// The worker must call [`continue_file`] from `on_buffer_drain` (as
/// [`WebServer::install`] does), which continues streamed bodies and lets the connection
/// read on.
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
    let Ok(file) = open_nonblocking(path) else { return false };
    let Ok(meta) = file.metadata() else { return false };
    if !meta.is_file() {
        return false;
    }
    send_opened(conn, req, Rc::new(file), &meta, h::mime_for_path(path.to_str().unwrap_or("")))
}

/// Opens `path` for reading without blocking (a FIFO would otherwise wait for a writer,
/// stalling the ring; reads of regular files ignore the flag).
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

/// [`send_file`] of an open regular file whose MIME type (by its name) is `mime`.
fn send_opened(conn: &Connection, req: &Request<'_>, file: Rc<File>, meta: &std::fs::Metadata, mime: &str) -> bool {
    use std::io::Write as _;
    let len = meta.len();
    let modified = meta.modified().ok();
    // A kept file carries its validators, formatted once per version of the file.
    let kept = kept_file(&file, meta);
    let (etag, last_modified) = match &kept {
        Some(k) => (k.etag.clone(), k.last_modified),
        None => (Rc::from(entity_tag(meta)), modified.map(h::http_date)),
    };
    let validators = |status: u16| {
        let mut r = Response::new(status).header("ETag", etag.to_string());
        if let Some(lm) = &last_modified {
            r = r.header("Last-Modified", std::str::from_utf8(lm).unwrap_or(""));
        }
        r
    };
    // (Most requests carry none of the fields below: one pass over the head says so.)
    let conditional = asks_conditionally(req);
    let verdict = if conditional { preconditions(req, etag.as_bytes(), modified) } else { Precondition::Proceed };
    match verdict {
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
    let range = (conditional && req.method() == "GET")
        .then(|| req.header("range"))
        .flatten()
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
    let keep = req.keep_alive();
    let bodiless = req.method() == "HEAD" || count == 0;
    let kept = kept.filter(|_| !bodiless);
    let sent = OUT.with(|o| {
        let mut head = o.borrow_mut();
        head.clear();
        // (Writes into a Vec cannot fail.)
        if status == 200 {
            head.extend_from_slice(b"HTTP/1.1 200 OK\r\nDate: ");
        } else {
            let _ = write!(head, "HTTP/1.1 {status} {}\r\nDate: ", h::reason_phrase(status));
        }
        head.extend_from_slice(&date_now());
        head.extend_from_slice(b"\r\nContent-Type: ");
        head.extend_from_slice(mime.as_bytes());
        match &kept {
            // The whole of a kept file: its fields were formatted once.
            Some(k) if count == len => head.extend_from_slice(&k.fields),
            _ => file_fields(&mut head, count, &etag, last_modified.as_ref()),
        }
        if let Some(cr) = content_range {
            let _ = write!(head, "Content-Range: {cr}\r\n");
        }
        if !keep {
            head.extend_from_slice(b"Connection: close\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let Some(kept) = &kept else { return send_in_step(conn, &head) };
        // A kept body leaves with its head, as one send: written through (`sendfile`, the
        // file's pages go to the socket by reference) when the connection is idle, else
        // queued together (one SENDMSG, the body by reference to the kept bytes).
        let bytes = kept.body.slice(start as usize..(start + count) as usize);
        let status = conn.send_head_body(&head, &FileBody { bytes, file: file.as_fd(), offset: start });
        // (A refused response closes the connection: see `send_in_step`.)
        if status == SendStatus::Failed {
            conn.close(None);
            return false;
        }
        true
    });
    if !sent {
        return true;
    }
    if bodiless {
        if !keep {
            conn.close(None);
        }
        return true;
    }
    if kept.is_some() {
        if !keep {
            conn.close(None);
        } else if conn.send_queue_len() >= PIECE {
            // Pipelined requests wait until the body is out (see below).
            conn.set_streaming(Some(Streaming { file: None, pos: 0, remaining: 0, close_after: false }));
            conn.pause_recv();
        }
        return true;
    }
    conn.set_streaming(Some(Streaming { file: Some(file), pos: start, remaining: count, close_after: !keep }));
    // Pipelined requests (and their `100 Continue`) wait until the body is out, so nothing
    // is written into the middle of it.
    conn.pause_recv();
    pump(conn);
    true
}

/// The largest file whose body is kept ([`send_file`]).
const KEEP_FILE_MAX: u64 = 1 << 20;
/// The most body bytes one thread keeps.
const KEEP_TOTAL: usize = 32 << 20;

/// What a kept body was read from: device, inode, size, modification and change times.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A kept file: its body and its validators, as of one version of the file.
struct Kept {
    body: Bytes,
    etag: Rc<str>,
    last_modified: Option<[u8; 29]>,
    /// The head's fields after `Content-Type` for the whole body ([`file_fields`]).
    fields: Box<[u8]>,
}

/// The head's fields of a file answer after `Content-Type`: `Content-Length` (`count`),
/// `Accept-Ranges`, `ETag` and `Last-Modified`, each line after a CRLF and the last one's
/// CRLF included.
fn file_fields(out: &mut Vec<u8>, count: u64, etag: &str, last_modified: Option<&[u8; 29]>) {
    use std::io::Write as _;
    // (Writes into a Vec cannot fail.)
    let _ = write!(out, "\r\nContent-Length: {count}\r\nAccept-Ranges: bytes\r\nETag: ");
    out.extend_from_slice(etag.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(lm) = last_modified {
        out.extend_from_slice(b"Last-Modified: ");
        out.extend_from_slice(lm);
        out.extend_from_slice(b"\r\n");
    }
}

/// The files one thread keeps, by device and inode, dropped oldest first.
#[derive(Default)]
struct KeptBodies {
    map: std::collections::HashMap<(u64, u64), (FileIdentity, Rc<Kept>)>,
    order: std::collections::VecDeque<(u64, u64)>,
    bytes: usize,
}

thread_local! {
    static KEPT: RefCell<KeptBodies> = RefCell::new(KeptBodies::default());
}

/// The open file `file` (whose metadata is `meta`) from this thread's kept files, read and
/// kept now if it is small enough and was not kept as it is now. `None` for a large file,
/// or one that changed while it was read.
fn kept_file(file: &File, meta: &std::fs::Metadata) -> Option<Rc<Kept>> {
    if meta.len() > KEEP_FILE_MAX {
        return None;
    }
    let id = FileIdentity::of(meta);
    let key = (id.dev, id.ino);
    let hit = KEPT.with(|k| k.borrow().map.get(&key).filter(|(was, _)| *was == id).map(|(_, b)| b.clone()));
    if hit.is_some() {
        return hit;
    }
    // One byte more than the size, from the start (positional: the file may be shared), to
    // see a file that grew.
    let mut body = vec![0u8; id.size as usize + 1];
    let n = read_at_most(file, &mut body, 0).ok()?;
    body.truncate(n);
    // Read whole and unchanged meanwhile, or not kept (the streaming path serves it).
    let now = FileIdentity::of(&file.metadata().ok()?);
    if body.len() as u64 != id.size || now != id {
        return None;
    }
    let (etag, last_modified) = (entity_tag(meta), meta.modified().ok().map(h::http_date));
    let mut fields = Vec::new();
    file_fields(&mut fields, body.len() as u64, &etag, last_modified.as_ref());
    let kept = Rc::new(Kept {
        body: Bytes::from(body),
        etag: Rc::from(etag),
        last_modified,
        fields: fields.into_boxed_slice(),
    });
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if let Some((_, old)) = k.map.insert(key, (id, kept.clone())) {
            k.bytes -= old.body.len();
            k.order.retain(|x| *x != key);
        }
        k.bytes += kept.body.len();
        k.order.push_back(key);
        while k.bytes > KEEP_TOTAL {
            let Some(oldest) = k.order.pop_front() else { break };
            if let Some((_, b)) = k.map.remove(&oldest) {
                k.bytes -= b.body.len();
            }
        }
    });
    Some(kept)
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
/// Whether `req` carries a field that can change a file's answer: `Range` or an `If-`
/// field (`If-Match`, `If-None-Match`, `If-Modified-Since`, `If-Unmodified-Since`,
/// `If-Range`). One pass over the head; without any, the answer is the whole file.
fn asks_conditionally(req: &Request<'_>) -> bool {
    req.headers().any(|(name, _)| {
        let n = name.as_bytes();
        n.len() >= 3 && n[..3].eq_ignore_ascii_case(b"if-") || n.eq_ignore_ascii_case(b"range")
    })
}

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

/// Reads from `file` at `pos` until `buf` is full or the file ends; the bytes read.
fn read_at_most(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Continues a body started by [`send_file`]; call it from `on_buffer_drain`. Does nothing
/// on a connection that is not streaming a file.
pub fn continue_file(conn: &Connection) {
    pump(conn);
}

/// Queues the next pieces of a streaming file until the send buffer holds about a piece;
/// once a body is all queued and drained, lets the connection read on.
fn pump(conn: &Connection) {
    loop {
        let step = conn.with_streaming(|s: &mut Streaming| {
            let Some(file) = s.file.as_mut().filter(|_| s.remaining > 0) else {
                return Err(s.close_after);
            };
            let want = (s.remaining as usize).min(PIECE);
            let mut piece = vec![0u8; want];
            match read_at_most(file, &mut piece, s.pos) {
                Ok(n) if n > 0 => {
                    piece.truncate(n);
                    s.pos += n as u64;
                    s.remaining -= n as u64;
                    Ok(Bytes::from(piece))
                }
                // The file shrank or failed: the promised length cannot be kept.
                _ => Err(true),
            }
        });
        match step {
            Some(Ok(piece)) => {
                if conn.send_bytes_raw(piece) == SendStatus::Failed {
                    conn.close(None);
                    conn.set_streaming::<Streaming>(None);
                    return;
                }
                if conn.send_queue_len() >= PIECE {
                    return;
                }
            }
            Some(Err(close)) => {
                if close {
                    conn.set_streaming::<Streaming>(None);
                    conn.close(None);
                } else if conn.send_queue_len() < PIECE {
                    // (A large body queued whole waits for the drain that brings it here.)
                    conn.set_streaming::<Streaming>(None);
                    conn.resume_recv();
                }
                return;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Range` and every `If-` field, in any case, ask for the conditional path; other
    /// fields (one that merely contains "if" or "range") do not.
    #[test]
    fn conditional_fields_are_found_in_one_pass() {
        let asks = |fields: &str| {
            let head = format!("GET /a HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
            asks_conditionally(&Request::parse(head.as_bytes()).unwrap())
        };
        assert!(!asks(""));
        assert!(!asks("X-If-Match: 1\r\nRanges: 2\r\nAccept-Ranges: bytes\r\nIf: 3\r\n"));
        for f in [
            "Range: bytes=0-1",
            "range: bytes=0-1",
            "If-None-Match: \"x\"",
            "IF-MATCH: *",
            "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT",
            "if-unmodified-since: Thu, 01 Jan 1970 00:00:00 GMT",
            "If-Range: \"x\"",
        ] {
            assert!(asks(&format!("Accept: */*\r\n{f}\r\n")), "{f}");
        }
    }
}
