//! [`WordMajorLda`]: the word-major sweep on the CPU's threads, in document groups.

use super::{
    draw, unit_f32, DocList, DocLists, WordMajorPriors, WordOrder, WordTable, DEVICE_LANES,
};
use crate::error::ComputeError;
use crate::lda::compute::{check_dims, runs_by_tokens, LdaCompute};
use crate::lda::{LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use crate::par;

/// The word-major sweep on the CPU (see the module): `threads` threads share a group's words.
#[derive(Debug, Clone)]
pub struct WordMajorLda {
    lanes: usize,
    threads: usize,
    groups: usize,
}

impl Default for WordMajorLda {
    fn default() -> Self {
        WordMajorLda::new(1)
    }
}

impl WordMajorLda {
    /// The engine on `threads` threads (the sweep is the same on any number), summing in chunks
    /// of the device's [`DEVICE_LANES`], in one document group.
    pub fn new(threads: usize) -> Self {
        WordMajorLda {
            lanes: DEVICE_LANES,
            threads: threads.max(1),
            groups: 1,
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

    /// Sweeps in `groups` document groups (at least 1; fewer where a state has fewer
    /// documents): see the module. Another chain than one group's, as the device runs it with
    /// the same number.
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups.max(1);
        self
    }

    /// The width of the chunks the sums are formed in.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// The document groups a sweep is cut into.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Every token's new topic, by position, drawn as in a sweep of one group: all from the
    /// counts given (nothing is modified).
    pub fn draw_all(
        &self,
        state: &LdaWorkerState,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> Vec<u32> {
        check_dims(state, word_topic, totals, hyper);
        let by_word = WordOrder::of(state);
        let lists = DocLists::of(state);
        let (span, drawn) =
            self.draw_group(state, &by_word, &lists, 0, word_topic, totals, hyper, key);
        debug_assert_eq!(span, 0..state.tokens.len());
        let mut new = vec![0u32; state.tokens.len()];
        for (&i, &t) in by_word.order.iter().zip(&drawn) {
            new[i as usize] = t;
        }
        new
    }

    /// Group `g`'s draws against the counts given, in `by_word`'s order: returns the group's
    /// span of positions and the new topic of each token listed there.
    #[allow(clippy::too_many_arguments)]
    fn draw_group(
        &self,
        state: &LdaWorkerState,
        by_word: &WordOrder,
        lists: &DocLists,
        g: usize,
        word_topic: &[f32],
        totals: &[f32],
        hyper: &LdaHyper,
        key: SweepKey,
    ) -> (std::ops::Range<usize>, Vec<u32>) {
        let k = state.topics as usize;
        let pr = WordMajorPriors::of(hyper, state.vocab_size);
        let buckets = by_word.buckets(g);
        let span = by_word.span(g);
        // Runs of buckets balanced by tokens, ended at their positions relative to the span.
        let runs = runs_by_tokens(
            &by_word.offsets[buckets.start..=buckets.end],
            self.threads * 4,
        );
        let ends: Vec<usize> = runs[1..]
            .iter()
            .map(|&r| by_word.offsets[buckets.start + r] - span.start)
            .collect();
        let mut drawn = vec![0u32; span.len()];
        let lanes = self.lanes;
        par::fill(&mut drawn, &ends, self.threads, |run, out| {
            let (mut table, mut scratch) = (WordTable::default(), Vec::new());
            let mut uniforms = key.uniforms();
            let mut at = 0;
            for b in buckets.start + runs[run]..buckets.start + runs[run + 1] {
                let tokens = by_word.tokens(b);
                if tokens.is_empty() {
                    continue;
                }
                let w = by_word.word_of(b);
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
        (span, drawn)
    }
}

/// The moves of a sweep so far: per cell of the copy, and per topic.
struct Moves {
    cells: Vec<i32>,
    totals: Vec<i32>,
}

impl Moves {
    /// Applies the moves of the tokens of `span` (positions, ascending: the device applies a
    /// group's documents so) to their topics in `new` (by position) to the state, the copy and
    /// the totals, and counts them.
    fn apply(
        &mut self,
        state: &mut LdaWorkerState,
        doc_of: &[u32],
        span: std::ops::Range<usize>,
        new: &[u32],
        word_topic: &mut [f32],
        totals: &mut [f32],
    ) {
        let k = state.topics as usize;
        for i in span {
            let (old, to) = (state.z[i] as usize, new[i] as usize);
            if old == to {
                continue;
            }
            let (w, d) = (state.tokens[i] as usize, doc_of[i] as usize);
            let ndk = &mut state.doc_topic[d * k..(d + 1) * k];
            ndk[old] = ndk[old].saturating_sub(1);
            ndk[to] += 1;
            word_topic[w * k + old] -= 1.0;
            word_topic[w * k + to] += 1.0;
            totals[old] -= 1.0;
            totals[to] += 1.0;
            self.cells[w * k + old] -= 1;
            self.cells[w * k + to] += 1;
            self.totals[old] -= 1;
            self.totals[to] += 1;
            state.z[i] = to as u32;
        }
    }

    /// The delta (entries in row, then topic order).
    fn into_delta(self, state: &LdaWorkerState) -> LdaDelta {
        let k = state.topics as usize;
        let entries = self
            .cells
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != 0)
            .map(|(cell, &c)| (state.words[cell / k], (cell % k) as u32, c))
            .collect();
        LdaDelta {
            topics: state.topics,
            entries,
            totals: self.totals,
        }
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
        check_dims(state, word_topic, totals, hyper);
        let by_word = WordOrder::grouped(state, self.groups);
        let lists = DocLists::of(state);
        let mut moves = Moves {
            cells: vec![0; word_topic.len()],
            totals: vec![0; state.topics as usize],
        };
        let mut new = vec![0u32; state.tokens.len()];
        for g in 0..by_word.groups() {
            let (span, drawn) =
                self.draw_group(state, &by_word, &lists, g, word_topic, totals, hyper, key);
            for (&i, &t) in by_word.order[span.clone()].iter().zip(&drawn) {
                new[i as usize] = t;
            }
            moves.apply(state, &by_word.doc_of, span, &new, word_topic, totals);
        }
        Ok(moves.into_delta(state))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lda::{synthetic_lda, SyntheticLdaSpec};

    fn worker() -> (LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper) {
        worker_of(|docs| docs)
    }

    /// A worker over the first 300 built-in documents as `edit` leaves them.
    fn worker_of(
        edit: impl Fn(Vec<Vec<u32>>) -> Vec<Vec<u32>>,
    ) -> (LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper) {
        let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(5));
        let hyper = LdaHyper {
            topics: 40,
            ..LdaHyper::default()
        };
        let docs = edit(syn.corpus.docs[..300].to_vec());
        let (state, init) =
            LdaWorkerState::init(&docs, syn.corpus.vocab_size, &hyper, 5, 0).unwrap();
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
    fn the_sweep_is_the_same_on_any_number_of_threads() {
        let (state, wt, totals, hyper) = worker();
        for groups in [1, 5] {
            let run = |threads: usize| {
                let (mut s, mut w, mut t) = (state.clone(), wt.clone(), totals.clone());
                let mut e = WordMajorLda::new(threads).with_groups(groups);
                let mut deltas = Vec::new();
                for clock in 1..=3 {
                    deltas.push(e.sweep(&mut s, &mut w, &mut t, &hyper, key(clock)).unwrap());
                }
                (s.z, s.doc_topic, w, t, deltas)
            };
            let one = run(1);
            assert!(one.4[0].entries.len() > 100, "tokens moved");
            assert_eq!(run(3), one, "groups {groups}");
            assert_eq!(run(8), one, "groups {groups}");
        }
    }

    /// A sweep in groups, spelled out: each group of documents draws every token of its own
    /// with `draw` from the counts as the groups before it left them (the documents' lists
    /// formed afresh at the group's start), then applies its moves; the engine's sweep, which
    /// forms the lists once and draws by word on threads, must leave the same state, copy,
    /// totals and delta.
    #[test]
    fn a_sweep_in_groups_is_the_groups_swept_in_turn() {
        // Also with empty documents: a third of them, and the last 40 (groups without tokens).
        let emptied = |mut docs: Vec<Vec<u32>>| {
            let n = docs.len();
            for (d, doc) in docs.iter_mut().enumerate() {
                if d % 3 == 1 || d + 40 >= n {
                    doc.clear();
                }
            }
            docs
        };
        for (state, wt, totals, hyper) in [worker(), worker_of(emptied)] {
            sweep_in_groups_by_hand(state, wt, totals, hyper);
        }
    }

    #[allow(clippy::needless_range_loop)] // positions index several arrays
    fn sweep_in_groups_by_hand(
        state: LdaWorkerState,
        wt: Vec<f32>,
        totals: Vec<f32>,
        hyper: LdaHyper,
    ) {
        let k = state.topics as usize;
        let pr = WordMajorPriors::of(&hyper, state.vocab_size);
        for groups in [2, 7, 300, 1000] {
            let (mut s, mut w, mut t) = (state.clone(), wt.clone(), totals.clone());
            let (mut cells, mut tot) = (vec![0i32; w.len()], vec![0i32; k]);
            // At most one group a document, as `WordOrder::grouped` cuts them.
            let bounds = runs_by_tokens(&s.doc_offsets, groups.min(s.num_docs()));
            for g in bounds.windows(2) {
                let lists = DocLists::of(&s);
                let mut new = s.z.clone();
                for d in g[0]..g[1] {
                    for i in s.doc_offsets[d]..s.doc_offsets[d + 1] {
                        let word = s.tokens[i] as usize;
                        let row = &w[word * k..(word + 1) * k];
                        let mut table = WordTable::default();
                        table.fill(row, &t, &pr, DEVICE_LANES);
                        let u = key(4).uniform(i as u64) as f32;
                        let doc = lists.doc(&s, d);
                        new[i] = draw(&table, row, &t, doc, s.z[i], u, &pr, 32, &mut Vec::new());
                    }
                }
                for d in g[0]..g[1] {
                    for i in s.doc_offsets[d]..s.doc_offsets[d + 1] {
                        let (old, to, word) =
                            (s.z[i] as usize, new[i] as usize, s.tokens[i] as usize);
                        s.doc_topic[d * k + old] -= 1;
                        s.doc_topic[d * k + to] += 1;
                        for (x, by) in [(old, -1), (to, 1)] {
                            w[word * k + x] += by as f32;
                            t[x] += by as f32;
                            cells[word * k + x] += by;
                            tot[x] += by;
                        }
                        s.z[i] = to as u32;
                    }
                }
            }
            let (mut s2, mut w2, mut t2) = (state.clone(), wt.clone(), totals.clone());
            let delta = WordMajorLda::new(3)
                .with_groups(groups)
                .sweep(&mut s2, &mut w2, &mut t2, &hyper, key(4))
                .unwrap();
            assert_eq!(
                (&s2.z, &s2.doc_topic),
                (&s.z, &s.doc_topic),
                "groups {groups}"
            );
            assert_eq!((&w2, &t2), (&w, &t), "groups {groups}");
            assert_eq!(delta.totals, tot);
            let want: Vec<_> = cells
                .iter()
                .enumerate()
                .filter(|(_, &c)| c != 0)
                .map(|(cell, &c)| (s.words[cell / k], (cell % k) as u32, c))
                .collect();
            assert_eq!(delta.entries, want, "groups {groups}");
        }
    }

    /// The first group draws from the sweep's starting counts, as one group would; the later
    /// groups see its moves, so some of their draws differ.
    #[test]
    fn later_groups_see_the_earlier_groups_moves() {
        let (state, wt, totals, hyper) = worker();
        let at_start = WordMajorLda::new(2).draw_all(&state, &wt, &totals, &hyper, key(1));
        let mut s = state.clone();
        let (mut w, mut t) = (wt.clone(), totals.clone());
        let e = WordMajorLda::new(2).with_groups(4);
        let mut e2 = e.clone();
        e2.sweep(&mut s, &mut w, &mut t, &hyper, key(1)).unwrap();
        let first = WordOrder::grouped(&state, 4).span(0);
        assert_eq!(s.z[first.clone()], at_start[first.clone()]);
        let later = first.end..state.tokens.len();
        let same = later.clone().filter(|&i| s.z[i] == at_start[i]).count();
        assert!(same < later.len(), "no later draw changed");
        assert_eq!(e.groups(), 4);
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
