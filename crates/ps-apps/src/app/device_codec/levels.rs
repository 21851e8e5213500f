//! Rows of quantized values (a `q8`, `q4`, `q2` or `sign` pull codec's) cross to a device in
//! their codes, about the bytes they took on the wire, and widen there exactly.
//!
//! The host knows pulled rows only as f32 values (the worker library decodes replies into its
//! cache and composes reads from it), so it looks for the codes again: [`level_image`] cuts the
//! values into runs, each of one f32 scale, where every value is `code * scale` bit for bit with
//! an integer code of at most 127 in magnitude. A block-quantized reply's groups (128 values a
//! scale, `ps_proto::codec::quant`) come back as runs. Values that are not such (an f32
//! pull's, or rows holding a worker's own updates) have no image, and the search gives up early
//! on them.
//!
//! The image as it crosses ([`LevelImage::packed`]) is cut into segments, each a stretch of
//! groups of 128 values from its start with a scale each (a run of one scale spanning several
//! groups repeats it): rows of one reply read in order are one segment, so their image costs
//! the wire's bytes (a scale a group and the codes) and 8 bytes more. It holds the segments'
//! first value indices and first scales' indices (u32, little endian), the scales (f32), then
//! the codes packed least-significant bits first in [`LevelImage::bits`] bits each: two's
//! complement in 2, 4 or 8 bits, or one bit where every code is +1 or -1 (set for -1, as the
//! `sign` format). The device's `codec_levels_to_f32` (`kernels/codecs.cu`) widens it as
//! [`LevelImage::widen`] does: `(float)code * scale`, one rounding.

use ps_proto::codec::QUANT_GROUP;

/// Largest code magnitude the search tries (8-bit codes).
const MAX_CODE: i32 = 127;
/// Most values a candidate scale is tried on before the search takes the best so far.
const STRETCH: usize = 256;

/// Quantized values as codes and scales, made only by [`level_image`]: cut into segments
/// (the first at 0, starts ascending), each of groups of [`QUANT_GROUP`] values from its start
/// (the last maybe shorter) with one scale each; `bits` 1, 2, 4 or 8; the codes of every value.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelImage {
    len: usize,
    bits: u32,
    /// Each segment's first value.
    segments: Vec<u32>,
    /// Each segment's first scale (in `scales`).
    bases: Vec<u32>,
    /// A scale a group.
    scales: Vec<f32>,
    codes: Vec<u8>,
}

impl LevelImage {
    /// Values it holds (at least one, fewer than 2^32).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never: an image holds at least one value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bits a code: 1, 2, 4 or 8.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Segments (at least one): one where the rows are a reply's, read in order.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Scales: one a group of each segment.
    pub fn scale_count(&self) -> usize {
        self.scales.len()
    }

    /// Bytes of [`LevelImage::packed`]: 8 a segment, 4 a group, and the codes.
    pub fn bytes(&self) -> usize {
        8 * self.segments.len() + 4 * self.scales.len() + self.codes.len()
    }

    /// The image as it crosses: the segments' starts (u32, little endian), their first scales'
    /// indices (u32), the scales (f32), then the codes.
    pub fn packed(&self) -> Vec<u8> {
        let mut out = vec![0; self.bytes()];
        self.write_packed(&mut out);
        out
    }

    /// Writes [`LevelImage::packed`] into the first [`LevelImage::bytes`] of `out` (a staging
    /// buffer at least that long).
    pub fn write_packed(&self, out: &mut [u8]) {
        let n = self.segments.len();
        let (starts, rest) = out.split_at_mut(4 * n);
        let (bases, rest) = rest.split_at_mut(4 * n);
        let (scales, codes) = rest.split_at_mut(4 * self.scales.len());
        let words = [(starts, &self.segments), (bases, &self.bases)];
        for (o, v) in words {
            for (o, x) in o.chunks_exact_mut(4).zip(v) {
                o.copy_from_slice(&x.to_le_bytes());
            }
        }
        for (o, x) in scales.chunks_exact_mut(4).zip(&self.scales) {
            o.copy_from_slice(&x.to_le_bytes());
        }
        codes[..self.codes.len()].copy_from_slice(&self.codes);
    }

    /// Value `i`'s code.
    pub fn code(&self, i: usize) -> i32 {
        let at = i * self.bits as usize;
        let raw = u32::from(self.codes[at / 8] >> (at % 8)) & ((1 << self.bits) - 1);
        match self.bits {
            1 => 1 - 2 * raw as i32,
            b if raw >> (b - 1) != 0 => raw as i32 - (1 << b),
            _ => raw as i32,
        }
    }

