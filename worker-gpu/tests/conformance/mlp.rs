//! The CUDA MLP engine against the CPU oracle `CpuMlp` (f64 accumulation): gradients within a
//! relative error of 1e-4 (f32 sums in another order), loss totals within 1e-4 relative, correct
//! counts and predictions equal. The random inputs are drawn away from the two places where f32
//! rounding may legitimately flip a discrete choice: a hidden pre-activation within 1e-3 of 0
//! (the ReLU's kink) and two top logits within 1e-3 of each other (the arg-max).

use std::panic::{catch_unwind, AssertUnwindSafe};

use ps_apps::mlp::{
    evaluate, sgd_step, synthetic_mlp, Arch, BatchStats, CpuMlp, FastMlp, MlpCompute,
    SyntheticMlpSpec,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::mlp::{CudaMlp, MlpGemm, DEFAULT_CHUNK};

use crate::common::{rel_err, seed};

/// How far from a kink or a tie every sample is drawn.
const MARGIN: f64 = 1e-3;

/// Weights Glorot-uniform × 1.5 and biases in ±0.2 (not zero, so that the bias path counts).
fn random_params(rng: &mut ChaCha8Rng, arch: &Arch) -> Vec<Vec<f32>> {
    arch.layers()
        .iter()
        .map(|s| {
            let a = 1.5 * (6.0 / (s.fan_in + s.fan_out) as f32).sqrt();
            let mut t: Vec<f32> = (0..s.len()).map(|_| rng.gen_range(-a..a)).collect();
            for row in t.chunks_exact_mut(s.width()) {
                row[s.fan_in] = rng.gen_range(-0.2..0.2);
            }
            t
        })
        .collect()
}

/// f64 forward pass of one sample: the logits, and whether every hidden pre-activation is at
/// least `MARGIN` from 0 and the top two logits at least `MARGIN` apart.
fn forward64(arch: &Arch, params: &[Vec<f32>], x: &[f32]) -> (Vec<f64>, bool) {
    let nl = arch.num_layers();
    let mut a: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let mut far = true;
    for (l, p) in params.iter().enumerate() {
        let s = arch.layer(l);
        let mut z = vec![0.0f64; s.fan_out];
        for (o, zo) in z.iter_mut().enumerate() {
            let row = &p[o * s.width()..(o + 1) * s.width()];
            *zo = f64::from(row[s.fan_in])
                + row[..s.fan_in]
                    .iter()
                    .zip(&a)
                    .map(|(&w, &v)| f64::from(w) * v)
                    .sum::<f64>();
        }
        if l + 1 < nl {
            far &= z.iter().all(|v| v.abs() >= MARGIN);
            a = z.iter().map(|v| v.max(0.0)).collect();
        } else {
            a = z;
        }
    }
    let mut sorted = a.clone();
    sorted.sort_by(|p, q| q.total_cmp(p));
    if sorted.len() >= 2 {
        far &= sorted[0] - sorted[1] >= MARGIN;
    }
    (a, far)
}

fn argmax64(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `b` samples with inputs in ±1, each redrawn until it is far from kinks and ties; half the
/// labels are the model's arg-max (so that `correct` is not near 0), half uniform.
fn random_batch(
    rng: &mut ChaCha8Rng,
    arch: &Arch,
    params: &[Vec<f32>],
    b: usize,
) -> (Vec<f32>, Vec<u8>) {
    let d = arch.input;
    let mut x = Vec::with_capacity(b * d);
    let mut y = Vec::with_capacity(b);
    let mut row = vec![0.0f32; d];
    for _ in 0..b {
        let mut tries = 0;
        let logits = loop {
            for v in row.iter_mut() {
                *v = rng.gen_range(-1.0..1.0);
            }
            let (logits, far) = forward64(arch, params, &row);
            tries += 1;
            if far {
                break logits;
            }
            assert!(tries < 10_000, "no sample far from the kinks for {arch:?}");
        };
        x.extend_from_slice(&row);
        y.push(if rng.gen_bool(0.5) {
            argmax64(&logits) as u8
        } else {
            rng.gen_range(0..arch.classes) as u8
        });
    }
    (x, y)
}

/// Counts equal; the loss total within 1e-4 relative, plus 1e-5 per sample of absolute slack
/// (f32 logits carry ~1e-6 absolute error, which is large relative to a near-zero loss).
fn assert_stats_close(got: &BatchStats, want: &BatchStats, what: &str) {
    assert_eq!(got.count, want.count, "{what}: count");
    assert_eq!(got.correct, want.correct, "{what}: correct");
    let diff = (got.loss_sum - want.loss_sum).abs();
    let tol = 1e-4 * want.loss_sum.abs() + 1e-5 * want.count as f64;
    assert!(
        diff <= tol,
        "{what}: loss_sum {} vs {} (diff {diff:.2e} > {tol:.2e})",
        got.loss_sum,
        want.loss_sum
    );
}

#[test]
fn mlp_gradient_matches_cpu_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("mlp_gradient_matches_cpu_oracle") else {
        return;
    };
    // One engine with the default chunk, one with chunks of 64 (a batch of 200 is then four
    // chunks: double-buffered uploads and gradient accumulation). Both are reused across
    // architectures and batch sizes, so buffers grow and are reused.
    gradients_match_the_oracle(
        "mlp_gradient_matches_cpu_oracle",
        &mut [
            CudaMlp::new(gpu.clone()).expect("engine"),
            CudaMlp::with_chunk(gpu, 64).expect("engine"),
        ],
    );
}

/// The products through cuBLAS, chunked too (its sums accumulate across chunks with beta 1): a
/// case of its own, so that a cuBLAS that fails leaves the tiled kernel's result standing.
#[test]
fn mlp_gradient_with_cublas_matches_cpu_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("mlp_gradient_with_cublas_matches_cpu_oracle") else {
        return;
    };
    gradients_match_the_oracle(
        "mlp_gradient_with_cublas_matches_cpu_oracle",
        &mut [
            CudaMlp::with_gemm(gpu.clone(), DEFAULT_CHUNK, MlpGemm::Cublas).expect("engine"),
            CudaMlp::with_gemm(gpu, 64, MlpGemm::Cublas).expect("engine"),
        ],
    );
}

