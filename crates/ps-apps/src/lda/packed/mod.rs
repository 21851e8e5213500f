//! Word-topic rows packed for the host-device bus: only their nonzero entries, both ways.
//!
//! LDA's word-topic rows and a sweep's count changes travel sparse on the wire (most of a row's
//! K cells are zero at large K). Without packing, a resident engine would copy each pulled run
//! of rows dense across PCIe (at K 1,000, 30-50 times its wire bytes), and the sweep's delta
//! out as 12-byte `(word, topic, change)` triples (2-3 times). Both now cross as a packed image:
//!
//! - in: [`pack_rows`] keeps a run's nonzero entries ([`pack_sparse_rows`] makes the same image
//!   from a run that arrived by its entries, never dense on the host), and the device writes them into its
//!   zeroed copy of the rows ([`unpack_rows`] is that step on the host; the CUDA engine's
//!   kernel `lda_scatter_rows`, `kernels/lda_rows.cuh`, does the same);
//! - out: the device packs the sweep's dense move counts (`kernels/lda_rows.cuh`'s
//!   `lda_delta_*` passes; [`pack_delta`] is the host half, [`pack_delta_entries`] the same
//!   from the delta's entries), and the host reads the entries back with [`unpack_delta`],
//!   checking the image as it goes.
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

use ps_proto::SparseRows;

pub mod rice;

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
    is_count(v).then_some(v as u16)
}

