//! Sweep invariants on random inputs (deltas match the count changes, totals conserved),
//! hostile stale copies, and rejected initial inputs.

use ps_apps::lda::{gather_rows, LdaDelta, LdaHyper, LdaWorkerState, SweepKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{engine_named, engines, small_fixture};

fn random_case(seed: u64) -> (Vec<Vec<u32>>, u32, LdaHyper) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vocab = rng.gen_range(1..40u32);
    let topics = rng.gen_range(1..12u32);
    let docs: Vec<Vec<u32>> = (0..rng.gen_range(0..15))
        .map(|_| {
            (0..rng.gen_range(0..30))
                .map(|_| rng.gen_range(0..vocab))
                .collect()
        })
        .collect();
    let hyper = LdaHyper {
        topics,
        alpha: rng.gen_range(0.01..2.0),
        beta: rng.gen_range(0.001..0.5),
    };
    (docs, vocab, hyper)
}

fn check_delta(delta: &LdaDelta, words: &[u32], before: &[f32], after: &[f32], k: usize) {
    let mut expect = Vec::new();
    for (i, (a, b)) in after.iter().zip(before).enumerate() {
        if a != b {
            expect.push((words[i / k], (i % k) as u32, (a - b) as i32));
        }
    }
    assert_eq!(delta.entries, expect, "delta != after - before");
}

#[test]
fn sweep_invariants_on_random_inputs() {
    for seed in 0..60u64 {
        let (docs, vocab, hyper) = random_case(seed);
        let k = hyper.topics as usize;
        let (state0, init) = LdaWorkerState::init(&docs, vocab, &hyper, seed, 1).unwrap();
        state0.check().unwrap();
        // The initial delta is exactly the worker's own counts.
        let mut own = vec![0f32; vocab as usize * k];
        let mut own_tot = vec![0f32; k];
        init.apply(&mut own, &mut own_tot);
        let local = gather_rows(&own, &state0.words, hyper.topics);
        assert!(local
            .iter()
            .zip(state0.local_word_topic())
            .all(|(&a, b)| a == b as f32));
        for stale in [false, true] {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xABC);
            let mut wt = local.clone();
            let mut totals = own_tot.clone();
            if stale {
                // Other workers' counts, and a stale copy missing some of our own.
                for x in wt.iter_mut() {
                    *x += rng.gen_range(-2..5) as f32;
                }
                for x in totals.iter_mut() {
                    *x += rng.gen_range(-3..20) as f32;
                }
            }
            for engine in engines().iter_mut() {
                let mut state = state0.clone();
                let (mut w, mut t) = (wt.clone(), totals.clone());
                for clock in 1..4 {
                    let (wb, tb) = (w.clone(), t.clone());
                    let key = SweepKey {
                        seed,
                        worker: 1,
                        clock,
                    };
                    let delta = engine
                        .sweep(&mut state, &mut w, &mut t, &hyper, key)
                        .unwrap();
                    let ctx = format!("seed {seed} stale {stale} engine {}", engine.name());
                    state.check().unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    check_delta(&delta, &state.words, &wb, &w, k);
                    let tot_delta: Vec<i32> =
                        t.iter().zip(&tb).map(|(a, b)| (a - b) as i32).collect();
                    assert_eq!(delta.totals, tot_delta, "{ctx}");
                    let mut col = vec![0i32; k];
                    for &(_, tp, c) in &delta.entries {
                        col[tp as usize] += c;
                    }
                    assert_eq!(delta.totals, col, "{ctx}: totals != column sums");
                    assert_eq!(delta.totals.iter().sum::<i32>(), 0, "{ctx}: not conserved");
                    assert!(w.iter().chain(&t).all(|x| x.is_finite()));
                    if !stale {
                        // A consistent copy stays equal to the own counts.
                        let own: Vec<f32> =
                            state.local_word_topic().iter().map(|&c| c as f32).collect();
                        assert_eq!(w, own, "{ctx}");
                    }
                    // Deterministic for a key.
                    let mut s2 = state.clone();
                    let (mut w2, mut t2) = (w.clone(), t.clone());
                    let mut fresh = engine_named(engine.name());
                    let d1 = engine
                        .sweep(&mut state, &mut w, &mut t, &hyper, key)
                        .unwrap();
                    let d2 = fresh.sweep(&mut s2, &mut w2, &mut t2, &hyper, key).unwrap();
                    assert_eq!(d1, d2, "{ctx}: not deterministic");
                    assert_eq!(state, s2);
                }
            }
        }
    }
    println!("seeds 0..60");
}

#[test]
fn hostile_copies_do_not_panic() {
    let seed = 9;
    println!("seed {seed}");
    let (state0, wt, totals, hyper) = small_fixture(seed);
    let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1e30, 1e30, 0.5];
    for engine in engines().iter_mut() {
        for &b in &bad {
            let mut s = state0.clone();
            let mut w: Vec<f32> = wt
                .iter()
                .enumerate()
                .map(|(i, &x)| if i % 3 == 0 { b } else { x })
                .collect();
            let mut t = totals.clone();
            t[1] = b;
            let key = SweepKey {
                seed,
                worker: 0,
                clock: 1,
            };
            engine.sweep(&mut s, &mut w, &mut t, &hyper, key).unwrap();
            s.check().unwrap();
            let bad_hyper = LdaHyper {
                alpha: f64::NAN,
                beta: -1.0,
                ..hyper
            };
            engine
                .sweep(&mut s, &mut w, &mut t, &bad_hyper, key)
                .unwrap();
            s.check().unwrap();
        }
    }
}

#[test]
fn init_rejects_bad_input() {
    let hyper = LdaHyper::default();
    assert!(LdaWorkerState::init(&[vec![5]], 5, &hyper, 0, 0).is_err());
    let zero = LdaHyper { topics: 0, ..hyper };
    assert!(LdaWorkerState::init(&[vec![1]], 5, &zero, 0, 0).is_err());
    let (s, d) = LdaWorkerState::init(&[], 5, &hyper, 0, 0).unwrap();
    assert_eq!(s.num_tokens(), 0);
    assert!(d.is_empty());
}
