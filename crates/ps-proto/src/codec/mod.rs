//! Delta-compression codecs for value payloads (Push and PullReply frames).
//!
//! A codec is a [`CodecChain`]: zero or more selection stages ([`Selector`]: top-k, filter) then
//! one value format ([`ValueFormat`]: f32, f16, bf16). Chains are written as strings, stages
//! separated by commas, the format last and optional (default `raw`, i.e. f32):
//! `raw`, `f16`, `bf16`, `topk:0.01,f16`, `topk:100`, `filter:0.01,topk:0.05,bf16`.
//!
//! * `topk:F` with a decimal point (or exponent) is a fraction in (0, 1]: `k = ceil(F * n)` of a
//!   block of `n`; `topk:N` (digits only) is a count. See [`top_k`] for the order (ties by lower
//!   index, NaN above everything).
//! * `filter:R` (R >= 0, finite) keeps entries with `delta != 0 && !(|delta| < R * |current|)`:
//!   zero deltas and deltas small relative to the current value are skipped (they stay in the
//!   residual under [`ErrorFeedback`]). It needs the current values of the block.
//! * Stages apply in order, each to the survivors of the previous one; a top-k fraction is always
//!   relative to the whole block.
//!
//! # Wire format
//! The frame header's codec field carries [`CodecChain::wire_id`]: the value format in the low
//! bits (1 = f32, 2 = f16, 3 = bf16) and [`WIRE_SPARSE`] when the chain has selection stages.
//! Only what decoding needs is on the wire (the selection parameters stay with the sender), so
//! the valid ids are 1, 2, 3, 0x11, 0x12, 0x13. `1` is exactly the raw f32 payload of
//! [`crate::Codec::RawF32`].
//!
//! * dense (1, 2, 3): `n` values, little-endian, nothing else.
//! * sparse (0x11..=0x13): a mode byte, then
//!   * mode 0 (list): varint `m` (entries), `m` varint indices, the first absolute and each next
//!     one as the gap from the previous (>= 1, so indices strictly increase, all `< n`), then `m`
//!     values;
//!   * mode 1 (dense): `n` values, zero where nothing was selected. The encoder picks it when the
//!     list would be larger, so a sparse payload is never more than one byte over the dense one.
//!
//! Decoding checks everything (lengths exact, no trailing bytes, indices in range and strictly
//! increasing, canonical varints) and allocates no more than the payload's size justifies.

mod feedback;
mod format;
mod keycache;
mod select;
mod varint;

pub use feedback::ErrorFeedback;
pub use format::ValueFormat;
pub use keycache::{
    default_key_hash, KeyCacheReceiver, KeyCacheSender, KeyHasher, Keys, DEFAULT_KEY_CACHE_IDS,
};
pub use select::{
    initial_above, k_of_fraction, sample_positions, top_k, EXACT_BELOW, SAMPLE as TOPK_SAMPLE,
};
pub use varint::{read_varint, varint_len, write_varint};

use crate::error::ProtoError;
use std::fmt;
use std::str::FromStr;

/// Wire-id bit set for chains with selection stages (sparse payloads).
pub const WIRE_SPARSE: u16 = 0x10;

/// A selection stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selector {
    /// Keep `ceil(fraction * n)` entries of largest magnitude; fraction in (0, 1].
    TopKFraction(f32),
    /// Keep `min(count, n)` entries of largest magnitude.
    TopKCount(u32),
    /// Keep entries with `delta != 0 && !(|delta| < rel * |current|)`; rel >= 0.
    Filter { rel: f32 },
}

