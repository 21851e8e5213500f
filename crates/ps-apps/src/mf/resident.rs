//! An MF engine that keeps a worker's state where it computes: the trait a device engine (CUDA)
//! implements, and its CPU oracle [`HostResident`].
//!
//! A resident engine receives the worker's training ratings (arranged by a [`WaveSchedule`]),
//! its held-out ratings and its initial user rows once ([`MfResident::setup`]), and keeps them,
//! and a dense cache of the item rows, for the whole job. Per clock the session says which rows
//! it reads ([`MfResident::expect_items`]: a device keeps the list and copies it again only when
//! it changes), hands it the pulled rows as each shard's reply arrives
//! ([`MfResident::load_items`], by position in that list), runs the clock's
//! waves ([`MfResident::run_waves`]) and takes back only the rows the clock changed
//! ([`MfResident::item_rows`]): on a GPU, the pulled rows in and the changed rows out are all
//! that cross PCIe. Held-out errors are computed where the state is
//! ([`MfResident::squared_error`]).
//!
//! [`HostResident`] runs the same waves one block after another on the host with a
//! [`MfCompute`] engine: what a device's concurrent lanes must reproduce (see [`super::waves`]),
//! and the engine the session's resident path is tested with where there is no GPU.

use super::compute::{squared_error_in, Layout, MfCompute};
use super::data::Rating;
use super::factors::Factors;
use super::waves::WaveSchedule;
use crate::error::ComputeError;

/// What a resident engine is set up with, once per worker.
#[derive(Debug, Clone, Copy)]
pub struct ResidentSetup<'a> {
    pub layout: Layout,
    /// The worker's training ratings, arranged by `schedule` ([`WaveSchedule::arrange`]).
    pub train: &'a [Rating],
    pub schedule: &'a WaveSchedule,
    /// Held-out ratings whose user and item are both known.
    pub test: &'a [Rating],
    /// Initial user rows, `local users x layout.width()`.
    pub users: &'a [f32],
    /// Rows of the item cache.
    pub num_items: usize,
    /// How the engine stores user and item rows: f16 rounds every stored value (the initial
    /// user rows, each loaded item row, both rows after each SGD step; see [`Factors`]).
    pub factors: Factors,
}

/// Which ratings a squared error is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

pub use crate::app::Traffic;

/// An MF engine whose worker state stays resident between clocks (see the module docs).
pub trait MfResident: Send {
    /// A short name for logs (`cuda-waves`, `cpu-waves`).
    fn name(&self) -> &'static str;

    /// How many lanes run at once without conflicts: the most bands a schedule should have.
    fn lanes(&self) -> usize;

    /// Uploads the worker's ratings and user rows and sizes the item cache; called once.
    fn setup(&mut self, s: &ResidentSetup<'_>) -> Result<(), ComputeError>;

    /// The item rows the next loads fill, in the order of the read (sorted, distinct).
    fn expect_items(&mut self, keys: &[u64]) -> Result<(), ComputeError>;

    /// Writes pulled rows into the item cache: `values` holds `n x width` values, the rows of
    /// the expected keys `[first, first + n)`.
    fn load_items(&mut self, first: usize, values: &[f32]) -> Result<(), ComputeError>;

    /// Runs the waves `shifts` of the schedule in order (one SGD step per rating); returns the
    /// sum of squared errors measured before each update.
    fn run_waves(&mut self, shifts: &[u32], lr: f32, reg: f32) -> Result<f64, ComputeError>;

    /// Copies the cached rows `keys` into `out` (`keys.len() x width`); a device keeps the last
    /// list of keys and copies it again only when it changes.
    fn item_rows(&mut self, keys: &[u64], out: &mut [f32]) -> Result<(), ComputeError>;

    /// Copies the user rows `users` (local indices) into `out` (`users.len() x width`).
    fn user_rows(&mut self, users: &[u32], out: &mut [f32]) -> Result<(), ComputeError>;

    /// Sum of squared errors of the training or held-out ratings under the current rows.
    fn squared_error(&mut self, which: Split) -> Result<f64, ComputeError>;

    /// Totals since the engine was made.
    fn traffic(&self) -> Traffic;
}

/// The CPU oracle of a resident engine: the waves run block by block on one thread through a
/// [`MfCompute`] engine. Nothing crosses a bus, so [`Traffic`] stays zero.
pub struct HostResident {
    engine: Box<dyn MfCompute + Send>,
    lanes: usize,
    layout: Layout,
    factors: Factors,
    train: Vec<Rating>,
    test: Vec<Rating>,
    schedule: Option<WaveSchedule>,
    users: Vec<f32>,
    items: Vec<f32>,
    expected: Vec<u64>,
}

impl HostResident {
    /// Runs `engine`, scheduling for `lanes` lanes.
    pub fn new(engine: Box<dyn MfCompute + Send>, lanes: usize) -> HostResident {
        HostResident {
            engine,
            lanes: lanes.max(1),
            layout: Layout::plain(0),
            factors: Factors::F32,
            train: Vec::new(),
            test: Vec::new(),
            schedule: None,
            users: Vec::new(),
            items: Vec::new(),
            expected: Vec::new(),
        }
    }

