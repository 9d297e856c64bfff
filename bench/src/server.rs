//! Server processes: building the peers, spawning pinned servers, sampling their CPU and RSS.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{Scenario, ServerKind};
use crate::error::ServerError;

/// How long a server may take to accept its first connection.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Peer binaries built from `bench/peers`.
pub const PEER_BINS: [&str; 6] =
    ["tokio-peer", "tokio-uring-peer", "monoio-peer", "floor-peer", "epoll-peer", "fastwebsockets-peer"];

/// A free loopback address for a server told its port before it binds: outside the
/// kernel's ephemeral range and reserved for this process ([`crate::ports`]).
pub fn free_addr() -> Result<SocketAddr, ServerError> {
    let port = crate::ports::free_port().ok_or(ServerError::NoFreePort)?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Path of a peer binary.
pub fn peer_bin(peers_dir: &Path, name: &str) -> PathBuf {
    peers_dir.join("target").join("release").join(name)
}

/// Builds the peers workspace (`cargo build --release`, a few seconds when nothing changed),
/// so an edited peer is never measured from a stale binary.
pub fn ensure_peers(peers_dir: &Path, log_dir: &Path) -> Result<(), ServerError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ServerError::Io { path, source }
    };
    std::fs::create_dir_all(log_dir).map_err(io(log_dir))?;
    let log = log_dir.join("peers-build.log");
    let file = std::fs::File::create(&log).map_err(io(&log))?;
    let err = file.try_clone().map_err(io(&log))?;
    eprintln!("building peers: cargo build --release --manifest-path {}", peers_dir.join("Cargo.toml").display());
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--release", "--manifest-path"])
        .arg(peers_dir.join("Cargo.toml"))
        // A CARGO_TARGET_DIR inherited from `cargo run` must not redirect the peers' build.
        .env("CARGO_TARGET_DIR", peers_dir.join("target"))
        .stdout(file)
        .stderr(err);
    let status = cmd.status().map_err(|source| ServerError::Spawn { program: "cargo".into(), source })?;
    if !status.success() {
        return Err(ServerError::PeerBuild { status: status.to_string(), log });
    }
    if let Some(missing) = PEER_BINS.iter().find(|b| !peer_bin(peers_dir, b).exists()) {
        return Err(ServerError::Io {
            path: peer_bin(peers_dir, missing),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Ok(())
}

/// Pins the calling thread (and the children it spawns later) to `cpu`.
pub fn pin_self(cpu: usize) -> std::io::Result<()> {
    set_affinity(0, cpu)
}

pub(crate) fn set_affinity(pid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only writes inside `set`; cpu is bounds-checked by the macro's caller below.
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid set pointer and size.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A running server process (killed on drop).
pub struct ServerProc {
    /// Which server.
    pub kind: ServerKind,
    /// Listening address.
    pub addr: SocketAddr,
    child: Child,
    stderr_path: PathBuf,
    /// Scratch directory (nginx config), removed on drop.
    tmp: Option<PathBuf>,
}

/// The Workerman scheme ringman serves a scenario under.
pub fn ringman_scheme(s: Scenario) -> &'static str {
    match s {
        Scenario::Echo => "tcp",
        Scenario::Text => "text",
        Scenario::Frame => "frame",
        Scenario::Ws => "websocket",
        Scenario::Http => "http",
        Scenario::Fanout => "fanout",
        Scenario::Proxy => "proxy",
        Scenario::FanoutRedis => "fanout-redis",
        Scenario::Udp => "udp",
        Scenario::Https | Scenario::Handshake => "https",
        Scenario::Wss => "wss",
    }
}

/// The TLS settings every TLS server of the bench is held to, in nginx's words: TLS 1.3
/// only, the one cipher suite and key-exchange group the generator offers
/// ([`crate::tls_gen::SUITE`], [`crate::tls_gen::GROUP`]), session tickets on (OpenSSL's
/// default: two stateless tickets after each full handshake, as rustls sends).
pub const NGINX_TLS: &str = "ssl_protocols TLSv1.3; ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256; \
                             ssl_ecdh_curve X25519; ssl_session_tickets on;";

fn nginx_conf(dir: &Path, addr: SocketAddr, tls: Option<&crate::pki::Pki>, www: Option<&Path>) -> String {
    let d = dir.display();
    let (ssl, certs) = match tls {
        None => ("", String::new()),
        Some(p) => (
            " ssl",
            format!(
                "    ssl_certificate {};\n    ssl_certificate_key {};\n    {NGINX_TLS}\n",
                p.cert().display(),
                p.key().display()
            ),
        ),
    };
    // `--file-size`: files from `www` with sendfile (Debian's default `sendfile on; tcp_nopush
    // on;`), `.bin` as application/octet-stream as ringman types it; no open-file cache (off
    // by default).
    let files = www.map_or_else(String::new, |w| {
        format!(
            "location / {{ root {}; sendfile on; tcp_nopush on; types {{ application/octet-stream bin; }} }}\n  ",
            w.display()
        )
    });
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nworker_rlimit_nofile 20000;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 20000; use epoll; multi_accept on; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen {addr}{ssl} backlog=4096;\n{certs}\
         {files}location /hello {{ default_type text/plain; return 200 \"Hello World\"; }}\n  }}\n}}\n"
    )
}

/// `name` in a directory of `PATH` or in `/usr/sbin`, `/sbin`.
pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl ServerProc {
    /// Starts `kind` serving `scenario` on a free port, pinned to `cpu`, and waits until it
    /// accepts connections.
    pub fn start(kind: ServerKind, scenario: Scenario, cpu: usize, peers_dir: &Path) -> Result<Self, ServerError> {
        Self::spawn(kind, scenario, None, None, None, cpu, peers_dir)
    }

    /// [`ServerProc::start`] with the files of `file_size` (see [`ServerProc::start_files`])
    /// and, for the peers that take it ([`takes_buf_size`]), `--buf-size buf_size`.
    pub fn start_with(
        kind: ServerKind,
        scenario: Scenario,
        file_size: Option<usize>,
        buf_size: Option<usize>,
        cpu: usize,
        peers_dir: &Path,
    ) -> Result<Self, ServerError> {
        Self::spawn(kind, scenario, None, file_size, buf_size, cpu, peers_dir)
    }

    /// Starts `kind` serving `http` with a directory that holds one file of `file_size`
    /// bytes at [`crate::wire::file_path`] (`--file-size`): nginx from its `root` with
    /// sendfile, ringman with its `WebServer` (`/hello` falls through to the usual answer),
    /// the tokio peer as a hyper file server (`--mode files`).
    pub fn start_files(kind: ServerKind, file_size: usize, cpu: usize, peers_dir: &Path) -> Result<Self, ServerError> {
        Self::spawn(kind, Scenario::Http, None, Some(file_size), None, cpu, peers_dir)
    }

    /// Starts `kind` as a TCP proxy (scenario `proxy`) on a free port that forwards every
    /// connection to `upstream`, pinned to `cpu`, and waits until it accepts connections.
    pub fn start_proxy(
        kind: ServerKind,
        upstream: SocketAddr,
        cpu: usize,
        peers_dir: &Path,
    ) -> Result<Self, ServerError> {
        Self::spawn(kind, Scenario::Proxy, Some(upstream), None, None, cpu, peers_dir)
    }

    /// Starts `kind` serving `fanout-redis` on a free port with its channel on the Redis at
    /// `redis`, pinned to `cpu`, and waits until it accepts connections.
    pub fn start_fanout_redis(
        kind: ServerKind,
        redis: SocketAddr,
        cpu: usize,
        peers_dir: &Path,
    ) -> Result<Self, ServerError> {
        Self::spawn(kind, Scenario::FanoutRedis, Some(redis), None, None, cpu, peers_dir)
    }

    fn spawn(
        kind: ServerKind,
        scenario: Scenario,
        upstream: Option<SocketAddr>,
        file_size: Option<usize>,
        buf_size: Option<usize>,
        cpu: usize,
        peers_dir: &Path,
    ) -> Result<Self, ServerError> {
        if !kind.supports(scenario) {
            return Err(ServerError::Unsupported { server: kind.name(), scenario: scenario.name() });
        }
        if matches!(scenario, Scenario::Proxy | Scenario::FanoutRedis) && upstream.is_none() {
            return Err(ServerError::NoUpstream);
        }
        let addr = free_addr()?;
        // TLS servers all serve the harness's one certificate (made on first use).
        let pki = if scenario.is_tls() { Some(crate::pki::shared()?) } else { None };
        let tmp = std::env::temp_dir().join(format!("ringman-bench-{}-{}", std::process::id(), addr.port()));
        std::fs::create_dir_all(&tmp).map_err(|source| ServerError::Io { path: tmp.clone(), source })?;
        // `ringman-web` always has its directory: a file beside the requests that fall through.
        let file_size = match kind {
            ServerKind::RingmanWeb => file_size.or(Some(crate::wire::FALLTHROUGH_FILE_SIZE)),
            _ => file_size,
        };
        let www = match file_size {
            Some(size)
                if scenario == Scenario::Http
                    && matches!(
                        kind,
                        ServerKind::Ringman
                            | ServerKind::RingmanStatic
                            | ServerKind::RingmanWeb
                            | ServerKind::Nginx
                            | ServerKind::Tokio
                    ) =>
            {
                let www = tmp.join("www");
                std::fs::create_dir_all(&www).map_err(|source| ServerError::Io { path: www.clone(), source })?;
                let file = www.join(crate::wire::file_path(size).trim_start_matches('/'));
                std::fs::write(&file, crate::wire::file_bytes(size))
                    .map_err(|source| ServerError::Io { path: file.clone(), source })?;
                Some(www)
            }
            Some(_) => return Err(ServerError::Unsupported { server: kind.name(), scenario: "http --file-size" }),
            None => None,
        };
        let mut cmd = match kind {
            ServerKind::Ringman | ServerKind::RingmanStatic | ServerKind::RingmanWeb => {
                let exe =
                    std::env::current_exe().map_err(|source| ServerError::Io { path: "current_exe".into(), source })?;
                let mut c = Command::new(exe);
                c.arg("serve-ringman").arg(format!("{}://{addr}", ringman_scheme(scenario)));
                if let Some(up) = upstream {
                    let scheme = if scenario == Scenario::FanoutRedis { "redis" } else { "tcp" };
                    c.arg(format!("{scheme}://{up}"));
                }
                if let Some(p) = pki {
                    c.arg(p.cert()).arg(p.key());
                }
                let http = if kind == ServerKind::RingmanStatic { "static" } else { "build" };
                c.env(crate::ringman_server::HTTP_ENV, http);
                match &www {
                    Some(w) => c.env(crate::ringman_server::WEB_ROOT_ENV, w),
                    None => c.env_remove(crate::ringman_server::WEB_ROOT_ENV),
                };
                c
            }
            ServerKind::Nginx => {
                let nginx = find_on_path("nginx").ok_or(ServerError::NotInstalled("nginx"))?;
                let conf = tmp.join("nginx.conf");
                std::fs::write(&conf, nginx_conf(&tmp, addr, pki, www.as_deref()))
                    .map_err(|source| ServerError::Io { path: conf.clone(), source })?;
                let mut c = Command::new(nginx);
                c.arg("-e").arg(tmp.join("error.log")).arg("-c").arg(&conf).arg("-p").arg(&tmp);
                c
            }
            _ => {
                let bin = peer_bin(peers_dir, kind_bin(kind));
                let mut c = Command::new(bin);
                let mode = match kind {
                    ServerKind::TokioShared => "echo-shared",
                    // One HTTPS server for keep-alive and for full handshakes.
                    _ if scenario == Scenario::Handshake => "https",
                    // hyper serving the directory.
                    _ if www.is_some() => "files",
                    _ => scenario.name(),
                };
                c.arg("--addr").arg(addr.to_string()).arg("--mode").arg(mode);
                if let Some(w) = &www {
                    c.arg("--root").arg(w);
                }
                if let Some(b) = buf_size.filter(|_| takes_buf_size(kind)) {
                    c.arg("--buf-size").arg(b.to_string());
                }
                if let Some(up) = upstream {
                    c.arg("--upstream").arg(up.to_string());
                }
                if let Some(p) = pki {
                    c.arg("--cert").arg(p.cert()).arg("--key").arg(p.key());
                }
                c
            }
        };
        let stderr_path = tmp.join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|source| ServerError::Io { path: stderr_path.clone(), source })?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // sched_setaffinity (a raw syscall, async-signal-safe); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                let _ = set_affinity(0, cpu);
                Ok(())
            });
        }
        let program = format!("{:?}", cmd.get_program());
        let child = cmd.spawn().map_err(|source| ServerError::Spawn { program, source })?;
        let mut proc = ServerProc { kind, addr, child, stderr_path, tmp: Some(tmp) };
        proc.wait_ready(scenario == Scenario::Udp)?;
        Ok(proc)
    }

    /// Waits until the server accepts connections (`udp`: answers a datagram).
    fn wait_ready(&mut self, udp: bool) -> Result<(), ServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let probe = udp.then(|| std::net::UdpSocket::bind("127.0.0.1:0")).transpose().ok().flatten();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServerError::Exited { status: status.to_string(), stderr: self.stderr_tail() });
            }
            if let Some(p) = &probe {
                let _ = p.set_read_timeout(Some(Duration::from_millis(200)));
                if p.send_to(b"ready?", self.addr).is_ok() && p.recv(&mut [0u8; 16]).is_ok() {
                    return Ok(());
                }
            } else if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ServerError::StartTimeout(self.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines the server wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // A Rust panic: the message is the line after "panicked at", not the backtrace tail.
        if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
            return lines[i..(i + 2).min(lines.len())].join(" ");
        }
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// Process id of the server (for nginx: the master; its worker is a child).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns an error if the server has exited.
    pub fn check_alive(&mut self) -> Result<(), ServerError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(ServerError::Exited { status: status.to_string(), stderr: self.stderr_tail() }),
            _ => Ok(()),
        }
    }

    /// CPU time (user + system) of the server and its descendants.
    pub fn cpu(&self) -> Duration {
        tree_cpu(self.pid())
    }

    /// Resident set size in bytes of the server and its descendants.
    pub fn rss(&self) -> u64 {
        tree(self.pid()).iter().map(|&p| proc_rss(p)).sum()
    }
}

