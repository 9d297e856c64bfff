//! The service log: a [`log::Log`] that [`crate::serve`] installs, so that records of the
//! ops layer, the engine and the application (anything written with `log::info!`,
//! `log::warn!`, ...) end up where Workerman writes its log (`Worker::$logFile`): the file
//! [`crate::Options::log_file`], rotated at [`crate::Options::log_max_bytes`].
//!
//! Without a log file, records go to stderr, which a daemon has redirected to
//! [`crate::Options::stdout_file`]. In the foreground, records also go to stderr when a log
//! file is set (as Workerman echoes its log lines in debug mode).
//!
//! An application that installs its own logger before calling [`crate::serve`] (or
//! [`crate::main`]) keeps it: every record, the ops events included, goes to that logger,
//! and the ops events are also appended to the log file.
//!
//! The level comes from the environment variable [`LEVEL_ENV`] (`RINGMAN_LOG`): `error`,
//! `warn`, `info`, `debug`, `trace` or `off`; `info` when unset or not understood.
//!
//! Each line reads `<date time UTC> [<pid>] <LEVEL> <target>: <message>`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::daemon::OpsLog;

/// Environment variable holding the log level (`error`, `warn`, `info`, `debug`, `trace`,
/// `off`); `info` by default.
pub const LEVEL_ENV: &str = "RINGMAN_LOG";

/// Target of the ops layer's own records (start, stop, reload, signals).
pub const TARGET: &str = "ringman_ops";

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The level named by [`LEVEL_ENV`], [`LevelFilter::Info`] when unset or not understood.
pub fn level_from_env() -> LevelFilter {
    parse_level(std::env::var(LEVEL_ENV).ok().as_deref())
}

fn parse_level(v: Option<&str>) -> LevelFilter {
    v.and_then(|v| v.trim().parse().ok()).unwrap_or(LevelFilter::Info)
}

/// Writes records to an [`OpsLog`] file (and to stderr when asked, or when there is no file).
#[derive(Debug)]
pub struct FileLogger {
    file: Arc<OpsLog>,
    echo: bool,
    level: LevelFilter,
}

impl FileLogger {
    /// A logger appending records up to `level` to `file`; `echo` also writes them to
    /// stderr. With no file path set, records go to stderr only.
    pub fn new(file: Arc<OpsLog>, echo: bool, level: LevelFilter) -> FileLogger {
        FileLogger { file, echo, level }
    }
}

fn line(level: Level, target: &str, args: impl std::fmt::Display) -> String {
    format!("{level:<5} {target}: {args}")
}

impl Log for FileLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = line(record.level(), record.target(), record.args());
        let to_file = self.file.path().is_some();
        if to_file {
            self.file.log(&msg);
        }
        if self.echo || !to_file {
            let _ = writeln!(std::io::stderr().lock(), "{}", OpsLog::format(&msg));
        }
    }

    fn flush(&self) {}
}

/// Installs a [`FileLogger`] on `file` as the process's logger, with the level from
/// [`LEVEL_ENV`]. Returns false, changing nothing, when a logger is already installed (the
/// application's own, or this one by an earlier call).
pub fn install(file: Arc<OpsLog>, echo: bool) -> bool {
    let level = level_from_env();
    if log::set_boxed_logger(Box::new(FileLogger::new(file, echo, level))).is_err() {
        return false;
    }
    log::set_max_level(level);
    INSTALLED.store(true, Ordering::Release);
    true
}

/// Installs the logger for a program that is not a daemon (examples, tools, tests): records
/// go to stderr, level from [`LEVEL_ENV`] (default `info`). Returns false, changing nothing,
/// when a logger is already installed. Servers run through [`crate::main`] or
/// [`crate::serve`] get theirs installed (writing to the log file in daemon mode) and need
/// not call this.
pub fn init() -> bool {
    install(Arc::new(OpsLog::new(None, 0)), true)
}

/// True once [`install`] has installed the logger in this process.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Records an ops event: a `log` record with target [`TARGET`], and, when this module's
/// logger is not the installed one, also a line in `file` (so the log file holds the ops
/// events even when the application brought its own logger).
pub(crate) fn event(file: &OpsLog, level: Level, msg: &str) {
    log::log!(target: TARGET, level, "{msg}");
    if !installed() && level <= level_from_env() {
        file.log(&line(level, TARGET, msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ringman-logger-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn filters_by_level_and_formats_lines() {
        let dir = temp("direct");
        let path = dir.join("app.log");
        let file = Arc::new(OpsLog::new(Some(path.clone()), 1 << 20));
        let logger = FileLogger::new(file, false, LevelFilter::Info);
        for level in [Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace] {
            logger.log(&Record::builder().level(level).target("my_app").args(format_args!("at {level}")).build());
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let pid = format!(" [{}] ", std::process::id());
        assert!(lines.iter().all(|l| l.contains(&pid)), "{text}");
        assert!(lines[0].ends_with("ERROR my_app: at ERROR"), "{text}");
        assert!(lines[1].ends_with("WARN  my_app: at WARN"), "{text}");
        assert!(lines[2].ends_with("INFO  my_app: at INFO"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn level_names() {
        assert_eq!(parse_level(Some("error")), LevelFilter::Error);
        assert_eq!(parse_level(Some("WARN")), LevelFilter::Warn);
        assert_eq!(parse_level(Some(" debug ")), LevelFilter::Debug);
        assert_eq!(parse_level(Some("trace")), LevelFilter::Trace);
        assert_eq!(parse_level(Some("off")), LevelFilter::Off);
        assert_eq!(parse_level(Some("loud")), LevelFilter::Info);
        assert_eq!(parse_level(None), LevelFilter::Info);
    }

    /// The only test that installs the process-wide logger.
    #[test]
    fn a_warn_record_reaches_the_log_file() {
        let dir = temp("installed");
        let path = dir.join("server.log");
        let file = Arc::new(OpsLog::new(Some(path.clone()), 1 << 20));
        assert!(install(file.clone(), false), "no logger installed yet in this test binary");
        assert!(!install(file.clone(), false), "a second install changes nothing");
        log::warn!(target: "my_app", "disk {}% full", 91);
        event(&file, Level::Info, "reload requested");
        log::logger().flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("WARN  my_app: disk 91% full"), "{text}");
        assert_eq!(text.matches("INFO  ringman_ops: reload requested").count(), 1, "written once: {text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
