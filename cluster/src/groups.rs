//! Groups and pushes across processes and machines (Workerman's GatewayWorker patterns):
//! `join_group`, `leave_group`, `send_to_group`, `send_to_id`, `send_to_all`, over a
//! [`Channel`].
//!
//! A connection is named cluster-wide by a [`ClusterId`]: the process's [`NodeId`] (given,
//! or generated at random: never a pid, which repeats across machines and restarts) plus
//! the process-local [`ConnectionId`]. Each process subscribes to three kinds of topics:
//! its node (`send_to_id`), everyone (`send_to_all`), and each group it has members of
//! (subscribed on the first local join, dropped after the last leave). A push is one
//! publish; each process delivers to its own members, so the broker carries one message
//! per push and process, never one per connection.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use ringman_engine::{Connection, ConnectionId, SendStatus};

use crate::channel::{Channel, ChannelError, ChannelEvent, SubscriptionId};

/// The identity of one process in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A random identity (64 bits from the kernel's random source): unique across machines
    /// and restarts in practice.
    pub fn random() -> NodeId {
        let mut b = [0u8; 8];
        // getrandom(2) through /dev/urandom: no extra crate for 8 bytes.
        match std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)) {
            Ok(()) => NodeId(u64::from_le_bytes(b)),
            Err(_) => {
                // No /dev/urandom (a minimal container): time and address entropy.
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                NodeId((t.as_nanos() as u64) ^ ((std::process::id() as u64) << 40))
            }
        }
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A connection's cluster-wide name: `node` + the process-local id. Its text form
/// (`Display` / `FromStr`) is `<node hex>-<connection id>`, for keeping in other services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId {
    /// The process.
    pub node: NodeId,
    /// The connection in it.
    pub conn: ConnectionId,
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.node, self.conn.as_u64())
    }
}

impl std::str::FromStr for ClusterId {
    type Err = GroupError;
    fn from_str(s: &str) -> Result<ClusterId, GroupError> {
        let bad = || GroupError::BadId(s.to_string());
        let (n, c) = s.split_once('-').ok_or_else(bad)?;
        let node = u64::from_str_radix(n, 16).map_err(|_| bad())?;
        let conn = c.parse::<u64>().map_err(|_| bad())?;
        Ok(ClusterId { node: NodeId(node), conn: ConnectionId::from_u64(conn) })
    }
}

/// Why a group call failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The channel refused (not on a ring, broker error).
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Not a `ClusterId` text form.
    #[error("not a cluster id: {0:?}")]
    BadId(String),
}

/// A group's local members and this process's subscription to it (with the ring that holds
/// the subscription's handler).
type Group = (HashSet<ConnectionId>, Option<(SubscriptionId, u16)>);

struct Inner {
    node: NodeId,
    channel: Channel,
    prefix: String,
    /// Local members of each group.
    groups: Mutex<HashMap<Bytes, Group>>,
    /// Connections registered for `send_to_all`.
    all: Mutex<HashSet<ConnectionId>>,
    /// Node and all topics subscribed (on the first `start`).
    started: Mutex<bool>,
}

