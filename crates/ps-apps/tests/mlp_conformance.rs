//! Conformance tests for the MLP compute backends: `FastMlp` against the
//! `CpuMlp` oracle on fresh random inputs, a finite-difference check of the
//! oracle, and the parameter helpers.
//!
//! Tolerances: a fast gradient entry must satisfy
//! `|fast − oracle| ≤ 1e-4 · max|oracle layer| + 1e-6` (the fast engine is
//! `f32` with GEMM summation order; its error is ~1e-6 relative per sum of
//! up to 784 terms, so 1e-4 of the layer's largest gradient leaves a wide
//! margin); loss sums agree to `1e-5` relative; predictions and correct
//! counts exactly (random continuous inputs make arg-max ties improbable).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ps_apps::mlp::{
    add_scaled, init_layer, params_delta, sgd_step, worker_split, Arch, BatchStats, CpuMlp,
    FastMlp, MlpCompute,
};

/// Random parameters with non-zero biases, weights `U(±1.5/sqrt(fan_in))`.
fn random_params(arch: &Arch, rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    arch.layers()
        .iter()
        .map(|s| {
            let a = 1.5 / (s.fan_in as f32).sqrt();
            (0..s.len()).map(|_| rng.gen_range(-a..a)).collect()
        })
        .collect()
}

fn random_batch(arch: &Arch, b: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<u8>) {
    let x = (0..b * arch.input)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    let y = (0..b)
        .map(|_| rng.gen_range(0..arch.classes) as u8)
        .collect();
    (x, y)
}

fn assert_grads_close(arch: &Arch, fast: &[Vec<f32>], oracle: &[Vec<f32>], what: &str) {
    for l in 0..arch.num_layers() {
        let scale = oracle[l].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let tol = 1e-4 * scale + 1e-6;
        for (i, (f, o)) in fast[l].iter().zip(&oracle[l]).enumerate() {
            assert!(
                (f - o).abs() <= tol,
                "{what}: layer {l} entry {i}: fast {f} vs oracle {o} (tol {tol})"
            );
        }
    }
}

fn assert_stats_close(fast: &BatchStats, oracle: &BatchStats, what: &str) {
    assert_eq!(fast.count, oracle.count, "{what}: count");
    assert_eq!(fast.correct, oracle.correct, "{what}: correct");
    let rel = (fast.loss_sum - oracle.loss_sum).abs() / oracle.loss_sum.abs().max(1e-12);
    assert!(
        rel <= 1e-5,
        "{what}: loss sum fast {} vs oracle {} (rel {rel})",
        fast.loss_sum,
        oracle.loss_sum
    );
}

