//! The index part of a sparse payload: which layout is smallest, and writing and reading it.
//! Pure; no I/O.
//!
//! Indices are strictly increasing; they are coded as gaps: the first index as it is, each next
//! one as `index - previous - 1` (>= 0).
//! * [`MODE_LIST`]: varint `m`, then `m` varint gaps (the first absolute, each next `>= 1` as the
//!   plain difference, the layout issue 4 defined).
//! * [`MODE_RICE`]: varint `m`, one byte `k` (0..=31), then the `m` gaps (minus one after the
//!   first) Golomb-Rice coded: `g >> k` one-bits, a zero-bit, then the low `k` bits of `g`,
//!   least-significant bit first, packed LSB-first, the last byte's unused bits zero. About
//!   `log2(1 / density) + 1.5` bits an index instead of a varint's 8 or more: at 1% density 8.1
//!   bits, at 10% 4.8.
//! * [`MODE_RUNS`]: varint `m`, varint `r` (runs of consecutive indices), one byte `kg` and one
//!   byte `kl` (each 0..=31), then per run, Rice coded with `kg` and `kl`: the gap before it (the
//!   first run's start as it is, each next one as `start - previous end - 2`, runs being maximal)
//!   and its length minus one. Whole rows (`rows:F`) cost about a bit a row this way.
//! * [`MODE_DENSE`]: no indices; all `n` values, zero where nothing was selected (never for the
//!   sign format, which has no zero).

use super::format::ValueFormat;
use super::varint::{read_varint, varint_len, write_varint};
use crate::error::ProtoError;

pub const MODE_LIST: u8 = 0;
pub const MODE_DENSE: u8 = 1;
pub const MODE_RICE: u8 = 2;
pub const MODE_RUNS: u8 = 3;

/// The chosen layout of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub mode: u8,
    /// Rice parameter (MODE_RICE; MODE_RUNS: of the gaps).
    k: u32,
    /// Rice parameter of the run lengths (MODE_RUNS).
    kl: u32,
}

/// Maximal runs of consecutive indices: (coded gap, length - 1) as MODE_RUNS writes them.
fn runs(sel: &[u32]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut prev_end: Option<u32> = None;
    let mut j = 0;
    std::iter::from_fn(move || {
        let start = *sel.get(j)?;
        let mut end = start;
        while j + 1 < sel.len() && sel[j + 1] == end + 1 {
            end += 1;
            j += 1;
        }
        let gap = match prev_end {
            None => u64::from(start),
            Some(p) => u64::from(start - p - 2),
        };
        prev_end = Some(end);
        j += 1;
        Some((gap, u64::from(end - start)))
    })
}

/// Bits of `vals` Rice coded with parameter `k`.
fn rice_len(vals: impl Iterator<Item = u64>, k: u32) -> u64 {
    vals.map(|g| (g >> k) + 1 + u64::from(k)).sum()
}

/// The Rice parameter (0..32) that codes `vals` in the fewest bits, and those bits; of equal
/// ones, the lowest.
///
/// A value's bits, `(g >> k) + k + 1`, are convex in `k`: from `k` to `k + 1` they change by
/// `1 - ceil(a / 2)` with `a = g >> k`, and `ceil(a / 2)` only shrinks as `k` grows. So is their
/// sum, so the walk downhill from the parameter the mean suggests finds the same minimum as
/// trying all 32 (a few passes over `vals` instead of 32): left while not worse, which also
/// reaches the lowest of equal ones, else right while better.
///
/// `vals` gives the values afresh for each pass, so none of them is ever stored.
fn best_k<I: Iterator<Item = u64>>(vals: impl Fn() -> I) -> (u32, u64) {
    let (count, sum) = vals().fold((0u64, 0u64), |(c, s), v| (c + 1, s + v));
    if count == 0 {
        return (0, 0);
    }
    let bits = |k: u32| rice_len(vals(), k);
    let mean = sum / count;
    let start = (u64::BITS - mean.leading_zeros()).saturating_sub(1).min(31);
    let (mut k, mut at) = (start, bits(start));
    while k > 0 {
        let left = bits(k - 1);
        if left > at {
            break;
        }
        (k, at) = (k - 1, left);
    }
    if k == start {
        while k < 31 {
            let right = bits(k + 1);
            if right >= at {
                break;
            }
            (k, at) = (k + 1, right);
        }
    }
    (k, at)
}

