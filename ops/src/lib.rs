//! Operating a ringman service: Workerman's CLI verbs (`start [-d]`, `stop [-g]`,
//! `restart`, `reload [-g]`, `status [-d]`, `connections`), daemon mode, a Unix control
//! socket, graceful stop, zero-downtime reload by handing listening sockets to a fresh copy
//! of the binary, and Prometheus metrics.
//!
//! ```no_run
//! use ringman_engine::{Server, Worker};
//! use ringman_ops as ops;
//! fn main() -> std::process::ExitCode {
//!     let args: Vec<String> = std::env::args().skip(1).collect();
//!     ops::main_with_args(ops::Options::default(), &args, |launch| {
//!         let mut w = Worker::<()>::new("text://0.0.0.0:8000").unwrap();
//!         w.name = "echo".into();
//!         w.on_message(|c, m, _| {
//!             c.send(m);
//!         });
//!         let _ = launch;
//!         Server::new().add(w)
//!     })
//! }
//! ```
//!
//! Reload: the running process spawns its own binary with the same argv, passing the
//! listening sockets of every reloadable worker and the datagram sockets of its `udp://`
//! workers (described to it by [`ringman_engine::handover::successor_env`]), a pipe in
//! [`READY_FD_ENV`], and the session-ticket keys of its TLS workers in a memfd
//! ([`ringman_engine::handover::pass_ticket_keys`]), so TLS sessions resume across the
//! reload. The successor adopts the sockets and keys, takes over the pid file and the
//! control socket, and reports ready; the old process then stops accepting (and receiving
//! on the UDP sockets, which the successor reads from then on), drains (bounded) and exits.
//! Non-reloadable workers are not handed over: the successor skips
//! them (see [`Launch::starts`]) and the old process keeps running them until the
//! successor is stopped.
//!
//! File monitor (development): with [`Options::watch`] set, the serving process watches
//! its binary and the configured files through inotify
//! ([`ringman_components::filemon`]) and, once changes settle, reloads itself gracefully,
//! as `reload -g` would; the successor is started from the binary's path, so a rebuilt
//! binary is what serves next. Off by default.
//!
//! Logging: [`serve`] installs a [`log`] logger ([`logger::FileLogger`]) unless the
//! application installed one first, so `log` records of the ops layer, the engine and the
//! application go to [`Options::log_file`] (Workerman's `Worker::$logFile`); see [`logger`].

#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod control;
pub mod daemon;
pub mod logger;
pub mod metrics;
pub mod reload;
pub mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ringman_components::filemon::{FileMonitor, FileMonitorError, Flow};
use ringman_engine::{EngineError, Running, Server, WorkerHandle};

pub use cli::{parse, Command, USAGE};
pub use control::{request, socket_path};
pub use reload::{PREDECESSORS_ENV, READY_FD_ENV, SKIP_WORKERS_ENV};
/// What [`Options::watch`] watches (re-exported from `ringman_components::filemon`).
pub use ringman_components::filemon::Watch;