impl Selector {
    fn validate(&self) -> Result<(), ProtoError> {
        match *self {
            Selector::TopKFraction(f) if !(f > 0.0 && f <= 1.0) => Err(ProtoError::Codec(format!(
                "top-k fraction {f} is not in (0, 1]"
            ))),
            Selector::Filter { rel } if !(rel.is_finite() && rel >= 0.0) => Err(ProtoError::Codec(
                format!("filter ratio {rel} is not finite and >= 0"),
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Selector::TopKFraction(x) => {
                // f32's Display is the shortest string that parses back to the same value; make
                // sure it reads as a fraction, not a count.
                let s = x.to_string();
                if s.contains(['.', 'e', 'E']) {
                    write!(f, "topk:{s}")
                } else {
                    write!(f, "topk:{s}.0")
                }
            }
            Selector::TopKCount(k) => write!(f, "topk:{k}"),
            Selector::Filter { rel } => write!(f, "filter:{rel}"),
        }
    }
}

/// Selection stages then a value format. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecChain {
    pub selectors: Vec<Selector>,
    pub format: ValueFormat,
}

impl Default for CodecChain {
    fn default() -> Self {
        CodecChain::raw()
    }
}

impl CodecChain {
    /// Dense f32: the existing raw payload.
    pub fn raw() -> Self {
        CodecChain {
            selectors: Vec::new(),
            format: ValueFormat::F32,
        }
    }

    /// Decoding gives back exactly what was encoded.
    pub fn is_lossless(&self) -> bool {
        self.selectors.is_empty() && self.format == ValueFormat::F32
    }

    /// The payload is sparse (the chain has selection stages).
    pub fn is_sparse(&self) -> bool {
        !self.selectors.is_empty()
    }

    /// Needs the current values (has a filter stage).
    pub fn needs_current(&self) -> bool {
        self.selectors
            .iter()
            .any(|s| matches!(s, Selector::Filter { .. }))
    }

    /// u16 for the frame header's codec field; 1 is raw f32 (`Codec::RawF32`).
    pub fn wire_id(&self) -> u16 {
        self.format.code() | if self.is_sparse() { WIRE_SPARSE } else { 0 }
    }

    /// Checks the stages' parameters (the fields are public, so a chain may be built by hand).
    pub fn validate(&self) -> Result<(), ProtoError> {
        self.selectors.iter().try_for_each(Selector::validate)
    }
}

/// (value format, sparse) of a wire id; None for an id no chain produces.
pub fn wire_format(wire_id: u16) -> Option<(ValueFormat, bool)> {
    let sparse = match wire_id & !0x0F {
        0 => false,
        WIRE_SPARSE => true,
        _ => return None,
    };
    ValueFormat::from_code(wire_id & 0x0F).map(|f| (f, sparse))
}

impl fmt::Display for CodecChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.selectors.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{s}")?;
        }
        if self.selectors.is_empty() {
            f.write_str(self.format.name())
        } else if self.format != ValueFormat::F32 {
            write!(f, ",{}", self.format.name())
        } else {
            Ok(())
        }
    }
}

impl FromStr for CodecChain {
    type Err = ProtoError;

