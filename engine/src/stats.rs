//! Live counters of each ring thread, written by that thread and read by anyone (status,
//! metrics, tests). Nothing here locks: each value is a relaxed atomic with one writer.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter written by its ring thread only and read by anyone (status, metrics).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
    /// Adds `n` (one writer: a load and a store, no read-modify-write).
    pub(crate) fn add(&self, n: u64) {
        self.set(self.get().wrapping_add(n))
    }
    /// Subtracts `n` (a gauge going down).
    pub(crate) fn sub(&self, n: u64) {
        self.set(self.get().wrapping_sub(n))
    }
}

/// Live counters of one ring thread.
#[derive(Debug, Default)]
pub struct ThreadStats {
    /// Open accepted connections (Workerman's `$worker->connections`; the application's
    /// outgoing connections are not counted).
    pub connections: Counter,
    /// Connections accepted since start.
    pub accepted: Counter,
    /// Connections accepted and closed at once because the worker was at its
    /// `max_connections`.
    pub refused: Counter,
    /// Messages delivered on accepted connections (Workerman's `total_request`; what the
    /// application's outgoing connections receive is not counted).
    pub requests: Counter,
    /// Sends refused because the send buffer was full, and datagrams the kernel refused.
    pub send_fail: Counter,
    /// Datagrams dropped because they were larger than the receive buffers
    /// (`Worker::max_datagram_size`): counted, never delivered cut.
    pub udp_truncated: Counter,
    /// Body bytes the kernel took straight from files (`sendfile`, for the bodies
    /// `WebServer` and `send_file` keep) instead of from the send buffer.
    pub sendfile_bytes: Counter,
    /// Sockets in the ring's fixed-file table now: an accepted connection is registered at
    /// its second send and cleared before its socket closes, so this returns to 0 when the
    /// connections are gone.
    pub registered_files: Counter,
    /// Times the completion queue was seen overflowing (kernel kept the CQEs).
    pub cq_overflows: Counter,
    /// Live timers.
    pub timers: Counter,
    /// Times the thread was restarted by the supervisor (after a crash or a recycle).
    pub restarts: Counter,
    /// Unix time (seconds) of the thread's last loop turn; 0 while it is (re)starting.
    pub heartbeat: Counter,
    /// `on_message` handler latency, sampled.
    pub latency: LatencyHistogram,
}

/// A log2-bucketed histogram of nanoseconds, written by one thread, read by any.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 48],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl LatencyHistogram {
    pub(crate) fn record(&self, ns: u64) {
        let b = (64 - ns.max(1).leading_zeros() as usize).min(47);
        let slot = &self.buckets[b];
        slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in nanoseconds, as the upper bound of its power-of-two
    /// bucket (so within a factor of two); `None` without samples.
    pub fn quantile_ns(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(1u64 << i);
            }
        }
        Some(1u64 << 47)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        let h = LatencyHistogram::default();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile_ns(0.5), None);
    }

    #[test]
    fn quantiles_are_the_upper_bound_of_their_power_of_two_bucket() {
        let h = LatencyHistogram::default();
        // 90 samples of 100 ns (bucket 2^7 = 128) and 10 of 5 µs (bucket 2^13 = 8192).
        for _ in 0..90 {
            h.record(100);
        }
        for _ in 0..10 {
            h.record(5_000);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_ns(0.0), Some(128), "q=0 is the smallest sample's bucket");
        assert_eq!(h.quantile_ns(0.5), Some(128));
        assert_eq!(h.quantile_ns(0.9), Some(128), "rank 90 is still a 100 ns sample");
        assert_eq!(h.quantile_ns(0.91), Some(8192));
        assert_eq!(h.quantile_ns(1.0), Some(8192));
        // Out-of-range quantiles are clamped.
        assert_eq!(h.quantile_ns(7.0), Some(8192));
        assert_eq!(h.quantile_ns(-1.0), Some(128));
    }

    #[test]
    fn extreme_samples_land_in_the_end_buckets() {
        let h = LatencyHistogram::default();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.quantile_ns(0.5), Some(2), "0 ns counts as 1 ns, bucket 2^1");
        assert_eq!(h.quantile_ns(1.0), Some(1 << 47));
    }

    #[test]
    fn counters_read_what_their_thread_wrote() {
        let s = ThreadStats::default();
        s.requests.set(41);
        s.requests.add(1);
        assert_eq!(s.requests.get(), 42);
    }
}
