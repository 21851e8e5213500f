//! LR: synthetic sparse rows, timed epochs of data-parallel workers, each with a local weight
//! store standing in for the parameter server.

use std::process::exit;
use std::time::Instant;

use ps_apps::lr::{self, LrCompute};
use serde_json::json;

use crate::{
    emit, export_dir, rates, timed, write_file, write_meta, Args, Fingerprint, FxMap, Run,
    CPU_ENGINE,
};

/// One data-parallel LR worker: its rows, its engine and a local weight store standing in for
/// the parameter server (plain SGD on the pushed gradient).
struct LrWorker {
    rows: Vec<lr::SparseRow>,
    engine: lr::FastLr,
    weights: FxMap<u64, f32>,
    keys_secs: f64,
    grad_secs: f64,
    loss: f64,
}

pub(crate) fn run_lr(args: &Args, run: &Run) {
    let rows: u32 = args.get("--rows", 100_000, 10_000);
    let features: u64 = args.get("--features", 100_000, 100_000);
    let nnz: u32 = args.get("--nnz", 20, 20);
    let batch: usize = args.get("--batch", 256, 256);
    if rows == 0 || features == 0 || nnz == 0 || batch == 0 {
        eprintln!("engines: lr needs rows, features, nnz, batch >= 1");
        exit(2);
    }
    let t = Instant::now();
    let spec = lr::SyntheticLrSpec {
        rows,
        features,
        nnz_per_row: nnz,
        ..lr::SyntheticLrSpec::default_builtin(run.seed)
    };
    let data = lr::synthetic(&spec);
    // Feature index of each hashed key: synthetic feature j has key synthetic_key(seed, j).
    let index: FxMap<u64, u64> = (0..features)
        .map(|j| (lr::synthetic_key(run.seed, j), j))
        .collect();
    let mut fp = Fingerprint::new();
    for r in &data.rows {
        fp.add(u64::from(r.label.to_bits()));
        fp.add(r.features.len() as u64);
        for &(k, v) in &r.features {
            fp.add(index[&k]);
            fp.add(u64::from(v.to_bits()));
        }
    }
    let total_nnz: usize = data.rows.iter().map(|r| r.features.len()).sum();
    eprintln!(
        "lr: generated {rows} rows x {features} features, {total_nnz} nonzeros in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shape = json!({
        "app": "lr", "rows": rows, "features": features, "nnz_per_row": nnz,
        "nonzeros": total_nnz, "seed": run.seed, "data_hash": fp.hex(),
    });
    if let Some(dir) = export_dir(run) {
        let mut s = String::with_capacity(total_nnz * 9 + rows as usize * 3);
        let mut idx: Vec<(u64, f32)> = Vec::new();
        for r in &data.rows {
            idx.clear();
            idx.extend(r.features.iter().map(|&(k, v)| (index[&k] + 1, v)));
            idx.sort_unstable_by_key(|p| p.0);
            s.push_str(if r.label > 0.5 { "1" } else { "0" });
            for &(i, v) in &idx {
                s.push_str(&format!(" {i}:{v}"));
            }
            s.push('\n');
        }
        write_file(dir, "train.svm", s.as_bytes());
        let mut meta = shape.clone();
        meta["format"] = json!(concat!(
            "train.svm: libsvm text, label 0/1, 1-based feature indices (feature j = ",
            "synthetic feature rank j-1), ascending; no bias column"
        ));
        write_meta(dir, &meta);
    }
    if run.export_only {
        return;
    }
    drop(index);
    let mut all = data.rows;
    lr::add_bias(&mut all);
    let nw = run.threads.max(1) as u32;
    let mut workers: Vec<LrWorker> = (0..nw)
        .map(|w| LrWorker {
            rows: lr::worker_split(&all, nw, w).to_vec(),
            engine: lr::FastLr::new(1),
            weights: FxMap::default(),
            keys_secs: 0.0,
            grad_secs: 0.0,
            loss: 0.0,
        })
        .collect();
    drop(all);
    let step = 0.5f32;
    let seed = run.seed;
    let warmup = run.warmup;
    let secs = timed(run, "lr", |rep| {
        let epoch = |(i, w): (usize, &mut LrWorker)| {
            lr::shuffle_epoch(&mut w.rows, seed, i as u32, rep as u32);
            if rep == warmup {
                w.keys_secs = 0.0;
                w.grad_secs = 0.0;
            }
            w.loss = 0.0;
            let mut weights: Vec<f32> = Vec::new();
            let mut grad: Vec<f32> = Vec::new();
            for b in w.rows.chunks(batch) {
                let t0 = Instant::now();
                let keys = lr::batch_keys(b);
                let t1 = Instant::now();
                weights.clear();
                weights.extend(
                    keys.iter()
                        .map(|k| w.weights.get(k).copied().unwrap_or(0.0)),
                );
                grad.resize(keys.len(), 0.0);
                let t2 = Instant::now();
                w.loss += w
                    .engine
                    .gradient(b, &keys, &weights, &mut grad)
                    .expect(CPU_ENGINE);
                let t3 = Instant::now();
                w.keys_secs += (t1 - t0).as_secs_f64();
                w.grad_secs += (t3 - t2).as_secs_f64();
                for (k, g) in keys.iter().zip(&grad) {
                    *w.weights.entry(*k).or_insert(0.0) -= step * g;
                }
            }
        };
        if workers.len() == 1 {
            epoch((0, &mut workers[0]));
        } else {
            std::thread::scope(|s| {
                for iw in workers.iter_mut().enumerate() {
                    s.spawn(move || epoch(iw));
                }
            });
        }
    });
    let train_logloss = workers.iter().map(|w| w.loss).sum::<f64>() / f64::from(rows);
    let base = json!({
        "engine": "ours-fastlr", "threads": run.threads, "workers": workers.len(),
        "batch": batch, "warmup": run.warmup, "reps": secs.len(), "unit": "samples/s",
        "train_logloss": train_logloss, "quick": run.quick,
    });
    emit(&[
        &shape,
        &base,
        &json!({"measure": "train", "what": concat!(
            "shuffle + batch_keys + weight gather from a local hash map + gradient + ",
            "SGD step into it (wall time)"
        )}),
        &rates(f64::from(rows), &secs),
    ]);
    // Phase timers summed over the timed reps; the slowest worker bounds the wall time.
    let reps = secs.len() as f64;
    let slowest = |f: &dyn Fn(&LrWorker) -> f64| workers.iter().map(f).fold(0.0, f64::max);
    let engine_secs = slowest(&|w| w.keys_secs + w.grad_secs);
    let grad_secs = slowest(&|w| w.grad_secs);
    for (measure, what, t) in [
        (
            "engine",
            "batch_keys + LrCompute::gradient only (summed over timed reps, slowest worker)",
            engine_secs,
        ),
        (
            "gradient",
            "LrCompute::gradient only (summed over timed reps, slowest worker)",
            grad_secs,
        ),
    ] {
        emit(&[
            &shape,
            &base,
            &json!({"measure": measure, "what": what,
                    "rate": f64::from(rows) * reps / t, "seconds": t}),
        ]);
    }
}
