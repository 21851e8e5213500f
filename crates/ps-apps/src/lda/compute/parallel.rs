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
/// scheduling; the first run's documents are resampled exactly as [`SparseLda`] would.
///
/// Each run's engine holds a copy of the worker's counts (a dense `words x K` of `i32` and a
/// list of the positive counts). With a memory budget ([`ParallelSparseLda::with_memory_budget`])
/// the first sweep runs on no more threads than copies fit in it (at least one), and so do all
/// later sweeps, with a warning: at K 1,000 and a vocabulary of a million words a copy is 4 GB,
/// and one per core would end the worker. (The result is then that of the threads it ran on,
/// not of those asked for.)
#[derive(Debug, Clone)]
pub struct ParallelSparseLda {
    engines: Vec<SparseLda>,
    budget: Option<u64>,
    /// The runs a sweep is cut into, fixed at the first sweep.
    runs: Option<usize>,
}

impl ParallelSparseLda {
    /// An engine that sweeps on `threads` threads (at least 1).
    pub fn new(threads: usize) -> Self {
        ParallelSparseLda {
            engines: vec![SparseLda::new(); threads.max(1)],
            budget: None,
            runs: None,
        }
    }

    /// The engine, with its threads' copies of the counts kept within `bytes` where it can
    /// (`None`: no limit).
    pub fn with_memory_budget(mut self, bytes: Option<u64>) -> Self {
        self.budget = bytes;
        self
    }

    /// The threads the sweeps run on: those asked for, or fewer where the budget is tight
    /// (known from the first sweep on).
    pub fn threads(&self) -> usize {
        self.runs.unwrap_or(self.engines.len())
    }

    /// The runs for counts of this size, decided once.
    fn runs_for(&mut self, word_topic: &[f32], k: usize) -> usize {
        if let Some(n) = self.runs {
            return n;
        }
        let asked = self.engines.len();
        let copy = copy_bytes(word_topic, k);
        let n = match self.budget {
            Some(b) => asked.min(
                usize::try_from(b / copy.max(1))
                    .unwrap_or(usize::MAX)
                    .max(1),
            ),
            None => asked,
        };
        if n < asked {
            tracing::warn!(
                threads = asked,
                running = n,
                copy_mb = copy / 1_000_000,
                budget_mb = self.budget.unwrap_or(0) / 1_000_000,
                "LDA sweeps on fewer threads: each holds a copy of the counts and only {n} fit in memory"
            );
        }
        self.engines.truncate(n);
        self.runs = Some(n);
        n
    }
}

/// The bytes one run's engine holds for a worker's counts `word_topic` (`words x k`): the dense
/// `i32` copy, the packed list of each word's positive counts and its header, and the per-topic
/// arrays.
fn copy_bytes(word_topic: &[f32], k: usize) -> u64 {
    let words = (word_topic.len() / k.max(1)) as u64;
    let positive = word_topic.iter().filter(|&&x| x >= 0.5).count() as u64;
    4 * word_topic.len() as u64 + 8 * positive + 24 * words + 32 * k as u64
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
            return Ok(LdaDelta::none(state.topics));
        }
        let parts = self.runs_for(word_topic, k);
        let bounds = runs_by_tokens(&state.doc_offsets, parts);
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

    /// A worker's state over a built-in corpus of `docs` x `doc_len` tokens of `vocab` words
    /// from `true_topics` topics, with a model of `topics` topics, drawn from `seed`.
    fn small_worker(
        [docs, doc_len, vocab, true_topics, topics]: [u32; 5],
        seed: u64,
    ) -> (LdaWorkerState, LdaHyper) {
        let syn = synthetic_lda(&SyntheticLdaSpec {
            docs,
            doc_len,
            vocab,
            topics: true_topics,
            ..SyntheticLdaSpec::default_builtin(seed)
        });
        let hyper = LdaHyper {
            topics,
            ..LdaHyper::default()
        };
        let (state, _) = LdaWorkerState::init(&syn.corpus.docs, vocab, &hyper, seed, 0).unwrap();
        (state, hyper)
    }

    /// The runs swept one after another, each by a fresh engine from the sweep's counts, and
    /// their changes summed cell by cell: what the threads and the merge must give.
    #[test]
    fn the_sweep_is_the_sum_of_its_runs_swept_one_by_one() {
        let (state0, hyper) = small_worker([50, 30, 200, 6, 9], 8);
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

    /// A budget that holds two copies of the counts makes an engine asked for five threads
    /// sweep exactly as one on two, in every sweep; a budget below one copy, as one thread.
    #[test]
    fn a_memory_budget_caps_the_threads_and_the_sweep_is_theirs() {
        let (state0, hyper) = small_worker([40, 25, 150, 5, 7], 4);
        let wt: Vec<f32> = state0
            .local_word_topic()
            .iter()
            .map(|&c| c as f32)
            .collect();
        let k = hyper.topics as usize;
        let mut totals = vec![0f32; k];
        for (i, &x) in wt.iter().enumerate() {
            totals[i % k] += x;
        }
        let copy = copy_bytes(&wt, k);
        assert!(copy >= 4 * wt.len() as u64, "{copy}");
        let sweeps = |mut engine: ParallelSparseLda| {
            let (mut state, mut w, mut t) = (state0.clone(), wt.clone(), totals.clone());
            for clock in 0..3 {
                let key = SweepKey {
                    seed: 5,
                    worker: 0,
                    clock,
                };
                engine
                    .sweep(&mut state, &mut w, &mut t, &hyper, key)
                    .unwrap();
            }
            (engine.threads(), state, w, t)
        };
        let (n, state2, w2, t2) = sweeps(ParallelSparseLda::new(2));
        assert_eq!(n, 2);
        let capped = sweeps(ParallelSparseLda::new(5).with_memory_budget(Some(2 * copy + 1)));
        assert_eq!(capped, (2, state2, w2, t2));
        let roomy = sweeps(ParallelSparseLda::new(5).with_memory_budget(Some(100 * copy)));
        assert_eq!(roomy.0, 5);
        assert_eq!(roomy, sweeps(ParallelSparseLda::new(5)));
        let tight = sweeps(ParallelSparseLda::new(5).with_memory_budget(Some(copy / 2)));
        assert_eq!(tight.0, 1);
        assert_eq!(tight, sweeps(ParallelSparseLda::new(1)));
    }
}
