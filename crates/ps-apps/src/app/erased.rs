//! The apps without their types, for a driver that runs whichever the user names: settings
//! travel as JSON and figures as the numeric maps of `ps_proto::report`. Every [`App`] is a
//! [`DynApp`].

use super::{figures_err, job_view, App, DeltaSink, JobCommon, Session, TableRows, WorkerContext};
use crate::error::AppError;
use ps_proto::report::{to_facts, to_sums};
use ps_proto::{JobResult, SparseRows, TableSpec};
use std::collections::BTreeMap;

/// A plan with its settings as JSON.
#[derive(Debug, Clone)]
pub struct ErasedPlan {
    pub tables: Vec<TableSpec>,
    pub clocks: u64,
    pub settings: serde_json::Value,
    pub facts: serde_json::Map<String, serde_json::Value>,
}

/// An app as a driver sees it.
pub trait DynApp: Send + Sync {
    fn name(&self) -> &'static str;
    fn about(&self) -> &'static str;
    /// Adds the app's flags to a command.
    fn add_args(&self, cmd: clap::Command) -> clap::Command;
    /// Reads the app's flags from parsed arguments and plans the job.
    fn plan(&self, args: &clap::ArgMatches, job: &JobCommon) -> Result<ErasedPlan, AppError>;
    /// A worker's session, from the plan's settings.
    fn session(
        &self,
        settings: &serde_json::Value,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn DynSession>, AppError>;
    /// The app's part of a clock's line, from the clock's summed figures.
    fn clock_line(&self, sums: &BTreeMap<String, f64>) -> String;
    /// The clock's named quality figures ([`App::clock_metrics`]).
    fn clock_metrics(&self, sums: &BTreeMap<String, f64>) -> Vec<(&'static str, Option<f64>)>;
    /// The default quality bar ([`App::target`]).
    fn target(&self) -> Option<super::Target>;
    /// The app's summary fields.
    fn summary(
        &self,
        result: &JobResult,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AppError>;
}

/// A session as a driver sees it: figures as numeric maps.
pub trait DynSession: Send {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError>;
    fn load(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        values: &[f32],
    ) -> Result<(), AppError>;
    fn takes_sparse(&self, table: u32) -> bool;
    fn load_sparse(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        rows: SparseRows<'_>,
    ) -> Result<(), AppError>;
    fn run_clock(
        &mut self,
        clock: u64,
        out: &mut dyn DeltaSink,
    ) -> Result<BTreeMap<String, f64>, AppError>;
    fn durable(&mut self, clocks: u64) -> Result<(), AppError>;
    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError>;
    /// Final sums and facts.
    #[allow(clippy::type_complexity)]
    fn evaluate(
        &mut self,
    ) -> Result<(BTreeMap<String, f64>, BTreeMap<String, serde_json::Value>), AppError>;
}

impl<A: App> DynApp for A {
    fn name(&self) -> &'static str {
        App::name(self)
    }

    fn about(&self) -> &'static str {
        App::about(self)
    }

    fn add_args(&self, cmd: clap::Command) -> clap::Command {
        <A::Args as clap::Args>::augment_args(cmd)
    }

    fn plan(&self, args: &clap::ArgMatches, job: &JobCommon) -> Result<ErasedPlan, AppError> {
        let args = <A::Args as clap::FromArgMatches>::from_arg_matches(args)
            .map_err(|e| AppError::Settings(e.to_string()))?;
        let plan = App::plan(self, &args, job)?;
        Ok(ErasedPlan {
            tables: plan.tables,
            clocks: plan.clocks,
            settings: serde_json::to_value(&plan.settings)
                .map_err(|e| AppError::Settings(format!("settings: {e}")))?,
            facts: plan.facts,
        })
    }

    fn session(
        &self,
        settings: &serde_json::Value,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn DynSession>, AppError> {
        let settings: A::Settings = serde_json::from_value(settings.clone())
            .map_err(|e| AppError::Settings(format!("{} settings: {e}", App::name(self))))?;
        Ok(Box::new(Erased(App::session(self, settings, ctx)?)))
    }

    fn clock_line(&self, sums: &BTreeMap<String, f64>) -> String {
        match ps_proto::report::from_sums::<A::Clock>(sums) {
            Ok(f) => App::clock_line(self, &f),
            Err(e) => format!("(figures: {e})"),
        }
    }

    fn clock_metrics(&self, sums: &BTreeMap<String, f64>) -> Vec<(&'static str, Option<f64>)> {
        match ps_proto::report::from_sums::<A::Clock>(sums) {
            Ok(f) => App::clock_metrics(self, &f),
            Err(_) => Vec::new(),
        }
    }

    fn target(&self) -> Option<super::Target> {
        App::target(self)
    }

    fn summary(
        &self,
        result: &JobResult,
    ) -> Result<serde_json::Map<String, serde_json::Value>, AppError> {
        Ok(App::summary(self, &job_view::<A>(result)?))
    }
}

struct Erased<A: App>(Box<dyn Session<A>>);

impl<A: App> DynSession for Erased<A> {
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError> {
        self.0.reads(clock)
    }

    fn load(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        values: &[f32],
    ) -> Result<(), AppError> {
        self.0.load(table, first, keys, values)
    }

    fn takes_sparse(&self, table: u32) -> bool {
        self.0.takes_sparse(table)
    }

    fn load_sparse(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        rows: SparseRows<'_>,
    ) -> Result<(), AppError> {
        self.0.load_sparse(table, first, keys, rows)
    }

    fn run_clock(
        &mut self,
        clock: u64,
        out: &mut dyn DeltaSink,
    ) -> Result<BTreeMap<String, f64>, AppError> {
        to_sums(&self.0.run_clock(clock, out)?).map_err(figures_err)
    }

    fn durable(&mut self, clocks: u64) -> Result<(), AppError> {
        self.0.durable(clocks)
    }

    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError> {
        self.0.final_reads()
    }

    fn evaluate(
        &mut self,
    ) -> Result<(BTreeMap<String, f64>, BTreeMap<String, serde_json::Value>), AppError> {
        let o = self.0.evaluate()?;
        Ok((
            to_sums(&o.sums).map_err(figures_err)?,
            to_facts(&o.facts).map_err(figures_err)?,
        ))
    }
}

/// The built-in apps: mf, lda, mlp, lr.
pub fn builtin() -> Vec<Box<dyn DynApp>> {
    vec![
        Box::new(crate::mf::MfApp),
        Box::new(crate::lda::LdaApp),
        Box::new(crate::mlp::MlpApp),
        Box::new(crate::lr::LrApp),
    ]
}
