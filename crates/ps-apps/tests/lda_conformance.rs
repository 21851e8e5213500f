//! Conformance tests of the LDA engines against the exact conditional, sweep
//! invariants, and an in-process emulation of the parameter-server schedule.
//!
//! Run with `cargo test -p ps-apps --test lda_conformance -- --nocapture` to
//! see seeds and per-clock progress. The throughput and chain measurements are ignored
//! by default: `cargo test --release -p ps-apps --test lda_conformance --
//! --ignored --nocapture`.
//!
//! This file holds the shared fixtures and the emulated parameter-server training; the
//! distributional tests, the sweep invariants, and the throughput and chain measurements are in
//! `lda_conformance/{distribution,sweep,throughput,chain}.rs`.

#[path = "lda_conformance/chain.rs"]
mod chain;
#[path = "lda_conformance/distribution.rs"]
mod distribution;
#[path = "lda_conformance/sweep.rs"]
mod sweep;
#[path = "lda_conformance/threads.rs"]
mod threads;
#[path = "lda_conformance/throughput.rs"]
mod throughput;

use std::path::Path;
use std::time::Instant;

use ps_apps::lda::{
    gather_rows, load_uci, loglik, split_docs, synthetic_lda, topic_recovery, Corpus, CpuLda,
    LdaCompute, LdaDelta, LdaHyper, LdaWorkerState, ParallelSparseLda, SparseLda, SweepKey,
    SyntheticLdaSpec, WordMajorLda, DEFAULT_CLOCKS,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn engines() -> Vec<Box<dyn LdaCompute>> {
    [
        "cpu",
        "sparse",
        "sparse-threads",
        "word-major",
        "word-major-threads",
    ]
    .into_iter()
    .map(engine_named)
    .collect()
}

/// A fresh engine of the kind `name` (the sweep on several threads runs on 3).
fn engine_named(name: &str) -> Box<dyn LdaCompute> {
    match name {
        "cpu" => Box::new(CpuLda::new()),
        "sparse" => Box::new(SparseLda::new()),
        "sparse-threads" => Box::new(ParallelSparseLda::new(3)),
        "word-major" => Box::new(WordMajorLda::new(1)),
        "word-major-threads" => Box::new(WordMajorLda::new(3)),
        _ => panic!("no engine {name}"),
    }
}
// ---------------------------------------------------------------------------
// Shared fixtures
// ---------------------------------------------------------------------------

const K_SMALL: u32 = 6;

/// A small fixed state (6 topics, 8 words) whose stale copy holds other
/// workers' counts, a negative count and totals inconsistent with the rows.
fn small_fixture(seed: u64) -> (LdaWorkerState, Vec<f32>, Vec<f32>, LdaHyper) {
    let hyper = LdaHyper {
        topics: K_SMALL,
        alpha: 0.3,
        beta: 0.05,
    };
    let docs = vec![
        vec![3, 1, 3, 0, 5, 3, 2, 7],
        vec![1, 1, 4, 6, 3],
        vec![0, 2, 2, 5, 5, 5, 7, 3, 1],
    ];
    let (state, _) = LdaWorkerState::init(&docs, 10, &hyper, seed, 0).unwrap();
    let k = K_SMALL as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 99);
    let own = state.local_word_topic();
    let mut wt: Vec<f32> = own
        .iter()
        .map(|&c| c as f32 + rng.gen_range(0..4) as f32)
        .collect();
    // Staleness artefacts: a negative count and a zeroed own count.
    wt[k + 2] = -2.0;
    wt[3 * k + 1] = 0.0;
    let mut totals = vec![0f32; k];
    for row in wt.chunks(k) {
        for (t, &x) in totals.iter_mut().zip(row) {
            *t += x;
        }
    }
    totals[4] += 7.0;
    totals[0] -= 3.0;
    (state, wt, totals, hyper)
}
// ---------------------------------------------------------------------------
// Emulated parameter-server training
// ---------------------------------------------------------------------------

struct Progress {
    recovery: Vec<f64>,
    loglik: Vec<f64>,
}

