//! The simulator's randomness: one seed, independent streams derived from it.

/// SplitMix64: small, fast, and good enough to drive schedules; every stream of a run is
/// derived from the run's seed, so a seed replays exactly.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The stream `stream` of run `seed`.
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p_per_mille / 1000`.
    pub(crate) fn chance(&mut self, p_per_mille: u32) -> bool {
        self.below(1000) < p_per_mille as u64
    }

    /// A size drawn log-uniformly up to `max` (small sizes common, large ones present).
    pub(crate) fn size(&mut self, max: usize) -> usize {
        let bits = 64 - (max as u64).leading_zeros() as u64;
        let b = self.below(bits + 1);
        let top = (1u64 << b).min(max as u64);
        self.range(0, top) as usize
    }

    /// A swarm rate: zero for a third of the seeds (the fault is off), else up to `max`.
    pub(crate) fn rate(&mut self, max: u32) -> u32 {
        if self.below(3) == 0 {
            0
        } else {
            self.range(1, max as u64) as u32
        }
    }
}