fn gaps(sel: &[u32]) -> impl Iterator<Item = u64> + '_ {
    sel.iter().enumerate().map(move |(j, &i)| {
        if j == 0 {
            u64::from(i)
        } else {
            u64::from(i - sel[j - 1] - 1)
        }
    })
}

/// A selection's index part measured in every layout (headers aside): what [`choose`] decides
/// from. A device measures the same of the indices it chose (`kernels/sparse_index.cuh`), so
/// that the host picks the layout and writes the header without the indices crossing to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexSizes {
    /// Selected entries.
    pub entries: u64,
    /// Bytes of the list's varints (the first index, then the differences).
    pub list_bytes: u64,
    /// The Rice parameter of the gaps, and their bits with it.
    pub rice_k: u32,
    pub rice_bits: u64,
    /// Maximal runs of consecutive indices; the Rice parameters and bits of their gaps and of
    /// their lengths.
    pub runs: u64,
    pub gap_k: u32,
    pub gap_bits: u64,
    pub len_k: u32,
    pub len_bits: u64,
}

/// [`IndexSizes`] of `sel`, strictly increasing (not checked here:
/// [`super::encode_selection_indices`] checks).
pub fn index_sizes(sel: &[u32]) -> IndexSizes {
    let list_bytes = sel
        .iter()
        .enumerate()
        .map(|(j, &i)| {
            let g = if j == 0 { i } else { i - sel[j - 1] };
            varint_len(u64::from(g)) as u64
        })
        .sum();
    let (rice_k, rice_bits) = best_k(|| gaps(sel));
    let (gap_k, gap_bits) = best_k(|| runs(sel).map(|r| r.0));
    let (len_k, len_bits) = best_k(|| runs(sel).map(|r| r.1));
    IndexSizes {
        entries: sel.len() as u64,
        list_bytes,
        rice_k,
        rice_bits,
        runs: runs(sel).count() as u64,
        gap_k,
        gap_bits,
        len_k,
        len_bits,
    }
}

/// The smallest layout of selection `sel` (ascending, `< n`) with values in `format`; ties go
/// to the lower mode number.
pub(crate) fn choose(sel: &[u32], n: usize, format: ValueFormat) -> Layout {
    choose_sized(&index_sizes(sel), n, format)
}

/// [`choose`] of a selection's measure.
fn choose_sized(s: &IndexSizes, n: usize, format: ValueFormat) -> Layout {
    let m = s.entries;
    let values = format.encoded_len(m as usize) as u64;
    let head = varint_len(m) as u64;
    let list = head + s.list_bytes + values;
    let rice = head + 1 + s.rice_bits.div_ceil(8) + values;
    let run = head + varint_len(s.runs) as u64 + 2 + (s.gap_bits + s.len_bits).div_ceil(8) + values;
    // The sign format has no zero: the unselected entries of a dense layout would arrive as
    // ±scale. It always lists its indices.
    let dense = match format {
        ValueFormat::Sign => u64::MAX,
        _ => format.encoded_len(n) as u64,
    };
    // The smallest; ties go to the lower mode.
    let mode = [
        (MODE_LIST, list),
        (MODE_RICE, rice),
        (MODE_RUNS, run),
        (MODE_DENSE, dense),
    ]
    .into_iter()
    .min_by_key(|&(mode, len)| (len, mode))
    .map_or(MODE_DENSE, |(mode, _)| mode);
    match mode {
        MODE_RUNS => Layout {
            mode,
            k: s.gap_k,
            kl: s.len_k,
        },
        _ => Layout {
            mode,
            k: s.rice_k,
            kl: 0,
        },
    }
}

