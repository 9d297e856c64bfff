//! Latency histogram (HdrHistogram, nanoseconds) and the percentile summary reported.

use hdrhistogram::Histogram;

/// Highest latency the histogram tracks (60 s); longer samples are clamped.
pub const MAX_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds with 3 significant digits.
#[derive(Debug, Clone)]
pub struct Latency {
    h: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// Quantiles drawn in the latency chart.
pub const CURVE_QUANTILES: [f64; 12] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        Latency { h: Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid") }
    }

    /// Records one latency sample in nanoseconds (clamped to `1..=MAX_NS`).
    pub fn record(&mut self, ns: u64) {
        self.h.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.h.reset();
    }

    /// Adds every sample of `other` (merging per-thread histograms).
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail; saturate rather than panic.
        let _ = self.h.add(&other.h);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.h.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.h.is_empty()
    }

    /// Value at quantile `q` (0..=1), in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.h.is_empty() {
            return 0.0;
        }
        self.h.value_at_quantile(q) as f64 / 1000.0
    }

    /// The standard summary.
    pub fn summary(&self) -> Percentiles {
        Percentiles {
            p50: self.quantile_us(0.5),
            p90: self.quantile_us(0.9),
            p99: self.quantile_us(0.99),
            p999: self.quantile_us(0.999),
            max: if self.h.is_empty() { 0.0 } else { self.h.max() as f64 / 1000.0 },
            mean: if self.h.is_empty() { 0.0 } else { self.h.mean() / 1000.0 },
        }
    }

    /// `(quantile, µs)` points of the percentile curve ([`CURVE_QUANTILES`]).
    pub fn curve(&self) -> Vec<(f64, f64)> {
        CURVE_QUANTILES.iter().map(|&q| (q, self.quantile_us(q))).collect()
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.002 + 1e-9
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latency::new().summary(), Percentiles::default());
    }

    #[test]
    fn uniform_percentiles() {
        let mut l = Latency::new();
        for us in 1..=10_000u64 {
            l.record(us * 1000);
        }
        let s = l.summary();
        assert_eq!(l.len(), 10_000);
        assert!(close(s.p50, 5000.0), "{s:?}");
        assert!(close(s.p90, 9000.0), "{s:?}");
        assert!(close(s.p99, 9900.0), "{s:?}");
        assert!(close(s.p999, 9990.0), "{s:?}");
        assert!(close(s.max, 10_000.0), "{s:?}");
        assert!(close(s.mean, 5000.5), "{s:?}");
    }

    #[test]
    fn outlier_only_moves_the_tail() {
        let mut l = Latency::new();
        for _ in 0..999 {
            l.record(10_000);
        }
        l.record(5_000_000_000);
        let s = l.summary();
        assert!(close(s.p50, 10.0) && close(s.p99, 10.0));
        assert!(close(s.max, 5_000_000.0));
    }

    #[test]
    fn clamps_out_of_range_samples() {
        let mut l = Latency::new();
        l.record(0);
        l.record(u64::MAX);
        assert_eq!(l.len(), 2);
        assert!(l.quantile_us(0.0) >= 0.001);
        assert!(close(l.summary().max, MAX_NS as f64 / 1000.0));
    }

    #[test]
    fn curve_is_monotonic() {
        let mut l = Latency::new();
        for i in 0..5000u64 {
            l.record(1000 + (i * 7919) % 100_000);
        }
        let c = l.curve();
        assert_eq!(c.len(), CURVE_QUANTILES.len());
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
