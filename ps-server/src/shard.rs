//! One shard's state: its slice of every table, the SSP clock vector that orders and releases
//! pushed batches, and the pulls parked until the clock vector allows them. No I/O here: the
//! service feeds it validated frames.

use crate::checkpoint::{CheckpointError, ShardFacts, ShardSnapshot, TableSlice, FORMAT_VERSION};
use crate::error::ServerError;
use crate::plan::CheckpointPlan;
use crate::table::Table;
use crate::telemetry;
use ps_proto::codec::{self, Decoded};
use ps_proto::{ProtoError, ShardMap, TableSpec};
use ps_ssp::{ParkedReads, ShardClock, SspError};
use std::collections::HashMap;
use tokio::sync::oneshot;

/// The rows one push frame carries: one block of `keys.len() * width` values, dense or sparse as
/// the worker's codec sent it. A sparse block is kept and applied as it is, never densified.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRows {
    pub table: u32,
    pub keys: Vec<u64>,
    pub values: Decoded,
}

impl PushRows {
    /// Dense rows, one per key.
    pub fn dense(table: u32, keys: Vec<u64>, values: Vec<f32>) -> PushRows {
        PushRows {
            table,
            keys,
            values: Decoded::Dense(values),
        }
    }

    /// Values carried (selected entries of a sparse block).
    pub fn value_count(&self) -> usize {
        match &self.values {
            Decoded::Dense(v) => v.len(),
            Decoded::Sparse { values, .. } => values.len(),
        }
    }
}

/// Everything one worker pushed to this shard for one clock.
pub type Batch = Vec<PushRows>;

/// The default bound on the cells one clock batch may push to one sparse table slice:
/// 2^24 cells, 64 MiB of values (plus up to 128 MiB of keys at width 1). See
/// [`Shard::max_batch_cells`].
pub const DEFAULT_SPARSE_BATCH_CELLS: u64 = 1 << 24;

/// Checks every table spec of a job (rule parameters, widths, ftrl init) and that table ids are
/// unique; the error names the table.
pub fn validate_tables(tables: &[TableSpec]) -> Result<(), ServerError> {
    let mut seen = std::collections::HashSet::new();
    for t in tables {
        t.validate().map_err(|reason| ServerError::BadTable {
            table: t.id,
            reason: format!("({}) {reason}", t.name),
        })?;
        if !seen.insert(t.id) {
            return Err(ServerError::BadTable {
                table: t.id,
                reason: format!("({}) the id is used by another table", t.name),
            });
        }
    }
    Ok(())
}

pub struct Shard {
    pub id: u32,
    num_shards: u32,
    tables: HashMap<u32, Table>,
    sparse_batch_cells: u64,
    clock: ShardClock<Batch>,
    parked: ParkedReads<oneshot::Sender<()>>,
    params_applied: u64,
    /// When to checkpoint, and what the durable checkpoints cover.
    pub plan: CheckpointPlan,
}

/// What a pull read: values, the shard's min clock and the requesting worker's applied clocks.
#[derive(Debug, Clone, PartialEq)]
pub struct PullResult {
    pub values: Vec<f32>,
    pub min_clock: u64,
    pub worker_clock: u64,
}

/// A lossless pull reply's rows, as [`Shard::read_exact`] took them from the table.
#[derive(Debug, PartialEq)]
pub enum ExactRows {
    /// The rows' nonzero entries, to be encoded ([`codec::NonzeroEntries::encode`]); raw if that
    /// is not smaller after all.
    Nonzero(codec::NonzeroEntries),
    /// Raw f32 rows, checked: too many are nonzero for a sparse payload.
    Dense(Vec<u8>),
    /// Raw f32 rows, not yet checked for sparsity.
    Unchecked(Vec<u8>),
}

