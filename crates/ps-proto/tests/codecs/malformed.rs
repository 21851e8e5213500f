//! Malformed payloads: decoders reject or survive any bytes without panicking, and whatever
//! encodes decodes back through its format.

use proptest::prelude::*;
use ps_proto::codec::{
    self, decode, encode, write_varint, CodecChain, Decoded, Selector, ValueFormat,
};

use super::{chains, dense, tie_values};

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
    for (id, s) in [(1u16, 4), (2, 2), (3, 2), (8, 1), (9, 2)] {
        assert!(decode(id, &vec![0u8; n * s], n).is_ok());
        assert!(decode(id, &vec![0u8; n * s - 1], n).is_err());
        assert!(decode(id, &vec![0u8; n * s + 1], n).is_err());
        assert!(decode(id, &vec![0u8; n * s], n + 1).is_err());
        assert!(decode(id, &vec![0u8; n * s], usize::MAX).is_err());
    }
    for id in [0u16, 10, 0x0F, 0x10, 0x1A, 0x21, 0xFFFF] {
        assert!(decode(id, &[], 0).is_err(), "wire id {id:#x}");
    }
    // The exact codec's whole-number payloads (i8, i16): every prefix refused too.
    for scale in [1.0f32, 7.0] {
        let sel: Vec<u32> = (0..300).step_by(7).collect();
        let vals: Vec<f32> = sel
            .iter()
            .map(|&i| ((i % 100) as f32 - 50.0) * scale)
            .collect();
        let mut p = Vec::new();
        let id = ps_proto::codec::encode_exact_selection(300, &sel, &vals, &mut p).unwrap();
        assert!(id == 0x18 || id == 0x19, "{id:#x}");
        assert!(decode(id, &p, 300).is_ok());
        for cut in 0..p.len() {
            assert!(
                decode(id, &p[..cut], 300).is_err(),
                "prefix {cut} of {id:#x}"
            );
        }
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
    fn decoders_never_panic(id_pick in 0usize..20, n in 0usize..64,
                            bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        let id = [
            1u16, 2, 3, 0x11, 0x12, 0x13, 0, 10, 4, 5, 6, 7, 0x14, 0x15, 0x16, 0x17, 8, 9, 0x18,
            0x19,
        ][id_pick];
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
    fn sparse_decoders_never_panic(id in 0x11u16..0x1A, n in 0usize..2000, mode in 0u8..4,
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
