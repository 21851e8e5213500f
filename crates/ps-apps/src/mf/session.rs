//! One MF worker's session: its ratings, its users' factors and its copy of the item rows, on one
//! of two paths.
//!
//! - **Host** (the CPU engines): the item rows and user factors live in host memory; each clock
//!   visits the next slice of the epoch's order ([`Visiting`]) with a [`MfCompute`] engine.
//! - **Resident** (an engine from [`crate::app::Engines::mf_resident`], e.g. CUDA): ratings,
//!   user factors and an item cache stay on the device for the whole job. The ratings are cut
//!   into conflict-free waves ([`WaveSchedule`]); an epoch runs every wave once, in an order drawn
//!   from the epoch's key, and its clocks split the waves. Pulled rows go to the device as they
//!   arrive; only the rows the clock changed come back, and the held-out error is computed on
//!   the device. The host keeps a copy of the item rows it read (for the delta and the cold
//!   ratings), which costs no bus traffic.

mod encoded;

use super::app::{MfClock, MfFacts, MfFinal, MfSettings, ITEMS};
use super::ratings::Loaded;
use super::resident::{MfResident, ResidentSetup, Split, Traffic};
use super::waves::{bands_for, WaveSchedule};
use super::{
    cut_runs, init_user_factors, squared_error_in, worker_cold, worker_shard_owned, Layout, MfApp,
    MfCompute, Rating, Visiting, WorkerShard,
};
use crate::app::device_codec::PushEncoder;
use crate::app::flags;
use crate::app::{DeltaSink, Inbox, Outcome, Session, TableRows, WorkerContext};
use crate::error::AppError;
use crate::seed::ClockKey;

/// One clock's work, worked out when the clock's reads are asked for.
struct ClockPlan {
    clock: u64,
    /// Host path: the ratings of the clock's slice, in visiting order: runs of the (arranged)
    /// training ratings, run in place with one engine thread; or gathered.
    runs: Vec<(usize, usize)>,
    order: Vec<Rating>,
    /// Resident path: the clock's waves.
    waves: Vec<u32>,
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

/// The items `ratings` touch, ascending (marks over the items: linear, where a sort of a big
/// slice's item ids cost more than its SGD).
fn touched_items<'a>(num_items: u64, ratings: impl Iterator<Item = &'a [Rating]>) -> Vec<u64> {
    let mut seen = vec![false; num_items as usize];
    for r in ratings.flatten() {
        seen[r.item as usize] = true;
    }
    (0..num_items).filter(|&k| seen[k as usize]).collect()
}

/// A sum of squared errors and its count.
type ErrorSum = (f64, u64);

/// An epoch's visiting order: runs of the arranged training ratings, or indices into them.
enum EpochPlan {
    Runs(Vec<(usize, usize)>),
    Order(Vec<usize>),
}

/// The host path's engine and order.
struct HostPath {
    engine: Box<dyn MfCompute + Send>,
    /// How this worker orders its ratings each epoch (built once).
    visiting: Visiting,
    /// The current epoch's visiting order.
    epoch_plan: Option<(ClockKey, EpochPlan)>,
}

/// The resident path's engine and schedule.
struct ResidentPath {
    dev: Box<dyn MfResident>,
    schedule: WaveSchedule,
    /// The current epoch's waves.
    epoch_waves: Option<(ClockKey, Vec<u32>)>,
    /// Items of all training ratings: what a clock of a whole epoch touches.
    all_touched: Vec<u64>,
    /// The engine's traffic when the current clock began.
    before: Traffic,
    /// Item rows the engine held something back of after its last push (sorted): an epoch
    /// split over clocks pushes them again with the next clock's rows.
    held: Vec<u64>,
}

enum Path {
    Host(HostPath),
    Resident(ResidentPath),
}

/// One MF worker: its ratings, its users' factors, and its copy of the item rows it reads.
pub struct MfSession {
    worker: u32,
    settings: MfSettings,
    path: Path,
    shard: WorkerShard,
    layout: Layout,
    /// User rows (host path; on the resident path, the initial rows only).
    users: Vec<f32>,
    num_items: u64,
    /// Item rows as last read (and, after a clock, as this worker changed them).
    items: Vec<f32>,
    /// Items of the held-out ratings, sorted.
    test_items: Vec<u64>,
    inbox: Inbox,
    plan: Option<ClockPlan>,
    updates: u64,
    /// Items of the cold held-out ratings, sorted.
    cold_items: Vec<u64>,
    /// Who encodes this worker's lossy pushes (`encoded`).
    encoder: PushEncoder,
    /// The engine has encoded this worker's pushes (and may hold a residual).
    engine_holds: bool,
    /// What the engine held back when the job ended.
    unsent: f64,
}

