//! FileMonitor: reload on source change in development (Workerman's FileMonitor).
//!
//! A helper thread watches, through inotify, the running binary and the configured files
//! and directories (directories recursively, new subdirectories included, optionally only
//! some extensions). Once changes stop for a quiet period (the debounce, 300 ms by
//! default), it calls the `on_change` callback once with every path that changed. With
//! `ringman::ops`, [`Watch`] is an ops option (`Options::watch`, off by default) and the
//! callback is the graceful reload of the serving process, whose successor is started from
//! the binary's path, so a rebuilt binary is what runs after the reload.
//!
//! The thread never polls on a period: it sleeps in `poll(2)` on the inotify descriptor
//! and on a stop pipe, with no time limit while nothing is pending and with the rest of
//! the quiet period while a change is.
//!
//! The binary is watched through its directory (for `IN_CREATE`, `IN_CLOSE_WRITE`,
//! `IN_MOVED_TO` and `IN_MODIFY` of its name), not through its inode: `cargo build` and
//! installers replace the file (a new hard link or a rename), which a watch on the old
//! inode would never see. Configured files are watched the same way, so an editor's
//! atomic save (write a temporary file, rename it over) counts as a change of the file.
//!
//! ```no_run
//! use ringman_components::filemon::{FileMonitor, Flow, Watch};
//! let watch = Watch::new().path("src").path("config.toml").extension("rs").extension("toml");
//! let monitor = FileMonitor::start(watch, |changed| {
//!     println!("changed: {changed:?}");
//!     Flow::Continue
//! })
//! .unwrap();
//! # drop(monitor);
//! ```

mod inotify;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::PipeWriter;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events that count as a change of an entry in a watched directory.
const CHANGE: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY;
/// Events that count as a change of the binary (its removal alone does not: the new file
/// follows).
const BINARY_CHANGE: u32 = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE | libc::IN_MODIFY;

/// What to watch; [`Watch::new`] watches the running binary only.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Files and directories (directories recursively). Each must exist when the monitor
    /// starts.
    pub paths: Vec<PathBuf>,
    /// Only files with one of these extensions (without the dot) count inside watched
    /// directories; empty: every file. Files named in `paths` and the binary always count.
    pub extensions: Vec<String>,
    /// Also watch the running binary (`/proc/self/exe`). Default true.
    pub binary: bool,
    /// Quiet period: the callback runs once no change was seen for this long. Default 300 ms.
    pub debounce: Duration,
    /// Paths whose changes never count, each also covering the names that extend it in the
    /// same directory (`app.pid` covers `app.pid.sock`, `app.log` covers `app.log.1`): the
    /// server's own pid file, control socket and logs, which it writes while it runs.
    pub ignore: Vec<PathBuf>,
}

impl Default for Watch {
    fn default() -> Watch {
        Watch::new()
    }
}

impl Watch {
    /// The running binary, no other path, no extension filter, 300 ms debounce.
    pub fn new() -> Watch {
        Watch {
            paths: Vec::new(),
            extensions: Vec::new(),
            binary: true,
            debounce: Duration::from_millis(300),
            ignore: Vec::new(),
        }
    }

    /// Adds a file or directory.
    pub fn path(mut self, p: impl Into<PathBuf>) -> Watch {
        self.paths.push(p.into());
        self
    }

    /// Adds an extension (without the dot) to the filter of watched directories.
    pub fn extension(mut self, ext: impl Into<String>) -> Watch {
        self.extensions.push(ext.into());
        self
    }

    /// Sets the quiet period.
    pub fn debounce(mut self, d: Duration) -> Watch {
        self.debounce = d;
        self
    }

    /// Whether to watch the running binary.
    pub fn binary(mut self, on: bool) -> Watch {
        self.binary = on;
        self
    }

    /// Adds a path whose changes never count (see [`Watch::ignore`](struct.Watch.html#structfield.ignore)).
    pub fn ignore(mut self, p: impl Into<PathBuf>) -> Watch {
        self.ignore.push(p.into());
        self
    }

