//! The session flow against the memory and file handlers, off any ring (the file handler
//! answers a non-ring caller directly from its helper thread). The Redis handler and the
//! ring paths are tested end to end in the workspace's `tests/session.rs`.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use ringman_protocols::http::Response;

use super::*;

/// Runs a future to completion on this thread, parking between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn set_cookie(resp: &Response<'_>) -> Option<String> {
    resp.get_header("Set-Cookie").map(str::to_owned)
}

/// The id a `Set-Cookie` value hands out.
fn cookie_id(v: &str) -> String {
    v.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

/// One request: load with `cookie`, apply `f`, save; the response's Set-Cookie.
fn request(sessions: &Sessions, cookie: Option<&str>, f: impl FnOnce(&mut Session)) -> (Session, Option<String>) {
    block_on(async {
        let mut s = sessions.load(cookie).await.unwrap();
        f(&mut s);
        let seen = Session {
            data: s.data.clone(),
            replaced: s.replaced.clone(),
            id: s.id.clone(),
            ..Session::new(s.id.clone())
        };
        let resp = sessions.save(s, Response::new(200)).await.unwrap();
        (seen, set_cookie(&resp))
    })
}

fn visit(s: &mut Session) {
    let n: u64 = s.get_str("visits").and_then(|v| v.parse().ok()).unwrap_or(0);
    s.set("visits", (n + 1).to_string());
}

/// The whole flow on one handler: new, continued, unchanged, regenerated, destroyed.
fn flow(handler: impl SessionHandler + Clone) {
    let sessions = Sessions::new(SessionConfig::default(), handler.clone());
    // An empty new session is neither stored nor announced.
    let (_, c) = request(&sessions, None, |_| {});
    assert_eq!(c, None);
    let (_, c) = request(&sessions, None, visit);
    let c = c.expect("a new session with data sends its cookie");
    assert!(c.starts_with("RINGMANSESSID=") && c.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{c}");
    let id = cookie_id(&c);
    let (s, c) = request(&sessions, Some(&id), visit);
    assert_eq!((s.get_str("visits"), c), (Some("2"), None), "continued, no new cookie");
    let (s, c) = request(&sessions, Some(&id), |_| {});
    assert_eq!((s.get_str("visits"), c), (Some("2"), None), "read only");
    // Regenerate: a new id with the data; the old id is gone.
    let (_, c) = request(&sessions, Some(&id), |s| s.regenerate().unwrap());
    let new_id = cookie_id(&c.expect("regenerate sends the new id"));
    assert_ne!(new_id, id);
    let (s, _) = request(&sessions, Some(&new_id), visit);
    assert_eq!(s.get_str("visits"), Some("3"));
    let old = block_on(sessions.load(Some(&id))).unwrap();
    assert!(old.is_new() && old.id().as_str() != id, "the old id is not adopted again");
    // Destroy: the data goes, the cookie is cleared.
    let (_, c) = request(&sessions, Some(&new_id), |s| s.destroy());
    assert_eq!(c.as_deref(), Some("RINGMANSESSID=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"));
    assert!(block_on(handler.read(&SessionId::parse(&new_id).unwrap(), Duration::from_secs(60))).unwrap().is_none());
    // A well-formed id nobody issued is not adopted either (no fixation).
    let made_up = "0123456789abcdef0123456789abcdef";
    let (s, c) = request(&sessions, Some(made_up), visit);
    assert_eq!(s.get_str("visits"), Some("1"));
    assert_ne!(cookie_id(&c.unwrap()), made_up);
}

#[test]
fn session_flow_memory() {
    flow(MemoryHandler::new());
}

#[test]
fn session_flow_file() {
    let dir = temp_dir("flow");
    flow(FileHandler::new(&dir).unwrap());
    let _ = std::fs::remove_dir_all(dir);
}

fn temp_dir(what: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ringman-session-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Records the ids a handler is asked to read.
#[derive(Clone, Default)]
struct Recording {
    inner: MemoryHandler,
    reads: Arc<Mutex<Vec<String>>>,
}

impl SessionHandler for Recording {
    fn read(&self, id: &SessionId, max: Duration) -> HandlerFuture<Option<Vec<u8>>> {
        self.reads.lock().unwrap().push(id.as_str().to_string());
        self.inner.read(id, max)
    }
    fn write(&self, id: &SessionId, data: Vec<u8>, max: Duration) -> HandlerFuture<()> {
        self.inner.write(id, data, max)
    }
    fn touch(&self, id: &SessionId, max: Duration) -> HandlerFuture<()> {
        self.inner.touch(id, max)
    }
    fn destroy(&self, id: &SessionId) -> HandlerFuture<()> {
        self.inner.destroy(id)
    }
    fn gc(&self, max: Duration) -> HandlerFuture<usize> {
        self.inner.gc(max)
    }
}

#[test]
fn session_forged_cookies_never_reach_the_handler() {
    let h = Recording::default();
    let sessions = Sessions::new(SessionConfig::default(), h.clone());
    for forged in ["../../etc/passwd", "", "x", "0123456789ABCDEF0123456789ABCDEF", "/tmp/sess_1"] {
        let (s, c) = request(&sessions, Some(forged), visit);
        assert_eq!(s.get_str("visits"), Some("1"), "{forged:?}");
        assert!(c.is_some(), "{forged:?}: a new session with a new cookie");
    }
    assert!(h.reads.lock().unwrap().is_empty(), "{:?}", h.reads.lock().unwrap());
}

#[test]
fn session_corrupt_data_starts_a_new_session() {
    let h = MemoryHandler::new();
    let sessions = Sessions::new(SessionConfig::default(), h.clone());
    let id = SessionId::generate().unwrap();
    block_on(h.write(&id, b"\x09not a session".to_vec(), Duration::from_secs(60))).unwrap();
    let s = block_on(sessions.load(Some(id.as_str()))).unwrap();
    assert!(s.is_new() && s.id() != &id);
}

#[test]
fn session_memory_expiry_and_sweep() {
    let h = MemoryHandler::new();
    let cfg = SessionConfig { gc_max_lifetime: Duration::from_millis(30), ..SessionConfig::default() };
    let sessions = Sessions::new(cfg, h.clone());
    let (_, c) = request(&sessions, None, visit);
    let old = cookie_id(&c.unwrap());
    let (_, c) = request(&sessions, None, visit);
    let expiring = cookie_id(&c.unwrap());
    assert_eq!(h.len(), 2);
    // Past the lifetime (the wait is the point of the test, not a guess at a delivery).
    std::thread::sleep(Duration::from_millis(60));
    let (s, c) = request(&sessions, Some(&expiring), visit);
    assert_eq!(s.get_str("visits"), Some("1"), "expired: a fresh session");
    assert_ne!(cookie_id(&c.unwrap()), expiring);
    // The read dropped the expired entry; the sweep takes the other one and keeps the new.
    assert_eq!(h.len(), 2);
    assert_eq!(block_on(sessions.gc()).unwrap(), 1);
    assert_eq!(h.len(), 1);
    assert!(block_on(h.read(&SessionId::parse(&old).unwrap(), Duration::from_secs(60))).unwrap().is_none());
}

#[test]
fn session_file_handler_files_expiry_and_sweep() {
    let dir = temp_dir("files");
    let h = FileHandler::new(&dir).unwrap();
    let max = Duration::from_secs(1440);
    let (a, b) = (SessionId::generate().unwrap(), SessionId::generate().unwrap());
    block_on(h.write(&a, b"one".to_vec(), max)).unwrap();
    block_on(h.write(&b, b"two".to_vec(), max)).unwrap();
    block_on(h.write(&b, b"three".to_vec(), max)).unwrap();
    let names: Vec<String> = {
        let mut n: Vec<_> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        n.sort();
        n
    };
    let mut want = vec![format!("sess_{a}"), format!("sess_{b}")];
    want.sort();
    assert_eq!(names, want, "one file per session, no temporary files left");
    let path_a = dir.join(format!("sess_{a}"));
    assert_eq!(std::fs::metadata(&path_a).unwrap().permissions().mode() & 0o777, 0o600);
    // Another handler (its own helper thread) on the same directory reads them back.
    let other = FileHandler::new(&dir).unwrap();
    assert_eq!(block_on(other.read(&b, max)).unwrap().as_deref(), Some(&b"three"[..]));
    // Age `a` past the lifetime: reading it answers nothing and deletes it.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let age = |p: &std::path::Path| {
        std::fs::OpenOptions::new().write(true).open(p).unwrap().set_modified(hour_ago).unwrap();
    };
    age(&path_a);
    assert_eq!(block_on(h.read(&a, max)).unwrap(), None);
    assert!(!path_a.exists());
    // Touch renews: an aged `b`, touched, survives the sweep; an aged, untouched one and a
    // stale temporary file do not.
    let path_b = dir.join(format!("sess_{b}"));
    age(&path_b);
    block_on(h.touch(&b, max)).unwrap();
    let c = SessionId::generate().unwrap();
    block_on(h.write(&c, b"old".to_vec(), max)).unwrap();
    age(&dir.join(format!("sess_{c}")));
    let tmp = dir.join(format!(".sess_{c}.1.2.tmp"));
    std::fs::write(&tmp, b"half").unwrap();
    age(&tmp);
    let unrelated = dir.join("keep-me");
    std::fs::write(&unrelated, b"x").unwrap();
    age(&unrelated);
    assert_eq!(block_on(h.gc(max)).unwrap(), 2);
    assert_eq!(block_on(h.read(&b, max)).unwrap().as_deref(), Some(&b"three"[..]));
    assert_eq!(block_on(h.read(&c, max)).unwrap(), None);
    assert!(!tmp.exists() && unrelated.exists());
    block_on(h.destroy(&b)).unwrap();
    block_on(h.destroy(&b)).unwrap();
    assert!(!path_b.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn session_file_handler_reports_io_errors() {
    let dir = temp_dir("errors");
    std::fs::create_dir_all(&dir).unwrap();
    let not_a_dir = dir.join("plain");
    std::fs::write(&not_a_dir, b"x").unwrap();
    assert!(FileHandler::new(not_a_dir.join("sub")).is_err());
    let h = FileHandler::new(dir.join("store")).unwrap();
    std::fs::remove_dir_all(dir.join("store")).unwrap();
    let id = SessionId::generate().unwrap();
    let e = block_on(h.write(&id, b"x".to_vec(), Duration::from_secs(1))).unwrap_err();
    assert!(matches!(e, SessionError::Io(_)), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn session_set_remove_clear_track_changes() {
    let mut s = Session::loaded(SessionId::generate().unwrap(), Data::new());
    s.set("a", "1");
    assert!(s.changed);
    s.changed = false;
    s.set("a", "1");
    assert!(!s.changed, "same value: nothing to write");
    assert_eq!(s.remove("b"), None);
    assert!(!s.changed);
    assert_eq!(s.remove("a").as_deref(), Some(&b"1"[..]));
    assert!(s.changed);
    s.set("x", vec![0xff]);
    assert_eq!((s.get("x"), s.get_str("x"), s.has("x")), (Some(&[0xff][..]), None, true));
    s.clear();
    assert_eq!(s.iter().count(), 0);
    s.destroy();
    s.set("after", "destroy");
    assert!(!s.has("after"));
}
