//! The ops verbs end to end: the echo example started as a daemon and driven through its
//! command line (start -d, status, connections, metrics, reload, stop -g, stop).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Generous bound so a broken build fails instead of hanging; never a performance check.
const PATIENCE: Duration = Duration::from_secs(20);

/// Builds the echo example once, into the target dir this test binary lives in.
fn echo_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/deps/ops-<hash>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target = profile_dir.parent().unwrap();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", "echo"]).env("CARGO_TARGET_DIR", target);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("cargo build --example echo");
        assert!(st.success(), "building the echo example failed");
        let bin = profile_dir.join("examples/echo");
        assert!(bin.exists(), "{bin:?} missing");
        bin
    })
}

fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

/// One echo server instance: its address and a private directory for pid file and logs.
struct Srv {
    dir: PathBuf,
    addr: SocketAddr,
    extra: Vec<String>,
    bin: PathBuf,
}

impl Srv {
    fn new(tag: &str) -> Srv {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rm-ops-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Srv { dir, addr: free_port(), extra: Vec::new(), bin: echo_bin().to_path_buf() }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("e.pid")
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    fn run(&self, verb: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("text://{}", self.addr))
            .args(["--threads", "2", "--pid-file"])
            .arg(self.pid_file())
            .arg("--log-file")
            .arg(self.dir.join("ops.log"))
            .args(&self.extra)
            .args(verb);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        // A binary this test just wrote (a copy to swap later) can be briefly "busy": a
        // child another test thread forked at that moment holds the write descriptor until
        // its exec closes it (ETXTBSY). Spawning again once that exec happened succeeds.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => break r.expect("spawn echo"),
            }
        };
        let end = Instant::now() + Duration::from_secs(90);
        loop {
            if child.try_wait().unwrap().is_some() {
                return child.wait_with_output().unwrap();
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("echo {verb:?} did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ok(&self, verb: &[&str]) -> String {
        let out = self.run(verb);
        assert!(
            out.status.success(),
            "{verb:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, verb: &[&str], expect: &str) {
        let out = self.run(verb);
        assert!(!out.status.success(), "{verb:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{verb:?}: expected {expect:?} in {err:?}");
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            if alive(pid) {
                let _ = self.run(&["stop"]);
            }
            if alive(pid) {
                // SAFETY: best-effort cleanup of the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
}

fn wait_gone(pid: i32) {
    let end = Instant::now() + PATIENCE;
    while alive(pid) {
        assert!(Instant::now() < end, "pid {pid} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `cond` with a deadline; panics naming `what` at the deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn exchange(addr: SocketAddr, line: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut buf = vec![0u8; line.len() + 1];
    s.read_exact(&mut buf)?;
    if buf != format!("{line}\n").as_bytes() {
        return Err(std::io::Error::other("wrong echo"));
    }
    Ok(())
}

/// Rows of the status table: the lines starting with `<pid>\t`, split on whitespace.
fn status_rows(status: &str) -> Vec<Vec<String>> {
    status
        .lines()
        .filter(|l| l.split('\t').next().is_some_and(|p| p.parse::<u32>().is_ok()))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn start_status_connections_metrics_stop() {
    let srv = Srv::new("life");
    assert!(srv.ok(&["start", "-d"]).contains("started as a daemon"));
    let pid = srv.pid().expect("pid file written");
    assert!(alive(pid));
    let mut sock = srv.pid_file().into_os_string();
    sock.push(".sock");
    let meta = std::fs::metadata(&sock).expect("control socket next to the pid file");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "control socket mode");
    srv.fails(&["start", "-d"], "already running");
    srv.fails(&["start"], "already running");

    let mut client = TcpStream::connect(srv.addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    client.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 6];
    client.read_exact(&mut buf).unwrap();

    let status = srv.ok(&["status"]);
    let rows = status_rows(&status);
    assert_eq!(rows.len(), 2, "one row per ring thread:\n{status}");
    for r in &rows {
        assert_eq!(r[0], pid.to_string());
        assert_eq!(r[2], format!("text://{}", srv.addr));
        assert_eq!(r[3], "echo");
        assert_eq!(r[11], "[idle]", "{status}");
    }
    let conns: u64 = rows.iter().map(|r| r[5].parse::<u64>().unwrap()).sum();
    assert_eq!(conns, 1, "{status}");
    let reqs: u64 = rows.iter().map(|r| r[9].parse::<u64>().unwrap()).sum();
    assert_eq!(reqs, 1, "{status}");
    assert!(status.contains("Summary"));

    let listing = srv.ok(&["connections"]);
    let me = client.local_addr().unwrap().to_string();
    let line = listing.lines().find(|l| l.contains(&me)).unwrap_or_else(|| panic!("{me} not in\n{listing}"));
    assert!(line.contains("ESTABLISHED") && line.contains("echo") && line.contains("text"), "{line}");

    let metrics = srv.ok(&["metrics"]);
    assert!(metrics.contains("# TYPE ringman_connections gauge"), "{metrics}");
    assert!(metrics.contains("ringman_requests_total{worker=\"echo\",thread="), "{metrics}");

    drop(client);
    assert!(srv.ok(&["stop"]).contains("stopped"));
    wait_gone(pid);
    assert!(!srv.pid_file().exists(), "pid file removed on stop");
    assert!(TcpStream::connect(srv.addr).is_err());
    srv.fails(&["stop"], "not running");
    srv.fails(&["status"], "not running");
    srv.fails(&["reload"], "not running");
    srv.fails(&["connections"], "not running");
    let log = std::fs::read_to_string(srv.dir.join("ops.log")).unwrap();
    assert!(log.contains("started") && log.contains("stop requested"), "{log}");
}

#[test]
fn stale_pid_file_does_not_block_start() {
    let srv = Srv::new("stale");
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    std::fs::write(srv.pid_file(), format!("{dead}\n")).unwrap();
    srv.fails(&["status"], "not running");
    srv.ok(&["start", "-d"]);
    let pid = srv.pid().unwrap();
    assert_ne!(pid as u32, dead);
    exchange(srv.addr, "up").unwrap();
    srv.ok(&["restart", "-d"]);
    let pid2 = srv.pid().unwrap();
    assert_ne!(pid, pid2);
    wait_gone(pid);
    exchange(srv.addr, "again").unwrap();
    srv.ok(&["stop"]);
    wait_gone(pid2);
}

#[test]
fn reload_hands_over_without_refusing_a_connection() {
    let srv = Srv::new("reload");
    srv.ok(&["start", "-d"]);
    let pid1 = srv.pid().unwrap();
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match exchange(addr, &format!("c{c}-{i}")) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.push(e.to_string());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    i += 1;
                }
                errors
            })
        })
        .collect();
    let wait_more = |n: usize| {
        let target = ok.load(Ordering::Relaxed) + n;
        wait_until(&format!("{n} more exchanges"), || ok.load(Ordering::Relaxed) >= target);
    };
    wait_more(50);
    let out = srv.ok(&["reload", "-g"]);
    assert!(out.contains("reloaded"), "{out}");
    let pid2 = srv.pid().unwrap();
    assert_ne!(pid1, pid2, "the pid changes");
    wait_gone(pid1);
    wait_more(50);
    // The graceful reload must not fail a single exchange (counted up to here).
    let failed_graceful = failed.load(Ordering::SeqCst);
    let out = srv.ok(&["reload"]);
    assert!(out.contains("reloaded"), "{out}");
    let pid3 = srv.pid().unwrap();
    assert_ne!(pid2, pid3);
    wait_gone(pid2);
    wait_more(50);
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = clients.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(ok.load(Ordering::Relaxed) >= 150);
    assert_eq!(failed_graceful, 0, "exchanges failed across the graceful reload: {errors:?}");
    assert_eq!(failed.load(Ordering::SeqCst), errors.len());
    // The plain reload may cut an exchange in flight on the old process, but never refuses
    // a connection.
    assert!(errors.iter().all(|e| !e.contains("refused")), "{errors:?}");
    let log = std::fs::read_to_string(srv.dir.join("ops.log")).unwrap();
    assert!(log.contains("reload successor"), "{log}");
    srv.ok(&["status"]);
    srv.ok(&["stop"]);
    wait_gone(pid3);
}

#[test]
fn graceful_reload_fails_no_exchange() {
    let srv = Srv::new("greload");
    srv.ok(&["start", "-d"]);
    let pid1 = srv.pid().unwrap();
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = exchange(addr, &format!("line-{i}")) {
                    errors.push(e.to_string());
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            errors
        })
    };
    wait_until("20 exchanges before the reload", || done.load(Ordering::Relaxed) >= 20);
    srv.ok(&["reload", "-g"]);
    assert_ne!(srv.pid().unwrap(), pid1);
    wait_gone(pid1);
    let after = done.load(Ordering::Relaxed);
    wait_until("20 exchanges after the reload", || done.load(Ordering::Relaxed) >= after + 20);
    stop.store(true, Ordering::Relaxed);
    let errors = client.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    srv.ok(&["stop"]);
}

