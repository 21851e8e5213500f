//! MF: Netflix-shaped Zipf ratings, timed SGD epochs in the generated (random) order, LIBMF's
//! grid layout and the cluster's block order.

use std::process::exit;
use std::time::Instant;

use ps_apps::mf::{self, MfCompute};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Zipf};
use serde_json::json;

use crate::{
    emit, export_dir, rates, timed, write_file, write_meta, Args, Fingerprint, Run, CPU_ENGINE,
};

/// Netflix-shaped ratings: user and item of every rating drawn independently from Zipf(`s`)
/// over randomly permuted ids (so popular ids are spread out), values 1..=5 from a rank-8
/// truth plus noise. Duplicated (user, item) pairs are possible (rare) and kept.
fn mf_generate(users: u32, items: u32, n: usize, s: f64, seed: u64) -> Vec<mf::Rating> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4D46_5A49_5046);
    let mut uperm: Vec<u32> = (0..users).collect();
    let mut iperm: Vec<u32> = (0..items).collect();
    uperm.shuffle(&mut rng);
    iperm.shuffle(&mut rng);
    let s = if s.is_finite() && s > 0.0 { s } else { 0.0 };
    let zu = Zipf::new(u64::from(users), s).expect("users >= 1");
    let zi = Zipf::new(u64::from(items), s).expect("items >= 1");
    const R: usize = 8;
    let f = Normal::new(0.0f32, (R as f32).powf(-0.25)).unwrap();
    let uf: Vec<f32> = (0..users as usize * R)
        .map(|_| f.sample(&mut rng))
        .collect();
    let vf: Vec<f32> = (0..items as usize * R)
        .map(|_| f.sample(&mut rng))
        .collect();
    let noise = Normal::new(0.0f32, 0.5).unwrap();
    (0..n)
        .map(|_| {
            let u = uperm[(zu.sample(&mut rng) as usize).clamp(1, users as usize) - 1];
            let i = iperm[(zi.sample(&mut rng) as usize).clamp(1, items as usize) - 1];
            let (a, b) = (u as usize * R, i as usize * R);
            let dot: f32 = (0..R).map(|k| uf[a + k] * vf[b + k]).sum();
            let value = (3.6 + dot + noise.sample(&mut rng)).round().clamp(1.0, 5.0);
            mf::Rating {
                user: u,
                item: i,
                value,
            }
        })
        .collect()
}

