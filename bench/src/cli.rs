//! Command-line parsing (hand written: the crate stays light for the main test suite).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ArgError;
use crate::target::Target;

/// Workload shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Raw TCP echo of `size`-byte messages.
    Echo,
    /// Newline-delimited lines (`text://`).
    Text,
    /// 4-byte big-endian total-length frames (`frame://`).
    Frame,
    /// WebSocket text frames, echoed.
    Ws,
    /// HTTP/1.1 `GET /hello`, pipelined `depth` deep.
    Http,
    /// WebSocket push fan-out: `conns` subscribers, one publisher at `--rate` messages/s
    /// whose messages the server broadcasts (`src/fanout.rs`).
    Fanout,
    /// Raw echo through a TCP proxy: load generator → the proxy under test → an echo
    /// server the harness starts as its upstream (`src/proxy.rs`). On the wire it is `echo`.
    Proxy,
    /// Push fan-out across two server processes through a Redis the harness starts
    /// (`src/redis_bench.rs`): the subscribers are spread over both, the publisher talks to
    /// the first, and every `pub:` message goes through Redis pub/sub. On the wire it is
    /// `fanout`.
    FanoutRedis,
    /// UDP echo: `conns` sockets, `depth` datagrams of `size` bytes in flight on each
    /// (`src/udp_gen.rs`).
    Udp,
    /// HTTPS keep-alive: `http` inside TLS 1.3 on connections opened (and handshaken) before
    /// the run (`src/tls_gen.rs`).
    Https,
    /// Full TLS handshakes: each connection connects, makes a full TLS 1.3 handshake
    /// (resumption off), sends one `GET /hello`, reads the answer and closes; `conns` such
    /// connections at a time (`src/tls_gen.rs`). A message is one whole connection.
    Handshake,
    /// WebSocket echo inside TLS 1.3 (wss; `src/tls_gen.rs`).
    Wss,
}

impl Scenario {
    /// All scenarios.
    pub const ALL: [Scenario; 12] = [
        Scenario::Echo,
        Scenario::Text,
        Scenario::Frame,
        Scenario::Ws,
        Scenario::Http,
        Scenario::Fanout,
        Scenario::Proxy,
        Scenario::FanoutRedis,
        Scenario::Udp,
        Scenario::Https,
        Scenario::Handshake,
        Scenario::Wss,
    ];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::Text => "text",
            Scenario::Frame => "frame",
            Scenario::Ws => "ws",
            Scenario::Http => "http",
            Scenario::Fanout => "fanout",
            Scenario::Proxy => "proxy",
            Scenario::FanoutRedis => "fanout-redis",
            Scenario::Udp => "udp",
            Scenario::Https => "https",
            Scenario::Handshake => "handshake",
            Scenario::Wss => "wss",
        }
    }

    /// Whether the scenario runs inside TLS (the TLS generator, `src/tls_gen.rs`).
    pub fn is_tls(self) -> bool {
        matches!(self, Scenario::Https | Scenario::Handshake | Scenario::Wss)
    }

    /// The protocol carried inside TLS (`https` and `handshake`: `http`; `wss`: `ws`); any
    /// other scenario is itself.
    pub fn plain(self) -> Scenario {
        match self {
            Scenario::Https | Scenario::Handshake => Scenario::Http,
            Scenario::Wss => Scenario::Ws,
            s => s,
        }
    }

    /// What the load generator speaks: `proxy` is `echo` on the wire, `fanout-redis` is
    /// `fanout`, the rest are themselves.
    pub fn wire(self) -> Scenario {
        match self {
            Scenario::Proxy => Scenario::Echo,
            Scenario::FanoutRedis => Scenario::Fanout,
            s => s,
        }
    }

    /// Parses a scenario name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// Which server is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// ringman itself (`ringman-bench serve-ringman`).
    Ringman,
    /// tokio current_thread (+ hyper, tokio-tungstenite).
    Tokio,
    /// tokio-uring.
    TokioUring,
    /// monoio with its io_uring driver.
    Monoio,
    /// The hand-written io_uring floor.
    Floor,
    /// nginx (`return 200`), if installed.
    Nginx,
    /// ringman answering HTTP from a pre-encoded response (`RINGMAN_HTTP=static`).
    RingmanStatic,
    /// The hand-written epoll floor (std + libc, level-triggered, one thread).
    Epoll,
    /// fastwebsockets on tokio current_thread, upgraded through hyper 1 (WebSocket only).
    Fastwebsockets,
    /// The tokio echo reading into one buffer per thread (P5's shared-buffer variant: idle
    /// connections hold no buffer).
    TokioShared,
    /// ringman's `http` server behind a `WebServer` of a directory holding one file: requests
    /// for other paths (`/hello`) fall through to the application (P15).
    RingmanWeb,
}

impl ServerKind {
    /// All servers, in report order.
    pub const ALL: [ServerKind; 11] = [
        ServerKind::Ringman,
        ServerKind::RingmanStatic,
        ServerKind::RingmanWeb,
        ServerKind::Tokio,
        ServerKind::TokioUring,
        ServerKind::Monoio,
        ServerKind::Floor,
        ServerKind::Epoll,
        ServerKind::Nginx,
        ServerKind::Fastwebsockets,
        ServerKind::TokioShared,
    ];