#[test]
fn graceful_stop_waits_for_connections_within_its_deadline() {
    let mut srv = Srv::new("gstop");
    srv.extra = vec!["--graceful-timeout".into(), "3".into()];
    srv.ok(&["start", "-d"]);
    let pid = srv.pid().unwrap();
    // An idle connection never finishes by itself: the stop waits for it until the deadline,
    // and says so.
    let mut idle = TcpStream::connect(srv.addr).unwrap();
    idle.set_read_timeout(Some(PATIENCE)).unwrap();
    idle.write_all(b"x\n").unwrap();
    let mut b = [0u8; 2];
    idle.read_exact(&mut b).unwrap();
    assert!(srv.ok(&["stop", "-g"]).contains("stopped"));
    wait_gone(pid);
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest).expect("the stopped daemon's connection is closed, not left open");
    assert!(rest.is_empty());
    let log = std::fs::read_to_string(srv.dir.join("ops.log")).unwrap();
    // Written through the `log` facade (a warn! record) by the daemon's logger.
    assert!(log.contains("WARN  ringman_ops: graceful stop deadline passed with 1 connection(s) open"), "{log}");

    // A connection that closes during the graceful stop lets it finish.
    srv.extra = vec!["--graceful-timeout".into(), "60".into()];
    std::fs::write(srv.dir.join("ops.log"), "").unwrap();
    srv.ok(&["start", "-d"]);
    let pid = srv.pid().unwrap();
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(b"y\n").unwrap();
    c.read_exact(&mut b).unwrap();
    let stopper = {
        let bin = echo_bin().to_path_buf();
        let args = vec![
            format!("text://{}", srv.addr),
            "--pid-file".into(),
            srv.pid_file().to_string_lossy().into_owned(),
            "stop".into(),
            "-g".into(),
        ];
        std::thread::spawn(move || Command::new(bin).args(args).output().unwrap())
    };
    // Once the server has taken the stop request, the open connection is still served (a
    // plain stop would have closed it) and the stop command is still waiting for it.
    let log = srv.dir.join("ops.log");
    wait_until("the graceful stop request reaches the server", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("stop requested (graceful)"))
    });
    for line in [b"z\n", b"w\n"] {
        c.write_all(line).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, line, "served during the drain");
    }
    assert!(!stopper.is_finished(), "stop -g returned while a connection was open");
    assert!(alive(pid));
    drop(c);
    let out = stopper.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_gone(pid);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("deadline passed"), "the drain ended when the connection closed: {log}");
}