impl MfSession {
    pub fn new(settings: MfSettings, ctx: &WorkerContext<'_>) -> Result<MfSession, AppError> {
        ctx.check()?;
        let Loaded {
            num_items,
            train,
            test,
            cold,
            ..
        } = Loaded::of_worker(&settings, ctx.workers, ctx.worker)?;
        let mut shard = worker_shard_owned(train, test, ctx.workers, ctx.worker);
        shard.cold = worker_cold(&cold, &shard, ctx.workers, ctx.worker);
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
        settings.factors.round(&mut users);
        let mut cold_items: Vec<u64> = shard
            .cold
            .iter()
            .filter_map(|c| c.item)
            .map(u64::from)
            .collect();
        cold_items.sort_unstable();
        cold_items.dedup();
        let mut test_items: Vec<u64> = shard.test.iter().map(|r| u64::from(r.item)).collect();
        test_items.extend(shard.cold.iter().filter_map(|c| c.item).map(u64::from));
        test_items.sort_unstable();
        test_items.dedup();
        let local_users = shard.users.len() as u32;
        let path = match ctx.engines.mf_resident()? {
            Some(mut dev) => {
                let lanes = dev.lanes();
                let bands = bands_for(shard.train.len(), local_users, num_items, lanes);
                let schedule = WaveSchedule::new(&shard.train, local_users, num_items, bands);
                schedule.arrange(&mut shard.train);
                dev.setup(&ResidentSetup {
                    layout,
                    train: &shard.train,
                    schedule: &schedule,
                    test: &shard.test,
                    users: &users,
                    num_items: num_items as usize,
                    factors: settings.factors,
                })?;
                let all_touched =
                    touched_items(u64::from(num_items), std::iter::once(&shard.train[..]));
                Path::Resident(ResidentPath {
                    before: dev.traffic(),
                    dev,
                    schedule,
                    epoch_waves: None,
                    all_touched,
                    held: Vec::new(),
                })
            }
            None => {
                let engine = ctx.engines.mf(settings.threads)?;
                let visiting =
                    Visiting::new(settings.order, &mut shard.train, local_users, num_items);
                Path::Host(HostPath {
                    engine,
                    visiting,
                    epoch_plan: None,
                })
            }
        };
        tracing::info!(
            worker = ctx.worker,
            users = shard.users.len(),
            train = shard.train.len(),
            test = shard.test.len(),
            cold = shard.cold.len(),
            engine = match &path {
                Path::Host(h) => h.engine.name(),
                Path::Resident(r) => r.dev.name(),
            },
            bands = match &path {
                Path::Host(_) => 0,
                Path::Resident(r) => r.schedule.bands(),
            },
            "MF worker ready"
        );
        Ok(MfSession {
            worker: ctx.worker,
            path,
            users,
            num_items: u64::from(num_items),
            items: vec![0.0; num_items as usize * width],
            test_items,
            shard,
            layout,
            settings,
            inbox: Inbox::default(),
            plan: None,
            updates: 0,
            cold_items,
            encoder: PushEncoder::from_env().map_err(AppError::Settings)?,
            engine_holds: false,
            unsent: 0.0,
        })
    }