/// Errors of the ops layer.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// `start` while a server already runs.
    #[error("already running (pid {pid})")]
    AlreadyRunning {
        /// The running server.
        pid: i32,
    },
    /// A verb that needs a running server, and none runs.
    #[error("not running")]
    NotRunning,
    /// A file operation failed.
    #[error("cannot {what} {path:?}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what} failed: {source}")]
    Sys {
        /// The call.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The workers failed to start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The control socket could not be reached.
    #[error("control socket {path:?} unreachable: {source}")]
    Control {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The control socket path does not fit in a `sockaddr_un`.
    #[error("control socket path {0:?} is too long (move the pid file to a shorter path)")]
    SocketPathTooLong(PathBuf),
    /// The server did not exit in time.
    #[error("stop fail: pid {pid} still running")]
    StopFailed {
        /// The server.
        pid: i32,
    },
    /// The reload did not happen (the old process keeps serving).
    #[error("reload failed: {0}")]
    ReloadFailed(String),
    /// The server refused a request.
    #[error("{0}")]
    Refused(String),
    /// `user`/`group` names no account.
    #[error("unknown user or group {0:?}")]
    UnknownUser(String),
    /// The file monitor ([`Options::watch`]) could not start.
    #[error("file monitor: {0}")]
    Watch(#[from] FileMonitorError),
    /// The metrics listener could not start.
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        /// Its address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Called once every worker listens.
pub type StartedHook = Box<dyn Fn(&Running) + Send + Sync>;

/// Settings of the ops layer.
pub struct Options {
    /// Pid file (default `./ringman.<exe-name>.pid`); the control socket is `<pid_file>.sock`.
    pub pid_file: Option<PathBuf>,
    /// Where a daemon's stdout/stderr go (default `/dev/null`); also its log records when
    /// no `log_file` is set.
    pub stdout_file: PathBuf,
    /// The log file (Workerman's `Worker::$logFile`): `log` records of the ops layer
    /// (start, stop, reload, signals), the engine and the application, at the level of
    /// `RINGMAN_LOG` (default `info`); see [`logger`]. None by default.
    pub log_file: Option<PathBuf>,
    /// Size at which the log file is rotated to `<log_file>.1` (default 10 MiB).
    pub log_max_bytes: u64,
    /// Run as this user after binding (only when started as root).
    pub user: Option<String>,
    /// Run as this group after binding (only when started as root).
    pub group: Option<String>,
    /// Time connections get to flush and close on `stop` (default 2 s); the process is
    /// forced to exit 3 s after it.
    pub stop_timeout: Duration,
    /// Longest wait for connections to finish on `stop -g` / `reload -g` (default 30 s).
    pub graceful_stop_timeout: Duration,
    /// Longest wait for a daemon or reload successor to report ready (default 30 s).
    pub reload_timeout: Duration,
    /// Serve `GET /metrics` (Prometheus) on this address.
    pub metrics_addr: Option<SocketAddr>,
    /// Called in the old process when a reload starts (Workerman's `onWorkerReload`).
    pub on_reload: Option<Box<dyn Fn() + Send + Sync>>,
    /// Called once every worker listens (for example to print the addresses).
    pub on_started: Option<StartedHook>,
    /// Development: watch these files and the binary, and reload gracefully (as
    /// `reload -g`) once changes settle; a rebuilt binary is what the reload starts. The
    /// pid file, control socket, `log_file` and `stdout_file` are never counted as
    /// changes. `None` (the default): no monitor.
    pub watch: Option<Watch>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            pid_file: None,
            stdout_file: PathBuf::from("/dev/null"),
            log_file: None,
            log_max_bytes: 10 << 20,
            user: None,
            group: None,
            stop_timeout: Duration::from_secs(2),
            graceful_stop_timeout: Duration::from_secs(30),
            reload_timeout: Duration::from_secs(30),
            metrics_addr: None,
            on_reload: None,
            on_started: None,
            watch: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("pid_file", &self.pid_file)
            .field("stdout_file", &self.stdout_file)
            .field("log_file", &self.log_file)
            .field("stop_timeout", &self.stop_timeout)
            .field("graceful_stop_timeout", &self.graceful_stop_timeout)
            .field("metrics_addr", &self.metrics_addr)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// The pid file path, made absolute (a daemon keeps its working directory, but the
    /// path must not depend on it).
    pub fn pid_path(&self) -> PathBuf {
        let p = self.pid_file.clone().unwrap_or_else(|| {
            let exe = std::env::args_os()
                .next()
                .map(PathBuf::from)
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "server".into());
            PathBuf::from(format!("ringman.{exe}.pid"))
        });
        if p.is_absolute() {
            p
        } else {
            std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
        }
    }
}

/// What the server builder is told about this start.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    skip: Vec<String>,
    reload: bool,
}

impl Launch {
    /// Whether the worker named `name` should be added: false for non-reloadable workers
    /// when this process is a reload successor (the old process keeps them).
    pub fn starts(&self, name: &str) -> bool {
        !self.skip.iter().any(|s| s == name)
    }

    /// True when this process was started by a reload.
    pub fn is_reload(&self) -> bool {
        self.reload
    }
}

fn reload_fd() -> Option<i32> {
    std::env::var(READY_FD_ENV).ok()?.parse().ok()
}

fn env_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

const STOP_SIGNALS: [i32; 6] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

fn block_signals() -> libc::sigset_t {
    // SAFETY: building a signal set and changing this thread's mask (ring threads spawned
    // later inherit it, so only the signal thread receives these).
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Runs the server until it stops: in the foreground, or as a daemon when `daemon` is set
/// (then only the daemon returns; the calling process exits once the daemon is ready).
/// Also writes the pid file, serves the control socket and handles the signals SIGINT,
/// SIGTERM, SIGHUP (stop), SIGQUIT (graceful stop), SIGUSR1 (reload), SIGUSR2 (graceful
/// reload). Call it before spawning any thread.
pub fn serve<F: FnOnce(&Launch) -> Server>(opts: Options, daemon: bool, build: F) -> Result<(), OpsError> {
    let pid_file = opts.pid_path();
    let inherited = reload_fd();
    let mut notifier = match inherited {
        // SAFETY: the descriptor was created for us by the predecessor and is ours alone.
        Some(fd) => unsafe { daemon::Notifier::from_fd(fd) },
        None => daemon::Notifier::none(),
    };
    if inherited.is_none() {
        if let Some(pid) = daemon::running_pid(&pid_file) {
            return Err(OpsError::AlreadyRunning { pid });
        }
        if daemon::read_pid(&pid_file).is_some() {
            let _ = std::fs::remove_file(&pid_file);
        }
        if daemon {
            notifier = daemon::daemonize(&opts.stdout_file, opts.reload_timeout)?;
        }
    }
    let daemonized = daemon || (inherited.is_some() && std::env::args().any(|a| a == "-d"));
    let log = Arc::new(daemon::OpsLog::new(opts.log_file.clone(), opts.log_max_bytes));
    // After daemonizing, so that stderr already is the daemon's stdout_file.
    logger::install(log.clone(), !daemonized);
    match serve_inner(opts, pid_file, daemonized, inherited.is_some(), &mut notifier, log.clone(), build) {
        Ok(()) => Ok(()),
        Err(e) => {
            // A daemon's error also goes to its stderr (main_with_args prints it there, and
            // that is stdout_file): log it unless our logger would write it to stderr too.
            if daemonized && !(logger::installed() && log.path().is_none()) {
                logger::event(&log, log::Level::Error, &format!("start failed: {e}"));
            }
            notifier.send(&format!("error: {e}"));
            Err(e)
        }
    }
}

fn serve_inner<F: FnOnce(&Launch) -> Server>(
    opts: Options,
    pid_file: PathBuf,
    daemonized: bool,
    is_reload: bool,
    notifier: &mut daemon::Notifier,
    log: Arc<daemon::OpsLog>,
    build: F,
) -> Result<(), OpsError> {
    let set = block_signals();
    let launch = Launch { skip: if is_reload { env_list(SKIP_WORKERS_ENV) } else { Vec::new() }, reload: is_reload };
    let predecessors: Vec<i32> = env_list(PREDECESSORS_ENV).iter().filter_map(|p| p.parse().ok()).collect();
    let running = build(&launch).start()?;
    daemon::switch_user(opts.user.as_deref(), opts.group.as_deref())?;
    let workers: Arc<[WorkerHandle]> = running.workers().to_vec().into();
    if let Some(addr) = opts.metrics_addr {
        metrics::serve_http(addr, workers.clone())?;
    }
    let header = status::Header { daemon: daemonized, started: daemon::now_secs(), pid: std::process::id() };
    let opts = Arc::new(opts);
    let ctl = Arc::new(control::Controller::new(
        opts.clone(),
        workers,
        pid_file.clone(),
        header,
        log,
        predecessors,
        launch.skip.clone(),
    ));
    daemon::write_pid(&pid_file, std::process::id())?;
    if let Err(e) = ctl.listen() {
        daemon::remove_pid_if_ours(&pid_file);
        return Err(e);
    }
    let sig_ctl = ctl.clone();
    std::thread::Builder::new()
        .name("ringman-signals".into())
        .spawn(move || loop {
            let mut sig = 0;
            // SAFETY: waits for one of the signals blocked in `set`.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            let line = match sig {
                libc::SIGQUIT => "stop graceful",
                libc::SIGUSR1 => "reload",
                libc::SIGUSR2 => "reload graceful",
                _ => "stop",
            };
            let answer = sig_ctl.handle(line);
            sig_ctl.event(log::Level::Info, &format!("signal {sig}: {}", answer.trim()));
        })
        .map_err(|source| OpsError::Sys { what: "spawn signal thread", source })?;
    // Before the ready report, so that a reload's successor watches from the moment its
    // predecessor stops watching.
    let monitor = match &opts.watch {
        Some(w) => match start_monitor(w, &opts, &pid_file, ctl.clone()) {
            Ok(m) => Some(m),
            Err(e) => {
                ctl.cleanup();
                return Err(e);
            }
        },
        None => None,
    };
    if let Some(f) = &opts.on_started {
        f(&running);
    }
    ctl.event(log::Level::Info, &format!("started{}", if is_reload { " (reload successor)" } else { "" }));
    notifier.send(&format!("ok {}", std::process::id()));
    running.wait();
    drop(monitor);
    ctl.event(log::Level::Info, "stopped");
    ctl.cleanup();
    Ok(())
}

/// Starts the file monitor of [`Options::watch`]: each settled batch of changes triggers
/// the graceful reload of this process (what `reload -g` and SIGUSR2 do); a reload that
/// succeeded, or a process already stopping or replaced, ends the monitor (the successor
/// runs its own), a failed one leaves it watching for the next change.
fn start_monitor(
    watch: &Watch,
    opts: &Options,
    pid_file: &Path,
    ctl: Arc<control::Controller>,
) -> Result<FileMonitor, OpsError> {
    let mut watch = watch.clone();
    watch.ignore.push(pid_file.to_path_buf()); // also covers <pid_file>.sock
    watch.ignore.push(pid_file.with_extension("tmp")); // write_pid's temporary files
    watch.ignore.extend(opts.log_file.iter().cloned()); // also covers the rotated .1
    watch.ignore.push(opts.stdout_file.clone());
    let monitor = FileMonitor::start(watch, move |changed| {
        let mut names: Vec<String> = changed.iter().take(5).map(|p| p.display().to_string()).collect();
        if changed.len() > 5 {
            names.push(format!("and {} more", changed.len() - 5));
        }
        ctl.event(log::Level::Info, &format!("file monitor: changed {}; reloading", names.join(", ")));
        let answer = ctl.handle("reload graceful");
        if answer.starts_with("ok") || answer.contains("stopping") || answer.contains("already replaced") {
            Flow::Stop
        } else {
            ctl.event(log::Level::Warn, &format!("file monitor: no reload ({}); still watching", answer.trim()));
            Flow::Continue
        }
    })?;
    Ok(monitor)
}

fn live_pid(opts: &Options) -> Result<(PathBuf, i32), OpsError> {
    let pid_file = opts.pid_path();
    let pid = daemon::running_pid(&pid_file).ok_or(OpsError::NotRunning)?;
    Ok((pid_file, pid))
}

fn ask(opts: &Options, line: &str, timeout: Duration) -> Result<String, OpsError> {
    let (pid_file, _) = live_pid(opts)?;
    let answer = request(&socket_path(&pid_file), line, timeout)?;
    match answer.strip_prefix("error:") {
        Some(e) => Err(OpsError::Refused(e.trim().to_string())),
        None => Ok(answer),
    }
}

/// The `status` table of the running server.
pub fn status(opts: &Options) -> Result<String, OpsError> {
    ask(opts, "status", Duration::from_secs(10))
}

/// The `connections` listing of the running server.
pub fn connections(opts: &Options) -> Result<String, OpsError> {
    ask(opts, "connections", Duration::from_secs(10))
}

/// The running server's Prometheus metrics.
pub fn metrics(opts: &Options) -> Result<String, OpsError> {
    ask(opts, "metrics", Duration::from_secs(10))
}

/// Stops the running server and waits until its process is gone. `graceful` waits for
/// connections to finish (up to `graceful_stop_timeout`). Returns the stopped pid.
pub fn stop(opts: &Options, graceful: bool) -> Result<i32, OpsError> {
    let (pid_file, pid) = live_pid(opts)?;
    let line = if graceful { "stop graceful" } else { "stop" };
    if request(&socket_path(&pid_file), line, Duration::from_secs(10)).is_err() {
        // No control socket (for example deleted by hand): fall back to the signal.
        // SAFETY: signalling the pid recorded in our pid file, verified to run our program.
        unsafe { libc::kill(pid, if graceful { libc::SIGQUIT } else { libc::SIGTERM }) };
    }
    let mut limit = opts.stop_timeout + Duration::from_secs(10);
    if graceful {
        limit += opts.graceful_stop_timeout;
    }
    if daemon::wait_gone(pid, limit) {
        Ok(pid)
    } else {
        Err(OpsError::StopFailed { pid })
    }
}

/// Reloads the running server (zero downtime). Returns `(old pid, new pid)` once the
/// successor serves; waits (bounded) for the old process to exit unless it keeps
/// non-reloadable workers.
pub fn reload(opts: &Options, graceful: bool) -> Result<(i32, i32), OpsError> {
    let line = if graceful { "reload graceful" } else { "reload" };
    let answer = ask(opts, line, opts.reload_timeout + Duration::from_secs(10)).map_err(|e| {
        if let OpsError::Refused(m) = e {
            OpsError::ReloadFailed(m)
        } else {
            e
        }
    })?;
    let mut nums = answer.split_whitespace().filter_map(|w| w.parse::<i32>().ok());
    let (Some(old), Some(new)) = (nums.next(), nums.next()) else {
        return Err(OpsError::ReloadFailed(format!("unexpected answer {answer:?}")));
    };
    if !answer.contains("keeps non-reloadable") {
        let mut limit = opts.stop_timeout + Duration::from_secs(10);
        if graceful {
            limit += opts.graceful_stop_timeout;
        }
        daemon::wait_gone(old, limit);
    }
    Ok((old, new))
}

fn fail(e: &OpsError) -> ExitCode {
    eprintln!("{e}");
    if matches!(e, OpsError::Usage(_)) {
        eprintln!("{USAGE}");
        return ExitCode::from(64);
    }
    ExitCode::FAILURE
}

fn report<T>(r: Result<T, OpsError>, ok: impl FnOnce(T)) -> ExitCode {
    match r {
        Ok(v) => {
            ok(v);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Runs one verb (see [`cli::parse`]) against `build`'s server. `args` are the verb and
/// its flags only (application arguments removed). A process started by a reload (it has
/// [`READY_FD_ENV`]) ignores the verb and serves.
pub fn main_with_args<S: AsRef<str>, F: FnOnce(&Launch) -> Server>(opts: Options, args: &[S], build: F) -> ExitCode {
    if reload_fd().is_some() {
        return report(serve(opts, false, build), |_| {});
    }
    let cmd = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match cmd {
        Command::Foreground => report(serve(opts, false, build), |_| {}),
        Command::Start { daemon } => report(serve(opts, daemon, build), |_| {}),
        Command::Stop { graceful } => report(stop(&opts, graceful), |pid| println!("stopped (pid {pid})")),
        Command::Restart { daemon, graceful } => {
            match stop(&opts, graceful) {
                Ok(pid) => println!("stopped (pid {pid})"),
                Err(OpsError::NotRunning) => println!("not running; starting"),
                Err(e) => return fail(&e),
            }
            report(serve(opts, daemon, build), |_| {})
        }
        Command::Reload { graceful } => {
            report(reload(&opts, graceful), |(old, new)| println!("reloaded: pid {old} -> {new}"))
        }
        Command::Status { live: false } => report(status(&opts), |s| print!("{s}")),
        Command::Status { live: true } => loop {
            match status(&opts) {
                Ok(s) => print!("\x1b[H\x1b[2J{s}"),
                Err(e) => return fail(&e),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::thread::sleep(Duration::from_secs(1));
        },
        Command::Connections => report(connections(&opts), |s| print!("{s}")),
        Command::Metrics => report(metrics(&opts), |s| print!("{s}")),
    }
}

/// [`main_with_args`] with the process arguments (everything after the program name).
pub fn main<F: FnOnce(&Launch) -> Server>(opts: Options, build: F) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    main_with_args(opts, &args, build)
}

/// The pid recorded in `pid_file` if that server is alive.
pub fn running_pid(pid_file: &Path) -> Option<i32> {
    daemon::running_pid(pid_file)
}
