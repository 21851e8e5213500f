//! Sparse logistic regression on the parameter server: the weights are one sparse table of
//! width 1 keyed by `u64` feature keys, updated on the shards by FTRL-proximal (L1 and L2) from
//! pushed mini-batch gradients. Each worker owns a block of the training rows and runs one
//! mini-batch per clock: read the batch's keys, compute the mean logistic-loss gradient, push it.
//!
//! Feature keys, the bias's included, are spread over the `u64` key space by a bijective mix
//! (libsvm indices are small and dense, and the shards split the key space by range), so every
//! shard holds a share. The one key that maps to `u64::MAX` (outside every table's key space)
//! is refused with a message.

use super::{hash_bits, Chaos, Plan};
use crate::cli::JobArgs;
use anyhow::{bail, Result};
use ps_apps::lr::{
    self, add_bias, batch_keys, labels, margins, shuffle_epoch, FtrlParams, LrHyper, SparseRow,
    SyntheticLrSpec,
};
use ps_client::PsClient;
use ps_proto::{Assign, Done, Init, Layout, TableSpec, UpdateRule};
use ps_server::{ClockSummary, JobResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use worker_gpu::Device;

pub const WEIGHTS: u32 = 0;

/// LR settings carried from the coordinator to every worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LrSettings {
    pub ftrl: FtrlParams,
    pub batch: u32,
    pub seed: u64,
    pub data: Option<String>,
    pub test: Option<String>,
    pub test_fraction: f64,
    pub threads: u32,
    #[serde(flatten)]
    pub chaos: Chaos,
}

/// A bijection of `u64` that scatters nearby keys (the apps' seed mixer), so dense feature
/// indices land on every shard.
pub fn spread_key(k: u64) -> u64 {
    ps_apps::seed::mix64(k)
}

/// Adds the bias feature, maps every key through [`spread_key`] and sorts each row's features
/// again.
fn spread_rows(rows: &mut [SparseRow], what: &str) -> Result<()> {
    add_bias(rows);
    for r in rows.iter_mut() {
        for f in r.features.iter_mut() {
            let k = f.0;
            f.0 = spread_key(k);
            if f.0 == u64::MAX {
                bail!("{what}: feature {k} maps to the one key a table cannot hold; renumber the features");
            }
        }
        r.features.sort_by_key(|f| f.0);
    }
    Ok(())
}

/// Training and test rows, bias feature added and keys spread; rows from a file are shuffled
/// once, since files are often sorted by label.
fn load(s: &LrSettings) -> Result<(Vec<SparseRow>, Vec<SparseRow>)> {
    let (mut train, mut test) = match &s.data {
        None => {
            let data = lr::synthetic(&SyntheticLrSpec::default_builtin(s.seed));
            lr::split_train_test(data.rows, s.test_fraction, s.seed)
        }
        Some(path) => {
            let rows = lr::load_libsvm(Path::new(path))?.rows;
            let (mut train, test) = match &s.test {
                Some(t) => (rows, lr::load_libsvm(Path::new(t))?.rows),
                None => lr::split_train_test(rows, s.test_fraction, s.seed),
            };
            shuffle_epoch(&mut train, s.seed, u32::MAX, u32::MAX);
            (train, test)
        }
    };
    let train_name = s.data.as_deref().unwrap_or("built-in data");
    spread_rows(&mut train, train_name)?;
    spread_rows(&mut test, s.test.as_deref().unwrap_or(train_name))?;
    Ok((train, test))
}