/// Whether `kind`'s echo takes `--buf-size` (its receive buffer: per connection, or for the
/// floor each provided buffer of its ring).
pub fn takes_buf_size(kind: ServerKind) -> bool {
    matches!(
        kind,
        ServerKind::Tokio | ServerKind::TokioUring | ServerKind::Monoio | ServerKind::Epoll | ServerKind::Floor
    )
}

fn kind_bin(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::TokioUring => "tokio-uring-peer",
        ServerKind::Monoio => "monoio-peer",
        ServerKind::Floor => "floor-peer",
        ServerKind::Epoll => "epoll-peer",
        ServerKind::Fastwebsockets => "fastwebsockets-peer",
        _ => "tokio-peer",
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

/// Busy time of one CPU (all but idle and iowait) from /proc/stat.
pub fn cpu_busy(cpu: usize) -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_cpu_busy(&stat, cpu, clk_tck()).unwrap_or_default()
}

/// Parses the busy time of `cpuN` out of /proc/stat text.
pub fn parse_cpu_busy(stat: &str, cpu: usize, tck: u64) -> Option<Duration> {
    let name = format!("cpu{cpu}");
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some(Duration::from_nanos((total - idle) * 1_000_000_000 / tck))
}

/// CPU time (user + system) of `pid` and its descendants.
pub fn tree_cpu(pid: u32) -> Duration {
    tree(pid).iter().map(|&p| proc_cpu(p)).sum()
}

