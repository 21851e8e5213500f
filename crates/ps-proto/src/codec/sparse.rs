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

/// The smallest layout of selection `sel` (ascending, `< n`) with values in `format`; ties go
/// to the lower mode number.
pub(crate) fn choose(sel: &[u32], n: usize, format: ValueFormat) -> Layout {
    let m = sel.len();
    let values = format.encoded_len(m) as u64;
    let list: u64 = varint_len(m as u64) as u64
        + sel
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let g = if j == 0 { i } else { i - sel[j - 1] };
                varint_len(u64::from(g)) as u64
            })
            .sum::<u64>()
        + values;
    let (k, rice_bits) = best_k(|| gaps(sel));
    let rice = varint_len(m as u64) as u64 + 1 + rice_bits.div_ceil(8) + values;
    let (kg, gap_bits) = best_k(|| runs(sel).map(|r| r.0));
    let (kl, len_bits) = best_k(|| runs(sel).map(|r| r.1));
    let nruns = runs(sel).count();
    let run = (varint_len(m as u64) + varint_len(nruns as u64) + 2) as u64
        + (gap_bits + len_bits).div_ceil(8)
        + values;
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
        MODE_RUNS => Layout { mode, k: kg, kl },
        _ => Layout { mode, k, kl: 0 },
    }
}

