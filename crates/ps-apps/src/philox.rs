//! Philox-4x32-10, the counter-based random number generator of J. K. Salmon, M. A. Moraes,
//! R. O. Dror and D. E. Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC'11; the
//! Random123 library), as a pure function of a 128-bit counter and a 64-bit key.
//!
//! `kernels/philox.cuh` is the same function in CUDA C, and the kernel `rng_philox_uniforms`
//! (`kernels/rng.cu`) fills a buffer with [`uniform`]'s values: host and device give the same
//! bits for the same `(seed, stream, index)`, so a GPU engine can draw the random numbers a CPU
//! engine draws, with no uniforms shipped from the host. worker-gpu's conformance case `rng`
//! checks the two halves against each other; the unit tests here check the host half against
//! Random123's published known answers.
//!
//! The uniform stream, in full (the device half follows it word for word):
//! - the key is the seed, low word first: `[seed as u32, (seed >> 32) as u32]`;
//! - index `i` lies in Philox block `b = i / 4`, word `i % 4`; the block's counter is
//!   `[b as u32, (b >> 32) as u32, stream, 0]`;
//! - the word `x` becomes `(x >> 8) as f32 * 2^-24`: its top 24 bits, a multiple of 2^-24 in
//!   [0, 1 - 2^-24], exact in f32, so no rounding can differ between the two sides.

/// The multipliers of the two Philox S-boxes (Random123's `PHILOX_M4x32_0` / `_1`).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
/// The Weyl increments of the key between rounds (golden ratio and sqrt(3) - 1, as 32-bit
/// fractions; Random123's `PHILOX_W32_0` / `_1`).
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// 2^-24: the spacing of the uniforms.
pub const UNIFORM_STEP: f32 = 1.0 / 16_777_216.0;

/// The high and low words of the 64-bit product.
#[inline]
fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// One Philox round: two multiplications, the high halves mixed with the other words and the
/// key, the words permuted.
#[inline]
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mul_hi_lo(M0, c[0]);
    let (hi1, lo1) = mul_hi_lo(M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// Philox-4x32 with 10 rounds: the block of four 32-bit words for `counter` under `key`
/// (Random123's `philox4x32(ctr, key)`; the key is bumped by the Weyl increments before every
/// round but the first).
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = round(counter, key);
    let mut k = key;
    for _ in 1..10 {
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        c = round(c, k);
    }
    c
}

/// A 32-bit word as a uniform in [0, 1): its top 24 bits times 2^-24 (exact in f32).
#[inline]
pub fn unit_f32(x: u32) -> f32 {
    (x >> 8) as f32 * UNIFORM_STEP
}

