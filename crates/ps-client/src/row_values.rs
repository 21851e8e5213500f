//! A cached row's values: all of them, or, for a row that arrived sparse and is mostly zero
//! (LDA's word-topic rows at large K), only its entries. A sparse row costs its entries in
//! memory and in every pass over the cache, not its width; it reads back, and takes the
//! worker's own updates, bit for bit as its dense form would. Pure bookkeeping: no I/O.

use crate::entries::RowUpdate;
use ps_proto::SparseRowsBuf;

/// One cached row's values (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub enum RowValues {
    /// All `width` values.
    Dense(Vec<f32>),
    /// Entries: columns strictly increasing and below the width, with their values; every
    /// other value is `+0.0`.
    Sparse { at: Vec<u32>, values: Vec<f32> },
}

impl Default for RowValues {
    fn default() -> Self {
        RowValues::Dense(Vec::new())
    }
}

/// Whether a row of `width` is kept by its `entries` (at most half its width: never more bytes
/// than dense).
pub fn kept_sparse(entries: usize, width: usize) -> bool {
    entries * 2 <= width
}

impl RowValues {
    /// Sets the row to `src` (`width` values), reusing a dense buffer.
    pub fn set_dense(&mut self, src: &[f32]) {
        match self {
            RowValues::Dense(v) => {
                v.clear();
                v.extend_from_slice(src);
            }
            _ => *self = RowValues::Dense(src.to_vec()),
        }
    }

    /// Sets the row of `width` from its entries (`at` strictly increasing, below `width`):
    /// kept by them when few enough ([`kept_sparse`]), else written into a dense row. Reuses the
    /// buffers of the same form.
    pub fn set_entries(&mut self, width: usize, at: impl Iterator<Item = u32>, values: &[f32]) {
        if kept_sparse(values.len(), width) {
            match self {
                RowValues::Sparse { at: a, values: v } => {
                    a.clear();
                    a.extend(at);
                    v.clear();
                    v.extend_from_slice(values);
                }
                _ => {
                    *self = RowValues::Sparse {
                        at: at.collect(),
                        values: values.to_vec(),
                    }
                }
            }
            return;
        }
        let dst = match self {
            RowValues::Dense(v) => {
                v.clear();
                v
            }
            _ => {
                *self = RowValues::Dense(Vec::with_capacity(width));
                self.dense_buffer()
            }
        };
        dst.resize(width, 0.0);
        for (c, &x) in at.zip(values) {
            dst[c as usize] = x;
        }
    }

    /// Sets it to `src`, reusing its buffers when it has the same form.
    pub fn copy_from(&mut self, src: &RowValues) {
        match (&mut *self, src) {
            (RowValues::Dense(d), RowValues::Dense(s)) => {
                d.clear();
                d.extend_from_slice(s);
            }
            (RowValues::Sparse { at, values }, RowValues::Sparse { at: a, values: v }) => {
                at.clear();
                at.extend_from_slice(a);
                values.clear();
                values.extend_from_slice(v);
            }
            _ => *self = src.clone(),
        }
    }

    fn dense_buffer(&mut self) -> &mut Vec<f32> {
        match self {
            RowValues::Dense(v) => v,
            RowValues::Sparse { .. } => unreachable!("called on a dense row only"),
        }
    }

    pub fn is_sparse(&self) -> bool {
        matches!(self, RowValues::Sparse { .. })
    }

    /// Whether it holds a row of `width`.
    pub fn fits(&self, width: usize) -> bool {
        match self {
            RowValues::Dense(v) => v.len() == width,
            RowValues::Sparse { at, values } => {
                at.len() == values.len() && at.last().is_none_or(|&c| (c as usize) < width)
            }
        }
    }

    /// Appends the row's `width` values to `out`.
    pub fn append_dense(&self, width: usize, out: &mut Vec<f32>) {
        match self {
            RowValues::Dense(v) => out.extend_from_slice(v),
            RowValues::Sparse { at, values } => {
                let start = out.len();
                out.resize(start + width, 0.0);
                let row = &mut out[start..];
                for (&c, &x) in at.iter().zip(values) {
                    row[c as usize] = x;
                }
            }
        }
    }