/// The layout [`choose`] picks for a selection of this measure, in a block of `n` with values
/// in `format`: its mode (with its Rice parameters), the bytes that open the payload (the mode
/// byte, the entries, the mode's parameters: all of it for dense) and how many bytes of index
/// codes follow them (0 for dense). The codes are the selection's gaps as [`write_indices`]
/// writes them after the same opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLayout {
    pub mode: u8,
    /// The Rice parameter of the gaps (or, for runs, of the runs' gaps).
    pub k: u32,
    /// The Rice parameter of the runs' lengths.
    pub kl: u32,
    pub header: Vec<u8>,
    pub body_bytes: u64,
}

impl IndexLayout {
    /// Whether the layout is dense: every value of the block, no index part.
    pub fn is_dense(&self) -> bool {
        self.mode == MODE_DENSE
    }
}

/// See [`IndexLayout`].
pub fn index_layout(sizes: &IndexSizes, n: usize, format: ValueFormat) -> IndexLayout {
    let layout = choose_sized(sizes, n, format);
    let mut header = Vec::new();
    write_header(layout, sizes.entries, sizes.runs, &mut header);
    let body_bytes = match layout.mode {
        MODE_LIST => sizes.list_bytes,
        MODE_RICE => sizes.rice_bits.div_ceil(8),
        MODE_RUNS => (sizes.gap_bits + sizes.len_bits).div_ceil(8),
        _ => 0,
    };
    IndexLayout {
        mode: layout.mode,
        k: layout.k,
        kl: layout.kl,
        header,
        body_bytes,
    }
}

/// The mode byte and what follows it before the codes: the entries, and the mode's parameters.
fn write_header(layout: Layout, entries: u64, nruns: u64, out: &mut Vec<u8>) {
    out.push(layout.mode);
    match layout.mode {
        MODE_LIST => write_varint(entries, out),
        MODE_RICE => {
            write_varint(entries, out);
            out.push(layout.k as u8);
        }
        MODE_RUNS => {
            write_varint(entries, out);
            write_varint(nruns, out);
            out.push(layout.k as u8);
            out.push(layout.kl as u8);
        }
        _ => {}
    }
}

/// Appends the mode byte and the index part of `layout` (nothing after the mode for dense).
pub(crate) fn write_indices(layout: Layout, sel: &[u32], out: &mut Vec<u8>) {
    let nruns = if layout.mode == MODE_RUNS {
        runs(sel).count() as u64
    } else {
        0
    };
    write_header(layout, sel.len() as u64, nruns, out);
    match layout.mode {
        MODE_LIST => {
            for (j, &i) in sel.iter().enumerate() {
                write_varint(u64::from(if j == 0 { i } else { i - sel[j - 1] }), out);
            }
        }
        MODE_RICE => {
            let mut w = BitWriter::new(out);
            for g in gaps(sel) {
                w.rice(g, layout.k);
            }
            w.finish();
        }
        MODE_RUNS => {
            let mut w = BitWriter::new(out);
            for (gap, len) in runs(sel) {
                w.rice(gap, layout.k);
                w.rice(len, layout.kl);
            }
            w.finish();
        }
        _ => {}
    }
}

