//! [`WordMajorLda`]: collapsed Gibbs with the sweep's counts held fixed, tokens visited word by
//! word: the CPU twin of the device's word-major sampler (`kernels/lda_word.cu`, worker-gpu's
//! `CudaWordLda`), and a CPU engine of its own.
//!
//! # What a sweep does
//! Every token draws its new topic from the exact conditional of [`LdaCompute`] over the counts
//! as they were when the sweep began, its own count removed; all moves are applied together at
//! the end (delayed count updates, as CuLDA_CGS and WarpLDA sweep). No draw depends on another,
//! so tokens can be visited in any order, on any number of threads or device warps, and the
//! sweep is the same bit for bit. Within a sweep a token does not see the moves of the tokens
//! before it, as workers of AD-LDA do not see each other's; [`CpuLda`](super::CpuLda) and
//! [`SparseLda`](super::SparseLda) apply each move before the next draw.
//!
//! # The draw, spelled out (the device computes the same `f32` operations in the same order)
//! With `a = alpha`, `b = beta`, `vb = V * beta` as `f32` ([`WordMajorPriors`]) and counts read
//! as every engine reads them (rounded, clamped at 0 in the probability only):
//! * `phi[t] = (n_wt + b) / (n_t + vb)` for the token's word `w`, every topic `t` (the word's
//!   table, shared by all of its tokens), and `q[t] = a * phi[t]`;
//! * chunk `c` of [`WordMajorLda::lanes`] topics sums its `q` by the lanes' inclusive scan
//!   ([`lane_scan`]: steps 1, 2, 4, ...), and `qp[c] = qp[c - 1] + (chunk c's sum)`;
//! * for a token of topic `o` in document `d`: `phi' = (max(n_wo - 1, 0) + b) / (max(n_o - 1,
//!   0) + vb)` and `corr = q[o] - a * phi'`; the word part is `Q = qp[last] - corr`;
//! * the document part: over the document's nonzero topics `t_j` (in topic order, counts `n_j`,
//!   minus one at `o`), `s_j = n_j * phi[t_j]` (`phi'` at `o`), summed in chunks of lanes (a
//!   scan plus the carry): `S` and the prefix sums `P_j`;
//! * `x = u * (S + Q)` with the token's Philox uniform `u` ([`SweepKey::uniform`] of its
//!   position); below `S` the topic is the first `t_j` with `x < P_j`; else, with `y = x - S`,
//!   the chunk is the first `c` with `y < qp[c]` (less `corr` from `o`'s chunk on) and the topic
//!   the first in it whose scan, from the previous chunk's bound, passes `y`. Rounding falls
//!   back to the chunk's, or the table's, last topic; a total that is not positive and finite
//!   draws `u * K` as the oracle does.

use super::{check_dims, to_count, LdaCompute};
use crate::error::ComputeError;
use crate::lda::{LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use crate::par;

/// Lanes of a device warp: the width of the chunks the device sums in.
pub const DEVICE_LANES: usize = 32;

/// The priors as the draw uses them, in `f32`: `alpha`, `beta` and `V * beta` (formed in `f64`,
/// then rounded once), as the host hands them to the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WordMajorPriors {
    pub alpha: f32,
    pub beta: f32,
    pub vbeta: f32,
}

impl WordMajorPriors {
    /// The priors of `hyper` ([`LdaHyper::effective`]) for a vocabulary of `vocab_size` words.
    pub fn of(hyper: &LdaHyper, vocab_size: u32) -> Self {
        let (alpha, beta) = hyper.effective();
        WordMajorPriors {
            alpha: alpha as f32,
            beta: beta as f32,
            vbeta: (beta * f64::from(vocab_size.max(1))) as f32,
        }
    }

    /// `(max(n_wt - own, 0) + b) / (max(n_t - own, 0) + vb)` from the copy's cells.
    #[inline]
    pub fn phi(&self, word_cell: f32, total: f32, own: i32) -> f32 {
        let nw = (to_count(word_cell) - own).max(0) as f32;
        let nt = (to_count(total) - own).max(0) as f32;
        (nw + self.beta) / (nt + self.vbeta)
    }
}

/// The lanes' inclusive scan of `v` (one value per lane, `v.len()` a power of two): after it,
/// `v[l]` is the sum of lanes `0..=l`, added as the device's shuffle scan adds them (step 1, 2,
/// 4, ...: lane `l` adds lane `l - step`'s value of the step before).
#[inline]
pub fn lane_scan(v: &mut [f32]) {
    let n = v.len();
    let mut step = 1;
    while step < n {
        for l in (step..n).rev() {
            v[l] += v[l - step];
        }
        step <<= 1;
    }
}

