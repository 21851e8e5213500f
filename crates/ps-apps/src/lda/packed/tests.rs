//! The packed image's tests: round trips, shapes, bad images, threads.

use super::*;
use ps_proto::SparseRowsBuf;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Packs `values` (rows of `k`) dense and by their entries (with and without explicit `+0.0`
/// entries), checks that the images are the same, and that unpacking gives `values` back.
fn round_trip(values: &[f32], k: usize) -> Option<Packed> {
    let mut image = Vec::new();
    let packed = pack_rows(values, k, &mut image);
    if k > 0 && values.len().is_multiple_of(k) {
        let (mut plain, mut zeros) = (SparseRowsBuf::default(), SparseRowsBuf::default());
        plain.clear(k);
        zeros.clear(k);
        for row in values.chunks_exact(k) {
            plain.push_dense(row);
            // Every third +0.0 cell as an entry too.
            let (at, v): (Vec<u32>, Vec<f32>) = (0..k as u32)
                .zip(row.iter().copied())
                .filter(|(t, x)| x.to_bits() != 0 || t % 3 == 0)
                .unzip();
            zeros.push_entries(&at, &v);
        }
        for buf in [&plain, &zeros] {
            assert!(buf.view().check().is_ok());
            let mut from_entries = Vec::new();
            let shape = pack_sparse_rows(buf.view(), k, &mut from_entries);
            assert_eq!(shape, packed, "the same shape from entries");
            if shape.is_some() {
                assert_eq!(from_entries, image, "the same image from entries");
            }
        }
    }
    let shape = packed?;
    assert_eq!(image.len(), shape.words());
    let mut back = vec![f32::NAN; values.len()];
    unpack_rows(&image, shape, k, &mut back);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(values));
    Some(shape)
}

#[test]
fn sparse_counts_pack_as_u16_pairs_and_come_back_exactly() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for k in [1usize, 2, 3, 50, 1000] {
        let rows = 37;
        let mut v = vec![0f32; rows * k];
        for x in v.iter_mut() {
            if rng.gen_bool(0.05) {
                *x = f32::from(rng.gen_range(1u16..=65_535));
            }
        }
        if let Some(shape) = round_trip(&v, k) {
            assert_eq!(shape.values, Values::U16);
            let nnz = v.iter().filter(|x| **x != 0.0).count();
            assert_eq!(shape.entries, nnz);
            assert_eq!(shape.words(), rows + 2 * nnz.div_ceil(2));
        } else {
            // Too dense to pay: only for the narrow rows.
            assert!(k <= 3, "K {k} did not pack");
        }
    }
}

#[test]
fn other_values_pack_as_f32_bits() {
    let k = 100;
    let mut v = vec![0f32; 4 * k];
    v[3] = 2.0;
    v[150] = -0.0;
    v[151] = f32::NAN;
    v[260] = 0.5;
    v[399] = 70_000.0;
    let shape = round_trip(&v, k).expect("sparse enough");
    assert_eq!(shape.values, Values::F32);
    assert_eq!(shape.entries, 5);
    for neg in [-1.0f32, 65_536.0, 1.5] {
        let mut w = vec![0f32; k];
        w[7] = neg;
        assert_eq!(round_trip(&w, k).unwrap().values, Values::F32, "{neg}");
    }
}

#[test]
fn dense_runs_bad_shapes_and_wide_k_do_not_pack() {
    let mut image = Vec::new();
    assert!(round_trip(&[1.0; 400], 100).is_none());
    assert!(pack_rows(&[0.0; 10], 3, &mut image).is_none());
    assert!(pack_rows(&[0.0; 10], 0, &mut image).is_none());
    let wide = vec![0f32; MAX_PACKED_TOPICS + 1];
    assert!(round_trip(&wide, MAX_PACKED_TOPICS + 1).is_none());
    // Entries of another width do not pack.
    let rows = ps_proto::SparseRows {
        width: 99,
        offsets: &[0, 1],
        at: &[3],
        values: &[1.0],
    };
    assert!(pack_sparse_rows(rows, 100, &mut image).is_none());
    // Empty rows pack to their ends alone; an empty run to nothing.
    let shape = round_trip(&[0.0; 300], 100).unwrap();
    assert_eq!((shape.rows, shape.entries, shape.words()), (3, 0, 3));
    assert!(pack_rows(&[], 100, &mut image).is_none());
    // Up to the break-even point a run packs; past it, not.
    let k = 64;
    let mut v = vec![0f32; k];
    for (i, x) in v.iter_mut().enumerate().take(40) {
        *x = (i + 1) as f32;
    }
    assert!(round_trip(&v, k).is_some());
    let mut w = vec![0f32; k];
    w.iter_mut().take(60).for_each(|x| *x = 0.25);
    assert!(round_trip(&w, k).is_none());
}

