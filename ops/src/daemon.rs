//! Daemonizing (double fork + setsid), pid files, readiness pipes, user switch, log file.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::OpsError;

/// Reads the pid stored in `path`, if any.
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok().filter(|&p: &i32| p > 0)
}

/// True when process `pid` exists (`kill(pid, 0)`, EPERM counts as alive) and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A zombie (exited, not yet reaped by its parent) no longer serves.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')).unwrap_or(true),
        Err(_) => true,
    }
}

fn exe_of(pid: &str) -> Option<PathBuf> {
    let p = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = p.to_string_lossy();
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
}

/// True when `pid` runs the same executable as this process (guards against pid reuse
/// after a crash left a stale pid file). Unknown (no permission) counts as the same.
pub fn same_program(pid: i32) -> bool {
    match (exe_of(&pid.to_string()), exe_of("self")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The live server pid recorded in `pid_file`, or `None` (no file, or a stale one).
pub fn running_pid(pid_file: &Path) -> Option<i32> {
    read_pid(pid_file).filter(|&p| p != std::process::id() as i32 && pid_alive(p) && same_program(p))
}

/// Writes `pid` to `path` atomically (temporary file + rename).
pub fn write_pid(path: &Path, pid: u32) -> Result<(), OpsError> {
    let tmp = path.with_extension(format!("tmp{pid}"));
    let io = |source| OpsError::Io { what: "write pid file", path: path.to_path_buf(), source };
    fs::write(&tmp, format!("{pid}\n")).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Removes the pid file if it still names this process.
pub fn remove_pid_if_ours(path: &Path) {
    if read_pid(path) == Some(std::process::id() as i32) {
        let _ = fs::remove_file(path);
    }
}

/// Waits until `pid` is gone; false on timeout.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The write end of a readiness pipe: the server writes `ok <pid>` or `error: ...` once.
#[derive(Debug)]
pub struct Notifier(Option<fs::File>);

impl Notifier {
    /// No one to notify.
    pub fn none() -> Notifier {
        Notifier(None)
    }

    /// Takes ownership of `fd` (inherited or from `pipe2`).
    ///
    /// # Safety
    /// `fd` must be an open descriptor owned by nobody else.
    pub unsafe fn from_fd(fd: RawFd) -> Notifier {
        // SAFETY: the caller hands over sole ownership of an open descriptor.
        Notifier(Some(unsafe { fs::File::from_raw_fd(fd) }))
    }

    /// Reports the outcome and closes the pipe.
    pub fn send(&mut self, msg: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = writeln!(f, "{msg}");
        }
    }
}

/// Creates a close-on-exec pipe `(read, write)`.
pub fn pipe() -> Result<(RawFd, RawFd), OpsError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(OpsError::Sys { what: "pipe2", source: std::io::Error::last_os_error() });
    }
    Ok((fds[0], fds[1]))
}

/// Reads everything from the read end `fd` until EOF or `timeout`; `None` on timeout.
pub fn read_ready(fd: RawFd, timeout: Duration) -> Option<String> {
    // SAFETY: we own the read end and close it through this File.
    let mut f = unsafe { fs::File::from_raw_fd(fd) };
    let end = Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 512];
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
}

/// Double fork + setsid. The original process waits for the daemon to report readiness
/// and exits with 0 (`ok`) or 1 (error), printing the outcome; only the daemon returns,
/// with the notifier it must use once listening. Must be called before any thread exists.
pub fn daemonize(stdout_file: &Path, ready_timeout: Duration) -> Result<Notifier, OpsError> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(stdout_file)
        .map_err(|source| OpsError::Io { what: "open stdout_file", path: stdout_file.to_path_buf(), source })?;
    let (r, w) = pipe()?;
    // SAFETY: no other thread exists yet (documented precondition), so the child is a
    // faithful single-threaded copy.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(OpsError::Sys { what: "fork", source: std::io::Error::last_os_error() });
    }
    if pid > 0 {
        // SAFETY: closing our copy of the write end; reaping the intermediate child.
        unsafe {
            libc::close(w);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let code = match read_ready(r, ready_timeout) {
            Some(s) if s.starts_with("ok") => {
                let pid = s.trim().trim_start_matches("ok").trim();
                println!("started as a daemon, pid {pid}");
                0
            }
            Some(s) if !s.trim().is_empty() => {
                eprintln!("start failed: {}", s.trim().trim_start_matches("error:").trim());
                1
            }
            Some(_) => {
                eprintln!("start failed: the daemon exited before it was ready (see stdout_file)");
                1
            }
            None => {
                eprintln!("start failed: the daemon was not ready within {ready_timeout:?}");
                1
            }
        };
        std::process::exit(code);
    }
    // SAFETY: in the first child: new session, second fork so we can never reacquire a
    // controlling terminal; the intermediate child exits at once without running Rust code.
    unsafe {
        libc::close(r);
        libc::setsid();
        let pid2 = libc::fork();
        if pid2 != 0 {
            libc::_exit(if pid2 < 0 { 1 } else { 0 });
        }
        libc::umask(0o022);
    }
    // SAFETY: redirecting the standard descriptors to files we opened; dup2 replaces them.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::close(null);
        }
        use std::os::fd::AsRawFd;
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    drop(out);
    // SAFETY: the write end is ours alone in the daemon.
    Ok(unsafe { Notifier::from_fd(w) })
}

