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
//! that cross PCIe. With a lossy push codec it runs (a dense lossy format, or one top-k or
//! energy stage in any value format but the integer ones) the engine encodes the changed rows'
//! delta itself ([`MfResident::keep_before`], [`MfResident::delta_encoded`]) and only the
//! payloads come out, the bytes the worker library would make; what it holds back stays in it,
//! row by row, and shows in the rows it loads, until [`MfResident::drop_unsent`] (an epoch
//! split over clocks asks which rows still hold something, [`MfResident::held_rows`]; an f32
//! selection's last clock takes its rows plain, residual included,
//! [`MfResident::delta_with_held`]). Held-out errors are
//! computed where the state is ([`MfResident::squared_error`]).
//!
//! [`HostResident`] runs the same waves one block after another on the host with a
//! [`MfCompute`] engine: what a device's concurrent lanes must reproduce (see [`super::waves`]),
//! and the engine the session's resident path is tested with where there is no GPU. It counts
//! the bytes the CUDA engine would copy for the same calls, and its own SGD and error passes as
//! the device's compute, so that on a machine without a GPU a `cpu-resident` job's compute less
//! its device time is the host's own work around the engine.

use super::compute::{squared_error_in, Layout, MfCompute};
use super::data::Rating;
use super::factors::Factors;
use super::waves::WaveSchedule;
use crate::app::device_codec::{
    check_keyed, DeviceChain, KeyedBlock, PulledRows, ResidualKeeper, TopKCopies,
};
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

    /// Whether this engine encodes its own pushes with `chain` (see
    /// [`crate::app::device_codec`]; the MF engines: [`mf_engine_encodes`]). Default: no.
    fn encodes(&self, _chain: DeviceChain) -> bool {
        false
    }

    /// Keeps the cached rows `keys` as they are now (the clock's loads done, its waves not yet
    /// run): [`MfResident::delta_encoded`] or [`MfResident::delta_with_held`] (once) takes the
    /// clock's delta against them.
    fn keep_before(&mut self, _keys: &[u64]) -> Result<(), ComputeError> {
        Err(ComputeError {
            engine: self.name(),
            message: "this engine does not encode its pushes".into(),
        })
    }

    /// The rows `keys` (those of [`MfResident::keep_before`]) less their kept values, plus what
    /// earlier clocks held back of them, encoded with `chain` block by block (`blocks`: ranges
    /// of positions in `keys`, as the worker library's push plan cuts them, each with its top-k
    /// count): one payload per block into `out`, the bytes the library's encoder makes of the
    /// same values. What is not
    /// sent stays in the engine, row by row, and is added to every such row a later load
    /// writes (a worker reads what it has not sent yet) until [`MfResident::drop_unsent`].
    fn delta_encoded(
        &mut self,
        _keys: &[u64],
        _chain: DeviceChain,
        _blocks: &[KeyedBlock],
        _out: &mut Vec<Vec<u8>>,
    ) -> Result<(), ComputeError> {
        Err(ComputeError {
            engine: self.name(),
            message: "this engine does not encode its pushes".into(),
        })
    }

    /// The rows `keys` (those of [`MfResident::keep_before`]) less their kept values, plus
    /// what earlier clocks held back of them, as plain values into `out` (`(0 + delta) +
    /// residual`, as the worker library forms a row it flushes), the rows' residual then zero:
    /// the last clock of a selection in f32, which sends plain rows the library passes on as
    /// they are. Once per [`MfResident::keep_before`] (a device builds the rows where it kept
    /// them).
    fn delta_with_held(&mut self, _keys: &[u64], _out: &mut [f32]) -> Result<(), ComputeError> {
        Err(ComputeError {
            engine: self.name(),
            message: "this engine does not encode its pushes".into(),
        })
    }

    /// Which of the rows `keys` (those of the last [`MfResident::delta_encoded`], in that
    /// order) still hold back something, a value other than zero, as the worker library keeps
    /// a residual row: an epoch split over clocks pushes them again with the next clock's rows.
    /// A device sends back a bit a row ([`held_bytes`]).
    fn held_rows(&mut self, _keys: &[u64]) -> Result<Vec<u64>, ComputeError> {
        Err(ComputeError {
            engine: self.name(),
            message: "this engine does not encode its pushes".into(),
        })
    }

    /// Forgets what [`MfResident::delta_encoded`] held back and returns the sum of its
    /// magnitudes (the job has ended; see the worker library's `drop_unsent`). Default: none.
    fn drop_unsent(&mut self) -> Result<f64, ComputeError> {
        Ok(0.0)
    }

    /// Totals since the engine was made.
    fn traffic(&self) -> Traffic;
}