/// One word's table: `phi` for every topic and the chunks' running sums `qp`.
#[derive(Debug, Clone, Default)]
pub struct WordTable {
    pub phi: Vec<f32>,
    pub qp: Vec<f32>,
}

impl WordTable {
    /// Forms the table of the word row `row` (K cells of the copy) against `totals`.
    pub fn fill(&mut self, row: &[f32], totals: &[f32], pr: &WordMajorPriors, lanes: usize) {
        let k = row.len();
        self.phi.clear();
        self.phi
            .extend(row.iter().zip(totals).map(|(&w, &t)| pr.phi(w, t, 0)));
        self.qp.clear();
        let mut lanes_buf = [0f32; DEVICE_LANES];
        let lane = &mut lanes_buf[..lanes];
        let mut acc = 0f32;
        for base in (0..k).step_by(lanes) {
            for (l, x) in lane.iter_mut().enumerate() {
                *x = self.phi.get(base + l).map_or(0.0, |&p| pr.alpha * p);
            }
            lane_scan(lane);
            acc += lane[lanes - 1];
            self.qp.push(acc);
        }
    }
}

/// A document's nonzero topics in topic order, and their counts.
#[derive(Debug, Clone, Copy)]
pub struct DocList<'a> {
    pub topics: &'a [u32],
    pub counts: &'a [u32],
}

/// The draw of the module's documentation: the new topic of a token of topic `old` whose word
/// has the table `table` (its row `row` of the copy, and `totals`, give the `phi'` of `old`) in
/// a document with the nonzero topics `doc`, at the uniform `u`. `scratch` holds the document
/// part's prefix sums.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    table: &WordTable,
    row: &[f32],
    totals: &[f32],
    doc: DocList<'_>,
    old: u32,
    u: f32,
    pr: &WordMajorPriors,
    lanes: usize,
    scratch: &mut Vec<f32>,
) -> u32 {
    let k = table.phi.len();
    let o = old as usize;
    let phi_own = pr.phi(row[o], totals[o], 1);
    let corr = pr.alpha * table.phi[o] - pr.alpha * phi_own;
    let q = table.qp[table.qp.len() - 1] - corr;

    // The document part, in chunks of lanes: a scan plus the carry.
    scratch.clear();
    let mut lanes_buf = [0f32; DEVICE_LANES];
    let lane = &mut lanes_buf[..lanes];
    let mut carry = 0f32;
    let n = doc.topics.len();
    for base in (0..n).step_by(lanes) {
        for (l, x) in lane.iter_mut().enumerate() {
            *x = if base + l < n {
                let (t, c) = (doc.topics[base + l], doc.counts[base + l]);
                let (c, p) = if t == old {
                    (c.saturating_sub(1), phi_own)
                } else {
                    (c, table.phi[t as usize])
                };
                c as f32 * p
            } else {
                0.0
            };
        }
        lane_scan(lane);
        scratch.extend(lane.iter().take(n - base).map(|x| x + carry));
        carry += lane[lanes - 1];
    }
    let s = carry;

    let total = s + q;
    if !(total > 0.0 && total.is_finite()) {
        return ((f64::from(u) * k as f64) as usize).min(k - 1) as u32;
    }
    let x = u * total;
    if x < s {
        return scratch
            .iter()
            .position(|&p| x < p)
            .map_or(doc.topics[n - 1], |j| doc.topics[j]);
    }
    let y = x - s;
    let own_chunk = o / lanes;
    let bound = |c: usize| {
        if c >= own_chunk {
            table.qp[c] - corr
        } else {
            table.qp[c]
        }
    };
    let Some(c) = (0..table.qp.len()).position(|c| y < bound(c)) else {
        return (k - 1) as u32;
    };
    let start = if c == 0 { 0.0 } else { bound(c - 1) };
    for (l, x) in lane.iter_mut().enumerate() {
        let t = c * lanes + l;
        *x = if t >= k {
            0.0
        } else if t == o {
            pr.alpha * phi_own
        } else {
            pr.alpha * table.phi[t]
        };
    }
    lane_scan(lane);
    (0..lanes)
        .position(|l| c * lanes + l < k && y < lane[l] + start)
        .map_or(((c + 1) * lanes - 1).min(k - 1), |l| c * lanes + l) as u32
}

