//! Per-thread timers, driven by the ring's wait timeout.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringman_engine::Timer;
//! // Inside any callback on a ring thread:
//! let id = Timer::add(Duration::from_secs(1), true, || println!("tick")).unwrap();
//! Timer::del(id);
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::error::EngineError;
use crate::reactor::with_core;

/// Identifies a timer on the thread that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

pub(crate) type TimerFn = Box<dyn FnMut()>;

struct Entry {
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
    pub(crate) fn add(&mut self, interval: Duration, repeat: bool, cb: TimerFn) -> TimerId {
        self.next += 1;
        let id = self.next;
        self.live.insert(id, Entry { interval, repeat, cb: Some(cb) });
        self.heap.push(Reverse((Instant::now() + interval, id)));
        TimerId(id)
    }

    pub(crate) fn del(&mut self, id: TimerId) -> bool {
        self.live.remove(&id.0).is_some()
    }

    pub(crate) fn del_all(&mut self) {
        self.live.clear();
        self.heap.clear();
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
                        // not drift; skip missed periods instead of bursting.
                        let mut next = at + e.interval.max(Duration::from_micros(1));
                        if next <= now {
                            next = now + e.interval.max(Duration::from_micros(1));
                        }
                        self.heap.push(Reverse((next, id)));
                    }
                    return Some((TimerId(id), cb));
                }
            }
        }
        None
    }

    /// Puts a callback back after it ran (unless it was one-shot or deleted meanwhile).
    pub(crate) fn restore(&mut self, id: TimerId, cb: TimerFn) {
        match self.live.get_mut(&id.0) {
            Some(e) if e.repeat => e.cb = Some(cb),
            Some(_) => {
                self.live.remove(&id.0);
            }
            None => {}
        }
    }
}

/// Timer functions of the current ring thread (Workerman's `Timer::add` / `del` / `delAll`).
///
/// Callbacks run on the ring thread between I/O completions; a panic in one is caught and
/// reported on stderr, and the thread keeps running. Deadlines are met to within the
/// kernel's wait-timeout precision (well under 1 ms on an idle thread).
pub struct Timer;

impl Timer {
    /// Runs `cb` after `interval`, and every `interval` after that when `repeat` is true.
    pub fn add(interval: Duration, repeat: bool, cb: impl FnMut() + 'static) -> Result<TimerId, EngineError> {
        let mut cb = Some(Box::new(cb) as TimerFn);
        with_core(|c| c.timers.add(interval, repeat, cb.take().expect("called once")))
            .ok_or(EngineError::NotOnRingThread)
    }

    /// Cancels a timer; returns false if it already fired (one-shot) or was deleted.
    pub fn del(id: TimerId) -> bool {
        with_core(|c| c.timers.del(id)).unwrap_or(false)
    }

    /// Cancels every timer of this thread.
    pub fn del_all() {
        with_core(|c| c.timers.del_all());
    }

    /// Number of live timers on this thread.
    pub fn count() -> usize {
        with_core(|c| c.timers.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_and_repeat() {
        let mut t = Timers::default();
        let a = t.add(Duration::ZERO, false, Box::new(|| {}));
        let b = t.add(Duration::ZERO, true, Box::new(|| {}));
        let now = Instant::now() + Duration::from_millis(1);
        let (id1, cb1) = t.pop_due(now).unwrap();
        t.restore(id1, cb1);
        let (id2, cb2) = t.pop_due(now).unwrap();
        t.restore(id2, cb2);
        assert_eq!(t.len(), 1);
        assert!(!t.del(a));
        assert!(t.del(b));
        assert_eq!(t.next_timeout(now), None);
    }
}
