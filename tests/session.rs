//! HTTP sessions (`ringman::components::session`) through the webserver example's
//! `/session` page, driven by curl with cookie jars as a browser would be: counts per
//! session, sessions continued by a second process over the file and Redis handlers,
//! regeneration, destruction, expiry and the sweep, forged cookies, cookie attributes, and
//! pipelined requests answered in order while each waits for its session.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{connect, example_binary, wait_until, RedisServer, PATIENCE};

/// The webserver example running with `args` after its address and root; killed on drop.
struct Webserver {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Webserver {
    fn start(args: &[&str]) -> Webserver {
        let root = std::env::temp_dir().join(format!("ringman-session-www-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let mut child = Command::new(example_binary("webserver"))
            .arg("http://127.0.0.1:0")
            .arg(&root)
            .args(["--threads", "2"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the webserver example starts");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(PATIENCE).expect("the example reports its address");
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap();
        Webserver { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Webserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A curl cookie jar (a file), as one browser profile.
struct Jar(PathBuf);

impl Jar {
    fn new(name: &str) -> Jar {
        let p = std::env::temp_dir().join(format!("ringman-session-jar-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        Jar(p)
    }

    /// GET `url` with this jar (sent and updated): the head and the body.
    fn get(&self, url: &str) -> (String, String) {
        curl(&["-c", self.path(), "-b", self.path(), url])
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// The session id the jar holds.
    fn id(&self) -> String {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let line =
            text.lines().find(|l| l.contains("\tRINGMANSESSID\t")).unwrap_or_else(|| panic!("no cookie: {text}"));
        line.rsplit('\t').next().unwrap().to_string()
    }
}

impl Drop for Jar {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs curl with `args`: the response head and body.
fn curl(args: &[&str]) -> (String, String) {
    let out =
        Command::new("curl").args(["-s", "-S", "--max-time", "20", "-D", "-"]).args(args).output().expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (head.to_string(), body.to_string())
}

fn set_cookie(head: &str) -> Option<&str> {
    head.lines().find_map(|l| l.strip_prefix("Set-Cookie: ").or_else(|| l.strip_prefix("set-cookie: ")))
}

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringman-session-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn visits(body: &str) -> u64 {
    body.trim().strip_prefix("visits: ").unwrap_or_else(|| panic!("{body:?}")).parse().unwrap()
}

/// Counts 1, 2, 3 in one jar and 1 in another; `extra` names what else the jar must show.
fn counts_per_jar(srv: &Webserver, tag: &str) -> Jar {
    let jar = Jar::new(tag);
    let (head, body) = jar.get(&srv.url("/session"));
    assert_eq!(visits(&body), 1);
    let c = set_cookie(&head).expect("a new session sends its cookie");
    assert!(c.starts_with(&format!("RINGMANSESSID={}; ", jar.id())), "{c}");
    for n in 2..=3 {
        let (head, body) = jar.get(&srv.url("/session"));
        assert_eq!(visits(&body), n);
        assert_eq!(set_cookie(&head), None, "a known session is not announced again");
    }
    let other = Jar::new(&format!("{tag}-other"));
    assert_eq!(visits(&other.get(&srv.url("/session")).1), 1, "a new browser, a new session");
    assert_ne!(other.id(), jar.id());
    jar
}

#[test]
fn memory_sessions_count_per_browser() {
    let srv = Webserver::start(&[]);
    let jar = counts_per_jar(&srv, "memory");
    assert_eq!(jar.id().len(), 32);
    assert!(jar.id().bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{}", jar.id());
}

#[test]
fn forged_cookies_get_a_new_session() {
    let dir = temp_dir("forged");
    let srv = Webserver::start(&["--session-dir", dir.to_str().unwrap()]);
    // A planted session file next to the store, and a session id nobody issued.
    for forged in ["../../etc/passwd", "../sess_x", "/etc/passwd", "0123456789abcdef0123456789abcdef"] {
        let (head, body) = curl(&["-b", &format!("RINGMANSESSID={forged}"), &srv.url("/session")]);
        assert_eq!(visits(&body), 1, "{forged}");
        let c = set_cookie(&head).unwrap_or_else(|| panic!("{forged}: no new cookie"));
        let id = c.split(';').next().unwrap().strip_prefix("RINGMANSESSID=").unwrap();
        assert!(id != forged && id.len() == 32, "{forged} -> {c}");
        assert!(dir.join(format!("sess_{id}")).is_file());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Pipelined requests of one session on one connection: each waits for the previous one's
/// session save (the connection stops reading meanwhile), so the counts come back in order.
#[test]
fn pipelined_session_requests_are_answered_in_order() {
    let dir = temp_dir("pipelined");
    let srv = Webserver::start(&["--session-dir", dir.to_str().unwrap()]);
    let jar = Jar::new("pipelined");
    assert_eq!(visits(&jar.get(&srv.url("/session")).1), 1);
    let req = format!("GET /session HTTP/1.1\r\nHost: x\r\nCookie: a=b; RINGMANSESSID={}\r\n\r\n", jar.id());
    let mut s = connect(srv.addr);
    s.write_all(req.repeat(20).as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut bodies = Vec::new();
    while bodies.len() < 20 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} answers", bodies.len());
        got.extend_from_slice(&buf[..n]);
        // Take every complete response (all carry Content-Length).
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some(end) = text.find("\r\n\r\n") else { break };
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .expect("Content-Length")
                .parse()
                .unwrap();
            if got.len() < end + 4 + len {
                break;
            }
            bodies.push(visits(&text[end + 4..end + 4 + len]));
            got.drain(..end + 4 + len);
        }
    }
    assert_eq!(bodies, (2..=21).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(dir);
}

fn session_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn file_sessions_continue_in_a_second_process() {
    let dir = temp_dir("files");
    let d = dir.to_str().unwrap();
    let first = Webserver::start(&["--session-dir", d]);
    let jar = counts_per_jar(&first, "files");
    let id = jar.id();
    assert!(session_files(&dir).contains(&format!("sess_{id}")), "{:?}", session_files(&dir));
    assert!(session_files(&dir).iter().all(|n| n.starts_with("sess_")), "no temporary files left");
    // A second process on the same directory, the first one still running: it continues.
    let second = Webserver::start(&["--session-dir", d]);
    assert_eq!(visits(&jar.get(&second.url("/session")).1), 4);
    // And back and forth, with the first one gone.
    assert_eq!(visits(&jar.get(&first.url("/session")).1), 5);
    drop(first);
    assert_eq!(visits(&jar.get(&second.url("/session")).1), 6);
    assert_eq!(jar.id(), id);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn redis_sessions_continue_in_a_second_process() {
    let redis = RedisServer::start();
    let url = redis.url();
    let first = Webserver::start(&["--session-redis", &url, "--session-lifetime", "600"]);
    let jar = counts_per_jar(&first, "redis");
    let key = format!("ringman:session:{}", jar.id());
    let ttl: i64 = redis.raw(None, 0, &["TTL", &key]).trim().trim_start_matches(':').parse().unwrap();
    assert!((1..=600).contains(&ttl), "SET with EX: ttl {ttl}");
    let second = Webserver::start(&["--session-redis", &url]);
    assert_eq!(visits(&jar.get(&second.url("/session")).1), 4);
    drop(first);
    assert_eq!(visits(&jar.get(&second.url("/session")).1), 5);
}

/// Regenerate: a new id in the cookie, the count kept, the old id worthless. Destroy: the
/// cookie cleared, the data gone.
fn regenerate_and_destroy(srv: &Webserver, tag: &str) {
    let jar = Jar::new(tag);
    jar.get(&srv.url("/session"));
    jar.get(&srv.url("/session"));
    let old = jar.id();
    let (head, body) = jar.get(&srv.url("/session?regenerate"));
    assert_eq!(visits(&body), 3);
    let new = jar.id();
    assert_ne!(new, old);
    assert!(set_cookie(&head).unwrap().starts_with(&format!("RINGMANSESSID={new}; ")), "{head}");
    assert_eq!(visits(&jar.get(&srv.url("/session")).1), 4, "the data moved to the new id");
    let (_, body) = curl(&["-b", &format!("RINGMANSESSID={old}"), &srv.url("/session")]);
    assert_eq!(visits(&body), 1, "the old id's data is deleted");
    let (head, _) = jar.get(&srv.url("/session?destroy"));
    assert!(set_cookie(&head).unwrap().starts_with("RINGMANSESSID=; Max-Age=0;"), "{head}");
    let (_, body) = curl(&["-b", &format!("RINGMANSESSID={new}"), &srv.url("/session")]);
    assert_eq!(visits(&body), 1, "destroyed");
}

#[test]
fn regenerate_and_destroy_on_every_handler() {
    regenerate_and_destroy(&Webserver::start(&[]), "regen-memory");
    let dir = temp_dir("regen");
    regenerate_and_destroy(&Webserver::start(&["--session-dir", dir.to_str().unwrap()]), "regen-files");
    let _ = std::fs::remove_dir_all(&dir);
    let redis = RedisServer::start();
    regenerate_and_destroy(&Webserver::start(&["--session-redis", &redis.url()]), "regen-redis");
}

/// With a lifetime of 1 s, a session left alone expires: the next visit starts at 1 under a
/// new id. The file sweep (every second here) deletes the file without any request; Redis
/// drops the key by itself.
#[test]
fn expired_sessions_start_fresh_and_are_swept() {
    let short = ["--session-lifetime", "1", "--session-gc", "1"];
    // Memory: no outside signal shows the expiry, so the test waits out the lifetime.
    let srv = Webserver::start(&short);
    let jar = Jar::new("expire-memory");
    jar.get(&srv.url("/session"));
    let old = jar.id();
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(visits(&jar.get(&srv.url("/session")).1), 1);
    assert_ne!(jar.id(), old);
    drop(srv);

    let dir = temp_dir("expire");
    let mut args = short.to_vec();
    args.extend(["--session-dir", dir.to_str().unwrap()]);
    let srv = Webserver::start(&args);
    let jar = Jar::new("expire-files");
    jar.get(&srv.url("/session"));
    let file = dir.join(format!("sess_{}", jar.id()));
    assert!(file.is_file());
    wait_until("the sweep deletes the expired session file", || !file.exists());
    let old = jar.id();
    assert_eq!(visits(&jar.get(&srv.url("/session")).1), 1);
    assert_ne!(jar.id(), old);
    drop(srv);
    let _ = std::fs::remove_dir_all(dir);

    let redis = RedisServer::start();
    let url = redis.url();
    let mut args = short.to_vec();
    args.extend(["--session-redis", &url]);
    let srv = Webserver::start(&args);
    let jar = Jar::new("expire-redis");
    jar.get(&srv.url("/session"));
    let key = format!("ringman:session:{}", jar.id());
    assert_eq!(redis.raw(None, 0, &["EXISTS", &key]), ":1\r\n");
    wait_until("redis expires the session", || redis.raw(None, 0, &["EXISTS", &key]) == ":0\r\n");
    assert_eq!(visits(&jar.get(&srv.url("/session")).1), 1);
}

#[test]
fn set_cookie_carries_the_configured_attributes() {
    let srv = Webserver::start(&[]);
    let (head, _) = curl(&[&srv.url("/session")]);
    let c = set_cookie(&head).unwrap();
    let id = c.split(';').next().unwrap().strip_prefix("RINGMANSESSID=").unwrap();
    assert_eq!(c, format!("RINGMANSESSID={id}; Path=/; HttpOnly; SameSite=Lax"), "the defaults");
    let srv = Webserver::start(&[
        "--session-cookie-lifetime",
        "3600",
        "--session-secure",
        "--session-same-site",
        "strict",
        "--session-domain",
        "example.test",
    ]);
    let (head, _) = curl(&[&srv.url("/session")]);
    let c = set_cookie(&head).unwrap();
    let id = c.split(';').next().unwrap().strip_prefix("RINGMANSESSID=").unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(
        c,
        format!("RINGMANSESSID={id}; Max-Age=3600; Domain=example.test; Path=/; Secure; HttpOnly; SameSite=Strict")
    );
}
