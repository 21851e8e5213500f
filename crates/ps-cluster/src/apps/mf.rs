//! Matrix factorisation by SGD on the parameter server: ratings split by user across workers,
//! user factors local to their worker, item factors in table 0 (`add` rule: workers push the
//! change their SGD pass made to their copy of the items).

use super::{hash_bits, Chaos, Plan};
use crate::cli::JobArgs;
use anyhow::{bail, Result};
use ps_apps::mf::{self, ClockKey, Hyper, RatingSet};
use ps_client::PsClient;
use ps_proto::{Assign, Done, Init, TableSpec, UpdateRule};
use ps_server::{ClockSummary, JobResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use worker_gpu::Device;

pub const ITEMS: u32 = 0;

/// MF settings carried from the coordinator to every worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfSettings {
    pub hyper: Hyper,
    pub seed: u64,
    pub data: Option<String>,
    pub test_fraction: f64,
    #[serde(flatten)]
    pub chaos: Chaos,
    /// Clocks per SGD epoch: each clock visits the next slice of the epoch's shuffled order.
    #[serde(default = "one")]
    pub clocks_per_epoch: u32,
    /// Compute threads of the worker's engine.
    #[serde(default = "one")]
    pub threads: u32,
}

fn one() -> u32 {
    1
}

/// The ratings and, for built-in data, the noise sigma they were drawn with.
fn load(settings: &MfSettings) -> Result<(RatingSet, Option<f32>)> {
    match &settings.data {
        Some(path) => Ok((mf::load_ratings(std::path::Path::new(path))?, None)),
        None => {
            let spec = mf::SyntheticSpec::default_builtin(settings.seed);
            Ok((mf::synthetic(&spec), Some(spec.noise_sigma)))
        }
    }
}

pub fn plan(job: &JobArgs) -> Result<Plan> {
    let d = Hyper::default();
    let hyper = Hyper {
        rank: job.rank.unwrap_or(d.rank),
        lr: job.lr.unwrap_or(d.lr),
        reg: job.reg.unwrap_or(d.reg),
        lr_decay: job.lr_decay.unwrap_or(d.lr_decay),
    };
    if hyper.rank == 0 || hyper.rank > 4096 {
        bail!("--rank must be in 1..=4096");
    }
    let settings = MfSettings {
        hyper,
        seed: job.seed,
        data: JobArgs::absolute(&job.data, "data file")?,
        test_fraction: job.test_fraction.unwrap_or(mf::DEFAULT_TEST_FRACTION),
        chaos: Chaos::from_job(job),
        clocks_per_epoch: job.clocks_per_epoch.unwrap_or(1),
        threads: job.threads,
    };
    let (set, noise) = load(&settings)?;
    if set.num_items == 0 || set.ratings.is_empty() {
        bail!("no ratings to train on");
    }
    let staleness = super::table_staleness(job);
    let tables = vec![TableSpec {
        id: ITEMS,
        name: "item_factors".into(),
        rows: set.num_items as u64,
        width: hyper.rank,
        rule: UpdateRule::Add,
        init: Init::Normal {
            std: mf::ITEM_INIT_STD,
            seed: job.seed,
        },
        staleness,
        layout: Default::default(),
        push_codec: job.push_codec.clone(),
        pull_codec: job.pull_codec.clone(),
    }];
    let mut facts = serde_json::Map::new();
    facts.insert("users".into(), set.num_users.into());
    facts.insert("items".into(), set.num_items.into());
    facts.insert("ratings".into(), (set.ratings.len() as u64).into());
    facts.insert("rank".into(), hyper.rank.into());
    facts.insert("lr".into(), super::decimal(hyper.lr));
    facts.insert("seed".into(), job.seed.into());
    facts.insert("clocks_per_epoch".into(), settings.clocks_per_epoch.into());
    facts.insert("data".into(), super::data_fact(&settings.data));
    if let Some(n) = noise {
        facts.insert("noise_sigma".into(), super::decimal(n));
    }
    Ok(Plan {
        tables,
        job: super::job_spec(
            "mf",
            job,
            job.clocks.unwrap_or(mf::DEFAULT_CLOCKS as u64),
            &settings,
        )?,
        facts,
    })
}

