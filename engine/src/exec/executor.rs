//! The per-thread executor: a slab of tasks, a queue of woken ones, and the wakers.
//!
//! A task is polled only after a wake. A waker called on the task's own ring thread pushes
//! the task onto this thread's ready queue; called from any other thread it posts that
//! push to the ring's mailbox (which wakes the ring's wait). A task is queued at most once
//! until its next poll. The runner polls the queue once per loop turn, outside any borrow
//! of the core, and makes the ring's next wait return at once while tasks remain queued.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use slab::Slab;

use super::join::{JoinError, JoinHandle, Slot};
use crate::error::{panic_message, EngineError};
use crate::id::ConnectionId;
use crate::mailbox::{self, Cmd};
use crate::reactor::current_thread;

/// A task's future, boxed: `Err` carries a panic's message.
type TaskFuture = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// Tasks polled per loop turn before the ring looks at its completions again (the rest stay
/// queued and the next wait does not block).
const BUDGET: usize = 256;

/// A task's place in the slab: its key and the generation of that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRef {
    key: u32,
    gen: u32,
}

impl TaskRef {
    /// Drops the task's future (at once, or after its running poll).
    pub(crate) fn abort(self) {
        let fut = EXEC.with(|e| {
            let mut e = e.borrow_mut();
            let t = e.tasks.get_mut(self.key as usize).filter(|t| t.gen == self.gen)?;
            match t.fut.take() {
                Some(f) => {
                    e.tasks.remove(self.key as usize);
                    Some(f)
                }
                None => {
                    // Being polled: `run_ready` drops it when the poll returns.
                    t.aborted = true;
                    None
                }
            }
        });
        // Dropped here, outside the executor's borrow: its captures' `Drop` may spawn.
        drop(fut);
    }
}

struct Task {
    gen: u32,
    /// `None` while the task is being polled.
    fut: Option<TaskFuture>,
    wake: Arc<WakeCell>,
    waker: Waker,
    /// The connection whose close drops this task, and which a panic in it closes.
    conn: Option<ConnectionId>,
    aborted: bool,
}

struct Exec {
    tasks: Slab<Task>,
    next_gen: u32,
}

thread_local! {
    static EXEC: RefCell<Exec> = const { RefCell::new(Exec { tasks: Slab::new(), next_gen: 0 }) };
    static READY: RefCell<VecDeque<TaskRef>> = const { RefCell::new(VecDeque::new()) };
}

/// What a waker holds: where the task lives and whether it is queued already.
struct WakeCell {
    thread: u16,
    task: TaskRef,
    queued: AtomicBool,
}

impl Wake for WakeCell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if current_thread() == Some(self.thread) {
            READY.with(|r| r.borrow_mut().push_back(self.task));
        } else {
            let task = self.task;
            // A ring that has gone away (stopped) drops the command, and the task with it.
            mailbox::post(self.thread, Cmd::Call(Box::new(move || READY.with(|r| r.borrow_mut().push_back(task)))));
        }
    }
}

/// The user's future, made to leave its output in the join slot and to catch its panics.
struct Wrapped<F: Future> {
    fut: F,
    slot: Rc<RefCell<Slot<F::Output>>>,
}

impl<F: Future> Future for Wrapped<F> {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
        // SAFETY: `fut` is structurally pinned: it is never moved out of `Wrapped`, which
        // is itself pinned in a `Box` for the task's whole life.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above; `this.fut` is not moved while pinned.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                Slot::finish(&this.slot, Ok(v));
                Poll::Ready(Ok(()))
            }
            Err(p) => {
                let msg = panic_message(&*p);
                Slot::finish(&this.slot, Err(JoinError::Panicked(msg.clone())));
                Poll::Ready(Err(msg))
            }
        }
    }
}

impl<F: Future> Drop for Wrapped<F> {
    fn drop(&mut self) {
        // Finished tasks filled the slot already; this only tells an abort.
        Slot::finish(&self.slot, Err(JoinError::Aborted));
    }
}

