//! Per-thread timers, driven by the ring's wait timeout.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringman_engine::Timer;
//! // Inside any callback on a ring thread:
//! let id = Timer::add(Duration::from_secs(1), true, || println!("tick")).unwrap();
//! Timer::del(id);
//! ```

use std::time::Duration;

use crate::error::EngineError;
use crate::reactor::with_core;
use crate::timers::TimerFn;
pub use crate::timers::TimerId;

/// Timer functions of the current ring thread (Workerman's `Timer::add` / `del` / `delAll`).
///
/// Callbacks run on the ring thread between I/O completions; a panic in one is caught and
/// reported on stderr, and the thread keeps running. Deadlines are met to within the
/// kernel's wait-timeout precision (well under 1 ms on an idle thread).
pub struct Timer;

impl Timer {
    /// Runs `cb` after `interval`, and every `interval` after that when `repeat` is true.
    ///
    /// Errors: [`EngineError::NotOnRingThread`] off a ring thread;
    /// [`EngineError::TimerInterval`] for a zero interval that repeats (it would spin the
    /// ring) or an interval too long to schedule (`Duration::MAX`). A zero interval without
    /// repeat runs `cb` on the next loop turn.
    pub fn add(interval: Duration, repeat: bool, cb: impl FnMut() + 'static) -> Result<TimerId, EngineError> {
        let mut cb = Some(Box::new(cb) as TimerFn);
        let now = crate::clock::now();
        let r = with_core(|c| c.timers.add(now, interval, repeat, cb.take().expect("called once")));
        // A refused callback is dropped here, outside the core.
        match r {
            None => Err(EngineError::NotOnRingThread),
            Some(Ok(id)) => Ok(id),
            Some(Err((e, _cb))) => Err(e),
        }
    }

    /// Cancels a timer; returns false if it already fired (one-shot) or was deleted. The
    /// callback is dropped after the engine is released, so its captures' `Drop` may use
    /// connections and timers.
    pub fn del(id: TimerId) -> bool {
        let removed = with_core(|c| c.timers.del(id)).flatten();
        removed.is_some()
    }

    /// Cancels every timer of this thread (callbacks dropped as in [`Timer::del`]).
    pub fn del_all() {
        let removed = with_core(|c| c.timers.del_all());
        drop(removed);
    }

    /// Number of live timers on this thread.
    pub fn count() -> usize {
        with_core(|c| c.timers.len()).unwrap_or(0)
    }
}
