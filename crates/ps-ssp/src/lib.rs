//! Stale synchronous parallel (SSP) consistency logic for the parameter server.
//!
//! This crate holds the *pure* bookkeeping behind the consistency contract:
//!
//! * [`Staleness`], [`is_fresh`], [`Reads`] and [`serves_read`]: which minimum clock a read at
//!   a given clock needs, and which cached rows serve it;
//! * [`WorkerClock`]: a worker's own clock;
//! * [`ShardClock`]: a shard's per-worker clock vector plus the ordering of incoming update
//!   batches (per-worker clock order, and the fixed worker-id order of deterministic / BSP mode);
//! * [`ParkedReads`]: reads waiting until the shard's min clock reaches what they need.
//!
//! The crate must not depend on any I/O, async runtime or clock (time) source: it is plain data
//! structures driven by the caller, so that it can be tested exhaustively with deterministic
//! schedules. Batches and parked items are opaque type parameters.
//!
//! # The contract
//!
//! Worker `p` has clock `c_p`, starting at 0. Ending a clock ([`WorkerClock::tick`]) makes
//! `c_p` become `c_p + 1`; updates issued during clock `c` are tagged `c`. A read by `p` at clock
//! `c` of a table with staleness `s` must include every update tagged `<= c - s - 1` from every
//! worker, i.e. it may proceed only once the minimum over workers of their completed clocks is
//! `>= c - s` (saturating at 0; always satisfied for [`Staleness::Unbounded`]).
//!
//! Each worker must submit one (possibly empty) batch per clock to every shard, otherwise the
//! shard's clock vector cannot advance.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;

/// Errors of the SSP bookkeeping. An operation that returns an error changes nothing.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SspError {
    /// A staleness string could not be parsed.
    #[error("invalid staleness {0:?}: expected a non-negative integer or \"inf\"/\"unbounded\"/\"async\"")]
    BadStaleness(String),
    /// The worker id is not below the number of workers.
    #[error("unknown worker {worker}: the shard knows {num_workers} workers")]
    UnknownWorker {
        /// The offending worker id.
        worker: u32,
        /// The number of workers the shard was created for.
        num_workers: u32,
    },
    /// The batch's clock was already applied for this worker.
    #[error("stale clock {clock} from worker {worker}: the shard has already applied its clocks 0..{completed}")]
    StaleClock {
        /// The worker that sent the batch.
        worker: u32,
        /// The clock of the batch.
        clock: u64,
        /// The number of clocks of this worker the shard has already applied.
        completed: u64,
    },
    /// A batch for this (worker, clock) is already waiting to be applied.
    #[error("duplicate batch for clock {clock} from worker {worker}: one is already pending")]
    DuplicateClock {
        /// The worker that sent the batch.
        worker: u32,
        /// The clock of the batch.
        clock: u64,
    },
    /// The worker was evicted from the shard's clock vector.
    #[error("worker {worker} was evicted")]
    EvictedWorker {
        /// The evicted worker id.
        worker: u32,
    },
    /// A clock vector given to [`ShardClock::restored`] is not one a shard can have.
    #[error("cannot restore the clock vector: {0}")]
    BadRestore(String),
}

/// How many clocks a reader may run ahead of the slowest worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Staleness {
    /// A read at clock `c` needs every update tagged `<= c - s - 1` (0 = BSP).
    Bounded(u64),
    /// No guarantee at all (fully asynchronous).
    Unbounded,
}

impl Staleness {
    /// Bulk synchronous parallel: staleness 0.
    pub const BSP: Staleness = Staleness::Bounded(0);

    /// Parses "0", "3", "inf" / "unbounded" / "async" (case-insensitive, surrounding whitespace
    /// ignored). Errors on anything else.
    pub fn parse(s: &str) -> Result<Staleness, SspError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("inf")
            || t.eq_ignore_ascii_case("unbounded")
            || t.eq_ignore_ascii_case("async")
        {
            return Ok(Staleness::Unbounded);
        }
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SspError::BadStaleness(s.to_string()));
        }
        t.parse::<u64>()
            .map(Staleness::Bounded)
            .map_err(|_| SspError::BadStaleness(s.to_string()))
    }

    /// Minimum `completed` clock the slowest worker must have for a read at `clock`:
    /// `clock - s` saturating at 0; always 0 for [`Staleness::Unbounded`].
    pub fn required_min_clock(&self, clock: u64) -> u64 {
        match *self {
            Staleness::Bounded(s) => clock.saturating_sub(s),
            Staleness::Unbounded => 0,
        }
    }

    /// True for [`Staleness::Unbounded`].
    pub fn is_unbounded(&self) -> bool {
        matches!(self, Staleness::Unbounded)
    }
}

