//! A conflict-free schedule of one MF worker's ratings for many concurrent SGD lanes (a GPU's
//! warps): no two lanes ever update the same user row or item row at the same time.
//!
//! Whole-grid Hogwild (one warp per rating over the whole device) loses almost every update when
//! there are few item rows: on the built-in set's 1,000 items, hundreds of warps write the same
//! row at once. FPSG/LIBMF (Chin et al. 2015) and cuMF_SGD's wavefront update avoid that by
//! cutting the rating matrix into a grid of blocks. Here:
//!
//! - The worker's users are dealt into `P` **user bands** and the items into `P` **item bands**,
//!   balanced by rating counts (largest first into the lightest band, so a band holds at most
//!   the mean plus one user's or item's ratings). Block `(p, q)` holds the ratings whose user is
//!   in band `p` and whose item is in band `q`; [`WaveSchedule::arrange`] moves the ratings into
//!   block order once, user then item ascending inside a block.
//! - A **wave** is a shift `s`: lane `p` processes block `(p, (p + s) mod P)`. The `P` blocks of a
//!   wave share no user band and no item band, so the lanes of a wave never touch the same row.
//!   An epoch runs the `P` shifts once each, in an order drawn from the epoch's key
//!   ([`WaveSchedule::epoch_waves`]), so every rating is visited once an epoch.
//! - Lane `p` owns user band `p` for the whole job. On the device a lane starts wave `t` once
//!   the lane that held its item band in wave `t - 1` has finished that wave
//!   ([`WaveSchedule::waits_on`]); the chain of such waits serialises every item band in wave
//!   order, so lanes run ahead of each other without a barrier and without a conflict.
//!
//! Because the blocks of a wave are independent, running the waves' blocks one after another on
//! one thread ([`WaveSchedule::runs`]) computes exactly what the lanes compute concurrently (up
//! to the order of a dot product's sum): that is the CPU oracle of a device run, and why a run
//! is deterministic whatever the lanes' timing.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::data::Rating;
use crate::seed::{mix64, ClockKey};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Fewest ratings a block should average: below this a lane spends more time waiting for its
/// neighbour than computing, so small workers get fewer bands.
pub const MIN_BLOCK_RATINGS: usize = 16;

/// One worker's ratings cut into `bands x bands` blocks, run in conflict-free waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveSchedule {
    bands: usize,
    /// Band of each local user.
    user_band: Vec<u32>,
    /// Band of each item.
    item_band: Vec<u32>,
    /// Where block `(p, q)` (index `p * bands + q`) starts in the arranged ratings;
    /// `bands * bands + 1` entries.
    starts: Vec<usize>,
    /// Ratings in the wave of each shift.
    per_wave: Vec<usize>,
}

/// Bands for `ratings` ratings of `users` users and `items` items on a device that runs `lanes`
/// lanes at once: as many as the lanes, users and items allow, and few enough that a block
/// averages [`MIN_BLOCK_RATINGS`]. At least 1.
pub fn bands_for(ratings: usize, users: u32, items: u32, lanes: usize) -> usize {
    bands_with(ratings, users, items, lanes, MIN_BLOCK_RATINGS)
}

/// [`bands_for`] with blocks of `min_block` ratings on average (benchmarks try several).
pub fn bands_with(ratings: usize, users: u32, items: u32, lanes: usize, min_block: usize) -> usize {
    let by_size = ((ratings / min_block.max(1)) as f64).sqrt().floor() as usize;
    lanes
        .min(users as usize)
        .min(items as usize)
        .min(by_size)
        .max(1)
}

/// Deals `counts` (one per id) into `bands` bands, heaviest id first into the lightest band
/// (ties to the lower band): each band's total is at most the mean plus the largest count.
fn deal(counts: &[u64], bands: usize) -> Vec<u32> {
    let mut ids: Vec<usize> = (0..counts.len()).collect();
    ids.sort_by_key(|&i| (Reverse(counts[i]), i));
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> =
        (0..bands as u32).map(|b| Reverse((0, b))).collect();
    let mut band = vec![0u32; counts.len()];
    for i in ids {
        let Reverse((load, b)) = heap.pop().expect("bands >= 1");
        band[i] = b;
        heap.push(Reverse((load + counts[i], b)));
    }
    band
}

