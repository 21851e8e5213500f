//! Value formats: how the values of a block lie on the wire.
//!
//! * `F32`: little-endian IEEE binary32, lossless.
//! * `F16`: little-endian IEEE binary16, round to nearest even (F16C where the CPU has it, via the
//!   `half` crate's slice conversions). Relative error <= 2^-11 for |x| in the normal range
//!   [2^-14, 65504]; below 2^-14 (subnormal f16) the absolute error is <= 2^-25 and values under
//!   2^-25 become a signed zero.
//! * `Bf16`: the upper half of binary32, round to nearest even. Relative error <= 2^-8 over the
//!   whole normal f32 range; f32 subnormals keep an absolute error <= 2^-134.
//!
//! * `I8`, `I16`: whole numbers as little-endian two's-complement integers of 1 or 2 bytes. Only
//!   the exact codec picks them ([`exact_format`]), for blocks whose every value is a whole
//!   number in range and not -0.0 (LDA's counts and count changes), where they lose nothing;
//!   no codec string names them. Any other value is rounded to the nearest integer (ties to
//!   even) and saturated, NaN becoming 0.
//!
//! Overflow, NaN and infinities, for both half formats: a *finite* value beyond the format's largest
//! finite value saturates to that value (±65504 for f16, ±3.3895e38 for bf16) instead of becoming
//! infinite, so a finite delta never turns into an infinity on the shard (under error feedback
//! the excess stays in the residual). ±inf stays ±inf and NaN stays NaN (quiet).

use super::quant::Quant;
use crate::error::ProtoError;
use half::f16;
use half::slice::HalfFloatSliceExt;

/// How values lie on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueFormat {
    F32,
    F16,
    Bf16,
    Q8,
    Q4,
    Q2,
    Sign,
    I8,
    I16,
}

const CHUNK: usize = 1024;
/// The values `I8` and `I16` hold.
const I8_RANGE: (f32, f32) = (-128.0, 127.0);
const I16_RANGE: (f32, f32) = (-32_768.0, 32_767.0);
const F16_MAX: f32 = 65504.0;
/// bf16::MAX (0x7F7F) as f32.
const BF16_MAX: f32 = f32::from_bits(0x7F7F_0000);

impl ValueFormat {
    /// Every format, in wire-code order.
    pub const ALL: [ValueFormat; 7] = [
        ValueFormat::F32,
        ValueFormat::F16,
        ValueFormat::Bf16,
        ValueFormat::Q8,
        ValueFormat::Q4,
        ValueFormat::Q2,
        ValueFormat::Sign,
    ];

    /// The whole-number formats, narrowest first: not in [`ValueFormat::ALL`], since no codec
    /// string names them.
    pub const INTS: [ValueFormat; 2] = [ValueFormat::I8, ValueFormat::I16];

    /// Bytes on the wire of `m` values.
    pub fn encoded_len(self, m: usize) -> usize {
        match self.quant() {
            None if self == ValueFormat::F32 => m * 4,
            None if self == ValueFormat::I8 => m,
            None => m * 2,
            Some(q) => q.encoded_len(m),
        }
    }

    /// Bytes on the wire of `m` values, or None if that overflows.
    pub(crate) fn checked_len(self, m: usize) -> Option<usize> {
        // Every format takes at most 4 bytes a value plus a scale per group.
        m.checked_mul(5)?;
        Some(self.encoded_len(m))
    }

    /// Block-quantized (a value depends on its group, see [`super::quant`]).
    pub fn is_block(self) -> bool {
        self.quant().is_some()
    }

    /// The block quantizer of a block-quantized format.
    fn quant(self) -> Option<Quant> {
        match self {
            ValueFormat::F32
            | ValueFormat::F16
            | ValueFormat::Bf16
            | ValueFormat::I8
            | ValueFormat::I16 => None,
            ValueFormat::Q8 => Some(Quant::Levels { bits: 8 }),
            ValueFormat::Q4 => Some(Quant::Levels { bits: 4 }),
            ValueFormat::Q2 => Some(Quant::Levels { bits: 2 }),
            ValueFormat::Sign => Some(Quant::Sign),
        }
    }

