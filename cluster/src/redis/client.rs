//! The client handle: a small pool of links on one ring thread, commands with callbacks or
//! `.await`, typed helpers, and pub/sub subscribers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ringman_protocols::resp::{Arg, Cmd, OwnedValue};

use super::link::{Done, Handler, Link};
use super::{RedisConfig, RedisError};

/// An async Redis client living on the ring thread that opened it (clone it freely on that
/// thread; it is not `Send`). Commands pipeline over `pool_size` connections, round-robin;
/// each connection reconnects with back-off on its own and keeps commands made while it is
/// down (up to `max_backlog`). Every command answers once: its value, a server error, a
/// timeout, or a lost connection.
///
/// ```no_run
/// use ringman_cluster::redis::Redis;
/// use ringman_protocols::resp::Cmd;
/// # fn on_ring() -> Result<(), ringman_cluster::redis::RedisError> {
/// let redis = Redis::open("redis://127.0.0.1:6379")?;
/// // With a callback:
/// redis.send(&Cmd::new("INCR").key("hits"), |r| println!("hits: {r:?}"));
/// // Or awaited, in a task:
/// let r = redis.clone();
/// ringman_engine::spawn(async move {
///     r.set("greeting", "hello").await.unwrap();
///     assert_eq!(r.get("greeting").await.unwrap().as_deref(), Some(&b"hello"[..]));
/// })
/// .unwrap();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Redis {
    inner: Rc<Inner>,
}

struct Inner {
    cfg: Rc<RedisConfig>,
    links: Vec<Rc<RefCell<Link>>>,
    next: Cell<usize>,
}

thread_local! {
    /// [`Redis::shared`]'s clients of this ring thread, by URL.
    static SHARED: RefCell<HashMap<String, Redis>> = RefCell::new(HashMap::new());
}

impl Redis {
    /// Opens a client on the calling ring thread with `cfg`.
    pub fn connect(cfg: RedisConfig) -> Result<Redis, RedisError> {
        if ringman_engine::current_ring().is_none() {
            return Err(RedisError::NotOnRing);
        }
        let cfg = Rc::new(cfg);
        let links = (0..cfg.pool_size.max(1)).map(|_| Link::open(cfg.clone(), None)).collect::<Result<Vec<_>, _>>()?;
        Ok(Redis { inner: Rc::new(Inner { cfg, links, next: Cell::new(0) }) })
    }

    /// [`Redis::connect`] with [`RedisConfig::from_url`].
    pub fn open(url: &str) -> Result<Redis, RedisError> {
        Redis::connect(RedisConfig::from_url(url)?)
    }

    /// This ring thread's client for `url`, opened on first use and kept for the thread's
    /// life: the way components share one small pool per ring.
    pub fn shared(url: &str) -> Result<Redis, RedisError> {
        if let Some(r) = SHARED.with(|s| s.borrow().get(url).cloned()) {
            return Ok(r);
        }
        let r = Redis::open(url)?;
        SHARED.with(|s| s.borrow_mut().insert(url.to_string(), r.clone()));
        Ok(r)
    }

