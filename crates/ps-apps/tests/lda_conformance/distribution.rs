//! Distributional tests: the engines' draws match the exact conditional by a chi-square test,
//! and the test rejects a deliberately wrong sampler.

use ps_apps::lda::{
    conditional, runs_by_tokens, LdaCompute, LdaHyper, LdaWorkerState, ParallelSparseLda, SweepKey,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{engines, small_fixture, K_SMALL};

/// Critical value of the chi-square distribution with 5 degrees of freedom
/// at p = 0.001.
const CHI2_CRIT_DF5: f64 = 20.515;

fn chi_square(counts: &[u64], p: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .zip(p)
        .map(|(&c, &pk)| {
            let e = pk * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

const DRAWS: usize = 20_000;

#[test]
fn sample_token_matches_exact_conditional() {
    let seed = 2024;
    println!("seed {seed}");
    let (state, wt, totals, hyper) = small_fixture(seed);
    // Tokens chosen to cover: a word with a negative count, an own count
    // zeroed by staleness, and ordinary ones.
    for (doc, pos) in [(0usize, 0usize), (0, 1), (1, 0), (2, 4), (2, 7)] {
        let p = conditional(&state, &wt, &totals, &hyper, doc, pos);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for engine in engines().iter_mut() {
            let mut rng = ChaCha8Rng::seed_from_u64(seed + pos as u64);
            let mut counts = vec![0u64; K_SMALL as usize];
            for _ in 0..DRAWS {
                let t = engine
                    .sample_token(&state, &wt, &totals, &hyper, doc, pos, rng.gen())
                    .unwrap();
                counts[t as usize] += 1;
            }
            let chi = chi_square(&counts, &p);
            println!(
                "{} doc {doc} pos {pos}: chi2 = {chi:.2} (crit {CHI2_CRIT_DF5})",
                engine.name()
            );
            assert!(
                chi < CHI2_CRIT_DF5,
                "{}: chi2 {chi} p {p:?} counts {counts:?}",
                engine.name()
            );
        }
    }
}

/// How often each topic is the new topic of token `token` after one sweep of `state`, over
/// [`DRAWS`] sweeps of fresh copies with different clock keys.
fn swept_topics(
    engine: &mut dyn LdaCompute,
    state: &LdaWorkerState,
    wt: &[f32],
    totals: &[f32],
    hyper: &LdaHyper,
    seed: u64,
    token: usize,
) -> Vec<u64> {
    let mut counts = vec![0u64; K_SMALL as usize];
    for clock in 0..DRAWS as u32 {
        let mut s = state.clone();
        let (mut w, mut t) = (wt.to_vec(), totals.to_vec());
        let key = SweepKey {
            seed,
            worker: 3,
            clock,
        };
        engine.sweep(&mut s, &mut w, &mut t, hyper, key).unwrap();
        counts[s.z[token] as usize] += 1;
    }
    counts
}

/// The new topic of the first token of document `doc` after one full
/// sweep, over many sweeps of fresh copies of the same state (different
/// clock keys): exercises each engine's real sweep path, incremental
/// bookkeeping included.
#[test]
fn sweep_first_token_matches_exact_conditional() {
    let seed = 77;
    println!("seed {seed}");
    let (state, wt, totals, hyper) = small_fixture(seed);
    for doc in [0usize, 1] {
        let p = conditional(&state, &wt, &totals, &hyper, doc, 0);
        // Only the first token of `doc` matters; sweep a state holding just
        // that document so that earlier documents do not move the counts.
        let (lo, hi) = (state.doc_offsets[doc], state.doc_offsets[doc + 1]);
        let k = K_SMALL as usize;
        let mut single = state.clone();
        single.doc_offsets = vec![0, hi - lo];
        single.tokens = state.tokens[lo..hi].to_vec();
        single.z = state.z[lo..hi].to_vec();
        single.doc_topic = state.doc_topic[doc * k..(doc + 1) * k].to_vec();
        single.check().unwrap();
        for engine in engines().iter_mut() {
            let counts = swept_topics(engine.as_mut(), &single, &wt, &totals, &hyper, seed, 0);
            let chi = chi_square(&counts, &p);
            println!(
                "{} sweep doc {doc}: chi2 = {chi:.2} (crit {CHI2_CRIT_DF5})",
                engine.name()
            );
            assert!(
                chi < CHI2_CRIT_DF5,
                "{}: chi2 {chi} p {p:?} counts {counts:?}",
                engine.name()
            );
        }
    }
}

/// On several threads every run starts from the sweep's counts: the first token of the second
/// run, swept with the whole state, follows the exact conditional of the counts before the sweep
/// (the sequential engine's would have moved with the first run's documents).
#[test]
fn a_later_runs_first_token_matches_the_exact_conditional_at_the_start() {
    let seed = 78;
    let (state, wt, totals, hyper) = small_fixture(seed);
    let bounds = runs_by_tokens(&state.doc_offsets, 2);
    assert_eq!(bounds.len(), 3, "two runs: {bounds:?}");
    let doc = bounds[1];
    let p = conditional(&state, &wt, &totals, &hyper, doc, 0);
    let mut engine = ParallelSparseLda::new(2);
    let first = state.doc_offsets[doc];
    let counts = swept_topics(&mut engine, &state, &wt, &totals, &hyper, seed, first);
    let chi = chi_square(&counts, &p);
    println!("sparse-threads, doc {doc} (second run): chi2 = {chi:.2} (crit {CHI2_CRIT_DF5})");
    assert!(chi < CHI2_CRIT_DF5, "chi2 {chi} p {p:?} counts {counts:?}");
}

/// A deliberately wrong conditional (the token's own counts not removed)
/// must fail the same test, showing the test has power.
#[test]
fn wrong_conditional_fails_chi_square() {
    let seed = 5;
    println!("seed {seed}");
    let (state, wt, totals, hyper) = small_fixture(seed);
    let (doc, pos) = (0usize, 0usize);
    let k = K_SMALL as usize;
    let p = conditional(&state, &wt, &totals, &hyper, doc, pos);
    // Wrong: own counts kept.
    let i = state.doc_offsets[doc] + pos;
    let w = state.tokens[i] as usize;
    let vbeta = hyper.beta * f64::from(state.vocab_size);
    let mut wrong: Vec<f64> = (0..k)
        .map(|t| {
            let ndk = f64::from(state.doc_topic[doc * k + t]);
            let nwk = f64::from(wt[w * k + t]).max(0.0);
            let nk = f64::from(totals[t]).max(0.0);
            (ndk + hyper.alpha) * (nwk + hyper.beta) / (nk + vbeta)
        })
        .collect();
    let s: f64 = wrong.iter().sum();
    wrong.iter_mut().for_each(|x| *x /= s);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut counts = vec![0u64; k];
    for _ in 0..DRAWS {
        let u: f64 = rng.gen();
        let mut acc = 0.0;
        let t = wrong
            .iter()
            .position(|&x| {
                acc += x;
                u < acc
            })
            .unwrap_or(k - 1);
        counts[t] += 1;
    }
    let chi = chi_square(&counts, &p);
    println!("wrong conditional: chi2 = {chi:.2} (crit {CHI2_CRIT_DF5}), p {p:?} wrong {wrong:?}");
    assert!(
        chi > CHI2_CRIT_DF5,
        "the test failed to reject a wrong sampler"
    );
}