/// Appends the mode byte and the index part of `layout` (nothing after the mode for dense).
pub(crate) fn write_indices(layout: Layout, sel: &[u32], out: &mut Vec<u8>) {
    out.push(layout.mode);
    match layout.mode {
        MODE_LIST => {
            write_varint(sel.len() as u64, out);
            for (j, &i) in sel.iter().enumerate() {
                write_varint(u64::from(if j == 0 { i } else { i - sel[j - 1] }), out);
            }
        }
        MODE_RICE => {
            write_varint(sel.len() as u64, out);
            out.push(layout.k as u8);
            let mut w = BitWriter::new(out);
            for g in gaps(sel) {
                w.rice(g, layout.k);
            }
            w.finish();
        }
        MODE_RUNS => {
            write_varint(sel.len() as u64, out);
            write_varint(runs(sel).count() as u64, out);
            out.push(layout.k as u8);
            out.push(layout.kl as u8);
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
mod tests {
    use super::*;

    /// A Rice value read one bit at a time from bit `at`: the definition the word-at-a-time
    /// reader must match (value and bits used, or running out).
    fn rice_bit_by_bit(bytes: &[u8], at: &mut usize, k: u32) -> Option<u64> {
        let mut bit = || {
            let b = bytes.get(*at / 8)? >> (*at % 8) & 1;
            *at += 1;
            Some(b == 1)
        };
        let mut q = 0u64;
        while bit()? {
            q += 1;
        }
        let mut low = 0u64;
        for i in 0..k {
            low |= u64::from(bit()?) << i;
        }
        Some((q << k) | low)
    }

    #[test]
    fn the_word_reader_reads_what_one_bit_at_a_time_reads() {
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1du64);
        for case in 0..2000 {
            let len = (next() % 40) as usize;
            // Mostly ones in some streams, so unary runs cross words and reach the end.
            let ones = case % 3 == 0;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if ones {
                        !(next() as u8 & 0x11)
                    } else {
                        next() as u8
                    }
                })
                .collect();
            let k = (next() % 32) as u32;
            let (mut r, mut at) = (BitReader::new(&bytes), 0usize);
            loop {
                let want = rice_bit_by_bit(&bytes, &mut at, k);
                match (r.rice(k), want) {
                    (Ok(got), Some(want)) => {
                        assert_eq!(got, want, "case {case}");
                        assert_eq!(r.at, at, "case {case}: bits used");
                    }
                    (Err(_), None) => break,
                    (got, want) => panic!("case {case}: {got:?} against {want:?}"),
                }
            }
        }
    }

    /// Every parameter tried: what `best_k` must give.
    fn best_k_by_trying_all(vals: &[u64]) -> (u32, u64) {
        (0..32)
            .map(|k| (k, rice_len(vals.iter().copied(), k)))
            .min_by_key(|&(k, bits)| (bits, k))
            .unwrap_or((0, 0))
    }

    #[test]
    fn the_rice_parameter_is_the_one_trying_all_would_pick() {
        // xorshift64*: enough spread for this, and no dependency.
        let mut state = 0x0005_21CE_5EED_u64;
        let mut next = |below: u64| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D) % below.max(1)
        };
        let mut cases: Vec<Vec<u64>> = vec![
            vec![],
            vec![0],
            vec![0; 9],
            vec![1, 1, 1],
            vec![u64::from(u32::MAX)],
            vec![u64::from(u32::MAX); 3],
            vec![0, u64::from(u32::MAX)],
            vec![3, 3, 4, 4],
        ];
        for _ in 0..3_000 {
            let n = 1 + next(60);
            let scale = 1u64 << next(33);
            let mix = next(10) < 3;
            let vals = (0..n)
                .map(|_| {
                    if mix && next(10) == 0 {
                        next(1 << 32)
                    } else {
                        next(scale)
                    }
                })
                .collect();
            cases.push(vals);
        }
        for vals in &cases {
            assert_eq!(
                best_k(|| vals.iter().copied()),
                best_k_by_trying_all(vals),
                "{vals:?}"
            );
        }
    }

    fn round_trip(sel: &[u32], n: usize, format: ValueFormat) -> Layout {
        let layout = choose(sel, n, format);
        let mut out = Vec::new();
        write_indices(layout, sel, &mut out);
        if layout.mode != MODE_DENSE {
            out.resize(out.len() + format.encoded_len(sel.len()), 0);
            let (got, at) = read_indices(out[0], &out[1..], n, format).unwrap();
            assert_eq!(got, sel);
            assert_eq!(out.len() - 1 - at, format.encoded_len(sel.len()));
        }
        layout
    }

    #[test]
    fn picks_rice_for_moderate_density_and_reads_it_back() {
        let n = 4000;
        let sel: Vec<u32> = (0..n as u32)
            .filter(|i| i.wrapping_mul(2654435761) % 7 == 0)
            .collect();
        assert_eq!(round_trip(&sel, n, ValueFormat::Sign).mode, MODE_RICE);
        let sparse: Vec<u32> = vec![3, 200];
        assert_eq!(round_trip(&sparse, 300, ValueFormat::F32).mode, MODE_LIST);
        let all: Vec<u32> = (0..100).collect();
        assert_eq!(round_trip(&all, 100, ValueFormat::F32).mode, MODE_DENSE);
        let big = vec![0, u32::MAX - 1];
        round_trip(&big, 1 << 32, ValueFormat::Q4);
        round_trip(&[], 10, ValueFormat::Q4);
        // Whole rows of 8: runs.
        let rows: Vec<u32> = (0..500u32)
            .filter(|r| r % 3 == 0)
            .flat_map(|r| r * 8..r * 8 + 8)
            .collect();
        assert_eq!(round_trip(&rows, 4000, ValueFormat::Sign).mode, MODE_RUNS);
        let dense_runs: Vec<u32> = (0..4000u32).filter(|i| i % 100 != 7).collect();
        assert_eq!(
            round_trip(&dense_runs, 4000, ValueFormat::Sign).mode,
            MODE_RUNS
        );
        round_trip(&[0, 1, u32::MAX - 1], 1 << 32, ValueFormat::Sign);
    }

    #[test]
    fn runs_refuse_bad_streams() {
        let sel: Vec<u32> = (0..50u32).flat_map(|r| r * 10..r * 10 + 4).collect();
        let layout = choose(&sel, 500, ValueFormat::Q8);
        assert_eq!(layout.mode, MODE_RUNS);
        let mut out = Vec::new();
        write_indices(layout, &sel, &mut out);
        out.resize(out.len() + ValueFormat::Q8.encoded_len(sel.len()), 0);
        let read = |p: &[u8], n| read_indices(p[0], &p[1..], n, ValueFormat::Q8);
        assert_eq!(read(&out, 500).unwrap().0, sel);
        assert!(read(&out, 494).is_ok());
        assert!(read(&out, 493).is_err(), "last run past the block");
        // m = 200 (2 varint bytes), runs = 50, then kg and kl.
        let mut more = out.clone();
        more[3] = 49; // one run too few: the runs hold 196 of 200 entries
        assert!(read(&more, 500).is_err());
        let mut k = out.clone();
        k[4] = 32;
        assert!(read(&k, 500).is_err());
        let mut zero = out.clone();
        zero[3] = 0; // no runs for 200 entries
        assert!(read(&zero, 500).is_err());
        for cut in 1..out.len() {
            assert!(read(&out[..cut], 500).is_err(), "prefix {cut}");
        }
    }

    #[test]
    fn rice_refuses_bad_streams() {
        let sel: Vec<u32> = (0..500).step_by(3).collect();
        let layout = Layout {
            mode: MODE_RICE,
            k: 1,
            kl: 0,
        };
        let mut out = Vec::new();
        write_indices(layout, &sel, &mut out);
        let values = ValueFormat::Q8.encoded_len(sel.len());
        let with_values = |mut o: Vec<u8>| {
            o.resize(o.len() + values, 0);
            o
        };
        let ok = with_values(out.clone());
        assert!(read_indices(MODE_RICE, &ok[1..], 500, ValueFormat::Q8).is_ok());
        assert!(read_indices(MODE_RICE, &ok[1..], 498, ValueFormat::Q8).is_err());
        let mut extra = out.clone();
        extra.push(0);
        assert!(read_indices(MODE_RICE, &with_values(extra)[1..], 500, ValueFormat::Q8).is_err());
        let mut k = ok.clone();
        k[3] = 32;
        assert!(read_indices(MODE_RICE, &k[1..], 500, ValueFormat::Q8).is_err());
        // All ones: an endless unary run ends at the end of the stream.
        let mut ones = out.clone();
        for b in &mut ones[4..] {
            *b = 0xFF;
        }
        assert!(read_indices(MODE_RICE, &with_values(ones)[1..], 500, ValueFormat::Q8).is_err());
    }
}
