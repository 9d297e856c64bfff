//! The handle of a spawned task: await its output, or abort it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::executor::TaskRef;

/// Why a task produced no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The future panicked (the message).
    #[error("task panicked: {0}")]
    Panicked(String),
    /// It was dropped before it finished: [`JoinHandle::abort`], its connection closed, or
    /// its ring stopped.
    #[error("task dropped before it finished")]
    Aborted,
}

/// Where a task leaves its output for its [`JoinHandle`].
pub(super) struct Slot<T> {
    pub(super) out: Option<Result<T, JoinError>>,
    pub(super) waiter: Option<Waker>,
}

impl<T> Slot<T> {
    pub(super) fn finish(cell: &RefCell<Slot<T>>, r: Result<T, JoinError>) {
        let w = {
            let mut s = cell.borrow_mut();
            if s.out.is_none() {
                s.out = Some(r);
            }
            s.waiter.take()
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

/// A spawned task's handle (ring-thread local). Awaiting it yields the task's output;
/// dropping it detaches the task, which runs on.
pub struct JoinHandle<T> {
    pub(super) slot: Rc<RefCell<Slot<T>>>,
    pub(super) task: TaskRef,
}

impl<T> JoinHandle<T> {
    /// Drops the task's future now (awaiting the handle then answers
    /// [`JoinError::Aborted`]). Aborting a finished task does nothing. Called from inside
    /// the task itself, the future is dropped once its current poll returns.
    pub fn abort(&self) {
        self.task.abort();
    }

    /// True once the task has finished, aborted or panicked.
    pub fn is_finished(&self) -> bool {
        self.slot.borrow().out.is_some()
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.borrow_mut();
        match s.out.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle").field("finished", &self.is_finished()).finish()
    }
}
