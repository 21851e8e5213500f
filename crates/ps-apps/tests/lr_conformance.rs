//! Conformance of the fast LR engine against the CPU oracle, and a
//! finite-difference check of the oracle itself.
//!
//! Inputs are fresh on every run; the seed is printed (run with
//! `-- --nocapture`) and `LR_CONF_SEED=<seed>` replays a run.

use std::time::{SystemTime, UNIX_EPOCH};

use ps_apps::lr::{
    batch_keys, CpuLr, FastLr, LrCompute, SparseRow, BIAS_KEY, FAST_MIN_ROWS_PER_THREAD,
    FAST_REL_TOL,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn seed() -> u64 {
    let s = std::env::var("LR_CONF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("LR_CONF_SEED={s}");
    s
}

/// A pool of keys with edge values and random ones, so rows share keys.
fn key_pool(rng: &mut ChaCha8Rng, n: usize) -> Vec<u64> {
    let mut pool = vec![0, 1, 2, BIAS_KEY, BIAS_KEY - 1, 1 << 63];
    while pool.len() < n {
        pool.push(rng.gen());
    }
    pool
}

fn random_batch(
    rng: &mut ChaCha8Rng,
    rows: usize,
    max_nnz: usize,
    pool: &[u64],
    repeat_in_row: bool,
) -> Vec<SparseRow> {
    (0..rows)
        .map(|_| {
            let nnz = rng.gen_range(0..=max_nnz);
            let mut features: Vec<(u64, f32)> = (0..nnz)
                .map(|_| {
                    let k = pool[rng.gen_range(0..pool.len())];
                    let v = match rng.gen_range(0..4) {
                        0 => 1.0,
                        1 => rng.gen_range(-3.0f32..3.0),
                        2 => rng.gen_range(0.0f32..1.0),
                        _ => rng.gen_range(-1e-3f32..1e-3),
                    };
                    (k, v)
                })
                .collect();
            if !repeat_in_row {
                features.sort_by_key(|f| f.0);
                features.dedup_by_key(|f| f.0);
            }
            SparseRow {
                label: if rng.gen_bool(0.5) { 1.0 } else { 0.0 },
                features,
            }
        })
        .collect()
}

fn random_weights(rng: &mut ChaCha8Rng, n: usize, extreme: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            if extreme {
                match rng.gen_range(0..3) {
                    0 => 50.0,
                    1 => -50.0,
                    _ => rng.gen_range(-50.0f32..50.0),
                }
            } else {
                rng.gen_range(-2.0f32..2.0)
            }
        })
        .collect()
}

/// `a_k = (1/n) Σ_rows Σ_{occurrences of k} |x|`.
fn magnitudes(batch: &[SparseRow], keys: &[u64]) -> Vec<f64> {
    let mut a = vec![0.0f64; keys.len()];
    for r in batch {
        for &(k, v) in &r.features {
            if let Ok(i) = keys.binary_search(&k) {
                a[i] += f64::from(v.abs());
            }
        }
    }
    let n = batch.len().max(1) as f64;
    a.iter_mut().for_each(|x| *x /= n);
    a
}

/// Runs oracle and `fast` on one input and checks the documented tolerance.
fn compare(fast: &mut FastLr, batch: &[SparseRow], keys: &[u64], weights: &[f32], what: &str) {
    let mut go = vec![f32::NAN; keys.len()];
    let mut gf = vec![f32::NAN; keys.len()];
    let lo = CpuLr.gradient(batch, keys, weights, &mut go).unwrap();
    let lf = fast.gradient(batch, keys, weights, &mut gf).unwrap();
    assert!(lo.is_finite() && lf.is_finite(), "{what}: loss {lo} / {lf}");
    assert!(
        (lo - lf).abs() <= FAST_REL_TOL * (lo.abs() + 1.0),
        "{what}: loss oracle {lo} fast {lf}"
    );
    let a = magnitudes(batch, keys);
    for i in 0..keys.len() {
        let (o, f) = (f64::from(go[i]), f64::from(gf[i]));
        assert!(o.is_finite() && f.is_finite(), "{what}: key {i} {o} {f}");
        let tol = FAST_REL_TOL * (o.abs() + a[i]) + 1e-7;
        assert!(
            (o - f).abs() <= tol,
            "{what}: key {} (#{i}) oracle {o} fast {f} tol {tol}",
            keys[i]
        );
    }
}

#[test]
fn fast_matches_oracle_on_random_batches() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    // One engine for every case, so buffer reuse across sizes is covered.
    let mut fast1 = FastLr::new(1);
    let mut fast4 = FastLr::new(4);
    for case in 0..300 {
        let rows = match case % 5 {
            0 => 0,
            1 => rng.gen_range(1..4),
            2 => rng.gen_range(1..300),
            3 => rng.gen_range(300..1500),
            _ => rng.gen_range(1..64),
        };
        let pool_size = rng.gen_range(6..400);
        let pool = key_pool(&mut rng, pool_size);
        let batch = random_batch(&mut rng, rows, 30, &pool, case % 7 == 0);
        let keys = batch_keys(&batch);
        let extreme = case % 3 == 0;
        let w = random_weights(&mut rng, keys.len(), extreme);
        let what = format!(
            "case {case} ({rows} rows, {} keys, extreme {extreme})",
            keys.len()
        );
        compare(&mut fast1, &batch, &keys, &w, &what);
        compare(&mut fast4, &batch, &keys, &w, &what);
    }
}