    fn ignored(&self, p: &Path) -> bool {
        self.ignore.iter().any(|i| {
            p == i
                || (p.parent() == i.parent()
                    && matches!((p.file_name(), i.file_name()), (Some(n), Some(m))
                        if n.as_encoded_bytes().starts_with(m.as_encoded_bytes())))
        })
    }

    fn ext_ok(&self, name: &OsStr) -> bool {
        self.extensions.is_empty()
            || Path::new(name).extension().is_some_and(|e| self.extensions.iter().any(|x| OsStr::new(x) == e))
    }
}

/// What the callback tells the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep watching.
    Continue,
    /// Stop watching (for example: this process was replaced by a reload).
    Stop,
}

/// Errors starting a [`FileMonitor`].
#[derive(Debug, thiserror::Error)]
pub enum FileMonitorError {
    /// inotify or the stop pipe could not be created.
    #[error("cannot create {what}: {source}")]
    Setup {
        /// What was being created.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A path could not be watched (missing, not readable, or out of inotify watches:
    /// see `/proc/sys/fs/inotify/max_user_watches`).
    #[error("cannot watch {path:?}: {source}")]
    Watch {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The monitor thread could not be spawned.
    #[error("cannot spawn the file monitor thread: {0}")]
    Spawn(std::io::Error),
}

/// A running file monitor; dropping it stops the thread (after a callback in progress).
#[derive(Debug)]
pub struct FileMonitor {
    stop: Option<PipeWriter>,
    thread: Option<JoinHandle<()>>,
}

impl FileMonitor {
    /// Sets up the watches (every path must exist), then starts the monitor thread, which
    /// calls `on_change` with the changed paths each time changes settle for
    /// [`Watch::debounce`], until it returns [`Flow::Stop`] or the monitor is dropped.
    /// Changes made while `on_change` runs are reported by its next call.
    pub fn start<F>(watch: Watch, on_change: F) -> Result<FileMonitor, FileMonitorError>
    where
        F: FnMut(&[PathBuf]) -> Flow + Send + 'static,
    {
        let mut tree = Tree::new(watch)?;
        let (stop_r, stop_w) =
            std::io::pipe().map_err(|source| FileMonitorError::Setup { what: "the stop pipe", source })?;
        tree.setup()?;
        let thread = std::thread::Builder::new()
            .name("ringman-filemon".into())
            .spawn(move || tree.run(stop_r, on_change))
            .map_err(FileMonitorError::Spawn)?;
        Ok(FileMonitor { stop: Some(stop_w), thread: Some(thread) })
    }

    /// Stops the monitor and waits for its thread.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for FileMonitor {
    fn drop(&mut self) {
        // Closing the write end hangs up the pipe the thread waits on.
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// What one watched directory stands for (one directory can be several at once).
#[derive(Debug, Default)]
struct Dir {
    path: PathBuf,
    /// Part of a watched tree: entries count through the extension filter, new
    /// subdirectories are watched too.
    tree: bool,
    /// Names of configured files in this directory.
    files: HashSet<OsString>,
    /// The binary's name, if it lives here.
    binary: Option<OsString>,
}

struct Tree {
    watch: Watch,
    ino: inotify::Inotify,
    dirs: HashMap<i32, Dir>,
}

impl Tree {
    fn new(watch: Watch) -> Result<Tree, FileMonitorError> {
        let ino = inotify::Inotify::new().map_err(|source| FileMonitorError::Setup { what: "inotify", source })?;
        Ok(Tree { watch, ino, dirs: HashMap::new() })
    }

    fn add_dir(&mut self, path: &Path) -> Result<&mut Dir, FileMonitorError> {
        let wd = self
            .ino
            .add_watch(path, CHANGE | libc::IN_ONLYDIR)
            .map_err(|source| FileMonitorError::Watch { path: path.to_path_buf(), source })?;
        let d = self.dirs.entry(wd).or_default();
        d.path = path.to_path_buf();
        Ok(d)
    }

    /// Watches `root` and every directory below it. Returns whether a file that counts
    /// already exists there (for a directory created while the monitor runs: its files
    /// may have been written before its watch existed).
    fn add_tree(&mut self, root: &Path) -> Result<bool, FileMonitorError> {
        let mut found = false;
        let mut todo = vec![root.to_path_buf()];
        while let Some(dir) = todo.pop() {
            self.add_dir(&dir)?.tree = true;
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if is_dir {
                    todo.push(e.path());
                } else if self.watch.ext_ok(&e.file_name()) && !self.watch.ignored(&e.path()) {
                    found = true;
                }
            }
        }
        Ok(found)
    }

    fn setup(&mut self) -> Result<(), FileMonitorError> {
        if self.watch.binary {
            let exe = std::fs::read_link("/proc/self/exe")
                .map_err(|source| FileMonitorError::Watch { path: "/proc/self/exe".into(), source })?;
            let s = exe.to_string_lossy();
            let exe = PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s));
            if let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) {
                self.add_dir(dir)?.binary = Some(name.to_os_string());
            }
        }
        for p in self.watch.paths.clone() {
            let p = std::path::absolute(&p).unwrap_or(p);
            let meta = std::fs::metadata(&p).map_err(|source| FileMonitorError::Watch { path: p.clone(), source })?;
            if meta.is_dir() {
                self.add_tree(&p)?;
            } else {
                let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else { continue };
                self.add_dir(dir)?.files.insert(name.to_os_string());
            }
        }
        Ok(())
    }

