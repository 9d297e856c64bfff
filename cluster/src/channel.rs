//! Publish / subscribe by topic: inside the process, or across processes and machines
//! through Redis pub/sub (Workerman's Channel, on an existing broker).
//!
//! Fan-out: handlers live on ring threads. The process keeps, per topic, which rings have
//! handlers; a message for a topic goes once to each of those rings (one mailbox post per
//! ring, the payload shared, not copied) and there to each handler. With Redis, the process
//! holds one broker subscription per topic, on one connection of one ring (the first ring
//! that subscribed: the channel's home), whatever the number of handlers or connections
//! behind it.
//!
//! Sharded pub/sub (Redis 7 `SSUBSCRIBE`/`SPUBLISH`) fits behind the same API: the home
//! ring's subscriber would hold one connection per shard and route a topic by its slot;
//! the fan-out inside the process does not change.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use bytes::Bytes;
use ringman_engine::{current_ring, run_on_ring};
use ringman_protocols::resp::Cmd;

use crate::redis::{Redis, RedisConfig, RedisError, SubEvent, Subscriber};

/// What a channel handler receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelEvent {
    /// A message published on the topic.
    Message(Bytes),
    /// The broker connection was down from `from` to `to`: messages published meanwhile
    /// were not received (Redis pub/sub keeps nothing for an absent subscriber). Never sent
    /// by the in-process channel.
    Gap {
        /// When the connection was lost.
        from: SystemTime,
        /// When the subscriptions were back.
        to: SystemTime,
    },
}

/// Why a channel call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Subscribing needs a ring thread (handlers run there).
    #[error("channel: not on a ring thread")]
    NotOnRing,
    /// Publishing through Redis off a ring thread needs a ring that subscribed already (the
    /// home ring carries it).
    #[error("channel: no ring thread to publish from yet")]
    NoRing,
    /// The broker client refused.
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Identifies one subscription, for [`Channel::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

type ChannelHandler = Rc<RefCell<dyn FnMut(&[u8], &ChannelEvent)>>;
/// A ring's handlers by (channel, topic).
type HandlerTable = HashMap<(u64, Bytes), Vec<(SubscriptionId, ChannelHandler)>>;

struct Inner {
    id: u64,
    /// The Redis URL, or `None` for the in-process channel.
    broker: Option<String>,
    /// Per topic, the rings with handlers and how many each has.
    rings: Mutex<HashMap<Bytes, Vec<(u16, usize)>>>,
    /// The ring holding the broker subscription.
    home: Mutex<Option<u16>>,
}

/// A publish/subscribe channel, cheap to clone and usable from any thread for publishing.
///
/// ```no_run
/// use ringman_cluster::{Channel, ChannelEvent};
/// use ringman_engine::Worker;
/// let channel = Channel::redis("redis://127.0.0.1:6379"); // or Channel::local()
/// let mut w = Worker::<()>::new("websocket://0.0.0.0:8000").unwrap();
/// let ch = channel.clone();
/// w.on_worker_start(move |_, _| {
///     ch.subscribe("news", |_topic, ev| {
///         if let ChannelEvent::Message(m) = ev {
///             println!("news: {m:?}");
///         }
///     })
///     .unwrap();
/// });
/// let ch = channel.clone();
/// w.on_message(move |_, m, _| {
///     ch.publish("news", m.to_vec()).unwrap();
/// });
/// ```
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This ring's handlers, by (channel, topic).
    static HANDLERS: RefCell<HandlerTable> = RefCell::new(HashMap::new());
    /// This ring's publishing connection per broker URL (see `redis_publish`).
    static PUBLISHERS: RefCell<HashMap<String, Redis>> = RefCell::new(HashMap::new());
    /// The broker subscribers this ring is home to, by channel.
    static SUBSCRIBERS: RefCell<HashMap<u64, Subscriber>> = RefCell::new(HashMap::new());
}

impl Channel {
    /// A channel inside this process (no broker).
    pub fn local() -> Channel {
        Channel::with_broker(None)
    }

    /// A channel across processes and machines through the Redis at `url`
    /// (`redis://[user:password@]host[:port][/db]`). Topics are Redis channel names, used
    /// as given, so other Redis clients can publish to ringman's subscribers.
    pub fn redis(url: &str) -> Channel {
        Channel::with_broker(Some(url.to_string()))
    }

