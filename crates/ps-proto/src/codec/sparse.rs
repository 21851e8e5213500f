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
//! * [`MODE_DENSE`]: no indices; all `n` values, zero where nothing was selected (never for the
//!   sign format, which has no zero).

use super::format::ValueFormat;
use super::varint::{read_varint, varint_len, write_varint};
use crate::error::ProtoError;

pub const MODE_LIST: u8 = 0;
pub const MODE_DENSE: u8 = 1;
pub const MODE_RICE: u8 = 2;

/// The chosen layout of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub mode: u8,
    /// Rice parameter (MODE_RICE only).
    k: u32,
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

/// Bits of the Rice-coded gaps with parameter `k`.
fn rice_bits(sel: &[u32], k: u32) -> u64 {
    gaps(sel).map(|g| (g >> k) + 1 + u64::from(k)).sum()
}

/// The smallest layout of selection `sel` (ascending, `< n`) with values in `format`; ties go
/// to the list, then to Rice.
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
    let k = (0..32).min_by_key(|&k| rice_bits(sel, k)).unwrap_or(0);
    let rice = varint_len(m as u64) as u64 + 1 + rice_bits(sel, k).div_ceil(8) + values;
    // The sign format has no zero: the unselected entries of a dense layout would arrive as
    // ±scale. It always lists its indices.
    let dense = match format {
        ValueFormat::Sign => u64::MAX,
        _ => format.encoded_len(n) as u64,
    };
    let mode = if list <= rice && list <= dense {
        MODE_LIST
    } else if rice <= dense {
        MODE_RICE
    } else {
        MODE_DENSE
    };
    Layout { mode, k }
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
                let mut q = g >> layout.k;
                while q >= 32 {
                    w.put(u32::MAX as u64, 32);
                    q -= 32;
                }
                w.put((1u64 << q) - 1, q as u32 + 1);
                w.put(g & ((1u64 << layout.k) - 1), layout.k);
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
                let mut q = 0u64;
                while r.bit().ok_or_else(short)? {
                    q += 1;
                }
                let low = r.bits(k).ok_or_else(short)?;
                let g = q
                    .checked_shl(k)
                    .filter(|v| v >> k == q)
                    .ok_or_else(|| ProtoError::Malformed("sparse index overflows".into()))?;
                push(g | low, &mut indices)?;
            }
            if !r.finished_clean() {
                return Err(ProtoError::Malformed(
                    "Rice-coded indices: trailing bytes or non-zero padding".into(),
                ));
            }
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

    fn bit(&mut self) -> Option<bool> {
        let b = self.bytes.get(self.at / 8)?;
        let v = (b >> (self.at % 8)) & 1 == 1;
        self.at += 1;
        Some(v)
    }

    fn bits(&mut self, k: u32) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..k {
            v |= u64::from(self.bit()?) << i;
        }
        Some(v)
    }

    /// Every byte used, and the unused bits of the last one zero.
    fn finished_clean(&self) -> bool {
        self.at.div_ceil(8) == self.bytes.len()
            && (self.at.is_multiple_of(8) || self.bytes[self.at / 8] >> (self.at % 8) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn rice_refuses_bad_streams() {
        let sel: Vec<u32> = (0..500).step_by(3).collect();
        let layout = Layout {
            mode: MODE_RICE,
            k: 1,
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
