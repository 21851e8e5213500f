//! Varints (round trip, overflow, arbitrary bytes) and the sparse add.

use proptest::prelude::*;
use ps_proto::codec::{apply_sparse_add, read_varint, write_varint};

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
