//! Host name resolution that never blocks a ring: lookups run on a small pool of resolver
//! threads with the system resolver (`getaddrinfo`, which honours `/etc/hosts`,
//! `/etc/nsswitch.conf` and `/etc/resolv.conf`), and each answer travels back to the asking
//! rings through their mailboxes. Rings cache answers for [`CACHE_TTL`], failures for
//! [`NEGATIVE_TTL`].
//!
//! One name that never answers must not hold up the others, so:
//!
//! * a name (with its port) is looked up once at a time: attempts asking while it is queued
//!   or running wait for that lookup's answer instead of queuing another;
//! * an attempt that ended meanwhile (timed out, closed, renewed) is forgotten
//!   ([`forget`]), and a queued name nobody waits for any more is never looked up;
//! * threads are added while names wait and every thread is busy, up to [`MAX_THREADS`]
//!   (so it takes that many distinct names stalling at once to delay the rest);
//! * at most [`MAX_QUEUED`] names wait to start; beyond, a dial fails at once with
//!   [`ConnectError::ResolverBusy`] rather than waiting behind them.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crate::error::ConnectError;
use crate::id::ConnectionId;
use crate::mailbox::{post, Cmd};

/// How long a ring reuses an answer. `getaddrinfo` does not report the DNS record's TTL,
/// so this is a fixed, short bound: a changed record is seen within it.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(30);

/// How long a ring reuses a failure: a reconnect loop on a name that does not resolve asks
/// the resolver at most this often.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Most resolver threads.
pub(crate) const MAX_THREADS: usize = 8;

/// Most names waiting for a resolver thread.
pub(crate) const MAX_QUEUED: usize = 256;

/// A name and port.
type Key = (String, u16);

/// What the resolver answers: the addresses, or why there are none.
pub(crate) type Answer = Result<Vec<SocketAddr>, String>;

/// An attempt waiting for a name.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Waiter {
    conn: ConnectionId,
    attempt: u32,
}

#[derive(Default)]
struct State {
    /// Names queued or being looked up, with the attempts waiting for each.
    pending: HashMap<Key, Vec<Waiter>>,
    /// Names not started yet, oldest first.
    queue: VecDeque<Key>,
    threads: usize,
    /// Threads waiting for work.
    idle: usize,
}

struct Resolver {
    state: Mutex<State>,
    work: Condvar,
}

fn resolver() -> &'static Resolver {
    static R: OnceLock<Resolver> = OnceLock::new();
    R.get_or_init(|| Resolver { state: Mutex::new(State::default()), work: Condvar::new() })
}

/// Looks `host` up off the ring for `conn`'s dialing attempt `attempt`; the answer arrives
/// as [`Cmd::Resolved`]. Refused when too many names wait already.
pub(crate) fn lookup(host: &str, port: u16, conn: ConnectionId, attempt: u32) -> Result<(), ConnectError> {
    resolver().lookup(host, port, conn, attempt)
}

/// `conn`'s attempt `attempt` no longer waits for `host` (it ended); a queued name nobody
/// waits for is dropped unresolved.
pub(crate) fn forget(host: &str, port: u16, conn: ConnectionId, attempt: u32) {
    resolver().forget(host, port, conn, attempt)
}

impl Resolver {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (no user code runs under the lock).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lookup(&'static self, host: &str, port: u16, conn: ConnectionId, attempt: u32) -> Result<(), ConnectError> {
        let r = self;
        let mut s = r.lock();
        let waiter = Waiter { conn, attempt };
        let key = (host.to_string(), port);
        if let Some(w) = s.pending.get_mut(&key) {
            w.push(waiter);
            return Ok(());
        }
        if s.queue.len() >= MAX_QUEUED {
            return Err(ConnectError::ResolverBusy { waiting: s.queue.len() });
        }
        s.pending.insert(key.clone(), vec![waiter]);
        s.queue.push_back(key.clone());
        if s.queue.len() > s.idle && s.threads < MAX_THREADS {
            let n = s.threads;
            match std::thread::Builder::new().name(format!("ringman-resolve-{n}")).spawn(move || serve(r)) {
                Ok(_) => s.threads += 1,
                Err(e) if s.threads == 0 => {
                    s.pending.remove(&key);
                    s.queue.retain(|k| *k != key);
                    return Err(ConnectError::Io(e));
                }
                Err(e) => log::warn!("cannot start another resolver thread: {e}"),
            }
        }
        r.work.notify_one();
        Ok(())
    }

    fn forget(&self, host: &str, port: u16, conn: ConnectionId, attempt: u32) {
        let mut s = self.lock();
        let key = (host.to_string(), port);
        let Some(w) = s.pending.get_mut(&key) else { return };
        w.retain(|x| *x != Waiter { conn, attempt });
        if w.is_empty() {
            if let Some(i) = s.queue.iter().position(|k| *k == key) {
                s.queue.remove(i);
                s.pending.remove(&key);
            }
            // (A lookup already running finishes; a later asker joins it.)
        }
    }
}

