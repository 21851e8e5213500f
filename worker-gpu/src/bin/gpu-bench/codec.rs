//! The delta codecs of `kernels/codecs.cu` (`CudaCodec`, `DeviceTopK`): rates in GB/s of f32
//! INPUT (4 bytes per value), each next to the floor set by the device's copy bandwidth for the
//! bytes the kernel must move, also expressed in input GB/s.
//!
//! * f16 packing, device-resident (kernel alone, events): reads 4 and writes 2 bytes per value.
//! * top-k selection at k = 1%, device-resident: the sampled threshold and one compaction pass
//!   (events): reads 4 bytes per value and writes 8 per candidate.
//! * the error-feedback step `residual += delta` (events): reads 8 and writes 4 bytes per value.
//! * a whole top-k push of a device-resident delta (wall): accumulate, select, the candidates
//!   copied back and trimmed on the host, the sent entries subtracted.
//! * a whole top-k push encoded on the device (wall, `push_encoded_view` in sign at k = 1% and
//!   15%: the radix select past 4,096 candidates, the index part coded by one warp, the values
//!   encoded, only the measure, codes and values copied back), with the bytes it copied: what
//!   says whether coding the indices there costs more time than copying them would.
//! * `encode_f16` of a host slice (wall): the staging copies and PCIe transfers included, next to
//!   the same device floor, to show what the copies cost.

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use ps_apps::app::device_codec::Keep;
use ps_proto::codec::ValueFormat;
use worker_gpu::cuda::codec::{CudaCodec, SentFormat};
use worker_gpu::cuda::{Gpu, GpuError};

use crate::{median_event_ms, median_wall_ms, Ceilings, Row};

fn driver(call: &'static str) -> impl Fn(cudarc::driver::DriverError) -> GpuError {
    move |e| GpuError::Driver {
        call,
        error: e.to_string(),
    }
}

/// Deterministic test values: roughly symmetric, magnitudes spread over six decades (so that a
/// 1% quantile is a real threshold), no zeros.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = ((z >> 40) as f32 + 0.5) / (1u64 << 24) as f32; // (0, 1)
            let e = ((z >> 8) & 0xFFFF) as f32 / 65536.0 * 6.0 - 3.0; // [-3, 3)
            let sign = if z & 1 == 0 { 1.0 } else { -1.0 };
            sign * u * 10f32.powf(e)
        })
        .collect()
}

fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

