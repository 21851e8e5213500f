//! Delta-compression codecs for value payloads (Push and PullReply frames).
//!
//! A codec is a [`CodecChain`] (module `chain`): zero or more selection stages ([`Selector`]:
//! top-k, filter), an optional sparsity warm-up, then one value format ([`ValueFormat`]: f32,
//! f16, bf16, or block-quantized q8, q4, q2, sign). Chains are written as strings, stages
//! separated by commas, the format last and optional (default `raw`, i.e. f32): `raw`, `f16`,
//! `q4`, `topk:0.01,f16`, `topk:100`, `filter:0.01,topk:0.05,bf16`, `topk:0.001,warmup:4,sign`.
//!
//! * `topk:F` with a decimal point (or exponent) is a fraction in (0, 1]: `k = ceil(F * n)` of a
//!   block of `n`; `topk:N` (digits only) is a count. See [`top_k`] for the order (ties by lower
//!   index, NaN above everything).
//! * `filter:R` (R >= 0, finite) keeps entries with `delta != 0 && !(|delta| < R * |current|)`:
//!   zero deltas and deltas small relative to the current value are skipped (they stay in the
//!   residual under [`ErrorFeedback`]). It needs the current values of the block.
//! * `energy:E` (E in (0, 1]) keeps the fewest largest entries whose squares add up to at least
//!   `E` of the block's: a count that adapts to each block (see [`Selector::Energy`]; the squares
//!   are integers in the largest entry's scale, so a device finds the same count: [`k_of_energy`]).
//! * `warmup:N` relaxes every top-k fraction over the first N clocks (see
//!   [`CodecChain::at_clock`]); encoders call `at_clock` with the clock they encode.
//! * Stages apply in order, each to the survivors of the previous one; a top-k fraction is always
//!   relative to the whole block.
//!
//! # Wire format
//! The frame header's codec field carries [`CodecChain::wire_id`]: the value format in the low
//! bits (1 = f32, 2 = f16, 3 = bf16, 4 = q8, 5 = q4, 6 = q2, 7 = sign; 8 = i8 and 9 = i16,
//! which only the exact codec below writes) and [`WIRE_SPARSE`] when the chain has selection
//! stages. Only what decoding needs is on the wire (the selection parameters and the warm-up stay
//! with the sender), so the valid ids are 1..=9 and 0x11..=0x19. `1` is exactly the raw f32
//! payload of [`crate::Codec::RawF32`].
//!
//! * dense (1..=9): `n` values in the format (module `format`; block formats in `quant`),
//!   nothing else.
//! * sparse (0x11..=0x19): a mode byte, then the indices and `m` values (module `sparse`):
//!   * mode 0 (list): varint `m`, `m` varint gaps, then the values;
//!   * mode 2 (Rice): varint `m`, the Rice parameter, the Rice-coded gaps, then the values;
//!   * mode 3 (runs): runs of consecutive indices, Rice coded, then the values;
//!   * mode 1 (dense): `n` values, zero where nothing was selected.
//!
//!   The encoder picks the smallest, so a sparse payload is never more than one byte over the
//!   dense one.
//!
//! A lossless (`raw`) block that is mostly zero may travel sparse instead of as `1`:
//! [`exact_sparse`] (module `exact`) keeps every entry whose bits are not zero, as f32 (`0x11`),
//! or, where every one is a whole number that fits, as i8 (`0x18`) or i16 (`0x19`), so nothing
//! changes but the size.
//!
//! Decoding checks everything (lengths exact, no trailing bytes, indices in range and strictly
//! increasing, canonical varints, zero padding, codes and scales a quantizer makes) and
//! allocates no more than the payload's size justifies.

mod chain;
mod energy;
mod exact;
mod feedback;
mod format;
mod keycache;
mod quant;
mod select;
mod sparse;
pub use sparse::{index_layout, index_sizes, IndexLayout, IndexSizes};
mod varint;