impl Shard {
    /// Shard `id` of `num_shards`, holding its key range of every table.
    ///
    /// # Panics
    /// If a table spec is invalid (see [`validate_tables`]); [`Shard::try_new`] returns the error.
    pub fn new(
        id: u32,
        num_shards: u32,
        tables: &[TableSpec],
        num_workers: u32,
        deterministic: bool,
    ) -> Shard {
        match Shard::try_new(id, num_shards, tables, num_workers, deterministic) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Shard::new`], with invalid table specs an error.
    pub fn try_new(
        id: u32,
        num_shards: u32,
        tables: &[TableSpec],
        num_workers: u32,
        deterministic: bool,
    ) -> Result<Shard, ServerError> {
        validate_tables(tables)?;
        let tables = tables
            .iter()
            .map(|t| {
                let range = ShardMap::range_of(t.rows, num_shards, id);
                (t.id, Table::new(t.clone(), range))
            })
            .collect::<HashMap<u32, Table>>();
        for (t, table) in &tables {
            telemetry::rows(id, *t, table.len());
        }
        Ok(Shard {
            id,
            num_shards,
            tables,
            sparse_batch_cells: DEFAULT_SPARSE_BATCH_CELLS,
            clock: ShardClock::new(num_workers, deterministic),
            parked: ParkedReads::new(),
            params_applied: 0,
            plan: CheckpointPlan::default(),
        })
    }

    /// A copy of the shard's state for a checkpoint of job `fingerprint`: every table slice
    /// (values, optimizer state, sparse keys; by ascending table id) and the clock vector. Batches
    /// held back are not in it (see [`crate::checkpoint`] for the cut). Copies vectors only, so it
    /// can run under the shard's lock.
    pub fn snapshot(&self, fingerprint: u64) -> ShardSnapshot {
        let mut ids: Vec<u32> = self.tables.keys().copied().collect();
        ids.sort_unstable();
        let tables = ids
            .iter()
            .filter_map(|id| self.tables.get(id))
            .map(|t| {
                let spec = t.spec();
                TableSlice {
                    id: spec.id,
                    rows: spec.rows,
                    width: spec.width,
                    state_per_cell: spec.rule.state_per_cell() as u32,
                    layout: spec.layout,
                    range: t.range(),
                    values: t.data().to_vec(),
                    state: t.state().to_vec(),
                    keys: t.keys().to_vec(),
                }
            })
            .collect();
        ShardSnapshot {
            version: FORMAT_VERSION,
            fingerprint,
            shard: self.id,
            num_shards: self.num_shards,
            num_workers: self.clock.num_workers(),
            deterministic: self.clock.deterministic(),
            clock: self.clock.min_clock(),
            completed: self.clock.completed().to_vec(),
            live: self.clock.live().to_vec(),
            tables,
        }
    }

    /// Shard `id` of `num_shards` (as [`Shard::try_new`] with the same arguments) holding the
    /// state of `snapshot`: its values, optimizer state and clock vector, nothing held back.
    /// Workers then resend their batches from their entry of the clock vector on.
    ///
    /// Refuses a snapshot that does not fit: another format version, shard id, shard or worker
    /// count, mode, set of tables, or a table's layout, rows, width, rule state or key range
    /// ([`CheckpointError::Layout`] naming the difference), or inconsistent contents. The job
    /// fingerprint is the caller's to check ([`ShardSnapshot::check`]). Starts with
    /// [`Shard::params_applied`] at 0.
    pub fn from_snapshot(
        id: u32,
        num_shards: u32,
        tables: &[TableSpec],
        num_workers: u32,
        deterministic: bool,
        snapshot: ShardSnapshot,
    ) -> Result<Shard, ServerError> {
        validate_tables(tables)?;
        if snapshot.version != FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion {
                found: snapshot.version,
                supported: FORMAT_VERSION,
            }
            .into());
        }
        let facts = ShardFacts::new(id, num_shards, tables, num_workers, deterministic);
        snapshot.check_layout(&facts)?;
        snapshot.validate().map_err(CheckpointError::Malformed)?;
        let clock = ShardClock::restored(snapshot.completed, snapshot.live, deterministic)?;
        let mut restored = HashMap::with_capacity(snapshot.tables.len());
        for slice in snapshot.tables {
            let spec = tables.iter().find(|t| t.id == slice.id).ok_or_else(|| {
                CheckpointError::Layout(format!("table {} is not in the job", slice.id))
            })?;
            let table = Table::from_parts(
                spec.clone(),
                slice.range,
                slice.keys,
                slice.values,
                slice.state,
            )?;
            restored.insert(slice.id, table);
        }
        for (t, table) in &restored {
            telemetry::rows(id, *t, table.len());
        }
        Ok(Shard {
            id,
            num_shards,
            tables: restored,
            sparse_batch_cells: DEFAULT_SPARSE_BATCH_CELLS,
            clock,
            parked: ParkedReads::new(),
            params_applied: 0,
            plan: CheckpointPlan::default(),
        })
    }

    /// Sets the bound on the cells one clock batch may push to each sparse table slice
    /// (default [`DEFAULT_SPARSE_BATCH_CELLS`]).
    pub fn with_sparse_batch_cells(mut self, cells: u64) -> Shard {
        self.sparse_batch_cells = cells;
        self
    }

    pub fn table(&self, id: u32) -> Result<&Table, ProtoError> {
        self.tables.get(&id).ok_or(ProtoError::UnknownTable(id))
    }

    /// Validates a request against a table without changing anything.
    pub fn check(&self, table: u32, width: u32, keys: &[u64]) -> Result<(), ProtoError> {
        self.table(table)?.check(width, keys)
    }

    pub fn check_worker(&self, worker: u32) -> Result<(), ProtoError> {
        if worker >= self.clock.num_workers() {
            return Err(ProtoError::Protocol(format!(
                "worker {worker} is not in this job ({} workers)",
                self.clock.num_workers()
            )));
        }
        Ok(())
    }

    pub fn min_clock(&self) -> u64 {
        self.clock.min_clock()
    }

    pub fn worker_clock(&self, worker: u32) -> u64 {
        self.clock.worker_clock(worker).unwrap_or(0)
    }

    /// Cells (rows x width) stored over every table slice this shard holds: whole key ranges of
    /// dense tables, the rows written so far of sparse ones.
    pub fn cells(&self) -> u64 {
        self.tables.values().map(|t| t.cells()).sum()
    }

    /// The most values one worker's clock batch may carry to this shard. Updates are coalesced
    /// per row, so a well-behaved batch never needs more than one value per cell of the shard's
    /// key ranges; anything more is a runaway or hostile peer. A sparse slice's key range can be
    /// astronomically large, so each sparse table counts at most its sparse batch bound
    /// ([`Shard::with_sparse_batch_cells`]): that bounds the memory a peer can make the shard
    /// buffer for one batch, and the rows one batch can add to a sparse table.
    pub fn max_batch_cells(&self) -> u64 {
        self.tables
            .values()
            .map(|t| t.batch_cap_cells(self.sparse_batch_cells))
            .fold(0u64, |a, b| a.saturating_add(b))
    }

    pub fn params_applied(&self) -> u64 {
        self.params_applied
    }

    /// Accepts worker `worker`'s complete batch for `clock` (rows already checked), applies
    /// whatever the clock vector releases, and wakes the pulls that became servable.
    ///
    /// A batch for a clock the shard already holds (applied or waiting) is a resend, after a
    /// restart or a retry over a new connection: the first one wins, the repeat is acknowledged
    /// and dropped (a worker's batch for a clock never changes).
    pub fn submit(&mut self, worker: u32, clock: u64, batch: Batch) -> Result<(), SspError> {
        let released = match self.clock.submit(worker, clock, batch) {
            Ok(r) => r,
            Err(SspError::StaleClock { .. } | SspError::DuplicateClock { .. }) => {
                tracing::debug!(
                    shard = self.id,
                    worker,
                    clock,
                    "repeated batch acknowledged"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.apply_released(released);
        Ok(())
    }

    /// Removes worker `worker` from the clock vector (it died): the others go on, pulls that
    /// waited for it are served, and its held batches are dropped.
    pub fn evict(&mut self, worker: u32) -> Result<(), SspError> {
        let released = self.clock.evict(worker)?;
        self.apply_released(released);
        Ok(())
    }

    /// Applies released batches in order and wakes the pulls that became servable.
    fn apply_released(&mut self, released: ps_ssp::Released<Batch>) {
        for (_, _, batch) in released {
            for rows in batch {
                if let Some(t) = self.tables.get_mut(&rows.table) {
                    self.params_applied += rows.value_count() as u64;
                    telemetry::applied(self.id, rows.table, rows.value_count() as u64);
                    match &rows.values {
                        Decoded::Dense(v) => t.apply(&rows.keys, v),
                        Decoded::Sparse { indices, values } => {
                            t.apply_sparse(&rows.keys, indices, values)
                        }
                    }
                }
            }
        }
        let min = self.clock.min_clock();
        for waiter in self.parked.release(min) {
            let _ = waiter.send(());
        }
        self.record(min);
    }

    /// Sets the gauges a batch may have moved and counts the batch.
    fn record(&self, min_clock: u64) {
        telemetry::clock_batch(self.id, min_clock);
        telemetry::parked_reads(self.id, self.parked.len());
        for (t, table) in &self.tables {
            telemetry::rows(self.id, *t, table.len());
        }
    }

    /// Parks a pull that needs the rows complete through `required` clocks. Returns `None` if it
    /// can be served now, or a receiver that fires when it can.
    pub fn park(&mut self, required: u64) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        match self.parked.park(required, self.clock.min_clock(), tx) {
            Some(_) => None,
            None => {
                telemetry::parked_reads(self.id, self.parked.len());
                Some(rx)
            }
        }
    }

    /// Reads rows (already checked) with the clocks they are complete through.
    pub fn read(&self, table: u32, keys: &[u64], worker: u32) -> Result<PullResult, ProtoError> {
        let t = self.table(table)?;
        let mut values = Vec::new();
        t.read_into(keys, &mut values);
        Ok(PullResult {
            values,
            min_clock: self.clock.min_clock(),
            worker_clock: self.worker_clock(worker),
        })
    }

    /// [`Shard::read`] with the rows as a raw f32 payload, written once: what a pull reply with
    /// the lossless codec carries. `values` is empty; the payload is the second element.
    pub fn read_wire(
        &self,
        table: u32,
        keys: &[u64],
        worker: u32,
    ) -> Result<(PullResult, Vec<u8>), ProtoError> {
        let mut payload = Vec::new();
        self.table(table)?.read_wire_into(keys, &mut payload);
        Ok((self.read_clocks(worker), payload))
    }

    /// The rows of a lossless pull reply (already checked). Consecutive rows of a dense table
    /// are one slice of it, scanned in place: their nonzero entries when few enough are
    /// ([`codec::NonzeroEntries`]), else the rows copied once. Other rows are copied as in
    /// [`Shard::read_wire`]. Encoding is left to the caller, after the shard's lock is let go.
    pub fn read_exact(
        &self,
        table: u32,
        keys: &[u64],
        worker: u32,
    ) -> Result<(PullResult, ExactRows), ProtoError> {
        let t = self.table(table)?;
        let rows = match t.consecutive_rows(keys) {
            Some(values) => match codec::NonzeroEntries::of(values) {
                Some(entries) => ExactRows::Nonzero(entries),
                None => ExactRows::Dense(ps_proto::encode_f32s(values)),
            },
            None => {
                let mut payload = Vec::new();
                t.read_wire_into(keys, &mut payload);
                ExactRows::Unchecked(payload)
            }
        };
        Ok((self.read_clocks(worker), rows))
    }

    /// The clocks a read answers with, and no values.
    fn read_clocks(&self, worker: u32) -> PullResult {
        PullResult {
            values: Vec::new(),
            min_clock: self.clock.min_clock(),
            worker_clock: self.worker_clock(worker),
        }
    }

    /// Drops every parked pull (their waiters see the shard going away).
    pub fn shutdown(&mut self) {
        self.parked.release(u64::MAX);
        telemetry::parked_reads(self.id, 0);
    }
}

#[cfg(test)]
mod tests;
