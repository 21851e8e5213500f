//! The synthetic low-rank rating generator: true factors, ratings on distinct (user, item)
//! pairs, uniform or Zipf item popularity, generated in parallel over users.

use std::collections::HashSet;
use std::mem::MaybeUninit;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use super::popularity::{Bits, Popularity};
use super::{Rating, RatingSet};
use crate::par;
use crate::seed::stream_rng;

/// Parameters of the synthetic low-rank generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    /// Number of users.
    pub users: u32,
    /// Number of items.
    pub items: u32,
    /// Number of distinct (user, item) ratings. Clamped to
    /// `[max(users, items), users * items]` so that every user and item is covered.
    pub ratings: u64,
    /// Rank of the true factors.
    pub rank: u32,
    /// Standard deviation of the additive Gaussian noise.
    pub noise_sigma: f32,
    /// Exponent `s` of the items' Zipf popularity: the item of popularity rank `r` (1-based)
    /// is drawn with weight `r^-s`. 0 (or negative, or NaN) is uniform popularity.
    #[serde(default)]
    pub item_zipf: f64,
    /// RNG seed; the output is a pure function of the spec.
    pub seed: u64,
}

/// Number of users of the built-in dataset.
pub const BUILTIN_USERS: u32 = 2_000;
/// Number of items of the built-in dataset.
pub const BUILTIN_ITEMS: u32 = 1_000;
/// Number of ratings of the built-in dataset (15% density).
///
/// The model has `(2000 + 1000) * 8 = 24k` parameters; with the default
/// test fraction there are 270k training ratings (~11 per parameter), so the
/// expected test-RMSE floor is about `0.1 * sqrt(1 + 24k/270k) ≈ 0.104`.
pub const BUILTIN_RATINGS: u64 = 300_000;
/// True rank of the built-in dataset.
pub const BUILTIN_RANK: u32 = 8;
/// Noise standard deviation of the built-in dataset.
pub const BUILTIN_NOISE_SIGMA: f32 = 0.1;

/// Sets of uniform popularity up to this many ratings are drawn by the original one-thread
/// sampler (uniform over all pairs), so the built-in set and every small set are the data they
/// always were; larger sets, and every Zipf set, are drawn in parallel over users.
pub const SEQUENTIAL_MAX_RATINGS: u64 = 1_000_000;
/// Users per chunk of the parallel generator (a unit of work; each user has its own RNG).
const USERS_PER_CHUNK: u32 = 1024;
/// Items per chunk of the item factors.
const ITEMS_PER_CHUNK: u32 = 4096;

impl SyntheticSpec {
    /// The built-in dataset: 2,000 users x 1,000 items, 300,000 distinct
    /// ratings (uniform item popularity), true rank 8, noise sigma 0.1.
    pub fn default_builtin(seed: u64) -> Self {
        SyntheticSpec {
            users: BUILTIN_USERS,
            items: BUILTIN_ITEMS,
            ratings: BUILTIN_RATINGS,
            rank: BUILTIN_RANK,
            noise_sigma: BUILTIN_NOISE_SIGMA,
            item_zipf: 0.0,
            seed,
        }
    }

    /// The number of ratings [`synthetic`] makes: `ratings` clamped to
    /// `[max(users, items), users * items]` (0 when there are no users or items).
    pub fn target(&self) -> u64 {
        let total = u64::from(self.users) * u64::from(self.items);
        if total == 0 {
            return 0;
        }
        let cover = u64::from(self.users.max(self.items));
        self.ratings.clamp(cover, total)
    }

    /// The Zipf exponent in use: `item_zipf` if it is a positive number, else 0.
    fn zipf(&self) -> f64 {
        if self.item_zipf.is_finite() && self.item_zipf > 0.0 {
            self.item_zipf
        } else {
            0.0
        }
    }
}

