//! Our fast CPU engines on the shapes that well-known reference tools are usually quoted at
//! (LIBMF, tomotopy, scikit-learn), on deterministic generated data that `--export` writes out
//! so that `benches/peers.sh` can run the peers (`benches/peers/*.py`) on exactly the same data.
//! See `benches/PEERS.md`.
//!
//! ```text
//! cargo bench -p ps-benches --bench engines -- --app mf|lda|lr|mlp [--threads N] [--quick]
//!     [--seed S] [--warmup W] [--reps R] [--export DIR [--export-only]] [size flags]
//! ```
//!
//! Size flags (defaults = the reference shapes; `--quick` divides the big dimension(s) by 10 and
//! halves the default `--reps`):
//! * mf:  `--users 480189 --items 17770 --ratings 10000000 --rank 32 --zipf 0.5 --floor 39e6
//!   --order all` (`random`: the generated order, as a worker's shuffled epoch; `grid`:
//!   LIBMF's blocked, user-sorted layout, arranged once untimed; `blocks`: the cluster's order,
//!   arranged once untimed, each timed epoch a new block order gathered as a worker's clock
//!   gathers it; `both`: random and grid; `all`: the three)
//! * lda: `--docs 20000 --doc-len 200 --vocab 5000 --topics 50 --true-topics 50`
//! * lr:  `--rows 100000 --features 100000 --nnz 20 --batch 256`
//! * mlp: `--samples 60000 --batch 64` (784-256-256-10)
//!
//! After `--warmup` untimed epochs (sweeps for LDA) it times `--reps` more, one at a time, and
//! prints one JSON line per measurement (also appended to `target/bench-results/engines.jsonl`):
//! `rate` = work of all timed reps / their total time, `rate_best` / `rate_median` per rep.
//! Units: MF updates/s (ratings visited), LDA tokens/s (tokens x sweeps), LR and MLP
//! samples/s (rows x epochs). `data_hash` fingerprints the generated data; `--export` writes
//! it into `meta.json` and the peers echo it, so the script can check both sides saw the same
//! data. Progress goes to stderr, only JSON to stdout.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::str::FromStr;
use std::time::Instant;

use ps_apps::lda::{self, LdaCompute};
use ps_apps::lr::{self, LrCompute};
use ps_apps::mf::{self, MfCompute};
use ps_apps::mlp::{self, MlpCompute};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Zipf};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

const FLAGS: &[&str] = &["--quick", "--export-only", "--help", "-h"];
const KEYS: &[&str] = &[
    "--app",
    "--threads",
    "--seed",
    "--warmup",
    "--reps",
    "--export",
    "--users",
    "--items",
    "--ratings",
    "--rank",
    "--zipf",
    "--floor",
    "--order",
    "--docs",
    "--doc-len",
    "--vocab",
    "--topics",
    "--true-topics",
    "--rows",
    "--features",
    "--nnz",
    "--batch",
    "--samples",
];

struct Args {
    values: HashMap<String, String>,
    flags: HashSet<String>,
}

fn usage() -> ! {
    eprintln!(
        "usage: engines --app mf|lda|lr|mlp [--threads N] [--quick] [--seed S] [--warmup W] \
         [--reps R] [--export DIR [--export-only]]\n  \
         mf:  --users --items --ratings --rank --zipf --floor --order random|grid|blocks|both|all\n  \
         lda: --docs --doc-len --vocab --topics --true-topics\n  \
         lr:  --rows --features --nnz --batch\n  \
         mlp: --samples --batch"
    );
    exit(2)
}

impl Args {
    fn parse() -> Args {
        let mut values = HashMap::new();
        let mut flags = HashSet::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "--bench" {
                continue; // added by `cargo bench`
            }
            if FLAGS.contains(&a.as_str()) {
                flags.insert(a);
            } else if KEYS.contains(&a.as_str()) {
                match it.next() {
                    Some(v) => {
                        values.insert(a, v);
                    }
                    None => {
                        eprintln!("engines: {a} needs a value");
                        usage();
                    }
                }
            } else {
                eprintln!("engines: unknown argument {a:?}");
                usage();
            }
        }
        if flags.contains("--help") || flags.contains("-h") {
            usage();
        }
        Args { values, flags }
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.contains(name)
    }

    /// `--name` parsed as `T`, or `full` (or `quick` under `--quick`).
    fn get<T: FromStr>(&self, name: &str, full: T, quick: T) -> T {
        match self.values.get(name) {
            Some(v) => v.parse().unwrap_or_else(|_| {
                eprintln!("engines: bad value {v:?} for {name}");
                exit(2)
            }),
            None if self.flag("--quick") => quick,
            None => full,
        }
    }
}

