//! HTTP sessions, as Workerman's `Session`: a cookie carries a random id, a handler keeps
//! each id's data (in memory, in files, in Redis), and a request handler reads and changes
//! it through a [`Session`].
//!
//! The flow inside `on_request` is async (the file and Redis handlers answer later), so it
//! runs in a task spawned on the connection; [`Sessions::start`] copies the cookie out of
//! the request first, so the task does not borrow it:
//!
//! ```no_run
//! use ringman_components::session::{MemoryHandler, SessionConfig, Sessions};
//! use ringman_engine::http::date_now;
//! use ringman_protocols::http::Response;
//!
//! let sessions = Sessions::new(SessionConfig::default(), MemoryHandler::new());
//! let mut w = ringman_engine::Worker::<()>::new("http://0.0.0.0:8080").unwrap();
//! let gc = sessions.clone();
//! w.on_worker_start(move |_, _| {
//!     gc.start_gc().unwrap(); // the periodic sweep of expired sessions
//! });
//! w.on_request(move |conn, req, _| {
//!     let (conn, keep_alive) = (*conn, req.keep_alive());
//!     let start = sessions.start(req); // reads the cookie now
//!     let sessions = sessions.clone();
//!     conn.pause_recv(); // pipelined requests wait for this answer
//!     conn.spawn(async move {
//!         let mut s = start.await.unwrap();
//!         let visits = s.get_str("visits").and_then(|v| v.parse().ok()).unwrap_or(0u64) + 1;
//!         s.set("visits", visits.to_string());
//!         let resp = Response::new(200).body(format!("visits: {visits}"));
//!         let resp = sessions.save(s, resp).await.unwrap(); // stores, adds Set-Cookie
//!         let mut out = Vec::new();
//!         resp.date(&date_now()).write_to(&mut out);
//!         conn.send_raw(&out);
//!         if keep_alive { conn.resume_recv() } else { conn.close(None) }
//!     })
//!     .unwrap();
//! });
//! ```
//!
//! * **Ids** ([`SessionId`]): 128 bits from the kernel's CSPRNG as 32 hex digits. A cookie
//!   value of any other shape is ignored before a handler sees it, and an id the handler
//!   does not know (expired, or made up) is not adopted: the request gets a new session with
//!   a new id (PHP's strict mode), so a client cannot choose its own id.
//! * **Cookie** ([`SessionConfig`]): name `RINGMANSESSID`, `Path=/`, `HttpOnly`,
//!   `SameSite=Lax`, no `Max-Age` by default; all configurable. It is sent when a session is
//!   first stored and after [`Session::regenerate`]; [`Session::destroy`] sends a deleting
//!   one.
//! * **Saving** ([`Sessions::save`]): changed data is written; unchanged data is touched
//!   (its expiry restarts, Workerman's `updateTimestamp`); a new session that holds nothing
//!   is neither stored nor sent. Two concurrent requests of one session each save what they
//!   read and changed: the later save wins.
//! * **Handlers** ([`SessionHandler`]): [`MemoryHandler`] (this process only),
//!   [`FileHandler`] (a directory, I/O on a helper thread, atomic renames), [`RedisHandler`]
//!   (`SET ... EX`). The file and Redis ones are shared by every process that uses the same
//!   directory or server.
//! * **Expiry**: a session lives `gc_max_lifetime` (1440 s) after its last save; reading an
//!   older one answers a new session. [`Sessions::start_gc`] sweeps every `gc_interval`
//!   (memory and files; Redis expires keys itself).
//!
//! **Stored format** (version 1, the same for every handler): one byte `0x01`, then each
//! entry in key order as `key length (u32, big endian) | key (UTF-8) | value length (u32,
//! big endian) | value`. Data in any other shape is treated as no data (logged as a
//! warning): the request gets a new session.

mod config;
mod data;
mod file;
mod handler;
mod id;
mod memory;
mod redis;

pub use config::SessionConfig;
pub use file::FileHandler;
pub use handler::{HandlerFuture, SessionHandler};
pub use id::SessionId;
pub use memory::MemoryHandler;
pub use redis::RedisHandler;
/// The `SameSite` values of [`SessionConfig::same_site`].
pub use ringman_protocols::http::SameSite;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ringman_engine::{EngineError, Timer, TimerId};
use ringman_protocols::http::{Request, Response};

