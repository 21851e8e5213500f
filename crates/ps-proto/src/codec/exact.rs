//! Exact sparse payloads for lossless blocks that are mostly zero.
//!
//! A `raw` (lossless) push or pull reply of a model whose rows are mostly zero (LDA's count
//! deltas and word-topic rows at large K, sparse gradients) still costs 4 bytes a value. Where
//! that is so, the sender may send the block as the sparse f32 payload ([`EXACT_SPARSE_WIRE_ID`])
//! of every entry whose bits are not all zero: -0.0, NaN and every other value travel as they
//! are, so a receiver that densifies gets back the same bits, and one that adds the block
//! (`Decoded::add_to`) skips only `+0.0`s (where the payload's layout lists its entries; the
//! dense layout adds every value, `+0.0`s too, as a raw push does). Nothing is dropped and no
//! residual is kept.
//!
//! Where every entry is a whole number (LDA's counts and count changes), the values go as 1- or
//! 2-byte integers instead ([`format::exact_format`]): the same bits come back, in a quarter or
//! half the bytes. Each payload says its format in its wire id ([`exact_wire_id`]).
//!
//! [`exact_sparse`] decides from a sample of the block first, so dense blocks (MF factors, MLP
//! weights) cost a few hundred loads, not a scan.

use super::format::{self, ValueFormat};
use super::{encode_selection, write_selection, ProtoError, WIRE_SPARSE};

/// The wire id of an exact sparse payload of f32 values (`0x11`).
pub const EXACT_SPARSE_WIRE_ID: u16 = WIRE_SPARSE | 1;

/// The format in which `values` travel exactly: the narrowest whole-number format that holds
/// every one, else f32.
pub fn exact_values_format(values: &[f32]) -> ValueFormat {
    format::exact_format(values).unwrap_or(ValueFormat::F32)
}

/// The wire id of an exact sparse payload whose values are in `format`.
pub fn exact_wire_id(format: ValueFormat) -> u16 {
    WIRE_SPARSE | format.code()
}

/// Whether `wire_id` is an exact sparse payload's (f32, or a whole-number format).
pub fn is_exact_wire_id(wire_id: u16) -> bool {
    [ValueFormat::F32, ValueFormat::I8, ValueFormat::I16]
        .into_iter()
        .any(|f| exact_wire_id(f) == wire_id)
}

/// The exact sparse payload of a selection made elsewhere (an engine's delta by its entries):
/// `sel` strictly increasing indices into a block of `n`, `values` one each. Appends it to
/// `out` with the values in [`exact_values_format`] and returns its wire id. Errors as
/// [`encode_selection`].
pub fn encode_exact_selection(
    n: usize,
    sel: &[u32],
    values: &[f32],
    out: &mut Vec<u8>,
) -> Result<u16, ProtoError> {
    let format = exact_values_format(values);
    encode_selection(format, n, sel, values, out)?;
    Ok(exact_wire_id(format))
}

/// Entries sampled before a block is scanned.
const SAMPLE: usize = 256;

/// A block is sent sparse only when that saves at least this fraction of its raw bytes.
const MIN_SAVING: f64 = 0.25;

/// The exact sparse payload of `values` and its wire id, when it is at most 3/4 of the raw
/// payload (`4 * values.len()` bytes); `None` when the block should go raw. Decoding it with
/// [`super::decode`] (that wire id, `values.len()`) and densifying gives `values` back bit for
/// bit.
pub fn exact_sparse(values: &[f32]) -> Option<(u16, Vec<u8>)> {
    NonzeroEntries::of(values)?.encode()
}

