//! The worker's view of one table: cached rows, the clock each is complete through, the updates
//! of the current clock, and the log of the worker's own updates that shards may not have applied
//! yet. Pure bookkeeping: no I/O.

use crate::entries::{RowCursor, Sent};
use crate::pending::{add, Pending};
use crate::row_values::RowValues;
use ps_proto::{ProtoError, SparseRowsBuf};
use std::collections::{BTreeMap, HashMap};

/// A map keyed by row id, as the worker's view keeps its rows, residuals and pending rows: hashed
/// with foldhash's fast fixed hasher (row ids are this worker's own requests, not an attacker's
/// choice). With the standard library's SipHash, the lookups of an MF clock that reads and
/// pushes 17,770 rows of 128 cost about 2 ms of its 10-12 ms of host work.
pub type RowMap<V> = HashMap<u64, V, foldhash::fast::FixedState>;

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
    /// rows lack its last clocks' pushes, still gets its rows by their entries.
    pub fn compose_sparse(&self, rows: &[u64], out: &mut SparseRowsBuf) -> bool {
        let mut merged = RowValues::Sparse {
            at: Vec::new(),
            values: Vec::new(),
        };
        // Rows come in increasing order (a read's run): each logged block is walked once.
        let mut logged: Vec<(u64, RowCursor)> = (self.own_log.iter())
            .flat_map(|(&clock, blocks)| blocks.iter().map(move |b| (clock, RowCursor::new(b))))
            .collect();
        for r in rows {
            let Some(c) = self.rows.get(r) else {
                return false;
            };
            if self.adds_nothing(*r, c) {
                c.values.push_to(out);
                continue;
            }
            if self.residual.contains_key(r) || self.pending.touches(*r) {
                return false;
            }
            merged.copy_from(&c.values);
            for (_, cursor) in logged.iter_mut().filter(|(clock, _)| *clock >= c.own_clock) {
                if let Some(u) = cursor.row_update(*r, self.width) {
                    merged.add_update(self.width, u);
                }
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

    /// Appends the cached values of `row` (or `width` zeros when it is not cached), without
    /// this worker's own updates.
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
    /// logged updates into cached rows that lack them, then drop log entries every shard has.
    /// Each logged block is walked once, front to back, in clock order (each row takes its
    /// updates in the order reads add them), rather than searched for every cached row: a
    /// reader under staleness folds a whole clock's push (LDA's millions of count changes)
    /// into rows pulled before it.
    pub fn fold_acknowledged(&mut self, applied_of: impl Fn(u64) -> u64, all_applied: u64) {
        if self.own_log.is_empty() {
            return;
        }
        let width = self.width;
        // Clocks every cached row already holds (rows pulled after the push was applied, as
        // under staleness 0) and blocks no shard has applied need no walk.
        let held = self.rows.values().map(|c| c.own_clock).min().unwrap_or(0);
        for (&clock, blocks) in self.own_log.range(held..) {
            for b in blocks {
                if !b.keys().iter().any(|&k| clock < applied_of(k)) {
                    continue;
                }
                let mut cursor = RowCursor::new(b);
                for &key in b.keys() {
                    let Some(c) = self.rows.get_mut(&key) else {
                        continue;
                    };
                    if c.own_clock <= clock && clock < applied_of(key) {
                        if let Some(u) = cursor.row_update(key, width) {
                            c.values.add_update(width, u);
                        }
                    }
                }
            }
        }
        for (row, c) in self.rows.iter_mut() {
            c.own_clock = c.own_clock.max(applied_of(*row));
        }
        self.own_log = self.own_log.split_off(&all_applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: Vec<f32>, own_clock: u64) -> CachedRow {
        CachedRow {
            values: RowValues::Dense(values),
            min_clock: 0,
            own_clock,
            fetched_at: 0,
        }
    }

    fn block(key: u64, values: Vec<f32>) -> Vec<Sent> {
        vec![Sent::Rows(crate::pending::Block {
            keys: vec![key],
            values,
        })]
    }

    #[test]
    fn compose_adds_unapplied_own_updates_once() {
        let mut t = TableCache::new(2, true);
        t.rows.insert(3, row(vec![1.0, 1.0], 1));
        t.own_log.insert(0, block(3, vec![100.0, 100.0])); // already in values
        t.own_log.insert(1, block(3, vec![1.0, 2.0]));
        t.pending.singles.insert(3, vec![0.5, 0.5]);
        let mut out = Vec::new();
        assert!(t.compose(3, &mut out));
        assert_eq!(out, vec![2.5, 3.5]);
        // Shard applied clocks 0 and 1: fold clock 1 into the row, drop the log.
        t.fold_acknowledged(|_| 2, 2);
        assert!(t.own_log.is_empty());
        out.clear();
        t.compose(3, &mut out);
        assert_eq!(out, vec![2.5, 3.5]);
        assert!(!t.compose(4, &mut out));
        // Entries are logged and folded like rows.
        let e = crate::entries::Entries {
            keys: vec![3],
            at: vec![1],
            values: vec![10.0],
        };
        t.own_log.insert(2, vec![Sent::Entries(e)]);
        out.clear();
        t.compose(3, &mut out);
        assert_eq!(out, vec![2.5, 13.5]);
        assert!(!t.serves_as_is(&[3], 0));
        t.fold_acknowledged(|_| 3, 3);
        assert!(t.own_log.is_empty());
        assert_eq!(t.rows[&3].values.to_dense(2), vec![2.0, 13.0]);
    }

    #[test]
    fn log_keeps_sent_updates_only_with_overlay() {
        let mut t = TableCache::new(1, true);
        t.log_sent(5, block(9, vec![1.0]));
        assert_eq!(t.own_log[&5].len(), 1);
        t.log_sent(6, Vec::new());
        assert!(!t.own_log.contains_key(&6));
        let mut g = TableCache::new(1, false);
        g.log_sent(5, block(9, vec![1.0]));
        assert!(g.own_log.is_empty());
    }

    #[test]
    fn without_overlay_reads_show_only_what_shards_applied() {
        let mut t = TableCache::new(1, false);
        t.rows.insert(1, row(vec![3.0], 0));
        t.pending.singles.insert(1, vec![100.0]);
        t.residual.insert(1, vec![7.0]);
        let mut out = Vec::new();
        assert!(t.compose(1, &mut out));
        assert_eq!(out, vec![3.0]);
    }

    #[test]
    fn the_residual_is_part_of_own_updates() {
        let mut t = TableCache::new(1, true);
        t.rows.insert(1, row(vec![3.0], 0));
        t.residual.insert(1, vec![0.25]);
        t.pending.singles.insert(1, vec![1.0]);
        let mut out = Vec::new();
        t.compose(1, &mut out);
        assert_eq!(out, vec![4.25]);
    }

    #[test]
    fn rows_serve_as_is_only_when_reads_add_nothing() {
        let mut t = TableCache::new(1, true);
        t.store(1, &[1.0], 3, 2, 0);
        t.store(2, &[1.0], 3, 2, 0);
        assert!(t.serves_as_is(&[1, 2], 3));
        assert!(!t.serves_as_is(&[1, 2], 2), "another reply's clock");
        assert!(!t.serves_as_is(&[1, 3], 3), "a row not cached");
        t.own_log.insert(1, block(2, vec![5.0])); // applied: own_clock 2 covers clock 1
        assert!(t.serves_as_is(&[2], 3));
        t.own_log.insert(2, block(2, vec![5.0]));
        assert!(!t.serves_as_is(&[2], 3), "an unapplied own update");
        t.pending.singles.insert(1, vec![1.0]);
        assert!(!t.serves_as_is(&[1], 3), "a pending update");
        let mut g = TableCache::new(1, false);
        g.store(1, &[1.0], 3, 0, 0);
        g.pending.singles.insert(1, vec![1.0]);
        assert!(
            g.serves_as_is(&[1], 3),
            "no overlay: reads are what shards applied"
        );
    }

    #[test]
    fn a_stale_reply_never_replaces_a_fresher_row_and_buffers_are_reused() {
        let mut t = TableCache::new(2, true);
        t.store(1, &[1.0, 1.0], 3, 0, 0);
        let ptr = |t: &TableCache| match &t.rows[&1].values {
            RowValues::Dense(v) => v.as_ptr(),
            RowValues::Sparse { .. } => std::ptr::null(),
        };
        let before = ptr(&t);
        t.store(1, &[2.0, 2.0], 2, 0, 1);
        assert_eq!(t.rows[&1].values.to_dense(2), vec![1.0, 1.0]);
        t.store(1, &[5.0, 6.0], 4, 1, 2);
        assert_eq!(t.rows[&1].values.to_dense(2), vec![5.0, 6.0]);
        assert_eq!(ptr(&t), before);
        assert_eq!((t.rows[&1].min_clock, t.rows[&1].own_clock), (4, 1));
        // As complete, but pulled for an earlier clock than the cached copy: kept out.
        t.store(1, &[7.0, 7.0], 4, 1, 1);
        assert_eq!(
            (t.rows[&1].values.to_dense(2), t.rows[&1].fetched_at),
            (vec![5.0, 6.0], 2)
        );
        // More complete but pulled for an earlier clock (it landed late): the shard served it
        // after the cached copy, so it takes the copy's place and its clock.
        t.store(1, &[8.0, 8.0], 5, 2, 1);
        assert_eq!(
            (t.rows[&1].values.to_dense(2), t.rows[&1].fetched_at),
            (vec![8.0, 8.0], 2)
        );
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn a_sparse_reply_is_stored_row_by_row_as_its_dense_form_would_be() {
        let width = 4;
        let mut cache = TableCache::new(width, true);
        // A stale copy of row 7 with other values: replaced.
        cache.store(7, &[9.0; 4], 0, 0, 0);
        let keys = [3u64, 7, 8, 9];
        // Rows 3 and 8 hold two entries each (kept by them), row 9 three (dense), row 7 none.
        let indices = [1u32, 3, 9, 10, 12, 13, 15];
        let values = [1.5, -0.0, f32::NAN, 2.0, 1.0, 2.0, 3.0];
        cache
            .store_sparse(&keys, &indices, &values, (2, 1, 5))
            .unwrap();
        let dense = ps_proto::codec::Decoded::Sparse {
            indices: indices.to_vec(),
            values: values.to_vec(),
        }
        .into_dense(16)
        .unwrap();
        for (r, k) in keys.iter().enumerate() {
            let c = &cache.rows[k];
            let v = c.values.to_dense(4);
            assert_eq!(bits(&v), bits(&dense[r * 4..(r + 1) * 4]), "row {k}");
            assert_eq!((c.min_clock, c.own_clock, c.fetched_at), (2, 1, 5));
            assert_eq!(c.values.is_sparse(), *k != 9, "row {k}");
        }
        // Read back by their entries: the same bits, dense rows' zeros left out.
        let mut buf = SparseRowsBuf::default();
        buf.clear(4);
        assert!(cache.compose_sparse(&keys, &mut buf));
        assert_eq!(bits(&buf.view().to_dense()), bits(&dense));
        assert_eq!(buf.view().entries(), 7);
        let mut composed = Vec::new();
        for k in keys {
            cache.compose(k, &mut composed);
        }
        assert_eq!(bits(&composed), bits(&dense));
        // Not when a row is missing, or a read would add an own update to it.
        assert!(!cache.compose_sparse(&[3, 4], &mut buf));
        cache.pending.singles.insert(8, vec![1.0; 4]);
        assert!(!cache.compose_sparse(&[8], &mut buf));
        cache.pending.singles.clear();
        // A reply older than the cached rows changes nothing.
        cache.store_sparse(&keys, &[0], &[5.0], (1, 0, 6)).unwrap();
        assert_eq!(cache.rows[&3].values.to_dense(4)[0], 0.0);
        // Acknowledged own entries fold into a sparse row, which stays sparse.
        let e = crate::entries::Entries {
            keys: vec![3, 7],
            at: vec![0, 6],
            values: vec![4.0, 5.0],
        };
        cache.own_log.insert(1, vec![Sent::Entries(e)]);
        cache.fold_acknowledged(|_| 2, 2);
        let (r3, r7) = (&cache.rows[&3].values, &cache.rows[&7].values);
        assert_eq!(bits(&r3.to_dense(4)), bits(&[4.0, 1.5, 0.0, -0.0]));
        assert!(!r3.is_sparse(), "three entries of four: dense");
        assert_eq!(r7.to_dense(4), [0.0, 0.0, 5.0, 0.0]);
        assert!(r7.is_sparse());
    }

    /// A reader under staleness: its cached rows lack its last clocks' pushes, which the own
    /// log holds. Composed by their entries, the rows are the dense compose's, bit for bit,
    /// whether the log adds entries (merged) or whole rows (the row goes dense), and whatever
    /// part of the log a row already holds.
    #[test]
    fn rows_with_logged_own_updates_compose_by_their_entries_as_dense() {
        let width = 8;
        let mut cache = TableCache::new(width, true);
        let keys = [2u64, 5, 6, 9];
        // Rows 2, 5 and 9 by a few entries (a -0.0 among them), row 6 dense.
        let indices = [1u32, 4, 9, 14, 16, 17, 18, 19, 20, 21, 22, 23, 27];
        let values = [
            1.0, -0.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 4.0,
        ];
        cache
            .store_sparse(&keys, &indices, &values, (1, 1, 1))
            .unwrap();
        assert!(!cache.rows[&6].values.is_sparse());
        // Clock 0's update is in every row already (own_clock 1), clocks 1 and 2 are not.
        let entries = |keys: Vec<u64>, at: Vec<u64>, values: Vec<f32>| {
            Sent::Entries(crate::entries::Entries { keys, at, values })
        };
        cache
            .own_log
            .insert(0, vec![entries(vec![2], vec![0], vec![100.0])]);
        cache.own_log.insert(
            1,
            vec![entries(
                vec![2, 5, 6],
                vec![1, 2, 9, 17],
                vec![-1.0, 0.5, -3.0, 1.0],
            )],
        );
        cache.own_log.insert(
            2,
            vec![
                entries(vec![2, 9], vec![1, 8], vec![0.25, -0.0]),
                Sent::Rows(crate::pending::Block {
                    keys: vec![9],
                    values: vec![0.5; 8],
                }),
            ],
        );
        let mut buf = SparseRowsBuf::default();
        buf.clear(width);
        assert!(cache.compose_sparse(&keys, &mut buf));
        let mut dense = Vec::new();
        for k in keys {
            assert!(cache.compose(k, &mut dense));
        }
        assert_eq!(bits(&buf.view().to_dense()), bits(&dense));
        assert_eq!(
            dense[1], 0.25,
            "1 - 1 + 0.25: clock 0's 100 not added again"
        );
        // The cached rows themselves are unchanged.
        assert_eq!(cache.rows[&2].values.to_dense(width)[..2], [0.0, 1.0]);
        // A residual or a pending change of a row still sends the read the dense way.
        cache.residual.insert(5, vec![0.5; 8]);
        assert!(!cache.compose_sparse(&keys, &mut buf));
        cache.residual.clear();
        cache.pending.singles.insert(9, vec![1.0; 8]);
        assert!(!cache.compose_sparse(&keys, &mut buf));
    }

    /// A random log of several clocks, each with blocks of entries and of whole rows over
    /// some of the keys (some not cached), shards that have applied different clocks:
    /// composed by their entries before the fold, rows are the dense compose's; the fold,
    /// walking each block once, leaves every row as folding row by row through its own range
    /// of the log does, bit for bit; and a row every shard has applied reads as it did before.
    #[test]
    fn a_random_log_folds_block_by_block_as_row_by_row() {
        let (width, nrows) = (16usize, 3000u64);
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        let mut cache = TableCache::new(width, true);
        for k in 0..nrows {
            // A third of the rows dense, the rest by a few entries; own clock 0 to 3.
            let own = next(4);
            if next(3) == 0 {
                let row: Vec<f32> = (0..width).map(|_| next(7) as f32 - 3.0).collect();
                cache.store(k, &row, 1, own, 1);
            } else {
                let cols: Vec<u32> = (0..width as u32).filter(|_| next(6) == 0).collect();
                let vals: Vec<f32> = cols.iter().map(|_| next(5) as f32 - 2.0).collect();
                cache.store_with(k, 1, own, 1, |v| {
                    v.set_entries(width, cols.iter().copied(), &vals)
                });
            }
        }
        for clock in 0..4 {
            let mut blocks = Vec::new();
            for _ in 0..1 + next(3) {
                // Half the keys, some beyond the cached rows.
                let keys: Vec<u64> = (0..nrows + 200).filter(|_| next(2) == 0).collect();
                if next(4) == 0 {
                    let values = (0..keys.len() * width)
                        .map(|_| next(9) as f32 - 4.0)
                        .collect();
                    blocks.push(Sent::Rows(crate::pending::Block { keys, values }));
                    continue;
                }
                let (mut at, mut values) = (Vec::new(), Vec::new());
                for p in 0..(keys.len() * width) as u64 {
                    if next(5) == 0 {
                        at.push(p);
                        values.push([-0.0, 1.0, -2.5, 3.0][next(4) as usize]);
                    }
                }
                let e = crate::entries::Entries { keys, at, values };
                blocks.push(Sent::Entries(e));
            }
            cache.own_log.insert(clock, blocks);
        }
        let keys: Vec<u64> = (0..nrows).collect();
        let mut dense = Vec::new();
        for &k in &keys {
            assert!(cache.compose(k, &mut dense));
        }
        let mut buf = SparseRowsBuf::default();
        buf.clear(width);
        assert!(cache.compose_sparse(&keys, &mut buf));
        assert_eq!(bits(&buf.view().to_dense()), bits(&dense));

        // Rows of even keys: their shard applied clocks 0-3; odd keys: 0-1.
        let applied_of = |r: u64| if r.is_multiple_of(2) { 4 } else { 2 };
        let mut by_rows = TableCache::new(width, true);
        by_rows.rows = cache.rows.clone();
        by_rows.own_log = cache.own_log.clone();
        for (&row, c) in by_rows.rows.iter_mut() {
            let lacked = c.own_clock..applied_of(row).max(c.own_clock);
            let logged = by_rows.own_log.range(lacked);
            for u in logged
                .flat_map(|(_, b)| b)
                .filter_map(|b| b.row_update(row, width))
            {
                c.values.add_update(width, u);
            }
            c.own_clock = c.own_clock.max(applied_of(row));
        }
        cache.fold_acknowledged(applied_of, 2);
        assert_eq!(cache.own_log.keys().copied().collect::<Vec<_>>(), [2, 3]);
        for &k in &keys {
            let (c, r) = (&cache.rows[&k], &by_rows.rows[&k]);
            assert_eq!(c.own_clock, r.own_clock, "row {k}");
            assert_eq!(c.values.is_sparse(), r.values.is_sparse(), "row {k}");
            let (c, r) = (c.values.to_dense(width), r.values.to_dense(width));
            assert_eq!(bits(&c), bits(&r), "row {k}");
        }
        let mut after = Vec::new();
        for &k in &keys {
            assert!(cache.compose(k, &mut after));
        }
        assert_eq!(bits(&after), bits(&dense), "reads unchanged by the fold");
    }

    #[test]
    fn a_bad_sparse_reply_stores_nothing() {
        let mut cache = TableCache::new(2, true);
        let at = (1, 0, 1);
        for (indices, values) in [
            (vec![0u32, 4], vec![1.0f32, 2.0]), // past the block of 2 x 2
            (vec![2, 1], vec![1.0, 2.0]),       // out of order
            (vec![1, 1], vec![1.0, 2.0]),       // repeated
            (vec![1], vec![1.0, 2.0]),          // lengths differ
        ] {
            assert!(cache.store_sparse(&[1, 2], &indices, &values, at).is_err());
            assert!(cache.rows.is_empty(), "{indices:?}");
        }
    }
}
