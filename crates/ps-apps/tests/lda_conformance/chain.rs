//! How many sweeps each chain needs to reach a log-likelihood (release mode, ignored by
//! default): `cargo test --release -p ps-apps --test lda_conformance chain -- --ignored
//! --nocapture`. SparseLDA (each move applied before the next draw) against the word-major
//! sweep over fixed counts in 1, 4 and 16 document groups (`WordMajorLda::with_groups`), from
//! the same random start on one worker's 4 M tokens; the log-likelihood per token every 4
//! sweeps, and each chain's wall time per sweep on all of this machine's threads.

use std::time::Instant;

use ps_apps::lda::{loglik, LdaCompute, SparseLda, SweepKey, WordMajorLda};

use crate::throughput::{large_worker, LargeWorker};

fn chains(k: u32, sweeps: u32) {
    let LargeWorker {
        hyper,
        state: state0,
        word_topic: wt0,
        totals: totals0,
        seed,
        ..
    } = large_worker(k);
    let n = state0.num_tokens() as f64;
    let threads = ps_apps::par::threads();
    println!("K = {k}: {n} tokens, seed {seed}, {threads} threads");
    let engines: Vec<(String, Box<dyn LdaCompute>)> = vec![
        ("sparse".into(), Box::new(SparseLda::new())),
        ("word-major".into(), Box::new(WordMajorLda::new(threads))),
        (
            "word-major:4".into(),
            Box::new(WordMajorLda::new(threads).with_groups(4)),
        ),
        (
            "word-major:16".into(),
            Box::new(WordMajorLda::new(threads).with_groups(16)),
        ),
    ];
    for (name, mut engine) in engines {
        let (mut s, mut wt, mut tot) = (state0.clone(), wt0.clone(), totals0.clone());
        let (mut row, mut secs) = (String::new(), 0.0);
        for clock in 1..=sweeps {
            let key = SweepKey {
                seed,
                worker: 0,
                clock,
            };
            let t0 = Instant::now();
            engine
                .sweep(&mut s, &mut wt, &mut tot, &hyper, key)
                .unwrap();
            secs += t0.elapsed().as_secs_f64();
            if clock % 4 == 0 {
                let (ll, _) = loglik(&s, &wt, &tot, &hyper);
                row += &format!(" | {:.3}", ll / n);
            }
        }
        println!(
            "| K {k}, {name} {row} | {:.3} s a sweep |",
            secs / f64::from(sweeps)
        );
    }
}

#[test]
#[ignore]
fn chain_k50() {
    chains(50, 24);
}

#[test]
#[ignore]
fn chain_k500() {
    chains(500, 24);
}