/// `pid` and all its descendants (via `/proc/<pid>/task/<tid>/children`).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(kids.split_whitespace().filter_map(|k| k.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    out
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn clk_tck() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of a process (all its threads) from `/proc/<pid>/stat`.
pub fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    parse_stat_cpu(&stat, clk_tck()).unwrap_or_default()
}

/// Parses utime + stime (fields 14 and 15) out of a `/proc/<pid>/stat` line.
pub fn parse_stat_cpu(stat: &str, tck: u64) -> Option<Duration> {
    // The command name (field 2) may contain spaces; fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    // rest starts at field 3 (state); utime is field 14 => index 11.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / tck))
}

/// VmRSS of a process in bytes, from `/proc/<pid>/stat`us.
pub fn proc_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    parse_vmrss(&status).unwrap_or(0)
}

/// Parses `VmRSS:  1234 kB` out of `/proc/<pid>/stat`us into bytes.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::LoadOpts;

    #[test]
    fn stat_parsing_handles_spaces_in_comm() {
        let stat = "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
    }

    #[test]
    fn proc_stat_busy() {
        let stat = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 0 50 1000 20 0 10 0 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_cpu_busy(stat, 0, 100), Some(Duration::from_millis(1600)));
        assert_eq!(parse_cpu_busy(stat, 1, 100), Some(Duration::from_millis(60)));
        assert_eq!(parse_cpu_busy(stat, 7, 100), None);
    }

    #[test]
    fn own_process_is_visible() {
        let me = std::process::id();
        assert!(proc_rss(me) > 0);
        assert!(tree(me).contains(&me));
        assert_eq!(parse_vmrss("Name: x\nVmRSS:\t  2048 kB\n"), Some(2 * 1024 * 1024));
    }

    #[test]
    fn nginx_conf_has_the_essentials() {
        let c = nginx_conf(Path::new("/tmp/x"), "127.0.0.1:8080".parse().unwrap(), None, None);
        assert!(!c.contains("ssl"), "{c}");
        assert!(!c.contains("sendfile"));
        let f = nginx_conf(Path::new("/tmp/x"), "127.0.0.1:8080".parse().unwrap(), None, Some(Path::new("/tmp/x/www")));
        assert!(f.contains("root /tmp/x/www; sendfile on;") && f.contains("return 200"), "{f}");
        for needle in [
            "daemon off;",
            "worker_processes 1;",
            "access_log off;",
            "return 200 \"Hello World\"",
            "listen 127.0.0.1:8080",
        ] {
            assert!(c.contains(needle), "{needle}");
        }
        let pki = crate::pki::shared().unwrap();
        let c = nginx_conf(Path::new("/tmp/x"), "127.0.0.1:8443".parse().unwrap(), Some(pki), None);
        for needle in [
            "listen 127.0.0.1:8443 ssl backlog=4096;".to_string(),
            format!("ssl_certificate {};", pki.cert().display()),
            format!("ssl_certificate_key {};", pki.key().display()),
            "ssl_protocols TLSv1.3;".into(),
            "Ciphersuites TLS_AES_128_GCM_SHA256;".into(),
            "ssl_ecdh_curve X25519;".into(),
            "return 200 \"Hello World\"".into(),
        ] {
            assert!(c.contains(&needle), "{needle}: {c}");
        }
    }

    #[test]
    fn every_peer_kind_is_built() {
        use crate::cli::ServerKind;
        let own = [ServerKind::Ringman, ServerKind::RingmanStatic, ServerKind::RingmanWeb, ServerKind::Nginx];
        for k in ServerKind::ALL.into_iter().filter(|k| !own.contains(k)) {
            assert!(PEER_BINS.contains(&kind_bin(k)), "{k:?} runs {} which ensure_peers does not check", kind_bin(k));
        }
        assert_eq!(kind_bin(ServerKind::Fastwebsockets), "fastwebsockets-peer");
    }

    /// One `GET` of `path` on a fresh connection: the head and the body.
    fn fetch(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
        (String::from_utf8_lossy(&all[..end]).into_owned(), all[end..].to_vec())
    }

    /// The file servers of P14 (nginx when installed, hyper on tokio when the peers are built)
    /// send the file's exact bytes with a 200 and the headers the results state, and the
    /// generator's keep-alive load over them is fully answered, its response bytes counted.
    #[test]
    fn file_servers_send_the_same_body() {
        let Some(peers) = crate::testutil::built_peers("the tokio file server") else { return };
        let mut kinds = vec![ServerKind::Tokio];
        match find_on_path("nginx") {
            Some(_) => kinds.push(ServerKind::Nginx),
            None => eprintln!("nginx not installed: its file server is not tested"),
        }
        for size in [30_000, 1_000_000] {
            let path = crate::wire::file_path(size);
            for &kind in &kinds {
                let srv = ServerProc::start_files(kind, size, 0, &peers).unwrap();
                let (head, body) = fetch(srv.addr, &path);
                assert!(head.starts_with("HTTP/1.1 200"), "{kind:?}: {head}");
                assert!(body == crate::wire::file_bytes(size), "{kind:?}: {} bytes, not the file's", body.len());
                let (miss, _) = fetch(srv.addr, "/nope.bin");
                assert!(miss.starts_with("HTTP/1.1 404"), "{kind:?}: {miss}");
                let mut o = crate::testutil::short_load(Scenario::Http, 4, 2, None);
                o.wire.file_size = Some(size);
                o.wire.path = Some(path.clone());
                let r = crate::uring_gen::run(srv.addr, &o, &Default::default(), |_| {}).unwrap();
                assert!(r.drained && r.received > 0, "{kind:?}: {r:?}");
                assert_eq!((r.sent, r.lost_conns, r.bad_status), (r.received, 0, 0), "{kind:?}: {r:?}");
                let w = r.wire.unwrap();
                assert!(w.response > size as f64 && w.response < size as f64 + 400.0, "{kind:?}: {w:?}");
                let names = w.headers.unwrap_or_default().to_ascii_lowercase();
                for h in ["content-length", "etag", "last-modified", "accept-ranges"] {
                    assert!(names.contains(h), "{kind:?}: {h} missing from {names}");
                }
            }
        }
    }

    /// The echo peers take `--buf-size` (P5 gives them ringman's receive buffer, P13 the
    /// floor 64 KiB) and still echo messages larger than their buffer whole.
    #[test]
    fn echo_peers_take_a_receive_buffer_size() {
        let Some(peers) = crate::testutil::built_peers("the echo peers' --buf-size") else { return };
        let kinds =
            [ServerKind::Tokio, ServerKind::TokioUring, ServerKind::Monoio, ServerKind::Epoll, ServerKind::Floor];
        for kind in kinds {
            assert!(takes_buf_size(kind));
            let srv = ServerProc::start_with(kind, Scenario::Echo, None, Some(4096), 0, &peers)
                .unwrap_or_else(|e| panic!("{kind:?} with --buf-size 4096: {e}"));
            let o = LoadOpts { size: 20_000, ..crate::testutil::short_load(Scenario::Echo, 4, 2, None) };
            let r = crate::uring_gen::run(srv.addr, &o, &Default::default(), |_| {}).unwrap();
            assert!(r.drained && r.received > 0, "{kind:?}: {r:?}");
            assert_eq!((r.sent, r.lost_conns), (r.received, 0), "{kind:?}: {r:?}");
            assert_eq!(r.wire.map(|w| w.response), Some(20_000.0), "{kind:?}");
        }
        assert!(!takes_buf_size(ServerKind::Ringman) && !takes_buf_size(ServerKind::TokioShared));
    }

    /// Ports handed out lie outside the ephemeral range (where outgoing connections take
    /// their source ports), are bindable, and never repeat within the process.
    #[test]
    fn free_addrs_are_loopback_outside_the_ephemeral_range_and_distinct() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let v: Vec<u16> = range.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let a = free_addr().unwrap();
            assert!(a.ip().is_loopback() && a.port() != 0);
            assert!(!(v[0]..=v[1]).contains(&a.port()), "{a} is in the ephemeral range {range}");
            assert!(seen.insert(a.port()), "{a} handed out twice");
            std::net::TcpListener::bind(a).unwrap();
        }
    }
}
