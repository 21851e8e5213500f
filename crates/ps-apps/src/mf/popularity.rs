//! The synthetic rating generator's item draws: a set of items as bits, and Zipf item
//! popularity sampled with Walker's alias table.

use rand::seq::SliceRandom;
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// A set of items as bits.
pub(super) struct Bits(Vec<u64>);

impl Bits {
    pub(super) fn new(n: u32) -> Self {
        Bits(vec![0; (n as usize).div_ceil(64)])
    }
    pub(super) fn get(&self, i: u32) -> bool {
        self.0[i as usize / 64] >> (i % 64) & 1 == 1
    }
    /// Sets bit `i`; whether it was set.
    pub(super) fn test_set(&mut self, i: u32) -> bool {
        let w = &mut self.0[i as usize / 64];
        let was = *w >> (i % 64) & 1 == 1;
        *w |= 1 << (i % 64);
        was
    }
    pub(super) fn clear(&mut self, i: u32) {
        self.0[i as usize / 64] &= !(1 << (i % 64));
    }
    pub(super) fn clear_all(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }
    /// Appends the set items to `out`, ascending, and clears them.
    pub(super) fn drain_into(&mut self, out: &mut Vec<u32>) {
        for (j, w) in self.0.iter_mut().enumerate() {
            while *w != 0 {
                out.push(j as u32 * 64 + w.trailing_zeros());
                *w &= *w - 1;
            }
        }
    }
}

/// Zipf item popularity: popularity rank `r` (0-based) has weight `(r + 1)^-s`, and the ranks
/// are laid over the items in a seeded random order.
pub(super) struct Popularity {
    /// Item of each popularity rank.
    order: Vec<u32>,
    /// Walker's alias table over the ranks: rank `r` keeps a draw with probability
    /// `keep[r] / 2^32`, else hands it to `alias[r]`.
    keep: Vec<u64>,
    alias: Vec<u32>,
}

impl Popularity {
    /// `items` items, exponent `s`, the ranks laid over the items in an order drawn from
    /// `order_rng`.
    pub(super) fn new(items: u32, s: f64, order_rng: &mut ChaCha8Rng) -> Self {
        let n = items as usize;
        let mut order: Vec<u32> = (0..items).collect();
        order.shuffle(order_rng);
        let w: Vec<f64> = (0..n).map(|r| ((r + 1) as f64).powf(-s)).collect();
        let sum: f64 = w.iter().sum();
        // Vose's method: scaled weights (mean 1) split into the ones below and above 1.
        let mut p: Vec<f64> = w.iter().map(|x| x * n as f64 / sum).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&r| p[r] < 1.0);
        let mut keep = vec![1u64 << 32; n];
        let mut alias: Vec<u32> = (0..items).collect();
        while let (Some(&a), Some(&b)) = (small.last(), large.last()) {
            small.pop();
            keep[a] = (p[a] * (1u64 << 32) as f64) as u64;
            alias[a] = b as u32;
            p[b] -= 1.0 - p[a];
            if p[b] < 1.0 {
                large.pop();
                small.push(b);
            }
        }
        Popularity { order, keep, alias }
    }

    pub(super) fn sample(&self, rng: &mut ChaCha8Rng) -> u32 {
        let x = rng.next_u64();
        let r = (((x >> 32) * self.keep.len() as u64) >> 32) as usize;
        let r = if (x & 0xFFFF_FFFF) < self.keep[r] {
            r
        } else {
            self.alias[r] as usize
        };
        self.order[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn alias_table_follows_the_weights() {
        let p = Popularity::new(4, 1.0, &mut ChaCha8Rng::seed_from_u64(3));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut n = [0u32; 4];
        for _ in 0..100_000 {
            n[p.sample(&mut rng) as usize] += 1;
        }
        // Weights 1, 1/2, 1/3, 1/4 over the ranks, in the seeded order of the items.
        let h = 1.0 + 0.5 + 1.0 / 3.0 + 0.25;
        for (r, &item) in p.order.iter().enumerate() {
            let want = 100_000.0 / (r + 1) as f64 / h;
            let got = f64::from(n[item as usize]);
            assert!(
                (got - want).abs() < 0.03 * want,
                "rank {r}: {got} vs {want}"
            );
        }
    }
}
