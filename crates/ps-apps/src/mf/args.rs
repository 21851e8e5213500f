//! MF's flags and the defaults they fall back on: one set for the built-in synthetic data,
//! one measured on real ratings for `--data`.

use super::{
    Factors, Hyper, MfOrder, BUILTIN_ITEMS, BUILTIN_RATINGS, BUILTIN_USERS, DEFAULT_CLOCKS,
    DEFAULT_TEST_FRACTION,
};
use std::path::PathBuf;

/// MF flags. Rank, rates, regularisation, biases and clocks default to values tuned for the
/// built-in synthetic set, or, when `--data` is given, to [`REAL_DATA`] (measured on real
/// ratings: see its documentation).
#[derive(Debug, Clone, clap::Args)]
pub struct MfArgs {
    /// Factor rank [default: 8 on the built-in data, 32 with --data].
    #[arg(long)]
    pub rank: Option<u32>,
    /// SGD learning rate [default: 0.025 built-in, 0.02 with --data].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning-rate decay per epoch [default: 0.95 built-in, 0.95 with --data].
    #[arg(long)]
    pub lr_decay: Option<f32>,
    /// L2 regularisation of factors and biases [default: 0.003 built-in, 0.1 with --data].
    #[arg(long)]
    pub reg: Option<f32>,
    /// Biased model (global mean, user and item biases): on or off [default: off built-in,
    /// on with --data].
    #[arg(long, value_parser = parse_on_off)]
    pub bias: Option<bool>,
    /// How a worker orders its ratings each epoch: blocks (LIBMF's layout, arranged once: the
    /// blocks in a new random order each epoch, user by user inside) or random (a new uniform
    /// permutation each epoch).
    #[arg(long, value_enum, default_value_t = MfOrder::Blocks)]
    pub order: MfOrder,
    /// How a worker stores its user and item rows where it computes: f32, or f16 (half the
    /// bytes per SGD step on a GPU; each step computes in f32 and rounds both rows). On the
    /// CPU, f16 runs one rating at a time: an oracle, not a speed-up.
    #[arg(long, value_enum, default_value_t = Factors::F32)]
    pub factors: Factors,
    /// Users of the built-in synthetic set (with --items and --ratings: a larger set to measure
    /// throughput on).
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_USERS)]
    pub users: u32,
    /// Items of the built-in synthetic set.
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_ITEMS)]
    pub items: u32,
    /// Ratings of the built-in synthetic set.
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_RATINGS)]
    pub ratings: u64,
    /// Zipf exponent of the built-in set's item popularity (0 = uniform; about 0.8-1.0 is
    /// Netflix-like): the item of popularity rank r draws ratings with weight r^-S.
    #[arg(long, value_name = "S", conflicts_with = "data", default_value_t = 0.0)]
    pub item_zipf: f64,
    /// Clocks per epoch: each clock visits the next slice of the epoch's shuffled order and
    /// reads only the item rows that slice touches; the learning rate decays per epoch.
    #[arg(long, default_value_t = 1)]
    pub clocks_per_epoch: u32,
    /// Ratings file instead of the built-in synthetic set: MovieLens u.data, ratings.csv,
    /// ratings.dat, or user,item,rating.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Held-out ratings file (any format --data reads) instead of a random fraction of --data.
    /// Users and items it has that --data lacks are predicted from the mean and the biases the
    /// model has, and counted (test_cold_ratings).
    #[arg(long, conflicts_with = "test_fraction", requires = "data")]
    pub test: Option<PathBuf>,
    /// Fraction of the ratings held out for testing.
    #[arg(long, default_value_t = DEFAULT_TEST_FRACTION)]
    pub test_fraction: f64,
}

impl Default for MfArgs {
    /// The flags' defaults, as `--app mf` with no MF flag.
    fn default() -> Self {
        MfArgs {
            rank: None,
            lr: None,
            lr_decay: None,
            reg: None,
            bias: None,
            order: MfOrder::Blocks,
            factors: Factors::F32,
            users: BUILTIN_USERS,
            items: BUILTIN_ITEMS,
            ratings: BUILTIN_RATINGS,
            item_zipf: 0.0,
            clocks_per_epoch: 1,
            data: None,
            test: None,
            test_fraction: DEFAULT_TEST_FRACTION,
        }
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

/// Defaults of one kind of data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MfDefaults {
    pub hyper: Hyper,
    pub bias: bool,
    pub clocks: u32,
}

/// Defaults for the built-in synthetic set (noise floor 0.1, reached by clock 10).
pub const SYNTHETIC: MfDefaults = MfDefaults {
    hyper: Hyper {
        rank: 8,
        lr: 0.025,
        reg: 0.003,
        lr_decay: 0.95,
    },
    bias: false,
    clocks: DEFAULT_CLOCKS,
};

/// Defaults with `--data`: chosen on MovieLens 100K (100,000 ratings of 943 users and 1,682
/// items, 1-5 stars), a uniform 80/20 split (`benches/movielens.sh`), 2 workers, BSP; see the
/// README's "Real ratings" for the sweep and the figures against Surprise's SVD.
pub const REAL_DATA: MfDefaults = MfDefaults {
    hyper: Hyper {
        rank: 32,
        lr: 0.02,
        reg: 0.1,
        lr_decay: 0.95,
    },
    bias: true,
    clocks: 40,
};

impl MfArgs {
    /// The model the flags ask for, the defaults filled in for the kind of data.
    pub fn resolve(&self) -> (Hyper, bool, u32) {
        let d = if self.data.is_some() {
            REAL_DATA
        } else {
            SYNTHETIC
        };
        let hyper = Hyper {
            rank: self.rank.unwrap_or(d.hyper.rank),
            lr: self.lr.unwrap_or(d.hyper.lr),
            reg: self.reg.unwrap_or(d.hyper.reg),
            lr_decay: self.lr_decay.unwrap_or(d.hyper.lr_decay),
        };
        (hyper, self.bias.unwrap_or(d.bias), d.clocks)
    }
}
