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

    /// Appends `next`'s rows after these (all of its keys past the last of these): one block
    /// of both. Gives `next` back, changing nothing, when its keys do not all follow.
    pub fn append(&mut self, next: Entries, width: usize) -> Result<(), Entries> {
        if next
            .keys
            .first()
            .zip(self.keys.last())
            .is_some_and(|(n, l)| n <= l)
        {
            return Err(next);
        }
        let shift = (self.keys.len() * width) as u64;
        self.keys.extend(next.keys);
        self.at.extend(next.at.into_iter().map(|p| p + shift));
        self.values.extend(next.values);
        Ok(())
    }

    /// The entries of rows `rows` (indices into `keys`): a range of `at` and `values`.
    pub fn span(&self, rows: Range<usize>, width: usize) -> Range<usize> {
        let (lo, hi) = ((rows.start * width) as u64, (rows.end * width) as u64);
        self.at.partition_point(|&p| p < lo)..self.at.partition_point(|&p| p < hi)
    }

    /// Adds the entries of row `key` (if the block holds it) into `out` (`width` values).
    pub fn add_row_to(&self, key: u64, width: usize, out: &mut [f32]) {
        if let Ok(i) = self.keys.binary_search(&key) {
            self.row_update(i, self.span(i..i + 1, width), width)
                .add_to(out);
        }
    }

    /// The entries of row `i` (an index into `keys`), found by galloping forward from
    /// position `from` of `at`, which must not be past them.
    fn span_from(&self, i: usize, from: usize, width: usize) -> Range<usize> {
        let (lo, hi) = ((i * width) as u64, ((i + 1) * width) as u64);
        let start = from + gallop(&self.at[from..], |&p| p < lo);
        start..start + gallop(&self.at[start..], |&p| p < hi)
    }

    /// Row `i`'s update, its entries being `span`.
    fn row_update(&self, i: usize, span: Range<usize>, width: usize) -> RowUpdate<'_> {
        RowUpdate::Entries {
            pos: &self.at[span.clone()],
            first: (i * width) as u64,
            values: &self.values[span],
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
        if let Some(u) = self.row_update(key, width) {
            u.add_to(out);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// Its update of row `key` of `width`, if it holds that row.
    pub fn row_update(&self, key: u64, width: usize) -> Option<RowUpdate<'_>> {
        match self {
            Sent::Rows(b) => b.row(key, width).map(RowUpdate::Dense),
            Sent::Entries(e) => {
                let i = e.keys.binary_search(&key).ok()?;
                Some(e.row_update(i, e.span(i..i + 1, width), width))
            }
        }
    }
}

/// One sent block's change of one row: its entries (positions in the block, the row starting
/// at `first`), or all its values.
#[derive(Debug, Clone, Copy)]
pub enum RowUpdate<'a> {
    Entries {
        pos: &'a [u64],
        first: u64,
        values: &'a [f32],
    },
    Dense(&'a [f32]),
}

impl RowUpdate<'_> {
    /// Adds it into the row's `width` values.
    pub fn add_to(&self, out: &mut [f32]) {
        match *self {
            RowUpdate::Entries { pos, first, values } => {
                for (&p, &x) in pos.iter().zip(values) {
                    out[(p - first) as usize] += x;
                }
            }
            RowUpdate::Dense(r) => add(out, r),
        }
    }
}

/// Finds the rows of a sent block for keys asked in increasing order, each search starting
/// where the last one ended: a pass over many rows reads the block's keys and entries once,
/// front to back, instead of searching all of them for every row. A key below the last one
/// asked starts again from the front.
pub struct RowCursor<'a> {
    sent: &'a Sent,
    key: usize,
    at: usize,
    last: Option<u64>,
}

