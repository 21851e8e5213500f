//! `Table`: a handle on one table of a [`PsClient`]: reads under the table's staleness (whole,
//! streamed into a sink, or started without waiting), and this clock's updates (cells, rows,
//! batches of rows, rows written in place, sparse entries of rows, or blocks the caller encoded
//! itself).

use crate::client::PsClient;
use crate::entries::Entries;
use crate::error::ClientError;
use crate::pending::{strictly_sorted, Block, EncodedBlock};
use crate::read::{PullTicket, Run};
use ps_proto::codec::is_exact_wire_id as is_exact_sparse;
use ps_proto::push_plan::{chain_at, entries_per_frame, push_blocks};
use ps_proto::{codec, PushPlan, ShardMap, TableSpec, UpdateRule};
use ps_ssp::Staleness;
use std::ops::Range;

/// A handle on one table of a `PsClient`.
pub struct Table<'a> {
    pub(crate) client: &'a mut PsClient,
    pub(crate) id: u32,
}

impl PsClient {
    /// A handle on table `id`.
    pub fn table(&mut self, id: u32) -> Result<Table<'_>, ClientError> {
        self.state(id)?;
        Ok(Table { client: self, id })
    }

    /// [`Table::rows_mut`] of table `table`, borrowing the client rather than a handle.
    pub fn rows_mut(&mut self, table: u32, keys: &[u64]) -> Result<&mut [f32], ClientError> {
        self.check_batch(table, keys)?;
        let t = self.state_mut(table)?;
        let width = t.spec.width as usize;
        let blocks = &mut t.cache.pending.blocks;
        blocks.push(Block {
            keys: keys.to_vec(),
            values: vec![0.0; keys.len() * width],
        });
        match blocks.last_mut() {
            Some(b) => Ok(&mut b.values),
            None => Err(ClientError::UnknownTable(table)),
        }
    }

    /// Checks keys of a batch update: sorted, distinct, in range, none already sent in an
    /// encoded block this clock.
    fn check_batch(&self, id: u32, keys: &[u64]) -> Result<(), ClientError> {
        if !strictly_sorted(keys) {
            return Err(ClientError::Unsorted { table: id });
        }
        let t = self.state(id)?;
        let rows = t.spec.rows;
        if let Some(&row) = keys.iter().find(|&&r| r >= rows) {
            return Err(ClientError::RowOutOfRange {
                table: id,
                row,
                rows,
            });
        }
        if t.cache.pending.encoded_overlaps(keys) {
            return Err(ClientError::Overlap { table: id });
        }
        Ok(())
    }
}