use data::Data;

/// Why a session could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A file operation (the file handler) or the random source failed.
    #[error("session: {0}")]
    Io(#[from] std::io::Error),
    /// The Redis handler's command failed.
    #[error("session: {0}")]
    Redis(#[from] ringman_cluster::redis::RedisError),
    /// The file handler's helper thread is gone (a job panicked, or it could not run).
    #[error("session: the file handler's helper thread is gone")]
    HelperGone,
}

/// Sessions of one configuration and one handler: what a request handler starts and saves
/// sessions with. Cheap to clone, `Send + Sync`: build it once, capture it in the worker's
/// callbacks.
#[derive(Clone)]
pub struct Sessions {
    cfg: Arc<SessionConfig>,
    handler: Arc<dyn SessionHandler>,
    /// When a sweep last started (shared by the rings' sweep timers).
    last_gc: Arc<Mutex<Option<Instant>>>,
}

impl Sessions {
    /// Sessions configured by `cfg`, stored by `handler`.
    pub fn new(cfg: SessionConfig, handler: impl SessionHandler) -> Sessions {
        Sessions { cfg: Arc::new(cfg), handler: Arc::new(handler), last_gc: Arc::new(Mutex::new(None)) }
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The session of `req`: its cookie is read now, the data loaded by the future (which
    /// does not borrow `req`). See [`Sessions::load`].
    pub fn start(&self, req: &Request<'_>) -> impl Future<Output = Result<Session, SessionError>> + 'static {
        let cookie = req.cookie(&self.cfg.cookie_name).map(str::to_owned);
        let this = self.clone();
        async move { this.load(cookie.as_deref()).await }
    }

    /// The session whose id a client sent as `cookie` (the cookie's value; `None` without
    /// one): its data when the id is well-formed and known and the data not expired,
    /// otherwise a new, empty session with a fresh id.
    pub async fn load(&self, cookie: Option<&str>) -> Result<Session, SessionError> {
        let sent_cookie = cookie.is_some();
        if let Some(id) = cookie.and_then(SessionId::parse) {
            if let Some(bytes) = self.handler.read(&id, self.cfg.gc_max_lifetime).await? {
                match data::decode(&bytes) {
                    Some(data) => return Ok(Session::loaded(id, data)),
                    None => log::warn!("session {id:?}: stored data is not in format {}; starting anew", data::VERSION),
                }
            }
        }
        let mut s = Session::new(SessionId::generate()?);
        s.sent_cookie = sent_cookie;
        Ok(s)
    }

    /// Stores `session` as the request left it and adds its cookie to `resp` when the
    /// client must learn the id: changed data is written, unchanged data touched; a
    /// regenerated session is written under its new id and the old id deleted; a destroyed
    /// one deleted (and its cookie cleared); a new session holding nothing is dropped.
    pub async fn save<'a>(&self, session: Session, resp: Response<'a>) -> Result<Response<'a>, SessionError> {
        let max = self.cfg.gc_max_lifetime;
        let Session { id, data, is_new, sent_cookie, changed, replaced, destroyed } = session;
        if destroyed {
            if !is_new {
                self.handler.destroy(&id).await?;
            }
            if let Some(old) = &replaced {
                self.handler.destroy(old).await?;
            }
            return Ok(match self.cfg.delete_cookie_value() {
                Some(v) if sent_cookie || !is_new || replaced.is_some() => resp.header("Set-Cookie", v),
                _ => resp,
            });
        }
        if is_new && replaced.is_none() && data.is_empty() {
            return Ok(resp);
        }
        if changed || is_new || replaced.is_some() {
            self.handler.write(&id, data::encode(&data), max).await?;
        } else {
            self.handler.touch(&id, max).await?;
        }
        if let Some(old) = &replaced {
            self.handler.destroy(old).await?;
        }
        if is_new || replaced.is_some() {
            if let Some(v) = self.cfg.set_cookie_value(&id) {
                return Ok(resp.header("Set-Cookie", v));
            }
            log::warn!("session cookie name {:?} is not an HTTP token: no cookie sent", self.cfg.cookie_name);
        }
        Ok(resp)
    }

    /// Deletes expired sessions now (what the sweep does); the number deleted, where the
    /// handler can tell.
    pub async fn gc(&self) -> Result<usize, SessionError> {
        self.handler.gc(self.cfg.gc_max_lifetime).await
    }

    /// Starts the periodic sweep on the calling ring thread (call it from
    /// `on_worker_start`; calling it on every ring is fine: the timers share one schedule,
    /// so the sweeps of all rings together run about once per `gc_interval`). Errors:
    /// [`EngineError::NotOnRingThread`], or [`EngineError::TimerInterval`] for a zero
    /// interval.
    pub fn start_gc(&self) -> Result<TimerId, EngineError> {
        let this = self.clone();
        Timer::add(self.cfg.gc_interval, true, move || {
            if !this.claim_gc() {
                return;
            }
            let s = this.clone();
            let spawned = ringman_engine::spawn(async move {
                match s.gc().await {
                    Ok(n) if n > 0 => log::debug!("session sweep: {n} expired sessions deleted"),
                    Ok(_) => {}
                    Err(e) => log::warn!("session sweep: {e}"),
                }
            });
            if let Err(e) = spawned {
                log::warn!("session sweep: {e}");
            }
        })
    }

    /// True when this ring's timer should run the sweep: none ran in the last half
    /// interval (the rings' timers are out of phase; half an interval lets one of them run
    /// each period, however their deadlines drift).
    fn claim_gc(&self) -> bool {
        let now = Instant::now();
        let mut last = self.last_gc.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|l| now.duration_since(l) < self.cfg.gc_interval / 2) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// One request's view of a session: its id and data. Values are bytes (strings through
/// [`Session::get_str`]). Changes are kept here until [`Sessions::save`].
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    data: Data,
    /// The id was made for this request (the client does not know it yet).
    is_new: bool,
    /// The client sent a cookie of the configured name (whatever its value).
    sent_cookie: bool,
    changed: bool,
    /// The id before [`Session::regenerate`], to delete when saving.
    replaced: Option<SessionId>,
    destroyed: bool,
}

impl Session {
    fn new(id: SessionId) -> Session {
        Session {
            id,
            data: Data::new(),
            is_new: true,
            sent_cookie: false,
            changed: false,
            replaced: None,
            destroyed: false,
        }
    }

    fn loaded(id: SessionId, data: Data) -> Session {
        Session { is_new: false, sent_cookie: true, data, ..Session::new(id) }
    }

    /// The session's id (the new one after [`Session::regenerate`]).
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    /// True when this session was created for this request (no stored session matched).
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.data.get(key).map(Vec::as_slice)
    }

    /// The value under `key` if it is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// True when `key` has a value.
    pub fn has(&self, key: &str) -> bool {
        self.data.contains_key(key)
    }

    /// Sets `key` to `value` (Workerman's `set`). Ignored after [`Session::destroy`].
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) {
        if self.destroyed {
            return;
        }
        let value = value.into();
        let key = key.into();
        if self.data.get(&key) != Some(&value) {
            self.data.insert(key, value);
            self.changed = true;
        }
    }

    /// Removes `key` (Workerman's `delete`); its old value.
    pub fn remove(&mut self, key: &str) -> Option<Vec<u8>> {
        let old = self.data.remove(key);
        self.changed |= old.is_some();
        old
    }

    /// Removes every value (Workerman's `flush`); the session itself stays.
    pub fn clear(&mut self) {
        self.changed |= !self.data.is_empty();
        self.data.clear();
    }

    /// The keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.data.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Gives the session a new id and keeps its data (Workerman's `regenerateId`, here
    /// always deleting the old id's data: call it after a login so that an id known before
    /// it is worthless). Saving writes the data under the new id, deletes the old one and
    /// sends the new cookie.
    pub fn regenerate(&mut self) -> Result<(), SessionError> {
        let new = SessionId::generate()?;
        let old = std::mem::replace(&mut self.id, new);
        if !self.is_new && self.replaced.is_none() {
            self.replaced = Some(old);
        }
        Ok(())
    }

    /// Ends the session: saving deletes its data and clears the client's cookie. Later
    /// `set`s on this value are ignored.
    pub fn destroy(&mut self) {
        self.destroyed = true;
        self.data.clear();
    }
}

#[cfg(test)]
mod tests;
