//! A shard's slice of one table: the rows `range` of a `rows x width` table.
//!
//! Two layouts behind one [`Table`]: [`DenseTable`] allocates every row of the slice up front,
//! [`SparseTable`] stores only the rows that have been written. Both keep the rule's optimizer
//! state (AdaGrad's accumulator, FTRL's z and n) beside the values, `state_per_cell` floats per
//! cell interleaved per cell (see `rules`); stateless rules allocate none.

use crate::error::ServerError;
pub use crate::sparse::SparseTable;
use ps_proto::init;
use ps_proto::rules;
use ps_proto::{is_range, Init, KeyRange, Layout, ProtoError, TableSpec, UpdateRule};

/// Checks that a request's width and keys fit the slice `range` of `spec`.
pub(crate) fn check_request(
    spec: &TableSpec,
    range: KeyRange,
    width: u32,
    keys: &[u64],
) -> Result<(), ProtoError> {
    if width != spec.width {
        return Err(ProtoError::WrongWidth {
            table: spec.id,
            expected: spec.width,
            got: width,
        });
    }
    if let Some(&key) = keys.iter().find(|k| !range.contains(**k)) {
        return Err(ProtoError::KeyOutOfRange {
            table: spec.id,
            key,
            start: range.start,
            end: range.end,
        });
    }
    Ok(())
}