impl Default for Staleness {
    /// BSP (staleness 0).
    fn default() -> Self {
        Staleness::BSP
    }
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Staleness::Bounded(s) => write!(f, "{s}"),
            Staleness::Unbounded => f.write_str("inf"),
        }
    }
}

impl FromStr for Staleness {
    type Err = SspError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Staleness::parse(s)
    }
}

/// True if a row cached with `complete_through` (the shard's min clock when the row was served)
/// may serve a read at `clock` under staleness `s`.
pub fn is_fresh(complete_through: u64, clock: u64, s: Staleness) -> bool {
    complete_through >= s.required_min_clock(clock)
}

/// Which cached rows a worker's reads may use, beyond what the staleness bound allows.
///
/// The bound says how stale a read may be, not how stale it should be. Either way every row a
/// worker reads is pulled again when its clock ends, asking only what the bound asks, so the
/// shards answer at once unless some worker is more than `s` clocks behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reads {
    /// A row serves reads only in the clock it was pulled for: the clock's first read waits
    /// for the pull its last clock's end started (a round trip), and for other workers only as
    /// long as the bound demands. Reads hold what the shards had when the reader's last clock
    /// ended.
    #[default]
    Fresh,
    /// A row pulled for the previous clock also serves, when it meets the bound: the pull's
    /// round trip hides behind compute, and reads are a clock staler than [`Reads::Fresh`].
    Overlapped,
}

impl Reads {
    /// How many clocks before the reader's own a row may have been pulled for.
    pub fn max_lag(self) -> u64 {
        match self {
            Reads::Fresh => 0,
            Reads::Overlapped => 1,
        }
    }
}

/// True if a row cached with `complete_through`, pulled for the reader's clock `fetched_in`,
/// serves the reader's read at `clock` under staleness `s` and read policy `reads`: fresh
/// enough for the bound, and pulled recently enough for the policy.
pub fn serves_read(
    complete_through: u64,
    fetched_in: u64,
    clock: u64,
    s: Staleness,
    reads: Reads,
) -> bool {
    is_fresh(complete_through, clock, s) && fetched_in.saturating_add(reads.max_lag()) >= clock
}

/// A worker's own clock: the number of clocks it has ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerClock {
    current: u64,
}

impl WorkerClock {
    /// A clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock resuming at `current` (e.g. after a restart from a checkpoint).
    pub fn starting_at(current: u64) -> Self {
        Self { current }
    }

    /// The current clock: updates issued now are tagged with it; it also equals the number of
    /// clocks this worker has completed.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// Ends the current clock and returns the clock that ended.
    pub fn tick(&mut self) -> u64 {
        let ended = self.current;
        self.current += 1;
        ended
    }
}

/// A released batch: (worker, clock, batch), to be applied in the order returned.
pub type Released<B> = Vec<(u32, u64, B)>;

/// The shard's per-worker clock vector plus the ordering of update batches.
///
/// `B` is the batch type (opaque to this crate). Batches may be submitted in any order; they are
/// released per worker in clock order (non-deterministic mode) or, in deterministic mode, clock by
/// clock once every live worker has submitted that clock, in ascending worker id.
#[derive(Debug, Clone)]
pub struct ShardClock<B> {
    num_workers: u32,
    deterministic: bool,
    /// Clocks of each worker whose batches have been released (applied).
    completed: Vec<u64>,
    /// False once a worker is evicted.
    live: Vec<bool>,
    /// Batches submitted but not yet released, per worker, by clock.
    held: Vec<BTreeMap<u64, B>>,
    /// Total number of held batches.
    pending: usize,
    /// Deterministic mode: the next clock to release (all live workers have completed it).
    next_release: u64,
}

impl<B> ShardClock<B> {
    /// A clock vector for `num_workers` workers, all at clock 0.
    pub fn new(num_workers: u32, deterministic: bool) -> Self {
        let n = num_workers as usize;
        Self {
            num_workers,
            deterministic,
            completed: vec![0; n],
            live: vec![true; n],
            held: (0..n).map(|_| BTreeMap::new()).collect(),
            pending: 0,
            next_release: 0,
        }
    }