    /// The name used in codec strings ("raw" for f32).
    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::F32 => "raw",
            ValueFormat::F16 => "f16",
            ValueFormat::Bf16 => "bf16",
            ValueFormat::Q8 => "q8",
            ValueFormat::Q4 => "q4",
            ValueFormat::Q2 => "q2",
            ValueFormat::Sign => "sign",
            ValueFormat::I8 => "i8",
            ValueFormat::I16 => "i16",
        }
    }

    /// The format named `name` in a codec string.
    pub fn from_name(name: &str) -> Option<ValueFormat> {
        match name {
            "f32" => Some(ValueFormat::F32),
            _ => Self::ALL.into_iter().find(|f| f.name() == name),
        }
    }

    /// Low bits of the wire id.
    pub(crate) fn code(self) -> u16 {
        match self {
            ValueFormat::F32 => 1,
            ValueFormat::F16 => 2,
            ValueFormat::Bf16 => 3,
            ValueFormat::Q8 => 4,
            ValueFormat::Q4 => 5,
            ValueFormat::Q2 => 6,
            ValueFormat::Sign => 7,
            ValueFormat::I8 => 8,
            ValueFormat::I16 => 9,
        }
    }

    pub(crate) fn from_code(c: u16) -> Option<ValueFormat> {
        (Self::ALL.into_iter().chain(Self::INTS)).find(|f| f.code() == c)
    }

    /// The range of a whole-number format.
    fn int_range(self) -> Option<(f32, f32)> {
        match self {
            ValueFormat::I8 => Some(I8_RANGE),
            ValueFormat::I16 => Some(I16_RANGE),
            _ => None,
        }
    }

    /// What `values` become after a round trip through this format as one dense block (a
    /// block-quantized format's groups of [`super::QUANT_GROUP`] from the first value): what a
    /// receiver of them decodes.
    pub fn round_trip(self, values: &[f32]) -> Vec<f32> {
        let mut bytes = Vec::new();
        write_values(self, values, &mut bytes);
        let mut out = vec![0.0; values.len()];
        // What `write_values` makes, `read_values` takes.
        if read_values(self, &bytes, &mut out).is_err() {
            debug_assert!(false, "{} refused its own bytes", self.name());
        }
        out
    }

    /// What a value becomes after a round trip through this format (for a block-quantized
    /// format: as a group of its own; in a block, a value depends on its group).
    pub fn quantize(self, v: f32) -> f32 {
        match self {
            ValueFormat::F32 => v,
            ValueFormat::F16 => f16::from_f32(saturate(v, F16_MAX)).to_f32(),
            ValueFormat::Bf16 => bf16_to_f32(f32_to_bf16(v)),
            ValueFormat::I8 => to_int(v, I8_RANGE) as f32,
            ValueFormat::I16 => to_int(v, I16_RANGE) as f32,
            _ => self.quant().map_or(v, |q| q.quantize_one(v)),
        }
    }
}

/// Finite values clamped to ±max; infinities and NaN unchanged.
#[inline(always)]
fn saturate(v: f32, max: f32) -> f32 {
    let c = v.clamp(-max, max);
    if v.is_finite() {
        c
    } else {
        v
    }
}

/// `v` rounded to the nearest integer (ties to even) and saturated to `lo..=hi` (bounds of at
/// most 2^22 in size); NaN is 0. Without a library call (`round_ties_even` is one where the
/// target lacks SSE4.1): clamped first, then rounded by adding and taking away 1.5 * 2^23,
/// which leaves an f32 of that size no bits below the point.
#[inline(always)]
fn to_int(v: f32, (lo, hi): (f32, f32)) -> i32 {
    const ROUND: f32 = 12_582_912.0;
    // `as` takes NaN to 0.
    ((v.clamp(lo, hi) + ROUND) - ROUND) as i32
}

/// Whether `v` is a whole number below 2^16 in size, and not -0.0: on its bits, without
/// branches or library calls, so that a loop over many values runs several at once.
#[inline(always)]
fn small_whole(v: f32) -> bool {
    let b = v.to_bits();
    let e = ((b >> 23) & 0xff).wrapping_sub(127);
    // +0.0; or an exponent from 0 to 15 and no mantissa bit below the point.
    (b == 0) | ((e <= 15) & (b & (0x7f_ffff >> e.min(15)) == 0))
}

