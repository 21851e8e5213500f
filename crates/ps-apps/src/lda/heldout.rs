//! Held-out likelihood of documents the model was not trained on, by document completion
//! (Wallach, Murray, Salakhutdinov and Mimno, "Evaluation Methods for Topic Models", ICML 2009,
//! section 4; also Asuncion et al., UAI 2009).
//!
//! Each held-out document's tokens are split by position: even positions are *observed*, odd
//! ones *held out* (by position, not halves: the file formats list a document's words sorted by
//! id, so halves would split the vocabulary). With the trained topics fixed,
//!
//! ```text
//! phi_kw = (n_wk + beta) / (n_k + V * beta)
//! ```
//!
//! [`FOLD_IN_SWEEPS`] Gibbs sweeps over the observed tokens sample their topics from
//! `(n_dk + alpha) * phi_kw`; the document's mixture `theta_dk = (n_dk + alpha) / (N_obs + K
//! alpha)` is averaged over the sweeps after [`FOLD_IN_BURN_IN`]. The score is
//!
//! ```text
//! log p(held-out | observed) = sum over held-out tokens w of log sum_k theta_dk phi_kw
//! ```
//!
//! and the perplexity `exp(-score / held-out tokens)`. Words the training vocabulary lacks
//! cannot be scored and are counted apart; so are documents of fewer than 2 tokens.
//! Deterministic: each document's sampler is seeded from `(seed, its index in the file)`.

use super::metrics::{count, inverse_topic_sizes};
use super::LdaHyper;
use crate::seed::stream_rng;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Gibbs sweeps over a held-out document's observed half.
pub const FOLD_IN_SWEEPS: usize = 30;
/// Sweeps discarded before the mixture is averaged.
pub const FOLD_IN_BURN_IN: usize = 10;

/// Sums over held-out documents (add them up over workers).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeldOutScore {
    /// `sum log p(held-out token | observed tokens)`.
    pub loglik: f64,
    /// Held-out tokens scored.
    pub tokens: u64,
    /// Tokens of words outside the training vocabulary (not scored).
    pub unknown_tokens: u64,
    /// Documents too short to split (fewer than 2 known tokens).
    pub skipped_docs: u64,
}

/// Scores `docs` (each `(index in the file, tokens)`) against the trained counts: `row(w)`
/// gives word `w`'s `K` topic counts (`None` for a word outside the vocabulary of size
/// `vocab_size`), `totals` the `K` topic totals.
pub fn document_completion<'a>(
    docs: &[(usize, Vec<u32>)],
    row: impl Fn(u32) -> Option<&'a [f32]>,
    totals: &[f32],
    vocab_size: u32,
    hyper: &LdaHyper,
    seed: u64,
) -> HeldOutScore {
    let k = totals.len();
    let (alpha, beta) = hyper.effective();
    let inv_den = inverse_topic_sizes(totals, vocab_size, beta);
    let phi = |counts: &[f32], out: &mut [f64]| {
        for ((o, &n), inv) in out.iter_mut().zip(counts).zip(&inv_den) {
            *o = (count(n) + beta) * inv;
        }
    };
    let mut score = HeldOutScore::default();
    let mut p = vec![0.0f64; k];
    for (index, tokens) in docs {
        let known: Vec<&[f32]> = tokens.iter().filter_map(|&w| row(w)).collect();
        score.unknown_tokens += (tokens.len() - known.len()) as u64;
        if known.len() < 2 || k == 0 {
            score.skipped_docs += 1;
            continue;
        }
        // phi of every known token, then the observed (even) and held-out (odd) positions.
        let mut phis = vec![0.0f64; known.len() * k];
        for (counts, out) in known.iter().zip(phis.chunks_exact_mut(k)) {
            phi(counts, out);
        }
        let observed: Vec<usize> = (0..known.len()).step_by(2).collect();
        let mut rng = stream_rng(seed, 0x4E1D_0E1D, *index as u64);
        let mut z = vec![0usize; observed.len()];
        let mut n_dk = vec![0.0f64; k];
        for (zi, &pos) in z.iter_mut().zip(&observed) {
            *zi = sample(&phis[pos * k..(pos + 1) * k], &mut rng);
            n_dk[*zi] += 1.0;
        }
        let mut theta = vec![0.0f64; k];
        let norm = 1.0 / (observed.len() as f64 + k as f64 * alpha);
        for sweep in 0..FOLD_IN_SWEEPS {
            for (zi, &pos) in z.iter_mut().zip(&observed) {
                n_dk[*zi] -= 1.0;
                let f = &phis[pos * k..(pos + 1) * k];
                for ((pk, &n), &fk) in p.iter_mut().zip(&n_dk).zip(f) {
                    *pk = (n + alpha) * fk;
                }
                *zi = sample(&p, &mut rng);
                n_dk[*zi] += 1.0;
            }
            if sweep >= FOLD_IN_BURN_IN {
                for (t, &n) in theta.iter_mut().zip(&n_dk) {
                    *t += (n + alpha) * norm;
                }
            }
        }
        let kept = (FOLD_IN_SWEEPS - FOLD_IN_BURN_IN) as f64;
        theta.iter_mut().for_each(|t| *t /= kept);
        for pos in (1..known.len()).step_by(2) {
            let f = &phis[pos * k..(pos + 1) * k];
            let pw: f64 = theta.iter().zip(f).map(|(t, f)| t * f).sum();
            score.loglik += pw.ln();
            score.tokens += 1;
        }
    }
    score
}

