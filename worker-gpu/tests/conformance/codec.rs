//! The on-device delta codecs against the host codecs of `ps_proto::codec`: the f16 format bit
//! for bit, and top-k with error feedback (`ErrorFeedback` with `topk:K` / `topk:K,f16`) entry
//! for entry, residual included. Widening on the device is in `widen.rs`.

use half::f16;
use ps_apps::app::device_codec::{Keep, TopKCopies};
use ps_proto::codec::{
    decode, encode, k_of_fraction, top_k, CodecChain, Decoded, ErrorFeedback, Selector, ValueFormat,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use worker_gpu::cuda::codec::{CudaCodec, DeviceTopK, SentFormat};
use worker_gpu::cuda::GpuError;

use crate::common::seed;

/// The host's f16 encoding (`ps_proto`'s f16 value format), as bits.
pub(crate) fn host_f16(v: &[f32]) -> Vec<u16> {
    let chain: CodecChain = "f16".parse().expect("chain");
    let mut out = Vec::new();
    encode(&chain, v, None, &mut out).expect("host encode");
    out.chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// A standard normal (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Values that stress the f16 conversion: signed zeros, infinities, NaNs with payloads (quiet and
/// signalling), the saturation and rounding edges, f16 subnormal and underflow boundaries.
fn special_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7FC0_0000),
        f32::from_bits(0xFFC0_0000),
        f32::from_bits(0x7F80_0001),
        f32::from_bits(0xFF80_0001),
        f32::from_bits(0x7FA5_A5A5),
        f32::from_bits(0xFFC1_2345),
        f32::from_bits(0x7FFF_FFFF),
        f32::from_bits(0x7F80_2000),
        65504.0,
        -65504.0,
        65520.0,
        -65520.0,
        f32::from_bits(65520f32.to_bits() - 1),
        f32::from_bits(65520f32.to_bits() + 1),
        65519.0,
        65505.0,
        65536.0,
        -70000.0,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::from_bits(0x007F_FFFF),
        2f32.powi(-14),
        2f32.powi(-14) * (1.0 - 2f32.powi(-11)),
        2f32.powi(-24),
        -2f32.powi(-24),
        2f32.powi(-25),
        -2f32.powi(-25),
        2f32.powi(-25) * 1.000_001,
        3.0 * 2f32.powi(-26),
        2f32.powi(-26),
        1.0,
        -1.0,
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        2048.0 + 1.0,
        2048.0 + 3.0,
    ];
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(neg);
    v
}

