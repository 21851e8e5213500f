//! The ratings of an MF job, split into training, held-out and cold held-out ratings: from a
//! training file and a held-out file, from one file and a held-out fraction, or the built-in
//! synthetic set.

use super::app::MfSettings;
use super::{
    load_ratings, load_train_test, owner_of, split_train_test_owned, synthetic_users, ColdRating,
    Rating, RatingSet, SyntheticSpec,
};
use crate::error::AppError;
use std::path::Path;

/// The ratings of a job, split.
pub(super) struct Loaded {
    pub(super) num_users: u32,
    pub(super) num_items: u32,
    pub(super) train: Vec<Rating>,
    pub(super) test: Vec<Rating>,
    pub(super) cold: Vec<ColdRating>,
    /// For built-in data, the noise sigma the ratings were drawn with.
    pub(super) noise: Option<f32>,
}

/// The job's ratings. With `owner = Some((workers, w))` a built-in set is drawn only for the
/// users worker `w` owns (`user % workers == w`, as [`super::worker_shard`] assigns them), so
/// each worker draws its share rather than the whole set; files are read whole.
pub(super) fn load(
    data: Option<&str>,
    test: Option<&str>,
    synthetic_spec: Option<&SyntheticSpec>,
    fraction: f64,
    seed: u64,
    owner: Option<(u32, u32)>,
) -> Result<Loaded, AppError> {
    let split = |set: RatingSet, noise| {
        let (num_users, num_items) = (set.num_users, set.num_items);
        let (train, test) = split_train_test_owned(set.ratings, fraction, seed);
        Loaded {
            num_users,
            num_items,
            train,
            test,
            cold: Vec::new(),
            noise,
        }
    };
    match (data, test) {
        (Some(d), Some(t)) => {
            let tt = load_train_test(Path::new(d), Path::new(t))?;
            Ok(Loaded {
                num_users: tt.train.num_users,
                num_items: tt.train.num_items,
                train: tt.train.ratings,
                test: tt.test,
                cold: tt.cold,
                noise: None,
            })
        }
        (Some(d), None) => Ok(split(load_ratings(Path::new(d))?, None)),
        (None, None) => {
            let spec = synthetic_spec
                .copied()
                .unwrap_or_else(|| SyntheticSpec::default_builtin(seed));
            let mine = |u: u32| owner.is_none_or(|(n, w)| owner_of(u, n) == w);
            let set = synthetic_users(&spec, crate::par::threads(), mine);
            Ok(split(set, Some(spec.noise_sigma)))
        }
        (None, Some(_)) => Err(AppError::Settings(
            "--test needs --data (the training ratings)".into(),
        )),
    }
}

impl Loaded {
    /// Worker `w` of `workers`'s ratings: its own users' of a built-in set, every rating of
    /// files (see [`load`]).
    pub(super) fn of_worker(s: &MfSettings, workers: u32, w: u32) -> Result<Loaded, AppError> {
        load(
            s.data.as_deref(),
            s.test.as_deref(),
            s.synthetic.as_ref(),
            s.test_fraction,
            s.seed,
            Some((workers, w)),
        )
    }

    pub(super) fn train_mean(&self) -> f32 {
        let sum: f64 = self.train.iter().map(|r| f64::from(r.value)).sum();
        (sum / self.train.len().max(1) as f64) as f32
    }
}

/// What the coordinator needs of a job's ratings: the sizes (for the item table and the
/// facts) and the training mean a biased model starts from.
pub(super) struct Summary {
    pub(super) num_users: u32,
    pub(super) num_items: u32,
    /// Training, held-out and cold held-out ratings together.
    pub(super) ratings: u64,
    pub(super) train: u64,
    pub(super) cold: u64,
    pub(super) train_mean: f32,
    pub(super) noise: Option<f32>,
}

impl Summary {
    pub(super) fn of(l: &Loaded) -> Summary {
        Summary {
            num_users: l.num_users,
            num_items: l.num_items,
            ratings: (l.train.len() + l.test.len() + l.cold.len()) as u64,
            train: l.train.len() as u64,
            cold: l.cold.len() as u64,
            train_mean: l.train_mean(),
            noise: l.noise,
        }
    }

    /// A synthetic set's summary from its spec alone, without generating it: every user and
    /// item has ratings, and there are [`SyntheticSpec::target`] of them. The training mean is
    /// not known (0): only for a model without biases, which never uses it (a synthetic set
    /// has no cold ratings). Each worker generates its copy of the set anyway; this spares the
    /// coordinator a copy of its own (seconds and gigabytes at 100 M ratings).
    pub(super) fn of_spec_unbiased(spec: &SyntheticSpec) -> Summary {
        Summary {
            num_users: spec.users,
            num_items: spec.items,
            ratings: spec.target(),
            train: spec.target(),
            cold: 0,
            train_mean: 0.0,
            noise: Some(spec.noise_sigma),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_sets_summary_from_its_spec_matches_the_generated_set() {
        let specs = [
            SyntheticSpec::default_builtin(7),
            SyntheticSpec {
                users: 3_000,
                items: 500,
                ratings: 40_000,
                item_zipf: 0.8,
                ..SyntheticSpec::default_builtin(3)
            },
            // Asks for more than users x items, and for fewer than the cover pairs.
            SyntheticSpec {
                users: 30,
                items: 20,
                ratings: 10_000,
                ..SyntheticSpec::default_builtin(5)
            },
            SyntheticSpec {
                users: 300,
                items: 20,
                ratings: 10,
                item_zipf: 1.0,
                ..SyntheticSpec::default_builtin(5)
            },
        ];
        for spec in specs {
            let loaded = load(None, None, Some(&spec), 0.1, spec.seed, None).unwrap();
            let (full, quick) = (Summary::of(&loaded), Summary::of_spec_unbiased(&spec));
            let ctx = format!("{spec:?}");
            assert_eq!(quick.num_users, full.num_users, "{ctx}");
            assert_eq!(quick.num_items, full.num_items, "{ctx}");
            assert_eq!(quick.ratings, full.ratings, "{ctx}");
            assert_eq!(quick.cold, full.cold, "{ctx}");
            assert_eq!(quick.noise, full.noise, "{ctx}");
            assert!(full.train > 0 && quick.train >= full.train, "{ctx}");
        }
    }
}