    /// Its configuration.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.cfg
    }

    /// Sends `cmd`; `done` gets the answer (on this ring thread, once).
    pub fn send(&self, cmd: &Cmd, done: impl FnOnce(Result<OwnedValue, RedisError>) + 'static) {
        let links = &self.inner.links;
        let i = self.inner.next.get();
        self.inner.next.set((i + 1) % links.len());
        Link::submit(&links[i], cmd, Box::new(done) as Done);
    }

    /// Sends `cmd`; the future yields the answer.
    pub fn cmd(&self, cmd: &Cmd) -> Reply {
        let slot = Rc::new(RefCell::new(ReplySlot::default()));
        let s = slot.clone();
        self.send(cmd, move |r| {
            let w = {
                let mut s = s.borrow_mut();
                s.out = Some(r);
                s.waker.take()
            };
            if let Some(w) = w {
                w.wake();
            }
        });
        Reply { slot }
    }

    /// Sends every command of `cmds` back to back on one connection (a pipeline: one write,
    /// answers in order); the future yields their answers in the same order.
    pub async fn pipeline(&self, cmds: &[Cmd]) -> Vec<Result<OwnedValue, RedisError>> {
        let links = &self.inner.links;
        let i = self.inner.next.get();
        self.inner.next.set((i + 1) % links.len());
        let mut replies = Vec::with_capacity(cmds.len());
        for c in cmds {
            let slot = Rc::new(RefCell::new(ReplySlot::default()));
            let s = slot.clone();
            Link::submit(
                &links[i],
                c,
                Box::new(move |r| {
                    let w = {
                        let mut s = s.borrow_mut();
                        s.out = Some(r);
                        s.waker.take()
                    };
                    if let Some(w) = w {
                        w.wake();
                    }
                }),
            );
            replies.push(Reply { slot });
        }
        let mut out = Vec::with_capacity(replies.len());
        for r in replies {
            out.push(r.await);
        }
        out
    }

    /// `GET key`: the value, or `None` when the key does not exist.
    pub async fn get(&self, key: impl Arg) -> Result<Option<Vec<u8>>, RedisError> {
        match self.cmd(&Cmd::new("GET").key(key)).await? {
            OwnedValue::Bulk(v) => Ok(v),
            OwnedValue::Null => Ok(None),
            v => Err(unexpected(&v)),
        }
    }

    /// `SET key value`.
    pub async fn set(&self, key: impl Arg, value: impl Arg) -> Result<(), RedisError> {
        expect_ok(self.cmd(&Cmd::new("SET").key(key).arg(value)).await?)
    }

    /// `SET key value NX`: true when the key did not exist and was set.
    pub async fn set_nx(&self, key: impl Arg, value: impl Arg) -> Result<bool, RedisError> {
        match self.cmd(&Cmd::new("SET").key(key).arg(value).arg("NX")).await? {
            OwnedValue::Null | OwnedValue::Bulk(None) => Ok(false),
            v if v.is_ok() => Ok(true),
            v => Err(unexpected(&v)),
        }
    }

    /// `DEL key`: true when a key was removed.
    pub async fn del(&self, key: impl Arg) -> Result<bool, RedisError> {
        int(self.cmd(&Cmd::new("DEL").key(key)).await?).map(|n| n > 0)
    }

    /// `INCRBY key by`: the new value.
    pub async fn incr_by(&self, key: impl Arg, by: i64) -> Result<i64, RedisError> {
        int(self.cmd(&Cmd::new("INCRBY").key(key).arg(by)).await?)
    }

    /// `PUBLISH channel payload` (the channel is not prefixed: it is not a key): the number
    /// of subscribers that received it.
    pub async fn publish(&self, channel: impl Arg, payload: impl Arg) -> Result<i64, RedisError> {
        int(self.cmd(&Cmd::new("PUBLISH").arg(channel).arg(payload)).await?)
    }

    /// A pub/sub subscriber on its own connection (with this client's configuration):
    /// `handler` receives messages of the channels and patterns it subscribes to, and a
    /// [`SubEvent::Gap`] after each outage (Redis keeps nothing for a disconnected
    /// subscriber, so whatever was published in between is lost; the gap says when).
    pub fn subscriber(&self, handler: impl FnMut(SubEvent<'_>) + 'static) -> Result<Subscriber, RedisError> {
        let handler: Handler = Rc::new(RefCell::new(Box::new(handler)));
        Ok(Subscriber { link: Link::open(self.inner.cfg.clone(), Some(handler))? })
    }

    /// Closes the client's connections; waiting commands fail with
    /// [`RedisError::Closed`], later ones at once. (A [`Redis::shared`] client is
    /// forgotten too.)
    pub fn close(&self) {
        SHARED.with(|s| s.borrow_mut().retain(|_, r| !Rc::ptr_eq(&r.inner, &self.inner)));
        for l in &self.inner.links {
            Link::shutdown(l);
        }
    }

    /// How many of its connections are up.
    pub fn connected(&self) -> usize {
        self.inner.links.iter().filter(|l| l.borrow().is_up()).count()
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("addr", &self.inner.cfg.dial_url()).finish()
    }
}