/// One resolver thread: takes queued names, oldest first, and answers their waiters.
fn serve(r: &'static Resolver) {
    let mut s = r.lock();
    loop {
        let Some(key) = s.queue.pop_front() else {
            s.idle += 1;
            s = r.work.wait(s).unwrap_or_else(PoisonError::into_inner);
            s.idle -= 1;
            continue;
        };
        drop(s);
        let addrs = resolve(&key.0, key.1);
        s = r.lock();
        let waiters = s.pending.remove(&key).unwrap_or_default();
        drop(s);
        for w in waiters {
            let cmd = Cmd::Resolved {
                conn: w.conn,
                attempt: w.attempt,
                host: key.0.clone(),
                port: key.1,
                addrs: addrs.clone(),
            };
            // A ring that is gone has no connection waiting for the answer.
            post(w.conn.thread(), cmd);
        }
        s = r.lock();
    }
}

/// A replacement for the system resolver: answers for the names it knows (it may block, as
/// a stalled DNS server would), `None` for the others.
pub type ResolverHook = Arc<dyn Fn(&str, u16) -> Option<Result<Vec<SocketAddr>, String>> + Send + Sync>;

/// The installed hooks by tag (tests running side by side each install their own).
static HOOKS: RwLock<Vec<(String, ResolverHook)>> = RwLock::new(Vec::new());

/// Test hook: answers names through `hook` before the system resolver; `tag` names it (a
/// later call with the same tag replaces it, `None` removes it). Every hook is asked in
/// turn; the first answer wins.
#[doc(hidden)]
pub fn set_resolver_hook_for_test(tag: &str, hook: Option<ResolverHook>) {
    let mut hooks = HOOKS.write().unwrap_or_else(PoisonError::into_inner);
    hooks.retain(|(t, _)| t != tag);
    hooks.extend(hook.map(|h| (tag.to_string(), h)));
}

/// The addresses of `host:port`, or why there are none.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let hooks: Vec<ResolverHook> =
        HOOKS.read().unwrap_or_else(PoisonError::into_inner).iter().map(|(_, h)| h.clone()).collect();
    if let Some(answer) = hooks.iter().find_map(|h| h(host, port)) {
        return answer;
    }
    (host, port).to_socket_addrs().map(Iterator::collect::<Vec<SocketAddr>>).map_err(|e| e.to_string()).and_then(|v| {
        if v.is_empty() {
            Err("no address".to_string())
        } else {
            Ok(v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver of its own (the process-wide one serves the other tests meanwhile).
    fn own() -> &'static Resolver {
        Box::leak(Box::new(Resolver { state: Mutex::new(State::default()), work: Condvar::new() }))
    }

    #[test]
    fn a_name_is_asked_once_dead_waiters_drop_it_and_the_queue_is_bounded() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let entered = Arc::new(AtomicUsize::new(0));
        let (g, n) = (gate.clone(), entered.clone());
        set_resolver_hook_for_test(
            "held",
            Some(Arc::new(move |host: &str, _| {
                if !host.starts_with("held-") {
                    return None;
                }
                n.fetch_add(1, Ordering::SeqCst);
                let mut open = g.0.lock().unwrap();
                while !*open {
                    open = g.1.wait(open).unwrap();
                }
                Some(Err("released".into()))
            })),
        );
        let r = own();
        let id = ConnectionId::from_u64;
        // Every thread stalls on a name of its own.
        for i in 0..MAX_THREADS {
            r.lookup(&format!("held-{i}.invalid"), 1, id(i as u64), 0).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while entered.load(Ordering::SeqCst) < MAX_THREADS {
            assert!(std::time::Instant::now() < deadline, "the threads never started");
            std::thread::yield_now();
        }
        assert_eq!(r.lock().threads, MAX_THREADS);
        // A name two attempts ask for waits once, with both waiters.
        r.lookup("held-q.invalid", 1, id(100), 0).unwrap();
        r.lookup("held-q.invalid", 1, id(101), 3).unwrap();
        let key = ("held-q.invalid".to_string(), 1);
        assert_eq!(r.lock().queue.iter().filter(|k| **k == key).count(), 1);
        assert_eq!(r.lock().pending[&key].len(), 2);
        // Both attempts end: the name is never looked up.
        r.forget("held-q.invalid", 1, id(100), 0);
        assert_eq!(r.lock().queue.len(), 1, "one waiter left");
        r.forget("held-q.invalid", 1, id(101), 3);
        assert!(r.lock().queue.is_empty() && !r.lock().pending.contains_key(&key));
        // The queue is bounded, with a clear error.
        for i in 0..MAX_QUEUED {
            r.lookup(&format!("held-f{i}.invalid"), 1, id(200), 0).unwrap();
        }
        match r.lookup("held-x.invalid", 1, id(201), 0) {
            Err(ConnectError::ResolverBusy { waiting }) => assert_eq!(waiting, MAX_QUEUED),
            other => panic!("expected ResolverBusy, got {other:?}"),
        }
        // A name already waiting can still be joined.
        assert!(r.lookup("held-f0.invalid", 1, id(202), 0).is_ok());
        for i in 0..MAX_QUEUED {
            r.forget(&format!("held-f{i}.invalid"), 1, id(200), 0);
        }
        r.forget("held-f0.invalid", 1, id(202), 0);
        assert!(r.lock().queue.is_empty());
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        set_resolver_hook_for_test("held", None);
    }
}
