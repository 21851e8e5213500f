//! Pulled word-topic rows packed for PCIe about as tightly as the wire carries them: each
//! entry's topic gap Rice coded and its count in 8 or 16 bits, in a bit stream a device thread
//! decodes row by row (`kernels/lda_rows.cuh`'s `lda_rows_scatter_rice`; [`unpack_rice_rows`] is
//! that step on the host). Pure; no I/O.
//!
//! The image is little-endian `u32` words; stream bit `p` is bit `p % 32` of stream word
//! `p / 32`:
//!
//! | words | what |
//! | --- | --- |
//! | `2 x chunks` | per chunk of [`CHUNK`] rows: its first bit in the stream, then `k` (bits 0-4) and its value code (bits 5-6: 0 `u8`, 1 `u16`, 2 `f32` bits) |
//! | `ceil(rows / 2)` or `rows` | each row's bits in the stream, `u16` two to a word (low half first), or `u32` where a row takes 65,536 bits or more ([`RiceShape::wide_lengths`]) |
//! | `stream_words` | the rows' entries, row after row, each its topic gap (the first topic, then topic - previous - 1) Rice coded with the chunk's `k` (`gap >> k` one-bits, a zero, the low `k` bits), then its value in the chunk's width |
//!
//! A chunk's values are counts (whole numbers from 1) in 8 bits when all are at most 255, in 16
//! when at most 65,535, else `f32` bits, so every value comes back bit for bit. Entries whose
//! value is `+0.0` are left out, as the dense scan leaves those cells out. A thread finds its
//! row's first bit from its chunk's first bit and the lengths of the rows before it in the chunk.

use ps_proto::SparseRows;

use super::{is_count, MAX_PACKED_TOPICS};

/// Rows a chunk holds (a warp's).
pub const CHUNK: usize = 32;

/// The shape of a Rice rows image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiceShape {
    pub rows: usize,
    pub entries: usize,
    /// Row lengths as `u32` (else `u16`).
    pub wide_lengths: bool,
    pub stream_words: usize,
}

impl RiceShape {
    pub fn chunks(&self) -> usize {
        self.rows.div_ceil(CHUNK)
    }

    /// Where the row lengths start.
    pub fn lengths_at(&self) -> usize {
        2 * self.chunks()
    }

    /// Where the stream starts.
    pub fn stream_at(&self) -> usize {
        self.lengths_at()
            + if self.wide_lengths {
                self.rows
            } else {
                self.rows.div_ceil(2)
            }
    }

    pub fn words(&self) -> usize {
        self.stream_at() + self.stream_words
    }

    pub fn bytes(&self) -> u64 {
        4 * self.words() as u64
    }
}

/// Bits of a value in each value code.
const VALUE_BITS: [u32; 3] = [8, 16, 32];

/// The value code of one value: 0 for a count up to 255, 1 up to 65,535, else 2 (f32 bits).
fn value_code(v: f32) -> u32 {
    match is_count(v) {
        true if v <= 255.0 => 0,
        true => 1,
        false => 2,
    }
}

/// A value in a chunk's code, as stream bits.
fn value_bits(v: f32, code: u32) -> u64 {
    match code {
        2 => u64::from(v.to_bits()),
        _ => v as u64,
    }
}

/// Bits of `gaps` Rice coded with `k`.
fn rice_bits(gaps: &[(u32, f32)], k: u32) -> u64 {
    gaps.iter()
        .map(|&(g, _)| u64::from(g >> k) + 1 + u64::from(k))
        .sum()
}

/// A Rice parameter that codes `gaps` (whose sum is `sum`) in the fewest bits: the bits are
/// convex in `k`, so a walk from the mean's finds the minimum in a few passes (down while not
/// worse; up while better only where it did not move down).
fn rice_k(gaps: &[(u32, f32)], sum: u64) -> u32 {
    if gaps.is_empty() {
        return 0;
    }
    let mean = sum / gaps.len() as u64;
    let start = (u64::BITS - mean.leading_zeros()).saturating_sub(1).min(31);
    let (mut k, mut at) = (start, rice_bits(gaps, start));
    while k > 0 {
        let left = rice_bits(gaps, k - 1);
        if left > at {
            break;
        }
        (k, at) = (k - 1, left);
    }
    if k == start {
        while k < 31 {
            let right = rice_bits(gaps, k + 1);
            if right >= at {
                break;
            }
            (k, at) = (k + 1, right);
        }
    }
    k
}

