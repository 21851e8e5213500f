//! How an MF worker stores its factor rows where it computes (`--factors`): f32, or f16 as
//! cuMF_SGD does, which halves the bytes every SGD step moves through a GPU's memory.
//!
//! The arithmetic is f32 either way: with f16 storage each rating's step runs in f32 on rows
//! that hold f16 values, and both rows are rounded to f16 (nearest even) after it, which is
//! what a kernel that loads f16, computes in f32 and stores f16 does. [`Factors::sgd_pass`] is
//! that oracle for any [`MfCompute`] engine. The item table on the shards stays f32: a worker
//! rounds the rows it reads, so its delta (`after - before`, both f16 values, exact in f32)
//! carries its updates and none of the rounding of the read.

use serde::{Deserialize, Serialize};

use super::compute::{Layout, MfCompute};
use super::data::Rating;
use crate::error::ComputeError;

/// The storage format of a worker's user and item rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Factors {
    #[default]
    F32,
    F16,
}

impl Factors {
    pub fn name(self) -> &'static str {
        match self {
            Factors::F32 => "f32",
            Factors::F16 => "f16",
        }
    }

    /// Bytes a stored element takes.
    pub fn bytes(self) -> usize {
        match self {
            Factors::F32 => 4,
            Factors::F16 => 2,
        }
    }

    /// Rounds `values` to what this storage holds (f16: to nearest even, as a device's
    /// conversion does; f32: unchanged).
    pub fn round(self, values: &mut [f32]) {
        if self == Factors::F16 {
            for x in values {
                *x = half::f16::from_f32(*x).to_f32();
            }
        }
    }

    /// One SGD pass over `ratings` in order (see [`MfCompute`]) on rows stored in this format.
    /// f32: the engine's pass. f16: each rating's step through the engine, then its user row
    /// and item row rounded; `users` and `items` must hold f16 values on entry (see
    /// [`Self::round`]). (The arguments of [`MfCompute::sgd_pass`], and the engine.)
    #[allow(clippy::too_many_arguments)]
    pub fn sgd_pass(
        self,
        engine: &mut dyn MfCompute,
        ratings: &[Rating],
        users: &mut [f32],
        items: &mut [f32],
        layout: Layout,
        lr: f32,
        reg: f32,
    ) -> Result<f64, ComputeError> {
        if self == Factors::F32 {
            return engine.sgd_pass(ratings, users, items, layout, lr, reg);
        }
        let w = layout.width();
        let mut sse = 0.0;
        for r in ratings {
            sse += engine.sgd_pass(std::slice::from_ref(r), users, items, layout, lr, reg)?;
            for (table, row) in [(&mut *users, r.user), (&mut *items, r.item)] {
                let at = row as usize * w;
                if let Some(row) = table.get_mut(at..at + w) {
                    self.round(row);
                }
            }
        }
        Ok(sse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mf::CpuMf;

    fn ratings() -> Vec<Rating> {
        (0..200u32)
            .map(|i| Rating {
                user: i % 7,
                item: (i * 5) % 11,
                value: ((i % 9) as f32 - 4.0) * 0.1,
            })
            .collect()
    }

    fn rows(n: usize, w: usize, seed: u32) -> Vec<f32> {
        (0..n * w)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) % 1000)
            .map(|x| x as f32 / 1000.0 - 0.5)
            .collect()
    }

    #[test]
    fn f32_storage_is_the_engines_own_pass() {
        let layout = Layout::plain(4);
        let (mut u1, mut v1) = (rows(7, 4, 1), rows(11, 4, 2));
        let (mut u2, mut v2) = (u1.clone(), v1.clone());
        let a = CpuMf
            .sgd_pass(&ratings(), &mut u1, &mut v1, layout, 0.05, 0.01)
            .unwrap();
        let b = Factors::F32
            .sgd_pass(&mut CpuMf, &ratings(), &mut u2, &mut v2, layout, 0.05, 0.01)
            .unwrap();
        assert_eq!(a.to_bits(), b.to_bits());
        assert_eq!(u1, u2);
        assert_eq!(v1, v2);
    }

    #[test]
    fn f16_storage_rounds_both_rows_after_every_step() {
        for layout in [
            Layout::plain(4),
            Layout {
                rank: 3,
                mean: Some(0.1),
            },
        ] {
            let w = layout.width();
            let (mut u, mut v) = (rows(7, w, 3), rows(11, w, 4));
            Factors::F16.round(&mut u);
            Factors::F16.round(&mut v);
            // The same steps by hand: one rating through the oracle, then both rows rounded.
            let (mut hu, mut hv) = (u.clone(), v.clone());
            let mut want = 0.0;
            for r in &ratings() {
                want += CpuMf
                    .sgd_pass(
                        std::slice::from_ref(r),
                        &mut hu,
                        &mut hv,
                        layout,
                        0.05,
                        0.01,
                    )
                    .unwrap();
                let (a, b) = (r.user as usize * w, r.item as usize * w);
                Factors::F16.round(&mut hu[a..a + w]);
                Factors::F16.round(&mut hv[b..b + w]);
            }
            let got = Factors::F16
                .sgd_pass(&mut CpuMf, &ratings(), &mut u, &mut v, layout, 0.05, 0.01)
                .unwrap();
            assert_eq!(got.to_bits(), want.to_bits());
            assert_eq!(u, hu);
            assert_eq!(v, hv);
            let is_f16 = |x: &f32| half::f16::from_f32(*x).to_f32() == *x;
            assert!(
                u.iter().chain(&v).all(is_f16),
                "every stored value is an f16"
            );
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties go to the even one, 1.
        let mut x = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65520.0];
        Factors::F16.round(&mut x);
        assert_eq!(x[0], 1.0);
        assert_eq!(x[1], 1.0 + 2.0 * 2f32.powi(-10));
        assert!(
            x[2].is_infinite(),
            "past the largest f16 (65504) rounds to infinity"
        );
        let mut y = [0.1f32];
        Factors::F32.round(&mut y);
        assert_eq!(y[0], 0.1);
    }
}