#[test]
fn unpacking_skips_topics_past_k_and_clamps_row_ends() {
    // An image made by hand: row 0 has topics 1 and 9 (9 >= K 4), row 1 claims entries
    // up to 5 of 3.
    let shape = Packed {
        rows: 2,
        entries: 3,
        values: Values::U16,
    };
    let image = vec![2, 5, 1 | (9 << 16), 2, 3 | (4 << 16), 5];
    let mut dst = vec![f32::NAN; 8];
    unpack_rows(&image, shape, 4, &mut dst);
    assert_eq!(dst, vec![0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0]);
}

#[test]
fn deltas_pack_in_row_and_topic_order_and_come_back_checked() {
    let k = 9;
    let words = [3u32, 10, 11, 40];
    let mut cells = vec![0i32; words.len() * k];
    cells[2] = 1;
    cells[5] = -2;
    cells[3 * k] = -32_767;
    cells[3 * k + 8] = 7;
    let mut image = Vec::new();
    let shape = pack_delta(&cells, k, &mut image);
    assert_eq!(
        (shape.rows, shape.entries, shape.values),
        (4, 4, Values::I16)
    );
    assert_eq!(image.len(), 4 + 2 + 2);
    let want = vec![(3, 2, 1), (3, 5, -2), (40, 0, -32_767), (40, 8, 7)];
    assert_eq!(unpack_delta(&image, shape, k, &words).unwrap(), want);
    // One change past i16: all go as i32.
    cells[4 * k - 1] = 40_000;
    let shape = pack_delta(&cells, k, &mut image);
    assert_eq!(shape.values, Values::I32);
    assert_eq!(image.len(), 4 + 2 + 4);
    let got = unpack_delta(&image, shape, k, &words).unwrap();
    assert_eq!(got[3], (40, 8, 40_000));
    // Nothing moved: the row ends alone.
    let shape = pack_delta(&vec![0; 2 * k], k, &mut image);
    assert_eq!((shape.entries, image.clone()), (0, vec![0, 0]));
    assert!(unpack_delta(&image, shape, k, &[1, 2]).unwrap().is_empty());
}

#[test]
fn a_delta_packs_the_same_from_its_entries() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut image = Vec::new();
    let mut from_entries = Vec::new();
    for (k, rows, wide) in [
        (9, 40, false),
        (1000, 300, false),
        (1000, 300, true),
        (1, 5, false),
    ] {
        let words: Vec<u32> = (0..rows as u32).map(|r| 3 * r + 1).collect();
        let cells: Vec<i32> = (0..rows * k)
            .map(|_| match rng.gen_range(0..10) {
                0 => rng.gen_range(-300..300),
                1 if wide => rng.gen_range(-70_000..70_000),
                _ => 0,
            })
            .collect();
        let shape = pack_delta(&cells, k, &mut image);
        let entries = unpack_delta(&image, shape, k, &words).unwrap();
        let got = pack_delta_entries(&entries, &words, k, &mut from_entries).unwrap();
        assert_eq!(got, shape, "K {k}");
        assert_eq!(from_entries, image, "K {k}: the same image");
        assert_eq!(shape.values == Values::I32, wide, "K {k}");
    }
    // No entries: the row ends alone.
    let shape = pack_delta_entries(&[], &[4, 5], 3, &mut image).unwrap();
    assert_eq!((shape.entries, image.clone()), (0, vec![0, 0]));
    // Refused: a word that is not a row, a topic past K, a zero change, entries out of order,
    // K that does not pack.
    let words = [2u32, 7];
    for bad in [
        vec![(3u32, 0u32, 1i32)],
        vec![(9, 0, 1)],
        vec![(2, 3, 1)],
        vec![(2, 1, 0)],
        vec![(7, 1, 1), (2, 0, 1)],
        vec![(2, 1, 1), (2, 1, 2)],
    ] {
        assert!(
            pack_delta_entries(&bad, &words, 3, &mut image).is_err(),
            "{bad:?}"
        );
    }
    assert!(pack_delta_entries(&[], &words, 0, &mut image).is_err());
    assert!(pack_delta_entries(&[], &words, MAX_PACKED_TOPICS + 1, &mut image).is_err());
}

