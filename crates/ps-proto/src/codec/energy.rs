//! The energy count (`Selector::Energy(E)`): how many of a block's largest magnitudes together
//! hold a fraction `E` of its energy. Pure; no I/O.
//!
//! An entry's energy is its square relative to the block's largest magnitude, in integers, so
//! that a total summed in any order is the same number: a device adding a block's energies with
//! atomics (`kernels/codec_energy.cu`) finds the count the host does, bit for bit. For a
//! finite magnitude `s * 2^(b - 150)` (`s` its 24-bit significand with the implicit bit, `b`
//! its biased exponent; 1 and no implicit bit for a subnormal) in a block whose largest
//! magnitude has exponent `B`, the energy is `floor(s^2 / 2^(16 + 2 (B - b)))`: below 2^32, so
//! the total of a block of fewer than 2^32 entries fits in a u64. That is the square scaled by
//! `2^(284 - 2B)` and truncated: each within about 2^-30 of the largest entry's square, and an
//! entry below about 2^-15.5 of the largest magnitude counts for nothing (so is never needed
//! to reach `E`: `energy:1` keeps every entry that counts).
//!
//! The count is the fewest entries of largest magnitude whose energies reach
//! `goal = min(ceil(E * total), total)` (the product in f64, rounded to nearest; a device
//! computes it the same way): every entry when one is not finite (so divergence shows), none
//! when the total is 0 (every entry zero, or smaller than about 1e-43).

/// Significand and biased exponent of finite magnitude bits (sign cleared): the value is
/// `sig * 2^(exp - 150)`.
#[inline(always)]
fn split(m: u32) -> (u64, u32) {
    let exp = m >> 23;
    let frac = u64::from(m & 0x7f_ffff);
    if exp == 0 {
        (frac, 1)
    } else {
        (frac | 0x80_0000, exp)
    }
}

/// The energy of an entry of magnitude bits `m` (sign cleared, finite) in a block whose largest
/// magnitude bits are `top >= m` (see the module docs).
#[inline(always)]
pub fn energy_weight(m: u32, top: u32) -> u64 {
    let (sig, exp) = split(m);
    let (_, top_exp) = split(top);
    let shift = 16 + 2 * top_exp.saturating_sub(exp);
    if shift >= 64 {
        0
    } else {
        (sig * sig) >> shift
    }
}

/// The energy the kept entries must reach: `min(ceil(e * total), total)`, the product in f64.
pub fn energy_goal(e: f32, total: u64) -> u64 {
    let t = total as f64;
    let g = (f64::from(e) * t).ceil();
    if g >= t {
        total
    } else {
        g as u64
    }
}

