//! Matrix factorisation as a parameter-server job: ratings split by user across workers, user
//! factors local to their worker, item factors in table [`ITEMS`] (`add` rule: workers push the
//! change their SGD pass made to the item rows it touched).
//!
//! Each clock a worker visits the next slice of its epoch's shuffled order, reads only the item
//! rows that slice touches (and, at the end of an epoch, those of its held-out ratings, for the
//! test RMSE), runs SGD on them in place, and writes `after - before` of those rows straight
//! into the push.

use super::ratings::{load, Loaded};
use super::{
    cut_runs, init_user_factors, squared_error_in, worker_cold, worker_shard, Hyper, Layout,
    MfArgs, MfCompute, MfOrder, Rating, SyntheticSpec, Visiting, WorkerShard, ITEM_INIT_STD,
};
use crate::app::flags::{self, decimal, num, ratio};
use crate::app::{
    App, DeltaSink, Inbox, JobCommon, JobView, Outcome, Plan, Session, TableRows, Target,
    WorkerContext,
};
use crate::error::AppError;
use crate::seed::ClockKey;
use ps_proto::{Init, UpdateRule};
use serde::{Deserialize, Serialize};

/// The item-factor table.
pub const ITEMS: u32 = 0;

/// The MF app.
#[derive(Debug, Clone, Copy, Default)]
pub struct MfApp;

/// What every MF worker is created from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MfSettings {
    pub hyper: Hyper,
    /// Biased model: rows carry a bias after the factors (see [`Layout`]).
    pub bias: bool,
    /// Mean of the training ratings: the biased model's global mean, and the prediction for a
    /// held-out rating of a user and item both unseen in training.
    pub train_mean: f32,
    pub seed: u64,
    pub data: Option<String>,
    /// Held-out ratings file (instead of `test_fraction` of `data`).
    pub test: Option<String>,
    pub test_fraction: f64,
    pub clocks_per_epoch: u32,
    pub threads: u32,
    #[serde(default)]
    pub order: MfOrder,
    /// The built-in set's shape when there is no data file.
    pub synthetic: Option<SyntheticSpec>,
}

impl MfSettings {
    /// What the rows hold.
    pub fn layout(&self) -> Layout {
        Layout {
            rank: self.hyper.rank as usize,
            mean: self.bias.then_some(self.train_mean),
        }
    }
}

/// Per-clock figures: squared errors and counts, added up over workers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MfClock {
    pub train_se: f64,
    pub train_n: f64,
    /// Held-out error, measured at the end of each epoch (0 ratings on other clocks).
    pub test_se: f64,
    pub test_n: f64,
}

/// Final figures on the model of every clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MfFinal {
    pub train_se: f64,
    pub train_n: f64,
    /// Every held-out rating, the cold ones included.
    pub test_se: f64,
    pub test_n: f64,
    /// Held-out ratings of users or items unseen in training.
    pub cold_se: f64,
    pub cold_n: f64,
    /// SGD updates over the job.
    pub updates: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MfFacts {
    /// Hash of the bits of the final item table (worker 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_table_hash: Option<String>,
}

impl App for MfApp {
    type Args = MfArgs;
    type Settings = MfSettings;
    type Clock = MfClock;
    type Final = MfFinal;
    type Facts = MfFacts;