pub(crate) fn run_mf(args: &Args, run: &Run) {
    let users: u32 = args.get("--users", 480_189, 48_019);
    let items: u32 = args.get("--items", 17_770, 1_777);
    let n: usize = args.get("--ratings", 10_000_000, 1_000_000);
    let rank: usize = args.get("--rank", 32, 32);
    let zipf: f64 = args.get("--zipf", 0.5, 0.5);
    let floor: f64 = args.get("--floor", 39e6, 39e6);
    let order: String = args.get("--order", "all".to_string(), "all".to_string());
    if !["random", "grid", "blocks", "both", "all"].contains(&order.as_str()) {
        eprintln!("engines: --order must be random, grid, blocks, both (random and grid) or all");
        exit(2);
    }
    if users == 0 || items == 0 || n == 0 || rank == 0 {
        eprintln!("engines: mf needs users, items, ratings and rank >= 1");
        exit(2);
    }
    let t = Instant::now();
    let ratings = mf_generate(users, items, n, zipf, run.seed);
    let mut fp = Fingerprint::new();
    for r in &ratings {
        fp.add(u64::from(r.user) << 32 | u64::from(r.item));
        fp.add(u64::from(r.value.to_bits()));
    }
    eprintln!(
        "mf: generated {n} ratings ({users} x {items}, Zipf {zipf}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shape = json!({
        "app": "mf", "users": users, "items": items, "ratings": n, "zipf": zipf,
        "seed": run.seed, "data_hash": fp.hex(),
    });
    if let Some(dir) = export_dir(run) {
        let mut buf = Vec::with_capacity(n * 12);
        for r in &ratings {
            buf.extend_from_slice(&r.user.to_le_bytes());
            buf.extend_from_slice(&r.item.to_le_bytes());
            buf.extend_from_slice(&r.value.to_le_bytes());
        }
        write_file(dir, "ratings.bin", &buf);
        let mut meta = shape.clone();
        meta["format"] = json!(concat!(
            "ratings.bin: records of (u32 user, u32 item, f32 rating), ",
            "little-endian, 12 bytes each; ids 0-based"
        ));
        write_meta(dir, &meta);
    }
    if run.export_only {
        return;
    }
    // lr/reg of a plain Netflix-style SGD on raw 1..5 ratings; stable at rank 32.
    let (lr, reg) = (0.005f32, 0.02f32);
    let ids: Vec<u32> = (0..users).collect();
    let orders: &[&str] = match order.as_str() {
        "random" => &["random"],
        "grid" => &["grid"],
        "blocks" => &["blocks"],
        "both" => &["random", "grid"],
        _ => &["random", "grid", "blocks"],
    };
    let mut ratings = ratings;
    for &o in orders {
        // The cluster's own order (`--order blocks` of `ps-cluster local --app mf`): arranged
        // once, untimed; each timed epoch takes a fresh block order and gathers the ratings in
        // it, as a worker's clock does.
        let layout = (o == "blocks").then(|| {
            let t = Instant::now();
            let bins = mf::bins_for(ratings.len());
            let l = mf::BlockLayout::new(&ratings, users, items, bins).arrange(&mut ratings);
            eprintln!(
                "mf: arranged in the cluster's block layout ({bins} x {bins} blocks) in {:.1} s \
                 (untimed, done once when a worker starts)",
                t.elapsed().as_secs_f64()
            );
            l
        });
        if o == "grid" {
            let t = Instant::now();
            ratings = grid_order(ratings, users, items, LIBMF_BINS);
            eprintln!(
                "mf: arranged in LIBMF's grid layout ({LIBMF_BINS} x {LIBMF_BINS} blocks, \
                 user-sorted inside) in {:.1} s (untimed, like LIBMF's own set-up)",
                t.elapsed().as_secs_f64()
            );
        }
        let mut uf = mf::init_user_factors(&ids, rank as u32, run.seed);
        let mut vf = mf::init_item_factors(items, rank as u32, mf::ITEM_INIT_STD, run.seed);
        let mut engine = mf::FastMf::new(run.threads);
        let mut sse = 0.0;
        let secs = timed(run, &format!("mf ({o} order)"), |epoch| {
            sse = match &layout {
                Some(l) => {
                    let key = mf::ClockKey {
                        seed: run.seed,
                        worker: 0,
                        clock: epoch as u32,
                    };
                    let mut sse = 0.0;
                    for (lo, hi) in l.epoch_blocks(key) {
                        sse += engine
                            .sgd_epoch(&ratings[lo..hi], &mut uf, &mut vf, rank, lr, reg)
                            .expect(CPU_ENGINE);
                    }
                    sse
                }
                None => engine
                    .sgd_epoch(&ratings, &mut uf, &mut vf, rank, lr, reg)
                    .expect(CPU_ENGINE),
            };
        });
        let r = rates(n as f64, &secs);
        let rate = r["rate"].as_f64().unwrap_or(0.0);
        let extra = json!({
            "engine": "ours-fastmf", "measure": "train", "order": o,
            "threads": run.threads, "rank": rank, "lr": lr, "reg": reg,
            "warmup": run.warmup, "reps": secs.len(),
            "unit": "updates/s", "train_rmse": (sse / n as f64).sqrt(),
            "floor_per_core": floor, "floor_fraction": rate / (floor * run.threads as f64),
            "quick": run.quick,
        });
        emit(&[&shape, &extra, &r]);
    }
}

/// LIBMF's default number of bins per dimension (`nr_bins`, 26).
const LIBMF_BINS: u64 = 26;

/// The ratings in LIBMF's on-grid layout: `bins x bins` blocks of contiguous user and item id
/// ranges (ids are already randomly permuted by the generator, as LIBMF permutes them), blocks
/// in row-major order, ratings sorted by (user, item) inside a block (LIBMF sorts by the
/// longer dimension, users here).
fn grid_order(mut ratings: Vec<mf::Rating>, users: u32, items: u32, bins: u64) -> Vec<mf::Rating> {
    let (u, i) = (u64::from(users), u64::from(items));
    ratings.sort_unstable_by_key(|r| {
        let ub = u64::from(r.user) * bins / u;
        let ib = u64::from(r.item) * bins / i;
        (ub * bins + ib, r.user, r.item)
    });
    ratings
}