    /// The values, as the device widens them: value `i` of a segment opening at `s` with its
    /// first scale at `b` is `code(i) * scales[b + (i - s) / 128]`.
    pub fn widen(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len);
        for (j, (&start, &base)) in self.segments.iter().zip(&self.bases).enumerate() {
            let end = self.segments.get(j + 1).map_or(self.len, |&e| e as usize);
            for i in start as usize..end {
                let scale = self.scales[base as usize + (i - start as usize) / QUANT_GROUP];
                out.push(self.code(i) as f32 * scale);
            }
        }
        out
    }
}

/// The segments of runs of one scale (`starts`, `scales`) over `len` values: a segment goes on
/// while each run opens on one of its groups, and each group takes the scale of its run.
fn segments(starts: &[u32], scales: &[f32], len: usize) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let (mut segs, mut bases, mut groups) = (Vec::new(), Vec::new(), Vec::new());
    let mut open = 0usize;
    for (r, (&t, &scale)) in starts.iter().zip(scales).enumerate() {
        let t = t as usize;
        if segs.is_empty() || !(t - open).is_multiple_of(QUANT_GROUP) {
            segs.push(t as u32);
            bases.push(groups.len() as u32);
            open = t;
        }
        let end = starts.get(r + 1).map_or(len, |&e| e as usize);
        let first = bases[bases.len() - 1] as usize + (t - open) / QUANT_GROUP;
        let last = bases[bases.len() - 1] as usize + (end - open).div_ceil(QUANT_GROUP);
        debug_assert_eq!(groups.len(), first);
        groups.resize(last, scale);
    }
    (segs, bases, groups)
}

/// A scale and its reciprocal: a value's code is found by a product (the nearest integer to it
/// is the code wherever one exists: the product is within a rounding or two of it), and checked
/// by the product the device makes, `code * scale`.
#[derive(Debug, Clone, Copy)]
struct Scale {
    scale: f32,
    inverse: f32,
}

impl Scale {
    fn new(scale: f32) -> Scale {
        Scale {
            scale,
            inverse: if scale == 0.0 { 0.0 } else { 1.0 / scale },
        }
    }

    /// The code of `v`, when `code * scale` is `v` bit for bit. A scale of 0 holds only zeros:
    /// +0.0 as 0, -0.0 as -1.
    #[inline]
    fn code(self, v: f32) -> Option<i32> {
        if self.scale == 0.0 {
            return match v.to_bits() {
                0 => Some(0),
                0x8000_0000 => Some(-1),
                _ => None,
            };
        }
        let (c, holds) = self.try_code(v);
        holds.then_some(c)
    }

    /// The nearest code to `v` (within ±127) and whether `code * scale` is `v` bit for bit,
    /// without branches, so that loops over many values run several at once. For a scale
    /// above 0.
    #[inline(always)]
    fn try_code(self, v: f32) -> (i32, bool) {
        // Rounded without a library call: adding and taking away 1.5 * 2^23 leaves no bits
        // below the point. Clamped short of 127.5, so no code passes 127; NaN gives code 0.
        const ROUND: f32 = 12_582_912.0;
        const MOST: f32 = MAX_CODE as f32 + 0.25;
        let q = (v * self.inverse).clamp(-MOST, MOST);
        let c = ((q + ROUND) - ROUND) as i32;
        (c, (c as f32 * self.scale).to_bits() == v.to_bits())
    }

    /// How many of `values` from the first hold a code.
    fn stretch(self, values: &[f32]) -> usize {
        values
            .iter()
            .take_while(|&&v| self.code(v).is_some())
            .count()
    }

    /// Appends the codes of `values` from the first while they hold; how many did.
    fn fit(self, values: &[f32], codes: &mut Vec<i32>) -> usize {
        if self.scale == 0.0 {
            let n = self.stretch(values);
            codes.extend(values[..n].iter().filter_map(|&v| self.code(v)));
            return n;
        }
        let (head, rest) = values.split_at(values.len().min(8));
        let n = self.stretch(head);
        if n < head.len() {
            codes.extend(head[..n].iter().map(|&v| self.try_code(v).0));
            return n;
        }
        codes.extend(head.iter().map(|&v| self.try_code(v).0));
        let start = codes.len();
        codes.resize(start + rest.len(), 0);
        let mut all = true;
        for (&v, c) in rest.iter().zip(&mut codes[start..]) {
            let (code, holds) = self.try_code(v);
            *c = code;
            all &= holds;
        }
        if all {
            return values.len();
        }
        let n = self.stretch(rest);
        codes.truncate(start + n);
        head.len() + n
    }
}