    fn name(&self) -> &'static str {
        "mf"
    }

    fn about(&self) -> &'static str {
        "matrix factorisation by SGD"
    }

    fn plan(&self, a: &MfArgs, job: &JobCommon) -> Result<Plan<MfSettings>, AppError> {
        let (hyper, bias, clocks) = a.resolve();
        flags::in_range("--rank", hyper.rank, 1, 4096)?;
        flags::positive("--lr", hyper.lr.into())?;
        flags::decay("--lr-decay", hyper.lr_decay.into())?;
        flags::non_negative("--reg", hyper.reg.into())?;
        flags::in_range("--clocks-per-epoch", a.clocks_per_epoch, 1, 10_000)?;
        flags::fraction("--test-fraction", a.test_fraction)?;
        let data = flags::absolute(a.data.as_deref(), "data file")?;
        let test = flags::absolute(a.test.as_deref(), "test file")?;
        let synthetic_spec = data.is_none().then(|| SyntheticSpec {
            users: a.users,
            items: a.items,
            ratings: a.ratings,
            item_zipf: a.item_zipf,
            ..SyntheticSpec::default_builtin(job.seed)
        });
        if let Some(s) = &synthetic_spec {
            flags::in_range("--users", s.users, 1, 100_000_000)?;
            flags::in_range("--items", s.items, 1, 100_000_000)?;
            flags::in_range("--ratings", s.ratings, 1, 2_000_000_000)?;
            flags::in_range("--item-zipf", s.item_zipf, 0.0, 4.0)?;
        }
        let loaded = load(
            data.as_deref(),
            test.as_deref(),
            synthetic_spec.as_ref(),
            a.test_fraction,
            job.seed,
        )?;
        if loaded.num_items == 0 || loaded.train.is_empty() {
            return Err(AppError::Settings("no ratings to train on".into()));
        }
        let settings = MfSettings {
            hyper,
            bias,
            train_mean: loaded.train_mean(),
            seed: job.seed,
            data,
            test,
            test_fraction: a.test_fraction,
            clocks_per_epoch: a.clocks_per_epoch,
            threads: job.threads,
            order: a.order,
            synthetic: synthetic_spec,
        };
        let init = Init::Normal {
            std: ITEM_INIT_STD,
            seed: job.seed,
        };
        let width = settings.layout().width() as u32;
        let items = (loaded.num_items as u64, width);
        let tables = vec![job.table(ITEMS, "item_factors", items, UpdateRule::Add, init)];
        let mut facts = serde_json::Map::new();
        facts.insert("users".into(), loaded.num_users.into());
        facts.insert("items".into(), loaded.num_items.into());
        let all = loaded.train.len() + loaded.test.len() + loaded.cold.len();
        facts.insert("ratings".into(), (all as u64).into());
        facts.insert("rank".into(), hyper.rank.into());
        facts.insert("lr".into(), decimal(hyper.lr));
        facts.insert("reg".into(), decimal(hyper.reg));
        facts.insert("bias".into(), bias.into());
        facts.insert("seed".into(), job.seed.into());
        facts.insert("clocks_per_epoch".into(), a.clocks_per_epoch.into());
        facts.insert(
            "order".into(),
            serde_json::to_value(a.order).unwrap_or_default(),
        );
        facts.insert("data".into(), flags::data_fact(&settings.data));
        if settings.test.is_some() {
            facts.insert("test".into(), flags::data_fact(&settings.test));
            facts.insert(
                "test_cold_ratings".into(),
                (loaded.cold.len() as u64).into(),
            );
        }
        if let Some(n) = loaded.noise {
            facts.insert("noise_sigma".into(), decimal(n));
        }
        Ok(Plan {
            tables,
            clocks: u64::from(clocks),
            settings,
            facts,
        })
    }

    fn session(
        &self,
        s: MfSettings,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn Session<Self>>, AppError> {
        Ok(Box::new(MfSession::new(s, ctx)?))
    }

    fn clock_line(&self, c: &MfClock) -> String {
        let train = ratio(c.train_se, c.train_n).map(f64::sqrt);
        match ratio(c.test_se, c.test_n).map(f64::sqrt) {
            Some(test) => format!(
                "train_rmse {:.4}  test_rmse {test:.4}",
                train.unwrap_or(f64::NAN)
            ),
            None => format!("train_rmse {:.4}", train.unwrap_or(f64::NAN)),
        }
    }

    fn clock_metrics(&self, c: &MfClock) -> Vec<(&'static str, Option<f64>)> {
        vec![
            ("train_rmse", ratio(c.train_se, c.train_n).map(f64::sqrt)),
            ("test_rmse", ratio(c.test_se, c.test_n).map(f64::sqrt)),
        ]
    }

    /// The built-in data's bar: within 15% of its noise floor (sigma 0.1).
    fn target(&self) -> Option<Target> {
        Some(Target {
            metric: "test_rmse".into(),
            lower_is_better: true,
            value: 0.115,
        })
    }

    fn summary(&self, job: &JobView<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let f = &job.sums;
        let mut out = serde_json::Map::new();
        let rmse = |se, n| num(ratio(se, n).map(f64::sqrt));
        out.insert("train_rmse".into(), rmse(f.train_se, f.train_n));
        out.insert("test_rmse".into(), rmse(f.test_se, f.test_n));
        if f.cold_n > 0.0 {
            out.insert("test_cold_rmse".into(), rmse(f.cold_se, f.cold_n));
        }
        if let Some(h) = &job.facts.item_table_hash {
            out.insert("item_table_hash".into(), h.clone().into());
        }
        if let Some(r) = job.rate(f.updates) {
            out.insert("updates_per_s".into(), r.into());
        }
        out
    }
}

