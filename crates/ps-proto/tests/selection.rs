//! `codec::encode_selection` (a payload from a selection made elsewhere, e.g. on a GPU) against
//! `codec::encode` of the same top-k chain: the same bytes in every format and index layout,
//! also when the values were already rounded to the format, and as an index part
//! (`encode_selection_indices`) followed by the values encoded alone; `encode_selection_decoded`'s
//! decoded values, which leave error feedback's residual; a selection's measure
//! (`index_sizes`, what a device sends instead of its indices) giving its layout and opening
//! (`index_layout`); and the refusals.

use proptest::prelude::*;
use ps_proto::codec::{
    decode, encode, encode_selection, encode_selection_decoded, encode_selection_indices,
    index_layout, index_sizes, top_k, CodecChain, Decoded, ErrorFeedback, Selector, ValueFormat,
};

fn chain(k: usize, format: ValueFormat) -> CodecChain {
    CodecChain {
        selectors: vec![Selector::TopKCount(k as u32)],
        format,
        ..CodecChain::raw()
    }
}

fn values() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![
            8 => -4.0f32..4.0,
            1 => Just(0.0f32),
            1 => -1e-6f32..1e-6,
        ],
        1..3000,
    )
}

/// Sorted distinct indices below `n`: scattered, in runs, or all of them.
fn selection() -> impl Strategy<Value = (usize, Vec<u32>)> {
    (1usize..5000, 0.0f64..1.0, 0u32..3).prop_flat_map(|(n, density, shape)| {
        prop::collection::vec(0.0f64..1.0, n).prop_map(move |draws| {
            let sel: Vec<u32> = (0..n as u32)
                .filter(|&i| match shape {
                    0 => draws[i as usize] < density,
                    // Runs: whole stretches of 16 in or out.
                    1 => draws[(i / 16 * 16) as usize] < density,
                    _ => true,
                })
                .collect();
            (n, sel)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// What a device sends instead of the indices (their measure, `index_sizes`) is enough for
    /// the host to pick the layout `encode_selection_indices` picks and write its opening: the
    /// index part is that opening followed by `body_bytes` bytes of codes, and is all opening
    /// for a dense layout.
    #[test]
    fn a_selections_measure_gives_its_layout_and_opening(
        (n, sel) in selection(),
        fi in 0usize..ValueFormat::ALL.len(),
    ) {
        let format = ValueFormat::ALL[fi];
        let mut part = Vec::new();
        let dense = encode_selection_indices(format, n, &sel, &mut part).unwrap();
        let layout = index_layout(&index_sizes(&sel), n, format);
        prop_assert_eq!(layout.mode, part[0]);
        prop_assert_eq!(dense, layout.is_dense());
        prop_assert!(part.starts_with(&layout.header));
        prop_assert_eq!(part.len() as u64, layout.header.len() as u64 + layout.body_bytes);
    }

    #[test]
    fn a_selection_made_elsewhere_encodes_to_the_same_bytes(
        v in values(),
        frac in 0.0f64..1.0,
        fi in 0usize..ValueFormat::ALL.len(),
    ) {
        let format = ValueFormat::ALL[fi];
        let n = v.len();
        let k = ((n as f64 * frac) as usize).min(n);
        let mut want = Vec::new();
        encode(&chain(k, format), &v, None, &mut want).unwrap();
        let sel = top_k(&v, k);
        let picked: Vec<f32> = sel.iter().map(|&i| v[i as usize]).collect();
        let mut got = Vec::new();
        encode_selection(format, n, &sel, &picked, &mut got).unwrap();
        prop_assert_eq!(&got, &want);
        // The index part, then the values encoded alone (as a device encodes the compact
        // selection, or the whole block with zeros where the layout is dense): the same bytes.
        let mut parts = Vec::new();
        let dense = encode_selection_indices(format, n, &sel, &mut parts).unwrap();
        let alone = CodecChain { format, ..CodecChain::raw() };
        let values_part = if dense {
            let mut all = vec![0f32; n];
            sel.iter().zip(&picked).for_each(|(&i, &v)| all[i as usize] = v);
            all
        } else {
            picked.clone()
        };
        encode(&alone, &values_part, None, &mut parts).unwrap();
        prop_assert_eq!(&parts, &want);
        // The same bytes with what the receiver decodes: what error feedback subtracts.
        let mut with = Vec::new();
        let q = encode_selection_decoded(format, n, &sel, &picked, &mut with).unwrap();
        prop_assert_eq!(&with, &want);
        let mut ef = ErrorFeedback::new(n);
        ef.compress(&chain(k, format), &v, None, &mut Vec::new()).unwrap();
        let mut kept = v.clone();
        for (&i, &q) in sel.iter().zip(&q) {
            let r = &mut kept[i as usize];
            *r = if r.is_finite() && q.is_finite() { *r - q } else { 0.0 };
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&kept), bits(ef.residual()));
        // A device hands back the values the receiver decodes: the same bytes again.
        if matches!(format, ValueFormat::F16 | ValueFormat::Bf16 | ValueFormat::F32) {
            // (Taken as decoded, not through a dense sum, which would turn -0 into +0.)
            let rounded: Vec<f32> = match decode(chain(k, format).wire_id(), &want, n).unwrap() {
                Decoded::Sparse { values, .. } => values,
                Decoded::Dense(all) => sel.iter().map(|&i| all[i as usize]).collect(),
            };
            let mut again = Vec::new();
            encode_selection(format, n, &sel, &rounded, &mut again).unwrap();
            prop_assert_eq!(&again, &want);
        }
    }
}

#[test]
fn bad_selections_are_refused() {
    let mut out = Vec::new();
    let f = ValueFormat::F16;
    assert!(
        encode_selection(f, 10, &[1, 2], &[1.0], &mut out).is_err(),
        "lengths"
    );
    assert!(
        encode_selection(f, 10, &[2, 2], &[1.0, 1.0], &mut out).is_err(),
        "repeated"
    );
    assert!(
        encode_selection(f, 10, &[3, 2], &[1.0, 1.0], &mut out).is_err(),
        "descending"
    );
    assert!(
        encode_selection(f, 10, &[10], &[1.0], &mut out).is_err(),
        "out of the block"
    );
    assert!(out.is_empty(), "nothing written on refusal");
    encode_selection(f, 10, &[], &[], &mut out).unwrap();
    assert_eq!(
        decode(chain(0, f).wire_id(), &out, 10)
            .unwrap()
            .into_dense(10)
            .unwrap(),
        vec![0.0; 10]
    );
}
