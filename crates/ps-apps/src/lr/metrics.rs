//! Evaluation metrics (pure functions).
//!
//! Labels are `f32` with `> 0.5` meaning positive; scores are margins
//! `z = w · x` (any monotone score works for [`auc`]).

use super::compute::softplus;
use super::data::SparseRow;

/// Margins `z = Σ w_k x_k` of `rows` in `f64`, with `weights[i]` the weight
/// of `keys[i]` (`keys` sorted ascending); keys not in `keys` have weight 0
/// (the server's value for keys never written).
///
/// # Panics
/// If `weights.len() != keys.len()`.
pub fn margins(rows: &[SparseRow], keys: &[u64], weights: &[f32]) -> Vec<f64> {
    assert_eq!(
        weights.len(),
        keys.len(),
        "margins: weights.len() must equal keys.len()"
    );
    rows.iter()
        .map(|r| {
            r.features
                .iter()
                .map(|&(k, v)| match keys.binary_search(&k) {
                    Ok(i) => f64::from(weights[i]) * f64::from(v),
                    Err(_) => 0.0,
                })
                .sum()
        })
        .collect()
}

fn check(labels: &[f32], scores: &[f64], what: &str) {
    assert_eq!(
        labels.len(),
        scores.len(),
        "{what}: labels and scores must have the same length"
    );
}

/// Fraction of rows whose prediction (`margin > 0` means positive) matches
/// the label. `0` for empty input.
///
/// # Panics
/// If the lengths differ.
pub fn accuracy(labels: &[f32], margins: &[f64]) -> f64 {
    check(labels, margins, "accuracy");
    if labels.is_empty() {
        return 0.0;
    }
    let hits = labels
        .iter()
        .zip(margins)
        .filter(|(&y, &z)| (y > 0.5) == (z > 0.0))
        .count();
    hits as f64 / labels.len() as f64
}

/// Exact area under the ROC curve: the probability that a random positive
/// scores higher than a random negative, ties counting one half
/// (Mann–Whitney U with mid-ranks). `O(n log n)`. Returns `0.5` when either
/// class is absent. NaN scores are ordered by `f64::total_cmp` (no panic;
/// NaN is not a meaningful score).
///
/// # Panics
/// If the lengths differ.
pub fn auc(labels: &[f32], scores: &[f64]) -> f64 {
    check(labels, scores, "auc");
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|&&y| y > 0.5).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    // Sum of (1-based, mid-) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && scores[idx[j]].total_cmp(&scores[idx[i]]).is_eq() {
            j += 1;
        }
        let mid = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1..=j
        let pos_in_group = idx[i..j].iter().filter(|&&k| labels[k] > 0.5).count();
        rank_sum += mid * pos_in_group as f64;
        i = j;
    }
    let p = positives as f64;
    (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

/// Mean logistic loss `(1/n) Σ log(1 + e^z) - y z`, computed stably. `0` for
/// empty input.
///
/// # Panics
/// If the lengths differ.
pub fn log_loss(labels: &[f32], margins: &[f64]) -> f64 {
    check(labels, margins, "log_loss");
    if labels.is_empty() {
        return 0.0;
    }
    let sum: f64 = labels
        .iter()
        .zip(margins)
        .map(|(&y, &z)| softplus(z) - f64::from(y) * z)
        .sum();
    sum / labels.len() as f64
}

/// The regularised objective `log_loss + l1 * |w|_1 + l2 / 2 * |w|_2^2`.
///
/// This is the per-example form of the objective FTRL-proximal minimises.
/// FTRL's `l1`/`l2` (McMahan et al. 2013) are charged once against the SUM
/// of the losses it was fed; when a worker pushes the mean gradient of a
/// batch, `T` pushes (over all workers and epochs) feed `≈ T` copies of the
/// mean loss, so server parameters `(λ1, λ2)` correspond to `l1 = λ1 / T`,
/// `l2 = λ2 / T` here.
///
/// # Panics
/// If `labels` and `margins` lengths differ.
pub fn objective(labels: &[f32], margins: &[f64], weights: &[f32], l1: f64, l2: f64) -> f64 {
    let (a, b) = weights.iter().fold((0.0f64, 0.0f64), |(a, b), &w| {
        let w = f64::from(w);
        (a + w.abs(), b + w * w)
    });
    log_loss(labels, margins) + l1 * a + 0.5 * l2 * b
}

/// Number of weights that are not exactly zero (the model's sparsity).
pub fn nonzero_weights(weights: &[f32]) -> usize {
    weights.iter().filter(|&&w| w != 0.0).count()
}
