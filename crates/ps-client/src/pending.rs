//! One table's updates of the current clock, as the caller handed them over: dense blocks of
//! rows (a batch push, or rows the caller wrote in place), single cells and rows (`inc`,
//! `inc_row`), sparse entries of rows (`push_entries`), and blocks the caller encoded itself.
//! Pure bookkeeping: no I/O.
//!
//! A block is kept as given so that, in the usual case of one block per table per clock, its
//! values go from the caller's buffer into the push frames with one copy; blocks that share
//! keys, or single increments, are merged first.

use crate::cache::RowMap;
use crate::entries::{Entries, Sent};
use ps_proto::codec::{self, Decoded};
use ps_proto::ProtoError;

/// Rows of one table: `keys` sorted and distinct, `values` row-major (`keys.len() * width`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Block {
    pub keys: Vec<u64>,
    pub values: Vec<f32>,
}

impl Block {
    /// The values of `key`, if the block holds it.
    pub fn row(&self, key: u64, width: usize) -> Option<&[f32]> {
        let i = self.keys.binary_search(&key).ok()?;
        Some(&self.values[i * width..(i + 1) * width])
    }

    /// Adds the block's row of `key` (if any) into `out`.
    pub fn add_row_to(&self, key: u64, width: usize, out: &mut [f32]) {
        if let Some(r) = self.row(key, width) {
            add(out, r);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A block encoded by the caller with a push codec: sent as it is.
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    pub keys: Vec<u64>,
    pub wire_id: u16,
    pub payload: Vec<u8>,
    /// What the shard will apply, decoded (kept for read-my-writes on `add` tables): whole
    /// rows, or the entries of an exact sparse payload.
    pub decoded: Option<Sent>,
}

impl EncodedBlock {
    /// A block of `keys` (rows of `width`) encoded by the caller, as the clock keeps it: the
    /// payload must decode; with `overlay`, what the shard will apply is kept decoded for
    /// read-my-writes, an `exact` sparse payload's as its entries (never dense on the host).
    pub fn new(
        keys: &[u64],
        wire_id: u16,
        payload: Vec<u8>,
        width: usize,
        exact: bool,
        overlay: bool,
    ) -> Result<EncodedBlock, ProtoError> {
        let n = keys.len() * width;
        let entries = |at: Vec<u64>, values: Vec<f32>| {
            let e = Entries {
                keys: keys.to_vec(),
                at,
                values,
            };
            e.check(width).map_err(ProtoError::Malformed)?;
            Ok::<_, ProtoError>(Sent::Entries(e))
        };
        let decoded = match codec::decode(wire_id, &payload, n)? {
            Decoded::Sparse { indices, values } if exact => {
                entries(indices.into_iter().map(u64::from).collect(), values)?
            }
            // A dense layout (it won at small K): its cells whose bits are not all zero, as
            // the library's own entries would be.
            Decoded::Dense(all) if exact => {
                let at: Vec<u64> = (0..all.len() as u64)
                    .filter(|&i| all[i as usize].to_bits() != 0)
                    .collect();
                let values = at.iter().map(|&i| all[i as usize]).collect();
                entries(at, values)?
            }
            d => Sent::Rows(Block {
                keys: keys.to_vec(),
                values: d.into_dense(n)?,
            }),
        };
        Ok(EncodedBlock {
            keys: keys.to_vec(),
            wire_id,
            payload,
            decoded: overlay.then_some(decoded),
        })
    }
}

/// One table's updates of the current clock.
#[derive(Debug, Default)]
pub struct Pending {
    pub blocks: Vec<Block>,
    pub singles: RowMap<Vec<f32>>,
    pub encoded: Vec<EncodedBlock>,
    /// Sparse entries of rows (tables with a lossless push codec only): sent as they are.
    pub entries: Vec<Entries>,
}

pub fn add(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

impl Pending {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
            && self.singles.is_empty()
            && self.encoded.is_empty()
            && self.entries.is_empty()
    }

    /// Adds this clock's updates of `key` into `out` (read-my-writes within the clock).
    pub fn add_row_to(&self, key: u64, width: usize, out: &mut [f32]) {
        for b in &self.blocks {
            b.add_row_to(key, width, out);
        }
        if let Some(r) = self.singles.get(&key) {
            add(out, r);
        }
        for e in &self.encoded {
            if let Some(d) = &e.decoded {
                d.add_row_to(key, width, out);
            }
        }
        for e in &self.entries {
            e.add_row_to(key, width, out);
        }
    }

    /// Whether some update of this clock touches `key`.
    pub fn touches(&self, key: u64) -> bool {
        self.blocks
            .iter()
            .any(|b| b.keys.binary_search(&key).is_ok())
            || self.singles.contains_key(&key)
            || self
                .encoded
                .iter()
                .any(|e| e.keys.binary_search(&key).is_ok())
            || self
                .entries
                .iter()
                .any(|e| e.keys.binary_search(&key).is_ok())
    }

    /// Whether some block of this clock that goes out as it is (encoded, or entries) carries
    /// one of `keys` (sorted).
    pub fn encoded_overlaps(&self, keys: &[u64]) -> bool {
        self.encoded.iter().any(|e| sorted_overlap(&e.keys, keys))
            || self.entries.iter().any(|e| sorted_overlap(&e.keys, keys))
    }

    /// Whether some dense update of this clock touches one of `keys` (sorted).
    pub fn dense_overlaps(&self, keys: &[u64]) -> bool {
        self.blocks.iter().any(|b| sorted_overlap(&b.keys, keys))
            || keys.iter().any(|k| self.singles.contains_key(k))
    }

    /// The dense updates as one block: the only block itself when there is one and nothing
    /// else (no copy), otherwise every block and single merged, rows of a shared key summed.
    /// `extra` rows (a lossy codec's residual) are added in, creating rows where needed.
    pub fn take_dense(&mut self, width: usize, extra: &mut RowMap<Vec<f32>>) -> Block {
        let mut blocks = std::mem::take(&mut self.blocks);
        let singles = std::mem::take(&mut self.singles);
        if blocks.len() == 1 && singles.is_empty() && extra.is_empty() {
            return blocks.pop().unwrap_or_default();
        }
        let mut keys: Vec<u64> = blocks
            .iter()
            .flat_map(|b| b.keys.iter().copied())
            .chain(singles.keys().copied())
            .chain(extra.keys().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut values = vec![0.0f32; keys.len() * width];
        let slot = |k: u64| keys.binary_search(&k).unwrap_or(0);
        for b in &blocks {
            for (k, row) in b.keys.iter().zip(b.values.chunks_exact(width)) {
                let i = slot(*k);
                add(&mut values[i * width..(i + 1) * width], row);
            }
        }
        for (k, row) in singles.iter() {
            let i = slot(*k);
            add(&mut values[i * width..(i + 1) * width], row);
        }
        for (k, row) in extra.drain() {
            let i = slot(k);
            add(&mut values[i * width..(i + 1) * width], &row);
        }
        Block { keys, values }
    }
}

/// Whether two sorted lists share an element.
pub fn sorted_overlap(a: &[u64], b: &[u64]) -> bool {
    // Disjoint ranges first: a clock's blocks mostly are (an engine's, frame by frame).
    match (a.first(), a.last(), b.first(), b.last()) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) if a1 < b0 || b1 < a0 => return false,
        _ => {}
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// Sorted and distinct.
pub fn strictly_sorted(keys: &[u64]) -> bool {
    keys.windows(2).all(|p| p[0] < p[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(keys: &[u64], v: f32) -> Block {
        Block {
            keys: keys.to_vec(),
            values: keys.iter().flat_map(|_| [v, v]).collect(),
        }
    }

    #[test]
    fn one_block_passes_through_and_others_merge() {
        let mut p = Pending::default();
        p.blocks.push(block(&[1, 4], 1.0));
        let ptr = p.blocks[0].values.as_ptr();
        let b = p.take_dense(2, &mut RowMap::default());
        assert_eq!(b.values.as_ptr(), ptr, "a lone block is moved, not copied");
        assert!(p.is_empty());

        p.blocks.push(block(&[1, 4], 1.0));
        p.blocks.push(block(&[2, 4], 2.0));
        p.singles.insert(9, vec![0.5, 0.25]);
        let mut residual = RowMap::from_iter([(4, vec![10.0, 10.0]), (7, vec![1.0, 1.0])]);
        let b = p.take_dense(2, &mut residual);
        assert_eq!(b.keys, vec![1, 2, 4, 7, 9]);
        assert_eq!(b.row(4, 2), Some(&[13.0, 13.0][..]));
        assert_eq!(b.row(9, 2), Some(&[0.5, 0.25][..]));
        assert!(residual.is_empty());
    }

    #[test]
    fn reads_see_every_kind_of_pending_update() {
        let mut p = Pending::default();
        p.blocks.push(block(&[3], 1.0));
        p.singles.insert(3, vec![0.0, 2.0]);
        p.encoded.push(EncodedBlock {
            keys: vec![3],
            wire_id: 1,
            payload: Vec::new(),
            decoded: Some(Sent::Rows(block(&[3], 4.0))),
        });
        p.entries.push(Entries {
            keys: vec![3, 6],
            at: vec![1, 2],
            values: vec![0.5, 9.0],
        });
        let mut out = [0.0, 0.0];
        p.add_row_to(3, 2, &mut out);
        assert_eq!(out, [5.0, 7.5]);
        assert!(p.encoded_overlaps(&[1, 3]));
        assert!(p.encoded_overlaps(&[6]));
        assert!(p.touches(6));
        assert!(!p.encoded_overlaps(&[4]));
        assert!(p.dense_overlaps(&[3]));
    }

    #[test]
    fn overlap_and_order_checks() {
        assert!(sorted_overlap(&[1, 5, 9], &[2, 9]));
        assert!(!sorted_overlap(&[1, 5], &[2, 6]));
        assert!(strictly_sorted(&[1, 2, 7]));
        assert!(!strictly_sorted(&[1, 1]));
        assert!(!strictly_sorted(&[2, 1]));
    }
}