/// True low-rank factors U (users x rank), V (items x rank) + Gaussian
/// noise(noise_sigma); distinct (user, item) pairs; every user and item has
/// ratings. Deterministic: a pure function of the spec, whatever the machine's
/// thread count. The output is sorted by `(user, item)`.
///
/// Factor entries are i.i.d. `N(0, rank^(-1/4))`, so the noiseless rating
/// `U_u · V_i` has mean 0 and variance 1. Every set has the cover pairs
/// `(k % users, k % items)` for `k < max(users, items)`, which reach every user
/// and every item. The other pairs are drawn one of two ways:
///
/// - uniform popularity and at most [`SEQUENTIAL_MAX_RATINGS`] ratings (the built-in set):
///   one RNG stream, pairs uniform over all pairs without replacement, so a user's count
///   varies;
/// - otherwise, in parallel over chunks of users (each user its own RNG, seeded by the seed
///   and the user's id, so a worker can draw its own users alone: [`synthetic_users`]):
///   every user gets `ratings / users` ratings (the first
///   `ratings % users` users one more), on distinct items drawn uniformly or, with
///   `item_zipf > 0`, by Zipf popularity over a seeded random order of the items (so the
///   popular items are scattered over the ids). A user rates an item at most once, so the
///   most popular items saturate at one rating per user; a user who rates more than half the
///   items, or whose draws stall on the few items with weight, gets the rest uniformly.
///
/// A degenerate spec (`users == 0` or `items == 0`) yields an empty set
/// (with `rank == 0`, all values are pure noise).
pub fn synthetic(spec: &SyntheticSpec) -> RatingSet {
    synthetic_threads(spec, par::threads())
}

/// [`synthetic`] on `threads` threads (the output does not depend on them).
pub fn synthetic_threads(spec: &SyntheticSpec, threads: usize) -> RatingSet {
    synthetic_users(spec, threads, |_| true)
}

/// The ratings of [`synthetic`] whose user `keep` accepts, in the same order: what a worker
/// that owns those users needs. The parallel generator draws only those users; the
/// sequential one (small sets) draws the whole set and filters it.
pub fn synthetic_users(
    spec: &SyntheticSpec,
    threads: usize,
    keep: impl Fn(u32) -> bool + Sync,
) -> RatingSet {
    if spec.users == 0 || spec.items == 0 {
        return RatingSet {
            ratings: Vec::new(),
            num_users: spec.users,
            num_items: spec.items,
        };
    }
    if spec.zipf() == 0.0 && spec.target() <= SEQUENTIAL_MAX_RATINGS {
        let mut set = sequential(spec);
        set.ratings.retain(|r| keep(r.user));
        set
    } else {
        by_users(spec, threads, keep)
    }
}

/// The law of a factor entry: `N(0, rank^(-1/4))` (`N(0, 1)` at rank 0).
fn factor_law(rank: usize) -> Normal<f64> {
    let std = if rank > 0 {
        (rank as f64).powf(-0.25)
    } else {
        1.0
    };
    Normal::new(0.0f64, std).expect("finite std")
}

/// The law of the noise: `N(0, noise_sigma)`, no noise if sigma is not a finite number >= 0.
fn noise_law(spec: &SyntheticSpec) -> Normal<f64> {
    let sigma = f64::from(spec.noise_sigma.max(0.0));
    Normal::new(0.0f64, if sigma.is_finite() { sigma } else { 0.0 }).expect("std")
}

