//! The device's Philox uniforms (`kernels/rng.cu` through `CudaRng`) against the host half
//! `ps_apps::philox`: the same bits, index by index, on ~1M indices at several offsets (some
//! past 2^32, so the counter's high word matters), seeds and streams, with partial Philox blocks
//! at both ends.

use ps_apps::philox::{fill_uniforms, uniform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::rng::CudaRng;
use worker_gpu::cuda::GpuError;

use crate::common::seed;

/// Compares the device's uniforms with the host's, bit for bit.
fn compare(engine: &mut CudaRng, seed: u64, stream: u32, first: u64, len: usize) {
    let mut device = vec![f32::NAN; len];
    engine
        .uniforms(seed, stream, first, &mut device)
        .unwrap_or_else(|e| panic!("uniforms: {e}"));
    let mut host = vec![f32::NAN; len];
    fill_uniforms(seed, stream, first, &mut host);
    let mismatches = device
        .iter()
        .zip(&host)
        .filter(|(d, h)| d.to_bits() != h.to_bits())
        .count();
    if let Some(j) = (0..len).find(|&j| device[j].to_bits() != host[j].to_bits()) {
        panic!(
            "seed {seed:#x} stream {stream} first {first} len {len}: {mismatches} mismatches, \
             the first at index {}: device {} host {}",
            first + j as u64,
            device[j],
            host[j]
        );
    }
}

#[test]
fn philox_uniforms_match_the_host_bit_for_bit() {
    let Some(gpu) = worker_gpu::gpu_or_skip("philox_uniforms_match_the_host_bit_for_bit") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("rng philox uniforms"));
    let mut engine = CudaRng::new(gpu).expect("engine");
    let mut total = 0usize;
    // (seed, stream, first index, length): aligned and unaligned starts and ends, the 2^32
    // boundary of the index (block 2^30) and of the block counter's low word (index 2^34), the
    // end of the stream, and a random seed, stream and offset.
    let cases: [(u64, u32, u64, usize); 8] = [
        (0, 0, 0, 1 << 18),
        (1, 7, 3, 250_001),
        (u64::MAX, u32::MAX, (1 << 32) - 5, 100_003),
        (0x0123_4567_89ab_cdef, 1, (1 << 34) - 2, 200_002),
        (rng.gen(), rng.gen(), rng.gen::<u64>() >> 1, 262_147),
        (42, 0, u64::MAX - 1001, 1001),
        (42, 3, 5, 1),
        (42, 3, 5, 0),
    ];
    for (s, stream, first, len) in cases {
        compare(&mut engine, s, stream, first, len);
        total += len;
    }
    assert!(total >= 1_000_000, "{total} indices");
    // The values themselves, at a few indices, from the single-draw function.
    let mut one = [0.0f32; 1];
    for index in [0u64, 1, 3, 4, 1 << 32, (1 << 40) + 3] {
        engine.uniforms(9, 2, index, &mut one).expect("uniforms");
        assert_eq!(
            one[0].to_bits(),
            uniform(9, 2, index).to_bits(),
            "index {index}"
        );
    }
}

#[test]
fn philox_uniforms_refuse_bad_ranges() {
    let Some(gpu) = worker_gpu::gpu_or_skip("philox_uniforms_refuse_bad_ranges") else {
        return;
    };
    let mut engine = CudaRng::new(gpu).expect("engine");
    let err = engine
        .uniforms(0, 0, u64::MAX - 2, &mut [0.0; 4])
        .unwrap_err();
    assert!(matches!(err, GpuError::Input(_)), "{err}");
}
