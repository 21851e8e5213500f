//! The application seam: what a model is to the parameter server. A model is one type
//! implementing [`App`]: its name, its own command-line flags (`clap`), its table plan, its
//! per-worker [`Session`], its per-clock line and its summary fields. A generic driver (the
//! `ps-cluster` binary, or any program built on `ps-client`) runs every app the same way:
//!
//! ```text
//! plan(args)                          on the coordinator: tables, clocks, settings, facts
//! session(settings, worker)           once per worker: its data and local state
//! for clock in 0..clocks:
//!     reads(clock)                    which rows of which tables the clock reads
//!     load(table, first, keys, rows)  the pulled rows, shard by shard as they arrive
//!     run_clock(clock, sink)          the clock's work; its update goes into the sink
//!     durable(clocks)                 the worker's clocks the shards hold for good so far
//! final_reads(), load(..), evaluate() the final figures on the model of every clock
//! ```
//!
//! Sessions never see the network: rows come in through `load` and updates go out through a
//! [`DeltaSink`], so [`testing`] can drive them against an in-memory parameter server, clock by
//! clock, and compare them with the oracles. Figures are plain structs ([`Figures`]): the
//! coordinator adds every field up over workers.

pub mod device_codec;
mod engines;
mod erased;
pub mod flags;
mod target;
pub mod testing;
mod traffic;

pub use engines::{CpuEngines, Engines, OracleEngines};
pub use erased::{builtin, DynApp, DynSession, ErasedPlan};
pub use target::Target;
pub(crate) use traffic::is_zero;
pub use traffic::{DeviceFigures, Traffic};

use crate::error::{AppError, SinkError};
use ps_proto::codec::CodecChain;
use ps_proto::{ClockSummary, Init, JobResult, PushPlan, SparseRows, TableSpec, UpdateRule};
use serde::{de::DeserializeOwned, Serialize};

/// Figures an app reports, per clock or at the end: a struct of numbers (sums and counts, never
/// means: the coordinator adds each field up over workers). Give it `#[serde(default)]`.
pub trait Figures: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + Send {}

impl<T: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + Send> Figures for T {}

/// The settings the driver owns, which every app's plan sees.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCommon {
    pub workers: u32,
    pub seed: u64,
    /// Compute threads per worker.
    pub threads: u32,
    /// Read staleness of the tables: `None` is unbounded.
    pub staleness: Option<u64>,
    /// How workers encode pushes and shards encode pull replies.
    pub push_codec: CodecChain,
    pub pull_codec: CodecChain,
}

impl JobCommon {
    /// A table with the job's staleness and codecs.
    pub fn table(
        &self,
        id: u32,
        name: &str,
        (rows, width): (u64, u32),
        rule: UpdateRule,
        init: Init,
    ) -> TableSpec {
        TableSpec {
            id,
            name: name.into(),
            rows,
            width,
            rule,
            init,
            staleness: self.staleness,
            layout: Default::default(),
            push_codec: self.push_codec.clone(),
            pull_codec: self.pull_codec.clone(),
        }
    }
}

/// What the coordinator needs to start a job of an app.
#[derive(Debug, Clone)]
pub struct Plan<S> {
    pub tables: Vec<TableSpec>,
    /// Clocks to run unless the user says otherwise.
    pub clocks: u64,
    /// What every worker's session is created from.
    pub settings: S,
    /// Facts about the data and settings, copied into the summary (users, items, ...).
    pub facts: serde_json::Map<String, serde_json::Value>,
}

/// What a session is created with besides its settings.
pub struct WorkerContext<'a> {
    pub worker: u32,
    pub workers: u32,
    /// The compute engines of this worker's device.
    pub engines: &'a dyn Engines,
    /// Whether this worker, dead, may rejoin the job by replaying its clocks.
    pub rejoin: Rejoin<'a>,
}

/// Whether a dead worker may rejoin the job (`--on-worker-failure wait`): it starts again from
/// its first clock, rebuilding its local state against the current model while the shards drop
/// the pushes they already applied. Right where that state is the worker's own (MF's user
/// factors). Where the shared tables count it (LDA's topic assignments), the session keeps a
/// log of what it did in the worker's state directory and replays from that; without one it
/// refuses to start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rejoin<'a> {
    /// A dead worker fails the job or is evicted.
    #[default]
    Never,
    /// A dead worker comes back and replays.
    Replay {
        /// Its state directory (`--state-dir`), if any.
        state_dir: Option<&'a std::path::Path>,
        /// This run of the job (the coordinator's nonce): what a state directory holds of
        /// another run is never replayed.
        run: u64,
    },
}

