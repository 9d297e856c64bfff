//! The file monitor end to end: the echo example started as a daemon through its command
//! line with `--watch`; changes of watched files and of the binary reload it (the pid in
//! the pid file changes, the log file records each reload), a burst of writes reloads it
//! once, unwatched files never, and a replaced binary is what the reload runs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Generous bound so a broken build fails instead of hanging; never a performance check.
const PATIENCE: Duration = Duration::from_secs(30);

/// Builds the echo example once, into the target dir this test binary lives in.
fn echo_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // <target>/<profile>/deps/filemon-<hash>
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

/// One echo daemon: a private directory for its pid file and log, the program it runs
/// and its extra flags.
struct Srv {
    dir: PathBuf,
    addr: SocketAddr,
    bin: PathBuf,
    extra: Vec<String>,
}

impl Srv {
    fn new(tag: &str) -> Srv {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rm-filemon-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], common::free_port()));
        Srv { dir, addr, bin: echo_bin().to_path_buf(), extra: Vec::new() }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("e.pid")
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file()).ok()?.trim().parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ops.log")).unwrap_or_default()
    }

    fn ok(&self, verb: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg(format!("text://{}", self.addr))
            .args(["--threads", "1", "--pid-file"])
            .arg(self.pid_file())
            .arg("--log-file")
            .arg(self.dir.join("ops.log"))
            .args(&self.extra)
            .args(verb)
            .output()
            .expect("run echo");
        assert!(
            out.status.success(),
            "{verb:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pid file names a live process other than `old`, and `old` is gone.
    fn reloaded_from(&self, old: i32) -> i32 {
        wait_until(&format!("a reload replaced pid {old}"), || self.pid().is_some_and(|p| p != old && alive(p)));
        wait_until(&format!("pid {old} exited after the reload"), || !alive(old));
        self.pid().unwrap()
    }

    fn count(&self, what: &str) -> usize {
        self.log().lines().filter(|l| l.contains(what)).count()
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
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

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn exchange(addr: SocketAddr, line: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut buf = vec![0u8; line.len() + 1];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, format!("{line}\n").as_bytes());
}

#[test]
fn watched_writes_reload_once_per_burst_and_unwatched_files_never() {
    let mut srv = Srv::new("burst");
    // The watched tree is the server's own directory, as when a developer watches the
    // project: it holds the pid file, the control socket and the log, all of which the
    // server writes at every start, stop and reload (and whose extensions are watched):
    // counted as changes, they would reload it again and again.
    let watched = srv.dir.clone();
    std::fs::create_dir_all(watched.join("sub")).unwrap();
    let beside = Srv::new("beside");
    const DEBOUNCE: Duration = Duration::from_millis(1000);
    srv.extra = vec![
        "--watch".into(),
        watched.display().to_string(),
        "--watch-debounce".into(),
        DEBOUNCE.as_millis().to_string(),
    ];
    for ext in ["txt", "log", "pid", "sock"] {
        srv.extra.extend(["--watch-ext".into(), ext.into()]);
    }
    srv.ok(&["start", "-d"]);
    let pid1 = srv.pid().unwrap();
    exchange(srv.addr, "first");

    // One write (in a subdirectory): one reload.
    std::fs::write(watched.join("sub/a.txt"), "1").unwrap();
    let pid2 = srv.reloaded_from(pid1);
    exchange(srv.addr, "second");

    // A burst spread over twice the quiet period, each write well within the quiet
    // period of the previous one: a reload per write (or per part of the burst) would
    // let the successor see the rest of the burst and reload again.
    for i in 0..20 {
        std::fs::write(watched.join("b.txt"), format!("{i}")).unwrap();
        std::thread::sleep(DEBOUNCE / 10);
    }
    let pid3 = srv.reloaded_from(pid2);

    // Not watched: another extension inside the watched tree, a file outside it, the
    // server's own log and pid file (written on every reload anyway). Nothing positive
    // can show that no reload follows, so give the monitor three quiet periods to act
    // wrongly; this bounds how long the test looks, it measures nothing. Any reload it
    // missed is counted below anyway: the next watched write must be exactly the fourth.
    std::fs::write(watched.join("c.rs"), "x").unwrap();
    std::fs::write(beside.dir.join("outside.txt"), "x").unwrap();
    std::thread::sleep(DEBOUNCE * 3);
    assert_eq!(srv.pid(), Some(pid3), "an unwatched file reloaded the server:\n{}", srv.log());

    std::fs::write(watched.join("d.txt"), "x").unwrap();
    let pid4 = srv.reloaded_from(pid3);
    exchange(srv.addr, "fourth");
    let log = srv.log();
    assert_eq!(srv.count("reload requested"), 3, "three reloads, one per settled batch:\n{log}");
    assert_eq!(srv.count("file monitor: changed"), 3, "{log}");
    assert!(!log.contains("c.rs") && !log.contains("outside.txt"), "{log}");
    assert!(log.contains(&format!("[{pid4}] INFO  ringman_ops: started (reload successor)")), "{log}");
    srv.ok(&["stop"]);
}

#[test]
fn a_replaced_binary_is_what_the_reload_runs() {
    let mut srv = Srv::new("binary");
    // Run a copy that the test can replace, as `cargo build` replaces its output.
    let bin_dir = srv.dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let prog = bin_dir.join("echo-copy");
    std::fs::copy(echo_bin(), &prog).unwrap();
    srv.bin = prog.clone();
    srv.extra = vec!["--watch-binary".into(), "--watch-debounce".into(), "300".into()];
    srv.ok(&["start", "-d"]);
    let pid1 = srv.pid().unwrap();
    let first = std::fs::metadata(&prog).unwrap().ino();
    assert_eq!(std::fs::metadata(format!("/proc/{pid1}/exe")).unwrap().ino(), first);
    exchange(srv.addr, "before");

    // The new build: written beside it, renamed over it (a new inode at the same path).
    std::fs::copy(echo_bin(), bin_dir.join("echo-new")).unwrap();
    std::fs::rename(bin_dir.join("echo-new"), &prog).unwrap();
    let second = std::fs::metadata(&prog).unwrap().ino();
    assert_ne!(first, second);

    let pid2 = srv.reloaded_from(pid1);
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid2}/exe")).unwrap().ino(),
        second,
        "the successor runs the new file"
    );
    assert_eq!(std::fs::read_link(format!("/proc/{pid2}/exe")).unwrap(), prog);
    exchange(srv.addr, "after");
    assert!(srv.log().contains(&format!("file monitor: changed {}", prog.display())), "{}", srv.log());
    srv.ok(&["stop"]);
}