    /// A clock vector restored from a checkpoint: worker `w` has completed (applied) its clocks
    /// `0..completed[w]` and is live iff `live[w]`; nothing is held back (batches not yet
    /// applied when the checkpoint was taken are not part of it: their workers resend them, and
    /// resending an already applied clock is refused as [`SspError::StaleClock`]).
    ///
    /// In deterministic mode every live worker must stand at the same clock (the mode releases
    /// whole clocks), which becomes the next clock to release; an evicted worker may stand at
    /// any clock up to it.
    ///
    /// Errors: [`SspError::BadRestore`] if the two vectors differ in length, hold more than
    /// `u32::MAX` workers, or (deterministic mode) the live workers' clocks differ or an
    /// evicted worker stands past them.
    pub fn restored(
        completed: Vec<u64>,
        live: Vec<bool>,
        deterministic: bool,
    ) -> Result<Self, SspError> {
        if completed.len() != live.len() {
            return Err(SspError::BadRestore(format!(
                "{} completed clocks but {} liveness flags",
                completed.len(),
                live.len()
            )));
        }
        let num_workers = u32::try_from(completed.len()).map_err(|_| {
            SspError::BadRestore(format!("{} workers is too many", completed.len()))
        })?;
        let next_release = match completed.iter().zip(&live).filter(|(_, l)| **l).min() {
            Some((min, _)) => *min,
            None => completed.iter().copied().max().unwrap_or(0),
        };
        if deterministic {
            let ahead = |w: &usize| {
                completed[*w] > next_release || (live[*w] && completed[*w] != next_release)
            };
            if let Some(w) = (0..completed.len()).find(ahead) {
                return Err(SspError::BadRestore(format!(
                    "deterministic mode releases whole clocks, but {} worker {w} stands at \
                     clock {} and the slowest live one at {next_release}",
                    if live[w] { "live" } else { "evicted" },
                    completed[w]
                )));
            }
        }
        let n = completed.len();
        Ok(Self {
            num_workers,
            deterministic,
            completed,
            live,
            held: (0..n).map(|_| BTreeMap::new()).collect(),
            pending: 0,
            next_release,
        })
    }

    /// The completed (applied) clocks of every worker, by worker id (evicted ones included).
    pub fn completed(&self) -> &[u64] {
        &self.completed
    }

    /// Whether each worker is live (`false` once evicted), by worker id.
    pub fn live(&self) -> &[bool] {
        &self.live
    }

    /// Number of workers (live or evicted).
    pub fn num_workers(&self) -> u32 {
        self.num_workers
    }

