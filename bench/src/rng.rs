//! A tiny seeded PRNG (xorshift64*) for the order of servers within a round. Not for
//! anything statistical beyond shuffling a handful of names; the seed is printed so an order
//! can be replayed with `--seed`.

/// xorshift64* (Vigna): 64-bit state, never zero.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        // One splitmix64 step spreads small seeds (1, 2, 3...) over the state.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_f491_4f6c_dd1d } else { z })
    }

    /// A seed from the clock (nanoseconds since the epoch mixed with the pid).
    pub fn clock_seed() -> u64 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        // Keep it short enough to type back in: 6 decimal digits.
        (t ^ (u64::from(std::process::id()) << 20)) % 1_000_000
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant for n this small).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_orders() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        for _ in 0..10 {
            let (mut x, mut y) = ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]);
            a.shuffle(&mut x);
            b.shuffle(&mut y);
            assert_eq!(x, y);
        }
    }

    #[test]
    fn shuffle_is_a_permutation_and_varies() {
        let mut r = Rng::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut v = [0, 1, 2, 3, 4];
            r.shuffle(&mut v);
            let mut s = v;
            s.sort();
            assert_eq!(s, [0, 1, 2, 3, 4]);
            seen.insert(v);
        }
        // 120 orders exist; 200 draws of a working shuffle see most of them.
        assert!(seen.len() > 60, "{}", seen.len());
        // Every element reaches the first position.
        assert_eq!(seen.iter().map(|v| v[0]).collect::<std::collections::HashSet<_>>().len(), 5);
    }

    #[test]
    fn zero_seed_and_distinct_seeds() {
        let mut z = Rng::new(0);
        assert_ne!(z.next_u64(), 0);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        assert!(Rng::clock_seed() < 1_000_000);
    }
}
