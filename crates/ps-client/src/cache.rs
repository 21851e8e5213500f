//! The worker's view of one table: cached rows, the clock each is complete through, the updates
//! of the current clock, and the log of the worker's own updates that shards may not have applied
//! yet. Pure bookkeeping: no I/O.

use crate::entries::{RowCursor, Sent};
use crate::pending::{add, Pending};
use crate::row_values::{push_sparse_sum, RowValues};
use ps_proto::{ProtoError, SparseRowsBuf};
use std::collections::{BTreeMap, HashMap};

/// A map keyed by row id, as the worker's view keeps its rows, residuals and pending rows: hashed
/// with foldhash's fast fixed hasher (row ids are this worker's own requests, not an attacker's
/// choice). With the standard library's SipHash, the lookups of an MF clock that reads and
/// pushes 17,770 rows of 128 cost about 2 ms of its 10-12 ms of host work.
pub type RowMap<V> = HashMap<u64, V, foldhash::fast::FixedState>;

/// How many acknowledged clocks a cached row may lack, unfolded, while a pull on its way is to
/// replace it (see [`TableCache::fold_acknowledged`]).
pub const MAX_DEFERRED_CLOCKS: u64 = 2;

#[derive(Debug, Clone)]
pub struct CachedRow {
    /// Dense, or by its entries when it arrived sparse and is mostly zero.
    pub values: RowValues,
    /// The shard's min clock when it served the row: complete through this many clocks of everyone.
    pub min_clock: u64,
    /// How many of this worker's own clocks the values already contain.
    pub own_clock: u64,
    /// This worker's clock when the row arrived.
    pub fetched_at: u64,
}

#[derive(Debug, Default)]
pub struct TableCache {
    pub width: usize,
    pub rows: RowMap<CachedRow>,
    /// Updates of the current clock.
    pub pending: Pending,
    /// Own updates already sent (as the shards will decode them), by clock, until every shard has
    /// applied them. Kept only when `overlay` is on.
    pub own_log: BTreeMap<u64, Vec<Sent>>,
    /// What a lossy push codec has not sent yet, per row (error feedback). Part of this
    /// worker's own updates: it goes out with a later clock.
    pub residual: RowMap<Vec<f32>>,
    /// A push codec's momentum-correction velocity, per row (see `CodecChain::momentum`). Not
    /// part of the worker's view: what of it was not sent is already in the residual.
    pub velocity: RowMap<Vec<f32>>,
    /// Reads overlay this worker's own updates the shards have not applied (read-my-writes).
    /// Right for the `add` rule, where a push is a change of the value; under `sgd`, `adagrad`
    /// or `ftrl` a push is a gradient the shard turns into a change, so reads show only what
    /// the shards applied.
    pub overlay: bool,
}

impl TableCache {
    pub fn new(width: usize, overlay: bool) -> TableCache {
        TableCache {
            width,
            overlay,
            ..Default::default()
        }
    }

    /// Stores a row pulled for clock `now` unless a fresher copy is cached (pulls may land out
    /// of order): one complete through more clocks, or through as many but pulled for a later
    /// clock. Reuses the cached row's buffer.
    pub fn store(&mut self, key: u64, values: &[f32], min_clock: u64, own_clock: u64, now: u64) {
        self.store_with(key, min_clock, own_clock, now, |dst| dst.set_dense(values));
    }

    /// [`TableCache::store`] of a row that `fill` sets (reusing the cached row's buffers) to
    /// a row of `width`; `fill` is not called when a fresher copy is cached. A sparse reply's
    /// row is stored this way, without a dense copy of the whole reply first.
    pub fn store_with(
        &mut self,
        key: u64,
        min_clock: u64,
        own_clock: u64,
        now: u64,
        fill: impl FnOnce(&mut RowValues),
    ) {
        match self.rows.get_mut(&key) {
            Some(c) if c.min_clock > min_clock => {}
            Some(c) if c.min_clock == min_clock && c.fetched_at > now => {}
            Some(c) => {
                fill(&mut c.values);
                debug_assert!(c.values.fits(self.width));
                // A reply complete through more clocks was served later by the same shard, so it
                // is at least as fresh as the copy it replaces.
                let fetched = c.fetched_at.max(now);
                (c.min_clock, c.own_clock, c.fetched_at) = (min_clock, own_clock, fetched);
            }
            None => {
                let mut values = RowValues::default();
                fill(&mut values);
                debug_assert!(values.fits(self.width));
                self.rows.insert(
                    key,
                    CachedRow {
                        values,
                        min_clock,
                        own_clock,
                        fetched_at: now,
                    },
                );
            }
        }
    }