    /// Appends the row to `buf` by its entries (a dense row's values whose bits are not zero).
    pub fn push_to(&self, buf: &mut SparseRowsBuf) {
        match self {
            RowValues::Dense(v) => buf.push_dense(v),
            RowValues::Sparse { at, values } => buf.push_entries(at, values),
        }
    }

    /// The row's `width` values, making it dense first.
    pub fn dense_mut(&mut self, width: usize) -> &mut Vec<f32> {
        if self.is_sparse() {
            let mut v = Vec::with_capacity(width);
            self.append_dense(width, &mut v);
            *self = RowValues::Dense(v);
        }
        self.dense_buffer()
    }

    /// Adds one sent block's change of this row (of `width`), with the same arithmetic as
    /// adding it into the dense row: entries merge into a sparse row (a column it lacks gets
    /// `0.0 + x`), a whole row makes it dense, and so does growing past [`kept_sparse`].
    pub fn add_update(&mut self, width: usize, update: RowUpdate<'_>) {
        match (&mut *self, update) {
            (
                RowValues::Sparse { at, values },
                RowUpdate::Entries {
                    pos,
                    first,
                    values: x,
                },
            ) => {
                merge_add(at, values, pos, first, x);
                if !kept_sparse(values.len(), width) {
                    self.dense_mut(width);
                }
            }
            (RowValues::Sparse { .. }, u) => u.add_to(self.dense_mut(width)),
            (RowValues::Dense(v), u) => u.add_to(v),
        }
    }

    /// The row's `width` values.
    #[cfg(test)]
    pub fn to_dense(&self, width: usize) -> Vec<f32> {
        let mut v = Vec::new();
        self.append_dense(width, &mut v);
        v
    }
}

