//! Open-loop (constant-rate) send schedule, wrk2 style.
//!
//! Message `seq` (0-based, counted over all connections) is *intended* to be sent at
//! `start + seq / rate`. Its latency is measured from that intended time, not from when the
//! client actually managed to send it, so a stalled server is charged for the whole queue it
//! caused (no coordinated omission). Messages are dealt to connections round-robin, which
//! keeps each connection's intended times increasing.

/// A constant-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    /// A schedule of `rate` messages per second overall. `rate` must be positive and finite.
    pub fn new(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then_some(Schedule { rate })
    }

    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Intended send time of message `seq`, in nanoseconds after the schedule start.
    pub fn intended_ns(&self, seq: u64) -> u64 {
        (seq as f64 * 1e9 / self.rate) as u64
    }

    /// How many messages are due `elapsed_ns` after the start (those with intended time
    /// `<= elapsed_ns`). Consistent with [`Schedule::intended_ns`].
    pub fn due_count(&self, elapsed_ns: u64) -> u64 {
        let mut n = (elapsed_ns as f64 * self.rate / 1e9) as u64;
        // Correct float rounding at the boundary in either direction.
        while self.intended_ns(n) <= elapsed_ns {
            n += 1;
        }
        while n > 0 && self.intended_ns(n - 1) > elapsed_ns {
            n -= 1;
        }
        n
    }

    /// Connection that sends message `seq` when `conns` connections share the schedule.
    pub fn conn_for(seq: u64, conns: usize) -> usize {
        (seq % conns as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_rates() {
        assert!(Schedule::new(0.0).is_none());
        assert!(Schedule::new(-1.0).is_none());
        assert!(Schedule::new(f64::NAN).is_none());
        assert!(Schedule::new(f64::INFINITY).is_none());
    }

    #[test]
    fn intended_times_are_evenly_spaced() {
        let s = Schedule::new(1000.0).unwrap();
        assert_eq!(s.intended_ns(0), 0);
        assert_eq!(s.intended_ns(1), 1_000_000);
        assert_eq!(s.intended_ns(1000), 1_000_000_000);
    }

    #[test]
    fn due_count_matches_intended() {
        let s = Schedule::new(3.0).unwrap();
        assert_eq!(s.due_count(0), 1); // message 0 is due at once
        assert_eq!(s.due_count(333_333_332), 1);
        assert_eq!(s.due_count(333_333_333), 2);
        assert_eq!(s.due_count(1_000_000_000), 4);
        for rate in [1.0, 7.0, 1234.5, 90_000.0, 2_500_000.0] {
            let s = Schedule::new(rate).unwrap();
            for t in (0..2_000_000_000u64).step_by(7_919_993) {
                let n = s.due_count(t);
                assert!(s.intended_ns(n - 1) <= t && s.intended_ns(n) > t, "rate {rate} t {t}");
            }
        }
    }

    #[test]
    fn total_over_a_window_is_rate_times_duration() {
        let s = Schedule::new(50_000.0).unwrap();
        assert_eq!(s.due_count(2_000_000_000 - 1), 100_000);
    }

    #[test]
    fn round_robin_keeps_per_connection_order() {
        let s = Schedule::new(10_000.0).unwrap();
        let conns = 7;
        let mut last = vec![None; conns];
        for seq in 0..1000 {
            let c = Schedule::conn_for(seq, conns);
            let t = s.intended_ns(seq);
            if let Some(prev) = last[c] {
                assert!(t > prev);
            }
            last[c] = Some(t);
        }
    }
}
