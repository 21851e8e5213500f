//! Matrix factorisation trained with SGD on a parameter server.
//!
//! # Schedule
//! Ratings are split by user across `W` workers ([`worker_shard`]); user
//! factors stay local on each worker ([`init_user_factors`]). Item factors
//! live in a parameter-server table (rows = items, width = rank, `add`
//! update rule), initialised by the server as i.i.d.
//! `Normal(0, ITEM_INIT_STD)` (see [`init_item_factors`]). On every clock
//! `c` a worker
//!
//! 1. reads a (possibly stale) copy of ALL item rows into a dense local
//!    matrix `items_read`,
//! 2. runs one SGD epoch ([`MfCompute::sgd_epoch`]) over its own training
//!    ratings, in the order given by [`epoch_order`] (a shuffle seeded by
//!    `(seed, global worker id, clock)`, see [`ClockKey`]), with learning rate
//!    [`Hyper::lr_at`]`(c)`, updating its user factors and the local item copy,
//! 3. pushes `delta = local_items_after - items_read`, which the server sums
//!    across workers.
//!
//! [`worker_clock`] performs steps 2–3 on an already-read item copy.
//!
//! Backends: [`CpuMf`] (the oracle) and [`FastMf`] (vectorised kernel and
//! FPSG-style blocked multi-thread SGD).

mod app;
mod args;
mod compute;
mod data;
mod factors;
mod fast;
mod order;
mod popularity;
mod ratings;
mod resident;
mod session;
mod synth;
mod waves;

pub use app::{MfApp, MfClock, MfFacts, MfFinal, MfSettings, ITEMS};
pub use args::{MfArgs, MfDefaults, REAL_DATA, SYNTHETIC};
pub use resident::{
    held_bytes, mf_engine_encodes, HostResident, MfResident, ResidentSetup, Split, Traffic,
};
pub use session::MfSession;
pub use waves::{bands_for, bands_with, WaveSchedule, MIN_BLOCK_RATINGS};

pub use compute::{predict, rmse, squared_error, squared_error_in, CpuMf, Layout, MfCompute};
pub use data::{
    load_ratings, load_train_test, owner_of, parse_ratings, split_train_test,
    split_train_test_owned, worker_cold, worker_shard, worker_shard_owned, ColdRating, Rating,
    RatingFormat, RatingSet, TrainTest, WorkerShard,
};
pub use factors::Factors;
pub use fast::{FastMf, PARALLEL_MIN_RATINGS};
pub use order::{bins_for, cut_runs, BlockLayout, MfOrder, Visiting, MAX_BINS};
pub use synth::{
    synthetic, synthetic_threads, synthetic_users, SyntheticSpec, BUILTIN_ITEMS,
    BUILTIN_NOISE_SIGMA, BUILTIN_RANK, BUILTIN_RATINGS, BUILTIN_USERS, SEQUENTIAL_MAX_RATINGS,
};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::error::ComputeError;
use crate::seed::mix64;
pub use crate::seed::{epoch_order, ClockKey};

/// Recommended fraction of ratings held out for test.
pub const DEFAULT_TEST_FRACTION: f64 = 0.1;

/// Recommended number of clocks (one SGD epoch per clock per worker).
///
/// With [`Hyper::default`], the built-in dataset and 2 workers, BSP reaches
/// test RMSE ≈ 0.106 (noise sigma 0.1, target <= 0.115) by clock 10 and
/// staleness 1 by clock ~15; 20 leaves margin for both.
pub const DEFAULT_CLOCKS: u32 = 20;

/// Recommended standard deviation of the server-side item initialisation
/// `Normal(0, ITEM_INIT_STD)`.
///
/// Small against the true factor scale (`rank^(-1/4)` ≈ 0.59 at rank 8) so
/// the start is near the symmetric saddle but not on it; values 0.1–0.5
/// were measured to converge equally well.
pub const ITEM_INIT_STD: f32 = 0.1;

/// Standard deviation of the worker-side user initialisation used by
/// [`init_user_factors`].
pub const USER_INIT_STD: f32 = 0.1;

/// SGD hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Factor rank (width of the item table).
    pub rank: u32,
    /// Initial learning rate.
    pub lr: f32,
    /// L2 regularisation applied on every per-rating update.
    pub reg: f32,
    /// Learning rate at clock/epoch `e` (0-based) is `lr * lr_decay^e`.
    pub lr_decay: f32,
}

impl Default for Hyper {
    /// The tuned defaults (rank 8) for the built-in dataset: `lr = 0.025`,
    /// `reg = 0.003`, `lr_decay = 0.95`.
    ///
    /// Tuned with 2 workers; also converges with 1, 4 and 8 workers and with
    /// staleness 1. `lr >= 0.04` was measured to go unstable under
    /// staleness 1; the data is plentiful (~11 training ratings per
    /// parameter), so a small `reg` generalises best (`reg = 0.02` stalls at
    /// test RMSE ≈ 0.124).
    fn default() -> Self {
        args::SYNTHETIC.hyper
    }
}

