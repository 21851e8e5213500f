//! LDA quality metrics (pure functions).

use super::{LdaHyper, LdaWorkerState};
use crate::prefetch;

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
/// nonzero counts, O(docs K), and per distinct word of a document its word's nonzero counts, or
/// its document's where those are far fewer.
///
/// # Panics
/// If the slice lengths do not match the state (caller bug).
pub fn loglik(
    state: &LdaWorkerState,
    word_topic: &[f32],
    totals: &[f32],
    hyper: &LdaHyper,
) -> (f64, u64) {
    loglik_on(state, word_topic, totals, hyper, 1)
}

/// Documents per part of [`loglik_on`]'s sum: fixed, so that the sum's order, and so its
/// bits, do not depend on the number of threads.
const DOCS_PER_PART: usize = 256;

/// How many of a document's distinct words ahead [`loglik_on`] asks for a word's nonzero
/// counts, and the most of them it asks for (16 cache lines of topics and of counts).
const PREFETCH_AHEAD: usize = 4;
const PREFETCH_ENTRIES: usize = 256;

/// [`loglik`] on up to `threads` threads: the documents in parts of [`DOCS_PER_PART`], each
/// part's sum in document order, the parts' sums in order. The same value on any number of
/// threads.
///
/// # Panics
/// As [`loglik`].
pub fn loglik_on(
    state: &LdaWorkerState,
    word_topic: &[f32],
    totals: &[f32],
    hyper: &LdaHyper,
    threads: usize,
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
    // is beta sum_k theta'_dk plus sum_k theta'_dk n_wk. At large K most of a row is zero, so
    // the last sum runs over the word's nonzero counts, read in order. Once topics concentrate
    // most of a document's row is zero too; where the document has fewer than an eighth as
    // many nonzero counts as the word (each looked up in the word's dense row costs a cache
    // line, not 8 bytes), the sum runs over those instead, after splitting
    // theta'_dk = norm (n_dk + alpha) / (n_k + V beta):
    //     sum_k theta'_dk n_wk = norm (sum_{n_dk > 0} n_dk n_wk / (n_k + V beta) + alpha A_w),
    //     A_w = sum_k n_wk / (n_k + V beta), once per row.
    let rows = NonzeroRows::of(word_topic, k);
    let word_mass: Vec<f64> = (0..rows.len())
        .map(|w| {
            let (topics, counts) = rows.row(w);
            topics
                .iter()
                .zip(counts)
                .map(|(&t, &n)| inv_den[t as usize] * f64::from(n))
                .sum()
        })
        .collect();
    let docs = state.num_docs();
    let part_sum = |part: usize| {
        let mut theta = vec![0.0f64; k];
        // The document's nonzero topics, and n_dk / (n_k + V beta) of each.
        let mut doc_topics: Vec<u32> = Vec::with_capacity(k);
        let mut doc_weights: Vec<f64> = Vec::with_capacity(k);
        let mut doc_words: Vec<u32> = Vec::new();
        // The document's distinct words, each with how often it occurs.
        let mut runs: Vec<(u32, usize)> = Vec::new();
        let mut sum = 0.0f64;
        for d in part * DOCS_PER_PART..((part + 1) * DOCS_PER_PART).min(docs) {
            let (lo, hi) = (state.doc_offsets[d], state.doc_offsets[d + 1]);
            let norm = 1.0 / ((hi - lo) as f64 + k as f64 * alpha);
            let ndk = &state.doc_topic[d * k..(d + 1) * k];
            doc_topics.clear();
            doc_weights.clear();
            for (t, (th, &n)) in theta.iter_mut().zip(ndk).enumerate() {
                *th = (f64::from(n) + alpha) * norm * inv_den[t];
                if n > 0 {
                    doc_topics.push(t as u32);
                    doc_weights.push(f64::from(n) * inv_den[t]);
                }
            }
            let smoothing = beta * theta.iter().sum::<f64>();
            // A word repeated in the document is the same term each time: each distinct word is
            // summed once and its log counted as often as it occurs.
            doc_words.clear();
            doc_words.extend_from_slice(&state.tokens[lo..hi]);
            doc_words.sort_unstable();
            runs.clear();
            runs.extend(doc_words.chunk_by(|a, b| a == b).map(|r| (r[0], r.len())));
            for (i, &(w, repeats)) in runs.iter().enumerate() {
                if let Some(&(ahead, _)) = runs.get(i + PREFETCH_AHEAD) {
                    let (topics, counts) = rows.row(ahead as usize);
                    prefetch::first(topics, PREFETCH_ENTRIES);
                    prefetch::first(counts, PREFETCH_ENTRIES);
                }
                let w = w as usize;
                let (topics, counts) = rows.row(w);
                let p: f64 = if topics.len() <= 8 * doc_topics.len() {
                    gathered_dot(topics, counts, |t, &n| theta[t] * f64::from(n))
                } else {
                    let row = &word_topic[w * k..(w + 1) * k];
                    let own = gathered_dot(&doc_topics, &doc_weights, |t, &c| c * count(row[t]));
                    norm * (own + alpha * word_mass[w])
                };
                sum += repeats as f64 * (p + smoothing).ln();
            }
        }
        sum
    };
    let parts = crate::par::map(docs.div_ceil(DOCS_PER_PART), threads, part_sum);
    // From +0.0, as the one running sum did (`sum()` starts from -0.0: a worker without
    // documents would report -0.0).
    (
        parts.iter().fold(0.0, |a, b| a + b),
        state.tokens.len() as u64,
    )
}