/// Common settings of one run.
struct Run {
    threads: usize,
    seed: u64,
    warmup: usize,
    reps: usize,
    export: Option<PathBuf>,
    export_only: bool,
    quick: bool,
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Order-dependent 64-bit fingerprint (splitmix64 finaliser chained over words).
#[derive(Clone, Copy)]
struct Fingerprint(u64);

impl Fingerprint {
    fn new() -> Self {
        Fingerprint(0x5EED_F00D_0DDB_A110)
    }
    fn add(&mut self, x: u64) {
        let mut z = (self.0 ^ x).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = z ^ (z >> 31);
    }
    fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// A small FxHash-style hasher for the LR weight store (u64 keys that are already hashes).
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7CC1_B727_220A);
        }
    }
    fn write_u64(&mut self, x: u64) {
        // One multiply: enough for the already well-mixed synthetic keys and feature ranks.
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7CC1_B727_220A);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

fn write_file(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, bytes) {
        eprintln!("engines: cannot write {}: {e}", path.display());
        exit(1);
    }
}

fn export_dir(run: &Run) -> Option<&Path> {
    let dir = run.export.as_deref()?;
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("engines: cannot create {}: {e}", dir.display());
        exit(1);
    }
    Some(dir)
}

fn write_meta(dir: &Path, meta: &Value) {
    write_file(
        dir,
        "meta.json",
        serde_json::to_string_pretty(meta).unwrap().as_bytes(),
    );
    eprintln!("engines: exported to {}", dir.display());
}

/// Runs `warmup + reps` repetitions of `f(rep)` (rep counts from 0, warm-ups included) and
/// returns the seconds of the timed ones.
fn timed(run: &Run, what: &str, mut f: impl FnMut(usize)) -> Vec<f64> {
    for i in 0..run.warmup {
        let t = Instant::now();
        f(i);
        eprintln!(
            "  {what} warm-up {}/{}: {:.3} s",
            i + 1,
            run.warmup,
            t.elapsed().as_secs_f64()
        );
    }
    (0..run.reps.max(1))
        .map(|i| {
            let t = Instant::now();
            f(run.warmup + i);
            let s = t.elapsed().as_secs_f64();
            eprintln!("  {what} rep {}/{}: {s:.3} s", i + 1, run.reps.max(1));
            s
        })
        .collect()
}

/// The rate fields for `work` units per rep over the timed `secs`.
fn rates(work: f64, secs: &[f64]) -> Value {
    let total: f64 = secs.iter().sum();
    let mut sorted = secs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let best = sorted[0];
    let median = sorted[sorted.len() / 2];
    json!({
        "rate": work * secs.len() as f64 / total,
        "rate_best": work / best,
        "rate_median": work / median,
        "seconds": total,
    })
}