/// The scales at which `c` is the code of `m`: of `m / c` and the f32 values either side
/// (where the division rounded), the positive finite ones whose product with `c` is `m`.
fn candidates(m: f32, c: i32) -> impl Iterator<Item = Scale> {
    let s = m / c as f32;
    [s, s.next_down(), s.next_up()]
        .into_iter()
        .filter(move |s| *s > 0.0 && s.is_finite() && c as f32 * s == m)
        .map(Scale::new)
}

/// The scale a quantized group opening at `values[0]` would have, where it holds the whole
/// group ([`QUANT_GROUP`] values, or fewer at the end), whose codes it then appends: the
/// group's largest magnitude over the largest code of `sign` or `q2` (1), `q4` (7) or `q8`
/// (127). Runs found so end where groups do, so the next one opens a group too.
fn group_scale(values: &[f32], codes: &mut Vec<i32>) -> Option<Scale> {
    let group = &values[..values.len().min(QUANT_GROUP)];
    if !group.iter().all(|v| v.is_finite()) {
        return None;
    }
    let m = group.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mark = codes.len();
    for c in [1, 7, MAX_CODE] {
        for s in candidates(m, c) {
            if s.fit(group, codes) == group.len() {
                return Some(s);
            }
            codes.truncate(mark);
        }
    }
    None
}

/// The scale that holds the longest run from `values[0]`, tried up to [`STRETCH`] values (ties:
/// the smaller code for the pivot, fewer bits), or `None` where none holds `values[0]`. The
/// candidates are the first nonzero value's magnitude over each code 1 to 127 ([`candidates`]),
/// and 0 where the run opens with a zero.
fn searched_scale(values: &[f32]) -> Option<Scale> {
    let window = &values[..values.len().min(STRETCH)];
    let first = *window.first()?;
    if !first.is_finite() {
        return None;
    }
    let mut best = (0usize, Scale::new(0.0));
    if first == 0.0 {
        best.0 = best.1.stretch(window);
    }
    let pivot = window
        .iter()
        .take_while(|v| v.is_finite())
        .find(|&&v| v != 0.0);
    if let Some(&p) = pivot {
        let m = p.abs();
        'codes: for c in 1..=MAX_CODE {
            for scale in candidates(m, c) {
                let n = scale.stretch(window);
                if n > best.0 {
                    best = (n, scale);
                    if n == window.len() {
                        break 'codes;
                    }
                }
            }
        }
    }
    (best.0 > 0).then_some(best.1)
}

/// The runs and codes of `values` (see [`level_image`]), found from the first value on.
fn runs_of(values: &[f32]) -> Option<Runs> {
    let mut starts = Vec::new();
    let mut scales = Vec::new();
    let mut codes = Vec::with_capacity(values.len());
    let mut scale: Option<Scale> = None;
    let mut i = 0;
    while i < values.len() {
        let rest = &values[i..];
        // The run's scale a group at a time from where the run opened: a group it does not
        // hold whole may be a new group opening here (its first values, zeros say, may hold
        // at either scale).
        let chunk = &rest[..rest.len().min(QUANT_GROUP)];
        let mark = codes.len();
        if let Some(s) = scale {
            if s.fit(chunk, &mut codes) == chunk.len() {
                i += chunk.len();
                continue;
            }
            codes.truncate(mark);
        }
        let (s, taken) = match group_scale(rest, &mut codes) {
            Some(s) => (s, chunk.len()),
            None => {
                // The run goes on as far as it holds; where it stops, a group may open, else
                // a run found by search opens there (its scale holds that value: the next fit
                // takes it).
                let held = scale.map_or(0, |s| s.fit(chunk, &mut codes));
                i += held;
                let rest = &values[i..];
                let group = if held > 0 {
                    group_scale(rest, &mut codes)
                } else {
                    None
                };
                match group {
                    Some(s) => (s, rest.len().min(QUANT_GROUP)),
                    None => (searched_scale(rest)?, 0),
                }
            }
        };
        starts.push(i as u32);
        scales.push(s.scale);
        if 8 * starts.len() > i / 4 + 64 {
            return None;
        }
        scale = Some(s);
        i += taken;
    }
    Some(Runs {
        starts,
        scales,
        codes,
    })
}