#[test]
fn a_bad_delta_image_is_an_error() {
    let k = 9;
    let words = [3u32, 10];
    let mut cells = vec![0i32; 2 * k];
    cells[1] = 4;
    cells[k + 2] = -1;
    cells[k + 6] = 2;
    let mut image = Vec::new();
    let shape = pack_delta(&cells, k, &mut image);
    let ok = unpack_delta(&image, shape, k, &words).unwrap();
    assert_eq!(ok, vec![(3, 1, 4), (10, 2, -1), (10, 6, 2)]);
    let bad = |f: &dyn Fn(&mut Vec<u32>)| {
        let mut i = image.clone();
        f(&mut i);
        unpack_delta(&i, shape, k, &words).is_err()
    };
    assert!(bad(&|i| i[0] = 4), "row 0 ends past the entries");
    assert!(
        bad(&|i| {
            i[0] = 2;
            i[1] = 1;
        }),
        "row 1 ends before row 0"
    );
    assert!(bad(&|i| i[1] = 2), "the rows end before the entries");
    assert!(bad(&|i| i[2] = 9), "topic 9 >= K");
    assert!(bad(&|i| i[3] = 2 | (2 << 16)), "topics repeat in a row");
    assert!(bad(&|i| i[4] = 0), "a zero change");
    assert!(
        bad(&|i| {
            i.pop();
        }),
        "a short image"
    );
    assert!(unpack_delta(&image, shape, k, &words[..1]).is_err(), "rows");
    let rows = Packed {
        values: Values::U16,
        ..shape
    };
    assert!(unpack_delta(&image, rows, k, &words).is_err(), "row values");
}

#[test]
fn a_run_packs_the_same_on_any_number_of_threads() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (k, rows, p, fractional) in [
        (1000usize, 1500usize, 0.05, false),
        (1000, 1500, 0.05, true),
        (300, 4001, 0.3, false),
        (64, 20_000, 0.9, false),
    ] {
        let mut v = vec![0f32; rows * k];
        for x in v.iter_mut() {
            if rng.gen_bool(p) {
                *x = f32::from(rng.gen_range(1u16..=500));
            }
        }
        if fractional {
            v[rows * k - 1] = 0.5;
        }
        let (mut one, mut many) = (Vec::new(), Vec::new());
        let a = pack_rows_on(&v, k, &mut one, 1);
        let b = pack_rows_on(&v, k, &mut many, 3);
        assert_eq!(a, b, "K {k}");
        if a.is_some() {
            assert_eq!(one, many, "K {k}");
            let mut back = vec![0f32; v.len()];
            unpack_rows(&many, b.unwrap(), k, &mut back);
            assert_eq!(back, v);
        }
    }
}

/// The bit test for a count agrees with its plain definition (a whole number from 1 to 65,535)
/// over a sweep of every f32 bit pattern at a stride, and at the edges.
#[test]
fn counts_are_told_from_their_bits_as_from_their_value() {
    let plain = |v: f32| (1.0..=65_535.0).contains(&v) && v.fract() == 0.0;
    let edges = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        1.5,
        2.0,
        65_534.5,
        65_535.0,
        65_536.0,
        65_535.5,
        1e-45,
        f32::MAX,
        f32::INFINITY,
        f32::NAN,
        8_388_608.0,
        3.0,
    ];
    let swept = (0..=u32::MAX).step_by(997).map(f32::from_bits);
    for v in edges.into_iter().chain(swept) {
        assert_eq!(is_count(v), plain(v), "{v:e} ({:#x})", v.to_bits());
    }
    for c in 1..=65_535u16 {
        assert!(is_count(f32::from(c)), "{c}");
        assert_eq!(as_count(f32::from(c)), Some(c));
    }
}
