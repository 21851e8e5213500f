//! Conformance tests for the MF compute backends: `FastMf` against the
//! `CpuMf` oracle.
//!
//! Every randomised test prints its seed; set `PS_TEST_SEED=<u64>` to rerun
//! with another one (default [`DEFAULT_SEED`]). Run with `--nocapture` to see
//! the seeds and the measured deviations.
//!
//! Tolerances:
//! * one thread, `rank < 8`: bitwise equal to the oracle (same summation
//!   order);
//! * one thread, `rank >= 8`: every factor element within
//!   `1e-4·|oracle| + 1e-6`, every epoch's SSE within `1e-5` relative (only
//!   the dot-product summation order differs; the measured worst deviations
//!   are ~1% of the factor tolerance and ~1e-9 relative on the SSE);
//! * several threads (2, 3, 8), every rating visited exactly once: with zero
//!   factors and integer ratings the SSE is an exact integer sum and must
//!   match exactly (uniform, skewed/id-sorted and tiny-dimension data, `lr`
//!   0 and 0.01); with random factors and `lr = 0` the factors stay bitwise
//!   unchanged, the SSE is bitwise reproducible and equals the oracle's to
//!   `1e-9` relative at rank 1 (only the `f64` summation order differs) and
//!   `1e-5` at rank 8 (dot-product order), and the SSE of the starting model
//!   from `squared_error` (errors in `f64`) to `1e-5`; with `lr = 1e-6` the
//!   SSE is within `1e-3` of the oracle's;
//! * several threads, training on synthetic rank-8 data: the training RMSE
//!   after 10 epochs within 5% of the oracle's (measured: within 0.3%), and
//!   below half the initial RMSE; factors finite.
//!
//! The throughput probe is ignored; run it by hand with
//! `cargo test --release -p ps-apps --test mf_conformance -- --ignored --nocapture`.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ps_apps::mf::{
    rmse, squared_error, synthetic, CpuMf, FastMf, MfCompute, Rating, SyntheticSpec,
    PARALLEL_MIN_RATINGS,
};

const DEFAULT_SEED: u64 = 0x3F_5EED;