/// Every engine's gradient and statistics against `CpuMlp`'s, over architectures with ragged
/// tiles and batches of 1 to 200 (random, seeded by `case`).
fn gradients_match_the_oracle(case: &str, engines: &mut [CudaMlp]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed(case));
    let archs = [
        Arch::new(20, &[], 3),           // logistic regression
        Arch::new(33, &[37], 10),        // one hidden layer, ragged tiles everywhere
        Arch::new(50, &[37, 65], 7),     // two hidden layers of odd widths
        Arch::new(100, &[130, 37], 256), // several column tiles; the largest class count
    ];
    for arch in &archs {
        let params = random_params(&mut rng, arch);
        for b in [1usize, 3, 64, 200] {
            let (x, y) = random_batch(&mut rng, arch, &params, b);
            let mut want = arch.zeros();
            let want_stats = CpuMlp.gradient(arch, &params, &x, &y, &mut want).unwrap();
            for eng in engines.iter_mut() {
                let what = format!(
                    "{arch:?} batch {b} chunk {} gemm {}",
                    eng.chunk(),
                    eng.gemm().name()
                );
                let mut got: Vec<Vec<f32>> = want.iter().map(|g| vec![f32::NAN; g.len()]).collect();
                let stats = eng.gradient(arch, &params, &x, &y, &mut got).unwrap();
                for (l, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        g.iter().all(|v| v.is_finite()),
                        "{what}: layer {l} not fully written"
                    );
                    let e = rel_err(g, w);
                    assert!(e <= 1e-4, "{what}: layer {l} rel_err {e:.3e}");
                }
                assert_stats_close(&stats, &want_stats, &what);
            }
        }
    }
}

#[test]
fn mlp_empty_batch_gives_zeros() {
    let Some(gpu) = worker_gpu::gpu_or_skip("mlp_empty_batch_gives_zeros") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("mlp_empty_batch_gives_zeros"));
    let arch = Arch::new(10, &[7], 4);
    let params = random_params(&mut rng, &arch);
    let mut eng = CudaMlp::new(gpu).expect("engine");
    // A non-empty call first, so that the device buffers hold stale values.
    let (x, y) = random_batch(&mut rng, &arch, &params, 5);
    let mut grads = arch.zeros();
    eng.gradient(&arch, &params, &x, &y, &mut grads).unwrap();
    let mut grads: Vec<Vec<f32>> = arch
        .layers()
        .iter()
        .map(|s| vec![f32::NAN; s.len()])
        .collect();
    let stats = eng.gradient(&arch, &params, &[], &[], &mut grads).unwrap();
    assert_eq!(stats, BatchStats::default());
    assert!(grads.iter().flatten().all(|&v| v == 0.0));
    assert_eq!(
        eng.evaluate(&arch, &params, &[], &[]).unwrap(),
        BatchStats::default()
    );
    eng.predict(&arch, &params, &[], &mut []).unwrap();
}