    /// Name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Ringman => "ringman",
            ServerKind::Tokio => "tokio",
            ServerKind::TokioUring => "tokio-uring",
            ServerKind::Monoio => "monoio",
            ServerKind::Floor => "floor",
            ServerKind::Nginx => "nginx",
            ServerKind::RingmanStatic => "ringman-static",
            ServerKind::Epoll => "epoll",
            ServerKind::Fastwebsockets => "fastwebsockets",
            ServerKind::TokioShared => "tokio-shared",
            ServerKind::RingmanWeb => "ringman-web",
        }
    }

    /// Parses a server name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Whether this server implements `scenario` (for `proxy`: is a proxy).
    pub fn supports(self, scenario: Scenario) -> bool {
        match self {
            ServerKind::Ringman => true,
            // Only ringman has the Redis channel.
            ServerKind::Tokio => scenario != Scenario::FanoutRedis,
            _ if scenario == Scenario::Udp => false,
            ServerKind::TokioUring
            | ServerKind::Monoio
            | ServerKind::Floor
            | ServerKind::Epoll
            | ServerKind::TokioShared => scenario == Scenario::Echo,
            // nginx serves `/hello` over TLS too, but echoes no WebSocket.
            ServerKind::Nginx => matches!(scenario, Scenario::Http | Scenario::Https | Scenario::Handshake),
            ServerKind::RingmanStatic | ServerKind::RingmanWeb => scenario == Scenario::Http,
            ServerKind::Fastwebsockets => scenario == Scenario::Ws,
        }
    }
}

/// Which load generator drives the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Generator {
    /// io_uring: multishot receive into a provided-buffer ring, sends batched per loop turn
    /// (`src/uring_gen.rs`), one or more threads.
    Uring,
    /// The single-threaded epoll generator (`src/loadgen.rs`).
    Classic,
}

impl Generator {
    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Generator::Uring => "uring",
            Generator::Classic => "classic",
        }
    }

    /// Parses a generator name.
    pub fn parse(s: &str) -> Option<Self> {
        [Generator::Uring, Generator::Classic].into_iter().find(|g| g.name() == s)
    }
}

/// Workload options shared by `run` and the suite.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOpts {
    /// Workload.
    pub scenario: Scenario,
    /// Connections.
    pub conns: usize,
    /// Payload bytes per message (echo/text/frame/ws; ignored by http).
    pub size: usize,
    /// Messages in flight per connection (closed loop).
    pub depth: usize,
    /// Measured window.
    pub duration: Duration,
    /// Unmeasured run before the window.
    pub warmup: Duration,
    /// Open loop: messages per second overall (None = closed loop).
    pub rate: Option<f64>,
    /// Path, `Host` and payload file (default: the suite's wire format).
    pub wire: crate::wire::WireSpec,
}

impl Default for LoadOpts {
    fn default() -> Self {
        LoadOpts {
            scenario: Scenario::Echo,
            conns: 64,
            size: 64,
            depth: 1,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            rate: None,
            wire: Default::default(),
        }
    }
}

/// Placement and paths shared by `run` and `compare`.
#[derive(Debug, Clone, PartialEq)]
pub struct Env {
    /// CPU the server is pinned to.
    pub server_cpu: usize,
    /// CPU the load generator is pinned to.
    pub client_cpu: usize,
    /// The peers workspace (`bench/peers`).
    pub peers_dir: PathBuf,
    /// Output directory for `compare` (`bench/out`).
    pub out_dir: PathBuf,
    /// Load generator.
    pub generator: Generator,
    /// Load generator threads (uring only; every thread inherits the client CPU pinning
    /// unless `client_cpus` is set).
    pub client_threads: usize,
    /// `--client-cpus`: CPUs for the generator threads, thread `t` pinned to
    /// `client_cpus[t % len]` (uring only). Empty = every thread on `client_cpu`.
    pub client_cpus: Vec<usize>,
    /// Open loop, uring only: time resolution (send batches no finer, responses reaped at most
    /// this late).
    pub pace: Duration,
}

impl Default for Env {
    fn default() -> Self {
        let bench = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        Env {
            server_cpu: 0,
            client_cpu: 1,
            peers_dir: bench.join("peers"),
            out_dir: bench.join("out"),
            generator: Generator::Uring,
            client_threads: 1,
            client_cpus: Vec::new(),
            pace: Duration::from_micros(20),
        }
    }
}

impl Env {
    /// The CPUs the load generator runs on: `--client-cpus`, else `--client-cpu`.
    pub fn generator_cpus(&self) -> Vec<usize> {
        if self.client_cpus.is_empty() {
            vec![self.client_cpu]
        } else {
            self.client_cpus.clone()
        }
    }
}

