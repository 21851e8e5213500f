//! A dense MLP classifier by local SGD with model averaging: one `add` table per layer (rows =
//! output units, width = inputs + 1, the bias last). Each clock a worker reads every layer, runs
//! SGD over the next slice of its shuffled samples, and pushes `(local - read) / workers`; the
//! shards' sum of those is the average of the workers' models. Clock 0 starts from the seeded
//! initial model every worker computes alike, which worker 0 also pushes, so the tables need no
//! initialiser of their own.

use super::{hash_bits, Chaos, Plan};
use crate::cli::JobArgs;
use anyhow::{bail, Result};
use ps_apps::mlp::{
    self, epoch_order, evaluate, local_sgd_clock, worker_split, Arch, BatchStats, ClockKey,
    Dataset, MlpHyper, SyntheticMlpSpec,
};
use ps_client::PsClient;
use ps_proto::{Assign, Done, Init, TableSpec, UpdateRule};
use ps_server::{ClockSummary, JobResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use worker_gpu::Device;

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

/// MLP settings carried from the coordinator to every worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MlpSettings {
    pub hidden: Vec<usize>,
    pub hyper: MlpHyper,
    pub seed: u64,
    pub data: Option<String>,
    pub clocks_per_epoch: u32,
    pub threads: u32,
    #[serde(flatten)]
    pub chaos: Chaos,
}

fn load(s: &MlpSettings) -> Result<(Dataset, Dataset)> {
    match &s.data {
        Some(dir) => Ok(mlp::load_mnist_dir(Path::new(dir))?),
        None => Ok(mlp::synthetic_mlp(&SyntheticMlpSpec::default_builtin(
            s.seed,
        ))),
    }
}

pub fn plan(job: &JobArgs) -> Result<Plan> {
    let data = JobArgs::absolute(&job.data, "IDX directory")?;
    if let Some(d) = &data {
        if !Path::new(d).is_dir() {
            bail!("--data for mlp is a directory of IDX files (train-images-idx3-ubyte[.gz], ...), got the file {d}");
        }
    }
    let base = if data.is_some() {
        MlpHyper {
            lr: DATA_LR,
            ..MlpHyper::mnist()
        }
    } else {
        MlpHyper::builtin()
    };
    let hyper = MlpHyper {
        batch: job.batch.map(|b| b as usize).unwrap_or(base.batch),
        lr: job.lr.unwrap_or(base.lr),
        lr_decay: job.lr_decay.unwrap_or(base.lr_decay),
    };
    if hyper.batch == 0 || hyper.batch > 1 << 16 {
        bail!("--batch must be in 1..=65536");
    }
    let default_hidden = if data.is_some() {
        Arch::mnist().hidden
    } else {
        Arch::builtin().hidden
    };
    let hidden = job.hidden.clone().unwrap_or(default_hidden);
    if hidden.iter().any(|&h| h == 0 || h > 1 << 16) || hidden.len() > 16 {
        bail!("--hidden takes up to 16 widths in 1..=65536");
    }
    let clocks_per_epoch = job.clocks_per_epoch.unwrap_or(if data.is_some() {
        DATA_CLOCKS_PER_EPOCH
    } else {
        1
    });
    let settings = MlpSettings {
        hidden,
        hyper,
        seed: job.seed,
        data,
        clocks_per_epoch,
        threads: job.threads,
        chaos: Chaos::from_job(job),
    };
    let (train, test) = load(&settings)?;
    if train.n == 0 {
        bail!("no training samples");
    }
    let arch = Arch::new(train.d, &settings.hidden, train.classes);
    arch.validate()
        .map_err(|e| anyhow::anyhow!("MLP architecture: {e}"))?;
    let staleness = super::table_staleness(job);
    let tables = arch
        .layers()
        .iter()
        .enumerate()
        .map(|(l, shape)| TableSpec {
            id: l as u32,
            name: format!("layer_{l}"),
            rows: shape.rows() as u64,
            width: shape.width() as u32,
            rule: UpdateRule::Add,
            init: Init::Zeros,
            staleness,
            layout: Default::default(),
            push_codec: job.push_codec.clone(),
            pull_codec: job.pull_codec.clone(),
        })
        .collect();
    let epochs = if settings.data.is_some() {
        DATA_EPOCHS
    } else {
        BUILTIN_EPOCHS
    };
    let mut facts = serde_json::Map::new();
    let mut layers = vec![arch.input];
    layers.extend(&arch.hidden);
    layers.push(arch.classes);
    let layers: Vec<String> = layers.iter().map(|x| x.to_string()).collect();
    facts.insert("layers".into(), layers.join("-").into());
    facts.insert("params".into(), arch.num_params().into());
    facts.insert("train_samples".into(), train.n.into());
    facts.insert("test_samples".into(), test.n.into());
    facts.insert("batch".into(), hyper.batch.into());
    facts.insert("lr".into(), super::decimal(hyper.lr));
    facts.insert("lr_decay".into(), super::decimal(hyper.lr_decay));
    facts.insert("clocks_per_epoch".into(), clocks_per_epoch.into());
    facts.insert("seed".into(), job.seed.into());
    facts.insert("data".into(), super::data_fact(&settings.data));
    Ok(Plan {
        tables,
        job: super::job_spec(
            "mlp",
            job,
            job.clocks
                .unwrap_or(epochs * u64::from(settings.clocks_per_epoch)),
            &settings,
        )?,
        facts,
    })
}