#[test]
fn fast_matches_oracle_with_threads_on_large_batches() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let mut fast = FastLr::new(3);
    for &rows in &[
        2 * FAST_MIN_ROWS_PER_THREAD,
        3 * FAST_MIN_ROWS_PER_THREAD + 17,
        5000,
    ] {
        let pool = key_pool(&mut rng, 2000);
        let batch = random_batch(&mut rng, rows, 25, &pool, false);
        let keys = batch_keys(&batch);
        for extreme in [false, true] {
            let w = random_weights(&mut rng, keys.len(), extreme);
            compare(
                &mut fast,
                &batch,
                &keys,
                &w,
                &format!("{rows} rows threaded"),
            );
        }
    }
}

#[test]
fn empty_batch_and_featureless_rows() {
    for engine in [&mut CpuLr as &mut dyn LrCompute, &mut FastLr::new(2)] {
        let mut g: Vec<f32> = Vec::new();
        assert_eq!(engine.gradient(&[], &[], &[], &mut g).unwrap(), 0.0);
        // Keys with an empty batch: gradient is zero.
        let mut g = vec![f32::NAN; 2];
        assert_eq!(
            engine.gradient(&[], &[3, 9], &[1.0, -1.0], &mut g).unwrap(),
            0.0
        );
        assert_eq!(g, vec![0.0, 0.0]);
        // Rows without features: z = 0, loss ln 2 each, no gradient.
        let rows = vec![
            SparseRow {
                label: 1.0,
                features: vec![],
            },
            SparseRow {
                label: 0.0,
                features: vec![],
            },
        ];
        let keys = batch_keys(&rows);
        assert!(keys.is_empty());
        let loss = engine.gradient(&rows, &keys, &[], &mut []).unwrap();
        assert!((loss - 2.0 * std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    }
}

#[test]
fn keys_outside_and_missing_from_the_key_list() {
    let rows = vec![
        SparseRow {
            label: 1.0,
            features: vec![(5, 2.0), (7, 1.0)],
        },
        SparseRow {
            label: 0.0,
            features: vec![(5, 1.0), (9, -1.0)],
        },
    ];
    // Key 7 and 9 are missing (weight 0, no gradient); 100 is extra.
    let keys = [5u64, 100];
    let w = [0.5f32, 3.0];
    let mut go = [f32::NAN; 2];
    let mut gf = [f32::NAN; 2];
    let lo = CpuLr.gradient(&rows, &keys, &w, &mut go).unwrap();
    let lf = FastLr::new(1).gradient(&rows, &keys, &w, &mut gf).unwrap();
    assert!((lo - lf).abs() < 1e-5);
    assert_eq!(go[1], 0.0);
    assert_eq!(gf[1], 0.0);
    // z1 = 1, z2 = 0.5: grad_5 = ((σ(1) - 1) * 2 + σ(0.5) * 1) / 2.
    let s = |z: f64| 1.0 / (1.0 + (-z).exp());
    let expect = ((s(1.0) - 1.0) * 2.0 + s(0.5)) / 2.0;
    assert!((f64::from(go[0]) - expect).abs() < 1e-6);
    assert!((f64::from(gf[0]) - expect).abs() < 1e-5);
}

#[test]
fn extreme_weights_stay_finite() {
    let rows: Vec<SparseRow> = (0..64)
        .map(|i| SparseRow {
            label: (i % 2) as f32,
            features: (0..40).map(|k| (k as u64, 3.0)).collect(),
        })
        .collect();
    let keys = batch_keys(&rows);
    for sign in [1.0f32, -1.0] {
        let w = vec![50.0 * sign; keys.len()]; // |z| = 6000
        for engine in [&mut CpuLr as &mut dyn LrCompute, &mut FastLr::new(1)] {
            let mut g = vec![f32::NAN; keys.len()];
            let loss = engine.gradient(&rows, &keys, &w, &mut g).unwrap();
            // Half the rows are wrong by a margin of 6000.
            assert!(
                (loss - 32.0 * 6000.0).abs() < 1.0,
                "{} {loss}",
                engine.name()
            );
            for x in &g {
                // Every feature: (1/64) * 32 * (±1) * 3 = ±1.5.
                assert!((x - 1.5 * sign).abs() < 1e-5, "{} {x}", engine.name());
            }
        }
    }
}

/// Mean loss of the oracle at `w`.
fn mean_loss(batch: &[SparseRow], keys: &[u64], w: &[f32]) -> f64 {
    let mut g = vec![0.0f32; keys.len()];
    CpuLr.gradient(batch, keys, w, &mut g).unwrap() / batch.len() as f64
}

#[test]
fn oracle_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    // Weights on a 1/64 grid and a power-of-two step, so `w ± h` is exact
    // in f32 and the oracle's f64 arithmetic dominates the error.
    let h = 1.0f32 / 4096.0;
    for case in 0..20 {
        let pool = key_pool(&mut rng, 40);
        let rows = rng.gen_range(1..60);
        let batch = random_batch(&mut rng, rows, 12, &pool, case % 2 == 0);
        let keys = batch_keys(&batch);
        let w: Vec<f32> = (0..keys.len())
            .map(|_| rng.gen_range(-128i32..128) as f32 / 64.0)
            .collect();
        let mut g = vec![0.0f32; keys.len()];
        CpuLr.gradient(&batch, &keys, &w, &mut g).unwrap();
        for i in 0..keys.len() {
            let mut wp = w.clone();
            let mut wm = w.clone();
            wp[i] += h;
            wm[i] -= h;
            let fd = (mean_loss(&batch, &keys, &wp) - mean_loss(&batch, &keys, &wm))
                / (2.0 * f64::from(h));
            let an = f64::from(g[i]);
            assert!(
                (fd - an).abs() <= 1e-5 * (1.0 + an.abs()),
                "case {case} key #{i}: finite difference {fd} vs gradient {an}"
            );
        }
    }
}
