//! One connection to Redis: pipelined commands answered in order, the handshake (`HELLO`,
//! `AUTH`, `SELECT`) first on every (re)connect, a bounded backlog while it is down,
//! reconnect with doubling back-off, and command timeouts from one timer per connection.
//!
//! A link in subscriber mode carries no command replies: it receives pub/sub events,
//! resubscribes after a reconnect, and reports the outage as a gap once the server has
//! confirmed every resubscription.
//!
//! Borrow rule: the link is an `Rc<RefCell<Link>>` that the connection's callbacks reach
//! through a `Weak`; user code (a reply's callback, the subscriber's handler) is always
//! called after the borrow is released, so it may issue commands on the same link.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ringman_engine::{AsyncTcpConnection, Connection, SendStatus, Timer, TimerId};
use ringman_protocols::resp::{Cmd, OwnedValue, PubSub, Resp, Value};

use super::{RedisConfig, RedisError, SubEvent};

/// What a command's answer goes to.
pub(crate) type Done = Box<dyn FnOnce(Result<OwnedValue, RedisError>)>;

/// A handler of pub/sub events.
pub(crate) type Handler = Rc<RefCell<Box<dyn FnMut(SubEvent<'_>)>>>;

/// An answer the link waits for, in the order the commands were sent.
enum Waiter {
    /// The link's own handshake command: an error is logged.
    Handshake(&'static str),
    User {
        done: Done,
        deadline: Instant,
    },
    /// Timed out: its late answer is dropped.
    Abandoned,
}

/// A command not sent yet: the link is down.
struct Held {
    wire: Vec<u8>,
    done: Done,
    deadline: Instant,
}

/// A subscriber link's state.
pub(crate) struct Subs {
    pub(crate) channels: BTreeSet<Vec<u8>>,
    pub(crate) patterns: BTreeSet<Vec<u8>>,
    handler: Handler,
    /// When the link went down while subscribed; the gap ends at the resubscription.
    down_since: Option<SystemTime>,
    /// Resubscriptions sent and not confirmed yet.
    confirming: usize,
}

pub(crate) struct Link {
    cfg: Rc<RedisConfig>,
    conn: Option<Connection>,
    up: bool,
    shut: bool,
    inflight: VecDeque<Waiter>,
    backlog: VecDeque<Held>,
    timer: Option<TimerId>,
    backoff: Duration,
    subs: Option<Subs>,
    scratch: Vec<u8>,
}

/// Calls user code, keeping a panic in it from reaching the link's callbacks (which would
/// close the connection).
fn guarded(what: &str, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
        log::error!("redis {what} panicked: {}", msg.unwrap_or_default());
    }
}

impl Link {
    /// Opens a link on the calling ring thread (a subscriber link when `handler` is given).
    pub(crate) fn open(cfg: Rc<RedisConfig>, handler: Option<Handler>) -> Result<Rc<RefCell<Link>>, RedisError> {
        let subs = handler.map(|handler| Subs {
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            handler,
            down_since: None,
            confirming: 0,
        });
        let link = Rc::new(RefCell::new(Link {
            backoff: cfg.reconnect_min,
            cfg: cfg.clone(),
            conn: None,
            up: false,
            shut: false,
            inflight: VecDeque::new(),
            backlog: VecDeque::new(),
            timer: None,
            subs,
            scratch: Vec::new(),
        }));
        let mut dial = AsyncTcpConnection::with_protocol(&cfg.dial_url(), Arc::new(Resp))
            .map_err(|e| RedisError::Config(e.to_string()))?;
        dial.connect_timeout = cfg.connect_timeout;
        dial.tls = cfg.tls.clone();
        let conn = dial.connect().map_err(|e| match e {
            ringman_engine::EngineError::NotOnRingThread => RedisError::NotOnRing,
            e => RedisError::Config(e.to_string()),
        })?;
        let w = Rc::downgrade(&link);
        conn.on_connect(move |_| on_connect(&w));
        let w = Rc::downgrade(&link);
        conn.on_message(move |_, m| on_message(&w, m.data));
        let w = Rc::downgrade(&link);
        conn.on_close(move |c| on_close(&w, c));
        let target = cfg.dial_url();
        conn.on_error(move |_, e| log::warn!("redis {target}: {e}"));
        link.borrow_mut().conn = Some(conn);
        Ok(link)
    }

    /// Sends `cmd` (or keeps it for the next connection); its answer goes to `done`.
    pub(crate) fn submit(this: &Rc<RefCell<Link>>, cmd: &Cmd, done: Done) {
        let refused = {
            let mut l = this.borrow_mut();
            let deadline = Instant::now() + l.cfg.command_timeout;
            let mut wire = std::mem::take(&mut l.scratch);
            wire.clear();
            cmd.encode_prefixed(&l.cfg.key_prefix, &mut wire);
            let r = if l.shut {
                Some((done, RedisError::Closed))
            } else if l.up {
                match l.conn.map(|c| c.send(&wire)) {
                    Some(SendStatus::Sent | SendStatus::Queued) => {
                        l.inflight.push_back(Waiter::User { done, deadline });
                        None
                    }
                    _ => Some((done, RedisError::Disconnected)),
                }
            } else if l.backlog.len() >= l.cfg.max_backlog {
                Some((done, RedisError::Backlog(l.backlog.len())))
            } else {
                l.backlog.push_back(Held { wire: wire.clone(), done, deadline });
                None
            };
            l.scratch = wire;
            r
        };
        match refused {
            Some((done, e)) => guarded("reply callback", || done(Err(e))),
            None => arm_timer(this),
        }
    }

    /// Sends a command of the subscriber link itself (SUBSCRIBE and friends) when up; when
    /// down it is sent by the resubscription.
    pub(crate) fn send_control(this: &Rc<RefCell<Link>>, cmd: &Cmd) {
        let mut l = this.borrow_mut();
        if l.up {
            let mut wire = std::mem::take(&mut l.scratch);
            wire.clear();
            cmd.encode(&mut wire);
            if let Some(c) = l.conn {
                c.send(&wire);
            }
            l.scratch = wire;
        }
    }

    pub(crate) fn subs_mut(&mut self) -> Option<&mut Subs> {
        self.subs.as_mut()
    }

    /// True while connected (handshake sent).
    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// Closes the link for good; what waits fails with [`RedisError::Closed`].
    pub(crate) fn shutdown(this: &Rc<RefCell<Link>>) {
        let (failed, conn, timer) = {
            let mut l = this.borrow_mut();
            l.shut = true;
            l.up = false;
            let mut failed: Vec<Done> = l.backlog.drain(..).map(|h| h.done).collect();
            failed.extend(l.inflight.drain(..).filter_map(|w| match w {
                Waiter::User { done, .. } => Some(done),
                _ => None,
            }));
            (failed, l.conn.take(), l.timer.take())
        };
        if let Some(t) = timer {
            Timer::del(t);
        }
        if let Some(c) = conn {
            c.cancel_reconnect();
            c.close(None);
        }
        for done in failed {
            guarded("reply callback", || done(Err(RedisError::Closed)));
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.cancel_reconnect();
            c.close(None);
        }
        if let Some(t) = self.timer.take() {
            Timer::del(t);
        }
    }
}

/// The handshake commands for a fresh connection, in order.
fn handshake(cfg: &RedisConfig, subscriber: bool) -> Vec<(&'static str, Cmd)> {
    let mut out = Vec::new();
    let auth = cfg.password.as_ref().map(|p| (cfg.username.as_deref().unwrap_or("default"), p));
    if cfg.resp3 && !subscriber {
        let mut hello = Cmd::new("HELLO").arg("3");
        if let Some((u, p)) = auth {
            hello = hello.arg("AUTH").arg(u).arg(p.as_str());
        }
        out.push(("HELLO", hello));
    } else if let Some((u, p)) = auth {
        let cmd = match &cfg.username {
            Some(_) => Cmd::new("AUTH").arg(u).arg(p.as_str()),
            None => Cmd::new("AUTH").arg(p.as_str()),
        };
        out.push(("AUTH", cmd));
    }
    if cfg.db != 0 {
        out.push(("SELECT", Cmd::new("SELECT").arg(cfg.db.to_string())));
    }
    out
}

fn on_connect(w: &Weak<RefCell<Link>>) {
    let Some(link) = w.upgrade() else { return };
    let gap_now = {
        let mut l = link.borrow_mut();
        let l = &mut *l;
        let Some(conn) = l.conn else { return };
        l.up = true;
        l.backoff = l.cfg.reconnect_min;
        let mut wire = Vec::new();
        for (name, cmd) in handshake(&l.cfg, l.subs.is_some()) {
            cmd.encode(&mut wire);
            if l.subs.is_none() {
                l.inflight.push_back(Waiter::Handshake(name));
            }
        }
        let mut gap_now = None;
        if let Some(s) = l.subs.as_mut() {
            // Resubscribe: everything in two commands; the gap ends at the last confirmation.
            if !s.channels.is_empty() {
                let mut c = Cmd::new("SUBSCRIBE");
                for ch in &s.channels {
                    c.push_arg(ch.as_slice());
                }
                c.encode(&mut wire);
            }
            if !s.patterns.is_empty() {
                let mut c = Cmd::new("PSUBSCRIBE");
                for p in &s.patterns {
                    c.push_arg(p.as_slice());
                }
                c.encode(&mut wire);
            }
            s.confirming = s.channels.len() + s.patterns.len();
            if s.confirming == 0 {
                gap_now = s.down_since.take().map(|from| (from, s.handler.clone()));
            }
        }
        for h in l.backlog.drain(..) {
            wire.extend_from_slice(&h.wire);
            l.inflight.push_back(Waiter::User { done: h.done, deadline: h.deadline });
        }
        if !wire.is_empty() {
            conn.send(&wire);
        }
        gap_now
    };
    if let Some((from, handler)) = gap_now {
        let to = SystemTime::now();
        guarded("subscriber handler", || (handler.borrow_mut())(SubEvent::Gap { from, to }));
    }
}

fn on_message(w: &Weak<RefCell<Link>>, data: &[u8]) {
    let Some(link) = w.upgrade() else { return };
    let value = match Value::parse(data) {
        Ok((v, _)) => v,
        Err(e) => {
            // The decoder announced this packet: a parse failure is a codec bug.
            log::error!("redis: unparsable reply: {e}");
            return;
        }
    };
    let subscriber = link.borrow().subs.is_some();
    if subscriber {
        return on_sub_message(&link, &value);
    }
    if matches!(value.strip(), Value::Push(_)) {
        // RESP3 out-of-band data (client-side caching invalidations): not a reply.
        return;
    }
    let waiter = link.borrow_mut().inflight.pop_front();
    match waiter {
        Some(Waiter::User { done, .. }) => {
            let r = match value.as_error() {
                Some(e) => Err(RedisError::Server(e.to_owned_error())),
                None => Ok(value.to_owned_value()),
            };
            guarded("reply callback", || done(r));
        }
        Some(Waiter::Handshake(name)) => {
            if let Some(e) = value.as_error() {
                log::error!("redis {name} failed: {e}");
            }
        }
        Some(Waiter::Abandoned) => {}
        None => log::warn!("redis: an answer nobody asked for"),
    }
}

fn on_sub_message(link: &Rc<RefCell<Link>>, value: &Value<'_>) {
    let Some(ev) = PubSub::from_value(value) else {
        if let Some(e) = value.as_error() {
            log::error!("redis subscriber: {e}");
        }
        return;
    };
    let (handler, gap) = {
        let mut l = link.borrow_mut();
        let s = l.subs.as_mut().expect("a subscriber link");
        let mut gap = None;
        if let PubSub::Subscribed { .. } = ev {
            if s.confirming > 0 {
                s.confirming -= 1;
                if s.confirming == 0 {
                    gap = s.down_since.take();
                }
            }
        }
        (s.handler.clone(), gap)
    };
    let event = match ev {
        PubSub::Message { channel, payload } | PubSub::SMessage { channel, payload } => {
            Some(SubEvent::Message { channel, payload })
        }
        PubSub::PMessage { pattern, channel, payload } => Some(SubEvent::PMessage { pattern, channel, payload }),
        _ => None,
    };
    if let Some(from) = gap {
        let to = SystemTime::now();
        guarded("subscriber handler", || (handler.borrow_mut())(SubEvent::Gap { from, to }));
    }
    if let Some(e) = event {
        guarded("subscriber handler", || (handler.borrow_mut())(e));
    }
}

fn on_close(w: &Weak<RefCell<Link>>, conn: &Connection) {
    let Some(link) = w.upgrade() else { return };
    let failed = {
        let mut l = link.borrow_mut();
        let was_up = std::mem::replace(&mut l.up, false);
        let failed: Vec<Done> = l
            .inflight
            .drain(..)
            .filter_map(|w| match w {
                Waiter::User { done, .. } => Some(done),
                _ => None,
            })
            .collect();
        if let Some(s) = l.subs.as_mut() {
            if was_up && (!s.channels.is_empty() || !s.patterns.is_empty()) {
                s.down_since.get_or_insert_with(SystemTime::now);
            }
        }
        if !l.shut {
            let after = l.backoff;
            l.backoff = (l.backoff * 2).min(l.cfg.reconnect_max);
            if !conn.reconnect(after) {
                log::error!("redis {}: cannot reconnect", l.cfg.dial_url());
            }
        }
        failed
    };
    for done in failed {
        guarded("reply callback", || done(Err(RedisError::Disconnected)));
    }
}

/// Arms the link's timeout timer for its earliest deadline, if it has none armed.
fn arm_timer(this: &Rc<RefCell<Link>>) {
    let mut l = this.borrow_mut();
    if l.timer.is_some() {
        return;
    }
    let earliest = l
        .inflight
        .iter()
        .find_map(|w| match w {
            Waiter::User { deadline, .. } => Some(*deadline),
            _ => None,
        })
        .into_iter()
        .chain(l.backlog.front().map(|h| h.deadline))
        .min();
    let Some(deadline) = earliest else { return };
    let w = Rc::downgrade(this);
    let after = deadline.saturating_duration_since(Instant::now());
    l.timer = Timer::add(after, false, move || expire(&w)).ok();
}

/// The timer fired: commands past their deadline fail with [`RedisError::Timeout`].
fn expire(w: &Weak<RefCell<Link>>) {
    let Some(link) = w.upgrade() else { return };
    let (failed, timeout) = {
        let mut l = link.borrow_mut();
        l.timer = None;
        let now = Instant::now();
        let mut failed = Vec::new();
        for w in l.inflight.iter_mut() {
            if matches!(w, Waiter::User { deadline, .. } if *deadline <= now) {
                if let Waiter::User { done, .. } = std::mem::replace(w, Waiter::Abandoned) {
                    failed.push(done);
                }
            }
        }
        while l.backlog.front().is_some_and(|h| h.deadline <= now) {
            failed.push(l.backlog.pop_front().expect("checked").done);
        }
        (failed, l.cfg.command_timeout)
    };
    for done in failed {
        guarded("reply callback", || done(Err(RedisError::Timeout(timeout))));
    }
    arm_timer(&link);
}