fn unexpected(v: &OwnedValue) -> RedisError {
    RedisError::Unexpected(format!("{v:?}"))
}

fn expect_ok(v: OwnedValue) -> Result<(), RedisError> {
    if v.is_ok() {
        Ok(())
    } else {
        Err(unexpected(&v))
    }
}

fn int(v: OwnedValue) -> Result<i64, RedisError> {
    v.as_int().ok_or_else(|| unexpected(&v))
}

#[derive(Default)]
struct ReplySlot {
    out: Option<Result<OwnedValue, RedisError>>,
    waker: Option<Waker>,
}

/// The future of [`Redis::cmd`].
#[must_use = "futures do nothing unless awaited (the command is sent anyway)"]
pub struct Reply {
    slot: Rc<RefCell<ReplySlot>>,
}

impl Future for Reply {
    type Output = Result<OwnedValue, RedisError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.borrow_mut();
        match s.out.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A pub/sub event a [`Subscriber`]'s handler receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubEvent<'a> {
    /// A message on a subscribed channel.
    Message {
        /// The channel.
        channel: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// A message on a channel matching a subscribed pattern.
    PMessage {
        /// The pattern.
        pattern: &'a [u8],
        /// The channel.
        channel: &'a [u8],
        /// The payload.
        payload: &'a [u8],
    },
    /// The connection was down from `from` until the subscriptions were confirmed again at
    /// `to`: messages published in between were not received.
    Gap {
        /// When the connection was lost.
        from: std::time::SystemTime,
        /// When every subscription was back.
        to: std::time::SystemTime,
    },
}

#[derive(Clone, Copy)]
enum Family {
    Channels,
    Patterns,
}

/// A pub/sub connection ([`Redis::subscriber`]). Subscriptions survive reconnects; dropping
/// the subscriber closes its connection.
pub struct Subscriber {
    link: Rc<RefCell<Link>>,
}

impl Subscriber {
    /// `SUBSCRIBE channel` (kept across reconnects).
    pub fn subscribe(&self, channel: impl AsRef<[u8]>) {
        self.change(Family::Channels, true, channel.as_ref());
    }

    /// `UNSUBSCRIBE channel`.
    pub fn unsubscribe(&self, channel: impl AsRef<[u8]>) {
        self.change(Family::Channels, false, channel.as_ref());
    }

    /// `PSUBSCRIBE pattern` (kept across reconnects).
    pub fn psubscribe(&self, pattern: impl AsRef<[u8]>) {
        self.change(Family::Patterns, true, pattern.as_ref());
    }

    /// `PUNSUBSCRIBE pattern`.
    pub fn punsubscribe(&self, pattern: impl AsRef<[u8]>) {
        self.change(Family::Patterns, false, pattern.as_ref());
    }

    /// Records the change (so a reconnect repeats it) and sends it when it is one.
    fn change(&self, family: Family, on: bool, name: &[u8]) {
        let changed = self.link.borrow_mut().subs_mut().is_some_and(|s| {
            let set = match family {
                Family::Channels => &mut s.channels,
                Family::Patterns => &mut s.patterns,
            };
            if on {
                set.insert(name.to_vec())
            } else {
                set.remove(name)
            }
        });
        if changed {
            let verb = match (family, on) {
                (Family::Channels, true) => "SUBSCRIBE",
                (Family::Channels, false) => "UNSUBSCRIBE",
                (Family::Patterns, true) => "PSUBSCRIBE",
                (Family::Patterns, false) => "PUNSUBSCRIBE",
            };
            Link::send_control(&self.link, &Cmd::new(verb).arg(name));
        }
    }

    /// True while its connection is up.
    pub fn is_connected(&self) -> bool {
        self.link.borrow().is_up()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        Link::shutdown(&self.link);
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("connected", &self.is_connected()).finish()
    }
}
