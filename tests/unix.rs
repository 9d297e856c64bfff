//! `unix://` stream listeners and clients with real peers: Python asyncio clients and
//! servers over AF_UNIX, socket files left by a killed process, a live server on the path,
//! the file's mode, its removal on the final stop, and an ops reload that keeps serving on
//! the same file.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{example_binary, on_ring, ring, wait_until, PATIENCE};
use ringman::{AsyncTcpConnection, EngineError, ListenAddr, Server, Worker};

/// A private directory for this test's socket files, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "rm-unix-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `text` echo worker on `unix://path`.
fn text_echo(path: &Path, threads: usize) -> Worker<()> {
    let mut w = Worker::<()>::new(&format!("unix://{}", path.display())).unwrap();
    w.set_protocol("text").unwrap();
    w.count = threads;
    w.on_message(|c, m, _| {
        c.send(m);
    });
    w
}

/// One line through a std client: sent, echoed back.
fn exchange(path: &Path, line: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(PATIENCE))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut got = String::new();
    BufReader::new(s).read_line(&mut got)?;
    Ok(got.trim_end().to_string())
}

/// A child process killed (and reaped) when dropped, also when the test fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// 20 Python clients (asyncio.open_unix_connection) each write 100 lines in one burst and
/// read them back: every line arrives, in order, on every connection.
#[test]
fn python_unix_clients_get_their_lines_back_in_order() {
    let dir = Dir::new("burst");
    let path = dir.path("echo.sock");
    let mut w = text_echo(&path, 2);
    // Per accepted connection: its socket file, and whether it has no IP peer.
    type Seen = Vec<(Option<PathBuf>, bool)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let s2 = seen.clone();
    w.on_connect(move |c, _| {
        s2.lock().unwrap().push((c.unix_path(), c.remote_addr().is_none()));
    });
    let running = Server::new().add(w).start().expect("starts on a unix path");
    assert_eq!(running.listen_at(0), Some(&ListenAddr::Unix(path.clone())));
    assert_eq!(running.local_addr(0), None, "no TCP address");
    let script = r#"
import asyncio, sys
path = sys.argv[1]
async def one(n):
    r, w = await asyncio.open_unix_connection(path)
    lines = [f"conn {n} line {i} ".encode() + b"x" * (i * 7 % 300) + b"\n" for i in range(100)]
    w.write(b"".join(lines))
    await w.drain()
    for i, want in enumerate(lines):
        got = await asyncio.wait_for(r.readline(), 20)
        if got != want:
            return f"conn {n}: line {i} is {got[:40]!r}, expected {want[:40]!r}"
    w.close()
    await w.wait_closed()
    return None
async def main():
    errs = [e for e in await asyncio.gather(*(one(n) for n in range(20))) if e]
    print("\n".join(errs) if errs else "all 20 x 100 echoed in order")
asyncio.run(main())
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&path).output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "all 20 x 100 echoed in order");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 20, "one on_connect per client");
    for (p, no_ip) in seen {
        assert_eq!(p.as_deref(), Some(path.as_path()), "the connection names its socket file");
        assert!(no_ip, "a unix peer has no IP address");
    }
    running.stop();
}