/// The narrowest whole-number format in which every one of `values` travels exactly (a whole
/// number in its range, and not -0.0, which would come back as +0.0); `None` when some value
/// is not a whole number or is past `i16`.
pub fn exact_format(values: &[f32]) -> Option<ValueFormat> {
    // One pass without branches: the smallest and largest, and whether all are whole.
    let (mut lo, mut hi, mut whole) = (0.0f32, 0.0f32, true);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
        whole &= small_whole(v);
    }
    if !whole {
        return None;
    }
    ValueFormat::INTS.into_iter().find(|f| {
        f.int_range()
            .is_some_and(|(min, max)| min <= lo && hi <= max)
    })
}

/// f32 -> bf16 bits, round to nearest even, finite values saturating, NaN kept quiet. The same
/// bits as `half::bf16::from_f32` for every input that does not overflow, but branch-free so
/// that it vectorises (half converts bf16 slices one element at a time).
#[inline(always)]
pub(crate) fn f32_to_bf16(v: f32) -> u16 {
    let x = saturate(v, BF16_MAX).to_bits();
    let rounded = (x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) as u16;
    let nan = ((x >> 16) | 0x40) as u16;
    if x & 0x7FFF_FFFF > 0x7F80_0000 {
        nan
    } else {
        rounded
    }
}

#[inline(always)]
pub(crate) fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Appends `src` in `format`, little-endian.
pub(crate) fn write_values(format: ValueFormat, src: &[f32], out: &mut Vec<u8>) {
    out.reserve(format.encoded_len(src.len()));
    match format {
        ValueFormat::F32 => {
            if cfg!(target_endian = "little") {
                out.extend_from_slice(bytemuck::cast_slice(src));
            } else {
                for v in src {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        ValueFormat::F16 => {
            let mut clamped = [0f32; CHUNK];
            let mut half = [f16::ZERO; CHUNK];
            for chunk in src.chunks(CHUNK) {
                let c = chunk.len();
                for (d, &s) in clamped[..c].iter_mut().zip(chunk) {
                    *d = saturate(s, F16_MAX);
                }
                half[..c].convert_from_f32_slice(&clamped[..c]);
                push_u16s(bytemuck::cast_slice(&half[..c]), out);
            }
        }
        ValueFormat::Bf16 => write_u16s(src, out, f32_to_bf16),
        ValueFormat::I8 => out.extend(src.iter().map(|&v| to_int(v, I8_RANGE) as i8 as u8)),
        ValueFormat::I16 => write_u16s(src, out, |v| to_int(v, I16_RANGE) as i16 as u16),
        ValueFormat::Q8 | ValueFormat::Q4 | ValueFormat::Q2 | ValueFormat::Sign => {
            if let Some(q) = format.quant() {
                q.write(src, out);
            }
        }
    }
}

fn push_u16s(v: &[u16], out: &mut Vec<u8>) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(v));
    } else {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Appends `src` as `u16`s, each value turned by `to`, a chunk at a time.
#[inline(always)]
fn write_u16s(src: &[f32], out: &mut Vec<u8>, to: impl Fn(f32) -> u16) {
    let mut bits = [0u16; CHUNK];
    for chunk in src.chunks(CHUNK) {
        let c = chunk.len();
        for (d, &s) in bits[..c].iter_mut().zip(chunk) {
            *d = to(s);
        }
        push_u16s(&bits[..c], out);
    }
}

/// Reads `dst.len()` `u16`s from `bytes`, each turned by `from`, a chunk at a time.
#[inline(always)]
fn read_u16s_as(bytes: &[u8], dst: &mut [f32], from: impl Fn(u16) -> f32) {
    let mut bits = [0u16; CHUNK];
    for (d, b) in dst.chunks_mut(CHUNK).zip(bytes.chunks(CHUNK * 2)) {
        let c = d.len();
        read_u16s(b, &mut bits[..c]);
        for (o, &x) in d.iter_mut().zip(&bits[..c]) {
            *o = from(x);
        }
    }
}

fn read_u16s(bytes: &[u8], dst: &mut [u16]) {
    debug_assert_eq!(bytes.len(), dst.len() * 2);
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice_mut::<u16, u8>(dst).copy_from_slice(bytes);
    } else {
        for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
            *d = u16::from_le_bytes([c[0], c[1]]);
        }
    }
}