/// Groups and pushes over a [`Channel`] (in-process with [`Channel::local`], across
/// processes with [`Channel::redis`]). Clone it into callbacks; its calls that subscribe
/// ([`Cluster::start`], [`Cluster::join_group`]) run on ring threads, pushes from anywhere.
///
/// ```no_run
/// use ringman_cluster::{Channel, Cluster, NodeId};
/// use ringman_engine::Worker;
/// let cluster = Cluster::new(Channel::redis("redis://127.0.0.1:6379"), NodeId::random());
/// let mut w = Worker::<()>::new("websocket://0.0.0.0:8000").unwrap();
/// let c = cluster.clone();
/// w.on_worker_start(move |_, _| c.start().unwrap());
/// let c = cluster.clone();
/// w.on_connect(move |conn, _| {
///     c.register(conn);
///     c.join_group(conn, "lobby").unwrap();
/// });
/// let c = cluster.clone();
/// w.on_message(move |_, m, _| {
///     c.send_to_group("lobby", m.to_vec()).unwrap();
/// });
/// let c = cluster.clone();
/// w.on_close(move |conn, _| c.unregister(conn));
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// A cluster member named `node`, pushing through `channel`. Topics are prefixed with
    /// `ringman:` (see [`Cluster::with_prefix`]).
    pub fn new(channel: Channel, node: NodeId) -> Cluster {
        Cluster::with_prefix(channel, node, "ringman:")
    }

    /// [`Cluster::new`] with another topic prefix (several clusters on one Redis).
    pub fn with_prefix(channel: Channel, node: NodeId, prefix: &str) -> Cluster {
        Cluster {
            inner: Arc::new(Inner {
                node,
                channel,
                prefix: prefix.to_string(),
                groups: Mutex::new(HashMap::new()),
                all: Mutex::new(HashSet::new()),
                started: Mutex::new(false),
            }),
        }
    }

    /// This process's identity.
    pub fn node(&self) -> NodeId {
        self.inner.node
    }

    /// Subscribes this process to its node's and the all-topic (once; later calls do
    /// nothing). Call it on a ring thread before pushes are expected, e.g. in
    /// `on_worker_start`.
    pub fn start(&self) -> Result<(), GroupError> {
        let mut started = lock(&self.inner.started);
        if *started {
            return Ok(());
        }
        let me = self.clone();
        self.inner.channel.subscribe(self.topic("n:", self.inner.node.to_string().as_bytes()), move |_, ev| {
            if let ChannelEvent::Message(m) = ev {
                if m.len() >= 8 {
                    let id = ConnectionId::from_u64(u64::from_be_bytes(m[..8].try_into().expect("8 bytes")));
                    me.deliver(id, m.slice(8..));
                }
            }
        })?;
        let me = self.clone();
        self.inner.channel.subscribe(self.topic("all", b""), move |_, ev| {
            if let ChannelEvent::Message(m) = ev {
                let ids: Vec<ConnectionId> = lock(&me.inner.all).iter().copied().collect();
                for id in ids {
                    me.deliver(id, m.clone());
                }
            }
        })?;
        *started = true;
        Ok(())
    }

    /// The cluster-wide name of `conn` (a connection of this process).
    pub fn id_of(&self, conn: &Connection) -> ClusterId {
        ClusterId { node: self.inner.node, conn: conn.id() }
    }

    /// Registers `conn` for [`Cluster::send_to_all`]; returns its cluster-wide name.
    pub fn register(&self, conn: &Connection) -> ClusterId {
        lock(&self.inner.all).insert(conn.id());
        self.id_of(conn)
    }

    /// Forgets `conn` everywhere (all-set and groups): call it from `on_close`.
    pub fn unregister(&self, conn: &Connection) {
        lock(&self.inner.all).remove(&conn.id());
        let names: Vec<Bytes> = lock(&self.inner.groups)
            .iter()
            .filter(|(_, (m, _))| m.contains(&conn.id()))
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            self.leave_group(conn, n);
        }
    }

    /// Adds `conn` to group `name`. The first local member subscribes this process to the
    /// group (on this ring thread).
    pub fn join_group(&self, conn: &Connection, name: impl AsRef<[u8]>) -> Result<(), GroupError> {
        let name = Bytes::copy_from_slice(name.as_ref());
        let first = {
            let mut g = lock(&self.inner.groups);
            let e = g.entry(name.clone()).or_default();
            e.0.insert(conn.id());
            e.1.is_none()
        };
        if first {
            let me = self.clone();
            let n = name.clone();
            let sub = self.inner.channel.subscribe(self.topic("g:", &name), move |_, ev| {
                if let ChannelEvent::Message(m) = ev {
                    me.deliver_group(&n, m);
                }
            })?;
            let ring = ringman_engine::current_ring().expect("subscribed on a ring");
            let mut g = lock(&self.inner.groups);
            match g.get_mut(&name) {
                Some(e) if e.1.is_none() => e.1 = Some((sub, ring)),
                _ => {
                    drop(g);
                    self.inner.channel.unsubscribe(sub);
                }
            }
        }
        Ok(())
    }

    /// Removes `conn` from group `name`; the last local member's leave unsubscribes the
    /// process (on the ring thread that subscribed it).
    pub fn leave_group(&self, conn: &Connection, name: impl AsRef<[u8]>) {
        let name = name.as_ref();
        let sub = {
            let mut g = lock(&self.inner.groups);
            let Some(e) = g.get_mut(name) else { return };
            e.0.remove(&conn.id());
            if !e.0.is_empty() {
                return;
            }
            g.remove(name).and_then(|e| e.1)
        };
        if let Some((sub, ring)) = sub {
            // Subscriptions are per ring: unsubscribe where it was made.
            let ch = self.inner.channel.clone();
            if ringman_engine::current_ring() == Some(ring) {
                ch.unsubscribe(sub);
            } else {
                ringman_engine::run_on_ring(ring, move || {
                    ch.unsubscribe(sub);
                });
            }
        }
    }

    /// Members of group `name` in this process.
    pub fn local_members(&self, name: impl AsRef<[u8]>) -> Vec<ConnectionId> {
        lock(&self.inner.groups).get(name.as_ref()).map(|e| e.0.iter().copied().collect()).unwrap_or_default()
    }

    /// Sends `data` to every member of group `name` in every process.
    pub fn send_to_group(&self, name: impl AsRef<[u8]>, data: impl Into<Bytes>) -> Result<(), GroupError> {
        Ok(self.inner.channel.publish(self.topic("g:", name.as_ref()), data)?)
    }

    /// Sends `data` to one connection anywhere in the cluster (directly when it is in this
    /// process).
    pub fn send_to_id(&self, id: ClusterId, data: impl Into<Bytes>) -> Result<(), GroupError> {
        let data = data.into();
        if id.node == self.inner.node {
            self.deliver(id.conn, data);
            return Ok(());
        }
        let mut m = BytesMut::with_capacity(8 + data.len());
        m.put_u64(id.conn.as_u64());
        m.put_slice(&data);
        Ok(self.inner.channel.publish(self.topic("n:", id.node.to_string().as_bytes()), m.freeze())?)
    }

    /// Sends `data` to every registered connection of every process.
    pub fn send_to_all(&self, data: impl Into<Bytes>) -> Result<(), GroupError> {
        Ok(self.inner.channel.publish(self.topic("all", b""), data)?)
    }

    fn topic(&self, kind: &str, name: &[u8]) -> Vec<u8> {
        let mut t = Vec::with_capacity(self.inner.prefix.len() + kind.len() + name.len());
        t.extend_from_slice(self.inner.prefix.as_bytes());
        t.extend_from_slice(kind.as_bytes());
        t.extend_from_slice(name);
        t
    }

    /// Sends to one local connection; a connection that is gone is forgotten.
    fn deliver(&self, id: ConnectionId, data: Bytes) {
        if Connection::from_id(id).send_bytes(data) == SendStatus::Failed {
            lock(&self.inner.all).remove(&id);
        }
    }

    fn deliver_group(&self, name: &Bytes, data: &Bytes) {
        let members: Vec<ConnectionId> =
            lock(&self.inner.groups).get(name).map(|e| e.0.iter().copied().collect()).unwrap_or_default();
        for id in members {
            if Connection::from_id(id).send_bytes(data.clone()) == SendStatus::Failed {
                if let Some(e) = lock(&self.inner.groups).get_mut(name) {
                    e.0.remove(&id);
                }
            }
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.inner.node).finish()
    }
}
