//! Futures on a connection, and the runner's hooks that feed them.
//!
//! Per connection with anything awaiting, this thread keeps one [`Interest`]: its message
//! stream, the tasks bound to it, the futures awaiting its drain and its establishment. The
//! runner tells it about events ([`notify`]) and offers it each message ([`offer_message`])
//! before `on_message`; both are one thread-local check when nothing awaits.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ringman_protocols::{Message, MessageKind};

use super::executor::TaskRef;
use crate::connection::Connection;
use crate::error::{ConnError, EngineError};
use crate::id::ConnectionId;

/// A message received by a [`Messages`] stream, copied out of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    /// Its kind.
    pub kind: MessageKind,
    /// The payload.
    pub data: Bytes,
}

/// What the runner tells the awaiting side about a connection.
pub(crate) enum Note {
    /// `on_connect` ran (an outgoing connection is established).
    Connected,
    /// `on_error` ran with this error.
    Error(ConnError),
    /// `on_buffer_drain` time: the send buffer is empty.
    Drained,
    /// `on_close` ran.
    Closed,
}

struct Stream {
    queue: VecDeque<OwnedMessage>,
    bytes: usize,
    /// The high-water marks: messages, bytes.
    high: (usize, usize),
    waker: Option<Waker>,
    closed: bool,
    /// The stream paused the connection's reading (it is full).
    paused: bool,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream {
            queue: VecDeque::new(),
            bytes: 0,
            high: (Messages::HIGH_WATER, Messages::HIGH_WATER_BYTES),
            waker: None,
            closed: false,
            paused: false,
        }
    }
}