#[test]
fn non_reloadable_worker_stays_in_the_old_process_until_stop() {
    let mut srv = Srv::new("pinned");
    let pinned = free_port();
    srv.extra = vec!["--pinned".into(), format!("text://{pinned}")];
    srv.ok(&["start", "-d"]);
    let pid1 = srv.pid().unwrap();
    exchange(srv.addr, "a").unwrap();
    exchange(pinned, "b").unwrap();
    let out = srv.ok(&["reload"]);
    assert!(out.contains("reloaded"), "{out}");
    let pid2 = srv.pid().unwrap();
    assert_ne!(pid1, pid2);
    // The reloadable worker moved; the pinned one still runs in the old process.
    exchange(srv.addr, "c").unwrap();
    exchange(pinned, "d").unwrap();
    assert!(alive(pid1), "old process keeps the non-reloadable worker");
    let rows = status_rows(&srv.ok(&["status"]));
    assert!(rows.iter().all(|r| r[3] == "echo" && r[0] == pid2.to_string()), "{rows:?}");
    // A second reload must not try to start the pinned worker either.
    srv.ok(&["reload"]);
    let pid3 = srv.pid().unwrap();
    assert_ne!(pid2, pid3);
    wait_gone(pid2);
    exchange(pinned, "e").unwrap();
    srv.ok(&["stop"]);
    wait_gone(pid3);
    wait_gone(pid1);
}

