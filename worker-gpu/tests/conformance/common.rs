//! Shared by the conformance cases: the seed, the relative error, and the draws' agreement.

/// The seed of a case: `PS_TEST_SEED` when set, else fresh; printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("PS_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: PS_TEST_SEED={seed}");
    seed
}

/// `‖a − b‖ / ‖b‖` in f64 (0 when both are zero); NaN anywhere gives infinity.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        if x.is_nan() || y.is_nan() {
            return f64::INFINITY;
        }
        let d = f64::from(x) - f64::from(y);
        num += d * d;
        den += f64::from(y) * f64::from(y);
    }
    if den == 0.0 {
        if num == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (num / den).sqrt()
    }
}

/// Whether the device drew every token's oracle topic (`got` against `want`, the assignments
/// after the same sweep), after asserting that at least 99.9% agree: a uniform within f64
/// rounding of a CDF boundary may pick the neighbour, and the chains then diverge.
pub fn draws_agree(ctx: &str, got: &[u32], want: &[u32]) -> bool {
    let n = want.len();
    let same = got.iter().zip(want).filter(|(a, b)| a == b).count();
    eprintln!("{ctx}: {same} of {n} tokens drew the oracle's topic");
    assert!(
        same as f64 >= 0.999 * n as f64,
        "{ctx}: only {same} of {n} tokens agree with the oracle"
    );
    same == n
}
