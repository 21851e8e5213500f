//! A sparse table slice: the key range `range` of a (possibly huge, e.g. `u64::MAX`-row) key
//! space, storing only the rows that have been written.
//!
//! Storage: a hash map from key to a slot, and append-only arenas holding each slot's row and
//! optimizer state contiguously (slots in first-write order). A hash map because the hot path
//! is point lookups of scattered hashed keys, O(1) each, and nothing on the request path needs
//! key order (a checkpoint can sort `keys()` once); std's `HashMap` with its randomly keyed
//! SipHash because workers choose the keys, and a predictable hash would let one pick keys
//! that collide. Rows are never removed, so the arenas need no free list, a lookup hit touches
//! one map entry plus one contiguous row, and checkpoints can read values and state as slices.

use crate::error::ServerError;
use crate::table::{check_parts, check_request};
use ps_proto::init;
use ps_proto::rules;
use ps_proto::{KeyRange, ProtoError, TableSpec};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct SparseTable {
    pub spec: TableSpec,
    pub range: KeyRange,
    /// key -> slot.
    index: HashMap<u64, usize>,
    /// slot -> key.
    keys: Vec<u64>,
    /// `width` values per slot.
    data: Vec<f32>,
    /// `width * state_per_cell(rule)` floats per slot, interleaved per cell.
    state: Vec<f32>,
}

impl SparseTable {
    pub fn new(spec: TableSpec, range: KeyRange) -> SparseTable {
        SparseTable {
            spec,
            range,
            index: HashMap::new(),
            keys: Vec::new(),
            data: Vec::new(),
            state: Vec::new(),
        }
    }

    /// The slice `range` of `spec` from its parts (e.g. a checkpoint): the stored rows' `keys`
    /// (distinct, inside `range`) in slot order, their values `data` and optimizer state
    /// `state` as [`SparseTable::data`] and [`SparseTable::state`] lay them out.
    pub fn from_parts(
        spec: TableSpec,
        range: KeyRange,
        keys: Vec<u64>,
        data: Vec<f32>,
        state: Vec<f32>,
    ) -> Result<SparseTable, ServerError> {
        check_parts(&spec, range, keys.len(), data.len(), state.len())?;
        let bad = |reason: String| ServerError::BadTable {
            table: spec.id,
            reason: format!("({}) {reason}", spec.name),
        };
        let mut index = HashMap::with_capacity(keys.len());
        for (slot, &key) in keys.iter().enumerate() {
            if !range.contains(key) {
                return Err(bad(format!(
                    "key {key} is outside the range {}..{}",
                    range.start, range.end
                )));
            }
            if index.insert(key, slot).is_some() {
                return Err(bad(format!("key {key} is stored twice")));
            }
        }
        Ok(SparseTable {
            spec,
            range,
            index,
            keys,
            data,
            state,
        })
    }

    pub fn width(&self) -> u32 {
        self.spec.width
    }

    /// Checks that a request's width and keys fit this slice; nothing is changed.
    pub fn check(&self, width: u32, keys: &[u64]) -> Result<(), ProtoError> {
        check_request(&self.spec, self.range, width, keys)
    }

    /// Rows stored (written at least once).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Calls `f` with the row of each key of `keys` (already checked), in order. A key never
    /// written reads as its initial value (`init::value`) and is not stored.
    fn each_row(&self, keys: &[u64], mut f: impl FnMut(&[f32])) {
        let w = self.spec.width as usize;
        let mut fresh = Vec::new();
        for &k in keys {
            match self.index.get(&k) {
                Some(&slot) => f(&self.data[slot * w..(slot + 1) * w]),
                None => {
                    fresh.clear();
                    fresh.extend(
                        (0..self.spec.width)
                            .map(|c| init::value(self.spec.init, self.spec.id, k, c)),
                    );
                    f(&fresh);
                }
            }
        }
    }

    /// Appends the rows of `keys` (already checked) to `out` (see [`SparseTable::each_row`]).
    pub fn read_into(&self, keys: &[u64], out: &mut Vec<f32>) {
        out.reserve(keys.len() * self.spec.width as usize);
        self.each_row(keys, |row| out.extend_from_slice(row));
    }

