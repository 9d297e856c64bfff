//! The engine's clocks: the monotonic clock for deadlines and timers, the wall clock for the
//! heartbeat and HTTP dates.
//!
//! Every reading the engine takes goes through here, so the deterministic simulator
//! (`sim/`, test builds only) can run a ring thread on a virtual clock: time then moves only
//! when the simulated kernel says so, and a 60-second idle timeout costs no real waiting.

use std::time::{Instant, SystemTime};

#[cfg(test)]
thread_local! {
    /// The virtual clock of a simulated ring thread: `(monotonic, wall)` now.
    static VIRTUAL: std::cell::Cell<Option<(Instant, SystemTime)>> = const { std::cell::Cell::new(None) };
}

/// The monotonic clock.
#[inline]
pub(crate) fn now() -> Instant {
    #[cfg(test)]
    if let Some((t, _)) = VIRTUAL.with(std::cell::Cell::get) {
        return t;
    }
    Instant::now()
}

/// The wall clock.
#[inline]
pub(crate) fn wall() -> SystemTime {
    #[cfg(test)]
    if let Some((_, w)) = VIRTUAL.with(std::cell::Cell::get) {
        return w;
    }
    SystemTime::now()
}

/// Puts this thread on a virtual clock (`Some`), or back on the real ones (`None`).
#[cfg(test)]
pub(crate) fn set_virtual(at: Option<(Instant, SystemTime)>) {
    VIRTUAL.with(|v| v.set(at));
}