impl<'a> RowCursor<'a> {
    pub fn new(sent: &'a Sent) -> RowCursor<'a> {
        RowCursor {
            sent,
            key: 0,
            at: 0,
            last: None,
        }
    }

    /// The block's update of row `key` of `width`, if it holds that row.
    pub fn row_update(&mut self, key: u64, width: usize) -> Option<RowUpdate<'a>> {
        if self.last.is_some_and(|l| key < l) {
            (self.key, self.at) = (0, 0);
        }
        self.last = Some(key);
        let keys = self.sent.keys();
        self.key += gallop(&keys[self.key..], |&k| k < key);
        if keys.get(self.key) != Some(&key) {
            return None;
        }
        let i = self.key;
        Some(match self.sent {
            Sent::Rows(b) => RowUpdate::Dense(&b.values[i * width..(i + 1) * width]),
            Sent::Entries(e) => {
                let span = e.span_from(i, self.at, width);
                // A later row's entries start no sooner (the same row asked again: here).
                self.at = span.start;
                e.row_update(i, span, width)
            }
        })
    }
}

/// The number of leading elements of `s` (sorted so that `below` holds for a prefix) for which
/// `below` holds: doubling steps from the front, then a binary search in the last step, so the
/// cost grows with the answer, not with the slice.
fn gallop<T>(s: &[T], below: impl Fn(&T) -> bool) -> usize {
    let mut step = 1;
    let mut lo = 0;
    while lo + step <= s.len() && below(&s[lo + step - 1]) {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(s.len());
    lo + s[lo..hi].partition_point(below)
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
    fn blocks_that_follow_append_into_one() {
        let mut a = entries();
        let next = Entries {
            keys: vec![21, 30],
            at: vec![0, 7],
            values: vec![5.0, 6.0],
        };
        assert!(a.append(next.clone(), 4).is_ok());
        assert_eq!(a.keys, vec![3, 8, 20, 21, 30]);
        assert_eq!(a.at, vec![1, 4, 7, 10, 12, 19]);
        assert_eq!(a.check(4), Ok(()));
        // Keys that do not all follow come back unchanged, and nothing is appended.
        let before = a.clone();
        assert_eq!(a.append(next.clone(), 4), Err(next));
        assert_eq!(a, before);
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

    /// A cursor finds each row as a search from the top does, for keys asked in increasing
    /// order (rows held or not, rows without entries) and after a key below the last.
    #[test]
    fn a_cursor_finds_rows_as_a_search_does() {
        let e = Sent::Entries(entries());
        let b = Sent::Rows(entries().to_block(4));
        for s in [&e, &b] {
            let mut cursor = RowCursor::new(s);
            for key in [0, 3, 5, 8, 20, 21, 8, 3, 3, 25] {
                let mut a = [0.5f32; 4];
                let mut d = [0.5f32; 4];
                let found = cursor.row_update(key, 4).map(|u| u.add_to(&mut a));
                s.add_row_to(key, 4, &mut d);
                assert_eq!(found.is_some(), [3, 8, 20].contains(&key), "row {key}");
                assert_eq!(a, d, "row {key}");
            }
        }
        // An entry-less row between two with entries.
        let e = Sent::Entries(Entries {
            keys: vec![1, 2, 3],
            at: vec![0, 5],
            values: vec![1.0, 2.0],
        });
        let mut cursor = RowCursor::new(&e);
        for (key, row) in [(1, [1.0, 0.0]), (2, [0.0, 0.0]), (3, [0.0, 2.0])] {
            let mut a = [0.0f32; 2];
            cursor.row_update(key, 2).unwrap().add_to(&mut a);
            assert_eq!(a, row, "row {key}");
        }
    }

    #[test]
    fn gallop_counts_the_leading_elements_below() {
        let s: Vec<u32> = (0..100).map(|x| x * 2).collect();
        for t in 0..205 {
            assert_eq!(gallop(&s, |&x| x < t), s.partition_point(|&x| x < t), "{t}");
        }
        assert_eq!(gallop(&[] as &[u32], |_| true), 0);
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