/// Reads the index part of a list or Rice payload (`rest` is what follows the mode byte) for a
/// block of `n` in `format`. Returns the indices and where the values start in `rest`; checks
/// that exactly `format.encoded_len(m)` bytes of values follow.
pub(crate) fn read_indices(
    mode: u8,
    rest: &[u8],
    n: usize,
    format: ValueFormat,
) -> Result<(Vec<u32>, usize), ProtoError> {
    let mut pos = 0;
    let m = read_varint(rest, &mut pos)?;
    if m > n as u64 {
        return Err(ProtoError::Malformed(format!(
            "{m} sparse entries for a block of {n}"
        )));
    }
    let m = m as usize;
    let values = format
        .checked_len(m)
        .ok_or_else(|| ProtoError::Malformed(format!("{m} sparse entries overflow")))?;
    let short = || {
        ProtoError::Malformed(format!(
            "sparse payload of {} bytes is too short for {m} entries",
            rest.len() + 1
        ))
    };
    let limit = (n as u64).min(1 << 32);
    let mut indices = Vec::new();
    let mut next = 0u64; // smallest index the next entry may take
    let mut push = |g: u64, indices: &mut Vec<u32>| -> Result<(), ProtoError> {
        let idx = next
            .checked_add(g)
            .ok_or_else(|| ProtoError::Malformed("sparse index overflows".into()))?;
        if idx >= limit {
            return Err(ProtoError::Malformed(format!(
                "sparse index {idx} out of range for a block of {n}"
            )));
        }
        indices.push(idx as u32);
        next = idx + 1;
        Ok(())
    };
    match mode {
        MODE_LIST => {
            // Every entry takes at least one index byte: don't allocate beyond that.
            if m.checked_add(values)
                .is_none_or(|need| need > rest.len() - pos)
            {
                return Err(short());
            }
            indices.reserve_exact(m);
            for j in 0..m {
                let g = read_varint(rest, &mut pos)?;
                let g = match (j, g) {
                    (0, g) => g,
                    (_, 0) => {
                        return Err(ProtoError::Malformed(format!(
                            "sparse index {} repeated: indices must increase",
                            next.saturating_sub(1)
                        )))
                    }
                    (_, g) => g - 1,
                };
                push(g, &mut indices)?;
            }
        }
        MODE_RICE => {
            let k = *rest.get(pos).ok_or_else(short)? as u32;
            pos += 1;
            if k > 31 {
                return Err(ProtoError::Malformed(format!("Rice parameter {k} > 31")));
            }
            let stream_len = (rest.len() - pos).checked_sub(values).ok_or_else(short)?;
            // Every entry takes at least k + 1 bits.
            if m as u64 * (u64::from(k) + 1) > stream_len as u64 * 8 {
                return Err(short());
            }
            indices.reserve_exact(m);
            let mut r = BitReader::new(&rest[pos..pos + stream_len]);
            for _ in 0..m {
                push(r.rice(k)?, &mut indices)?;
            }
            r.finish()?;
            pos += stream_len;
        }
        MODE_RUNS => {
            let nruns = read_varint(rest, &mut pos)?;
            if nruns > m as u64 || (nruns == 0) != (m == 0) {
                return Err(ProtoError::Malformed(format!(
                    "{nruns} runs for {m} sparse entries"
                )));
            }
            let (kg, kl) = match rest.get(pos..pos + 2) {
                Some(&[kg, kl]) => (u32::from(kg), u32::from(kl)),
                _ => return Err(short()),
            };
            pos += 2;
            if kg > 31 || kl > 31 {
                return Err(ProtoError::Malformed(format!(
                    "Rice parameters {kg}, {kl} > 31"
                )));
            }
            let stream_len = (rest.len() - pos).checked_sub(values).ok_or_else(short)?;
            // Every run takes at least kg + kl + 2 bits, and every entry a value.
            if nruns * u64::from(kg + kl + 2) > stream_len as u64 * 8 {
                return Err(short());
            }
            indices.reserve_exact(m);
            let mut r = BitReader::new(&rest[pos..pos + stream_len]);
            for j in 0..nruns {
                let gap = r.rice(kg)?;
                let gap = if j == 0 {
                    Some(gap)
                } else {
                    gap.checked_add(1)
                };
                let len = r.rice(kl)?.checked_add(1);
                let (Some(gap), Some(len)) = (gap, len) else {
                    return Err(ProtoError::Malformed("sparse index overflows".into()));
                };
                if len > (m - indices.len()) as u64 {
                    return Err(ProtoError::Malformed(format!(
                        "runs hold more than the {m} sparse entries"
                    )));
                }
                push(gap, &mut indices)?;
                for _ in 1..len {
                    push(0, &mut indices)?;
                }
            }
            if indices.len() != m {
                return Err(ProtoError::Malformed(format!(
                    "runs hold {} of the {m} sparse entries",
                    indices.len()
                )));
            }
            r.finish()?;
            pos += stream_len;
        }
        m => {
            return Err(ProtoError::Malformed(format!(
                "unknown sparse payload mode {m}"
            )))
        }
    }
    if rest.len() - pos != values {
        return Err(ProtoError::Malformed(format!(
            "sparse payload: {} value bytes for {m} {} values",
            rest.len() - pos,
            format.name()
        )));
    }
    Ok((indices, pos))
}