#[derive(Default)]
struct Dial {
    outcome: Option<Result<(), DialError>>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Interest {
    stream: Option<Rc<RefCell<Stream>>>,
    tasks: Vec<TaskRef>,
    drained: Vec<Waker>,
    dial: Option<Rc<RefCell<Dial>>>,
}

thread_local! {
    static INTEREST: RefCell<HashMap<ConnectionId, Interest>> = RefCell::new(HashMap::new());
    /// Live message streams on this thread: the per-message check.
    static STREAMS: Cell<usize> = const { Cell::new(0) };
    /// Messages of dropped streams, owed to `on_message` before anything received later.
    static LEFTOVER: RefCell<VecDeque<(ConnectionId, VecDeque<OwnedMessage>)>> = const { RefCell::new(VecDeque::new()) };
}

/// The messages a dropped stream held unread, for the runner to hand to `on_message`
/// (one connection's at a time, oldest drop first).
pub(crate) fn take_leftover() -> Option<(ConnectionId, VecDeque<OwnedMessage>)> {
    LEFTOVER.with(|l| l.borrow_mut().pop_front())
}

/// True when a dropped stream left messages for `on_message`.
#[inline]
pub(crate) fn has_leftover() -> bool {
    LEFTOVER.with(|l| !l.borrow().is_empty())
}

fn with_interest<R>(id: ConnectionId, f: impl FnOnce(&mut Interest) -> R) -> R {
    INTEREST.with(|m| f(m.borrow_mut().entry(id).or_default()))
}

/// Drops the entry of `id` when nothing awaits on it any more.
fn tidy(id: ConnectionId) {
    INTEREST.with(|m| {
        let mut m = m.borrow_mut();
        if m.get(&id)
            .is_some_and(|i| i.stream.is_none() && i.tasks.is_empty() && i.drained.is_empty() && i.dial.is_none())
        {
            m.remove(&id);
        }
    });
}

/// True when some connection of this thread has something awaiting (the runner notifies
/// only then).
pub(crate) fn has_waiters() -> bool {
    INTEREST.with(|m| !m.borrow().is_empty())
}

pub(super) fn bind_task(id: ConnectionId, t: TaskRef) {
    with_interest(id, |i| i.tasks.push(t));
}

pub(super) fn unbind_task(id: ConnectionId, t: TaskRef) {
    INTEREST.with(|m| {
        if let Some(i) = m.borrow_mut().get_mut(&id) {
            i.tasks.retain(|x| *x != t);
        }
    });
    tidy(id);
}

/// Forgets everything (the ring stopped); streams end.
pub(super) fn clear() {
    let all: Vec<Interest> = INTEREST.with(|m| m.borrow_mut().drain().map(|(_, i)| i).collect());
    STREAMS.with(|s| s.set(0));
    LEFTOVER.with(|l| l.borrow_mut().clear());
    for i in &all {
        if let Some(s) = &i.stream {
            s.borrow_mut().closed = true;
        }
    }
    drop(all);
}

/// Hands a message to the connection's stream, if it has one (then `on_message` is not
/// called). Called by the runner for every message: one thread-local read when no stream
/// exists on this thread.
#[inline]
pub(crate) fn offer_message(id: ConnectionId, msg: &Message<'_>) -> bool {
    if STREAMS.with(Cell::get) == 0 {
        return false;
    }
    offer_slow(id, msg)
}

fn offer_slow(id: ConnectionId, msg: &Message<'_>) -> bool {
    let Some(stream) = INTEREST.with(|m| m.borrow().get(&id).and_then(|i| i.stream.clone())) else { return false };
    let (waker, pause) = {
        let mut s = stream.borrow_mut();
        s.queue.push_back(OwnedMessage { kind: msg.kind, data: Bytes::copy_from_slice(msg.data) });
        s.bytes += msg.data.len();
        let pause = !s.paused && (s.queue.len() >= s.high.0 || s.bytes >= s.high.1);
        s.paused |= pause;
        (s.waker.take(), pause)
    };
    if pause {
        // The rest stays unparsed in the connection's buffer, then in the socket.
        Connection::from_id(id).pause_recv();
    }
    if let Some(w) = waker {
        w.wake();
    }
    true
}

/// Tells whatever awaits on `id` about an event the runner has just delivered to the
/// callbacks.
pub(crate) fn notify(id: ConnectionId, note: Note) {
    type Taken = (Option<Rc<RefCell<Dial>>>, Vec<Waker>, Option<Rc<RefCell<Stream>>>, Vec<TaskRef>);
    let taken: Option<Taken> = INTEREST.with(|m| {
        let mut m = m.borrow_mut();
        match note {
            Note::Closed => m.remove(&id).map(|i| (i.dial, i.drained, i.stream, i.tasks)),
            Note::Drained => m.get_mut(&id).map(|i| (None, std::mem::take(&mut i.drained), None, Vec::new())),
            Note::Connected | Note::Error(_) => m.get_mut(&id).map(|i| (i.dial.take(), Vec::new(), None, Vec::new())),
        }
    });
    let Some((dial, mut wakers, stream, tasks)) = taken else { return };
    if let Some(d) = dial {
        let mut d = d.borrow_mut();
        if d.outcome.is_none() {
            d.outcome = Some(match note {
                Note::Connected => Ok(()),
                Note::Error(e) => Err(DialError::Failed(e)),
                _ => Err(DialError::Closed),
            });
        }
        wakers.extend(d.waker.take());
    }
    if let Some(s) = stream {
        // (Only a close takes the stream out.) Its handles yield what it holds, then None.
        STREAMS.with(|c| c.set(c.get() - 1));
        let mut s = s.borrow_mut();
        s.closed = true;
        wakers.extend(s.waker.take());
    }
    // The connection's tasks end with it, after its on_close.
    for t in tasks {
        t.abort();
    }
    tidy(id);
    for w in wakers {
        w.wake();
    }
}

// ------------------------------------------------------------------------ the futures

/// The message stream of a connection ([`Connection::messages`](crate::Connection::messages)).
/// See the module rules: while it exists it receives every message of the connection.
pub struct Messages {
    id: ConnectionId,
    stream: Rc<RefCell<Stream>>,
}

impl Messages {
    /// Messages a stream holds before the connection stops reading (the default mark).
    pub const HIGH_WATER: usize = 64;
    /// Bytes a stream holds before the connection stops reading (the default mark).
    pub const HIGH_WATER_BYTES: usize = 1 << 20;

    /// The stream of `conn`, shared with any other live handle to it. Off the connection's
    /// ring thread: [`EngineError::NotOnRingThread`].
    pub(crate) fn of(conn: &Connection) -> Result<Messages, EngineError> {
        if crate::reactor::current_thread() != Some(conn.id().thread()) {
            return Err(EngineError::NotOnRingThread);
        }
        let id = conn.id();
        let live = conn.is_known();
        let stream = with_interest(id, |i| {
            if let Some(s) = &i.stream {
                return s.clone();
            }
            let s = Rc::new(RefCell::new(Stream { closed: !live, ..Stream::default() }));
            if live {
                i.stream = Some(s.clone());
                STREAMS.with(|c| c.set(c.get() + 1));
            }
            s
        });
        tidy(id);
        Ok(Messages { id, stream })
    }

