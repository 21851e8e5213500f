//! [`ParallelSparseLda`]: one worker's sweep on several threads, as approximate distributed LDA
//! (AD-LDA) within the worker.

use super::sparse::{Conditional, Docs};
use super::{check_dims, LdaCompute, SparseLda};
use crate::error::ComputeError;
use crate::lda::{LdaDelta, LdaHyper, LdaWorkerState, SweepKey};

/// A sweep on `threads` threads: the worker's documents are cut into as many runs of nearly
/// equal token counts, and each run is resampled by its own [`SparseLda`] against its own copy
/// of the counts the sweep starts from, seeing its own moves but not the other runs'. At the end
/// the runs' moves are summed into the worker's copy and the delta. This is what separate
/// workers sharing one read do (Newman et al.'s AD-LDA; MALLET's threads), without their pulls
/// and pushes: a worker on `t` threads sweeps like `t` workers.
///
/// Every token still consumes its own uniform, [`SweepKey::uniform`] of its position, so the
/// result is a function of the state, the counts, the key and the thread count, whatever the
/// scheduling; the first run's documents are resampled exactly as [`SparseLda`] would. Each
/// run's engine holds a dense copy of the worker's counts (`words x K` of `i32`).
#[derive(Debug, Clone)]
pub struct ParallelSparseLda {
    engines: Vec<SparseLda>,
}

impl ParallelSparseLda {
    /// An engine that sweeps on `threads` threads (at least 1).
    pub fn new(threads: usize) -> Self {
        ParallelSparseLda {
            engines: vec![SparseLda::new(); threads.max(1)],
        }
    }
}

/// The first document of each of `parts` runs of nearly equal token counts (`offsets` as in
/// [`LdaWorkerState::doc_offsets`]), and the end. Each run has a document, so there may be
/// fewer runs; no documents make one empty run, `[0, 0]`.
pub fn runs_by_tokens(offsets: &[usize], parts: usize) -> Vec<usize> {
    let docs = offsets.len().saturating_sub(1);
    if docs == 0 {
        return vec![0, 0];
    }
    let (first, total) = (offsets[0], offsets[docs]);
    let mut bounds = vec![0];
    for p in 1..parts.max(1) {
        let target = first + (total - first) * p / parts;
        // The first document that starts at or after the target.
        let d = offsets[..docs].partition_point(|&o| o < target);
        if d > *bounds.last().expect("bounds start with 0") && d < docs {
            bounds.push(d);
        }
    }
    bounds.push(docs);
    bounds
}

/// Cuts `docs` at the document `bounds` ([`runs_by_tokens`]).
fn split<'a>(docs: Docs<'a>, bounds: &[usize], k: usize) -> Vec<Docs<'a>> {
    let Docs {
        offsets,
        mut tokens,
        mut z,
        mut doc_topic,
    } = docs;
    let mut runs = Vec::with_capacity(bounds.len());
    for pair in bounds.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        let n = offsets[hi] - offsets[lo];
        let (t, rest_t) = tokens.split_at(n);
        let (zs, rest_z) = std::mem::take(&mut z).split_at_mut(n);
        let (dt, rest_dt) = std::mem::take(&mut doc_topic).split_at_mut((hi - lo) * k);
        runs.push(Docs {
            offsets: &offsets[lo..=hi],
            tokens: t,
            z: zs,
            doc_topic: dt,
        });
        (tokens, z, doc_topic) = (rest_t, rest_z, rest_dt);
    }
    runs
}

impl LdaCompute for ParallelSparseLda {
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
        let k = c.k;
        if state.num_docs() == 0 {
            // Nothing to resample (and no offsets to cut: a state may have none).
            return Ok(LdaDelta {
                topics: state.topics,
                entries: Vec::new(),
                totals: vec![0; k],
            });
        }
        let bounds = runs_by_tokens(&state.doc_offsets, self.engines.len());
        let runs = split(Docs::all(state), &bounds, k);
        let engines = &mut self.engines[..runs.len()];
        let (start, start_totals) = (&*word_topic, &*totals);
        std::thread::scope(|s| {
            for (engine, run) in engines.iter_mut().zip(runs) {
                s.spawn(move || {
                    engine.load(start, start_totals, c);
                    engine.resample(run, c, key);
                });
            }
        });

        Ok(SparseLda::write_moves(
            engines,
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
        // Every run samples a token as the sequential engine does.
        self.engines[0].sample_token(state, word_topic, totals, hyper, doc, pos, u)
    }

    fn name(&self) -> &'static str {
        "sparse-threads"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lda::compute::to_count;
    use crate::lda::{synthetic_lda, SyntheticLdaSpec};

    /// The runs swept one after another, each by a fresh engine from the sweep's counts, and
    /// their changes summed cell by cell: what the threads and the merge must give.
    #[test]
    fn the_sweep_is_the_sum_of_its_runs_swept_one_by_one() {
        let syn = synthetic_lda(&SyntheticLdaSpec {
            docs: 50,
            doc_len: 30,
            vocab: 200,
            topics: 6,
            ..SyntheticLdaSpec::default_builtin(8)
        });
        let hyper = LdaHyper {
            topics: 9,
            ..LdaHyper::default()
        };
        let (state0, _) = LdaWorkerState::init(&syn.corpus.docs, 200, &hyper, 8, 0).unwrap();
        let k = hyper.topics as usize;
        // The worker's counts and some of other workers'.
        let wt: Vec<f32> = state0
            .local_word_topic()
            .iter()
            .enumerate()
            .map(|(i, &c)| (c + (i % 3) as u32) as f32)
            .collect();
        let mut totals = vec![0f32; k];
        for (i, &x) in wt.iter().enumerate() {
            totals[i % k] += x;
        }
        let key = SweepKey {
            seed: 3,
            worker: 0,
            clock: 2,
        };
        let c = Conditional::of(&state0, &hyper);
        for threads in [2, 4, 7] {
            let mut want = state0.clone();
            let (mut w_want, mut t_want) = (wt.clone(), totals.clone());
            let bounds = runs_by_tokens(&state0.doc_offsets, threads);
            assert!(bounds.len() > 2, "{threads}: one run");
            for run in split(Docs::all(&mut want), &bounds, k) {
                let mut e = SparseLda::new();
                e.load(&wt, &totals, c);
                e.resample(run, c, key);
                for (i, x) in w_want.iter_mut().enumerate() {
                    *x += (e.counts(i..i + 1)[0] - to_count(wt[i])) as f32;
                }
                for (t, x) in t_want.iter_mut().enumerate() {
                    *x += (e.totals()[t] - to_count(totals[t])) as f32;
                }
            }
            let mut got = state0.clone();
            let (mut w_got, mut t_got) = (wt.clone(), totals.clone());
            ParallelSparseLda::new(threads)
                .sweep(&mut got, &mut w_got, &mut t_got, &hyper, key)
                .unwrap();
            assert_eq!(got, want, "{threads}");
            assert_eq!((w_got, t_got), (w_want, t_want), "{threads}");
        }
    }
}