    fn from_str(s: &str) -> Result<Self, ProtoError> {
        let bad = |why: String| ProtoError::Codec(format!("codec {s:?}: {why}"));
        let mut chain = CodecChain::raw();
        let mut format = None;
        for stage in s.split(',').map(str::trim) {
            if format.is_some() {
                return Err(bad(format!(
                    "stage {stage:?} after the value format (the format comes last)"
                )));
            }
            let (name, param) = match stage.split_once(':') {
                Some((n, p)) => (n.trim(), Some(p.trim())),
                None => (stage, None),
            };
            match (name, param) {
                ("raw" | "f32", None) => format = Some(ValueFormat::F32),
                ("f16", None) => format = Some(ValueFormat::F16),
                ("bf16", None) => format = Some(ValueFormat::Bf16),
                ("topk", Some(p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    let k = p
                        .parse::<u32>()
                        .map_err(|e| bad(format!("top-k count {p:?}: {e}")))?;
                    chain.selectors.push(Selector::TopKCount(k));
                }
                ("topk", Some(p)) => {
                    let f = p
                        .parse::<f32>()
                        .map_err(|e| bad(format!("top-k fraction {p:?}: {e}")))?;
                    chain.selectors.push(Selector::TopKFraction(f));
                }
                ("filter", Some(p)) => {
                    let rel = p
                        .parse::<f32>()
                        .map_err(|e| bad(format!("filter ratio {p:?}: {e}")))?;
                    chain.selectors.push(Selector::Filter { rel });
                }
                ("topk" | "filter", None) => {
                    return Err(bad(format!("{name} needs a parameter ({name}:X)")))
                }
                _ => return Err(bad(format!("unknown stage {stage:?}"))),
            }
        }
        if let Some(f) = format {
            chain.format = f;
        }
        chain.validate().map_err(|e| bad(e.to_string()))?;
        Ok(chain)
    }
}

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
                let mut out = vec![0f32; n];
                apply_sparse_add(&mut out, &indices, &values)?;
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
    if indices.len() != values.len() {
        return Err(ProtoError::Malformed(format!(
            "{} indices but {} values",
            indices.len(),
            values.len()
        )));
    }
    let max = indices.iter().copied().fold(0u32, u32::max);
    if !indices.is_empty() && max as usize >= dst.len() {
        return Err(ProtoError::Malformed(format!(
            "sparse index {max} out of range for a block of {}",
            dst.len()
        )));
    }
    for (&i, &v) in indices.iter().zip(values) {
        dst[i as usize] += v;
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
    let m = sel.len();
    let size = format.size();
    let mut index_bytes = varint_len(m as u64);
    let mut prev = 0u32;
    for (j, &i) in sel.iter().enumerate() {
        index_bytes += varint_len(if j == 0 { i } else { i - prev } as u64);
        prev = i;
    }
    let list_len = index_bytes + m * size;
    if list_len <= n * size {
        out.reserve(1 + list_len);
        out.push(0);
        write_varint(m as u64, out);
        let mut prev = 0u32;
        for (j, &i) in sel.iter().enumerate() {
            write_varint(if j == 0 { i } else { i - prev } as u64, out);
            prev = i;
        }
        let gathered: Vec<f32> = sel.iter().map(|&i| values[i as usize]).collect();
        let values_at = out.len();
        format::write_values(format, &gathered, out);
        Sent {
            count: m,
            selection: Some(sel),
            dense_values: false,
            values_at,
            format,
        }
    } else {
        out.push(1);
        let mut dense = vec![0f32; n];
        for &i in &sel {
            dense[i as usize] = values[i as usize];
        }
        let values_at = out.len();
        format::write_values(format, &dense, out);
        Sent {
            count: m,
            selection: Some(sel),
            dense_values: true,
            values_at,
            format,
        }
    }
}

fn decode_dense(format: ValueFormat, bytes: &[u8], n: usize) -> Result<Vec<f32>, ProtoError> {
    let need = n.checked_mul(format.size());
    if need != Some(bytes.len()) {
        return Err(ProtoError::Malformed(format!(
            "{} payload of {} bytes for {n} values",
            format.name(),
            bytes.len()
        )));
    }
    let mut v = vec![0f32; n];
    format::read_values(format, bytes, &mut v);
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
    match mode {
        0 => {}
        1 => return decode_dense(format, rest, n).map(Decoded::Dense),
        m => {
            return Err(ProtoError::Malformed(format!(
                "unknown sparse payload mode {m}"
            )))
        }
    }
    let mut pos = 0;
    let m = read_varint(rest, &mut pos)?;
    let size = format.size() as u64;
    if m > n as u64 {
        return Err(ProtoError::Malformed(format!(
            "{m} sparse entries for a block of {n}"
        )));
    }
    // Every entry takes at least one index byte and one value: don't allocate beyond that.
    if m * (1 + size) > (rest.len() - pos) as u64 {
        return Err(ProtoError::Malformed(format!(
            "sparse payload of {} bytes is too short for {m} entries",
            payload.len()
        )));
    }
    let m = m as usize;
    let limit = (n as u64).min(1 << 32);
    let mut indices = Vec::with_capacity(m);
    let mut prev = 0u64;
    for j in 0..m {
        let g = read_varint(rest, &mut pos)?;
        let idx = if j == 0 {
            g
        } else if g == 0 {
            return Err(ProtoError::Malformed(format!(
                "sparse index {prev} repeated: indices must increase"
            )));
        } else {
            prev.checked_add(g)
                .ok_or_else(|| ProtoError::Malformed("sparse index overflows".into()))?
        };
        if idx >= limit {
            return Err(ProtoError::Malformed(format!(
                "sparse index {idx} out of range for a block of {n}"
            )));
        }
        indices.push(idx as u32);
        prev = idx;
    }
    let value_bytes = &rest[pos..];
    if value_bytes.len() as u64 != m as u64 * size {
        return Err(ProtoError::Malformed(format!(
            "sparse payload: {} value bytes for {m} {} values",
            value_bytes.len(),
            format.name()
        )));
    }
    let mut values = vec![0f32; m];
    format::read_values(format, value_bytes, &mut values);
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
    let size = format.size();
    if n.checked_mul(size) != Some(dense_bytes.len()) {
        return Err(ProtoError::Malformed(format!(
            "{} payload of {} bytes for {n} values",
            format.name(),
            dense_bytes.len()
        )));
    }
    const CHUNK: usize = 1024;
    let mut buf = [0f32; CHUNK];
    for (d, b) in dst.chunks_mut(CHUNK).zip(dense_bytes.chunks(CHUNK * size)) {
        let q = &mut buf[..d.len()];
        format::read_values(format, b, q);
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
    fn parses_and_displays() {
        for (s, want) in [
            ("raw", "raw"),
            ("f32", "raw"),
            ("f16", "f16"),
            ("bf16", "bf16"),
            ("topk:0.01,f16", "topk:0.01,f16"),
            ("topk:100", "topk:100"),
            ("topk:100,raw", "topk:100"),
            ("topk:1.0", "topk:1.0"),
            ("topk:1e-3", "topk:0.001"),
            ("filter:0.01,topk:100,bf16", "filter:0.01,topk:100,bf16"),
            ("filter:0.01, topk:0.05 ,bf16", "filter:0.01,topk:0.05,bf16"),
            ("filter:1", "filter:1"),
        ] {
            let c: CodecChain = s.parse().unwrap();
            assert_eq!(c.to_string(), want, "{s}");
            assert_eq!(want.parse::<CodecChain>().unwrap(), c);
        }
        let c: CodecChain = "filter:0.01,topk:100,bf16".parse().unwrap();
        assert_eq!(
            c,
            CodecChain {
                selectors: vec![Selector::Filter { rel: 0.01 }, Selector::TopKCount(100)],
                format: ValueFormat::Bf16
            }
        );
        assert_eq!(
            "topk:1".parse::<CodecChain>().unwrap().selectors,
            vec![Selector::TopKCount(1)]
        );
        for bad in [
            "",
            "raw,",
            "f16,topk:0.1",
            "f16,bf16",
            "topk",
            "topk:",
            "topk:0.0",
            "topk:1.5",
            "topk:-1",
            "topk:nan",
            "filter:-0.1",
            "filter:inf",
            "filter",
            "zstd",
            "topk:0.1:2",
            "topk:99999999999",
        ] {
            assert!(bad.parse::<CodecChain>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wire_ids() {
        let ids: Vec<u16> = [
            "raw",
            "f16",
            "bf16",
            "topk:1",
            "topk:1,f16",
            "filter:0,bf16",
        ]
        .iter()
        .map(|s| s.parse::<CodecChain>().unwrap().wire_id())
        .collect();
        assert_eq!(ids, vec![1, 2, 3, 0x11, 0x12, 0x13]);
        for id in 0..=u16::MAX {
            assert_eq!(wire_format(id).is_some(), ids.contains(&id), "{id}");
        }
        assert!(CodecChain::raw().is_lossless());
        assert!(!"f16".parse::<CodecChain>().unwrap().is_lossless());
        assert!("topk:3".parse::<CodecChain>().unwrap().is_sparse());
    }

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
