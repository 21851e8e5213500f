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
//!
//! This file holds the arguments, the shared helpers and `main`; each app's data generator and
//! timed run is in `engines/{mf,lda,lr,mlp}.rs`.

#[path = "engines/lda.rs"]
mod lda;
#[path = "engines/lr.rs"]
mod lr;
#[path = "engines/mf.rs"]
mod mf;
#[path = "engines/mlp.rs"]
mod mlp;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::str::FromStr;
use std::time::Instant;

use serde_json::{json, Value};

use lda::run_lda;
use lr::run_lr;
use mf::run_mf;
use mlp::run_mlp;

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
