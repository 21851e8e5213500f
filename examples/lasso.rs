//! Lasso by parallel coordinate descent on the parameter server (the third application of the
//! SSP paper), written only against the public API: one `App` (flags, tables, session, clock
//! line, summary) handed to `ps_cluster::run_with`, which runs it as a real local cluster.
//!
//! `cargo run --release -p ps-examples --example lasso [-- FLAGS]` (2 shards, 2 workers)
//!
//! Minimises `F(b) = 1/(2n) |y - X b|^2 + lambda |b|_1`. The coefficients `b` are table `BETA`
//! (`p` rows, split by key range across the shards); the residual `r = y - X b` is table
//! `RESID` (`n` rows). Worker `w` owns the coordinates `j` with `j % workers == w` and, each
//! clock, one block of them: it reads the residual and its block's coefficients, runs a pass of
//! coordinate descent over the block on its copy of the residual (soft-thresholding each
//! coordinate), and pushes the change of both. Under staleness 0 every clock starts from the
//! residual of every update so far; the residual stays consistent because every change of `b`
//! goes out with its change of `r`. Clock 0 starts from `r = y`, which worker 0 pushes.
//!
//! Built-in data: 2,000 samples x 100,000 features, 20 entries of +-1 a column, 100 true
//! nonzero coefficients, noise sigma 0.01; `--data FILE` reads a libsvm file (labels centred).
//! The reference is a single-process coordinate descent run to convergence on the same data.

use ps_apps::app::flags::{decimal, ratio};
use ps_apps::app::{
    App, DeltaSink, Inbox, JobCommon, JobView, Outcome, Plan, Session, TableRows, WorkerContext,
};
use ps_apps::AppError;
use ps_proto::{Init, UpdateRule};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

const BETA: u32 = 0;
const RESID: u32 = 1;

/// Flags of the lasso app.
#[derive(Debug, Clone, clap::Args)]
struct LassoArgs {
    /// Samples of the built-in problem.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Features of the built-in problem.
    #[arg(long, default_value_t = 100_000)]
    features: usize,
    /// True nonzero coefficients of the built-in problem.
    #[arg(long, default_value_t = 100)]
    nonzeros: usize,
    /// Nonzeros per column of the built-in design matrix.
    #[arg(long, default_value_t = 20)]
    column_nnz: usize,
    /// Noise sigma of the built-in problem.
    #[arg(long, default_value_t = 0.01)]
    noise: f64,
    /// L1 strength as a fraction of lambda_max = max_j |x_j' y| / n (the smallest lambda that
    /// keeps every coefficient at 0).
    #[arg(long, default_value_t = 0.1)]
    lambda_ratio: f64,
    /// Blocks each worker's coordinates are split into: a clock updates one block. Fewer,
    /// larger blocks converge in fewer clocks but let the workers' simultaneous updates of
    /// correlated coordinates overshoot (2 blocks diverge on the built-in data at
    /// --lambda-ratio 0.1; 8 converge).
    #[arg(long, default_value_t = 8)]
    blocks: usize,
    /// A libsvm file instead of the built-in problem (labels are the response, centred).
    #[arg(long)]
    data: Option<PathBuf>,
}

/// What every worker is created from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Settings {
    args_data: Option<String>,
    samples: usize,
    features: usize,
    nonzeros: usize,
    column_nnz: usize,
    noise: f64,
    lambda: f64,
    blocks: usize,
    seed: u64,
    /// The reference run's objective.
    reference: f64,
}

/// A regression problem with `X` stored by column.
struct Problem {
    n: usize,
    col_start: Vec<usize>,
    rows: Vec<u32>,
    vals: Vec<f64>,
    y: Vec<f64>,
    /// The true support, for built-in data.
    truth: Option<Vec<usize>>,
}

impl Problem {
    fn p(&self) -> usize {
        self.col_start.len() - 1
    }

    fn col(&self, j: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let (a, b) = (self.col_start[j], self.col_start[j + 1]);
        self.rows[a..b]
            .iter()
            .map(|&r| r as usize)
            .zip(self.vals[a..b].iter().copied())
    }

