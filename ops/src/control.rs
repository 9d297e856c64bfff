//! The control socket: a Unix stream socket next to the pid file (`<pid_file>.sock`, mode
//! 0600) speaking one request line per connection: `status`, `connections`, `metrics`,
//! `ping`, `stop [graceful]`, `reload [graceful]`. The answer is text; failures start
//! with `error:`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::Level;
use ringman_engine::WorkerHandle;

use crate::{daemon, logger, metrics, reload, status, OpsError, Options};

/// Longest path a `sockaddr_un` holds (minus the terminating NUL).
const MAX_SOCK_PATH: usize = 107;

/// How long a ring thread may take to answer a status probe before it shows as busy.
const PROBE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Reloading,
    /// Reloaded; still runs the non-reloadable workers until a stop.
    Retired,
    Stopping,
}

/// The server side: the running workers plus what the ops verbs need.
pub(crate) struct Controller {
    pub opts: Arc<Options>,
    pub workers: Arc<[WorkerHandle]>,
    pub pid_file: PathBuf,
    pub sock_path: PathBuf,
    pub header: status::Header,
    pub log: Arc<daemon::OpsLog>,
    pub predecessors: Vec<i32>,
    /// Workers this process skipped because a predecessor still runs them.
    pub skipped: Vec<String>,
    sock_ino: Mutex<Option<u64>>,
    last: Mutex<Option<(Instant, Vec<u64>)>>,
    phase: Mutex<Phase>,
}