/// Compares gradient, evaluate and predict of `fast` against the oracle.
fn check_case(arch: &Arch, b: usize, seed: u64, fast: &mut FastMlp) {
    let what = format!(
        "arch {:?} batch {b} seed {seed} threads {}",
        arch,
        fast.threads()
    );
    println!("case: {what}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let params = random_params(arch, &mut rng);
    let (x, y) = random_batch(arch, b, &mut rng);
    let mut g_fast = arch.zeros();
    // Garbage in the output buffers must be overwritten.
    for g in &mut g_fast {
        g.fill(f32::NAN);
    }
    let mut g_cpu = arch.zeros();
    let s_fast = fast.gradient(arch, &params, &x, &y, &mut g_fast).unwrap();
    let s_cpu = CpuMlp.gradient(arch, &params, &x, &y, &mut g_cpu).unwrap();
    assert_stats_close(&s_fast, &s_cpu, &what);
    assert_grads_close(arch, &g_fast, &g_cpu, &what);

    let e_fast = fast.evaluate(arch, &params, &x, &y).unwrap();
    let e_cpu = CpuMlp.evaluate(arch, &params, &x, &y).unwrap();
    assert_stats_close(&e_fast, &e_cpu, &what);
    assert_stats_close(&e_fast, &s_fast, &what);

    let mut p_fast = vec![0u8; b];
    let mut p_cpu = vec![0u8; b];
    fast.predict(arch, &params, &x, &mut p_fast).unwrap();
    CpuMlp.predict(arch, &params, &x, &mut p_cpu).unwrap();
    assert_eq!(p_fast, p_cpu, "{what}: predictions");
    let correct = p_cpu.iter().zip(&y).filter(|(a, b)| a == b).count() as u64;
    assert_eq!(correct, s_cpu.correct, "{what}: correct vs predict");
}

#[test]
fn mlp_fast_matches_oracle_on_varied_shapes() {
    let cases: &[(Arch, usize)] = &[
        (Arch::new(5, &[3], 2), 1),
        (Arch::new(17, &[13, 7], 10), 1),
        (Arch::new(17, &[13, 7], 10), 33),
        (Arch::new(9, &[], 4), 8),
        (Arch::new(3, &[1], 3), 5),
        (Arch::new(31, &[29, 23, 11], 7), 19),
        (Arch::new(64, &[128, 128], 10), 32),
        (Arch::new(784, &[256, 256], 10), 7),
    ];
    // One engine across all cases: buffers must adapt to shape changes.
    let mut fast = FastMlp::new();
    for (k, (arch, b)) in cases.iter().enumerate() {
        check_case(arch, *b, 1000 + k as u64, &mut fast);
    }
    // And again in reverse order (shrinking buffers are reused).
    for (k, (arch, b)) in cases.iter().enumerate().rev() {
        check_case(arch, *b, 2000 + k as u64, &mut fast);
    }
}

#[test]
fn mlp_fast_threaded_matches_oracle_and_is_deterministic() {
    for (k, (arch, b)) in [
        (Arch::new(20, &[16, 8], 10), 64usize),
        (Arch::new(20, &[16, 8], 10), 37),
        (Arch::new(20, &[16], 5), 15), // too small to split
        (Arch::new(100, &[64, 32], 10), 130),
    ]
    .iter()
    .enumerate()
    {
        for threads in [2usize, 3] {
            let mut fast = FastMlp::with_threads(threads);
            check_case(arch, *b, 3000 + k as u64, &mut fast);
            // Same input twice: bit-identical.
            let mut rng = ChaCha8Rng::seed_from_u64(4000 + k as u64);
            let params = random_params(arch, &mut rng);
            let (x, y) = random_batch(arch, *b, &mut rng);
            let mut g1 = arch.zeros();
            let mut g2 = arch.zeros();
            let s1 = fast.gradient(arch, &params, &x, &y, &mut g1).unwrap();
            let s2 = fast.gradient(arch, &params, &x, &y, &mut g2).unwrap();
            assert_eq!(g1, g2);
            assert_eq!(s1, s2);
        }
    }
}

#[test]
fn mlp_empty_batch_gives_zero_gradient() {
    let arch = Arch::new(4, &[3], 2);
    let params = arch.init_params(1);
    for engine in [
        &mut FastMlp::new() as &mut dyn MlpCompute,
        &mut FastMlp::with_threads(2),
        &mut CpuMlp,
    ] {
        let mut g: Vec<Vec<f32>> = arch.layers().iter().map(|s| vec![1.0; s.len()]).collect();
        let st = engine.gradient(&arch, &params, &[], &[], &mut g).unwrap();
        assert_eq!(st, BatchStats::default(), "{}", engine.name());
        assert!(g.iter().flatten().all(|&v| v == 0.0), "{}", engine.name());
    }
}

#[test]
fn mlp_softmax_is_stable_for_huge_logits() {
    // Biases of ±1e4 on the output: a naive softmax overflows.
    let arch = Arch::new(2, &[], 3);
    let params = vec![vec![0.0, 0.0, 1e4, 0.0, 0.0, -1e4, 0.0, 0.0, 0.0]];
    let x = vec![0.5, -0.5, 1.0, 1.0];
    let y = vec![1u8, 0];
    for engine in [&mut FastMlp::new() as &mut dyn MlpCompute, &mut CpuMlp] {
        let mut g = arch.zeros();
        let st = engine.gradient(&arch, &params, &x, &y, &mut g).unwrap();
        assert!(st.loss_sum.is_finite(), "{}: {st:?}", engine.name());
        assert!((st.loss_sum - 2e4).abs() < 1.0, "{}: {st:?}", engine.name());
        assert_eq!(st.correct, 1);
        assert!(g[0].iter().all(|v| v.is_finite()));
    }
}

#[test]
#[should_panic(expected = "label")]
fn mlp_label_out_of_range_panics() {
    let arch = Arch::new(2, &[], 3);
    let params = arch.init_params(0);
    let mut g = arch.zeros();
    FastMlp::new()
        .gradient(&arch, &params, &[0.0, 0.0], &[3], &mut g)
        .unwrap();
}

/// Central finite differences of the oracle's mean loss against its
/// analytic gradient on tiny nets (`f64` loss, `f32` parameters; the step
/// actually taken after `f32` rounding is used).
#[test]
fn mlp_oracle_gradient_matches_finite_differences() {
    for (k, arch) in [
        Arch::new(4, &[5], 3),
        Arch::new(3, &[4, 3], 4),
        Arch::new(3, &[], 2),
    ]
    .iter()
    .enumerate()
    {
        let seed = 77 + k as u64;
        println!("finite differences: arch {arch:?} seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = random_params(arch, &mut rng);
        let b = 3;
        let (x, y) = random_batch(arch, b, &mut rng);
        let mut g = arch.zeros();
        CpuMlp.gradient(arch, &params, &x, &y, &mut g).unwrap();
        let loss = |p: &[Vec<f32>]| CpuMlp.evaluate(arch, p, &x, &y).unwrap().loss_sum / b as f64;
        let h = 1e-3f32;
        for l in 0..arch.num_layers() {
            for i in 0..params[l].len() {
                let mut plus = params.clone();
                let mut minus = params.clone();
                plus[l][i] += h;
                minus[l][i] -= h;
                let step = f64::from(plus[l][i]) - f64::from(minus[l][i]);
                let fd = (loss(&plus) - loss(&minus)) / step;
                let an = f64::from(g[l][i]);
                assert!(
                    (fd - an).abs() <= 1e-4 + 1e-3 * an.abs(),
                    "arch {arch:?} seed {seed} layer {l} param {i}: fd {fd} vs analytic {an}"
                );
            }
        }
    }
}

#[test]
fn mlp_init_layer_is_deterministic_and_bounded() {
    let a = init_layer(1, 30, 20, 9);
    assert_eq!(a, init_layer(1, 30, 20, 9));
    assert_ne!(a, init_layer(2, 30, 20, 9));
    assert_ne!(a, init_layer(1, 30, 20, 10));
    assert_eq!(a.len(), 20 * 31);
    let lim = (6.0f32 / 50.0).sqrt();
    for row in a.chunks_exact(31) {
        assert_eq!(row[30], 0.0, "bias must start at 0");
        assert!(row[..30].iter().all(|w| w.abs() <= lim));
    }
    let mean: f32 = a.iter().sum::<f32>() / a.len() as f32;
    assert!(mean.abs() < 0.05);
    // Arch::init_params uses init_layer per layer.
    let arch = Arch::new(30, &[20], 10);
    let p = arch.init_params(9);
    assert_eq!(p[0], init_layer(0, 30, 20, 9));
    assert_eq!(p[1], init_layer(1, 20, 10, 9));
}

#[test]
fn mlp_param_helpers() {
    let arch = Arch::mnist();
    assert_eq!(arch.num_layers(), 3);
    assert_eq!(
        arch.num_params(),
        256 * 785 + 256 * 257 + 10 * 257,
        "784-256-256-10"
    );
    assert!(arch.validate().is_ok());
    assert!(Arch::new(0, &[3], 2).validate().is_err());
    assert!(Arch::new(3, &[0], 2).validate().is_err());
    assert!(Arch::new(3, &[], 1).validate().is_err());

    let small = Arch::new(3, &[2], 2);
    let p = small.init_params(5);
    let flat = small.flatten(&p);
    assert_eq!(flat.len(), small.num_params());
    assert_eq!(small.unflatten(&flat), p);
    assert_eq!(small.flat_offsets(), vec![0, 8, 14]);
    let v = small.view(&p, 0);
    assert_eq!(v.shape.rows(), 2);
    assert_eq!(v.shape.width(), 4);
    assert_eq!(v.weight(1, 2), p[0][4 + 2]);
    assert_eq!(v.bias(1), p[0][7]);
    assert_eq!(v.row(1), &p[0][4..8]);

    let mut q = p.clone();
    let g: Vec<Vec<f32>> = p.iter().map(|l| vec![1.0; l.len()]).collect();
    sgd_step(&mut q, &g, 0.5);
    let d = params_delta(&q, &p);
    assert!(d.iter().flatten().all(|&v| (v + 0.5).abs() < 1e-6));
    add_scaled(&mut q, &d, -1.0);
    for (a, b) in q.iter().flatten().zip(p.iter().flatten()) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn mlp_worker_split_partitions() {
    for (n, workers) in [(10usize, 3usize), (0, 2), (7, 7), (5, 8), (20000, 2)] {
        let mut all: Vec<usize> = (0..workers)
            .flat_map(|w| worker_split(n, workers, w))
            .collect();
        let sizes: Vec<usize> = (0..workers)
            .map(|w| worker_split(n, workers, w).len())
            .collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }
}