/// Merges the objects `parts` (later keys win) and records the line.
fn emit(parts: &[&Value]) {
    let mut out = serde_json::Map::new();
    for p in parts {
        if let Value::Object(m) = p {
            out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    ps_benches::record("engines", Value::Object(out));
}

// ---------------------------------------------------------------------------
// MF
// ---------------------------------------------------------------------------

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

fn run_mf(args: &Args, run: &Run) {
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

// ---------------------------------------------------------------------------
// LDA
// ---------------------------------------------------------------------------

struct LdaWorker {
    state: lda::LdaWorkerState,
    local: Vec<f32>,
    totals: Vec<f32>,
    engine: lda::SparseLda,
}

fn run_lda(args: &Args, run: &Run) {
    let docs: u32 = args.get("--docs", 20_000, 2_000);
    let doc_len: u32 = args.get("--doc-len", 200, 200);
    let vocab: u32 = args.get("--vocab", 5_000, 5_000);
    let topics: u32 = args.get("--topics", 50, 50);
    let true_topics: u32 = args.get("--true-topics", 50, 50);
    if docs == 0 || doc_len == 0 || vocab == 0 || topics == 0 || true_topics == 0 {
        eprintln!("engines: lda needs docs, doc-len, vocab, topics, true-topics >= 1");
        exit(2);
    }
    let t = Instant::now();
    let spec = lda::SyntheticLdaSpec {
        docs,
        vocab,
        topics: true_topics,
        doc_len,
        alpha: 0.1,
        beta: 1.0,
        noise: 0.1,
        seed: run.seed,
    };
    let corpus = lda::synthetic_lda(&spec).corpus;
    let tokens = corpus.num_tokens();
    let mut fp = Fingerprint::new();
    for d in &corpus.docs {
        fp.add(d.len() as u64);
        for &w in d {
            fp.add(u64::from(w));
        }
    }
    eprintln!(
        "lda: generated {docs} docs x {doc_len} tokens, V = {vocab} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shape = json!({
        "app": "lda", "docs": docs, "doc_len": doc_len, "vocab": vocab,
        "true_topics": true_topics, "tokens": tokens, "seed": run.seed, "data_hash": fp.hex(),
    });
    if let Some(dir) = export_dir(run) {
        let mut s = String::with_capacity(tokens as usize * 5);
        for d in &corpus.docs {
            let line: Vec<String> = d.iter().map(u32::to_string).collect();
            s.push_str(&line.join(" "));
            s.push('\n');
        }
        write_file(dir, "docs.txt", s.as_bytes());
        let mut meta = shape.clone();
        meta["format"] =
            json!("docs.txt: one document per line, space-separated word ids in 0..vocab");
        write_meta(dir, &meta);
    }
    if run.export_only {
        return;
    }
    let hyper = lda::LdaHyper {
        topics,
        alpha: 0.1,
        beta: 0.01,
    };
    let k = topics as usize;
    let nw = run.threads.max(1) as u32;
    let mut global = vec![0f32; vocab as usize * k];
    let mut gtot = vec![0f32; k];
    let mut workers: Vec<LdaWorker> = (0..nw)
        .map(|w| {
            let part = lda::split_docs(&corpus, nw, w);
            let (state, delta) = lda::LdaWorkerState::init(&part, vocab, &hyper, run.seed, w)
                .unwrap_or_else(|e| {
                    eprintln!("engines: lda init: {e}");
                    exit(1)
                });
            delta.apply(&mut global, &mut gtot);
            LdaWorker {
                state,
                local: Vec::new(),
                totals: Vec::new(),
                engine: lda::SparseLda::new(),
            }
        })
        .collect();
    for w in &mut workers {
        w.local = lda::gather_rows(&global, &w.state.words, topics);
        w.totals = gtot.clone();
    }
    drop(corpus);
    let seed = run.seed;
    let secs = timed(run, "lda", |rep| {
        let clock = rep as u32 + 1;
        let sweep = |(i, w): (usize, &mut LdaWorker)| {
            let key = lda::SweepKey {
                seed,
                worker: i as u32,
                clock,
            };
            w.engine
                .sweep(&mut w.state, &mut w.local, &mut w.totals, &hyper, key)
        };
        if workers.len() == 1 {
            // One worker: its local copy is the whole model, nothing to merge.
            sweep((0, &mut workers[0])).expect(CPU_ENGINE);
            return;
        }
        // Data-parallel sweeps (one worker per thread, as the parameter server runs them),
        // then a BSP merge: deltas into the global table, fresh copies for the next sweep.
        let deltas: Vec<lda::LdaDelta> = std::thread::scope(|s| {
            let handles: Vec<_> = workers
                .iter_mut()
                .enumerate()
                .map(|iw| s.spawn(move || sweep(iw)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().expect(CPU_ENGINE))
                .collect()
        });
        for d in &deltas {
            d.apply(&mut global, &mut gtot);
        }
        for w in &mut workers {
            w.local = lda::gather_rows(&global, &w.state.words, topics);
            w.totals.copy_from_slice(&gtot);
        }
    });
    let ll: f64 = workers
        .iter()
        .map(|w| {
            lda::loglik_per_token(&w.state, &w.local, &w.totals, &hyper)
                * w.state.num_tokens() as f64
        })
        .sum::<f64>()
        / tokens as f64;
    let extra = json!({
        "engine": "ours-sparselda", "measure": "train", "threads": run.threads,
        "workers": workers.len(), "topics": topics, "alpha": hyper.alpha, "beta": hyper.beta,
        "warmup": run.warmup, "reps": secs.len(), "unit": "tokens/s",
        "loglik_per_token": ll, "quick": run.quick,
    });
    emit(&[&shape, &extra, &rates(tokens as f64, &secs)]);
}

// ---------------------------------------------------------------------------
// LR
// ---------------------------------------------------------------------------

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

fn run_lr(args: &Args, run: &Run) {
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

// ---------------------------------------------------------------------------
// MLP
// ---------------------------------------------------------------------------

fn run_mlp(args: &Args, run: &Run) {
    let n: usize = args.get("--samples", 60_000, 6_000);
    let batch: usize = args.get("--batch", 64, 64);
    if n == 0 || batch == 0 {
        eprintln!("engines: mlp needs samples, batch >= 1");
        exit(2);
    }
    let arch = mlp::Arch::mnist();
    let d = arch.input;
    let t = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(run.seed ^ 0x4D4C_5044_4154);
    let pixels: Vec<u8> = (0..n * d).map(|_| rng.gen()).collect();
    let labels: Vec<u8> = (0..n)
        .map(|_| rng.gen_range(0..arch.classes as u8))
        .collect();
    let mut fp = Fingerprint::new();
    for c in pixels.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        fp.add(u64::from_le_bytes(w));
    }
    for &y in &labels {
        fp.add(u64::from(y));
    }
    eprintln!(
        "mlp: generated {n} random samples x {d} in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let shape = json!({
        "app": "mlp", "samples": n, "input": d, "hidden": arch.hidden, "classes": arch.classes,
        "seed": run.seed, "data_hash": fp.hex(),
    });
    if let Some(dir) = export_dir(run) {
        write_file(dir, "x.u8", &pixels);
        write_file(dir, "y.u8", &labels);
        let mut meta = shape.clone();
        meta["format"] = json!(concat!(
            "x.u8: samples x input bytes, row-major, feature = byte / 255 as f32; ",
            "y.u8: one label byte per sample, < classes"
        ));
        write_meta(dir, &meta);
    }
    if run.export_only {
        return;
    }
    let data = mlp::Dataset {
        x: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
        y: labels,
        n,
        d,
        classes: arch.classes,
    };
    drop(pixels);
    let mut engine = mlp::FastMlp::with_threads(run.threads);
    let mut params = arch.init_params(run.seed);
    let mut grads = arch.zeros();
    let (mut xb, mut yb) = (Vec::new(), Vec::new());
    let lr = mlp::MlpHyper::mnist().lr;
    let mut stats = mlp::BatchStats::default();
    let seed = run.seed;
    let secs = timed(run, "mlp", |rep| {
        let order = mlp::epoch_order(
            n,
            mlp::ClockKey {
                seed,
                worker: 0,
                clock: rep as u32,
            },
        );
        stats = mlp::BatchStats::default();
        for chunk in order.chunks(batch) {
            data.gather(chunk, &mut xb, &mut yb);
            stats.merge(
                &engine
                    .gradient(&arch, &params, &xb, &yb, &mut grads)
                    .expect(CPU_ENGINE),
            );
            mlp::sgd_step(&mut params, &grads, lr);
        }
    });
    let extra = json!({
        "engine": "ours-fastmlp", "measure": "train", "threads": run.threads,
        "batch": batch, "lr": lr, "warmup": run.warmup, "reps": secs.len(),
        "unit": "samples/s", "train_loss": stats.mean_loss(), "quick": run.quick,
    });
    emit(&[&shape, &extra, &rates(n as f64, &secs)]);
}

// ---------------------------------------------------------------------------

/// The CPU engines return `Result` for the device engines' sake; they never fail.
const CPU_ENGINE: &str = "a CPU engine failed";

fn main() {
    let args = Args::parse();
    let app = args.values.get("--app").cloned().unwrap_or_else(|| {
        eprintln!("engines: --app is required");
        usage()
    });
    let (warmup, reps): (usize, usize) = match app.as_str() {
        "mf" => (1, 5),
        "lda" => (5, 10),
        "lr" => (1, 10),
        "mlp" => (1, 3),
        _ => {
            eprintln!("engines: unknown app {app:?}");
            usage()
        }
    };
    let run = Run {
        threads: args.get("--threads", 1usize, 1).max(1),
        seed: args.get("--seed", 42u64, 42),
        warmup: args.get("--warmup", warmup, warmup),
        reps: args.get("--reps", reps, reps.div_ceil(2)).max(1),
        export: args.values.get("--export").map(PathBuf::from),
        export_only: args.flag("--export-only"),
        quick: args.flag("--quick"),
    };
    if run.export_only && run.export.is_none() {
        eprintln!("engines: --export-only needs --export DIR");
        usage();
    }
    match app.as_str() {
        "mf" => run_mf(&args, &run),
        "lda" => run_lda(&args, &run),
        "lr" => run_lr(&args, &run),
        _ => run_mlp(&args, &run),
    }
}