/// Whether `v` is a count the image stores in a `u16`: a whole number from 1 to 65,535. On
/// the bits, without branches, so a loop over many values runs several at once: positive,
/// an exponent from 0 to 15, and no mantissa bit below the binary point.
fn is_count(v: f32) -> bool {
    let b = v.to_bits();
    let e = ((b >> 23) & 0xff).wrapping_sub(127);
    (b >> 31 == 0) & (e <= 15) & (b & (0x7f_ffff >> e.min(15)) == 0)
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

/// [`pack_rows`] of a run given by its entries (`rows.width` must be `k`): the same image, word
/// for word, as packing the run's dense form, without ever writing it dense. Entries whose
/// value is `+0.0` are left out, as the dense scan leaves those cells out. `rows` must have
/// passed [`SparseRows::check`].
pub fn pack_sparse_rows(rows: SparseRows<'_>, k: usize, image: &mut Vec<u32>) -> Option<Packed> {
    if k == 0 || k > MAX_PACKED_TOPICS || rows.width != k {
        return None;
    }
    let (n, cells) = (rows.rows(), rows.rows() * k);
    let kept = |v: f32| v.to_bits() != 0;
    // One pass over the values, without branches (`&`, not `&&`) so that it takes several at
    // once: how many are +0.0 (left out), and whether every other one is a count.
    let (mut zeros, mut counts) = (0usize, true);
    for &v in rows.values {
        zeros += usize::from(!kept(v));
        counts &= !kept(v) | is_count(v);
    }
    let entries = rows.values.len() - zeros;
    // As in pack_rows: past this many entries the image cannot be smaller.
    let budget = (4 * cells).saturating_sub(4 * n) / 3;
    if entries > budget || u32::try_from(entries).is_err() {
        return None;
    }
    let shape = Packed {
        rows: n,
        entries,
        values: if counts { Values::U16 } else { Values::F32 },
    };
    if shape.bytes() >= 4 * cells as u64 {
        return None;
    }
    // The row ends, then the topics two to a word, then the values (two counts to a word, or
    // f32 bits).
    image.clear();
    image.reserve(shape.words());
    if zeros == 0 {
        // No +0.0 entry to leave out (the usual case): the ends are the offsets, and the rest
        // goes straight from the entries.
        image.extend(rows.offsets.iter().skip(1).map(|&o| o as u32));
        let (pairs, last) = rows.at.as_chunks::<2>();
        image.extend(pairs.iter().map(|p| (p[0] & 0xffff) | (p[1] << 16)));
        image.extend(last.iter().map(|t| t & 0xffff));
        if counts {
            // Counts (checked above): below 65,536.
            let (pairs, last) = rows.values.as_chunks::<2>();
            image.extend(pairs.iter().map(|p| (p[0] as u32) | ((p[1] as u32) << 16)));
            image.extend(last.iter().map(|v| *v as u32));
        } else {
            image.extend(rows.values.iter().map(|v| v.to_bits()));
        }
        debug_assert_eq!(image.len(), shape.words());
        return Some(shape);
    }
    let mut end = 0;
    for i in 0..n {
        end += rows.row(i).1.iter().filter(|v| kept(**v)).count() as u32;
        image.push(end);
    }
    image.resize(shape.words(), 0);
    let (topics, values) = image[n..].split_at_mut(entries.div_ceil(2));
    let nonzero = rows.at.iter().zip(rows.values).filter(|(_, v)| kept(**v));
    for (e, (&t, &v)) in nonzero.enumerate() {
        let shift = 16 * (e % 2);
        topics[e / 2] |= (t & 0xffff) << shift;
        if counts {
            // A count (checked above): below 65,536.
            values[e / 2] |= (v as u32) << shift;
        } else {
            values[e] = v.to_bits();
        }
    }
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

/// The shape of a packed delta of `rows` rows whose nonzero changes are `changes`: `i16`
/// values when every change is within ±32,767, else `i32` (what [`pack_delta`] and the device
/// pick).
pub fn delta_shape(rows: usize, changes: impl ExactSizeIterator<Item = i32>) -> Packed {
    let entries = changes.len();
    let mut changes = changes;
    let wide = changes.any(|c| c.unsigned_abs() > I16_MAX as u32);
    Packed {
        rows,
        entries,
        values: if wide { Values::I32 } else { Values::I16 },
    }
}

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
    let shape = delta_shape(rows, changes.iter().copied());
    image.extend(pairs(topics.into_iter()));
    if shape.values == Values::I32 {
        image.extend(changes.iter().map(|&c| c as u32));
    } else {
        image.extend(pairs(changes.iter().map(|&c| c as i16 as u16)));
    }
    debug_assert_eq!(image.len(), shape.words());
    shape
}

/// [`pack_delta`] of a delta given by its entries, `(word, topic, change)` sorted by word then
/// topic, over the rows of `words` (sorted: row `r` is word `words[r]`): the same image, word
/// for word, without the dense `rows x k` cells. What the CPU oracle of a resident engine
/// stands in for the device's packing with. Refuses an entry of a word not in `words`, a topic
/// of `k` or more, a zero change or entries out of order.
pub fn pack_delta_entries(
    entries: &[(u32, u32, i32)],
    words: &[u32],
    k: usize,
    image: &mut Vec<u32>,
) -> Result<Packed, String> {
    if !(1..=MAX_PACKED_TOPICS).contains(&k) {
        return Err(format!("K {k} does not pack (1 to {MAX_PACKED_TOPICS})"));
    }
    image.clear();
    let mut next = entries.iter().enumerate().peekable();
    let mut last: Option<(u32, u32)> = None;
    for &word in words {
        while let Some(&(i, &(w, t, c))) = next.peek() {
            if w > word {
                break;
            }
            if w < word || t as usize >= k || c == 0 || last.is_some_and(|l| l >= (w, t)) {
                return Err(format!(
                    "entry {i} (word {w}, topic {t}, change {c}) is out of order or not valid"
                ));
            }
            last = Some((w, t));
            next.next();
        }
        image.push(next.peek().map_or(entries.len(), |&(i, _)| i) as u32);
    }
    if let Some((i, &(w, ..))) = next.next() {
        return Err(format!("entry {i}: word {w} is not one of the rows"));
    }
    let shape = delta_shape(words.len(), entries.iter().map(|e| e.2));
    image.extend(pairs(entries.iter().map(|e| e.1 as u16)));
    if shape.values == Values::I32 {
        image.extend(entries.iter().map(|e| e.2 as u32));
    } else {
        image.extend(pairs(entries.iter().map(|e| e.2 as i16 as u16)));
    }
    debug_assert_eq!(image.len(), shape.words());
    Ok(shape)
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
mod tests;