    /// Squared error and count over this worker's held-out ratings, and over its cold ones.
    fn held_out_error(&mut self) -> Result<(ErrorSum, ErrorSum), AppError> {
        let w = self.layout.width();
        let warm_n = self.shard.test.len() as u64;
        // The user rows of the cold ratings, where the state is.
        let (warm, cold_users): (f64, Vec<f32>) = match &mut self.path {
            Path::Host(_) => {
                let se = squared_error_in(self.layout, &self.shard.test, &self.users, &self.items);
                (se.0, Vec::new())
            }
            Path::Resident(r) => {
                let se = r.dev.squared_error(Split::Test)?;
                let known: Vec<u32> = self.shard.cold.iter().filter_map(|c| c.user).collect();
                let mut rows = vec![0.0; known.len() * w];
                r.dev.user_rows(&known, &mut rows)?;
                (se, rows)
            }
        };
        let mut cold = 0.0f64;
        let mut next_user = cold_users.chunks_exact(w);
        for c in &self.shard.cold {
            let user = match (&self.path, c.user) {
                (_, None) => None,
                (Path::Host(_), Some(u)) => Some(&self.users[u as usize * w..(u as usize + 1) * w]),
                (Path::Resident(_), Some(_)) => next_user.next(),
            };
            let item = c
                .item
                .map(|i| &self.items[i as usize * w..(i as usize + 1) * w]);
            let p = self
                .layout
                .predict_cold(self.settings.train_mean, user, item);
            cold += (f64::from(c.value) - f64::from(p)).powi(2);
        }
        Ok(((warm, warm_n), (cold, self.shard.cold.len() as u64)))
    }

    /// Elements per row (the rank, and the bias of a biased model).
    fn width(&self) -> usize {
        self.layout.width()
    }

