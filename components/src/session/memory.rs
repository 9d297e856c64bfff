//! [`MemoryHandler`]: sessions in this process's memory.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{HandlerFuture, SessionHandler, SessionId};

/// Sessions in a map shared by the process's ring threads (behind a mutex held only for a
/// lookup or an insert; the sweep walks the map under it). Per process: a second process,
/// or a restart, does not see them — use [`FileHandler`](super::FileHandler) or
/// [`RedisHandler`](super::RedisHandler) for that. Clones share the map.
#[derive(Clone, Default)]
pub struct MemoryHandler {
    map: Arc<Mutex<HashMap<SessionId, Entry>>>,
}

struct Entry {
    data: Vec<u8>,
    /// Last write or touch.
    stamp: Instant,
}

impl MemoryHandler {
    /// An empty store.
    pub fn new() -> MemoryHandler {
        MemoryHandler::default()
    }

    /// How many sessions it holds (expired ones included until the sweep).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when it holds no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        // A panic while holding the lock left the map consistent (every change is one
        // insert or remove): keep serving.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SessionHandler for MemoryHandler {
    fn read(&self, id: &SessionId, max_lifetime: Duration) -> HandlerFuture<Option<Vec<u8>>> {
        let mut map = self.lock();
        let fresh = map.get(id).map(|e| e.stamp.elapsed() <= max_lifetime);
        let out = match fresh {
            Some(true) => map.get(id).map(|e| e.data.clone()),
            Some(false) => {
                map.remove(id);
                None
            }
            None => None,
        };
        Box::pin(ready(Ok(out)))
    }

    fn write(&self, id: &SessionId, data: Vec<u8>, _max_lifetime: Duration) -> HandlerFuture<()> {
        self.lock().insert(id.clone(), Entry { data, stamp: Instant::now() });
        Box::pin(ready(Ok(())))
    }

    fn touch(&self, id: &SessionId, _max_lifetime: Duration) -> HandlerFuture<()> {
        if let Some(e) = self.lock().get_mut(id) {
            e.stamp = Instant::now();
        }
        Box::pin(ready(Ok(())))
    }

    fn destroy(&self, id: &SessionId) -> HandlerFuture<()> {
        self.lock().remove(id);
        Box::pin(ready(Ok(())))
    }

    fn gc(&self, max_lifetime: Duration) -> HandlerFuture<usize> {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, e| e.stamp.elapsed() <= max_lifetime);
        Box::pin(ready(Ok(before - map.len())))
    }
}