/// Switches to `user`/`group` (only when running as root and a user or group is set).
/// Returns the uid/gid switched to, if any.
pub fn switch_user(user: Option<&str>, group: Option<&str>) -> Result<Option<(u32, u32)>, OpsError> {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 || (user.is_none() && group.is_none()) {
        return Ok(None);
    }
    let cstr = |s: &str| std::ffi::CString::new(s).map_err(|_| OpsError::UnknownUser(s.to_string()));
    let (mut uid, mut gid) = (0, 0);
    if let Some(u) = user {
        let c = cstr(u)?;
        // SAFETY: getpwnam returns a pointer into static storage or null; read immediately.
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if pw.is_null() {
            return Err(OpsError::UnknownUser(u.to_string()));
        }
        // SAFETY: non-null passwd entry.
        unsafe {
            uid = (*pw).pw_uid;
            gid = (*pw).pw_gid;
        }
    }
    if let Some(g) = group {
        let c = cstr(g)?;
        // SAFETY: as getpwnam.
        let gr = unsafe { libc::getgrnam(c.as_ptr()) };
        if gr.is_null() {
            return Err(OpsError::UnknownUser(g.to_string()));
        }
        // SAFETY: non-null group entry.
        gid = unsafe { (*gr).gr_gid };
    }
    let sys = |what| OpsError::Sys { what, source: std::io::Error::last_os_error() };
    // SAFETY: credential changes; glibc applies them to every thread of the process.
    unsafe {
        if let Some(u) = user {
            let c = cstr(u)?;
            if libc::initgroups(c.as_ptr(), gid) != 0 {
                return Err(sys("initgroups"));
            }
        } else if libc::setgroups(1, &gid) != 0 {
            return Err(sys("setgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(sys("setgid"));
        }
        if user.is_some() && libc::setuid(uid) != 0 {
            return Err(sys("setuid"));
        }
    }
    Ok(Some((uid, gid)))
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn fmt_time(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Unix time now, in seconds.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The log file: one line per record, rotated to `<file>.1` past a size limit. Written by
/// the [`crate::logger`] (records of the ops layer, the engine and the application).
#[derive(Debug)]
pub struct OpsLog {
    path: Option<PathBuf>,
    max_bytes: u64,
    lock: Mutex<()>,
}

impl OpsLog {
    /// A log writing to `path` (nothing when `None`).
    pub fn new(path: Option<PathBuf>, max_bytes: u64) -> OpsLog {
        OpsLog { path, max_bytes, lock: Mutex::new(()) }
    }

    /// The file written to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `msg` as a line of the log, without the newline: `<date time UTC> [<pid>] <msg>`.
    pub fn format(msg: &str) -> String {
        format!("{} [{}] {msg}", fmt_time(now_secs()), std::process::id())
    }

    /// Appends one line.
    pub fn log(&self, msg: &str) {
        let Some(path) = &self.path else { return };
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if fs::metadata(path).is_ok_and(|m| m.len() >= self.max_bytes) {
            let mut rotated = path.clone().into_os_string();
            rotated.push(".1");
            let _ = fs::rename(path, rotated);
        }
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(f, "{}", Self::format(msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_time(1_700_000_000), "2023-11-14 22:13:20");
    }

    #[test]
    fn log_rotates() {
        let dir = std::env::temp_dir().join(format!("ringman-log-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        let log = OpsLog::new(Some(dir.join("ops.log")), 64);
        for i in 0..10 {
            log.log(&format!("line {i}"));
        }
        assert!(dir.join("ops.log.1").exists());
        assert!(fs::metadata(dir.join("ops.log")).unwrap().len() < 128);
        let _ = fs::remove_dir_all(&dir);
    }
}