pub fn clock_figures(s: &ClockSummary) -> String {
    let f = |v: Option<f64>| v.unwrap_or(f64::NAN);
    format!(
        "train_loss {:.4}  test_accuracy {:.4}",
        f(super::ratio_of(&s.sums, "train_loss", "train_n")),
        f(super::ratio_of(&s.sums, "test_correct", "test_n"))
    )
}

pub fn summary_fields(r: &JobResult, out: &mut serde_json::Map<String, serde_json::Value>) {
    use super::{num, ratio_of};
    out.insert(
        "test_accuracy".into(),
        num(ratio_of(&r.sums, "test_correct", "test_n")),
    );
    out.insert(
        "test_loss".into(),
        num(ratio_of(&r.sums, "test_loss", "test_n")),
    );
    // The last clock's mean training loss (measured on each batch before its step).
    let last = r
        .clocks
        .iter()
        .rev()
        .find_map(|c| ratio_of(&c.sums, "train_loss", "train_n"));
    out.insert("train_loss".into(), num(last));
    super::copy_facts(r, &["model_hash"], out);
    if let Some(rate) = super::rate(r, "samples") {
        out.insert("samples_per_s".into(), rate.into());
    }
}

/// Reads every layer (concatenated rows of each table).
fn read_model(client: &mut PsClient, arch: &Arch, synced: bool) -> Result<Vec<Vec<f32>>> {
    arch.layers()
        .iter()
        .enumerate()
        .map(|(l, shape)| {
            let rows: Vec<u64> = (0..shape.rows() as u64).collect();
            let mut t = client.table(l as u32)?;
            Ok(if synced {
                t.read_rows_synced(&rows)?
            } else {
                t.read_rows(&rows)?
            })
        })
        .collect()
}

/// Pushes one delta per layer, row by row (rows left unchanged are skipped).
fn push_model(client: &mut PsClient, arch: &Arch, delta: &[Vec<f32>]) -> Result<()> {
    for (l, (shape, d)) in arch.layers().iter().zip(delta).enumerate() {
        let mut t = client.table(l as u32)?;
        for (row, values) in d.chunks_exact(shape.width()).enumerate() {
            if values.iter().any(|&x| x != 0.0) {
                t.inc_row(row as u64, values)?;
            }
        }
    }
    Ok(())
}

