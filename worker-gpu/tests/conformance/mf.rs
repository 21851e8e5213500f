//! The CUDA MF engine against the CPU oracle `CpuMf`.

use ps_apps::mf::{squared_error, CpuMf, MfCompute, Rating};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::mf::{CudaMf, CHUNK};

use crate::common::{rel_err, seed};

fn random_tables(
    rng: &mut ChaCha8Rng,
    users: usize,
    items: usize,
    rank: usize,
) -> (Vec<f32>, Vec<f32>) {
    let s = 1.0 / (rank as f32).sqrt();
    let u = (0..users * rank).map(|_| rng.gen_range(-s..s)).collect();
    let v = (0..items * rank).map(|_| rng.gen_range(-s..s)).collect();
    (u, v)
}

fn random_ratings(rng: &mut ChaCha8Rng, n: usize, users: u32, items: u32) -> Vec<Rating> {
    (0..n)
        .map(|_| Rating {
            user: rng.gen_range(0..users),
            item: rng.gen_range(0..items),
            value: rng.gen_range(-2.0f32..2.0),
        })
        .collect()
}

/// One warp visits the ratings in order, like the oracle: the tables agree to f32 rounding at
/// every rank, including ranks past the kernel's register cache (4 × 32).
#[test]
fn sequential_engine_matches_the_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("sequential_engine_matches_the_oracle") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("mf sequential"));
    let mut engine = CudaMf::sequential(gpu).expect("engine");
    for rank in [1usize, 7, 32, 33, 128, 130] {
        let (users, items) = (60u32, 45u32);
        let ratings = random_ratings(&mut rng, 3000, users, items);
        let (u0, v0) = random_tables(&mut rng, users as usize, items as usize, rank);
        let (mut uc, mut vc) = (u0.clone(), v0.clone());
        let (mut ug, mut vg) = (u0.clone(), v0.clone());
        let sc = CpuMf
            .sgd_epoch(&ratings, &mut uc, &mut vc, rank, 0.02, 0.05)
            .unwrap();
        let sg = engine
            .sgd_epoch(&ratings, &mut ug, &mut vg, rank, 0.02, 0.05)
            .unwrap();
        let (eu, ev) = (rel_err(&ug, &uc), rel_err(&vg, &vc));
        eprintln!("rank {rank}: users {eu:.2e} items {ev:.2e} sse {sg} vs {sc}");
        assert!(
            eu < 1e-5 && ev < 1e-5,
            "rank {rank}: users {eu:.2e} items {ev:.2e}"
        );
        assert!(
            (sg - sc).abs() <= 1e-5 * sc,
            "rank {rank}: sse {sg} vs {sc}"
        );
    }
}

/// The biased model (rows of rank factors then a bias) on one warp, like the oracle's biased
/// pass: the tables, biases included, agree to f32 rounding.
#[test]
fn sequential_biased_engine_matches_the_oracle() {
    let Some(gpu) = worker_gpu::gpu_or_skip("sequential_biased_engine_matches_the_oracle") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("mf sequential biased"));
    let mut engine = CudaMf::sequential(gpu).expect("engine");
    for rank in [0usize, 1, 7, 32, 33, 130] {
        let (users, items) = (60u32, 45u32);
        let ratings = random_ratings(&mut rng, 3000, users, items);
        let (u0, v0) = random_tables(&mut rng, users as usize, items as usize, rank + 1);
        let (mut uc, mut vc) = (u0.clone(), v0.clone());
        let (mut ug, mut vg) = (u0.clone(), v0.clone());
        let sc = CpuMf
            .sgd_epoch_biased(&ratings, &mut uc, &mut vc, rank, 0.3, 0.02, 0.05)
            .unwrap();
        let sg = engine
            .sgd_epoch_biased(&ratings, &mut ug, &mut vg, rank, 0.3, 0.02, 0.05)
            .unwrap();
        let (eu, ev) = (rel_err(&ug, &uc), rel_err(&vg, &vc));
        eprintln!("biased rank {rank}: users {eu:.2e} items {ev:.2e} sse {sg} vs {sc}");
        assert!(
            eu < 1e-5 && ev < 1e-5,
            "biased rank {rank}: users {eu:.2e} items {ev:.2e}"
        );
        assert!(
            (sg - sc).abs() <= 1e-5 * sc,
            "biased rank {rank}: sse {sg} vs {sc}"
        );
    }
}

/// When no two ratings of a call share a user or an item, Hogwild has nothing to race on and
/// the parallel engine must equal the oracle in any order, across the chunk boundary of the
/// double-buffered ratings stream.
#[test]
fn parallel_engine_without_conflicts_matches_the_oracle_across_chunks() {
    let Some(gpu) = worker_gpu::gpu_or_skip(
        "parallel_engine_without_conflicts_matches_the_oracle_across_chunks",
    ) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("mf parallel conflict-free"));
    let mut engine = CudaMf::new(gpu).expect("engine");
    let n = 2 * CHUNK + 12_345;
    let rank = 16;
    let mut items: Vec<u32> = (0..n as u32).collect();
    items.shuffle(&mut rng);
    let ratings: Vec<Rating> = (0..n as u32)
        .map(|u| Rating {
            user: u,
            item: items[u as usize],
            value: rng.gen_range(-2.0f32..2.0),
        })
        .collect();
    let (u0, v0) = random_tables(&mut rng, n, n, rank);
    let (mut uc, mut vc) = (u0.clone(), v0.clone());
    let (mut ug, mut vg) = (vec![f32::NAN; u0.len()], vec![f32::NAN; v0.len()]);
    ug.copy_from_slice(&u0);
    vg.copy_from_slice(&v0);
    let sc = CpuMf
        .sgd_epoch(&ratings, &mut uc, &mut vc, rank, 0.05, 0.01)
        .unwrap();
    let sg = engine
        .sgd_epoch(&ratings, &mut ug, &mut vg, rank, 0.05, 0.01)
        .unwrap();
    assert!(ug.iter().chain(&vg).all(|x| x.is_finite()));
    let (eu, ev) = (rel_err(&ug, &uc), rel_err(&vg, &vc));
    assert!(eu < 1e-6 && ev < 1e-6, "users {eu:.2e} items {ev:.2e}");
    assert!((sg - sc).abs() <= 1e-5 * sc, "sse {sg} vs {sc}");
    // The held-out kernel agrees with the host's squared error.
    let (host, _) = squared_error(&ratings, &ug, &vg, rank);
    let dev = engine
        .squared_error(&ratings, &ug, &vg, rank)
        .expect("squared error");
    assert!(
        (dev - host).abs() <= 1e-5 * host,
        "squared error {dev} vs {host}"
    );
}

/// Edge cases: no ratings changes nothing; rank 0 returns the plain sum of squares.
#[test]
fn empty_and_rank_zero() {
    let Some(gpu) = worker_gpu::gpu_or_skip("mf empty_and_rank_zero") else {
        return;
    };
    let mut engine = CudaMf::new(gpu).expect("engine");
    let (mut u, mut v) = (vec![0.5f32; 8], vec![0.25f32; 8]);
    assert_eq!(
        engine.sgd_epoch(&[], &mut u, &mut v, 4, 0.1, 0.1).unwrap(),
        0.0
    );
    assert_eq!((u[0], v[0]), (0.5, 0.25));
    let r = [Rating {
        user: 0,
        item: 1,
        value: 3.0,
    }];
    assert_eq!(
        engine.sgd_epoch(&r, &mut [], &mut [], 0, 0.1, 0.1).unwrap(),
        9.0
    );
}