/// An index drawn with probability proportional to the (non-negative) weights.
fn sample(weights: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, &w) in weights.iter().enumerate() {
        u -= w;
        if u < 0.0 {
            return i;
        }
    }
    weights.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper(k: u32) -> LdaHyper {
        LdaHyper {
            topics: k,
            alpha: 0.1,
            beta: 0.01,
        }
    }

    /// Two topics over four words: topic 0 says words 0 and 1, topic 1 words 2 and 3.
    fn counts() -> (Vec<f32>, Vec<f32>) {
        let wt = vec![100.0, 0.0, 100.0, 0.0, 0.0, 100.0, 0.0, 100.0];
        (wt, vec![200.0, 200.0])
    }

    #[test]
    fn a_document_of_one_topic_is_completed_by_that_topic() {
        let (wt, totals) = counts();
        let row = |w: u32| wt.get(w as usize * 2..w as usize * 2 + 2);
        let docs = vec![(0, vec![0, 1, 0, 1, 0, 1, 0, 1])];
        let s = document_completion(&docs, row, &totals, 4, &hyper(2), 1);
        assert_eq!(s.tokens, 4);
        // Each held-out word has probability about 1/2 under topic 0.
        let per_token = s.loglik / s.tokens as f64;
        assert!((per_token - 0.5f64.ln()).abs() < 0.05, "{per_token}");
        // Mixed topics do worse than a one-topic document would.
        let mixed = vec![(0, vec![0, 2, 1, 3, 0, 2, 1, 3])];
        let m = document_completion(&mixed, row, &totals, 4, &hyper(2), 1);
        assert!(m.loglik / (m.tokens as f64) < per_token);
    }

    #[test]
    fn unknown_words_and_short_documents_are_counted_not_scored() {
        let (wt, totals) = counts();
        let row = |w: u32| wt.get(w as usize * 2..w as usize * 2 + 2);
        let docs = vec![(0, vec![0, 9, 1, 9]), (1, vec![3]), (2, vec![])];
        let s = document_completion(&docs, row, &totals, 4, &hyper(2), 1);
        assert_eq!(s.unknown_tokens, 2);
        assert_eq!(s.skipped_docs, 2);
        assert_eq!(s.tokens, 1);
        assert!(s.loglik.is_finite() && s.loglik < 0.0);
    }

    #[test]
    fn the_score_is_a_function_of_the_seed_and_the_documents() {
        let (wt, totals) = counts();
        let row = |w: u32| wt.get(w as usize * 2..w as usize * 2 + 2);
        let docs = vec![(3, vec![0, 2, 1, 3, 0, 1, 2, 3, 0, 0])];
        let a = document_completion(&docs, row, &totals, 4, &hyper(2), 5);
        let b = document_completion(&docs, row, &totals, 4, &hyper(2), 5);
        assert_eq!(a, b);
    }
}