    fn with_broker(broker: Option<String>) -> Channel {
        Channel {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                broker,
                rings: Mutex::new(HashMap::new()),
                home: Mutex::new(None),
            }),
        }
    }

    /// True when a broker carries it across processes.
    pub fn is_distributed(&self) -> bool {
        self.inner.broker.is_some()
    }

    /// Publishes `data` on `topic`, from any thread. In-process: delivered to every
    /// handler of the topic. Through Redis: sent with `PUBLISH` from the calling ring (or,
    /// off a ring, from the channel's home ring) on that ring's one publishing connection;
    /// every subscribed process delivers it, this one included. Messages published by one
    /// ring (or one non-ring thread) reach each handler in the order they were published.
    /// A failed `PUBLISH` is logged.
    pub fn publish(&self, topic: impl AsRef<[u8]>, data: impl Into<Bytes>) -> Result<(), ChannelError> {
        let topic = Bytes::copy_from_slice(topic.as_ref());
        let data = data.into();
        let Some(url) = &self.inner.broker else {
            self.inner.fan_out(&topic, ChannelEvent::Message(data));
            return Ok(());
        };
        if current_ring().is_some() {
            return redis_publish(url, &topic, &data);
        }
        let home = (*lock(&self.inner.home)).ok_or(ChannelError::NoRing)?;
        let url = url.clone();
        run_on_ring(home, move || {
            if let Err(e) = redis_publish(&url, &topic, &data) {
                log::error!("channel publish: {e}");
            }
        });
        Ok(())
    }

    /// Calls `handler(topic, event)` on this ring thread for every message on `topic`
    /// (and, through Redis, for every gap in the broker connection). Handlers of one topic
    /// on one ring run in subscription order; a panic in one is logged and the others run.
    pub fn subscribe(
        &self,
        topic: impl AsRef<[u8]>,
        handler: impl FnMut(&[u8], &ChannelEvent) + 'static,
    ) -> Result<SubscriptionId, ChannelError> {
        let ring = current_ring().ok_or(ChannelError::NotOnRing)?;
        let topic = Bytes::copy_from_slice(topic.as_ref());
        let id = SubscriptionId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let handler: ChannelHandler = Rc::new(RefCell::new(handler));
        HANDLERS.with(|h| h.borrow_mut().entry((self.inner.id, topic.clone())).or_default().push((id, handler)));
        let first_in_process = {
            let mut rings = lock(&self.inner.rings);
            let list = rings.entry(topic.clone()).or_default();
            let first = list.is_empty();
            match list.iter_mut().find(|(r, _)| *r == ring) {
                Some((_, n)) => *n += 1,
                None => list.push((ring, 1)),
            }
            first
        };
        if first_in_process && self.inner.broker.is_some() {
            self.broker_subscribe(ring, topic, true)?;
        }
        Ok(id)
    }

    /// Removes a subscription made on this ring thread; false if it is unknown here.
    pub fn unsubscribe(&self, sub: SubscriptionId) -> bool {
        let Some(ring) = current_ring() else { return false };
        let topic = HANDLERS.with(|h| {
            let mut h = h.borrow_mut();
            let key = h.iter().find(|((c, _), v)| *c == self.inner.id && v.iter().any(|(s, _)| *s == sub))?.0.clone();
            let v = h.get_mut(&key).expect("found");
            v.retain(|(s, _)| *s != sub);
            if v.is_empty() {
                h.remove(&key);
            }
            Some(key.1)
        });
        let Some(topic) = topic else { return false };
        let last_in_process = {
            let mut rings = lock(&self.inner.rings);
            let list = rings.entry(topic.clone()).or_default();
            if let Some(i) = list.iter().position(|(r, _)| *r == ring) {
                list[i].1 -= 1;
                if list[i].1 == 0 {
                    list.remove(i);
                }
            }
            let last = list.is_empty();
            if last {
                rings.remove(&topic);
            }
            last
        };
        if last_in_process && self.inner.broker.is_some() {
            if let Err(e) = self.broker_subscribe(ring, topic, false) {
                log::error!("channel unsubscribe: {e}");
            }
        }
        true
    }

    /// Subscribes (or unsubscribes) the process at the broker, on the home ring.
    fn broker_subscribe(&self, ring: u16, topic: Bytes, on: bool) -> Result<(), ChannelError> {
        let home = *lock(&self.inner.home).get_or_insert(ring);
        let inner = Arc::downgrade(&self.inner);
        let url = self.inner.broker.clone().expect("a broker");
        let id = self.inner.id;
        let act = move || -> Result<(), RedisError> {
            let sub = SUBSCRIBERS.with(|s| s.borrow().contains_key(&id));
            if !sub {
                let redis = Redis::shared(&url)?;
                let w = inner.clone();
                let s = redis.subscriber(move |ev| on_broker_event(&w, ev))?;
                SUBSCRIBERS.with(|s2| s2.borrow_mut().insert(id, s));
            }
            SUBSCRIBERS.with(|s| {
                if let Some(s) = s.borrow().get(&id) {
                    if on {
                        s.subscribe(&topic);
                    } else {
                        s.unsubscribe(&topic);
                    }
                }
            });
            Ok(())
        };
        if home == ring {
            act()?;
        } else {
            run_on_ring(home, move || {
                if let Err(e) = act() {
                    log::error!("channel subscribe: {e}");
                }
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("broker", &self.inner.broker).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes on this ring's publisher connection for `url`: one connection per ring (not
/// the shared pool, which spreads commands over several), so what one ring publishes
/// reaches subscribers in the order it was published.
fn redis_publish(url: &str, topic: &[u8], data: &[u8]) -> Result<(), ChannelError> {
    let redis = match PUBLISHERS.with(|p| p.borrow().get(url).cloned()) {
        Some(r) => r,
        None => {
            let mut cfg = RedisConfig::from_url(url)?;
            cfg.pool_size = 1;
            let r = Redis::connect(cfg)?;
            PUBLISHERS.with(|p| p.borrow_mut().insert(url.to_string(), r.clone()));
            r
        }
    };
    redis.send(&Cmd::new("PUBLISH").arg(topic).arg(data), |r| {
        if let Err(e) = r {
            log::error!("channel publish: {e}");
        }
    });
    Ok(())
}

/// The home ring's subscriber received something: fan it out to the process.
fn on_broker_event(inner: &Weak<Inner>, ev: SubEvent<'_>) {
    let Some(inner) = inner.upgrade() else { return };
    match ev {
        SubEvent::Message { channel, payload } | SubEvent::PMessage { channel, payload, .. } => {
            let topic = Bytes::copy_from_slice(channel);
            inner.fan_out(&topic, ChannelEvent::Message(Bytes::copy_from_slice(payload)));
        }
        SubEvent::Gap { from, to } => {
            let topics: Vec<Bytes> = lock(&inner.rings).keys().cloned().collect();
            for t in topics {
                inner.fan_out(&t, ChannelEvent::Gap { from, to });
            }
        }
    }
}

impl Inner {
    /// Delivers `ev` to every ring with handlers for `topic`: at once on the calling ring,
    /// through the mailbox on the others.
    fn fan_out(&self, topic: &Bytes, ev: ChannelEvent) {
        let rings: Vec<u16> =
            lock(&self.rings).get(topic).map(|l| l.iter().map(|(r, _)| *r).collect()).unwrap_or_default();
        let me = current_ring();
        let id = self.id;
        for r in rings {
            if Some(r) == me {
                dispatch(id, topic, &ev);
            } else {
                let (topic, ev) = (topic.clone(), ev.clone());
                run_on_ring(r, move || dispatch(id, &topic, &ev));
            }
        }
    }
}

/// Runs this ring's handlers of (channel, topic).
fn dispatch(channel: u64, topic: &Bytes, ev: &ChannelEvent) {
    let handlers: Vec<ChannelHandler> = HANDLERS.with(|h| {
        h.borrow()
            .get(&(channel, topic.clone()))
            .map(|v| v.iter().map(|(_, f)| f.clone()).collect())
            .unwrap_or_default()
    });
    for f in handlers {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| (f.borrow_mut())(topic, ev))) {
            let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            log::error!("channel handler panicked: {}", msg.unwrap_or_default());
        }
    }
}