pub use chain::{wire_format, CodecChain, Selector, WIRE_SPARSE};
pub use energy::{energy_goal, energy_weight, k_of_energy};
pub use exact::{
    encode_exact_selection, exact_sparse, exact_sparse_raw, exact_values_format, exact_wire_id,
    is_exact_wire_id, NonzeroEntries, EXACT_SPARSE_WIRE_ID,
};
pub use feedback::ErrorFeedback;
pub use format::ValueFormat;
pub use keycache::{
    default_key_hash, KeyCacheReceiver, KeyCacheSender, KeyHasher, Keys, DEFAULT_KEY_CACHE_IDS,
};
pub use quant::GROUP as QUANT_GROUP;
pub use select::{
    initial_above, k_of_fraction, sample_positions, top_k, EXACT_BELOW, SAMPLE as TOPK_SAMPLE,
};
pub use varint::{read_varint, varint_len, write_varint};

use crate::error::ProtoError;

/// A decoded block.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// All `n` values.
    Dense(Vec<f32>),
    /// Values at strictly increasing indices `< n`; every other entry is zero.
    Sparse { indices: Vec<u32>, values: Vec<f32> },
}

impl Decoded {
    /// The block as `n` dense values.
    pub fn into_dense(self, n: usize) -> Result<Vec<f32>, ProtoError> {
        match self {
            Decoded::Dense(v) if v.len() == n => Ok(v),
            Decoded::Dense(v) => Err(ProtoError::Malformed(format!(
                "block of {} values, expected {n}",
                v.len()
            ))),
            Decoded::Sparse { indices, values } => {
                check_sparse(n, &indices, &values)?;
                // The first value at an index is stored, not added to zero, so the block comes
                // back bit for bit (0.0 + -0.0 would be +0.0); a repeated index adds.
                let mut out = vec![0f32; n];
                for (&i, &v) in indices.iter().zip(&values) {
                    let o = &mut out[i as usize];
                    *o = if o.to_bits() == 0 { v } else { *o + v };
                }
                Ok(out)
            }
        }
    }

    /// `dst += block`, dense or sparse; errors (changing nothing) on a length or index mismatch.
    pub fn add_to(&self, dst: &mut [f32]) -> Result<(), ProtoError> {
        match self {
            Decoded::Dense(v) => {
                if v.len() != dst.len() {
                    return Err(ProtoError::Malformed(format!(
                        "block of {} values onto {}",
                        v.len(),
                        dst.len()
                    )));
                }
                for (d, s) in dst.iter_mut().zip(v) {
                    *d += *s;
                }
                Ok(())
            }
            Decoded::Sparse { indices, values } => apply_sparse_add(dst, indices, values),
        }
    }
}

/// `dst[indices[j]] += values[j]` for every j, without densifying. Errors, changing nothing, if
/// the lengths differ or any index is out of range. Repeated indices each add.
pub fn apply_sparse_add(
    dst: &mut [f32],
    indices: &[u32],
    values: &[f32],
) -> Result<(), ProtoError> {
    check_sparse(dst.len(), indices, values)?;
    for (&i, &v) in indices.iter().zip(values) {
        dst[i as usize] += v;
    }
    Ok(())
}

/// As many values as indices, every index below `n`.
fn check_sparse(n: usize, indices: &[u32], values: &[f32]) -> Result<(), ProtoError> {
    if indices.len() != values.len() {
        return Err(ProtoError::Malformed(format!(
            "{} indices but {} values",
            indices.len(),
            values.len()
        )));
    }
    let max = indices.iter().copied().fold(0u32, u32::max);
    if !indices.is_empty() && max as usize >= n {
        return Err(ProtoError::Malformed(format!(
            "sparse index {max} out of range for a block of {n}"
        )));
    }
    Ok(())
}

/// What `encode_impl` wrote, for error feedback.
pub(crate) struct Sent {
    /// Values sent (selected).
    pub count: usize,
    /// Selected indices (ascending); None for a dense chain (every entry).
    pub selection: Option<Vec<u32>>,
    /// The values are all `n` entries (dense chain or sparse mode 1), not one per selected index.
    pub dense_values: bool,
    /// Offset in `out` where the values start.
    pub values_at: usize,
    pub format: ValueFormat,
}