/// The documents' nonzero topics, each document's list at its own token offset (a document
/// has at most as many nonzero topics as tokens): `topics[doc_offsets[d]..][..nnz[d]]`.
#[derive(Debug, Clone, Default)]
pub struct DocLists {
    pub topics: Vec<u32>,
    pub counts: Vec<u32>,
    pub nnz: Vec<u32>,
}

impl DocLists {
    /// The lists of `state`'s document-topic counts (a list is cut at the document's length).
    pub fn of(state: &LdaWorkerState) -> Self {
        let k = state.topics as usize;
        let n = state.tokens.len();
        let mut lists = DocLists {
            topics: vec![0; n],
            counts: vec![0; n],
            nnz: vec![0; state.num_docs()],
        };
        for (d, nnz) in lists.nnz.iter_mut().enumerate() {
            let (lo, hi) = (state.doc_offsets[d], state.doc_offsets[d + 1]);
            let ndk = &state.doc_topic[d * k..(d + 1) * k];
            let (topics, counts) = (&mut lists.topics[lo..hi], &mut lists.counts[lo..hi]);
            *nnz = fill_list(ndk, topics, counts) as u32;
        }
        lists
    }

    /// Document `d`'s list alone (topics, counts), as [`DocLists::of`] forms it.
    pub fn list_of(state: &LdaWorkerState, d: usize) -> (Vec<u32>, Vec<u32>) {
        let k = state.topics as usize;
        let len = state.doc_offsets[d + 1] - state.doc_offsets[d];
        let (mut topics, mut counts) = (vec![0; len], vec![0; len]);
        let n = fill_list(
            &state.doc_topic[d * k..(d + 1) * k],
            &mut topics,
            &mut counts,
        );
        topics.truncate(n);
        counts.truncate(n);
        (topics, counts)
    }

    /// Document `d`'s list.
    pub fn doc(&self, state: &LdaWorkerState, d: usize) -> DocList<'_> {
        let lo = state.doc_offsets[d];
        let hi = lo + self.nnz[d] as usize;
        DocList {
            topics: &self.topics[lo..hi],
            counts: &self.counts[lo..hi],
        }
    }
}

/// Writes the nonzero topics of the document row `ndk` in topic order, and their counts, while
/// they fit `topics` (the document's length); returns how many were written.
fn fill_list(ndk: &[u32], topics: &mut [u32], counts: &mut [u32]) -> usize {
    let mut at = 0;
    for (t, &c) in ndk.iter().enumerate() {
        if c != 0 && at < topics.len() {
            topics[at] = t as u32;
            counts[at] = c;
            at += 1;
        }
    }
    at
}

/// The tokens grouped by word: word row `w`'s token positions (ascending) are
/// `order[offsets[w]..offsets[w + 1]]`; `doc_of[i]` is token `i`'s document.
#[derive(Debug, Clone, Default)]
pub struct WordOrder {
    pub offsets: Vec<usize>,
    pub order: Vec<u32>,
    pub doc_of: Vec<u32>,
}

impl WordOrder {
    /// The order of `state`'s tokens (a counting sort by word row).
    pub fn of(state: &LdaWorkerState) -> Self {
        let words = state.words.len();
        let mut offsets = vec![0usize; words + 1];
        for &w in &state.tokens {
            offsets[w as usize + 1] += 1;
        }
        for w in 0..words {
            offsets[w + 1] += offsets[w];
        }
        let mut next = offsets.clone();
        let mut order = vec![0u32; state.tokens.len()];
        for (i, &w) in state.tokens.iter().enumerate() {
            order[next[w as usize]] = i as u32;
            next[w as usize] += 1;
        }
        let mut doc_of = vec![0u32; state.tokens.len()];
        for d in 0..state.num_docs() {
            doc_of[state.doc_offsets[d]..state.doc_offsets[d + 1]].fill(d as u32);
        }
        WordOrder {
            offsets,
            order,
            doc_of,
        }
    }
}

/// The word-major sweep on the CPU (see the module): `threads` threads share the words.
#[derive(Debug, Clone)]
pub struct WordMajorLda {
    lanes: usize,
    threads: usize,
}

impl Default for WordMajorLda {
    fn default() -> Self {
        WordMajorLda::new(1)
    }
}