/// The Philox block that holds uniform `block * 4 ..= block * 4 + 3` of stream `stream` under
/// `seed` (see the module's description of the stream).
#[inline]
pub fn block(seed: u64, stream: u32, block: u64) -> [u32; 4] {
    philox4x32_10(
        [block as u32, (block >> 32) as u32, stream, 0],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// Uniform number `index` in [0, 1) of stream `stream` (e.g. a clock or a sweep) under `seed`:
/// word `index % 4` of Philox block `index / 4`, its top 24 bits times 2^-24. A pure function:
/// any index, in any order, on the host or on the device (`rng_philox_uniforms`), gives the same
/// bits.
pub fn uniform(seed: u64, stream: u32, index: u64) -> f32 {
    unit_f32(block(seed, stream, index / 4)[(index % 4) as usize])
}

/// `out[j] = uniform(seed, stream, first_index + j)`, computing each Philox block once.
///
/// # Panics
/// When `first_index + out.len()` overflows u64 (the stream has 2^64 indices).
pub fn fill_uniforms(seed: u64, stream: u32, first_index: u64, out: &mut [f32]) {
    first_index
        .checked_add(out.len() as u64)
        .expect("philox::fill_uniforms: the indices pass 2^64");
    let mut j = 0;
    while j < out.len() {
        let i = first_index + j as u64;
        let words = block(seed, stream, i / 4);
        let start = (i % 4) as usize;
        for &w in &words[start..] {
            if j == out.len() {
                break;
            }
            out[j] = unit_f32(w);
            j += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers of Philox-4x32-10: (counter, key, expected block).
    ///
    /// The first three are the `philox4x32 10` rows of Random123's `tests/kat_vectors`
    /// (D. E. Shaw Research, Random123 1.x; all zeros, all ones, and the hexadecimal digits of
    /// pi); Boost.Random's Random123 port checks the same three rows. The last three are
    /// `philox4x32 10` rows of the longer `examples/kat_vectors` table of the Random123
    /// distribution (as mirrored in github.com/girving/random123-manual), which set single key
    /// and counter bits.
    const KAT: &[([u32; 4], [u32; 2], [u32; 4])] = &[
        (
            [0, 0, 0, 0],
            [0, 0],
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
        ),
        (
            [0xffff_ffff; 4],
            [0xffff_ffff; 2],
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
        ),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0],
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
        ),
        (
            [1, 0, 0, 0],
            [1, 0],
            [0xac08_141b, 0xdfc5_ccbe, 0x79c0_7a47, 0xa7f6_6093],
        ),
        (
            [0, 0, 0, 0xffff_ffff],
            [0, 1],
            [0x3624_1728, 0x4d42_c858, 0xfea7_37d6, 0x49f4_0347],
        ),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0, 0x8000_0000],
            [0x6367_5d2c, 0x422d_7c4d, 0x3145_d30d, 0x3bce_33a4],
        ),
    ];

    #[test]
    fn matches_the_random123_known_answers() {
        for &(counter, key, expected) in KAT {
            assert_eq!(
                philox4x32_10(counter, key),
                expected,
                "counter {counter:08x?} key {key:08x?}"
            );
        }
    }

    #[test]
    fn uniforms_are_the_blocks_words_in_order() {
        let seed = 0x0123_4567_89ab_cdef;
        for (stream, b) in [
            (0u32, 0u64),
            (7, 1),
            (3, (1 << 32) + 5),
            (u32::MAX, u64::MAX / 4),
        ] {
            let words = philox4x32_10(
                [b as u32, (b >> 32) as u32, stream, 0],
                [0x89ab_cdef, 0x0123_4567],
            );
            for (w, &x) in words.iter().enumerate() {
                let u = uniform(seed, stream, b * 4 + w as u64);
                assert_eq!(u.to_bits(), unit_f32(x).to_bits());
                assert_eq!(u, (x >> 8) as f32 / 16_777_216.0);
            }
        }
    }

    #[test]
    fn unit_floats_are_exact_and_below_one() {
        assert_eq!(unit_f32(0), 0.0);
        assert_eq!(unit_f32(0xff), 0.0);
        assert_eq!(unit_f32(0x100), UNIFORM_STEP);
        assert_eq!(unit_f32(0x8000_0000), 0.5);
        let top = unit_f32(u32::MAX);
        assert!(top < 1.0);
        assert_eq!(f64::from(top), 1.0 - 2f64.powi(-24));
    }

    #[test]
    fn fill_agrees_with_single_draws_at_any_alignment() {
        let (seed, stream) = (42, 9);
        for first in [0u64, 1, 2, 3, 5, (1 << 32) - 2, (1 << 34) + 3, u64::MAX - 9] {
            for len in [0usize, 1, 3, 4, 9] {
                let mut out = vec![f32::NAN; len];
                fill_uniforms(seed, stream, first, &mut out);
                for (j, &u) in out.iter().enumerate() {
                    assert_eq!(
                        u.to_bits(),
                        uniform(seed, stream, first + j as u64).to_bits()
                    );
                }
            }
        }
    }

    #[test]
    fn streams_seeds_and_indices_differ_and_look_uniform() {
        let mut a = vec![0.0; 4096];
        fill_uniforms(1, 0, 0, &mut a);
        let mean = a.iter().map(|&u| f64::from(u)).sum::<f64>() / a.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mut b = vec![0.0; 4096];
        fill_uniforms(1, 1, 0, &mut b);
        assert_ne!(a, b, "streams");
        fill_uniforms(2, 0, 0, &mut b);
        assert_ne!(a, b, "seeds");
        // Seeds differing only in the high word give different streams too.
        assert_ne!(uniform(1, 0, 0), uniform(1 | (1 << 32), 0, 0));
        // Indices 2^32 apart are in different blocks.
        assert_ne!(uniform(1, 0, 3), uniform(1, 0, 3 + (1 << 34)));
    }

    #[test]
    #[should_panic(expected = "2^64")]
    fn fill_past_the_end_of_the_stream_panics() {
        fill_uniforms(0, 0, u64::MAX - 1, &mut [0.0; 4]);
    }
}