#[test]
fn mlp_evaluate_and_predict_match_cpu_oracle_across_chunks() {
    let test = "mlp_evaluate_and_predict_match_cpu_oracle_across_chunks";
    let Some(gpu) = worker_gpu::gpu_or_skip(test) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed(test));
    let arch = Arch::new(64, &[37, 65], 10);
    let params = random_params(&mut rng, &arch);
    let b = 5000; // more than one chunk of 4096
    let (x, y) = random_batch(&mut rng, &arch, &params, b);
    let want_stats = CpuMlp.evaluate(&arch, &params, &x, &y).unwrap();
    let mut want_pred = vec![0u8; b];
    CpuMlp.predict(&arch, &params, &x, &mut want_pred).unwrap();
    for chunk in [4096usize, 1000] {
        let mut eng = CudaMlp::with_chunk(gpu.clone(), chunk).expect("engine");
        let what = format!("chunk {chunk}");
        let stats = eng.evaluate(&arch, &params, &x, &y).unwrap();
        assert_stats_close(&stats, &want_stats, &what);
        let mut pred = vec![0xEEu8; b];
        eng.predict(&arch, &params, &x, &mut pred).unwrap();
        let diff: Vec<usize> = (0..b).filter(|&i| pred[i] != want_pred[i]).collect();
        assert!(diff.is_empty(), "{what}: predictions differ at {diff:?}");
        // A smaller call after the large one reuses the grown buffers.
        let stats = eng.evaluate(&arch, &params, &x[..7 * 64], &y[..7]).unwrap();
        assert_stats_close(
            &stats,
            &CpuMlp
                .evaluate(&arch, &params, &x[..7 * 64], &y[..7])
                .unwrap(),
            &what,
        );
    }
}

#[test]
fn mlp_caller_bugs_panic_like_the_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("mlp_caller_bugs_panic_like_the_oracle") else {
        return;
    };
    let arch = Arch::new(4, &[3], 2);
    let params = arch.init_params(1);
    let mut eng = CudaMlp::new(gpu).expect("engine");
    let mut grads = arch.zeros();
    let x = vec![0.5f32; 8];
    let mut bad_label = catch_unwind(AssertUnwindSafe(|| {
        eng.gradient(&arch, &params, &x, &[0, 2], &mut grads)
            .unwrap()
    }));
    assert!(bad_label.is_err(), "label 2 with 2 classes must panic");
    bad_label = catch_unwind(AssertUnwindSafe(|| {
        eng.gradient(&arch, &params, &x[..7], &[0, 1], &mut grads)
            .unwrap()
    }));
    assert!(bad_label.is_err(), "x of the wrong length must panic");
    let mut short = arch.zeros();
    short[1].pop();
    assert!(catch_unwind(AssertUnwindSafe(|| {
        eng.gradient(&arch, &params, &x, &[0, 1], &mut short)
            .unwrap()
    }))
    .is_err());
    assert!(catch_unwind(AssertUnwindSafe(|| eng
        .predict(&arch, &params, &x, &mut [0u8; 3])
        .unwrap()))
    .is_err());
}

#[test]
fn mlp_training_matches_the_cpu_engine() {
    let test = "mlp_training_matches_the_cpu_engine";
    let Some(gpu) = worker_gpu::gpu_or_skip(test) else {
        return;
    };
    let s = seed(test);
    let mut spec = SyntheticMlpSpec::default_builtin(s);
    spec.train = 9600;
    let (train, test_set) = synthetic_mlp(&spec);
    let arch = Arch::builtin();
    let (batch, lr, steps) = (32usize, 0.1f32, 600usize);
    let init = arch.init_params(s);
    let mut cpu = FastMlp::new();
    let mut cuda = CudaMlp::new(gpu).expect("engine");
    let run = |eng: &mut dyn MlpCompute| {
        let mut params = init.clone();
        let mut grads = arch.zeros();
        let (mut xb, mut yb) = (Vec::new(), Vec::new());
        let idx: Vec<usize> = (0..train.n).collect();
        for step in 0..steps {
            let lo = (step * batch) % train.n;
            train.gather(&idx[lo..(lo + batch).min(train.n)], &mut xb, &mut yb);
            eng.gradient(&arch, &params, &xb, &yb, &mut grads).unwrap();
            sgd_step(&mut params, &grads, lr);
        }
        let st = evaluate(eng, &arch, &params, &test_set, 4096).unwrap();
        (params, st.accuracy())
    };
    let t0 = std::time::Instant::now();
    let (p_cpu, acc_cpu) = run(&mut cpu);
    let (p_gpu, acc_gpu) = run(&mut cuda);
    let drift: Vec<String> = p_gpu
        .iter()
        .zip(&p_cpu)
        .map(|(a, b)| format!("{:.1e}", rel_err(a, b)))
        .collect();
    eprintln!(
        "{test}: test accuracy cpu {acc_cpu:.4} cuda {acc_gpu:.4}, parameter drift per layer \
         {drift:?} ({:.2?})",
        t0.elapsed()
    );
    assert!(acc_cpu > 0.5, "the CPU run did not learn ({acc_cpu})");
    assert!(
        (acc_cpu - acc_gpu).abs() <= 0.01,
        "test accuracy cpu {acc_cpu} vs cuda {acc_gpu}"
    );
}
