//! A dense MLP classifier by local SGD with model averaging: one `add` table per layer (rows =
//! output units, width = inputs + 1, the bias last). Each clock a worker reads every layer, runs
//! SGD over the next slice of its shuffled samples, and pushes `(local - read) / workers`; the
//! shards' sum of those is the average of the workers' models. Clock 0 starts from the seeded
//! initial model every worker computes alike, which worker 0 also pushes, so the tables need no
//! initialiser of their own.

use super::{
    evaluate, load_mnist_dir, local_sgd_steps, synthetic_mlp, visiting_order, worker_split, Arch,
    BatchStats, Dataset, MlpCompute, MlpHyper, SyntheticMlpSpec, BUILTIN_FEATURES, BUILTIN_TRAIN,
};
use crate::app::flags::{self, decimal, num, ratio};
use crate::app::{
    App, DeltaSink, Inbox, JobCommon, JobView, Outcome, Plan, Session, TableRows, Target,
    WorkerContext,
};
use crate::error::AppError;
use crate::seed::{epoch_order, ClockKey};
use ps_proto::{Init, UpdateRule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Epochs of the built-in job (and of a job on real data).
pub const BUILTIN_EPOCHS: u64 = 15;
pub const DATA_EPOCHS: u64 = 10;
/// Clocks per epoch on real data: model averaging four times an epoch.
pub const DATA_CLOCKS_PER_EPOCH: u32 = 4;
/// Learning rate on real data. Averaging two workers' models halves each one's step, so local
/// SGD wants about twice the gradient-push rate of `MlpHyper::mnist` (0.05): on Fashion-MNIST,
/// 784-256-256-10, 10 epochs of 4 clocks, 2 workers, 0.05 reached test accuracy 0.861 and 0.1
/// reached 0.873.
pub const DATA_LR: f32 = 0.1;
/// Samples per evaluation call.
const EVAL_CHUNK: usize = 1024;

/// The MLP app.
#[derive(Debug, Clone, Copy, Default)]
pub struct MlpApp;

/// MLP flags. Defaults differ between the built-in data and `--data`.
#[derive(Debug, Clone, clap::Args)]
pub struct MlpArgs {
    /// Hidden layer widths, comma-separated [default: 128,128 (256,256 with --data)].
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Mini-batch size per worker [default: 32 (64 with --data)].
    #[arg(long)]
    pub batch: Option<u32>,
    /// SGD learning rate [default: 0.1].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning-rate decay per epoch [default: 0.95 (0.9 with --data)].
    #[arg(long)]
    pub lr_decay: Option<f32>,
    /// Clocks per epoch: each clock runs local SGD over the next slice of the epoch
    /// [default: 1 (4 with --data)].
    #[arg(long)]
    pub clocks_per_epoch: Option<u32>,
    /// Training samples of the built-in synthetic set (with --test-samples and --features: a
    /// larger set to measure throughput on).
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_TRAIN)]
    pub samples: usize,
    /// Test samples of the built-in synthetic set [default: --samples / 4].
    #[arg(long, conflicts_with = "data")]
    pub test_samples: Option<usize>,
    /// Features of the built-in synthetic set (the network's input width follows the data).
    #[arg(long, conflicts_with = "data", default_value_t = BUILTIN_FEATURES)]
    pub features: usize,
    /// Directory of MNIST-style IDX files (gzipped or not) instead of the built-in data.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl Default for MlpArgs {
    /// The flags' defaults, as `--app mlp` with no MLP flag.
    fn default() -> Self {
        MlpArgs {
            hidden: None,
            batch: None,
            lr: None,
            lr_decay: None,
            clocks_per_epoch: None,
            samples: BUILTIN_TRAIN,
            test_samples: None,
            features: BUILTIN_FEATURES,
            data: None,
        }
    }
}

/// Largest `(--samples + --test-samples) x --features` of the built-in set (8 GiB of `f32`).
pub const MAX_SYNTHETIC_VALUES: u64 = 1 << 31;

