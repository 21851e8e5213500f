//! Whole rows held by their entries: the form in which a worker's cache keeps rows that arrived
//! sparse, and in which a read can hand them on (`ps-client`'s `read_runs_into`, a session's
//! `load_sparse`). Row `i` of a [`SparseRows`] has the entries
//! `offsets[i]..offsets[i + 1]`: columns `at` (strictly increasing within the row, below
//! `width`) and their `values`; every other value of the row is `+0.0`. Pure: no I/O.

use crate::ProtoError;

/// A borrowed run of rows by their entries (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseRows<'a> {
    /// Values per row.
    pub width: usize,
    /// `rows + 1` offsets into `at` and `values`, from 0 to their length.
    pub offsets: &'a [usize],
    /// Each entry's column within its row.
    pub at: &'a [u32],
    pub values: &'a [f32],
}

impl<'a> SparseRows<'a> {
    /// How many rows.
    pub fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// How many entries.
    pub fn entries(&self) -> usize {
        self.at.len()
    }

    /// Row `i`'s columns and values.
    pub fn row(&self, i: usize) -> (&'a [u32], &'a [f32]) {
        let (a, b) = (self.offsets[i], self.offsets[i + 1]);
        (&self.at[a..b], &self.values[a..b])
    }

    /// Checks the shape: offsets from 0 to the entry count, never decreasing; as many values
    /// as columns; each row's columns strictly increasing and below `width`.
    pub fn check(&self) -> Result<(), ProtoError> {
        let bad = |what: &str| Err(ProtoError::Malformed(format!("sparse rows: {what}")));
        if self.offsets.first() != Some(&0) {
            return bad("the offsets do not start at 0");
        }
        if self.offsets.last() != Some(&self.at.len()) || self.values.len() != self.at.len() {
            return bad(&format!(
                "offsets end at {:?}, for {} columns and {} values",
                self.offsets.last(),
                self.at.len(),
                self.values.len()
            ));
        }
        if self.offsets.windows(2).any(|p| p[0] > p[1]) {
            return bad("the offsets decrease");
        }
        for i in 0..self.rows() {
            let (at, _) = self.row(i);
            if at.windows(2).any(|p| p[0] >= p[1]) {
                return bad(&format!("row {i}'s columns are not strictly increasing"));
            }
            if let Some(&c) = at.last().filter(|&&c| c as usize >= self.width) {
                return bad(&format!(
                    "row {i} has column {c}, past the width {}",
                    self.width
                ));
            }
        }
        Ok(())
    }

    /// Writes the rows dense into `dst` (`rows x width`): zeroes it, then writes each entry.
    /// The shape must have passed [`SparseRows::check`] and `dst` be that long.
    pub fn write_dense(&self, dst: &mut [f32]) {
        assert_eq!(
            dst.len(),
            self.rows() * self.width,
            "a destination of another shape"
        );
        dst.fill(0.0);
        for (i, row) in dst.chunks_exact_mut(self.width.max(1)).enumerate() {
            let (at, values) = self.row(i);
            for (&c, &v) in at.iter().zip(values) {
                row[c as usize] = v;
            }
        }
    }

    /// The rows dense, as a new vector.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows() * self.width];
        self.write_dense(&mut out);
        out
    }
}

/// An owned [`SparseRows`], built row by row (reused across runs: [`SparseRowsBuf::clear`]
/// keeps the buffers).
#[derive(Debug, Clone, Default)]
pub struct SparseRowsBuf {
    pub width: usize,
    offsets: Vec<usize>,
    at: Vec<u32>,
    values: Vec<f32>,
}

impl SparseRowsBuf {
    /// Empties it for rows of `width`.
    pub fn clear(&mut self, width: usize) {
        self.width = width;
        self.offsets.clear();
        self.offsets.push(0);
        self.at.clear();
        self.values.clear();
    }

    /// Appends a row given by its entries (columns strictly increasing, below the width).
    pub fn push_entries(&mut self, at: &[u32], values: &[f32]) {
        self.at.extend_from_slice(at);
        self.values.extend_from_slice(values);
        self.offsets.push(self.at.len());
    }

    /// Appends one row that `write` puts onto the ends of the column and value lists (as many
    /// of each; columns strictly increasing, below the width).
    pub fn push_row_with(&mut self, write: impl FnOnce(&mut Vec<u32>, &mut Vec<f32>)) {
        write(&mut self.at, &mut self.values);
        debug_assert_eq!(
            self.at.len(),
            self.values.len(),
            "as many values as columns"
        );
        self.offsets.push(self.at.len());
    }

    /// Appends a dense row (`width` values) by its entries whose bits are not all zero, so
    /// that -0.0 and NaN are kept and [`SparseRows::write_dense`] gives back the same bits.
    pub fn push_dense(&mut self, row: &[f32]) {
        for (c, &v) in row.iter().enumerate() {
            if v.to_bits() != 0 {
                self.at.push(c as u32);
                self.values.push(v);
            }
        }
        self.offsets.push(self.at.len());
    }

    /// The rows appended since the last [`SparseRowsBuf::clear`].
    pub fn view(&self) -> SparseRows<'_> {
        SparseRows {
            width: self.width,
            offsets: &self.offsets,
            at: &self.at,
            values: &self.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn dense_rows_go_through_entries_and_back_bit_for_bit() {
        let dense = [
            0.0,
            1.5,
            -0.0,
            0.0, // row 0: -0.0 is an entry
            f32::NAN,
            0.0,
            0.0,
            7.0, // row 1
            0.0,
            0.0,
            0.0,
            0.0, // row 2: none
        ];
        let mut buf = SparseRowsBuf::default();
        buf.clear(4);
        for row in dense.chunks_exact(4) {
            buf.push_dense(row);
        }
        let v = buf.view();
        assert!(v.check().is_ok());
        assert_eq!((v.rows(), v.entries()), (3, 4));
        assert_eq!(v.row(0).0, &[1, 2]);
        assert_eq!(v.row(2).0, &[] as &[u32]);
        assert_eq!(bits(&v.to_dense()), bits(&dense));
        // Reused: cleared buffers give an empty run.
        buf.clear(4);
        assert_eq!(buf.view().rows(), 0);
        assert!(buf.view().check().is_ok());
    }

    #[test]
    fn bad_shapes_are_refused() {
        let ok = SparseRows {
            width: 3,
            offsets: &[0, 2, 3],
            at: &[0, 2, 1],
            values: &[1.0, 2.0, 3.0],
        };
        assert!(ok.check().is_ok());
        let refused = |s: SparseRows<'_>| s.check().is_err();
        assert!(
            refused(SparseRows {
                offsets: &[1, 2, 3],
                ..ok
            }),
            "start"
        );
        assert!(
            refused(SparseRows {
                offsets: &[0, 2, 2],
                ..ok
            }),
            "end"
        );
        assert!(
            refused(SparseRows {
                offsets: &[0, 3, 2, 3],
                ..ok
            }),
            "order"
        );
        assert!(
            refused(SparseRows {
                at: &[2, 0, 1],
                ..ok
            }),
            "columns"
        );
        assert!(
            refused(SparseRows {
                at: &[0, 3, 1],
                ..ok
            }),
            "width"
        );
        assert!(
            refused(SparseRows {
                values: &[1.0],
                ..ok
            }),
            "values"
        );
        assert!(refused(SparseRows { offsets: &[], ..ok }), "no offsets");
    }
}
