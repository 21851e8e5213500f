//! Word-topic rows packed for the host-device bus: only their nonzero entries.
//!
//! The pull replies of LDA's word-topic rows travel sparse on the wire (most of a row's K counts
//! are zero at large K), and the client hands the session each run of rows dense. A resident
//! engine would otherwise copy the dense run across PCIe: at K 1,000 that was 30-50 times the
//! run's wire bytes. [`pack_rows`] keeps a run's nonzero entries instead, and the device writes
//! them into its zeroed copy of the rows ([`unpack_rows`] is that step on the host: the CUDA
//! engine's kernel `lda_scatter_rows`, `kernels/lda_rows.cuh`, does the same).
//!
//! The packed image is a list of little-endian `u32` words, so one pinned buffer and one copy
//! carry it:
//!
//! | words | what |
//! | --- | --- |
//! | `rows` | each row's end: entries `[end(r - 1), end(r))` are row `r`'s (`end(-1)` = 0) |
//! | `ceil(entries / 2)` | the entries' topics, `u16`, two to a word (low half first) |
//! | `ceil(entries / 2)` or `entries` | their values: `u16` counts two to a word ([`Values::Counts`]), or `f32` bits ([`Values::F32`]) |
//!
//! Within a row, entries are in topic order. An entry is kept when its value's bits are not all
//! zero, so -0.0 and NaN travel as they are and unpacking gives back the run's bits exactly.
//! Counts (what the shards normally hold: whole numbers from 1 to 65,535) take 2 bytes; a run
//! with any other nonzero value carries all its values as `f32`. A run packs only when K fits in
//! a `u16` topic and the image is smaller than the dense run.

/// How a packed run's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Whole numbers 1..=65,535 as `u16`, two to a word.
    Counts,
    /// `f32` bits, one to a word.
    F32,
}

/// The shape of a packed run: where its parts start in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub rows: usize,
    pub entries: usize,
    pub values: Values,
}

impl Packed {
    /// The word where the topics start.
    pub fn topics_at(&self) -> usize {
        self.rows
    }

    /// The word where the values start.
    pub fn values_at(&self) -> usize {
        self.rows + self.entries.div_ceil(2)
    }

    /// The image's length in words.
    pub fn words(&self) -> usize {
        self.values_at()
            + match self.values {
                Values::Counts => self.entries.div_ceil(2),
                Values::F32 => self.entries,
            }
    }

    /// The image's length in bytes (what crosses the bus).
    pub fn bytes(&self) -> u64 {
        4 * self.words() as u64
    }
}

/// The largest K whose topics fit the image's `u16`.
pub const MAX_PACKED_TOPICS: usize = 1 << 16;

/// `v` as a count the image stores in a `u16`, if it is one exactly.
fn as_count(v: f32) -> Option<u16> {
    ((1.0..=65_535.0).contains(&v) && v.fract() == 0.0).then_some(v as u16)
}

/// Packs `values`, whole rows of `k`, into `image` (cleared first), when that is smaller than
/// the dense run; `None` (and `image` unspecified) otherwise, or when `k` is 0 or above
/// [`MAX_PACKED_TOPICS`], or `values` is not whole rows.
pub fn pack_rows(values: &[f32], k: usize, image: &mut Vec<u32>) -> Option<Packed> {
    if k == 0 || k > MAX_PACKED_TOPICS || !values.len().is_multiple_of(k) {
        return None;
    }
    let rows = values.len() / k;
    // Each entry costs at least 3 bytes and each row 4: give up once the image cannot be smaller.
    let budget = (4 * values.len()).saturating_sub(4 * rows) / 3;
    image.clear();
    image.resize(rows, 0);
    let mut topics: Vec<u16> = Vec::new();
    let mut kept: Vec<u32> = Vec::new();
    let mut counts = true;
    for (r, row) in values.chunks_exact(k).enumerate() {
        for (t, v) in row.iter().enumerate() {
            let bits = v.to_bits();
            if bits != 0 {
                if topics.len() == budget {
                    return None;
                }
                topics.push(t as u16);
                kept.push(bits);
                counts &= as_count(*v).is_some();
            }
        }
        image[r] = u32::try_from(topics.len()).ok()?;
    }
    let shape = Packed {
        rows,
        entries: topics.len(),
        values: if counts { Values::Counts } else { Values::F32 },
    };
    if shape.bytes() >= 4 * values.len() as u64 {
        return None;
    }
    image.extend(pairs(topics.iter().copied()));
    match shape.values {
        Values::Counts => image.extend(pairs(
            kept.iter()
                .map(|&b| as_count(f32::from_bits(b)).unwrap_or(0)),
        )),
        Values::F32 => image.extend_from_slice(&kept),
    }
    debug_assert_eq!(image.len(), shape.words());
    Some(shape)
}

/// `u16`s two to a little-endian word, the first in the low half (an odd last one alone).
fn pairs(mut it: impl Iterator<Item = u16>) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        let lo = it.next()?;
        let hi = it.next().unwrap_or(0);
        Some(u32::from(lo) | (u32::from(hi) << 16))
    })
}

