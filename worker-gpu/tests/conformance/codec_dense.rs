//! `DeviceDense` (`kernels/codec_dense.cu`) against the host's error feedback
//! (`ResidualKeeper`, the library's `ErrorFeedback` with a chain that selects nothing): every
//! lossy dense format, over several clocks of deltas whose values saturate f16 and bf16, fall in
//! their subnormal ranges, land on ties of the block formats and come in whole rows of zeros; the
//! payloads byte for byte and the residual kept; then a clock with ±inf and NaN, whose payloads
//! decode to the host's values (a NaN's bits may differ: the device's addition makes the
//! canonical NaN).

use ps_apps::app::device_codec::{DeltaBlock, DeviceChain, ResidualKeeper};
use ps_proto::codec::{decode, ValueFormat};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::dense::DeviceDense;

use crate::common::seed;

/// A finite value of one of the styles the CPU emulation of the kernels uses too
/// (`kernels_on_host/codec_dense_grid.rs`).
fn finite(rng: &mut ChaCha8Rng) -> f32 {
    let v = match rng.gen_range(0..4) {
        0 => rng.gen_range(-1.0f32..1.0),
        1 => [
            1e5f32,
            7e4,
            65504.0,
            3.3e38,
            1e-7,
            6e-8,
            1e-40,
            1.0 + 1.0 / 2048.0,
        ][rng.gen_range(0..8)],
        2 => [0.0f32, 1.0, 2.0, 3.0, 0.5][rng.gen_range(0..5)],
        _ => [1.0f32, 0.5, 0.25, 1.5 / 7.0][rng.gen_range(0..4)],
    };
    if rng.gen_bool(0.5) {
        -v
    } else {
        v
    }
}

fn delta(rng: &mut ChaCha8Rng, rows: usize, width: usize, special: bool) -> Vec<f32> {
    let mut d = Vec::with_capacity(rows * width);
    for _ in 0..rows {
        let zero = rng.gen_bool(0.2);
        for _ in 0..width {
            d.push(if zero {
                0.0
            } else if special && rng.gen_bool(0.02) {
                [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.gen_range(0..3)]
            } else {
                finite(rng)
            });
        }
    }
    d
}

/// Equal, or both NaN.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn dense_chains_encode_as_the_library_does() {
    let Some(gpu) = worker_gpu::gpu_or_skip("dense_chains_encode_as_the_library_does") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("dense chains"));
    let formats = [
        ValueFormat::F16,
        ValueFormat::Bf16,
        ValueFormat::Q8,
        ValueFormat::Q4,
        ValueFormat::Q2,
        ValueFormat::Sign,
    ];
    // One value; partial groups; rows wider than a warp; enough groups to fill the grid.
    let shapes = [(1usize, 1usize), (3, 50), (2, 300), (40, 33), (3000, 129)];
    for format in formats {
        for &(rows, width) in &shapes {
            let n = rows * width;
            let what = format!("{} {rows}x{width}", format.name());
            let mut dev = DeviceDense::new(gpu.clone(), rows, width, format).expect("encoder");
            let mut keeper = ResidualKeeper::new(&[(rows, width)]);
            let block = DeltaBlock {
                table: 0,
                first_row: 0,
                rows,
                k: n,
            };
            let chain = DeviceChain::Dense(format);
            for clock in 0..4 {
                let special = clock == 3;
                let d = delta(&mut rng, rows, width, special);
                let want = keeper
                    .encode_blocks(&[block], chain, &[&d])
                    .expect("keeper");
                let before = dev.moved();
                let got = dev.push(&d).expect("device");
                let moved = dev.moved() - before;
                let bytes = format.encoded_len(n) as u64;
                assert!(
                    (bytes..=bytes + 3).contains(&moved),
                    "{what} clock {clock}: {moved} bytes back for a payload of {bytes}"
                );
                if !special {
                    assert!(got == want[0], "{what} clock {clock}: payloads differ");
                } else {
                    let id = chain.chain(n).wire_id();
                    let g = decode(id, &got, n).unwrap().into_dense(n).unwrap();
                    let w = decode(id, &want[0], n).unwrap().into_dense(n).unwrap();
                    let bad = (0..n).find(|&i| !same(g[i], w[i]));
                    assert!(bad.is_none(), "{what} clock {clock}: value {bad:?} differs");
                }
                // The residual kept: the keeper's own, entry for entry (zero rows as zeros).
                let r = dev.residual().expect("residual");
                let mut k = vec![0.0f32; n];
                keeper.clone().take_into(0, &mut k).expect("take");
                let bad = (0..n).find(|&i| !(r[i] == k[i] || same(r[i], k[i])));
                assert!(
                    bad.is_none(),
                    "{what} clock {clock}: residual {bad:?} differs"
                );
            }
        }
    }
}
