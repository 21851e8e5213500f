//! Word-topic rows packed for the host-device bus: only their nonzero entries, both ways.
//!
//! LDA's word-topic rows and a sweep's count changes travel sparse on the wire (most of a row's
//! K cells are zero at large K). Without packing, a resident engine would copy each pulled run
//! of rows dense across PCIe (at K 1,000, 30-50 times its wire bytes), and the sweep's delta
//! out as 12-byte `(word, topic, change)` triples (2-3 times). Both now cross as a packed image:
//!
//! - in: [`pack_rows`] keeps a run's nonzero entries, and the device writes them into its
//!   zeroed copy of the rows ([`unpack_rows`] is that step on the host; the CUDA engine's
//!   kernel `lda_scatter_rows`, `kernels/lda_rows.cuh`, does the same);
//! - out: the device packs the sweep's dense move counts (`kernels/lda_rows.cuh`'s
//!   `lda_delta_*` passes; [`pack_delta`] is the host half), and the host reads the entries back
//!   with [`unpack_delta`], checking the image as it goes.
//!
//! The packed image is a list of little-endian `u32` words, so one buffer and one copy carry
//! it:
//!
//! | words | what |
//! | --- | --- |
//! | `rows` | each row's end: entries `[end(r - 1), end(r))` are row `r`'s (`end(-1)` = 0) |
//! | `ceil(entries / 2)` | the entries' topics, `u16`, two to a word (low half first) |
//! | `ceil(entries / 2)` or `entries` | their values, by [`Values`]: 16-bit two to a word, or 32-bit one to a word |
//!
//! Within a row, entries are in topic order; an odd last half-word is zero. Pulled rows keep
//! every entry whose value's bits are not all zero, so -0.0 and NaN travel as they are and
//! unpacking gives back the run's bits exactly. Counts (what the shards normally hold: whole
//! numbers from 1 to 65,535) take 2 bytes; a run with any other nonzero value carries all its
//! values as `f32`. A run packs only when K fits in a `u16` topic and the image is smaller than
//! the dense run. A delta keeps its nonzero changes, as `i16` when every one fits, else `i32`.

/// How a packed image's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Pulled rows: whole numbers 1..=65,535 as `u16`, two to a word.
    U16,
    /// Pulled rows: `f32` bits, one to a word.
    F32,
    /// A delta: changes as `i16`, two to a word.
    I16,
    /// A delta: changes as `i32`, one to a word.
    I32,
}

impl Values {
    /// Whether two values share a word.
    pub fn halves(self) -> bool {
        matches!(self, Values::U16 | Values::I16)
    }
}

/// The shape of a packed image: where its parts start.
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
            + if self.values.halves() {
                self.entries.div_ceil(2)
            } else {
                self.entries
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
/// [`MAX_PACKED_TOPICS`], or `values` is not whole rows. A large run is scanned on the
/// machine's threads ([`crate::par`]); the image is the same whatever their number.
pub fn pack_rows(values: &[f32], k: usize, image: &mut Vec<u32>) -> Option<Packed> {
    pack_rows_on(values, k, image, crate::par::threads())
}

/// Runs of fewer cells are scanned on one thread.
const PARALLEL_CELLS: usize = 1 << 20;
/// Cells per part of a run scanned in parallel (whole rows, at least one).
const PART_CELLS: usize = 1 << 18;

/// [`pack_rows`] on up to `threads` threads.
pub fn pack_rows_on(
    values: &[f32],
    k: usize,
    image: &mut Vec<u32>,
    threads: usize,
) -> Option<Packed> {
    if k == 0 || k > MAX_PACKED_TOPICS || !values.len().is_multiple_of(k) {
        return None;
    }
    let rows = values.len() / k;
    // Each entry costs at least 3 bytes and each row 4: past this many, the image cannot be
    // smaller.
    let budget = (4 * values.len()).saturating_sub(4 * rows) / 3;
    let parts: Vec<Scan> = if threads <= 1 || values.len() < PARALLEL_CELLS {
        vec![scan(values, k, budget)?]
    } else {
        let per = (PART_CELLS / k).max(1) * k;
        let n = values.len().div_ceil(per);
        let parts = crate::par::map(n, threads, |i| {
            scan(
                &values[i * per..((i + 1) * per).min(values.len())],
                k,
                budget,
            )
        });
        parts.into_iter().collect::<Option<Vec<Scan>>>()?
    };
    let entries: usize = parts.iter().map(|p| p.topics.len()).sum();
    if entries > budget || u32::try_from(entries).is_err() {
        return None;
    }
    let counts = parts.iter().all(|p| p.counts);
    let shape = Packed {
        rows,
        entries,
        values: if counts { Values::U16 } else { Values::F32 },
    };
    if shape.bytes() >= 4 * values.len() as u64 {
        return None;
    }
    image.clear();
    image.reserve(shape.words());
    let mut before = 0u32;
    for p in &parts {
        image.extend(p.ends.iter().map(|&e| before + e));
        before += p.topics.len() as u32;
    }
    image.extend(pairs(parts.iter().flat_map(|p| p.topics.iter().copied())));
    let kept = parts.iter().flat_map(|p| p.kept.iter().copied());
    if counts {
        image.extend(pairs(
            kept.map(|b| as_count(f32::from_bits(b)).unwrap_or(0)),
        ));
    } else {
        image.extend(kept);
    }
    debug_assert_eq!(image.len(), shape.words());
    Some(shape)
}

/// The nonzero entries of some whole rows: each row's end (from the part's start), topics,
/// value bits, and whether every value is a count.
struct Scan {
    ends: Vec<u32>,
    topics: Vec<u16>,
    kept: Vec<u32>,
    counts: bool,
}

/// Scans `values` (whole rows of `k`); `None` once more than `budget` entries turn up (the run
/// cannot pack smaller) or the entries overflow a `u32`.
fn scan(values: &[f32], k: usize, budget: usize) -> Option<Scan> {
    let mut s = Scan {
        ends: Vec::with_capacity(values.len() / k),
        topics: Vec::new(),
        kept: Vec::new(),
        counts: true,
    };
    for row in values.chunks_exact(k) {
        for (t, v) in row.iter().enumerate() {
            let bits = v.to_bits();
            if bits != 0 {
                if s.topics.len() == budget {
                    return None;
                }
                s.topics.push(t as u16);
                s.kept.push(bits);
                s.counts &= as_count(*v).is_some();
            }
        }
        s.ends.push(u32::try_from(s.topics.len()).ok()?);
    }
    Some(s)
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
            let at = shape.values_at();
            dst[r * k + t] = if shape.values.halves() {
                f32::from(half(image, at, j))
            } else {
                f32::from_bits(image[at + j])
            };
        }
    }
}