/// [`exact_sparse`] of a raw f32 payload (little-endian bytes, as a `raw` frame carries them);
/// `None` also when the length is not a whole number of values.
pub fn exact_sparse_raw(payload: &[u8]) -> Option<(u16, Vec<u8>)> {
    if !payload.len().is_multiple_of(4) {
        return None;
    }
    NonzeroEntries::select(payload.len() / 4, |i| {
        let b = &payload[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    })?
    .encode()
}

/// The entries of a block whose bits are not all zero, gathered for [`exact_sparse`]: the scan
/// (which needs the block) apart from the encoding (which does not), so a shard can scan its
/// rows while it holds them and encode after letting go.
#[derive(Debug, Clone, PartialEq)]
pub struct NonzeroEntries {
    n: usize,
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl NonzeroEntries {
    /// The nonzero entries of `values`; `None` when too many are nonzero for a sparse payload
    /// to be smaller (decided from a sample first, so dense blocks cost a few hundred loads).
    pub fn of(values: &[f32]) -> Option<NonzeroEntries> {
        Self::select(values.len(), |i| values[i].to_bits())
    }

    /// Over the bits of `n` values.
    fn select(n: usize, bits: impl Fn(usize) -> u32) -> Option<NonzeroEntries> {
        if n == 0 || n as u64 > u64::from(u32::MAX) {
            return None;
        }
        // Each kept entry costs its 4 value bytes and at least a bit of index.
        let most = ((1.0 - MIN_SAVING) * n as f64) as usize;
        let stride = (n / SAMPLE).max(1);
        let sampled = (0..n).step_by(stride).count();
        let sampled_nonzero = (0..n).step_by(stride).filter(|&i| bits(i) != 0).count();
        if sampled_nonzero as f64 > (1.0 - MIN_SAVING) * sampled as f64 {
            return None;
        }
        let mut indices: Vec<u32> = Vec::new();
        let mut values: Vec<f32> = Vec::new();
        for i in 0..n {
            let b = bits(i);
            if b != 0 {
                if indices.len() == most {
                    return None;
                }
                indices.push(i as u32);
                values.push(f32::from_bits(b));
            }
        }
        Some(NonzeroEntries { n, indices, values })
    }

    /// The exact sparse payload and its wire id, when it is at most 3/4 of the raw one.
    pub fn encode(&self) -> Option<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let format = exact_values_format(&self.values);
        write_selection(format, self.n, &self.indices, &self.values, &mut out);
        let small = out.len() as f64 <= (1.0 - MIN_SAVING) * (4 * self.n) as f64;
        small.then_some((exact_wire_id(format), out))
    }

    /// The block as a raw f32 payload again: for when [`NonzeroEntries::encode`] found the
    /// sparse payload no smaller.
    pub fn raw(&self) -> Vec<u8> {
        let mut block = vec![0f32; self.n];
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            block[i as usize] = v;
        }
        crate::encode_f32s(&block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, Decoded};

    fn back((wire_id, payload): &(u16, Vec<u8>), n: usize) -> Vec<f32> {
        decode(*wire_id, payload, n).unwrap().into_dense(n).unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn mostly_zero_blocks_go_sparse_and_come_back_bit_for_bit() {
        let n = 10_000;
        let mut v = vec![0f32; n];
        v[0] = 3.0;
        v[17] = -0.0;
        v[18] = f32::NAN;
        v[4_000] = -1e-30;
        v[n - 1] = f32::INFINITY;
        for i in (100..n).step_by(97) {
            v[i] = i as f32;
        }
        let p = exact_sparse(&v).expect("1% nonzero must go sparse");
        assert_eq!(p.0, EXACT_SPARSE_WIRE_ID, "f32: not all whole numbers");
        assert!(p.1.len() < 4 * n / 10, "{} bytes for {n} values", p.1.len());
        assert!(exact_sparse_raw(&crate::encode_f32s(&v)) == Some(p.clone()));
        assert!(exact_sparse_raw(&[0, 0, 0]).is_none());
        assert!(bits(&back(&p, n)) == bits(&v), "not bit for bit");
        // Added onto a block, only +0.0 entries are skipped.
        let mut dst = vec![1f32; n];
        decode(p.0, &p.1, n).unwrap().add_to(&mut dst).unwrap();
        assert_eq!(dst[1], 1.0);
        assert_eq!(dst[0], 4.0);
        assert!(dst[18].is_nan());
    }

    #[test]
    fn dense_blocks_stay_raw() {
        let v: Vec<f32> = (0..100_000).map(|i| i as f32 * 0.5 + 1.0).collect();
        assert!(exact_sparse(&v).is_none());
        assert!(exact_sparse(&[]).is_none());
        assert!(exact_sparse(&[1.0]).is_none());
        // Nine in ten nonzero: sparse would save too little once the indices are counted.
        let most: Vec<f32> = (0..4096).map(|i| (i % 10) as f32).collect();
        assert!(exact_sparse(&most).is_none());
        // Half nonzero, alternating: the runs cost about a bit each, so it saves almost half.
        let half: Vec<f32> = (0..4096).map(|i| (i % 2) as f32).collect();
        // (Whole numbers: the values go a byte each.)
        let p = exact_sparse(&half).unwrap();
        assert_eq!(p.0, exact_wire_id(ValueFormat::I8));
        assert!(p.1.len() < 4096 * 7 / 10, "{} bytes", p.1.len());
        assert!(back(&p, 4096) == half);
    }

    #[test]
    fn a_sample_that_misses_the_nonzeros_still_decides_by_the_full_count() {
        // Every sampled position is zero, every other one is not: the scan gives up.
        let n = 256 * 64;
        let v: Vec<f32> = (0..n)
            .map(|i| if i % 64 == 0 { 0.0 } else { 1.0 })
            .collect();
        assert!(exact_sparse(&v).is_none());
        // And an all-zero block is a few bytes.
        let z = vec![0f32; n];
        let p = exact_sparse(&z).unwrap();
        assert!(p.1.len() <= 4, "{} bytes", p.1.len());
        assert!(back(&p, n) == z);
        assert!(matches!(
            decode(p.0, &p.1, n).unwrap(),
            Decoded::Sparse { .. }
        ));
    }

    #[test]
    fn entries_few_enough_but_too_costly_to_index_go_back_raw() {
        // About 74% nonzero: under the count limit, but the indices push the payload past 3/4.
        let mut next = crate::test_rng::xorshift(0x51_7cc1_b727_220a);
        let v: Vec<f32> = (0..20_000)
            .map(|_| if next() % 100 < 74 { -1.25 } else { 0.0 })
            .collect();
        let entries = NonzeroEntries::of(&v).expect("under the count limit");
        assert!(entries.encode().is_none());
        assert!(exact_sparse(&v).is_none());
        assert!(entries.raw() == crate::encode_f32s(&v));
    }

    #[test]
    fn every_length_and_position_round_trips_through_both_entry_points() {
        // Short and odd lengths (the sample stride is n / 256), nonzeros anywhere, odd bits.
        let mut next = crate::test_rng::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let odd = [-0.0f32, f32::NAN, f32::MIN_POSITIVE, -7.5, 1e30];
        for n in (1..70).chain([255, 256, 257, 1023, 4096 + 5]) {
            for _ in 0..4 {
                let mut v = vec![0f32; n];
                for _ in 0..1 + n / 20 {
                    let i = (next() % n as u64) as usize;
                    v[i] = odd[(next() % odd.len() as u64) as usize];
                }
                v[n - 1] = if next().is_multiple_of(2) { 2.0 } else { 0.0 };
                let p = exact_sparse(&v);
                assert!(exact_sparse_raw(&crate::encode_f32s(&v)) == p, "n {n}");
                if let Some(p) = p {
                    assert!(bits(&back(&p, n)) == bits(&v), "n {n}: not bit for bit");
                }
            }
        }
    }

    /// Whole numbers go as the narrowest integers that hold them all, and come back bit for
    /// bit; -0.0, a fraction, or a value past `i16` keeps f32. Through both entry points, and
    /// for a selection made elsewhere.
    #[test]
    fn whole_numbers_go_as_the_narrowest_integers_that_hold_them() {
        let n = 5_000;
        let block = |extra: f32| {
            let mut v = vec![0f32; n];
            for i in (0..n).step_by(50) {
                v[i] = (i % 7) as f32 - 3.0;
            }
            v[n - 2] = extra;
            v
        };
        let cases = [
            (127.0, ValueFormat::I8),
            (-128.0, ValueFormat::I8),
            (128.0, ValueFormat::I16),
            (-32_768.0, ValueFormat::I16),
            (32_767.0, ValueFormat::I16),
            (32_768.0, ValueFormat::F32),
            (2.5, ValueFormat::F32),
            (-0.0, ValueFormat::F32),
            (f32::NAN, ValueFormat::F32),
            (f32::INFINITY, ValueFormat::F32),
        ];
        let mut sizes = Vec::new();
        for (extra, format) in cases {
            let v = block(extra);
            let p = exact_sparse(&v).unwrap();
            assert_eq!(p.0, exact_wire_id(format), "{extra}");
            assert!(exact_sparse_raw(&crate::encode_f32s(&v)) == Some(p.clone()));
            assert!(bits(&back(&p, n)) == bits(&v), "{extra}: not bit for bit");
            sizes.push((format, p.1.len()));
            // The same values selected elsewhere: the same payload and wire id.
            let sel: Vec<u32> = (0..n as u32)
                .filter(|&i| v[i as usize].to_bits() != 0)
                .collect();
            let vals: Vec<f32> = sel.iter().map(|&i| v[i as usize]).collect();
            let mut out = Vec::new();
            assert_eq!(encode_exact_selection(n, &sel, &vals, &mut out), Ok(p.0));
            assert_eq!(out, p.1, "{extra}");
        }
        // The same indices, then a byte, two or four a value.
        let m = block(1.0).iter().filter(|v| v.to_bits() != 0).count();
        let size = |f: ValueFormat| sizes.iter().find(|s| s.0 == f).unwrap().1;
        assert_eq!(size(ValueFormat::I16) - size(ValueFormat::I8), m);
        assert_eq!(size(ValueFormat::F32) - size(ValueFormat::I16), 2 * m);
        // A whole-number block decoded under a short or long payload is an error, not a panic.
        let p = exact_sparse(&block(1.0)).unwrap();
        assert!(decode(p.0, &p.1[..p.1.len() - 1], n).is_err());
        let mut long = p.1.clone();
        long.push(0);
        assert!(decode(p.0, &long, n).is_err());
    }
}