/// Spawns `fut` on the calling ring thread: it runs there, between I/O completions, until
/// it finishes, is aborted, or the ring stops. It need not be `Send`.
///
/// Errors: [`EngineError::NotOnRingThread`] off a ring thread.
///
/// ```no_run
/// use std::time::Duration;
/// use ringman_engine::{spawn, Timer, Worker};
/// let mut w = Worker::<()>::new("text://0.0.0.0:8000").unwrap();
/// w.on_worker_start(|_, _| {
///     spawn(async {
///         loop {
///             Timer::sleep(Duration::from_secs(10)).await;
///             println!("ten seconds later");
///         }
///     })
///     .unwrap();
/// });
/// ```
pub fn spawn<F: Future + 'static>(fut: F) -> Result<JoinHandle<F::Output>, EngineError> {
    spawn_inner(fut, None)
}

/// Spawns a task bound to `conn`: dropped when the connection closes, and closing it if it
/// panics. The caller checked that the connection lives on this thread.
pub(crate) fn spawn_bound<F: Future + 'static>(
    conn: ConnectionId,
    fut: F,
) -> Result<JoinHandle<F::Output>, EngineError> {
    let h = spawn_inner(fut, Some(conn))?;
    super::conn::bind_task(conn, h.task);
    Ok(h)
}

fn spawn_inner<F: Future + 'static>(fut: F, conn: Option<ConnectionId>) -> Result<JoinHandle<F::Output>, EngineError> {
    let thread = current_thread().ok_or(EngineError::NotOnRingThread)?;
    let slot = Rc::new(RefCell::new(Slot { out: None, waiter: None }));
    let boxed: TaskFuture = Box::pin(Wrapped { fut, slot: slot.clone() });
    let task = EXEC.with(|e| {
        let mut e = e.borrow_mut();
        let gen = e.next_gen;
        e.next_gen = gen.wrapping_add(1);
        let entry = e.tasks.vacant_entry();
        let task = TaskRef { key: entry.key() as u32, gen };
        // Queued from the start: the first poll runs on this loop turn.
        let wake = Arc::new(WakeCell { thread, task, queued: AtomicBool::new(true) });
        let waker = Waker::from(wake.clone());
        entry.insert(Task { gen, fut: Some(boxed), wake, waker, conn, aborted: false });
        task
    });
    READY.with(|r| r.borrow_mut().push_back(task));
    Ok(JoinHandle { slot, task })
}

/// True when tasks are queued: the ring's next wait must not block.
pub(crate) fn has_ready() -> bool {
    READY.with(|r| !r.borrow().is_empty())
}

/// Polls queued tasks (at most [`BUDGET`]). Returns the connections whose task panicked,
/// with the message, for the runner to close.
pub(crate) fn run_ready(panicked: &mut Vec<(ConnectionId, String)>) {
    for _ in 0..BUDGET {
        let Some(task) = READY.with(|r| r.borrow_mut().pop_front()) else { return };
        let taken = EXEC.with(|e| {
            let mut e = e.borrow_mut();
            let t = e.tasks.get_mut(task.key as usize).filter(|t| t.gen == task.gen)?;
            let fut = t.fut.take()?;
            // Cleared before the poll: a wake during it queues the task again.
            t.wake.queued.store(false, Ordering::Release);
            Some((fut, t.waker.clone()))
        });
        let Some((mut fut, waker)) = taken else { continue };
        let r = fut.as_mut().poll(&mut Context::from_waker(&waker));
        let done = EXEC.with(|e| {
            let mut e = e.borrow_mut();
            let t = &mut e.tasks[task.key as usize];
            let conn = t.conn;
            if r.is_pending() && !t.aborted {
                t.fut = Some(fut);
                return None;
            }
            e.tasks.remove(task.key as usize);
            Some((fut, conn))
        });
        if let Some((fut, conn)) = done {
            // Dropped outside the executor's borrow.
            drop(fut);
            if let Some(c) = conn {
                super::conn::unbind_task(c, task);
            }
            if let Poll::Ready(Err(msg)) = r {
                match conn {
                    Some(c) => panicked.push((c, msg)),
                    None => log::error!("task panicked: {msg}"),
                }
            }
        }
    }
}

/// Drops every task of this thread (the ring stopped, or died): their join handles answer
/// [`JoinError::Aborted`].
pub(crate) fn clear() {
    loop {
        let futs: Vec<TaskFuture> =
            EXEC.with(|e| e.borrow_mut().tasks.drain().filter_map(|t| t.fut).collect::<Vec<_>>());
        READY.with(|r| r.borrow_mut().clear());
        if futs.is_empty() {
            break;
        }
        // Their `Drop` may spawn again (dropped in the next round).
        drop(futs);
    }
    super::conn::clear();
}