    /// The next message; `None` once the connection has closed and every message before
    /// its close was yielded.
    pub fn recv(&mut self) -> Recv<'_> {
        Recv { m: self }
    }

    /// The next message if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<OwnedMessage> {
        let (msg, resume) = {
            let mut s = self.stream.borrow_mut();
            let msg = s.queue.pop_front();
            if let Some(m) = &msg {
                s.bytes -= m.data.len();
            }
            let low = s.queue.len() <= s.high.0 / 2 && s.bytes <= s.high.1 / 2;
            let resume = s.paused && low && !s.closed;
            if resume {
                s.paused = false;
            }
            (msg, resume)
        };
        if resume {
            Connection::from_id(self.id).resume_recv();
        }
        msg
    }

    /// Messages received and not yet yielded (at most the high-water mark).
    pub fn len(&self) -> usize {
        self.stream.borrow().queue.len()
    }

    /// Bytes of the messages received and not yet yielded.
    pub fn queued_bytes(&self) -> usize {
        self.stream.borrow().bytes
    }

    /// Changes the high-water marks (default [`Messages::HIGH_WATER`] messages,
    /// [`Messages::HIGH_WATER_BYTES`] bytes): at either, the connection stops reading until
    /// the stream is read down to half. At least 1 message and 1 byte.
    pub fn set_high_water(&mut self, messages: usize, bytes: usize) {
        self.stream.borrow_mut().high = (messages.max(1), bytes.max(1));
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The connection this stream reads.
    pub fn connection(&self) -> Connection {
        Connection::from_id(self.id)
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        // The last handle: `on_message` takes over, and reading resumes if this paused it.
        if Rc::strong_count(&self.stream) != 2 {
            return;
        }
        let removed = INTEREST.with(|m| {
            let mut m = m.borrow_mut();
            let i = m.get_mut(&self.id)?;
            if !i.stream.as_ref().is_some_and(|s| Rc::ptr_eq(s, &self.stream)) {
                return None;
            }
            i.stream.take()
        });
        if removed.is_some() {
            STREAMS.with(|c| c.set(c.get() - 1));
            tidy(self.id);
            let (paused, rest) = {
                let mut s = self.stream.borrow_mut();
                (std::mem::take(&mut s.paused), std::mem::take(&mut s.queue))
            };
            if !rest.is_empty() {
                // Received before anything still unparsed: `on_message` gets them first.
                LEFTOVER.with(|l| l.borrow_mut().push_back((self.id, rest)));
            }
            if paused {
                Connection::from_id(self.id).resume_recv();
            }
        }
    }
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages").field("conn", &self.id).field("queued", &self.stream.borrow().queue.len()).finish()
    }
}

/// The future of [`Messages::recv`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Recv<'a> {
    m: &'a mut Messages,
}

impl Future for Recv<'_> {
    type Output = Option<OwnedMessage>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<OwnedMessage>> {
        let this = self.get_mut();
        if let Some(m) = this.m.try_next() {
            return Poll::Ready(Some(m));
        }
        let mut s = this.m.stream.borrow_mut();
        if s.closed {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The future of [`Connection::drained`](crate::Connection::drained): `true` once the
/// connection's send buffer is empty (everything handed to the kernel), `false` if the
/// connection closed first.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Drained {
    pub(crate) conn: Connection,
}

impl Future for Drained {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let conn = self.conn;
        match conn.unsent_if_open() {
            None => Poll::Ready(false),
            Some(0) => Poll::Ready(true),
            Some(_) => {
                conn.await_drain();
                with_interest(conn.id(), |i| {
                    if !i.drained.iter().any(|w| w.will_wake(cx.waker())) {
                        i.drained.push(cx.waker().clone());
                    }
                });
                Poll::Pending
            }
        }
    }
}

/// Why [`Connecting`] produced no connection.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The connection could not be started (off a ring thread, the ring stopping, no
    /// socket).
    #[error(transparent)]
    Start(#[from] EngineError),
    /// It failed: the error its `on_error` received (CONNECT_FAIL: resolution, refusal,
    /// timeout, a refused WebSocket upgrade).
    #[error(transparent)]
    Failed(ConnError),
    /// It was closed before it was established.
    #[error("closed before it was established")]
    Closed,
}

