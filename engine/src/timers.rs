//! The timers of one ring thread: a min-heap of deadlines and the live callbacks. Pure
//! bookkeeping, driven by the ring's wait timeout; [`crate::Timer`] is the user-facing side.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::error::EngineError;

/// Identifies a timer on the thread that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub(crate) u64);

pub(crate) type TimerFn = Box<dyn FnMut()>;

pub(crate) struct Entry {
    interval: Duration,
    repeat: bool,
    /// `None` while the callback runs (it is taken out so it may add or delete timers).
    cb: Option<TimerFn>,
}

/// The timers of one ring thread: a min-heap of deadlines plus the live entries. A deleted
/// timer's heap node is skipped lazily when it comes due.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Entry>,
    next: u64,
}

impl Timers {
    /// Adds a timer; refuses (handing `cb` back, to be dropped outside the core) a zero
    /// interval that repeats and an interval whose deadline overflows the clock.
    pub(crate) fn add(
        &mut self,
        now: Instant,
        interval: Duration,
        repeat: bool,
        cb: TimerFn,
    ) -> Result<TimerId, (EngineError, TimerFn)> {
        let refuse = |reason| EngineError::TimerInterval { interval, reason };
        if repeat && interval.is_zero() {
            return Err((refuse("a repeating timer needs a non-zero interval"), cb));
        }
        // The deadline and the next period's must both be representable.
        let Some(at) = now.checked_add(interval).filter(|at| at.checked_add(interval).is_some()) else {
            return Err((refuse("too long: the deadline overflows the monotonic clock"), cb));
        };
        self.next += 1;
        let id = self.next;
        self.live.insert(id, Entry { interval, repeat, cb: Some(cb) });
        self.heap.push(Reverse((at, id)));
        Ok(TimerId(id))
    }

    /// Removes a timer; its callback is handed back so the caller drops it outside the core
    /// (a closure's captures may have a `Drop` that calls into the engine).
    pub(crate) fn del(&mut self, id: TimerId) -> Option<Option<TimerFn>> {
        self.live.remove(&id.0).map(|e| e.cb)
    }

    /// Removes every timer, handing the callbacks back (see [`Timers::del`]).
    pub(crate) fn del_all(&mut self) -> HashMap<u64, Entry> {
        self.heap.clear();
        std::mem::take(&mut self.live)
    }

    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Time until the earliest live deadline.
    pub(crate) fn next_timeout(&mut self, now: Instant) -> Option<Duration> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if self.live.contains_key(&id) {
                return Some(at.saturating_duration_since(now));
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the callback of one timer that is due, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, TimerFn)> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(e) = self.live.get_mut(&id) {
                if let Some(cb) = e.cb.take() {
                    if e.repeat {
                        // Schedule from the deadline, not from now, so a repeating timer does
                        // not drift; skip missed periods instead of bursting. (`add` refused
                        // zero and unrepresentable intervals.)
                        let mut next = at + e.interval;
                        if next <= now {
                            next = now.checked_add(e.interval).unwrap_or(next);
                        }
                        self.heap.push(Reverse((next, id)));
                    }
                    return Some((TimerId(id), cb));
                }
            }
        }
        None
    }

    /// Puts a callback back after it ran. A one-shot or deleted timer's callback is handed
    /// back instead, to be dropped outside the core.
    pub(crate) fn restore(&mut self, id: TimerId, cb: TimerFn) -> Option<TimerFn> {
        match self.live.get_mut(&id.0) {
            Some(e) if e.repeat => {
                e.cb = Some(cb);
                None
            }
            Some(_) => {
                self.live.remove(&id.0);
                Some(cb)
            }
            None => Some(cb),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_and_repeat() {
        let mut t = Timers::default();
        let t0 = Instant::now();
        let a = t.add(t0, Duration::ZERO, false, Box::new(|| {})).ok().unwrap();
        let b = t.add(t0, Duration::from_micros(1), true, Box::new(|| {})).ok().unwrap();
        let now = t0 + Duration::from_millis(1);
        let (id1, cb1) = t.pop_due(now).unwrap();
        assert!(t.restore(id1, cb1).is_some(), "a one-shot's callback is handed back");
        let (id2, cb2) = t.pop_due(now).unwrap();
        assert!(t.restore(id2, cb2).is_none(), "a repeating callback is kept");
        assert_eq!(t.len(), 1);
        assert!(t.del(a).is_none());
        assert!(t.del(b).is_some());
        assert_eq!(t.next_timeout(now), None);
    }

    #[test]
    fn zero_repeating_and_endless_intervals_are_refused() {
        let mut t = Timers::default();
        let now = Instant::now();
        let e = t.add(now, Duration::ZERO, true, Box::new(|| {})).err().unwrap().0;
        assert!(matches!(e, EngineError::TimerInterval { .. }), "{e}");
        let e = t.add(now, Duration::MAX, false, Box::new(|| {})).err().unwrap().0;
        assert!(matches!(e, EngineError::TimerInterval { .. }), "{e}");
        let e = t.add(now, Duration::MAX / 2, true, Box::new(|| {})).err().unwrap().0;
        assert!(matches!(e, EngineError::TimerInterval { .. }), "{e}");
        assert_eq!(t.len(), 0);
        // A zero one-shot is a "next turn" timer.
        assert!(t.add(now, Duration::ZERO, false, Box::new(|| {})).is_ok());
        assert!(t.pop_due(now).is_some());
    }

    #[test]
    fn a_late_repeating_timer_skips_missed_periods() {
        let mut t = Timers::default();
        let t0 = Instant::now();
        let id = t.add(t0, Duration::from_millis(10), true, Box::new(|| {})).ok().unwrap();
        // Due long after several periods: runs once, next deadline one period after `now`.
        let late = t0 + Duration::from_millis(1000);
        let (got, cb) = t.pop_due(late).unwrap();
        assert_eq!(got, id);
        assert!(t.restore(got, cb).is_none());
        assert!(t.pop_due(late).is_none(), "no burst of missed periods");
        assert_eq!(t.next_timeout(late), Some(Duration::from_millis(10)));
    }
}
