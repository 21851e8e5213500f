//! The matrix-factorisation compute trait and its CPU oracle.

use super::data::Rating;
use crate::error::ComputeError;
use serde::{Deserialize, Serialize};

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

    /// One SGD pass of the biased model (see [`Layout`]): rows are `rank + 1` wide, the last
    /// element the user's or item's bias, and a rating is predicted as
    /// `mean + b_u + b_i + p_u·q_i`. With `e` the error before the update,
    ///
    /// ```text
    /// b_u <- b_u + lr * (e - reg * b_u)      p_u <- p_u + lr * (e * q_i - reg * p_u)
    /// b_i <- b_i + lr * (e - reg * b_i)      q_i <- q_i + lr * (e * p_u - reg * q_i)
    /// ```
    ///
    /// (Funk's SVD as Koren et al. and Surprise's `SVD` write it.) An engine without it says so.
    #[allow(clippy::too_many_arguments)]
    fn sgd_epoch_biased(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        mean: f32,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        let _ = (ratings, users, items, rank, mean, lr, reg);
        Err(ComputeError {
            engine: self.name(),
            message: "this engine has no biased MF: pass --bias off".into(),
        })
    }

    /// One pass of the model `layout` describes: [`Self::sgd_epoch`] or
    /// [`Self::sgd_epoch_biased`].
    fn sgd_pass(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        layout: Layout,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        match layout.mean {
            Some(mean) => self.sgd_epoch_biased(ratings, users, items, layout.rank, mean, lr, reg),
            None => self.sgd_epoch(ratings, users, items, layout.rank, lr, reg),
        }
    }

    /// A short backend name for logs, e.g. `"cpu"`.
    fn name(&self) -> &'static str;
}

/// What a user row and an item row hold, and how a rating is predicted from them.
///
/// Plain (`mean: None`): rows of `rank` factors, prediction `p_u·q_i`. Biased
/// (`mean: Some(mu)`): rows of `rank` factors then one bias, prediction
/// `mu + b_u + b_i + p_u·q_i`, with `mu` the training ratings' mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub rank: usize,
    pub mean: Option<f32>,
}

impl Layout {
    /// Rows of `rank` factors, no biases.
    pub fn plain(rank: usize) -> Layout {
        Layout { rank, mean: None }
    }

    /// Elements per user row and per item row (`rank`, plus one for the bias).
    pub fn width(&self) -> usize {
        self.rank + usize::from(self.mean.is_some())
    }

    /// The predicted rating from a user row and an item row of [`Self::width`] elements.
    pub fn predict(&self, u: &[f32], v: &[f32]) -> f32 {
        let r = self.rank;
        let dot: f32 = u[..r].iter().zip(&v[..r]).map(|(a, b)| a * b).sum();
        match self.mean {
            Some(mean) => mean + u[r] + v[r] + dot,
            None => dot,
        }
    }

    /// The prediction when the user, the item or both were never seen in training: the mean
    /// and whichever bias is known (the mean alone for a plain model, whose factors cannot
    /// say anything about a stranger).
    pub fn predict_cold(&self, fallback_mean: f32, u: Option<&[f32]>, v: Option<&[f32]>) -> f32 {
        match self.mean {
            Some(mean) => {
                let b = |row: Option<&[f32]>| row.map_or(0.0, |x| x[self.rank]);
                mean + b(u) + b(v)
            }
            None => fallback_mean,
        }
    }
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

    fn sgd_epoch_biased(
        &mut self,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        rank: usize,
        mean: f32,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        let w = rank + 1;
        let layout = Layout {
            rank,
            mean: Some(mean),
        };
        let mut sse = 0.0f64;
        for r in ratings {
            let u = &mut users[r.user as usize * w..(r.user as usize + 1) * w];
            let v = &mut items[r.item as usize * w..(r.item as usize + 1) * w];
            let e = r.value - layout.predict(u, v);
            sse += f64::from(e) * f64::from(e);
            for (uk, vk) in u[..rank].iter_mut().zip(v[..rank].iter_mut()) {
                let (u0, v0) = (*uk, *vk);
                *uk = u0 + lr * (e * v0 - reg * u0);
                *vk = v0 + lr * (e * u0 - reg * v0);
            }
            u[rank] += lr * (e - reg * u[rank]);
            v[rank] += lr * (e - reg * v[rank]);
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
    squared_error_in(Layout::plain(rank), ratings, users, items)
}

/// [`squared_error`] for rows of any [`Layout`].
pub fn squared_error_in(
    layout: Layout,
    ratings: &[Rating],
    users: &[f32],
    items: &[f32],
) -> (f64, u64) {
    let w = layout.width();
    let mut sse = 0.0f64;
    for r in ratings {
        let (u, i) = (r.user as usize * w, r.item as usize * w);
        let p = layout.predict(&users[u..u + w], &items[i..i + w]);
        let e = f64::from(r.value) - f64::from(p);
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
