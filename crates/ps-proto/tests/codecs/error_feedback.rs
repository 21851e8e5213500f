//! Error feedback: what a chain drops stays in the residual and is sent later, so the mass is
//! conserved over clocks.

use proptest::prelude::*;
use ps_proto::codec::{decode, CodecChain, ErrorFeedback};

use super::{chains, dense};

proptest! {
    /// Over any sequence of clocks and chains: sum(decoded sent) + residual == sum(deltas).
    #[test]
    fn error_feedback_conserves_mass(
        n in 1usize..200,
        clocks in proptest::collection::vec((chains(), any::<u64>(), 0.001f32..100.0), 1..12),
    ) {
        let mut ef = ErrorFeedback::new(n);
        let mut sum_deltas = vec![0f64; n];
        let mut sum_sent = vec![0f64; n];
        let mut scale = vec![0f64; n];
        let mut current = vec![1f32; n];
        for (chain, seed, amp) in clocks {
            let mut s = seed | 1;
            let delta: Vec<f32> = (0..n).map(|_| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * amp
            }).collect();
            let mut out = Vec::new();
            let bytes = ef.compress(&chain, &delta, Some(&current), &mut out).unwrap();
            prop_assert_eq!(bytes, out.len());
            let got = dense(decode(chain.wire_id(), &out, n).unwrap(), n);
            for i in 0..n {
                sum_deltas[i] += delta[i] as f64;
                sum_sent[i] += got[i] as f64;
                scale[i] += delta[i].abs() as f64 + got[i].abs() as f64;
                current[i] += got[i];
            }
        }
        for i in 0..n {
            let lhs = sum_sent[i] + ef.residual()[i] as f64;
            prop_assert!((lhs - sum_deltas[i]).abs() <= 1e-5 * (1.0 + scale[i]),
                "entry {}: sent {} + residual {} vs deltas {}", i, sum_sent[i], ef.residual()[i], sum_deltas[i]);
        }
    }
}

#[test]
fn error_feedback_with_top_k_sends_everything_eventually() {
    // One-hot-ish: with topk:1 and zero deltas after the first clock, the residual drains.
    let chain: CodecChain = "topk:1,bf16".parse().unwrap();
    let mut ef = ErrorFeedback::new(4);
    let mut total = [0f32; 4];
    let mut delta = vec![1.0, -2.0, 3.0, 0.5];
    for _ in 0..12 {
        let mut out = Vec::new();
        ef.compress(&chain, &delta, None, &mut out).unwrap();
        decode(chain.wire_id(), &out, 4)
            .unwrap()
            .add_to(&mut total)
            .unwrap();
        delta = vec![0.0; 4];
    }
    assert_eq!(total, [1.0, -2.0, 3.0, 0.5]);
    assert!(ef.residual().iter().all(|&r| r == 0.0));
}

proptest! {
    #[test]
    fn error_feedback_with_rows_conserves_mass(rows in 1usize..40, width in 1usize..9,
                                               frac in 0.05f32..1.0, clocks in 1usize..5) {
        let chain = format!("rows:{frac},q4").parse::<CodecChain>().unwrap().for_rows(width as u32);
        let n = rows * width;
        let mut ef = ErrorFeedback::new(n);
        let mut sum = vec![0f64; n];
        let mut total = vec![0f64; n];
        for c in 0..clocks {
            let d: Vec<f32> = (0..n).map(|i| ((i * 31 + c * 17) % 23) as f32 / 7.0 - 1.5).collect();
            for (t, x) in total.iter_mut().zip(&d) { *t += f64::from(*x); }
            let mut out = Vec::new();
            ef.compress(&chain, &d, None, &mut out).unwrap();
            let got = dense(decode(chain.wire_id(), &out, n).unwrap(), n);
            for (s, x) in sum.iter_mut().zip(&got) { *s += f64::from(*x); }
        }
        for i in 0..n {
            let r = f64::from(ef.residual()[i]);
            prop_assert!((sum[i] + r - total[i]).abs() < 1e-3, "entry {}: {} + {} vs {}", i, sum[i], r, total[i]);
        }
    }
}
