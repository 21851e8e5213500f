//! The on-device delta codecs: `kernels/codecs.cu`, the device side of `ps_proto::codec`.
//!
//! * [`CudaCodec::encode_f16`] / [`CudaCodec::decode_f16`]: the f16 value format of
//!   `ps_proto::codec::ValueFormat::F16`, bit for bit: round to nearest even, a finite value
//!   beyond ±65504 saturates to ±65504, ±inf stays ±inf, NaN stays a quiet NaN with its sign and
//!   top payload bits; decoding is exact (as `half::f16::to_f32`).
//! * [`DeviceTopK`] (module `topk`): top-k selection with error feedback, the residual kept on the device across
//!   calls: `ps_proto::codec::ErrorFeedback::compress` with the chain `topk:K` (sent as f32) or
//!   `topk:K,f16`. Each push selects exactly the entries the host selects (`ps_proto::codec::top_k`:
//!   the `k` largest magnitudes, ties by lower index, NaN above everything), by the same sampled
//!   threshold (the same 4096 splitmix64 sample positions and the same starting quantile, lowered
//!   the same way when too few entries pass; the device samples blocks under `EXACT_BELOW` too,
//!   which the host takes whole: the selection is the same), and leaves the same residual, bit
//!   for bit.
//!
//! Host inputs and outputs go through pinned staging buffers kept across calls; large uploads
//! run on the copy stream, kernels and downloads on the compute stream (cudarc's per-buffer
//! events order the two). The `*_device` methods work on device-resident data and only enqueue,
//! for a worker whose deltas are already on the device (and for the benchmarks).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

pub use ps_apps::app::device_codec::Half;
use ps_apps::app::device_codec::LevelImage;

use super::buffers::{DevBuf, Pinned};
use super::bus::Bus;
pub use super::topk::{DeviceTopK, SentFormat};
use super::widen::{launch_widen, NarrowIn};
use super::{Call, Gpu, GpuError};

/// Threads per block of the element-wise kernels and of the compaction.
pub(super) const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the grid-stride kernels.
const BLOCKS_PER_SM: u32 = 8;
/// The threshold kernel's block: exactly `CODEC_SORT_THREADS` threads.
pub(super) const SORT_THREADS: u32 = 1024;
/// The host selection's sample size (the kernel's `CODEC_MAX_SAMPLE`), its exact-selection
/// bound, its sample positions and its first threshold rank: the device selects as it does.
pub use ps_proto::codec::{initial_above, sample_positions, EXACT_BELOW, TOPK_SAMPLE as SAMPLE};

/// The kernel's shared-memory sample (`CODEC_MAX_SAMPLE` in `kernels/codecs.cu`) holds every
/// position the host samples: a larger host sample would be cut short on the device silently.
const _: () = assert!(SAMPLE <= 4096);

/// The entry points of `kernels/codecs.cu`.
#[derive(Clone)]
pub(super) struct Kernels {
    pub(super) to_f16: CudaFunction,
    pub(super) to_f32: CudaFunction,
    pub(super) samples: CudaFunction,
    pub(super) threshold: CudaFunction,
    pub(super) compact: CudaFunction,
    pub(super) accumulate: CudaFunction,
    pub(super) subtract: CudaFunction,
}

impl Kernels {
    pub(super) fn load(gpu: &Gpu) -> Result<Self, GpuError> {
        Ok(Kernels {
            to_f16: gpu.function("codecs", "codec_f32_to_f16")?,
            to_f32: gpu.function("codecs", "codec_f16_to_f32")?,
            samples: gpu.function("codecs", "codec_topk_samples")?,
            threshold: gpu.function("codecs", "codec_topk_threshold")?,
            compact: gpu.function("codecs", "codec_topk_compact")?,
            accumulate: gpu.function("codecs", "codec_ef_accumulate")?,
            subtract: gpu.function("codecs", "codec_ef_subtract")?,
        })
    }
}