pub fn plan(job: &JobArgs, workers: u32) -> Result<Plan> {
    if job.test.is_some() && job.data.is_none() {
        bail!("--test needs --data (the built-in data has its own held-out split)");
    }
    let data = JobArgs::absolute(&job.data, "libsvm file")?;
    let test = JobArgs::absolute(&job.test, "test file")?;
    if test.is_some() && job.test_fraction.is_some() {
        bail!("--test and --test-fraction are exclusive");
    }
    let base = if data.is_some() {
        LrHyper::a9a()
    } else {
        LrHyper::builtin()
    };
    let ftrl = FtrlParams {
        alpha: job.lr.unwrap_or(base.ftrl.alpha),
        l1: job.l1.unwrap_or(base.ftrl.l1),
        l2: job.l2.unwrap_or(base.ftrl.l2),
        ..base.ftrl
    };
    let batch = job.batch.unwrap_or(base.batch_size);
    if batch == 0 || batch > 1 << 20 {
        bail!("--batch must be in 1..=1048576");
    }
    let settings = LrSettings {
        ftrl,
        batch,
        seed: job.seed,
        data,
        test,
        test_fraction: job.test_fraction.unwrap_or(lr::DEFAULT_TEST_FRACTION),
        threads: job.threads,
        chaos: Chaos::from_job(job),
    };
    let (train, test) = load(&settings)?;
    if train.is_empty() || test.is_empty() {
        bail!(
            "need training and test rows, got {} and {}",
            train.len(),
            test.len()
        );
    }
    let mut facts = serde_json::Map::new();
    facts.insert("train_rows".into(), train.len().into());
    facts.insert("test_rows".into(), test.len().into());
    facts.insert("features".into(), batch_keys(&train).len().into());
    facts.insert("batch".into(), batch.into());
    // Worker 0 has the most rows: its batches per epoch make the epoch.
    let per_epoch = batches_per_epoch(train.len() as u64, workers.into(), batch);
    facts.insert("batches_per_epoch".into(), per_epoch.into());
    facts.insert("ftrl_alpha".into(), super::decimal(ftrl.alpha));
    facts.insert("ftrl_beta".into(), super::decimal(ftrl.beta));
    facts.insert("l1".into(), super::decimal(ftrl.l1));
    facts.insert("l2".into(), super::decimal(ftrl.l2));
    facts.insert("seed".into(), job.seed.into());
    facts.insert("data".into(), super::data_fact(&settings.data));
    Ok(Plan {
        tables: vec![TableSpec {
            id: WEIGHTS,
            name: "weights".into(),
            rows: u64::MAX,
            width: 1,
            rule: UpdateRule::Ftrl {
                alpha: ftrl.alpha,
                beta: ftrl.beta,
                l1: ftrl.l1,
                l2: ftrl.l2,
            },
            init: Init::Zeros,
            staleness: super::table_staleness(job),
            layout: Layout::Sparse,
            push_codec: job.push_codec.clone(),
            pull_codec: job.pull_codec.clone(),
        }],
        job: super::job_spec(
            "lr",
            job,
            job.clocks.unwrap_or(u64::from(base.epochs) * per_epoch),
            &settings,
        )?,
        facts,
    })
}

/// Mini-batches per epoch of the largest of `workers` blocks of `rows` rows.
fn batches_per_epoch(rows: u64, workers: u64, batch: u32) -> u64 {
    rows.div_ceil(workers.max(1))
        .div_ceil(u64::from(batch.max(1)))
        .max(1)
}

pub fn clock_figures(s: &ClockSummary) -> String {
    format!(
        "train_loss {:.4}",
        super::ratio_of(&s.sums, "train_loss", "train_n").unwrap_or(f64::NAN)
    )
}

pub fn summary_fields(r: &JobResult, out: &mut serde_json::Map<String, serde_json::Value>) {
    super::copy_facts(
        r,
        &[
            "test_accuracy",
            "test_auc",
            "test_log_loss",
            "objective",
            "nonzero_weights",
            "weights_hash",
        ],
        out,
    );
    if let Some(rate) = super::rate(r, "samples") {
        out.insert("samples_per_s".into(), rate.into());
    }
}