impl MlpArgs {
    /// The built-in set the flags ask for, checked.
    pub fn synthetic_spec(&self, seed: u64) -> Result<SyntheticMlpSpec, AppError> {
        let test = self.test_samples.unwrap_or(self.samples / 4);
        flags::in_range("--samples", self.samples, 1, 100_000_000)?;
        flags::in_range("--test-samples", test, 1, 100_000_000)?;
        flags::in_range("--features", self.features, 1, 1_000_000)?;
        let values = (self.samples as u64 + test as u64) * self.features as u64;
        if values > MAX_SYNTHETIC_VALUES {
            return Err(AppError::Settings(format!(
                "(--samples + --test-samples) x --features is {values} values, above the limit \
                 {MAX_SYNTHETIC_VALUES}"
            )));
        }
        Ok(SyntheticMlpSpec {
            train: self.samples,
            test,
            features: self.features,
            ..SyntheticMlpSpec::default_builtin(seed)
        })
    }
}

/// What every MLP worker is created from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlpSettings {
    pub hidden: Vec<usize>,
    pub hyper: MlpHyper,
    pub seed: u64,
    pub data: Option<String>,
    pub clocks_per_epoch: u32,
    pub threads: u32,
    /// The built-in set's spec (`None` with `--data`, and from an older coordinator: the
    /// built-in spec of the seed).
    #[serde(default)]
    pub synthetic: Option<SyntheticMlpSpec>,
}

/// Per-clock figures: training loss of the clock's batches, held-out accuracy of the model the
/// clock starts from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MlpClock {
    pub train_loss: f64,
    pub train_n: f64,
    pub test_correct: f64,
    pub test_n: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MlpFinal {
    pub test_correct: f64,
    pub test_loss: f64,
    pub test_n: f64,
    pub samples: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MlpFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_hash: Option<String>,
}

fn load(s: &MlpSettings) -> Result<(Dataset, Dataset), AppError> {
    match &s.data {
        Some(dir) => Ok(load_mnist_dir(Path::new(dir))?),
        None => {
            Ok(synthetic_mlp(&s.synthetic.unwrap_or_else(|| {
                SyntheticMlpSpec::default_builtin(s.seed)
            })))
        }
    }
}

impl App for MlpApp {
    type Args = MlpArgs;
    type Settings = MlpSettings;
    type Clock = MlpClock;
    type Final = MlpFinal;
    type Facts = MlpFacts;