/// Checks the parts of a slice (as a checkpoint holds them) against `spec` and `range`:
/// `range` inside the table, `values` = `rows * width` floats, `state` = `state_per_cell` floats
/// per value. The error names the table and what differs.
pub(crate) fn check_parts(
    spec: &TableSpec,
    range: KeyRange,
    rows: usize,
    values: usize,
    state: usize,
) -> Result<(), ServerError> {
    let bad = |reason: String| ServerError::BadTable {
        table: spec.id,
        reason: format!("({}) {reason}", spec.name),
    };
    if range.start > range.end || range.end > spec.rows {
        return Err(bad(format!(
            "key range {}..{} is not inside its {} rows",
            range.start, range.end, spec.rows
        )));
    }
    let cells = rows.checked_mul(spec.width as usize);
    if cells != Some(values) {
        return Err(bad(format!(
            "{values} values for {rows} rows of width {}",
            spec.width
        )));
    }
    let k = spec.rule.state_per_cell();
    if values.checked_mul(k) != Some(state) {
        return Err(bad(format!(
            "{state} optimizer state floats for {values} cells at {k} per cell"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct DenseTable {
    pub spec: TableSpec,
    pub range: KeyRange,
    data: Vec<f32>,
    /// `state_per_cell(rule)` floats per cell, interleaved per cell; empty for stateless rules.
    state: Vec<f32>,
}

impl DenseTable {
    pub fn new(spec: TableSpec, range: KeyRange) -> DenseTable {
        let width = spec.width as usize;
        let cells = range.len() as usize * width;
        // Zeroed memory comes from the allocator untouched: a zero-initialised table's pages
        // are first written when a row is (an LDA shard at K 1,000 holds 200 MB of them).
        let mut data = vec![0f32; cells];
        if spec.init != Init::Zeros {
            init::fill(spec.init, spec.id, range.start, spec.width, &mut data);
        }
        let mut state = vec![0f32; cells * rules::state_per_cell(spec.rule)];
        rules::init_state(spec.rule, &mut state);
        DenseTable {
            spec,
            range,
            data,
            state,
        }
    }

    /// The slice `range` of `spec` from its parts (e.g. a checkpoint): `data` row-major over the
    /// whole range, `state` as [`DenseTable::state`] lays it out. Lengths are checked.
    pub fn from_parts(
        spec: TableSpec,
        range: KeyRange,
        data: Vec<f32>,
        state: Vec<f32>,
    ) -> Result<DenseTable, ServerError> {
        let rows = usize::try_from(range.len()).map_err(|_| ServerError::BadTable {
            table: spec.id,
            reason: format!("({}) {} rows do not fit in memory", spec.name, range.len()),
        });
        check_parts(&spec, range, rows?, data.len(), state.len())?;
        Ok(DenseTable {
            spec,
            range,
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

    /// Appends the rows of `keys` (already checked) to `out`.
    pub fn read_into(&self, keys: &[u64], out: &mut Vec<f32>) {
        let w = self.spec.width as usize;
        out.reserve(keys.len() * w);
        for &k in keys {
            let i = (k - self.range.start) as usize * w;
            out.extend_from_slice(&self.data[i..i + w]);
        }
    }

    /// [`DenseTable::read_into`] as raw f32 wire bytes (little-endian), appended to `out`.
    pub fn read_wire_into(&self, keys: &[u64], out: &mut Vec<u8>) {
        let w = self.spec.width as usize;
        out.reserve(keys.len() * w * 4);
        for &k in keys {
            let i = (k - self.range.start) as usize * w;
            ps_proto::extend_f32s(out, &self.data[i..i + w]);
        }
    }

    /// See [`Table::consecutive_rows`].
    pub fn consecutive_rows(&self, keys: &[u64]) -> Option<&[f32]> {
        let first = *keys.first()?;
        if !is_range(keys) {
            return None;
        }
        let w = self.spec.width as usize;
        let i = usize::try_from(first.checked_sub(self.range.start)?).ok()? * w;
        self.data.get(i..i + keys.len() * w)
    }

    /// Applies one delta row per key (already checked) with the table's rule.
    pub fn apply(&mut self, keys: &[u64], values: &[f32]) {
        let w = self.spec.width as usize;
        let rule = self.spec.rule;
        let k = rules::state_per_cell(rule);
        if keys.len() > 1 && is_range(keys) {
            // Contiguous rows: one long slice operation.
            let i = (keys[0] - self.range.start) as usize * w;
            let n = keys.len() * w;
            rules::apply(
                rule,
                &mut self.data[i..i + n],
                &mut self.state[k * i..k * (i + n)],
                values,
            );
            return;
        }
        for (key, d) in keys.iter().zip(values.chunks_exact(w)) {
            let i = (key - self.range.start) as usize * w;
            rules::apply(
                rule,
                &mut self.data[i..i + w],
                &mut self.state[k * i..k * (i + w)],
                d,
            );
        }
    }

    /// See [`Table::apply_sparse`].
    pub fn apply_sparse(&mut self, keys: &[u64], indices: &[u32], values: &[f32]) {
        let w = self.spec.width as usize;
        let rule = self.spec.rule;
        let k = rules::state_per_cell(rule);
        for (&i, &v) in indices.iter().zip(values) {
            let (r, c) = (i as usize / w, i as usize % w);
            let cell = (keys[r] - self.range.start) as usize * w + c;
            if k == 0 && rule == UpdateRule::Add {
                self.data[cell] += v;
            } else {
                rules::apply(
                    rule,
                    &mut self.data[cell..cell + 1],
                    &mut self.state[k * cell..k * (cell + 1)],
                    &[v],
                );
            }
        }
    }

    /// The whole slice, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The optimizer state of the whole slice: `spec.rule.state_per_cell()` floats per cell,
    /// interleaved per cell, cells in the order of [`DenseTable::data`]. Empty for `add`/`sgd`.
    pub fn state(&self) -> &[f32] {
        &self.state
    }
}

/// One table slice of either layout; the request path (`Shard`, `service`) goes through this
/// and does not care which.
#[derive(Debug, Clone)]
pub enum Table {
    Dense(DenseTable),
    Sparse(SparseTable),
}

impl Table {
    /// The slice `range` of `spec`, in the layout the spec asks for.
    pub fn new(spec: TableSpec, range: KeyRange) -> Table {
        match spec.layout {
            Layout::Dense => Table::Dense(DenseTable::new(spec, range)),
            Layout::Sparse => Table::Sparse(SparseTable::new(spec, range)),
        }
    }

    /// The slice from its parts (e.g. a checkpoint), in the layout `spec` asks for: see
    /// [`DenseTable::from_parts`] (`keys` must then be empty) and [`SparseTable::from_parts`].
    pub fn from_parts(
        spec: TableSpec,
        range: KeyRange,
        keys: Vec<u64>,
        data: Vec<f32>,
        state: Vec<f32>,
    ) -> Result<Table, ServerError> {
        match spec.layout {
            Layout::Dense if !keys.is_empty() => Err(ServerError::BadTable {
                table: spec.id,
                reason: format!("({}) a dense slice given {} keys", spec.name, keys.len()),
            }),
            Layout::Dense => DenseTable::from_parts(spec, range, data, state).map(Table::Dense),
            Layout::Sparse => {
                SparseTable::from_parts(spec, range, keys, data, state).map(Table::Sparse)
            }
        }
    }

    /// The values stored, row-major: the whole range (dense) or the rows of
    /// [`Table::keys`] (sparse).
    pub fn data(&self) -> &[f32] {
        match self {
            Table::Dense(t) => t.data(),
            Table::Sparse(t) => t.data(),
        }
    }

    /// The optimizer state of the stored cells (see [`DenseTable::state`]).
    pub fn state(&self) -> &[f32] {
        match self {
            Table::Dense(t) => t.state(),
            Table::Sparse(t) => t.state(),
        }
    }

    /// The keys of the stored rows of a sparse slice, in storage order; empty for a dense one
    /// (its rows are its whole range).
    pub fn keys(&self) -> &[u64] {
        match self {
            Table::Dense(_) => &[],
            Table::Sparse(t) => t.keys(),
        }
    }

    pub fn spec(&self) -> &TableSpec {
        match self {
            Table::Dense(t) => &t.spec,
            Table::Sparse(t) => &t.spec,
        }
    }

    pub fn range(&self) -> KeyRange {
        match self {
            Table::Dense(t) => t.range,
            Table::Sparse(t) => t.range,
        }
    }

    pub fn width(&self) -> u32 {
        self.spec().width
    }

    /// Checks that a request's width and keys fit this slice; nothing is changed.
    pub fn check(&self, width: u32, keys: &[u64]) -> Result<(), ProtoError> {
        check_request(self.spec(), self.range(), width, keys)
    }

    /// Appends the rows of `keys` (already checked) to `out`; never changes the table.
    pub fn read_into(&self, keys: &[u64], out: &mut Vec<f32>) {
        match self {
            Table::Dense(t) => t.read_into(keys, out),
            Table::Sparse(t) => t.read_into(keys, out),
        }
    }

    /// The rows of `keys` (already checked) as raw f32 wire bytes, appended to `out`: a raw
    /// pull reply's payload, written once.
    pub fn read_wire_into(&self, keys: &[u64], out: &mut Vec<u8>) {
        match self {
            Table::Dense(t) => t.read_wire_into(keys, out),
            Table::Sparse(t) => t.read_wire_into(keys, out),
        }
    }

    /// The values of `keys` (already checked) as one slice of the table, when the table is
    /// dense and the keys are consecutive and ascending.
    pub fn consecutive_rows(&self, keys: &[u64]) -> Option<&[f32]> {
        match self {
            Table::Dense(t) => t.consecutive_rows(keys),
            Table::Sparse(_) => None,
        }
    }

    /// Applies one delta row per key (already checked) with the table's rule.
    pub fn apply(&mut self, keys: &[u64], values: &[f32]) {
        match self {
            Table::Dense(t) => t.apply(keys, values),
            Table::Sparse(t) => t.apply(keys, values),
        }
    }

    /// Applies a sparse block over the rows of `keys` (already checked): entry `j` is cell
    /// `indices[j]` of the `keys.len() * width` block (row `keys[i / width]`, column
    /// `i % width`), changed by `values[j]` under the table's rule. Indices were checked by the
    /// decoder (`< keys.len() * width`).
    pub fn apply_sparse(&mut self, keys: &[u64], indices: &[u32], values: &[f32]) {
        match self {
            Table::Dense(t) => t.apply_sparse(keys, indices, values),
            Table::Sparse(t) => t.apply_sparse(keys, indices, values),
        }
    }

    /// Rows stored: the whole range for a dense slice, the rows written so far for a sparse one.
    pub fn len(&self) -> u64 {
        match self {
            Table::Dense(t) => t.range.len(),
            Table::Sparse(t) => t.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cells (rows x width) stored now.
    pub fn cells(&self) -> u64 {
        self.len() * self.width() as u64
    }

    /// The most cells one worker's clock batch may push to this slice. Updates are coalesced per
    /// row, so a batch never needs more than one value per cell of the key range; a sparse key
    /// range can be astronomically large (`u64::MAX` rows), so it is also capped at
    /// `sparse_cap` cells.
    pub fn batch_cap_cells(&self, sparse_cap: u64) -> u64 {
        let range_cells = self.range().len().saturating_mul(self.width() as u64);
        match self {
            Table::Dense(_) => range_cells,
            Table::Sparse(_) => range_cells.min(sparse_cap),
        }
    }

    pub fn as_dense(&self) -> Option<&DenseTable> {
        match self {
            Table::Dense(t) => Some(t),
            Table::Sparse(_) => None,
        }
    }

    pub fn as_sparse(&self) -> Option<&SparseTable> {
        match self {
            Table::Dense(_) => None,
            Table::Sparse(t) => Some(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_proto::{Init, UpdateRule};

    #[test]
    fn dense_state_is_allocated_only_for_stateful_rules() {
        let range = KeyRange { start: 5, end: 9 };
        let spec = |rule| TableSpec {
            id: 0,
            name: "t".into(),
            rows: 20,
            width: 3,
            rule,
            init: Init::Zeros,
            staleness: None,
            layout: Layout::Dense,
            push_codec: Default::default(),
            pull_codec: Default::default(),
        };
        let add = DenseTable::new(spec(UpdateRule::Add), range);
        assert!(add.state().is_empty());
        assert!(DenseTable::new(spec(UpdateRule::Sgd { lr: 0.1 }), range)
            .state()
            .is_empty());
        let ada = DenseTable::new(
            spec(UpdateRule::Adagrad {
                lr: 0.1,
                eps: 1e-8,
                initial_accumulator: 0.25,
            }),
            range,
        );
        assert_eq!(ada.state(), &[0.25; 12][..]);
        let ftrl = UpdateRule::Ftrl {
            alpha: 0.1,
            beta: 1.0,
            l1: 0.5,
            l2: 0.0,
        };
        let mut t = DenseTable::new(spec(ftrl), range);
        assert_eq!(t.state(), &[0.0; 24][..]);
        // Row 6 col 1 and (contiguous) rows 7..9 col 2: the state of exactly those cells moves.
        t.apply(&[6], &[0.0, 2.0, 0.0]);
        t.apply(&[7, 8], &[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        let touched: Vec<usize> = t
            .state()
            .chunks_exact(2)
            .enumerate()
            .filter(|(_, zn)| zn[1] != 0.0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(touched, vec![4, 8, 11]);
        assert_eq!(&t.state()[8..10], &[2.0, 4.0]);
    }

    #[test]
    fn tables_from_parts_check_every_length() {
        let range = KeyRange { start: 2, end: 5 };
        let ada = UpdateRule::Adagrad {
            lr: 0.1,
            eps: 1e-8,
            initial_accumulator: 0.5,
        };
        let spec = |layout| TableSpec {
            id: 7,
            name: "p".into(),
            rows: 6,
            width: 2,
            rule: ada,
            init: Init::Zeros,
            staleness: None,
            layout,
            push_codec: Default::default(),
            pull_codec: Default::default(),
        };
        let err = |r: Result<Table, ServerError>| match r {
            Err(ServerError::BadTable { table: 7, reason }) => reason,
            other => panic!("accepted: {other:?}"),
        };
        let dense =
            |keys, data, state| Table::from_parts(spec(Layout::Dense), range, keys, data, state);
        let t = dense(vec![], vec![1.0; 6], vec![0.5; 6]).unwrap();
        assert_eq!(
            (t.data(), t.state(), t.keys()),
            (&[1.0; 6][..], &[0.5; 6][..], &[][..])
        );
        let (mut vals, mut wire) = (Vec::new(), Vec::new());
        let keys: Vec<u64> = (range.start..range.end).rev().collect();
        t.read_into(&keys, &mut vals);
        t.read_wire_into(&keys, &mut wire);
        assert_eq!(wire, ps_proto::encode_f32s(&vals));
        assert!(err(dense(vec![], vec![1.0; 5], vec![0.5; 5])).contains("5 values for 3 rows"));
        assert!(err(dense(vec![], vec![1.0; 6], vec![0.5; 12])).contains("12 optimizer state"));
        assert!(err(dense(vec![3], vec![1.0; 6], vec![0.5; 6])).contains("given 1 keys"));
        let wide = KeyRange { start: 2, end: 9 };
        let e = err(Table::from_parts(
            spec(Layout::Dense),
            wide,
            vec![],
            vec![0.0; 14],
            vec![0.0; 14],
        ));
        assert!(e.contains("not inside its 6 rows"), "{e}");

        let sparse =
            |keys, data, state| Table::from_parts(spec(Layout::Sparse), range, keys, data, state);
        let t = sparse(vec![4, 2], vec![1.0, 2.0, 3.0, 4.0], vec![0.5; 4]).unwrap();
        let mut out = Vec::new();
        t.read_into(&[2, 3, 4], &mut out);
        assert_eq!(out, vec![3.0, 4.0, 0.0, 0.0, 1.0, 2.0]);
        let mut wire = Vec::new();
        t.read_wire_into(&[2, 3, 4], &mut wire);
        assert_eq!(wire, ps_proto::encode_f32s(&out));
        assert_eq!(t.keys(), &[4, 2]);
        assert!(err(sparse(vec![4, 5], vec![0.0; 4], vec![0.0; 4])).contains("key 5 is outside"));
        assert!(err(sparse(vec![4, 4], vec![0.0; 4], vec![0.0; 4])).contains("stored twice"));
        assert!(err(sparse(vec![4], vec![0.0; 4], vec![0.0; 4])).contains("4 values for 1 rows"));
    }
}
