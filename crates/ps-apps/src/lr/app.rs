//! Sparse logistic regression as a parameter-server job: the weights are one sparse table of
//! width 1 keyed by `u64` feature keys, updated on the shards by FTRL-proximal (L1 and L2) from
//! pushed mini-batch gradients. Each worker owns a block of the training rows and runs one
//! mini-batch per clock: read the batch's keys, compute the mean logistic-loss gradient straight
//! into the push.
//!
//! Feature keys, the bias's included, are spread over the `u64` key space by a bijective mix
//! (libsvm indices are small and dense, and the shards split the key space by range), so every
//! shard holds a share. The one key that maps to `u64::MAX` (outside every table's key space)
//! is refused with a message.

use super::{
    accuracy, add_bias, auc, batch_keys, labels, load_libsvm, log_loss, margins, nonzero_weights,
    objective, shuffle_epoch, split_train_test, synthetic, worker_split, FtrlParams, LrCompute,
    LrHyper, LrResident, SparseRow, SyntheticLrSpec, DEFAULT_TEST_FRACTION,
};
use crate::app::flags::{self, decimal, ratio};
use crate::app::Traffic;
use crate::app::{
    App, DeltaSink, DeviceFigures, Inbox, JobCommon, JobView, Outcome, Plan, Session, TableRows,
    WorkerContext,
};
use crate::error::AppError;
use crate::seed::ClockKey;
use crate::visit::Visit;
use ps_proto::{Init, Layout, UpdateRule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const WEIGHTS: u32 = 0;

/// The LR app.
#[derive(Debug, Clone, Copy, Default)]
pub struct LrApp;

/// LR flags. Defaults differ between the built-in data and `--data`.
#[derive(Debug, Clone, clap::Args)]
pub struct LrArgs {
    /// FTRL alpha (learning-rate scale) [default: 3 (0.3 with --data)].
    #[arg(long)]
    pub lr: Option<f32>,
    /// FTRL L1 strength [default: 0.05 (0.1 with --data)].
    #[arg(long)]
    pub l1: Option<f32>,
    /// FTRL L2 strength [default: 0].
    #[arg(long)]
    pub l2: Option<f32>,
    /// Mini-batch size per worker [default: 256].
    #[arg(long)]
    pub batch: Option<u32>,
    /// libsvm training file instead of the built-in data (see --test).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Held-out libsvm file (default: a split of --data).
    #[arg(long, conflicts_with = "test_fraction")]
    pub test: Option<PathBuf>,
    /// Fraction of the data held out for testing when there is no --test [default: 0.2].
    #[arg(long)]
    pub test_fraction: Option<f64>,
}

/// What every LR worker is created from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LrSettings {
    pub ftrl: FtrlParams,
    pub batch: u32,
    pub seed: u64,
    pub data: Option<String>,
    pub test: Option<String>,
    pub test_fraction: f64,
    pub threads: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LrClock {
    pub train_loss: f64,
    pub train_n: f64,
    /// Bytes a resident engine moved host to device and back in the clock (the batch's row
    /// indices, key positions and weights in, the gradient out), and its device seconds (zero
    /// on the host path).
    #[serde(flatten)]
    pub device: DeviceFigures,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LrFinal {
    pub samples: f64,
    /// A resident engine's totals over the job, its set-up included (see [`LrClock`]).
    #[serde(flatten)]
    pub device: DeviceFigures,
}

/// The final model, judged once by worker 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LrFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_auc: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_log_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonzero_weights: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights_hash: Option<String>,
}

/// A bijection of `u64` that scatters nearby keys (the apps' seed mixer), so dense feature
/// indices land on every shard.
pub fn spread_key(k: u64) -> u64 {
    crate::seed::mix64(k)
}

/// Adds the bias feature, maps every key through [`spread_key`] and sorts each row's features
/// again.
fn spread_rows(rows: &mut [SparseRow], what: &str) -> Result<(), AppError> {
    add_bias(rows);
    for r in rows.iter_mut() {
        for f in r.features.iter_mut() {
            let k = f.0;
            f.0 = spread_key(k);
            if f.0 == u64::MAX {
                return Err(AppError::Settings(format!(
                    "{what}: feature {k} maps to the one key a table cannot hold; renumber the features"
                )));
            }
        }
        r.features.sort_by_key(|f| f.0);
    }
    Ok(())
}

/// Training and test rows, bias feature added and keys spread; rows from a file are shuffled
/// once, since files are often sorted by label.
fn load(s: &LrSettings) -> Result<(Vec<SparseRow>, Vec<SparseRow>), AppError> {
    let (mut train, mut test) = match &s.data {
        None => {
            let data = synthetic(&SyntheticLrSpec::default_builtin(s.seed));
            split_train_test(data.rows, s.test_fraction, s.seed)
        }
        Some(path) => {
            let rows = load_libsvm(Path::new(path))?.rows;
            let (mut train, test) = match &s.test {
                Some(t) => (rows, load_libsvm(Path::new(t))?.rows),
                None => split_train_test(rows, s.test_fraction, s.seed),
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

/// Mini-batches per epoch of the largest of `workers` blocks of `rows` rows.
fn batches_per_epoch(rows: u64, workers: u64, batch: u32) -> u64 {
    rows.div_ceil(workers.max(1))
        .div_ceil(u64::from(batch.max(1)))
        .max(1)
}

impl App for LrApp {
    type Args = LrArgs;
    type Settings = LrSettings;
    type Clock = LrClock;
    type Final = LrFinal;
    type Facts = LrFacts;

    fn name(&self) -> &'static str {
        "lr"
    }

    fn about(&self) -> &'static str {
        "sparse logistic regression with FTRL-proximal on the shards"
    }

    fn plan(&self, a: &LrArgs, job: &JobCommon) -> Result<Plan<LrSettings>, AppError> {
        if a.test.is_some() && a.data.is_none() {
            return Err(AppError::Settings(
                "--test needs --data (the built-in data has its own held-out split)".into(),
            ));
        }
        if a.test.is_some() && a.test_fraction.is_some() {
            return Err(AppError::Settings(
                "--test and --test-fraction are exclusive".into(),
            ));
        }
        let data = flags::absolute(a.data.as_deref(), "libsvm file")?;
        let test = flags::absolute(a.test.as_deref(), "test file")?;
        let base = if data.is_some() {
            LrHyper::a9a()
        } else {
            LrHyper::builtin()
        };
        let ftrl = FtrlParams {
            alpha: a.lr.unwrap_or(base.ftrl.alpha),
            l1: a.l1.unwrap_or(base.ftrl.l1),
            l2: a.l2.unwrap_or(base.ftrl.l2),
            ..base.ftrl
        };
        flags::positive("--lr", ftrl.alpha.into())?;
        flags::non_negative("--l1", ftrl.l1.into())?;
        flags::non_negative("--l2", ftrl.l2.into())?;
        let batch = a.batch.unwrap_or(base.batch_size);
        flags::in_range("--batch", batch, 1, 1 << 20)?;
        let test_fraction = a.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
        flags::fraction("--test-fraction", test_fraction)?;
        let settings = LrSettings {
            ftrl,
            batch,
            seed: job.seed,
            data,
            test,
            test_fraction,
            threads: job.threads,
        };
        let (train, test) = load(&settings)?;
        if train.is_empty() || test.is_empty() {
            return Err(AppError::Settings(format!(
                "need training and test rows, got {} and {}",
                train.len(),
                test.len()
            )));
        }
        // Worker 0 has the most rows: its batches per epoch make the epoch.
        let per_epoch = batches_per_epoch(train.len() as u64, job.workers.into(), batch);
        let mut facts = serde_json::Map::new();
        facts.insert("train_rows".into(), train.len().into());
        facts.insert("test_rows".into(), test.len().into());
        facts.insert("features".into(), batch_keys(&train).len().into());
        facts.insert("batch".into(), batch.into());
        facts.insert("batches_per_epoch".into(), per_epoch.into());
        facts.insert("ftrl_alpha".into(), decimal(ftrl.alpha));
        facts.insert("ftrl_beta".into(), decimal(ftrl.beta));
        facts.insert("l1".into(), decimal(ftrl.l1));
        facts.insert("l2".into(), decimal(ftrl.l2));
        facts.insert("seed".into(), job.seed.into());
        facts.insert("data".into(), flags::data_fact(&settings.data));
        let rule = UpdateRule::Ftrl {
            alpha: ftrl.alpha,
            beta: ftrl.beta,
            l1: ftrl.l1,
            l2: ftrl.l2,
        };
        let mut table = job.table(WEIGHTS, "weights", (u64::MAX, 1), rule, Init::Zeros);
        table.layout = Layout::Sparse;
        Ok(Plan {
            tables: vec![table],
            clocks: u64::from(base.epochs) * per_epoch,
            settings,
            facts,
        })
    }

    fn session(
        &self,
        s: LrSettings,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn Session<Self>>, AppError> {
        Ok(Box::new(LrSession::new(s, ctx)?))
    }

    fn clock_line(&self, c: &LrClock) -> String {
        format!(
            "train_loss {:.4}",
            ratio(c.train_loss, c.train_n).unwrap_or(f64::NAN)
        )
    }

    fn clock_metrics(&self, c: &LrClock) -> Vec<(&'static str, Option<f64>)> {
        vec![("train_loss", ratio(c.train_loss, c.train_n))]
    }

    fn summary(&self, job: &JobView<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let mut out = match serde_json::to_value(&job.facts) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        if let Some(r) = job.rate(job.sums.samples) {
            out.insert("samples_per_s".into(), r.into());
        }
        let (f, c) = (&job.sums, &job.totals.1);
        flags::device_figures(&mut out, &f.device, &c.device, job.clock_count);
        out
    }
}

/// Where a worker's gradients are computed.
enum Engine {
    /// A host engine on the batch's rows, gathered from `mine` in the epoch's order.
    Host(Box<dyn LrCompute + Send>),
    /// A resident engine holding `mine`; a batch is named by its [`Visit`] (the engine makes
    /// the row indices itself, or is handed them).
    Resident {
        dev: Box<dyn LrResident>,
        before: Traffic,
    },
}

/// The sorted, distinct keys of rows `idx` of `rows` ([`batch_keys`] of those rows).
fn keys_of(rows: &[SparseRow], idx: &[u32]) -> Vec<u64> {
    let mut keys: Vec<u64> = idx
        .iter()
        .flat_map(|&i| rows[i as usize].features.iter().map(|f| f.0))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// One LR worker: its block of rows and the weights of the current batch's keys.
pub struct LrSession {
    worker: u32,
    workers: u32,
    settings: LrSettings,
    path: Engine,
    mine: Vec<SparseRow>,
    /// Worker 0 keeps every row to judge the final model.
    train: Vec<SparseRow>,
    test: Vec<SparseRow>,
    per_epoch: u64,
    /// The epoch the order is of, its visit key, and the order (rows of `mine`, whole epoch).
    shuffled: Option<u64>,
    epoch_key: ClockKey,
    order: Vec<u32>,
    /// The planned clock's batch (a range of `mine`) and its keys.
    batch: (usize, usize),
    /// Weights of the read's keys, in the read's order.
    weights: Vec<f32>,
    inbox: Inbox,
    samples: u64,
    clocks: u64,
}

impl LrSession {
    pub fn new(s: LrSettings, ctx: &WorkerContext<'_>) -> Result<LrSession, AppError> {
        ctx.check()?;
        let (train, test) = load(&s)?;
        let mine = worker_split(&train, ctx.workers, ctx.worker).to_vec();
        if mine.is_empty() {
            return Err(AppError::Settings(format!(
                "worker {} has no training rows ({} rows over {} workers)",
                ctx.worker,
                train.len(),
                ctx.workers
            )));
        }
        let per_epoch = mine.len().div_ceil(s.batch.max(1) as usize) as u64;
        if mine.len() > u32::MAX as usize {
            return Err(AppError::Settings(format!(
                "worker {} has {} training rows; row indices are 32-bit",
                ctx.worker,
                mine.len()
            )));
        }
        let path = match ctx.engines.lr_resident()? {
            Some(mut dev) => {
                dev.setup(&mine)?;
                let before = dev.traffic();
                Engine::Resident { dev, before }
            }
            None => Engine::Host(ctx.engines.lr(s.threads)?),
        };
        let engine = match &path {
            Engine::Host(e) => e.name(),
            Engine::Resident { dev, .. } => dev.name(),
        };
        tracing::info!(
            worker = ctx.worker,
            rows = mine.len(),
            batches_per_epoch = per_epoch,
            engine,
            "LR worker ready"
        );
        let lead = ctx.worker == 0;
        Ok(LrSession {
            worker: ctx.worker,
            workers: ctx.workers,
            settings: s,
            path,
            mine,
            train: if lead { train } else { Vec::new() },
            test: if lead { test } else { Vec::new() },
            per_epoch,
            shuffled: None,
            epoch_key: ClockKey {
                seed: 0,
                worker: 0,
                clock: 0,
            },
            order: Vec::new(),
            batch: (0, 0),
            weights: Vec::new(),
            inbox: Inbox::default(),
            samples: 0,
            clocks: 0,
        })
    }

    /// Reads of `keys`: for `clock`, or the final read.
    fn expect(&mut self, clock: Option<u64>, keys: Vec<u64>) {
        self.weights = vec![0.0; keys.len()];
        let reads = vec![TableRows {
            table: WEIGHTS,
            rows: keys,
        }];
        match clock {
            Some(c) => self.inbox.expect_clock(c, reads),
            None => self.inbox.expect(reads),
        }
    }
}

impl Session<LrApp> for LrSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if !self.inbox.planned(clock) {
            let (epoch, b) = (clock / self.per_epoch, (clock % self.per_epoch) as usize);
            if self.shuffled != Some(epoch) {
                // A fresh permutation of the worker's rows each epoch, keyed by it.
                self.epoch_key = ClockKey {
                    seed: self.settings.seed,
                    worker: self.worker,
                    clock: epoch.min(u64::from(u32::MAX)) as u32,
                };
                let visit = Visit::for_clock(self.epoch_key, self.mine.len(), 0, 1);
                self.order = visit.order().into_iter().map(|i| i as u32).collect();
                self.shuffled = Some(epoch);
            }
            let batch = self.settings.batch as usize;
            self.batch = (b * batch, ((b + 1) * batch).min(self.mine.len()));
            let keys = keys_of(&self.mine, &self.order[self.batch.0..self.batch.1]);
            self.expect(Some(clock), keys);
        }
        Ok(self.inbox.reads().to_vec())
    }

    fn load(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        values: &[f32],
    ) -> Result<(), AppError> {
        self.inbox.accept(table, first, keys, values, 1)?;
        self.weights[first..first + keys.len()].copy_from_slice(values);
        Ok(())
    }

    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<LrClock, AppError> {
        self.inbox.ready(clock)?;
        let keys = &self.inbox.reads()[0].rows;
        let grad = out.rows(WEIGHTS, keys)?;
        let n = self.batch.1 - self.batch.0;
        let (loss, t) = match &mut self.path {
            Engine::Host(engine) => {
                let rows: Vec<SparseRow> = self.order[self.batch.0..self.batch.1]
                    .iter()
                    .map(|&i| self.mine[i as usize].clone())
                    .collect();
                (
                    engine.gradient(&rows, keys, &self.weights, grad)?,
                    Traffic::default(),
                )
            }
            Engine::Resident { dev, before } => {
                let visit = Visit {
                    from: self.batch.0 as u32,
                    count: n as u32,
                    ..Visit::for_clock(self.epoch_key, self.mine.len(), 0, 1)
                };
                let loss = dev.gradient_visit(&visit, keys, &self.weights, grad)?;
                let now = dev.traffic();
                let t = now.since(before);
                *before = now;
                (loss, t)
            }
        };
        self.samples += n as u64;
        self.clocks += 1;
        Ok(LrClock {
            train_loss: loss,
            train_n: n as f64,
            device: t.into(),
        })
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        let keys = if self.worker == 0 {
            let mut k = batch_keys(&self.train);
            k.extend(batch_keys(&self.test));
            k.sort_unstable();
            k.dedup();
            k
        } else {
            Vec::new()
        };
        self.expect(None, keys);
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<LrFinal, LrFacts>, AppError> {
        self.inbox.complete()?;
        let t = match &self.path {
            Engine::Host(_) => Traffic::default(),
            Engine::Resident { dev, .. } => dev.traffic(),
        };
        let sums = LrFinal {
            samples: self.samples as f64,
            device: t.into(),
        };
        if self.worker != 0 {
            return Ok(Outcome {
                sums,
                facts: LrFacts::default(),
            });
        }
        let all = &self.inbox.reads()[0].rows;
        let lookup = |keys: &[u64]| -> Vec<f32> {
            keys.iter()
                .map(|k| all.binary_search(k).map(|i| self.weights[i]).unwrap_or(0.0))
                .collect()
        };
        // Held-out accuracy and AUC, and the training objective with FTRL's per-push penalties
        // spread over the pushes that fed it.
        let test_keys = batch_keys(&self.test);
        let test_m = margins(&self.test, &test_keys, &lookup(&test_keys));
        let test_y = labels(&self.test);
        let train_keys = batch_keys(&self.train);
        let train_w = lookup(&train_keys);
        let train_m = margins(&self.train, &train_keys, &train_w);
        let pushes = (self.clocks * u64::from(self.workers)).max(1) as f64;
        let ftrl = self.settings.ftrl;
        let objective = objective(
            &labels(&self.train),
            &train_m,
            &train_w,
            f64::from(ftrl.l1) / pushes,
            f64::from(ftrl.l2) / pushes,
        );
        Ok(Outcome {
            sums,
            facts: LrFacts {
                test_accuracy: Some(accuracy(&test_y, &test_m)),
                test_auc: Some(auc(&test_y, &test_m)),
                test_log_loss: Some(log_loss(&test_y, &test_m)),
                objective: Some(objective),
                nonzero_weights: Some(nonzero_weights(&train_w) as u64),
                weights_hash: Some(flags::hash_bits(&train_w)),
            },
        })
    }
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
