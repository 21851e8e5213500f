//! Matrix factorisation as a parameter-server job: ratings split by user across workers, user
//! factors local to their worker, item factors in table [`ITEMS`] (`add` rule: workers push the
//! change their SGD pass made to the item rows it touched).
//!
//! Each clock a worker visits the next slice of its epoch's shuffled order, reads only the item
//! rows that slice touches (and, at the end of an epoch, those of its held-out ratings, for the
//! test RMSE), runs SGD on them in place, and writes `after - before` of those rows straight
//! into the push.

use super::ratings::{load, Summary};
use super::session::MfSession;
use super::{Factors, Hyper, Layout, MfArgs, MfOrder, SyntheticSpec, ITEM_INIT_STD};
use crate::app::flags::{self, decimal, num, ratio};
use crate::app::{App, DeviceFigures, JobCommon, JobView, Plan, Session, Target, WorkerContext};
use crate::error::AppError;
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
    /// How workers store their factor rows (f32 or f16).
    #[serde(default)]
    pub factors: Factors,
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
    /// Bytes a resident engine moved host to device and back, and its device compute seconds
    /// (zero on the host path).
    #[serde(flatten)]
    pub device: DeviceFigures,
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
    /// A resident engine's totals over the job, its set-up included (see [`MfClock`]).
    #[serde(flatten)]
    pub device: DeviceFigures,
    /// What an engine that encodes its own pushes held back at the end and dropped
    /// (`MfResident::drop_unsent`), under the name the worker library's own residual has.
    #[serde(
        rename = "unsent_residual_l1",
        skip_serializing_if = "crate::app::is_zero"
    )]
    pub unsent_l1: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MfFacts {
    /// Hash of the bits of the final item table (worker 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_table_hash: Option<String>,
}

/// Built-in sets from this many ratings are sized from their spec by the coordinator, not
/// drawn (for one that large to have no training rating, the held-out fraction would have to be
/// within a hair of 1).
const SPEC_SIZED_MIN_RATINGS: u64 = 10_000;

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
        // Without biases the coordinator needs nothing of a synthetic set but its sizes, which
        // the spec gives; with them, the training mean, so it generates the set as the workers do.
        // (Small sets are drawn anyway, cheaply, so that one whose ratings all fell into the
        // held-out split is refused as before.)
        let summary = match (&synthetic_spec, &test, bias) {
            (Some(spec), None, false) if spec.target() >= SPEC_SIZED_MIN_RATINGS => {
                Summary::of_spec_unbiased(spec)
            }
            _ => Summary::of(&load(
                data.as_deref(),
                test.as_deref(),
                synthetic_spec.as_ref(),
                a.test_fraction,
                job.seed,
                None,
            )?),
        };
        if summary.num_items == 0 || summary.train == 0 {
            return Err(AppError::Settings("no ratings to train on".into()));
        }
        let settings = MfSettings {
            hyper,
            bias,
            train_mean: summary.train_mean,
            seed: job.seed,
            data,
            test,
            test_fraction: a.test_fraction,
            clocks_per_epoch: a.clocks_per_epoch,
            threads: job.threads,
            order: a.order,
            factors: a.factors,
            synthetic: synthetic_spec,
        };
        let init = Init::Normal {
            std: ITEM_INIT_STD,
            seed: job.seed,
        };
        let width = settings.layout().width() as u32;
        let items = (u64::from(summary.num_items), width);
        let tables = vec![job.table(ITEMS, "item_factors", items, UpdateRule::Add, init)];
        let mut facts = serde_json::Map::new();
        facts.insert("users".into(), summary.num_users.into());
        facts.insert("items".into(), summary.num_items.into());
        facts.insert("ratings".into(), summary.ratings.into());
        facts.insert("rank".into(), hyper.rank.into());
        facts.insert("lr".into(), decimal(hyper.lr));
        facts.insert("reg".into(), decimal(hyper.reg));
        facts.insert("bias".into(), bias.into());
        facts.insert("factors".into(), a.factors.name().into());
        facts.insert("seed".into(), job.seed.into());
        facts.insert("clocks_per_epoch".into(), a.clocks_per_epoch.into());
        facts.insert(
            "order".into(),
            serde_json::to_value(a.order).unwrap_or_default(),
        );
        facts.insert("data".into(), flags::data_fact(&settings.data));
        if settings.test.is_some() {
            facts.insert("test".into(), flags::data_fact(&settings.test));
            facts.insert("test_cold_ratings".into(), summary.cold.into());
        }
        if let Some(n) = summary.noise {
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
        flags::device_figures(&mut out, &f.device, &job.totals.1.device, job.clock_count);
        out
    }
}