/// The future of [`AsyncTcpConnection::connect_async`](crate::AsyncTcpConnection::connect_async):
/// the established connection (at its `on_connect`), or why it failed.
#[must_use = "futures do nothing unless awaited"]
pub struct Connecting {
    conn: Option<Connection>,
    start: Option<EngineError>,
    dial: Rc<RefCell<Dial>>,
}

impl Connecting {
    pub(crate) fn new(r: Result<Connection, EngineError>) -> Connecting {
        let dial = Rc::new(RefCell::new(Dial::default()));
        match r {
            Ok(conn) => {
                with_interest(conn.id(), |i| i.dial = Some(dial.clone()));
                Connecting { conn: Some(conn), start: None, dial }
            }
            Err(e) => Connecting { conn: None, start: Some(e), dial },
        }
    }

    /// The connection being established (to close it early, or to send ahead: sends are
    /// held until it is established); `None` if it could not be started.
    pub fn connection(&self) -> Option<Connection> {
        self.conn
    }
}

impl Future for Connecting {
    type Output = Result<Connection, DialError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(e) = this.start.take() {
            return Poll::Ready(Err(DialError::Start(e)));
        }
        let Some(conn) = this.conn else { return Poll::Ready(Err(DialError::Closed)) };
        let mut d = this.dial.borrow_mut();
        match d.outcome.take() {
            Some(Ok(())) => Poll::Ready(Ok(conn)),
            Some(Err(e)) => Poll::Ready(Err(e)),
            None => {
                d.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        if let Some(c) = self.conn {
            INTEREST.with(|m| {
                if let Some(i) = m.borrow_mut().get_mut(&c.id()) {
                    if i.dial.as_ref().is_some_and(|d| Rc::ptr_eq(d, &self.dial)) {
                        i.dial = None;
                    }
                }
            });
            tidy(c.id());
        }
    }
}

impl std::fmt::Debug for Connecting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connecting").field("conn", &self.conn).finish()
    }
}

// ------------------------------------------------------------------- the entry points

impl Connection {
    /// Spawns `fut` on this connection's ring thread, bound to the connection: it is
    /// dropped when the connection closes (after `on_close`), and a panic in it closes the
    /// connection with `on_error` like a panicking callback.
    ///
    /// Errors: [`EngineError::NotOnRingThread`] off the connection's ring thread,
    /// [`EngineError::NoSuchConnection`] when the connection is gone.
    ///
    /// ```no_run
    /// use ringman_engine::Worker;
    /// let mut w = Worker::<()>::new("text://0.0.0.0:8000").unwrap();
    /// w.on_connect(|conn, _| {
    ///     let conn = *conn;
    ///     conn.spawn(async move {
    ///         let mut messages = conn.messages().unwrap();
    ///         while let Some(m) = messages.recv().await {
    ///             conn.send(&m.data);
    ///         }
    ///     })
    ///     .unwrap();
    /// });
    /// ```
    pub fn spawn<F: Future + 'static>(&self, fut: F) -> Result<super::JoinHandle<F::Output>, EngineError> {
        if crate::reactor::current_thread() != Some(self.id().thread()) {
            return Err(EngineError::NotOnRingThread);
        }
        if !self.is_known() {
            return Err(EngineError::NoSuchConnection);
        }
        super::spawn_bound(self.id(), fut)
    }

    /// This connection's message stream (see [`Messages`] for which of it and `on_message`
    /// gets a message). Errors: [`EngineError::NotOnRingThread`] off the connection's ring
    /// thread. For a connection that is gone, the stream is empty and ended.
    pub fn messages(&self) -> Result<Messages, EngineError> {
        Messages::of(self)
    }

    /// Completes when the send buffer is empty (everything handed to the kernel): `true`,
    /// or `false` if the connection closed first. The async counterpart of
    /// `on_buffer_drain`, for a producer that awaits it when `send` answers `Queued` near
    /// the limit.
    pub fn drained(&self) -> Drained {
        Drained { conn: *self }
    }
}

impl crate::AsyncTcpConnection {
    /// [`connect`](crate::AsyncTcpConnection::connect) as a future: the connection once it
    /// is established (its `on_connect`), or why not. The connection's callbacks still run
    /// as with `connect`.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use ringman_engine::AsyncTcpConnection;
    /// let conn = AsyncTcpConnection::new("text://127.0.0.1:7000")?.connect_async().await?;
    /// conn.send("hello\n");
    /// let reply = conn.messages()?.recv().await;
    /// # Ok(()) }
    /// ```
    pub fn connect_async(self) -> Connecting {
        Connecting::new(self.connect())
    }
}