    /// Stores the rows of a sparse reply (`indices` strictly increasing, as the decoder gives
    /// them, into a block of `keys.len() x width`) with the values of its dense form: each row
    /// by its entries when they are few ([`crate::row_values::kept_sparse`]), else dense, and
    /// never through a dense copy of the whole block. Indices out of order or past the block
    /// are an error, found before anything is stored.
    pub fn store_sparse(
        &mut self,
        keys: &[u64],
        indices: &[u32],
        values: &[f32],
        (min_clock, own_clock, now): (u64, u64, u64),
    ) -> Result<(), ProtoError> {
        let width = self.width;
        let n = keys.len() * width;
        let increasing = indices.windows(2).all(|p| p[0] < p[1]);
        if indices.len() != values.len()
            || !increasing
            || indices.last().is_some_and(|&i| i as usize >= n)
        {
            return Err(ProtoError::Malformed(format!(
                "{} sparse values at {} indices (increasing: {increasing}) for a block of {n}",
                values.len(),
                indices.len()
            )));
        }
        let mut j = 0;
        for (r, &key) in keys.iter().enumerate() {
            let (lo, hi) = (r * width, (r + 1) * width);
            let start = j;
            while j < indices.len() && (indices[j] as usize) < hi {
                j += 1;
            }
            let (at, vals) = (&indices[start..j], &values[start..j]);
            let cols = at.iter().map(|&i| (i as usize - lo) as u32);
            self.store_with(key, min_clock, own_clock, now, |dst| {
                dst.set_entries(width, cols, vals)
            });
        }
        Ok(())
    }

    /// Appends the row as this worker must see it: cached values, plus (with `overlay`) own
    /// logged updates the shard had not applied, the residual not sent yet, and this clock's
    /// pending updates.
    pub fn compose(&self, row: u64, out: &mut Vec<f32>) -> bool {
        let Some(c) = self.rows.get(&row) else {
            return false;
        };
        let start = out.len();
        c.values.append_dense(self.width, out);
        if !self.overlay {
            return true;
        }
        let dst = &mut out[start..];
        for (_, blocks) in self.own_log.range(c.own_clock..) {
            for b in blocks {
                b.add_row_to(row, self.width, dst);
            }
        }
        if let Some(d) = self.residual.get(&row) {
            add(dst, d);
        }
        self.pending.add_row_to(row, self.width, dst);
        true
    }

    /// Whether every row of `keys` is cached as a reply complete through `min_clock` brought it
    /// and reads add nothing to it (no own update, residual or pending change applies).
    pub fn serves_as_is(&self, keys: &[u64], min_clock: u64) -> bool {
        keys.iter().all(|k| {
            self.rows
                .get(k)
                .is_some_and(|c| c.min_clock == min_clock && self.adds_nothing(*k, c))
        })
    }

    /// Whether reads add nothing to the cached `row`, `c`: no own update, residual or pending
    /// change applies to it.
    fn adds_nothing(&self, row: u64, c: &CachedRow) -> bool {
        !self.overlay
            || !(self.residual.contains_key(&row)
                || self.pending.touches(row)
                || self
                    .own_log
                    .range(c.own_clock..)
                    .any(|(_, blocks)| blocks.iter().any(|b| b.keys().binary_search(&row).is_ok())))
    }

    /// Appends `rows` to `out` by their entries, as [`TableCache::compose`] would give them
    /// (the same bits), if every one is cached and reads add to it at most this worker's logged
    /// own updates; `false` (and `out` unspecified) otherwise. Logged updates merge into the
    /// row's entries as [`RowValues::add_update`] adds them, so a reader under staleness, whose
    /// rows lack its last clocks' pushes, still gets its rows by their entries: merged straight
    /// into `out` where the cached row and the updates are entries ([`push_sparse_sum`]; sums
    /// of `+0.0`, counts its own moves took back to zero, left out), else the dense way.
    pub fn compose_sparse(&self, rows: &[u64], out: &mut SparseRowsBuf) -> bool {
        let mut merged = RowValues::Sparse {
            at: Vec::new(),
            values: Vec::new(),
        };
        // Rows come in increasing order (a read's run): each logged block is walked once.
        let mut logged: Vec<(u64, RowCursor)> = (self.own_log.iter())
            .flat_map(|(&clock, blocks)| blocks.iter().map(move |b| (clock, RowCursor::new(b))))
            .collect();
        let mut updates = Vec::with_capacity(logged.len());
        for r in rows {
            let Some(c) = self.rows.get(r) else {
                return false;
            };
            if !self.overlay {
                c.values.push_to(out);
                continue;
            }
            if self.residual.contains_key(r) || self.pending.touches(*r) {
                return false;
            }
            updates.clear();
            for (_, cursor) in logged.iter_mut().filter(|(clock, _)| *clock >= c.own_clock) {
                updates.extend(cursor.row_update(*r, self.width));
            }
            if updates.is_empty() {
                c.values.push_to(out);
                continue;
            }
            // Merged straight into `out` where both sides are entries, else added the dense way.
            if let RowValues::Sparse { at, values } = &c.values {
                if push_sparse_sum((at, values), &updates, out) {
                    continue;
                }
            }
            merged.copy_from(&c.values);
            for u in &updates {
                merged.add_update(self.width, *u);
            }
            merged.push_to(out);
        }
        true
    }

