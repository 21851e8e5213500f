//! The order in which an MF worker visits its training ratings each epoch.
//!
//! SGD needs a different order every epoch, not a fully random one. A fully random order
//! (`random`) touches a new user row and a new item row on nearly every rating, so on sets
//! whose factors exceed the caches every update waits on memory. LIBMF (Chin et al., "A Fast
//! Parallel Stochastic Gradient Method for Matrix Factorization in Shared Memory Systems",
//! 2015) arranges the ratings once, at load, into a grid of blocks of contiguous user and item
//! ranges, sorted by user inside a block, and only picks the blocks in a random order. `blocks`
//! does the same: built once per worker ([`BlockLayout::new`]), then each epoch visits the
//! user bands (rows of blocks) in a fresh order seeded by `(seed, worker, epoch)` and the
//! blocks of a band in a fresh order; inside a block, ratings go user by user (items
//! ascending). A band's user rows stay in cache across its row of blocks, and a block's item
//! rows (a range of `items / bins`) stay in cache across its users.

use super::data::Rating;
use crate::par;
use crate::seed::{epoch_order, mix64, ClockKey};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// LIBMF's default number of bins per dimension; fewer for small workers (see [`bins_for`]).
pub const MAX_BINS: usize = 26;

/// How a worker orders its ratings each epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MfOrder {
    /// A uniform random permutation every epoch.
    Random,
    /// LIBMF's layout: blocks in a random order every epoch, user-major inside a block.
    #[default]
    Blocks,
}

/// Bins per dimension for `ratings` ratings: LIBMF's 26, fewer so that a block holds about a
/// thousand ratings or more on small workers.
pub fn bins_for(ratings: usize) -> usize {
    ((ratings / 1024) as f64)
        .sqrt()
        .floor()
        .clamp(1.0, MAX_BINS as f64) as usize
}

/// The ratings of one worker arranged into `bins x bins` blocks.
#[derive(Debug, Clone)]
pub struct BlockLayout {
    /// Rating indices, block by block; user then item ascending inside a block.
    order: Vec<usize>,
    /// Where each block starts in `order` (`bins * bins + 1` entries; block `band * bins +
    /// column`).
    starts: Vec<usize>,
    bins: usize,
}

impl BlockLayout {
    /// Arranges `ratings` (users `< users`, items `< items`) into `bins x bins` blocks of
    /// contiguous user and item ranges.
    pub fn new(ratings: &[Rating], users: u32, items: u32, bins: usize) -> BlockLayout {
        let bins = bins.max(1) as u64;
        let (u, i) = (u64::from(users.max(1)), u64::from(items.max(1)));
        let block = |r: &Rating| {
            let ub = (u64::from(r.user) * bins / u).min(bins - 1);
            let ib = (u64::from(r.item) * bins / i).min(bins - 1);
            (ub * bins + ib) as usize
        };
        // Ordered by (block, user, item, index): a counting sort by block, then each block
        // sorted on its own (in parallel; already sorted when the ratings come by user and
        // item, as the built-in ones do) - a sort of 100 M indices at once took half a minute.
        let blocks = (bins * bins) as usize;
        let mut starts = vec![0usize; blocks + 1];
        for r in ratings {
            starts[block(r) + 1] += 1;
        }
        for b in 0..blocks {
            starts[b + 1] += starts[b];
        }
        let mut next = starts.clone();
        let mut order = vec![0usize; ratings.len()];
        for (k, r) in ratings.iter().enumerate() {
            let b = block(r);
            order[next[b]] = k;
            next[b] += 1;
        }
        par::fill(&mut order, &starts[1..], par::threads(), |_, part| {
            part.sort_unstable_by_key(|&k| (ratings[k].user, ratings[k].item, k))
        });
        BlockLayout {
            order,
            starts,
            bins: bins as usize,
        }
    }

    /// The epoch's visiting order (indices into the ratings), seeded by `key`: the user bands
    /// (rows of blocks) in a random order, and within a band its blocks in a random order, each
    /// block's ratings in their arranged order. Staying in one band for a row of blocks keeps
    /// its user rows in cache while the item ranges change.
    pub fn epoch(&self, key: ClockKey) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.order.len());
        for (lo, hi) in self.epoch_blocks(key) {
            out.extend_from_slice(&self.order[lo..hi]);
        }
        out
    }

    /// [`Self::epoch`] as runs of `order`: each block's `(start, end)`, in visiting order. After
    /// [`Self::arrange`], a run is a slice of the ratings themselves.
    pub fn epoch_blocks(&self, key: ClockKey) -> Vec<(usize, usize)> {
        let s = mix64(mix64(key.seed ^ 0xB10C) ^ u64::from(key.worker));
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(s ^ u64::from(key.clock)));
        let bins = self.bins;
        let mut bands: Vec<usize> = (0..bins).collect();
        bands.shuffle(&mut rng);
        let mut within: Vec<usize> = (0..bins).collect();
        let mut out = Vec::with_capacity(bins * bins);
        for band in bands {
            within.shuffle(&mut rng);
            for &col in &within {
                let b = band * bins + col;
                out.push((self.starts[b], self.starts[b + 1]));
            }
        }
        out
    }
}

