//! The LDA compute trait, the plain CPU oracle and the SparseLDA engine.

use super::{LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use crate::error::ComputeError;

/// Local counts are clamped to `±COUNT_CLAMP` when read from a stale copy,
/// so that `±1` moves of up to [`super::MAX_WORKER_TOKENS`] tokens cannot
/// overflow `i32`.
const COUNT_CLAMP: f32 = (1u32 << 29) as f32;

/// A count read from the (possibly stale, possibly hostile) `f32` copy:
/// rounded, clamped to `±COUNT_CLAMP`, NaN read as 0.
#[inline]
fn to_count(x: f32) -> i32 {
    if x.is_nan() {
        0
    } else {
        x.round().clamp(-COUNT_CLAMP, COUNT_CLAMP) as i32
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

// ---------------------------------------------------------------------------
// CPU oracle
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// SparseLDA
// ---------------------------------------------------------------------------

/// SparseLDA (Yao, Mimno & McCallum, KDD 2009): exact collapsed Gibbs with
/// the conditional split into three buckets,
///
/// ```text
/// p(k) ∝ alpha*beta / D_k                 (s: smoothing, all topics)
///      + n_dk * beta / D_k                (r: the document's topics)
///      + (n_dk + alpha) * n_wk / D_k      (q: the word's topics)
/// D_k = max(n_k, 0) + V * beta
/// ```
///
/// `s` and `r` are kept up to date incrementally (O(1) per count change,
/// recomputed at the start of every document to bound rounding drift), the
/// coefficients `(n_dk + alpha) / D_k` are cached per topic, and `q` is
/// summed over the word's nonzero topics only. Cost per token:
/// O(nnz(word row)) for `q` plus, when the draw falls in `r` or `s`
/// (rare once topics concentrate), O(nnz(doc)) or O(K); plus O(K) per
/// document and O(V_local x K) per sweep for loading and writing back the
/// local copy.
///
/// Layout: local counts as `i32` (dense `V_local x K`, the truth, negative
/// stale counts included), plus per word row a list of its positive counts
/// packed as `(count << 32) | topic`, so the `q` sum reads one contiguous
/// array (the list starts sorted by count; moves update it in place with
/// a linear scan, push and `swap_remove` — keeping it sorted as MALLET does
/// was measured slower here, because bubbling past tied counts costs more
/// than it saves); the document's nonzero topics; all in buffers reused
/// across sweeps (no allocation per token).
/// Single-threaded; parallelism comes from running several workers.
///
/// Consumes the same one uniform per token as [`CpuLda`]
/// ([`SweepKey::uniform`] of the token's position) but maps it to a topic
/// differently, so the two agree in distribution, not draw by draw.
#[derive(Debug, Clone, Default)]
pub struct SparseLda {
    wt: Vec<i32>,
    /// Per word row: `(count << 32) | topic` for every topic with a
    /// positive count (unordered).
    nz: Vec<Vec<u64>>,
    tot: Vec<i32>,
    inv_den: Vec<f64>,
    coef: Vec<f64>,
    qterms: Vec<f64>,
    doc_nz: Vec<u32>,
}

impl SparseLda {
    /// A new engine (buffers grow on the first sweep and are reused).
    pub fn new() -> Self {
        SparseLda::default()
    }
}

#[inline]
fn pack(count: i32, topic: u32) -> u64 {
    (u64::from(count as u32) << 32) | u64::from(topic)
}

/// Builds the packed list of a word row's positive counts, largest first.
fn build_word_list(list: &mut Vec<u64>, row: &[i32]) {
    list.clear();
    list.extend(
        row.iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(t, &c)| pack(c, t as u32)),
    );
    list.sort_unstable_by(|a, b| b.cmp(a));
}

/// Decrements topic `t` (count `c >= 1` before) in a packed list.
#[inline]
fn word_list_dec(list: &mut Vec<u64>, t: u32, c: i32) {
    if let Some(p) = list.iter().position(|&e| e as u32 == t) {
        if c <= 1 {
            list.swap_remove(p);
        } else {
            list[p] = pack(c - 1, t);
        }
    }
}

/// Increments topic `t` (count `c >= 0` before) in a packed list.
#[inline]
fn word_list_inc(list: &mut Vec<u64>, t: u32, c: i32) {
    if c <= 0 {
        list.push(pack(1, t));
    } else if let Some(p) = list.iter().position(|&e| e as u32 == t) {
        list[p] = pack(c + 1, t);
    }
}

#[inline]
fn remove_topic(list: &mut Vec<u32>, t: u32) {
    if let Some(p) = list.iter().position(|&x| x == t) {
        list.swap_remove(p);
    }
}

/// Draws from the three buckets with `u` already scaled to `[0, s + r + q)`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn draw_buckets(
    mut u: f64,
    q: f64,
    qterms: &[f64],
    word_nz: &[u64],
    r: f64,
    doc_nz: &[u32],
    ndk: &[u32],
    beta: f64,
    ab: f64,
    inv_den: &[f64],
) -> u32 {
    if u < q {
        for (&e, &x) in word_nz.iter().zip(qterms) {
            u -= x;
            if u < 0.0 {
                return e as u32;
            }
        }
        if let Some(&e) = word_nz.last() {
            return e as u32;
        }
        u = 0.0;
    } else {
        u -= q;
    }
    if u < r {
        for &t in doc_nz {
            u -= f64::from(ndk[t as usize]) * beta * inv_den[t as usize];
            if u < 0.0 {
                return t;
            }
        }
        if let Some(&t) = doc_nz.last() {
            return t;
        }
        u = 0.0;
    } else {
        u -= r;
    }
    for (t, &inv) in inv_den.iter().enumerate() {
        u -= ab * inv;
        if u < 0.0 {
            return t as u32;
        }
    }
    (inv_den.len() - 1) as u32
}

impl LdaCompute for SparseLda {
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
        let ab = alpha * beta;
        let nwords = state.words.len();

        // Load the local copy.
        self.wt.clear();
        self.wt.extend(word_topic.iter().map(|&x| to_count(x)));
        self.tot.clear();
        self.tot.extend(totals.iter().map(|&x| to_count(x)));
        if self.nz.len() < nwords {
            self.nz.resize_with(nwords, Vec::new);
        }
        for (list, row) in self.nz.iter_mut().zip(self.wt.chunks_exact(k)) {
            build_word_list(list, row);
        }
        self.inv_den.clear();
        self.inv_den.extend(
            self.tot
                .iter()
                .map(|&n| 1.0 / (f64::from(n.max(0)) + vbeta)),
        );
        self.coef.clear();
        self.coef.resize(k, 0.0);
        self.qterms.clear();
        self.qterms.reserve(k);

        let SparseLda {
            wt,
            nz,
            tot,
            inv_den,
            coef,
            qterms,
            doc_nz,
        } = self;
        let mut uniforms = key.uniforms();
        for d in 0..state.num_docs() {
            let ndk = &mut state.doc_topic[d * k..(d + 1) * k];
            doc_nz.clear();
            let mut s = 0.0f64;
            let mut r = 0.0f64;
            for t in 0..k {
                let n = ndk[t];
                if n > 0 {
                    doc_nz.push(t as u32);
                    r += f64::from(n) * beta * inv_den[t];
                }
                s += ab * inv_den[t];
                coef[t] = (f64::from(n) + alpha) * inv_den[t];
            }
            for i in state.doc_offsets[d]..state.doc_offsets[d + 1] {
                let w = state.tokens[i] as usize;
                let old = state.z[i] as usize;

                // Remove the token from the document, totals and word row.
                s -= ab * inv_den[old];
                r -= f64::from(ndk[old]) * beta * inv_den[old];
                ndk[old] = ndk[old].saturating_sub(1);
                tot[old] -= 1;
                inv_den[old] = 1.0 / (f64::from(tot[old].max(0)) + vbeta);
                s += ab * inv_den[old];
                r += f64::from(ndk[old]) * beta * inv_den[old];
                coef[old] = (f64::from(ndk[old]) + alpha) * inv_den[old];
                if ndk[old] == 0 {
                    remove_topic(doc_nz, old as u32);
                }
                let row = &mut wt[w * k..(w + 1) * k];
                let word_nz = &mut nz[w];
                if row[old] > 0 {
                    word_list_dec(word_nz, old as u32, row[old]);
                }
                row[old] -= 1;

                // q bucket over the word's nonzero topics.
                qterms.clear();
                let mut q = 0.0f64;
                for &e in word_nz.iter() {
                    let x = coef[e as u32 as usize] * f64::from((e >> 32) as u32);
                    q += x;
                    qterms.push(x);
                }
                let r_pos = r.max(0.0);
                let u = uniforms.get(i as u64) * (s + r_pos + q);
                let new = draw_buckets(u, q, qterms, word_nz, r_pos, doc_nz, ndk, beta, ab, inv_den)
                    as usize;

                // Add the token back with its new topic.
                s -= ab * inv_den[new];
                r -= f64::from(ndk[new]) * beta * inv_den[new];
                ndk[new] += 1;
                tot[new] += 1;
                inv_den[new] = 1.0 / (f64::from(tot[new].max(0)) + vbeta);
                s += ab * inv_den[new];
                r += f64::from(ndk[new]) * beta * inv_den[new];
                coef[new] = (f64::from(ndk[new]) + alpha) * inv_den[new];
                if ndk[new] == 1 {
                    doc_nz.push(new as u32);
                }
                if row[new] >= 0 {
                    word_list_inc(word_nz, new as u32, row[new]);
                }
                row[new] += 1;
                state.z[i] = new as u32;
            }
        }

        // Debug builds check that the sorted word lists mirror the counts.
        #[cfg(debug_assertions)]
        {
            let mut fresh = Vec::new();
            for (list, row) in nz.iter().zip(wt.chunks_exact(k)) {
                build_word_list(&mut fresh, row);
                let mut sorted = list.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                debug_assert_eq!(sorted, fresh, "SparseLda word list out of sync");
            }
        }

        // Write the moves back into the f32 copy and collect the delta.
        let mut entries = Vec::new();
        for (i, (x, &c)) in word_topic.iter_mut().zip(wt.iter()).enumerate() {
            let dlt = c - to_count(*x);
            if dlt != 0 {
                *x += dlt as f32;
                entries.push((state.words[i / k], (i % k) as u32, dlt));
            }
        }
        let mut totals_delta = vec![0i32; k];
        for ((x, &c), dt) in totals.iter_mut().zip(tot.iter()).zip(&mut totals_delta) {
            *dt = c - to_count(*x);
            *x += *dt as f32;
        }
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
        let ab = alpha * beta;
        let i = state.doc_offsets[doc] + pos;
        assert!(
            i < state.doc_offsets[doc + 1],
            "sample_token: pos out of range"
        );
        let w = state.tokens[i] as usize;
        let old = state.z[i] as usize;
        let mut ndk = state.doc_topic[doc * k..(doc + 1) * k].to_vec();
        let mut row: Vec<i32> = word_topic[w * k..(w + 1) * k]
            .iter()
            .map(|&x| to_count(x))
            .collect();
        let mut tot: Vec<i32> = totals.iter().map(|&x| to_count(x)).collect();
        ndk[old] = ndk[old].saturating_sub(1);
        row[old] -= 1;
        tot[old] -= 1;
        let inv_den: Vec<f64> = tot
            .iter()
            .map(|&n| 1.0 / (f64::from(n.max(0)) + vbeta))
            .collect();
        let s: f64 = inv_den.iter().map(|&x| ab * x).sum();
        let doc_nz: Vec<u32> = (0..k as u32).filter(|&t| ndk[t as usize] > 0).collect();
        let r: f64 = doc_nz
            .iter()
            .map(|&t| f64::from(ndk[t as usize]) * beta * inv_den[t as usize])
            .sum();
        let mut word_nz = Vec::new();
        build_word_list(&mut word_nz, &row);
        let qterms: Vec<f64> = word_nz
            .iter()
            .map(|&e| {
                let t = e as u32 as usize;
                (f64::from(ndk[t]) + alpha) * inv_den[t] * f64::from((e >> 32) as u32)
            })
            .collect();
        let q: f64 = qterms.iter().sum();
        Ok(draw_buckets(
            u * (s + r + q),
            q,
            &qterms,
            &word_nz,
            r,
            &doc_nz,
            &ndk,
            beta,
            ab,
            &inv_den,
        ))
    }

    fn name(&self) -> &'static str {
        "sparse"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics_of(list: &[u64]) -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = list.iter().map(|&e| (e as u32, (e >> 32) as u32)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn word_list_tracks_positive_counts() {
        let mut row = vec![0i32, 3, -2, 1, 0];
        let mut list = Vec::new();
        build_word_list(&mut list, &row);
        assert_eq!(list, vec![pack(3, 1), pack(1, 3)]);
        // Moves: (topic, +1/-1), applied as the sweep does.
        for &(t, up) in &[
            (3usize, false),
            (2, true),
            (2, true),
            (2, true),
            (0, true),
            (1, false),
        ] {
            if up {
                if row[t] >= 0 {
                    word_list_inc(&mut list, t as u32, row[t]);
                }
                row[t] += 1;
            } else {
                if row[t] > 0 {
                    word_list_dec(&mut list, t as u32, row[t]);
                }
                row[t] -= 1;
            }
            let mut fresh = Vec::new();
            build_word_list(&mut fresh, &row);
            assert_eq!(topics_of(&list), topics_of(&fresh), "row {row:?}");
        }
        assert_eq!(row, vec![1, 2, 1, 0, 0]);
    }

    #[test]
    fn to_count_is_total() {
        assert_eq!(to_count(f32::NAN), 0);
        assert_eq!(to_count(2.4), 2);
        assert_eq!(to_count(-3.0), -3);
        assert_eq!(to_count(f32::INFINITY), 1 << 29);
        assert_eq!(to_count(f32::NEG_INFINITY), -(1 << 29));
    }

    #[test]
    fn invert_cdf_handles_degenerate_sums() {
        assert_eq!(invert_cdf(&[0.0, 0.0, 0.0], 0.5), 1);
        assert_eq!(invert_cdf(&[1.0, f64::INFINITY], 0.9), 1);
        assert_eq!(invert_cdf(&[1.0, 2.0, 4.0], 0.0), 0);
        assert_eq!(invert_cdf(&[1.0, 2.0, 4.0], 0.6), 2);
    }
}
