//! The CUDA sparse-LR engines (per batch, and resident) against the CPU oracle `CpuLr`, within
//! `FAST_REL_TOL` as the fast CPU engine is.

use ps_apps::lr::{
    batch_keys, CpuLr, LrCompute, LrCopies, LrResident, SparseRow, BIAS_KEY, FAST_REL_TOL,
};
use ps_apps::seed::ClockKey;
use ps_apps::visit::Visit;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::lr::CudaLr;
use worker_gpu::cuda::lr_resident::CudaLrResident;

use crate::common::seed;

fn random_batch(rng: &mut ChaCha8Rng, rows: usize, max_nnz: usize, pool: &[u64]) -> Vec<SparseRow> {
    (0..rows)
        .map(|_| {
            let nnz = rng.gen_range(0..=max_nnz);
            // Keys may repeat within a row: each occurrence contributes.
            let features = (0..nnz)
                .map(|_| {
                    let k = pool[rng.gen_range(0..pool.len())];
                    let v = match rng.gen_range(0..3) {
                        0 => 1.0,
                        1 => rng.gen_range(-3.0f32..3.0),
                        _ => rng.gen_range(-1e-3f32..1e-3),
                    };
                    (k, v)
                })
                .collect();
            SparseRow {
                label: if rng.gen_bool(0.5) { 1.0 } else { 0.0 },
                features,
            }
        })
        .collect()
}

/// Checks the documented tolerance: the loss relative to `|loss| + 1`, each gradient entry
/// relative to its magnitude plus the mean absolute feature value of its key.
fn compare(engine: &mut CudaLr, batch: &[SparseRow], keys: &[u64], weights: &[f32], what: &str) {
    compare_with(batch, keys, weights, what, |g| {
        engine.gradient(batch, keys, weights, g).unwrap()
    });
}

/// [`compare`] of what `device` writes into the gradient (and returns as the loss).
fn compare_with(
    batch: &[SparseRow],
    keys: &[u64],
    weights: &[f32],
    what: &str,
    device: impl FnOnce(&mut [f32]) -> f64,
) {
    let mut go = vec![f32::NAN; keys.len()];
    let mut gg = vec![f32::NAN; keys.len()];
    let lo = CpuLr.gradient(batch, keys, weights, &mut go).unwrap();
    let lg = device(&mut gg);
    assert!(
        (lo - lg).abs() <= FAST_REL_TOL * (lo.abs() + 1.0),
        "{what}: loss oracle {lo} cuda {lg}"
    );
    let mut a = vec![0.0f64; keys.len()];
    for r in batch {
        for &(k, v) in &r.features {
            if let Ok(i) = keys.binary_search(&k) {
                a[i] += f64::from(v.abs()) / batch.len() as f64;
            }
        }
    }
    for i in 0..keys.len() {
        let (o, g) = (f64::from(go[i]), f64::from(gg[i]));
        assert!(
            g.is_finite(),
            "{what}: key #{i} not written or not finite: {g}"
        );
        let tol = FAST_REL_TOL * (o.abs() + a[i]) + 1e-7;
        assert!(
            (o - g).abs() <= tol,
            "{what}: key #{i} oracle {o} cuda {g} tol {tol}"
        );
    }
}

#[test]
fn gradient_matches_the_oracle_on_random_batches() {
    let Some(gpu) = worker_gpu::gpu_or_skip("gradient_matches_the_oracle_on_random_batches") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("lr random batches"));
    let mut engine = CudaLr::new(gpu).expect("engine");
    let mut pool = vec![0, 1, BIAS_KEY, 1 << 63];
    while pool.len() < 5000 {
        pool.push(rng.gen());
    }
    // Sizes vary from call to call, so the reused buffers grow and are reused at smaller sizes.
    for (rows, max_nnz) in [(1, 5), (64, 40), (1000, 30), (7, 200), (4096, 12), (3, 0)] {
        let batch = random_batch(&mut rng, rows, max_nnz, &pool);
        let keys = batch_keys(&batch);
        for extreme in [false, true] {
            let weights: Vec<f32> = (0..keys.len())
                .map(|_| {
                    if extreme {
                        rng.gen_range(-50.0f32..50.0)
                    } else {
                        rng.gen_range(-2.0f32..2.0)
                    }
                })
                .collect();
            compare(
                &mut engine,
                &batch,
                &keys,
                &weights,
                &format!("{rows} rows, extreme {extreme}"),
            );
        }
    }
}