/// Runs of one scale over some values, and every value's code.
struct Runs {
    starts: Vec<u32>,
    scales: Vec<f32>,
    codes: Vec<i32>,
}

/// Values a load holds before its image is found in parts on several threads.
const PARALLEL_FROM: usize = 1 << 18;
/// Values a part (a whole number of groups, so that a reply's groups stay whole).
const PART: usize = 1 << 16;

/// The codes image of `values`, or `None` where some value is not `code * scale` in a run of
/// its own scale, or where runs come so short (more than 8 bytes a run would be about two bits
/// a value beside the codes) that they are no quantized reply's (the search stops there, so
/// rows of plain f32 values cost little). Empty values have none.
///
/// From [`PARALLEL_FROM`] values on, the runs are found in parts of [`PART`] values on the
/// machine's threads (the first part alone first: plain f32 values stop there), each part's
/// runs opening afresh at its start; the image is the same whatever the number of threads.
pub fn level_image(values: &[f32]) -> Option<LevelImage> {
    let n = values.len();
    if n == 0 || n > u32::MAX as usize {
        return None;
    }
    let mut parts = vec![runs_of(&values[..n.min(PART)])?];
    if n > PART {
        let part = |p: usize| runs_of(&values[p * PART..n.min((p + 1) * PART)]);
        let threads = if n >= PARALLEL_FROM {
            crate::par::threads()
        } else {
            1
        };
        let rest = crate::par::map(n.div_ceil(PART) - 1, threads, |p| part(p + 1));
        for r in rest {
            parts.push(r?);
        }
    }
    let mut all = Runs {
        starts: Vec::new(),
        scales: Vec::new(),
        codes: Vec::with_capacity(n),
    };
    for (p, part) in parts.into_iter().enumerate() {
        let at = (p * PART) as u32;
        all.starts.extend(part.starts.iter().map(|s| s + at));
        all.scales.extend(part.scales);
        all.codes.extend(part.codes);
    }
    let Runs {
        starts,
        scales,
        codes,
    } = all;
    let max = codes.iter().map(|c| c.abs()).max().unwrap_or(0);
    let bits = match max {
        1 if !codes.contains(&0) => 1,
        0 | 1 => 2,
        2..=7 => 4,
        _ => 8,
    };
    debug_assert_eq!(codes.len(), values.len());
    let (segments, bases, scales) = segments(&starts, &scales, values.len());
    Some(LevelImage {
        len: values.len(),
        bits,
        segments,
        bases,
        scales,
        codes: pack(&codes, bits),
    })
}

