//! LDA sessions against a plain loop of `CpuLda` sweeps over local copies of a global count
//! table. Oracle engines: clock 0's initial counts, every later clock's count changes, the
//! per-clock log-likelihood and the final table, all exactly (counts are small integers in
//! f32). Fast engine (`SparseLda`, another exact sampler drawing differently): the final
//! log-likelihood per token within 0.05 nats of the oracle loop's, and both above the initial.

use ps_apps::app::testing::run_bsp;
use ps_apps::app::{App, CpuEngines, OracleEngines, Plan};
use ps_apps::lda::{
    gather_rows, loglik, split_docs, synthetic_lda, CpuLda, LdaApp, LdaArgs, LdaCompute, LdaDelta,
    LdaSettings, LdaWorkerState, SweepKey, SyntheticLdaSpec, TOTALS, WORD_TOPIC,
};

use super::common::job;

const CLOCKS: u64 = 4;

fn plan() -> Plan<LdaSettings> {
    plan_on(1)
}

/// The plan with `threads` compute threads per worker.
fn plan_on(threads: u32) -> Plan<LdaSettings> {
    let args = LdaArgs {
        topics: 10,
        alpha: 0.1,
        beta: 0.01,
        data: None,
        vocab: None,
        test: None,
        ..Default::default()
    };
    let job = ps_apps::app::JobCommon { threads, ..job(2) };
    LdaApp.plan(&args, &job).unwrap()
}

/// The update a delta makes, as rows: (word rows as a map, totals).
fn rows_of(d: &LdaDelta) -> (std::collections::BTreeMap<u64, Vec<f32>>, Vec<f32>) {
    let (words, rows) = d.to_dense_rows();
    let k = d.topics as usize;
    let map = words
        .iter()
        .zip(rows.chunks_exact(k))
        .map(|(w, r)| (u64::from(*w), r.to_vec()))
        .collect();
    (map, d.totals_f32())
}

/// The oracle loop. Returns per clock, per worker, (delta, loglik before the sweep), and the
/// final (word-topic, totals).
#[allow(clippy::type_complexity)]
fn oracle(plan: &Plan<LdaSettings>) -> (Vec<Vec<(LdaDelta, f64)>>, Vec<f32>, Vec<f32>) {
    let s = &plan.settings;
    let corpus = synthetic_lda(&SyntheticLdaSpec::default_builtin(s.seed)).corpus;
    let k = s.hyper.topics as usize;
    let mut states = Vec::new();
    let mut initial = Vec::new();
    for w in 0..2 {
        let docs = split_docs(&corpus, 2, w);
        let (st, d) = LdaWorkerState::init(&docs, corpus.vocab_size, &s.hyper, s.seed, w).unwrap();
        states.push(st);
        initial.push((d, 0.0));
    }
    let mut wt = vec![0.0f32; corpus.vocab_size as usize * k];
    let mut totals = vec![0.0f32; k];
    let mut clocks = vec![initial];
    for clock in 1..CLOCKS {
        for (d, _) in clocks.last().unwrap() {
            d.apply(&mut wt, &mut totals);
        }
        let mut this = Vec::new();
        for (w, st) in states.iter_mut().enumerate() {
            let mut local = gather_rows(&wt, &st.words, s.hyper.topics);
            let mut tot = totals.clone();
            let (ll, _) = loglik(st, &local, &tot, &s.hyper);
            let key = SweepKey {
                seed: s.seed,
                worker: w as u32,
                clock: clock as u32,
            };
            let d = CpuLda::new()
                .sweep(st, &mut local, &mut tot, &s.hyper, key)
                .unwrap();
            this.push((d, ll));
        }
        clocks.push(this);
    }
    for (d, _) in clocks.last().unwrap() {
        d.apply(&mut wt, &mut totals);
    }
    (clocks, wt, totals)
}

#[test]
fn lda_sessions_on_the_oracle_engine_equal_the_oracle_loop_clock_by_clock() {
    let plan = plan();
    let run = run_bsp(&LdaApp, &plan, 2, CLOCKS, &OracleEngines).unwrap();
    let (want, wt, totals) = oracle(&plan);
    for (clock, (got, want)) in run.clocks.iter().zip(&want).enumerate() {
        for (w, ((figures, updates), (delta, ll))) in got.iter().zip(want).enumerate() {
            let (rows, tot) = rows_of(delta);
            assert_eq!(
                updates.of_table(WORD_TOPIC),
                rows,
                "clock {clock} worker {w}"
            );
            let got_tot = updates.of_table(TOTALS).remove(&0).unwrap_or(vec![0.0; 10]);
            assert_eq!(got_tot, tot, "clock {clock} worker {w} totals");
            assert_eq!(figures.clock_loglik, *ll, "clock {clock} worker {w}");
        }
    }
    let v = wt.len() / 10;
    assert_eq!(
        run.ps.read(WORD_TOPIC, &(0..v as u64).collect::<Vec<_>>()),
        wt
    );
    assert_eq!(run.ps.read(TOTALS, &[0]), totals);
    assert!(run.finals[0].facts.topic_recovery.is_some());
}

#[test]
fn lda_sessions_on_the_fast_engine_reach_the_oracles_likelihood() {
    fast_engine_reaches_the_oracles_likelihood(1);
}

/// Three threads a worker: the sweep as three runs of documents (`ParallelSparseLda`).
#[test]
fn lda_sessions_on_three_threads_reach_the_oracles_likelihood() {
    fast_engine_reaches_the_oracles_likelihood(3);
}

fn fast_engine_reaches_the_oracles_likelihood(threads: u32) {
    let plan = plan_on(threads);
    let per_token = |run: &ps_apps::app::testing::BspRun<LdaApp>| {
        let (ll, n) = run.finals.iter().fold((0.0, 0.0), |(a, b), f| {
            (a + f.sums.final_loglik, b + f.sums.final_tokens)
        });
        ll / n
    };
    let initial = |run: &ps_apps::app::testing::BspRun<LdaApp>| {
        let (ll, n) = run.clocks[1].iter().fold((0.0, 0.0), |(a, b), (f, _)| {
            (a + f.clock_loglik, b + f.clock_tokens)
        });
        ll / n
    };
    let fast = run_bsp(&LdaApp, &plan, 2, CLOCKS, &CpuEngines).unwrap();
    let slow = run_bsp(&LdaApp, &plan_on(1), 2, CLOCKS, &OracleEngines).unwrap();
    let (f, s) = (per_token(&fast), per_token(&slow));
    let (fi, si) = (initial(&fast), initial(&slow));
    println!(
        "lda loglik/token on {threads} threads: fast {fi:.4} -> {f:.4}, oracle {si:.4} -> {s:.4}"
    );
    // The shards hold the workers' counts: every token once.
    let tokens: f64 = fast.finals.iter().map(|f| f.sums.final_tokens).sum();
    let totals: f32 = fast.ps.read(TOTALS, &[0]).iter().sum();
    assert_eq!(f64::from(totals), tokens);
    assert!((f - s).abs() < 0.05, "fast {f} vs oracle {s}");
    assert!(f > fi && s > si, "both gain likelihood");
}