#[test]
fn a_broken_build_keeps_the_old_process_serving_and_watching() {
    let mut srv = Srv::new("broken");
    let bin_dir = srv.dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let prog = bin_dir.join("echo-copy");
    std::fs::copy(echo_bin(), &prog).unwrap();
    srv.bin = prog.clone();
    srv.extra = vec!["--watch-binary".into(), "--watch-debounce".into(), "300".into()];
    srv.ok(&["start", "-d"]);
    let pid1 = srv.pid().unwrap();
    // A "build" whose program exits at once: the reload fails, the old process serves on.
    let broken = bin_dir.join("broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &prog).unwrap();
    wait_until("the monitor's reload failed", || srv.log().contains("file monitor: no reload"));
    assert_eq!(srv.pid(), Some(pid1));
    assert!(alive(pid1));
    exchange(srv.addr, "still serving");
    // The next build works: the same monitor reloads onto it.
    std::fs::copy(echo_bin(), bin_dir.join("fixed")).unwrap();
    std::fs::rename(bin_dir.join("fixed"), &prog).unwrap();
    let pid2 = srv.reloaded_from(pid1);
    assert_eq!(std::fs::metadata(format!("/proc/{pid2}/exe")).unwrap().ino(), std::fs::metadata(&prog).unwrap().ino());
    exchange(srv.addr, "fixed");
    srv.bin = prog;
    srv.ok(&["stop"]);
}