/// Parses a CPU list: `1`, `1,2`, `0-3`, `1,4-5` (no duplicates).
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?),
            None => {
                let c = part.parse::<usize>().ok()?;
                (c, c)
            }
        };
        if lo > hi || hi >= libc::CPU_SETSIZE as usize {
            return None;
        }
        for c in lo..=hi {
            if out.contains(&c) {
                return None;
            }
            out.push(c);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Where `compare` reads its goals and writes its results file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompareFiles {
    /// `--results FILE`. None: `bench/RESULTS.md` after a whole-suite full run (no `--quick`,
    /// `--cells` or `--servers`), else `RESULTS.md` in the `--out` directory, so a partial or
    /// quick run never replaces the repository's file unless asked to.
    pub results: Option<PathBuf>,
    /// `--goals FILE`. None: `bench/goals.json`.
    pub goals: Option<PathBuf>,
}

/// What `run` loads.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// A server the harness starts (`--server`).
    Spawn(ServerKind),
    /// A server that is already running (`--target URL [--target-pid PID]`).
    Target {
        /// Where it listens and which protocol it speaks.
        target: Target,
        /// Its process, for the server CPU columns.
        pid: Option<u32>,
    },
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // built once per process; boxing would only add noise
pub enum Command {
    /// One measurement.
    Run {
        /// Server to measure.
        server: Subject,
        /// Workload.
        load: LoadOpts,
        /// Placement.
        env: Env,
        /// `--payload FILE`: message payload read from a file (loaded by the caller).
        payload: Option<PathBuf>,
        /// `--json FILE`: also write the result as JSON.
        json: Option<PathBuf>,
    },
    /// The standard suite against every available server.
    Compare {
        /// Short runs (whole suite in a few minutes).
        quick: bool,
        /// Only these servers (None = all).
        only: Option<Vec<ServerKind>>,
        /// Placement.
        env: Env,
        /// Rounds per cell (None = 5, or 3 with `--quick`).
        repeat: Option<usize>,
        /// Seed of the per-round server order (None = from the clock).
        seed: Option<u64>,
        /// `--cells P10,P11`: only these suite ids (None = all).
        cells: Option<Vec<String>>,
        /// `--results FILE`, `--goals FILE`.
        files: CompareFiles,
    },
    /// Serve `<scheme>://ip:port` with ringman (the server process the harness spawns);
    /// `proxy://ip:port` takes the upstream `tcp://host:port` as a second argument,
    /// `fanout-redis://ip:port` the broker `redis://host:port`; `https://ip:port` and
    /// `wss://ip:port` the certificate chain and key files.
    ServeRingman {
        /// `<scheme>://ip:port` to listen on.
        addr: String,
        /// `proxy://`: the upstream every accepted connection is piped to; `fanout-redis://`:
        /// the Redis carrying the channel.
        upstream: Option<String>,
        /// `https://`, `wss://`: the certificate chain and its key (PEM files).
        tls: Option<(PathBuf, PathBuf)>,
    },
    /// The Redis client's pipelined GET/SET rate beside `redis-benchmark`'s against the same
    /// `redis-server` (`src/redis_bench.rs`).
    RedisClient(RedisClientOpts),
    /// Print usage.
    Help,
}

/// `redis-client` options: every (connections, depth) pair is measured `repeat` times.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisClientOpts {
    /// Connection counts (`--conns 1,4`).
    pub conns: Vec<usize>,
    /// Commands in flight per connection (`--depth 16,64`; redis-benchmark's `-P`).
    pub depths: Vec<usize>,
    /// Requests per test (`--requests`; redis-benchmark's `-n`).
    pub requests: usize,
    /// Value bytes of `SET` (`--size`; redis-benchmark's `-d`, default 3).
    pub size: usize,
    /// Rounds per cell.
    pub repeat: usize,
    /// CPU of `redis-server`.
    pub server_cpu: usize,
    /// CPU of the clients (ringman's ring and redis-benchmark).
    pub client_cpu: usize,
}

impl Default for RedisClientOpts {
    fn default() -> Self {
        RedisClientOpts {
            conns: vec![1, 4],
            depths: vec![16, 64],
            requests: 200_000,
            size: 3,
            repeat: 3,
            server_cpu: 0,
            client_cpu: 1,
        }
    }
}

/// Parses a list of positive numbers: `1,4`.
fn parse_counts(option: &str, v: &str) -> Result<Vec<usize>, ArgError> {
    let list = v.split(',').map(|x| x.trim().parse::<usize>().ok().filter(|&n| n > 0)).collect::<Option<Vec<_>>>();
    list.filter(|l| !l.is_empty()).ok_or_else(|| bad(option, v, "a list of positive numbers: 1,4"))
}

/// Parses the options of `redis-client`.
fn parse_redis_client(mut it: impl Iterator<Item = String>) -> Result<Command, ArgError> {
    let mut o = RedisClientOpts::default();
    while let Some(opt) = it.next() {
        if opt == "--help" {
            return Ok(Command::Help);
        }
        let val = it.next().ok_or_else(|| ArgError::MissingValue(opt.clone()))?;
        let v = val.as_str();
        let positive = |n: usize| if n == 0 { Err(bad(&opt, v, "must be at least 1")) } else { Ok(n) };
        match opt.as_str() {
            "--conns" => o.conns = parse_counts(&opt, v)?,
            "--depth" => o.depths = parse_counts(&opt, v)?,
            "--requests" => o.requests = positive(num(&opt, v)?)?,
            "--size" => o.size = positive(num(&opt, v)?)?,
            "--repeat" => o.repeat = positive(num(&opt, v)?)?,
            "--server-cpu" => o.server_cpu = num(&opt, v)?,
            "--client-cpu" => o.client_cpu = num(&opt, v)?,
            _ => return Err(ArgError::UnknownOption(opt)),
        }
    }
    Ok(Command::RedisClient(o))
}

/// The ids of the standard suite's workloads (`compare --cells`).
pub const SUITE_IDS: [&str; 17] =
    ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11", "P12", "P13", "P14", "P15", "P16", "P17"];

/// Usage text.
pub const USAGE: &str = "\
ringman-bench run (--server <ringman|ringman-static|ringman-web|tokio|tokio-shared|tokio-uring|monoio|floor|epoll|nginx|fastwebsockets> | --target <tcp|text|frame|ws|http|fanout>://HOST:PORT[/path]
                  [--target-pid PID]) [--scenario <echo|text|frame|ws|http|fanout|fanout-redis|proxy|udp|https|handshake|wss>]
                  [--conns N] [--size BYTES] [--payload FILE] [--depth N] [--duration T] [--warmup T] [--rate MSGS_PER_S]
                  [--file-size BYTES] [--path /P]
                  [--server-cpu C] [--client-cpu C] [--peers-dir DIR] [--json FILE]
                  [--generator uring|classic] [--client-threads N] [--client-cpus LIST] [--pace T]