#[test]
fn metrics_over_http() {
    let mut srv = Srv::new("metrics");
    let maddr = free_port();
    srv.extra = vec!["--metrics".into(), maddr.to_string()];
    srv.ok(&["start", "-d"]);
    exchange(srv.addr, "m").unwrap();
    let mut s = TcpStream::connect(maddr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("# TYPE ringman_requests_total counter"), "{body}");
    let total: u64 = body
        .lines()
        .filter(|l| l.starts_with("ringman_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 1, "{body}");
    srv.ok(&["stop"]);
}

#[test]
fn failed_reload_keeps_the_old_process_serving() {
    let mut srv = Srv::new("rollback");
    // Run from a copy of the binary, so the copy can be swapped for one that fails.
    let prog = srv.dir.join("echo-copy");
    std::fs::copy(echo_bin(), &prog).unwrap();
    srv.bin = prog.clone();
    srv.ok(&["start", "-d"]);
    let pid = srv.pid().unwrap();
    exchange(srv.addr, "before").unwrap();
    // The successor is the binary now at the start path: a program that exits at once.
    let broken = srv.dir.join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &prog).unwrap();
    // The command line would now run the broken program too: ask the control socket.
    let mut sock = srv.pid_file().into_os_string();
    sock.push(".sock");
    let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("control socket");
    c.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    c.write_all(b"reload\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("error:"), "reload with a failing successor must fail: {answer:?}");
    // Rolled back: same process, same pid file, still serving, and ready for another reload.
    assert_eq!(srv.pid(), Some(pid));
    assert!(alive(pid));
    exchange(srv.addr, "after").unwrap();
    let log = std::fs::read_to_string(srv.dir.join("ops.log")).unwrap();
    assert!(log.contains("reload failed"), "{log}");
    std::fs::copy(echo_bin(), srv.dir.join("fixed")).unwrap();
    std::fs::rename(srv.dir.join("fixed"), &prog).unwrap();
    assert!(srv.ok(&["reload"]).contains("reloaded"));
    let pid2 = srv.pid().unwrap();
    assert_ne!(pid, pid2);
    wait_gone(pid);
    exchange(srv.addr, "new").unwrap();
    srv.ok(&["stop"]);
    wait_gone(pid2);
}

#[test]
fn daemon_stdout_goes_to_stdout_file() {
    let mut srv = Srv::new("stdout");
    let out = srv.dir.join("stdout.log");
    srv.extra = vec!["--stdout-file".into(), out.to_string_lossy().into_owned()];
    srv.ok(&["start", "-d"]);
    let pid = srv.pid().unwrap();
    // The echo example prints its address once it listens; as a daemon that lands in the file.
    let expect = format!("listening on {}", srv.addr);
    wait_until("the daemon's stdout reaches stdout_file", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains(&expect))
    });
    srv.ok(&["stop"]);
    wait_gone(pid);
}

/// Real, effective, saved and filesystem ids from a `Uid:` or `Gid:` line of /proc/<pid>/status.
fn proc_ids(pid: i32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in {status}"));
    line[key.len()..].split_whitespace().map(|v| v.parse().unwrap()).collect()
}

#[test]
fn daemon_switches_to_user_and_group_after_binding() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("RINGMAN_NO_ROOT").is_some_and(|v| v == "1") {
            eprintln!("RINGMAN_NO_ROOT=1: user/group switch not checked");
            return;
        }
        panic!("switching user needs root (CI runs as root); set RINGMAN_NO_ROOT=1 to skip this test");
    }
    let mut srv = Srv::new("user");
    // nobody:nogroup (65534) must be able to write the pid file, socket and log.
    std::os::unix::fs::chown(&srv.dir, Some(65534), Some(65534)).unwrap();
    srv.extra = vec!["--user".into(), "nobody".into(), "--group".into(), "nogroup".into()];
    srv.ok(&["start", "-d"]);
    let pid = srv.pid().unwrap();
    assert_eq!(proc_ids(pid, "Uid:"), [65534; 4], "every uid switched");
    assert_eq!(proc_ids(pid, "Gid:"), [65534; 4], "every gid switched");
    exchange(srv.addr, "as nobody").unwrap();
    srv.ok(&["stop"]);
    wait_gone(pid);
}

// ------------------------------------------------------------------- TLS tickets across reload