impl Hyper {
    /// Learning rate for 0-based epoch (clock) `epoch`: `lr * lr_decay^epoch`.
    pub fn lr_at(&self, epoch: u32) -> f32 {
        self.lr * self.lr_decay.powi(epoch.min(i32::MAX as u32) as i32)
    }
}

fn init_normal(rng: &mut ChaCha8Rng, out: &mut [f32], std: f32) {
    let std = if std.is_finite() && std > 0.0 {
        std
    } else {
        0.0
    };
    let dist = Normal::new(0.0f32, std).expect("std is finite and >= 0");
    for x in out {
        *x = dist.sample(rng);
    }
}

/// User factors for a worker (`users.len() * rank`, row `i` for `users[i]`),
/// initialised deterministically from `(seed, global user id)` as
/// `Normal(0, USER_INIT_STD)`, so results do not depend on thread timing or
/// on how users are partitioned across workers.
pub fn init_user_factors(users: &[u32], rank: u32, seed: u64) -> Vec<f32> {
    let rank = rank as usize;
    let mut out = vec![0.0f32; users.len() * rank];
    for (row, &u) in out.chunks_exact_mut(rank.max(1)).zip(users) {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(mix64(seed) ^ u64::from(u)));
        init_normal(&mut rng, row, USER_INIT_STD);
    }
    out
}

/// Dense item matrix (`num_items * rank`) with i.i.d. `Normal(0, std)`
/// entries from a seeded RNG — what the server does to initialise the item
/// table (use [`ITEM_INIT_STD`]). Non-finite or negative `std` gives zeros.
pub fn init_item_factors(num_items: u32, rank: u32, std: f32, seed: u64) -> Vec<f32> {
    let mut out = vec![0.0f32; num_items as usize * rank as usize];
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0x17E3_5EED));
    init_normal(&mut rng, &mut out, std);
    out
}

/// Result of one worker clock.
#[derive(Debug, Clone)]
pub struct ClockOutput {
    /// `local_items_after - items_read`, to be pushed with the `add` rule.
    pub delta: Vec<f32>,
    /// Sum of squared training errors measured before each update.
    pub train_sse: f64,
    /// Number of training ratings visited.
    pub train_count: u64,
}

/// One worker clock on an already-read item copy: shuffles `train` with
/// [`epoch_order`]`(train.len(), key)`, runs one
/// [`MfCompute::sgd_epoch`] at learning rate `hyper.lr_at(key.clock)` on a local
/// copy of `items_read` (updating `users` in place) and returns the item
/// delta.
pub fn worker_clock<C: MfCompute + ?Sized>(
    compute: &mut C,
    train: &[Rating],
    users: &mut [f32],
    items_read: &[f32],
    hyper: &Hyper,
    key: ClockKey,
) -> Result<ClockOutput, ComputeError> {
    worker_clock_slice(compute, train, users, items_read, hyper, key, (0, 1))
}

/// [`worker_clock`] over slice `index` of `count` equal slices of the epoch's order, for jobs
/// that split an epoch over several clocks: `key.clock` is then the epoch (it seeds the shuffle
/// and sets the learning rate), and the slices of one epoch together visit every rating once.
pub fn worker_clock_slice<C: MfCompute + ?Sized>(
    compute: &mut C,
    train: &[Rating],
    users: &mut [f32],
    items_read: &[f32],
    hyper: &Hyper,
    key: ClockKey,
    slice: (usize, usize),
) -> Result<ClockOutput, ComputeError> {
    let order = epoch_order(train.len(), key);
    worker_clock_ordered(compute, train, &order, users, items_read, hyper, key, slice)
}

/// [`worker_clock_slice`] with the epoch's visiting `order` given (a permutation of the
/// training ratings' indices, e.g. [`Visiting::epoch`]).
#[allow(clippy::too_many_arguments)]
pub fn worker_clock_ordered<C: MfCompute + ?Sized>(
    compute: &mut C,
    train: &[Rating],
    order: &[usize],
    users: &mut [f32],
    items_read: &[f32],
    hyper: &Hyper,
    key: ClockKey,
    (index, count): (usize, usize),
) -> Result<ClockOutput, ComputeError> {
    let count = count.max(1);
    let index = index.min(count - 1);
    let (from, to) = (
        order.len() * index / count,
        order.len() * (index + 1) / count,
    );
    let order: Vec<Rating> = order[from..to].iter().map(|&i| train[i]).collect();
    let mut local = items_read.to_vec();
    let train_sse = compute.sgd_epoch(
        &order,
        users,
        &mut local,
        hyper.rank as usize,
        hyper.lr_at(key.clock),
        hyper.reg,
    )?;
    for (l, r) in local.iter_mut().zip(items_read) {
        *l -= r;
    }
    Ok(ClockOutput {
        delta: local,
        train_sse,
        train_count: (to - from) as u64,
    })
}
