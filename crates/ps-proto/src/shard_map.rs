//! Which shard holds which rows: every table is split into contiguous key ranges, one per shard.

use crate::control::TableSpec;
use serde::{Deserialize, Serialize};

/// Half-open range of rows `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: u64,
    pub end: u64,
}

impl KeyRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn contains(&self, key: u64) -> bool {
        key >= self.start && key < self.end
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Address of each shard, indexed by shard id.
    pub shards: Vec<String>,
    pub tables: Vec<TableSpec>,
}

impl ShardMap {
    pub fn num_shards(&self) -> u32 {
        self.shards.len() as u32
    }

    pub fn table(&self, id: u32) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.id == id)
    }

    /// The rows of a table with `rows` rows that shard `shard` of `shards` holds.
    pub fn range_of(rows: u64, shards: u32, shard: u32) -> KeyRange {
        let start = |s: u32| ((rows as u128 * s as u128) / shards.max(1) as u128) as u64;
        KeyRange {
            start: start(shard),
            end: start(shard + 1),
        }
    }

    /// The shard holding `row` (row must be < rows).
    pub fn shard_of(rows: u64, shards: u32, row: u64) -> u32 {
        let shards = shards.max(1);
        let mut s = ((row as u128 * shards as u128) / rows.max(1) as u128) as u32;
        s = s.min(shards - 1);
        while s + 1 < shards && Self::range_of(rows, shards, s + 1).start <= row {
            s += 1;
        }
        while s > 0 && Self::range_of(rows, shards, s).start > row {
            s -= 1;
        }
        s
    }
}

/// The shards of one table's rows, for finding the shard of many rows: [`ShardMap::shard_of`]
/// without its divisions.
#[derive(Debug, Clone)]
pub struct ShardStarts(Vec<u64>);

impl ShardStarts {
    /// The first row of each of `shards` shards of a table with `rows` rows.
    pub fn new(rows: u64, shards: u32) -> ShardStarts {
        let shards = shards.max(1);
        ShardStarts(
            (0..shards)
                .map(|s| ShardMap::range_of(rows, shards, s).start)
                .collect(),
        )
    }

    /// The shard holding `row`, as [`ShardMap::shard_of`] gives it: the last whose range
    /// starts at or before it.
    pub fn shard_of(&self, row: u64) -> u32 {
        (self.0.partition_point(|&s| s <= row).max(1) - 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_row_has_exactly_one_shard(rows in 1u64..5000, shards in 1u32..17) {
            let mut covered = 0;
            for s in 0..shards {
                let r = ShardMap::range_of(rows, shards, s);
                covered += r.len();
                for row in [r.start, r.end.saturating_sub(1)] {
                    if r.contains(row) {
                        prop_assert_eq!(ShardMap::shard_of(rows, shards, row), s);
                    }
                }
            }
            prop_assert_eq!(covered, rows);
        }

        #[test]
        fn shard_of_agrees_with_ranges(rows in 1u64..1_000_000_000_000, shards in 1u32..64, frac in 0.0f64..1.0) {
            let row = ((rows as f64 * frac) as u64).min(rows - 1);
            let s = ShardMap::shard_of(rows, shards, row);
            prop_assert!(ShardMap::range_of(rows, shards, s).contains(row));
        }

        #[test]
        fn shard_starts_agree_with_shard_of(rows in 1u64..1_000_000_000_000, shards in 1u32..64, frac in 0.0f64..1.0) {
            let row = ((rows as f64 * frac) as u64).min(rows - 1);
            let starts = ShardStarts::new(rows, shards);
            for r in [row, 0, rows - 1, row.saturating_sub(1), (row + 1).min(rows - 1)] {
                prop_assert_eq!(starts.shard_of(r), ShardMap::shard_of(rows, shards, r));
            }
        }
    }
}