/// A grid-stride launch over `work` items.
pub(super) fn elementwise(gpu: &Gpu, work: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (gpu.grid_for(work as u64, BLOCK, BLOCKS_PER_SM), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn too_short(what: &str, have: usize, need: usize) -> GpuError {
    GpuError::Input(format!(
        "{what}: a device buffer of {have} elements for {need}"
    ))
}

/// `codec_f32_to_f16` over the first `n` elements: `out = bits(x)`, and `round_trip` (when
/// given) the value the receiver decodes.
pub(super) fn launch_to_f16(
    gpu: &Gpu,
    k: &Kernels,
    x: &CudaSlice<f32>,
    out: &mut CudaSlice<u16>,
    round_trip: Option<&mut CudaSlice<f32>>,
    n: usize,
) -> Result<(), GpuError> {
    if x.len() < n || out.len() < n {
        return Err(too_short("codec_f32_to_f16", x.len().min(out.len()), n));
    }
    if round_trip.as_ref().is_some_and(|r| r.len() < n) {
        return Err(too_short("codec_f32_to_f16 round trip", 0, n));
    }
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    let null: u64 = 0;
    let cfg = elementwise(gpu, n);
    let mut b = gpu.compute.launch_builder(&k.to_f16);
    b.arg(x).arg(out);
    match round_trip {
        Some(r) => b.arg(r),
        None => b.arg(&null),
    };
    b.arg(&n64);
    // SAFETY: x, out and round_trip (or NULL) hold at least n elements (checked above);
    // codec_f32_to_f16(const float*, unsigned short*, float*, unsigned long long).
    unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_f32_to_f16)")?;
    Ok(())
}

/// The f16 codec and the factory of [`DeviceTopK`] compressors on one device.
pub struct CudaCodec {
    gpu: Arc<Gpu>,
    k: Kernels,
    f32_host: Pinned<f32>,
    u16_host: Pinned<u16>,
    d_f32: DevBuf<f32>,
    d_u16: DevBuf<u16>,
}

impl CudaCodec {
    /// Loads the codec kernels on `gpu` (compiled by NVRTC on first use in the process).
    pub fn new(gpu: Arc<Gpu>) -> Result<Self, GpuError> {
        Ok(CudaCodec {
            k: Kernels::load(&gpu)?,
            f32_host: Pinned::new(&gpu.ctx)?,
            u16_host: Pinned::new(&gpu.ctx)?,
            d_f32: DevBuf::default(),
            d_u16: DevBuf::default(),
            gpu,
        })
    }

    /// The device.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The f16 bits of every value, as `ps_proto`'s f16 format writes them.
    pub fn encode_f16(&mut self, values: &[f32]) -> Result<Vec<u16>, GpuError> {
        let n = values.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.f32_host.fill(values)?;
        self.d_f32.upload(&self.gpu.copy, &self.f32_host)?;
        self.d_u16.ensure(&self.gpu.compute, n)?;
        launch_to_f16(
            &self.gpu,
            &self.k,
            self.d_f32.get(),
            self.d_u16.get_mut(),
            None,
            n,
        )?;
        self.u16_host
            .download(&self.gpu.compute, self.d_u16.get(), n)?;
        Ok(self.u16_host.host()?.to_vec())
    }

    /// The f32 value of every f16 bit pattern (exact; NaN quiet with its payload).
    pub fn decode_f16(&mut self, bits: &[u16]) -> Result<Vec<f32>, GpuError> {
        let n = bits.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.u16_host.fill(bits)?;
        self.d_u16.upload(&self.gpu.copy, &self.u16_host)?;
        self.d_f32.ensure(&self.gpu.compute, n)?;
        launch_widen(
            &self.gpu,
            (
                &self.k.to_f32,
                "codec_f16_to_f32",
                "cuLaunchKernel(codec_f16_to_f32)",
            ),
            self.d_u16.get(),
            self.d_f32.get_mut(),
            n,
        )?;
        self.f32_host
            .download(&self.gpu.compute, self.d_f32.get(), n)?;
        Ok(self.f32_host.host()?.to_vec())
    }

    /// The values of a code image (a `q8`, `q4`, `q2` or `sign` pull codec's rows found again
    /// as codes, `ps_apps::app::device_codec::level_image`), copied in and widened on the device
    /// as a loading engine widens them (`codec_levels_to_f32`).
    pub fn decode_levels(&mut self, image: &LevelImage) -> Result<Vec<f32>, GpuError> {
        let mut bus = Bus::new(&self.gpu.ctx);
        let mut narrow = NarrowIn::default();
        narrow.levels_in(&self.gpu, &mut bus, image, &mut self.d_f32)?;
        bus.settle()?;
        self.f32_host
            .download(&self.gpu.compute, self.d_f32.get(), image.len())?;
        Ok(self.f32_host.host()?.to_vec())
    }

    /// Enqueues on the compute stream `out[i] = f16 bits of x[i]` for `i < n`, on device-resident
    /// buffers (no copy, no wait).
    pub fn encode_f16_device(
        &self,
        x: &CudaSlice<f32>,
        out: &mut CudaSlice<u16>,
        n: usize,
    ) -> Result<(), GpuError> {
        launch_to_f16(&self.gpu, &self.k, x, out, None, n)
    }

    /// A top-k compressor with error feedback for blocks of `n` values, its residual zero.
    pub fn top_k(&self, n: usize, format: SentFormat) -> Result<DeviceTopK, GpuError> {
        DeviceTopK::with_kernels(Arc::clone(&self.gpu), self.k.clone(), n, format)
    }
}