fn rmse(sums: &BTreeMap<String, f64>, what: &str) -> Option<f64> {
    let se = sums.get(&format!("{what}_se"))?;
    let n = sums.get(&format!("{what}_n"))?;
    (*n > 0.0).then(|| (se / n).sqrt())
}

pub fn clock_figures(s: &ClockSummary) -> String {
    format!(
        "train_rmse {:.4}  test_rmse {:.4}",
        rmse(&s.sums, "train").unwrap_or(f64::NAN),
        rmse(&s.sums, "test").unwrap_or(f64::NAN)
    )
}

pub fn summary_fields(r: &JobResult, out: &mut serde_json::Map<String, serde_json::Value>) {
    use super::num;
    out.insert("train_rmse".into(), num(rmse(&r.sums, "train")));
    out.insert("test_rmse".into(), num(rmse(&r.sums, "test")));
    super::copy_facts(r, &["item_table_hash"], out);
    if let Some(r) = super::rate(r, "updates") {
        out.insert("updates_per_s".into(), r.into());
    }
}

/// One worker's whole job.
pub fn run_worker(client: &mut PsClient, assign: &Assign, device: Device) -> Result<Done> {
    let settings: MfSettings = super::settings_of(assign)?;
    let mut engine = worker_gpu::mf_engine(device, settings.threads)?;
    let engine = engine.as_mut();
    let (set, _) = load(&settings)?;
    let (w, workers) = (assign.id, assign.num_workers);
    let (train, test) = mf::split_train_test(&set, settings.test_fraction, settings.seed);
    let shard = mf::worker_shard(&train, &test, workers, w);
    let hyper = settings.hyper;
    let rank = hyper.rank as usize;
    let mut users = mf::init_user_factors(&shard.users, hyper.rank, settings.seed);
    let items: Vec<u64> = (0..set.num_items as u64).collect();
    tracing::info!(
        worker = w,
        users = shard.users.len(),
        train = shard.train.len(),
        test = shard.test.len(),
        "MF worker ready"
    );

    let mut updates = 0u64;
    for clock in 0..assign.job.clocks {
        settings.chaos.before_clock(w, clock);
        let read = client.table(ITEMS)?.read_rows(&items)?;
        let per_epoch = settings.clocks_per_epoch.max(1) as u64;
        let key = ClockKey {
            seed: settings.seed,
            worker: w,
            clock: (clock / per_epoch) as u32,
        };
        let slice = ((clock % per_epoch) as usize, per_epoch as usize);
        let out =
            mf::worker_clock_slice(engine, &shard.train, &mut users, &read, &hyper, key, slice);
        updates += out.train_count;
        let local: Vec<f32> = read.iter().zip(&out.delta).map(|(a, b)| a + b).collect();
        let (test_se, test_n) = mf::squared_error(&shard.test, &users, &local, rank);
        let mut table = client.table(ITEMS)?;
        for (i, d) in out.delta.chunks_exact(rank).enumerate() {
            if d.iter().any(|x| *x != 0.0) {
                table.inc_row(i as u64, d)?;
            }
        }
        let sums = BTreeMap::from([
            ("train_se".to_string(), out.train_sse),
            ("train_n".to_string(), out.train_count as f64),
            ("test_se".to_string(), test_se),
            ("test_n".to_string(), test_n as f64),
        ]);
        client.clock_with(sums)?;
    }
    client.flush()?;
    // The final model: every worker's every clock applied.
    let final_items = client.table(ITEMS)?.read_rows_synced(&items)?;
    let (train_se, train_n) = mf::squared_error(&shard.train, &users, &final_items, rank);
    let (test_se, test_n) = mf::squared_error(&shard.test, &users, &final_items, rank);
    let mut done = Done {
        worker: w,
        ..Default::default()
    };
    done.sums = BTreeMap::from([
        ("train_se".to_string(), train_se),
        ("train_n".to_string(), train_n as f64),
        ("test_se".to_string(), test_se),
        ("test_n".to_string(), test_n as f64),
        ("updates".to_string(), updates as f64),
    ]);
    if w == 0 {
        done.facts
            .insert("item_table_hash".into(), hash_bits(&final_items).into());
    }
    Ok(done)
}