    /// Whether at least half of `rows` are cached by their entries.
    pub fn mostly_sparse(&self, rows: &[u64]) -> bool {
        let sparse = rows
            .iter()
            .filter(|r| self.rows.get(r).is_some_and(|c| c.values.is_sparse()))
            .count();
        sparse * 2 >= rows.len()
    }

    /// Appends the cached values of `row` (or `width` zeros when it is not cached): the row as
    /// a shard served it, plus the acknowledged own updates folded into it so far (a row a
    /// prefetch is about to replace may lack up to [`MAX_DEFERRED_CLOCKS`] of them), without
    /// the rest of this worker's own updates. An estimate of the current value, for codecs
    /// that weigh a change against it.
    pub fn cached_or_zeros(&self, row: u64, out: &mut Vec<f32>) {
        match self.rows.get(&row) {
            Some(c) => c.values.append_dense(self.width, out),
            None => out.resize(out.len() + self.width, 0.0),
        }
    }

    /// Logs what clock `clock` sent, as the shards will apply it, for read-my-writes.
    pub fn log_sent(&mut self, clock: u64, sent: Vec<Sent>) {
        if self.overlay && sent.iter().any(|b| !b.is_empty()) {
            self.own_log.insert(clock, sent);
        }
    }

    /// Shard `applied_of(row)` has applied this worker's clocks below the returned value: fold those
    /// logged updates into cached rows that lack them, then drop log entries no cached row
    /// needs any more and every shard has applied (from `all_applied` on, they stay).
    /// Each logged block is walked once, front to back, in clock order (each row takes its
    /// updates in the order reads add them), rather than searched for every cached row: a
    /// reader under staleness folds a whole clock's push (LDA's millions of count changes)
    /// into rows pulled before it.
    ///
    /// Rows for which `replaced(row)` holds (a pull on its way will overwrite them) are left
    /// as they are, with the log entries their reads still add: under staleness every row an
    /// overlapped worker reads is pulled again as its clock ends, and where that pull lands
    /// before the next read, folding into the copy it replaces is wasted (a resident MF clock
    /// at rank 128 spent 8 of its 26-38 ms of host work so). Where the next read comes first,
    /// it adds the entries the fold would have (the same work, moved). A row the pull does not
    /// replace after all is folded at a later call: at the latest once it lacks more than
    /// [`MAX_DEFERRED_CLOCKS`], so the log it holds stays short.
    pub fn fold_acknowledged(
        &mut self,
        applied_of: impl Fn(u64) -> u64,
        replaced: impl Fn(u64) -> bool,
        all_applied: u64,
    ) {
        if self.own_log.is_empty() {
            return;
        }
        let width = self.width;
        // The rows that take the fold lack clocks their shard applied, and stay; the logged
        // clocks they lack are `fold_from..fold_to`. Those on their way out keep their entries.
        // `row`, cached as `c` and lacking clocks below `applied`, waits for its replacement.
        let deferred = |row: u64, c: &CachedRow, applied: u64| {
            applied - c.own_clock <= MAX_DEFERRED_CLOCKS && replaced(row)
        };
        let (mut fold_from, mut fold_to, mut keep_from) = (u64::MAX, 0, all_applied);
        for (&row, c) in &self.rows {
            let applied = applied_of(row);
            if c.own_clock >= applied {
                continue;
            }
            if deferred(row, c, applied) {
                keep_from = keep_from.min(c.own_clock);
            } else {
                fold_from = fold_from.min(c.own_clock);
                fold_to = fold_to.max(applied);
            }
        }
        if fold_from < fold_to {
            for (&clock, blocks) in self.own_log.range(fold_from..fold_to) {
                for b in blocks {
                    let mut cursor = RowCursor::new(b);
                    for &key in b.keys() {
                        let Some(c) = self.rows.get_mut(&key) else {
                            continue;
                        };
                        let applied = applied_of(key);
                        if c.own_clock <= clock && clock < applied && !deferred(key, c, applied) {
                            if let Some(u) = cursor.row_update(key, width) {
                                c.values.add_update(width, u);
                            }
                        }
                    }
                }
            }
            for (&row, c) in self.rows.iter_mut() {
                let applied = applied_of(row);
                if c.own_clock < applied && !deferred(row, c, applied) {
                    c.own_clock = applied;
                }
            }
        }
        self.own_log = self.own_log.split_off(&keep_from);
    }
}

#[cfg(test)]
mod tests;
