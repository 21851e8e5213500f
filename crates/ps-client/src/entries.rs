//! Sparse updates of rows ("entries"): the cells of a block that are not zero, for updates that
//! touch a few columns of wide rows (LDA's count deltas at large K). On a table with a lossless
//! push codec they go into push frames (sparse f32) and the own log as they are, never as a
//! dense block. Pure bookkeeping: no I/O.

use crate::pending::{add, Block};
use std::ops::Range;

/// Rows `keys` (sorted, distinct) of a table of width `w`, as entries of their
/// `keys.len() * w` block (row-major): `values[j]` at position `at[j]`, the positions strictly
/// increasing; every other cell is zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entries {
    pub keys: Vec<u64>,
    pub at: Vec<u64>,
    pub values: Vec<f32>,
}

impl Entries {
    /// Why these entries are not a block of `keys.len()` rows of `width`, if they are not.
    pub fn check(&self, width: usize) -> Result<(), String> {
        if self.at.len() != self.values.len() {
            return Err(format!(
                "{} positions but {} values",
                self.at.len(),
                self.values.len()
            ));
        }
        if let Some(p) = self.at.windows(2).find(|p| p[0] >= p[1]) {
            return Err(format!(
                "positions must be strictly increasing: {} then {}",
                p[0], p[1]
            ));
        }
        let n = self.keys.len() as u64 * width as u64;
        match self.at.last() {
            Some(&last) if last >= n => Err(format!(
                "position {last} outside the {} rows of width {width}",
                self.keys.len()
            )),
            _ => Ok(()),
        }
    }

    /// The entries of rows `rows` (indices into `keys`): a range of `at` and `values`.
    pub fn span(&self, rows: Range<usize>, width: usize) -> Range<usize> {
        let (lo, hi) = ((rows.start * width) as u64, (rows.end * width) as u64);
        self.at.partition_point(|&p| p < lo)..self.at.partition_point(|&p| p < hi)
    }

    /// Adds the entries of row `key` (if the block holds it) into `out` (`width` values).
    pub fn add_row_to(&self, key: u64, width: usize, out: &mut [f32]) {
        if let Ok(i) = self.keys.binary_search(&key) {
            let first = (i * width) as u64;
            for j in self.span(i..i + 1, width) {
                out[(self.at[j] - first) as usize] += self.values[j];
            }
        }
    }

    /// The same update as a dense block.
    pub fn to_block(&self, width: usize) -> Block {
        let mut values = vec![0.0; self.keys.len() * width];
        for (&p, &v) in self.at.iter().zip(&self.values) {
            values[p as usize] += v;
        }
        Block {
            keys: self.keys.clone(),
            values,
        }
    }
}

/// An update as the shards will apply it, kept in the own log until they have: whole rows, or
/// entries.
#[derive(Debug, Clone, PartialEq)]
pub enum Sent {
    Rows(Block),
    Entries(Entries),
}

impl Sent {
    pub fn keys(&self) -> &[u64] {
        match self {
            Sent::Rows(b) => &b.keys,
            Sent::Entries(e) => &e.keys,
        }
    }

    /// The values it holds (every cell of the rows, or the entries).
    #[cfg(test)]
    pub fn values(&self) -> &[f32] {
        match self {
            Sent::Rows(b) => &b.values,
            Sent::Entries(e) => &e.values,
        }
    }

    /// Adds its row of `key` (if any) into `out`.
    pub fn add_row_to(&self, key: u64, width: usize, out: &mut [f32]) {
        match self {
            Sent::Rows(b) => {
                if let Some(r) = b.row(key, width) {
                    add(out, r);
                }
            }
            Sent::Entries(e) => e.add_row_to(key, width, out),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Entries {
        // Rows 3, 8, 20 of width 4: (3, col 1) = 1, (8, col 0) = 2, (8, col 3) = -0.5, (20, col 2) = 4.
        Entries {
            keys: vec![3, 8, 20],
            at: vec![1, 4, 7, 10],
            values: vec![1.0, 2.0, -0.5, 4.0],
        }
    }

    #[test]
    fn rows_read_back_from_entries_as_from_the_dense_block() {
        let e = entries();
        assert_eq!(e.check(4), Ok(()));
        let b = e.to_block(4);
        assert_eq!(
            b.values,
            vec![0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, -0.5, 0.0, 0.0, 4.0, 0.0]
        );
        for key in [3, 8, 20, 5] {
            let (mut a, mut d) = ([1.0f32; 4], [1.0f32; 4]);
            e.add_row_to(key, 4, &mut a);
            Sent::Rows(b.clone()).add_row_to(key, 4, &mut d);
            assert_eq!(a, d, "row {key}");
        }
        assert_eq!(e.span(1..3, 4), 1..4);
        assert_eq!(e.span(0..1, 4), 0..1);
        assert_eq!(e.span(1..1, 4), 1..1);
        let s = Sent::Entries(e);
        assert_eq!(s.keys(), &[3, 8, 20]);
        assert_eq!(s.values().iter().sum::<f32>(), 6.5);
    }

    #[test]
    fn bad_entries_are_named() {
        let mut e = entries();
        e.values.pop();
        assert!(e.check(4).unwrap_err().contains("4 positions but 3 values"));
        let mut e = entries();
        e.at[2] = 4;
        assert!(e.check(4).unwrap_err().contains("strictly increasing"));
        let mut e = entries();
        e.at[3] = 12;
        assert!(e.check(4).unwrap_err().contains("position 12 outside"));
        assert!(Entries::default().check(4).is_ok());
    }
}