impl WaveSchedule {
    /// Cuts `ratings` (local users `< users`, items `< items`) into `bands x bands` blocks
    /// balanced by rating counts. `bands` is clamped to `1..=min(users, items)`.
    pub fn new(ratings: &[Rating], users: u32, items: u32, bands: usize) -> WaveSchedule {
        let bands = bands.min(users as usize).min(items as usize).max(1);
        let (mut per_user, mut per_item) = (vec![0u64; users as usize], vec![0u64; items as usize]);
        for r in ratings {
            per_user[r.user as usize] += 1;
            per_item[r.item as usize] += 1;
        }
        let user_band = deal(&per_user, bands);
        let item_band = deal(&per_item, bands);
        let mut starts = vec![0usize; bands * bands + 1];
        let mut s = WaveSchedule {
            bands,
            user_band,
            item_band,
            starts: Vec::new(),
            per_wave: vec![0; bands],
        };
        for r in ratings {
            starts[s.block_of(r) + 1] += 1;
        }
        for b in 0..bands * bands {
            starts[b + 1] += starts[b];
        }
        s.starts = starts;
        for p in 0..bands {
            for q in 0..bands {
                let (lo, hi) = s.block(p, q);
                s.per_wave[(q + bands - p) % bands] += hi - lo;
            }
        }
        s
    }

    /// The block index `p * bands + q` of a rating.
    fn block_of(&self, r: &Rating) -> usize {
        self.user_band[r.user as usize] as usize * self.bands
            + self.item_band[r.item as usize] as usize
    }

    /// Moves the ratings into block order (user then item ascending inside a block), the order
    /// [`Self::block`] indexes: a counting sort into the blocks, then a sort of each (small)
    /// block, so a hundred million ratings arrange in about a second. `ratings` must be the
    /// ratings the schedule was made from.
    pub fn arrange(&self, ratings: &mut Vec<Rating>) {
        let mut next = self.starts.clone();
        let mut out = vec![
            Rating {
                user: 0,
                item: 0,
                value: 0.0
            };
            ratings.len()
        ];
        for r in ratings.iter() {
            let b = self.block_of(r);
            out[next[b]] = *r;
            next[b] += 1;
        }
        for b in self.starts.windows(2) {
            out[b[0]..b[1]].sort_unstable_by_key(|r| (r.user, r.item, r.value.to_bits()));
        }
        *ratings = out;
    }

    /// Bands per dimension (`P`): lanes, and waves per epoch.
    pub fn bands(&self) -> usize {
        self.bands
    }