fn first_mismatches(got: &[u16], want: &[u16], input: &[f32]) -> String {
    got.iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .take(8)
        .map(|(i, (g, w))| {
            format!(
                "[{i}] {:e} (0x{:08x}): device 0x{g:04x} host 0x{w:04x}",
                input[i],
                input[i].to_bits()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// f16 encoding: bits equal to the host's for normals at scales from 1e-8 (f16 subnormals and
/// underflow) to 1e6 (saturation), the special values, and random f32 bit patterns.
#[test]
fn f16_encode_matches_the_host_bit_for_bit() {
    let Some(gpu) = worker_gpu::gpu_or_skip("f16_encode_matches_the_host_bit_for_bit") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("codec f16 encode"));
    let mut codec = CudaCodec::new(gpu).expect("codec");
    let mut input = special_values();
    for scale in [
        1e-8f32, 1e-7, 1e-6, 1e-5, 1e-4, 1e-2, 1.0, 1e2, 1e4, 3e4, 6e4, 1e5, 1e6,
    ] {
        input.extend((0..20_000).map(|_| normal(&mut rng) * scale));
    }
    input.extend((0..100_000).map(|_| f32::from_bits(rng.gen())));
    let n = input.len();
    // The same length first with other data: an element the kernel skipped would keep it.
    let poison = vec![f32::NAN; n];
    let p = codec.encode_f16(&poison).expect("encode");
    assert!(p.iter().all(|&h| h == 0x7E00));
    let got = codec.encode_f16(&input).expect("encode");
    let want = host_f16(&input);
    assert_eq!(got.len(), n);
    assert!(
        got == want,
        "f16 bits differ from the host:\n{}",
        first_mismatches(&got, &want, &input)
    );
    // The saturation rule is the host's: finite overflow -> ±65504 (0x7bff), ±inf kept.
    let edges = codec
        .encode_f16(&[65520.0, -65520.0, 1e6, f32::INFINITY, f32::NEG_INFINITY])
        .expect("encode");
    assert_eq!(edges, [0x7BFF, 0xFBFF, 0x7BFF, 0x7C00, 0xFC00]);
}

/// Bitwise equality, NaN equal to any NaN: the device's arithmetic makes canonical NaNs
/// (0x7fffffff) where the host's keeps the NaN operand's payload.
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The values a device selects from (the residual plus `delta`) and the library's payload of
/// them, `ef` left with what it keeps.
fn host_compress(ef: &mut ErrorFeedback, chain: &CodecChain, delta: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let acc = ef
        .residual()
        .iter()
        .zip(delta)
        .map(|(r, d)| r + d)
        .collect();
    let mut want = Vec::new();
    ef.compress(chain, delta, None, &mut want)
        .expect("host compress");
    (acc, want)
}

fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = (0..got.len()).find(|&i| !same(got[i], want[i])) {
        let bad = (0..got.len()).filter(|&i| !same(got[i], want[i])).count();
        panic!(
            "{what}: {bad} entries differ, first [{i}]: device {:e} (0x{:08x}) host {:e} (0x{:08x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// The host path of one round: `ErrorFeedback::compress` with `topk:k[,f16]`, then what the
/// receiver decodes, as (indices ascending, values).
fn host_round(
    ef: &mut ErrorFeedback,
    format: SentFormat,
    delta: &[f32],
    k: usize,
) -> (Vec<u32>, Vec<f32>) {
    let chain = CodecChain {
        selectors: vec![Selector::TopKCount(k as u32)],
        warmup: 0,
        momentum: 0.0,
        format: match format {
            SentFormat::F32 => ValueFormat::F32,
            SentFormat::F16 => ValueFormat::F16,
        },
    };
    let n = delta.len();
    // The selection the encoder makes (top_k of the accumulated residual).
    let acc: Vec<f32> = ef
        .residual()
        .iter()
        .zip(delta)
        .map(|(r, d)| r + d)
        .collect();
    let sel = top_k(&acc, k.min(n));
    let mut out = Vec::new();
    ef.compress(&chain, delta, None, &mut out)
        .expect("host compress");
    match decode(chain.wire_id(), &out, n).expect("host decode") {
        Decoded::Sparse { indices, values } => {
            assert_eq!(indices, sel, "host: decoded indices vs top_k");
            (indices, values)
        }
        Decoded::Dense(d) => {
            let values = sel.iter().map(|&i| d[i as usize]).collect();
            (sel, values)
        }
    }
}

/// Runs `rounds` pushes of fresh deltas on the device and on the host; checks each round's
/// sent indices and values and the residual, then that no mass is lost.
fn compare_rounds(
    what: &str,
    dev: &mut DeviceTopK,
    format: SentFormat,
    k: usize,
    mut delta_of: impl FnMut(usize) -> Vec<f32>,
    rounds: usize,
) {
    let n = dev.len();
    let mut ef = ErrorFeedback::new(n);
    let mut delta_sum = vec![0f64; n];
    let mut sent_sum = vec![0f64; n];
    // Rounding bound of the f32 residual updates: each `r + d` and `r - q` rounds by at most
    // 2^-24 of its operands' magnitudes.
    let mut bound = vec![0f64; n];
    let mut finite = true;
    for round in 0..rounds {
        let delta = delta_of(round);
        assert!(
            n == 0 || delta.iter().any(|&x| x != 0.0),
            "{what}: all-zero delta"
        );
        for (i, &d) in delta.iter().enumerate() {
            delta_sum[i] += f64::from(d);
            let r = f64::from(ef.residual()[i]);
            bound[i] += 2.0 * (r.abs() + f64::from(d).abs()) * 2f64.powi(-24);
        }
        finite &= delta.iter().all(|x| x.is_finite());
        let (hi, hv) = host_round(&mut ef, format, &delta, k);
        let (di, dv) = dev.push(&delta, k).expect("device push");
        assert_eq!(di.len(), k.min(n), "{what} round {round}: sent count");
        assert!(
            di == hi,
            "{what} round {round}: sent indices differ ({} of {} in common)",
            di.iter().filter(|i| hi.binary_search(i).is_ok()).count(),
            hi.len()
        );
        assert_same(&format!("{what} round {round}: sent values"), &dv, &hv);
        for (&i, &v) in di.iter().zip(&dv) {
            sent_sum[i as usize] += f64::from(v);
        }
        let res = dev.residual().expect("residual");
        assert_same(
            &format!("{what} round {round}: residual"),
            &res,
            ef.residual(),
        );
    }
    if finite {
        // No mass lost: sent + residual == sum of deltas, up to the f32 rounding of the updates.
        let res = dev.residual().expect("residual");
        for i in 0..n {
            let got = sent_sum[i] + f64::from(res[i]);
            let err = (got - delta_sum[i]).abs();
            assert!(
                err <= bound[i] * 1.0001 + 1e-12 * delta_sum[i].abs() + f64::from(f32::MIN_POSITIVE),
                "{what}: mass at [{i}]: sent {} + residual {} vs deltas {} (error {err:e}, bound {:e})",
                sent_sum[i],
                res[i],
                delta_sum[i],
                bound[i]
            );
        }
    }
}

/// Top-k with error feedback on the device against the host path over 20 rounds (n ≈ 100k,
/// k = 1%): normals at changing scales (saturating f16 in one round), and small integers where
/// most magnitudes tie (the lower index wins), each sent as f32 and as f16.
#[test]
fn topk_with_error_feedback_matches_the_host() {
    let Some(gpu) = worker_gpu::gpu_or_skip("topk_with_error_feedback_matches_the_host") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("codec topk feedback"));
    let codec = CudaCodec::new(gpu).expect("codec");
    let n = 100_000 + rng.gen_range(0..1000);
    let k = k_of_fraction(0.01, n);
    let scales = [1.0f32, 1e-3, 1e2, 1e-6, 3e4, 0.5, 10.0];
    for format in [SentFormat::F32, SentFormat::F16] {
        let mut dev = codec.top_k(n, format).expect("top-k");
        let mut r = ChaCha8Rng::seed_from_u64(rng.gen());
        compare_rounds(
            &format!("normals {format:?}"),
            &mut dev,
            format,
            k,
            |round| {
                let s = scales[round % scales.len()];
                (0..n).map(|_| normal(&mut r) * s).collect()
            },
            20,
        );
        let mut dev = codec.top_k(n, format).expect("top-k");
        let mut r = ChaCha8Rng::seed_from_u64(rng.gen());
        compare_rounds(
            &format!("ties {format:?}"),
            &mut dev,
            format,
            k,
            |_| {
                (0..n)
                    .map(|_| r.gen_range(-3i32..=3) as f32 * 0.25)
                    .collect()
            },
            20,
        );
    }
}

/// Sizes 0, 1, 31, 33, the exact/sampled boundary 2^15 and one above 2^20: the f16 codec, and
/// top-k with k of 0, 1, 1% and everything (with an infinity and a NaN in a small block).
/// Also the typed errors and the residual's set / clear.
#[test]
fn codecs_at_edge_sizes() {
    let Some(gpu) = worker_gpu::gpu_or_skip("codecs_at_edge_sizes") else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("codec sizes"));
    let mut codec = CudaCodec::new(gpu).expect("codec");
    let specials = special_values();
    for n in [0usize, 1, 31, 33, 1 << 15, (1 << 20) + 7] {
        let mut v: Vec<f32> = (0..n).map(|_| normal(&mut rng) * 100.0).collect();
        for (d, s) in v.iter_mut().step_by(7).zip(&specials) {
            *d = *s;
        }
        let bits = codec.encode_f16(&v).expect("encode");
        assert_eq!(bits.len(), n);
        assert!(bits == host_f16(&v), "n {n}: f16 bits differ from the host");
        let back = codec.decode_f16(&bits).expect("decode");
        let want: Vec<f32> = bits.iter().map(|&h| f16::from_bits(h).to_f32()).collect();
        assert_eq!(back.len(), n);
        assert!(
            back.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "n {n}: decode differs from half"
        );

        let mut ks = vec![0, 1, k_of_fraction(0.01, n), n];
        ks.sort_unstable();
        ks.dedup();
        for k in ks {
            for format in [SentFormat::F32, SentFormat::F16] {
                let mut dev = codec.top_k(n, format).expect("top-k");
                let mut r = ChaCha8Rng::seed_from_u64(rng.gen());
                let what = format!("n {n} k {k} {format:?}");
                compare_rounds(
                    &what,
                    &mut dev,
                    format,
                    k,
                    |round| {
                        let mut d: Vec<f32> = (0..n).map(|_| normal(&mut r)).collect();
                        if n == 33 && round == 0 {
                            d[5] = f32::INFINITY;
                            d[20] = f32::NAN;
                        }
                        d
                    },
                    3,
                );
            }
        }
    }

    // Typed errors, and the residual kept, replaced and cleared.
    let n = 1000;
    let mut dev =
        DeviceTopK::new(std::sync::Arc::clone(codec.gpu()), n, SentFormat::F32).expect("top-k");
    assert!(matches!(dev.push(&[1.0; 999], 10), Err(GpuError::Input(_))));
    assert!(matches!(
        dev.set_residual(&[1.0; 3]),
        Err(GpuError::Input(_))
    ));
    let start: Vec<f32> = (0..n).map(|i| i as f32 - 500.0).collect();
    dev.set_residual(&start).expect("set");
    assert_same("set residual", &dev.residual().expect("residual"), &start);
    let (idx, val) = dev.push(&vec![0.5; n], 2).expect("push");
    assert_eq!(idx, [0, 999]);
    assert_eq!(val, [-499.5, 499.5]);
    let mut want: Vec<f32> = start.iter().map(|x| x + 0.5).collect();
    want[0] = 0.0;
    want[999] = 0.0;
    assert_same("after push", &dev.residual().expect("residual"), &want);
    dev.clear().expect("clear");
    assert!(dev
        .residual()
        .expect("residual")
        .iter()
        .all(|&x| x.to_bits() == 0));
}

/// A top-k whose selected values the host encodes (`select_host`, then
/// `device_codec::selection_payload`, then `subtract` of what the receiver decodes), and one
/// that does it all on the device (`push_encoded`: trim, encoding and feedback there, as the
/// MLP engine runs `topk:F,sign` or `topk:F,q4`): over rounds the payloads and the residual,
/// bit for bit, are `ErrorFeedback`'s, in the block formats (scales over the whole selection),
/// the half formats and f32, at 1%, at 60% (a dense layout for the formats that allow one) and
/// at 30% of 20,000 (more candidates than one block trims: the radix select of
/// `codec_select.cu`), with an infinity in one round (its
/// group's scale is not finite: the library zeroes what was sent of it). No NaN: the device's
/// addition makes the canonical one, so its bits would differ.
#[test]
fn a_selection_encoded_on_the_host_keeps_the_librarys_residual() {
    let Some(gpu) =
        worker_gpu::gpu_or_skip("a_selection_encoded_on_the_host_keeps_the_librarys_residual")
    else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("codec topk encoded on the host"));
    let codec = CudaCodec::new(gpu).expect("codec");
    let formats = [
        ValueFormat::Sign,
        ValueFormat::Q4,
        ValueFormat::Q8,
        ValueFormat::Q2,
        ValueFormat::Bf16,
        ValueFormat::F16,
        ValueFormat::F32,
    ];
    for format in formats {
        // The device's trim; a dense layout (the host encodes); more candidates than one block
        // trims (the radix select).
        for (n, frac) in [
            (50_000 + rng.gen_range(0..1000), 0.01),
            (3000, 0.6),
            (20_000, 0.3),
        ] {
            let k = k_of_fraction(frac, n);
            let mut dev = codec.top_k(n, SentFormat::F32).expect("top-k");
            let mut on_device = codec.top_k(n, SentFormat::F32).expect("top-k");
            // The oracles' prediction of its copies (`TopKCopies`); its set-up copies nothing
            // (the sample positions are made on the device).
            let mut copies = TopKCopies::new(n);
            assert_eq!(on_device.moved(), (0, 0), "set-up copies");
            let mut ef = ErrorFeedback::new(n);
            let chain = CodecChain {
                selectors: vec![Selector::TopKCount(k as u32)],
                warmup: 0,
                momentum: 0.0,
                format,
            };
            for round in 0..8 {
                let mut delta: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
                if round == 5 {
                    delta[7] = f32::INFINITY;
                }
                let (acc, want) = host_compress(&mut ef, &chain, &delta);
                let (idx, values) = dev.select_host(&delta, k).expect("select");
                let (got, decoded) =
                    ps_apps::app::device_codec::selection_payload(format, n, &idx, &values)
                        .expect("encode");
                dev.subtract(&idx, &decoded).expect("subtract");
                let what = format!("{format:?} n {n} k {k} round {round}");
                assert!(got == want, "{what}: payloads differ");
                assert_same(&what, &dev.residual().expect("residual"), ef.residual());
                // All of it on the device (trim, encoding, feedback): the same again.
                let before = on_device.moved();
                let got = on_device
                    .push_encoded(&delta, Keep::Count(k), format)
                    .expect("encoded on the device");
                assert!(
                    got == want,
                    "{what}: payloads differ, encoded on the device"
                );
                let res = on_device.residual().expect("residual");
                assert_same(&format!("{what}, on the device"), &res, ef.residual());
                let (h2d, d2h) = (
                    on_device.moved().0 - before.0,
                    on_device.moved().1 - before.1,
                );
                // (The test's delta upload is not counted: an engine's delta is on the device.)
                eprintln!(
                    "{what}: on the device {h2d} B in, {d2h} B out; payload {} B",
                    got.len()
                );
                assert_eq!(
                    (h2d, d2h),
                    copies.push(&acc, Keep::Count(k), format),
                    "{what}: the copies the oracles predict"
                );
            }
        }
    }
}

/// An energy stage encoded on the device (`push_encoded` with `Keep::Energy`: the count found
/// there, `codec_energy.cu`, then the chosen entries written and encoded as a top-k's): over
/// rounds the payloads and the residual, bit for bit, are `ErrorFeedback`'s with `energy:E`,
/// in a block format, a half format and f32, for fractions that keep a few entries and most of
/// them, on a block smaller than a tile and one of many tiles, with an infinity in one round
/// (every entry goes) and a round of zeros (nothing goes), and the copies are what the oracles
/// predict.
#[test]
fn an_energy_stage_encoded_on_the_device_keeps_the_librarys_residual() {
    let Some(gpu) = worker_gpu::gpu_or_skip(
        "an_energy_stage_encoded_on_the_device_keeps_the_librarys_residual",
    ) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed("codec energy encoded on the device"));
    let codec = CudaCodec::new(gpu).expect("codec");
    for format in [ValueFormat::Sign, ValueFormat::F16, ValueFormat::F32] {
        for (n, e) in [(3_000, 0.4f32), (70_000, 0.45), (20_000, 0.9)] {
            let mut on_device = codec.top_k(n, SentFormat::F32).expect("top-k");
            let mut copies = TopKCopies::new(n);
            let mut ef = ErrorFeedback::new(n);
            let chain = CodecChain {
                selectors: vec![Selector::Energy(e)],
                warmup: 0,
                momentum: 0.0,
                format,
            };
            for round in 0..6 {
                let mut delta: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
                if round == 3 {
                    delta[11] = f32::NEG_INFINITY;
                }
                if round == 4 {
                    // A zero delta: in f32 the infinity's round sent every entry and left
                    // nothing, so nothing goes; in the lossy formats what rounding left does.
                    delta.iter_mut().for_each(|d| *d = 0.0);
                }
                let (acc, want) = host_compress(&mut ef, &chain, &delta);
                let what = format!("{format:?} n {n} energy {e} round {round}");
                let before = on_device.moved();
                let got = on_device
                    .push_encoded(&delta, Keep::Energy(e), format)
                    .expect("encoded on the device");
                assert!(got == want, "{what}: payloads differ");
                let res = on_device.residual().expect("residual");
                assert_same(&what, &res, ef.residual());
                let moved = (
                    on_device.moved().0 - before.0,
                    on_device.moved().1 - before.1,
                );
                eprintln!(
                    "{what}: kept {} of {n}; {} B in, {} B out; payload {} B",
                    ps_proto::codec::k_of_energy(&acc, None, e),
                    moved.0,
                    moved.1,
                    got.len()
                );
                assert_eq!(
                    moved,
                    copies.push(&acc, Keep::Energy(e), format),
                    "{what}: the copies the oracles predict"
                );
            }
        }
    }
}
