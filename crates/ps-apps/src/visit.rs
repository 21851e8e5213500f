//! The order a worker visits its samples in: a keyed pseudo-random permutation of `0..n` that
//! gives any position's sample on its own, so a device can make a clock's order where the
//! samples are instead of receiving it (4 bytes a sample a clock across PCIe).
//!
//! [`Visit::at`] is a four-round Feistel network on the smallest even number of bits that
//! holds `n`, walked until it lands below `n` (cycle walking: at most a few steps, fewer than
//! four expected, since the domain is under 4n). Its round function uses only 32-bit wrapping
//! multiplies, xors and shifts, so `kernels/visit.cuh` computes the same permutation bit for
//! bit. A clock of an epoch split over `k` clocks visits positions
//! `[n * i / k, n * (i + 1) / k)` of the epoch's permutation ([`Visit::for_clock`]).

use crate::seed::{mix64, ClockKey};

/// Rounds of the Feistel network.
const ROUNDS: usize = 4;

/// Positions `[from, from + count)` of the permutation of `0..n` keyed by `keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit {
    pub keys: [u32; ROUNDS],
    pub n: u32,
    pub from: u32,
    pub count: u32,
}

/// The round function: a keyed 32-bit mix (Murmur3's finaliser constants) of one half.
fn round(half: u32, key: u32) -> u32 {
    let mut x = half ^ key;
    x = x.wrapping_mul(0x9E37_79B1);
    x ^= x >> 15;
    x = x.wrapping_mul(0x85EB_CA77);
    x ^= x >> 13;
    x = x.wrapping_mul(0xC2B2_AE3D);
    x ^ (x >> 16)
}

/// Bits of each half of the Feistel domain for `n` values: the domain `4^half_bits` is the
/// smallest power of four at or above `n` (at least 4).
fn half_bits(n: u32) -> u32 {
    let bits = 32 - n.saturating_sub(1).leading_zeros();
    bits.div_ceil(2).max(1)
}

/// One pass of the network over the `2 * h`-bit domain: a bijection of it.
fn feistel(x: u64, h: u32, keys: &[u32; ROUNDS]) -> u64 {
    let mask = (1u64 << h) - 1;
    let (mut l, mut r) = (x >> h, x & mask);
    for &k in keys {
        let f = u64::from(round(r as u32, k)) & mask;
        (l, r) = (r, l ^ f);
    }
    (l << h) | r
}

impl Visit {
    /// The round keys of a clock key: each a word of a SplitMix64 chain seeded by it.
    pub fn keys_of(key: ClockKey) -> [u32; ROUNDS] {
        let mut s = mix64(mix64(key.seed ^ 0x5649_5349_545F_4F52) ^ u64::from(key.worker));
        s = mix64(s ^ u64::from(key.clock));
        let (a, b) = (s, mix64(s));
        [a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32]
    }

    /// Slice `i` of `k` of the epoch `key` over `n` samples.
    pub fn for_clock(key: ClockKey, n: usize, i: usize, k: usize) -> Visit {
        let n = n.min(u32::MAX as usize);
        let k = k.max(1);
        let i = i.min(k - 1);
        let (from, to) = (n * i / k, n * (i + 1) / k);
        Visit {
            keys: Visit::keys_of(key),
            n: n as u32,
            from: from as u32,
            count: (to - from) as u32,
        }
    }

    /// Checks the visit against an engine that holds `samples` samples: a permutation of
    /// exactly them, and positions `[from, from + count)` within it. Engines check this before
    /// anything else ([`Visit::at`] is defined for positions below `n` only).
    pub fn check(&self, samples: usize) -> Result<(), String> {
        let end = u64::from(self.from) + u64::from(self.count);
        if self.n as usize != samples || end > u64::from(self.n) {
            return Err(format!(
                "a visit of positions {}..{end} of {} samples; the engine holds {samples}",
                self.from, self.n
            ));
        }
        Ok(())
    }

