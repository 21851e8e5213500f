//! LDA: a synthetic corpus from known topics, timed sparse-engine sweeps of data-parallel
//! workers with a BSP merge into a global table.

use std::process::exit;
use std::time::Instant;

use ps_apps::lda::{self, LdaCompute};
use serde_json::json;

use crate::{
    emit, export_dir, rates, timed, write_file, write_meta, Args, Fingerprint, Run, CPU_ENGINE,
};

struct LdaWorker {
    state: lda::LdaWorkerState,
    local: Vec<f32>,
    totals: Vec<f32>,
    engine: lda::SparseLda,
}

pub(crate) fn run_lda(args: &Args, run: &Run) {
    let docs: u32 = args.get("--docs", 20_000, 2_000);
    let doc_len: u32 = args.get("--doc-len", 200, 200);
    let vocab: u32 = args.get("--vocab", 5_000, 5_000);
    let topics: u32 = args.get("--topics", 50, 50);
    let true_topics: u32 = args.get("--true-topics", 50, 50);
    if docs == 0 || doc_len == 0 || vocab == 0 || topics == 0 || true_topics == 0 {
        eprintln!("engines: lda needs docs, doc-len, vocab, topics, true-topics >= 1");
        exit(2);
    }
    let t = Instant::now();
    let spec = lda::SyntheticLdaSpec {
        docs,
        vocab,
        topics: true_topics,
        doc_len,
        alpha: 0.1,
        beta: 1.0,
        noise: 0.1,
        seed: run.seed,
    };
    let corpus = lda::synthetic_lda(&spec).corpus;
    let tokens = corpus.num_tokens();
    let mut fp = Fingerprint::new();
    for d in &corpus.docs {
        fp.add(d.len() as u64);
        for &w in d {
            fp.add(u64::from(w));
        }
    }
    eprintln!(
        "lda: generated {docs} docs x {doc_len} tokens, V = {vocab} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shape = json!({
        "app": "lda", "docs": docs, "doc_len": doc_len, "vocab": vocab,
        "true_topics": true_topics, "tokens": tokens, "seed": run.seed, "data_hash": fp.hex(),
    });
    if let Some(dir) = export_dir(run) {
        let mut s = String::with_capacity(tokens as usize * 5);
        for d in &corpus.docs {
            let line: Vec<String> = d.iter().map(u32::to_string).collect();
            s.push_str(&line.join(" "));
            s.push('\n');
        }
        write_file(dir, "docs.txt", s.as_bytes());
        let mut meta = shape.clone();
        meta["format"] =
            json!("docs.txt: one document per line, space-separated word ids in 0..vocab");
        write_meta(dir, &meta);
    }
    if run.export_only {
        return;
    }
    let hyper = lda::LdaHyper {
        topics,
        alpha: 0.1,
        beta: 0.01,
    };
    let k = topics as usize;
    let nw = run.threads.max(1) as u32;
    let mut global = vec![0f32; vocab as usize * k];
    let mut gtot = vec![0f32; k];
    let mut workers: Vec<LdaWorker> = (0..nw)
        .map(|w| {
            let part = lda::split_docs(&corpus, nw, w);
            let (state, delta) = lda::LdaWorkerState::init(&part, vocab, &hyper, run.seed, w)
                .unwrap_or_else(|e| {
                    eprintln!("engines: lda init: {e}");
                    exit(1)
                });
            delta.apply(&mut global, &mut gtot);
            LdaWorker {
                state,
                local: Vec::new(),
                totals: Vec::new(),
                engine: lda::SparseLda::new(),
            }
        })
        .collect();
    for w in &mut workers {
        w.local = lda::gather_rows(&global, &w.state.words, topics);
        w.totals = gtot.clone();
    }
    drop(corpus);
    let seed = run.seed;
    let secs = timed(run, "lda", |rep| {
        let clock = rep as u32 + 1;
        let sweep = |(i, w): (usize, &mut LdaWorker)| {
            let key = lda::SweepKey {
                seed,
                worker: i as u32,
                clock,
            };
            w.engine
                .sweep(&mut w.state, &mut w.local, &mut w.totals, &hyper, key)
        };
        if workers.len() == 1 {
            // One worker: its local copy is the whole model, nothing to merge.
            sweep((0, &mut workers[0])).expect(CPU_ENGINE);
            return;
        }
        // Data-parallel sweeps (one worker per thread, as the parameter server runs them),
        // then a BSP merge: deltas into the global table, fresh copies for the next sweep.
        let deltas: Vec<lda::LdaDelta> = std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter_mut()
                .enumerate()
                .map(|iw| s.spawn(move || sweep(iw)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().expect(CPU_ENGINE))
                .collect()
        });
        for d in &deltas {
            d.apply(&mut global, &mut gtot);
        }
        for w in &mut workers {
            w.local = lda::gather_rows(&global, &w.state.words, topics);
            w.totals.copy_from_slice(&gtot);
        }
    });
    let ll: f64 = workers
        .iter()
        .map(|w| {
            lda::loglik_per_token(&w.state, &w.local, &w.totals, &hyper)
                * w.state.num_tokens() as f64
        })
        .sum::<f64>()
        / tokens as f64;
    let extra = json!({
        "engine": "ours-sparselda", "measure": "train", "threads": run.threads,
        "workers": workers.len(), "topics": topics, "alpha": hyper.alpha, "beta": hyper.beta,
        "warmup": run.warmup, "reps": secs.len(), "unit": "tokens/s",
        "loglik_per_token": ll, "quick": run.quick,
    });
    emit(&[&shape, &extra, &rates(tokens as f64, &secs)]);
}
