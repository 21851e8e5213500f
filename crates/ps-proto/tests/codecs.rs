//! Property tests of the delta-compression codecs.
//!
//! The shared strategies and references are here; the tests are grouped by topic under
//! `codecs/`: value formats, selectors, error feedback, the key cache, malformed payloads, varints.

#[path = "codecs/error_feedback.rs"]
mod error_feedback;
#[path = "codecs/formats.rs"]
mod formats;
#[path = "codecs/key_cache.rs"]
mod key_cache;
#[path = "codecs/malformed.rs"]
mod malformed;
#[path = "codecs/selectors.rs"]
mod selectors;
#[path = "codecs/varints.rs"]
mod varints;

use proptest::prelude::*;
use ps_proto::codec::{CodecChain, Decoded};

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