impl BlockLayout {
    /// Moves the ratings into the layout's order once (as LIBMF stores them), so that each
    /// epoch reads every block as one contiguous run; the layout then indexes the moved
    /// ratings.
    pub fn arrange(mut self, ratings: &mut Vec<Rating>) -> BlockLayout {
        *ratings = self.order.iter().map(|&k| ratings[k]).collect();
        self.order = (0..ratings.len()).collect();
        self
    }
}

/// A worker's way of ordering its ratings, built once.
#[derive(Debug, Clone)]
pub enum Visiting {
    Random(usize),
    Blocks(BlockLayout),
}

impl Visiting {
    /// The visiting plan for a worker's training ratings (local users `< users`); with
    /// blocks, the ratings are moved into the block layout ([`BlockLayout::arrange`]).
    pub fn new(order: MfOrder, train: &mut Vec<Rating>, users: u32, items: u32) -> Visiting {
        match order {
            MfOrder::Random => Visiting::Random(train.len()),
            MfOrder::Blocks => {
                let layout = BlockLayout::new(train, users, items, bins_for(train.len()));
                Visiting::Blocks(layout.arrange(train))
            }
        }
    }

    /// The epoch's order: a permutation of the ratings' indices.
    pub fn epoch(&self, key: ClockKey) -> Vec<usize> {
        match self {
            Visiting::Random(n) => epoch_order(*n, key),
            Visiting::Blocks(layout) => layout.epoch(key),
        }
    }

    /// The same order as runs `(start, end)` of the ratings (block by block), when the
    /// ratings were arranged ([`Visiting::new`] does); `None` for a random order, which has no
    /// runs worth the name.
    pub fn epoch_runs(&self, key: ClockKey) -> Option<Vec<(usize, usize)>> {
        match self {
            Visiting::Random(_) => None,
            Visiting::Blocks(layout) => Some(layout.epoch_blocks(key)),
        }
    }
}

/// The part of `runs` (consecutive pieces of one sequence) from its `from`th element to before
/// its `to`th, as runs.
pub fn cut_runs(runs: &[(usize, usize)], from: usize, to: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(lo, hi) in runs {
        let (start, end) = (at, at + (hi - lo));
        at = end;
        let (a, b) = (start.max(from), end.min(to));
        if a < b {
            out.push((lo + (a - start), lo + (b - start)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(user: u32, item: u32) -> Rating {
        Rating {
            user,
            item,
            value: 1.0,
        }
    }

    fn key(clock: u32) -> ClockKey {
        ClockKey {
            seed: 1,
            worker: 0,
            clock,
        }
    }

    #[test]
    fn every_epoch_visits_every_rating_once_block_by_block() {
        // 4 users x 4 items, 2 bins: blocks of users {0,1}/{2,3} x items {0,1}/{2,3}.
        let ratings: Vec<Rating> = (0..4)
            .flat_map(|u| (0..4).map(move |i| r(3 - u, 3 - i)))
            .collect();
        let layout = BlockLayout::new(&ratings, 4, 4, 2);
        let mut orders = Vec::new();
        for c in 0..6 {
            let order = layout.epoch(key(c));
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..16).collect::<Vec<_>>());
            // Four runs of four, each one block, user-major inside.
            for run in order.chunks(4) {
                let rs: Vec<Rating> = run.iter().map(|&k| ratings[k]).collect();
                let (ub, ib) = (rs[0].user / 2, rs[0].item / 2);
                assert!(rs.iter().all(|x| x.user / 2 == ub && x.item / 2 == ib));
                assert!(rs
                    .windows(2)
                    .all(|w| (w[0].user, w[0].item) < (w[1].user, w[1].item)));
            }
            orders.push(order);
        }
        // The block order changes between epochs and is a function of the key.
        assert!(orders.windows(2).any(|w| w[0] != w[1]));
        assert_eq!(layout.epoch(key(3)), orders[3]);
        // Arranged, the ratings lie in layout order and each epoch visits the same ratings.
        let mut moved = ratings.clone();
        let arranged = layout.clone().arrange(&mut moved);
        let visit = |l: &BlockLayout, rs: &[Rating]| -> Vec<(u32, u32)> {
            l.epoch(key(4))
                .iter()
                .map(|&k| (rs[k].user, rs[k].item))
                .collect()
        };
        assert_eq!(visit(&arranged, &moved), visit(&layout, &ratings));
    }

    #[test]
    fn cut_runs_keeps_the_elements_of_a_range() {
        let runs = [(10, 14), (0, 3), (20, 22)];
        let flat: Vec<usize> = runs.iter().flat_map(|&(a, b)| a..b).collect();
        for from in 0..=flat.len() {
            for to in from..=flat.len() {
                let got: Vec<usize> = cut_runs(&runs, from, to)
                    .iter()
                    .flat_map(|&(a, b)| a..b)
                    .collect();
                assert_eq!(got, flat[from..to], "{from}..{to}");
            }
        }
    }

    #[test]
    fn bins_grow_with_the_ratings_up_to_libmfs() {
        assert_eq!(bins_for(0), 1);
        assert_eq!(bins_for(5_000), 2);
        assert_eq!(bins_for(135_000), 11);
        assert_eq!(bins_for(10_000_000), MAX_BINS);
    }

    #[test]
    fn random_visiting_is_the_shuffled_permutation() {
        let v = Visiting::new(MfOrder::Random, &mut vec![r(0, 0); 10], 1, 1);
        assert_eq!(v.epoch(key(2)), epoch_order(10, key(2)));
    }
}
