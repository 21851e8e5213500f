//! Throughput of the LR gradient engines (ignored by default).
//!
//! Run with
//! `cargo test --release -p ps-apps --test lr_speed -- --ignored --nocapture`.
//! Data: 100,000 rows over 100,000 hashed feature keys, 20 nonzeros per row,
//! both with the built-in Zipf(1) feature frequency and with uniform
//! frequency (more distinct keys per batch).

use std::time::Instant;

use ps_apps::lr::{batch_keys, synthetic, CpuLr, FastLr, LrCompute, SparseRow, SyntheticLrSpec};

/// Samples per second of `batch_keys` + weight lookup + `gradient` over all
/// batches of `rows`, best of `reps` passes; also the mean distinct keys per
/// batch and the share of time spent in `batch_keys`.
fn measure(
    engine: &mut dyn LrCompute,
    rows: &[SparseRow],
    batch: usize,
    reps: usize,
) -> (f64, f64, f64, f64) {
    // Pre-compute keys and weights once to time the gradient alone too.
    let prepared: Vec<(Vec<u64>, Vec<f32>)> = rows
        .chunks(batch)
        .map(|b| {
            let k = batch_keys(b);
            let w = k
                .iter()
                .map(|&x| ((x >> 40) as f32 / 16_777_216.0) - 0.5)
                .collect();
            (k, w)
        })
        .collect();
    let mean_keys =
        prepared.iter().map(|p| p.0.len()).sum::<usize>() as f64 / prepared.len() as f64;
    let mut grad = Vec::new();
    let mut best_grad = f64::INFINITY;
    let mut best_keys = f64::INFINITY;
    let mut sink = 0.0;
    for _ in 0..reps {
        let t = Instant::now();
        for b in rows.chunks(batch) {
            sink += batch_keys(b).len() as f64;
        }
        best_keys = best_keys.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for (b, (k, w)) in rows.chunks(batch).zip(&prepared) {
            grad.clear();
            grad.resize(k.len(), 0.0);
            sink += engine.gradient(b, k, w, &mut grad).unwrap();
        }
        best_grad = best_grad.min(t.elapsed().as_secs_f64());
    }
    assert!(sink.is_finite());
    let n = rows.len() as f64;
    (
        n / best_grad,
        n / (best_grad + best_keys),
        mean_keys,
        best_keys / (best_grad + best_keys),
    )
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn gradient_throughput() {
    for (name, zipf) in [("zipf(1) built-in", 1.0), ("uniform", 0.0)] {
        let mut spec = SyntheticLrSpec::default_builtin(1);
        spec.zipf_exponent = zipf;
        let rows = synthetic(&spec).rows;
        println!(
            "{name}: {} rows, {} features, {} nnz/row",
            rows.len(),
            spec.features,
            spec.nnz_per_row
        );
        for batch in [256usize, 4096] {
            let engines: Vec<(String, Box<dyn LrCompute>)> = vec![
                ("cpu oracle".into(), Box::new(CpuLr)),
                ("fast 1 thread".into(), Box::new(FastLr::new(1))),
                ("fast 2 threads".into(), Box::new(FastLr::new(2))),
            ];
            for (label, mut e) in engines {
                let (grad_only, with_keys, keys, key_share) = measure(&mut *e, &rows, batch, 3);
                println!(
                    "  batch {batch:5}  {label:15} gradient {:6.2} M samples/s   \
                     with batch_keys {:6.2} M samples/s  ({keys:.0} keys/batch, batch_keys {:.0}% of time)",
                    grad_only / 1e6,
                    with_keys / 1e6,
                    key_share * 100.0
                );
            }
        }
    }
}
