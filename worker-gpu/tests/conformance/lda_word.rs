//! The CUDA word-major LDA engine (`CudaWordLda`, `kernels/lda_word.cu`) against its CPU twin
//! `WordMajorLda`: a sweep draws every token of a document group from the counts at the
//! group's start, so the result does not depend on the grid, and the device computes the twin's `f32` operations in the same
//! order: every sweep must be the twin's bit for bit (topics, document counts, copy, totals,
//! delta), and so must `sample_token`. The host test `kernels_on_host/lda_word.rs` checks the same
//! functions with one lane where there is no GPU; this case checks them with 32.

use ps_apps::lda::{LdaCompute, LdaWorkerState, SweepKey, WordMajorLda};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;
use worker_gpu::cuda::lda_word::CudaWordLda;

use crate::common::seed;
use crate::lda::{random_docs, random_hyper, stale_copy};

/// `(K, documents, longest document, vocabulary)`: one chunk of topics, a partial chunk,
/// several, and more than 32 (the chunk search loops), with long documents among them: lists
/// longer than a warp, and at K 2,000 longer than 32 chunks (the document part's second pass).
const SHAPES: [(u32, usize, usize, u32); 7] = [
    (1, 6, 20, 15),
    (7, 8, 30, 25),
    (33, 10, 80, 40),
    (100, 12, 200, 60),
    (1000, 6, 400, 80),
    (1500, 4, 300, 50),
    (2000, 4, 3000, 100),
];

#[test]
fn word_major_sweeps_are_the_twins_bit_for_bit() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lda word_major_sweeps_are_the_twins_bit_for_bit")
    else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("lda word-major sweep"));
    let mut engines = std::collections::HashMap::new();
    // In one document group, and in several (each group its own launches; 5 groups of at
    // most 4 to 12 documents includes groups of one document).
    for (case, (&(k, docs, max_len, vocab), groups)) in SHAPES
        .iter()
        .chain(&SHAPES[1..5])
        .zip([1, 1, 1, 1, 1, 1, 1, 3, 5, 2, 5])
        .enumerate()
    {
        // One engine for each number of groups, reused across shapes (its buffers and its
        // occupancy figure carry over from a smaller or larger case).
        let cuda = engines.entry(groups).or_insert_with(|| {
            CudaWordLda::new(Arc::clone(&gpu))
                .expect("engine")
                .with_groups(groups)
        });
        let hyper = random_hyper(&mut rng, k);
        let mut docs = random_docs(&mut rng, docs, max_len, vocab);
        if max_len >= 3000 {
            // A document of every token it may have: at K 2,000 its list (about 1,550 topics)
            // spans more than 32 chunks, so the document part's second pass runs whatever the
            // lengths drawn.
            docs[0] = (0..max_len).map(|_| rng.gen_range(0..vocab)).collect();
        }
        let (state, _) = LdaWorkerState::init(&docs, vocab, &hyper, rng.gen(), 0).expect("init");
        let (wt, totals) = stale_copy(&mut rng, &state);
        let (mut gs, mut gw, mut gt) = (state.clone(), wt.clone(), totals.clone());
        let (mut cs, mut cw, mut ct) = (state, wt, totals);
        let mut twin = WordMajorLda::new(2).with_groups(groups);
        let mut moved = 0usize;
        for clock in 1..=3u32 {
            let key = SweepKey {
                seed: rng.gen(),
                worker: 5,
                clock,
            };
            let g = cuda
                .sweep(&mut gs, &mut gw, &mut gt, &hyper, key)
                .expect("sweep");
            let c = twin.sweep(&mut cs, &mut cw, &mut ct, &hyper, key).unwrap();
            let ctx = format!("case {case} (K {k}, {groups} groups) clock {clock}");
            assert_eq!(gs.z, cs.z, "{ctx}: topics");
            assert_eq!(gs.doc_topic, cs.doc_topic, "{ctx}: document counts");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gw), bits(&cw), "{ctx}: copy");
            assert_eq!(bits(&gt), bits(&ct), "{ctx}: totals");
            assert_eq!(g, c, "{ctx}: delta");
            moved += c.entries.len();
        }
        eprintln!(
            "case {case} (K {k}, {groups} groups): {moved} delta entries over 3 sweeps, all the \
             twin's"
        );
        assert!(moved > 0 || k == 1, "case {case}: nothing moved");
    }
}