    /// `|x_j|^2 / n` per column.
    fn col_norms(&self) -> Vec<f64> {
        (0..self.p())
            .map(|j| self.col(j).map(|(_, v)| v * v).sum::<f64>() / self.n as f64)
            .collect()
    }

    /// `y - X b`.
    fn residual(&self, b: &[f64]) -> Vec<f64> {
        let mut r = self.y.clone();
        for (j, &bj) in b.iter().enumerate().filter(|(_, b)| **b != 0.0) {
            self.col(j).for_each(|(i, v)| r[i] -= v * bj);
        }
        r
    }

    fn objective(&self, b: &[f64], lambda: f64) -> f64 {
        self.objective_of(&self.residual(b), b, lambda)
    }

    /// `F(b)` given `b`'s residual `r`.
    fn objective_of(&self, r: &[f64], b: &[f64], lambda: f64) -> f64 {
        let sq: f64 = r.iter().map(|x| x * x).sum();
        sq / (2.0 * self.n as f64) + lambda * b.iter().map(|x| x.abs()).sum::<f64>()
    }

    /// A problem from its columns (`(row, value)` pairs each) and response.
    fn from_columns(cols: Vec<Vec<(u32, f64)>>, y: Vec<f64>) -> Problem {
        let mut x = Problem {
            n: y.len(),
            col_start: vec![0],
            rows: vec![],
            vals: vec![],
            y,
            truth: None,
        };
        for c in cols {
            for (i, v) in c {
                x.rows.push(i);
                x.vals.push(v);
            }
            x.col_start.push(x.rows.len());
        }
        x
    }

    fn lambda_max(&self) -> f64 {
        (0..self.p())
            .map(|j| (self.col(j).map(|(i, v)| v * self.y[i]).sum::<f64>() / self.n as f64).abs())
            .fold(0.0, f64::max)
    }

    /// The built-in problem: `column_nnz` entries of +-1 per column at random rows, `nonzeros`
    /// coefficients of magnitude 1 to 2 and random sign, Gaussian noise. (With Gaussian entries
    /// the heavy tails of their products let a few null columns correlate with the shrunken
    /// residual as strongly as true ones, whatever lambda.)
    fn builtin(s: &Settings) -> Problem {
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
        let (n, p) = (s.samples, s.features);
        let sign = |rng: &mut ChaCha8Rng| if rng.gen_bool(0.5) { 1.0 } else { -1.0 };
        let cols = (0..p)
            .map(|_| {
                let mut r: Vec<u32> = (0..s.column_nnz.min(n))
                    .map(|_| rng.gen_range(0..n as u32))
                    .collect();
                r.sort_unstable();
                r.dedup();
                r.into_iter().map(|i| (i, sign(&mut rng))).collect()
            })
            .collect();
        let mut truth: Vec<usize> = (0..s.nonzeros.min(p))
            .map(|_| rng.gen_range(0..p))
            .collect();
        truth.sort_unstable();
        truth.dedup();
        let noise = (0..n).map(|_| s.noise * normal(&mut rng)).collect();
        let mut x = Problem::from_columns(cols, noise);
        for &j in &truth {
            let b = rng.gen_range(1.0..2.0) * sign(&mut rng);
            let col: Vec<(usize, f64)> = x.col(j).collect();
            col.into_iter().for_each(|(i, v)| x.y[i] += v * b);
        }
        x.truth = Some(truth);
        x
    }

    /// A libsvm file: features as columns (index = column), labels centred as the response.
    fn libsvm(path: &str) -> Result<Problem, AppError> {
        let data = ps_apps::lr::load_libsvm_values(std::path::Path::new(path))?;
        let p = data
            .rows
            .iter()
            .flat_map(|r| r.features.iter().map(|f| f.0 as usize + 1))
            .max();
        let mut cols: Vec<Vec<(u32, f64)>> = vec![Vec::new(); p.unwrap_or(0)];
        for (i, r) in data.rows.iter().enumerate() {
            for &(k, v) in &r.features {
                cols[k as usize].push((i as u32, f64::from(v)));
            }
        }
        let labels: Vec<f64> = data.rows.iter().map(|r| f64::from(r.label)).collect();
        let mean = labels.iter().sum::<f64>() / labels.len().max(1) as f64;
        Ok(Problem::from_columns(
            cols,
            labels.iter().map(|l| l - mean).collect(),
        ))
    }

