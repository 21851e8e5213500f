//! Selectors: top-k (exact and sampled), filter, chains of stages (also through their string
//! form) and whole rows of the largest norm.

use proptest::prelude::*;
use ps_proto::codec::{decode, encode, top_k, CodecChain, Decoded, Selector, ValueFormat};

use super::{dense, reference_top_k, tie_values};

proptest! {
    #[test]
    fn top_k_matches_a_full_sort(v in tie_values(0..600), k in 0usize..700) {
        prop_assert_eq!(top_k(&v, k), reference_top_k(&v, k.min(v.len())));
    }

    #[test]
    fn top_k_count_and_fraction_through_encode(v in tie_values(1..400), k in 0u32..450, f in 0.001f32..=1.0) {
        for (sel, want) in [
            (Selector::TopKCount(k), (k as usize).min(v.len())),
            (Selector::TopKFraction(f), ((f as f64 * v.len() as f64).ceil() as usize).min(v.len())),
        ] {
            let chain = CodecChain { selectors: vec![sel], warmup: 0, momentum: 0.0, format: ValueFormat::F32 };
            let mut out = Vec::new();
            let sent = encode(&chain, &v, None, &mut out).unwrap();
            prop_assert_eq!(sent, want);
            let got = dense(decode(chain.wire_id(), &out, v.len()).unwrap(), v.len());
            let idx = reference_top_k(&v, want);
            let mut expect = vec![0f32; v.len()];
            for &i in &idx {
                expect[i as usize] = v[i as usize];
            }
            prop_assert_eq!(got.iter().map(|x| x.to_bits() & 0x7FFF_FFFF).collect::<Vec<_>>(),
                            expect.iter().map(|x| x.to_bits() & 0x7FFF_FFFF).collect::<Vec<_>>());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Blocks large enough for the sampled threshold, with heavy ties.
    #[test]
    fn sampled_top_k_matches_a_full_sort(v in tie_values(40_000..70_000), p in 0.0001f64..0.2) {
        let k = (p * v.len() as f64) as usize;
        prop_assert_eq!(top_k(&v, k), reference_top_k(&v, k));
    }
}

#[test]
fn top_k_edge_cases() {
    let v = [3.0f32, -1.0, 2.0];
    assert!(top_k(&v, 0).is_empty());
    assert_eq!(top_k(&v, 3), vec![0, 1, 2]);
    assert_eq!(top_k(&v, 10), vec![0, 1, 2]);
    assert!(top_k(&[], 5).is_empty());
    // All equal (sampled path too): the lowest indices win.
    for n in [10, 100_000] {
        let eq = vec![-0.25f32; n];
        assert_eq!(top_k(&eq, 7), (0..7).collect::<Vec<u32>>());
        let mixed: Vec<f32> = (0..n)
            .map(|i| if i % 2 == 0 { 0.25 } else { -0.25 })
            .collect();
        assert_eq!(top_k(&mixed, 5), (0..5).collect::<Vec<u32>>());
    }
    // +0 and -0 tie.
    assert_eq!(top_k(&[0.0, -0.0, 0.0], 2), vec![0, 1]);
    // NaN ranks above everything, infinities next.
    let v = [
        1.0,
        f32::NAN,
        f32::NEG_INFINITY,
        5.0,
        -f32::NAN,
        f32::INFINITY,
    ];
    assert_eq!(top_k(&v, 2), vec![1, 4]);
    assert_eq!(top_k(&v, 3), vec![1, 2, 4]);
    assert_eq!(top_k(&v, 4), vec![1, 2, 4, 5]);
    // Fractions round up: 1% of 10 is one entry.
    let chain: CodecChain = "topk:0.01".parse().unwrap();
    let mut out = Vec::new();
    assert_eq!(encode(&chain, &[0.0; 10], None, &mut out).unwrap(), 1);
    // k = 0 sends an empty list.
    let chain: CodecChain = "topk:0".parse().unwrap();
    out.clear();
    assert_eq!(encode(&chain, &[1.0; 10], None, &mut out).unwrap(), 0);
    assert_eq!(
        decode(chain.wire_id(), &out, 10).unwrap(),
        Decoded::Sparse {
            indices: vec![],
            values: vec![]
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Filter and chains

proptest! {
    #[test]
    fn filter_keeps_significant_changes(v in tie_values(0..300), seed in any::<u32>(), rel in 0.0f32..2.0) {
        let cur: Vec<f32> = (0..v.len()).map(|i| ((i as u32 ^ seed) % 17) as f32 - 8.0).collect();
        let chain = CodecChain { selectors: vec![Selector::Filter { rel }], warmup: 0, momentum: 0.0, format: ValueFormat::F32 };
        let mut out = Vec::new();
        let sent = encode(&chain, &v, Some(&cur), &mut out).unwrap();
        let got = dense(decode(chain.wire_id(), &out, v.len()).unwrap(), v.len());
        let mut count = 0;
        for i in 0..v.len() {
            let keep = v[i] != 0.0 && v[i].abs() >= rel * cur[i].abs();
            count += keep as usize;
            prop_assert_eq!(got[i], if keep { v[i] } else { 0.0 });
        }
        prop_assert_eq!(sent, count);
    }

    #[test]
    fn chains_compose(v in tie_values(1..500), k in 1u32..50) {
        let cur: Vec<f32> = (0..v.len()).map(|i| (i % 5) as f32).collect();
        let chain = CodecChain {
            selectors: vec![Selector::Filter { rel: 0.3 }, Selector::TopKCount(k)],
            warmup: 0,
            momentum: 0.0,
            format: ValueFormat::F16,
        };
        let mut out = Vec::new();
        let sent = encode(&chain, &v, Some(&cur), &mut out).unwrap();
        let got = dense(decode(chain.wire_id(), &out, v.len()).unwrap(), v.len());
        // Reference: filter, then top-k among the survivors.
        let survivors: Vec<usize> = (0..v.len())
            .filter(|&i| v[i] != 0.0 && v[i].abs() >= 0.3 * cur[i].abs()).collect();
        let sub: Vec<f32> = survivors.iter().map(|&i| v[i]).collect();
        let keep: Vec<usize> = reference_top_k(&sub, (k as usize).min(sub.len()))
            .into_iter().map(|j| survivors[j as usize]).collect();
        prop_assert_eq!(sent, keep.len());
        for i in 0..v.len() {
            let want = if keep.contains(&i) { ValueFormat::F16.quantize(v[i]) } else { 0.0 };
            prop_assert_eq!(got[i], want);
        }
    }
}

#[test]
fn chains_round_trip_through_strings() {
    for s in [
        "raw",
        "f16",
        "bf16",
        "topk:0.01,f16",
        "filter:0.01,topk:100,bf16",
        "topk:0.3333333",
        "topk:0.001,warmup:5,sign",
        "q2",
    ] {
        let c: CodecChain = s.parse().unwrap();
        let again: CodecChain = c.to_string().parse().unwrap();
        assert_eq!(c, again);
    }
}

// ---------------------------------------------------------------------------------------------
// Rows

#[test]
fn rows_send_whole_rows_of_the_largest_norm() {
    // 6 rows of 4: row norms 1, 8, 2, 6, 0, 3 (row 1 largest, then 3, then 5).
    let v: Vec<f32> = [1.0f32, 8.0, 2.0, 6.0, 0.0, 3.0]
        .iter()
        .flat_map(|&r| [r / 2.0, -r / 2.0, r / 2.0, -r / 2.0])
        .collect();
    let chain: CodecChain = "rows:0.5".parse().unwrap();
    let mut out = Vec::new();
    let err = encode(&chain, &v, None, &mut out).unwrap_err().to_string();
    assert!(err.contains("width"), "{err}");
    assert!(encode(&chain.clone().for_rows(5), &v, None, &mut out).is_err());
    assert!(out.is_empty());
    let chain = chain.for_rows(4);
    assert_eq!(encode(&chain, &v, None, &mut out).unwrap(), 12);
    let got = dense(decode(chain.wire_id(), &out, 24).unwrap(), 24);
    for (i, (x, y)) in v.iter().zip(&got).enumerate() {
        let keep = [1, 3, 5].contains(&(i / 4));
        assert_eq!(*y, if keep { *x } else { 0.0 }, "entry {i}");
    }
    // After a filter stage only the survivors count and go.
    let cur = vec![100.0f32; 24];
    let chain: CodecChain = "filter:0.02,rows:0.1".parse().unwrap();
    let chain = chain.for_rows(4);
    out.clear();
    let sent = encode(&chain, &v, Some(&cur), &mut out).unwrap();
    let got = dense(decode(chain.wire_id(), &out, 24).unwrap(), 24);
    assert_eq!(sent, 4, "row 1's four entries (|x| = 4 >= 2)");
    assert!(got[4..8].iter().all(|x| x.abs() == 4.0));
    // Runs of indices are cheap: Rice codes them at about a bit each.
    let big: Vec<f32> = (0..8000)
        .map(|i| ((i * 7919) % 1009) as f32 - 504.0)
        .collect();
    let chain = "rows:0.25,sign".parse::<CodecChain>().unwrap().for_rows(8);
    out.clear();
    encode(&chain, &big, None, &mut out).unwrap();
    assert_eq!(out[0], 3, "runs layout");
    // 2000 signs (250 bytes), 16 scales (64), at most 250 runs at about 11 bits (a gap and a
    // length): under 650 bytes, where one Rice-coded gap a value would add about 870.
    assert!(out.len() < 650, "{} bytes", out.len());
}