/// Decodes `dst.len()` values; `bytes.len()` must be exactly `format.encoded_len(dst.len())`
/// (checked by the callers, which return an error otherwise). Only a block format can refuse
/// its bytes (see [`Quant::read`]).
pub(crate) fn read_values(
    format: ValueFormat,
    bytes: &[u8],
    dst: &mut [f32],
) -> Result<(), ProtoError> {
    debug_assert_eq!(bytes.len(), format.encoded_len(dst.len()));
    match format {
        ValueFormat::F32 => {
            if cfg!(target_endian = "little") {
                bytemuck::cast_slice_mut::<f32, u8>(dst).copy_from_slice(bytes);
            } else {
                for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
        ValueFormat::F16 => {
            let mut half = [f16::ZERO; CHUNK];
            for (d, b) in dst.chunks_mut(CHUNK).zip(bytes.chunks(CHUNK * 2)) {
                let c = d.len();
                read_u16s(b, bytemuck::cast_slice_mut(&mut half[..c]));
                half[..c].convert_to_f32_slice(d);
            }
        }
        ValueFormat::Bf16 => read_u16s_as(bytes, dst, bf16_to_f32),
        ValueFormat::I8 => {
            for (d, &b) in dst.iter_mut().zip(bytes) {
                *d = f32::from(b as i8);
            }
        }
        ValueFormat::I16 => read_u16s_as(bytes, dst, |x| f32::from(x as i16)),
        ValueFormat::Q8 | ValueFormat::Q4 | ValueFormat::Q2 | ValueFormat::Sign => {
            if let Some(q) = format.quant() {
                return q.read(bytes, dst);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    fn round_trip(format: ValueFormat, v: &[f32]) -> Vec<f32> {
        let mut b = Vec::new();
        write_values(format, v, &mut b);
        assert_eq!(b.len(), format.encoded_len(v.len()));
        let mut out = vec![0f32; v.len()];
        read_values(format, &b, &mut out).unwrap();
        for (i, o) in out.iter().enumerate() {
            let q = format.quantize(v[i]);
            assert!(q.to_bits() == o.to_bits() || (q.is_nan() && o.is_nan()));
        }
        out
    }

    #[test]
    fn a_block_round_trip_is_what_a_receiver_decodes() {
        let v: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        for format in ValueFormat::ALL {
            let chain = super::super::CodecChain {
                format,
                ..super::super::CodecChain::raw()
            };
            let mut bytes = Vec::new();
            super::super::encode(&chain, &v, None, &mut bytes).unwrap();
            let decoded = super::super::decode(chain.wire_id(), &bytes, v.len()).unwrap();
            assert_eq!(
                format.round_trip(&v),
                decoded.into_dense(v.len()).unwrap(),
                "{format:?}"
            );
        }
    }

    #[test]
    fn whole_number_formats_round_saturate_and_are_exact_on_their_range() {
        let v = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.5,
            3.5,
            -2.5,
            127.0,
            127.6,
            -128.0,
            -300.0,
            40_000.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let i8s = round_trip(ValueFormat::I8, &v);
        assert_eq!(
            &i8s[..12],
            &[0.0, 0.0, 1.0, -1.0, 2.0, 4.0, -2.0, 127.0, 127.0, -128.0, -128.0, 127.0]
        );
        assert_eq!(&i8s[12..], &[0.0, 127.0, -128.0]);
        let i16s = round_trip(ValueFormat::I16, &v);
        assert_eq!(&i16s[10..12], &[-300.0, 32_767.0]);
        for f in ValueFormat::INTS {
            assert_eq!(ValueFormat::from_code(f.code()), Some(f));
            assert_eq!(
                ValueFormat::from_name(f.name()),
                None,
                "no codec string names it"
            );
        }
        // Exact where every value is whole, in range and not -0.0.
        assert_eq!(
            exact_format(&[0.0, 5.0, -128.0, 127.0]),
            Some(ValueFormat::I8)
        );
        assert_eq!(exact_format(&[128.0, -32_768.0]), Some(ValueFormat::I16));
        assert_eq!(exact_format(&[]), Some(ValueFormat::I8));
        for bad in [-0.0, 0.5, 32_768.0, -32_769.0, f32::NAN, f32::INFINITY] {
            assert_eq!(exact_format(&[1.0, bad]), None, "{bad}");
        }
    }

    /// The rounding without a library call agrees with `round_ties_even` then a clamp, and the
    /// bit test for a whole number with its plain definition, over a sweep of f32 bit patterns.
    #[test]
    fn the_integer_roundings_agree_with_the_library_ones() {
        let swept = (0..=u32::MAX).step_by(9_973).map(f32::from_bits);
        let near = (-140_000..140_000).map(|i| i as f32 * 0.25);
        for v in swept.chain(near) {
            for (lo, hi) in [(-128.0f32, 127.0), (-32_768.0, 32_767.0)] {
                let want = v.round_ties_even().clamp(lo, hi) as i32;
                assert_eq!(to_int(v, (lo, hi)), want, "{v:e} in {lo}..={hi}");
            }
            let whole = v.fract() == 0.0 && v.abs() <= 65_535.0 && v.to_bits() != 0x8000_0000;
            assert_eq!(small_whole(v), whole, "{v:e}");
        }
    }

    #[test]
    fn bf16_matches_half_bit_for_bit() {
        let mut x = 0x1234_5678u32;
        let mut specials = vec![
            0.0,
            -0.0,
            1.0,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            specials.push(f32::from_bits(x));
        }
        for v in specials {
            let ours = f32_to_bf16(v);
            let theirs = bf16::from_f32(v).to_bits();
            if v.is_nan() {
                assert!(bf16_to_f32(ours).is_nan());
            } else if v.is_finite() && v.abs() > BF16_MAX {
                // half rounds these to infinity; we saturate.
                assert!(theirs & 0x7FFF == 0x7F80 || theirs & 0x7FFF == 0x7F7F);
                assert_eq!(ours & 0x7FFF, 0x7F7F);
            } else {
                assert_eq!(ours, theirs, "{v:e}");
            }
        }
    }

    #[test]
    fn special_values() {
        for f in [ValueFormat::F16, ValueFormat::Bf16] {
            let v = [
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                0.0,
                -0.0,
                1e30,
                -1e30,
                f32::MAX,
                f32::MIN,
            ];
            let o = round_trip(f, &v);
            assert_eq!(o[0], f32::INFINITY);
            assert_eq!(o[1], f32::NEG_INFINITY);
            assert!(o[2].is_nan());
            assert_eq!(o[3].to_bits(), 0.0f32.to_bits());
            assert_eq!(o[4].to_bits(), (-0.0f32).to_bits());
            let max = if f == ValueFormat::F16 {
                F16_MAX
            } else {
                BF16_MAX
            };
            if f == ValueFormat::F16 {
                assert_eq!(&o[5..], &[max, -max, max, -max]);
            } else {
                assert!(o[5] != max && (o[5] / 1e30 - 1.0).abs() < 1.0 / 256.0);
                assert_eq!(&o[7..], &[max, -max]);
            }
        }
    }

    #[test]
    fn f16_subnormals_and_underflow() {
        let o = round_trip(
            ValueFormat::F16,
            &[1e-5, -3e-6, 2.0f32.powi(-24), 1e-9, -1e-9],
        );
        assert!((o[0] - 1e-5).abs() <= 2.0f32.powi(-25));
        assert!((o[1] + 3e-6).abs() <= 2.0f32.powi(-25));
        assert_eq!(o[2], 2.0f32.powi(-24));
        assert_eq!(o[3].to_bits(), 0.0f32.to_bits());
        assert_eq!(o[4].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn odd_lengths_cross_chunks() {
        for f in [ValueFormat::F32, ValueFormat::F16, ValueFormat::Bf16] {
            for n in [0, 1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
                let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.37 - 11.0).collect();
                let o = round_trip(f, &v);
                assert_eq!(o.len(), n);
            }
        }
    }
}
