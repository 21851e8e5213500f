//! Update rules: how a pushed delta changes stored values. Pure slice arithmetic.
//!
//! Rules with optimizer state take it as one slice next to the values: `state_per_cell(rule)`
//! floats per cell, interleaved per cell (cell `i` owns `state[k * i..k * (i + 1)]`), so any
//! run of contiguous cells (one row, or many contiguous rows) has its state in one contiguous
//! run too. AdaGrad keeps `[a]` per cell, FTRL `[z, n]`.

use crate::control::UpdateRule;

/// Optimizer state floats per cell for `rule` (0 for the stateless rules).
#[inline]
pub fn state_per_cell(rule: UpdateRule) -> usize {
    rule.state_per_cell()
}

/// Fills the state of fresh cells (`state.len()` is a multiple of `state_per_cell(rule)`).
pub fn init_state(rule: UpdateRule, state: &mut [f32]) {
    match rule {
        UpdateRule::Add | UpdateRule::Sgd { .. } => debug_assert!(state.is_empty()),
        UpdateRule::Adagrad {
            initial_accumulator,
            ..
        } => state.fill(initial_accumulator),
        // z = 0, n = 0.
        UpdateRule::Ftrl { .. } => state.fill(0.0),
    }
}

/// Applies `delta` to `dst` (same length) under `rule`, with `state` holding
/// `state_per_cell(rule) * dst.len()` floats of optimizer state for those cells.
#[inline]
pub fn apply(rule: UpdateRule, dst: &mut [f32], state: &mut [f32], delta: &[f32]) {
    debug_assert_eq!(state.len(), state_per_cell(rule) * dst.len());
    match rule {
        UpdateRule::Add => add(dst, delta),
        UpdateRule::Sgd { lr } => sgd(dst, delta, lr),
        UpdateRule::Adagrad { lr, eps, .. } => adagrad(dst, state, delta, lr, eps),
        UpdateRule::Ftrl {
            alpha,
            beta,
            l1,
            l2,
        } => ftrl(dst, state, delta, FtrlParams::new(alpha, beta, l1, l2)),
    }
}

/// dst += delta. Written over fixed-size chunks so the compiler vectorises it.
#[inline]
pub fn add(dst: &mut [f32], delta: &[f32]) {
    debug_assert_eq!(dst.len(), delta.len());
    let n = dst.len().min(delta.len());
    let (d, s) = (&mut dst[..n], &delta[..n]);
    let mut dc = d.chunks_exact_mut(16);
    let mut sc = s.chunks_exact(16);
    for (a, b) in (&mut dc).zip(&mut sc) {
        for i in 0..16 {
            a[i] += b[i];
        }
    }
    for (a, b) in dc.into_remainder().iter_mut().zip(sc.remainder()) {
        *a += *b;
    }
}

/// dst -= lr * grad.
#[inline]
pub fn sgd(dst: &mut [f32], grad: &[f32], lr: f32) {
    debug_assert_eq!(dst.len(), grad.len());
    for (a, g) in dst.iter_mut().zip(grad) {
        *a -= lr * *g;
    }
}

/// AdaGrad with one accumulator per cell: acc += g^2; w -= lr * g / (sqrt(acc) + eps).
#[inline]
pub fn adagrad(w: &mut [f32], acc: &mut [f32], grad: &[f32], lr: f32, eps: f32) {
    debug_assert_eq!(w.len(), grad.len());
    debug_assert_eq!(acc.len(), w.len());
    for ((w, a), g) in w.iter_mut().zip(acc.iter_mut()).zip(grad) {
        *a += g * g;
        *w -= lr * g / (a.sqrt() + eps);
    }
}

/// FTRL-proximal parameters, with `1 / alpha` precomputed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FtrlParams {
    pub alpha: f32,
    pub beta: f32,
    pub l1: f32,
    pub l2: f32,
}

impl FtrlParams {
    pub fn new(alpha: f32, beta: f32, l1: f32, l2: f32) -> FtrlParams {
        FtrlParams {
            alpha,
            beta,
            l1,
            l2,
        }
    }

    /// The weight FTRL-proximal derives from (z, n): 0 while |z| <= l1 (exactly, which keeps
    /// untouched and weakly supported cells sparse), else
    /// -(z - sign(z) * l1) / ((beta + sqrt(n)) / alpha + l2).
    ///
    /// The denominator is 0 only with beta = l2 = 0 and n = 0, which a nonzero z reaches only
    /// when g^2 underflows to 0; the weight is then 0 rather than an infinity.
    #[inline]
    pub fn weight(&self, z: f32, n: f32) -> f32 {
        if z.abs() <= self.l1 {
            return 0.0;
        }
        let den = (self.beta + n.sqrt()) / self.alpha + self.l2;
        if den > 0.0 {
            -(z - z.signum() * self.l1) / den
        } else {
            0.0
        }
    }
}

