//! [`CpuLda`]: the plain CPU oracle, an `f64` cumulative sum of the conditional per token
//! inverted at one uniform draw.

use super::{check_dims, to_count, LdaCompute};
use crate::error::ComputeError;
use crate::lda::{LdaDelta, LdaHyper, LdaWorkerState, SweepKey};

/// Plain, obviously correct oracle: for every token, O(K) work computing
/// the unnormalised conditional into an `f64` cumulative sum and inverting
/// one uniform draw. Works directly on the `f32` copy.
#[derive(Debug, Clone, Default)]
pub struct CpuLda {
    cdf: Vec<f64>,
}

impl CpuLda {
    /// A new oracle.
    pub fn new() -> Self {
        CpuLda::default()
    }
}

/// The cumulative unnormalised conditional of a token whose own counts have
/// already been removed from `ndk`, `wt_row`, `totals`.
fn oracle_cdf(
    cdf: &mut Vec<f64>,
    ndk: &[u32],
    wt_row: &[f32],
    totals: &[f32],
    alpha: f64,
    beta: f64,
    vbeta: f64,
) {
    cdf.clear();
    let mut acc = 0.0f64;
    for ((&nd, &nw), &nt) in ndk.iter().zip(wt_row).zip(totals) {
        let nw = f64::from(to_count(nw).max(0));
        let nt = f64::from(to_count(nt).max(0));
        acc += (f64::from(nd) + alpha) * (nw + beta) / (nt + vbeta);
        cdf.push(acc);
    }
}

/// Inverts `u` in `[0, 1)` on an unnormalised cumulative sum. Falls back to
/// the last topic on rounding, and to `u`-scaled uniform if the sum is not
/// finite and positive.
fn invert_cdf(cdf: &[f64], u: f64) -> u32 {
    let k = cdf.len();
    let total = cdf[k - 1];
    if !(total > 0.0 && total.is_finite()) {
        return ((u * k as f64) as usize).min(k - 1) as u32;
    }
    let x = u * total;
    cdf.iter().position(|&c| x < c).unwrap_or(k - 1) as u32
}

impl LdaCompute for CpuLda {
    fn sweep(
        &mut self,
        state: &mut LdaWorkerState,
        word_topic: &mut [f32],
        totals: &mut [f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<LdaDelta, ComputeError> {
        check_dims(state, word_topic, totals, hyper);
        let k = state.topics as usize;
        let (alpha, beta) = hyper.effective();
        let vbeta = beta * f64::from(state.vocab_size.max(1));
        let wt_before = word_topic.to_vec();
        let tot_before = totals.to_vec();
        let mut uniforms = key.uniforms();
        for d in 0..state.num_docs() {
            let ndk = &mut state.doc_topic[d * k..(d + 1) * k];
            for i in state.doc_offsets[d]..state.doc_offsets[d + 1] {
                let w = state.tokens[i] as usize;
                let old = state.z[i] as usize;
                let row = &mut word_topic[w * k..(w + 1) * k];
                ndk[old] = ndk[old].saturating_sub(1);
                row[old] -= 1.0;
                totals[old] -= 1.0;
                oracle_cdf(&mut self.cdf, ndk, row, totals, alpha, beta, vbeta);
                let new = invert_cdf(&self.cdf, uniforms.get(i as u64)) as usize;
                ndk[new] += 1;
                row[new] += 1.0;
                totals[new] += 1.0;
                state.z[i] = new as u32;
            }
        }
        let mut entries = Vec::new();
        for (i, (a, b)) in word_topic.iter().zip(&wt_before).enumerate() {
            let c = to_count(a - b);
            if c != 0 {
                entries.push((state.words[i / k], (i % k) as u32, c));
            }
        }
        let totals_delta = totals
            .iter()
            .zip(&tot_before)
            .map(|(a, b)| to_count(a - b))
            .collect();
        Ok(LdaDelta {
            topics: state.topics,
            entries,
            totals: totals_delta,
        })
    }

    fn sample_token(
        &mut self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        doc: usize,
        pos: usize,
        u: f64,
    ) -> Result<u32, ComputeError> {
        check_dims(state, word_topic, totals, hyper);
        let k = state.topics as usize;
        let (alpha, beta) = hyper.effective();
        let vbeta = beta * f64::from(state.vocab_size.max(1));
        let i = state.doc_offsets[doc] + pos;
        assert!(
            i < state.doc_offsets[doc + 1],
            "sample_token: pos out of range"
        );
        let w = state.tokens[i] as usize;
        let old = state.z[i] as usize;
        let mut ndk = state.doc_topic[doc * k..(doc + 1) * k].to_vec();
        let mut row = word_topic[w * k..(w + 1) * k].to_vec();
        let mut tot = totals.to_vec();
        ndk[old] = ndk[old].saturating_sub(1);
        row[old] -= 1.0;
        tot[old] -= 1.0;
        oracle_cdf(&mut self.cdf, &ndk, &row, &tot, alpha, beta, vbeta);
        Ok(invert_cdf(&self.cdf, u))
    }

    fn name(&self) -> &'static str {
        "cpu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invert_cdf_handles_degenerate_sums() {
        assert_eq!(invert_cdf(&[0.0, 0.0, 0.0], 0.5), 1);
        assert_eq!(invert_cdf(&[1.0, f64::INFINITY], 0.9), 1);
        assert_eq!(invert_cdf(&[1.0, 2.0, 4.0], 0.0), 0);
        assert_eq!(invert_cdf(&[1.0, 2.0, 4.0], 0.6), 2);
    }
}
