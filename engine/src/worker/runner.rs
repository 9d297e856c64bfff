//! The loop of one ring thread (`Runner`), and the supervisor that restarts it when it dies
//! or is recycled.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringman_protocols::{Delivery, Flow, MessageKind, Reply};

use super::{Callbacks, WorkerInfo};
use crate::connection::Connection;
use crate::error::{panic_message, ConnError, EngineError};
use crate::exec::Note;
use crate::hooks::Hook;
use crate::id::ConnectionId;
use crate::mailbox::Cmd;
use crate::reactor::{self, with_core, Core, Event};
use crate::ring::{Kind, Token};
use crate::stats::ThreadStats;

/// Why a runner returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Stopped for good.
    Stopped,
    /// Drained for a recycle: start afresh.
    Recycle,
}

/// Runs a ring thread and restarts it when it dies (with backoff) or is recycled, keeping
/// its id, listener and mailbox. `make` builds a fresh core and runner. The first start's
/// outcome is reported on `ready`, so configuration errors surface from `start()`.
pub(super) fn supervise<S: 'static>(
    info: &WorkerInfo,
    ready: &crossbeam_channel::Sender<Result<(), EngineError>>,
    make: impl Fn() -> Result<(Core, Runner<S>), EngineError>,
) {
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    let mut lost: Vec<ConnectionId> = Vec::new();
    loop {
        let made = match catch_unwind(AssertUnwindSafe(&make)) {
            Ok(r) => r,
            Err(p) => Err(EngineError::Ring(std::io::Error::other(panic_message(&*p)))),
        };
        let (core, mut runner) = match made {
            Ok(x) => x,
            Err(e) => {
                if first {
                    let _ = ready.send(Err(e));
                    return;
                }
                log::error!("restarting {} #{} failed: {e}; retrying in {backoff:?}", info.name, info.id);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if first {
            let _ = ready.send(Ok(()));
            first = false;
        }
        runner.lost = std::mem::take(&mut lost);
        let stats = core.stats.clone();
        reactor::install(core);
        match catch_unwind(AssertUnwindSafe(|| runner.run())) {
            Ok(Exit::Stopped) => {
                drop(reactor::uninstall());
                return;
            }
            Ok(Exit::Recycle) => {
                drop(reactor::uninstall());
                backoff = Duration::from_millis(100);
            }
            Err(p) => {
                log::error!(
                    "ring thread {} #{} died: {}; restarting in {backoff:?}",
                    info.name,
                    info.id,
                    panic_message(&*p)
                );
                // Its tasks die with it (their join handles answer Aborted).
                crate::exec::clear();
                if let Some(core) = reactor::uninstall() {
                    // Their on_close is owed: the restarted runner delivers it.
                    lost.extend(core.unclosed());
                    core.abandon();
                }
                // The dead ring's sockets are closed: none of them is open any more.
                stats.connections.set(0);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        stats.restarts.set(stats.restarts.get() + 1);
        stats.heartbeat.set(0);
    }
}

/// The loop of one ring thread.
pub(crate) struct Runner<S> {
    cb: Arc<Callbacks<S>>,
    state: S,
    info: WorkerInfo,
    /// Messages seen, for sampling handler latency one in [`LATENCY_SAMPLE`].
    sampled: u32,
    /// This thread's counters (the core's, kept here so delivery need not fetch them).
    stats: Arc<ThreadStats>,
    /// Connections a dead predecessor ring held whose `on_close` never ran: delivered after
    /// `on_worker_start`.
    lost: Vec<ConnectionId>,
    /// The receive batch being delivered, filled in place by the core
    /// ([`reactor::Core::on_recv_into`]) and emptied by `recv_end`.
    work: Option<reactor::RecvWork>,
}

impl<S: Default> Runner<S> {
    /// A runner with fresh per-thread state for a ring with counters `stats`.
    pub(super) fn new(cb: Arc<Callbacks<S>>, info: WorkerInfo, stats: Arc<ThreadStats>) -> Runner<S> {
        Runner { cb, state: S::default(), info, sampled: 0, stats, lost: Vec::new(), work: None }
    }
}

/// What the loop checks once per turn, outside any completion: recycling after
/// `max_requests` or above `max_memory`, accept back-off, timeouts, the stop deadline, and
/// how long the next wait may last.
struct Housekeeping {
    /// Messages counted when this run started (`max_requests` counts from here).
    start_requests: u64,
    /// This thread's index and the worker's thread count: threads check memory in turn.
    id: u64,
    count: u64,
    /// The second of the last memory check and of the last timeout sweep.
    last_memory_check: u64,
    last_sweep: u64,
}

impl Housekeeping {
    /// One turn's housekeeping. Returns whether the ring has drained (the loop ends) and
    /// the longest the next wait may take.
    fn turn(&mut self, c: &mut Core, now: Instant) -> (bool, Option<Duration>) {
        c.stats.timers.set(c.timers.len() as u64);
        if let Some(max) = c.cfg.max_requests {
            if c.stopping.is_none() && c.stats.requests.get() - self.start_requests >= max {
                c.recycle = true;
                c.begin_stop(now + c.cfg.close_timeout);
            }
        }
        if let Some(max) = c.cfg.max_memory {
            let sec = c.stats.heartbeat.get();
            // Once a second, and only the thread whose turn it is (by id), so the threads of
            // a worker recycle one after another rather than all at once.
            if c.stopping.is_none() && sec != self.last_memory_check && sec % self.count == self.id {
                self.last_memory_check = sec;
                if crate::sys::resident_memory().is_some_and(|rss| rss > max) {
                    c.recycle = true;
                    c.begin_stop(now + c.cfg.close_timeout);
                }
            }
        }
        c.retry_accepts(now);
        let timeouts = c.cfg.idle_timeout.is_some()
            || c.cfg.packet_timeout.is_some()
            || c.cfg.ping_interval.is_some()
            || c.cfg.tls.is_some()
            || c.has_dials();
        if timeouts && c.stats.heartbeat.get() != self.last_sweep {
            self.last_sweep = c.stats.heartbeat.get();
            c.expire_idle(now);
        }
        let close_next = c.expire_closing(now);
        if c.stopping.is_some_and(|deadline| now >= deadline) {
            c.destroy_all();
        }
        let mut timeout = c.timers.next_timeout(now);
        if c.cfg.max_memory.is_some() || timeouts {
            // Wake at least once a second for the memory check and the timeouts.
            timeout = Some(timeout.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1))));
        }
        // A descriptor shortage paused accepting: wake when the back-off ends, even on a
        // ring with nothing else to do.
        for d in [close_next, c.stopping, c.accept_retry_at()].into_iter().flatten() {
            let t = d.saturating_duration_since(now);
            timeout = Some(timeout.map_or(t, |x| x.min(t)));
        }
        (c.drained() && c.events.is_empty(), timeout)
    }
}

/// One `on_message` in this many is timed for the latency histogram.
const LATENCY_SAMPLE: u32 = 8;

impl<S: 'static> Runner<S> {
    /// Runs the loop on the installed core (the simulator's entry); true when it stopped
    /// for good rather than for a recycle.
    #[cfg(test)]
    pub(crate) fn run_sim(self) -> bool {
        self.run() == Exit::Stopped
    }

    fn run(mut self) -> Exit {
        if let Some(f) = self.cb.on_worker_start.clone() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&self.info, &mut self.state))) {
                log::error!("on_worker_start panicked on {} #{}: {}", self.info.name, self.info.id, panic_message(&*p));
            }
        }
        // Connections of a ring that died: their sockets are closed; on_close is owed. The
        // handles no longer reach a slot (getters answer None, sends Failed).
        for id in std::mem::take(&mut self.lost) {
            if let Some(f) = self.cb.on_close.clone() {
                let conn = Connection::from_id(id);
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&conn, &mut self.state))) {
                    log::error!("on_close panicked: {}", panic_message(&*p));
                }
            }
        }
        with_core(|c| {
            c.arm_wake();
            for i in 0..c.listeners.len() {
                c.arm_accept(i);
            }
        });
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        let mut housekeeping = Housekeeping {
            start_requests: with_core(|c| c.stats.requests.get()).unwrap_or(0),
            id: self.info.id as u64,
            count: self.info.count.max(1) as u64,
            last_memory_check: 0,
            last_sweep: 0,
        };
        loop {
            self.deliver_events();
            self.run_timers();
            self.drain_mailbox();
            self.deliver_events();
            self.run_tasks();
            let now = crate::clock::now();
            let (exit, mut timeout) = with_core(|c| housekeeping.turn(c, now)).expect("core installed");
            if crate::exec::has_ready() {
                // Woken tasks beyond this turn's budget: look at completions, do not wait.
                timeout = Some(Duration::ZERO);
            }
            if exit {
                break;
            }
            with_core(|c| {
                c.submit_and_wait(timeout);
                c.reap(&mut cqes);
                // One wall-clock read per turn serves the heartbeat and HTTP Date headers.
                c.wall = crate::clock::wall();
                c.update_stamp();
                c.stats.heartbeat.set(c.wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
            });
            for (ud, res, flags) in cqes.drain(..) {
                self.complete(ud, res, flags);
                self.deliver_events();
            }
        }
        if let Some(f) = self.cb.on_worker_stop.clone() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&self.info, &mut self.state))) {
                log::error!("on_worker_stop panicked: {}", panic_message(&*p));
            }
        }
        // Tasks still pending end with the ring.
        crate::exec::clear();
        self.deliver_events();
        with_core(|c| c.quiesce());
        if with_core(|c| c.recycle).unwrap_or(false) {
            Exit::Recycle
        } else {
            Exit::Stopped
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let Some(tok) = Token::from_u64(ud) else { return };
        match tok.kind {
            Kind::Recv => {
                with_core(|c| c.on_recv_into(tok, res, flags, &mut self.work));
                if self.work.is_some() {
                    self.deliver();
                }
            }
            Kind::Send => {
                with_core(|c| c.on_send(tok, res));
            }
            Kind::Accept => {
                with_core(|c| c.on_accept(tok.slot as usize, res, flags));
            }
            Kind::Cancel => {
                with_core(|c| c.on_cancel(tok));
            }
            Kind::Wake => {
                with_core(|c| c.on_wake());
                self.drain_mailbox();
            }
            Kind::Connect => {
                with_core(|c| c.on_connect(tok, res));
            }
            Kind::Proxy => {
                with_core(|c| c.on_proxy(tok, res));
            }
            Kind::Udp | Kind::UdpSend => super::udp::complete(&self.cb, &mut self.state, tok, res, flags),
            Kind::Shutdown => {}
        }
    }

    /// Parses and delivers one receive batch (`self.work`), zero-copy where the packet lies
    /// in one buffer.
    fn deliver(&mut self) {
        let Runner { cb, state, sampled, stats, work, .. } = self;
        let Some(w) = work.as_mut() else { return };
        let id = w.id;
        let conn = Connection::from_id(id);
        let mut delivered = 0u64;
        let mut panicked = None;
        // The received bytes, borrowed from the buffer guard (empty when resuming from the
        // framer's buffer); the guard goes back to the ring in `recv_end`.
        let data: &mut [u8] = match (w.buf.as_mut(), w.plain.as_mut()) {
            (Some(b), _) => b.bytes(),
            (None, Some(p)) => p,
            (None, None) => &mut [],
        };
        let max = w.max;
        let (own, worker) = (&mut w.on_message, w.worker_callbacks);
        let mut sink = |d: Delivery<'_>| {
            match d {
                // An outgoing `ws://` connection: the server's validated 101.
                Delivery::Message(msg) if msg.kind == MessageKind::Handshake && !worker => {
                    if let Err(p) =
                        catch_unwind(AssertUnwindSafe(|| super::websocket::client_upgraded(&conn, msg.data)))
                    {
                        panicked = Some(panic_message(&*p));
                        return Flow::Stop;
                    }
                }
                Delivery::Message(msg) if msg.kind == MessageKind::Handshake => {
                    if let Err(p) =
                        catch_unwind(AssertUnwindSafe(|| super::websocket::handshake(&conn, msg.data, cb, state)))
                    {
                        panicked = Some(panic_message(&*p));
                        return Flow::Stop;
                    }
                }
                Delivery::Message(msg)
                    if matches!(msg.kind, MessageKind::Ping | MessageKind::Pong | MessageKind::Close) =>
                {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| super::websocket::control(&conn, &msg, cb, state)))
                    {
                        panicked = Some(panic_message(&*p));
                        return Flow::Stop;
                    }
                }
                Delivery::Message(msg) => {
                    delivered += 1;
                    if crate::exec::offer_message(id, &msg) {
                        // A task's `Messages` stream took it.
                    } else if let Some(f) = own.as_mut() {
                        // The connection's own callback.
                        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(id, &msg))) {
                            panicked = Some(panic_message(&*p));
                            return Flow::Stop;
                        }
                    } else if let (Some(f), true) = (&cb.on_message, worker) {
                        *sampled = sampled.wrapping_add(1);
                        let t0 = (*sampled % LATENCY_SAMPLE == 0).then(Instant::now);
                        if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&conn, &msg, state))) {
                            panicked = Some(panic_message(&*p));
                            return Flow::Stop;
                        }
                        if let Some(t0) = t0 {
                            stats.latency.record(t0.elapsed().as_nanos() as u64);
                        }
                    }
                }
                Delivery::Reply(bytes, reply) => {
                    // After our own close frame nothing more is sent (no pong, and the peer's
                    // close, which answers ours, is not echoed): the connection just closes.
                    if !conn.ws_close_sent() {
                        conn.send_raw(bytes);
                    }
                    if reply == Reply::SendThenClose {
                        conn.close(None);
                    }
                }
            }
            let (go, newer) = with_core(|c| c.can_deliver(id)).unwrap_or((false, None));
            if let Some(f) = newer {
                // Installed by a callback of this batch: it takes over (the old one is
                // dropped here, outside the core).
                drop(own.replace(f));
            }
            if go {
                Flow::Continue
            } else {
                Flow::Stop
            }
        };
        // The decoder is protocol code (custom protocols are user code): a panic in it ends
        // only this connection, like a panicking callback.
        let result = catch_unwind(AssertUnwindSafe(|| {
            if data.is_empty() {
                w.framer.drain(w.decoder.as_mut(), max, &mut sink)
            } else {
                w.framer.feed(w.decoder.as_mut(), data, max, &mut sink)
            }
        }));
        let err = match result {
            Ok(r) => r.err(),
            Err(p) => {
                panicked.get_or_insert_with(|| format!("decoder: {}", panic_message(&*p)));
                None
            }
        };
        with_core(|c| {
            c.recv_end(work, delivered, err);
            if let Some(msg) = panicked {
                if let Some(k) = c.lookup(id) {
                    c.destroy(k, Some(ConnError::Panic(msg)));
                }
            }
        });
    }

    /// Calls the user callbacks for queued events: the connection's own callback when it
    /// has one, else the worker's (accepted connections only). A panicking callback closes
    /// only its connection.
    fn deliver_events(&mut self) {
        loop {
            // Messages a dropped stream held unread come before anything queued after its
            // drop: a `Resume` (the framer's backlog, received later) above all.
            if crate::exec::has_leftover() {
                self.deliver_leftover();
                continue;
            }
            let Some(ev) = with_core(|c| c.events.pop_front()).flatten() else { break };
            let closed = matches!(ev, Event::Close(_));
            // Futures awaiting this connection learn of the event after its callback.
            let awaited = crate::exec::has_waiters();
            let (id, r) = match ev {
                Event::Connect(id) => {
                    let r = self.call(id, Hook::Connect);
                    if awaited {
                        crate::exec::notify(id, Note::Connected);
                    }
                    (id, r)
                }
                Event::Close(id) => {
                    let r = self.call(id, Hook::Close);
                    // The slot was kept for on_close (context, address, counters); now it may go.
                    with_core(|core| core.close_delivered(id));
                    if awaited {
                        crate::exec::notify(id, Note::Closed);
                    }
                    (id, r)
                }
                Event::Error(id, e) => {
                    let e = *e;
                    let r = self.call_error(id, &e);
                    if awaited {
                        crate::exec::notify(id, Note::Error(e));
                    }
                    (id, r)
                }
                Event::BufferFull(id) => (id, self.call(id, Hook::BufferFull)),
                Event::BufferDrain(id) => {
                    let r = self.call(id, Hook::BufferDrain);
                    if awaited {
                        crate::exec::notify(id, Note::Drained);
                    }
                    (id, r)
                }
                Event::Udp(ev) => {
                    super::udp::deliver_event(*ev);
                    continue;
                }
                Event::Resume(id) => {
                    self.work = with_core(|core| core.resume_begin(id)).flatten();
                    if self.work.is_some() {
                        self.deliver();
                    }
                    continue;
                }
            };
            match (r, closed) {
                // The connection is gone already (and a `reconnect` in that callback may have
                // renewed its slot under the same id): nothing to destroy.
                (Some(Err(p)), true) => log::error!("on_close of {id} panicked: {}", panic_message(&*p)),
                (Some(Err(p)), false) => {
                    let msg = panic_message(&*p);
                    with_core(|c| {
                        if let Some(k) = c.lookup(id) {
                            c.destroy(k, Some(ConnError::Panic(msg)));
                        }
                    });
                }
                _ => {}
            }
        }
        self.bury();
    }

    /// Hands the unread messages of dropped `Messages` streams to `on_message` (the
    /// connection's own, else the worker's), before anything the connection receives later;
    /// a new stream created meanwhile takes the rest.
    fn deliver_leftover(&mut self) {
        while let Some((id, msgs)) = crate::exec::take_leftover() {
            let conn = Connection::from_id(id);
            let mut panicked = None;
            for m in msgs {
                let msg = ringman_protocols::Message { data: &m.data, kind: m.kind };
                if crate::exec::offer_message(id, &msg) {
                    continue;
                }
                let Some((own, worker)) = with_core(|c| c.take_message_hook(id)).flatten() else { break };
                let r = match (own, &self.cb.on_message) {
                    (Some(mut f), _) => {
                        let r = catch_unwind(AssertUnwindSafe(|| f(id, &msg)));
                        drop(with_core(|c| c.put_message_hook(id, f)));
                        r
                    }
                    (None, Some(f)) if worker => {
                        let state = &mut self.state;
                        catch_unwind(AssertUnwindSafe(|| f(&conn, &msg, state)))
                    }
                    (None, _) => Ok(()),
                };
                if let Err(p) = r {
                    panicked = Some(panic_message(&*p));
                    break;
                }
            }
            if let Some(msg) = panicked {
                with_core(|c| {
                    if let Some(k) = c.lookup(id) {
                        c.destroy(k, Some(ConnError::Panic(msg)));
                    }
                });
            }
        }
    }

    /// Runs the connection's own `hook`, else the worker's callback for it.
    fn call(&mut self, id: ConnectionId, hook: Hook) -> Option<std::thread::Result<()>> {
        let conn = Connection::from_id(id);
        let (own, worker) = with_core(|c| c.take_hook(id, hook)).flatten().unwrap_or((None, true));
        if let Some(mut f) = own {
            let r = catch_unwind(AssertUnwindSafe(|| f(id)));
            // Dropped here, outside the core, when it was replaced or the slot is gone.
            drop(with_core(|c| c.put_hook(id, hook, f)));
            return Some(r);
        }
        if !worker {
            return None;
        }
        let cb = &self.cb;
        let f = match hook {
            Hook::Connect => cb.on_connect.as_ref(),
            Hook::Close => cb.on_close.as_ref(),
            Hook::BufferFull => cb.on_buffer_full.as_ref(),
            Hook::BufferDrain => cb.on_buffer_drain.as_ref(),
        };
        let state = &mut self.state;
        f.map(|f| catch_unwind(AssertUnwindSafe(|| f(&conn, state))))
    }

    /// [`Runner::call`] for `on_error`.
    fn call_error(&mut self, id: ConnectionId, e: &ConnError) -> Option<std::thread::Result<()>> {
        let conn = Connection::from_id(id);
        let (own, worker) = with_core(|c| c.take_error_hook(id)).flatten().unwrap_or((None, true));
        if let Some(mut f) = own {
            let r = catch_unwind(AssertUnwindSafe(|| f(id, e)));
            drop(with_core(|c| c.put_error_hook(id, f)));
            return Some(r);
        }
        let state = &mut self.state;
        match (&self.cb.on_error, worker) {
            (Some(f), true) => Some(catch_unwind(AssertUnwindSafe(|| f(&conn, e, state)))),
            _ => None,
        }
    }

    /// Drops the user values of freed slots, outside the core borrow (their `Drop` may call
    /// back into the engine).
    fn bury(&mut self) {
        if with_core(|c| c.graveyard.is_empty()).unwrap_or(true) {
            return;
        }
        let dead = with_core(|c| std::mem::take(&mut c.graveyard)).unwrap_or_default();
        drop(dead);
    }

    fn run_timers(&mut self) {
        let now = crate::clock::now();
        while let Some((id, mut f)) = with_core(|c| c.timers.pop_due(now)).flatten() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(&mut f)) {
                log::error!("timer callback panicked: {}", panic_message(&*p));
            }
            // A finished one-shot's closure is dropped here, outside the core.
            let done = with_core(|c| c.timers.restore(id, f)).flatten();
            drop(done);
            self.deliver_events();
        }
    }

    /// Polls the woken tasks; a panic in a connection's task closes that connection.
    fn run_tasks(&mut self) {
        if !crate::exec::has_ready() {
            return;
        }
        let mut panicked = Vec::new();
        crate::exec::run_ready(&mut panicked);
        for (id, msg) in panicked {
            with_core(|c| {
                if let Some(k) = c.lookup(id) {
                    c.destroy(k, Some(ConnError::Panic(format!("task: {msg}"))));
                }
            });
        }
        self.deliver_events();
    }

    fn drain_mailbox(&mut self) {
        with_core(|c| c.mailbox.clear_notified());
        while let Some(cmd) = with_core(|c| c.mailbox.next()).flatten() {
            match cmd {
                Cmd::Call(f) => {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
                        log::error!("cross-thread call panicked: {}", panic_message(&*p));
                    }
                }
                Cmd::Crash => panic!("crash requested (test hook)"),
                cmd => {
                    with_core(|c| c.command(&cmd));
                    // Its payload (shared bytes, possibly with a user owner) is dropped here,
                    // outside the core.
                    drop(cmd);
                }
            }
            self.deliver_events();
        }
    }
}
