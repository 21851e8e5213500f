//! LDA quality metrics (pure functions).

use super::{LdaHyper, LdaWorkerState};

/// Sum over the worker's tokens of the predictive log-likelihood
/// `log sum_k theta_dk * phi_kw`, and the number of tokens, with the
/// point estimates
///
/// ```text
/// theta_dk = (n_dk + alpha) / (N_d + K * alpha)
/// phi_kw   = (max(n_wk, 0) + beta) / (max(n_k, 0) + V * beta)
/// ```
///
/// (`word_topic` local rows as in [`super::LdaCompute::sweep`], `totals`
/// length `K`, `V = state.vocab_size`). Sum the pairs over workers and
/// divide for the corpus value. Rises as training proceeds. Costs O(N K).
///
/// # Panics
/// If the slice lengths do not match the state (caller bug).
pub fn loglik(
    state: &LdaWorkerState,
    word_topic: &[f32],
    totals: &[f32],
    hyper: &LdaHyper,
) -> (f64, u64) {
    let k = state.topics as usize;
    assert_eq!(
        word_topic.len(),
        state.words.len() * k,
        "loglik: word_topic size"
    );
    assert_eq!(totals.len(), k, "loglik: totals size");
    let (alpha, beta) = hyper.effective();
    let inv_den = inverse_topic_sizes(totals, state.vocab_size, beta);
    let mut theta = vec![0.0f64; k];
    let mut sum = 0.0f64;
    for d in 0..state.num_docs() {
        let (lo, hi) = (state.doc_offsets[d], state.doc_offsets[d + 1]);
        let norm = 1.0 / ((hi - lo) as f64 + k as f64 * alpha);
        for (t, th) in theta.iter_mut().enumerate() {
            *th = (f64::from(state.doc_topic[d * k + t]) + alpha) * norm * inv_den[t];
        }
        for &w in &state.tokens[lo..hi] {
            let row = &word_topic[w as usize * k..(w as usize + 1) * k];
            let p: f64 = theta
                .iter()
                .zip(row)
                .map(|(th, &n)| th * (count(n) + beta))
                .sum();
            sum += p.ln();
        }
    }
    (sum, state.tokens.len() as u64)
}

/// A count as read from a table: negative or non-finite values (possible under stale reads or
/// on bad input) count as 0.
pub(super) fn count(x: f32) -> f64 {
    if x.is_finite() {
        f64::from(x).max(0.0)
    } else {
        0.0
    }
}

/// `1 / (n_k + V beta)` per topic: the denominators of `phi_kw = (n_wk + beta) / (n_k + V beta)`.
pub(super) fn inverse_topic_sizes(totals: &[f32], vocab_size: u32, beta: f64) -> Vec<f64> {
    let vbeta = beta * f64::from(vocab_size.max(1));
    totals.iter().map(|&n| 1.0 / (count(n) + vbeta)).collect()
}

/// [`loglik`] divided by the number of tokens (0 for a worker without
/// tokens).
pub fn loglik_per_token(
    state: &LdaWorkerState,
    word_topic: &[f32],
    totals: &[f32],
    hyper: &LdaHyper,
) -> f64 {
    let (s, n) = loglik(state, word_topic, totals, hyper);
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// How well learned topics match known ones: the mean over the true topics
/// of the largest cosine similarity with any learned topic.
///
/// `true_topics` is `true_k x V` row-major (e.g. [`super::SyntheticLda`]'s
/// `topics`); `word_topic` is the learned global count table `V x k`
/// (row = word id), from which learned topic `j` is the column
/// `max(n_wj, 0) + beta` (normalisation does not change the cosine).
/// Returns a value in `[0, 1]`; 0 when `true_k == 0` or `k == 0`.
///
/// # Panics
/// If `true_topics.len() / true_k != word_topic.len() / k` (different
/// vocabularies) or a length is not a multiple of its topic count.
pub fn topic_recovery(
    true_topics: &[f32],
    true_k: usize,
    word_topic: &[f32],
    k: usize,
    beta: f64,
) -> f64 {
    if true_k == 0 || k == 0 {
        return 0.0;
    }
    assert_eq!(
        true_topics.len() % true_k,
        0,
        "topic_recovery: true_topics shape"
    );
    assert_eq!(word_topic.len() % k, 0, "topic_recovery: word_topic shape");
    let v = true_topics.len() / true_k;
    assert_eq!(
        word_topic.len() / k,
        v,
        "topic_recovery: vocabulary sizes differ"
    );
    let beta = if beta.is_finite() && beta >= 0.0 {
        beta
    } else {
        0.0
    };
    let learned = |w: usize, j: usize| {
        let x = word_topic[w * k + j];
        (if x.is_finite() {
            f64::from(x).max(0.0)
        } else {
            0.0
        }) + beta
    };
    let mut lnorm = vec![0.0f64; k];
    for w in 0..v {
        for (j, n) in lnorm.iter_mut().enumerate() {
            let x = learned(w, j);
            *n += x * x;
        }
    }
    let mut total = 0.0f64;
    let mut dots = vec![0.0f64; k];
    for t in 0..true_k {
        let row = &true_topics[t * v..(t + 1) * v];
        let mut tnorm = 0.0f64;
        dots.iter_mut().for_each(|x| *x = 0.0);
        for (w, &p) in row.iter().enumerate() {
            let p = if p.is_finite() { f64::from(p) } else { 0.0 };
            tnorm += p * p;
            if p != 0.0 {
                for (j, dot) in dots.iter_mut().enumerate() {
                    *dot += p * learned(w, j);
                }
            }
        }
        let best = dots
            .iter()
            .zip(&lnorm)
            .map(|(&dot, &ln)| {
                let den = (tnorm * ln).sqrt();
                if den > 0.0 {
                    dot / den
                } else {
                    0.0
                }
            })
            .fold(0.0f64, f64::max);
        total += best;
    }
    total / true_k as f64
}