impl WordMajorLda {
    /// The engine on `threads` threads (the sweep is the same on any number), summing in chunks
    /// of the device's [`DEVICE_LANES`].
    pub fn new(threads: usize) -> Self {
        WordMajorLda {
            lanes: DEVICE_LANES,
            threads: threads.max(1),
        }
    }

    /// The same draws summed in chunks of `lanes` topics (a power of two up to 32): what the
    /// device's code computes when compiled with that many lanes (the host test of
    /// `kernels/lda_word.cuh` runs it with 1).
    ///
    /// # Panics
    /// If `lanes` is not a power of two in `1..=32` (caller bug).
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        assert!(
            lanes.is_power_of_two() && lanes <= DEVICE_LANES,
            "lanes must be a power of two up to 32"
        );
        self.lanes = lanes;
        self
    }

    /// The width of the chunks the sums are formed in.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Every token's new topic, by position (nothing is modified).
    pub fn draw_all(
        &self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Vec<u32> {
        check_dims(state, word_topic, totals, hyper);
        let k = state.topics as usize;
        let pr = WordMajorPriors::of(hyper, state.vocab_size);
        let by_word = WordOrder::of(state);
        let lists = DocLists::of(state);
        let runs = super::runs_by_tokens(&by_word.offsets, self.threads * 4);
        let ends: Vec<usize> = runs[1..].iter().map(|&w| by_word.offsets[w]).collect();
        let mut drawn = vec![0u32; state.tokens.len()];
        let lanes = self.lanes;
        par::fill(&mut drawn, &ends, self.threads, |run, out| {
            let (mut table, mut scratch) = (WordTable::default(), Vec::new());
            let mut uniforms = key.uniforms();
            let mut at = 0;
            for w in runs[run]..runs[run + 1] {
                let tokens = &by_word.order[by_word.offsets[w]..by_word.offsets[w + 1]];
                if tokens.is_empty() {
                    continue;
                }
                let row = &word_topic[w * k..(w + 1) * k];
                table.fill(row, totals, &pr, lanes);
                for &i in tokens {
                    let doc = lists.doc(state, by_word.doc_of[i as usize] as usize);
                    let u = uniforms.get(u64::from(i)) as f32;
                    out[at] = draw(
                        &table,
                        row,
                        totals,
                        doc,
                        state.z[i as usize],
                        u,
                        &pr,
                        lanes,
                        &mut scratch,
                    );
                    at += 1;
                }
            }
        });
        let mut new = vec![0u32; state.tokens.len()];
        for (&i, &t) in by_word.order.iter().zip(&drawn) {
            new[i as usize] = t;
        }
        new
    }
}

/// Applies the moves from `state.z` to `new` to the state, the copy and the totals, and returns
/// their delta (entries in row, then topic order).
fn apply_moves(
    state: &mut LdaWorkerState,
    new: &[u32],
    word_topic: &mut [f32],
    totals: &mut [f32],
) -> LdaDelta {
    let k = state.topics as usize;
    let mut moves = vec![0i32; word_topic.len()];
    let mut tot = vec![0i32; k];
    for d in 0..state.num_docs() {
        let tokens = state.doc_offsets[d]..state.doc_offsets[d + 1];
        for (i, &to) in tokens.clone().zip(&new[tokens]) {
            let (old, to) = (state.z[i] as usize, to as usize);
            if old == to {
                continue;
            }
            let w = state.tokens[i] as usize;
            let ndk = &mut state.doc_topic[d * k..(d + 1) * k];
            ndk[old] = ndk[old].saturating_sub(1);
            ndk[to] += 1;
            word_topic[w * k + old] -= 1.0;
            word_topic[w * k + to] += 1.0;
            totals[old] -= 1.0;
            totals[to] += 1.0;
            moves[w * k + old] -= 1;
            moves[w * k + to] += 1;
            tot[old] -= 1;
            tot[to] += 1;
            state.z[i] = to as u32;
        }
    }
    let entries = moves
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 0)
        .map(|(cell, &c)| (state.words[cell / k], (cell % k) as u32, c))
        .collect();
    LdaDelta {
        topics: state.topics,
        entries,
        totals: tot,
    }
}

