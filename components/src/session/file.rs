//! [`FileHandler`]: one file per session in a directory, every file operation on a helper
//! thread.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use super::{HandlerFuture, SessionError, SessionHandler, SessionId};

/// Sessions as files `sess_<id>` in a directory (Workerman's `FileSessionHandler` naming),
/// so every process pointed at the same directory shares them.
///
/// No file operation runs on a ring thread: each call becomes a job for the handler's own
/// helper thread (one per `FileHandler` and its clones, ending when the last clone is
/// dropped), whose answer comes back to the calling ring through
/// [`run_on_ring`](ringman_engine::run_on_ring). Writes go to a temporary file in the same
/// directory that is then renamed over the session's file, so a reader in any process sees
/// the old data or the new, never a mix. Files are created with mode 0600. Expiry uses the
/// file's modification time (a write or a touch renews it); the sweep deletes session files
/// (and temporary files left by a crash) older than the lifetime.
#[derive(Clone)]
pub struct FileHandler {
    dir: Arc<PathBuf>,
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce() + Send>;

/// Distinguishes the temporary files of concurrent writes in this process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl FileHandler {
    /// Stores sessions in `dir` (created if missing; the call runs where it is made, so make
    /// it before the rings start, e.g. in `main`). Starts the helper thread.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<FileHandler> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("ringman-session-io".into()).spawn(move || {
            for job in rx {
                // A panicking job answers `HelperGone` through its reply's drop; the
                // thread goes on with the next.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })?;
        Ok(FileHandler { dir: Arc::new(dir), jobs })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` on the helper thread; the future yields its result on the calling thread.
    fn run<T: Send + 'static>(&self, f: impl FnOnce(&Path) -> std::io::Result<T> + Send + 'static) -> HandlerFuture<T> {
        let slot = Arc::new(Mutex::new(Slot { out: None, waker: None }));
        let reply = Reply { ring: ringman_engine::current_ring(), slot: Some(slot.clone()) };
        let dir = self.dir.clone();
        let sent = self.jobs.send(Box::new(move || reply.send(f(&dir).map_err(SessionError::from)))).is_ok();
        Box::pin(async move {
            if !sent {
                return Err(SessionError::HelperGone);
            }
            Answer { slot }.await
        })
    }
}

fn session_path(dir: &Path, id: &SessionId) -> PathBuf {
    dir.join(format!("sess_{id}"))
}

fn is_expired(modified: SystemTime, max_lifetime: Duration) -> bool {
    // A modification time in the future (a clock step back) counts as fresh.
    SystemTime::now().duration_since(modified).is_ok_and(|age| age > max_lifetime)
}

impl SessionHandler for FileHandler {
    fn read(&self, id: &SessionId, max_lifetime: Duration) -> HandlerFuture<Option<Vec<u8>>> {
        let id = id.clone();
        self.run(move |dir| {
            let path = session_path(dir, &id);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            if is_expired(file.metadata()?.modified()?, max_lifetime) {
                drop(file);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                    _ => return Ok(None),
                }
            }
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            Ok(Some(data))
        })
    }

    fn write(&self, id: &SessionId, data: Vec<u8>, _max_lifetime: Duration) -> HandlerFuture<()> {
        let id = id.clone();
        self.run(move |dir| {
            let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!(".sess_{id}.{}.{seq}.tmp", std::process::id()));
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(&data))
                .and_then(|()| fs::rename(&tmp, session_path(dir, &id)));
            if written.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            written
        })
    }

    fn touch(&self, id: &SessionId, _max_lifetime: Duration) -> HandlerFuture<()> {
        let id = id.clone();
        self.run(move |dir| match OpenOptions::new().write(true).open(session_path(dir, &id)) {
            Ok(f) => f.set_modified(SystemTime::now()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
    }

    fn destroy(&self, id: &SessionId) -> HandlerFuture<()> {
        let id = id.clone();
        self.run(move |dir| match fs::remove_file(session_path(dir, &id)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
    }

    fn gc(&self, max_lifetime: Duration) -> HandlerFuture<usize> {
        self.run(move |dir| {
            let mut removed = 0;
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let ours = name.starts_with("sess_") || (name.starts_with(".sess_") && name.ends_with(".tmp"));
                if !ours {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() && meta.modified().is_ok_and(|m| is_expired(m, max_lifetime)) {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(removed)
        })
    }
}

/// Where a job's answer waits for its future.
struct Slot<T> {
    out: Option<Result<T, SessionError>>,
    waker: Option<Waker>,
}

/// The helper thread's end: fills the slot on the calling ring (or, for a caller that is
/// not a ring thread, at once). Dropped unsent (a panicking job), it answers `HelperGone`.
struct Reply<T: Send + 'static> {
    ring: Option<u16>,
    slot: Option<Arc<Mutex<Slot<T>>>>,
}

impl<T: Send + 'static> Reply<T> {
    fn send(mut self, r: Result<T, SessionError>) {
        let Some(slot) = self.slot.take() else { return };
        let fill = move || {
            let waker = {
                let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                s.out = Some(r);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        };
        match self.ring {
            // False only when that ring is gone, and its tasks with it.
            Some(ring) => {
                ringman_engine::run_on_ring(ring, fill);
            }
            None => fill(),
        }
    }
}

impl<T: Send + 'static> Drop for Reply<T> {
    fn drop(&mut self) {
        if self.slot.is_some() {
            let ring = self.ring;
            Reply { ring, slot: self.slot.take() }.send(Err(SessionError::HelperGone));
        }
    }
}

/// The caller's end of a job.
struct Answer<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Future for Answer<T> {
    type Output = Result<T, SessionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.out.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