    /// The sample at position `j` of the permutation.
    ///
    /// # Panics
    /// If `j >= n` (cycle walking from outside the domain need not end): a caller bug, which
    /// [`Visit::check`] rules out.
    pub fn at(&self, j: u32) -> u32 {
        assert!(j < self.n, "position {j} of a visit of {} samples", self.n);
        let h = half_bits(self.n);
        let mut x = u64::from(j);
        loop {
            x = feistel(x, h, &self.keys);
            if x < u64::from(self.n) {
                return x as u32;
            }
        }
    }

    /// The visit's samples, in order (see [`Visit::check`]).
    pub fn order(&self) -> Vec<usize> {
        (self.from..self.from + self.count)
            .map(|j| self.at(j) as usize)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(clock: u32) -> ClockKey {
        ClockKey {
            seed: 42,
            worker: 1,
            clock,
        }
    }

    #[test]
    fn every_size_gets_a_permutation() {
        for n in (1..300).chain([1023, 1024, 1025, 4097, 65_535, 65_536, 65_537, 100_003]) {
            let v = Visit::for_clock(key(n), n as usize, 0, 1);
            let mut seen = vec![false; n as usize];
            for s in v.order() {
                assert!(!seen[s], "n {n}: {s} twice");
                seen[s] = true;
            }
            assert!(seen.iter().all(|&s| s), "n {n}");
        }
    }

    #[test]
    fn a_visit_outside_its_samples_is_refused() {
        let v = Visit::for_clock(key(0), 10, 0, 1);
        assert_eq!(v.check(10), Ok(()));
        assert!(v.check(11).is_err(), "another engine's samples");
        let past = Visit {
            from: 8,
            count: 3,
            ..v
        };
        assert!(past.check(10).is_err(), "past the end");
        let wraps = Visit {
            from: u32::MAX,
            count: 2,
            ..v
        };
        assert!(wraps.check(10).is_err(), "from + count overflows u32");
        let caught = std::panic::catch_unwind(|| past.order());
        assert!(
            caught.is_err(),
            "order() of a bad visit panics, it does not loop"
        );
    }

    #[test]
    fn the_clocks_of_an_epoch_split_its_permutation() {
        let n = 1000;
        let whole = Visit::for_clock(key(3), n, 0, 1).order();
        let parts: Vec<usize> = (0..7)
            .flat_map(|i| Visit::for_clock(key(3), n, i, 7).order())
            .collect();
        assert_eq!(parts, whole);
        assert_ne!(
            Visit::for_clock(key(4), n, 0, 1).order(),
            whole,
            "a new epoch"
        );
    }

    /// Known answers, computed by a separate Python transcription of the network; a change here
    /// changes every MLP job's visiting order (and the device half must follow).
    #[test]
    fn known_answers() {
        let v = Visit {
            keys: [1, 2, 3, 4],
            n: 10,
            from: 0,
            count: 10,
        };
        assert_eq!(v.order(), [3, 2, 8, 9, 6, 7, 5, 4, 1, 0]);
        let w = Visit {
            keys: [0xDEAD_BEEF, 7, 0x1234_5678, u32::MAX],
            n: 100_003,
            from: 0,
            count: 100_003,
        };
        let got: Vec<u32> = [0, 1, 99_999, 100_002].iter().map(|&j| w.at(j)).collect();
        assert_eq!(got, [24_229, 51_700, 65_214, 43_017]);
        assert_eq!(half_bits(1), 1);
        assert_eq!(half_bits(4), 1);
        assert_eq!(half_bits(5), 2);
        assert_eq!(half_bits(u32::MAX), 16);
        let big = Visit::for_clock(key(0), u32::MAX as usize, 0, 1);
        assert!(big.at(u32::MAX - 1) < u32::MAX);
    }

    /// Each position's sample is spread evenly over many keys: the first position takes each of
    /// 8 samples about an eighth of the time, and so does the last.
    #[test]
    fn positions_are_spread_evenly_over_keys() {
        let n = 8;
        for pos in [0u32, 7] {
            let mut hits = [0u32; 8];
            for c in 0..8000 {
                hits[Visit::for_clock(key(c), n, 0, 1).at(pos) as usize] += 1;
            }
            for (s, &h) in hits.iter().enumerate() {
                assert!(
                    (850..1150).contains(&h),
                    "position {pos}: sample {s} {h} times"
                );
            }
        }
    }
}
