//! Seeded initialisers. A value depends only on (seed, table, row, column), never on which shard
//! holds the row, so changing the number of shards does not change the model.

use crate::control::Init;

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform in (0, 1), from 53 random bits.
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

fn hash(seed: u64, table: u32, row: u64, col: u32) -> u64 {
    let a = splitmix64(seed ^ ((table as u64) << 32));
    let b = splitmix64(a ^ row);
    splitmix64(b ^ (col as u64).wrapping_mul(0x2545_f491_4f6c_dd1d))
}

/// The initial value of one cell.
pub fn value(init: Init, table: u32, row: u64, col: u32) -> f32 {
    match init {
        Init::Zeros => 0.0,
        Init::Uniform { low, high, seed } => {
            let u = unit(hash(seed, table, row, col));
            (low as f64 + (high as f64 - low as f64) * u) as f32
        }
        Init::Glorot { fan_in, .. } if col >= fan_in => 0.0,
        Init::Glorot { bound, seed, .. } => {
            let u = unit(hash(seed, table, row, col));
            (bound as f64 * (2.0 * u - 1.0)) as f32
        }
        Init::Normal { std, seed } => {
            // Box-Muller on two independent uniforms.
            let h = hash(seed, table, row, col);
            let u1 = unit(h);
            let u2 = unit(splitmix64(h));
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (z * std as f64) as f32
        }
    }
}

/// Fills `out` (rows `start..` of `width` columns).
pub fn fill(init: Init, table: u32, start: u64, width: u32, out: &mut [f32]) {
    if init == Init::Zeros {
        out.fill(0.0);
        return;
    }
    for (i, row) in out.chunks_exact_mut(width as usize).enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = value(init, table, start + i as u64, c as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_right_moments_and_is_layout_free() {
        let init = Init::Normal { std: 0.5, seed: 7 };
        let mut a = vec![0f32; 1000 * 10];
        fill(init, 1, 0, 10, &mut a);
        let mut b = vec![0f32; 500 * 10];
        fill(init, 1, 500, 10, &mut b);
        assert_eq!(&a[5000..], &b[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = a.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "std {}", var.sqrt());
    }

    #[test]
    fn glorot_weights_in_range_and_bias_zero() {
        let init = Init::Glorot {
            bound: 0.5,
            fan_in: 3,
            seed: 4,
        };
        let mut a = vec![0f32; 4 * 1000];
        fill(init, 2, 0, 4, &mut a);
        for row in a.chunks_exact(4) {
            assert!(row[..3].iter().all(|v| v.abs() <= 0.5 && *v != 0.0));
            assert_eq!(row[3], 0.0);
        }
        let mean = a.iter().sum::<f32>() / 3000.0;
        assert!(mean.abs() < 0.02, "{mean}");
    }

    #[test]
    fn uniform_stays_in_range() {
        let init = Init::Uniform {
            low: -1.0,
            high: 2.0,
            seed: 3,
        };
        let mut a = vec![0f32; 4096];
        fill(init, 0, 0, 4, &mut a);
        assert!(a.iter().all(|v| (-1.0..=2.0).contains(v)));
        assert_ne!(a[0], a[1]);
    }
}