/// A test CA and a leaf for `localhost`/127.0.0.1 in `dir`, made with the `openssl` command.
fn make_pki(dir: &Path) {
    let script = r#"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj "/CN=ringman ops test CA" 2>/dev/null
openssl req $ec -keyout key.pem -out leaf.csr -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile leaf.ext 2>/dev/null
"#;
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().expect("sh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// One `openssl s_client` session: saves (`-sess_out`) or offers (`-sess_in`) the session
/// in `sess`, writes `line`, reads until its echo; returns s_client's report, with its
/// "New, TLSv1.x" or "Reused, TLSv1.x" line.
fn s_client(srv: &Srv, version: &str, sess: (&str, &Path), line: &str) -> String {
    use std::io::BufRead;
    let mut child = Command::new("timeout")
        .args(["30", "openssl", "s_client", version, "-servername", "localhost", "-CAfile"])
        .arg(srv.dir.join("ca.pem"))
        .args(["-connect", &srv.addr.to_string(), sess.0])
        .arg(sess.1)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut report = String::new();
    for l in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let l = l.unwrap();
        let echoed = l == line;
        report.push_str(&l);
        report.push('\n');
        if echoed {
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    assert!(report.lines().any(|l| l == line), "no echo of {line:?}:\n{report}");
    report
}

/// Descriptors of process `pid` that point at a memfd of ticket keys.
fn ticket_memfds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().contains("ringman-ticket-keys"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn tls_sessions_resume_across_reload_with_handed_over_ticket_keys() {
    let mut srv = Srv::new("tickets");
    make_pki(&srv.dir);
    let (cert, key) = (srv.dir.join("cert.pem"), srv.dir.join("key.pem"));
    srv.extra = vec!["--cert".into(), cert.to_string_lossy().into(), "--key".into(), key.to_string_lossy().into()];
    srv.ok(&["start", "-d"]);
    let pid1 = srv.pid().unwrap();
    let versions = [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")];
    let sess = |v: &str| srv.dir.join(format!("session{v}.pem"));
    for (v, name) in versions {
        let first = s_client(&srv, v, ("-sess_out", &sess(v)), "before");
        assert!(first.contains(&format!("New, {name}")), "{first}");
        let again = s_client(&srv, v, ("-sess_in", &sess(v)), "same process");
        assert!(again.contains(&format!("Reused, {name}")), "{again}");
    }

    // Reload twice: the first successor adopts the keys and hands them on to the second.
    let mut pid = pid1;
    for round in 1..=2 {
        let out = srv.ok(&["reload"]);
        assert!(out.contains("reloaded"), "{out}");
        let next = srv.pid().unwrap();
        assert_ne!(next, pid);
        wait_gone(pid);
        pid = next;
        // The keys went through a memfd: its number in the environment, never the keys;
        // the successor closed it once read.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let var = environ
            .split(|&b| b == 0)
            .find_map(|e| e.strip_prefix(b"RINGMAN_TICKET_KEYS_FD="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("the successor was told where the keys are");
        assert!(var.parse::<u32>().is_ok(), "only a descriptor number: {var:?}");
        assert_eq!(ticket_memfds(pid), 0, "the successor closed the memfd");
        // Several resumptions per version (the connections spread over both rings).
        for (v, name) in versions {
            for i in 0..3 {
                let r = s_client(&srv, v, ("-sess_in", &sess(v)), &format!("after reload {round}, {i}"));
                assert!(r.contains(&format!("Reused, {name}")), "{v} after reload {round}: {r}");
            }
        }
        let status = srv.ok(&["status"]);
        let line = status.lines().find(|l| l.starts_with("session-ticket keys: echo")).expect("a ticket-key line");
        assert!(line.contains("generation 1") && line.contains("adopted from the reload predecessor"), "{line}");
    }
    let log = std::fs::read_to_string(srv.dir.join("ops.log")).unwrap();
    assert!(log.contains("adopted the reload predecessor's session-ticket keys"), "{log}");
    assert!(!log.contains("unusable") && !log.contains("handed over no session-ticket keys"), "{log}");

    // Negative control: a process started afresh (no hand-off) has keys of its own, so the
    // same sessions take a full handshake.
    srv.ok(&["stop"]);
    wait_gone(pid);
    srv.ok(&["start", "-d"]);
    let fresh = srv.pid().unwrap();
    for (v, name) in versions {
        let r = s_client(&srv, v, ("-sess_in", &sess(v)), "fresh process");
        assert!(r.contains(&format!("New, {name}")), "{v} resumed without a hand-off: {r}");
    }
    let status = srv.ok(&["status"]);
    let line = status.lines().find(|l| l.starts_with("session-ticket keys: echo")).expect("a ticket-key line");
    assert!(line.contains("generation 1") && !line.contains("adopted"), "{line}");
    srv.ok(&["stop"]);
    wait_gone(fresh);
}
