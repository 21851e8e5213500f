//! Seed mixing and the per-clock shuffle every application derives its randomness from, so that
//! results depend on (seed, worker, clock) and never on timing or on how data is partitioned.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// SplitMix64's finaliser: a bijection of u64 that scatters nearby inputs.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `words` chained through [`mix64`] from `start`: a check or fingerprint of a sequence, where
/// any change of a word or of their order changes it (almost surely).
pub fn mix_all(start: u64, words: impl IntoIterator<Item = u64>) -> u64 {
    (words.into_iter()).fold(mix64(start), |h, x| mix64(h ^ x))
}

/// The RNG of item `index` of the stream `tag` under `seed` (a chunk of ratings, a document, a
/// sample): items drawn from their own streams can be drawn in any order, on any thread, by
/// whichever worker needs them.
pub fn stream_rng(seed: u64, tag: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix64(mix64(seed ^ tag) ^ index))
}

/// Identifies one worker clock for the deterministic shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockKey {
    /// Job-wide shuffle seed.
    pub seed: u64,
    /// Global worker index.
    pub worker: u32,
    /// 0-based clock (or epoch) number.
    pub clock: u32,
}

/// The order in which a worker visits its `len` local examples on a clock: a permutation of
/// `0..len` from a ChaCha8 RNG seeded by `(seed, worker, clock)`. Deterministic and independent
/// of timing.
pub fn epoch_order(len: usize, key: ClockKey) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    let s = mix64(mix64(mix64(key.seed) ^ u64::from(key.worker)) ^ u64::from(key.clock));
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(s));
    idx
}