/// The largest change a [`Values::I16`] delta holds.
const I16_MAX: i32 = i16::MAX as i32;

/// Packs a sweep's move counts, `cells` (`rows x k`, row-major), into `image` (cleared first):
/// every nonzero cell in row then topic order, as `i16` when every change fits, else `i32`. The
/// host half of the device's `lda_delta_count`, `lda_delta_scan` and `lda_delta_write`, word
/// for word. `k` must be 1..=[`MAX_PACKED_TOPICS`] and `cells` whole rows.
pub fn pack_delta(cells: &[i32], k: usize, image: &mut Vec<u32>) -> Packed {
    assert!(
        (1..=MAX_PACKED_TOPICS).contains(&k) && cells.len().is_multiple_of(k),
        "{} cells are not whole rows of K {k} (K at most {MAX_PACKED_TOPICS})",
        cells.len()
    );
    let rows = cells.len() / k;
    image.clear();
    let mut topics: Vec<u16> = Vec::new();
    let mut changes: Vec<i32> = Vec::new();
    for row in cells.chunks_exact(k) {
        for (t, &c) in row.iter().enumerate() {
            if c != 0 {
                topics.push(t as u16);
                changes.push(c);
            }
        }
        image.push(topics.len() as u32);
    }
    let wide = changes.iter().any(|c| c.unsigned_abs() > I16_MAX as u32);
    let shape = Packed {
        rows,
        entries: topics.len(),
        values: if wide { Values::I32 } else { Values::I16 },
    };
    image.extend(pairs(topics.into_iter()));
    if wide {
        image.extend(changes.iter().map(|&c| c as u32));
    } else {
        image.extend(pairs(changes.iter().map(|&c| c as i16 as u16)));
    }
    debug_assert_eq!(image.len(), shape.words());
    shape
}