/// How many entries `Selector::Energy(e)` keeps of `values` (of `subset`, when given): see the
/// module docs.
pub fn k_of_energy(values: &[f32], subset: Option<&[u32]>, e: f32) -> usize {
    let mut mags: Vec<u32> = match subset {
        Some(s) => s
            .iter()
            .map(|&i| values[i as usize].to_bits() & 0x7fff_ffff)
            .collect(),
        None => values.iter().map(|v| v.to_bits() & 0x7fff_ffff).collect(),
    };
    let top = mags.iter().copied().max().unwrap_or(0);
    if top >= 0x7f80_0000 {
        return mags.len();
    }
    let total: u64 = mags.iter().map(|&m| energy_weight(m, top)).sum();
    if total == 0 {
        return 0;
    }
    let goal = energy_goal(e, total);
    // Energies grow with the magnitude: the largest magnitudes first.
    mags.sort_unstable_by(|a, b| b.cmp(a));
    let mut acc = 0u64;
    for (i, &m) in mags.iter().enumerate() {
        acc += energy_weight(m, top);
        if acc >= goal {
            return i + 1;
        }
    }
    mags.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_energy_count_is_the_fewest_entries_reaching_the_fraction() {
        // Squares 16, 9, 1: total 26 (exactly, in the energies' scale: 3, 4 and 1 share few
        // binades, and 1's square is not truncated to 0).
        let v = [3.0f32, -4.0, 1.0];
        assert_eq!(k_of_energy(&v, None, 0.5), 1, "16 >= 13");
        assert_eq!(k_of_energy(&v, None, 0.7), 2, "16 < 18.2 <= 25");
        assert_eq!(k_of_energy(&v, None, 1.0), 3);
        assert_eq!(k_of_energy(&v, Some(&[0, 2]), 0.95), 2, "9 < 9.5 of 10");
        assert_eq!(k_of_energy(&[0.0, -0.0], None, 0.5), 0, "nothing to send");
        assert_eq!(
            k_of_energy(&[1.0, f32::NAN, 0.0], None, 0.1),
            3,
            "all when not finite"
        );
        assert_eq!(
            k_of_energy(&[1.0, 0.0, f32::NEG_INFINITY], None, 0.1),
            3,
            "all when infinite"
        );
        assert_eq!(k_of_energy(&[], None, 0.5), 0);
    }

    #[test]
    fn energies_are_squares_in_the_largest_entrys_scale() {
        let m = |v: f32| v.to_bits() & 0x7fff_ffff;
        // 1.0 is 2^23 * 2^-23: its square 2^46, shifted by 16.
        assert_eq!(energy_weight(m(1.0), m(1.0)), 1 << 30);
        assert_eq!(energy_weight(m(1.0), m(1.5)), 1 << 30, "same binade");
        assert_eq!(
            energy_weight(m(1.0), m(2.0)),
            1 << 28,
            "one binade up: a quarter"
        );
        assert_eq!(energy_weight(m(1.5), m(1.5)), (3u64 << 22).pow(2) >> 16);
        assert_eq!(energy_weight(0, m(1.0)), 0);
        assert_eq!(energy_weight(m(1.0), m(2f32.powi(40))), 0, "far below");
        // The largest square, below 2^32.
        assert!(energy_weight(m(f32::MAX), m(f32::MAX)) < 1 << 32);
        // Subnormals: the block's top one sets the scale.
        let tiny = f32::from_bits(1 << 20);
        assert_eq!(energy_weight(1 << 20, 1 << 20), (1u64 << 40) >> 16);
        assert_eq!(k_of_energy(&[tiny, 0.0], None, 1.0), 1);
        assert_eq!(
            k_of_energy(&[f32::from_bits(3), f32::from_bits(1)], None, 1.0),
            0,
            "too small to count"
        );
    }

    #[test]
    fn the_goal_is_the_rounded_up_fraction_of_the_total() {
        assert_eq!(energy_goal(0.5, 26), 13);
        assert_eq!(energy_goal(0.7, 26), 19, "18.2 rounds up");
        assert_eq!(energy_goal(1.0, u64::MAX), u64::MAX);
        assert_eq!(energy_goal(f32::from_bits(1), 5), 1, "at least one");
        assert_eq!(
            energy_goal(0.999_999_9, 10),
            10,
            "9.999999 rounds up to the total"
        );
    }

    /// The count against its definition, by brute force over prefixes of the sorted block, with
    /// the energies summed in another order.
    #[test]
    fn the_count_is_its_definition_on_random_blocks() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for case in 0..300 {
            let n = 1 + (next() % 200) as usize;
            let v: Vec<f32> = (0..n)
                .map(|_| {
                    let r = next();
                    let mag = (r % 1000) as f32 / 100.0 * 2f32.powi((r >> 20) as i32 % 12 - 6);
                    if case % 5 == 0 {
                        (r % 4) as f32 // many ties
                    } else if r & 1 == 0 {
                        -mag
                    } else {
                        mag
                    }
                })
                .collect();
            let e = [0.1f32, 0.4, 0.45, 0.9, 1.0][case % 5];
            let k = k_of_energy(&v, None, e);
            let top = v.iter().map(|x| x.to_bits() & 0x7fff_ffff).max().unwrap();
            let w = |x: f32| energy_weight(x.to_bits() & 0x7fff_ffff, top);
            let total: u64 = v.iter().rev().map(|&x| w(x)).sum();
            if total == 0 {
                assert_eq!(k, 0);
                continue;
            }
            let goal = energy_goal(e, total);
            let mut sorted: Vec<u64> = v.iter().map(|&x| w(x)).collect();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let kept: u64 = sorted[..k].iter().sum();
            assert!(kept >= goal, "case {case}: {kept} < {goal}");
            let fewer: u64 = sorted[..k - 1].iter().sum();
            assert!(fewer < goal, "case {case}: {} entries would do", k - 1);
        }
    }
}
