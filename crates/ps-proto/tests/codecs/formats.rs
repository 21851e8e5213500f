//! Value formats (f16, bf16 and the others): error bounds of the quantisation.

use proptest::prelude::*;
use ps_proto::codec::{decode, encode, CodecChain};

use super::dense;

proptest! {
    /// f16: relative error <= 2^-11 over the normal range [2^-14, 65504]; absolute error <= 2^-25
    /// below it (subnormals, flush to signed zero under 2^-25); finite values above 65504 saturate.
    #[test]
    fn f16_error_bounds(v in proptest::collection::vec(any::<f32>(), 0..300)) {
        let chain: CodecChain = "f16".parse().unwrap();
        let mut out = Vec::new();
        encode(&chain, &v, None, &mut out).unwrap();
        prop_assert_eq!(out.len(), 2 * v.len());
        let d = dense(decode(2, &out, v.len()).unwrap(), v.len());
        for (&x, &y) in v.iter().zip(&d) {
            let a = x.abs();
            if x.is_nan() {
                prop_assert!(y.is_nan());
            } else if x.is_infinite() {
                prop_assert_eq!(x, y);
            } else if a > 65504.0 {
                prop_assert_eq!(y, 65504.0f32.copysign(x));
            } else if a >= 2f32.powi(-14) {
                prop_assert!(((y - x) / x).abs() <= 2f32.powi(-11), "{} -> {}", x, y);
            } else {
                prop_assert!((y - x).abs() <= 2f32.powi(-25), "{} -> {}", x, y);
                prop_assert_eq!(y.is_sign_negative(), x.is_sign_negative());
            }
        }
    }

    /// bf16: relative error <= 2^-8 for normal f32 (and saturated values); absolute error
    /// <= 2^-134 for f32 subnormals; ±inf and NaN kept.
    #[test]
    fn bf16_error_bounds(v in proptest::collection::vec(any::<f32>(), 0..300)) {
        let chain: CodecChain = "bf16".parse().unwrap();
        let mut out = Vec::new();
        encode(&chain, &v, None, &mut out).unwrap();
        let d = dense(decode(3, &out, v.len()).unwrap(), v.len());
        for (&x, &y) in v.iter().zip(&d) {
            if x.is_nan() {
                prop_assert!(y.is_nan());
            } else if x.is_infinite() {
                prop_assert_eq!(x, y);
            } else if x.abs() >= f32::MIN_POSITIVE {
                prop_assert!(y.is_finite());
                prop_assert!(((y as f64 - x as f64) / x as f64).abs() <= 2f64.powi(-8), "{} -> {}", x, y);
            } else {
                prop_assert!((y as f64 - x as f64).abs() <= 2f64.powi(-134), "{} -> {}", x, y);
            }
        }
    }

    #[test]
    fn format_error_bounds_in_ordinary_ranges(v in proptest::collection::vec(-100.0f32..100.0, 1..500)) {
        for (s, id, bound) in [("f16", 2u16, 2f32.powi(-11)), ("bf16", 3, 2f32.powi(-8))] {
            let mut out = Vec::new();
            encode(&s.parse().unwrap(), &v, None, &mut out).unwrap();
            let d = dense(decode(id, &out, v.len()).unwrap(), v.len());
            for (&x, &y) in v.iter().zip(&d) {
                if x.abs() >= 2f32.powi(-14) {
                    prop_assert!(((y - x) / x).abs() <= bound);
                }
            }
        }
    }
}