/// Appends to `out` the sparse row `(at, values)` with `updates` added in their order, by its
/// entries, in one pass and without building the sum: each column the row or an update has
/// gets its cached value (or `0.0`) plus each update's change in turn, as
/// [`RowValues::add_update`] adds them. A sum that comes to `+0.0` is left out, as
/// [`SparseRowsBuf::push_dense`] leaves out the dense sum's zeros, so the row's entries are the
/// dense sum's whatever the cached row holds beyond them (the cached row's own entries that no
/// update touches go as they are), however many they are. `false`, with nothing appended,
/// where an update is a whole row: the caller then adds the dense way.
pub fn push_sparse_sum(
    (at, values): (&[u32], &[f32]),
    updates: &[RowUpdate<'_>],
    out: &mut SparseRowsBuf,
) -> bool {
    // Each update's entries, with the next one to take.
    let mut streams = Vec::with_capacity(updates.len());
    for u in updates {
        match *u {
            RowUpdate::Entries { pos, first, values } => streams.push((pos, first, values, 0)),
            RowUpdate::Dense(_) => return false,
        }
    }
    out.push_row_with(|out_at, out_values| {
        if let [(pos, first, x, _)] = streams.as_slice() {
            merge_two(at, values, (pos, *first, x), out_at, out_values);
            return;
        }
        let mut i = 0;
        loop {
            // The lowest column any side has left.
            let mut c = at.get(i).map_or(u64::MAX, |&c| u64::from(c));
            for &(pos, first, _, j) in &streams {
                if let Some(&p) = pos.get(j) {
                    c = c.min(p - first);
                }
            }
            if c == u64::MAX {
                return;
            }
            let mut v = 0.0f32;
            if at.get(i).is_some_and(|&a| u64::from(a) == c) {
                v = values[i];
                i += 1;
            }
            let mut changed = false;
            for (pos, first, x, j) in &mut streams {
                if pos.get(*j).is_some_and(|&p| p - *first == c) {
                    v += x[*j];
                    *j += 1;
                    changed = true;
                }
            }
            if changed {
                push_nonzero(out_at, out_values, c as u32, v);
            } else {
                out_at.push(c as u32);
                out_values.push(v);
            }
        }
    });
    true
}

/// [`push_sparse_sum`]'s walk for one update (the common case: a reader one clock behind its
/// own pushes): a plain two-way merge.
fn merge_two(
    at: &[u32],
    values: &[f32],
    (pos, first, add): (&[u64], u64, &[f32]),
    out_at: &mut Vec<u32>,
    out_values: &mut Vec<f32>,
) {
    out_at.reserve(at.len() + pos.len());
    out_values.reserve(at.len() + pos.len());
    let (mut i, mut j) = (0, 0);
    while i < at.len() && j < pos.len() {
        let (a, p) = (at[i], (pos[j] - first) as u32);
        if a < p {
            out_at.push(a);
            out_values.push(values[i]);
            i += 1;
        } else if p < a {
            push_nonzero(out_at, out_values, p, 0.0 + add[j]);
            j += 1;
        } else {
            push_nonzero(out_at, out_values, a, values[i] + add[j]);
            (i, j) = (i + 1, j + 1);
        }
    }
    out_at.extend_from_slice(&at[i..]);
    out_values.extend_from_slice(&values[i..]);
    for (&p, &x) in pos[j..].iter().zip(&add[j..]) {
        push_nonzero(out_at, out_values, (p - first) as u32, 0.0 + x);
    }
}

/// Appends the entry `(c, v)` unless `v` is `+0.0`.
fn push_nonzero(at: &mut Vec<u32>, values: &mut Vec<f32>, c: u32, v: f32) {
    if v.to_bits() != 0 {
        at.push(c);
        values.push(v);
    }
}

/// `(at, values) +=` the entries at block positions `pos` (their row starting at `first`)
/// with values `add`, as dense addition would do it (a column the row lacks gets `0.0 + x`);
/// columns strictly increasing on both sides. In place: the new columns are counted, the row
/// grows by that many, and the two lists merge from the back.
fn merge_add(at: &mut Vec<u32>, values: &mut Vec<f32>, pos: &[u64], first: u64, add: &[f32]) {
    let col = |p: u64| (p - first) as u32;
    let mut i = 0;
    let mut new = 0;
    for &p in pos {
        let c = col(p);
        while i < at.len() && at[i] < c {
            i += 1;
        }
        if i < at.len() && at[i] == c {
            i += 1;
        } else {
            new += 1;
        }
    }
    let old = at.len();
    at.resize(old + new, 0);
    values.resize(old + new, 0.0);
    // Read the old entries from `r` down, write the merged ones from `w` down.
    let (mut r, mut w) = (old, old + new);
    for (&p, &x) in pos.iter().zip(add).rev() {
        let c = col(p);
        while r > 0 && at[r - 1] > c {
            (r, w) = (r - 1, w - 1);
            (at[w], values[w]) = (at[r], values[r]);
        }
        w -= 1;
        if r > 0 && at[r - 1] == c {
            r -= 1;
            (at[w], values[w]) = (c, values[r] + x);
        } else {
            (at[w], values[w]) = (c, 0.0 + x);
        }
    }
    debug_assert_eq!(r, w, "the entries below stay where they are");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::{Entries, Sent};
    use crate::pending::Block;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn sparse(at: &[u32], values: &[f32]) -> RowValues {
        let mut r = RowValues::default();
        r.set_entries(8, at.iter().copied(), values);
        r
    }

    #[test]
    fn few_entries_stay_sparse_and_many_go_dense() {
        let r = sparse(&[1, 5], &[2.0, -0.0]);
        assert!(r.is_sparse() && r.fits(8));
        assert_eq!(
            bits(&r.to_dense(8)),
            bits(&[0.0, 2.0, 0.0, 0.0, 0.0, -0.0, 0.0, 0.0])
        );
        let many: Vec<u32> = (0..5).collect();
        let d = sparse(&many, &[1.0; 5]);
        assert!(!d.is_sparse() && d.fits(8));
        assert_eq!(d.to_dense(8), [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        let mut buf = SparseRowsBuf::default();
        buf.clear(8);
        r.push_to(&mut buf);
        d.push_to(&mut buf);
        assert_eq!(
            buf.view().to_dense(),
            [r.to_dense(8), d.to_dense(8)].concat()
        );
    }

    /// Adds `sent` to the row both ways and compares the bits.
    fn same_as_dense(row: &RowValues, key: u64, sent: &[Sent]) -> RowValues {
        let mut dense = row.to_dense(8);
        for s in sent {
            s.add_row_to(key, 8, &mut dense);
        }
        let mut r = row.clone();
        for u in sent.iter().filter_map(|s| s.row_update(key, 8)) {
            r.add_update(8, u);
        }
        assert_eq!(bits(&r.to_dense(8)), bits(&dense), "{row:?} + {sent:?}");
        r
    }

    #[test]
    fn own_updates_add_to_a_sparse_row_as_to_its_dense_form() {
        // Rows 4 and 9 of width 8; row 9: (9, 0) = -0.0, (9, 5) = -2, (9, 7) = 1.
        let e = Sent::Entries(Entries {
            keys: vec![4, 9],
            at: vec![3, 8, 13, 15],
            values: vec![1.0, -0.0, -2.0, 1.0],
        });
        let row = sparse(&[2, 5], &[3.0, 2.0]);
        let r = same_as_dense(&row, 9, std::slice::from_ref(&e));
        assert_eq!(
            r,
            RowValues::Sparse {
                at: vec![0, 2, 5, 7],
                values: vec![0.0, 3.0, 0.0, 1.0]
            },
            "merged, sparse still, -0.0 added to nothing is +0.0"
        );
        // A block without the row changes nothing; two in a row apply in order.
        let r = same_as_dense(&row, 5, &[e.clone(), e.clone()]);
        assert_eq!(r, row);
        same_as_dense(&row, 9, &[e.clone(), e.clone()]);
        // Whole rows make it dense.
        let b = Sent::Rows(Block {
            keys: vec![9],
            values: vec![0.5; 8],
        });
        let r = same_as_dense(&row, 9, &[e.clone(), b]);
        assert!(!r.is_sparse());
        // Growing past half the width makes it dense.
        let wide = Sent::Entries(Entries {
            keys: vec![9],
            at: vec![0, 1, 3, 4],
            values: vec![1.0; 4],
        });
        let r = same_as_dense(&row, 9, &[wide]);
        assert!(!r.is_sparse());
        // A dense row takes them as it did before.
        same_as_dense(&RowValues::Dense(vec![1.0; 8]), 9, &[e]);
    }

    /// A sent block of entries of rows 2 and 5 of `width`, each given by its columns and values.
    fn rows_2_and_5(
        width: u64,
        (c2, v2): (Vec<u32>, Vec<f32>),
        (c5, v5): (Vec<u32>, Vec<f32>),
    ) -> Sent {
        let at = (c2.iter().map(|&c| u64::from(c)))
            .chain(c5.iter().map(|&c| width + u64::from(c)))
            .collect();
        Sent::Entries(Entries {
            keys: vec![2, 5],
            at,
            values: [v2, v5].concat(),
        })
    }

    #[test]
    fn merges_agree_with_dense_addition_on_random_rows() {
        let mut next = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15);
        let values = [0.0, -0.0, 1.0, -1.0, 2.5, 3.0];
        for case in 0..500 {
            let pick = |next: &mut dyn FnMut(u64) -> u64| {
                let cols: Vec<u32> = (0..8).filter(|_| next(3) == 0).collect();
                let vals: Vec<f32> = cols.iter().map(|_| values[next(6) as usize]).collect();
                (cols, vals)
            };
            let (cols, vals) = pick(&mut next);
            let row = sparse(&cols, &vals);
            // Two blocks of rows 2 and 5 (the row is 5), each with a few entries.
            let sent: Vec<Sent> = (0..2)
                .map(|_| {
                    let row2 = pick(&mut next);
                    rows_2_and_5(8, row2, pick(&mut next))
                })
                .collect();
            let r = same_as_dense(&row, 5, &sent);
            if let RowValues::Sparse { at, values } = &r {
                assert!(at.windows(2).all(|p| p[0] < p[1]), "case {case}: {at:?}");
                assert_eq!(at.len(), values.len());
            }
        }
    }

    /// The one-pass sum appends the dense sum's entries (its values whose bits are not zero,
    /// columns and bits exactly) for a cached row without `+0.0` entries (as replies bring
    /// them), whatever the updates hold (zeros, sums to zero, new columns, most of the row),
    /// and declines, appending nothing, exactly where an update is a whole row. A cached `+0.0`
    /// entry may stay; the dense form is the same either way.
    #[test]
    fn one_pass_sums_append_the_dense_sums_entries() {
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        // 0.1 and ±1e30 make the sum depend on the order the updates are added in.
        let update_values = [0.0, -0.0, 1.0, -1.0, 2.5, 3.0, 0.1, 1e30, -1e30];
        let width = 16;
        let (mut summed, mut declined, mut wide) = (0, 0, 0);
        for case in 0..3000 {
            // Now and then a cached +0.0 entry too.
            let cached_zeros = case % 10 == 0;
            let pick = |next: &mut dyn FnMut(u64) -> u64, p: u64, values: &[f32]| {
                let cols: Vec<u32> = (0..width as u32).filter(|_| next(p) == 0).collect();
                let vals: Vec<f32> = (cols.iter())
                    .map(|_| values[next(values.len() as u64) as usize])
                    .collect();
                (cols, vals)
            };
            let cached_values: &[f32] = if cached_zeros {
                &update_values
            } else {
                &update_values[1..]
            };
            let (cols, vals) = pick(&mut next, 5, cached_values);
            let mut row = RowValues::default();
            row.set_entries(width, cols.iter().copied(), &vals);
            let RowValues::Sparse { at, values: v } = &row else {
                continue;
            };
            // One to three blocks of rows 2 and 5 (the row is 5); now and then a whole row.
            let sent: Vec<Sent> = (0..1 + next(3))
                .map(|_| {
                    if next(20) == 0 {
                        return Sent::Rows(Block {
                            keys: vec![5],
                            values: vec![0.5; width],
                        });
                    }
                    let row2 = pick(&mut next, 4, &update_values);
                    let dense = 1 + next(8);
                    let row5 = pick(&mut next, dense, &update_values);
                    rows_2_and_5(width as u64, row2, row5)
                })
                .collect();
            let updates: Vec<RowUpdate> =
                sent.iter().flat_map(|b| b.row_update(5, width)).collect();
            let mut sum = row.to_dense(width);
            for u in &updates {
                u.add_to(&mut sum);
            }
            let mut expected = SparseRowsBuf::default();
            expected.clear(width);
            expected.push_dense(&sum);
            let mut got = SparseRowsBuf::default();
            got.clear(width);
            // A row appended before stays as it is either way.
            got.push_entries(&[3], &[7.0]);
            let done = push_sparse_sum((at, v), &updates, &mut got);
            let whole_row = updates.iter().any(|u| matches!(u, RowUpdate::Dense(_)));
            assert_eq!(done, !whole_row, "case {case}");
            if !done {
                assert_eq!(got.view().rows(), 1, "case {case}");
                assert_eq!(got.view().entries(), 1, "case {case}");
                declined += 1;
                continue;
            }
            summed += 1;
            assert_eq!(
                got.view().row(0),
                (&[3u32][..], &[7.0f32][..]),
                "case {case}"
            );
            wide += usize::from(got.view().row(1).0.len() > width / 2);
            let have = got.view().row(1);
            assert!(have.0.windows(2).all(|p| p[0] < p[1]), "case {case}");
            assert_eq!(
                bits(&got.view().to_dense()[width..]),
                bits(&sum),
                "case {case}"
            );
            if !cached_zeros {
                let want = expected.view().row(0);
                assert_eq!(want.0, have.0, "case {case}");
                assert_eq!(bits(want.1), bits(have.1), "case {case}");
            }
        }
        assert!(
            summed > 300 && declined > 50 && wide > 100,
            "{summed} summed ({wide} past half the width), {declined} declined"
        );
    }
}