    fn rows<T: Copy + Into<u64>>(
        table: &[f32],
        keys: &[T],
        w: usize,
        out: &mut [f32],
    ) -> Result<(), ComputeError> {
        for (o, &k) in out.chunks_exact_mut(w).zip(keys) {
            let at = k.into() as usize * w;
            let row = table.get(at..at + w).ok_or_else(|| ComputeError {
                engine: "cpu-waves",
                message: format!("row {} is outside the table", k.into()),
            })?;
            o.copy_from_slice(row);
        }
        Ok(())
    }
}

impl MfResident for HostResident {
    fn name(&self) -> &'static str {
        "cpu-waves"
    }

    fn lanes(&self) -> usize {
        self.lanes
    }

    fn setup(&mut self, s: &ResidentSetup<'_>) -> Result<(), ComputeError> {
        self.layout = s.layout;
        self.train = s.train.to_vec();
        self.test = s.test.to_vec();
        self.schedule = Some(s.schedule.clone());
        self.factors = s.factors;
        self.users = s.users.to_vec();
        self.factors.round(&mut self.users);
        self.items = vec![0.0; s.num_items * s.layout.width()];
        Ok(())
    }

    fn expect_items(&mut self, keys: &[u64]) -> Result<(), ComputeError> {
        self.expected = keys.to_vec();
        Ok(())
    }

    fn load_items(&mut self, first: usize, values: &[f32]) -> Result<(), ComputeError> {
        let w = self.layout.width().max(1);
        let bad = |message: String| ComputeError {
            engine: "cpu-waves",
            message,
        };
        let n = values.len() / w;
        let keys = self
            .expected
            .get(first..first + n)
            .filter(|_| values.len().is_multiple_of(w))
            .ok_or_else(|| {
                bad(format!(
                    "{n} rows at {first} of {} expected",
                    self.expected.len()
                ))
            })?;
        for (&k, row) in keys.iter().zip(values.chunks_exact(w)) {
            let at = k as usize * w;
            let cached = self
                .items
                .get_mut(at..at + w)
                .ok_or_else(|| bad(format!("item {k} is outside the cache")))?;
            cached.copy_from_slice(row);
            self.factors.round(cached);
        }
        Ok(())
    }

    fn run_waves(&mut self, shifts: &[u32], lr: f32, reg: f32) -> Result<f64, ComputeError> {
        let Some(schedule) = &self.schedule else {
            return Ok(0.0);
        };
        let mut sse = 0.0;
        for (lo, hi) in schedule.runs(shifts) {
            sse += self.factors.sgd_pass(
                self.engine.as_mut(),
                &self.train[lo..hi],
                &mut self.users,
                &mut self.items,
                self.layout,
                lr,
                reg,
            )?;
        }
        Ok(sse)
    }

    fn item_rows(&mut self, keys: &[u64], out: &mut [f32]) -> Result<(), ComputeError> {
        Self::rows(&self.items, keys, self.layout.width(), out)
    }

    fn user_rows(&mut self, users: &[u32], out: &mut [f32]) -> Result<(), ComputeError> {
        Self::rows(&self.users, users, self.layout.width(), out)
    }

    fn squared_error(&mut self, which: Split) -> Result<f64, ComputeError> {
        let ratings = match which {
            Split::Train => &self.train,
            Split::Test => &self.test,
        };
        Ok(squared_error_in(self.layout, ratings, &self.users, &self.items).0)
    }

    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
}