#[test]
fn word_major_sample_token_is_the_twins() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lda word_major_sample_token_is_the_twins") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("lda word-major sample_token"));
    let mut cuda = CudaWordLda::new(Arc::clone(&gpu)).expect("engine");
    let mut twin = WordMajorLda::new(1);
    for &(k, docs, max_len, vocab) in &SHAPES[1..5] {
        let hyper = random_hyper(&mut rng, k);
        let docs = random_docs(&mut rng, docs, max_len, vocab);
        let (state, _) = LdaWorkerState::init(&docs, vocab, &hyper, rng.gen(), 0).expect("init");
        let (wt, totals) = stale_copy(&mut rng, &state);
        for _ in 0..4 {
            let doc = rng.gen_range(0..state.num_docs());
            let len = state.doc_offsets[doc + 1] - state.doc_offsets[doc];
            if len == 0 {
                continue;
            }
            let pos = rng.gen_range(0..len);
            for j in 0..200 {
                let u = (j as f64 + 0.5) / 200.0;
                let g = cuda
                    .sample_token(&state, &wt, &totals, &hyper, doc, pos, u)
                    .expect("sample");
                let c = twin
                    .sample_token(&state, &wt, &totals, &hyper, doc, pos, u)
                    .unwrap();
                assert_eq!(g, c, "K {k} doc {doc} pos {pos} u {u}");
            }
        }
    }
}

/// The resident engine with the word-major sweep against its CPU oracle, `HostLdaResident` on
/// `WordMajorLda`, over clocks of two workers sharing an emulated server table: each clock's
/// delta and the state after it bit for bit, the log-likelihood to rounding; in one document
/// group and in 4.
#[test]
fn resident_word_major_engine_is_the_oracle_clock_by_clock() {
    use crate::lda_resident::{close, job, key, load};
    use ps_apps::lda::{HostLdaResident, LdaResident};
    use worker_gpu::cuda::lda_resident::CudaLdaResident;
    use worker_gpu::cuda::lda_word::LdaSampler;

    let Some(gpu) = worker_gpu::gpu_or_skip("lda resident_word_major_engine") else {
        return;
    };
    let s = seed("lda resident word-major");
    for (topics, groups) in [(12u32, 1usize), (300, 1), (12, 4), (300, 4)] {
        let (states, mut table, mut totals, hyper) = job(s, topics, 200, 300);
        let mut pairs: Vec<(CudaLdaResident, HostLdaResident, LdaWorkerState)> = states
            .into_iter()
            .map(|state| {
                let sampler = LdaSampler::WordMajor {
                    groups: groups as u32,
                };
                let mut dev = CudaLdaResident::with_sampler(gpu.clone(), sampler).expect("engine");
                assert_eq!(dev.name(), "cuda-resident-word-major");
                let twin = WordMajorLda::new(1).with_groups(groups);
                let mut host = HostLdaResident::new(Box::new(twin));
                dev.setup(&state, &hyper).expect("setup");
                host.setup(&state, &hyper).expect("setup");
                (dev, host, state)
            })
            .collect();
        for clock in 1..=4 {
            let mut deltas = Vec::new();
            for (w, (dev, host, state)) in pairs.iter_mut().enumerate() {
                let ctx = format!("K {topics} groups {groups} clock {clock} worker {w}");
                load(dev, state, &table, &totals);
                load(host, state, &table, &totals);
                let (lg, _) = dev.loglik().expect("loglik");
                let (lc, _) = host.loglik().expect("loglik");
                assert!(close(lg, lc), "{ctx}: loglik {lg} vs {lc}");
                let kk = key(s, w as u32, clock);
                let dg = dev.sweep(kk).expect("sweep");
                let dc = host.sweep(kk).expect("sweep");
                let (mut sg, mut sc) = (state.clone(), state.clone());
                dev.download_state(&mut sg).expect("download");
                host.download_state(&mut sc).expect("download");
                assert_eq!(sg, sc, "{ctx}: state");
                assert_eq!(dg, dc, "{ctx}: delta");
                assert!(!dg.entries.is_empty(), "{ctx}: nothing moved");
                *state = sc;
                deltas.push(dc);
            }
            for d in &deltas {
                d.apply(&mut table, &mut totals);
            }
        }
    }
}