/// One clock's work, worked out when the clock's reads are asked for.
struct ClockPlan {
    clock: u64,
    /// The ratings of the clock's slice, in visiting order: runs of the (arranged) training
    /// ratings, run in place with one engine thread; or gathered.
    runs: Vec<(usize, usize)>,
    order: Vec<Rating>,
    /// How many ratings.
    count: usize,
    /// Items those ratings touch, sorted: the rows read and pushed.
    touched: Vec<u64>,
    /// Whether the clock ends an epoch (and measures the held-out error).
    evaluate: bool,
}

/// A clock's ratings in visiting order, as slices: the gathered ones, then the runs of the
/// training ratings.
fn batches<'a>(
    order: &'a [Rating],
    runs: &'a [(usize, usize)],
    train: &'a [Rating],
) -> impl Iterator<Item = &'a [Rating]> {
    std::iter::once(order)
        .filter(|o| !o.is_empty())
        .chain(runs.iter().map(move |&(lo, hi)| &train[lo..hi]))
}

/// An epoch's visiting order: runs of the arranged training ratings, or indices into them.
enum EpochPlan {
    Runs(Vec<(usize, usize)>),
    Order(Vec<usize>),
}

/// One MF worker: its ratings, its users' factors, and its copy of the item rows it reads.
pub struct MfSession {
    worker: u32,
    settings: MfSettings,
    engine: Box<dyn MfCompute + Send>,
    shard: WorkerShard,
    layout: Layout,
    users: Vec<f32>,
    num_items: u64,
    /// Item rows as last read (and, after a clock's SGD, as this worker changed them).
    items: Vec<f32>,
    /// Items of the held-out ratings, sorted.
    test_items: Vec<u64>,
    inbox: Inbox,
    plan: Option<ClockPlan>,
    /// How this worker orders its ratings each epoch (built once).
    visiting: Visiting,
    /// The current epoch's visiting order.
    epoch_plan: Option<(ClockKey, EpochPlan)>,
    updates: u64,
}

impl MfSession {
    pub fn new(settings: MfSettings, ctx: &WorkerContext<'_>) -> Result<MfSession, AppError> {
        ctx.check()?;
        let engine = ctx.engines.mf(settings.threads)?;
        let set = Loaded::of(&settings)?;
        let mut shard = worker_shard(&set.train, &set.test, ctx.workers, ctx.worker);
        shard.cold = worker_cold(&set.cold, &shard, ctx.workers, ctx.worker);
        let layout = settings.layout();
        let width = layout.width();
        let mut users = init_user_factors(&shard.users, width as u32, settings.seed);
        if layout.mean.is_some() {
            // User biases start at zero; item biases start from the item table's
            // Normal(0, ITEM_INIT_STD) like the item factors (the server fills whole rows).
            users
                .chunks_exact_mut(width)
                .for_each(|u| u[layout.rank] = 0.0);
        }
        let mut test_items: Vec<u64> = shard.test.iter().map(|r| u64::from(r.item)).collect();
        test_items.extend(shard.cold.iter().filter_map(|c| c.item).map(u64::from));
        test_items.sort_unstable();
        test_items.dedup();
        tracing::info!(
            worker = ctx.worker,
            users = shard.users.len(),
            train = shard.train.len(),
            test = shard.test.len(),
            cold = shard.cold.len(),
            engine = engine.name(),
            "MF worker ready"
        );
        let visiting = Visiting::new(
            settings.order,
            &mut shard.train,
            shard.users.len() as u32,
            set.num_items,
        );
        Ok(MfSession {
            visiting,
            worker: ctx.worker,
            engine,
            users,
            num_items: u64::from(set.num_items),
            items: vec![0.0; set.num_items as usize * width],
            test_items,
            shard,
            layout,
            settings,
            inbox: Inbox::default(),
            plan: None,
            epoch_plan: None,
            updates: 0,
        })
    }

