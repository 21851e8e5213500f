//! The on-device delta codecs: `kernels/codecs.cu`, the device side of `ps_proto::codec`.
//!
//! * [`CudaCodec::encode_f16`] / [`CudaCodec::decode_f16`]: the f16 value format of
//!   `ps_proto::codec::ValueFormat::F16`, bit for bit: round to nearest even, a finite value
//!   beyond ±65504 saturates to ±65504, ±inf stays ±inf, NaN stays a quiet NaN with its sign and
//!   top payload bits; decoding is exact (as `half::f16::to_f32`).
//! * [`DeviceTopK`]: top-k selection with error feedback, the residual kept on the device across
//!   calls: `ps_proto::codec::ErrorFeedback::compress` with the chain `topk:K` (sent as f32) or
//!   `topk:K,f16`. Each push selects exactly the entries the host selects (`ps_proto::codec::top_k`:
//!   the `k` largest magnitudes, ties by lower index, NaN above everything), by the same sampled
//!   threshold (the same 4096 splitmix64 sample positions and the same starting quantile, lowered
//!   the same way when too few entries pass), and leaves the same residual, bit for bit.
//!
//! Host inputs and outputs go through pinned staging buffers kept across calls; large uploads
//! run on the copy stream, kernels and downloads on the compute stream (cudarc's per-buffer
//! events order the two). The `*_device` methods work on device-resident data and only enqueue,
//! for a worker whose deltas are already on the device (and for the benchmarks).

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

use super::buffers::{DevBuf, Pinned};
use super::{Call, Gpu, GpuError};

/// Threads per block of the element-wise kernels and of the compaction.
const BLOCK: u32 = 256;
/// Blocks per multiprocessor of the grid-stride kernels.
const BLOCKS_PER_SM: u32 = 8;
/// The threshold kernel's block: exactly `CODEC_SORT_THREADS` threads.
const SORT_THREADS: u32 = 1024;
/// The host selection's sample size (the kernel's `CODEC_MAX_SAMPLE`), its exact-selection
/// bound, its sample positions and its first threshold rank: the device selects as it does.
pub use ps_proto::codec::{initial_above, sample_positions, EXACT_BELOW, TOPK_SAMPLE as SAMPLE};

/// The entry points of `kernels/codecs.cu`.
#[derive(Clone)]
struct Kernels {
    to_f16: CudaFunction,
    to_f32: CudaFunction,
    threshold: CudaFunction,
    compact: CudaFunction,
    accumulate: CudaFunction,
    subtract: CudaFunction,
}

impl Kernels {
    fn load(gpu: &Gpu) -> Result<Self, GpuError> {
        Ok(Kernels {
            to_f16: gpu.function("codecs", "codec_f32_to_f16")?,
            to_f32: gpu.function("codecs", "codec_f16_to_f32")?,
            threshold: gpu.function("codecs", "codec_topk_threshold")?,
            compact: gpu.function("codecs", "codec_topk_compact")?,
            accumulate: gpu.function("codecs", "codec_ef_accumulate")?,
            subtract: gpu.function("codecs", "codec_ef_subtract")?,
        })
    }
}