/// Keys missing from the key list count as weight 0 and receive nothing; an empty batch gives
/// zeros and loss 0.
#[test]
fn missing_keys_and_empty_batches() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lr missing_keys_and_empty_batches") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("lr missing keys"));
    let mut engine = CudaLr::new(gpu).expect("engine");
    let pool: Vec<u64> = (0..300).map(|_| rng.gen()).collect();
    let batch = random_batch(&mut rng, 200, 20, &pool);
    let all = batch_keys(&batch);
    let keys: Vec<u64> = all.iter().copied().step_by(3).collect();
    let weights: Vec<f32> = (0..keys.len())
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    compare(&mut engine, &batch, &keys, &weights, "a third of the keys");
    compare(&mut engine, &batch, &[], &[], "no keys at all");
    let mut g = vec![f32::NAN; 3];
    assert_eq!(
        engine.gradient(&[], &[1, 2, 3], &[0.5; 3], &mut g).unwrap(),
        0.0
    );
    assert_eq!(g, vec![0.0; 3]);
}

/// The resident engine: rows uploaded once, batches named by row indices (in any order, a row
/// may come twice), against `CpuLr` on the same rows; keys missing from the call's list count as
/// weight 0; the bytes per call are the indices, key ids and weights in, the gradient and loss
/// out; bad indices and lengths are typed errors.
#[test]
fn resident_gradient_matches_the_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lr resident_gradient_matches_the_oracle") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("lr resident"));
    let mut pool = vec![0, 1, BIAS_KEY, 1 << 63];
    while pool.len() < 3000 {
        pool.push(rng.gen());
    }
    let rows = random_batch(&mut rng, 5000, 30, &pool);
    let mut engine = CudaLrResident::new(gpu).expect("engine");
    engine.setup(&rows).expect("setup");
    // The CPU oracle counts the same set-up and calls (`LrCopies`).
    assert_eq!(engine.traffic().h2d_bytes, LrCopies::setup(&rows), "set-up");
    for (n, third) in [
        (1, false),
        (256, false),
        (1000, true),
        (4096, false),
        (7, true),
    ] {
        let idx: Vec<u32> = (0..n)
            .map(|_| rng.gen_range(0..rows.len() as u32))
            .collect();
        let batch: Vec<SparseRow> = idx.iter().map(|&i| rows[i as usize].clone()).collect();
        let all = batch_keys(&batch);
        let keys: Vec<u64> = if third {
            all.iter().copied().step_by(3).collect()
        } else {
            all
        };
        let weights: Vec<f32> = (0..keys.len())
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let before = engine.traffic();
        compare_with(
            &batch,
            &keys,
            &weights,
            &format!("resident, {n} rows"),
            |g| engine.gradient(&idx, &keys, &weights, g).unwrap(),
        );
        let t = engine.traffic().since(&before);
        let m = keys.len() as u64;
        assert_eq!(t.h2d_bytes, 4 * (n as u64 + 2 * m), "{n} rows: in");
        assert_eq!(t.d2h_bytes, 4 * m + 8, "{n} rows: out");
        let present = m as usize;
        assert_eq!(
            (t.h2d_bytes, t.d2h_bytes),
            LrCopies::call(n, present, false)
        );
        assert!(
            t.h2d_s > 0.0 && t.d2h_s > 0.0,
            "{n} rows: copies timed: {t:?}"
        );
    }
    let mut g = vec![f32::NAN; 2];
    assert_eq!(
        engine.gradient(&[], &[1, 2], &[0.5; 2], &mut g).unwrap(),
        0.0
    );
    assert_eq!(g, vec![0.0; 2]);
    assert!(
        engine.gradient(&[5000], &[1], &[0.5], &mut g[..1]).is_err(),
        "row 5000"
    );
    assert!(
        engine.gradient(&[0], &[1, 2], &[0.5], &mut g).is_err(),
        "lengths"
    );
    assert!(
        engine.gradient(&[0], &[2, 1], &[0.5; 2], &mut g).is_err(),
        "unsorted keys"
    );
}