    /// Squared error and count over this worker's held-out ratings, and over its cold ones.
    fn held_out_error(&self) -> ((f64, u64), (f64, u64)) {
        let warm = squared_error_in(self.layout, &self.shard.test, &self.users, &self.items);
        let w = self.layout.width();
        fn row(m: &[f32], i: Option<u32>, w: usize) -> Option<&[f32]> {
            i.map(|i| &m[i as usize * w..(i as usize + 1) * w])
        }
        let mut cold = 0.0f64;
        for c in &self.shard.cold {
            let p = self.layout.predict_cold(
                self.settings.train_mean,
                row(&self.users, c.user, w),
                row(&self.items, c.item, w),
            );
            cold += (f64::from(c.value) - f64::from(p)).powi(2);
        }
        (warm, (cold, self.shard.cold.len() as u64))
    }

    /// Elements per row (the rank, and the bias of a biased model).
    fn width(&self) -> usize {
        self.layout.width()
    }

    fn plan_clock(&mut self, clock: u64) -> ClockPlan {
        let per_epoch = u64::from(self.settings.clocks_per_epoch.max(1));
        let key = self.key(clock);
        // One shuffle an epoch, whatever its number of clocks.
        if self.epoch_plan.as_ref().is_none_or(|(k, _)| *k != key) {
            let plan = match self.visiting.epoch_runs(key) {
                Some(runs) => EpochPlan::Runs(runs),
                None => EpochPlan::Order(self.visiting.epoch(key)),
            };
            self.epoch_plan = Some((key, plan));
        }
        let (i, k) = ((clock % per_epoch) as usize, per_epoch as usize);
        let n = self.shard.train.len();
        let (from, to) = (n * i / k, n * (i + 1) / k);
        let train = &self.shard.train;
        let (mut runs, mut order) = (Vec::new(), Vec::new());
        match self.epoch_plan.as_ref().map(|(_, p)| p) {
            Some(EpochPlan::Runs(all)) => runs = cut_runs(all, from, to),
            Some(EpochPlan::Order(o)) => order = o[from..to].iter().map(|&i| train[i]).collect(),
            None => {}
        }
        // A blocked engine re-buckets what it is given: hand it the ratings at once.
        if self.settings.threads > 1 && !runs.is_empty() {
            order = runs
                .iter()
                .flat_map(|&(lo, hi)| &train[lo..hi])
                .copied()
                .collect();
            runs.clear();
        }
        // Items touched, ascending: marks over the items (linear; a sort of a big slice's
        // item ids cost more than its SGD).
        let mut seen = vec![false; self.num_items as usize];
        for r in batches(&order, &runs, train).flatten() {
            seen[r.item as usize] = true;
        }
        let touched: Vec<u64> = (0..self.num_items).filter(|&k| seen[k as usize]).collect();
        ClockPlan {
            clock,
            runs,
            order,
            count: to - from,
            touched,
            evaluate: clock % per_epoch == per_epoch - 1,
        }
    }