/// Appends bits least-significant first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    filled: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            acc: 0,
            filled: 0,
        }
    }

    /// `v` Rice coded with parameter `k` (< 32): `v >> k` one-bits, a zero, the low `k` bits.
    fn rice(&mut self, v: u64, k: u32) {
        let mut q = v >> k;
        while q >= 32 {
            self.put(u32::MAX as u64, 32);
            q -= 32;
        }
        self.put((1u64 << q) - 1, q as u32 + 1);
        self.put(v & ((1u64 << k) - 1), k);
    }

    /// The low `bits` (<= 32) of `v`.
    fn put(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 32);
        self.acc |= (v & ((1u64 << bits) - 1)) << self.filled;
        self.filled += bits;
        while self.filled >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.filled -= 8;
        }
    }

    fn finish(self) {
        if self.filled > 0 {
            self.out.push(self.acc as u8);
        }
    }
}

/// Reads bits least-significant first.
struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, at: 0 }
    }

    /// The bits from `at` on, least significant first, 64 - `at % 8` of them (fewer at the end,
    /// where the bits past the last byte read as zero).
    fn peek(&self) -> u64 {
        let byte = self.at / 8;
        let mut word = [0u8; 8];
        match self.bytes.get(byte..byte + 8) {
            Some(eight) => word.copy_from_slice(eight),
            None => {
                let tail = self.bytes.get(byte..).unwrap_or(&[]);
                word[..tail.len()].copy_from_slice(tail);
            }
        }
        u64::from_le_bytes(word) >> (self.at % 8)
    }

    /// Bits not yet read.
    fn left(&self) -> usize {
        self.bytes.len() * 8 - self.at
    }

    /// A Rice-coded value with parameter `k` (< 32; see [`BitWriter::rice`]). The one-bits are
    /// counted a word at a time.
    fn rice(&mut self, k: u32) -> Result<u64, ProtoError> {
        let short = || ProtoError::Malformed("Rice-coded indices end early".into());
        let mut q = 0u64;
        loop {
            let valid = (64 - self.at % 8).min(self.left());
            if valid == 0 {
                return Err(short());
            }
            // `peek` is zero past its valid bits, so its run of ones is at most `valid` long.
            let ones = (!self.peek()).trailing_zeros() as usize;
            if ones < valid {
                q += ones as u64;
                self.at += ones + 1;
                break;
            }
            q += valid as u64;
            self.at += valid;
        }
        if self.left() < k as usize {
            return Err(short());
        }
        let low = self.peek() & ((1u64 << k) - 1);
        self.at += k as usize;
        q.checked_shl(k)
            .filter(|v| v >> k == q)
            .map(|v| v | low)
            .ok_or_else(|| ProtoError::Malformed("sparse index overflows".into()))
    }

    /// Errors unless every byte was used and the unused bits of the last one are zero.
    fn finish(&self) -> Result<(), ProtoError> {
        let clean = self.at.div_ceil(8) == self.bytes.len()
            && (self.at.is_multiple_of(8) || self.bytes[self.at / 8] >> (self.at % 8) == 0);
        if clean {
            Ok(())
        } else {
            Err(ProtoError::Malformed(
                "Rice-coded indices: trailing bytes or non-zero padding".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
