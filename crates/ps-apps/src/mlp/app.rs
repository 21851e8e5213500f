//! A dense MLP classifier by local SGD with model averaging: one `add` table per layer (rows =
//! output units, width = inputs + 1, the bias last). Each clock a worker reads every layer, runs
//! SGD over the next slice of its shuffled samples, and pushes `(local - read) / workers`; the
//! shards' sum of those is the average of the workers' models. The tables start from the seeded
//! initial model (Glorot, [`super::layer_init`]), which every worker computes alike for clock 0,
//! so nobody pushes it.

use super::session::MlpSession;
use super::{
    layer_init, load_mnist_dir, synthetic_mlp_worker, Arch, Dataset, MlpHyper, SyntheticMlpSpec,
    BUILTIN_FEATURES, BUILTIN_TRAIN,
};
use crate::app::flags::{self, decimal, num, ratio};
use crate::app::{App, DeviceFigures, JobCommon, JobView, Plan, Session, Target, WorkerContext};
use crate::error::AppError;
use ps_proto::UpdateRule;
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
    /// Test samples of the built-in synthetic set [default: --samples / 4, at least 1].
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
        let test = self.test_samples.unwrap_or((self.samples / 4).max(1));
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
    /// Bytes a resident engine moved host to device and back in the clock (the read model in,
    /// the sample order in, the delta and the statistics out), and its device compute seconds
    /// (zero on the host path).
    #[serde(flatten)]
    pub device: DeviceFigures,
    /// Payload bytes of the delta the engine compressed itself (`device_codec`): zero where
    /// the worker library encoded it.
    pub engine_encoded: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MlpFinal {
    pub test_correct: f64,
    pub test_loss: f64,
    pub test_n: f64,
    pub samples: f64,
    /// A resident engine's totals over the job, its set-up included (see [`MlpClock`]).
    #[serde(flatten)]
    pub device: DeviceFigures,
    /// What an engine that encodes its own pushes held back at the end and dropped
    /// (`MlpResident::drop_unsent`), under the name the worker library's own residual has.
    #[serde(
        rename = "unsent_residual_l1",
        skip_serializing_if = "crate::app::is_zero"
    )]
    pub unsent_l1: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MlpFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_hash: Option<String>,
}

impl MlpSettings {
    /// The built-in set's spec (used without `--data`).
    fn builtin(&self) -> SyntheticMlpSpec {
        self.synthetic
            .unwrap_or_else(|| SyntheticMlpSpec::default_builtin(self.seed))
    }
}

/// Worker `worker`'s share of the training and held-out sets ([`Dataset::share`] of each). Of a
/// large built-in set it draws only its share.
pub(super) fn load_share(
    s: &MlpSettings,
    workers: usize,
    worker: usize,
) -> Result<(Dataset, Dataset), AppError> {
    match &s.data {
        Some(dir) => {
            let (train, test) = load_mnist_dir(Path::new(dir))?;
            Ok((
                train.into_share(workers, worker),
                test.into_share(workers, worker),
            ))
        }
        None => Ok(synthetic_mlp_worker(
            &s.builtin(),
            workers,
            worker,
            crate::par::threads(),
        )),
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
        // The shape of the data: a built-in set's from its spec, without drawing it.
        let (train_n, test_n, d, classes) = if on_data {
            let (train, test) = load_share(&settings, 1, 0)?;
            (train.n, test.n, train.d, train.classes)
        } else {
            let spec = settings.builtin();
            (spec.train, spec.test, spec.dims(), spec.num_classes())
        };
        if train_n == 0 {
            return Err(AppError::Settings("no training samples".into()));
        }
        let arch = Arch::new(d, &settings.hidden, classes);
        arch.validate()
            .map_err(|e| AppError::Settings(format!("MLP architecture: {e}")))?;
        let tables = arch
            .layers()
            .iter()
            .enumerate()
            .map(|(l, shape)| {
                let size = (shape.rows() as u64, shape.width() as u32);
                let name = format!("layer_{l}");
                let init = layer_init(shape.fan_in, shape.fan_out, settings.seed);
                job.table(l as u32, &name, size, UpdateRule::Add, init)
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
        facts.insert("train_samples".into(), train_n.into());
        facts.insert("test_samples".into(), test_n.into());
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
        flags::device_figures(&mut out, &f.device, &job.totals.1.device, job.clock_count);
        let encoded = job.totals.1.engine_encoded;
        if encoded > 0.0 {
            out.insert("push_payload_bytes_engine_encoded".into(), encoded.into());
        }
        out
    }
}