impl WorkerContext<'_> {
    /// The worker is one of the workers (sessions split their data by it).
    pub fn check(&self) -> Result<(), AppError> {
        if self.worker < self.workers {
            Ok(())
        } else {
            let (w, n) = (self.worker, self.workers);
            Err(AppError::Settings(format!("worker {w} of {n} workers")))
        }
    }
}

/// Rows a clock reads from one table: sorted and distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    pub table: u32,
    pub rows: Vec<u64>,
}

/// Where a session writes its clock's update.
pub trait DeltaSink {
    /// A buffer of zeros for this clock's update of `keys` (sorted, distinct) of `table`,
    /// `keys.len() * width` values row-major: what the session writes there is pushed.
    fn rows(&mut self, table: u32, keys: &[u64]) -> Result<&mut [f32], SinkError>;

    /// This clock's update of `keys` (sorted, distinct) of `table` as entries of their
    /// `keys.len() * width` block (row-major): `values[j]` at position `at[j]`, the positions
    /// strictly increasing, zero elsewhere. The same update as writing them into
    /// [`DeltaSink::rows`]'s buffer, which is what this default does; a sink may keep it sparse
    /// (the worker library does on lossless tables, so no dense block is ever made), and takes
    /// the vectors as they are. Nothing is written if the entries are bad.
    fn entries(
        &mut self,
        table: u32,
        keys: Vec<u64>,
        at: Vec<u64>,
        values: Vec<f32>,
    ) -> Result<(), SinkError> {
        let bad = |reason: String| SinkError { table, reason };
        if at.len() != values.len() {
            return Err(bad(format!(
                "{} positions but {} values",
                at.len(),
                values.len()
            )));
        }
        if let Some(p) = at.windows(2).find(|p| p[0] >= p[1]) {
            return Err(bad(format!(
                "positions must be strictly increasing: {} then {}",
                p[0], p[1]
            )));
        }
        let rows = self.rows(table, &keys)?;
        if let Some(&last) = at.last().filter(|&&p| p >= rows.len() as u64) {
            return Err(bad(format!(
                "position {last} outside the {} values of the rows",
                rows.len()
            )));
        }
        for (&p, &v) in at.iter().zip(&values) {
            rows[p as usize] += v;
        }
        Ok(())
    }

    /// An update the session encoded itself with the table's push codec (see
    /// `ps_proto::codec`): `payload` encodes the rows of `keys` (sorted, distinct, on one shard)
    /// as one block.
    fn encoded(
        &mut self,
        table: u32,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Result<(), SinkError>;

    /// How entries of `keys` (sorted, distinct) of `table` would be cut into frames
    /// ([`DeltaSink::entries`]), as runs of `keys`, for a session whose engine encodes its
    /// entries itself (on its device): it then hands each run's exact sparse payload
    /// (`ps_proto::codec::encode_exact_selection`) to [`DeltaSink::encoded`]. `None` where the
    /// sink cannot say, or where the table's pushes are lossy (entries become dense rows).
    fn entries_blocks(
        &mut self,
        _table: u32,
        _keys: &[u64],
    ) -> Result<Option<Vec<std::ops::Range<usize>>>, SinkError> {
        Ok(None)
    }

    /// How this clock's update of `keys` of `table` would go out (frames' blocks and the chain
    /// of each, see `ps_proto::push_plan`), for a session whose engine compresses its delta
    /// itself: it then hands one payload per block to [`DeltaSink::encoded`]. `None` where the
    /// sink cannot say (the session then writes rows as usual).
    fn push_plan(&mut self, _table: u32, _keys: &[u64]) -> Result<Option<PushPlan>, SinkError> {
        Ok(None)
    }
}

/// The final figures of one worker.
#[derive(Debug, Clone, Default)]
pub struct Outcome<F, X> {
    /// Added up over workers.
    pub sums: F,
    /// Reported by some workers (e.g. worker 0's hash of the model); the lowest worker id wins.
    pub facts: X,
}

/// A worker's part of a job: created once with its static data and local state, it lives for
/// the whole job. Every method returns a typed error and changes nothing it cannot finish.
pub trait Session<A: App + ?Sized>: Send {
    /// The rows clock `clock` reads, per table (none is fine). May be called again for the same
    /// clock, and for clock `c + 1` after `run_clock(c)` (to prefetch): it must give the same
    /// answer each time.
    fn reads(&mut self, clock: u64) -> Result<Vec<TableRows>, AppError>;