    /// Where each block starts in the arranged ratings (`P * P + 1` entries, block `p * P + q`).
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }

    /// The arranged ratings' range of block `(p, q)`.
    pub fn block(&self, p: usize, q: usize) -> (usize, usize) {
        let b = p * self.bands + q;
        (self.starts[b], self.starts[b + 1])
    }

    /// The user band of local user `u`.
    pub fn user_band(&self, u: u32) -> u32 {
        self.user_band[u as usize]
    }

    /// The item band of item `i`.
    pub fn item_band(&self, i: u32) -> u32 {
        self.item_band[i as usize]
    }

    /// The item band lane `p` works on in the wave of shift `s`.
    pub fn item_band_of(&self, p: usize, shift: u32) -> usize {
        (p + shift as usize) % self.bands
    }

    /// The lane that held lane `p`'s item band of wave `shift` in the wave before, of shift
    /// `before`: the lane `p` waits for.
    pub fn waits_on(&self, p: usize, shift: u32, before: u32) -> usize {
        let q = self.item_band_of(p, shift);
        (q + self.bands - before as usize % self.bands) % self.bands
    }

    /// The epoch's waves: every shift `0..P` once, in an order drawn from `key`.
    pub fn epoch_waves(&self, key: ClockKey) -> Vec<u32> {
        let s = mix64(mix64(key.seed ^ 0x3A7E) ^ u64::from(key.worker));
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(s ^ u64::from(key.clock)));
        let mut waves: Vec<u32> = (0..self.bands as u32).collect();
        waves.shuffle(&mut rng);
        waves
    }

    /// The waves `shifts` as runs of the arranged ratings, one thread's replay of the lanes:
    /// wave by wave, lane `0..P` in order inside a wave. Empty blocks are left out.
    pub fn runs(&self, shifts: &[u32]) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(shifts.len() * self.bands);
        for &s in shifts {
            for p in 0..self.bands {
                let (lo, hi) = self.block(p, self.item_band_of(p, s));
                if lo < hi {
                    out.push((lo, hi));
                }
            }
        }
        out
    }

    /// Ratings in the waves `shifts`.
    pub fn ratings_in(&self, shifts: &[u32]) -> usize {
        shifts
            .iter()
            .map(|&s| self.per_wave[s as usize % self.bands])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use std::collections::HashSet;

    fn key(clock: u32) -> ClockKey {
        ClockKey {
            seed: 7,
            worker: 1,
            clock,
        }
    }

    /// Ratings with a skewed item popularity (item i drawn with weight ~ 1/(i+1)).
    fn skewed(n: usize, users: u32, items: u32, seed: u64) -> Vec<Rating> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let x: f64 = rng.gen();
                let item = ((items as f64).powf(x) - 1.0) as u32;
                Rating {
                    user: rng.gen_range(0..users),
                    item: item.min(items - 1),
                    value: rng.gen(),
                }
            })
            .collect()
    }

    #[test]
    fn no_two_blocks_of_a_wave_share_a_row() {
        let (users, items) = (300, 40);
        let mut ratings = skewed(20_000, users, items, 1);
        let s = WaveSchedule::new(&ratings, users, items, 16);
        assert_eq!(s.bands(), 16);
        s.arrange(&mut ratings);
        for shift in 0..16u32 {
            let (mut us, mut is) = (HashSet::new(), HashSet::new());
            for p in 0..16 {
                let (lo, hi) = s.block(p, s.item_band_of(p, shift));
                let bu: HashSet<u32> = ratings[lo..hi].iter().map(|r| r.user).collect();
                let bi: HashSet<u32> = ratings[lo..hi].iter().map(|r| r.item).collect();
                assert!(bu.iter().all(|u| s.user_band(*u) as usize == p));
                assert!(us.is_disjoint(&bu), "wave {shift}: a user in two blocks");
                assert!(is.is_disjoint(&bi), "wave {shift}: an item in two blocks");
                us.extend(bu);
                is.extend(bi);
            }
        }
    }

    #[test]
    fn each_epoch_visits_every_rating_once() {
        let (users, items) = (50, 30);
        let mut ratings = skewed(3_000, users, items, 2);
        let s = WaveSchedule::new(&ratings, users, items, 8);
        s.arrange(&mut ratings);
        let mut orders = Vec::new();
        for epoch in 0..4 {
            let waves = s.epoch_waves(key(epoch));
            let mut sorted = waves.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..8).collect::<Vec<u32>>());
            let mut seen: Vec<usize> = s.runs(&waves).iter().flat_map(|&(a, b)| a..b).collect();
            assert_eq!(s.ratings_in(&waves), ratings.len());
            seen.sort_unstable();
            assert_eq!(seen, (0..ratings.len()).collect::<Vec<_>>());
            orders.push(waves);
        }
        assert!(orders.windows(2).any(|w| w[0] != w[1]), "waves reshuffle");
        assert_eq!(s.epoch_waves(key(2)), orders[2], "a function of the key");
        // Splitting an epoch's waves over clocks visits the same ratings.
        let (a, b) = orders[0].split_at(3);
        assert_eq!(s.ratings_in(a) + s.ratings_in(b), ratings.len());
    }

    #[test]
    fn bands_are_balanced_by_rating_counts() {
        let (users, items) = (2_000, 500);
        let ratings = skewed(100_000, users, items, 3);
        let s = WaveSchedule::new(&ratings, users, items, 20);
        let (mut ul, mut il) = (vec![0u64; 20], vec![0u64; 20]);
        let (mut pu, mut pi) = (vec![0u64; users as usize], vec![0u64; items as usize]);
        for r in &ratings {
            ul[s.user_band(r.user) as usize] += 1;
            il[s.item_band(r.item) as usize] += 1;
            pu[r.user as usize] += 1;
            pi[r.item as usize] += 1;
        }
        let mean = ratings.len() as u64 / 20;
        let (max_u, max_i) = (*pu.iter().max().unwrap(), *pi.iter().max().unwrap());
        assert!(
            max_i > 10 * (ratings.len() as u64 / u64::from(items)),
            "skewed input"
        );
        for b in 0..20 {
            assert!(
                ul[b] <= mean + max_u,
                "user band {b}: {} > {mean} + {max_u}",
                ul[b]
            );
            assert!(
                il[b] <= mean + max_i,
                "item band {b}: {} > {mean} + {max_i}",
                il[b]
            );
        }
        // Dealt by counts, the bands are far closer than contiguous id ranges would be.
        let spread = il.iter().max().unwrap() - il.iter().min().unwrap();
        assert!(spread <= max_i, "item bands spread {spread}");
    }

    #[test]
    fn a_lane_waits_for_the_previous_holder_of_its_item_band() {
        let ratings: Vec<Rating> = (0..64)
            .map(|k| Rating {
                user: k % 8,
                item: k / 8,
                value: 1.0,
            })
            .collect();
        let s = WaveSchedule::new(&ratings, 8, 8, 8);
        let waves = s.epoch_waves(key(0));
        for w in waves.windows(2) {
            for p in 0..8 {
                let prev = s.waits_on(p, w[1], w[0]);
                assert_eq!(s.item_band_of(prev, w[0]), s.item_band_of(p, w[1]));
            }
        }
    }

    #[test]
    fn bands_follow_the_device_and_the_data() {
        assert_eq!(bands_for(100_000_000, 480_189, 17_770, 2_112), 2_112);
        assert_eq!(bands_for(135_000, 1_000, 1_000, 2_112), 91);
        assert_eq!(bands_for(10, 5, 5, 100), 1);
        assert_eq!(bands_for(1_000_000, 3, 1_000, 100), 3);
        let one = WaveSchedule::new(&[], 0, 0, 4);
        assert_eq!(one.bands(), 1);
        assert_eq!(one.runs(&[0]), Vec::new());
    }
}
