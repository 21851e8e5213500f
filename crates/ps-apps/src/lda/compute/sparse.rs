//! [`SparseLda`]: exact collapsed Gibbs with the conditional split into smoothing, document
//! and word buckets, and the packed per-word lists of positive counts it samples from.

use super::{check_dims, to_count, LdaCompute};
use crate::error::ComputeError;
use crate::lda::{LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use crate::prefetch;

/// How many tokens ahead a sweep asks for the memory of a token's word (its list of topics
/// and its count of the token's topic), and twice that for the list's header: in a large
/// vocabulary a word's row is seldom in cache.
const PREFETCH_AHEAD: usize = 4;
/// The most entries of a word's list asked for ahead (8 cache lines).
const PREFETCH_ENTRIES: usize = 64;

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
/// Single-threaded; [`ParallelSparseLda`](super::ParallelSparseLda) runs a sweep on several
/// threads, and workers give parallelism too.
///
/// Consumes the same one uniform per token as [`CpuLda`](super::CpuLda)
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

/// Rows per task when engines' moves are written back ([`SparseLda::write_moves`]).
const MERGE_ROWS: usize = 1024;

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

/// The documents one engine resamples: a run of the worker's documents, their tokens' rows, their
/// topics and their document-topic counts.
pub(super) struct Docs<'a> {
    /// Token offsets of the documents and the end of the last (`offsets[0]` is the position of
    /// the run's first token in the worker's state, which picks its uniforms).
    pub offsets: &'a [usize],
    /// The run's tokens' local word rows.
    pub tokens: &'a [u32],
    /// The run's tokens' topics.
    pub z: &'a mut [u32],
    /// The run's document-topic counts, `documents x K`.
    pub doc_topic: &'a mut [u32],
}

impl<'a> Docs<'a> {
    /// All of a worker's documents.
    pub fn all(state: &'a mut LdaWorkerState) -> Docs<'a> {
        Docs {
            offsets: &state.doc_offsets,
            tokens: &state.tokens,
            z: &mut state.z,
            doc_topic: &mut state.doc_topic,
        }
    }
}

/// The constants of a sweep's conditional.
#[derive(Debug, Clone, Copy)]
pub(super) struct Conditional {
    pub k: usize,
    pub alpha: f64,
    pub beta: f64,
    pub vbeta: f64,
}

impl Conditional {
    pub fn of(state: &LdaWorkerState, hyper: &LdaHyper) -> Conditional {
        let (alpha, beta) = hyper.effective();
        Conditional {
            k: state.topics as usize,
            alpha,
            beta,
            vbeta: beta * f64::from(state.vocab_size.max(1)),
        }
    }
}

impl SparseLda {
    /// Loads the engine's counts from the worker's copy (`nwords x K`) and totals.
    pub(super) fn load(&mut self, word_topic: &[f32], totals: &[f32], c: Conditional) {
        let (k, nwords) = (c.k, word_topic.len() / c.k.max(1));
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
                .map(|&n| 1.0 / (f64::from(n.max(0)) + c.vbeta)),
        );
        self.coef.clear();
        self.coef.resize(k, 0.0);
        self.qterms.clear();
        self.qterms.reserve(k);
    }

    /// Resamples `docs` in order against the loaded counts, moving them as it goes.
    pub(super) fn resample(&mut self, docs: Docs<'_>, c: Conditional, key: SweepKey) {
        let (k, alpha, beta, vbeta) = (c.k, c.alpha, c.beta, c.vbeta);
        let ab = alpha * beta;
        let SparseLda {
            wt,
            nz,
            tot,
            inv_den,
            coef,
            qterms,
            doc_nz,
        } = self;
        let first = docs.offsets.first().copied().unwrap_or(0);
        let mut uniforms = key.uniforms();
        for (d, ndk) in docs.doc_topic.chunks_exact_mut(k).enumerate() {
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
            for i in docs.offsets[d]..docs.offsets[d + 1] {
                // Later tokens' words: their lists' headers, then the lists and the count.
                if let Some(&w) = docs.tokens.get(i - first + 2 * PREFETCH_AHEAD) {
                    if let Some(list) = nz.get(w as usize) {
                        prefetch::item(list);
                    }
                }
                if let Some(&w) = docs.tokens.get(i - first + PREFETCH_AHEAD) {
                    if let Some(list) = nz.get(w as usize) {
                        prefetch::first(list, PREFETCH_ENTRIES);
                    }
                    let z = docs.z[i - first + PREFETCH_AHEAD] as usize;
                    if let Some(count) = wt.get((w as usize).wrapping_mul(k).wrapping_add(z)) {
                        prefetch::item(count);
                    }
                }
                let w = docs.tokens[i - first] as usize;
                let old = docs.z[i - first] as usize;

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
                docs.z[i - first] = new as u32;
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
    }

    /// The sum of `engines`' moves since they loaded the copy `word_topic` (of the rows
    /// `words`) and `totals`, written into them and returned as the delta. Each cell's change is
    /// summed by ranges of rows, on as many threads as there are engines.
    pub(super) fn write_moves(
        engines: &[SparseLda],
        words: &[u32],
        topics: u32,
        word_topic: &mut [f32],
        totals: &mut [f32],
    ) -> LdaDelta {
        let (k, rows) = (topics as usize, words.len());
        let parts = crate::par::map(rows.div_ceil(MERGE_ROWS), engines.len(), |p| {
            let cells = p * MERGE_ROWS * k..((p + 1) * MERGE_ROWS).min(rows) * k;
            let base: Vec<i32> = word_topic[cells.clone()]
                .iter()
                .map(|&x| to_count(x))
                .collect();
            let mut sum = vec![0i32; base.len()];
            for e in engines {
                for ((s, &c), &b) in sum.iter_mut().zip(&e.wt[cells.clone()]).zip(&base) {
                    *s += c - b;
                }
            }
            let first = cells.start;
            sum.iter()
                .enumerate()
                .filter(|(_, &d)| d != 0)
                .map(|(i, &d)| (first + i, d))
                .collect::<Vec<_>>()
        });
        let mut entries = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        for (cell, d) in parts.into_iter().flatten() {
            word_topic[cell] += d as f32;
            entries.push((words[cell / k], (cell % k) as u32, d));
        }
        let mut totals_delta = vec![0i32; k];
        for (t, (x, dt)) in totals.iter_mut().zip(&mut totals_delta).enumerate() {
            let base = to_count(*x);
            *dt = engines.iter().map(|e| e.tot[t] - base).sum();
            *x += *dt as f32;
        }
        LdaDelta {
            topics,
            entries,
            totals: totals_delta,
        }
    }

    /// The engine's counts of `cells` (a range of the flat `nwords x K` copy).
    #[cfg(test)]
    pub(super) fn counts(&self, cells: std::ops::Range<usize>) -> &[i32] {
        &self.wt[cells]
    }

    /// The engine's topic totals.
    #[cfg(test)]
    pub(super) fn totals(&self) -> &[i32] {
        &self.tot
    }
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
        let c = Conditional::of(state, hyper);
        self.load(word_topic, totals, c);
        self.resample(Docs::all(state), c, key);
        Ok(SparseLda::write_moves(
            std::slice::from_ref(self),
            &state.words,
            state.topics,
            word_topic,
            totals,
        ))
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
}
