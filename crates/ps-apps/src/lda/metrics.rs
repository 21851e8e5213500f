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
/// divide for the corpus value. Rises as training proceeds. Costs O(rows K) to list the rows'
/// nonzero counts, O(docs K) and O(N x nonzero counts of a token's word).
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
    // p(w | d) = sum_k theta'_dk (n_wk + beta) with theta'_dk = theta_dk / (n_k + V beta), that
    // is beta sum_k theta'_dk plus a sum over the word's nonzero counts only: at large K most of
    // a row is zero, so each row's nonzero counts are listed once and each token costs its
    // word's count, not K.
    let rows = NonzeroRows::of(word_topic, k);
    let mut theta = vec![0.0f64; k];
    let mut sum = 0.0f64;
    for d in 0..state.num_docs() {
        let (lo, hi) = (state.doc_offsets[d], state.doc_offsets[d + 1]);
        let norm = 1.0 / ((hi - lo) as f64 + k as f64 * alpha);
        for (t, th) in theta.iter_mut().enumerate() {
            *th = (f64::from(state.doc_topic[d * k + t]) + alpha) * norm * inv_den[t];
        }
        let smoothing = beta * theta.iter().sum::<f64>();
        for &w in &state.tokens[lo..hi] {
            let (topics, counts) = rows.row(w as usize);
            let p: f64 = topics
                .iter()
                .zip(counts)
                .map(|(&t, &n)| theta[t as usize] * f64::from(n))
                .sum();
            sum += (p + smoothing).ln();
        }
    }
    (sum, state.tokens.len() as u64)
}

/// The nonzero counts ([`count`]) of every row of a `rows x k` table, row by row.
struct NonzeroRows {
    starts: Vec<usize>,
    topics: Vec<u32>,
    /// As read (an f32 converts to f64 exactly): 8 bytes a nonzero count with its topic.
    counts: Vec<f32>,
}

impl NonzeroRows {
    fn of(table: &[f32], k: usize) -> NonzeroRows {
        let mut rows = NonzeroRows {
            starts: vec![0],
            topics: Vec::new(),
            counts: Vec::new(),
        };
        for row in table.chunks_exact(k.max(1)) {
            for (t, &n) in row.iter().enumerate() {
                if count(n) != 0.0 {
                    rows.topics.push(t as u32);
                    rows.counts.push(n);
                }
            }
            rows.starts.push(rows.topics.len());
        }
        rows
    }

    /// Row `w`'s topics and counts.
    fn row(&self, w: usize) -> (&[u32], &[f32]) {
        let r = self.starts[w]..self.starts[w + 1];
        (&self.topics[r.clone()], &self.counts[r])
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula as written: every topic of every token.
    fn dense_loglik(s: &LdaWorkerState, wt: &[f32], totals: &[f32], h: &LdaHyper) -> f64 {
        let k = s.topics as usize;
        let (alpha, beta) = h.effective();
        let inv = inverse_topic_sizes(totals, s.vocab_size, beta);
        let mut sum = 0.0;
        for d in 0..s.num_docs() {
            let (lo, hi) = (s.doc_offsets[d], s.doc_offsets[d + 1]);
            let norm = 1.0 / ((hi - lo) as f64 + k as f64 * alpha);
            for &w in &s.tokens[lo..hi] {
                let p: f64 = (0..k)
                    .map(|t| {
                        let theta = (f64::from(s.doc_topic[d * k + t]) + alpha) * norm;
                        theta * (count(wt[w as usize * k + t]) + beta) * inv[t]
                    })
                    .sum();
                sum += p.ln();
            }
        }
        sum
    }

    #[test]
    fn the_sparse_sum_is_the_formula() {
        let (k, words, docs) = (50usize, 40usize, 12usize);
        let mut x = 12345u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize
        };
        let mut doc_offsets = vec![0];
        let mut tokens = Vec::new();
        for _ in 0..docs {
            for _ in 0..(5 + next() % 20) {
                tokens.push((next() % words) as u32);
            }
            doc_offsets.push(tokens.len());
        }
        let doc_topic: Vec<u32> = (0..docs * k).map(|_| (next() % 7) as u32).collect();
        // Mostly zero rows, with a negative count and a NaN (both read as 0).
        let mut wt: Vec<f32> = (0..words * k)
            .map(|_| {
                if next() % 10 == 0 {
                    (next() % 30) as f32
                } else {
                    0.0
                }
            })
            .collect();
        wt[3] = -4.0;
        wt[77] = f32::NAN;
        let totals: Vec<f32> = (0..k).map(|_| (next() % 500) as f32).collect();
        let state = LdaWorkerState {
            topics: k as u32,
            vocab_size: 900,
            words: (0..words as u32).collect(),
            doc_offsets,
            z: vec![0; tokens.len()],
            tokens,
            doc_topic,
        };
        let hyper = LdaHyper {
            topics: k as u32,
            alpha: 0.1,
            beta: 0.01,
        };
        let (ll, n) = loglik(&state, &wt, &totals, &hyper);
        let want = dense_loglik(&state, &wt, &totals, &hyper);
        assert_eq!(n, state.tokens.len() as u64);
        assert!(
            (ll - want).abs() <= 1e-12 * want.abs(),
            "sparse {ll} vs dense {want}"
        );
    }
}