    fn name(&self) -> &'static str {
        "mlp"
    }

    fn about(&self) -> &'static str {
        "dense network classifier by local SGD with model averaging"
    }

    fn plan(&self, a: &MlpArgs, job: &JobCommon) -> Result<Plan<MlpSettings>, AppError> {
        let data = flags::absolute(a.data.as_deref(), "IDX directory")?;
        if let Some(d) = &data {
            if !Path::new(d).is_dir() {
                return Err(AppError::Settings(format!(
                    "--data for mlp is a directory of IDX files (train-images-idx3-ubyte[.gz], ...), got the file {d}"
                )));
            }
        }
        let on_data = data.is_some();
        let base = if on_data {
            MlpHyper {
                lr: DATA_LR,
                ..MlpHyper::mnist()
            }
        } else {
            MlpHyper::builtin()
        };
        let hyper = MlpHyper {
            batch: a.batch.map(|b| b as usize).unwrap_or(base.batch),
            lr: a.lr.unwrap_or(base.lr),
            lr_decay: a.lr_decay.unwrap_or(base.lr_decay),
        };
        flags::in_range("--batch", hyper.batch, 1, 1 << 16)?;
        flags::positive("--lr", hyper.lr.into())?;
        flags::decay("--lr-decay", hyper.lr_decay.into())?;
        let default_hidden = if on_data {
            Arch::mnist().hidden
        } else {
            Arch::builtin().hidden
        };
        let hidden = a.hidden.clone().unwrap_or(default_hidden);
        if hidden.iter().any(|&h| h == 0 || h > 1 << 16) || hidden.len() > 16 {
            return Err(AppError::Settings(
                "--hidden takes up to 16 widths in 1..=65536".into(),
            ));
        }
        let default_k = if on_data { DATA_CLOCKS_PER_EPOCH } else { 1 };
        let clocks_per_epoch = a.clocks_per_epoch.unwrap_or(default_k);
        flags::in_range("--clocks-per-epoch", clocks_per_epoch, 1, 10_000)?;
        let synthetic = if on_data {
            None
        } else {
            Some(a.synthetic_spec(job.seed)?)
        };
        let settings = MlpSettings {
            hidden,
            hyper,
            seed: job.seed,
            data,
            clocks_per_epoch,
            threads: job.threads,
            synthetic,
        };
        let (train, test) = load(&settings)?;
        if train.n == 0 {
            return Err(AppError::Settings("no training samples".into()));
        }
        let arch = Arch::new(train.d, &settings.hidden, train.classes);
        arch.validate()
            .map_err(|e| AppError::Settings(format!("MLP architecture: {e}")))?;
        let tables = arch
            .layers()
            .iter()
            .enumerate()
            .map(|(l, shape)| {
                let size = (shape.rows() as u64, shape.width() as u32);
                let name = format!("layer_{l}");
                job.table(l as u32, &name, size, UpdateRule::Add, Init::Zeros)
            })
            .collect();
        let epochs = if on_data { DATA_EPOCHS } else { BUILTIN_EPOCHS };
        let mut layers = vec![arch.input];
        layers.extend(&arch.hidden);
        layers.push(arch.classes);
        let layers: Vec<String> = layers.iter().map(|x| x.to_string()).collect();
        let mut facts = serde_json::Map::new();
        facts.insert("layers".into(), layers.join("-").into());
        facts.insert("params".into(), arch.num_params().into());
        facts.insert("train_samples".into(), train.n.into());
        facts.insert("test_samples".into(), test.n.into());
        facts.insert("batch".into(), hyper.batch.into());
        facts.insert("lr".into(), decimal(hyper.lr));
        facts.insert("lr_decay".into(), decimal(hyper.lr_decay));
        facts.insert("clocks_per_epoch".into(), clocks_per_epoch.into());
        facts.insert("seed".into(), job.seed.into());
        facts.insert("data".into(), flags::data_fact(&settings.data));
        Ok(Plan {
            tables,
            clocks: epochs * u64::from(clocks_per_epoch),
            settings,
            facts,
        })
    }

    fn session(
        &self,
        s: MlpSettings,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn Session<Self>>, AppError> {
        Ok(Box::new(MlpSession::new(s, ctx)?))
    }

    fn clock_line(&self, c: &MlpClock) -> String {
        let f = |v: Option<f64>| v.unwrap_or(f64::NAN);
        format!(
            "train_loss {:.4}  test_accuracy {:.4}",
            f(ratio(c.train_loss, c.train_n)),
            f(ratio(c.test_correct, c.test_n))
        )
    }

    fn clock_metrics(&self, c: &MlpClock) -> Vec<(&'static str, Option<f64>)> {
        vec![
            ("train_loss", ratio(c.train_loss, c.train_n)),
            ("test_accuracy", ratio(c.test_correct, c.test_n)),
        ]
    }

    fn target(&self) -> Option<Target> {
        Some(Target {
            metric: "test_accuracy".into(),
            lower_is_better: false,
            value: 0.95,
        })
    }

    fn summary(&self, job: &JobView<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let f = &job.sums;
        let mut out = serde_json::Map::new();
        out.insert("test_accuracy".into(), num(ratio(f.test_correct, f.test_n)));
        out.insert("test_loss".into(), num(ratio(f.test_loss, f.test_n)));
        // The last clock's mean training loss (measured on each batch before its step).
        let last = job
            .clocks
            .iter()
            .rev()
            .find_map(|(_, c)| ratio(c.train_loss, c.train_n));
        out.insert("train_loss".into(), num(last));
        if let Some(h) = &job.facts.model_hash {
            out.insert("model_hash".into(), h.clone().into());
        }
        if let Some(r) = job.rate(f.samples) {
            out.insert("samples_per_s".into(), r.into());
        }
        out
    }
}

/// One MLP worker: its samples, the model it read, and its local copy.
pub struct MlpSession {
    worker: u32,
    workers: u32,
    settings: MlpSettings,
    engine: Box<dyn MlpCompute + Send>,
    arch: Arch,
    train: Dataset,
    /// This worker's share of the held-out set.
    test: Dataset,
    samples: Vec<usize>,
    /// The model as read (per layer) and the local copy SGD runs on.
    read: Vec<Vec<f32>>,
    local: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    inbox: Inbox,
    trained: u64,
}

