//! The sweep on several threads ([`ParallelSparseLda`]): its runs of documents, its sameness
//! with the sequential engine where the definition says so, and that it is the sum of its runs.

use ps_apps::lda::{
    runs_by_tokens, synthetic_lda, LdaCompute, LdaHyper, LdaWorkerState, ParallelSparseLda,
    SparseLda, SweepKey, SyntheticLdaSpec,
};

/// A worker's state on a small synthetic corpus, its copy of the counts and totals (its own
/// counts plus other workers': a copy the runs must not write into mid-sweep).
fn fixture(seed: u64, docs: u32) -> (LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper) {
    let syn = synthetic_lda(&SyntheticLdaSpec {
        docs,
        doc_len: 40,
        vocab: 300,
        topics: 8,
        ..SyntheticLdaSpec::default_builtin(seed)
    });
    let hyper = LdaHyper {
        topics: 12,
        ..LdaHyper::default()
    };
    let (state, _) = LdaWorkerState::init(&syn.corpus.docs, 300, &hyper, seed, 2).unwrap();
    let k = hyper.topics as usize;
    let wt: Vec<f32> = state
        .local_word_topic()
        .iter()
        .enumerate()
        .map(|(i, &c)| c as f32 + ((i * 7) % 5) as f32)
        .collect();
    let mut totals = vec![0f32; k];
    for row in wt.chunks(k) {
        for (t, &x) in totals.iter_mut().zip(row) {
            *t += x;
        }
    }
    (state, wt, totals, hyper)
}

fn key(clock: u32) -> SweepKey {
    SweepKey {
        seed: 11,
        worker: 2,
        clock,
    }
}

#[test]
fn runs_cover_the_documents_with_near_equal_tokens() {
    // Offsets of documents of 1..=9 tokens, starting at token 5.
    let mut offsets = vec![5usize];
    for d in 0..50 {
        offsets.push(offsets[d] + 1 + d % 9);
    }
    let total = offsets[50] - offsets[0];
    for parts in [1, 2, 3, 7, 50, 80] {
        let b = runs_by_tokens(&offsets, parts);
        assert_eq!((b[0], *b.last().unwrap()), (0, 50), "{parts}");
        assert!(b.windows(2).all(|w| w[0] < w[1]), "{parts}: {b:?}");
        assert!(b.len() - 1 <= parts.min(50), "{parts}: {b:?}");
        let longest = b.windows(2).map(|w| offsets[w[1]] - offsets[w[0]]).max();
        // A run is its share, give or take one document on each side.
        assert!(longest.unwrap() <= total / parts + 2 * 9, "{parts}: {b:?}");
    }
    assert_eq!(runs_by_tokens(&[0], 4), vec![0, 0]);
    assert_eq!(runs_by_tokens(&[], 4), vec![0, 0]);
    assert_eq!(runs_by_tokens(&[3, 3, 3], 2), vec![0, 2]);
}

#[test]
fn one_thread_is_the_sequential_engine() {
    let (state0, wt, totals, hyper) = fixture(3, 60);
    let (mut a, mut b) = (state0.clone(), state0);
    let (mut wa, mut ta, mut wb, mut tb) = (wt.clone(), totals.clone(), wt, totals);
    let (mut seq, mut par) = (SparseLda::new(), ParallelSparseLda::new(1));
    for clock in 1..4 {
        let da = seq
            .sweep(&mut a, &mut wa, &mut ta, &hyper, key(clock))
            .unwrap();
        let db = par
            .sweep(&mut b, &mut wb, &mut tb, &hyper, key(clock))
            .unwrap();
        assert_eq!(da, db, "clock {clock}");
        assert_eq!((&a, &wa, &ta), (&b, &wb, &tb), "clock {clock}");
    }
}