/// Emulates `workers` workers with SSP staleness `staleness` against an
/// in-process global table: clock 0 pushes the initial counts; on clock
/// `c >= 1` every worker reads the table as it was after clock
/// `c - 1 - staleness` (missing the last `staleness` clocks of everybody's
/// deltas — its own included unless `read_my_writes`, in which case its own
/// missed deltas are added to its read, as a client cache that applies its
/// own pushes would do), sweeps, and pushes its delta; all deltas of the
/// clock are then summed into the table. Records topic recovery and the
/// per-token predictive log-likelihood (on the current table) per clock.
#[allow(clippy::too_many_arguments)]
fn simulate(
    make: &dyn Fn() -> Box<dyn LdaCompute>,
    corpus: &Corpus,
    true_topics: &[f32],
    true_k: usize,
    hyper: &LdaHyper,
    workers: u32,
    staleness: usize,
    read_my_writes: bool,
    clocks: u32,
    seed: u64,
) -> Progress {
    let k = hyper.topics as usize;
    let v = corpus.vocab_size as usize;
    let mut table = vec![0f32; v * k];
    let mut totals = vec![0f32; k];
    let mut history: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    let mut states = Vec::new();
    let mut engines = Vec::new();
    // pushed[w][c]: the delta worker `w` pushed on clock `c`.
    let mut pushed: Vec<Vec<LdaDelta>> = Vec::new();
    for w in 0..workers {
        let docs = split_docs(corpus, workers, w);
        let (s, d) = LdaWorkerState::init(&docs, corpus.vocab_size, hyper, seed, w).unwrap();
        d.apply(&mut table, &mut totals);
        states.push(s);
        engines.push(make());
        pushed.push(vec![d]);
    }
    history.push((table.clone(), totals.clone()));
    let mut progress = Progress {
        recovery: Vec::new(),
        loglik: Vec::new(),
    };
    for clock in 1..=clocks {
        let read_idx = history.len().saturating_sub(1 + staleness);
        let read = &history[read_idx];
        let mut deltas = Vec::new();
        for (w, (state, engine)) in states.iter_mut().zip(engines.iter_mut()).enumerate() {
            let mut local = gather_rows(&read.0, &state.words, hyper.topics);
            let mut tot = read.1.clone();
            if read_my_writes {
                for d in &pushed[w][read_idx + 1..] {
                    d.apply_local(&state.words, &mut local, &mut tot);
                }
            }
            let key = SweepKey {
                seed,
                worker: w as u32,
                clock,
            };
            deltas.push(
                engine
                    .sweep(state, &mut local, &mut tot, hyper, key)
                    .unwrap(),
            );
        }
        for (w, d) in deltas.into_iter().enumerate() {
            d.apply(&mut table, &mut totals);
            pushed[w].push(d);
        }
        history.push((table.clone(), totals.clone()));
        let rec = topic_recovery(true_topics, true_k, &table, k, hyper.beta);
        let (mut ll, mut n) = (0.0, 0u64);
        for s in &states {
            let (a, b) = loglik(
                s,
                &gather_rows(&table, &s.words, hyper.topics),
                &totals,
                hyper,
            );
            ll += a;
            n += b;
        }
        progress.recovery.push(rec);
        progress.loglik.push(ll / n as f64);
        println!(
            "clock {clock:3}: recovery {rec:.4} loglik/token {:.4}",
            ll / n as f64
        );
    }
    // The table holds exactly the workers' own counts (all deltas applied).
    let mut own = vec![0f32; v * k];
    for s in &states {
        for (i, c) in s.local_word_topic().iter().enumerate() {
            own[s.words[i / k] as usize * k + i % k] += *c as f32;
        }
    }
    assert_eq!(table, own, "global table != sum of workers' counts");
    let n_tok: f32 = states.iter().map(|s| s.num_tokens() as f32).sum();
    assert_eq!(totals.iter().sum::<f32>(), n_tok);
    progress
}

fn train_builtin(
    make: &dyn Fn() -> Box<dyn LdaCompute>,
    staleness: usize,
    read_my_writes: bool,
    clocks: u32,
) {
    let seed = 42;
    let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(seed));
    let hyper = LdaHyper::default();
    println!(
        "seed {seed}, engine {}, staleness {staleness}, read-my-writes {read_my_writes}",
        make().name()
    );
    let start = Instant::now();
    let p = simulate(
        make,
        &syn.corpus,
        &syn.topics,
        syn.num_topics as usize,
        &hyper,
        2,
        staleness,
        read_my_writes,
        clocks,
        seed,
    );
    println!("{:.2} s", start.elapsed().as_secs_f64());
    let first_ok = p.recovery.iter().position(|&r| r >= 0.9).map(|c| c + 1);
    println!("recovery >= 0.9 first at clock {first_ok:?}");
    assert!(
        *p.recovery.last().unwrap() >= 0.9,
        "final recovery {:?}",
        p.recovery.last()
    );
    assert!(
        p.loglik.last().unwrap() > &(p.loglik[0] + 0.1),
        "loglik did not rise: {:?}",
        p.loglik
    );
    let rising = p.loglik.windows(2).take(8).all(|w| w[1] > w[0]);
    assert!(rising, "loglik not rising early: {:?}", p.loglik);
}

