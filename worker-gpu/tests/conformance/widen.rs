//! Values that crossed narrow, widened on the device (`kernels/codecs.cu`): every f16 pattern
//! decodes as `half` does and round-trips through the host's encoder, and rows of codes (a
//! quantized pull codec's) widen to the rows bit for bit.

use half::f16;
use ps_apps::app::device_codec::level_image;
use ps_proto::codec::ValueFormat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::codec::CudaCodec;

use crate::codec::host_f16;

/// Every f16 bit pattern: decoding equals `half::f16::to_f32` bit for bit (NaNs included), and
/// encoding the decoded value gives the pattern back (a signalling NaN comes back quiet, as on
/// the host).
#[test]
fn f16_every_pattern_decodes_as_half_and_round_trips() {
    let Some(gpu) = worker_gpu::gpu_or_skip("f16_every_pattern_decodes_as_half_and_round_trips")
    else {
        return;
    };
    let mut codec = CudaCodec::new(gpu).expect("codec");
    let all: Vec<u16> = (0..=u16::MAX).collect();
    // Poison the device buffers with other data of the same length first.
    let reversed: Vec<u16> = all.iter().rev().copied().collect();
    codec.decode_f16(&reversed).expect("decode");
    let decoded = codec.decode_f16(&all).expect("decode");
    assert_eq!(decoded.len(), all.len());
    for (&h, &d) in all.iter().zip(&decoded) {
        let want = f16::from_bits(h).to_f32();
        assert_eq!(
            d.to_bits(),
            want.to_bits(),
            "decode 0x{h:04x}: device 0x{:08x} half 0x{:08x}",
            d.to_bits(),
            want.to_bits()
        );
    }
    codec.encode_f16(&vec![1.0; all.len()]).expect("encode");
    let again = codec.encode_f16(&decoded).expect("encode");
    let host = host_f16(&decoded);
    for ((&h, &g), &w) in all.iter().zip(&again).zip(&host) {
        let is_nan = h & 0x7C00 == 0x7C00 && h & 0x03FF != 0;
        let want = if is_nan { h | 0x0200 } else { h };
        assert_eq!(g, want, "round trip of 0x{h:04x}: 0x{g:04x}");
        assert_eq!(
            g, w,
            "round trip of 0x{h:04x}: device 0x{g:04x} host 0x{w:04x}"
        );
    }
}

/// Rows a `q8`, `q4`, `q2` or `sign` pull codec decoded, found again as codes on the host
/// (`level_image`), cross as codes and widen on the device (`codec_levels_to_f32`) to the rows,
/// bit for bit: several replies side by side (a segment each, groups cut short), zero rows,
/// tiny and huge scales, and a large read (a Netflix-shaped item table at rank 128).
#[test]
fn rows_of_codes_widen_on_the_device_bit_for_bit() {
    let Some(gpu) = worker_gpu::gpu_or_skip("rows_of_codes_widen_on_the_device_bit_for_bit") else {
        return;
    };
    let mut codec = CudaCodec::new(gpu).expect("codec");
    let mut rng = ChaCha8Rng::seed_from_u64(0x1e7e1);
    for format in [
        ValueFormat::Q8,
        ValueFormat::Q4,
        ValueFormat::Q2,
        ValueFormat::Sign,
    ] {
        for sizes in [vec![300usize, 77, 500], vec![17_770 * 128]] {
            let mut rows = Vec::new();
            for n in sizes {
                let scale = [1e-30f32, 1e-3, 1.0, 1e30][rng.gen_range(0..4)];
                let values: Vec<f32> = (0..n)
                    .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
                    .collect();
                rows.extend(format.round_trip(&values));
                rows.extend([0.0; 40]);
            }
            let image = level_image(&rows).expect("an image");
            let back = codec.decode_levels(&image).expect("widen");
            assert_eq!(back.len(), rows.len());
            for (i, (b, r)) in back.iter().zip(&rows).enumerate() {
                assert_eq!(b.to_bits(), r.to_bits(), "{format:?}: value {i}");
            }
        }
    }
}