ringman-bench compare [--quick] [--repeat N] [--seed S] [--servers a,b,...] [--cells P10,P11,...] [--server-cpu C] [--client-cpu C]
                  [--peers-dir DIR] [--out DIR] [--results FILE] [--goals FILE] [--generator uring|classic] [--client-threads N]
                  [--client-cpus LIST] [--pace T]
ringman-bench redis-client [--conns LIST] [--depth LIST] [--requests N] [--size BYTES] [--repeat N]
                  [--server-cpu C] [--client-cpu C]
ringman-bench serve-ringman <scheme>://IP:PORT | proxy://IP:PORT tcp://UPSTREAM_HOST:PORT
                  | fanout-redis://IP:PORT redis://HOST:PORT | <https|wss>://IP:PORT CERT.pem KEY.pem
T is a duration: 10s, 500ms, 2 (seconds). LIST is a CPU list: 1, 1,2, 2-3.";

/// Parses a duration: `10s`, `500ms`, `1.5` (seconds), `2m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, scale) = if let Some(v) = s.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v * scale))
}

fn bad(option: &str, value: &str, reason: &'static str) -> ArgError {
    ArgError::BadValue { option: option.to_string(), value: value.to_string(), reason }
}

fn num<T: std::str::FromStr>(option: &str, value: &str) -> Result<T, ArgError> {
    value.parse().map_err(|_| bad(option, value, "not a number"))
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ArgError> {
    let mut it = args.into_iter();
    let cmd = it.next().ok_or(ArgError::MissingCommand)?;
    let mut load = LoadOpts::default();
    let mut env = Env::default();
    let mut server = None;
    let mut scenario = None;
    let mut quick = false;
    let mut only = None;
    let mut positional = Vec::new();
    let (mut target, mut target_pid, mut payload, mut json) = (None, None, None, None);
    let mut path = None;
    let (mut repeat, mut seed, mut cells) = (None, None, None);
    let mut files = CompareFiles::default();
    let (mut client_threads, mut client_cpu) = (None, None);
    match cmd.as_str() {
        "run" | "compare" | "serve-ringman" => {}
        "redis-client" => return parse_redis_client(it),
        "help" | "--help" | "-h" => return Ok(Command::Help),
        _ => return Err(ArgError::UnknownCommand(cmd)),
    }
    let run = cmd == "run";
    while let Some(opt) = it.next() {
        if !opt.starts_with("--") {
            positional.push(opt);
            continue;
        }
        if opt == "--quick" && cmd == "compare" {
            quick = true;
            continue;
        }
        if opt == "--help" {
            return Ok(Command::Help);
        }
        let val = it.next().ok_or_else(|| ArgError::MissingValue(opt.clone()))?;
        let v = val.as_str();
        match (opt.as_str(), run) {
            ("--server", true) => server = Some(ServerKind::parse(v).ok_or_else(|| bad(&opt, v, "unknown server"))?),
            ("--scenario", true) => {
                scenario = Some(Scenario::parse(v).ok_or_else(|| bad(&opt, v, "unknown scenario"))?)
            }
            ("--conns", true) => load.conns = num(&opt, v)?,
            ("--size", true) => load.size = num(&opt, v)?,
            ("--depth", true) => load.depth = num(&opt, v)?,
            ("--duration", true) => load.duration = parse_duration(v).ok_or_else(|| bad(&opt, v, "not a duration"))?,
            ("--warmup", true) => load.warmup = parse_duration(v).ok_or_else(|| bad(&opt, v, "not a duration"))?,
            ("--rate", true) => {
                let r: f64 = num(&opt, v)?;
                if !(r.is_finite() && r > 0.0) {
                    return Err(bad(&opt, v, "must be positive"));
                }
                load.rate = Some(r);
            }
            ("--servers", false) => {
                let list = v
                    .split(',')
                    .map(|s| ServerKind::parse(s.trim()).ok_or_else(|| bad(&opt, v, "unknown server")))
                    .collect::<Result<Vec<_>, _>>()?;
                only = Some(list);
            }
            ("--out", false) => env.out_dir = PathBuf::from(v),
            ("--results", false) => files.results = Some(PathBuf::from(v)),
            ("--goals", false) => files.goals = Some(PathBuf::from(v)),
            ("--repeat", false) => {
                let n: usize = num(&opt, v)?;
                if n == 0 {
                    return Err(bad(&opt, v, "must be at least 1"));
                }
                repeat = Some(n);
            }
            ("--seed", false) => seed = Some(num(&opt, v)?),
            ("--cells", false) => {
                let ids: Vec<String> = v.split(',').map(|s| s.trim().to_ascii_uppercase()).collect();
                if ids.iter().any(|id| !SUITE_IDS.contains(&id.as_str())) {
                    return Err(bad(&opt, v, "suite ids are P1 to P17"));
                }
                cells = Some(ids);
            }
            ("--target", true) => target = Some(Target::parse(v)?),
            ("--target-pid", true) => target_pid = Some(num(&opt, v)?),
            ("--payload", true) => payload = Some(PathBuf::from(v)),
            ("--file-size", true) => load.wire.file_size = Some(num(&opt, v)?),
            ("--path", true) => {
                if !v.starts_with('/') {
                    return Err(bad(&opt, v, "a path starts with /"));
                }
                path = Some(v.to_string());
            }
            ("--json", true) => json = Some(PathBuf::from(v)),
            ("--server-cpu", _) => env.server_cpu = num(&opt, v)?,
            ("--client-cpu", _) => client_cpu = Some(num(&opt, v)?),
            ("--client-cpus", _) => {
                env.client_cpus = parse_cpu_list(v).ok_or_else(|| bad(&opt, v, "not a CPU list (1,2 or 2-3)"))?
            }
            ("--peers-dir", _) => env.peers_dir = PathBuf::from(v),
            ("--generator", _) => {
                env.generator = Generator::parse(v).ok_or_else(|| bad(&opt, v, "uring or classic"))?
            }
            ("--client-threads", _) => client_threads = Some(num(&opt, v)?),
            ("--pace", _) => env.pace = parse_duration(v).ok_or_else(|| bad(&opt, v, "not a duration"))?,
            _ => return Err(ArgError::UnknownOption(opt)),
        }
    }
    if let Some(c) = client_cpu {
        if !env.client_cpus.is_empty() {
            return Err(ArgError::Conflict("--client-cpu", "--client-cpus"));
        }
        env.client_cpu = c;
    }
    if let Some(&first) = env.client_cpus.first() {
        // The harness's own thread and the client core-busy column follow the list.
        env.client_cpu = first;
    }
    // One generator thread per listed CPU unless --client-threads says otherwise.
    env.client_threads = client_threads.unwrap_or(env.client_cpus.len().max(1));
    if env.client_cpus.len() > 1 && env.generator == Generator::Classic {
        let list = env.client_cpus.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
        return Err(bad("--client-cpus", &list, "the classic generator has one thread"));
    }
    if env.client_threads == 0 {
        return Err(bad("--client-threads", "0", "must be at least 1"));
    }
    if env.client_threads > 1 && env.generator == Generator::Classic {
        return Err(bad("--client-threads", &env.client_threads.to_string(), "the classic generator has one thread"));
    }
    match cmd.as_str() {
        "serve-ringman" => {
            let mut p = positional.into_iter();
            let addr = p.next().ok_or(ArgError::Required("<scheme>://ip:port"))?;
            let mut tls = None;
            let upstream = if addr.starts_with("proxy://") {
                let up = p.next().ok_or(ArgError::Required("tcp://UPSTREAM_HOST:PORT (after proxy://ip:port)"))?;
                if !up.starts_with("tcp://") {
                    return Err(bad("serve-ringman", &up, "the upstream is tcp://host:port"));
                }
                Some(up)
            } else if addr.starts_with("fanout-redis://") {
                let up = p.next().ok_or(ArgError::Required("redis://HOST:PORT (after fanout-redis://ip:port)"))?;
                if !up.starts_with("redis://") {
                    return Err(bad("serve-ringman", &up, "the broker is redis://host:port"));
                }
                Some(up)
            } else if addr.starts_with("https://") || addr.starts_with("wss://") {
                let cert = p.next().ok_or(ArgError::Required("CERT.pem KEY.pem (after https:// or wss://)"))?;
                let key = p.next().ok_or(ArgError::Required("KEY.pem (after the certificate)"))?;
                tls = Some((PathBuf::from(cert), PathBuf::from(key)));
                None
            } else {
                None
            };
            if let Some(extra) = p.next() {
                return Err(ArgError::UnknownOption(extra));
            }
            Ok(Command::ServeRingman { addr, upstream, tls })
        }
        _ if !positional.is_empty() => Err(ArgError::UnknownOption(positional.remove(0))),
        "compare" => Ok(Command::Compare { quick, only, env, repeat, seed, cells, files }),
        _ => {
            let server = match (server, target) {
                (Some(_), Some(_)) => return Err(ArgError::Conflict("--server", "--target")),
                (None, None) => return Err(ArgError::Required("--server or --target")),
                (Some(_), None) if target_pid.is_some() => return Err(ArgError::Conflict("--server", "--target-pid")),
                (Some(k), None) => Subject::Spawn(k),
                (None, Some(_)) if load.wire.file_size.is_some() || path.is_some() => {
                    return Err(ArgError::Conflict("--target", "--file-size or --path"))
                }
                (None, Some(t)) => {
                    match scenario {
                        Some(s) if s != t.scenario => {
                            return Err(ArgError::SchemeMismatch {
                                scenario: s.name(),
                                scheme: t.url.split("://").next().unwrap_or_default().to_string(),
                                expected: crate::target::scenario_scheme(s),
                            })
                        }
                        _ => scenario = Some(t.scenario),
                    }
                    load.wire.path = Some(t.path.clone());
                    load.wire.host = Some(t.host_header());
                    Subject::Target { target: t, pid: target_pid }
                }
            };
            load.scenario = scenario.ok_or(ArgError::Required("--scenario"))?;
            if (load.wire.file_size.is_some() || path.is_some()) && load.scenario != Scenario::Http {
                return Err(bad("--file-size/--path", load.scenario.name(), "only the http scenario serves files"));
            }
            if let Some(p) = path {
                load.wire.path = Some(p);
            } else if let Some(size) = load.wire.file_size {
                load.wire.path = Some(crate::wire::file_path(size));
            }
            if load.conns == 0 {
                return Err(bad("--conns", "0", "must be at least 1"));
            }
            if load.depth == 0 {
                return Err(bad("--depth", "0", "must be at least 1"));
            }
            if load.size == 0 && load.scenario.wire() == Scenario::Echo {
                return Err(bad("--size", "0", "echo needs at least 1 byte"));
            }
            if load.scenario.is_tls() && load.rate.is_some() {
                return Err(ArgError::Conflict("--rate", "a TLS scenario (https, handshake, wss: closed loop only)"));
            }
            Ok(Command::Run { server, load, env, payload, json })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ArgError> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn run_with_all_options() {
        let c = p("run --server floor --scenario http --conns 256 --size 20 --depth 16 --duration 3s \
                   --warmup 0 --rate 1000 --server-cpu 1 --client-cpu 0 --peers-dir /p")
        .unwrap();
        let Command::Run { server, load, env, .. } = c else { panic!("{c:?}") };
        assert_eq!(server, Subject::Spawn(ServerKind::Floor));
        assert_eq!(load.scenario, Scenario::Http);
        assert_eq!((load.conns, load.size, load.depth), (256, 20, 16));
        assert_eq!(load.duration, Duration::from_secs(3));
        assert_eq!(load.warmup, Duration::ZERO);
        assert_eq!(load.rate, Some(1000.0));
        assert_eq!((env.server_cpu, env.client_cpu), (1, 0));
        assert_eq!(env.peers_dir, PathBuf::from("/p"));
    }

    #[test]
    fn run_defaults() {
        let Command::Run { load, env, .. } = p("run --server tokio --scenario echo").unwrap() else { panic!() };
        assert_eq!(load, LoadOpts::default());
        assert_eq!((env.server_cpu, env.client_cpu), (0, 1));
        assert!(env.peers_dir.ends_with("bench/peers"));
    }

    #[test]
    fn generator_options() {
        let Command::Run { env, .. } = p("run --server ringman --scenario echo").unwrap() else { panic!() };
        assert_eq!((env.generator, env.client_threads), (Generator::Uring, 1));
        let Command::Compare { env, .. } = p("compare --generator classic").unwrap() else { panic!() };
        assert_eq!(env.generator, Generator::Classic);
        let c = p("run --server ringman --scenario echo --generator uring --client-threads 3").unwrap();
        let Command::Run { env, .. } = c else { panic!() };
        assert_eq!((env.generator, env.client_threads), (Generator::Uring, 3));
        let Command::Run { env, .. } = p("run --server ringman --scenario echo --pace 0.1ms").unwrap() else {
            panic!()
        };
        assert_eq!(env.pace, Duration::from_micros(100));
        assert!(matches!(p("run --server ringman --scenario echo --generator x"), Err(ArgError::BadValue { .. })));
        assert!(matches!(p("run --server ringman --scenario echo --client-threads 0"), Err(ArgError::BadValue { .. })));
        let both = "run --server ringman --scenario echo --generator classic --client-threads 2";
        assert!(matches!(p(both), Err(ArgError::BadValue { .. })));
    }

    #[test]
    fn client_cpus() {
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list("1,2"), Some(vec![1, 2]));
        assert_eq!(parse_cpu_list("2-4,0"), Some(vec![2, 3, 4, 0]));
        for bad in ["", "1,1", "3-2", "x", "1,", "0-99999"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
        // Default: every generator thread on --client-cpu.
        let Command::Run { env, .. } = p("run --server ringman --scenario echo").unwrap() else { panic!() };
        assert_eq!((env.generator_cpus(), env.client_threads), (vec![1], 1));
        // A list derives the thread count and moves the client CPU to its first entry.
        let Command::Compare { env, .. } = p("compare --client-cpus 1,2").unwrap() else { panic!() };
        assert_eq!((env.generator_cpus(), env.client_threads, env.client_cpu), (vec![1, 2], 2, 1));
        let c = p("run --server ringman --scenario echo --client-cpus 1 --client-threads 2").unwrap();
        let Command::Run { env, .. } = c else { panic!() };
        assert_eq!((env.generator_cpus(), env.client_threads), (vec![1], 2));
        let c = p("run --server ringman --scenario echo --client-cpus 1 --client-cpu 1");
        assert!(matches!(c, Err(ArgError::Conflict(..))));
        let c = p("run --server ringman --scenario echo --client-cpus 1,2 --generator classic");
        assert!(matches!(c, Err(ArgError::BadValue { .. })));
        let c = p("run --server ringman --scenario echo --client-cpus 1-x");
        assert!(matches!(c, Err(ArgError::BadValue { .. })));
    }

    #[test]
    fn compare_and_serve() {
        assert!(matches!(
            p("compare --quick").unwrap(),
            Command::Compare { quick: true, only: None, repeat: None, seed: None, .. }
        ));
        assert!(matches!(
            p("compare --repeat 7 --seed 42").unwrap(),
            Command::Compare { quick: false, repeat: Some(7), seed: Some(42), .. }
        ));
        assert!(matches!(p("compare --repeat 0"), Err(ArgError::BadValue { .. })));
        let Command::Compare { cells, .. } = p("compare --cells P10,p12").unwrap() else { panic!() };
        assert_eq!(cells, Some(vec!["P10".to_string(), "P12".to_string()]));
        assert!(matches!(p("compare --cells P18"), Err(ArgError::BadValue { .. })));
        let Command::Compare { cells, .. } = p("compare --cells p13,P17").unwrap() else { panic!() };
        assert_eq!(cells, Some(vec!["P13".to_string(), "P17".to_string()]));
        assert!(matches!(p("run --server ringman --scenario https --cells P10"), Err(ArgError::UnknownOption(_))));
        let Command::Compare { files, .. } = p("compare --quick").unwrap() else { panic!() };
        assert_eq!(files, CompareFiles::default());
        let Command::Compare { files, .. } = p("compare --results /tmp/r.md --goals /tmp/g.json").unwrap() else {
            panic!()
        };
        assert_eq!(
            files,
            CompareFiles { results: Some(PathBuf::from("/tmp/r.md")), goals: Some(PathBuf::from("/tmp/g.json")) }
        );
        assert!(matches!(p("run --server ringman --scenario echo --results x"), Err(ArgError::UnknownOption(_))));
        let Command::Compare { only, env, .. } = p("compare --servers tokio,floor --out /tmp/o").unwrap() else {
            panic!()
        };
        assert_eq!(only, Some(vec![ServerKind::Tokio, ServerKind::Floor]));
        assert_eq!(env.out_dir, PathBuf::from("/tmp/o"));
        assert_eq!(
            p("serve-ringman tcp://127.0.0.1:1").unwrap(),
            Command::ServeRingman { addr: "tcp://127.0.0.1:1".into(), upstream: None, tls: None }
        );
        assert_eq!(
            p("serve-ringman proxy://127.0.0.1:1 tcp://127.0.0.1:2").unwrap(),
            Command::ServeRingman {
                addr: "proxy://127.0.0.1:1".into(),
                upstream: Some("tcp://127.0.0.1:2".into()),
                tls: None
            }
        );
        assert!(p("serve-ringman proxy://127.0.0.1:1").is_err());
        assert!(p("serve-ringman proxy://127.0.0.1:1 ws://127.0.0.1:2").is_err());
        assert!(p("serve-ringman tcp://127.0.0.1:1 tcp://127.0.0.1:2").is_err());
        assert_eq!(
            p("serve-ringman fanout-redis://127.0.0.1:1 redis://127.0.0.1:2").unwrap(),
            Command::ServeRingman {
                addr: "fanout-redis://127.0.0.1:1".into(),
                upstream: Some("redis://127.0.0.1:2".into()),
                tls: None
            }
        );
        assert!(p("serve-ringman fanout-redis://127.0.0.1:1").is_err());
        assert_eq!(
            p("serve-ringman https://127.0.0.1:1 /c.pem /k.pem").unwrap(),
            Command::ServeRingman {
                addr: "https://127.0.0.1:1".into(),
                upstream: None,
                tls: Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
            }
        );
        assert!(matches!(p("serve-ringman wss://127.0.0.1:1 /c.pem").unwrap_err(), ArgError::Required(_)));
        assert!(p("serve-ringman wss://127.0.0.1:1 /c.pem /k.pem /x").is_err());
        assert!(p("serve-ringman fanout-redis://127.0.0.1:1 tcp://127.0.0.1:2").is_err());
        let Command::Run { load, .. } = p("run --server ringman --scenario fanout-redis").unwrap() else { panic!() };
        assert_eq!((load.scenario, load.scenario.wire()), (Scenario::FanoutRedis, Scenario::Fanout));
        assert!(!ServerKind::Tokio.supports(Scenario::FanoutRedis));
        let Command::Run { load, .. } = p("run --server tokio --scenario proxy").unwrap() else { panic!() };
        assert_eq!((load.scenario, load.scenario.wire()), (Scenario::Proxy, Scenario::Echo));
        assert_eq!(p("help").unwrap(), Command::Help);
    }

    #[test]
    fn redis_client_options() {
        assert_eq!(p("redis-client").unwrap(), Command::RedisClient(RedisClientOpts::default()));
        let c =
            p("redis-client --conns 2,8 --depth 1 --requests 5000 --size 10 --repeat 5 --server-cpu 1 --client-cpu 0");
        let Command::RedisClient(o) = c.unwrap() else { panic!() };
        assert_eq!((o.conns, o.depths, o.requests, o.size, o.repeat), (vec![2, 8], vec![1], 5000, 10, 5));
        assert_eq!((o.server_cpu, o.client_cpu), (1, 0));
        for bad in ["--conns 0", "--conns 1,x", "--depth ,", "--requests 0", "--repeat 0"] {
            assert!(matches!(p(&format!("redis-client {bad}")), Err(ArgError::BadValue { .. })), "{bad}");
        }
        assert!(matches!(p("redis-client --rate 5"), Err(ArgError::UnknownOption(_))));
        assert!(matches!(p("redis-client --conns"), Err(ArgError::MissingValue(_))));
    }

    #[test]
    fn errors() {
        assert_eq!(p(""), Err(ArgError::MissingCommand));
        assert_eq!(p("bogus"), Err(ArgError::UnknownCommand("bogus".into())));
        assert_eq!(p("run --scenario echo"), Err(ArgError::Required("--server or --target")));
        assert_eq!(p("run --server tokio"), Err(ArgError::Required("--scenario")));
        assert!(matches!(p("run --server x --scenario echo"), Err(ArgError::BadValue { .. })));
        assert!(matches!(p("run --server tokio --scenario echo --conns"), Err(ArgError::MissingValue(_))));
        assert!(matches!(p("run --server tokio --scenario echo --conns 0"), Err(ArgError::BadValue { .. })));
        assert!(matches!(p("run --server tokio --scenario echo --rate -5"), Err(ArgError::BadValue { .. })));
        assert!(matches!(p("run --server tokio --scenario echo --quick x"), Err(ArgError::UnknownOption(_))));
        assert!(matches!(p("compare --conns 5"), Err(ArgError::UnknownOption(_))));
        assert!(matches!(p("run --server nginx --scenario https --rate 100"), Err(ArgError::Conflict("--rate", _))));
        let Command::Run { load, .. } = p("run --server nginx --scenario handshake --conns 32").unwrap() else {
            panic!()
        };
        assert_eq!((load.scenario, load.conns), (Scenario::Handshake, 32));
        assert_eq!(p("serve-ringman"), Err(ArgError::Required("<scheme>://ip:port")));
    }

    #[test]
    fn run_against_a_target() {
        let c =
            p("run --target http://127.0.0.1:8080/hello --target-pid 42 --conns 8 --payload /tmp/b --json /tmp/o.json")
                .unwrap();
        let Command::Run { server: Subject::Target { target, pid }, load, payload, json, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!((target.port, target.path.as_str(), pid), (8080, "/hello", Some(42)));
        assert_eq!(load.scenario, Scenario::Http);
        assert_eq!(load.conns, 8);
        assert_eq!(load.wire.path.as_deref(), Some("/hello"));
        assert_eq!(load.wire.host.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!((payload, json), (Some(PathBuf::from("/tmp/b")), Some(PathBuf::from("/tmp/o.json"))));
        // The scenario may be given if it matches the scheme.
        assert!(p("run --target tcp://127.0.0.1:1 --scenario echo").is_ok());
        assert!(p("run --target ws://127.0.0.1:1/ --scenario ws").is_ok());
        assert_eq!(
            p("run --target tcp://127.0.0.1:1 --scenario ws"),
            Err(ArgError::SchemeMismatch { scenario: "ws", scheme: "tcp".into(), expected: "ws" })
        );
        assert_eq!(
            p("run --target tcp://h:1 --server tokio --scenario echo"),
            Err(ArgError::Conflict("--server", "--target"))
        );
        assert_eq!(
            p("run --server tokio --scenario echo --target-pid 3"),
            Err(ArgError::Conflict("--server", "--target-pid"))
        );
        assert!(matches!(p("run --target sctp://h:1"), Err(ArgError::BadTarget { .. })));
        assert!(matches!(p("compare --target tcp://h:1"), Err(ArgError::UnknownOption(_))));
    }

    #[test]
    fn file_size_and_path() {
        let Command::Run { load, .. } = p("run --server nginx --scenario http --file-size 30000").unwrap() else {
            panic!()
        };
        assert_eq!(load.wire.file_size, Some(30000));
        assert_eq!(load.wire.path.as_deref(), Some("/file-30000.bin"));
        let c = p("run --server ringman --scenario http --file-size 30000 --path /hello").unwrap();
        let Command::Run { load, .. } = c else { panic!() };
        assert_eq!((load.wire.file_size, load.wire.path.as_deref()), (Some(30000), Some("/hello")));
        assert!(matches!(p("run --server ringman --scenario echo --file-size 5"), Err(ArgError::BadValue { .. })));
        assert!(matches!(p("run --server ringman --scenario http --path x"), Err(ArgError::BadValue { .. })));
        assert!(matches!(p("run --target http://h:1/x --file-size 5"), Err(ArgError::Conflict(..))));
    }

    #[test]
    fn support_matrix() {
        assert!(ServerKind::Ringman.supports(Scenario::Ws));
        assert!(ServerKind::Nginx.supports(Scenario::Http) && !ServerKind::Nginx.supports(Scenario::Echo));
        assert!(ServerKind::Floor.supports(Scenario::Echo) && !ServerKind::Floor.supports(Scenario::Http));
        assert!(ServerKind::Epoll.supports(Scenario::Echo) && !ServerKind::Epoll.supports(Scenario::Ws));
        assert!(
            ServerKind::RingmanStatic.supports(Scenario::Http) && !ServerKind::RingmanStatic.supports(Scenario::Echo)
        );
        assert_eq!(ServerKind::parse("ringman-static"), Some(ServerKind::RingmanStatic));
        assert_eq!(ServerKind::parse("epoll"), Some(ServerKind::Epoll));
        assert_eq!(ServerKind::parse("fastwebsockets"), Some(ServerKind::Fastwebsockets));
        assert_eq!(ServerKind::parse("tokio-shared"), Some(ServerKind::TokioShared));
        assert!(ServerKind::TokioShared.supports(Scenario::Echo) && !ServerKind::TokioShared.supports(Scenario::Http));
        assert!(ServerKind::Fastwebsockets.supports(Scenario::Ws));
        assert!(
            !ServerKind::Fastwebsockets.supports(Scenario::Fanout)
                && !ServerKind::Fastwebsockets.supports(Scenario::Echo)
        );
        // TLS: nginx serves https (keep-alive and handshakes) but no wss; tokio all three.
        for s in [Scenario::Https, Scenario::Handshake] {
            assert!(ServerKind::Nginx.supports(s) && ServerKind::Tokio.supports(s) && ServerKind::Ringman.supports(s));
            assert!(!ServerKind::Floor.supports(s) && !ServerKind::RingmanStatic.supports(s));
        }
        assert!(!ServerKind::Nginx.supports(Scenario::Wss) && !ServerKind::Fastwebsockets.supports(Scenario::Wss));
        assert!(ServerKind::Tokio.supports(Scenario::Wss));
        assert_eq!(
            Scenario::ALL.into_iter().filter(|s| s.is_tls()).map(|s| (s, s.plain())).collect::<Vec<_>>(),
            [(Scenario::Https, Scenario::Http), (Scenario::Handshake, Scenario::Http), (Scenario::Wss, Scenario::Ws)]
        );
        assert_eq!(Scenario::Echo.plain(), Scenario::Echo);
        for s in ServerKind::ALL {
            assert_eq!(ServerKind::parse(s.name()), Some(s));
        }
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Some(s));
        }
    }
}
