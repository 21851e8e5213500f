//! Speed measurements for the MLP engine (ignored; run in release):
//! `cargo test --release -p ps-apps --test mlp_bench -- --ignored --nocapture --test-threads 1`

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ps_apps::mlp::{sgd_step, Arch, FastMlp, MlpCompute};

/// Runs `f` (one unit of work) `reps` times per trial over `trials` trials;
/// returns (best, median) seconds per unit. The machine is shared, so the
/// best trial estimates the uncontended speed and the median the typical one.
fn time_trials(trials: usize, reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut per: Vec<f64> = (0..trials)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..reps {
                f();
            }
            t0.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    (per[0], per[trials / 2])
}

/// Training throughput (forward + backward + local SGD step) of
/// 784-256-256-10 at batch 128, single-threaded and with 2 threads.
#[test]
#[ignore = "speed measurement; run in release"]
fn mlp_bench_train_784_256_256_10_batch128() {
    let arch = Arch::mnist();
    let b = 128;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..b * arch.input)
        .map(|_| rng.gen_range(0.0..1.0))
        .collect();
    let y: Vec<u8> = (0..b).map(|_| rng.gen_range(0..10)).collect();
    // Forward 2·MACs, weight gradients 2·MACs, input deltas 2·MACs minus
    // the first layer (no delta is propagated into the input).
    let first = arch.layer(0);
    let flop_per_sample = 2.0 * (3 * arch.macs_per_sample() - first.fan_in * first.fan_out) as f64;
    for threads in [1usize, 2] {
        let mut engine = FastMlp::with_threads(threads);
        let mut params = arch.init_params(3);
        let mut grads = arch.zeros();
        for _ in 0..5 {
            engine.gradient(&arch, &params, &x, &y, &mut grads).unwrap();
        }
        let (best, median) = time_trials(21, 20, || {
            engine.gradient(&arch, &params, &x, &y, &mut grads).unwrap();
            sgd_step(&mut params, &grads, 1e-4);
        });
        for (what, dt) in [("best", best), ("median", median)] {
            let sps = b as f64 / dt;
            println!(
                "784-256-256-10 train batch {b} threads {threads} ({what} of 21 trials): \
                 {sps:.0} samples/s, {:.1} GFLOP/s, {:.2} ms/batch",
                sps * flop_per_sample / 1e9,
                dt * 1e3
            );
        }
        let mut out = vec![0u8; b];
        let (best, median) = time_trials(21, 20, || {
            engine.predict(&arch, &params, &x, &mut out).unwrap();
        });
        println!(
            "  inference batch {b}: best {:.0} / median {:.0} samples/s",
            b as f64 / best,
            b as f64 / median
        );
    }
}

/// GFLOP/s of a 1024³ `matrixmultiply::sgemm` (single thread; the crate's
/// `threading` feature is not enabled).
#[test]
#[ignore = "speed measurement; run in release"]
fn mlp_bench_sgemm_1024() {
    let n = 1024;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let a: Vec<f32> = (0..n * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let bm: Vec<f32> = (0..n * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut c = vec![0.0f32; n * n];
    let run = |c: &mut [f32]| {
        // SAFETY: all three matrices are n×n row-major and fully allocated.
        unsafe {
            matrixmultiply::sgemm(
                n,
                n,
                n,
                1.0,
                a.as_ptr(),
                n as isize,
                1,
                bm.as_ptr(),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    run(&mut c);
    let (best, median) = time_trials(15, 2, || run(&mut c));
    let flop = 2.0 * (n * n * n) as f64;
    println!(
        "sgemm 1024^3: best {:.2} ms = {:.1} GFLOP/s, median {:.2} ms = {:.1} GFLOP/s",
        best * 1e3,
        flop / best / 1e9,
        median * 1e3,
        flop / median / 1e9
    );
}
