//! The LDA compute trait, the exact conditional and the count reads every engine shares; the
//! plain CPU oracle is in `oracle.rs`, the SparseLDA engine in `sparse.rs`, its sweep on
//! several threads in `parallel.rs`, and the word-major sweep over fixed counts (the device
//! sampler's twin, in document groups) in `word_major/`.

mod oracle;
mod parallel;
mod sparse;
pub mod word_major;

pub use oracle::CpuLda;
pub use parallel::{runs_by_tokens, ParallelSparseLda};
pub use sparse::SparseLda;
pub use word_major::WordMajorLda;

use super::{LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use crate::error::ComputeError;

/// Local counts are clamped to `±COUNT_CLAMP` when read from a stale copy,
/// so that `±1` moves of up to [`super::MAX_WORKER_TOKENS`] tokens cannot
/// overflow `i32`.
const COUNT_CLAMP: f32 = (1u32 << 29) as f32;

/// A count read from the (possibly stale, possibly hostile) `f32` copy:
/// rounded, clamped to `±COUNT_CLAMP`, NaN read as 0.
///
/// Rounds half away from zero, as `f32::round` and CUDA's `roundf` do, without the libm call
/// (the engines convert every cell of the worker's rows twice a sweep): the cast truncates
/// (NaN to 0), and the part it cut off is exact (Sterbenz; from 2^24 on every `f32` is whole).
#[inline]
fn to_count(x: f32) -> i32 {
    let c = x.clamp(-COUNT_CLAMP, COUNT_CLAMP);
    let t = c as i32;
    let cut = c - t as f32;
    if cut >= 0.5 {
        t + 1
    } else if cut <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// The compute trait (one per app): collapsed Gibbs sampling for LDA.
///
/// The conditional of token `i` (word `w`, document `d`) is
///
/// ```text
/// p(z_i = k | rest) ∝ (n_dk + alpha) * (max(n_wk, 0) + beta) / (max(n_k, 0) + V * beta)
/// ```
///
/// where all counts exclude token `i` itself (its current topic's counts
/// are decremented first), `n_dk` comes from `state.doc_topic`, `n_wk` from
/// the word-topic copy and `n_k` from the totals. Counts read from the
/// server may be negative or non-integer through staleness; they are
/// rounded and clamped at 0 in the probability (never in the stored copy),
/// so nothing panics and nothing becomes NaN. `V` is `state.vocab_size`;
/// `alpha`, `beta` are [`LdaHyper::effective`].
pub trait LdaCompute {
    /// One collapsed-Gibbs sweep over all of the worker's tokens, in order
    /// (document by document), each resampled from the conditional above.
    ///
    /// `word_topic` is the dense local copy `state.words.len() x K` (local
    /// row `i` = global word `state.words[i]`) and `totals` the totals row
    /// (length `K`); both are updated in place by the sweep's moves, as are
    /// `state.z` and `state.doc_topic`. Token `i` (its position in
    /// `state.tokens`) consumes exactly one uniform,
    /// [`SweepKey::uniform`]`(i)` (counter-based Philox, so that a device
    /// engine can draw the same one). Returns the aggregated delta of the
    /// moves, which equals `word_topic_after - word_topic_before` (and
    /// likewise for the totals) exactly while counts stay below 2^24.
    ///
    /// # Panics
    /// If `hyper.topics != state.topics` or the slice lengths do not match
    /// the state (caller bugs).
    fn sweep(
        &mut self,
        state: &mut LdaWorkerState,
        word_topic: &mut [f32],
        totals: &mut [f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<LdaDelta, ComputeError>;

    /// Test hook: draws a new topic for token `pos` of local document `doc`
    /// from this engine's sampling machinery, given the uniform `u` in
    /// `[0, 1)`, with the token's own count removed as in a sweep — without
    /// modifying anything. The draws must follow [`conditional`].
    ///
    /// # Panics
    /// On out-of-range `doc`/`pos` or mismatched lengths (caller bugs).
    #[allow(clippy::too_many_arguments)]
    fn sample_token(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        doc: usize,
        pos: usize,
        u: f64,
    ) -> Result<u32, ComputeError>;

    /// A short backend name for logs, e.g. `"cpu"`.
    fn name(&self) -> &'static str;
}

/// The length checks every LDA backend makes (caller bugs panic with these messages).
pub fn check_dims(state: &LdaWorkerState, word_topic: &[f32], totals: &[f32], hyper: &LdaHyper) {
    assert_eq!(
        hyper.topics, state.topics,
        "LDA: hyper.topics != state.topics"
    );
    let k = state.topics as usize;
    assert_eq!(
        word_topic.len(),
        state.words.len() * k,
        "LDA: word_topic must be words.len() x K"
    );
    assert_eq!(totals.len(), k, "LDA: totals must have length K");
}

/// The exact conditional of token `pos` of local document `doc` (see
/// [`LdaCompute`]), normalised to sum to 1, computed in `f64` without
/// modifying anything.
///
/// # Panics
/// On out-of-range `doc`/`pos` or mismatched lengths (caller bugs).
pub fn conditional(
    state: &LdaWorkerState,
    word_topic: &[f32],
    totals: &[f32],
    hyper: &LdaHyper,
    doc: usize,
    pos: usize,
) -> Vec<f64> {
    check_dims(state, word_topic, totals, hyper);
    let k = state.topics as usize;
    let (alpha, beta) = hyper.effective();
    let vbeta = beta * f64::from(state.vocab_size.max(1));
    let i = state.doc_offsets[doc] + pos;
    assert!(
        i < state.doc_offsets[doc + 1],
        "conditional: pos out of range"
    );
    let w = state.tokens[i] as usize;
    let old = state.z[i] as usize;
    let mut p = vec![0.0f64; k];
    for (t, pt) in p.iter_mut().enumerate() {
        let own = i32::from(t == old);
        let ndk = f64::from(state.doc_topic[doc * k + t]) - f64::from(own);
        let nwk = f64::from((to_count(word_topic[w * k + t]) - own).max(0));
        let nk = f64::from((to_count(totals[t]) - own).max(0));
        *pt = (ndk.max(0.0) + alpha) * (nwk + beta) / (nk + vbeta);
    }
    let sum: f64 = p.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        p.iter_mut().for_each(|x| *x /= sum);
    } else {
        p.iter_mut().for_each(|x| *x = 1.0 / k as f64);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_count_is_total() {
        assert_eq!(to_count(f32::NAN), 0);
        assert_eq!(to_count(2.4), 2);
        assert_eq!(to_count(-3.0), -3);
        assert_eq!(to_count(f32::INFINITY), 1 << 29);
        assert_eq!(to_count(f32::NEG_INFINITY), -(1 << 29));
    }

    /// The old definition, through libm's `roundf`.
    fn rounded(x: f32) -> i32 {
        if x.is_nan() {
            0
        } else {
            x.round().clamp(-COUNT_CLAMP, COUNT_CLAMP) as i32
        }
    }

    #[test]
    fn to_count_rounds_as_f32_round_does() {
        // Every 61st bit pattern (all signs, exponents, NaNs and infinities), then the halves
        // and their neighbours up to 2^24 and around the clamp.
        for bits in (0..=u32::MAX).step_by(61) {
            let x = f32::from_bits(bits);
            assert_eq!(to_count(x), rounded(x), "{x:e} ({bits:#x})");
        }
        for n in (0..(1 << 24)).step_by(7) {
            for x in [n as f32 + 0.5, n as f32 - 0.5, n as f32] {
                for y in [
                    x,
                    -x,
                    f32::from_bits(x.to_bits() + 1),
                    f32::from_bits(x.to_bits().max(1) - 1),
                ] {
                    assert_eq!(to_count(y), rounded(y), "{y:e}");
                }
            }
        }
        for x in [
            COUNT_CLAMP,
            COUNT_CLAMP * 2.0,
            8_388_607.5,
            8_388_608.0,
            8_388_609.0,
        ] {
            assert_eq!(to_count(x), rounded(x), "{x:e}");
            assert_eq!(to_count(-x), rounded(-x), "{x:e}");
        }
    }
}