    /// Rows of one table arrived: `keys` are `rows[first..first + keys.len()]` of the table's
    /// entry in the last `reads` (or `final_reads`), `values` their rows, row-major. Runs arrive
    /// in any order. Wrong keys, widths or counts are an error.
    fn load(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        values: &[f32],
    ) -> Result<(), AppError>;

    /// Whether runs of `table` may arrive by their entries ([`Session::load_sparse`]) rather than
    /// dense: worth it for wide rows that are mostly zero (LDA's word-topic counts at large K),
    /// which then never exist dense on the way in. No table, by default.
    fn takes_sparse(&self, _table: u32) -> bool {
        false
    }

    /// Rows of a table [`Session::takes_sparse`] names arrived by their entries: as
    /// [`Session::load`] of `rows`' dense form (every value not among the entries is `+0.0`),
    /// which is what this default does. Wrong keys, widths, counts or a malformed run are an
    /// error.
    fn load_sparse(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        rows: SparseRows<'_>,
    ) -> Result<(), AppError> {
        rows.check().map_err(|e| AppError::Rows {
            table,
            reason: e.to_string(),
        })?;
        self.load(table, first, keys, &rows.to_dense())
    }

    /// Runs clock `clock` on the rows loaded (an error if some are missing), writing its update
    /// into `out`, and returns the clock's figures.
    fn run_clock(&mut self, clock: u64, out: &mut dyn DeltaSink) -> Result<A::Clock, AppError>;

    /// Every shard now holds this worker's first `clocks` clocks for good (its checkpoints
    /// cover them, or without checkpoints it applied them): a worker that may rejoin
    /// ([`WorkerContext::rejoin`]) need not keep what replaying them would take, since the
    /// shards drop them anyway. Called after each clock, with a count that never falls; nothing
    /// to do by default.
    fn durable(&mut self, _clocks: u64) -> Result<(), AppError> {
        Ok(())
    }

    /// The rows the final evaluation reads; they are loaded complete through every clock of
    /// every worker.
    fn final_reads(&mut self) -> Result<Vec<TableRows>, AppError>;

    /// The final figures, on the rows of `final_reads`.
    fn evaluate(&mut self) -> Result<Outcome<A::Final, A::Facts>, AppError>;
}

/// A model; see the module docs.
pub trait App: Send + Sync + 'static {
    /// Its own command-line flags.
    type Args: clap::Args + clap::FromArgMatches + std::fmt::Debug;
    /// What every worker's session is created from (travels as JSON).
    type Settings: Serialize + DeserializeOwned + Clone;
    /// Per-clock figures.
    type Clock: Figures;
    /// Final figures.
    type Final: Figures;
    /// Final facts (not added up).
    type Facts: Serialize + DeserializeOwned + Default + Clone + std::fmt::Debug + Send;

    /// The name `--app` selects it by.
    fn name(&self) -> &'static str;

    /// One line for `--help`.
    fn about(&self) -> &'static str;

    /// Checks the flags and loads what the coordinator must know (table sizes, facts).
    fn plan(&self, args: &Self::Args, job: &JobCommon) -> Result<Plan<Self::Settings>, AppError>;

    /// The session of one worker.
    fn session(
        &self,
        settings: Self::Settings,
        ctx: &WorkerContext<'_>,
    ) -> Result<Box<dyn Session<Self>>, AppError>;

    /// The app's part of a clock's line (e.g. `train_rmse 0.1234`).
    fn clock_line(&self, clock: &Self::Clock) -> String;

    /// The clock's quality figures by name (e.g. `("test_rmse", None)` on a clock that does not
    /// measure it), the same names on every clock: the columns of a per-clock log.
    fn clock_metrics(&self, clock: &Self::Clock) -> Vec<(&'static str, Option<f64>)> {
        let _ = clock;
        Vec::new()
    }