/// The entries of a packed delta as `(words[row], topic, change)`, sorted by `(word, topic)`
/// when `words` is (the worker's sorted word list; row `r` is word `words[r]`). The image comes
/// back from a device, so it is checked: its length, row ends that never decrease and end at
/// the entry count, topics below `k` and increasing within a row, and no zero change.
pub fn unpack_delta(
    image: &[u32],
    shape: Packed,
    k: usize,
    words: &[u32],
) -> Result<Vec<(u32, u32, i32)>, String> {
    if !matches!(shape.values, Values::I16 | Values::I32) {
        return Err(format!("a delta with {:?} values", shape.values));
    }
    if shape.rows != words.len() || image.len() != shape.words() {
        return Err(format!(
            "an image of {} words for {} rows and {} entries ({} words), {} rows expected",
            image.len(),
            shape.rows,
            shape.entries,
            shape.words(),
            words.len()
        ));
    }
    let mut out = Vec::with_capacity(shape.entries);
    let mut start = 0usize;
    for (r, &word) in words.iter().enumerate() {
        let end = image[r] as usize;
        if end < start || end > shape.entries {
            return Err(format!(
                "row {r} ends at entry {end} after {start} of {}",
                shape.entries
            ));
        }
        let mut last: Option<usize> = None;
        for j in start..end {
            let t = usize::from(half(image, shape.topics_at(), j));
            let c = match shape.values {
                Values::I16 => i32::from(half(image, shape.values_at(), j) as i16),
                _ => image[shape.values_at() + j] as i32,
            };
            if t >= k || last.is_some_and(|l| l >= t) || c == 0 {
                return Err(format!(
                    "row {r}: entry {j} (topic {t}, change {c}) is not valid"
                ));
            }
            last = Some(t);
            out.push((word, t as u32, c));
        }
        start = end;
    }
    if start != shape.entries {
        return Err(format!(
            "the rows end at entry {start} of {}",
            shape.entries
        ));
    }
    Ok(out)
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
                assert_eq!(shape.values, Values::U16);
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
            values: Values::U16,
        };
        let image = vec![2, 5, 1 | (9 << 16), 2, 3 | (4 << 16), 5];
        let mut dst = vec![f32::NAN; 8];
        unpack_rows(&image, shape, 4, &mut dst);
        assert_eq!(dst, vec![0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0]);
    }

    #[test]
    fn deltas_pack_in_row_and_topic_order_and_come_back_checked() {
        let k = 9;
        let words = [3u32, 10, 11, 40];
        let mut cells = vec![0i32; words.len() * k];
        cells[2] = 1;
        cells[5] = -2;
        cells[3 * k] = -32_767;
        cells[3 * k + 8] = 7;
        let mut image = Vec::new();
        let shape = pack_delta(&cells, k, &mut image);
        assert_eq!(
            (shape.rows, shape.entries, shape.values),
            (4, 4, Values::I16)
        );
        assert_eq!(image.len(), 4 + 2 + 2);
        let want = vec![(3, 2, 1), (3, 5, -2), (40, 0, -32_767), (40, 8, 7)];
        assert_eq!(unpack_delta(&image, shape, k, &words).unwrap(), want);
        // One change past i16: all go as i32.
        cells[4 * k - 1] = 40_000;
        let shape = pack_delta(&cells, k, &mut image);
        assert_eq!(shape.values, Values::I32);
        assert_eq!(image.len(), 4 + 2 + 4);
        let got = unpack_delta(&image, shape, k, &words).unwrap();
        assert_eq!(got[3], (40, 8, 40_000));
        // Nothing moved: the row ends alone.
        let shape = pack_delta(&vec![0; 2 * k], k, &mut image);
        assert_eq!((shape.entries, image.clone()), (0, vec![0, 0]));
        assert!(unpack_delta(&image, shape, k, &[1, 2]).unwrap().is_empty());
    }

    #[test]
    fn a_bad_delta_image_is_an_error() {
        let k = 9;
        let words = [3u32, 10];
        let mut cells = vec![0i32; 2 * k];
        cells[1] = 4;
        cells[k + 2] = -1;
        cells[k + 6] = 2;
        let mut image = Vec::new();
        let shape = pack_delta(&cells, k, &mut image);
        let ok = unpack_delta(&image, shape, k, &words).unwrap();
        assert_eq!(ok, vec![(3, 1, 4), (10, 2, -1), (10, 6, 2)]);
        let bad = |f: &dyn Fn(&mut Vec<u32>)| {
            let mut i = image.clone();
            f(&mut i);
            unpack_delta(&i, shape, k, &words).is_err()
        };
        assert!(bad(&|i| i[0] = 4), "row 0 ends past the entries");
        assert!(
            bad(&|i| {
                i[0] = 2;
                i[1] = 1;
            }),
            "row 1 ends before row 0"
        );
        assert!(bad(&|i| i[1] = 2), "the rows end before the entries");
        assert!(bad(&|i| i[2] = 9), "topic 9 >= K");
        assert!(bad(&|i| i[3] = 2 | (2 << 16)), "topics repeat in a row");
        assert!(bad(&|i| i[4] = 0), "a zero change");
        assert!(
            bad(&|i| {
                i.pop();
            }),
            "a short image"
        );
        assert!(unpack_delta(&image, shape, k, &words[..1]).is_err(), "rows");
        let rows = Packed {
            values: Values::U16,
            ..shape
        };
        assert!(unpack_delta(&image, rows, k, &words).is_err(), "row values");
    }

    #[test]
    fn a_run_packs_the_same_on_any_number_of_threads() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (k, rows, p, fractional) in [
            (1000usize, 1500usize, 0.05, false),
            (1000, 1500, 0.05, true),
            (300, 4001, 0.3, false),
            (64, 20_000, 0.9, false),
        ] {
            let mut v = vec![0f32; rows * k];
            for x in v.iter_mut() {
                if rng.gen_bool(p) {
                    *x = f32::from(rng.gen_range(1u16..=500));
                }
            }
            if fractional {
                v[rows * k - 1] = 0.5;
            }
            let (mut one, mut many) = (Vec::new(), Vec::new());
            let a = pack_rows_on(&v, k, &mut one, 1);
            let b = pack_rows_on(&v, k, &mut many, 3);
            assert_eq!(a, b, "K {k}");
            if a.is_some() {
                assert_eq!(one, many, "K {k}");
                let mut back = vec![0f32; v.len()];
                unpack_rows(&many, b.unwrap(), k, &mut back);
                assert_eq!(back, v);
            }
        }
    }
}