/// The `u16` at position `i` of the pairs starting at `image[at]`.
fn half(image: &[u32], at: usize, i: usize) -> u16 {
    (image[at + i / 2] >> (16 * (i % 2))) as u16
}

/// Writes a packed run into `dst` (`rows x k`): zeroes it, then writes each entry, as the
/// device does: row `r`'s entries are `[end(r - 1), end(r))`, each end clamped to the entry
/// count, and entries whose topic is `k` or more are skipped (the kernel does the same).
/// `image` must hold `shape.words()` words and `dst` `shape.rows * k` values.
pub fn unpack_rows(image: &[u32], shape: Packed, k: usize, dst: &mut [f32]) {
    assert_eq!(
        image.len(),
        shape.words(),
        "a packed image of another shape"
    );
    assert_eq!(dst.len(), shape.rows * k, "a destination of another shape");
    dst.fill(0.0);
    let end = |r: usize| (image[r] as usize).min(shape.entries);
    for r in 0..shape.rows {
        let start = if r == 0 { 0 } else { end(r - 1) };
        for j in start..end(r) {
            let t = usize::from(half(image, shape.topics_at(), j));
            if t >= k {
                continue;
            }
            dst[r * k + t] = match shape.values {
                Values::Counts => f32::from(half(image, shape.values_at(), j)),
                Values::F32 => f32::from_bits(image[shape.values_at() + j]),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn round_trip(values: &[f32], k: usize) -> Option<Packed> {
        let mut image = Vec::new();
        let shape = pack_rows(values, k, &mut image)?;
        assert_eq!(image.len(), shape.words());
        let mut back = vec![f32::NAN; values.len()];
        unpack_rows(&image, shape, k, &mut back);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(values));
        Some(shape)
    }

    #[test]
    fn sparse_counts_pack_as_u16_pairs_and_come_back_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for k in [1usize, 2, 3, 50, 1000] {
            let rows = 37;
            let mut v = vec![0f32; rows * k];
            for x in v.iter_mut() {
                if rng.gen_bool(0.05) {
                    *x = f32::from(rng.gen_range(1u16..=65_535));
                }
            }
            if let Some(shape) = round_trip(&v, k) {
                assert_eq!(shape.values, Values::Counts);
                let nnz = v.iter().filter(|x| **x != 0.0).count();
                assert_eq!(shape.entries, nnz);
                assert_eq!(shape.words(), rows + 2 * nnz.div_ceil(2));
            } else {
                // Too dense to pay: only for the narrow rows.
                assert!(k <= 3, "K {k} did not pack");
            }
        }
    }

    #[test]
    fn other_values_pack_as_f32_bits() {
        let k = 100;
        let mut v = vec![0f32; 4 * k];
        v[3] = 2.0;
        v[150] = -0.0;
        v[151] = f32::NAN;
        v[260] = 0.5;
        v[399] = 70_000.0;
        let shape = round_trip(&v, k).expect("sparse enough");
        assert_eq!(shape.values, Values::F32);
        assert_eq!(shape.entries, 5);
        for neg in [-1.0f32, 65_536.0, 1.5] {
            let mut w = vec![0f32; k];
            w[7] = neg;
            assert_eq!(round_trip(&w, k).unwrap().values, Values::F32, "{neg}");
        }
    }

    #[test]
    fn dense_runs_bad_shapes_and_wide_k_do_not_pack() {
        let mut image = Vec::new();
        assert!(pack_rows(&[1.0; 400], 100, &mut image).is_none());
        assert!(pack_rows(&[0.0; 10], 3, &mut image).is_none());
        assert!(pack_rows(&[0.0; 10], 0, &mut image).is_none());
        let wide = vec![0f32; MAX_PACKED_TOPICS + 1];
        assert!(pack_rows(&wide, MAX_PACKED_TOPICS + 1, &mut image).is_none());
        // Empty rows pack to their ends alone; an empty run to nothing.
        let shape = round_trip(&[0.0; 300], 100).unwrap();
        assert_eq!((shape.rows, shape.entries, shape.words()), (3, 0, 3));
        assert!(pack_rows(&[], 100, &mut image).is_none());
        // Up to the break-even point a run packs; past it, not.
        let k = 64;
        let mut v = vec![0f32; k];
        for (i, x) in v.iter_mut().enumerate().take(40) {
            *x = (i + 1) as f32;
        }
        assert!(round_trip(&v, k).is_some());
        let mut w = vec![0f32; k];
        w.iter_mut().take(60).for_each(|x| *x = 0.25);
        assert!(round_trip(&w, k).is_none());
    }

    #[test]
    fn unpacking_skips_topics_past_k_and_clamps_row_ends() {
        // An image made by hand: row 0 has topics 1 and 9 (9 >= K 4), row 1 claims entries
        // up to 5 of 3.
        let shape = Packed {
            rows: 2,
            entries: 3,
            values: Values::Counts,
        };
        let image = vec![2, 5, 1 | (9 << 16), 2, 3 | (4 << 16), 5];
        let mut dst = vec![f32::NAN; 8];
        unpack_rows(&image, shape, 4, &mut dst);
        assert_eq!(dst, vec![0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0]);
    }
}