/// Appends bits LSB first into `u32` words.
struct Bits<'a> {
    words: &'a mut Vec<u32>,
    acc: u64,
    filled: u32,
    written: u64,
}

impl Bits<'_> {
    fn put(&mut self, v: u64, n: u32) {
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        self.acc |= v << self.filled;
        self.filled += n;
        self.written += u64::from(n);
        if self.filled >= 32 {
            self.words.push(self.acc as u32);
            self.acc >>= 32;
            self.filled -= 32;
        }
    }

    fn rice(&mut self, g: u32, k: u32) {
        let mut q = g >> k;
        while q >= 32 {
            self.put(u64::from(u32::MAX), 32);
            q -= 32;
        }
        self.put((1u64 << q) - 1, q + 1);
        self.put(u64::from(g), k);
    }

    fn finish(self) {
        if self.filled > 0 {
            self.words.push(self.acc as u32);
        }
    }
}

/// The Rice rows image of a run given by its entries (`rows.width` must be `k`, at most
/// [`MAX_PACKED_TOPICS`]; `rows` must have passed [`SparseRows::check`]), into `image`; `None`
/// when it would not be smaller than the run dense, or when a chunk would start past 2^32 bits
/// of stream (the 16-bit image or the dense run then goes).
pub fn pack_rice_rows(rows: SparseRows<'_>, k: usize, image: &mut Vec<u32>) -> Option<RiceShape> {
    if k == 0 || k > MAX_PACKED_TOPICS || rows.width != k {
        return None;
    }
    let n = rows.rows();
    let chunks = n.div_ceil(CHUNK);
    let mut heads: Vec<u32> = Vec::with_capacity(2 * chunks);
    let mut lengths: Vec<u64> = Vec::with_capacity(n);
    let mut stream: Vec<u32> = Vec::with_capacity(rows.entries() / 2 + 1);
    let mut bits = Bits {
        words: &mut stream,
        acc: 0,
        filled: 0,
        written: 0,
    };
    // A chunk's kept entries as (gap, value), and where each of its rows ends among them.
    let (mut kept, mut ends): (Vec<(u32, f32)>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut entries = 0usize;
    for c in 0..chunks {
        let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
        kept.clear();
        ends.clear();
        let (mut code, mut sum) = (0u32, 0u64);
        for r in lo..hi {
            let (at, values) = rows.row(r);
            let mut next = 0u32;
            for (&t, &v) in at.iter().zip(values) {
                if v.to_bits() != 0 {
                    let gap = t - next;
                    kept.push((gap, v));
                    code = code.max(value_code(v));
                    sum += u64::from(gap);
                    next = t + 1;
                }
            }
            ends.push(kept.len());
        }
        let rk = rice_k(&kept, sum);
        heads.push(u32::try_from(bits.written).ok()?);
        heads.push(rk | (code << 5));
        let mut from = 0;
        for &end in &ends {
            let start = bits.written;
            for &(gap, v) in &kept[from..end] {
                bits.rice(gap, rk);
                bits.put(value_bits(v, code), VALUE_BITS[code as usize]);
            }
            lengths.push(bits.written - start);
            from = end;
        }
        entries += kept.len();
    }
    bits.finish();
    let wide_lengths = lengths.iter().any(|&l| l > u64::from(u16::MAX));
    let shape = RiceShape {
        rows: n,
        entries,
        wide_lengths,
        stream_words: stream.len(),
    };
    if shape.bytes() >= 4 * (n * k) as u64 {
        return None;
    }
    image.clear();
    image.reserve(shape.words());
    image.extend(heads);
    if wide_lengths {
        image.extend(
            lengths
                .iter()
                .map(|&l| u32::try_from(l).unwrap_or(u32::MAX)),
        );
    } else {
        let (pairs, last) = lengths.as_chunks::<2>();
        image.extend(pairs.iter().map(|p| p[0] as u32 | (p[1] as u32) << 16));
        image.extend(last.iter().map(|&l| l as u32));
    }
    image.extend(stream);
    Some(shape)
}

/// Reads stream bits: 32 from bit `p` (zeros past the end).
fn read32(stream: &[u32], p: u64) -> u32 {
    let (w, sh) = ((p / 32) as usize, (p % 32) as u32);
    let lo = stream.get(w).copied().unwrap_or(0);
    let hi = stream.get(w + 1).copied().unwrap_or(0);
    if sh == 0 {
        lo
    } else {
        (lo >> sh) | (hi << (32 - sh))
    }
}

/// Writes the Rice rows image `image` (of `shape`) into `dst` (`shape.rows x k` values, which
/// the caller has zeroed), as the device's `lda_rows_scatter_rice` does: row by row, each
/// within its length; an entry whose topic is `k` or more is skipped. A malformed image is an
/// error, never a panic.
pub fn unpack_rice_rows(
    image: &[u32],
    shape: RiceShape,
    k: usize,
    dst: &mut [f32],
) -> Result<(), String> {
    if image.len() < shape.words() || dst.len() != shape.rows * k {
        return Err(format!(
            "an image of {} words for {shape:?}, into {} values",
            image.len(),
            dst.len()
        ));
    }
    let lengths = &image[shape.lengths_at()..shape.stream_at()];
    let length = |r: usize| -> u64 {
        if shape.wide_lengths {
            u64::from(lengths[r])
        } else {
            u64::from((lengths[r / 2] >> (16 * (r % 2))) & 0xffff)
        }
    };
    let stream = &image[shape.stream_at()..shape.words()];
    let end_of_stream = 32 * stream.len() as u64;
    for r in 0..shape.rows {
        let c = r / CHUNK;
        let (first, meta) = (image[2 * c], image[2 * c + 1]);
        let (rk, code) = (meta & 31, (meta >> 5) & 3);
        let vbits = *VALUE_BITS
            .get(code as usize)
            .ok_or_else(|| format!("chunk {c}: value code {code}"))?;
        let mut p = u64::from(first) + (c * CHUNK..r).map(length).sum::<u64>();
        let end = p + length(r);
        if end > end_of_stream {
            return Err(format!("row {r} ends past the stream"));
        }
        let row = &mut dst[r * k..(r + 1) * k];
        let mut topic: Option<u64> = None;
        while p < end {
            let mut q = 0u64;
            loop {
                let ones = read32(stream, p).trailing_ones();
                q += u64::from(ones);
                p += u64::from(ones);
                if ones < 32 || p >= end {
                    break;
                }
            }
            p += 1;
            let mask = if rk == 0 { 0 } else { u32::MAX >> (32 - rk) };
            let g = (q << rk) | u64::from(read32(stream, p) & mask);
            p += u64::from(rk);
            let t = topic.map_or(g, |t| t + 1 + g);
            topic = Some(t);
            let vmask = if vbits == 32 {
                u32::MAX
            } else {
                (1 << vbits) - 1
            };
            let v = read32(stream, p) & vmask;
            p += u64::from(vbits);
            if p > end {
                return Err(format!("row {r}: an entry runs past the row's length"));
            }
            if let Some(cell) = row.get_mut(t as usize) {
                *cell = if code == 2 {
                    f32::from_bits(v)
                } else {
                    v as f32
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_proto::SparseRowsBuf;

    fn rows_of(dense: &[f32], k: usize) -> SparseRowsBuf {
        let mut b = SparseRowsBuf::default();
        b.clear(k);
        dense.chunks_exact(k).for_each(|r| b.push_dense(r));
        b
    }

    fn round_trip(dense: &[f32], k: usize) -> Option<RiceShape> {
        let buf = rows_of(dense, k);
        let mut image = Vec::new();
        let shape = pack_rice_rows(buf.view(), k, &mut image)?;
        assert_eq!(image.len(), shape.words());
        let mut back = vec![0f32; dense.len()];
        unpack_rice_rows(&image, shape, k, &mut back).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(dense), "K {k}: not bit for bit");
        Some(shape)
    }

    #[test]
    fn counts_and_odd_values_come_back_bit_for_bit() {
        let k = 1000;
        let mut dense = vec![0f32; 70 * k];
        for r in 0..70 {
            for j in 0..(r % 9) * 5 {
                dense[r * k + (j * 37 + r) % k] = ((r * j) % 300 + 1) as f32;
            }
        }
        // Chunk 1 (rows 32-63) holds a fraction, -0.0 and NaN; row 64 a large count.
        dense[40 * k + 3] = 2.5;
        dense[41 * k + 999] = -0.0;
        dense[42 * k] = f32::NAN;
        dense[64 * k + 7] = 60_000.0;
        dense[k - 1] = 1.0;
        let shape = round_trip(&dense, k).expect("sparse rows pack");
        let entries = dense.iter().filter(|v| v.to_bits() != 0).count();
        assert_eq!(shape.entries, entries);
        assert!(!shape.wide_lengths);
        // Smaller than the 16-bit image (4 bytes an entry and 4 a row), even with a chunk of
        // f32 values.
        assert!(shape.bytes() < 4 * (entries + 70) as u64, "{shape:?}");
        // Counts up to 255, a few a row, as a K 1,000 model's rows mostly are: under 2 bytes an
        // entry with the lengths and heads.
        let mut small = vec![0f32; 64 * k];
        for r in 0..64 {
            for j in 0..40 {
                small[r * k + (j * 23 + r) % k] = ((r + j) % 40 + 1) as f32;
            }
        }
        let shape = round_trip(&small, k).expect("packs");
        assert!(shape.bytes() < 2 * 64 * 40, "{shape:?}");
    }

    #[test]
    fn every_shape_round_trips_and_dense_runs_do_not_pack() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for k in [1usize, 2, 31, 64, 500] {
            for rows in [1usize, 31, 32, 33, 100] {
                for density in [0u64, 1, 10, 50] {
                    let dense: Vec<f32> = (0..rows * k)
                        .map(|_| match next() % 100 < density {
                            true => (next() % 70_000) as f32,
                            false => 0.0,
                        })
                        .collect();
                    let _ = round_trip(&dense, k);
                }
            }
        }
        // Every cell a fraction (f32 bits and a gap bit each): no smaller than dense.
        let full = vec![0.5f32; 64 * 8];
        assert!(round_trip(&full, 8).is_none());
        // Long rows: lengths as u32 (one row of 65,536 bits or more).
        let k = MAX_PACKED_TOPICS;
        let mut wide = vec![0f32; 2 * k];
        for t in (0..k).step_by(3) {
            wide[t] = 1.0;
        }
        assert!(round_trip(&wide, k).expect("packs").wide_lengths);
    }

    #[test]
    fn malformed_images_are_errors() {
        let k = 50;
        let mut dense = vec![0f32; 40 * k];
        (0..40).for_each(|r| dense[r * k + r] = 3.0);
        let buf = rows_of(&dense, k);
        let mut image = Vec::new();
        let shape = pack_rice_rows(buf.view(), k, &mut image).unwrap();
        let mut dst = vec![0f32; 40 * k];
        assert!(unpack_rice_rows(&image[..shape.words() - 1], shape, k, &mut dst).is_err());
        let mut long = image.clone();
        long[shape.lengths_at()] = 0xffff_ffff;
        assert!(unpack_rice_rows(&long, shape, k, &mut dst).is_err());
        let mut code = image.clone();
        code[1] |= 3 << 5;
        assert!(unpack_rice_rows(&code, shape, k, &mut dst).is_err());
        assert!(unpack_rice_rows(&image, shape, k, &mut dst[1..]).is_err());
    }
}