    /// [`SparseTable::read_into`] as raw f32 wire bytes (little-endian), appended to `out`.
    pub fn read_wire_into(&self, keys: &[u64], out: &mut Vec<u8>) {
        out.reserve(keys.len() * self.spec.width as usize * 4);
        self.each_row(keys, |row| ps_proto::extend_f32s(out, row));
    }

    /// The slot of `key`, creating the row from its initial value (and fresh optimizer state)
    /// if it was never written.
    fn slot(&mut self, key: u64) -> usize {
        if let Some(&slot) = self.index.get(&key) {
            return slot;
        }
        let slot = self.keys.len();
        let (id, init, width) = (self.spec.id, self.spec.init, self.spec.width);
        self.data
            .extend((0..width).map(|c| init::value(init, id, key, c)));
        let k = rules::state_per_cell(self.spec.rule) * width as usize;
        let start = self.state.len();
        self.state.resize(start + k, 0.0);
        rules::init_state(self.spec.rule, &mut self.state[start..]);
        self.keys.push(key);
        self.index.insert(key, slot);
        slot
    }

    /// Applies one delta row per key (already checked) with the table's rule; rows never
    /// written are created from their initial value first.
    pub fn apply(&mut self, keys: &[u64], values: &[f32]) {
        let w = self.spec.width as usize;
        let rule = self.spec.rule;
        let k = rules::state_per_cell(rule) * w;
        for (&key, d) in keys.iter().zip(values.chunks_exact(w)) {
            let slot = self.slot(key);
            rules::apply(
                rule,
                &mut self.data[slot * w..(slot + 1) * w],
                &mut self.state[slot * k..(slot + 1) * k],
                d,
            );
        }
    }

    /// Applies a sparse block over the rows of `keys` (see `Table::apply_sparse`); rows never
    /// written are created from their initial value first.
    pub fn apply_sparse(&mut self, keys: &[u64], indices: &[u32], values: &[f32]) {
        let w = self.spec.width as usize;
        let rule = self.spec.rule;
        let k = rules::state_per_cell(rule);
        for (&i, &v) in indices.iter().zip(values) {
            let (r, c) = (i as usize / w, i as usize % w);
            let cell = self.slot(keys[r]) * w + c;
            rules::apply(
                rule,
                &mut self.data[cell..cell + 1],
                &mut self.state[k * cell..k * (cell + 1)],
                &[v],
            );
        }
    }

    /// The key of each stored row, in slot (first-write) order.
    pub fn keys(&self) -> &[u64] {
        &self.keys
    }

    /// The stored rows, row-major in slot order (row `i` is `keys()[i]`).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The optimizer state of the stored rows: `spec.rule.state_per_cell()` floats per cell,
    /// interleaved per cell, cells in the order of [`SparseTable::data`].
    pub fn state(&self) -> &[f32] {
        &self.state
    }

