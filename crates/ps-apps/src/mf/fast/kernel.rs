//! The one-thread SGD kernel: a rank-vectorised dot product and the oracle's
//! update over zipped rows (see [`FastMf`](super::FastMf) for the summation order).

use super::Step;
use crate::mf::data::Rating;
use crate::prefetch;

/// Independent `f32` accumulators of the dot product (one AVX register, two
/// SSE registers).
const LANES: usize = 8;

/// `a·b` in [`LANES`] independent accumulators; see [`FastMf`](super::FastMf) for the order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let ac = a.chunks_exact(LANES);
    let bc = b.chunks_exact(LANES);
    let mut tail = 0.0f32;
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        tail += x * y;
    }
    if a.len() < LANES {
        return tail;
    }
    let mut acc = [0.0f32; LANES];
    for (x, y) in ac.zip(bc) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) + tail
}

/// How many ratings ahead the kernel asks for the rows it will update: a rating's user row is
/// seldom in cache (a user's ratings are spread over an epoch), so without it every update
/// waits for memory.
const PREFETCH_AHEAD: usize = 4;

/// The oracle's update, element by element, over zipped rows.
#[inline(always)]
fn update(u: &mut [f32], v: &mut [f32], e: f32, lr: f32, reg: f32) {
    for (uk, vk) in u.iter_mut().zip(v.iter_mut()) {
        let (u0, v0) = (*uk, *vk);
        *uk = u0 + lr * (e * v0 - reg * u0);
        *vk = v0 + lr * (e * u0 - reg * v0);
    }
}

/// Sequential SGD over `ratings`, where `users` holds the rows from
/// `user_base` on and `items` the rows from `item_base` on. Returns the SSE
/// measured before each update. Panics (bounds check) on a row outside the
/// slices.
pub(super) fn sgd_rows(
    ratings: &[Rating],
    users: &mut [f32],
    user_base: usize,
    items: &mut [f32],
    item_base: usize,
    step: Step,
) -> f64 {
    let (rank, w, lr, reg) = (step.rank, step.width(), step.lr, step.reg);
    let mut sse = 0.0f64;
    for (i, r) in ratings.iter().enumerate() {
        if let Some(next) = ratings.get(i + PREFETCH_AHEAD) {
            let uo = (next.user as usize).wrapping_sub(user_base).wrapping_mul(w);
            let io = (next.item as usize).wrapping_sub(item_base).wrapping_mul(w);
            prefetch::slice(users.get(uo..uo.saturating_add(w)));
            prefetch::slice(items.get(io..io.saturating_add(w)));
        }
        let uo = (r.user as usize - user_base) * w;
        let io = (r.item as usize - item_base) * w;
        let u = &mut users[uo..uo + w];
        let v = &mut items[io..io + w];
        match step.mean {
            None => {
                let e = r.value - dot(u, v);
                sse += f64::from(e) * f64::from(e);
                update(u, v, e, lr, reg);
            }
            Some(mean) => {
                let (pu, bu) = u.split_at_mut(rank);
                let (qi, bi) = v.split_at_mut(rank);
                let e = r.value - (mean + bu[0] + bi[0] + dot(pu, qi));
                sse += f64::from(e) * f64::from(e);
                update(pu, qi, e, lr, reg);
                bu[0] += lr * (e - reg * bu[0]);
                bi[0] += lr * (e - reg * bi[0]);
            }
        }
    }
    sse
}
