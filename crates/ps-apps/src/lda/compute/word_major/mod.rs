//! [`WordMajorLda`]: collapsed Gibbs with the sweep's counts held fixed, tokens visited word by
//! word: the CPU twin of the device's word-major sampler (`kernels/lda_word.cu`, worker-gpu's
//! `CudaWordLda`), and a CPU engine of its own.
//!
//! # What a sweep does
//! The documents are cut into `G` groups of consecutive documents, balanced by tokens
//! ([`WordMajorLda::with_groups`]; one group unless asked), and the groups are swept one after
//! another. In a group, every token draws its new topic from the exact conditional of
//! [`LdaCompute`] over the counts as they were when the group began, its own count removed; the
//! group's moves are applied together before the next group draws (delayed count updates, as
//! CuLDA_CGS and WarpLDA sweep). No draw of a group depends on another, so a group's tokens can
//! be visited in any order, on any number of threads or device warps, and the sweep is the same
//! bit for bit. Within a group a token does not see the moves of the tokens before it, as
//! workers of AD-LDA do not see each other's; [`CpuLda`](super::CpuLda) and
//! [`SparseLda`](super::SparseLda) apply each move before the next draw. Groups shorten that
//! lag: a word's tokens in group 2 see the moves of its tokens in group 1. (Groups of words do
//! not: every token of a word would still draw against the same stale word row.) A document's
//! counts change only when its own group's moves land, so the documents' lists
//! ([`DocLists`]) are formed once a sweep; each group re-forms the tables of its words.
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

use super::to_count;
use crate::lda::LdaHyper;

mod engine;
mod order;

pub use engine::WordMajorLda;
pub use order::{DocLists, WordOrder};

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

/// `u` in `[0, 1)` as the `f32` the draw takes, kept below 1.
pub fn unit_f32(u: f64) -> f32 {
    (u as f32).min(1.0 - f32::EPSILON / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