#[test]
fn train_two_workers_cpu_oracle() {
    train_builtin(&|| Box::new(CpuLda::new()), 0, false, 25);
}

#[test]
fn train_two_workers_sparse() {
    train_builtin(&|| Box::new(SparseLda::new()), 0, false, 25);
}

#[test]
fn train_two_workers_of_four_threads() {
    train_builtin(&|| Box::new(ParallelSparseLda::new(4)), 0, false, 25);
}

#[test]
fn train_two_workers_word_major() {
    train_builtin(&|| Box::new(WordMajorLda::new(2)), 0, false, 25);
}

#[test]
fn train_two_workers_sparse_staleness_one_read_my_writes() {
    train_builtin(&|| Box::new(SparseLda::new()), 1, true, 25);
}

/// Worst-case SSP staleness 1 where a worker's read also misses its own
/// last push: the counts stay consistent and the likelihood improves, but
/// the two workers over-correct each other's (and their own) stale moves in
/// a period-2 oscillation, and topic recovery stalls (seed 42: it alternates
/// between about 0.90 and 0.91 from clock 14 on, where the uniforms of
/// `SweepKey::uniform` decide; the earlier ChaCha8 uniforms left it around
/// 0.73, so how far it stalls depends on the random stream).
/// The cluster should give workers read-my-writes (see
/// `LdaDelta::apply_local`).
#[test]
fn train_two_workers_sparse_staleness_one_worst_case() {
    let seed = 42;
    let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(seed));
    println!("seed {seed}, staleness 1 without read-my-writes");
    let p = simulate(
        &|| Box::new(SparseLda::new()),
        &syn.corpus,
        &syn.topics,
        syn.num_topics as usize,
        &LdaHyper::default(),
        2,
        1,
        false,
        30,
        seed,
    );
    assert!(p.loglik.last().unwrap() > &(p.loglik[0] + 0.1));
    assert!(*p.recovery.last().unwrap() > 0.5);
}

/// The full built-in corpus with 2 workers; prints the clock at which
/// recovery passes 0.9. Release mode: `--release -- --ignored --nocapture`.
#[test]
#[ignore]
fn builtin_full_clocks_to_recovery() {
    for seed in [1u64, 42, 1234] {
        let syn = synthetic_lda(&SyntheticLdaSpec::default_builtin(seed));
        let hyper = LdaHyper::default();
        println!("seed {seed}");
        let start = Instant::now();
        let p = simulate(
            &|| Box::new(SparseLda::new()),
            &syn.corpus,
            &syn.topics,
            syn.num_topics as usize,
            &hyper,
            2,
            0,
            false,
            DEFAULT_CLOCKS,
            seed,
        );
        let first = p.recovery.iter().position(|&r| r >= 0.9).map(|c| c + 1);
        println!(
            "seed {seed}: recovery >= 0.9 first at clock {first:?}, {:.2} s",
            start.elapsed().as_secs_f64()
        );
        assert!(first.is_some());
    }
}

#[test]
fn kos_loglik_rises_if_present() {
    // `../shared/data` beside the repository, when there.
    let dir = &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/kos");
    let dw = dir.join("docword.kos.txt.gz");
    if !dw.exists() {
        println!("skipping: {} not present", dw.display());
        return;
    }
    let seed = 3;
    println!("seed {seed}");
    let corpus = load_uci(&dw, None).unwrap();
    let hyper = LdaHyper {
        topics: 20,
        alpha: 0.1,
        beta: 0.01,
    };
    let (mut state, init) =
        LdaWorkerState::init(&corpus.docs, corpus.vocab_size, &hyper, seed, 0).unwrap();
    let mut table = vec![0f32; corpus.vocab_size as usize * 20];
    let mut totals = vec![0f32; 20];
    init.apply(&mut table, &mut totals);
    let mut wt = gather_rows(&table, &state.words, 20);
    let mut engine = SparseLda::new();
    let mut ll = vec![loglik(&state, &wt, &totals, &hyper).0 / state.num_tokens() as f64];
    for clock in 1..=5 {
        let key = SweepKey {
            seed,
            worker: 0,
            clock,
        };
        engine
            .sweep(&mut state, &mut wt, &mut totals, &hyper, key)
            .unwrap();
        ll.push(loglik(&state, &wt, &totals, &hyper).0 / state.num_tokens() as f64);
    }
    println!("kos loglik/token per sweep: {ll:?}");
    assert!(ll.windows(2).all(|w| w[1] > w[0]));
}
