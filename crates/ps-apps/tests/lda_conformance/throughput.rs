//! Sweep throughput of the engines on a large synthetic corpus (release mode, ignored by
//! default): `cargo test --release -p ps-apps --test lda_conformance -- --ignored --nocapture`.

use std::time::Instant;

use ps_apps::lda::{
    gather_rows, loglik, synthetic_lda, topic_recovery, CpuLda, LdaCompute, LdaHyper,
    LdaWorkerState, ParallelSparseLda, SparseLda, SweepKey, SyntheticLdaSpec, WordMajorLda,
};

/// The measurements' worker: one worker's 4 M tokens (20,000 documents of 200 over 5,000 words,
/// K topics, seed 11) from its random start, with the copy and totals of its counts, and the
/// synthetic corpus (its true topics).
pub(crate) struct LargeWorker {
    pub syn: ps_apps::lda::SyntheticLda,
    pub hyper: LdaHyper,
    pub state: LdaWorkerState,
    pub word_topic: Vec<f32>,
    pub totals: Vec<f32>,
    pub seed: u64,
}

pub(crate) fn large_worker(k: u32) -> LargeWorker {
    let seed = 11;
    let spec = SyntheticLdaSpec {
        docs: 20_000,
        vocab: 5_000,
        topics: k,
        doc_len: 200,
        ..SyntheticLdaSpec::default_builtin(seed)
    };
    let syn = synthetic_lda(&spec);
    let hyper = LdaHyper {
        topics: k,
        alpha: 0.1,
        beta: 0.01,
    };
    let (state, init) =
        LdaWorkerState::init(&syn.corpus.docs, syn.corpus.vocab_size, &hyper, seed, 0).unwrap();
    let mut table = vec![0f32; 5_000 * k as usize];
    let mut totals = vec![0f32; k as usize];
    init.apply(&mut table, &mut totals);
    let word_topic = gather_rows(&table, &state.words, k);
    LargeWorker {
        syn,
        hyper,
        state,
        word_topic,
        totals,
        seed,
    }
}

fn throughput(k: u32) {
    let LargeWorker {
        syn,
        hyper,
        state: state0,
        word_topic: wt0,
        totals: totals0,
        seed,
    } = large_worker(k);
    let n = state0.num_tokens() as f64;
    println!("K = {k}: {} tokens, seed {seed}", state0.num_tokens());
    let mut engs: Vec<(Box<dyn LdaCompute>, u32)> = vec![
        (Box::new(SparseLda::new()), 8),
        // On all cores.
        (Box::new(ParallelSparseLda::new(ps_apps::par::threads())), 8),
        // The device sampler's twin, on all cores.
        (Box::new(WordMajorLda::new(ps_apps::par::threads())), 8),
        (Box::new(CpuLda::new()), 1),
    ];
    for (engine, sweeps) in engs.iter_mut() {
        let (mut s, mut wt, mut tot) = (state0.clone(), wt0.clone(), totals0.clone());
        for clock in 1..=*sweeps {
            let key = SweepKey {
                seed,
                worker: 0,
                clock,
            };
            let t0 = Instant::now();
            let c0 = thread_cpu_seconds();
            engine
                .sweep(&mut s, &mut wt, &mut tot, &hyper, key)
                .unwrap();
            let dt = t0.elapsed().as_secs_f64();
            // The calling thread's time: the whole sweep only for the one-thread engines.
            let cpu = thread_cpu_seconds()
                .map(|c1| c1 - c0.unwrap_or(c1))
                .filter(|_| !matches!(engine.name(), "sparse-threads" | "word-major"));
            println!(
                "  {:6} sweep {clock}: {:.2} M tokens/s wall ({dt:.2} s), {} on-CPU",
                engine.name(),
                n / dt / 1e6,
                cpu.map_or("n/a".to_string(), |c| format!(
                    "{:.2} M tokens/s ({c:.2} s)",
                    n / c / 1e6
                ))
            );
        }
        let (ll, _) = loglik(&s, &wt, &tot, &hyper);
        let rec = topic_recovery(
            &syn.topics,
            k as usize,
            &table_from(&s, &wt, 5_000, k),
            k as usize,
            0.01,
        );
        println!(
            "  {} after {sweeps} sweeps: loglik/token {:.4}, recovery {rec:.3}",
            engine.name(),
            ll / n
        );
    }
}

/// This thread's on-CPU time (Linux `/proc/thread-self/schedstat`), so the
/// throughput is not distorted by other processes on a shared machine.
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn table_from(s: &LdaWorkerState, wt: &[f32], v: usize, k: u32) -> Vec<f32> {
    let k = k as usize;
    let mut out = vec![0f32; v * k];
    for (i, &w) in s.words.iter().enumerate() {
        out[w as usize * k..(w as usize + 1) * k].copy_from_slice(&wt[i * k..(i + 1) * k]);
    }
    out
}

#[test]
#[ignore]
fn throughput_k50() {
    throughput(50);
}

#[test]
#[ignore]
fn throughput_k500() {
    throughput(500);
}
