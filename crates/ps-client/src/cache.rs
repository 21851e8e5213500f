//! The worker's view of one table: cached rows, the clock each is complete through, the updates
//! of the current clock, and the log of the worker's own updates that shards may not have applied
//! yet. Pure bookkeeping: no I/O.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct CachedRow {
    pub values: Vec<f32>,
    /// The shard's min clock when it served the row: complete through this many clocks of everyone.
    pub min_clock: u64,
    /// How many of this worker's own clocks the values already contain.
    pub own_clock: u64,
    /// This worker's clock when the row arrived.
    pub fetched_at: u64,
}

#[derive(Debug, Default)]
pub struct TableCache {
    pub rows: HashMap<u64, CachedRow>,
    /// Updates of the current clock, coalesced per row.
    pub pending: HashMap<u64, Vec<f32>>,
    /// Own updates already sent, by clock, until every shard has applied them.
    pub own_log: BTreeMap<u64, HashMap<u64, Vec<f32>>>,
}

fn add(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

impl TableCache {
    /// Appends the row as this worker must see it: cached values, plus own logged updates the
    /// shard had not applied, plus this clock's pending updates.
    pub fn compose(&self, row: u64, out: &mut Vec<f32>) -> bool {
        let Some(c) = self.rows.get(&row) else {
            return false;
        };
        let start = out.len();
        out.extend_from_slice(&c.values);
        for (_, updates) in self.own_log.range(c.own_clock..) {
            if let Some(d) = updates.get(&row) {
                add(&mut out[start..], d);
            }
        }
        if let Some(d) = self.pending.get(&row) {
            add(&mut out[start..], d);
        }
        true
    }

    /// Moves this clock's pending updates into the own log under `clock`; returns them sorted by row.
    pub fn seal(&mut self, clock: u64) -> Vec<(u64, Vec<f32>)> {
        let pending = std::mem::take(&mut self.pending);
        let mut rows: Vec<(u64, Vec<f32>)> = pending.iter().map(|(k, v)| (*k, v.clone())).collect();
        rows.sort_unstable_by_key(|(k, _)| *k);
        if !pending.is_empty() {
            self.own_log.insert(clock, pending);
        }
        rows
    }

    /// Shard `applied_of(row)` has applied this worker's clocks below the returned value: fold those
    /// logged updates into cached rows that lack them, then drop log entries every shard has.
    pub fn fold_acknowledged(&mut self, applied_of: impl Fn(u64) -> u64, all_applied: u64) {
        if self.own_log.is_empty() {
            return;
        }
        for (row, c) in self.rows.iter_mut() {
            let applied = applied_of(*row);
            if c.own_clock >= applied {
                continue;
            }
            for (_, updates) in self.own_log.range(c.own_clock..applied) {
                if let Some(d) = updates.get(row) {
                    add(&mut c.values, d);
                }
            }
            c.own_clock = applied;
        }
        self.own_log = self.own_log.split_off(&all_applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_adds_unapplied_own_updates_once() {
        let mut t = TableCache::default();
        t.rows.insert(
            3,
            CachedRow {
                values: vec![1.0, 1.0],
                min_clock: 0,
                own_clock: 1,
                fetched_at: 1,
            },
        );
        t.own_log
            .insert(0, HashMap::from([(3, vec![100.0, 100.0])])); // already in values
        t.own_log.insert(1, HashMap::from([(3, vec![1.0, 2.0])]));
        t.pending.insert(3, vec![0.5, 0.5]);
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
    }

    #[test]
    fn seal_moves_pending_to_the_log() {
        let mut t = TableCache::default();
        t.pending.insert(9, vec![1.0]);
        t.pending.insert(2, vec![2.0]);
        let rows = t.seal(5);
        assert_eq!(rows, vec![(2, vec![2.0]), (9, vec![1.0])]);
        assert!(t.pending.is_empty());
        assert_eq!(t.own_log[&5].len(), 2);
        assert!(t.seal(6).is_empty());
        assert!(!t.own_log.contains_key(&6));
    }
}
