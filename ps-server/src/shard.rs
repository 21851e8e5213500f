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
mod tests {
    use super::*;
    use ps_proto::{Init, Layout, UpdateRule};

    fn spec() -> TableSpec {
        TableSpec {
            id: 1,
            name: "t".into(),
            rows: 10,
            width: 2,
            rule: UpdateRule::Add,
            init: Init::Zeros,
            staleness: Some(0),
            layout: Layout::Dense,
            push_codec: Default::default(),
            pull_codec: Default::default(),
        }
    }

    #[test]
    fn deterministic_mode_applies_at_the_boundary_in_worker_order() {
        let mut s = Shard::new(0, 2, &[spec()], 2, true);
        assert!(s.check(1, 2, &[4]).is_ok());
        assert!(matches!(
            s.check(1, 2, &[5]),
            Err(ProtoError::KeyOutOfRange { .. })
        ));
        assert!(matches!(
            s.check(1, 3, &[0]),
            Err(ProtoError::WrongWidth { .. })
        ));
        assert!(matches!(
            s.check(2, 2, &[0]),
            Err(ProtoError::UnknownTable(2))
        ));
        let rx = s.park(1).expect("must park until clock 0 is complete");
        s.submit(1, 0, vec![PushRows::dense(1, vec![0], vec![1.0, 2.0])])
            .unwrap();
        assert_eq!(
            s.read(1, &[0], 1).unwrap().values,
            vec![0.0, 0.0],
            "held back until worker 0 is in"
        );
        s.submit(0, 0, vec![]).unwrap();
        let r = s.read(1, &[0], 1).unwrap();
        assert_eq!(r.values, vec![1.0, 2.0]);
        assert_eq!((r.min_clock, r.worker_clock), (1, 1));
        assert!(rx.blocking_recv().is_ok());
        assert!(s.park(1).is_none());
    }

    /// `read_exact` gives the bytes the old path gave (a raw copy, then sparse if smaller),
    /// encoding consecutive rows from the table and leaving other reads unchecked.
    #[test]
    fn exact_reads_match_a_copy_then_a_sparse_check() {
        let spec = TableSpec {
            rows: 400,
            width: 10,
            ..spec()
        };
        let mut s = Shard::new(0, 1, &[spec], 1, false);
        let old = |s: &Shard, keys: &[u64]| {
            let (_, raw) = s.read_wire(1, keys, 0).unwrap();
            codec::exact_sparse_raw(&raw).unwrap_or(raw)
        };
        let bytes = |rows: ExactRows| match rows {
            ExactRows::Nonzero(e) => e.encode().unwrap_or_else(|| e.raw()),
            ExactRows::Dense(p) | ExactRows::Unchecked(p) => p,
        };
        let all: Vec<u64> = (0..400).collect();
        // A few nonzero cells: sparse, from the table.
        s.submit(0, 0, vec![PushRows::dense(1, vec![3, 250], vec![1.5; 20])])
            .unwrap();
        let (r, rows) = s.read_exact(1, &all, 0).unwrap();
        assert!(matches!(rows, ExactRows::Nonzero(_)), "{rows:?}");
        assert_eq!(bytes(rows), old(&s, &all));
        assert_eq!((r.min_clock, r.worker_clock), (1, 1));
        // A run starting past the first row, and non-consecutive keys.
        let (_, rows) = s.read_exact(1, &all[200..300], 0).unwrap();
        assert_eq!(bytes(rows), old(&s, &all[200..300]));
        let scattered = [250, 3, 7];
        let (_, rows) = s.read_exact(1, &scattered, 0).unwrap();
        assert!(matches!(rows, ExactRows::Unchecked(_)), "{rows:?}");
        assert_eq!(bytes(rows), s.read_wire(1, &scattered, 0).unwrap().1);
        // Every cell nonzero: raw, checked.
        s.submit(
            0,
            1,
            vec![PushRows::dense(1, all.clone(), vec![0.25; 4000])],
        )
        .unwrap();
        let (_, rows) = s.read_exact(1, &all, 0).unwrap();
        assert!(matches!(rows, ExactRows::Dense(_)), "{rows:?}");
        assert_eq!(bytes(rows), old(&s, &all));
    }

    fn ftrl_spec() -> TableSpec {
        TableSpec {
            id: 9,
            name: "lr_weights".into(),
            rows: u64::MAX,
            width: 1,
            rule: UpdateRule::Ftrl {
                alpha: 0.5,
                beta: 1.0,
                l1: 1.0,
                l2: 0.5,
            },
            init: Init::Zeros,
            staleness: Some(0),
            layout: Layout::Sparse,
            push_codec: Default::default(),
            pull_codec: Default::default(),
        }
    }