impl Table<'_> {
    pub fn spec(&self) -> &TableSpec {
        // `table()` checked the id exists and tables are never removed.
        &self.client.tables[&self.id].spec
    }

    pub fn width(&self) -> u32 {
        self.spec().width
    }

    pub fn rows(&self) -> u64 {
        self.spec().rows
    }

    /// How this clock's update of `keys` (sorted, distinct) will go out: the frames' blocks
    /// and the chain each is encoded with (see `ps_proto::push_plan`). An engine that
    /// compresses its delta itself encodes each block with this chain and hands the payloads
    /// to [`Table::push_encoded`], one per block; for a lossy chain the bytes then equal what
    /// this library's encoder makes of the same values (for `raw`, the library may send a
    /// mostly-zero block as exact sparse f32 instead: `Table::push_entries` is the sparse way
    /// in). Its error-feedback residual is the engine's to keep.
    pub fn push_plan(&self, keys: &[u64]) -> Result<PushPlan, ClientError> {
        self.client.check_batch(self.id, keys)?;
        let c = &self.client;
        Ok(PushPlan::new(
            self.spec(),
            keys,
            c.links.len() as u32,
            c.clock.current(),
            c.flush_residual,
            c.cfg.max_frame_body,
        ))
    }

    pub fn staleness(&self) -> Staleness {
        self.client.tables[&self.id].staleness
    }

    /// The clocks a read now must be complete through.
    fn need(&self) -> u64 {
        self.staleness()
            .required_min_clock(self.client.clock.current())
    }

    /// One row under the table's staleness.
    pub fn read_row(&mut self, row: u64) -> Result<Vec<f32>, ClientError> {
        self.read_rows(&[row])
    }

    /// Rows (concatenated) under the table's staleness: complete through every worker's clock
    /// `c - s - 1` and containing every update of this worker. Blocks while the slowest worker is
    /// too far behind.
    pub fn read_rows(&mut self, rows: &[u64]) -> Result<Vec<f32>, ClientError> {
        let mut out = Vec::new();
        self.read_rows_into(rows, &mut out)?;
        Ok(out)
    }

    /// [`Table::read_rows`], appending to `out`.
    pub fn read_rows_into(&mut self, rows: &[u64], out: &mut Vec<f32>) -> Result<(), ClientError> {
        let need = self.need();
        self.client.read_with(self.id, rows, need, out)
    }

    /// Rows complete through every worker's clocks before this worker's current clock, whatever the
    /// staleness: a barrier read, e.g. for the final model.
    pub fn read_rows_synced(&mut self, rows: &[u64]) -> Result<Vec<f32>, ClientError> {
        let need = self.client.clock.current();
        let mut out = Vec::new();
        self.client.read_with(self.id, rows, need, &mut out)?;
        Ok(out)
    }

    /// Reads `rows` (sorted, distinct) under the table's staleness into `sink` as each shard's
    /// reply arrives: `sink(first, keys, values)` receives `rows[first..first + keys.len()]`
    /// and their values (row-major), one shard's run at a time, in no fixed order; runs the
    /// cache serves come first. A GPU session can upload one run while the others are in flight.
    /// An error from the sink stops the read and is returned.
    pub fn read_into<E: From<ClientError>>(
        &mut self,
        rows: &[u64],
        mut sink: impl FnMut(usize, &[u64], &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.stream(rows, false, false, dense_only(&mut sink))
    }

    /// [`Table::read_into`] complete through every worker's clocks before this one (a barrier
    /// read).
    pub fn read_synced_into<E: From<ClientError>>(
        &mut self,
        rows: &[u64],
        mut sink: impl FnMut(usize, &[u64], &[f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.stream(rows, true, false, dense_only(&mut sink))
    }

    /// [`Table::read_into`] (or, `synced`, [`Table::read_synced_into`]) handing each run on as
    /// a [`Run`]: by its entries ([`Run::Sparse`]) when the cache holds most of its rows that way
    /// (rows that arrived sparse and are mostly zero) and reads add nothing to them, else dense.
    /// For readers of wide, mostly-zero rows (LDA's word-topic counts at large K): the run never
    /// exists dense on the host.
    pub fn read_runs_into<E: From<ClientError>>(
        &mut self,
        rows: &[u64],
        synced: bool,
        sink: impl FnMut(usize, &[u64], Run<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.stream(rows, synced, true, sink)
    }

    fn stream<E: From<ClientError>>(
        &mut self,
        rows: &[u64],
        synced: bool,
        sparse: bool,
        mut sink: impl FnMut(usize, &[u64], Run<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let need = if synced {
            self.client.clock.current()
        } else {
            self.need()
        };
        self.client
            .read_streamed(self.id, rows, need, sparse, &mut sink)
    }

    /// Starts pulling `rows` without waiting; [`PsClient::wait`] collects them.
    pub fn pull_async(&mut self, rows: &[u64]) -> Result<PullTicket, ClientError> {
        self.client.pull_async(self.id, rows)
    }

    /// Says which rows the next clock reads, so that the prefetch started when this clock ends
    /// pulls those (by default it pulls the rows read in this clock).
    pub fn prefetch_next(&mut self, rows: Vec<u64>) -> Result<(), ClientError> {
        self.check_rows(&rows)?;
        self.client.state_mut(self.id)?.next_reads = Some(rows);
        Ok(())
    }

    fn check_rows(&self, keys: &[u64]) -> Result<(), ClientError> {
        let (table, rows) = (self.id, self.rows());
        match keys.iter().find(|&&r| r >= rows) {
            Some(&row) => Err(ClientError::RowOutOfRange { table, row, rows }),
            None => Ok(()),
        }
    }

    fn check_batch(&self, keys: &[u64]) -> Result<(), ClientError> {
        self.client.check_batch(self.id, keys)
    }

    /// This clock's pending update of `row` (zeros if none yet), after checking the row exists.
    fn pending_row(&mut self, row: u64) -> Result<&mut Vec<f32>, ClientError> {
        self.check_batch(&[row])?;
        let width = self.width() as usize;
        let t = self.client.state_mut(self.id)?;
        Ok(t.cache
            .pending
            .singles
            .entry(row)
            .or_insert_with(|| vec![0.0; width]))
    }

    /// Adds `delta` to cell (row, col) in this clock's update.
    pub fn inc(&mut self, row: u64, col: u32, delta: f32) -> Result<(), ClientError> {
        let (table, width) = (self.id, self.width());
        if col >= width {
            return Err(ClientError::ColumnOutOfRange { table, col, width });
        }
        self.pending_row(row)?[col as usize] += delta;
        Ok(())
    }

    /// Adds a whole row delta in this clock's update.
    pub fn inc_row(&mut self, row: u64, delta: &[f32]) -> Result<(), ClientError> {
        self.check_len(1, delta.len())?;
        for (a, b) in self.pending_row(row)?.iter_mut().zip(delta) {
            *a += *b;
        }
        Ok(())
    }

    fn check_len(&self, rows: usize, got: usize) -> Result<(), ClientError> {
        let width = self.width();
        if got != rows * width as usize {
            return Err(ClientError::WrongLength {
                table: self.id,
                got,
                width,
            });
        }
        Ok(())
    }

    /// Adds many rows in one call: `values` holds the rows of `keys` (sorted, distinct)
    /// row-major. One copy into the clock's update; nothing changes if the call fails.
    pub fn push(&mut self, keys: &[u64], values: &[f32]) -> Result<(), ClientError> {
        self.push_owned(keys.to_vec(), values.to_vec())
    }

    /// [`Table::push`] taking the buffers: no copy at all until the frames are built.
    pub fn push_owned(&mut self, keys: Vec<u64>, values: Vec<f32>) -> Result<(), ClientError> {
        self.check_batch(&keys)?;
        self.check_len(keys.len(), values.len())?;
        let t = self.client.state_mut(self.id)?;
        t.cache.pending.blocks.push(Block { keys, values });
        Ok(())
    }

    /// Adds a sparse update of the rows `keys` (sorted, distinct): `values[j]` at position
    /// `at[j]` (strictly increasing) of their `keys.len() * width` block, row-major, zero
    /// elsewhere. The same update as [`Table::push`] of that block; on a table whose push codec
    /// is lossless (`raw`) it travels as its entries (exact sparse f32 frames) and stays sparse
    /// in the own log, so no dense block is ever made; a lossy codec selects from the dense
    /// rows. The keys must not be updated otherwise in this clock. Nothing changes if the call
    /// fails.
    pub fn push_entries(
        &mut self,
        keys: Vec<u64>,
        at: Vec<u64>,
        values: Vec<f32>,
    ) -> Result<(), ClientError> {
        let table = self.id;
        let width = self.width() as usize;
        let e = Entries { keys, at, values };
        e.check(width)
            .map_err(|reason| ClientError::BadEntries { table, reason })?;
        self.check_batch(&e.keys)?;
        let lossless = self.spec().push_codec.is_lossless();
        let t = self.client.state_mut(table)?;
        if t.cache.pending.dense_overlaps(&e.keys) {
            return Err(ClientError::Overlap { table });
        }
        if lossless {
            t.cache.pending.entries.push(e);
        } else {
            t.cache.pending.blocks.push(e.to_block(width));
        }
        Ok(())
    }

    /// This clock's update of `keys` (sorted, distinct) as a buffer of zeros, row-major, for the
    /// caller to write the rows' deltas into in place: they go from there into the push frames
    /// with one copy (raw f32) or straight into the table's push codec.
    pub fn rows_mut(&mut self, keys: &[u64]) -> Result<&mut [f32], ClientError> {
        self.client.rows_mut(self.id, keys)
    }

    /// The runs of `keys` (sorted) that live on one shard each, as index ranges into `keys`: an
    /// engine that encodes its own deltas encodes one block per run (see
    /// [`Table::push_encoded`]).
    pub fn shard_runs(&self, keys: &[u64]) -> Vec<Range<usize>> {
        let (rows, nshards) = (self.rows(), self.client.links.len() as u32);
        let mut runs: Vec<Range<usize>> = Vec::new();
        let mut last = None;
        for (i, &k) in keys.iter().enumerate() {
            let s = ShardMap::shard_of(rows, nshards, k);
            match runs.last_mut() {
                Some(r) if last == Some(s) => r.end = i + 1,
                _ => runs.push(i..i + 1),
            }
            last = Some(s);
        }
        runs
    }

    /// How [`Table::push_entries`] would cut entries of `keys` (sorted, distinct) into frames,
    /// as runs of `keys`; `None` where the table's push codec is lossy (entries then become
    /// dense rows). An engine that encodes its own entries (on its device) encodes each run as
    /// `ps_proto::codec::encode_exact_selection` does and hands the payloads to
    /// [`Table::push_encoded`]: the frames are the same bytes.
    pub fn entries_blocks(&self, keys: &[u64]) -> Result<Option<Vec<Range<usize>>>, ClientError> {
        self.check_batch(keys)?;
        let spec = self.spec();
        if !spec.push_codec.is_lossless() {
            return Ok(None);
        }
        let per_frame = entries_per_frame(spec.width, self.client.cfg.max_frame_body);
        let nshards = self.client.links.len() as u32;
        Ok(Some(
            push_blocks(keys, spec.rows, nshards, per_frame)
                .into_iter()
                .map(|b| b.rows)
                .collect(),
        ))
    }

    /// Adds a block the caller encoded itself (with [`ps_proto::codec`], e.g. on its device):
    /// `payload` is the chain `wire_id`'s encoding of the rows of `keys` (sorted, distinct, all
    /// on one shard: see [`Table::shard_runs`]) as one block of `keys.len() * width` values.
    /// The table must be configured with that codec, or this clock's [`Table::push_plan`] must
    /// name it (the job's last clock plans its chain without selection); a lossless table also
    /// takes exact sparse payloads, `ps_proto::codec::encode_exact_selection`'s, cut as
    /// [`Table::entries_blocks`] says. The payload must decode, and the keys must not be
    /// updated otherwise in this clock. It goes into a push frame as it is; the caller keeps any
    /// residual. Nothing changes if the call fails.
    pub fn push_encoded(
        &mut self,
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        let table = self.id;
        let spec = self.spec();
        let accepts = spec.push_codec.wire_id();
        // This clock's plan may differ (the job's last clock sends without selection).
        let c = &self.client;
        let planned = chain_at(
            &spec.push_codec,
            c.clock.current(),
            spec.width,
            c.flush_residual,
        );
        let exact = spec.push_codec.is_lossless() && is_exact_sparse(wire_id);
        let known = wire_id == accepts || wire_id == planned.wire_id() || exact;
        if !known || codec::wire_format(wire_id).is_none() {
            return Err(ClientError::CodecNotAccepted {
                table,
                got: wire_id,
                accepts: spec.push_codec.to_string(),
            });
        }
        if keys.is_empty() {
            return Err(ClientError::WrongLength {
                table,
                got: 0,
                width: spec.width,
            });
        }
        if self.shard_runs(keys).len() != 1 {
            return Err(ClientError::SpansShards { table });
        }
        self.check_batch(keys)?;
        let (width, overlay) = (self.width() as usize, spec.rule == UpdateRule::Add);
        let bytes = 8 * keys.len() as u64 + payload.len() as u64;
        let max = self.client.cfg.max_frame_body;
        if bytes > max {
            return Err(ClientError::FrameTooLarge { table, bytes, max });
        }
        let t = &self.client.tables[&table];
        if t.cache.pending.dense_overlaps(keys) {
            return Err(ClientError::Overlap { table });
        }
        let block = EncodedBlock::new(keys, wire_id, payload, width, exact, overlay)?;
        let t = self.client.state_mut(table)?;
        t.cache.pending.encoded.push(block);
        Ok(())
    }
}

/// A [`Run`] sink for a reader that takes dense runs only (the read never hands it a sparse
/// one).
fn dense_only<'a, E>(
    sink: &'a mut impl FnMut(usize, &[u64], &[f32]) -> Result<(), E>,
) -> impl FnMut(usize, &[u64], Run<'_>) -> Result<(), E> + 'a {
    move |first, keys, run| match run {
        Run::Dense(values) => sink(first, keys, values),
        Run::Sparse(rows) => sink(first, keys, &rows.to_dense()),
    }
}
