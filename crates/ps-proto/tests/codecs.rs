//! Property tests of the delta-compression codecs.

use proptest::prelude::*;
use ps_proto::codec::{
    self, apply_sparse_add, decode, encode, read_varint, top_k, write_varint, CodecChain, Decoded,
    ErrorFeedback, KeyCacheReceiver, KeyCacheSender, Keys, Selector, ValueFormat,
};

/// Full-sort reference: magnitude descending, index ascending; NaN above everything.
fn reference_top_k(values: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    let key = |i: u32| -> (u32, std::cmp::Reverse<u32>) {
        (
            values[i as usize].to_bits() & 0x7FFF_FFFF,
            std::cmp::Reverse(i),
        )
    };
    idx.sort_by_key(|&i| std::cmp::Reverse(key(i)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

fn dense(d: Decoded, n: usize) -> Vec<f32> {
    d.into_dense(n).unwrap()
}

fn chains() -> impl Strategy<Value = CodecChain> {
    prop_oneof![
        Just("raw"),
        Just("f16"),
        Just("bf16"),
        Just("topk:0.1"),
        Just("topk:0.01,f16"),
        Just("topk:5,bf16"),
        Just("topk:1"),
        Just("topk:1.0,f16"),
        Just("filter:0.05"),
        Just("filter:0.5,f16"),
        Just("filter:0.01,topk:0.05,bf16"),
        Just("topk:0.3,filter:0.2"),
        Just("q8"),
        Just("q4"),
        Just("sign"),
        Just("topk:0.2,q2"),
        Just("topk:0.05,warmup:3,q4"),
        Just("topk:0.3,sign"),
        Just("energy:0.5"),
        Just("energy:0.9,f16"),
        Just("topk:0.3,energy:0.7,sign"),
    ]
    .prop_map(|s| s.parse().unwrap())
}

/// Values with many ties and a range of magnitudes.
fn tie_values(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f32>> {
    proptest::collection::vec(
        prop_oneof![
            (-4i32..=4).prop_map(|x| x as f32 * 0.5),
            -1e3f32..1e3f32,
            Just(0.0f32),
            Just(-0.0f32),
        ],
        n,
    )
}

// ---------------------------------------------------------------------------------------------
// Value formats

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

// ---------------------------------------------------------------------------------------------
// Top-k

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

// ---------------------------------------------------------------------------------------------
// Error feedback

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

// ---------------------------------------------------------------------------------------------
// Key cache

fn weak_hash(keys: &[u64]) -> u64 {
    // Collides constantly: only the parity of the length.
    keys.len() as u64 & 1
}

fn zero_hash(_: &[u64]) -> u64 {
    0
}

proptest! {
    /// The receiver always resolves exactly the list the sender was given, with forced hash
    /// collisions and eviction.
    #[test]
    fn key_cache_never_confuses_lists(
        picks in proptest::collection::vec(0usize..12, 1..200),
        capacity in 1usize..6,
        hasher in prop_oneof![Just(weak_hash as fn(&[u64]) -> u64), Just(zero_hash as fn(&[u64]) -> u64),
                              Just(codec::default_key_hash as fn(&[u64]) -> u64)],
    ) {
        // A pool of distinct lists, several equal-length (same weak hash) and a prefix pair.
        let pool: Vec<Vec<u64>> = (0..12u64).map(|i| match i {
            0 => vec![],
            1 => vec![1, 2, 3],
            2 => vec![1, 2],
            3 => vec![3, 2, 1],
            _ => (0..(i % 4)).map(|j| j * 100 + i).collect(),
        }).collect();
        let mut s = KeyCacheSender::with_hasher(capacity, hasher);
        let mut r = KeyCacheReceiver::with_hasher(capacity, hasher);
        let mut full = 0;
        for p in picks {
            let msg = s.keys(&pool[p]);
            if matches!(msg, Keys::Full { .. }) { full += 1; }
            prop_assert_eq!(r.resolve(msg).unwrap(), pool[p].as_slice());
        }
        prop_assert!(full >= 1);
    }
}

#[test]
fn key_cache_eviction_is_mirrored() {
    let mut s = KeyCacheSender::with_hasher(2, zero_hash);
    let mut r = KeyCacheReceiver::with_hasher(2, zero_hash);
    let lists = [vec![1u64], vec![2], vec![3]];
    for l in &lists {
        let m = s.keys(l);
        assert!(matches!(m, Keys::Full { .. }));
        r.resolve(m).unwrap();
    }
    // id 0 ([1]) is evicted on both sides: the sender sends it in full again, under id 3.
    let m = s.keys(&lists[0]);
    assert_eq!(
        m,
        Keys::Full {
            keys: vec![1],
            assign: 3
        }
    );
    // A stale reference to id 0 is refused, and changes nothing.
    assert!(r.resolve(Keys::Cached { id: 0, hash: 0 }).is_err());
    assert_eq!(r.resolve(m).unwrap(), &[1]);
    // ids 2 and 3 are live.
    assert_eq!(s.keys(&lists[2]), Keys::Cached { id: 2, hash: 0 });
    assert_eq!(r.resolve(Keys::Cached { id: 2, hash: 0 }).unwrap(), &[3]);
    assert!(r.resolve(Keys::Cached { id: 1, hash: 0 }).is_err());
}

#[test]
fn key_cache_receiver_detects_a_desynchronised_sender() {
    // Two senders share a receiver by mistake: ids collide, the hash check catches the mismatch.
    let mut a = KeyCacheSender::new(4);
    let mut b = KeyCacheSender::new(4);
    let mut r = KeyCacheReceiver::new(4);
    r.resolve(a.keys(&[1, 2, 3])).unwrap();
    let _ = b.keys(&[9, 9]); // b's id 0 names [9, 9], never sent to r
    let stale = b.keys(&[9, 9]);
    assert!(matches!(stale, Keys::Cached { id: 0, .. }));
    assert!(r.resolve(stale).is_err());
    // Out-of-sequence assignment is refused too.
    assert!(r
        .resolve(Keys::Full {
            keys: vec![5],
            assign: 7
        })
        .is_err());
    assert_eq!(r.resolve(a.keys(&[1, 2, 3])).unwrap(), &[1, 2, 3]);
}

// ---------------------------------------------------------------------------------------------
// Malformed payloads

fn sparse_payload(mode: u8, m: u64, gaps: &[u64], values: &[u8]) -> Vec<u8> {
    let mut p = vec![mode];
    write_varint(m, &mut p);
    for &g in gaps {
        write_varint(g, &mut p);
    }
    p.extend_from_slice(values);
    p
}

#[test]
fn decoders_reject_malformed_payloads() {
    let n = 10;
    for id in [0x11u16, 0x12, 0x13] {
        let s = if id == 0x11 { 4 } else { 2 };
        let two = vec![0u8; 2 * s];
        // A valid one first.
        assert!(decode(id, &sparse_payload(0, 2, &[1, 3], &two), n).is_ok());
        let bad: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("unknown mode", sparse_payload(4, 2, &[1, 3], &two)),
            ("truncated values", sparse_payload(0, 2, &[1, 3], &two[1..])),
            ("trailing bytes", {
                let mut p = sparse_payload(0, 2, &[1, 3], &two);
                p.push(0);
                p
            }),
            ("index out of range", sparse_payload(0, 2, &[1, 9], &two)),
            (
                "first index out of range",
                sparse_payload(0, 1, &[10], &two[..s]),
            ),
            ("repeated index", sparse_payload(0, 2, &[4, 0], &two)),
            (
                "more entries than the block",
                sparse_payload(0, 11, &[0; 11], &[0u8; 44]),
            ),
            (
                "count beyond the payload",
                sparse_payload(0, 5, &[1, 1], &two),
            ),
            ("varint overflow", {
                let mut p = vec![0u8, 1];
                p.extend([0xFF; 9]);
                p.push(0x02);
                p.extend(&two[..s]);
                p
            }),
            ("huge count", {
                let mut p = vec![0u8];
                write_varint(u64::MAX, &mut p);
                p
            }),
            ("non-canonical varint", {
                let mut p = vec![0u8, 1, 0x83, 0x00];
                p.extend(&two[..s]);
                p
            }),
            ("truncated varint", vec![0u8, 1, 0x83]),
            ("dense mode, wrong length", {
                let mut p = vec![1u8];
                p.extend(vec![0u8; (n - 1) * s]);
                p
            }),
            ("dense mode, trailing", {
                let mut p = vec![1u8];
                p.extend(vec![0u8; n * s + 1]);
                p
            }),
        ];
        for (what, p) in bad {
            assert!(decode(id, &p, n).is_err(), "wire id {id:#x}: {what}");
        }
        // Every strict prefix of a valid payload is an error.
        let mut v = vec![0f32; 300];
        v[7] = 1.0;
        v[250] = 2.0;
        let chain = CodecChain {
            selectors: vec![Selector::TopKCount(2)],
            warmup: 0,
            momentum: 0.0,
            format: codec::wire_format(id).unwrap().0,
        };
        let mut p = Vec::new();
        encode(&chain, &v, None, &mut p).unwrap();
        assert!(decode(id, &p, 300).is_ok());
        assert!(decode(id, &p, 250).is_err(), "index 250 out of range");
        for cut in 0..p.len() {
            assert!(decode(id, &p[..cut], 300).is_err(), "prefix {cut}");
        }
    }
    for (id, s) in [(1u16, 4), (2, 2), (3, 2)] {
        assert!(decode(id, &vec![0u8; n * s], n).is_ok());
        assert!(decode(id, &vec![0u8; n * s - 1], n).is_err());
        assert!(decode(id, &vec![0u8; n * s + 1], n).is_err());
        assert!(decode(id, &vec![0u8; n * s], n + 1).is_err());
        assert!(decode(id, &vec![0u8; n * s], usize::MAX).is_err());
    }
    for id in [0u16, 8, 0x0F, 0x10, 0x18, 0x21, 0xFFFF] {
        assert!(decode(id, &[], 0).is_err(), "wire id {id:#x}");
    }
}

#[test]
fn every_layout_and_format_refuses_its_prefixes() {
    // Densities that make the encoder pick each layout: list, Rice, runs, dense.
    let n = 2000;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1999) as f32 / 1000.0 - 0.9995)
        .collect();
    let mut modes = std::collections::BTreeSet::new();
    for format in ValueFormat::ALL {
        for k in [3u32, 40, 400, 1990, n as u32] {
            let chain = CodecChain {
                selectors: vec![Selector::TopKCount(k)],
                warmup: 0,
                momentum: 0.0,
                format,
            };
            let mut p = Vec::new();
            encode(&chain, &v, None, &mut p).unwrap();
            modes.insert(p[0]);
            let id = chain.wire_id();
            let d = dense(decode(id, &p, n).unwrap(), n);
            let nonzero = d.iter().filter(|x| **x != 0.0).count();
            // A level format may round a small value to zero.
            assert!(nonzero <= k as usize, "{chain}");
            if !format.is_block() || format == ValueFormat::Sign {
                assert_eq!(nonzero, k as usize, "{chain}");
            }
            for cut in 0..p.len() {
                assert!(decode(id, &p[..cut], n).is_err(), "{chain}: prefix {cut}");
            }
            let mut long = p.clone();
            long.push(0);
            assert!(decode(id, &long, n).is_err(), "{chain}: trailing byte");
        }
    }
    assert_eq!(modes.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn decoders_never_panic(id_pick in 0usize..16, n in 0usize..64,
                            bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        let id = [1u16, 2, 3, 0x11, 0x12, 0x13, 0, 8, 4, 5, 6, 7, 0x14, 0x15, 0x16, 0x17][id_pick];
        let mut dst = vec![1f32; n];
        if codec::decode_add(id, &bytes, &mut dst).is_err() {
            prop_assert!(dst.iter().all(|&x| x == 1.0), "unchanged on error");
        }
        if let Ok(d) = decode(id, &bytes, n) {
            // Whatever decodes is well-formed.
            match d {
                Decoded::Dense(v) => prop_assert_eq!(v.len(), n),
                Decoded::Sparse { indices, values } => {
                    prop_assert_eq!(indices.len(), values.len());
                    prop_assert!(indices.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!(indices.iter().all(|&i| (i as usize) < n));
                }
            }
        }
    }

    /// Sparse payloads that start well-formed then go wrong anywhere.
    #[test]
    fn sparse_decoders_never_panic(id in 0x11u16..0x18, n in 0usize..2000, mode in 0u8..4,
                                   head in proptest::collection::vec(any::<u64>(), 0..6),
                                   tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut p = vec![mode];
        for h in &head {
            write_varint(h % 3000, &mut p);
        }
        p.extend(tail);
        let _ = decode(id, &p, n);
    }

    #[test]
    fn encode_decode_round_trip(chain in chains(), v in tie_values(0..300)) {
        let cur: Vec<f32> = vec![1.0; v.len()];
        let mut out = Vec::new();
        let sent = encode(&chain, &v, Some(&cur), &mut out).unwrap();
        let d = decode(chain.wire_id(), &out, v.len()).unwrap();
        let got = dense(d, v.len());
        let mut nonzero = 0;
        for (x, y) in v.iter().zip(&got) {
            // Every entry is either dropped or sent through the format (a block format keeps at
            // least the sign).
            if chain.format.is_block() {
                prop_assert!(*y == 0.0 || *x == 0.0 || (*x < 0.0) == (*y < 0.0), "{} {}", x, y);
            } else {
                prop_assert!(*y == 0.0 || *y == chain.format.quantize(*x));
            }
            nonzero += (*y != 0.0) as usize;
        }
        prop_assert!(nonzero <= sent);
        // A payload is never much larger than raw f32.
        prop_assert!(out.len() <= 4 * v.len() + 16);
    }
}

// ---------------------------------------------------------------------------------------------
// Varints and sparse add

proptest! {
    #[test]
    fn varint_round_trip(vs in proptest::collection::vec(any::<u64>(), 0..50), shift in 0u32..64) {
        let mut out = Vec::new();
        for &v in &vs {
            write_varint(v >> shift, &mut out);
        }
        let mut pos = 0;
        for &v in &vs {
            prop_assert_eq!(read_varint(&out, &mut pos).unwrap(), v >> shift);
        }
        prop_assert_eq!(pos, out.len());
        prop_assert!(read_varint(&out, &mut pos).is_err());
    }

    #[test]
    fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut pos = 0;
        if let Ok(v) = read_varint(&bytes, &mut pos) {
            let mut again = Vec::new();
            write_varint(v, &mut again);
            prop_assert_eq!(&bytes[..pos], &again[..]);
        }
    }

    #[test]
    fn sparse_add_matches_dense(n in 1usize..100, idx in proptest::collection::vec(0u32..120, 0..50)) {
        let vals: Vec<f32> = idx.iter().map(|&i| i as f32 * 0.5 + 1.0).collect();
        let mut dst = vec![1f32; n];
        let r = apply_sparse_add(&mut dst, &idx, &vals);
        if idx.iter().any(|&i| i as usize >= n) {
            prop_assert!(r.is_err());
            prop_assert!(dst.iter().all(|&x| x == 1.0));
        } else {
            prop_assert!(r.is_ok());
            let mut want = vec![1f32; n];
            for (&i, &v) in idx.iter().zip(&vals) { want[i as usize] += v; }
            prop_assert_eq!(dst, want);
        }
    }
}

#[test]
fn varint_overflow() {
    let mut max = Vec::new();
    write_varint(u64::MAX, &mut max);
    assert_eq!(max.len(), 10);
    assert_eq!(read_varint(&max, &mut 0).unwrap(), u64::MAX);
    let mut over = max.clone();
    over[9] = 0x02; // bit 64
    assert!(read_varint(&over, &mut 0).is_err());
    let mut long = max.clone();
    long[9] = 0x81;
    long.push(0x00); // 11 bytes
    assert!(read_varint(&long, &mut 0).is_err());
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
