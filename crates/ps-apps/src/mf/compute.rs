//! The matrix-factorisation compute trait and its CPU oracle.

use super::data::Rating;
use crate::error::ComputeError;

/// The compute trait (one per app): one SGD pass over `ratings` (in the
/// given order), updating user factors (`local user index * rank`) and the
/// local dense item matrix (`item * rank`) in place. Returns the sum of
/// squared errors measured before each update (training loss estimate).
///
/// The update for a rating `r` of user `u` and item `i`, with
/// `e = r - u·v` computed before the update, is (simultaneously, using the
/// old values on the right-hand side):
///
/// ```text
/// u <- u + lr * (e * v - reg * u)
/// v <- v + lr * (e * u - reg * v)
/// ```
///
/// Ratings are processed sequentially in the given order; a backend that
/// reorders or parallelises must document how its result deviates from
/// [`CpuMf`].
pub trait MfCompute {
    /// Runs one SGD pass; see the trait documentation.
    fn sgd_epoch(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError>;

    /// A short backend name for logs, e.g. `"cpu"`.
    fn name(&self) -> &'static str;
}

/// Plain, obviously correct CPU oracle.
///
/// # Panics
/// `sgd_epoch` panics (index out of bounds) if a rating refers to a user or
/// item row outside `users` / `items`; that is a caller bug.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuMf;

impl MfCompute for CpuMf {
    fn sgd_epoch(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        let mut sse = 0.0f64;
        for r in ratings {
            let u = &mut users[r.user as usize * rank..(r.user as usize + 1) * rank];
            let v = &mut items[r.item as usize * rank..(r.item as usize + 1) * rank];
            let pred: f32 = u.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
            let e = r.value - pred;
            sse += f64::from(e) * f64::from(e);
            for (uk, vk) in u.iter_mut().zip(v.iter_mut()) {
                let (u0, v0) = (*uk, *vk);
                *uk = u0 + lr * (e * v0 - reg * u0);
                *vk = v0 + lr * (e * u0 - reg * v0);
            }
        }
        Ok(sse)
    }

    fn name(&self) -> &'static str {
        "cpu"
    }
}

/// Predicted rating `users[user] · items[item]`.
pub fn predict(users: &[f32], items: &[f32], rank: usize, user: u32, item: u32) -> f32 {
    let u = &users[user as usize * rank..(user as usize + 1) * rank];
    let v = &items[item as usize * rank..(item as usize + 1) * rank];
    u.iter().zip(v).map(|(a, b)| a * b).sum()
}

/// Sum of squared errors and count over ratings (no update).
pub fn squared_error(ratings: &[Rating], users: &[f32], items: &[f32], rank: usize) -> (f64, u64) {
    let mut sse = 0.0f64;
    for r in ratings {
        let e = f64::from(r.value) - f64::from(predict(users, items, rank, r.user, r.item));
        sse += e * e;
    }
    (sse, ratings.len() as u64)
}

/// Root-mean-squared error over ratings (0 for an empty slice).
pub fn rmse(ratings: &[Rating], users: &[f32], items: &[f32], rank: usize) -> f64 {
    let (sse, n) = squared_error(ratings, users, items, rank);
    if n == 0 {
        0.0
    } else {
        (sse / n as f64).sqrt()
    }
}