/// Bytes a device copies back to say which of `rows` pushed rows hold something back
/// ([`MfResident::held_rows`]): a bit a row, in whole 4-byte words.
pub fn held_bytes(rows: usize) -> u64 {
    4 * rows.div_ceil(32) as u64
}

/// Whether an MF engine encodes its pushes with `chain`: every chain a device runs. (The last
/// clock of a selection in f32 flushes plain rows, which no engine encodes: the engine hands
/// its delta and what it holds back to the worker library as plain rows then,
/// [`MfResident::delta_with_held`].)
pub fn mf_engine_encodes(_chain: DeviceChain) -> bool {
    true
}

/// The CPU oracle of a resident engine: the waves run block by block on one thread through a
/// [`MfCompute`] engine. Nothing crosses a bus, but its [`Traffic`] counts what the CUDA engine
/// copies for the same calls (ratings, block starts and user rows once; a key list when it
/// changes; pulled rows in; the waves' shifts in; gathered rows, the stall flag and each sum of
/// squared errors out), and the time of its waves and error passes as the device's compute.
/// Copy times stay zero.
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
    /// The last key lists of item and user gathers (a device copies a list when it changes).
    gathered: Vec<u64>,
    gathered_users: Vec<u64>,
    /// The own encoding's key list (`keep_before`), the rows kept then, and what was not sent,
    /// item by item (from the first encoded push on).
    pushed: Vec<u64>,
    before: Vec<f32>,
    kept: Option<ResidualKeeper>,
    /// The copies of the device's top-k encoder (one for all blocks, as the engine has).
    topk_copies: TopKCopies,
    traffic: Traffic,
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
            gathered: Vec::new(),
            gathered_users: Vec::new(),
            pushed: Vec::new(),
            before: Vec::new(),
            kept: None,
            topk_copies: TopKCopies::new(0),
            traffic: Traffic::default(),
        }
    }

    /// Counts a key list sent to a device that keeps `last`: its u32 keys, when it changed.
    fn key_list(last: &mut Vec<u64>, keys: &[u64], traffic: &mut Traffic) {
        if last.as_slice() != keys {
            traffic.h2d_bytes += 4 * keys.len() as u64;
            last.clear();
            last.extend_from_slice(keys);
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
        // Key lists of an earlier set-up are not kept (the device engine sends them again).
        self.expected.clear();
        self.gathered.clear();
        self.gathered_users.clear();
        self.pushed.clear();
        self.kept = None;
        self.topk_copies = TopKCopies::new(0);
        // Users, items and values of both sets (u32, u32, f32), the block starts (u32), the
        // user rows as stored.
        let ratings = (s.train.len() + s.test.len()) as u64;
        self.traffic.h2d_bytes += 12 * ratings
            + 4 * s.schedule.starts().len() as u64
            + (s.users.len() * s.factors.bytes()) as u64;
        Ok(())
    }

    fn expect_items(&mut self, keys: &[u64]) -> Result<(), ComputeError> {
        Self::key_list(&mut self.expected, keys, &mut self.traffic);
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
        // What this engine has not sent yet shows in what it reads (rows holding some).
        let mut read = values.to_vec();
        if let Some(k) = &mut self.kept {
            k.add_keyed(0, keys, &mut read)?;
        }
        for (&k, row) in keys.iter().zip(read.chunks_exact(w)) {
            let at = k as usize * w;
            let cached = self
                .items
                .get_mut(at..at + w)
                .ok_or_else(|| bad(format!("item {k} is outside the cache")))?;
            cached.copy_from_slice(row);
            self.factors.round(cached);
        }
        // Rows of f16 or bf16 values (a 16-bit pull codec's) cross in 16 bits, rows of codes
        // (a q8, q4, q2 or sign pull codec's) as codes, and widen on the device.
        self.traffic.h2d_bytes += PulledRows::of(values).bytes(values.len());
        Ok(())
    }

    fn run_waves(&mut self, shifts: &[u32], lr: f32, reg: f32) -> Result<f64, ComputeError> {
        let Some(schedule) = &self.schedule else {
            return Ok(0.0);
        };
        if shifts.is_empty() || self.train.is_empty() {
            return Ok(0.0);
        }
        // The shifts in; the stall flag and the sum out.
        self.traffic.h2d_bytes += 4 * shifts.len() as u64;
        self.traffic.d2h_bytes += 4 + 8;
        self.traffic.timed(|| {
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
        })
    }

    fn item_rows(&mut self, keys: &[u64], out: &mut [f32]) -> Result<(), ComputeError> {
        if !keys.is_empty() {
            Self::key_list(&mut self.gathered, keys, &mut self.traffic);
            self.traffic.d2h_bytes += 4 * out.len() as u64;
        }
        Self::rows(&self.items, keys, self.layout.width(), out)
    }

    fn user_rows(&mut self, users: &[u32], out: &mut [f32]) -> Result<(), ComputeError> {
        if !users.is_empty() {
            let keys: Vec<u64> = users.iter().map(|&u| u64::from(u)).collect();
            Self::key_list(&mut self.gathered_users, &keys, &mut self.traffic);
            self.traffic.d2h_bytes += 4 * out.len() as u64;
        }
        Self::rows(&self.users, users, self.layout.width(), out)
    }

    fn squared_error(&mut self, which: Split) -> Result<f64, ComputeError> {
        let ratings = match which {
            Split::Train => &self.train,
            Split::Test => &self.test,
        };
        if ratings.is_empty() {
            return Ok(0.0);
        }
        self.traffic.d2h_bytes += 8;
        Ok(self
            .traffic
            .timed(|| squared_error_in(self.layout, ratings, &self.users, &self.items).0))
    }

    fn encodes(&self, chain: DeviceChain) -> bool {
        mf_engine_encodes(chain)
    }

    fn keep_before(&mut self, keys: &[u64]) -> Result<(), ComputeError> {
        let w = self.layout.width();
        let mut before = vec![0.0; keys.len() * w];
        Self::rows(&self.items, keys, w, &mut before)?;
        self.before = before;
        // The device gathers the rows by its own list of the pushed keys (checked first).
        Self::key_list(&mut self.pushed, keys, &mut self.traffic);
        Ok(())
    }

    fn delta_encoded(
        &mut self,
        keys: &[u64],
        chain: DeviceChain,
        blocks: &[KeyedBlock],
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), ComputeError> {
        let bad = |message: String| ComputeError {
            engine: "cpu-waves",
            message,
        };
        if keys != self.pushed.as_slice() {
            return Err(bad(
                "the pushed rows are not the rows kept before the waves".into(),
            ));
        }
        // The plan is checked whole before anything changes.
        check_keyed(blocks, keys.len()).map_err(bad)?;
        let w = self.layout.width();
        let mut delta = vec![0.0; keys.len() * w];
        Self::rows(&self.items, keys, w, &mut delta)?;
        delta
            .iter_mut()
            .zip(&self.before)
            .for_each(|(d, b)| *d -= b);
        let items = self.items.len() / w.max(1);
        let kept = self
            .kept
            .get_or_insert_with(|| ResidualKeeper::new(&[(items, w)]));
        let (mut moved_in, mut moved_out) = (0, 0);
        for b in blocks {
            let rows = &keys[b.rows.clone()];
            let part = &delta[b.rows.start * w..b.rows.end * w];
            let (bytes_in, bytes_out) =
                kept.keyed_copies(&mut self.topk_copies, (0, rows), chain, b.k, part)?;
            let payload = self
                .traffic
                .timed(|| kept.encode_keyed(0, rows, chain, b.k, part))?;
            moved_in += bytes_in;
            moved_out += bytes_out;
            out.push(payload);
        }
        self.traffic.h2d_bytes += moved_in;
        self.traffic.d2h_bytes += moved_out;
        Ok(())
    }

    fn delta_with_held(&mut self, keys: &[u64], out: &mut [f32]) -> Result<(), ComputeError> {
        let w = self.layout.width();
        if keys != self.pushed.as_slice() || out.len() != keys.len() * w {
            return Err(ComputeError {
                engine: "cpu-waves",
                message: format!(
                    "{} values for {} rows, which must be the rows last kept",
                    out.len(),
                    keys.len()
                ),
            });
        }
        Self::rows(&self.items, keys, w, out)?;
        out.iter_mut()
            .zip(&self.before)
            .for_each(|(d, b)| *d = 0.0 + (*d - b));
        if let Some(kept) = &mut self.kept {
            kept.take_keyed(0, keys, out)?;
        }
        // The rows come back as the library's plain delta would.
        self.traffic.d2h_bytes += 4 * out.len() as u64;
        Ok(())
    }

    fn held_rows(&mut self, keys: &[u64]) -> Result<Vec<u64>, ComputeError> {
        if keys != self.pushed.as_slice() {
            return Err(ComputeError {
                engine: "cpu-waves",
                message: "the rows asked about are not the rows last pushed".into(),
            });
        }
        // Nothing was ever encoded here: nothing is held, and nothing to copy.
        let Some(kept) = &self.kept else {
            return Ok(Vec::new());
        };
        self.traffic.d2h_bytes += held_bytes(keys.len());
        kept.held_keyed(0, keys)
    }

    fn drop_unsent(&mut self) -> Result<f64, ComputeError> {
        let Some(kept) = self.kept.take() else {
            return Ok(0.0);
        };
        // The device sums its residual table after copying it back.
        self.traffic.d2h_bytes += 4 * self.items.len() as u64;
        Ok(kept.l1())
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

#[cfg(test)]
mod tests;