    fn plan_clock(&mut self, clock: u64) -> ClockPlan {
        let per_epoch = u64::from(self.settings.clocks_per_epoch.max(1));
        let key = self.key(clock);
        let evaluate = clock % per_epoch == per_epoch - 1;
        let train = &self.shard.train;
        let mut plan = ClockPlan {
            clock,
            runs: Vec::new(),
            order: Vec::new(),
            waves: Vec::new(),
            count: 0,
            touched: Vec::new(),
            evaluate,
        };
        match &mut self.path {
            Path::Resident(r) => {
                if r.epoch_waves.as_ref().is_none_or(|(k, _)| *k != key) {
                    r.epoch_waves = Some((key, r.schedule.epoch_waves(key)));
                }
                let all = r.epoch_waves.as_ref().map(|(_, w)| &w[..]).unwrap_or(&[]);
                let (from, to) = {
                    let per = per_epoch as usize;
                    let i = (clock % per_epoch) as usize;
                    (all.len() * i / per, all.len() * (i + 1) / per)
                };
                plan.waves = all[from..to].to_vec();
                plan.count = r.schedule.ratings_in(&plan.waves);
                plan.touched = if plan.waves.len() == all.len() {
                    r.all_touched.clone()
                } else {
                    let runs = r.schedule.runs(&plan.waves);
                    touched_items(self.num_items, batches(&[], &runs, train))
                };
            }
            Path::Host(h) => {
                // One shuffle an epoch, whatever its number of clocks.
                if h.epoch_plan.as_ref().is_none_or(|(k, _)| *k != key) {
                    let p = match h.visiting.epoch_runs(key) {
                        Some(runs) => EpochPlan::Runs(runs),
                        None => EpochPlan::Order(h.visiting.epoch(key)),
                    };
                    h.epoch_plan = Some((key, p));
                }
                let n = train.len();
                let (i, k) = ((clock % per_epoch) as usize, per_epoch as usize);
                let (from, to) = (n * i / k, n * (i + 1) / k);
                match h.epoch_plan.as_ref().map(|(_, p)| p) {
                    Some(EpochPlan::Runs(all)) => plan.runs = cut_runs(all, from, to),
                    Some(EpochPlan::Order(o)) => {
                        plan.order = o[from..to].iter().map(|&i| train[i]).collect()
                    }
                    None => {}
                }
                // A blocked engine re-buckets what it is given: hand it the ratings at once.
                if self.settings.threads > 1 && !plan.runs.is_empty() {
                    plan.order = batches(&[], &plan.runs, train).flatten().copied().collect();
                    plan.runs.clear();
                }
                plan.count = to - from;
                plan.touched =
                    touched_items(self.num_items, batches(&plan.order, &plan.runs, train));
            }
        }
        plan
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

    /// Runs the clock's ratings and writes `after - before` of the touched rows into `delta`;
    /// returns the training squared error and the clock's bus traffic.
    fn sgd(&mut self, p: &ClockPlan, delta: &mut [f32]) -> Result<(f64, Traffic), AppError> {
        let w = self.width();
        let hyper = self.settings.hyper;
        let lr = hyper.lr_at(self.key(p.clock).clock);
        let factors = self.settings.factors;
        match &mut self.path {
            Path::Host(h) => {
                for (d, &k) in delta.chunks_exact_mut(w).zip(&p.touched) {
                    d.copy_from_slice(&self.items[k as usize * w..(k as usize + 1) * w]);
                }
                let mut se = 0.0;
                for batch in batches(&p.order, &p.runs, &self.shard.train) {
                    se += factors.sgd_pass(
                        h.engine.as_mut(),
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
                Ok((se, Traffic::default()))
            }
            Path::Resident(r) => {
                let se = r.dev.run_waves(&p.waves, lr, hyper.reg)?;
                // The changed rows come back into the delta; the host copy holds `before`.
                r.dev.item_rows(&p.touched, delta)?;
                for (d, &k) in delta.chunks_exact_mut(w).zip(&p.touched) {
                    let host = &mut self.items[k as usize * w..(k as usize + 1) * w];
                    for (d, h) in d.iter_mut().zip(host) {
                        let after = *d;
                        *d = after - *h;
                        *h = after;
                    }
                }
                let now = r.dev.traffic();
                let t = now.since(&r.before);
                r.before = now;
                Ok((se, t))
            }
        }
    }
}

impl Session<MfApp> for MfSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if self.plan.as_ref().is_none_or(|p| p.clock != clock) {
            let p = self.plan_clock(clock);
            let rows = self.items_read(&p);
            if let Path::Resident(r) = &mut self.path {
                r.dev.expect_items(&rows)?;
            }
            let reads = vec![TableRows { table: ITEMS, rows }];
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
            let mine = &mut self.items[at..at + width];
            mine.copy_from_slice(row);
            // The rows as this worker stores them: its delta then carries none of the rounding.
            self.settings.factors.round(mine);
        }
        if let Path::Resident(r) = &mut self.path {
            r.dev.load_items(first, values)?;
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
        let (train_se, mut traffic) = match self.engine_push(&p, out)? {
            Some(done) => done,
            None => {
                let delta = out.rows(ITEMS, &p.touched)?;
                self.sgd(&p, delta)?
            }
        };
        self.updates += p.count as u64;
        let (test_se, test_n) = if p.evaluate {
            self.refresh_cold_items()?;
            let ((se, n), (cold_se, cold_n)) = self.held_out_error()?;
            if let Path::Resident(r) = &mut self.path {
                let now = r.dev.traffic();
                let t = now.since(&r.before);
                r.before = now;
                traffic.h2d_bytes += t.h2d_bytes;
                traffic.d2h_bytes += t.d2h_bytes;
                traffic.compute_s += t.compute_s;
            }
            (se + cold_se, n + cold_n)
        } else {
            (0.0, 0)
        };
        Ok(MfClock {
            train_se,
            train_n: p.count as f64,
            test_se,
            test_n: test_n as f64,
            device: traffic.into(),
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
        if let Path::Resident(r) = &mut self.path {
            // The final reads show the shards' model, as the worker library's do.
            self.unsent += r.dev.drop_unsent()?;
            r.held.clear();
            self.engine_holds = false;
            r.dev.expect_items(&rows)?;
        }
        self.inbox.expect(vec![TableRows { table: ITEMS, rows }]);
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<MfFinal, MfFacts>, AppError> {
        self.inbox.complete()?;
        let train_n = self.shard.train.len() as u64;
        let train_se = match &mut self.path {
            Path::Host(_) => {
                squared_error_in(self.layout, &self.shard.train, &self.users, &self.items).0
            }
            Path::Resident(r) => r.dev.squared_error(Split::Train)?,
        };
        let ((test_se, test_n), (cold_se, cold_n)) = self.held_out_error()?;
        let traffic = match &self.path {
            Path::Host(_) => Traffic::default(),
            Path::Resident(r) => r.dev.traffic(),
        };
        Ok(Outcome {
            sums: MfFinal {
                train_se,
                train_n: train_n as f64,
                test_se: test_se + cold_se,
                test_n: (test_n + cold_n) as f64,
                cold_se,
                cold_n: cold_n as f64,
                updates: self.updates as f64,
                device: traffic.into(),
                unsent_l1: self.unsent,
            },
            facts: MfFacts {
                item_table_hash: (self.worker == 0).then(|| flags::hash_bits(&self.items)),
            },
        })
    }
}