/// A batch named by its visit: the device makes the row indices (`lr_visit_rows`,
/// `kernels/visit.cuh`) and the keys' local ids (`lr_slots_*`, `kernels/slots.cuh`), the
/// gradient is the oracle's on the rows the host's `Visit::order` names, only the keys' weights
/// go in, and keys other than the batch's are refused.
#[test]
fn resident_gradient_of_a_visit_is_the_named_rows() {
    let Some(gpu) = worker_gpu::gpu_or_skip("lr resident_gradient_of_a_visit") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("lr resident visit"));
    let pool: Vec<u64> = (0..2000).map(|_| rng.gen()).collect();
    let rows = random_batch(&mut rng, 3001, 20, &pool);
    let mut engine = CudaLrResident::new(gpu).expect("engine");
    engine.setup(&rows).expect("setup");
    for (epoch, from, count) in [(0u32, 0u32, 512u32), (1, 2900, 101), (2, 1234, 1)] {
        let key = ClockKey {
            seed: 5,
            worker: 2,
            clock: epoch,
        };
        let visit = Visit {
            from,
            count,
            ..Visit::for_clock(key, rows.len(), 0, 1)
        };
        let batch: Vec<SparseRow> = visit.order().iter().map(|&i| rows[i].clone()).collect();
        let keys = batch_keys(&batch);
        let weights: Vec<f32> = (0..keys.len())
            .map(|_| rng.gen_range(-2.0f32..2.0))
            .collect();
        let before = engine.traffic();
        compare_with(
            &batch,
            &keys,
            &weights,
            &format!("visit of {count} rows from {from}"),
            |g| engine.gradient_visit(&visit, &keys, &weights, g).unwrap(),
        );
        let t = engine.traffic().since(&before);
        let m = keys.len() as u64;
        assert_eq!(t.h2d_bytes, 4 * m, "only the weights go in");
        assert_eq!(
            t.d2h_bytes,
            4 * m + 8 + 12,
            "the gradient, the loss, and the device's key count (u32) and checksum (u64) out"
        );
        assert_eq!(
            (t.h2d_bytes, t.d2h_bytes),
            LrCopies::call(count as usize, m as usize, true)
        );
        if keys.is_empty() {
            // A visit of one row without features: no key to leave out or replace.
            continue;
        }
        // Keys other than the batch's are refused: one left out, one not the worker's.
        let mut g = vec![0.0; keys.len()];
        let fewer = engine.gradient_visit(&visit, &keys[1..], &weights[1..], &mut g[1..]);
        assert!(fewer.is_err(), "a key left out");
        let mut foreign = keys.clone();
        // A key no row holds (every row's keys come from the pool).
        foreign[0] = (0u64..).find(|k| !pool.contains(k)).expect("a free key");
        foreign.sort_unstable();
        let e = engine.gradient_visit(&visit, &foreign, &weights, &mut g);
        assert!(e.is_err(), "a key the rows do not hold");
    }
    let other = Visit::for_clock(
        ClockKey {
            seed: 1,
            worker: 0,
            clock: 0,
        },
        rows.len() + 1,
        0,
        1,
    );
    let mut g = vec![0.0; 1];
    assert!(
        engine.gradient_visit(&other, &[1], &[0.5], &mut g).is_err(),
        "other rows"
    );
}