impl MlpSession {
    pub fn new(s: MlpSettings, ctx: &WorkerContext<'_>) -> Result<MlpSession, AppError> {
        ctx.check()?;
        let engine = ctx.engines.mlp(s.threads)?;
        let (train, test) = load(&s)?;
        let arch = Arch::new(train.d, &s.hidden, train.classes);
        arch.validate()
            .map_err(|e| AppError::Settings(format!("MLP architecture: {e}")))?;
        let (w, n) = (ctx.worker as usize, ctx.workers as usize);
        let samples = worker_split(train.n, n, w);
        let test = test.subset(&worker_split(test.n, n, w));
        tracing::info!(
            worker = ctx.worker,
            samples = samples.len(),
            engine = engine.name(),
            "MLP worker ready"
        );
        Ok(MlpSession {
            worker: ctx.worker,
            workers: ctx.workers,
            engine,
            read: arch.zeros(),
            local: arch.zeros(),
            grads: arch.zeros(),
            arch,
            train,
            test,
            samples,
            settings: s,
            inbox: Inbox::default(),
            trained: 0,
        })
    }

    fn all_layers(&self) -> Vec<TableRows> {
        self.arch
            .layers()
            .iter()
            .enumerate()
            .map(|(l, shape)| TableRows {
                table: l as u32,
                rows: (0..shape.rows() as u64).collect(),
            })
            .collect()
    }
}

impl Session<MlpApp> for MlpSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if !self.inbox.planned(clock) {
            // Clock 0 starts from the seeded initial model.
            let reads = if clock == 0 {
                Vec::new()
            } else {
                self.all_layers()
            };
            self.inbox.expect_clock(clock, reads);
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
        let width = self
            .arch
            .layers()
            .get(table as usize)
            .map(|s| s.width())
            .ok_or_else(|| AppError::Rows {
                table,
                reason: "no such layer".into(),
            })?;
        self.inbox.accept(table, first, keys, values, width)?;
        self.read[table as usize][first * width..(first + keys.len()) * width]
            .copy_from_slice(values);
        Ok(())
    }

    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<MlpClock, AppError> {
        self.inbox.ready(clock)?;
        let seed = self.settings.seed;
        if clock == 0 {
            self.read = self.arch.init_params(seed);
        }
        // Held-out figures of the model this clock starts from (each worker its share).
        let held_out = evaluate(
            self.engine.as_mut(),
            &self.arch,
            &self.read,
            &self.test,
            EVAL_CHUNK,
        )?;
        let per_epoch = u64::from(self.settings.clocks_per_epoch.max(1));
        let key = ClockKey {
            seed,
            worker: self.worker,
            clock: (clock / per_epoch).min(u64::from(u32::MAX)) as u32,
        };
        let order: Vec<usize> = epoch_order(self.samples.len(), key)
            .into_iter()
            .map(|i| self.samples[i])
            .collect();
        let slice = flags::slice_of(&order, (clock % per_epoch) as usize, per_epoch as usize);
        for (l, r) in self.local.iter_mut().zip(&self.read) {
            l.copy_from_slice(r);
        }
        let hyper = self.settings.hyper;
        let (stats, _) = local_sgd_steps(
            self.engine.as_mut(),
            &self.arch,
            &mut self.local,
            &mut self.grads,
            &self.train,
            &visiting_order(slice, key),
            &hyper,
            hyper.lr_at(key.clock),
        )?;
        self.trained += stats.count;
        let scale = 1.0 / self.workers as f32;
        // The tables start at zero: the initial model goes in with worker 0's first push.
        let with_init = clock == 0 && self.worker == 0;
        for (l, shape) in self.arch.layers().iter().enumerate() {
            let rows: Vec<u64> = (0..shape.rows() as u64).collect();
            let d = out.rows(l as u32, &rows)?;
            let (after, before) = (&self.local[l], &self.read[l]);
            for ((d, a), b) in d.iter_mut().zip(after).zip(before) {
                *d = (a - b) * scale;
                if with_init {
                    *d += b;
                }
            }
        }
        Ok(MlpClock {
            train_loss: stats.loss_sum,
            train_n: stats.count as f64,
            test_correct: held_out.correct as f64,
            test_n: held_out.count as f64,
        })
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        self.inbox.expect(self.all_layers());
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<MlpFinal, MlpFacts>, AppError> {
        self.inbox.complete()?;
        let held_out: BatchStats = evaluate(
            self.engine.as_mut(),
            &self.arch,
            &self.read,
            &self.test,
            EVAL_CHUNK,
        )?;
        Ok(Outcome {
            sums: MlpFinal {
                test_correct: held_out.correct as f64,
                test_loss: held_out.loss_sum,
                test_n: held_out.count as f64,
                samples: self.trained as f64,
            },
            facts: MlpFacts {
                model_hash: (self.worker == 0).then(|| flags::hash_bits(&self.read.concat())),
            },
        })
    }
}