#[test]
fn the_first_run_is_resampled_as_the_sequential_engine_would() {
    let (state0, wt, totals, hyper) = fixture(4, 90);
    let (mut seq, mut par) = (state0.clone(), state0.clone());
    SparseLda::new()
        .sweep(
            &mut seq,
            &mut wt.clone(),
            &mut totals.clone(),
            &hyper,
            key(1),
        )
        .unwrap();
    ParallelSparseLda::new(3)
        .sweep(
            &mut par,
            &mut wt.clone(),
            &mut totals.clone(),
            &hyper,
            key(1),
        )
        .unwrap();
    let b = runs_by_tokens(&state0.doc_offsets, 3);
    assert_eq!(b.len(), 4);
    let first = state0.doc_offsets[b[1]];
    assert_eq!(seq.z[..first], par.z[..first]);
    // Later runs start from the sweep's counts, not from the first run's moves.
    assert_ne!(seq.z[first..], par.z[first..]);
}

/// Whatever the thread count, the delta is the change of the copy and of the worker's own
/// counts. (That it is the sum of the runs' changes is a unit test in `parallel.rs`, where the
/// runs can be swept one by one.)
#[test]
fn the_delta_is_the_change_of_the_copy_and_of_the_own_counts() {
    let (state0, wt, totals, hyper) = fixture(5, 70);
    let k = hyper.topics as usize;
    let before: Vec<f32> = state0
        .local_word_topic()
        .iter()
        .map(|&c| c as f32)
        .collect();
    for threads in [2, 3, 5, 200] {
        let mut s = state0.clone();
        let (mut w, mut t) = (wt.clone(), totals.clone());
        let mut engine = ParallelSparseLda::new(threads);
        let delta = engine
            .sweep(&mut s, &mut w, &mut t, &hyper, key(1))
            .unwrap();
        s.check().unwrap();
        let after: Vec<f32> = s.local_word_topic().iter().map(|&c| c as f32).collect();
        for (i, (own, copy)) in after.iter().zip(&before).zip(w.iter().zip(&wt)).enumerate() {
            assert_eq!(own.0 - own.1, copy.0 - copy.1, "threads {threads} cell {i}");
        }
        let mut from_delta = wt.clone();
        for &(word, topic, d) in &delta.entries {
            let row = s.words.binary_search(&word).unwrap();
            from_delta[row * k + topic as usize] += d as f32;
        }
        assert_eq!(from_delta, w, "threads {threads}");
        let sorted = delta.entries.windows(2);
        assert!(sorted
            .into_iter()
            .all(|e| (e[0].0, e[0].1) < (e[1].0, e[1].1)));
        let columns: Vec<f32> = (0..k)
            .map(|c| {
                delta
                    .entries
                    .iter()
                    .filter(|e| e.1 as usize == c)
                    .map(|e| e.2 as f32)
                    .sum()
            })
            .collect();
        let moved: Vec<f32> = t.iter().zip(&totals).map(|(a, b)| a - b).collect();
        assert_eq!(columns, moved, "threads {threads}");
        assert!(
            delta.entries.iter().any(|e| e.2 != 0),
            "threads {threads}: nothing moved"
        );
        // The same again: the result does not depend on how the threads ran.
        let mut s2 = state0.clone();
        let (mut w2, mut t2) = (wt.clone(), totals.clone());
        let d2 = ParallelSparseLda::new(threads)
            .sweep(&mut s2, &mut w2, &mut t2, &hyper, key(1))
            .unwrap();
        assert_eq!((d2, s2, w2, t2), (delta, s, w, t), "threads {threads}");
    }
}

#[test]
fn a_worker_without_documents_sweeps_nothing() {
    let (mut state, wt, totals, hyper) = fixture(6, 5);
    for offsets in [vec![0], vec![]] {
        state.doc_offsets = offsets;
        state.tokens.clear();
        state.z.clear();
        state.doc_topic.clear();
        for threads in [1, 4] {
            let (mut s, mut w, mut t) = (state.clone(), wt.clone(), totals.clone());
            let delta = ParallelSparseLda::new(threads)
                .sweep(&mut s, &mut w, &mut t, &hyper, key(1))
                .unwrap();
            assert!(delta.is_empty(), "{threads}");
            assert_eq!((s, w, t), (state.clone(), wt.clone(), totals.clone()));
        }
        let (mut s, mut w, mut t) = (state.clone(), wt.clone(), totals.clone());
        assert!(SparseLda::new()
            .sweep(&mut s, &mut w, &mut t, &hyper, key(1))
            .unwrap()
            .is_empty());
    }
}