/// The original generator: one RNG stream for the factors, the pairs and the noise.
fn sequential(spec: &SyntheticSpec) -> RatingSet {
    let users = spec.users;
    let items = spec.items;
    let rank = spec.rank as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let factor = factor_law(rank);
    let u: Vec<f64> = (0..users as usize * rank)
        .map(|_| factor.sample(&mut rng))
        .collect();
    let v: Vec<f64> = (0..items as usize * rank)
        .map(|_| factor.sample(&mut rng))
        .collect();

    let total = users as u64 * items as u64;
    let cover = users.max(items) as u64;
    let target = spec.ratings.clamp(cover, total);

    let mut seen: HashSet<(u32, u32)> = HashSet::with_capacity(target as usize);
    let mut pairs: Vec<(u32, u32)> = Vec::with_capacity(target as usize);
    for k in 0..cover {
        let p = ((k % users as u64) as u32, (k % items as u64) as u32);
        if seen.insert(p) {
            pairs.push(p);
        }
    }
    if target * 2 > total {
        // Dense regime: enumerate the remaining pairs and take a random subset.
        let mut rest: Vec<(u32, u32)> = (0..users)
            .flat_map(|a| (0..items).map(move |b| (a, b)))
            .filter(|p| !seen.contains(p))
            .collect();
        rest.shuffle(&mut rng);
        let need = (target as usize).saturating_sub(pairs.len());
        pairs.extend(rest.into_iter().take(need));
    } else {
        while (pairs.len() as u64) < target {
            let p = (rng.gen_range(0..users), rng.gen_range(0..items));
            if seen.insert(p) {
                pairs.push(p);
            }
        }
    }
    pairs.sort_unstable();

    let noise = noise_law(spec);
    let ratings = pairs
        .into_iter()
        .map(|(a, b)| {
            let ua = &u[a as usize * rank..(a as usize + 1) * rank];
            let vb = &v[b as usize * rank..(b as usize + 1) * rank];
            let clean: f64 = ua.iter().zip(vb).map(|(x, y)| x * y).sum();
            Rating {
                user: a,
                item: b,
                value: (clean + noise.sample(&mut rng)) as f32,
            }
        })
        .collect();
    RatingSet {
        ratings,
        num_users: users,
        num_items: items,
    }
}

const ITEM_FACTORS: u64 = 0x17E3_FAC7;
const USER_STREAMS: u64 = 0x05E2_5EED;
const ITEM_ORDER: u64 = 0x17E3_0D3E;

/// What every user chunk reads.
struct Shared {
    users: u64,
    items: u32,
    /// `max(users, items)`: the cover pairs are `(k % users, k % items)` for `k < cover`.
    cover: u64,
    /// Every user has `base` ratings, the first `extra` users one more.
    base: u64,
    extra: u64,
    rank: usize,
    /// Item factors, `items x rank`.
    v: Vec<f64>,
    popularity: Option<Popularity>,
    factor: Normal<f64>,
    noise: Normal<f64>,
}

impl Shared {
    /// Where user `u`'s ratings start.
    fn start(&self, u: u64) -> u64 {
        u * self.base + u.min(self.extra)
    }
}

/// The parallel generator (see [`synthetic`]), of the users `keep` accepts.
fn by_users(spec: &SyntheticSpec, threads: usize, keep: impl Fn(u32) -> bool + Sync) -> RatingSet {
    let (users, items) = (spec.users, spec.items);
    let rank = spec.rank as usize;
    let factor = factor_law(rank);
    let target = spec.target();
    let item_chunks = items.div_ceil(ITEMS_PER_CHUNK) as usize;
    let v = par::map(item_chunks, threads, |c| {
        let mut rng = stream_rng(spec.seed, ITEM_FACTORS, c as u64);
        let n = (items - c as u32 * ITEMS_PER_CHUNK).min(ITEMS_PER_CHUNK) as usize;
        (0..n * rank)
            .map(|_| factor.sample(&mut rng))
            .collect::<Vec<f64>>()
    })
    .concat();
    let shared = Shared {
        users: users.into(),
        items,
        cover: users.max(items).into(),
        base: target / u64::from(users),
        extra: target % u64::from(users),
        rank,
        v,
        popularity: (spec.zipf() > 0.0).then(|| {
            Popularity::new(
                items,
                spec.zipf(),
                &mut stream_rng(spec.seed, ITEM_ORDER, 0),
            )
        }),
        factor,
        noise: noise_law(spec),
    };
    // Where each chunk's kept users' ratings end.
    let chunks = users.div_ceil(USERS_PER_CHUNK);
    let mut ends: Vec<usize> = Vec::with_capacity(chunks as usize);
    let mut n = 0usize;
    for c in 0..chunks {
        let lo = c * USERS_PER_CHUNK;
        for u in lo..(lo + USERS_PER_CHUNK).min(users) {
            if keep(u) {
                n += (shared.start(u64::from(u) + 1) - shared.start(u.into())) as usize;
            }
        }
        ends.push(n);
    }
    let mut ratings: Vec<Rating> = Vec::with_capacity(n);
    par::fill(
        &mut ratings.spare_capacity_mut()[..n],
        &ends,
        threads,
        |c, out| {
            let lo = c as u32 * USERS_PER_CHUNK;
            let hi = (lo + USERS_PER_CHUNK).min(users);
            user_chunk(&shared, spec.seed, (lo..hi).filter(|u| keep(*u)), out);
        },
    );
    // SAFETY: `fill` handed every element of `ratings[..n]` to exactly one `user_chunk`, which
    // wrote each element of its part (it asserts so; a panic there propagates out of `fill`
    // before this line).
    unsafe { ratings.set_len(n) };
    RatingSet {
        ratings,
        num_users: users,
        num_items: items,
    }
}

