//! Update rules: how a pushed delta changes stored values. Pure slice arithmetic.

use ps_proto::UpdateRule;

/// Applies `delta` to `dst` (same length) under `rule`.
#[inline]
pub fn apply(rule: UpdateRule, dst: &mut [f32], delta: &[f32]) {
    match rule {
        UpdateRule::Add => add(dst, delta),
        UpdateRule::Sgd { lr } => sgd(dst, delta, lr),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_sgd() {
        let mut w: Vec<f32> = (0..37).map(|i| i as f32).collect();
        let d: Vec<f32> = (0..37).map(|i| 0.5 * i as f32).collect();
        apply(UpdateRule::Add, &mut w, &d);
        assert!(w.iter().enumerate().all(|(i, v)| *v == 1.5 * i as f32));
        apply(UpdateRule::Sgd { lr: 2.0 }, &mut w, &d);
        assert!(w.iter().enumerate().all(|(i, v)| *v == 0.5 * i as f32));
    }
}