/// FTRL-proximal (McMahan et al. 2013, Algorithm 1) per cell, with `zn` holding `[z, n]` per
/// cell. For each cell with gradient g and current weight w:
/// sigma = (sqrt(n + g^2) - sqrt(n)) / alpha; z += g - sigma * w; n += g^2; w = weight(z, n).
#[inline]
pub fn ftrl(w: &mut [f32], zn: &mut [f32], grad: &[f32], p: FtrlParams) {
    debug_assert_eq!(w.len(), grad.len());
    debug_assert_eq!(zn.len(), 2 * w.len());
    for ((w, s), g) in w.iter_mut().zip(zn.chunks_exact_mut(2)).zip(grad) {
        let (z, n) = (s[0], s[1]);
        let n_new = n + g * g;
        let sigma = (n_new.sqrt() - n.sqrt()) / p.alpha;
        let z_new = z + (g - sigma * *w);
        s[0] = z_new;
        s[1] = n_new;
        *w = p.weight(z_new, n_new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn add_and_sgd() {
        let mut w: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let d: Vec<f32> = (0..37).map(|i| 0.5 * i as f32).collect();
        apply(UpdateRule::Add, &mut w, &mut [], &d);
        assert!(w.iter().enumerate().all(|(i, v)| *v == 1.5 * i as f32));
        apply(UpdateRule::Sgd { lr: 2.0 }, &mut w, &mut [], &d);
        assert!(w.iter().enumerate().all(|(i, v)| *v == 0.5 * i as f32));
    }

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn adagrad_two_steps_by_hand() {
        let rule = UpdateRule::Adagrad {
            lr: 0.5,
            eps: 0.0001,
            initial_accumulator: 0.0,
        };
        let mut w = vec![1.0f32, -2.0];
        let mut acc = vec![f32::NAN; 2];
        init_state(rule, &mut acc);
        assert_eq!(acc, vec![0.0, 0.0]);
        // Step 1, g = (2, -1): a = (4, 1); w = 1 - 0.5 * 2 / (2 + 1e-4), -2 + 0.5 / (1 + 1e-4).
        apply(rule, &mut w, &mut acc, &[2.0, -1.0]);
        assert_eq!(acc, vec![4.0, 1.0]);
        assert!(close(w[0], 1.0 - 1.0 / 2.0001), "{}", w[0]);
        assert!(close(w[1], -2.0 + 0.5 / 1.0001), "{}", w[1]);
        let w1 = w.clone();
        // Step 2, g = (1, 3): a = (5, 10).
        apply(rule, &mut w, &mut acc, &[1.0, 3.0]);
        assert_eq!(acc, vec![5.0, 10.0]);
        assert!(close(w[0], w1[0] as f64 - 0.5 / (5f64.sqrt() + 1e-4)));
        assert!(close(w[1], w1[1] as f64 - 1.5 / (10f64.sqrt() + 1e-4)));
        assert!(close(w[0], 1.0 - 1.0 / 2.0001 - 0.5 / (5f64.sqrt() + 1e-4)));
    }

    #[test]
    fn adagrad_initial_accumulator_is_the_starting_state() {
        let rule = UpdateRule::Adagrad {
            lr: 1.0,
            eps: 1e-3,
            initial_accumulator: 5.0,
        };
        let mut acc = vec![0.0f32; 3];
        init_state(rule, &mut acc);
        assert_eq!(acc, vec![5.0; 3]);
        let mut w = vec![0.0f32];
        apply(rule, &mut w, &mut acc[..1], &[2.0]);
        // a = 5 + 4 = 9: w = -2 / (3 + 1e-3).
        assert_eq!(acc[0], 9.0);
        assert!(close(w[0], -2.0 / 3.001));
    }

    #[test]
    fn ftrl_by_hand_with_the_l1_dead_zone() {
        // alpha = 1, beta = 1, l1 = 1.5, l2 = 0.5.
        let p = FtrlParams::new(1.0, 1.0, 1.5, 0.5);
        let rule = UpdateRule::Ftrl {
            alpha: 1.0,
            beta: 1.0,
            l1: 1.5,
            l2: 0.5,
        };
        let mut w = vec![0.0f32];
        let mut zn = vec![0.0f32; 2];
        // g = 1: sigma = 1, z = 1 - 1 * 0 = 1, n = 1; |z| <= 1.5 -> w stays exactly 0.
        apply(rule, &mut w, &mut zn, &[1.0]);
        assert_eq!((w[0], zn[0], zn[1]), (0.0, 1.0, 1.0));
        assert_eq!(w[0].to_bits(), 0);
        // g = 0.5: sigma = sqrt(1.25) - 1, z = 1.5 - sigma * 0 = 1.5, n = 1.25; |z| = l1 -> 0.
        apply(rule, &mut w, &mut zn, &[0.5]);
        assert_eq!((w[0], zn[0], zn[1]), (0.0, 1.5, 1.25));
        // g = 1: n = 2.25, z = 2.5; w = -(2.5 - 1.5) / ((1 + 1.5) / 1 + 0.5) = -1/3.
        apply(rule, &mut w, &mut zn, &[1.0]);
        assert_eq!((zn[0], zn[1]), (2.5, 2.25));
        assert!(close(w[0], -1.0 / 3.0), "{}", w[0]);
        // g = -2 with w = -1/3: sigma = (sqrt(6.25) - 1.5) / 1 = 1, z = 2.5 - 2 + 1/3 = 5/6,
        // n = 6.25; |z| <= 1.5 -> back to exactly 0.
        apply(rule, &mut w, &mut zn, &[-2.0]);
        assert!(close(zn[0], 5.0 / 6.0), "{}", zn[0]);
        assert_eq!(zn[1], 6.25);
        assert_eq!(w[0], 0.0);
        assert_eq!(p.weight(-3.0, 4.0), 1.5 / 3.5);
        assert_eq!(p.weight(1.5, 4.0), 0.0);
    }

    #[test]
    fn ftrl_without_regularisation_never_divides_by_zero() {
        let p = FtrlParams::new(0.1, 0.0, 0.0, 0.0);
        assert_eq!(p.weight(0.0, 0.0), 0.0);
        // g^2 underflows to 0 while z moves: still a finite weight.
        let mut w = vec![0.0f32];
        let mut zn = vec![0.0f32; 2];
        ftrl(&mut w, &mut zn, &[1e-30], p);
        assert!(zn[0] != 0.0 && zn[1] == 0.0);
        assert_eq!(w[0], 0.0);
    }

    /// A straightforward scalar FTRL-proximal coordinate, written from the paper.
    #[derive(Default)]
    struct RefFtrl {
        z: f32,
        n: f32,
        w: f32,
    }

    impl RefFtrl {
        fn step(&mut self, g: f32, alpha: f32, beta: f32, l1: f32, l2: f32) {
            let sigma = ((self.n + g * g).sqrt() - self.n.sqrt()) / alpha;
            self.z += g - sigma * self.w;
            self.n += g * g;
            self.w = if self.z.abs() <= l1 {
                0.0
            } else {
                let sgn = if self.z < 0.0 { -1.0 } else { 1.0 };
                let den = (beta + self.n.sqrt()) / alpha + l2;
                if den > 0.0 {
                    -(self.z - sgn * l1) / den
                } else {
                    0.0
                }
            };
        }
    }

    proptest! {
        #[test]
        fn ftrl_matches_a_scalar_reference(
            alpha in 0.01f32..2.0,
            beta in 0.0f32..2.0,
            l1 in 0.0f32..3.0,
            l2 in 0.0f32..2.0,
            width in 1usize..9,
            steps in prop::collection::vec(prop::collection::vec(-4.0f32..4.0, 8), 1..30),
        ) {
            let rule = UpdateRule::Ftrl { alpha, beta, l1, l2 };
            let mut w = vec![0.0f32; width];
            let mut zn = vec![0.0f32; 2 * width];
            let mut refs: Vec<RefFtrl> = (0..width).map(|_| RefFtrl::default()).collect();
            for g in &steps {
                apply(rule, &mut w, &mut zn, &g[..width]);
                for (r, g) in refs.iter_mut().zip(g) {
                    r.step(*g, alpha, beta, l1, l2);
                }
                for (i, r) in refs.iter().enumerate() {
                    prop_assert_eq!(w[i].to_bits(), r.w.to_bits());
                    prop_assert_eq!(zn[2 * i].to_bits(), r.z.to_bits());
                    prop_assert_eq!(zn[2 * i + 1].to_bits(), r.n.to_bits());
                    // The L1 dead zone is exact: |z| <= l1 means w is exactly 0.
                    if r.z.abs() <= l1 {
                        prop_assert_eq!(w[i], 0.0);
                    } else {
                        prop_assert!(w[i] != 0.0 && w[i].signum() == -r.z.signum());
                    }
                }
            }
        }

        #[test]
        fn ftrl_coordinate_stays_zero_until_z_leaves_the_l1_ball(
            l1 in 0.5f32..5.0,
            g in 0.01f32..0.2,
        ) {
            // A constant positive gradient from w = 0: w stays 0 while z = sum g <= l1 (sigma * w
            // is 0 while w is 0), and turns negative once z > l1.
            let p = FtrlParams::new(0.1, 1.0, l1, 0.0);
            let (mut w, mut zn) = (vec![0.0f32], vec![0.0f32; 2]);
            let mut seen_nonzero = false;
            for _ in 0..((l1 / g) as usize + 10) {
                ftrl(&mut w, &mut zn, &[g], p);
                if zn[0] <= l1 {
                    prop_assert!(!seen_nonzero);
                    prop_assert_eq!(w[0].to_bits(), 0);
                } else {
                    seen_nonzero = true;
                }
            }
            prop_assert!(seen_nonzero && w[0] < 0.0);
        }
    }
}