/// Writes the ratings of `users` into `out` (exactly their count), each user's drawn from
/// its own stream of `seed`.
fn user_chunk(
    s: &Shared,
    seed: u64,
    users: impl Iterator<Item = u32>,
    out: &mut [MaybeUninit<Rating>],
) {
    let mut taken = Bits::new(s.items);
    let mut mine: Vec<u32> = Vec::new();
    let mut row = vec![0.0f64; s.rank];
    let mut at = 0;
    for u in users {
        let rng = &mut stream_rng(seed, USER_STREAMS, u64::from(u));
        row.iter_mut().for_each(|x| *x = s.factor.sample(rng));
        let k = s.start(u64::from(u) + 1) - s.start(u.into());
        pick_items(s, u, k as usize, rng, &mut taken, &mut mine);
        for &i in &mine {
            let vi = &s.v[i as usize * s.rank..(i as usize + 1) * s.rank];
            let clean: f64 = row.iter().zip(vi).map(|(x, y)| x * y).sum();
            out[at].write(Rating {
                user: u,
                item: i,
                value: (clean + s.noise.sample(rng)) as f32,
            });
            at += 1;
        }
    }
    assert_eq!(at, out.len(), "a user chunk wrote all its ratings");
}

/// `k` distinct items of user `u` into `mine`, ascending: the user's cover items, then
/// popularity (or uniform) draws. `taken` is all clear on entry and on return.
fn pick_items(
    s: &Shared,
    u: u32,
    k: usize,
    rng: &mut ChaCha8Rng,
    taken: &mut Bits,
    mine: &mut Vec<u32>,
) {
    let items = s.items;
    mine.clear();
    let mut c = u64::from(u);
    while c < s.cover {
        let i = (c % u64::from(items)) as u32;
        if !taken.test_set(i) {
            mine.push(i);
        }
        c += s.users;
    }
    if 2 * k > items as usize {
        // Dense: leave out `items - k` uniform items that are not cover items.
        let mut left = items as usize - k;
        while left > 0 {
            if !taken.test_set(rng.gen_range(0..items)) {
                left -= 1;
            }
        }
        mine.extend((0..items).filter(|&i| !taken.get(i)));
        taken.clear_all();
        mine.sort_unstable();
    } else {
        if let Some(p) = &s.popularity {
            // Enough draws for the user's count unless the popular items are nearly all taken.
            let mut budget = 4 * k + 64;
            while mine.len() < k && budget > 0 {
                budget -= 1;
                let i = p.sample(rng);
                if !taken.test_set(i) {
                    mine.push(i);
                }
            }
        }
        while mine.len() < k {
            let i = rng.gen_range(0..items);
            if !taken.test_set(i) {
                mine.push(i);
            }
        }
        if (items as usize).div_ceil(64) <= 4 * k {
            // Few words per item drawn: read the set off the bits, ascending (no sort).
            mine.clear();
            taken.drain_into(mine);
        } else {
            mine.iter().for_each(|&i| taken.clear(i));
            mine.sort_unstable();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(users: u32, items: u32, ratings: u64, item_zipf: f64) -> SyntheticSpec {
        SyntheticSpec {
            users,
            items,
            ratings,
            rank: 4,
            noise_sigma: 0.1,
            item_zipf,
            seed: 7,
        }
    }

    /// Distinct pairs, sorted, every user and item rated, balanced user counts.
    fn check(set: &RatingSet, spec: &SyntheticSpec) {
        assert_eq!(set.ratings.len() as u64, spec.target());
        assert!(set
            .ratings
            .windows(2)
            .all(|w| (w[0].user, w[0].item) < (w[1].user, w[1].item)));
        let mut per_user = vec![0u64; spec.users as usize];
        let mut item_seen = vec![false; spec.items as usize];
        for r in &set.ratings {
            assert!(r.value.is_finite());
            per_user[r.user as usize] += 1;
            item_seen[r.item as usize] = true;
        }
        let base = spec.target() / u64::from(spec.users);
        assert!(per_user.iter().all(|&n| n == base || n == base + 1));
        assert!(item_seen.iter().all(|&s| s), "every item has ratings");
    }

    #[test]
    fn parallel_output_is_a_function_of_the_spec_alone() {
        for s in [
            spec(3_000, 500, 40_000, 0.0),
            spec(2_100, 700, 30_000, 0.9),
            spec(40, 3_000, 5_000, 1.2),
            spec(1_500, 30, 30_000, 1.0), // dense users
        ] {
            let all = |_: u32| true;
            let one = by_users(&s, 1, all);
            check(&one, &s);
            assert_eq!(by_users(&s, 3, all).ratings, one.ratings, "{s:?}");
            assert_ne!(
                by_users(&SyntheticSpec { seed: 8, ..s }, 2, all).ratings,
                one.ratings
            );
        }
    }

    /// A worker draws its own users alone, and gets exactly their ratings of the whole set.
    #[test]
    fn a_users_subset_is_the_whole_sets_ratings_of_those_users() {
        for s in [
            spec(3_000, 500, 40_000, 0.0),
            spec(2_100, 700, 30_000, 0.9),
            spec(1_500, 30, 30_000, 1.0),
            spec(300, 120, 6_000, 0.0), // the sequential sampler, filtered
        ] {
            let whole = synthetic_threads(&s, 2);
            for (workers, w) in [(3, 0), (3, 2), (8, 5)] {
                let mine = |u: u32| u % workers == w;
                let part = synthetic_users(&s, 2, mine);
                let want: Vec<Rating> = whole
                    .ratings
                    .iter()
                    .filter(|r| mine(r.user))
                    .copied()
                    .collect();
                assert!(!want.is_empty());
                assert_eq!(part.ratings, want, "{s:?}, worker {w} of {workers}");
                assert_eq!((part.num_users, part.num_items), (s.users, s.items));
            }
        }
    }

    #[test]
    fn small_uniform_sets_keep_the_sequential_sampler() {
        let s = spec(300, 120, 6_000, 0.0);
        assert_eq!(synthetic_threads(&s, 4).ratings, sequential(&s).ratings);
        let z = SyntheticSpec {
            item_zipf: 1.0,
            ..s
        };
        assert_eq!(
            synthetic_threads(&z, 4).ratings,
            by_users(&z, 1, |_| true).ratings
        );
        let nan = SyntheticSpec {
            item_zipf: f64::NAN,
            ..s
        };
        assert_eq!(synthetic_threads(&nan, 2).ratings, sequential(&s).ratings);
    }

    #[test]
    fn zipf_puts_far_more_ratings_on_the_head() {
        // Share of the ratings on the top 1% of items (10 of 1,000).
        let head = |zipf: f64| {
            let set = by_users(&spec(2_000, 1_000, 40_000, zipf), 2, |_| true);
            let mut per_item = vec![0u64; 1_000];
            set.ratings
                .iter()
                .for_each(|r| per_item[r.item as usize] += 1);
            per_item.sort_unstable_by(|a, b| b.cmp(a));
            per_item[..10].iter().sum::<u64>() as f64 / set.ratings.len() as f64
        };
        let (uniform, zipf) = (head(0.0), head(1.0));
        assert!(uniform < 0.02, "uniform head {uniform}");
        assert!(zipf > 0.2, "Zipf head {zipf}");
    }
}