    /// The quality bar a benchmark sweep times by default (on the built-in data), if any.
    fn target(&self) -> Option<Target> {
        None
    }

    /// The app's fields of the summary line.
    fn summary(&self, job: &JobView<'_, Self>) -> serde_json::Map<String, serde_json::Value>;
}

/// A finished job as an app reads it for its summary.
pub struct JobView<'a, A: App + ?Sized> {
    /// The first clocks' summaries (up to `ps_proto::report::KEPT_CLOCKS`) and the app's
    /// figures of each, in clock order.
    pub clocks: Vec<(&'a ClockSummary, A::Clock)>,
    /// Every clock added up, and the app's figures of that sum.
    pub totals: (&'a ClockSummary, A::Clock),
    /// Clocks the job ran.
    pub clock_count: u64,
    /// The final figures added up over workers.
    pub sums: A::Final,
    pub facts: A::Facts,
    pub wall_s: f64,
}

impl<A: App + ?Sized> JobView<'_, A> {
    /// Compute seconds per worker, summed over clocks.
    pub fn compute_s(&self) -> f64 {
        self.totals.0.compute_s
    }

    /// `count` over the compute time: a cluster rate (all workers' work over the per-worker
    /// compute time).
    pub fn rate(&self, count: f64) -> Option<f64> {
        let s = self.compute_s();
        (s > 0.0).then(|| count / s)
    }
}

/// Builds the app's view of a finished job.
pub fn job_view<'a, A: App + ?Sized>(r: &'a JobResult) -> Result<JobView<'a, A>, AppError> {
    use ps_proto::report::{from_facts, from_sums};
    let clocks = r
        .clocks
        .iter()
        .map(|c| Ok((c, from_sums(&c.sums)?)))
        .collect::<Result<Vec<_>, ps_proto::ProtoError>>()
        .map_err(figures_err)?;
    Ok(JobView {
        clocks,
        totals: (&r.totals, from_sums(&r.totals.sums).map_err(figures_err)?),
        clock_count: r.clock_count,
        sums: from_sums(&r.sums).map_err(figures_err)?,
        facts: from_facts(&r.facts).map_err(figures_err)?,
        wall_s: r.wall_s,
    })
}

/// Figures that did not convert to or from their struct.
pub(crate) fn figures_err(e: ps_proto::ProtoError) -> AppError {
    AppError::Figures(e.to_string())
}

/// What a session was asked to read and what has arrived: every session checks the rows it is
/// fed through one of these.
#[derive(Debug, Default)]
pub struct Inbox {
    /// The clock the reads are for; `None` for the final read.
    clock: Option<u64>,
    reads: Vec<TableRows>,
    got: Vec<Vec<bool>>,
    count: Vec<usize>,
}

impl Inbox {
    /// Starts a new read (the final one): nothing has arrived.
    pub fn expect(&mut self, reads: Vec<TableRows>) {
        self.got = reads.iter().map(|r| vec![false; r.rows.len()]).collect();
        self.count = vec![0; reads.len()];
        self.reads = reads;
        self.clock = None;
    }

    /// Starts clock `clock`'s read.
    pub fn expect_clock(&mut self, clock: u64, reads: Vec<TableRows>) {
        self.expect(reads);
        self.clock = Some(clock);
    }

    /// Whether clock `clock`'s read has started (a driver asks a clock's reads once to
    /// prefetch and again to read: the second time must not start over).
    pub fn planned(&self, clock: u64) -> bool {
        self.clock == Some(clock)
    }

    /// The clock of the current read; `None` for the final one.
    pub fn clock(&self) -> Option<u64> {
        self.clock
    }

    /// Clock `clock` may run: its read started and every row arrived.
    pub fn ready(&self, clock: u64) -> Result<(), AppError> {
        if !self.planned(clock) {
            return Err(AppError::Rows {
                table: self.reads.first().map_or(0, |r| r.table),
                reason: format!("clock {clock} ran before its rows were read"),
            });
        }
        self.complete()
    }

    pub fn reads(&self) -> &[TableRows] {
        &self.reads
    }