/// A grid-stride launch over `work` items.
fn elementwise(gpu: &Gpu, work: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (gpu.grid_for(work as u64, BLOCK, BLOCKS_PER_SM), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn too_short(what: &str, have: usize, need: usize) -> GpuError {
    GpuError::Input(format!(
        "{what}: a device buffer of {have} elements for {need}"
    ))
}

/// `codec_f32_to_f16` over the first `n` elements: `out = bits(x)`, and `round_trip` (when
/// given) the value the receiver decodes.
fn launch_to_f16(
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
        let n64 = n as u64;
        let cfg = elementwise(&self.gpu, n);
        {
            let mut b = self.gpu.compute.launch_builder(&self.k.to_f32);
            b.arg(self.d_u16.get()).arg(self.d_f32.get_mut()).arg(&n64);
            // SAFETY: both buffers hold at least n elements (upload and ensure above);
            // codec_f16_to_f32(const unsigned short*, float*, unsigned long long).
            unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_f16_to_f32)")?;
        }
        self.f32_host
            .download(&self.gpu.compute, self.d_f32.get(), n)?;
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

/// How the selected values travel (the value format of the host chain `topk:K[,f16]`); error
/// feedback subtracts what the receiver decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentFormat {
    /// f32, lossless: a sent entry's residual becomes 0.
    F32,
    /// f16 (as [`CudaCodec::encode_f16`]): a sent entry keeps its quantisation error.
    F16,
}

/// Error-feedback top-k compression of a block of `n` values whose residual stays on the device:
/// the device side of `ps_proto::codec::ErrorFeedback` with the chain `topk:K` or `topk:K,f16`.
pub struct DeviceTopK {
    gpu: Arc<Gpu>,
    k: Kernels,
    format: SentFormat,
    n: usize,
    residual: DevBuf<f32>,
    /// The sample positions are on the device (blocks of at least `EXACT_BELOW` only).
    sampled: bool,
    d_samples: DevBuf<u32>,
    d_threshold: DevBuf<u32>,
    d_count: DevBuf<u32>,
    d_cand_idx: DevBuf<u32>,
    d_cand_val: DevBuf<f32>,
    d_delta: DevBuf<f32>,
    d_sent_idx: DevBuf<u32>,
    d_sent_raw: DevBuf<f32>,
    d_sent: DevBuf<f32>,
    d_sent_bits: DevBuf<u16>,
    delta_host: Pinned<f32>,
    scalar_host: Pinned<u32>,
    cand_idx_host: Pinned<u32>,
    cand_val_host: Pinned<f32>,
    sent_idx_host: Pinned<u32>,
    sent_val_host: Pinned<f32>,
    samples_host: Pinned<u32>,
}

impl DeviceTopK {
    /// A compressor for blocks of `n` values on `gpu`, its residual zero.
    pub fn new(gpu: Arc<Gpu>, n: usize, format: SentFormat) -> Result<Self, GpuError> {
        let k = Kernels::load(&gpu)?;
        Self::with_kernels(gpu, k, n, format)
    }

    fn with_kernels(
        gpu: Arc<Gpu>,
        k: Kernels,
        n: usize,
        format: SentFormat,
    ) -> Result<Self, GpuError> {
        if n > u32::MAX as usize {
            return Err(GpuError::Input(format!(
                "a top-k block of {n} values exceeds the kernels' 32-bit indices and counts"
            )));
        }
        let ctx = &gpu.ctx;
        let mut t = DeviceTopK {
            k,
            format,
            n,
            residual: DevBuf::default(),
            sampled: false,
            d_samples: DevBuf::default(),
            d_threshold: DevBuf::default(),
            d_count: DevBuf::default(),
            d_cand_idx: DevBuf::default(),
            d_cand_val: DevBuf::default(),
            d_delta: DevBuf::default(),
            d_sent_idx: DevBuf::default(),
            d_sent_raw: DevBuf::default(),
            d_sent: DevBuf::default(),
            d_sent_bits: DevBuf::default(),
            delta_host: Pinned::new(ctx)?,
            scalar_host: Pinned::new(ctx)?,
            cand_idx_host: Pinned::new(ctx)?,
            cand_val_host: Pinned::new(ctx)?,
            sent_idx_host: Pinned::new(ctx)?,
            sent_val_host: Pinned::new(ctx)?,
            samples_host: Pinned::new(ctx)?,
            gpu,
        };
        t.residual.zero(&t.gpu.compute, n.max(1))?;
        t.d_threshold.ensure(&t.gpu.compute, 1)?;
        t.d_count.ensure(&t.gpu.compute, 1)?;
        if n >= EXACT_BELOW {
            t.samples_host.fill(&sample_positions(n))?;
            t.d_samples.upload(&t.gpu.compute, &t.samples_host)?;
            t.sampled = true;
        }
        Ok(t)
    }

    /// Values per block.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True for a block of no values.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The format of the sent values.
    pub fn format(&self) -> SentFormat {
        self.format
    }

    /// The residual, copied back (what has not been sent yet).
    pub fn residual(&mut self) -> Result<Vec<f32>, GpuError> {
        if self.n == 0 {
            return Ok(Vec::new());
        }
        self.delta_host
            .download(&self.gpu.compute, self.residual.get(), self.n)?;
        Ok(self.delta_host.host()?.to_vec())
    }

    /// Replaces the residual (e.g. from a checkpoint).
    pub fn set_residual(&mut self, values: &[f32]) -> Result<(), GpuError> {
        self.check_len(values.len())?;
        if self.n == 0 {
            return Ok(());
        }
        self.delta_host.fill(values)?;
        self.residual.upload(&self.gpu.copy, &self.delta_host)
    }

    /// Forgets the residual.
    pub fn clear(&mut self) -> Result<(), GpuError> {
        self.residual.zero(&self.gpu.compute, self.n.max(1))
    }

    fn check_len(&self, len: usize) -> Result<(), GpuError> {
        if len == self.n {
            Ok(())
        } else {
            Err(GpuError::Input(format!(
                "a delta of {len} values for a top-k residual of {}",
                self.n
            )))
        }
    }

    /// `residual += delta; send the top k of the residual; residual -= what was sent`, as
    /// `ErrorFeedback::compress` with `topk:k` (or `topk:k,f16`). Returns the sent indices
    /// (ascending) and the values the receiver decodes for them.
    pub fn push(&mut self, delta: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        self.check_len(delta.len())?;
        if self.n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        self.delta_host.fill(delta)?;
        self.d_delta.upload(&self.gpu.copy, &self.delta_host)?;
        let d = std::mem::take(&mut self.d_delta);
        let r = self.accumulate_device(d.get());
        self.d_delta = d;
        r?;
        self.send(k)
    }

    /// [`DeviceTopK::push`] of a device-resident delta (its first `len()` elements).
    pub fn push_device(
        &mut self,
        delta: &CudaSlice<f32>,
        k: usize,
    ) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        self.accumulate_device(delta)?;
        self.send(k)
    }

    /// Enqueues `residual += delta` (the first `len()` elements of `delta`) on the compute stream.
    pub fn accumulate_device(&mut self, delta: &CudaSlice<f32>) -> Result<(), GpuError> {
        let n = self.n;
        if delta.len() < n {
            return Err(too_short("codec_ef_accumulate delta", delta.len(), n));
        }
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        let cfg = elementwise(&self.gpu, n);
        let mut b = self.gpu.compute.launch_builder(&self.k.accumulate);
        b.arg(self.residual.get_mut()).arg(delta).arg(&n64);
        // SAFETY: the residual and delta hold at least n elements;
        // codec_ef_accumulate(float*, const float*, unsigned long long).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_ef_accumulate)")?;
        Ok(())
    }

    /// Selection and feedback of the residual as it is: the top `k` entries are sent.
    fn send(&mut self, k: usize) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        let k = k.min(self.n);
        if k == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let count = self.candidates(k)?;
        let (idx, raw) = self.trim(count, k)?;
        let m = idx.len();
        let stream = &self.gpu.compute;
        self.sent_idx_host.fill(&idx)?;
        self.sent_val_host.fill(&raw)?;
        self.d_sent_idx.upload(stream, &self.sent_idx_host)?;
        self.d_sent_raw.upload(stream, &self.sent_val_host)?;
        let m64 = m as u64;
        let by_index: i32 = 0;
        let cfg = elementwise(&self.gpu, m);
        match self.format {
            SentFormat::F32 => {
                let idx_v = self.d_sent_idx.view(m);
                let sent_v = self.d_sent_raw.view(m);
                let mut b = stream.launch_builder(&self.k.subtract);
                b.arg(self.residual.get_mut())
                    .arg(&idx_v)
                    .arg(&sent_v)
                    .arg(&by_index)
                    .arg(&m64);
                // SAFETY: m distinct indices < n and m values; codec_ef_subtract(float*,
                // const unsigned int*, const float*, int, unsigned long long).
                unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_ef_subtract)")?;
                Ok((idx, raw))
            }
            SentFormat::F16 => {
                self.d_sent_bits.ensure(stream, m)?;
                self.d_sent.ensure(stream, m)?;
                launch_to_f16(
                    &self.gpu,
                    &self.k,
                    self.d_sent_raw.get(),
                    self.d_sent_bits.get_mut(),
                    Some(self.d_sent.get_mut()),
                    m,
                )?;
                {
                    let idx_v = self.d_sent_idx.view(m);
                    let sent_v = self.d_sent.view(m);
                    let mut b = stream.launch_builder(&self.k.subtract);
                    b.arg(self.residual.get_mut())
                        .arg(&idx_v)
                        .arg(&sent_v)
                        .arg(&by_index)
                        .arg(&m64);
                    // SAFETY: as above, the decoded f16 values.
                    unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_ef_subtract)")?;
                }
                self.sent_val_host.download(stream, self.d_sent.get(), m)?;
                let values = self.sent_val_host.host()?.to_vec();
                Ok((idx, values))
            }
        }
    }

    /// Makes room for `cap` candidates.
    fn ensure_capacity(&mut self, cap: usize) -> Result<(), GpuError> {
        let s = &self.gpu.compute;
        self.d_cand_idx.ensure(s, cap)?;
        self.d_cand_val.ensure(s, cap)?;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.d_cand_idx
            .get()
            .len()
            .min(self.d_cand_val.get().len())
            .min(u32::MAX as usize)
    }

    /// Enqueues the sampled threshold with `above` (`codec_topk_threshold`).
    fn enqueue_threshold(&mut self, above: usize) -> Result<(), GpuError> {
        let samples = SAMPLE as u32;
        let above = above.min(u32::MAX as usize) as u32;
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (SORT_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let x = self.residual.view(self.n);
        let mut b = self.gpu.compute.launch_builder(&self.k.threshold);
        b.arg(&x)
            .arg(self.d_samples.get())
            .arg(&samples)
            .arg(&above)
            .arg(self.d_threshold.get_mut());
        // SAFETY: SAMPLE positions < n on the device, one threshold word;
        // codec_topk_threshold(const float*, const unsigned int*, unsigned int, unsigned int,
        // unsigned int*), one block of CODEC_SORT_THREADS threads, static shared memory.
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_topk_threshold)")?;
        Ok(())
    }

    /// Enqueues one candidate pass at the threshold on the device (`count` zeroed first).
    fn enqueue_compact(&mut self) -> Result<(), GpuError> {
        let stream = &self.gpu.compute;
        self.d_count.zero(stream, 1)?;
        let n64 = self.n as u64;
        let capacity = self.capacity() as u32;
        let cfg = elementwise(&self.gpu, self.n);
        let x = self.residual.view(self.n);
        let mut b = stream.launch_builder(&self.k.compact);
        b.arg(&x)
            .arg(&n64)
            .arg(self.d_threshold.get())
            .arg(self.d_cand_idx.get_mut())
            .arg(self.d_cand_val.get_mut())
            .arg(self.d_count.get_mut())
            .arg(&capacity);
        // SAFETY: x holds n elements, the candidate buffers `capacity` each, threshold and
        // count one word; codec_topk_compact(const float*, unsigned long long,
        // const unsigned int*, unsigned int*, float*, unsigned int*, unsigned int).
        unsafe { b.launch(cfg) }.call("cuLaunchKernel(codec_topk_compact)")?;
        Ok(())
    }

    /// Whether the selection of `k` of this block starts from a sampled threshold (as
    /// `select.rs`: `0 < k < n` and `n >= EXACT_BELOW`), and with which `above`.
    fn first_above(&self, k: usize) -> Option<usize> {
        (self.sampled && k > 0 && k < self.n).then(|| initial_above(self.n, k))
    }

    /// Enqueues the first threshold and candidate pass for `k` (the host's first try), with room
    /// for `k + k/2 + 64` candidates; nothing waits. For timing the selection kernels on a
    /// device-resident residual: [`DeviceTopK::candidate_count`] then reads the count.
    pub fn enqueue_candidates(&mut self, k: usize) -> Result<(), GpuError> {
        if self.n == 0 {
            return Ok(());
        }
        let k = k.min(self.n);
        self.ensure_capacity(k + k / 2 + 64)?;
        match self.first_above(k) {
            Some(above) => self.enqueue_threshold(above)?,
            None => self.d_threshold.zero(&self.gpu.compute, 1)?,
        }
        self.enqueue_compact()
    }

    /// The count of the last candidate pass (waits for it); it may exceed the capacity.
    pub fn candidate_count(&mut self) -> Result<usize, GpuError> {
        if self.n == 0 {
            return Ok(0);
        }
        self.read_scalar(false).map(|c| c as usize)
    }

    /// Reads the count (or the threshold) word back.
    fn read_scalar(&mut self, threshold: bool) -> Result<u32, GpuError> {
        let src = if threshold {
            self.d_threshold.get()
        } else {
            self.d_count.get()
        };
        self.scalar_host.download(&self.gpu.compute, src, 1)?;
        Ok(self.scalar_host.host()?[0])
    }

    /// Runs the candidate passes until at least `k` entries are candidates, as `select.rs`
    /// `sampled` (threshold lowered by taking 4 × as many sample entries, down to 0), growing the
    /// candidate buffers whenever a pass found more than they hold. Returns the count; the
    /// candidates are in the buffers.
    fn candidates(&mut self, k: usize) -> Result<usize, GpuError> {
        self.ensure_capacity(k + k / 2 + 64)?;
        let mut above = self.first_above(k);
        loop {
            match above {
                Some(a) => self.enqueue_threshold(a)?,
                None => self.d_threshold.zero(&self.gpu.compute, 1)?,
            }
            self.enqueue_compact()?;
            let mut count = self.read_scalar(false)? as usize;
            if count > self.capacity() {
                self.ensure_capacity(count)?;
                self.enqueue_compact()?;
                count = self.read_scalar(false)? as usize;
            }
            let t = match above {
                Some(_) => self.read_scalar(true)?,
                None => 0,
            };
            if count >= k || t == 0 {
                return Ok(count);
            }
            above = above.map(|a| a.saturating_mul(4));
        }
    }

    /// The `k` highest-ranked of the `count` candidates (rank key = magnitude bits << 32 |
    /// !index, as `select.rs`), ascending by index, with their (unquantised) values.
    fn trim(&mut self, count: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>), GpuError> {
        if count == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let stream = &self.gpu.compute;
        self.cand_idx_host
            .download(stream, self.d_cand_idx.get(), count)?;
        self.cand_val_host
            .download(stream, self.d_cand_val.get(), count)?;
        let idx = self.cand_idx_host.host()?;
        let val = self.cand_val_host.host()?;
        let mut keyed: Vec<(u64, f32)> = idx
            .iter()
            .zip(val)
            .map(|(&i, &v)| {
                let key = (u64::from(v.to_bits() & 0x7FFF_FFFF) << 32) | u64::from(u32::MAX - i);
                (key, v)
            })
            .collect();
        let k = k.min(keyed.len());
        if keyed.len() > k {
            // Keys are distinct (they hold the index): the k largest lie after position len - k.
            let pos = keyed.len() - k;
            keyed.select_nth_unstable_by_key(pos, |p| p.0);
            keyed.drain(..pos);
        }
        keyed.sort_unstable_by_key(|p| u32::MAX - p.0 as u32);
        Ok(keyed
            .into_iter()
            .map(|(key, v)| (u32::MAX - key as u32, v))
            .unzip())
    }
}