/// Checks a chain and its inputs for a block of `n`.
pub(crate) fn check_inputs(
    chain: &CodecChain,
    n: usize,
    current: Option<&[f32]>,
) -> Result<(), ProtoError> {
    chain.validate()?;
    if chain.is_sparse() && n as u64 > 1 << 32 {
        return Err(ProtoError::Codec(format!(
            "block of {n} values is too large for u32 indices"
        )));
    }
    for s in &chain.selectors {
        if let Selector::RowsFraction { width, .. } = *s {
            if width == 0 || !n.is_multiple_of(width as usize) {
                return Err(ProtoError::Codec(format!(
                    "codec {chain}: rows of width {width} do not tile a block of {n} (the \
                     encoder sets the width with CodecChain::for_rows)"
                )));
            }
        }
    }
    match current {
        Some(c) if c.len() != n => Err(ProtoError::Codec(format!(
            "current values: {} for a block of {n}",
            c.len()
        ))),
        None if chain.needs_current() => Err(ProtoError::Codec(format!(
            "codec {chain} has a filter stage and needs the current values"
        ))),
        _ => Ok(()),
    }
}

/// Encodes a block of `n = values.len()` values (already including any residual). `current`
/// (same length) is needed only by a filter stage. Appends to `out`; returns how many values were
/// sent (`n` for a dense chain).
pub fn encode(
    chain: &CodecChain,
    values: &[f32],
    current: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Result<usize, ProtoError> {
    check_inputs(chain, values.len(), current)?;
    Ok(encode_checked(chain, values, current, out).count)
}

/// Top-k of the whole block or of the survivors of earlier stages.
fn top(values: &[f32], subset: Option<Vec<u32>>, k: usize) -> Vec<u32> {
    match subset {
        None => top_k(values, k),
        Some(sub) => select::top_k_subset(values, &sub, k),
    }
}

/// The selected indices (ascending) of a sparse chain.
fn select(chain: &CodecChain, values: &[f32], current: Option<&[f32]>) -> Vec<u32> {
    let n = values.len();
    let mut sel: Option<Vec<u32>> = None;
    for s in &chain.selectors {
        sel = Some(match *s {
            Selector::Filter { rel } => {
                // check_inputs made sure `current` is there.
                select::filter(values, current.unwrap_or(&[]), rel, sel.as_deref())
            }
            Selector::TopKFraction(f) => top(values, sel, k_of_fraction(f, n)),
            Selector::TopKCount(c) => top(values, sel, (c as usize).min(n)),
            Selector::Energy(e) => {
                let k = energy::k_of_energy(values, sel.as_deref(), e);
                top(values, sel, k)
            }
            Selector::RowsFraction { fraction, width } => {
                // check_inputs made sure `width` divides n.
                let w = (width as usize).max(1);
                let k = k_of_fraction(fraction, n / w);
                select::top_rows(values, w, k, sel.as_deref())
            }
        });
    }
    sel.unwrap_or_else(|| (0..n as u64).map(|i| i as u32).collect())
}

/// `encode` after `check_inputs`.
pub(crate) fn encode_checked(
    chain: &CodecChain,
    values: &[f32],
    current: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Sent {
    let n = values.len();
    let format = chain.format;
    if !chain.is_sparse() {
        let values_at = out.len();
        format::write_values(format, values, out);
        return Sent {
            count: n,
            selection: None,
            dense_values: true,
            values_at,
            format,
        };
    }
    let sel = select(chain, values, current);
    let gathered: Vec<f32> = sel.iter().map(|&i| values[i as usize]).collect();
    let (values_at, dense_values) = write_selection(format, n, &sel, &gathered, out);
    Sent {
        count: sel.len(),
        dense_values,
        selection: Some(sel),
        values_at,
        format,
    }
}

/// The sparse payload of a selection made elsewhere (a device's top-k): `sel` ascending
/// indices into a block of `n`, `values` the selected values (one each). Appends to `out`
/// exactly what [`encode`] appends for a sparse chain with the value format `format` that
/// selects `sel`: the smallest index layout, then the values in the format. For an f16 or bf16
/// format, values already rounded to it (what a receiver decodes) give the same bytes as the
/// unrounded ones.
pub fn encode_selection(
    format: ValueFormat,
    n: usize,
    sel: &[u32],
    values: &[f32],
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    check_selection(n, sel, values)?;
    write_selection(format, n, sel, values, out);
    Ok(())
}

/// [`encode_selection`], returning also what the receiver decodes for each selected index (in
/// `sel`'s order): what error feedback subtracts from the residual there. For a block format
/// (`q8`, `q4`, `q2`, `sign`) that depends on the whole selection (each group's scale, and
/// whether the layout is dense), so a device that selected on its own hands the selected
/// values to this and subtracts the result.
pub fn encode_selection_decoded(
    format: ValueFormat,
    n: usize,
    sel: &[u32],
    values: &[f32],
    out: &mut Vec<u8>,
) -> Result<Vec<f32>, ProtoError> {
    check_selection(n, sel, values)?;
    let (at, dense) = write_selection(format, n, sel, values, out);
    if dense {
        let mut all = vec![0f32; n];
        format::read_values(format, &out[at..], &mut all)?;
        Ok(sel.iter().map(|&i| all[i as usize]).collect())
    } else {
        let mut q = vec![0f32; sel.len()];
        format::read_values(format, &out[at..], &mut q)?;
        Ok(q)
    }
}

/// The first part of [`encode_selection`]'s payload, for a device that encodes the values
/// itself: appends the index layout of `sel` (ascending into a block of `n`) and returns
/// whether the values then go dense (all `n`, unselected ones zero) rather than one per
/// selected index. The payload is complete once the values follow in `format`
/// (`format.encoded_len` of that many).
pub fn encode_selection_indices(
    format: ValueFormat,
    n: usize,
    sel: &[u32],
    out: &mut Vec<u8>,
) -> Result<bool, ProtoError> {
    check_order(n, sel)?;
    let layout = sparse::choose(sel, n, format);
    sparse::write_indices(layout, sel, out);
    Ok(layout.mode == sparse::MODE_DENSE)
}

/// Refuses a selection [`encode_selection`] cannot encode.
fn check_selection(n: usize, sel: &[u32], values: &[f32]) -> Result<(), ProtoError> {
    if sel.len() != values.len() {
        return Err(ProtoError::Codec(format!(
            "a selection of {} indices with {} values",
            sel.len(),
            values.len()
        )));
    }
    check_order(n, sel)
}

/// Refuses indices that are not strictly increasing within a block of `n` (`n <= 2^32`).
fn check_order(n: usize, sel: &[u32]) -> Result<(), ProtoError> {
    if n as u64 > 1 << 32 {
        return Err(ProtoError::Codec(format!(
            "block of {n} values is too large for u32 indices"
        )));
    }
    if let Some(w) = sel.windows(2).find(|w| w[0] >= w[1]) {
        return Err(ProtoError::Codec(format!(
            "selected indices are not strictly increasing: {} then {}",
            w[0], w[1]
        )));
    }
    if let Some(&last) = sel.last() {
        if last as usize >= n {
            return Err(ProtoError::Codec(format!(
                "selected index {last} is outside a block of {n}"
            )));
        }
    }
    Ok(())
}

/// Writes the layout and values of a checked selection; returns (where the values start,
/// whether they are all `n` entries).
pub(crate) fn write_selection(
    format: ValueFormat,
    n: usize,
    sel: &[u32],
    values: &[f32],
    out: &mut Vec<u8>,
) -> (usize, bool) {
    let layout = sparse::choose(sel, n, format);
    sparse::write_indices(layout, sel, out);
    let values_at = out.len();
    let dense = layout.mode == sparse::MODE_DENSE;
    if dense {
        let mut all = vec![0f32; n];
        for (&i, &v) in sel.iter().zip(values) {
            all[i as usize] = v;
        }
        format::write_values(format, &all, out);
    } else {
        format::write_values(format, values, out);
    }
    (values_at, dense)
}

fn decode_dense(format: ValueFormat, bytes: &[u8], n: usize) -> Result<Vec<f32>, ProtoError> {
    if format.checked_len(n) != Some(bytes.len()) {
        return Err(ProtoError::Malformed(format!(
            "{} payload of {} bytes for {n} values",
            format.name(),
            bytes.len()
        )));
    }
    let mut v = vec![0f32; n];
    format::read_values(format, bytes, &mut v)?;
    Ok(v)
}

/// Decodes a payload produced by [`encode`] for a block of `n` values. Any malformed payload is
/// an error; no input panics.
pub fn decode(wire_id: u16, payload: &[u8], n: usize) -> Result<Decoded, ProtoError> {
    let Some((format, sparse)) = wire_format(wire_id) else {
        return Err(ProtoError::BadCodec {
            codec: wire_id,
            kind: "value payload",
        });
    };
    if !sparse {
        return decode_dense(format, payload, n).map(Decoded::Dense);
    }
    let Some((&mode, rest)) = payload.split_first() else {
        return Err(ProtoError::Malformed("empty sparse payload".into()));
    };
    if mode == sparse::MODE_DENSE {
        return decode_dense(format, rest, n).map(Decoded::Dense);
    }
    let (indices, at) = sparse::read_indices(mode, rest, n, format)?;
    let mut values = vec![0f32; indices.len()];
    format::read_values(format, &rest[at..], &mut values)?;
    Ok(Decoded::Sparse { indices, values })
}

/// `dst += decode(wire_id, payload, dst.len())` without materialising a dense block: the shard's
/// apply. The payload is checked whole before `dst` changes, so on error `dst` is unchanged.
pub fn decode_add(wire_id: u16, payload: &[u8], dst: &mut [f32]) -> Result<(), ProtoError> {
    let n = dst.len();
    let Some((format, sparse)) = wire_format(wire_id) else {
        return Err(ProtoError::BadCodec {
            codec: wire_id,
            kind: "value payload",
        });
    };
    let dense_bytes = match (sparse, payload.split_first()) {
        (false, _) => payload,
        (true, Some((1, rest))) => rest,
        _ => return decode(wire_id, payload, n)?.add_to(dst),
    };
    if format.checked_len(n) != Some(dense_bytes.len()) {
        return Err(ProtoError::Malformed(format!(
            "{} payload of {} bytes for {n} values",
            format.name(),
            dense_bytes.len()
        )));
    }
    if format.is_block() {
        // A group may be refused: decode it all before `dst` changes.
        return Decoded::Dense(decode_dense(format, dense_bytes, n)?).add_to(dst);
    }
    const CHUNK: usize = 1024;
    let size = format.encoded_len(1);
    let mut buf = [0f32; CHUNK];
    for (d, b) in dst.chunks_mut(CHUNK).zip(dense_bytes.chunks(CHUNK * size)) {
        let q = &mut buf[..d.len()];
        format::read_values(format, b, q)?;
        for (d, q) in d.iter_mut().zip(q.iter()) {
            *d += *q;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_matches_the_frame_payload() {
        let v = [1.0f32, -2.5, 3.25];
        let mut out = Vec::new();
        assert_eq!(encode(&CodecChain::raw(), &v, None, &mut out).unwrap(), 3);
        assert_eq!(out, crate::encode_f32s(&v));
        assert_eq!(decode(1, &out, 3).unwrap(), Decoded::Dense(v.to_vec()));
    }

    #[test]
    fn sparse_list_layout() {
        let mut v = vec![0f32; 300];
        v[3] = 1.0;
        v[200] = -2.0;
        let mut out = Vec::new();
        let chain: CodecChain = "topk:2".parse().unwrap();
        assert_eq!(encode(&chain, &v, None, &mut out).unwrap(), 2);
        let mut want = vec![0u8, 2, 3, 197, 1];
        want.extend(crate::encode_f32s(&[1.0, -2.0]));
        assert_eq!(out, want);
        assert_eq!(
            decode(0x11, &out, 300).unwrap(),
            Decoded::Sparse {
                indices: vec![3, 200],
                values: vec![1.0, -2.0]
            }
        );
        assert!(decode(0x11, &out, 200).is_err(), "index out of range");
    }

    #[test]
    fn large_selections_fall_back_to_dense() {
        let v: Vec<f32> = (0..10).map(|i| i as f32 - 4.5).collect();
        let chain: CodecChain = "topk:0.9,f16".parse().unwrap();
        let mut out = Vec::new();
        assert_eq!(encode(&chain, &v, None, &mut out).unwrap(), 9);
        assert_eq!(out.len(), 1 + 2 * 10);
        assert_eq!(out[0], 1);
        let Decoded::Dense(d) = decode(chain.wire_id(), &out, 10).unwrap() else {
            panic!("dense expected")
        };
        // Smallest magnitudes are 0.5 at indices 4 and 5; index 5 loses the tie.
        let mut want = v.clone();
        want[5] = 0.0;
        assert_eq!(d, want);
    }

    #[test]
    fn filter_needs_current() {
        let chain: CodecChain = "filter:0.1".parse().unwrap();
        let mut out = Vec::new();
        assert!(encode(&chain, &[1.0], None, &mut out).is_err());
        assert!(encode(&chain, &[1.0], Some(&[1.0, 2.0]), &mut out).is_err());
        assert!(out.is_empty());
        let bad = CodecChain {
            selectors: vec![Selector::TopKFraction(2.0)],
            warmup: 0,
            momentum: 0.0,
            format: ValueFormat::F32,
        };
        assert!(encode(&bad, &[1.0], None, &mut out).is_err());
    }

    #[test]
    fn decode_add_matches_decode() {
        let v: Vec<f32> = (0..3000).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        for s in [
            "raw",
            "f16",
            "bf16",
            "topk:0.01",
            "topk:0.9,f16",
            "topk:100,bf16",
        ] {
            let chain: CodecChain = s.parse().unwrap();
            let mut out = Vec::new();
            encode(&chain, &v, None, &mut out).unwrap();
            let mut want = vec![1f32; 3000];
            decode(chain.wire_id(), &out, 3000)
                .unwrap()
                .add_to(&mut want)
                .unwrap();
            let mut got = vec![1f32; 3000];
            decode_add(chain.wire_id(), &out, &mut got).unwrap();
            assert_eq!(got, want, "{s}");
            let mut short = vec![1f32; 2999];
            if !chain.is_sparse() || s == "topk:0.9,f16" {
                // Dense payloads: the length must match.
                assert!(
                    decode_add(chain.wire_id(), &out, &mut short).is_err(),
                    "{s}"
                );
            }
            out.pop();
            assert!(decode_add(chain.wire_id(), &out, &mut got).is_err(), "{s}");
            assert_eq!(got, want, "unchanged on error");
        }
    }

    #[test]
    fn sparse_add() {
        let mut d = vec![1.0f32; 4];
        apply_sparse_add(&mut d, &[0, 3, 3], &[1.0, 2.0, 0.5]).unwrap();
        assert_eq!(d, vec![2.0, 1.0, 1.0, 3.5]);
        assert!(apply_sparse_add(&mut d, &[0, 4], &[1.0, 1.0]).is_err());
        assert!(apply_sparse_add(&mut d, &[0], &[1.0, 1.0]).is_err());
        assert_eq!(d, vec![2.0, 1.0, 1.0, 3.5], "errors change nothing");
        assert!(apply_sparse_add(&mut [], &[], &[]).is_ok());
    }
}