/// The test seed (`PS_TEST_SEED` or [`DEFAULT_SEED`]) mixed with a per-test
/// salt, printed so a failure can be reproduced.
fn seed(test: &str, salt: u64) -> u64 {
    let base = std::env::var("PS_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("{test}: PS_TEST_SEED={base}");
    base ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn random_ratings(n: usize, users: u32, items: u32, rng: &mut ChaCha8Rng) -> Vec<Rating> {
    (0..n)
        .map(|_| Rating {
            user: rng.gen_range(0..users),
            item: rng.gen_range(0..items),
            value: rng.gen_range(-2.0f32..2.0),
        })
        .collect()
}

fn random_factors(rows: u32, rank: usize, scale: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..rows as usize * rank)
        .map(|_| rng.gen_range(-scale..scale))
        .collect()
}

/// Largest `|fast − oracle| / (1e-4·|oracle| + 1e-6)` (must be <= 1).
fn worst_ratio(fast: &[f32], oracle: &[f32]) -> f64 {
    assert_eq!(fast.len(), oracle.len());
    fast.iter()
        .zip(oracle)
        .map(|(&f, &o)| {
            assert!(f.is_finite(), "non-finite factor {f}");
            f64::from((f - o).abs()) / (1e-4 * f64::from(o.abs()) + 1e-6)
        })
        .fold(0.0, f64::max)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn single_thread_matches_oracle() {
    let seed = seed("single_thread_matches_oracle", 1);
    let (nu, ni, n, epochs) = (150u32, 120u32, 3000usize, 4);
    for rank in [1usize, 7, 8, 32, 33] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ rank as u64);
        let ratings = random_ratings(n, nu, ni, &mut rng);
        let scale = (1.0 / rank as f32).sqrt();
        let mut u_o = random_factors(nu, rank, scale, &mut rng);
        let mut v_o = random_factors(ni, rank, scale, &mut rng);
        let (mut u_f, mut v_f) = (u_o.clone(), v_o.clone());
        let (mut oracle, mut fast) = (CpuMf, FastMf::default());
        assert_eq!(fast.threads(), 1);
        assert_eq!(fast.name(), "fast");
        let mut worst = (0.0f64, 0.0f64);
        for epoch in 0..epochs {
            let (lr, reg) = (0.02, 0.01);
            let so = oracle
                .sgd_epoch(&ratings, &mut u_o, &mut v_o, rank, lr, reg)
                .unwrap();
            let sf = fast
                .sgd_epoch(&ratings, &mut u_f, &mut v_f, rank, lr, reg)
                .unwrap();
            if rank < 8 {
                assert_eq!(so.to_bits(), sf.to_bits(), "rank {rank} epoch {epoch}: SSE");
                assert!(u_o
                    .iter()
                    .zip(&u_f)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
                assert!(v_o
                    .iter()
                    .zip(&v_f)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            let r = rel(sf, so);
            assert!(
                r <= 1e-5,
                "rank {rank} epoch {epoch}: SSE fast {sf} vs oracle {so}"
            );
            worst.1 = worst.1.max(r);
            let w = worst_ratio(&u_f, &u_o).max(worst_ratio(&v_f, &v_o));
            assert!(
                w <= 1.0,
                "rank {rank} epoch {epoch}: factors off by {w} x tolerance"
            );
            worst.0 = worst.0.max(w);
        }
        println!(
            "rank {rank}: worst factor deviation {:.3} x tolerance, worst SSE rel {:.2e}",
            worst.0, worst.1
        );
    }
}

#[test]
fn single_thread_is_deterministic_and_handles_edge_cases() {
    let seed = seed("single_thread_is_deterministic_and_handles_edge_cases", 2);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rank = 17;
    let ratings = random_ratings(2000, 60, 50, &mut rng);
    let u0 = random_factors(60, rank, 0.3, &mut rng);
    let v0 = random_factors(50, rank, 0.3, &mut rng);
    let run = || {
        let (mut u, mut v) = (u0.clone(), v0.clone());
        let mut fast = FastMf::new(1);
        let sse: Vec<u64> = (0..3)
            .map(|_| {
                fast.sgd_epoch(&ratings, &mut u, &mut v, rank, 0.05, 0.01)
                    .unwrap()
                    .to_bits()
            })
            .collect();
        (sse, u, v)
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0, b.0);
    assert!(a
        .1
        .iter()
        .zip(&b.1)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(a
        .2
        .iter()
        .zip(&b.2)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(a.1.iter().chain(&a.2).all(|x| x.is_finite()));

    // Threads clamp to 1; empty input; rank 0 (no factors: SSE = Σ r²).
    assert_eq!(FastMf::new(0).threads(), 1);
    for threads in [1, 2] {
        let mut fast = FastMf::new(threads);
        let (mut u, mut v) = (u0.clone(), v0.clone());
        assert_eq!(
            fast.sgd_epoch(&[], &mut u, &mut v, rank, 0.1, 0.1).unwrap(),
            0.0
        );
        assert_eq!(u, u0);
        let big = random_ratings(PARALLEL_MIN_RATINGS * 2, 60, 50, &mut rng);
        let expect: f64 = big.iter().map(|r| f64::from(r.value).powi(2)).sum();
        let got = fast.sgd_epoch(&big, &mut [], &mut [], 0, 0.1, 0.1).unwrap();
        assert!(rel(got, expect) <= 1e-12, "rank 0: {got} vs {expect}");
    }
}

/// Below `PARALLEL_MIN_RATINGS`, a multi-thread engine runs the one-thread
/// kernel in the given order: bitwise equal to `FastMf::new(1)`.
#[test]
fn small_inputs_run_single_thread_kernel() {
    let seed = seed("small_inputs_run_single_thread_kernel", 3);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rank = 32;
    let ratings = random_ratings(PARALLEL_MIN_RATINGS - 1, 80, 70, &mut rng);
    let u0 = random_factors(80, rank, 0.2, &mut rng);
    let v0 = random_factors(70, rank, 0.2, &mut rng);
    let (mut u1, mut v1) = (u0.clone(), v0.clone());
    let (mut u3, mut v3) = (u0, v0);
    let s1 = FastMf::new(1)
        .sgd_epoch(&ratings, &mut u1, &mut v1, rank, 0.05, 0.01)
        .unwrap();
    let s3 = FastMf::new(3)
        .sgd_epoch(&ratings, &mut u3, &mut v3, rank, 0.05, 0.01)
        .unwrap();
    assert_eq!(s1.to_bits(), s3.to_bits());
    assert!(u1.iter().zip(&u3).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert!(v1.iter().zip(&v3).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// Zero factors stay zero whatever the learning rate (the update of a zero
/// row is zero), and every error is then the rating itself; with integer
/// ratings the SSE is an exact integer sum, so a skipped or repeated rating
/// would show.
fn assert_exact_visits(fast: &mut FastMf, ratings: &mut [Rating], nu: u32, ni: u32, rank: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(nu) ^ ratings.len() as u64);
    for r in ratings.iter_mut() {
        r.value = rng.gen_range(-40i32..=40) as f32;
    }
    let exact: f64 = ratings.iter().map(|r| f64::from(r.value).powi(2)).sum();
    for lr in [0.0f32, 0.01] {
        let mut u = vec![0.0f32; nu as usize * rank];
        let mut v = vec![0.0f32; ni as usize * rank];
        let sse = fast
            .sgd_epoch(ratings, &mut u, &mut v, rank, lr, 0.01)
            .unwrap();
        assert_eq!(
            sse,
            exact,
            "threads {} n {} rank {rank} lr {lr}",
            fast.threads(),
            ratings.len()
        );
        assert!(u.iter().chain(&v).all(|&x| x == 0.0));
    }
}

/// Every rating is visited exactly once per call: exact integer SSEs
/// (uniform, skewed and tiny-dimension data) and, with `lr = 0`, the SSE of
/// the starting model.
#[test]
fn multi_thread_visits_every_rating_once() {
    let seed = seed("multi_thread_visits_every_rating_once", 4);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (nu, ni) = (700u32, 500u32);
    for threads in [2usize, 3, 8] {
        let mut fast = FastMf::new(threads);
        // Reuse the engine across calls of different sizes and ranks.
        for (n, rank) in [(20_000usize, 1usize), (6_000, 8), (30_000, 1)] {
            // (a) Exact integer SSE on uniform data.
            let mut ratings = random_ratings(n, nu, ni, &mut rng);
            assert_exact_visits(&mut fast, &mut ratings, nu, ni, rank);

            // (b) Random factors, lr = 0: the SSE of the starting model, which
            // must not change; deterministic across runs.
            let ratings = random_ratings(n, nu, ni, &mut rng);
            let u0 = random_factors(nu, rank, 0.8, &mut rng);
            let v0 = random_factors(ni, rank, 0.8, &mut rng);
            let (start, _) = squared_error(&ratings, &u0, &v0, rank);
            let (mut u, mut v) = (u0.clone(), v0.clone());
            let oracle = CpuMf
                .sgd_epoch(&ratings, &mut u, &mut v, rank, 0.0, 0.0)
                .unwrap();
            let (mut u, mut v) = (u0.clone(), v0.clone());
            let sse = fast
                .sgd_epoch(&ratings, &mut u, &mut v, rank, 0.0, 0.05)
                .unwrap();
            let again = fast
                .sgd_epoch(&ratings, &mut u, &mut v, rank, 0.0, 0.05)
                .unwrap();
            assert_eq!(
                sse.to_bits(),
                again.to_bits(),
                "lr = 0 SSE not deterministic"
            );
            assert_eq!(u, u0);
            assert_eq!(v, v0);
            // `start` takes errors in f64, the engines in f32: 1e-5.
            let tol = if rank == 1 { 1e-9 } else { 1e-5 };
            assert!(
                rel(sse, oracle) <= tol && rel(sse, start) <= 1e-5,
                "threads {threads} rank {rank}: {sse} vs oracle {oracle} / start {start}"
            );

            // (c) A tiny learning rate barely moves the model.
            let (mut uo, mut vo) = (u0.clone(), v0.clone());
            let oracle = CpuMf
                .sgd_epoch(&ratings, &mut uo, &mut vo, rank, 1e-6, 0.01)
                .unwrap();
            let (mut u, mut v) = (u0.clone(), v0.clone());
            let sse = fast
                .sgd_epoch(&ratings, &mut u, &mut v, rank, 1e-6, 0.01)
                .unwrap();
            assert!(
                rel(sse, oracle) <= 1e-3,
                "threads {threads} rank {rank} tiny lr: {sse} vs oracle {oracle}"
            );
        }

        // Skewed, id-sorted data: half the ratings on the first 1% of the
        // users and the first 2% of the items, sorted by user.
        let mut ratings: Vec<Rating> = (0..40_000)
            .map(|k| {
                let hot = k % 2 == 0;
                Rating {
                    user: rng.gen_range(0..if hot { 7 } else { nu }),
                    item: rng.gen_range(0..if hot { 10 } else { ni }),
                    value: 0.0,
                }
            })
            .collect();
        ratings.sort_by_key(|r| (r.user, r.item));
        assert_exact_visits(&mut fast, &mut ratings, nu, ni, 4);

        // Fewer user rows than blocks (empty user ranges), unused rows.
        let mut ratings = random_ratings(10_000, 3, 40, &mut rng);
        assert_exact_visits(&mut fast, &mut ratings, 5, 45, 3);
    }
}

/// On synthetic low-rank data, 10 blocked epochs reach the oracle's training
/// RMSE within 5%.
#[test]
fn multi_thread_training_matches_oracle_quality() {
    let seed = seed("multi_thread_training_matches_oracle_quality", 5);
    let spec = SyntheticSpec {
        users: 600,
        items: 400,
        ratings: 60_000,
        rank: 8,
        noise_sigma: 0.1,
        item_zipf: 0.0,
        seed,
    };
    let set = synthetic(&spec);
    let mut ratings = set.ratings;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ratings.shuffle(&mut rng);
    let rank = 8;
    let u0 = random_factors(spec.users, rank, 0.3, &mut rng);
    let v0 = random_factors(spec.items, rank, 0.3, &mut rng);
    let initial = rmse(&ratings, &u0, &v0, rank);

    let train = |engine: &mut dyn MfCompute| {
        let (mut u, mut v) = (u0.clone(), v0.clone());
        for epoch in 0..10 {
            let lr = 0.08 * 0.9f32.powi(epoch);
            let sse = engine
                .sgd_epoch(&ratings, &mut u, &mut v, rank, lr, 0.003)
                .unwrap();
            assert!(sse.is_finite());
        }
        assert!(u.iter().chain(&v).all(|x| x.is_finite()));
        rmse(&ratings, &u, &v, rank)
    };
    let oracle = train(&mut CpuMf);
    println!("initial RMSE {initial:.4}, oracle after 10 epochs {oracle:.4}");
    assert!(oracle < 0.5 * initial);
    for threads in [1usize, 2, 3] {
        let got = train(&mut FastMf::new(threads));
        println!("fast, {threads} threads: {got:.4}");
        assert!(got < 0.5 * initial);
        assert!(
            rel(got, oracle) <= 0.05,
            "threads {threads}: RMSE {got} vs oracle {oracle}"
        );
    }
}

/// The blocked path checks every rating (whichever thread's chunk it is in)
/// before updating anything, and names the bad one.
#[test]
fn multi_thread_rejects_out_of_range_before_updating() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = PARALLEL_MIN_RATINGS * 2;
    for (bad, threads) in [(n - 1, 2), (0, 2), (n / 2, 3), (n - 1, 4)] {
        let mut ratings = random_ratings(n, 10, 10, &mut rng);
        ratings[bad].item = 10;
        let (mut u, mut v) = (vec![0.1f32; 40], vec![0.1f32; 40]);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            FastMf::new(threads)
                .sgd_epoch(&ratings, &mut u, &mut v, 4, 0.1, 0.0)
                .unwrap()
        }));
        let err = res.expect_err("out-of-range rating accepted");
        let msg = err
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        assert!(
            msg.contains("out of range") && msg.contains(&format!("rating {bad} ")),
            "unexpected panic message {msg:?}"
        );
        assert!(
            u.iter().chain(&v).all(|&x| x == 0.1),
            "factors were updated"
        );
    }
}

#[test]
#[should_panic]
fn single_thread_rejects_out_of_range() {
    let ratings = [Rating {
        user: 3,
        item: 0,
        value: 1.0,
    }];
    let (mut u, mut v) = (vec![0.1f32; 12], vec![0.1f32; 4]);
    FastMf::new(1)
        .sgd_epoch(&ratings, &mut u, &mut v, 4, 0.1, 0.0)
        .unwrap();
}

/// Updates per second of the oracle and of `FastMf` with 1 and 2 threads,
/// rank 32, ~2M synthetic ratings (Netflix shape scaled down ~50x); with
/// `MF_PROBE=e2e`, rank 128 on the e2e bench's 480,189 x 17,770 (4M ratings,
/// item popularity Zipf 0.45), where every user row is a miss.
#[test]
#[ignore = "throughput probe; run by hand in release"]
fn speed_probe() {
    let e2e = std::env::var("MF_PROBE").is_ok_and(|v| v == "e2e");
    let rank: usize = if e2e { 128 } else { 32 };
    let spec = SyntheticSpec {
        users: if e2e { 480_189 } else { 48_000 },
        items: if e2e { 17_770 } else { 1_777 },
        ratings: if e2e { 4_000_000 } else { 2_000_000 },
        rank: rank as u32,
        noise_sigma: 0.1,
        item_zipf: if e2e { 0.45 } else { 0.0 },
        seed: 1,
    };
    let t = Instant::now();
    let mut ratings = synthetic(&spec).ratings;
    ratings.shuffle(&mut ChaCha8Rng::seed_from_u64(2));
    let n = ratings.len();
    println!(
        "{n} ratings, {} users, {} items, rank {rank} (generated in {:.1?})",
        spec.users,
        spec.items,
        t.elapsed()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let u0 = random_factors(spec.users, rank, 0.1, &mut rng);
    let v0 = random_factors(spec.items, rank, 0.1, &mut rng);
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before: {}", load.trim());
    }
    let epochs = 6;
    let mut engines: Vec<(String, Box<dyn MfCompute>)> = vec![
        ("oracle CpuMf".into(), Box::new(CpuMf)),
        ("FastMf 1 thread".into(), Box::new(FastMf::new(1))),
        ("FastMf 2 threads".into(), Box::new(FastMf::new(2))),
    ];
    for (name, engine) in &mut engines {
        let (mut u, mut v) = (u0.clone(), v0.clone());
        engine
            .sgd_epoch(&ratings, &mut u, &mut v, rank, 0.01, 0.01)
            .unwrap(); // warm-up
        let mut times = Vec::new();
        for _ in 0..epochs {
            let t = Instant::now();
            engine
                .sgd_epoch(&ratings, &mut u, &mut v, rank, 0.01, 0.01)
                .unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        let mean = times.iter().sum::<f64>() / epochs as f64;
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{name:>18}: {:6.1} M updates/s mean, {:6.1} best epoch ({:.1} ms/epoch mean), \
             train RMSE {:.4}",
            n as f64 / mean / 1e6,
            n as f64 / best / 1e6,
            mean * 1e3,
            rmse(&ratings, &u, &v, rank)
        );
    }
}