    fn load(s: &Settings) -> Result<Problem, AppError> {
        match &s.args_data {
            Some(path) => Problem::libsvm(path),
            None => Ok(Problem::builtin(s)),
        }
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen_range(0.0..1.0));
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn soft_threshold(z: f64, t: f64) -> f64 {
    z.signum() * (z.abs() - t).max(0.0)
}

/// One coordinate-descent update of `b_j` against the residual `r` (kept equal to `y - X b`).
/// Returns the change of `b_j`.
fn update(x: &Problem, j: usize, norm: f64, b: &mut f64, r: &mut [f64], lambda: f64) -> f64 {
    if norm == 0.0 {
        return 0.0;
    }
    let rho = x.col(j).map(|(i, v)| v * r[i]).sum::<f64>() / x.n as f64 + norm * *b;
    let new = soft_threshold(rho, lambda) / norm;
    let d = new - *b;
    if d != 0.0 {
        x.col(j).for_each(|(i, v)| r[i] -= v * d);
        *b = new;
    }
    d
}

/// The reference: cyclic coordinate descent in one process until a sweep changes the objective
/// by less than 1e-12 relative (or 10,000 sweeps). Returns (objective, coefficients, sweeps).
fn reference(x: &Problem, lambda: f64) -> (f64, Vec<f64>, usize) {
    let norms = x.col_norms();
    let mut b = vec![0.0; x.p()];
    let mut r = x.y.clone();
    let mut last = x.objective(&b, lambda);
    for sweep in 1..=10_000 {
        for j in 0..x.p() {
            update(x, j, norms[j], &mut b[j], &mut r, lambda);
        }
        let f = x.objective_of(&r, &b, lambda);
        if (last - f).abs() <= 1e-12 * f.abs() {
            return (x.objective(&b, lambda), b, sweep);
        }
        last = f;
    }
    (x.objective(&b, lambda), b, 10_000)
}

struct Lasso;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Clock {
    /// `|r|^2 / 2n` of the residual the clock read (worker 0 only).
    half_sq: f64,
    /// `lambda |b_j|` and nonzeros over the worker's coordinates, as the clock found them.
    l1: f64,
    nonzeros: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Final {
    coordinate_updates: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Facts {
    #[serde(skip_serializing_if = "Option::is_none")]
    objective: Option<f64>,
    /// `(objective - reference) / reference`.
    #[serde(skip_serializing_if = "Option::is_none")]
    objective_gap: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonzeros: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    support_precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    support_recall: Option<f64>,
}

impl App for Lasso {
    type Args = LassoArgs;
    type Settings = Settings;
    type Clock = Clock;
    type Final = Final;
    type Facts = Facts;

    fn name(&self) -> &'static str {
        "lasso"
    }

    fn about(&self) -> &'static str {
        "L1-regularised least squares by parallel coordinate descent (examples/lasso.rs)"
    }