    /// The path an event reports as changed, if it counts.
    fn judge(&mut self, ev: &inotify::Event) -> Option<PathBuf> {
        if ev.mask & libc::IN_Q_OVERFLOW != 0 {
            // Events were lost: count it as a change (a reload is the safe answer).
            return Some(PathBuf::from("(inotify queue overflow)"));
        }
        if ev.mask & libc::IN_IGNORED != 0 {
            self.dirs.remove(&ev.wd);
            return None;
        }
        let dir = self.dirs.get(&ev.wd)?;
        let path = dir.path.join(&ev.name);
        if ev.name.is_empty() || self.watch.ignored(&path) {
            return None;
        }
        if ev.mask & libc::IN_ISDIR != 0 {
            if !dir.tree {
                return None;
            }
            if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                return match self.add_tree(&path) {
                    Ok(true) => Some(path),
                    Ok(false) => None,
                    Err(e) => {
                        log::warn!("file monitor: {e}");
                        None
                    }
                };
            }
            // A directory removed or moved away from a tree.
            return (ev.mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0).then_some(path);
        }
        let counts = (dir.binary.as_deref() == Some(&ev.name) && ev.mask & BINARY_CHANGE != 0)
            || dir.files.contains(&ev.name)
            || (dir.tree && self.watch.ext_ok(&ev.name));
        counts.then_some(path)
    }

    fn run<F: FnMut(&[PathBuf]) -> Flow>(mut self, stop: std::io::PipeReader, mut on_change: F) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut changed: Vec<PathBuf> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let (events, stopped) = match inotify::wait(self.ino.fd(), stop.as_fd(), timeout) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("file monitor stops: poll failed: {e}");
                    return;
                }
            };
            if stopped {
                return;
            }
            if events {
                let evs = match self.ino.read_events(&mut buf) {
                    Ok(v) => v,
                    Err(e) => {
                        log::error!("file monitor stops: reading inotify failed: {e}");
                        return;
                    }
                };
                for ev in &evs {
                    if let Some(p) = self.judge(ev) {
                        if !changed.contains(&p) {
                            changed.push(p);
                        }
                        // Every change restarts the quiet period.
                        deadline = Some(Instant::now() + self.watch.debounce);
                    }
                }
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                deadline = None;
                let batch = std::mem::take(&mut changed);
                if on_change(&batch) == Flow::Stop {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
