//! Keep-alive connections per origin on one ring: at most `max_conn_per_addr` open per
//! origin, idle ones reused (most recent first) and closed after `idle_timeout`; a request
//! that finds the origin at its cap waits for a connection to come back or close.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

use ringman_engine::{timeout, AsyncTcpConnection, Connection, Timer};

use super::{ClientConfig, HttpClientError, Url};

/// Host, port and whether the connection is TLS (`https://`).
type Origin = (String, u16, bool);

#[derive(Default)]
struct OriginPool {
    idle: Vec<(Connection, Instant)>,
    /// Connections open or being opened.
    open: usize,
    waiters: VecDeque<Waker>,
}

pub(crate) struct Pool {
    cfg: ClientConfig,
    origins: RefCell<HashMap<Origin, OriginPool>>,
}

/// A connection taken from the pool for one exchange.
pub(crate) struct Lease {
    pub(crate) conn: Connection,
    /// It was idle in the pool before (the server may have closed it meanwhile).
    pub(crate) reused: bool,
}

impl Pool {
    pub(crate) fn new(cfg: ClientConfig) -> Rc<Pool> {
        Rc::new(Pool { cfg, origins: RefCell::new(HashMap::new()) })
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// A connection to `url`'s origin: an idle one, a new one under the cap, or the next
    /// one released.
    pub(crate) async fn acquire(self: &Rc<Pool>, url: &Url) -> Result<Lease, HttpClientError> {
        let origin = (url.host.clone(), url.port, url.tls);
        let open_new = std::future::poll_fn(|cx| {
            let mut all = self.origins.borrow_mut();
            let o = all.entry(origin.clone()).or_default();
            while let Some((conn, _)) = o.idle.pop() {
                if conn.is_open() {
                    return Poll::Ready(Some(conn));
                }
            }
            if o.open < self.cfg.max_conn_per_addr.max(1) {
                o.open += 1;
                return Poll::Ready(None);
            }
            o.waiters.push_back(cx.waker().clone());
            Poll::Pending
        })
        .await;
        if let Some(conn) = open_new {
            return Ok(Lease { conn, reused: true });
        }
        match self.connect(url, &origin).await {
            Ok(conn) => Ok(Lease { conn, reused: false }),
            Err(e) => {
                self.closed(&origin);
                Err(e)
            }
        }
    }

    async fn connect(self: &Rc<Pool>, url: &Url, origin: &Origin) -> Result<Connection, HttpClientError> {
        let mut dial = AsyncTcpConnection::new(&url.dial())
            .map_err(|_| HttpClientError::BadUrl { url: url.dial(), reason: "not a dialable address" })?;
        dial.connect_timeout = self.cfg.connect_timeout;
        if url.tls {
            dial.tls = Some(self.cfg.tls.clone());
        }
        let connecting = dial.connect_async();
        let conn = connecting.connection();
        match timeout(self.cfg.connect_timeout, connecting).await {
            Ok(Ok(c)) => {
                let w = Rc::downgrade(self);
                let o = origin.clone();
                // Its end, whenever it comes: the origin has room again.
                c.on_close(move |_| {
                    if let Some(p) = w.upgrade() {
                        p.closed(&o);
                    }
                });
                // Bytes while no exchange reads it: the server broke the protocol.
                c.on_message(|c, _| c.destroy());
                Ok(c)
            }
            Ok(Err(e)) => Err(HttpClientError::Connect(e)),
            Err(_) => {
                if let Some(c) = conn {
                    c.destroy();
                }
                Err(HttpClientError::Timeout("connect"))
            }
        }
    }

    /// Puts a connection back after an exchange (or closes it).
    pub(crate) fn release(self: &Rc<Pool>, url: &Url, conn: Connection, reusable: bool) {
        if !reusable || !conn.is_open() {
            // Its on_close frees the place.
            conn.close(None);
            return;
        }
        let origin = (url.host.clone(), url.port, url.tls);
        let since = Instant::now();
        let waiter = {
            let mut all = self.origins.borrow_mut();
            let o = all.entry(origin.clone()).or_default();
            o.idle.push((conn, since));
            o.waiters.pop_front()
        };
        if let Some(w) = waiter {
            w.wake();
        }
        let w: Weak<Pool> = Rc::downgrade(self);
        let _ = Timer::add(self.cfg.idle_timeout, false, move || {
            let Some(p) = w.upgrade() else { return };
            let stale = {
                let mut all = p.origins.borrow_mut();
                let Some(o) = all.get_mut(&origin) else { return };
                let i = o.idle.iter().position(|(c, s)| *c == conn && *s == since);
                i.map(|i| o.idle.remove(i).0)
            };
            if let Some(c) = stale {
                c.close(None);
            }
        });
    }

    /// A connection of `origin` closed (or could not be opened).
    fn closed(&self, origin: &Origin) {
        let waiter = {
            let mut all = self.origins.borrow_mut();
            let Some(o) = all.get_mut(origin) else { return };
            o.open = o.open.saturating_sub(1);
            o.idle.retain(|(c, _)| c.is_open());
            o.waiters.pop_front()
        };
        if let Some(w) = waiter {
            w.wake();
        }
    }

    /// Connections open to `url`'s origin and idle among them.
    pub(crate) fn counts(&self, url: &Url) -> (usize, usize) {
        self.origins.borrow().get(&(url.host.clone(), url.port, url.tls)).map_or((0, 0), |o| (o.open, o.idle.len()))
    }
}