/// `sum_i term(topics[i], &values[i])` in four interleaved partial sums, so that each addition
/// need not wait for the one before (on `kos` at K = 1,000 this made the whole log-likelihood
/// about a quarter faster than one running sum).
#[inline]
fn gathered_dot<V>(topics: &[u32], values: &[V], term: impl Fn(usize, &V) -> f64) -> f64 {
    debug_assert_eq!(topics.len(), values.len());
    let mut acc = [0.0f64; 4];
    let (tq, vq) = (topics.chunks_exact(4), values.chunks_exact(4));
    let (tr, vr) = (tq.remainder(), vq.remainder());
    for (t, v) in tq.zip(vq) {
        for lane in 0..4 {
            acc[lane] += term(t[lane] as usize, &v[lane]);
        }
    }
    for (&t, v) in tr.iter().zip(vr) {
        acc[0] += term(t as usize, v);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
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

    /// The number of rows.
    fn len(&self) -> usize {
        self.starts.len() - 1
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

/// How far a word-topic table and its topic totals are from being the counts of some
/// assignments: the cells below zero, and the largest gap between a topic's total and the sum
/// of its column (summed in `f64`). Exact pushes keep both at zero: a move takes one from a
/// cell and adds one to another of the same row, and does the same to the totals. A worker
/// whose moves start from assignments the table never counted, or whose clock the shards
/// applied in part, shows here (the log-likelihood's `max(n, 0)` would hide it).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CountCheck {
    pub negative_cells: u64,
    pub totals_gap: f64,
}

/// [`CountCheck`] of `word_topic` (whole rows of `k`) and `totals` (`k` values).
///
/// # Panics
/// If `totals` is not `k` long or `word_topic` not whole rows (caller bug).
pub fn count_check(word_topic: &[f32], k: usize, totals: &[f32]) -> CountCheck {
    assert_eq!(totals.len(), k, "totals of another width");
    assert!(
        k > 0 && word_topic.len().is_multiple_of(k),
        "whole rows of {k}"
    );
    let mut columns = vec![0.0f64; k];
    let mut negative_cells = 0u64;
    for row in word_topic.chunks_exact(k) {
        for (sum, &v) in columns.iter_mut().zip(row) {
            *sum += f64::from(v);
            negative_cells += u64::from(v < 0.0);
        }
    }
    let totals_gap = (columns.iter().zip(totals))
        .map(|(&c, &t)| (c - f64::from(t)).abs())
        .fold(0.0, f64::max);
    CountCheck {
        negative_cells,
        totals_gap,
    }
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

    /// A random worker of `docs` documents: a document's count is nonzero with probability
    /// `doc_density`, a word row's with `word_density`; one count is negative and one NaN (both
    /// read as 0).
    fn random_worker(
        docs: usize,
        doc_density: u64,
        word_density: u64,
        seed: u64,
    ) -> (LdaWorkerState, Vec<f32>, Vec<f32>) {
        let (k, words) = (50usize, 40usize);
        let mut x = seed;
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
        let mut nonzero = |percent: u64, most: usize| {
            if (next() % 100) < percent as usize {
                1 + next() % most
            } else {
                0
            }
        };
        let doc_topic: Vec<u32> = (0..docs * k)
            .map(|_| nonzero(doc_density, 7) as u32)
            .collect();
        let mut wt: Vec<f32> = (0..words * k)
            .map(|_| nonzero(word_density, 30) as f32)
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
        (state, wt, totals)
    }

    /// Sparse words and dense documents, the reverse (the sum then runs over the documents'
    /// topics), both sparse, both dense, and empty rows.
    #[test]
    fn the_sparse_sum_is_the_formula() {
        let hyper = LdaHyper {
            topics: 50,
            alpha: 0.1,
            beta: 0.01,
        };
        for (seed, (doc_density, word_density)) in [
            (85, 10),
            (10, 85),
            (3, 95),
            (5, 5),
            (100, 100),
            (0, 0),
            (30, 30),
        ]
        .into_iter()
        .enumerate()
        {
            let (state, wt, totals) =
                random_worker(12, doc_density, word_density, 12345 + seed as u64);
            let (ll, n) = loglik(&state, &wt, &totals, &hyper);
            let want = dense_loglik(&state, &wt, &totals, &hyper);
            assert_eq!(n, state.tokens.len() as u64);
            assert!(
                (ll - want).abs() <= 1e-12 * want.abs(),
                "densities {doc_density}/{word_density}: sparse {ll} vs dense {want}"
            );
        }
    }

    /// More documents than one part holds: the same bits on any number of threads, and the
    /// formula's value.
    #[test]
    fn the_parts_sum_the_same_on_any_number_of_threads() {
        let hyper = LdaHyper {
            topics: 50,
            alpha: 0.1,
            beta: 0.01,
        };
        let (state, wt, totals) = random_worker(3 * DOCS_PER_PART + 17, 20, 40, 7);
        let one = loglik_on(&state, &wt, &totals, &hyper, 1);
        for threads in [2, 3, 8] {
            let many = loglik_on(&state, &wt, &totals, &hyper, threads);
            assert_eq!(many.0.to_bits(), one.0.to_bits(), "{threads} threads");
            assert_eq!(many.1, one.1);
        }
        let want = dense_loglik(&state, &wt, &totals, &hyper);
        assert!(
            (one.0 - want).abs() <= 1e-12 * want.abs(),
            "{} vs {want}",
            one.0
        );
        // A worker without documents: +0.0 over no tokens, as before the parts.
        let (empty, wt, totals) = random_worker(0, 20, 40, 7);
        let (ll, n) = loglik_on(&empty, &wt, &totals, &hyper, 3);
        assert_eq!((ll.to_bits(), n), (0.0f64.to_bits(), 0));
    }

    #[test]
    fn counts_check_out_only_when_they_are_counts() {
        // Two rows of 3 and their column sums: nothing to report.
        let table = [1.0, 0.0, 2.0, 0.0, 4.0, 1.0];
        let good = count_check(&table, 3, &[1.0, 4.0, 3.0]);
        assert_eq!(good, CountCheck::default());
        // A move from a topic the cell never held: one negative cell; a total one off.
        let table = [1.0, -1.0, 3.0, 0.0, 4.0, 1.0];
        let bad = count_check(&table, 3, &[1.0, 4.0, 3.0]);
        assert_eq!(bad.negative_cells, 1);
        assert_eq!(bad.totals_gap, 1.0);
        // Past 2^24 a column still adds exactly (in f32, each 1 would be lost).
        let big = [16_777_216.0f32, 1.0, 1.0];
        assert_eq!(count_check(&big, 1, &[16_777_218.0]).totals_gap, 0.0);
    }
}