/// The control socket path for `pid_file`.
pub fn socket_path(pid_file: &Path) -> PathBuf {
    let mut s = pid_file.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// Sends one request line to the server owning `sock` and returns its whole answer.
pub fn request(sock: &Path, line: &str, timeout: Duration) -> Result<String, OpsError> {
    let err = |source| OpsError::Control { path: sock.to_path_buf(), source };
    let mut s = UnixStream::connect(sock).map_err(err)?;
    s.set_read_timeout(Some(timeout)).map_err(err)?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(err)?;
    s.shutdown(std::net::Shutdown::Write).map_err(err)?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(err)?;
    Ok(out)
}

impl Controller {
    pub fn new(
        opts: Arc<Options>,
        workers: Arc<[WorkerHandle]>,
        pid_file: PathBuf,
        header: status::Header,
        log: Arc<daemon::OpsLog>,
        predecessors: Vec<i32>,
        skipped: Vec<String>,
    ) -> Controller {
        Controller {
            sock_path: socket_path(&pid_file),
            opts,
            workers,
            pid_file,
            header,
            log,
            predecessors,
            skipped,
            sock_ino: Mutex::new(None),
            last: Mutex::new(None),
            phase: Mutex::new(Phase::Serving),
        }
    }

    /// Binds the control socket (temporary name, 0600, atomically renamed into place so a
    /// predecessor's socket is replaced without a gap) and serves it from a thread.
    pub fn listen(self: &Arc<Self>) -> Result<(), OpsError> {
        let path = &self.sock_path;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        if tmp.as_os_str().len() > MAX_SOCK_PATH {
            return Err(OpsError::SocketPathTooLong(path.clone()));
        }
        let io = |what, source| OpsError::Io { what, path: path.clone(), source };
        let _ = std::fs::remove_file(&tmp);
        let l = UnixListener::bind(&tmp).map_err(|e| io("bind control socket", e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("chmod control socket", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename control socket", e))?;
        *self.sock_ino.lock().unwrap_or_else(|e| e.into_inner()) = std::fs::metadata(path).ok().map(|m| m.ino());
        let me = self.clone();
        std::thread::Builder::new()
            .name("ringman-control".into())
            .spawn(move || {
                for s in l.incoming() {
                    let Ok(s) = s else { continue };
                    let me = me.clone();
                    let _ = std::thread::Builder::new().name("ringman-control-conn".into()).spawn(move || me.serve(s));
                }
            })
            .map_err(|source| OpsError::Sys { what: "spawn control thread", source })?;
        Ok(())
    }

    fn serve(self: &Arc<Self>, mut s: UnixStream) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        if BufReader::new(&s).read_line(&mut line).is_err() {
            return;
        }
        let answer = self.handle(line.trim());
        let _ = s.write_all(answer.as_bytes());
    }

    /// Answers one request line.
    pub fn handle(self: &Arc<Self>, line: &str) -> String {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let graceful = words.any(|w| w == "graceful" || w == "-g");
        match verb {
            "ping" => format!("pong {}\n", std::process::id()),
            "status" => self.status(),
            "connections" => {
                let (rows, busy) = status::connections(&self.workers, PROBE);
                status::render_connections(std::process::id(), &rows, busy)
            }
            "metrics" => metrics::render(&self.workers),
            "stop" => self.begin_stop(graceful),
            "reload" => self.reload(graceful),
            other => format!("error: unknown request {other:?} (status, connections, metrics, ping, stop, reload)\n"),
        }
    }

    fn status(&self) -> String {
        let (prev, elapsed) = {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match last {
                Some((at, counts)) if at.elapsed() <= Duration::from_secs(10) => (counts, at.elapsed()),
                _ => {
                    let at = Instant::now();
                    let counts = status::request_counts(&self.workers);
                    std::thread::sleep(Duration::from_secs(1));
                    (counts, at.elapsed())
                }
            }
        };
        let at = Instant::now();
        let rows = status::rows(&self.workers, Some((&prev, elapsed)), PROBE);
        let now_counts = rows.iter().map(|r| r.requests).collect();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, now_counts));
        status::render_status_with_tickets(&self.header, &rows, &status::ticket_keys(&self.workers))
    }

    fn set_phase(&self, p: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// Waits (up to `limit`) until `workers` have had no open connection for 100 ms (so a
    /// connection accepted just before the pause is counted before it is judged idle).
    fn drain(workers: &[WorkerHandle], limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        let mut zero_since: Option<Instant> = None;
        loop {
            let open: u64 = workers.iter().flat_map(|w| w.stats().iter()).map(|s| s.connections.get()).sum();
            if open > 0 {
                zero_since = None;
            } else if zero_since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(100) {
                return 0;
            }
            if Instant::now() >= end {
                return open;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every worker (graceful: stop accepting, wait for connections up to
    /// `graceful_stop_timeout`, then stop), then forces the exit if threads hang.
    pub fn begin_stop(self: &Arc<Self>, graceful: bool) -> String {
        {
            let mut ph = self.phase.lock().unwrap_or_else(|e| e.into_inner());
            if *ph == Phase::Stopping {
                return format!("ok already stopping {}\n", std::process::id());
            }
            *ph = Phase::Stopping;
        }
        self.event(Level::Info, &format!("stop requested{}", if graceful { " (graceful)" } else { "" }));
        let me = self.clone();
        let _ = std::thread::Builder::new().name("ringman-stop".into()).spawn(move || {
            if graceful {
                me.workers.iter().for_each(WorkerHandle::pause_accept);
                let left = Self::drain(&me.workers, me.opts.graceful_stop_timeout);
                if left > 0 {
                    me.event(Level::Warn, &format!("graceful stop deadline passed with {left} connection(s) open"));
                }
            }
            for w in me.workers.iter() {
                w.stop_within(me.opts.stop_timeout);
            }
            for &p in &me.predecessors {
                if daemon::pid_alive(p) && daemon::same_program(p) {
                    // SAFETY: signalling a predecessor process we verified runs our program.
                    unsafe { libc::kill(p, libc::SIGTERM) };
                }
            }
            std::thread::sleep(me.opts.stop_timeout + Duration::from_secs(3));
            me.event(Level::Warn, "threads did not stop in time; forcing exit");
            me.cleanup();
            std::process::exit(0);
        });
        format!("ok stopping {}\n", std::process::id())
    }

    fn reload(self: &Arc<Self>, graceful: bool) -> String {
        {
            let mut ph = self.phase.lock().unwrap_or_else(|e| e.into_inner());
            match *ph {
                Phase::Serving => *ph = Phase::Reloading,
                Phase::Reloading => return "error: a reload is already in progress\n".into(),
                Phase::Retired => return "error: this process was already replaced by a reload\n".into(),
                Phase::Stopping => return "error: stopping\n".into(),
            }
        }
        if let Some(hook) = &self.opts.on_reload {
            hook();
        }
        self.event(Level::Info, &format!("reload requested{}", if graceful { " (graceful)" } else { "" }));
        let handover = reload::handover(&self.workers);
        let keep: Vec<String> = self.workers.iter().filter(|w| !w.reloadable()).map(|w| w.name().to_string()).collect();
        let mut preds = self.predecessors.clone();
        if !keep.is_empty() {
            preds.push(std::process::id() as i32);
        }
        let mut skip = self.skipped.clone();
        skip.extend(keep.iter().cloned());
        let new_pid = match reload::spawn_successor(&handover, &skip, &preds, self.opts.reload_timeout) {
            Ok(p) => p,
            Err(e) => {
                self.set_phase(Phase::Serving);
                self.event(Level::Error, &format!("reload failed: {e}"));
                return format!("error: {e}\n");
            }
        };
        self.event(Level::Info, &format!("successor {new_pid} ready; handing over"));
        let reloadable: Vec<WorkerHandle> = self.workers.iter().filter(|w| w.reloadable()).cloned().collect();
        reloadable.iter().for_each(WorkerHandle::pause_accept);
        self.set_phase(if keep.is_empty() { Phase::Stopping } else { Phase::Retired });
        let me = self.clone();
        let everything = keep.is_empty();
        let pairs = handover.pairs.clone();
        let _ = std::thread::Builder::new().name("ringman-reload".into()).spawn(move || {
            // Once every thread has processed the pause, unstick queued connections.
            status::ask_threads(&reloadable, PROBE, || ());
            reload::kick_stuck_listeners(&pairs, Duration::from_secs(1));
            if graceful {
                let left = Self::drain(&reloadable, me.opts.graceful_stop_timeout);
                if left > 0 {
                    me.event(Level::Warn, &format!("graceful reload deadline passed with {left} connection(s) open"));
                }
            }
            for w in &reloadable {
                w.stop_within(me.opts.stop_timeout);
            }
            if everything {
                std::thread::sleep(me.opts.stop_timeout + Duration::from_secs(3));
                me.event(Level::Warn, "threads did not stop in time after reload; forcing exit");
                me.cleanup();
                std::process::exit(0);
            }
        });
        let kept = if keep.is_empty() {
            String::new()
        } else {
            format!(" (old process keeps non-reloadable workers: {})", keep.join(","))
        };
        format!("ok reloaded {} -> {new_pid}{kept}\n", std::process::id())
    }

    /// Records an ops event (see [`logger`]).
    pub fn event(&self, level: Level, msg: &str) {
        logger::event(&self.log, level, msg);
    }

    /// Removes the pid file and control socket if they are still this process's.
    pub fn cleanup(&self) {
        daemon::remove_pid_if_ours(&self.pid_file);
        let ino = *self.sock_ino.lock().unwrap_or_else(|e| e.into_inner());
        if ino.is_some() && std::fs::metadata(&self.sock_path).ok().map(|m| m.ino()) == ino {
            let _ = std::fs::remove_file(&self.sock_path);
        }
    }
}
