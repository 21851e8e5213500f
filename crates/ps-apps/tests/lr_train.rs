//! End-to-end training without the network: `W` workers alternately compute
//! mini-batch gradients on weights that are stale by one step, and a small
//! local FTRL-proximal table (test-only, mirroring the server's rule)
//! applies them.
//!
//! Run with `cargo test -p ps-apps --test lr_train -- --nocapture` to see the
//! metrics per epoch. The a9a test runs only if `../shared/data/a9a/` beside the repository (or
//! `$LR_A9A_DIR`) holds `a9a` and `a9a.t`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ps_apps::lr::{
    accuracy, add_bias, auc, batch_keys, labels, load_libsvm, log_loss, margins, nonzero_weights,
    shuffle_epoch, split_train_test, synthetic, synthetic_truth, worker_split, FastLr, FtrlParams,
    LrCompute, LrHyper, SparseRow, SyntheticLrSpec, BUILTIN_ROWS, DEFAULT_TEST_FRACTION,
};

fn data_seed() -> u64 {
    std::env::var("LR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
}
const SPLIT_SEED: u64 = 11;
const SHUFFLE_SEED: u64 = 17;

/// Test-only FTRL-proximal table (McMahan et al. 2013, per coordinate),
/// the rule the server applies. Keys never written read as 0.
struct Ftrl {
    p: FtrlParams,
    state: HashMap<u64, (f64, f64)>, // (z, n)
}

impl Ftrl {
    fn new(p: FtrlParams) -> Self {
        Ftrl {
            p,
            state: HashMap::new(),
        }
    }

    fn weight_of(&self, z: f64, n: f64) -> f64 {
        let (alpha, beta, l1, l2) = (
            f64::from(self.p.alpha),
            f64::from(self.p.beta),
            f64::from(self.p.l1),
            f64::from(self.p.l2),
        );
        if z.abs() <= l1 {
            0.0
        } else {
            -(z - z.signum() * l1) / ((beta + n.sqrt()) / alpha + l2)
        }
    }

    fn read(&self, keys: &[u64]) -> Vec<f32> {
        keys.iter()
            .map(|k| match self.state.get(k) {
                Some(&(z, n)) => self.weight_of(z, n) as f32,
                None => 0.0,
            })
            .collect()
    }

    fn push(&mut self, keys: &[u64], grad: &[f32]) {
        let alpha = f64::from(self.p.alpha);
        for (&k, &g) in keys.iter().zip(grad) {
            let g = f64::from(g);
            let (z, n) = self.state.get(&k).copied().unwrap_or((0.0, 0.0));
            let w = self.weight_of(z, n);
            let sigma = ((n + g * g).sqrt() - n.sqrt()) / alpha;
            self.state.insert(k, (z + g - sigma * w, n + g * g));
        }
    }
}

struct Eval {
    auc: f64,
    accuracy: f64,
    log_loss: f64,
    nonzeros: usize,
}

fn evaluate(table: &Ftrl, test: &[SparseRow]) -> Eval {
    let keys = batch_keys(test);
    let w = table.read(&keys);
    let m = margins(test, &keys, &w);
    let y = labels(test);
    let all_keys: Vec<u64> = table.state.keys().copied().collect();
    Eval {
        auc: auc(&y, &m),
        accuracy: accuracy(&y, &m),
        log_loss: log_loss(&y, &m),
        nonzeros: nonzero_weights(&table.read(&all_keys)),
    }
}

/// Trains with `workers` workers taking turns (worker `t % W` on step `t`);
/// each step reads weights that miss the previous step's push (staleness
/// one step). Returns the evaluation after every epoch.
fn train(train: &[SparseRow], test: &[SparseRow], workers: u32, hyper: &LrHyper) -> Vec<Eval> {
    let mut table = Ftrl::new(hyper.ftrl);
    let mut shards: Vec<Vec<SparseRow>> = (0..workers)
        .map(|w| worker_split(train, workers, w).to_vec())
        .collect();
    let mut engine = FastLr::new(1);
    let bs = hyper.batch_size.max(1) as usize;
    let mut pending: Option<(Vec<u64>, Vec<f32>)> = None;
    let mut evals = Vec::new();
    for epoch in 0..hyper.epochs {
        for (w, shard) in shards.iter_mut().enumerate() {
            shuffle_epoch(shard, SHUFFLE_SEED, w as u32, epoch);
        }
        let batches: Vec<usize> = shards.iter().map(|s| s.len().div_ceil(bs)).collect();
        let rounds = batches.iter().copied().max().unwrap_or(0);
        let mut loss_sum = 0.0;
        for b in 0..rounds {
            for (w, shard) in shards.iter().enumerate() {
                if b >= batches[w] {
                    continue;
                }
                let batch = &shard[b * bs..((b + 1) * bs).min(shard.len())];
                let keys = batch_keys(batch);
                let weights = table.read(&keys); // misses `pending`: stale by one
                let mut grad = vec![0.0f32; keys.len()];
                loss_sum += engine.gradient(batch, &keys, &weights, &mut grad).unwrap();
                if let Some((k, g)) = pending.take() {
                    table.push(&k, &g);
                }
                pending = Some((keys, grad));
            }
        }
        let e = evaluate(&table, test);
        println!(
            "epoch {epoch}: train loss {:.4}  test auc {:.4}  acc {:.4}  logloss {:.4}  nonzero weights {}",
            loss_sum / train.len() as f64,
            e.auc,
            e.accuracy,
            e.log_loss,
            e.nonzeros
        );
        evals.push(e);
    }
    if let Some((k, g)) = pending.take() {
        table.push(&k, &g);
    }
    let e = evaluate(&table, test);
    println!(
        "final: test auc {:.4}  acc {:.4}  logloss {:.4}  nonzero weights {}",
        e.auc, e.accuracy, e.log_loss, e.nonzeros
    );
    evals.push(e);
    evals
}

fn env_f32(name: &str, default: f32) -> f32 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn hyper_from_env(mut h: LrHyper) -> LrHyper {
    h.ftrl.alpha = env_f32("LR_ALPHA", h.ftrl.alpha);
    h.ftrl.beta = env_f32("LR_BETA", h.ftrl.beta);
    h.ftrl.l1 = env_f32("LR_L1", h.ftrl.l1);
    h.ftrl.l2 = env_f32("LR_L2", h.ftrl.l2);
    h.batch_size = env_f32("LR_BATCH", h.batch_size as f32) as u32;
    h.epochs = env_f32("LR_EPOCHS", h.epochs as f32) as u32;
    h
}

fn builtin_split(rows: u32) -> (Vec<SparseRow>, Vec<SparseRow>, f64) {
    let mut spec = SyntheticLrSpec::default_builtin(data_seed());
    spec.rows = rows;
    let mut data = synthetic(&spec).rows;
    add_bias(&mut data);
    let (train, test) = split_train_test(data, DEFAULT_TEST_FRACTION, SPLIT_SEED);
    // AUC of the true model on the test rows: the ceiling.
    let (truth, b) = synthetic_truth(&spec);
    let mut keys: Vec<u64> = truth.iter().map(|p| p.0).collect();
    let mut w: Vec<f32> = truth.iter().map(|p| p.1).collect();
    keys.push(ps_apps::lr::BIAS_KEY);
    w.push(b);
    let bayes = auc(&labels(&test), &margins(&test, &keys, &w));
    (train, test, bayes)
}

#[test]
fn builtin_synthetic_two_workers_reaches_auc_0_9() {
    // The full built-in size (about 1-2 s in the dev profile); `LR_ROWS`
    // overrides it.
    let rows = env_f32("LR_ROWS", BUILTIN_ROWS as f32) as u32;
    let start = Instant::now();
    let (tr, te, bayes) = builtin_split(rows);
    let hyper = hyper_from_env(LrHyper::builtin());
    println!(
        "built-in synthetic, {rows} rows ({} train / {} test), true-model test auc {bayes:.4}, {hyper:?}",
        tr.len(),
        te.len()
    );
    let evals = train(&tr, &te, 2, &hyper);
    let last = evals.last().expect("at least the final evaluation");
    println!("took {:.2?}", start.elapsed());
    assert!(last.auc >= 0.9, "test auc {:.4} < 0.9", last.auc);
}

fn a9a_dir() -> PathBuf {
    std::env::var_os("LR_A9A_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/a9a"))
}

#[test]
fn a9a_two_workers_reaches_accuracy_0_845() {
    let dir = a9a_dir();
    let (tr_path, te_path) = (dir.join("a9a"), dir.join("a9a.t"));
    if !tr_path.is_file() || !te_path.is_file() {
        println!("SKIP: a9a not found in {} (set LR_A9A_DIR)", dir.display());
        return;
    }
    let start = Instant::now();
    let mut tr = load_libsvm(&tr_path).expect("load a9a").rows;
    let mut te = load_libsvm(&te_path).expect("load a9a.t").rows;
    assert_eq!((tr.len(), te.len()), (32_561, 16_281));
    add_bias(&mut tr);
    add_bias(&mut te);
    // The file order need not be random: shuffle once before splitting by worker.
    shuffle_epoch(&mut tr, SHUFFLE_SEED, u32::MAX, u32::MAX);
    let hyper = hyper_from_env(LrHyper::a9a());
    println!("a9a {hyper:?}");
    let evals = train(&tr, &te, 2, &hyper);
    let last = evals.last().expect("at least the final evaluation");
    println!("took {:.2?}", start.elapsed());
    assert!(
        last.accuracy >= 0.845,
        "a9a test accuracy {:.4} < 0.845",
        last.accuracy
    );
}