    /// Checks a run of rows of `table` against the read (the rows asked for, each once, and
    /// `width` values a row) and marks it arrived. Returns the read's index.
    pub fn accept(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        values: &[f32],
        width: usize,
    ) -> Result<usize, AppError> {
        let shape = (values.len() != keys.len() * width).then(|| {
            format!(
                "{} values for {} rows of width {width}",
                values.len(),
                keys.len()
            )
        });
        self.mark(table, first, keys, shape)
    }

    /// [`Inbox::accept`] for a run that arrived by its entries ([`Session::load_sparse`]):
    /// `width` values a row, as many rows as keys, a well-formed run.
    pub fn accept_sparse(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        rows: SparseRows<'_>,
        width: usize,
    ) -> Result<usize, AppError> {
        let shape = if rows.width != width || rows.rows() != keys.len() {
            Some(format!(
                "{} rows of width {} for {} rows of width {width}",
                rows.rows(),
                rows.width,
                keys.len()
            ))
        } else {
            rows.check().err().map(|e| e.to_string())
        };
        self.mark(table, first, keys, shape)
    }

    /// Marks `keys` (at `first` of the read of `table`) arrived, unless they are not the rows
    /// asked for, arrived before, or `shape` says what is wrong with their values.
    fn mark(
        &mut self,
        table: u32,
        first: usize,
        keys: &[u64],
        shape: Option<String>,
    ) -> Result<usize, AppError> {
        let bad = |reason: String| AppError::Rows { table, reason };
        let i = self
            .reads
            .iter()
            .position(|r| r.table == table)
            .ok_or_else(|| bad("rows of a table this read does not ask for".into()))?;
        let asked = &self.reads[i].rows;
        let end = first
            .checked_add(keys.len())
            .filter(|&e| e <= asked.len())
            .ok_or_else(|| {
                bad(format!(
                    "rows {first}..{} of a read of {} rows",
                    first.saturating_add(keys.len()),
                    asked.len()
                ))
            })?;
        if asked[first..end] != *keys {
            return Err(bad(format!(
                "rows {first}..{end} are not the rows asked for"
            )));
        }
        if let Some(reason) = shape {
            return Err(bad(reason));
        }
        if self.got[i][first..end].iter().any(|&g| g) {
            return Err(bad(format!("rows {first}..{end} arrived twice")));
        }
        self.got[i][first..end].iter_mut().for_each(|g| *g = true);
        self.count[i] += keys.len();
        Ok(i)
    }

    /// Every row of the read arrived.
    pub fn complete(&self) -> Result<(), AppError> {
        for (r, &n) in self.reads.iter().zip(&self.count) {
            if n != r.rows.len() {
                return Err(AppError::Rows {
                    table: r.table,
                    reason: format!("{n} of {} rows arrived before the clock ran", r.rows.len()),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of width 3, zero, handed out once.
    struct Rows(Vec<f32>);

    impl DeltaSink for Rows {
        fn rows(&mut self, _table: u32, keys: &[u64]) -> Result<&mut [f32], SinkError> {
            self.0 = vec![0.0; keys.len() * 3];
            Ok(&mut self.0)
        }

        fn encoded(&mut self, table: u32, _: &[u64], _: u16, _: Vec<u8>) -> Result<(), SinkError> {
            Err(SinkError {
                table,
                reason: "not here".into(),
            })
        }
    }

    #[test]
    fn entries_by_default_are_written_into_the_rows_or_refused_whole() {
        let mut s = Rows(Vec::new());
        s.entries(1, vec![4, 9], vec![1, 5], vec![2.0, -1.0])
            .unwrap();
        assert_eq!(s.0, vec![0.0, 2.0, 0.0, 0.0, 0.0, -1.0]);
        for (at, values, why) in [
            (&[1u64, 1][..], &[1.0f32, 1.0][..], "strictly increasing"),
            (&[6][..], &[1.0][..], "outside"),
            (&[0][..], &[][..], "1 positions but 0 values"),
        ] {
            let mut s = Rows(Vec::new());
            let e = s
                .entries(1, vec![4, 9], at.to_vec(), values.to_vec())
                .unwrap_err();
            assert!(e.reason.contains(why), "{}", e.reason);
            assert!(s.0.iter().all(|&v| v == 0.0));
        }
    }
}