    /// The stored rows as (key, row), sorted by key.
    pub fn sorted_rows(&self) -> Vec<(u64, &[f32])> {
        let w = self.spec.width as usize;
        let mut rows: Vec<(u64, &[f32])> = self
            .keys
            .iter()
            .enumerate()
            .map(|(slot, &key)| (key, &self.data[slot * w..(slot + 1) * w]))
            .collect();
        rows.sort_unstable_by_key(|(k, _)| *k);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;
    use proptest::prelude::*;
    use ps_proto::{Init, Layout, ShardMap, UpdateRule};

    fn spec(rows: u64, width: u32, rule: UpdateRule, init: Init, layout: Layout) -> TableSpec {
        TableSpec {
            id: 4,
            name: "s".into(),
            rows,
            width,
            rule,
            init,
            staleness: Some(0),
            layout,
            push_codec: Default::default(),
            pull_codec: Default::default(),
        }
    }

    const FTRL: UpdateRule = UpdateRule::Ftrl {
        alpha: 0.1,
        beta: 1.0,
        l1: 0.5,
        l2: 0.1,
    };

    #[test]
    fn reading_an_absent_key_gives_its_init_without_storing_it() {
        let init = Init::Normal { std: 0.3, seed: 9 };
        let range = ShardMap::range_of(u64::MAX, 3, 1);
        let t = SparseTable::new(
            spec(u64::MAX, 3, UpdateRule::Add, init, Layout::Sparse),
            range,
        );
        let key = range.start + 12_345_678_901;
        let mut out = Vec::new();
        t.read_into(&[key, range.end - 1], &mut out);
        let want: Vec<f32> = [key, range.end - 1]
            .iter()
            .flat_map(|&k| (0..3).map(move |c| init::value(init, 4, k, c)))
            .collect();
        assert_eq!(out, want);
        assert!(out.iter().all(|v| *v != 0.0));
        assert!(t.is_empty() && !t.contains(key));
        let mut wire = Vec::new();
        t.read_wire_into(&[key, range.end - 1], &mut wire);
        assert_eq!(
            wire,
            ps_proto::encode_f32s(&want),
            "the raw reply payload, written once"
        );

        let zeros = SparseTable::new(spec(1 << 40, 2, FTRL, Init::Zeros, Layout::Sparse), range);
        let mut out = Vec::new();
        zeros.read_into(&[7, 7], &mut out);
        assert_eq!(out, vec![0.0; 4]);
        assert!(zeros.is_empty());
    }

    #[test]
    fn applying_to_an_absent_key_creates_it_from_its_init() {
        let init = Init::Uniform {
            low: 1.0,
            high: 2.0,
            seed: 1,
        };
        let range = KeyRange {
            start: 0,
            end: u64::MAX / 2,
        };
        let mut t = SparseTable::new(
            spec(u64::MAX, 2, UpdateRule::Add, init, Layout::Sparse),
            range,
        );
        let key = 0xdead_beef_cafe;
        let before = (init::value(init, 4, key, 0), init::value(init, 4, key, 1));
        t.apply(&[key], &[0.5, -0.5]);
        assert_eq!(t.len(), 1);
        assert!(t.contains(key));
        let mut out = Vec::new();
        t.read_into(&[key], &mut out);
        assert_eq!(out, vec![before.0 + 0.5, before.1 - 0.5]);
        // A second write to the same key, in the same push, updates the stored row.
        t.apply(&[key, 3, key], &[1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.keys(), &[key, 3]);
        let mut out = Vec::new();
        t.read_into(&[key], &mut out);
        assert_eq!(out, vec![before.0 + 2.5, before.1 + 1.5]);
        assert_eq!(t.sorted_rows()[0].0, 3);
        assert!(t.state().is_empty());
    }

    #[test]
    fn keys_outside_the_shards_range_are_rejected() {
        let rows = u64::MAX;
        let range = ShardMap::range_of(rows, 4, 2);
        let t = Table::new(spec(rows, 1, FTRL, Init::Zeros, Layout::Sparse), range);
        assert!(t.as_sparse().is_some());
        assert!(t.check(1, &[range.start, range.end - 1]).is_ok());
        for bad in [range.start - 1, range.end, u64::MAX, 0] {
            assert!(
                matches!(
                    t.check(1, &[range.start, bad]),
                    Err(ProtoError::KeyOutOfRange { key, .. }) if key == bad
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            t.check(2, &[range.start]),
            Err(ProtoError::WrongWidth { .. })
        ));
        // The last shard's range stops below rows: keys are < rows.
        let last = ShardMap::range_of(rows, 4, 3);
        assert_eq!(last.end, u64::MAX);
        let t = Table::new(spec(rows, 1, FTRL, Init::Zeros, Layout::Sparse), last);
        assert!(t.check(1, &[u64::MAX - 1]).is_ok());
        assert!(t.check(1, &[u64::MAX]).is_err());
    }

    #[test]
    fn sparse_ftrl_state_is_stored_per_row() {
        let range = KeyRange { start: 0, end: 100 };
        let mut t = SparseTable::new(spec(100, 2, FTRL, Init::Zeros, Layout::Sparse), range);
        t.apply(&[42], &[0.2, 0.0]);
        assert_eq!(t.data(), &[0.0, 0.0], "inside the l1 ball");
        assert_eq!(t.state(), &[0.2, 0.2 * 0.2, 0.0, 0.0]);
        for _ in 0..5 {
            t.apply(&[42], &[0.2, 0.0]);
        }
        assert!(t.data()[0] < 0.0 && t.data()[1] == 0.0);
    }

    #[test]
    fn batch_cap_of_a_huge_sparse_range_is_bounded() {
        let range = ShardMap::range_of(u64::MAX, 2, 0);
        let t = Table::new(spec(u64::MAX, 64, FTRL, Init::Zeros, Layout::Sparse), range);
        assert_eq!(t.batch_cap_cells(1 << 26), 1 << 26);
        let small = KeyRange { start: 0, end: 10 };
        let t = Table::new(spec(10, 4, FTRL, Init::Zeros, Layout::Sparse), small);
        assert_eq!(t.batch_cap_cells(1 << 26), 40);
        assert_eq!(t.cells(), 0);
    }

    fn rules() -> impl Strategy<Value = UpdateRule> {
        prop_oneof![
            Just(UpdateRule::Add),
            (0.01f32..1.0).prop_map(|lr| UpdateRule::Sgd { lr }),
            (0.01f32..1.0, 1e-6f32..0.1, 0.0f32..1.0).prop_map(|(lr, eps, a)| {
                UpdateRule::Adagrad {
                    lr,
                    eps,
                    initial_accumulator: a,
                }
            }),
            (0.01f32..1.0, 0.0f32..2.0, 0.0f32..2.0, 0.0f32..1.0).prop_map(
                |(alpha, beta, l1, l2)| UpdateRule::Ftrl {
                    alpha,
                    beta,
                    l1,
                    l2
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn dense_and_sparse_tables_agree(
            rule in rules(),
            normal_init in any::<bool>(),
            width in 1u32..5,
            start in 0u64..50,
            pushes in prop::collection::vec(
                prop::collection::vec((0u64..24, prop::collection::vec(-3.0f32..3.0, 4)), 1..12),
                1..12,
            ),
        ) {
            let init = if normal_init && !matches!(rule, UpdateRule::Ftrl { .. }) {
                Init::Normal { std: 0.5, seed: 3 }
            } else {
                Init::Zeros
            };
            let range = KeyRange { start, end: start + 24 };
            let rows = start + 40;
            let mut dense = Table::new(spec(rows, width, rule, init, Layout::Dense), range);
            let mut sparse = Table::new(spec(rows, width, rule, init, Layout::Sparse), range);
            let all: Vec<u64> = (range.start..range.end).collect();
            for push in &pushes {
                // Sorted runs exercise the dense contiguous path; duplicates apply in order.
                let mut push = push.clone();
                if push.len() % 2 == 0 {
                    push.sort_by_key(|(k, _)| *k);
                }
                let keys: Vec<u64> = push.iter().map(|(k, _)| start + k).collect();
                let values: Vec<f32> =
                    push.iter().flat_map(|(_, v)| v[..width as usize].to_vec()).collect();
                prop_assert!(dense.check(width, &keys).is_ok());
                prop_assert!(sparse.check(width, &keys).is_ok());
                dense.apply(&keys, &values);
                sparse.apply(&keys, &values);
                let (mut a, mut b) = (Vec::new(), Vec::new());
                dense.read_into(&all, &mut a);
                sparse.read_into(&all, &mut b);
                let a: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
                let b: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
                prop_assert_eq!(a, b);
            }
            // The state of every stored sparse row equals the dense state of that row.
            let (d, s) = (dense.as_dense().unwrap(), sparse.as_sparse().unwrap());
            let k = rule.state_per_cell() * width as usize;
            for (slot, key) in s.keys().iter().enumerate() {
                let i = (key - start) as usize;
                prop_assert_eq!(&d.state()[i * k..(i + 1) * k], &s.state()[slot * k..(slot + 1) * k]);
            }
            let touched: std::collections::BTreeSet<u64> =
                pushes.iter().flatten().map(|(k, _)| start + k).collect();
            prop_assert_eq!(s.len(), touched.len());
            prop_assert_eq!(sparse.len(), touched.len() as u64);
            prop_assert_eq!(dense.len(), 24);
        }
    }
}