    #[test]
    fn sparse_ftrl_table_end_to_end_through_submit_and_read() {
        let (shards, workers) = (2, 2);
        let spec = ftrl_spec();
        let mut s = Shard::new(1, shards, &[spec.clone(), spec_add_dense()], workers, false);
        let range = ShardMap::range_of(u64::MAX, shards, 1);
        let t = s.table(9).unwrap();
        assert!(t.as_sparse().is_some() && t.is_empty());
        // Hashed feature keys in shard 1's half of the key space.
        let (a, b, c) = (range.start + 17, u64::MAX - 2, range.start + (1 << 40));
        assert!(s.check(9, 1, &[a, b, c]).is_ok());
        assert!(matches!(
            s.check(9, 1, &[range.start - 1]),
            Err(ProtoError::KeyOutOfRange { .. })
        ));
        assert!(matches!(
            s.check(9, 1, &[u64::MAX]),
            Err(ProtoError::KeyOutOfRange { .. })
        ));
        // Absent keys read as 0 and are not stored by the read.
        let r = s.read(9, &[a, b, c], 0).unwrap();
        assert_eq!(r.values, vec![0.0; 3]);
        let (w, payload) = s.read_wire(9, &[a, b, c], 0).unwrap();
        assert_eq!(payload, vec![0u8; 12]);
        assert_eq!((w.min_clock, w.worker_clock), (r.min_clock, r.worker_clock));
        assert_eq!(s.table(9).unwrap().len(), 0);
        assert_eq!(s.cells(), 5, "the dense table's 5 rows of width 1");

        // Scalar reference for one coordinate.
        let (alpha, beta, l1, l2) = (0.5f32, 1.0f32, 1.0f32, 0.5f32);
        let step = |(z, n, w): (f32, f32, f32), g: f32| {
            let sigma = ((n + g * g).sqrt() - n.sqrt()) / alpha;
            let z = z + (g - sigma * w);
            let n = n + g * g;
            let w = if z.abs() <= l1 {
                0.0
            } else {
                -(z - z.signum() * l1) / ((beta + n.sqrt()) / alpha + l2)
            };
            (z, n, w)
        };
        let push = |keys: Vec<u64>, values: Vec<f32>| vec![PushRows::dense(9, keys, values)];
        // Clock 0: worker 0 pushes g = 0.6 on a, worker 1 g = 0.3 on a and 2.0 on b.
        s.submit(0, 0, push(vec![a], vec![0.6])).unwrap();
        s.submit(1, 0, push(vec![a, b], vec![0.3, 2.0])).unwrap();
        let mut ra = step(step((0.0, 0.0, 0.0), 0.6), 0.3);
        let mut rb = step((0.0, 0.0, 0.0), 2.0);
        let r = s.read(9, &[a, b, c], 1).unwrap();
        assert_eq!(r.values, vec![ra.2, rb.2, 0.0]);
        assert_eq!(ra.2, 0.0, "|z| = 0.9 <= l1: a stays exactly 0");
        assert!(rb.2 < 0.0, "b left the l1 ball");
        assert_eq!((r.min_clock, r.worker_clock), (1, 1));
        assert_eq!(s.table(9).unwrap().len(), 2, "a and b stored, c only read");
        assert_eq!(s.params_applied(), 3);

        // Clock 1: more gradient on a pushes it out of the l1 ball.
        s.submit(1, 1, push(vec![a], vec![0.5])).unwrap();
        s.submit(0, 1, push(vec![b, a], vec![-1.0, 0.4])).unwrap();
        // Worker order of release within a clock follows arrival (non-deterministic mode).
        ra = step(step(ra, 0.5), 0.4);
        rb = step(rb, -1.0);
        let r = s.read(9, &[c, a, b], 0).unwrap();
        assert_eq!(r.values, vec![0.0, ra.2, rb.2]);
        assert!(ra.2 < 0.0);
        let t = s.table(9).unwrap().as_sparse().unwrap();
        assert_eq!(t.sorted_rows(), vec![(a, &[ra.2][..]), (b, &[rb.2][..])]);
        assert_eq!(t.state(), &[ra.0, ra.1, rb.0, rb.1]);
        assert_eq!(s.cells(), 5 + 2);
    }

    fn spec_add_dense() -> TableSpec {
        TableSpec {
            id: 2,
            rows: 10,
            width: 1,
            ..spec()
        }
    }

    #[test]
    fn batch_bound_counts_sparse_tables_up_to_their_cap() {
        let s = Shard::new(0, 2, &[ftrl_spec(), spec_add_dense()], 1, false);
        assert_eq!(s.max_batch_cells(), DEFAULT_SPARSE_BATCH_CELLS + 5);
        let s = s.with_sparse_batch_cells(100);
        assert_eq!(s.max_batch_cells(), 105);
        let small = TableSpec {
            rows: 40,
            width: 3,
            ..ftrl_spec()
        };
        let s = Shard::new(0, 2, &[small], 1, false);
        assert_eq!(s.max_batch_cells(), 60, "a small key range bounds it first");
    }

    #[test]
    fn invalid_table_specs_are_refused_by_name() {
        let bad = TableSpec {
            rule: UpdateRule::Adagrad {
                lr: 0.1,
                eps: 0.0,
                initial_accumulator: 0.0,
            },
            ..spec()
        };
        let e = Shard::try_new(0, 1, &[bad], 1, false).err().unwrap();
        assert!(
            matches!(&e, ServerError::BadTable { table: 1, reason } if reason.contains("eps")),
            "{e}"
        );
        let dup = Shard::try_new(0, 1, &[spec(), spec()], 1, false)
            .err()
            .unwrap();
        assert!(dup.to_string().contains("another table"), "{dup}");
        let ftrl_normal = TableSpec {
            init: Init::Normal { std: 0.1, seed: 1 },
            ..ftrl_spec()
        };
        assert!(validate_tables(&[ftrl_normal]).is_err());
        assert!(validate_tables(&[spec(), ftrl_spec()]).is_ok());
    }
}