pub fn run(gpu: &Arc<Gpu>, ceil: &Ceilings, quick: bool) -> Result<Vec<Row>, GpuError> {
    let s = gpu.compute_stream();
    let mut codec = CudaCodec::new(Arc::clone(gpu))?;
    let bytes = if quick { 32usize << 20 } else { 256usize << 20 };
    let n = bytes / 4;
    let reps = if quick { 5 } else { 20 };
    let input_gb = (4 * n) as f64 / 1e9;
    let host = values(n, 1);
    let x: CudaSlice<f32> = s.clone_htod(&host).map_err(driver("cuMemcpyHtoD"))?;
    let mut rows = Vec::new();

    // f16 packing, device-resident.
    {
        let mut out: CudaSlice<u16> = s.alloc_zeros(n).map_err(driver("cuMemAlloc"))?;
        let (ms, spread) =
            median_event_ms(s, 3, reps, || codec.encode_f16_device(&x, &mut out, n))?;
        let (floor_rate, bound) = ceil.floor_rate(input_gb, 0.0, (6 * n) as f64);
        rows.push(Row {
            bench: "codec f16 pack kernel".into(),
            shape: format!("{} f32 in, device-resident", mib(4 * n)),
            rate: input_gb / (ms * 1e-3),
            unit: "GB/s in",
            floor_rate,
            bound,
            peer: None,
            note: format!(
                "{ms:.3} ms median of {reps}, spread {:.1}%; floor: 6 B/value (read 4, write 2) \
                 at the copy bandwidth",
                spread * 100.0
            ),
        });
    }

    // Top-k selection at k = 1%: threshold + one compaction, device-resident.
    let k = n.div_ceil(100);
    let mut topk = codec.top_k(n, SentFormat::F32)?;
    topk.set_residual(&host)?;
    {
        let (ms, spread) = median_event_ms(s, 3, reps, || topk.enqueue_candidates(k))?;
        let count = topk.candidate_count()?;
        let moved = (4 * n + 8 * count) as f64;
        let (floor_rate, bound) = ceil.floor_rate(input_gb, 0.0, moved);
        rows.push(Row {
            bench: "codec top-k select kernels".into(),
            shape: format!("{} f32, k = 1% ({k})", mib(4 * n)),
            rate: input_gb / (ms * 1e-3),
            unit: "GB/s in",
            floor_rate,
            bound,
            peer: None,
            note: format!(
                "{ms:.3} ms median of {reps}, spread {:.1}%; sampled threshold (4096-entry \
                 bitonic sort, one block) + compaction; {count} candidates ({:.2} k); floor: \
                 read 4 B/value + 8 B/candidate",
                spread * 100.0,
                count as f64 / k as f64
            ),
        });
    }

    // Error feedback: residual += delta.
    {
        let (ms, spread) = median_event_ms(s, 3, reps, || topk.accumulate_device(&x))?;
        let (floor_rate, bound) = ceil.floor_rate(input_gb, 0.0, (12 * n) as f64);
        rows.push(Row {
            bench: "codec ef accumulate kernel".into(),
            shape: format!("{} f32, device-resident", mib(4 * n)),
            rate: input_gb / (ms * 1e-3),
            unit: "GB/s in",
            floor_rate,
            bound,
            peer: None,
            note: format!(
                "{ms:.3} ms median of {reps}, spread {:.1}%; floor: 12 B/value (read residual \
                 and delta, write residual); the subtract of the sent entries touches only k",
                spread * 100.0
            ),
        });
    }

    // A whole push of a device-resident delta, host trim included (wall).
    {
        let wall_reps = reps.min(10);
        let mut sent = 0usize;
        let (ms, spread) = median_wall_ms(gpu, 1, wall_reps, || {
            sent = topk.push_device(&x, k)?.0.len();
            Ok(())
        })?;
        let moved = (12 * n + 4 * n + 8 * (k + k / 2)) as f64;
        let (floor_rate, bound) = ceil.floor_rate(input_gb, 0.0, moved);
        rows.push(Row {
            bench: "codec top-k push (wall)".into(),
            shape: format!("{} f32, k = 1% ({k}), f32 sent", mib(4 * n)),
            rate: input_gb / (ms * 1e-3),
            unit: "GB/s in",
            floor_rate,
            bound,
            peer: None,
            note: format!(
                "{ms:.3} ms median of {wall_reps}, spread {:.1}%; accumulate + select + \
                 candidates to the host + trim to {sent} + subtract; floor: 16 B/value + \
                 candidates on the device alone",
                spread * 100.0
            ),
        });
    }
    drop(topk);

    // A whole push encoded on the device (wall), as the MLP and MF engines run `topk:F,sign`.
    // At most 4 Mi values (16 MiB): the index coding is one warp's walk over the k indices.
    let n = n.min(4 << 20);
    let input_gb = (4 * n) as f64 / 1e9;
    let keeps = [
        (
            Keep::Count(n.div_ceil(100)),
            format!("k = 1% ({})", n.div_ceil(100)),
        ),
        (
            Keep::Count((15 * n).div_ceil(100)),
            format!("k = 15% ({})", (15 * n).div_ceil(100)),
        ),
        (
            Keep::Energy(0.4),
            "energy:0.4 (k counted on the device)".into(),
        ),
    ];
    for (keep, what) in keeps {
        let mut enc = codec.top_k(n, SentFormat::F32)?;
        let wall_reps = reps.min(10);
        let mut payload = 0usize;
        let before = enc.moved();
        let (ms, spread) = median_wall_ms(gpu, 1, wall_reps, || {
            payload = enc
                .push_encoded_view(&x.slice(0..n), keep, ValueFormat::Sign)?
                .len();
            Ok(())
        })?;
        let pushes = (1 + wall_reps) as u64;
        let out = (enc.moved().1 - before.1) / pushes;
        let (floor_rate, bound) = ceil.floor_rate(input_gb, 0.0, (16 * n) as f64);
        rows.push(Row {
            bench: "codec top-k push encoded on the device (wall)".into(),
            shape: format!("{} f32, {what}, sign", mib(4 * n)),
            rate: input_gb / (ms * 1e-3),
            unit: "GB/s in",
            floor_rate,
            bound,
            peer: None,
            note: format!(
                "{ms:.3} ms median of {wall_reps}, spread {:.1}%; accumulate + select (radix past \
                 4,096 candidates; an energy stage: radix over the block) + index codes (one \
                 warp) + sign values + scatter; {out} B copied back a push for a {payload} B \
                 payload; floor: 16 B/value on the device",
                spread * 100.0,
            ),
        });
    }
    drop(x);

    // encode_f16 of a host slice: pinned staging, H2D, kernel, D2H, copy out (wall).
    {
        let n = if quick {
            (16usize << 20) / 4
        } else {
            (64usize << 20) / 4
        };
        let input_gb = (4 * n) as f64 / 1e9;
        let src = &host[..n];
        let wall_reps = reps.min(10);
        let (ms, spread) = median_wall_ms(gpu, 2, wall_reps, || codec.encode_f16(src).map(|_| ()))?;
        let (floor_rate, bound) = ceil.floor_rate(input_gb, 0.0, (6 * n) as f64);
        let pcie = (6 * n) as f64 / 1e9 / (ms * 1e-3);
        rows.push(Row {
            bench: "codec encode_f16 host (wall)".into(),
            shape: format!("{} f32 host slice -> u16 Vec", mib(4 * n)),
            rate: input_gb / (ms * 1e-3),
            unit: "GB/s in",
            floor_rate,
            bound,
            peer: None,
            note: format!(
                "{ms:.3} ms median of {wall_reps}, spread {:.1}%; includes the host copies into \
                 and out of pinned staging and 6 B/value over PCIe ({pcie:.1} GB/s of transfers \
                 overall); floor is the device-only one",
                spread * 100.0
            ),
        });
    }
    Ok(rows)
}