/// One worker's whole job.
pub fn run_worker(client: &mut PsClient, assign: &Assign, device: Device) -> Result<Done> {
    let settings: LrSettings = super::settings_of(assign)?;
    let mut engine = worker_gpu::lr_engine(device, settings.threads)?;
    let (train, test) = load(&settings)?;
    let (w, workers) = (assign.id, assign.num_workers);
    let mut mine = lr::worker_split(&train, workers, w).to_vec();
    if mine.is_empty() {
        bail!(
            "worker {w} has no training rows ({} rows over {workers} workers)",
            train.len()
        );
    }
    let batch = settings.batch as usize;
    let per_epoch = mine.len().div_ceil(batch) as u64;
    tracing::info!(
        worker = w,
        rows = mine.len(),
        batches_per_epoch = per_epoch,
        engine = engine.name(),
        "LR worker ready"
    );

    let mut samples = 0u64;
    let mut grad = Vec::new();
    for clock in 0..assign.job.clocks {
        settings.chaos.before_clock(w, clock);
        let (epoch, b) = (clock / per_epoch, (clock % per_epoch) as usize);
        if b == 0 {
            shuffle_epoch(
                &mut mine,
                settings.seed,
                w,
                epoch.min(u32::MAX as u64) as u32,
            );
        }
        let rows = &mine[b * batch..((b + 1) * batch).min(mine.len())];
        let keys = batch_keys(rows);
        let weights = client.table(WEIGHTS)?.read_rows(&keys)?;
        grad.clear();
        grad.resize(keys.len(), 0.0);
        let loss = engine.gradient(rows, &keys, &weights, &mut grad);
        let mut t = client.table(WEIGHTS)?;
        for (&k, &g) in keys.iter().zip(&grad) {
            if g != 0.0 {
                t.inc(k, 0, g)?;
            }
        }
        samples += rows.len() as u64;
        client.clock_with(BTreeMap::from([
            ("train_loss".to_string(), loss),
            ("train_n".to_string(), rows.len() as f64),
        ]))?;
    }
    client.flush()?;
    let mut done = Done {
        worker: w,
        ..Default::default()
    };
    done.sums = BTreeMap::from([("samples".to_string(), samples as f64)]);
    if w == 0 {
        // The final model, judged once: held-out accuracy and AUC, and the training objective
        // with FTRL's per-push penalties spread over the pushes that fed it.
        let mut t = client.table(WEIGHTS)?;
        let test_keys = batch_keys(&test);
        let test_w = t.read_rows_synced(&test_keys)?;
        let test_m = margins(&test, &test_keys, &test_w);
        let test_y = labels(&test);
        let train_keys = batch_keys(&train);
        let train_w = t.read_rows_synced(&train_keys)?;
        let train_m = margins(&train, &train_keys, &train_w);
        let pushes = (assign.job.clocks * u64::from(workers)).max(1) as f64;
        let objective = lr::objective(
            &labels(&train),
            &train_m,
            &train_w,
            f64::from(settings.ftrl.l1) / pushes,
            f64::from(settings.ftrl.l2) / pushes,
        );
        let facts = [
            ("test_accuracy", lr::accuracy(&test_y, &test_m).into()),
            ("test_auc", lr::auc(&test_y, &test_m).into()),
            ("test_log_loss", lr::log_loss(&test_y, &test_m).into()),
            ("objective", objective.into()),
            ("nonzero_weights", lr::nonzero_weights(&train_w).into()),
            ("weights_hash", hash_bits(&train_w).into()),
        ];
        for (k, v) in facts {
            done.facts.insert(k.into(), v);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_keys_are_distinct_and_scattered() {
        let keys: Vec<u64> = (1..=10_000).map(spread_key).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), keys.len());
        // Dense indices reach every quarter of the key space (every shard of 4).
        for q in 0..4u64 {
            let lo = q << 62;
            let hi = lo.wrapping_add(1 << 62);
            assert!(keys.iter().any(|&k| k >= lo && (q == 3 || k < hi)));
        }
    }

    #[test]
    fn batches_per_epoch_rounds_up() {
        assert_eq!(batches_per_epoch(1000, 2, 256), 2);
        assert_eq!(batches_per_epoch(1025, 2, 256), 3);
        assert_eq!(batches_per_epoch(0, 2, 256), 1);
    }
}