/// One worker's whole job.
pub fn run_worker(client: &mut PsClient, assign: &Assign, device: Device) -> Result<Done> {
    let settings: MlpSettings = super::settings_of(assign)?;
    let mut engine = worker_gpu::mlp_engine(device, settings.threads)?;
    let engine = engine.as_mut();
    let (train, test) = load(&settings)?;
    let arch = Arch::new(train.d, &settings.hidden, train.classes);
    let (w, workers) = (assign.id, assign.num_workers);
    let samples = worker_split(train.n, workers as usize, w as usize);
    let test_part = test.subset(&worker_split(test.n, workers as usize, w as usize));
    let per_epoch = settings.clocks_per_epoch.max(1) as u64;
    let eval_chunk = 1024;
    tracing::info!(
        worker = w,
        samples = samples.len(),
        engine = engine.name(),
        "MLP worker ready"
    );

    let mut trained = 0u64;
    for clock in 0..assign.job.clocks {
        settings.chaos.before_clock(w, clock);
        let read = if clock == 0 {
            arch.init_params(settings.seed)
        } else {
            read_model(client, &arch, false)?
        };
        // Held-out figures of the model this clock starts from (each worker its share).
        let held_out = evaluate(engine, &arch, &read, &test_part, eval_chunk);
        let epoch = clock / per_epoch;
        let key = ClockKey {
            seed: settings.seed,
            worker: w,
            clock: epoch.min(u32::MAX as u64) as u32,
        };
        let order: Vec<usize> = epoch_order(samples.len(), key)
            .into_iter()
            .map(|i| samples[i])
            .collect();
        let slice = epoch_slice(&order, (clock % per_epoch) as usize, per_epoch as usize);
        let mut out = local_sgd_clock(engine, &arch, &read, &train, slice, &settings.hyper, key);
        out.scale(1.0 / workers as f32);
        trained += out.stats.count;
        if clock == 0 && w == 0 {
            // The tables start at zero: the initial model goes in with worker 0's first push.
            for (d, init) in out.delta.iter_mut().zip(&read) {
                for (x, i) in d.iter_mut().zip(init) {
                    *x += i;
                }
            }
        }
        push_model(client, &arch, &out.delta)?;
        client.clock_with(figures(&out.stats, &held_out))?;
    }
    client.flush()?;
    let model = read_model(client, &arch, true)?;
    let held_out = evaluate(engine, &arch, &model, &test_part, eval_chunk);
    let mut done = Done {
        worker: w,
        ..Default::default()
    };
    done.sums = BTreeMap::from([
        ("test_correct".to_string(), held_out.correct as f64),
        ("test_loss".to_string(), held_out.loss_sum),
        ("test_n".to_string(), held_out.count as f64),
        ("samples".to_string(), trained as f64),
    ]);
    if w == 0 {
        let flat: Vec<f32> = model.concat();
        done.facts
            .insert("model_hash".into(), hash_bits(&flat).into());
    }
    Ok(done)
}

/// Slice `i` of `k` near-equal slices of `order`.
fn epoch_slice(order: &[usize], i: usize, k: usize) -> &[usize] {
    let n = order.len();
    &order[n * i / k..n * (i + 1) / k]
}

fn figures(train: &BatchStats, held_out: &BatchStats) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("train_loss".to_string(), train.loss_sum),
        ("train_n".to_string(), train.count as f64),
        ("test_correct".to_string(), held_out.correct as f64),
        ("test_n".to_string(), held_out.count as f64),
    ])
}

#[cfg(test)]
mod tests {
    use super::epoch_slice;

    #[test]
    fn epoch_slices_cover_the_order_once() {
        let order: Vec<usize> = (0..10).collect();
        let parts: Vec<&[usize]> = (0..3).map(|i| epoch_slice(&order, i, 3)).collect();
        assert_eq!(parts.concat(), order);
        assert!(parts.iter().all(|p| p.len() == 3 || p.len() == 4));
    }
}