/// A second server on a path a live server listens on fails with a clear error, and leaves
/// the first one serving; a path that is not a socket is refused and left alone.
#[test]
fn a_live_socket_file_blocks_a_second_server() {
    let dir = Dir::new("live");
    let path = dir.path("live.sock");
    let first = Server::new().add(text_echo(&path, 1)).start().unwrap();
    match Server::new().add(text_echo(&path, 1)).start() {
        Err(EngineError::SocketFileInUse { path: p }) => {
            assert_eq!(p, path);
            let msg = EngineError::SocketFileInUse { path: p }.to_string();
            assert!(msg.contains("already listening") && msg.contains(&path.display().to_string()), "{msg}");
        }
        Err(e) => panic!("expected SocketFileInUse, got {e}"),
        Ok(_) => panic!("a second server started on a live socket file"),
    }
    assert_eq!(exchange(&path, "still here").unwrap(), "still here", "the first server keeps serving");
    // A regular file at the path: refused, not removed.
    let file = dir.path("plain");
    std::fs::write(&file, "keep me").unwrap();
    match Server::new().add(text_echo(&file, 1)).start() {
        Err(EngineError::NotASocket { path: p }) => assert_eq!(p, file),
        Err(e) => panic!("expected NotASocket, got {e}"),
        Ok(_) => panic!("started over a regular file"),
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    first.stop();
}

/// A socket file left by a process killed with SIGKILL (it never removed it) does not
/// block a start: nothing accepts on it, so it is stale and replaced.
#[test]
fn a_stale_file_from_a_killed_process_does_not_block_start() {
    let dir = Dir::new("stale");
    let path = dir.path("stale.sock");
    let mut child = Child(Command::new("python3")
        .arg("-c")
        .arg("import socket, sys, time\ns = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen()\nprint('ready', flush=True)\ntime.sleep(600)\n")
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs"));
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    // While it lives, the file is a live server's.
    assert!(matches!(Server::new().add(text_echo(&path, 1)).start(), Err(EngineError::SocketFileInUse { .. })));
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    assert!(is_socket(&path), "the killed process left its socket file behind");
    let running = Server::new().add(text_echo(&path, 1)).start().expect("a stale socket file does not block start");
    assert_eq!(exchange(&path, "fresh").unwrap(), "fresh");
    running.stop();
}

/// `unix_mode` is applied to the socket file; `unlisten` removes the file and `listen`
/// brings it back; the final stop removes it.
#[test]
fn mode_applied_and_file_removed_on_stop() {
    let dir = Dir::new("mode");
    let path = dir.path("mode.sock");
    let mut w = text_echo(&path, 2);
    w.unix_mode = Some(0o640);
    let running = Server::new().add(w).start().unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o640, "mode {:o}", meta.mode() & 0o7777);
    assert_eq!(exchange(&path, "one").unwrap(), "one");
    let h = running.worker(0).clone();
    h.unlisten();
    wait_until("the socket file is removed by unlisten", || !path.exists());
    assert!(UnixStream::connect(&path).is_err());
    wait_until("listen succeeds again", || match h.listen() {
        Ok(()) => true,
        Err(EngineError::SocketFileInUse { .. }) => false,
        Err(e) => panic!("{e}"),
    });
    assert_eq!(std::fs::symlink_metadata(&path).unwrap().mode() & 0o7777, 0o640, "the mode again");
    assert_eq!(exchange(&path, "two").unwrap(), "two");
    running.stop();
    running.wait();
    assert!(!path.exists(), "the final stop removes the socket file");
}

/// The echo example as an ops daemon on a unix path: a reload hands the socket to the
/// successor (same file, same inode: never removed and re-created) and serving goes on;
/// the final stop removes the file.
#[test]
fn reload_keeps_serving_on_the_same_path() {
    let dir = Dir::new("reload");
    let path = dir.path("e.sock");
    let pid_file = dir.path("e.pid");
    let bin = example_binary("echo");
    let run = |verb: &[&str]| {
        let out = Command::new(&bin)
            .arg(format!("unix://{}", path.display()))
            .args(["--protocol", "text", "--unix-mode", "600", "--threads", "2", "--pid-file"])
            .arg(&pid_file)
            .arg("--log-file")
            .arg(dir.path("ops.log"))
            .args(verb)
            .output()
            .expect("echo runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{verb:?}: {text}");
        text
    };
    let pid = || std::fs::read_to_string(&pid_file).ok()?.trim().parse::<i32>().ok();
    // SAFETY: signal 0 only checks that the process exists.
    let alive = |p: i32| unsafe { libc::kill(p, 0) } == 0;
    run(&["start", "-d"]);
    let pid1 = pid().expect("pid file");
    assert_eq!(exchange(&path, "before").unwrap(), "before");
    let ino = std::fs::symlink_metadata(&path).unwrap().ino();
    let out = run(&["reload"]);
    assert!(out.contains("reloaded"), "{out}");
    let pid2 = pid().unwrap();
    assert_ne!(pid1, pid2);
    wait_until("the old process exits", || !alive(pid1));
    let meta = std::fs::symlink_metadata(&path).expect("the socket file survives the reload");
    assert_eq!(meta.ino(), ino, "the same file: the old process did not remove it");
    assert_eq!(meta.mode() & 0o777, 0o600);
    for i in 0..20 {
        assert_eq!(exchange(&path, &format!("after {i}")).unwrap(), format!("after {i}"));
    }
    let status = run(&["status"]);
    assert!(status.contains(&format!("unix://{}", path.display())), "{status}");
    run(&["stop"]);
    wait_until("the successor exits", || !alive(pid2));
    assert!(!path.exists(), "the final stop removes the socket file");
}

/// A ringman client (`unix://` with the `text` protocol) talks to a Python asyncio unix
/// server that answers each line upper-cased.
#[test]
fn a_ringman_unix_client_talks_to_a_python_unix_server() {
    let dir = Dir::new("client");
    let path = dir.path("py.sock");
    let mut server = Child(
        Command::new("python3")
            .arg("-c")
            .arg(
                r#"
import asyncio, sys
async def handle(r, w):
    while line := await r.readline():
        w.write(line.upper())
        await w.drain()
    w.close()
async def main():
    s = await asyncio.start_unix_server(handle, sys.argv[1])
    print("ready", flush=True)
    await s.serve_forever()
asyncio.run(main())
"#,
            )
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let ring = ring();
    let url = format!("unix://{}", path.display());
    let (got, unix_path, remote) = on_ring(&ring, move || async move {
        let mut c = AsyncTcpConnection::new(&url).unwrap();
        c.set_protocol("text").unwrap();
        let conn = c.connect_async().await.expect("connects over the unix socket");
        let mut msgs = conn.messages().unwrap();
        for i in 0..100 {
            conn.send(format!("line {i} of the ringman client"));
        }
        let mut got = Vec::new();
        for _ in 0..100 {
            let Some(m) = msgs.recv().await else { break };
            got.push(String::from_utf8_lossy(&m.data).to_string());
        }
        let r = (got, conn.unix_path(), conn.remote_addr());
        conn.close(None);
        r
    });
    drop(server);
    let want: Vec<String> = (0..100).map(|i| format!("LINE {i} OF THE RINGMAN CLIENT")).collect();
    assert_eq!(got, want);
    assert_eq!(unix_path.as_deref(), Some(path.as_path()), "the client names the server's socket file");
    assert_eq!(remote, None);
    // A path nobody listens on: CONNECT_FAIL naming it.
    let url = format!("unix://{}", dir.path("nobody.sock").display());
    let err = on_ring(&ring, move || async move {
        AsyncTcpConnection::new(&url).unwrap().connect_async().await.err().map(|e| e.to_string())
    });
    let err = err.expect("connecting to a missing socket file fails");
    assert!(err.contains("nobody.sock"), "{err}");
    ring.stop();
}