/// `codes` in `bits` bits each, least-significant bits first (one bit: set for -1).
fn pack(codes: &[i32], bits: u32) -> Vec<u8> {
    if bits == 8 {
        return codes.iter().map(|&c| c as u8).collect();
    }
    let mask = (1u32 << bits) - 1;
    let raw = |c: i32| {
        if bits == 1 {
            u32::from(c < 0)
        } else {
            c as u32 & mask
        }
    };
    codes
        .chunks(8 / bits as usize)
        .map(|byte| {
            byte.iter()
                .enumerate()
                .fold(0u32, |acc, (j, &c)| acc | raw(c) << (j as u32 * bits)) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_proto::codec::ValueFormat;

    /// `values` through `format` and back, as a pull reply of them decodes.
    fn pulled(format: ValueFormat, values: &[f32]) -> Vec<f32> {
        format.round_trip(values)
    }

    fn assert_exact(image: &LevelImage, values: &[f32]) {
        let back: Vec<u32> = image.widen().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        assert_eq!(back, want);
        assert_eq!(image.packed().len(), image.bytes());
    }

    fn smooth(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn quantized_pulls_cross_in_about_their_wire_bytes() {
        let values = smooth(1000 * 16, 7);
        for (format, bits) in [
            (ValueFormat::Q8, 8),
            (ValueFormat::Q4, 4),
            (ValueFormat::Q2, 2),
            (ValueFormat::Sign, 1),
        ] {
            let rows = pulled(format, &values);
            let image = level_image(&rows).unwrap_or_else(|| panic!("{format:?}"));
            assert_exact(&image, &rows);
            assert_eq!(image.bits, bits, "{format:?}");
            // One segment, a scale a group of 128: the wire's bytes and 8 more.
            assert_eq!(image.segments(), 1, "{format:?}");
            assert_eq!(image.scale_count(), values.len().div_ceil(128));
            assert_eq!(image.bytes(), format.encoded_len(values.len()) + 8);
        }
    }

    #[test]
    fn large_reads_are_found_in_parts_alike() {
        // Past PARALLEL_FROM: parts of PART values found on threads. One reply read in order
        // stays one segment across the parts; a read that opens mid-group is exact too.
        let one = pulled(ValueFormat::Q4, &smooth(300_000, 21));
        let image = level_image(&one).unwrap();
        assert_exact(&image, &one);
        assert_eq!(image.segments(), 1);
        assert_eq!(image.bytes(), ValueFormat::Q4.encoded_len(one.len()) + 8);
        let mut two = pulled(ValueFormat::Q8, &smooth(1_000, 22));
        two.extend(pulled(ValueFormat::Q8, &smooth(299_000, 23)));
        let image = level_image(&two).unwrap();
        assert_exact(&image, &two);
        // A later part of plain values: no image.
        let mut late = one.clone();
        late[200_000..270_000].copy_from_slice(&smooth(70_000, 24));
        assert!(level_image(&late).is_none());
    }

    #[test]
    fn runs_stay_on_group_boundaries_when_groups_open_with_zeros() {
        // Every group of a ternary reply opens with zeros, which the previous group's scale
        // holds too: each run still opens where its group does, so the rows are one segment.
        let mut values = smooth(128 * 40, 11);
        for g in values.chunks_mut(128) {
            g[..5].fill(0.0);
        }
        for format in [ValueFormat::Q2, ValueFormat::Q4, ValueFormat::Q8] {
            let rows = pulled(format, &values);
            let image = level_image(&rows).unwrap();
            assert_exact(&image, &rows);
            assert_eq!(
                (image.segments(), image.scale_count()),
                (1, 40),
                "{format:?}"
            );
        }
    }

    #[test]
    fn rows_read_in_parts_and_from_several_replies_keep_an_image() {
        // Two replies' rows side by side, the second cut mid-group, and zero rows among them.
        let mut rows = pulled(ValueFormat::Q8, &smooth(300, 1));
        rows.extend(pulled(ValueFormat::Q8, &smooth(77, 2)));
        rows.extend([0.0; 40]);
        rows.extend(pulled(ValueFormat::Q8, &smooth(500, 3)));
        let image = level_image(&rows).unwrap();
        assert_exact(&image, &rows);
        assert_eq!(image.bits, 8);
        // A segment a reply, the first two where their rows open (the third reply's first
        // group here has the second's scale, which the zeros hold too).
        assert_eq!(image.segments.len(), 3);
        assert_eq!(image.segments[..2], [0, 300]);
        // Only zeros: 2 bits each, one segment.
        let zeros = level_image(&[0.0; 100]).unwrap();
        assert_exact(&zeros, &[0.0; 100]);
        assert_eq!(
            (zeros.bits, zeros.segments(), zeros.scale_count()),
            (2, 1, 1)
        );
        // -0.0 only at a scale of 0.
        let signed = [0.0f32, -0.0, -0.0, 0.0];
        assert_exact(&level_image(&signed).unwrap(), &signed);
        // Small integers: 4-bit codes of one scale.
        let ints: Vec<f32> = (0..64).map(|i| ((i * 5) % 15) as f32 - 7.0).collect();
        let image = level_image(&ints).unwrap();
        assert_exact(&image, &ints);
        assert_eq!(
            (image.bits, image.segments(), image.scale_count()),
            (4, 1, 1)
        );
    }

    #[test]
    fn plain_values_have_none() {
        assert_eq!(level_image(&[]), None);
        assert_eq!(level_image(&smooth(10_000, 9)), None);
        let f16: Vec<f32> = smooth(4000, 4)
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        assert_eq!(level_image(&f16), None);
        // A quantized row holding a worker's own small update.
        let mut rows = pulled(ValueFormat::Q8, &smooth(4096, 5));
        for (i, v) in rows.iter_mut().enumerate() {
            *v += 1e-4 * (i % 3) as f32;
        }
        assert_eq!(level_image(&rows), None);
        for bad in [f32::NAN, f32::INFINITY] {
            let mut rows = pulled(ValueFormat::Q8, &smooth(256, 6));
            rows[200] = bad;
            assert_eq!(level_image(&rows), None);
        }
    }
}