    fn plan(&self, a: &LassoArgs, job: &JobCommon) -> Result<Plan<Settings>, AppError> {
        let bad = |m: &str| Err(AppError::Settings(m.into()));
        if a.samples == 0 || a.features == 0 || a.column_nnz == 0 || a.blocks == 0 {
            return bad("--samples, --features, --column-nnz and --blocks must be at least 1");
        }
        let ratio_ok = a.lambda_ratio > 0.0 && a.lambda_ratio < 1.0;
        if !(ratio_ok && a.noise >= 0.0 && a.noise.is_finite()) {
            return bad("--lambda-ratio must be in (0, 1) and --noise >= 0");
        }
        let data = ps_apps::app::flags::absolute(a.data.as_deref(), "libsvm file")?;
        let mut s = Settings {
            args_data: data.clone(),
            samples: a.samples,
            features: a.features,
            nonzeros: a.nonzeros,
            column_nnz: a.column_nnz,
            noise: a.noise,
            lambda: 0.0,
            blocks: a.blocks,
            seed: job.seed,
            reference: 0.0,
        };
        let x = Problem::load(&s)?;
        if x.n == 0 || x.p() == 0 {
            return bad("no samples or no features");
        }
        s.lambda = a.lambda_ratio * x.lambda_max();
        let started = std::time::Instant::now();
        let (reference, _, sweeps) = reference(&x, s.lambda);
        s.reference = reference;
        eprintln!(
            "reference objective {reference:.9} (single-process coordinate descent, {sweeps} sweeps, {:.2} s)",
            started.elapsed().as_secs_f64()
        );
        let add = UpdateRule::Add;
        let tables = vec![
            job.table(BETA, "beta", (x.p() as u64, 1), add, Init::Zeros),
            job.table(RESID, "residual", (x.n as u64, 1), add, Init::Zeros),
        ];
        let mut facts = serde_json::Map::new();
        facts.insert("samples".into(), x.n.into());
        facts.insert("features".into(), x.p().into());
        facts.insert("lambda".into(), s.lambda.into());
        facts.insert("lambda_ratio".into(), decimal(a.lambda_ratio as f32));
        facts.insert("reference_objective".into(), reference.into());
        facts.insert("reference_sweeps".into(), sweeps.into());
        if let Some(t) = &x.truth {
            facts.insert("true_nonzeros".into(), t.len().into());
        }
        facts.insert("data".into(), ps_apps::app::flags::data_fact(&data));
        Ok(Plan {
            tables,
            clocks: 20 * a.blocks as u64,
            settings: s,
            facts,
        })
    }