    /// The shuffle and learning-rate key of `clock`: its epoch.
    fn key(&self, clock: u64) -> ClockKey {
        let per_epoch = u64::from(self.settings.clocks_per_epoch.max(1));
        ClockKey {
            seed: self.settings.seed,
            worker: self.worker,
            clock: (clock / per_epoch).min(u64::from(u32::MAX)) as u32,
        }
    }

    fn items_read(&self, p: &ClockPlan) -> Vec<u64> {
        if !p.evaluate {
            return p.touched.clone();
        }
        let mut rows: Vec<u64> = p.touched.iter().chain(&self.test_items).copied().collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }
}

impl Session<MfApp> for MfSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if self.plan.as_ref().is_none_or(|p| p.clock != clock) {
            let p = self.plan_clock(clock);
            let reads = vec![TableRows {
                table: ITEMS,
                rows: self.items_read(&p),
            }];
            self.inbox.expect_clock(clock, reads);
            self.plan = Some(p);
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
        let width = self.width();
        self.inbox.accept(table, first, keys, values, width)?;
        for (&k, row) in keys.iter().zip(values.chunks_exact(width)) {
            let at = k as usize * width;
            self.items[at..at + width].copy_from_slice(row);
        }
        Ok(())
    }

    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<MfClock, AppError> {
        let p = match self.plan.take() {
            Some(p) if p.clock == clock => p,
            _ => {
                return Err(AppError::Rows {
                    table: ITEMS,
                    reason: format!("clock {clock} ran before its rows were read"),
                })
            }
        };
        self.inbox.ready(clock)?;
        let w = self.width();
        let delta = out.rows(ITEMS, &p.touched)?;
        for (d, &k) in delta.chunks_exact_mut(w).zip(&p.touched) {
            d.copy_from_slice(&self.items[k as usize * w..(k as usize + 1) * w]);
        }
        let hyper = self.settings.hyper;
        let lr = hyper.lr_at(self.key(clock).clock);
        let mut train_se = 0.0;
        for batch in batches(&p.order, &p.runs, &self.shard.train) {
            train_se += self.engine.sgd_pass(
                batch,
                &mut self.users,
                &mut self.items,
                self.layout,
                lr,
                hyper.reg,
            )?;
        }
        for (d, &k) in delta.chunks_exact_mut(w).zip(&p.touched) {
            let after = &self.items[k as usize * w..(k as usize + 1) * w];
            d.iter_mut().zip(after).for_each(|(d, a)| *d = a - *d);
        }
        self.updates += p.count as u64;
        let (test_se, test_n) = if p.evaluate {
            let ((se, n), (cold_se, cold_n)) = self.held_out_error();
            (se + cold_se, n + cold_n)
        } else {
            (0.0, 0)
        };
        Ok(MfClock {
            train_se,
            train_n: p.count as f64,
            test_se,
            test_n: test_n as f64,
        })
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        // Worker 0 reads the whole table for its hash; the others the items they rate.
        let rows: Vec<u64> = if self.worker == 0 {
            (0..self.num_items).collect()
        } else {
            let mut r: Vec<u64> = self
                .shard
                .train
                .iter()
                .chain(&self.shard.test)
                .map(|r| u64::from(r.item))
                .chain(self.shard.cold.iter().filter_map(|c| c.item).map(u64::from))
                .collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        self.plan = None;
        self.inbox.expect(vec![TableRows { table: ITEMS, rows }]);
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<MfFinal, MfFacts>, AppError> {
        self.inbox.complete()?;
        let (train_se, train_n) =
            squared_error_in(self.layout, &self.shard.train, &self.users, &self.items);
        let ((test_se, test_n), (cold_se, cold_n)) = self.held_out_error();
        Ok(Outcome {
            sums: MfFinal {
                train_se,
                train_n: train_n as f64,
                test_se: test_se + cold_se,
                test_n: (test_n + cold_n) as f64,
                cold_se,
                cold_n: cold_n as f64,
                updates: self.updates as f64,
            },
            facts: MfFacts {
                item_table_hash: (self.worker == 0).then(|| flags::hash_bits(&self.items)),
            },
        })
    }
}
