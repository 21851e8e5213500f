//! The ratings of an MF job, split into training, held-out and cold held-out ratings: from a
//! training file and a held-out file, from one file and a held-out fraction, or the built-in
//! synthetic set.

use super::app::MfSettings;
use super::{
    load_ratings, load_train_test, split_train_test, synthetic, ColdRating, Rating, RatingSet,
    SyntheticSpec,
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

pub(super) fn load(
    data: Option<&str>,
    test: Option<&str>,
    synthetic_spec: Option<&SyntheticSpec>,
    fraction: f64,
    seed: u64,
) -> Result<Loaded, AppError> {
    let split = |set: RatingSet, noise| {
        let (train, test) = split_train_test(&set, fraction, seed);
        Loaded {
            num_users: set.num_users,
            num_items: set.num_items,
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
            Ok(split(synthetic(&spec), Some(spec.noise_sigma)))
        }
        (None, Some(_)) => Err(AppError::Settings(
            "--test needs --data (the training ratings)".into(),
        )),
    }
}

impl Loaded {
    pub(super) fn of(s: &MfSettings) -> Result<Loaded, AppError> {
        load(
            s.data.as_deref(),
            s.test.as_deref(),
            s.synthetic.as_ref(),
            s.test_fraction,
            s.seed,
        )
    }

    pub(super) fn train_mean(&self) -> f32 {
        let sum: f64 = self.train.iter().map(|r| f64::from(r.value)).sum();
        (sum / self.train.len().max(1) as f64) as f32
    }
}
