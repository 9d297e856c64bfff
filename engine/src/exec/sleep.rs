//! `Timer::sleep`: a future on the ring's timer wheel.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::timer::{Timer, TimerId};

/// What the timer's callback shares with the future.
#[derive(Default)]
struct Shared {
    fired: Cell<bool>,
    /// The callback was dropped without firing (`Timer::del_all`): arm again.
    lost: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// Held by the timer's callback: wakes the future when the callback fires or is dropped.
struct Arm(Rc<Shared>);

impl Drop for Arm {
    fn drop(&mut self) {
        if !self.0.fired.get() {
            self.0.lost.set(true);
        }
        if let Some(w) = self.0.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// A future that completes once its deadline has passed ([`Timer::sleep`],
/// [`Timer::sleep_until`]). It arms a one-shot timer of the ring thread it is first polled
/// on (polling it off a ring thread panics) and cancels it when dropped early. A
/// `Timer::del_all` meanwhile does not lose it: it arms again.
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    shared: Rc<Shared>,
    timer: Option<TimerId>,
}

impl Sleep {
    pub(crate) fn until(deadline: Instant) -> Sleep {
        Sleep { deadline, shared: Rc::default(), timer: None }
    }

    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let now = crate::clock::now();
        if this.shared.fired.get() || now >= this.deadline {
            return Poll::Ready(());
        }
        *this.shared.waker.borrow_mut() = Some(cx.waker().clone());
        if this.timer.is_none() || this.shared.lost.replace(false) {
            let arm = Arm(this.shared.clone());
            let id = Timer::add(this.deadline - now, false, move || {
                arm.0.fired.set(true);
            })
            .expect("Timer::sleep is awaited on a ring thread");
            this.timer = Some(id);
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(id), false) = (self.timer, self.shared.fired.get()) {
            Timer::del(id);
        }
    }
}

impl Timer {
    /// A future completing after `d` (on the ring thread that awaits it).
    ///
    /// ```no_run
    /// # async fn f() {
    /// use std::time::Duration;
    /// ringman_engine::Timer::sleep(Duration::from_millis(50)).await;
    /// # }
    /// ```
    pub fn sleep(d: Duration) -> Sleep {
        Sleep::until(crate::clock::now() + d)
    }

    /// A future completing at `deadline`.
    pub fn sleep_until(deadline: Instant) -> Sleep {
        Sleep::until(deadline)
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep").field("deadline", &self.deadline).finish()
    }
}

/// The error of [`timeout`]: the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// Runs `fut` with a deadline `d` from now: its output, or [`Elapsed`] (and `fut` is
/// dropped) if the deadline passes first. On a ring thread, like [`Timer::sleep`].
///
/// ```no_run
/// # async fn f(conn: ringman_engine::Connection) {
/// use std::time::Duration;
/// let mut m = conn.messages().unwrap();
/// match ringman_engine::timeout(Duration::from_secs(5), m.recv()).await {
///     Ok(Some(msg)) => println!("{:?}", msg.data),
///     Ok(None) => println!("closed"),
///     Err(_) => println!("nothing within 5 s"),
/// }
/// # }
/// ```
pub fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    Timeout { fut, sleep: Timer::sleep(d) }
}

/// The future of [`timeout`].
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct Timeout<F> {
    fut: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `fut` is structurally pinned (never moved out of `self`, which is pinned);
        // `sleep` is `Unpin` and not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let fut = unsafe { Pin::new_unchecked(&mut this.fut) };
        if let Poll::Ready(v) = fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}