    /// True in deterministic (fixed application order) mode.
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }

    /// Completed (applied) clocks of worker `w`; `None` if `w` is out of range. An evicted
    /// worker keeps the value it had when evicted.
    pub fn worker_clock(&self, w: u32) -> Option<u64> {
        self.completed.get(w as usize).copied()
    }

    /// `Some(true)` if `w` is live, `Some(false)` if evicted, `None` if out of range.
    pub fn is_live(&self, w: u32) -> Option<bool> {
        self.live.get(w as usize).copied()
    }

    /// Number of live (not evicted) workers.
    pub fn live_workers(&self) -> u32 {
        self.live.iter().filter(|l| **l).count() as u32
    }

    /// Min over live workers of completed clocks (the "complete through" value).
    ///
    /// With no live worker left (or no worker at all) this is the max completed clock of any
    /// worker (0 without workers): nothing is left to wait for, and the value never goes back.
    pub fn min_clock(&self) -> u64 {
        self.completed
            .iter()
            .zip(&self.live)
            .filter(|(_, l)| **l)
            .map(|(c, _)| *c)
            .min()
            .unwrap_or_else(|| self.completed.iter().copied().max().unwrap_or(0))
    }

    /// Number of batches held back (waiting for earlier clocks or, in deterministic mode, other
    /// workers).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Number of batches of worker `w` held back (0 if out of range).
    pub fn pending_for(&self, w: u32) -> usize {
        self.held.get(w as usize).map_or(0, BTreeMap::len)
    }

    fn check_worker(&self, w: u32) -> Result<usize, SspError> {
        if w >= self.num_workers {
            return Err(SspError::UnknownWorker {
                worker: w,
                num_workers: self.num_workers,
            });
        }
        Ok(w as usize)
    }

    /// Submits worker `w`'s complete batch for `clock`. Returns the batches that must be applied
    /// NOW, in order, as (worker, clock, batch). The vector entries of the returned batches are
    /// already advanced when this returns (the caller applies them under the same lock before
    /// releasing parked reads).
    ///
    /// Errors: [`SspError::UnknownWorker`] if `w >= num_workers`; [`SspError::EvictedWorker`] if
    /// `w` was evicted; [`SspError::StaleClock`] if `clock < worker_clock(w)` (already applied);
    /// [`SspError::DuplicateClock`] if a batch for (w, clock) is already pending. An error
    /// changes nothing.
    pub fn submit(&mut self, w: u32, clock: u64, batch: B) -> Result<Released<B>, SspError> {
        let i = self.check_worker(w)?;
        if !self.live[i] {
            return Err(SspError::EvictedWorker { worker: w });
        }
        let completed = self.completed[i];
        if clock < completed {
            return Err(SspError::StaleClock {
                worker: w,
                clock,
                completed,
            });
        }
        if self.held[i].contains_key(&clock) {
            return Err(SspError::DuplicateClock { worker: w, clock });
        }
        self.held[i].insert(clock, batch);
        self.pending += 1;
        let mut out = Vec::new();
        if self.deterministic {
            self.release_deterministic(&mut out);
        } else {
            self.release_worker(i, &mut out);
        }
        Ok(out)
    }

    /// Non-deterministic mode: releases the contiguous prefix of worker `i`'s held batches.
    fn release_worker(&mut self, i: usize, out: &mut Released<B>) {
        while let Some(batch) = self.held[i].remove(&self.completed[i]) {
            out.push((i as u32, self.completed[i], batch));
            self.completed[i] += 1;
            self.pending -= 1;
        }
    }

    /// Deterministic mode: releases whole clocks, ascending worker id, while every live worker
    /// has submitted the next clock.
    fn release_deterministic(&mut self, out: &mut Released<B>) {
        loop {
            let c = self.next_release;
            let mut any_live = false;
            for i in 0..self.held.len() {
                if self.live[i] {
                    any_live = true;
                    if !self.held[i].contains_key(&c) {
                        return;
                    }
                }
            }
            if !any_live {
                return;
            }
            for i in 0..self.held.len() {
                if self.live[i] {
                    let batch = self.held[i]
                        .remove(&c)
                        .expect("checked above that every live worker holds clock c");
                    out.push((i as u32, c, batch));
                    self.completed[i] = c + 1;
                    self.pending -= 1;
                }
            }
            self.next_release = c + 1;
        }
    }

    /// Seam for later eviction: removes worker `w` from the min computation and returns the
    /// batches that become releasable (deterministic mode no longer waits for `w`). Pending
    /// batches of `w` are dropped. Evicting an already evicted worker is a no-op.
    ///
    /// Errors: [`SspError::UnknownWorker`] if `w >= num_workers`.
    pub fn evict(&mut self, w: u32) -> Result<Released<B>, SspError> {
        let i = self.check_worker(w)?;
        let mut out = Vec::new();
        if !self.live[i] {
            return Ok(out);
        }
        self.live[i] = false;
        self.pending -= self.held[i].len();
        self.held[i].clear();
        if self.deterministic {
            self.release_deterministic(&mut out);
        }
        Ok(out)
    }
}

/// Reads parked until the min clock reaches what they need. `T` is opaque (e.g. a oneshot
/// sender). Items with the same requirement are released in the order they were parked.
#[derive(Debug, Clone)]
pub struct ParkedReads<T> {
    by_required: BTreeMap<u64, VecDeque<T>>,
    len: usize,
}

impl<T> Default for ParkedReads<T> {
    fn default() -> Self {
        Self {
            by_required: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> ParkedReads<T> {
    /// No parked reads.
    pub fn new() -> Self {
        Self::default()
    }

    /// If `min_clock >= required` returns `Some(item)` back (serve now); otherwise parks it and
    /// returns `None`.
    pub fn park(&mut self, required: u64, min_clock: u64, item: T) -> Option<T> {
        if min_clock >= required {
            return Some(item);
        }
        self.by_required
            .entry(required)
            .or_default()
            .push_back(item);
        self.len += 1;
        None
    }

    /// Removes and returns every parked item whose requirement is `<= min_clock`, lowest
    /// requirement first.
    pub fn release(&mut self, min_clock: u64) -> Vec<T> {
        let rest = match min_clock.checked_add(1) {
            Some(bound) => self.by_required.split_off(&bound),
            None => BTreeMap::new(),
        };
        let ready = std::mem::replace(&mut self.by_required, rest);
        let out: Vec<T> = ready.into_values().flatten().collect();
        self.len -= out.len();
        out
    }

    /// The lowest requirement among parked items, if any.
    pub fn lowest_required(&self) -> Option<u64> {
        self.by_required.keys().next().copied()
    }

    /// Removes and returns every parked item (e.g. on shutdown), lowest requirement first.
    pub fn drain_all(&mut self) -> Vec<T> {
        self.release(u64::MAX)
    }

    /// Number of parked items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests;