    fn session(
        &self,
        s: Settings,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn Session<Self>>, AppError> {
        let x = Problem::load(&s)?;
        let own: Vec<usize> = (ctx.worker as usize..x.p())
            .step_by(ctx.workers as usize)
            .collect();
        Ok(Box::new(LassoSession {
            norms: x.col_norms(),
            b: vec![0.0; x.p()],
            r: x.y.clone(),
            read_r: Vec::new(),
            worker: ctx.worker,
            own,
            x,
            s,
            inbox: Inbox::default(),
            updates: 0,
        }))
    }

    fn clock_line(&self, c: &Clock) -> String {
        format!("objective {:.6}  nonzeros {}", c.half_sq + c.l1, c.nonzeros)
    }

    fn summary(&self, job: &JobView<'_, Self>) -> serde_json::Map<String, serde_json::Value> {
        let mut out = match serde_json::to_value(&job.facts) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => Default::default(),
        };
        if let Some(r) = job.rate(job.sums.coordinate_updates) {
            out.insert("coordinate_updates_per_s".into(), r.into());
        }
        out
    }
}

struct LassoSession {
    x: Problem,
    s: Settings,
    worker: u32,
    /// This worker's coordinates, their `|x_j|^2 / n` and values (all `p` slots; only its own
    /// are kept up to date until the final read fills the rest).
    own: Vec<usize>,
    norms: Vec<f64>,
    b: Vec<f64>,
    /// The residual as read, and this worker's working copy.
    read_r: Vec<f64>,
    r: Vec<f64>,
    inbox: Inbox,
    updates: u64,
}

impl LassoSession {
    fn block(&self, clock: u64) -> &[usize] {
        let k = self.s.blocks;
        let i = (clock % k as u64) as usize;
        let n = self.own.len();
        &self.own[n * i / k..n * (i + 1) / k]
    }
}

impl Session<Lasso> for LassoSession {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        if !self.inbox.planned(clock) {
            let reads = if clock == 0 {
                Vec::new()
            } else {
                let block = self.block(clock).iter().map(|&j| j as u64).collect();
                vec![
                    TableRows {
                        table: RESID,
                        rows: (0..self.x.n as u64).collect(),
                    },
                    TableRows {
                        table: BETA,
                        rows: block,
                    },
                ]
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
        self.inbox.accept(table, first, keys, values, 1)?;
        let dst = if table == RESID {
            &mut self.r
        } else {
            &mut self.b
        };
        for (&k, &v) in keys.iter().zip(values) {
            dst[k as usize] = f64::from(v);
        }
        Ok(())
    }

    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<Clock, AppError> {
        self.inbox.ready(clock)?;
        let lambda = self.s.lambda;
        let (mut l1, mut nonzeros) = (0.0, 0.0);
        for &j in &self.own {
            l1 += lambda * self.b[j].abs();
            nonzeros += f64::from(u8::from(self.b[j] != 0.0));
        }
        let half_sq = if self.worker == 0 {
            self.r.iter().map(|v| v * v).sum::<f64>() / (2.0 * self.x.n as f64)
        } else {
            0.0
        };
        self.read_r.clone_from(&self.r);
        let block: Vec<usize> = self.block(clock).to_vec();
        let keys: Vec<u64> = block.iter().map(|&j| j as u64).collect();
        let db = out.rows(BETA, &keys)?;
        for (d, &j) in db.iter_mut().zip(&block) {
            *d = update(
                &self.x,
                j,
                self.norms[j],
                &mut self.b[j],
                &mut self.r,
                lambda,
            ) as f32;
        }
        self.updates += block.len() as u64;
        // The residual's change; worker 0's first push also sets it to y (the table starts at 0).
        let rows: Vec<u64> = (0..self.x.n as u64).collect();
        let dr = out.rows(RESID, &rows)?;
        let start = clock == 0 && self.worker == 0;
        for (i, d) in dr.iter_mut().enumerate() {
            let base = if start { 0.0 } else { self.read_r[i] };
            *d = (self.r[i] - base) as f32;
        }
        Ok(Clock {
            half_sq,
            l1,
            nonzeros,
        })
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        let reads = if self.worker == 0 {
            vec![TableRows {
                table: BETA,
                rows: (0..self.x.p() as u64).collect(),
            }]
        } else {
            Vec::new()
        };
        self.inbox.expect(reads);
        Ok(self.inbox.reads().to_vec())
    }

    fn evaluate(&mut self) -> Result<Outcome<Final, Facts>, AppError> {
        self.inbox.complete()?;
        let sums = Final {
            coordinate_updates: self.updates as f64,
        };
        if self.worker != 0 {
            return Ok(Outcome {
                sums,
                facts: Facts::default(),
            });
        }
        // The objective of the model in the table, its residual computed afresh from X.
        let support: Vec<usize> = (0..self.x.p()).filter(|&j| self.b[j] != 0.0).collect();
        let objective = self.x.objective(&self.b, self.s.lambda);
        let mut facts = Facts {
            objective: Some(objective),
            objective_gap: Some((objective - self.s.reference) / self.s.reference),
            nonzeros: Some(support.len() as u64),
            ..Default::default()
        };
        if let Some(truth) = &self.x.truth {
            let hits = support
                .iter()
                .filter(|j| truth.binary_search(j).is_ok())
                .count() as f64;
            facts.support_precision = ratio(hits, support.len() as f64);
            facts.support_recall = ratio(hits, truth.len() as f64);
        }
        Ok(Outcome { sums, facts })
    }
}

fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    // With no command, run the example (`--help` lists its flags); the cluster re-executes this
    // binary for its roles.
    let commands = ["local", "coordinator", "server", "worker", "certs"];
    if args.get(1).is_none_or(|a| !commands.contains(&a.as_str())) {
        args.splice(
            1..1,
            [
                "local".to_string(),
                "--app".to_string(),
                "lasso".to_string(),
            ],
        );
    }
    let mut apps = ps_cluster::builtin();
    apps.push(Box::new(Lasso));
    ps_cluster::run_with(args, apps)
}