impl LdaCompute for WordMajorLda {
    fn sweep(
        &mut self,
        state: &mut LdaWorkerState,
        word_topic: &mut [f32],
        totals: &mut [f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Result<LdaDelta, ComputeError> {
        let new = self.draw_all(state, word_topic, totals, hyper, key);
        Ok(apply_moves(state, &new, word_topic, totals))
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
        let i = state.doc_offsets[doc] + pos;
        assert!(
            i < state.doc_offsets[doc + 1],
            "sample_token: pos out of range"
        );
        let pr = WordMajorPriors::of(hyper, state.vocab_size);
        let w = state.tokens[i] as usize;
        let row = &word_topic[w * k..(w + 1) * k];
        let mut table = WordTable::default();
        table.fill(row, totals, &pr, self.lanes);
        let (topics, counts) = DocLists::list_of(state, doc);
        Ok(draw(
            &table,
            row,
            totals,
            DocList {
                topics: &topics,
                counts: &counts,
            },
            state.z[i],
            unit_f32(u),
            &pr,
            self.lanes,
            &mut Vec::new(),
        ))
    }

    fn name(&self) -> &'static str {
        "word-major"
    }
}

/// `u` in `[0, 1)` as the `f32` the draw takes, kept below 1.
pub fn unit_f32(u: f64) -> f32 {
    (u as f32).min(1.0 - f32::EPSILON / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lda::{synthetic_lda, SyntheticLdaSpec};

    fn worker() -> (LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper) {
        let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(5));
        let hyper = LdaHyper {
            topics: 40,
            ..LdaHyper::default()
        };
        let docs = &syn.corpus.docs[..300];
        let (state, init) =
            LdaWorkerState::init(docs, syn.corpus.vocab_size, &hyper, 5, 0).unwrap();
        let v = syn.corpus.vocab_size as usize;
        let (mut table, mut totals) = (vec![0f32; v * 40], vec![0f32; 40]);
        init.apply(&mut table, &mut totals);
        let wt = crate::lda::gather_rows(&table, &state.words, 40);
        (state, wt, totals, hyper)
    }

    fn key(clock: u32) -> SweepKey {
        SweepKey {
            seed: 11,
            worker: 1,
            clock,
        }
    }

    #[test]
    fn the_lanes_scan_is_the_running_sum() {
        let mut v: Vec<f32> = (1..=32).map(|x| x as f32).collect();
        lane_scan(&mut v);
        let want: Vec<f32> = (1..=32).map(|x| (x * (x + 1) / 2) as f32).collect();
        assert_eq!(v, want);
        let mut one = [3.5f32];
        lane_scan(&mut one);
        assert_eq!(one, [3.5]);
    }

    #[test]
    fn the_sweep_is_the_same_on_any_number_of_threads() {
        let (state, wt, totals, hyper) = worker();
        let run = |threads: usize| {
            let (mut s, mut w, mut t) = (state.clone(), wt.clone(), totals.clone());
            let mut e = WordMajorLda::new(threads);
            let mut deltas = Vec::new();
            for clock in 1..=3 {
                deltas.push(e.sweep(&mut s, &mut w, &mut t, &hyper, key(clock)).unwrap());
            }
            (s.z, s.doc_topic, w, t, deltas)
        };
        let one = run(1);
        assert!(one.4[0].entries.len() > 100, "tokens moved");
        assert_eq!(run(3), one);
        assert_eq!(run(8), one);
    }

    /// Summed in chunks of 1 or of 32 lanes, the sums differ only in rounding, so nearly every
    /// draw is the same.
    #[test]
    fn the_chunk_width_changes_only_the_rounding() {
        let (state, wt, totals, hyper) = worker();
        let a = WordMajorLda::new(2).draw_all(&state, &wt, &totals, &hyper, key(1));
        let b = WordMajorLda::new(2)
            .with_lanes(1)
            .draw_all(&state, &wt, &totals, &hyper, key(1));
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same * 1000 >= a.len() * 999, "{same} of {}", a.len());
        assert_ne!(a, state.z, "the draws moved tokens");
    }

    #[test]
    fn sample_token_draws_as_the_sweep_does() {
        let (state, wt, totals, hyper) = worker();
        let mut e = WordMajorLda::new(1);
        let drawn = e.draw_all(&state, &wt, &totals, &hyper, key(2));
        for doc in [0usize, 7, 150, 299] {
            let len = state.doc_offsets[doc + 1] - state.doc_offsets[doc];
            for pos in [0, len / 2, len - 1] {
                let i = state.doc_offsets[doc] + pos;
                let u = key(2).uniform(i as u64);
                let t = e
                    .sample_token(&state, &wt, &totals, &hyper, doc, pos, u)
                    .unwrap();
                assert_eq!(t, drawn[i], "doc {doc} pos {pos}");
            }
        }
    }
}
